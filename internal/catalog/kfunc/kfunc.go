// Package kfunc is the generic catalog entry for "how often is this kernel
// function called, by whom, and how long does it take": one compiled
// kprobe/kretprobe pair, attached at run time to the function the request
// names, aggregating calls and a log2 latency histogram per process in the
// kernel. It is the last resort of the catalog: kprobes bind to kernel
// internals that change between releases, so dedicated entries on stable
// tracepoints come first.
package kfunc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"golang.org/x/sys/unix"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:     "kfunc",
	Answers:  "how often is a given kernel function called, by which processes, and how long does it take",
	Reports:  "calls of the target function by process (pid, comm) with total, average and maximum latency; log2 latency histograms (all calls and the busiest processes); calls still running at the end",
	Aliases:  []string{"funccount", "funclatency", "kprobe", "kretprobe", "fentry", "fexit"},
	Keywords: []string{"kernel function", "kprobe", "function latency", "how often is", "called"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup, catalog.FilterMinLatency},
	Requires:    []catalog.Requirement{{Feature: catalog.FeatureKprobe}},
	Attach:      []string{"kprobe"},
	NeedsTarget: true,
}

// maxNameLen is the longest symbol every supported kernel accepts:
// KSYM_NAME_LEN was 128 (with the NUL) before 6.1.
const maxNameLen = 127

// ValidateFunction checks that name is a plain C identifier of a bounded
// length and not one of the functions this entry refuses to probe.
func ValidateFunction(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("kernel function %q: %s (want a function name as in /proc/kallsyms, e.g. vfs_read)", name, why)
	}
	switch {
	case name == "":
		return bad("empty name")
	case len(name) > maxNameLen:
		return bad(fmt.Sprintf("longer than %d characters", maxNameLen))
	case name[0] >= '0' && name[0] <= '9':
		return bad("starts with a digit")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return bad(fmt.Sprintf("may only contain letters, digits and _ (found %q)", c))
		}
	}
	if reason, ok := Refused(name); ok {
		return fmt.Errorf("kernel function %s is refused: %s", name, reason)
	}
	return nil
}

// refusals are function-name prefixes this entry will not probe. The
// kernel protects itself from most of them (NOKPROBE_SYMBOL, recursion
// guards), but then a probe silently misses hits or skews every result;
// refusing up front says why.
var refusals = []struct {
	prefixes []string
	reason   string
}{
	{[]string{"bpf_", "__bpf_", "___bpf_", "htab_", "__htab_", "array_map_", "percpu_array_", "pcpu_", "migrate_disable", "migrate_enable"},
		"it is part of the BPF runtime the probe itself runs (programs, helpers, maps): probing it recurses into the probe"},
	{[]string{"kprobe", "__kprobe", "kretprobe", "__kretprobe", "rethook", "__rethook", "arch_rethook", "arch_prepare_kprobe",
		"optimized_callback", "opt_pre_handler", "aggr_", "pre_handler_kretprobe", "trampoline_handler"},
		"it is part of the kprobe machinery"},
	{[]string{"ftrace", "__ftrace", "arch_ftrace", "fprobe", "__fprobe", "function_trace", "trace_", "__trace_", "tracing_",
		"tracer_", "ring_buffer_", "perf_", "__perf_", "text_poke"},
		"it is part of the tracing and perf machinery that delivers probe hits"},
	{[]string{"preempt_", "__preempt_", "rcu_", "__rcu_", "srcu_", "__srcu_", "lock_acquire", "lock_release", "lockdep_", "__lock_",
		"_raw_spin_", "__raw_spin_", "do_raw_spin_", "queued_spin", "native_queued_spin", "__pv_queued_spin"},
		"the probe runs inside these preemption, RCU and spinlock primitives"},
	{[]string{"do_int3", "exc_int3", "exc_debug", "noist_exc_debug", "exc_nmi", "default_do_nmi", "nmi_", "irqentry_",
		"do_debug_exception", "brk_handler", "call_break_hook", "el1_"},
		"it is on the exception or NMI path where kprobes trap"},
	{[]string{"ktime_get_mono_fast_ns", "sched_clock", "native_sched_clock", "local_clock", "read_tsc", "arch_counter_",
		"native_", "paravirt_", "memcpy", "__memcpy", "memset", "__memset", "memmove", "__memmove"},
		"the probe itself calls these clock, low-level architecture and memory primitives on every hit"},
}

// Refused reports whether this entry refuses to probe name, and why.
func Refused(name string) (reason string, refused bool) {
	for _, r := range refusals {
		for _, p := range r.prefixes {
			if strings.HasPrefix(name, p) {
				return fmt.Sprintf("%s (functions starting with %q)", r.reason, p), true
			}
		}
	}
	return "", false
}

