package daemon

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestPortalInvestigation: the portal creates an investigation; its SSE
// event makes the daemon run it with the NannyAPI engine (commands run
// for real, in the sandbox as root), and the daemon PATCHes it completed
// with the plan.
func TestPortalInvestigation(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "app.log")
	require.NoError(t, os.WriteFile(f, []byte("start\nERROR: No space left on device\n"), 0o644))
	diag := `{"response_type": "diagnostic", "reasoning": "read the log", "commands": [` + jsonString("cat "+f) + `, "uname -s"]}`
	e := newEnv(t, envOptions{}, openaitest.Reply(diag), openaitest.Reply(resolution))
	e.start()

	id, err := e.srv.CreateInvestigation(e.reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)
	e.waitUntil("the investigation recorded", func() bool { return len(e.patches(id)) == 1 })
	require.Equal(t, []map[string]any{{"status": "completed", "resolution_plan": wantPlan}}, e.patches(id))
	rec := e.record(id)
	require.Equal(t, "completed", rec["status"])
	require.Equal(t, wantPlan, rec["resolution_plan"])
	require.Equal(t, 2, e.chats(id))

	// The second turn carried the commands' real output.
	calls := e.tz.Calls()
	require.Len(t, calls, 2)
	require.True(t, strings.HasSuffix(calls[0].Messages[0].Content, "ISSUE DESCRIPTION:\nDisk is full on /var partition"))
	var res protocol.Results
	require.NoError(t, json.Unmarshal([]byte(calls[1].Messages[2].Content), &res))
	require.Equal(t, "start\nERROR: No space left on device\n", res.CommandResults[0].Output)
	require.Equal(t, "Linux\n", res.CommandResults[1].Output)

	err, _ = e.stop()
	require.NoError(t, err)
	st := e.d.Stats()
	require.Equal(t, uint64(1), st.Queued)
	require.Equal(t, uint64(1), st.Started)
	require.Equal(t, uint64(1), st.Completed)
	require.Zero(t, st.Failed)
}

// TestReconnectCatchUp: the idle close is followed by a reconnect at
// once (no backoff wait); an investigation created while the stream is
// down (the reconnect after an idle close fails and waits out its
// backoff) is found by the catch-up after the next subscription and run
// exactly once.
func TestReconnectCatchUp(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{server: nannyapitest.Options{IdleTimeout: 150 * time.Millisecond}}, openaitest.Reply(resolution))
	e.start()
	// Three idle closes, each reconnected at once.
	e.waitUntil("three reconnects", func() bool { return e.d.Realtime().Stats().Subscribes >= 4 })
	require.Empty(t, e.rtSleep.got(), "an idle close is not an error: no backoff")
	e.waitUntil("the catch-ups", func() bool { return e.d.Stats().Catchups >= 4 })

	// The reconnect after the next idle close fails; while the client
	// waits out its backoff, the portal creates an investigation nobody
	// hears of.
	e.srv.Inject("GET /api/realtime", nannyapitest.Fault{Status: 500, Times: 1})
	select {
	case d := <-e.rtSleep.called:
		require.Equal(t, 750*time.Millisecond, d, "half to all of the first delay, jitter 0.5")
	case <-time.After(waitFor):
		t.Fatal("no backoff after the failed reconnect")
	}
	require.Zero(t, e.srv.Subscribed(e.reg.AgentID))
	id, err := e.srv.CreateInvestigation(e.reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)
	catchups := e.d.Stats().Catchups
	e.rtSleep.release <- struct{}{}

	e.waitUntil("the investigation recorded", func() bool { return len(e.patches(id)) == 1 })
	require.Equal(t, "completed", e.record(id)["status"])
	// The catch-up counts itself once it has gone through every
	// collection, which may be after the run it started.
	e.waitUntil("the catch-up counted", func() bool { return e.d.Stats().Catchups > catchups })
	st := e.d.Stats()
	require.Equal(t, uint64(1), st.CatchupRecords, "the catch-up offered the one record the stream missed")
	// More idle closes and catch-ups later, and still one run.
	e.waitUntil("two more catch-ups", func() bool { return e.d.Stats().Catchups >= st.Catchups+2 })
	err, _ = e.stop()
	require.NoError(t, err)
	require.Equal(t, 1, e.chats(id))
	require.Len(t, e.patches(id), 1)
	require.Equal(t, uint64(1), e.d.Stats().Started)
}

