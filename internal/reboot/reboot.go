// Package reboot carries out the reboot operations the portal sends to
// the daemon (NANNYAPI.md §2.10): reboot the host, or one of its Proxmox
// LXC containers, once the backend has been told.
//
// The backend marks a reboot completed as soon as the agent posts
// metrics after acknowledging it, so the order of a reboot is: pause the
// metrics loop, acknowledge, run the reboot command, and only then let
// metrics go again. A reboot is never retried: a failed command is
// reported and left to the portal.
package reboot

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/backoff"
	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"go.uber.org/zap"
)

// Pauser is the metrics loop as a reboot needs it (*metrics.Sender):
// Pause returns once no payload is in flight, and none leaves until
// Resume (or until `until`, when it is not zero).
type Pauser interface {
	Pause(until time.Time)
	Resume()
}

// Backend is what a reboot needs of NannyAPI (*nannyapi.Client).
type Backend interface {
	AcknowledgeReboot(ctx context.Context, id string) error
	FailReboot(ctx context.Context, id, message string) error
}

// Defaults of Options.
const (
	// DefaultPctPath is Proxmox VE's container tool.
	DefaultPctPath = "/usr/sbin/pct"
	// DefaultCommandTimeout bounds one reboot command: systemctl reboot
	// and shutdown -r return once the reboot is queued, pct reboot once
	// the container is back.
	DefaultCommandTimeout = 2 * time.Minute
	// DefaultHold bounds the silence after a host reboot command of an
	// operation without a timeout (the backend's default timeout).
	DefaultHold = 300 * time.Second
	// reportTimeout bounds the failure report, stopReportTimeout the
	// one made while the daemon stops (within its 9 s).
	reportTimeout     = 30 * time.Second
	stopReportTimeout = 3 * time.Second
)

// DefaultSearchPath is where systemctl and shutdown are looked for.
var DefaultSearchPath = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// Options configure a Handler. Backend is required.
type Options struct {
	Backend Backend
	// Metrics is the daemon's metrics loop; nil when it has none.
	Metrics Pauser
	// Command is the host reboot command (daemon.reboot_command): an
	// absolute program and its arguments. Empty means systemctl reboot,
	// falling back to shutdown -r now when systemctl is missing or
	// fails.
	Command []string
	// DryRun acknowledges operations and logs the command instead of
	// running it (daemon.reboot_dry_run).
	DryRun bool
	// PctPath is the pct program (default DefaultPctPath).
	PctPath string
	// SearchPath lists the directories systemctl and shutdown are looked
	// for in (default DefaultSearchPath); the daemon's own PATH is not
	// used.
	SearchPath []string
	// CommandTimeout bounds each command (default DefaultCommandTimeout).
	CommandTimeout time.Duration
	// Hold bounds how long metrics stay paused after a host reboot
	// command succeeded, waiting for the host to go down; 0 means the
	// operation's timeout_seconds (DefaultHold when it has none).
	Hold time.Duration
	// Sleep waits out the hold (default: a timer); it returns ctx's
	// error when ctx ends first.
	Sleep  func(ctx context.Context, d time.Duration) error
	Logger *zap.Logger
}

// FromConfig fills the options the configuration sets: the host reboot
// command and dry run.
func FromConfig(cfg *config.Config, backend Backend, metrics Pauser, log *zap.Logger) Options {
	return Options{
		Backend: backend, Metrics: metrics, Command: append([]string(nil), cfg.Daemon.RebootCommand...),
		DryRun: cfg.Daemon.RebootDryRun, Logger: log,
	}
}

// Handler carries out reboot operations; it is the daemon's
// RebootHandler. It is safe for concurrent use, though the daemon
// hands it one operation at a time.
type Handler struct {
	o   Options
	log *zap.Logger
}

