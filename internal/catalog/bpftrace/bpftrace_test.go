package bpftrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/require"
)

// needBpftrace skips when a real bpftrace cannot run here, and fails
// instead when NANNYAGENT_REQUIRE_BPF=1 demands it.
func needBpftrace(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "bpftrace needs root"
	} else if _, err := exec.LookPath("bpftrace"); err != nil {
		why = "bpftrace is not installed"
	}
	if why == "" {
		return
	}
	if catalogtest.Required() {
		t.Fatalf("%s=1 but %s", catalogtest.RequireEnv, why)
	}
	t.Skip(why + " (set " + catalogtest.RequireEnv + "=1 to make this a failure)")
}

func scalar(t *testing.T, res *catalog.Result, name string) string {
	t.Helper()
	for _, tb := range res.Tables {
		if tb.Title != "bpftrace scalar maps" {
			continue
		}
		for _, r := range tb.Rows {
			if r[0] == name {
				return r[1]
			}
		}
	}
	t.Fatalf("no scalar %s in %+v\noutput: %v", name, res.Tables, res.Notes)
	return ""
}

// markerPID is an argument no real getpgid call uses: calls with it tell
// the test that the probe is live (bpftrace prints "Attaching" before it
// attaches, and BEGIN fires before the other probes are attached).
const markerPID = 987654321

// countingScript counts getpgid(0) calls of this process in @c, and
// prints "ready" for the marker calls, from the same probe: once the
// marker shows, every later call is counted.
func countingScript(body string) string {
	return fmt.Sprintf(`tracepoint:syscalls:sys_enter_getpgid /pid == %d/ {
	if (args->pid == %d) { if (@ready == 0) { printf("ready\n"); } @ready = 1; }
	else { %s }
}`, os.Getpid(), markerPID, body)
}

// awaitProbe makes marker calls until the script reports its probe live.
func awaitProbe(t *testing.T, tr *Trace) {
	t.Helper()
	require.Eventually(t, func() bool {
		syscall.Getpgid(markerPID)
		return strings.Contains(tr.out.String(), "ready\n")
	}, 10*time.Second, 5*time.Millisecond, "the probe never fired")
}

// The test's own getpgid calls are the workload: the pid predicate keeps
// every other process out, so the counts are exact.
func TestRunCountsExactly(t *testing.T) {
	needBpftrace(t)
	const k = 37
	script := countingScript(`@c = count(); @h = hist(7); @by[comm] = count();`) + `
END { printf("end-marker\n"); }`
	tr, err := Start(context.Background(), script, Options{})
	require.NoError(t, err)
	awaitProbe(t, tr)
	for i := 0; i < k; i++ {
		syscall.Getpgid(0)
	}
	res, err := tr.Stop()
	require.NoError(t, err)
	again, err := tr.Stop()
	require.NoError(t, err)
	require.Same(t, res, again)

	require.Equal(t, Name, res.Entry)
	require.Equal(t, uint64(0), res.Events, "bpftrace does not count events for us")
	require.Equal(t, fmt.Sprint(k), scalar(t, res, "@c"))
	require.Len(t, res.Histograms, 1)
	h := res.Histograms[0]
	require.Equal(t, "@h", h.Title)
	require.Equal(t, uint64(k), h.Count)
	require.Equal(t, []catalog.Bucket{{Low: 4, High: 7, Count: k}}, h.Buckets)
	var by *catalog.Table
	for i := range res.Tables {
		if res.Tables[i].Title == "bpftrace map @by" {
			by = &res.Tables[i]
		}
	}
	require.NotNil(t, by, "tables: %+v", res.Tables)
	require.Equal(t, [][]string{{"bpftrace.test", fmt.Sprint(k)}}, by.Rows)
	require.Contains(t, res.Summary, "tracepoint:syscalls:sys_enter_getpgid")
	require.Contains(t, res.Summary, "2 probes attached")
	out := res.Notes[len(res.Notes)-1]
	require.Contains(t, out, "end-marker", "SIGINT must let END run")
	require.Contains(t, out, fmt.Sprintf("@c: %d", k))
	for _, n := range res.Notes {
		require.NotContains(t, n, "RLIMIT_MEMLOCK")
	}
}

