package catalog

import (
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// Size bounds of a result: results are what a model reads, so they stay
// compact whatever the workload.
const (
	MaxRows      = 20  // rows per table
	MaxSamples   = 10  // sample events
	MaxCellChars = 160 // characters per cell; longer ones end in TruncMarker
	TruncMarker  = "…[truncated]"
)

// Result is what every entry returns; its JSON field names are stable
// (docs/EBPF_MONITORING.md documents them).
type Result struct {
	Entry  string            `json:"entry"`
	Params map[string]string `json:"params,omitempty"`
	// Attach is the attach mode used (tracepoint, raw_tp, tp_btf,
	// kprobe...) and the event transport when the entry streams.
	Attach     string      `json:"attach,omitempty"`
	Start      time.Time   `json:"start"`
	End        time.Time   `json:"end"`
	Events     uint64      `json:"events"`
	Lost       uint64      `json:"lost"`
	Summary    string      `json:"summary"`
	Tables     []Table     `json:"tables,omitempty"`
	Histograms []Histogram `json:"histograms,omitempty"`
	// Samples holds up to MaxSamples individual events.
	Samples *Table   `json:"samples,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// Seconds is the traced time.
func (r *Result) Seconds() float64 { return r.End.Sub(r.Start).Seconds() }

// Table is a top-N table: rows sorted by the entry's ranking, cut to
// MaxRows; TotalRows says how many there were before the cut.
type Table struct {
	Title     string     `json:"title"`
	Columns   []string   `json:"columns"`
	Rows      [][]string `json:"rows"`
	TotalRows int        `json:"total_rows"`
}

// AddRow appends a row, truncating long cells.
func (t *Table) AddRow(cells ...string) {
	for i, c := range cells {
		cells[i] = Truncate(c, MaxCellChars)
	}
	t.Rows = append(t.Rows, cells)
	t.TotalRows++
}

// Limit cuts the table to n rows, keeping TotalRows.
func (t *Table) Limit(n int) {
	if len(t.Rows) > n {
		t.Rows = t.Rows[:n]
	}
}

// Truncate cuts s to at most n characters, marking the cut.
func Truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	keep := n - utf8.RuneCountInString(TruncMarker)
	if keep < 0 {
		keep = 0
	}
	return string(r[:keep]) + TruncMarker
}

// Compact enforces the size bounds on every table and the samples.
func (r *Result) Compact() {
	for i := range r.Tables {
		r.Tables[i].Limit(MaxRows)
	}
	if r.Samples != nil {
		r.Samples.Limit(MaxSamples)
	}
	if len(r.Histograms) > MaxRows {
		r.Notes = append(r.Notes, strconv.Itoa(len(r.Histograms)-MaxRows)+" more histograms not shown")
		r.Histograms = r.Histograms[:MaxRows]
	}
}

// Ranked is one row of a top-N aggregate before formatting.
type Ranked[K comparable] struct {
	Key   K
	Score uint64
}

// TopN returns the keys of m ordered by score, highest first (ties by key
// order of less), at most n of them, and how many keys there were.
func TopN[K comparable](m map[K]uint64, n int, less func(a, b K) bool) ([]Ranked[K], int) {
	out := make([]Ranked[K], 0, len(m))
	for k, v := range m {
		out = append(out, Ranked[K]{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Score != out[j].Score {
			return out[i].Score > out[j].Score
		}
		return less(out[i].Key, out[j].Key)
	})
	total := len(out)
	if len(out) > n {
		out = out[:n]
	}
	return out, total
}

// U formats an unsigned number for a table cell.
func U[T ~uint64 | ~uint32 | ~uint16 | ~uint8 | ~int | ~int32 | ~int64](v T) string {
	return strconv.FormatInt(int64(v), 10)
}

// CString returns the NUL-terminated string at the start of b.
func CString[T ~int8 | ~uint8](b []T) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	out := make([]byte, n)
	for i := 0; i < n; i++ {
		out[i] = byte(b[i])
	}
	return string(out)
}
