package main

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PkgResult is one plan line's outcome on one kernel.
type PkgResult struct {
	Label            string
	Pass, Fail, Skip int
	RC               int // test binary exit status; -1 when it never finished
	Time             time.Duration
	Skips            []string // "TestName: reason"
	Failures         []string // test names
	Output           string
}

// OK reports whether the package passed (skips allowed).
func (p PkgResult) OK() bool { return p.RC == 0 && p.Fail == 0 }

var (
	beginRe  = regexp.MustCompile(`^=== VMTEST-BEGIN (\S+)`)
	endRe    = regexp.MustCompile(`^=== VMTEST-END (\S+) rc=(-?\d+) start=([\d.]+) end=([\d.]+)`)
	resultRe = regexp.MustCompile(`^( *)--- (PASS|FAIL|SKIP): (\S+)`)
	// The line under "--- SKIP" that t.Skip printed: "    file_test.go:12: why".
	reasonRe = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)
)

// parseConsole splits the guest console into the plan lines' results.
// Top-level tests are counted; subtests only contribute skip reasons and
// failure names. A section without an END marker is a package that never
// finished (the guest died or hung inside it).
func parseConsole(console string) []PkgResult {
	var out []PkgResult
	var cur *PkgResult
	var buf strings.Builder
	lines := strings.Split(console, "\n")
	finish := func() {
		if cur != nil {
			cur.Output = buf.String()
			out = append(out, *cur)
		}
		cur = nil
		buf.Reset()
	}
	for i, raw := range lines {
		line := strings.TrimRight(raw, "\r")
		if m := beginRe.FindStringSubmatch(line); m != nil {
			finish()
			cur = &PkgResult{Label: m[1], RC: -1}
			continue
		}
		if cur == nil {
			continue
		}
		if m := endRe.FindStringSubmatch(line); m != nil && m[1] == cur.Label {
			cur.RC, _ = strconv.Atoi(m[2])
			t0, _ := strconv.ParseFloat(m[3], 64)
			t1, _ := strconv.ParseFloat(m[4], 64)
			cur.Time = time.Duration((t1 - t0) * float64(time.Second))
			finish()
			continue
		}
		buf.WriteString(line)
		buf.WriteByte('\n')
		m := resultRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		top := m[1] == ""
		switch m[2] {
		case "PASS":
			if top {
				cur.Pass++
			}
		case "FAIL":
			if top {
				cur.Fail++
			}
			cur.Failures = append(cur.Failures, m[3])
		case "SKIP":
			if top {
				cur.Skip++
			}
			cur.Skips = append(cur.Skips, m[3]+": "+skipReason(lines[:i], m[3]))
		}
	}
	finish()
	return out
}

// skipReason finds what t.Skip printed for test: -v output streams the
// log line ("    x_test.go:12: why") before "--- SKIP", after the test's
// "=== RUN" (or "=== CONT" when parallel) line.
func skipReason(before []string, test string) string {
	for j := len(before) - 1; j >= 0; j-- {
		l := strings.TrimRight(before[j], "\r")
		if r := reasonRe.FindStringSubmatch(l); r != nil {
			// Continuation lines of a multi-line message are indented
			// deeper and have no file:line; the first line is enough.
			return r[1]
		}
		if strings.HasPrefix(strings.TrimSpace(l), "=== RUN   "+test) || strings.HasPrefix(strings.TrimSpace(l), "=== CONT  "+test) {
			break
		}
	}
	return "(no reason printed)"
}

// KernelResult is one column of the matrix.
type KernelResult struct {
	Kernel  Kernel
	Release string
	Pkgs    map[string]PkgResult
	Wall    time.Duration
	Err     error  // the run as a whole failed (no boot, hang, no status)
	Exit    int    // the guest's (or host run's) overall status
	Via     string // how the status came back
	Kprobe  string // kprobe state from nannyagent check
}

// Failed reports whether the kernel's column is a failure of the run.
func (k KernelResult) Failed() bool {
	if k.Err != nil || k.Exit != 0 {
		return true
	}
	for _, p := range k.Pkgs {
		if !p.OK() {
			return true
		}
	}
	return false
}

