package offline

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// Thresholds of the USE sweep. A value at or past a threshold makes a
// finding; docs/OFFLINE_ENGINE.md lists them with their reasons.
const (
	// CPU: the share of all CPUs' time neither idle nor waiting for I/O.
	CPUBusyPercent = 90.0
	// Runnable tasks per CPU (procs_running, the reader excluded): more
	// than two per CPU means each waits for others' timeslices.
	RunQueuePerCPU = 2.0
	// 1-minute load average per CPU.
	LoadPerCPU = 2.0
	// Run-queue latency p99 (runqlat), µs: 10 ms is several timeslices;
	// 100 ms is visible to any interactive user.
	RunqlatP99US         = 10_000
	RunqlatP99CriticalUS = 100_000
	// PSI: the share of the last 10 s some task waited for a CPU.
	PSICPUSomeAvg10 = 25.0
	// Time the hypervisor gave other guests.
	StealPercent = 10.0

	// Memory: MemAvailable as a share of MemTotal.
	MemAvailablePercent         = 10.0
	MemAvailableCriticalPercent = 5.0
	// Major page faults and pages swapped in per second: the working set
	// no longer fits.
	MajorFaultsPerSec = 100.0
	SwapInPerSec      = 100.0
	// PSI memory: some / full avg10.
	PSIMemorySomeAvg10 = 10.0
	PSIMemoryFullAvg10 = 5.0
	// Swap in use as a share of swap space.
	SwapUsedPercent = 80.0
	// A cgroup's memory use as a share of its limit.
	CgroupMemoryPercent = 90.0

	// Filesystems: used space as df counts it, used / (used + available);
	// used inodes of the inode table.
	FSUsedPercent             = 95.0
	FSUsedCriticalPercent     = 99.0
	InodesUsedPercent         = 95.0
	InodesUsedCriticalPercent = 99.0

	// Tables that run out: the system file table (file-nr vs file-max),
	// a process's open files vs its soft RLIMIT_NOFILE, threads vs
	// threads-max and processes vs pid_max, a cgroup's pids vs pids.max.
	FileHandlesPercent = 90.0
	ProcessFDPercent   = 90.0
	TasksPercent       = 90.0
	CgroupPIDsPercent  = 90.0

	// Disks: busy time; mean time per request; biolatency p99, µs.
	DiskUtilPercent         = 90.0
	DiskAwaitMS             = 50.0
	BiolatencyP99US         = 100_000
	BiolatencyP99CriticalUS = 1_000_000
	// CPU time idle while I/O is outstanding; PSI io some avg10.
	IOWaitPercent   = 20.0
	PSIIOSomeAvg10  = 20.0
	FileioReadP99US = 100_000

	// Processes waiting on their own I/O (fileio), whatever the disk's
	// utilisation. Busy: the time a process's threads spend inside read
	// or write calls on storage files, added up, as a share of the trace;
	// at half or more it waits on I/O more than it does anything else.
	SyncIOBusyPercent = 50.0
	// Mean time per call, µs, at or above which calls went to a device:
	// a read from the page cache takes a few microseconds (a 128 KiB one
	// about twenty), a device round trip from some tens (a fast virtual
	// disk, NVMe) to milliseconds. Writes count as synchronous only with
	// more proof (the file's open flags, or the process submitting its
	// own block writes), since a large buffered write can take as long.
	SyncWriteMeanUS = 100
	IOReadMeanUS    = 50
	// PSI io some avg10 that supports an I/O finding without being one.
	IOEvidencePSI = 5.0
	// Contention shows in the read latency of the disk: most reads fast,
	// the slowest one in a hundred ContentionTailRatio times slower and
	// over ContentionTailUS, over at least ContentionMinReads requests.
	ContentionTailRatio = 10.0
	ContentionTailUS    = 1000
	ContentionMinReads  = 100
	// Storage bytes per second of one process (facts) that make the
	// first round trace file I/O even when no playbook asks for it.
	IOHeavyBytesPerSec = 10 << 20

	// Network: retransmitted segments as a share of segments sent, when
	// at least RetransMinPerSec are retransmitted.
	RetransPercent   = 5.0
	RetransMinPerSec = 1.0
	// Interface drops since boot worth a note (errors always are).
	InterfaceDrops = 1000

	// Processes: abnormal exits of one program within one trace; restarts
	// of a systemd unit.
	CrashRepeat     = 3
	ServiceRestarts = 3

	// RecentLog is how old a kernel message may be to count as current.
	RecentLog = time.Hour
)

