// Package profile is the catalog entry that answers "where does CPU time
// go": stacks sampled at a fixed frequency on every online CPU, kernel and
// user frames symbolised, the hottest stacks and processes ranked.
package profile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
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
	params  catalog.Params
	freq    int
	cpus    []int
	objs    objects
	links   catalog.Links
	fds     []int // perf events; closing one detaches an ioctl-attached program
	viaLink bool
	start   time.Time

	stopOnce sync.Once
	result   *catalog.Result
	err      error
}

// forceIoctl makes tests take the pre-5.15 attach path (no BPF link for
// perf events).
var forceIoctl bool

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	if err := p.Validate(Info); err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	cpus, err := onlineCPUs()
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	spec, err := loadProfile()
	if err != nil {
		return nil, fmt.Errorf("profile: read BPF spec: %w", err)
	}
	if err := catalog.SetFilters(spec, p); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	t := &trace{params: p, freq: p.Frequency, cpus: cpus}
	if t.freq == 0 {
		t.freq = DefaultFrequency
	}
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	defer func() {
		if err != nil {
			_ = t.detach()
			_ = t.objs.Close()
		}
	}()
	t.viaLink = !forceIoctl
	for _, cpu := range cpus {
		if err := t.attach(cpu); err != nil {
			return nil, fmt.Errorf("profile: %w", err)
		}
	}
	t.start = time.Now()
	return t, nil
}

// attach opens a cpu-clock event on cpu and runs the program on its
// overflow: through a BPF link where the kernel has them for perf events
// (5.15+), else with PERF_EVENT_IOC_SET_BPF, which the fd's close undoes.
func (t *trace) attach(cpu int) error {
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Sample: uint64(t.freq),
		Bits:   unix.PerfBitFreq,
	}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("perf_event_open cpu-clock on cpu %d: %w", cpu, err)
	}
	t.fds = append(t.fds, fd)
	what := "perf_event cpu " + strconv.Itoa(cpu)
	if t.viaLink {
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: t.objs.DoSample, Attach: ebpf.AttachPerfEvent})
		if err == nil {
			return t.links.Add(what, l, nil)
		}
		if len(t.fds) > 1 || !(errors.Is(err, unix.EINVAL) || errors.Is(err, ebpf.ErrNotSupported)) {
			return fmt.Errorf("attach %s: %w", what, err)
		}
		t.viaLink = false // the first CPU decides for all of them
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, t.objs.DoSample.FD()); err != nil {
		return fmt.Errorf("attach %s: PERF_EVENT_IOC_SET_BPF: %w", what, err)
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
		return fmt.Errorf("attach %s: PERF_EVENT_IOC_ENABLE: %w", what, err)
	}
	return nil
}

func (t *trace) detach() error {
	errs := []error{t.links.Close()}
	for _, fd := range t.fds {
		errs = append(errs, unix.Close(fd))
	}
	t.fds = nil
	return errors.Join(errs...)
}

// Seen is unknown until Stop: samples are counted in the kernel.
func (t *trace) Seen() uint64 { return 0 }

func (t *trace) Stop() (*catalog.Result, error) {
	t.stopOnce.Do(t.stop)
	return t.result, t.err
}

func (t *trace) stop() {
	end := time.Now()
	detachErr := t.detach()
	// Symbolise now, while the sampled processes most likely still live:
	// their maps and binaries are read through /proc/<pid>.
	samples, readErr := t.read()
	lost, lostErr := catalog.SumPerCPU(t.objs.Drops, 0)
	badStacks, stackErr := catalog.SumPerCPU(t.objs.Drops, 1)
	closeErr := t.objs.Close()
	res := buildResult(t.params, t.freq, len(t.cpus), samples)
	res.Start, res.End, res.Lost = t.start, end, lost
	if t.viaLink {
		res.Attach = "perf_event (cpu-clock, BPF link)"
	} else {
		res.Attach = "perf_event (cpu-clock, ioctl)"
	}
	if badStacks > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d stacks could not be recorded (stack map full or hash collision)", badStacks))
	}
	res.Compact()
	t.result = res
	if err := errors.Join(detachErr, readErr, lostErr, stackErr, closeErr); err != nil {
		t.err = fmt.Errorf("profile: stop: %w", err)
	}
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
	var key profileProfKey
	var count uint64
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
	it := t.objs.Counts.Iterate()
	for it.Next(&key, &count) {
		s := Sample{PID: key.Tgid, Comm: catalog.CString(key.Comm[:]), Count: count}
		s.Kernel = stack(key.Kstack, sym.kernelFrame)
		s.User = stack(key.Ustack, func(pc uint64) string { return sym.userFrame(key.Tgid, pc) })
		out = append(out, s)
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read counts: %w", err)
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

// onlineCPUs lists the CPUs a per-CPU event can open on.
func onlineCPUs() ([]int, error) {
	data, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("online CPUs: %w", err)
	}
	return parseCPUList(strings.TrimSpace(string(data)))
}

// parseCPUList reads the kernel's list format, "0-3,5,7-8".
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("cpu list %q: bad range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("cpu list %q is empty", s)
	}
	return cpus, nil
}
