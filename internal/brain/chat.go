package brain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/protocol"
)

// Message is one chat message as OpenAI-compatible endpoints and
// NannyAPI's proxy take it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// DefaultContextBytes is the results budget of one round when Limits does
// not set one: about 8k tokens, which fits every current chat model next
// to the prompt and a few rounds of history.
const DefaultContextBytes = 32 << 10

// Conversation renders an investigation as the messages after a system
// prompt: the host's facts and the issue, then per round the engine's
// reply and the results message, then a parse failure to correct, or the
// request for a final answer.
func Conversation(inv *Investigation) []Message {
	var first strings.Builder
	if inv.Facts != nil {
		first.WriteString(inv.Facts.Prompt())
		first.WriteString("\n")
	}
	first.WriteString("ISSUE DESCRIPTION:\n")
	first.WriteString(inv.Issue)
	msgs := []Message{{Role: "user", Content: first.String()}}
	budget := inv.Limits.ContextBytes
	if budget <= 0 {
		budget = DefaultContextBytes
	}
	for _, r := range inv.Rounds {
		msgs = append(msgs, Message{Role: "assistant", Content: r.Raw})
		b, _ := json.MarshalIndent(ResultsFor(r, budget), "", "  ")
		msgs = append(msgs, Message{Role: "user", Content: string(b)})
	}
	if pf := inv.ParseFailure; pf != nil {
		msgs = append(msgs,
			Message{Role: "assistant", Content: pf.Reply},
			Message{Role: "user", Content: "Your last reply could not be read: " + pf.Err +
				". Answer again with one JSON object only, response_type \"diagnostic\" or \"resolution\", as the system prompt says."})
	}
	if inv.Final {
		msgs = append(msgs, Message{Role: "user", Content: "The investigation's limits are reached: no more commands or traces will run. " +
			"Answer now with a JSON object of response_type \"resolution\" giving the most likely root cause from the evidence so far, with a confidence that says how sure you are."})
	}
	return msgs
}

// ResultsFor is a round's results message, its outputs cut so the whole
// fits in about budget bytes: every command and trace gets an equal share,
// and a cut output keeps its head and its tail (errors are usually last).
func ResultsFor(r Round, budget int) protocol.Results {
	items := len(r.Commands) + len(r.Traces)
	share := budget
	if items > 0 {
		// Leave room for the JSON around the outputs.
		share = (budget - 256*items) / items
	}
	if share < 256 {
		share = 256
	}
	var res protocol.Results
	res.Notes = append(res.Notes, r.Notes...)
	for i, c := range r.Commands {
		out := c.Result.Stdout
		if c.Result.Stderr != "" {
			if out != "" && !strings.HasSuffix(out, "\n") {
				out += "\n"
			}
			out += c.Result.Stderr
		}
		cut, was := HeadTail(out, share)
		cr := protocol.CommandResult{
			ID:        fmt.Sprintf("cmd_%d", i+1),
			Command:   c.Result.Command,
			Output:    cut,
			ExitCode:  c.Result.ExitCode,
			Error:     c.Result.Error,
			Refused:   c.Result.Refused,
			Reason:    c.Result.Reason,
			Truncated: was || c.Result.Truncated,
		}
		if c.Result.TimedOut {
			cr.Error = strings.TrimSpace(cr.Error + " timed out")
		}
		res.CommandResults = append(res.CommandResults, cr)
	}
	res.ExecutedCommands = len(r.Commands)
	for i, t := range r.Traces {
		tr := protocol.TraceResult{Index: i, Target: traceTarget(t), Entry: t.Resolution.Entry, Mapping: t.Resolution.How}
		if t.Result == nil {
			tr.Error = t.Err
			if tr.Error == "" {
				tr.Error = "did not run"
			}
			res.EBPFResults = append(res.EBPFResults, tr)
			res.EBPFEvidenceSummary = append(res.EBPFEvidenceSummary, fmt.Sprintf("%s: failed - %s", tr.Target, tr.Error))
			continue
		}
		var b bytes.Buffer
		t.Result.Render(&b)
		tr.Success = true
		tr.Error = t.Err
		tr.EventCount = t.Result.Events
		tr.Duration = t.Result.Seconds()
		if tr.Duration > 0 {
			tr.EventsPerSecond = float64(t.Result.Events) / tr.Duration
		}
		tr.Summary = t.Result.Summary
		tr.Output, _ = HeadTail(b.String(), share)
		res.EBPFResults = append(res.EBPFResults, tr)
		res.EBPFEvidenceSummary = append(res.EBPFEvidenceSummary,
			fmt.Sprintf("%s: %d events (success) - %s", tr.Target, tr.EventCount, tr.Summary))
	}
	res.ExecutedEBPFPrograms = len(r.Traces)
	return res
}

func traceTarget(t TraceRun) string {
	switch {
	case t.Request.Target != "":
		return t.Request.Target
	case t.Request.Name != "":
		return t.Request.Name
	}
	return t.Resolution.Entry
}

// HeadTail cuts s to about n bytes, keeping its first and last parts and
// marking the cut on a line of its own; it reports whether it cut. Cuts
// fall on UTF-8 boundaries.
func HeadTail(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	marker := fmt.Sprintf("\n…[%d bytes cut]…\n", len(s)-n)
	keep := n - len(marker)
	if keep < 2 {
		keep = 2
	}
	head, tail := keep/2, keep-keep/2
	// Move both cuts back to the start of a rune.
	for head > 0 && !utf8.RuneStart(s[head]) {
		head--
	}
	from := len(s) - tail
	for from < len(s) && !utf8.RuneStart(s[from]) {
		from++
	}
	return s[:head] + marker + s[from:], true
}
