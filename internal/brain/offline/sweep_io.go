package offline

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// DiskErrorRecent is how old a kernel I/O error may be to be critical;
// older ones are a warning (the disk may have been replaced since).
const DiskErrorRecent = 24 * time.Hour

// Kernel log patterns. The I/O error forms are the ones the block layer,
// the filesystems and the drivers print (blk_update_request / "I/O
// error, dev sdb, sector", "Buffer I/O error on dev", "EXT4-fs error
// (device ...)", libata "failed command", NVMe "I/O ... timeout").
var (
	diskErrorREs = []*regexp.Regexp{
		regexp.MustCompile(`(?i)\bI/O error\b`),
		regexp.MustCompile(`blk_update_request`),
		regexp.MustCompile(`Buffer I/O error`),
		regexp.MustCompile(`EXT[234]-fs error`),
		regexp.MustCompile(`EXT[234]-fs .*(Remounting filesystem read-only|Aborting journal|Detected aborted journal)`),
		regexp.MustCompile(`XFS \(.*\): .*(Corruption|shut down|metadata I/O error|log I/O error)`),
		regexp.MustCompile(`BTRFS (error|critical)`),
		regexp.MustCompile(`(?i)critical medium error|Medium Error|Unrecovered read error`),
		regexp.MustCompile(`\bata\d+(\.\d+)?: .*(failed|error)`),
		regexp.MustCompile(`(?i)\bnvme\S*.*(timeout|I/O error|controller is down|resetting controller)`),
		regexp.MustCompile(`rejecting I/O to offline device|\bdevice offline\b`),
		regexp.MustCompile(`\bsd \d+:\d+:\d+:\d+: .*(FAILED Result|Sense Key)`),
	}
	diskDeviceREs = []*regexp.Regexp{
		regexp.MustCompile(`\((?:device )?([a-z]+[a-z0-9]*)\)`),
		regexp.MustCompile(`\bdev(?:ice)? ([a-z]+[a-z0-9]*)`),
		regexp.MustCompile(`\[((?:sd|vd|xvd|hd)[a-z]+|nvme\d+n\d+)\]`),
		regexp.MustCompile(`\b(ata\d+(?:\.\d+)?)`),
		regexp.MustCompile(`\b(nvme\d+(?:n\d+)?)\b`),
	}
	hungRE     = regexp.MustCompile(`task (\S+):(\d+) blocked for more than (\d+) seconds`)
	segfaultRE = regexp.MustCompile(`^(\S+)\[(\d+)\]: (segfault at|general protection|trap )`)
	hwREs      = []*regexp.Regexp{
		regexp.MustCompile(`(?i)\bmce: \[Hardware Error\]|Machine check|\bMCE\b.*error`),
		regexp.MustCompile(`(?i)\bEDAC\b.*(CE|UE|error)`),
		regexp.MustCompile(`(?i)soft lockup|hard LOCKUP|NMI watchdog`),
		regexp.MustCompile(`(?i)temperature above threshold|clock throttled`),
	}
	killedRE   = regexp.MustCompile(`Killed process (\d+) \(([^)]*)\)`)
	oomKillRE  = regexp.MustCompile(`oom-kill:.*?oom_memcg=([^,]*),.*?task=([^,]*),pid=(\d+)`)
	memLimitRE = regexp.MustCompile(`^memory: usage \d+kB, limit (\d+)kB`)
)

// noiseDevices are devices whose I/O errors are usually an empty drive
// (a VM's floppy or CD-ROM), not a failing disk.
var noiseDevice = regexp.MustCompile(`^(fd\d+|sr\d+)$`)

var (
	partitionRE     = regexp.MustCompile(`^((?:sd|vd|xvd|hd)[a-z]+)\d+$`)
	nvmePartitionRE = regexp.MustCompile(`^((?:nvme\d+n\d+|mmcblk\d+))p\d+$`)
)

// diskDevice names the disk a kernel message is about; a partition
// counts as its disk, so sdb and sdb1 errors are one finding.
func diskDevice(line string) string {
	for _, re := range diskDeviceREs {
		if m := re.FindStringSubmatch(line); m != nil {
			d := m[1]
			if p := partitionRE.FindStringSubmatch(d); p != nil {
				return p[1]
			}
			if p := nvmePartitionRE.FindStringSubmatch(d); p != nil {
				return p[1]
			}
			return d
		}
	}
	return ""
}

