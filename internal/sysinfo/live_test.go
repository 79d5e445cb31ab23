package sysinfo

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary a helper process (see TestMain): the
// live tests need processes with a known command line, descriptor count
// and memory appetite.
const helperEnv = "NANNYAGENT_SYSINFO_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
	case "fds":
		helperFDs()
	case "hog":
		helperHog()
	case "syncwrite":
		helperSyncWrite()
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// helperFDs lowers its open-files limit to 64, opens descriptors until 63
// are open, prints how many, and waits for its stdin to close.
func helperFDs() {
	lim := unix.Rlimit{Cur: 64, Max: 64}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for open := countOwnFDs(); open < 63; open++ {
		if _, err := unix.Open("/dev/null", unix.O_RDONLY, 0); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
	}
	fmt.Println("ready", countOwnFDs())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

func countOwnFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries) - 1 // the directory being read is one of them
}

// helperHog waits for a line on stdin (its parent moves it into a cgroup
// first), then touches memory until it is killed.
func helperHog() {
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(3)
	}
	var keep [][]byte
	for range 1024 { // 1 GiB, far past the limit
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	fmt.Println("not killed", len(keep))
	os.Exit(4)
}

// requireRoot skips a test that needs root, or fails it where root tests
// are demanded (NANNYAGENT_REQUIRE_BPF=1, as in CI).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("NANNYAGENT_REQUIRE_BPF") == "1" {
		t.Fatal("NANNYAGENT_REQUIRE_BPF=1 but the test is not running as root")
	}
	t.Skip("needs root (set NANNYAGENT_REQUIRE_BPF=1 to make this a failure)")
}

func liveOptions() Options {
	return Options{Interval: 50 * time.Millisecond, DNSTimeout: 500 * time.Millisecond, Redact: testRedact}
}

// TestLiveInodesExhausted: a tmpfs of 64 inodes filled with files shows
// no free inode while most of its space is free (df -h looks fine).
func TestLiveInodesExhausted(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	require.NoError(t, unix.Mount("nannyagent-test", dir, "tmpfs", 0, "size=4m,nr_inodes=64"))
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	created := 0
	for {
		fh, err := os.Create(filepath.Join(dir, "f"+strconv.Itoa(created)))
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		require.NoError(t, err)
		require.NoError(t, fh.Close())
		created++
		require.Less(t, created, 64, "the 64-inode tmpfs took more files")
	}
	require.Equal(t, 63, created, "the root directory holds the 64th inode")

	f := Collect(context.Background(), liveOptions())
	var fs *Filesystem
	for i := range f.Filesystems {
		if f.Filesystems[i].Mount == dir {
			fs = &f.Filesystems[i]
		}
	}
	require.NotNil(t, fs, "mount %s missing from %+v", dir, f.Filesystems)
	require.Equal(t, Filesystem{Mount: dir, Device: "nannyagent-test", Type: "tmpfs", SizeBytes: 4 << 20,
		UsedBytes: 0, AvailBytes: 4 << 20, Inodes: 64, InodesUsed: 64, InodesFree: 0}, *fs)
	require.Contains(t, f.Prompt(), "- "+dir+" (tmpfs on nannyagent-test): space 0% used (4.0MiB free of 4.0MiB), inodes 100% used (0 free of 64)\n")
}

// TestLiveProcess: a child with a secret in its arguments, 63 of 64
// descriptors open, is listed among the processes near their open-files
// limit, with its exact descriptor count and its command line redacted.
func TestLiveProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0], "sysinfo-helper", "--password=hunter2", "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=fds")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready 63\n", line)

	f := Collect(context.Background(), liveOptions())
	var p *Process
	for i := range f.FDHeavy {
		if f.FDHeavy[i].PID == cmd.Process.Pid {
			p = &f.FDHeavy[i]
		}
	}
	require.NotNil(t, p, "pid %d not among %+v", cmd.Process.Pid, f.FDHeavy)
	require.Equal(t, os.Args[0]+" sysinfo-helper --password=[REDACTED] -test.run=^$", p.Cmdline)
	require.Equal(t, 63, p.OpenFDs)
	require.Equal(t, uint64(64), p.FDLimit)
	require.Equal(t, filepath.Base(os.Args[0])[:min(15, len(filepath.Base(os.Args[0])))], p.Comm)
	require.Positive(t, p.RSSBytes)
	require.Positive(t, p.Threads)
	prompt := f.Prompt()
	require.Contains(t, prompt, fmt.Sprintf("- pid %d ", cmd.Process.Pid))
	require.NotContains(t, prompt, "hunter2")
	for _, q := range append(append(f.TopCPU, f.TopMemory...), f.FDHeavy...) {
		require.NotContains(t, q.Cmdline, "hunter2")
	}
}

