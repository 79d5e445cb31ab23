//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* dns: which names processes resolve, how long it takes and what comes
 * back. Uprobes on the C library's resolver entry points (getaddrinfo,
 * gethostbyname, gethostbyname2 and their _r forms): the entry keeps the
 * name and the result pointer per thread, the return adds the status,
 * latency and first address, and emits one event per lookup.
 *
 * Port 53 traffic would miss /etc/hosts answers, DNS over TCP/TLS and
 * cached answers (nscd, systemd-resolved), and cannot tell which process
 * asked once a local cache forwards the query; the libc call sees all of
 * that for every dynamically linked program. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/events.bpf.h"

#define NAME_LEN 256
#define AF_INET 2
#define AF_INET6 10

/* The sixth argument: the libbpf headers pinned here stop at PARM5. */
#if defined(__TARGET_ARCH_x86)
#define PARM6(ctx) (((const struct pt_regs *)(ctx))->r9)
#elif defined(__TARGET_ARCH_arm64)
#define PARM6(ctx) (((const struct user_pt_regs *)(ctx))->regs[5])
#endif

enum lookup_func {
	FUNC_GETADDRINFO,
	FUNC_GETHOSTBYNAME,
	FUNC_GETHOSTBYNAME2,
	FUNC_GETHOSTBYNAME_R,
	FUNC_GETHOSTBYNAME2_R,
};

const volatile bool targ_failed = false;
const volatile __u64 targ_min_ns = 0;

struct dns_event {
	__u64 latency_ns;
	__s32 pid;
	__s32 tid;
	__u32 uid;
	/* getaddrinfo: its return value (0 or EAI_*); the hostent functions:
	 * 0 found, -1 not found; the _r forms: their errno return when not 0. */
	__s32 status;
	__u32 func;
	__u16 family; /* of the first address, 0 when none */
	__u16 pad;
	__u8 addr[16];
	char comm[TASK_COMM_LEN];
	char name[NAME_LEN];
};

struct pending {
	struct dns_event ev;
	__u64 ts;
	__u64 out;   /* struct addrinfo ** or struct hostent ** */
	__u32 depth; /* nested resolver calls of the same thread */
	__u32 pad;
};

static const struct pending empty_pending = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct pending);
} pending SEC(".maps");

static __always_inline int on_enter(__u32 func, const char *name, __u64 out)
{
	if (!filter_current())
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct pending *p = bpf_map_lookup_elem(&pending, &tid);
	if (p) {
		/* gethostbyname2 calls gethostbyname2_r: one lookup, not two. */
		p->depth++;
		return 0;
	}
	if (bpf_map_update_elem(&pending, &tid, &empty_pending, BPF_NOEXIST))
		return 0;
	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	p->ev.pid = id >> 32;
	p->ev.tid = tid;
	p->ev.uid = (__u32)bpf_get_current_uid_gid();
	p->ev.func = func;
	p->out = out;
	bpf_probe_read_user_str(p->ev.name, sizeof(p->ev.name), name);
	p->ts = bpf_ktime_get_ns();
	return 0;
}

/* The glibc/musl layouts on 64-bit targets. */
static __always_inline void read_sockaddr(struct dns_event *e, const void *sa)
{
	__u16 family = 0;
	if (!sa || bpf_probe_read_user(&family, sizeof(family), sa))
		return;
	if (family == AF_INET && !bpf_probe_read_user(e->addr, 4, sa + 4))
		e->family = family;
	else if (family == AF_INET6 && !bpf_probe_read_user(e->addr, 16, sa + 8))
		e->family = family;
}

static __always_inline void read_addrinfo(struct dns_event *e, __u64 out)
{
	const void *ai = NULL, *sa = NULL;
	if (bpf_probe_read_user(&ai, sizeof(ai), (const void *)out) || !ai)
		return;
	/* struct addrinfo: four ints, socklen_t, then ai_addr at 24. */
	if (bpf_probe_read_user(&sa, sizeof(sa), ai + 24))
		return;
	read_sockaddr(e, sa);
}

static __always_inline void read_hostent(struct dns_event *e, const void *h)
{
	/* struct hostent: h_name, h_aliases, int h_addrtype, int h_length,
	 * h_addr_list at 24. */
	int type = 0;
	const void *list = NULL, *first = NULL;
	if (bpf_probe_read_user(&type, sizeof(type), h + 16) ||
	    bpf_probe_read_user(&list, sizeof(list), h + 24) || !list ||
	    bpf_probe_read_user(&first, sizeof(first), list) || !first)
		return;
	if (type == AF_INET && !bpf_probe_read_user(e->addr, 4, first))
		e->family = type;
	else if (type == AF_INET6 && !bpf_probe_read_user(e->addr, 16, first))
		e->family = type;
}

static __always_inline int on_exit(struct pt_regs *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	if (p->depth) {
		p->depth--;
		return 0;
	}
	struct dns_event *e = &p->ev;
	long rc = PT_REGS_RC(ctx);
	e->latency_ns = bpf_ktime_get_ns() - p->ts;

	switch (e->func) {
	case FUNC_GETADDRINFO:
		e->status = (int)rc;
		if (!e->status)
			read_addrinfo(e, p->out);
		break;
	case FUNC_GETHOSTBYNAME:
	case FUNC_GETHOSTBYNAME2:
		if (rc)
			read_hostent(e, (const void *)rc);
		else
			e->status = -1;
		break;
	default: {
		const void *h = NULL;
		e->status = (int)rc;
		bpf_probe_read_user(&h, sizeof(h), (const void *)p->out);
		if (h)
			read_hostent(e, h);
		else if (!e->status)
			e->status = -1;
	}
	}

	if ((targ_failed && !e->status) || e->latency_ns < targ_min_ns)
		goto out;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	emit(ctx, e, sizeof(*e));
out:
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

/* int getaddrinfo(const char *node, const char *service,
 *                 const struct addrinfo *hints, struct addrinfo **res) */
SEC("uprobe")
int uprobe_getaddrinfo(struct pt_regs *ctx)
{
	return on_enter(FUNC_GETADDRINFO, (const char *)PT_REGS_PARM1(ctx), PT_REGS_PARM4(ctx));
}

SEC("uprobe")
int uprobe_gethostbyname(struct pt_regs *ctx)
{
	return on_enter(FUNC_GETHOSTBYNAME, (const char *)PT_REGS_PARM1(ctx), 0);
}

SEC("uprobe")
int uprobe_gethostbyname2(struct pt_regs *ctx)
{
	return on_enter(FUNC_GETHOSTBYNAME2, (const char *)PT_REGS_PARM1(ctx), 0);
}

/* int gethostbyname_r(name, ret, buf, buflen, struct hostent **result, h_errnop) */
SEC("uprobe")
int uprobe_gethostbyname_r(struct pt_regs *ctx)
{
	return on_enter(FUNC_GETHOSTBYNAME_R, (const char *)PT_REGS_PARM1(ctx), PT_REGS_PARM5(ctx));
}

/* int gethostbyname2_r(name, af, ret, buf, buflen, struct hostent **result, h_errnop) */
SEC("uprobe")
int uprobe_gethostbyname2_r(struct pt_regs *ctx)
{
	return on_enter(FUNC_GETHOSTBYNAME2_R, (const char *)PT_REGS_PARM1(ctx), PARM6(ctx));
}

SEC("uretprobe")
int uretprobe_lookup(struct pt_regs *ctx)
{
	return on_exit(ctx);
}

char LICENSE[] SEC("license") = "GPL";
