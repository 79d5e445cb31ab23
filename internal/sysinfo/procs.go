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
