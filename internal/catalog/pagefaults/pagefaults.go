// Package pagefaults is the catalog entry that answers "who takes page
// faults": major (waited for I/O) and minor faults by process, counted in
// the kernel from the page-fault software perf events.
package pagefaults

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"golang.org/x/sys/unix"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:    "pagefaults",
	Answers: "which processes take major and minor page faults",
	Reports: "per process: minor faults, major faults (each one waited for the page to be read); totals",
	Aliases: []string{"pagefaults", "page_faults", "majfault", "faults", "memleak-faults", "perf-faults"},
	// A request for the x86 tracepoint resolves here: this entry answers
	// the same question on every architecture.
	Tracepoints: []string{"exceptions:page_fault_user", "exceptions:page_fault_kernel"},
	Functions:   []string{"handle_mm_fault", "do_user_addr_fault", "do_page_fault", "filemap_fault", "do_anonymous_page", "mm_account_fault", "exc_page_fault"},
	Keywords:    []string{"page fault", "major fault", "minor fault", "swapping", "thrashing", "page cache miss", "mmap", "memory pressure"},
	Filters:     []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeaturePerfEvent},
	},
	Attach:  []string{"perf_event"},
	Streams: false,
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

type objects struct {
	OnMinorFault *ebpf.Program `ebpf:"on_minor_fault"`
	OnMajorFault *ebpf.Program `ebpf:"on_major_fault"`
	Faults       *ebpf.Map     `ebpf:"faults"`
	Dropped      *ebpf.Map     `ebpf:"dropped"`
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.OnMinorFault, o.OnMajorFault, o.Faults, o.Dropped)
}

type trace struct {
	catalog.Session
	objs objects
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadPagefaults)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p}}
	t.Objects, t.Collect = &t.objs, t.collect
	t.Perf.ForceIoctl = forceIoctl
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("pagefaults: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	for _, e := range []struct {
		config uint64
		name   string
		prog   *ebpf.Program
	}{
		{unix.PERF_COUNT_SW_PAGE_FAULTS_MIN, "page-faults-min", t.objs.OnMinorFault},
		{unix.PERF_COUNT_SW_PAGE_FAULTS_MAJ, "page-faults-maj", t.objs.OnMajorFault},
	} {
		// Period 1: the program sees every fault. A software event with
		// period 1 overflows once per event and is never throttled.
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: e.config, Sample: 1}
		if err := t.Perf.OpenAll(e.name, attr, e.prog); err != nil {
			return nil, fmt.Errorf("pagefaults: %w", err)
		}
	}
	// Enable only once every CPU has its program, so no CPU starts
	// counting earlier than the others.
	if err := t.Perf.Enable(); err != nil {
		return nil, fmt.Errorf("pagefaults: %w", err)
	}
	t.Begin()
	return t, nil
}

func (t *trace) collect() (*catalog.Result, error) {
	snap, err := t.read()
	res := snap.result(t.Params)
	mode := "bpf_link"
	if !t.Perf.ViaLink() {
		mode = "ioctl"
	}
	res.Attach = "perf_event (software page-faults-min/maj, period 1, every CPU), " + mode
	return res, err
}

// Faults is one process's page faults.
type Faults struct {
	PID          uint32
	Comm         string
	Minor, Major uint64
}

type snapshot struct {
	procs   []Faults
	dropped uint64
}

func (t *trace) read() (snapshot, error) {
	var snap snapshot
	var tgid uint32
	var val pagefaultsFaultStats
	it := t.objs.Faults.Iterate()
	for it.Next(&tgid, &val) {
		snap.procs = append(snap.procs, Faults{PID: tgid, Comm: catalog.CString(val.Comm[:]), Minor: val.Minor, Major: val.Major})
	}
	var errs []error
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read faults: %w", err))
	}
	d, err := catalog.SumPerCPU(t.objs.Dropped, 0)
	if err != nil {
		errs = append(errs, err)
	}
	snap.dropped = d
	return snap, errors.Join(errs...)
}

func (s snapshot) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}
	var minor, major uint64
	all := map[int]uint64{}
	maj := map[int]uint64{}
	for i, f := range s.procs {
		minor += f.Minor
		major += f.Major
		all[i] = f.Minor + f.Major
		if f.Major > 0 {
			maj[i] = f.Major
		}
	}
	res.Events = minor + major
	less := func(a, b int) bool { return s.procs[a].PID < s.procs[b].PID }
	row := func(t *catalog.Table, i int) {
		f := s.procs[i]
		t.AddRow(catalog.U(f.PID), f.Comm, catalog.U(f.Major), catalog.U(f.Minor))
	}
	cols := []string{"pid", "comm", "major", "minor"}

	// Major faults first: each one is a wait for storage, minor ones
	// cost microseconds.
	topMaj, total := catalog.TopN(maj, catalog.MaxRows, less)
	majTab := catalog.Table{Title: "major faults by process", Columns: cols}
	for _, r := range topMaj {
		row(&majTab, r.Key)
	}
	majTab.TotalRows = total
	top, total := catalog.TopN(all, catalog.MaxRows, less)
	allTab := catalog.Table{Title: "all faults by process", Columns: cols}
	for _, r := range top {
		row(&allTab, r.Key)
	}
	allTab.TotalRows = total
	res.Tables = []catalog.Table{majTab, allTab}

	res.Summary = fmt.Sprintf("%d major and %d minor page faults in %d processes", major, minor, len(s.procs))
	if len(topMaj) > 0 {
		f := s.procs[topMaj[0].Key]
		res.Summary += fmt.Sprintf("; most major faults: %s (%d) with %d", f.Comm, f.PID, f.Major)
	}
	if len(top) > 0 {
		f := s.procs[top[0].Key]
		res.Summary += fmt.Sprintf("; most faults: %s (%d) with %d", f.Comm, f.PID, f.Major+f.Minor)
	}
	if s.dropped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d faults not counted: the per-process map was full", s.dropped))
	}
	res.Notes = append(res.Notes, "faults the kernel takes on a process's behalf through get_user_pages (e.g. execve copying arguments, process_vm_readv, O_DIRECT) are in the process's rusage but raise no perf event")
	return res
}

// forceIoctl makes tests take the pre-5.15 attach path.
var forceIoctl bool
