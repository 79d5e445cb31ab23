// Package runqlat is the catalog entry that answers "are tasks waiting for
// a CPU": run-queue latency (from becoming runnable to running) as a log2
// histogram, and per process with p50/p99, aggregated in the kernel.
package runqlat

import (
	"context"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "runqlat",
	Answers:     "are tasks waiting for a CPU (CPU saturation, scheduler latency)",
	Reports:     "run-queue latency log2 histogram (us) with p50/p90/p99; per process: waits, total and average wait, p50/p99, with the busiest processes' histograms",
	Aliases:     []string{"runqlat", "runqlen", "runqslower", "cpudist", "schedlat", "run_queue_latency", "sched_latency"},
	Tracepoints: []string{"sched:sched_wakeup", "sched:sched_wakeup_new", "sched:sched_switch"},
	Functions:   []string{"ttwu_do_wakeup", "try_to_wake_up", "wake_up_new_task", "finish_task_switch", "__schedule", "enqueue_task_fair", "activate_task"},
	Keywords: []string{"run queue", "runqueue", "cpu saturation", "scheduler latency", "scheduling delay",
		"cpu contention", "waiting for cpu", "load average", "noisy neighbour", "steal"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup, catalog.FilterMinLatency},
	// CO-RE relocations (task_struct, tracepoint records) need kernel BTF
	// in every mode; the attach point is chosen by Check and Start.
	Requires: []catalog.Requirement{{Feature: catalog.FeatureBTF}},
	Attach:   []string{"tp_btf", "raw_tp", "tracepoint"},
	Streams:  false,
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info { return Info }

func (Entry) Check(k *catalog.Kernel) error {
	_, err := chooseMode(k)
	return err
}

func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

// points are the raw tracepoints of the typed modes; the classic mode
// attaches to the first two only (it cannot see a new task's first wait).
var points = []string{"sched_switch", "sched_wakeup", "sched_wakeup_new"}

// programs are each mode's programs, in the order of points.
var programs = map[catalog.Feature][]string{
	catalog.FeatureTpBTF:         {"btf_switch", "btf_wakeup", "btf_wakeup_new"},
	catalog.FeatureRawTracepoint: {"raw_switch", "raw_wakeup", "raw_wakeup_new"},
	catalog.FeatureTracepoint:    {"tp_switch", "tp_wakeup"},
}

// chooseMode picks tp_btf (typed task pointers), then raw_tp (the same
// programs reading through BPF_CORE_READ), then classic tracepoints
// (pids only, misses some waits).
func chooseMode(k *catalog.Kernel) (catalog.Feature, error) {
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return "", err
	}
	mode, err := catalog.TracepointMode(k, points, func() error {
		for _, name := range []string{"sched/sched_wakeup", "sched/sched_switch"} {
			if err := k.Has(catalog.Requirement{Feature: catalog.FeatureTracepoint, Name: name}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	return mode, nil
}

// maps are the maps every mode uses.
type maps struct {
	Start   *ebpf.Map `ebpf:"start"`
	HistAll *ebpf.Map `ebpf:"hist_all"`
	ByProc  *ebpf.Map `ebpf:"by_proc"`
}

func (m *maps) Close() error { return catalog.CloseAll(m.Start, m.HistAll, m.ByProc) }

// classicMaps adds what only the classic mode uses: who went to sleep,
// since its records carry pids instead of tasks.
type classicMaps struct {
	*maps
	Sleepers *ebpf.Map `ebpf:"sleepers"`
}

type trace struct {
	catalog.Session
	mode     catalog.Feature
	m        maps
	sleepers *ebpf.Map
	progs    []*ebpf.Program
}

func (t *trace) closeObjects() error {
	cs := []io.Closer{&t.m, t.sleepers}
	for _, p := range t.progs {
		cs = append(cs, p)
	}
	return catalog.CloseAll(cs...)
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadRunqlat)
	if err != nil {
		return nil, err
	}
	mode, err := chooseMode(k)
	if err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: catalog.ModeName(mode)}, mode: mode}
	t.Objects, t.Collect, t.Count = catalog.CloseFunc(t.closeObjects), t.collect, t.count
	// Only the chosen mode's programs load: a tp_btf program would not
	// even load where tp_btf is missing.
	var load any = &t.m
	cm := &classicMaps{maps: &t.m}
	if mode == catalog.FeatureTracepoint {
		load = cm
	}
	if t.progs, err = k.LoadPrograms(spec, load, programs[mode]...); err != nil {
		return nil, fmt.Errorf("runqlat: %w", err)
	}
	t.sleepers = cm.Sleepers
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	for i, prog := range t.progs {
		if err := t.Links.Attach(mode, "sched", points[i], prog); err != nil {
			return nil, fmt.Errorf("runqlat: %w", err)
		}
	}
	t.Begin()
	return t, nil
}

// count is the number of waits recorded so far.
func (t *trace) count() uint64 {
	slots, err := readAll(t.m.HistAll)
	if err != nil {
		return 0
	}
	var n uint64
	for _, c := range slots {
		n += c
	}
	return n
}

func (t *trace) collect() (*catalog.Result, error) {
	snap, err := readSnapshot(&t.m)
	res := snap.result(t.Params)
	if t.mode == catalog.FeatureTracepoint {
		res.Notes = append(res.Notes, "classic tracepoints carry no task pointers: a task's first wait after a sleep begun before the trace, and new tasks' first waits, are not counted")
	}
	return res, err
}

// Proc is one process's waits.
type Proc struct {
	Comm    string
	TotalUs uint64
	Slots   []uint64 // log2 us
}

// Snapshot is what the kernel aggregated.
type Snapshot struct {
	All   []uint64 // log2 us, over every task
	Procs map[uint32]Proc
}

func readAll(m *ebpf.Map) ([]uint64, error) {
	var vals []runqlatHist
	if err := m.Lookup(uint32(0), &vals); err != nil {
		return nil, fmt.Errorf("read hist_all: %w", err)
	}
	slots := make([]uint64, catalog.Log2Slots)
	for _, h := range vals {
		catalog.AddSlots(slots, h.Slots[:])
	}
	return slots, nil
}

func readSnapshot(m *maps) (*Snapshot, error) {
	s := &Snapshot{Procs: map[uint32]Proc{}}
	all, err := readAll(m.HistAll)
	if err != nil {
		return s, err
	}
	s.All = all
	err = catalog.EachEntry(m.ByProc, func(pid *uint32, v *runqlatProcHist) {
		slots := make([]uint64, catalog.Log2Slots)
		catalog.AddSlots(slots, v.Hist.Slots[:])
		s.Procs[*pid] = Proc{Comm: catalog.CString(v.Comm[:]), TotalUs: v.TotalUs, Slots: slots}
	})
	return s, err
}

// procHistograms is how many of the most delayed processes get their
// histogram in the result.
const procHistograms = 5

func (s *Snapshot) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}
	all := catalog.Log2Histogram("run-queue latency", "us", s.All)
	res.Events = all.Count

	totals := map[uint32]uint64{}
	for pid, pr := range s.Procs {
		totals[pid] = pr.TotalUs
	}
	top, _ := catalog.TopN(totals, catalog.MaxRows, func(a, b uint32) bool { return a < b })
	tab := catalog.Table{Title: "processes by run-queue wait", Columns: []string{"pid", "comm", "waits", "total_us", "avg_us", "p50_us", "p99_us"}}
	var hists []catalog.Histogram
	for i, r := range top {
		pr := s.Procs[r.Key]
		h := catalog.Log2Histogram(fmt.Sprintf("run-queue latency of %s (pid %d)", pr.Comm, r.Key), "us", pr.Slots)
		var avg uint64
		if h.Count > 0 {
			avg = pr.TotalUs / h.Count
		}
		tab.AddRow(catalog.U(r.Key), pr.Comm, catalog.U(h.Count), catalog.U(pr.TotalUs), catalog.U(avg), catalog.U(h.P50), catalog.U(h.P99))
		if i < procHistograms {
			hists = append(hists, h)
		}
	}
	tab.TotalRows = len(s.Procs)
	res.Tables = []catalog.Table{tab}
	if all.Count > 0 {
		res.Histograms = append([]catalog.Histogram{all}, hists...)
	}

	res.Summary = fmt.Sprintf("%d waits for a CPU by %d processes", all.Count, len(s.Procs))
	if all.Count > 0 {
		res.Summary += fmt.Sprintf("; p50 %d us, p90 %d us, p99 %d us", all.P50, all.P90, all.P99)
	}
	if len(top) > 0 {
		pr := s.Procs[top[0].Key]
		res.Summary += fmt.Sprintf("; most delayed: %s (pid %d) waited %d us in total", pr.Comm, top[0].Key, pr.TotalUs)
	}
	return res
}
