package sysinfo

import (
	"cmp"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sample is one read of the counters that become rates.
type sample struct {
	at       time.Time
	cpu      cpuTimes
	cpuOK    bool
	running  int
	blocked  int
	vmstat   map[string]uint64
	disks    map[string]diskStat
	tcp      map[string]int64
	tcpExt   map[string]int64
	procs    map[int]procStat
	procsErr error
	// ios are the /proc/[pid]/io counters of the user processes that
	// could be read (another user's need root).
	ios map[int]procIO
}

// sample reads the counters; only the first of the two reports failures,
// so that one unreadable file gives one warning.
func (c *collector) sample(report bool) sample {
	warn := func(format string, args ...any) {
		if report {
			c.warn(format, args...)
		}
	}
	s := sample{at: time.Now()}
	if b, err := c.read("/proc/stat"); err == nil {
		if s.cpu, s.running, s.blocked, err = parseStat(b); err == nil {
			s.cpuOK = true
		} else {
			warn("/proc/stat: %v", err)
		}
	} else {
		warn("CPU: %v", err)
	}
	if b, err := c.read("/proc/vmstat"); err == nil {
		s.vmstat = parseKeyValues(b)
	} else {
		warn("vmstat: %v", err)
	}
	if b, err := c.read("/proc/diskstats"); err == nil {
		if s.disks, err = parseDiskstats(b); err != nil {
			warn("/proc/diskstats: %v", err)
		}
	} else {
		warn("disks: %v", err)
	}
	if b, err := c.read("/proc/net/snmp"); err == nil {
		if m, err := parseSNMP(b); err == nil {
			s.tcp = m["Tcp"]
		} else {
			warn("/proc/net/snmp: %v", err)
		}
	} else {
		warn("TCP counters: %v", err)
	}
	if b, err := c.read("/proc/net/netstat"); err == nil {
		if m, err := parseSNMP(b); err == nil {
			s.tcpExt = m["TcpExt"]
		} else {
			warn("/proc/net/netstat: %v", err)
		}
	} else {
		warn("TCP extended counters: %v", err)
	}
	s.procs, s.ios, s.procsErr = c.readProcs()
	if s.procsErr != nil {
		warn("processes: %v", s.procsErr)
	}
	return s
}

// readProcs reads /proc/[pid]/stat of every process, and /proc/[pid]/io
// of the user processes. A process that exits between the listing and
// the read is simply not there.
func (c *collector) readProcs() (map[int]procStat, map[int]procIO, error) {
	d, err := os.Open(c.path("/proc"))
	if err != nil {
		return nil, nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, nil, err
	}
	procs := make(map[int]procStat, len(names))
	ios := make(map[int]procIO, len(names))
	var bad int
	var firstErr error
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(c.path("/proc/" + name + "/stat"))
		if err != nil {
			continue
		}
		p, err := parseProcStat(b)
		if err != nil {
			if bad++; firstErr == nil {
				firstErr = err
			}
			continue
		}
		procs[pid] = p
		if p.Kernel {
			continue
		}
		// Unreadable (another user's process when not root) or malformed
		// counters leave the process out of TopIO only.
		if b, err := os.ReadFile(c.path("/proc/" + name + "/io")); err == nil {
			if io, err := parseProcIO(b); err == nil {
				ios[pid] = io
			}
		}
	}
	if bad > 0 {
		c.warn("%d unreadable /proc/[pid]/stat files (first: %v)", bad, firstErr)
	}
	return procs, ios, nil
}

