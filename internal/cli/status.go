package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/spf13/cobra"
)

// statusTimeout bounds the backend check of --status, so that a backend
// that hangs makes status slow, not stuck.
const statusTimeout = 20 * time.Second

// statusReport is what status prints (--json: this document).
type statusReport struct {
	Healthy bool `json:"healthy"`
	// Problems make the host unhealthy; each says what to do.
	Problems []string `json:"problems,omitempty"`
	// Warnings do not, yet.
	Warnings     []string      `json:"warnings,omitempty"`
	Registration auth.Status   `json:"registration"`
	Backend      backendStatus `json:"backend"`
	Daemon       daemonStatus  `json:"daemon"`
}

type backendStatus struct {
	URL string `json:"url"`
	// Check is the call made: "refresh", "investigation lookup" (static
	// token) or "health" (not registered: reachability only).
	Check     string `json:"check,omitempty"`
	Reachable bool   `json:"reachable"`
	// Accepted: the backend accepted this host's credentials.
	Accepted  bool   `json:"accepted"`
	Error     string `json:"error,omitempty"`
	LatencyMS int64  `json:"latency_ms,omitempty"`
}

type daemonStatus struct {
	Running       bool      `json:"running"`
	PID           int       `json:"pid,omitempty"`
	StartedAt     time.Time `json:"started_at,omitzero"`
	StoppedAt     time.Time `json:"stopped_at,omitzero"`
	LastMetricsAt time.Time `json:"last_metrics_at,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
	// StateError is why the daemon's state file could not be read.
	StateError string `json:"state_error,omitempty"`
}

func (a *app) statusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the registration, the backend's answer and the daemon; exit 0 when healthy",
		Long: `status shows this host's NannyAPI registration (mode, agent ID, token
expiry, the refresh token's age), checks it against the backend, and shows
whether the daemon runs and when it last sent metrics (the same as --status).

The backend check proves the credentials, not only that the URL answers:
with the device flow's tokens it is a refresh (the refresh token is the
credential that dies: 30 days after registration, or when the agent is
revoked; it also stores a fresh access token); with a static token, a
lookup of an investigation that does not exist, which the backend answers
404 only to an accepted token. Unregistered, it asks GET /api/health.

The token files are root's, so run it with sudo.

Exit status: 0 healthy (registered, accepted by the backend, daemon
running); 1 not, with each problem and what to do on stdout; 2 a usage or
configuration error.`,
		Example: `  sudo nannyagent status
  sudo nannyagent --status --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runStatus(cmd.Context(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as one JSON document")
	return cmd
}

func (a *app) runStatus(ctx context.Context, asJSON bool) error {
	rep := a.collectStatus(ctx)
	if asJSON {
		if err := writeJSON(a.stdout, rep); err != nil {
			return err
		}
	} else {
		renderStatus(a.stdout, rep, time.Now())
	}
	if !rep.Healthy {
		return &exitError{code: 1}
	}
	return nil
}

func (a *app) collectStatus(ctx context.Context) *statusReport {
	cfg := a.cfg
	rep := &statusReport{Backend: backendStatus{URL: cfg.NannyAPIURL}}
	rep.Registration = auth.Status{Mode: auth.ModeDevice, TokenPath: cfg.TokenPath}
	m, err := auth.New(cfg, auth.Options{Logger: a.log})
	if err != nil {
		rep.Registration.Problem = err.Error()
		rep.Problems = append(rep.Problems, err.Error())
	} else {
		rep.Registration = m.Status()
		if !rep.Registration.Registered {
			rep.Problems = append(rep.Problems, rep.Registration.Problem)
		}
		a.checkBackend(ctx, m, rep)
	}
	a.readDaemonState(rep)
	if rep.Backend.Reachable && rep.Registration.Registered && m != nil {
		// The check may have refreshed the token.
		rep.Registration = m.Status()
	}
	a.statusWarnings(rep, time.Now())
	rep.Healthy = len(rep.Problems) == 0
	return rep
}

// checkBackend proves the registration against the backend (see the
// command's help for why these calls).
func (a *app) checkBackend(ctx context.Context, m *auth.Manager, rep *statusReport) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	b := &rep.Backend
	start := time.Now()
	var err error
	switch {
	case !rep.Registration.Registered:
		b.Check = "health"
		err = m.Client().Health(ctx)
	case m.Mode() == auth.ModeStatic:
		b.Check = "investigation lookup"
		err = m.Check(ctx)
	default:
		b.Check = "refresh"
		err = m.Check(ctx)
	}
	b.LatencyMS = time.Since(start).Milliseconds()
	if err == nil {
		b.Reachable = true
		b.Accepted = b.Check != "health"
		return
	}
	b.Error = err.Error()
	var te *nannyapi.TransportError
	e, isAPI := nannyapi.AsError(err)
	switch {
	case errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded):
		rep.Problems = append(rep.Problems, fmt.Sprintf("the backend at %s cannot be reached: %v", b.URL, err))
	case isAPI && e.IsServerError():
		b.Reachable = true
		rep.Problems = append(rep.Problems, fmt.Sprintf("the backend at %s answers with errors: %v", b.URL, err))
	default:
		// It answered, and refused (or the registration is unusable).
		b.Reachable = isAPI || errors.Is(err, auth.ErrReregister)
		if rep.Registration.Registered {
			rep.Problems = append(rep.Problems, err.Error())
		}
	}
}

