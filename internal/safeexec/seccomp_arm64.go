package safeexec

import "golang.org/x/sys/unix"

var archTable = &seccompTable{
	name:       "arm64",
	auditArch:  unix.AUDIT_ARCH_AARCH64,
	denied:     commonDenied(),
	signals:    commonSignals(),
	selfOrZero: commonSelfOrZero(),
	prlimit:    unix.SYS_PRLIMIT64,
	syslog:     unix.SYS_SYSLOG,
	setsockopt: unix.SYS_SETSOCKOPT,
	opens:      commonOpens(),
	creat:      0,
	openat2:    unix.SYS_OPENAT2,
}
