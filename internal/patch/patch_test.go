package patch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fixture is a backend with an agent, a handler for it and a directory
// the test scripts write their records into.
type fixture struct {
	t      *testing.T
	srv    *nannyapitest.Server
	reg    nannyapitest.Registration
	client *nannyapi.Client
	// out is where scripts record what they saw; base is the handler's
	// BaseDir.
	out, base string
	h         *Handler
	logs      *observer.ObservedLogs
}

// agentEnviron is the agent's environment in these tests: secrets the
// script must not see, and a proxy it must.
var agentEnviron = []string{
	"NANNYAI_TOKEN=secret-token", "NANNYAPI_URL=http://127.0.0.1:1", "AWS_SECRET_ACCESS_KEY=k", "GITHUB_TOKEN=t",
	"PATH=/evil/bin", "LD_PRELOAD=/evil.so", "https_proxy=http://proxy.example:3128", "NO_PROXY=localhost",
}

func newFixture(t *testing.T, tune func(*fixture, *Options)) *fixture {
	t.Helper()
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "patch-host")
	cl, err := nannyapi.New(nannyapi.Options{BaseURL: srv.URL, Tokens: nannyapi.StaticToken(reg.AccessToken)})
	require.NoError(t, err)
	core, logs := observer.New(zap.InfoLevel)
	f := &fixture{t: t, srv: srv, reg: reg, client: cl, out: t.TempDir(), base: filepath.Join(t.TempDir(), "patches"), logs: logs}
	o := Options{
		Client: cl, AgentID: reg.AgentID, BaseDir: f.base, Timeout: time.Minute,
		Environ:     func() []string { return agentEnviron },
		UploadRetry: nannyapi.Backoff{Sleep: func(context.Context, time.Duration) error { return nil }},
		Logger:      zap.New(core),
	}
	if tune != nil {
		tune(f, &o)
	}
	f.h, err = New(o)
	require.NoError(t, err)
	return f
}

// setScript makes the backend's debian script body, with OUT set to
// the fixture's record directory.
func (f *fixture) setScript(body string) string {
	f.t.Helper()
	s := "#!/bin/bash\nOUT='" + f.out + "'\n" + body
	require.NoError(f.t, f.srv.SetScriptContent(nannyapitest.DefaultScriptID, []byte(s)))
	return s
}

// op creates an operation on the backend and returns its record as the
// daemon would hand it over.
func (f *fixture) op(p nannyapitest.PatchOperation) nannyapi.PatchOperationRecord {
	f.t.Helper()
	id, err := f.srv.CreatePatchOperation(f.reg.AgentID, p)
	require.NoError(f.t, err)
	rec, ok := f.srv.Record(nannyapitest.PatchOperations, id)
	require.True(f.t, ok)
	raw, err := json.Marshal(rec)
	require.NoError(f.t, err)
	var op nannyapi.PatchOperationRecord
	require.NoError(f.t, nannyapi.DecodeRecord(raw, nannyapi.CollectionPatchOperations, &op))
	return op
}

func (f *fixture) run(op nannyapi.PatchOperationRecord) *Outcome {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := f.h.Run(ctx, op)
	require.NoError(f.t, err)
	require.True(f.t, out.Uploaded)
	f.noRunDirs()
	return out
}

// noRunDirs: every run removes its directory, whatever happened.
func (f *fixture) noRunDirs() {
	f.t.Helper()
	entries, err := os.ReadDir(f.base)
	if os.IsNotExist(err) {
		return
	}
	require.NoError(f.t, err)
	require.Empty(f.t, entries)
}

func (f *fixture) read(name string) string {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.out, name))
	require.NoError(f.t, err)
	return string(b)
}

func (f *fixture) exists(name string) bool {
	_, err := os.Stat(filepath.Join(f.out, name))
	return err == nil
}

func (f *fixture) result(id string) nannyapitest.PatchResult {
	f.t.Helper()
	res, ok := f.srv.PatchResultFor(id)
	require.True(f.t, ok, "no result uploaded for %s", id)
	require.Equal(f.t, 1, res.Uploads)
	return res
}

