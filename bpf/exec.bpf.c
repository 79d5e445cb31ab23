//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* exec: what is being started. One event per execve/execveat, successful or
 * not.
 *
 * A successful exec is reported from sched:sched_process_exec, in the new
 * image: its argv then lies contiguous in the new mm between arg_start and
 * arg_end, so one bounded copy takes it all. A failed exec is reported at
 * syscall exit, where the old memory is still there, walking argv string by
 * string.
 *
 * The failed exec needs the syscall's user pointers at exit. Where the
 * kernel has bpf_task_pt_regs (5.15+) and no filter has to see the caller
 * before exec, they are read back from the task's saved registers and
 * sys_enter is not hooked at all: the first program an exec runs costs
 * ~300 ns here even when it does nothing. Otherwise sys_enter keeps them
 * (at_entry), and sched_process_exec and sys_exit report only what it kept.
 *
 * The comm filter means the program being started, as execsnoop's --name
 * does, not the caller: a shell or supervisor starting webapp has its own
 * name until the exec. So it is decided after the exec: at
 * sched_process_exec on the new image's comm, and for a failed exec (which
 * started nothing) on the comm the kernel would have given it, the first
 * 15 bytes of the asked filename's basename; when the filename cannot be
 * read, on the caller's comm. pid, tid, uid and cgroup stay the caller's
 * and are decided at entry. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/events.bpf.h"

#define MAX_ARGS 20       /* failed execs: arguments copied one by one */
#define ARG_LEN 128
#define ARGS_SIZE 1024
#define FILENAME_LEN 256
#define DATA_SIZE (FILENAME_LEN + ARGS_SIZE)

const volatile bool targ_failed = false;
const volatile bool at_entry = true;

/* Only the bytes used are sent: the header, the filename, then argv. */
struct exec_event {
	__s32 pid;
	__s32 tid;
	__s32 ppid;
	__u32 uid;
	__s32 retval;
	__u32 truncated;     /* 1 when argv did not fit */
	__u16 filename_size; /* bytes of data holding the filename, NUL included */
	__u16 args_size;     /* bytes of data after the filename holding argv */
	char comm[TASK_COMM_LEN];
	char data[DATA_SIZE];
};

/* What sys_enter keeps until the exec resolves: user pointers, as
 * integers (bpf2go renders map values as Go types), and the tid that owns
 * the slot. */
struct pending_exec {
	__u64 filename;
	__u64 argv;
	__u32 tid;
	__u32 pad;
};

/* One slot per tid modulo the map size, a power of two that Go sets from
 * pid_max: an array lookup is a few inlined instructions, where a hash
 * update and delete cost several hundred ns per exec. sched_process_exec frees a slot
 * (found by old_pid, so an exec by a non-leader thread is found too), or
 * sys_exit of a failed exec. */
const volatile __u32 pending_mask = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
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

/* bpf_get_current_task_btf (5.11+) lets the task be read with plain loads
 * instead of a helper call per field; the check is a CO-RE constant, so
 * the verifier drops the branch a kernel cannot take. */
#define HAVE_TASK_BTF bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)

static __always_inline struct pending_exec *slot(__u32 tid)
{
	__u32 key = tid & pending_mask;
	return bpf_map_lookup_elem(&pending, &key);
}

