package proxmox

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/proxmox/proxmoxtest"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// waitFor bounds the waits of these tests; it is never what a test
// measures.
const waitFor = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// env is a test backend with a registered agent, a fake PVE node and a
// Reporter between them.
type env struct {
	srv  *nannyapitest.Server
	reg  nannyapitest.Registration
	fake *proxmoxtest.Fake
	rep  *Reporter
	logs *observer.ObservedLogs
}

func newEnv(t *testing.T, set string, adjust func(*Options)) *env {
	t.Helper()
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("owner@example.com")
	reg := srv.RegisterAgent(u, "pve-host")
	cl, err := nannyapi.New(nannyapi.Options{BaseURL: srv.URL, Tokens: nannyapi.StaticToken(reg.AccessToken)})
	require.NoError(t, err)
	fake := proxmoxtest.New(t, set)
	core, logs := observer.New(zap.InfoLevel)
	o := Options{
		Backend: cl, AgentID: reg.AgentID, PVEVersion: fake.PVEVersion, Pvesh: fake.Pvesh,
		Commands: ExecRunner{Timeout: 10 * time.Second}, Logger: zap.New(core),
	}
	if adjust != nil {
		adjust(&o)
	}
	rep, err := New(o)
	require.NoError(t, err)
	return &env{srv: srv, reg: reg, fake: fake, rep: rep, logs: logs}
}

// sent are the ingestion requests the backend answered, in order, as
// "<status> <path>".
func (e *env) sent() []string {
	var out []string
	for _, r := range e.srv.Requests() {
		if strings.HasPrefix(r.Path, "/api/proxmox/") {
			out = append(out, http.StatusText(r.Status)+" "+r.Path)
		}
	}
	return out
}

// checkPayloads compares the ingestions the handler saw with want,
// field by field and in order.
func checkPayloads(t *testing.T, srv *nannyapitest.Server, want []proxmoxtest.Payload) {
	t.Helper()
	ins := srv.ProxmoxIngests()
	require.Len(t, ins, len(want))
	for i, w := range want {
		require.Equal(t, w.Path, "/api/proxmox/"+ins[i].Kind, "ingest %d", i)
		require.Equal(t, http.StatusOK, ins[i].Status, "ingest %d: %s", i, ins[i].Answer)
		require.Equal(t, proxmoxtest.Fields(t, []byte(w.Body)), proxmoxtest.Fields(t, ins[i].Body), "ingest %d (%s)", i, w.Path)
	}
}

var cluster3Sent = []string{
	"node/pve2", "cluster", "lxc/101", "lxc/102", "lxc/103", "lxc/104", "qemu/200", "qemu/201", "qemu/202", "qemu/9000",
}

var cluster3Calls = []string{
	"/cluster/status", "/nodes/pve2/status", "/cluster/resources",
	"/nodes/pve2/lxc/101/config", "/nodes/pve2/lxc/102/config", "/nodes/pve2/lxc/103/config", "/nodes/pve2/lxc/104/config",
	"/nodes/pve2/qemu/200/config", "/nodes/pve2/qemu/201/config", "/nodes/pve2/qemu/202/config", "/nodes/pve2/qemu/9000/config",
}

