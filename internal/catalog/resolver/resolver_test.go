package resolver

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/bpftrace"
	"github.com/stretchr/testify/require"
)

type want struct {
	entry    string // exact entry, or
	fallback string // substring of the script, or
	refused  string // substring of the reason
	how      string // substring of How
	target   string // Params.Target for generic entries
	note     string // substring of one note
}

func TestResolve(t *testing.T) {
	long := strings.Repeat("a", MaxField+1)
	cases := []struct {
		req  Request
		want want
	}{
		// Classic tool names and entry names.
		{Request{Target: "execsnoop"}, want{entry: "exec", how: "alias execsnoop -> exec"}},
		{Request{Target: "EXECSNOOP"}, want{entry: "exec", how: "alias EXECSNOOP -> exec"}},
		{Request{Target: "execsnoop-bpfcc"}, want{entry: "exec", how: "alias execsnoop-bpfcc -> exec"}},
		{Request{Type: "bpftrace", Target: "/usr/sbin/opensnoop-bpfcc"}, want{entry: "open", how: "alias opensnoop-bpfcc -> open", note: "type bpftrace without a { action }"}},
		{Request{Target: "biolatency.bt"}, want{entry: "biolatency", how: "entry biolatency"}},
		{Request{Target: "tcpdrop"}, want{entry: "drops", how: "alias tcpdrop -> drops"}},
		{Request{Target: "killsnoop.py"}, want{entry: "signals", how: "alias killsnoop.py -> signals"}},
		{Request{Target: "syscount"}, want{entry: "syscalls"}},
		{Request{Target: "gethostlatency"}, want{entry: "dns"}},
		{Request{Type: "kprobe", Target: "runqlat"}, want{entry: "runqlat", how: "entry runqlat"}},
		{Request{Target: "oomkill"}, want{entry: "oomkill"}},
		{Request{Target: "profile"}, want{entry: "profile"}},
		{Request{Target: "tcp-life"}, want{entry: "tcplife", how: "alias tcp-life -> tcplife"}},
		{Request{Target: "funccount"}, want{refused: "kfunc traces what the request names"}},
		{Request{Type: "weird", Target: "execsnoop"}, want{entry: "exec", note: `unknown type "weird"`}},

		// Tracepoints.
		{Request{Type: "tracepoint", Target: "block:block_rq_complete"}, want{entry: "biolatency", how: "tracepoint block:block_rq_complete covered by biolatency"}},
		{Request{Type: "tracepoint", Target: "tracepoint:syscalls:sys_enter_openat"}, want{entry: "open", how: "tracepoint syscalls:sys_enter_openat covered by open"}},
		{Request{Target: "tracepoint:sched:sched_process_exec"}, want{entry: "exec"}},
		{Request{Target: "sched:sched_switch"}, want{entry: "runqlat"}},
		{Request{Target: "tcp:tcp_retransmit_skb"}, want{entry: "tcpretrans"}},
		{Request{Target: "skb:kfree_skb"}, want{entry: "drops"}},
		{Request{Target: "tp:sock:inet_sock_set_state"}, want{entry: "tcpconnect"}},
		{Request{Target: "oom:mark_victim"}, want{entry: "oomkill"}},
		{Request{Target: "tracepoint : vmscan : mm_vmscan_direct_reclaim_begin"}, want{entry: "reclaim"}},
		{Request{Type: "tracepoint", Target: "irq:softirq_entry"}, want{entry: "tracepoint", target: "irq:softirq_entry", how: "no entry covers tracepoint irq:softirq_entry -> generic tracepoint counter"}},
		{Request{Target: "t:irq:irq_handler_entry"}, want{entry: "tracepoint", target: "irq:irq_handler_entry"}},
		{Request{Target: "/sys/kernel/tracing/events/writeback/writeback_start/format"}, want{entry: "tracepoint", target: "writeback:writeback_start"}},
		{Request{Target: "tracepoint/xhci-hcd/xhci_urb_enqueue"}, want{entry: "tracepoint", target: "xhci-hcd:xhci_urb_enqueue"}},
		{Request{Type: "tracepoint", Target: "syscalls/sys_enter_kill"}, want{entry: "signals", how: "tracepoint syscalls:sys_enter_kill is syscall kill -> signals"}},
		{Request{Type: "tracepoint", Target: "tracepoint:syscalls:sys_enter_mmap"}, want{entry: "tracepoint", target: "syscalls:sys_enter_mmap"}},
		{Request{Target: "tracepoint:syscalls:sys_enter_*"}, want{entry: "syscalls", how: "wildcard tracepoint syscalls:sys_enter_* -> syscalls"}},
		{Request{Target: "tracepoint:sched:sched_*"}, want{fallback: "tracepoint:sched:sched_* { @[probe] = count(); }"}},
		{Request{Type: "tracepoint", Target: "block_rq_complete"}, want{entry: "biolatency", how: "tracepoint event block_rq_complete covered by biolatency"}},
		{Request{Type: "tracepoint", Target: "softirq_entry"}, want{refused: `"softirq_entry" has no category`}},
		{Request{Type: "tracepoint", Target: "sched:sched_switch;reboot"}, want{refused: "shell metacharacter ';'"}},
		{Request{Target: "tracepoint:sched:$(reboot)"}, want{refused: "shell metacharacter '$'"}},
		{Request{Target: "tracepoint:sch'ed:x"}, want{refused: `contains '\''`}},
		{Request{Target: "tracepoint:"}, want{refused: "names no probe"}},
		{Request{Target: "sched:sched*switch:x"}, want{refused: "unknown probe type"}},

		// System calls, in every architecture's spelling.
		{Request{Type: "syscall", Target: "openat"}, want{entry: "open", how: "syscall openat -> open"}},
		{Request{Type: "syscall", Target: "sys_enter_openat"}, want{entry: "open"}},
		{Request{Type: "syscall", Target: "__x64_sys_openat"}, want{entry: "open"}},
		{Request{Type: "syscall", Target: "__arm64_sys_openat"}, want{entry: "open"}},
		{Request{Type: "syscall", Target: "sys_openat"}, want{entry: "open"}},
		{Request{Type: "syscall", Target: "creat"}, want{entry: "open", how: "syscall creat -> open"}},
		{Request{Type: "syscall", Target: "execveat"}, want{entry: "exec"}},
		{Request{Type: "syscall", Target: "kill"}, want{entry: "signals", how: "syscall kill -> signals"}},
		{Request{Type: "syscall", Target: "tgkill"}, want{entry: "signals"}},
		{Request{Type: "syscall", Target: "pwrite64"}, want{entry: "fileio"}},
		{Request{Type: "syscall", Target: "connect"}, want{entry: "tcpconnect", how: "syscall connect -> tcpconnect"}},
		{Request{Type: "syscall", Target: "exit_group"}, want{entry: "exit"}},
		{Request{Type: "syscall", Target: "mmap"}, want{entry: "syscalls", how: "syscall mmap -> syscalls"}},
		{Request{Type: "syscall", Target: "nosuchcall"}, want{entry: "syscalls", note: "nosuchcall is not a known Linux system call"}},
		{Request{Target: "syscall:futex"}, want{entry: "syscalls", how: "syscall futex -> syscalls"}},
		{Request{Target: "syscalls:fsync"}, want{entry: "syscalls"}},
		{Request{Target: "openat2"}, want{entry: "open", how: "syscall openat2 -> open"}},
		{Request{Target: "sys_enter_execve"}, want{entry: "exec", how: "tracepoint syscalls:sys_enter_execve covered by exec"}},
		{Request{Type: "kprobe", Target: "__x64_sys_read"}, want{entry: "fileio", how: "function __x64_sys_read -> fileio"}},
		{Request{Type: "kprobe", Target: "kprobe:__arm64_sys_fsync"}, want{entry: "syscalls", how: "kprobe __arm64_sys_fsync is syscall fsync -> syscalls"}},
		{Request{Type: "kprobe", Target: "ksys_pread64"}, want{entry: "fileio", how: "ksys_pread64 is syscall pread64 -> fileio"}},

		// Kernel functions.
		{Request{Type: "kprobe", Target: "tcp_v4_connect"}, want{entry: "tcpconnect", how: "function tcp_v4_connect -> tcpconnect"}},
		{Request{Type: "kprobe", Target: "kprobe:tcp_v4_connect"}, want{entry: "tcpconnect", how: "kprobe tcp_v4_connect -> tcpconnect"}},
		{Request{Type: "kretprobe", Target: "kretprobe:tcp_v6_connect"}, want{entry: "tcpconnect", how: "kretprobe tcp_v6_connect -> tcpconnect"}},
		{Request{Type: "kprobe", Target: "vfs_read"}, want{entry: "fileio"}},
		{Request{Target: "do_sys_openat2"}, want{entry: "open", how: "function do_sys_openat2 -> open"}},
		{Request{Type: "kprobe", Target: "foo_bar"}, want{entry: "kfunc", target: "foo_bar", how: "kprobe foo_bar uncovered -> kfunc"}},
		{Request{Type: "kretprobe", Target: "ext4_sync_file"}, want{entry: "kfunc", target: "ext4_sync_file", how: "kretprobe ext4_sync_file uncovered -> kfunc"}},
		{Request{Target: "kprobe:tcp_sendmsg+0x10"}, want{entry: "kfunc", target: "tcp_sendmsg", note: "offset +0x10 ignored"}},
		{Request{Target: "kfunc:vmlinux:tcp_rcv_established"}, want{entry: "kfunc", target: "tcp_rcv_established"}},
		{Request{Target: "fentry:__tcp_retransmit_skb.isra.0"}, want{entry: "tcpretrans", how: "(a clone of __tcp_retransmit_skb) -> tcpretrans"}},
		{Request{Target: "kprobe:tcp_*"}, want{fallback: "kprobe:tcp_* { @[probe] = count(); }"}},
		{Request{Target: "k:oom_kill_process"}, want{entry: "oomkill"}},
		{Request{Type: "kprobe", Target: "tcp_drop"}, want{entry: "drops"}},
		{Request{Type: "kprobe", Target: "handle_mm_fault()"}, want{entry: "pagefaults"}},
		{Request{Target: "kprobe/tcp_v6_connect"}, want{entry: "tcpconnect"}},
		{Request{Target: "blk_mq_end_request"}, want{entry: "biolatency"}},
		{Request{Target: "tcp_sendmsg"}, want{entry: "kfunc", target: "tcp_sendmsg", how: "function-like name: kprobe tcp_sendmsg uncovered -> kfunc"}},
		{Request{Type: "kprobe", Target: "kprobe:9bad-name"}, want{refused: "not a kernel function name"}},

		// Scripts and other probe types.
		{Request{Type: "bpftrace", Target: "tracepoint:block:block_rq_issue { @[comm] = count(); }"}, want{fallback: "block_rq_issue", how: "bpftrace script -> fallback", note: "covered by the catalog entry biolatency"}},
		{Request{Target: "kprobe:vfs_fsync { @[comm] = count(); }"}, want{fallback: "kprobe:vfs_fsync"}},
		{Request{Type: "bpftrace", Target: "BEGIN { printf(\"hi\\n\"); } tracepoint:irq:softirq_entry { @[args->vec] = count(); }"}, want{fallback: "softirq_entry"}},
		{Request{Type: "bpftrace", Target: `BEGIN { system("reboot"); }`}, want{refused: "system()"}},
		{Request{Type: "bpftrace", Target: `kprobe:vfs_read { cat("/etc/shadow"); }`}, want{refused: "cat()"}},
		{Request{Type: "bpftrace", Target: "tracepoint:sched:sched_switch"}, want{entry: "runqlat", note: "type bpftrace without"}},
		{Request{Type: "bpftrace"}, want{refused: "empty"}},
		{Request{Target: "uprobe:/bin/bash:readline"}, want{fallback: "uprobe:/bin/bash:readline { @[comm, pid] = count(); }"}},
		{Request{Target: "usdt:/usr/lib/x86_64-linux-gnu/libc.so.6:libc:setjmp"}, want{fallback: "usdt:/usr/lib/x86_64-linux-gnu/libc.so.6:libc:setjmp {"}},
		{Request{Target: "profile:hz:99"}, want{entry: "profile", how: "profile at 99 Hz -> profile"}},
		{Request{Target: "profile:hz:999999"}, want{refused: "sampling rate"}},
		{Request{Target: "software:page-faults:100"}, want{entry: "pagefaults"}},
		{Request{Target: "hardware:cache-misses"}, want{fallback: "hardware:cache-misses:1000000 { @[comm] = count(); }"}},
		{Request{Target: "rawtracepoint:sched_switch"}, want{entry: "runqlat", how: "raw tracepoint sched_switch covered by runqlat"}},
		{Request{Target: "rawtracepoint:irq_handler_exit"}, want{fallback: "rawtracepoint:irq_handler_exit"}},
		{Request{Target: "interval:s:1"}, want{refused: "measure nothing on their own"}},

		// No target: the name, then keywords of name and description.
		{Request{Name: "execsnoop"}, want{entry: "exec", how: "no target; name: alias execsnoop -> exec"}},
		{Request{Name: "openat"}, want{entry: "open"}},
		{Request{Name: "disk_io", Description: "Trace block request completions"}, want{entry: "biolatency", how: `no target; keywords "block", "disk" -> biolatency`}},
		{Request{Description: "who is killing my nginx process with SIGKILL?"}, want{entry: "signals"}},
		{Request{Description: "Is DNS slow? measure getaddrinfo latency"}, want{entry: "dns"}},
		{Request{Name: "cpu_hotspots", Description: "find what is hot on the CPU"}, want{entry: "profile"}},
		{Request{Name: "tp", Description: "count how often it fires"}, want{refused: "match no catalog entry"}},
		{Request{}, want{refused: "has no target"}},
		{Request{Target: "tcp retransmits on eth0"}, want{entry: "tcpretrans", how: "free-text target: keywords"}},
		{Request{Target: "irq:softirq entry"}, want{refused: "neither a probe nor words"}},

		// Junk.
		{Request{Target: long}, want{refused: "more than the 4096 allowed"}},
		{Request{Name: long, Target: "execsnoop"}, want{refused: "the name is 4097 bytes"}},
		{Request{Target: "sched:sched_switch\x00"}, want{refused: "control character U+0000"}},
		{Request{Target: "`reboot`"}, want{refused: "shell metacharacter '`'"}},
		{Request{Target: "openat && reboot"}, want{refused: "shell metacharacter '&'"}},
		{Request{Type: "syscall", Target: "open at"}, want{entry: "open", how: "free-text target"}},
		{Request{Target: "xyzzy"}, want{refused: `cannot tell what "xyzzy" is`}},
		{Request{Target: "foo:bar:baz"}, want{refused: "unknown probe type"}},
		{Request{Target: "execsnoop\u202e"}, want{refused: "has characters no probe or tool name has"}},
	}
	require.GreaterOrEqual(t, len(cases), 60)
	r := New(fixture)
	for _, tc := range cases {
		res := r.Resolve(tc.req)
		label := tc.req.Type + " " + truncate(tc.req.Target, 60) + " " + tc.req.Name
		checkInvariants(t, res)
		w := tc.want
		switch {
		case w.entry != "":
			require.Equal(t, KindEntry, res.Kind(), "%s: %+v", label, res)
			require.Equal(t, w.entry, res.Entry, "%s: %s", label, res.How)
			require.Equal(t, w.target, res.Params.Target, label)
		case w.fallback != "":
			require.Equal(t, KindFallback, res.Kind(), "%s: %+v", label, res)
			require.Contains(t, res.Fallback, w.fallback, label)
		default:
			require.Equal(t, KindRefused, res.Kind(), "%s: %+v", label, res)
			require.Contains(t, res.Refused, w.refused, label)
		}
		require.Contains(t, res.How, w.how, label)
		if w.note != "" {
			require.Contains(t, strings.Join(res.Notes, "\n"), w.note, label)
		}
	}
}

