//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* biolatency: how long block I/O takes, per disk and operation, and who
 * asked for it. Device time is block_rq_issue -> block_rq_complete; both
 * stable tracepoints carry (dev, sector, rwbs), which together identify a
 * request in flight without touching struct request.
 *
 * The issuing context is often not the submitter (plug flushes, kworkers,
 * the loop driver), so the submitter is taken from block:block_io_start
 * (6.5+, fired when a bio becomes a request, in the caller's context) or,
 * before that, block:block_bio_queue (per bio, also the caller's context),
 * keyed the same way. Everything is aggregated in the kernel. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/hist.bpf.h"

#define OP_READ 0
#define OP_WRITE 1
#define OP_FLUSH 2
#define OP_DISCARD 3
#define OP_OTHER 4

const volatile bool targ_failed = false;
const volatile __u64 targ_min_ns = 0;

struct bio_rq_key {
	__u64 sector;
	__u32 dev;
	__u32 op;
};

struct bio_who {
	__u32 tgid;
	__u32 pad;
	char comm[TASK_COMM_LEN];
};

struct bio_start {
	__u64 ts;
	struct bio_who who;
};

struct bio_disk_key {
	__u32 dev;
	__u32 op;
};

struct bio_disk_stats {
	__u64 count;
	__u64 bytes;
	__u64 total_ns;
	__u64 errors;
	struct hist hist;
	__u32 pad;
};

struct bio_proc_key {
	__u32 tgid;
	__u32 dev;
	__u32 op;
	char comm[TASK_COMM_LEN];
};

struct bio_proc_stats {
	__u64 count;
	__u64 bytes;
	__u64 total_ns;
};

/* LRU: a request that is merged after block_io_start, or never completes
 * (device removed), must not pin an entry forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bio_rq_key);
	__type(value, struct bio_who);
} submitters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bio_rq_key);
	__type(value, struct bio_start);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct bio_disk_key);
	__type(value, struct bio_disk_stats);
} disks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct bio_proc_key);
	__type(value, struct bio_proc_stats);
} procs SEC(".maps");

static const struct bio_disk_stats empty_disk = {};
static const struct bio_proc_stats empty_proc = {};

/* rwbs is "[F]<op>[F][A][S][M]": a leading F is a preflush flag when an
 * operation letter follows it, the operation itself otherwise (a bare
 * flush reads "F" or "FS"). The two letters come by value: the verifier
 * rejects reads through a ctx pointer plus an offset. */
static __always_inline __u32 op_of(char c, char n)
{
	if (c == 'F' && (n == 'R' || n == 'W' || n == 'D' || n == 'F' || n == 'N'))
		c = n;
	switch (c) {
	case 'R':
		return OP_READ;
	case 'W':
		return OP_WRITE;
	case 'F':
		return OP_FLUSH;
	case 'D':
		return OP_DISCARD;
	}
	return OP_OTHER;
}

/* The records as 5.10 lays them out, with the same fields but no ioprio
 * and an 8-byte rwbs: block_bio_queue joined the block_bio class in 5.11,
 * and block_rq_complete became the block_rq_completion class when
 * block_rq_error joined it (5.18). Each layout gets its own program, chosen
 * in Go from the kernel's BTF. One program reading both under
 * bpf_core_type_exists does not work: clang merges the two branches' ctx
 * loads into one through a chosen pointer, which the verifier refuses on a
 * ctx, and with the reads in subprograms cilium/ebpf loses the call target
 * when it poisons a subprogram's first instruction. */
struct trace_event_raw_block_rq_complete___old {
	dev_t dev;
	sector_t sector;
	unsigned int nr_sector;
	int error;
	char rwbs[8];
} __attribute__((preserve_access_index));

struct trace_event_raw_block_bio_queue___old {
	dev_t dev;
	sector_t sector;
	char rwbs[8];
} __attribute__((preserve_access_index));

static __always_inline bool process_filter_set(void)
{
	return targ_tgid || targ_tid || targ_uid != INVALID_UID || targ_cgroup || filter_comm;
}

static __always_inline void remember_submitter(__u32 dev, __u64 sector, __u32 op)
{
	if (!filter_current())
		return;
	struct bio_rq_key key = { .sector = sector, .dev = dev, .op = op };
	struct bio_who w = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	bpf_get_current_comm(w.comm, sizeof(w.comm));
	bpf_map_update_elem(&submitters, &key, &w, BPF_ANY);
}

SEC("tracepoint/block/block_io_start")
int tp_io_start(struct trace_event_raw_block_rq *ctx)
{
	remember_submitter(ctx->dev, ctx->sector, op_of(ctx->rwbs[0], ctx->rwbs[1]));
	return 0;
}

SEC("tracepoint/block/block_bio_queue")
int tp_bio_queue(struct trace_event_raw_block_bio *ctx)
{
	remember_submitter(ctx->dev, ctx->sector, op_of(ctx->rwbs[0], ctx->rwbs[1]));
	return 0;
}

SEC("tracepoint/block/block_bio_queue")
int tp_bio_queue_old(struct trace_event_raw_block_bio_queue___old *ctx)
{
	remember_submitter(ctx->dev, ctx->sector, op_of(ctx->rwbs[0], ctx->rwbs[1]));
	return 0;
}

SEC("tracepoint/block/block_rq_issue")
int tp_rq_issue(struct trace_event_raw_block_rq *ctx)
{
	struct bio_rq_key key = { .sector = ctx->sector, .dev = ctx->dev, .op = op_of(ctx->rwbs[0], ctx->rwbs[1]) };
	struct bio_start s = {};

	struct bio_who *w = bpf_map_lookup_elem(&submitters, &key);
	if (w) {
		s.who = *w;
		bpf_map_delete_elem(&submitters, &key);
	} else if (process_filter_set()) {
		/* Not submitted by a matching process (or merged away). */
		return 0;
	} else {
		/* No submitter seen (e.g. issued before the trace started):
		 * the issuing task is the best remaining guess. */
		s.who.tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(s.who.comm, sizeof(s.who.comm));
	}
	s.ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&inflight, &key, &s, BPF_ANY);
	return 0;
}

static __always_inline int rq_complete(__u32 dev, __u64 sector, __u32 op, __u64 bytes, int error)
{
	struct bio_rq_key key = { .sector = sector, .dev = dev, .op = op };
	struct bio_start *s = bpf_map_lookup_elem(&inflight, &key);
	if (!s)
		return 0;
	__u64 delta = bpf_ktime_get_ns() - s->ts;
	struct bio_who w = s->who;
	bpf_map_delete_elem(&inflight, &key);

	if (targ_failed && !error)
		return 0;
	if (delta < targ_min_ns)
		return 0;

	struct bio_disk_key dk = { .dev = key.dev, .op = key.op };
	struct bio_disk_stats *d = lookup_or_init(&disks, &dk, &empty_disk);
	if (d) {
		__sync_fetch_and_add(&d->count, 1);
		__sync_fetch_and_add(&d->bytes, bytes);
		__sync_fetch_and_add(&d->total_ns, delta);
		if (error)
			__sync_fetch_and_add(&d->errors, 1);
		hist_add(&d->hist, delta / 1000);
	}

	struct bio_proc_key pk = { .tgid = w.tgid, .dev = key.dev, .op = key.op };
	__builtin_memcpy(pk.comm, w.comm, sizeof(pk.comm));
	struct bio_proc_stats *p = lookup_or_init(&procs, &pk, &empty_proc);
	if (p) {
		__sync_fetch_and_add(&p->count, 1);
		__sync_fetch_and_add(&p->bytes, bytes);
		__sync_fetch_and_add(&p->total_ns, delta);
	}
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int tp_rq_complete(struct trace_event_raw_block_rq_completion *ctx)
{
	return rq_complete(ctx->dev, ctx->sector, op_of(ctx->rwbs[0], ctx->rwbs[1]),
			   (__u64)ctx->nr_sector << 9, ctx->error);
}

SEC("tracepoint/block/block_rq_complete")
int tp_rq_complete_old(struct trace_event_raw_block_rq_complete___old *ctx)
{
	return rq_complete(ctx->dev, ctx->sector, op_of(ctx->rwbs[0], ctx->rwbs[1]),
			   (__u64)ctx->nr_sector << 9, ctx->error);
}

char LICENSE[] SEC("license") = "GPL";
