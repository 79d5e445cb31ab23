package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/metrics"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

// stepClock is the metrics Sender's clock for tests: every wait ends at
// once and moves the clock on by its length; the waits are recorded.
type stepClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
	fired chan struct{}
}

func newStepClock() *stepClock {
	return &stepClock{now: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), fired: make(chan struct{}, 1)}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	now := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- now
	return ch, func() bool { return false }
}

func (c *stepClock) got() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// gated lets n collections through, then blocks until released (or the
// daemon stops): the Sender's pace is the test's.
type gated struct {
	mu      sync.Mutex
	left    int
	more    chan int
	collect metrics.CollectFunc
	count   int
}

func newGated(n int, collect metrics.CollectFunc) *gated {
	return &gated{left: n, more: make(chan int, 1), collect: collect}
}

func (g *gated) Collect(ctx context.Context) (metrics.Payload, error) {
	for {
		g.mu.Lock()
		if g.left > 0 {
			g.left--
			g.count++
			g.mu.Unlock()
			return g.collect(ctx)
		}
		g.mu.Unlock()
		select {
		case n := <-g.more:
			g.mu.Lock()
			g.left += n
			g.mu.Unlock()
		case <-ctx.Done():
			return metrics.Payload{}, ctx.Err()
		}
	}
}

// number reads a JSON number as written.
func number(t *testing.T, v any) json.Number {
	t.Helper()
	n, ok := v.(json.Number)
	require.True(t, ok, "%v (%T) is not a number", v, v)
	return n
}

