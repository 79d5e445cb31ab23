// Package backoff is the one retry policy of the agent's backend traffic
// (the NannyAPI client's callers, the realtime stream, the metrics
// sender): delays that grow from an initial one up to a bound, optionally
// spread at random so that a fleet of agents cut off by one outage does
// not come back in step, for a bounded number of attempts.
package backoff

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
)

// Backoff is a bounded retry policy. The zero value waits the
// http_transport defaults (30 s doubling up to 30 min), without jitter,
// until the context ends.
type Backoff struct {
	// Initial is the first delay, Max the largest (defaults: the
	// http_transport defaults; Max is at least Initial).
	Initial time.Duration
	Max     time.Duration
	// Multiplier grows the delay after each failure (default 2).
	Multiplier float64
	// Jitter is the fraction of each delay drawn at random: the wait is
	// between (1−Jitter)·d and d, so it never exceeds the delay nor Max.
	// 0 is none; at most 1.
	Jitter float64
	// MaxAttempts bounds Retry's attempts (0: until the context ends).
	MaxAttempts int
	// Rand returns values in [0,1) for the jitter (default math/rand).
	Rand func() float64
	// Sleep waits d or until ctx ends (default Sleep); tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// OnRetry, when set, hears of each failed attempt before its wait
	// (attempt counts from 1).
	OnRetry func(attempt int, err error, wait time.Duration)
}

// FromConfig is the policy of the http_transport block:
// initial_retry_delay_sec doubling up to max_retry_delay_sec, each wait
// between half and all of its delay.
func FromConfig(h config.HTTPTransport) Backoff {
	return Backoff{
		Initial: time.Duration(h.InitialRetryDelaySec) * time.Second,
		Max:     time.Duration(h.MaxRetryDelaySec) * time.Second,
		Jitter:  0.5,
	}
}

// WithDefaults fills the zero fields.
func (b Backoff) WithDefaults() Backoff {
	d := config.Defaults().HTTPTransport
	if b.Initial <= 0 {
		b.Initial = time.Duration(d.InitialRetryDelaySec) * time.Second
	}
	if b.Max <= 0 {
		b.Max = max(time.Duration(d.MaxRetryDelaySec)*time.Second, b.Initial)
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Multiplier < 1 {
		b.Multiplier = 2
	}
	b.Jitter = min(max(b.Jitter, 0), 1)
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	if b.Sleep == nil {
		b.Sleep = Sleep
	}
	return b
}

// Delay is the wait after failed attempt n (from 0):
// Initial×Multiplierⁿ capped at Max, less a random part of at most
// Jitter of it.
func (b Backoff) Delay(n int) time.Duration {
	b = b.WithDefaults()
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(max(n, 0)))
	if d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		u := b.Rand()
		if u < 0 || u >= 1 || math.IsNaN(u) {
			u = 0
		}
		d -= d * b.Jitter * (1 - u)
	}
	return min(time.Duration(d), b.Max)
}

// Retry calls fn until it succeeds, fails with an error retryable does
// not accept (nil accepts every error), the attempts run out or ctx
// ends; it returns fn's last error (joined with ctx's when ctx ended the
// waiting).
func (b Backoff) Retry(ctx context.Context, retryable func(error) bool, fn func(ctx context.Context) error) error {
	b = b.WithDefaults()
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || (retryable != nil && !retryable(err)) {
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
