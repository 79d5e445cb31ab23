// Package resolver maps the trace requests a reasoning engine writes
// (`ebpf_programs`, NANNYAPI.md §2.5) to catalog entries: classic tool
// names, tracepoints, kernel functions and system calls go to the entry
// that answers their question, uncovered tracepoints and functions to the
// generic tracepoint and kfunc entries, scripts to the bpftrace fallback,
// and junk is refused with the reason.
//
// It works on the []catalog.Info its caller offers (typically the entries
// that run on this kernel) and does no tracing itself. The rules, in the
// order they apply, are in the comment of Resolve.
package resolver

import (
	"fmt"
	"strings"

	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Names of the generic entries and of the fallback.
const (
	GenericTracepoint = "tracepoint"
	GenericFunction   = "kfunc"
	Syscalls          = "syscalls"
	Fallback          = "bpftrace"
)

// MaxField bounds the target and the name of a request: longer ones are
// not a probe anyone means.
const MaxField = 4 << 10

// Kind says what a resolution decided.
type Kind string

const (
	KindEntry    Kind = "entry"
	KindFallback Kind = "fallback"
	KindRefused  Kind = "refused"
)

// Resolution is what one request maps to: exactly one of Entry, Fallback
// and Refused is set.
type Resolution struct {
	// Index is the request's position in a batch.
	Index   int     `json:"index"`
	Request Request `json:"request"`
	// Entry is the catalog entry to run with Params.
	Entry string `json:"entry,omitempty"`
	// Fallback is a bpftrace script to run (bpftrace.Entry with the
	// script as Params.Target) for Params.Duration.
	Fallback string `json:"fallback,omitempty"`
	// Refused says why the request is not run.
	Refused string `json:"refused,omitempty"`
	// Params carry the clamped duration, the filters the entry honours
	// and, for the generic entries, the target.
	Params catalog.Params `json:"-"`
	// How records the mapping ("alias execsnoop -> exec").
	How string `json:"how"`
	// Notes are what was changed or dropped on the way (clamped
	// duration, unsupported filters).
	Notes []string `json:"notes,omitempty"`
}

// Kind reports which of entry, fallback and refused r is.
func (r Resolution) Kind() Kind {
	switch {
	case r.Entry != "":
		return KindEntry
	case r.Fallback != "":
		return KindFallback
	}
	return KindRefused
}

// String is one line for logs and reports.
func (r Resolution) String() string {
	label := r.Request.Name
	if label == "" {
		label = truncate(r.Request.Target, 40)
	}
	s := fmt.Sprintf("#%d %s: %s", r.Index+1, label, r.How)
	switch r.Kind() {
	case KindRefused:
		s += " (refused: " + r.Refused + ")"
	default:
		s += " (" + describeParams(r.Params) + ")"
	}
	if len(r.Notes) > 0 {
		s += "; " + strings.Join(r.Notes, "; ")
	}
	return s
}

func describeParams(p catalog.Params) string {
	d := p.Describe()
	delete(d, "target")
	parts := []string{"duration " + d["duration"]}
	delete(d, "duration")
	for _, k := range append(append([]string{}, filterOrder...), "frequency") {
		if v, ok := d[k]; ok {
			parts = append(parts, k+"="+v)
		}
	}
	return strings.Join(parts, ", ")
}

var filterOrder = func() []string {
	s := make([]string, len(catalog.AllFilters))
	for i, f := range catalog.AllFilters {
		s[i] = string(f)
	}
	return s
}()

// Resolver holds the offered entries and their indexes.
type Resolver struct {
	entries     []catalog.Info
	byName      map[string]int   // entry names and aliases, lowercased
	byFlatName  map[string]int   // the same without '-' and '_'
	tracepoints map[string]int   // "category:name"
	tpEvents    map[string][]int // "name" of a covered tracepoint
	functions   map[string]int
}

// New indexes entries. When several list the same alias, tracepoint or
// function, the first in the slice wins: callers order specific entries
// before broad ones.
func New(entries []catalog.Info) *Resolver {
	r := &Resolver{
		entries:     entries,
		byName:      map[string]int{},
		byFlatName:  map[string]int{},
		tracepoints: map[string]int{},
		tpEvents:    map[string][]int{},
		functions:   map[string]int{},
	}
	first := func(m map[string]int, k string, i int) {
		if _, ok := m[k]; !ok && k != "" {
			m[k] = i
		}
	}
	// Entry names before aliases: an alias never shadows an entry's name.
	for i, e := range entries {
		first(r.byName, strings.ToLower(e.Name), i)
		first(r.byFlatName, flat(e.Name), i)
	}
	for i, e := range entries {
		for _, a := range e.Aliases {
			first(r.byName, strings.ToLower(a), i)
			first(r.byFlatName, flat(a), i)
		}
		for _, tp := range e.Tracepoints {
			tp = strings.Replace(tp, "/", ":", 1)
			first(r.tracepoints, tp, i)
			if _, ev, ok := strings.Cut(tp, ":"); ok {
				r.tpEvents[ev] = append(r.tpEvents[ev], i)
			}
		}
		for _, f := range e.Functions {
			first(r.functions, f, i)
		}
	}
	return r
}

func flat(s string) string {
	return strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(s))
}

