package catalog

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// Prepare is the beginning every Start shares once the entry knows it can
// run: the parameters are checked against info, the compiled spec is read
// with load (the bpf2go load<Entry> function) and the filters are written
// into it. Errors name the entry and the step.
func Prepare(info Info, p Params, load func() (*ebpf.CollectionSpec, error)) (*ebpf.CollectionSpec, error) {
	if err := p.Validate(info); err != nil {
		return nil, err
	}
	spec, err := load()
	if err != nil {
		return nil, fmt.Errorf("%s: read BPF spec: %w", info.Name, err)
	}
	if err := SetFilters(spec, p); err != nil {
		return nil, fmt.Errorf("%s: %w", info.Name, err)
	}
	return spec, nil
}

// Session is the lifecycle every trace shares, so that each entry writes
// only its own question (which programs, which maps, which result) and the
// contract of Trace holds the same way everywhere:
//   - Stop runs once and returns the same result and error again;
//   - it detaches the links first (nothing new arrives), then drains the
//     event stream, then reads the maps through Collect while they are
//     still open, and only then closes the objects;
//   - Seen never reads a map after it was closed, and is the result's
//     count once stopped;
//   - Abort releases whatever a failed Start had already set up.
//
// An entry embeds a Session in its trace, fills the fields as Start
// proceeds and calls Begin once everything is attached; the embedded
// Seen and Stop then implement Trace.
type Session struct {
	Entry  string
	Params Params
	// Attach is the attach mode for Result.Attach; when the trace streams,
	// Stop adds the transport (", ring buffer" or ", perf buffer").
	Attach string
	Links  Links
	// Perf holds the per-CPU perf events of sampling entries; detached
	// with the links.
	Perf PerfEvents
	// Stream is set when the entry streams events (StartStream).
	Stream *EventStream
	// Objects are the loaded programs and maps, closed last.
	Objects io.Closer
	// Count is Seen for entries that count in the kernel; it may read the
	// maps, and is never called once they are closed. Streaming entries
	// leave it nil: Seen is then the stream's count.
	Count func() uint64
	// Collect (required) reads the in-kernel maps and builds the result (Entry,
	// Params, Events, tables...). It runs after detach and drain, before
	// the objects close; Stop fills Start, End, Attach, adds the stream's
	// lost events to Lost and compacts. An error is returned by Stop
	// alongside whatever result Collect could build.
	Collect func() (*Result, error)

	start, end time.Time

	mu     sync.Mutex // guards closed and result: Seen runs beside Stop
	closed bool
	once   sync.Once
	result *Result
	err    error
}

// Begin marks the start of the trace: call it once everything is attached.
func (s *Session) Begin() { s.start = time.Now() }

// StartStream starts draining the entry's events map into handle (see
// catalog.StartStream); Stop drains and stops it after detaching.
func (s *Session) StartStream(m StreamObjects, usePerf bool, handle func([]byte)) error {
	st, err := StartStream(m, usePerf, handle)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Entry, err)
	}
	s.Stream = st
	return nil
}

// Traced is the traced time, from Begin to the start of Stop: what
// Collect divides by for rates.
func (s *Session) Traced() time.Duration { return s.end.Sub(s.start) }

// Seen is the number of events gathered so far; after Stop, the result's.
func (s *Session) Seen() uint64 {
	if s.Stream != nil && s.Count == nil {
		return s.Stream.Seen()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.result != nil:
		return s.result.Events
	case s.closed || s.Count == nil:
		return 0
	}
	return s.Count()
}

// Abort releases what a failed Start set up, in Stop's order. Use it as
// `defer func() { if err != nil { t.Abort() } }()` right after the objects
// are loaded.
func (s *Session) Abort() {
	_ = s.Links.Close()
	_ = s.Perf.Close()
	if s.Stream != nil {
		_, _ = s.Stream.Stop()
	}
	s.closeObjects()
}

func (s *Session) closeObjects() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.Objects == nil {
		return nil
	}
	return s.Objects.Close()
}

// Stop detaches, drains, collects and closes, once (see Session).
func (s *Session) Stop() (*Result, error) {
	s.once.Do(s.stop)
	return s.result, s.err
}

func (s *Session) stop() {
	s.end = time.Now()
	detachErr := errors.Join(s.Links.Close(), s.Perf.Close())
	var lost uint64
	var streamErr error
	if s.Stream != nil {
		lost, streamErr = s.Stream.Stop()
	}
	res, collectErr := s.Collect()
	closeErr := s.closeObjects()
	if res == nil {
		res = &Result{Entry: s.Entry, Params: s.Params.Describe()}
	}
	res.Start, res.End = s.start, s.end
	res.Lost += lost
	if res.Attach == "" {
		res.Attach = s.Attach
		if s.Stream != nil {
			res.Attach += ", " + s.Stream.Transport()
		}
	}
	res.Compact()
	s.mu.Lock()
	s.result = res
	s.mu.Unlock()
	if err := errors.Join(detachErr, streamErr, collectErr, closeErr); err != nil {
		s.err = fmt.Errorf("%s: stop: %w", s.Entry, err)
	}
}

// CloseFunc makes a function an io.Closer, for Session.Objects when an
// entry holds its programs and maps apart (one program per attach mode).
type CloseFunc func() error

func (f CloseFunc) Close() error { return f() }

// Records returns a stream handler that decodes every record into one
// reused R (the stream calls it from a single goroutine) and passes it to
// add under mu, which also guards the aggregate Stop's Collect reads. A
// record too short for R counts in *malformed instead: a layout mismatch
// shows up in the result, not as garbage.
func Records[R any](mu sync.Locker, malformed *uint64, add func(*R)) func([]byte) {
	var rec R
	return func(raw []byte) {
		err := Decode(raw, &rec)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			*malformed++
			return
		}
		add(&rec)
	}
}
