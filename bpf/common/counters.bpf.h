/* SPDX-License-Identifier: GPL-2.0 */
/* Per-CPU counters, which Go adds up with catalog.SumPerCPU: an increment
 * on the hot path needs no atomic and bounces no cache line between CPUs. */
#ifndef NANNY_COUNTERS_BPF_H
#define NANNY_COUNTERS_BPF_H

/* counter_inc adds one to slot of a per-CPU array of __u64. */
static __always_inline void counter_inc(void *map, __u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(map, &slot);
	if (n)
		*n += 1; /* per-CPU: no atomic needed */
}

#endif
