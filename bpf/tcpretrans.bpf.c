//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* tcpretrans: which TCP flows retransmit, and in which state. Counts per
 * flow and TCP state from the tcp:tcp_retransmit_skb tracepoint (stable
 * since 4.15; it fires from timers and softirqs, so the current task says
 * nothing about the flow's owner and no task filter applies). Everything is
 * counted here; Go reads the map once, at Stop. */
#include "common/common.bpf.h"
#include "common/counters.bpf.h"
#include "common/tcpflow.bpf.h"

const volatile __u16 targ_port = 0;

struct retrans_key {
	struct tcp_flow flow;
	__u32 state;
};

struct retrans_val {
	__u64 count;  /* retransmits sent */
	__u64 failed; /* attempts that did not go out (records with err:
		       * -EBUSY still queued, -ENOMEM, ...) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct retrans_key);
	__type(value, struct retrans_val);
} flows SEC(".maps");

/* Slot 0: every retransmit seen; slot 1: those whose flow did not fit in
 * flows (reported as lost, never silent). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tp_retransmit_skb(void *ctx)
{
	struct retrans_key key = {};
	int err = 0;

	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb___nanny)) {
		struct trace_event_raw_tcp_retransmit_skb___nanny *rec = ctx;
		TCP_FLOW_FROM_V6_RECORD(&key.flow, rec);
		key.state = BPF_CORE_READ(rec, state);
		err = BPF_CORE_READ(rec, err);
	} else {
		struct trace_event_raw_tcp_event_sk_skb___nanny *rec = ctx;
		TCP_FLOW_FROM_V6_RECORD(&key.flow, rec);
		/* state joined the record in 4.16 */
		if (bpf_core_field_exists(rec->state))
			key.state = BPF_CORE_READ(rec, state);
	}
	if (!tcp_flow_port_matches(&key.flow, targ_port))
		return 0;

	counter_inc(&counters, 0);
	static const struct retrans_val zero = {};
	struct retrans_val *v = lookup_or_init(&flows, &key, &zero);
	if (!v) {
		counter_inc(&counters, 1);
		return 0;
	}
	if (err)
		__sync_fetch_and_add(&v->failed, 1);
	else
		__sync_fetch_and_add(&v->count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
