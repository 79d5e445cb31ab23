// Package diagnose is the investigation loop: the issue and the host's
// facts go to a reasoning engine; its diagnostic replies' commands (safe
// execution) and traces (the catalog) run concurrently, their results go
// back, until the engine resolves the issue or a limit ends it.
package diagnose

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/catalog/runner"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/redact"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultMaxRounds   = 8
	DefaultMaxWall     = 10 * time.Minute
	DefaultRoundBudget = 2 * time.Minute
	// DefaultParallel is how many commands of a round run at once.
	DefaultParallel = 4
	// stopMargin is kept at the end of a round for traces to detach and
	// report.
	stopMargin = 2 * time.Second
)

// Options configure one investigation. Engine is required.
type Options struct {
	Engine brain.Engine
	// Kernel runs traces; nil means traces cannot run here (not root),
	// and each trace request is answered with TraceUnavailable.
	Kernel *catalog.Kernel
	// TraceUnavailable is the reason given for traces when Kernel is nil.
	TraceUnavailable string
	// Facts are the host's facts, collected by the caller.
	Facts       *sysinfo.Facts
	MaxRounds   int
	MaxWall     time.Duration
	RoundBudget time.Duration
	// ContextBytes is the results budget per round sent to chat engines.
	ContextBytes int
	// Exec runs the commands; the zero value means safeexec.DefaultOptions
	// (sandboxed).
	Exec     *safeexec.Options
	Parallel int
	// Redact is applied to every command output and trace result before
	// it is stored, shown or sent; nil means redact.String.
	Redact   func(string) string
	Progress func(Event)
	Log      *zap.Logger
}

// EventKind says what an Event reports.
type EventKind string

const (
	EventThinking      EventKind = "thinking"       // waiting for the engine
	EventReply         EventKind = "reply"          // a diagnostic reply: Text is its reasoning
	EventParseRetry    EventKind = "parse-retry"    // the reply did not parse; Text is the error
	EventCommandStart  EventKind = "command-start"  // Text is the command
	EventCommandDone   EventKind = "command-done"   // Command is set
	EventTraceStart    EventKind = "trace-start"    // Text lists the traces
	EventTraceProgress EventKind = "trace-progress" // Trace is set
	EventTraceDone     EventKind = "trace-done"
	EventLimit         EventKind = "limit" // Text names the limit
)

// Event is progress reported while an investigation runs.
type Event struct {
	Kind    EventKind
	Round   int // 1-based
	Text    string
	Command *CommandReport
	Trace   runner.Progress
}

// Run investigates issue until the engine resolves it or a limit ends it.
// It returns the report in every case; the error is set when the
// investigation failed (engine unreachable, replies unreadable,
// cancelled) and says why.
func Run(ctx context.Context, issue string, o Options) (*Report, error) {
	o.defaults()
	start := time.Now()
	rep := &Report{Issue: issue, Engine: o.Engine.Name(), Facts: o.Facts, Rounds: []RoundReport{}, Findings: []protocol.Finding{}}
	defer func() { rep.DurationMS = time.Since(start).Milliseconds() }()

	deadline := start.Add(o.MaxWall)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	inv := &brain.Investigation{
		Issue: issue,
		Facts: o.Facts,
		Limits: brain.Limits{
			MaxRounds: o.MaxRounds, Deadline: deadline,
			RoundBudget: o.RoundBudget, ContextBytes: o.ContextBytes,
		},
	}
	l := &loop{o: o, rep: rep, inv: inv}
	return l.run(ctx, wctx)
}

