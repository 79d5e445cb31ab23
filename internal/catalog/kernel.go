package catalog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Kernel is what every trace of one process shares: the kernel's BTF,
// parsed once (decoding it costs ~20 ms per load otherwise), and the
// feature probes, run once.
type Kernel struct {
	Log *zap.Logger
	// RingBytes is the ring buffer size of streaming entries (a power of
	// two, at least a page). 0 means DefaultRingBytes.
	RingBytes uint32
	// Disable pretends these features are missing, so that tests and
	// operators can force the attach fallbacks. NANNYAGENT_DISABLE_FEATURES
	// (comma-separated feature names) adds to it.
	Disable map[Feature]bool

	btf *btf.Cache

	mu     sync.Mutex
	probed map[Feature]Status
}

// DefaultRingBytes holds bursts of tens of thousands of events between the
// reader's polls (1-4 MiB held two full-speed syscall storms without drops
// on a 2-vCPU machine); ring memory counts in RSS, so it stays modest.
const DefaultRingBytes = 2 << 20

// NewKernel returns the shared environment; log may be nil.
func NewKernel(log *zap.Logger) *Kernel {
	if log == nil {
		log = zap.NewNop()
	}
	k := &Kernel{Log: log, btf: btf.NewCache(), Disable: map[Feature]bool{}, probed: map[Feature]Status{}}
	for _, f := range strings.Split(os.Getenv("NANNYAGENT_DISABLE_FEATURES"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			k.Disable[Feature(f)] = true
		}
	}
	return k
}

// BTF returns the kernel's type information, parsed on first use.
func (k *Kernel) BTF() (*btf.Spec, error) { return k.btf.Kernel() }

// Features probes every feature (what `check` reports) and logs one
// summary.
func (k *Kernel) Features() *Features {
	f := &Features{Release: kernelRelease(), Status: map[Feature]Status{}}
	for _, feat := range AllFeatures {
		f.Status[feat] = k.Feature(feat)
	}
	k.Log.Info("kernel features", f.zapFields()...)
	return f
}

// Have reports whether feature f works here (and is not disabled).
func (k *Kernel) Have(f Feature) bool {
	return k.Feature(f).State == Yes
}

// Has checks one requirement, with an error that says what is missing.
func (k *Kernel) Has(r Requirement) error {
	st := k.Feature(r.Feature)
	if st.State != Yes {
		msg := string(r.Feature) + " unavailable"
		if st.Detail != "" {
			msg += ": " + st.Detail
		}
		return errors.New(msg)
	}
	if r.Feature == FeatureTracepoint && r.Name != "" {
		if !TracepointExists(r.Name) {
			return fmt.Errorf("tracepoint %s does not exist on this kernel", r.Name)
		}
	}
	if (r.Feature == FeatureTpBTF || r.Feature == FeatureRawTracepoint) && r.Name != "" {
		if !k.btfHas("btf_trace_" + r.Name) {
			return fmt.Errorf("raw tracepoint %s does not exist on this kernel", r.Name)
		}
	}
	if r.Feature == FeatureKprobe && r.Name != "" && !KernelSymbolExists(r.Name) {
		return fmt.Errorf("kernel function %s does not exist on this kernel (not in /proc/kallsyms)", r.Name)
	}
	return nil
}

func (k *Kernel) btfHas(typeName string) bool {
	spec, err := k.BTF()
	if err != nil {
		return false
	}
	var t *btf.Typedef
	return spec.TypeByName(typeName, &t) == nil
}

// Load loads the chosen objects of spec (LoadAndAssign loads only the
// programs and maps objs names) with the shared BTF. Verifier errors keep
// their log.
func (k *Kernel) Load(spec *ebpf.CollectionSpec, objs any) error {
	opts := &ebpf.CollectionOptions{Cache: k.btf}
	if err := spec.LoadAndAssign(objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load BPF objects: %+v", ve)
		}
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("load BPF objects: %w (run as root, or with CAP_BPF and CAP_PERFMON)", err)
		}
		return fmt.Errorf("load BPF objects: %w", err)
	}
	return nil
}

// Tracefs paths, newest first. cilium/ebpf looks in the same places.
var tracefsDirs = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

var tracefsOnce sync.Once
var tracefsDir string
var tracefsErr error

// EnsureTracefs returns the tracefs mount, mounting it on
// /sys/kernel/tracing when nothing is mounted yet (tracepoint attach needs
// it for the event ids).
func EnsureTracefs() (string, error) {
	tracefsOnce.Do(func() {
		for _, d := range tracefsDirs {
			if _, err := os.Stat(filepath.Join(d, "events")); err == nil {
				tracefsDir = d
				return
			}
		}
		d := tracefsDirs[0]
		if err := unix.Mount("none", d, "tracefs", 0, ""); err != nil {
			tracefsErr = fmt.Errorf("tracefs is not mounted and mounting it on %s failed: %w (mount -t tracefs none %s)", d, err, d)
			return
		}
		tracefsDir = d
	})
	return tracefsDir, tracefsErr
}

// TracepointExists reports whether the tracepoint "category/name" (or
// "category:name") exists.
func TracepointExists(name string) bool {
	dir, err := EnsureTracefs()
	if err != nil {
		return false
	}
	name = strings.Replace(name, ":", "/", 1)
	if strings.Contains(name, "..") {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, "events", name, "id"))
	return err == nil
}

var kallsymsOnce sync.Once
var kallsyms map[string]bool

// KernelSymbolExists reports whether /proc/kallsyms lists a function.
func KernelSymbolExists(name string) bool {
	kallsymsOnce.Do(func() {
		kallsyms = map[string]bool{}
		data, err := os.ReadFile("/proc/kallsyms")
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && (f[1] == "t" || f[1] == "T") {
				kallsyms[f[2]] = true
			}
		}
	})
	return kallsyms[name]
}
