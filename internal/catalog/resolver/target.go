package resolver

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/catalog/bpftrace"
)

var (
	// Tracepoint categories and events: tracefs directory names (some
	// categories have '-' or '.'), plus bpftrace's wildcards.
	tpIdent = regexp.MustCompile(`^[A-Za-z0-9_.*?-]{1,128}$`)
	// Kernel functions, with compiler suffixes (".isra.0").
	fnIdent = regexp.MustCompile(`^[A-Za-z_*][A-Za-z0-9_.*]{0,127}$`)
	// A bare word: any of the above, a tool name ("execsnoop-bpfcc",
	// "opensnoop.bt").
	wordIdent = regexp.MustCompile(`^[A-Za-z0-9_.*?+-]{1,128}$`)
	// Syscall names.
	scIdent = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	// uprobe/usdt targets: a binary path or library, then probe names.
	userIdent = regexp.MustCompile(`^[A-Za-z0-9_./+@-]{1,256}(:[A-Za-z0-9_.*+@-]{1,128}){1,2}$`)
	// Compiler clones of a function answer the same question.
	cloneSuffix = regexp.MustCompile(`\.(isra|constprop|part|cold|llvm|lto_priv)(\.[0-9]+)*.*$`)
	blankColon  = regexp.MustCompile(`\s*:\s*`)
	// software:/hardware: events with an optional sampling period.
	perfEvent = regexp.MustCompile(`^[a-z0-9_-]{1,64}(:[0-9]{1,12})?$`)
)

// shellMeta never appears in a probe name or in honest free text.
const shellMeta = ";|&$`<>\\"

// normType maps the request's type to "tracepoint", "kprobe",
// "kretprobe", "syscall", "bpftrace" or "" (decide by target).
func normType(t string) (string, string) {
	switch strings.ToLower(strings.TrimSpace(t)) {
	case "":
		return "", ""
	case "tracepoint", "tracepoints", "tp", "t", "raw_tracepoint", "rawtracepoint", "tp_btf":
		return "tracepoint", ""
	case "kprobe", "kprobes", "k", "kfunc", "fentry", "function", "kernel_function":
		return "kprobe", ""
	case "kretprobe", "kretprobes", "kr", "kretfunc", "fexit":
		return "kretprobe", ""
	case "syscall", "syscalls", "sys", "system_call":
		return "syscall", ""
	case "bpftrace", "script", "bpftrace_script":
		return "bpftrace", ""
	}
	return "", fmt.Sprintf("unknown type %q: resolved by the target alone", truncate(t, 40))
}

func (r *Resolver) decide(req Request) decision {
	if len(req.Target) > MaxField {
		return refuse(fmt.Sprintf("the target is %d bytes, more than the %d allowed", len(req.Target), MaxField), "target too long")
	}
	if len(req.Name) > MaxField {
		return refuse(fmt.Sprintf("the name is %d bytes, more than the %d allowed", len(req.Name), MaxField), "name too long")
	}
	typ, typNote := normType(req.Type)
	d := r.decideTarget(typ, req)
	if typNote != "" {
		d.notes = append([]string{typNote}, d.notes...)
	}
	return d
}

func (r *Resolver) decideTarget(typ string, req Request) decision {
	target := strings.TrimSpace(req.Target)
	if strings.Contains(target, "{") || typ == "bpftrace" && target == "" {
		return r.script(target)
	}
	var typeNote string
	if typ == "bpftrace" {
		typ = ""
		typeNote = "type bpftrace without a { action }: resolved as a probe"
	}
	if i := strings.IndexFunc(target, unicode.IsControl); i >= 0 {
		c, _ := utf8.DecodeRuneInString(target[i:])
		return refuse(fmt.Sprintf("the target %q contains the control character %U", truncate(target, 60), c), "junk target")
	}
	if target == "" {
		return r.fromNameAndDescription(req)
	}
	if i := strings.IndexAny(target, shellMeta); i >= 0 {
		return refuse(fmt.Sprintf("the target %q contains the shell metacharacter %q: targets are probe names", truncate(target, 60), target[i]), "junk target")
	}
	target = blankColon.ReplaceAllString(target, ":")
	if strings.ContainsAny(target, " \t\r\n") {
		if d, ok := r.keywords(target + " " + req.Name + " " + boundedDesc(req)); ok {
			d.how = "free-text target: " + d.how
			return d
		}
		return refuse(fmt.Sprintf("the target %q is neither a probe nor words that match a catalog entry", truncate(target, 60)), "free-text target unmatched")
	}
	target = strings.TrimSuffix(target, "()")
	if i := strings.IndexAny(target, `()'"!`); i >= 0 {
		return refuse(fmt.Sprintf("the target %q contains %q, which no probe name has", truncate(target, 60), target[i]), "junk target")
	}
	d := r.probe(typ, target)
	if typeNote != "" {
		d.notes = append(d.notes, typeNote)
	}
	return d
}

