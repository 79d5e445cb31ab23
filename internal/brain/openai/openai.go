// Package openai is the reasoning engine that asks any OpenAI-compatible
// chat-completions endpoint (OpenAI, Ollama, vLLM, llama.cpp server, a
// TensorZero gateway): the agent's own system prompt (SystemPrompt), then
// the investigation as chat messages (brain.Conversation), and the
// model's reply text back to the loop.
//
// Failures say what to check: an endpoint that cannot be reached, a key
// it refuses, a model or path it does not know. Rate limits and server
// errors are retried with bounded backoff that never outlasts the
// investigation. The API key goes only into the Authorization header:
// never into a URL, an error or a log line.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/backoff"
	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/version"
	"go.uber.org/zap"
)

// Defaults of Config.
const (
	DefaultTimeout    = 120 * time.Second
	DefaultMaxRetries = 4
	DefaultRetryBase  = time.Second
	DefaultRetryMax   = 30 * time.Second
	// DefaultMaxRetryAfter bounds how long a Retry-After header can make
	// the engine wait before one retry.
	DefaultMaxRetryAfter = 60 * time.Second
	// MaxResponseBytes bounds the body read of an answer: a chat reply
	// in this protocol is a few kilobytes.
	MaxResponseBytes = 4 << 20
	// quoteBytes is how much of an endpoint's body an error quotes.
	quoteBytes = 200
)

// Config configures the engine. BaseURL and Model are required.
type Config struct {
	// BaseURL is the API root, e.g. http://127.0.0.1:11434/v1 (Ollama) or
	// https://api.openai.com/v1; requests go to {BaseURL}/chat/completions.
	BaseURL string
	Model   string
	// APIKey is sent as a bearer token; empty sends none (local servers).
	// Read it with KeyFromEnv or KeyFromFile, never from argv.
	APIKey string
	// Timeout bounds one request, the answer's body included.
	Timeout time.Duration
	// MaxRetries is how many times a rate-limited (429), timed-out (408)
	// or failed (5xx) request, or a dropped connection, is tried again;
	// 0 means DefaultMaxRetries, negative means never.
	MaxRetries int
	// RetryBase and RetryMax bound the exponential backoff between
	// retries (doubled each time from RetryBase, at most RetryMax, with
	// jitter); MaxRetryAfter bounds a server's Retry-After.
	RetryBase     time.Duration
	RetryMax      time.Duration
	MaxRetryAfter time.Duration
	// Temperature is sent when set.
	Temperature *float64
	// JSONMode asks for response_format {"type":"json_object"}: servers
	// that support it then only emit JSON. Off by default because some
	// servers reject the field.
	JSONMode bool
	// HTTPClient sends the requests; nil means a client with the default
	// transport (proxies from the environment).
	HTTPClient *http.Client
	// OnRetry, when set, is told before each wait for a retry (progress
	// display).
	OnRetry func(Retry)
	Log     *zap.Logger
}

// Retry describes one retry about to happen.
type Retry struct {
	// Attempt is the attempt that failed, from 1.
	Attempt int
	// Wait is how long the engine waits before the next attempt.
	Wait time.Duration
	// Reason is what failed ("HTTP 429: Rate limit reached").
	Reason string
	// RetryAfter is the wait the server asked for, zero when it did not.
	RetryAfter time.Duration
}

// Engine is the OpenAI-compatible engine.
type Engine struct {
	cfg      Config
	endpoint string
	// shown is the endpoint as errors and logs show it (no user info).
	shown  string
	client *http.Client
	log    *zap.Logger
}

