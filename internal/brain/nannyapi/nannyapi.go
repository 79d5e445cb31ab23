// Package nannyapi is the reasoning engine behind NannyAPI's
// investigation proxy (NANNYAPI.md §2.4): every turn posts the
// investigation so far as chat messages to /api/investigations, the
// backend forwards them to its TensorZero function (which brings its own
// system prompt), and the model's reply comes back as
// choices[0].message.content.
//
// A portal investigation already has an ID; a CLI investigation is
// created on the first turn. At the end the caller records the outcome
// with Finish: completed with the resolution plan, or failed with the
// reason, because the backend completes an investigation only when the
// model's reply is unfenced JSON and never learns of a failure.
//
// The backend answers 5xx when it is misconfigured (a recovered panic)
// and the earlier agent retried that forever (§0 item 6); here every
// call is retried a bounded number of times and never past the
// investigation's deadline.
package nannyapi

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/diagnose"
	api "github.com/nannyagent/nannyagent/internal/nannyapi"
	"go.uber.org/zap"
)

// Name is the engine's name in reports and selection.
const Name = "nannyapi"

// Limits of an issue the engine creates an investigation for.
const (
	// MinIssueChars is the backend's minimum (after trimming).
	MinIssueChars = 10
	// MinIssueWords is the earlier agent's minimum; one or two words
	// do not say what is wrong.
	MinIssueWords = 3
	// MaxIssueChars is user_prompt's limit; a longer issue is stored
	// cut and sent whole in the conversation.
	MaxIssueChars = 2000
	// DefaultPriority is the backend's own default.
	DefaultPriority = "medium"
)

// Defaults of the retry policy of one call.
const (
	DefaultMaxAttempts = 4
	DefaultRetryBase   = 2 * time.Second
	DefaultRetryMax    = 30 * time.Second
)

// Client is the part of the NannyAPI client the engine uses.
type Client interface {
	CreateInvestigation(ctx context.Context, req api.CreateInvestigationRequest) (*api.Investigation, error)
	Chat(ctx context.Context, req api.ChatRequest) (*api.ChatResponse, error)
	UpdateInvestigation(ctx context.Context, id string, u api.InvestigationUpdate) error
}

// Config configures an engine.
type Config struct {
	Client Client
	// AgentID is the registered agent; it is needed to create an
	// investigation.
	AgentID string
	// InvestigationID is a portal investigation's ID; empty means the
	// first turn creates one.
	InvestigationID string
	// Priority of a created investigation (default DefaultPriority).
	Priority string
	// Model is sent as the request's model; the backend ignores it
	// (§0 item 7).
	Model string
	// Retry bounds the attempts of one call (5xx, 429, timeouts,
	// connection failures): MaxAttempts defaults to DefaultMaxAttempts,
	// the delays to DefaultRetryBase doubling up to DefaultRetryMax.
	// Its Sleep replaces the wait in tests.
	Retry api.Backoff
	// Now is the clock the deadline is checked against (time.Now).
	Now func() time.Time
	// OnCreate hears the ID of an investigation the engine created, so
	// that the daemon can tell its own investigations' events apart.
	OnCreate func(id string)
	Log      *zap.Logger
}

// Engine is the NannyAPI engine. It is used by one investigation at a
// time.
type Engine struct {
	cfg Config
	log *zap.Logger

	mu sync.Mutex
	id string
}

