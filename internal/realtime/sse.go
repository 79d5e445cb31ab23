// Package realtime is the agent's side of the PocketBase realtime stream
// (NANNYAPI.md §2.3): a server-sent events parser, a client that connects,
// subscribes with the agent's token, delivers record events, reconnects
// at once after the server's idle close and with backoff after errors,
// and a de-duplication window shared with the daemon's catch-up.
package realtime

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one dispatched server-sent event, as an EventSource would
// hand it to a listener.
type Message struct {
	// LastEventID is the stream's last event ID when the message was
	// dispatched; it persists across messages until an id field changes it.
	LastEventID string
	// Type is the event: field, "message" when the event had none.
	Type string
	// Data is the data: lines joined with "\n".
	Data string
}

// Limits bound what a server can make the parser hold. A zero field
// means its default.
type Limits struct {
	// MaxLineBytes bounds one line, terminator excluded.
	MaxLineBytes int
	// MaxEventBytes bounds one event's data and type together.
	MaxEventBytes int
}

// Default limits. A PocketBase record event is one data line with the
// record's JSON; the agent's collections carry texts of at most a few
// kilobytes (user_prompt 2000, resolution_plan 5000), so 1 MiB leaves
// ample room while a hostile server still cannot exhaust memory.
const (
	DefaultMaxLineBytes  = 1 << 20
	DefaultMaxEventBytes = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	if l.MaxEventBytes <= 0 {
		l.MaxEventBytes = DefaultMaxEventBytes
	}
	return l
}

// LimitError says which bound a stream exceeded.
type LimitError struct {
	// Limit is "MaxLineBytes" or "MaxEventBytes".
	Limit string
	Max   int
}

func (e *LimitError) Error() string {
	what := "line"
	if e.Limit == "MaxEventBytes" {
		what = "event"
	}
	return fmt.Sprintf("sse: %s longer than %d bytes (limit %s)", what, e.Max, e.Limit)
}

// Parser interprets an event stream by the rules of the WHATWG HTML
// standard ("Interpreting an event stream", §9.2.6). It is fed bytes in
// chunks of any size and gives the same messages for any chunking.
// After Feed returns an error the Parser must not be used again.
type Parser struct {
	lim Limits

	// bom counts the bytes of a leading U+FEFF seen so far; -1 once the
	// stream's first bytes have been decided.
	bom    int
	line   []byte // an unterminated line
	skipLF bool   // the last line ended with CR: a following LF belongs to it

	data      []byte
	eventType string
	lastID    string
	inEvent   bool // a field line was seen since the last dispatch

	retry    time.Duration
	hasRetry bool
}

// NewParser returns a parser at the start of a stream.
func NewParser(l Limits) *Parser { return &Parser{lim: l.withDefaults()} }

var utf8BOM = [3]byte{0xEF, 0xBB, 0xBF}

// Feed consumes b, calling emit for every message it completes. An error
// from emit stops Feed and is returned as is.
func (p *Parser) Feed(b []byte, emit func(Message) error) error {
	if p.bom >= 0 {
		// The decoder strips one BOM at the very start; it may arrive
		// split across chunks, so matched bytes are held until decided.
		for len(b) > 0 && p.bom < len(utf8BOM) && b[0] == utf8BOM[p.bom] {
			p.bom++
			b = b[1:]
		}
		switch {
		case p.bom == len(utf8BOM):
			p.bom = -1
		case len(b) == 0:
			return nil
		default:
			held := utf8BOM[:p.bom]
			p.bom = -1
			if err := p.feed(held, emit); err != nil {
				return err
			}
		}
	}
	return p.feed(b, emit)
}