// checkInvariants holds for every resolution, whatever the request.
func checkInvariants(t testing.TB, res Resolution) {
	t.Helper()
	set := 0
	for _, s := range []string{res.Entry, res.Fallback, res.Refused} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		t.Fatalf("exactly one of entry/fallback/refused must be set: %+v", res)
	}
	if res.Params.Duration <= 0 || res.Params.Duration > catalog.MaxDuration {
		t.Fatalf("duration %s out of bounds", res.Params.Duration)
	}
	if res.How == "" {
		t.Fatalf("no How: %+v", res)
	}
	switch res.Kind() {
	case KindEntry:
		var info *catalog.Info
		for i := range fixture {
			if fixture[i].Name == res.Entry {
				info = &fixture[i]
			}
		}
		if info == nil {
			t.Fatalf("entry %q is not offered", res.Entry)
		}
		if err := res.Params.Validate(*info); err != nil {
			t.Fatalf("params do not validate for %s: %v", res.Entry, err)
		}
	case KindFallback:
		if err := bpftrace.CheckScript(res.Fallback); err != nil {
			t.Fatalf("fallback script is refused: %v\n%s", err, res.Fallback)
		}
	}
}

func TestDuration(t *testing.T) {
	r := New(fixture)
	for _, tc := range []struct {
		json string
		want time.Duration
		note string
	}{
		{`{"target":"execsnoop"}`, 10 * time.Second, ""},
		{`{"target":"execsnoop","duration":0}`, 10 * time.Second, ""},
		{`{"target":"execsnoop","duration":5}`, 5 * time.Second, ""},
		{`{"target":"execsnoop","duration":2.5}`, 2500 * time.Millisecond, ""},
		{`{"target":"execsnoop","duration":"30"}`, 30 * time.Second, ""},
		{`{"target":"execsnoop","duration":"2m"}`, 2 * time.Minute, ""},
		{`{"target":"execsnoop","duration":500}`, catalog.MaxDuration, "clamped to the maximum 2m0s"},
		{`{"target":"execsnoop","duration":1e300}`, catalog.MaxDuration, "clamped"},
		{`{"target":"execsnoop","duration":"ten seconds"}`, 10 * time.Second, `duration "ten seconds" is unreadable`},
		{`{"target":"execsnoop","duration":-3}`, 10 * time.Second, `duration "-3" is unreadable`},
		{`{"target":"execsnoop","duration":[1]}`, 10 * time.Second, "unreadable"},
		{`{"target":"execsnoop","duration":null}`, 10 * time.Second, ""},
	} {
		var q Request
		require.NoError(t, json.Unmarshal([]byte(tc.json), &q), tc.json)
		res := r.Resolve(q)
		require.Equal(t, tc.want, res.Params.Duration, tc.json)
		if tc.note == "" {
			require.Empty(t, res.Notes, tc.json)
		} else {
			require.Contains(t, strings.Join(res.Notes, "\n"), tc.note, tc.json)
		}
	}
}

