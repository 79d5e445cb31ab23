/* SPDX-License-Identifier: GPL-2.0 */
/* Filters set from Go before load (catalog.SetFilters). Disabled filters
 * are constant false, so the verifier removes their code. */
#ifndef NANNY_FILTER_BPF_H
#define NANNY_FILTER_BPF_H

#define INVALID_UID ((__u32)-1)

const volatile __u32 targ_tgid = 0;   /* a user's "pid" */
const volatile __u32 targ_tid = 0;
const volatile __u32 targ_uid = INVALID_UID;
const volatile __u64 targ_cgroup = 0; /* cgroup v2 id = inode of its directory */
const volatile bool filter_comm = false;
const volatile char targ_comm[TASK_COMM_LEN] = {};

static __always_inline bool comm_matches(const char *comm)
{
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != targ_comm[i])
			return false;
		if (comm[i] == '\0')
			return true;
	}
	return true;
}

/* filter_current_ids checks the current task's ids against the pid, tid,
 * uid and cgroup filters: filter_current without the comm, for entries
 * that take the comm from elsewhere (the program an exec starts, the
 * leader of an exiting process). */
static __always_inline bool filter_current_ids(void)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (targ_tgid && (__u32)(id >> 32) != targ_tgid)
		return false;
	if (targ_tid && (__u32)id != targ_tid)
		return false;
	if (targ_uid != INVALID_UID && (__u32)bpf_get_current_uid_gid() != targ_uid)
		return false;
	if (targ_cgroup && bpf_get_current_cgroup_id() != targ_cgroup)
		return false;
	return true;
}

/* filter_current reports whether the current task passes every enabled
 * filter. */
static __always_inline bool filter_current(void)
{
	if (!filter_current_ids())
		return false;
	if (filter_comm) {
		char comm[TASK_COMM_LEN];
		bpf_get_current_comm(comm, sizeof(comm));
		if (!comm_matches(comm))
			return false;
	}
	return true;
}

/* filter_task is filter_current for a task that is not current: the wakee
 * or the task switched in (scheduler tracepoints), a signal's target, an
 * OOM victim. It reads through CO-RE, so it works from raw_tp as well as
 * tp_btf; the reads of a disabled filter are removed by the verifier. */
static __always_inline bool filter_task(struct task_struct *t)
{
	if (targ_tgid && BPF_CORE_READ(t, tgid) != targ_tgid)
		return false;
	if (targ_tid && BPF_CORE_READ(t, pid) != targ_tid)
		return false;
	if (targ_uid != INVALID_UID && BPF_CORE_READ(t, cred, uid.val) != targ_uid)
		return false;
	if (targ_cgroup && BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id) != targ_cgroup)
		return false;
	if (filter_comm) {
		char comm[TASK_COMM_LEN];
		BPF_CORE_READ_STR_INTO(&comm, t, comm);
		if (!comm_matches(comm))
			return false;
	}
	return true;
}

#endif
