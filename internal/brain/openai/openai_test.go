package openai_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/brain/openai"
	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	key      = "sk-test-Zq8vW3nT5kL1pR7yX2cV"
	resolved = `{"response_type":"resolution","root_cause":"the disk is full","resolution_plan":"1. free space","confidence":"High"}`
)

func inv() *brain.Investigation {
	return &brain.Investigation{Issue: "disk is full on /var", Limits: brain.Limits{MaxRounds: 8, RoundBudget: time.Minute}}
}

// retries collects what OnRetry was told.
type retries struct {
	mu   sync.Mutex
	list []openai.Retry
}

func (r *retries) add(x openai.Retry) { r.mu.Lock(); r.list = append(r.list, x); r.mu.Unlock() }
func (r *retries) get() []openai.Retry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]openai.Retry(nil), r.list...)
}

func engine(t *testing.T, cfg openai.Config) *openai.Engine {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "test-model"
	}
	e, err := openai.New(cfg)
	require.NoError(t, err)
	return e
}

func TestRequestShape(t *testing.T) {
	s := openaitest.New(t, openaitest.Reply(resolved), openaitest.Reply(resolved))
	s.Key = key
	temp := 0.2
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), APIKey: key, Temperature: &temp})
	require.Equal(t, "openai", e.Name())
	require.Equal(t, s.BaseURL()+"/chat/completions", e.Endpoint())

	got, err := e.Next(context.Background(), inv())
	require.NoError(t, err)
	require.Equal(t, resolved, got)

	r := s.Requests()[0]
	require.Equal(t, http.MethodPost, r.Method)
	require.Equal(t, openaitest.Path, r.URL, "nothing in the query string")
	require.Equal(t, "Bearer "+key, r.Header.Get("Authorization"))
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.True(t, strings.HasPrefix(r.Header.Get("User-Agent"), "nannyagent/"))
	require.NotContains(t, string(r.Body), key, "the key goes in the header only")
	require.Equal(t, "test-model", r.Model)
	require.Equal(t, 0.2, *r.Temperature)
	require.Empty(t, r.ResponseFormat, "response_format only in JSON mode")
	require.Len(t, r.Messages, 2)
	require.Equal(t, "system", r.Messages[0].Role)
	require.Contains(t, r.Messages[0].Content, "Reply with one JSON object only")
	require.Equal(t, "user", r.Messages[1].Role)
	require.Equal(t, "ISSUE DESCRIPTION:\ndisk is full on /var", r.Messages[1].Content)
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(r.Body, &raw))
	require.Equal(t, "false", string(raw["stream"]))

	// JSON mode, no key, no temperature.
	e = engine(t, openai.Config{BaseURL: s.BaseURL(), JSONMode: true})
	s.Key = ""
	_, err = e.Next(context.Background(), inv())
	require.NoError(t, err)
	r = s.Requests()[1]
	require.JSONEq(t, `{"type":"json_object"}`, string(r.ResponseFormat))
	require.Empty(t, r.Header.Get("Authorization"))
	require.Nil(t, r.Temperature)
}

func TestBaseURLForms(t *testing.T) {
	s := openaitest.New(t, openaitest.Reply(resolved), openaitest.Reply(resolved))
	for _, base := range []string{s.BaseURL() + "/", s.BaseURL() + "/chat/completions"} {
		e := engine(t, openai.Config{BaseURL: base})
		require.Equal(t, s.BaseURL()+"/chat/completions", e.Endpoint())
		_, err := e.Next(context.Background(), inv())
		require.NoError(t, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	hot := 2.5
	cases := []struct {
		cfg  openai.Config
		want string
	}{
		{openai.Config{Model: "m"}, "ai.base_url is empty"},
		{openai.Config{BaseURL: "127.0.0.1:11434/v1", Model: "m"}, "must be an http:// or https:// URL"},
		{openai.Config{BaseURL: "ftp://h/v1", Model: "m"}, "must be an http:// or https:// URL"},
		{openai.Config{BaseURL: "http://us er:hunter2@h/v1", Model: "m"}, "ai.base_url is not a URL"},
		{openai.Config{BaseURL: "http://user:hunter2@h/v1", Model: "m"}, "carries credentials"},
		{openai.Config{BaseURL: "http://h/v1?key=hunter2", Model: "m"}, "must not have a query"},
		{openai.Config{BaseURL: "http://h/v1"}, "ai.model is empty"},
		{openai.Config{BaseURL: "http://h/v1", Model: "m", APIKey: "hunter2\nX-Evil: 1"}, "control character at byte 8"},
		{openai.Config{BaseURL: "http://h/v1", Model: "m", Temperature: &hot}, "temperature 2.5 is out of range"},
	}
	for _, c := range cases {
		_, err := openai.New(c.cfg)
		require.ErrorContains(t, err, c.want)
		require.NotContains(t, err.Error(), "hunter2")
	}
}

func TestKeyRefused(t *testing.T) {
	s := openaitest.New(t)
	s.Key = "sk-the-right-one-000000"
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), APIKey: key})
	_, err := e.Next(context.Background(), inv())
	require.EqualError(t, err, "the endpoint "+e.Endpoint()+" refused the API key (HTTP 401: Incorrect API key provided: sk-*****X2cV. "+
		"You can find your API key at https://platform.openai.com/account/api-keys.): check the variable named by ai.api_key_env")
	require.Len(t, s.Requests(), 1, "not retried")

	e = engine(t, openai.Config{BaseURL: s.BaseURL()})
	_, err = e.Next(context.Background(), inv())
	require.ErrorContains(t, err, "wants an API key (HTTP 401: You didn't provide an API key.")
	require.ErrorContains(t, err, "set the variable named by ai.api_key_env")

	// A server that echoes the whole key: the error does not.
	s2 := openaitest.New(t, openaitest.Error(http.StatusForbidden, "key "+key+" is revoked", "invalid_request_error", ""))
	e = engine(t, openai.Config{BaseURL: s2.BaseURL(), APIKey: key})
	_, err = e.Next(context.Background(), inv())
	require.ErrorContains(t, err, "refused the API key (HTTP 403: key [api key] is revoked)")
	require.NotContains(t, err.Error(), key)
}

