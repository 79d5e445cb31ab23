package safeexec

import "golang.org/x/sys/unix"

var archTable = &seccompTable{
	name:      "amd64",
	auditArch: unix.AUDIT_ARCH_X86_64,
	x32Bit:    0x40000000, // __X32_SYSCALL_BIT
	denied:    append(commonDenied(), unix.SYS_IOPL, unix.SYS_IOPERM),
	signals:   commonSignals(),
	ptrace:    unix.SYS_PTRACE,
	syslog:    unix.SYS_SYSLOG,
}
