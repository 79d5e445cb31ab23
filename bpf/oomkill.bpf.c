//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* oomkill: who the OOM killer killed, what triggered it, in which memory
 * cgroup and how big the victim was. oom:mark_victim fires once per kill, in
 * the context of the task whose allocation ran out (the trigger). Kills are
 * rare and each one matters: every kill streams as an event.
 *
 * Recent kernels (6.12, 6.18) pass the victim task: tp_btf/raw_tp read its
 * memory cgroup, process and sizes from it. Older ones pass only its pid;
 * there the classic tracepoint is used, whose record gained comm, uid and the
 * sizes (in kB) over time: CO-RE guards each field. Go picks the mode. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/events.bpf.h"

#define CGROUP_NAME_LEN 64

/* Set from Go: the page size in kB, to report task sizes in kB as the
 * classic tracepoint does. */
const volatile __u64 page_kb = 4;

enum oom_flags {
	HAS_TASK = 1,   /* read from the victim task: memcg known */
	HAS_SIZES = 2,  /* total_vm and rss known */
	HAS_COMM = 4,
	HAS_UID = 8,
	HAS_SCORE = 16,
};

struct oom_event {
	__u64 memcg_id;     /* the victim's memory cgroup (kernfs id = inode) */
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
	__u64 file_rss_kb;
	__u64 shmem_rss_kb;
	__u64 pgtables_kb;
	__s32 victim_pid;   /* its process (tgid) with the victim task */
	__s32 victim_tid;
	__s32 trigger_pid;
	__s32 trigger_tid;
	__u32 victim_uid;
	__u32 flags;
	__s16 oom_score_adj;
	__u8 pad[6];
	char victim_comm[TASK_COMM_LEN];
	char trigger_comm[TASK_COMM_LEN];
	char memcg_name[CGROUP_NAME_LEN];
};

/* Keeps oom_event in the BTF for bpf2go: it only lives on the stack. */
const struct oom_event *unused_oom_event __attribute__((unused));

/* Before 6.2 (percpu rss counters) mm->rss_stat was a struct of atomics. */
struct mm_rss_stat___old {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));

struct mm_struct___old {
	struct mm_rss_stat___old rss_stat;
} __attribute__((preserve_access_index));

/* Indexes of mm rss counters, unchanged since 4.5 (an anonymous enum, so
 * not relocatable by name). */
#define MM_FILEPAGES 0
#define MM_ANONPAGES 1
#define MM_SHMEMPAGES 3

static __always_inline __u64 rss_pages(struct mm_struct *mm, int i)
{
	long n;
	if (bpf_core_type_exists(struct mm_rss_stat___old)) {
		struct mm_struct___old *old = (void *)mm;
		n = BPF_CORE_READ(old, rss_stat.count[i].counter);
	} else {
		/* The kernel's own reading (get_mm_counter): the shared count,
		 * without the per-CPU deltas. */
		n = BPF_CORE_READ(mm, rss_stat[i].count);
	}
	return n > 0 ? n : 0;
}

/* The trigger is current: the task whose allocation found no memory. */
static __always_inline void fill_trigger(struct oom_event *e)
{
	struct task_struct *cur = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	e->trigger_pid = id >> 32;
	e->trigger_tid = (__u32)id;
	BPF_CORE_READ_STR_INTO(&e->trigger_comm, cur, group_leader, comm);
}

/* filter_victim is filter_current for the victim: the killed process is
 * what a user names, not whoever happened to allocate. */
static __always_inline bool filter_victim(struct oom_event *e, __u64 dfl_cgroup)
{
	if (targ_tgid && (__u32)e->victim_pid != targ_tgid)
		return false;
	if (targ_tid && (__u32)e->victim_tid != targ_tid)
		return false;
	if (targ_uid != INVALID_UID && e->victim_uid != targ_uid)
		return false;
	if (targ_cgroup && e->memcg_id != targ_cgroup && dfl_cgroup != targ_cgroup)
		return false;
	if (filter_comm && !comm_matches(e->victim_comm))
		return false;
	return true;
}

