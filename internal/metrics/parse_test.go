package metrics

import (
	"github.com/nannyagent/nannyagent/internal/procfmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseCPUStat(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	got, err := parseCPUStat([]byte("cpu  100 20 30 400 50 6 7 8 90 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	require.NoError(t, err)
	require.Equal(t, cpuTimes{Busy: 100 + 20 + 30 + 6 + 7 + 8, Idle: 400 + 50}, got, "guest is inside user, not added")

	got, err = parseCPUStat([]byte("cpu 1 2 3 4\n"))
	require.NoError(t, err, "the four columns of the oldest kernels")
	require.Equal(t, cpuTimes{Busy: 6, Idle: 4}, got)

	for _, bad := range []string{"", "cpu0 1 2 3 4 5\n", "cpu 1 2 3\n", "cpu 1 2 x 4 5\n", "intr 1 2 3 4 5\n", "cpu -1 2 3 4 5\n"} {
		_, err := parseCPUStat([]byte(bad))
		require.Error(t, err, "%q", bad)
	}
	_, err = parseCPUStat([]byte("cpu 18446744073709551615 18446744073709551615 1 1 1\n"))
	require.NoError(t, err, "sums saturate instead of wrapping")
}

func TestCPUPercent(t *testing.T) {
	a := cpuTimes{Busy: 1000, Idle: 3000}
	pct, ok := cpuPercent(a, cpuTimes{Busy: 1250, Idle: 3750})
	require.True(t, ok)
	require.Equal(t, 25.0, pct)

	pct, ok = cpuPercent(a, cpuTimes{Busy: 1100, Idle: 3000})
	require.True(t, ok)
	require.Equal(t, 100.0, pct)

	// iowait ran backwards: idle shrank while busy grew.
	pct, ok = cpuPercent(a, cpuTimes{Busy: 1300, Idle: 2990})
	require.True(t, ok)
	require.Equal(t, 100.0, pct)

	_, ok = cpuPercent(a, a)
	require.False(t, ok, "no time passed")
	_, ok = cpuPercent(a, cpuTimes{Busy: 500, Idle: 2000})
	require.False(t, ok, "a CPU went offline and took its ticks")
}

func TestParseMeminfo(t *testing.T) {
	total, avail, err := parseMeminfo([]byte("MemTotal:       16252928 kB\nMemFree:  1000 kB\nMemAvailable:   12884992 kB\nBuffers: 5 kB\nHugePages_Total: 0\n"))
	require.NoError(t, err)
	require.Equal(t, uint64(16252928*1024), total)
	require.Equal(t, uint64(12884992*1024), avail)

	total, avail, err = parseMeminfo([]byte("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n"))
	require.NoError(t, err, "a kernel before MemAvailable (3.14)")
	require.Equal(t, uint64(1000*1024), total)
	require.Equal(t, uint64(420*1024), avail)

	_, avail, err = parseMeminfo([]byte("MemTotal: 100 kB\nMemAvailable: 900 kB\n"))
	require.NoError(t, err)
	require.Equal(t, uint64(100*1024), avail, "never more available than total")

	_, _, err = parseMeminfo([]byte("MemFree: 1 kB\n"))
	require.ErrorContains(t, err, "MemTotal")
	_, _, err = parseMeminfo([]byte("MemTotal: lots kB\n"))
	require.Error(t, err)
}

func TestParseLoadavg(t *testing.T) {
	l, err := parseLoadavg([]byte("0.52 0.41 0.30 2/512 12345\n"))
	require.NoError(t, err)
	require.Equal(t, [3]float64{0.52, 0.41, 0.30}, l)
	_, err = parseLoadavg([]byte("0.52 0.41\n"))
	require.Error(t, err)
	_, err = parseLoadavg([]byte("0.52 x 0.3 1/2 3\n"))
	require.Error(t, err)
}

const netDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9999999    100    0    0    0     0          0         0  9999999     100    0    0    0     0       0          0
  eth0: 1000000000 2000   0    0    0     0          0         0 400000000  3000    0    0    0     0       0          0
 wlan0:  320702443  100    0    0    0     0          0         0  83183820   100    0    0    0     0       0          0
`

func TestParseNetDev(t *testing.T) {
	rx, tx, err := parseNetDev([]byte(netDev))
	require.NoError(t, err)
	require.Equal(t, uint64(1320702443), rx, "lo left out")
	require.Equal(t, uint64(483183820), tx)

	_, _, err = parseNetDev([]byte("h1\nh2\neth0: 1 2 3\n"))
	require.ErrorContains(t, err, "eth0")
	_, _, err = parseNetDev([]byte("h1\nh2\ngarbage\n"))
	require.Error(t, err)
	rx, _, err = parseNetDev([]byte("h1\nh2\na: 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\nb: 5 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"))
	require.NoError(t, err)
	require.Equal(t, uint64(math.MaxUint64), rx, "saturates")
}

func TestParseOSRelease(t *testing.T) {
	rel := parseOSRelease([]byte(`# comment
NAME="Debian GNU/Linux"
ID=debian
ID_LIKE='rhel fedora'
VERSION_ID="12"
PRETTY_NAME="A \"quoted\" \$name"
BROKEN
EMPTY=
`))
	require.Equal(t, map[string]string{
		"NAME": "Debian GNU/Linux", "ID": "debian", "ID_LIKE": "rhel fedora", "VERSION_ID": "12",
		"PRETTY_NAME": `A "quoted" $name`, "EMPTY": "",
	}, rel)
}

func TestCPUCounts(t *testing.T) {
	require.Equal(t, 3, countProcessors([]byte("processor\t: 0\nmodel name: x\n\nprocessor\t: 1\n\nprocessor\t: 2\nflags: processor\n")))
	require.Equal(t, 0, countProcessors([]byte("garbage")))
}

const netRoute = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
wlan0	00000000	0100A8C0	0003	0	0	600	00000000	0	0	0
eth0	00000000	0101A8C0	0003	0	0	100	00000000	0	0	0
eth1	00000000	0101A8C0	0002	0	0	1	00000000	0	0	0
eth0	0000A8C0	00000000	0001	0	0	100	00FFFFFF	0	0	0
`

