package reboot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/metrics"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The daemon's metrics loop is a Pauser.
var _ Pauser = (*metrics.Sender)(nil)

// fixture is a backend with a registered agent, a directory of fake
// programs that log their runs, and a recording metrics loop.
type fixture struct {
	t      *testing.T
	srv    *nannyapitest.Server
	user   *nannyapitest.User
	reg    nannyapitest.Registration
	client *nannyapi.Client
	dir    string
	logs   *observer.ObservedLogs
	log    *zap.Logger

	mu     sync.Mutex
	calls  []string // the metrics loop's calls and the sleeps, in order
	opID   string
	sleepF func(ctx context.Context, d time.Duration) error
}

func newFixture(t *testing.T) *fixture {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("u@example.com")
	reg := srv.RegisterAgent(u, "testhost")
	c, err := nannyapi.New(nannyapi.Options{BaseURL: srv.URL, Tokens: nannyapi.StaticToken(reg.AccessToken)})
	require.NoError(t, err)
	core, logs := observer.New(zap.InfoLevel)
	return &fixture{t: t, srv: srv, user: u, reg: reg, client: c, dir: t.TempDir(), logs: logs, log: zap.New(core)}
}

// script writes an executable program dir/name that logs its name and
// arguments to dir/runs.log, then runs body.
func (f *fixture) script(name, body string) string {
	f.t.Helper()
	p := filepath.Join(f.dir, name)
	src := fmt.Sprintf("#!/bin/sh\nprintf '%%s %%s\\n' \"${0##*/}\" \"$*\" >> '%s'\n%s\n", filepath.Join(f.dir, "runs.log"), body)
	require.NoError(f.t, os.WriteFile(p, []byte(src), 0o755))
	return p
}

