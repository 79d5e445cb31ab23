// Package exit is the catalog entry that answers "what ended, and how": each
// process exit with its exit code or fatal signal and its lifetime, counted
// by command and status in the kernel, with the abnormal exits (non-zero
// code, fatal signal) streamed as individual events.
package exit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "exit",
	Answers:     "what ended, and how",
	Reports:     "process exits (the last thread of a group; comm is the process leader's) by comm and exit status (code or fatal signal, core dump), mean lifetime; abnormal exits by comm with pid, ppid, uid; lifetime distribution",
	Aliases:     []string{"exitsnoop", "killsnoop_exit", "process_exit", "exits", "crashes", "coredumps"},
	Tracepoints: []string{"sched:sched_process_exit"},
	Functions:   []string{"do_exit", "do_group_exit", "exit_notify", "__x64_sys_exit_group", "__arm64_sys_exit_group"},
	Keywords:    []string{"exit", "exit code", "crash", "killed", "died", "terminated", "segfault", "core dump", "lifetime", "short-lived"},
	Filters:     []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup, catalog.FilterFailed},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "sched/sched_process_exit"},
	},
	Attach:  []string{"tp_btf", "raw_tp", "tracepoint"},
	Streams: true,
}

// Event is one abnormal process exit, decoded.
type Event struct {
	PID, TID, PPID int32
	UID            uint32
	Comm           string
	Status         Status
	Lifetime       time.Duration
}

// Status is a wait(2) status as the kernel keeps it in task->exit_code.
type Status uint32

// Signal is the fatal signal, 0 for a normal exit.
func (s Status) Signal() int { return int(s & 0x7f) }

// Code is the exit code of a normal exit.
func (s Status) Code() int { return int(s>>8) & 0xff }

// CoreDumped reports whether the fatal signal dumped core.
func (s Status) CoreDumped() bool { return s&0x80 != 0 }

// Abnormal reports a non-zero exit code or a fatal signal.
func (s Status) Abnormal() bool { return s != 0 }

