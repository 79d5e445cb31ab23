// Package reclaim is the catalog entry that answers "which processes stall
// on memory pressure": time spent in direct (global) and memcg reclaim,
// as log2 latency histograms overall and per process, from the vmscan
// tracepoints, aggregated in the kernel.
package reclaim

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:    "reclaim",
	Answers: "which processes stall on memory pressure (direct and cgroup reclaim)",
	Reports: "direct and memcg reclaim latency log2 histograms (us) with p50/p90/p99; per process and kind: reclaims, total, max and p99 stall, pages reclaimed",
	Aliases: []string{"drsnoop", "memleak-pressure", "vmscan", "direct_reclaim", "memcg_reclaim", "memory_pressure"},
	Tracepoints: []string{"vmscan:mm_vmscan_direct_reclaim_begin", "vmscan:mm_vmscan_direct_reclaim_end",
		"vmscan:mm_vmscan_memcg_reclaim_begin", "vmscan:mm_vmscan_memcg_reclaim_end"},
	Functions: []string{"try_to_free_pages", "try_to_free_mem_cgroup_pages", "do_try_to_free_pages",
		"shrink_node", "__alloc_pages_direct_reclaim", "__perform_reclaim", "mem_cgroup_handle_over_high", "try_charge_memcg"},
	Keywords: []string{"memory pressure", "direct reclaim", "reclaim", "memcg", "memory.high", "memory.max",
		"cgroup memory limit", "page cache", "allocation stall", "swap", "oom", "low memory"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup, catalog.FilterMinLatency},
	// The memcg pair is attached where the kernel has it (CONFIG_MEMCG).
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "vmscan/mm_vmscan_direct_reclaim_begin"},
		{Feature: catalog.FeatureTracepoint, Name: "vmscan/mm_vmscan_direct_reclaim_end"},
	},
	Attach:  []string{"tracepoint"},
	Streams: false,
}

// Kind is the reclaim kind (KIND_* in bpf/reclaim.bpf.c).
type Kind uint32

const (
	Direct Kind = 0 // the machine is short of memory
	Memcg  Kind = 1 // the task's memory cgroup is at its limit
)

func (k Kind) String() string {
	if k == Memcg {
		return "memcg"
	}
	return "direct"
}

// Slots of the counters map (C_* in bpf/reclaim.bpf.c).
const (
	cBegin     = 0 // + kind
	cPairs     = 2 // + kind
	cUnmatched = 4
	cSlots     = 5
)

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

// objects names only what this entry loads.
type objects struct {
	DirectBegin *ebpf.Program `ebpf:"direct_begin"`
	DirectEnd   *ebpf.Program `ebpf:"direct_end"`
	MemcgBegin  *ebpf.Program `ebpf:"memcg_begin"`
	MemcgEnd    *ebpf.Program `ebpf:"memcg_end"`
	reclaimMaps
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.DirectBegin, o.DirectEnd, o.MemcgBegin, o.MemcgEnd, &o.reclaimMaps)
}

type trace struct {
	catalog.Session
	objs  objects
	memcg bool
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadReclaim)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint"},
		memcg: catalog.TracepointExists("vmscan/mm_vmscan_memcg_reclaim_begin") &&
			catalog.TracepointExists("vmscan/mm_vmscan_memcg_reclaim_end")}
	t.Objects, t.Collect, t.Count = &t.objs, t.collect, t.count
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("reclaim: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	// Ends before begins: a reclaim that begins once both are attached is
	// always paired.
	type attach struct {
		name string
		prog *ebpf.Program
	}
	attaches := []attach{{"mm_vmscan_direct_reclaim_end", t.objs.DirectEnd}, {"mm_vmscan_direct_reclaim_begin", t.objs.DirectBegin}}
	if t.memcg {
		attaches = append(attaches, attach{"mm_vmscan_memcg_reclaim_end", t.objs.MemcgEnd}, attach{"mm_vmscan_memcg_reclaim_begin", t.objs.MemcgBegin})
	}
	for _, a := range attaches {
		if err := t.Links.Tracepoint("vmscan", a.name, a.prog); err != nil {
			return nil, fmt.Errorf("reclaim: %w", err)
		}
	}
	t.Begin()
	return t, nil
}

// count is the number of paired reclaims so far.
func (t *trace) count() uint64 {
	c, err := readCounters(t.objs.Counters)
	if err != nil {
		return 0
	}
	return c[cPairs] + c[cPairs+1]
}

func (t *trace) collect() (*catalog.Result, error) {
	snap, err := readSnapshot(&t.objs.reclaimMaps)
	res := snap.result(t.Params)
	if !t.memcg {
		res.Notes = append(res.Notes, "this kernel has no memcg reclaim tracepoints (CONFIG_MEMCG off): cgroup-limit reclaim is not seen")
	}
	return res, err
}

// ProcKey is one process's reclaims of one kind.
type ProcKey struct {
	PID  uint32
	Kind Kind
}

// ProcStats are a process's reclaims of one kind.
type ProcStats struct {
	Comm        string
	Count       uint64
	TotalNs     uint64
	MaxNs       uint64
	NrReclaimed uint64
	Slots       []uint64 // log2 us
}

// Snapshot is what the kernel aggregated.
type Snapshot struct {
	All   [2][]uint64 // log2 us by kind
	Procs map[ProcKey]ProcStats
	// Begins and Pairs count reclaims by kind that passed the filters:
	// begun, and begun then ended (before min_latency applies).
	Begins, Pairs [2]uint64
	// Unmatched ends had no begin: reclaims in flight at attach.
	Unmatched uint64
}

