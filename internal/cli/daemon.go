package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/daemon"
	"github.com/nannyagent/nannyagent/internal/metrics"
	"github.com/nannyagent/nannyagent/internal/patch"
	"github.com/nannyagent/nannyagent/internal/proxmox"
	"github.com/nannyagent/nannyagent/internal/reboot"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func (a *app) daemonCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "daemon",
		Short: "Run as the NannyAPI agent service (what systemd starts; also: --daemon); needs root and a registration",
		Long: `daemon runs the agent for NannyAPI until it is stopped (the same as --daemon):

  - it keeps the agent's token fresh;
  - it holds the realtime subscription (investigations, patch and reboot
    operations), reconnects at once when the backend closes an idle
    stream, and after every subscription catches up through the records
    API on what was missed;
  - it runs the investigations started from the portal with the NannyAPI
    engine (daemon.max_concurrent_investigations at a time, default one),
    each once, and records them completed with the resolution plan or
    failed with the reason; investigations this host created itself (the
    diagnose command) are left to the command that created them;
  - it reports metrics every metrics_interval seconds and once at start;
    while the backend is away it keeps the latest sample and retries with
    the http_transport backoff;
  - it runs the patch operations pushed from the portal, one at a time:
    the script is downloaded, checked against the SHA-256 the backend
    gives for it (never run on a mismatch), run with --dry-run or to
    apply, with --exclude for the agent's package exceptions, on the host
    or in an LXC container (pct exec), bounded by daemon.patch_timeout_sec,
    and its exit code, stdout and stderr uploaded;
  - it carries out reboot operations: metrics pause, the operation is
    acknowledged, then the host reboots (systemctl reboot, falling back to
    shutdown -r now, or daemon.reboot_command) or the container does (pct
    reboot); daemon.reboot_dry_run only logs the command;
  - on a Proxmox VE node (pveversion present) it reports the node, its
    cluster and the node's LXC containers and QEMU VMs every
    proxmox_interval seconds, starting 10 seconds after start.

Logs are JSON lines on stderr (the journal under systemd); --debug or
debug: true adds the debug level. Under systemd (Type=notify) it says
READY=1 once started and WATCHDOG=1 at half of WatchdogSec.

SIGTERM or Ctrl-C stops it within 10 seconds; an investigation still
running is recorded failed ("agent shutting down").

Exit status: 0 stopped cleanly; 1 an error (not root, not registered, a
component failed, or the stop took too long); 2 a usage or configuration
error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runDaemon(cmd.Context())
		},
	}
}

// newDaemonLogger logs JSON lines to w for the journal: info and up,
// debug too when asked.
func newDaemonLogger(w io.Writer, debug bool) *zap.Logger {
	level := zapcore.InfoLevel
	if debug {
		level = zapcore.DebugLevel
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(w), level)
	return zap.New(core)
}

func (a *app) runDaemon(ctx context.Context) error {
	if a.geteuid() != 0 {
		return &exitError{code: 1, err: errors.New("the daemon needs root: it reads the tokens, runs kernel traces and sandboxed commands (run it as the systemd service, or with sudo)")}
	}
	if err := a.cfg.RequireBackend(); err != nil {
		return usageErr(err)
	}
	if a.signals {
		var stop context.CancelFunc
		ctx, stop = notifyInterrupt(ctx)
		defer stop()
	}
	log := newDaemonLogger(a.stderr, a.verbose || a.cfg.Debug)
	defer func() { _ = log.Sync() }()

	m, err := auth.New(a.cfg, auth.Options{Logger: log})
	if err != nil {
		return err
	}
	if !m.Registered() {
		if p := m.Status().Problem; p != "" {
			return errors.New(p)
		}
		return auth.ErrNotRegistered
	}
	state, err := auth.OpenStateWriter(m.TokenPath())
	if err != nil {
		// --status then cannot see the daemon; the daemon still works.
		log.Warn("cannot write the daemon's state file", zap.Error(err))
		state = nil
	}
	notifier, err := daemon.NotifierFromEnv(os.Getenv, os.Getpid())
	if err != nil {
		log.Warn("cannot talk to systemd", zap.Error(err))
	}
	collector := metrics.NewCollector(metrics.Options{Logger: log.Named("metrics")})
	sender, err := daemon.NewMetrics(daemon.MetricsOptions{
		Config: a.cfg, Client: m.Client(), Collect: collector.Collect, Logger: log.Named("metrics"),
		Sent: func(at time.Time) {
			if state != nil {
				if err := state.MetricsSent(at); err != nil {
					log.Warn("cannot record the metrics time in the state file", zap.Error(err))
				}
			}
		},
	})
	if err != nil {
		return err
	}
	report := func(err error) {
		if state != nil {
			_ = state.Failed(err)
		}
	}
	patches, err := patch.New(patch.Options{
		Client: m.Client(), AgentID: m.AgentID(),
		Timeout: time.Duration(a.cfg.Daemon.PatchTimeoutSec) * time.Second,
		// Beside the tokens: /var/lib/nannyagent/patches by default, a
		// directory of root's alone.
		BaseDir: filepath.Join(filepath.Dir(m.TokenPath()), "patches"),
		Logger:  log.Named("patch"),
	})
	if err != nil {
		return err
	}
	reboots, err := reboot.New(reboot.FromConfig(a.cfg, m.Client(), sender, log.Named("reboot")))
	if err != nil {
		return err
	}
	inventory, err := proxmox.New(proxmox.Options{
		Backend: m.Client(), AgentID: m.AgentID(), Config: a.cfg, Logger: log.Named("proxmox"),
	})
	if err != nil {
		return err
	}
	d, err := daemon.New(daemon.Options{
		Config: a.cfg, Client: m.Client(), Tokens: m, AgentID: m.AgentID(),
		Auth:     daemon.AuthLoop(m, a.cfg, log.Named("auth"), report),
		Metrics:  sender,
		Patches:  patches,
		Reboots:  reboots,
		Proxmox:  inventory,
		Kernel:   catalog.NewKernel(log.Named("catalog")),
		Notifier: notifier, Logger: log,
	})
	if err != nil {
		return err
	}
	runErr := d.Run(ctx)
	if state != nil {
		if runErr != nil {
			report(runErr)
		} else if err := state.Stopped(); err != nil {
			log.Warn("cannot record the stop in the state file", zap.Error(err))
		}
	}
	if runErr != nil {
		return fmt.Errorf("daemon: %w", runErr)
	}
	return nil
}
