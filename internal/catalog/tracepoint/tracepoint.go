// Package tracepoint is the generic catalog entry for "how often does this
// tracepoint fire, and in which processes": one compiled program, attached at
// run time to any tracepoint the request names, counting hits per process
// in the kernel.
package tracepoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"golang.org/x/sys/unix"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:     "tracepoint",
	Answers:  "how often does a given tracepoint fire, and in which processes",
	Reports:  "hits of the target tracepoint by process (pid, comm) and by command, rate per second",
	Aliases:  []string{"tp", "perf_stat", "tpcount", "tracepoint_count"},
	Keywords: []string{"tracepoint", "trace event", "count events", "how often", "fires"},
	Filters:  []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracefs},
		{Feature: catalog.FeatureTracepoint},
	},
	Attach:      []string{"tracepoint"},
	NeedsTarget: true,
}

// Target is a tracepoint the request names.
type Target struct {
	Category string
	Name     string
}

func (t Target) String() string { return t.Category + ":" + t.Name }

// maxPart bounds each half of a target: real names are far shorter, and a
// bound keeps junk out of error messages and paths.
const maxPart = 128

// ParseTarget accepts "category:name", "tracepoint:category:name" (and
// bpftrace's short "t:category:name") or "category/name". Both halves may
// only hold [a-z0-9_], which is what tracefs uses and what keeps the name
// from ever reaching outside tracefs/events.
func ParseTarget(s string) (Target, error) {
	orig := s
	bad := func(why string) (Target, error) {
		return Target{}, fmt.Errorf("tracepoint target %q: %s (want category:name, e.g. sched:sched_switch or syscalls:sys_enter_openat)", orig, why)
	}
	s = strings.TrimSpace(s)
	for _, prefix := range []string{"tracepoint:", "t:"} {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			s = rest
			break
		}
	}
	sep := ":"
	if !strings.Contains(s, ":") {
		sep = "/"
	}
	parts := strings.Split(s, sep)
	if len(parts) != 2 {
		return bad("not exactly one separator between category and name")
	}
	t := Target{Category: parts[0], Name: parts[1]}
	for _, p := range []struct{ what, v string }{{"category", t.Category}, {"name", t.Name}} {
		if p.v == "" {
			return bad("empty " + p.what)
		}
		if len(p.v) > maxPart {
			return bad(fmt.Sprintf("%s longer than %d characters", p.what, maxPart))
		}
		for _, c := range p.v {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				return bad(fmt.Sprintf("%s may only contain a-z, 0-9 and _ (found %q)", p.what, c))
			}
		}
	}
	return t, nil
}

// checkTarget reports, as an *catalog.UnsupportedError, a tracepoint this
// kernel does not have, saying whether the category exists and which of its
// tracepoints look alike, so that a caller can correct the request.
func checkTarget(t Target) error {
	if catalog.TracepointExists(t.Category + "/" + t.Name) {
		return nil
	}
	unsupported := func(reason string) error {
		return &catalog.UnsupportedError{Entry: Info.Name, Reason: reason}
	}
	dir, err := catalog.EnsureTracefs()
	if err != nil {
		return unsupported(fmt.Sprintf("cannot look up tracepoint %s: %v", t, err))
	}
	ents, err := os.ReadDir(filepath.Join(dir, "events", t.Category))
	if err != nil {
		return unsupported(fmt.Sprintf("tracepoint %s does not exist on this kernel: no category %q in %s/events", t, t.Category, dir))
	}
	reason := fmt.Sprintf("tracepoint %s does not exist on this kernel: category %q has no %q", t, t.Category, t.Name)
	var alike []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() && (strings.Contains(n, t.Name) || strings.Contains(t.Name, n)) {
			alike = append(alike, t.Category+":"+n)
		}
	}
	if len(alike) > 5 {
		alike = alike[:5]
	}
	if len(alike) > 0 {
		reason += " (similar: " + strings.Join(alike, ", ") + ")"
	}
	return unsupported(reason)
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

// objects names only what this entry loads.
type objects struct {
	TpCount *ebpf.Program `ebpf:"tp_count"`
	Counts  *ebpf.Map     `ebpf:"counts"`
	Dropped *ebpf.Map     `ebpf:"dropped"`
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpCount, o.Counts, o.Dropped)
}

