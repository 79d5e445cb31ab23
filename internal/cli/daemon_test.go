package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

const nannyResolution = `{"response_type": "resolution", "root_cause": "The /var partition is full", "resolution_plan": "1. Remove old logs", "confidence": "High"}`

// lockedBuffer is a buffer the daemon writes its log to while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// registeredBackend is a backend with a TensorZero gateway in front of a
// scripted model, and this "host" registered to it through the device
// flow by the register command.
func registeredBackend(t *testing.T, steps ...openaitest.Step) (*backendHarness, *openaitest.Server) {
	t.Helper()
	model := openaitest.New(t, steps...)
	tz := nannyapitest.NewTensorZero(t, model.BaseURL())
	srv := nannyapitest.New(t, nannyapitest.Options{TensorZeroURL: tz.URL, TensorZeroKey: "k"})
	h := &backendHarness{t: t, srv: srv, user: srv.CreateUser("u1@example.com"), config: writeConfig(t, ""),
		tokenPath: filepath.Join(t.TempDir(), "nannyagent", "token.json")}
	code, _, errOut, _ := h.register("--register")
	require.Equal(t, 0, code, errOut)
	return h, model
}

// runWith runs the command line against the harness's backend with ctx,
// instant facts, and stdout/stderr as given.
func (h *backendHarness) runWith(ctx context.Context, stdout, stderr interface{ Write([]byte) (int, error) }, args ...string) int {
	a := newApp(stdout, stderr)
	a.geteuid = func() int { return h.euid }
	a.collectFacts = func(context.Context, sysinfo.Options) *sysinfo.Facts {
		return &sysinfo.Facts{Hostname: "testhost", Kernel: "6.18.0-test", CPUs: 2}
	}
	return a.run(ctx, append([]string{"--config", h.config, "--api-url", h.srv.URL, "--token-path", h.tokenPath}, args...))
}

// A registered host investigates through NannyAPI by default: create,
// converse through the proxy, record the outcome.
func TestDiagnoseWithNannyAPI(t *testing.T) {
	h, model := registeredBackend(t, openaitest.Reply("```json\n"+nannyResolution+"\n```"))
	var out, errb bytes.Buffer
	code := h.runWith(context.Background(), &out, &errb, "diagnose", "--json", "the disk is full on /var")
	require.Equal(t, 0, code, errb.String())
	var rep map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	assert.Equal(t, "nannyapi", rep["engine"])

	invs := h.srv.Records(nannyapitest.Investigations)
	require.Len(t, invs, 1)
	inv := invs[0]
	assert.Equal(t, "the disk is full on /var", inv["user_prompt"])
	assert.Equal(t, map[string]any{"initiated_by": "agent"}, inv["metadata"])
	assert.Equal(t, "completed", inv["status"], "recorded by the agent: the backend does not read a fenced reply")
	assert.Equal(t, "Root cause (confidence High): The /var partition is full\n\n1. Remove old logs", inv["resolution_plan"])
	require.Len(t, model.Requests(), 1)
	assert.Len(t, h.srv.RequestsFor("PATCH /api/investigations"), 1)

	// NannyAPI's own rule on issues, before anything is created.
	errb.Reset()
	code = h.runWith(context.Background(), &out, &errb, "diagnose", "--engine", "nannyapi", "disk full")
	assert.Equal(t, 2, code)
	assert.Contains(t, errb.String(), "too short for NannyAPI")
	assert.Len(t, h.srv.Records(nannyapitest.Investigations), 1)

	// Another engine can still be chosen.
	errb.Reset()
	code = h.runWith(context.Background(), &out, &errb, "diagnose", "--engine", "offline", "--json", "disk full")
	assert.NotEqual(t, 2, code, errb.String())
	assert.Len(t, h.srv.Records(nannyapitest.Investigations), 1)
}

