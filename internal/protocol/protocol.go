// Package protocol is the reply protocol reasoning engines speak
// (NANNYAPI.md §2.5): a model answers with a JSON document whose
// response_type is "diagnostic" (look at these commands and traces) or
// "resolution" (the root cause and the plan). Models write it loosely, so
// Parse tolerates what the earlier agent and its backend accept (code
// fences, commands as strings or objects, extra fields) and fails with an
// error that says what is wrong, never with a panic.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
)

// Type is a reply's response_type.
type Type string

const (
	Diagnostic Type = "diagnostic"
	Resolution Type = "resolution"
)

// Bounds on what one reply may ask for; more is cut and noted, so a model
// cannot make a round unbounded.
const (
	MaxCommands = 16
	MaxTraces   = 8
	// MaxReplyBytes bounds the content Parse reads.
	MaxReplyBytes = 256 << 10
)

// Reply is one parsed engine reply. For a diagnostic, Reasoning, Commands
// and Traces are set; for a resolution, RootCause, ResolutionPlan and
// Confidence.
type Reply struct {
	Type        Type               `json:"response_type"`
	Reasoning   string             `json:"reasoning,omitempty"`
	Commands    []string           `json:"commands,omitempty"`
	Traces      []resolver.Request `json:"ebpf_programs,omitempty"`
	NextActions []string           `json:"next_actions,omitempty"`

	RootCause      string `json:"root_cause,omitempty"`
	ResolutionPlan string `json:"resolution_plan,omitempty"`
	// Confidence is "High", "Medium" or "Low".
	Confidence string `json:"confidence,omitempty"`
	// Evidence is the resolution's supporting facts (the backend calls it
	// ebpf_evidence).
	Evidence string `json:"ebpf_evidence,omitempty"`
	// Findings are every problem the engine found, best supported first;
	// the resolution is about the first. Optional: the offline engine
	// always sends them, models may.
	Findings []Finding `json:"findings,omitempty"`

	// Notes say what Parse changed: commands or traces cut, a confidence
	// normalised. They are not part of the wire format.
	Notes []string `json:"-"`
}

// ParseError is a reply that is not protocol JSON. Start quotes the
// beginning of the reply for error messages.
type ParseError struct {
	Reason string
	Start  string
}

func (e *ParseError) Error() string {
	if e.Start == "" {
		return e.Reason
	}
	return fmt.Sprintf("%s (reply starts %q)", e.Reason, e.Start)
}

// quoteLen is how much of a bad reply an error quotes.
const quoteLen = 120

func parseError(content, format string, args ...any) *ParseError {
	s := strings.TrimSpace(content)
	if utf8.RuneCountInString(s) > quoteLen {
		s = string([]rune(s)[:quoteLen]) + "…"
	}
	return &ParseError{Reason: fmt.Sprintf(format, args...), Start: s}
}

// wireReply is the loose shape decoded before checking.
type wireReply struct {
	Type           string          `json:"response_type"`
	Reasoning      json.RawMessage `json:"reasoning"`
	Commands       json.RawMessage `json:"commands"`
	Traces         json.RawMessage `json:"ebpf_programs"`
	NextActions    json.RawMessage `json:"next_actions"`
	RootCause      json.RawMessage `json:"root_cause"`
	ResolutionPlan json.RawMessage `json:"resolution_plan"`
	Confidence     json.RawMessage `json:"confidence"`
	Evidence       json.RawMessage `json:"ebpf_evidence"`
	Findings       json.RawMessage `json:"findings"`
}

// Finding is one problem found: what, how bad, the facts that show it,
// why it happens and how to fix it.
type Finding struct {
	Title string `json:"title"`
	// Severity is "critical", "warning" or "info".
	Severity  string   `json:"severity"`
	Evidence  []string `json:"evidence,omitempty"`
	RootCause string   `json:"root_cause,omitempty"`
	Fix       []string `json:"fix,omitempty"`
	// Confidence is "High", "Medium" or "Low".
	Confidence string `json:"confidence,omitempty"`
}

