//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* tcpreset: which TCP flows are reset, by whom. RSTs this host sends
 * (tcp:tcp_send_reset: no listener on the port, an abortive close, an
 * invalid segment) and RSTs it receives (tcp:tcp_receive_reset: the peer
 * refused or aborted), counted per flow, direction, TCP state and, where
 * the kernel says it (6.10+), the reason. Both fire in softirq context as
 * often as in the owner's, so only the port filter applies. */
#include "common/common.bpf.h"
#include "common/counters.bpf.h"
#include "common/tcpflow.bpf.h"

#define DIR_SENT 0
#define DIR_RECEIVED 1
#define NO_REASON 0xffffffff

const volatile __u16 targ_port = 0;

struct reset_key {
	struct tcp_flow flow; /* local = this host's side */
	__u32 state;          /* of the local socket; 0 when there is none */
	__u32 reason;         /* enum sk_rst_reason, NO_REASON when unknown */
	__u32 dir;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct reset_key);
	__type(value, __u64);
} resets SEC(".maps");

/* Slot 0: every reset seen; slot 1: those whose flow did not fit. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int record(struct reset_key *key)
{
	if (!tcp_flow_port_matches(&key->flow, targ_port))
		return 0;
	counter_inc(&counters, 0);
	static const __u64 zero = 0;
	__u64 *n = lookup_or_init(&resets, key, &zero);
	if (!n) {
		counter_inc(&counters, 1);
		return 0;
	}
	__sync_fetch_and_add(n, 1);
	return 0;
}

SEC("tracepoint/tcp/tcp_send_reset")
int tp_send_reset(void *ctx)
{
	struct reset_key key = {};

	key.dir = DIR_SENT;
	key.reason = NO_REASON;
	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset___nanny)) {
		/* 6.10+: sockaddr-style record; without a socket the kernel
		 * fills it from the segment being answered, source = this host. */
		struct trace_event_raw_tcp_send_reset___nanny *rec = ctx;
		tcp_sockaddr_read(rec->saddr, key.flow.laddr, &key.flow.lport);
		tcp_sockaddr_read(rec->daddr, key.flow.raddr, &key.flow.rport);
		key.state = BPF_CORE_READ(rec, state);
		if (bpf_core_field_exists(rec->reason))
			key.reason = BPF_CORE_READ(rec, reason);
	} else {
		struct trace_event_raw_tcp_event_sk_skb___nanny *rec = ctx;
		TCP_FLOW_FROM_V6_RECORD(&key.flow, rec);
		if (bpf_core_field_exists(rec->state))
			key.state = BPF_CORE_READ(rec, state);
	}
	return record(&key);
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tp_receive_reset(void *ctx)
{
	struct trace_event_raw_tcp_event_sk___nanny *rec = ctx;
	struct reset_key key = {};

	key.dir = DIR_RECEIVED;
	key.reason = NO_REASON;
	TCP_FLOW_FROM_V6_RECORD(&key.flow, rec);
	/* The record has no state; tcp_reset traces before it moves the
	 * socket to CLOSE, so the socket still says where the reset hit. */
	const struct sock *sk = BPF_CORE_READ(rec, skaddr);
	if (sk)
		key.state = BPF_CORE_READ(sk, __sk_common.skc_state);
	return record(&key);
}

char LICENSE[] SEC("license") = "GPL";
