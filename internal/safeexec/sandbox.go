package safeexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The sandbox is entered by re-executing the agent binary: the parent
// cannot restrict itself (it must keep writing results), and a fork
// without exec is unsafe in Go. The child reads its orders from argv
// after sandboxArg, restricts itself, then execve's the target, which
// keeps the child's pid, restrictions and seccomp filter.
const (
	// SandboxEnv marks the environment of a sandbox child. Layer 2 keeps
	// every NANNYAGENT_SANDBOX* variable when it replaces the environment.
	SandboxEnv = "NANNYAGENT_SANDBOX_EXEC"
	// sandboxArg is argv[1] of a sandbox child; either marker is enough,
	// so a caller that replaces Env still cannot make the child run main.
	sandboxArg = "--nannyagent-sandbox-exec"
	// sandboxExit is the status of a child whose setup failed: the shell's
	// "found but could not run".
	sandboxExit = 126

	flagMountNS = "--mountns=" // inode of the parent's mount namespace
	flagUID     = "--uid="     // run the target as this uid, capabilities kept as ambient ones
	// flagNoLandlock asks for the form a kernel without Landlock gets: the
	// filter refuses every open for writing instead. Only with a private
	// read-only mount namespace.
	flagNoLandlock = "--no-landlock"
)

// unprivilegedUID is the kernel's default overflow uid, "nobody" on the
// common distributions.
const unprivilegedUID = 65534

// runUnprivileged are tools that give up root themselves after opening
// what they need and exit when they cannot (tcpdump's setgroups and
// setuid to its own user need CAP_SETGID and CAP_SETUID, both dropped).
// Started as an unprivileged uid they skip that step and still hold the
// kept capabilities (CAP_NET_RAW for the capture).
var runUnprivileged = map[string]bool{"tcpdump": true}

// readOtherProcesses are tools that exist to read other processes' open
// files, memory maps and environment in /proc, reads the kernel checks as
// ptrace access (PTRACE_MODE_READ), which Landlock refuses toward any
// process outside the sandbox: lsof printed "readlink: Permission
// denied" and ss -p no process at all. As root they run without
// Landlock, in the form a kernel without it gets (read-only mounts, and
// a filter that refuses every open for writing, devices included), which
// holds against changes as well; ptrace itself stays refused.
var readOtherProcesses = map[string]bool{"lsof": true, "ss": true, "netstat": true, "fuser": true}

// profile is how one command's sandbox differs from the default.
type profile struct {
	uid        int  // 0: unchanged
	noLandlock bool // only as root, with the read-only mounts
}

// scratchDir is where a sandbox started as root gets a private tmpfs of
// its own, as TMPDIR: sort and apt need temporary files, and writes there
// go to memory that disappears with the command. The empty directory is
// the only thing a sandbox leaves on the host.
const (
	scratchDir  = "/run/nannyagent/tmp"
	scratchOpts = "size=16m,nr_inodes=4096,mode=1777"
)

// sandboxPath is used when the environment has no PATH.
const sandboxPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// SandboxCommand returns a command that runs argv inside the sandbox: a
// private read-only mount namespace (as root), Landlock allowing writes
// only to /dev/null and a private scratch tmpfs, no_new_privs, a seccomp
// filter refusing host-changing system calls, and a reduced capability
// set. argv[0] should be a path; a bare name is searched in the child's
// PATH. The caller sets Stdin, Stdout, Stderr and Dir; it may replace Env
// but must keep SandboxEnv, and may change SysProcAttr but must keep its
// Cloneflags.
func SandboxCommand(ctx context.Context, argv []string) (*exec.Cmd, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("sandbox: empty argv")
	}
	var p profile
	if os.Geteuid() == 0 {
		name := filepath.Base(argv[0])
		if runUnprivileged[name] {
			p.uid = unprivilegedUID
		}
		p.noLandlock = readOtherProcesses[name]
	}
	return sandboxCommand(ctx, argv, p)
}

