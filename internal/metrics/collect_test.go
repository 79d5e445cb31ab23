package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// fixture is a /proc, /sys and /etc tree in a temporary directory, with
// the live hooks (statfs, interfaces, uname, sleep) replaced.
type fixture struct {
	t    *testing.T
	root string

	mu      sync.Mutex
	statfs  map[string]unix.Statfs_t
	calls   map[string]int
	block   map[string]chan struct{} // statfs of these paths waits for the channel
	sleeps  []time.Duration
	onSleep func() // runs during a sleep: the second CPU sample differs
}

const fixtureMountinfo = `21 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
22 21 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 21 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
24 21 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1632848k,mode=755
25 21 8:2 / /boot rw,relatime shared:30 - ext4 /dev/sda2 rw
26 21 0:30 /@home /home rw,relatime shared:31 - btrfs /dev/sdb1 rw,space_cache=v2,subvol=/@home
27 21 0:30 /@docker /var/lib/docker/btrfs rw,relatime shared:32 - btrfs /dev/sdb1 rw,subvol=/@docker
28 21 0:45 / /mnt/nfs rw,relatime shared:33 - nfs4 srv:/export rw,vers=4.2
29 21 7:0 / /snap/core22/1380 ro,nodev,relatime shared:34 - squashfs /dev/loop0 ro
`

func newFixture(t *testing.T) *fixture {
	f := &fixture{
		t: t, root: t.TempDir(),
		statfs: map[string]unix.Statfs_t{
			"/":     {Frsize: 4096, Blocks: 26214400, Bfree: 15728640, Bavail: 14417920}, // 100 GiB, 60 free, 55 avail
			"/boot": {Frsize: 4096, Blocks: 262144, Bfree: 196608, Bavail: 183500},
			"/home": {Bsize: 4096, Blocks: 52428800, Bfree: 26214400, Bavail: 26214400}, // Frsize 0: Bsize counts
		},
		calls: map[string]int{},
		block: map[string]chan struct{}{},
	}
	for p, content := range map[string]string{
		"proc/stat":                     "cpu  1000 0 0 3000 0 0 0 0 0 0\ncpu0 1000 0 0 3000 0 0 0 0 0 0\n",
		"proc/meminfo":                  "MemTotal:       16252928 kB\nMemFree:         1000000 kB\nMemAvailable:   12884992 kB\n",
		"proc/loadavg":                  "0.52 0.41 0.30 2/512 12345\n",
		"proc/net/dev":                  netDev,
		"proc/net/route":                netRoute,
		"proc/self/mountinfo":           fixtureMountinfo,
		"proc/cpuinfo":                  "processor\t: 0\n\nprocessor\t: 1\n\nprocessor\t: 2\n\nprocessor\t: 3\n",
		"proc/sys/kernel/osrelease":     "6.1.0-18-amd64\n",
		"sys/devices/system/cpu/online": "0-7\n",
		"etc/os-release":                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
		"etc/debian_version":            "12.11\n",
	} {
		f.write(p, content)
	}
	return f
}

func (f *fixture) write(p, content string) {
	full := filepath.Join(f.root, p)
	require.NoError(f.t, os.MkdirAll(filepath.Dir(full), 0o755))
	require.NoError(f.t, os.WriteFile(full, []byte(content), 0o644))
}

func (f *fixture) remove(p string) { require.NoError(f.t, os.Remove(filepath.Join(f.root, p))) }

