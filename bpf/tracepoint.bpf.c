//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* tracepoint: how often does any tracepoint fire, and in which processes.
 * One program, compiled once; Go attaches it at run time to whatever
 * tracepoint the request names, so it reads nothing of the tracepoint's
 * own record (its layout differs per tracepoint) and only counts hits per
 * process in the kernel. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/dropped.bpf.h"

#define MAX_PROCS 8192

struct tp_key {
	__u32 tgid;
	char comm[TASK_COMM_LEN];
};

/* Per-CPU: the hot path adds without atomics; Go sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, struct tp_key);
	__type(value, __u64);
} counts SEC(".maps");

static const __u64 zero_count = 0;

SEC("tracepoint")
int tp_count(void *ctx)
{
	if (!filter_current())
		return 0;

	struct tp_key key = {};
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(key.comm, sizeof(key.comm));

	__u64 *n = lookup_or_init(&counts, &key, &zero_count);
	if (!n) {
		count_dropped();
		return 0;
	}
	*n += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
