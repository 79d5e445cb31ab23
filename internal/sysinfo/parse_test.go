package sysinfo

import (
	"bytes"
	"github.com/nannyagent/nannyagent/internal/procfmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const fixtureRoot = "testdata/root"

func fixture(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureRoot, p))
	require.NoError(t, err)
	return b
}

var secretRE = regexp.MustCompile(`(password|token)=\S+`)

// testRedact stands in for the redact package: it hides key=value secrets.
func testRedact(s string) string { return secretRE.ReplaceAllString(s, "$1=[REDACTED]") }

func TestParseStat(t *testing.T) {
	cpu, running, blocked, err := parseStat(fixture(t, "proc/stat"))
	require.NoError(t, err)
	require.Equal(t, cpuTimes{User: 10000, Nice: 500, System: 3000, Idle: 80000, IOWait: 1000, IRQ: 100, SoftIRQ: 200, Steal: 50}, cpu)
	require.Equal(t, 3, running)
	require.Equal(t, 2, blocked)

	for name, in := range map[string]string{
		"no cpu line":      "procs_running 1\nprocs_blocked 0\n",
		"short cpu line":   "cpu 1 2 3\nprocs_running 1\nprocs_blocked 0\n",
		"bad number":       "cpu 1 2 3 x 5 6 7 8\nprocs_running 1\nprocs_blocked 0\n",
		"no procs lines":   "cpu 1 2 3 4 5 6 7 8\n",
		"negative running": "cpu 1 2 3 4 5 6 7 8\nprocs_running -1\nprocs_blocked 0\n",
	} {
		_, _, _, err := parseStat([]byte(in))
		require.Error(t, err, name)
	}
}

func TestCPUUse(t *testing.T) {
	a := cpuTimes{User: 100, Nice: 0, System: 50, Idle: 800, IOWait: 20, IRQ: 5, SoftIRQ: 5, Steal: 20}
	// 1000 ticks pass: 300 user (+100 nice), 100 system (+50 irq +50
	// softirq), 100 iowait, 50 steal, 250 idle.
	b := cpuTimes{User: 400, Nice: 100, System: 150, Idle: 1050, IOWait: 120, IRQ: 55, SoftIRQ: 55, Steal: 70}
	u := cpuUse(a, b, CPUUse{RunQueue: 4})
	require.Equal(t, CPUUse{User: 40, System: 20, IOWait: 10, Steal: 5, Idle: 25, RunQueue: 4}, u)
	// A counter that went backwards (CPU hot-unplug) does not go negative.
	u = cpuUse(b, a, CPUUse{})
	require.Equal(t, CPUUse{}, u)
}

func TestParseKeyValues(t *testing.T) {
	m := parseKeyValues(fixture(t, "proc/meminfo"))
	require.Equal(t, uint64(8000000*1024), m["MemTotal"])
	require.Equal(t, uint64(2000000*1024), m["MemAvailable"])
	require.Equal(t, uint64(0), m["HugePages_Total"])
	require.Equal(t, uint64(2048*1024), m["Hugepagesize"])
	v := parseKeyValues(fixture(t, "proc/vmstat"))
	require.Equal(t, map[string]uint64{"nr_free_pages": 250000, "pgmajfault": 1200, "pswpin": 300, "pswpout": 400, "oom_kill": 7}, v)
}

func TestParsePressure(t *testing.T) {
	p, err := parsePressure(fixture(t, "proc/pressure/memory"))
	require.NoError(t, err)
	require.Equal(t, Pressure{SomeAvg10: 10, SomeAvg60: 5.5, FullAvg10: 8, FullAvg60: 4}, p)
	// cpu before 5.13 has only the "some" line.
	p, err = parsePressure([]byte("some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n"))
	require.NoError(t, err)
	require.Equal(t, Pressure{SomeAvg10: 1, SomeAvg60: 2}, p)
	for _, in := range []string{"", "other avg10=1\n", "some avg10=x\n", "some avg10\n", "some avg10=101\n"} {
		_, err := parsePressure([]byte(in))
		require.Error(t, err, in)
	}
}

