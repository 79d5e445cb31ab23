package offline

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// Processes that wait on their own I/O. A disk can be far from saturated
// (a fast SSD or a virtual disk with a host cache behind it) and still be
// what a program spends its time waiting for: every synchronous write
// (O_SYNC, O_DSYNC, fsync per write) is a round trip to the device, and
// a reader that misses the cache shares the device with whoever writes.
// These checks read who waits, how long and on which disk from the
// fileio and biolatency traces and the facts' per-process I/O, whatever
// the disk's utilisation.

// ioCall is one process's file I/O in a fileio trace, on files that live
// on storage (not sockets, pipes, /proc, /sys, tmpfs).
type ioCall struct {
	pid, comm string
	secs      float64
	// Calls, bytes and the time spent inside them, nanoseconds.
	reads, writes         float64
	readBytes, writeBytes float64
	readNs, writeNs       float64
	// The files by bytes, and the disk the busiest one lives on (from
	// the facts' mounts).
	readFiles, writeFiles []string
	readDisk, writeDisk   string
}

func (c *ioCall) readBusy() float64  { return c.readNs / 1e9 / c.secs }
func (c *ioCall) writeBusy() float64 { return c.writeNs / 1e9 / c.secs }
func (c *ioCall) readMeanUS() float64 {
	if c.reads == 0 {
		return 0
	}
	return c.readNs / c.reads / 1000
}
func (c *ioCall) writeMeanUS() float64 {
	if c.writes == 0 {
		return 0
	}
	return c.writeNs / c.writes / 1000
}

// bioUse is what one process submitted to one disk in a biolatency
// trace: requests, bytes and the device time they took, per direction.
type bioUse struct {
	disk                           string
	readReqs, readBytes, readUS    float64
	writeReqs, writeBytes, writeUS float64
	secs                           float64
}

// pseudoPrefixes hold files that are not on storage (or block forever
// by design: /proc/kmsg, trace_pipe).
var pseudoPrefixes = []string{"/proc/", "/sys/", "/dev/", "/run/", "anon_inode:", "socket:", "pipe:"}

// storageFile reports whether a fileio row is I/O on storage, and the
// disk it lives on when the facts' mounts tell ("" when they do not).
func storageFile(v *view, typ, path string) (bool, string) {
	switch typ {
	case "block":
		if d, ok := strings.CutPrefix(path, "/dev/"); ok {
			return true, diskOfDevice(d)
		}
		return true, ""
	case "file":
	default:
		return false, ""
	}
	if hasPrefixAny(path, pseudoPrefixes) {
		return false, ""
	}
	if !strings.HasPrefix(path, "/") {
		return true, "" // a truncated or unresolved path: no mount to look up
	}
	m := v.mountOf(path)
	if m == nil {
		return true, ""
	}
	switch m.Type {
	case "tmpfs", "ramfs", "devtmpfs", "proc", "sysfs", "cgroup", "cgroup2":
		return false, ""
	}
	if d, ok := strings.CutPrefix(m.Device, "/dev/"); ok {
		return true, diskOfDevice(d)
	}
	return true, ""
}

// diskOfDevice names the disk of a device node ("vda1" is on "vda").
func diskOfDevice(d string) string {
	if p := partitionRE.FindStringSubmatch(d); p != nil {
		return p[1]
	}
	if p := nvmePartitionRE.FindStringSubmatch(d); p != nil {
		return p[1]
	}
	return d
}

