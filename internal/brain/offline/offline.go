// Package offline is the reasoning engine that needs no network: a
// USE-method health sweep (utilisation, saturation and errors of CPU,
// memory, filesystems, file descriptors, PIDs, disks, network, services
// and the kernel log) plus playbooks that match the issue text.
//
// It answers in the same protocol as a model would, so the diagnosis
// loop drives it like any engine: the first reply asks for the sweep's
// short traces and commands and the matching playbooks' steps; a second
// one, when the first results name something to look at closer
// (a crashing program, a denied path, a failing unit), asks for
// follow-ups; then it resolves. The resolution is the best-supported
// finding; every finding is listed, ranked by severity, then by how many
// independent pieces of evidence support it, then by whether a playbook
// matching the issue is about it. docs/OFFLINE_ENGINE.md describes the
// checks, the thresholds and the playbook schema.
package offline

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/protocol"
)

// Options configure the engine.
type Options struct {
	// PlaybookDir holds operators' playbooks (*.yaml, *.yml); empty means
	// DefaultPlaybookDir. A missing directory is fine; a broken file in
	// it is skipped with a warning (Engine.Warnings).
	PlaybookDir string
	// TraceDuration is the length of the sweep's traces (default
	// DefaultTraceDuration, bounded to 1..15 s).
	TraceDuration time.Duration
	// Log receives the warnings; nil logs nothing.
	Log *zap.Logger
}

// DefaultTraceDuration keeps the sweep's traces short looks: long enough
// to catch a crash loop or a latency distribution, short enough that a
// round ends in seconds.
const DefaultTraceDuration = 4 * time.Second

// MaxDiagnosticRounds is how many diagnostic replies the engine sends
// before it resolves: the sweep, then follow-ups.
const MaxDiagnosticRounds = 2

// Engine is the offline engine. It keeps no state between calls: every
// reply is derived from the investigation it is given.
type Engine struct {
	playbooks []*Playbook
	warnings  []string
	traceDur  time.Duration
	now       func() time.Time
}

// New loads the playbooks and returns the engine.
func New(opts Options) *Engine {
	dir := opts.PlaybookDir
	if dir == "" {
		dir = DefaultPlaybookDir
	}
	pbs, warns := loadPlaybooks(dir)
	d := opts.TraceDuration
	switch {
	case d == 0:
		d = DefaultTraceDuration
	case d < time.Second:
		d = time.Second
	case d > MaxPlaybookTraceSeconds*time.Second:
		d = MaxPlaybookTraceSeconds * time.Second
	}
	if opts.Log != nil {
		for _, w := range warns {
			opts.Log.Warn("offline engine playbook", zap.String("warning", w))
		}
	}
	return &Engine{playbooks: pbs, warnings: warns, traceDur: d, now: time.Now}
}

// Name implements brain.Engine.
func (e *Engine) Name() string { return "offline" }

// Warnings are the problems found loading playbooks (a file skipped, with
// its name and line).
func (e *Engine) Warnings() []string { return append([]string{}, e.warnings...) }

// Playbooks are the loaded playbooks' names, in load order.
func (e *Engine) Playbooks() []string {
	out := make([]string, len(e.playbooks))
	for i, p := range e.playbooks {
		out[i] = p.Name
	}
	return out
}

// matched is a playbook that applies to the issue; hits is how much of
// the text its keywords and patterns match (0 for an always-playbook the
// text does not name).
type matched struct {
	*Playbook
	hits int
}

// match returns the playbooks that apply to issue, best matched first.
func (e *Engine) match(issue string) []matched {
	var out []matched
	for _, pb := range e.playbooks {
		if n := pb.matches(issue); n > 0 || pb.Match.Always {
			out = append(out, matched{pb, n})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].hits > out[j].hits })
	return out
}

// Next implements brain.Engine.
func (e *Engine) Next(ctx context.Context, inv *brain.Investigation) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if inv == nil {
		return "", errors.New("offline engine: no investigation")
	}
	v := newView(inv)
	matched := e.match(inv.Issue)
	// Traces must end within the loop's round budget, with time to spare
	// for stopping them.
	if b := inv.Limits.RoundBudget; b > 0 && b-2*time.Second < e.traceDur {
		short := *e
		short.traceDur = max(b-2*time.Second, time.Second)
		e = &short
	}
	var rounds [][]step
	for _, r := range inv.Rounds {
		rounds = append(rounds, stepsOf(r.Reply))
	}
	if e.mayAsk(inv) {
		switch len(inv.Rounds) {
		case 0:
			p := e.firstSteps(v, matched)
			reply, _, _ := p.reply(e.firstReasoning(v, matched, p))
			if len(reply.Commands)+len(reply.Traces) > 0 {
				return protocol.Encode(reply), nil
			}
		case 1:
			found := e.findings(v, matched)
			p := e.followSteps(v, matched, found, asked(v, rounds))
			if len(p.steps) > 0 {
				reply, _, _ := p.reply(followReasoning(found, p))
				return protocol.Encode(reply), nil
			}
		}
	}
	return protocol.Encode(e.resolve(v, matched)), nil
}

