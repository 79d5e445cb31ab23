package nannyapi

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/diagnose"
	api "github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	safeexec.EnterSandboxIfRequested()
	os.Exit(m.Run())
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// testExec runs commands in the sandbox as the daemon does when the
// test is root.
func testExec() *safeexec.Options {
	o := safeexec.DefaultOptions()
	o.Sandbox = os.Geteuid() == 0
	o.Timeout = 5 * time.Second
	return &o
}

func facts() *sysinfo.Facts {
	return &sysinfo.Facts{Hostname: "nanny-test-host", Kernel: "6.18.0", Arch: "x86_64", CPUs: 2}
}

// backend is the in-process NannyAPI with its TensorZero gateway in front
// of a scripted model, and an agent registered to a user.
type backend struct {
	srv   *nannyapitest.Server
	tz    *nannyapitest.TensorZero
	model *openaitest.Server
	user  *nannyapitest.User
	reg   nannyapitest.Registration
	cl    *api.Client
}

func newBackend(t *testing.T, steps ...openaitest.Step) *backend {
	model := openaitest.New(t, steps...)
	tz := nannyapitest.NewTensorZero(t, model.BaseURL())
	srv := nannyapitest.New(t, nannyapitest.Options{TensorZeroURL: tz.URL, TensorZeroKey: "tz-key"})
	u := srv.CreateUser("owner@example.com")
	reg := srv.RegisterAgent(u, "nanny-test-host")
	cl, err := api.New(api.Options{BaseURL: srv.URL, Tokens: api.StaticToken(reg.AccessToken)})
	require.NoError(t, err)
	return &backend{srv: srv, tz: tz, model: model, user: u, reg: reg, cl: cl}
}

// noSleep records the waits instead of waiting.
type noSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (n *noSleep) sleep(ctx context.Context, d time.Duration) error {
	n.mu.Lock()
	n.waits = append(n.waits, d)
	n.mu.Unlock()
	return ctx.Err()
}

func (n *noSleep) got() []time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]time.Duration(nil), n.waits...)
}

func noJitter() float64 { return 0.5 }

