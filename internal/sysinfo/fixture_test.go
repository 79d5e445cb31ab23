package sysinfo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func fixtureOptions(t testing.TB) Options {
	abs, err := filepath.Abs(fixtureRoot)
	require.NoError(t, err)
	return Options{
		Interval:   10 * time.Millisecond,
		Root:       abs,
		Now:        func() time.Time { return time.Unix(1700000000, 0) },
		Monotonic:  func() time.Duration { return 10 * time.Second },
		DNSTimeout: 500 * time.Millisecond,
		Redact:     testRedact,
		Systemctl:  filepath.Join(abs, "..", "systemctl", "fake-systemctl"),
	}
}

// fixtureUser is who owns the fixture's /proc/[pid] directories, named
// through the fixture's /etc/passwd (root, or the uid of a checkout that
// belongs to someone else).
func fixtureUser(t *testing.T) string {
	st, err := os.Stat(filepath.Join(fixtureRoot, "proc/42"))
	require.NoError(t, err)
	switch uid := st.Sys().(*syscall.Stat_t).Uid; uid {
	case 0:
		return "root"
	case 33:
		return "www-data"
	default:
		return strconv.FormatUint(uint64(uid), 10)
	}
}

// TestCollectFixture runs Collect on testdata/root: every fact that comes
// from procfs, sysfs, /etc or /dev/kmsg is checked exactly. The two
// samples read the same files, so the rates are zero (the rate
// arithmetic has its own tests).
func TestCollectFixture(t *testing.T) {
	opts := fixtureOptions(t)
	f := Collect(context.Background(), opts)

	require.Equal(t, time.Unix(1700000000, 0), f.CollectedAt)
	require.Equal(t, "fixture-host", f.Hostname)
	require.Equal(t, "Fixture Linux 1 (test)", f.Distro)
	require.Equal(t, "6.1.0-18-amd64", f.Kernel)
	require.NotEmpty(t, f.Arch)
	require.Equal(t, 5, f.CPUs)
	require.Equal(t, 12345*time.Second, f.Uptime)
	require.Equal(t, [3]float64{1.5, 0.75, 0.25}, f.Load)
	require.Equal(t, "systemd", f.InitSystem)
	require.Empty(t, f.Virtualization)
	require.GreaterOrEqual(t, f.Interval, 10*time.Millisecond)

	require.Equal(t, CPUUse{RunQueue: 3, Blocked: 2}, f.CPU)
	require.Equal(t, Memory{TotalBytes: 8000000 << 10, AvailableBytes: 2000000 << 10, SwapTotalBytes: 4000000 << 10,
		SwapFreeBytes: 3000000 << 10, OOMKills: 7}, f.Memory)
	require.Equal(t, &PSI{
		CPU:    Pressure{SomeAvg10: 1.5, SomeAvg60: 2.25},
		Memory: Pressure{SomeAvg10: 10, SomeAvg60: 5.5, FullAvg10: 8, FullAvg60: 4},
		IO:     Pressure{SomeAvg10: 0.1, SomeAvg60: 0.2, FullAvg10: 0.05, FullAvg60: 0.06},
	}, f.PSI)
	require.Equal(t, Limits{FileHandles: 2048, FileHandlesMax: 9223372036854775807, Tasks: 6, Processes: 3,
		PIDMax: 4194304, ThreadsMax: 63704}, f.Limits)
	require.Equal(t, []Disk{{Name: "sda", InFlight: 2}}, f.Disks,
		"no I/O between two reads of the same file, but requests in flight (a stuck device looks like this)")

	require.Equal(t, []BlockDevice{
		{Name: "loop1", SizeBytes: 64 << 20, ReadOnly: true, BackingFile: "/srv/images/disk.img"},
		{Name: "sda", SizeBytes: 4 << 30},
	}, f.BlockDevices, "a detached loop device (size 0) and a partition are not listed")

	require.Len(t, f.Filesystems, 1, "the other mounts do not exist under the fixture root")
	fs := f.Filesystems[0]
	require.Equal(t, "/", fs.Mount)
	require.Equal(t, "/dev/sda1", fs.Device)
	require.Equal(t, "ext4", fs.Type)
	require.NotZero(t, fs.SizeBytes, "statfs of the fixture directory")
	for _, m := range []string{"/dev/shm", "/mnt/my disk", "/run", "/srv/data"} {
		requireWarning(t, f, "statfs "+m+": no such file or directory")
	}

	n := f.Network
	require.Equal(t, uint64(17), n.ListenOverflows)
	require.Equal(t, uint64(19), n.ListenDrops)
	require.Equal(t, uint64(2168), n.TCPAttemptFails)
	require.Equal(t, []Interface{{Name: "eth0", Up: true, RxErrors: 3, TxErrors: 4, RxDropped: 5, TxDropped: 6}}, n.Interfaces)
	require.Equal(t, "/etc/resolv.conf", n.ResolvConf)
	require.Len(t, n.Resolvers, 2)
	require.Equal(t, "127.0.0.77", n.Resolvers[0].Address)
	require.Equal(t, "::1", n.Resolvers[1].Address)
	for _, r := range n.Resolvers {
		require.False(t, r.Answered, "nothing serves DNS on %s", r.Address)
		require.NotEmpty(t, r.Error)
	}
	requireWarning(t, f, `/etc/resolv.conf: unusable line "nameserver bogus"`)

	require.Empty(t, f.TopCPU, "no process ran between two reads of the same file")
	user := fixtureUser(t)
	nginx := Process{PID: 42, Comm: "nginx: (worker)", Cmdline: "nginx: worker --password=[REDACTED]", User: user, State: "R",
		RSSBytes: 2500 * uint64(os.Getpagesize()), Threads: 4, OpenFDs: 6, FDLimit: 8}
	initProc := Process{PID: 1, Comm: "systemd", Cmdline: "/sbin/init splash", User: user, State: "S",
		RSSBytes: 3000 * uint64(os.Getpagesize()), Threads: 1, OpenFDs: 3, FDLimit: 1024}
	require.Equal(t, []Process{initProc, nginx}, f.TopMemory, "the kernel thread has no memory of its own")
	require.Equal(t, []Process{nginx}, f.FDHeavy, "6 of 8 open files")

	require.Equal(t, fixtureCgroups, f.Cgroups)

	require.Equal(t, []Unit{
		{Name: "crashy.service", Description: "Crashes at start", ActiveState: "failed", SubState: "failed", Restarts: 5, Result: "exit-code"},
		{Name: "home.mount", Description: "/home", ActiveState: "failed", SubState: "failed"},
	}, f.FailedUnits)
	require.Equal(t, []Unit{
		{Name: "flappy.service", Description: "Keeps restarting", ActiveState: "activating", SubState: "auto-restart", Restarts: 12, Result: "exit-code"},
		{Name: "crashy.service", Description: "Crashes at start", ActiveState: "failed", SubState: "failed", Restarts: 5, Result: "exit-code"},
	}, f.RestartingUnits)
	require.Equal(t, "systemd: 2 failed units, 2 services restarted", f.Services)

	require.Equal(t, []LogLine{
		{Age: 8 * time.Second, Priority: 3, Text: "EXT4-fs error (device sda1): ext4_find_entry:1234: inode #2: comm ls: reading directory lblock 0"},
		{Age: 7 * time.Second, Priority: 4, Text: "nginx[42]: segfault at 0 ip 0000 sp 0000 error 4 in nginx"},
		{Age: 6 * time.Second, Priority: 4, Text: "myapp: token=[REDACTED] leaked"},
		{Age: 5 * time.Second, Priority: 0, Text: "Kernel panic - not syncing: test"},
	}, f.KernelLog)
	requireWarning(t, f, "kernel log: 1 malformed records")

	b, err := json.Marshal(f)
	require.NoError(t, err)
	require.NotContains(t, string(b), "hunter2")
	require.NotContains(t, string(b), "abc123")
}

