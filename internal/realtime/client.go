package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/nannyagent/nannyagent/internal/backoff"
	"go.uber.org/zap"
)

// TokenSource gives the agent's access token for the subscription POST.
// It has the shape of the nannyapi client's token source, so the daemon
// passes the same one.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	// Invalidate says the backend refused the last token, so the next
	// Token call must not return it again.
	Invalidate()
}

// DefaultSubscriptions are the collections the agent acts on (§2.3).
var DefaultSubscriptions = []string{"investigations", "patch_operations", "reboot_operations"}

// Event is one record event from the stream.
type Event struct {
	// Collection is the event: name, which PocketBase sets to the
	// subscription the record matched: the collection name.
	Collection string
	// Action is "create", "update" or "delete".
	Action string
	// ID is the record's id.
	ID string
	// Record is the record's JSON as the backend sent it.
	Record json.RawMessage
	// Key is the delivery's de-duplication key; Dedup.Forget(Key) lets a
	// delivery whose handling failed run again.
	Key Key
}

// Options configure a Client. Zero fields take the documented defaults.
type Options struct {
	// BaseURL is nannyapi_url; the stream is {BaseURL}/api/realtime.
	BaseURL string
	Tokens  TokenSource
	// Handler receives every record event not seen before, one at a
	// time, from Run's goroutine, concurrently with Catchup. It should
	// hand work off rather than run it: the stream is not read meanwhile.
	Handler func(ctx context.Context, ev Event)
	// Catchup runs after every successful (re)subscription, in its own
	// goroutine; an error makes it run again after a backoff delay until
	// it succeeds or the stream ends. It lists what was missed while no
	// stream was open (§2.11); records it hands on should go through the
	// same Dedup.
	Catchup func(ctx context.Context) error
	// Subscriptions default to DefaultSubscriptions.
	Subscriptions []string
	// Dedup defaults to a private window of DefaultDedupSize keys.
	Dedup *Dedup
	// Backoff bounds the wait between failed attempts; see
	// BackoffFromConfig.
	Backoff Backoff
	// HTTPClient must have no Timeout, since the stream is long-lived;
	// the default disables compression, which would buffer events.
	HTTPClient *http.Client
	Logger     *zap.Logger
	Limits     Limits
	// HandshakeTimeout bounds connect, PB_CONNECT and subscription
	// together (default 30 s).
	HandshakeTimeout time.Duration
	// StallTimeout ends a subscribed stream that has sent nothing for
	// this long (default 330 s). PocketBase closes a stream after 300 s
	// without a message, so silence beyond that means the connection is
	// dead without either side having closed it.
	StallTimeout time.Duration
	// MinStableSession is how long a subscribed stream must have lasted
	// for a clean end to count as the idle close, reconnected at once
	// (default 1 s). A server that ends every stream right away would
	// otherwise be reconnected to in a busy loop.
	MinStableSession time.Duration
	// Now, Sleep and Rand replace the clock, the backoff wait and the
	// jitter source in tests.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  func() float64
}

// Stats count what a Client did since it was made.
type Stats struct {
	Connects   uint64 // stream requests made
	Subscribes uint64 // subscriptions the backend accepted
	Events     uint64 // record events handed to Handler
	Duplicates uint64 // record events dropped as already seen
	Malformed  uint64 // events that were not record events, dropped
	Catchups   uint64 // catch-up calls that succeeded
	Failures   uint64 // attempts that ended in an error
	LastError  string
}

// Client keeps one subscribed stream open for as long as Run runs.
type Client struct {
	o            Options
	streamURL    string
	log          *zap.Logger
	ownTransport *http.Transport
	buf          []byte

	mu    sync.Mutex
	stats Stats
}

// Defaults of Options.
const (
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultStallTimeout     = 330 * time.Second
	DefaultMinStableSession = time.Second
)