// sweep runs every check over what the view holds; checks that need a
// trace or a command skip quietly when it did not run.
func sweep(v *view) *findings {
	fs := &findings{}
	checkCPU(v, fs)
	checkMemory(v, fs)
	checkOOM(v, fs)
	checkFilesystems(v, fs)
	checkFDs(v, fs)
	checkPIDs(v, fs)
	checkDisks(v, fs)
	checkSyncIO(v, fs)
	checkKernelLog(v, fs)
	checkNetwork(v, fs)
	checkDNS(v, fs)
	checkServices(v, fs)
	checkExits(v, fs)
	checkErrnos(v, fs)
	explain(v, fs)
	// The user's own words are evidence: a finding about the mount, unit
	// or program the issue names is supported by it (once).
	for _, f := range fs.list {
		switch {
		case f.subject != "" && v.issueNames(f.subject):
			f.add(issueSource, "the issue names %s", f.subject)
		case f.vars["mount"] != "" && v.issueNamesMount(f.vars["mount"]):
			f.add(issueSource, "the issue names a path on %s", f.vars["mount"])
		default:
			for _, k := range []string{"comm", "unit"} {
				if x := f.vars[k]; x != "" && v.issueNames(strings.TrimSuffix(x, ".service")) {
					f.add(issueSource, "the issue names %s", x)
					break
				}
			}
		}
	}
	return fs
}

func cpuMeasured(c sysinfo.CPUUse) bool {
	return c.User+c.System+c.IOWait+c.Steal+c.Idle > 0
}

// topProcs describes the first n processes of list, skipping the
// engine's own.
func topProcs(v *view, list []sysinfo.Process, n int, what func(p sysinfo.Process) string) ([]string, *sysinfo.Process) {
	var out []string
	var first *sysinfo.Process
	for i := range list {
		p := list[i]
		// Kernel threads (no command line) idling at a few percent are
		// not what loads the host.
		if v.own[p.Comm] || (p.Cmdline == "" && p.CPUPercent < 5 && p.RSSBytes == 0) {
			continue
		}
		if first == nil {
			first = &list[i]
		}
		out = append(out, fmt.Sprintf("%s (pid %d, %s)", p.Comm, p.PID, what(p)))
		if len(out) == n {
			break
		}
	}
	return out, first
}

