package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCLI(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := runCLI(t, context.Background(), "--version")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "nannyagent ")
	code, out, _ = runCLI(t, context.Background(), "-v")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "nannyagent ")
	code, out, _ = runCLI(t, context.Background(), "trace", "run", "--help")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "--duration")
	assert.Contains(t, out, "Entries: exec")
}

func TestTraceRunRejectsBadInput(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"trace", "run", "nosuch"}, `"nosuch": cannot tell what "nosuch" is`},
		{[]string{"trace", "run", "exec", "--duration", "5m"}, "at most 2m0s"},
		{[]string{"trace", "run", "exec", "--duration", "-1s"}, "must be positive"},
		{[]string{"trace", "run", "exec", "--port", "80"}, "exec does not support the port filter"},
		{[]string{"trace", "run", "exec", "--comm", "averyveryverylongname"}, "longer than the kernel's 15 characters"},
		{[]string{"trace", "run", "exec", "--target", "x"}, "exec takes no target"},
	}
	for _, c := range cases {
		code, _, errOut := runCLI(t, context.Background(), c.args...)
		assert.Equal(t, 2, code, "%v", c.args)
		assert.Contains(t, errOut, c.want, "%v", c.args)
	}
	code, _, errOut := runCLI(t, context.Background(), "trace", "run")
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "accepts 1 arg")
}

func TestTraceListJSON(t *testing.T) {
	code, out, _ := runCLI(t, context.Background(), "trace", "list", "--json")
	require.Equal(t, 0, code)
	var sts []entryStatus
	require.NoError(t, json.Unmarshal([]byte(out), &sts))
	require.NotEmpty(t, sts)
	assert.Equal(t, "exec", sts[0].Name)
	assert.NotEmpty(t, sts[0].Answers)
}

func TestCheckJSON(t *testing.T) {
	catalogtest.Kernel(t) // needs root to probe
	code, out, _ := runCLI(t, context.Background(), "check", "--json")
	require.Equal(t, 0, code, out)
	var rep checkReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, catalog.Yes, rep.Features[catalog.FeatureTracepoint].State)
	assert.Contains(t, rep.Features, catalog.FeatureKprobe)
	assert.Positive(t, rep.Working)
	assert.Contains(t, rep.Sandbox, "seccomp")
}

// A real trace through the command line: exec a uniquely named binary
// while it runs and find it counted in the JSON result (exact counts are
// the exec package's tests; here the attach moment is not observable).
func TestTraceRunExecJSON(t *testing.T) {
	catalogtest.Kernel(t)
	bin := filepath.Join(t.TempDir(), "nanny-cli-true")
	data, err := os.ReadFile("/bin/true")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				_ = exec.Command(bin).Run()
			}
		}
	}()
	code, out, errOut := runCLI(t, context.Background(), "trace", "run", "exec", "--duration", "1500ms", "--json")
	close(stop)
	<-done
	require.Equal(t, 0, code, errOut)
	var res []struct {
		Entry  string         `json:"entry"`
		Result catalog.Result `json:"result"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res, 1)
	assert.Equal(t, "exec", res[0].Entry)
	found := false
	for _, r := range res[0].Result.Tables[0].Rows {
		if r[0] == "nanny-cli-true" {
			found = true
			assert.NotEqual(t, "0", r[1])
		}
	}
	assert.True(t, found, "%v", res[0].Result.Tables[0].Rows)
}

// Cancelling (Ctrl-C) ends the trace early and still prints the result.
func TestTraceRunCancelPrintsResult(t *testing.T) {
	catalogtest.Kernel(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	code, out, errOut := runCLI(t, ctx, "trace", "run", "exec", "--duration", "60s")
	assert.Equal(t, 0, code, errOut)
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Contains(t, out, "== exec:")
}

func TestTraceResolveShowsMapping(t *testing.T) {
	code, out, errOut := runCLI(t, context.Background(), "trace", "resolve",
		`{"response_type":"diagnostic","ebpf_programs":[{"name":"x","type":"tracepoint","target":"execsnoop"},{"target":"rm -rf /"},{"type":"bpftrace","target":"tracepoint:sched:sched_switch { @[comm] = count(); }"}]}`)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "#1 x: alias execsnoop -> exec")
	assert.Contains(t, out, "refused")
	assert.Contains(t, out, "-> fallback")

	code, out, _ = runCLI(t, context.Background(), "trace", "resolve", "--json", `[{"type":"syscall","target":"openat"}]`)
	require.Equal(t, 0, code)
	var res []struct {
		Entry string `json:"entry"`
		How   string `json:"how"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res, 1)
	assert.Equal(t, "open", res[0].Entry)

	code, _, errOut = runCLI(t, context.Background(), "trace", "resolve", `{not json`)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "not JSON")
}

func TestTraceRunResolvesAliasesAndRefusesJunk(t *testing.T) {
	code, _, errOut := runCLI(t, context.Background(), "trace", "run", "rm -rf /")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "neither a probe nor words")
	code, _, errOut = runCLI(t, context.Background(), "trace", "run", "execsnoop", "--port", "80")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "exec does not support the port filter")
	assert.Contains(t, errOut, "alias execsnoop -> exec")
}