// twoDecimals: a figure with at most two decimals, at least 0.
func twoDecimals(t *testing.T, name string, v any) float64 {
	t.Helper()
	f, err := number(t, v).Float64()
	require.NoError(t, err, name)
	require.GreaterOrEqual(t, f, 0.0, name)
	require.InDelta(t, math.Round(f*100), f*100, 1e-6, "%s = %v has more than two decimals", name, f)
	return f
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestMetricsFromThisHost: the daemon sends this host's real metrics at
// start; the payload is checked field by field against the contract
// (§2.7), the test backend (which answers 500 where the real one does)
// accepts it, and stores exactly what was sent.
func TestMetricsFromThisHost(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	clock := newStepClock()
	g := newGated(1, metrics.NewCollector(metrics.Options{}).Collect)
	var sent []time.Time
	var mu sync.Mutex
	m, err := NewMetrics(MetricsOptions{Config: e.opts.Config, Client: e.cl, Collect: g.Collect, Clock: clock,
		Sent: func(at time.Time) { mu.Lock(); sent = append(sent, at); mu.Unlock() }})
	require.NoError(t, err)
	e.opts.Metrics = m
	e.start()
	e.waitUntil("the first metrics", func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) == 1 })

	reqs := e.srv.RequestsFor("ingest-metrics")
	require.Len(t, reqs, 1)
	require.Equal(t, 200, reqs[0].Status)
	require.Equal(t, "application/json", reqs[0].Header.Get("Content-Type"))
	require.Equal(t, "Bearer "+e.reg.AccessToken, reqs[0].Header.Get("Authorization"))
	dec := json.NewDecoder(bytes.NewReader(reqs[0].Body))
	dec.UseNumber()
	var body map[string]any
	require.NoError(t, dec.Decode(&body))
	require.Equal(t, []string{"action", "all_ips", "arch", "kernel_version", "os_info", "os_type", "os_version", "platform_family",
		"primary_ip", "system_metrics", "version"}, keys(body))
	require.Equal(t, "ingest-metrics", body["action"])
	require.Equal(t, "linux", body["os_type"])
	require.NotEmpty(t, body["platform_family"])
	require.NotEmpty(t, body["arch"])
	kernel := body["kernel_version"].(string)
	require.NotEmpty(t, kernel)
	require.LessOrEqual(t, len(kernel), 45)
	require.LessOrEqual(t, len(body["version"].(string)), 50)
	require.LessOrEqual(t, len(body["primary_ip"].(string)), 45)
	_, isList := body["all_ips"].([]any)
	require.True(t, isList || body["all_ips"] == nil)

	sm := body["system_metrics"].(map[string]any)
	require.Equal(t, []string{"cpu_cores", "cpu_percent", "disk_total_gb", "disk_usage_percent", "disk_used_gb", "filesystems",
		"kernel_version", "load_average", "memory_percent", "memory_total_gb", "memory_used_gb", "network_stats"}, keys(sm))
	cores := number(t, sm["cpu_cores"])
	require.NotContains(t, cores.String(), ".", "cpu_cores is an integer")
	nc, err := cores.Int64()
	require.NoError(t, err)
	require.Positive(t, nc)
	figures := map[string]float64{}
	for _, k := range []string{"cpu_percent", "memory_used_gb", "memory_total_gb", "memory_percent", "disk_used_gb", "disk_total_gb", "disk_usage_percent"} {
		figures[k] = twoDecimals(t, k, sm[k])
	}
	for _, k := range []string{"cpu_percent", "memory_percent", "disk_usage_percent"} {
		require.LessOrEqual(t, figures[k], 100.0, k)
	}
	require.Positive(t, figures["memory_total_gb"])
	require.Positive(t, figures["disk_total_gb"])
	la := sm["load_average"].(map[string]any)
	require.Equal(t, []string{"fifteen_min", "five_min", "one_min"}, keys(la))
	for k, v := range la {
		twoDecimals(t, "load_average."+k, v)
	}
	ns := sm["network_stats"].(map[string]any)
	require.Equal(t, []string{"in_gb", "out_gb"}, keys(ns))
	for k, v := range ns {
		twoDecimals(t, "network_stats."+k, v)
	}
	fs := sm["filesystems"].([]any)
	require.NotEmpty(t, fs, "the root filesystem at least")
	fsJSON, err := json.Marshal(fs)
	require.NoError(t, err)
	require.Less(t, len(fsJSON), 5000)
	for _, f := range fs {
		fm := f.(map[string]any)
		require.Equal(t, []string{"device", "free_gb", "mount_path", "total_gb", "usage_percent", "used_gb"}, keys(fm))
		require.True(t, strings.HasPrefix(fm["mount_path"].(string), "/"))
		for _, k := range []string{"used_gb", "free_gb", "total_gb", "usage_percent"} {
			twoDecimals(t, "filesystems."+k, fm[k])
		}
		require.LessOrEqual(t, twoDecimals(t, "usage_percent", fm["usage_percent"]), 100.0)
	}

	// What the backend stored is what was sent.
	stored, ok := e.srv.LatestMetrics(e.reg.AgentID)
	require.True(t, ok)
	require.Equal(t, int(nc), stored.CPUCores)
	require.Equal(t, figures["cpu_percent"], stored.CPUPercent)
	require.Equal(t, figures["memory_total_gb"], stored.MemoryTotalGB)
	require.Equal(t, figures["disk_usage_percent"], stored.DiskUsagePercent)
	require.JSONEq(t, string(fsJSON), stored.Filesystems)
	agent, _ := e.srv.Agent(e.reg.AgentID)
	require.Equal(t, kernel, agent.KernelVersion)
	require.Equal(t, body["platform_family"], agent.PlatformFamily)
	require.Equal(t, body["arch"], agent.Arch)
	require.Equal(t, 1, agent.MetricsCount)
	err, _ = e.stop()
	require.NoError(t, err)
}

