package safeexec

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// requireSandboxRoot skips tests that need root (mount namespaces,
// capabilities to drop) unless NANNYAGENT_REQUIRE_BPF=1 demands them.
func requireSandboxRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("NANNYAGENT_REQUIRE_BPF") == "1" {
		t.Fatal("sandbox tests need root and NANNYAGENT_REQUIRE_BPF=1 demands them")
	}
	t.Skip("sandbox tests need root")
}

type sandboxRun struct {
	stdout, stderr string
	exit           int
}

// runSandboxed runs argv through SandboxCommand in dir. Every run gets a
// UTS namespace of its own, so even a sandbox failure could not rename
// the host.
func runSandboxed(t testing.TB, dir string, env []string, argv ...string) sandboxRun {
	t.Helper()
	return runSandboxedWith(t, sandboxSpec{dir: dir, env: env, uid: -1}, argv...)
}

// sandboxSpec is how a test starts a sandbox: uid as sandboxCommand takes
// it (-1: as SandboxCommand chooses), and extra namespaces of the test's
// own.
type sandboxSpec struct {
	dir        string
	env        []string
	uid        int
	noLandlock bool
	cloneflags uintptr
}

func runSandboxedWith(t testing.TB, sp sandboxSpec, argv ...string) sandboxRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	var err error
	if sp.uid < 0 {
		cmd, err = SandboxCommand(ctx, argv)
	} else {
		cmd, err = sandboxCommand(ctx, argv, profile{uid: sp.uid, noLandlock: sp.noLandlock})
	}
	require.NoError(t, err)
	cmd.Dir = sp.dir
	cmd.Env = append(cmd.Env, sp.env...)
	cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWUTS | sp.cloneflags
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := sandboxRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		t.Fatalf("run %q: %v", argv, err)
	}
	require.NotEqual(t, sandboxExit, r.exit, "sandbox setup failed for %q: %s", argv, r.stderr)
	return r
}

// helperOp runs one helper system call in the sandbox and returns the
// errno name it printed.
func helperOp(t testing.TB, op string, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	r := runSandboxed(t, "", append(env, helperOpEnv+"="+op), self)
	require.Equal(t, 0, r.exit, "helper %s: %s", op, r.stderr)
	return strings.TrimSpace(r.stdout)
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return p
}

type fileState struct {
	content string
	mode    os.FileMode
	mtime   time.Time
}

func statCanary(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	return fileState{string(b), st.Mode(), st.ModTime()}
}

func TestSandboxAllowsReading(t *testing.T) {
	requireSandboxRoot(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "canary"), []byte("original\n"), 0o644))

	r := runSandboxed(t, dir, nil, "cat", "canary")
	require.Equal(t, 0, r.exit, r.stderr)
	require.Equal(t, "original\n", r.stdout)

	// /dev/null stays writable, for the 2>/dev/null that layer 1 allows.
	r = runSandboxed(t, dir, nil, "sh", "-c", "echo x > /dev/null && echo x 2>/dev/null >&2 && echo ok")
	require.Equal(t, 0, r.exit, r.stderr)
	require.Equal(t, "ok\n", r.stdout)

	// Reading other processes' /proc entries needs the capabilities kept.
	r = runSandboxed(t, dir, nil, "cat", "/proc/1/status")
	require.Equal(t, 0, r.exit, r.stderr)

	// The target keeps its pid and may signal itself.
	r = runSandboxed(t, dir, nil, "sh", "-c", "kill -0 $$ && echo self")
	require.Equal(t, 0, r.exit, r.stderr)
	require.Equal(t, "self\n", r.stdout)
	require.Equal(t, "OK", helperOp(t, "kill_self"))

	// The marker does not reach the target.
	r = runSandboxed(t, dir, nil, "env")
	require.Equal(t, 0, r.exit, r.stderr)
	require.NotContains(t, r.stdout, SandboxEnv)
}