// Parse reads one reply. It strips a code fence and text around the JSON
// object, accepts commands as strings or as objects with a "command"
// field, and checks that the reply can be acted on: a diagnostic asks for
// at least one command or trace, a resolution names a root cause.
func Parse(content string) (Reply, error) {
	if len(content) > MaxReplyBytes {
		return Reply{}, parseError(content, "reply is %d bytes, over the %d-byte limit", len(content), MaxReplyBytes)
	}
	body := ExtractJSON(content)
	if body == "" {
		return Reply{}, parseError(content, "reply holds no JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var w wireReply
	if err := dec.Decode(&w); err != nil {
		return Reply{}, parseError(content, "reply is not valid JSON: %v", err)
	}
	r := Reply{Type: Type(strings.ToLower(strings.TrimSpace(w.Type)))}
	var err error
	text := func(field string, raw json.RawMessage) string {
		if err != nil {
			return ""
		}
		var s string
		s, err = textField(field, raw)
		return s
	}
	r.Reasoning = text("reasoning", w.Reasoning)
	r.RootCause = text("root_cause", w.RootCause)
	r.ResolutionPlan = text("resolution_plan", w.ResolutionPlan)
	r.Confidence = text("confidence", w.Confidence)
	r.Evidence = text("ebpf_evidence", w.Evidence)
	if err != nil {
		return Reply{}, parseError(content, "%v", err)
	}
	switch r.Type {
	case Diagnostic:
		if r.Commands, err = commands(w.Commands); err != nil {
			return Reply{}, parseError(content, "%v", err)
		}
		if r.Traces, err = traces(w.Traces); err != nil {
			return Reply{}, parseError(content, "%v", err)
		}
		r.NextActions, _ = stringList(w.NextActions)
		if len(r.Commands) == 0 && len(r.Traces) == 0 {
			return Reply{}, parseError(content, "diagnostic reply asks for no commands and no ebpf_programs")
		}
		if len(r.Commands) > MaxCommands {
			r.Notes = append(r.Notes, fmt.Sprintf("%d commands asked, the first %d kept", len(r.Commands), MaxCommands))
			r.Commands = r.Commands[:MaxCommands]
		}
		if len(r.Traces) > MaxTraces {
			r.Notes = append(r.Notes, fmt.Sprintf("%d ebpf_programs asked, the first %d kept", len(r.Traces), MaxTraces))
			r.Traces = r.Traces[:MaxTraces]
		}
	case Resolution:
		if len(bytes.TrimSpace(w.Findings)) > 0 && string(bytes.TrimSpace(w.Findings)) != "null" {
			if e := json.Unmarshal(w.Findings, &r.Findings); e != nil {
				r.Notes = append(r.Notes, "findings ignored: "+e.Error())
				r.Findings = nil
			}
		}
		if strings.TrimSpace(r.RootCause) == "" {
			return Reply{}, parseError(content, "resolution reply has no root_cause")
		}
		if strings.TrimSpace(r.Confidence) == "" {
			r.Notes = append(r.Notes, "no confidence given; read as Low")
			r.Confidence = "Low"
		} else if c, ok := normalConfidence(r.Confidence); ok {
			if c != r.Confidence {
				r.Notes = append(r.Notes, fmt.Sprintf("confidence %q read as %q", r.Confidence, c))
			}
			r.Confidence = c
		} else {
			r.Notes = append(r.Notes, fmt.Sprintf("confidence %q is not High, Medium or Low; read as Low", r.Confidence))
			r.Confidence = "Low"
		}
	case "":
		return Reply{}, parseError(content, "reply has no response_type (want \"diagnostic\" or \"resolution\")")
	default:
		return Reply{}, parseError(content, "unknown response_type %q (want \"diagnostic\" or \"resolution\")", w.Type)
	}
	return r, nil
}

// ExtractJSON returns the JSON object in content: the inside of a ```json
// (or bare ```) fence when there is one, else the text from the first
// '{' to the last '}'. It returns "" when there is no '{' at all.
func ExtractJSON(content string) string {
	s := strings.TrimSpace(content)
	if i := strings.Index(s, "```"); i >= 0 {
		rest := s[i+3:]
		// The fence's info string ends at the first newline.
		if nl := strings.IndexByte(rest, '\n'); nl >= 0 && !strings.Contains(rest[:nl], "{") {
			rest = rest[nl+1:]
		} else {
			rest = strings.TrimPrefix(rest, "json")
		}
		if j := strings.Index(rest, "```"); j >= 0 {
			rest = rest[:j]
		}
		s = strings.TrimSpace(rest)
	}
	start := strings.IndexByte(s, '{')
	if start < 0 {
		return ""
	}
	end := strings.LastIndexByte(s, '}')
	if end < start {
		// A cut-off reply: let the decoder say where it ends.
		return s[start:]
	}
	return s[start : end+1]
}

// textField reads a field that should be a string; numbers and booleans
// are taken as their text, lists of strings are joined by newlines
// (models write a plan as a list), anything else is an error.
func textField(field string, raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%s: %v", field, err)
		}
		return s, nil
	case '[':
		l, err := stringList(raw)
		if err != nil {
			return "", fmt.Errorf("%s: %v", field, err)
		}
		return strings.Join(l, "\n"), nil
	case '{':
		return "", fmt.Errorf("%s is an object, want a string", field)
	default:
		return string(raw), nil
	}
}

