package safeexec

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// helperOpWith is helperOp with the sandbox started as sp says.
func helperOpWith(t testing.TB, sp sandboxSpec, op string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	sp.env = append(sp.env, helperOpEnv+"="+op)
	r := runSandboxedWith(t, sp, self)
	require.Equal(t, 0, r.exit, "helper %s: %s", op, r.stderr)
	return strings.TrimSpace(r.stdout)
}

// statusField returns the value of a /proc/PID/status line.
func statusField(t testing.TB, status, field string) string {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in %s", field, status)
	return ""
}

// Tools that give up root themselves (tcpdump) start as an unprivileged
// uid with the kept capabilities as ambient ones: they hold the same
// capabilities as any sandboxed tool, and no more.
func TestSandboxUnprivilegedProfile(t *testing.T) {
	requireSandboxRoot(t)
	out := helperOpWith(t, sandboxSpec{uid: unprivilegedUID}, "caps")
	require.Equal(t, "65534\t65534\t65534\t65534", statusField(t, out, "Uid"))
	require.Equal(t, "65534\t65534\t65534\t65534", statusField(t, out, "Gid"))
	require.Equal(t, "", statusField(t, out, "Groups"))
	keep := keptCapMask()
	want := fmt.Sprintf("%016x", uint64(keep[1])<<32|uint64(keep[0]))
	for _, f := range []string{"CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		require.Equal(t, want, statusField(t, out, f), f)
	}
	require.Equal(t, "1", statusField(t, out, "NoNewPrivs"))
	require.Equal(t, "2", statusField(t, out, "Seccomp"))

	cmd, err := SandboxCommand(context.Background(), []string{"/usr/bin/tcpdump"})
	require.NoError(t, err)
	require.Contains(t, cmd.Args, flagUID+"65534", "SandboxCommand picks the profile for tcpdump")
	cmd, err = SandboxCommand(context.Background(), []string{"/usr/bin/cat"})
	require.NoError(t, err)
	for _, a := range cmd.Args {
		require.False(t, strings.HasPrefix(a, flagUID), "cat keeps uid 0")
	}
}

// A packet socket (CAP_NET_RAW) opens, promiscuous mode does not: the
// filter refuses PACKET_ADD_MEMBERSHIP, which needs no other capability.
func TestSandboxRefusesPromiscuousMode(t *testing.T) {
	requireSandboxRoot(t)
	for _, uid := range []int{0, unprivilegedUID} {
		out := helperOpWith(t, sandboxSpec{uid: uid, cloneflags: unix.CLONE_NEWNET}, "promisc")
		require.Equal(t, "socket=OK promisc=EPERM", out, "uid %d", uid)
	}
	// Outside the sandbox (in a namespace of the test's own) the same
	// request goes through: the EPERM is the sandbox's.
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperOpEnv+"=promisc")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET | unix.CLONE_NEWUTS}
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, string(b))
	require.Equal(t, "socket=OK promisc=OK", strings.TrimSpace(string(b)))
}

// tcpdump -p captures in the sandbox; without -p it fails, since it asks
// for promiscuous mode.
func TestSandboxTcpdump(t *testing.T) {
	requireSandboxRoot(t)
	needTool(t, "tcpdump")
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperOpEnv+"=tcpdump")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET | unix.CLONE_NEWUTS}
	b, err := cmd.CombinedOutput()
	out := string(b)
	require.NoError(t, err, out)
	t.Log(out)
	require.Contains(t, out, "capture exit=<nil>\n")
	require.Len(t, regexp.MustCompile(`(?m)^\S+ IP 127\.0\.0\.1\.\d+ > 127\.0\.0\.1\.9: UDP, length 1$`).FindAllString(out, -1), 3)
	require.Regexp(t, `promiscuous exit=exit status \d+ ".*(promiscuous|Operation not permitted).*"`, out)
}