func (f *fixture) status(id string) string {
	rec, _ := f.srv.Record(nannyapitest.PatchOperations, id)
	return rec["status"].(string)
}

// recorder writes its argv, environment, working directory and the
// modes of itself and its directory, then prints a summary among text.
const recorder = `{ printf '%s\n' "$#"; for a in "$@"; do printf '[%s]\n' "$a"; done; } > "$OUT/argv"
printf '%s\n' "$0" > "$OUT/self"
env | sort > "$OUT/env"
pwd > "$OUT/pwd"
stat -c %a "$0" > "$OUT/mode"
stat -c %a "$(dirname "$0")" > "$OUT/dirmode"
echo "=== APT Update ==="
echo "Reading package lists..."
echo "=== JSON Output (for UI parsing) ==="
echo "{"
echo "  \"updates_available\": 2,"
echo "  \"packages\": ["
echo "    {\"package\": \"openssl\", \"current_version\": \"3.0.11\", \"new_version\": \"3.0.13\"},"
echo "    {\"package\": \"curl\", \"current_version\": \"7.88.1\", \"new_version\": \"7.88.2\"}"
echo "  ],"
echo "  \"dry_run\": true"
echo "}"
echo "warning: held back" >&2
`

const recorderStdout = `=== APT Update ===
Reading package lists...
=== JSON Output (for UI parsing) ===
{
  "updates_available": 2,
  "packages": [
    {"package": "openssl", "current_version": "3.0.11", "new_version": "3.0.13"},
    {"package": "curl", "current_version": "7.88.1", "new_version": "7.88.2"}
  ],
  "dry_run": true
}
`

func TestDryRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.setScript(recorder)
	op := f.op(nannyapitest.PatchOperation{})
	out := f.run(op)

	require.Empty(t, out.Refused)
	require.Equal(t, "1\n[--dry-run]\n", f.read("argv"))
	self := strings.TrimSpace(f.read("self"))
	require.Equal(t, filepath.Join(f.base, filepath.Base(filepath.Dir(self)), "patch-script"), self)
	require.Equal(t, filepath.Dir(self), strings.TrimSpace(f.read("pwd")))
	require.Equal(t, "700\n", f.read("mode"))
	require.Equal(t, "700\n", f.read("dirmode"))
	require.Equal(t, []string{self, "--dry-run"}, out.Argv)

	env := strings.Split(strings.TrimSpace(f.read("env")), "\n")
	var names []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	// bash adds PWD, SHLVL and _ itself.
	require.Equal(t, []string{"DEBIAN_FRONTEND", "HOME", "LANG", "LC_ALL", "NO_PROXY", "PATH", "PWD", "SHLVL", "TERM", "_", "https_proxy"}, names)
	require.Contains(t, env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	require.Contains(t, env, "LC_ALL=C")
	require.Contains(t, env, "https_proxy=http://proxy.example:3128")
	require.Contains(t, env, "HOME="+filepath.Dir(self))

	res := f.result(op.ID)
	require.Equal(t, "0", res.ExitCode)
	require.Equal(t, recorderStdout, string(res.Stdout))
	require.Equal(t, "warning: held back\n", string(res.Stderr))
	require.Equal(t, "", res.LXCID)
	require.Equal(t, "completed", f.status(op.ID))

	// Marked running before anything was fetched.
	var order []string
	for _, r := range f.srv.Requests() {
		order = append(order, r.Method+" "+r.Path)
	}
	require.Equal(t, []string{
		"PATCH /api/patches", "GET " + nannyapitest.DefaultScriptURL, "GET /api/scripts/" + nannyapitest.DefaultScriptID + "/validate",
		"POST /api/patches/" + op.ID + "/result",
	}, order)

	dry := true
	require.Equal(t, &Summary{UpdatesAvailable: 2, DryRun: &dry, Packages: []PackageUpdate{
		{Package: "openssl", CurrentVersion: "3.0.11", NewVersion: "3.0.13"},
		{Package: "curl", CurrentVersion: "7.88.1", NewVersion: "7.88.2"},
	}}, out.Summary)
	require.False(t, out.Truncated)
	end := f.logs.FilterMessage("patch run finished").All()
	require.Len(t, end, 1)
	fields := end[0].ContextMap()
	require.Equal(t, op.ID, fields["operation"])
	require.Equal(t, "dry-run", fields["mode"])
	require.Equal(t, int64(0), fields["exit_code"])
	require.Equal(t, int64(2), fields["updates_available"])
	require.Contains(t, fields, "duration")
	require.Len(t, f.logs.FilterMessage("patch run started").All(), 1)
	for _, e := range f.logs.All() {
		require.NotContains(t, fmt.Sprint(e.ContextMap()), f.reg.AccessToken)
	}
}

