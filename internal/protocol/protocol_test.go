package protocol

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseDiagnosticForms(t *testing.T) {
	cases := []struct {
		name     string
		in       string
		commands []string
		traces   []string // request names or targets
	}{
		{"plain", `{"response_type":"diagnostic","reasoning":"r","commands":["df -h","uptime"]}`, []string{"df -h", "uptime"}, nil},
		{"fenced json", "```json\n{\"response_type\":\"diagnostic\",\"commands\":[\"df -i\"]}\n```", []string{"df -i"}, nil},
		{"bare fence", "```\n{\"response_type\":\"diagnostic\",\"commands\":[\"df -i\"]}\n```", []string{"df -i"}, nil},
		{"fence on one line", "```json {\"response_type\":\"diagnostic\",\"commands\":[\"df -i\"]}```", []string{"df -i"}, nil},
		{"text around", "Sure! Here is my plan:\n{\"response_type\":\"diagnostic\",\"commands\":[\"free -m\"]}\nHope it helps.", []string{"free -m"}, nil},
		{"object commands", `{"response_type":"diagnostic","commands":[{"id":"cmd_1","command":"ss -ltnp","description":"listeners"},"uptime"]}`, []string{"ss -ltnp", "uptime"}, nil},
		{"blank commands dropped", `{"response_type":"diagnostic","commands":["  ","uptime"]}`, []string{"uptime"}, nil},
		{"upper type", `{"response_type":" Diagnostic ","commands":["uptime"]}`, []string{"uptime"}, nil},
		{"extra fields", `{"response_type":"diagnostic","commands":["uptime"],"next_actions":["x"],"code":"","mood":{"a":1}}`, []string{"uptime"}, nil},
		{"traces", `{"response_type":"diagnostic","ebpf_programs":[{"name":"disk_io","type":"tracepoint","target":"block:block_rq_complete","duration":5,"filters":{"comm":"postgres"}},"runqlat"]}`, nil, []string{"disk_io", "runqlat"}},
		{"reasoning as list", `{"response_type":"diagnostic","reasoning":["a","b"],"commands":["uptime"]}`, []string{"uptime"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Parse(c.in)
			require.NoError(t, err)
			require.Equal(t, Diagnostic, r.Type)
			require.Equal(t, c.commands, r.Commands)
			var names []string
			for _, tr := range r.Traces {
				names = append(names, tr.Name)
			}
			require.Equal(t, c.traces, names)
		})
	}
	r, _ := Parse(`{"response_type":"diagnostic","reasoning":["a","b"],"commands":["uptime"]}`)
	require.Equal(t, "a\nb", r.Reasoning)
	r, _ = Parse(`{"response_type":"diagnostic","ebpf_programs":[{"name":"disk_io","duration":5,"filters":{"comm":"postgres"}}]}`)
	require.Equal(t, "postgres", r.Traces[0].Filters["comm"])
	require.Equal(t, 5.0, r.Traces[0].Duration.D.Seconds())
}

