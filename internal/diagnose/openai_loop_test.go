package diagnose

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nannyagent/nannyagent/internal/redact"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain/openai"
	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/stretchr/testify/require"
)

// These tests drive the loop with the openai engine against a scripted
// OpenAI-compatible server: what the loop does is checked in the report,
// what the model is shown is checked in the requests the server received.

const apiKey = "sk-loop-test-4b1d9c7e2f0a8365"

func openaiEngine(t *testing.T, s *openaitest.Server, mod ...func(*openai.Config)) *openai.Engine {
	t.Helper()
	cfg := openai.Config{BaseURL: s.BaseURL(), Model: "loop-model", APIKey: apiKey, RetryBase: time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	e, err := openai.New(cfg)
	require.NoError(t, err)
	return e
}

func loopFacts() *sysinfo.Facts {
	return &sysinfo.Facts{Hostname: "loop-test-host", Kernel: "6.18.0", Arch: "x86_64", CPUs: 2,
		Catalog: []sysinfo.CatalogEntry{
			{Name: "exec", Answers: "what is being started", Supported: true},
			{Name: "open", Answers: "which files are opened", Supported: true},
			{Name: "kfunc", Answers: "kernel functions", Reason: "kprobes are not available"},
		}}
}

// results decodes the results message the request ends with.
func results(t *testing.T, r openaitest.Request) protocol.Results {
	t.Helper()
	last := r.Messages[len(r.Messages)-1]
	require.Equal(t, "user", last.Role)
	var res protocol.Results
	require.NoError(t, json.Unmarshal([]byte(last.Content), &res), last.Content)
	return res
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestOpenAIMultiRound(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.log")
	require.NoError(t, os.WriteFile(f, []byte("start\nERROR: disk quota exceeded\nstop\n"), 0o644))
	diag1 := `{"response_type":"diagnostic","reasoning":"read the log","commands":[` + jsonString("cat "+f) + `,` + jsonString("grep -c ERROR "+f) + `]}`
	diag2 := `{"response_type":"diagnostic","reasoning":"how big is it","commands":[` + jsonString("stat -c %s "+f) + `]}`
	final := `{"response_type":"resolution","root_cause":"the disk quota is exceeded (app.log line 2)","resolution_plan":"1. raise the quota","confidence":"High"}`
	s := openaitest.New(t, openaitest.Reply(diag1), openaitest.Reply(diag2), openaitest.Reply(final))
	s.Key = apiKey
	rep, err := Run(context.Background(), "the app stopped writing its log", Options{
		Engine: openaiEngine(t, s), Exec: testExec(), Facts: loopFacts(), MaxRounds: 5, MaxWall: time.Minute, RoundBudget: 30 * time.Second})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Equal(t, "openai", rep.Engine)
	require.Equal(t, "resolution", rep.EndedBy)
	require.Equal(t, "the disk quota is exceeded (app.log line 2)", rep.Resolution.RootCause)
	require.Len(t, rep.Rounds, 2)
	require.Equal(t, "start\nERROR: disk quota exceeded\nstop\n", rep.Rounds[0].Commands[0].Output)
	require.Equal(t, "1\n", rep.Rounds[0].Commands[1].Output)
	require.Equal(t, "38\n", rep.Rounds[1].Commands[0].Output)

	reqs := s.Requests()
	require.Len(t, reqs, 3)
	for i, r := range reqs {
		require.Equal(t, "loop-model", r.Model)
		require.Equal(t, "Bearer "+apiKey, r.Header.Get("Authorization"))
		require.Equal(t, openaitest.Path, r.URL)
		require.Equal(t, "system", r.Messages[0].Role)
		require.Contains(t, r.Messages[0].Content, fmt.Sprintf("- Rounds: at most 5 diagnostic replies; %d used so far.", i))
		require.Contains(t, r.Messages[0].Content, "Catalog entries that work on this kernel:\n- exec: ")
		require.Contains(t, r.Messages[0].Content, "- kfunc: kprobes are not available\n")
		require.Equal(t, "user", r.Messages[1].Role)
		require.Contains(t, r.Messages[1].Content, "loop-test-host")
		require.True(t, strings.HasSuffix(r.Messages[1].Content, "ISSUE DESCRIPTION:\nthe app stopped writing its log"))
		require.Len(t, r.Messages, 2+2*i, "system, issue, then a reply and its results per round")
	}
	// Round 1's reply and its results went back in the second request.
	require.Equal(t, "assistant", reqs[1].Messages[2].Role)
	d, err := protocol.Parse(reqs[1].Messages[2].Content)
	require.NoError(t, err)
	require.Equal(t, "read the log", d.Reasoning)
	r1 := results(t, reqs[1])
	require.Equal(t, 2, r1.ExecutedCommands)
	require.Equal(t, protocol.CommandResult{ID: "cmd_1", Command: "cat " + f, Output: "start\nERROR: disk quota exceeded\nstop\n"}, r1.CommandResults[0])
	require.Equal(t, protocol.CommandResult{ID: "cmd_2", Command: "grep -c ERROR " + f, Output: "1\n"}, r1.CommandResults[1])
	// The third carries both rounds.
	require.Equal(t, reqs[1].Messages[3], reqs[2].Messages[3])
	r2 := results(t, reqs[2])
	require.Equal(t, "38\n", r2.CommandResults[0].Output)
}

func TestOpenAIFencedReplyAndObjectCommands(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "hosts")
	require.NoError(t, os.WriteFile(f, []byte("127.0.0.1 localhost\n"), 0o644))
	diag := "Let me look at the hosts file first.\n```json\n" +
		`{"response_type":"diagnostic","reasoning":"hosts","commands":[{"id":"c1","command":` + jsonString("cat "+f) + `,"description":"the file"},"uname -s"],"next_actions":["then resolve"],"extra":{"x":1}}` +
		"\n```\nI will wait for the results."
	final := "```\n" + `{"response_type":"resolution","root_cause":"nothing is wrong","confidence":"medium","findings":[{"title":"ok","severity":"info"}]}` + "\n```"
	s := openaitest.New(t, openaitest.Reply(diag), openaitest.Reply(final))
	rep, err := Run(context.Background(), "name resolution is odd", Options{Engine: openaiEngine(t, s), Exec: testExec()})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Equal(t, "Medium", rep.Resolution.Confidence)
	require.Equal(t, []protocol.Finding{{Title: "ok", Severity: "info"}}, rep.Findings)
	cmds := rep.Rounds[0].Commands
	require.Len(t, cmds, 2)
	require.Equal(t, "cat "+f, cmds[0].Command)
	require.Equal(t, "127.0.0.1 localhost\n", cmds[0].Output)
	require.Equal(t, "uname -s", cmds[1].Command)
	require.Equal(t, "Linux\n", cmds[1].Output)
	// The model sees its reply back in canonical form, and both results.
	r := s.Requests()[1]
	require.Equal(t, `{"response_type":"diagnostic","reasoning":"hosts","commands":[`+jsonString("cat "+f)+`,"uname -s"],"next_actions":["then resolve"]}`, r.Messages[2].Content)
	res := results(t, r)
	require.Equal(t, "127.0.0.1 localhost\n", res.CommandResults[0].Output)
	require.Equal(t, "Linux\n", res.CommandResults[1].Output)
}

func TestOpenAIMalformedThenGood(t *testing.T) {
	s := openaitest.New(t, openaitest.Reply("I think the disk is full."), openaitest.Reply(resolved))
	rep, err := Run(context.Background(), "disk is full", Options{Engine: openaiEngine(t, s), Exec: testExec()})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	reqs := s.Requests()
	require.Len(t, reqs, 2)
	m := reqs[1].Messages
	require.Len(t, m, 4)
	require.Equal(t, openaitest.Message{Role: "assistant", Content: "I think the disk is full."}, m[2])
	require.Equal(t, "user", m[3].Role)
	require.Equal(t, `Your last reply could not be read: reply holds no JSON object (reply starts "I think the disk is full."). `+
		`Answer again with one JSON object only, response_type "diagnostic" or "resolution", as the system prompt says.`, m[3].Content)
}

func TestOpenAITwoMalformedReplies(t *testing.T) {
	long := `{"response_type":"maybe","reasoning":"` + strings.Repeat("very long ", 50) + `"}`
	s := openaitest.New(t, openaitest.Reply("```json\n{not json at all\n```"), openaitest.Reply(long))
	rep, err := Run(context.Background(), "disk is full", Options{Engine: openaiEngine(t, s), Exec: testExec()})
	require.Error(t, err)
	// The error quotes the first 120 characters of the reply.
	require.Equal(t, `engine openai sent a reply that is not protocol JSON twice: unknown response_type "maybe" (want "diagnostic" or "resolution") `+
		`(reply starts `+fmt.Sprintf("%q", long[:120]+"…")+`)`, err.Error())
	require.Equal(t, "unreadable reply", rep.EndedBy)
	require.False(t, rep.Resolved())
	reqs := s.Requests()
	require.Len(t, reqs, 2)
	require.Contains(t, reqs[1].Messages[3].Content, "Your last reply could not be read: reply is not valid JSON: invalid character 'n'")
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

func TestOpenAIHostileCommandsComeBackRefused(t *testing.T) {
	dir := t.TempDir()
	x := filepath.Join(dir, "x")
	require.NoError(t, os.WriteFile(x, []byte("canary\n"), 0o644))
	passwd := sum(t, "/etc/passwd")
	hostile := []string{
		"rm -rf " + x,
		"bash -c 'reboot'",
		"echo x > /etc/passwd",
		"echo x > /etc/passwd 2>/dev/null",
		"find " + dir + " -delete",
		"sed -i s/canary/gone/ " + x,
		"cat " + x + "; rm " + x,
		"ls $(rm " + x + ")",
		"sudo cat /etc/shadow",
	}
	cmds := make([]string, 0, len(hostile)+1)
	for _, h := range hostile {
		cmds = append(cmds, jsonString(h))
	}
	cmds = append(cmds, jsonString("cat "+x))
	diag := `{"response_type":"diagnostic","reasoning":"try everything","commands":[` + strings.Join(cmds, ",") + `]}`
	s := openaitest.New(t, openaitest.Reply(diag), openaitest.Reply(resolved))
	rep, err := Run(context.Background(), "clean up the disk", Options{Engine: openaiEngine(t, s), Exec: testExec()})
	require.NoError(t, err)
	require.True(t, rep.Resolved())

	res := results(t, s.Requests()[1])
	require.Equal(t, len(hostile)+1, res.ExecutedCommands)
	for i, h := range hostile {
		c := res.CommandResults[i]
		require.Equal(t, h, c.Command)
		require.True(t, c.Refused, "%s must come back refused", h)
		require.NotEmpty(t, c.Reason, h)
		require.Equal(t, 126, c.ExitCode, h)
		require.Empty(t, c.Output, "%s: nothing ran", h)
		require.True(t, rep.Rounds[0].Commands[i].Refused)
	}
	// The harmless command of the same reply ran.
	last := res.CommandResults[len(hostile)]
	require.False(t, last.Refused)
	require.Equal(t, "canary\n", last.Output)
	// Nothing changed.
	b, err := os.ReadFile(x)
	require.NoError(t, err)
	require.Equal(t, "canary\n", string(b))
	require.Equal(t, passwd, sum(t, "/etc/passwd"))
}

func TestOpenAITraceRequestForms(t *testing.T) {
	round1 := `{"response_type":"diagnostic","reasoning":"traces by name","ebpf_programs":[` +
		`{"name":"runqlat","duration":1},` +
		`{"name":"execsnoop","duration":1},` +
		`{"name":"blk","type":"tracepoint","target":"block:block_rq_complete","duration":1,"filters":{"comm":"postgres"},"description":"disk completions"},` +
		`{"type":"tracepoint","target":"irq:softirq_entry"},` +
		`{"type":"kprobe","target":"tcp_v4_connect"}]}`
	round2 := `{"response_type":"diagnostic","reasoning":"traces by probe","ebpf_programs":[` +
		`{"type":"kprobe","target":"vfs_fsync"},` +
		`{"type":"syscall","target":"openat","filters":{"failed":true}},` +
		`{"type":"syscall","target":"fsync"},` +
		`{"type":"bpftrace","target":"tracepoint:syscalls:sys_enter_fsync { @[comm] = count(); }"},` +
		`{"type":"bpftrace","target":"kprobe:vfs_read { system(\"reboot\") }"},` +
		`{"type":"kprobe","target":"rm -rf /; echo"}]}`
	s := openaitest.New(t, openaitest.Reply(round1), openaitest.Reply(round2), openaitest.Reply(resolved))
	rep, err := Run(context.Background(), "the machine is slow", Options{Engine: openaiEngine(t, s), Exec: testExec(),
		TraceUnavailable: "kernel traces need root: run with sudo"})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Len(t, rep.Rounds, 2)

	type mapping struct{ entry, how string }
	want := [][]mapping{{
		{"runqlat", "no target; name: entry runqlat"},
		{"exec", "no target; name: alias execsnoop -> exec"},
		{"biolatency", "tracepoint block:block_rq_complete covered by biolatency"},
		{"tracepoint", "no entry covers tracepoint irq:softirq_entry -> generic tracepoint counter"},
		{"tcpconnect", "function tcp_v4_connect -> tcpconnect"},
	}, {
		{"kfunc", "kprobe vfs_fsync uncovered -> kfunc"},
		{"open", "syscall openat -> open"},
		{"syscalls", "syscall fsync -> syscalls (no entry covers it alone; syscalls counts it among all calls, with errors and latency)"},
		{"bpftrace", "bpftrace script -> fallback"},
		{"", "bpftrace script -> refused"},
		{"", "junk target"},
	}}
	for r, round := range want {
		traces := rep.Rounds[r].Traces
		require.Len(t, traces, len(round))
		// What the model is told about each request, in the next request.
		res := results(t, s.Requests()[r+1])
		require.Equal(t, len(round), res.ExecutedEBPFPrograms)
		for i, m := range round {
			require.Equal(t, m.entry, traces[i].Entry, "round %d trace %d", r+1, i)
			require.Equal(t, m.how, traces[i].Mapping, "round %d trace %d", r+1, i)
			require.Nil(t, traces[i].Result)
			tr := res.EBPFResults[i]
			require.Equal(t, i, tr.Index)
			require.Equal(t, m.how, tr.Mapping)
			require.False(t, tr.Success)
			require.NotEmpty(t, tr.Error)
			if m.entry != "" && m.entry != "bpftrace" {
				require.Equal(t, m.entry, tr.Entry)
				require.Equal(t, "kernel traces need root: run with sudo", tr.Error)
			}
		}
	}
	require.Equal(t, "block:block_rq_complete", results(t, s.Requests()[1]).EBPFResults[2].Target)
	require.Equal(t, "runqlat", results(t, s.Requests()[1]).EBPFResults[0].Target)
	// The comm filter reached the parameters of the entry it maps to.
	require.Equal(t, "postgres", rep.Rounds[0].Traces[2].Request.Filters["comm"])
}

// One trace runs for real through the loop: the model's request by alias
// is mapped, runs with its filters, and its figures reach the next
// request.
func TestOpenAIRealTrace(t *testing.T) {
	k := catalogtest.Kernel(t)
	missing := filepath.Join(t.TempDir(), "no-such-dir", "nannyagent-loop-probe.conf")
	const opens = 25
	diag := `{"response_type":"diagnostic","reasoning":"which opens fail","ebpf_programs":[{"name":"opensnoop","duration":2,"filters":{"failed":true,"pid":` +
		fmt.Sprint(os.Getpid()) + `}}]}`
	s := openaitest.New(t, openaitest.Reply(diag), openaitest.Reply(resolved))
	var once sync.Once
	done := make(chan struct{})
	progress := func(e Event) {
		// The first progress report comes after the traces attached.
		if e.Kind == EventTraceProgress {
			once.Do(func() {
				for range opens {
					_, err := os.Open(missing)
					if !errors.Is(err, os.ErrNotExist) {
						panic(err)
					}
				}
				close(done)
			})
		}
	}
	rep, err := Run(context.Background(), "the service cannot find its config", Options{Engine: openaiEngine(t, s), Exec: testExec(),
		Kernel: k, Progress: progress, RoundBudget: 30 * time.Second})
	require.NoError(t, err)
	<-done
	require.True(t, rep.Resolved())
	tr := rep.Rounds[0].Traces[0]
	require.Equal(t, "open", tr.Entry)
	require.Equal(t, "no target; name: alias opensnoop -> open", tr.Mapping)
	require.Empty(t, tr.Error)
	require.NotNil(t, tr.Result)
	var failed *int
	for i := range tr.Result.Tables {
		if tr.Result.Tables[i].Title == "failed opens by path" {
			failed = &i
		}
	}
	require.NotNil(t, failed)
	row := catalogtest.Row(t, tr.Result.Tables[*failed], missing)
	require.Equal(t, []string{missing, "ENOENT", fmt.Sprint(opens)}, row)

	res := results(t, s.Requests()[1])
	require.Len(t, res.EBPFResults, 1)
	er := res.EBPFResults[0]
	require.True(t, er.Success, er.Error)
	require.Equal(t, "open", er.Entry)
	require.Equal(t, "opensnoop", er.Target)
	require.GreaterOrEqual(t, er.EventCount, uint64(opens))
	require.Contains(t, er.Output, missing)
	require.Regexp(t, regexp.MustCompile(regexp.QuoteMeta(missing)+`\s+ENOENT\s+`+fmt.Sprint(opens)), er.Output)
}

func TestOpenAIReplyThatNeverEnds(t *testing.T) {
	// The request timeout ends it: an engine error that says so.
	s := openaitest.New(t, openaitest.Hang())
	eng := openaiEngine(t, s, func(c *openai.Config) { c.Timeout = 300 * time.Millisecond })
	rep, err := Run(context.Background(), "slow", Options{Engine: eng, Exec: testExec(), MaxWall: time.Minute})
	require.EqualError(t, err, "engine openai: the model endpoint "+eng.Endpoint()+
		" did not answer within 300ms (the request timeout): the model may be overloaded or too slow for this prompt")
	require.Equal(t, "engine error", rep.EndedBy)
	require.Len(t, s.Requests(), 1)

	// The investigation's wall time ends an answer whose body never
	// ends: the best answer so far, marked provisional.
	s = openaitest.New(t, openaitest.Reply(diag("uptime")), openaitest.Stall())
	start := time.Now()
	rep, err = Run(context.Background(), "slow", Options{Engine: openaiEngine(t, s), Exec: testExec(), MaxWall: 2 * time.Second})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 10*time.Second)
	require.Equal(t, "time limit (2s) reached", rep.EndedBy)
	require.False(t, rep.Resolved())
	require.True(t, rep.Resolution.Provisional)
	require.Equal(t, "Not determined (time limit (2s) reached). Last reasoning: checking uptime", rep.Resolution.RootCause)
	require.Len(t, rep.Rounds, 1)
}

func TestOpenAIRateLimitedThenSuccess(t *testing.T) {
	s := openaitest.New(t, openaitest.RateLimited("2"), openaitest.Reply(resolved))
	var waits []time.Duration
	eng := openaiEngine(t, s, func(c *openai.Config) {
		c.MaxRetryAfter = 5 * time.Millisecond
		c.OnRetry = func(r openai.Retry) { waits = append(waits, r.RetryAfter, r.Wait) }
	})
	rep, err := Run(context.Background(), "disk is full", Options{Engine: eng, Exec: testExec()})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Equal(t, []time.Duration{2 * time.Second, 5 * time.Millisecond}, waits)
	reqs := s.Requests()
	require.Len(t, reqs, 2)
	require.Equal(t, 429, reqs[0].Status)
	require.Equal(t, reqs[0].Body, reqs[1].Body)
}

func TestOpenAIServerErrorsThenSuccess(t *testing.T) {
	boom := openaitest.Error(500, "The server had an error while processing your request.", "server_error", "")
	s := openaitest.New(t, boom, boom, boom, openaitest.Reply(resolved))
	var reasons []string
	eng := openaiEngine(t, s, func(c *openai.Config) { c.OnRetry = func(r openai.Retry) { reasons = append(reasons, r.Reason) } })
	rep, err := Run(context.Background(), "disk is full", Options{Engine: eng, Exec: testExec()})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	require.Equal(t, []string{
		"HTTP 500: The server had an error while processing your request.",
		"HTTP 500: The server had an error while processing your request.",
		"HTTP 500: The server had an error while processing your request.",
	}, reasons)
	require.Len(t, s.Requests(), 4)
}

func TestOpenAIUnreachable(t *testing.T) {
	base := openaitest.Closed(t)
	eng, err := openai.New(openai.Config{BaseURL: base, Model: "m", APIKey: apiKey})
	require.NoError(t, err)
	rep, err := Run(context.Background(), "disk is full", Options{Engine: eng, Exec: testExec()})
	require.EqualError(t, err, "engine openai: cannot reach the model endpoint "+base+"/chat/completions: connection refused — is the server running? check ai.base_url")
	require.Equal(t, "engine error", rep.EndedBy)
	require.Nil(t, rep.Resolution)
}

func TestOpenAIRoundLimitAsksForTheAnswer(t *testing.T) {
	s := openaitest.New(t, openaitest.Reply(diag("uptime")), openaitest.Reply(resolved))
	rep, err := Run(context.Background(), "slow", Options{Engine: openaiEngine(t, s), Exec: testExec(), MaxRounds: 1})
	require.NoError(t, err)
	require.Equal(t, "resolution after round limit (1) reached", rep.EndedBy)
	m := s.Requests()[1].Messages
	require.Contains(t, m[len(m)-1].Content, "The investigation's limits are reached: no more commands or traces will run.")
	require.Contains(t, m[0].Content, "- Rounds: at most 1 diagnostic replies; 1 used so far.")
}

// secrets a command prints, and what must never reach the endpoint.
var planted = []struct{ line, secret string }{
	{"DB_PASSWORD=hunter2-Sup3r", "hunter2-Sup3r"},
	{"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlX2hlcmU", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlX2hlcmU"},
	{"aws_access_key_id = AKIAQ3EGRJZSBXHN2TKX", "AKIAQ3EGRJZSBXHN2TKX"},
	{"aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY9", "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY9"},
	{"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB\n-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB"},
	{"DATABASE_URL=postgres://app:pg-s3cret-pw@db.internal:5432/app", "pg-s3cret-pw"},
	{"api_token=ghp_R8xQ2mN5vL7kJ3hT9wY4cF6bD1sA0eZuPqWo", "ghp_R8xQ2mN5vL7kJ3hT9wY4cF6bD1sA0eZuPqWo"},
	{"secret: s3cr3t-v@lue!", "s3cr3t-v@lue!"},
}

func TestOpenAISecretsNeverReachTheEndpoint(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.env")
	var content strings.Builder
	for _, p := range planted {
		content.WriteString(p.line + "\n")
	}
	content.WriteString("LOG_LEVEL=debug\n")
	require.NoError(t, os.WriteFile(f, []byte(content.String()), 0o600))
	diag := `{"response_type":"diagnostic","reasoning":"read the env","commands":[` + jsonString("cat "+f) + `,` + jsonString("grep -i pass "+f) + `]}`
	s := openaitest.New(t, openaitest.Reply(diag), openaitest.Reply(resolved))
	s.Key = apiKey
	rep, err := Run(context.Background(), "the app cannot log in to its database", Options{
		Engine: openaiEngine(t, s), Exec: testExec(), Redact: redact.String})
	require.NoError(t, err)
	require.True(t, rep.Resolved())
	// The command ran and its output flowed: the test can fail.
	out := rep.Rounds[0].Commands[0].Output
	require.Contains(t, out, "LOG_LEVEL=debug\n")
	require.Contains(t, out, "DB_PASSWORD=[REDACTED]\n")
	reqs := s.Requests()
	require.Len(t, reqs, 2)
	sent := results(t, reqs[1]).CommandResults[0].Output
	require.Contains(t, sent, "LOG_LEVEL=debug")
	for _, r := range reqs {
		for _, p := range planted {
			require.NotContains(t, string(r.Body), p.secret)
			require.NotContains(t, string(r.Body), strings.Trim(jsonString(p.secret), `"`))
			for _, m := range r.Messages {
				require.NotContains(t, m.Content, p.secret)
			}
		}
		require.NotContains(t, string(r.Body), apiKey, "the key goes in the header only")
		require.NotContains(t, r.URL, apiKey)
	}
}
