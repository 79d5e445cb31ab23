package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nannyagent/nannyagent/internal/diagnose"
	"golang.org/x/term"
)

// progress shows an investigation's phases on stderr. On a terminal one
// transient line (waiting for the engine, a trace's countdown) is
// rewritten in place under the permanent lines; elsewhere every phase is
// one plain line, with no escape sequences.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	live   bool
	width  int
	engine string
	// shown is the transient line on screen ("" when none).
	shown string
	// traces is the running traces' names; lastTrace their last report.
	traces    string
	traceFrom time.Time
	lastEvts  uint64
}

func newProgress(w io.Writer, live bool, engine string) *progress {
	p := &progress{w: w, live: live, engine: engine, width: 100}
	if f, ok := w.(*os.File); ok && live {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 20 {
			p.width = cols
		}
	}
	return p
}

// fit cuts s to the terminal's width so a transient line never wraps
// (a wrapped line cannot be rewritten in place).
func (p *progress) fit(s string) string {
	max := p.width - 1
	if !p.live {
		max = 300
	}
	if strings.IndexByte(s, '\n') >= 0 {
		s, _, _ = strings.Cut(s, "\n")
		s += " …"
	}
	r := []rune(s)
	if len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func (p *progress) clearLocked() {
	if p.live && p.shown != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// line prints a permanent line above the transient one.
func (p *progress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lineLocked(s)
}

func (p *progress) lineLocked(s string) {
	p.clearLocked()
	fmt.Fprintln(p.w, p.fit(s))
	if p.live && p.shown != "" {
		fmt.Fprint(p.w, p.shown)
	}
}

// finish replaces the transient line with a permanent one.
func (p *progress) finish(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endTransientLocked()
	p.lineLocked(s)
}

// transient shows s in place on a terminal; elsewhere it is one line.
func (p *progress) transient(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.transientLocked(s)
}

func (p *progress) transientLocked(s string) {
	if !p.live {
		fmt.Fprintln(p.w, p.fit(s))
		return
	}
	p.clearLocked()
	p.shown = p.fit(s)
	fmt.Fprint(p.w, p.shown)
}

func (p *progress) endTransientLocked() {
	p.clearLocked()
	p.shown = ""
}

func (p *progress) event(e diagnose.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case diagnose.EventThinking:
		if p.live {
			p.transientLocked(fmt.Sprintf("round %d: %s is reasoning…", e.Round, p.engine))
		} else {
			fmt.Fprintf(p.w, "round %d: asking %s\n", e.Round, p.engine)
		}
	case diagnose.EventReply:
		p.endTransientLocked()
		reason := strings.TrimSpace(e.Text)
		if reason == "" {
			reason = "(no reasoning given)"
		}
		p.lineLocked(fmt.Sprintf("round %d: %s", e.Round, reason))
	case diagnose.EventParseRetry:
		p.endTransientLocked()
		p.lineLocked(fmt.Sprintf("round %d: the reply was not protocol JSON (%s); asking once more", e.Round, e.Text))
	case diagnose.EventCommandStart:
		if !p.live {
			fmt.Fprintf(p.w, "  running: %s\n", p.fit(e.Text))
		}
	case diagnose.EventCommandDone:
		if c := e.Command; c != nil {
			p.lineLocked("  " + commandLine(c))
		}
	case diagnose.EventTraceStart:
		p.traces, p.traceFrom, p.lastEvts = e.Text, time.Now(), 0
		p.transientLocked(fmt.Sprintf("  tracing %s…", e.Text))
	case diagnose.EventTraceProgress:
		// The runner's last report, after the traces stopped, may count
		// nothing; the most seen is what was gathered.
		p.lastEvts = max(p.lastEvts, e.Trace.Events)
		if p.live {
			left := e.Trace.Total - e.Trace.Elapsed
			if left < 0 {
				left = 0
			}
			secs := int((left + time.Second - 1) / time.Second)
			p.transientLocked(fmt.Sprintf("  tracing %s… %ds left, %d events (Ctrl-C cancels)", p.traces, secs, p.lastEvts))
		}
	case diagnose.EventTraceDone:
		p.endTransientLocked()
		p.lineLocked(fmt.Sprintf("  ✓ traced %s (%s, %d events)", p.traces, time.Since(p.traceFrom).Round(100*time.Millisecond), p.lastEvts))
	case diagnose.EventLimit:
		p.endTransientLocked()
		p.lineLocked(fmt.Sprintf("%s: asking %s for its best answer", e.Text, p.engine))
	}
}

// commandLine is one finished command: ✓ ran and exited 0, ✗ failed,
// refused with the rule that refused it.
func commandLine(c *diagnose.CommandReport) string {
	d := time.Duration(c.DurationMS) * time.Millisecond
	switch {
	case c.Refused:
		return fmt.Sprintf("refused %s: %s", c.Command, c.Reason)
	case c.TimedOut:
		return fmt.Sprintf("✗ %s (timed out after %s)", c.Command, d)
	case c.Error != "":
		return fmt.Sprintf("✗ %s (%s, %s)", c.Command, c.Error, d)
	case c.ExitCode != 0:
		return fmt.Sprintf("✗ %s (exit %d, %s)", c.Command, c.ExitCode, d)
	}
	return fmt.Sprintf("✓ %s (%s)", c.Command, d)
}

// done removes the transient line; how the investigation ended is the
// caller's to say.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endTransientLocked()
}
