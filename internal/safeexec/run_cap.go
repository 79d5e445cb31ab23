package safeexec

import (
	"fmt"
	"sync"
	"unicode/utf8"
)

// capBuffer keeps the first and the last halves of what is written past its
// cap and counts the rest, so a command printing without end costs a
// bounded amount of memory while the reader keeps draining the pipe (the
// writer never blocks on a full pipe and never sees EPIPE because of us).
type capBuffer struct {
	mu      sync.Mutex
	headMax int
	tailMax int
	head    []byte
	tail    []byte // the last tailMax bytes live at its end
	total   int64
}

func newCapBuffer(limit int) *capBuffer {
	h := limit - limit/2
	return &capBuffer{headMax: h, tailMax: limit / 2}
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	b.total += int64(n)
	if room := b.headMax - len(b.head); room > 0 {
		k := min(room, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 || b.tailMax == 0 {
		return n, nil
	}
	if len(p) >= b.tailMax {
		b.tail = append(b.tail[:0], p[len(p)-b.tailMax:]...)
		return n, nil
	}
	b.tail = append(b.tail, p...)
	// Trim only when twice over, so trimming is amortised.
	if len(b.tail) > 2*b.tailMax {
		b.tail = append(b.tail[:0], b.tail[len(b.tail)-b.tailMax:]...)
	}
	return n, nil
}

// Truncated reports whether anything was cut.
func (b *capBuffer) Truncated() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total > int64(b.headMax+b.tailMax)
}

// String returns everything if it fitted, else head, a marker saying how
// many bytes were cut, and tail.
func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	tail := b.tail
	if len(tail) > b.tailMax {
		tail = tail[len(tail)-b.tailMax:]
	}
	head := b.head
	if b.total <= int64(len(head)+len(tail)) {
		return string(head) + string(tail)
	}
	// Cut on character boundaries so the result stays valid UTF-8 where
	// the output was (JSON would otherwise turn the halves into U+FFFD).
	if i := lastRuneStart(head); i >= 0 && !utf8.FullRune(head[i:]) {
		head = head[:i]
	}
	for k := 0; k < utf8.UTFMax-1 && len(tail) > 0 && !utf8.RuneStart(tail[0]); k++ {
		tail = tail[1:]
	}
	cut := b.total - int64(len(head)) - int64(len(tail))
	return fmt.Sprintf("%s\n[... %d bytes cut ...]\n%s", head, cut, tail)
}

// lastRuneStart is the index of the last byte of p that starts a character
// within the last utf8.UTFMax bytes, or -1.
func lastRuneStart(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			return i
		}
	}
	return -1
}
