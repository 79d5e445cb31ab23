package safeexec

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The helper is this test binary run again with helperOpEnv set: inside
// the sandbox it makes one system call directly and prints its errno, so
// a test sees the kernel's answer rather than a tool's message. Every
// call is chosen so that even if the sandbox let it through, the host
// would be unchanged (invalid arguments, a non-module file, a UTS or
// network namespace of the test's own).
const (
	helperOpEnv  = "NANNYAGENT_SANDBOX_TEST_OP"
	helperPidEnv = "NANNYAGENT_SANDBOX_TEST_PID"
	helperDirEnv = "NANNYAGENT_SANDBOX_TEST_DIR"
)

func errnoName(err error) string {
	if err == nil {
		return "OK"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return strconv.Itoa(int(e))
	}
	return err.Error()
}

func rawErr(errno unix.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

func sandboxHelper(op string) int {
	pid, _ := strconv.Atoi(os.Getenv(helperPidEnv))
	var err error
	switch op {
	case "finit_module":
		// The test binary is no module: an unsandboxed kernel would
		// refuse it after the permission checks.
		var fd int
		fd, err = unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.FinitModule(fd, "", 0)
		}
	case "init_module":
		err = unix.InitModule([]byte("not a module"), "")
	case "delete_module":
		err = unix.DeleteModule("nannyagent_no_such_module", 0)
	case "clock_settime":
		// tv_nsec out of range: EINVAL if it ever got past the sandbox.
		err = badClockSettime()
	case "settimeofday":
		tv := unix.NsecToTimeval(time.Now().UnixNano())
		tv.Usec = 2_000_000 // out of range
		_, _, e := unix.Syscall(unix.SYS_SETTIMEOFDAY, uintptr(unsafe.Pointer(&tv)), 0, 0)
		err = rawErr(e)
	case "adjtimex":
		// modes 0 only reads; the filter refuses the call whatever it asks.
		_, err = unix.Adjtimex(&unix.Timex{})
	case "kill":
		err = unix.Kill(pid, unix.SIGKILL)
	case "tgkill":
		err = unix.Tgkill(pid, pid, unix.SIGKILL)
	case "kill_self":
		err = unix.Kill(os.Getpid(), 0)
	case "mount":
		err = unix.Mount("none", os.TempDir(), "tmpfs", 0, "")
	case "umount":
		err = unix.Unmount("/nonexistent-nannyagent", 0)
	case "unshare":
		err = unix.Unshare(unix.CLONE_NEWNS)
	case "setns":
		err = unix.Setns(-1, 0)
	case "reboot":
		// No valid magic: refused by the kernel even without the sandbox.
		_, _, e := unix.Syscall6(unix.SYS_REBOOT, 0, 0, 0, 0, 0, 0)
		err = rawErr(e)
	case "sethostname":
		// Run in a UTS namespace of the test's own.
		err = unix.Sethostname([]byte("nannyagent-canary"))
	case "swapon":
		_, _, e := unix.Syscall(unix.SYS_SWAPON, uintptr(unsafe.Pointer(&[]byte("/nonexistent-nannyagent\x00")[0])), 0, 0)
		err = rawErr(e)
	case "bpf":
		_, _, e := unix.Syscall(unix.SYS_BPF, 0xffff, 0, 0)
		err = rawErr(e)
	case "perf_event_open":
		_, err = unix.PerfEventOpen(&unix.PerfEventAttr{Type: 0xffff}, 0, -1, -1, 0)
	case "ptrace":
		// An invalid request: EIO if it ever got past the sandbox.
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, 0xdead, uintptr(os.Getppid()), 0, 0, 0, 0)
		err = rawErr(e)
	case "syslog_clear":
		_, _, e := unix.Syscall(unix.SYS_SYSLOG, 5, 0, 0) // SYSLOG_ACTION_CLEAR
		err = rawErr(e)
	case "syslog_size":
		_, _, e := unix.Syscall(unix.SYS_SYSLOG, 10, 0, 0) // SYSLOG_ACTION_SIZE_BUFFER
		err = rawErr(e)
	case "ifdown":
		err = setLinkUp("lo", false)
	case "caps":
		b, rerr := os.ReadFile("/proc/self/status")
		if rerr != nil {
			fmt.Println(rerr)
			return 1
		}
		os.Stdout.Write(b)
		return 0
	case "netns":
		return netnsHelper()
	case "landlock_only":
		return landlockOnlyHelper()
	case "seccomp_only":
		return seccompOnlyHelper()
	case "seccomp_nowrites":
		return noWritesHelper()
	case "write_opens":
		fmt.Printf("%s tmpdir=%q\n", writeOpens(os.Getenv(helperDirEnv)), os.Getenv("TMPDIR"))
		return 0
	case "promisc":
		return promiscHelper()
	case "tcpdump":
		return tcpdumpHelper()
	case "proc_reads":
		fmt.Println(procReads(pid))
		return 0
	case "netadmin_reads":
		fmt.Printf("nft_getgen=%s ipt_get_info=%s ethtool_gregs=%s\n", errnoName(nftGetGen()), errnoName(iptGetInfo()), errnoName(ethtoolGetRegs("lo")))
		return 0
	case "other_processes":
		fmt.Println(otherProcessCalls(pid))
		return 0
	default:
		fmt.Fprintf(os.Stderr, "unknown helper op %q\n", op)
		return 2
	}
	fmt.Println(errnoName(err))
	return 0
}

