package patch

import (
	"fmt"
	"sync"
	"unicode/utf8"
)

// headBuffer keeps the first max bytes written and counts the rest, so
// a script printing without end costs bounded memory while its pipe is
// still drained (the script never blocks on a full pipe). The start of
// a package manager's output says what it set out to do; the summary
// JSON comes before the upgrade's own output.
type headBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func newHeadBuffer(max int) *headBuffer { return &headBuffer{max: max} }

func (b *headBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if room := b.max - len(b.buf); room > 0 {
		k := min(room, len(p))
		b.buf = append(b.buf, p[:k]...)
		p = p[k:]
	}
	b.dropped += int64(len(p))
	return n, nil
}

// Truncated reports whether anything was left out.
func (b *headBuffer) Truncated() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped > 0
}

// Bytes is what was kept, then, when something was left out, a note
// saying how much. The cut falls on a character boundary.
func (b *headBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := append([]byte(nil), b.buf...)
	if b.dropped == 0 {
		return out
	}
	dropped := b.dropped
	for k := 0; k < utf8.UTFMax-1 && len(out) > 0; k++ {
		r, size := utf8.DecodeLastRune(out)
		if r != utf8.RuneError || size != 1 {
			break
		}
		// A character cut in two: leave out its start as well.
		out = out[:len(out)-1]
		dropped++
	}
	return append(out, fmt.Sprintf("\n[nannyagent: output truncated: the last %d bytes were not kept]\n", dropped)...)
}
