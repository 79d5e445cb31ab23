package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// listPending is the catch-up of §2.11 through the records API.
func listPending(ctx context.Context, base, token, collection, filter string) ([]json.RawMessage, error) {
	u := base + "/api/collections/" + collection + "/records?perPage=1000&filter=" + url.QueryEscape(filter)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list %s: %d", collection, resp.StatusCode)
	}
	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, err
	}
	return page.Items, nil
}

// TestAgainstNannyAPI runs the client against the in-process backend:
// live events, a dropped stream during which work is created (found by
// catch-up), idle closes followed by immediate reconnects, and every
// record acted on exactly once whichever way it came.
func TestAgainstNannyAPI(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	srv := nannyapitest.New(t, nannyapitest.Options{IdleTimeout: 300 * time.Millisecond})
	u := srv.CreateUser("u1@example.com")
	reg := srv.RegisterAgent(u, "testhost")

	type delivery struct {
		how string // "live" or "catch-up"
		ev  Event
	}
	got := make(chan delivery, 64)
	catchups := make(chan struct{}, 1024)
	slept := make(chan time.Duration, 16)
	release := make(chan struct{})
	dedup := NewDedup(0)
	pending := []struct{ coll, filter string }{
		{nannyapitest.Investigations, "status='pending'"},
		{nannyapitest.PatchOperations, "status='pending'"},
		{nannyapitest.RebootOperations, "status='sent'"},
	}
	c, err := New(Options{
		BaseURL: srv.URL,
		Tokens:  &fakeTokens{tokens: []string{reg.AccessToken}},
		Dedup:   dedup,
		Handler: func(ctx context.Context, ev Event) { got <- delivery{"live", ev} },
		Catchup: func(ctx context.Context) error {
			for _, p := range pending {
				items, err := listPending(ctx, srv.URL, reg.AccessToken, p.coll, p.filter)
				if err != nil {
					return err
				}
				for _, it := range items {
					k, err := KeyFor(p.coll, "create", it)
					if err != nil {
						return err
					}
					if dedup.Add(k) {
						id, _, _ := recordIdentity(it)
						got <- delivery{"catch-up", Event{Collection: p.coll, Action: "create", ID: id, Record: it, Key: k}}
					}
				}
			}
			catchups <- struct{}{}
			return nil
		},
		Backoff:          Backoff{Initial: time.Second, Max: 8 * time.Second},
		MinStableSession: 100 * time.Millisecond,
		Rand:             func() float64 { return 0.5 },
		// The backoff wait lasts until the test has changed the backend.
		Sleep: func(ctx context.Context, d time.Duration) error {
			slept <- d
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	recv(t, catchups, "the first catch-up")
	require.Equal(t, [][]string{{"investigations", "patch_operations", "reboot_operations"}}, srv.Subscriptions(reg.AgentID))
	subs := srv.RequestsFor("POST /api/realtime")
	require.Equal(t, "Bearer "+reg.AccessToken, subs[0].Header.Get("Authorization"))
	require.Equal(t, 204, subs[0].Status)

	seen := map[string]string{}
	expect := func(collection, id string) delivery {
		t.Helper()
		d := recv(t, got, collection+" "+id)
		require.Equal(t, collection, d.ev.Collection)
		require.Equal(t, "create", d.ev.Action)
		require.Equal(t, id, d.ev.ID)
		rec, ok := srv.Record(collection, id)
		require.True(t, ok)
		want, err := json.Marshal(rec)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(d.ev.Record))
		require.NotContains(t, seen, id, "delivered twice")
		seen[id] = d.how
		return d
	}

	// Live (or, should an idle close fall just then, by catch-up).
	invID, err := srv.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)
	expect("investigations", invID)

	// The next connect, after an idle close, fails; while the agent waits
	// out its backoff, a patch operation is made.
	srv.Inject("GET /api/realtime", nannyapitest.Fault{Status: 500, Times: 1})
	require.Equal(t, 750*time.Millisecond, recv(t, slept, "the backoff after the 500"))
	require.Equal(t, "connect "+srv.URL+"/api/realtime: 500 Something went wrong while processing your request.", c.Stats().LastError)
	patchID, err := srv.CreatePatchOperation(reg.AgentID, nannyapitest.PatchOperation{})
	require.NoError(t, err)
	close(release)
	require.Equal(t, "catch-up", expect("patch_operations", patchID).how, "nothing was listening when it was made")

	// Idle closes come every 300 ms: each is followed by a new
	// subscription and catch-up at once, with no backoff, and the
	// pending investigation and patch are not delivered again.
	before := c.Stats().Subscribes
	for c.Stats().Subscribes < before+2 {
		recv(t, catchups, "a catch-up after an idle close")
	}
	rbID, err := srv.CreateRebootOperation(reg.AgentID, "kernel update", 120)
	require.NoError(t, err)
	expect("reboot_operations", rbID)
	for c.Stats().Subscribes < before+3 {
		recv(t, catchups, "a catch-up after an idle close")
	}

	require.Empty(t, slept, "idle closes caused no backoff")
	require.Equal(t, uint64(1), c.Stats().Failures)

	cancel()
	require.NoError(t, recv(t, done, "Run to return"))
	require.Equal(t, uint64(1), c.Stats().Failures)
	require.Len(t, seen, 3)
	none(t, got, "a second delivery")
	srv.Close()
	goleak.VerifyNone(t, ignore)
}

// TestAgainstNannyAPIDroppedStream: a connection the backend drops is an
// error, followed by a backoff, a new subscription and a catch-up.
func TestAgainstNannyAPIDroppedStream(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u1@example.com"), "testhost")
	h := newHarness(t)
	h.opts.BaseURL = srv.URL
	h.tokens.tokens = []string{reg.AccessToken}
	h.run()
	recv(t, h.catchups, "the first catch-up")
	srv.DropStreams()
	recv(t, h.catchups, "the catch-up after the drop")
	require.Equal(t, []time.Duration{750 * time.Millisecond}, h.sleeps())
	require.Contains(t, h.client.Stats().LastError, "read stream: unexpected EOF")
	require.NoError(t, srv.WaitSubscribed(context.Background(), reg.AgentID, 1))
	id, err := srv.CreateRebootOperation(reg.AgentID, "kernel update", 120)
	require.NoError(t, err)
	require.Equal(t, id, recv(t, h.events, "the reboot").ID)
	h.stop()
	require.Equal(t, Stats{Connects: 2, Subscribes: 2, Events: 1, Catchups: 2, Failures: 1, LastError: h.client.Stats().LastError}, h.client.Stats())
	srv.Close()
}