func checkCPU(v *view, fs *findings) {
	f := v.f
	cpus := float64(f.CPUs)
	var f0 *finding
	get := func(sev severity) *finding {
		if f0 == nil {
			f0 = fs.get("cpu.saturation", "", sev)
		}
		f0.raise(sev)
		return f0
	}
	var signals []string
	if cpus > 0 {
		runq := float64(f.CPU.RunQueue - 1)
		if runq > RunQueuePerCPU*cpus {
			get(sevWarning).add("/proc/stat", "%d runnable tasks on %d CPUs (%.1f per CPU; threshold %.0f)", int(runq), f.CPUs, runq/cpus, RunQueuePerCPU)
			signals = append(signals, fmt.Sprintf("%d runnable tasks for %d CPUs", int(runq), f.CPUs))
		}
		if f.Load[0]/cpus > LoadPerCPU {
			get(sevWarning).add("load average", "load average %.2f (1 min) on %d CPUs: %.1f per CPU (threshold %.0f)", f.Load[0], f.CPUs, f.Load[0]/cpus, LoadPerCPU)
			signals = append(signals, fmt.Sprintf("load %.1f per CPU", f.Load[0]/cpus))
		}
	}
	if h, ok := v.histogram("runqlat", "run-queue latency"); ok && h.Count > 0 && h.P99 >= RunqlatP99US {
		sev := sevWarning
		if h.P99 >= RunqlatP99CriticalUS {
			sev = sevCritical
		}
		get(sev).add("trace runqlat", "runqlat: p99 wait for a CPU %s, p50 %s, over %d waits", msFromUS(float64(h.P99)), msFromUS(float64(h.P50)), h.Count)
		signals = append(signals, "p99 run-queue wait "+msFromUS(float64(h.P99)))
	}
	if f.PSI != nil && f.PSI.CPU.SomeAvg10 >= PSICPUSomeAvg10 {
		get(sevWarning).add("psi", "CPU pressure: some avg10 %s (threshold %s)", pct(f.PSI.CPU.SomeAvg10), pct(PSICPUSomeAvg10))
		signals = append(signals, "CPU pressure "+pct(f.PSI.CPU.SomeAvg10))
	}
	busy := 100 - f.CPU.Idle - f.CPU.IOWait
	if cpuMeasured(f.CPU) && busy >= CPUBusyPercent {
		get(sevInfo).add("/proc/stat", "CPUs busy %s (user %s, system %s, steal %s) over %s", pct(busy), pct(f.CPU.User), pct(f.CPU.System), pct(f.CPU.Steal), f.Interval)
		if len(signals) == 0 {
			signals = append(signals, "CPUs "+pct(busy)+" busy")
		}
	}
	if cpuMeasured(f.CPU) && f.CPU.Steal >= StealPercent {
		s := fs.get("cpu.steal", "", sevWarning)
		s.add("/proc/stat", "steal %s of CPU time over %s (threshold %s)", pct(f.CPU.Steal), f.Interval, pct(StealPercent))
		s.title = fmt.Sprintf("The hypervisor takes %s of this guest's CPU time (steal)", pct(f.CPU.Steal))
		s.rootCause = "Other guests on the same host use the physical CPUs this VM's vCPUs need, so work here waits although the guest looks idle."
		s.fix = []string{"Check the host's CPU load and overcommit (vCPUs per physical core)", "Move the VM or reserve CPU for it on the hypervisor"}
		s.conf = 1
	}
	if f0 == nil {
		return
	}
	procs, first := topProcs(v, f.TopCPU, 3, func(p sysinfo.Process) string { return fmt.Sprintf("%.0f%% CPU", p.CPUPercent) })
	for _, tb := range v.tables("runqlat", "processes by run-queue wait") {
		shown := 0
		for _, r := range tb.rows {
			if shown == 3 || v.own[tb.get(r, "comm")] {
				continue
			}
			shown++
			f0.add("trace runqlat", "runqlat: %s (pid %s) waited %s in total, p99 %s", tb.get(r, "comm"), tb.get(r, "pid"), msFromUS(tb.num(r, "total_us")), msFromUS(tb.num(r, "p99_us")))
		}
	}
	if first != nil {
		f0.set("comm", first.Comm)
		f0.set("pid", fmt.Sprint(first.PID))
	}
	if f0.sev == sevInfo {
		f0.title = fmt.Sprintf("CPUs are %s busy, without a queue yet", pct(busy))
		f0.rootCause = "The CPUs are nearly fully used; tasks do not wait for them yet, but any more load will queue."
	} else {
		f0.title = "CPU saturated: " + strings.Join(signals, ", ")
		f0.rootCause = "More work is runnable than there are CPUs, so tasks wait in the run queue and everything on the host slows down."
	}
	if len(procs) > 0 {
		f0.rootCause += " The busiest processes: " + strings.Join(procs, ", ") + "."
		f0.add("/proc/<pid>/stat", "busiest: %s", strings.Join(procs, ", "))
	}
	f0.fix = []string{
		"See where the busiest process spends its time: nannyagent trace run profile --pid <pid>",
		"Stop, nice or limit the runaway work (systemd CPUQuota= or cgroup cpu.max)",
		"If the load is legitimate, add CPUs or spread it over more hosts",
	}
	f0.conf = 1
}

