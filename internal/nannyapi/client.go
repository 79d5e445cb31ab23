// Package nannyapi is the agent's client of the NannyAPI backend
// (NANNYAPI.md): typed requests and responses for the /api/agent
// actions, investigations (including the TensorZero proxy), the records
// API and the realtime subscription, with both of the backend's error
// shapes decoded into *Error.
//
// A Client makes one attempt per call, plus one token refresh and retry
// when the backend answers 401 and the TokenSource yields a different
// token. Retrying failures is the caller's choice, with Backoff.
package nannyapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/version"
)

// Defaults of Options.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultChatTimeout      = 6 * time.Minute
	DefaultMaxResponseBytes = 8 << 20
)

// Options configure a Client.
type Options struct {
	// BaseURL is nannyapi_url ("https://api.nannyai.dev"); paths are
	// absolute under it.
	BaseURL string
	// HTTPClient makes the requests; nil means a client over
	// NewTransport's defaults. Its own Timeout should be 0: the Client
	// bounds each request itself.
	HTTPClient *http.Client
	// Tokens supplies the bearer of authenticated calls.
	Tokens TokenSource
	// AgentID, when set, is sent as X-Agent-ID on authenticated REST
	// calls (static-token mode); never on the realtime subscription or
	// register-with-token.
	AgentID string
	// Timeout bounds one request (default DefaultTimeout); ChatTimeout
	// bounds a proxied chat turn, which waits for a model (default
	// DefaultChatTimeout; the backend itself gives up after 5 min).
	Timeout     time.Duration
	ChatTimeout time.Duration
	// MaxResponseBytes bounds what is read of an answer.
	MaxResponseBytes int64
	// ResetThreshold closes idle connections after this many transport
	// errors in a row, so that a dead keep-alive connection is not
	// reused (http_transport.transport_reset_threshold; 0 never).
	ResetThreshold int
	// UserAgent defaults to "nannyagent/<version>".
	UserAgent string
}

// Client talks to one backend. It is safe for concurrent use.
type Client struct {
	base        *url.URL
	hc          *http.Client
	tokens      TokenSource
	timeout     time.Duration
	chatTimeout time.Duration
	maxBody     int64
	resetAfter  int
	userAgent   string

	mu      sync.Mutex
	agentID string

	transportErrs atomic.Int32
}

// New returns a client for opts.BaseURL.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(opts.BaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("nannyapi: base URL %q must be an http:// or https:// URL with a host", opts.BaseURL)
	}
	c := &Client{
		base: u, hc: opts.HTTPClient, tokens: opts.Tokens, timeout: opts.Timeout, chatTimeout: opts.ChatTimeout,
		maxBody: opts.MaxResponseBytes, resetAfter: opts.ResetThreshold, userAgent: opts.UserAgent, agentID: opts.AgentID,
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: NewTransport(config.Defaults().HTTPTransport)}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.chatTimeout <= 0 {
		c.chatTimeout = DefaultChatTimeout
	}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxResponseBytes
	}
	if c.userAgent == "" {
		c.userAgent = "nannyagent/" + version.Version
	}
	return c, nil
}

// NewFromConfig builds a client from the configuration: nannyapi_url,
// the http_transport block (connection pool, HTTP/2, the request
// timeout from response_header_timeout_sec, the reset threshold) and,
// in static-token mode, agent_id as X-Agent-ID.
func NewFromConfig(cfg *config.Config, tokens TokenSource) (*Client, error) {
	if err := cfg.RequireBackend(); err != nil {
		return nil, err
	}
	h := cfg.HTTPTransport
	opts := Options{
		BaseURL:        cfg.NannyAPIURL,
		HTTPClient:     &http.Client{Transport: NewTransport(h)},
		Tokens:         tokens,
		Timeout:        time.Duration(h.ResponseHeaderTimeoutSec) * time.Second,
		ResetThreshold: h.TransportResetThreshold,
	}
	if strings.HasPrefix(cfg.StaticToken, "nsk_") {
		opts.AgentID = cfg.AgentID
	}
	return New(opts)
}

// NewTransport is an http.Transport tuned by the http_transport block.
// It sets no response-header timeout: a chat turn legitimately waits
// minutes for its headers, so the Client bounds each call instead.
func NewTransport(h config.HTTPTransport) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = h.MaxIdleConns
	t.MaxIdleConnsPerHost = h.MaxIdleConnsPerHost
	t.IdleConnTimeout = time.Duration(h.IdleConnTimeoutSec) * time.Second
	if h.DisableHTTP2 {
		t.ForceAttemptHTTP2 = false
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return t
}

// SetAgentID sets (or clears) the X-Agent-ID of later calls, once
// register-with-token has named the agent.
func (c *Client) SetAgentID(id string) {
	c.mu.Lock()
	c.agentID = id
	c.mu.Unlock()
}

// AgentID is the X-Agent-ID the client sends ("" for none).
func (c *Client) AgentID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agentID
}

// CloseIdleConnections closes the kept-alive connections, for a process
// that is done with the backend.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// BaseURL is the backend's base URL.
func (c *Client) BaseURL() string { return c.base.String() }