// pve2 of a three-node cluster sends itself, the cluster, and its own
// guests only, in order, with exactly the fields of the fixtures; a
// second cycle upserts the same records.
func TestCycleCluster3(t *testing.T) {
	e := newEnv(t, proxmoxtest.Cluster3, nil)
	rep := e.rep.Cycle(testCtx(t))
	require.Empty(t, rep.Errors)
	require.Equal(t, "pve2", rep.Node)
	require.False(t, rep.NodeResent)
	require.Equal(t, cluster3Sent, rep.Sent)
	checkPayloads(t, e.srv, proxmoxtest.Want(proxmoxtest.Cluster3, e.reg.AgentID))
	// Nothing of pve1's or pve3's guests is read.
	require.Equal(t, cluster3Calls, e.fake.Calls(t))

	nodes := e.srv.ProxmoxRecords(nannyapitest.ProxmoxNodes)
	clusters := e.srv.ProxmoxRecords(nannyapitest.ProxmoxClusters)
	require.Len(t, nodes, 1)
	require.Len(t, clusters, 1)
	require.Equal(t, []string{e.reg.AgentID}, clusters[0]["agents"])
	// The node went first; the cluster backfilled its link.
	require.Equal(t, clusters[0]["id"], nodes[0]["cluster_id"])
	for _, col := range []string{nannyapitest.ProxmoxLXC, nannyapitest.ProxmoxQEMU} {
		recs := e.srv.ProxmoxRecords(col)
		require.Len(t, recs, 4)
		for _, r := range recs {
			require.Equal(t, nodes[0]["id"], r["node_id"])
			require.Equal(t, clusters[0]["id"], r["cluster_id"])
		}
	}

	rep = e.rep.Cycle(testCtx(t))
	require.Empty(t, rep.Errors)
	require.Equal(t, cluster3Sent, rep.Sent)
	require.Len(t, e.srv.ProxmoxIngests(), 2*len(cluster3Sent))
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxNodes), 1)
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxClusters), 1)
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxLXC), 4)
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxQEMU), 4)
}

// A standalone node has no cluster item: no cluster is sent. Its
// fixtures carry numbers as strings, which read as numbers.
func TestCycleStandalone(t *testing.T) {
	e := newEnv(t, proxmoxtest.Standalone, nil)
	rep := e.rep.Cycle(testCtx(t))
	require.Empty(t, rep.Errors)
	require.Equal(t, []string{"node/pve", "lxc/100", "qemu/150"}, rep.Sent)
	checkPayloads(t, e.srv, proxmoxtest.Want(proxmoxtest.Standalone, e.reg.AgentID))
	require.Equal(t, 0, e.srv.Count("POST /api/proxmox/cluster"))
	require.Empty(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxClusters))
	require.Equal(t, "", e.srv.ProxmoxRecords(nannyapitest.ProxmoxNodes)[0]["cluster_id"])
}

// One guest whose config cannot be read is left out and named; the
// rest go on.
func TestCycleGuestFailureSkipsOnlyThatGuest(t *testing.T) {
	e := newEnv(t, proxmoxtest.Cluster3, nil)
	e.fake.Fail(t, "/nodes/pve2/lxc/102/config", "Configuration file 'nodes/pve2/lxc/102.conf' does not exist")
	e.fake.Override(t, "/nodes/pve2/qemu/201/config", []byte(`{"name":"legacy","kvm":{"on":1}}`))
	rep := e.rep.Cycle(testCtx(t))
	require.Equal(t, []string{"node/pve2", "cluster", "lxc/101", "lxc/103", "lxc/104", "qemu/200", "qemu/202", "qemu/9000"}, rep.Sent)
	require.Len(t, rep.Errors, 2)
	var ie *ItemError
	require.ErrorAs(t, rep.Errors[0], &ie)
	require.Equal(t, "lxc/102", ie.Item)
	require.Contains(t, ie.Error(), "lxc/102: pvesh get /nodes/pve2/lxc/102/config: ")
	require.Contains(t, ie.Error(), "Configuration file 'nodes/pve2/lxc/102.conf' does not exist")
	require.ErrorAs(t, rep.Errors[1], &ie)
	require.Equal(t, "qemu/201", ie.Item)
	require.Equal(t, `qemu/201: pvesh get /nodes/pve2/qemu/201/config: field "kvm" is an object, not a number`, ie.Error())

	want := proxmoxtest.Want(proxmoxtest.Cluster3, e.reg.AgentID)
	checkPayloads(t, e.srv, append(append(want[:3:3], want[4:7]...), want[8:]...))
	// Both failures were logged, one line each.
	require.Equal(t, 2, e.logs.FilterMessage("Proxmox VE inventory item not sent").Len())
}