func TestParseResolution(t *testing.T) {
	r, err := Parse(`{"response_type":"resolution","root_cause":"inodes exhausted on /var","resolution_plan":["1. find small files","2. clean"],"confidence":"high","ebpf_evidence":"open: 50 ENOSPC"}`)
	require.NoError(t, err)
	require.Equal(t, Resolution, r.Type)
	require.Equal(t, "inodes exhausted on /var", r.RootCause)
	require.Equal(t, "1. find small files\n2. clean", r.ResolutionPlan)
	require.Equal(t, "High", r.Confidence)
	require.Equal(t, "open: 50 ENOSPC", r.Evidence)

	for in, want := range map[string]string{`"Medium"`: "Medium", `"moderate"`: "Medium", `0.9`: "High", `"85%"`: "High", `"0.5"`: "Medium", `30`: "Low", `"LOW"`: "Low"} {
		r, err := Parse(`{"response_type":"resolution","root_cause":"x","confidence":` + in + `}`)
		require.NoError(t, err, in)
		require.Equal(t, want, r.Confidence, in)
	}
	r, err = Parse(`{"response_type":"resolution","root_cause":"x","confidence":"certain"}`)
	require.NoError(t, err)
	require.Equal(t, "Low", r.Confidence)
	require.Len(t, r.Notes, 1)
	r, err = Parse(`{"response_type":"resolution","root_cause":"x"}`)
	require.NoError(t, err)
	require.Equal(t, "Low", r.Confidence)

	r, err = Parse(`{"response_type":"resolution","root_cause":"x","findings":[{"title":"A","severity":"critical","evidence":["e1"],"fix":["f1"]}]}`)
	require.NoError(t, err)
	require.Equal(t, []Finding{{Title: "A", Severity: "critical", Evidence: []string{"e1"}, Fix: []string{"f1"}}}, r.Findings)
	r, err = Parse(`{"response_type":"resolution","root_cause":"x","findings":"none"}`)
	require.NoError(t, err)
	require.Nil(t, r.Findings)
	require.Contains(t, strings.Join(r.Notes, "; "), "findings ignored")
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"":                               "no JSON object",
		"The disk is full.":              "no JSON object",
		`{"response_type":`:              "not valid JSON",
		`{"commands":["df"]}`:            "no response_type",
		`{"response_type":"maybe"}`:      `unknown response_type "maybe"`,
		`{"response_type":"diagnostic"}`: "asks for no commands",
		`{"response_type":"diagnostic","commands":"df -h"}`:        "commands: want a list",
		`{"response_type":"diagnostic","commands":[1]}`:            "commands[0]",
		`{"response_type":"diagnostic","commands":[{"cmd":"df"}]}`: `without a "command" string`,
		`{"response_type":"diagnostic","ebpf_programs":{"a":1}}`:   "ebpf_programs: want a list",
		`{"response_type":"resolution"}`:                           "no root_cause",
		`{"response_type":"resolution","root_cause":{"a":1}}`:      "root_cause is an object",
	}
	for in, want := range cases {
		_, err := Parse(in)
		require.Error(t, err, in)
		require.Contains(t, err.Error(), want, in)
		var pe *ParseError
		require.ErrorAs(t, err, &pe)
	}
	long := strings.Repeat("x", 1000)
	_, err := Parse(long)
	require.Contains(t, err.Error(), `reply starts "`+strings.Repeat("x", quoteLen)+`…"`)
	_, err = Parse("{" + strings.Repeat(" ", MaxReplyBytes) + "}")
	require.Contains(t, err.Error(), "over the")
}

func TestParseBounds(t *testing.T) {
	var cmds []string
	for range MaxCommands + 5 {
		cmds = append(cmds, `"uptime"`)
	}
	var trs []string
	for range MaxTraces + 3 {
		trs = append(trs, `"exec"`)
	}
	r, err := Parse(`{"response_type":"diagnostic","commands":[` + strings.Join(cmds, ",") + `],"ebpf_programs":[` + strings.Join(trs, ",") + `]}`)
	require.NoError(t, err)
	require.Len(t, r.Commands, MaxCommands)
	require.Len(t, r.Traces, MaxTraces)
	require.Len(t, r.Notes, 2)
}

func TestEncodeRoundTrip(t *testing.T) {
	in := Reply{Type: Resolution, RootCause: "a", ResolutionPlan: "b", Confidence: "Medium", Evidence: "c",
		Findings: []Finding{{Title: "t", Severity: "warning", Evidence: []string{"e"}}}}
	out, err := Parse(Encode(in))
	require.NoError(t, err)
	require.Equal(t, in, out)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"response_type":"diagnostic","commands":["df -h"],"ebpf_programs":[{"name":"exec","duration":"5s"}]}`,
		"```json\n{\"response_type\":\"resolution\",\"root_cause\":\"x\",\"confidence\":0.7}\n```",
		`{"response_type":"diagnostic","commands":[{"command":"uptime"}]}`,
		`{"response_type":"resolution","root_cause":"x","findings":[{"title":"a"}]}`,
		"``` {", "{}", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errorsAs(err, &pe) {
				t.Fatalf("error is not a ParseError: %v", err)
			}
			return
		}
		switch r.Type {
		case Diagnostic:
			if len(r.Commands) == 0 && len(r.Traces) == 0 {
				t.Fatal("accepted a diagnostic that asks for nothing")
			}
			if len(r.Commands) > MaxCommands || len(r.Traces) > MaxTraces {
				t.Fatal("bounds not applied")
			}
		case Resolution:
			if strings.TrimSpace(r.RootCause) == "" {
				t.Fatal("accepted a resolution without root cause")
			}
			switch r.Confidence {
			case "High", "Medium", "Low":
			default:
				t.Fatalf("confidence %q not normalised", r.Confidence)
			}
		default:
			t.Fatalf("accepted type %q", r.Type)
		}
		// What an engine encodes, the loop reads back the same.
		again, err := Parse(Encode(r))
		if err != nil {
			t.Fatalf("re-parse of an accepted reply failed: %v", err)
		}
		if again.Type != r.Type || again.RootCause != r.RootCause || len(again.Commands) != len(r.Commands) {
			t.Fatal("round trip changed the reply")
		}
	})
}