func TestNotFound(t *testing.T) {
	s := openaitest.New(t)
	s.Models = []string{"llama3.1:8b"}
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), Model: "llama3"})
	_, err := e.Next(context.Background(), inv())
	require.ErrorContains(t, err, "answered 404 Not Found: The model `llama3` does not exist or you do not have access to it.")
	require.ErrorContains(t, err, `check ai.model ("llama3")`)

	// The base URL without /v1.
	e = engine(t, openai.Config{BaseURL: s.URL, Model: "llama3.1:8b"})
	_, err = e.Next(context.Background(), inv())
	require.ErrorContains(t, err, "answered 404 Not Found: Invalid URL (POST /chat/completions)")
	require.ErrorContains(t, err, "most servers want it to end in /v1")
	require.Len(t, s.Requests(), 2)
}

func TestOtherClientErrorQuotesTheMessage(t *testing.T) {
	s := openaitest.New(t, openaitest.Error(400, "This model's maximum context length is 8192 tokens.", "invalid_request_error", "context_length_exceeded"),
		openaitest.Status(422, `{"detail":"unprocessable"}`), openaitest.Status(400, `{"error":"model 'x' not found, try pulling it first"}`))
	e := engine(t, openai.Config{BaseURL: s.BaseURL()})
	for _, want := range []string{
		"rejected the request (HTTP 400: This model's maximum context length is 8192 tokens.)",
		"rejected the request (HTTP 422: unprocessable)",
		"rejected the request (HTTP 400: model 'x' not found, try pulling it first)",
	} {
		_, err := e.Next(context.Background(), inv())
		require.ErrorContains(t, err, want)
	}
	require.Len(t, s.Requests(), 3, "4xx is not retried")
}

func TestRateLimitedThenSuccess(t *testing.T) {
	s := openaitest.New(t, openaitest.RateLimited("7"), openaitest.Reply(resolved))
	var r retries
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), OnRetry: r.add, MaxRetryAfter: 20 * time.Millisecond})
	got, err := e.Next(context.Background(), inv())
	require.NoError(t, err)
	require.Equal(t, resolved, got)
	require.Equal(t, []openai.Retry{{Attempt: 1, Wait: 20 * time.Millisecond, RetryAfter: 7 * time.Second,
		Reason: "HTTP 429: Rate limit reached for requests"}}, r.get())
	require.Len(t, s.Requests(), 2)
	// Both attempts sent the same request.
	require.Equal(t, s.Requests()[0].Body, s.Requests()[1].Body)
}

func TestRetryAfterHonoured(t *testing.T) {
	s := openaitest.New(t, openaitest.RateLimited("0.05"), openaitest.Reply(resolved))
	var r retries
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), OnRetry: r.add})
	start := time.Now()
	_, err := e.Next(context.Background(), inv())
	require.NoError(t, err)
	require.Equal(t, 50*time.Millisecond, r.get()[0].Wait)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "the wait happened")
}

