package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/nannyagent/nannyagent/internal/brain"
	brainapi "github.com/nannyagent/nannyagent/internal/brain/nannyapi"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/diagnose"
	"github.com/nannyagent/nannyagent/internal/redact"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

// Exit statuses of an investigation.
const (
	exitResolved  = 0
	exitFailed    = 1
	exitUsage     = 2
	exitNoAnswer  = 3 // a limit ended it before the engine resolved it
	exitCancelled = 130
)

const (
	minIssueChars = 3
	maxIssueBytes = 8 << 10
)

// session is what every investigation of one run shares: the engine,
// the kernel, and which catalog entries work here.
type session struct {
	cfg    *config.Config
	choice engineChoice
	engine brain.Engine
	// kernel is nil when traces cannot run (not root); traceUnavailable
	// then says why.
	kernel           *catalog.Kernel
	probe            *catalog.Kernel
	traceUnavailable string
	catalog          []sysinfo.CatalogEntry
	root             bool
}

// newSession chooses and builds the engine and checks the catalog
// entries against this kernel. Not being root is not an error: it says on
// stderr what needs root and what still works.
func (a *app) newSession(engineFlag string) (*session, error) {
	choice, err := chooseEngine(a.cfg, engineFlag, func() (*auth.Manager, error) { return a.registration(a.cfg, a.log) })
	if err != nil {
		return nil, err
	}
	eng, err := a.newEngine(a.cfg, choice, a.log)
	if err != nil {
		return nil, err
	}
	a.log.Debug("engine", zap.String("engine", eng.Name()), zap.String("why", choice.Why))
	s := &session{cfg: a.cfg, choice: choice, engine: eng, root: a.geteuid() == 0}
	// Entry checks need a kernel handle even without root: they say why
	// each entry cannot run.
	s.probe = catalog.NewKernel(a.log.Named("catalog"))
	for _, st := range entryStatuses(s.probe) {
		s.catalog = append(s.catalog, sysinfo.CatalogEntry{Name: st.Name, Answers: st.Answers, Supported: st.Works, Reason: st.Reason})
	}
	if s.root {
		s.kernel = s.probe
	} else {
		s.traceUnavailable = "kernel traces need root: nannyagent is not running as root (run it with sudo)"
		a.notRootNotice()
	}
	return s, nil
}

// notRootNotice says what an investigation can and cannot do without
// root, from what the sandbox reports about this kernel.
func (a *app) notRootNotice() {
	sb := safeexec.SandboxSupport()
	commands := fmt.Sprintf(`  - commands still run, allowlisted and read-only by rule, in the sandbox without its
    private read-only mount namespace (that needs root); what remains is
    Landlock (%s), seccomp (%s) and no_new_privs;
`, sb["landlock"], sb["seccomp"])
	if strings.HasPrefix(sb["landlock"], "unavailable") {
		// Without Landlock and without read-only mounts nothing would
		// stop a write, so the sandbox refuses to run commands at all.
		commands = fmt.Sprintf(`  - commands are refused: read-only mounts need root and Landlock is %s,
    so nothing would stop a write;
`, sb["landlock"])
	}
	fmt.Fprint(a.stderr, `nannyagent: not running as root, so this investigation is limited:
  - kernel traces (eBPF) need root: the engine's trace requests are answered "needs root";
`+commands+`  - system facts are collected, but other users' processes (their open files and limits)
    are hidden from a normal user.
  Run it with sudo for a full investigation.
`)
}

// checkIssue trims the issue and refuses what cannot be an issue.
func checkIssue(issue string) (string, error) {
	issue = strings.TrimSpace(issue)
	switch {
	case !utf8.ValidString(issue):
		return "", usageErr(errors.New("the issue is not valid UTF-8 text"))
	case utf8.RuneCountInString(issue) < minIssueChars:
		return "", usageErr(fmt.Errorf(`the issue must say what is wrong in at least %d characters, e.g. nannyagent diagnose "cannot create files in /var"`, minIssueChars))
	case len(issue) > maxIssueBytes:
		return "", usageErr(fmt.Errorf("the issue is %d bytes; describe it in at most %d", len(issue), maxIssueBytes))
	}
	return issue, nil
}

