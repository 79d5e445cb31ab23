// Package catalog holds what every catalog entry shares: the entry contract,
// trace parameters and filters, the kernel environment (shared BTF, feature
// probes, attach and load helpers), event streaming and the result model.
//
// Each entry lives in its own package under internal/catalog/<entry>, built
// from bpf/<entry>.bpf.c by bpf2go; the registry package lists them.
package catalog

import (
	"context"
	"errors"
	"fmt"
)

// Entry is one compiled eBPF program of the catalog with its Go aggregator.
type Entry interface {
	Info() Info
	// Check reports whether the entry can run on this kernel: nil when it
	// can, an *UnsupportedError naming what is missing when it cannot.
	Check(k *Kernel) error
	// Start loads and attaches the programs; the trace gathers until Stop.
	// On error nothing stays loaded or attached.
	Start(ctx context.Context, k *Kernel, p Params) (Trace, error)
}

// Trace is a running entry.
type Trace interface {
	// Stop detaches every program, drains pending events, releases kernel
	// objects and returns what was gathered. Calling it again returns the
	// same result.
	Stop() (*Result, error)
	// Seen is the number of events gathered so far; safe to call while the
	// trace runs (progress display).
	Seen() uint64
}

// Info describes an entry; `trace list`, `check`, the resolver and the
// generated docs all read it.
type Info struct {
	Name    string `json:"name"`
	Answers string `json:"answers"`
	Reports string `json:"reports"`
	// Aliases are the classic tools (bcc, libbpf-tools, bpftrace tools)
	// whose question this entry answers.
	Aliases []string `json:"aliases,omitempty"`
	// Tracepoints are the tracepoints (category:name) the entry covers; a
	// request for one of them resolves here.
	Tracepoints []string `json:"tracepoints,omitempty"`
	// Functions are kernel functions whose question this entry answers
	// (a kprobe request on one of them resolves here).
	Functions []string `json:"functions,omitempty"`
	// Keywords are words of a free-text request that point here.
	Keywords []string `json:"keywords,omitempty"`
	Filters  []Filter `json:"filters,omitempty"`
	// Requires lists what the kernel must have; Check tests them.
	Requires []Requirement `json:"requires"`
	// Attach lists attach modes, preferred first (e.g. tp_btf, raw_tp).
	Attach []string `json:"attach"`
	// Streams is true when events flow to user space through a ring
	// buffer (and lost events are counted); false when the kernel
	// aggregates everything.
	Streams bool `json:"streams_events"`
	// NeedsTarget is true for generic entries that trace what the
	// request names (a tracepoint, a kernel function).
	NeedsTarget bool `json:"needs_target,omitempty"`
}

// Supports reports whether the entry accepts filter f.
func (i Info) Supports(f Filter) bool {
	for _, g := range i.Filters {
		if g == f {
			return true
		}
	}
	return false
}

// Requirement is one kernel capability an entry needs.
type Requirement struct {
	Feature Feature `json:"feature"`
	// Name narrows the feature: a tracepoint "category/name", a
	// kernel function.
	Name string `json:"name,omitempty"`
}

func (r Requirement) String() string {
	if r.Name == "" {
		return string(r.Feature)
	}
	return string(r.Feature) + " " + r.Name
}

// UnsupportedError says an entry cannot run on this kernel and why. It is a
// declared limitation, not a fault: tests skip on it, users read it.
type UnsupportedError struct {
	Entry  string
	Reason string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s is not supported on this kernel: %s", e.Entry, e.Reason)
}

// IsUnsupported reports whether err is (or wraps) an *UnsupportedError.
func IsUnsupported(err error) bool {
	var u *UnsupportedError
	return errors.As(err, &u)
}

// CheckRequirements is the usual Entry.Check: every requirement of info
// must hold on k.
func CheckRequirements(k *Kernel, info Info) error {
	for _, r := range info.Requires {
		if err := k.Has(r); err != nil {
			return &UnsupportedError{Entry: info.Name, Reason: err.Error()}
		}
	}
	return nil
}
