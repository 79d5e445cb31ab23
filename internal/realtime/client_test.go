package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

const agentID = "brppshbc1nycil4"

// Record payloads verbatim from the stream (NANNYAPI.md §2.3).
const (
	invRecord    = `{"agent_id":"brppshbc1nycil4","collectionId":"pbc_59972043","collectionName":"investigations","completed_at":"","episode_id":"","id":"dmi5fzdb3mugwkh","initiated_at":"2026-11-26 00:51:01.776Z","metadata":{"initiated_by":"user"},"priority":"high","resolution_plan":"","status":"pending","user_id":"l10t7rpxbb0823e","user_prompt":"Disk is full on /var partition"}`
	invUpdated   = `{"agent_id":"brppshbc1nycil4","collectionId":"pbc_59972043","collectionName":"investigations","completed_at":"","episode_id":"0406e280-1b2c-4d5e-8f90-a1b2c3d4e5f6","id":"dmi5fzdb3mugwkh","initiated_at":"2026-11-26 00:51:01.776Z","metadata":{"initiated_by":"user"},"priority":"high","resolution_plan":"","status":"in_progress","user_id":"l10t7rpxbb0823e","user_prompt":"Disk is full on /var partition"}`
	patchRecord  = `{"agent_id":"brppshbc1nycil4","collectionId":"pbc_2550880806","collectionName":"patch_operations","completed_at":"","error_msg":"","exclusions":null,"exit_code":0,"id":"vpiecet7copbe8j","lxc_id":"","mode":"dry-run","output_path":"","script_id":"r13zcso5sx93pj7","script_url":"/api/files/pbc_1280174292/r13zcso5sx93pj7/apt_update_spmzr2mmy0.sh","started_at":"","status":"pending","stderr_file":"","stdout_file":"","user_id":"l10t7rpxbb0823e","vmid":""}`
	rebootRecord = `{"acknowledged_at":"","agent_id":"brppshbc1nycil4","collectionId":"pbc_3109392152","collectionName":"reboot_operations","completed_at":"","error_message":"","id":"j7c41fk1xukycxv","lxc_id":"","reason":"kernel update","requested_at":"2026-11-26 00:51:37.666Z","status":"sent","timeout_seconds":120,"user_id":"l10t7rpxbb0823e","vmid":""}`
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeTokens hands out tokens in order; Invalidate moves to the next.
type fakeTokens struct {
	mu          sync.Mutex
	tokens      []string
	i           int
	err         error
	invalidated []string
}

func (f *fakeTokens) Token(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	return f.tokens[f.i], nil
}

func (f *fakeTokens) Invalidate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidated = append(f.invalidated, f.tokens[f.i])
	if f.i < len(f.tokens)-1 {
		f.i++
	}
}

func (f *fakeTokens) Invalidated() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.invalidated...)
}

type harness struct {
	t        *testing.T
	pb       *fakePB
	clock    *fakeClock
	tokens   *fakeTokens
	opts     Options
	client   *Client
	events   chan Event
	catchups chan struct{}
	slept    chan time.Duration
	sentinel int
	cancel   context.CancelFunc
	done     chan error
}

// newHarness sets up a fake backend and client options: backoff 1 s to
// 8 s with the jitter fixed at the middle (each delay is 3/4 of its
// bound), a fake clock, and a Sleep that records the delay, moves the
// clock and returns at once.
func newHarness(t *testing.T) *harness {
	ignore := goleak.IgnoreCurrent()
	h := &harness{
		t:        t,
		clock:    &fakeClock{now: time.Date(2026, 11, 26, 0, 51, 0, 0, time.UTC)},
		tokens:   &fakeTokens{tokens: []string{"tok-A", "tok-B", "tok-C"}},
		events:   make(chan Event, 1<<12),
		catchups: make(chan struct{}, 1<<16),
		slept:    make(chan time.Duration, 1<<16),
		done:     make(chan error, 1),
	}
	h.pb = newFakePB(t, map[string]string{"tok-A": agentID, "tok-B": agentID, "tok-C": agentID})
	h.opts = Options{
		BaseURL: h.pb.URL(),
		Tokens:  h.tokens,
		Handler: func(ctx context.Context, ev Event) {
			select {
			case h.events <- ev:
			case <-ctx.Done():
			}
		},
		Catchup: func(context.Context) error {
			h.catchups <- struct{}{}
			return nil
		},
		Backoff: Backoff{Initial: time.Second, Max: 8 * time.Second},
		Now:     h.clock.Now,
		Sleep: func(ctx context.Context, d time.Duration) error {
			h.slept <- d
			h.clock.Advance(d)
			return ctx.Err()
		},
		Rand: func() float64 { return 0.5 },
	}
	t.Cleanup(func() {
		if h.cancel != nil {
			h.stop()
		}
		h.pb.srv.Close()
		goleak.VerifyNone(t, ignore)
	})
	return h
}

