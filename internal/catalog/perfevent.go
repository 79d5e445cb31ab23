package catalog

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// PerfEvents runs BPF programs on perf events opened on every online CPU
// (profile's cpu-clock sampling, pagefaults' software fault events).
// cilium/ebpf has no public attach for arbitrary perf events, so this opens
// them itself: through a BPF link where the kernel has perf links (5.15+),
// with the PERF_EVENT_IOC_SET_BPF ioctl otherwise (closing the event's fd
// undoes it). The first attach decides the mode for all of them.
type PerfEvents struct {
	// ForceIoctl takes the pre-5.15 path even where links work, so tests
	// cover it here.
	ForceIoctl bool

	fds    []int
	links  []*link.RawLink
	ioctl  bool
	linked bool
}

// OpenAll opens attr on every online CPU with prog on each, disabled:
// Enable starts them together once every program is attached, so no CPU
// counts earlier than the others. name is for errors (e.g. "cpu-clock").
// A CPU that comes online during the trace is not covered.
func (pe *PerfEvents) OpenAll(name string, attr unix.PerfEventAttr, prog *ebpf.Program) error {
	cpus, err := OnlineCPUs()
	if err != nil {
		return err
	}
	for _, cpu := range cpus {
		if err := pe.Open(attr, cpu, prog); err != nil {
			return fmt.Errorf("attach perf event %s on cpu %d: %w", name, cpu, err)
		}
	}
	return nil
}

// Open opens attr on one CPU (for all processes), disabled, and attaches
// prog to it.
func (pe *PerfEvents) Open(attr unix.PerfEventAttr, cpu int, prog *ebpf.Program) error {
	attr.Size = uint32(unsafe.Sizeof(attr))
	attr.Bits |= unix.PerfBitDisabled
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("perf_event_open: %w", err)
	}
	pe.fds = append(pe.fds, fd)
	if !pe.ioctl && !pe.ForceIoctl {
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: ebpf.AttachPerfEvent})
		if err == nil {
			pe.links = append(pe.links, l)
			pe.linked = true
			return nil
		}
		if pe.linked || !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("bpf_link_create: %w", err)
		}
	}
	pe.ioctl = true
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, prog.FD()); err != nil {
		return fmt.Errorf("PERF_EVENT_IOC_SET_BPF: %w", err)
	}
	return nil
}

// ViaLink reports whether the programs are attached through BPF links
// (false: the ioctl fallback).
func (pe *PerfEvents) ViaLink() bool { return !pe.ioctl && !pe.ForceIoctl }

// Enable starts every opened event.
func (pe *PerfEvents) Enable() error {
	for _, fd := range pe.fds {
		if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
			return fmt.Errorf("enable perf event: %w", err)
		}
	}
	return nil
}

// Close disables every event first, so that all CPUs stop counting
// together, then releases links and events. Idempotent.
func (pe *PerfEvents) Close() error {
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

// OnlineCPUs lists the CPUs a per-CPU event can be opened on.
func OnlineCPUs() ([]int, error) {
	data, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("read online CPUs: %w", err)
	}
	return ParseCPUList(strings.TrimSpace(string(data)))
}

// ParseCPUList parses the kernel's CPU list format, e.g. "0-3,5,7-8".
func ParseCPUList(s string) ([]int, error) {
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

// RecursionMisses is how often the kernel skipped progs because another
// BPF program was already running on that CPU (an interrupt arriving in
// the middle of one): those events were never counted, so entries add
// them to Result.Lost and say why in a note. Programs whose stats cannot
// be read count zero.
func RecursionMisses(progs ...*ebpf.Program) uint64 {
	var n uint64
	for _, p := range progs {
		if p == nil {
			continue
		}
		if st, err := p.Stats(); err == nil {
			n += st.RecursionMisses
		}
	}
	return n
}

// AddSkipped counts n events the kernel never ran the programs for
// (RecursionMisses) as lost, with a note saying why; what names the events
// ("resets", "drops").
func (r *Result) AddSkipped(n uint64, what string) {
	if n == 0 {
		return
	}
	r.Lost += n
	r.Notes = append(r.Notes, fmt.Sprintf("%d %s not counted: the kernel skipped the program while another BPF program ran on the same CPU", n, what))
}