func TestParseDiskstats(t *testing.T) {
	m, err := parseDiskstats(fixture(t, "proc/diskstats"))
	require.NoError(t, err)
	require.Len(t, m, 4)
	require.Equal(t, diskStat{Reads: 1000, ReadSectors: 80000, ReadMS: 2000, Writes: 3000, WriteSectors: 240000, WriteMS: 9000, InFlight: 2, IOMS: 5000}, m["sda"])
	// 18 fields: discards are there.
	require.Equal(t, diskStat{Reads: 500, ReadSectors: 40000, ReadMS: 250, Writes: 700, WriteSectors: 56000, WriteMS: 350, IOMS: 400, Discards: 10, DiscardSectors: 800, DiscMS: 20}, m["nvme0n1"])
	_, err = parseDiskstats([]byte("8 0 sda 1 2 3\n"))
	require.ErrorContains(t, err, "want at least 14")
	_, err = parseDiskstats([]byte("8 0 sda 1 2 3 4 5 6 7 8 9 x 11\n"))
	require.ErrorContains(t, err, "field 13")
}

func TestDiskRates(t *testing.T) {
	c := &collector{root: fixtureRoot}
	a := map[string]diskStat{
		"sda":     {Reads: 100, ReadSectors: 1000, ReadMS: 50, Writes: 200, WriteSectors: 4000, WriteMS: 300, IOMS: 1000},
		"sda1":    {Reads: 100, Writes: 200},
		"nvme0n1": {Reads: 5, IOMS: 10},
		"loop0":   {},
	}
	b := map[string]diskStat{
		// Over 2 s: 40 reads of 8 sectors taking 2 ms each, 60 writes of
		// 16 sectors taking 3 ms each, busy 1500 ms, 3 in flight.
		"sda":     {Reads: 140, ReadSectors: 1320, ReadMS: 130, Writes: 260, WriteSectors: 4960, WriteMS: 480, IOMS: 2500, InFlight: 3},
		"sda1":    {Reads: 140, Writes: 260},
		"nvme0n1": {Reads: 5, IOMS: 10},
		"loop0":   {},
	}
	d := c.diskRates(a, b, 2*time.Second)
	require.Equal(t, []Disk{{
		Name: "sda", ReadsPerSec: 20, WritesPerSec: 30, ReadBytesSec: 320 * 512 / 2, WriteBytesSec: 960 * 512 / 2,
		UtilPercent: 75, AwaitMS: (80 + 180) / 100.0, InFlight: 3,
	}}, d, "the partition sda1 and the idle devices are left out")
}

func TestParseSNMP(t *testing.T) {
	m, err := parseSNMP(fixture(t, "proc/net/snmp"))
	require.NoError(t, err)
	require.Equal(t, int64(-1), m["Tcp"]["MaxConn"])
	require.Equal(t, int64(595), m["Tcp"]["RetransSegs"])
	require.Equal(t, int64(49140), m["Tcp"]["OutSegs"])
	require.Equal(t, int64(12), m["Udp"]["OutDatagrams"])
	n, err := parseSNMP(fixture(t, "proc/net/netstat"))
	require.NoError(t, err)
	require.Equal(t, int64(17), n["TcpExt"]["ListenOverflows"], "MPTcpExt's counter of the same name is another section")
	require.Equal(t, int64(99), n["MPTcpExt"]["ListenOverflows"])
	require.Equal(t, uint64(18446744073709551615), uint64(n["IpExt"]["InOctets"]))

	for _, in := range []string{"Tcp: A B\nTcp: 1\n", "Tcp: A\n", "Tcp: A\nTcp: x\n", "no colon\n"} {
		_, err := parseSNMP([]byte(in))
		require.Error(t, err, in)
	}
}

func TestParseProcStat(t *testing.T) {
	p, err := parseProcStat(fixture(t, "proc/42/stat"))
	require.NoError(t, err)
	require.Equal(t, procStat{Comm: "nginx: (worker)", State: "R", Ticks: 200, Threads: 4, StartTime: 5000, RSSPages: 2500}, p)
	k, err := parseProcStat(fixture(t, "proc/77/stat"))
	require.NoError(t, err)
	require.True(t, k.Kernel)
	require.Equal(t, "I", k.State)
	for _, in := range []string{"", "1 comm) S", "1 (x) S 1 2", "1 (x) S 0 1 1 0 -1 x 0 0 0 0 1 1 0 0 20 0 1 0 10 1 1"} {
		_, err := parseProcStat([]byte(in))
		require.Error(t, err, in)
	}
}