func checkKernelLog(v *view, fs *findings) {
	for _, l := range v.logs() {
		if !l.kernel {
			continue
		}
		switch {
		case matchAny(diskErrorREs, l.text):
			dev := diskDevice(l.text)
			sev := sevWarning
			switch {
			case noiseDevice.MatchString(dev):
				sev = sevInfo
			case l.ageKnown && l.age <= DiskErrorRecent:
				sev = sevCritical
			}
			f := fs.get("disk.errors", dev, sev)
			f.add(l.source, "%s%s", ageNote(l), clip(l.text, 200))
			f.set("disk", dev)
		case hungRE.MatchString(l.text):
			m := hungRE.FindStringSubmatch(l.text)
			f := fs.get("kernel.hung", m[1], sevWarning)
			f.add(l.source, "%s%s", ageNote(l), clip(l.text, 200))
			f.set("comm", m[1])
			f.title = fmt.Sprintf("Task %s (pid %s) hung for over %s seconds", m[1], m[2], m[3])
			f.rootCause = fmt.Sprintf("%s sat in uninterruptible sleep (D state) for more than %s seconds: it waits for I/O or a lock that does not complete, typically a stalled disk, NFS server or device.", m[1], m[3])
			f.fix = []string{"Look at the stack the kernel printed after the message (dmesg -T | grep -A 30 'blocked for more than')", "Check the device or mount it waits on (disk errors, NFS server reachability)"}
			f.conf = 1
		case segfaultRE.MatchString(l.text):
			m := segfaultRE.FindStringSubmatch(l.text)
			f := fs.get("process.crashing", m[1], sevWarning)
			f.add(l.source, "%s%s", ageNote(l), clip(l.text, 200))
			f.set("comm", m[1])
		case matchAny(hwREs, l.text):
			sev := sevWarning
			if l.ageKnown && l.age <= DiskErrorRecent && !strings.Contains(strings.ToLower(l.text), "throttled") {
				sev = sevCritical
			}
			f := fs.get("hw.errors", "", sev)
			f.add(l.source, "%s%s", ageNote(l), clip(l.text, 200))
		}
	}
	for _, f := range fs.ofKind("disk.errors") {
		dev := f.subject
		n := f.lines("kernel log") + f.lines("journal")
		if n == 0 {
			continue // seen by biolatency only; titled there
		}
		name := dev
		if name == "" {
			name = "a device"
		}
		if v.blockDeviceGone(dev) && f.lines("trace biolatency") == 0 {
			// The device was detached or removed since: the errors are its
			// history, not a fault of anything the host uses now.
			f.sev = sevInfo
			f.title = fmt.Sprintf("I/O errors in the kernel log on %s, which is no longer attached (%s)", name, plural(n, "message", "messages"))
			f.rootCause = fmt.Sprintf("The kernel reported failed I/O on %s, but %s is not among the block devices now (a loop device detached, or a disk removed), so nothing can fail on it any more. The messages: %s", name, name, clip(f.evidence[0], 160))
			f.fix = []string{
				"If " + name + " was a disk that is still needed, find out why it went away: dmesg -T | grep -w " + name,
				"Otherwise nothing to do: the messages stay in the kernel log until it rotates",
			}
			f.conf = 2
			continue
		}
		f.title = fmt.Sprintf("I/O errors on %s in the kernel log (%s)", name, plural(n, "message", "messages"))
		f.rootCause = fmt.Sprintf("The kernel reports failed I/O on %s: the device (or its cable, controller or backing storage) returns errors, so reads and writes fail or the filesystem goes read-only. The messages: %s", name, clip(f.evidence[0], 160))
		f.fix = []string{
			"Check the device's health: smartctl -a /dev/" + orDefault(dev, "<disk>") + " (or nvme smart-log), and the RAID/backing storage if virtual",
			"Back up what is still readable; replace the device if SMART reports reallocated or pending sectors",
			"Run a filesystem check (fsck) from a rescue system once the device is healthy",
		}
		f.conf = 2
	}
	if f := fs.find("hw.errors", ""); f != nil {
		f.title = fmt.Sprintf("Hardware or CPU errors in the kernel log (%s)", plural(f.lines("kernel log"), "message", "messages"))
		f.rootCause = "The kernel reports hardware trouble (machine checks, memory ECC errors, lockups or thermal throttling): the machine itself is unreliable or overheating. First message: " + clip(f.evidence[0], 160)
		f.fix = []string{"Decode machine checks with rasdaemon / mcelog; check EDAC counters: grep . /sys/devices/system/edac/mc/mc*/*count", "Check cooling and firmware; schedule the hardware vendor's diagnostics or replace the failing part"}
		f.conf = 1
	}
}

