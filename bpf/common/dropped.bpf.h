/* SPDX-License-Identifier: GPL-2.0 */
/* dropped counts the updates an aggregating program could not make because
 * a map was full; Go reads it with catalog.SumPerCPU and reports it
 * (Result.Lost or a note), so a full map is a number in the result, never
 * a silent undercount. */
#ifndef NANNY_DROPPED_BPF_H
#define NANNY_DROPPED_BPF_H

#include "counters.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

static __always_inline void count_dropped(void)
{
	counter_inc(&dropped, 0);
}

#endif
