package metrics

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nannyagent/nannyagent/internal/config"
)

var soak = flag.Bool("soak", false, "run the sender soak test long (500 000 sends instead of 10 000)")

var t0 = time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

// fakeClock hands every wait of the Sender to the test, which fires it
// (advancing the time by exactly the wait) or lets something else happen
// first. The Sender blocks in After until the test has taken the wait, so
// the test always knows what the Sender is doing.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan *fakeWait
}

type fakeWait struct {
	d       time.Duration
	ch      chan time.Time
	stopped atomic.Bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0, waits: make(chan *fakeWait)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	w := &fakeWait{d: d, ch: make(chan time.Time, 1)}
	c.waits <- w
	return w.ch, func() bool { return !w.stopped.Swap(true) }
}

func (c *fakeClock) fire(w *fakeWait) {
	c.mu.Lock()
	c.now = c.now.Add(w.d)
	now := c.now
	c.mu.Unlock()
	w.ch <- now
}

// next is the Sender's next wait; the guard only turns a hang into a
// failure.
func (c *fakeClock) next(t testing.TB) *fakeWait {
	t.Helper()
	select {
	case w := <-c.waits:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("the sender did not wait for anything")
		return nil
	}
}

// autoFire fires every wait at once until stop is closed.
func (c *fakeClock) autoFire(stop <-chan struct{}) {
	for {
		select {
		case w := <-c.waits:
			c.fire(w)
		case <-stop:
			return
		}
	}
}

// harness is a Sender with a counting collector and a scripted send.
type harness struct {
	clock *fakeClock
	s     *Sender
	logs  *observer.ObservedLogs

	mu        sync.Mutex
	collected int
	sends     []sent
	result    func(n int, ctx context.Context) error // n counts sends from 1
	collectFn func(n int) (Payload, error)

	cancel context.CancelFunc
	done   chan error
}

type sent struct {
	seq int // the sample's number (its cpu_cores)
	at  time.Duration
	err error
}

func basePayload(seq int) Payload {
	p, _ := build(contractSample())
	p.SystemMetrics.CPUCores = seq
	return p
}

func newHarness(t *testing.T, interval, initial, maxRetry time.Duration) *harness {
	core, logs := observer.New(zap.DebugLevel)
	h := &harness{clock: newFakeClock(), logs: logs}
	h.result = func(int, context.Context) error { return nil }
	var err error
	h.s, err = NewSender(SenderOptions{
		Interval: interval, InitialRetry: initial, MaxRetry: maxRetry,
		Clock: h.clock, Logger: zap.New(core),
		Collect: func(ctx context.Context) (Payload, error) {
			h.mu.Lock()
			h.collected++
			n, fn := h.collected, h.collectFn
			h.mu.Unlock()
			if fn != nil {
				return fn(n)
			}
			return basePayload(n), nil
		},
		Send: func(ctx context.Context, p Payload) error {
			h.mu.Lock()
			n := len(h.sends) + 1
			res := h.result
			h.mu.Unlock()
			err := res(n, ctx)
			h.mu.Lock()
			h.sends = append(h.sends, sent{seq: p.SystemMetrics.CPUCores, at: h.clock.Now().Sub(t0), err: err})
			h.mu.Unlock()
			return err
		},
	})
	require.NoError(t, err)
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.s.Run(ctx) }()
}

func (h *harness) stop(t testing.TB) {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func (h *harness) sent() []sent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]sent(nil), h.sends...)
}

func ok(seq int, at time.Duration) sent { return sent{seq: seq, at: at} }

var errDown = errors.New("dial tcp 127.0.0.1:8090: connect: connection refused")

func fail(seq int, at time.Duration) sent { return sent{seq: seq, at: at, err: errDown} }

