//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* profile: where CPU time goes. Go opens a software cpu-clock perf event
 * per online CPU at a fixed frequency and attaches this program to each;
 * every sample counts the running task's (tgid, comm, kernel stack, user
 * stack). Stacks are deduplicated by the kernel in a stack trace map, so
 * only ids and counts live in the hash: user space symbolises at the end. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"

#define MAX_STACK_DEPTH 127
#define ENOMEM 12 /* errno values; vmlinux.h has no macros */
#define EEXIST 17

/* Idle (the per-CPU swapper tasks, tgid 0) is not a user's question. */
const volatile bool include_idle = false;

struct prof_key {
	__u32 tgid;
	__s32 kstack; /* negative: no stack (errno) */
	__s32 ustack;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct prof_key);
	__type(value, __u64);
} counts SEC(".maps");

/* Slot 0: samples not counted (counts map full); slot 1: stacks lost to a
 * full stack map or a hash collision (-ENOMEM/-EEXIST). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void drop(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&drops, &slot);
	if (n)
		*n += 1;
}

static const __u64 zero;

SEC("perf_event")
int do_sample(struct bpf_perf_event_data *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!tgid && !include_idle)
		return 0;
	if (!filter_current())
		return 0;

	struct prof_key key = { .tgid = tgid };
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.kstack = bpf_get_stackid(ctx, &stacks, 0);
	key.ustack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	/* A kernel thread has no user stack (-EFAULT): not a loss. */
	if (key.kstack == -ENOMEM || key.kstack == -EEXIST ||
	    key.ustack == -ENOMEM || key.ustack == -EEXIST)
		drop(1);

	__u64 *n = lookup_or_init(&counts, &key, &zero);
	if (!n) {
		drop(0);
		return 0;
	}
	__sync_fetch_and_add(n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