// New checks cfg and returns the engine. It does not contact the
// backend.
func New(cfg Config) (*Engine, error) {
	if cfg.Client == nil {
		return nil, errors.New("nannyapi engine: no backend client")
	}
	if cfg.InvestigationID == "" && cfg.AgentID == "" {
		return nil, errors.New("nannyapi engine: an agent ID is needed to create investigations: register first (sudo nannyagent --register)")
	}
	if cfg.Priority == "" {
		cfg.Priority = DefaultPriority
	}
	if cfg.Retry.MaxAttempts <= 0 {
		cfg.Retry.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Retry.Initial <= 0 {
		cfg.Retry.Initial = DefaultRetryBase
	}
	if cfg.Retry.Max <= 0 {
		cfg.Retry.Max = DefaultRetryMax
	}
	if cfg.Retry.Sleep == nil {
		cfg.Retry.Sleep = api.Sleep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Engine{cfg: cfg, log: cfg.Log, id: cfg.InvestigationID}, nil
}

// Name is "nannyapi".
func (e *Engine) Name() string { return Name }

// InvestigationID is the backend's investigation ("" until one exists).
func (e *Engine) InvestigationID() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.id
}

// CheckIssue refuses an issue the backend (under 10 characters) or the
// earlier agent (under 3 words) would not take.
func CheckIssue(issue string) error {
	issue = strings.TrimSpace(issue)
	if n := utf8.RuneCountInString(issue); n < MinIssueChars {
		return fmt.Errorf("the issue %q is too short for NannyAPI (%d characters; it takes at least %d): describe the symptom, e.g. \"cannot create files in /var\"",
			issue, n, MinIssueChars)
	}
	if n := len(strings.Fields(issue)); n < MinIssueWords {
		return fmt.Errorf("the issue %q is too short for NannyAPI (%d words; describe it in at least %d), e.g. \"cannot create files in /var\"",
			issue, n, MinIssueWords)
	}
	return nil
}

// Next posts the conversation through the proxy and returns the model's
// reply, creating the investigation first when there is none.
func (e *Engine) Next(ctx context.Context, inv *brain.Investigation) (string, error) {
	id, err := e.ensure(ctx, inv)
	if err != nil {
		return "", err
	}
	conv := brain.Conversation(inv)
	req := api.ChatRequest{InvestigationID: id, Model: e.cfg.Model, Messages: make([]api.ChatMessage, len(conv))}
	for i, m := range conv {
		req.Messages[i] = api.ChatMessage{Role: m.Role, Content: m.Content}
	}
	var resp *api.ChatResponse
	err = e.retry(ctx, inv.Limits.Deadline, "asking NannyAPI", func(ctx context.Context) error {
		r, err := e.cfg.Client.Chat(ctx, req)
		resp = r
		return err
	})
	if err != nil {
		return "", e.explain(err, id)
	}
	content, err := resp.Content()
	if err != nil {
		return "", fmt.Errorf("NannyAPI answered investigation %s without a reply: %w", id, err)
	}
	if strings.TrimSpace(content) == "" {
		return "", fmt.Errorf("NannyAPI answered investigation %s with an empty reply", id)
	}
	return content, nil
}

// ensure returns the investigation's ID, creating it on the first call.
func (e *Engine) ensure(ctx context.Context, inv *brain.Investigation) (string, error) {
	if id := e.InvestigationID(); id != "" {
		return id, nil
	}
	if err := CheckIssue(inv.Issue); err != nil {
		return "", err
	}
	issue := api.TruncateRunes(strings.TrimSpace(inv.Issue), MaxIssueChars)
	var created *api.Investigation
	err := e.retry(ctx, inv.Limits.Deadline, "creating the investigation", func(ctx context.Context) error {
		c, err := e.cfg.Client.CreateInvestigation(ctx, api.CreateInvestigationRequest{AgentID: e.cfg.AgentID, Issue: issue, Priority: e.cfg.Priority})
		created = c
		return err
	})
	if err != nil {
		return "", e.explain(err, "")
	}
	if created.ID == "" {
		return "", errors.New("NannyAPI created the investigation but did not name it (no id in its answer)")
	}
	e.mu.Lock()
	e.id = created.ID
	e.mu.Unlock()
	e.log.Info("investigation created", zap.String("investigation", created.ID))
	if e.cfg.OnCreate != nil {
		e.cfg.OnCreate(created.ID)
	}
	return created.ID, nil
}

// AttemptsError is a call that failed every attempt it was allowed.
type AttemptsError struct {
	What     string
	Attempts int
	Err      error
}

func (e *AttemptsError) Error() string {
	return fmt.Sprintf("%s: %v (gave up after %d attempts)", e.What, e.Err, e.Attempts)
}

func (e *AttemptsError) Unwrap() error { return e.Err }

// retry runs fn until it succeeds, fails for good, runs out of attempts,
// or the next wait would end past the deadline.
func (e *Engine) retry(ctx context.Context, deadline time.Time, what string, fn func(ctx context.Context) error) error {
	b := e.cfg.Retry
	if dl, ok := ctx.Deadline(); ok && (deadline.IsZero() || dl.Before(deadline)) {
		deadline = dl
	}
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		}
		if !retryable(err) {
			return err
		}
		if attempt >= b.MaxAttempts {
			return &AttemptsError{What: what, Attempts: attempt, Err: err}
		}
		wait := b.Delay(attempt - 1)
		if !deadline.IsZero() && e.cfg.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%w; not retried: the investigation's time ends before the next attempt (in %s)", err, wait.Round(time.Millisecond))
		}
		e.log.Info("retrying NannyAPI", zap.String("call", what), zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		if b.OnRetry != nil {
			b.OnRetry(attempt, err, wait)
		}
		if serr := b.Sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%s: %w (while waiting to retry after: %v)", what, serr, err)
		}
	}
}

// upstreamTransient matches a TensorZero proxy error that carries the
// model service's own 429 or 5xx: worth another attempt, unlike a
// refused connection or a bad request.
var upstreamTransient = regexp.MustCompile(`^TensorZero error: TensorZero API error: (429|5\d\d)\b`)

func retryable(err error) bool {
	if ae, ok := api.AsError(err); ok && ae.Status == 400 && upstreamTransient.MatchString(ae.Message) {
		return true
	}
	return api.Retryable(err)
}

