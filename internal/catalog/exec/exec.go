// Package exec is the catalog entry that answers "what is being started":
// every execve/execveat with its parent, user, filename, bounded argv and
// result, counts by command and the failed ones.
package exec

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "exec",
	Answers:     "what is being started",
	Reports:     "pid, ppid, uid, comm, filename, argv (bounded), return value; counts by comm; failed execs. The comm filter is on the program started (execsnoop --name): a successful exec by its new comm, a failed one by its filename's basename cut to 15 characters (the caller's comm when the filename is unreadable); pid, tid, uid and cgroup filter the caller",
	Aliases:     []string{"execsnoop", "exec", "execve", "process_exec", "new_processes"},
	Tracepoints: []string{"syscalls:sys_enter_execve", "syscalls:sys_exit_execve", "syscalls:sys_enter_execveat", "syscalls:sys_exit_execveat", "sched:sched_process_exec"},
	Functions:   []string{"execve", "do_execve", "do_execveat_common", "bprm_execve", "__x64_sys_execve", "__arm64_sys_execve"},
	Keywords:    []string{"exec", "process start", "spawn", "fork bomb", "short-lived"},
	Filters:     []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup, catalog.FilterFailed},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_enter_execve"},
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_exit_execve"},
		{Feature: catalog.FeatureTracepoint, Name: "sched/sched_process_exec"},
	},
	Attach:  []string{"tracepoint"},
	Streams: true,
}

// ringBytes sizes the ring for exec rates (thousands per second at most,
// ~400 bytes each, drained every 50 ms): a small ring stays in the CPU
// caches, where writing each event into a cold multi-MiB ring cost ~1 us
// per exec in cache misses.
const ringBytes = 256 << 10

// Event is one exec, decoded.
type Event struct {
	PID, TID, PPID int32
	UID            uint32
	Comm           string
	Filename       string
	Args           []string
	ArgsTruncated  bool
	Ret            int32
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

// objects names what this entry loads: exitObjects always, the sys_enter
// programs only when the trace keeps the pointers at entry (keepAtEntry).
type objects struct {
	exitObjects
	TpEnterExecve   *ebpf.Program `ebpf:"tp_enter_execve"`
	TpEnterExecveat *ebpf.Program `ebpf:"tp_enter_execveat"`
}

type exitObjects struct {
	TpExitExecve   *ebpf.Program `ebpf:"tp_exit_execve"`
	TpExitExecveat *ebpf.Program `ebpf:"tp_exit_execveat"`
	TpSchedExec    *ebpf.Program `ebpf:"tp_sched_exec"`
	execMaps
}

type trace struct {
	catalog.Session
	objs objects

	mu  sync.Mutex // guards agg: written by the stream goroutine, read by collect
	agg aggregate
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadExec)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint"}, agg: newAggregate()}
	t.Objects, t.Collect = &t.objs, t.collect
	usePerf, err := catalog.PrepareEvents(k, spec)
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if !usePerf && k.RingBytes == 0 {
		spec.Maps["events"].MaxEntries = ringBytes
		if err := spec.Variables["wakeup_bytes"].Set(uint64(ringBytes / 4)); err != nil {
			return nil, fmt.Errorf("exec: %w", err)
		}
	}
	atEntry := keepAtEntry(k, p)
	slots := uint32(1)
	var load any = &t.objs.exitObjects
	if atEntry {
		slots, load = pendingSlots(readPidMax()), &t.objs
	}
	spec.Maps["pending"].MaxEntries = slots
	if err := spec.Variables["pending_mask"].Set(slots - 1); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if err := spec.Variables["at_entry"].Set(atEntry); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if err := k.Load(spec, load); err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	// The stream starts before the programs attach so no early event waits.
	if err := t.StartStream(catalog.StreamObjects{Events: t.objs.Events, EventsPerf: t.objs.EventsPerf, Lost: t.objs.Lost}, usePerf, t.handle); err != nil {
		return nil, err
	}
	// sched_process_exec first: an exec between two attaches is then at
	// worst missed, never left half-seen.
	for _, a := range []struct {
		group, name string
		prog        *ebpf.Program
	}{
		{"sched", "sched_process_exec", t.objs.TpSchedExec},
		{"syscalls", "sys_exit_execve", t.objs.TpExitExecve},
		{"syscalls", "sys_exit_execveat", t.objs.TpExitExecveat},
		{"syscalls", "sys_enter_execve", t.objs.TpEnterExecve},
		{"syscalls", "sys_enter_execveat", t.objs.TpEnterExecveat},
	} {
		if a.prog == nil {
			continue // sys_enter, when the pointers are read at exit
		}
		if err := t.Links.Tracepoint(a.group, a.name, a.prog); err != nil {
			return nil, fmt.Errorf("exec: %w", err)
		}
	}
	t.Begin()
	return t, nil
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpEnterExecve, o.TpEnterExecveat, o.TpExitExecve, o.TpExitExecveat, o.TpSchedExec, &o.execMaps)
}

