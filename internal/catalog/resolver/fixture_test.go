package resolver

import "github.com/nannyagent/nannyagent/internal/catalog"

// The entries as the catalog describes them (names, aliases, tracepoints,
// functions, keywords, filters), in registry order: specific entries
// before the generic ones. The resolver never imports the entry packages,
// so its tests own this copy.
var (
	pidToCgroup = []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup}
	withFailed  = append(append([]catalog.Filter{}, pidToCgroup...), catalog.FilterFailed)
	withLatency = append(append([]catalog.Filter{}, pidToCgroup...), catalog.FilterMinLatency)
	allButPort  = append(append([]catalog.Filter{}, withFailed...), catalog.FilterMinLatency)
)

var fixture = []catalog.Info{
	{
		Name:        "exec",
		Aliases:     []string{"execsnoop", "exec", "execve", "process_exec", "new_processes"},
		Tracepoints: []string{"syscalls:sys_enter_execve", "syscalls:sys_exit_execve", "syscalls:sys_enter_execveat", "syscalls:sys_exit_execveat", "sched:sched_process_exec"},
		Functions:   []string{"execve", "do_execve", "do_execveat_common", "bprm_execve", "__x64_sys_execve", "__arm64_sys_execve"},
		Keywords:    []string{"exec", "process start", "spawn", "fork bomb", "short-lived"},
		Filters:     withFailed,
	},
	{
		Name:        "exit",
		Aliases:     []string{"exitsnoop", "process_exit", "exits", "crashes", "coredumps"},
		Tracepoints: []string{"sched:sched_process_exit"},
		Functions:   []string{"do_exit", "do_group_exit", "exit_notify", "__x64_sys_exit_group", "__arm64_sys_exit_group"},
		Keywords:    []string{"exit", "exit code", "crash", "killed", "died", "terminated", "segfault", "core dump", "lifetime", "short-lived"},
		Filters:     withFailed,
	},
	{
		Name:        "open",
		Aliases:     []string{"opensnoop", "open", "openat", "file_open", "statsnoop"},
		Tracepoints: []string{"syscalls:sys_enter_openat", "syscalls:sys_exit_openat", "syscalls:sys_enter_openat2", "syscalls:sys_exit_openat2", "syscalls:sys_enter_open", "syscalls:sys_exit_open"},
		Functions:   []string{"do_sys_open", "do_sys_openat2", "do_filp_open", "__x64_sys_openat", "__arm64_sys_openat", "__x64_sys_open", "vfs_open"},
		Keywords:    []string{"open", "file not found", "ENOENT", "EACCES", "permission denied", "EMFILE", "too many open files", "missing file", "config file"},
		Filters:     withFailed,
	},
	{
		Name:        "syscalls",
		Aliases:     []string{"syscount", "syscalls", "syscall_count", "syscall_latency", "strace -c", "perf trace -s", "errno"},
		Tracepoints: []string{"raw_syscalls:sys_enter", "raw_syscalls:sys_exit"},
		Functions:   []string{"do_syscall_64", "el0_svc", "invoke_syscall", "syscall_trace_enter", "syscall_exit_work"},
		Keywords:    []string{"syscall", "system call", "syscall latency", "slow syscall", "errno", "EAGAIN", "EBADF", "failing syscalls", "syscall mix", "kernel time"},
		Filters:     allButPort,
	},
	{
		Name:    "fileio",
		Aliases: []string{"filetop", "rwtop", "fileslower", "fileio", "vfs_read", "vfs_write", "read_write"},
		Tracepoints: []string{"syscalls:sys_enter_read", "syscalls:sys_exit_read", "syscalls:sys_enter_write", "syscalls:sys_exit_write",
			"syscalls:sys_enter_pread64", "syscalls:sys_exit_pread64", "syscalls:sys_enter_pwrite64", "syscalls:sys_exit_pwrite64"},
		Functions: []string{"vfs_read", "vfs_write", "vfs_readv", "vfs_writev", "ksys_read", "ksys_write", "__x64_sys_read", "__arm64_sys_write", "new_sync_read"},
		Keywords:  []string{"read", "write", "file io", "file i/o", "bytes written", "bytes read", "who writes", "log file", "throughput per file"},
		Filters:   pidToCgroup,
	},
	{
		Name:        "tcpconnect",
		Aliases:     []string{"tcpconnect", "tcpconnlat", "tcpconnect.bt", "connect", "outgoing_connections"},
		Tracepoints: []string{"sock:inet_sock_set_state"},
		Functions:   []string{"tcp_v4_connect", "tcp_v6_connect", "tcp_connect", "tcp_finish_connect", "__inet_stream_connect"},
		Keywords:    []string{"connect", "outgoing connection", "connection refused", "ECONNREFUSED", "connect timeout", "ETIMEDOUT", "dial", "SYN", "handshake latency", "upstream unreachable"},
		Filters:     append(append([]catalog.Filter{}, allButPort...), catalog.FilterPort),
	},
	{
		Name:        "tcplife",
		Aliases:     []string{"tcplife", "tcplife.bt", "tcpsession", "connection_lifetime"},
		Tracepoints: []string{"sock:inet_sock_set_state"},
		Functions:   []string{"tcp_set_state", "tcp_close", "tcp_done", "tcp_time_wait", "inet_csk_destroy_sock"},
		Keywords:    []string{"connection lifetime", "connection duration", "bytes per connection", "short-lived connections", "session", "tcp close", "who talks to whom"},
		Filters:     []catalog.Filter{catalog.FilterPID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup, catalog.FilterPort},
	},
	{
		Name:        "tcpretrans",
		Aliases:     []string{"tcpretrans", "tcpretrans.bt", "retransmits", "tcp_retransmit"},
		Tracepoints: []string{"tcp:tcp_retransmit_skb"},
		Functions:   []string{"tcp_retransmit_skb", "__tcp_retransmit_skb", "tcp_retransmit_timer", "tcp_send_loss_probe"},
		Keywords:    []string{"retransmit", "retransmission", "packet loss", "tcp loss", "rto", "network slow", "lossy link"},
		Filters:     []catalog.Filter{catalog.FilterPort},
	},
	{
		Name:        "tcpreset",
		Aliases:     []string{"tcpreset", "tcprst", "tcpresets", "tcp_reset", "connection_refused", "connection_reset"},
		Tracepoints: []string{"tcp:tcp_send_reset", "tcp:tcp_receive_reset"},
		Functions:   []string{"tcp_v4_send_reset", "tcp_v6_send_reset", "tcp_send_active_reset", "tcp_reset"},
		Keywords:    []string{"reset", "rst", "connection reset by peer", "econnreset", "econnrefused", "closed port"},
		Filters:     []catalog.Filter{catalog.FilterPort},
	},
	{
		Name:        "drops",
		Aliases:     []string{"drops", "dropwatch", "tcpdrop", "kfree_skb", "skb_drop", "packet_drops", "pwru"},
		Tracepoints: []string{"skb:kfree_skb"},
		Functions:   []string{"kfree_skb", "kfree_skb_reason", "sk_skb_reason_drop", "tcp_drop", "tcp_drop_reason", "nf_hook_slow"},
		Keywords:    []string{"drop", "dropped packets", "packet loss", "drop reason", "netfilter drop", "rcvbuf", "backlog", "qdisc drop"},
		Filters:     pidToCgroup,
	},
	{
		Name:        "biolatency",
		Aliases:     []string{"biolatency", "biosnoop", "biotop", "bitesize", "iostat", "disk_latency"},
		Tracepoints: []string{"block:block_rq_issue", "block:block_rq_complete", "block:block_io_start", "block:block_bio_queue", "block:block_rq_insert"},
		Functions:   []string{"blk_mq_start_request", "blk_account_io_start", "blk_account_io_done", "blk_mq_end_request", "submit_bio"},
		Keywords:    []string{"disk", "block", "io latency", "iowait", "slow disk", "storage", "bio", "nvme", "ssd"},
		Filters:     allButPort,
	},
	{
		Name:        "runqlat",
		Aliases:     []string{"runqlat", "runqlen", "runqslower", "cpudist", "schedlat", "run_queue_latency"},
		Tracepoints: []string{"sched:sched_wakeup", "sched:sched_wakeup_new", "sched:sched_switch"},
		Functions:   []string{"ttwu_do_wakeup", "try_to_wake_up", "wake_up_new_task", "finish_task_switch", "__schedule"},
		Keywords:    []string{"run queue", "runqueue", "cpu saturation", "scheduler latency", "scheduling delay", "cpu contention", "waiting for cpu", "load average", "steal"},
		Filters:     withLatency,
	},
	{
		Name:        "oomkill",
		Aliases:     []string{"oomkill", "oomkill.bt", "oom_kill", "oom-killer", "oom"},
		Tracepoints: []string{"oom:mark_victim", "oom:oom_score_adj_update"},
		Functions:   []string{"oom_kill_process", "out_of_memory", "__oom_kill_process"},
		Keywords:    []string{"out of memory", "oom", "oom killer", "killed process", "memory cgroup oom", "anon-rss"},
		Filters:     []catalog.Filter{catalog.FilterPID, catalog.FilterComm},
	},
	{
		Name:        "reclaim",
		Aliases:     []string{"drsnoop", "vmscan", "direct_reclaim", "memcg_reclaim", "memory_pressure"},
		Tracepoints: []string{"vmscan:mm_vmscan_direct_reclaim_begin", "vmscan:mm_vmscan_direct_reclaim_end", "vmscan:mm_vmscan_memcg_reclaim_begin", "vmscan:mm_vmscan_memcg_reclaim_end"},
		Functions:   []string{"try_to_free_pages", "try_to_free_mem_cgroup_pages", "shrink_node", "__alloc_pages_direct_reclaim"},
		Keywords:    []string{"memory pressure", "direct reclaim", "reclaim", "memcg", "memory.high", "cgroup memory limit", "page cache", "allocation stall", "swap", "low memory"},
		Filters:     withLatency,
	},
	{
		Name:        "signals",
		Aliases:     []string{"killsnoop", "sigsnoop", "signals", "kill", "signal"},
		Tracepoints: []string{"signal:signal_generate"},
		Functions:   []string{"__send_signal_locked", "send_signal", "do_send_sig_info", "kill_pid_info", "group_send_sig_info", "__x64_sys_kill", "__x64_sys_tgkill", "__arm64_sys_kill"},
		Keywords:    []string{"signal", "kill", "sigkill", "sigterm", "sigsegv", "who killed", "sigchld"},
		Filters:     withFailed,
	},
	{
		Name:     "profile",
		Aliases:  []string{"profile", "perf top", "perf record", "oncpu", "cpu_profile", "flamegraph"},
		Keywords: []string{"cpu", "hot", "profile", "stack", "flame graph", "busy", "high load", "spinning", "on-cpu"},
		Filters:  pidToCgroup,
	},
	{
		Name:      "dns",
		Aliases:   []string{"gethostlatency", "dnssnoop", "dns", "getaddrinfo", "name_resolution"},
		Functions: []string{"getaddrinfo", "gethostbyname", "gethostbyname2", "gethostbyname_r", "udp_sendmsg"},
		Keywords:  []string{"dns", "resolve", "name resolution", "hostname", "nslookup", "resolv.conf", "slow dns"},
		Filters:   allButPort,
	},
	{
		Name:        "pagefaults",
		Aliases:     []string{"pagefaults", "page_faults", "faults", "stackcount-faults", "majfault"},
		Tracepoints: []string{"exceptions:page_fault_user", "exceptions:page_fault_kernel"},
		Functions:   []string{"handle_mm_fault", "do_user_addr_fault", "do_page_fault", "filemap_fault"},
		Keywords:    []string{"page fault", "major fault", "minor fault", "thrashing", "mmap", "memory access"},
		Filters:     pidToCgroup,
	},
	{
		Name:        "tracepoint",
		Aliases:     []string{"tp", "perf_stat", "tpcount", "tracepoint_count"},
		Keywords:    []string{"tracepoint", "trace event", "count events", "how often", "fires"},
		Filters:     pidToCgroup,
		NeedsTarget: true,
	},
	{
		Name:        "kfunc",
		Aliases:     []string{"funccount", "funclatency", "kprobe", "kretprobe", "fentry", "fexit"},
		Keywords:    []string{"kernel function", "function latency", "how often is", "called"},
		Filters:     withLatency,
		NeedsTarget: true,
	},
}