// mount, findmnt and /proc/mounts in the sandbox report the host's mounts
// as they are, not the sandbox's read-only copies, while writes still
// fail.
func TestSandboxShowsHostMounts(t *testing.T) {
	requireSandboxRoot(t)
	options := func(mounts string) map[string]string {
		m := map[string]string{}
		for _, line := range strings.Split(mounts, "\n") {
			if f := strings.Fields(line); len(f) >= 4 {
				m[f[1]] = f[3]
			}
		}
		return m
	}
	host, err := os.ReadFile("/proc/self/mounts")
	require.NoError(t, err)
	hostRoot := options(string(host))["/"]
	if !strings.HasPrefix(hostRoot, "rw") {
		t.Skipf("/ is not read-write here (%s): nothing to tell apart", hostRoot)
	}
	r := runSandboxed(t, "", nil, "cat", "/proc/self/mounts")
	require.Equal(t, 0, r.exit, r.stderr)
	require.Equal(t, hostRoot, options(r.stdout)["/"])

	r = runSandboxed(t, "", nil, "cat", "/proc/mounts")
	require.Equal(t, hostRoot, options(r.stdout)["/"])

	r = runSandboxed(t, "", nil, "cat", "/proc/self/mountinfo")
	require.Regexp(t, `(?m)^\d+ \d+ \S+ \S+ / rw[, ]`, r.stdout)

	if _, err := exec.LookPath("findmnt"); err == nil {
		r = runSandboxed(t, "", nil, "findmnt", "-n", "-o", "OPTIONS", "/")
		require.True(t, strings.HasPrefix(r.stdout, "rw"), r.stdout)
	}
	dir := t.TempDir()
	r = runSandboxed(t, dir, nil, "sh", "-c", "echo x > canary")
	require.Contains(t, r.stderr, "Read-only file system")
	_, err = os.Stat(filepath.Join(dir, "canary"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// Each sandbox started as root gets a private tmpfs as TMPDIR: writes
// there work, stay in the sandbox and vanish with it.
func TestSandboxScratch(t *testing.T) {
	requireSandboxRoot(t)
	if _, err := landlockABI(); err != nil {
		t.Skipf("no scratch without Landlock: %v", err)
	}
	r := runSandboxed(t, "", nil, "sh", "-c", `echo scratch > "$TMPDIR/f" && cat "$TMPDIR/f" && echo "$TMPDIR"`)
	require.Equal(t, 0, r.exit, r.stderr)
	require.Equal(t, "scratch\n"+scratchDir+"\n", r.stdout)
	_, err := os.Stat(filepath.Join(scratchDir, "f"))
	require.ErrorIs(t, err, os.ErrNotExist, "the write reached the host")

	r = runSandboxed(t, "", nil, "sh", "-c", `ls -A "$TMPDIR"; df -k "$TMPDIR" | tail -n 1`)
	require.Equal(t, 0, r.exit, r.stderr)
	require.Regexp(t, `^nannyagent-scratch\s+16384\s`, r.stdout, "a new sandbox starts with an empty scratch of its own")

	// Beside it, /run stays read-only.
	r = runSandboxed(t, "", nil, "sh", "-c", `echo x > /run/nannyagent/x`)
	require.NotEqual(t, 0, r.exit)
	_, err = os.Stat("/run/nannyagent/x")
	require.ErrorIs(t, err, os.ErrNotExist)

	// What needed it: GNU sort spills a file whose size it cannot know
	// (a /proc file) to TMPDIR.
	res := RunLine(context.Background(), "sort -k2 -n /proc/partitions", DefaultOptions())
	require.False(t, res.Refused, res.Reason)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	require.Empty(t, res.Stderr)
}

// On a kernel without Landlock the sandbox degrades: it says so (check,
// once in the log) and still refuses writes, of files by the read-only
// mounts and of anything, devices included, by the seccomp filter.
func TestSandboxWithoutLandlock(t *testing.T) {
	requireSandboxRoot(t)
	if _, err := landlockABI(); err != nil {
		t.Skipf("this kernel has no Landlock to take away: %v", err)
	}
	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	require.NoError(t, os.WriteFile(canary, []byte("original\n"), 0o644))
	makeKmsgNode(t, dir)
	before := statCanary(t, canary)

	// Control, with Landlock: the mount layer answers a write first,
	// openat2 works and there is a scratch TMPDIR.
	withLL := helperOpWith(t, sandboxSpec{dir: dir, uid: -1, env: []string{helperDirEnv + "=" + dir}}, "write_opens")
	require.Equal(t, `write=EROFS create=EROFS trunc=EROFS devnull=OK kmsg=EACCES node=EACCES read=OK openat2=OK tmpdir="`+scratchDir+`"`, withLL)

	restore := fakeNoLandlock()
	defer restore()
	sup := SandboxSupport()
	require.Equal(t, "unavailable: kernel built without Landlock", sup["landlock"])
	require.Contains(t, sup["seccomp"], "no open for writing")
	warning := SandboxWarning()
	require.Contains(t, warning, "Landlock is unavailable (kernel built without Landlock)")
	require.Contains(t, warning, "read-only mounts")

	env := []string{noLandlockEnv + "=1", helperDirEnv + "=" + dir}
	out := helperOpWith(t, sandboxSpec{dir: dir, uid: -1, env: env}, "write_opens")
	require.Equal(t, `write=EACCES create=EACCES trunc=EACCES devnull=EACCES kmsg=EACCES node=EACCES read=OK openat2=ENOSYS tmpdir=""`, out,
		"the child found no Landlock: the filter refuses write opens (openat2 too) and there is no scratch")
	for _, argv := range [][]string{
		{"sh", "-c", "echo x > canary"}, {"sh", "-c", "echo x >> canary"}, {"rm", "-f", "canary"},
		{"mv", "canary", "moved"}, {"mkdir", "newdir"}, {"chmod", "000", "canary"}, {"ln", "-s", "canary", "link"},
		{"sh", "-c", "echo x > /dev/zero && echo wrote"},
	} {
		r := runSandboxedWith(t, sandboxSpec{dir: dir, uid: -1, env: []string{noLandlockEnv + "=1"}}, argv...)
		require.NotEqual(t, 0, r.exit, "%q succeeded without Landlock: %s", argv, r.stdout)
		require.Equal(t, before, statCanary(t, canary))
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "canary and node only")

	// The agent's log gets the warning once, at the first sandboxed run.
	core, logs := observer.New(zap.WarnLevel)
	warned.Lock()
	warned.done = false
	warned.Unlock()
	o := DefaultOptions()
	o.Log = zap.New(core)
	o.Dir = dir
	for i := 0; i < 2; i++ {
		res := RunLine(context.Background(), "cat canary", o)
		require.Equal(t, "original\n", res.Stdout, res.Stderr)
	}
	require.Equal(t, 1, logs.Len())
	entry := logs.All()[0]
	require.Equal(t, "command sandbox degraded", entry.Message)
	require.Equal(t, warning, entry.ContextMap()["reason"])

	// Without Landlock and without a private mount namespace nothing
	// would stop writes: the child refuses to run anything.
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, sandboxArg, "--", "sh", "-c", "echo ran")
	cmd.Env = append(os.Environ(), noLandlockEnv+"=1")
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, string(b))
	require.Equal(t, sandboxExit, ee.ExitCode())
	require.Contains(t, string(b), "landlock: kernel built without Landlock, and no read-only mount namespace was asked for")
	require.NotContains(t, string(b), "ran")
}

// The reads that iptables, nft and ethtool -d/-e need are refused to the
// sandbox by the kernel itself (CAP_NET_ADMIN): the grounds on which
// layer 1 refuses those tools. Outside the sandbox they are answered.
func TestSandboxNetAdminReads(t *testing.T) {
	requireSandboxRoot(t)
	require.Equal(t, "nft_getgen=EPERM ipt_get_info=EPERM ethtool_gregs=EPERM", helperOp(t, "netadmin_reads"))
	out := runHelperUnsandboxed(t, helperOpEnv+"=netadmin_reads")
	require.Regexp(t, `^nft_getgen=OK ipt_get_info=(OK|ENOENT|ENOPROTOOPT) ethtool_gregs=(EOPNOTSUPP|ENOTSUP)$`, out)
}

// Landlock refuses the sandbox the ptrace-mode reads of other processes'
// /proc entries (open files, maps, environment) that lsof, ss -p,
// netstat -p and fuser exist for, so those run without Landlock, in the
// form a kernel without it gets: the reads work, writes are still
// refused.
func TestSandboxReadsOtherProcesses(t *testing.T) {
	requireSandboxRoot(t)
	if _, err := landlockABI(); err != nil {
		t.Skipf("no Landlock here: %v", err)
	}
	victim := exec.Command("sleep", "60")
	require.NoError(t, victim.Start())
	defer func() { victim.Process.Kill(); victim.Wait() }()
	pidEnv := []string{helperPidEnv + "=" + strconv.Itoa(victim.Process.Pid)}

	withLL := helperOpWith(t, sandboxSpec{uid: -1, env: pidEnv}, "proc_reads")
	require.Equal(t, "environ=EACCES maps=EACCES exe=EACCES fd0=EACCES cmdline=OK", withLL)
	without := helperOpWith(t, sandboxSpec{noLandlock: true, env: pidEnv}, "proc_reads")
	require.Equal(t, "environ=OK maps=OK exe=OK fd0=OK cmdline=OK", without)

	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	require.NoError(t, os.WriteFile(canary, []byte("original\n"), 0o644))
	makeKmsgNode(t, dir)
	before := statCanary(t, canary)
	out := helperOpWith(t, sandboxSpec{dir: dir, noLandlock: true, env: []string{helperDirEnv + "=" + dir}}, "write_opens")
	require.Equal(t, `write=EROFS create=EROFS trunc=EROFS devnull=OK kmsg=EACCES node=EACCES read=OK openat2=OK tmpdir=""`, out,
		"no Landlock, no filter rule against writes: read-only and nodev mounts hold, /dev/null stays writable")
	out = helperOpWith(t, sandboxSpec{dir: dir, noLandlock: true, env: []string{helperDirEnv + "=" + dir, noLandlockEnv + "=1"}}, "write_opens")
	require.Equal(t, `write=EROFS create=EROFS trunc=EROFS devnull=OK kmsg=EACCES node=EACCES read=OK openat2=OK tmpdir=""`, out,
		"the same form on a kernel without Landlock")
	require.Equal(t, before, statCanary(t, canary))
	require.Equal(t, "EPERM", helperOpWith(t, sandboxSpec{noLandlock: true}, "ptrace"), "ptrace stays refused")

	for _, name := range []string{"lsof", "ss", "netstat", "fuser"} {
		cmd, err := SandboxCommand(context.Background(), []string{"/usr/bin/" + name})
		require.NoError(t, err)
		require.Contains(t, cmd.Args, flagNoLandlock, name)
	}
	cmd, err := SandboxCommand(context.Background(), []string{"/usr/bin/cat"})
	require.NoError(t, err)
	require.NotContains(t, cmd.Args, flagNoLandlock)

	// ss -p names the process behind a socket: this test's own listener.
	if _, err := exec.LookPath("ss"); err == nil {
		sock := filepath.Join(t.TempDir(), "s")
		l, err := net.Listen("unix", sock)
		require.NoError(t, err)
		defer l.Close()
		r := runSandboxed(t, "", nil, "ss", "-xlp")
		require.Equal(t, 0, r.exit, r.stderr)
		require.Regexp(t, regexp.QuoteMeta(sock)+`\s.*users:\(\(".+",pid=`+strconv.Itoa(os.Getpid())+`,`, r.stdout)
	}
	if _, err := exec.LookPath("lsof"); err == nil {
		r := runSandboxed(t, "", nil, "lsof", "-p", strconv.Itoa(victim.Process.Pid))
		require.Equal(t, 0, r.exit, "stdout %s\nstderr %s", r.stdout, r.stderr)
		require.NotContains(t, r.stdout, "Permission denied")
		require.Regexp(t, `(?m)^sleep\s+\d+\s+root\s+txt\s+REG\s.*/sleep$`, r.stdout)
	}
}

// makeKmsgNode makes dir/node, a character device node for /dev/kmsg on
// the test's own (ordinary, read-write) file system: where read-only
// mounts are all there is, a node like it is a way to a device.
func makeKmsgNode(t testing.TB, dir string) {
	t.Helper()
	require.NoError(t, unix.Mknod(filepath.Join(dir, "node"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 11))))
}
