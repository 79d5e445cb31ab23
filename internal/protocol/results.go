package protocol

// Results is the message that carries one round's outcomes back to a chat
// engine. Its keys are the ones the earlier agent sends (NANNYAPI.md §2.4),
// so models trained on that exchange read it unchanged; the extra keys
// (refused, reason, truncated, entry, mapping, result) carry what this
// agent knows more.
type Results struct {
	CommandResults       []CommandResult `json:"command_results"`
	ExecutedCommands     int             `json:"executed_commands"`
	EBPFResults          []TraceResult   `json:"ebpf_results,omitempty"`
	ExecutedEBPFPrograms int             `json:"executed_ebpf_programs,omitempty"`
	EBPFEvidenceSummary  []string        `json:"ebpf_evidence_summary,omitempty"`
	// Notes say what the agent changed or cut in this round (commands
	// over the per-reply bound, outputs shortened to the context budget).
	Notes []string `json:"notes,omitempty"`
}

// CommandResult is one command's outcome as the engine reads it.
type CommandResult struct {
	ID          string `json:"id"`
	Command     string `json:"command"`
	Description string `json:"description"`
	// Output is stdout then stderr, redacted and cut to the budget.
	Output   string `json:"output"`
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
	Refused  bool   `json:"refused,omitempty"`
	// Reason is why a refused command did not run; it names the rule.
	Reason    string `json:"reason,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// TraceResult is one trace's outcome as the engine reads it.
type TraceResult struct {
	Index           int     `json:"index"`
	Target          string  `json:"target"`
	Success         bool    `json:"success"`
	Error           string  `json:"error,omitempty"`
	EventCount      uint64  `json:"event_count,omitempty"`
	EventsPerSecond float64 `json:"events_per_second,omitempty"`
	Duration        float64 `json:"duration,omitempty"`
	Summary         string  `json:"summary,omitempty"`
	// Output is the rendered result (tables, histograms), cut to the
	// budget.
	Output string `json:"output,omitempty"`
	// Entry and Mapping say which catalog entry ran and how the request
	// was mapped onto it.
	Entry   string `json:"entry,omitempty"`
	Mapping string `json:"mapping,omitempty"`
}