func boundedDesc(req Request) string {
	if len(req.Description) > MaxField {
		return ""
	}
	return req.Description
}

// script handles a full bpftrace program.
func (r *Resolver) script(s string) decision {
	if err := bpftrace.CheckScript(s); err != nil {
		why := strings.TrimPrefix(err.Error(), bpftrace.ErrRefused.Error()+": ")
		return refuse("the bpftrace script "+strings.TrimPrefix(why, "it "), "bpftrace script -> refused")
	}
	d := fallback(s, "bpftrace script -> fallback")
	// Say when the catalog could have answered: the next request can ask
	// for the entry, which starts in milliseconds instead of a second.
	covering := ""
	for _, p := range bpftrace.Probes(s) {
		switch strings.ToUpper(p) {
		case "BEGIN", "END":
			continue
		}
		if strings.HasPrefix(p, "interval:") || strings.HasPrefix(p, "i:") {
			continue
		}
		c := r.probe("", p)
		if c.entry == "" || c.entry == GenericTracepoint || c.entry == GenericFunction || covering != "" && c.entry != covering {
			return d
		}
		covering = c.entry
	}
	if covering != "" {
		d.notes = append(d.notes, fmt.Sprintf("its probes are covered by the catalog entry %s, which is cheaper: ask for %s next time", covering, covering))
	}
	return d
}

// probe resolves a probe-like target (no blanks, no braces).
func (r *Resolver) probe(typ, t string) decision {
	switch {
	case strings.Contains(t, "/events/"):
		// A tracefs path: .../events/<category>/<event>[/format].
		t = t[strings.Index(t, "/events/")+len("/events/"):]
		for _, f := range []string{"/format", "/enable", "/id", "/filter", "/trigger"} {
			t = strings.TrimSuffix(t, f)
		}
		t = strings.Replace(t, "/", ":", 1)
		if !strings.HasPrefix(t, "tracepoint:") {
			t = "tracepoint:" + t
		}
	case strings.HasPrefix(t, "/") && !strings.Contains(t, ":"):
		t = filepath.Base(t) // /usr/sbin/execsnoop-bpfcc
	case !strings.Contains(t, ":") && strings.Contains(t, "/"):
		// libbpf section names (tracepoint/syscalls/sys_enter_openat,
		// kprobe/tcp_v4_connect) and tracefs names (sched/sched_switch).
		t = strings.ReplaceAll(t, "/", ":")
	}
	prefix, rest, ok := strings.Cut(t, ":")
	if !ok {
		return r.word(typ, t)
	}
	if rest == "" {
		return refuse(fmt.Sprintf("the target %q names no probe after %q", truncate(t, 60), prefix+":"), "junk target")
	}
	switch strings.ToLower(prefix) {
	case "tracepoint", "t", "tp":
		return r.tracepoint(rest)
	case "kprobe", "k", "kfunc", "f", "fentry":
		return r.function(rest, false)
	case "kretprobe", "kr", "kretfunc", "fr", "fexit":
		return r.function(rest, true)
	case "syscall", "sys":
		return r.syscall(rest, "syscall "+rest)
	case "rawtracepoint", "rt", "raw_tracepoint", "raw_tp", "tp_btf", "btf":
		return r.rawTracepoint(rest)
	case "uprobe", "u", "uretprobe", "ur", "usdt":
		return r.userProbe(strings.ToLower(prefix), rest)
	case "profile", "p":
		return r.profile(rest)
	case "software", "s":
		return r.software(rest)
	case "hardware", "h":
		return r.hardware(rest)
	case "interval", "i", "begin", "end", "watchpoint", "w", "asyncwatchpoint":
		return refuse(fmt.Sprintf("%s probes measure nothing on their own: send a bpftrace script", prefix), "junk target")
	}
	if strings.Contains(rest, ":") {
		return refuse(fmt.Sprintf("unknown probe type %q in %q", truncate(prefix, 30), truncate(t, 60)), "junk target")
	}
	if strings.EqualFold(prefix, "syscalls") && !strings.HasPrefix(rest, "sys_e") && !strings.ContainsAny(rest, "*?") {
		return r.syscall(rest, "syscall "+rest) // "syscalls:openat"
	}
	return r.tracepoint(prefix + ":" + rest)
}

