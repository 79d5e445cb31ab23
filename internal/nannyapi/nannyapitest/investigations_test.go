package nannyapitest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/stretchr/testify/require"
)

const (
	diagnostic = `{"response_type": "diagnostic", "reasoning": "check disk", "commands": ["df -h", "uptime"], "ebpf_programs": [{"name": "disk_io", "type": "tracepoint", "target": "block:block_rq_complete", "duration": 5}]}`
	resolution = `{"response_type": "resolution", "root_cause": "The /var partition is full", "resolution_plan": "1. Remove old logs\n2. Enable logrotate", "confidence": "High"}`
)

// withModel is a server whose TensorZero gateway forwards to a scripted
// model server.
func withModel(t *testing.T, opts Options, steps ...openaitest.Step) (*Server, *TensorZero, *openaitest.Server) {
	model := openaitest.New(t, steps...)
	tz := NewTensorZero(t, model.BaseURL())
	opts.TensorZeroURL = tz.URL
	opts.TensorZeroKey = "tz-key"
	return New(t, opts), tz, model
}

func chatBody(invID string, msgs ...string) string {
	type m struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	var list []m
	for i, c := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		list = append(list, m{role, c})
	}
	b, _ := json.Marshal(map[string]any{"model": "", "messages": list, "investigation_id": invID})
	return string(b)
}

