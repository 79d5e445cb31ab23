package proxmox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// CommandRunner runs a command and returns its standard output. The
// Reporter runs pveversion and pvesh through it; tests replace it.
type CommandRunner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// Defaults of ExecRunner and Options.
const (
	// DefaultCommandTimeout bounds one pvesh call; a healthy node answers
	// in well under a second, a node with a hung storage can take long.
	DefaultCommandTimeout = 30 * time.Second
	// DefaultMaxOutputBytes bounds what is read of one command's output:
	// /cluster/resources of a cluster with thousands of guests is a few
	// megabytes.
	DefaultMaxOutputBytes = 16 << 20
)

// stderrKeep is how much of a failed command's standard error is kept
// for its error message.
const stderrKeep = 512

// ExecRunner runs commands with os/exec, each bounded in time and in
// the size of its output. The zero value uses the defaults.
type ExecRunner struct {
	Timeout   time.Duration
	MaxOutput int64
}

// ErrOutputTooLarge is wrapped by the error of a command whose output
// exceeds the bound.
var ErrOutputTooLarge = errors.New("output too large")

// Run runs name with args. The command is killed when its output
// passes MaxOutput or when Timeout passes; either is an error naming
// the command, as is a failure, with the start of its standard error.
func (e ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	timeout, limit := e.Timeout, e.MaxOutput
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	if limit <= 0 {
		limit = DefaultMaxOutputBytes
	}
	cmdline := strings.Join(append([]string{name}, args...), " ")
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, name, args...)
	// A child that keeps the pipes open must not hold Run past the kill.
	cmd.WaitDelay = time.Second
	stdout := &cappedBuffer{max: limit, overflow: cancel}
	stderr := &cappedBuffer{max: stderrKeep, truncate: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	switch {
	case stdout.exceeded():
		return nil, fmt.Errorf("%s: %w: more than %d bytes", cmdline, ErrOutputTooLarge, limit)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s: %w", cmdline, ctx.Err())
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("%s: no answer within %s", cmdline, timeout)
	case err != nil:
		if msg := stderr.text(); msg != "" {
			return nil, fmt.Errorf("%s: %w: %s", cmdline, err, msg)
		}
		return nil, fmt.Errorf("%s: %w", cmdline, err)
	}
	return stdout.bytes(), nil
}

// cappedBuffer keeps at most max bytes. Past that it either drops the
// rest (truncate) or calls overflow and fails the write, which stops
// the copy and, through overflow, the command.
type cappedBuffer struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	max      int64
	truncate bool
	overflow func()
	over     bool
}

var errCapped = errors.New("output bound reached")

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.max - int64(c.buf.Len())
	if int64(len(p)) <= room {
		return c.buf.Write(p)
	}
	if room > 0 {
		c.buf.Write(p[:room])
	}
	if c.truncate {
		return len(p), nil
	}
	c.over = true
	if c.overflow != nil {
		c.overflow()
	}
	return 0, errCapped
}

func (c *cappedBuffer) exceeded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.over
}

func (c *cappedBuffer) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// text is the kept output on one line, cut to valid UTF-8.
func (c *cappedBuffer) text() string {
	b := c.bytes()
	for len(b) > 0 && !utf8.Valid(b) {
		b = b[:len(b)-1]
	}
	return strings.Join(strings.Fields(string(b)), " ")
}
