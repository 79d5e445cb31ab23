package safeexec

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompTable is one architecture's view of the filter: the audit arch
// checked first (a syscall made through another ABI, such as i386's int
// 0x80 on amd64, has other numbers and is killed), and the numbers.
type seccompTable struct {
	name      string
	auditArch uint32
	// x32Bit, when non-zero, marks syscall numbers of amd64's x32 ABI,
	// which share the audit arch; they are refused.
	x32Bit  uint32
	denied  []uint32 // refused with EPERM
	signals []uint32 // allowed only when arg0 (a pid or tgid) is our own pid
	ptrace  uint32
	syslog  uint32 // allowed only for reading actions
}

// errNoSeccompArch is returned on an architecture without a table: the
// sandbox then fails closed.
var errNoSeccompArch = errors.New("no seccomp table for this architecture")

func seccompArch() (*seccompTable, error) {
	if archTable == nil {
		return nil, errNoSeccompArch
	}
	return archTable, nil
}

// syslog(2) actions that only read (SYSLOG_ACTION_READ, READ_ALL,
// SIZE_UNREAD, SIZE_BUFFER); clearing the ring buffer or changing the
// console level is refused although CAP_SYSLOG is kept for reading.
var syslogReadActions = []uint32{2, 3, 9, 10}

// Offsets in struct seccomp_data; both supported architectures are
// little-endian, so the low half of args[0] is at 16.
const (
	seccompDataNr      = 0
	seccompDataArch    = 4
	seccompDataArg0Low = 16
)

// bpfAsm builds a classic BPF program with forward jumps to labels.
type bpfAsm struct {
	insns  []unix.SockFilter
	fixups []bpfFixup
	labels map[string]int
}

type bpfFixup struct {
	at     int
	jt, jf string
}

func (a *bpfAsm) stmt(code uint16, k uint32) {
	a.insns = append(a.insns, unix.SockFilter{Code: code, K: k})
}

// jump emits a conditional jump; an empty label means the next instruction.
func (a *bpfAsm) jump(code uint16, k uint32, jt, jf string) {
	a.fixups = append(a.fixups, bpfFixup{at: len(a.insns), jt: jt, jf: jf})
	a.insns = append(a.insns, unix.SockFilter{Code: code, K: k})
}

func (a *bpfAsm) label(name string) { a.labels[name] = len(a.insns) }

func (a *bpfAsm) assemble() ([]unix.SockFilter, error) {
	off := func(from int, name string) (uint8, error) {
		if name == "" {
			return 0, nil
		}
		to, ok := a.labels[name]
		if !ok {
			return 0, fmt.Errorf("bpf: no label %q", name)
		}
		d := to - from - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("bpf: jump to %q out of range (%d)", name, d)
		}
		return uint8(d), nil
	}
	for _, f := range a.fixups {
		jt, err := off(f.at, f.jt)
		if err != nil {
			return nil, err
		}
		jf, err := off(f.at, f.jf)
		if err != nil {
			return nil, err
		}
		a.insns[f.at].Jt, a.insns[f.at].Jf = jt, jf
	}
	return a.insns, nil
}

const (
	bpfLdW   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJset  = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	bpfRet   = unix.BPF_RET | unix.BPF_K
	retAllow = unix.SECCOMP_RET_ALLOW
	retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

// buildSeccompFilter returns the filter for a sandbox whose pid is self.
// The pid is the target's too: execve keeps it, and the Go runtime
// signals itself (tgkill) between installing the filter and exec.
func buildSeccompFilter(self int, allowPtrace bool) ([]unix.SockFilter, error) {
	t, err := seccompArch()
	if err != nil {
		return nil, err
	}
	if self <= 0 {
		return nil, fmt.Errorf("bad pid %d", self)
	}
	a := &bpfAsm{labels: map[string]int{}}
	a.stmt(bpfLdW, seccompDataArch)
	a.jump(bpfJeq, t.auditArch, "", "kill")
	a.stmt(bpfLdW, seccompDataNr)
	if t.x32Bit != 0 {
		a.jump(bpfJset, t.x32Bit, "deny", "")
	}
	for _, nr := range t.denied {
		a.jump(bpfJeq, nr, "deny", "")
	}
	if !allowPtrace {
		a.jump(bpfJeq, t.ptrace, "deny", "")
	}
	for _, nr := range t.signals {
		a.jump(bpfJeq, nr, "signal", "")
	}
	a.jump(bpfJeq, t.syslog, "syslog", "")
	a.stmt(bpfRet, retAllow)

	a.label("signal")
	a.stmt(bpfLdW, seccompDataArg0Low)
	a.jump(bpfJeq, uint32(self), "allow", "deny")

	a.label("syslog")
	a.stmt(bpfLdW, seccompDataArg0Low)
	for _, act := range syslogReadActions {
		a.jump(bpfJeq, act, "allow", "")
	}
	a.label("deny")
	a.stmt(bpfRet, retEPERM)
	a.label("allow")
	a.stmt(bpfRet, retAllow)
	a.label("kill")
	a.stmt(bpfRet, retKill)
	return a.assemble()
}

// installSeccomp loads the filter on the calling thread; it needs
// no_new_privs (or CAP_SYS_ADMIN) and is inherited across execve.
func installSeccomp(filter []unix.SockFilter) error {
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER): %w", errno)
	}
	return nil
}
