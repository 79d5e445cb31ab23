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
	"syscall"

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

// Main runs the command line and returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, os.Stdout, os.Stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &app{stdout: stdout, stderr: stderr}
	root := app.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if app.log != nil {
		_ = app.log.Sync()
	}
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "nannyagent:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "nannyagent:", err)
	return 1
}

type app struct {
	stdout, stderr io.Writer
	verbose        bool
	log            *zap.Logger
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "nannyagent",
		Short: "Linux diagnostic agent built on compiled eBPF programs",
		Long: `nannyagent finds out why a Linux host misbehaves. Its kernel tracing is a
catalog of compiled CO-RE eBPF programs: run them with 'nannyagent trace',
see what works on this kernel with 'nannyagent check'.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.log = newLogger(a.stderr, a.verbose)
			return nil
		},
	}
	root.SetVersionTemplate("nannyagent {{.Version}}\n")
	root.Flags().BoolP("version", "v", false, "print the version and exit")
	root.PersistentFlags().BoolVar(&a.verbose, "verbose", false, "log what happens (feature probes, attach modes) to stderr")
	root.AddCommand(a.traceCommand(), a.checkCommand())
	return root
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

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
