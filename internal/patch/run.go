package patch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// scriptName is the script's file name in the run's directory: fixed,
// never taken from the URL, so no name can point outside it.
const scriptName = "patch-script"

// fixedPath is the script's PATH, whatever the agent's.
const fixedPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// proxyVars are the only variables of the agent's environment a script
// gets: package managers need them to reach their mirrors.
var proxyVars = map[string]bool{
	"http_proxy": true, "https_proxy": true, "ftp_proxy": true, "no_proxy": true, "all_proxy": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "FTP_PROXY": true, "NO_PROXY": true, "ALL_PROXY": true,
}

// scriptEnv is the script's whole environment: a fixed PATH, the C
// locale, non-interactive package managers, the run's directory as HOME
// and the proxies. Nothing else of the agent's environment (its tokens,
// NANNYAI_* settings, LD_* variables) reaches it.
func scriptEnv(environ []string, home string) []string {
	env := []string{
		"PATH=" + fixedPath, "LC_ALL=C", "LANG=C", "HOME=" + home,
		"DEBIAN_FRONTEND=noninteractive", "TERM=dumb",
	}
	for _, kv := range environ {
		if k, _, ok := strings.Cut(kv, "="); ok && proxyVars[k] {
			env = append(env, kv)
		}
	}
	return env
}

// execute writes the script into a private directory, runs it and
// removes the directory. A failure to set up the run comes back as a
// refused Outcome: the script did not run.
func (h *Handler) execute(ctx context.Context, p *plan, script []byte, log *zap.Logger) *Outcome {
	refused := func(err error) *Outcome {
		log.Warn("patch script not run", zap.Error(err))
		return &Outcome{Refused: err.Error(), ExitCode: ExitFailedToRun, Stderr: []byte("nannyagent: patch script not run: " + err.Error() + "\n")}
	}
	if err := os.MkdirAll(h.o.BaseDir, 0o700); err != nil {
		return refused(fmt.Errorf("making the patch directory: %w", err))
	}
	h.removeStale(log)
	dir, err := os.MkdirTemp(h.o.BaseDir, runPrefix)
	if err != nil {
		return refused(fmt.Errorf("making the run's directory: %w", err))
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("could not remove the run's directory", zap.String("dir", dir), zap.Error(err))
		}
	}()
	path := filepath.Join(dir, scriptName)
	if err := writeScript(path, script); err != nil {
		return refused(err)
	}

	argv := append([]string{path}, p.args...)
	var stdin *os.File
	if p.vmid != "" {
		// The script goes in on stdin: the container has no access to
		// the host's files.
		argv = append([]string{h.o.Pct, "exec", p.vmid, "--", "bash", "-s", "--"}, p.args...)
		f, err := os.Open(path)
		if err != nil {
			return refused(fmt.Errorf("opening the script: %w", err))
		}
		defer f.Close()
		stdin = f
	}
	environ := os.Environ
	if h.o.Environ != nil {
		environ = h.o.Environ
	}
	return h.run(ctx, argv, dir, stdin, scriptEnv(environ(), dir), log)
}

// runPrefix starts the name of each run's directory.
const runPrefix = "run-"

// removeStale removes the directories of runs that never finished (the
// agent was killed mid-run): the daemon runs one patch at a time, so any
// run directory there now is left over.
func (h *Handler) removeStale(log *zap.Logger) {
	entries, err := os.ReadDir(h.o.BaseDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), runPrefix) {
			continue
		}
		stale := filepath.Join(h.o.BaseDir, e.Name())
		if err := os.RemoveAll(stale); err != nil {
			log.Warn("could not remove a run directory left by an earlier agent", zap.String("dir", stale), zap.Error(err))
			continue
		}
		log.Info("removed a run directory left by an earlier agent", zap.String("dir", stale))
	}
}

// writeScript creates the script file, executable by its owner only.
func writeScript(path string, script []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return fmt.Errorf("writing the script: %w", err)
	}
	_, werr := f.Write(script)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("writing the script: %w", err)
	}
	// The umask may have taken bits away; the owner needs all three.
	if err := os.Chmod(path, 0o700); err != nil {
		return fmt.Errorf("making the script executable: %w", err)
	}
	return nil
}

// run starts argv in its own process group and waits for it, killing
// the whole group when the timeout passes or ctx ends.
func (h *Handler) run(ctx context.Context, argv []string, dir string, stdin *os.File, env []string, log *zap.Logger) *Outcome {
	rctx, cancel := context.WithTimeout(ctx, h.o.Timeout)
	defer cancel()
	stdout, stderr := newHeadBuffer(h.o.OutputCap), newHeadBuffer(h.o.OutputCap)
	out := &Outcome{Argv: append([]string(nil), argv...)}
	start := time.Now()
	cmd, err := startCommand(rctx, argv, func(cmd *exec.Cmd) {
		cmd.Dir = dir
		cmd.Env = env
		if stdin != nil {
			cmd.Stdin = stdin
		}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		// The group's ID is the script's PID, valid until Wait reaps
		// it; Cancel runs before that.
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = h.o.WaitDelay
	})
	if err != nil {
		out.Refused = "starting the script: " + err.Error()
		out.ExitCode = ExitFailedToRun
		out.Stderr = []byte("nannyagent: patch script not run: " + out.Refused + "\n")
		log.Warn("patch script not run", zap.Error(err))
		return out
	}
	werr := cmd.Wait()
	out.Duration = time.Since(start)
	out.ExitCode = exitCode(cmd.ProcessState)
	var notes []string
	switch {
	case errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		out.TimedOut = true
		notes = append(notes, fmt.Sprintf("nannyagent: the patch script ran past its %s timeout; its process group was killed", h.o.Timeout))
	case ctx.Err() != nil:
		out.Cancelled = true
		notes = append(notes, "nannyagent: the agent stopped during the patch run; the script's process group was killed")
	}
	if errors.Is(werr, exec.ErrWaitDelay) {
		notes = append(notes, fmt.Sprintf("nannyagent: a process of the script kept its output open after it ended; output after %s was not read", h.o.WaitDelay))
	}
	if (out.TimedOut || out.Cancelled) && out.ExitCode == 0 {
		// The script ended as it was killed; the run did not finish.
		out.ExitCode = 128 + int(syscall.SIGKILL)
	}
	out.Stdout = stdout.Bytes()
	out.Stderr = stderr.Bytes()
	out.Truncated = stdout.Truncated() || stderr.Truncated()
	for _, n := range notes {
		out.Stderr = append(out.Stderr, n...)
		out.Stderr = append(out.Stderr, '\n')
	}
	return out
}

// startRetries bounds the starts retried on ETXTBSY.
const startRetries = 8

// startCommand starts argv, set up by setup. The script file was just
// written: a process the agent forks at the same moment elsewhere
// inherits the write descriptor until its own exec, and while it holds
// it the kernel refuses to execute the file (ETXTBSY). That passes
// within milliseconds, so the start is retried a few times.
func startCommand(ctx context.Context, argv []string, setup func(*exec.Cmd)) (*exec.Cmd, error) {
	wait := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Args = argv
		setup(cmd)
		err := cmd.Start()
		if err == nil || !errors.Is(err, syscall.ETXTBSY) || attempt >= startRetries {
			return cmd, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return cmd, err
		case <-t.C:
		}
		wait *= 2
	}
}

// exitCode is the script's status as a shell reports it: the exit
// status, or 128 plus the signal that killed it.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return ExitFailedToRun
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