func (o *Options) defaults() {
	if o.MaxRounds <= 0 {
		o.MaxRounds = DefaultMaxRounds
	}
	if o.MaxWall <= 0 {
		o.MaxWall = DefaultMaxWall
	}
	if o.RoundBudget <= 0 {
		o.RoundBudget = DefaultRoundBudget
	}
	if o.ContextBytes <= 0 {
		o.ContextBytes = brain.DefaultContextBytes
	}
	if o.Exec == nil {
		e := safeexec.DefaultOptions()
		o.Exec = &e
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Redact == nil {
		o.Redact = redact.String
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.TraceUnavailable == "" {
		o.TraceUnavailable = "kernel traces need root"
	}
}

type loop struct {
	o   Options
	rep *Report
	inv *brain.Investigation
}

func (l *loop) progress(e Event) {
	if l.o.Progress != nil {
		l.o.Progress(e)
	}
}

func (l *loop) run(parent, ctx context.Context) (*Report, error) {
	retried := false
	for {
		round := len(l.inv.Rounds) + 1
		if len(l.inv.Rounds) >= l.o.MaxRounds && !l.inv.Final {
			l.inv.Final = true
			l.progress(Event{Kind: EventLimit, Round: round, Text: l.limitText("rounds")})
		}
		l.progress(Event{Kind: EventThinking, Round: round})
		raw, err := l.o.Engine.Next(ctx, l.inv)
		if err != nil {
			if stop := l.stopped(parent, ctx); stop != "" {
				return l.bestSoFar(stop)
			}
			l.rep.EndedBy = "engine error"
			l.rep.Error = fmt.Sprintf("engine %s: %v", l.o.Engine.Name(), err)
			return l.rep, errors.New(l.rep.Error)
		}
		reply, err := protocol.Parse(raw)
		if err != nil {
			if !retried {
				retried = true
				l.inv.ParseFailure = &brain.ParseFailure{Reply: raw, Err: err.Error()}
				l.progress(Event{Kind: EventParseRetry, Round: round, Text: err.Error()})
				continue
			}
			l.rep.EndedBy = "unreadable reply"
			l.rep.Error = fmt.Sprintf("engine %s sent a reply that is not protocol JSON twice: %v", l.o.Engine.Name(), err)
			return l.rep, errors.New(l.rep.Error)
		}
		retried = false
		l.inv.ParseFailure = nil
		if reply.Type == protocol.Resolution {
			l.resolve(reply, false)
			l.rep.EndedBy = "resolution"
			if l.inv.Final {
				l.rep.EndedBy = "resolution after " + l.limitText("rounds")
			}
			return l.rep, nil
		}
		if l.inv.Final {
			return l.bestSoFarReply(reply, l.limitText("rounds"))
		}
		l.progress(Event{Kind: EventReply, Round: round, Text: reply.Reasoning})
		r := l.execute(ctx, round, reply)
		l.inv.Rounds = append(l.inv.Rounds, r)
		l.rep.Rounds = append(l.rep.Rounds, l.roundReport(r))
		if stop := l.stopped(parent, ctx); stop != "" {
			return l.bestSoFar(stop)
		}
	}
}

func (l *loop) limitText(which string) string {
	switch which {
	case "rounds":
		return fmt.Sprintf("round limit (%d) reached", l.o.MaxRounds)
	default:
		return fmt.Sprintf("time limit (%s) reached", l.o.MaxWall)
	}
}

// stopped says whether the investigation must end now: cancelled by the
// user, or out of time.
func (l *loop) stopped(parent, ctx context.Context) string {
	switch {
	case parent.Err() != nil:
		return "cancelled"
	case ctx.Err() != nil:
		return l.limitText("time")
	}
	return ""
}

func (l *loop) resolve(r protocol.Reply, provisional bool) {
	l.rep.Resolution = &Resolution{
		RootCause: r.RootCause, ResolutionPlan: r.ResolutionPlan,
		Confidence: r.Confidence, Evidence: r.Evidence, Provisional: provisional,
	}
	if len(r.Findings) > 0 {
		l.rep.Findings = r.Findings
	}
}

// bestSoFar ends the investigation at a limit: the last reasoning is the
// best answer there is, marked provisional.
func (l *loop) bestSoFar(stop string) (*Report, error) {
	l.rep.EndedBy = stop
	var last string
	for i := len(l.rep.Rounds) - 1; i >= 0 && last == ""; i-- {
		last = strings.TrimSpace(l.rep.Rounds[i].Reasoning)
	}
	if last == "" {
		last = "nothing was learned before the investigation ended"
	}
	l.rep.Resolution = &Resolution{
		RootCause:   "Not determined (" + stop + "). Last reasoning: " + last,
		Confidence:  "Low",
		Provisional: true,
	}
	if stop == "cancelled" {
		l.rep.Error = "investigation cancelled"
		return l.rep, context.Canceled
	}
	return l.rep, nil
}

func (l *loop) bestSoFarReply(r protocol.Reply, stop string) (*Report, error) {
	l.rep.Rounds = append(l.rep.Rounds, RoundReport{Reasoning: r.Reasoning, Commands: []CommandReport{}, Traces: []TraceReport{},
		Notes: []string{stop + ": its commands and traces were not run"}})
	return l.bestSoFar(stop)
}

// execute runs one diagnostic reply's commands and traces concurrently
// within the round budget.
func (l *loop) execute(ctx context.Context, round int, reply protocol.Reply) brain.Round {
	r := brain.Round{Raw: protocol.Encode(reply), Reply: reply, Notes: append([]string(nil), reply.Notes...)}
	budget := l.o.RoundBudget
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < budget {
		budget = time.Until(dl)
	}
	rctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.Commands = l.runCommands(rctx, round, reply.Commands)
	}()
	go func() {
		defer wg.Done()
		r.Traces = l.runTraces(rctx, round, reply.Traces, budget-stopMargin, &r.Notes)
	}()
	wg.Wait()
	if rctx.Err() != nil && ctx.Err() == nil {
		r.Notes = append(r.Notes, fmt.Sprintf("round budget (%s) reached: what was still running was stopped", l.o.RoundBudget))
	}
	return r
}

func (l *loop) runCommands(ctx context.Context, round int, lines []string) []brain.CommandRun {
	out := make([]brain.CommandRun, len(lines))
	sem := make(chan struct{}, l.o.Parallel)
	var wg sync.WaitGroup
	for i, line := range lines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			l.progress(Event{Kind: EventCommandStart, Round: round, Text: line})
			res := safeexec.RunLine(ctx, line, *l.o.Exec)
			res.Stdout = l.o.Redact(res.Stdout)
			res.Stderr = l.o.Redact(res.Stderr)
			res.Error = l.o.Redact(res.Error)
			out[i] = brain.CommandRun{Result: res}
			cr := commandReport(res)
			l.progress(Event{Kind: EventCommandDone, Round: round, Text: line, Command: &cr})
		}()
	}
	wg.Wait()
	return out
}