// Malformed and oversized pvesh output is a clear error for the call it
// came from. Where this node cannot be read, the guests still go: the
// backend knows the node from the cycle before.
func TestCycleBadOutput(t *testing.T) {
	for _, c := range []struct {
		name, path, out string
		sent            []string
		item, err       string
	}{
		{"status not JSON", "/cluster/status", "Use of uninitialized value in concatenation", nil,
			"inventory", "pvesh get /cluster/status: the output is not JSON: invalid character 'U' looking for beginning of value"},
		{"status an object", "/cluster/status", `{"type":"node"}`, nil,
			"inventory", "pvesh get /cluster/status: the output is a JSON object where an array of objects was expected"},
		{"status empty", "/cluster/status", "", nil,
			"inventory", "pvesh get /cluster/status: the output is empty, not JSON"},
		{"status with trailing data", "/cluster/status", `[] []`, nil,
			"inventory", "pvesh get /cluster/status: the output has more after its JSON value"},
		{"no local node", "/cluster/status", `[{"type":"node","name":"pve1","local":0}]`, nil,
			"inventory", "pvesh get /cluster/status: no item of type node with local 1 (this node)"},
		{"node name a path", "/cluster/status", `[{"type":"node","name":"../../access","local":1}]`, nil,
			"inventory", `pvesh get /cluster/status: this node: node name "../../access" is not a host name (letters, digits, dots and hyphens, starting with a letter or digit)`},
		{"node name an option", "/cluster/status", `[{"type":"node","name":"-x","local":1}]`, nil,
			"inventory", `pvesh get /cluster/status: this node: node name "-x" is not a host name (letters, digits, dots and hyphens, starting with a letter or digit)`},
		{"fractional nodeid", "/cluster/status", `[{"type":"cluster","name":"lab","id":"cluster","nodes":3,"quorate":1,"version":7},{"type":"node","name":"pve2","local":1,"nodeid":2.5}]`,
			[]string{"cluster", "lxc/101", "lxc/102", "lxc/103", "lxc/104", "qemu/200", "qemu/201", "qemu/202", "qemu/9000"},
			"node/pve2", `pvesh get /cluster/status: this node: field "nodeid": 2.5 is not a whole number in range`},
		{"cluster version text", "/cluster/status", `[{"type":"cluster","name":"lab","id":"cluster","version":"seven"},{"type":"node","name":"pve2","local":1,"nodeid":2}]`,
			[]string{"node/pve2", "lxc/101", "lxc/102", "lxc/103", "lxc/104", "qemu/200", "qemu/201", "qemu/202", "qemu/9000"},
			"cluster", `pvesh get /cluster/status: the cluster item: field "version": "seven" is not a number`},
		{"no pveversion", "/nodes/pve2/status", `{"uptime":5}`,
			[]string{"cluster", "lxc/101", "lxc/102", "lxc/103", "lxc/104", "qemu/200", "qemu/201", "qemu/202", "qemu/9000"},
			"node/pve2", "pvesh get /nodes/pve2/status: no pveversion"},
		{"resources not an array", "/cluster/resources", `{"data":[]}`, []string{"node/pve2", "cluster"},
			"guests", "pvesh get /cluster/resources: the output is a JSON object where an array of objects was expected"},
		{"guest vmid out of range", "/cluster/resources", `[{"type":"lxc","node":"pve2","vmid":0,"id":"lxc/0"}]`, []string{"node/pve2", "cluster"},
			"lxc (item 0 of /cluster/resources)", "pvesh get /cluster/resources: vmid 0 is not a PVE guest ID (1 to 999999999)"},
		{"guest vmid text", "/cluster/resources", `[{"type":"qemu","node":"pve2","vmid":"200; rm -rf /"}]`, []string{"node/pve2", "cluster"},
			"qemu (item 0 of /cluster/resources)", `pvesh get /cluster/resources: field "vmid": "200; rm -rf /" is not a number`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, proxmoxtest.Cluster3, nil)
			require.Empty(t, e.rep.Cycle(testCtx(t)).Errors)
			e.fake.Override(t, c.path, []byte(c.out))
			rep := e.rep.Cycle(testCtx(t))
			require.Equal(t, c.sent, rep.Sent)
			require.Len(t, rep.Errors, 1, "%v", rep.Errors)
			var ie *ItemError
			require.ErrorAs(t, rep.Errors[0], &ie)
			require.Equal(t, c.item, ie.Item)
			require.Equal(t, c.err, ie.Err.Error())
		})
	}
}

