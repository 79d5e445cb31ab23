package offline

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/nannyagent/nannyagent/internal/protocol"
)

type severity int

const (
	sevInfo severity = iota + 1
	sevWarning
	sevCritical
)

func (s severity) String() string {
	switch s {
	case sevCritical:
		return "critical"
	case sevWarning:
		return "warning"
	}
	return "info"
}

// finding is one problem found, before ranking. Kind and subject
// identify it, so several checks can add evidence to the same one.
type finding struct {
	kind, subject string
	sev           severity
	title         string
	rootCause     string
	fix           []string
	evidence      []string
	// conf is the rule's own confidence (0 low, 1 medium, 2 high);
	// independent support raises it.
	conf int
	// sources are the independent pieces of evidence ("statfs", "kernel
	// log", "trace biolatency", "the issue text").
	sources map[string]bool
	vars    map[string]string
	// boosted is set when a playbook matching the issue is about this
	// kind; playbook names why.
	boosted  bool
	playbook string
	// boostHits is how much of the issue the boosting playbook matched:
	// of two findings the issue is about, the one a more specific
	// playbook is about ("writes are slow" over "slow") answers it.
	boostHits int
	seq       int
	// perSource counts evidence lines by source; more counts those left
	// out past maxEvidencePerSource.
	perSource map[string]int
	more      map[string]int
	// events counts the failures behind a finding, where a rule needs
	// the number (denials).
	events int
}

// issueSource is the evidence source of the issue text itself naming a
// finding's subject (a mount, a path, a program).
const issueSource = "the issue text"

// maxEvidencePerSource bounds the evidence one source adds to a finding:
// a kernel log with a hundred identical errors proves no more than five.
const maxEvidencePerSource = 6

func (f *finding) add(source, format string, a ...any) {
	line := fmt.Sprintf(format, a...)
	f.sources[source] = true
	for _, e := range f.evidence {
		if e == line {
			return
		}
	}
	if f.perSource == nil {
		f.perSource, f.more = map[string]int{}, map[string]int{}
	}
	if f.perSource[source] >= maxEvidencePerSource {
		f.more[source]++
		return
	}
	f.perSource[source]++
	f.evidence = append(f.evidence, line)
}

// raise keeps the worse severity.
func (f *finding) raise(s severity) {
	if s > f.sev {
		f.sev = s
	}
}

func (f *finding) support() int { return len(f.sources) }

// lines is how many evidence lines source gave, those left out included.
func (f *finding) lines(source string) int { return f.perSource[source] + f.more[source] }

func (f *finding) confidence() string {
	c := f.conf
	if f.support() >= 3 {
		c += 2
	} else if f.support() >= 2 {
		c++
	}
	switch {
	case c >= 2:
		return "High"
	case c == 1:
		return "Medium"
	}
	return "Low"
}

func (f *finding) set(k, v string) {
	if v != "" {
		f.vars[k] = v
	}
}

// findings collects findings by kind and subject.
type findings struct {
	list []*finding
}

// get returns the finding of kind about subject, creating it with
// severity sev when there is none (an existing one keeps the worse).
func (fs *findings) get(kind, subject string, sev severity) *finding {
	for _, f := range fs.list {
		if f.kind == kind && f.subject == subject {
			f.raise(sev)
			return f
		}
	}
	f := &finding{kind: kind, subject: subject, sev: sev, sources: map[string]bool{}, vars: map[string]string{}, seq: len(fs.list)}
	fs.list = append(fs.list, f)
	return f
}

func (fs *findings) find(kind, subject string) *finding {
	for _, f := range fs.list {
		if f.kind == kind && f.subject == subject {
			return f
		}
	}
	return nil
}

func (fs *findings) ofKind(kind string) []*finding {
	var out []*finding
	for _, f := range fs.list {
		if f.kind == kind {
			out = append(out, f)
		}
	}
	return out
}

func (fs *findings) remove(x *finding) {
	for i, f := range fs.list {
		if f == x {
			fs.list = append(fs.list[:i], fs.list[i+1:]...)
			return
		}
	}
}

// absorb folds from into into: from's evidence supports into, and from
// is no longer a finding of its own (one cause, one finding).
func (fs *findings) absorb(into, from *finding) {
	for _, e := range from.evidence {
		dup := false
		for _, x := range into.evidence {
			dup = dup || x == e
		}
		if !dup {
			into.evidence = append(into.evidence, e)
		}
	}
	for s := range from.sources {
		into.sources[s] = true
	}
	into.raise(from.sev)
	fs.remove(from)
}

// ranked orders findings: first those about what the issue asks (the
// issue names their subject, then a matching playbook is about them)
// that are at least warnings — the operator's question gets its answer
// before an unrelated problem, which is still listed — then severity,
// then how specifically the issue matched the playbook about them, then
// independent support, then whether a playbook matching the issue is
// about them, then the USE order of kinds (errors first), then as found.
func (fs *findings) ranked() []*finding {
	out := append([]*finding{}, fs.list...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if ra, rb := a.answersIssue(), b.answersIssue(); ra != rb {
			return ra > rb
		}
		if a.sev != b.sev {
			return a.sev > b.sev
		}
		if a.boostHits != b.boostHits {
			return a.boostHits > b.boostHits
		}
		if a.support() != b.support() {
			return a.support() > b.support()
		}
		if a.boosted != b.boosted {
			return a.boosted
		}
		if ka, kb := kindRank(a.kind), kindRank(b.kind); ka != kb {
			return ka < kb
		}
		return a.seq < b.seq
	})
	return out
}

// answersIssue says how directly f answers the issue, for findings
// serious enough to be its answer: 2 when the issue names its subject
// (the mount, program or unit), 1 when a playbook matching the issue is
// about its kind, 0 otherwise.
func (f *finding) answersIssue() int {
	switch {
	case f.sev < sevWarning:
		return 0
	case f.sources[issueSource]:
		return 2
	case f.boosted:
		return 1
	}
	return 0
}

func (f *finding) protocol() protocol.Finding {
	ev := append([]string{}, f.evidence...)
	srcs := make([]string, 0, len(f.more))
	for s := range f.more {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	for _, s := range srcs {
		if f.more[s] > 0 {
			ev = append(ev, fmt.Sprintf("(%d more from %s)", f.more[s], s))
		}
	}
	if f.boosted && f.playbook != "" {
		ev = append(ev, "matches the issue (playbook "+f.playbook+")")
	}
	return protocol.Finding{
		Title:      f.title,
		Severity:   f.sev.String(),
		Evidence:   ev,
		RootCause:  f.rootCause,
		Fix:        append([]string{}, f.fix...),
		Confidence: f.confidence(),
	}
}

// Formatting helpers for evidence: numbers as people read them.

// pct shows one decimal where rounding would mislead: under 10%, and
// between 99% and 100% (99.6% full is not full).
func pct(f float64) string {
	if f == math.Trunc(f) || (f >= 10 && f <= 99) || f >= 100 {
		return fmt.Sprintf("%.0f%%", f)
	}
	return fmt.Sprintf("%.1f%%", f)
}

func bytesStr(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func msFromUS(us float64) string {
	if us >= 1000 {
		return fmt.Sprintf("%.0f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func joinMax(items []string, n int) string {
	if len(items) > n {
		return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
	}
	return strings.Join(items, ", ")
}