func (r *Resolver) index(name string) (int, bool) {
	for i, e := range r.entries {
		if e.Name == name {
			return i, true
		}
	}
	return 0, false
}

func (r *Resolver) has(name string) bool { _, ok := r.index(name); return ok }

// Resolve maps one request. The rules, first match wins:
//
//  1. The duration is clamped (default 10 s, at most 120 s), with a note
//     when the request's value was changed or unreadable.
//  2. A target or name over 4 KiB, or a target with control characters,
//     is refused.
//  3. Type "bpftrace", or a target containing '{', is a script: refused
//     when bpftrace.CheckScript refuses it, else the fallback.
//  4. An empty target: the name as an alias/entry/syscall/covered probe,
//     then keywords of the name and description.
//  5. A target with shell metacharacters (; | & $ ` < > \) is refused; one
//     with blanks is free text, matched by keywords.
//  6. A probe-like target is parsed: tracepoint:/t:/tp: forms, cat:name,
//     cat/name and tracefs paths are tracepoints; kprobe:/kretprobe:/
//     kfunc:/fentry:/fexit: forms are functions; syscall:x is a system
//     call; profile:hz:N, software:, hardware:, uprobe:, usdt: and
//     rawtracepoint: have their own rules; a bare word is, in order, an
//     entry name or alias (suffixes .bt/.py and -bpfcc stripped), a system
//     call (arch-neutral: sys_enter_x, __x64_sys_x, __arm64_sys_x, sys_x,
//     or a known syscall name), a function or tracepoint event an entry
//     covers, then by type: kprobe -> kfunc, tracepoint -> refused (needs a
//     category), untyped -> keywords, then kfunc for a function-like name.
//  7. A tracepoint an entry lists goes to it; syscalls:sys_enter_x goes to
//     the entry covering system call x; any other tracepoint to the
//     generic tracepoint entry; a wildcard to syscalls (syscalls:*) or a
//     bpftrace count script.
//  8. A system call goes to the entry whose Tracepoints or Functions list
//     it (or the built-in hint: open, exec, exit, signals, fileio,
//     tcpconnect), else to syscalls (per-syscall counts, errors, latency).
//  9. A function an entry lists (also without .isra/.constprop suffixes)
//     goes to it, else to the generic kfunc entry.
//
// When the generic entry a rule wants is not offered, the request falls
// back to a bpftrace script counting the probe by comm. Filters are then
// applied for the chosen entry: unsupported or unreadable ones are
// dropped with a note (see applyFilters); fallbacks ignore filters.
func (r *Resolver) Resolve(req Request) Resolution {
	res := Resolution{Request: req}
	res.Params.Duration = catalog.ClampDuration(req.Duration.D)
	switch {
	case req.Duration.Raw != "":
		res.Notes = append(res.Notes, fmt.Sprintf("duration %q is unreadable: using %s", req.Duration.Raw, res.Params.Duration))
	case req.Duration.D > catalog.MaxDuration:
		res.Notes = append(res.Notes, fmt.Sprintf("duration %s clamped to the maximum %s", req.Duration.D, catalog.MaxDuration))
	}
	d := r.decide(req)
	res.How = d.how
	if d.refused != "" {
		res.Refused = d.refused
		return res
	}
	if d.script != "" {
		res.Fallback = d.script
		if len(req.Filters) > 0 {
			res.Notes = append(res.Notes, "filters are not applied to bpftrace scripts; filters dropped")
		}
		res.Notes = append(res.Notes, d.notes...)
		return res
	}
	i, ok := r.index(d.entry)
	if !ok {
		res.Refused = "internal: entry " + d.entry + " is not offered"
		return res
	}
	info := r.entries[i]
	if info.NeedsTarget && d.target == "" {
		res.Refused = fmt.Sprintf("%s traces what the request names, and it names nothing (give e.g. sched:sched_switch or vfs_read as the target)", info.Name)
		return res
	}
	res.Entry = info.Name
	if info.NeedsTarget {
		res.Params.Target = d.target
	}
	if d.frequency > 0 && info.Name == "profile" {
		res.Params.Frequency = d.frequency
	}
	res.Notes = append(res.Notes, d.notes...)
	res.Notes = append(res.Notes, applyFilters(req.Filters, info, &res.Params)...)
	if err := res.Params.Validate(info); err != nil {
		// The rules above only build valid parameters; this keeps a
		// mistake from reaching Start as a confusing failure.
		res.Entry, res.Params.Target = "", ""
		res.Refused = "internal: " + err.Error()
	}
	return res
}

// ResolveAll maps a batch; each resolution carries its index and its How.
func (r *Resolver) ResolveAll(reqs []Request) []Resolution {
	out := make([]Resolution, len(reqs))
	for i, q := range reqs {
		out[i] = r.Resolve(q)
		out[i].Index = i
	}
	return out
}

// Report is one line per resolution, for logs and for the model's next
// prompt (it learns what ran instead of what it asked).
func Report(rs []Resolution) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// decision is what the rules chose, before parameters.
type decision struct {
	entry     string
	target    string
	script    string
	refused   string
	how       string
	frequency int
	notes     []string
}

func toEntry(entry, how string) decision   { return decision{entry: entry, how: how} }
func refuse(reason, how string) decision   { return decision{refused: reason, how: how} }
func fallback(script, how string) decision { return decision{script: script, how: how} }
