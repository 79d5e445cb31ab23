package offline

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog/registry"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// catalogResolver maps trace requests to entries, as the loop will.
var catalogResolver = resolver.New(registry.Infos())

// Sweep commands. Each is read by a check; the test
// TestEveryCommandPassesThePolicy holds them to the command policy.
const (
	cmdDmesg   = "dmesg --level=err,crit,alert,emerg -T | tail -n 60"
	cmdJournal = "journalctl -p err -n 50 --no-pager"
	cmdSS      = "ss -ltnp"
	cmdDfInode = "df -i"
	cmdDstate  = "ps -eo pid,stat,wchan:32,comm | awk '$2 ~ /^D/'"
)

// step is one command or trace the engine asks for, and why.
type step struct {
	command string
	trace   *resolver.Request
	why     string
}

func (s step) key() string {
	if s.trace != nil {
		return "trace:" + requestKey(*s.trace)
	}
	return "cmd:" + s.command
}

// plan is an ordered, deduplicated list of steps.
type plan struct {
	steps []step
	seen  map[string]bool
	// skipped say what was left out and why (an entry that does not
	// work on this kernel).
	skipped []string
}

func newPlan() *plan { return &plan{seen: map[string]bool{}} }

func (p *plan) cmd(line, why string) {
	s := step{command: line, why: why}
	if !p.seen[s.key()] {
		p.seen[s.key()] = true
		p.steps = append(p.steps, s)
	}
}

func (p *plan) trace(r resolver.Request, why string) {
	s := step{trace: &r, why: why}
	if !p.seen[s.key()] {
		p.seen[s.key()] = true
		p.steps = append(p.steps, s)
	}
}

// sweepTrace is a request for a catalog entry with filters.
func sweepTrace(name string, d time.Duration, filters ...string) resolver.Request {
	r := resolver.Request{Name: name, Duration: resolver.Duration{D: d}}
	if len(filters) > 0 {
		r.Filters = resolver.Filters{}
		for i := 0; i+1 < len(filters); i += 2 {
			r.Filters[filters[i]] = filters[i+1]
		}
	}
	return r
}

// supported reports whether the entry a request maps to runs on this
// kernel according to the facts (unknown counts as yes).
func supported(v *view, r resolver.Request) (bool, string) {
	res := catalogResolver.Resolve(r)
	if res.Kind() != resolver.KindEntry {
		return false, res.Refused
	}
	for _, c := range v.f.Catalog {
		if c.Name == res.Entry && !c.Supported {
			return false, orDefault(c.Reason, "not supported on this kernel")
		}
	}
	return true, ""
}

// firstSteps are the sweep's deeper looks, chosen from the facts, then
// the steps of the playbooks that match the issue.
func (e *Engine) firstSteps(v *view, matched []matched) *plan {
	p := newPlan()
	d := e.traceDur
	f := v.f
	p.cmd(cmdDmesg, "kernel errors (disk, OOM, hardware)")
	if f.InitSystem == "systemd" {
		p.cmd(cmdJournal, "recent errors of services")
	}
	p.cmd(cmdSS, "listeners, their accept queues and owners")
	p.cmd(cmdDfInode, "space and inodes as df sees them")
	p.cmd(cmdDstate, "tasks stuck in uninterruptible I/O")

	p.trace(sweepTrace("exit", d, "failed", "true"), "programs that crash or exit with errors")
	p.trace(sweepTrace("syscalls", d, "failed", "true"), "failing system calls by errno (EADDRINUSE, EACCES, EMFILE, ENOSPC)")
	p.trace(sweepTrace("open", d, "failed", "true"), "failed opens with their paths (permission denied, missing files)")
	if len(f.Disks) > 0 || f.CPU.IOWait >= IOWaitPercent {
		p.trace(sweepTrace("biolatency", d), "block I/O latency per disk and who does the I/O")
	}
	if ioHeavy(v) {
		p.trace(sweepTrace("fileio", d), "who waits on file I/O, how long per call")
	}
	p.trace(sweepTrace("runqlat", d), "how long tasks wait for a CPU")
	if f.Network.TCPRetransPerSec > 0 {
		p.trace(sweepTrace("tcpretrans", d), "which connections retransmit")
	}
	if memoryRelevant(v) {
		p.trace(sweepTrace("oomkill", d), "OOM kills as they happen")
	}
	for _, pb := range matched {
		for _, c := range pb.steps.commands {
			p.cmd(c, "playbook "+pb.Name)
		}
		for _, t := range pb.steps.traces {
			if t.Duration.D == 0 {
				t.Duration = resolver.Duration{D: d}
			}
			p.trace(t, "playbook "+pb.Name)
		}
	}
	p.dropUnsupported(v)
	return p
}

