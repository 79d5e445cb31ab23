package scenarios

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// 1. Disk: a filesystem out of inodes while df -h shows free space.
func TestInodeExhaustion(t *testing.T) {
	needRoot(t)
	mnt := t.TempDir()
	run(t, "mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=200", "scenario-inodes", mnt)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(mnt, "f"+strconv.Itoa(i)))
		if err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
		f.Close()
	}
	rep := diagnoseJSON(t, "I cannot create files on "+mnt+" but df -h shows plenty of free space")
	requireCause(t, rep, "inode", mnt)
}

// 2. Memory: a process OOM-killed in a memory-limited cgroup.
func TestOOMKillInCgroup(t *testing.T) {
	needRoot(t)
	cg := memoryCgroup(t, "nannyagent-scenario-oom", 64<<20)
	w := workload(t, "leaky-app", "alloc", "512")
	stdin, err := w.StdinPipe()
	require.NoError(t, err)
	w.Env = append(w.Env, "NANNYAGENT_SCENARIO_WAIT_STDIN=1")
	require.NoError(t, w.Start())
	require.NoError(t, os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(w.Process.Pid)), 0o644))
	_, _ = stdin.Write([]byte("go\n"))
	err = w.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "killed", ee.ProcessState.Sys().(syscall.WaitStatus).Signal().String(), "the kernel's OOM killer must have killed it")
	rep := diagnoseJSON(t, "my application leaky-app keeps getting killed and restarting")
	requireCause(t, rep, "memory", "leaky-app")
}

// memoryCgroup makes a cgroup with a memory limit (v2 where the memory
// controller is there, else v1) and no swap, removed at cleanup.
func memoryCgroup(t *testing.T, name string, limit int64) string {
	t.Helper()
	lim := strconv.FormatInt(limit, 10)
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(string(b), "memory") {
		dir := filepath.Join("/sys/fs/cgroup", name)
		require.NoError(t, os.Mkdir(dir, 0o755))
		t.Cleanup(func() { removeCgroup(dir) })
		require.NoError(t, os.WriteFile(filepath.Join(dir, "memory.max"), []byte(lim), 0o644))
		_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0o644)
		return dir
	}
	dir := filepath.Join("/sys/fs/cgroup/memory", name)
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() { removeCgroup(dir) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(lim), 0o644))
	_ = os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), []byte(lim), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "memory.swappiness"), []byte("0"), 0o644)
	return dir
}

// removeCgroup kills what is left in a cgroup and removes it.
func removeCgroup(dir string) {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for range 50 {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// 3. Network: name resolution failing (a dead resolver in a netns).
func TestNameResolutionFailing(t *testing.T) {
	needRoot(t)
	const ns = "nannyagent-scenario-dns"
	_ = exec.Command("ip", "netns", "del", ns).Run()
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	etc := filepath.Join("/etc/netns", ns)
	require.NoError(t, os.MkdirAll(etc, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(etc) })
	// 192.0.2.0/24 is TEST-NET-1: nothing answers there.
	require.NoError(t, os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644))
	rep := diagnoseJSON(t, "apt update fails: it could not resolve deb.debian.org", "ip", "netns", "exec", ns)
	requireCause(t, rep, "192.0.2.53")
	requireAnyCause(t, rep, "dns", "name resolution", "resolver", "nameserver")
}

// 4a. Performance: more busy threads than CPUs.
func TestCPUSaturation(t *testing.T) {
	needRoot(t)
	threads := 2*runtime.NumCPU() + 2
	start(t, workload(t, "cruncher", "busy", strconv.Itoa(threads)))
	waitFor(t, "the run queue to fill", 10*time.Second, func() bool { return procsRunning(t) >= runtime.NumCPU()+1 })
	rep := diagnoseJSON(t, "the server is very slow and the load is high")
	requireCause(t, rep, "cpu", "cruncher")
}

func procsRunning(t *testing.T) int {
	b, err := os.ReadFile("/proc/stat")
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "procs_running "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// diskDir is a directory on a real disk (not tmpfs) for I/O scenarios.
func diskDir(t *testing.T) (string, string) {
	t.Helper()
	for _, base := range []string{"/var/tmp", "/var/lib", "/root"} {
		var st unix.Statfs_t
		if unix.Statfs(base, &st) == nil && st.Type != unix.TMPFS_MAGIC {
			dir, err := os.MkdirTemp(base, "nannyagent-scenario-")
			require.NoError(t, err)
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir, blockDevice(t, dir)
		}
	}
	t.Skip("no directory on a block device")
	return "", ""
}

// blockDevice names the disk holding path ("vda", "sda", "nvme0n1").
func blockDevice(t *testing.T, path string) string {
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)))
	require.NoError(t, err)
	name := filepath.Base(link)
	// A partition's parent directory is its disk.
	if _, err := os.Stat(filepath.Join("/sys/class/block", name, "partition")); err == nil {
		name = filepath.Base(filepath.Dir(link))
	}
	return name
}

