package cli

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/spf13/cobra"
)

// checkReport is what `check --json` prints.
type checkReport struct {
	Kernel   string                             `json:"kernel_release"`
	Features map[catalog.Feature]catalog.Status `json:"features"`
	Bpftrace catalog.Status                     `json:"bpftrace"`
	Entries  []entryStatus                      `json:"entries"`
	Working  int                                `json:"entries_working"`
	// Sandbox is what each layer of the command sandbox does here.
	Sandbox map[string]string `json:"command_sandbox"`
	// SandboxWarning says what the command sandbox lacks here, if anything.
	SandboxWarning string `json:"command_sandbox_warning,omitempty"`
}

func (a *app) checkCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Report what works on this kernel: BTF, ring buffer, tracepoints, kprobes, ... and each catalog entry",
		Long: `check probes the kernel the way the catalog uses it (it loads and attaches
empty programs) and reports each feature and each catalog entry as
working or not, with the reason. It exits 0 when at least one entry works,
1 otherwise (for example when not run as root).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k := catalog.NewKernel(a.log.Named("catalog"))
			feats := k.Features()
			rep := checkReport{Kernel: feats.Release, Features: feats.Status, Bpftrace: bpftraceStatus(), Entries: entryStatuses(k),
				Sandbox: safeexec.SandboxSupport(), SandboxWarning: safeexec.SandboxWarning()}
			for _, e := range rep.Entries {
				if e.Works {
					rep.Working++
				}
			}
			if asJSON {
				if err := writeJSON(a.stdout, rep); err != nil {
					return err
				}
			} else {
				renderCheck(a, rep)
			}
			if rep.Working == 0 {
				return &exitError{code: 1, err: fmt.Errorf("no catalog entry works here (%s)", firstReason(rep))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func firstReason(rep checkReport) string {
	if st := rep.Features[catalog.FeatureRoot]; st.State != catalog.Yes {
		return st.Detail
	}
	if len(rep.Entries) > 0 {
		return rep.Entries[0].Reason
	}
	return "no entries"
}

func bpftraceStatus() catalog.Status {
	path, err := exec.LookPath("bpftrace")
	if err != nil {
		return catalog.Status{State: catalog.No, Detail: "not installed (optional fallback; apt-get install bpftrace)"}
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return catalog.Status{State: catalog.Inconclusive, Detail: path + ": " + err.Error()}
	}
	return catalog.Status{State: catalog.Yes, Detail: strings.TrimSpace(string(out))}
}

func renderCheck(a *app, rep checkReport) {
	t := catalog.Table{Title: "kernel " + rep.Kernel, Columns: []string{"feature", "state", "detail"}}
	for _, f := range catalog.AllFeatures {
		st := rep.Features[f]
		t.Rows = append(t.Rows, []string{string(f), string(st.State), st.Detail})
	}
	t.Rows = append(t.Rows, []string{"bpftrace", string(rep.Bpftrace.State), rep.Bpftrace.Detail})
	t.Render(a.stdout)
	fmt.Fprintln(a.stdout)
	e := catalog.Table{Title: fmt.Sprintf("catalog: %d of %d entries work here", rep.Working, len(rep.Entries)),
		Columns: []string{"entry", "here", "why not"}}
	for _, st := range rep.Entries {
		here := "works"
		if !st.Works {
			here = "no"
		}
		e.Rows = append(e.Rows, []string{st.Name, here, st.Reason})
	}
	e.Render(a.stdout)
	fmt.Fprintln(a.stdout)
	sb := catalog.Table{Title: "command sandbox", Columns: []string{"layer", "here"}}
	for _, layer := range sortedKeys(rep.Sandbox) {
		sb.Rows = append(sb.Rows, []string{layer, rep.Sandbox[layer]})
	}
	sb.Render(a.stdout)
	if rep.SandboxWarning != "" {
		fmt.Fprintln(a.stdout, "warning: command sandbox degraded: "+rep.SandboxWarning)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