static __always_inline struct exec_event *scratch_event(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline void fill_header(struct exec_event *e, __s32 ret)
{
	if (HAVE_TASK_BTF) {
		struct task_struct *t = bpf_get_current_task_btf();
		e->pid = t->tgid;
		e->tid = t->pid;
		e->ppid = t->real_parent->tgid;
		e->uid = t->cred->uid.val;
		__builtin_memcpy(e->comm, t->comm, TASK_COMM_LEN);
	} else {
		__u64 id = bpf_get_current_pid_tgid();
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		e->pid = id >> 32;
		e->tid = (__u32)id;
		e->ppid = BPF_CORE_READ(t, real_parent, tgid);
		e->uid = (__u32)bpf_get_current_uid_gid();
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	}
	e->retval = ret;
	e->truncated = 0;
}

/* used is 64-bit: a 32-bit one is widened after its bound check, and the
 * verifier loses the bound on the widened copy. */
static __always_inline void emit_event(void *ctx, struct exec_event *e, __u64 used)
{
	barrier_var(used);
	if (used > DATA_SIZE)
		return;
	emit(ctx, e, offsetof(struct exec_event, data) + used);
}

static __always_inline int on_enter(const char *filename, const char *const *argv)
{
	if (!filter_current_ids()) /* the comm is the program's, decided after the exec */
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_exec *p = slot(tid);
	if (!p)
		return 0;
	if (p->tid && p->tid != tid)
		count_lost(); /* two execs in flight share a slot: the older is lost */
	p->filename = (__u64)filename;
	p->argv = (__u64)argv;
	p->tid = tid;
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int tp_sched_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	if (at_entry) {
		/* The slot belongs to the tid that entered execve: old_pid. */
		__u32 old = ctx->old_pid;
		struct pending_exec *p = slot(old);
		if (!p || p->tid != old)
			return 0; /* filtered out at entry, or started before the trace */
		p->tid = 0;
	}
	if (targ_failed)
		return 0;

	struct exec_event *e = scratch_event();
	if (!e)
		return 0;
	fill_header(e, 0);
	if (filter_comm && !comm_matches(e->comm))
		return 0; /* comm is the new program's here */
	/* __data_loc is (length << 16 | offset), the length counting the NUL:
	 * one bounded copy instead of a byte-by-byte string copy. */
	__u32 loc = ctx->__data_loc_filename;
	__u64 fsize = loc >> 16;
	if (fsize > FILENAME_LEN)
		fsize = FILENAME_LEN;
	if (!fsize || bpf_probe_read_kernel(e->data, fsize, (void *)ctx + (loc & 0xFFFF)))
		fsize = 0;
	else
		e->data[(fsize - 1) & (FILENAME_LEN - 1)] = '\0';
	e->filename_size = fsize;

	unsigned long start, end;
	if (HAVE_TASK_BTF) {
		struct mm_struct *mm = bpf_get_current_task_btf()->mm;
		start = mm->arg_start;
		end = mm->arg_end;
	} else {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		start = BPF_CORE_READ(t, mm, arg_start);
		end = BPF_CORE_READ(t, mm, arg_end);
	}
	__u64 len = 0;
	if (end > start) {
		len = end - start;
		if (len > ARGS_SIZE) {
			len = ARGS_SIZE;
			e->truncated = 1;
		}
		if (bpf_probe_read_user(e->data + fsize, len, (const void *)start))
			len = 0;
	}
	e->args_size = len;
	emit_event(ctx, e, fsize + len);
	return 0;
}

/* The pointers of a failed exec, from the slot sys_enter filled, or from
 * the registers the syscall was entered with (a failed exec leaves them as
 * they were; only the return value register changed). */
static __always_inline bool failed_args(bool execveat, const char **filename, const char *const **argv)
{
	if (at_entry) {
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		struct pending_exec *p = slot(tid);
		if (!p || p->tid != tid)
			return false; /* filtered out at entry, or started before the trace */
		*filename = (const char *)p->filename;
		*argv = (const char *const *)p->argv;
		p->tid = 0;
		return true;
	}
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return false; /* Go keeps at_entry on such kernels */
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (execveat) {
		*filename = (const char *)PT_REGS_PARM2_CORE_SYSCALL(regs);
		*argv = (const char *const *)PT_REGS_PARM3_CORE_SYSCALL(regs);
	} else {
		*filename = (const char *)PT_REGS_PARM1_CORE_SYSCALL(regs);
		*argv = (const char *const *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	}
	return true;
}

/* The comm filter for a failed exec: the name the kernel gives a new
 * program (the basename of the filename, cut to 15 bytes), when the
 * filename read into e->data as a non-empty string; else the caller's
 * comm. The basename is copied again from the user's string: as an offset
 * into a map value, base would have to be tracked exactly by the verifier,
 * one state per value through all that follows (too many instructions);
 * added to a user address it is an untracked number. */
static __always_inline bool failed_comm_matches(struct exec_event *e, const char *filename, bool have_filename)
{
	if (!have_filename)
		return comm_matches(e->comm);
	__u32 base = 0;
	for (__u32 i = 0; i < FILENAME_LEN; i++) {
		char c = e->data[i];
		if (!c)
			break;
		if (c == '/')
			base = i + 1;
	}
	char name[TASK_COMM_LEN] = {};
	if (bpf_probe_read_user_str(name, sizeof(name), filename + base) < 0)
		return false;
	return comm_matches(name);
}

static __always_inline int on_exit(void *ctx, long ret, bool execveat)
{
	/* A success was reported by sched_process_exec, which freed its slot. */
	if (ret >= 0)
		return 0;
	const char *filename;
	const char *const *argv;
	if (!failed_args(execveat, &filename, &argv))
		return 0;

	struct exec_event *e = scratch_event();
	if (!e)
		return 0;
	fill_header(e, ret);
	long n = bpf_probe_read_user_str(e->data, FILENAME_LEN, filename);
	__u64 fsize = n > 0 ? n : 0;
	if (fsize > FILENAME_LEN)
		fsize = FILENAME_LEN;
	e->filename_size = fsize;
	if (filter_comm && !failed_comm_matches(e, filename, n > 1))
		return 0;
	char *args = e->data + fsize;
	__u64 size = 0;
	#pragma unroll
	for (int i = 0; i < MAX_ARGS; i++) {
		const char *arg = NULL;
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			goto out;
		if (size > ARGS_SIZE - ARG_LEN) {
			e->truncated = 1;
			goto out;
		}
		n = bpf_probe_read_user_str(&args[size], ARG_LEN, arg);
		if (n <= 0)
			goto out;
		size += n;
	}
	const char *next = NULL;
	if (!bpf_probe_read_user(&next, sizeof(next), &argv[MAX_ARGS]) && next)
		e->truncated = 1;
out:
	e->args_size = size;
	emit_event(ctx, e, fsize + size);
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
	return on_exit(ctx, ctx->ret, false);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int tp_exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx, ctx->ret, true);
}

char LICENSE[] SEC("license") = "GPL";