var rfc3339 = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`

func TestInvestigationCreate(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	other := s.RegisterAgent(s.CreateUser("o@example.com"), "h2")

	st, body := call(t, s, "POST", "/api/investigations", u.Token, `{"agent_id":"`+reg.AgentID+`","issue":"  Disk is full on /var partition  ","priority":"high"}`)
	require.Equal(t, 201, st, body)
	require.Regexp(t, `^\{"id":"[a-z0-9]{15}","user_id":"`+u.ID+`","agent_id":"`+reg.AgentID+`","episode_id":"","user_prompt":"Disk is full on /var partition","priority":"high","status":"pending","resolution_plan":"","initiated_at":"`+rfc3339+`","completed_at":null,"created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z","metadata":\{"initiated_by":"user"\},"inference_count":0\}\n$`, body)

	// An agent creates one for itself (CLI investigations).
	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, `{"agent_id":"`+reg.AgentID+`","issue":"High load average since noon"}`)
	require.Equal(t, 201, st, body)
	created := decode(t, body)
	require.Equal(t, "medium", created["priority"])
	require.Equal(t, map[string]any{"initiated_by": "agent"}, created["metadata"])
	rec, ok := s.Record(Investigations, created["id"].(string))
	require.True(t, ok)
	require.Equal(t, map[string]any{"initiated_by": "agent"}, rec["metadata"])

	for _, tc := range []struct {
		token, body string
		status      int
		want        string
	}{
		{u.Token, `{"agent_id":"` + reg.AgentID + `","issue":"short"}`, 400, `{"error":"issue must be at least 10 characters long"}`},
		{u.Token, `{"agent_id":"` + reg.AgentID + `","issue":"   short    "}`, 400, `{"error":"issue must be at least 10 characters long"}`},
		{u.Token, `{"agent_id":"` + reg.AgentID + `"}`, 400, `{"error":"agent_id and issue are required"}`},
		{u.Token, `{"agent_id":"` + other.AgentID + `","issue":"Disk is full on /var partition"}`, 400, `{"error":"unauthorized: agent does not belong to user"}`},
		{u.Token, `{"agent_id":"nosuchagent0000","issue":"Disk is full on /var partition"}`, 400, `{"error":"agent not found: sql: no rows in result set"}`},
		{u.Token, `{"agent_id":"` + reg.AgentID + `","issue":"` + strings.Repeat("x", 2001) + `"}`, 400, `{"error":"failed to save investigation: user_prompt: Must be no more than 2000 character(s).."}`},
		{u.Token, `{nope`, 400, `{"error":"invalid JSON"}`},
		{u.Token, `{"agent_id":5,"issue":"Disk is full on /var partition"}`, 400, `{"error":"invalid request format"}`},
		{"", `{"agent_id":"` + reg.AgentID + `","issue":"Disk is full on /var partition"}`, 401, `{"error":"authentication required"}`},
	} {
		st, body := call(t, s, "POST", "/api/investigations", tc.token, tc.body)
		exact(t, tc.status, tc.want, st, body)
	}
	st, body = call(t, s, "DELETE", "/api/investigations", u.Token, "")
	exact(t, 405, `{"error":"method not allowed"}`, st, body)
}

func TestInvestigationProxy(t *testing.T) {
	s, tz, model := withModel(t, Options{}, openaitest.Reply(diagnostic), openaitest.Reply(resolution))
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	invID, err := s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)

	sse := connect(t, s, reg.AccessToken)
	code, _ := subscribe(t, s, reg.AccessToken, sse.id, allTopics...)
	require.Equal(t, 204, code)

	first := "SYSTEM INFORMATION:\n- Hostname: h1\n\nISSUE DESCRIPTION:\nDisk is full on /var partition"
	st, body := call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, first))
	require.Equal(t, 200, st, body)
	require.Regexp(t, `^\{"id":"chatcmpl-openaitest","episode_id":"[0-9a-f-]{36}","choices":\[\{"index":0,"finish_reason":"stop","message":\{"role":"assistant","content":"[^\n]*","tool_calls":\[\]\}\}\],"created":\d+,"model":"tensorzero::function_name::diagnose_and_heal_application","system_fingerprint":"","service_tier":null,"object":"chat.completion","usage":\{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2\}\}\n$`, body)
	r1 := decode(t, body)
	episode := r1["episode_id"].(string)
	require.Equal(t, diagnostic, r1["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"])

	_, event, data, err := ReadEvent(sse.r)
	require.NoError(t, err)
	require.Equal(t, "investigations", event)
	require.Contains(t, string(data), `"episode_id":"`+episode+`"`)
	require.Contains(t, string(data), `"status":"in_progress"`)
	require.True(t, strings.HasSuffix(string(data), `"action":"update"}`))

	st, body = call(t, s, "GET", "/api/investigations?id="+invID, u.Token, "")
	require.Equal(t, 200, st)
	require.Regexp(t, `"episode_id":"`+episode+`","user_prompt":"Disk is full on /var partition","priority":"high","status":"in_progress","resolution_plan":"","initiated_at":"`+rfc3339+`","completed_at":null,"created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z","metadata":\{\},"inference_count":0\}`, body)

	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, first, diagnostic, `{"command_results":[]}`))
	require.Equal(t, 200, st, body)
	_, _, data, err = ReadEvent(sse.r)
	require.NoError(t, err)
	require.Contains(t, string(data), `"status":"completed"`)
	require.Contains(t, string(data), `"resolution_plan":"1. Remove old logs\n2. Enable logrotate"`)
	rec, _ := s.Record(Investigations, invID)
	require.Equal(t, "completed", rec["status"])
	require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$`, rec["completed_at"])

	calls := tz.Calls()
	require.Len(t, calls, 2)
	require.Equal(t, TensorZeroModel, calls[0].Model)
	require.Equal(t, "", calls[0].EpisodeID)
	require.Len(t, calls[0].Messages, 1)
	require.Equal(t, "Bearer tz-key", calls[0].Authorization)
	require.Equal(t, episode, calls[1].EpisodeID)
	require.Len(t, calls[1].Messages, 3)
	reqs := model.Requests()
	require.Len(t, reqs, 2)
	require.Equal(t, first, reqs[0].Messages[0].Content)
	require.Equal(t, "assistant", reqs[1].Messages[1].Role)
	require.Equal(t, diagnostic, reqs[1].Messages[1].Content)

	st, body = call(t, s, "GET", "/api/investigations", u.Token, "")
	require.Equal(t, 200, st)
	require.Regexp(t, `^\[\{"id":"`+invID+`","agent_id":"`+reg.AgentID+`","user_prompt":"Disk is full on /var partition","priority":"high","status":"completed","initiated_at":"`+rfc3339+`","completed_at":"`+rfc3339+`","created_at":"0001-01-01T00:00:00Z","inference_count":0\}\]\n$`, body)
	st, body = call(t, s, "GET", "/api/investigations/"+invID, u.Token, "")
	exact(t, 404, notFoundBody, st, body)
}