// writeSummary prints the kernel × package table, then every failure
// with its output and every skip with its reason.
func writeSummary(w io.Writer, labels []string, res []KernelResult, total time.Duration) {
	fmt.Fprintf(w, "\n== kernel matrix: pass/fail/skip (top-level tests) and time per package\n")
	const cw = 17
	fmt.Fprintf(w, "%-20s", "package")
	for _, r := range res {
		fmt.Fprintf(w, " %-*s", cw, r.Kernel.Name)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-20s", "  release")
	for _, r := range res {
		fmt.Fprintf(w, " %-*s", cw, clip(r.Release, cw))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-20s", "  kprobe (check)")
	for _, r := range res {
		fmt.Fprintf(w, " %-*s", cw, r.Kprobe)
	}
	fmt.Fprintln(w)
	for _, l := range labels {
		fmt.Fprintf(w, "%-20s", l)
		for _, r := range res {
			p, ok := r.Pkgs[l]
			cell := "-"
			switch {
			case ok && p.RC < 0:
				cell = "DID NOT FINISH"
			case ok:
				cell = fmt.Sprintf("%d/%d/%d %s", p.Pass, p.Fail, p.Skip, secs(p.Time))
				if !p.OK() {
					cell += " !"
				}
			case r.Err != nil:
				cell = "not run"
			}
			fmt.Fprintf(w, " %-*s", cw, cell)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%-20s", "TOTAL")
	for _, r := range res {
		var p, f, s int
		for _, x := range r.Pkgs {
			p, f, s = p+x.Pass, f+x.Fail, s+x.Skip
		}
		fmt.Fprintf(w, " %-*s", cw, fmt.Sprintf("%d/%d/%d", p, f, s))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-20s", "wall time")
	for _, r := range res {
		fmt.Fprintf(w, " %-*s", cw, secs(r.Wall))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-20s", "verdict")
	for _, r := range res {
		v := "PASS"
		if r.Failed() {
			v = "FAIL"
		}
		if r.Via == "console marker" {
			v += " (marker)"
		}
		fmt.Fprintf(w, " %-*s", cw, v)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "whole matrix: %s\n", secs(total))

	// Skips, grouped by reason so a reason shared by kernels shows once.
	type key struct{ label, skip string }
	where := map[key][]string{}
	for _, r := range res {
		for _, l := range labels {
			for _, s := range r.Pkgs[l].Skips {
				k := key{l, s}
				where[k] = append(where[k], r.Kernel.Name)
			}
		}
	}
	if len(where) > 0 {
		fmt.Fprintf(w, "\n== skips (package: test: declared reason [kernels])\n")
		keys := make([]key, 0, len(where))
		for k := range where {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].label != keys[j].label {
				return keys[i].label < keys[j].label
			}
			return keys[i].skip < keys[j].skip
		})
		for _, k := range keys {
			fmt.Fprintf(w, "%s: %s [%s]\n", k.label, k.skip, strings.Join(where[k], " "))
		}
	}

	for _, r := range res {
		if r.Err != nil {
			fmt.Fprintf(w, "\n== FAIL %s: %v\n", r.Kernel.Name, r.Err)
		} else if r.Exit != 0 && r.Failed() {
			fmt.Fprintf(w, "\n== FAIL %s: exit status %d\n", r.Kernel.Name, r.Exit)
		}
		for _, l := range labels {
			p, ok := r.Pkgs[l]
			if !ok || p.OK() {
				continue
			}
			fmt.Fprintf(w, "\n== FAIL %s on %s (rc=%d): %s\n%s", l, r.Kernel.Name, p.RC, strings.Join(p.Failures, ", "), failureExcerpt(p.Output, 60))
		}
	}
}

// failureExcerpt keeps the lines around failures (and a panic or timeout
// dump's head) so the summary stays readable; the full output is in the
// run directory.
func failureExcerpt(out string, max int) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	keep := make([]bool, len(lines))
	for i, l := range lines {
		if strings.Contains(l, "--- FAIL") || strings.Contains(l, "Error") || strings.HasPrefix(l, "panic:") ||
			strings.Contains(l, "_test.go:") && !strings.Contains(l, "--- ") {
			for j := i - 1; j <= i+3 && j < len(lines); j++ {
				if j >= 0 {
					keep[j] = true
				}
			}
		}
	}
	var b strings.Builder
	n := 0
	for i, l := range lines {
		if keep[i] && n < max {
			b.WriteString("    " + l + "\n")
			n++
		}
	}
	if n == 0 {
		return tail(out, 20) + "\n"
	}
	return b.String()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