// runTraces resolves the requests onto the catalog and runs what resolved,
// each clamped to the round's budget.
func (l *loop) runTraces(ctx context.Context, round int, reqs []resolver.Request, budget time.Duration, notes *[]string) []brain.TraceRun {
	if len(reqs) == 0 {
		return nil
	}
	out := make([]brain.TraceRun, len(reqs))
	res := runner.NewResolver().ResolveAll(reqs)
	var jobs []runner.Job
	var idx []int
	var names []string
	for i, rs := range res {
		out[i] = brain.TraceRun{Request: reqs[i], Resolution: rs}
		if rs.Kind() == resolver.KindRefused {
			out[i].Err = rs.Refused
			continue
		}
		if l.o.Kernel == nil {
			out[i].Err = l.o.TraceUnavailable
			continue
		}
		job, err := runner.JobFor(rs)
		if err != nil {
			out[i].Err = err.Error()
			continue
		}
		if budget > 0 && job.Params.Duration > budget {
			*notes = append(*notes, fmt.Sprintf("trace %s cut from %s to %s (round budget)", rs.Entry, job.Params.Duration, budget.Round(time.Second)))
			job.Params.Duration = budget
		}
		jobs = append(jobs, job)
		idx = append(idx, i)
		names = append(names, job.Entry.Info().Name)
	}
	if len(jobs) == 0 {
		return out
	}
	l.progress(Event{Kind: EventTraceStart, Round: round, Text: strings.Join(names, ", ")})
	outcomes := runner.Run(ctx, l.o.Kernel, jobs, func(p runner.Progress) {
		l.progress(Event{Kind: EventTraceProgress, Round: round, Trace: p})
	})
	for k, oc := range outcomes {
		i := idx[k]
		if oc.Result != nil {
			redactResult(oc.Result, l.o.Redact)
			out[i].Result = oc.Result
		}
		if oc.Err != nil {
			out[i].Err = l.o.Redact(oc.Err.Error())
		}
	}
	l.progress(Event{Kind: EventTraceDone, Round: round})
	return out
}

// redactResult applies redact to every text a trace result carries:
// sampled arguments and paths can hold secrets.
func redactResult(r *catalog.Result, redact func(string) string) {
	r.Summary = redact(r.Summary)
	for i := range r.Notes {
		r.Notes[i] = redact(r.Notes[i])
	}
	tables := make([]*catalog.Table, 0, len(r.Tables)+1)
	for i := range r.Tables {
		tables = append(tables, &r.Tables[i])
	}
	if r.Samples != nil {
		tables = append(tables, r.Samples)
	}
	for _, t := range tables {
		for _, row := range t.Rows {
			for j := range row {
				row[j] = redact(row[j])
			}
		}
	}
}

func commandReport(res safeexec.Result) CommandReport {
	out := res.Stdout
	if res.Stderr != "" {
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += res.Stderr
	}
	return CommandReport{
		Command: res.Command, ExitCode: res.ExitCode, Output: out,
		Refused: res.Refused, Reason: res.Reason, Error: res.Error,
		TimedOut: res.TimedOut, Truncated: res.Truncated, DurationMS: res.DurationMS,
	}
}

func (l *loop) roundReport(r brain.Round) RoundReport {
	rr := RoundReport{Reasoning: r.Reply.Reasoning, Commands: []CommandReport{}, Traces: []TraceReport{}, Notes: r.Notes}
	for _, c := range r.Commands {
		rr.Commands = append(rr.Commands, commandReport(c.Result))
	}
	for _, t := range r.Traces {
		tr := TraceReport{Request: t.Request, Mapping: t.Resolution.How, Notes: t.Resolution.Notes, Result: t.Result, Error: t.Err}
		switch t.Resolution.Kind() {
		case resolver.KindEntry:
			tr.Entry = t.Resolution.Entry
		case resolver.KindFallback:
			tr.Entry = "bpftrace"
		}
		rr.Traces = append(rr.Traces, tr)
	}
	return rr
}