func TestFilters(t *testing.T) {
	r := New(fixture)
	resolve := func(js string) Resolution {
		t.Helper()
		var q Request
		require.NoError(t, json.Unmarshal([]byte(js), &q), js)
		res := r.Resolve(q)
		checkInvariants(t, res)
		return res
	}
	u := func(v uint32) *uint32 { return &v }

	res := resolve(`{"target":"execsnoop","filters":{"pid":"1234","comm":"nginx","port":80,"uid":0}}`)
	require.Equal(t, "exec", res.Entry)
	require.Equal(t, uint32(1234), res.Params.PID)
	require.Equal(t, "nginx", res.Params.Comm)
	require.Equal(t, u(0), res.Params.UID)
	require.Zero(t, res.Params.Port)
	require.Equal(t, []string{"exec does not support the port filter (it supports: pid, tid, uid, comm, cgroup, failed); results are not narrowed by port=80; filter dropped"}, res.Notes)

	res = resolve(`{"type":"tracepoint","target":"block:block_rq_complete","filters":{"min_latency":10,"failed":"yes","tid":42.0}}`)
	require.Equal(t, 10*time.Millisecond, res.Params.MinLatency)
	require.True(t, res.Params.FailedOnly)
	require.Equal(t, uint32(42), res.Params.TID)
	require.Empty(t, res.Notes)

	for js, d := range map[string]time.Duration{
		`{"min_latency":"500us"}`: 500 * time.Microsecond,
		`{"min_latency_us":250}`:  250 * time.Microsecond,
		`{"latency":"1.5s"}`:      1500 * time.Millisecond,
		`{"min_latency_ms":"2"}`:  2 * time.Millisecond,
	} {
		res = resolve(`{"target":"runqlat","filters":` + js + `}`)
		require.Equal(t, d, res.Params.MinLatency, js)
	}

	res = resolve(`{"target":"opensnoop","filters":{"uid":"root","comm":"postgres: walwriter process","failed":true}}`)
	require.Equal(t, u(0), res.Params.UID)
	require.Equal(t, "postgres: walwr", res.Params.Comm)
	require.True(t, res.Params.FailedOnly)
	require.Contains(t, res.Notes[0], "cut to the kernel's 15 characters")

	res = resolve(`{"target":"tcpreset","filters":{"port":"443","pid":-5,"dport":70000,"color":"red"}}`)
	require.Equal(t, uint16(443), res.Params.Port)
	require.Len(t, res.Notes, 3)
	require.Contains(t, res.Notes[0], `"color" is not a filter`)
	require.Contains(t, res.Notes[1], `dport="70000": larger than 65535`)
	require.Contains(t, res.Notes[2], "tcpreset does not support the pid filter")

	res = resolve(`{"target":"execsnoop","filters":{"pid":0,"failed":false,"cgroup":"../../etc"}}`)
	require.Zero(t, res.Params.PID)
	require.False(t, res.Params.FailedOnly)
	require.Empty(t, res.Params.Cgroup)
	require.Len(t, res.Notes, 3)
	require.Contains(t, res.Notes[0], "cgroup")
	require.Contains(t, res.Notes[0], "not under /sys/fs/cgroup")

	if _, err := catalog.CgroupID("/sys/fs/cgroup"); err == nil {
		res = resolve(`{"target":"execsnoop","filters":{"cgroup":"/sys/fs/cgroup"}}`)
		require.Equal(t, "/sys/fs/cgroup", res.Params.Cgroup)
		require.Empty(t, res.Notes)
	}

	res = resolve(`{"target":"execsnoop","filters":"pid=42 comm=bash"}`)
	require.Equal(t, uint32(42), res.Params.PID)
	require.Equal(t, "bash", res.Params.Comm)

	res = resolve(`{"target":"execsnoop","filters":[1,2]}`)
	require.Equal(t, "exec", res.Entry)
	require.Contains(t, res.Notes[0], `"(unreadable filters)" is not a filter`)

	res = resolve(`{"target":"profile:hz:99","filters":{"pid":7}}`)
	require.Equal(t, 99, res.Params.Frequency)
	require.Equal(t, uint32(7), res.Params.PID)
	res = resolve(`{"target":"profile","filters":{"frequency":"49"}}`)
	require.Equal(t, 49, res.Params.Frequency)
	res = resolve(`{"target":"execsnoop","filters":{"hz":49}}`)
	require.Zero(t, res.Params.Frequency)
	require.Contains(t, res.Notes[0], "applies to profile only")

	res = resolve(`{"type":"bpftrace","target":"kprobe:vfs_fsync { @ = count(); }","filters":{"pid":1}}`)
	require.Equal(t, KindFallback, res.Kind())
	require.Contains(t, res.Notes[0], "filters are not applied to bpftrace scripts")

	res = resolve(`{"type":"kprobe","target":"foo_bar","filters":{"min_latency":"5ms","port":22}}`)
	require.Equal(t, "foo_bar", res.Params.Target)
	require.Equal(t, 5*time.Millisecond, res.Params.MinLatency)
	require.Contains(t, res.Notes[0], "kfunc does not support the port filter")
}

