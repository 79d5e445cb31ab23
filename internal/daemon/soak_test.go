package daemon

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/metrics"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

var soak = flag.Bool("soak", false, "run the long daemon soak (10 000 reconnects, 100 000 metric posts) instead of the short one (1000, 10 000)")

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestSoak runs the whole daemon against the test backend through 1000
// realtime reconnects (idle closes, dropped streams, 500s on connect and
// on the records API) and 10 000 metric posts (500s and resets among
// them), while the portal creates investigations, some of them while no
// stream is open. Every investigation runs exactly once and is
// recorded; every metrics sample is delivered or replaced by a newer one
// during an outage, and the last one arrives; goroutines and heap stay
// flat.
func TestSoak(t *testing.T) {
	reconnects, posts, investigations := 1000, 10000, 20
	if *soak {
		reconnects, posts, investigations = 10000, 100000, 100
	}
	if testing.Short() {
		t.Skip("the soak takes seconds; -short skips it")
	}
	noLeaks(t)
	var steps []openaitest.Step
	for range investigations {
		steps = append(steps, openaitest.Reply(resolution))
	}
	// The server keeps few requests, so that its log, full early, is not
	// mistaken for growth.
	e := newEnv(t, envOptions{server: nannyapitest.Options{IdleTimeout: 5 * time.Millisecond, MaxRecorded: 64}}, steps...)
	e.rtSleep.setFree()
	e.opts.Config.Daemon.MaxConcurrentInvestigations = 2

	// Metrics: a payload per collection, numbered, until posts were
	// collected; the clock's waits end at once. Every 100th send fails
	// (a 500, or a reset connection).
	var mu sync.Mutex
	collected, metricFaults := 0, 0
	g := newGated(posts, func(context.Context) (metrics.Payload, error) {
		mu.Lock()
		collected++
		n := collected
		if n%100 == 50 {
			f := nannyapitest.Fault{Status: 500, Times: 1}
			if n%200 == 50 {
				f = nannyapitest.Fault{Reset: true, Times: 1}
			}
			e.srv.Inject("ingest-metrics", f)
			metricFaults++
		}
		mu.Unlock()
		p := samplePayload()
		p.SystemMetrics.MemoryUsedGB = float64(n) / 100
		return p, nil
	})
	m, err := NewMetrics(MetricsOptions{Config: e.opts.Config, Client: e.cl, Collect: g.Collect, Clock: newStepClock()})
	require.NoError(t, err)
	e.opts.Metrics = m
	e.start()

	rt := e.d.Realtime()
	subscribes := func() uint64 { return rt.Stats().Subscribes }
	var ids []string
	connectFaults, drops := 0, 0
	warm := uint64(reconnects / 10)
	var baseG int
	var baseHeap uint64
	start := time.Now()
	every := reconnects / investigations
	for i := uint64(1); i <= uint64(reconnects); i++ {
		e.waitUntil(fmt.Sprintf("subscription %d", i), func() bool { return subscribes() >= i })
		if i == warm {
			baseG, baseHeap = runtime.NumGoroutine(), heapInUse()
		}
		switch {
		case i%uint64(every) == 0:
			// Some are created while the stream is down, for the catch-up.
			if i%(2*uint64(every)) == 0 {
				e.srv.Inject("GET /api/realtime", nannyapitest.Fault{Status: 500, Times: 1})
				connectFaults++
			}
			id, err := e.srv.CreateInvestigation(e.reg.AgentID, fmt.Sprintf("Soak investigation number %d", len(ids)+1), "high")
			require.NoError(t, err)
			ids = append(ids, id)
		case i%10 == 3:
			e.srv.DropStreams()
			drops++
		case i%10 == 6:
			e.srv.Inject("GET /api/realtime", nannyapitest.Fault{Status: 500, Times: 1})
			connectFaults++
		case i%10 == 8:
			e.srv.Inject("GET /api/collections/patch_operations/records", nannyapitest.Fault{Status: 503, Times: 1})
		}
	}
	e.waitUntil("every metrics sample", func() bool {
		mu.Lock()
		defer mu.Unlock()
		st := m.Status()
		return collected == posts && !st.Unreachable && e.srv.Count("ingest-metrics") >= int(st.Sent)
	})
	defer func() {
		if t.Failed() {
			for _, id := range ids {
				rec := e.record(id)
				t.Logf("investigation %s: status %v, plan %q", id, rec["status"], rec["resolution_plan"])
			}
			t.Logf("daemon %+v; realtime %+v; metrics %+v", e.d.Stats(), e.d.Realtime().Stats(), m.Status())
		}
	}()
	// The request log keeps only the newest requests: the records say
	// what the agent PATCHed (its plan text, which the backend's own
	// completion does not write).
	e.waitUntil("every investigation recorded", func() bool {
		for _, id := range ids {
			if e.record(id)["resolution_plan"] != wantPlan {
				return false
			}
		}
		return true
	})
	elapsed := time.Since(start)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= baseG+8 }, waitFor, 10*time.Millisecond,
		"goroutines grew from %d to %d", baseG, runtime.NumGoroutine())
	endG, endHeap := runtime.NumGoroutine(), heapInUse()
	st := m.Status()
	rst := rt.Stats()
	t.Logf("%d reconnects, %d metric posts (%d delivered), %d investigations in %s; goroutines %d -> %d; heap %d -> %d bytes; realtime failures %d, catch-ups %d",
		rst.Subscribes, e.srv.Count("ingest-metrics"), st.Sent, len(ids), elapsed.Round(time.Millisecond), baseG, endG, baseHeap, endHeap, rst.Failures, rst.Catchups)
	require.Less(t, int64(endHeap)-int64(baseHeap), int64(2<<20), "heap grew")

	err, _ = e.stop()
	require.NoError(t, err)

	// Investigations: each run once, recorded completed.
	ds := e.d.Stats()
	require.Equal(t, uint64(len(ids)), ds.Started)
	require.Equal(t, uint64(len(ids)), ds.Completed)
	for _, id := range ids {
		require.Equal(t, "completed", e.record(id)["status"], id)
	}
	// One turn each: the model was scripted with exactly one reply per
	// investigation and fails the test on any request beyond.
	require.Len(t, e.model.Requests(), len(ids))
	require.Zero(t, e.model.Left())
	// Metrics: the last sample arrived; every post the backend stored is
	// a delivery; every fault cost one failed attempt.
	stored, ok := e.srv.LatestMetrics(e.reg.AgentID)
	require.True(t, ok)
	require.Equal(t, float64(posts)/100, stored.MemoryUsedGB)
	agent, _ := e.srv.Agent(e.reg.AgentID)
	require.Equal(t, int(st.Sent), agent.MetricsCount)
	mu.Lock()
	require.Equal(t, posts/100, metricFaults)
	mu.Unlock()
	require.Equal(t, uint64(metricFaults), st.Failures)
	require.Equal(t, e.srv.Count("ingest-metrics"), int(st.Sent)+metricFaults)
	require.GreaterOrEqual(t, int(st.Sent), posts-metricFaults, "at most one sample replaced per fault")
	// Realtime: the faults were failures, each followed by a reconnect
	// (a fault injected while another waited replaces it, and a drop
	// may find no stream open: these are lower bounds).
	require.GreaterOrEqual(t, rst.Subscribes, uint64(reconnects))
	require.GreaterOrEqual(t, rst.Failures, uint64(drops/2+connectFaults/2))
	require.GreaterOrEqual(t, rst.Catchups, uint64(reconnects*9/10))
	require.Zero(t, rst.Malformed)
}