// The daemon command (and --daemon): a portal investigation is run and
// recorded, metrics go out at start and their time lands in the state
// file, logs are JSON lines, and a stop ends it cleanly.
func TestDaemonCommand(t *testing.T) {
	// Checked after every cleanup, the test servers' included.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	h, _ := registeredBackend(t, openaitest.Reply(nannyResolution))
	for _, args := range [][]string{{"--daemon"}, {"daemon", "--debug"}} {
		h.srv.ResetRequests()
		ctx, cancel := context.WithCancel(context.Background())
		var out bytes.Buffer
		var errb lockedBuffer
		done := make(chan int, 1)
		go func() { done <- h.runWith(ctx, &out, &errb, args...) }()
		wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
		agents := h.srv.Agents()
		require.NoError(t, h.srv.WaitSubscribed(wctx, agents[0], 1), errb.String())
		require.NoError(t, h.srv.Wait(wctx, func() bool { return h.srv.Count("ingest-metrics") >= 1 }))
		var id string
		if args[0] == "--daemon" {
			var err error
			id, err = h.srv.CreateInvestigation(agents[0], "Disk is full on /var partition", "high")
			require.NoError(t, err)
			require.NoError(t, h.srv.Wait(wctx, func() bool {
				rec, _ := h.srv.Record(nannyapitest.Investigations, id)
				return rec["status"] == "completed" && len(h.srv.RequestsFor("PATCH /api/investigations")) == 1
			}), errb.String())
		}
		wcancel()
		stopped := time.Now()
		cancel()
		select {
		case code := <-done:
			require.Equal(t, 0, code, errb.String())
		case <-time.After(time.Minute):
			t.Fatal("the daemon did not stop")
		}
		require.Less(t, time.Since(stopped), 10*time.Second)
		assert.Empty(t, out.String())

		// Logs: one JSON object per line.
		levels := map[string]int{}
		sc := bufio.NewScanner(strings.NewReader(errb.String()))
		for sc.Scan() {
			var line map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
			levels[line["level"].(string)]++
			assert.Contains(t, line, "ts")
			assert.Contains(t, line, "msg")
		}
		assert.Positive(t, levels["info"])
		if args[0] == "daemon" {
			assert.Positive(t, levels["debug"], "--debug raises the level")
		} else {
			assert.Zero(t, levels["debug"])
			assert.Contains(t, errb.String(), `"msg":"investigation finished"`)
			assert.Contains(t, errb.String(), `"investigation":"`+id+`"`)
		}
		st, err := auth.ReadState(h.tokenPath)
		require.NoError(t, err)
		assert.False(t, st.LastMetricsAt.IsZero(), "the state file says when metrics left")
		assert.False(t, st.StoppedAt.IsZero())
		assert.False(t, st.Running())
	}
}

func TestDaemonRefusals(t *testing.T) {
	h := newBackendHarness(t)
	h.euid = 1000
	code, _, errOut := h.run("--daemon")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "the daemon needs root")
	h.euid = 0
	code, _, errOut = h.run("daemon")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "run sudo nannyagent --register")
	code, _, errOut = h.run("--daemon", "--status")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--daemon goes alone")
	code, _, errOut = h.run("daemon", "extra")
	assert.Equal(t, 2, code, errOut)
}

// mainArgsEnv makes the test binary run the command line with these
// arguments (JSON) instead of the tests: a real process to signal.
const mainArgsEnv = "NANNYAGENT_TEST_MAIN_ARGS"

func runMainIfRequested() {
	raw := os.Getenv(mainArgsEnv)
	if raw == "" {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		fmt.Fprintln(os.Stderr, "bad", mainArgsEnv, err)
		os.Exit(2)
	}
	os.Exit(Main(args))
}

// TestDaemonSIGTERM: the daemon as a real process, under a notify socket
// as systemd runs it, stops on SIGTERM within 10 s with exit status 0,
// after READY=1 and before it, STOPPING=1.
func TestDaemonSIGTERM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the daemon needs root")
	}
	h, _ := registeredBackend(t, openaitest.Reply(nannyResolution))
	sock := filepath.Join(t.TempDir(), "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer nc.Close()
	args, _ := json.Marshal([]string{"--config", h.config, "--api-url", h.srv.URL, "--token-path", h.tokenPath, "--daemon"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+string(args), "NOTIFY_SOCKET="+sock)
	var errb lockedBuffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill() }()

	read := func() string {
		require.NoError(t, nc.SetReadDeadline(time.Now().Add(time.Minute)))
		buf := make([]byte, 512)
		n, err := nc.Read(buf)
		require.NoError(t, err, errb.String())
		return string(buf[:n])
	}
	require.Equal(t, "READY=1\nSTATUS=running", read())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, h.srv.WaitSubscribed(ctx, h.srv.Agents()[0], 1), errb.String())

	sent := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "exit status 0; log:\n%s", errb.String())
	case <-time.After(time.Minute):
		t.Fatalf("no exit after SIGTERM; log:\n%s", errb.String())
	}
	took := time.Since(sent)
	require.Less(t, took, 10*time.Second)
	require.Equal(t, "STOPPING=1", read())
	assert.Contains(t, errb.String(), `"msg":"daemon stopped"`)
	st, err := auth.ReadState(h.tokenPath)
	require.NoError(t, err)
	assert.False(t, st.Running())
	assert.False(t, st.StoppedAt.IsZero())
	t.Logf("stopped %s after SIGTERM", took.Round(time.Millisecond))
}

