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
	// selfOrZero act on the process named by arg0: allowed for 0 (the
	// caller) and our own pid. As root the sandbox shares its uid with
	// most of the host, which is all the kernel asks before letting it
	// move another process's CPUs, policy or pages.
	selfOrZero []uint32
	prlimit    uint32 // any process may be read, only ourselves changed
	syslog     uint32 // allowed only for reading actions
	setsockopt uint32 // PACKET_ADD_MEMBERSHIP refused: it turns on promiscuous mode
	// opens take flags that the filter checks where Landlock is missing.
	opens   []openCall
	creat   uint32 // 0 where the architecture has none
	openat2 uint32 // flags in a struct the filter cannot read: ENOSYS
}

// openCall is a system call that opens a file and the index of its flags
// argument.
type openCall struct {
	nr       uint32
	flagsArg int
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
// little-endian, so the low half of args[i] is at 16+8i.
const (
	seccompDataNr      = 0
	seccompDataArch    = 4
	seccompDataArg0Low = 16
)

func argLow(i int) uint32  { return uint32(seccompDataArg0Low + 8*i) }
func argHigh(i int) uint32 { return argLow(i) + 4 }

// writeOpenFlags are the open flags that can change a file or a device:
// where Landlock is missing, read-only mounts stop writes to files but
// not to device nodes, so the filter refuses such opens altogether.
const writeOpenFlags = unix.O_WRONLY | unix.O_RDWR | unix.O_CREAT | unix.O_TRUNC

// Values of setsockopt's level and optname for the promiscuous-mode
// request of packet sockets.
const (
	solPacket           = 263 // SOL_PACKET
	packetAddMembership = 1   // PACKET_ADD_MEMBERSHIP
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
	bpfLdW    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeq    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJset   = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	bpfRet    = unix.BPF_RET | unix.BPF_K
	retAllow  = unix.SECCOMP_RET_ALLOW
	retEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retEACCES = unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	retKill   = unix.SECCOMP_RET_KILL_PROCESS
)

// buildSeccompFilter returns the filter for a sandbox whose pid is self.
// The pid is the target's too: execve keeps it, and the Go runtime
// signals itself (tgkill) between installing the filter and exec.
// noWrites adds the rule for sandboxes without Landlock: no open for
// writing, anywhere.
func buildSeccompFilter(self int, noWrites bool) ([]unix.SockFilter, error) {
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
	for _, nr := range t.signals {
		a.jump(bpfJeq, nr, "signal", "")
	}
	for _, nr := range t.selfOrZero {
		a.jump(bpfJeq, nr, "self_or_zero", "")
	}
	a.jump(bpfJeq, t.prlimit, "prlimit", "")
	a.jump(bpfJeq, t.syslog, "syslog", "")
	a.jump(bpfJeq, t.setsockopt, "setsockopt", "")
	if noWrites {
		for _, oc := range t.opens {
			a.jump(bpfJeq, oc.nr, fmt.Sprintf("open_flags_%d", oc.flagsArg), "")
		}
		if t.creat != 0 {
			a.jump(bpfJeq, t.creat, "deny_write", "")
		}
		a.jump(bpfJeq, t.openat2, "enosys", "")
	}
	a.stmt(bpfRet, retAllow)

	a.label("signal")
	a.stmt(bpfLdW, argLow(0))
	a.jump(bpfJeq, uint32(self), "allow", "deny")

	a.label("self_or_zero")
	a.stmt(bpfLdW, argLow(0))
	a.jump(bpfJeq, 0, "allow", "")
	a.jump(bpfJeq, uint32(self), "allow", "deny")

	// prlimit64(pid, resource, new, old): a NULL new limit only reads.
	a.label("prlimit")
	a.stmt(bpfLdW, argLow(0))
	a.jump(bpfJeq, 0, "allow", "")
	a.jump(bpfJeq, uint32(self), "allow", "")
	a.stmt(bpfLdW, argLow(2))
	a.jump(bpfJeq, 0, "", "deny")
	a.stmt(bpfLdW, argHigh(2))
	a.jump(bpfJeq, 0, "allow", "deny")

	a.label("setsockopt")
	a.stmt(bpfLdW, argLow(1))
	a.jump(bpfJeq, solPacket, "", "allow")
	a.stmt(bpfLdW, argLow(2))
	a.jump(bpfJeq, packetAddMembership, "deny", "allow")

	if noWrites {
		for _, arg := range openFlagArgs(t.opens) {
			a.label(fmt.Sprintf("open_flags_%d", arg))
			a.stmt(bpfLdW, argLow(arg))
			a.jump(bpfJset, writeOpenFlags, "deny_write", "allow")
		}
		a.label("deny_write")
		a.stmt(bpfRet, retEACCES)
		a.label("enosys")
		a.stmt(bpfRet, retENOSYS)
	}

	a.label("syslog")
	a.stmt(bpfLdW, argLow(0))
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

func openFlagArgs(opens []openCall) []int {
	var out []int
	for _, oc := range opens {
		seen := false
		for _, x := range out {
			seen = seen || x == oc.flagsArg
		}
		if !seen {
			out = append(out, oc.flagsArg)
		}
	}
	return out
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