func (f *fixture) options(log *zap.Logger) Options {
	return Options{
		Root:    f.root,
		Version: "test-1.0",
		Logger:  log,
		Statfs: func(path string, st *unix.Statfs_t) error {
			f.mu.Lock()
			f.calls[path]++
			ch := f.block[path]
			s, ok := f.statfs[path]
			f.mu.Unlock()
			if ch != nil {
				<-ch
			}
			if !ok {
				return unix.ENOENT
			}
			*st = s
			return nil
		},
		Interfaces: func() ([]Interface, error) {
			a := netip.MustParseAddr
			return []Interface{
				{Name: "lo", Up: true, Loopback: true, Addrs: []netip.Addr{a("127.0.0.1"), a("::1")}},
				{Name: "eth1", Up: true, Addrs: []netip.Addr{a("169.254.3.3")}},
				{Name: "wlan0", Up: true, Addrs: []netip.Addr{a("192.168.1.7")}},
				{Name: "eth0", Up: true, Addrs: []netip.Addr{a("fe80::1"), a("::ffff:10.0.0.5")}},
				{Name: "docker0", Up: false, Addrs: []netip.Addr{a("172.17.0.1")}},
			}, nil
		},
		Machine: func() string { return "x86_64" },
		Sleep: func(ctx context.Context, d time.Duration) error {
			f.mu.Lock()
			f.sleeps = append(f.sleeps, d)
			on := f.onSleep
			f.mu.Unlock()
			if on != nil {
				on()
			}
			return ctx.Err()
		},
	}
}

func (f *fixture) sleepCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sleeps)
}

func (f *fixture) statfsCalls(p string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[p]
}

// fixturePayload is what the fixture must give, field by field.
func fixturePayload(cpu float64) Payload {
	return Payload{
		Action: "ingest-metrics",
		SystemMetrics: SystemMetrics{
			CPUPercent: cpu, CPUCores: 4,
			MemoryUsedGB: 3.21, MemoryTotalGB: 15.5, MemoryPercent: 20.72,
			DiskUsedGB: 40, DiskTotalGB: 100, DiskUsagePercent: 40,
			Filesystems: []Filesystem{
				{Device: "/dev/sda1", MountPath: "/", UsedGB: 40, FreeGB: 55, TotalGB: 100, UsagePercent: 42.11},
				{Device: "/dev/sda2", MountPath: "/boot", UsedGB: 0.25, FreeGB: 0.7, TotalGB: 1, UsagePercent: 26.32},
				{Device: "/dev/sdb1", MountPath: "/home", UsedGB: 100, FreeGB: 100, TotalGB: 200, UsagePercent: 50},
			},
			LoadAverage:   LoadAverage{OneMin: 0.52, FiveMin: 0.41, FifteenMin: 0.3},
			NetworkStats:  NetworkStats{InGB: 1.23, OutGB: 0.45},
			KernelVersion: "6.1.0-18-amd64",
		},
		OSInfo: "debian", OSVersion: "12.11", OSType: "linux", PlatformFamily: "debian", Version: "test-1.0",
		PrimaryIP: "10.0.0.5", KernelVersion: "6.1.0-18-amd64", Arch: "x86_64",
		AllIPs: []string{"10.0.0.5", "169.254.3.3", "192.168.1.7", "fe80::1"},
	}
}

// TestCollectFixture reads the fixture tree and checks the whole payload:
// memory from MemAvailable, the disk from statfs of /, one filesystem per
// device (the btrfs subvolumes are one), no tmpfs, NFS or squashfs,
// loopback traffic left out, the default route's address as primary_ip,
// Debian's point release, and CPU use over the 250 ms first sample.
func TestCollectFixture(t *testing.T) {
	f := newFixture(t)
	f.onSleep = func() { f.write("proc/stat", "cpu  1025 0 0 3075 0 0 0 0 0 0\n") }
	c := NewCollector(f.options(nil))
	p, err := c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, fixturePayload(25), p)
	require.Equal(t, []time.Duration{250 * time.Millisecond}, f.sleeps, "the first CPU use is measured over 250 ms")
	b, err := json.Marshal(p)
	require.NoError(t, err)
	requireContractShape(t, b)
	require.Zero(t, f.statfsCalls("/mnt/nfs"), "a network filesystem is never statfs'd")
	require.Zero(t, f.statfsCalls("/var/lib/docker/btrfs"), "the second mount of a device is not")

	// The next collection measures the time since the first: no sleep.
	f.onSleep = nil
	f.write("proc/stat", "cpu  1525 0 0 3575 0 0 0 0 0 0\n")
	p, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, 50.0, p.SystemMetrics.CPUPercent)
	require.Equal(t, 1, f.sleepCount())

	// Counters that did not move (two collections within a tick) fall
	// back to a fresh short sample.
	f.onSleep = func() { f.write("proc/stat", "cpu  1535 0 0 3665 0 0 0 0 0 0\n") }
	p, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, 10.0, p.SystemMetrics.CPUPercent)
	require.Equal(t, 2, f.sleepCount())

	// A CPU taken offline takes its ticks with it: the totals shrink,
	// and the use is measured afresh rather than reported negative.
	f.write("proc/stat", "cpu  700 0 0 1000 0 0 0 0 0 0\n")
	f.onSleep = func() { f.write("proc/stat", "cpu  790 0 0 1010 0 0 0 0 0 0\n") }
	p, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, 90.0, p.SystemMetrics.CPUPercent)
	require.Equal(t, 3, f.sleepCount())
}