func TestServerErrorsThenSuccess(t *testing.T) {
	s := openaitest.New(t,
		openaitest.Status(500, `{"error":{"message":"internal error","type":"server_error"}}`),
		openaitest.Status(502, "<html>bad gateway</html>"),
		openaitest.Error(503, "overloaded", "server_error", ""),
		openaitest.Reply(resolved))
	var r retries
	base := 8 * time.Millisecond
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), OnRetry: r.add, RetryBase: base, RetryMax: 20 * time.Millisecond})
	got, err := e.Next(context.Background(), inv())
	require.NoError(t, err)
	require.Equal(t, resolved, got)
	rs := r.get()
	require.Len(t, rs, 3)
	require.Equal(t, `HTTP 500: internal error`, rs[0].Reason)
	require.Equal(t, `HTTP 502: answer starts "<html>bad gateway</html>"`, rs[1].Reason)
	require.Equal(t, `HTTP 503: overloaded`, rs[2].Reason)
	// Exponential with jitter in the upper half, capped at RetryMax.
	for i, want := range []time.Duration{base, 2 * base, 20 * time.Millisecond} {
		require.Equal(t, i+1, rs[i].Attempt)
		require.GreaterOrEqual(t, rs[i].Wait, want/2, "retry %d", i+1)
		require.LessOrEqual(t, rs[i].Wait, want, "retry %d", i+1)
	}
}

func TestServerErrorsExhaustRetries(t *testing.T) {
	var steps []openaitest.Step
	for range 3 {
		steps = append(steps, openaitest.Error(500, "The server had an error while processing your request.", "server_error", ""))
	}
	s := openaitest.New(t, steps...)
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), MaxRetries: 2, RetryBase: time.Millisecond})
	_, err := e.Next(context.Background(), inv())
	require.EqualError(t, err, "the endpoint "+e.Endpoint()+" failed: HTTP 500: The server had an error while processing your request. (3 attempts)")
	require.Len(t, s.Requests(), 3)

	// Negative MaxRetries: one attempt.
	s = openaitest.New(t, openaitest.Status(500, ""))
	e = engine(t, openai.Config{BaseURL: s.BaseURL(), MaxRetries: -1})
	_, err = e.Next(context.Background(), inv())
	require.EqualError(t, err, "the endpoint "+e.Endpoint()+" failed: HTTP 500")
}

func TestRetryNeverPastTheDeadline(t *testing.T) {
	s := openaitest.New(t, openaitest.RateLimited("30"))
	var r retries
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), OnRetry: r.add})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := e.Next(ctx, inv())
	require.ErrorContains(t, err, "failed: HTTP 429: Rate limit reached for requests; not retried: the investigation's time ends in")
	require.ErrorContains(t, err, "before the next attempt (in 30s)")
	require.Less(t, time.Since(start), 5*time.Second, "it did not wait for the deadline")
	require.Empty(t, r.get())
	require.Len(t, s.Requests(), 1)
}

func TestCancelDuringBackoff(t *testing.T) {
	s := openaitest.New(t, openaitest.RateLimited("30"))
	ctx, cancel := context.WithCancel(context.Background())
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), OnRetry: func(openai.Retry) { cancel() }})
	_, err := e.Next(ctx, inv())
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "while waiting to retry after: HTTP 429")
}

func TestRequestTimeout(t *testing.T) {
	for _, st := range []openaitest.Step{openaitest.Hang(), openaitest.Stall()} {
		s := openaitest.New(t, st)
		e := engine(t, openai.Config{BaseURL: s.BaseURL(), Timeout: 150 * time.Millisecond})
		_, err := e.Next(context.Background(), inv())
		require.EqualError(t, err, "the model endpoint "+e.Endpoint()+" did not answer within 150ms (the request timeout): the model may be overloaded or too slow for this prompt")
		require.Len(t, s.Requests(), 1, "a timeout is not retried")
	}
}

func TestCancelledWhileWaiting(t *testing.T) {
	s := openaitest.New(t, openaitest.Hang())
	e := engine(t, openai.Config{BaseURL: s.BaseURL()})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-s.Arrived(); cancel() }()
	_, err := e.Next(ctx, inv())
	require.ErrorIs(t, err, context.Canceled)
}

func TestUnreachable(t *testing.T) {
	base := openaitest.Closed(t)
	var r retries
	e := engine(t, openai.Config{BaseURL: base, OnRetry: r.add})
	_, err := e.Next(context.Background(), inv())
	require.EqualError(t, err, "cannot reach the model endpoint "+base+"/chat/completions: connection refused — is the server running? check ai.base_url")
	require.Empty(t, r.get(), "a refused connection is not retried")
}

func TestNameDoesNotResolve(t *testing.T) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: "llm.example.invalid", IsNotFound: true}}
	}}
	e := engine(t, openai.Config{BaseURL: "http://llm.example.invalid/v1", HTTPClient: &http.Client{Transport: tr}})
	_, err := e.Next(context.Background(), inv())
	require.EqualError(t, err, `cannot reach the model endpoint http://llm.example.invalid/v1/chat/completions: the host name "llm.example.invalid" does not resolve — check ai.base_url`)
}