func readCounters(m *ebpf.Map) ([cSlots]uint64, error) {
	var c [cSlots]uint64
	for i := range c {
		n, err := catalog.SumPerCPU(m, uint32(i))
		if err != nil {
			return c, err
		}
		c[i] = n
	}
	return c, nil
}

func readSnapshot(m *reclaimMaps) (*Snapshot, error) {
	s := &Snapshot{Procs: map[ProcKey]ProcStats{}}
	var errs []error
	for kind := range s.All {
		s.All[kind] = make([]uint64, catalog.Log2Slots)
		var vals []reclaimHist
		if err := m.HistAll.Lookup(uint32(kind), &vals); err != nil {
			errs = append(errs, fmt.Errorf("read hist_all: %w", err))
			continue
		}
		for _, h := range vals {
			catalog.AddSlots(s.All[kind], h.Slots[:])
		}
	}
	c, err := readCounters(m.Counters)
	if err != nil {
		errs = append(errs, err)
	}
	s.Begins = [2]uint64{c[cBegin], c[cBegin+1]}
	s.Pairs = [2]uint64{c[cPairs], c[cPairs+1]}
	s.Unmatched = c[cUnmatched]

	err = catalog.EachEntry(m.ByProc, func(k *reclaimProcKey, v *reclaimProcStat) {
		slots := make([]uint64, catalog.Log2Slots)
		catalog.AddSlots(slots, v.Hist.Slots[:])
		s.Procs[ProcKey{k.Tgid, Kind(k.Kind)}] = ProcStats{Comm: catalog.CString(v.Comm[:]), Count: v.Count,
			TotalNs: v.TotalNs, MaxNs: v.MaxNs, NrReclaimed: v.NrReclaimed, Slots: slots}
	})
	if err != nil {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

// procHistograms is how many of the most stalled processes get their
// histogram in the result.
const procHistograms = 5

func (s *Snapshot) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}
	var kinds [2]catalog.Histogram
	for kind := range kinds {
		kinds[kind] = catalog.Log2Histogram(Kind(kind).String()+" reclaim latency", "us", s.All[kind])
		res.Events += kinds[kind].Count
		if kinds[kind].Count > 0 {
			res.Histograms = append(res.Histograms, kinds[kind])
		}
	}

	totals := map[ProcKey]uint64{}
	for k, ps := range s.Procs {
		totals[k] = ps.TotalNs
	}
	top, _ := catalog.TopN(totals, catalog.MaxRows, func(a, b ProcKey) bool {
		return a.PID < b.PID || (a.PID == b.PID && a.Kind < b.Kind)
	})
	tab := catalog.Table{Title: "processes stalled in reclaim", Columns: []string{"pid", "comm", "kind", "reclaims", "total_us", "max_us", "p99_us", "pages_reclaimed"}}
	for i, r := range top {
		ps := s.Procs[r.Key]
		h := catalog.Log2Histogram(fmt.Sprintf("%s reclaim latency of %s (pid %d)", r.Key.Kind, ps.Comm, r.Key.PID), "us", ps.Slots)
		tab.AddRow(catalog.U(r.Key.PID), ps.Comm, r.Key.Kind.String(), catalog.U(ps.Count), catalog.U(ps.TotalNs/1000),
			catalog.U(ps.MaxNs/1000), catalog.U(h.P99), catalog.U(ps.NrReclaimed))
		if i < procHistograms {
			res.Histograms = append(res.Histograms, h)
		}
	}
	tab.TotalRows = len(s.Procs)
	// Every begun reclaim of a filtered task ends in the same task, so
	// begun == completed unless one was in flight at stop; counted differs
	// from completed only by min_latency.
	counts := catalog.Table{Title: "reclaims by kind", Columns: []string{"kind", "begun", "completed", "counted"}}
	for kind := range kinds {
		counts.AddRow(Kind(kind).String(), catalog.U(s.Begins[kind]), catalog.U(s.Pairs[kind]), catalog.U(kinds[kind].Count))
	}
	res.Tables = []catalog.Table{tab, counts}

	res.Summary = fmt.Sprintf("%d direct reclaims, %d memcg reclaims by %d processes", kinds[Direct].Count, kinds[Memcg].Count, len(pidsOf(s.Procs)))
	for kind, h := range kinds {
		if h.Count > 0 {
			res.Summary += fmt.Sprintf("; %s p50 %d us, p99 %d us", Kind(kind), h.P50, h.P99)
		}
	}
	if len(top) > 0 {
		ps := s.Procs[top[0].Key]
		res.Summary += fmt.Sprintf("; most stalled: %s (pid %d) %d us in %s reclaim", ps.Comm, top[0].Key.PID, ps.TotalNs/1000, top[0].Key.Kind)
	}
	if s.Unmatched > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d reclaims were already running when the trace started and are not counted", s.Unmatched))
	}
	if inFlight := s.Begins[0] + s.Begins[1] - s.Pairs[0] - s.Pairs[1]; inFlight > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d reclaims were still running when the trace stopped and are not counted", inFlight))
	}
	return res
}

func pidsOf(m map[ProcKey]ProcStats) map[uint32]bool {
	pids := map[uint32]bool{}
	for k := range m {
		pids[k.PID] = true
	}
	return pids
}