func TestDefaultRouteIface(t *testing.T) {
	require.Equal(t, "eth0", defaultRouteIface([]byte(netRoute)), "lowest metric among the routes that are up")
	require.Equal(t, "", defaultRouteIface([]byte("Iface\tDestination\n")))
	require.Equal(t, "", defaultRouteIface(nil))
}

func TestParseMountinfo(t *testing.T) {
	got, err := parseMountinfo([]byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw - proc proc rw
24 22 8:2 / /mnt/my\040disk rw master:2 shared:3 - xfs /dev/sdb1 rw
25 22 0:40 / /old rw - tmpfs rw
`))
	require.NoError(t, err)
	require.Equal(t, []mount{
		{Dev: "8:1", Path: "/", FSType: "ext4", Source: "/dev/sda1"},
		{Dev: "0:21", Path: "/proc", FSType: "proc", Source: "proc"},
		{Dev: "8:2", Path: "/mnt/my disk", FSType: "xfs", Source: "/dev/sdb1"},
		{Dev: "0:40", Path: "/old", FSType: "tmpfs"},
	}, got)
	_, err = parseMountinfo([]byte("1 2 3\n"))
	require.Error(t, err)
}

func TestSelectMounts(t *testing.T) {
	got := selectMounts([]mount{
		{Dev: "8:1", Path: "/", FSType: "ext4", Source: "/dev/sda1"},
		{Dev: "0:21", Path: "/proc", FSType: "proc"},
		{Dev: "0:30", Path: "/home", FSType: "btrfs", Source: "/dev/sdb1"},
		{Dev: "0:30", Path: "/var/lib/docker/btrfs", FSType: "btrfs", Source: "/dev/sdb1"},
		{Dev: "8:1", Path: "/var/lib/kubelet/pods/x/volume", FSType: "ext4", Source: "/dev/sda1"},
		{Dev: "8:3", Path: "/data", FSType: "xfs", Source: "/dev/sdc1"},
		{Dev: "8:4", Path: "/data", FSType: "xfs", Source: "/dev/sdd1"}, // mounted over the first
		{Dev: "8:5", Path: "/hidden", FSType: "ext4", Source: "/dev/sde1"},
		{Dev: "0:50", Path: "/hidden", FSType: "tmpfs"}, // hides the ext4 below
		{Dev: "0:60", Path: "/rpool/data/subvol-100-disk-0", FSType: "zfs", Source: "rpool/data/subvol-100-disk-0"},
		{Dev: "0:61", Path: "/nfs", FSType: "nfs4", Source: "srv:/x"},
		{Dev: "7:0", Path: "/snap/core/1", FSType: "squashfs", Source: "/dev/loop0"},
	})
	require.Equal(t, []mount{
		{Dev: "8:1", Path: "/", FSType: "ext4", Source: "/dev/sda1"},
		{Dev: "8:4", Path: "/data", FSType: "xfs", Source: "/dev/sdd1"},
		{Dev: "0:30", Path: "/home", FSType: "btrfs", Source: "/dev/sdb1"},
		{Dev: "0:60", Path: "/rpool/data/subvol-100-disk-0", FSType: "zfs", Source: "rpool/data/subvol-100-disk-0"},
	}, got)
}

// FuzzParsers: no input makes a parser panic, and what they return is
// usable (bounded counts, finite averages or an error).
func FuzzParsers(f *testing.F) {
	f.Add([]byte("cpu  100 20 30 400 50 6 7 8 90 10\n"))
	f.Add([]byte("MemTotal: 1 kB\nMemAvailable: 2 kB\n"))
	f.Add([]byte("0.52 0.41 0.30 2/512 12345\n"))
	f.Add([]byte(netDev))
	f.Add([]byte(netRoute))
	f.Add([]byte("22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n24 22 8:2 / /a\\040b rw - xfs /dev/x rw\n"))
	f.Add([]byte("ID=\"deb\\\"ian\"\nID_LIKE='x'\n"))
	f.Add([]byte("processor : 0\n0-3,7"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := parseCPUStat(b); err == nil {
			pct, _ := cpuPercent(cpuTimes{}, c)
			require.True(t, pct >= 0 && pct <= 100)
		}
		if total, avail, err := parseMeminfo(b); err == nil {
			require.LessOrEqual(t, avail, total)
		}
		if l, err := parseLoadavg(b); err == nil {
			for _, v := range l {
				x := nonNegative(v)
				require.False(t, math.IsNaN(x) || math.IsInf(x, 0) || x < 0)
			}
		}
		_, _, _ = parseNetDev(b)
		_ = defaultRouteIface(b)
		if ms, err := parseMountinfo(b); err == nil {
			_ = selectMounts(ms)
		}
		rel := parseOSRelease(b)
		fam := platformFamily(rel["ID"], rel["ID_LIKE"])
		require.NotEmpty(t, fam)
		require.LessOrEqual(t, len(fam), MaxPlatformFamily)
		require.GreaterOrEqual(t, countProcessors(b), 0)
		if n, err := procfmt.CPUListCount(string(b)); err == nil {
			require.Positive(t, n)
		}
	})
}