func (h *harness) run() {
	h.t.Helper()
	c, err := New(h.opts)
	require.NoError(h.t, err)
	h.client = c
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- c.Run(ctx) }()
}

// stop cancels Run and requires it to return nil promptly.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	h.cancel = nil
	require.NoError(h.t, recv(h.t, h.done, "Run to return"))
}

func (h *harness) sleeps() []time.Duration {
	var out []time.Duration
	for {
		select {
		case d := <-h.slept:
			out = append(out, d)
		default:
			return out
		}
	}
}

// session waits for the next accepted subscription and for the client to
// have taken it in (its catch-up call comes after), so that clock moves
// made next fall inside the session.
func (h *harness) session() *fakeClient {
	h.t.Helper()
	c := h.pb.WaitSubscribed(h.t)
	recv(h.t, h.catchups, "catch-up after the subscription")
	return c
}

// idleClose ends c's stream as PocketBase does after 300 s of silence.
func (h *harness) idleClose(c *fakeClient) {
	h.clock.Advance(300*time.Second + 6*time.Millisecond)
	c.Close()
}

// sync sends a fresh record through c and requires it to be the next
// event delivered: nothing unexpected was delivered before it.
func (h *harness) sync(c *fakeClient) {
	h.t.Helper()
	h.sentinel++
	id := fmt.Sprintf("sentinel%07d", h.sentinel)
	c.Send(recordFrame(c.id, "reboot_operations", "create", `{"id":"`+id+`","status":"sent","timeout_seconds":120}`))
	ev := recv(h.t, h.events, "the sentinel event")
	require.Equal(h.t, id, ev.ID, "an unexpected event came before the sentinel")
}

func mustKey(t *testing.T, collection, action, record string) Key {
	t.Helper()
	k, err := KeyFor(collection, action, json.RawMessage(record))
	require.NoError(t, err)
	return k
}

func TestConnectSubscribeDeliver(t *testing.T) {
	h := newHarness(t)
	h.run()
	c := h.session()

	sh := h.pb.StreamHeaders()
	require.Len(t, sh, 1)
	require.Equal(t, "text/event-stream", sh[0].Get("Accept"))
	require.Empty(t, sh[0].Get("Authorization"), "the stream request needs no token (§2.3)")
	posts := h.pb.Posts()
	require.Len(t, posts, 1)
	require.Equal(t, `{"clientId":"`+c.id+`","subscriptions":["investigations","patch_operations","reboot_operations"]}`, posts[0].Body)
	require.Equal(t, "Bearer tok-A", posts[0].Header.Get("Authorization"))
	require.Equal(t, "application/json", posts[0].Header.Get("Content-Type"))

	for _, p := range []struct{ coll, action, id, rec string }{
		{"investigations", "create", "dmi5fzdb3mugwkh", invRecord},
		{"patch_operations", "create", "vpiecet7copbe8j", patchRecord},
		{"reboot_operations", "create", "j7c41fk1xukycxv", rebootRecord},
		{"investigations", "update", "dmi5fzdb3mugwkh", invUpdated},
		{"investigations", "delete", "dmi5fzdb3mugwkh", invUpdated},
	} {
		require.Equal(t, 1, h.pb.Publish(agentID, p.coll, p.action, p.rec))
		ev := recv(t, h.events, p.coll+" "+p.action)
		require.Equal(t, Event{
			Collection: p.coll, Action: p.action, ID: p.id,
			Record: json.RawMessage(p.rec), Key: mustKey(t, p.coll, p.action, p.rec),
		}, ev)
	}
	require.Equal(t, 0, h.pb.Publish("otheragent00000", "investigations", "create", invRecord), "another agent's rows never reach us")
	h.sync(c)
	h.stop()
	require.Equal(t, Stats{Connects: 1, Subscribes: 1, Events: 6, Catchups: 1}, h.client.Stats())
	require.Empty(t, h.sleeps())
}

