package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/catalog/runner"
	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/diagnose"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	// Commands of investigations run in the sandbox, which re-executes
	// the test binary.
	safeexec.EnterSandboxIfRequested()
	runMainIfRequested()
	os.Exit(m.Run())
}

// scripted is an engine answering with fixed replies in order.
type scripted struct {
	mu      sync.Mutex
	replies []string
	calls   int
	// block makes Next wait for cancellation.
	block chan struct{}
}

func (s *scripted) Name() string { return "scripted" }

func (s *scripted) Next(ctx context.Context, _ *brain.Investigation) (string, error) {
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	if s.block != nil {
		close(s.block)
		<-ctx.Done()
		return "", ctx.Err()
	}
	if n > len(s.replies) {
		return "", errors.New("the script has no more replies")
	}
	return s.replies[n-1], nil
}

// harness runs the command line in process with a scripted engine and
// instant facts.
type harness struct {
	t       *testing.T
	engine  brain.Engine
	euid    int
	config  string
	choices []engineChoice
}

func newHarness(t *testing.T, replies ...string) *harness {
	return &harness{t: t, engine: &scripted{replies: replies}, euid: os.Geteuid(), config: writeConfig(t, "")}
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func (h *harness) run(ctx context.Context, args ...string) (int, string, string) {
	h.t.Helper()
	var out, errb bytes.Buffer
	a := newApp(&out, &errb)
	a.geteuid = func() int { return h.euid }
	a.newEngine = func(_ *config.Config, c engineChoice, _ *zap.Logger) (brain.Engine, error) {
		h.choices = append(h.choices, c)
		return h.engine, nil
	}
	a.collectFacts = func(context.Context, sysinfo.Options) *sysinfo.Facts {
		return &sysinfo.Facts{Hostname: "testhost", Kernel: "6.18.0-test", CPUs: 2}
	}
	code := a.run(ctx, append([]string{"--config", h.config}, args...))
	return code, out.String(), errb.String()
}

const (
	roundOne = `{"response_type":"diagnostic","reasoning":"check the kernel and try something hostile",
		"commands":["uname -s",{"command":"rm -rf /tmp/x"}]}`
	resolvedReply = `{"response_type":"resolution","root_cause":"/var is out of inodes","resolution_plan":"1. delete the session files\n2. rebuild with more inodes",
		"confidence":"High","ebpf_evidence":"df -i: 100% IUse on /var",
		"findings":[{"title":"/var is out of inodes","severity":"critical","evidence":["df -i: 100%"],"root_cause":"/var is out of inodes","fix":["delete the session files"]},
		{"title":"swap is 80% used","severity":"warning","evidence":["SwapFree 20%"],"root_cause":"memory pressure","fix":["add memory"]}]}`
	diagnosticAgain = `{"response_type":"diagnostic","reasoning":"look again","commands":["uname -s"]}`
)

// --json: stdout is exactly one JSON document with the report's schema,
// and nothing else is written anywhere when stderr is not a terminal.
func TestDiagnoseJSON(t *testing.T) {
	h := newHarness(t, roundOne, resolvedReply)
	code, out, errOut := h.run(context.Background(), "diagnose", "--json", "--engine", "offline", "cannot create files in /var")
	require.Equal(t, 0, code, errOut)
	if h.euid == 0 {
		assert.Empty(t, errOut)
	}

	dec := json.NewDecoder(strings.NewReader(out))
	var doc map[string]any
	require.NoError(t, dec.Decode(&doc))
	var extra any
	require.ErrorIs(t, dec.Decode(&extra), io.EOF, "stdout holds one JSON document only")

	for _, k := range []string{"issue", "engine", "rounds", "findings", "resolution", "ended_by"} {
		assert.Contains(t, doc, k)
	}
	assert.Equal(t, "cannot create files in /var", doc["issue"])
	assert.Equal(t, "scripted", doc["engine"])
	rounds := doc["rounds"].([]any)
	require.Len(t, rounds, 1)
	r0 := rounds[0].(map[string]any)
	assert.Equal(t, "check the kernel and try something hostile", r0["reasoning"])
	assert.Contains(t, r0, "traces")
	cmds := r0["commands"].([]any)
	require.Len(t, cmds, 2)
	c0, c1 := cmds[0].(map[string]any), cmds[1].(map[string]any)
	for _, k := range []string{"command", "exit_code", "output", "refused", "duration_ms"} {
		assert.Contains(t, c0, k)
	}
	assert.Equal(t, "uname -s", c0["command"])
	assert.Equal(t, float64(0), c0["exit_code"])
	assert.Equal(t, "Linux\n", c0["output"])
	assert.Equal(t, false, c0["refused"])
	assert.Equal(t, "rm -rf /tmp/x", c1["command"])
	assert.Equal(t, true, c1["refused"])
	assert.NotEmpty(t, c1["reason"])

	findings := doc["findings"].([]any)
	require.Len(t, findings, 2)
	f0 := findings[0].(map[string]any)
	for _, k := range []string{"title", "severity", "evidence", "root_cause", "fix"} {
		assert.Contains(t, f0, k)
	}
	res := doc["resolution"].(map[string]any)
	assert.Equal(t, "/var is out of inodes", res["root_cause"])
	assert.Equal(t, "1. delete the session files\n2. rebuild with more inodes", res["resolution_plan"])
	assert.Equal(t, "High", res["confidence"])
	assert.Equal(t, "df -i: 100% IUse on /var", res["evidence"])
	assert.Equal(t, "resolution", doc["ended_by"])

	// The facts the loop started from, with the catalog filled in.
	var rep diagnose.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.NotNil(t, rep.Facts)
	assert.Equal(t, "testhost", rep.Facts.Hostname)
	assert.NotEmpty(t, rep.Facts.Catalog)
	assert.Equal(t, "exec", rep.Facts.Catalog[0].Name)
}

// Without --json and off a terminal: plain progress lines on stderr, the
// answer for reading on stdout, no escape sequences anywhere.
func TestDiagnosePlainOutput(t *testing.T) {
	h := newHarness(t, roundOne, resolvedReply)
	code, out, errOut := h.run(context.Background(), "diagnose", "--engine", "offline", "cannot", "create", "files", "in", "/var")
	require.Equal(t, 0, code, errOut)
	assert.NotContains(t, out+errOut, "\033")
	assert.NotContains(t, out+errOut, "\r")
	assert.Contains(t, errOut, "collecting system facts…\n✓ facts collected (")
	assert.Contains(t, errOut, "): testhost, kernel 6.18.0-test, 2 CPUs, load 0.00, 0 filesystems\n")
	assert.Contains(t, errOut, "round 1: asking scripted\nround 1: check the kernel and try something hostile\n")
	assert.Regexp(t, `(?m)^  ✓ uname -s \(\d+ms\)$`, errOut)
	assert.Regexp(t, `(?m)^  refused rm -rf /tmp/x: .+$`, errOut)
	assert.Contains(t, errOut, "round 2: asking scripted\n")

	assert.Contains(t, out, "Root cause (confidence: High)\n  /var is out of inodes\n\n"+
		"Evidence\n  df -i: 100% IUse on /var\n\n"+
		"Resolution plan\n  1. delete the session files\n  2. rebuild with more inodes\n\n"+
		"Other findings\n  - [warning] swap is 80% used\n      memory pressure\n      evidence: SwapFree 20%\n      fix: add memory\n\n"+
		"resolution: 1 rounds, 2 commands, 0 traces, ")
	assert.Contains(t, out, "engine scripted\n")
	assert.NotContains(t, out, "- [critical] /var is out of inodes", "the chosen finding is the root cause, not another finding")
}

func TestLegacyDiagnoseFlag(t *testing.T) {
	h := newHarness(t, resolvedReply)
	code, out, errOut := h.run(context.Background(), "--diagnose", "nginx fails to start", "--json")
	require.Equal(t, 0, code, errOut)
	var rep diagnose.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, "nginx fails to start", rep.Issue)
	assert.True(t, rep.Resolved())
}