// ifreqFlags is struct ifreq with the ifr_flags member of its union.
type ifreqFlags struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

func linkIsUp(name string) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var r ifreqFlags
	copy(r.name[:], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&r))); e != 0 {
		return false, e
	}
	return r.flags&unix.IFF_UP != 0, nil
}

func setLinkUp(name string, up bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var r ifreqFlags
	copy(r.name[:], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&r))); e != 0 {
		return e
	}
	if up {
		r.flags |= unix.IFF_UP
	} else {
		r.flags &^= unix.IFF_UP
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&r))); e != 0 {
		return e
	}
	return nil
}

// netnsHelper runs unsandboxed in a network namespace the test made: it
// brings that namespace's lo up, asks sandboxed commands to take it down
// and reports whether it is still up. The host's interfaces are never in
// reach of this process.
func netnsHelper() int {
	if err := setLinkUp("lo", true); err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	up, err := linkIsUp("lo")
	fmt.Printf("up-before=%v %v\n", up, errnoName(err))

	self, err := os.Executable()
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	cmd, err := SandboxCommand(context.Background(), []string{self})
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	cmd.Env = append(cmd.Env, helperOpEnv+"=ifdown")
	out, err := cmd.CombinedOutput()
	fmt.Printf("ifdown=%q exit=%v\n", string(out), err)
	up, err = linkIsUp("lo")
	fmt.Printf("up-after-ifdown=%v %v\n", up, errnoName(err))

	if ip, lerr := exec.LookPath("ip"); lerr == nil {
		cmd, err := SandboxCommand(context.Background(), []string{ip, "link", "set", "lo", "down"})
		if err != nil {
			fmt.Println("setup:", err)
			return 1
		}
		out, err := cmd.CombinedOutput()
		fmt.Printf("ip=%q exit=%v\n", string(out), err)
		up, err = linkIsUp("lo")
		fmt.Printf("up-after-ip=%v %v\n", up, errnoName(err))
	}
	return 0
}

// landlockOnlyHelper applies Landlock alone (no mount namespace, no
// seccomp, all capabilities) to show that layer holds by itself.
func landlockOnlyHelper() int {
	runtime.LockOSThread()
	dir := os.Getenv(helperDirEnv)
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	abi, err := landlockABI()
	if err == nil {
		err = restrictLandlock(abi, "")
	}
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	try := func(path string, flags int) string {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return errnoName(err)
	}
	fmt.Printf("write=%s create=%s unlink=%s devnull=%s read=%s\n",
		try(dir+"/canary", unix.O_WRONLY|unix.O_TRUNC),
		try(dir+"/new", unix.O_WRONLY|unix.O_CREAT),
		errnoName(unix.Unlink(dir+"/canary")),
		try("/dev/null", unix.O_WRONLY|unix.O_TRUNC),
		try(dir+"/canary", unix.O_RDONLY))
	return 0
}

