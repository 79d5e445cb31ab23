package openai

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{}, 0},
		{http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{http.Header{"Retry-After": {" 1.5 "}}, 1500 * time.Millisecond},
		{http.Header{"Retry-After": {"0"}}, 0},
		{http.Header{"Retry-After": {"-4"}}, 0},
		{http.Header{"Retry-After": {"1e300"}}, 0},
		{http.Header{"Retry-After": {"soon"}}, 0},
		{http.Header{"Retry-After": {now.Add(20 * time.Second).Format(http.TimeFormat)}}, 20 * time.Second},
		{http.Header{"Retry-After": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0},
		{http.Header{"Retry-After-Ms": {"250"}, "Retry-After": {"9"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"x"}, "Retry-After": {"9"}}, 9 * time.Second},
	}
	for _, c := range cases {
		require.Equal(t, c.want, retryAfter(c.h, now), "%v", c.h)
	}
}

func TestBackoffBounds(t *testing.T) {
	e, err := New(Config{BaseURL: "http://127.0.0.1/v1", Model: "m", RetryBase: 100 * time.Millisecond, RetryMax: time.Second, MaxRetryAfter: 5 * time.Second})
	require.NoError(t, err)
	for range 200 {
		for attempt, full := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
			full *= time.Millisecond
			w := e.backoff(attempt+1, 0)
			require.GreaterOrEqual(t, w, full/2)
			require.LessOrEqual(t, w, full)
		}
	}
	require.Equal(t, 2*time.Second, e.backoff(1, 2*time.Second))
	require.Equal(t, 5*time.Second, e.backoff(1, time.Hour), "Retry-After is capped")
	// Many attempts cannot overflow.
	require.LessOrEqual(t, e.backoff(1000, 0), time.Second)
}

func TestDefaults(t *testing.T) {
	e, err := New(Config{BaseURL: "http://127.0.0.1/v1", Model: "m"})
	require.NoError(t, err)
	require.Equal(t, DefaultTimeout, e.cfg.Timeout)
	require.Equal(t, 120*time.Second, e.cfg.Timeout)
	require.Equal(t, 4, e.cfg.MaxRetries)
	require.Equal(t, DefaultRetryBase, e.cfg.RetryBase)
	require.Equal(t, DefaultRetryMax, e.cfg.RetryMax)
	require.Equal(t, DefaultMaxRetryAfter, e.cfg.MaxRetryAfter)
}

func FuzzContent(f *testing.F) {
	for _, s := range []string{
		`{"choices":[{"message":{"role":"assistant","content":"{\"response_type\":\"resolution\"}"}}]}`,
		`{"choices":[{"message":{"content":[{"type":"text","text":"a"}]}}]}`,
		`{"choices":[{"message":{"content":null,"refusal":"no"}}]}`,
		`{"choices":[{"message":{"content":null},"finish_reason":7}]}`,
		`{"error":{"message":"x"}}`, `{"error":"x"}`, `{"error":7}`,
		`{"choices":null}`, `[]`, `null`, `"x"`, `<html>`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := Content(raw)
		if err != nil {
			require.Empty(t, got)
			require.NotEmpty(t, err.Error())
		}
	})
}
