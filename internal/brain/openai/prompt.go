package openai

import (
	_ "embed"
	"fmt"
	"strings"
	"text/template"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/registry"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
)

//go:embed prompt.tmpl
var promptText string

var promptTmpl = template.Must(template.New("system").Parse(promptText))

// promptData fills prompt.tmpl.
type promptData struct {
	MaxCommands, MaxTraces       int
	DefaultDuration, MaxDuration string
	CommandTimeout, OutputCap    string
	Programs                     string
	Entries                      []promptEntry
	Unsupported                  []promptEntry
	Unchecked, NoTraces          bool
	MaxRounds, RoundsDone        int
	TimeLeft, RoundBudget        string
	ContextKB                    int
}

type promptEntry struct {
	Name, Answers, Reports string
	Aliases, Tracepoints   string
	Syscalls               string
	Target, Filters        string
	Reason                 string
}

// SystemPrompt is the system message for inv at time now: who the agent
// is, the reply protocol, the command policy, the trace catalog entries
// that work on this kernel (inv.Facts.Catalog; every entry when the facts
// do not say) with their filters, and the investigation's limits with the
// time left. The limits come last so that the unchanging part is a
// stable prefix (servers cache it).
func SystemPrompt(inv *brain.Investigation, now time.Time) string {
	d := promptData{
		MaxCommands:     protocol.MaxCommands,
		MaxTraces:       protocol.MaxTraces,
		DefaultDuration: seconds(catalog.DefaultDuration),
		MaxDuration:     seconds(catalog.MaxDuration),
		CommandTimeout:  seconds(safeexec.DefaultTimeout),
		OutputCap:       fmt.Sprintf("%d KiB", safeexec.DefaultOutputCap>>10),
		Programs:        strings.Join(safeexec.Programs(), ", "),
		MaxRounds:       inv.Limits.MaxRounds,
		RoundsDone:      len(inv.Rounds),
		RoundBudget:     "the round budget",
		ContextKB:       inv.Limits.ContextBytes >> 10,
	}
	if inv.Limits.RoundBudget > 0 {
		d.RoundBudget = seconds(inv.Limits.RoundBudget)
	}
	if d.ContextKB <= 0 {
		d.ContextKB = brain.DefaultContextBytes >> 10
	}
	if !inv.Limits.Deadline.IsZero() {
		left := inv.Limits.Deadline.Sub(now)
		if left < 0 {
			left = 0
		}
		d.TimeLeft = seconds(left.Round(time.Second))
	}
	d.Entries, d.Unsupported, d.Unchecked = catalogEntries(inv)
	d.NoTraces = len(d.Entries) == 0
	var b strings.Builder
	if err := promptTmpl.Execute(&b, d); err != nil {
		// The template is fixed and its data is plain strings: a failure
		// is a defect the tests catch.
		panic(err)
	}
	return b.String()
}

// catalogEntries splits the registry into the entries the facts say work
// here and those that do not; without facts every entry is listed.
func catalogEntries(inv *brain.Investigation) (ok, not []promptEntry, unchecked bool) {
	var support map[string]string // entry -> reason ("" when supported)
	if inv.Facts != nil && len(inv.Facts.Catalog) > 0 {
		support = map[string]string{}
		for _, c := range inv.Facts.Catalog {
			if c.Supported {
				support[c.Name] = ""
			} else {
				reason := c.Reason
				if reason == "" {
					reason = "not supported"
				}
				support[c.Name] = reason
			}
		}
	}
	for _, info := range registry.Infos() {
		e := promptEntry{Name: info.Name}
		if support != nil {
			reason, listed := support[info.Name]
			if !listed {
				continue
			}
			if reason != "" {
				e.Reason = reason
				not = append(not, e)
				continue
			}
		}
		e.Answers = strings.TrimSuffix(info.Answers, ".")
		e.Reports = strings.TrimSuffix(info.Reports, ".")
		e.Aliases = strings.Join(otherNames(info), ", ")
		tps, calls := splitTracepoints(info.Tracepoints)
		e.Tracepoints = strings.Join(tps, ", ")
		e.Syscalls = strings.Join(calls, ", ")
		if info.NeedsTarget {
			e.Target = "required: " + targetHint(info.Name)
		}
		e.Filters = "none"
		if len(info.Filters) > 0 {
			fs := make([]string, len(info.Filters))
			for i, f := range info.Filters {
				fs[i] = string(f)
			}
			e.Filters = strings.Join(fs, ", ")
		}
		ok = append(ok, e)
	}
	return ok, not, support == nil
}

// splitTracepoints shortens the syscalls:sys_enter_x / sys_exit_x pairs
// an entry lists to the system call's name: the model asks for "openat",
// and the list stays short.
func splitTracepoints(all []string) (tps, calls []string) {
	for _, tp := range all {
		if c, ok := strings.CutPrefix(tp, "syscalls:sys_enter_"); ok {
			calls = append(calls, c)
			continue
		}
		if strings.HasPrefix(tp, "syscalls:sys_exit_") {
			continue
		}
		tps = append(tps, tp)
	}
	return tps, calls
}

// otherNames are an entry's aliases without its own name.
func otherNames(info catalog.Info) []string {
	var out []string
	for _, a := range info.Aliases {
		if !strings.EqualFold(a, info.Name) {
			out = append(out, a)
		}
	}
	return out
}

func targetHint(entry string) string {
	switch entry {
	case "tracepoint":
		return `the tracepoint as "category:name", e.g. {"type":"tracepoint","target":"sched:sched_switch"}`
	case "kfunc":
		return `the kernel function, e.g. {"type":"kprobe","target":"vfs_fsync"}`
	}
	return "what to trace"
}

// seconds shows a duration in whole minutes and seconds ("10 s",
// "2 min", "4 min 31 s").
func seconds(d time.Duration) string {
	if d > 0 && d < time.Second {
		return d.String()
	}
	d = d.Round(time.Second)
	m, s := int(d/time.Minute), int(d%time.Minute/time.Second)
	switch {
	case m == 0:
		return fmt.Sprintf("%d s", s)
	case s == 0:
		return fmt.Sprintf("%d min", m)
	}
	return fmt.Sprintf("%d min %d s", m, s)
}