func (r *Resolver) tracepoint(spec string) decision {
	cat, name, ok := strings.Cut(spec, ":")
	if !ok {
		if cat, name, ok = strings.Cut(spec, "/"); !ok {
			return refuse(fmt.Sprintf("the tracepoint %q has no category: write category:name, e.g. sched:sched_switch", truncate(spec, 60)), "tracepoint without category")
		}
	}
	for _, part := range []string{cat, name} {
		if !tpIdent.MatchString(part) {
			return refuse(fmt.Sprintf("the tracepoint %q has characters no tracepoint name has (%q)", truncate(spec, 60), truncate(part, 40)), "junk tracepoint")
		}
	}
	tp := cat + ":" + name
	if strings.ContainsAny(tp, "*?") {
		if (cat == "syscalls" || cat == "raw_syscalls") && r.has(Syscalls) {
			return toEntry(Syscalls, "wildcard tracepoint "+tp+" -> syscalls")
		}
		return fallback(fmt.Sprintf("tracepoint:%s { @[probe] = count(); }", tp),
			"wildcard tracepoint "+tp+" -> bpftrace count by probe (entries attach single tracepoints)")
	}
	if i, ok := r.tracepoints[tp]; ok {
		return toEntry(r.entries[i].Name, "tracepoint "+tp+" covered by "+r.entries[i].Name)
	}
	if cat == "syscalls" {
		if sc, ok := syscallOf(name); ok {
			if e := r.syscallEntry(sc); e != "" {
				return toEntry(e, "tracepoint "+tp+" is syscall "+sc+" -> "+e)
			}
		}
	}
	if r.has(GenericTracepoint) {
		return decision{entry: GenericTracepoint, target: tp, how: "no entry covers tracepoint " + tp + " -> generic tracepoint counter"}
	}
	return fallback(fmt.Sprintf("tracepoint:%s { @[comm] = count(); }", tp),
		"no entry covers tracepoint "+tp+" and the generic tracepoint entry is not offered -> bpftrace count by comm")
}

func (r *Resolver) function(spec string, ret bool) decision {
	kind := "kprobe"
	if ret {
		kind = "kretprobe"
	}
	if i := strings.LastIndexByte(spec, ':'); i >= 0 {
		spec = spec[i+1:] // kfunc:vmlinux:fn, kprobe:module:fn
	}
	var notes []string
	if i := strings.IndexByte(spec, '+'); i > 0 {
		notes = append(notes, fmt.Sprintf("offset %s ignored: entries trace whole functions", spec[i:]))
		spec = spec[:i]
	}
	if !fnIdent.MatchString(spec) {
		return refuse(fmt.Sprintf("%q is not a kernel function name", truncate(spec, 60)), "junk "+kind)
	}
	d := r.functionDecision(kind, spec)
	d.notes = append(notes, d.notes...)
	return d
}

