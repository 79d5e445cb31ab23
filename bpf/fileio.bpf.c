//go:build ignore
/* SPDX-License-Identifier: GPL-2.0 */
/* fileio: who reads and writes what. The read/write family of syscall
 * tracepoints (read, write, pread64, pwrite64, readv, writev, preadv,
 * pwritev): the enter side resolves the fd to its struct file, the exit
 * side adds ops, bytes and latency to a per-(process, file) counter and a
 * log2 latency histogram per direction. Nothing streams: the question is a
 * top-N.
 *
 * A file is identified by (device, inode), and its path is built once per
 * file in the kernel, at first sight, by walking dentries and mounts: the
 * process (or the fd) may be gone by the time Go reads the maps, so
 * resolving /proc/<pid>/fd at the end would miss exactly the short-lived
 * writers a diagnosis is after. */
#include "common/common.bpf.h"
#include "common/filter.bpf.h"
#include "common/dropped.bpf.h"
#include "common/hist.bpf.h"

#define E2BIG 7 /* what a full hash map's update returns, negated */

#define OP_READ 0
#define OP_WRITE 1

#define PATH_BUF 512
#define NAME_READ 128   /* longer components are cut to 127 characters */
#define MAX_DEPTH 32    /* dentries and mount crossings walked */

/* Bits of file_name.flags */
#define NAME_ROOT 1      /* the walk reached the root: the path is absolute */
#define NAME_TRUNCATED 2 /* the walk stopped early: leading components are missing */
#define NAME_PSEUDO 4    /* a pseudo file (socket, pipe, anon inode): buf holds its dentry name */

struct file_key {
	__u64 ino;
	__u32 dev;
	__u32 tgid;
};

struct file_stats {
	__u64 reads;
	__u64 writes;
	__u64 read_bytes;
	__u64 write_bytes;
	__u64 read_ns;
	__u64 write_ns;
	__u64 errors;
	char comm[TASK_COMM_LEN];
};

struct file_id {
	__u64 ino;
	__u32 dev;
	__u32 pad;
};

/* buf holds the path's components leaf first, each NUL-terminated: Go
 * reverses them. Writing them at increasing offsets keeps every access
 * bounded for the verifier. */
struct file_name {
	__u32 mode;   /* inode i_mode: the file type */
	__u32 flags;
	__u32 size;   /* bytes used in buf */
	__u32 depth;  /* components in buf */
	char buf[PATH_BUF + NAME_READ]; /* slack: a read starts below PATH_BUF - NAME_READ */
};

struct pending_io {
	__u64 ts;
	__u64 file;   /* struct file *, held by the syscall until it returns */
	__u32 op;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct pending_io);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct file_key);
	__type(value, struct file_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct file_id);
	__type(value, struct file_name);
} names SEC(".maps");

/* [OP_READ], [OP_WRITE]: latency in ns. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct hist);
} latency SEC(".maps");

/* Too big for the 512-byte stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct file_name);
} scratch SEC(".maps");

static __always_inline int on_enter(struct trace_event_raw_sys_enter *ctx, __u32 op)
{
	if (!filter_current())
		return 0;

	unsigned int fd = (unsigned int)ctx->args[0];
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return 0; /* EBADF: no file to account to */

	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_io p = {.ts = bpf_ktime_get_ns(), .file = (__u64)file, .op = op};
	bpf_map_update_elem(&pending, &tid, &p, BPF_ANY);
	return 0;
}

/* off_of re-reads the used size from the map value on every step: the
 * verifier then knows only the mask's bound, so the walk's states look
 * alike whatever lengths came before and prune, instead of multiplying with
 * every possible offset range (the walk did not verify past 16 steps when
 * the offset lived in a register). */
static __always_inline __u32 off_of(struct file_name *n)
{
	return *(volatile __u32 *)&n->size & (PATH_BUF - 1);
}