// Generic entries the caller does not offer (not supported on this
// kernel) turn into bpftrace count scripts.
func TestWithoutGenericEntries(t *testing.T) {
	var specific []catalog.Info
	for _, e := range fixture {
		if !e.NeedsTarget && e.Name != "syscalls" {
			specific = append(specific, e)
		}
	}
	r := New(specific)
	for _, tc := range []struct {
		req    Request
		script string
	}{
		{Request{Type: "tracepoint", Target: "irq:softirq_entry"}, "tracepoint:irq:softirq_entry { @[comm] = count(); }"},
		{Request{Type: "kprobe", Target: "foo_bar"}, "kprobe:foo_bar { @[comm] = count(); }"},
		{Request{Type: "kretprobe", Target: "foo_bar"}, "kretprobe:foo_bar { @[comm, (int64)retval] = count(); }"},
		{Request{Type: "syscall", Target: "mmap"}, "tracepoint:syscalls:sys_enter_mmap { @[comm] = count(); }"},
	} {
		res := r.Resolve(tc.req)
		require.Equal(t, KindFallback, res.Kind(), "%+v", res)
		require.Equal(t, tc.script, res.Fallback)
		require.NoError(t, bpftrace.CheckScript(res.Fallback))
	}
	// Without the open entry, openat is just a system call.
	res := New(fixture[3:4]).Resolve(Request{Type: "syscall", Target: "openat"})
	require.Equal(t, "syscalls", res.Entry)
}

