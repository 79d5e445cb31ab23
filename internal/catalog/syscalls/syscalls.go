// Package syscalls is the catalog entry that answers "which system calls
// run, how long they take and how they fail": counts and log2 latency
// histograms per syscall and per process, and errors by errno, all
// aggregated in the kernel from the raw_syscalls tracepoints.
package syscalls

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "syscalls",
	Answers:     "which system calls run, how long they take and how they fail",
	Reports:     "counts, errors and total time per syscall and per process; log2 latency histograms per syscall (ns) with p50/p90/p99; failures by syscall and errno",
	Aliases:     []string{"syscount", "syscalls", "syscall_count", "syscall_latency", "strace -c", "perf trace -s", "errno"},
	Tracepoints: []string{"raw_syscalls:sys_enter", "raw_syscalls:sys_exit"},
	Functions:   []string{"do_syscall_64", "el0_svc", "invoke_syscall", "syscall_trace_enter", "syscall_exit_work"},
	Keywords: []string{"syscall", "system call", "syscall latency", "slow syscall", "errno", "EAGAIN", "EBADF",
		"ENOENT", "failing syscalls", "syscall mix", "kernel time"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup, catalog.FilterFailed, catalog.FilterMinLatency},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "raw_syscalls/sys_enter"},
		{Feature: catalog.FeatureTracepoint, Name: "raw_syscalls/sys_exit"},
	},
	Attach:  []string{"tracepoint"},
	Streams: false,
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
	TpSysEnter *ebpf.Program `ebpf:"tp_sys_enter"`
	TpSysExit  *ebpf.Program `ebpf:"tp_sys_exit"`
	syscallsMaps
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpSysEnter, o.TpSysExit, &o.syscallsMaps)
}

type trace struct {
	catalog.Session
	objs objects
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadSyscalls)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint"}}
	t.Objects, t.Collect, t.Count = &t.objs, t.collect, t.count
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("syscalls: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	// Exit first: a syscall is counted only once both sides are attached
	// and its entry was seen, so the order changes nothing but is explicit.
	if err := t.Links.Tracepoint("raw_syscalls", "sys_exit", t.objs.TpSysExit); err != nil {
		return nil, fmt.Errorf("syscalls: %w", err)
	}
	if err := t.Links.Tracepoint("raw_syscalls", "sys_enter", t.objs.TpSysEnter); err != nil {
		return nil, fmt.Errorf("syscalls: %w", err)
	}
	t.Begin()
	return t, nil
}

// count sums the per-syscall counts so far: a few hundred keys at most,
// cheap enough for a progress display.
func (t *trace) count() uint64 {
	m, err := readBySyscall(t.objs.BySyscall)
	if err != nil {
		return 0
	}
	var n uint64
	for _, s := range m {
		n += s.Count
	}
	return n
}

func (t *trace) collect() (*catalog.Result, error) {
	snap, err := readSnapshot(&t.objs.syscallsMaps)
	return snap.result(t.Params, localName), err
}

// Stats are counts of one syscall, or of one process's use of it.
type Stats struct {
	Count   uint64
	Errors  uint64
	TotalNs uint64
}

func (s *Stats) add(o Stats) {
	s.Count += o.Count
	s.Errors += o.Errors
	s.TotalNs += o.TotalNs
}

// ProcKey is one process's use of one syscall.
type ProcKey struct {
	PID uint32
	NR  uint32
}

// ProcStats are the counts of a ProcKey with the process's command.
type ProcStats struct {
	Stats
	Comm string
}

// ErrKey is one failure kind: a syscall and the errno it returned.
type ErrKey struct {
	NR    uint32
	Errno uint32
}

// Snapshot is what the kernel aggregated, summed over CPUs.
type Snapshot struct {
	BySyscall map[uint32]Stats
	ByProc    map[ProcKey]ProcStats
	ByErrno   map[ErrKey]uint64
	// Hists are log2 latency slots (ns) by syscall number.
	Hists map[uint32][]uint64
}

