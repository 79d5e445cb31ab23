package bpftrace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"golang.org/x/sys/unix"
)

// Name is the entry name results carry.
const Name = "bpftrace"

// Bounds of a run. bpftrace 0.17 sometimes misses a SIGINT until its next
// event (PERF-NOTES.md), so Stop repeats it every SignalEvery and gives up
// with SIGKILL after KillAfter; AttachTimeout bounds LLVM compilation and
// probe attachment of one script.
const (
	DefaultMaxOutput = 64 << 10
	SignalEvery      = time.Second
	KillAfter        = 5 * time.Second
	AttachTimeout    = 30 * time.Second
)

// Options tune a run; the zero value is the usual one.
type Options struct {
	// Path of the bpftrace binary; found on PATH when empty.
	Path string
	// MaxOutput caps the output kept (head and tail); DefaultMaxOutput when 0.
	MaxOutput int
	// Why says what the request needed bpftrace for, so the error for a
	// missing binary tells the operator what installing it buys.
	Why string
	// KillAfter overrides the SIGINT grace period (tests).
	KillAfter time.Duration
	// Params are recorded in the result (catalog.Params.Describe).
	Params map[string]string
}

// ErrNotInstalled is wrapped by the error returned when bpftrace is absent.
var ErrNotInstalled = errors.New("bpftrace is not installed (apt-get install bpftrace)")

// Find returns the bpftrace binary to run.
func Find(o Options) (string, error) {
	if o.Path != "" {
		if _, err := os.Stat(o.Path); err != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrNotInstalled, o.Path, err)
		}
		return o.Path, nil
	}
	p, err := exec.LookPath("bpftrace")
	if err != nil {
		why := o.Why
		if why == "" {
			why = "no catalog entry covers what it traces"
		}
		return "", fmt.Errorf("%w; this request needs it because %s", ErrNotInstalled, why)
	}
	return p, nil
}

// Trace is a running bpftrace; it implements catalog.Trace.
type Trace struct {
	script    string
	cmd       *exec.Cmd
	out       *capped
	errOut    *capped
	start     time.Time
	probes    int
	killAfter time.Duration
	params    map[string]string
	exited    chan struct{} // closed when the process has been reaped
	waitErr   error

	stopOnce sync.Once
	result   *catalog.Result
	err      error
}

// Start checks the script, runs bpftrace on it in its own process group
// and returns once bpftrace announces "Attaching N probes..." (it prints
// that just before attaching, so the probes go live a moment later; the
// duration of Run counts from there). A script bpftrace rejects
// (syntax, unknown probe, verifier) is an error carrying its message, and
// nothing keeps running. Cancelling ctx kills the process group at once.
func Start(ctx context.Context, script string, o Options) (*Trace, error) {
	if err := CheckScript(script); err != nil {
		return nil, err
	}
	path, err := Find(o)
	if err != nil {
		return nil, err
	}
	ensureFilesystems()
	max := o.MaxOutput
	if max <= 0 {
		max = DefaultMaxOutput
	}
	t := &Trace{
		script:    script,
		out:       newCapped(max),
		errOut:    newCapped(16 << 10),
		killAfter: o.KillAfter,
		params:    o.Params,
		exited:    make(chan struct{}),
	}
	if t.killAfter <= 0 {
		t.killAfter = KillAfter
	}
	// Not CommandContext: its cancel sends SIGKILL to the leader only,
	// and Stop must choose the signal.
	t.cmd = exec.Command(path, "-e", script)
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.cmd.Stderr = t.errOut
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bpftrace stdout pipe: %w", err)
	}
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	t.start = time.Now()

	attached := make(chan int, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		t.copyOutput(stdout, attached)
	}()
	go func() {
		<-copied // Wait closes the pipe: read everything first
		t.waitErr = t.cmd.Wait()
		close(t.exited)
	}()
	go func() {
		select {
		case <-ctx.Done():
			t.signal(unix.SIGKILL)
		case <-t.exited:
		}
	}()

	timer := time.NewTimer(AttachTimeout)
	defer timer.Stop()
	select {
	case n := <-attached:
		t.probes = n
		t.start = time.Now()
		return t, nil
	case <-t.exited:
		// An early exit with status 0 is a script that finished on its
		// own (exit() in BEGIN); anything else is bpftrace refusing it.
		if t.waitErr == nil {
			return t, nil
		}
		return nil, fmt.Errorf("bpftrace rejected the script: %s (%v)", t.message(), t.waitErr)
	case <-ctx.Done():
		<-t.exited
		return nil, fmt.Errorf("bpftrace start: %w", ctx.Err())
	case <-timer.C:
		t.signal(unix.SIGKILL)
		<-t.exited
		return nil, fmt.Errorf("bpftrace did not attach its probes within %s: %s", AttachTimeout, t.message())
	}
}