func TestInvestigationProxyStatuses(t *testing.T) {
	fenced := "```json\n" + resolution + "\n```"
	s, _, _ := withModel(t, Options{}, openaitest.Reply(fenced), openaitest.Reply(`{"response_type":"resolution","resolution_plan":"`+strings.Repeat("p", 5001)+`"}`))
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	invID, err := s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)

	// A fenced resolution is not recognised: the investigation stays
	// in progress.
	st, body := call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, "issue text here"))
	require.Equal(t, 200, st, body)
	rec, _ := s.Record(Investigations, invID)
	require.Equal(t, "in_progress", rec["status"])
	episode := rec["episode_id"].(string)

	// A plan over 5000 characters fails the save: 200 all the same,
	// nothing stored.
	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, "issue text here"))
	require.Equal(t, 200, st, body)
	rec, _ = s.Record(Investigations, invID)
	require.Equal(t, "in_progress", rec["status"])
	require.Equal(t, "", rec["resolution_plan"])
	require.Equal(t, episode, rec["episode_id"])

	// The agent may PATCH it itself.
	st, body = call(t, s, "PATCH", "/api/investigations?id="+invID, reg.AccessToken, `{"status":"completed","resolution_plan":"set by agent PATCH"}`)
	exact(t, 200, `{"success":"true"}`, st, body)
	rec, _ = s.Record(Investigations, invID)
	require.Equal(t, "completed", rec["status"])
	require.Equal(t, "set by agent PATCH", rec["resolution_plan"])
	require.NotEmpty(t, rec["completed_at"])

	st, body = call(t, s, "PATCH", "/api/investigations", reg.AccessToken, `{"status":"failed"}`)
	exact(t, 400, `{"error":"id parameter required"}`, st, body)
	st, body = call(t, s, "PATCH", "/api/investigations?id=nosuchinvest000", reg.AccessToken, `{"status":"failed"}`)
	exact(t, 400, `{"error":"investigation not found: sql: no rows in result set"}`, st, body)
	st, body = call(t, s, "PATCH", "/api/investigations?id="+invID, reg.AccessToken, `{"status":1}`)
	exact(t, 400, `{"error":"invalid request"}`, st, body)
	other := s.CreateUser("o@example.com")
	st, body = call(t, s, "PATCH", "/api/investigations?id="+invID, other.Token, `{"status":"failed"}`)
	exact(t, 400, `{"error":"unauthorized: investigation does not belong to user"}`, st, body)
	st, body = call(t, s, "GET", "/api/investigations?id="+invID, other.Token, "")
	exact(t, 404, `{"error":"unauthorized: investigation does not belong to user"}`, st, body)
	st, body = call(t, s, "GET", "/api/investigations?id=nosuchinvest000", u.Token, "")
	exact(t, 404, `{"error":"investigation not found: sql: no rows in result set"}`, st, body)
	st, body = call(t, s, "POST", "/api/investigations", other.Token, chatBody(invID, "x"))
	exact(t, 403, `{"error":"unauthorized"}`, st, body)
	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody("nosuchinvest000", "x"))
	exact(t, 404, `{"error":"investigation not found"}`, st, body)
	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, `{"investigation_id":"`+invID+`","messages":"not a list"}`)
	exact(t, 400, `{"error":"invalid TensorZero request format"}`, st, body)
	st, body = call(t, s, "GET", "/api/investigations", other.Token, "")
	exact(t, 200, `null`, st, body)
}

