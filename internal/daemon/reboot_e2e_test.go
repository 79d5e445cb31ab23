package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/metrics"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/reboot"
	"github.com/stretchr/testify/require"
)

// metricsGate hands the metrics loop its collections one at a time:
// asked counts the loop's requests for one, let lets one through.
type metricsGate struct {
	mu      sync.Mutex
	asked   int
	allow   chan struct{}
	collect metrics.CollectFunc
}

func (g *metricsGate) Collect(ctx context.Context) (metrics.Payload, error) {
	g.mu.Lock()
	g.asked++
	g.mu.Unlock()
	select {
	case <-g.allow:
		return g.collect(ctx)
	case <-ctx.Done():
		return metrics.Payload{}, ctx.Err()
	}
}

func (g *metricsGate) askedN() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.asked
}

// rebootRig is the daemon with the real metrics loop (its waits end at
// once, so it asks for a collection as soon as it may send one) and the
// real reboot handler, whose programs are scripts in dir.
type rebootRig struct {
	*env
	dir    string
	gate   *metricsGate
	sender *metrics.Sender
	// holds hears of the handler's hold after a host reboot command;
	// release ends it.
	holds   chan time.Duration
	release chan struct{}
	// pausedAt are the acknowledgements the backend had received at each
	// Pause.
	mu       sync.Mutex
	pausedAt []int
}