// ioHeavy: the facts show a process moving a lot to or from storage, or
// waiting on it, or tasks stalling on I/O; who waits and how long per
// call is then worth a file I/O trace, playbook or not.
func ioHeavy(v *view) bool {
	f := v.f
	if f.PSI != nil && f.PSI.IO.SomeAvg10 >= IOEvidencePSI {
		return true
	}
	for _, p := range f.TopIO {
		if v.own[p.Comm] {
			continue
		}
		if p.ReadBytesPerSec+p.WriteBytesPerSec >= IOHeavyBytesPerSec || p.IODelayPercent >= SyncIOBusyPercent {
			return true
		}
	}
	return false
}

func memoryRelevant(v *view) bool {
	f := v.f
	if f.Memory.OOMKills > 0 || (f.PSI != nil && f.PSI.Memory.SomeAvg10 > 0) {
		return true
	}
	for _, cg := range f.Cgroups {
		if cg.MemoryLimitBytes > 0 || cg.OOMKills > 0 {
			return true
		}
	}
	if m := f.Memory; m.TotalBytes > 0 && float64(m.AvailableBytes) < 0.2*float64(m.TotalBytes) {
		return true
	}
	return false
}

func (p *plan) dropUnsupported(v *view) {
	kept := p.steps[:0]
	for _, s := range p.steps {
		if s.trace != nil {
			if ok, why := supported(v, *s.trace); !ok {
				p.skipped = append(p.skipped, fmt.Sprintf("%s: %s", traceLabel(*s.trace), why))
				continue
			}
		}
		kept = append(kept, s)
	}
	p.steps = kept
}

// asked are the steps of the earlier rounds.
func asked(v *view, rounds [][]step) map[string]bool {
	m := map[string]bool{}
	for _, r := range rounds {
		for _, s := range r {
			m[s.key()] = true
		}
	}
	return m
}

// subject is a thing found in the first round that follow-ups look at.
type subject struct {
	kind string
	vars map[string]string
}

// subjects are the follow-up triggers: every finding, the processes the
// issue names and the listening processes.
func subjects(v *view, found *findings) []subject {
	var out []subject
	for _, f := range found.ranked() {
		vars := map[string]string{"hostname": v.f.Hostname}
		for k, x := range f.vars {
			vars[k] = x
		}
		out = append(out, subject{kind: f.kind, vars: vars})
	}
	for _, c := range namedProcesses(v) {
		out = append(out, subject{kind: "process.named", vars: map[string]string{"comm": c.comm, "pid": c.pid, "hostname": v.f.Hostname}})
	}
	ls, _ := v.listeners()
	seen := map[string]bool{}
	for _, l := range ls {
		if l.comm == "" || seen[l.comm] || v.own[l.comm] {
			continue
		}
		seen[l.comm] = true
		out = append(out, subject{kind: "process.listening", vars: map[string]string{"comm": l.comm, "pid": strconv.Itoa(l.pid), "port": strconv.Itoa(l.port), "hostname": v.f.Hostname}})
	}
	return out
}

type namedProc struct{ comm, pid string }

// namedProcesses are the running or traced programs the issue names.
func namedProcesses(v *view) []namedProc {
	cand := map[string]string{}
	var order []string
	add := func(comm, pid string) {
		if comm == "" || len(comm) < 3 || v.own[comm] || answerUtilities[comm] {
			return
		}
		if _, ok := cand[comm]; !ok {
			order = append(order, comm)
			cand[comm] = pid
		}
	}
	for _, list := range [][]procLite{lite(v.f.TopCPU), lite(v.f.TopMemory), lite(v.f.FDHeavy)} {
		for _, p := range list {
			add(p.comm, p.pid)
		}
	}
	ls, _ := v.listeners()
	for _, l := range ls {
		add(l.comm, strconv.Itoa(l.pid))
	}
	for _, u := range append(append([]sysinfo.Unit{}, v.f.FailedUnits...), v.f.RestartingUnits...) {
		add(strings.TrimSuffix(u.Name, ".service"), "")
	}
	for _, e := range exitsByComm(v) {
		add(e.comm, "")
	}
	var out []namedProc
	for _, c := range order {
		if v.issueNames(c) {
			out = append(out, namedProc{comm: comm15(c), pid: cand[c]})
		}
	}
	return out
}

// maxFollowupSubjects bounds how many subjects of one kind get
// follow-ups.
const maxFollowupSubjects = 3

// followSteps are the second round: what did not fit in the first, the
// built-in follow-ups per subject, and the playbooks' follow-ups.
func (e *Engine) followSteps(v *view, matched []matched, found *findings, done map[string]bool) *plan {
	p := newPlan()
	for k := range done {
		p.seen[k] = true
	}
	for _, s := range e.firstSteps(v, matched).steps {
		if s.trace != nil {
			p.trace(*s.trace, s.why)
		} else {
			p.cmd(s.command, s.why)
		}
	}
	count := map[string]int{}
	for _, s := range subjects(v, found) {
		if count[s.kind] >= maxFollowupSubjects {
			continue
		}
		n := len(p.steps)
		for _, fu := range builtinFollowups {
			if fu.when == s.kind {
				p.addFollowup(fu, s, "look closer at "+describe(s), e.traceDur)
			}
		}
		for _, pb := range matched {
			for _, fu := range pb.followups {
				if fu.when == s.kind {
					p.addFollowup(fu, s, "playbook "+pb.Name+": "+describe(s), e.traceDur)
				}
			}
		}
		if len(p.steps) > n {
			count[s.kind]++
		}
	}
	p.dropUnsupported(v)
	return p
}

