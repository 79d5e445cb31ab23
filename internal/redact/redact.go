// Package redact removes secrets from text before it leaves the host:
// command output, process arguments, environment dumps, the kernel log and
// trace results all pass through String before an engine sees them.
//
// A secret is replaced by Marker and what names it is kept
// (password=[REDACTED], Authorization: Bearer [REDACTED],
// postgres://app:[REDACTED]@db), so a model still learns that a password
// was set without learning the password. Recognisers look for context a
// secret cannot hide from (a key name, a header, a flag, a vendor prefix, a
// PEM block) rather than for high-entropy strings, so hashes, UUIDs, inode
// numbers and paths in diagnostic output stay as they are.
//
// One pass over the text finds where a recogniser can start, with a table
// of the first two bytes of every trigger (vendor prefixes, key words,
// program names, the PEM header). A recogniser reads forward from there
// and says where it may start again, so the work grows linearly with the
// input, and text without a trigger costs that pass alone.
package redact

import (
	"slices"
	"strings"
)

// Marker replaces each secret.
const Marker = "[REDACTED]"

// Result is the redacted text and how many secrets were replaced.
type Result struct {
	Text       string
	Redactions int
}

// maxPasses bounds the passes Redact makes. A pass sees the text whole, so
// one pass normally finds everything; a later pass only matters when a
// replacement removed context that had hidden a secret from a recogniser
// (a path separator, an identifier's neighbours), and then it finds that
// secret too.
const maxPasses = 4

// String returns s with every recognised secret replaced by Marker.
func String(s string) string { return Redact(s).Text }

// Redact is String that also counts the replacements, for a note saying
// that an output was redacted.
func Redact(s string) Result {
	total := 0
	for range maxPasses {
		out, n := once(s)
		if n == 0 {
			break
		}
		s, total = out, total+n
	}
	return Result{Text: s, Redactions: total}
}

type span struct{ start, end int }

// redactor holds one pass over a text: the text, its ASCII-lowered copy
// (same byte offsets, for case-insensitive triggers) and the byte ranges
// to replace.
type redactor struct {
	s, lower string
	spans    []span
	// next[k] is where trigger k may match again: a recogniser skips
	// what it has read, so no byte is read twice by the same one.
	next [maxTriggers]int

	// Line bounds are asked for once per candidate; remembering the last
	// answer keeps many keys on one long line linear.
	eolFrom, eolAt  int // s[eolFrom:eolAt] has no line break; eolAt is one or len(s)
	bolStart, bolAt int // s[bolStart:bolAt] has no line break; bolStart begins a line
	keysDone        int // identifiers before this offset are handled
	cookieUpTo      int // cookie values before this offset are handled
}

func once(s string) (string, int) {
	r := redactor{s: s, lower: asciiLower(s), eolFrom: -1, eolAt: -1, bolStart: -1, bolAt: -1}
	r.scan()
	return r.apply()
}

// A trigger is the literal that starts a recogniser: a vendor prefix, a
// key word, a program name, a PEM header.
type trigger struct {
	needle string
	// cased triggers match the text as written; the others match it
	// lowered.
	cased bool
	// at runs the recogniser on the match at i and returns where this
	// trigger may match next.
	at func(r *redactor, i int) int
}

var triggerList = buildTriggers()

// maxTriggers bounds triggerList, so a pass keeps its resume offsets in
// a fixed array.
const maxTriggers = 96

func buildTriggers() []trigger {
	t := []trigger{
		{needle: "-----BEGIN ", cased: true, at: (*redactor).privateKeyAt},
		{needle: "eyJ", cased: true, at: (*redactor).jwtAt},
		{needle: "://", cased: true, at: (*redactor).urlCredentialsAt},
		{needle: "bearer", at: (*redactor).bearerAt},
		{needle: "basic", at: (*redactor).basicAt},
		{needle: "identified", at: (*redactor).identifiedAt},
	}
	for k := range prefixRules {
		p := &prefixRules[k]
		t = append(t, trigger{needle: p.prefix, cased: true, at: func(r *redactor, i int) int { return r.prefixedTokenAt(p, i) }})
	}
	for _, w := range kvTriggers {
		t = append(t, trigger{needle: w, at: func(r *redactor, i int) int { return r.keyAt(i, len(w)) }})
	}
	for k := range progRules {
		p := &progRules[k]
		t = append(t, trigger{needle: p.name, at: func(r *redactor, i int) int { return r.programAt(p, i) }})
	}
	return t
}

// byPair maps the first two bytes of a lowered trigger to the triggers
// that start with them (1 + an index into pairTriggers; 0 is none). The
// scan reads each byte pair of the text once and looks deeper only where
// a trigger can start.
var (
	byPair       [1 << 16]uint8
	pairTriggers [][]uint8
)

