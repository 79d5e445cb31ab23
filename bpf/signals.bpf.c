//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* signals: who signals whom. signal:signal_generate fires for every signal
 * the kernel generates, in the sender's context (current is the sender; the
 * kernel itself for faults and SIGCHLD, where current is the faulting or
 * exiting task), with what became of it: delivered, ignored, already pending,
 * queue full. The kernel counts by (sender, target, signal, si_code, result):
 * the question is a count, not a stream.
 *
 * tp_btf/raw_tp see the target task, so the target is its process (tgid);
 * the classic tracepoint only has the target thread's pid. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/dropped.bpf.h"

const volatile bool targ_failed = false;

/* SI_USER and SI_KERNEL as the tracepoint records them when the kernel
 * passes SEND_SIG_NOINFO (0) or SEND_SIG_PRIV (1) instead of a siginfo. */
#define SI_USER 0
#define SI_KERNEL 0x80
#define TRACE_SIGNAL_DELIVERED 0

struct sig_key {
	__u32 sender_pid;
	__u32 target_pid;
	__s32 sig;
	__s32 code;
	__s32 result;
	char sender_comm[TASK_COMM_LEN];
	char target_comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct sig_key);
	__type(value, __u64);
} counts SEC(".maps");

static const __u64 zero_count;

static __always_inline int count(struct sig_key *key)
{
	if (targ_failed && key->result == TRACE_SIGNAL_DELIVERED)
		return 0;
	key->sender_pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(key->sender_comm, sizeof(key->sender_comm));
	__u64 *n = lookup_or_init(&counts, key, &zero_count);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	count_dropped();
	return 0;
}

static __always_inline int on_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, int result)
{
	if (!filter_current())
		return 0;
	struct sig_key key = { .sig = sig, .result = result };
	/* The tracepoint's own reading of the siginfo (TP_STORE_SIGINFO). */
	if ((unsigned long)info == 0)
		key.code = SI_USER;
	else if ((unsigned long)info == 1)
		key.code = SI_KERNEL;
	else
		key.code = BPF_CORE_READ(info, si_code);
	key.target_pid = BPF_CORE_READ(task, tgid);
	BPF_CORE_READ_STR_INTO(&key.target_comm, task, comm);
	return count(&key);
}

SEC("tp_btf/signal_generate")
int BPF_PROG(tp_btf_generate, int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
{
	return on_generate(sig, info, task, result);
}

SEC("raw_tp/signal_generate")
int BPF_PROG(raw_tp_generate, int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
{
	return on_generate(sig, info, task, result);
}

SEC("tracepoint/signal/signal_generate")
int tp_generate(struct trace_event_raw_signal_generate *ctx)
{
	if (!filter_current())
		return 0;
	struct sig_key key = {
		.sig = ctx->sig,
		.code = ctx->code,
		.result = ctx->result,
		.target_pid = ctx->pid, /* a thread id: the record has no tgid */
	};
	bpf_probe_read_kernel_str(key.target_comm, sizeof(key.target_comm), ctx->comm);
	return count(&key);
}

char LICENSE[] SEC("license") = "GPL";
