//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* drops: where the kernel drops packets, and why. skb:kfree_skb fires for
 * every freed packet that was not consumed normally; since 5.17 it says why
 * (enum skb_drop_reason), and always where (the caller's address, which Go
 * symbolises). Counts per (reason, location) are kept in a per-CPU hash:
 * under a packet flood this runs millions of times a second, so no atomics
 * and no user-space work.
 *
 * The reason numbers differ between kernels; Go reads the enum from the
 * kernel's BTF and tells this program which value means NOT_SPECIFIED (a
 * plain kfree_skb(), where no reason was recorded: too frequent and too
 * vague to rank with the real drops; counted on their own) and which
 * means SKB_CONSUMED (not a drop at all). */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/counters.bpf.h"

#define NO_REASON 0xffffffff

const volatile __u32 reason_not_specified = NO_REASON;
const volatile __u32 reason_consumed = NO_REASON;

struct drop_key {
	__u64 location;
	__u32 reason; /* NO_REASON before 5.17 */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, __u64);
} drops SEC(".maps");

#define CNT_COUNTED 0
#define CNT_MISSED 1      /* the (reason, location) did not fit in drops */
#define CNT_UNSPECIFIED 2 /* reason NOT_SPECIFIED, not in drops */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("tracepoint/skb/kfree_skb")
int tp_kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	struct drop_key key = {};

	key.reason = NO_REASON;
	/* reason joined the record in 5.17. Without it both globals keep
	 * NO_REASON, which must then not match: every free counts. */
	if (bpf_core_field_exists(ctx->reason)) {
		key.reason = ctx->reason;
		if (key.reason == reason_consumed)
			return 0;
	}
	if (!filter_current())
		return 0;
	if (key.reason != NO_REASON && key.reason == reason_not_specified) {
		counter_inc(&counters, CNT_UNSPECIFIED);
		return 0;
	}
	key.location = (__u64)ctx->location;
	counter_inc(&counters, CNT_COUNTED);

	static const __u64 zero = 0;
	__u64 *n = lookup_or_init(&drops, &key, &zero);
	if (!n) {
		counter_inc(&counters, CNT_MISSED);
		return 0;
	}
	*n += 1; /* per-CPU */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
