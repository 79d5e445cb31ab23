package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/version"
	"golang.org/x/term"
)

const prompt = "nannyagent> "

// interactive is `sudo nannyagent`: a banner, then a prompt with line
// editing and history where each line is an investigation. quit, exit or
// Ctrl-D end it; Ctrl-C at the prompt clears the line, during an
// investigation it cancels the investigation.
func (a *app) interactive(ctx context.Context, engineFlag string) error {
	s, err := a.newSession(engineFlag)
	if err != nil {
		return err
	}
	a.banner(s)

	fd := int(a.stdin.Fd())
	in := &ctrlCReader{r: a.stdin}
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{in, a.stdout}, prompt)
	hist := &history{}
	t.History = hist
	// x/term ends ReadLine on Ctrl-C as it does on Ctrl-D (io.EOF);
	// ctrlCReader turns Ctrl-C into a key of its own and Enter, so that
	// here it can mark the line as abandoned instead.
	t.AutoCompleteCallback = func(line string, pos int, key rune) (string, int, bool) {
		if key != ctrlCKey {
			return "", 0, false
		}
		hist.abandon()
		return line + "^C", len(line) + 2, true
	}

	var intr chan os.Signal
	if a.signals {
		// In raw mode at the prompt the terminal sends no SIGINT; during
		// an investigation (cooked mode) it does, and it cancels only
		// that investigation.
		intr = make(chan os.Signal, 1)
		signal.Notify(intr, os.Interrupt)
		defer signal.Stop(intr)
	}
	var raw rawGuard
	stopWatch := context.AfterFunc(ctx, func() {
		// SIGTERM while the prompt waits for a key: give the terminal
		// back before the process ends.
		if raw.restore(fd) {
			fmt.Fprintln(a.stderr, "\r\nnannyagent: terminated")
			os.Exit(143)
		}
	})
	defer stopWatch()

	for ctx.Err() == nil {
		if err := raw.enter(fd); err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		line, err := t.ReadLine()
		raw.restore(fd)
		if hist.takeAbandoned() {
			continue
		}
		if errors.Is(err, term.ErrPasteIndicator) {
			err = nil // a pasted line is a line
		}
		if errors.Is(err, io.EOF) {
			fmt.Fprintln(a.stdout)
			return nil
		}
		if err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
		line = strings.TrimSpace(line)
		switch strings.ToLower(line) {
		case "":
			continue
		case "quit", "exit":
			return nil
		case "help", "?":
			fmt.Fprintln(a.stdout, `Describe what is wrong, in words: "the disk is full but df shows space",
"nginx returns 502", "the server is slow since this morning". Each line is one
investigation. quit, exit or Ctrl-D leaves; Ctrl-C cancels a running investigation.`)
			continue
		}
		a.interactiveOne(ctx, s, line, intr)
	}
	return nil
}

// interactiveOne runs one investigation of the prompt; its failures are
// reported and the prompt comes back.
func (a *app) interactiveOne(ctx context.Context, s *session, line string, intr chan os.Signal) {
	issue, err := checkIssue(line)
	if err != nil {
		fmt.Fprintln(a.stderr, "nannyagent:", err.(*exitError).err)
		return
	}
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	if intr != nil {
		// A signal left over from before must not cancel this one.
		for len(intr) > 0 {
			<-intr
		}
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-intr:
				cancel()
			case <-done:
			}
		}()
	}
	rep, err := a.investigate(ictx, s, issue, true)
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(a.stderr, "investigation cancelled")
		return
	case err != nil:
		fmt.Fprintln(a.stderr, "nannyagent:", err)
	}
	if rep != nil {
		renderReport(a.stdout, rep, isTerminal(a.stdout))
	}
	fmt.Fprintln(a.stdout)
}

