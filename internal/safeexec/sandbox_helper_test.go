package safeexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
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
	abi, err := restrictLandlock()
	if err != nil || abi == 0 {
		fmt.Println("setup:", abi, err)
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
	return 0
}

// badClockSettime asks to set the wall clock with tv_nsec out of range:
// EINVAL if it ever got past the sandbox, so the clock never moves.
func badClockSettime() error {
	ts := unix.NsecToTimespec(time.Now().UnixNano())
	ts.Nsec = 2_000_000_000
	_, _, e := unix.Syscall(unix.SYS_CLOCK_SETTIME, unix.CLOCK_REALTIME, uintptr(unsafe.Pointer(&ts)), 0)
	return rawErr(e)
}