func TestSubscriptionsConfigurable(t *testing.T) {
	h := newHarness(t)
	h.opts.Subscriptions = []string{"investigations", "proxmox_nodes"}
	h.opts.BaseURL += "/"
	h.run()
	c := h.session()
	require.Equal(t, `{"clientId":"`+c.id+`","subscriptions":["investigations","proxmox_nodes"]}`, h.pb.Posts()[0].Body)
	require.Equal(t, 0, h.pb.Publish(agentID, "patch_operations", "create", patchRecord))
	require.Equal(t, 1, h.pb.Publish(agentID, "proxmox_nodes", "create", `{"id":"node1xxxxxxxxxx"}`))
	require.Equal(t, "proxmox_nodes", recv(t, h.events, "event").Collection)
}

func TestIdleCloseReconnectsAtOnceAndCatchesUp(t *testing.T) {
	h := newHarness(t)
	h.run()
	ids := map[string]bool{}
	for i := 0; i < 4; i++ {
		c := h.session()
		ids[c.id] = true
		if i < 3 {
			h.idleClose(c)
		}
	}
	require.Len(t, ids, 4, "every connection has its own client id")
	posts := h.pb.Posts()
	require.Len(t, posts, 4, "one subscription per connection")
	h.stop()
	require.Empty(t, h.sleeps(), "the idle close is followed by no backoff")
	require.Equal(t, Stats{Connects: 4, Subscribes: 4, Catchups: 4}, h.client.Stats())
}

func TestBackoffGrowsIsBoundedAndResets(t *testing.T) {
	h := newHarness(t)
	h.pb.FailConnects(500, 500, 500, 500, 500, 500)
	h.run()
	c := h.session()
	s := time.Second
	require.Equal(t, []time.Duration{s * 3 / 4, s * 3 / 2, 3 * s, 6 * s, 6 * s, 6 * s}, h.sleeps(),
		"delays double from 1 s and stop at the 8 s bound (jitter fixed at 3/4)")
	st := h.client.Stats()
	require.Equal(t, uint64(6), st.Failures)
	require.Equal(t, "connect "+h.pb.URL()+"/api/realtime: 500 Something went wrong while processing your request.", st.LastError)

	// A stream that lasted ends in an error: the count starts again.
	h.clock.Advance(5 * time.Minute)
	c.Abort()
	c = h.session()
	require.Equal(t, []time.Duration{s * 3 / 4}, h.sleeps())
	require.Contains(t, h.client.Stats().LastError, "read stream: unexpected EOF")

	// One that did not last does not reset it.
	c.Abort()
	h.session()
	require.Equal(t, []time.Duration{s * 3 / 2}, h.sleeps())
}

func TestBackoffDelays(t *testing.T) {
	at := func(u float64) Backoff {
		return Backoff{Initial: 30 * time.Second, Max: 30 * time.Minute, Jitter: 0.5, Rand: func() float64 { return u }}
	}
	var lo, hi []time.Duration
	for n := 0; n < 10; n++ {
		lo = append(lo, at(0).Delay(n))
		hi = append(hi, at(0.999999999).Delay(n))
	}
	m := time.Minute
	require.Equal(t, []time.Duration{15 * time.Second, 30 * time.Second, m, 2 * m, 4 * m, 8 * m, 15 * m, 15 * m, 15 * m, 15 * m}, lo)
	for n, d := range hi {
		require.LessOrEqual(t, d, 30*m)
		require.Greater(t, d, lo[n])
	}
	require.Equal(t, 15*m, at(0).Delay(1000), "no overflow far out")
	require.LessOrEqual(t, at(1-1e-15).Delay(1000), 30*m)
	require.Equal(t, 15*time.Second, at(1.5).Delay(0), "an out-of-range random number counts as 0")
	require.Equal(t, Backoff{Initial: 30 * time.Second, Max: 1800 * time.Second, Jitter: 0.5}, BackoffFromConfig(configDefaults()))
	require.Equal(t, 30*time.Second, Backoff{}.Delay(0), "zero means the config defaults")
	// The client takes a zero Jitter as half to all of each delay.
	c, err := New(Options{BaseURL: "http://127.0.0.1:1", Tokens: &fakeTokens{}, Handler: func(context.Context, Event) {}, Rand: func() float64 { return 0 }})
	require.NoError(t, err)
	require.Equal(t, 15*time.Second, c.o.Backoff.Delay(0))
}

