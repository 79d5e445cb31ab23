package diagnose

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	safeexec.EnterSandboxIfRequested()
	os.Exit(m.Run())
}

// script is an engine that answers with fixed replies in order and keeps
// a copy of what it was shown each time.
type script struct {
	mu      sync.Mutex
	replies []string
	seen    []brain.Investigation
	// block makes Next wait for the context (a model that never answers).
	block bool
}

func (s *script) Name() string { return "script" }

func (s *script) Next(ctx context.Context, inv *brain.Investigation) (string, error) {
	s.mu.Lock()
	cp := *inv
	cp.Rounds = append([]brain.Round(nil), inv.Rounds...)
	if inv.ParseFailure != nil {
		pf := *inv.ParseFailure
		cp.ParseFailure = &pf
	}
	s.seen = append(s.seen, cp)
	n := len(s.seen)
	s.mu.Unlock()
	if s.block {
		<-ctx.Done()
		return "", ctx.Err()
	}
	if n > len(s.replies) {
		return "", errors.New("script has no more replies")
	}
	return s.replies[n-1], nil
}

// testExec runs commands sandboxed when the test can (root), plainly
// otherwise: the loop is under test here, the sandbox has its own tests.
func testExec() *safeexec.Options {
	o := safeexec.DefaultOptions()
	o.Sandbox = os.Geteuid() == 0
	o.Timeout = 5 * time.Second
	return &o
}

const resolved = `{"response_type":"resolution","root_cause":"the disk is full","resolution_plan":"1. free space","confidence":"High"}`

func TestResolutionFirst(t *testing.T) {
	eng := &script{replies: []string{resolved}}
	rep, err := Run(context.Background(), "disk is full on /var", Options{Engine: eng, Exec: testExec()})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Equal(t, "resolution", rep.EndedBy)
	require.Equal(t, "the disk is full", rep.Resolution.RootCause)
	require.Equal(t, "High", rep.Resolution.Confidence)
	require.Empty(t, rep.Rounds)
}

func TestCommandsRunAndGoBack(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "motd")
	require.NoError(t, os.WriteFile(f, []byte("line one\nline two\n"), 0o644))
	eng := &script{replies: []string{
		"```json\n" + `{"response_type":"diagnostic","reasoning":"look at the file","commands":["cat ` + f + `",{"command":"wc -l ` + f + `"},"rm -rf ` + dir + `"]}` + "\n```",
		resolved,
	}}
	var events []EventKind
	var mu sync.Mutex
	rep, err := Run(context.Background(), "something about a file", Options{Engine: eng, Exec: testExec(),
		Progress: func(e Event) { mu.Lock(); events = append(events, e.Kind); mu.Unlock() }})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Len(t, rep.Rounds, 1)
	cmds := rep.Rounds[0].Commands
	require.Len(t, cmds, 3)
	require.Equal(t, "line one\nline two\n", cmds[0].Output)
	require.Equal(t, 0, cmds[0].ExitCode)
	require.Equal(t, "2 "+f+"\n", cmds[1].Output)
	require.True(t, cmds[2].Refused, "rm must come back refused")
	require.NotEmpty(t, cmds[2].Reason)
	require.DirExists(t, dir)

	// The second call saw the first round's results, in the wire form.
	require.Len(t, eng.seen, 2)
	require.Len(t, eng.seen[1].Rounds, 1)
	res := brain.ResultsFor(eng.seen[1].Rounds[0], 1<<20)
	require.Equal(t, 3, res.ExecutedCommands)
	require.Equal(t, "cmd_1", res.CommandResults[0].ID)
	require.Equal(t, "line one\nline two\n", res.CommandResults[0].Output)
	require.True(t, res.CommandResults[2].Refused)
	require.Contains(t, events, EventCommandDone)
	require.Contains(t, events, EventReply)
}

func TestParseFailureSentBackOnce(t *testing.T) {
	eng := &script{replies: []string{"I think the disk is full.", resolved}}
	rep, err := Run(context.Background(), "disk is full", Options{Engine: eng, Exec: testExec()})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Len(t, eng.seen, 2)
	require.NotNil(t, eng.seen[1].ParseFailure)
	require.Equal(t, "I think the disk is full.", eng.seen[1].ParseFailure.Reply)
	require.Contains(t, eng.seen[1].ParseFailure.Err, "no JSON object")
}

func TestParseFailureTwiceEnds(t *testing.T) {
	eng := &script{replies: []string{"not json at all", `{"response_type":"maybe"}`, resolved}}
	rep, err := Run(context.Background(), "disk is full", Options{Engine: eng, Exec: testExec()})
	require.Error(t, err)
	require.Contains(t, err.Error(), `unknown response_type "maybe"`)
	require.Contains(t, err.Error(), `reply starts "{\"response_type\":\"maybe\"}"`)
	require.False(t, rep.Resolved())
	require.Equal(t, "unreadable reply", rep.EndedBy)
	require.Len(t, eng.seen, 2)
}