// copyOutput keeps stdout and reports the "Attaching N probes..." line
// bpftrace prints once every probe is in place.
func (t *Trace) copyOutput(r io.Reader, attached chan<- int) {
	br := bufio.NewReaderSize(r, 64<<10)
	seen := false
	for {
		line, err := br.ReadString('\n')
		if !seen && strings.HasPrefix(line, "Attaching ") {
			seen = true
			var n int
			fmt.Sscanf(line, "Attaching %d probe", &n)
			attached <- n
			continue
		}
		t.out.Write([]byte(line))
		if err != nil {
			return
		}
	}
}

// signal sends sig to bpftrace's whole process group.
func (t *Trace) signal(sig unix.Signal) {
	if t.cmd.Process != nil {
		_ = unix.Kill(-t.cmd.Process.Pid, sig)
	}
}

// Seen is unknown for a script: bpftrace counts nothing for us.
func (t *Trace) Seen() uint64 { return 0 }

// Done is closed when bpftrace has exited on its own or been stopped.
func (t *Trace) Done() <-chan struct{} { return t.exited }

// Stop asks bpftrace to end with SIGINT, so END blocks run and maps print,
// repeating it every SignalEvery and killing the group after killAfter.
// Maps are complete; printf events still queued in bpftrace's perf buffer
// at that moment are dropped by bpftrace itself.
func (t *Trace) Stop() (*catalog.Result, error) {
	t.stopOnce.Do(func() { t.result, t.err = t.stop() })
	return t.result, t.err
}

func (t *Trace) stop() (*catalog.Result, error) {
	res := &catalog.Result{Entry: Name, Params: t.params, Attach: "bpftrace", Start: t.start}
	killed := false
	select {
	case <-t.exited:
	default:
		t.signal(unix.SIGINT)
		tick := time.NewTicker(SignalEvery)
		deadline := time.NewTimer(t.killAfter)
	wait:
		for {
			select {
			case <-t.exited:
				break wait
			case <-tick.C:
				t.signal(unix.SIGINT)
			case <-deadline.C:
				t.signal(unix.SIGKILL)
				<-t.exited
				killed = true
				break wait
			}
		}
		tick.Stop()
		deadline.Stop()
	}
	res.End = time.Now()
	if killed {
		res.Notes = append(res.Notes, fmt.Sprintf("bpftrace ignored SIGINT for %s and was killed: its maps and END output are missing", t.killAfter))
	} else if t.waitErr != nil {
		return nil, fmt.Errorf("bpftrace failed: %s (%v)", t.message(), t.waitErr)
	}
	out := t.out.String()
	parseOutput(out, res)
	lines := strings.Count(out, "\n")
	res.Summary = fmt.Sprintf("bpftrace script on %s: %d probes attached, %d output lines over %.1fs",
		strings.Join(headProbes(t.script), ", "), t.probes, lines, res.Seconds())
	if t.out.Dropped() > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("output was %d bytes; the middle %d bytes were dropped", t.out.Total(), t.out.Dropped()))
	}
	if w := t.warnings(); w != "" {
		res.Notes = append(res.Notes, "bpftrace stderr: "+w)
	}
	res.Notes = append(res.Notes, "output:\n"+out)
	res.Compact()
	return res, nil
}

// headProbes names the probes for the summary, bounded.
func headProbes(script string) []string {
	p := Probes(script)
	if len(p) > 4 {
		p = append(p[:4], fmt.Sprintf("+%d more", len(p)-4))
	}
	return p
}

// message is bpftrace's stderr without the noise, for errors.
func (t *Trace) message() string {
	if m := t.warnings(); m != "" {
		return m
	}
	return "no message"
}

// warnings drops the RLIMIT_MEMLOCK complaint bpftrace 0.17 prints on
// kernels that account BPF memory to cgroups (it works regardless).
func (t *Trace) warnings() string {
	var keep []string
	for _, l := range strings.Split(t.errOut.String(), "\n") {
		if strings.TrimSpace(l) == "" || strings.Contains(l, "RLIMIT_MEMLOCK") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// Run is Start, then Stop after d (clamped like any trace), when bpftrace
// exits on its own, or when ctx ends.
func Run(ctx context.Context, script string, d time.Duration, o Options) (*catalog.Result, error) {
	t, err := Start(ctx, script, o)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(catalog.ClampDuration(d))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-t.exited:
	case <-ctx.Done():
		<-t.exited
		return nil, fmt.Errorf("bpftrace: %w", ctx.Err())
	}
	return t.Stop()
}

// ensureFilesystems mounts tracefs and, for bpftrace 0.17 which looks
// there, debugfs. Failures are left for bpftrace to report with context.
func ensureFilesystems() {
	_, _ = catalog.EnsureTracefs()
	debugfsOnce.Do(func() {
		var st unix.Statfs_t
		if err := unix.Statfs("/sys/kernel/debug", &st); err == nil && st.Type == unix.DEBUGFS_MAGIC {
			return
		}
		_ = unix.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "")
	})
}

var debugfsOnce sync.Once