// sandboxCommand is SandboxCommand with the profile chosen.
func sandboxCommand(ctx context.Context, argv []string, p profile) (*exec.Cmd, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("sandbox: empty argv")
	}
	if _, err := seccompArch(); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if _, err := landlockABI(); err != nil && os.Geteuid() != 0 {
		return nil, fmt.Errorf("sandbox: nothing would stop writes: Landlock is unavailable (%v) and read-only mounts need root", err)
	}
	args := []string{"nannyagent-sandbox", sandboxArg}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		ino, err := mountNSInode("/proc/self/ns/mnt")
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		attr.Cloneflags = unix.CLONE_NEWNS
		args = append(args, flagMountNS+strconv.FormatUint(ino, 10))
	}
	if p.uid != 0 {
		args = append(args, flagUID+strconv.Itoa(p.uid))
	}
	if p.noLandlock {
		if os.Geteuid() != 0 {
			return nil, errors.New("sandbox: running without Landlock needs root (read-only mounts)")
		}
		args = append(args, flagNoLandlock)
	}
	args = append(args, "--")
	args = append(args, argv...)
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = args
	cmd.Env = []string{"PATH=" + sandboxPath, "LC_ALL=C", "LANG=C", SandboxEnv + "=1"}
	cmd.SysProcAttr = attr
	return cmd, nil
}

// EnterSandboxIfRequested must run first in main (and in TestMain of
// packages whose tests run sandboxed commands). In a sandbox child it
// applies every restriction and execs the target, never returning; a
// failed step exits 126 naming the step, so the target never runs
// unsandboxed. Elsewhere it returns at once.
func EnterSandboxIfRequested() {
	inArgs := len(os.Args) > 1 && os.Args[1] == sandboxArg
	if !inArgs && os.Getenv(SandboxEnv) == "" {
		return
	}
	if !inArgs {
		sandboxFail("arguments", errors.New("sandbox marker in the environment without sandbox arguments"))
	}
	runtime.LockOSThread()
	err := enterSandbox(os.Args[2:])
	sandboxFail(err.(*sandboxError).step, err.(*sandboxError).err)
}

type sandboxError struct {
	step string
	err  error
}

func (e *sandboxError) Error() string { return e.step + ": " + e.err.Error() }

func stepErr(step string, err error) error { return &sandboxError{step: step, err: err} }

func sandboxFail(step string, err error) {
	fmt.Fprintf(os.Stderr, "nannyagent sandbox: %s: %v\n", step, err)
	os.Exit(sandboxExit)
}

type sandboxOrders struct {
	parentMountNS uint64 // 0: no private mount namespace was asked for
	uid           int    // 0: the target keeps the caller's uid
	noLandlock    bool
	argv          []string
}

func parseOrders(args []string) (sandboxOrders, error) {
	var o sandboxOrders
	for i, a := range args {
		switch {
		case a == "--":
			o.argv = args[i+1:]
			if len(o.argv) == 0 || o.argv[0] == "" {
				return o, errors.New("no command")
			}
			return o, nil
		case strings.HasPrefix(a, flagMountNS):
			n, err := strconv.ParseUint(strings.TrimPrefix(a, flagMountNS), 10, 64)
			if err != nil || n == 0 {
				return o, fmt.Errorf("bad %s", a)
			}
			o.parentMountNS = n
		case strings.HasPrefix(a, flagUID):
			n, err := strconv.Atoi(strings.TrimPrefix(a, flagUID))
			if err != nil || n <= 0 || n >= 1<<31-1 {
				return o, fmt.Errorf("bad %s", a)
			}
			o.uid = n
		case a == flagNoLandlock:
			o.noLandlock = true
		default:
			return o, fmt.Errorf("unknown sandbox argument %q", a)
		}
	}
	return o, errors.New("missing -- before the command")
}

// enterSandbox only returns an error (*sandboxError); on success it execs.
func enterSandbox(args []string) error {
	o, err := parseOrders(args)
	if err != nil {
		return stepErr("arguments", err)
	}
	env := make([]string, 0, len(os.Environ())+1)
	pathVar := sandboxPath
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, SandboxEnv+"=") || strings.HasPrefix(kv, "TMPDIR=") {
			continue
		}
		if p, ok := strings.CutPrefix(kv, "PATH="); ok && p != "" {
			pathVar = p
		}
		env = append(env, kv)
	}
	target, err := resolveTarget(o.argv[0], pathVar)
	if err != nil {
		return stepErr("resolve "+o.argv[0], err)
	}
	// Without Landlock, read-only mounts stop writes to files but not to
	// device nodes. On a kernel without it the filter refuses every open
	// for writing (device reads keep working for blkid, tune2fs...); a
	// command that runs without it by choice (readOtherProcesses) gets
	// nodev on every mount instead, all devices but /dev/null, zero,
	// full, random and urandom out of reach, and may open /dev/null for
	// writing as lsof does.
	abi, lerr := landlockABI()
	noLandlock := lerr != nil || o.noLandlock
	if noLandlock && o.parentMountNS == 0 {
		why := "not wanted for this command"
		if lerr != nil {
			why = lerr.Error()
		}
		return stepErr("landlock", fmt.Errorf("%s, and no read-only mount namespace was asked for", why))
	}
	filter, err := buildSeccompFilter(os.Getpid(), lerr != nil && !o.noLandlock)
	if err != nil {
		return stepErr("seccomp filter", err)
	}
	scratch := ""
	if o.parentMountNS != 0 {
		mo := mountOrders{parentNS: o.parentMountNS, scratch: !noLandlock, noDevices: o.noLandlock}
		if scratch, err = privateMounts(mo); err != nil {
			return stepErr("read-only mounts", err)
		}
	}
	if scratch != "" {
		env = append(env, "TMPDIR="+scratch)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return stepErr("no_new_privs", err)
	}
	if !noLandlock {
		if err := restrictLandlock(abi, scratch); err != nil {
			return stepErr("landlock", err)
		}
	}
	if err := dropCapabilities(o.uid); err != nil {
		return stepErr("capabilities", err)
	}
	if err := installSeccomp(filter); err != nil {
		return stepErr("seccomp", err)
	}
	err = unix.Exec(target, o.argv, env)
	return stepErr("exec "+target, err)
}

