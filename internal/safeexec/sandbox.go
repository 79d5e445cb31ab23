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
	"syscall"

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

	flagMountNS     = "--mountns=" // inode of the parent's mount namespace
	flagAllowPtrace = "--allow-ptrace"
)

// sandboxPath is used when the environment has no PATH.
const sandboxPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// SandboxCommand returns a command that runs argv inside the sandbox: a
// private read-only mount namespace (as root), Landlock allowing writes
// only to /dev/null, no_new_privs, a seccomp filter refusing host-changing
// system calls, and a reduced capability set. argv[0] should be a path;
// a bare name is searched in the child's PATH. The caller sets Stdin,
// Stdout, Stderr and Dir; it may replace Env but must keep SandboxEnv,
// and may change SysProcAttr but must keep its Cloneflags.
//
// ptrace stays refused except for strace, the one allowed tool that needs it.
func SandboxCommand(ctx context.Context, argv []string) (*exec.Cmd, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("sandbox: empty argv")
	}
	if _, err := seccompArch(); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
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
	if filepath.Base(argv[0]) == "strace" {
		args = append(args, flagAllowPtrace)
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
	allowPtrace   bool
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
		case a == flagAllowPtrace:
			o.allowPtrace = true
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
	env := make([]string, 0, len(os.Environ()))
	pathVar := sandboxPath
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, SandboxEnv+"=") {
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
	filter, err := buildSeccompFilter(os.Getpid(), o.allowPtrace)
	if err != nil {
		return stepErr("seccomp filter", err)
	}
	if o.parentMountNS != 0 {
		if err := remountReadOnly(o.parentMountNS); err != nil {
			return stepErr("read-only mounts", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return stepErr("no_new_privs", err)
	}
	if _, err := restrictLandlock(); err != nil {
		return stepErr("landlock", err)
	}
	if err := dropCapabilities(); err != nil {
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

// remountReadOnly makes every mount of this (private) namespace read-only.
// It refuses to touch anything unless the namespace differs from the
// parent's: a caller that dropped CLONE_NEWNS must not get the host's
// mounts turned read-only.
func remountReadOnly(parentNS uint64) error {
	own, err := mountNSInode("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	if own == parentNS {
		return errors.New("mount namespace is the parent's (CLONE_NEWNS missing)")
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	rootDone := false
	for _, m := range parseMountInfo(string(data)) {
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | m.flags)
		err := unix.Mount("", m.point, "", flags, "")
		if m.point == "/" {
			if err != nil {
				return fmt.Errorf("remount / read-only: %w", err)
			}
			rootDone = true
		}
		// Other mounts that refuse (hidden under another mount, gone
		// since the read) stay as they are; Landlock still covers them.
	}
	if !rootDone {
		return errors.New("/ not found in /proc/self/mountinfo")
	}
	return nil
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
	if os.Geteuid() == 0 {
		m["mount_namespace"] = "private, every mount remounted read-only"
	} else {
		m["mount_namespace"] = "unavailable: not root"
	}
	if abi, err := landlockABI(); err != nil {
		m["landlock"] = "unavailable: " + err.Error()
	} else {
		m["landlock"] = fmt.Sprintf("abi %d: read/execute everywhere, write only /dev/null", abi)
		if abi >= 6 {
			m["landlock"] += ", signals scoped to the sandbox"
		}
	}
	if arch, err := seccompArch(); err != nil {
		m["seccomp"] = "unavailable: " + err.Error()
	} else {
		m["seccomp"] = fmt.Sprintf("%s filter, EPERM for %d syscalls, signals only to itself", arch.name, len(arch.denied)+len(arch.signals))
	}
	m["no_new_privs"] = "set"
	m["capabilities"] = "bounding, permitted, effective, inheritable reduced to " + strings.Join(keptCapNames(), ",")
	return m
}