// seccompOnlyHelper installs the filter alone, keeping every capability,
// so an EPERM here comes from the filter and not from a dropped capability.
func seccompOnlyHelper() int {
	runtime.LockOSThread()
	filter, err := buildSeccompFilter(os.Getpid(), false)
	if err == nil {
		err = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	if err == nil {
		err = installSeccomp(filter)
	}
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	fmt.Printf("unshare=%s settime=%s killparent=%s killself=%s\n",
		errnoName(unix.Unshare(unix.CLONE_NEWUTS)),
		errnoName(badClockSettime()),
		errnoName(unix.Kill(os.Getppid(), 0)),
		errnoName(unix.Kill(os.Getpid(), 0)))
	fmt.Println(otherProcessCalls(os.Getppid()))
	return 0
}

// otherProcessCalls tries the calls that act on another process by pid
// (the parent, a test process) with arguments that would change nothing
// if they got through, and the same calls on the caller itself.
func otherProcessCalls(other int) string {
	var cpus unix.CPUSet
	affOther := unix.SchedGetaffinity(other, &cpus)
	if affOther == nil {
		affOther = unix.SchedSetaffinity(other, &cpus) // the set it already has
	}
	var self unix.CPUSet
	affSelf := unix.SchedGetaffinity(0, &self)
	if affSelf == nil {
		affSelf = unix.SchedSetaffinity(0, &self)
	}
	var lim unix.Rlimit
	readOther := unix.Prlimit(other, unix.RLIMIT_NOFILE, nil, &lim)
	setOther := unix.Prlimit(other, unix.RLIMIT_NOFILE, &lim, nil) // the limit it already has
	prio, perr := unix.Getpriority(unix.PRIO_PROCESS, other)
	if perr == nil {
		perr = unix.Setpriority(unix.PRIO_PROCESS, other, 20-prio) // the kernel's getpriority is 20-nice
	}
	// No iovecs: nothing would be written even if it got through.
	_, _, vmw := unix.Syscall6(unix.SYS_PROCESS_VM_WRITEV, uintptr(other), 0, 0, 0, 0, 0)
	_, _, uring := unix.Syscall(unix.SYS_IO_URING_SETUP, 0, 0, 0)
	_, kerr := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
	return fmt.Sprintf("affinity_other=%s affinity_self=%s prlimit_read_other=%s prlimit_set_other=%s setpriority=%s process_vm_writev=%s io_uring=%s keyctl=%s",
		errnoName(affOther), errnoName(affSelf), errnoName(readOther), errnoName(setOther), errnoName(perr),
		errnoName(rawErr(vmw)), errnoName(rawErr(uring)), errnoName(kerr))
}

// noWritesHelper installs the filter of a sandbox without Landlock, alone
// and with every capability, and tries to open for writing a canary file,
// a new file and a device node.
func noWritesHelper() int {
	runtime.LockOSThread()
	dir := os.Getenv(helperDirEnv)
	filter, err := buildSeccompFilter(os.Getpid(), true)
	if err == nil {
		err = unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	}
	if err == nil {
		err = installSeccomp(filter)
	}
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	fmt.Println(writeOpens(dir))
	return 0
}

func tryOpen(path string, flags int) string {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	return errnoName(err)
}

// writeOpens tries opens for writing: of a canary file, a new file, a
// truncation, /dev/null read-write (as lsof does), /dev/kmsg, and
// dir/node, a character node the test made on an ordinary file system
// (read-only mounts alone do not stop writes to device nodes). Opening
// for writing and closing writes nothing.
func writeOpens(dir string) string {
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC}
	fd, err := unix.Openat2(unix.AT_FDCWD, dir+"/canary", &how)
	if err == nil {
		unix.Close(fd)
	}
	return fmt.Sprintf("write=%s create=%s trunc=%s devnull=%s kmsg=%s node=%s read=%s openat2=%s",
		tryOpen(dir+"/canary", unix.O_WRONLY), tryOpen(dir+"/new", unix.O_RDONLY|unix.O_CREAT),
		tryOpen(dir+"/canary", unix.O_RDONLY|unix.O_TRUNC), tryOpen("/dev/null", unix.O_RDWR),
		tryOpen("/dev/kmsg", unix.O_WRONLY), tryOpen(dir+"/node", unix.O_WRONLY),
		tryOpen(dir+"/canary", unix.O_RDONLY), errnoName(err))
}