func (r *Resolver) functionDecision(kind, fn string) decision {
	if strings.Contains(fn, "*") {
		return fallback(fmt.Sprintf("%s:%s { @[probe] = count(); }", kind, fn),
			"wildcard "+kind+" "+fn+" -> bpftrace count by probe (entries attach single functions)")
	}
	if i, ok := r.functions[fn]; ok {
		return toEntry(r.entries[i].Name, kind+" "+fn+" -> "+r.entries[i].Name)
	}
	if sc, ok := syscallOf(fn); ok && scIdent.MatchString(sc) {
		return r.syscall(sc, kind+" "+fn+" is syscall "+sc)
	}
	if base := cloneSuffix.ReplaceAllString(fn, ""); base != fn {
		if i, ok := r.functions[base]; ok {
			return toEntry(r.entries[i].Name, kind+" "+fn+" (a clone of "+base+") -> "+r.entries[i].Name)
		}
	}
	if r.has(GenericFunction) {
		return decision{entry: GenericFunction, target: fn, how: kind + " " + fn + " uncovered -> kfunc"}
	}
	probe := fmt.Sprintf("kprobe:%s { @[comm] = count(); }", fn)
	if kind == "kretprobe" {
		probe = fmt.Sprintf("kretprobe:%s { @[comm, (int64)retval] = count(); }", fn)
	}
	return fallback(probe, kind+" "+fn+" uncovered and the kfunc entry is not offered -> bpftrace count by comm")
}

// syscall maps a system call name to the entry that answers it.
func (r *Resolver) syscall(name, how string) decision {
	name = strings.ToLower(strings.TrimSpace(name))
	if sc, ok := syscallOf(name); ok && !syscallNames[name] {
		name = sc
	}
	if !scIdent.MatchString(name) {
		return refuse(fmt.Sprintf("%q is not a system call name", truncate(name, 60)), "junk syscall")
	}
	var notes []string
	if !syscallNames[name] {
		notes = append(notes, fmt.Sprintf("%s is not a known Linux system call", name))
	}
	if e := r.syscallEntry(name); e != "" {
		return decision{entry: e, how: how + " -> " + e, notes: notes}
	}
	if r.has(Syscalls) {
		return decision{entry: Syscalls, how: how + " -> syscalls (no entry covers it alone; syscalls counts it among all calls, with errors and latency)", notes: notes}
	}
	tp := "syscalls:sys_enter_" + name
	if r.has(GenericTracepoint) {
		return decision{entry: GenericTracepoint, target: tp, how: how + " -> generic tracepoint counter on " + tp, notes: notes}
	}
	return decision{script: fmt.Sprintf("tracepoint:%s { @[comm] = count(); }", tp),
		how: how + " -> bpftrace count by comm on " + tp, notes: notes}
}

// syscallEntry is the specific entry answering system call sc: one that
// lists its tracepoints or functions, else the built-in hint.
func (r *Resolver) syscallEntry(sc string) string {
	specific := func(i int, ok bool) string {
		if !ok {
			return ""
		}
		switch n := r.entries[i].Name; n {
		case Syscalls, GenericTracepoint, GenericFunction:
			return ""
		default:
			return n
		}
	}
	for _, tp := range []string{"syscalls:sys_enter_" + sc, "syscalls:sys_exit_" + sc} {
		if e := specific(lookup(r.tracepoints, tp)); e != "" {
			return e
		}
	}
	for _, fn := range []string{sc, "sys_" + sc, "__x64_sys_" + sc, "__arm64_sys_" + sc} {
		if e := specific(lookup(r.functions, fn)); e != "" {
			return e
		}
	}
	if h := syscallHints[sc]; h != "" && r.has(h) {
		return h
	}
	return ""
}

func (r *Resolver) rawTracepoint(spec string) decision {
	ev := spec[strings.LastIndexByte(spec, ':')+1:]
	if !tpIdent.MatchString(ev) || strings.ContainsAny(ev, "*?") {
		return refuse(fmt.Sprintf("%q is not a raw tracepoint name", truncate(spec, 60)), "junk raw tracepoint")
	}
	if is := r.tpEvents[ev]; len(is) > 0 {
		return toEntry(r.entries[is[0]].Name, "raw tracepoint "+ev+" covered by "+r.entries[is[0]].Name)
	}
	return fallback(fmt.Sprintf("rawtracepoint:%s { @[comm] = count(); }", ev),
		"no entry covers raw tracepoint "+ev+" -> bpftrace count by comm")
}