// New checks cfg and returns the engine. It does not contact the
// endpoint.
func New(cfg Config) (*Engine, error) {
	if strings.TrimSpace(cfg.BaseURL) == "" {
		return nil, errors.New("openai engine: ai.base_url is empty: give the API root, e.g. http://127.0.0.1:11434/v1")
	}
	base := strings.TrimSpace(cfg.BaseURL)
	if !strings.Contains(base, "://") {
		return nil, errors.New("openai engine: ai.base_url must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:11434/v1")
	}
	u, err := url.Parse(base)
	if err != nil {
		// The parse error quotes the URL, which may hold credentials.
		return nil, errors.New("openai engine: ai.base_url is not a URL: give the API root, e.g. http://127.0.0.1:11434/v1")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("openai engine: ai.base_url %q must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:11434/v1", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("openai engine: ai.base_url %s carries credentials: put the key in the variable named by ai.api_key_env or in a key file instead", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("openai engine: ai.base_url must not have a query or fragment: give the API root, and the key in the variable named by ai.api_key_env")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	// A base URL copied with the operation still on it works as meant.
	if !strings.HasSuffix(u.Path, "/chat/completions") {
		u.Path += "/chat/completions"
	}
	if strings.TrimSpace(cfg.Model) == "" {
		return nil, errors.New("openai engine: ai.model is empty: name the model the endpoint serves (e.g. llama3.1:8b for Ollama, gpt-4o-mini for OpenAI)")
	}
	if err := checkKey(cfg.APIKey); err != nil {
		return nil, fmt.Errorf("openai engine: %w", err)
	}
	if cfg.Temperature != nil && (*cfg.Temperature < 0 || *cfg.Temperature > 2) {
		return nil, fmt.Errorf("openai engine: temperature %g is out of range (0..2)", *cfg.Temperature)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.MaxRetries == 0:
		cfg.MaxRetries = DefaultMaxRetries
	case cfg.MaxRetries < 0:
		cfg.MaxRetries = 0
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = cfg.RetryBase
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	e := &Engine{cfg: cfg, endpoint: u.String(), shown: u.Redacted(), client: cfg.HTTPClient, log: cfg.Log}
	if e.client == nil {
		e.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	if cfg.APIKey != "" && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		e.log.Warn("the API key is sent over plain http to a remote host; use https", zap.String("endpoint", e.shown))
	}
	return e, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Name is the engine's name in reports and selection.
func (e *Engine) Name() string { return "openai" }

// Endpoint is the chat-completions URL requests go to.
func (e *Engine) Endpoint() string { return e.shown }

// Model is the model asked.
func (e *Engine) Model() string { return e.cfg.Model }

// request is the chat-completions request body.
type request struct {
	Model          string          `json:"model"`
	Messages       []brain.Message `json:"messages"`
	Temperature    *float64        `json:"temperature,omitempty"`
	ResponseFormat *responseFormat `json:"response_format,omitempty"`
	Stream         bool            `json:"stream"`
}

type responseFormat struct {
	Type string `json:"type"`
}

// Messages are what Next sends for inv: the system prompt, then the
// conversation.
func Messages(inv *brain.Investigation, now time.Time) []brain.Message {
	return append([]brain.Message{{Role: "system", Content: SystemPrompt(inv, now)}}, brain.Conversation(inv)...)
}

// Next asks the model for its next reply and returns its text.
func (e *Engine) Next(ctx context.Context, inv *brain.Investigation) (string, error) {
	req := request{Model: e.cfg.Model, Messages: Messages(inv, time.Now()), Temperature: e.cfg.Temperature}
	if e.cfg.JSONMode {
		req.ResponseFormat = &responseFormat{Type: "json_object"}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("encode the request: %w", err)
	}
	for attempt := 1; ; attempt++ {
		content, f := e.once(ctx, body, attempt)
		if f == nil {
			return content, nil
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("asking %s: %w", e.shown, context.Cause(ctx))
		}
		if !f.retry || attempt > e.cfg.MaxRetries {
			if f.retry && attempt > 1 {
				return "", fmt.Errorf("%w (%d attempts)", f.err, attempt)
			}
			return "", f.err
		}
		wait := e.backoff(attempt, f.retryAfter)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return "", fmt.Errorf("%w; not retried: the investigation's time ends in %s, before the next attempt (in %s)",
				f.err, time.Until(dl).Round(time.Millisecond), wait.Round(time.Millisecond))
		}
		e.log.Info("retrying the model endpoint", zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.String("reason", f.reason))
		if e.cfg.OnRetry != nil {
			e.cfg.OnRetry(Retry{Attempt: attempt, Wait: wait, Reason: f.reason, RetryAfter: f.retryAfter})
		}
		if backoff.Sleep(ctx, wait) != nil {
			return "", fmt.Errorf("asking %s: %w (while waiting to retry after: %s)", e.shown, context.Cause(ctx), f.reason)
		}
	}
}

// backoff is the wait before the attempt after attempt: the server's
// Retry-After when it gave one (bounded), else the agent's one retry
// policy from RetryBase doubled per attempt up to RetryMax, the upper
// half jittered so that agents limited together do not retry together.
func (e *Engine) backoff(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, e.cfg.MaxRetryAfter)
	}
	return backoff.Backoff{Initial: e.cfg.RetryBase, Max: e.cfg.RetryMax, Jitter: 0.5}.Delay(attempt - 1)
}

// failure is one failed attempt.
type failure struct {
	err        error
	retry      bool
	reason     string
	retryAfter time.Duration
}

func (e *Engine) once(ctx context.Context, body []byte, attempt int) (string, *failure) {
	rctx, cancel := context.WithTimeoutCause(ctx, e.cfg.Timeout, errRequestTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(rctx, http.MethodPost, e.endpoint, bytes.NewReader(body))
	if err != nil {
		return "", &failure{err: fmt.Errorf("build the request to %s: %v", e.shown, err)}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "nannyagent/"+version.Version)
	if e.cfg.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+e.cfg.APIKey)
	}
	start := time.Now()
	resp, err := e.client.Do(hreq)
	if err != nil {
		f := e.transportFailure(rctx, err)
		e.log.Debug("chat completion failed", zap.Int("attempt", attempt), zap.Duration("took", time.Since(start)), zap.String("reason", f.reason))
		return "", f
	}
	defer resp.Body.Close()
	limit := int64(MaxResponseBytes)
	if resp.StatusCode != http.StatusOK {
		limit = 64 << 10
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	e.log.Debug("chat completion", zap.Int("attempt", attempt), zap.Int("status", resp.StatusCode),
		zap.Int("bytes", len(raw)), zap.Duration("took", time.Since(start)))
	if err != nil {
		return "", e.transportFailure(rctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", e.statusFailure(resp, raw)
	}
	if int64(len(raw)) > limit {
		return "", &failure{err: fmt.Errorf("the answer of %s is over the %d MiB limit: not a chat completion", e.shown, MaxResponseBytes>>20)}
	}
	content, err := e.decode(raw)
	if err != nil {
		return "", &failure{err: err}
	}
	return content, nil
}

var errRequestTimeout = errors.New("request timeout")

// transportFailure explains an error of the connection or of reading the
// answer.
func (e *Engine) transportFailure(rctx context.Context, err error) *failure {
	if errors.Is(context.Cause(rctx), errRequestTimeout) {
		return &failure{err: fmt.Errorf("the model endpoint %s did not answer within %s (the request timeout): the model may be overloaded or too slow for this prompt", e.shown, e.cfg.Timeout),
			reason: "request timeout"}
	}
	if rctx.Err() != nil {
		return &failure{err: context.Cause(rctx), reason: "cancelled"}
	}
	inner := err
	var ue *url.Error
	if errors.As(err, &ue) {
		inner = ue.Err
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return &failure{err: fmt.Errorf("cannot reach the model endpoint %s: connection refused — is the server running? check ai.base_url", e.shown), reason: "connection refused"}
	case errors.As(err, &dnsErr):
		return &failure{err: fmt.Errorf("cannot reach the model endpoint %s: the host name %q does not resolve — check ai.base_url", e.shown, dnsErr.Name), reason: "name resolution"}
	case isTLSError(err):
		return &failure{err: fmt.Errorf("cannot reach the model endpoint %s: TLS: %v — check ai.base_url (http or https?) and the server's certificate", e.shown, e.scrub(inner.Error())), reason: "tls"}
	}
	msg := e.scrub(inner.Error())
	return &failure{err: fmt.Errorf("cannot reach the model endpoint %s: %s — check ai.base_url and the network", e.shown, msg), retry: true, reason: msg}
}

func isTLSError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "tls: ") || strings.Contains(s, "x509: ")
}

// statusFailure explains a non-200 answer.
func (e *Engine) statusFailure(resp *http.Response, raw []byte) *failure {
	code := resp.StatusCode
	msg := e.errorMessage(raw)
	quoted := ""
	if msg != "" {
		quoted = ": " + msg
	}
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		if e.cfg.APIKey == "" {
			return &failure{err: fmt.Errorf("the endpoint %s wants an API key (HTTP %d%s): set the variable named by ai.api_key_env, or give a key file", e.shown, code, quoted)}
		}
		return &failure{err: fmt.Errorf("the endpoint %s refused the API key (HTTP %d%s): check the variable named by ai.api_key_env", e.shown, code, quoted)}
	case code == http.StatusNotFound:
		return &failure{err: fmt.Errorf("the endpoint %s answered 404 Not Found%s — check ai.model (%q) and ai.base_url (most servers want it to end in /v1)", e.shown, quoted, e.cfg.Model)}
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		reason := fmt.Sprintf("HTTP %d%s", code, quoted)
		return &failure{err: fmt.Errorf("the endpoint %s failed: %s", e.shown, reason), retry: true, reason: reason, retryAfter: retryAfter(resp.Header, time.Now())}
	}
	return &failure{err: fmt.Errorf("the endpoint %s rejected the request (HTTP %d%s)", e.shown, code, quoted)}
}