// fileioCalls reads every fileio trace's per process and file table.
// When several traces saw a process (the sweep's and one filtered to it),
// the one with the most calls counts.
func fileioCalls(v *view) map[string]*ioCall {
	out := map[string]*ioCall{}
	for _, tb := range v.tables("fileio", "I/O by process and file") {
		secs := tb.res.Seconds()
		if secs <= 0 {
			continue
		}
		this := map[string]*ioCall{}
		type fileBytes struct {
			path  string
			bytes float64
			disk  string
		}
		rf, wf := map[string][]fileBytes{}, map[string][]fileBytes{}
		for _, r := range tb.rows {
			pid, comm := tb.get(r, "pid"), tb.get(r, "comm")
			path := tb.get(r, "file")
			ok, disk := storageFile(v, tb.get(r, "type"), path)
			if !ok || pid == "" {
				continue
			}
			c := this[pid]
			if c == nil {
				c = &ioCall{pid: pid, comm: comm, secs: secs}
				this[pid] = c
			}
			reads, writes := tb.num(r, "reads"), tb.num(r, "writes")
			c.reads += reads
			c.writes += writes
			c.readBytes += tb.num(r, "read_bytes")
			c.writeBytes += tb.num(r, "write_bytes")
			c.readNs += reads * tb.num(r, "avg_read_ns")
			c.writeNs += writes * tb.num(r, "avg_write_ns")
			if reads > 0 {
				rf[pid] = append(rf[pid], fileBytes{path, tb.num(r, "read_bytes") + reads, disk})
			}
			if writes > 0 {
				wf[pid] = append(wf[pid], fileBytes{path, tb.num(r, "write_bytes") + writes, disk})
			}
		}
		order := func(list []fileBytes) ([]string, string) {
			slices.SortStableFunc(list, func(a, b fileBytes) int { return cmp.Compare(b.bytes, a.bytes) })
			var paths []string
			for _, f := range list {
				paths = append(paths, f.path)
			}
			if len(list) == 0 {
				return nil, ""
			}
			return paths, list[0].disk
		}
		for pid, c := range this {
			c.readFiles, c.readDisk = order(rf[pid])
			c.writeFiles, c.writeDisk = order(wf[pid])
			if old := out[pid]; old == nil || c.reads+c.writes > old.reads+old.writes {
				out[pid] = c
			}
		}
	}
	return out
}

// bioUses reads biolatency's submitters: per pid and disk.
func bioUses(v *view) map[string][]*bioUse {
	out := map[string][]*bioUse{}
	for _, tb := range v.tables("biolatency", "top processes by I/O (submitter)") {
		secs := tb.res.Seconds()
		for _, r := range tb.rows {
			pid, disk := tb.get(r, "pid"), tb.get(r, "disk")
			var u *bioUse
			for _, x := range out[pid] {
				if x.disk == disk {
					u = x
				}
			}
			if u == nil {
				u = &bioUse{disk: disk, secs: secs}
				out[pid] = append(out[pid], u)
			}
			n, b, us := tb.num(r, "count"), tb.num(r, "bytes"), tb.num(r, "count")*tb.num(r, "avg_us")
			switch tb.get(r, "op") {
			case "read":
				u.readReqs, u.readBytes, u.readUS = u.readReqs+n, u.readBytes+b, u.readUS+us
			case "write":
				u.writeReqs, u.writeBytes, u.writeUS = u.writeReqs+n, u.writeBytes+b, u.writeUS+us
			}
		}
	}
	return out
}

// mainBio is the disk a process read (or wrote) the most bytes on.
func mainBio(uses []*bioUse, write bool) *bioUse {
	var best *bioUse
	for _, u := range uses {
		b := u.readBytes
		if write {
			b = u.writeBytes
		}
		if b > 0 && (best == nil || b > bestBytes(best, write)) {
			best = u
		}
	}
	return best
}

func bestBytes(u *bioUse, write bool) float64 {
	if write {
		return u.writeBytes
	}
	return u.readBytes
}

// diskWrites sums the bytes written to each disk in the biolatency
// traces (all submitters, kernel flushers included).
func diskWrites(v *view) map[string]float64 {
	out := map[string]float64{}
	for _, tb := range v.tables("biolatency", "I/O by disk and operation") {
		for _, r := range tb.rows {
			if tb.get(r, "op") == "write" {
				out[tb.get(r, "disk")] += tb.num(r, "bytes")
			}
		}
	}
	return out
}

