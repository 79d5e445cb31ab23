// Package cli is the nannyagent command line: flag parsing and output
// only; the work happens in the packages it calls.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/nannyagent/nannyagent/internal/version"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// Main runs the command line and returns the process exit code.
func Main(args []string) int {
	// SIGTERM ends everything; Ctrl-C is left to each command, because in
	// the interactive mode it cancels an investigation, not the program.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	a := newApp(os.Stdout, os.Stderr)
	a.stdin = os.Stdin
	a.signals = true
	return a.run(ctx, args)
}

// run is the command line with in-process defaults, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return newApp(stdout, stderr).run(ctx, args)
}

func newApp(stdout, stderr io.Writer) *app {
	a := &app{stdout: stdout, stderr: stderr, geteuid: defaultGeteuid, newEngine: newEngine, registration: registration}
	a.collectFacts = a.defaultCollect
	return a
}

func (a *app) run(ctx context.Context, args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if a.log != nil {
		_ = a.log.Sync()
	}
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(a.stderr, "nannyagent:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(a.stderr, "nannyagent:", err)
	if isUsageError(err) {
		return exitUsage
	}
	return 1
}

// isUsageError recognises cobra's own argument and flag errors, which it
// returns as plain errors.
func isUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "accepts ", "requires at least", "requires at most", "bad flag syntax", "if any flags in the group"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

type app struct {
	stdout, stderr io.Writer
	// stdin is the terminal of the interactive mode; nil in tests.
	stdin *os.File
	// signals is set in the real process: commands then handle Ctrl-C
	// themselves (tests cancel the context instead).
	signals bool

	verbose, debug bool
	configPath     string
	log            *zap.Logger
	cfg            *config.Config
	backend        backendFlags

	// Hooks, replaced by tests.
	geteuid      func() int
	newEngine    func(cfg *config.Config, choice engineChoice, log *zap.Logger) (brain.Engine, error)
	registration func(cfg *config.Config, log *zap.Logger) (*auth.Manager, error)
	collectFacts func(ctx context.Context, o sysinfo.Options) *sysinfo.Facts
}

func (a *app) rootCommand() *cobra.Command {
	var legacy string
	var daemonFlag bool
	var f diagnoseFlags
	root := &cobra.Command{
		Use:   "nannyagent",
		Short: "Linux diagnostic agent built on compiled eBPF programs",
		Long: `nannyagent finds out why a Linux host misbehaves. Describe the symptom; it
collects the host's facts, asks a reasoning engine what to look at, runs
read-only commands in a sandbox and kernel traces from its catalog of
compiled CO-RE eBPF programs, and prints the root cause, the evidence and
a resolution plan.

  sudo nannyagent                      interactive: a prompt, one investigation per line
  sudo nannyagent diagnose "ISSUE"     one investigation (also: --diagnose "ISSUE")
  nannyagent trace list | run NAME     the eBPF catalog, directly
  nannyagent check                     what works on this kernel
  sudo nannyagent register             connect to NannyAPI (also: --register [--force])
  sudo nannyagent status               registration, backend, daemon (also: --status)
  sudo nannyagent daemon               the NannyAPI agent service (also: --daemon)

With no arguments and no terminal on stdin and stdout, nannyagent prints
a usage hint and exits 2; it never reads investigations from a pipe.

The configuration is /etc/nannyagent/config.yaml (or --config PATH); see
docs/CONFIGURATION.md.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr(fmt.Errorf("unknown command %q (see nannyagent --help)", args[0]))
			}
			return nil
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup(cmd)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if daemonFlag {
				if f := cmd.Flags(); f.Changed("diagnose") || f.Changed("register") || f.Changed("status") || f.Changed("json") {
					return usageErr(errors.New("--daemon goes alone (with the configuration flags), not with --diagnose, --register or --status"))
				}
				return a.runDaemon(cmd.Context())
			}
			if handled, err := a.legacyBackend(cmd); handled {
				return err
			}
			if cmd.Flags().Changed("diagnose") {
				return a.oneShot(cmd.Context(), legacy, f)
			}
			if f.asJSON {
				return usageErr(errors.New("--json goes with --diagnose \"ISSUE\" or the diagnose command"))
			}
			if a.stdin == nil || !isTerminal(a.stdin) || !isTerminal(a.stdout) {
				return usageErr(errors.New(`no terminal for the interactive mode: run it from a terminal, or investigate one issue with nannyagent diagnose "ISSUE" (see nannyagent --help)`))
			}
			return a.interactive(cmd.Context(), f.engine)
		},
	}
	root.SetVersionTemplate("nannyagent {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.Flags().BoolP("version", "v", false, "print the version and exit")
	root.Flags().StringVar(&legacy, "diagnose", "", "investigate this issue and exit (the same as the diagnose command)")
	root.Flags().BoolVar(&daemonFlag, "daemon", false, "run as the NannyAPI agent service (the same as the daemon command)")
	f.register(root)
	a.addLegacyBackendFlags(root)
	a.addBackendFlags(root)
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", config.DefaultPath, "configuration file (a missing default file is fine; a missing file named here is an error)")
	pf.BoolVar(&a.verbose, "verbose", false, "log what happens (feature probes, attach modes, engine requests) to stderr")
	pf.BoolVar(&a.debug, config.FlagFor("debug"), false, "the same as --verbose (config key debug, environment DEBUG=1)")
	root.AddCommand(a.traceCommand(), a.checkCommand(), a.diagnoseCommand(), a.registerCommand(), a.statusCommand(), a.daemonCommand())
	return root
}

// setup loads the configuration (file, environment, flags) and builds the
// logger, before any command runs.
func (a *app) setup(cmd *cobra.Command) error {
	explicit := false
	if fl := cmd.Flag("config"); fl != nil {
		explicit = fl.Changed
	}
	cfg, err := a.loadConfig(cmd, explicit)
	if err != nil {
		return usageErr(err)
	}
	a.cfg = cfg
	a.log = newLogger(a.stderr, a.verbose || cfg.Debug)
	return nil
}

// newLogger logs to stderr: a console encoder for people, warnings only
// unless --verbose.
func newLogger(w io.Writer, verbose bool) *zap.Logger {
	level := zapcore.WarnLevel
	if verbose {
		level = zapcore.DebugLevel
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), level)
	return zap.New(core)
}

func notifyInterrupt(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt)
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
