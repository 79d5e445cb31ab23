// Package pagefaults is the catalog entry that answers "who takes page
// faults": major (waited for I/O) and minor faults by process, counted in
// the kernel from the page-fault software perf events.
package pagefaults

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
	params catalog.Params
	objs   objects
	events perfEvents
	start  time.Time

	stopOnce sync.Once
	result   *catalog.Result
	err      error
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	if err := p.Validate(Info); err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	spec, err := loadPagefaults()
	if err != nil {
		return nil, fmt.Errorf("pagefaults: read BPF spec: %w", err)
	}
	if err := catalog.SetFilters(spec, p); err != nil {
		return nil, fmt.Errorf("pagefaults: %w", err)
	}
	t := &trace{params: p}
	if forceIoctl {
		t.events.mode = "ioctl"
	}
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("pagefaults: %w", err)
	}
	defer func() {
		if err != nil {
			_ = t.events.Close()
			_ = t.objs.Close()
		}
	}()
	cpus, err := onlineCPUs()
	if err != nil {
		return nil, fmt.Errorf("pagefaults: %w", err)
	}
	for _, e := range []struct {
		config uint64
		name   string
		prog   *ebpf.Program
	}{
		{unix.PERF_COUNT_SW_PAGE_FAULTS_MIN, "page-faults-min", t.objs.OnMinorFault},
		{unix.PERF_COUNT_SW_PAGE_FAULTS_MAJ, "page-faults-maj", t.objs.OnMajorFault},
	} {
		for _, cpu := range cpus {
			if err := t.events.open(e.config, cpu, e.prog); err != nil {
				return nil, fmt.Errorf("pagefaults: attach perf event %s on cpu %d: %w", e.name, cpu, err)
			}
		}
	}
	// Enable only once every CPU has its program, so no CPU starts
	// counting earlier than the others.
	if err := t.events.enable(); err != nil {
		return nil, fmt.Errorf("pagefaults: %w", err)
	}
	t.start = time.Now()
	return t, nil
}

// Seen is not known while the kernel aggregates.
func (t *trace) Seen() uint64 { return 0 }

func (t *trace) Stop() (*catalog.Result, error) {
	t.stopOnce.Do(func() {
		end := time.Now()
		detachErr := t.events.Close()
		snap, readErr := t.read()
		closeErr := t.objs.Close()
		res := snap.result(t.params)
		res.Start, res.End = t.start, end
		res.Attach = "perf_event (software page-faults-min/maj, period 1, every CPU), " + t.events.mode
		res.Compact()
		t.result = res
		if err := errors.Join(detachErr, readErr, closeErr); err != nil {
			t.err = fmt.Errorf("pagefaults: stop: %w", err)
		}
	})
	return t.result, t.err
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

// perfEvents holds the per-CPU software perf events and their BPF links.
// cilium/ebpf has no public attach for arbitrary perf events, so this opens
// them itself: a BPF link where the kernel has perf links (5.15+), the
// PERF_EVENT_IOC_SET_BPF ioctl otherwise.
type perfEvents struct {
	fds   []int
	links []*link.RawLink
	mode  string
}

func (pe *perfEvents) open(config uint64, cpu int, prog *ebpf.Program) error {
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: config,
		// Period 1: the program sees every fault. A software event with
		// period 1 overflows once per event and is never throttled.
		Sample: 1,
		Bits:   unix.PerfBitDisabled,
	}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("perf_event_open: %w", err)
	}
	pe.fds = append(pe.fds, fd)
	if pe.mode != "ioctl" {
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: ebpf.AttachPerfEvent})
		if err == nil {
			pe.links = append(pe.links, l)
			pe.mode = "bpf_link"
			return nil
		}
		if pe.mode == "bpf_link" || !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("bpf_link_create: %w", err)
		}
	}
	pe.mode = "ioctl"
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, prog.FD()); err != nil {
		return fmt.Errorf("PERF_EVENT_IOC_SET_BPF: %w", err)
	}
	return nil
}

func (pe *perfEvents) enable() error {
	for _, fd := range pe.fds {
		if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
			return fmt.Errorf("enable perf event: %w", err)
		}
	}
	return nil
}

// Close disables every event first, so that all CPUs stop counting
// together, then releases links and events. Idempotent.
func (pe *perfEvents) Close() error {
	var errs []error
	for _, fd := range pe.fds {
		_ = unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_DISABLE, 0)
	}
	for _, l := range pe.links {
		errs = append(errs, l.Close())
	}
	for _, fd := range pe.fds {
		errs = append(errs, unix.Close(fd))
	}
	pe.links, pe.fds = nil, nil
	return errors.Join(errs...)
}

// onlineCPUs lists the CPUs a per-CPU event can be opened on. A CPU that
// comes online during the trace is not covered.
func onlineCPUs() ([]int, error) {
	data, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("read online CPUs: %w", err)
	}
	return parseCPUList(strings.TrimSpace(string(data)))
}

// parseCPUList parses the kernel's CPU list format, e.g. "0-3,5,7-8".
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("bad CPU list %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad CPU list %q", s)
			}
		}
		if a < 0 || b >= 1<<16 {
			return nil, fmt.Errorf("bad CPU list %q", s)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("empty CPU list %q", s)
	}
	return cpus, nil
}
