package openai_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/brain/openai"
	"github.com/nannyagent/nannyagent/internal/catalog/registry"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/catalog/runner"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/stretchr/testify/require"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func promptInv() *brain.Investigation {
	return &brain.Investigation{
		Issue: "x",
		Facts: &sysinfo.Facts{Catalog: []sysinfo.CatalogEntry{
			{Name: "exec", Answers: "what is being started", Supported: true},
			{Name: "biolatency", Answers: "block I/O latency", Supported: true},
			{Name: "kfunc", Answers: "kernel functions", Supported: false, Reason: "kprobes are not available on this kernel"},
			{Name: "dns", Supported: false},
		}},
		Rounds: make([]brain.Round, 3),
		Limits: brain.Limits{MaxRounds: 8, Deadline: now.Add(4*time.Minute + 31*time.Second), RoundBudget: 90 * time.Second, ContextBytes: 16 << 10},
	}
}

// example returns the JSON object in p that starts with start.
func example(t *testing.T, p, start string) string {
	t.Helper()
	i := strings.Index(p, start)
	require.GreaterOrEqual(t, i, 0, "prompt lacks %s", start)
	var v json.RawMessage
	require.NoError(t, json.NewDecoder(strings.NewReader(p[i:])).Decode(&v))
	return string(v)
}

func TestPromptStatesTheProtocol(t *testing.T) {
	p := openai.SystemPrompt(promptInv(), now)
	for _, want := range []string{
		"You are nannyagent, a Linux diagnostics agent",
		"Reply with one JSON object only",
		`"response_type" is "diagnostic" or "resolution"`,
		`confidence is exactly "High", "Medium" or "Low"`,
		"at most 16 per reply", "at most 8 per reply",
		`A command with "refused": true did not run: its reason names the rule`,
	} {
		require.Contains(t, p, want)
	}
	// The examples it shows are replies the agent accepts, with every
	// documented field.
	d, err := protocol.Parse(example(t, p, `{"response_type":"diagnostic"`))
	require.NoError(t, err)
	require.Equal(t, protocol.Diagnostic, d.Type)
	require.Equal(t, []string{"df -h /var", "df -i /var"}, d.Commands)
	require.Len(t, d.Traces, 1)
	require.Equal(t, resolver.Filters{"failed": "true"}, d.Traces[0].Filters)
	require.Equal(t, 10*time.Second, d.Traces[0].Duration.D)
	require.NotEmpty(t, d.Traces[0].Description)
	r, err := protocol.Parse(example(t, p, `{"response_type":"resolution"`))
	require.NoError(t, err)
	require.Equal(t, "High", r.Confidence)
	require.NotEmpty(t, r.Evidence)
	require.Len(t, r.Findings, 1)
	require.Equal(t, "critical", r.Findings[0].Severity)
	require.Empty(t, r.Notes, "the example needs no correction")
}

func TestPromptCommandPolicyMatchesSafeexec(t *testing.T) {
	p := openai.SystemPrompt(promptInv(), now)
	list := regexp.MustCompile(`Every program must be on this read-only list: ([^\n]*)\.\n`).FindStringSubmatch(p)
	require.NotNil(t, list)
	require.Equal(t, safeexec.Programs(), strings.Split(list[1], ", "))
	require.Contains(t, safeexec.Programs(), "df")
	require.Contains(t, safeexec.Programs(), "journalctl")
	for _, bad := range []string{"rm", "bash", "sh", "sudo", "xargs", "env", "tee", "dd", "kill", "reboot"} {
		require.NotContains(t, safeexec.Programs(), bad)
	}
	// Every command the prompt shows as allowed is, and every one it
	// shows as refused is.
	for _, ok := range []string{
		"df -h /var", "df -i /var", "systemctl status nginx --no-pager",
		"systemctl show nginx -p Result,NRestarts,ExecMainStatus", "journalctl -u nginx -n 100 --no-pager",
		"sysctl vm.swappiness", "journalctl -n 200 --no-pager", "dmesg | tail -n 100", "ps aux --sort=-%cpu | head -n 20",
		"ls /var 2>/dev/null", "ls /var >/dev/null 2>&1",
	} {
		_, err := safeexec.Validate(ok)
		require.NoError(t, err, ok)
	}
	for _, bad := range []string{
		"find /tmp -delete", "sed -i s/a/b/ /etc/hosts", "sysctl -w vm.swappiness=1", "systemctl restart nginx",
		"ip link set eth0 down", "dmesg -c", "cat $HOME/x", "cat $(echo /etc/passwd)", "(ls)", "ls {a,b}", "ls ~",
		"cat <<EOF\nx\nEOF", "ls > /tmp/out", "sleep 1 &", "sudo ls", "bash -c ls", "sh -c ls",
		"xargs ls", "env ls", "timeout 1 ls", "nohup ls",
	} {
		_, err := safeexec.Validate(bad)
		require.Error(t, err, bad)
	}
}