func (t *trace) handle(raw []byte) {
	var rec execExecEvent
	if err := decodeRecord(raw, &rec); err != nil {
		t.mu.Lock()
		t.agg.malformed++
		t.mu.Unlock()
		return
	}
	ev := decodeEvent(&rec)
	t.mu.Lock()
	t.agg.add(ev)
	if observe != nil {
		observe(ev)
	}
	t.mu.Unlock()
}

// observe, when set before a trace starts (tests), sees every event: the
// result keeps only a few samples.
var observe func(Event)

// keepAtEntry tells whether sys_enter must keep each exec's pointers
// (bpf/exec.bpf.c): when a filter has to see the caller before exec (its
// pid, tid, uid, cgroup), or when the kernel cannot read a failed exec's
// arguments back from its saved registers at exit. The comm filter is on
// the program started, decided after the exec, so it needs no entry hook.
// Otherwise the sys_enter programs are neither loaded nor attached.
func keepAtEntry(k *catalog.Kernel, p catalog.Params) bool {
	for _, f := range p.Set() {
		if f != catalog.FilterFailed && f != catalog.FilterComm {
			return true
		}
	}
	return !k.Have(catalog.FeatureTaskPtRegs)
}

// pendingSlots sizes the map of execs in flight (bpf/exec.bpf.c): a slot
// per tid modulo a power of two. Up to 64Ki slots every tid below pid_max
// has its own; above, two execs in flight at once may share one, and the
// older is counted lost.
func pendingSlots(pidMax uint32) uint32 {
	const most = 1 << 16
	slots := uint32(1024)
	for slots < pidMax && slots < most {
		slots <<= 1
	}
	return slots
}

// readPidMax returns kernel.pid_max, or a value above any slot count when
// it cannot be read.
func readPidMax() uint32 {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 1 << 31
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 1 << 31
	}
	return uint32(n)
}

// headerSize is the fixed part of an event: the kernel sends only the
// filename and argv bytes used after it.
var headerSize = int(unsafe.Offsetof(execExecEvent{}.Data))

// decodeRecord copies a variable-length event into rec.
func decodeRecord(raw []byte, rec *execExecEvent) error {
	if len(raw) < headerSize {
		return fmt.Errorf("exec event record of %d bytes, want at least %d", len(raw), headerSize)
	}
	*rec = execExecEvent{}
	dst := unsafe.Slice((*byte)(unsafe.Pointer(rec)), unsafe.Sizeof(*rec))
	copy(dst, raw)
	if used := int(rec.FilenameSize) + int(rec.ArgsSize); headerSize+used > len(raw) || used > len(rec.Data) {
		return fmt.Errorf("exec event record of %d bytes claims %d bytes of filename and %d of argv", len(raw), rec.FilenameSize, rec.ArgsSize)
	}
	return nil
}

