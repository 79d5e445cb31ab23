package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/diagnose"
	"github.com/nannyagent/nannyagent/internal/protocol"
)

// renderReport prints the answer for reading: root cause and confidence,
// evidence, the plan, the other findings, and how the investigation
// went. styled adds bold headings (a terminal only).
func renderReport(w io.Writer, rep *diagnose.Report, styled bool) {
	head := func(s string) string {
		if styled {
			return "\033[1m" + s + "\033[0m"
		}
		return s
	}
	res := rep.Resolution
	if res == nil {
		fmt.Fprintf(w, "%s\n  %s\n", head("No answer"), orDash(rep.Error))
		renderFindings(w, rep, head, "")
		fmt.Fprintln(w)
		fmt.Fprintln(w, summaryLine(rep))
		return
	}
	fmt.Fprintln(w)
	if res.Provisional {
		fmt.Fprintf(w, "%s\n", head("No conclusion ("+rep.EndedBy+"); the best answer so far:"))
	}
	title := "Root cause"
	if res.Confidence != "" {
		title += " (confidence: " + res.Confidence + ")"
	}
	fmt.Fprintln(w, head(title))
	fmt.Fprintln(w, indent(res.RootCause, "  "))
	if strings.TrimSpace(res.Evidence) != "" {
		fmt.Fprintln(w)
		fmt.Fprintln(w, head("Evidence"))
		fmt.Fprintln(w, indent(res.Evidence, "  "))
	}
	if strings.TrimSpace(res.ResolutionPlan) != "" {
		fmt.Fprintln(w)
		fmt.Fprintln(w, head("Resolution plan"))
		fmt.Fprintln(w, indent(res.ResolutionPlan, "  "))
	}
	renderFindings(w, rep, head, res.RootCause)
	fmt.Fprintln(w)
	fmt.Fprintln(w, summaryLine(rep))
}

// renderFindings lists the findings other than the one the resolution
// is about.
func renderFindings(w io.Writer, rep *diagnose.Report, head func(string) string, chosen string) {
	var others []protocol.Finding
	for _, f := range rep.Findings {
		if chosen != "" && (strings.TrimSpace(f.RootCause) == strings.TrimSpace(chosen) ||
			(strings.TrimSpace(f.Title) != "" && strings.Contains(chosen, strings.TrimSpace(f.Title)))) {
			// The resolution is about this one (engines often lead the
			// root cause with the finding's title).
			continue
		}
		others = append(others, f)
	}
	if len(others) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, head("Other findings"))
	for _, f := range others {
		sev := f.Severity
		if sev == "" {
			sev = "info"
		}
		fmt.Fprintf(w, "  - [%s] %s\n", sev, f.Title)
		if f.RootCause != "" && f.RootCause != f.Title {
			fmt.Fprintln(w, indent(f.RootCause, "      "))
		}
		for _, e := range f.Evidence {
			fmt.Fprintln(w, indent("evidence: "+e, "      "))
		}
		for _, x := range f.Fix {
			fmt.Fprintln(w, indent("fix: "+x, "      "))
		}
	}
}

func summaryLine(rep *diagnose.Report) string {
	cmds, traces := 0, 0
	for _, r := range rep.Rounds {
		cmds += len(r.Commands)
		traces += len(r.Traces)
	}
	return fmt.Sprintf("%s: %d rounds, %d commands, %d traces, %s, engine %s",
		orDash(rep.EndedBy), len(rep.Rounds), cmds, traces,
		(time.Duration(rep.DurationMS) * time.Millisecond).Round(100*time.Millisecond), rep.Engine)
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + strings.TrimRight(l, " \t\r")
	}
	return strings.Join(lines, "\n")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
