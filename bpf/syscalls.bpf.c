//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* syscalls: which system calls run, how long they take, how they fail.
 * raw_syscalls:sys_enter/sys_exit see every syscall with its bare number
 * (architecture-neutral hooks; Go names the numbers per architecture).
 * Everything is aggregated here, in per-CPU maps, so a syscall storm costs
 * no user-space work: Go reads the maps once, at Stop.
 *
 * A syscall is counted on exit, when its result and latency are known, and
 * only when its entry was seen: calls in flight at attach are left out, as
 * are calls that never return (exit, exit_group). */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/hist.bpf.h"

const volatile bool targ_failed = false;
const volatile __u64 targ_min_ns = 0;

#define MAX_SYSCALLS 1024
#define MAX_PROCS 16384

struct sc_stat {
	__u64 count;
	__u64 errors;
	__u64 total_ns;
};

struct proc_key {
	__u32 tgid;
	__u32 nr;
};

struct proc_stat {
	__u64 count;
	__u64 errors;
	__u64 total_ns;
	char comm[TASK_COMM_LEN];
};

struct err_key {
	__u32 nr;
	__u32 errno;
};

/* Enter time by thread. LRU: threads that exit inside a syscall leave
 * their entry behind, and those must not fill the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, struct sc_stat);
} by_syscall SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, struct proc_key);
	__type(value, struct proc_stat);
} by_proc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct err_key);
	__type(value, __u64);
} by_errno SEC(".maps");

/* Latency in ns by syscall number. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, struct hist);
} hists SEC(".maps");

static const struct sc_stat zero_stat = {};
static const struct proc_stat zero_proc = {};
static const struct hist zero_hist = {};
static const __u64 zero_u64 = 0;

SEC("tracepoint/raw_syscalls/sys_enter")
int tp_sys_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (!filter_current())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &tid, &ts, BPF_ANY);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int tp_sys_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__u64 *tsp = bpf_map_lookup_elem(&start, &tid);
	if (!tsp)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - *tsp;
	bpf_map_delete_elem(&start, &tid);

	/* Syscalls return -4095..-1 for errors (IS_ERR_VALUE); anything else,
	 * even a "negative" address, is a result. */
	long ret = ctx->ret;
	bool failed = ret < 0 && ret >= -4095;
	if (targ_failed && !failed)
		return 0;
	if (delta < targ_min_ns)
		return 0;
	/* A negative id means the syscall was skipped (seccomp, ptrace). */
	if (ctx->id < 0)
		return 0;
	__u32 nr = ctx->id;

	/* Per-CPU values: plain adds, no atomics. */
	struct sc_stat *s = lookup_or_init(&by_syscall, &nr, &zero_stat);
	if (s) {
		s->count++;
		s->total_ns += delta;
		if (failed)
			s->errors++;
	}

	struct proc_key pk = {.tgid = id >> 32, .nr = nr};
	struct proc_stat *p = lookup_or_init(&by_proc, &pk, &zero_proc);
	if (p) {
		if (!p->count)
			bpf_get_current_comm(p->comm, sizeof(p->comm));
		p->count++;
		p->total_ns += delta;
		if (failed)
			p->errors++;
	}

	if (failed) {
		struct err_key ek = {.nr = nr, .errno = -ret};
		__u64 *n = lookup_or_init(&by_errno, &ek, &zero_u64);
		if (n)
			*n += 1;
	}

	struct hist *h = lookup_or_init(&hists, &nr, &zero_hist);
	if (h) {
		hist_add_percpu(h, delta);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