// runs are the fake programs' runs, in order.
func (f *fixture) runs() []string {
	b, err := os.ReadFile(filepath.Join(f.dir, "runs.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(f.t, err)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// state is what the backend and the programs had seen at a call of the
// metrics loop: acknowledgements received and programs run.
func (f *fixture) state(what string) {
	acks := f.srv.Count("POST /api/reboot/" + f.opID + "/acknowledge")
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s acks=%d runs=%d", what, acks, len(f.runs())))
	f.mu.Unlock()
}

func (f *fixture) Pause(until time.Time) {
	require.True(f.t, until.IsZero(), "paused until resumed")
	f.state("pause")
}

func (f *fixture) Resume() { f.state("resume") }

func (f *fixture) sleep(ctx context.Context, d time.Duration) error {
	f.state("hold " + d.String())
	if f.sleepF != nil {
		return f.sleepF(ctx, d)
	}
	return nil
}

func (f *fixture) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// handler is a Handler over the fixture, finding programs only in its
// directory (never this machine's systemctl).
func (f *fixture) handler(o Options) *Handler {
	f.t.Helper()
	o.Backend, o.Metrics, o.Sleep, o.Logger = f.client, f, f.sleep, f.log
	o.SearchPath = []string{f.dir}
	if o.PctPath == "" {
		o.PctPath = filepath.Join(f.dir, "pct")
	}
	h, err := New(o)
	require.NoError(f.t, err)
	return h
}

// op creates a reboot operation and returns it as the daemon gets it.
func (f *fixture) op(r nannyapitest.RebootOperation) nannyapi.RebootOperationRecord {
	f.t.Helper()
	id, err := f.srv.CreateReboot(f.reg.AgentID, r)
	require.NoError(f.t, err)
	f.opID = id
	rec, ok := f.srv.Record(nannyapitest.RebootOperations, id)
	require.True(f.t, ok)
	raw, err := json.Marshal(rec)
	require.NoError(f.t, err)
	var op nannyapi.RebootOperationRecord
	require.NoError(f.t, nannyapi.DecodeRecord(raw, nannyapi.CollectionRebootOperations, &op))
	return op
}

func (f *fixture) record() map[string]any {
	f.t.Helper()
	rec, ok := f.srv.Record(nannyapitest.RebootOperations, f.opID)
	require.True(f.t, ok)
	return rec
}

func (f *fixture) messages(level zapcore.Level) []string {
	var out []string
	for _, e := range f.logs.All() {
		if e.Level == level {
			out = append(out, e.Message)
		}
	}
	return out
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestHostReboot: metrics pause before the acknowledgement, systemctl
// reboot runs once with a fixed environment, and metrics stay paused
// for the operation's timeout, then resume with a warning.
func TestHostReboot(t *testing.T) {
	f := newFixture(t)
	t.Setenv("NANNY_REBOOT_TEST_SECRET", "must not leak")
	f.script("systemctl", "env > '"+filepath.Join(f.dir, "env.txt")+"'; pwd >> '"+filepath.Join(f.dir, "env.txt")+"'")
	f.script("shutdown", "")
	op := f.op(nannyapitest.RebootOperation{Reason: "kernel update", TimeoutSeconds: 120})
	require.NoError(t, f.handler(Options{}).HandleReboot(ctx(t), op))

	require.Equal(t, []string{"systemctl reboot"}, f.runs())
	require.Equal(t, []string{"pause acks=0 runs=0", "hold 2m0s acks=1 runs=1", "resume acks=1 runs=1"}, f.got())
	require.Equal(t, "rebooting", f.record()["status"])
	require.Len(t, f.srv.RequestsFor("POST /api/reboot/"+op.ID+"/acknowledge"), 1)
	env, err := os.ReadFile(filepath.Join(f.dir, "env.txt"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(env)), "\n")
	require.Equal(t, "/", lines[len(lines)-1], "the command runs in /")
	var vars []string
	for _, l := range lines[:len(lines)-1] {
		if k, _, _ := strings.Cut(l, "="); k != "PWD" && k != "SHLVL" && k != "_" && k != "OLDPWD" {
			vars = append(vars, l)
		}
	}
	require.ElementsMatch(t, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "LC_ALL=C"}, vars)
	require.Contains(t, f.messages(zap.WarnLevel), "the host did not go down after the reboot command; resuming metrics (the backend will mark the reboot completed)")
}

// TestHostRebootDaemonStops: the daemon stopping (as the reboot stops
// it) ends the hold without resuming metrics.
func TestHostRebootDaemonStops(t *testing.T) {
	f := newFixture(t)
	f.script("systemctl", "")
	f.sleepF = func(ctx context.Context, d time.Duration) error { return context.Canceled }
	op := f.op(nannyapitest.RebootOperation{})
	require.NoError(t, f.handler(Options{}).HandleReboot(ctx(t), op))
	require.Equal(t, []string{"systemctl reboot"}, f.runs())
	require.Equal(t, []string{"pause acks=0 runs=0", "hold 5m0s acks=1 runs=1"}, f.got(), "the default hold is 300 s; no resume")
	require.Empty(t, f.messages(zap.WarnLevel))
}

// TestHostRebootFallback: systemctl failing, or missing, means shutdown
// -r now, run once.
func TestHostRebootFallback(t *testing.T) {
	f := newFixture(t)
	f.script("systemctl", "echo 'Failed to connect to bus: No such file or directory' >&2; exit 1")
	f.script("shutdown", "")
	op := f.op(nannyapitest.RebootOperation{TimeoutSeconds: 60})
	require.NoError(t, f.handler(Options{Hold: time.Minute}).HandleReboot(ctx(t), op))
	require.Equal(t, []string{"systemctl reboot", "shutdown -r now"}, f.runs())
	require.Equal(t, []string{"pause acks=0 runs=0", "hold 1m0s acks=1 runs=2", "resume acks=1 runs=2"}, f.got())
	require.Equal(t, "rebooting", f.record()["status"])
	failed := f.logs.FilterMessage("reboot command failed").All()
	require.Len(t, failed, 1)
	require.Equal(t, "Failed to connect to bus: No such file or directory", failed[0].ContextMap()["output"])

	g := newFixture(t)
	g.script("shutdown", "")
	require.NoError(t, g.handler(Options{}).HandleReboot(ctx(t), g.op(nannyapitest.RebootOperation{})))
	require.Equal(t, []string{"shutdown -r now"}, g.runs())
}

// TestHostRebootFails: a failed command is not retried, is reported as
// failed through the records API, and metrics resume.
func TestHostRebootFails(t *testing.T) {
	f := newFixture(t)
	cmd := f.script("my-reboot", "echo 'permission denied' >&2; exit 3")
	op := f.op(nannyapitest.RebootOperation{Reason: "kernel update"})
	err := f.handler(Options{Command: []string{cmd, "--now"}}).HandleReboot(ctx(t), op)
	want := "reboot command failed: " + cmd + " --now: exit status 3 (output: permission denied)"
	require.EqualError(t, err, "reboot "+op.ID+": "+want)
	require.Equal(t, []string{"my-reboot --now"}, f.runs())
	require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=1"}, f.got())
	rec := f.record()
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, want, rec["error_message"])
	require.Len(t, f.srv.RequestsFor("PATCH /api/collections/reboot_operations/records/"+op.ID), 1)

	// Both default commands failing: each once, both in the report.
	g := newFixture(t)
	g.script("systemctl", "exit 1")
	g.script("shutdown", "exit 2")
	op = g.op(nannyapitest.RebootOperation{})
	err = g.handler(Options{}).HandleReboot(ctx(t), op)
	want = "reboot command failed: " + filepath.Join(g.dir, "systemctl") + " reboot: exit status 1; then " + filepath.Join(g.dir, "shutdown") + " -r now: exit status 2"
	require.EqualError(t, err, "reboot "+op.ID+": "+want)
	require.Equal(t, []string{"systemctl reboot", "shutdown -r now"}, g.runs())
	require.Equal(t, want, g.record()["error_message"])
	require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=2"}, g.got())
}

// TestRebootReportFailsToo: a report the backend refuses is logged; the
// error and the resume are the same.
func TestRebootReportFailsToo(t *testing.T) {
	f := newFixture(t)
	cmd := f.script("my-reboot", "exit 1")
	op := f.op(nannyapitest.RebootOperation{})
	f.srv.Inject("PATCH /api/collections/reboot_operations/records/"+op.ID, nannyapitest.Fault{Status: 500})
	err := f.handler(Options{Command: []string{cmd}}).HandleReboot(ctx(t), op)
	require.ErrorContains(t, err, "exit status 1")
	require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=1"}, f.got())
	require.Equal(t, "rebooting", f.record()["status"])
	require.Contains(t, f.messages(zap.WarnLevel), "cannot report the failed reboot")
}

// TestRebootCommandTimeout: a command that does not return is killed
// with its children at the timeout and reported.
func TestRebootCommandTimeout(t *testing.T) {
	f := newFixture(t)
	cmd := f.script("hangs", "sleep 60 & sleep 60")
	op := f.op(nannyapitest.RebootOperation{})
	err := f.handler(Options{Command: []string{cmd}, CommandTimeout: 200 * time.Millisecond}).HandleReboot(ctx(t), op)
	require.EqualError(t, err, "reboot "+op.ID+": reboot command failed: "+cmd+": no result within 200ms; killed")
	require.Equal(t, "failed", f.record()["status"])
	require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=1"}, f.got())
}

// TestLXCReboot: pct reboot <vmid>, once; metrics resume straight after
// (the host stays up), so the next post completes the operation.
func TestLXCReboot(t *testing.T) {
	f := newFixture(t)
	f.script("systemctl", "")
	pct := f.script("pct", "")
	op := f.op(nannyapitest.RebootOperation{LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.NoError(t, f.handler(Options{PctPath: pct}).HandleReboot(ctx(t), op))
	require.Equal(t, []string{"pct reboot 100"}, f.runs())
	require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=1"}, f.got())
	require.Equal(t, "rebooting", f.record()["status"])

	// A failing pct is reported like a host command.
	g := newFixture(t)
	pct = g.script("pct", "echo 'CT 100 not running' >&2; exit 255")
	op = g.op(nannyapitest.RebootOperation{LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.Error(t, g.handler(Options{PctPath: pct}).HandleReboot(ctx(t), op))
	require.Equal(t, "reboot command failed: "+pct+" reboot 100: exit status 255 (output: CT 100 not running)", g.record()["error_message"])
}

// TestDryRun: acknowledged, nothing run, the command logged, metrics
// resumed.
func TestDryRun(t *testing.T) {
	f := newFixture(t)
	f.script("systemctl", "")
	f.script("shutdown", "")
	op := f.op(nannyapitest.RebootOperation{})
	require.NoError(t, f.handler(Options{DryRun: true}).HandleReboot(ctx(t), op))
	require.Empty(t, f.runs())
	require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=0"}, f.got())
	require.Equal(t, "rebooting", f.record()["status"])
	e := f.logs.FilterMessage("dry run: not running the reboot command").All()
	require.Len(t, e, 1)
	require.Equal(t, filepath.Join(f.dir, "systemctl")+" reboot", e[0].ContextMap()["command"])

	g := newFixture(t)
	pct := g.script("pct", "")
	op = g.op(nannyapitest.RebootOperation{LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.NoError(t, g.handler(Options{DryRun: true, PctPath: pct}).HandleReboot(ctx(t), op))
	require.Empty(t, g.runs())
	require.Equal(t, pct+" reboot 100", g.logs.FilterMessage("dry run: not running the reboot command").All()[0].ContextMap()["command"])

	// With neither program installed a dry run still goes through.
	h := newFixture(t)
	require.NoError(t, h.handler(Options{DryRun: true}).HandleReboot(ctx(t), h.op(nannyapitest.RebootOperation{})))
	require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=0"}, h.got())
}

// TestAcknowledgementFails: whatever the backend answers instead of the
// acknowledgement, nothing is run and metrics resume.
func TestAcknowledgementFails(t *testing.T) {
	for _, c := range []struct {
		fault nannyapitest.Fault
		want  string
	}{
		{nannyapitest.Fault{Status: 404, Body: `{"error":"reboot operation not found"}`}, "404 reboot operation not found"},
		{nannyapitest.Fault{Status: 403, Body: `{"error":"not your reboot operation"}`}, "403 not your reboot operation"},
		{nannyapitest.Fault{Status: 500}, "500 Something went wrong"},
		{nannyapitest.Fault{Reset: true}, "POST /api/reboot/"},
	} {
		f := newFixture(t)
		f.script("systemctl", "")
		op := f.op(nannyapitest.RebootOperation{})
		f.srv.Inject("POST /api/reboot/"+op.ID+"/acknowledge", c.fault)
		err := f.handler(Options{}).HandleReboot(ctx(t), op)
		require.ErrorContains(t, err, "reboot "+op.ID+": not rebooting, the acknowledgement failed: nannyapi: ")
		require.ErrorContains(t, err, c.want)
		require.Empty(t, f.runs())
		require.Equal(t, []string{"pause acks=0 runs=0", "resume acks=1 runs=0"}, f.got())
		require.Equal(t, "sent", f.record()["status"])
		require.Empty(t, f.srv.RequestsFor("PATCH /api/collections/reboot_operations/records/"+op.ID), "nothing to report: the backend was never told")
	}

	// The real 403: another agent's operation.
	f := newFixture(t)
	f.script("systemctl", "")
	other := f.srv.RegisterAgent(f.user, "otherhost")
	id, err := f.srv.CreateRebootOperation(other.AgentID, "", 0)
	require.NoError(t, err)
	f.opID = id
	err = f.handler(Options{}).HandleReboot(ctx(t), nannyapi.RebootOperationRecord{ID: id, Status: "sent"})
	require.ErrorContains(t, err, "403 not your reboot operation")
	require.Empty(t, f.runs())
}

// TestStoppedBeforeRebooting: the daemon stopping after the
// acknowledgement runs nothing and says so to the backend.
func TestStoppedBeforeRebooting(t *testing.T) {
	f := newFixture(t)
	f.script("systemctl", "")
	op := f.op(nannyapitest.RebootOperation{})
	c, cancel := context.WithCancel(context.Background())
	h := f.handler(Options{})
	h.o.Backend = cancelAfterAck{Backend: f.client, cancel: cancel}
	err := h.HandleReboot(c, op)
	require.EqualError(t, err, "reboot "+op.ID+": the agent stopped before rebooting")
	require.Empty(t, f.runs())
	require.Equal(t, "failed", f.record()["status"])
	require.Equal(t, "the agent stopped before rebooting", f.record()["error_message"])
}

type cancelAfterAck struct {
	Backend
	cancel context.CancelFunc
}

func (c cancelAfterAck) AcknowledgeReboot(ctx context.Context, id string) error {
	err := c.Backend.AcknowledgeReboot(ctx, id)
	c.cancel()
	return err
}

// TestRefusedOperations: an ID or a vmid that is not what the backend
// makes is refused before anything happens: no pause, no request, no
// command.
func TestRefusedOperations(t *testing.T) {
	f := newFixture(t)
	f.script("systemctl", "")
	pct := f.script("pct", "")
	h := f.handler(Options{PctPath: pct})
	for _, c := range []struct {
		op   nannyapi.RebootOperationRecord
		want string
	}{
		{nannyapi.RebootOperationRecord{ID: ""}, `reboot: operation ID "" is not a record ID`},
		{nannyapi.RebootOperationRecord{ID: "../../x/acknow"}, `reboot: operation ID "../../x/acknow" is not a record ID`},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv "}, "is not a record ID"},
		{nannyapi.RebootOperationRecord{ID: "J7C41FK1XUKYCXV"}, "is not a record ID"},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv", VMID: "100; reboot"}, `reboot j7c41fk1xukycxv: vmid "100; reboot" is not a Proxmox guest ID (a number from 100 to 999999999); refusing it`},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv", VMID: "-100"}, "is not a Proxmox guest ID"},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv", VMID: "0100"}, "is not a Proxmox guest ID"},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv", VMID: "99"}, "is not a Proxmox guest ID"},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv", VMID: "1000000000"}, "is not a Proxmox guest ID"},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv", VMID: "lxc/100"}, "is not a Proxmox guest ID"},
		{nannyapi.RebootOperationRecord{ID: "j7c41fk1xukycxv", LXCID: "rhgs96k78q43f30"}, `reboot j7c41fk1xukycxv: container "rhgs96k78q43f30" has no vmid; refusing it rather than rebooting the host`},
	} {
		require.ErrorContains(t, h.HandleReboot(ctx(t), c.op), c.want)
	}
	require.Empty(t, f.got())
	require.Empty(t, f.srv.Requests())
	require.Empty(t, f.runs())

	// No program to reboot with: refused before the acknowledgement.
	g := newFixture(t)
	op := g.op(nannyapitest.RebootOperation{})
	err := g.handler(Options{}).HandleReboot(ctx(t), op)
	require.EqualError(t, err, "reboot "+op.ID+": neither systemctl nor shutdown is in "+g.dir+"; set daemon.reboot_command")
	require.Empty(t, g.got())
	require.Equal(t, "sent", g.record()["status"])
}

func TestNewChecks(t *testing.T) {
	cl := &nannyapi.Client{}
	_, err := New(Options{})
	require.EqualError(t, err, "reboot: a backend client is required")
	_, err = New(Options{Backend: cl, Command: []string{"systemctl", "reboot"}})
	require.EqualError(t, err, `reboot: command program "systemctl" must be an absolute path (e.g. /usr/bin/systemctl)`)
	_, err = New(Options{Backend: cl, Command: []string{"/sbin/reboot", ""}})
	require.ErrorContains(t, err, "has an empty argument")
	_, err = New(Options{Backend: cl, PctPath: "pct"})
	require.EqualError(t, err, `reboot: pct path "pct" must be absolute`)
	h, err := New(Options{Backend: cl})
	require.NoError(t, err)
	require.Equal(t, DefaultPctPath, h.o.PctPath)
	require.Equal(t, DefaultSearchPath, h.o.SearchPath)
	require.Equal(t, DefaultCommandTimeout, h.o.CommandTimeout)

	var none *metrics.Sender
	h, err = New(Options{Backend: cl, Metrics: none})
	require.NoError(t, err)
	require.Equal(t, noMetrics{}, h.o.Metrics, "a nil Sender is no metrics loop")

	cfg := config.Defaults()
	cfg.Daemon.RebootCommand = []string{"/usr/local/sbin/reboot-now"}
	cfg.Daemon.RebootDryRun = true
	o := FromConfig(cfg, cl, nil, nil)
	require.Equal(t, []string{"/usr/local/sbin/reboot-now"}, o.Command)
	require.True(t, o.DryRun)
}

func TestBoundedOutput(t *testing.T) {
	var b bounded
	n, err := b.Write([]byte(strings.Repeat("a", maxOutput-1) + "é"))
	require.NoError(t, err)
	require.Equal(t, maxOutput+1, n)
	n, err = b.Write([]byte("more\n"))
	require.NoError(t, err)
	require.Equal(t, 5, n)
	// The cut split the é: its first byte is shown as ?, the second
	// and "more\n" are counted.
	got := b.String()
	require.True(t, got == strings.Repeat("a", maxOutput-1)+"?… (6 more bytes)", "%d bytes ending %q", len(got), got[len(got)-30:])

	var c bounded
	_, _ = c.Write([]byte("Failed to reboot:\n  Access denied\n"))
	require.Equal(t, "Failed to reboot: Access denied", c.String())
}