func TestInvestigationProxyBackendConfiguration(t *testing.T) {
	// TENSORZERO_* unset: the proxy panics.
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	invID, err := s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	st, body := call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, "x"))
	exact(t, 500, panicBody, st, body)

	// Nothing listening at the TensorZero URL.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	s = New(t, Options{TensorZeroURL: deadURL, TensorZeroKey: "k"})
	u = s.CreateUser("u@example.com")
	reg = s.RegisterAgent(u, "h1")
	invID, err = s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, "x"))
	host := strings.TrimPrefix(deadURL, "http://")
	exact(t, 400, `{"error":"TensorZero error: failed to call TensorZero API: Post \"`+deadURL+`/openai/v1/chat/completions\": dial tcp `+host+`: connect: connection refused"}`, st, body)

	// The model server answers an error.
	s, _, _ = withModel(t, Options{}, openaitest.Status(503, `{"error":"overloaded"}`))
	u = s.CreateUser("u@example.com")
	reg = s.RegisterAgent(u, "h1")
	invID, err = s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, "x"))
	exact(t, 400, `{"error":"TensorZero error: TensorZero API error: 503 {\"error\":\"overloaded\"}"}`, st, body)

	// Without CLICKHOUSE_URL an investigation with an episode panics on
	// GET and on the next turn.
	s, _, _ = withModel(t, Options{NoClickHouse: true}, openaitest.Reply(diagnostic))
	u = s.CreateUser("u@example.com")
	reg = s.RegisterAgent(u, "h1")
	invID, err = s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	st, _ = call(t, s, "GET", "/api/investigations?id="+invID, u.Token, "")
	require.Equal(t, 200, st)
	st, _ = call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, "x"))
	require.Equal(t, 200, st)
	st, body = call(t, s, "GET", "/api/investigations?id="+invID, u.Token, "")
	exact(t, 500, panicBody, st, body)
	st, body = call(t, s, "POST", "/api/investigations", reg.AccessToken, chatBody(invID, "x"))
	exact(t, 500, panicBody, st, body)
}