// The example of NANNYAPI.md §2.5 and a batch as models write them.
func TestResolveAllReport(t *testing.T) {
	const reply = `{"response_type":"diagnostic","ebpf_programs":[
	 {"name":"disk_io","type":"tracepoint","target":"block:block_rq_complete","duration":5,"filters":{"comm":"postgres"},"description":"Trace block request completions"},
	 {"name":"opens","type":"syscall","target":"openat","duration":"15","filters":{"failed":1}},
	 {"name":"conn","type":"kprobe","target":"tcp_v4_connect","filters":{"port":5432}},
	 {"name":"softirq","type":"tracepoint","target":"irq:softirq_entry","duration":300},
	 {"name":"custom","type":"bpftrace","target":"kprobe:vfs_fsync { @[comm] = count(); }"},
	 {"name":"evil","type":"bpftrace","target":"BEGIN { system(\"reboot\") }"}
	]}`
	var msg struct {
		Programs []Request `json:"ebpf_programs"`
	}
	require.NoError(t, json.Unmarshal([]byte(reply), &msg))
	rs := New(fixture).ResolveAll(msg.Programs)
	require.Len(t, rs, 6)
	for i, r := range rs {
		require.Equal(t, i, r.Index)
		checkInvariants(t, r)
	}
	require.Equal(t, "postgres", rs[0].Params.Comm)
	require.Equal(t, 15*time.Second, rs[1].Params.Duration)
	require.Equal(t, uint16(5432), rs[2].Params.Port)
	require.Equal(t, strings.Join([]string{
		"#1 disk_io: tracepoint block:block_rq_complete covered by biolatency (duration 5s, comm=postgres)",
		"#2 opens: syscall openat -> open (duration 15s, failed=true)",
		"#3 conn: function tcp_v4_connect -> tcpconnect (duration 10s, port=5432)",
		"#4 softirq: no entry covers tracepoint irq:softirq_entry -> generic tracepoint counter (duration 2m0s); duration 5m0s clamped to the maximum 2m0s",
		"#5 custom: bpftrace script -> fallback (duration 10s)",
		"#6 evil: bpftrace script -> refused (refused: the bpftrace script calls system(), which runs commands on the host (bpftrace needs --unsafe for it, which the agent never passes) (at \"system(\\\"reboot\\\") }\"))",
	}, "\n")+"\n", Report(rs))

	// A Request survives a JSON round trip.
	b, err := json.Marshal(msg.Programs[1])
	require.NoError(t, err)
	var back Request
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, msg.Programs[1], back)
}

