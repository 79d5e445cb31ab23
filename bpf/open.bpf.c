//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* open: which files are opened, and which opens fail. One event per
 * open/openat/openat2 from the syscall tracepoints: the enter side keeps the
 * path and flags by thread, the exit side adds the result and emits. Go
 * aggregates top paths and failures by errno. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/events.bpf.h"

#define PATH_LEN 256

const volatile bool targ_failed = false;

struct open_event {
	__u64 ts_ns;
	__u64 flags;     /* open flags; openat2 has 64 bits of them */
	__s32 pid;
	__s32 tid;
	__u32 uid;
	__s32 retval;    /* fd, or -errno */
	__u32 mode;
	__u32 syscall;   /* 0 open, 1 openat, 2 openat2 */
	char comm[TASK_COMM_LEN];
	char path[PATH_LEN];
};

/* What the enter side keeps: the event so far, and the user pointer in case
 * the path could not be read yet. */
struct pending_open {
	struct open_event ev;
	__u64 upath;
};

static const struct pending_open empty_pending = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct pending_open);
} pending SEC(".maps");

static __always_inline int on_enter(const char *path, __u64 flags, __u32 mode, __u32 sc)
{
	if (!filter_current())
		return 0;

	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	if (bpf_map_update_elem(&pending, &tid, &empty_pending, BPF_ANY))
		return 0;
	struct pending_open *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	p->upath = (__u64)path;
	p->ev.pid = id >> 32;
	p->ev.tid = tid;
	p->ev.uid = (__u32)bpf_get_current_uid_gid();
	p->ev.flags = flags;
	p->ev.mode = mode;
	p->ev.syscall = sc;
	/* Read now, before another thread can change the buffer; this fails
	 * only when the string's page is not resident yet, and then the exit
	 * side retries after the kernel itself has faulted it in. */
	if (bpf_probe_read_user_str(p->ev.path, sizeof(p->ev.path), path) <= 0)
		p->ev.path[0] = '\0';
	return 0;
}

static __always_inline int on_exit(void *ctx, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_open *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	if (targ_failed && ret >= 0)
		goto out;
	if (!p->ev.path[0])
		bpf_probe_read_user_str(p->ev.path, sizeof(p->ev.path), (const char *)p->upath);
	p->ev.retval = ret;
	p->ev.ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(p->ev.comm, sizeof(p->ev.comm));
	emit(ctx, &p->ev, sizeof(p->ev));
out:
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

/* open(2) exists on x86_64 but not on arm64 (only openat there): Go attaches
 * this one only where the tracepoint exists. */
SEC("tracepoint/syscalls/sys_enter_open")
int tp_enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter((const char *)ctx->args[0], ctx->args[1], ctx->args[2], 0);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int tp_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter((const char *)ctx->args[1], ctx->args[2], ctx->args[3], 1);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int tp_enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};
	/* struct open_how lives in user memory; a failed read leaves zeros,
	 * and the exit still reports the path and result. */
	bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
	return on_enter((const char *)ctx->args[1], how.flags, (__u32)how.mode, 2);
}

/* One exit program serves the three syscalls: the enter side recorded
 * which one it was. */
SEC("tracepoint/syscalls/sys_exit_openat")
int tp_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
