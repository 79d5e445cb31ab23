/* SPDX-License-Identifier: GPL-2.0 */
/* Reading the sock:inet_sock_set_state tracepoint (4.16+), which the TCP
 * connection entries share: it fires on every TCP state change, in the
 * connecting task for CLOSE->SYN_SENT and in softirq for most others. */
#ifndef NANNY_INET_STATE_BPF_H
#define NANNY_INET_STATE_BPF_H

/* Socket families are macros in the UAPI headers, absent from vmlinux.h. */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* inet_state_addrs copies the local and remote addresses into 16-byte
 * buffers: IPv4 in the first four bytes, the rest zero. A helper reads
 * them because the verifier rejects the offset ctx pointer a memcpy of
 * these arrays compiles to. */
static __always_inline void inet_state_addrs(const struct trace_event_raw_inet_sock_set_state *ctx,
					     __u8 saddr[16], __u8 daddr[16])
{
	if (ctx->family == AF_INET) {
		bpf_probe_read_kernel(saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(daddr, 4, ctx->daddr);
	} else {
		bpf_probe_read_kernel(saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(daddr, 16, ctx->daddr_v6);
	}
}

#endif
