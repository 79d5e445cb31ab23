package scenarios

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/diagnose"
	"github.com/stretchr/testify/require"
)

// workloadEnv makes the test binary play a workload instead of running
// tests (see workloads_test.go).
const workloadEnv = "NANNYAGENT_SCENARIO_WORKLOAD"

func TestMain(m *testing.M) {
	if w := os.Getenv(workloadEnv); w != "" {
		os.Exit(runWorkload(w, os.Args[1:]))
	}
	code := m.Run()
	if agentDir != "" {
		os.RemoveAll(agentDir)
	}
	os.Exit(code)
}

var (
	agentOnce sync.Once
	agentBin  string
	agentDir  string
	agentErr  error
)

// needRoot skips without root, or fails when the environment demands the
// privileged tests (CI and the kernel matrix set NANNYAGENT_REQUIRE_BPF).
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("NANNYAGENT_REQUIRE_BPF") == "1" {
		t.Fatal("scenarios need root and NANNYAGENT_REQUIRE_BPF=1 demands them")
	}
	t.Skip("scenarios reproduce problems on the host and need root")
}

// agent builds the nannyagent binary once per test run.
func agent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		agentDir, agentErr = os.MkdirTemp("", "nannyagent-scenarios-")
		if agentErr != nil {
			return
		}
		root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
		if err != nil {
			agentErr = fmt.Errorf("find the module root: %w", err)
			return
		}
		agentBin = filepath.Join(agentDir, "nannyagent")
		cmd := exec.Command("go", "build", "-o", agentBin, "./cmd/nannyagent")
		cmd.Dir = strings.TrimSpace(string(root))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, agentErr)
	return agentBin
}

// diagnoseJSON runs `nannyagent diagnose --json --engine offline ISSUE`,
// prefixed by wrap (e.g. `ip netns exec NAME`), and returns its report.
func diagnoseJSON(t *testing.T, issue string, wrap ...string) *diagnose.Report {
	t.Helper()
	bin := agent(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("playbook_dir: "+t.TempDir()+"\n"), 0o600))
	argv := append(append([]string{}, wrap...), bin, "diagnose", "--json", "--engine", "offline", "--config", cfg, issue)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("diagnose %q: %v\nstderr:\n%s", issue, err, stderr.String())
	var rep diagnose.Report
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep), "stdout must be one JSON report:\n%s", stdout.String())
	require.NotNil(t, rep.Resolution, "no resolution")
	for i, r := range rep.Rounds {
		for _, tr := range r.Traces {
			what := tr.Error
			if tr.Result != nil {
				what = fmt.Sprintf("%.1f s: %s", tr.Result.Seconds(), tr.Result.Summary)
			}
			t.Logf("round %d trace %s %v: %s", i+1, tr.Entry, tr.Request.Filters, what)
		}
	}
	t.Logf("root cause: %s\nevidence: %s\nplan: %s", rep.Resolution.RootCause, rep.Resolution.Evidence, rep.Resolution.ResolutionPlan)
	for i, f := range rep.Findings {
		t.Logf("finding %d [%s] %s: %s", i+1, f.Severity, f.Title, strings.Join(f.Evidence, "; "))
	}
	return &rep
}

// requireCause checks the resolution's root cause and evidence (top
// finding included) mention every word, case-insensitively.
func requireCause(t *testing.T, rep *diagnose.Report, words ...string) {
	t.Helper()
	text := causeText(rep)
	low := strings.ToLower(text)
	for _, w := range words {
		require.Contains(t, low, strings.ToLower(w), "the answer must name %q:\n%s", w, text)
	}
}

// requireAnyCause checks the answer mentions at least one of words.
func requireAnyCause(t *testing.T, rep *diagnose.Report, words ...string) {
	t.Helper()
	text := causeText(rep)
	low := strings.ToLower(text)
	for _, w := range words {
		if strings.Contains(low, strings.ToLower(w)) {
			return
		}
	}
	t.Fatalf("the answer names none of %q:\n%s", words, text)
}

// causeText is what a reader takes as the answer: the root cause, its
// evidence, and the top finding.
func causeText(rep *diagnose.Report) string {
	text := rep.Resolution.RootCause + "\n" + rep.Resolution.Evidence
	if len(rep.Findings) > 0 {
		text += "\n" + rep.Findings[0].Title + "\n" + strings.Join(rep.Findings[0].Evidence, "\n")
	}
	return text
}

// workload starts the test binary, copied under name (so the process's
// comm is name), playing workload w with args; it is killed at cleanup.
func workload(t *testing.T, name, w string, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	data, err := os.ReadFile(self)
	require.NoError(t, err)
	// Under a directory every user may enter, so a workload can run as
	// another user.
	bin := filepath.Join(openDir(t), name)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), workloadEnv+"="+w)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd
}

// openDir is a temporary directory every user may enter (t.TempDir's
// parent is private to root), removed at cleanup.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nannyagent-scenario-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// start runs cmd in the background until the test ends.
func start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
}

// run is a setup command that must succeed.
func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	require.NoError(t, err, "%s: %s", strings.Join(argv, " "), out)
	return string(out)
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
