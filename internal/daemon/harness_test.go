package daemon

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/realtime"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) {
	safeexec.EnterSandboxIfRequested()
	os.Exit(m.Run())
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitFor bounds every wait of these tests: long enough for a loaded
// machine, short of the test timeout, and never what a test measures.
const waitFor = 60 * time.Second

// gate is a test-controlled sleep: each call reports its delay and
// waits for the test to let it go (or for the daemon to stop).
type gate struct {
	mu      sync.Mutex
	delays  []time.Duration
	called  chan time.Duration
	release chan struct{}
	// free lets every sleep return at once.
	free bool
}

func newGate() *gate {
	return &gate{called: make(chan time.Duration, 1024), release: make(chan struct{})}
}

func (g *gate) sleep(ctx context.Context, d time.Duration) error {
	g.mu.Lock()
	g.delays = append(g.delays, d)
	free := g.free
	g.mu.Unlock()
	select {
	case g.called <- d:
	default:
	}
	if free {
		return ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) setFree() {
	g.mu.Lock()
	g.free = true
	g.mu.Unlock()
}

func (g *gate) got() []time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]time.Duration(nil), g.delays...)
}

// env is a backend (NannyAPI with its TensorZero gateway in front of a
// scripted model), a registered agent and a daemon for it.
type env struct {
	t     *testing.T
	srv   *nannyapitest.Server
	tz    *nannyapitest.TensorZero
	model *openaitest.Server
	user  *nannyapitest.User
	reg   nannyapitest.Registration
	cl    *nannyapi.Client
	opts  Options
	// rtSleep gates the realtime client's backoff, engineSleep the
	// engine's retries (free unless a test holds it).
	rtSleep, engineSleep *gate

	d      *Daemon
	cancel context.CancelFunc
	done   chan error
}

type envOptions struct {
	server      nannyapitest.Options
	chatTimeout time.Duration
}

func newEnv(t *testing.T, eo envOptions, steps ...openaitest.Step) *env {
	t.Helper()
	model := openaitest.New(t, steps...)
	tz := nannyapitest.NewTensorZero(t, model.BaseURL())
	so := eo.server
	so.TensorZeroURL, so.TensorZeroKey = tz.URL, "tz-key"
	srv := nannyapitest.New(t, so)
	u := srv.CreateUser("owner@example.com")
	reg := srv.RegisterAgent(u, "daemon-test-host")
	cl, err := nannyapi.New(nannyapi.Options{BaseURL: srv.URL, Tokens: nannyapi.StaticToken(reg.AccessToken), ChatTimeout: eo.chatTimeout})
	require.NoError(t, err)
	e := &env{t: t, srv: srv, tz: tz, model: model, user: u, reg: reg, cl: cl, rtSleep: newGate(), engineSleep: newGate()}
	e.engineSleep.setFree()
	exec := safeexec.DefaultOptions()
	exec.Sandbox = os.Geteuid() == 0
	exec.Timeout = 5 * time.Second
	cfg := config.Defaults()
	cfg.NannyAPIURL = srv.URL
	cfg.Diagnose.MaxWallSec = 60
	cfg.Diagnose.RoundBudgetSec = 30
	e.opts = Options{
		Config: cfg, Client: cl, Tokens: nannyapi.StaticToken(reg.AccessToken), AgentID: reg.AgentID,
		Facts: func(context.Context) *sysinfo.Facts {
			return &sysinfo.Facts{Hostname: "daemon-test-host", Kernel: "6.18.0", Arch: "x86_64", CPUs: 2}
		},
		Exec:        &exec,
		EngineRetry: nannyapi.Backoff{Sleep: e.engineSleep.sleep, Rand: func() float64 { return 0.5 }},
		Realtime: func(o *realtime.Options) {
			o.Backoff = realtime.Backoff{Initial: time.Second, Max: 8 * time.Second}
			o.Sleep = e.rtSleep.sleep
			o.Rand = func() float64 { return 0.5 }
			o.MinStableSession = time.Millisecond
		},
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
	}
	return e
}

// start runs the daemon and waits for its subscription.
func (e *env) start() {
	e.t.Helper()
	d, err := New(e.opts)
	require.NoError(e.t, err)
	e.d = d
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- d.Run(ctx) }()
	e.t.Cleanup(func() {
		if e.cancel != nil {
			e.stop()
		}
	})
	e.waitSubscribed(1)
}

// stop ends the daemon and returns Run's error and how long it took.
func (e *env) stop() (error, time.Duration) {
	e.t.Helper()
	start := time.Now()
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		return err, time.Since(start)
	case <-time.After(waitFor):
		e.t.Fatal("the daemon did not stop")
		return nil, 0
	}
}

func (e *env) waitSubscribed(n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(e.t, e.srv.WaitSubscribed(ctx, e.reg.AgentID, n))
}

// waitUntil waits for cond, re-checked after every request the backend
// receives; for conditions on the daemon's own counters it polls.
func (e *env) waitUntil(what string, cond func() bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			e.t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func (e *env) record(id string) map[string]any {
	e.t.Helper()
	rec, ok := e.srv.Record(nannyapitest.Investigations, id)
	require.True(e.t, ok, "investigation %s", id)
	return rec
}

// patches are the PATCH requests for one investigation the backend
// has answered (a request is recorded as it arrives).
func (e *env) patches(id string) []map[string]any {
	var out []map[string]any
	for _, r := range e.srv.RequestsFor("PATCH /api/investigations") {
		if r.Query != "id="+id || r.Status == 0 {
			continue
		}
		var m map[string]any
		require.NoError(e.t, json.Unmarshal(r.Body, &m))
		out = append(out, m)
	}
	return out
}

// chats counts the proxied chat turns of one investigation.
func (e *env) chats(id string) int {
	n := 0
	for _, r := range e.srv.RequestsFor("POST /api/investigations") {
		var m struct {
			ID string `json:"investigation_id"`
		}
		if json.Unmarshal(r.Body, &m) == nil && m.ID == id {
			n++
		}
	}
	return n
}

const resolution = `{"response_type": "resolution", "root_cause": "The /var partition is full", "resolution_plan": "1. Remove old logs\n2. Enable logrotate", "confidence": "High"}`

const wantPlan = "Root cause (confidence High): The /var partition is full\n\n1. Remove old logs\n2. Enable logrotate"