// TestLiveOOMKill: a child that outgrows the 32 MiB memory limit of its
// own cgroup (v2 where the memory controller is there, else v1) is killed
// once, and Facts names that cgroup with one OOM kill.
func TestLiveOOMKill(t *testing.T) {
	requireRoot(t)
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	mounts, err := parseMountinfo(b)
	require.NoError(t, err)
	var root *cgroupRoot
	for _, r := range cgroupRoots(mounts) {
		if r.version == 2 {
			ctrl, _ := os.ReadFile(filepath.Join(r.dir, "cgroup.controllers"))
			if strings.Contains(" "+string(ctrl), " memory") &&
				os.WriteFile(filepath.Join(r.dir, "cgroup.subtree_control"), []byte("+memory"), 0) == nil {
				root = &r
				break
			}
		} else if r.memory && root == nil {
			root = &r
		}
	}
	if root == nil {
		t.Skip("no memory cgroup controller on this host")
	}
	name := fmt.Sprintf("nannyagent-sysinfo-oom-%d", os.Getpid())
	dir := filepath.Join(root.dir, name)
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() { _ = os.Remove(dir) })
	write := func(file, v string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(v), 0), file)
	}
	const limit = 32 << 20
	if root.version == 2 {
		write("memory.max", strconv.Itoa(limit))
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			write("memory.swap.max", "0")
		}
	} else {
		write("memory.limit_in_bytes", strconv.Itoa(limit))
		if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
			write("memory.memsw.limit_in_bytes", strconv.Itoa(limit))
		}
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=hog")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	write("cgroup.procs", strconv.Itoa(cmd.Process.Pid))
	_, err = stdin.Write([]byte("go\n"))
	require.NoError(t, err)
	err = cmd.Wait()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	ws := exitErr.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "helper ended with %v, not the OOM killer's SIGKILL", err)

	f := Collect(context.Background(), liveOptions())
	var cg *Cgroup
	for i := range f.Cgroups {
		if f.Cgroups[i].Path == "/"+name && f.Cgroups[i].Version == root.version {
			cg = &f.Cgroups[i]
		}
	}
	require.NotNil(t, cg, "cgroup /%s missing from %+v (warnings %q)", name, f.Cgroups, f.Warnings)
	require.Equal(t, uint64(1), cg.OOMKills)
	require.Equal(t, uint64(limit), cg.MemoryLimitBytes)
	require.Contains(t, f.Prompt(), fmt.Sprintf("- /%s (cgroup v%d): 1 OOM kills, memory ", name, root.version))
}

// TestLiveKernelLog writes a message to the kernel log and reads it back
// through the non-blocking /dev/kmsg reader, redacted, with its age. It
// is a warning, the mildest level kept, so that investigations running
// beside it do not take it for an error of the host.
func TestLiveKernelLog(t *testing.T) {
	requireRoot(t)
	nonce := fmt.Sprintf("nannyagent-sysinfo-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = kmsg.WriteString("<4>" + nonce + " (a test message) password=hunter2\n")
	require.NoError(t, err)
	require.NoError(t, kmsg.Close())

	// All records, so that a burst of other messages cannot push this one
	// out of the 50 Collect keeps.
	c := &collector{opts: liveOptions().withDefaults(), root: "/"}
	var found *LogLine
	lines := c.kernelLog(1 << 20)
	for i := range lines {
		if strings.HasPrefix(lines[i].Text, nonce) {
			found = &lines[i]
		}
	}
	require.NotNil(t, found, "message not read back (warnings %q)", c.warnings)
	require.Equal(t, LogLine{Age: found.Age, Priority: 4, Text: nonce + " (a test message) password=[REDACTED]"}, *found)
	require.GreaterOrEqual(t, found.Age, time.Duration(0))
	require.Less(t, found.Age, time.Minute, "the record's timestamp and CLOCK_MONOTONIC are one clock")

	f := Collect(context.Background(), liveOptions())
	require.LessOrEqual(t, len(f.KernelLog), maxKernelLog)
}

// TestLiveHost checks the facts this host states elsewhere exactly.
func TestLiveHost(t *testing.T) {
	f := Collect(context.Background(), liveOptions())
	host, err := os.Hostname()
	require.NoError(t, err)
	require.Equal(t, host, f.Hostname)
	var u unix.Utsname
	require.NoError(t, unix.Uname(&u))
	require.Equal(t, unix.ByteSliceToString(u.Release[:]), f.Kernel)
	require.Equal(t, unix.ByteSliceToString(u.Machine[:]), f.Arch)
	var si unix.Sysinfo_t
	require.NoError(t, unix.Sysinfo(&si))
	require.Equal(t, uint64(si.Totalram)*uint64(si.Unit), f.Memory.TotalBytes)
	comm, err := os.ReadFile("/proc/1/comm")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(comm)), f.InitSystem)
	if f.InitSystem != "systemd" {
		require.Equal(t, "systemd is not PID 1 (init: "+f.InitSystem+")", f.Services)
	}
	var root *Filesystem
	for i := range f.Filesystems {
		if f.Filesystems[i].Mount == "/" {
			root = &f.Filesystems[i]
		}
	}
	require.NotNil(t, root)
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs("/", &st))
	require.Equal(t, st.Blocks*uint64(st.Frsize), root.SizeBytes)
	require.Equal(t, st.Files, root.Inodes)
	require.Positive(t, f.Limits.Processes)
	require.GreaterOrEqual(t, f.Limits.Tasks, f.Limits.Processes)
	require.InDelta(t, 100, f.CPU.User+f.CPU.System+f.CPU.IOWait+f.CPU.Steal+f.CPU.Idle, 0.001)
	// Other mounts may come and go while this runs; whatever was not
	// read is explained.
	for _, w := range f.Warnings {
		t.Log("warning:", w)
	}
}

