package nannyapi

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
)

// Backoff is a bounded retry policy: delays grow from Initial by
// Multiplier up to Max, each spread by ±Jitter so that many agents do
// not retry in step, for at most MaxAttempts attempts (0: until the
// context ends).
type Backoff struct {
	Initial     time.Duration
	Max         time.Duration
	Multiplier  float64 // default 2
	Jitter      float64 // fraction, 0–1; default 0.2
	MaxAttempts int
	// Rand returns values in [0,1) for the jitter (default math/rand).
	Rand func() float64
	// Sleep waits d or until ctx ends (default a timer); tests replace
	// it to run retries without waiting.
	Sleep func(ctx context.Context, d time.Duration) error
	// OnRetry, when set, hears of each failed attempt before its wait
	// (attempt counts from 1).
	OnRetry func(attempt int, err error, wait time.Duration)
}

// BackoffFromConfig is the policy of the http_transport block:
// initial_retry_delay_sec, max_retry_delay_sec, doubling, 20 % jitter,
// unbounded attempts.
func BackoffFromConfig(h config.HTTPTransport) Backoff {
	return Backoff{
		Initial: time.Duration(h.InitialRetryDelaySec) * time.Second,
		Max:     time.Duration(h.MaxRetryDelaySec) * time.Second,
	}
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Multiplier < 1 {
		b.Multiplier = 2
	}
	if b.Jitter <= 0 || b.Jitter > 1 {
		b.Jitter = 0.2
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	if b.Sleep == nil {
		b.Sleep = Sleep
	}
	return b
}

// Delay is the wait after failed attempt n (from 0): Initial×Multiplierⁿ
// capped at Max, then spread by ±Jitter and capped at Max again.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(max(n, 0)))
	if d > float64(b.Max) || math.IsInf(d, 0) {
		d = float64(b.Max)
	}
	d *= 1 + b.Jitter*(2*b.Rand()-1)
	return min(time.Duration(d), b.Max)
}

// Retry calls fn until it succeeds, fails with an error that is not
// Retryable, the attempts run out or ctx ends; it returns fn's last
// error (joined with ctx's when ctx ended the waiting).
func (b Backoff) Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	b = b.withDefaults()
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || !Retryable(err) {
			return err
		}
		if b.MaxAttempts > 0 && attempt >= b.MaxAttempts {
			return err
		}
		wait := b.Delay(attempt - 1)
		if b.OnRetry != nil {
			b.OnRetry(attempt, err, wait)
		}
		if serr := b.Sleep(ctx, wait); serr != nil {
			return errors.Join(err, serr)
		}
	}
}

// Sleep waits d, or returns ctx's error when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