// retryAfter reads how long the server wants the client to wait:
// retry-after-ms (OpenAI), else Retry-After in seconds or as an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && ms < 1e9 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 || s > 1e6 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// completion is the part of a chat-completions answer the engine reads;
// each level is decoded on its own so an error can say which is wrong.
type completion struct {
	Choices json.RawMessage `json:"choices"`
	Error   json.RawMessage `json:"error"`
}

type choice struct {
	Message      json.RawMessage `json:"message"`
	FinishReason json.RawMessage `json:"finish_reason"`
}

type message struct {
	Content json.RawMessage `json:"content"`
	Refusal json.RawMessage `json:"refusal"`
}

// decode reads choices[0].message.content of a 200 answer.
func (e *Engine) decode(raw []byte) (string, error) {
	content, err := Content(raw)
	if err != nil {
		return "", fmt.Errorf("the answer of %s %s (answer starts %s)", e.shown, err, e.quote(raw))
	}
	return content, nil
}

// Content reads choices[0].message.content of a chat-completions answer;
// a content given as a list of text parts is joined. The error says what
// is missing, without quoting the answer.
func Content(raw []byte) (string, error) {
	if !json.Valid(raw) {
		return "", errors.New("is not JSON: is ai.base_url an OpenAI-compatible API?")
	}
	var c completion
	if json.Unmarshal(raw, &c) != nil {
		return "", errors.New("is not a JSON object: is ai.base_url an OpenAI-compatible API?")
	}
	if len(c.Error) > 0 && string(c.Error) != "null" {
		if m := errorText(c.Error); m != "" {
			return "", fmt.Errorf("is an error: %s", m)
		}
		return "", errors.New("is an error")
	}
	var choices []json.RawMessage
	if json.Unmarshal(c.Choices, &choices) != nil || len(choices) == 0 {
		return "", errors.New("has no choices")
	}
	var ch choice
	if json.Unmarshal(choices[0], &ch) != nil {
		return "", errors.New("has a choices[0] that is not an object")
	}
	var m message
	if len(ch.Message) == 0 || string(ch.Message) == "null" || json.Unmarshal(ch.Message, &m) != nil {
		return "", errors.New("has no message in choices[0]")
	}
	content := bytes.TrimSpace(m.Content)
	switch {
	case len(content) == 0 || string(content) == "null":
		if r := errorText(m.Refusal); r != "" {
			return "", fmt.Errorf("is a refusal by the model: %s", truncate(r, quoteBytes))
		}
		return "", fmt.Errorf("has no text content (finish_reason %q)", truncate(errorText(ch.FinishReason), 40))
	case content[0] == '"':
		var s string
		if err := json.Unmarshal(content, &s); err != nil {
			return "", errors.New("has an unreadable content string")
		}
		return s, nil
	case content[0] == '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(content, &parts); err != nil {
			return "", errors.New("has a content list that is not text parts")
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Type == "text" || p.Type == "" {
				b.WriteString(p.Text)
			}
		}
		if b.Len() == 0 {
			return "", errors.New("has no text part in its content")
		}
		return b.String(), nil
	}
	return "", errors.New("has a content that is not a string")
}

