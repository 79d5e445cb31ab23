//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* runqlat: how long runnable tasks wait for a CPU (CPU saturation). The
 * wait starts when a task becomes runnable (woken, newly forked, or
 * preempted while still runnable) and ends when sched_switch puts it on a
 * CPU. Log2 histograms in microseconds, overall and per process.
 *
 * Three program sets, one of which Go loads:
 *  - tp_btf (5.5+): task_struct pointers, read with BTF.
 *  - raw_tp (4.17+): the same arguments, read with BPF_CORE_READ.
 *  - classic tracepoints: only pids. The wakee's tgid is not in
 *    sched_wakeup, so it is remembered when the task goes to sleep (it is
 *    the current task then); a task's first wait after a sleep that began
 *    before the trace, and a new task's first wait, are missed. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/hist.bpf.h"

const volatile __u64 targ_min_ns = 0;

#define MAX_PROCS 10240

struct runq_start {
	__u64 ts;
	__u32 tgid;
	__u32 pad;
};

struct proc_hist {
	__u64 total_us;
	struct hist hist;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32);
	__type(value, struct runq_start);
} start SEC(".maps");

/* Classic mode only: tid -> tgid of tasks that went to sleep. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32);
	__type(value, __u32);
} sleepers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} hist_all SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32);
	__type(value, struct proc_hist);
} by_proc SEC(".maps");

/* task_struct::state became __state in 5.14. */
struct task_struct___o {
	volatile long int state;
} __attribute__((preserve_access_index));

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___o *)t, state);
}

static __always_inline void enqueue(__u32 tid, __u32 tgid)
{
	/* The idle tasks (pid 0, one per CPU) wait for nothing. */
	if (!tid)
		return;
	struct runq_start s = {.ts = bpf_ktime_get_ns(), .tgid = tgid};
	bpf_map_update_elem(&start, &tid, &s, BPF_ANY);
}

static __always_inline void enqueue_task(struct task_struct *t)
{
	if (!filter_task(t))
		return;
	enqueue(BPF_CORE_READ(t, pid), BPF_CORE_READ(t, tgid));
}

/* ran records the wait of tid, now on a CPU; comm is read only when the
 * process is new to by_proc. */
static __always_inline void ran(__u32 tid, struct task_struct *t, const char *tp_comm)
{
	struct runq_start *s = bpf_map_lookup_elem(&start, &tid);
	if (!s)
		return;
	__u64 delta = bpf_ktime_get_ns() - s->ts;
	__u32 tgid = s->tgid;
	bpf_map_delete_elem(&start, &tid);
	if ((__s64)delta < 0 || delta < targ_min_ns)
		return;
	__u64 us = delta / 1000;

	__u32 zero = 0;
	struct hist *all = bpf_map_lookup_elem(&hist_all, &zero);
	if (all) {
		hist_add_percpu(all, us);
	}

	struct proc_hist *p = bpf_map_lookup_elem(&by_proc, &tgid);
	if (!p) {
		struct proc_hist init = {};
		if (t)
			BPF_CORE_READ_STR_INTO(&init.comm, t, group_leader, comm);
		else
			bpf_probe_read_kernel_str(init.comm, sizeof(init.comm), tp_comm);
		bpf_map_update_elem(&by_proc, &tgid, &init, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&by_proc, &tgid);
		if (!p)
			return;
	}
	__sync_fetch_and_add(&p->total_us, us);
	hist_add(&p->hist, us);
}

static __always_inline void on_switch(bool preempt, struct task_struct *prev, struct task_struct *next)
{
	/* Preempted (or yielding) tasks stay runnable: their wait starts now. */
	if (preempt || task_state(prev) == 0)
		enqueue_task(prev);
	ran(BPF_CORE_READ(next, pid), next, NULL);
}

/* tp_btf and raw_tp share the bodies: BPF_CORE_READ works on both, and
 * the verifier accepts the same code for either. */
SEC("tp_btf/sched_wakeup")
int BPF_PROG(btf_wakeup, struct task_struct *p)
{
	enqueue_task(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(btf_wakeup_new, struct task_struct *p)
{
	enqueue_task(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(btf_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(preempt, prev, next);
	return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(raw_wakeup, struct task_struct *p)
{
	enqueue_task(p);
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(raw_wakeup_new, struct task_struct *p)
{
	enqueue_task(p);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	on_switch(preempt, prev, next);
	return 0;
}

/* Classic tracepoints. prev_state reports a preempted task as
 * TASK_REPORT_MAX (0x100 since 4.14, higher before) and a runnable one as
 * 0: the low byte holds the sleep states. */
SEC("tracepoint/sched/sched_wakeup")
int tp_wakeup(struct trace_event_raw_sched_wakeup_template *ctx)
{
	__u32 tid = ctx->pid;
	__u32 *tgid = bpf_map_lookup_elem(&sleepers, &tid);
	if (!tgid)
		return 0;
	enqueue(tid, *tgid);
	bpf_map_delete_elem(&sleepers, &tid);
	return 0;
}

SEC("tracepoint/sched/sched_switch")
int tp_switch(struct trace_event_raw_sched_switch *ctx)
{
	/* current is still prev here. */
	if (filter_current()) {
		__u64 id = bpf_get_current_pid_tgid();
		__u32 tid = (__u32)id, tgid = id >> 32;
		if ((ctx->prev_state & 0xff) == 0)
			enqueue(tid, tgid);
		else
			bpf_map_update_elem(&sleepers, &tid, &tgid, BPF_ANY);
	}
	ran(ctx->next_pid, NULL, ctx->next_comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