// TestPortalInvestigationEndToEnd runs a portal investigation through the
// loop: the model asks for commands, they run (sandboxed as root), the
// results go back through the proxy, the resolution completes it, and
// Finish records the plan.
func TestPortalInvestigationEndToEnd(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.log")
	require.NoError(t, os.WriteFile(f, []byte("start\nERROR: disk quota exceeded\n"), 0o644))
	diag := `{"response_type": "diagnostic", "reasoning": "read the log", "commands": [` + jsonString("cat "+f) + `, "uname -s"]}`
	final := `{"response_type": "resolution", "root_cause": "The disk quota is exceeded", "resolution_plan": "1. Raise the quota\n2. Rotate app.log", "confidence": "High"}`
	b := newBackend(t, openaitest.Reply(diag), openaitest.Reply(final))
	id, err := b.srv.CreateInvestigation(b.reg.AgentID, "The app stopped writing its log", "high")
	require.NoError(t, err)

	var created []string
	e, err := New(Config{Client: b.cl, InvestigationID: id, OnCreate: func(id string) { created = append(created, id) }})
	require.NoError(t, err)
	require.Equal(t, "nannyapi", e.Name())
	rep, runErr := diagnose.Run(context.Background(), "The app stopped writing its log",
		diagnose.Options{Engine: e, Exec: testExec(), Facts: facts(), MaxRounds: 4, MaxWall: time.Minute, RoundBudget: 30 * time.Second})
	require.NoError(t, runErr)
	require.True(t, rep.Resolved())
	require.Equal(t, "nannyapi", rep.Engine)
	require.Equal(t, "start\nERROR: disk quota exceeded\n", rep.Rounds[0].Commands[0].Output)
	require.Equal(t, "Linux\n", rep.Rounds[0].Commands[1].Output)
	require.Empty(t, created, "a portal investigation is not created again")
	require.Zero(t, b.srv.Count("POST /api/investigations")-2, "two chat turns, no create")

	// What the backend forwarded: the conversation only, no system prompt.
	calls := b.tz.Calls()
	require.Len(t, calls, 2)
	require.Equal(t, nannyapitest.TensorZeroModel, calls[0].Model)
	require.Empty(t, calls[0].EpisodeID)
	require.NotEmpty(t, calls[1].EpisodeID)
	require.Len(t, calls[0].Messages, 1)
	first := calls[0].Messages[0]
	require.Equal(t, "user", first.Role)
	require.True(t, strings.HasPrefix(first.Content, "SYSTEM INFORMATION:\n- Hostname: nanny-test-host\n"), first.Content)
	require.True(t, strings.HasSuffix(first.Content, "\nISSUE DESCRIPTION:\nThe app stopped writing its log"), first.Content)
	require.Len(t, calls[1].Messages, 3)
	require.Equal(t, "assistant", calls[1].Messages[1].Role)
	var res protocol.Results
	require.NoError(t, json.Unmarshal([]byte(calls[1].Messages[2].Content), &res))
	require.Equal(t, 2, res.ExecutedCommands)
	require.Equal(t, "cat "+f, res.CommandResults[0].Command)
	require.Equal(t, "start\nERROR: disk quota exceeded\n", res.CommandResults[0].Output)

	// The unfenced resolution completed it on the backend already; the
	// agent's PATCH records its own text.
	rec, _ := b.srv.Record(nannyapitest.Investigations, id)
	require.Equal(t, "completed", rec["status"])
	require.NoError(t, e.Finish(context.Background(), rep, runErr))
	rec, _ = b.srv.Record(nannyapitest.Investigations, id)
	require.Equal(t, "completed", rec["status"])
	require.Equal(t, "Root cause (confidence High): The disk quota is exceeded\n\n1. Raise the quota\n2. Rotate app.log", rec["resolution_plan"])
	patches := b.srv.RequestsFor("PATCH /api/investigations")
	require.Len(t, patches, 1)
	require.Equal(t, "id="+id, patches[0].Query)
	require.Equal(t, "Bearer "+b.reg.AccessToken, patches[0].Header.Get("Authorization"))
}

// TestCLIInvestigationCreates: without an ID the first turn creates the
// investigation as the agent (initiated_by agent), then converses; a
// fenced resolution leaves it in progress on the backend until Finish.
func TestCLIInvestigationCreates(t *testing.T) {
	final := "```json\n" + `{"response_type": "resolution", "root_cause": "nothing is wrong", "resolution_plan": "1. Nothing to do", "confidence": "Low"}` + "\n```"
	b := newBackend(t, openaitest.Reply(final))
	var created []string
	e, err := New(Config{Client: b.cl, AgentID: b.reg.AgentID, OnCreate: func(id string) { created = append(created, id) }})
	require.NoError(t, err)
	rep, runErr := diagnose.Run(context.Background(), "  the load is high since noon  ", diagnose.Options{Engine: e, Exec: testExec(), Facts: facts()})
	require.NoError(t, runErr)
	id := e.InvestigationID()
	require.Len(t, id, 15)
	require.Equal(t, []string{id}, created)
	rec, _ := b.srv.Record(nannyapitest.Investigations, id)
	require.Equal(t, "the load is high since noon", rec["user_prompt"])
	require.Equal(t, "medium", rec["priority"])
	require.Equal(t, map[string]any{"initiated_by": "agent"}, rec["metadata"])
	require.Equal(t, "in_progress", rec["status"], "the backend does not read a fenced resolution")
	require.NoError(t, e.Finish(context.Background(), rep, runErr))
	rec, _ = b.srv.Record(nannyapitest.Investigations, id)
	require.Equal(t, "completed", rec["status"])
	require.Equal(t, "Root cause (confidence Low): nothing is wrong\n\n1. Nothing to do", rec["resolution_plan"])
	require.NotEmpty(t, rec["completed_at"])
}