// fakeDNS answers each query with what reply returns (nil: no answer).
func fakeDNS(t *testing.T, reply func(q []byte) [][]byte) uint16 {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, addr, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, r := range reply(append([]byte(nil), buf[:n]...)) {
				_, _ = conn.WriteTo(r, addr)
			}
		}
	}()
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port)
}

// answer turns a query into a reply with the given flags.
func answer(q []byte, flags uint16) []byte {
	r := append([]byte(nil), q...)
	binary.BigEndian.PutUint16(r[2:], flags)
	return r
}

func TestProbeResolver(t *testing.T) {
	ctx := context.Background()
	const timeout = 300 * time.Millisecond

	port := fakeDNS(t, func(q []byte) [][]byte {
		stray := answer(q, 0x8180)
		stray[0] ^= 0xff // another query's ID: ignored
		return [][]byte{stray, answer(q, 0x8183)}
	})
	r := probeResolver(ctx, "127.0.0.1", port, timeout)
	require.Positive(t, r.LatencyMS)
	require.Equal(t, Resolver{Address: "127.0.0.1", Answered: true, Rcode: "NXDOMAIN", LatencyMS: r.LatencyMS}, r)

	port = fakeDNS(t, func(q []byte) [][]byte { return [][]byte{answer(q, 0x8182)} })
	r = probeResolver(ctx, "127.0.0.1", port, timeout)
	require.True(t, r.Answered, "SERVFAIL is an answer: the server is there")
	require.Equal(t, "SERVFAIL", r.Rcode)

	port = fakeDNS(t, func(q []byte) [][]byte { return [][]byte{answer(q, 0x8185)} })
	r = probeResolver(ctx, "127.0.0.1", port, timeout)
	require.Equal(t, Resolver{Address: "127.0.0.1", Rcode: "REFUSED", Error: "the server refused the query", LatencyMS: r.LatencyMS}, r)

	port = fakeDNS(t, func(q []byte) [][]byte { return [][]byte{answer(q, 0x0100)} })
	r = probeResolver(ctx, "127.0.0.1", port, timeout)
	require.False(t, r.Answered)
	require.Equal(t, "malformed reply: QR bit not set: a query, not a reply", r.Error)

	port = fakeDNS(t, func(q []byte) [][]byte { return nil })
	r = probeResolver(ctx, "127.0.0.1", port, timeout)
	require.Equal(t, Resolver{Address: "127.0.0.1", Error: "no answer within 300ms"}, r)

	// A closed port: the ICMP port unreachable comes back as ECONNREFUSED.
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	require.NoError(t, conn.Close())
	r = probeResolver(ctx, "127.0.0.1", closed, timeout)
	require.False(t, r.Answered)
	require.Contains(t, r.Error, "connection refused")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r = probeResolver(cctx, "127.0.0.1", port, timeout)
	require.False(t, r.Answered)
	require.Contains(t, r.Error, "canceled")
}

// TestStatfsHung: a filesystem whose statfs never returns (a hard NFS
// mount whose server is gone) costs one warning and the statfs timeout,
// and the other filesystems are still reported.
func TestStatfsHung(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	orig := statfsFunc
	statfsFunc = func(p string, st *unix.Statfs_t) error {
		if strings.HasSuffix(p, "/srv/data") {
			<-release
			return errors.New("released")
		}
		return unix.Statfs(p, st)
	}
	t.Cleanup(func() { statfsFunc = orig })

	f := Collect(context.Background(), fixtureOptions(t))
	requireWarning(t, f, "statfs /srv/data (nfs4 server:/export): no answer within 1s (hung network filesystem?)")
	require.Len(t, f.Filesystems, 1)
	require.Equal(t, "/", f.Filesystems[0].Mount)
}

// BenchmarkCollect measures one Collect with the default 1 s interval;
// overhead-ms is what it takes beyond the interval (the target is well
// under a second).
func BenchmarkCollect(b *testing.B) {
	var over time.Duration
	for b.Loop() {
		start := time.Now()
		f := Collect(context.Background(), Options{})
		over += time.Since(start) - defaultInterval
		if len(f.Warnings) > 0 {
			b.Logf("warnings: %q", f.Warnings)
		}
	}
	b.ReportMetric(float64(over.Milliseconds())/float64(b.N), "overhead-ms/op")
}

// BenchmarkSample is the cost of one read of the counters, all processes
// included, which Collect does twice.
func BenchmarkSample(b *testing.B) {
	c := &collector{opts: Options{}.withDefaults(), root: "/"}
	for b.Loop() {
		c.sample(false)
	}
}