func TestRefusedTokenIsInvalidatedAndRetriedOnce(t *testing.T) {
	h := newHarness(t)
	h.pb.FailSubscribes(403)
	h.run()
	c := h.session()
	posts := h.pb.Posts()
	require.Len(t, posts, 2)
	require.Equal(t, "Bearer tok-A", posts[0].Header.Get("Authorization"))
	require.Equal(t, "Bearer tok-B", posts[1].Header.Get("Authorization"))
	require.NotContains(t, posts[1].Body, `"clientId":"`+fmt.Sprintf("%040d", 1)+`"`, "the retry uses a new connection")
	require.Equal(t, []string{"tok-A"}, h.tokens.Invalidated())
	require.Empty(t, h.sleeps(), "the retry is immediate")

	// Refused twice in a row: one immediate retry, then backoff.
	h.pb.FailSubscribes(401, 403)
	h.idleClose(c)
	h.session()
	require.Equal(t, []string{"tok-A", "tok-B", "tok-C"}, h.tokens.Invalidated())
	require.Equal(t, []time.Duration{750 * time.Millisecond}, h.sleeps())
	require.Equal(t, "subscribe: 403 The current and the previous request authorization don't match.: the backend refused the agent token (register again if this persists)",
		h.client.Stats().LastError)
	require.Equal(t, "Bearer tok-C", h.pb.Posts()[4].Header.Get("Authorization"))
}

func TestSubscribeErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   string
	}{
		{404, "subscribe: 404 Missing or invalid client id.: the backend no longer knows this stream's client id (the stream closed before the subscription)"},
		{500, "subscribe: 500 Something went wrong while processing your request."},
		{400, "subscribe: 400 Something went wrong while processing your request."},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			h := newHarness(t)
			h.pb.FailSubscribes(tc.status)
			h.run()
			h.session()
			require.Equal(t, []time.Duration{750 * time.Millisecond}, h.sleeps())
			require.Equal(t, tc.want, h.client.Stats().LastError)
			require.Empty(t, h.tokens.Invalidated())
		})
	}
}

func TestTokenSourceError(t *testing.T) {
	h := newHarness(t)
	h.tokens.err = errors.New("refresh token expired: run nannyagent --register")
	h.run()
	require.Equal(t, 750*time.Millisecond, recv(t, h.slept, "a backoff"))
	require.Equal(t, 1500*time.Millisecond, recv(t, h.slept, "a backoff"))
	h.stop()
	require.Contains(t, h.client.Stats().LastError, "subscribe: agent token: refresh token expired: run nannyagent --register")
	require.Zero(t, h.client.Stats().Subscribes)
}

func TestHalfWrittenEventIsNotDelivered(t *testing.T) {
	for _, abort := range []bool{false, true} {
		t.Run(fmt.Sprintf("abort=%v", abort), func(t *testing.T) {
			h := newHarness(t)
			h.run()
			c := h.session()
			full := recordFrame(c.id, "patch_operations", "create", patchRecord)
			c.Send(recordFrame(c.id, "investigations", "create", invRecord))
			c.Send(full[:len(full)-1]) // all but the blank line
			h.clock.Advance(5 * time.Minute)
			if abort {
				c.Abort()
			} else {
				c.Close()
			}
			require.Equal(t, "dmi5fzdb3mugwkh", recv(t, h.events, "the complete event").ID)
			c = h.session()
			require.Equal(t, []time.Duration{750 * time.Millisecond}, h.sleeps(), "a cut stream is an error")
			if abort {
				require.Contains(t, h.client.Stats().LastError, "read stream: unexpected EOF")
			} else {
				require.Equal(t, "stream ended inside an event; the partial event was dropped", h.client.Stats().LastError)
			}
			// The patch was never delivered, so its full event now is new.
			require.Equal(t, 1, h.pb.Publish(agentID, "patch_operations", "create", patchRecord))
			require.Equal(t, "vpiecet7copbe8j", recv(t, h.events, "the patch").ID)
			h.sync(c)
			h.stop()
			require.Zero(t, h.client.Stats().Malformed)
			require.Equal(t, uint64(3), h.client.Stats().Events)
		})
	}
}