func TestShortIssues(t *testing.T) {
	b := newBackend(t)
	e, err := New(Config{Client: b.cl, AgentID: b.reg.AgentID})
	require.NoError(t, err)
	for _, issue := range []string{"slow", "  disk full  ", "everythingisbroken", "disk full"} {
		_, err := e.Next(context.Background(), &brain.Investigation{Issue: issue})
		require.ErrorContains(t, err, "too short for NannyAPI", issue)
	}
	require.NoError(t, CheckIssue("the disk is full"))
	require.Zero(t, b.srv.Count("POST /api/investigations"), "nothing was sent")
	require.NoError(t, e.Finish(context.Background(), nil, errors.New("x")), "no investigation, nothing to record")
	require.Zero(t, b.srv.Count("PATCH /api/investigations"))
}

func TestLongIssueIsStoredCut(t *testing.T) {
	b := newBackend(t, openaitest.Reply(`{"response_type":"resolution","root_cause":"x","resolution_plan":"y","confidence":"Low"}`))
	e, err := New(Config{Client: b.cl, AgentID: b.reg.AgentID, Priority: "high"})
	require.NoError(t, err)
	issue := "the disk is full " + strings.Repeat("é", 3000)
	_, err = e.Next(context.Background(), &brain.Investigation{Issue: issue})
	require.NoError(t, err)
	rec, _ := b.srv.Record(nannyapitest.Investigations, e.InvestigationID())
	require.Equal(t, 2000, utf8.RuneCountInString(rec["user_prompt"].(string)))
	require.Equal(t, "high", rec["priority"])
	require.True(t, strings.HasSuffix(b.tz.Calls()[0].Messages[0].Content, issue), "the conversation has the whole issue")
}

// TestBoundedRetries: 500 panics and hangs are retried a bounded number
// of times, with the delays of the policy, then reported clearly.
func TestBoundedRetries(t *testing.T) {
	b := newBackend(t)
	id, err := b.srv.CreateInvestigation(b.reg.AgentID, "The app stopped writing its log", "high")
	require.NoError(t, err)
	inv := &brain.Investigation{Issue: "The app stopped writing its log"}

	t.Run("500 panic body", func(t *testing.T) {
		b.srv.ResetRequests()
		b.srv.Inject("POST /api/investigations", nannyapitest.Fault{Status: 500})
		defer b.srv.ClearFaults()
		ns := &noSleep{}
		e, err := New(Config{Client: b.cl, InvestigationID: id, Retry: api.Backoff{Initial: time.Second, Max: 4 * time.Second, Sleep: ns.sleep, Rand: noJitter}})
		require.NoError(t, err)
		_, err = e.Next(context.Background(), inv)
		require.ErrorContains(t, err, "NannyAPI failed internally on investigation "+id)
		require.ErrorContains(t, err, "TENSORZERO_API_URL")
		require.ErrorContains(t, err, "gave up after 4 attempts")
		require.Equal(t, 4, b.srv.Count("POST /api/investigations"))
		require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, ns.got())
	})

	t.Run("hang", func(t *testing.T) {
		b.srv.ResetRequests()
		b.srv.Inject("POST /api/investigations", nannyapitest.Fault{Hang: true})
		defer b.srv.ClearFaults()
		cl, err := api.New(api.Options{BaseURL: b.srv.URL, Tokens: api.StaticToken(b.reg.AccessToken), ChatTimeout: 50 * time.Millisecond})
		require.NoError(t, err)
		ns := &noSleep{}
		e, err := New(Config{Client: cl, InvestigationID: id, Retry: api.Backoff{Initial: time.Second, MaxAttempts: 3, Sleep: ns.sleep, Rand: noJitter}})
		require.NoError(t, err)
		_, err = e.Next(context.Background(), inv)
		require.ErrorContains(t, err, "no answer within 50ms")
		require.ErrorContains(t, err, "gave up after 3 attempts")
		require.Equal(t, 3, b.srv.Count("POST /api/investigations"))
		require.Len(t, ns.got(), 2)
	})

	t.Run("not past the deadline", func(t *testing.T) {
		b.srv.ResetRequests()
		b.srv.Inject("POST /api/investigations", nannyapitest.Fault{Status: 503, Body: `{"error":"busy"}`})
		defer b.srv.ClearFaults()
		ns := &noSleep{}
		now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
		e, err := New(Config{Client: b.cl, InvestigationID: id, Now: func() time.Time { return now },
			Retry: api.Backoff{Initial: 10 * time.Second, Sleep: ns.sleep, Rand: noJitter}})
		require.NoError(t, err)
		_, err = e.Next(context.Background(), &brain.Investigation{Issue: inv.Issue, Limits: brain.Limits{Deadline: now.Add(5 * time.Second)}})
		require.ErrorContains(t, err, "not retried: the investigation's time ends before the next attempt (in 10s)")
		require.Equal(t, 1, b.srv.Count("POST /api/investigations"))
		require.Empty(t, ns.got())
	})

	t.Run("recovers", func(t *testing.T) {
		b.srv.ResetRequests()
		b.model.Push(openaitest.Reply(`{"response_type":"resolution","root_cause":"x","resolution_plan":"y","confidence":"Low"}`))
		b.srv.Inject("POST /api/investigations", nannyapitest.Fault{Status: 502, Times: 2})
		defer b.srv.ClearFaults()
		ns := &noSleep{}
		e, err := New(Config{Client: b.cl, InvestigationID: id, Retry: api.Backoff{Sleep: ns.sleep}})
		require.NoError(t, err)
		got, err := e.Next(context.Background(), inv)
		require.NoError(t, err)
		require.Contains(t, got, `"root_cause":"x"`)
		require.Equal(t, 3, b.srv.Count("POST /api/investigations"))
		require.Len(t, ns.got(), 2)
	})
}