func TestSandboxRefusesFileChanges(t *testing.T) {
	requireSandboxRoot(t)
	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	require.NoError(t, os.WriteFile(canary, []byte("original\n"), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	before := statCanary(t, canary)

	for _, argv := range [][]string{
		{"sh", "-c", "echo x > canary"},
		{"sh", "-c", "echo x >> canary"},
		{"sh", "-c", "echo x > new"},
		{"rm", "-f", "canary"},
		{"rm", "-rf", "sub"},
		{"mv", "canary", "moved"},
		{"ln", "-s", "canary", "link"},
		{"mkdir", "newdir"},
		{"chmod", "000", "canary"},
		{"touch", "canary"},
		{"truncate", "-s", "0", "canary"},
		{"mkfifo", "fifo"},
		{"sh", "-c", "echo x > /proc/self/cwd/canary"},
	} {
		t.Run(strings.Join(argv, " "), func(t *testing.T) {
			if argv[0] != "sh" {
				needTool(t, argv[0])
			}
			r := runSandboxed(t, dir, nil, argv...)
			require.NotEqual(t, 0, r.exit, "%q succeeded in the sandbox", argv)
			require.Equal(t, before, statCanary(t, canary))
		})
	}
	// The mount layer answers first: the kernel checks for a read-only
	// mount before asking Landlock.
	r := runSandboxed(t, dir, nil, "sh", "-c", "echo x > canary")
	require.Contains(t, r.stderr, "Read-only file system")

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{"canary", "sub"}, names)
}

func TestSandboxRefusesSysctl(t *testing.T) {
	requireSandboxRoot(t)
	// domainname lives in the UTS namespace that runSandboxed gives each
	// command, so the host's value is out of reach even if a write passed.
	const path = "/proc/sys/kernel/domainname"
	host, err := os.ReadFile(path)
	require.NoError(t, err)

	r := runSandboxed(t, "", nil, "sh", "-c", "echo nannyagent-canary > "+path+"; echo rc=$?; cat "+path)
	require.Equal(t, 0, r.exit, r.stderr)
	lines := strings.SplitN(r.stdout, "\n", 2)
	require.NotEqual(t, "rc=0", lines[0], "sysctl write succeeded: %s", r.stdout)
	require.Equal(t, string(host), lines[1], "value seen inside the sandbox changed")

	if sysctl, err := exec.LookPath("sysctl"); err == nil {
		r = runSandboxed(t, "", nil, sysctl, "-w", "kernel.domainname=nannyagent-canary")
		require.NotEqual(t, 0, r.exit, "sysctl -w succeeded: %s", r.stdout)
	}
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(host), string(after))
}

func TestSandboxRefusesModules(t *testing.T) {
	requireSandboxRoot(t)
	modules := func() string {
		b, err := os.ReadFile("/proc/modules")
		if errors.Is(err, os.ErrNotExist) {
			return "" // kernel without module support
		}
		require.NoError(t, err)
		return string(b)
	}
	before := modules()
	for _, op := range []string{"finit_module", "init_module", "delete_module"} {
		require.Equal(t, "EPERM", helperOp(t, op), op)
	}
	// insmod of a file that is no module: harmless even if it got through.
	if insmod, err := exec.LookPath("insmod"); err == nil {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "fake.ko"), []byte("not a module"), 0o644))
		r := runSandboxed(t, dir, nil, insmod, filepath.Join(dir, "fake.ko"))
		require.NotEqual(t, 0, r.exit)
	}
	require.Equal(t, before, modules())
}

func TestSandboxRefusesKillOutside(t *testing.T) {
	requireSandboxRoot(t)
	victim := exec.Command("sleep", "60")
	require.NoError(t, victim.Start())
	done := make(chan error, 1)
	go func() { done <- victim.Wait() }()
	defer victim.Process.Kill()
	pid := victim.Process.Pid
	pidEnv := helperPidEnv + "=" + strconv.Itoa(pid)

	require.Equal(t, "EPERM", helperOp(t, "kill", pidEnv))
	require.Equal(t, "EPERM", helperOp(t, "tgkill", pidEnv))
	r := runSandboxed(t, "", nil, "sh", "-c", "kill -KILL "+strconv.Itoa(pid))
	require.NotEqual(t, 0, r.exit)
	if kill, err := exec.LookPath("kill"); err == nil {
		r = runSandboxed(t, "", nil, kill, "-KILL", strconv.Itoa(pid))
		require.NotEqual(t, 0, r.exit)
	}

	// A SIGKILL that got through would already have set the victim's exit
	// signal; later signals cannot change it. So the victim must die of
	// ours, SIGTERM.
	select {
	case err := <-done:
		t.Fatalf("victim exited during the test: %v", err)
	default:
	}
	require.NoError(t, victim.Process.Signal(syscall.SIGTERM))
	err := <-done
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	ws := ee.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled())
	require.Equal(t, syscall.SIGTERM, ws.Signal())
}

