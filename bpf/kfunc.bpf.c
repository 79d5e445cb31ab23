//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* kfunc: how often is any kernel function called, by which processes, and
 * how long does it take. One program pair, compiled once; Go attaches it
 * at run time as a kprobe and a kretprobe on the function the request
 * names. The entry side keeps a timestamp per thread, the return side
 * turns it into a latency and aggregates per process in the kernel: call
 * count, total and maximum time and a log2 histogram in nanoseconds.
 *
 * A call is counted when it returns, so that every counted call has a
 * latency; calls still running at the end are reported from `starts` by Go.
 * A thread re-entering the function (recursion) overwrites its start: the
 * outer call is then not counted. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/dropped.bpf.h"
#include "common/hist.bpf.h"

#define MAX_THREADS 10240
#define MAX_PROCS 4096

const volatile __u64 targ_min_ns = 0;

struct kf_key {
	__u32 tgid;
	char comm[TASK_COMM_LEN];
};

struct kf_stats {
	__u64 calls;
	__u64 total_ns;
	__u64 max_ns;
	struct hist hist;
	__u32 __pad;
};

static const struct kf_stats zero_stats = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u32);   /* tid */
	__type(value, __u64); /* entry time, ns */
} starts SEC(".maps");

/* Shared, not per-CPU: a per-CPU copy of a 136-byte value for each
 * process would cost MAX_PROCS * 136 bytes per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, struct kf_key);
	__type(value, struct kf_stats);
} stats SEC(".maps");

SEC("kprobe")
int BPF_KPROBE(kfunc_entry)
{
	if (!filter_current())
		return 0;

	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 ts = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&starts, &tid, &ts, BPF_ANY))
		count_dropped();
	return 0;
}

SEC("kretprobe")
int BPF_KRETPROBE(kfunc_return)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	/* Only threads that passed the filters on entry have a start. */
	__u64 *start = bpf_map_lookup_elem(&starts, &tid);
	if (!start)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - *start;
	bpf_map_delete_elem(&starts, &tid);
	if (delta < targ_min_ns)
		return 0;

	struct kf_key key = {};
	key.tgid = id >> 32;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	struct kf_stats *s = lookup_or_init(&stats, &key, &zero_stats);
	if (!s) {
		count_dropped();
		return 0;
	}
	__sync_fetch_and_add(&s->calls, 1);
	__sync_fetch_and_add(&s->total_ns, delta);
	/* Racy between CPUs of one process: the maximum may miss a value
	 * that another CPU wrote at the same instant, never invents one. */
	if (delta > s->max_ns)
		s->max_ns = delta;
	hist_add(&s->hist, delta);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