// Run stops on its own after the duration, with SIGINT: the END block
// and the maps still print.
func TestRunTimeoutPrintsMaps(t *testing.T) {
	needBpftrace(t)
	script := `BEGIN { @started = 1; } interval:ms:100 { @ticks = count(); } END { printf("end-marker\n"); }`
	begin := time.Now()
	res, err := Run(context.Background(), script, time.Second, Options{Params: map[string]string{"duration": "1s"}})
	require.NoError(t, err)
	require.Less(t, time.Since(begin), 5*time.Second)
	require.GreaterOrEqual(t, res.Seconds(), 0.9)
	out := res.Notes[len(res.Notes)-1]
	require.Contains(t, out, "end-marker")
	require.Equal(t, "1", scalar(t, res, "@started"))
	ticks := scalar(t, res, "@ticks")
	require.NotEqual(t, "0", ticks)
	require.Equal(t, map[string]string{"duration": "1s"}, res.Params)
	for _, n := range res.Notes {
		require.NotContains(t, n, "killed")
	}
}

// A script that exits by itself ends the run before the duration.
func TestRunScriptExits(t *testing.T) {
	needBpftrace(t)
	begin := time.Now()
	res, err := Run(context.Background(), `BEGIN { printf("hello\n"); exit(); }`, 30*time.Second, Options{})
	require.NoError(t, err)
	require.Less(t, time.Since(begin), 10*time.Second)
	require.Contains(t, res.Notes[len(res.Notes)-1], "hello")
}

func TestCompileErrorCarriesMessage(t *testing.T) {
	needBpftrace(t)
	for _, tc := range []struct{ script, want string }{
		{`tracepoint:nannyagent_nope:nothing { @ = count(); }`, "tracepoint not found: nannyagent_nope:nothing"},
		{`tracepoint:syscalls:sys_enter_getppid { @ = count( }`, "syntax error"},
	} {
		_, err := Run(context.Background(), tc.script, time.Second, Options{})
		require.Error(t, err, tc.script)
		require.Contains(t, err.Error(), "bpftrace rejected the script")
		require.Contains(t, err.Error(), tc.want)
		require.NotContains(t, err.Error(), "RLIMIT_MEMLOCK")
	}
}

func TestEntryRunsScriptFromTarget(t *testing.T) {
	needBpftrace(t)
	e := Entry{}
	require.NoError(t, e.Check(nil))
	p := catalog.Params{Target: countingScript(`@c = count();`)}
	tr, err := e.Start(context.Background(), nil, p)
	require.NoError(t, err)
	awaitProbe(t, tr.(*Trace))
	for i := 0; i < 5; i++ {
		syscall.Getpgid(0)
	}
	res, err := tr.Stop()
	require.NoError(t, err)
	require.Equal(t, "5", scalar(t, res, "@c"))
	require.NotContains(t, res.Params, "target")

	_, err = e.Start(context.Background(), nil, catalog.Params{Target: p.Target, PID: 1})
	require.ErrorContains(t, err, "does not support the pid filter")
	tr, err = e.Start(context.Background(), nil, catalog.Params{Target: "BEGIN { system(\"id\"); }"})
	require.ErrorIs(t, err, ErrRefused)
	require.Nil(t, tr, "no typed nil in the interface")
}

// The output cap keeps the head and the tail (where the maps are) of a
// chatty script.
func TestRunCapsOutput(t *testing.T) {
	needBpftrace(t)
	script := countingScript(`printf("line-%d-padding-padding-padding\n", @n); @n = @n + 1;`)
	tr, err := Start(context.Background(), script, Options{MaxOutput: 2048})
	require.NoError(t, err)
	awaitProbe(t, tr)
	for i := 0; i < 400; i++ {
		syscall.Getpgid(0)
	}
	// bpftrace drops printf events still queued when SIGINT arrives
	// (maps are complete): await the last line before stopping.
	require.Eventually(t, func() bool { return strings.Contains(tr.out.String(), "line-399-") }, 10*time.Second, 5*time.Millisecond)
	res, err := tr.Stop()
	require.NoError(t, err)
	out := res.Notes[len(res.Notes)-1]
	require.LessOrEqual(t, len(out), 2048+64)
	require.Contains(t, out, "line-0-padding")
	require.Contains(t, out, "bytes truncated]", "notes: %q", res.Notes)
	require.Contains(t, out, "@n: 400", "the final map survives in the tail")
	require.Equal(t, "400", scalar(t, res, "@n"))
	require.Contains(t, strings.Join(res.Notes, "\n"), "bytes were dropped")
}