func TestSenderSchedule(t *testing.T) {
	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	h.start()
	for range 3 {
		w := h.clock.next(t)
		require.Equal(t, 30*time.Second, w.d)
		h.clock.fire(w)
	}
	h.clock.next(t)
	require.Equal(t, []sent{ok(1, 0), ok(2, 30*time.Second), ok(3, 60*time.Second), ok(4, 90*time.Second)}, h.sent(),
		"one at start, then one per interval")
	st := h.s.Status()
	require.Equal(t, t0.Add(90*time.Second), st.LastSent)
	require.Equal(t, uint64(4), st.Sent)
	require.Empty(t, st.LastError)
	require.False(t, st.Unreachable)
	h.stop(t)
}

// TestSenderOutageThenRecovery: the backend is down for four attempts.
// The sender keeps only the latest sample, retries after 4, 8, 16, 16 s
// (doubling, capped), collects on schedule meanwhile, and on recovery
// sends exactly one payload, the latest, then carries on; the gap is
// logged with its length and the samples skipped.
func TestSenderOutageThenRecovery(t *testing.T) {
	h := newHarness(t, 10*time.Second, 4*time.Second, 16*time.Second)
	h.result = func(n int, _ context.Context) error {
		if n <= 4 {
			return errDown
		}
		return nil
	}
	h.start()
	var waits []time.Duration
	for range 9 {
		w := h.clock.next(t)
		waits = append(waits, w.d)
		if len(waits) == 6 { // t=28 s, after the fourth failure
			st := h.s.Status()
			require.True(t, st.Unreachable)
			require.Equal(t, t0, st.Since)
			require.Equal(t, 2, st.Skipped)
			require.Equal(t, t0.Add(44*time.Second), st.NextRetry)
			require.Equal(t, errDown.Error(), st.LastError)
			require.Equal(t, uint64(4), st.Failures)
			require.True(t, st.LastSent.IsZero())
		}
		h.clock.fire(w)
	}
	h.clock.next(t)
	s := time.Second
	require.Equal(t, []time.Duration{4 * s, 6 * s, 2 * s, 8 * s, 8 * s, 2 * s, 10 * s, 4 * s, 6 * s}, waits)
	require.Equal(t, []sent{
		fail(1, 0), fail(1, 4*s), fail(2, 12*s), fail(3, 28*s), // retries 4, 8, 16, 16 s apart
		ok(5, 44*s), // recovery: the latest sample (#4 at 30 s was replaced by #5 at 40 s), once
		ok(6, 50*s), // then the schedule again
	}, h.sent())

	recov := h.logs.FilterMessage("metrics reach the backend again").All()
	require.Len(t, recov, 1)
	f := recov[0].ContextMap()
	require.Equal(t, 44*time.Second, f["unreachable_for"])
	require.EqualValues(t, 4, f["failed_attempts"])
	require.EqualValues(t, 4, f["samples_skipped"])
	require.Equal(t, "delivered", f["outcome"])
	require.Equal(t, 1, h.logs.FilterMessage("metrics not delivered; keeping the latest sample and retrying").Len(),
		"one warning per outage, not one per attempt")

	st := h.s.Status()
	require.False(t, st.Unreachable)
	require.Zero(t, st.Skipped)
	require.Empty(t, st.LastError)
	require.Equal(t, t0.Add(50*time.Second), st.LastSent)
	require.Equal(t, uint64(2), st.Sent)
	h.stop(t)
}

