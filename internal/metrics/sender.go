package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nannyagent/nannyagent/internal/backoff"
	"go.uber.org/zap"

	"github.com/nannyagent/nannyagent/internal/config"
)

// SendFunc delivers one payload to the backend (the nannyapi client's
// ingest-metrics call). It must return when ctx ends.
//
// An error whose chain holds a `Permanent() bool` method returning true
// (see Permanent) means the backend answered and refused this payload:
// it is dropped, not retried. Any other error means the backend was not
// reached or failed, and the payload is retried with backoff.
type SendFunc func(ctx context.Context, p Payload) error

// CollectFunc takes one payload; Collector.Collect in the daemon.
type CollectFunc func(ctx context.Context) (Payload, error)

// Clock is the Sender's time: the real one outside tests.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a
	// function that stops it.
	After(d time.Duration) (<-chan time.Time, func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// Permanent marks err as a refusal that retrying the same payload cannot
// change (a 4xx, a validation 500).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ error }

func (e permanentError) Unwrap() error   { return e.error }
func (e permanentError) Permanent() bool { return true }

func isPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// SenderOptions configure a Sender.
type SenderOptions struct {
	// Interval is metrics_interval; InitialRetry and MaxRetry are
	// http_transport's initial and max retry delays. ConfigSchedule
	// reads them from the configuration.
	Interval     time.Duration
	InitialRetry time.Duration
	MaxRetry     time.Duration

	Collect CollectFunc
	Send    SendFunc
	Logger  *zap.Logger
	// Clock is the real clock by default.
	Clock Clock
	// OnStatus, when set, gets the status after every collection and
	// attempt (the daemon keeps it where `--status` can read it). It is
	// called from Run's goroutine and must not block.
	OnStatus func(Status)
}

// Defaults of the schedule, the earlier agent's (NANNYAPI.md §1, §4).
const (
	DefaultInterval     = 30 * time.Second
	DefaultInitialRetry = 30 * time.Second
	DefaultMaxRetry     = 1800 * time.Second
)

// ConfigSchedule reads the interval and retry delays from cfg; a 0 means
// the default, as in the configuration file.
func ConfigSchedule(cfg *config.Config) (interval, initialRetry, maxRetry time.Duration) {
	sec := func(v int, def time.Duration) time.Duration {
		if v <= 0 {
			return def
		}
		return time.Duration(v) * time.Second
	}
	return sec(cfg.MetricsInterval, DefaultInterval),
		sec(cfg.HTTPTransport.InitialRetryDelaySec, DefaultInitialRetry),
		sec(cfg.HTTPTransport.MaxRetryDelaySec, DefaultMaxRetry)
}

// Status is what the metrics loop has done, for `--status`.
type Status struct {
	// LastSent is when the backend last accepted a payload.
	LastSent time.Time `json:"last_sent,omitzero"`
	// LastError is the last failure (collection, validation or
	// delivery), cleared by the next delivery.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Sent        uint64    `json:"sent"`
	Failures    uint64    `json:"failures"`
	// Unreachable is set while deliveries fail and are being retried;
	// Since is the first failure, Skipped the samples collected since
	// and replaced by newer ones, NextRetry the next attempt.
	Unreachable bool      `json:"unreachable,omitempty"`
	Since       time.Time `json:"unreachable_since,omitzero"`
	Skipped     int       `json:"skipped,omitempty"`
	NextRetry   time.Time `json:"next_retry,omitzero"`
	// Paused is set between Pause and Resume (or the pause's end).
	Paused      bool      `json:"paused,omitempty"`
	PausedUntil time.Time `json:"paused_until,omitzero"`
}

// Sender collects and sends a payload every Interval, plus one at start.
// While the backend is unreachable it keeps only the latest payload and
// retries with a delay that doubles from InitialRetry up to MaxRetry;
// once a retry goes through it logs how long the gap was and how many
// samples were skipped. Pause stops it (the reboot flow: a metrics post
// between the reboot's acknowledgement and the reboot would make the
// backend mark the reboot completed early).
type Sender struct {
	interval time.Duration
	// retry is the delay after each failed attempt of an outage: no
	// jitter, since one agent's metrics are one request per interval.
	retry backoff.Backoff

	collect  CollectFunc
	send     SendFunc
	log      *zap.Logger
	clock    Clock
	onStatus func(Status)

	wake chan struct{}

	mu          sync.Mutex
	running     bool
	paused      bool
	pausedUntil time.Time
	resumed     bool          // a pause ended and Run has not caught up yet
	inflight    chan struct{} // closed when the send in flight returns
	cancelSend  context.CancelFunc
	cutByPause  bool // Pause cancelled the send in flight
	status      Status
}

// NewSender checks opts and returns a Sender; Run starts it.
func NewSender(opts SenderOptions) (*Sender, error) {
	if opts.Collect == nil || opts.Send == nil {
		return nil, errors.New("metrics sender: Collect and Send are required")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.InitialRetry <= 0 {
		opts.InitialRetry = DefaultInitialRetry
	}
	if opts.MaxRetry < opts.InitialRetry {
		opts.MaxRetry = max(DefaultMaxRetry, opts.InitialRetry)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	return &Sender{
		interval: opts.Interval, retry: backoff.Backoff{Initial: opts.InitialRetry, Max: opts.MaxRetry},
		collect: opts.Collect, send: opts.Send, log: opts.Logger.Named("metrics"),
		clock: opts.Clock, onStatus: opts.OnStatus,
		wake: make(chan struct{}, 1),
	}, nil
}

// Status returns a copy of the current status.
func (s *Sender) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Paused, st.PausedUntil = s.paused, s.pausedUntil
	return st
}

// Pause stops collecting and sending until `until`, or until Resume when
// until is zero. A send in flight is cancelled, and Pause returns once it
// has returned: from then on no payload leaves until the pause ends.
func (s *Sender) Pause(until time.Time) {
	s.mu.Lock()
	s.paused, s.pausedUntil = true, until
	inflight, cancel := s.inflight, s.cancelSend
	s.cutByPause = s.cutByPause || inflight != nil
	s.mu.Unlock()
	s.signal()
	if until.IsZero() {
		s.log.Info("metrics paused until resumed")
	} else {
		s.log.Info("metrics paused", zap.Time("until", until))
	}
	if inflight != nil {
		cancel()
		<-inflight
	}
}

// Resume ends a pause at once; the next payload is collected and sent
// straight away.
func (s *Sender) Resume() {
	s.mu.Lock()
	was := s.paused
	s.paused, s.pausedUntil = false, time.Time{}
	s.resumed = s.resumed || was
	s.mu.Unlock()
	if was {
		s.log.Info("metrics resumed")
		s.signal()
	}
}

func (s *Sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pauseState says whether the sender is paused at now (ending a pause
// whose time has come), until when, and whether a pause has ended since
// Run last took note (take says to take note now).
func (s *Sender) pauseState(now time.Time, take bool) (paused bool, until time.Time, resumed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused && !s.pausedUntil.IsZero() && !now.Before(s.pausedUntil) {
		s.paused, s.pausedUntil, s.resumed = false, time.Time{}, true
		s.log.Info("metrics resumed: the pause ended")
	}
	paused, until, resumed = s.paused, s.pausedUntil, s.resumed
	if take && !paused {
		s.resumed = false
	}
	return paused, until, resumed
}

// waitUnpaused waits for fire, and says whether it came. It gives up
// when ctx ends or a pause begins or ends (the caller's loop then sees
// which); a wake that changes nothing keeps the same timer.
func (s *Sender) waitUnpaused(ctx context.Context, fire <-chan time.Time, stop func() bool) bool {
	for {
		select {
		case <-ctx.Done():
			stop()
			return false
		case <-s.wake:
			if p, _, r := s.pauseState(s.clock.Now(), false); p || r {
				stop()
				return false
			}
		case <-fire:
			return true
		}
	}
}

// outcome of one attempt.
type outcome int

const (
	delivered outcome = iota
	refused           // the backend answered no: drop the payload
	failed            // not delivered: retry
	held              // paused before or during the send: nothing happened
)

// Run collects and sends until ctx ends, then returns nil. It never
// returns on a backend or collection error; it returns an error only if
// it is already running.
func (s *Sender) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("metrics sender is already running")
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	var (
		nextTick = s.clock.Now() // the first collection is at start
		latest   *Payload        // the payload waiting for a retry
		retryAt  time.Time
		wait     time.Duration // the current retry delay
		failing  bool
		since    time.Time // first failure of the outage
		attempts int       // failed attempts of the outage
		skipped  int
	)
	endOutage := func(now time.Time, how string) {
		if !failing {
			return
		}
		s.log.Info("metrics reach the backend again",
			zap.String("outcome", how),
			zap.Duration("unreachable_for", now.Sub(since)),
			zap.Int("failed_attempts", attempts),
			zap.Int("samples_skipped", skipped))
		failing, latest, attempts, skipped = false, nil, 0, 0
		s.update(func(st *Status) {
			st.Unreachable, st.Since, st.Skipped, st.NextRetry = false, time.Time{}, 0, time.Time{}
		})
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		now := s.clock.Now()
		isPaused, until, resumed := s.pauseState(now, true)
		if isPaused {
			var fire <-chan time.Time
			stop := func() bool { return false }
			if !until.IsZero() {
				fire, stop = s.clock.After(until.Sub(now))
			}
			// Wait for the pause to end or change; a wake that changes
			// nothing (a Resume racing a Pause) keeps the same timer.
		pausedWait:
			for {
				select {
				case <-ctx.Done():
					stop()
					return nil
				case <-s.wake:
					if p, u, _ := s.pauseState(s.clock.Now(), false); p && u.Equal(until) {
						continue
					}
					stop()
				case <-fire:
				}
				break pausedWait
			}
			continue
		}
		if resumed {
			// Collect and send at once after a pause; an outage carries
			// on, with its retry due now.
			nextTick = now
			if failing {
				retryAt = now
			}
		}

		due := nextTick
		if failing && retryAt.Before(due) {
			due = retryAt
		}
		if d := due.Sub(now); d > 0 {
			fire, stop := s.clock.After(d)
			if !s.waitUnpaused(ctx, fire, stop) {
				continue
			}
			now = s.clock.Now()
		}

		if !now.Before(nextTick) {
			nextTick = nextTick.Add(s.interval)
			if !nextTick.After(now) { // fell behind (a slow send): no burst
				nextTick = now.Add(s.interval)
			}
			p, ok := s.collectOne(ctx, now)
			if !ok {
				continue
			}
			if failing {
				if latest != nil {
					skipped++
				}
				latest = &p
				s.update(func(st *Status) { st.Skipped = skipped })
				continue
			}
			switch s.attempt(ctx, p) {
			case failed:
				failing, since, attempts, skipped = true, now, 1, 0
				latest, wait = &p, s.retry.Delay(0)
				retryAt = s.clock.Now().Add(wait) // after the failed send, however long it took
				s.update(func(st *Status) { st.Unreachable, st.Since, st.NextRetry = true, since, retryAt })
				s.log.Warn("metrics not delivered; keeping the latest sample and retrying",
					zap.String("error", s.Status().LastError), zap.Duration("retry_in", wait))
			}
			continue
		}

		if failing && !now.Before(retryAt) {
			switch s.attempt(ctx, *latest) {
			case delivered:
				endOutage(s.clock.Now(), "delivered")
			case refused:
				endOutage(s.clock.Now(), "refused")
			case failed:
				attempts++
				wait = s.retry.Delay(attempts - 1)
				retryAt = s.clock.Now().Add(wait)
				s.update(func(st *Status) { st.NextRetry = retryAt })
				s.log.Debug("metrics retry failed", zap.Int("attempt", attempts),
					zap.String("error", s.Status().LastError), zap.Duration("retry_in", wait))
			}
		}
	}
}

// collectOne takes a payload and checks it; a payload that fails is
// logged and dropped (sending it would only earn a 4xx or 500).
func (s *Sender) collectOne(ctx context.Context, now time.Time) (p Payload, ok bool) {
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("metrics collection panicked: %v", r)
			}
		}()
		p, err = s.collect(ctx)
		if err != nil {
			return fmt.Errorf("collect metrics: %w", err)
		}
		return Validate(p)
	}()
	if err != nil {
		if ctx.Err() != nil {
			return p, false
		}
		s.recordError(now, err, "metrics not collected")
		return p, false
	}
	return p, true
}