func TestRecordsAPI(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	other := s.RegisterAgent(s.CreateUser("o@example.com"), "h2")
	var pending []string
	for i := range 5 {
		id, err := s.CreateInvestigation(reg.AgentID, "Issue number "+string(rune('a'+i))+" on this host", "")
		require.NoError(t, err)
		pending = append(pending, id)
	}
	require.NoError(t, s.UpdateRecord(Investigations, pending[1], map[string]any{"status": "completed", "completed_at": time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)}))
	_, err := s.CreateInvestigation(other.AgentID, "Someone else's investigation", "")
	require.NoError(t, err)
	p1, err := s.CreatePatchOperation(reg.AgentID, PatchOperation{})
	require.NoError(t, err)
	_, err = s.CreatePatchOperation(reg.AgentID, PatchOperation{Mode: "apply"})
	require.NoError(t, err)
	require.NoError(t, s.UpdateRecord(PatchOperations, p1, map[string]any{"status": "completed", "exit_code": 0}))
	r1, err := s.CreateRebootOperation(reg.AgentID, "kernel update", 0)
	require.NoError(t, err)

	list := func(token, path string) (int, map[string]any) {
		st, body := call(t, s, "GET", path, token, "")
		if st != 200 {
			return st, decode(t, body)
		}
		require.Regexp(t, `^\{"page":\d+,"perPage":\d+,"totalItems":-?\d+,"totalPages":-?\d+,"items":\[`, body)
		return st, decode(t, body)
	}
	ids := func(m map[string]any) []string {
		var out []string
		for _, it := range m["items"].([]any) {
			out = append(out, it.(map[string]any)["id"].(string))
		}
		return out
	}

	st, m := list(reg.AccessToken, "/api/collections/investigations/records?filter=status%3D'pending'")
	require.Equal(t, 200, st)
	want := []string{pending[0], pending[2], pending[3], pending[4]}
	require.Equal(t, want, ids(m))
	require.EqualValues(t, 1, m["page"])
	require.EqualValues(t, 30, m["perPage"])
	require.EqualValues(t, 4, m["totalItems"])
	require.EqualValues(t, 1, m["totalPages"])
	rec := m["items"].([]any)[0].(map[string]any)
	require.Equal(t, "investigations", rec["collectionName"])
	require.Equal(t, "pbc_59972043", rec["collectionId"])
	require.Equal(t, map[string]any{"initiated_by": "user"}, rec["metadata"])

	_, m = list(reg.AccessToken, `/api/collections/investigations/records?filter=(status="pending"%20%26%26%20id!="`+pending[0]+`")%20||%20status~"COMPL"&sort=-id&perPage=2&page=2`)
	all := []string{pending[1], pending[2], pending[3], pending[4]}
	// sorted by id descending, second page of two
	sorted := append([]string(nil), all...)
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j] > sorted[j-1]; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	require.Equal(t, sorted[2:], ids(m))
	require.EqualValues(t, 4, m["totalItems"])
	require.EqualValues(t, 2, m["totalPages"])

	_, m = list(reg.AccessToken, "/api/collections/investigations/records?filter=completed_at>'2026-01-01'")
	require.Equal(t, []string{pending[1]}, ids(m))
	_, m = list(reg.AccessToken, "/api/collections/investigations/records?filter=completed_at=null")
	require.Equal(t, want, ids(m))
	_, m = list(reg.AccessToken, "/api/collections/patch_operations/records?filter=status%3D'pending'")
	require.Len(t, ids(m), 1)
	_, m = list(reg.AccessToken, "/api/collections/reboot_operations/records?filter=status%3D'sent'")
	require.Equal(t, []string{r1}, ids(m))
	require.EqualValues(t, 300, m["items"].([]any)[0].(map[string]any)["timeout_seconds"])
	_, m = list(reg.AccessToken, "/api/collections/reboot_operations/records?filter=timeout_seconds>=300&skipTotal=1")
	require.Equal(t, []string{r1}, ids(m))
	require.EqualValues(t, -1, m["totalItems"])
	_, m = list(reg.AccessToken, "/api/collections/pbc_59972043/records?perPage=5000")
	require.EqualValues(t, 1000, m["perPage"])
	require.Len(t, ids(m), 5)

	// The user sees its agent's rows; a guest (or an expired token)
	// sees none, with a 200.
	_, m = list(u.Token, "/api/collections/investigations/records")
	require.Len(t, ids(m), 5)
	_, m = list("", "/api/collections/investigations/records")
	require.Empty(t, ids(m))
	require.EqualValues(t, 0, m["totalItems"])
	require.EqualValues(t, 0, m["totalPages"])

	for _, q := range []string{
		"filter=status%3D", "filter=nosuchfield='x'", "filter=status?='x'", "filter=(status='x'",
		"filter=status='x", "sort=-created", "perPage=many", "page=x",
	} {
		st, body := call(t, s, "GET", "/api/collections/investigations/records?"+q, reg.AccessToken, "")
		exact(t, 400, `{"data":{},"message":"Something went wrong while processing your request.","status":400}`, st, body)
	}
	st, body := call(t, s, "GET", "/api/collections/nope/records", reg.AccessToken, "")
	exact(t, 404, `{"data":{},"message":"Missing collection context.","status":404}`, st, body)
}