func TestCollectFixtureVariants(t *testing.T) {
	t.Run("os-release in /usr/lib, ID_LIKE family, no debian_version", func(t *testing.T) {
		f := newFixture(t)
		f.remove("etc/os-release")
		f.remove("etc/debian_version")
		f.write("usr/lib/os-release", "ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n")
		p, err := Collect(context.Background(), f.options(nil))
		require.NoError(t, err)
		require.Equal(t, "rocky", p.OSInfo)
		require.Equal(t, "9.4", p.OSVersion)
		require.Equal(t, "rhel", p.PlatformFamily)
	})
	t.Run("no os-release, legacy release file", func(t *testing.T) {
		f := newFixture(t)
		f.remove("etc/os-release")
		f.remove("etc/debian_version")
		f.write("etc/alpine-release", "3.20.1\n")
		p, err := Collect(context.Background(), f.options(nil))
		require.NoError(t, err)
		require.Equal(t, "alpine", p.PlatformFamily)
		require.Equal(t, "alpine", p.OSInfo)
	})
	t.Run("no cpuinfo: the online CPU list", func(t *testing.T) {
		f := newFixture(t)
		f.remove("proc/cpuinfo")
		p, err := Collect(context.Background(), f.options(nil))
		require.NoError(t, err)
		require.Equal(t, 8, p.SystemMetrics.CPUCores)
	})
	t.Run("no default route: the first global IPv4 address", func(t *testing.T) {
		f := newFixture(t)
		f.remove("proc/net/route")
		p, err := Collect(context.Background(), f.options(nil))
		require.NoError(t, err)
		require.Equal(t, "192.168.1.7", p.PrimaryIP, "169.254/16 is link-local, not global")
	})
	t.Run("IPv6 only", func(t *testing.T) {
		f := newFixture(t)
		opts := f.options(nil)
		opts.Interfaces = func() ([]Interface, error) {
			return []Interface{{Name: "eth0", Up: true, Addrs: []netip.Addr{
				netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("2001:db8::4")}}}, nil
		}
		p, err := Collect(context.Background(), opts)
		require.NoError(t, err)
		require.Equal(t, "2001:db8::4", p.PrimaryIP)
		require.Equal(t, []string{"2001:db8::4", "2001:db8::5"}, p.AllIPs)
	})
	t.Run("root statfs fails", func(t *testing.T) {
		f := newFixture(t)
		delete(f.statfs, "/")
		p, err := Collect(context.Background(), f.options(nil))
		require.NoError(t, err)
		require.Zero(t, p.SystemMetrics.DiskTotalGB)
		require.Len(t, p.SystemMetrics.Filesystems, 2)
	})
}