// mayAsk reports whether another diagnostic round fits the limits: the
// loop's final flag, its round limit, and the time left for the traces.
func (e *Engine) mayAsk(inv *brain.Investigation) bool {
	if inv.Final || len(inv.Rounds) >= MaxDiagnosticRounds {
		return false
	}
	if inv.Limits.MaxRounds > 0 && len(inv.Rounds) >= inv.Limits.MaxRounds {
		return false
	}
	if !inv.Limits.Deadline.IsZero() && inv.Limits.Deadline.Sub(e.now()) < 3*e.traceDur {
		return false
	}
	return true
}

func (e *Engine) firstReasoning(v *view, matched []matched, p *plan) []string {
	lines := []string{"USE sweep of CPU, memory, filesystems (space and inodes), file descriptors, PIDs, disks, network, DNS, services and the kernel log."}
	pre := sweep(v).ranked()
	var seen []string
	for _, f := range pre {
		if f.sev >= sevWarning && len(seen) < 3 {
			seen = append(seen, f.title)
		}
	}
	if len(seen) > 0 {
		lines = append(lines, "The facts already show: "+strings.Join(seen, "; ")+".")
	} else {
		lines = append(lines, "The facts alone show nothing past its thresholds.")
	}
	if len(matched) > 0 {
		var names []string
		for _, pb := range matched {
			if pb.hits > 0 {
				names = append(names, pb.Name)
			} else {
				names = append(names, pb.Name+" (always)")
			}
		}
		lines = append(lines, "Playbooks matching the issue: "+strings.Join(names, ", ")+".")
	} else {
		lines = append(lines, "No playbook matches the issue; the sweep alone decides.")
	}
	lines = append(lines, fmt.Sprintf("Looking closer (traces of %s):", seconds(e.traceDur)+" s"))
	_, in, rest := p.reply(nil)
	lines = append(lines, whyLines(in)...)
	if len(rest) > 0 {
		lines = append(lines, fmt.Sprintf("%d more steps wait for the next round.", len(rest)))
	}
	if len(p.skipped) > 0 {
		lines = append(lines, "Not available here: "+strings.Join(p.skipped, "; "))
	}
	for _, w := range e.warnings {
		lines = append(lines, "Warning: "+w)
	}
	return lines
}

func followReasoning(found *findings, p *plan) []string {
	var lines []string
	top := found.ranked()
	if len(top) > 0 {
		var t []string
		for i, f := range top {
			if i == 3 {
				break
			}
			t = append(t, fmt.Sprintf("%s (%s)", f.title, f.sev))
		}
		lines = append(lines, "So far: "+strings.Join(t, "; ")+".")
	} else {
		lines = append(lines, "So far nothing past the thresholds.")
	}
	lines = append(lines, "Following up:")
	_, in, _ := p.reply(nil)
	return append(lines, whyLines(in)...)
}

// findings runs the sweep and the matching playbooks' rules, and marks
// the findings the playbooks are about.
func (e *Engine) findings(v *view, matched []matched) *findings {
	fs := sweep(v)
	for _, pb := range matched {
		for _, r := range pb.rules {
			if f := evalRule(v, pb.Playbook, r, fs); f != nil {
				if old := fs.find(f.kind, ""); old == nil {
					f.seq = len(fs.list)
					f.boosted = pb.hits > 0
					f.boostHits = pb.hits
					fs.list = append(fs.list, f)
				}
			}
		}
	}
	for _, f := range fs.list {
		for _, pb := range matched {
			if pb.hits > 0 && pb.boostKinds[f.kind] && !f.boosted {
				f.boosted, f.playbook, f.boostHits = true, pb.Name, pb.hits
			}
		}
	}
	return fs
}