// TestSenderBackoffBounded: a day-long outage with the defaults of the
// configuration. The attempts are 30 s, 1 min, 2, 4, 8, 16 min apart and
// then every 30 min; every wait is positive (no busy loop); the samples
// are still collected every 30 s.
func TestSenderBackoffBounded(t *testing.T) {
	interval, initial, maxRetry := ConfigSchedule(config.Defaults())
	require.Equal(t, []time.Duration{30 * time.Second, 30 * time.Second, 1800 * time.Second},
		[]time.Duration{interval, initial, maxRetry})
	h := newHarness(t, interval, initial, maxRetry)
	h.result = func(int, context.Context) error { return errDown }
	h.start()
	for h.clock.Now().Sub(t0) < 24*time.Hour {
		w := h.clock.next(t)
		require.Positive(t, w.d)
		h.clock.fire(w)
	}
	h.clock.next(t)
	sends := h.sent()
	var gaps []time.Duration
	for i := 1; i < len(sends); i++ {
		gaps = append(gaps, sends[i].at-sends[i-1].at)
	}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute}
	require.Equal(t, want, gaps[:len(want)])
	for _, g := range gaps[len(want):] {
		require.Equal(t, 30*time.Minute, g)
	}
	// 31.5 min of doubling, then every 30 min to the end of the day.
	require.Len(t, sends, 7+int((24*time.Hour-(30*time.Second+31*time.Minute))/(30*time.Minute)))
	h.mu.Lock()
	collected := h.collected
	h.mu.Unlock()
	require.Equal(t, 1+int(24*time.Hour/(30*time.Second)), collected)
	require.Equal(t, collected-1, h.s.Status().Skipped)
	for _, s := range sends {
		require.Equal(t, int(s.at/(30*time.Second))+1, s.seq, "every retry carries the latest sample")
	}
	h.stop(t)
}

func TestSenderPauseUntil(t *testing.T) {
	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	h.start()
	w := h.clock.next(t) // after the first send, waiting for the next interval
	require.Equal(t, 30*time.Second, w.d)
	h.s.Pause(t0.Add(100 * time.Second))
	st := h.s.Status()
	require.True(t, st.Paused)
	require.Equal(t, t0.Add(100*time.Second), st.PausedUntil)

	p := h.clock.next(t)
	require.True(t, w.stopped.Load(), "the interval's wait is abandoned")
	require.Equal(t, 100*time.Second, p.d, "paused until the given time")
	h.clock.fire(p)
	w = h.clock.next(t)
	require.Equal(t, 30*time.Second, w.d)
	require.Equal(t, []sent{ok(1, 0), ok(2, 100*time.Second)}, h.sent(),
		"nothing during the pause; a fresh sample as soon as it ends")
	require.False(t, h.s.Status().Paused)
	h.stop(t)
}

func TestSenderPauseResume(t *testing.T) {
	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	h.start()
	w := h.clock.next(t)
	h.s.Pause(time.Time{})
	require.True(t, h.s.Status().Paused)
	// Paused without an end, the sender waits for nothing but Resume;
	// time passing changes nothing.
	h.clock.mu.Lock()
	h.clock.now = h.clock.now.Add(time.Hour)
	h.clock.mu.Unlock()
	h.s.Resume()
	w2 := h.clock.next(t)
	require.True(t, w.stopped.Load())
	require.Equal(t, 30*time.Second, w2.d)
	require.Equal(t, []sent{ok(1, 0), ok(2, time.Hour)}, h.sent())
	require.False(t, h.s.Status().Paused)
	h.stop(t)
}

// TestSenderPauseDuringSend: the reboot flow pauses while a send is in
// flight. Pause cancels it and returns only once it has returned, so
// nothing reaches the backend after the acknowledgement; the cancelled
// send is not a failure.
func TestSenderPauseDuringSend(t *testing.T) {
	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	started := make(chan struct{})
	var sendReturned atomic.Bool
	h.result = func(n int, ctx context.Context) error {
		if n != 2 {
			return nil
		}
		close(started)
		<-ctx.Done()
		sendReturned.Store(true)
		return ctx.Err()
	}
	h.start()
	h.clock.fire(h.clock.next(t))
	<-started
	h.s.Pause(time.Time{})
	require.True(t, sendReturned.Load(), "Pause returned before the send in flight did")
	st := h.s.Status()
	require.Zero(t, st.Failures)
	require.Empty(t, st.LastError)
	require.False(t, st.Unreachable)

	h.s.Resume()
	h.clock.next(t)
	sends := h.sent()
	require.Len(t, sends, 3)
	require.Equal(t, ok(3, 30*time.Second), sends[2], "a fresh sample at once after Resume")
	h.stop(t)
}

