package realtime

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var soak = flag.Bool("soak", false, "run the long realtime soak (20 000 reconnects) instead of the short one (1000)")

// TestSoakReconnects cycles the stream through every way it ends (the idle
// close, a half-written event, a cut connection, a 500 on the next
// connect) and requires each session's event to arrive exactly once while
// goroutines and heap stay flat.
func TestSoakReconnects(t *testing.T) {
	n := 1000
	if *soak {
		n = 20000
	}
	h := newHarness(t)
	h.pb.quiet = true
	h.opts.Dedup = NewDedup(64) // full early, so that a growing window is not mistaken for a leak
	sleeps := 0
	h.opts.Sleep = func(ctx context.Context, d time.Duration) error {
		sleeps++
		h.clock.Advance(d)
		return ctx.Err()
	}
	h.opts.Catchup = func(context.Context) error {
		h.catchups <- struct{}{}
		return nil
	}
	h.run()

	warm := n / 10
	var baseG int
	var baseHeap uint64
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	faults := 0
	start := time.Now()
	for i := 0; i < n; i++ {
		c := h.session()
		id := fmt.Sprintf("soak%011d", i)
		c.Send(recordFrame(c.id, "reboot_operations", "create", `{"id":"`+id+`","status":"sent","timeout_seconds":120}`))
		ev := recv(t, h.events, "the session's event")
		require.Equal(t, id, ev.ID)
		if i == warm {
			baseG, baseHeap = runtime.NumGoroutine(), heap()
		}
		if i == n-1 {
			break
		}
		switch i % 10 {
		case 3:
			c.Send("id:" + c.id + "\nevent:reboot_operations\ndata:{\"rec")
			h.idleClose(c)
			faults++
		case 6:
			c.Abort()
			faults++
		case 8:
			h.pb.FailConnects(500)
			h.idleClose(c)
			faults++
		default:
			h.idleClose(c)
		}
	}
	elapsed := time.Since(start)
	// The last session is open, as it was at the warm-up sample.
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= baseG+2 }, 10*time.Second, 10*time.Millisecond,
		"goroutines grew from %d", baseG)
	endG, endHeap := runtime.NumGoroutine(), heap()
	t.Logf("%d reconnects in %s; goroutines %d -> %d; heap %d -> %d bytes; %d backoff waits",
		n, elapsed.Round(time.Millisecond), baseG, endG, baseHeap, endHeap, sleeps)
	require.Less(t, int64(endHeap)-int64(baseHeap), int64(1<<20), "heap grew")
	h.stop()
	st := h.client.Stats()
	require.Equal(t, uint64(n), st.Events, "every session's event delivered once")
	require.Equal(t, uint64(n), st.Subscribes)
	require.Equal(t, uint64(n+n/10), st.Connects, "one extra connect per 500")
	require.Equal(t, faults, sleeps, "one backoff per fault, none after the idle close")
	require.Zero(t, st.Duplicates)
	require.Zero(t, st.Malformed)
}
