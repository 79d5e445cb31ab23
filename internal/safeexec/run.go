package safeexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Defaults for Options fields left at zero.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultOutputCap = 64 << 10
)

// ExitRefused is the exit code of a Result whose line was refused by
// Validate: the same code a shell gives a command it cannot execute, so a
// caller that only looks at the code still sees that nothing ran.
const ExitRefused = 126

// ExitNotFound is the exit code of a pipeline whose program is not on the
// fixed PATH, as in a shell.
const ExitNotFound = 127

// drainGrace bounds how long output is still read after the deadline has
// killed every process group: enough for the kernel to close the pipes of
// killed processes, short enough that a process that escaped its group
// (setsid) and kept a pipe open cannot hold Run.
const drainGrace = 500 * time.Millisecond

// fixedPath is the only PATH programs are resolved against and the only
// PATH they see, so nothing in the agent's own environment (or a writable
// directory put first in it) decides which binary runs.
var fixedPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// cleanEnv is the whole environment of every program run: nothing of the
// agent's environment (tokens, proxies, LD_* variables) is inherited.
var cleanEnv = []string{
	"PATH=" + strings.Join(fixedPath, ":"),
	"LC_ALL=C",
	"LANG=C",
}

// Options bound one Run.
type Options struct {
	// Timeout bounds the whole command line (every item of the list
	// together); when it expires every process group still running is
	// killed with SIGKILL. Zero means DefaultTimeout.
	Timeout time.Duration
	// OutputCap is the number of bytes kept per stream (stdout, stderr)
	// for the whole line. Beyond it the first and last halves are kept and
	// the cut is marked. Zero means DefaultOutputCap.
	OutputCap int
	// Sandbox starts each stage through SandboxCommand. The zero value
	// runs unsandboxed, which only tests should do: use DefaultOptions.
	Sandbox bool
	// Dir is the working directory of every stage; empty means the
	// agent's own.
	Dir string
	// Log, when set, gets SandboxWarning once per process, at the first
	// sandboxed run, when the sandbox lacks a layer here.
	Log *zap.Logger
}

// DefaultOptions returns the options the agent runs commands with.
func DefaultOptions() Options {
	return Options{Timeout: DefaultTimeout, OutputCap: DefaultOutputCap, Sandbox: true}
}

// Result is what a command line produced; it goes back to the model as is,
// a refusal included.
type Result struct {
	Command string `json:"command"`
	// Stages is the argv of every stage of the plan in order, across all
	// items of the list, whether or not && / || let it run.
	Stages [][]string `json:"stages,omitempty"`
	// ExitCode is the status of the last pipeline that ran (the status of
	// its last stage, as a shell without pipefail); a stage killed by
	// signal n gives 128+n.
	ExitCode   int    `json:"exit_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	DurationMS int64  `json:"duration_ms"`
	TimedOut   bool   `json:"timed_out,omitempty"`
	// Truncated is set when either stream went over the output cap.
	Truncated bool `json:"truncated,omitempty"`
	// Refused is set when Validate refused the line; Reason names the
	// rule and ExitCode is ExitRefused. Nothing ran.
	Refused bool   `json:"refused,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Error reports what kept a pipeline from running (program not
	// found, start failure); the list goes on as a shell would, with the
	// pipeline's status set to ExitNotFound or ExitRefused.
	Error string `json:"error,omitempty"`
}

// RunLine validates line (relative globs expanded in o.Dir) and runs it. A
// refused line is not an error: it is a Result with Refused, Reason (the
// refusal, naming its rule) and ExitCode ExitRefused, to be returned to the
// model like any other result.
func RunLine(ctx context.Context, line string, o Options) Result {
	plan, err := ValidateIn(line, o.Dir)
	if err != nil {
		return Result{Command: line, Refused: true, Reason: err.Error(), ExitCode: ExitRefused}
	}
	return Run(ctx, plan, o)
}

