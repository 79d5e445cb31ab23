package safeexec

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// keptCaps are what reading needs: files and /proc of other users
// (DAC_READ_SEARCH, SYS_PTRACE), raw sockets for ping and tcpdump
// (NET_RAW), and the kernel log and kallsyms (SYSLOG; the seccomp filter
// lets syslog(2) only read). Everything else goes, CAP_SYS_ADMIN,
// CAP_NET_ADMIN, CAP_KILL, CAP_SYS_MODULE and CAP_SYS_TIME among them.
var keptCaps = []struct {
	n    uint
	name string
}{
	{unix.CAP_DAC_READ_SEARCH, "cap_dac_read_search"},
	{unix.CAP_SYS_PTRACE, "cap_sys_ptrace"},
	{unix.CAP_NET_RAW, "cap_net_raw"},
	{unix.CAP_SYSLOG, "cap_syslog"},
}

func keptCapNames() []string {
	out := make([]string, len(keptCaps))
	for i, c := range keptCaps {
		out[i] = c.name
	}
	return out
}

func keptCapMask() [2]uint32 {
	var m [2]uint32
	for _, c := range keptCaps {
		m[c.n/32] |= 1 << (c.n % 32)
	}
	return m
}

func lastCap() uint {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
			return uint(n)
		}
	}
	return unix.CAP_LAST_CAP
}

// dropCapabilities reduces the bounding set, then the effective,
// permitted and inheritable sets, of the calling thread to keptCaps.
// After execve a root target gets permitted = bounding, so this is what
// the tool holds. Without CAP_SETPCAP (not root) the bounding set cannot
// shrink, but then there is nothing to keep and no_new_privs stops file
// capabilities from adding any.
//
// With uid > 0 the thread also becomes that uid (and gid, with no
// supplementary groups) and the kept capabilities become ambient, the
// only way they survive execve of a non-root program without file
// capabilities. Credentials are per thread: the caller execs from this
// one, so only this thread is changed.
func dropCapabilities(uid int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	keep := keptCapMask()
	if data[unix.CAP_SETPCAP/32].Effective&(1<<(unix.CAP_SETPCAP%32)) != 0 {
		for c := uint(0); c <= lastCap(); c++ {
			if keep[c/32]&(1<<(c%32)) != 0 {
				continue
			}
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
			}
		}
	}
	if uid > 0 {
		if err := becomeUID(uid); err != nil {
			return err
		}
	}
	for i := range data {
		data[i].Effective &= keep[i]
		data[i].Permitted &= keep[i]
		data[i].Inheritable &= keep[i]
		if uid > 0 {
			// Ambient capabilities must be inheritable too.
			data[i].Inheritable = data[i].Permitted
		}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	// Ambient capabilities would survive exec outside the bounding rules.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if uid > 0 {
		for _, c := range keptCaps {
			if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c.n), 0, 0); err != nil {
				return fmt.Errorf("raise ambient %s: %w", c.name, err)
			}
		}
	}
	return nil
}

// becomeUID switches this thread to uid and gid uid with no supplementary
// groups, keeping its permitted capabilities (the effective set empties
// and is set again by the caller). Raw calls: the Go wrappers change
// every thread of the process.
func becomeUID(uid int) error {
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("keepcaps: %w", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", uid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", uid, e)
	}
	return nil
}
