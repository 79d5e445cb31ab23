package registry

import (
	"fmt"
	"strings"

	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Markers around the generated part of docs/EBPF_MONITORING.md.
const (
	DocsBegin = "<!-- BEGIN CATALOG REFERENCE: generated from the entries' Info by `make docs`; do not edit -->"
	DocsEnd   = "<!-- END CATALOG REFERENCE -->"
)

// Reference renders the catalog reference (Markdown) from the entries'
// own metadata, so the docs cannot drift from the code.
func Reference() string {
	var b strings.Builder
	b.WriteString(DocsBegin + "\n\n")
	b.WriteString("| entry | answers | attach (preferred first) | streams events | filters |\n|---|---|---|---|---|\n")
	for _, i := range Infos() {
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s | %s | %s | %s |\n", i.Name, i.Name, i.Answers,
			strings.Join(i.Attach, " → "), yesNo(i.Streams), filters(i.Filters))
	}
	for _, i := range Infos() {
		fmt.Fprintf(&b, "\n### %s\n\n%s.\n\n", i.Name, capitalize(i.Answers))
		fmt.Fprintf(&b, "- Reports: %s.\n", i.Reports)
		fmt.Fprintf(&b, "- Requires: %s.\n", requirements(i.Requires))
		fmt.Fprintf(&b, "- Attach: %s.\n", strings.Join(i.Attach, ", then "))
		fmt.Fprintf(&b, "- Filters: %s.\n", filters(i.Filters))
		if i.NeedsTarget {
			b.WriteString("- Needs a target (`--target`).\n")
		}
		if len(i.Aliases) > 0 {
			fmt.Fprintf(&b, "- Resolves from: %s.\n", code(i.Aliases))
		}
		if len(i.Tracepoints) > 0 {
			fmt.Fprintf(&b, "- Covers tracepoints: %s.\n", code(i.Tracepoints))
		}
		if len(i.Functions) > 0 {
			fmt.Fprintf(&b, "- Covers kernel functions: %s.\n", code(i.Functions))
		}
	}
	b.WriteString("\n" + DocsEnd + "\n")
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no (in-kernel aggregation)"
}

func filters(fs []catalog.Filter) string {
	if len(fs) == 0 {
		return "none"
	}
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = "`" + string(f) + "`"
	}
	return strings.Join(s, ", ")
}

func requirements(rs []catalog.Requirement) string {
	if len(rs) == 0 {
		return "nothing beyond BPF"
	}
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, "; ")
}

func code(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = "`" + s + "`"
	}
	return strings.Join(out, ", ")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