// An output past MaxOutputBytes stops the command and fails that call
// only.
func TestCycleHugeOutput(t *testing.T) {
	e := newEnv(t, proxmoxtest.Cluster3, func(o *Options) { o.MaxOutputBytes = 64 << 10; o.Commands = nil })
	huge := append([]byte("["), bytes.Repeat([]byte(`{"type":"storage","id":"storage/pve2/local","node":"pve2"},`), 4096)...)
	huge = append(huge, []byte(`{"type":"pool"}]`)...)
	require.Greater(t, len(huge), 64<<10)
	e.fake.Override(t, "/cluster/resources", huge)
	rep := e.rep.Cycle(testCtx(t))
	require.Equal(t, []string{"node/pve2", "cluster"}, rep.Sent)
	require.Len(t, rep.Errors, 1)
	require.ErrorIs(t, rep.Errors[0], ErrOutputTooLarge)
	require.Contains(t, rep.Errors[0].Error(), "guests: pvesh get /cluster/resources: ")
	require.Contains(t, rep.Errors[0].Error(), "output too large: more than 65536 bytes")
}

// A CommandRunner that does not bound its output is bounded by the
// Reporter.
func TestCycleBoundsAnyRunner(t *testing.T) {
	e := newEnv(t, proxmoxtest.Cluster3, func(o *Options) {
		o.MaxOutputBytes = 1 << 10
		o.Commands = runnerFunc(func(ctx context.Context, name string, args ...string) ([]byte, error) {
			if args[1] == "/cluster/resources" {
				return bytes.Repeat([]byte(" "), 1<<10+1), nil
			}
			return ExecRunner{}.Run(ctx, name, args...)
		})
	})
	rep := e.rep.Cycle(testCtx(t))
	require.Equal(t, []string{"node/pve2", "cluster"}, rep.Sent)
	require.Len(t, rep.Errors, 1)
	require.ErrorIs(t, rep.Errors[0], ErrOutputTooLarge)
	require.Equal(t, "guests: pvesh get /cluster/resources: output too large: 1025 bytes, more than 1024", rep.Errors[0].Error())
}

type runnerFunc func(ctx context.Context, name string, args ...string) ([]byte, error)

func (f runnerFunc) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return f(ctx, name, args...)
}

// The node's ingestion fails; the first guest is refused for the unknown
// node, the node is sent again, and the guest after it; the rest follow.
func TestCycleResendsNodeAfterNodeNotFound(t *testing.T) {
	e := newEnv(t, proxmoxtest.Cluster3, nil)
	e.srv.Inject("POST /api/proxmox/node", nannyapitest.Fault{Status: http.StatusInternalServerError, Times: 1})
	rep := e.rep.Cycle(testCtx(t))
	require.True(t, rep.NodeResent)
	require.Equal(t, []string{"cluster", "node/pve2", "lxc/101", "lxc/102", "lxc/103", "lxc/104", "qemu/200", "qemu/201", "qemu/202", "qemu/9000"}, rep.Sent)
	require.Len(t, rep.Errors, 1)
	require.Contains(t, rep.Errors[0].Error(), "node/pve2: nannyapi: POST /api/proxmox/node: 500 ")
	require.Equal(t, []string{
		"Internal Server Error /api/proxmox/node", "OK /api/proxmox/cluster", "Bad Request /api/proxmox/lxc",
		"OK /api/proxmox/node", "OK /api/proxmox/lxc", "OK /api/proxmox/lxc", "OK /api/proxmox/lxc", "OK /api/proxmox/lxc",
		"OK /api/proxmox/qemu", "OK /api/proxmox/qemu", "OK /api/proxmox/qemu", "OK /api/proxmox/qemu",
	}, e.sent())
	ins := e.srv.ProxmoxIngests()
	require.Equal(t, `{"error":"Node not found: pve2"}`+"\n", ins[1].Answer)
	require.Equal(t, ins[1].Body, ins[3].Body, "the refused guest is sent again as it was")
	want := proxmoxtest.Want(proxmoxtest.Cluster3, e.reg.AgentID)
	require.Equal(t, proxmoxtest.Fields(t, []byte(want[0].Body)), proxmoxtest.Fields(t, ins[2].Body))
	require.Equal(t, 1, e.logs.FilterMessage("the backend does not know this node; sending it again").Len())
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxLXC), 4)
	require.Len(t, e.srv.ProxmoxRecords(nannyapitest.ProxmoxQEMU), 4)
}