func (a *app) diagnoseCommand() *cobra.Command {
	var f diagnoseFlags
	cmd := &cobra.Command{
		Use:   `diagnose "ISSUE"`,
		Short: "Investigate one issue, print the root cause and a resolution plan, and exit",
		Long: `diagnose investigates one issue: it collects the host's facts, asks the
reasoning engine what to look at, runs the commands it asks for (read-only,
allowlisted, sandboxed) and the kernel traces (the eBPF catalog), sends the
results back, and repeats until the engine names a root cause or a limit
(diagnose.max_rounds, diagnose.max_wall_sec) ends it.

On a terminal the phases show on stderr as they happen and the answer is
printed for reading on stdout. With --json, stdout gets exactly one JSON
document (the report: issue, engine, rounds with every command and trace,
findings, resolution), and nothing else.

The engine is chosen by --engine, else NANNYAGENT_AI_PROVIDER, else
ai.provider in the config file; auto (the default) is NannyAPI when this
host is registered (sudo nannyagent --register), else the OpenAI-compatible
endpoint when ai.base_url is set, else the offline engine. With NannyAPI the
investigation is created on the backend (the issue needs at least 10
characters and 3 words) and recorded completed or failed at the end.

Without root, traces are not run and commands run without the sandbox's
read-only mount namespace; the investigation says so and goes on.

Ctrl-C cancels the investigation.

Exit status: 0 the engine resolved the issue; 3 a limit ended the
investigation with only a best-so-far answer; 1 an error (engine unreachable,
replies unreadable); 2 a usage or configuration error; 130 cancelled.`,
		Example: `  sudo nannyagent diagnose "cannot create files in /var but df shows free space"
  sudo nannyagent diagnose --engine offline --json "the server is slow" > report.json
  sudo nannyagent --diagnose "nginx fails to start"`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErr(errors.New(`diagnose needs the issue, e.g. nannyagent diagnose "cannot create files in /var"`))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			// Unquoted words are one issue: diagnose disk is full.
			return a.oneShot(cmd.Context(), strings.Join(args, " "), f)
		},
	}
	f.register(cmd)
	return cmd
}

type diagnoseFlags struct {
	engine string
	asJSON bool
}

func (f *diagnoseFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.engine, config.FlagFor("ai.provider"), "", "reasoning engine: auto, offline, openai or nannyapi (overrides NANNYAGENT_AI_PROVIDER and ai.provider)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the report as one JSON document on stdout, nothing else")
}

// oneShot runs one investigation and turns its outcome into the exit
// status.
func (a *app) oneShot(ctx context.Context, issue string, f diagnoseFlags) error {
	issue, err := checkIssue(issue)
	if err != nil {
		return err
	}
	ctx, stop := a.interruptible(ctx)
	defer stop()
	s, err := a.newSession(f.engine)
	if err != nil {
		return err
	}
	if s.choice.Provider == config.ProviderNannyAPI {
		if err := brainapi.CheckIssue(issue); err != nil {
			return usageErr(err)
		}
	}
	rep, err := a.investigate(ctx, s, issue, !f.asJSON || isTerminal(a.stderr))
	if rep != nil {
		if f.asJSON {
			if werr := writeJSON(a.stdout, rep); werr != nil {
				return werr
			}
		} else {
			renderReport(a.stdout, rep, isTerminal(a.stdout))
		}
	}
	return outcome(rep, err)
}

// outcome maps an investigation's end onto the exit status.
func outcome(rep *diagnose.Report, err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return &exitError{code: exitCancelled, err: errors.New("investigation cancelled")}
	case err != nil:
		return &exitError{code: exitFailed, err: err}
	case rep.Resolved():
		return nil
	}
	return &exitError{code: exitNoAnswer, err: fmt.Errorf("no resolution: %s", rep.EndedBy)}
}

