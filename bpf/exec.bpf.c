//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* exec: what is being started. One event per execve/execveat, successful or
 * not.
 *
 * The cheap path is the common one. At syscall entry only the user pointers
 * are kept. A successful exec is reported from sched:sched_process_exec, in
 * the new image: its argv then lies contiguous in the new mm between
 * arg_start and arg_end, so one bounded copy takes it all. Only a failed exec
 * (the old memory is still there at syscall exit) walks argv string by
 * string. Copying argv at every entry cost ~3 us per exec; this ~1 us. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/events.bpf.h"

#define MAX_ARGS 20       /* failed execs: arguments copied one by one */
#define ARG_LEN 128
#define ARGS_SIZE 1024
#define FILENAME_LEN 256

const volatile bool targ_failed = false;

struct exec_event {
	__u64 ts_ns;
	__s32 pid;
	__s32 tid;
	__s32 ppid;
	__u32 uid;
	__s32 retval;
	__u32 args_count;   /* unused: Go counts the NUL-separated strings */
	__u32 args_size;    /* bytes used in args */
	__u32 truncated;    /* 1 when argv did not fit */
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN];
	char args[ARGS_SIZE];
};

/* What sys_enter keeps until the exec resolves: user pointers, as
 * integers (bpf2go renders map values as Go types). */
struct pending_exec {
	__u64 filename;
	__u64 argv;
};

/* Every entry is deleted by sched_process_exec (keyed by old_pid, so an
 * exec by a non-leader thread is found too) or at syscall exit. A plain
 * hash: an LRU update cost ~1 us per exec here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct pending_exec);
} pending SEC(".maps");

/* The event is built here: it is too large for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_event);
} scratch SEC(".maps");

static __always_inline struct exec_event *new_event(__s32 ret)
{
	__u32 zero = 0;
	struct exec_event *e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return NULL;

	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->retval = ret;
	e->args_count = 0;
	e->args_size = 0;
	e->truncated = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

static __always_inline void emit_event(void *ctx, struct exec_event *e)
{
	__u32 size = e->args_size;
	if (size > ARGS_SIZE)
		size = ARGS_SIZE;
	emit(ctx, e, offsetof(struct exec_event, args) + size);
}

static __always_inline int on_enter(const char *filename, const char *const *argv)
{
	if (!filter_current())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_exec p = {.filename = (__u64)filename, .argv = (__u64)argv};
	bpf_map_update_elem(&pending, &tid, &p, BPF_ANY);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int tp_sched_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	/* Keyed by the tid that entered execve: old_pid. */
	__u32 old = ctx->old_pid;
	if (!bpf_map_lookup_elem(&pending, &old))
		return 0; /* filtered out at entry, or started before the trace */
	bpf_map_delete_elem(&pending, &old);
	if (targ_failed)
		return 0;

	struct exec_event *e = new_event(0);
	if (!e)
		return 0;
	/* __data_loc is (length << 16 | offset): one bounded copy instead of a
	 * byte-by-byte string copy. */
	__u32 loc = ctx->__data_loc_filename;
	__u32 flen = loc >> 16;
	if (flen > FILENAME_LEN - 1)
		flen = FILENAME_LEN - 1;
	bpf_probe_read_kernel(e->filename, flen, (void *)ctx + (loc & 0xFFFF));
	e->filename[flen & (FILENAME_LEN - 1)] = '\0';

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	unsigned long start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	unsigned long len = end - start;
	if (end <= start)
		len = 0;
	if (len > ARGS_SIZE) {
		len = ARGS_SIZE;
		e->truncated = 1;
	}
	if (len && !bpf_probe_read_user(e->args, len, (const void *)start))
		e->args_size = len;
	emit_event(ctx, e);
	return 0;
}

static __always_inline int on_exit(void *ctx, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_exec *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0; /* success: sched_process_exec reported it */
	const char *filename = (const char *)p->filename;
	const char *const *argv = (const char *const *)p->argv;
	bpf_map_delete_elem(&pending, &tid);
	if (ret >= 0)
		return 0; /* succeeded without passing sched_process_exec: not ours */

	struct exec_event *e = new_event(ret);
	if (!e)
		return 0;
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);
	#pragma unroll
	for (int i = 0; i < MAX_ARGS; i++) {
		const char *arg = NULL;
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			goto out;
		if (e->args_size > ARGS_SIZE - ARG_LEN) {
			e->truncated = 1;
			goto out;
		}
		long n = bpf_probe_read_user_str(&e->args[e->args_size], ARG_LEN, arg);
		if (n <= 0)
			goto out;
		e->args_size += n;
	}
	const char *next = NULL;
	if (!bpf_probe_read_user(&next, sizeof(next), &argv[MAX_ARGS]) && next)
		e->truncated = 1;
out:
	emit_event(ctx, e);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int tp_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter((const char *)ctx->args[0], (const char *const *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int tp_enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter((const char *)ctx->args[1], (const char *const *)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int tp_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int tp_exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