// explain turns the backend's answers into errors that say what is
// wrong and where.
func (e *Engine) explain(err error, id string) error {
	ae, ok := api.AsError(err)
	if !ok {
		return err
	}
	inv := "the investigation"
	if id != "" {
		inv = "investigation " + id
	}
	switch {
	case ae.Status == 400 && strings.HasPrefix(ae.Message, "TensorZero error:"):
		return fmt.Errorf("NannyAPI could not get an answer from its model service for %s: %s "+
			"(a problem of the backend's TensorZero setup, TENSORZERO_API_URL, not of this host): %w", inv, ae.Message, err)
	case ae.Status == 400 && ae.Message == "invalid TensorZero request format":
		return fmt.Errorf("NannyAPI refused the conversation of %s as malformed: %w", inv, err)
	case ae.Status >= 500 && ae.Envelope:
		return fmt.Errorf("NannyAPI failed internally on %s (HTTP %d %q, a recovered panic: the backend's TENSORZERO_API_URL and TENSORZERO_API_KEY, "+
			"or CLICKHOUSE_URL once the investigation has an episode, are probably unset): %w", inv, ae.Status, ae.Message, err)
	case ae.Status == 404:
		return fmt.Errorf("NannyAPI does not know %s (deleted?): %w", inv, err)
	case ae.Status == 403 || strings.HasPrefix(ae.Message, "unauthorized"):
		return fmt.Errorf("NannyAPI says %s does not belong to this agent's owner: %w", inv, err)
	case ae.Status == 401:
		return fmt.Errorf("NannyAPI refused the agent's token (if this persists, register again: sudo nannyagent --register): %w", err)
	}
	return err
}

// Outcome is how an investigation ended, as the backend records it.
func Outcome(rep *diagnose.Report, runErr error) api.InvestigationUpdate {
	switch {
	case runErr == nil && rep != nil && rep.Resolved():
		return api.InvestigationUpdate{Status: api.StatusCompleted, ResolutionPlan: Plan(rep.Resolution)}
	case runErr != nil:
		return api.InvestigationUpdate{Status: api.StatusFailed, ResolutionPlan: FitPlan("The agent could not finish the investigation: " + runErr.Error())}
	case rep == nil:
		return api.InvestigationUpdate{Status: api.StatusFailed, ResolutionPlan: "The agent could not finish the investigation."}
	}
	reason := "The investigation ended without a resolution"
	if rep.EndedBy != "" {
		reason += " (" + rep.EndedBy + ")"
	}
	reason += "."
	if rep.Resolution != nil {
		reason += "\n\nBest so far:\n" + Plan(rep.Resolution)
	}
	return api.InvestigationUpdate{Status: api.StatusFailed, ResolutionPlan: FitPlan(reason)}
}

// Plan is the text stored as resolution_plan: the model's plan after
// the root cause it addresses (the collection has no field for the root
// cause), cut to the backend's limit.
func Plan(r *diagnose.Resolution) string {
	if r == nil {
		return ""
	}
	var b strings.Builder
	if rc := strings.TrimSpace(r.RootCause); rc != "" {
		b.WriteString("Root cause")
		if r.Confidence != "" {
			b.WriteString(" (confidence " + strings.TrimSpace(r.Confidence) + ")")
		}
		b.WriteString(": " + rc + "\n\n")
	}
	plan := strings.TrimSpace(r.ResolutionPlan)
	if plan == "" {
		plan = "No resolution plan was given."
	}
	b.WriteString(plan)
	return FitPlan(b.String())
}

// FitPlan cuts s to the backend's resolution_plan limit
// (api.MaxResolutionPlan characters), saying at the end that it was cut.
func FitPlan(s string) string {
	n := utf8.RuneCountInString(s)
	if n <= api.MaxResolutionPlan {
		return s
	}
	const tmpl = "\n…[cut: %d of %d characters shown]"
	// keep has no more digits than the limit itself.
	keep := api.MaxResolutionPlan - utf8.RuneCountInString(fmt.Sprintf(tmpl, api.MaxResolutionPlan, n))
	marker := fmt.Sprintf(tmpl, keep, n)
	return api.TruncateRunes(s, keep) + marker
}

// Finish records the outcome on the backend (see Outcome), with the
// same bounded retries as a turn. It does nothing when no investigation
// was created. ctx should outlive the investigation's own: a cancelled
// investigation is still recorded as failed. An engine that created its
// investigation creates a new one on its next turn (the next issue of
// the interactive prompt).
func (e *Engine) Finish(ctx context.Context, rep *diagnose.Report, runErr error) error {
	id := e.InvestigationID()
	if id == "" {
		return nil
	}
	err := e.Update(ctx, Outcome(rep, runErr))
	if e.cfg.InvestigationID == "" {
		e.mu.Lock()
		e.id = ""
		e.mu.Unlock()
	}
	return err
}

// Update PATCHes the investigation with bounded retries.
func (e *Engine) Update(ctx context.Context, u api.InvestigationUpdate) error {
	id := e.InvestigationID()
	if id == "" {
		return errors.New("nannyapi engine: no investigation to update")
	}
	err := e.retry(ctx, time.Time{}, "recording the outcome of investigation "+id, func(ctx context.Context) error {
		return e.cfg.Client.UpdateInvestigation(ctx, id, u)
	})
	if err != nil {
		return e.explain(err, id)
	}
	e.log.Info("investigation recorded", zap.String("investigation", id), zap.String("status", u.Status))
	return nil
}