func TestSandboxRefusesTime(t *testing.T) {
	requireSandboxRoot(t)
	// Wall clock minus monotonic clock moves only when someone sets the time.
	offset := func() time.Duration {
		var rt, mono unix.Timespec
		require.NoError(t, unix.ClockGettime(unix.CLOCK_REALTIME, &rt))
		require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono))
		return time.Duration(rt.Nano() - mono.Nano())
	}
	before := offset()
	for _, op := range []string{"clock_settime", "settimeofday", "adjtimex"} {
		require.Equal(t, "EPERM", helperOp(t, op), op)
	}
	// date -s with an invalid date: no change even if it got through.
	r := runSandboxed(t, "", nil, "date", "-s", "@not-a-time")
	require.NotEqual(t, 0, r.exit)
	require.InDelta(t, float64(before), float64(offset()), float64(100*time.Millisecond))
}

func TestSandboxRefusesNamespaceAndKernelCalls(t *testing.T) {
	requireSandboxRoot(t)
	for _, op := range []string{"mount", "umount", "unshare", "setns", "reboot", "sethostname",
		"swapon", "bpf", "perf_event_open", "ptrace", "syslog_clear"} {
		require.Equal(t, "EPERM", helperOp(t, op), op)
	}
	// Reading the kernel log's size stays allowed.
	require.Equal(t, "OK", helperOp(t, "syslog_size"))
}

func TestSandboxCapabilities(t *testing.T) {
	requireSandboxRoot(t)
	out := helperOp(t, "caps")
	keep := keptCapMask()
	want := uint64(keep[1])<<32 | uint64(keep[0])
	for _, field := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		var got uint64
		found := false
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, field+":\t"); ok {
				var err error
				got, err = strconv.ParseUint(v, 16, 64)
				require.NoError(t, err)
				found = true
			}
		}
		require.True(t, found, field)
		switch field {
		case "CapInh", "CapAmb":
			require.Zero(t, got&^want, field)
		default:
			require.Equal(t, want, got, "%s = %x", field, got)
		}
	}
	require.Contains(t, out, "NoNewPrivs:\t1")
	require.Contains(t, out, "Seccomp:\t2")
}

func TestSandboxRefusesInterfaceDown(t *testing.T) {
	requireSandboxRoot(t)
	hostUp, err := linkIsUp("lo")
	require.NoError(t, err)

	// The helper runs in a network namespace of its own: the lo it brings
	// up and the sandbox tries to take down is not the host's.
	self, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), helperOpEnv+"=netns")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET | unix.CLONE_NEWUTS}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	s := string(out)
	t.Log(s)
	require.Contains(t, s, "up-before=true")
	require.Contains(t, s, `ifdown="EPERM\n" exit=<nil>`)
	require.Contains(t, s, "up-after-ifdown=true")
	if _, err := exec.LookPath("ip"); err == nil {
		require.Contains(t, s, "up-after-ip=true")
		require.NotContains(t, s, "ip=\"\" exit=<nil>")
	}

	after, err := linkIsUp("lo")
	require.NoError(t, err)
	require.Equal(t, hostUp, after)
}

// runHelperUnsandboxed runs a helper op outside SandboxCommand, in a UTS
// namespace of its own, for tests of one layer alone.
func runHelperUnsandboxed(t *testing.T, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUTS}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return strings.TrimSpace(string(out))
}