// ioWaiter is a process that waits on its I/O, with what shows it.
type ioWaiter struct {
	call *ioCall
	bio  *bioUse
	fact *sysinfo.Process
	disk string
	// dstate: seen in uninterruptible sleep (ps, or the facts).
	dstate bool
	// how says what makes its writes synchronous ("O_DSYNC", "it submits
	// its own block writes") or shows them waiting (D state); empty for
	// readers.
	how string
}

// synchronous: the writes are proven synchronous, not only slow.
func (p *ioWaiter) synchronous() bool { return p.how != "" && p.how != howDState }

const howDState = "waits in D state"

func latency(us float64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 10_000:
		return fmt.Sprintf("%.1f ms", us/1000)
	}
	return fmt.Sprintf("%.0f ms", us/1000)
}

func checkSyncIO(v *view, fs *findings) {
	calls := fileioCalls(v)
	if len(calls) == 0 {
		return
	}
	bios := bioUses(v)
	facts := map[string]*sysinfo.Process{}
	for i := range v.f.TopIO {
		facts[strconv.Itoa(v.f.TopIO[i].PID)] = &v.f.TopIO[i]
	}
	blocked := map[string]bool{}
	for _, d := range dstates(v) {
		blocked[d.pid] = true
	}
	for _, p := range v.f.TopIO {
		if strings.HasPrefix(p.State, "D") {
			blocked[strconv.Itoa(p.PID)] = true
		}
	}
	skip := func(comm string) bool {
		return comm == "" || v.own[comm] || strings.HasPrefix(comm, "kworker") || strings.HasPrefix(comm, "jbd2")
	}

	var writers, readers []*ioWaiter
	pids := make([]string, 0, len(calls))
	for pid := range calls {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	for _, pid := range pids {
		c := calls[pid]
		if skip(c.comm) {
			continue
		}
		fact := facts[pid]
		if c.writeBusy()*100 >= SyncIOBusyPercent && c.writeMeanUS() >= SyncWriteMeanUS {
			p := &ioWaiter{call: c, bio: mainBio(bios[pid], true), fact: fact, dstate: blocked[pid]}
			switch {
			case fact != nil && syncFlags(fact, c.writeFiles) != "":
				p.how = syncFlags(fact, c.writeFiles)
			case p.bio != nil:
				p.how = "submits its own block writes"
			case p.dstate:
				p.how = howDState
			}
			p.disk = c.writeDisk
			if p.bio != nil {
				p.disk = p.bio.disk
			}
			if p.how != "" {
				writers = append(writers, p)
			}
		}
		if c.readBusy()*100 >= SyncIOBusyPercent && c.readMeanUS() >= IOReadMeanUS {
			p := &ioWaiter{call: c, bio: mainBio(bios[pid], false), fact: fact, dstate: blocked[pid]}
			storage := p.bio != nil || p.dstate || (fact != nil && (fact.ReadBytesPerSec > 0 || strings.Contains(syncFlags(fact, c.readFiles), "O_DIRECT")))
			p.disk = c.readDisk
			if p.bio != nil {
				p.disk = p.bio.disk
			}
			if storage {
				readers = append(readers, p)
			}
		}
	}
	slices.SortStableFunc(writers, func(a, b *ioWaiter) int { return cmp.Compare(b.call.writeNs, a.call.writeNs) })
	slices.SortStableFunc(readers, func(a, b *ioWaiter) int { return cmp.Compare(b.call.readNs, a.call.readNs) })

	written := diskWrites(v)
	byDisk := map[string]*finding{}
	for _, w := range writers {
		f := fs.get("io.sync", w.call.comm, sevWarning)
		describeSyncWriter(v, f, w, written)
		if _, ok := byDisk[w.disk]; !ok && w.disk != "" {
			byDisk[w.disk] = f
		}
	}

	// Readers that wait on a disk a synchronous writer keeps busy: one
	// finding per disk, the writer's own finding folded into it.
	type contention struct {
		disk    string
		writer  *ioWaiter
		readers []*ioWaiter
	}
	var cs []*contention
	for _, r := range readers {
		if r.disk == "" {
			continue
		}
		var w *ioWaiter
		for _, x := range writers {
			if x.disk == r.disk && x.call.pid != r.call.pid {
				w = x
				break
			}
		}
		if w == nil {
			continue
		}
		var c *contention
		for _, x := range cs {
			if x.disk == r.disk {
				c = x
			}
		}
		if c == nil {
			c = &contention{disk: r.disk, writer: w}
			cs = append(cs, c)
		}
		if len(c.readers) < 3 {
			c.readers = append(c.readers, r)
		}
	}
	for _, c := range cs {
		f := fs.get("io.contention", c.disk, sevWarning)
		describeContention(v, f, c.disk, c.writer, c.readers, written)
		if wf := fs.find("io.sync", c.writer.call.comm); wf != nil {
			fs.absorb(f, wf)
		}
		byDisk[c.disk] = f
	}

	// A saturated or slow disk whose load these processes explain is
	// the same problem: its readings support the finding that names who
	// causes it.
	for disk, f := range byDisk {
		for _, d := range []string{disk, ""} {
			if ds := fs.find("disk.saturation", d); ds != nil {
				fs.absorb(f, ds)
				if d != "" {
					f.rootCause += " " + strings.TrimSuffix(ds.title, ".") + "."
				}
			}
		}
	}
}

// syncFlags are the synchronous-I/O flags (O_DSYNC, O_SYNC, O_DIRECT)
// with which a process holds open any of files, joined.
func syncFlags(p *sysinfo.Process, files []string) string {
	var out []string
	for _, s := range p.SyncFiles {
		i := strings.LastIndex(s, " (")
		if i < 0 || !strings.HasSuffix(s, ")") || !slices.Contains(files, s[:i]) {
			continue
		}
		for _, k := range strings.Split(s[i+2:len(s)-1], "|") {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	return strings.Join(out, ", ")
}

// ioEvidence adds what shows p waiting on its I/O: the fileio time,
// the block requests, the facts' rates and open flags, D state.
func ioEvidence(f *finding, p *ioWaiter, write bool) {
	c := p.call
	who := fmt.Sprintf("%s (pid %s)", c.comm, c.pid)
	if write {
		f.add("trace fileio", "fileio: %s spent %.1f s in %.0f write calls during the %.1f s trace (%.1f threads waiting on average), %s per write, %s written to %s",
			who, c.writeNs/1e9, c.writes, c.secs, c.writeBusy(), latency(c.writeMeanUS()), bytesStr(uint64(c.writeBytes)), joinMax(c.writeFiles, 2))
	} else {
		f.add("trace fileio", "fileio: %s spent %.1f s in %.0f read calls during the %.1f s trace (%s of its time), %s per read, %s read from %s",
			who, c.readNs/1e9, c.reads, c.secs, pct(100*c.readBusy()), latency(c.readMeanUS()), bytesStr(uint64(c.readBytes)), joinMax(c.readFiles, 2))
	}
	if b := p.bio; b != nil {
		if write && b.writeReqs > 0 {
			f.add("trace biolatency", "biolatency: %s submitted %.0f write requests (%s) to %s itself, %s each at the device",
				who, b.writeReqs, bytesStr(uint64(b.writeBytes)), b.disk, latency(b.writeUS/b.writeReqs))
		}
		if !write && b.readReqs > 0 {
			f.add("trace biolatency", "biolatency: %s's %.0f read requests (%s) to %s took %s each at the device",
				who, b.readReqs, bytesStr(uint64(b.readBytes)), b.disk, latency(b.readUS/b.readReqs))
		}
	}
	if fp := p.fact; fp != nil {
		if write && fp.WriteBytesPerSec > 0 {
			f.add("/proc/<pid>/io", "%s wrote %s/s to storage in %.0f write calls/s", who, bytesStr(uint64(fp.WriteBytesPerSec)), fp.WriteCallsPerSec)
		}
		if !write && fp.ReadBytesPerSec > 0 {
			f.add("/proc/<pid>/io", "%s read %s/s from storage in %.0f read calls/s", who, bytesStr(uint64(fp.ReadBytesPerSec)), fp.ReadCallsPerSec)
		}
		if fp.IODelayPercent > 0 {
			f.add("/proc/<pid>/stat", "%s's threads waited for block I/O %s of the time (delay accounting)", who, pct(fp.IODelayPercent))
		}
		if len(fp.SyncFiles) > 0 {
			f.add("/proc/<pid>/fdinfo", "%s holds open %s", who, joinMax(fp.SyncFiles, 3))
		}
	}
	if p.dstate {
		f.add("ps", "%s seen in uninterruptible sleep (D state), waiting for I/O", who)
	}
}

// hostIOWaits adds the host-wide signs of tasks waiting on I/O that are
// too weak for a finding of their own but support one.
func hostIOWaits(v *view, f *finding) {
	x := v.f
	if x.PSI != nil && x.PSI.IO.SomeAvg10 >= IOEvidencePSI {
		f.add("psi", "I/O pressure: some task waited for I/O %s of the last 10 s (some avg10), all tasks %s (full avg10)", pct(x.PSI.IO.SomeAvg10), pct(x.PSI.IO.FullAvg10))
	}
	if cpuMeasured(x.CPU) && x.CPU.Blocked > 0 {
		f.add("/proc/stat", "%s in uninterruptible sleep (procs_blocked), iowait %s", plural(x.CPU.Blocked, "task", "tasks"), pct(x.CPU.IOWait))
	}
}

func describeSyncWriter(v *view, f *finding, w *ioWaiter, written map[string]float64) {
	c := w.call
	disk := orDefault(w.disk, "its disk")
	f.set("comm", c.comm)
	f.set("pid", c.pid)
	f.set("disk", w.disk)
	ioEvidence(f, w, true)
	share := ""
	if total := written[w.disk]; w.bio != nil && total > 0 {
		share = fmt.Sprintf(" (%s of the bytes written to %s)", pct(min(100, 100*w.bio.writeBytes/total)), w.disk)
		f.add("trace biolatency", "biolatency: %s submitted %s of the %s written to %s during the trace", c.comm, pct(min(100, 100*w.bio.writeBytes/total)), bytesStr(uint64(total)), w.disk)
	}
	hostIOWaits(v, f)
	rate := bytesStr(uint64(c.writeBytes/c.secs)) + "/s"
	waiting := fmt.Sprintf("(%.1f of them inside write() on average, %s per write)", c.writeBusy(), latency(c.writeMeanUS()))
	if !w.synchronous() {
		f.title = fmt.Sprintf("%s (pid %s) waits on its writes to %s: %s, %s per write", c.comm, c.pid, disk, rate, latency(c.writeMeanUS()))
		f.rootCause = fmt.Sprintf("%s writes to %s faster than the disk takes the data: its threads sit in write() in uninterruptible sleep %s, throttled until the disk catches up. At %s%s it is what keeps %s busy, and every other process using %s shares the device with it.",
			c.comm, disk, waiting, rate, share, disk, disk)
	} else {
		f.title = fmt.Sprintf("Heavy synchronous writes to %s by %s (pid %s): %s, %s per write", disk, c.comm, c.pid, rate, latency(c.writeMeanUS()))
		how := "submitting its own block writes (O_SYNC, O_DSYNC or fsync after each write)"
		if w.how != "submits its own block writes" {
			how = "with " + w.how + " files"
		}
		f.rootCause = fmt.Sprintf("%s writes synchronously to %s, %s: each write returns only once the device has the data, so its threads spend their time waiting for %s %s rather than working. At %s%s it is what keeps %s busy, and every other process using %s shares the device with it.",
			c.comm, disk, how, disk, waiting, rate, share, disk, disk)
	}
	f.fix = []string{
		"Check whether every write must be durable on its own: batch the writes and sync once per batch (group commit) instead of O_DSYNC/fsync per write",
		fmt.Sprintf("Lower its I/O priority or cap it: ionice -c2 -n7 -p %s, or IOWeight=/IOWriteBandwidthMax= on its systemd unit", c.pid),
		"Give it a disk of its own, or faster storage, if the load is legitimate",
		fmt.Sprintf("Watch it: nannyagent trace run fileio,biolatency --comm %s --duration 10s", c.comm),
	}
	f.conf = 1
}

func describeContention(v *view, f *finding, disk string, w *ioWaiter, readers []*ioWaiter, written map[string]float64) {
	f.set("disk", disk)
	f.set("comm", w.call.comm)
	f.set("pid", w.call.pid)
	var names []string
	for _, r := range readers {
		names = append(names, r.call.comm)
		ioEvidence(f, r, false)
		if v.issueNames(r.call.comm) {
			f.add(issueSource, "the issue names %s", r.call.comm)
		}
	}
	f.set("reader", strings.Join(names, ","))
	who := joinMax(names, 3)
	verb := "waits"
	if len(names) > 1 {
		verb = "wait"
	}
	// Reads that mostly complete fast while a few take many times longer
	// queue behind other requests: the sign of contention at the device.
	queued := ""
	if h, ok := v.histogram("biolatency", "block I/O latency: "+disk+" read"); ok && h.Count >= ContentionMinReads && h.P50 > 0 &&
		float64(h.P99) >= ContentionTailRatio*float64(h.P50) && float64(h.P99) >= ContentionTailUS {
		queued = fmt.Sprintf("reads on %s: median %s, p99 %s over %d requests", disk, latency(float64(h.P50)), latency(float64(h.P99)), h.Count)
		f.add("trace biolatency", "biolatency: %s (p99 %.0f× the median: reads queue behind other requests)", queued, float64(h.P99)/float64(h.P50))
	}
	describeSyncWriter(v, f, w, written)
	c := w.call
	rate := bytesStr(uint64(c.writeBytes/c.secs)) + "/s"
	writes := "synchronous writes"
	if !w.synchronous() {
		writes = "writes"
	}
	if queued != "" {
		f.title = fmt.Sprintf("I/O contention on %s: %s's reads queue behind %s's %s (%s)", disk, who, c.comm, writes, rate)
	} else {
		f.title = fmt.Sprintf("I/O contention on %s: %s %s on reads while %s's %s keep it busy (%s)", disk, who, verb, c.comm, writes, rate)
	}
	r := readers[0].call
	f.rootCause = fmt.Sprintf("%s %s on reads from %s (%s spends %s of its time in read(), %s per read), and %s keeps the same disk busy with %s at %s: every read shares the device's queue and bandwidth with those writes, and each of %s's writes holds a thread until the device has it.",
		who, verb, disk, r.comm, pct(100*r.readBusy()), latency(r.readMeanUS()), c.comm, writes, rate, c.comm)
	if queued != "" {
		f.rootCause += " The read latency shows the queueing: " + queued + "."
	}
	f.fix = []string{
		fmt.Sprintf("Move %s's writes off %s, or run it when %s is quiet", c.comm, disk, who),
		fmt.Sprintf("Give %s the lower I/O priority: ionice -c3 -p %s (idle class), or IOWeight= lower for its unit than for %s's", c.comm, c.pid, who),
		fmt.Sprintf("Make %s's writes cheaper: sync per batch instead of per write (O_DSYNC/fsync), or cap it with IOWriteBandwidthMax=", c.comm),
		fmt.Sprintf("Confirm: nannyagent trace run biolatency,fileio --duration 10s while %s runs, and again while it is paused", c.comm),
	}
	f.conf = 1
}