func TestProcessRates(t *testing.T) {
	c := &collector{root: fixtureRoot, opts: Options{}.withDefaults()}
	at := time.Unix(1000, 0)
	a := sample{at: at, procs: map[int]procStat{
		1:  {Comm: "systemd", Ticks: 100, Threads: 1, StartTime: 10, RSSPages: 3000},
		42: {Comm: "nginx", Ticks: 1000, Threads: 4, StartTime: 5000, RSSPages: 2500},
		77: {Comm: "kworker", Ticks: 50, Threads: 1, StartTime: 300, Kernel: true},
	}}
	b := sample{at: at.Add(2 * time.Second), procs: map[int]procStat{
		1:  {Comm: "systemd", Ticks: 110, Threads: 1, StartTime: 10, RSSPages: 3000},
		42: {Comm: "nginx", Ticks: 1300, Threads: 4, StartTime: 5000, RSSPages: 2500},
		// PID 77 exited and was reused: its ticks are not a rate.
		77: {Comm: "kworker", Ticks: 9000, Threads: 1, StartTime: 400, Kernel: true},
	}}
	f := &Facts{}
	c.processes(f, a, b, map[int]*procDetail{}, 2*time.Second)
	require.Len(t, f.TopCPU, 2)
	require.Equal(t, 42, f.TopCPU[0].PID)
	require.Equal(t, 150.0, f.TopCPU[0].CPUPercent, "300 ticks of 10 ms in 2 s: one and a half CPUs")
	require.Equal(t, 1, f.TopCPU[1].PID)
	require.Equal(t, 5.0, f.TopCPU[1].CPUPercent)
	require.Equal(t, uint64(3), f.Limits.Processes)
	require.Equal(t, uint64(6), f.Limits.Tasks)
	require.Equal(t, []int{1, 42}, pids(f.TopMemory))
	require.Equal(t, uint64(3000*os.Getpagesize()), f.TopMemory[0].RSSBytes)
}

func pids(ps []Process) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

func TestParseNoFileLimit(t *testing.T) {
	v, err := parseNoFileLimit(fixture(t, "proc/1/limits"))
	require.NoError(t, err)
	require.Equal(t, uint64(1024), v)
	v, err = parseNoFileLimit([]byte("Max open files            unlimited            unlimited            files\n"))
	require.NoError(t, err)
	require.Equal(t, uint64(0), v)
	_, err = parseNoFileLimit([]byte("Max processes 1 1\n"))
	require.Error(t, err)
}

func TestParseMountinfo(t *testing.T) {
	m, err := parseMountinfo(fixture(t, "proc/self/mountinfo"))
	require.NoError(t, err)
	require.Len(t, m, 16)
	require.Equal(t, mountInfo{Major: 0, Minor: 45, Root: "/", Mount: "/mnt/my disk", ReadOnly: true, FSType: "ext4", Source: "/dev/sdb1", SuperOptions: []string{"ro"}}, m[5])
	require.Equal(t, mountInfo{Major: 0, Minor: 50, Root: "/sub", Mount: "/srv/data", FSType: "nfs4", Source: "server:/export", SuperOptions: []string{"rw", "vers=4.2"}}, m[7],
		"two optional fields before the separator")

	sel, dropped := selectFilesystems(m)
	require.Zero(t, dropped)
	var got []string
	for _, s := range sel {
		got = append(got, s.Mount+" "+s.FSType+" "+s.Source)
	}
	require.Equal(t, []string{
		"/ ext4 /dev/sda1",
		"/dev/shm tmpfs tmpfs", // the later mount that hides the first
		"/mnt/my disk ext4 /dev/sdb1",
		"/run tmpfs tmpfs",
		"/srv/data nfs4 server:/export",
	}, got, "proc, sysfs, devtmpfs, cgroups, squashfs and overlay are left out")
	require.Equal(t, 27, sel[1].Minor)

	for _, in := range []string{"1 2 3\n", "1 2 x / / rw - ext4 /dev/sda rw\n", "1 2 a:1 / / rw - ext4 /dev/sda rw\n", "1 2 8:1 / / rw -\n"} {
		_, err := parseMountinfo([]byte(in))
		require.Error(t, err, in)
	}
}

func TestCgroupRoots(t *testing.T) {
	m, err := parseMountinfo(fixture(t, "proc/self/mountinfo"))
	require.NoError(t, err)
	require.Equal(t, []cgroupRoot{
		{dir: "/sys/fs/cgroup/memory", version: 1, memory: true},
		{dir: "/sys/fs/cgroup/pids", version: 1, pids: true},
		{dir: "/sys/fs/cgroup/unified", version: 2},
	}, cgroupRoots(m), "the v1 devices hierarchy is of no use here")
}

