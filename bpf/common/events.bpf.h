/* SPDX-License-Identifier: GPL-2.0 */
/* Streams events to Go through a ring buffer, or a perf buffer on kernels
 * without one (before 5.8). Go picks the mode before load (use_perfbuf) and
 * shrinks the unused map, so the verifier drops the other path.
 *
 * Every failed submission is counted in `lost`: nothing is dropped silently. */
#ifndef NANNY_EVENTS_BPF_H
#define NANNY_EVENTS_BPF_H

const volatile bool use_perfbuf = false;
/* Wake the reader only once this much data waits: a wakeup per event costs
 * tens of microseconds in the traced task, and Go polls on a short timer. */
const volatile __u64 wakeup_bytes = 64 * 1024;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events_perf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);
	if (n)
		*n += 1; /* per-CPU: no atomic needed */
}

/* emit copies size bytes of data to user space. size must be a constant or
 * bounded for the verifier. */
static __always_inline void emit(void *ctx, void *data, __u64 size)
{
	long err;

	if (use_perfbuf) {
		err = bpf_perf_event_output(ctx, &events_perf, BPF_F_CURRENT_CPU, data, size);
	} else {
		__u64 flags = BPF_RB_NO_WAKEUP;
		if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
			flags = BPF_RB_FORCE_WAKEUP;
		err = bpf_ringbuf_output(&events, data, size, flags);
	}
	if (err)
		count_lost();
}

#endif