func TestPromptTraceExamplesResolve(t *testing.T) {
	p := openai.SystemPrompt(&brain.Investigation{}, now)
	res := runner.NewResolver()
	for _, ex := range []struct{ json, entry string }{
		{`{"name":"biolatency","duration":10}`, "biolatency"},
		{`{"name":"execsnoop"}`, "exec"},
		{`{"name":"opensnoop"}`, "open"},
		{`{"name":"tcpretrans"}`, "tcpretrans"},
		{`{"type":"tracepoint","target":"block:block_rq_complete"}`, "biolatency"},
		{`{"type":"kprobe","target":"tcp_v4_connect"}`, "tcpconnect"},
		{`{"type":"syscall","target":"openat"}`, "open"},
		{`{"type":"tracepoint","target":"sched:sched_switch"}`, "runqlat"},
		{`{"type":"kprobe","target":"vfs_fsync"}`, "kfunc"},
		{`{"type":"bpftrace","target":"tracepoint:syscalls:sys_enter_fsync { @[comm] = count(); }"}`, ""},
	} {
		require.Contains(t, p, ex.json)
		var req resolver.Request
		require.NoError(t, json.Unmarshal([]byte(ex.json), &req))
		got := res.Resolve(req)
		require.NotEqual(t, resolver.KindRefused, got.Kind(), "%s: %s", ex.json, got.Refused)
		require.Equal(t, ex.entry, got.Entry, ex.json)
	}
}

func TestPromptListsTheEntriesThatWorkHere(t *testing.T) {
	p := openai.SystemPrompt(promptInv(), now)
	require.Contains(t, p, "Catalog entries that work on this kernel:\n- exec: what is being started. Reports pid, ppid")
	require.Contains(t, p, "Also named: execsnoop, execve, process_exec, new_processes. System calls: execve, execveat. Tracepoints: sched:sched_process_exec. Filters: pid, tid, uid, comm, cgroup, failed.\n")
	require.Contains(t, p, "\n- biolatency: how slow is block I/O per disk, and which processes do it.")
	require.Contains(t, p, "Filters: pid, tid, uid, comm, cgroup, failed, min_latency.\n")
	require.Contains(t, p, "Entries that do not work on this kernel (do not ask for them):\n- dns: not supported\n- kfunc: kprobes are not available on this kernel\n")
	// Entries the facts do not list are left out.
	require.NotContains(t, p, "\n- runqlat:")
	require.NotContains(t, p, "\n- kfunc: how often")

	// Without facts every entry is listed, and the prompt says support
	// was not checked.
	p = openai.SystemPrompt(&brain.Investigation{}, now)
	require.Contains(t, p, "which of them work on this kernel was not checked")
	for _, name := range registry.Names() {
		require.Contains(t, p, "\n- "+name+": ", name)
	}
	require.Contains(t, p, `Target: required: the kernel function, e.g. {"type":"kprobe","target":"vfs_fsync"}.`)
	require.NotContains(t, p, "do not work on this kernel")

	// Nothing works: commands only.
	inv := promptInv()
	inv.Facts.Catalog = []sysinfo.CatalogEntry{{Name: "exec", Reason: "no BTF"}}
	p = openai.SystemPrompt(inv, now)
	require.Contains(t, p, "No catalog entry works on this kernel: use commands only.")
	require.Contains(t, p, "- exec: no BTF\n")
}

func TestPromptLimits(t *testing.T) {
	p := openai.SystemPrompt(promptInv(), now)
	require.Contains(t, p, "- Rounds: at most 8 diagnostic replies; 3 used so far.\n")
	require.Contains(t, p, "- Time: about 4 min 31 s left; the investigation ends then whatever happens.\n")
	require.Contains(t, p, "- Each round's commands and traces together get at most 1 min 30 s;")
	require.Contains(t, p, "- At most 16 commands and 8 traces per reply.\n")
	require.Contains(t, p, "- One round's results are cut to about 16 KiB")
	// The limits come last: the rest is the same from round to round.
	later := promptInv()
	later.Rounds = make([]brain.Round, 5)
	q := openai.SystemPrompt(later, now.Add(time.Minute))
	cut := strings.Index(p, "# Limits")
	require.Equal(t, p[:cut], q[:strings.Index(q, "# Limits")])
	require.Contains(t, q, "5 used so far")
	require.Contains(t, q, "about 3 min 31 s left")
	// Past the deadline.
	require.Contains(t, openai.SystemPrompt(promptInv(), now.Add(time.Hour)), "about 0 s left")
	// No deadline, no budget: no made-up figures.
	p = openai.SystemPrompt(&brain.Investigation{}, now)
	require.NotContains(t, p, "- Time:")
	require.Contains(t, p, "at most the round budget;")
	require.Contains(t, p, "about 32 KiB")
}

func TestMessagesAreSystemThenConversation(t *testing.T) {
	inv := promptInv()
	inv.Rounds = nil
	inv.ParseFailure = &brain.ParseFailure{Reply: "nope", Err: "reply holds no JSON object"}
	msgs := openai.Messages(inv, now)
	conv := brain.Conversation(inv)
	require.Len(t, msgs, len(conv)+1)
	require.Equal(t, brain.Message{Role: "system", Content: openai.SystemPrompt(inv, now)}, msgs[0])
	require.Equal(t, conv, msgs[1:])
}