// fixtureCgroups are the cgroups testdata/root reports: an OOM kill in a
// v2 service, a v1 batch job at its memory limit and near its pids limit,
// a v2 service that hit pids.max. cache.service is at 95% of its limit
// counting page cache, but its working set is at 45%.
var fixtureCgroups = []Cgroup{
	{Path: "/system.slice/app.service", Version: 2, MemoryLimitBytes: 104857600, MemoryBytes: 104857600, OOMKills: 2, PIDs: 3},
	{Path: "/batch", Version: 1, MemoryLimitBytes: 52428800, MemoryBytes: 52420000, OOMKills: 1, PIDsMax: 100, PIDs: 95},
	{Path: "/system.slice/forky.service", Version: 2, MemoryBytes: 1000, PIDsMax: 10, PIDs: 10, PIDsMaxEvents: 4},
}

func TestCgroups(t *testing.T) {
	c := &collector{root: fixtureRoot}
	m, err := parseMountinfo(fixture(t, "proc/self/mountinfo"))
	require.NoError(t, err)
	require.Equal(t, fixtureCgroups, c.cgroups(m, true))
	require.Empty(t, c.warnings)
	// Without a mount table the usual places are tried: the unified
	// hierarchy, v1 memory and pids.
	require.Equal(t, fixtureCgroups, c.cgroups(nil, false))
}

func TestCgroupWalkBounded(t *testing.T) {
	dir := t.TempDir()
	deep := dir
	for i := 0; i < maxCgroupDepth+3; i++ {
		deep = filepath.Join(deep, "d")
		require.NoError(t, os.Mkdir(deep, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(deep, "pids.events"), []byte("max 1\n"), 0o644))
	}
	c := &collector{root: "/"}
	var visited int
	c.walkCgroups(cgroupRoot{dir: dir, version: 2}, func(string, Cgroup) { visited++ })
	require.Equal(t, maxCgroupDepth, visited)
}

func TestParseOSRelease(t *testing.T) {
	require.Equal(t, "Fixture Linux 1 (test)", parseOSRelease(fixture(t, "etc/os-release")))
	require.Equal(t, "Alpine 3.19", parseOSRelease([]byte("NAME=Alpine\nVERSION='3.19'\n")))
}

func TestParseResolvConf(t *testing.T) {
	servers, bad := parseResolvConf(fixture(t, "etc/resolv.conf"))
	require.Equal(t, []string{"127.0.0.77", "::1"}, servers)
	require.Equal(t, []string{"nameserver bogus"}, bad)
	servers, _ = parseResolvConf([]byte("nameserver 1.1.1.1\nnameserver 8.8.8.8\nnameserver fe80::1%eth0\nnameserver 9.9.9.9\n"))
	require.Equal(t, []string{"1.1.1.1", "8.8.8.8", "fe80::1%eth0"}, servers, "glibc reads three")
}

func TestKmsgFilter(t *testing.T) {
	k := &kmsgFilter{keep: 50, monoNow: 10 * time.Second, redact: testRedact}
	data := fixture(t, "dev/kmsg")
	// Feed it in uneven pieces, as reads of a plain file come.
	for len(data) > 0 {
		n := min(7, len(data))
		k.add(data[:n])
		data = data[n:]
	}
	k.flush()
	require.Equal(t, []LogLine{
		{Age: 8 * time.Second, Priority: 3, Text: "EXT4-fs error (device sda1): ext4_find_entry:1234: inode #2: comm ls: reading directory lblock 0"},
		{Age: 7 * time.Second, Priority: 4, Text: "nginx[42]: segfault at 0 ip 0000 sp 0000 error 4 in nginx"},
		{Age: 6 * time.Second, Priority: 4, Text: "myapp: token=[REDACTED] leaked"},
		{Age: 5 * time.Second, Priority: 0, Text: "Kernel panic - not syncing: test"},
	}, k.lines)
	require.Equal(t, 1, k.malformed)

	// Only the newest are kept.
	k = &kmsgFilter{keep: 3, monoNow: time.Hour, redact: func(s string) string { return s }}
	var buf bytes.Buffer
	for i := range 100 {
		buf.WriteString("3," + strconv.Itoa(i) + "," + strconv.Itoa(i*1000000) + ",-;message " + strconv.Itoa(i) + "\n")
	}
	k.add(buf.Bytes())
	k.flush()
	require.Len(t, k.lines, 3)
	require.Equal(t, "message 99", k.lines[2].Text)
	require.Equal(t, time.Hour-99*time.Second, k.lines[2].Age)
	require.Equal(t, "message 97", k.lines[0].Text)
}