func TestFaultsAndRecording(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")

	s.Inject("ingest-metrics", Fault{Status: 503, Times: 2})
	for range 2 {
		st, body := call(t, s, "POST", "/api/agent", reg.AccessToken, metricsBody)
		exact(t, 503, `{"data":{},"message":"Service Unavailable.","status":503}`, st, body)
	}
	st, _ := call(t, s, "POST", "/api/agent", reg.AccessToken, metricsBody)
	require.Equal(t, 200, st)
	a, _ := s.Agent(reg.AgentID)
	require.Equal(t, 1, a.MetricsCount)

	s.Inject("POST /api/investigations", Fault{Status: 500, Body: `{"error":"boom"}`})
	st, body := call(t, s, "POST", "/api/investigations", u.Token, `{}`)
	require.Equal(t, 500, st)
	require.Equal(t, `{"error":"boom"}`, body)
	s.Inject("POST /api/investigations", Fault{})

	s.Inject("*", Fault{Delay: 50 * time.Millisecond, Times: 1})
	start := time.Now()
	st, _ = call(t, s, "GET", "/api/health", "", "")
	require.Equal(t, 200, st)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)

	s.Inject("refresh", Fault{Reset: true, Times: 1})
	_, err := http.Post(s.URL+"/api/agent", "application/json", strings.NewReader(`{"action":"refresh","refresh_token":"`+reg.RefreshToken+`"}`))
	require.Error(t, err)

	s.Inject("GET /api/realtime", Fault{Hang: true})
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, "GET", s.URL+"/api/realtime", nil)
	_, err = http.DefaultClient.Do(req)
	require.ErrorIs(t, err, c.Err())
	s.ClearFaults()

	rs := s.RequestsFor("ingest-metrics")
	require.Len(t, rs, 3)
	require.Equal(t, []int{503, 503, 200}, []int{rs[0].Status, rs[1].Status, rs[2].Status})
	require.Equal(t, "Bearer "+reg.AccessToken, rs[2].Header.Get("Authorization"))
	require.Equal(t, "application/json", rs[2].Header.Get("Content-Type"))
	require.JSONEq(t, metricsBody, string(rs[2].Body))
	require.Equal(t, 3, s.Count("ingest-metrics"))
	require.Equal(t, 1, s.Count("refresh"))
	hung := s.RequestsFor("GET /api/realtime")
	require.Len(t, hung, 1)
	require.NoError(t, s.Wait(ctx(t), func() bool { return s.RequestsFor("GET /api/realtime")[0].Status == 0 }))
	s.ResetRequests()
	require.Empty(t, s.Requests())
	require.Zero(t, s.Count("ingest-metrics"))
}

func TestRecordingIsBounded(t *testing.T) {
	s := New(t, Options{MaxRecorded: 3})
	for range 5 {
		st, _ := call(t, s, "GET", "/api/health", "", "")
		require.Equal(t, 200, st)
	}
	require.Len(t, s.Requests(), 3)
	require.Equal(t, 5, s.Count("GET /api/health"))
	for _, r := range s.Requests() {
		require.Equal(t, 200, r.Status)
	}
	s.ResetRequests()
	st, _ := call(t, s, "GET", "/nope", "", "")
	require.Equal(t, 404, st)
	rs := s.Requests()
	require.Len(t, rs, 1)
	require.Equal(t, "/nope", rs[0].Path)
	require.Equal(t, 404, rs[0].Status)
	require.Equal(t, 0, s.Count("GET /api/health"))
}

var filterSeeds = []string{
	"status='pending'", `status = "sent" && agent_id != ''`, "(a=1 || b=2) && c~'x'",
	"timeout_seconds>=300", "completed_at=null", "status!~'x\\'y'", "((status='a'))", "",
	"status=", "&&", "(((", `"unterminated`,
}

// FuzzFilter: any filter either parses or is rejected; parsed ones
// evaluate without panicking.
func FuzzFilter(f *testing.F) {
	for _, s := range filterSeeds {
		f.Add(s)
	}
	c := newCollections()[RebootOperations]
	rec := map[string]any{
		"id": "abc", "status": "sent", "timeout_seconds": 300, "agent_id": "a", "completed_at": "",
		"reason": "kernel update", "exclusions": []string{"x"},
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseFilter(s, c)
		if err != nil {
			return
		}
		e.eval(rec)
	})
}