// While the node cannot be sent, it is tried once more a cycle, not
// once per guest; the next cycle starts over.
func TestCycleNodeResentOnceACycle(t *testing.T) {
	e := newEnv(t, proxmoxtest.Standalone, nil)
	e.srv.Inject("POST /api/proxmox/node", nannyapitest.Fault{Status: http.StatusServiceUnavailable})
	rep := e.rep.Cycle(testCtx(t))
	require.True(t, rep.NodeResent)
	require.Empty(t, rep.Sent)
	require.Equal(t, []string{
		"Service Unavailable /api/proxmox/node", "Bad Request /api/proxmox/lxc", "Service Unavailable /api/proxmox/node",
		"Bad Request /api/proxmox/qemu",
	}, e.sent())
	items := make([]string, 0, len(rep.Errors))
	for _, err := range rep.Errors {
		var ie *ItemError
		require.ErrorAs(t, err, &ie)
		items = append(items, ie.Item)
	}
	require.Equal(t, []string{"node/pve", "node/pve", "lxc/100", "qemu/150"}, items)
	require.True(t, nannyapi.IsProxmoxNodeNotFound(rep.Errors[3]))

	e.srv.ClearFaults()
	rep = e.rep.Cycle(testCtx(t))
	require.Empty(t, rep.Errors)
	require.Equal(t, []string{"node/pve", "lxc/100", "qemu/150"}, rep.Sent)
}

func TestDetect(t *testing.T) {
	e := newEnv(t, proxmoxtest.Standalone, nil)
	require.NoError(t, e.rep.Detect(testCtx(t)))

	dir := t.TempDir()
	failing := filepath.Join(dir, "pveversion")
	require.NoError(t, os.WriteFile(failing, []byte("#!/bin/sh\necho 'ipcc_send_rec[1] failed: Connection refused' >&2\nexit 1\n"), 0o755))
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("not a program"), 0o644))
	for path, msg := range map[string]string{
		filepath.Join(dir, "missing"): "not a Proxmox VE node: stat " + filepath.Join(dir, "missing") + ": no such file or directory",
		plain:                         "not a Proxmox VE node: " + plain + " is not an executable file",
		dir:                           "not a Proxmox VE node: " + dir + " is not an executable file",
		failing:                       "not a Proxmox VE node: " + failing + " --verbose: exit status 1: ipcc_send_rec[1] failed: Connection refused",
	} {
		r, err := New(Options{Backend: e.rep.o.Backend, PVEVersion: path})
		require.NoError(t, err)
		err = r.Detect(testCtx(t))
		require.ErrorIs(t, err, ErrNotProxmox)
		require.Equal(t, msg, err.Error())
	}
}

// On a host that is not a PVE node, Run logs that once, calls nothing
// and returns nil when its context ends.
func TestRunIdlesOnOtherHosts(t *testing.T) {
	var slept []time.Duration
	e := newEnv(t, proxmoxtest.Cluster3, func(o *Options) {
		o.PVEVersion = filepath.Join(t.TempDir(), "pveversion")
		o.Sleep = func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return nil }
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.rep.Run(ctx) }()
	deadline := time.Now().Add(waitFor)
	for e.logs.FilterMessage("the Proxmox VE inventory is off on this host").Len() == 0 {
		require.True(t, time.Now().Before(deadline), "no log line")
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned before its context ended: %v", err)
	default:
	}
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 1, e.logs.Len())
	require.Empty(t, e.fake.Calls(t))
	require.Empty(t, e.sent())
	require.Empty(t, slept)
}

