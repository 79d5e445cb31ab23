package catalog

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Feature is one kernel capability the catalog may need.
type Feature string

// The features `check` reports and entries require.
const (
	FeatureRoot          Feature = "root"
	FeatureBTF           Feature = "btf"
	FeatureRingBuf       Feature = "ring_buffer"
	FeaturePerfBuf       Feature = "perf_buffer"
	FeatureTracefs       Feature = "tracefs"
	FeatureTracepoint    Feature = "tracepoint"
	FeatureRawTracepoint Feature = "raw_tracepoint"
	FeatureTpBTF         Feature = "tp_btf"
	FeatureKprobe        Feature = "kprobe"
	FeatureUprobe        Feature = "uprobe"
	FeaturePerfEvent     Feature = "perf_event"
	FeatureStackTrace    Feature = "stack_trace"
	// FeatureTaskPtRegs is the bpf_task_pt_regs helper in tracepoint
	// programs (5.15+): a task's saved syscall registers. Only entries
	// that can do without it ask; check does not list it.
	FeatureTaskPtRegs Feature = "task_pt_regs"
)

// AllFeatures lists every feature, in report order.
var AllFeatures = []Feature{FeatureRoot, FeatureBTF, FeatureRingBuf, FeaturePerfBuf, FeatureTracefs,
	FeatureTracepoint, FeatureRawTracepoint, FeatureTpBTF, FeatureKprobe, FeatureUprobe,
	FeaturePerfEvent, FeatureStackTrace}

// State is a probe's verdict.
type State string

// A probe answers yes, no, or cannot tell (e.g. it needed root to try).
const (
	Yes          State = "yes"
	No           State = "no"
	Inconclusive State = "inconclusive"
)

// Status is one feature's probe result.
type Status struct {
	State  State  `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// Features is the result of probing the kernel once.
type Features struct {
	Release string             `json:"kernel_release"`
	Status  map[Feature]Status `json:"features"`
}

// Get returns the status of f (Inconclusive when it was not probed).
func (f *Features) Get(feat Feature) Status {
	if st, ok := f.Status[feat]; ok {
		return st
	}
	return Status{State: Inconclusive, Detail: "not probed"}
}

// Feature returns the status of one feature, probing it on first use.
func (k *Kernel) Feature(feat Feature) Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	if st, ok := k.probed[feat]; ok {
		return st
	}
	st := k.probeFeature(feat)
	k.probed[feat] = st
	return st
}

func (f *Features) zapFields() []zap.Field {
	fields := []zap.Field{zap.String("release", f.Release)}
	for _, feat := range AllFeatures {
		fields = append(fields, zap.String(string(feat), string(f.Get(feat).State)))
	}
	return fields
}

// probeFeature runs the probe of one feature. Probes are lazy: an entry
// pays only for what it asks about (a tracepoint attach probe alone would
// cost ~50 ms, most of it detaching).
func (k *Kernel) probeFeature(feat Feature) Status {
	if k.Disable[feat] {
		return Status{State: No, Detail: "disabled (NANNYAGENT_DISABLE_FEATURES or a test switch)"}
	}
	var err error
	switch feat {
	case FeatureRoot:
		if os.Geteuid() != 0 {
			err = errors.New("not running as root: loading BPF programs needs root (or CAP_BPF+CAP_PERFMON)")
		}
	case FeatureBTF:
		_, err = k.BTF()
	case FeatureRingBuf:
		err = features.HaveMapType(ebpf.RingBuf)
	case FeaturePerfBuf:
		err = features.HaveMapType(ebpf.PerfEventArray)
	case FeatureTracefs:
		_, err = EnsureTracefs()
	case FeatureTracepoint:
		err = probeTracepoint()
	case FeatureRawTracepoint:
		err = probeRawTracepoint()
	case FeatureTpBTF:
		err = probeTpBTF(k)
	case FeatureKprobe:
		err = probeKprobe()
	case FeatureUprobe:
		err = probeUprobe()
	case FeaturePerfEvent:
		err = probePerfEvent()
	case FeatureStackTrace:
		err = features.HaveMapType(ebpf.StackTrace)
	case FeatureTaskPtRegs:
		err = features.HaveProgramHelper(ebpf.TracePoint, asm.FnTaskPtRegs)
	default:
		return Status{State: Inconclusive, Detail: "unknown feature"}
	}
	switch {
	case err == nil:
		return Status{State: Yes}
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return Status{State: Inconclusive, Detail: "permission denied: run as root to probe"}
	default:
		return Status{State: No, Detail: err.Error()}
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// The probes load an empty program and really attach it, because a program
// type can exist while the attach point cannot (kprobes without
// CONFIG_KPROBE_EVENTS, tp_btf without BTF for the tracepoint).
var emptyProgram = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}

func loadEmpty(spec *ebpf.ProgramSpec) (*ebpf.Program, error) {
	spec.Instructions = emptyProgram
	spec.License = "GPL"
	return ebpf.NewProgram(spec)
}

// probeTracepoint loads a tracepoint program and finds a tracepoint's id
// in tracefs; it does not attach (detaching costs ~50 ms), the entries'
// own attach reports what fails there.
func probeTracepoint() error {
	if _, err := EnsureTracefs(); err != nil {
		return err
	}
	prog, err := loadEmpty(&ebpf.ProgramSpec{Type: ebpf.TracePoint})
	if err != nil {
		return err
	}
	prog.Close()
	if !TracepointExists("sched/sched_process_exit") {
		return errors.New("tracefs has no events/sched/sched_process_exit")
	}
	return nil
}

func probeRawTracepoint() error {
	prog, err := loadEmpty(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint})
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exit", Program: prog})
	if err != nil {
		return err
	}
	return l.Close()
}

// probeTpBTF loads a tp_btf program: the load resolves the target in the
// kernel's BTF and is where kernels refuse tracing programs (EPERM on some
// hosts); attaching would only add an RCU-synchronised detach.
func probeTpBTF(k *Kernel) error {
	spec, err := k.BTF()
	if err != nil {
		return fmt.Errorf("needs kernel BTF: %w", err)
	}
	prog, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_process_exit",
		Instructions: emptyProgram, License: "GPL",
	}, ebpf.ProgramOptions{KernelTypes: spec})
	if err != nil {
		return err
	}
	return prog.Close()
}

func probeKprobe() error {
	prog, err := loadEmpty(&ebpf.ProgramSpec{Type: ebpf.Kprobe})
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.Kprobe("vfs_read", prog, nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("this kernel has no kprobe support (CONFIG_KPROBES/CONFIG_KPROBE_EVENTS): %w", err)
		}
		return err
	}
	return l.Close()
}

func probeUprobe() error {
	for _, p := range []string{"/sys/bus/event_source/devices/uprobe/type"} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if dir, err := EnsureTracefs(); err == nil {
		if _, err := os.Stat(dir + "/uprobe_events"); err == nil {
			return nil
		}
	}
	return errors.New("no uprobe PMU and no uprobe_events in tracefs (CONFIG_UPROBE_EVENTS)")
}

func probePerfEvent() error {
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Sample: 1000, Bits: unix.PerfBitFreq | unix.PerfBitDisabled}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, -1, 0, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("perf_event_open cpu-clock: %w", err)
	}
	return unix.Close(fd)
}
