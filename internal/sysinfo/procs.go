package sysinfo

import (
	"bytes"
	"cmp"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of the tick counts in /proc/[pid]/stat. The kernel
// reports them in USER_HZ, which is 100 on every Linux architecture
// whatever CONFIG_HZ is (the value sysconf(_SC_CLK_TCK) returns).
const userHZ = 100

const (
	maxCmdline = 256
	// cmdlineRead is how much of a command line is read before redaction:
	// more than is kept, so that a secret cut at maxCmdline is still seen
	// whole by the redactor.
	cmdlineRead = 4096
)

// procDetail is what is read once per process, during the interval.
type procDetail struct {
	uid     uint32
	uidOK   bool
	openFDs int
	fdLimit uint64
}

// procDetails reads owner, open descriptors and the open-files limit of
// every process of the first sample.
func (c *collector) procDetails(procs map[int]procStat) map[int]*procDetail {
	live := c.liveProcfs()
	out := make(map[int]*procDetail, len(procs))
	for pid, p := range procs {
		out[pid] = c.procDetail(pid, p.Kernel, live)
	}
	return out
}

// liveProcfs tells whether Root's /proc is the kernel's (and not a
// fixture tree), where the size of /proc/[pid]/fd is the descriptor count.
func (c *collector) liveProcfs() bool {
	var st unix.Statfs_t
	return unix.Statfs(c.path("/proc"), &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}

func (c *collector) procDetail(pid int, kernel, live bool) *procDetail {
	d := &procDetail{}
	dir := c.path("/proc/" + strconv.Itoa(pid))
	if st, err := os.Stat(dir); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			d.uid, d.uidOK = sys.Uid, true
		}
	}
	if kernel {
		return d
	}
	d.openFDs = countFDs(dir+"/fd", live)
	if d.openFDs > 0 {
		if b, err := os.ReadFile(dir + "/limits"); err == nil {
			d.fdLimit, _ = parseNoFileLimit(b)
		}
	}
	return d
}

// countFDs counts a process's open descriptors. Since Linux 6.2 the size
// of the fd directory is that count, which saves listing it; before, the
// size is 0 and the directory is listed.
func countFDs(dir string, live bool) int {
	if live {
		if st, err := os.Stat(dir); err == nil && st.Size() > 0 {
			return int(st.Size())
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(1024)
		n += len(names)
		if err != nil || len(names) == 0 {
			return n
		}
	}
}

// processes fills the process tables and the task counts from the two
// samples.
func (c *collector) processes(f *Facts, a, b sample, details map[int]*procDetail, elapsed time.Duration) {
	if b.procs == nil {
		return
	}
	secs := elapsed.Seconds()
	type row struct {
		pid int
		p   procStat
		cpu float64
	}
	rows := make([]row, 0, len(b.procs))
	for pid, p := range b.procs {
		r := row{pid: pid, p: p}
		if old, ok := a.procs[pid]; ok && old.StartTime == p.StartTime && secs > 0 {
			r.cpu = 100 * float64(sub(old.Ticks, p.Ticks)) / userHZ / secs
		}
		rows = append(rows, r)
		f.Limits.Tasks += uint64(p.Threads)
	}
	f.Limits.Processes = uint64(len(rows))

	live := c.liveProcfs()
	detail := func(pid int, p procStat) *procDetail {
		if d, ok := details[pid]; ok {
			return d
		}
		d := c.procDetail(pid, p.Kernel, live)
		details[pid] = d
		return d
	}
	pageSize := uint64(os.Getpagesize())
	build := func(r row) Process {
		d := detail(r.pid, r.p)
		return Process{
			PID:        r.pid,
			Comm:       r.p.Comm,
			Cmdline:    c.cmdline(r.pid, r.p),
			User:       c.userName(d),
			State:      r.p.State,
			CPUPercent: r.cpu,
			RSSBytes:   r.p.RSSPages * pageSize,
			Threads:    r.p.Threads,
			OpenFDs:    d.openFDs,
			FDLimit:    d.fdLimit,
		}
	}

	byCPU := slices.DeleteFunc(slices.Clone(rows), func(r row) bool { return r.cpu <= 0 })
	slices.SortFunc(byCPU, func(x, y row) int {
		return cmp.Or(cmp.Compare(y.cpu, x.cpu), cmp.Compare(x.pid, y.pid))
	})
	for _, r := range byCPU[:min(maxTop, len(byCPU))] {
		f.TopCPU = append(f.TopCPU, build(r))
	}

	byRSS := slices.DeleteFunc(slices.Clone(rows), func(r row) bool { return r.p.RSSPages == 0 })
	slices.SortFunc(byRSS, func(x, y row) int {
		return cmp.Or(cmp.Compare(y.p.RSSPages, x.p.RSSPages), cmp.Compare(x.pid, y.pid))
	})
	for _, r := range byRSS[:min(maxTop, len(byRSS))] {
		f.TopMemory = append(f.TopMemory, build(r))
	}

	var heavy []row
	for _, r := range rows {
		if d, ok := details[r.pid]; ok && d.fdLimit > 0 && uint64(d.openFDs)*2 > d.fdLimit {
			heavy = append(heavy, r)
		}
	}
	ratio := func(r row) float64 { d := details[r.pid]; return float64(d.openFDs) / float64(d.fdLimit) }
	slices.SortFunc(heavy, func(x, y row) int {
		return cmp.Or(cmp.Compare(ratio(y), ratio(x)), cmp.Compare(x.pid, y.pid))
	})
	for _, r := range heavy[:min(maxTop, len(heavy))] {
		f.FDHeavy = append(f.FDHeavy, build(r))
	}

	// TopIO: the storage bytes and block I/O waits of each process over
	// the interval; a PID reused in between (another start time) has no
	// rate.
	type ioRow struct {
		row
		rates ioRates
	}
	var ios []ioRow
	for _, r := range rows {
		old, ok := a.procs[r.pid]
		x, okA := a.ios[r.pid]
		y, okB := b.ios[r.pid]
		if !ok || !okA || !okB || old.StartTime != r.p.StartTime || secs <= 0 {
			continue
		}
		rt := ioRates{
			readBytes:  float64(sub(x.ReadBytes, y.ReadBytes)) / secs,
			writeBytes: float64(sub(x.WriteBytes, y.WriteBytes)) / secs,
			readCalls:  float64(sub(x.Syscr, y.Syscr)) / secs,
			writeCalls: float64(sub(x.Syscw, y.Syscw)) / secs,
			delay:      100 * float64(sub(old.BlkioTicks, r.p.BlkioTicks)) / userHZ / secs,
		}
		if rt.readBytes+rt.writeBytes > 0 || rt.delay > 0 {
			ios = append(ios, ioRow{r, rt})
		}
	}
	slices.SortFunc(ios, func(x, y ioRow) int {
		return cmp.Or(cmp.Compare(y.rates.readBytes+y.rates.writeBytes, x.rates.readBytes+x.rates.writeBytes),
			cmp.Compare(y.rates.delay, x.rates.delay), cmp.Compare(x.pid, y.pid))
	})
	for _, r := range ios[:min(maxTop, len(ios))] {
		p := build(r.row)
		p.ReadBytesPerSec, p.WriteBytesPerSec = r.rates.readBytes, r.rates.writeBytes
		p.ReadCallsPerSec, p.WriteCallsPerSec = r.rates.readCalls, r.rates.writeCalls
		p.IODelayPercent = r.rates.delay
		p.SyncFiles = c.syncFiles(r.pid)
		f.TopIO = append(f.TopIO, p)
	}
}

type ioRates struct {
	readBytes, writeBytes, readCalls, writeCalls, delay float64
}

const (
	// maxSyncFiles bounds the synchronous files named per process, and
	// maxFdinfo the descriptors looked at to find them: a database with
	// thousands of open files must not make Collect slow.
	maxSyncFiles = 4
	maxFdinfo    = 256
)

// syncFiles lists files pid holds open with O_SYNC, O_DSYNC or O_DIRECT:
// every write to them waits for the device (or bypasses the page cache),
// which is what makes a process's I/O synchronous.
func (c *collector) syncFiles(pid int) []string {
	dir := c.path("/proc/" + strconv.Itoa(pid))
	d, err := os.Open(dir + "/fdinfo")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(maxFdinfo)
	d.Close()
	slices.SortFunc(names, func(x, y string) int {
		a, _ := strconv.Atoi(x)
		b, _ := strconv.Atoi(y)
		return cmp.Compare(a, b)
	})
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		b, err := os.ReadFile(dir + "/fdinfo/" + n)
		if err != nil {
			continue
		}
		flags, err := parseFdinfoFlags(b)
		if err != nil {
			continue
		}
		kind := syncKind(flags)
		if kind == "" {
			continue
		}
		target, err := os.Readlink(dir + "/fd/" + n)
		// Sockets, pipes and anonymous inodes have no path; O_DIRECT on
		// them says nothing about storage.
		if err != nil || !strings.HasPrefix(target, "/") {
			continue
		}
		s := truncate(c.opts.Redact(target), maxCmdline) + " (" + kind + ")"
		if seen[s] {
			continue
		}
		seen[s] = true
		if out = append(out, s); len(out) == maxSyncFiles {
			break
		}
	}
	return out
}

