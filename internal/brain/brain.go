// Package brain defines what a reasoning engine is: given an
// investigation so far (the issue, the host's facts, every round's reply
// and results), it returns its next reply in the protocol of package
// protocol. The offline engine, OpenAI-compatible endpoints and NannyAPI
// implement it; the diagnosis loop (package diagnose) drives it.
package brain

import (
	"context"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// Engine is a reasoning engine.
type Engine interface {
	// Name is how the engine is shown and selected ("offline", "openai").
	Name() string
	// Next returns the engine's next reply as protocol text (a JSON
	// document, possibly fenced). An error ends the investigation; a
	// reply that does not parse is sent back once by the loop (see
	// Investigation.ParseFailure).
	Next(ctx context.Context, inv *Investigation) (string, error)
}

// Investigation is everything known so far. The loop owns it; engines
// read it and must not keep references past Next.
type Investigation struct {
	Issue string
	Facts *sysinfo.Facts
	// Rounds are the completed rounds: a diagnostic reply and what its
	// commands and traces produced, oldest first.
	Rounds []Round
	// ParseFailure is set when the engine's last reply was not protocol
	// JSON; a chat engine sends the error back so the model can correct
	// itself. The loop allows one such retry.
	ParseFailure *ParseFailure
	// Final is set when a limit leaves room for one more reply only: the
	// loop will accept a resolution and nothing else, so engines should
	// answer with the best resolution they have.
	Final  bool
	Limits Limits
}

// ParseFailure is a reply the loop could not read.
type ParseFailure struct {
	Reply string
	Err   string
}

// Limits bound an investigation; engines state them to models.
type Limits struct {
	MaxRounds int
	// Deadline is when the investigation ends whatever happens.
	Deadline time.Time
	// RoundBudget bounds one round's commands and traces together.
	RoundBudget time.Duration
	// ContextBytes is the budget of one round's results as sent to a chat
	// engine.
	ContextBytes int
}

// Round is one diagnostic reply and its outcomes.
type Round struct {
	// Raw is the reply as the engine sent it; Reply is its parsed form.
	Raw      string
	Reply    protocol.Reply
	Commands []CommandRun
	Traces   []TraceRun
	// Notes say what the loop cut or changed (commands over the bound,
	// the round budget reached).
	Notes []string
}

// CommandRun is one command of a reply and what it produced (a refusal is
// a result too).
type CommandRun struct {
	Result safeexec.Result
}

// TraceRun is one trace request, how it was mapped and what it gave.
type TraceRun struct {
	Request    resolver.Request
	Resolution resolver.Resolution
	// Result is nil when the trace did not run; Err says why.
	Result *catalog.Result
	Err    string
}