func TestApplyWithExclusions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(_ *fixture, o *Options) { o.SkipRunning = true })
	f.setScript(recorder + "exit 100\n")
	f.srv.SetPackageExceptions(f.reg.AgentID, "nginx", "linux-image-amd64")
	op := f.op(nannyapitest.PatchOperation{Mode: "apply"})
	require.Equal(t, []string{"nginx", "linux-image-amd64"}, op.Exclusions)
	out := f.run(op)

	require.Equal(t, "2\n[--exclude]\n[nginx,linux-image-amd64]\n", f.read("argv"))
	require.Equal(t, 100, out.ExitCode)
	res := f.result(op.ID)
	require.Equal(t, "100", res.ExitCode)
	require.Equal(t, recorderStdout, string(res.Stdout))
	require.Equal(t, "failed", f.status(op.ID))
	require.Zero(t, f.srv.Count("PATCH /api/patches"), "SkipRunning")

	// Apply without exclusions: no argument at all.
	f.srv.SetPackageExceptions(f.reg.AgentID)
	op = f.op(nannyapitest.PatchOperation{Mode: "apply"})
	f.run(op)
	require.Equal(t, "0\n", f.read("argv"))
}

// canary is a script that leaves a file behind if it ever runs.
const canary = "touch \"$OUT/canary\"\necho ran\n"

// lengthLiar sends the script's Content-Length but only half of it,
// the way a cut connection ends a body.
type lengthLiar struct{ path string }

func (l lengthLiar) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || r.URL.Path != l.path {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b[:len(b)/2]))
	return resp, nil
}