// kernelBlacklist is the kernel's own list of functions kprobes may not
// use; it is readable only with debugfs mounted, so a miss proves nothing.
const kernelBlacklist = "/sys/kernel/debug/kprobes/blacklist"

func kernelBlacklisted(name string) bool {
	f, err := os.Open(kernelBlacklist)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "0xffffffff81000000-0xffffffff81000010	name"
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[len(fields)-1] == name {
			return true
		}
	}
	return false
}

// checkFunction decides whether fn can be probed here. What this kernel
// lacks (the function, kprobes) is an *catalog.UnsupportedError.
func checkFunction(k *catalog.Kernel, fn string) error {
	if err := ValidateFunction(fn); err != nil {
		return err
	}
	unsupported := func(reason string) error { return &catalog.UnsupportedError{Entry: Info.Name, Reason: reason} }
	// Before the kprobe check, so that a misspelt function is reported as
	// such even where kprobes are missing.
	if !catalog.KernelSymbolExists(fn) {
		return unsupported(fmt.Sprintf("kernel function %s does not exist on this kernel (not in /proc/kallsyms: misspelt, inlined, or renamed in this release)", fn))
	}
	if kernelBlacklisted(fn) {
		return unsupported(fmt.Sprintf("kernel function %s is on the kernel's kprobe blacklist (%s)", fn, kernelBlacklist))
	}
	if err := k.Has(catalog.Requirement{Feature: catalog.FeatureKprobe, Name: fn}); err != nil {
		return unsupported(err.Error())
	}
	return nil
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	if err := p.Validate(Info); err != nil {
		return nil, err
	}
	fn := strings.TrimSpace(p.Target)
	if err := checkFunction(k, fn); err != nil {
		return nil, err
	}
	return start(k, p, fn, "kprobe", attachKprobes)
}

// attachFunc attaches the entry and return programs to target. Start uses
// kprobes; tests on kernels without them drive the same programs through
// uprobes (also BPF_PROG_TYPE_KPROBE).
type attachFunc func(ls *catalog.Links, target string, entry, ret *ebpf.Program) error

func attachKprobes(ls *catalog.Links, fn string, entry, ret *ebpf.Program) error {
	// Return probe first: a call entered before it was attached would
	// leave a start that no return ever consumes.
	if err := ls.Kretprobe(fn, ret); err != nil {
		return err
	}
	return ls.Kprobe(fn, entry)
}

// objects names only what this entry loads.
type objects struct {
	KfuncEntry  *ebpf.Program `ebpf:"kfunc_entry"`
	KfuncReturn *ebpf.Program `ebpf:"kfunc_return"`
	Starts      *ebpf.Map     `ebpf:"starts"`
	Stats       *ebpf.Map     `ebpf:"stats"`
	Dropped     *ebpf.Map     `ebpf:"dropped"`
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.KfuncEntry, o.KfuncReturn, o.Starts, o.Stats, o.Dropped)
}

type trace struct {
	catalog.Session
	target string
	objs   objects
}

func start(k *catalog.Kernel, p catalog.Params, target, mode string, attach attachFunc) (_ catalog.Trace, err error) {
	spec, err := loadKfunc()
	if err != nil {
		return nil, fmt.Errorf("kfunc: read BPF spec: %w", err)
	}
	if err := catalog.SetFilters(spec, p); err != nil {
		return nil, fmt.Errorf("kfunc: %w", err)
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: mode}, target: target}
	t.Objects, t.Collect, t.Count = &t.objs, t.collect, t.count
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("kfunc: %w", err)
	}
	if err := attach(&t.Links, target, t.objs.KfuncEntry, t.objs.KfuncReturn); err != nil {
		t.Abort()
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			// Several static functions share the name (recent kernels
			// refuse to guess which one is meant).
			return nil, fmt.Errorf("kfunc: %w (%s names more than one kernel function)", err, target)
		}
		if errors.Is(err, unix.EINVAL) {
			// The kernel refuses functions in its own NOKPROBE list and
			// addresses that are not a function's first instruction.
			return nil, fmt.Errorf("kfunc: %w (the kernel refuses to probe %s: it may be on its kprobe blacklist or not be a probeable function)", err, target)
		}
		return nil, fmt.Errorf("kfunc: %w", err)
	}
	t.Begin()
	return t, nil
}

// count sums the calls counted so far; it walks the map, which is fine at
// the rate of a progress display.
func (t *trace) count() uint64 {
	a, err := readStats(t.objs.Stats)
	if err != nil {
		return 0
	}
	return a.calls()
}