func (r *Resolver) userProbe(kind, spec string) decision {
	if !userIdent.MatchString(spec) {
		return refuse(fmt.Sprintf("%q is not a %s target (binary:function)", truncate(spec, 60), kind), "junk "+kind)
	}
	return fallback(fmt.Sprintf("%s:%s { @[comm, pid] = count(); }", kind, spec),
		kind+" "+spec+" -> bpftrace count by comm and pid (no catalog entry traces user space)")
}

// profile reads profile:hz:N, profile:N, profile:ms:N, profile:us:N.
func (r *Resolver) profile(spec string) decision {
	unit, num, ok := strings.Cut(spec, ":")
	if !ok {
		unit, num = "hz", spec
	}
	n, err := strconv.ParseUint(num, 10, 32)
	hz := 0
	if err == nil && n > 0 {
		switch strings.ToLower(unit) {
		case "hz":
			hz = int(n)
		case "s":
			hz = max(1, int(1/float64(n)))
		case "ms":
			hz = int(1000 / n)
		case "us":
			hz = int(1000000 / n)
		}
	}
	if hz <= 0 || hz > 10000 {
		return refuse(fmt.Sprintf("profile:%s is not a sampling rate between 1 and 10000 Hz", truncate(spec, 40)), "junk profile")
	}
	if r.has("profile") {
		return decision{entry: "profile", frequency: hz, how: fmt.Sprintf("profile at %d Hz -> profile", hz)}
	}
	return fallback(fmt.Sprintf("profile:hz:%d { @[kstack, comm] = count(); }", hz), "profile entry not offered -> bpftrace stack counts")
}

func (r *Resolver) software(spec string) decision {
	ev := strings.ToLower(strings.SplitN(spec, ":", 2)[0])
	if !perfEvent.MatchString(spec) {
		return refuse(fmt.Sprintf("%q is not a software event", truncate(spec, 60)), "junk software event")
	}
	switch ev {
	case "page-faults", "page_faults", "faults", "major-faults", "minor-faults", "major_faults", "minor_faults":
		if r.has("pagefaults") {
			return toEntry("pagefaults", "software event "+ev+" -> pagefaults")
		}
	case "cpu-clock", "cpu", "task-clock", "cpu_clock":
		if r.has("profile") {
			return toEntry("profile", "software event "+ev+" -> profile")
		}
	}
	if !strings.Contains(spec, ":") {
		spec += ":1000"
	}
	return fallback(fmt.Sprintf("software:%s { @[comm] = count(); }", spec), "no entry covers software event "+ev+" -> bpftrace count by comm")
}

func (r *Resolver) hardware(spec string) decision {
	if !perfEvent.MatchString(spec) {
		return refuse(fmt.Sprintf("%q is not a hardware event", truncate(spec, 60)), "junk hardware event")
	}
	if !strings.Contains(spec, ":") {
		spec += ":1000000"
	}
	return fallback(fmt.Sprintf("hardware:%s { @[comm] = count(); }", spec), "hardware event "+spec+" -> bpftrace count by comm")
}

// word resolves a bare word: what it names, else the type's default.
func (r *Resolver) word(typ, w string) decision {
	if !wordIdent.MatchString(w) {
		return refuse(fmt.Sprintf("the target %q has characters no probe or tool name has", truncate(w, 60)), "junk target")
	}
	if d, ok := r.known(typ, w); ok {
		return d
	}
	switch typ {
	case "kprobe", "kretprobe":
		return r.function(w, typ == "kretprobe")
	case "tracepoint":
		return refuse(fmt.Sprintf("the tracepoint %q has no category: write category:name, e.g. sched:sched_switch", truncate(w, 60)), "tracepoint without category")
	}
	if d, ok := r.keywords(w); ok {
		return d
	}
	if strings.Contains(w, "_") && fnIdent.MatchString(w) {
		d := r.function(w, false)
		d.how = "function-like name: " + d.how
		return d
	}
	return refuse(fmt.Sprintf("cannot tell what %q is: give a type (tracepoint, kprobe, syscall) or a category:name tracepoint", truncate(w, 60)), "unknown target")
}

