package resolver

import "strings"

// syscallNames are the Linux system call names (their syscalls:sys_enter_*
// tracepoints, taken from a 6.18 x86_64 kernel, plus the arm64-only
// renameat and the legacy 32-bit names models still use). A bare word in
// this set is a system call whatever the request's type says; arm64 lacks
// some of them (open, fork...), which the tracing entries report at run
// time.
var syscallNames = setOf(`
accept accept4 access acct add_key adjtimex alarm arch_prctl bind bpf brk cachestat capget
capset chdir chmod chown chroot clock_adjtime clock_getres clock_gettime clock_nanosleep
clock_settime clone clone3 close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_pwait epoll_pwait2 epoll_wait eventfd eventfd2
execve execveat exit exit_group faccessat faccessat2 fadvise64 fallocate fanotify_init
fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchownat fcntl fdatasync fgetxattr
file_getattr file_setattr flistxattr flock fork fremovexattr fsconfig fsetxattr fsmount fsopen
fspick fstatfs fsync ftruncate futex futex_requeue futex_wait futex_waitv futex_wake futimesat
get_mempolicy get_robust_list getcpu getcwd getdents getdents64 getegid geteuid getgid
getgroups getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresuid getrlimit getrusage getsid getsockname getsockopt gettid gettimeofday getuid getxattr
getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy
io_getevents io_pgetevents io_setup io_submit io_uring_enter io_uring_register io_uring_setup
ioctl ioperm iopl ioprio_get ioprio_set kcmp keyctl kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lgetxattr link linkat listen listmount
listxattr listxattrat llistxattr lremovexattr lseek lsetxattr lsm_get_self_attr
lsm_list_modules lsm_set_self_attr madvise mbind membarrier memfd_create memfd_secret
migrate_pages mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap modify_ldt mount
mount_setattr move_mount move_pages mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedsend mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstat newfstatat newlstat newstat newuname open
open_by_handle_at open_tree open_tree_attr openat openat2 pause perf_event_open personality
pidfd_getfd pidfd_open pidfd_send_signal pipe pipe2 pivot_root pkey_alloc pkey_free
pkey_mprotect poll ppoll prctl pread64 preadv preadv2 prlimit64 process_madvise
process_mrelease process_vm_readv process_vm_writev pselect6 ptrace pwrite64 pwritev pwritev2
quotactl quotactl_fd read readahead readlink readlinkat readv reboot recvfrom recvmmsg recvmsg
remap_file_pages removexattr removexattrat rename renameat renameat2 request_key
restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo sched_get_priority_max
sched_get_priority_min sched_getaffinity sched_getattr sched_getparam sched_getscheduler
sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam sched_setscheduler
sched_yield seccomp select semctl semget semop semtimedop sendfile64 sendmmsg sendmsg sendto
set_mempolicy set_mempolicy_home_node set_robust_list set_tid_address setdomainname setfsgid
setfsuid setgid setgroups sethostname setitimer setns setpgid setpriority setregid setresgid
setresuid setreuid setrlimit setsid setsockopt settimeofday setuid setxattr setxattrat shmat
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 socket socketpair splice statfs
statmount statx swapoff swapon symlink symlinkat sync sync_file_range syncfs sysfs sysinfo
syslog tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_settime
timerfd_create timerfd_gettime timerfd_settime times tkill truncate umask umount unlink
unlinkat unshare uprobe uretprobe userfaultfd ustat utime utimensat utimes vfork vhangup
vmsplice wait4 waitid write writev
renameat pread pwrite stat fstat lstat uname sendfile stat64 fstat64 lstat64 mmap2 socketcall ipc
sigaction sigprocmask
`)

func setOf(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

// syscallHints name the entry that answers a system call's question when
// that entry's Info does not list the call itself (entries that attach
// elsewhere, e.g. to sched or vfs events). An entry's own Tracepoints and
// Functions come first; a hint applies only when its entry is offered.
var syscallHints = map[string]string{
	"open": "open", "openat": "open", "openat2": "open", "creat": "open", "open_by_handle_at": "open",
	"execve": "exec", "execveat": "exec",
	"exit": "exit", "exit_group": "exit",
	"kill": "signals", "tkill": "signals", "tgkill": "signals", "rt_sigqueueinfo": "signals",
	"rt_tgsigqueueinfo": "signals", "pidfd_send_signal": "signals",
	"read": "fileio", "write": "fileio", "pread64": "fileio", "pwrite64": "fileio", "pread": "fileio",
	"pwrite": "fileio", "readv": "fileio", "writev": "fileio", "preadv": "fileio", "pwritev": "fileio",
	"preadv2": "fileio", "pwritev2": "fileio",
	"connect": "tcpconnect",
}

// syscallPrefixes are the kernel symbol and tracepoint spellings of a
// system call on each architecture; stripping one leaves the call's name.
var syscallPrefixes = []string{
	"__x64_sys_", "__arm64_sys_", "__ia32_compat_sys_", "__ia32_sys_", "__x32_compat_sys_",
	"__s390x_sys_", "__riscv_sys_", "__se_sys_", "__do_sys_", "__se_compat_sys_",
	"compat_sys_", "sys_enter_", "sys_exit_", "ksys_", "__sys_", "sys_",
}

// syscallOf returns the system call a kernel symbol or tracepoint event
// name stands for ("__arm64_sys_openat" -> "openat").
func syscallOf(word string) (string, bool) {
	for _, p := range syscallPrefixes {
		if s, ok := strings.CutPrefix(word, p); ok && s != "" {
			if syscallNames[s] || p != "sys_" && p != "__sys_" && p != "ksys_" {
				return s, true
			}
		}
	}
	return "", false
}
