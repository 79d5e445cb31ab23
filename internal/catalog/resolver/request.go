package resolver

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Request is one entry of `ebpf_programs` in a diagnostic reply
// (NANNYAPI.md §2.5). Models write these loosely, so decoding never fails
// on a field's shape: what cannot be read is kept and reported by Resolve.
type Request struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Target      string   `json:"target"`
	Duration    Duration `json:"duration"`
	Filters     Filters  `json:"filters,omitempty"`
	Description string   `json:"description"`
}

// Duration is a trace length; on the wire it is seconds, as a number
// (5, 2.5) or a string ("5", "5s", "2m"). Zero means the default.
type Duration struct {
	D time.Duration
	// Raw holds a value that could not be read; Resolve notes it and
	// uses the default.
	Raw string
}

// maxRequested bounds what a request can say before clamping, so notes
// show the asked value and huge numbers cannot overflow.
const maxRequested = 24 * time.Hour

// Seconds is a Duration of s seconds.
func Seconds(s float64) Duration { return Duration{D: secondsToDuration(s)} }

func secondsToDuration(s float64) time.Duration {
	// Bound before converting: a huge float overflows time.Duration, and
	// anything past the maximum is clamped anyway.
	if math.IsNaN(s) || s <= 0 {
		return 0
	}
	if s > maxRequested.Seconds() {
		return maxRequested
	}
	return time.Duration(s * float64(time.Second))
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	*d = Duration{}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			d.Raw = string(b)
			return nil
		}
		*d = ParseDuration(s)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		if len(b) > 64 {
			b = b[:64]
		}
		d.Raw = string(b)
		return nil
	}
	if f < 0 {
		d.Raw = string(b)
		return nil
	}
	d.D = secondsToDuration(f)
	return nil
}

// ParseDuration reads "5" (seconds), "2.5", "5s", "1m30s"; what it
// cannot read is kept in Raw.
func ParseDuration(s string) Duration {
	s = strings.TrimSpace(s)
	if s == "" {
		return Duration{}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && !math.IsInf(f, 0) {
		return Duration{D: secondsToDuration(f)}
	}
	if v, err := time.ParseDuration(s); err == nil && v >= 0 {
		return Duration{D: v}
	}
	return Duration{Raw: truncate(s, 64)}
}

func (d Duration) MarshalJSON() ([]byte, error) {
	if d.Raw != "" {
		return json.Marshal(d.Raw)
	}
	return []byte(strconv.FormatFloat(d.D.Seconds(), 'f', -1, 64)), nil
}

// Filters are the request's filters by name, values as text: models send
// numbers, strings and booleans interchangeably. Keys are lowercased.
// A filters value that is not an object is kept under the key
// UnreadableFilters so that Resolve reports it.
type Filters map[string]string

// UnreadableFilters is the key under which a non-object filters value
// (an array, a bare string) is kept.
const UnreadableFilters = "(unreadable filters)"

func (f *Filters) UnmarshalJSON(b []byte) error {
	*f = nil
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		// "pid=1234 comm=nginx" is a shape models use: read it.
		var s string
		if json.Unmarshal(b, &s) == nil {
			*f = parseFilterString(s)
			return nil
		}
		*f = Filters{UnreadableFilters: truncate(string(b), 120)}
		return nil
	}
	m := Filters{}
	for k, raw := range obj {
		k = strings.ToLower(strings.TrimSpace(k))
		raw = bytes.TrimSpace(raw)
		var s string
		switch {
		case string(raw) == "null":
			continue
		case len(raw) > 0 && raw[0] == '"':
			if json.Unmarshal(raw, &s) != nil {
				s = string(raw)
			}
		default:
			s = string(raw) // numbers, booleans; objects stay raw and fail validation
		}
		m[k] = truncate(s, 256)
	}
	if len(m) > 0 {
		*f = m
	}
	return nil
}

// parseFilterString reads "k=v k2=v2" (also "k:v" and commas).
func parseFilterString(s string) Filters {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	m := Filters{}
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == ';' }) {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			k, v, ok = strings.Cut(part, ":")
		}
		if !ok || strings.TrimSpace(k) == "" {
			m[UnreadableFilters] = truncate(s, 120)
			continue
		}
		m[strings.ToLower(strings.TrimSpace(k))] = truncate(strings.Trim(strings.TrimSpace(v), `"'`), 256)
	}
	return m
}

// keys returns the filter names in order, for stable notes.
func (f Filters) keys() []string {
	ks := make([]string, 0, len(f))
	for k := range f {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
