// Package profile is the catalog entry that answers "where does CPU time
// go": stacks sampled at a fixed frequency on every online CPU, kernel and
// user frames symbolised, the hottest stacks and processes ranked.
package profile

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"golang.org/x/sys/unix"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:     "profile",
	Answers:  "where does CPU time go (which functions, which processes)",
	Reports:  "sampled stacks at a fixed frequency on every CPU (cpu-clock), kernel and user frames symbolised; top stacks and samples per process",
	Aliases:  []string{"profile", "perf top", "perf record", "oncpu", "cpu_profile", "flamegraph"},
	Keywords: []string{"cpu", "hot", "profile", "stack", "flame graph", "busy", "high load", "spinning", "on-cpu"},
	Filters:  []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeaturePerfEvent},
		{Feature: catalog.FeatureStackTrace},
	},
	Attach:  []string{"perf_event link", "perf_event ioctl"},
	Streams: false,
}

// DefaultFrequency is the sampling rate without Params.Frequency: 49 Hz
// stays out of lockstep with timers at round frequencies.
const DefaultFrequency = 49

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

type objects struct {
	DoSample *ebpf.Program `ebpf:"do_sample"`
	profileMaps
}

func (o *objects) Close() error { return catalog.CloseAll(o.DoSample, &o.profileMaps) }

type trace struct {
	catalog.Session
	freq int
	cpus []int
	objs objects
}

// forceIoctl makes tests take the pre-5.15 attach path (no BPF link for
// perf events).
var forceIoctl bool

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadProfile)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	cpus, err := catalog.OnlineCPUs()
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p}, freq: p.Frequency, cpus: cpus}
	t.Objects, t.Collect = &t.objs, t.collect
	t.Perf.ForceIoctl = forceIoctl
	if t.freq == 0 {
		t.freq = DefaultFrequency
	}
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	// A cpu-clock event on every CPU runs the program on its overflow.
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Sample: uint64(t.freq),
		Bits:   unix.PerfBitFreq,
	}
	for _, cpu := range cpus {
		if err := t.Perf.Open(attr, cpu, t.objs.DoSample); err != nil {
			return nil, fmt.Errorf("profile: attach perf_event cpu-clock on cpu %d: %w", cpu, err)
		}
	}
	if err := t.Perf.Enable(); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	t.Begin()
	return t, nil
}

func (t *trace) collect() (*catalog.Result, error) {
	// Symbolise now, while the sampled processes most likely still live:
	// their maps and binaries are read through /proc/<pid>.
	samples, readErr := t.read()
	lost, lostErr := catalog.SumPerCPU(t.objs.Drops, 0)
	badStacks, stackErr := catalog.SumPerCPU(t.objs.Drops, 1)
	res := buildResult(t.Params, t.freq, len(t.cpus), samples)
	res.Lost = lost
	if t.Perf.ViaLink() {
		res.Attach = "perf_event (cpu-clock, BPF link)"
	} else {
		res.Attach = "perf_event (cpu-clock, ioctl)"
	}
	if badStacks > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d stacks could not be recorded (stack map full or hash collision)", badStacks))
	}
	return res, errors.Join(readErr, lostErr, stackErr)
}

// Sample is one counted (process, stack) pair, symbolised; frames leaf
// first.
type Sample struct {
	PID    uint32
	Comm   string
	Kernel []string
	User   []string
	Count  uint64
}

func (t *trace) read() ([]Sample, error) {
	sym := newSymbolizer()
	var out []Sample
	var stackErrs []error
	frames := make([]uint64, 127)
	stack := func(id int32, f func(uint64) string) []string {
		if id < 0 {
			return nil
		}
		if err := t.objs.Stacks.Lookup(uint32(id), &frames); err != nil {
			stackErrs = append(stackErrs, err)
			return nil
		}
		var names []string
		for _, pc := range frames {
			if pc == 0 {
				break
			}
			names = append(names, f(pc))
		}
		return names
	}
	err := catalog.EachEntry(t.objs.Counts, func(key *profileProfKey, count *uint64) {
		s := Sample{PID: key.Tgid, Comm: catalog.CString(key.Comm[:]), Count: *count}
		s.Kernel = stack(key.Kstack, sym.kernelFrame)
		s.User = stack(key.Ustack, func(pc uint64) string { return sym.userFrame(key.Tgid, pc) })
		out = append(out, s)
	})
	if err != nil {
		return out, err
	}
	if len(stackErrs) > 0 {
		return out, fmt.Errorf("read %d stacks: %w", len(stackErrs), stackErrs[0])
	}
	return out, nil
}

// Stack renders frames leaf first, kernel frames marked [k]: a cell cut
// for length keeps the hot end.
func (s Sample) Stack() string {
	parts := make([]string, 0, len(s.Kernel)+len(s.User))
	for _, f := range s.Kernel {
		parts = append(parts, f+"[k]")
	}
	parts = append(parts, s.User...)
	if len(parts) == 0 {
		return "(no stack)"
	}
	return strings.Join(parts, " <- ")
}

func pct(n, total uint64) string {
	if total == 0 {
		return "0.0"
	}
	return strconv.FormatFloat(100*float64(n)/float64(total), 'f', 1, 64)
}

type procKey struct {
	pid  uint32
	comm string
}

func buildResult(p catalog.Params, freq, ncpu int, samples []Sample) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}
	res.Params["frequency"] = strconv.Itoa(freq)
	var total uint64
	// Identical rendered stacks (different stack ids resolving to the same
	// names) count as one row.
	type stackKey struct {
		pid   uint32
		comm  string
		stack string
	}
	byStack := map[stackKey]uint64{}
	byProc := map[procKey]uint64{}
	for _, s := range samples {
		total += s.Count
		byStack[stackKey{s.PID, s.Comm, s.Stack()}] += s.Count
		byProc[procKey{s.PID, s.Comm}] += s.Count
	}
	res.Events = total
	top, n := catalog.TopN(byStack, catalog.MaxRows, func(a, b stackKey) bool {
		if a.pid != b.pid {
			return a.pid < b.pid
		}
		return a.stack < b.stack
	})
	stacks := catalog.Table{Title: "top stacks (leaf first)", Columns: []string{"pid", "comm", "samples", "percent", "stack"}}
	for _, r := range top {
		stacks.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(r.Score), pct(r.Score, total), r.Key.stack)
	}
	stacks.TotalRows = n
	ptop, pn := catalog.TopN(byProc, catalog.MaxRows, func(a, b procKey) bool { return a.pid < b.pid })
	procs := catalog.Table{Title: "samples by process", Columns: []string{"pid", "comm", "samples", "percent"}}
	for _, r := range ptop {
		procs.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(r.Score), pct(r.Score, total))
	}
	procs.TotalRows = pn
	res.Tables = []catalog.Table{stacks, procs}
	res.Summary = fmt.Sprintf("%d samples at %d Hz on %d CPUs, %d processes", total, freq, ncpu, len(byProc))
	if len(ptop) > 0 {
		res.Summary += fmt.Sprintf("; busiest: %s (pid %d) %s%%", ptop[0].Key.comm, ptop[0].Key.pid, pct(ptop[0].Score, total))
	}
	if len(top) > 0 {
		leaf, _, _ := strings.Cut(top[0].Key.stack, " <- ")
		res.Summary += fmt.Sprintf("; hottest frame: %s", leaf)
	}
	return res
}