func (a *app) readDaemonState(rep *statusReport) {
	st, err := auth.ReadState(a.cfg.TokenPath)
	d := &rep.Daemon
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rep.Problems = append(rep.Problems, "the daemon has never run here: sudo systemctl enable --now nannyagent")
		return
	case err != nil:
		d.StateError = err.Error()
		rep.Problems = append(rep.Problems, "cannot tell whether the daemon runs: "+err.Error())
		return
	}
	d.Running, d.StartedAt, d.StoppedAt = st.Running(), st.StartedAt, st.StoppedAt
	d.LastMetricsAt, d.LastError, d.LastErrorAt = st.LastMetricsAt, st.LastError, st.LastErrorAt
	if d.Running {
		d.PID = st.PID
	} else {
		rep.Problems = append(rep.Problems, "the daemon is not running: sudo systemctl start nannyagent (journalctl -u nannyagent says why it stopped)")
	}
}

// statusWarnings are what will become a problem: metrics that stopped
// arriving, a refresh token that will die and cannot be renewed.
func (a *app) statusWarnings(rep *statusReport, now time.Time) {
	d := rep.Daemon
	interval := time.Duration(a.cfg.MetricsInterval) * time.Second
	if d.Running && now.Sub(d.StartedAt) > 3*interval && (d.LastMetricsAt.IsZero() || now.Sub(d.LastMetricsAt) > 3*interval) {
		last := "none since it started"
		if !d.LastMetricsAt.IsZero() {
			last = "the last " + ago(now, d.LastMetricsAt)
		}
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the daemon runs but sent no metrics for over %s (%s); see the last error and journalctl -u nannyagent", 3*interval, last))
	}
	r := rep.Registration
	threshold := time.Duration(a.cfg.TokenRenewalThresholdDays) * 24 * time.Hour
	if r.Registered && !r.RefreshTokenExpires.IsZero() && r.RefreshTokenExpires.Sub(now) < threshold && r.Renewal != auth.RenewalSupported {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the refresh token expires %s %s and the backend has not renewed it: register again before then with sudo nannyagent --register --force",
			about(r.Estimated), r.RefreshTokenExpires.Local().Format("2006-01-02 15:04")))
	}
}

func about(estimated bool) string {
	if estimated {
		return "about"
	}
	return "on"
}

