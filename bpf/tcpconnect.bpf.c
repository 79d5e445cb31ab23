//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* tcpconnect: which outgoing TCP connections are attempted, where to, by
 * whom, whether they succeed and how long the handshake takes.
 *
 * One stable tracepoint, sock:inet_sock_set_state, sees the whole
 * handshake of every socket, blocking or not:
 *   CLOSE -> SYN_SENT        the attempt; runs in the connect() caller, so
 *                            the process and the filters are taken here
 *   SYN_SENT -> ESTABLISHED  success; the latency is the time between
 *   SYN_SENT -> CLOSE        failure; why comes from sk->sk_err
 * Every kernel path that ends a handshake in error stores the errno in
 * sk_err before it moves the socket to CLOSE (tcp_reset: ECONNREFUSED in
 * SYN_SENT; tcp_write_err: ETIMEDOUT or the soft ICMP error; tcp_v4_err and
 * tcp_v6_err: the ICMP error), and only the application reads it back
 * later. sk_err 0 therefore means the application itself closed the socket
 * before an answer (a dial timeout or cancel). That is more robust than the
 * connect syscall's errno, which is EINPROGRESS for every non-blocking
 * connect, and than tcp:tcp_receive_reset, which explains refusals only.
 *
 * The question is a count and a distribution per destination, so the
 * kernel aggregates: no event crosses to user space. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/dropped.bpf.h"
#include "common/hist.bpf.h"
#include "common/inet_state.bpf.h"

#define ECONNRESET 104
#define ETIMEDOUT 110
#define ECONNREFUSED 111

const volatile bool targ_failed = false;
const volatile __u16 targ_port = 0; /* destination port, host order */

struct dest_key {
	__u8 daddr[16];
	__u32 tgid;
	__u16 dport;
	__u16 family;
	char comm[TASK_COMM_LEN];
};

struct dest_stats {
	__u64 attempts;
	__u64 established;
	__u64 refused;
	__u64 timedout;
	__u64 reset;
	__u64 aborted;  /* closed by the application before an answer */
	__u64 other;    /* any other errno, e.g. EHOSTUNREACH from ICMP */
	__s32 last_other; /* the errno behind the last "other" */
	__u32 pad;
	struct hist latency_us; /* successful handshakes */
	__u32 pad2;
};

/* A handshake in flight, by socket address. */
struct attempt {
	__u64 start_ns;
	struct dest_key key;
};

static const struct dest_stats zero_stats = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);
	__type(value, struct attempt);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct dest_key);
	__type(value, struct dest_stats);
} stats SEC(".maps");

static __always_inline struct dest_stats *stats_for(const struct dest_key *key)
{
	struct dest_stats *s = lookup_or_init(&stats, key, &zero_stats);
	if (!s)
		count_dropped();
	return s;
}

static __always_inline int on_attempt(struct trace_event_raw_inet_sock_set_state *ctx, __u64 sk)
{
	if (!filter_current())
		return 0;
	if (targ_port && ctx->dport != targ_port)
		return 0;

	struct attempt a = {};
	__u8 saddr[16];
	a.start_ns = bpf_ktime_get_ns();
	inet_state_addrs(ctx, saddr, a.key.daddr);
	a.key.dport = ctx->dport;
	a.key.family = ctx->family;
	a.key.tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(a.key.comm, sizeof(a.key.comm));

	if (bpf_map_update_elem(&inflight, &sk, &a, BPF_ANY)) {
		count_dropped();
		return 0;
	}
	/* With failed-only, an attempt counts once it has failed. */
	if (!targ_failed) {
		struct dest_stats *s = stats_for(&a.key);
		if (s)
			__sync_fetch_and_add(&s->attempts, 1);
	}
	return 0;
}

static __always_inline int on_outcome(struct trace_event_raw_inet_sock_set_state *ctx, __u64 sk)
{
	struct attempt *ap = bpf_map_lookup_elem(&inflight, &sk);
	if (!ap)
		return 0;
	struct attempt a = *ap;
	bpf_map_delete_elem(&inflight, &sk);

	if (ctx->newstate == TCP_ESTABLISHED) {
		if (targ_failed)
			return 0;
		struct dest_stats *s = stats_for(&a.key);
		if (!s)
			return 0;
		__sync_fetch_and_add(&s->established, 1);
		hist_add(&s->latency_us, (bpf_ktime_get_ns() - a.start_ns) / 1000);
		return 0;
	}

	int err = BPF_CORE_READ((struct sock *)sk, sk_err);
	struct dest_stats *s = stats_for(&a.key);
	if (!s)
		return 0;
	if (targ_failed)
		__sync_fetch_and_add(&s->attempts, 1);
	switch (err) {
	case ECONNREFUSED:
		__sync_fetch_and_add(&s->refused, 1);
		break;
	case ETIMEDOUT:
		__sync_fetch_and_add(&s->timedout, 1);
		break;
	case ECONNRESET:
		__sync_fetch_and_add(&s->reset, 1);
		break;
	case 0:
		__sync_fetch_and_add(&s->aborted, 1);
		break;
	default:
		__sync_fetch_and_add(&s->other, 1);
		s->last_other = err;
	}
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int tp_inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	__u64 sk = (__u64)ctx->skaddr;
	int newstate = ctx->newstate;

	if (newstate == TCP_SYN_SENT)
		return on_attempt(ctx, sk);
	/* A simultaneous open passes SYN_SENT -> SYN_RECV -> ESTABLISHED:
	 * the attempt stays in flight through SYN_RECV. */
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	if (ctx->oldstate != TCP_SYN_SENT && ctx->oldstate != TCP_SYN_RECV)
		return 0;
	return on_outcome(ctx, sk);
}

char LICENSE[] SEC("license") = "GPL";