// blockDevName are the names of whole block devices as the kernel log
// gives them (controllers such as ata1 or nvme0 are not block devices).
var blockDevName = regexp.MustCompile(`^(loop\d+|(?:sd|vd|xvd|hd)[a-z]+|nvme\d+n\d+|mmcblk\d+|dm-\d+|md\d+|nbd\d+|zram\d+|rbd\d+)$`)

// blockDeviceGone reports whether the facts list the block devices
// present and dev, a block device name, is not among them.
func (v *view) blockDeviceGone(dev string) bool {
	if len(v.f.BlockDevices) == 0 || !blockDevName.MatchString(dev) {
		return false
	}
	for _, b := range v.f.BlockDevices {
		if b.Name == dev {
			return false
		}
	}
	return true
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func matchAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// dstate is one task in uninterruptible sleep.
type dstate struct {
	pid, comm, wchan string
}

// dstates lists D-state user tasks from the ps command and the facts.
func dstates(v *view) []dstate {
	var out []dstate
	seen := map[string]bool{}
	add := func(pid, comm, wchan string) {
		if seen[pid] || v.own[comm] || strings.HasPrefix(comm, "rcu_") || strings.HasPrefix(comm, "kworker") {
			return
		}
		seen[pid] = true
		out = append(out, dstate{pid, comm, wchan})
	}
	for _, r := range v.output("ps -eo pid,stat,wchan") {
		for _, line := range strings.Split(r.Stdout, "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && strings.HasPrefix(f[1], "D") {
				add(f[0], strings.Join(f[3:], " "), f[2])
			}
		}
	}
	for _, list := range [][]procLite{lite(v.f.TopCPU), lite(v.f.TopMemory)} {
		for _, p := range list {
			if strings.HasPrefix(p.state, "D") {
				add(p.pid, p.comm, "")
			}
		}
	}
	return out
}

