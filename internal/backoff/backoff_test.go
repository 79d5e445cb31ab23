package backoff

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/stretchr/testify/require"
)

func TestDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	var got []time.Duration
	for n := range 6 {
		got = append(got, b.Delay(n))
	}
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}, got)
	require.Equal(t, 10*time.Second, b.Delay(1<<30), "no overflow")
	require.Equal(t, time.Second, b.Delay(-3), "a negative attempt is the first")

	three := Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 3}
	require.Equal(t, 9*time.Second, three.Delay(2))

	for _, tc := range []struct {
		u    float64
		want time.Duration
	}{{0, 5 * time.Second}, {0.5, 7500 * time.Millisecond}, {math.NaN(), 5 * time.Second}, {2, 5 * time.Second}, {-1, 5 * time.Second}} {
		j := Backoff{Initial: 10 * time.Second, Max: time.Minute, Jitter: 0.5, Rand: func() float64 { return tc.u }}
		require.Equal(t, tc.want, j.Delay(0), "u=%v", tc.u)
	}
	hi := Backoff{Initial: 10 * time.Second, Max: 10 * time.Second, Jitter: 1, Rand: func() float64 { return 0.999999 }}
	require.LessOrEqual(t, hi.Delay(5), 10*time.Second, "never above Max")
	over := Backoff{Initial: time.Second, Jitter: 7, Rand: func() float64 { return 0 }}
	require.Equal(t, time.Duration(0), over.Delay(0), "Jitter is at most 1")

	d := config.Defaults().HTTPTransport
	require.Equal(t, Backoff{Initial: 30 * time.Second, Max: 1800 * time.Second, Jitter: 0.5}, FromConfig(d))
	require.Equal(t, 30*time.Second, Backoff{}.Delay(0), "the zero value waits the http_transport defaults")
	require.Equal(t, 1800*time.Second, Backoff{}.Delay(100))
	require.Equal(t, time.Hour, Backoff{Initial: time.Hour}.Delay(3), "Max is at least Initial")
}

func TestRetry(t *testing.T) {
	var slept []time.Duration
	var heard []int
	b := Backoff{
		Initial: time.Second, Max: 4 * time.Second,
		Sleep:   func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil },
		OnRetry: func(n int, _ error, _ time.Duration) { heard = append(heard, n) },
	}
	transient, fatal := errors.New("transient"), errors.New("fatal")
	retryable := func(err error) bool { return errors.Is(err, transient) }
	calls := 0
	require.NoError(t, b.Retry(context.Background(), retryable, func(context.Context) error {
		calls++
		if calls < 5 {
			return transient
		}
		return nil
	}))
	require.Equal(t, 5, calls)
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}, slept)
	require.Equal(t, []int{1, 2, 3, 4}, heard)

	calls = 0
	require.ErrorIs(t, b.Retry(context.Background(), retryable, func(context.Context) error { calls++; return fatal }), fatal)
	require.Equal(t, 1, calls)

	calls = 0
	b.MaxAttempts = 3
	require.ErrorIs(t, b.Retry(context.Background(), nil, func(context.Context) error { calls++; return fatal }), fatal)
	require.Equal(t, 3, calls, "nil retries every error, up to MaxAttempts")

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err := Backoff{Initial: time.Hour}.Retry(ctx, nil, func(context.Context) error { calls++; cancel(); return transient })
	require.Equal(t, 1, calls)
	require.ErrorIs(t, err, transient)
	require.ErrorIs(t, err, context.Canceled)
}

func TestSleep(t *testing.T) {
	require.NoError(t, Sleep(context.Background(), time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, Sleep(ctx, time.Hour), context.Canceled)
}