// New checks o and returns a Handler.
func New(o Options) (*Handler, error) {
	if o.Backend == nil {
		return nil, errors.New("reboot: a backend client is required")
	}
	if len(o.Command) > 0 {
		if !filepath.IsAbs(o.Command[0]) {
			return nil, fmt.Errorf("reboot: command program %q must be an absolute path (e.g. /usr/bin/systemctl)", o.Command[0])
		}
		for _, a := range o.Command {
			if a == "" || strings.ContainsRune(a, 0) {
				return nil, fmt.Errorf("reboot: command %q has an empty argument or a NUL byte", o.Command)
			}
		}
		o.Command = append([]string(nil), o.Command...)
	}
	if o.PctPath == "" {
		o.PctPath = DefaultPctPath
	}
	if !filepath.IsAbs(o.PctPath) {
		return nil, fmt.Errorf("reboot: pct path %q must be absolute", o.PctPath)
	}
	if o.SearchPath == nil {
		o.SearchPath = DefaultSearchPath
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	if o.Metrics == nil || isNil(o.Metrics) {
		o.Metrics = noMetrics{}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Handler{o: o, log: o.Logger}, nil
}

// isNil: a nil *metrics.Sender in the interface (a daemon built
// without metrics) means no metrics loop, not a crash at the first
// reboot.
func isNil(p Pauser) bool {
	v := reflect.ValueOf(p)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

type noMetrics struct{}

func (noMetrics) Pause(time.Time) {}
func (noMetrics) Resume()         {}

// plan is what an operation will run: commands tried in order, each
// later one only when the one before is missing or fails.
type plan struct {
	target   string // "host" or "lxc <vmid>"
	lxc      bool
	commands [][]string
}

// The range of Proxmox VE guest IDs (those below 100 are reserved).
const (
	minVMID = 100
	maxVMID = 999999999
)

// planFor checks the operation and chooses its commands. Nothing in the
// record reaches a command line unchecked.
func (h *Handler) planFor(op nannyapi.RebootOperationRecord) (plan, error) {
	if !nannyapi.IsRecordID(op.ID) {
		return plan{}, fmt.Errorf("reboot: operation ID %q is not a record ID (15 lowercase letters and digits); refusing it", op.ID)
	}
	if op.LXCID != "" || op.VMID != "" {
		if op.VMID == "" {
			return plan{}, fmt.Errorf("reboot %s: container %q has no vmid; refusing it rather than rebooting the host", op.ID, op.LXCID)
		}
		n, err := strconv.Atoi(op.VMID)
		if err != nil || strconv.Itoa(n) != op.VMID || n < minVMID || n > maxVMID {
			return plan{}, fmt.Errorf("reboot %s: vmid %q is not a Proxmox guest ID (a number from %d to %d); refusing it", op.ID, op.VMID, minVMID, maxVMID)
		}
		return plan{target: "lxc " + op.VMID, lxc: true, commands: [][]string{{h.o.PctPath, "reboot", op.VMID}}}, nil
	}
	if len(h.o.Command) > 0 {
		return plan{target: "host", commands: [][]string{h.o.Command}}, nil
	}
	var cmds [][]string
	for _, c := range [][]string{{"systemctl", "reboot"}, {"shutdown", "-r", "now"}} {
		if p := h.find(c[0]); p != "" {
			cmds = append(cmds, append([]string{p}, c[1:]...))
		}
	}
	if len(cmds) == 0 {
		if !h.o.DryRun {
			return plan{}, fmt.Errorf("reboot %s: neither systemctl nor shutdown is in %s; set daemon.reboot_command", op.ID, strings.Join(h.o.SearchPath, ":"))
		}
		cmds = [][]string{{"systemctl", "reboot"}}
	}
	return plan{target: "host", commands: cmds}, nil
}

// HandleReboot carries out one reboot operation: pause metrics,
// acknowledge, reboot. It returns an error when the operation is
// refused, cannot be acknowledged (nothing is run) or its command
// fails (reported to the backend as failed).
func (h *Handler) HandleReboot(ctx context.Context, op nannyapi.RebootOperationRecord) error {
	p, err := h.planFor(op)
	if err != nil {
		return err
	}
	log := h.log.With(zap.String("reboot", op.ID), zap.String("target", p.target))
	log.Info("reboot requested", zap.String("reason", op.Reason), zap.Int("timeout_seconds", op.TimeoutSeconds), zap.Bool("dry_run", h.o.DryRun))

	// A metrics post after the acknowledgement completes the operation
	// on the backend, so none may leave from here until the reboot has
	// happened (or failed).
	h.o.Metrics.Pause(time.Time{})
	resume := true
	defer func() {
		if resume {
			h.o.Metrics.Resume()
		}
	}()
	if err := h.o.Backend.AcknowledgeReboot(ctx, op.ID); err != nil {
		return fmt.Errorf("reboot %s: not rebooting, the acknowledgement failed: %w", op.ID, err)
	}
	log.Info("reboot acknowledged")

	if h.o.DryRun {
		log.Info("dry run: not running the reboot command", zap.String("command", strings.Join(p.commands[0], " ")))
		return nil
	}
	if ctx.Err() != nil {
		// Stopped between the acknowledgement and the reboot: an
		// operator stopping the agent is not a reason to reboot.
		msg := "the agent stopped before rebooting"
		if rerr := h.report(ctx, op.ID, msg); rerr != nil {
			log.Warn("cannot report the reboot not done", zap.Error(rerr))
		}
		return fmt.Errorf("reboot %s: %s", op.ID, msg)
	}
	if err := h.execute(ctx, log, p); err != nil {
		msg := err.Error()
		if rerr := h.report(ctx, op.ID, msg); rerr != nil {
			log.Warn("cannot report the failed reboot", zap.Error(rerr))
		}
		return fmt.Errorf("reboot %s: %s", op.ID, msg)
	}
	if p.lxc {
		log.Info("container rebooted; metrics resume, and the next post completes the operation")
		return nil
	}
	hold := h.o.Hold
	if hold <= 0 {
		hold = time.Duration(op.TimeoutSeconds) * time.Second
	}
	if hold <= 0 {
		hold = DefaultHold
	}
	log.Info("reboot command accepted; metrics stay paused until the host goes down", zap.Duration("at_most", hold))
	if err := h.o.Sleep(ctx, hold); err != nil {
		// The daemon is stopping, as a reboot stops it: no metrics.
		resume = false
		return nil
	}
	log.Warn("the host did not go down after the reboot command; resuming metrics (the backend will mark the reboot completed)", zap.Duration("waited", hold))
	return nil
}

// execute runs the plan's commands until one succeeds; every failure is
// in the error.
func (h *Handler) execute(ctx context.Context, log *zap.Logger, p plan) error {
	var fails []string
	for _, argv := range p.commands {
		cmd := strings.Join(argv, " ")
		log.Info("running the reboot command", zap.String("command", cmd))
		out, err := run(ctx, argv, h.o.CommandTimeout)
		if err == nil {
			log.Info("reboot command succeeded", zap.String("command", cmd), zap.String("output", out))
			return nil
		}
		log.Error("reboot command failed", zap.String("command", cmd), zap.Error(err), zap.String("output", out))
		f := cmd + ": " + err.Error()
		if out != "" {
			f += " (output: " + out + ")"
		}
		fails = append(fails, f)
	}
	return errors.New("reboot command failed: " + strings.Join(fails, "; then "))
}

// report records the failure on the backend, best effort; once the
// daemon is stopping it gets a moment of its shutdown time.
func (h *Handler) report(ctx context.Context, id, msg string) error {
	timeout := reportTimeout
	if ctx.Err() != nil {
		ctx, timeout = context.WithoutCancel(ctx), stopReportTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return h.o.Backend.FailReboot(rctx, id, msg)
}