// TestTensorZeroErrors: the backend's 400s about its model service are
// explained, and only an upstream 429/5xx is retried.
func TestTensorZeroErrors(t *testing.T) {
	dead := openaitest.Closed(t)
	srv := nannyapitest.New(t, nannyapitest.Options{TensorZeroURL: dead, TensorZeroKey: "k"})
	u := srv.CreateUser("o@example.com")
	reg := srv.RegisterAgent(u, "h")
	id, err := srv.CreateInvestigation(reg.AgentID, "The app stopped writing its log", "high")
	require.NoError(t, err)
	cl, err := api.New(api.Options{BaseURL: srv.URL, Tokens: api.StaticToken(reg.AccessToken)})
	require.NoError(t, err)
	ns := &noSleep{}
	e, err := New(Config{Client: cl, InvestigationID: id, Retry: api.Backoff{Sleep: ns.sleep}})
	require.NoError(t, err)
	_, err = e.Next(context.Background(), &brain.Investigation{Issue: "The app stopped writing its log"})
	require.ErrorContains(t, err, "NannyAPI could not get an answer from its model service for investigation "+id+": TensorZero error: failed to call TensorZero API")
	require.ErrorContains(t, err, "connection refused")
	require.Equal(t, 1, srv.Count("POST /api/investigations"), "a refused upstream is not retried")

	// An upstream 503 comes back as a 400 too, and is worth retrying.
	srv.Inject("POST /api/investigations", nannyapitest.Fault{Status: 400, Body: `{"error":"TensorZero error: TensorZero API error: 503 {\"error\":\"overloaded\"}"}`})
	srv.ResetRequests()
	_, err = e.Next(context.Background(), &brain.Investigation{Issue: "The app stopped writing its log"})
	require.ErrorContains(t, err, "gave up after 4 attempts")
	require.Equal(t, 4, srv.Count("POST /api/investigations"))

	// A backend without TensorZero settings panics: a clear 500 error.
	bare := nannyapitest.New(t, nannyapitest.Options{})
	u2 := bare.CreateUser("p@example.com")
	reg2 := bare.RegisterAgent(u2, "h")
	id2, err := bare.CreateInvestigation(reg2.AgentID, "The app stopped writing its log", "high")
	require.NoError(t, err)
	cl2, err := api.New(api.Options{BaseURL: bare.URL, Tokens: api.StaticToken(reg2.AccessToken)})
	require.NoError(t, err)
	e2, err := New(Config{Client: cl2, InvestigationID: id2, Retry: api.Backoff{MaxAttempts: 2, Sleep: ns.sleep}})
	require.NoError(t, err)
	_, err = e2.Next(context.Background(), &brain.Investigation{Issue: "The app stopped writing its log"})
	require.ErrorContains(t, err, "NannyAPI failed internally")
	require.ErrorContains(t, err, "Something went wrong while processing your request.")
	require.Equal(t, 2, bare.Count("POST /api/investigations"))

	// Someone else's investigation.
	other := bare.RegisterAgent(bare.CreateUser("q@example.com"), "h2")
	e3, err := New(Config{Client: cl2, InvestigationID: mustCreate(t, bare, other.AgentID)})
	require.NoError(t, err)
	_, err = e3.Next(context.Background(), &brain.Investigation{Issue: "The app stopped writing its log"})
	require.ErrorContains(t, err, "does not belong to this agent's owner")
	e4, err := New(Config{Client: cl2, InvestigationID: "nosuchinvestig0"})
	require.NoError(t, err)
	_, err = e4.Next(context.Background(), &brain.Investigation{Issue: "The app stopped writing its log"})
	require.ErrorContains(t, err, "NannyAPI does not know investigation nosuchinvestig0")
}

