package nannyapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain/openaitest"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

const (
	diagnosticReply = `{"response_type":"diagnostic","reasoning":"check disk","commands":["df -h","uptime"]}`
	resolutionReply = `{"response_type":"resolution","root_cause":"The /var partition is full","resolution_plan":"1. Remove old logs\n2. Enable logrotate","confidence":"High"}`
)

func TestInvestigationConversation(t *testing.T) {
	model := openaitest.New(t, openaitest.Reply(diagnosticReply), openaitest.Reply(resolutionReply))
	tz := nannyapitest.NewTensorZero(t, model.BaseURL())
	srv := nannyapitest.New(t, nannyapitest.Options{TensorZeroURL: tz.URL, TensorZeroKey: "k"})
	u := srv.CreateUser("u@example.com")
	reg := srv.RegisterAgent(u, "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)

	inv, err := c.CreateInvestigation(ctx, CreateInvestigationRequest{AgentID: reg.AgentID, Issue: "  Disk is full on /var partition "})
	require.NoError(t, err)
	require.Equal(t, "Disk is full on /var partition", inv.UserPrompt)
	require.Equal(t, "medium", inv.Priority)
	require.Equal(t, StatusPending, inv.Status)
	require.Equal(t, map[string]any{"initiated_by": "agent"}, inv.Metadata)
	require.Nil(t, inv.CompletedAt)
	require.WithinDuration(t, time.Now(), inv.InitiatedAt, 5*time.Second)
	require.JSONEq(t, `{"agent_id":"`+reg.AgentID+`","issue":"  Disk is full on /var partition "}`, string(srv.RequestsFor("POST /api/investigations")[0].Body))

	msgs := []ChatMessage{{"user", "SYSTEM INFORMATION:\n- Hostname: h1\n\nISSUE DESCRIPTION:\nDisk is full on /var partition"}}
	r1, err := c.Chat(ctx, ChatRequest{InvestigationID: inv.ID, Messages: msgs})
	require.NoError(t, err)
	content, err := r1.Content()
	require.NoError(t, err)
	require.Equal(t, diagnosticReply, content)
	require.Len(t, r1.EpisodeID, 36)
	chat := srv.RequestsFor("POST /api/investigations")[1]
	require.Equal(t, "application/json", chat.Header.Get("Accept"))
	require.JSONEq(t, `{"investigation_id":"`+inv.ID+`","model":"","messages":[{"role":"user","content":"SYSTEM INFORMATION:\n- Hostname: h1\n\nISSUE DESCRIPTION:\nDisk is full on /var partition"}]}`, string(chat.Body))

	got, err := c.GetInvestigation(ctx, inv.ID)
	require.NoError(t, err)
	require.Equal(t, StatusInProgress, got.Status)
	require.Equal(t, r1.EpisodeID, got.EpisodeID)
	require.Empty(t, got.Metadata)
	require.Equal(t, "id="+inv.ID, srv.RequestsFor("GET /api/investigations")[0].Query)

	msgs = append(msgs, ChatMessage{"assistant", content}, ChatMessage{"user", `{"command_results":[]}`})
	r2, err := c.Chat(ctx, ChatRequest{InvestigationID: inv.ID, Messages: msgs})
	require.NoError(t, err)
	content, _ = r2.Content()
	require.Equal(t, resolutionReply, content)
	require.Equal(t, r1.EpisodeID, tz.Calls()[1].EpisodeID)

	got, err = c.GetInvestigation(ctx, inv.ID)
	require.NoError(t, err)
	require.Equal(t, StatusCompleted, got.Status)
	require.Equal(t, "1. Remove old logs\n2. Enable logrotate", got.ResolutionPlan)
	require.NotNil(t, got.CompletedAt)

	list, err := c.ListInvestigations(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, inv.ID, list[0].ID)
	require.Equal(t, StatusCompleted, list[0].Status)

	// The agent closes an investigation itself; an over-long plan is
	// cut to the backend's limit instead of failing.
	inv2, err := c.CreateInvestigation(ctx, CreateInvestigationRequest{AgentID: reg.AgentID, Issue: "High load since noon today", Priority: "high"})
	require.NoError(t, err)
	require.NoError(t, c.UpdateInvestigation(ctx, inv2.ID, InvestigationUpdate{Status: StatusFailed, ResolutionPlan: strings.Repeat("p", 6000)}))
	got, err = c.GetInvestigation(ctx, inv2.ID)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, got.Status)
	require.Len(t, got.ResolutionPlan, 5000)
	require.NotNil(t, got.CompletedAt)
	patch := srv.RequestsFor("PATCH /api/investigations")[0]
	require.Equal(t, "id="+inv2.ID, patch.Query)

	// Errors, local and remote.
	_, err = c.CreateInvestigation(ctx, CreateInvestigationRequest{AgentID: reg.AgentID, Issue: "short"})
	require.ErrorContains(t, err, "at least 10 characters")
	require.Error(t, c.UpdateInvestigation(ctx, inv2.ID, InvestigationUpdate{ResolutionPlan: "x"}))
	_, err = c.GetInvestigation(ctx, "nosuchinvest000")
	e, _ := AsError(err)
	require.True(t, e.IsNotFound())
	require.Equal(t, "investigation not found: sql: no rows in result set", e.Message)
	_, err = c.Chat(ctx, ChatRequest{InvestigationID: "nosuchinvest000", Messages: msgs})
	e, _ = AsError(err)
	require.True(t, e.IsNotFound())
	_, err = c.Chat(ctx, ChatRequest{InvestigationID: inv.ID})
	require.ErrorContains(t, err, "no messages")

	// The model server fails: the proxy answers 400, not retryable.
	model.Push(openaitest.Status(503, `{"error":"overloaded"}`))
	_, err = c.Chat(ctx, ChatRequest{InvestigationID: inv.ID, Messages: msgs})
	e, _ = AsError(err)
	require.Equal(t, 400, e.Status)
	require.Equal(t, `TensorZero error: TensorZero API error: 503 {"error":"overloaded"}`, e.Message)
	require.False(t, Retryable(err))
}