// TestSenderPauseDuringOutage: a pause in an outage stops the retries;
// at its end the sender collects afresh and retries at once.
func TestSenderPauseDuringOutage(t *testing.T) {
	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	h.result = func(n int, _ context.Context) error {
		if n <= 1 {
			return errDown
		}
		return nil
	}
	h.start()
	w := h.clock.next(t) // retry in 30 s
	require.Equal(t, 30*time.Second, w.d)
	h.s.Pause(t0.Add(10 * time.Minute))
	p := h.clock.next(t)
	require.Equal(t, 10*time.Minute, p.d)
	h.clock.fire(p)
	h.clock.next(t)
	require.Equal(t, []sent{fail(1, 0), ok(2, 10*time.Minute)}, h.sent())
	recov := h.logs.FilterMessage("metrics reach the backend again").All()
	require.Len(t, recov, 1)
	require.EqualValues(t, 1, recov[0].ContextMap()["samples_skipped"])
	h.stop(t)
}

// TestSenderPauseChanged: a second Pause with another end replaces the
// first.
func TestSenderPauseChanged(t *testing.T) {
	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	h.start()
	h.clock.next(t)
	h.s.Pause(t0.Add(100 * time.Second))
	p := h.clock.next(t)
	require.Equal(t, 100*time.Second, p.d)
	h.s.Pause(t0.Add(50 * time.Second))
	p2 := h.clock.next(t)
	require.True(t, p.stopped.Load())
	require.Equal(t, 50*time.Second, p2.d)
	h.clock.fire(p2)
	h.clock.next(t)
	require.Equal(t, []sent{ok(1, 0), ok(2, 50*time.Second)}, h.sent())
	h.stop(t)
}

// TestSenderSlowFailure: the first retry waits InitialRetry from the end
// of the failed send, not from its start (a send that times out after
// 20 s must not be retried 10 s later).
func TestSenderSlowFailure(t *testing.T) {
	h := newHarness(t, 60*time.Second, 30*time.Second, 1800*time.Second)
	h.result = func(n int, _ context.Context) error {
		if n > 1 {
			return nil
		}
		h.clock.mu.Lock()
		h.clock.now = h.clock.now.Add(20 * time.Second)
		h.clock.mu.Unlock()
		return errDown
	}
	h.start()
	w := h.clock.next(t)
	require.Equal(t, 30*time.Second, w.d)
	h.clock.fire(w)
	h.clock.next(t)
	require.Equal(t, []sent{fail(1, 20*time.Second), ok(1, 50*time.Second)}, h.sent())
	h.stop(t)
}

func TestSenderStopsPromptly(t *testing.T) {
	t.Run("while waiting", func(t *testing.T) {
		h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
		h.start()
		w := h.clock.next(t)
		h.stop(t)
		require.True(t, w.stopped.Load())
	})
	t.Run("during a send", func(t *testing.T) {
		h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
		started := make(chan struct{})
		h.result = func(n int, ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}
		h.start()
		<-started
		h.stop(t)
		require.Zero(t, h.s.Status().Failures, "a send cut short by shutdown is not a failure")
	})
	t.Run("paused", func(t *testing.T) {
		h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
		h.s.Pause(time.Time{})
		h.start()
		h.stop(t)
		require.Empty(t, h.sent())
	})
}

// TestSenderRefused: a payload the backend refuses (Permanent) is not
// retried; the next one goes on schedule. The same refusal is logged
// once.
func TestSenderRefused(t *testing.T) {
	h := newHarness(t, 30*time.Second, 5*time.Second, 60*time.Second)
	refusal := fmt.Errorf("ingest-metrics: %w", Permanent(errors.New("400 platform_family required")))
	require.True(t, isPermanent(refusal))
	h.result = func(n int, _ context.Context) error {
		if n <= 3 {
			return refusal
		}
		return nil
	}
	h.start()
	for range 3 {
		w := h.clock.next(t)
		require.Equal(t, 30*time.Second, w.d, "no retry of a refused payload")
		h.clock.fire(w)
	}
	h.clock.next(t)
	require.Len(t, h.sent(), 4)
	require.Equal(t, 1, h.logs.FilterMessage("metrics refused by the backend").Len())
	st := h.s.Status()
	require.Empty(t, st.LastError, "cleared by the delivery")
	require.Equal(t, uint64(3), st.Failures)
	h.stop(t)
}