func (p *Parser) feed(b []byte, emit func(Message) error) error {
	for len(b) > 0 {
		if p.skipLF {
			p.skipLF = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := indexEOL(b)
		if i < 0 {
			if len(p.line)+len(b) > p.lim.MaxLineBytes {
				return &LimitError{Limit: "MaxLineBytes", Max: p.lim.MaxLineBytes}
			}
			p.line = append(p.line, b...)
			return nil
		}
		if len(p.line)+i > p.lim.MaxLineBytes {
			return &LimitError{Limit: "MaxLineBytes", Max: p.lim.MaxLineBytes}
		}
		line := b[:i]
		if len(p.line) > 0 {
			p.line = append(p.line, line...)
			line = p.line
		}
		p.skipLF = b[i] == '\r'
		b = b[i+1:]
		err := p.processLine(line, emit)
		p.line = p.line[:0]
		if err != nil {
			return err
		}
	}
	// A hostile server's one long line must not stay allocated for the
	// life of the stream.
	if cap(p.line) > 64<<10 && len(p.line) == 0 {
		p.line = nil
	}
	return nil
}

func indexEOL(b []byte) int {
	lf := bytes.IndexByte(b, '\n')
	in := b
	if lf >= 0 {
		in = b[:lf]
	}
	if cr := bytes.IndexByte(in, '\r'); cr >= 0 {
		return cr
	}
	return lf
}

func (p *Parser) processLine(raw []byte, emit func(Message) error) error {
	if len(raw) == 0 {
		return p.dispatch(emit)
	}
	if raw[0] == ':' {
		return nil
	}
	line := decodeUTF8(raw)
	field, value := line, ""
	if i := strings.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		value = strings.TrimPrefix(value, " ")
	}
	p.inEvent = true
	switch field {
	case "event":
		if len(p.data)+len(value) > p.lim.MaxEventBytes {
			return &LimitError{Limit: "MaxEventBytes", Max: p.lim.MaxEventBytes}
		}
		p.eventType = value
	case "data":
		if len(p.data)+len(value)+1+len(p.eventType) > p.lim.MaxEventBytes {
			return &LimitError{Limit: "MaxEventBytes", Max: p.lim.MaxEventBytes}
		}
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
	case "id":
		if !strings.ContainsRune(value, 0) {
			p.lastID = value
		}
	case "retry":
		if ms, ok := parseRetry(value); ok {
			p.retry, p.hasRetry = ms, true
		}
	}
	return nil
}

// parseRetry accepts only ASCII digits; a value too large for a duration
// is ignored rather than wrapped.
func parseRetry(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms > int64(time.Duration(1<<63-1)/time.Millisecond) {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

func (p *Parser) dispatch(emit func(Message) error) error {
	p.inEvent = false
	if len(p.data) == 0 {
		p.eventType = ""
		return nil
	}
	m := Message{LastEventID: p.lastID, Type: p.eventType, Data: string(p.data[:len(p.data)-1])}
	if m.Type == "" {
		m.Type = "message"
	}
	p.eventType = ""
	if cap(p.data) > 64<<10 {
		p.data = nil
	} else {
		p.data = p.data[:0]
	}
	return emit(m)
}

// Pending reports whether the stream is inside an event or a line: an
// end of stream now would discard it, so the stream was cut short.
func (p *Parser) Pending() bool {
	return p.inEvent || len(p.line) > 0 || p.bom > 0
}

// Retry returns the reconnection time the stream last set with a valid
// retry: field.
func (p *Parser) Retry() (time.Duration, bool) { return p.retry, p.hasRetry }

// LastEventID is the stream's last event ID buffer.
func (p *Parser) LastEventID() string { return p.lastID }

// Parse reads r to its end and emits every complete message. An event
// still open at the end of r is discarded, as the standard requires;
// ErrTruncated then says so after the complete ones were emitted.
func Parse(r io.Reader, l Limits, emit func(Message) error) error {
	p := NewParser(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if ferr := p.Feed(buf[:n], emit); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			if p.Pending() {
				return ErrTruncated
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ErrTruncated means the stream ended inside an event or a line.
var ErrTruncated = errors.New("sse: stream ended inside an event")

// decodeUTF8 is the WHATWG "UTF-8 decode" without BOM handling: each
// maximal subpart of an ill-formed sequence becomes one U+FFFD, so the
// result matches what a browser's EventSource would see.
func decodeUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			sb.Write(b[i : i+size])
			i += size
			continue
		}
		sb.WriteRune(utf8.RuneError)
		i += invalidLen(b[i:])
	}
	return sb.String()
}

// invalidLen is the length of the maximal subpart starting at b[0], which
// the caller knows does not start a valid sequence.
func invalidLen(b []byte) int {
	lo, hi := byte(0x80), byte(0xBF)
	var need int
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c == 0xF4:
		need, hi = 3, 0x8F
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	default:
		return 1
	}
	n := 1
	for n <= need && n < len(b) && b[n] >= lo && b[n] <= hi {
		n++
		lo, hi = 0x80, 0xBF
	}
	return n
}
