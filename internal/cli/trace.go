package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/registry"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/catalog/runner"
	"github.com/spf13/cobra"
)

func (a *app) traceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Run the catalog's eBPF programs directly",
	}
	cmd.AddCommand(a.traceListCommand(), a.traceRunCommand(), a.traceResolveCommand())
	return cmd
}

// entryStatus is one row of `trace list`.
type entryStatus struct {
	catalog.Info
	Works  bool   `json:"works_here"`
	Reason string `json:"reason,omitempty"`
}

func entryStatuses(k *catalog.Kernel) []entryStatus {
	var out []entryStatus
	for _, e := range registry.All() {
		st := entryStatus{Info: e.Info(), Works: true}
		if err := e.Check(k); err != nil {
			st.Works, st.Reason = false, err.Error()
		}
		out = append(out, st)
	}
	return out
}

func (a *app) traceListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the catalog: what each entry answers, what it needs, whether it works here",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k := catalog.NewKernel(a.log.Named("catalog"))
			sts := entryStatuses(k)
			if asJSON {
				return writeJSON(a.stdout, sts)
			}
			t := catalog.Table{Title: fmt.Sprintf("%d catalog entries (kernel %s)", len(sts), k.Features().Release),
				Columns: []string{"entry", "answers", "needs", "here"}}
			for _, st := range sts {
				here := "works"
				if !st.Works {
					here = "no: " + st.Reason
				}
				var needs []string
				for _, r := range st.Requires {
					needs = append(needs, r.String())
				}
				t.Rows = append(t.Rows, []string{st.Name, st.Answers, strings.Join(needs, ", "), here})
			}
			t.Render(a.stdout)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

type runFlags struct {
	duration   time.Duration
	pid, tid   uint32
	uid        int64
	comm       string
	cgroup     string
	failed     bool
	minLatency time.Duration
	port       uint16
	target     string
	frequency  int
	asJSON     bool
}

func (a *app) traceRunCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run NAME[,NAME...]",
		Short: "Run one entry, or several at once, and print what they gathered",
		Long: `Run catalog entries for --duration (default 10s, at most 120s) and print
their results. Ctrl-C ends the traces early and still prints what was
gathered. Filters apply to every entry named; an entry that does not
support a filter refuses to start.

NAME is an entry, or anything the resolver maps to one (and says how on
stderr): a classic tool name (execsnoop, biolatency, tcpdrop...), a
tracepoint (block:block_rq_complete), a syscall (openat), a kernel
function (vfs_read), or a bpftrace script, run by the bpftrace fallback.

Entries: ` + strings.Join(registry.Names(), ", "),
		Example: `  nannyagent trace run exec --duration 5s
  nannyagent trace run open --comm postgres --failed
  nannyagent trace run exec,tcpconnect,biolatency --json
  nannyagent trace run execsnoop
  nannyagent trace run irq:softirq_entry`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.traceRun(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.DurationVarP(&f.duration, "duration", "d", catalog.DefaultDuration, "how long to trace (at most 2m)")
	fl.Uint32Var(&f.pid, "pid", 0, "only this process (tgid)")
	fl.Uint32Var(&f.tid, "tid", 0, "only this thread")
	fl.Int64Var(&f.uid, "uid", -1, "only this user id")
	fl.StringVar(&f.comm, "comm", "", "only tasks with this command name (at most 15 characters)")
	fl.StringVar(&f.cgroup, "cgroup", "", "only this cgroup v2 directory (e.g. system.slice/nginx.service)")
	fl.BoolVar(&f.failed, "failed", false, "only failed operations")
	fl.DurationVar(&f.minLatency, "min-latency", 0, "only operations at least this slow")
	fl.Uint16Var(&f.port, "port", 0, "only this TCP/UDP port")
	fl.StringVar(&f.target, "target", "", "what a generic entry traces: category:name for tracepoint, a kernel function for kfunc")
	fl.IntVar(&f.frequency, "frequency", 0, "sampling frequency in Hz (profile)")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON")
	return cmd
}