func checkDisks(v *view, fs *findings) {
	f := v.f
	type diskSig struct {
		name     string
		sev      severity
		evidence [][2]string
		signals  []string
	}
	byDisk := map[string]*diskSig{}
	sig := func(name string) *diskSig {
		if d, ok := byDisk[name]; ok {
			return d
		}
		d := &diskSig{name: name}
		byDisk[name] = d
		return d
	}
	for _, d := range f.Disks {
		if d.UtilPercent >= DiskUtilPercent {
			s := sig(d.Name)
			s.sev = max(s.sev, sevWarning)
			s.evidence = append(s.evidence, [2]string{"/proc/diskstats", fmt.Sprintf("%s busy %s of the time, await %.1f ms, %.0f reads/s, %.0f writes/s (%s/s written), %d in flight (threshold %s busy)", d.Name, pct(d.UtilPercent), d.AwaitMS, d.ReadsPerSec, d.WritesPerSec, bytesStr(uint64(d.WriteBytesSec)), d.InFlight, pct(DiskUtilPercent))})
			s.signals = append(s.signals, pct(d.UtilPercent)+" busy")
		}
		if d.AwaitMS >= DiskAwaitMS {
			s := sig(d.Name)
			s.sev = max(s.sev, sevWarning)
			if d.AwaitMS >= 10*DiskAwaitMS {
				s.sev = sevCritical
			}
			s.evidence = append(s.evidence, [2]string{"/proc/diskstats", fmt.Sprintf("%s await %.1f ms per request (threshold %.0f ms)", d.Name, d.AwaitMS, DiskAwaitMS)})
			s.signals = append(s.signals, fmt.Sprintf("await %.0f ms", d.AwaitMS))
		}
	}
	for _, tb := range v.tables("biolatency", "I/O by disk and operation") {
		for _, r := range tb.rows {
			disk := tb.get(r, "disk")
			p99 := tb.num(r, "p99_us")
			if errs := tb.num(r, "errors"); errs > 0 {
				e := fs.get("disk.errors", disk, sevCritical)
				e.add("trace biolatency", "biolatency: %.0f %s requests to %s failed during the trace", errs, tb.get(r, "op"), disk)
				e.set("disk", disk)
				if e.title == "" {
					e.title = fmt.Sprintf("I/O errors on %s during the trace", disk)
					e.rootCause = fmt.Sprintf("Block requests to %s complete with errors: the device or its backing storage fails.", disk)
					e.fix = []string{"Check the device's health: smartctl -a /dev/" + disk, "Look for the kernel's messages about it: dmesg -T | grep " + disk}
					e.conf = 2
				}
			}
			if p99 >= BiolatencyP99US && tb.num(r, "count") > 0 {
				s := sig(disk)
				sev := sevWarning
				if p99 >= BiolatencyP99CriticalUS {
					sev = sevCritical
				}
				s.sev = max(s.sev, sev)
				s.evidence = append(s.evidence, [2]string{"trace biolatency", fmt.Sprintf("biolatency: %s %s p99 %s, average %s over %s requests (threshold %s)", disk, tb.get(r, "op"), msFromUS(p99), msFromUS(tb.num(r, "avg_us")), tb.get(r, "count"), msFromUS(BiolatencyP99US))})
				s.signals = append(s.signals, fmt.Sprintf("%s p99 %s", tb.get(r, "op"), msFromUS(p99)))
			}
		}
	}
	// Host-wide signs of waiting on I/O: source, evidence, and a short
	// form for the title.
	var host [][3]string
	if cpuMeasured(f.CPU) && f.CPU.IOWait >= IOWaitPercent {
		host = append(host, [3]string{"/proc/stat", fmt.Sprintf("iowait %s of CPU time (threshold %s)", pct(f.CPU.IOWait), pct(IOWaitPercent)), "iowait " + pct(f.CPU.IOWait)})
	}
	if f.PSI != nil && f.PSI.IO.SomeAvg10 >= PSIIOSomeAvg10 {
		host = append(host, [3]string{"psi", fmt.Sprintf("I/O pressure: some avg10 %s, full avg10 %s (threshold %s)", pct(f.PSI.IO.SomeAvg10), pct(f.PSI.IO.FullAvg10), pct(PSIIOSomeAvg10)), "I/O pressure " + pct(f.PSI.IO.SomeAvg10)})
	}
	// fileio read latency: host-wide from an unfiltered trace; per program
	// from a trace filtered to one (the issue named it).
	var slowReaders []string
	for _, r := range v.results("fileio") {
		comm := r.Params["comm"]
		if r.Params["pid"] != "" {
			continue
		}
		for _, h := range r.Histograms {
			if h.Title != "read latency" || h.Count == 0 || float64(h.P99)/1000 < FileioReadP99US {
				continue
			}
			p99 := msFromUS(float64(h.P99) / 1000)
			if comm == "" {
				host = append(host, [3]string{"trace fileio", fmt.Sprintf("fileio: read() p99 %s over %d reads (threshold %s)", p99, h.Count, msFromUS(FileioReadP99US)), "read() p99 " + p99})
			} else {
				host = append(host, [3]string{"trace fileio", fmt.Sprintf("fileio: %s's read() p99 %s over %d reads (threshold %s)", comm, p99, h.Count, msFromUS(FileioReadP99US)), comm + " read() p99 " + p99})
				slowReaders = append(slowReaders, comm)
			}
		}
	}
	ds := dstates(v)
	if len(byDisk) == 0 && len(host) == 0 {
		return
	}
	names := make([]string, 0, len(byDisk))
	for n := range byDisk {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := byDisk[names[i]], byDisk[names[j]]
		if a.sev != b.sev {
			return a.sev > b.sev
		}
		if len(a.evidence) != len(b.evidence) {
			return len(a.evidence) > len(b.evidence)
		}
		return a.name < b.name
	})
	if len(names) == 0 {
		// I/O waits without a disk over its thresholds (network storage,
		// a device the interval missed): one host-wide finding.
		if len(host) < 2 && len(ds) == 0 {
			return
		}
		names = []string{""}
		byDisk[""] = &diskSig{sev: sevWarning}
	}
	for i, n := range names {
		s := byDisk[n]
		fd := fs.get("disk.saturation", n, s.sev)
		fd.set("disk", n)
		for _, e := range s.evidence {
			fd.add(e[0], "%s", e[1])
		}
		if i == 0 {
			for _, e := range host {
				fd.add(e[0], "%s", e[1])
			}
			if len(ds) > 0 {
				var l []string
				for _, d := range ds {
					w := ""
					if d.wchan != "" && d.wchan != "-" {
						w = ", in " + d.wchan
					}
					l = append(l, fmt.Sprintf("%s (pid %s%s)", d.comm, d.pid, w))
				}
				fd.add("ps", "tasks waiting in D state: %s", joinMax(l, 5))
			}
		}
		heavy, hp := heaviestIO(v, n)
		if heavy != "" {
			fd.add("trace "+hp.source, "%s", hp.text)
			fd.set("comm", heavy)
			fd.set("pid", hp.pid)
		}
		var victims []string
		for _, c := range slowReaders {
			if c != heavy {
				victims = append(victims, c)
			}
		}
		for _, d := range ds {
			if d.comm != heavy {
				victims = append(victims, d.comm)
			}
		}
		if i > 0 {
			victims = nil
		}
		label := n
		if label == "" {
			label = "storage"
		}
		if len(s.signals) > 0 {
			fd.title = fmt.Sprintf("Disk %s saturated: %s", label, strings.Join(s.signals, ", "))
		} else {
			fd.title = "Processes wait on I/O: " + strings.Join(shortCol(host), ", ")
		}
		fd.rootCause = fmt.Sprintf("The disk %s cannot keep up with the I/O asked of it, so requests queue and every process reading or writing it waits.", label)
		if n == "" {
			fd.rootCause = "Processes spend their time waiting for I/O to complete (iowait, I/O pressure, D-state tasks): the storage they use is too slow for the load."
		}
		if heavy != "" {
			fd.rootCause += fmt.Sprintf(" Most of the I/O comes from %s (pid %s)", heavy, hp.pid)
			if len(victims) > 0 {
				vs := uniq(victims)
				verb := "wait"
				if len(vs) == 1 {
					verb = "waits"
				}
				fd.rootCause += fmt.Sprintf("; %s %s behind it", joinMax(vs, 3), verb)
			}
			fd.rootCause += "."
		}
		fd.fix = []string{
			"Confirm who does the I/O: nannyagent trace run biolatency,fileio --duration 10s",
			"Throttle or reschedule the heavy writer (ionice -c3, systemd IOWeight=/IOWriteBandwidthMax=), or move it to another disk",
			"Avoid synchronous small writes (O_SYNC/fsync per write) where the application allows batching",
			"If the load is legitimate, use faster storage",
		}
		fd.conf = 1
	}
}

