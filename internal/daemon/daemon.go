// Package daemon is `nannyagent --daemon`: one process that keeps the
// agent's token fresh, holds the realtime subscription to NannyAPI,
// catches up on what it missed after every (re)subscription, runs the
// investigations the portal pushes with the NannyAPI engine, reports
// metrics and the Proxmox inventory, and hands patch and reboot
// operations to their handlers.
//
// Every component runs under one errgroup; none of them returns on a
// backend error (they retry with bounded backoff), so the group ends only
// when the process is told to stop, and then within a bounded time.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/realtime"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Defaults of Options.
const (
	// DefaultShutdownTimeout leaves a second of systemd's default 10 s
	// stop timeout (and of the 10 s this agent promises) for the exit.
	DefaultShutdownTimeout = 9 * time.Second
	// DefaultFinishTimeout bounds recording an investigation as failed
	// once shutdown has begun.
	DefaultFinishTimeout = 3 * time.Second
	// DefaultFinishMax bounds recording an investigation's outcome in
	// normal operation (retries included).
	DefaultFinishMax = 2 * time.Minute
	// queueSize bounds the investigations waiting for a worker; beyond
	// it an investigation stays pending on the backend and the next
	// catch-up offers it again.
	queueSize = 256
	// opsQueueSize bounds the patch and reboot operations waiting.
	opsQueueSize = 64
)

// ShuttingDown is the reason an investigation cut short by a stop is
// recorded with.
const ShuttingDown = "agent shutting down"

// Runner is a component with its own loop (the token refresher, the
// metrics sender). Run returns when ctx ends; an error ends the daemon.
type Runner interface {
	Run(ctx context.Context) error
}

// RunFunc adapts a function to a Runner.
type RunFunc func(ctx context.Context) error

// Run calls f.
func (f RunFunc) Run(ctx context.Context) error { return f(ctx) }

// PatchHandler carries out a patch operation (NANNYAPI.md §2.9).
type PatchHandler interface {
	HandlePatch(ctx context.Context, op nannyapi.PatchOperationRecord) error
}

// RebootHandler carries out a reboot operation (§2.10).
type RebootHandler interface {
	HandleReboot(ctx context.Context, op nannyapi.RebootOperationRecord) error
}

// Options configure a Daemon. Client, Tokens and AgentID are required.
type Options struct {
	Config *config.Config
	// Client makes the REST calls; Tokens is the same token source, for
	// the realtime subscription.
	Client  *nannyapi.Client
	Tokens  nannyapi.TokenSource
	AgentID string

	// Auth keeps the tokens fresh (refresh, renewal); nil when Tokens
	// refreshes on demand.
	Auth Runner
	// Metrics is the metrics loop (see NewMetrics); nil sends none.
	Metrics Runner
	// Proxmox reports the Proxmox VE inventory (internal/proxmox); nil
	// on hosts that are not Proxmox VE nodes.
	Proxmox Runner
	// Patches and Reboots carry out the fleet operations (internal/patch,
	// internal/reboot); nil logs and drops them.
	Patches PatchHandler
	Reboots RebootHandler

	// Kernel runs traces; nil means none (TraceUnavailable says why).
	Kernel           *catalog.Kernel
	TraceUnavailable string
	// Facts collects the host's facts for an investigation (default
	// sysinfo.Collect with redaction).
	Facts func(ctx context.Context) *sysinfo.Facts
	// Exec runs the commands (default: sandboxed, with
	// diagnose.command_timeout_sec).
	Exec *safeexec.Options
	// EngineRetry is the NannyAPI engine's retry policy (zero: its
	// defaults); tests replace its Sleep.
	EngineRetry nannyapi.Backoff

	// Realtime adjusts the realtime client's options (tests: backoff,
	// clock, stall timeout).
	Realtime func(*realtime.Options)

	Notifier *Notifier
	Logger   *zap.Logger

	ShutdownTimeout time.Duration
	FinishTimeout   time.Duration
	FinishMax       time.Duration
}

// Stats count what the daemon did.
type Stats struct {
	// Investigations: accepted (queued), run, recorded completed or
	// failed, failed to record, skipped as the agent's own, skipped as
	// already run, dropped because the queue was full.
	Queued, Started, Completed, Failed, RecordErrors uint64
	SkippedOwn, SkippedSeen, SkippedOther, Dropped   uint64
	// Operations handed to the patch and reboot handlers.
	Patches, Reboots uint64
	// Catch-up passes that succeeded, and records they offered anew.
	Catchups, CatchupRecords uint64
}

// Daemon is one running agent.
type Daemon struct {
	o      Options
	log    *zap.Logger
	cfg    *config.Config
	dedup  *realtime.Dedup
	rt     *realtime.Client
	jobs   chan job
	ops    chan realtime.Event
	finish context.Context

	mu    sync.Mutex
	stats Stats
	// started remembers the investigations taken, so that none runs
	// twice.
	started *realtime.Dedup
	running map[string]context.CancelFunc
}

type job struct {
	rec nannyapi.InvestigationRecord
	key realtime.Key
}

