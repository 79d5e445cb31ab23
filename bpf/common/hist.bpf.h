/* SPDX-License-Identifier: GPL-2.0 */
/* log2 histograms aggregated in the kernel; Go reads them with
 * catalog.Log2Histogram. Slot i counts values in [2^i, 2^(i+1)), slot 0
 * also counts zero, the last slot everything above. */
#ifndef NANNY_HIST_BPF_H
#define NANNY_HIST_BPF_H

#define MAX_SLOTS 27

struct hist {
	__u32 slots[MAX_SLOTS];
};

static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4; v >>= r;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 hi = v >> 32;
	if (hi)
		return log2_u32(hi) + 32;
	return log2_u32(v);
}

/* hist_slot is value's slot as an index the verifier can bound. It is
 * 64-bit and pinned to one register after the clamp: with a 32-bit slot
 * clang bound-checks one copy and indexes with another, and the verifiers
 * of 5.10 and 6.1 reject the access as unbounded. */
static __always_inline __u64 hist_slot(__u64 value)
{
	__u64 slot = log2_u64(value);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	asm volatile("" : "+r"(slot));
	return slot;
}

/* hist_add counts value in a histogram shared between CPUs. */
static __always_inline void hist_add(struct hist *h, __u64 value)
{
	__u64 slot = hist_slot(value);
	if (slot < MAX_SLOTS)
		__sync_fetch_and_add(&h->slots[slot], 1);
}

/* hist_add_percpu counts value in a per-CPU histogram: no atomic needed. */
static __always_inline void hist_add_percpu(struct hist *h, __u64 value)
{
	__u64 slot = hist_slot(value);
	if (slot < MAX_SLOTS)
		h->slots[slot]++;
}

#endif