// TestDuplicatesRunOnce: an investigation seen again while it waits
// for the worker (an update event, then a catch-up after a dropped
// stream) is not run again, and the same record delivered live and by
// catch-up is offered once.
func TestDuplicatesRunOnce(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{}, openaitest.Reply(resolution), openaitest.Reply(resolution))
	e.rtSleep.setFree()
	// The first investigation holds the worker (collecting facts) until
	// the test has shown the second one to the daemon several times.
	hold := make(chan struct{})
	facts := e.opts.Facts
	held := false
	e.opts.Facts = func(ctx context.Context) *sysinfo.Facts {
		if !held {
			held = true
			select {
			case <-hold:
			case <-ctx.Done():
			}
		}
		return facts(ctx)
	}
	e.start()
	e.waitUntil("the first catch-up", func() bool { return e.d.Stats().Catchups == 1 })
	first, err := e.srv.CreateInvestigation(e.reg.AgentID, "The first investigation here", "high")
	require.NoError(t, err)
	e.waitUntil("the first started", func() bool { return e.d.Stats().Started == 1 })
	second, err := e.srv.CreateInvestigation(e.reg.AgentID, "The second investigation here", "low")
	require.NoError(t, err)
	e.waitUntil("the second queued", func() bool { return e.d.Stats().Queued == 2 })
	require.NoError(t, e.srv.UpdateRecord(nannyapitest.Investigations, second, map[string]any{"priority": "high"}))
	e.waitUntil("the update seen", func() bool { return e.d.Stats().SkippedSeen == 1 })
	catchups := e.d.Stats().Catchups
	e.srv.DropStreams()
	e.waitUntil("the next catch-up", func() bool { return e.d.Stats().Catchups > catchups })
	st := e.d.Stats()
	// The first is still pending and unchanged: its copy in the catch-up
	// is the record the stream delivered, dropped by the shared window.
	// The second changed since its create event: offered, and refused as
	// already taken.
	require.Equal(t, uint64(1), st.CatchupRecords)
	require.Equal(t, uint64(2), st.SkippedSeen)
	close(hold)
	e.waitUntil("both recorded", func() bool { return len(e.patches(first)) == 1 && len(e.patches(second)) == 1 })
	err, _ = e.stop()
	require.NoError(t, err)
	st = e.d.Stats()
	require.Equal(t, uint64(2), st.Started)
	require.Equal(t, uint64(2), st.Completed)
	require.Equal(t, 1, e.chats(first))
	require.Equal(t, 1, e.chats(second))
	require.Equal(t, "completed", e.record(second)["status"])
}

// TestOwnInvestigationsSkipped: investigations the agent created (CLI
// investigations) are found by the first catch-up or come as create
// events; the daemon runs neither.
func TestOwnInvestigationsSkipped(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	before, err := e.cl.CreateInvestigation(context.Background(), nannyapi.CreateInvestigationRequest{AgentID: e.reg.AgentID, Issue: "The CLI asked about this"})
	require.NoError(t, err)
	e.start()
	e.waitUntil("the catch-up", func() bool { return e.d.Stats().Catchups == 1 })
	require.Equal(t, uint64(1), e.d.Stats().CatchupRecords)
	require.Equal(t, uint64(1), e.d.Stats().SkippedOwn)
	live, err := e.cl.CreateInvestigation(context.Background(), nannyapi.CreateInvestigationRequest{AgentID: e.reg.AgentID, Issue: "The CLI asked about that"})
	require.NoError(t, err)
	e.waitUntil("the create event", func() bool { return e.d.Stats().SkippedOwn == 2 })
	err, _ = e.stop()
	require.NoError(t, err)
	for _, id := range []string{before.ID, live.ID} {
		require.Zero(t, e.chats(id))
		require.Empty(t, e.patches(id))
		require.Equal(t, "pending", e.record(id)["status"])
	}
	require.Zero(t, e.d.Stats().Started)
}