// errorMessage is the message of an error body: OpenAI's
// {"error":{"message"}}, Ollama's {"error":"..."}, {"message"}, else the
// start of the body.
func (e *Engine) errorMessage(raw []byte) string {
	var body struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(raw, &body) == nil {
		if m := errorText(body.Error); m != "" {
			return truncate(e.scrub(m), quoteBytes)
		}
		if body.Message != "" {
			return truncate(e.scrub(body.Message), quoteBytes)
		}
		if m := errorText(body.Detail); m != "" {
			return truncate(e.scrub(m), quoteBytes)
		}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return ""
	}
	return "answer starts " + e.quote(raw)
}

func errorText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimSpace(s)
	}
	var o struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &o) == nil {
		return strings.TrimSpace(o.Message)
	}
	return ""
}

// quote is the start of a body, quoted, with the key scrubbed.
func (e *Engine) quote(raw []byte) string {
	return strconv.Quote(truncate(e.scrub(strings.TrimSpace(string(raw))), quoteBytes))
}

// scrub removes the API key from text an error quotes: servers echo
// what they were sent.
func (e *Engine) scrub(s string) string {
	if k := e.cfg.APIKey; len(k) >= 4 {
		s = strings.ReplaceAll(s, k, "[api key]")
	}
	return s
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