func TestDiagnoseExitCodes(t *testing.T) {
	t.Run("limit without a resolution: 3", func(t *testing.T) {
		h := newHarness(t, diagnosticAgain, diagnosticAgain)
		h.config = writeConfig(t, "diagnose:\n  max_rounds: 1\n")
		code, out, errOut := h.run(context.Background(), "diagnose", "--engine", "offline", "--json", "the server is slow")
		require.Equal(t, 3, code, errOut)
		assert.Contains(t, errOut, "nannyagent: no resolution: round limit (1) reached\n")
		var rep diagnose.Report
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		assert.False(t, rep.Resolved())
		require.NotNil(t, rep.Resolution)
		assert.True(t, rep.Resolution.Provisional)
	})
	t.Run("the limit's best answer reads as such", func(t *testing.T) {
		h := newHarness(t, diagnosticAgain, diagnosticAgain)
		h.config = writeConfig(t, "diagnose:\n  max_rounds: 1\n")
		code, out, _ := h.run(context.Background(), "diagnose", "--engine", "offline", "the server is slow")
		require.Equal(t, 3, code)
		assert.Contains(t, out, "No conclusion (round limit (1) reached); the best answer so far:\nRoot cause (confidence: Low)\n  Not determined")
	})
	t.Run("engine error: 1, the report still printed", func(t *testing.T) {
		h := newHarness(t) // no replies: the engine fails at once
		code, out, errOut := h.run(context.Background(), "diagnose", "--engine", "offline", "--json", "the server is slow")
		require.Equal(t, 1, code)
		assert.Contains(t, errOut, "nannyagent: engine scripted: the script has no more replies\n")
		var rep diagnose.Report
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		assert.Equal(t, "engine error", rep.EndedBy)
	})
	t.Run("cancelled: 130", func(t *testing.T) {
		eng := &scripted{block: make(chan struct{})}
		h := newHarness(t)
		h.engine = eng
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-eng.block
			cancel()
		}()
		code, _, errOut := h.run(ctx, "diagnose", "--engine", "offline", "the server is slow")
		require.Equal(t, 130, code)
		assert.Contains(t, errOut, "nannyagent: investigation cancelled\n")
	})
	usage := []struct {
		args   []string
		config string
		want   string
	}{
		{[]string{"diagnose"}, "", `nannyagent: diagnose needs the issue, e.g. nannyagent diagnose "cannot create files in /var"` + "\n"},
		{[]string{"diagnose", "  x "}, "", `nannyagent: the issue must say what is wrong in at least 3 characters, e.g. nannyagent diagnose "cannot create files in /var"` + "\n"},
		{[]string{"--diagnose", ""}, "", `nannyagent: the issue must say what is wrong in at least 3 characters, e.g. nannyagent diagnose "cannot create files in /var"` + "\n"},
		{[]string{"diagnose", strings.Repeat("a", 9000)}, "", "nannyagent: the issue is 9000 bytes; describe it in at most 8192\n"},
		{[]string{"diagnose", "--engine", "gpt", "disk full"}, "", `nannyagent: --engine "gpt": must be one of auto, offline, openai, nannyapi` + "\n"},
		{[]string{"diagnose", "--engine", "nannyapi", "disk full"}, "",
			"nannyagent: not registered (nannyapi_url is not set): run sudo nannyagent --register, or choose --engine offline, or --engine openai with ai.base_url and ai.model set\n"},
		{[]string{"diagnose", "--engine", "openai", "disk full"}, "",
			`nannyagent: ai.provider "openai" (from --engine): needs ai.base_url (an OpenAI-compatible endpoint such as http://127.0.0.1:11434/v1)` + "\n"},
		{[]string{"diagnose", "disk full"}, "diagnose:\n  max_round: 3\n", `: line 2: unknown key "diagnose.max_round" (did you mean "diagnose.max_rounds"?)`},
		{[]string{"diagnose", "--bogus", "disk full"}, "", "nannyagent: unknown flag: --bogus\n"},
		{[]string{"bogus"}, "", `nannyagent: unknown command "bogus" (see nannyagent --help)` + "\n"},
		{[]string{"--json"}, "", `nannyagent: --json goes with --diagnose "ISSUE" or the diagnose command` + "\n"},
		{nil, "", `nannyagent: no terminal for the interactive mode: run it from a terminal, or investigate one issue with nannyagent diagnose "ISSUE" (see nannyagent --help)` + "\n"},
	}
	for _, u := range usage {
		h := newHarness(t, resolvedReply)
		if u.config != "" {
			h.config = writeConfig(t, u.config)
		}
		code, out, errOut := h.run(context.Background(), u.args...)
		assert.Equal(t, 2, code, "%q", u.args)
		assert.Empty(t, out, "%q", u.args)
		if strings.HasPrefix(u.want, "nannyagent:") {
			assert.Equal(t, u.want, errOut, "%q", u.args)
		} else {
			assert.Contains(t, errOut, u.want, "%q", u.args)
		}
	}
}

