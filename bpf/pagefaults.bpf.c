//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* pagefaults: major and minor page faults by process. Go opens the
 * software perf events page-faults-min and page-faults-maj on every CPU
 * with a sample period of 1 and attaches one program to each kind, so the
 * program runs once per fault, in the faulting task. The kernel raises
 * these events where it accounts a fault to the task (mm_account_fault),
 * on every architecture, and they say major or minor. The x86-only
 * exceptions:page_fault_user tracepoint fires at fault entry instead, before
 * the kernel knows which kind it is, and also for faults that fail or are
 * retried. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/dropped.bpf.h"

#define E2BIG 7 /* what a full hash map's update returns, negated */

struct fault_stats {
	__u64 minor;
	__u64 major;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32); /* tgid */
	__type(value, struct fault_stats);
} faults SEC(".maps");

static __always_inline int account(bool major)
{
	if (!filter_current())
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct fault_stats *s = bpf_map_lookup_elem(&faults, &tgid);
	if (!s) {
		struct fault_stats init = {};
		bpf_get_current_comm(init.comm, sizeof(init.comm));
		if (bpf_map_update_elem(&faults, &tgid, &init, BPF_NOEXIST) == -E2BIG) {
			count_dropped();
			return 0;
		}
		s = bpf_map_lookup_elem(&faults, &tgid);
		if (!s)
			return 0;
	}
	/* The add's result is not used: a fetching atomic needs 5.12, a plain
	 * add works from 4.x; n is read after it, racy but only a hint. */
	__u64 n;
	if (major) {
		__sync_fetch_and_add(&s->major, 1);
		n = s->major;
	} else {
		__sync_fetch_and_add(&s->minor, 1);
		n = s->minor;
	}
	/* A process that forks then execs takes its first faults under the
	 * parent's name and most of the rest under its own. Refreshing the
	 * name at every power of two costs log2(faults) copies and lands
	 * after the exec's burst of faults. */
	if ((n & (n + 1)) == 0)
		bpf_get_current_comm(s->comm, sizeof(s->comm));
	/* 0: no perf sample is written, the count is all we keep. */
	return 0;
}

SEC("perf_event")
int on_minor_fault(struct bpf_perf_event_data *ctx)
{
	return account(false);
}

SEC("perf_event")
int on_major_fault(struct bpf_perf_event_data *ctx)
{
	return account(true);
}

char LICENSE[] SEC("license") = "GPL";