func newSnapshot() *Snapshot {
	return &Snapshot{BySyscall: map[uint32]Stats{}, ByProc: map[ProcKey]ProcStats{},
		ByErrno: map[ErrKey]uint64{}, Hists: map[uint32][]uint64{}}
}

func readBySyscall(m *ebpf.Map) (map[uint32]Stats, error) {
	out := map[uint32]Stats{}
	err := catalog.EachEntry(m, func(nr *uint32, vals *[]syscallsScStat) {
		var s Stats
		for _, v := range *vals {
			s.add(Stats{v.Count, v.Errors, v.TotalNs})
		}
		out[*nr] = s
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func readSnapshot(m *syscallsMaps) (*Snapshot, error) {
	s := newSnapshot()
	bs, err1 := readBySyscall(m.BySyscall)
	if err1 == nil {
		s.BySyscall = bs
	}
	err2 := catalog.EachEntry(m.ByProc, func(pk *syscallsProcKey, pvals *[]syscallsProcStat) {
		var ps ProcStats
		for _, v := range *pvals {
			ps.add(Stats{v.Count, v.Errors, v.TotalNs})
			if ps.Comm == "" && v.Count > 0 {
				ps.Comm = catalog.CString(v.Comm[:])
			}
		}
		s.ByProc[ProcKey{pk.Tgid, pk.Nr}] = ps
	})
	err3 := catalog.EachEntry(m.ByErrno, func(ek *syscallsErrKey, evals *[]uint64) {
		var n uint64
		for _, v := range *evals {
			n += v
		}
		s.ByErrno[ErrKey{ek.Nr, ek.Errno}] = n
	})
	err4 := catalog.EachEntry(m.Hists, func(nr *uint32, hvals *[]syscallsHist) {
		slots := make([]uint64, catalog.Log2Slots)
		for _, h := range *hvals {
			catalog.AddSlots(slots, h.Slots[:])
		}
		s.Hists[*nr] = slots
	})
	return s, errors.Join(err1, err2, err3, err4)
}

// maxHistograms bounds the per-syscall histograms of a result (the most
// frequent syscalls), next to the one over all syscalls.
const maxHistograms = 8

// result renders the snapshot; name maps syscall numbers to names.
func (s *Snapshot) result(p catalog.Params, name func(uint32) string) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}

	var total Stats
	counts := map[uint32]uint64{}
	for nr, st := range s.BySyscall {
		total.add(st)
		counts[nr] = st.Count
	}
	res.Events = total.Count
	byNR := func(a, b uint32) bool { return a < b }

	top, _ := catalog.TopN(counts, catalog.MaxRows, byNR)
	scTab := catalog.Table{Title: "syscalls by count", Columns: []string{"syscall", "count", "errors", "total_us", "avg_ns"}}
	for _, r := range top {
		st := s.BySyscall[r.Key]
		scTab.AddRow(name(r.Key), catalog.U(st.Count), catalog.U(st.Errors), catalog.U(st.TotalNs/1000), catalog.U(avg(st)))
	}
	scTab.TotalRows = len(counts)

	// Per process: totals over its syscalls, and the one it calls most.
	type procTotal struct {
		Stats
		comm   string
		topNR  uint32
		topCnt uint64
	}
	procs := map[uint32]*procTotal{}
	pairCounts := map[ProcKey]uint64{}
	for k, ps := range s.ByProc {
		pt := procs[k.PID]
		if pt == nil {
			pt = &procTotal{comm: ps.Comm}
			procs[k.PID] = pt
		}
		pt.add(ps.Stats)
		if ps.Count > pt.topCnt || (ps.Count == pt.topCnt && k.NR < pt.topNR) {
			pt.topNR, pt.topCnt = k.NR, ps.Count
		}
		pairCounts[k] = ps.Count
	}
	procCounts := map[uint32]uint64{}
	for pid, pt := range procs {
		procCounts[pid] = pt.Count
	}
	topProcs, _ := catalog.TopN(procCounts, catalog.MaxRows, byNR)
	procTab := catalog.Table{Title: "processes by syscall count", Columns: []string{"pid", "comm", "syscalls", "errors", "total_us", "top_syscall"}}
	for _, r := range topProcs {
		pt := procs[r.Key]
		procTab.AddRow(catalog.U(r.Key), pt.comm, catalog.U(pt.Count), catalog.U(pt.Errors), catalog.U(pt.TotalNs/1000), name(pt.topNR))
	}
	procTab.TotalRows = len(procs)

	topPairs, _ := catalog.TopN(pairCounts, catalog.MaxRows, func(a, b ProcKey) bool {
		return a.PID < b.PID || (a.PID == b.PID && a.NR < b.NR)
	})
	pairTab := catalog.Table{Title: "syscalls by process", Columns: []string{"pid", "comm", "syscall", "count", "errors", "total_us"}}
	for _, r := range topPairs {
		ps := s.ByProc[r.Key]
		pairTab.AddRow(catalog.U(r.Key.PID), ps.Comm, name(r.Key.NR), catalog.U(ps.Count), catalog.U(ps.Errors), catalog.U(ps.TotalNs/1000))
	}
	pairTab.TotalRows = len(pairCounts)

	topErrs, _ := catalog.TopN(s.ByErrno, catalog.MaxRows, func(a, b ErrKey) bool {
		return a.NR < b.NR || (a.NR == b.NR && a.Errno < b.Errno)
	})
	errTab := catalog.Table{Title: "failures by syscall and errno", Columns: []string{"syscall", "error", "count"}}
	for _, r := range topErrs {
		errTab.AddRow(name(r.Key.NR), catalog.ErrnoName(int64(r.Key.Errno)), catalog.U(r.Score))
	}
	errTab.TotalRows = len(s.ByErrno)
	res.Tables = []catalog.Table{scTab, procTab, pairTab, errTab}

	all := make([]uint64, catalog.Log2Slots)
	nrs := make([]uint32, 0, len(s.Hists))
	for nr, slots := range s.Hists {
		catalog.AddSlots(all, slots)
		nrs = append(nrs, nr)
	}
	if len(nrs) > 0 {
		res.Histograms = append(res.Histograms, catalog.Log2Histogram("all syscalls latency", "ns", all))
	}
	sort.Slice(nrs, func(i, j int) bool {
		ci, cj := counts[nrs[i]], counts[nrs[j]]
		if ci != cj {
			return ci > cj
		}
		return nrs[i] < nrs[j]
	})
	for i, nr := range nrs {
		if i == maxHistograms {
			break
		}
		res.Histograms = append(res.Histograms, catalog.Log2Histogram(name(nr)+" latency", "ns", s.Hists[nr]))
	}

	res.Summary = fmt.Sprintf("%d syscalls (%d failed) of %d kinds from %d processes", total.Count, total.Errors, len(counts), len(procs))
	if len(top) > 0 {
		res.Summary += fmt.Sprintf("; most frequent: %s (%d)", name(top[0].Key), top[0].Score)
	}
	if len(topErrs) > 0 {
		e := topErrs[0]
		res.Summary += fmt.Sprintf("; top failure: %s %s (%d)", name(e.Key.NR), catalog.ErrnoName(int64(e.Key.Errno)), e.Score)
	}
	if total.Count > 0 && len(res.Histograms) > 0 {
		res.Summary += fmt.Sprintf("; latency p50 %d ns, p99 %d ns", res.Histograms[0].P50, res.Histograms[0].P99)
	}
	return res
}

func avg(s Stats) uint64 {
	if s.Count == 0 {
		return 0
	}
	return s.TotalNs / s.Count
}