func resolveTarget(name, pathVar string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func mountNSInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

// mountOrders say what privateMounts does besides making every mount
// read-only.
type mountOrders struct {
	parentNS  uint64
	scratch   bool // mount the scratch tmpfs
	noDevices bool // nodev everywhere but binds of the harmless devices
}

// harmlessDevices can be opened for writing by anyone and change nothing
// (random and urandom take writes into the entropy pool as any user may).
var harmlessDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// privateMounts makes every mount of this (private) namespace read-only,
// shows the target the parent's mount table, and does what mo asks; it
// returns the scratch directory ("" when there is none). It refuses to
// touch anything unless the namespace differs from the parent's: a
// caller that dropped CLONE_NEWNS must not get the host's mounts turned
// read-only.
func privateMounts(mo mountOrders) (string, error) {
	own, err := mountNSInode("/proc/self/ns/mnt")
	if err != nil {
		return "", err
	}
	if own == mo.parentNS {
		return "", errors.New("mount namespace is the parent's (CLONE_NEWNS missing)")
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make / private: %w", err)
	}
	// The mount point must exist before / turns read-only; without one
	// the sandbox simply has no scratch space.
	scratchErr := errors.New("not wanted")
	if mo.scratch {
		scratchErr = os.MkdirAll(scratchDir, 0o755)
	}
	extra := uintptr(0)
	if mo.noDevices {
		extra = unix.MS_NODEV
	}
	if err := remountReadOnly(extra); err != nil {
		return "", err
	}
	if mo.noDevices {
		for _, d := range harmlessDevices {
			// A bind of the node over itself is a mount of its own, whose
			// flags can leave out nodev.
			if err := unix.Mount(d, d, "", unix.MS_BIND, ""); err != nil {
				continue
			}
			if err := unix.Mount("", d, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
				return "", fmt.Errorf("remount %s: %w", d, err)
			}
		}
	}
	showParentMounts(mo.parentNS)
	if scratchErr != nil {
		return "", nil
	}
	if err := unix.Mount("nannyagent-scratch", scratchDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, scratchOpts); err != nil {
		return "", nil
	}
	return scratchDir, nil
}

// remountReadOnly remounts every mount read-only, with extra flags.
func remountReadOnly(extra uintptr) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	rootDone := false
	for _, m := range parseMountInfo(string(data)) {
		flags := uintptr(unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY) | m.flags | extra
		err := unix.Mount("", m.point, "", flags, "")
		if m.point == "/" {
			if err != nil {
				return fmt.Errorf("remount / read-only: %w", err)
			}
			rootDone = true
		}
		// Other mounts that refuse (hidden under another mount, gone
		// since the read) stay as they are: no path leads to them.
	}
	if !rootDone {
		return errors.New("/ not found in /proc/self/mountinfo")
	}
	return nil
}

// showParentMounts binds the parent's mount tables over the target's
// (the target keeps this pid), so that mount, findmnt and /proc/mounts
// report the host's rw and ro, not the sandbox's all-read-only copy. It
// is best effort: a parent that is gone or in another namespace leaves
// the sandbox's own tables in place.
func showParentMounts(parentNS uint64) {
	ppid := os.Getppid()
	ino, err := mountNSInode(fmt.Sprintf("/proc/%d/ns/mnt", ppid))
	if err != nil || ino != parentNS {
		return
	}
	self := os.Getpid()
	for _, f := range []string{"mounts", "mountinfo", "mountstats"} {
		src := fmt.Sprintf("/proc/%d/%s", ppid, f)
		dst := fmt.Sprintf("/proc/%d/%s", self, f)
		unix.Mount(src, dst, "", unix.MS_BIND, "")
	}
}