func TestParseKmsgRecord(t *testing.T) {
	r, err := parseKmsgRecord([]byte("30,1234,5678,c,extra;systemd[1]: started"))
	require.NoError(t, err)
	require.Equal(t, kmsgRecord{Level: 6, Facility: 3, Seq: 1234, Usec: 5678, Text: "systemd[1]: started"}, r)
	r, err = parseKmsgRecord([]byte("3,1,2,-;a;b"))
	require.NoError(t, err)
	require.Equal(t, "a;b", r.Text)
	for _, in := range []string{"", "no separator", "3,1,2;x", "x,1,2,-;t", "3,x,2,-;t", "3,1,-2,-;t", "99999999999,1,2,-;t"} {
		_, err := parseKmsgRecord([]byte(in))
		require.Error(t, err, in)
	}
}

func TestIsTraceLine(t *testing.T) {
	for s, want := range map[string]bool{
		" dump_stack_lvl+0x5d/0x80":              true,
		"RAX: 0000000000000000 RBX: 00000001":    true,
		"RIP: 0033:0x701a3c":                     true,
		"x29: ffff8000 x28: 0000":                true,
		"Code: 89 5c 24 60":                      true,
		"</TASK>":                                true,
		"CPU: 1 UID: 0 PID: 17045 Comm: oomkill": false,
		"EXT4-fs error (device sda1): x":         false,
		"sd 0:0:0:0: [sda] tag#0 FAILED Result:": false,
	} {
		require.Equal(t, want, isTraceLine(s), s)
	}
}

func TestDNSReply(t *testing.T) {
	q := dnsQuery(0xbeef)
	require.Equal(t, []byte{0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1}, q)
	reply := func(flags uint16, qd byte, question bool) []byte {
		b := []byte{0xbe, 0xef, byte(flags >> 8), byte(flags), 0, qd, 0, 0, 0, 0, 0, 0}
		if question {
			b = append(b, 0, 0, 2, 0, 1)
		}
		return b
	}
	rc, err := parseDNSReply(reply(0x8180, 1, true), 0xbeef)
	require.NoError(t, err)
	require.Equal(t, 0, rc)
	rc, err = parseDNSReply(reply(0x8183, 1, true), 0xbeef)
	require.NoError(t, err)
	require.Equal(t, "NXDOMAIN", rcodeName(rc))
	rc, err = parseDNSReply(reply(0x8105, 0, false), 0xbeef)
	require.NoError(t, err, "an error reply may leave the question out")
	require.Equal(t, "REFUSED", rcodeName(rc))

	_, err = parseDNSReply(reply(0x8180, 1, true), 0x1234)
	require.ErrorIs(t, err, errNotReply)
	for name, b := range map[string][]byte{
		"short":          {0xbe, 0xef, 0x81},
		"query":          reply(0x0100, 1, true),
		"opcode":         reply(0x8980, 1, true),
		"no question":    reply(0x8180, 0, false),
		"truncated":      reply(0x8180, 1, false),
		"other question": append(reply(0x8180, 1, false), 0, 0, 1, 0, 1),
		"two questions":  reply(0x8180, 2, true),
	} {
		_, err := parseDNSReply(b, 0xbeef)
		require.Error(t, err, name)
		require.NotErrorIs(t, err, errNotReply, name)
	}
}

func TestTruncate(t *testing.T) {
	require.Equal(t, "abc", truncate("abc", 3))
	s := truncate(strings.Repeat("é", 10), 8)
	require.LessOrEqual(t, len(s), 8)
	require.Equal(t, "éé…", s)
}

func TestFormat(t *testing.T) {
	require.Equal(t, "0B", formatBytes(0))
	require.Equal(t, "1023B", formatBytes(1023))
	require.Equal(t, "1.5KiB", formatBytes(1536))
	require.Equal(t, "24GiB", formatBytes(25276502016))
	require.Equal(t, "up 2 days, 1 hour", formatUptime(49*time.Hour+5*time.Minute))
	require.Equal(t, "up 1 hour, 5 minutes", formatUptime(65*time.Minute))
	require.Equal(t, "up 42 seconds", formatUptime(42*time.Second))
	require.Equal(t, "unknown", formatUptime(0))
}

