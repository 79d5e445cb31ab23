package catalog

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Render writes r for people: a header, the summary, aligned tables and
// histogram bars in the style of the classic BPF tools.
func (r *Result) Render(w io.Writer) {
	fmt.Fprintf(w, "== %s: %d events, %d lost, %.1fs", r.Entry, r.Events, r.Lost, r.Seconds())
	if r.Attach != "" {
		fmt.Fprintf(w, " (%s)", r.Attach)
	}
	fmt.Fprintln(w)
	if r.Summary != "" {
		fmt.Fprintln(w, r.Summary)
	}
	if r.Lost > 0 {
		fmt.Fprintf(w, "WARNING: %d events were lost (ring buffer full); counts are lower bounds\n", r.Lost)
	}
	for _, t := range r.Tables {
		fmt.Fprintln(w)
		t.Render(w)
	}
	for _, h := range r.Histograms {
		fmt.Fprintln(w)
		h.Render(w)
	}
	if r.Samples != nil && len(r.Samples.Rows) > 0 {
		fmt.Fprintln(w)
		r.Samples.Render(w)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// Render writes the table with aligned columns.
func (t Table) Render(w io.Writer) {
	title := t.Title
	if t.TotalRows > len(t.Rows) {
		title += fmt.Sprintf(" (top %d of %d)", len(t.Rows), t.TotalRows)
	}
	fmt.Fprintln(w, title)
	if len(t.Rows) == 0 {
		fmt.Fprintln(w, "  (none)")
		return
	}
	widths := make([]int, len(t.Columns))
	for i, c := range t.Columns {
		widths[i] = utf8.RuneCountInString(c)
	}
	for _, row := range t.Rows {
		for i, c := range row {
			if i < len(widths) && utf8.RuneCountInString(c) > widths[i] {
				widths[i] = utf8.RuneCountInString(c)
			}
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("  ")
		for i, c := range cells {
			if i >= len(widths) {
				break
			}
			b.WriteString(c)
			if i < len(cells)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(upper(t.Columns))
	for _, row := range t.Rows {
		line(row)
	}
}

func upper(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(s)
	}
	return out
}

const barWidth = 40

// Render writes the histogram as `low -> high : count |****|` lines.
func (h Histogram) Render(w io.Writer) {
	fmt.Fprintf(w, "%s (%s): count %d, p50 %d, p90 %d, p99 %d\n", h.Title, h.Unit, h.Count, h.P50, h.P90, h.P99)
	var max uint64
	for _, b := range h.Buckets {
		if b.Count > max {
			max = b.Count
		}
	}
	fmt.Fprintf(w, "%20s : %-8s %s\n", h.Unit, "count", "distribution")
	for _, b := range h.Buckets {
		n := 0
		if max > 0 {
			n = int(b.Count * barWidth / max)
		}
		fmt.Fprintf(w, "%9d -> %-9d : %-8d |%-*s|\n", b.Low, b.High, b.Count, barWidth, strings.Repeat("*", n))
	}
}
