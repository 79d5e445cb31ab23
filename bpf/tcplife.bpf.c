//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* tcplife: how long TCP connections live and what they carry. One event
 * per connection when it closes: endpoints, owning process, duration,
 * payload bytes each way, how it ended.
 *
 * Everything comes from the stable sock:inet_sock_set_state tracepoint:
 *   - birth: the first state of the socket, CLOSE -> SYN_SENT for a client,
 *     LISTEN -> SYN_RECV for a server's child socket;
 *   - process: transitions that run in the owner's syscall context. connect
 *     (-> SYN_SENT) names a client; a server's child is born in softirq, so
 *     its owner is the task that closes or shuts it down (-> FIN_WAIT1 or
 *     -> LAST_ACK, both only reached from close/shutdown);
 *   - the end: -> CLOSE, where the tcp_sock counters are final.
 *
 * Payload bytes are exact: the RFC 4898 counters bytes_acked and
 * bytes_received also count the SYN and FIN sequence numbers. Sent payload
 * is bytes_sent - bytes_retrans (4.19+; older kernels fall back to
 * bytes_acked); received payload is bytes_received less one when the
 * peer's FIN arrived (SOCK_DONE, set only by tcp_fin). */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/events.bpf.h"
#include "common/inet_state.bpf.h"

const volatile __u16 targ_port = 0;  /* local or remote port, host order */
const volatile __u64 targ_min_ns = 0; /* shortest lifetime reported */

#define FLAG_BIRTH 1 /* duration_ns is valid: the trace saw the connection start */
#define FLAG_IDENT 2 /* pid/uid/comm are the owning process */
#define FLAG_FIN 4   /* the peer's FIN arrived */

struct sock_info {
	__u64 birth_ns;
	__u32 pid;
	__u32 uid;
	char comm[TASK_COMM_LEN];
	__u8 ident;
	__u8 skip;   /* the owner failed a process filter */
	__u8 active; /* this side connected */
	__u8 pad[5];
};

struct event {
	__u64 ts_ns;
	__u64 duration_ns;
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 pid;
	__u32 uid;
	__s32 err;       /* sk_err at close: ECONNRESET when reset by the peer */
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 oldstate;   /* the state it closed from: who closed first */
	__u8 active;
	__u8 flags;
	__u8 pad[3];
	char comm[TASK_COMM_LEN];
};

/* LRU: a connection whose close the trace misses must not pin an entry
 * forever; losing the oldest birth only loses that duration. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

/* sk_flags moved from struct sock into sock_common as skc_flags between
 * 6.1 and 6.12; this flavour reads the older layout. */
struct sock___old {
	unsigned long sk_flags;
} __attribute__((preserve_access_index));

static __always_inline unsigned long sock_flags(struct sock *sk)
{
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		return BPF_CORE_READ(sk, __sk_common.skc_flags);
	return BPF_CORE_READ((struct sock___old *)sk, sk_flags);
}

/* Scratch space for the event being built; it also puts struct event in
 * the object's BTF for bpf2go. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

static __always_inline bool process_filters(void)
{
	return targ_tgid || targ_tid || targ_uid != INVALID_UID || targ_cgroup || filter_comm;
}

static __always_inline void set_ident(struct sock_info *info)
{
	info->pid = bpf_get_current_pid_tgid() >> 32;
	info->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(info->comm, sizeof(info->comm));
	info->skip = !filter_current();
	info->ident = 1;
}

static __always_inline int on_close(struct trace_event_raw_inet_sock_set_state *ctx, __u64 skp)
{
	struct sock_info *info = bpf_map_lookup_elem(&socks, &skp);
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&scratch, &zero);

	if (!e)
		goto out;
	__builtin_memset(e, 0, sizeof(*e));
	if (info) {
		if (info->birth_ns) {
			e->duration_ns = now - info->birth_ns;
			e->flags |= FLAG_BIRTH;
		}
		if (info->ident) {
			e->pid = info->pid;
			e->uid = info->uid;
			__builtin_memcpy(e->comm, info->comm, sizeof(e->comm));
			e->flags |= FLAG_IDENT;
		}
		e->active = info->active;
		if (process_filters() && (!info->ident || info->skip))
			goto out;
	} else if (process_filters()) {
		/* No owner seen: it cannot pass a process filter. */
		return 0;
	}
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	if (targ_port && e->sport != targ_port && e->dport != targ_port)
		goto out;
	if (targ_min_ns && (!(e->flags & FLAG_BIRTH) || e->duration_ns < targ_min_ns))
		goto out;

	struct sock *sk = (struct sock *)skp;
	struct tcp_sock *tp = (struct tcp_sock *)skp;
	e->rx_bytes = BPF_CORE_READ(tp, bytes_received);
	if (bpf_core_field_exists(tp->bytes_sent))
		e->tx_bytes = BPF_CORE_READ(tp, bytes_sent) - BPF_CORE_READ(tp, bytes_retrans);
	else
		e->tx_bytes = BPF_CORE_READ(tp, bytes_acked);
	if (sock_flags(sk) & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) {
		e->flags |= FLAG_FIN;
		if (e->rx_bytes)
			e->rx_bytes--;
	}
	e->err = BPF_CORE_READ(sk, sk_err);
	e->ts_ns = now;
	e->family = ctx->family;
	e->oldstate = ctx->oldstate;
	inet_state_addrs(ctx, e->saddr, e->daddr);
	emit(ctx, e, sizeof(*e));
out:
	if (info)
		bpf_map_delete_elem(&socks, &skp);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int tp_inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	__u64 sk = (__u64)ctx->skaddr;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;

	if (newstate == TCP_SYN_SENT || (newstate == TCP_SYN_RECV && oldstate == TCP_LISTEN)) {
		struct sock_info info = {.birth_ns = bpf_ktime_get_ns()};
		if (newstate == TCP_SYN_SENT) {
			info.active = 1;
			set_ident(&info);
		}
		bpf_map_update_elem(&socks, &sk, &info, BPF_ANY);
		return 0;
	}
	if (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK) {
		struct sock_info *info = bpf_map_lookup_elem(&socks, &sk);
		if (info) {
			if (!info->ident)
				set_ident(info);
			return 0;
		}
		/* Opened before the trace: the owner is known, the birth not. */
		struct sock_info fresh = {};
		set_ident(&fresh);
		bpf_map_update_elem(&socks, &sk, &fresh, BPF_NOEXIST);
		return 0;
	}
	if (newstate != TCP_CLOSE)
		return 0;
	/* Listeners closing and handshakes that never completed are not
	 * connections (tcpconnect counts failed handshakes). */
	if (oldstate == TCP_LISTEN || oldstate == TCP_SYN_SENT || oldstate == TCP_CLOSE) {
		bpf_map_delete_elem(&socks, &sk);
		return 0;
	}
	return on_close(ctx, sk);
}

char LICENSE[] SEC("license") = "GPL";