func FuzzParseKmsgRecord(f *testing.F) {
	for line := range bytes.Lines(fixture(f, "dev/kmsg")) {
		f.Add(bytes.TrimSuffix(line, []byte("\n")))
	}
	f.Add([]byte("30,1234,5678,c,extra;text;more"))
	f.Add([]byte(";"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseKmsgRecord(line)
		if err != nil {
			return
		}
		require.True(t, r.Level >= 0 && r.Level <= 7)
		require.True(t, bytes.HasSuffix(line, []byte(";"+r.Text)))
		// The whole stream path takes any bytes too.
		k := &kmsgFilter{keep: 2, monoNow: time.Second, redact: testRedact}
		k.add(line)
		k.add([]byte("\n"))
		k.add(line)
		k.flush()
		require.LessOrEqual(t, len(k.lines), 2)
		for _, l := range k.lines {
			require.GreaterOrEqual(t, l.Age, time.Duration(0))
			require.LessOrEqual(t, len(l.Text), maxKmsgText)
		}
	})
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add(fixture(f, "etc/resolv.conf"))
	f.Add([]byte("nameserver fe80::1%eth0\nnameserver\n\tnameserver 1.2.3.4 extra\noptions ndots:5\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		servers, _ := parseResolvConf(data)
		require.LessOrEqual(t, len(servers), maxNameservers)
		for _, s := range servers {
			require.NotEmpty(t, s)
			require.Equal(t, []string{s}, func() []string { v, _ := parseResolvConf([]byte("nameserver " + s)); return v }(),
				"a server read back reads the same")
		}
	})
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add(fixture(f, "proc/self/mountinfo"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMountinfo(data)
		if err != nil {
			return
		}
		sel, dropped := selectFilesystems(m)
		require.LessOrEqual(t, len(sel), maxFilesystems)
		require.Equal(t, max(0, countMounts(m)-maxFilesystems), dropped)
		cgroupRoots(m)
	})
}

// countMounts is the number of distinct mount points selectFilesystems
// would keep without its limit.
func countMounts(all []mountInfo) int {
	seen := map[string]bool{}
	for _, m := range all {
		if !dataFS[m.FSType] && (m.Major == 0 || imageFS[m.FSType]) || under(m.Mount, "/proc") || under(m.Mount, "/sys") {
			continue
		}
		seen[m.Mount] = true
	}
	return len(seen)
}

func FuzzParseDNSReply(f *testing.F) {
	f.Add([]byte{0xbe, 0xef, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1})
	f.Add([]byte{0xbe, 0xef, 0x81, 0x05, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := parseDNSReply(b, 0xbeef)
		if err == nil {
			require.True(t, rc >= 0 && rc <= 15)
			require.NotEmpty(t, rcodeName(rc))
		}
	})
}

// FuzzProcfsParsers feeds the same bytes to every small procfs parser:
// none may panic, and what they accept must be consistent.
func FuzzProcfsParsers(f *testing.F) {
	for _, p := range []string{"proc/stat", "proc/42/stat", "proc/77/stat", "proc/diskstats", "proc/net/snmp", "proc/net/netstat",
		"proc/pressure/cpu", "proc/1/limits", "proc/loadavg", "proc/uptime", "proc/sys/fs/file-nr"} {
		f.Add(fixture(f, p))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if cpu, running, blocked, err := parseStat(data); err == nil {
			require.GreaterOrEqual(t, running, 0)
			require.GreaterOrEqual(t, blocked, 0)
			u := cpuUse(cpuTimes{}, cpu, CPUUse{})
			require.LessOrEqual(t, u.User+u.System+u.IOWait+u.Steal+u.Idle, 100.0001)
		}
		if p, err := parseProcStat(data); err == nil {
			require.GreaterOrEqual(t, p.Threads, 0)
		}
		parseDiskstats(data)
		parseSNMP(data)
		if p, err := parsePressure(data); err == nil {
			require.LessOrEqual(t, p.SomeAvg10, 100.0)
		}
		parseNoFileLimit(data)
		parseLoadavg(data)
		parseSeconds(data)
		parseFileNr(data)
		parseKeyValues(data)
		parseOSRelease(data)
		procfmt.CPUListCount(string(data))
		parseShow(data)
		parseUnitsTable(data)
	})
}