// attempt sends p once, unless a pause has begun; a send cut short by
// Pause counts as held, not as a failure.
func (s *Sender) attempt(ctx context.Context, p Payload) outcome {
	s.mu.Lock()
	if s.paused {
		s.mu.Unlock()
		return held
	}
	sendCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.inflight, s.cancelSend = done, cancel
	s.mu.Unlock()

	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("metrics send panicked: %v", r)
			}
		}()
		return s.send(sendCtx, p)
	}()
	cancel()
	now := s.clock.Now()

	s.mu.Lock()
	close(done)
	s.inflight, s.cancelSend = nil, nil
	cut := s.cutByPause
	s.cutByPause = false
	s.mu.Unlock()

	switch {
	case err == nil:
		s.update(func(st *Status) {
			st.LastSent, st.Sent, st.LastError, st.LastErrorAt = now, st.Sent+1, "", time.Time{}
		})
		return delivered
	case cut || ctx.Err() != nil:
		return held
	case isPermanent(err):
		s.recordError(now, err, "metrics refused by the backend")
		return refused
	default:
		s.update(func(st *Status) { st.LastError, st.LastErrorAt, st.Failures = err.Error(), now, st.Failures+1 })
		return failed
	}
}

// recordError keeps err in the status and logs it when it differs from
// the last one (the same refusal every interval would flood the log).
func (s *Sender) recordError(now time.Time, err error, msg string) {
	var repeat bool
	s.update(func(st *Status) {
		repeat = st.LastError == err.Error()
		st.LastError, st.LastErrorAt, st.Failures = err.Error(), now, st.Failures+1
	})
	if !repeat {
		s.log.Error(msg, zap.Error(err))
	}
}

func (s *Sender) update(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	st := s.status
	st.Paused, st.PausedUntil = s.paused, s.pausedUntil
	s.mu.Unlock()
	if s.onStatus != nil {
		s.onStatus(st)
	}
}
