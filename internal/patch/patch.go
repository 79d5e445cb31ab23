// Package patch carries out the patch operations the portal sends
// (NANNYAPI.md §2.9, §7.7): it checks the operation, downloads the
// script the backend names, verifies its SHA-256 against the backend's
// /api/scripts/{id}/validate, runs it on the host or in a Proxmox
// container (pct exec) in its own process group under a timeout, and
// uploads the exit code, stdout and stderr. Anything that stops the
// script from running is reported the same way, as exit code 1 with the
// reason in stderr, so the operation never stays pending.
package patch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	// DefaultTimeout is daemon.patch_timeout_sec's default.
	DefaultTimeout = 30 * time.Minute
	// DefaultBaseDir holds the private directory of each run. It is not
	// /tmp, which is often mounted noexec.
	DefaultBaseDir = "/var/lib/nannyagent/patches"
	// DefaultPct is Proxmox VE's container tool.
	DefaultPct = "/usr/sbin/pct"
	// DefaultOutputCap keeps each of stdout and stderr, with the
	// truncation note and the agent's own notes, under the backend's
	// 10 MB file limit.
	DefaultOutputCap = nannyapi.MaxPatchFileBytes - 64<<10
	// DefaultWaitDelay bounds how long output is still read once the
	// script has exited or been killed: a process that left the group
	// and kept the pipes open cannot hold the run.
	DefaultWaitDelay = 5 * time.Second
	// DefaultFinishTimeout bounds the result upload once the agent is
	// stopping.
	DefaultFinishTimeout = 5 * time.Second
)

// ExitFailedToRun is the exit code reported when the script did not
// run: a refused operation, a failed download or checksum, a start
// failure (§2.9 step 5).
const ExitFailedToRun = 1

// Proxmox VE's range of guest IDs.
const (
	minVMID = 100
	maxVMID = 999999999
)

// maxExclusions and maxPackageName bound what goes onto the command
// line.
const (
	maxExclusions  = 1000
	maxPackageName = 255
)

// Options configure a Handler. Client is required.
type Options struct {
	Client *nannyapi.Client
	// AgentID, when set, refuses operations addressed to another agent
	// (the backend would refuse their upload anyway).
	AgentID string
	// Timeout bounds one script run (daemon.patch_timeout_sec; default
	// DefaultTimeout). When it passes, the script's process group is
	// killed and the run reported failed.
	Timeout time.Duration
	// BaseDir is where each run makes its private directory (mode 0700)
	// for the script; it is created (0700) when missing. It must allow
	// executing files. Default DefaultBaseDir.
	BaseDir string
	// Pct is the path of pct, for operations on a container (default
	// DefaultPct).
	Pct string
	// MaxScriptBytes bounds the download (default
	// nannyapi.DefaultMaxScriptBytes).
	MaxScriptBytes int64
	// OutputCap is how much of each of stdout and stderr is kept (the
	// start; a note at the end says how much was left out). Default and
	// maximum DefaultOutputCap.
	OutputCap int
	// WaitDelay bounds reading output after the script ended (default
	// DefaultWaitDelay).
	WaitDelay time.Duration
	// SkipRunning leaves out the PATCH that marks the operation running
	// before the download.
	SkipRunning bool
	// UploadRetry retries the result upload on transport errors and 5xx;
	// zero fields default to 5 attempts, 2 s doubling up to 30 s.
	UploadRetry nannyapi.Backoff
	// FinishTimeout bounds the upload once ctx has ended (default
	// DefaultFinishTimeout).
	FinishTimeout time.Duration
	// Environ supplies the agent's environment, from which only the
	// proxy variables reach the script (default os.Environ).
	Environ func() []string
	Logger  *zap.Logger
}

// Handler runs patch operations; it implements the daemon's
// PatchHandler. It keeps no state between operations.
type Handler struct {
	o   Options
	log *zap.Logger
}