func TestCheckScriptRefusals(t *testing.T) {
	for _, tc := range []struct{ script, want string }{
		{"", "empty"},
		{"   \n", "empty"},
		{`BEGIN { system("rm -rf /"); }`, "system()"},
		{`kprobe:do_exit { signal("KILL"); }`, "signal()"},
		{`kprobe:x { override(-1); }`, "override()"},
		{`BEGIN { cat("/etc/shadow"); }`, "cat()"},
		{"#include \"/etc/shadow\"\nBEGIN { }", "includes a file"},
		{`BEGIN { printf("%d", 1); } // --unsafe`, "unsafe"},
		{"tracepoint:sched:sched_switch", "not a bpftrace program"},
		{"BEGIN { printf(\"\x07\"); }", "control character"},
		{"BEGIN {" + strings.Repeat(" ", MaxScript) + "}", "bytes"},
	} {
		err := CheckScript(tc.script)
		require.ErrorIs(t, err, ErrRefused, tc.script)
		require.Contains(t, err.Error(), tc.want)
	}
	for _, ok := range []string{
		`tracepoint:block:block_rq_complete { @[args->dev] = count(); }`,
		"BEGIN {\n\tprintf(\"catalog\\n\");\r\n}",
		`kprobe:vfs_read /comm == "systemd"/ { @ = hist(arg2); }`,
	} {
		require.NoError(t, CheckScript(ok), ok)
	}
}

// Refused scripts never reach bpftrace: a fake binary records any run.
func TestUnsafeNeverRuns(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	fake := writeFake(t, dir, "touch "+marker+"\necho 'Attaching 1 probe...'\nexit 0\n")
	_, err := Run(context.Background(), `BEGIN { system("id"); }`, time.Second, Options{Path: fake})
	require.ErrorIs(t, err, ErrRefused)
	require.NoFileExists(t, marker)
}

func writeFake(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "bpftrace")
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
	return p
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Run(context.Background(), `BEGIN { exit(); }`, time.Second, Options{Why: "no catalog entry covers uprobe:/bin/bash:readline"})
	require.ErrorIs(t, err, ErrNotInstalled)
	require.ErrorContains(t, err, "apt-get install bpftrace")
	require.ErrorContains(t, err, "because no catalog entry covers uprobe:/bin/bash:readline")
	err = Entry{}.Check(nil)
	require.True(t, catalog.IsUnsupported(err), "%v", err)
}

// A bpftrace that ignores SIGINT (0.17 can miss it until its next event)
// is killed after the bound, with its whole process group, and the result
// says the maps are missing.
func TestStopEscalatesToKill(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	fake := writeFake(t, dir, "trap '' INT\nsleep 600 &\necho $! > "+pidFile+"\necho 'Attaching 3 probes...'\necho 'partial'\nwait\n")
	tr, err := Start(context.Background(), `tracepoint:sched:sched_switch { @ = count(); }`, Options{Path: fake, KillAfter: 1500 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, 3, tr.probes)
	begin := time.Now()
	res, err := tr.Stop()
	require.NoError(t, err)
	took := time.Since(begin)
	require.GreaterOrEqual(t, took, 1500*time.Millisecond)
	require.Less(t, took, 4*time.Second)
	require.Contains(t, strings.Join(res.Notes, "\n"), "ignored SIGINT for 1.5s and was killed")
	require.Contains(t, res.Notes[len(res.Notes)-1], "partial")
	requireGone(t, pidFile)
}

func requireGone(t *testing.T, pidFile string) {
	t.Helper()
	data, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	var pid int
	_, err = fmt.Sscan(string(data), &pid)
	require.NoError(t, err)
	// The child was killed with the group; once its parent (our fake) is
	// reaped, init reaps it too. Await that rather than sleep.
	require.Eventually(t, func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	}, 5*time.Second, 20*time.Millisecond, "child %d of the process group survived", pid)
}

func TestCancelKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	fake := writeFake(t, dir, "sleep 600 &\necho $! > "+pidFile+"\necho 'Attaching 1 probe...'\nwait\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, `BEGIN { @ = 1; }`, time.Minute, Options{Path: fake})
		done <- err
	}()
	require.Eventually(t, func() bool { _, err := os.Stat(pidFile); return err == nil }, 5*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	requireGone(t, pidFile)
}

func TestEarlyFailureOfFake(t *testing.T) {
	fake := writeFake(t, t.TempDir(), "echo 'stdin:1:1: ERROR: something is wrong' >&2\nexit 1\n")
	_, err := Run(context.Background(), `BEGIN { }`, time.Second, Options{Path: fake})
	require.ErrorContains(t, err, "bpftrace rejected the script: stdin:1:1: ERROR: something is wrong")
}