// New checks o and returns a client; nothing is connected until Run.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("realtime: base URL %q is not an http(s) URL", o.BaseURL)
	}
	if o.Tokens == nil {
		return nil, errors.New("realtime: no token source")
	}
	if o.Handler == nil {
		return nil, errors.New("realtime: no event handler")
	}
	if len(o.Subscriptions) == 0 {
		o.Subscriptions = DefaultSubscriptions
	}
	for _, s := range o.Subscriptions {
		if s == "" {
			return nil, errors.New("realtime: empty subscription name")
		}
	}
	o.Subscriptions = append([]string(nil), o.Subscriptions...)
	if o.HTTPClient != nil && o.HTTPClient.Timeout != 0 {
		return nil, fmt.Errorf("realtime: the HTTP client has a %s timeout, which would cut the stream; use one without", o.HTTPClient.Timeout)
	}
	c := &Client{streamURL: u.JoinPath("api", "realtime").String(), buf: make([]byte, 32<<10)}
	if o.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DisableCompression = true
		tr.ResponseHeaderTimeout = DefaultHandshakeTimeout
		c.ownTransport = tr
		o.HTTPClient = &http.Client{Transport: tr}
	}
	if o.Dedup == nil {
		o.Dedup = NewDedup(0)
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Backoff.Jitter == 0 {
		o.Backoff.Jitter = 0.5
	}
	o.Backoff.Rand = o.Rand
	o.Backoff = o.Backoff.WithDefaults()
	o.Limits = o.Limits.withDefaults()
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.MinStableSession <= 0 {
		o.MinStableSession = DefaultMinStableSession
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	c.o = o
	c.log = o.Logger.Named("realtime")
	return c, nil
}

// Dedup is the window the client filters deliveries through, for the
// daemon's catch-up to share.
func (c *Client) Dedup() *Dedup { return c.o.Dedup }

// Stats returns a copy of the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Client) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// Run keeps the stream open until ctx ends, then returns nil once every
// goroutine it started has stopped. A clean end of a stream that lasted
// (the idle close) is followed by a new connection at once; an error by
// a backoff delay that grows with consecutive errors. A refused token at
// subscription is invalidated and retried once at once.
func (c *Client) Run(ctx context.Context) error {
	if c.ownTransport != nil {
		defer c.ownTransport.CloseIdleConnections()
	}
	attempt := 0
	authRetried := false
	for {
		res := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if res.subscribed {
			authRetried = false
		}
		if res.stable {
			attempt = 0
		}
		if res.err == nil {
			c.log.Debug("stream closed by the server; reconnecting")
			continue
		}
		var se *SubscribeError
		if errors.As(res.err, &se) && se.authRefused() && !authRetried {
			authRetried = true
			c.log.Info("backend refused the agent token; retrying with a fresh one", zap.Error(res.err))
			continue
		}
		d := c.o.Backoff.Delay(attempt)
		attempt++
		c.count(func(s *Stats) { s.Failures++; s.LastError = res.err.Error() })
		c.log.Warn("realtime stream failed; retrying", zap.Error(res.err), zap.Duration("delay", d), zap.Int("attempt", attempt))
		if c.o.Sleep(ctx, d) != nil {
			return nil
		}
	}
}

type sessionResult struct {
	err        error
	subscribed bool
	// stable: subscribed and lasted MinStableSession, so the error count
	// starts again.
	stable bool
}

// session runs one stream from connect to its end. Every goroutine it
// starts has ended when it returns.
func (c *Client) session(ctx context.Context) (res sessionResult) {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	// One watchdog covers the handshake, then the silence of the stream.
	var stalled atomic.Bool
	timeout := c.o.HandshakeTimeout
	wd := time.AfterFunc(timeout, func() { stalled.Store(true); cancel() })
	defer wd.Stop()

	c.count(func(s *Stats) { s.Connects++ })
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, c.streamURL, nil)
	if err != nil {
		return sessionResult{err: fmt.Errorf("connect: %w", err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		if stalled.Load() {
			return sessionResult{err: fmt.Errorf("connect %s: no answer within %s", c.streamURL, timeout)}
		}
		return sessionResult{err: fmt.Errorf("connect: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sessionResult{err: fmt.Errorf("connect %s: %s", c.streamURL, describeResponse(resp))}
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return sessionResult{err: fmt.Errorf("connect %s: content type %q, not text/event-stream", c.streamURL, resp.Header.Get("Content-Type"))}
	}

	p := NewParser(c.o.Limits)
	clientID := ""
	var subscribedAt time.Time
	emit := func(m Message) error {
		if clientID == "" {
			if m.Type != "PB_CONNECT" {
				c.count(func(s *Stats) { s.Malformed++ })
				return nil
			}
			id, err := parseConnect(m.Data)
			if err != nil {
				return err
			}
			clientID = id
			if err := c.subscribe(sctx, id); err != nil {
				return err
			}
			res.subscribed = true
			subscribedAt = c.o.Now()
			timeout = c.o.StallTimeout
			wd.Reset(timeout)
			c.count(func(s *Stats) { s.Subscribes++ })
			c.log.Debug("subscribed", zap.Strings("collections", c.o.Subscriptions))
			if c.o.Catchup != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.catchup(sctx)
				}()
			}
			return nil
		}
		c.deliver(ctx, wd, timeout, m)
		return nil
	}

	err = c.read(resp.Body, p, wd, &timeout, emit)
	if res.subscribed {
		res.stable = c.o.Now().Sub(subscribedAt) >= c.o.MinStableSession
	}
	switch {
	case ctx.Err() != nil:
		res.err = ctx.Err()
	case stalled.Load() && !res.subscribed:
		res.err = fmt.Errorf("no PB_CONNECT and subscription within %s", c.o.HandshakeTimeout)
	case stalled.Load():
		res.err = fmt.Errorf("stream silent for %s: connection presumed dead", c.o.StallTimeout)
	case err != nil:
		res.err = err
	case p.Pending():
		res.err = errors.New("stream ended inside an event; the partial event was dropped")
	case !res.subscribed:
		res.err = errors.New("stream ended before PB_CONNECT")
	case !res.stable:
		res.err = fmt.Errorf("stream closed %s after subscribing, sooner than %s", c.o.Now().Sub(subscribedAt), c.o.MinStableSession)
	}
	return res
}

// read feeds the body to p until it ends; a clean end returns nil.
func (c *Client) read(body io.Reader, p *Parser, wd *time.Timer, timeout *time.Duration, emit func(Message) error) error {
	for {
		n, err := body.Read(c.buf)
		if n > 0 {
			wd.Reset(*timeout)
			if ferr := p.Feed(c.buf[:n], emit); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
	}
}

func parseConnect(data string) (string, error) {
	var c struct {
		ClientID string `json:"clientId"`
	}
	if err := json.Unmarshal([]byte(data), &c); err != nil {
		return "", fmt.Errorf("PB_CONNECT data %q: %w", clip(data, 120), err)
	}
	if c.ClientID == "" {
		return "", fmt.Errorf("PB_CONNECT data %q has no clientId", clip(data, 120))
	}
	return c.ClientID, nil
}

// SubscribeError is a subscription POST the backend did not accept.
type SubscribeError struct {
	Status  int
	Message string // the backend's message, from either error shape (§1)
}

func (e *SubscribeError) authRefused() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

func (e *SubscribeError) Error() string {
	msg := fmt.Sprintf("subscribe: %d %s", e.Status, e.Message)
	switch {
	case e.authRefused():
		return msg + ": the backend refused the agent token (register again if this persists)"
	case e.Status == http.StatusNotFound:
		return msg + ": the backend no longer knows this stream's client id (the stream closed before the subscription)"
	}
	return msg
}

func (c *Client) subscribe(ctx context.Context, clientID string) error {
	tok, err := c.o.Tokens.Token(ctx)
	if err != nil {
		return fmt.Errorf("subscribe: agent token: %w", err)
	}
	body, err := json.Marshal(struct {
		ClientID      string   `json:"clientId"`
		Subscriptions []string `json:"subscriptions"`
	}{clientID, c.o.Subscriptions})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.streamURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		c.o.Tokens.Invalidate()
	}
	return &SubscribeError{Status: resp.StatusCode, Message: backendMessage(resp)}
}

func (c *Client) catchup(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		err := c.o.Catchup(ctx)
		if err == nil {
			c.count(func(s *Stats) { s.Catchups++ })
			return
		}
		if ctx.Err() != nil {
			return
		}
		d := c.o.Backoff.Delay(attempt)
		c.log.Warn("catch-up failed; retrying", zap.Error(err), zap.Duration("delay", d))
		if c.o.Sleep(ctx, d) != nil {
			return
		}
	}
}

func (c *Client) deliver(ctx context.Context, wd *time.Timer, timeout time.Duration, m Message) {
	ev, err := decodeEvent(m)
	if err != nil {
		c.count(func(s *Stats) { s.Malformed++ })
		c.log.Warn("dropped an event that is not a record event", zap.String("event", clip(m.Type, 80)), zap.Error(err))
		return
	}
	if !c.o.Dedup.Add(ev.Key) {
		c.count(func(s *Stats) { s.Duplicates++ })
		return
	}
	c.count(func(s *Stats) { s.Events++ })
	// The stream is not read while the handler runs, so its time is not
	// the server's silence.
	wd.Stop()
	c.o.Handler(ctx, ev)
	wd.Reset(timeout)
}

var validActions = map[string]bool{"create": true, "update": true, "delete": true}

func decodeEvent(m Message) (Event, error) {
	if m.Type == "PB_CONNECT" {
		return Event{}, errors.New("a second PB_CONNECT")
	}
	var env struct {
		Record json.RawMessage `json:"record"`
		Action string          `json:"action"`
	}
	if err := json.Unmarshal([]byte(m.Data), &env); err != nil {
		return Event{}, fmt.Errorf("data: %w", err)
	}
	if !validActions[env.Action] {
		return Event{}, fmt.Errorf("action %q is not create, update or delete", clip(env.Action, 40))
	}
	if t := bytes.TrimLeft(env.Record, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return Event{}, errors.New("record is not a JSON object")
	}
	id, version, err := recordIdentity(env.Record)
	if err != nil {
		return Event{}, fmt.Errorf("record: %w", err)
	}
	return Event{
		Collection: m.Type,
		Action:     env.Action,
		ID:         id,
		Record:     env.Record,
		Key:        NewKey(m.Type, id, env.Action, version),
	}, nil
}

// describeResponse is "<code> <message>" for an unexpected answer.
func describeResponse(resp *http.Response) string {
	return fmt.Sprintf("%d %s", resp.StatusCode, backendMessage(resp))
}

// backendMessage reads at most 4 KiB of an error body and returns its
// message in either of the backend's error shapes (§1), else its text.
func backendMessage(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &e) == nil {
		if e.Error != "" {
			return clip(e.Error, 200)
		}
		if e.Message != "" {
			return clip(e.Message, 200)
		}
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return clip(s, 200)
	}
	return http.StatusText(resp.StatusCode)
}

// clip shortens s for a log line or an error and keeps control
// characters from a hostile server out of them.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