func stringList(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errors.New("want a list of strings")
	}
	var out []string
	for _, it := range items {
		s, err := textField("item", it)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// commands reads "commands": strings, or objects with a "command" field
// (the form the earlier agent's docs show: {id, command, description}).
func commands(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errors.New("commands: want a list of strings or of {\"command\": ...} objects")
	}
	var out []string
	for i, it := range items {
		it = bytes.TrimSpace(it)
		var s string
		switch {
		case len(it) > 0 && it[0] == '"':
			if err := json.Unmarshal(it, &s); err != nil {
				return nil, fmt.Errorf("commands[%d]: %v", i, err)
			}
		case len(it) > 0 && it[0] == '{':
			var o struct {
				Command json.RawMessage `json:"command"`
			}
			if err := json.Unmarshal(it, &o); err != nil {
				return nil, fmt.Errorf("commands[%d]: %v", i, err)
			}
			if err := json.Unmarshal(o.Command, &s); err != nil {
				return nil, fmt.Errorf("commands[%d]: object without a \"command\" string", i)
			}
		default:
			return nil, fmt.Errorf("commands[%d]: want a string or an object with \"command\"", i)
		}
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

func traces(raw json.RawMessage) ([]resolver.Request, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errors.New("ebpf_programs: want a list of objects")
	}
	var out []resolver.Request
	for i, it := range items {
		var r resolver.Request
		it = bytes.TrimSpace(it)
		if len(it) > 0 && it[0] == '"' {
			// A bare name ("runqlat") is a request by name.
			if err := json.Unmarshal(it, &r.Name); err != nil {
				return nil, fmt.Errorf("ebpf_programs[%d]: %v", i, err)
			}
		} else if err := json.Unmarshal(it, &r); err != nil {
			return nil, fmt.Errorf("ebpf_programs[%d]: %v", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// normalConfidence maps what models write ("high", "HIGH", "0.9", "85%")
// onto High, Medium or Low.
func normalConfidence(c string) (string, bool) {
	s := strings.ToLower(strings.TrimSpace(c))
	switch s {
	case "high", "very high":
		return "High", true
	case "medium", "moderate":
		return "Medium", true
	case "low", "very low":
		return "Low", true
	}
	var f float64
	if _, err := fmt.Sscanf(strings.TrimSuffix(s, "%"), "%g", &f); err == nil {
		if strings.HasSuffix(s, "%") || f > 1 {
			f /= 100
		}
		switch {
		case f >= 0.75:
			return "High", true
		case f >= 0.4:
			return "Medium", true
		default:
			return "Low", true
		}
	}
	return "", false
}

// Encode is the reply as protocol JSON (what an engine sends).
func Encode(r Reply) string {
	b, err := json.Marshal(r)
	if err != nil {
		// Reply holds only strings and lists of them.
		panic(err)
	}
	return string(b)
}
