//go:build amd64 || arm64

package safeexec

import "golang.org/x/sys/unix"

// commonDenied lists the syscalls that change the host (or leave the
// sandbox) and that no read-only diagnostic needs. unix.SYS_* carry the
// numbers of the architecture being built.
func commonDenied() []uint32 {
	return []uint32{
		unix.SYS_REBOOT,
		unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
		unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
		unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT,
		unix.SYS_MOVE_MOUNT, unix.SYS_FSMOUNT, unix.SYS_FSOPEN,
		unix.SYS_FSCONFIG, unix.SYS_FSPICK, unix.SYS_OPEN_TREE, unix.SYS_MOUNT_SETATTR,
		unix.SYS_SWAPON, unix.SYS_SWAPOFF,
		unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_ADJTIMEX, unix.SYS_CLOCK_ADJTIME,
		unix.SYS_SETHOSTNAME, unix.SYS_SETDOMAINNAME,
		unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN,
		unix.SYS_UNSHARE, unix.SYS_SETNS,
		// A tracer can rewrite the traced process's memory, registers and
		// signals: no read-only sandbox survives ptrace of a host process.
		unix.SYS_PTRACE, unix.SYS_PROCESS_VM_WRITEV,
		// io_uring performs socket options and file operations without
		// passing through this filter.
		unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
		// Keyrings are shared by every process of a uid.
		unix.SYS_ADD_KEY, unix.SYS_KEYCTL, unix.SYS_REQUEST_KEY,
		// Priorities of other processes of the same uid (PRIO_USER 0 is
		// all of root's).
		unix.SYS_SETPRIORITY, unix.SYS_IOPRIO_SET,
		// pidfd_send_signal names its target by a descriptor, which the
		// filter cannot compare with our pid.
		unix.SYS_PIDFD_SEND_SIGNAL,
	}
}

// commonSignals take a pid or tgid as their first argument.
func commonSignals() []uint32 {
	return []uint32{
		unix.SYS_KILL, unix.SYS_TKILL, unix.SYS_TGKILL,
		unix.SYS_RT_SIGQUEUEINFO, unix.SYS_RT_TGSIGQUEUEINFO,
	}
}

// commonSelfOrZero act on the process named by arg0 (0 for the caller).
func commonSelfOrZero() []uint32 {
	return []uint32{
		unix.SYS_SCHED_SETAFFINITY, unix.SYS_SCHED_SETSCHEDULER, unix.SYS_SCHED_SETPARAM,
		unix.SYS_SCHED_SETATTR, unix.SYS_MIGRATE_PAGES, unix.SYS_MOVE_PAGES,
	}
}

// commonOpens are the open calls both architectures have.
func commonOpens() []openCall {
	return []openCall{{unix.SYS_OPENAT, 2}, {unix.SYS_OPEN_BY_HANDLE_AT, 2}}
}