func checkMemory(v *view, fs *findings) {
	f := v.f
	m := f.Memory
	var mp *finding
	get := func(sev severity) *finding {
		if mp == nil {
			mp = fs.get("mem.pressure", "", sev)
		}
		mp.raise(sev)
		return mp
	}
	var signals []string
	if m.TotalBytes > 0 {
		avail := float64(m.AvailableBytes) / float64(m.TotalBytes) * 100
		if avail < MemAvailablePercent {
			sev := sevWarning
			if avail < MemAvailableCriticalPercent {
				sev = sevCritical
			}
			get(sev).add("/proc/meminfo", "memory available %s of %s (%s; threshold %s)", bytesStr(m.AvailableBytes), bytesStr(m.TotalBytes), pct(avail), pct(MemAvailablePercent))
			signals = append(signals, pct(avail)+" available")
		}
	}
	if m.MajorFaultsPerSec >= MajorFaultsPerSec {
		get(sevWarning).add("/proc/vmstat", "%.0f major page faults per second (threshold %.0f)", m.MajorFaultsPerSec, MajorFaultsPerSec)
		signals = append(signals, fmt.Sprintf("%.0f major faults/s", m.MajorFaultsPerSec))
	}
	if m.SwapInPerSec >= SwapInPerSec {
		get(sevWarning).add("/proc/vmstat", "%.0f pages swapped in per second (threshold %.0f)", m.SwapInPerSec, SwapInPerSec)
		signals = append(signals, fmt.Sprintf("%.0f swap-ins/s", m.SwapInPerSec))
	}
	if p := f.PSI; p != nil {
		if p.Memory.FullAvg10 >= PSIMemoryFullAvg10 {
			get(sevCritical).add("psi", "memory pressure: full avg10 %s (all tasks stalled; threshold %s)", pct(p.Memory.FullAvg10), pct(PSIMemoryFullAvg10))
			signals = append(signals, "memory stalls "+pct(p.Memory.FullAvg10))
		} else if p.Memory.SomeAvg10 >= PSIMemorySomeAvg10 {
			get(sevWarning).add("psi", "memory pressure: some avg10 %s (threshold %s)", pct(p.Memory.SomeAvg10), pct(PSIMemorySomeAvg10))
			signals = append(signals, "memory pressure "+pct(p.Memory.SomeAvg10))
		}
	}
	if mp != nil {
		for _, tb := range v.tables("reclaim", "processes stalled in reclaim") {
			for i, r := range tb.rows {
				if i == 3 {
					break
				}
				mp.add("trace reclaim", "reclaim: %s (pid %s) stalled %s in %s reclaim", tb.get(r, "comm"), tb.get(r, "pid"), msFromUS(tb.num(r, "total_us")), tb.get(r, "kind"))
			}
		}
		procs, first := topProcs(v, f.TopMemory, 3, func(p sysinfo.Process) string { return bytesStr(p.RSSBytes) })
		mp.title = "Memory pressure: " + strings.Join(signals, ", ")
		mp.rootCause = "The host is short of memory: the kernel reclaims and faults pages back in, which stalls every process that needs memory."
		if len(procs) > 0 {
			mp.rootCause += " The largest processes: " + strings.Join(procs, ", ") + "."
			mp.add("/proc/<pid>/status", "largest: %s", strings.Join(procs, ", "))
		}
		if first != nil {
			mp.set("comm", first.Comm)
			mp.set("pid", fmt.Sprint(first.PID))
		}
		mp.fix = []string{
			"Find which process grows: compare RSS over time (ps -eo pid,rss,comm --sort=-rss | head)",
			"Restart or fix the leaking process; cap it with a memory limit (systemd MemoryMax=, cgroup memory.max)",
			"Add memory or swap if the working set is legitimate",
		}
		mp.conf = 1
	}
	if m.SwapTotalBytes > 0 {
		used := float64(m.SwapTotalBytes-min(m.SwapFreeBytes, m.SwapTotalBytes)) / float64(m.SwapTotalBytes) * 100
		if used >= SwapUsedPercent {
			s := fs.get("mem.swap", "", sevWarning)
			s.add("/proc/meminfo", "swap %s used of %s (threshold %s)", pct(used), bytesStr(m.SwapTotalBytes), pct(SwapUsedPercent))
			s.title = fmt.Sprintf("Swap is %s full", pct(used))
			s.rootCause = "Memory demand exceeded RAM long enough to push most of swap into use; when swap runs out, the OOM killer is next."
			s.fix = []string{"Find the processes holding swap: grep VmSwap /proc/*/status | sort -k2 -n | tail", "Reduce memory use or add RAM; add swap only as a stopgap"}
			s.conf = 1
		}
	}
	for _, cg := range f.Cgroups {
		if cg.MemoryLimitBytes == 0 || cg.OOMKills > 0 {
			continue
		}
		use := float64(cg.MemoryBytes) / float64(cg.MemoryLimitBytes) * 100
		if use >= CgroupMemoryPercent {
			c := fs.get("cgroup.memory", cg.Path, sevWarning)
			c.add("cgroup", "cgroup %s uses %s of its %s memory limit (%s; threshold %s)", cg.Path, bytesStr(cg.MemoryBytes), bytesStr(cg.MemoryLimitBytes), pct(use), pct(CgroupMemoryPercent))
			c.set("cgroup", cg.Path)
			c.title = fmt.Sprintf("cgroup %s is at %s of its memory limit", cg.Path, pct(use))
			c.rootCause = fmt.Sprintf("The processes of %s use nearly all of the %s the cgroup allows; the kernel reclaims inside it and will OOM-kill there when it cannot.", cg.Path, bytesStr(cg.MemoryLimitBytes))
			c.fix = []string{"Raise the limit (systemd MemoryMax=, or memory.max of the cgroup) if the use is legitimate", "Otherwise find what grows inside the cgroup"}
			c.conf = 1
		}
	}
}