// gate is a test-paced Sleep: each call reports its delay and waits
// for a release or for ctx.
type gate struct {
	mu      sync.Mutex
	delays  []time.Duration
	called  chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{called: make(chan struct{}, 16), release: make(chan struct{})} }

func (g *gate) sleep(ctx context.Context, d time.Duration) error {
	g.mu.Lock()
	g.delays = append(g.delays, d)
	g.mu.Unlock()
	g.called <- struct{}{}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) got() []time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]time.Duration(nil), g.delays...)
}

// Run waits InitialDelay, then runs a cycle every proxmox_interval; a
// cycle that fails does not end it, and it returns nil when its context
// ends.
func TestRunLoop(t *testing.T) {
	g := newGate()
	cfg := config.Defaults()
	cfg.ProxmoxInterval = 42
	e := newEnv(t, proxmoxtest.Standalone, func(o *Options) {
		o.Config, o.InitialDelay, o.Sleep = cfg, 7*time.Second, g.sleep
	})
	e.fake.Fail(t, "/cluster/status", "ipcc_send_rec[1] failed: Connection refused")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.rep.Run(ctx) }()

	wait := func() {
		t.Helper()
		select {
		case <-g.called:
		case err := <-done:
			t.Fatalf("Run returned: %v", err)
		case <-time.After(waitFor):
			t.Fatal("Run did not sleep")
		}
	}
	wait() // the initial delay
	require.Empty(t, e.sent())
	g.release <- struct{}{}
	wait() // after cycle 1, which could not read /cluster/status
	require.Empty(t, e.sent())
	require.Equal(t, 1, e.logs.FilterMessage("Proxmox VE inventory item not sent").Len())
	require.Equal(t, 1, e.logs.FilterMessage("Proxmox VE inventory sent in part").Len())
	e.fake.Reset(t)
	g.release <- struct{}{}
	wait() // after cycle 2
	require.Equal(t, []string{"OK /api/proxmox/node", "OK /api/proxmox/lxc", "OK /api/proxmox/qemu"}, e.sent())
	require.Equal(t, 1, e.logs.FilterMessage("Proxmox VE inventory sent").Len())
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, []time.Duration{7 * time.Second, 42 * time.Second, 42 * time.Second}, g.got())
	require.Equal(t, []string{"/cluster/status", "/cluster/status", "/nodes/pve/status", "/cluster/resources",
		"/nodes/pve/lxc/100/config", "/nodes/pve/qemu/150/config"}, e.fake.Calls(t))
}