func TestDuplicatesRunOnceLiveAndAtCatchup(t *testing.T) {
	h := newHarness(t)
	shared := NewDedup(0)
	var mu sync.Mutex
	var pending []string // what the records API would list (§2.11)
	caught := make(chan string, 16)
	h.opts.Dedup = shared
	h.opts.Catchup = func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		for _, rec := range pending {
			k, err := KeyFor("investigations", "create", json.RawMessage(rec))
			if err != nil {
				return err
			}
			if shared.Add(k) {
				var r struct{ ID string }
				_ = json.Unmarshal([]byte(rec), &r)
				caught <- r.ID
			}
		}
		h.catchups <- struct{}{}
		return nil
	}
	h.run()
	c := h.session()
	require.Same(t, shared, h.client.Dedup())

	for range 2 {
		h.pb.Publish(agentID, "investigations", "create", invRecord)
		h.pb.Publish(agentID, "investigations", "update", invUpdated)
	}
	ev := recv(t, h.events, "create")
	require.Equal(t, "create", ev.Action)
	ev = recv(t, h.events, "update")
	require.Equal(t, "update", ev.Action)
	h.sync(c)

	// While the stream was away, a second investigation was created. The
	// records API lists both pending ones, formatted its own way.
	inv2 := strings.ReplaceAll(invRecord, "dmi5fzdb3mugwkh", "secondxxxxxxxx1")
	var indented bytes.Buffer
	require.NoError(t, json.Indent(&indented, []byte(invRecord), "", "  "))
	mu.Lock()
	pending = []string{indented.String(), inv2}
	mu.Unlock()
	h.idleClose(c)
	c = h.session()
	require.Equal(t, "secondxxxxxxxx1", recv(t, caught, "the missed record"))
	none(t, caught, "catch-up delivery of a record seen live")

	// A late live copy of what catch-up handled runs no more.
	h.pb.Publish(agentID, "investigations", "create", inv2)
	h.sync(c)
	h.stop()
	require.Equal(t, uint64(3), h.client.Stats().Duplicates)
}

func TestCatchupRetriedWithBackoff(t *testing.T) {
	h := newHarness(t)
	calls := 0
	h.opts.Catchup = func(context.Context) error {
		calls++
		if calls <= 2 {
			return errors.New("records API: 500")
		}
		h.catchups <- struct{}{}
		return nil
	}
	h.run()
	h.session()
	require.Equal(t, []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond}, h.sleeps())
	h.stop()
	require.Equal(t, uint64(1), h.client.Stats().Catchups)
	require.Equal(t, 3, calls)
}

func TestCleanCloseTooSoonBacksOff(t *testing.T) {
	h := newHarness(t)
	h.run()
	for i := 0; i < 3; i++ {
		h.session().Close()
	}
	h.session()
	require.Equal(t, []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}, h.sleeps(),
		"a server that ends every stream at once is not reconnected to in a busy loop")
	require.Equal(t, "stream closed 0s after subscribing, sooner than 1s", h.client.Stats().LastError)
}

func TestMalformedEventsDropped(t *testing.T) {
	h := newHarness(t)
	h.run()
	c := h.session()
	for _, data := range []string{
		`not json`,
		`{"record":{"id":"x"},"action":"frobnicate"}`,
		`{"record":{"status":"sent"},"action":"create"}`,
		`{"record":[1,2],"action":"create"}`,
		`{"record":{"id":7},"action":"create"}`,
		`{"action":"create"}`,
	} {
		c.Send("id:" + c.id + "\nevent:reboot_operations\ndata:" + data + "\n\n")
	}
	c.Send("id:" + c.id + "\nevent:PB_CONNECT\ndata:{\"clientId\":\"" + c.id + "\"}\n\n")
	h.sync(c)
	h.stop()
	require.Equal(t, uint64(7), h.client.Stats().Malformed)
	require.Equal(t, uint64(1), h.client.Stats().Events)
}

func TestHostileStreamBounded(t *testing.T) {
	h := newHarness(t)
	h.opts.Limits = Limits{MaxLineBytes: 1024}
	h.run()
	c := h.session()
	c.Send("data:" + strings.Repeat("x", 4096))
	h.session()
	require.Equal(t, []time.Duration{750 * time.Millisecond}, h.sleeps())
	require.Equal(t, "sse: line longer than 1024 bytes (limit MaxLineBytes)", h.client.Stats().LastError)
}

// rawServer answers the stream request with handler, for servers that do
// not behave like PocketBase.
func rawServer(t *testing.T, handler http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv
}