static __always_inline int on_victim(void *ctx, struct task_struct *task)
{
	struct oom_event e = {};

	e.flags = HAS_TASK | HAS_SIZES | HAS_COMM | HAS_UID | HAS_SCORE;
	e.victim_pid = BPF_CORE_READ(task, tgid);
	e.victim_tid = BPF_CORE_READ(task, pid);
	e.victim_uid = BPF_CORE_READ(task, cred, uid.val);
	e.oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	BPF_CORE_READ_STR_INTO(&e.victim_comm, task, group_leader, comm);

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (mm) {
		e.total_vm_kb = BPF_CORE_READ(mm, total_vm) * page_kb;
		e.anon_rss_kb = rss_pages(mm, MM_ANONPAGES) * page_kb;
		e.file_rss_kb = rss_pages(mm, MM_FILEPAGES) * page_kb;
		e.shmem_rss_kb = rss_pages(mm, MM_SHMEMPAGES) * page_kb;
		if (bpf_core_field_exists(mm->pgtables_bytes))
			e.pgtables_kb = (__u64)BPF_CORE_READ(mm, pgtables_bytes.counter) >> 10;
	}

	__u64 dfl_cgroup = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		__u32 memcg = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		/* subsys[memcg], with a relocated index: read by offset. */
		struct css_set *cset = BPF_CORE_READ(task, cgroups);
		struct cgroup_subsys_state *css = NULL;
		bpf_probe_read_kernel(&css, sizeof(css),
				      (void *)cset + bpf_core_field_offset(struct css_set, subsys) + memcg * sizeof(css));
		struct cgroup *cg = BPF_CORE_READ(css, cgroup);
		if (css && cg) {
			struct kernfs_node *kn = BPF_CORE_READ(cg, kn);
			e.memcg_id = BPF_CORE_READ(kn, id);
			bpf_probe_read_kernel_str(e.memcg_name, sizeof(e.memcg_name), BPF_CORE_READ(kn, name));
		}
	}
	if (!filter_victim(&e, dfl_cgroup))
		return 0;
	fill_trigger(&e);
	emit(ctx, &e, sizeof(e));
	return 0;
}

SEC("tp_btf/mark_victim")
int tp_btf_mark_victim(u64 *ctx)
{
	return on_victim(ctx, (struct task_struct *)ctx[0]);
}

SEC("raw_tp/mark_victim")
int raw_tp_mark_victim(u64 *ctx)
{
	return on_victim(ctx, (struct task_struct *)ctx[0]);
}

SEC("tracepoint/oom/mark_victim")
int tp_mark_victim(struct trace_event_raw_mark_victim *ctx)
{
	struct oom_event e = {};

	e.victim_pid = ctx->pid; /* the victim task's id; usually its leader's */
	e.victim_tid = ctx->pid;
	if (bpf_core_field_exists(ctx->__data_loc_comm)) {
		__u32 loc = ctx->__data_loc_comm;
		bpf_probe_read_kernel_str(e.victim_comm, sizeof(e.victim_comm), (void *)ctx + (loc & 0xffff));
		e.flags |= HAS_COMM;
	}
	if (bpf_core_field_exists(ctx->anon_rss)) {
		e.total_vm_kb = ctx->total_vm;
		e.anon_rss_kb = ctx->anon_rss;
		e.file_rss_kb = ctx->file_rss;
		e.shmem_rss_kb = ctx->shmem_rss;
		e.flags |= HAS_SIZES;
	}
	if (bpf_core_field_exists(ctx->pgtables))
		e.pgtables_kb = ctx->pgtables;
	if (bpf_core_field_exists(ctx->uid)) {
		e.victim_uid = ctx->uid;
		e.flags |= HAS_UID;
	}
	if (bpf_core_field_exists(ctx->oom_score_adj)) {
		e.oom_score_adj = ctx->oom_score_adj;
		e.flags |= HAS_SCORE;
	}
	/* Go refuses the cgroup filter in this mode: there is no task here. */
	if (!filter_victim(&e, 0))
		return 0;
	fill_trigger(&e);
	emit(ctx, &e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