// banner says what this session can do: version, kernel, which eBPF
// features and catalog entries work, how commands are confined, which
// engine answers.
func (a *app) banner(s *session) {
	feats := s.probe.Features()
	host, _ := os.Hostname()
	who := "as root"
	if !s.root {
		who = "not as root"
	}
	fmt.Fprintf(a.stdout, "nannyagent %s on %s: kernel %s (%s), running %s\n", version.Version, orDash(host), feats.Release, runtime.GOARCH, who)
	works := 0
	for _, e := range s.catalog {
		if e.Supported {
			works++
		}
	}
	var yes, no, unsure []string
	for _, f := range catalog.AllFeatures {
		switch feats.Get(f).State {
		case catalog.Yes:
			yes = append(yes, string(f))
		case catalog.No:
			no = append(no, string(f))
		default:
			unsure = append(unsure, string(f))
		}
	}
	caps := fmt.Sprintf("eBPF: %d of %d catalog entries work here", works, len(s.catalog))
	if len(yes) > 0 {
		caps += "; yes: " + strings.Join(yes, " ")
	}
	if len(no) > 0 {
		caps += "; no: " + strings.Join(no, " ")
	}
	if len(unsure) > 0 {
		caps += "; unknown without root: " + strings.Join(unsure, " ")
	}
	fmt.Fprintln(a.stdout, caps)
	fmt.Fprintln(a.stdout, "commands: allowlisted read-only programs, run in a sandbox ("+sandboxSummary(safeexec.SandboxSupport())+")")
	fmt.Fprintln(a.stdout, "engine: "+engineSummary(s.cfg, s.choice))
	fmt.Fprintln(a.stdout, `Describe what is wrong, e.g. "cannot create files in /var". quit, exit or Ctrl-D leaves; Ctrl-C cancels a running investigation.`)
}

func sandboxSummary(m map[string]string) string {
	var parts []string
	for _, layer := range []string{"mount_namespace", "landlock", "seccomp"} {
		v := m[layer]
		name := strings.ReplaceAll(layer, "_", " ")
		switch {
		case strings.HasPrefix(v, "unavailable"):
			parts = append(parts, "no "+name)
		case layer == "mount_namespace":
			parts = append(parts, "read-only mounts")
		default:
			parts = append(parts, name)
		}
	}
	return strings.Join(parts, ", ")
}

// ctrlCKey stands for Ctrl-C in the terminal's input: a control
// character x/term does not act on (Ctrl-]).
const ctrlCKey = 0x1d

// ctrlCReader turns each Ctrl-C (0x03) into ctrlCKey followed by Enter.
type ctrlCReader struct {
	r   io.Reader
	buf []byte
}

func (c *ctrlCReader) Read(p []byte) (int, error) {
	if len(c.buf) == 0 {
		tmp := make([]byte, max(len(p)/2, 1))
		n, err := c.r.Read(tmp)
		for _, b := range tmp[:n] {
			if b == 0x03 {
				c.buf = append(c.buf, ctrlCKey, '\r')
				continue
			}
			c.buf = append(c.buf, b)
		}
		if len(c.buf) == 0 {
			return 0, err
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// history is the prompt's history: lines abandoned with Ctrl-C, blank
// lines and repeats of the previous line are not kept.
type history struct {
	mu        sync.Mutex
	lines     []string // oldest first
	abandoned bool
}

const maxHistory = 500

func (h *history) Add(line string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.abandoned || strings.TrimSpace(line) == "" || (len(h.lines) > 0 && h.lines[len(h.lines)-1] == line) {
		return
	}
	h.lines = append(h.lines, line)
	if len(h.lines) > maxHistory {
		h.lines = h.lines[1:]
	}
}

func (h *history) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.lines)
}

// At returns the idx-th most recent line (0 is the newest).
func (h *history) At(idx int) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lines[len(h.lines)-1-idx]
}

func (h *history) abandon() {
	h.mu.Lock()
	h.abandoned = true
	h.mu.Unlock()
}

func (h *history) takeAbandoned() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.abandoned
	h.abandoned = false
	return a
}

// rawGuard holds the terminal's state while the prompt has it in raw
// mode, so that whoever ends the session first restores it.
type rawGuard struct {
	mu    sync.Mutex
	state *term.State
}

func (g *rawGuard) enter(fd int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, err := term.MakeRaw(fd)
	if err != nil {
		return err
	}
	g.state = st
	return nil
}

// restore reports whether the terminal was in raw mode.
func (g *rawGuard) restore(fd int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == nil {
		return false
	}
	_ = term.Restore(fd, g.state)
	g.state = nil
	return true
}