func requireWarning(t *testing.T, f *Facts, substr string) {
	t.Helper()
	for _, w := range f.Warnings {
		if strings.Contains(w, substr) {
			return
		}
	}
	require.Failf(t, "warning missing", "no warning contains %q in %q", substr, f.Warnings)
}

// TestCollectEmptyRoot: nothing readable gives warnings, not a panic or
// an error.
func TestCollectEmptyRoot(t *testing.T) {
	f := Collect(context.Background(), Options{Root: t.TempDir(), Interval: time.Millisecond, DNSTimeout: 100 * time.Millisecond})
	require.Empty(t, f.Hostname)
	require.Empty(t, f.Filesystems)
	require.Nil(t, f.PSI)
	for _, w := range []string{"hostname:", "CPU:", "processes:", "memory:", "mounts:", "kernel log: open", "name resolution:", "init system unknown"} {
		if w == "init system unknown" {
			require.Contains(t, f.Services, w)
			continue
		}
		requireWarning(t, f, w)
	}
	require.NotEmpty(t, f.Prompt())
}

func TestCollectCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	opts := fixtureOptions(t)
	opts.Interval = time.Hour
	f := Collect(ctx, opts)
	requireWarning(t, f, "interval cut short")
	require.Less(t, f.Interval, time.Hour)
	require.Equal(t, "fixture-host", f.Hostname)
}

func TestServicesPlainTable(t *testing.T) {
	opts := fixtureOptions(t)
	opts.Systemctl = filepath.Join(filepath.Dir(opts.Systemctl), "fake-systemctl-old")
	c := &collector{opts: opts.withDefaults(), root: opts.Root}
	f := &Facts{}
	c.services(context.Background(), f)
	require.Empty(t, c.warnings)
	require.Equal(t, []string{"crashy.service", "home.mount"}, unitNames(f.FailedUnits))
	require.Equal(t, []string{"flappy.service", "crashy.service"}, unitNames(f.RestartingUnits))
	require.Equal(t, "Crashes at start", f.FailedUnits[0].Description)
}