// promiscHelper opens a packet socket (CAP_NET_RAW) and asks for
// promiscuous mode on lo. The test runs it in a network namespace of its
// own, so even a request that got through would touch no host interface.
func promiscHelper() int {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		fmt.Printf("socket=%s\n", errnoName(err))
		return 0
	}
	defer unix.Close(fd)
	mr := unix.PacketMreq{Ifindex: 1, Type: unix.PACKET_MR_PROMISC}
	err = unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr)
	fmt.Printf("socket=OK promisc=%s\n", errnoName(err))
	return 0
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// badClockSettime asks to set the wall clock with tv_nsec out of range:
// EINVAL if it ever got past the sandbox, so the clock never moves.
func badClockSettime() error {
	ts := unix.NsecToTimespec(time.Now().UnixNano())
	ts.Nsec = 2_000_000_000
	_, _, e := unix.Syscall(unix.SYS_CLOCK_SETTIME, unix.CLOCK_REALTIME, uintptr(unsafe.Pointer(&ts)), 0)
	return rawErr(e)
}

// tcpdumpHelper runs unsandboxed in a network namespace the test made:
// it brings that namespace's lo up and captures three UDP datagrams on it
// with a sandboxed tcpdump -p (which the sandbox starts as an
// unprivileged uid), then tries a capture without -p, which asks for
// promiscuous mode.
func tcpdumpHelper() int {
	if err := setLinkUp("lo", true); err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd, err := SandboxCommand(ctx, []string{tcpdump, "-p", "-n", "-c", "3", "-i", "lo", "udp", "port", "9"})
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	var stdout bytes.Buffer
	stderr := &watchWriter{want: "listening on", seen: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-stderr.seen:
	case err := <-done:
		fmt.Printf("capture ended before listening: %v %s\n", err, stderr.String())
		return 0
	}
	conn, err := net.Dial("udp", "127.0.0.1:9")
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	defer conn.Close()
	// Datagrams until tcpdump has counted its three; the ticker only
	// paces them.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var werr error
wait:
	for {
		select {
		case werr = <-done:
			break wait
		case <-tick.C:
			conn.Write([]byte("x"))
		}
	}
	fmt.Printf("capture exit=%v\n%s", werr, stdout.String())

	cmd, err = SandboxCommand(ctx, []string{tcpdump, "-n", "-c", "1", "-i", "lo"})
	if err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	out, err := cmd.CombinedOutput()
	fmt.Printf("promiscuous exit=%v %q\n", err, strings.TrimSpace(string(out)))
	return 0
}

// watchWriter keeps what is written and closes seen once want appears.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	done bool
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// nftGetGen asks nf_tables for its ruleset generation, the first thing
// nft and iptables-nft do, even to list.
func nftGetGen() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// struct nlmsghdr, then struct nfgenmsg (family, version, res_id).
	msg := make([]byte, 20)
	binary.NativeEndian.PutUint32(msg[0:], 20)
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	if n < 16 {
		return fmt.Errorf("short netlink reply (%d bytes)", n)
	}
	if binary.NativeEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR && n >= 20 {
		if e := int32(binary.NativeEndian.Uint32(buf[16:])); e != 0 {
			return unix.Errno(-e)
		}
	}
	return nil
}

// iptGetInfo asks the legacy iptables for its filter table, as
// iptables-legacy -L does.
func iptGetInfo() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// struct ipt_getinfo; IPT_SO_GET_INFO is IPT_BASE_CTL (64).
	var info struct {
		name                 [32]byte
		validHooks           uint32
		hookEntry, underflow [5]uint32
		numEntries, size     uint32
	}
	copy(info.name[:], "filter")
	l := uint32(unsafe.Sizeof(info))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_IP, 64,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	return rawErr(e)
}

// ethtoolGetRegs asks for a register dump, as ethtool -d does.
func ethtoolGetRegs(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	regs := struct{ cmd, version, len uint32 }{cmd: unix.ETHTOOL_GREGS}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = uintptr(unsafe.Pointer(&regs))
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&regs)
	return rawErr(e)
}

// procReads reads what lsof and ss -p read of another process: the
// kernel checks each as ptrace read access.
func procReads(pid int) string {
	read := func(name string) string {
		_, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
		return errnoName(unwrapErrno(err))
	}
	link := func(name string) string {
		_, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, name))
		return errnoName(unwrapErrno(err))
	}
	return fmt.Sprintf("environ=%s maps=%s exe=%s fd0=%s cmdline=%s",
		read("environ"), read("maps"), link("exe"), link("fd/0"), read("cmdline"))
}

func unwrapErrno(err error) error {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return err
}