func TestBrokenStreams(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"wrong content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>login</html>"))
		}, "content type \"text/html\", not text/event-stream"},
		{"ends before PB_CONNECT", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
			_, _ = w.Write([]byte(": hello\n\n"))
		}, "stream ended before PB_CONNECT"},
		{"PB_CONNECT without client id", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte("id:x\nevent:PB_CONNECT\ndata:{}\n\n"))
		}, `PB_CONNECT data "{}" has no clientId`},
		{"PB_CONNECT not JSON", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte("event:PB_CONNECT\ndata:hello\x1b[2J\n\n"))
		}, `PB_CONNECT data "hello [2J": invalid character 'h' looking for beginning of value`},
		{"reverse proxy error page", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>502 Bad Gateway</html>\n"))
		}, "502 <html>502 Bad Gateway</html>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.opts.BaseURL = rawServer(t, tc.handler).URL
			h.run()
			recv(t, h.slept, "a backoff")
			h.stop()
			require.Contains(t, h.client.Stats().LastError, tc.want)
		})
	}
}

func TestHandshakeAndStallTimeouts(t *testing.T) {
	t.Run("no PB_CONNECT", func(t *testing.T) {
		release := make(chan struct{})
		h := newHarness(t)
		h.opts.HandshakeTimeout = 50 * time.Millisecond
		h.opts.BaseURL = rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}).URL
		defer close(release)
		h.run()
		recv(t, h.slept, "a backoff")
		h.stop()
		require.Equal(t, "no PB_CONNECT and subscription within 50ms", h.client.Stats().LastError)
	})
	t.Run("silent stream", func(t *testing.T) {
		h := newHarness(t)
		h.opts.StallTimeout = 50 * time.Millisecond
		h.run()
		h.session()
		recv(t, h.slept, "a backoff")
		h.stop()
		require.Equal(t, "stream silent for 50ms: connection presumed dead", h.client.Stats().LastError)
	})
}

func TestCancelEndsPromptly(t *testing.T) {
	t.Run("during backoff", func(t *testing.T) {
		h := newHarness(t)
		h.opts.Sleep = nil // the real timer
		h.opts.Backoff = Backoff{Initial: time.Hour, Max: time.Hour}
		h.pb.FailConnects(500)
		h.run()
		require.Eventually(t, func() bool { return h.client.Stats().Failures == 1 }, 10*time.Second, time.Millisecond)
		h.stop()
	})
	t.Run("during catch-up and a blocked handler", func(t *testing.T) {
		h := newHarness(t)
		inCatchup := make(chan struct{})
		h.opts.Catchup = func(ctx context.Context) error {
			close(inCatchup)
			<-ctx.Done()
			return ctx.Err()
		}
		handling := make(chan struct{})
		h.opts.Handler = func(ctx context.Context, ev Event) {
			close(handling)
			<-ctx.Done()
		}
		h.run()
		c := h.pb.WaitSubscribed(t)
		recv(t, inCatchup, "catch-up")
		c.Send(recordFrame(c.id, "investigations", "create", invRecord))
		recv(t, handling, "the handler")
		h.stop()
	})
	t.Run("during the handshake", func(t *testing.T) {
		h := newHarness(t)
		entered := make(chan struct{}, 1)
		h.opts.BaseURL = rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			<-r.Context().Done()
		}).URL
		h.run()
		recv(t, entered, "the stream request")
		h.stop()
	})
}

func TestNewRejectsBadOptions(t *testing.T) {
	ok := Options{BaseURL: "http://127.0.0.1:8090", Tokens: &fakeTokens{tokens: []string{"t"}}, Handler: func(context.Context, Event) {}}
	for _, tc := range []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.BaseURL = "127.0.0.1:8090" }, `realtime: base URL "127.0.0.1:8090" is not an http(s) URL`},
		{func(o *Options) { o.BaseURL = "ftp://x" }, `realtime: base URL "ftp://x" is not an http(s) URL`},
		{func(o *Options) { o.Tokens = nil }, "realtime: no token source"},
		{func(o *Options) { o.Handler = nil }, "realtime: no event handler"},
		{func(o *Options) { o.Subscriptions = []string{"investigations", ""} }, "realtime: empty subscription name"},
		{func(o *Options) { o.HTTPClient = &http.Client{Timeout: 30 * time.Second} }, "realtime: the HTTP client has a 30s timeout, which would cut the stream; use one without"},
	} {
		o := ok
		tc.mod(&o)
		_, err := New(o)
		require.EqualError(t, err, tc.want)
	}
	c, err := New(ok)
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:8090/api/realtime", c.streamURL)
	c, err = New(Options{BaseURL: "https://nanny.example/base/", Tokens: ok.Tokens, Handler: ok.Handler})
	require.NoError(t, err)
	require.Equal(t, "https://nanny.example/base/api/realtime", c.streamURL)
	require.Equal(t, DefaultSubscriptions, c.o.Subscriptions)
}