func init() {
	if len(triggerList) > maxTriggers {
		panic("redact: more than maxTriggers triggers")
	}
	for k, t := range triggerList {
		n := asciiLower(t.needle)
		p := uint16(n[0])<<8 | uint16(n[1])
		if byPair[p] == 0 {
			pairTriggers = append(pairTriggers, nil)
			byPair[p] = uint8(len(pairTriggers))
		}
		pairTriggers[byPair[p]-1] = append(pairTriggers[byPair[p]-1], uint8(k))
	}
}

// scan runs every recogniser over the text in one pass.
func (r *redactor) scan() {
	s, low := r.s, r.lower
	for i := 0; i+1 < len(low); i++ {
		pi := byPair[uint16(low[i])<<8|uint16(low[i+1])]
		if pi == 0 {
			continue
		}
		for _, k := range pairTriggers[pi-1] {
			t := &triggerList[k]
			if i < r.next[k] {
				continue
			}
			text := low
			if t.cased {
				text = s
			}
			if !strings.HasPrefix(text[i:], t.needle) {
				continue
			}
			r.next[k] = max(t.at(r, i), i+len(t.needle))
		}
	}
}

func (r *redactor) add(start, end int) {
	if start < end {
		r.spans = append(r.spans, span{start, end})
	}
}

// apply replaces the union of the spans. Overlapping and touching spans
// become one Marker; a span that is already exactly Marker is left alone
// and not counted, which makes a second pass over the output a no-op.
func (r *redactor) apply() (string, int) {
	if len(r.spans) == 0 {
		return r.s, 0
	}
	slices.SortFunc(r.spans, func(a, b span) int { return a.start - b.start })
	merged := r.spans[:1]
	for _, sp := range r.spans[1:] {
		last := &merged[len(merged)-1]
		if sp.start <= last.end {
			last.end = max(last.end, sp.end)
			continue
		}
		merged = append(merged, sp)
	}
	var b strings.Builder
	n, prev := 0, 0
	for _, sp := range merged {
		if r.s[sp.start:sp.end] == Marker {
			continue
		}
		if n == 0 {
			b.Grow(len(r.s))
		}
		b.WriteString(r.s[prev:sp.start])
		b.WriteString(Marker)
		prev = sp.end
		n++
	}
	if n == 0 {
		return r.s, 0
	}
	b.WriteString(r.s[prev:])
	return b.String(), n
}

// asciiLower lowers A-Z only, so offsets in the copy are offsets in s
// (strings.ToLower may change the length of invalid or non-ASCII text).
func asciiLower(s string) string {
	i := 0
	for i < len(s) && !isUpper(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if isUpper(b[i]) {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlnum(c byte) bool { return isUpper(c) || isLower(c) || isDigit(c) }

// isBlank is a separator inside a line; NUL separates arguments and
// variables in /proc/PID/cmdline and /proc/PID/environ.
func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == 0 }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0
}

func isEOL(c byte) bool { return c == '\n' || c == '\r' || c == 0 }

// eol is lineEnd(r.s, i), remembered for the rest of the line.
func (r *redactor) eol(i int) int {
	if i >= r.eolFrom && i <= r.eolAt {
		return r.eolAt
	}
	if i < r.eolFrom && strings.IndexAny(r.s[i:r.eolFrom], "\n\r\x00") < 0 {
		r.eolFrom = i
		return r.eolAt
	}
	r.eolFrom, r.eolAt = i, lineEnd(r.s, i)
	return r.eolAt
}

// bol is lineStart(r.s, i); calls with growing i scan each byte once.
func (r *redactor) bol(i int) int {
	if r.bolStart >= 0 && i >= r.bolStart {
		for j := max(r.bolAt, r.bolStart); j < i; j++ {
			if isEOL(r.s[j]) {
				r.bolStart = j + 1
			}
		}
		r.bolAt = max(r.bolAt, i)
		return r.bolStart
	}
	r.bolStart, r.bolAt = lineStart(r.s, i), i
	return r.bolStart
}

// lineEnd is the offset of the end of the line holding i: its '\n', '\r'
// or NUL, or len(s).
func lineEnd(s string, i int) int {
	for i < len(s) && !isEOL(s[i]) {
		i++
	}
	return i
}

// lineStart is the offset of the first byte of the line holding i.
func lineStart(s string, i int) int {
	for i > 0 && !isEOL(s[i-1]) {
		i--
	}
	return i
}

// trimSpan narrows [a, b) past blanks at both ends.
func trimSpan(s string, a, b int) (int, int) {
	for a < b && isSpace(s[a]) {
		a++
	}
	for b > a && isSpace(s[b-1]) {
		b--
	}
	return a, b
}
