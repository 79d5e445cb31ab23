// Package runqlat is the catalog entry that answers "are tasks waiting for
// a CPU": run-queue latency (from becoming runnable to running) as a log2
// histogram, and per process with p50/p99, aggregated in the kernel.
package runqlat

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

// modeNames are the attach points of each mode, as Kernel.Has and the
// attach calls name them.
var modeNames = map[catalog.Feature][]string{
	catalog.FeatureTpBTF:         {"sched_wakeup", "sched_wakeup_new", "sched_switch"},
	catalog.FeatureRawTracepoint: {"sched_wakeup", "sched_wakeup_new", "sched_switch"},
	catalog.FeatureTracepoint:    {"sched/sched_wakeup", "sched/sched_switch"},
}

// chooseMode picks tp_btf (typed task pointers), then raw_tp (the same
// programs reading through BPF_CORE_READ), then classic tracepoints
// (pids only, misses some waits).
func chooseMode(k *catalog.Kernel) (catalog.Feature, error) {
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return "", err
	}
	mode, err := catalog.AttachMode(k, catalog.FeatureTpBTF, catalog.FeatureRawTracepoint, catalog.FeatureTracepoint)
	if err != nil {
		return "", &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	for _, name := range modeNames[mode] {
		if err := k.Has(catalog.Requirement{Feature: mode, Name: name}); err != nil {
			return "", &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
		}
	}
	return mode, nil
}

// maps are the maps every mode uses; sleepers only the classic one.
type maps struct {
	Start   *ebpf.Map `ebpf:"start"`
	HistAll *ebpf.Map `ebpf:"hist_all"`
	ByProc  *ebpf.Map `ebpf:"by_proc"`
}

func (m *maps) Close() error { return catalog.CloseAll(m.Start, m.HistAll, m.ByProc) }

// One struct per mode, so LoadAndAssign loads only that mode's programs
// (a tp_btf program would not even load where tp_btf is missing).
type btfObjects struct {
	Wakeup    *ebpf.Program `ebpf:"btf_wakeup"`
	WakeupNew *ebpf.Program `ebpf:"btf_wakeup_new"`
	Switch    *ebpf.Program `ebpf:"btf_switch"`
	maps
}

type rawObjects struct {
	Wakeup    *ebpf.Program `ebpf:"raw_wakeup"`
	WakeupNew *ebpf.Program `ebpf:"raw_wakeup_new"`
	Switch    *ebpf.Program `ebpf:"raw_switch"`
	maps
}

type tpObjects struct {
	Wakeup   *ebpf.Program `ebpf:"tp_wakeup"`
	Switch   *ebpf.Program `ebpf:"tp_switch"`
	Sleepers *ebpf.Map     `ebpf:"sleepers"`
	maps
}

type trace struct {
	params  catalog.Params
	mode    catalog.Feature
	m       *maps
	closers []interface{ Close() error }
	links   catalog.Links
	start   time.Time

	stopOnce sync.Once
	result   *catalog.Result
	err      error
}

func (t *trace) closeObjects() error {
	var errs []error
	for _, c := range t.closers {
		errs = append(errs, c.Close())
	}
	t.closers = nil
	return errors.Join(errs...)
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	if err := p.Validate(Info); err != nil {
		return nil, err
	}
	mode, err := chooseMode(k)
	if err != nil {
		return nil, err
	}
	spec, err := loadRunqlat()
	if err != nil {
		return nil, fmt.Errorf("runqlat: read BPF spec: %w", err)
	}
	if err := catalog.SetFilters(spec, p); err != nil {
		return nil, fmt.Errorf("runqlat: %w", err)
	}
	t := &trace{params: p, mode: mode}
	defer func() {
		if err != nil {
			_ = t.links.Close()
			_ = t.closeObjects()
		}
	}()
	switch mode {
	case catalog.FeatureTpBTF:
		var o btfObjects
		if err := k.Load(spec, &o); err != nil {
			return nil, fmt.Errorf("runqlat: %w", err)
		}
		t.m, t.closers = &o.maps, []interface{ Close() error }{o.Wakeup, o.WakeupNew, o.Switch, &o.maps}
		for _, a := range []struct {
			name string
			prog *ebpf.Program
		}{{"sched_switch", o.Switch}, {"sched_wakeup", o.Wakeup}, {"sched_wakeup_new", o.WakeupNew}} {
			if err := t.links.Tracing("tp_btf "+a.name, a.prog); err != nil {
				return nil, fmt.Errorf("runqlat: %w", err)
			}
		}
	case catalog.FeatureRawTracepoint:
		var o rawObjects
		if err := k.Load(spec, &o); err != nil {
			return nil, fmt.Errorf("runqlat: %w", err)
		}
		t.m, t.closers = &o.maps, []interface{ Close() error }{o.Wakeup, o.WakeupNew, o.Switch, &o.maps}
		for _, a := range []struct {
			name string
			prog *ebpf.Program
		}{{"sched_switch", o.Switch}, {"sched_wakeup", o.Wakeup}, {"sched_wakeup_new", o.WakeupNew}} {
			if err := t.links.RawTracepoint(a.name, a.prog); err != nil {
				return nil, fmt.Errorf("runqlat: %w", err)
			}
		}
	default:
		var o tpObjects
		if err := k.Load(spec, &o); err != nil {
			return nil, fmt.Errorf("runqlat: %w", err)
		}
		t.m, t.closers = &o.maps, []interface{ Close() error }{o.Wakeup, o.Switch, o.Sleepers, &o.maps}
		for _, a := range []struct {
			name string
			prog *ebpf.Program
		}{{"sched_switch", o.Switch}, {"sched_wakeup", o.Wakeup}} {
			if err := t.links.Tracepoint("sched", a.name, a.prog); err != nil {
				return nil, fmt.Errorf("runqlat: %w", err)
			}
		}
	}
	t.start = time.Now()
	return t, nil
}

// Seen is the number of waits recorded so far.
func (t *trace) Seen() uint64 {
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

func (t *trace) Stop() (*catalog.Result, error) {
	t.stopOnce.Do(func() {
		end := time.Now()
		detachErr := t.links.Close()
		snap, readErr := readSnapshot(t.m)
		closeErr := t.closeObjects()
		res := snap.result(t.params)
		res.Start, res.End = t.start, end
		res.Attach = attachName(t.mode)
		if t.mode == catalog.FeatureTracepoint {
			res.Notes = append(res.Notes, "classic tracepoints carry no task pointers: a task's first wait after a sleep begun before the trace, and new tasks' first waits, are not counted")
		}
		res.Compact()
		t.result = res
		if err := errors.Join(detachErr, readErr, closeErr); err != nil {
			t.err = fmt.Errorf("runqlat: stop: %w", err)
		}
	})
	return t.result, t.err
}

func attachName(mode catalog.Feature) string {
	switch mode {
	case catalog.FeatureTpBTF:
		return "tp_btf"
	case catalog.FeatureRawTracepoint:
		return "raw_tp"
	}
	return "tracepoint"
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
	var pid uint32
	var v runqlatProcHist
	it := m.ByProc.Iterate()
	for it.Next(&pid, &v) {
		slots := make([]uint64, catalog.Log2Slots)
		catalog.AddSlots(slots, v.Hist.Slots[:])
		s.Procs[pid] = Proc{Comm: catalog.CString(v.Comm[:]), TotalUs: v.TotalUs, Slots: slots}
	}
	if err := it.Err(); err != nil {
		return s, fmt.Errorf("read by_proc: %w", err)
	}
	return s, nil
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
