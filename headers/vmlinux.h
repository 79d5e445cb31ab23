/* SPDX-License-Identifier: GPL-2.0 */
/* Picks the kernel type dump for the architecture bpf2go compiles for. */
#if defined(__TARGET_ARCH_x86)
#include "vmlinux_x86.h"
#elif defined(__TARGET_ARCH_arm64)
#include "vmlinux_arm64.h"
#else
#error "no vmlinux header for this architecture: add one with headers/update.sh"
#endif