// syncKind names the synchronous-I/O open flags set in flags ("" for
// none). The values are the architecture's (O_DIRECT differs between
// x86 and arm64).
func syncKind(flags uint64) string {
	var k []string
	switch {
	case flags&unix.O_SYNC == unix.O_SYNC:
		k = append(k, "O_SYNC")
	case flags&unix.O_DSYNC != 0:
		k = append(k, "O_DSYNC")
	}
	if flags&unix.O_DIRECT != 0 {
		k = append(k, "O_DIRECT")
	}
	return strings.Join(k, "|")
}

// cmdline returns the redacted, bounded command line; kernel threads and
// processes with an empty one (zombies) show "[comm]" as ps does.
func (c *collector) cmdline(pid int, p procStat) string {
	fallback := "[" + p.Comm + "]"
	if p.Kernel {
		return fallback
	}
	fh, err := os.Open(c.path("/proc/" + strconv.Itoa(pid) + "/cmdline"))
	if err != nil {
		return fallback
	}
	defer fh.Close()
	b, _ := io.ReadAll(io.LimitReader(fh, cmdlineRead))
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return fallback
	}
	s := strings.ToValidUTF8(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), "?")
	return truncate(c.opts.Redact(s), maxCmdline)
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func (c *collector) userName(d *procDetail) string {
	if !d.uidOK {
		return ""
	}
	c.usersOnce.Do(c.loadUsers)
	if name, ok := c.users[d.uid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(d.uid), 10)
}

// loadUsers reads /etc/passwd once: os/user without cgo reads the whole
// file for every lookup.
func (c *collector) loadUsers() {
	c.users = make(map[uint32]string)
	b, err := c.read("/etc/passwd")
	if err != nil {
		return
	}
	for line := range bytes.Lines(b) {
		fields := strings.Split(strings.TrimSpace(string(line)), ":")
		if len(fields) < 3 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		uid, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil {
			continue
		}
		if _, dup := c.users[uint32(uid)]; !dup {
			c.users[uint32(uid)] = fields[0]
		}
	}
}