func shortCol(x [][3]string) []string {
	var out []string
	for _, e := range x {
		out = append(out, e[2])
	}
	return out
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

type ioProc struct {
	pid, text, source string
}

// heaviestIO names the process doing most I/O to disk (any disk when
// disk is ""): the biolatency submitter, unless that is a kernel flusher
// and fileio names the user process behind it.
func heaviestIO(v *view, disk string) (string, ioProc) {
	kernelThread := func(c string) bool {
		return strings.HasPrefix(c, "kworker") || strings.HasPrefix(c, "jbd2") || strings.HasPrefix(c, "kswapd") || c == "" || v.own[c]
	}
	// The submitter that kept the disk busiest: requests times their
	// device time, so a few large writes outweigh many small reads.
	var bioComm string
	var bio ioProc
	var busiest float64
	for _, tb := range v.tables("biolatency", "top processes by I/O (submitter)") {
		for _, r := range tb.rows {
			if disk != "" && tb.get(r, "disk") != disk {
				continue
			}
			c := tb.get(r, "comm")
			busy := tb.num(r, "count") * tb.num(r, "avg_us")
			if kernelThread(c) || (bioComm != "" && busy <= busiest) {
				continue
			}
			bioComm, busiest = c, busy
			bio = ioProc{pid: tb.get(r, "pid"), source: "biolatency", text: fmt.Sprintf("biolatency: %s (pid %s) submitted %s %s requests (%s) to %s, %s of device time", c, tb.get(r, "pid"), tb.get(r, "count"), tb.get(r, "op"), bytesStr(uint64(tb.num(r, "bytes"))), tb.get(r, "disk"), latency(busy))}
		}
	}
	if bioComm != "" {
		return bioComm, bio
	}
	var best []string
	var bestBytes float64
	var bestPid string
	for _, tb := range v.tables("fileio", "I/O by process") {
		for _, r := range tb.rows {
			c := tb.get(r, "comm")
			b := tb.num(r, "write_bytes") + tb.num(r, "read_bytes")
			if kernelThread(c) || b <= bestBytes {
				continue
			}
			bestBytes, bestPid = b, tb.get(r, "pid")
			best = []string{c, fmt.Sprintf("fileio: %s (pid %s) wrote %s and read %s in %s writes and %s reads", c, tb.get(r, "pid"), bytesStr(uint64(tb.num(r, "write_bytes"))), bytesStr(uint64(tb.num(r, "read_bytes"))), tb.get(r, "writes"), tb.get(r, "reads"))}
		}
	}
	if best != nil {
		return best[0], ioProc{pid: bestPid, text: best[1], source: "fileio"}
	}
	return "", ioProc{}
}

// procLite is the part of a process the D-state check reads.
type procLite struct{ pid, comm, state string }

func lite(ps []sysinfo.Process) []procLite {
	var out []procLite
	for _, p := range ps {
		out = append(out, procLite{pid: strconv.Itoa(p.PID), comm: p.Comm, state: p.State})
	}
	return out
}