func (f runFlags) params() (catalog.Params, error) {
	if f.duration <= 0 {
		return catalog.Params{}, fmt.Errorf("--duration %s: must be positive", f.duration)
	}
	if f.duration > catalog.MaxDuration {
		return catalog.Params{}, fmt.Errorf("--duration %s: at most %s", f.duration, catalog.MaxDuration)
	}
	p := catalog.Params{Duration: f.duration, PID: f.pid, TID: f.tid, Comm: f.comm, Cgroup: f.cgroup,
		FailedOnly: f.failed, MinLatency: f.minLatency, Port: f.port, Target: f.target, Frequency: f.frequency}
	if f.uid >= 0 {
		if f.uid > 1<<32-2 {
			return p, fmt.Errorf("--uid %d: out of range", f.uid)
		}
		u := uint32(f.uid)
		p.UID = &u
	}
	return p, nil
}

func (a *app) traceRun(cmd *cobra.Command, names string, f runFlags) error {
	p, err := f.params()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	var jobs []runner.Job
	for _, name := range splitNames(names) {
		job, err := a.jobFor(name, p)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		jobs = append(jobs, job)
	}
	k := catalog.NewKernel(a.log.Named("catalog"))
	var progress func(runner.Progress)
	if isTerminal(a.stderr) {
		progress = func(pr runner.Progress) {
			fmt.Fprintf(a.stderr, "\rtracing %s: %4.1fs of %.0fs, %d events (Ctrl-C ends early) ",
				names, pr.Elapsed.Seconds(), pr.Total.Seconds(), pr.Events)
		}
	} else if !f.asJSON {
		fmt.Fprintf(a.stderr, "tracing %s for %s...\n", names, catalog.ClampDuration(p.Duration))
	}
	ctx, stop := a.interruptible(cmd.Context())
	defer stop()
	outs := runner.Run(ctx, k, jobs, progress)
	if progress != nil {
		fmt.Fprint(a.stderr, "\r\033[K")
	}
	failed := 0
	if f.asJSON {
		type jsonOutcome struct {
			Entry  string          `json:"entry"`
			Result *catalog.Result `json:"result,omitempty"`
			Error  string          `json:"error,omitempty"`
		}
		var js []jsonOutcome
		for _, o := range outs {
			jo := jsonOutcome{Entry: o.Entry, Result: o.Result}
			if o.Err != nil {
				jo.Error = o.Err.Error()
				failed++
			}
			js = append(js, jo)
		}
		if err := writeJSON(a.stdout, js); err != nil {
			return err
		}
	} else {
		for i, o := range outs {
			if i > 0 {
				fmt.Fprintln(a.stdout)
			}
			if o.Result != nil {
				o.Result.Render(a.stdout)
			}
			if o.Err != nil {
				failed++
				fmt.Fprintf(a.stdout, "== %s: error: %v\n", o.Entry, o.Err)
			}
		}
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d traces failed", failed, len(outs))}
	}
	return nil
}

// splitNames splits "exec,open"; a bpftrace script (it has braces, and
// commas of its own) is one name.
func splitNames(names string) []string {
	if strings.Contains(names, "{") {
		return []string{names}
	}
	var out []string
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// jobFor finds what NAME runs: an entry by name, or whatever the resolver
// maps it to (a classic tool name such as execsnoop, a tracepoint, a
// syscall, a kernel function, a bpftrace script). The flags' filters apply
// to the entry chosen.
func (a *app) jobFor(name string, p catalog.Params) (runner.Job, error) {
	if e, ok := registry.Lookup(name); ok {
		return runner.Job{Entry: e, Params: p}, p.Validate(e.Info())
	}
	res := runner.NewResolver().Resolve(resolver.Request{Target: name, Duration: resolver.Duration{D: p.Duration}})
	job, err := runner.JobFor(res)
	if err != nil {
		return job, fmt.Errorf("%q: %v (entries: %s; see 'nannyagent trace list')", catalog.Truncate(name, 80), err, strings.Join(registry.Names(), ", "))
	}
	fmt.Fprintf(a.stderr, "%s: %s\n", catalog.Truncate(name, 80), res.How)
	for _, n := range res.Notes {
		fmt.Fprintf(a.stderr, "  note: %s\n", n)
	}
	if p.Target == "" {
		p.Target = job.Params.Target
	}
	if p.Frequency == 0 {
		p.Frequency = job.Params.Frequency
	}
	job.Params = p
	return job, p.Validate(job.Entry.Info())
}

func writeJSON(w interface{ Write([]byte) (int, error) }, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