static __always_inline void build_name(struct file *file, struct file_name *n)
{
	struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vm = BPF_CORE_READ(file, f_path.mnt);
	/* struct mount embeds the vfsmount; its offset is relocated. */
	__u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	struct mount *m = (struct mount *)((void *)vm - mnt_off);

	n->flags = 0;
	n->depth = 0;
	n->size = 0;
	for (int i = 0; i < MAX_DEPTH; i++) {
		if (d == BPF_CORE_READ(vm, mnt_root)) {
			struct mount *parent = BPF_CORE_READ(m, mnt_parent);
			if (parent == m) {
				n->flags |= NAME_ROOT;
				return;
			}
			/* Cross into the parent mount at the mountpoint. */
			d = BPF_CORE_READ(m, mnt_mountpoint);
			m = parent;
			vm = (struct vfsmount *)((void *)parent + mnt_off);
			continue;
		}
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		if (parent == d && n->depth > 0) {
			/* Its own parent but no mount root: the root of a
			 * detached tree. */
			n->flags |= NAME_TRUNCATED;
			return;
		}
		__u32 off = off_of(n);
		if (off > PATH_BUF - NAME_READ) {
			n->flags |= NAME_TRUNCATED;
			return;
		}
		long len = bpf_probe_read_kernel_str(&n->buf[off], NAME_READ, BPF_CORE_READ(d, d_name.name));
		if (len <= 0) {
			n->flags |= NAME_TRUNCATED;
			return;
		}
		n->size += len;
		n->depth++;
		if (parent == d) {
			/* A pseudo file (socket, pipe, anon inode): its own
			 * dentry, named by its type. */
			n->flags |= NAME_PSEUDO;
			return;
		}
		d = parent;
	}
	n->flags |= NAME_TRUNCATED;
}

static __always_inline void remember_name(struct file *file, struct file_id *id, __u32 mode)
{
	if (bpf_map_lookup_elem(&names, id))
		return;
	__u32 zero = 0;
	struct file_name *n = bpf_map_lookup_elem(&scratch, &zero);
	if (!n)
		return;
	n->mode = mode;
	build_name(file, n);
	/* BPF_NOEXIST: another CPU may have named it meanwhile. */
	if (bpf_map_update_elem(&names, id, n, BPF_NOEXIST) == -E2BIG)
		count_dropped();
}

SEC("tracepoint/syscalls/sys_exit_read")
int tp_exit_io(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct pending_io *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	__u64 lat = bpf_ktime_get_ns() - p->ts;
	struct file *file = (struct file *)p->file;
	__u32 op = p->op;
	bpf_map_delete_elem(&pending, &tid);

	long ret = ctx->ret;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct file_key key = {
		.ino = BPF_CORE_READ(inode, i_ino),
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.tgid = id >> 32,
	};
	struct file_stats *s = bpf_map_lookup_elem(&stats, &key);
	if (!s) {
		struct file_stats init = {};
		bpf_get_current_comm(init.comm, sizeof(init.comm));
		if (bpf_map_update_elem(&stats, &key, &init, BPF_NOEXIST) == -E2BIG) {
			count_dropped();
			return 0;
		}
		s = bpf_map_lookup_elem(&stats, &key);
		if (!s)
			return 0;
		struct file_id fid = {.ino = key.ino, .dev = key.dev};
		remember_name(file, &fid, BPF_CORE_READ(inode, i_mode));
	}
	if (ret < 0) {
		__sync_fetch_and_add(&s->errors, 1);
		return 0;
	}
	if (op == OP_READ) {
		__sync_fetch_and_add(&s->reads, 1);
		__sync_fetch_and_add(&s->read_bytes, ret);
		__sync_fetch_and_add(&s->read_ns, lat);
	} else {
		__sync_fetch_and_add(&s->writes, 1);
		__sync_fetch_and_add(&s->write_bytes, ret);
		__sync_fetch_and_add(&s->write_ns, lat);
	}
	struct hist *h = bpf_map_lookup_elem(&latency, &op);
	if (h)
		hist_add(h, lat);
	return 0;
}

/* One program per direction serves every syscall of that direction: they
 * all take the fd as their first argument. */
SEC("tracepoint/syscalls/sys_enter_read")
int tp_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(ctx, OP_READ);
}

SEC("tracepoint/syscalls/sys_enter_write")
int tp_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return on_enter(ctx, OP_WRITE);
}

char LICENSE[] SEC("license") = "GPL";
