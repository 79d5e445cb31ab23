/* SPDX-License-Identifier: GPL-2.0 */
/* TCP flows as the tcp:* tracepoints record them, for tcpretrans and
 * tcpreset.
 *
 * The record layouts are declared here as CO-RE flavours (preserve_access_index),
 * not taken from vmlinux.h: which record a tracepoint writes changed with the
 * kernel, and each architecture's vmlinux.h knows only its own kernel's.
 *  - tcp_retransmit_skb used the tcp_event_sk_skb class until recent kernels
 *    (6.18 here) gave it its own record with an err field: it then fires
 *    for every attempt, also those that did not go out.
 *  - tcp_send_reset used tcp_event_sk_skb until 6.10, when it got its own
 *    record with sockaddr-style addresses and the RST reason, so it can
 *    describe resets sent without a socket (from the incoming packet).
 * Every one of these records carries the addresses in its v6 fields, IPv4
 * ones v4-mapped (TP_STORE_ADDRS), so a flow is always two 16-byte
 * addresses; Go unmaps them. */
#ifndef NANNY_TCPFLOW_BPF_H
#define NANNY_TCPFLOW_BPF_H

#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

/* Local side first: the socket's own address and port. */
struct tcp_flow {
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
};

struct trace_event_raw_tcp_event_sk_skb___nanny {
	const void *skaddr;
	int state;
	__u16 sport;
	__u16 dport;
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_retransmit_skb___nanny {
	const void *skaddr;
	int state;
	__u16 sport;
	__u16 dport;
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
	int err;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_event_sk___nanny {
	const void *skaddr;
	__u16 sport;
	__u16 dport;
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_send_reset___nanny {
	const void *skaddr;
	int state;
	enum sk_rst_reason reason; /* an enum: CO-RE matches field kinds */
	__u8 saddr[28];
	__u8 daddr[28];
} __attribute__((preserve_access_index));

/* Fill f from a record with sport/dport/saddr_v6/daddr_v6 fields (the
 * tcp_event_sk_skb, tcp_retransmit_skb and tcp_event_sk records): s is the
 * socket's own side. The ports are already in host order there. */
#define TCP_FLOW_FROM_V6_RECORD(f, rec) do {					\
	(f)->lport = BPF_CORE_READ(rec, sport);				\
	(f)->rport = BPF_CORE_READ(rec, dport);				\
	BPF_CORE_READ_INTO(&(f)->laddr, rec, saddr_v6);			\
	BPF_CORE_READ_INTO(&(f)->raddr, rec, daddr_v6);			\
} while (0)

/* A sockaddr_in or sockaddr_in6 as the 6.10+ records store it; the port is
 * in network order there. IPv4 is stored v4-mapped, like the other records. */
static __always_inline void tcp_sockaddr_read(const __u8 *sa, __u8 *addr, __u16 *port)
{
	__u16 family = 0;
	__be16 be_port = 0;

	bpf_probe_read_kernel(&family, sizeof(family), sa);
	bpf_probe_read_kernel(&be_port, sizeof(be_port), sa + 2);
	*port = bpf_ntohs(be_port);
	if (family == AF_INET6) {
		/* sin6_addr follows sin6_port and sin6_flowinfo */
		bpf_probe_read_kernel(addr, 16, sa + 8);
		return;
	}
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	bpf_probe_read_kernel(addr + 12, 4, sa + 4);
}

/* The port filter: either end of the flow. */
static __always_inline bool tcp_flow_port_matches(const struct tcp_flow *f, __u16 port)
{
	return !port || f->lport == port || f->rport == port;
}

#endif