func (s Status) String() string {
	if sig := s.Signal(); sig != 0 {
		name := catalog.SignalName(sig)
		if s.CoreDumped() {
			name += " (core dumped)"
		}
		return name
	}
	return fmt.Sprintf("exit %d", s.Code())
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info { return Info }

// Check accepts any of the three attach modes; the classic tracepoint is
// the declared baseline.
func (Entry) Check(k *catalog.Kernel) error {
	if _, err := attachMode(k); err != nil {
		return &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	return nil
}

func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

const rawTracepoint = "sched_process_exit"

// attachMode prefers tp_btf (typed task pointer, no probe reads), then
// raw_tp, then the classic tracepoint, which reads the task through
// bpf_get_current_task (the exiting task is current).
func attachMode(k *catalog.Kernel) (catalog.Feature, error) {
	return catalog.TracepointMode(k, []string{rawTracepoint}, func() error { return catalog.CheckRequirements(k, Info) })
}

type trace struct {
	catalog.Session
	prog *ebpf.Program
	maps exitMaps

	mu      sync.Mutex // guards samples: written by the stream goroutine
	samples sampler
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadExit)
	if err != nil {
		return nil, err
	}
	mode, err := attachMode(k)
	if err != nil {
		return nil, &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	if mode != catalog.FeatureTracepoint {
		args, err := k.RawTracepointArgs(rawTracepoint)
		if err != nil {
			return nil, fmt.Errorf("exit: arguments of %s: %w", rawTracepoint, err)
		}
		if err := spec.Variables["has_group_dead_arg"].Set(len(args) >= 2); err != nil {
			return nil, fmt.Errorf("exit: set has_group_dead_arg: %w", err)
		}
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: catalog.ModeName(mode)}}
	t.Objects, t.Collect = catalog.CloseFunc(func() error { return catalog.CloseAll(t.prog, &t.maps) }), t.collect
	usePerf, err := catalog.PrepareEvents(k, spec)
	if err != nil {
		return nil, fmt.Errorf("exit: %w", err)
	}
	progs, err := k.LoadPrograms(spec, &t.maps, map[catalog.Feature]string{
		catalog.FeatureTpBTF: "tp_btf_exit", catalog.FeatureRawTracepoint: "raw_tp_exit", catalog.FeatureTracepoint: "tp_exit",
	}[mode])
	if err != nil {
		return nil, fmt.Errorf("exit: %w", err)
	}
	t.prog = progs[0]
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	handle := catalog.Records(&t.mu, &t.samples.malformed, func(rec *exitExitEvent) { t.samples.add(decodeEvent(rec)) })
	if err := t.StartStream(catalog.StreamObjects{Events: t.maps.Events, EventsPerf: t.maps.EventsPerf, Lost: t.maps.Lost}, usePerf, handle); err != nil {
		return nil, err
	}
	if err := t.Links.Attach(mode, "sched", rawTracepoint, t.prog); err != nil {
		return nil, fmt.Errorf("exit: %w", err)
	}
	t.Begin()
	return t, nil
}

func decodeEvent(rec *exitExitEvent) Event {
	return Event{
		PID: rec.Pid, TID: rec.Tid, PPID: rec.Ppid, UID: rec.Uid,
		Comm:     catalog.CString(rec.Comm[:]),
		Status:   Status(rec.Status),
		Lifetime: time.Duration(rec.LifetimeNs),
	}
}

func (t *trace) collect() (*catalog.Result, error) {
	counts, err := t.readMaps()
	t.mu.Lock()
	defer t.mu.Unlock()
	res := counts.result(t.Params, &t.samples)
	// On kernels whose tracepoints run BPF preemptibly, a thread whose
	// exit begins while the program is running on its CPU for another
	// (threads of one exit_group go together) is skipped; if it was the
	// last of its process, that exit is missing from the counts.
	res.AddSkipped(catalog.RecursionMisses(t.prog), "thread exits")
	return res, err
}

func (t *trace) readMaps() (*aggregate, error) {
	a := newAggregate()
	err := catalog.EachEntry(t.maps.Counts, func(key *exitExitKey, val *exitExitVal) {
		a.add(catalog.CString(key.Comm[:]), Status(key.Status), val.Count, time.Duration(val.LifetimeNs))
	})
	if err != nil {
		return a, err
	}
	var h exitHist
	if err := t.maps.LifetimeUs.Lookup(uint32(0), &h); err != nil {
		return a, fmt.Errorf("read lifetime histogram: %w", err)
	}
	a.lifetime = h.Slots[:]
	dropped, err := catalog.SumPerCPU(t.maps.Dropped, 0)
	a.dropped = dropped
	return a, err
}

// sampler keeps up to MaxSamples abnormal exits, one of each (comm,
// status) first: ten identical crashes would otherwise hide a rarer one.
type sampler struct {
	events    []Event
	seen      uint64
	malformed uint64
}

func (s *sampler) add(ev Event) {
	s.seen++
	if len(s.events) < catalog.MaxSamples {
		s.events = append(s.events, ev)
		return
	}
	uses := map[statusKey]int{}
	for _, e := range s.events {
		uses[statusKey{e.Comm, e.Status}]++
	}
	if uses[statusKey{ev.Comm, ev.Status}] > 0 {
		return
	}
	for i := len(s.events) - 1; i >= 0; i-- {
		if uses[statusKey{s.events[i].Comm, s.events[i].Status}] > 1 {
			s.events[i] = ev
			return
		}
	}
}

type statusKey struct {
	comm   string
	status Status
}

type statusVal struct {
	count    uint64
	lifetime time.Duration
}

// aggregate is the kernel's counts, read at Stop.
type aggregate struct {
	byStatus map[statusKey]statusVal
	lifetime []uint32
	dropped  uint64
}

func newAggregate() *aggregate {
	return &aggregate{byStatus: map[statusKey]statusVal{}}
}

func (a *aggregate) add(comm string, st Status, count uint64, lifetime time.Duration) {
	k := statusKey{comm, st}
	v := a.byStatus[k]
	v.count += count
	v.lifetime += lifetime
	a.byStatus[k] = v
}

func (a *aggregate) result(p catalog.Params, s *sampler) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Lost: a.dropped}
	counts := map[statusKey]uint64{}
	abnormalByComm := map[string]uint64{}
	var total, abnormal, bySignal uint64
	for k, v := range a.byStatus {
		counts[k] = v.count
		total += v.count
		if k.status.Abnormal() {
			abnormal += v.count
			abnormalByComm[k.comm] += v.count
		}
		if k.status.Signal() != 0 {
			bySignal += v.count
		}
	}
	res.Events = total

	top, n := catalog.TopN(counts, catalog.MaxRows, func(x, y statusKey) bool {
		if x.comm != y.comm {
			return x.comm < y.comm
		}
		return x.status < y.status
	})
	byStatus := catalog.Table{Title: "process exits by command and status", Columns: []string{"comm", "status", "count", "mean_lifetime"}}
	for _, r := range top {
		mean := a.byStatus[r.Key].lifetime / time.Duration(r.Score)
		byStatus.AddRow(r.Key.comm, r.Key.status.String(), catalog.U(r.Score), mean.Round(time.Microsecond).String())
	}
	byStatus.TotalRows = n

	topAb, nAb := catalog.TopN(abnormalByComm, catalog.MaxRows, func(x, y string) bool { return x < y })
	abTab := catalog.Table{Title: "abnormal exits (non-zero code or fatal signal) by command", Columns: []string{"comm", "count"}}
	for _, r := range topAb {
		abTab.AddRow(r.Key, catalog.U(r.Score))
	}
	abTab.TotalRows = nAb
	res.Tables = []catalog.Table{byStatus, abTab}

	if a.lifetime != nil {
		res.Histograms = []catalog.Histogram{catalog.Log2Histogram("process lifetime", "us", a.lifetime)}
	}
	samples := &catalog.Table{Title: "abnormal exits", Columns: []string{"pid", "ppid", "uid", "comm", "status", "lifetime"}}
	for _, ev := range s.events {
		samples.AddRow(catalog.U(ev.PID), catalog.U(ev.PPID), catalog.U(ev.UID), ev.Comm, ev.Status.String(), ev.Lifetime.Round(time.Microsecond).String())
	}
	samples.TotalRows = int(s.seen)
	res.Samples = samples

	res.Summary = fmt.Sprintf("%d processes exited, %d abnormally (%d by a fatal signal)", total, abnormal, bySignal)
	if len(topAb) > 0 {
		res.Summary += fmt.Sprintf("; most abnormal exits: %s (%d)", topAb[0].Key, topAb[0].Score)
	}
	if a.dropped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d exits not counted: the kernel's count table was full", a.dropped))
	}
	if s.malformed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d malformed event records ignored", s.malformed))
	}
	return res
}
