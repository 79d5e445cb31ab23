package offline

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// view is what the rules read: the facts, every command output and every
// trace result of the rounds so far, with helpers to read them by name.
type view struct {
	issue  string
	f      *sysinfo.Facts
	cmds   []safeexec.Result
	traces []*catalog.Result
	// failed are the traces that did not run, "runqlat: reason".
	failed []string
	// own are the programs the engine itself ran (their exits and
	// failures in the traces are not the host's problem).
	own map[string]bool
}

func newView(inv *brain.Investigation) *view {
	v := &view{issue: inv.Issue, f: inv.Facts, own: map[string]bool{}}
	if v.f == nil {
		v.f = &sysinfo.Facts{}
	}
	if self := filepath.Base(os.Args[0]); self != "" {
		v.own[comm15(self)] = true
	}
	v.own["nannyagent"] = true
	for _, r := range inv.Rounds {
		for _, c := range r.Commands {
			v.cmds = append(v.cmds, c.Result)
			for _, st := range c.Result.Stages {
				if len(st) > 0 {
					v.own[comm15(filepath.Base(st[0]))] = true
				}
			}
			if len(c.Result.Stages) == 0 {
				if f := strings.Fields(c.Result.Command); len(f) > 0 {
					v.own[comm15(filepath.Base(f[0]))] = true
				}
			}
		}
		for _, t := range r.Traces {
			switch {
			case t.Result != nil:
				v.traces = append(v.traces, t.Result)
			default:
				label := t.Resolution.Entry
				if label == "" {
					label = traceLabel(t.Request)
				}
				why := t.Err
				if why == "" {
					why = t.Resolution.Refused
				}
				if why == "" {
					why = "did not run"
				}
				v.failed = append(v.failed, label+": "+why)
			}
		}
	}
	return v
}

// comm15 is a program name as the kernel keeps it.
func comm15(s string) string {
	if len(s) > 15 {
		return s[:15]
	}
	return s
}