// decodeEvent reads a record decodeRecord accepted.
func decodeEvent(rec *execExecEvent) Event {
	fs := int(rec.FilenameSize)
	return Event{
		PID: rec.Pid, TID: rec.Tid, PPID: rec.Ppid, UID: rec.Uid,
		Comm:          catalog.CString(rec.Comm[:]),
		Filename:      catalog.CString(rec.Data[:fs]),
		Args:          catalog.SplitArgs(rec.Data[fs:], int(rec.ArgsSize)),
		ArgsTruncated: rec.Truncated != 0,
		Ret:           rec.Retval,
	}
}

func (t *trace) collect() (*catalog.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.agg.result(t.Params), nil
}

// aggregate is the user-space side: counts by comm, failures, samples.
type aggregate struct {
	total, failed, malformed uint64
	byComm                   map[string]uint64
	failures                 map[failKey]uint64
	samples                  []Event
}

type failKey struct {
	filename string
	errno    int32
}

func newAggregate() aggregate {
	return aggregate{byComm: map[string]uint64{}, failures: map[failKey]uint64{}}
}

func (a *aggregate) add(ev Event) {
	a.total++
	if ev.Ret < 0 {
		a.failed++
		a.failures[failKey{ev.Filename, -ev.Ret}]++
		// A failed exec keeps the caller's comm: count the program asked
		// for, as the comm filter does (bpf/exec.bpf.c).
		name := ev.Comm
		if ev.Filename != "" {
			name = baseName(ev.Filename)
		}
		a.byComm[name]++
	} else {
		a.byComm[ev.Comm]++
	}
	if len(a.samples) < catalog.MaxSamples {
		a.samples = append(a.samples, ev)
	}
}

func baseName(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		path = path[i+1:]
	}
	if len(path) > 15 {
		path = path[:15]
	}
	return path
}

func (a *aggregate) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: a.total}
	top, _ := catalog.TopN(a.byComm, catalog.MaxRows, func(x, y string) bool { return x < y })
	byComm := catalog.Table{Title: "execs by command", Columns: []string{"comm", "count"}}
	for _, r := range top {
		byComm.AddRow(r.Key, catalog.U(r.Score))
	}
	byComm.TotalRows = len(a.byComm)
	fails, _ := catalog.TopN(a.failures, catalog.MaxRows, func(x, y failKey) bool { return x.filename < y.filename })
	failTab := catalog.Table{Title: "failed execs", Columns: []string{"filename", "error", "count"}}
	for _, r := range fails {
		failTab.AddRow(r.Key.filename, catalog.ErrnoName(int64(r.Key.errno)), catalog.U(r.Score))
	}
	failTab.TotalRows = len(a.failures)
	samples := &catalog.Table{Title: "sample execs", Columns: []string{"pid", "ppid", "uid", "comm", "ret", "filename", "argv"}}
	for _, ev := range a.samples {
		argv := strings.Join(ev.Args, " ")
		if ev.ArgsTruncated {
			argv += " " + catalog.TruncMarker
		}
		samples.AddRow(catalog.U(ev.PID), catalog.U(ev.PPID), catalog.U(ev.UID), ev.Comm, retString(ev.Ret), ev.Filename, argv)
	}
	samples.TotalRows = int(a.total)
	res.Tables = []catalog.Table{byComm, failTab}
	res.Samples = samples
	res.Summary = fmt.Sprintf("%d execs, %d failed, %d distinct commands", a.total, a.failed, len(a.byComm))
	if len(top) > 0 {
		res.Summary += fmt.Sprintf("; most started: %s (%d)", top[0].Key, top[0].Score)
	}
	if a.malformed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d malformed event records ignored", a.malformed))
	}
	return res
}

func retString(ret int32) string {
	if ret < 0 {
		return catalog.ErrnoName(int64(ret))
	}
	return "0"
}