// Stopping in the middle of a cycle ends the pvesh call in progress
// and Run at once; the cut-short item is not reported as a failure.
func TestRunStopsMidCycle(t *testing.T) {
	reached := make(chan struct{})
	e := newEnv(t, proxmoxtest.Cluster3, func(o *Options) {
		o.Sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
		o.Commands = runnerFunc(func(ctx context.Context, name string, args ...string) ([]byte, error) {
			if len(args) > 1 && args[1] == "/cluster/resources" {
				close(reached)
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return ExecRunner{}.Run(ctx, name, args...)
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.rep.Run(ctx) }()
	select {
	case <-reached:
	case <-time.After(waitFor):
		t.Fatal("the cycle did not reach /cluster/resources")
	}
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 0, e.logs.FilterLevelExact(zap.WarnLevel).Len())
	require.Empty(t, e.sent())
}

func TestNewDefaults(t *testing.T) {
	_, err := New(Options{})
	require.EqualError(t, err, "proxmox: a backend client is required")
	cl, err := nannyapi.New(nannyapi.Options{BaseURL: "http://127.0.0.1:1"})
	require.NoError(t, err)
	r, err := New(Options{Backend: cl})
	require.NoError(t, err)
	require.Equal(t, DefaultInterval, r.o.Interval)
	require.Equal(t, DefaultInitialDelay, r.o.InitialDelay)
	require.Equal(t, "/usr/bin/pveversion", r.o.PVEVersion)
	require.Equal(t, "/usr/bin/pvesh", r.o.Pvesh)
	require.Equal(t, ExecRunner{MaxOutput: DefaultMaxOutputBytes}, r.o.Commands)
	cfg := config.Defaults()
	cfg.ProxmoxInterval = 600
	r, err = New(Options{Backend: cl, Config: cfg})
	require.NoError(t, err)
	require.Equal(t, 600*time.Second, r.o.Interval)
	r, err = New(Options{Backend: cl, Config: cfg, Interval: time.Minute})
	require.NoError(t, err)
	require.Equal(t, time.Minute, r.o.Interval)
}

func TestDecodeNumbersAndText(t *testing.T) {
	o, err := decodeObject([]byte(`{"n":7,"s":"7","b":true,"f":false,"z":null,"e":"","sp":" 12 ","w":2.0,"big":1e3,
		"frac":2.5,"word":"seven","obj":{},"arr":[],"text":"pve-manager/8.3.0","num":100,"huge":1e300}`))
	require.NoError(t, err)
	for key, want := range map[string]int{"n": 7, "s": 7, "b": 1, "f": 0, "z": 0, "e": 0, "sp": 12, "w": 2, "big": 1000, "absent": 0} {
		got, err := o.int(key)
		require.NoError(t, err, key)
		require.Equal(t, want, got, key)
	}
	for key, msg := range map[string]string{
		"frac": `field "frac": 2.5 is not a whole number in range`,
		"huge": `field "huge": 1e300 is not a whole number in range`,
		"word": `field "word": "seven" is not a number`,
		"obj":  `field "obj" is an object, not a number`,
		"arr":  `field "arr" is an array, not a number`,
	} {
		_, err := o.int(key)
		require.EqualError(t, err, msg)
	}
	for key, want := range map[string]string{"text": "pve-manager/8.3.0", "num": "100", "z": "", "absent": ""} {
		got, err := o.str(key)
		require.NoError(t, err, key)
		require.Equal(t, want, got, key)
	}
	for key, msg := range map[string]string{
		"b":   `field "b" is a boolean, not text`,
		"obj": `field "obj" is an object, not text`,
	} {
		_, err := o.str(key)
		require.EqualError(t, err, msg)
	}
	_, err = decodeArray([]byte(`[{"a":1},null]`))
	require.EqualError(t, err, "item 1 is null, not an object")
	_, err = decodeArray([]byte(`[1]`))
	require.EqualError(t, err, "the output is a JSON number where an array of objects was expected")
	_, err = decodeObject([]byte(`null`))
	require.EqualError(t, err, "the output is null, not an object")
}

func TestValidNodeName(t *testing.T) {
	for _, ok := range []string{"pve", "pve2", "PVE-01", "node1.example.com", "1node"} {
		require.NoError(t, validNodeName(ok), ok)
	}
	for _, bad := range []string{"", "-pve", ".pve", "pve/1", "pve 1", "a..b", "pve\n", "pvé", strings.Repeat("a", 254)} {
		require.Error(t, validNodeName(bad), "%q", bad)
	}
}

func TestExecRunner(t *testing.T) {
	ctx := testCtx(t)
	out, err := ExecRunner{}.Run(ctx, "/bin/sh", "-c", "printf 'a b\\n'")
	require.NoError(t, err)
	require.Equal(t, "a b\n", string(out))

	_, err = ExecRunner{}.Run(ctx, "/bin/sh", "-c", "echo out; echo 'no such  VM\n(500)' >&2; exit 3")
	require.EqualError(t, err, "/bin/sh -c echo out; echo 'no such  VM\n(500)' >&2; exit 3: exit status 3: no such VM (500)")

	_, err = ExecRunner{MaxOutput: 1000}.Run(ctx, "/bin/sh", "-c", "yes aaaaaaaaaa")
	require.ErrorIs(t, err, ErrOutputTooLarge)
	require.EqualError(t, err, "/bin/sh -c yes aaaaaaaaaa: output too large: more than 1000 bytes")

	_, err = ExecRunner{Timeout: 50 * time.Millisecond}.Run(ctx, "/bin/sh", "-c", "exec sleep 30")
	require.EqualError(t, err, "/bin/sh -c exec sleep 30: no answer within 50ms")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = ExecRunner{}.Run(cctx, "/bin/sh", "-c", "exit 0")
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
}
