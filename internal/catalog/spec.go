package catalog

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// SetFilters writes p's filters into the const volatile globals of spec
// (bpf/common/filter.bpf.h and the entry's own targ_* globals) before load.
// A filter whose global the program lacks is an error: the entry would
// silently ignore it.
func SetFilters(spec *ebpf.CollectionSpec, p Params) error {
	set := func(name string, v any) error {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("program has no %s: filter not supported", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
		return nil
	}
	if p.PID != 0 {
		if err := set("targ_tgid", p.PID); err != nil {
			return err
		}
	}
	if p.TID != 0 {
		if err := set("targ_tid", p.TID); err != nil {
			return err
		}
	}
	if p.UID != nil {
		if err := set("targ_uid", *p.UID); err != nil {
			return err
		}
	}
	if p.Comm != "" {
		var comm [16]byte
		copy(comm[:15], p.Comm)
		if err := set("targ_comm", comm); err != nil {
			return err
		}
		if err := set("filter_comm", true); err != nil {
			return err
		}
	}
	if p.Cgroup != "" {
		id, err := CgroupID(p.Cgroup)
		if err != nil {
			return err
		}
		if err := set("targ_cgroup", id); err != nil {
			return err
		}
	}
	if p.FailedOnly {
		if err := set("targ_failed", true); err != nil {
			return err
		}
	}
	if p.MinLatency > 0 {
		if err := set("targ_min_ns", uint64(p.MinLatency.Nanoseconds())); err != nil {
			return err
		}
	}
	if p.Port != 0 {
		if err := set("targ_port", p.Port); err != nil {
			return err
		}
	}
	return nil
}

// PrepareEvents picks the event transport of a streaming entry before load
// (bpf/common/events.bpf.h): the ring buffer where the kernel has one
// (5.8+), a perf buffer otherwise. The unused map is shrunk to almost
// nothing. It returns true when the perf buffer was chosen.
func PrepareEvents(k *Kernel, spec *ebpf.CollectionSpec) (usePerf bool, err error) {
	rb, ok := spec.Maps["events"]
	if !ok {
		return false, fmt.Errorf("program has no events map")
	}
	usePerf = !k.Have(FeatureRingBuf)
	if usePerf {
		// The verifier drops the ring buffer path (use_perfbuf is constant),
		// but the map is still created: make it one that exists everywhere.
		*rb = ebpf.MapSpec{Name: rb.Name, Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
		if err := spec.Variables["use_perfbuf"].Set(true); err != nil {
			return false, fmt.Errorf("set use_perfbuf: %w", err)
		}
		return true, nil
	}
	size := k.RingBytes
	if size == 0 {
		size = DefaultRingBytes
	}
	rb.MaxEntries = size
	if ws, ok := spec.Variables["wakeup_bytes"]; ok {
		// Wake the reader at a quarter full: low-rate events wait for the
		// poll timer, a burst gets drained before it fills the ring.
		if err := ws.Set(uint64(size / 4)); err != nil {
			return false, fmt.Errorf("set wakeup_bytes: %w", err)
		}
	}
	return false, nil
}