func TestInvestigationUnconfiguredBackend(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)
	id, err := srv.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	_, err = c.Chat(ctx, ChatRequest{InvestigationID: id, Messages: []ChatMessage{{"user", "x"}}})
	e, ok := AsError(err)
	require.True(t, ok)
	require.True(t, e.IsServerError())
	require.True(t, e.Envelope)
	require.True(t, Retryable(err))

	list, err := c.ListInvestigations(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	other := newClient(t, srv, StaticToken(srv.RegisterAgent(srv.CreateUser("o@example.com"), "h2").AccessToken))
	list, err = other.ListInvestigations(ctx)
	require.NoError(t, err)
	require.Empty(t, list)
}

func TestRecords(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("u@example.com")
	reg := srv.RegisterAgent(u, "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)

	var want []string
	for i := range 450 {
		id, err := srv.CreateInvestigation(reg.AgentID, fmt.Sprintf("Investigation number %03d", i), "")
		require.NoError(t, err)
		if i%3 != 0 {
			want = append(want, id)
		} else {
			require.NoError(t, srv.UpdateRecord(nannyapitest.Investigations, id, map[string]any{"status": "completed"}))
		}
	}
	all, err := c.ListAll(ctx, CollectionInvestigations, "status='pending'", "")
	require.NoError(t, err)
	require.Len(t, all, len(want))
	for i, raw := range all {
		var rec InvestigationRecord
		require.NoError(t, DecodeRecord(raw, CollectionInvestigations, &rec))
		require.Equal(t, want[i], rec.ID)
	}
	lists := srv.RequestsFor("GET /api/collections/investigations/records")
	require.Len(t, lists, 2)
	require.Equal(t, "filter=status%3D%27pending%27&page=1&perPage=200", lists[0].Query)

	page, err := c.ListRecords(ctx, CollectionInvestigations, ListQuery{Filter: "status='pending'", Sort: "-user_prompt", PerPage: 2, SkipTotal: true})
	require.NoError(t, err)
	require.Equal(t, -1, page.TotalItems)
	require.Len(t, page.Items, 2)
	var first InvestigationRecord
	require.NoError(t, DecodeRecord(page.Items[0], CollectionInvestigations, &first))
	require.Equal(t, "Investigation number 449", first.UserPrompt)

	pid, err := srv.CreatePatchOperation(reg.AgentID, nannyapitest.PatchOperation{Exclusions: []string{"nginx", "mysql"}, LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.NoError(t, err)
	rid, err := srv.CreateRebootOperation(reg.AgentID, "kernel update", 120)
	require.NoError(t, err)
	patches, err := c.ListAll(ctx, CollectionPatchOperations, "status='pending'", "")
	require.NoError(t, err)
	require.Len(t, patches, 1)
	var p PatchOperationRecord
	require.NoError(t, DecodeRecord(patches[0], CollectionPatchOperations, &p))
	require.Equal(t, PatchOperationRecord{
		ID: pid, CollectionID: "pbc_2550880806", CollectionName: CollectionPatchOperations, AgentID: reg.AgentID,
		UserID: u.ID, Mode: "dry-run", Status: "pending", ScriptID: nannyapitest.DefaultScriptID,
		ScriptURL: nannyapitest.DefaultScriptURL, Exclusions: []string{"nginx", "mysql"}, LXCID: "rhgs96k78q43f30", VMID: "100",
	}, p)
	reboots, err := c.ListAll(ctx, CollectionRebootOperations, "status='sent'", "")
	require.NoError(t, err)
	var r RebootOperationRecord
	require.NoError(t, DecodeRecord(reboots[0], CollectionRebootOperations, &r))
	require.Equal(t, rid, r.ID)
	require.Equal(t, 120, r.TimeoutSeconds)
	require.Equal(t, "kernel update", r.Reason)
	require.WithinDuration(t, time.Now(), r.RequestedAt.Time, 5*time.Second)
	require.True(t, r.AcknowledgedAt.IsZero())

	_, err = c.ListRecords(ctx, CollectionInvestigations, ListQuery{Sort: "-created"})
	e, _ := AsError(err)
	require.Equal(t, 400, e.Status)
	require.True(t, e.Envelope)
	_, err = c.ListRecords(ctx, "a/b", ListQuery{})
	require.Error(t, err)
	_, err = c.ListRecords(ctx, "nope", ListQuery{})
	e, _ = AsError(err)
	require.True(t, e.IsNotFound())
	require.Equal(t, "Missing collection context.", e.Message)

	// An expired token reads as a guest: an empty page, not a 401.
	srv.ExpireAccessTokens()
	page, err = c.ListRecords(ctx, CollectionInvestigations, ListQuery{})
	require.NoError(t, err)
	require.Empty(t, page.Items)
}

func TestDateTime(t *testing.T) {
	var d DateTime
	require.NoError(t, json.Unmarshal([]byte(`"2026-11-26 00:51:01.776Z"`), &d))
	require.Equal(t, time.Date(2026, 11, 26, 0, 51, 1, 776e6, time.UTC), d.Time)
	b, err := json.Marshal(d)
	require.NoError(t, err)
	require.Equal(t, `"2026-11-26 00:51:01.776Z"`, string(b))
	require.NoError(t, json.Unmarshal([]byte(`"2026-11-26T00:51:01.776782463Z"`), &d))
	require.Equal(t, 776782463, d.Nanosecond())
	for _, zero := range []string{`""`, `null`} {
		require.NoError(t, json.Unmarshal([]byte(zero), &d))
		require.True(t, d.IsZero())
	}
	b, _ = json.Marshal(d)
	require.Equal(t, `""`, string(b))
	require.Error(t, json.Unmarshal([]byte(`"yesterday"`), &d))
	require.Error(t, json.Unmarshal([]byte(`5`), &d))
}