// TestCollectMissingSources: an empty tree still gives a payload the
// backend accepts; each missing source is logged once, not on every
// collection.
func TestCollectMissingSources(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	f := &fixture{t: t, root: t.TempDir(), statfs: map[string]unix.Statfs_t{}, calls: map[string]int{}, block: map[string]chan struct{}{}}
	opts := f.options(zap.New(core))
	opts.Interfaces = func() ([]Interface, error) { return nil, errors.New("netlink: permission denied") }
	c := NewCollector(opts)
	p, err := c.Collect(context.Background())
	require.NoError(t, err)
	require.NoError(t, Validate(p))
	require.Equal(t, "unknown", p.PlatformFamily)
	require.Equal(t, runtime.NumCPU(), p.SystemMetrics.CPUCores)
	require.Equal(t, []string{}, p.AllIPs)
	require.Equal(t, []Filesystem{}, p.SystemMetrics.Filesystems)
	require.Zero(t, f.sleepCount(), "no /proc/stat: no sample to wait for")

	var problems []string
	for _, e := range logs.FilterMessage("metrics source unavailable; its values are sent as 0").All() {
		problems = append(problems, e.ContextMap()["problem"].(string))
	}
	joined := strings.Join(problems, "\n")
	for _, want := range []string{"/proc/stat", "memory", "load average", "network counters", "no os-release",
		"kernel release", "netlink: permission denied", "mounts", "statfs /", "CPU count"} {
		require.Contains(t, joined, want)
	}
	n := logs.Len()
	_, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, n, logs.Len(), "the same problems are not logged again")

	// A source that comes back and goes again is logged again.
	f.write("proc/loadavg", "1 1 1 1/1 1\n")
	_, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, n, logs.Len())
	f.remove("proc/loadavg")
	_, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, n+1, logs.Len())
}

// TestCollectHungStatfs: a filesystem whose statfs does not return is
// left out after StatfsTimeout, not asked again while its call hangs,
// and back once the call returns.
func TestCollectHungStatfs(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	f := newFixture(t)
	release := make(chan struct{})
	f.block["/boot"] = release
	opts := f.options(zap.New(core))
	opts.StatfsTimeout = 50 * time.Millisecond
	c := NewCollector(opts)

	p, err := c.Collect(context.Background())
	require.NoError(t, err)
	mounts := func(p Payload) []string {
		var out []string
		for _, fs := range p.SystemMetrics.Filesystems {
			out = append(out, fs.MountPath)
		}
		return out
	}
	require.Equal(t, []string{"/", "/home"}, mounts(p))
	require.Equal(t, 1, logs.FilterFieldKey("problem").Filter(func(e observer.LoggedEntry) bool {
		return strings.Contains(e.ContextMap()["problem"].(string), "statfs /boot: no answer within 50ms")
	}).Len())

	p, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"/", "/home"}, mounts(p))
	require.Equal(t, 1, f.statfsCalls("/boot"), "one hung call, not one per collection")
	require.Equal(t, 1, c.pendingStatfs())

	close(release)
	require.Eventually(t, func() bool { return c.pendingStatfs() == 0 }, 10*time.Second, time.Millisecond)
	p, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"/", "/boot", "/home"}, mounts(p))
	require.Equal(t, 2, f.statfsCalls("/boot"))
}

// TestCollectLogsDroppedFilesystems: a Proxmox node with hundreds of ZFS
// datasets sends the largest that fit, and says once how many it left
// out.
func TestCollectLogsDroppedFilesystems(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := newFixture(t)
	var mi strings.Builder
	mi.WriteString(fixtureMountinfo)
	for i := range 150 {
		path := fmt.Sprintf("/rpool/data/subvol-%d-disk-0", 100+i)
		fmt.Fprintf(&mi, "%d 21 0:%d / %s rw shared:1 - zfs rpool/data/subvol-%d-disk-0 rw\n", 100+i, 100+i, path, 100+i)
		f.statfs[path] = unix.Statfs_t{Frsize: 4096, Blocks: uint64(i+1) * 262144, Bfree: 262144 / 2, Bavail: 262144 / 2}
	}
	f.write("proc/self/mountinfo", mi.String())
	c := NewCollector(f.options(zap.New(core)))
	p, err := c.Collect(context.Background())
	require.NoError(t, err)
	fsJSON, err := json.Marshal(p.SystemMetrics.Filesystems)
	require.NoError(t, err)
	require.Less(t, len(fsJSON), MaxFilesystemsJSON)
	kept := len(p.SystemMetrics.Filesystems)
	dropped := logs.FilterMessage("filesystems left out of the metrics to keep their JSON under the backend's limit").All()
	require.Len(t, dropped, 1)
	require.EqualValues(t, 153-kept, dropped[0].ContextMap()["dropped"])
	// The smallest datasets went: the largest is there, the smallest not.
	require.Contains(t, string(fsJSON), `"/rpool/data/subvol-249-disk-0"`)
	require.NotContains(t, string(fsJSON), `"/rpool/data/subvol-100-disk-0"`)
	require.Contains(t, string(fsJSON), `"mount_path":"/"`)

	_, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, 1, logs.FilterMessage("filesystems left out of the metrics to keep their JSON under the backend's limit").Len(),
		"the same count is not logged again")
}