// TestSenderRefusedEndsOutage: a refusal during an outage means the
// backend is back; the outage ends and the payload is dropped.
func TestSenderRefusedEndsOutage(t *testing.T) {
	h := newHarness(t, 30*time.Second, 5*time.Second, 60*time.Second)
	h.result = func(n int, _ context.Context) error {
		switch n {
		case 1:
			return errDown
		case 2:
			return Permanent(errors.New("500 failed to save metrics"))
		}
		return nil
	}
	h.start()
	h.clock.fire(h.clock.next(t)) // retry at 5 s: refused
	w := h.clock.next(t)
	require.Equal(t, 25*time.Second, w.d, "back on the interval")
	require.False(t, h.s.Status().Unreachable)
	recov := h.logs.FilterMessage("metrics reach the backend again").All()
	require.Len(t, recov, 1)
	require.Equal(t, "refused", recov[0].ContextMap()["outcome"])
	h.stop(t)
}

// TestSenderBadSamples: a collection error or a payload the backend would
// refuse is never sent; both are logged and kept in the status.
func TestSenderBadSamples(t *testing.T) {
	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	h.collectFn = func(n int) (Payload, error) {
		switch n {
		case 1:
			return Payload{}, errors.New("/proc is not mounted")
		case 2:
			p := basePayload(n)
			p.SystemMetrics.CPUPercent = 150
			return p, nil
		case 3:
			panic("collector bug")
		}
		return basePayload(n), nil
	}
	h.start()
	w := h.clock.next(t)
	require.Contains(t, h.s.Status().LastError, "/proc is not mounted")
	h.clock.fire(w)
	w = h.clock.next(t)
	require.Contains(t, h.s.Status().LastError, "cpu_percent 150")
	h.clock.fire(w)
	w = h.clock.next(t)
	require.Contains(t, h.s.Status().LastError, "collector bug")
	h.clock.fire(w)
	h.clock.next(t)
	require.Equal(t, []sent{ok(4, 90*time.Second)}, h.sent())
	require.Equal(t, 3, h.logs.FilterMessage("metrics not collected").Len())
	h.stop(t)
}

func TestSenderSendPanics(t *testing.T) {
	h := newHarness(t, 30*time.Second, 7*time.Second, 60*time.Second)
	var n atomic.Int32
	h.result = func(int, context.Context) error {
		if n.Add(1) == 1 {
			panic("client bug")
		}
		return nil
	}
	h.start()
	w := h.clock.next(t)
	require.Equal(t, 7*time.Second, w.d, "a panicking send is a failed attempt")
	require.Contains(t, h.s.Status().LastError, "client bug")
	h.clock.fire(w)
	h.clock.next(t)
	require.Equal(t, uint64(1), h.s.Status().Sent)
	h.stop(t)
}

func TestSenderOptions(t *testing.T) {
	_, err := NewSender(SenderOptions{})
	require.Error(t, err)

	s, err := NewSender(SenderOptions{Collect: func(context.Context) (Payload, error) { return Payload{}, nil },
		Send: func(context.Context, Payload) error { return nil }, MaxRetry: time.Second})
	require.NoError(t, err)
	require.Equal(t, DefaultInterval, s.interval)
	require.Equal(t, DefaultInitialRetry, s.retry.Initial)
	require.Equal(t, DefaultMaxRetry, s.retry.Max, "a maximum below the initial delay is not a maximum")

	cfg := config.Defaults()
	cfg.MetricsInterval, cfg.HTTPTransport.InitialRetryDelaySec, cfg.HTTPTransport.MaxRetryDelaySec = 5, 2, 9
	i, a, b := ConfigSchedule(cfg)
	require.Equal(t, []time.Duration{5 * time.Second, 2 * time.Second, 9 * time.Second}, []time.Duration{i, a, b})
	cfg.MetricsInterval, cfg.HTTPTransport.InitialRetryDelaySec, cfg.HTTPTransport.MaxRetryDelaySec = 0, 0, 0
	i, a, b = ConfigSchedule(cfg)
	require.Equal(t, []time.Duration{DefaultInterval, DefaultInitialRetry, DefaultMaxRetry}, []time.Duration{i, a, b})

	h := newHarness(t, 30*time.Second, 30*time.Second, 1800*time.Second)
	h.start()
	h.clock.next(t)
	require.ErrorContains(t, h.s.Run(context.Background()), "already running")
	h.stop(t)
}