func TestFixtureCoversEveryEntry(t *testing.T) {
	names := map[string]bool{}
	for _, e := range fixture {
		names[e.Name] = true
	}
	for _, n := range strings.Fields("exec exit open syscalls fileio tcpconnect tcplife tcpretrans tcpreset drops biolatency runqlat oomkill reclaim signals profile dns pagefaults tracepoint kfunc") {
		require.True(t, names[n], n)
	}
	require.Len(t, fixture, 20)
}

func FuzzResolve(f *testing.F) {
	f.Add("disk_io", "tracepoint", "block:block_rq_complete", "Trace block request completions", 5.0, `{"comm":"postgres"}`)
	f.Add("", "syscall", "__arm64_sys_openat", "", 0.0, `{"pid":"12","failed":true}`)
	f.Add("", "kprobe", "kprobe:foo_bar+0x4", "", 1e9, `{"min_latency":"5ms"}`)
	f.Add("x", "bpftrace", "tracepoint:sched:sched_switch { @[comm] = count(); }", "", -1.0, `[1]`)
	f.Add("", "", "/sys/kernel/debug/tracing/events/sched/sched_switch/format", "", 3.5, `"pid=1"`)
	f.Add("", "", "software:faults", "who faults", 7.0, `{"port":99999}`)
	f.Add("cpu", "", "", "what is hot", 0.0, `null`)
	f.Add("", "", "uprobe:/bin/bash:readline", "", 1.0, `{"cgroup":"/sys/fs/cgroup"}`)
	r := New(fixture)
	f.Fuzz(func(t *testing.T, name, typ, target, desc string, dur float64, filters string) {
		js, err := json.Marshal(map[string]any{"name": name, "type": typ, "target": target, "description": desc})
		if err != nil {
			return
		}
		js = append(js[:len(js)-1], []byte(`,"duration":`+jsonNumber(dur)+`,"filters":`+filters+`}`)...)
		var q Request
		if json.Unmarshal(js, &q) != nil {
			// Filters that are not JSON at all: the reply itself is
			// broken, which is the caller's error, not ours.
			q = Request{Name: name, Type: typ, Target: target, Description: desc, Duration: Seconds(dur)}
		}
		res := r.Resolve(q)
		checkInvariants(t, res)
		_ = res.String()
	})
}

func jsonNumber(f float64) string {
	b, err := json.Marshal(f)
	if err != nil {
		return "0"
	}
	return string(b)
}