// oomVictim is one OOM kill read from the kernel log.
type oomVictim struct {
	pid, comm, cgroup string
	memcg             bool
}

func checkOOM(v *view, fs *findings) {
	f := v.f
	var o *finding
	get := func(sev severity) *finding {
		if o == nil {
			o = fs.get("oom", "", sev)
		}
		o.raise(sev)
		return o
	}
	var victims []oomVictim
	var limit string
	recent := false
	// victim records a kill; the oom-kill: line and the "Killed process"
	// line of one kill share the pid and are merged.
	victim := func(x oomVictim) {
		for i := range victims {
			if victims[i].pid == x.pid && x.pid != "" {
				if x.cgroup != "" {
					victims[i].cgroup = x.cgroup
				}
				victims[i].memcg = victims[i].memcg || x.memcg
				return
			}
		}
		victims = append(victims, x)
	}
	type oomLine struct {
		l     logLine
		comm  string
		memcg bool
	}
	var lines []oomLine
	for _, l := range v.logs() {
		if !l.kernel {
			continue
		}
		switch {
		case killedRE.MatchString(l.text):
			m := killedRE.FindStringSubmatch(l.text)
			memcg := strings.Contains(l.text, "Memory cgroup out of memory")
			victim(oomVictim{pid: m[1], comm: m[2], memcg: memcg})
			lines = append(lines, oomLine{l, m[2], memcg})
			if l.ageKnown && l.age <= RecentLog {
				recent = true
			}
		case oomKillRE.MatchString(l.text):
			m := oomKillRE.FindStringSubmatch(l.text)
			if cg := m[1]; cg != "" && cg != "/" {
				victim(oomVictim{pid: m[3], comm: m[2], cgroup: cg, memcg: true})
			}
		case memLimitRE.MatchString(l.text) && limit == "":
			limit = memLimitRE.FindStringSubmatch(l.text)[1]
		}
	}
	if len(lines) > 0 {
		// One summary line, then the newest messages verbatim: the
		// kernel log can hold hundreds of kills.
		sev := sevWarning
		if recent {
			sev = sevCritical
		}
		x := get(sev)
		counts := map[string]int{}
		var order []string
		memcg := 0
		var newest *logLine
		for i, ol := range lines {
			if counts[ol.comm] == 0 {
				order = append(order, ol.comm)
			}
			counts[ol.comm]++
			if ol.memcg {
				memcg++
			}
			if ol.l.ageKnown && (newest == nil || ol.l.age < newest.age) {
				newest = &lines[i].l
			}
		}
		var parts []string
		for _, c := range order {
			parts = append(parts, fmt.Sprintf("%s ×%d", c, counts[c]))
		}
		when := ""
		if newest != nil {
			when = fmt.Sprintf(", the last %s ago", roundAge(newest.age))
		}
		scope := ""
		if memcg > 0 {
			scope = fmt.Sprintf(" (%d at a memory cgroup's limit)", memcg)
		}
		x.add("kernel log", "kernel log: %s%s: %s%s", plural(len(lines), "OOM kill", "OOM kills"), scope, joinMax(parts, 4), when)
		start := max(0, len(lines)-2)
		for _, ol := range lines[start:] {
			x.add("kernel log", "%s%s", ageNote(ol.l), clip(ol.l.text, 200))
		}
	}
	if f.Memory.OOMKills > 0 {
		get(sevWarning).add("/proc/vmstat", "the OOM killer ran %d times since boot (vmstat oom_kill)", f.Memory.OOMKills)
	}
	var cgs []string
	for _, cg := range f.Cgroups {
		if cg.OOMKills > 0 {
			x := get(sevWarning)
			if cg.MemoryLimitBytes > 0 {
				x.add("cgroup", "cgroup %s: %d OOM kills at its %s memory limit", cg.Path, cg.OOMKills, bytesStr(cg.MemoryLimitBytes))
			} else {
				x.add("cgroup", "cgroup %s: %d OOM kills", cg.Path, cg.OOMKills)
			}
			cgs = append(cgs, cg.Path)
			x.set("cgroup", cg.Path)
		}
	}
	traced := 0
	for _, tb := range v.tables("oomkill", "OOM kills by victim command") {
		for _, r := range tb.rows {
			n := int(tb.num(r, "kills"))
			traced += n
			get(sevCritical).add("trace oomkill", "oomkill: %s killed %d times during the trace (largest %s)", tb.get(r, "comm"), n, bytesStr(uint64(tb.num(r, "max_rss_kb"))*1024))
			victims = append(victims, oomVictim{comm: tb.get(r, "comm")})
		}
	}
	for _, tb := range v.tables("oomkill", "OOM kills") {
		for _, r := range tb.rows {
			if cg := tb.get(r, "memory_cgroup"); cg != "" && cg != "/" {
				for i := range victims {
					if victims[i].comm == tb.get(r, "victim_comm") && victims[i].cgroup == "" {
						victims[i].cgroup = cg
					}
				}
			}
		}
	}
	if o == nil {
		return
	}
	if recent || traced > 0 {
		o.raise(sevCritical)
	}
	o.conf = 2
	var names []string
	seen := map[string]bool{}
	var last oomVictim
	anyMemcg := false
	// Newest victims first: the kernel log is oldest first.
	for i := len(victims) - 1; i >= 0; i-- {
		vi := victims[i]
		if vi.comm != "" && !seen[vi.comm] {
			seen[vi.comm] = true
			names = append(names, vi.comm)
		}
		anyMemcg = anyMemcg || vi.memcg
	}
	if len(victims) > 0 {
		last = victims[len(victims)-1]
	}
	// A victim the issue names comes first, and its cgroup and pid are the
	// finding's: other processes killed since (a batch job, a test) must
	// not hide the one the operator asks about.
	for i := len(victims) - 1; i >= 0; i-- {
		if v.issueNames(victims[i].comm) {
			last = victims[i]
			break
		}
	}
	slices.SortStableFunc(names, func(a, b string) int {
		return cmp.Compare(rank(v.issueNames(b)), rank(v.issueNames(a)))
	})
	cgroup := last.cgroup
	if cgroup == "" && len(cgs) > 0 {
		cgroup = cgs[0]
	}
	o.set("comm", last.comm)
	o.set("pid", last.pid)
	o.set("cgroup", cgroup)
	switch {
	case len(names) > 0 && cgroup != "":
		o.title = fmt.Sprintf("OOM killer killed %s in cgroup %s", joinMax(names, 3), cgroup)
		lim := ""
		for _, cg := range f.Cgroups {
			if cg.Path == cgroup && cg.MemoryLimitBytes > 0 {
				lim = bytesStr(cg.MemoryLimitBytes)
			}
		}
		if lim == "" && limit != "" {
			lim = limit + "kB"
		}
		if lim != "" {
			o.rootCause = fmt.Sprintf("%s reached the memory limit of its cgroup %s (%s), and the kernel's OOM killer killed it there.", joinMax(names, 3), cgroup, lim)
		} else {
			o.rootCause = fmt.Sprintf("%s ran out of memory in cgroup %s, and the kernel's OOM killer killed it.", joinMax(names, 3), cgroup)
		}
		o.fix = []string{
			fmt.Sprintf("Check the limit and the OOM events: cat /sys/fs/cgroup%s/memory.max /sys/fs/cgroup%s/memory.events", cgroup, cgroup),
			"Raise the limit (systemd MemoryMax=, memory.max) if the process needs more",
			"Otherwise find why it grows (a leak, an unbounded cache, too many workers)",
		}
	case len(names) > 0 && anyMemcg:
		o.title = fmt.Sprintf("OOM killer killed %s at a memory cgroup's limit", joinMax(names, 3))
		o.rootCause = fmt.Sprintf("%s reached the memory limit of its cgroup (a service's MemoryMax=, a container's limit), and the kernel's OOM killer killed it there; the host itself may have memory to spare.", joinMax(names, 3))
		if limit != "" {
			o.rootCause += fmt.Sprintf(" The kernel reported the limit as %skB.", limit)
		}
		o.fix = []string{
			"Find the cgroup and its limit: dmesg -T | grep -E 'oom-kill:|memory: usage'",
			"Raise the limit (systemd MemoryMax=, memory.max, the container's memory limit) if the process needs more",
			"Otherwise find why it grows (a leak, an unbounded cache, too many workers)",
		}
	case len(names) > 0:
		o.title = "OOM killer killed " + joinMax(names, 3)
		o.rootCause = fmt.Sprintf("The host ran out of memory and the kernel's OOM killer killed %s to free it.", joinMax(names, 3))
		o.fix = []string{
			"Find what used the memory when it happened: dmesg -T | grep -A 40 'invoked oom-killer'",
			"Limit the culprit (systemd MemoryMax=) or fix its growth; add memory or swap if the load is legitimate",
		}
	default:
		o.title = "The OOM killer has killed processes"
		o.rootCause = "The kernel ran out of memory (on the host or in a cgroup) and killed processes; the kernel log no longer says which."
		o.fix = []string{"Look for 'Killed process' in older kernel logs (journalctl -k) to see the victims", "Watch memory use and set limits on the services that grow"}
		o.conf = 1
	}
}

func ageNote(l logLine) string {
	if !l.ageKnown {
		return "kernel: "
	}
	return fmt.Sprintf("kernel, %s ago: ", roundAge(l.age))
}

func roundAge(d time.Duration) time.Duration {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute)
	case d >= time.Minute:
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// rank orders true before false in a descending comparison.
func rank(b bool) int {
	if b {
		return 1
	}
	return 0
}