// New checks opts and fills the defaults.
func New(opts Options) (*Handler, error) {
	if opts.Client == nil {
		return nil, errors.New("patch: a NannyAPI client is required")
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("patch: timeout %s is negative", opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.BaseDir == "" {
		opts.BaseDir = DefaultBaseDir
	}
	if !strings.HasPrefix(opts.BaseDir, "/") {
		return nil, fmt.Errorf("patch: base directory %q must be an absolute path", opts.BaseDir)
	}
	if opts.Pct == "" {
		opts.Pct = DefaultPct
	}
	if !strings.HasPrefix(opts.Pct, "/") {
		return nil, fmt.Errorf("patch: pct %q must be an absolute path", opts.Pct)
	}
	if opts.MaxScriptBytes <= 0 {
		opts.MaxScriptBytes = nannyapi.DefaultMaxScriptBytes
	}
	if opts.OutputCap <= 0 || opts.OutputCap > DefaultOutputCap {
		opts.OutputCap = DefaultOutputCap
	}
	if opts.WaitDelay <= 0 {
		opts.WaitDelay = DefaultWaitDelay
	}
	if opts.FinishTimeout <= 0 {
		opts.FinishTimeout = DefaultFinishTimeout
	}
	// A result upload must not wait for the http_transport's 30 min
	// delays: the operation shows as running meanwhile.
	if opts.UploadRetry.Initial <= 0 {
		opts.UploadRetry.Initial = 2 * time.Second
	}
	if opts.UploadRetry.Max <= 0 {
		opts.UploadRetry.Max = 30 * time.Second
	}
	if opts.UploadRetry.MaxAttempts <= 0 {
		opts.UploadRetry.MaxAttempts = 5
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Handler{o: opts, log: log}, nil
}

// Outcome is what became of one operation.
type Outcome struct {
	// Refused is why the script did not run ("" when it ran).
	Refused string
	// Argv is the command run (the script path or pct first).
	Argv     []string
	ExitCode int
	Stdout   []byte
	Stderr   []byte
	Duration time.Duration
	TimedOut bool
	// Cancelled: the agent stopped during the run.
	Cancelled bool
	// Truncated: stdout or stderr was cut to the cap.
	Truncated bool
	// Summary is the script's JSON summary, when it printed one.
	Summary *Summary
	// Uploaded is whether the backend accepted the result.
	Uploaded bool
}

// HandlePatch carries out op and reports its result; the error is for
// the log: an operation that cannot be reported (a malformed ID, another
// agent's) or a result the backend did not accept. A script that fails
// is reported, not an error.
func (h *Handler) HandlePatch(ctx context.Context, op nannyapi.PatchOperationRecord) error {
	_, err := h.Run(ctx, op)
	return err
}

// Run is HandlePatch returning the Outcome too.
func (h *Handler) Run(ctx context.Context, op nannyapi.PatchOperationRecord) (*Outcome, error) {
	if !nannyapi.IsRecordID(op.ID) {
		return nil, fmt.Errorf("patch: operation ID %q is not a record ID (15 lowercase letters and digits): nothing run, nothing reported", op.ID)
	}
	if h.o.AgentID != "" && op.AgentID != "" && op.AgentID != h.o.AgentID {
		return nil, fmt.Errorf("patch: operation %s is for agent %q, not this one: nothing run, nothing reported", op.ID, op.AgentID)
	}
	log := h.log.With(zap.String("operation", op.ID), zap.String("mode", op.Mode))
	p, err := planFor(op)
	if err != nil {
		return h.refuse(ctx, op, log, err)
	}
	if p.vmid != "" {
		log = log.With(zap.String("vmid", p.vmid))
	}
	if !h.o.SkipRunning {
		if err := h.o.Client.UpdatePatch(ctx, op.ID, nannyapi.PatchUpdate{Status: nannyapi.StatusRunning}); err != nil {
			log.Warn("could not mark the operation running; going on", zap.Error(err))
		}
	}
	script, err := h.fetch(ctx, p)
	if err != nil {
		return h.refuse(ctx, op, log, err)
	}
	log.Info("patch run started", zap.String("script_id", p.scriptID), zap.Int("exclusions", len(p.exclusions)))
	out := h.execute(ctx, p, script, log)
	if out.Refused != "" {
		return h.report(ctx, op, log, out)
	}
	out.Summary, _ = ParseSummary(out.Stdout)
	fields := []zap.Field{zap.Int("exit_code", out.ExitCode), zap.Duration("duration", out.Duration.Round(time.Millisecond))}
	if s := out.Summary; s != nil {
		fields = append(fields, zap.Int("updates_available", s.UpdatesAvailable), zap.Int("packages", len(s.Packages)))
		if s.DryRun != nil {
			fields = append(fields, zap.Bool("dry_run", *s.DryRun))
		}
	} else {
		fields = append(fields, zap.String("summary", "none printed"))
	}
	if out.TimedOut {
		fields = append(fields, zap.Bool("timed_out", true))
	}
	if out.Cancelled {
		fields = append(fields, zap.Bool("cancelled", true))
	}
	if out.Truncated {
		fields = append(fields, zap.Bool("output_truncated", true))
	}
	log.Info("patch run finished", fields...)
	return h.report(ctx, op, log, out)
}

// refuse reports an operation whose script did not run.
func (h *Handler) refuse(ctx context.Context, op nannyapi.PatchOperationRecord, log *zap.Logger, why error) (*Outcome, error) {
	out := &Outcome{Refused: why.Error(), ExitCode: ExitFailedToRun, Stderr: []byte("nannyagent: patch script not run: " + why.Error() + "\n")}
	log.Warn("patch script not run", zap.NamedError("reason", why))
	return h.report(ctx, op, log, out)
}

// report uploads the outcome, retrying while ctx lives and trying once
// more within FinishTimeout when the agent is stopping.
func (h *Handler) report(ctx context.Context, op nannyapi.PatchOperationRecord, log *zap.Logger, out *Outcome) (*Outcome, error) {
	res := nannyapi.PatchResult{ExitCode: out.ExitCode, Stdout: out.Stdout, Stderr: out.Stderr, LXCID: op.LXCID}
	send := func(c context.Context) error { return h.o.Client.UploadPatchResult(c, op.ID, res) }
	var err error
	if ctx.Err() == nil {
		err = h.o.UploadRetry.Retry(ctx, nannyapi.Retryable, send)
	}
	if ctx.Err() != nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.o.FinishTimeout)
		err = send(fctx)
		cancel()
	}
	if err != nil {
		log.Error("patch result not accepted", zap.Int("exit_code", out.ExitCode), zap.Error(err))
		return out, fmt.Errorf("patch: operation %s: uploading the result: %w", op.ID, err)
	}
	out.Uploaded = true
	return out, nil
}

// plan is a checked operation.
type plan struct {
	mode       string
	scriptID   string
	scriptURL  string
	vmid       string
	exclusions []string
	// args are the script's arguments.
	args []string
}

// planFor checks everything of op that reaches a URL or a command line,
// before anything is fetched or run.
func planFor(op nannyapi.PatchOperationRecord) (*plan, error) {
	p := &plan{mode: op.Mode, scriptURL: op.ScriptURL}
	switch op.Mode {
	case nannyapi.PatchModeDryRun:
		p.args = []string{"--dry-run"}
	case nannyapi.PatchModeApply:
		// The scripts apply unless told --dry-run.
		p.args = []string{}
	default:
		return nil, fmt.Errorf("mode %q is neither %q nor %q", op.Mode, nannyapi.PatchModeDryRun, nannyapi.PatchModeApply)
	}
	path, _, err := nannyapi.ScriptPath(op.ScriptURL)
	if err != nil {
		return nil, err
	}
	id, err := scriptID(op.ScriptID, path)
	if err != nil {
		return nil, err
	}
	p.scriptID = id
	vmid, err := checkVMID(op.VMID, op.LXCID)
	if err != nil {
		return nil, err
	}
	p.vmid = vmid
	if err := checkExclusions(op.Exclusions); err != nil {
		return nil, err
	}
	if len(op.Exclusions) > 0 {
		p.exclusions = append([]string(nil), op.Exclusions...)
		p.args = append(p.args, "--exclude", strings.Join(op.Exclusions, ","))
	}
	return p, nil
}

// scriptID is the script whose digest the download must match: the
// record's script_id, which must agree with the script URL's record
// part (/api/files/<collection>/<record>/<file>), the only source when
// script_id is empty.
func scriptID(recordID, path string) (string, error) {
	var fromURL string
	if segs := strings.Split(strings.Trim(path, "/"), "/"); len(segs) >= 2 {
		fromURL = segs[len(segs)-2]
	}
	id := recordID
	switch {
	case recordID == "":
		id = fromURL
	case fromURL != recordID:
		return "", fmt.Errorf("script_id %q and the script URL's record %q disagree", recordID, fromURL)
	}
	if !nannyapi.IsRecordID(id) {
		return "", fmt.Errorf("script ID %q is not a record ID (15 lowercase letters and digits)", id)
	}
	return id, nil
}

// checkVMID accepts an empty vmid (the host) or a Proxmox guest number
// in plain decimal.
func checkVMID(vmid, lxcID string) (string, error) {
	if vmid == "" {
		if lxcID != "" {
			return "", fmt.Errorf("the operation targets container %q but carries no vmid", lxcID)
		}
		return "", nil
	}
	n, err := strconv.Atoi(vmid)
	if err != nil || strconv.Itoa(n) != vmid || n < minVMID || n > maxVMID {
		return "", fmt.Errorf("vmid %q is not a Proxmox guest number (%d to %d, plain decimal)", vmid, minVMID, maxVMID)
	}
	return vmid, nil
}

// checkExclusions refuses package names that could be read as an option
// or split the comma-joined list.
func checkExclusions(names []string) error {
	if len(names) > maxExclusions {
		return fmt.Errorf("%d excluded packages, more than %d", len(names), maxExclusions)
	}
	for _, n := range names {
		if err := checkPackageName(n); err != nil {
			return err
		}
	}
	return nil
}

func checkPackageName(n string) error {
	switch {
	case n == "":
		return errors.New("an excluded package name is empty")
	case len(n) > maxPackageName:
		return fmt.Errorf("excluded package name %.40q… is longer than %d bytes", n, maxPackageName)
	case !utf8.ValidString(n):
		return fmt.Errorf("excluded package name %q is not valid UTF-8", n)
	case strings.HasPrefix(n, "-"):
		return fmt.Errorf("excluded package name %q starts with '-'", n)
	}
	for _, r := range n {
		if r == ',' || unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError {
			return fmt.Errorf("excluded package name %q contains a comma, a space or a control character", n)
		}
	}
	return nil
}

// fetch downloads the script and checks it against the backend's
// digest.
func (h *Handler) fetch(ctx context.Context, p *plan) ([]byte, error) {
	script, err := h.o.Client.DownloadScript(ctx, p.scriptURL, h.o.MaxScriptBytes)
	if err != nil {
		return nil, fmt.Errorf("downloading the script: %w", err)
	}
	if len(script) == 0 {
		return nil, errors.New("the downloaded script is empty")
	}
	info, err := h.o.Client.ValidateScript(ctx, p.scriptID)
	if err != nil {
		return nil, fmt.Errorf("getting the script's SHA-256: %w", err)
	}
	want := strings.ToLower(info.SHA256)
	if len(want) != sha256.Size*2 {
		return nil, fmt.Errorf("the backend's SHA-256 for script %s is %q, not 64 hex digits", p.scriptID, info.SHA256)
	}
	if _, err := hex.DecodeString(want); err != nil {
		return nil, fmt.Errorf("the backend's SHA-256 for script %s is %q, not 64 hex digits", p.scriptID, info.SHA256)
	}
	sum := sha256.Sum256(script)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, fmt.Errorf("SHA-256 mismatch for script %s: downloaded %s, backend says %s", p.scriptID, got, want)
	}
	return script, nil
}