type mountEntry struct {
	point string
	flags uintptr // per-mount flags to keep: a bind remount replaces them all
}

func parseMountInfo(s string) []mountEntry {
	var out []mountEntry
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		m := mountEntry{point: unescapeMountInfo(f[4])}
		for _, opt := range strings.Split(f[5], ",") {
			switch opt {
			case "nosuid":
				m.flags |= unix.MS_NOSUID
			case "nodev":
				m.flags |= unix.MS_NODEV
			case "noexec":
				m.flags |= unix.MS_NOEXEC
			case "noatime":
				m.flags |= unix.MS_NOATIME
			case "nodiratime":
				m.flags |= unix.MS_NODIRATIME
			case "relatime":
				m.flags |= unix.MS_RELATIME
			case "strictatime":
				m.flags |= unix.MS_STRICTATIME
			}
		}
		out = append(out, m)
	}
	return out
}

// unescapeMountInfo undoes the kernel's octal escapes (\040 for space).
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// SandboxSupport says what each layer of the sandbox does on this kernel,
// for `check` and for results.
func SandboxSupport() map[string]string {
	m := map[string]string{}
	abi, lerr := landlockABI()
	if os.Geteuid() == 0 {
		m["mount_namespace"] = "private, every mount remounted read-only; mount tables shown as the host's"
		if lerr == nil {
			m["mount_namespace"] += "; private " + scratchDir + " tmpfs as TMPDIR"
		}
	} else {
		m["mount_namespace"] = "unavailable: not root"
	}
	if lerr != nil {
		m["landlock"] = "unavailable: " + lerr.Error()
	} else {
		m["landlock"] = fmt.Sprintf("abi %d: read/execute everywhere, write only /dev/null and the scratch tmpfs", abi)
		if abi >= 6 {
			m["landlock"] += ", signals scoped to the sandbox"
		}
	}
	if arch, err := seccompArch(); err != nil {
		m["seccomp"] = "unavailable: " + err.Error()
	} else {
		m["seccomp"] = fmt.Sprintf("%s filter: EPERM for %d syscalls (ptrace among them); signals, scheduling and limits only on itself; no promiscuous mode",
			arch.name, len(arch.denied))
		if lerr != nil {
			m["seccomp"] += "; no open for writing (in place of Landlock)"
		}
	}
	m["no_new_privs"] = "set"
	m["capabilities"] = "bounding, permitted, effective, inheritable reduced to " + strings.Join(keptCapNames(), ",") +
		"; tcpdump runs as uid " + strconv.Itoa(unprivilegedUID) + " with them as ambient capabilities"
	if os.Geteuid() == 0 && lerr == nil {
		m["landlock"] += "; lsof, ss, netstat and fuser run without it (it refuses their reads of other processes' /proc), with no device but /dev/null, zero, full, random, urandom"
	}
	return m
}

// SandboxWarning says what the sandbox lacks on this host, or "" when
// every layer is in place. The agent logs it once (Options.Log) and
// `check` prints it.
func SandboxWarning() string {
	_, lerr := landlockABI()
	_, serr := seccompArch()
	root := os.Geteuid() == 0
	switch {
	case serr != nil:
		return "no command runs: " + serr.Error()
	case lerr != nil && !root:
		return "no command runs: Landlock is unavailable (" + lerr.Error() + ") and read-only mounts need root"
	case lerr != nil:
		return "Landlock is unavailable (" + lerr.Error() + "): commands still run on read-only mounts, " +
			"with a seccomp filter that refuses every open for writing in its place, and without a scratch TMPDIR " +
			"(sort of large input and apt may fail)"
	case !root:
		return "not root: commands run under Landlock without a private read-only mount namespace"
	}
	return ""
}

// warned records that the warning went to a log, once per process.
var warned struct {
	sync.Mutex
	done bool
}

func logSandboxWarning(log *zap.Logger) {
	warned.Lock()
	defer warned.Unlock()
	if warned.done {
		return
	}
	warned.done = true
	if w := SandboxWarning(); w != "" {
		log.Warn("command sandbox degraded", zap.String("reason", w))
	}
}
