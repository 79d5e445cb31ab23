/* SPDX-License-Identifier: GPL-2.0 */
/* Includes and small helpers every catalog program shares. */
#ifndef NANNY_COMMON_BPF_H
#define NANNY_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16

/* Look a key up, inserting init first when it is missing; NULL only when
 * the map is full. */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *init)
{
	void *val = bpf_map_lookup_elem(map, key);
	if (val)
		return val;
	/* BPF_NOEXIST: a racing CPU may have inserted it, that is fine. */
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

#endif
