// Package open is the catalog entry that answers "which files are opened,
// and which opens fail": every open/openat/openat2 with its flags and
// result, the most opened paths and the failures by errno and path.
package open

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"golang.org/x/sys/unix"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:    "open",
	Answers: "which files are opened, and which opens fail (ENOENT, EACCES, EMFILE...)",
	Reports: "pid, tid, uid, comm, path (as passed: relative paths are relative to the caller's cwd or dirfd), flags, fd or errno; top paths; failures by errno and by path; opens by process",
	Aliases: []string{"opensnoop", "open", "openat", "file_open", "statsnoop"},
	Tracepoints: []string{"syscalls:sys_enter_openat", "syscalls:sys_exit_openat", "syscalls:sys_enter_openat2", "syscalls:sys_exit_openat2",
		"syscalls:sys_enter_open", "syscalls:sys_exit_open"},
	Functions: []string{"do_sys_open", "do_sys_openat2", "do_filp_open", "__x64_sys_openat", "__arm64_sys_openat", "__x64_sys_open", "vfs_open"},
	Keywords:  []string{"open", "file not found", "ENOENT", "EACCES", "permission denied", "EMFILE", "too many open files", "missing file", "config file"},
	Filters:   []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup, catalog.FilterFailed},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_enter_openat"},
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_exit_openat"},
	},
	Attach:  []string{"tracepoint"},
	Streams: true,
}

// Syscall says which system call opened the file.
type Syscall uint32

// The syscalls traced, as the BPF program numbers them.
const (
	SysOpen Syscall = iota
	SysOpenat
	SysOpenat2
)

func (s Syscall) String() string {
	switch s {
	case SysOpen:
		return "open"
	case SysOpenat:
		return "openat"
	case SysOpenat2:
		return "openat2"
	}
	return fmt.Sprintf("syscall %d", uint32(s))
}

// Event is one open, decoded.
type Event struct {
	PID, TID int32
	UID      uint32
	Comm     string
	Path     string
	Flags    uint64
	Mode     uint32
	Syscall  Syscall
	// Ret is the new fd, or -errno.
	Ret int32
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
	TpEnterOpen    *ebpf.Program `ebpf:"tp_enter_open"`
	TpEnterOpenat  *ebpf.Program `ebpf:"tp_enter_openat"`
	TpEnterOpenat2 *ebpf.Program `ebpf:"tp_enter_openat2"`
	TpExitOpen     *ebpf.Program `ebpf:"tp_exit_open"`
	openMaps
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpEnterOpen, o.TpEnterOpenat, o.TpEnterOpenat2, o.TpExitOpen, &o.openMaps)
}

type trace struct {
	catalog.Session
	objs  objects
	notes []string

	mu  sync.Mutex // guards agg: written by the stream goroutine, read by Stop
	agg aggregate
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadOpen)
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
		return nil, fmt.Errorf("open: %w", err)
	}
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("open: %w", err)
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
	for _, a := range []struct {
		name     string
		prog     *ebpf.Program
		optional string // why the tracepoint may be missing
	}{
		// Exits first: an enter without its exit would leave a pending
		// entry behind, an exit without its enter is simply ignored.
		{"sys_exit_openat", t.objs.TpExitOpen, ""},
		{"sys_exit_openat2", t.objs.TpExitOpen, "openat2(2) appeared in Linux 5.6"},
		{"sys_exit_open", t.objs.TpExitOpen, "open(2) does not exist on this architecture (arm64 has only openat)"},
		{"sys_enter_openat", t.objs.TpEnterOpenat, ""},
		{"sys_enter_openat2", t.objs.TpEnterOpenat2, "openat2(2) appeared in Linux 5.6"},
		{"sys_enter_open", t.objs.TpEnterOpen, "open(2) does not exist on this architecture (arm64 has only openat)"},
	} {
		if a.optional != "" && !catalog.TracepointExists("syscalls/"+a.name) {
			if strings.HasPrefix(a.name, "sys_enter") {
				t.notes = append(t.notes, "not traced: "+a.optional)
			}
			continue
		}
		if err := t.Links.Tracepoint("syscalls", a.name, a.prog); err != nil {
			return nil, fmt.Errorf("open: %w", err)
		}
	}
	t.Begin()
	return t, nil
}