func TestServicesTimeout(t *testing.T) {
	opts := fixtureOptions(t)
	opts.Systemctl = filepath.Join(filepath.Dir(opts.Systemctl), "fake-systemctl-hang")
	c := &collector{opts: opts.withDefaults(), root: opts.Root}
	f := &Facts{}
	ctx, cancel := context.WithCancel(context.Background())
	// Cancelling stands in for the 2 s bound: the same context ends both.
	time.AfterFunc(50*time.Millisecond, cancel)
	c.services(ctx, f)
	require.Equal(t, "systemd units could not be listed", f.Services)
	require.Len(t, c.warnings, 1)
	require.Contains(t, c.warnings[0], "systemctl list-units")
}

func TestServicesNotSystemd(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "proc/1"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "proc/1/comm"), []byte("tini\n"), 0o644))
	c := &collector{opts: Options{Root: root, Systemctl: "/nonexistent"}.withDefaults(), root: root}
	f := &Facts{}
	c.services(context.Background(), f)
	require.Equal(t, "systemd is not PID 1 (init: tini)", f.Services)
	require.Empty(t, c.warnings)
}

func unitNames(us []Unit) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Name)
	}
	return out
}

func TestPromptFixture(t *testing.T) {
	f := Collect(context.Background(), fixtureOptions(t))
	f.Addresses = []string{"10.0.0.5 (eth0)", "192.168.1.2 (wlan0)"}
	f.Catalog = []CatalogEntry{{Name: "execsnoop", Supported: true}, {Name: "biolatency", Supported: true}, {Name: "tcpretrans", Reason: "no kprobes"}}
	p := f.Prompt()
	require.True(t, strings.HasPrefix(p, fmt.Sprintf(`SYSTEM INFORMATION:
- Hostname: fixture-host
- Operating System: Fixture Linux 1 (test)
- Kernel Version: 6.1.0-18-amd64
- Architecture: %s
- CPU Cores: 5
- Total Memory: 7.6GiB
- System Uptime: up 3 hours, 25 minutes
- Current Load Average: 1.50, 0.75, 0.25
- Root Disk Usage: Root: %s/%s (%.0f%% used)
- Private IP Addresses: 10.0.0.5 (eth0), 192.168.1.2 (wlan0)
- Go Runtime: %s
`, f.Arch, formatBytes(f.Filesystems[0].UsedBytes), formatBytes(f.Filesystems[0].SizeBytes),
		percent(f.Filesystems[0].UsedBytes, f.Filesystems[0].UsedBytes+f.Filesystems[0].AvailBytes), runtime.Version())), p)
	for _, want := range []string{
		"- Memory: 1.9GiB available of 7.6GiB; swap 977MiB used of 3.8GiB",
		"- Pressure stalls % (avg10/avg60): cpu some 1.5/2.2 full 0.0/0.0; memory some 10.0/5.5 full 8.0/4.0",
		"- Interfaces: eth0 (rx errors 3, tx errors 4, rx dropped 5, tx dropped 6)",
		"- Services: systemd: 2 failed units, 2 services restarted",
		"- /system.slice/app.service (cgroup v2): 2 OOM kills, memory 100MiB of 100MiB limit\n",
		"- /system.slice/forky.service (cgroup v2): pids 10 of 10, 4 forks refused at pids.max\n",
		"- failed: crashy.service (failed/failed, result exit-code, 5 restarts) Crashes at start\n",
		"- restarted 12 times: flappy.service (activating/auto-restart) Keeps restarting\n",
		"- [8s ago] err: EXT4-fs error (device sda1)",
		"- [5s ago] emerg: Kernel panic - not syncing: test\n",
		"- pid 42 nginx: (worker) (" + fixtureUser(t) + ", R): 0.0% CPU",
		", 6 of 8 fds: nginx: worker --password=[REDACTED]\n",
		"Trace catalog:\n- work here: execsnoop, biolatency\n- not available: tcpretrans (no kprobes)\n",
	} {
		require.Contains(t, p, want)
	}
	require.NotContains(t, p, "hunter2")
	require.LessOrEqual(t, len(p), PromptBudget)
}

// TestPromptBudget: however many facts, the prompt stays within its budget
// and says what it left out.
func TestPromptBudget(t *testing.T) {
	f := &Facts{Hostname: "h", Interval: time.Second}
	for i := range 500 {
		f.Filesystems = append(f.Filesystems, Filesystem{Mount: fmt.Sprintf("/mnt/%03d", i), Type: "ext4", SizeBytes: 100, UsedBytes: 90, AvailBytes: 10})
		f.KernelLog = append(f.KernelLog, LogLine{Priority: 3, Text: strings.Repeat("x", 400)})
	}
	p := f.Prompt()
	require.LessOrEqual(t, len(p), PromptBudget)
	require.Contains(t, p, "- /mnt/000 (ext4 on ): space 90% used")
	require.Regexp(t, `\n- … \d+ more\n$`, p)
	require.NotContains(t, p, "Kernel log", "the budget ran out before")
}