// TestNotRun: whatever keeps the script from running, it does not run,
// the operation is reported failed with exit code 1 and the reason, and
// no directory is left.
func TestNotRun(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		tune  func(*fixture, *Options)
		setup func(f *fixture, op *nannyapi.PatchOperationRecord)
		want  string
	}{
		{name: "sha256 mismatch", setup: func(f *fixture, op *nannyapi.PatchOperationRecord) {
			require.NoError(t, f.srv.SetScriptSHA256(nannyapitest.DefaultScriptID, strings.Repeat("ab", 32)))
		}, want: "SHA-256 mismatch for script " + nannyapitest.DefaultScriptID + ": downloaded "},
		{name: "digest not hex", setup: func(f *fixture, op *nannyapi.PatchOperationRecord) {
			require.NoError(t, f.srv.SetScriptSHA256(nannyapitest.DefaultScriptID, ""))
		}, want: "not 64 hex digits"},
		{name: "download 404", setup: func(f *fixture, op *nannyapi.PatchOperationRecord) {
			op.ScriptURL = "/api/files/" + nannyapitest.ScriptsCollectionID + "/" + nannyapitest.DefaultScriptID + "/gone.sh"
		}, want: "downloading the script: nannyapi: GET /api/files/pbc_1280174292/r13zcso5sx93pj7/gone.sh: 404 The requested resource wasn't found."},
		{name: "download 500", setup: func(f *fixture, op *nannyapi.PatchOperationRecord) {
			f.srv.Inject("GET "+nannyapitest.DefaultScriptURL, nannyapitest.Fault{Status: 500})
		}, want: "downloading the script: nannyapi: GET " + nannyapitest.DefaultScriptURL + ": 500 "},
		{name: "validate 404", setup: func(f *fixture, op *nannyapi.PatchOperationRecord) {
			f.srv.Inject("GET /api/scripts/"+nannyapitest.DefaultScriptID+"/validate", nannyapitest.Fault{Status: 404, Body: `{"error":"script not found"}`})
		}, want: "getting the script's SHA-256: nannyapi: GET /api/scripts/{id}/validate: 404 script not found"},
		{name: "wrong length", tune: func(f *fixture, o *Options) {
			cl, err := nannyapi.New(nannyapi.Options{BaseURL: f.srv.URL, Tokens: nannyapi.StaticToken(f.reg.AccessToken),
				HTTPClient: &http.Client{Transport: lengthLiar{path: nannyapitest.DefaultScriptURL}}})
			require.NoError(t, err)
			o.Client = cl
		}, want: "where Content-Length said"},
		{name: "too large", tune: func(_ *fixture, o *Options) { o.MaxScriptBytes = 16 }, want: "answer larger than 16 bytes"},
		{name: "empty script", setup: func(f *fixture, op *nannyapi.PatchOperationRecord) {
			require.NoError(t, f.srv.SetScriptContent(nannyapitest.DefaultScriptID, nil))
		}, want: "the downloaded script is empty"},
		{name: "base dir unusable", tune: func(_ *fixture, o *Options) {
			file := filepath.Join(t.TempDir(), "file")
			require.NoError(t, os.WriteFile(file, nil, 0o600))
			o.BaseDir = filepath.Join(file, "patches")
		}, want: "making the patch directory: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, c.tune)
			f.setScript(canary)
			op := f.op(nannyapitest.PatchOperation{})
			if c.setup != nil {
				c.setup(f, &op)
			}
			out := f.run(op)
			require.False(t, f.exists("canary"), "the script ran")
			require.Contains(t, out.Refused, c.want)
			require.Equal(t, ExitFailedToRun, out.ExitCode)
			res := f.result(op.ID)
			require.Equal(t, "1", res.ExitCode)
			require.Empty(t, res.Stdout)
			require.True(t, strings.HasPrefix(string(res.Stderr), "nannyagent: patch script not run: "), string(res.Stderr))
			require.Contains(t, string(res.Stderr), c.want)
			require.Equal(t, "failed", f.status(op.ID))
			require.Len(t, f.logs.FilterMessage("patch script not run").All(), 1)
			require.Empty(t, f.logs.FilterMessage("patch run finished").All())
		})
	}
}