// resolve builds the resolution from the ranked findings.
func (e *Engine) resolve(v *view, matched []matched) protocol.Reply {
	ranked := e.findings(v, matched).ranked()
	r := protocol.Reply{Type: protocol.Resolution}
	for _, f := range ranked {
		r.Findings = append(r.Findings, f.protocol())
	}
	if len(ranked) == 0 || ranked[0].sev < sevWarning {
		r.RootCause = "No anomaly found: every check of the sweep is within its thresholds"
		if len(ranked) > 0 {
			r.RootCause += fmt.Sprintf(" (%s of minor note listed)", plural(len(ranked), "observation", "observations"))
		}
		r.RootCause += ". The problem may not be happening right now, or lies outside what the host shows (the application's own logs, the network beyond this host)."
		r.Confidence = "Low"
		r.Evidence = strings.Join(checked(v), "\n")
		r.ResolutionPlan = strings.Join([]string{
			"1. Run the diagnosis again while the problem is happening: short traces only see the present.",
			"2. Describe the symptom with what fails and where (a path, a service, a port, an error message), so that a playbook can direct the checks.",
			"3. Check the application's own logs for the error it reports.",
		}, "\n")
		return r
	}
	top := ranked[0]
	pf := top.protocol()
	r.RootCause = top.title + ". " + top.rootCause
	r.Confidence = pf.Confidence
	r.Evidence = strings.Join(pf.Evidence, "\n")
	var plan []string
	for i, s := range top.fix {
		plan = append(plan, fmt.Sprintf("%d. %s", i+1, s))
	}
	if len(ranked) > 1 {
		var others []string
		for _, f := range ranked[1:] {
			if len(others) == 3 {
				break
			}
			if f.sev >= sevWarning {
				others = append(others, f.title)
			}
		}
		if len(others) > 0 {
			plan = append(plan, "Also found: "+strings.Join(others, "; ")+".")
		}
	}
	r.ResolutionPlan = strings.Join(plan, "\n")
	return r
}

// checked says what the sweep looked at, with the numbers, for an
// honest "nothing found".
func checked(v *view) []string {
	f := v.f
	var out []string
	if cpuMeasured(f.CPU) {
		out = append(out, fmt.Sprintf("CPU: %s busy, iowait %s, load %.2f on %d CPUs", pct(100-f.CPU.Idle-f.CPU.IOWait), pct(f.CPU.IOWait), f.Load[0], f.CPUs))
	}
	if m := f.Memory; m.TotalBytes > 0 {
		out = append(out, fmt.Sprintf("memory: %s available of %s; swap %s of %s free; %d OOM kills since boot", bytesStr(m.AvailableBytes), bytesStr(m.TotalBytes), bytesStr(m.SwapFreeBytes), bytesStr(m.SwapTotalBytes), m.OOMKills))
	}
	if len(f.Filesystems) > 0 {
		worst, worstI := f.Filesystems[0], f.Filesystems[0]
		for _, x := range f.Filesystems {
			if usedPercent(x) > usedPercent(worst) {
				worst = x
			}
			if inodesPercent(x) > inodesPercent(worstI) {
				worstI = x
			}
		}
		out = append(out, fmt.Sprintf("%s: fullest %s at %s space, highest inode use %s at %s", plural(len(f.Filesystems), "filesystem", "filesystems"), worst.Mount, pct(usedPercent(worst)), worstI.Mount, pct(inodesPercent(worstI))))
	}
	if l := f.Limits; l.FileHandlesMax > 0 {
		out = append(out, fmt.Sprintf("file handles %d of %d; tasks %d of threads-max %d", l.FileHandles, l.FileHandlesMax, l.Tasks, l.ThreadsMax))
	}
	if len(f.Disks) > 0 {
		var ds []string
		for _, d := range f.Disks {
			ds = append(ds, fmt.Sprintf("%s %s busy, await %.1f ms", d.Name, pct(d.UtilPercent), d.AwaitMS))
		}
		out = append(out, "disks: "+joinMax(ds, 4))
	}
	n := f.Network
	answering := 0
	for _, r := range n.Resolvers {
		if r.Answered {
			answering++
		}
	}
	out = append(out, fmt.Sprintf("network: %.1f retransmits/s of %.1f segments/s; %d listen overflows since boot; %d of %s answering", n.TCPRetransPerSec, n.TCPOutSegsPerSec, n.ListenOverflows, answering, plural(len(n.Resolvers), "nameserver", "nameservers")))
	if f.InitSystem == "systemd" {
		out = append(out, fmt.Sprintf("services: %d failed, %d restarting", len(f.FailedUnits), len(f.RestartingUnits)))
	} else if f.Services != "" {
		out = append(out, "services: "+f.Services)
	}
	out = append(out, fmt.Sprintf("kernel log: %d recent warnings or errors read", len(f.KernelLog)))
	var ran []string
	for _, t := range v.traces {
		ran = append(ran, fmt.Sprintf("%s (%d events)", t.Entry, t.Events))
	}
	if len(ran) > 0 {
		out = append(out, "traces: "+strings.Join(ran, ", "))
	}
	if len(v.failed) > 0 {
		out = append(out, "traces that did not run: "+strings.Join(v.failed, "; "))
	}
	return out
}