// Run runs plan without a shell: each pipeline's stages are connected with
// pipes made here, items are joined by && || ; on the exit status as in a
// shell, and every stage runs in its own process group in the fixed
// environment, with stdin from /dev/null.
func Run(ctx context.Context, plan *Plan, o Options) Result {
	start := time.Now()
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.OutputCap <= 0 {
		o.OutputCap = DefaultOutputCap
	}
	if o.Sandbox && o.Log != nil {
		logSandboxWarning(o.Log)
	}
	res := Result{Command: plan.Line}
	for _, it := range plan.Items {
		for _, st := range it.Pipeline.Stages {
			res.Stages = append(res.Stages, append([]string(nil), st.Argv...))
		}
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	stdout, stderr := newCapBuffer(o.OutputCap), newCapBuffer(o.OutputCap)
	var errs []string

	status, ran := 0, false
	for i, it := range plan.Items {
		if i > 0 {
			switch op := plan.Items[i-1].Op; op {
			case "&&":
				if status != 0 {
					continue
				}
			case "||":
				if status == 0 {
					continue
				}
			case ";", "":
			default:
				errs = append(errs, fmt.Sprintf("unknown list operator %q", op))
				status = ExitRefused
				continue
			}
		}
		if ctx.Err() != nil {
			break
		}
		code, err := runPipeline(ctx, it.Pipeline, o, stdout, stderr)
		status, ran = code, true
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if ran || len(errs) > 0 {
		res.ExitCode = status
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.TimedOut = true
		errs = append(errs, fmt.Sprintf("timed out after %s; process groups killed", o.Timeout))
	} else if ctx.Err() != nil {
		errs = append(errs, "cancelled: "+ctx.Err().Error())
	}
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	res.Truncated = stdout.Truncated() || stderr.Truncated()
	res.Error = strings.Join(errs, "; ")
	res.DurationMS = time.Since(start).Milliseconds()
	return res
}

// lookPath resolves a bare program name against fixedPath only.
func lookPath(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return "", fmt.Errorf("program %q: must be a bare program name", name)
	}
	for _, dir := range fixedPath {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("program %q not found in %s", name, strings.Join(fixedPath, ":"))
}

// stageCmd builds the command for one stage, sandboxed or not.
func stageCmd(ctx context.Context, argv []string, o Options) (*exec.Cmd, error) {
	path, err := lookPath(argv[0])
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if o.Sandbox {
		// The sandbox gets the resolved path so it never searches a PATH
		// itself; the basename is unchanged for multi-call binaries.
		sargv := append([]string{path}, argv[1:]...)
		cmd, err = SandboxCommand(ctx, sargv)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", argv[0], err)
		}
		// Keep the sandbox's own markers; everything else is the fixed
		// environment.
		env := append([]string(nil), cleanEnv...)
		for _, kv := range cmd.Env {
			if strings.HasPrefix(kv, "NANNYAGENT_SANDBOX") {
				env = append(env, kv)
			}
		}
		cmd.Env = env
	} else {
		cmd = &exec.Cmd{Path: path, Args: append([]string(nil), argv...), Env: append([]string(nil), cleanEnv...)}
	}
	cmd.Dir = o.Dir
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pgid = 0
	return cmd, nil
}

// runPipeline runs one pipeline to completion or to the deadline and
// returns its status. Output goes to the shared capped buffers.
func runPipeline(ctx context.Context, p Pipeline, o Options, stdout, stderr *capBuffer) (int, error) {
	n := len(p.Stages)
	if n == 0 {
		return 0, nil
	}
	cmds := make([]*exec.Cmd, n)
	for i, st := range p.Stages {
		if len(st.Argv) == 0 {
			return ExitRefused, fmt.Errorf("stage %d: empty argv", i)
		}
		cmd, err := stageCmd(ctx, st.Argv, o)
		if err != nil {
			if strings.Contains(err.Error(), "not found") {
				return ExitNotFound, err
			}
			return ExitRefused, err
		}
		cmds[i] = cmd
	}

	// Files the parent must close once the children hold them.
	var parentEnds []*os.File
	closeParentEnds := func() {
		for _, f := range parentEnds {
			f.Close()
		}
		parentEnds = nil
	}
	defer closeParentEnds()

	devnullR, err := os.Open(os.DevNull)
	if err != nil {
		return ExitRefused, err
	}
	parentEnds = append(parentEnds, devnullR)
	var devnullW *os.File
	openNullW := func() (*os.File, error) {
		if devnullW == nil {
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				return nil, err
			}
			devnullW = f
			parentEnds = append(parentEnds, f)
		}
		return devnullW, nil
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return ExitRefused, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return ExitRefused, err
	}
	parentEnds = append(parentEnds, outW, errW)

	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); io.Copy(stdout, outR) }()
	go func() { defer readers.Done(); io.Copy(stderr, errR) }()

	stdin := devnullR
	for i, cmd := range cmds {
		fds := [3]*os.File{stdin, outW, errW}
		if i < n-1 {
			r, w, err := os.Pipe()
			if err != nil {
				closeParentEnds()
				outR.Close()
				errR.Close()
				readers.Wait()
				return ExitRefused, err
			}
			parentEnds = append(parentEnds, r, w)
			fds[1] = w
			stdin = r
		}
		var redirs []Redirect
		if i < len(p.Redirects) {
			redirs = p.Redirects[i]
		}
		for _, rd := range redirs {
			if rd.Fd < 0 || rd.Fd > 2 {
				err = fmt.Errorf("stage %d: redirect of fd %d not supported", i, rd.Fd)
				break
			}
			switch {
			case rd.Target == os.DevNull && rd.Fd == 0:
				fds[0] = devnullR
			case rd.Target == os.DevNull:
				fds[rd.Fd], err = openNullW()
			case strings.HasPrefix(rd.Target, "&"):
				src, perr := strconv.Atoi(rd.Target[1:])
				if perr != nil || src < 0 || src > 2 {
					err = fmt.Errorf("stage %d: redirect target %q not supported", i, rd.Target)
					break
				}
				fds[rd.Fd] = fds[src]
			default:
				err = fmt.Errorf("stage %d: redirect target %q not allowed", i, rd.Target)
			}
			if err != nil {
				break
			}
		}
		if err != nil {
			cmds = cmds[:i]
			break
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = fds[0], fds[1], fds[2]
	}

	// Start what is ready; a failure stops the pipeline but the stages
	// already started still run down (they see EOF or EPIPE) and are
	// killed with the others.
	status := 0
	var startErr error
	if err != nil {
		startErr, status = err, ExitRefused
	}
	var started []*exec.Cmd
	for i, cmd := range cmds {
		if startErr != nil {
			break
		}
		if err := cmd.Start(); err != nil {
			startErr = fmt.Errorf("start %s: %w", p.Stages[i].Argv[0], err)
			status = ExitRefused
			break
		}
		started = append(started, cmd)
	}
	closeParentEnds()

	// On the deadline, kill every group: the stage and anything it forked.
	waited := make(chan struct{})
	killGroups := func() {
		for _, c := range started {
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
	}
	go func() {
		select {
		case <-ctx.Done():
			killGroups()
		case <-waited:
		}
	}()
	states := make([]*os.ProcessState, len(started))
	for i, c := range started {
		c.Wait()
		states[i] = c.ProcessState
	}
	close(waited)
	// A stage that left children behind: they were part of the command,
	// and they hold the output pipes open.
	killGroups()

	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		select {
		case <-drained:
		case <-time.After(drainGrace):
		}
	}
	outR.Close()
	errR.Close()
	<-drained

	if startErr != nil {
		return status, startErr
	}
	return exitStatus(states[len(states)-1]), nil
}

// exitStatus maps a process state to a shell status: 128+n for signal n.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return ExitRefused
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
