//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* exit: what ended, and how. sched_process_exit fires in do_exit() for every
 * thread; a process has ended when its last thread goes (group_dead), so only
 * that exit counts. The kernel counts exits by (comm, exit status) and a
 * lifetime histogram; only abnormal exits (non-zero code or a fatal signal)
 * stream as individual events, to name the processes behind the counts.
 *
 * The same body runs from tp_btf, raw_tp or the classic tracepoint; Go picks
 * the one this kernel supports before load. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/dropped.bpf.h"
#include "common/events.bpf.h"
#include "common/hist.bpf.h"

const volatile bool targ_failed = false;
/* Recent kernels (6.18 here, not 6.12) pass group_dead to the tracepoint;
 * Go sets this from the kernel's BTF for tp_btf/raw_tp. Without it,
 * signal->live reaching 0 stands in; it can read 0 in several threads of a
 * group that exit together (exit_group), so the first of them to claim the
 * process in `ended` counts it and the others do not. */
const volatile bool has_group_dead_arg = false;

/* A process, uniquely: pids are reused, (tgid, leader start time) is not. */
struct proc_id {
	__u64 start_time;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct proc_id);
	__type(value, __u8);
} ended SEC(".maps");

struct exit_key {
	char comm[TASK_COMM_LEN];
	__u32 status; /* the wait(2) status: code << 8, or the signal | 0x80 on core */
};

struct exit_val {
	__u64 count;
	__u64 lifetime_ns; /* summed, for the mean */
};

struct exit_event {
	__u64 lifetime_ns;
	__s32 pid;
	__s32 tid;  /* the last thread, which ended the process */
	__s32 ppid;
	__u32 uid;
	__u32 status;
	__u32 pad;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct exit_key);
	__type(value, struct exit_val);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} lifetime_us SEC(".maps");

/* The 6.16+ tracepoint record; absent members read as missing via CO-RE. */
struct trace_event_raw_sched_process_exit___gd {
	bool group_dead;
} __attribute__((preserve_access_index));

static const struct exit_val zero_val = {};
/* Keeps exit_event in the BTF for bpf2go: it only lives on the stack. */
const struct exit_event *unused_exit_event __attribute__((unused));

/* filter_current, with the process's comm instead of the thread's. */
static __always_inline bool filter_exit(const char *comm)
{
	return filter_current_ids() && (!filter_comm || comm_matches(comm));
}

static __always_inline int on_exit(void *ctx, struct task_struct *task, int group_dead)
{
	if (group_dead < 0) {
		if (BPF_CORE_READ(task, signal, live.counter) != 0)
			return 0;
		struct proc_id id = {
			.start_time = BPF_CORE_READ(task, group_leader, start_time),
			.tgid = BPF_CORE_READ(task, tgid),
		};
		__u8 one = 1;
		if (bpf_map_update_elem(&ended, &id, &one, BPF_NOEXIST))
			return 0; /* another thread of the group counted it */
		group_dead = 1;
	}
	if (!group_dead)
		return 0;

	/* The process is named by its leader: the last thread out may carry
	 * another comm (thread names), so the comm filter looks at the leader. */
	struct exit_key key = {};
	BPF_CORE_READ_STR_INTO(&key.comm, task, group_leader, comm);
	if (!filter_exit(key.comm))
		return 0;

	__u32 status = BPF_CORE_READ(task, exit_code);
	if (targ_failed && status == 0)
		return 0;
	key.status = status;

	__u64 start = BPF_CORE_READ(task, group_leader, start_time);
	__u64 now = bpf_ktime_get_ns();
	__u64 life = now > start ? now - start : 0;

	struct exit_val *v = lookup_or_init(&counts, &key, &zero_val);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		__sync_fetch_and_add(&v->lifetime_ns, life);
	} else {
		count_dropped();
	}
	__u32 zero = 0;
	struct hist *h = bpf_map_lookup_elem(&lifetime_us, &zero);
	if (h)
		hist_add(h, life / 1000);

	if (status == 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct exit_event e = {
		.lifetime_ns = life,
		.pid = id >> 32,
		.tid = (__u32)id,
		.ppid = BPF_CORE_READ(task, real_parent, tgid),
		.uid = (__u32)bpf_get_current_uid_gid(),
		.status = status,
	};
	__builtin_memcpy(e.comm, key.comm, sizeof(e.comm));
	emit(ctx, &e, sizeof(e));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int tp_btf_exit(u64 *ctx)
{
	/* The exiting task is current; ctx[1] is group_dead where it exists. */
	return on_exit(ctx, (struct task_struct *)ctx[0], has_group_dead_arg ? (int)(bool)ctx[1] : -1);
}

SEC("raw_tp/sched_process_exit")
int raw_tp_exit(u64 *ctx)
{
	return on_exit(ctx, (struct task_struct *)ctx[0], has_group_dead_arg ? (int)(bool)ctx[1] : -1);
}

SEC("tracepoint/sched/sched_process_exit")
int tp_exit(void *ctx)
{
	struct trace_event_raw_sched_process_exit___gd *rec = ctx;
	int group_dead = -1;
	if (bpf_core_field_exists(rec->group_dead))
		group_dead = rec->group_dead;
	return on_exit(ctx, (struct task_struct *)bpf_get_current_task(), group_dead);
}

char LICENSE[] SEC("license") = "GPL";