// TestRefusedBeforeAnything: operations whose fields would reach a URL
// or a command line unchecked are refused before any download; those
// whose ID is unusable are not even reported.
func TestRefusedBeforeAnything(t *testing.T) {
	t.Parallel()
	var evilHits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { evilHits.Add(1) }))
	t.Cleanup(evil.Close)
	f := newFixture(t, nil)
	f.setScript(canary)

	for _, c := range []struct {
		name   string
		change func(op *nannyapi.PatchOperationRecord)
		want   string
	}{
		{"mode --dry-run", func(op *nannyapi.PatchOperationRecord) { op.Mode = "--dry-run" }, `mode "--dry-run" is neither "dry-run" nor "apply"`},
		{"mode empty", func(op *nannyapi.PatchOperationRecord) { op.Mode = "" }, `mode "" is neither`},
		{"absolute script URL", func(op *nannyapi.PatchOperationRecord) { op.ScriptURL = evil.URL + "/x/" + op.ScriptID + "/s.sh" }, "is not a path relative to the backend"},
		{"scheme-relative URL", func(op *nannyapi.PatchOperationRecord) {
			op.ScriptURL = "//" + strings.TrimPrefix(evil.URL, "http://") + "/x/" + op.ScriptID + "/s.sh"
		}, "is not a path relative to the backend"},
		{"script ids disagree", func(op *nannyapi.PatchOperationRecord) { op.ScriptID = "a1pn3apkupd4t3s" }, `script_id "a1pn3apkupd4t3s" and the script URL's record "r13zcso5sx93pj7" disagree`},
		{"script id from a bad URL", func(op *nannyapi.PatchOperationRecord) { op.ScriptID, op.ScriptURL = "", "/x.sh" }, `script ID "" is not a record ID`},
		{"script id malformed", func(op *nannyapi.PatchOperationRecord) {
			op.ScriptID, op.ScriptURL = "", "/api/files/c/R13ZCSO5SX93PJ7/s.sh"
		}, `script ID "R13ZCSO5SX93PJ7" is not a record ID`},
		{"lxc without vmid", func(op *nannyapi.PatchOperationRecord) { op.LXCID = "rhgs96k78q43f30" }, `targets container "rhgs96k78q43f30" but carries no vmid`},
		{"exclusion option", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{"nginx", "-oDpkg::Pre-Invoke=id"} }, `starts with '-'`},
		{"exclusion comma", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{"a,b"} }, "contains a comma"},
		{"exclusion space", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{"a b"} }, "contains a comma, a space"},
		{"exclusion newline", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{"a\nb"} }, "a control character"},
		{"exclusion nul", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{"a\x00"} }, "a control character"},
		{"exclusion empty", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{""} }, "is empty"},
		{"exclusion not utf-8", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{"a\xff"} }, "not valid UTF-8"},
		{"exclusion too long", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = []string{strings.Repeat("a", 256)} }, "longer than 255 bytes"},
		{"too many exclusions", func(op *nannyapi.PatchOperationRecord) { op.Exclusions = make([]string, 1001) }, "1001 excluded packages, more than 1000"},
	} {
		op := f.op(nannyapitest.PatchOperation{})
		c.change(&op)
		before := len(f.srv.Requests())
		out := f.run(op)
		require.Contains(t, out.Refused, c.want, c.name)
		reqs := f.srv.Requests()[before:]
		require.Len(t, reqs, 1, "%s: only the result is sent", c.name)
		require.Equal(t, "POST /api/patches/"+op.ID+"/result", reqs[0].Key())
		res := f.result(op.ID)
		require.Equal(t, "1", res.ExitCode)
		require.Contains(t, string(res.Stderr), c.want)
	}
	for _, vmid := range []string{"-1", "+100", "0100", "99", "1e3", "100 ", " 100", "100;id", "1000000000", "0x64", "١٠٠"} {
		op := f.op(nannyapitest.PatchOperation{LXCID: "rhgs96k78q43f30", VMID: vmid})
		out := f.run(op)
		require.Contains(t, out.Refused, "is not a Proxmox guest number (100 to 999999999, plain decimal)", "vmid %q", vmid)
	}
	require.False(t, f.exists("canary"))
	require.Zero(t, evilHits.Load())
	require.Zero(t, f.srv.Count("GET "+nannyapitest.DefaultScriptURL))

	// An operation that cannot even be reported.
	before := len(f.srv.Requests())
	ctx := context.Background()
	for _, id := range []string{"", "../../api/agent", "VPIECET7COPBE8J", "vpiecet7copbe8", "vpiecet7copbe8j/"} {
		op := f.op(nannyapitest.PatchOperation{})
		op.ID = id
		_, err := f.h.Run(ctx, op)
		require.ErrorContains(t, err, "is not a record ID", "%q", id)
	}
	op := f.op(nannyapitest.PatchOperation{})
	op.AgentID = "someotheragent0"
	require.ErrorContains(t, f.h.HandlePatch(ctx, op), `is for agent "someotheragent0", not this one`)
	require.Len(t, f.srv.Requests(), before)
	require.False(t, f.exists("canary"))
	f.noRunDirs()
}

