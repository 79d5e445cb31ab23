//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* Not a catalog entry: the streaming benchmark's producer. Run through
 * BPF_PROG_TEST_RUN with a repeat count, it pushes one event per run
 * through the same emit() path the entries use, so the benchmark measures
 * the real transport and the Go drain. */
#include "common/common.bpf.h"
#include "common/events.bpf.h"

struct bench_event {
	__u64 seq;
	__u64 ts_ns;
	__u32 cpu;
	__u32 pad;
	__u64 value;
};

#define MAX_PER_RUN 256

__u64 seq = 0;
/* Events per run: a test run costs microseconds of its own, so one event
 * per run would measure the test-run machinery, not the transport. */
const volatile __u32 per_run = 1;

SEC("xdp")
int bench_emit(struct xdp_md *ctx)
{
	struct bench_event e = {};

	for (__u32 i = 0; i < MAX_PER_RUN; i++) {
		if (i >= per_run)
			break;
		/* No fetching atomic (5.12+): the count is what the benchmark
		 * reads; the event carries an approximate sequence. */
		__sync_fetch_and_add(&seq, 1);
		e.seq = seq;
		e.ts_ns = bpf_ktime_get_ns();
		e.cpu = bpf_get_smp_processor_id();
		emit(ctx, &e, sizeof(e));
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
