package reboot

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
)

// env is the whole environment of a reboot command: nothing of the
// daemon's (its tokens' paths, proxies) reaches it.
var env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "LC_ALL=C"}

// maxOutput bounds what is kept of a command's output for the log.
const maxOutput = 4096

// waitDelay bounds the wait for the output once the command is gone
// (a child it left behind may hold the pipe).
const waitDelay = 2 * time.Second

// find looks a program up in the search path; "" when it is not there.
func (h *Handler) find(name string) string {
	for _, dir := range h.o.SearchPath {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// run runs argv in its own process group with the fixed environment,
// no input and at most timeout, and returns its output (stdout and
// stderr together, cut at maxOutput). The daemon stopping does not cut
// it short: a reboot stops the daemon, and the command that asked for
// the reboot must not be killed for it.
func run(ctx context.Context, argv []string, timeout time.Duration) (string, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	var out bounded
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("no result within %s; killed", timeout)
	}
	return out.String(), err
}

// bounded keeps the first maxOutput bytes written and counts the rest.
type bounded struct {
	b       []byte
	dropped int
}

func (w *bounded) Write(p []byte) (int, error) {
	room := maxOutput - len(w.b)
	if room > len(p) {
		room = len(p)
	}
	w.b = append(w.b, p[:room]...)
	w.dropped += len(p) - room
	return len(p), nil
}

// String is the output on one line, valid UTF-8, with a note of what
// was cut.
func (w *bounded) String() string {
	s := strings.ToValidUTF8(string(w.b), "?")
	if w.dropped > 0 {
		s += fmt.Sprintf("… (%d more bytes)", w.dropped)
	}
	return strings.Join(strings.Fields(s), " ")
}