func describe(s subject) string {
	for _, k := range []string{"comm", "unit", "mount", "disk", "path", "port", "cgroup"} {
		if x := s.vars[k]; x != "" {
			return s.kind + " " + x
		}
	}
	return s.kind
}

func (p *plan) addFollowup(fu compiledFollowup, s subject, why string, d time.Duration) {
	for _, c := range fu.commands {
		if line, ok := fill(c, s.vars, true); ok {
			p.cmd(line, why)
		}
	}
	for _, t := range fu.traces {
		r := t
		r.Filters = resolver.Filters{}
		ok := true
		for k, x := range t.Filters {
			val, filled := fill(x, s.vars, false)
			ok = ok && filled
			r.Filters[k] = val
		}
		if !ok {
			continue
		}
		if r.Duration.D == 0 {
			r.Duration = resolver.Duration{D: d}
		}
		p.trace(r, why)
	}
}

// builtinFollowups are the sweep's own second looks.
var builtinFollowups = func() []compiledFollowup {
	tr := func(name string, filters ...string) resolver.Request { return sweepTrace(name, 0, filters...) }
	return []compiledFollowup{
		{when: "process.crashing", traces: []resolver.Request{
			tr("syscalls", "comm", "{{comm}}", "failed", "true"),
			tr("open", "comm", "{{comm}}", "failed", "true"),
			tr("exec", "comm", "{{comm}}"),
		}},
		{when: "process.named", traces: []resolver.Request{
			tr("syscalls", "comm", "{{comm}}", "failed", "true"),
			tr("open", "comm", "{{comm}}", "failed", "true"),
		}},
		{when: "port.inuse", traces: []resolver.Request{tr("exec", "comm", "{{comm}}")}},
		{when: "perm.denied", commands: []string{"namei -l {{path}}"}},
		{when: "service.restarting", commands: []string{"journalctl -u {{unit}} -n 30 --no-pager"}},
		{when: "service.failed", commands: []string{"journalctl -u {{unit}} -n 30 --no-pager"}},
		{when: "fs.inodes", commands: []string{"du --inodes -x -d 2 {{mount}} 2>/dev/null | sort -rn | head -n 12"}},
		{when: "fs.space", commands: []string{"du -xh -d 2 {{mount}} 2>/dev/null | sort -rh | head -n 12"}},
		{when: "disk.saturation", traces: []resolver.Request{tr("fileio")}},
		{when: "mem.pressure", traces: []resolver.Request{tr("reclaim")}},
	}
}()

// reply cuts a plan into what fits one reply (returned with the steps
// it holds) and the rest.
func (p *plan) reply(reasoning []string) (protocol.Reply, []step, []step) {
	r := protocol.Reply{Type: protocol.Diagnostic}
	var in, rest []step
	for _, s := range p.steps {
		switch {
		case s.trace != nil && len(r.Traces) < protocol.MaxTraces:
			t := *s.trace
			t.Description = s.why
			r.Traces = append(r.Traces, t)
		case s.trace == nil && len(r.Commands) < protocol.MaxCommands:
			r.Commands = append(r.Commands, s.command)
		default:
			rest = append(rest, s)
			continue
		}
		in = append(in, s)
	}
	r.Reasoning = strings.Join(reasoning, "\n")
	return r, in, rest
}

// stepsOf reads a diagnostic reply back into steps (to know what was
// asked already).
func stepsOf(r protocol.Reply) []step {
	var out []step
	for _, c := range r.Commands {
		out = append(out, step{command: c})
	}
	for i := range r.Traces {
		t := r.Traces[i]
		out = append(out, step{trace: &t})
	}
	return out
}

// whyLines summarises a plan for the reasoning: one line for the sweep's
// own looks, one per playbook or follow-up subject.
func whyLines(steps []step) []string {
	by := map[string][]string{}
	var order []string
	for _, s := range steps {
		group := s.why
		if !strings.HasPrefix(group, "playbook ") && !strings.HasPrefix(group, "look closer") {
			group = "sweep"
		}
		label := s.command
		if s.trace != nil {
			label = traceLabel(*s.trace)
			if c := s.trace.Filters["comm"]; c != "" {
				label += " (" + c + ")"
			} else if s.trace.Filters["failed"] == "true" {
				label += " (failures)"
			}
		}
		if _, ok := by[group]; !ok {
			order = append(order, group)
		}
		by[group] = append(by[group], label)
	}
	var out []string
	for _, w := range order {
		out = append(out, fmt.Sprintf("- %s: %s", w, strings.Join(by[w], "; ")))
	}
	return out
}