func TestDroppedConnectionRetried(t *testing.T) {
	s := openaitest.New(t, openaitest.Reply(resolved))
	calls := 0
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		calls++
		if calls == 1 {
			return nil, &net.OpError{Op: "read", Net: network, Err: errors.New("connection reset by peer")}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	var r retries
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), HTTPClient: &http.Client{Transport: tr}, OnRetry: r.add, RetryBase: time.Millisecond})
	got, err := e.Next(context.Background(), inv())
	require.NoError(t, err)
	require.Equal(t, resolved, got)
	require.Len(t, r.get(), 1)
	require.Contains(t, r.get()[0].Reason, "connection reset by peer")
}

func TestUnreadableAnswers(t *testing.T) {
	big := strings.Repeat("x", 10<<10)
	cases := []struct {
		body, want string
	}{
		{"<html><body>502 Bad Gateway</body></html>", `is not JSON: is ai.base_url an OpenAI-compatible API? (answer starts "<html><body>502 Bad Gateway</body></html>")`},
		{`{"object":"list","data":[]}`, `has no choices (answer starts "{\"object\":\"list\",\"data\":[]}")`},
		{`{"choices":[]}`, "has no choices"},
		{`{"choices":{"message":"x"}}`, "has no choices"},
		{`{"choices":[{"index":0}]}`, "has no message in choices[0]"},
		{`{"choices":[{"message":{"content":null,"tool_calls":[{}]},"finish_reason":"tool_calls"}]}`, `has no text content (finish_reason "tool_calls")`},
		{`{"choices":[{"message":{"content":null,"refusal":"I can't help with that."}}]}`, "is a refusal by the model: I can't help with that."},
		{`{"choices":[{"message":{"content":42}}]}`, "has a content that is not a string"},
		{`{"error":{"message":"model is loading"}}`, "is an error: model is loading"},
		{`"` + big + `"`, "is not a JSON object"},
	}
	for _, c := range cases {
		s := openaitest.New(t, openaitest.Malformed(c.body))
		e := engine(t, openai.Config{BaseURL: s.BaseURL()})
		_, err := e.Next(context.Background(), inv())
		require.ErrorContains(t, err, "the answer of "+e.Endpoint()+" "+c.want)
		require.Less(t, len(err.Error()), 400, "errors quote the start of a body only")
		require.Len(t, s.Requests(), 1, "not retried")
	}
}

func TestContentParts(t *testing.T) {
	got, err := openai.Content([]byte(`{"choices":[{"message":{"content":[{"type":"text","text":"{\"a\":"},{"type":"image_url"},{"type":"text","text":"1}"}]}}]}`))
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, got)
}

func TestAnswerTooLarge(t *testing.T) {
	s := openaitest.New(t, openaitest.Reply(strings.Repeat("y", openai.MaxResponseBytes)))
	e := engine(t, openai.Config{BaseURL: s.BaseURL()})
	_, err := e.Next(context.Background(), inv())
	require.EqualError(t, err, "the answer of "+e.Endpoint()+" is over the 4 MiB limit: not a chat completion")
}

// The key appears in no error and no log line, whatever fails.
func TestKeyNeverLoggedNorInErrors(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s := openaitest.New(t,
		openaitest.Error(500, "upstream said: Bearer "+key, "server_error", ""),
		openaitest.Status(401, `{"error":"bad key `+key+`"}`),
		openaitest.Malformed("oops "+key),
		openaitest.Hang())
	var errs []string
	e := engine(t, openai.Config{BaseURL: s.BaseURL(), APIKey: key, Log: zap.New(core), RetryBase: time.Millisecond,
		Timeout: 100 * time.Millisecond, OnRetry: func(r openai.Retry) { errs = append(errs, r.Reason) }})
	for range 3 {
		_, err := e.Next(context.Background(), inv())
		require.Error(t, err)
		errs = append(errs, err.Error())
	}
	closed := engine(t, openai.Config{BaseURL: openaitest.Closed(t), APIKey: key, Log: zap.New(core)})
	_, err := closed.Next(context.Background(), inv())
	require.Error(t, err)
	errs = append(errs, err.Error())
	require.Len(t, errs, 5)
	require.Contains(t, errs[0], "[api key]")
	for _, m := range errs {
		require.NotContains(t, m, key)
	}
	require.NotZero(t, logs.Len())
	for _, entry := range logs.All() {
		b, err := json.Marshal(entry.ContextMap())
		require.NoError(t, err)
		require.NotContains(t, entry.Message+string(b), key)
	}
}