func mustCreate(t *testing.T, s *nannyapitest.Server, agentID string) string {
	id, err := s.CreateInvestigation(agentID, "Another user's investigation", "low")
	require.NoError(t, err)
	return id
}

func TestOutcome(t *testing.T) {
	resolved := &diagnose.Report{EndedBy: "resolution", Resolution: &diagnose.Resolution{RootCause: "full disk", ResolutionPlan: "1. free it", Confidence: "High"}}
	require.Equal(t, api.InvestigationUpdate{Status: "completed", ResolutionPlan: "Root cause (confidence High): full disk\n\n1. free it"}, Outcome(resolved, nil))

	provisional := &diagnose.Report{EndedBy: "round limit (8) reached", Resolution: &diagnose.Resolution{RootCause: "Not determined", Confidence: "Low", Provisional: true}}
	require.Equal(t, api.InvestigationUpdate{Status: "failed",
		ResolutionPlan: "The investigation ended without a resolution (round limit (8) reached).\n\nBest so far:\nRoot cause (confidence Low): Not determined\n\nNo resolution plan was given."},
		Outcome(provisional, nil))

	require.Equal(t, api.InvestigationUpdate{Status: "failed", ResolutionPlan: "The agent could not finish the investigation: agent shutting down"},
		Outcome(provisional, errors.New("agent shutting down")))
	require.Equal(t, "failed", Outcome(nil, nil).Status)

	long := &diagnose.Report{Resolution: &diagnose.Resolution{ResolutionPlan: strings.Repeat("ü", 6000)}}
	got := Outcome(long, nil).ResolutionPlan
	require.Equal(t, api.MaxResolutionPlan, utf8.RuneCountInString(got))
	require.True(t, strings.HasSuffix(got, "\n…[cut: 4962 of 6000 characters shown]"), got[len(got)-60:])
	require.True(t, strings.HasPrefix(got, "üüü"))
	exact := strings.Repeat("a", api.MaxResolutionPlan)
	require.Equal(t, exact, FitPlan(exact))
}

func TestNewChecks(t *testing.T) {
	_, err := New(Config{})
	require.ErrorContains(t, err, "no backend client")
	b := newBackend(t)
	_, err = New(Config{Client: b.cl})
	require.ErrorContains(t, err, "register first")
	e, err := New(Config{Client: b.cl, InvestigationID: "x"})
	require.NoError(t, err)
	require.Equal(t, "x", e.InvestigationID())
}