func TestLandlockAlone(t *testing.T) {
	requireSandboxRoot(t)
	if _, err := landlockABI(); err != nil {
		t.Skipf("no Landlock: %v", err)
	}
	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	require.NoError(t, os.WriteFile(canary, []byte("original\n"), 0o644))
	before := statCanary(t, canary)
	out := runHelperUnsandboxed(t, helperOpEnv+"=landlock_only", helperDirEnv+"="+dir)
	require.Equal(t, "write=EACCES create=EACCES unlink=EACCES devnull=OK read=OK", out)
	require.Equal(t, before, statCanary(t, canary))
	_, err := os.Stat(filepath.Join(dir, "new"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestSeccompAlone(t *testing.T) {
	requireSandboxRoot(t)
	if _, err := seccompArch(); err != nil {
		t.Skip(err)
	}
	out := runHelperUnsandboxed(t, helperOpEnv+"=seccomp_only")
	require.Equal(t, "unshare=EPERM settime=EPERM killparent=EPERM killself=OK\n"+
		"affinity_other=EPERM affinity_self=OK prlimit_read_other=OK prlimit_set_other=EPERM setpriority=EPERM "+
		"process_vm_writev=EPERM io_uring=EPERM keyctl=EPERM", out)

	// The same calls without the filter reach the kernel, which would let
	// them through (io_uring refuses zero entries): the EPERMs above are
	// the filter's.
	self := strconv.Itoa(os.Getpid())
	out = runHelperUnsandboxed(t, helperOpEnv+"=other_processes", helperPidEnv+"="+self)
	require.Regexp(t, `^affinity_other=OK affinity_self=OK prlimit_read_other=OK prlimit_set_other=OK setpriority=OK `+
		`process_vm_writev=OK io_uring=(EINVAL|EFAULT) keyctl=(OK|ENOKEY)$`, out)
}

// Without Landlock the filter refuses every open for writing, of files
// and of device nodes alike (read-only mounts stop only the former).
func TestSeccompNoWritesAlone(t *testing.T) {
	requireSandboxRoot(t)
	if _, err := seccompArch(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	require.NoError(t, os.WriteFile(canary, []byte("original\n"), 0o644))
	makeKmsgNode(t, dir)
	before := statCanary(t, canary)
	out := runHelperUnsandboxed(t, helperOpEnv+"=seccomp_nowrites", helperDirEnv+"="+dir)
	require.Equal(t, "write=EACCES create=EACCES trunc=EACCES devnull=EACCES kmsg=EACCES node=EACCES read=OK openat2=ENOSYS", out)
	require.Equal(t, before, statCanary(t, canary))
	_, err := os.Stat(filepath.Join(dir, "new"))
	require.ErrorIs(t, err, os.ErrNotExist)

	// Without the filter every one of these opens succeeds (in a
	// directory of its own: they truncate and create).
	ctl := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(ctl, "canary"), []byte("original\n"), 0o644))
	makeKmsgNode(t, ctl)
	out = runHelperUnsandboxed(t, helperOpEnv+"=write_opens", helperDirEnv+"="+ctl)
	require.Equal(t, `write=OK create=OK trunc=OK devnull=OK kmsg=OK node=OK read=OK openat2=OK tmpdir=""`, out)
}

func TestSandboxFailsClosed(t *testing.T) {
	requireSandboxRoot(t)
	ctx := context.Background()
	run := func(cmd *exec.Cmd) (int, string) {
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, string(out))
		return ee.ExitCode(), string(out)
	}

	// A caller that dropped CLONE_NEWNS gets a refusal, not the host's
	// mounts remounted read-only.
	cmd, err := SandboxCommand(ctx, []string{"sh", "-c", "echo ran"})
	require.NoError(t, err)
	cmd.SysProcAttr.Cloneflags = 0
	code, out := run(cmd)
	require.Equal(t, sandboxExit, code)
	require.Contains(t, out, "read-only mounts: mount namespace is the parent's")
	require.NotContains(t, out, "ran")

	cmd, err = SandboxCommand(ctx, []string{"nannyagent-no-such-program"})
	require.NoError(t, err)
	code, out = run(cmd)
	require.Equal(t, sandboxExit, code)
	require.Contains(t, out, "resolve nannyagent-no-such-program")

	// The environment marker alone, without the orders, runs nothing.
	self, err := os.Executable()
	require.NoError(t, err)
	cmd = exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), SandboxEnv+"=1")
	code, out = run(cmd)
	require.Equal(t, sandboxExit, code)
	require.Contains(t, out, "nannyagent sandbox: arguments")

	cmd = exec.Command(self, sandboxArg, "--bogus", "--", "true")
	code, out = run(cmd)
	require.Equal(t, sandboxExit, code)
	require.Contains(t, out, "unknown sandbox argument")
}