func (t *trace) handle(raw []byte) {
	var rec openOpenEvent
	if err := catalog.Decode(raw, &rec); err != nil {
		t.mu.Lock()
		t.agg.malformed++
		t.mu.Unlock()
		return
	}
	ev := decodeEvent(&rec)
	t.mu.Lock()
	t.agg.add(ev)
	t.mu.Unlock()
}

func decodeEvent(rec *openOpenEvent) Event {
	return Event{
		PID: rec.Pid, TID: rec.Tid, UID: rec.Uid,
		Comm:    catalog.CString(rec.Comm[:]),
		Path:    catalog.CString(rec.Path[:]),
		Flags:   rec.Flags,
		Mode:    rec.Mode,
		Syscall: Syscall(rec.Syscall),
		Ret:     rec.Retval,
	}
}

func (t *trace) collect() (*catalog.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := t.agg.result(t.Params)
	res.Notes = append(res.Notes, t.notes...)
	return res, nil
}

// aggregate is the user-space side: the BPF program streams every open
// (the samples need individual events), Go counts them.
type aggregate struct {
	total, failed, malformed uint64
	opens                    map[string]uint64 // by path
	pathFailed               map[string]uint64
	failures                 map[failKey]uint64
	byErrno                  map[int32]uint64
	byProc                   map[procKey]uint64
	procFailed               map[procKey]uint64
	samples                  []Event
}

type failKey struct {
	path  string
	errno int32
}

type procKey struct {
	pid  int32
	comm string
}

func newAggregate() aggregate {
	return aggregate{
		opens: map[string]uint64{}, pathFailed: map[string]uint64{},
		failures: map[failKey]uint64{}, byErrno: map[int32]uint64{},
		byProc: map[procKey]uint64{}, procFailed: map[procKey]uint64{},
	}
}

func (a *aggregate) add(ev Event) {
	a.total++
	a.opens[ev.Path]++
	pk := procKey{ev.PID, ev.Comm}
	a.byProc[pk]++
	if ev.Ret < 0 {
		a.failed++
		a.pathFailed[ev.Path]++
		a.failures[failKey{ev.Path, -ev.Ret}]++
		a.byErrno[-ev.Ret]++
		a.procFailed[pk]++
	}
	// Failures are what a diagnosis usually needs: keep the first ones
	// even when successful opens filled the samples.
	switch {
	case len(a.samples) < catalog.MaxSamples:
		a.samples = append(a.samples, ev)
	case ev.Ret < 0:
		for i := range a.samples {
			if a.samples[i].Ret >= 0 {
				a.samples[i] = ev
				break
			}
		}
	}
}