func TestSenderOnStatus(t *testing.T) {
	var mu sync.Mutex
	var seen []Status
	clock := newFakeClock()
	s, err := NewSender(SenderOptions{
		Interval: 30 * time.Second, Clock: clock,
		Collect:  func(context.Context) (Payload, error) { return basePayload(1), nil },
		Send:     func(context.Context, Payload) error { return nil },
		OnStatus: func(st Status) { mu.Lock(); seen = append(seen, st); mu.Unlock() },
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	clock.next(t)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, seen)
	require.Equal(t, t0, seen[len(seen)-1].LastSent)
}

// TestSenderSoak: 10 000 sends (500 000 with -soak) against a send that
// fails, refuses and panics at random, with collections that fail now
// and then. Every send carries the latest sample; heap and goroutines
// stay flat.
func TestSenderSoak(t *testing.T) {
	total := 10_000
	if *soak {
		total = 500_000
	}
	goroutines := runtime.NumGoroutine()
	clock := newFakeClock()
	rng := rand.New(rand.NewPCG(1, 2))
	var (
		collected, sends, delivered int
		latest                      int
		heapAt                      = map[int]uint64{}
		mismatch                    error
	)
	ctx, cancel := context.WithCancel(context.Background())
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	s, err := NewSender(SenderOptions{
		Interval: 30 * time.Second, InitialRetry: 30 * time.Second, MaxRetry: 1800 * time.Second,
		Clock: clock,
		Collect: func(context.Context) (Payload, error) {
			collected++
			if rng.IntN(100) < 3 {
				return Payload{}, errors.New("transient read error")
			}
			latest = collected
			return basePayload(collected), nil
		},
		Send: func(ctx context.Context, p Payload) error {
			sends++
			if p.SystemMetrics.CPUCores != latest && mismatch == nil {
				mismatch = fmt.Errorf("send %d carried sample %d, the latest is %d", sends, p.SystemMetrics.CPUCores, latest)
			}
			if sends == total/10 || sends == total {
				heapAt[sends] = heap()
			}
			if sends == total {
				cancel()
			}
			switch r := rng.IntN(100); {
			case r < 30:
				return errDown
			case r < 35:
				return Permanent(errors.New("400 invalid request"))
			case r < 37:
				panic("client bug")
			}
			delivered++
			return nil
		},
	})
	require.NoError(t, err)
	stop := make(chan struct{})
	fired := make(chan struct{})
	go func() { clock.autoFire(stop); close(fired) }()
	require.NoError(t, s.Run(ctx))
	close(stop)
	<-fired

	require.NoError(t, mismatch)
	require.Equal(t, total, sends)
	st := s.Status()
	require.Equal(t, uint64(delivered), st.Sent)
	require.Greater(t, collected, total/2)
	growth := int64(heapAt[total]) - int64(heapAt[total/10])
	t.Logf("sends %d, delivered %d, collected %d, heap at %d: %d B, at %d: %d B", sends, delivered, collected,
		total/10, heapAt[total/10], total, heapAt[total])
	require.Less(t, growth, int64(256<<10), "heap grew by %d bytes", growth)
	// The clock's goroutine is gone a moment after it said so. Polled
	// here rather than with require.Eventually, whose own goroutine
	// would be counted.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.LessOrEqual(t, runtime.NumGoroutine(), goroutines)
}