func TestSandboxSupport(t *testing.T) {
	s := SandboxSupport()
	for _, k := range []string{"mount_namespace", "landlock", "seccomp", "no_new_privs", "capabilities"} {
		require.NotEmpty(t, s[k], k)
		t.Logf("%s: %s", k, s[k])
	}
	if _, err := landlockABI(); err == nil {
		require.True(t, strings.HasPrefix(s["landlock"], "abi "), s["landlock"])
	}
}

func TestSeccompFilterShape(t *testing.T) {
	if _, err := seccompArch(); err != nil {
		t.Skip(err)
	}
	f, err := buildSeccompFilter(4242, false)
	require.NoError(t, err)
	require.Equal(t, unix.SockFilter{Code: bpfLdW, K: seccompDataArch}, f[0])
	require.Equal(t, uint32(retKill), f[len(f)-1].K)
	rets := func(f []unix.SockFilter) map[uint32]bool {
		m := map[uint32]bool{}
		for _, in := range f {
			if in.Code == bpfRet {
				m[in.K] = true
			}
		}
		return m
	}
	require.Equal(t, map[uint32]bool{retAllow: true, retEPERM: true, retKill: true}, rets(f))
	nw, err := buildSeccompFilter(4242, true)
	require.NoError(t, err)
	require.Equal(t, map[uint32]bool{retAllow: true, retEPERM: true, retKill: true, retEACCES: true, retENOSYS: true}, rets(nw),
		"without Landlock, opens for writing get EACCES and openat2 ENOSYS")
	require.Contains(t, archTable.denied, uint32(unix.SYS_PTRACE), "ptrace is refused to every sandbox")
	var sawPid bool
	for i, in := range f {
		if in.Code&0x07 == unix.BPF_JMP {
			require.Less(t, i+1+int(in.Jt), len(f))
			require.Less(t, i+1+int(in.Jf), len(f))
		}
		if in.Code == bpfJeq && in.K == 4242 {
			sawPid = true
		}
	}
	require.True(t, sawPid)
	_, err = buildSeccompFilter(0, false)
	require.Error(t, err)
}

func TestParseMountInfo(t *testing.T) {
	in := "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
		"30 22 0:5 / /mnt/with\\040space rw,nosuid,nodev,noexec - tmpfs tmpfs rw\n"
	got := parseMountInfo(in)
	require.Equal(t, []mountEntry{
		{point: "/", flags: unix.MS_RELATIME},
		{point: "/mnt/with space", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	}, got)
}

func TestParseOrders(t *testing.T) {
	o, err := parseOrders([]string{flagMountNS + "12", flagUID + "65534", "--", "tcpdump", "-c", "--", "x"})
	require.NoError(t, err)
	require.Equal(t, uint64(12), o.parentMountNS)
	require.Equal(t, 65534, o.uid)
	require.Equal(t, []string{"tcpdump", "-c", "--", "x"}, o.argv)
	for _, bad := range [][]string{nil, {"--"}, {"x"}, {flagMountNS + "x", "--", "true"}, {"--", ""},
		{flagUID + "0", "--", "true"}, {flagUID + "-1", "--", "true"}, {flagUID + "x", "--", "true"}} {
		_, err := parseOrders(bad)
		require.Error(t, err, "%q", bad)
	}
}

// BenchmarkSandboxStart reports what the sandbox adds to starting a
// command (the target: under 15 ms): plain and sandboxed runs of
// true.
func BenchmarkSandboxStart(b *testing.B) {
	requireSandboxRoot(b)
	truePath, err := exec.LookPath("true")
	require.NoError(b, err)
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			require.NoError(b, exec.Command(truePath).Run())
		}
	})
	b.Run("sandboxed", func(b *testing.B) {
		for b.Loop() {
			cmd, err := SandboxCommand(context.Background(), []string{truePath})
			require.NoError(b, err)
			require.NoError(b, cmd.Run())
		}
	})
}