// alive reports whether the process a script named by "pid start"
// (its start time, which a reused PID does not share) still runs
// (a zombie has ended; only its parent's wait is missing).
func alive(t *testing.T, rec string) bool {
	t.Helper()
	fields := strings.Fields(rec)
	require.Len(t, fields, 2, "%q", rec)
	b, err := os.ReadFile("/proc/" + fields[0] + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	rest := s[strings.LastIndexByte(s, ')')+2:]
	st := strings.Fields(rest)
	// st[0] is field 3 (state), so field 22 is st[19].
	return st[19] == fields[1] && st[0] != "Z" && st[0] != "X"
}

// waitGone waits, bounded, for a killed process to be gone: SIGKILL is
// delivered when the process next runs, not when kill returns.
func waitGone(t *testing.T, rec string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for alive(t, rec) {
		if time.Now().After(deadline) {
			t.Fatalf("process %s still runs", rec)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// spawner starts a child that starts a grandchild, records both, tells
// the test through a FIFO that it is ready, and sleeps.
const spawner = `( sleep 1000 & echo "$! ` + `$(cut -d' ' -f22 /proc/$!/stat)" > "$OUT/grandchild.tmp"; mv "$OUT/grandchild.tmp" "$OUT/grandchild"; wait ) &
echo "$! $(cut -d' ' -f22 /proc/$!/stat)" > "$OUT/child"
while [ ! -e "$OUT/grandchild" ]; do sleep 0.01; done
echo "started"
echo ready > "$OUT/fifo"
sleep 1000
`

func TestTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(_ *fixture, o *Options) { o.Timeout = 2 * time.Second })
	f.setScript(spawner)
	require.NoError(t, syscall.Mkfifo(filepath.Join(f.out, "fifo"), 0o600))
	// Nobody reads the FIFO: the script blocks there until the timeout.
	op := f.op(nannyapitest.PatchOperation{})
	out := f.run(op)

	require.True(t, out.TimedOut)
	require.False(t, out.Cancelled)
	require.Equal(t, 137, out.ExitCode)
	waitGone(t, f.read("child"))
	waitGone(t, f.read("grandchild"))
	res := f.result(op.ID)
	require.Equal(t, "137", res.ExitCode)
	require.Equal(t, "started\n", string(res.Stdout))
	require.Equal(t, "nannyagent: the patch script ran past its 2s timeout; its process group was killed\n", string(res.Stderr))
	require.Equal(t, "failed", f.status(op.ID))
	end := f.logs.FilterMessage("patch run finished").All()
	require.Len(t, end, 1)
	require.Equal(t, true, end[0].ContextMap()["timed_out"])
	require.Equal(t, "none printed", end[0].ContextMap()["summary"])
}

func TestCancelKillsProcessGroup(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.setScript(spawner)
	fifo := filepath.Join(f.out, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	op := f.op(nannyapitest.PatchOperation{})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan error, 1)
	go func() {
		// Opening blocks until the script opens its end.
		b, err := os.ReadFile(fifo)
		if err == nil && string(b) != "ready\n" {
			err = fmt.Errorf("fifo said %q", b)
		}
		ready <- err
		cancel()
	}()
	out, err := f.h.Run(ctx, op)
	select {
	case rerr := <-ready:
		require.NoError(t, rerr)
	default:
		// The script never wrote: free the reader, then fail.
		w, oerr := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if oerr == nil {
			w.Close()
		}
		t.Fatalf("the run ended before the script was ready: %v %+v", err, out)
	}
	require.NoError(t, err)
	require.True(t, out.Cancelled)
	require.True(t, out.Uploaded, "reported within the finish timeout")
	require.Equal(t, 137, out.ExitCode)
	waitGone(t, f.read("child"))
	waitGone(t, f.read("grandchild"))
	res := f.result(op.ID)
	require.Equal(t, "137", res.ExitCode)
	require.Equal(t, "nannyagent: the agent stopped during the patch run; the script's process group was killed\n", string(res.Stderr))
	f.noRunDirs()
}

// TestOutputHeldOpen: a process that left the group keeps the output
// pipe open; the run ends WaitDelay after the script and says so.
func TestOutputHeldOpen(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(_ *fixture, o *Options) { o.WaitDelay = 200 * time.Millisecond })
	f.setScript(`setsid sleep 1000 &
echo "$! $(cut -d' ' -f22 /proc/$!/stat)" > "$OUT/escaped"
echo done
`)
	op := f.op(nannyapitest.PatchOperation{})
	out := f.run(op)
	rec := f.read("escaped")
	t.Cleanup(func() {
		pid, _ := strconv.Atoi(strings.Fields(rec)[0])
		if alive(t, rec) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	require.True(t, alive(t, rec), "the escaped process is outside the group, not killed")
	require.Equal(t, 0, out.ExitCode)
	require.Equal(t, "done\n", string(out.Stdout))
	require.Equal(t, "nannyagent: a process of the script kept its output open after it ended; output after 200ms was not read\n", string(out.Stderr))
	require.Equal(t, "completed", f.status(op.ID))
}

func TestOutputCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(_ *fixture, o *Options) { o.OutputCap = 1000 })
	f.setScript("head -c 5000 /dev/zero | tr '\\0' a\nprintf 'é%.0s' $(seq 600) >&2\n")
	op := f.op(nannyapitest.PatchOperation{})
	out := f.run(op)
	require.True(t, out.Truncated)
	res := f.result(op.ID)
	require.Equal(t, strings.Repeat("a", 1000)+"\n[nannyagent: output truncated: the last 4000 bytes were not kept]\n", string(res.Stdout))
	require.Equal(t, strings.Repeat("é", 500)+"\n[nannyagent: output truncated: the last 200 bytes were not kept]\n", string(res.Stderr))
	require.Equal(t, "completed", f.status(op.ID))

	// The default keeps a full stream, with the notes, under the
	// backend's limit.
	require.Less(t, DefaultOutputCap+200, nannyapi.MaxPatchFileBytes)
	h, err := New(Options{Client: f.client, OutputCap: nannyapi.MaxPatchFileBytes})
	require.NoError(t, err)
	require.Equal(t, DefaultOutputCap, h.o.OutputCap)
}

func TestHeadBufferCutsOnCharacters(t *testing.T) {
	for _, c := range []struct {
		max       int
		in, want  string
		truncated bool
	}{
		{10, "abc", "abc", false},
		{3, "abc", "abc", false},
		{3, "abcd", "abc\n[nannyagent: output truncated: the last 1 bytes were not kept]\n", true},
		{4, "abc€", "abc\n[nannyagent: output truncated: the last 3 bytes were not kept]\n", true},
		{5, "abc€", "abc\n[nannyagent: output truncated: the last 3 bytes were not kept]\n", true},
		{6, "abc€x", "abc€\n[nannyagent: output truncated: the last 1 bytes were not kept]\n", true},
		{0, "x", "\n[nannyagent: output truncated: the last 1 bytes were not kept]\n", true},
	} {
		b := newHeadBuffer(c.max)
		for i := 0; i < len(c.in); i++ {
			n, err := b.Write([]byte{c.in[i]})
			require.NoError(t, err)
			require.Equal(t, 1, n)
		}
		require.Equal(t, c.want, string(b.Bytes()), "%d %q", c.max, c.in)
		require.Equal(t, c.truncated, b.Truncated())
	}
}

// fakePct records how it was called and what came on stdin, then does
// what pct exec does with the rest: runs it, here on the host.
const fakePct = `#!/bin/bash
printf '%%s\n' "$@" > '%[1]s/pct-argv'
cat > '%[1]s/pct-stdin'
shift 3
exec "$@" < '%[1]s/pct-stdin'
`

func TestLXC(t *testing.T) {
	t.Parallel()
	var pct string
	f := newFixture(t, func(_ *fixture, o *Options) {
		pct = filepath.Join(t.TempDir(), "pct")
		o.Pct = pct
	})
	require.NoError(t, os.WriteFile(pct, []byte(fmt.Sprintf(fakePct, f.out)), 0o700))
	script := f.setScript(recorder)
	f.srv.SetPatchLXC("rhgs96k78q43f30", 100)
	f.srv.SetPackageExceptions(f.reg.AgentID, "nginx")
	op := f.op(nannyapitest.PatchOperation{LXCID: "rhgs96k78q43f30"})
	require.Equal(t, "100", op.VMID)
	out := f.run(op)

	require.Equal(t, "exec\n100\n--\nbash\n-s\n--\n--dry-run\n--exclude\nnginx\n", f.read("pct-argv"))
	require.Equal(t, script, f.read("pct-stdin"))
	require.Equal(t, "3\n[--dry-run]\n[--exclude]\n[nginx]\n", f.read("argv"))
	require.Equal(t, "bash\n", f.read("self"))
	require.Equal(t, []string{pct, "exec", "100", "--", "bash", "-s", "--", "--dry-run", "--exclude", "nginx"}, out.Argv)
	res := f.result(op.ID)
	require.Equal(t, "0", res.ExitCode)
	require.Equal(t, "rhgs96k78q43f30", res.LXCID)
	require.Equal(t, recorderStdout, string(res.Stdout))
	require.Equal(t, "completed", f.status(op.ID))
	require.Equal(t, "100", f.logs.FilterMessage("patch run finished").All()[0].ContextMap()["vmid"])

	// No pct on this host: reported, nothing ran.
	require.NoError(t, os.Remove(pct))
	op = f.op(nannyapitest.PatchOperation{LXCID: "rhgs96k78q43f30"})
	out = f.run(op)
	require.Contains(t, out.Refused, "starting the script: ")
	require.Equal(t, "1", f.result(op.ID).ExitCode)
}

func TestUploadRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.setScript("echo hi\n")
	op := f.op(nannyapitest.PatchOperation{})
	key := "POST /api/patches/" + op.ID + "/result"
	f.srv.Inject(key, nannyapitest.Fault{Status: 503, Times: 2})
	f.run(op)
	require.Equal(t, 3, f.srv.Count(key))
	require.Equal(t, "hi\n", string(f.result(op.ID).Stdout))

	// A refusal is final: one attempt, and the error says so.
	op = f.op(nannyapitest.PatchOperation{})
	key = "POST /api/patches/" + op.ID + "/result"
	f.srv.Inject(key, nannyapitest.Fault{Status: 403, Body: `{"error":"unauthorized: operation does not belong to agent"}`})
	out, err := f.h.Run(context.Background(), op)
	require.ErrorContains(t, err, "uploading the result: nannyapi: POST /api/patches/{id}/result: 403 unauthorized: operation does not belong to agent")
	require.False(t, out.Uploaded)
	require.Equal(t, 1, f.srv.Count(key))
	require.Len(t, f.logs.FilterMessage("patch result not accepted").All(), 1)
}