// New checks o and builds the daemon; nothing runs until Run.
func New(o Options) (*Daemon, error) {
	if o.Client == nil || o.Tokens == nil {
		return nil, errors.New("daemon: a backend client and its token source are required")
	}
	if o.AgentID == "" {
		return nil, errors.New("daemon: no agent ID: register first (sudo nannyagent --register)")
	}
	if o.Config == nil {
		o.Config = config.Defaults()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.FinishTimeout <= 0 {
		o.FinishTimeout = DefaultFinishTimeout
	}
	if o.FinishMax <= 0 {
		o.FinishMax = DefaultFinishMax
	}
	d := &Daemon{
		o: o, log: o.Logger, cfg: o.Config, dedup: realtime.NewDedup(0),
		jobs: make(chan job, queueSize), ops: make(chan realtime.Event, opsQueueSize),
		started: realtime.NewDedup(maxRemembered), running: map[string]context.CancelFunc{},
	}
	if d.o.Patches == nil {
		d.o.Patches = unhandled{d.log.Named("patches")}
	}
	if d.o.Reboots == nil {
		d.o.Reboots = unhandled{d.log.Named("reboots")}
	}
	ro := realtime.Options{
		BaseURL: o.Client.BaseURL(), Tokens: o.Tokens, Handler: d.onEvent, Catchup: d.catchup,
		Subscriptions: nannyapi.Topics, Dedup: d.dedup,
		Backoff: realtime.BackoffFromConfig(o.Config.HTTPTransport), Logger: o.Logger,
	}
	if o.Realtime != nil {
		o.Realtime(&ro)
	}
	rt, err := realtime.New(ro)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d.rt = rt
	return d, nil
}

// Stats returns a copy of the counters.
func (d *Daemon) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Realtime is the realtime client, for its counters.
func (d *Daemon) Realtime() *realtime.Client { return d.rt }

func (d *Daemon) count(f func(*Stats)) {
	d.mu.Lock()
	f(&d.stats)
	d.mu.Unlock()
}

// ErrShutdownTimeout is returned when the components did not stop within
// ShutdownTimeout; the process should exit anyway.
var ErrShutdownTimeout = errors.New("daemon: components did not stop in time")

// Run runs every component until ctx ends (SIGTERM), then stops them
// within ShutdownTimeout: investigations in progress are cancelled and
// recorded as failed ("agent shutting down"). It returns nil after a
// clean stop, the first component error that ended it otherwise.
func (d *Daemon) Run(ctx context.Context) error {
	// Recording outcomes outlives the components' context by
	// FinishTimeout, so a stop still reports what it cut short.
	finish, finishCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer finishCancel()
	defer d.o.Client.CloseIdleConnections()
	d.finish = finish

	g, gctx := errgroup.WithContext(ctx)
	n := d.cfg.Daemon.MaxConcurrentInvestigations
	if n <= 0 {
		n = 1
	}
	for i := 0; i < n; i++ {
		g.Go(func() error { d.worker(gctx); return nil })
	}
	g.Go(func() error { d.operations(gctx); return nil })
	g.Go(func() error { return d.rt.Run(gctx) })
	if d.o.Auth != nil {
		g.Go(func() error { return named("auth", d.o.Auth.Run(gctx)) })
	}
	if d.o.Metrics != nil {
		g.Go(func() error { return named("metrics", d.o.Metrics.Run(gctx)) })
	}
	if d.o.Proxmox != nil {
		g.Go(func() error { return named("proxmox", d.o.Proxmox.Run(gctx)) })
	}
	if every := d.o.Notifier.WatchdogEvery(); every > 0 {
		g.Go(func() error { d.watchdog(gctx, every); return nil })
	}
	d.log.Info("daemon started", zap.String("agent_id", d.o.AgentID), zap.String("backend", d.o.Client.BaseURL()),
		zap.Int("max_concurrent_investigations", n))
	if err := d.o.Notifier.Notify("READY=1\nSTATUS=running"); err != nil {
		d.log.Warn("cannot tell systemd the daemon is ready", zap.Error(err))
	}

	<-gctx.Done()
	_ = d.o.Notifier.Notify("STOPPING=1")
	d.log.Info("daemon stopping")
	stopFinish := time.AfterFunc(d.o.FinishTimeout, finishCancel)
	defer stopFinish.Stop()
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	t := time.NewTimer(d.o.ShutdownTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			d.log.Error("daemon stopped on an error", zap.Error(err))
			return err
		}
		d.log.Info("daemon stopped")
		return nil
	case <-t.C:
		d.log.Error("components did not stop in time; exiting anyway", zap.Duration("timeout", d.o.ShutdownTimeout))
		return ErrShutdownTimeout
	}
}

func named(what string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (d *Daemon) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.o.Notifier.Notify("WATCHDOG=1"); err != nil {
				d.log.Warn("systemd watchdog notification failed", zap.Error(err))
			}
		}
	}
}

// unhandled stands in for a missing patch or reboot handler.
type unhandled struct{ log *zap.Logger }

func (u unhandled) HandlePatch(_ context.Context, op nannyapi.PatchOperationRecord) error {
	u.log.Warn("patch operation dropped: no patch handler", zap.String("id", op.ID), zap.String("mode", op.Mode))
	return nil
}

func (u unhandled) HandleReboot(_ context.Context, op nannyapi.RebootOperationRecord) error {
	u.log.Warn("reboot operation dropped: no reboot handler", zap.String("id", op.ID), zap.String("reason", op.Reason))
	return nil
}