func TestCollectCancelled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	f.onSleep = cancel
	_, err := Collect(ctx, f.options(nil))
	require.ErrorIs(t, err, context.Canceled)

	_, err = Collect(ctx, f.options(nil))
	require.ErrorIs(t, err, context.Canceled)
}

// TestCollectLive runs on this host and checks the payload against what
// the kernel says through other interfaces.
func TestCollectLive(t *testing.T) {
	c := NewCollector(Options{Version: "live-test"})
	p, err := c.Collect(context.Background())
	require.NoError(t, err)
	require.NoError(t, Validate(p))
	b, err := json.Marshal(p)
	require.NoError(t, err)
	requireContractShape(t, b)

	var u unix.Utsname
	require.NoError(t, unix.Uname(&u))
	require.Equal(t, truncate(unix.ByteSliceToString(u.Release[:]), MaxKernelVersion), p.KernelVersion)
	require.Equal(t, unix.ByteSliceToString(u.Machine[:]), p.Arch)
	require.Equal(t, "linux", p.OSType)
	require.Equal(t, "live-test", p.Version)
	require.NotEmpty(t, p.PlatformFamily)

	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	require.NoError(t, err)
	require.Equal(t, countProcessors(cpuinfo), p.SystemMetrics.CPUCores)

	var si unix.Sysinfo_t
	require.NoError(t, unix.Sysinfo(&si))
	require.InDelta(t, float64(si.Totalram)*float64(si.Unit)/giB, p.SystemMetrics.MemoryTotalGB, 0.01)

	var st unix.Statfs_t
	require.NoError(t, unix.Statfs("/", &st))
	require.InDelta(t, float64(st.Blocks)*float64(st.Frsize)/giB, p.SystemMetrics.DiskTotalGB, 0.01)

	if rel, err := os.ReadFile("/etc/os-release"); err == nil {
		r := parseOSRelease(rel)
		require.Equal(t, platformFamily(r["ID"], r["ID_LIKE"]), p.PlatformFamily)
	}

	// Received bytes only grow: a second collection has at least as many.
	rx := p.SystemMetrics.NetworkStats.InGB
	p, err = c.Collect(context.Background())
	require.NoError(t, err)
	require.GreaterOrEqual(t, p.SystemMetrics.NetworkStats.InGB, rx)
	require.True(t, p.SystemMetrics.CPUPercent >= 0 && p.SystemMetrics.CPUPercent <= 100)
}

// TestCollectLiveCPUBusy keeps one CPU busy between two collections and
// checks that the use reported covers that interval: at least the share
// of one CPU that the spinning goroutine got, as /proc/self/stat counts it.
func TestCollectLiveCPUBusy(t *testing.T) {
	c := NewCollector(Options{})
	_, err := c.Collect(context.Background())
	require.NoError(t, err)

	before := readTotalTicks(t)
	self0 := selfTicks(t)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		x := 0
		for !stop.Load() {
			x++
		}
		_ = x
	}()
	// Spin until this process has used 50 ticks of CPU (0.5 s at 100 Hz).
	require.Eventually(t, func() bool { return selfTicks(t)-self0 >= 50 }, time.Minute, 5*time.Millisecond)
	stop.Store(true)
	<-done
	self := selfTicks(t) - self0
	p, err := c.Collect(context.Background())
	require.NoError(t, err)
	total := readTotalTicks(t) - before
	// This process's ticks are a lower bound of the busy share of all
	// CPUs over (about) the same interval; allow two ticks of skew.
	floor := (float64(self) - 2) / float64(total+2) * 100
	require.GreaterOrEqual(t, p.SystemMetrics.CPUPercent+0.01, floor,
		"self %d ticks of %d total", self, total)
}

