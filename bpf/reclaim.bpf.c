//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* reclaim: which processes stall in memory reclaim, and for how long.
 * A task that allocates when memory is short reclaims pages itself before
 * it can go on: globally (direct reclaim: the machine is short) or in its
 * memory cgroup (memcg reclaim: the cgroup is at memory.high/max or its
 * v1 limit). Both are bracketed by stable vmscan tracepoints; begin and
 * end run in the same task and do not nest, so they pair by thread id.
 * Latency histograms (us) overall and per (process, kind). */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/counters.bpf.h"
#include "common/hist.bpf.h"

const volatile __u64 targ_min_ns = 0;

#define KIND_DIRECT 0
#define KIND_MEMCG 1
#define KINDS 2

/* counters slots */
#define C_BEGIN 0      /* + kind: begins seen */
#define C_PAIRS 2      /* + kind: begins matched by their end */
#define C_UNMATCHED 4  /* ends without a begin (in flight at attach) */
#define C_SLOTS 5

struct reclaim_start {
	__u64 ts;
	__u32 kind;
	__u32 pad;
};

struct proc_key {
	__u32 tgid;
	__u32 kind;
};

struct proc_stat {
	__u64 count;
	__u64 total_ns;
	__u64 max_ns;
	__u64 nr_reclaimed;
	struct hist hist;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct reclaim_start);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct proc_key);
	__type(value, struct proc_stat);
} by_proc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KINDS);
	__type(key, __u32);
	__type(value, struct hist);
} hist_all SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int on_begin(__u32 kind)
{
	if (!filter_current())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct reclaim_start s = {.ts = bpf_ktime_get_ns(), .kind = kind};
	if (bpf_map_update_elem(&start, &tid, &s, BPF_ANY))
		return 0;
	counter_inc(&counters, C_BEGIN + kind);
	return 0;
}

static __always_inline int on_end(__u32 kind, __u64 nr_reclaimed)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct reclaim_start *s = bpf_map_lookup_elem(&start, &tid);
	if (!s || s->kind != kind) {
		/* Only count ends of tasks the filters let through. */
		if (filter_current())
			counter_inc(&counters, C_UNMATCHED);
		return 0;
	}
	__u64 delta = bpf_ktime_get_ns() - s->ts;
	bpf_map_delete_elem(&start, &tid);
	counter_inc(&counters, C_PAIRS + kind);
	if (delta < targ_min_ns)
		return 0;
	__u64 us = delta / 1000;

	struct hist *all = bpf_map_lookup_elem(&hist_all, &kind);
	if (all) {
		hist_add_percpu(all, us);
	}

	struct proc_key k = {.tgid = id >> 32, .kind = kind};
	struct proc_stat *p = bpf_map_lookup_elem(&by_proc, &k);
	if (!p) {
		struct proc_stat init = {};
		bpf_get_current_comm(init.comm, sizeof(init.comm));
		bpf_map_update_elem(&by_proc, &k, &init, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&by_proc, &k);
		if (!p)
			return 0;
	}
	__sync_fetch_and_add(&p->count, 1);
	__sync_fetch_and_add(&p->total_ns, delta);
	__sync_fetch_and_add(&p->nr_reclaimed, nr_reclaimed);
	/* Racy max: two CPUs of one process may both win; the larger one
	 * usually stays, and max is a hint next to the histogram. */
	if (delta > p->max_ns)
		p->max_ns = delta;
	hist_add(&p->hist, us);
	return 0;
}

SEC("tracepoint/vmscan/mm_vmscan_direct_reclaim_begin")
int direct_begin(struct trace_event_raw_mm_vmscan_direct_reclaim_begin_template *ctx)
{
	return on_begin(KIND_DIRECT);
}

SEC("tracepoint/vmscan/mm_vmscan_direct_reclaim_end")
int direct_end(struct trace_event_raw_mm_vmscan_direct_reclaim_end_template *ctx)
{
	return on_end(KIND_DIRECT, ctx->nr_reclaimed);
}

SEC("tracepoint/vmscan/mm_vmscan_memcg_reclaim_begin")
int memcg_begin(struct trace_event_raw_mm_vmscan_direct_reclaim_begin_template *ctx)
{
	return on_begin(KIND_MEMCG);
}

SEC("tracepoint/vmscan/mm_vmscan_memcg_reclaim_end")
int memcg_end(struct trace_event_raw_mm_vmscan_direct_reclaim_end_template *ctx)
{
	return on_end(KIND_MEMCG, ctx->nr_reclaimed);
}

char LICENSE[] SEC("license") = "GPL";