// The daemon command wires the fleet operations with the configuration:
// a portal patch runs its script (dry run, exclusions) and uploads the
// result, and a portal reboot is acknowledged and runs
// daemon.reboot_command once.
func TestDaemonFleetOperations(t *testing.T) {
	h, _ := registeredBackend(t)
	dir := t.TempDir()
	calls := filepath.Join(dir, "reboot-calls")
	rebootCmd := filepath.Join(dir, "reboot")
	require.NoError(t, os.WriteFile(rebootCmd, []byte("#!/bin/sh\necho \"$@\" >>"+calls+"\n"), 0o755))
	require.NoError(t, os.WriteFile(h.config, []byte("daemon:\n  reboot_command: ["+rebootCmd+", now]\n"), 0o600))

	argv := filepath.Join(dir, "patch-argv")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >" + argv + "\necho 'Checking updates'\n" +
		`echo '{"updates_available":1,"packages":[{"package":"openssl","current_version":"3.0.1","new_version":"3.0.2"}],"dry_run":true}'` + "\n"
	require.NoError(t, h.srv.SetScriptContent(nannyapitest.DefaultScriptID, []byte(script)))
	agent := h.srv.Agents()[0]
	h.srv.SetPackageExceptions(agent, "nginx", "postgresql-15")

	ctx, cancel := context.WithCancel(context.Background())
	var errb lockedBuffer
	done := make(chan int, 1)
	go func() { done <- h.runWith(ctx, io.Discard, &errb, "--daemon") }()
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	require.NoError(t, h.srv.WaitSubscribed(wctx, agent, 1), errb.String())

	patchID, err := h.srv.CreatePatchOperation(agent, nannyapitest.PatchOperation{Mode: "dry-run", Exclusions: []string{"nginx", "postgresql-15"}})
	require.NoError(t, err)
	require.NoError(t, h.srv.Wait(wctx, func() bool {
		rec, _ := h.srv.Record(nannyapitest.PatchOperations, patchID)
		return rec["status"] == "completed"
	}), errb.String())
	res, ok := h.srv.PatchResultFor(patchID)
	require.True(t, ok)
	assert.Equal(t, "0", res.ExitCode)
	assert.Contains(t, string(res.Stdout), `"updates_available":1`)
	got, err := os.ReadFile(argv)
	require.NoError(t, err)
	assert.Equal(t, "--dry-run\n--exclude\nnginx,postgresql-15\n", string(got))

	rebootID, err := h.srv.CreateReboot(agent, nannyapitest.RebootOperation{Reason: "kernel update", TimeoutSeconds: 600})
	require.NoError(t, err)
	// The server hears nothing more once the reboot is acknowledged, so
	// the file is polled.
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(calls)
		return len(b) > 0
	}, time.Minute, 10*time.Millisecond, "the reboot command never ran: %s", &errb)
	rec, _ := h.srv.Record(nannyapitest.RebootOperations, rebootID)
	assert.Equal(t, "rebooting", rec["status"], "acknowledged, and no metrics since")

	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, errb.String())
	case <-time.After(time.Minute):
		t.Fatal("the daemon did not stop")
	}
	b, err := os.ReadFile(calls)
	require.NoError(t, err)
	assert.Equal(t, "now\n", string(b), "the configured reboot command ran once")
	entries, err := os.ReadDir(filepath.Join(filepath.Dir(h.tokenPath), "patches"))
	require.NoError(t, err)
	assert.Empty(t, entries, "the script's private directory is removed")
}
