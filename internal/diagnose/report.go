package diagnose

import (
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// Report is one investigation's outcome; `diagnose --json` prints it.
type Report struct {
	Issue  string        `json:"issue"`
	Engine string        `json:"engine"`
	Rounds []RoundReport `json:"rounds"`
	// Findings are every problem the engine reported, best first.
	Findings   []protocol.Finding `json:"findings"`
	Resolution *Resolution        `json:"resolution"`
	// EndedBy says what ended the investigation: "resolution", or the
	// limit or failure that cut it short.
	EndedBy    string         `json:"ended_by"`
	Error      string         `json:"error,omitempty"`
	DurationMS int64          `json:"duration_ms"`
	Facts      *sysinfo.Facts `json:"facts,omitempty"`
}

// Resolved reports whether the engine gave a resolution (not a
// best-so-far answer after a limit).
func (r *Report) Resolved() bool { return r.Resolution != nil && !r.Resolution.Provisional }

// Resolution is the answer.
type Resolution struct {
	RootCause      string `json:"root_cause"`
	ResolutionPlan string `json:"resolution_plan"`
	Confidence     string `json:"confidence"`
	Evidence       string `json:"evidence"`
	// Provisional is set when a limit ended the investigation before the
	// engine resolved it: the answer is the best so far, not a conclusion.
	Provisional bool `json:"provisional,omitempty"`
}

// RoundReport is one diagnostic round.
type RoundReport struct {
	Reasoning string          `json:"reasoning"`
	Commands  []CommandReport `json:"commands"`
	Traces    []TraceReport   `json:"traces"`
	Notes     []string        `json:"notes,omitempty"`
}

// CommandReport is one command's outcome. Output is stdout then stderr,
// redacted.
type CommandReport struct {
	Command    string `json:"command"`
	ExitCode   int    `json:"exit_code"`
	Output     string `json:"output"`
	Refused    bool   `json:"refused"`
	Reason     string `json:"reason,omitempty"`
	Error      string `json:"error,omitempty"`
	TimedOut   bool   `json:"timed_out,omitempty"`
	Truncated  bool   `json:"truncated,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// TraceReport is one trace request's outcome.
type TraceReport struct {
	Request resolver.Request `json:"request"`
	// Entry is the catalog entry that ran ("bpftrace" for the fallback);
	// Mapping says how the request was mapped onto it.
	Entry   string          `json:"entry,omitempty"`
	Mapping string          `json:"mapping"`
	Notes   []string        `json:"notes,omitempty"`
	Result  *catalog.Result `json:"result"`
	Error   string          `json:"error,omitempty"`
}
