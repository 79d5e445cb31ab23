package safeexec

import "golang.org/x/sys/unix"

var archTable = &seccompTable{
	name:      "arm64",
	auditArch: unix.AUDIT_ARCH_AARCH64,
	denied:    commonDenied(),
	signals:   commonSignals(),
	ptrace:    unix.SYS_PTRACE,
	syslog:    unix.SYS_SYSLOG,
}