func TestMissingExplicitConfig(t *testing.T) {
	h := newHarness(t, resolvedReply)
	h.config = filepath.Join(t.TempDir(), "nope.yaml")
	code, _, errOut := h.run(context.Background(), "diagnose", "disk full")
	assert.Equal(t, 2, code)
	assert.Equal(t, "nannyagent: config file "+h.config+" does not exist\n", errOut)
}

// Engine choice: --engine over NANNYAGENT_AI_PROVIDER over ai.provider;
// auto (not registered) is openai when an endpoint is configured, else
// offline.
func TestEnginePrecedence(t *testing.T) {
	endpoint := "ai:\n  provider: %s\n  base_url: http://127.0.0.1:9/v1\n  model: m\n"
	cases := []struct {
		config, env string
		flag        []string
		want        engineChoice
	}{
		{"", "", nil, engineChoice{Provider: "offline", Why: "auto: no ai.base_url configured"}},
		{strings.Replace(endpoint, "%s", "auto", 1), "", nil, engineChoice{Provider: "openai", Why: "auto: ai.base_url is set"}},
		{strings.Replace(endpoint, "%s", "offline", 1), "", nil, engineChoice{Provider: "offline", Why: "chosen by ai.provider"}},
		{strings.Replace(endpoint, "%s", "offline", 1), "openai", nil, engineChoice{Provider: "openai", Why: "chosen by NANNYAGENT_AI_PROVIDER"}},
		{strings.Replace(endpoint, "%s", "openai", 1), "openai", []string{"--engine", "offline"}, engineChoice{Provider: "offline", Why: "chosen by --engine"}},
		{strings.Replace(endpoint, "%s", "offline", 1), "", []string{"--engine", "auto"}, engineChoice{Provider: "openai", Why: "auto: ai.base_url is set"}},
	}
	for _, c := range cases {
		t.Setenv("NANNYAGENT_AI_PROVIDER", c.env)
		h := newHarness(t, resolvedReply)
		h.config = writeConfig(t, c.config)
		args := append([]string{"diagnose", "--json"}, c.flag...)
		code, _, errOut := h.run(context.Background(), append(args, "disk is full")...)
		require.Equal(t, 0, code, errOut)
		require.Len(t, h.choices, 1)
		assert.Equal(t, c.want, h.choices[0], "config %q env %q flag %v", c.config, c.env, c.flag)
	}
	t.Setenv("NANNYAGENT_AI_PROVIDER", "nannyapi")
	h := newHarness(t, resolvedReply)
	code, _, errOut := h.run(context.Background(), "diagnose", "disk is full")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "not registered (nannyapi_url is not set): run sudo nannyagent --register")
}