func diag(cmd string) string {
	return `{"response_type":"diagnostic","reasoning":"checking ` + cmd + `","commands":["` + cmd + `"]}`
}

func TestRoundLimitAsksForFinalAnswer(t *testing.T) {
	eng := &script{replies: []string{diag("uptime"), diag("uname -r"), resolved}}
	rep, err := Run(context.Background(), "slow", Options{Engine: eng, Exec: testExec(), MaxRounds: 2})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Len(t, rep.Rounds, 2)
	require.Equal(t, "resolution after round limit (2) reached", rep.EndedBy)
	require.True(t, eng.seen[2].Final)
	require.False(t, eng.seen[1].Final)
}

func TestRoundLimitWithoutAnswerIsProvisional(t *testing.T) {
	eng := &script{replies: []string{diag("uptime"), diag("uname -r")}}
	rep, err := Run(context.Background(), "slow", Options{Engine: eng, Exec: testExec(), MaxRounds: 1})
	require.NoError(t, err)
	require.False(t, rep.Resolved())
	require.True(t, rep.Resolution.Provisional)
	require.Equal(t, "round limit (1) reached", rep.EndedBy)
	require.Contains(t, rep.Resolution.RootCause, "checking uname -r")
	require.Equal(t, "Low", rep.Resolution.Confidence)
}

func TestWallTimeLimit(t *testing.T) {
	eng := &script{block: true}
	rep, err := Run(context.Background(), "slow", Options{Engine: eng, Exec: testExec(), MaxWall: 200 * time.Millisecond})
	require.NoError(t, err)
	require.False(t, rep.Resolved())
	require.Equal(t, "time limit (200ms) reached", rep.EndedBy)
}

func TestCancelled(t *testing.T) {
	eng := &script{block: true}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	rep, err := Run(ctx, "slow", Options{Engine: eng, Exec: testExec()})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, "cancelled", rep.EndedBy)
}

func TestEngineErrorEnds(t *testing.T) {
	eng := &script{}
	rep, err := Run(context.Background(), "slow", Options{Engine: eng, Exec: testExec()})
	require.Error(t, err)
	require.Contains(t, err.Error(), "engine script: script has no more replies")
	require.Equal(t, "engine error", rep.EndedBy)
}

func TestTracesWithoutKernel(t *testing.T) {
	eng := &script{replies: []string{
		`{"response_type":"diagnostic","reasoning":"trace","ebpf_programs":[{"name":"execsnoop","duration":1},{"type":"kprobe","target":"tcp_v4_connect"},{"type":"bpftrace","target":"kprobe:vfs_read { system(\"reboot\") }"}]}`,
		resolved,
	}}
	rep, err := Run(context.Background(), "slow", Options{Engine: eng, Exec: testExec(), TraceUnavailable: "kernel traces need root: run with sudo"})
	require.NoError(t, err)
	tr := rep.Rounds[0].Traces
	require.Len(t, tr, 3)
	require.Equal(t, "exec", tr[0].Entry)
	require.Equal(t, "kernel traces need root: run with sudo", tr[0].Error)
	require.Equal(t, "tcpconnect", tr[1].Entry)
	require.Empty(t, tr[2].Entry, "a bpftrace script calling system() is refused by the resolver")
	require.Contains(t, tr[2].Error, "system", "the refusal, not the missing kernel, is the reason")
}

func TestRedactionBeforeTheEngine(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "env")
	require.NoError(t, os.WriteFile(f, []byte("DB_PASSWORD=hunter2\nok\n"), 0o644))
	eng := &script{replies: []string{diag("cat " + f), resolved}}
	redact := func(s string) string { return strings.ReplaceAll(s, "hunter2", "[REDACTED]") }
	rep, err := Run(context.Background(), "x", Options{Engine: eng, Exec: testExec(), Redact: redact})
	require.NoError(t, err)
	require.Equal(t, "DB_PASSWORD=[REDACTED]\nok\n", rep.Rounds[0].Commands[0].Output)
	for _, m := range brain.Conversation(&eng.seen[1]) {
		require.NotContains(t, m.Content, "hunter2")
	}
}

func TestFindingsCarried(t *testing.T) {
	eng := &script{replies: []string{`{"response_type":"resolution","root_cause":"a","confidence":"high","findings":[{"title":"A","severity":"critical"},{"title":"B","severity":"warning"}]}`}}
	rep, err := Run(context.Background(), "x", Options{Engine: eng, Exec: testExec()})
	require.NoError(t, err)
	require.Equal(t, []protocol.Finding{{Title: "A", Severity: "critical"}, {Title: "B", Severity: "warning"}}, rep.Findings)
	require.Equal(t, "High", rep.Resolution.Confidence)
}