func (a *aggregate) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: a.total}

	top, total := catalog.TopN(a.opens, catalog.MaxRows, func(x, y string) bool { return x < y })
	paths := catalog.Table{Title: "top opened paths", Columns: []string{"path", "opens", "failed"}}
	for _, r := range top {
		paths.AddRow(r.Key, catalog.U(r.Score), catalog.U(a.pathFailed[r.Key]))
	}
	paths.TotalRows = total

	fails, total := catalog.TopN(a.failures, catalog.MaxRows, func(x, y failKey) bool {
		if x.path != y.path {
			return x.path < y.path
		}
		return x.errno < y.errno
	})
	failTab := catalog.Table{Title: "failed opens by path", Columns: []string{"path", "error", "count"}}
	for _, r := range fails {
		failTab.AddRow(r.Key.path, catalog.ErrnoName(int64(r.Key.errno)), catalog.U(r.Score))
	}
	failTab.TotalRows = total

	errnos, total := catalog.TopN(a.byErrno, catalog.MaxRows, func(x, y int32) bool { return x < y })
	errTab := catalog.Table{Title: "failed opens by error", Columns: []string{"error", "count"}}
	for _, r := range errnos {
		errTab.AddRow(catalog.ErrnoName(int64(r.Key)), catalog.U(r.Score))
	}
	errTab.TotalRows = total

	procs, total := catalog.TopN(a.byProc, catalog.MaxRows, func(x, y procKey) bool { return x.pid < y.pid })
	procTab := catalog.Table{Title: "opens by process", Columns: []string{"pid", "comm", "opens", "failed"}}
	for _, r := range procs {
		procTab.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(r.Score), catalog.U(a.procFailed[r.Key]))
	}
	procTab.TotalRows = total

	samples := &catalog.Table{Title: "sample opens", Columns: []string{"pid", "tid", "uid", "comm", "syscall", "flags", "result", "path"}}
	for _, ev := range a.samples {
		samples.AddRow(catalog.U(ev.PID), catalog.U(ev.TID), catalog.U(ev.UID), ev.Comm, ev.Syscall.String(),
			FlagString(ev.Flags), retString(ev.Ret), ev.Path)
	}
	samples.TotalRows = int(a.total)

	res.Tables = []catalog.Table{paths, failTab, errTab, procTab}
	res.Samples = samples
	res.Summary = fmt.Sprintf("%d opens, %d failed, %d distinct paths", a.total, a.failed, len(a.opens))
	if len(top) > 0 {
		res.Summary += fmt.Sprintf("; most opened: %s (%d)", top[0].Key, top[0].Score)
	}
	if len(errnos) > 0 {
		res.Summary += fmt.Sprintf("; most common error: %s (%d)", catalog.ErrnoName(int64(errnos[0].Key)), errnos[0].Score)
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
	return "fd " + catalog.U(ret)
}

// The flags worth naming, in display order. O_RDONLY is 0 and shows as the
// access mode.
var flagNames = []struct {
	bit  uint64
	name string
}{
	{unix.O_CREAT, "O_CREAT"}, {unix.O_EXCL, "O_EXCL"}, {unix.O_NOCTTY, "O_NOCTTY"},
	{unix.O_TRUNC, "O_TRUNC"}, {unix.O_APPEND, "O_APPEND"}, {unix.O_NONBLOCK, "O_NONBLOCK"},
	{unix.O_DSYNC, "O_DSYNC"}, {unix.O_DIRECT, "O_DIRECT"}, {unix.O_LARGEFILE, "O_LARGEFILE"},
	{unix.O_DIRECTORY, "O_DIRECTORY"}, {unix.O_NOFOLLOW, "O_NOFOLLOW"}, {unix.O_NOATIME, "O_NOATIME"},
	{unix.O_CLOEXEC, "O_CLOEXEC"}, {unix.O_PATH, "O_PATH"},
	// O_TMPFILE includes O_DIRECTORY's bit; __O_TMPFILE alone is the rest.
	{unix.O_TMPFILE &^ unix.O_DIRECTORY, "O_TMPFILE"},
}

// FlagString renders open flags as O_WRONLY|O_CREAT|..., with any unnamed
// bits in hex.
func FlagString(flags uint64) string {
	parts := []string{[]string{"O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"}[flags&unix.O_ACCMODE]}
	rest := flags &^ unix.O_ACCMODE
	// O_SYNC is __O_SYNC|O_DSYNC: name it once.
	if rest&unix.O_SYNC == unix.O_SYNC {
		parts = append(parts, "O_SYNC")
		rest &^= unix.O_SYNC
	}
	for _, f := range flagNames {
		if f.bit != 0 && rest&f.bit == f.bit {
			parts = append(parts, f.name)
			rest &^= f.bit
		}
	}
	if rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", rest))
	}
	sort.Strings(parts[1:])
	return strings.Join(parts, "|")
}
