// Package bpftrace is the fallback runner: it runs a bpftrace script for a
// probe no catalog entry can express, and returns its output as a
// catalog.Result so callers treat it like any entry.
//
// It never passes --unsafe, and it refuses scripts that would need it or
// that would read host files (their contents would leave the host in a
// result), rather than relying on bpftrace's own checks.
package bpftrace

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// MaxScript bounds a script's size: model-written scripts are a few lines,
// a larger one is a mistake or an attack.
const MaxScript = 16 << 10

// forbiddenCalls are the builtins a model-written script must not call:
// system, signal and override change the host (bpftrace wants --unsafe for
// them), cat and the quoted #include read host files into the output.
var forbiddenCalls = []struct {
	re  *regexp.Regexp
	why string
}{
	{regexp.MustCompile(`\bsystem\s*\(`), "calls system(), which runs commands on the host (bpftrace needs --unsafe for it, which the agent never passes)"},
	{regexp.MustCompile(`\bsignal\s*\(`), "calls signal(), which sends signals to traced processes (an --unsafe builtin)"},
	{regexp.MustCompile(`\boverride\s*\(`), "calls override(), which changes kernel return values (an --unsafe builtin)"},
	{regexp.MustCompile(`\bcat\s*\(`), "calls cat(), which copies host files into the output that leaves the host"},
	{regexp.MustCompile(`#\s*include\s*"`), "includes a file by path, which reads host files"},
	{regexp.MustCompile(`\bunsafe\b`), "mentions unsafe mode, which the agent never enables"},
}

// ErrRefused marks a script the agent will not run; errors.Is works on
// what CheckScript returns.
var ErrRefused = errors.New("bpftrace script refused")

// CheckScript says why the agent will not run script, or nil when it may.
func CheckScript(script string) error {
	s := strings.TrimSpace(script)
	switch {
	case s == "":
		return fmt.Errorf("%w: the script is empty", ErrRefused)
	case len(script) > MaxScript:
		return fmt.Errorf("%w: the script is %d bytes, more than the %d allowed", ErrRefused, len(script), MaxScript)
	case !strings.Contains(s, "{"):
		return fmt.Errorf("%w: %q is not a bpftrace program (no { action })", ErrRefused, shorten(s))
	}
	for _, r := range script {
		if unicode.IsControl(r) && r != '\n' && r != '\t' && r != '\r' {
			return fmt.Errorf("%w: the script contains the control character %U", ErrRefused, r)
		}
	}
	for _, f := range forbiddenCalls {
		if loc := f.re.FindStringIndex(script); loc != nil {
			return fmt.Errorf("%w: it %s (at %q)", ErrRefused, f.why, shorten(script[loc[0]:]))
		}
	}
	return nil
}

// Probes lists the probe specifications a script attaches to, in order
// (BEGIN and END included), as bpftrace reads them before each predicate
// or action block. It is a light parse for reports and resolving, not a
// validator: bpftrace has the last word.
func Probes(script string) []string {
	var out []string
	depth := 0
	var head strings.Builder
	inStr := false
	for i := 0; i < len(script); i++ {
		c := script[i]
		if inStr {
			if c == '\\' {
				i++
			} else if c == '"' {
				inStr = false
			}
			continue
		}
		switch {
		case c == '"':
			inStr = true
		case c == '/' && i+1 < len(script) && script[i+1] == '/':
			for i < len(script) && script[i] != '\n' {
				i++
			}
		case c == '{':
			if depth == 0 {
				out = append(out, splitProbes(head.String())...)
				head.Reset()
			}
			depth++
		case c == '}':
			if depth > 0 {
				depth--
			}
		case depth == 0:
			head.WriteByte(c)
		}
	}
	return out
}

// splitProbes takes the text before an action block: probes separated by
// commas, then an optional /predicate/.
func splitProbes(head string) []string {
	if i := predicateStart(head); i >= 0 {
		head = head[:i]
	}
	var out []string
	for _, p := range strings.Split(head, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// predicateStart finds the '/' opening a predicate: one preceded by blank
// space, since probe specs contain '/' only inside uprobe paths right
// after a ':'.
func predicateStart(head string) int {
	for i := 0; i < len(head); i++ {
		if head[i] == '/' && (i == 0 || head[i-1] == ' ' || head[i-1] == '\t' || head[i-1] == '\n') {
			return i
		}
	}
	return -1
}

func shorten(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