// TestMetricsOutage: while ingest-metrics answers 500 (or hangs), the
// Sender retries the latest sample with http_transport's doubling,
// bounded delays; the first retry that goes through delivers it. A
// payload the backend refuses for good (its validation 500) is dropped,
// not retried.
func TestMetricsOutage(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	e.opts.Config.HTTPTransport.InitialRetryDelaySec = 10
	e.opts.Config.HTTPTransport.MaxRetryDelaySec = 35
	// Every retry falls before the next sample is due.
	e.opts.Config.MetricsInterval = 604800
	clock := newStepClock()
	n := 0
	g := newGated(1, func(context.Context) (metrics.Payload, error) {
		n++
		p := samplePayload()
		p.SystemMetrics.CPUPercent = float64(n)
		return p, nil
	})
	m, err := NewMetrics(MetricsOptions{Config: e.opts.Config, Client: e.cl, Collect: g.Collect, Clock: clock})
	require.NoError(t, err)
	e.opts.Metrics = m
	e.srv.Inject("ingest-metrics", nannyapitest.Fault{Status: 500, Times: 4})
	e.start()
	e.waitUntil("five attempts", func() bool { return e.srv.Count("ingest-metrics") == 5 })
	e.waitUntil("the delivery", func() bool { return m.Status().Sent == 1 })
	require.Equal(t, []time.Duration{10 * time.Second, 20 * time.Second, 35 * time.Second, 35 * time.Second}, clock.got()[:4],
		"doubling from initial_retry_delay_sec, capped at max_retry_delay_sec")
	stored, _ := e.srv.LatestMetrics(e.reg.AgentID)
	require.Equal(t, 1.0, stored.CPUPercent, "the sample kept through the outage")

	// A validation 500 is final for that payload.
	e.srv.Inject("ingest-metrics", nannyapitest.Fault{Status: 500, Body: `{"error":"failed to save metrics"}`, Times: 1})
	g.more <- 2
	e.waitUntil("two more attempts", func() bool { return e.srv.Count("ingest-metrics") == 7 })
	e.waitUntil("the next delivery", func() bool { return m.Status().Sent == 2 })
	stored, _ = e.srv.LatestMetrics(e.reg.AgentID)
	require.Equal(t, 3.0, stored.CPUPercent)
	week := 604800 * time.Second
	require.Equal(t, []time.Duration{10 * time.Second, 20 * time.Second, 35 * time.Second, 35 * time.Second, week - 100*time.Second, week}, clock.got()[:6],
		"no retry of the refused payload: only the intervals waited")
	require.Equal(t, 7, e.srv.Count("ingest-metrics"))
	err, _ = e.stop()
	require.NoError(t, err)
}

func samplePayload() metrics.Payload {
	return metrics.Payload{
		Action: metrics.ActionIngestMetrics,
		SystemMetrics: metrics.SystemMetrics{
			CPUPercent: 12.5, CPUCores: 8, MemoryUsedGB: 3.21, MemoryTotalGB: 15.5, MemoryPercent: 20.71,
			DiskUsedGB: 40.12, DiskTotalGB: 100, DiskUsagePercent: 40.12,
			Filesystems:  []metrics.Filesystem{{MountPath: "/", UsedGB: 40.12, FreeGB: 59.88, TotalGB: 100, UsagePercent: 40.12}},
			LoadAverage:  metrics.LoadAverage{OneMin: 0.5, FiveMin: 0.4, FifteenMin: 0.3},
			NetworkStats: metrics.NetworkStats{InGB: 1.23, OutGB: 0.45}, KernelVersion: "6.8.0-45-generic",
		},
		OSInfo: "ubuntu", OSVersion: "24.04", OSType: "linux", PlatformFamily: "debian", Version: "0.1.0",
		PrimaryIP: "10.0.0.5", KernelVersion: "6.8.0-45-generic", Arch: "x86_64", AllIPs: []string{"10.0.0.5"},
	}
}

func TestClassifyMetricsError(t *testing.T) {
	perm := func(err error) bool {
		var p interface{ Permanent() bool }
		for e := err; e != nil; {
			if pp, ok := e.(interface{ Permanent() bool }); ok {
				p = pp
				break
			}
			u, ok := e.(interface{ Unwrap() error })
			if !ok {
				break
			}
			e = u.Unwrap()
		}
		return p != nil && p.Permanent()
	}
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for _, tc := range []struct {
		fault nannyapitest.Fault
		perm  bool
	}{
		{nannyapitest.Fault{Status: 500, Body: `{"error":"failed to save metrics"}`}, true},
		{nannyapitest.Fault{Status: 500, Body: `{"error":"failed to update agent"}`}, true},
		{nannyapitest.Fault{Status: 400, Body: `{"error":"invalid request"}`}, true},
		{nannyapitest.Fault{Status: 500}, false},
		{nannyapitest.Fault{Status: 503, Body: `{"error":"busy"}`}, false},
		{nannyapitest.Fault{Status: 429, Body: `{"error":"slow down"}`}, false},
		{nannyapitest.Fault{Status: 401, Body: `{"error":"authentication required"}`}, false},
		{nannyapitest.Fault{Reset: true}, false},
	} {
		e.srv.Inject("ingest-metrics", tc.fault)
		err := classifyMetricsError(e.cl.IngestMetrics(ctx, samplePayload()))
		require.Error(t, err)
		require.Equal(t, tc.perm, perm(err), "%+v: %v", tc.fault, err)
	}
	bad := samplePayload()
	bad.PlatformFamily = ""
	require.True(t, perm(classifyMetricsError(e.cl.IngestMetrics(ctx, bad))))
	require.NoError(t, classifyMetricsError(nil))
}