// 4b. Performance: an I/O bottleneck from heavy synchronous writes.
func TestSyncWriteBottleneck(t *testing.T) {
	needRoot(t)
	dir, disk := diskDir(t)
	w := workload(t, "ingest-writer", "syncwrite", filepath.Join(dir, "ingest.dat"), "2")
	start(t, w)
	waitIO(t, w, 64<<20)
	rep := diagnoseJSON(t, "writing to disk has become very slow on this server")
	requireCause(t, rep, disk, "ingest-writer", "synchronous")
}

// waitIO waits until the workload has moved n bytes from or to storage
// (/proc/PID/io), so that the diagnosis sees it at work even when the
// machine is slow to start it.
func waitIO(t *testing.T, cmd *exec.Cmd, n uint64) {
	t.Helper()
	waitFor(t, cmd.Path+" to do I/O", 30*time.Second, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", cmd.Process.Pid))
		if err != nil {
			return false
		}
		var done uint64
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ": ")
			if k == "read_bytes" || k == "write_bytes" {
				x, _ := strconv.ParseUint(v, 10, 64)
				done += x
			}
		}
		return done >= n
	})
}

// 5. Web server: permission denied on its files.
func TestWebServerPermissionDenied(t *testing.T) {
	needRoot(t)
	dir := openDir(t)
	page := filepath.Join(dir, "index.html")
	require.NoError(t, os.WriteFile(page, []byte("<h1>hello</h1>\n"), 0o600))
	w := workload(t, "webd", "serve", "127.0.0.1:0", page)
	w.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	start(t, w)
	rep := diagnoseJSON(t, "our web server webd answers 403 Forbidden for every page")
	requireCause(t, rep, page)
	requireAnyCause(t, rep, "permission", "eacces")
}

// 6. Hardware: block device I/O errors in the kernel log. A loop device
// whose backing file lives on a tmpfs too small for it fails its writes
// for real once the tmpfs is full.
func TestBlockDeviceIOErrors(t *testing.T) {
	needRoot(t)
	back := t.TempDir()
	run(t, "mount", "-t", "tmpfs", "-o", "size=16m", "scenario-backing", back)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", back).Run() })
	img := filepath.Join(back, "disk.img")
	run(t, "truncate", "-s", "64M", img)
	loop := strings.TrimSpace(run(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	// Lazy init keeps mkfs's own writes within the backing tmpfs.
	run(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", loop)
	mnt := t.TempDir()
	run(t, "mount", loop, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	// Write more than the backing tmpfs holds; the writes fail at the
	// loop device, so errors here are expected.
	_ = exec.Command("dd", "if=/dev/urandom", "of="+filepath.Join(mnt, "data"), "bs=1M", "count=32", "conv=fsync").Run()
	rep := diagnoseJSON(t, "the server logs disk errors and files on the data disk are corrupted")
	requireCause(t, rep, filepath.Base(loop))
	requireAnyCause(t, rep, "i/o error", "io error", "space allocation error")
}

// 7. Database-like: a reader slowed down by another process's I/O.
func TestSlowReadsFromIOContention(t *testing.T) {
	needRoot(t)
	dir, disk := diskDir(t)
	data := filepath.Join(dir, "table.db")
	run(t, "dd", "if=/dev/urandom", "of="+data, "bs=1M", "count=128", "conv=fsync", "status=none")
	reader := workload(t, "dbreader", "directread", data)
	start(t, reader)
	writer := workload(t, "backup-job", "syncwrite", filepath.Join(dir, "backup.dat"), "2")
	start(t, writer)
	waitIO(t, reader, 4<<20)
	waitIO(t, writer, 64<<20)
	rep := diagnoseJSON(t, "queries of our database dbreader have become slow")
	requireCause(t, rep, disk, "backup-job", "dbreader")
}

// supervise restarts a workload forever, the way an init system restarts
// a failing service, until the test ends.
func supervise(t *testing.T, name, w string, args ...string) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	proto := workload(t, name, w, args...)
	go func() {
		defer close(done)
		for {
			cmd := exec.Command(proto.Path, proto.Args[1:]...)
			cmd.Env = proto.Env
			_ = cmd.Run()
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// 8a. Services: a service that keeps crashing at start.
func TestServiceCrashLoop(t *testing.T) {
	needRoot(t)
	supervise(t, "crashy", "crash")
	rep := diagnoseJSON(t, "the crashy service keeps crashing right after it starts")
	requireCause(t, rep, "crashy")
	requireAnyCause(t, rep, "exit", "crash", "restart")
}

// 8b. Services: a service that cannot bind its port.
func TestServicePortInUse(t *testing.T) {
	needRoot(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	start(t, workload(t, "squatter", "hold", addr))
	waitFor(t, "squatter to listen", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	supervise(t, "webapp", "bind", addr)
	_, port, _ := net.SplitHostPort(addr)
	rep := diagnoseJSON(t, "webapp does not start: it says address already in use")
	requireCause(t, rep, port, "squatter")
}
