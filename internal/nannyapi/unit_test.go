package nannyapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

func TestDecodeError(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   Error
	}{
		{400, `{"error":"unknown action"}` + "\n", Error{Op: "x", Status: 400, Message: "unknown action"}},
		{400, `{"agent_id":"brppshbc1nycil4","error":"device code already used"}`, Error{Op: "x", Status: 400, Message: "device code already used", AgentID: "brppshbc1nycil4"}},
		{401, `{"error":"invalid_token","error_description":"gone"}`, Error{Op: "x", Status: 401, Message: "invalid_token", Description: "gone"}},
		{404, `{"data":{},"message":"The requested resource wasn't found.","status":404}`, Error{Op: "x", Status: 404, Message: "The requested resource wasn't found.", Envelope: true, Data: json.RawMessage(`{}`)}},
		{502, `<html>bad gateway</html>`, Error{Op: "x", Status: 502, Message: "Bad Gateway: <html>bad gateway</html>"}},
		{503, ``, Error{Op: "x", Status: 503, Message: "Service Unavailable"}},
		{500, `{"error":{"message":"nested"}}`, Error{Op: "x", Status: 500, Message: `Internal Server Error: {"error":{"message":"nested"}}`}},
	} {
		got := decodeError("x", tc.status, []byte(tc.body))
		tc.want.Body = snippet([]byte(tc.body))
		require.Equal(t, &tc.want, got, tc.body)
	}
	e := decodeError("x", 400, []byte(`{"error":"unknown action"}`))
	require.True(t, e.IsUnknownAction())
	require.False(t, e.IsUnauthorized())
	wrapped := errors.Join(errors.New("context"), e)
	require.True(t, IsUnknownAction(wrapped))
	require.False(t, IsUnknownAction(errors.New("unknown action")))
	long := decodeError("x", 500, []byte(strings.Repeat("é", 1000)))
	require.True(t, utf8.ValidString(long.Body))
	require.LessOrEqual(t, len(long.Body), snippetLen+len("…"))
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&TransportError{Op: "x", Err: errors.New("refused")}, true},
		{&Error{Status: 500}, true},
		{&Error{Status: 503}, true},
		{&Error{Status: 429}, true},
		{&Error{Status: 408}, true},
		{&Error{Status: 400}, false},
		{&Error{Status: 401}, false},
		{&Error{Status: 404}, false},
		{context.Canceled, false},
		{errors.Join(&TransportError{Op: "x", Err: errors.New("x")}, context.Canceled), false},
		{errors.New("bad input"), false},
	} {
		require.Equal(t, tc.want, Retryable(tc.err), "%v", tc.err)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	var got []time.Duration
	for n := range 6 {
		got = append(got, b.Delay(n))
	}
	require.Equal(t, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}, got)
	require.Equal(t, 10*time.Second, b.Delay(1000), "no overflow")

	low := Backoff{Initial: time.Second, Max: 10 * time.Second, Jitter: 0.25, Rand: func() float64 { return 0 }}
	require.Equal(t, 750*time.Millisecond, low.Delay(0))
	high := Backoff{Initial: time.Second, Max: 10 * time.Second, Jitter: 0.25, Rand: func() float64 { return 0.999999 }}
	require.InDelta(t, float64(time.Second), float64(high.Delay(0)), float64(time.Millisecond))
	require.LessOrEqual(t, high.Delay(5), 10*time.Second, "jitter never exceeds Max")
	require.Equal(t, 7500*time.Millisecond, low.Delay(5))

	cfg := BackoffFromConfig(config.Defaults().HTTPTransport)
	cfg.Rand = func() float64 { return 0.5 }
	require.Equal(t, 22500*time.Millisecond, cfg.Delay(0), "between half and all of 30 s")
	require.Equal(t, 1350*time.Second, cfg.Delay(10))
}

