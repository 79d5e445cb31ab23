package catalog

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/ringbuf"
)

// pollInterval bounds how long an event waits in the ring: programs submit
// without waking the reader (bpf/common/events.bpf.h) and the reader drains
// on this timer, or sooner once the ring is a quarter full.
const pollInterval = 50 * time.Millisecond

// EventStream drains an entry's events map into a handler on one
// goroutine. The handler gets the raw record and must not keep it.
type EventStream struct {
	rb      *ringbuf.Reader
	pr      *perf.Reader
	lostMap *ebpf.Map

	seen     atomic.Uint64
	perfLost atomic.Uint64
	done     chan struct{}
	stopOnce sync.Once
	err      error
}

// StreamObjects are the maps bpf/common/events.bpf.h defines.
type StreamObjects struct {
	Events     *ebpf.Map
	EventsPerf *ebpf.Map
	Lost       *ebpf.Map
}

// StartStream begins draining. usePerf is PrepareEvents' answer.
func StartStream(m StreamObjects, usePerf bool, handle func([]byte)) (*EventStream, error) {
	s := &EventStream{lostMap: m.Lost, done: make(chan struct{})}
	var err error
	if usePerf {
		s.pr, err = perf.NewReaderWithOptions(m.EventsPerf, 256*1024, perf.ReaderOptions{WakeupEvents: 64})
	} else {
		s.rb, err = ringbuf.NewReader(m.Events)
	}
	if err != nil {
		return nil, fmt.Errorf("open event reader: %w", err)
	}
	go s.loop(handle)
	return s, nil
}

func (s *EventStream) loop(handle func([]byte)) {
	defer close(s.done)
	if s.rb != nil {
		var rec ringbuf.Record
		for {
			s.rb.SetDeadline(time.Now().Add(pollInterval))
			err := s.rb.ReadInto(&rec)
			switch {
			case err == nil:
				s.seen.Add(1)
				handle(rec.RawSample)
			case errors.Is(err, os.ErrDeadlineExceeded):
			case errors.Is(err, ringbuf.ErrFlushed), errors.Is(err, ringbuf.ErrClosed):
				return
			default:
				s.err = fmt.Errorf("read ring buffer: %w", err)
				return
			}
		}
	}
	var rec perf.Record
	for {
		s.pr.SetDeadline(time.Now().Add(pollInterval))
		err := s.pr.ReadInto(&rec)
		switch {
		case err == nil:
			if rec.LostSamples > 0 {
				s.perfLost.Add(rec.LostSamples)
				continue
			}
			s.seen.Add(1)
			handle(rec.RawSample)
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, perf.ErrFlushed), errors.Is(err, perf.ErrClosed):
			return
		default:
			s.err = fmt.Errorf("read perf buffer: %w", err)
			return
		}
	}
}

// Transport names the event transport for Result.Attach.
func (s *EventStream) Transport() string {
	if s.pr != nil {
		return "perf buffer"
	}
	return "ring buffer"
}

// Seen is the number of events handled so far.
func (s *EventStream) Seen() uint64 { return s.seen.Load() }

// Stop drains what is left, stops the goroutine and returns the number of
// events lost (ring full, or perf samples dropped). Detach the programs
// first, so nothing arrives after the drain.
func (s *EventStream) Stop() (lost uint64, err error) {
	s.stopOnce.Do(func() {
		if s.rb != nil {
			_ = s.rb.Flush()
		} else {
			_ = s.pr.Flush()
		}
		<-s.done
		if s.rb != nil {
			_ = s.rb.Close()
		} else {
			_ = s.pr.Close()
		}
	})
	lost, lerr := SumPerCPU(s.lostMap, 0)
	if lerr != nil {
		return 0, lerr
	}
	return lost + s.perfLost.Load(), s.err
}

// SumPerCPU adds up the values of a per-CPU array's slot key.
func SumPerCPU(m *ebpf.Map, key uint32) (uint64, error) {
	var vals []uint64
	if err := m.Lookup(key, &vals); err != nil {
		return 0, fmt.Errorf("read %s: %w", m.String(), err)
	}
	var sum uint64
	for _, v := range vals {
		sum += v
	}
	return sum, nil
}