func TestNewChecksOptions(t *testing.T) {
	cl, err := nannyapi.New(nannyapi.Options{BaseURL: "http://127.0.0.1:1"})
	require.NoError(t, err)
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{}, "a NannyAPI client is required"},
		{Options{Client: cl, BaseDir: "patches"}, `base directory "patches" must be an absolute path`},
		{Options{Client: cl, Pct: "pct"}, `pct "pct" must be an absolute path`},
		{Options{Client: cl, Timeout: -time.Second}, "timeout -1s is negative"},
	} {
		_, err := New(c.o)
		require.EqualError(t, err, "patch: "+c.want)
	}
	h, err := New(Options{Client: cl})
	require.NoError(t, err)
	require.Equal(t, DefaultTimeout, h.o.Timeout)
	require.Equal(t, DefaultBaseDir, h.o.BaseDir)
	require.Equal(t, DefaultPct, h.o.Pct)
	require.Equal(t, 5, h.o.UploadRetry.MaxAttempts)
}

// A run directory an earlier, killed agent left behind is removed by the
// next run (f.run checks the base directory is empty afterwards).
func TestStaleRunDirectoryRemoved(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.setScript(recorder)
	stale := filepath.Join(f.base, "run-123456")
	require.NoError(t, os.MkdirAll(stale, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(stale, "patch-script"), []byte("#!/bin/sh\n"), 0o700))
	out := f.run(f.op(nannyapitest.PatchOperation{}))
	require.Empty(t, out.Refused)
	require.NoDirExists(t, stale)
}