// output returns the results of commands whose line starts with prefix
// (the program and its first arguments), newest first, that ran.
func (v *view) output(prefix string) []safeexec.Result {
	var out []safeexec.Result
	for i := len(v.cmds) - 1; i >= 0; i-- {
		c := v.cmds[i]
		if c.Refused || !strings.HasPrefix(c.Command, prefix) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// results returns the trace results of entry, oldest first.
func (v *view) results(entry string) []*catalog.Result {
	var out []*catalog.Result
	for _, r := range v.traces {
		if r.Entry == entry {
			out = append(out, r)
		}
	}
	return out
}

// ran reports whether a trace of entry produced a result.
func (v *view) ran(entry string) bool { return len(v.results(entry)) > 0 }

// table is one result table read by column name.
type table struct {
	res  *catalog.Result
	cols map[string]int
	rows [][]string
}

func (t table) get(row []string, col string) string {
	i, ok := t.cols[col]
	if !ok || i >= len(row) {
		return ""
	}
	return row[i]
}

func (t table) num(row []string, col string) float64 { return num(t.get(row, col)) }

// tables returns the tables titled title (the samples table included)
// of every result of entry.
func (v *view) tables(entry, title string) []table {
	var out []table
	for _, r := range v.results(entry) {
		all := r.Tables
		if r.Samples != nil {
			all = append(append([]catalog.Table{}, all...), *r.Samples)
		}
		for _, t := range all {
			if t.Title != title {
				continue
			}
			tb := table{res: r, cols: map[string]int{}, rows: t.Rows}
			for i, c := range t.Columns {
				tb.cols[c] = i
			}
			out = append(out, tb)
		}
	}
	return out
}

// histogram returns the histogram titled title of the results of entry
// with the most samples.
func (v *view) histogram(entry, title string) (catalog.Histogram, bool) {
	var best catalog.Histogram
	found := false
	for _, r := range v.results(entry) {
		for _, h := range r.Histograms {
			if h.Title == title && (!found || h.Count > best.Count) {
				best, found = h, true
			}
		}
	}
	return best, found
}

// num reads a table cell; what is not a number is 0.
func num(s string) float64 {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0
	}
	return f
}

// listener is one listening TCP socket, from the facts or `ss -ltnp`.
type listener struct {
	addr         string
	port         int
	recvQ, sendQ int
	comm         string
	pid          int
	source       string
}

var ssUsersRE = regexp.MustCompile(`\(\("([^"]+)",pid=(\d+)`)

// listeners are the facts' listening sockets, merged with the newest
// `ss -ltnp` output: ss has the backlog, the facts the owners (the
// sandbox hides them from ss). ok is false when neither is known.
func (v *view) listeners() ([]listener, bool) {
	var out []listener
	ok := false
	byAddr := map[string]int{}
	for _, l := range v.f.Network.Listeners {
		ok = true
		byAddr[l.Address] = len(out)
		out = append(out, listener{addr: l.Address, port: l.Port, recvQ: int(l.Queued), sendQ: int(l.Backlog), comm: l.Comm, pid: l.PID, source: "/proc/net/tcp"})
	}
	for _, prefix := range []string{"ss -ltnp", "ss -lntp"} {
		res := v.output(prefix)
		if len(res) == 0 || res[0].ExitCode != 0 {
			continue
		}
		ok = true
		for _, line := range strings.Split(res[0].Stdout, "\n") {
			f := strings.Fields(line)
			if len(f) < 5 || f[0] != "LISTEN" {
				continue
			}
			l := listener{addr: f[3], source: "ss"}
			l.recvQ, _ = strconv.Atoi(f[1])
			l.sendQ, _ = strconv.Atoi(f[2])
			if i := strings.LastIndexByte(f[3], ':'); i >= 0 {
				l.port, _ = strconv.Atoi(f[3][i+1:])
			}
			if m := ssUsersRE.FindStringSubmatch(line); m != nil {
				l.comm = m[1]
				l.pid, _ = strconv.Atoi(m[2])
			}
			if i, seen := byAddr[l.addr]; seen {
				if l.comm == "" {
					l.comm, l.pid = out[i].comm, out[i].pid
				}
				out[i] = l
				continue
			}
			byAddr[l.addr] = len(out)
			out = append(out, l)
		}
		break
	}
	return out, ok
}

// logLine is one log message from the facts, dmesg or the journal.
type logLine struct {
	text string
	// age is known for the kernel log of the facts only.
	age      time.Duration
	ageKnown bool
	kernel   bool
	source   string
}

var (
	dmesgStampRE   = regexp.MustCompile(`^\[[^\]]*\]\s*`)
	journalStampRE = regexp.MustCompile(`^(?:[A-Z][a-z]{2} [ \d]\d [\d:]{8}|\d{4}-\d\d-\d\dT[\d:.+-]+)\s+\S+\s+([^:\[]+)(?:\[\d+\])?:\s*`)
)

// logs returns the kernel log of the facts, then lines of dmesg and
// journalctl outputs that are not already there.
func (v *view) logs() []logLine {
	var out []logLine
	seen := map[string]bool{}
	add := func(l logLine) {
		l.text = strings.TrimSpace(l.text)
		if l.text == "" || seen[l.text] {
			return
		}
		seen[l.text] = true
		out = append(out, l)
	}
	for _, k := range v.f.KernelLog {
		add(logLine{text: k.Text, age: k.Age, ageKnown: true, kernel: true, source: "kernel log"})
	}
	for _, r := range v.output("dmesg") {
		for _, line := range strings.Split(r.Stdout, "\n") {
			add(logLine{text: dmesgStampRE.ReplaceAllString(line, ""), kernel: true, source: "kernel log"})
		}
	}
	for _, r := range v.output("journalctl") {
		for _, line := range strings.Split(r.Stdout, "\n") {
			if strings.HasPrefix(line, "-- ") {
				continue
			}
			l := logLine{text: line, source: "journal"}
			if m := journalStampRE.FindStringSubmatch(line); m != nil {
				l.text = line[len(m[0]):]
				l.kernel = m[1] == "kernel"
				if l.kernel {
					l.source = "kernel log"
				}
			}
			add(l)
		}
	}
	return out
}

// issueNames reports whether the issue text names s as a whole word.
func (v *view) issueNames(s string) bool {
	if s == "" || len(s) < 3 {
		return false
	}
	re, err := keywordRE(s)
	if err != nil {
		return false
	}
	return re.MatchString(v.issue)
}

var issuePathRE = regexp.MustCompile(`(?:^|[\s"'(=:,])(/[^\s"'),;]*)`)

// issuePaths are the absolute paths the issue mentions.
func (v *view) issuePaths() []string {
	var out []string
	for _, m := range issuePathRE.FindAllStringSubmatch(v.issue, -1) {
		p := strings.TrimRight(m[1], ".:!?")
		if p != "" {
			out = append(out, filepath.Clean(p))
		}
	}
	return out
}

var issuePortRE = regexp.MustCompile(`(?i)(?:\bport\s*|:)(\d{1,5})\b`)

// issuePorts are the TCP ports the issue mentions ("port 8080", ":443").
func (v *view) issuePorts() []int {
	var out []int
	for _, m := range issuePortRE.FindAllStringSubmatch(v.issue, -1) {
		if p, err := strconv.Atoi(m[1]); err == nil && p > 0 && p < 65536 {
			out = append(out, p)
		}
	}
	return out
}

// mountOf is the filesystem holding path: the longest mount prefix.
func (v *view) mountOf(path string) *sysinfo.Filesystem {
	var best *sysinfo.Filesystem
	for i := range v.f.Filesystems {
		fs := &v.f.Filesystems[i]
		m := fs.Mount
		if path == m || m == "/" || strings.HasPrefix(path, strings.TrimSuffix(m, "/")+"/") {
			if best == nil || len(m) > len(best.Mount) {
				best = fs
			}
		}
	}
	return best
}

// issueNamesMount reports whether a path in the issue lies on mount.
func (v *view) issueNamesMount(mount string) bool {
	for _, p := range v.issuePaths() {
		if fs := v.mountOf(p); fs != nil && fs.Mount == mount {
			return true
		}
	}
	return false
}