func (t *trace) collect() (*catalog.Result, error) {
	a, readErr := readStats(t.objs.Stats)
	running, runErr := countKeys(t.objs.Starts)
	dropped, dropErr := catalog.SumPerCPU(t.objs.Dropped, 0)
	a.running, a.dropped = running, dropped
	return a.result(t.target, t.Params, t.Traced()), errors.Join(readErr, runErr, dropErr)
}

func readStats(m *ebpf.Map) (aggregate, error) {
	a := newAggregate()
	err := catalog.EachEntry(m, func(key *kfuncKfKey, val *kfuncKfStats) {
		a.add(proc{pid: key.Tgid, comm: catalog.CString(key.Comm[:])}, val)
	})
	return a, err
}

func countKeys(m *ebpf.Map) (uint64, error) {
	var n uint64
	err := catalog.EachEntry(m, func(*uint32, *uint64) { n++ })
	return n, err
}

// proc is a process under one command name (an exec renames it).
type proc struct {
	pid  uint32
	comm string
}

func procLess(x, y proc) bool {
	if x.pid != y.pid {
		return x.pid < y.pid
	}
	return x.comm < y.comm
}

type procStats struct {
	calls, totalNs, maxNs uint64
	slots                 [catalog.Log2Slots]uint64
}

type aggregate struct {
	byProc           map[proc]*procStats
	running, dropped uint64
}

func newAggregate() aggregate { return aggregate{byProc: map[proc]*procStats{}} }

func (a *aggregate) add(p proc, v *kfuncKfStats) {
	if v.Calls == 0 {
		return
	}
	s := a.byProc[p]
	if s == nil {
		s = &procStats{}
		a.byProc[p] = s
	}
	s.calls += v.Calls
	s.totalNs += v.TotalNs
	s.maxNs = max(s.maxNs, v.MaxNs)
	catalog.AddSlots(s.slots[:], v.Hist.Slots[:])
}

func (a *aggregate) calls() uint64 {
	var n uint64
	for _, s := range a.byProc {
		n += s.calls
	}
	return n
}

// histProcs is how many of the busiest processes get their own histogram
// besides the one of all calls.
const histProcs = 5

func (a *aggregate) result(fn string, p catalog.Params, d time.Duration) *catalog.Result {
	total := a.calls()
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: total, Lost: a.dropped}
	secs := d.Seconds()

	byCalls := make(map[proc]uint64, len(a.byProc))
	var all procStats
	for k, s := range a.byProc {
		byCalls[k] = s.calls
		all.totalNs += s.totalNs
		all.maxNs = max(all.maxNs, s.maxNs)
		catalog.AddSlots(all.slots[:], s.slots[:])
	}
	top, _ := catalog.TopN(byCalls, catalog.MaxRows, procLess)
	tab := catalog.Table{Title: "calls of " + fn + " by process", Columns: []string{"pid", "comm", "calls", "per_sec", "total", "avg", "max"}}
	for _, r := range top {
		s := a.byProc[r.Key]
		tab.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(s.calls), perSec(s.calls, secs),
			ns(s.totalNs), ns(s.totalNs/s.calls), ns(s.maxNs))
	}
	tab.TotalRows = len(a.byProc)
	res.Tables = []catalog.Table{tab}

	overall := catalog.Log2Histogram("latency of "+fn+" (all calls)", "ns", all.slots[:])
	res.Histograms = []catalog.Histogram{overall}
	for i, r := range top {
		if i == histProcs || len(top) == 1 {
			break
		}
		res.Histograms = append(res.Histograms, catalog.Log2Histogram(
			fmt.Sprintf("latency of %s in %s (pid %d)", fn, r.Key.comm, r.Key.pid), "ns", a.byProc[r.Key].slots[:]))
	}

	res.Summary = fmt.Sprintf("%s called %d times in %.1fs (%s/s) by %d processes", fn, total, secs, perSec(total, secs), len(pids(a.byProc)))
	if total > 0 {
		res.Summary += fmt.Sprintf("; latency p50 %s p99 %s max %s; most: %s (pid %d) %d calls",
			ns(overall.P50), ns(overall.P99), ns(all.maxNs), top[0].Key.comm, top[0].Key.pid, top[0].Score)
	}
	if a.running > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d calls had not returned when the trace stopped (still running, or a function that never returns): not counted", a.running))
	}
	if a.dropped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d calls not counted because too many threads or processes called it at once (counted in lost)", a.dropped))
	}
	if p.MinLatency > 0 {
		res.Notes = append(res.Notes, "only calls of at least "+p.MinLatency.String()+" are counted")
	}
	return res
}

func perSec(n uint64, secs float64) string {
	if secs <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(n)/secs)
}

func ns(v uint64) string { return time.Duration(v).String() }

func pids(m map[proc]*procStats) map[uint32]bool {
	s := map[uint32]bool{}
	for k := range m {
		s[k.pid] = true
	}
	return s
}
