package safeexec

import (
	"fmt"
	"sync"
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
	cut := b.total - int64(len(b.head)) - int64(len(tail))
	if cut <= 0 {
		return string(b.head) + string(tail)
	}
	return fmt.Sprintf("%s\n[... %d bytes cut ...]\n%s", b.head, cut, tail)
}