// known matches a word against entry names and aliases, system calls,
// and the functions and tracepoint events entries cover.
func (r *Resolver) known(typ, w string) (decision, bool) {
	lw := strings.ToLower(w)
	if typ == "syscall" {
		return r.syscall(lw, "syscall "+w), true
	}
	tool := toolName(lw)
	for _, m := range []struct {
		idx map[string]int
		key string
	}{{r.byName, tool}, {r.byFlatName, flat(tool)}} {
		if i, ok := m.idx[m.key]; ok {
			name := r.entries[i].Name
			if strings.EqualFold(tool, name) {
				return toEntry(name, "entry "+name), true
			}
			return toEntry(name, "alias "+w+" -> "+name), true
		}
	}
	if strings.HasPrefix(lw, "sys_enter_") || strings.HasPrefix(lw, "sys_exit_") {
		return r.tracepoint("syscalls:" + lw), true
	}
	if i, ok := r.functions[w]; ok {
		return toEntry(r.entries[i].Name, "function "+w+" -> "+r.entries[i].Name), true
	}
	if sc, ok := syscallOf(lw); ok && scIdent.MatchString(sc) {
		return r.syscall(sc, w+" is syscall "+sc), true
	}
	if syscallNames[lw] {
		return r.syscall(lw, "syscall "+lw), true
	}
	if is := r.tpEvents[w]; len(is) > 0 {
		return toEntry(r.entries[is[0]].Name, "tracepoint event "+w+" covered by "+r.entries[is[0]].Name), true
	}
	return decision{}, false
}

// toolName strips what distributions and repositories add to a classic
// tool's name: execsnoop.bt, opensnoop.py, execsnoop-bpfcc.
func toolName(w string) string {
	w = strings.TrimPrefix(w, "bpfcc-")
	for _, s := range []string{"-bpfcc", ".bpfcc", ".bt", ".py", ".bpf.c", ".bpf.o", ".bpf", ".sh", ".c"} {
		w = strings.TrimSuffix(w, s)
	}
	return w
}

// fromNameAndDescription resolves a request without a target.
func (r *Resolver) fromNameAndDescription(req Request) decision {
	name := strings.TrimSpace(req.Name)
	if name != "" && wordIdent.MatchString(name) {
		if d, ok := r.known("", name); ok && d.refused == "" && d.entry != GenericTracepoint && d.entry != GenericFunction {
			d.how = "no target; name: " + d.how
			return d
		}
	}
	if d, ok := r.keywords(name + " " + boundedDesc(req)); ok {
		d.how = "no target; " + d.how
		return d
	}
	return refuse("the request has no target, and its name and description match no catalog entry", "empty target")
}

// keywords scores entries by their keywords, names and aliases found in
// text; the best wins, ties go to the first offered.
func (r *Resolver) keywords(text string) (decision, bool) {
	norm := " " + normText(text) + " "
	best, bestScore := -1, 0
	var bestHits []string
	for i, e := range r.entries {
		if e.NeedsTarget || e.Name == Fallback {
			continue
		}
		score := 0
		var hits []string
		for _, kw := range e.Keywords {
			k := normText(kw)
			if k == "" {
				continue
			}
			// Short keywords must be whole words; longer ones may be
			// the start of one ("connect" in "connections").
			if strings.Contains(norm, " "+k+" ") || len(k) >= 4 && strings.Contains(norm, " "+k) {
				score += 2 + 2*strings.Count(k, " ")
				hits = append(hits, kw)
			}
		}
		for _, a := range append([]string{e.Name}, e.Aliases...) {
			if k := normText(a); k != "" && strings.Contains(norm, " "+k+" ") {
				score += 5
				hits = append(hits, a)
			}
		}
		if score > bestScore {
			best, bestScore, bestHits = i, score, hits
		}
	}
	if best < 0 {
		return decision{}, false
	}
	sort.Strings(bestHits)
	q := make([]string, len(bestHits))
	for i, h := range bestHits {
		q[i] = strconv.Quote(h)
	}
	return toEntry(r.entries[best].Name, "keywords "+strings.Join(q, ", ")+" -> "+r.entries[best].Name), true
}

// normText lowercases and turns everything but letters and digits into
// single blanks.
func normText(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}), " ")
}

func lookup(m map[string]int, k string) (int, bool) {
	i, ok := m[k]
	return i, ok
}