type trace struct {
	catalog.Session
	target Target
	objs   objects
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadTracepoint)
	if err != nil {
		return nil, err
	}
	target, err := ParseTarget(p.Target)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint " + target.String()}, target: target}
	t.Objects, t.Collect, t.Count = &t.objs, t.collect, t.count
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("tracepoint: %w", err)
	}
	if err := t.Links.Tracepoint(target.Category, target.Name, t.objs.TpCount); err != nil {
		t.Abort()
		if errors.Is(err, unix.EINVAL) {
			// The id file exists, yet the kernel refuses a tracepoint
			// program: ftrace's own events and kprobe/uprobe events live
			// in the same tracefs tree but are not tracepoints.
			return nil, fmt.Errorf("tracepoint: %w (%s is a trace event BPF tracepoint programs cannot attach to: ftrace-internal, kprobe or uprobe events are not tracepoints)", err, target)
		}
		return nil, fmt.Errorf("tracepoint: %w", err)
	}
	t.Begin()
	return t, nil
}

// count sums the in-kernel counts; it walks the map, which is fine at the
// rate of a progress display.
func (t *trace) count() uint64 {
	a, err := readCounts(t.objs.Counts)
	if err != nil {
		return 0
	}
	return a.total()
}

func (t *trace) collect() (*catalog.Result, error) {
	a, readErr := readCounts(t.objs.Counts)
	dropped, dropErr := catalog.SumPerCPU(t.objs.Dropped, 0)
	a.dropped, a.maxProcs = dropped, t.objs.Counts.MaxEntries()
	return a.result(t.target, t.Params, t.Traced()), errors.Join(readErr, dropErr)
}

// proc is one row of the in-kernel count: a process under one command name
// (an exec changes the name, so a process can have two rows).
type proc struct {
	pid  uint32
	comm string
}

type aggregate struct {
	byProc   map[proc]uint64
	dropped  uint64
	maxProcs uint32 // the count map's size, for the note on dropped hits
}

func readCounts(m *ebpf.Map) (aggregate, error) {
	a := aggregate{byProc: map[proc]uint64{}}
	err := catalog.EachEntry(m, func(key *tracepointTpKey, perCPU *[]uint64) {
		var n uint64
		for _, v := range *perCPU {
			n += v
		}
		a.add(proc{pid: key.Tgid, comm: catalog.CString(key.Comm[:])}, n)
	})
	return a, err
}

func (a *aggregate) add(p proc, n uint64) {
	if n > 0 {
		a.byProc[p] += n
	}
}

func (a *aggregate) total() uint64 {
	var n uint64
	for _, c := range a.byProc {
		n += c
	}
	return n
}

func procLess(x, y proc) bool {
	if x.pid != y.pid {
		return x.pid < y.pid
	}
	return x.comm < y.comm
}

func (a *aggregate) result(target Target, p catalog.Params, d time.Duration) *catalog.Result {
	total := a.total()
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: total, Lost: a.dropped}
	secs := d.Seconds()
	rate := func(n uint64) string {
		if secs <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(n)/secs)
	}

	top, _ := catalog.TopN(a.byProc, catalog.MaxRows, procLess)
	byProc := catalog.Table{Title: "hits of " + target.String() + " by process", Columns: []string{"pid", "comm", "count", "per_sec"}}
	for _, r := range top {
		byProc.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(r.Score), rate(r.Score))
	}
	byProc.TotalRows = len(a.byProc)

	byComm := map[string]uint64{}
	pids := map[string]map[uint32]bool{}
	for k, n := range a.byProc {
		byComm[k.comm] += n
		if pids[k.comm] == nil {
			pids[k.comm] = map[uint32]bool{}
		}
		pids[k.comm][k.pid] = true
	}
	topComm, _ := catalog.TopN(byComm, catalog.MaxRows, func(x, y string) bool { return x < y })
	commTab := catalog.Table{Title: "hits of " + target.String() + " by command", Columns: []string{"comm", "count", "processes"}}
	for _, r := range topComm {
		commTab.AddRow(r.Key, catalog.U(r.Score), catalog.U(len(pids[r.Key])))
	}
	commTab.TotalRows = len(byComm)
	res.Tables = []catalog.Table{byProc, commTab}

	res.Summary = fmt.Sprintf("%s fired %d times in %.1fs (%s/s) in %d processes", target, total, secs, rate(total), len(pidSet(a.byProc)))
	if len(top) > 0 {
		res.Summary += fmt.Sprintf("; most: %s (pid %d) %d", top[0].Key.comm, top[0].Key.pid, top[0].Score)
	}
	if a.dropped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d hits not counted: more than %d distinct processes (counted in lost)", a.dropped, a.maxProcs))
	}
	return res
}

func pidSet(m map[proc]uint64) map[uint32]bool {
	s := map[uint32]bool{}
	for k := range m {
		s[k.pid] = true
	}
	return s
}