func readTotalTicks(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/stat")
	require.NoError(t, err)
	c, err := parseCPUStat(b)
	require.NoError(t, err)
	return c.total()
}

func selfTicks(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/stat")
	require.NoError(t, err)
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var utime, stime uint64
	_, err = fmt.Sscan(fields[11], &utime)
	require.NoError(t, err)
	_, err = fmt.Sscan(fields[12], &stime)
	require.NoError(t, err)
	return utime + stime
}

// FuzzCollect: whatever the files under /proc and /etc hold and whatever
// statfs answers, Collect gives a payload that validates and has the
// contract's shape.
func FuzzCollect(f *testing.F) {
	f.Add([]byte("cpu  1000 0 0 3000 0 0 0 0 0 0\n"), []byte("MemTotal: 16252928 kB\nMemAvailable: 12884992 kB\n"),
		[]byte("0.52 0.41 0.30 2/512 12345\n"), []byte(netDev), []byte(fixtureMountinfo),
		[]byte("ID=debian\nVERSION_ID=\"12\"\n"), []byte("6.1.0-18-amd64\n"), uint64(26214400), uint64(15728640), uint64(14417920), int64(4096))
	f.Add([]byte("cpu 18446744073709551615 1 1 1 1\n"), []byte("MemTotal: 18446744073709551615 kB\n"),
		[]byte("-1 NaN +Inf 1/1 1\n"), []byte("h\nh\nlo: 1 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n"),
		[]byte("1 1 8:1 / /\\134x rw - ext4 \xff\n2 1 8:2 / /a\x01 rw - xfs /dev/\"<b>\" rw\n"),
		[]byte("ID=\"\\\"\"\nID_LIKE=suse\nVERSION_ID="+strings.Repeat("9", 6000)+"\n"), []byte(strings.Repeat("k\xff", 40)),
		uint64(math.MaxUint64), uint64(math.MaxUint64), uint64(0), int64(-1))
	f.Fuzz(func(t *testing.T, stat, meminfo, loadavg, netdev, mountinfo, osRelease, kernel []byte,
		blocks, bfree, bavail uint64, bsize int64) {
		fx := newFixture(t)
		for p, b := range map[string][]byte{
			"proc/stat": stat, "proc/meminfo": meminfo, "proc/loadavg": loadavg, "proc/net/dev": netdev,
			"proc/self/mountinfo": mountinfo, "etc/os-release": osRelease, "proc/sys/kernel/osrelease": kernel,
		} {
			fx.write(p, string(b))
		}
		opts := fx.options(nil)
		opts.Statfs = func(path string, st *unix.Statfs_t) error {
			*st = unix.Statfs_t{Blocks: blocks, Bfree: bfree, Bavail: bavail, Bsize: bsize, Frsize: bsize}
			return nil
		}
		p, err := Collect(context.Background(), opts)
		require.NoError(t, err)
		b, err := json.Marshal(p)
		require.NoError(t, err)
		requireContractShape(t, b)
	})
}

// BenchmarkCollectorCollect is the cost of one collection on this host:
// the reads and statfs calls. Back to back, the CPU counters rarely move
// between two collections, which then take a fresh sample; it is made
// 1 ns long here so that the wait does not hide the work.
func BenchmarkCollectorCollect(b *testing.B) {
	c := NewCollector(Options{FirstSample: time.Nanosecond})
	if _, err := c.Collect(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Collect(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