func newRebootRig(t *testing.T, configure func(r *rebootRig, o *reboot.Options)) *rebootRig {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	r := &rebootRig{
		env: e, dir: t.TempDir(), holds: make(chan time.Duration, 1), release: make(chan struct{}),
		gate: &metricsGate{allow: make(chan struct{}), collect: metrics.NewCollector(metrics.Options{}).Collect},
	}
	sender, err := NewMetrics(MetricsOptions{Config: e.opts.Config, Client: e.cl, Collect: r.gate.Collect, Clock: newStepClock(), Logger: e.opts.Logger})
	require.NoError(t, err)
	r.sender = sender
	e.opts.Metrics = sender
	o := reboot.FromConfig(e.opts.Config, e.cl, r, e.opts.Logger.Named("reboot"))
	o.SearchPath, o.PctPath = []string{r.dir}, filepath.Join(r.dir, "pct")
	o.Sleep = func(ctx context.Context, d time.Duration) error {
		r.holds <- d
		select {
		case <-r.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if configure != nil {
		configure(r, &o)
	}
	h, err := reboot.New(o)
	require.NoError(t, err)
	e.opts.Reboots = h
	return r
}

// Pause and Resume pass the handler's calls on to the real loop; Pause
// notes how many acknowledgements the backend had by then.
func (r *rebootRig) Pause(until time.Time) {
	n := 0
	for _, q := range r.srv.Requests() {
		if strings.HasSuffix(q.Path, "/acknowledge") {
			n++
		}
	}
	r.mu.Lock()
	r.pausedAt = append(r.pausedAt, n)
	r.mu.Unlock()
	r.sender.Pause(until)
}

func (r *rebootRig) Resume() { r.sender.Resume() }

// script writes an executable program dir/name that logs its name and
// arguments to dir/runs.log, then runs body. Written before the daemon
// starts, so no fork inherits it open.
func (r *rebootRig) script(name, body string) {
	r.t.Helper()
	src := fmt.Sprintf("#!/bin/sh\nprintf '%%s %%s\\n' \"${0##*/}\" \"$*\" >> '%s'\n%s\n", filepath.Join(r.dir, "runs.log"), body)
	require.NoError(r.t, os.WriteFile(filepath.Join(r.dir, name), []byte(src), 0o755))
}

func (r *rebootRig) runs() []string {
	b, err := os.ReadFile(filepath.Join(r.dir, "runs.log"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(r.t, err)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// let lets one metrics collection through.
func (r *rebootRig) let() {
	r.t.Helper()
	select {
	case r.gate.allow <- struct{}{}:
	case <-time.After(waitFor):
		r.t.Fatal("the metrics loop did not ask for a collection")
	}
}

// startParked starts the daemon, lets the first metrics post through
// and waits until the metrics loop asks for the next collection: from
// then on it sends as soon as it is given one, unless paused.
func (r *rebootRig) startParked() {
	r.start()
	r.let()
	r.waitUntil("the first metrics post", func() bool { return len(r.answered("ingest-metrics")) == 1 })
	r.waitUntil("the metrics loop to ask again", func() bool { return r.gate.askedN() == 2 })
}

// answered are the requests with key the backend has answered.
func (r *rebootRig) answered(key string) []nannyapitest.Request {
	var out []nannyapitest.Request
	for _, q := range r.srv.RequestsFor(key) {
		if q.Status != 0 {
			out = append(out, q)
		}
	}
	return out
}

// userCall is the portal calling the backend with the owner's token.
func (r *rebootRig) userCall(method, path, token, body string) (int, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.srv.URL+path, strings.NewReader(body))
	require.NoError(r.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(r.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(r.t, err)
	return resp.StatusCode, string(b)
}

// requestReboot asks for a reboot through POST /api/reboot as the owner.
func (r *rebootRig) requestReboot(body string) string {
	r.t.Helper()
	code, resp := r.userCall("POST", "/api/reboot", r.user.Token, body)
	require.Equal(r.t, 200, code, resp)
	var out struct {
		RebootID string `json:"reboot_id"`
		Status   string `json:"status"`
	}
	require.NoError(r.t, json.Unmarshal([]byte(resp), &out))
	require.Equal(r.t, "sent", out.Status)
	return out.RebootID
}

func (r *rebootRig) status(id string) string {
	rec, ok := r.srv.Record(nannyapitest.RebootOperations, id)
	require.True(r.t, ok)
	return rec["status"].(string)
}

// completesOnMetrics lets the parked collection through, in a later
// millisecond than the acknowledgement (the backend stores both to the
// millisecond), and waits for the backend to complete the operation.
func (r *rebootRig) completesOnMetrics(id string, posts int) {
	r.t.Helper()
	r.srv.Advance(time.Millisecond)
	r.let()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(r.t, r.srv.Wait(ctx, func() bool {
		return r.status(id) == "completed" && len(r.answered("ingest-metrics")) == posts
	}))
	ingests := r.answered("ingest-metrics")
	require.Equal(r.t, posts, len(ingests))
	require.Equal(r.t, 200, ingests[posts-1].Status)
	rec, _ := r.srv.Record(nannyapitest.RebootOperations, id)
	require.NotEmpty(r.t, rec["completed_at"])
	require.Empty(r.t, r.srv.PendingReboot(r.reg.AgentID))
	require.Equal(r.t, uint64(1), r.d.Stats().Reboots)
}

// ack is the one acknowledgement of the operation.
func (r *rebootRig) ack(id string) nannyapitest.Request {
	r.t.Helper()
	acks := r.srv.RequestsFor("POST /api/reboot/" + id + "/acknowledge")
	require.Len(r.t, acks, 1)
	require.Equal(r.t, 200, acks[0].Status)
	return acks[0]
}

// TestRebootEndToEndHost: a reboot asked for through the portal's API
// reaches the daemon, which pauses metrics, acknowledges, and runs the
// configured reboot command once. The metrics loop is given a
// collection while the command runs and sends nothing from the
// acknowledgement on; the backend does not mark the reboot completed.
// When the host does not go down within the operation's timeout,
// metrics resume and complete it.
func TestRebootEndToEndHost(t *testing.T) {
	r := newRebootRig(t, func(r *rebootRig, o *reboot.Options) {
		o.Command = []string{filepath.Join(r.dir, "my-reboot"), "--now"}
	})
	fifo := filepath.Join(r.dir, "proceed")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	// The command waits for the test: the window between the
	// acknowledgement and the reboot stays open while the test looks.
	r.script("my-reboot", "read line < '"+fifo+"'")
	r.script("systemctl", "")
	r.startParked()

	id := r.requestReboot(`{"agent_id":"` + r.reg.AgentID + `","reason":"kernel update","timeout_seconds":120}`)
	r.waitUntil("the reboot command to start", func() bool { return len(r.runs()) == 1 })
	require.Equal(t, "rebooting", r.status(id))
	// Between the acknowledgement and the reboot, a collection the
	// loop asked for before the pause is let through.
	r.let()
	proceeded := make(chan error, 1)
	go func() { proceeded <- os.WriteFile(fifo, []byte("go\n"), 0o600) }()
	select {
	case err := <-proceeded:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("the reboot command did not read its go-ahead")
	}
	select {
	case d := <-r.holds:
		require.Equal(t, 120*time.Second, d, "held for the operation's timeout")
	case <-time.After(waitFor):
		t.Fatal("the handler did not hold metrics after the reboot command")
	}

	require.Equal(t, []string{"my-reboot --now"}, r.runs())
	require.Equal(t, []int{0}, r.pausedAt, "paused once, before the acknowledgement")
	ack := r.ack(id)
	ingests := r.srv.RequestsFor("ingest-metrics")
	require.Equal(t, 1, len(ingests), "no metrics since the start post")
	require.True(t, ingests[0].At.Before(ack.At), "the start post %v, the acknowledgement %v", ingests[0].At, ack.At)
	require.Equal(t, "rebooting", r.status(id))
	require.Equal(t, id, r.srv.PendingReboot(r.reg.AgentID))
	require.True(t, r.sender.Status().Paused)

	// The host did not go down: the hold ends and metrics complete it.
	close(r.release)
	r.completesOnMetrics(id, 2)
	require.Equal(t, []string{"my-reboot --now"}, r.runs(), "never run again")
	err, _ := r.stop()
	require.NoError(t, err)
}

// TestRebootEndToEndDryRun: daemon.reboot_dry_run acknowledges, runs
// nothing, and resumes metrics, whose next post completes the
// operation.
func TestRebootEndToEndDryRun(t *testing.T) {
	r := newRebootRig(t, func(r *rebootRig, o *reboot.Options) {
		require.False(t, o.DryRun)
		r.opts.Config.Daemon.RebootDryRun = true
		*o = reboot.FromConfig(r.opts.Config, o.Backend, o.Metrics, nil)
		o.SearchPath = []string{r.dir}
	})
	r.script("systemctl", "")
	r.script("shutdown", "")
	r.startParked()

	id := r.requestReboot(`{"agent_id":"` + r.reg.AgentID + `"}`)
	r.waitUntil("the acknowledgement and the resume", func() bool {
		return r.status(id) == "rebooting" && !r.sender.Status().Paused
	})
	require.Len(t, r.srv.RequestsFor("ingest-metrics"), 1)
	r.completesOnMetrics(id, 2)
	require.True(t, r.answered("ingest-metrics")[1].At.After(r.ack(id).At))
	require.Empty(t, r.runs())
	require.Equal(t, []int{0}, r.pausedAt)
	err, _ := r.stop()
	require.NoError(t, err)
}

// TestRebootEndToEndLXC: a reboot of a container the agent reported
// runs pct reboot <vmid> once; metrics resume at once (the host stays
// up) and complete the operation.
func TestRebootEndToEndLXC(t *testing.T) {
	r := newRebootRig(t, nil)
	r.script("pct", "")
	r.script("systemctl", "")
	for _, c := range []struct{ path, body string }{
		{"/api/proxmox/node", `{"ip":"10.0.0.5","level":"","local":1,"name":"pve1","nodeid":1,"online":1,"pveversion":"pve-manager/8.2.2/9355359cd7afbae4"}`},
		{"/api/proxmox/lxc", `{"name":"ct101","lxc_id":"lxc/101","status":"running","ostype":"ubuntu","uptime":1234,"vmid":101,"node":"pve1"}`},
	} {
		code, body := r.userCall("POST", c.path, r.reg.AccessToken, c.body)
		require.Equal(t, 200, code, body)
	}
	lxc := r.srv.ProxmoxRecords(nannyapitest.ProxmoxLXC)
	require.Len(t, lxc, 1)
	r.startParked()

	id := r.requestReboot(`{"agent_id":"` + r.reg.AgentID + `","lxc_id":"` + lxc[0]["id"].(string) + `","reason":"ct update"}`)
	r.waitUntil("the acknowledgement and the resume", func() bool {
		return r.status(id) == "rebooting" && !r.sender.Status().Paused
	})
	require.Equal(t, []string{"pct reboot 101"}, r.runs())
	require.Len(t, r.srv.RequestsFor("ingest-metrics"), 1)
	r.completesOnMetrics(id, 2)
	require.Equal(t, []int{0}, r.pausedAt)
	err, _ := r.stop()
	require.NoError(t, err)
}

// The handler is the daemon's RebootHandler.
var _ RebootHandler = (*reboot.Handler)(nil)