func TestBackoffRetry(t *testing.T) {
	var slept []time.Duration
	var heard []int
	b := Backoff{
		Initial: time.Second, Max: 4 * time.Second, Rand: func() float64 { return 0.5 },
		Sleep:   func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil },
		OnRetry: func(n int, _ error, _ time.Duration) { heard = append(heard, n) },
	}
	calls := 0
	err := Retry(context.Background(), b, func(context.Context) error {
		calls++
		if calls < 5 {
			return &Error{Status: 503}
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 5, calls)
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}, slept)
	require.Equal(t, []int{1, 2, 3, 4}, heard)

	calls = 0
	err = Retry(context.Background(), b, func(context.Context) error { calls++; return &Error{Status: 400, Message: "nope"} })
	require.Equal(t, 1, calls)
	require.Equal(t, "nope", err.(*Error).Message)

	calls = 0
	b.MaxAttempts = 3
	err = Retry(context.Background(), b, func(context.Context) error { calls++; return &TransportError{Op: "x", Err: errors.New("refused")} })
	require.Equal(t, 3, calls)
	var te *TransportError
	require.ErrorAs(t, err, &te)

	// The context ends during a wait: the last error and ctx's.
	ctx, cancel := context.WithCancel(context.Background())
	b = Backoff{Initial: time.Hour}
	calls = 0
	err = Retry(ctx, b, func(context.Context) error {
		calls++
		cancel()
		return &Error{Status: 500}
	})
	require.Equal(t, 1, calls)
	require.ErrorIs(t, err, context.Canceled)
	e, ok := AsError(err)
	require.True(t, ok)
	require.Equal(t, 500, e.Status)
}

func TestBackoffAgainstServer(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	srv.Inject("ingest-metrics", nannyapitest.Fault{Status: 503, Times: 2})
	var waits int
	b := Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxAttempts: 5,
		OnRetry: func(int, error, time.Duration) { waits++ }}
	require.NoError(t, Retry(testCtx(t), b, func(ctx context.Context) error { return c.IngestMetrics(ctx, sampleMetrics()) }))
	require.Equal(t, 2, waits)
	require.Equal(t, 3, srv.Count("ingest-metrics"))
	a, _ := srv.Agent(reg.AgentID)
	require.Equal(t, 1, a.MetricsCount)
}

func TestParseToken(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	cl, err := ParseToken(reg.AccessToken)
	require.NoError(t, err)
	require.Equal(t, Claims{CollectionID: AgentsCollectionID, ID: reg.AgentID, Type: "auth", Expires: cl.Expires}, cl)
	for _, bad := range []string{
		"", "nsk_abc", "a.b", "a.!!!.c",
		"x." + base64.RawURLEncoding.EncodeToString([]byte(`{"id":"a"}`)) + ".y",
		"x." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1e300}`)) + ".y",
		"x." + base64.RawURLEncoding.EncodeToString([]byte(`[1]`)) + ".y",
	} {
		_, err := ParseToken(bad)
		require.Error(t, err, bad)
	}
	padded := "x." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1700000000,"id":"a"}`)) + ".y"
	cl, err = ParseToken(padded)
	require.NoError(t, err)
	require.Equal(t, time.Unix(1700000000, 0).UTC(), cl.Expires)
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{
		"", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDB9.sig",
		"x." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":-1}`)) + ".y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseToken(s)
		if err == nil && c.Expires.Before(time.Unix(0, 0)) {
			t.Fatalf("accepted an expiry before 1970: %v", c.Expires)
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	for _, s := range []string{
		`{"error":"unknown action"}`, `{"data":{},"message":"m","status":500}`, `{"error":1}`, `<html>`, ``,
		`{"agent_id":"a","error":"device code already used"}`, "\xff\xfe",
	} {
		f.Add(400, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := decodeError("op", status, body)
		if e.Status != status || e.Op != "op" {
			t.Fatalf("lost status or op: %+v", e)
		}
		if len(e.Body) > snippetLen+len("…") {
			t.Fatalf("body snippet of %d bytes", len(e.Body))
		}
		_ = e.Error()
	})
}

func FuzzRecord(f *testing.F) {
	for _, s := range []string{
		`{"agent_id":"a","collectionName":"investigations","completed_at":"","id":"x","initiated_at":"2026-11-26 00:51:01.776Z","metadata":{"initiated_by":"user"}}`,
		`{"collectionName":"patch_operations"}`, `{"initiated_at":"nope"}`, `[]`, `{"metadata":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r InvestigationRecord
		if DecodeRecord(b, CollectionInvestigations, &r) == nil {
			_ = r.InitiatedBy()
		}
	})
}

// BenchmarkIngestMetrics is one metrics post through the client to the
// test server: the cost a soak test of 10 000 posts pays per post.
func BenchmarkIngestMetrics(b *testing.B) {
	srv := nannyapitest.New(b, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c, err := New(Options{BaseURL: srv.URL, Tokens: StaticToken(reg.AccessToken)})
	if err != nil {
		b.Fatal(err)
	}
	m := sampleMetrics()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.IngestMetrics(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}
