package safeexec

import "golang.org/x/sys/unix"

var archTable = &seccompTable{
	name:       "amd64",
	auditArch:  unix.AUDIT_ARCH_X86_64,
	x32Bit:     0x40000000, // __X32_SYSCALL_BIT
	denied:     append(commonDenied(), unix.SYS_IOPL, unix.SYS_IOPERM),
	signals:    commonSignals(),
	selfOrZero: commonSelfOrZero(),
	prlimit:    unix.SYS_PRLIMIT64,
	syslog:     unix.SYS_SYSLOG,
	setsockopt: unix.SYS_SETSOCKOPT,
	opens:      append(commonOpens(), openCall{unix.SYS_OPEN, 1}),
	creat:      unix.SYS_CREAT,
	openat2:    unix.SYS_OPENAT2,
}
