//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* exec: what is being started. One event per execve/execveat, successful or
 * not, from the syscall tracepoints (stable since 4.x): the enter side keeps
 * the filename and a bounded argv, the exit side adds the result and emits. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/events.bpf.h"

#define MAX_ARGS 20
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
	__u32 args_count;   /* arguments captured */
	__u32 args_size;    /* bytes used in args */
	__u32 truncated;    /* 1 when argv had more than MAX_ARGS or ARGS_SIZE */
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN];
	char args[ARGS_SIZE];
};

static const struct exec_event empty_event = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct exec_event);
} pending SEC(".maps");

static __always_inline int on_enter(const char *filename, const char *const *argv)
{
	if (!filter_current())
		return 0;

	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	if (bpf_map_update_elem(&pending, &tid, &empty_event, BPF_ANY))
		return 0;
	struct exec_event *e = bpf_map_lookup_elem(&pending, &tid);
	if (!e)
		return 0;

	e->pid = id >> 32;
	e->tid = tid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);

	#pragma unroll
	for (int i = 0; i < MAX_ARGS; i++) {
		const char *arg = NULL;
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			return 0;
		if (e->args_size > ARGS_SIZE - ARG_LEN) {
			e->truncated = 1;
			return 0;
		}
		long n = bpf_probe_read_user_str(&e->args[e->args_size], ARG_LEN, arg);
		if (n <= 0)
			return 0;
		e->args_count++;
		e->args_size += n;
	}
	/* More arguments than MAX_ARGS? */
	const char *next = NULL;
	if (!bpf_probe_read_user(&next, sizeof(next), &argv[MAX_ARGS]) && next)
		e->truncated = 1;
	return 0;
}

static __always_inline int on_exit(void *ctx, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_event *e = bpf_map_lookup_elem(&pending, &tid);
	if (!e)
		return 0;
	if (targ_failed && ret >= 0)
		goto out;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->retval = ret;
	e->ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	emit(ctx, e, sizeof(*e));
out:
	bpf_map_delete_elem(&pending, &tid);
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
