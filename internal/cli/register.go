package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/spf13/cobra"
)

func (a *app) registerCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register this host with NannyAPI (device flow, or the configured static token); needs root",
		Long: `register connects this host to a NannyAPI account (the same as --register).

With a static token (static_token, or NANNYAI_STATIC_TOKEN; it starts with
nsk_) the host registers at once with register-with-token. Otherwise it
starts the device flow: it prints a link and a code, you open the link
(or the portal) signed in and enter the code, and registration completes
within seconds; the code is valid for 10 minutes.

The tokens go to token_path (default /var/lib/nannyagent/token.json, with
.refresh_token beside it), mode 0600 in a 0700 directory, which is why it
needs root. A host that is already registered is not registered again
unless you confirm it on a terminal or give --force; the old files are
replaced only once the new registration succeeded.

The refresh token lives 30 days from registration; a backend that cannot
renew it (the public NannyAPI cannot) then needs a new registration:
sudo nannyagent --register --force.

Exit status: 0 registered; 1 an error (not root, backend unreachable, code
expired, registration refused); 2 a usage or configuration error.`,
		Example: `  sudo nannyagent register
  sudo nannyagent --register --force
  sudo NANNYAI_STATIC_TOKEN=nsk_... nannyagent --register --api-url https://api.nannyai.dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runRegister(cmd.Context(), force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing registration without asking")
	return cmd
}

func (a *app) runRegister(ctx context.Context, force bool) error {
	if a.geteuid() != 0 {
		return &exitError{code: 1, err: fmt.Errorf("registering needs root: the tokens go to %s, which only root may read (run: sudo nannyagent --register)", a.cfg.TokenPath)}
	}
	if err := a.cfg.RequireBackend(); err != nil {
		return usageErr(err)
	}
	m, err := auth.New(a.cfg, auth.Options{Logger: a.log})
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if exists, id := m.Existing(); exists && !force {
		if !a.confirmReplace(id) {
			err := &auth.AlreadyRegisteredError{AgentID: id, TokenPath: a.cfg.TokenPath}
			return &exitError{code: 1, err: err}
		}
		force = true
	}
	ctx, stop := a.interruptible(ctx)
	defer stop()

	out := a.stdout
	fmt.Fprintf(out, "Registering this host with NannyAPI at %s", a.cfg.NannyAPIURL)
	if m.Mode() == auth.ModeStatic {
		fmt.Fprintln(out, " with the configured static token.")
	} else {
		fmt.Fprintln(out, ".")
	}
	tty := isTerminal(a.stdout)
	cd := &countdown{a: a, tty: tty}
	reg, err := m.Register(ctx, auth.RegisterOptions{
		Force:        force,
		PollInterval: a.backend.pollInterval,
		OnDeviceCode: func(d auth.DeviceCode) { a.showDeviceCode(d, tty) },
		OnWaiting:    cd.tick,
		OnRetry: func(err error) {
			cd.clear()
			fmt.Fprintf(a.stderr, "nannyagent: the backend did not answer (%v); still trying\n", err)
		},
	})
	cd.clear()
	if err != nil {
		code := 1
		if errors.Is(err, context.Canceled) {
			code = exitCancelled
		}
		return &exitError{code: code, err: err}
	}
	fmt.Fprintf(out, "Registered as agent %s. The tokens are in %s.\n", reg.AgentID, reg.TokenPath)
	if reg.Warning != "" {
		fmt.Fprintln(a.stderr, "nannyagent: warning: "+reg.Warning)
	}
	fmt.Fprintln(out, "Start the daemon with: sudo systemctl enable --now nannyagent")
	return nil
}

// confirmReplace asks before replacing a registration; only a person at
// a terminal can say yes (scripts use --force).
func (a *app) confirmReplace(agentID string) bool {
	if a.stdin == nil || !isTerminal(a.stdin) {
		return false
	}
	agent := ""
	if agentID != "" {
		agent = " as agent " + agentID
	}
	fmt.Fprintf(a.stdout, "This host is already registered%s (%s).\nRegister it again and replace that registration? [y/N] ", agent, a.cfg.TokenPath)
	line, _ := bufio.NewReader(a.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// showDeviceCode prints what the user has to do, set off so it cannot be
// missed among other output.
func (a *app) showDeviceCode(d auth.DeviceCode, tty bool) {
	bold := func(s string) string {
		if tty {
			return "\033[1m" + s + "\033[0m"
		}
		return s
	}
	rule := strings.Repeat("=", 64)
	fmt.Fprintf(a.stdout, `
%s
  To authorize this host, open this link signed in to NannyAI:

    %s

  or enter this code in the portal (%s):

    %s

  The code expires at %s.
%s

`, rule, bold(d.VerificationURI), a.cfg.PortalURL, bold(d.UserCode), d.ExpiresAt.Local().Format("15:04:05"), rule)
}

// countdown shows the time left while the device flow waits: one line
// rewritten in place on a terminal, a line a minute otherwise.
type countdown struct {
	a        *app
	tty      bool
	shown    bool
	lastMins int
}

func (c *countdown) tick(remaining time.Duration) {
	remaining = remaining.Round(time.Second)
	line := fmt.Sprintf("Waiting for authorization: %d:%02d left", int(remaining.Minutes()), int(remaining.Seconds())%60)
	if c.tty {
		fmt.Fprintf(c.a.stdout, "\r\033[K%s (Ctrl-C to give up)", line)
		c.shown = true
		return
	}
	if mins := int(remaining.Minutes()); !c.shown || mins != c.lastMins {
		fmt.Fprintln(c.a.stdout, line)
		c.shown, c.lastMins = true, mins
	}
}

func (c *countdown) clear() {
	if c.tty && c.shown {
		fmt.Fprint(c.a.stdout, "\r\033[K")
	}
	c.shown = false
}