// investigate collects the facts and runs the loop; showProgress prints
// the phases on stderr (live on a terminal, plain lines elsewhere).
func (a *app) investigate(ctx context.Context, s *session, issue string, showProgress bool) (*diagnose.Report, error) {
	var pr *progress
	if showProgress {
		pr = newProgress(a.stderr, isTerminal(a.stderr), s.engine.Name())
	}
	start := time.Now()
	if pr != nil {
		pr.transient("collecting system facts…")
	}
	facts := a.collectFacts(ctx, sysinfo.Options{Redact: redact.String})
	if facts != nil {
		facts.Catalog = s.catalog
	}
	if pr != nil {
		pr.finish(fmt.Sprintf("✓ facts collected (%s)%s", time.Since(start).Round(100*time.Millisecond), factsSummary(facts)))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d := s.cfg.Diagnose
	exec := safeexec.DefaultOptions()
	exec.Timeout = time.Duration(d.CommandTimeoutSec) * time.Second
	o := diagnose.Options{
		Engine: s.engine, Kernel: s.kernel, TraceUnavailable: s.traceUnavailable, Facts: facts,
		MaxRounds: d.MaxRounds, MaxWall: time.Duration(d.MaxWallSec) * time.Second,
		RoundBudget: time.Duration(d.RoundBudgetSec) * time.Second, ContextBytes: d.ContextBytes,
		Exec: &exec, Redact: redact.String, Log: a.log.Named("diagnose"),
	}
	if pr != nil {
		o.Progress = pr.event
	}
	rep, err := diagnose.Run(ctx, issue, o)
	if pr != nil {
		pr.done()
	}
	if rec, ok := s.engine.(*brainapi.Engine); ok {
		a.recordOutcome(ctx, rec, rep, err, showProgress)
	}
	return rep, err
}

// recordOutcome records a NannyAPI investigation's end on the backend
// (completed with the plan, or failed with the reason), also when it was
// cancelled, within a bound of its own.
func (a *app) recordOutcome(ctx context.Context, e *brainapi.Engine, rep *diagnose.Report, runErr error, show bool) {
	id := e.InvestigationID()
	if id == "" {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	u := brainapi.Outcome(rep, runErr)
	if err := e.Finish(fctx, rep, runErr); err != nil {
		fmt.Fprintf(a.stderr, "nannyagent: the outcome of investigation %s was not recorded on NannyAPI: %v\n", id, err)
		return
	}
	if show {
		fmt.Fprintf(a.stderr, "recorded on NannyAPI as investigation %s (%s)\n", id, u.Status)
	}
}

// recordTimeout bounds recording an investigation's outcome.
const recordTimeout = 30 * time.Second

func factsSummary(f *sysinfo.Facts) string {
	if f == nil {
		return ""
	}
	var parts []string
	if f.Hostname != "" {
		parts = append(parts, f.Hostname)
	}
	if f.Kernel != "" {
		parts = append(parts, "kernel "+f.Kernel)
	}
	parts = append(parts, fmt.Sprintf("%d CPUs, load %.2f", f.CPUs, f.Load[0]), fmt.Sprintf("%d filesystems", len(f.Filesystems)))
	if n := len(f.Warnings); n > 0 {
		parts = append(parts, fmt.Sprintf("%d could not be read (see --json facts.warnings)", n))
	}
	return ": " + strings.Join(parts, ", ")
}

// interruptible makes Ctrl-C cancel ctx for the commands that end
// cleanly on it (traces detach, commands are killed); in-process tests
// cancel ctx themselves.
func (a *app) interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	if !a.signals {
		return ctx, func() {}
	}
	return notifyInterrupt(ctx)
}

func (a *app) defaultCollect(ctx context.Context, o sysinfo.Options) *sysinfo.Facts {
	return sysinfo.Collect(ctx, o)
}

func defaultGeteuid() int { return os.Geteuid() }