// Not root: the investigation says what it cannot do, goes on, and
// answers trace requests with the reason.
func TestNotRootNoticeAndTraces(t *testing.T) {
	trace := `{"response_type":"diagnostic","reasoning":"watch execs","ebpf_programs":[{"name":"exec","type":"tracepoint","target":"exec","duration":5}]}`
	h := newHarness(t, trace, resolvedReply)
	h.euid = 1000
	code, out, errOut := h.run(context.Background(), "diagnose", "--engine", "offline", "--json", "something spawns processes")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, errOut, "nannyagent: not running as root, so this investigation is limited:\n"+
		"  - kernel traces (eBPF) need root: the engine's trace requests are answered \"needs root\";\n")
	assert.Contains(t, errOut, "private read-only mount namespace (that needs root); what remains is\n    Landlock (")
	var rep diagnose.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Len(t, rep.Rounds, 1)
	require.Len(t, rep.Rounds[0].Traces, 1)
	tr := rep.Rounds[0].Traces[0]
	assert.Equal(t, "exec", tr.Entry)
	assert.Nil(t, tr.Result)
	assert.Equal(t, "kernel traces need root: nannyagent is not running as root (run it with sudo)", tr.Error)
}

func TestProgressLive(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, true, "offline")
	p.width = 80
	p.event(diagnose.Event{Kind: diagnose.EventThinking, Round: 1})
	p.event(diagnose.Event{Kind: diagnose.EventReply, Round: 1, Text: "look at the disks"})
	p.event(diagnose.Event{Kind: diagnose.EventTraceStart, Round: 1, Text: "exec, runqlat"})
	p.event(diagnose.Event{Kind: diagnose.EventTraceProgress, Round: 1})
	b.Reset()
	p.event(diagnose.Event{Kind: diagnose.EventTraceProgress, Round: 1, Trace: progressAt(7*time.Second+100*time.Millisecond, 10*time.Second, 42)})
	assert.Equal(t, "\r\033[K  tracing exec, runqlat… 3s left, 42 events (Ctrl-C cancels)", b.String())
	b.Reset()
	p.event(diagnose.Event{Kind: diagnose.EventCommandDone, Round: 1, Command: &diagnose.CommandReport{Command: "df -i", DurationMS: 12}})
	assert.Equal(t, "\r\033[K  ✓ df -i (12ms)\n  tracing exec, runqlat… 3s left, 42 events (Ctrl-C cancels)", b.String(),
		"a finished command goes above the countdown, which is redrawn")
	b.Reset()
	p.event(diagnose.Event{Kind: diagnose.EventReply, Round: 2, Text: strings.Repeat("x", 100)})
	assert.Equal(t, "\r\033[Kround 2: "+strings.Repeat("x", 69)+"…\n", b.String(), "cut to the terminal's width")
}

func TestCommandLine(t *testing.T) {
	cases := map[string]diagnose.CommandReport{
		"✓ df -h (5ms)":                           {Command: "df -h", DurationMS: 5},
		"✗ cat /nope (exit 1, 2ms)":               {Command: "cat /nope", ExitCode: 1, DurationMS: 2},
		"✗ sleep 60 (timed out after 10s)":        {Command: "sleep 60", TimedOut: true, ExitCode: -1, DurationMS: 10000},
		"refused rm -rf /: rm is not allowlisted": {Command: "rm -rf /", Refused: true, Reason: "rm is not allowlisted"},
		"✗ nosuch (program not found, 0s)":        {Command: "nosuch", Error: "program not found", ExitCode: 127},
	}
	for want, c := range cases {
		assert.Equal(t, want, commandLine(&c))
	}
}

func progressAt(elapsed, total time.Duration, events uint64) runner.Progress {
	return runner.Progress{Elapsed: elapsed, Total: total, Events: events, Running: 1}
}