// TestBackendFailures: a proxy that answers 500 (a misconfigured
// backend) or hangs is retried a bounded number of times with the
// policy's delays, then the investigation is recorded failed with the
// reason; the daemon goes on.
func TestBackendFailures(t *testing.T) {
	noLeaks(t)
	// A turn through the proxy is bounded by the client's 500 ms; the
	// model has spare replies in case a busy machine makes the recovery's
	// first turn miss it.
	e := newEnv(t, envOptions{chatTimeout: 500 * time.Millisecond},
		openaitest.Reply(resolution), openaitest.Reply(resolution), openaitest.Reply(resolution), openaitest.Reply(resolution))
	e.opts.EngineRetry.Initial = time.Second
	e.opts.EngineRetry.Max = 3 * time.Second
	e.opts.EngineRetry.MaxAttempts = 4
	e.start()

	e.srv.Inject("POST /api/investigations", nannyapitest.Fault{Status: 500})
	id, err := e.srv.CreateInvestigation(e.reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)
	e.waitUntil("the failure recorded", func() bool { return len(e.patches(id)) == 1 })
	p := e.patches(id)[0]
	require.Equal(t, "failed", p["status"])
	require.Contains(t, p["resolution_plan"], "NannyAPI failed internally on investigation "+id)
	require.Contains(t, p["resolution_plan"], "gave up after 4 attempts")
	require.Equal(t, 4, e.srv.Count("POST /api/investigations"))
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, e.engineSleep.got())
	require.Equal(t, "failed", e.record(id)["status"])

	// A hung proxy: each turn ends at the client's timeout.
	e.srv.Inject("POST /api/investigations", nannyapitest.Fault{Hang: true})
	hung, err := e.srv.CreateInvestigation(e.reg.AgentID, "Load is high on the host", "high")
	require.NoError(t, err)
	e.waitUntil("the hang recorded", func() bool { return len(e.patches(hung)) == 1 })
	p = e.patches(hung)[0]
	require.Equal(t, "failed", p["status"])
	require.Contains(t, p["resolution_plan"], "no answer within 500ms")
	require.Contains(t, p["resolution_plan"], "gave up after 4 attempts")

	// Recovered: the next one completes.
	e.srv.ClearFaults()
	ok, err := e.srv.CreateInvestigation(e.reg.AgentID, "Disk is full again on /var", "high")
	require.NoError(t, err)
	e.waitUntil("the recovery", func() bool { return len(e.patches(ok)) == 1 })
	require.Equal(t, "completed", e.patches(ok)[0]["status"])
	err, _ = e.stop()
	require.NoError(t, err)
	require.Equal(t, uint64(2), e.d.Stats().Failed)
}

// TestCatchUpFailuresBounded: a records API that answers 500 makes the
// catch-up retry with growing, bounded delays, and the pending work is
// found once it recovers.
func TestCatchUpFailuresBounded(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{}, openaitest.Reply(resolution))
	e.srv.Inject("GET /api/collections/investigations/records", nannyapitest.Fault{Status: 500, Times: 5})
	id, err := e.srv.CreateInvestigation(e.reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)
	e.start()
	for range 5 {
		select {
		case <-e.rtSleep.called:
		case <-time.After(waitFor):
			t.Fatal("no catch-up retry")
		}
		e.rtSleep.release <- struct{}{}
	}
	e.waitUntil("the investigation recorded", func() bool { return len(e.patches(id)) == 1 })
	require.Equal(t, []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 6 * time.Second, 6 * time.Second}, e.rtSleep.got(),
		"doubling from 1 s to the 8 s cap, jitter 0.5")
	err, _ = e.stop()
	require.NoError(t, err)
}

// TestShutdown: stopping while an investigation waits on the backend
// cancels it, records it failed "agent shutting down", and returns well
// within the bound, leaving no goroutine behind.
func TestShutdown(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	e.srv.Inject("POST /api/investigations", nannyapitest.Fault{Hang: true})
	e.start()
	id, err := e.srv.CreateInvestigation(e.reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)
	e.waitUntil("the first turn", func() bool { return e.srv.Count("POST /api/investigations") == 1 })
	err, took := e.stop()
	require.NoError(t, err)
	require.Less(t, took, DefaultShutdownTimeout, "bounded by the shutdown timeout")
	require.Equal(t, []map[string]any{{"status": "failed", "resolution_plan": "The agent could not finish the investigation: agent shutting down"}}, e.patches(id))
	require.Equal(t, "failed", e.record(id)["status"])
	e.waitUntil("the stream closed on the server", func() bool { return e.srv.Streams() == 0 })
}

// TestShutdownBoundedWhenStuck: a component that ignores the stop makes
// Run give up after ShutdownTimeout rather than hang.
func TestShutdownBoundedWhenStuck(t *testing.T) {
	e := newEnv(t, envOptions{})
	release := make(chan struct{})
	e.opts.Auth = RunFunc(func(ctx context.Context) error { <-release; return nil })
	e.opts.ShutdownTimeout = 50 * time.Millisecond
	e.start()
	err, _ := e.stop()
	require.ErrorIs(t, err, ErrShutdownTimeout)
	close(release)
}

// TestComponentErrorEndsDaemon: a component that fails (not a backend
// error: those are retried) stops the others and is returned.
func TestComponentErrorEndsDaemon(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	e.opts.Auth = RunFunc(func(ctx context.Context) error { return context.DeadlineExceeded })
	d, err := New(e.opts)
	require.NoError(t, err)
	err = d.Run(context.Background())
	require.ErrorContains(t, err, "auth: context deadline exceeded")
}

// noLeaks checks, after every cleanup of the test (the servers' too),
// that the goroutines are those from before it.
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func TestNewChecks(t *testing.T) {
	_, err := New(Options{})
	require.ErrorContains(t, err, "a backend client and its token source are required")
	e := newEnv(t, envOptions{})
	o := e.opts
	o.AgentID = ""
	_, err = New(o)
	require.ErrorContains(t, err, "register first")
}