func renderStatus(w io.Writer, rep *statusReport, now time.Time) {
	r := rep.Registration
	row := func(k, v string) { fmt.Fprintf(w, "%-15s %s\n", k+":", v) }
	switch {
	case r.Registered && r.Mode == auth.ModeStatic:
		row("registration", "registered with a static token, agent "+r.AgentID)
	case r.Registered:
		row("registration", "registered (device flow), agent "+r.AgentID)
	default:
		row("registration", "not usable")
	}
	row("token file", r.TokenPath)
	if !r.AccessTokenExpires.IsZero() {
		verb := "expires"
		if !now.Before(r.AccessTokenExpires) {
			verb = "expired"
		}
		row("access token", fmt.Sprintf("%s %s (%s)", verb, stamp(r.AccessTokenExpires), relative(now, r.AccessTokenExpires)))
	}
	if r.Mode == auth.ModeDevice && (r.Registered || !r.RegisteredAt.IsZero()) {
		v := "registered: unknown"
		if !r.RegisteredAt.IsZero() {
			v = "registered " + r.RegisteredAt.Local().Format("2006-01-02")
			if r.Estimated {
				v = "registered about " + r.RegisteredAt.Local().Format("2006-01-02")
			}
		}
		if !r.RefreshTokenExpires.IsZero() {
			v += fmt.Sprintf(", expires %s %s (%s)", about(r.Estimated), stamp(r.RefreshTokenExpires), relative(now, r.RefreshTokenExpires))
		}
		v += "; renewal: " + r.Renewal
		row("refresh token", v)
	}
	b := rep.Backend
	switch {
	case b.URL == "":
		row("backend", "not configured (nannyapi_url)")
	case b.Accepted:
		row("backend", fmt.Sprintf("%s: reachable, %s accepted (%d ms)", b.URL, b.Check, b.LatencyMS))
	case b.Reachable && b.Error == "":
		row("backend", fmt.Sprintf("%s: reachable (%s, %d ms)", b.URL, b.Check, b.LatencyMS))
	case b.Reachable:
		row("backend", fmt.Sprintf("%s: reachable, %s failed: %s", b.URL, b.Check, b.Error))
	case b.Error != "":
		row("backend", fmt.Sprintf("%s: unreachable: %s", b.URL, b.Error))
	default:
		row("backend", b.URL+": not checked")
	}
	d := rep.Daemon
	switch {
	case d.Running:
		row("daemon", fmt.Sprintf("running, pid %d, since %s", d.PID, stamp(d.StartedAt)))
	case d.StateError != "":
		row("daemon", "unknown: "+d.StateError)
	case !d.StartedAt.IsZero() && !d.StoppedAt.IsZero() && !d.StoppedAt.Before(d.StartedAt):
		row("daemon", "not running (stopped "+stamp(d.StoppedAt)+")")
	case !d.StartedAt.IsZero():
		row("daemon", "not running (it started "+stamp(d.StartedAt)+" and did not stop cleanly)")
	default:
		row("daemon", "not running (it has never run here)")
	}
	if d.LastMetricsAt.IsZero() {
		row("last metrics", "never")
	} else {
		row("last metrics", fmt.Sprintf("%s (%s)", stamp(d.LastMetricsAt), ago(now, d.LastMetricsAt)))
	}
	if d.LastError != "" {
		row("last error", fmt.Sprintf("%s (%s)", d.LastError, ago(now, d.LastErrorAt)))
	}
	for _, wr := range rep.Warnings {
		row("warning", wr)
	}
	if rep.Healthy {
		row("health", "healthy")
		return
	}
	row("health", "unhealthy")
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "  - "+p)
	}
}

func stamp(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }

func ago(now, t time.Time) string { return compact(now.Sub(t)) + " ago" }

// relative is "in 6d 23h" or "3h ago".
func relative(now, t time.Time) string {
	if t.After(now) {
		return "in " + compact(t.Sub(now))
	}
	return ago(now, t)
}

// compact writes a duration in its two largest units: 6d 23h, 5h 2m,
// 4m 10s, 12s.
func compact(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Round(time.Second)
	days := int(d / (24 * time.Hour))
	h := int(d/time.Hour) % 24
	m := int(d/time.Minute) % 60
	s := int(d/time.Second) % 60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}