// rates turns the two samples into the per-second and percentage facts.
func (c *collector) rates(f *Facts, a, b sample, elapsed time.Duration) {
	secs := elapsed.Seconds()
	if secs <= 0 {
		c.warn("no time passed between the two samples; rates left zero")
		return
	}
	if b.cpuOK {
		f.CPU.RunQueue, f.CPU.Blocked = b.running, b.blocked
	}
	if a.cpuOK && b.cpuOK {
		f.CPU = cpuUse(a.cpu, b.cpu, f.CPU)
	}
	if a.vmstat != nil && b.vmstat != nil {
		f.Memory.MajorFaultsPerSec = perSec(a.vmstat["pgmajfault"], b.vmstat["pgmajfault"], secs)
		f.Memory.SwapInPerSec = perSec(a.vmstat["pswpin"], b.vmstat["pswpin"], secs)
		f.Memory.OOMKills = b.vmstat["oom_kill"]
	}
	if a.disks != nil && b.disks != nil {
		f.Disks = c.diskRates(a.disks, b.disks, elapsed)
	}
	if a.tcp != nil && b.tcp != nil {
		f.Network.TCPRetransPerSec = perSec(uint64(a.tcp["RetransSegs"]), uint64(b.tcp["RetransSegs"]), secs)
		f.Network.TCPOutSegsPerSec = perSec(uint64(a.tcp["OutSegs"]), uint64(b.tcp["OutSegs"]), secs)
		f.Network.TCPAttemptFails = uint64(b.tcp["AttemptFails"])
	}
	if b.tcpExt != nil {
		f.Network.ListenOverflows = uint64(b.tcpExt["ListenOverflows"])
		f.Network.ListenDrops = uint64(b.tcpExt["ListenDrops"])
	}
}

// perSec is the rate of a counter; a counter that went backwards (a
// wrap, or a device that was replaced) gives 0 rather than nonsense.
func perSec(a, b uint64, secs float64) float64 {
	if b < a {
		return 0
	}
	return float64(b-a) / secs
}

func cpuUse(a, b cpuTimes, u CPUUse) CPUUse {
	d := func(x, y uint64) float64 {
		if y < x {
			return 0
		}
		return float64(y - x)
	}
	total := d(a.total(), b.total())
	if total == 0 {
		return u
	}
	pct := func(v float64) float64 { return 100 * v / total }
	u.User = pct(d(a.User, b.User) + d(a.Nice, b.Nice))
	u.System = pct(d(a.System, b.System) + d(a.IRQ, b.IRQ) + d(a.SoftIRQ, b.SoftIRQ))
	u.IOWait = pct(d(a.IOWait, b.IOWait))
	u.Steal = pct(d(a.Steal, b.Steal))
	u.Idle = pct(d(a.Idle, b.Idle))
	return u
}

const sectorBytes = 512 // diskstats counts 512-byte sectors whatever the device's block size

// diskRates keeps whole devices that did I/O during the interval or have
// requests in flight; partitions repeat their disk's numbers.
func (c *collector) diskRates(a, b map[string]diskStat, elapsed time.Duration) []Disk {
	secs := elapsed.Seconds()
	var out []Disk
	for name, y := range b {
		x, ok := a[name]
		if !ok || c.isPartition(name) {
			continue
		}
		ios := sub(x.Reads, y.Reads) + sub(x.Writes, y.Writes) + sub(x.Discards, y.Discards)
		if ios == 0 && y.InFlight == 0 && sub(x.IOMS, y.IOMS) == 0 {
			continue
		}
		d := Disk{
			Name:          name,
			ReadsPerSec:   float64(sub(x.Reads, y.Reads)) / secs,
			WritesPerSec:  float64(sub(x.Writes, y.Writes)) / secs,
			ReadBytesSec:  float64(sub(x.ReadSectors, y.ReadSectors)*sectorBytes) / secs,
			WriteBytesSec: float64(sub(x.WriteSectors, y.WriteSectors)*sectorBytes) / secs,
			UtilPercent:   min(100, 100*float64(sub(x.IOMS, y.IOMS))/(secs*1000)),
			InFlight:      y.InFlight,
		}
		if ios > 0 {
			d.AwaitMS = float64(sub(x.ReadMS, y.ReadMS)+sub(x.WriteMS, y.WriteMS)+sub(x.DiscMS, y.DiscMS)) / float64(ios)
		}
		out = append(out, d)
	}
	sortDisks(out)
	return out
}

func sub(a, b uint64) uint64 {
	if b < a {
		return 0
	}
	return b - a
}

// isPartition asks sysfs; names alone cannot tell (nvme0n1p1 but also
// md0p1, mmcblk0p1, and dm-0 is no partition).
func (c *collector) isPartition(name string) bool {
	_, err := os.Stat(c.path("/sys/class/block/" + strings.ReplaceAll(name, "/", "!") + "/partition"))
	return err == nil
}

// sortDisks puts the busiest device first.
func sortDisks(d []Disk) {
	slices.SortFunc(d, func(a, b Disk) int {
		return cmp.Or(cmp.Compare(b.UtilPercent, a.UtilPercent), strings.Compare(a.Name, b.Name))
	})
}