// request describes one call.
type request struct {
	op     string // names the call in errors: an action or "METHOD /path"
	method string
	path   string
	query  url.Values
	body   any
	// auth sends the TokenSource's bearer; bearer sends this one
	// instead (register-with-token).
	auth   bool
	bearer string
	// agentID sends X-Agent-ID when the client has one.
	agentID bool
	accept  bool
	timeout time.Duration
	// ok are the success statuses (default 200).
	ok  []int
	out any

	// raw is a body sent as is with rawType as its Content-Type, in
	// place of body's JSON (a multipart upload).
	raw     []byte
	rawType string
	// rawOut receives a successful answer's bytes undecoded (a script
	// download), in place of out.
	rawOut *[]byte
	// maxBody bounds this answer (default: the client's
	// MaxResponseBytes).
	maxBody int64
	// exactLength refuses an answer whose length is not its
	// Content-Length, so a cut download is never taken for a whole one.
	exactLength bool
}

// ErrNoTokenSource is returned by authenticated calls of a Client made
// without Tokens.
var ErrNoTokenSource = errors.New("nannyapi: no token source for an authenticated call")

func (c *Client) do(ctx context.Context, r *request) error {
	var body []byte
	if r.raw != nil {
		body = r.raw
	} else if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("nannyapi: %s: encoding the request: %w", r.op, err)
		}
		body = b
	}
	token := r.bearer
	if r.auth {
		if c.tokens == nil {
			return ErrNoTokenSource
		}
		t, err := c.tokens.Token(ctx)
		if err != nil {
			return fmt.Errorf("nannyapi: %s: %w", r.op, err)
		}
		token = t
	}
	status, rb, err := c.once(ctx, r, token, body)
	if err == nil && status == http.StatusUnauthorized && r.auth {
		// One refresh and retry, when the source can produce another
		// token; a static token cannot, and its 401 is final.
		c.tokens.Invalidate()
		fresh, terr := c.tokens.Token(ctx)
		if terr != nil {
			return fmt.Errorf("%w; getting a new token: %w", decodeError(r.op, status, rb), terr)
		}
		if fresh != token {
			status, rb, err = c.once(ctx, r, fresh, body)
		}
	}
	if err != nil {
		return err
	}
	ok := r.ok
	if ok == nil {
		ok = []int{http.StatusOK}
	}
	for _, s := range ok {
		if s != status {
			continue
		}
		if r.rawOut != nil {
			*r.rawOut = rb
			return nil
		}
		if r.out == nil || status == http.StatusNoContent {
			return nil
		}
		if err := json.Unmarshal(rb, r.out); err != nil {
			return &Error{Op: r.op, Status: status, Message: "malformed answer: " + err.Error(), Body: snippet(rb)}
		}
		return nil
	}
	return decodeError(r.op, status, rb)
}

// once sends the request once and reads the bounded answer.
func (c *Client) once(ctx context.Context, r *request, token string, body []byte) (int, []byte, error) {
	timeout := r.timeout
	if timeout <= 0 {
		timeout = c.timeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := *c.base
	u.Path = c.base.Path + r.path
	u.RawQuery = r.query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, u.String(), rd)
	if err != nil {
		return 0, nil, fmt.Errorf("nannyapi: %s: %w", r.op, err)
	}
	switch {
	case r.raw != nil:
		req.Header.Set("Content-Type", r.rawType)
	case body != nil:
		req.Header.Set("Content-Type", "application/json")
	}
	if r.accept {
		req.Header.Set("Accept", "application/json")
	}
	req.Header.Set("User-Agent", c.userAgent)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if id := c.AgentID(); r.agentID && id != "" {
		req.Header.Set("X-Agent-ID", id)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, c.transportError(ctx, r.op, timeout, err)
	}
	defer resp.Body.Close()
	limit := c.maxBody
	if r.maxBody > 0 {
		limit = r.maxBody
	}
	rb, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, c.transportError(ctx, r.op, timeout, err)
	}
	c.transportErrs.Store(0)
	if int64(len(rb)) > limit {
		return 0, nil, fmt.Errorf("nannyapi: %s: answer larger than %d bytes", r.op, limit)
	}
	if r.exactLength && resp.ContentLength >= 0 && int64(len(rb)) != resp.ContentLength {
		return 0, nil, &TransportError{Op: r.op, Err: fmt.Errorf("answer of %d bytes where Content-Length said %d", len(rb), resp.ContentLength)}
	}
	return resp.StatusCode, rb, nil
}

// transportError classifies a failed exchange: the caller's context
// ending is returned as is; anything else (refused, reset, our own
// per-request timeout) is a *TransportError, which is retryable.
func (c *Client) transportError(ctx context.Context, op string, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("nannyapi: %s: %w", op, ctx.Err())
	}
	if n := c.transportErrs.Add(1); c.resetAfter > 0 && int(n) >= c.resetAfter {
		c.transportErrs.Store(0)
		c.hc.CloseIdleConnections()
	}
	te := &TransportError{Op: op, Err: err}
	if errors.Is(err, context.DeadlineExceeded) {
		te.Timeout = timeout
	}
	return te
}
