package nannyapitest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// rebootEvent reads the next realtime event of the stream, which must be
// a reboot_operations one, and returns its action and record.
func rebootEvent(t *testing.T, st *stream) (string, map[string]any) {
	t.Helper()
	_, event, data, err := ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, RebootOperations, event)
	var m struct {
		Record map[string]any `json:"record"`
		Action string         `json:"action"`
	}
	require.NoError(t, json.Unmarshal(data, &m), string(data))
	return m.Action, m.Record
}

// rebootFixture is a user with two agents, the first one subscribed.
type rebootFixture struct {
	s     *Server
	u     *User
	reg   Registration
	other Registration // the same user's second agent
	st    *stream
}

func newRebootFixture(t *testing.T) *rebootFixture {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	f := &rebootFixture{s: s, u: u, reg: s.RegisterAgent(u, "h1"), other: s.RegisterAgent(u, "h2")}
	f.st = connect(t, s, f.reg.AccessToken)
	code, body := subscribe(t, s, f.reg.AccessToken, f.st.id, allTopics...)
	require.Equal(t, 204, code, body)
	return f
}

// create asks for a reboot of the first agent as its owner.
func (f *rebootFixture) create(t *testing.T, body string) string {
	t.Helper()
	code, resp := call(t, f.s, "POST", "/api/reboot", f.u.Token, body)
	require.Equal(t, 200, code, resp)
	id := decode(t, resp)["reboot_id"].(string)
	exact(t, 200, `{"message":"Reboot command sent. Agent will receive via realtime subscription.","reboot_id":"`+id+`","status":"sent","success":true}`, code, resp)
	return id
}

func TestRebootCreate(t *testing.T) {
	f := newRebootFixture(t)
	s := f.s
	stranger := s.CreateUser("x@example.com")

	for _, c := range []struct {
		token, body string
		status      int
		want        string
	}{
		{f.reg.AccessToken, `{"agent_id":"` + f.reg.AgentID + `"}`, 403, `{"error":"agents cannot initiate reboots"}`},
		{"", `{"agent_id":"` + f.reg.AgentID + `"}`, 401, `{"error":"authentication required"}`},
		{f.u.Token, `{"agent_id":`, 400, `{"error":"invalid request body"}`},
		{f.u.Token, `{"agent_id":"x","timeout_seconds":"120"}`, 400, `{"error":"invalid request body"}`},
		{f.u.Token, `{}`, 400, `{"error":"agent_id is required"}`},
		{f.u.Token, `{"agent_id":"aaaaaaaaaaaaaaa"}`, 400, `{"error":"agent not found: sql: no rows in result set"}`},
		{stranger.Token, `{"agent_id":"` + f.reg.AgentID + `"}`, 403, `{"error":"unauthorized: agent does not belong to user"}`},
		{f.u.Token, `{"agent_id":"` + f.reg.AgentID + `","lxc_id":"rhgs96k78q43f30"}`, 400, `{"error":"lxc container not found: sql: no rows in result set"}`},
	} {
		code, body := call(t, s, "POST", "/api/reboot", c.token, c.body)
		exact(t, c.status, c.want, code, body)
	}
	require.Empty(t, s.Records(RebootOperations), "refused requests create nothing")
	require.Empty(t, s.PendingReboot(f.reg.AgentID))

	id := f.create(t, `{"agent_id":"`+f.reg.AgentID+`","reason":"kernel update","timeout_seconds":120}`)
	require.Regexp(t, pbIDRe, id)
	rec, ok := s.Record(RebootOperations, id)
	require.True(t, ok)
	requested := rec["requested_at"].(string)
	require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$`, requested)
	_, event, data, err := ReadEvent(f.st.r)
	require.NoError(t, err)
	require.Equal(t, RebootOperations, event)
	require.Equal(t, `{"record":{"acknowledged_at":"","agent_id":"`+f.reg.AgentID+`","collectionId":"pbc_3109392152","collectionName":"reboot_operations","completed_at":"","error_message":"","id":"`+id+`","lxc_id":"","reason":"kernel update","requested_at":"`+requested+`","status":"sent","timeout_seconds":120,"user_id":"`+f.u.ID+`","vmid":""},"action":"create"}`, string(data))
	require.Equal(t, id, s.PendingReboot(f.reg.AgentID))

	code, body := call(t, s, "POST", "/api/reboot", f.u.Token, `{"agent_id":"`+f.reg.AgentID+`"}`)
	exact(t, 409, `{"error":"agent already has a pending reboot"}`, code, body)
	_, err = s.CreateRebootOperation(f.reg.AgentID, "again", 0)
	require.EqualError(t, err, "agent already has a pending reboot")

	// Another agent of the same user is free; the default timeout is 300.
	id2 := f.create(t, `{"agent_id":"`+f.other.AgentID+`"}`)
	rec2, _ := s.Record(RebootOperations, id2)
	require.Equal(t, 300, rec2["timeout_seconds"])
	require.Equal(t, "", rec2["reason"])
	require.Equal(t, id2, s.PendingReboot(f.other.AgentID))
	require.Len(t, s.Records(RebootOperations), 2)

	// A container's reboot names it and its vmid.
	third := s.RegisterAgent(f.u, "pve1")
	id3, err := s.CreateReboot(third.AgentID, RebootOperation{Reason: "ct", LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.NoError(t, err)
	rec3, _ := s.Record(RebootOperations, id3)
	require.Equal(t, "rhgs96k78q43f30", rec3["lxc_id"])
	require.Equal(t, "100", rec3["vmid"])
	_, err = s.CreateReboot("aaaaaaaaaaaaaaa", RebootOperation{})
	require.EqualError(t, err, "agent not found: sql: no rows in result set")
}

func TestRebootAcknowledge(t *testing.T) {
	f := newRebootFixture(t)
	s := f.s
	id := f.create(t, `{"agent_id":"`+f.reg.AgentID+`","reason":"kernel update","timeout_seconds":120}`)
	action, _ := rebootEvent(t, f.st)
	require.Equal(t, "create", action)
	path := "/api/reboot/" + id + "/acknowledge"

	for _, c := range []struct {
		token, path string
		status      int
		want        string
	}{
		{"", path, 401, `{"error":"authentication required"}`},
		{f.u.Token, path, 403, `{"error":"only agents can acknowledge reboots"}`},
		{f.other.AccessToken, path, 403, `{"error":"not your reboot operation"}`},
		{f.reg.AccessToken, "/api/reboot/aaaaaaaaaaaaaaa/acknowledge", 404, `{"error":"reboot operation not found"}`},
		{f.reg.AccessToken, "/api/reboot/" + id + "/fail", 404, notFoundBody},
	} {
		code, body := call(t, s, "POST", c.path, c.token, "")
		exact(t, c.status, c.want, code, body)
	}
	rec, _ := s.Record(RebootOperations, id)
	require.Equal(t, "sent", rec["status"], "refused acknowledgements change nothing")
	require.Equal(t, "", rec["acknowledged_at"])

	before := s.Now().UTC().Truncate(time.Millisecond)
	code, body := call(t, s, "POST", path, f.reg.AccessToken, "")
	exact(t, 200, `{"success":true,"message":"Reboot acknowledged. Agent should proceed with reboot."}`, code, body)
	action, got := rebootEvent(t, f.st)
	require.Equal(t, "update", action)
	require.Equal(t, "rebooting", got["status"])
	acked := parsePB(got["acknowledged_at"])
	require.False(t, acked.Before(before), "acknowledged_at %v is before the request", acked)
	require.False(t, acked.After(s.Now()))
	rec, _ = s.Record(RebootOperations, id)
	require.Equal(t, got["acknowledged_at"], rec["acknowledged_at"])
	require.Equal(t, "", rec["completed_at"])
	require.Equal(t, id, s.PendingReboot(f.reg.AgentID), "acknowledging does not clear the pending reboot")
}

func TestRebootGetAndList(t *testing.T) {
	f := newRebootFixture(t)
	s := f.s
	id, err := s.CreateReboot(f.reg.AgentID, RebootOperation{Reason: "kernel update", TimeoutSeconds: 120, LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.NoError(t, err)
	rec, _ := s.Record(RebootOperations, id)
	requested := parsePB(rec["requested_at"]).Format(time.RFC3339Nano)
	want := `{"id":"` + id + `","user_id":"` + f.u.ID + `","agent_id":"` + f.reg.AgentID + `","lxc_id":"rhgs96k78q43f30","vmid":"100","status":"sent","reason":"kernel update","timeout_seconds":120,"requested_at":"` + requested + `","created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z"}`
	for _, token := range []string{f.u.Token, f.reg.AccessToken, f.other.AccessToken} {
		code, body := call(t, s, "GET", "/api/reboot/"+id, token, "")
		exact(t, 200, want, code, body)
	}
	hostID := f.create(t, `{"agent_id":"`+f.other.AgentID+`"}`)
	hrec, _ := s.Record(RebootOperations, hostID)
	code, body := call(t, s, "GET", "/api/reboot/"+hostID, f.u.Token, "")
	exact(t, 200, `{"id":"`+hostID+`","user_id":"`+f.u.ID+`","agent_id":"`+f.other.AgentID+`","status":"sent","timeout_seconds":300,"requested_at":"`+parsePB(hrec["requested_at"]).Format(time.RFC3339Nano)+`","created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z"}`, code, body)

	stranger := s.CreateUser("x@example.com")
	for _, c := range []struct {
		method, path, token string
		status              int
		want                string
	}{
		{"GET", "/api/reboot/" + id, stranger.Token, 403, `{"error":"unauthorized: reboot operation does not belong to user"}`},
		{"GET", "/api/reboot/aaaaaaaaaaaaaaa", f.u.Token, 404, `{"error":"reboot operation not found"}`},
		{"GET", "/api/reboot/" + id, "", 401, `{"error":"authentication required"}`},
		{"GET", "/api/reboot", f.u.Token, 500, `{"error":"failed to fetch reboot operations: invalid sort field \"created\""}`},
		{"GET", "/api/reboot?agent_id=" + f.reg.AgentID, f.reg.AccessToken, 500, `{"error":"failed to fetch reboot operations: invalid sort field \"created\""}`},
		{"GET", "/api/reboot", "", 401, `{"error":"authentication required"}`},
		{"DELETE", "/api/reboot/" + id, f.u.Token, 404, notFoundBody},
	} {
		code, body := call(t, s, c.method, c.path, c.token, "")
		exact(t, c.status, c.want, code, body)
	}
}

// metricsPost sends one accepted metrics payload as the agent.
func metricsPost(t *testing.T, s *Server, token string) {
	t.Helper()
	code, body := call(t, s, "POST", "/api/agent", token, metricsBody)
	exact(t, 200, `{"success":true,"message":"metrics recorded"}`, code, body)
}

// TestRebootMonitorCompletes: metrics before the acknowledgement change
// nothing; the first one after it completes the operation at once and
// frees the agent for another reboot.
func TestRebootMonitorCompletes(t *testing.T) {
	f := newRebootFixture(t)
	s := f.s
	id := f.create(t, `{"agent_id":"`+f.reg.AgentID+`","timeout_seconds":120}`)
	rebootEvent(t, f.st)
	metricsPost(t, s, f.reg.AccessToken)
	s.CheckReboots()
	rec, _ := s.Record(RebootOperations, id)
	require.Equal(t, "sent", rec["status"])

	code, _ := call(t, s, "POST", "/api/reboot/"+id+"/acknowledge", f.reg.AccessToken, "")
	require.Equal(t, 200, code)
	_, got := rebootEvent(t, f.st)
	require.Equal(t, "rebooting", got["status"])
	s.CheckReboots()
	metricsPost(t, s, f.other.AccessToken) // another agent's metrics are not this one's
	rec, _ = s.Record(RebootOperations, id)
	require.Equal(t, "rebooting", rec["status"], "no metrics of this agent since the acknowledgement")

	s.Advance(time.Millisecond) // the next post is in a later millisecond
	metricsPost(t, s, f.reg.AccessToken)
	action, got := rebootEvent(t, f.st)
	require.Equal(t, "update", action)
	require.Equal(t, "completed", got["status"])
	require.Equal(t, "", got["error_message"])
	completed := parsePB(got["completed_at"])
	require.False(t, completed.Before(parsePB(got["acknowledged_at"])))
	require.Empty(t, s.PendingReboot(f.reg.AgentID))
	s.CheckReboots()
	rec, _ = s.Record(RebootOperations, id)
	require.Equal(t, got["completed_at"], rec["completed_at"], "a completed operation stays as it is")

	next := f.create(t, `{"agent_id":"`+f.reg.AgentID+`"}`)
	require.NotEqual(t, id, next)
}

// TestRebootMonitorTimeouts: an operation not acknowledged, or not
// followed by metrics, within timeout_seconds (of the server's clock)
// times out with the backend's messages, and not before.
func TestRebootMonitorTimeouts(t *testing.T) {
	f := newRebootFixture(t)
	s := f.s
	unacked := f.create(t, `{"agent_id":"`+f.reg.AgentID+`","timeout_seconds":60}`)
	rebootEvent(t, f.st)
	silent := f.create(t, `{"agent_id":"`+f.other.AgentID+`","timeout_seconds":120}`)
	code, _ := call(t, s, "POST", "/api/reboot/"+silent+"/acknowledge", f.other.AccessToken, "")
	require.Equal(t, 200, code)

	s.Advance(30 * time.Second)
	s.CheckReboots()
	rec, _ := s.Record(RebootOperations, unacked)
	require.Equal(t, "sent", rec["status"], "half way through timeout_seconds it is not late yet")

	s.Advance(31 * time.Second)
	s.CheckReboots()
	action, got := rebootEvent(t, f.st)
	require.Equal(t, "update", action)
	require.Equal(t, "timeout", got["status"])
	require.Equal(t, RebootNoAck, got["error_message"])
	require.Equal(t, "", got["completed_at"])
	require.Empty(t, s.PendingReboot(f.reg.AgentID))
	rec, _ = s.Record(RebootOperations, silent)
	require.Equal(t, "rebooting", rec["status"], "the acknowledged one has 120 s")

	// The timeout is also noticed on the next reboot request.
	s.Advance(120 * time.Second)
	code, body := call(t, s, "GET", "/api/reboot/"+silent, f.u.Token, "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"status":"timeout"`)
	rec, _ = s.Record(RebootOperations, silent)
	require.Equal(t, RebootNoReconnect, rec["error_message"])
	require.Empty(t, s.PendingReboot(f.other.AgentID))

	// A late acknowledgement is accepted, as the backend does, but with
	// nothing pending no metrics post completes it.
	code, _ = call(t, s, "POST", "/api/reboot/"+unacked+"/acknowledge", f.reg.AccessToken, "")
	require.Equal(t, 200, code)
	rebootEvent(t, f.st)
	s.Advance(time.Millisecond)
	metricsPost(t, s, f.reg.AccessToken)
	rec, _ = s.Record(RebootOperations, unacked)
	require.Equal(t, "rebooting", rec["status"])
}

// TestRebootRecordUpdate: the agent reports a failure through the
// records API; the monitor then leaves the operation alone and it stays
// pending, so the agent's next reboot is refused.
func TestRebootRecordUpdate(t *testing.T) {
	f := newRebootFixture(t)
	s := f.s
	id := f.create(t, `{"agent_id":"`+f.reg.AgentID+`","reason":"kernel update","timeout_seconds":60}`)
	rebootEvent(t, f.st)
	code, _ := call(t, s, "POST", "/api/reboot/"+id+"/acknowledge", f.reg.AccessToken, "")
	require.Equal(t, 200, code)
	rebootEvent(t, f.st)
	path := "/api/collections/reboot_operations/records/" + id
	stranger := s.CreateUser("x@example.com")

	for _, c := range []struct {
		token, path, body string
		status            int
		want              string
	}{
		{"", path, `{"status":"failed"}`, 404, notFoundBody},
		{f.other.AccessToken, path, `{"status":"failed"}`, 404, notFoundBody},
		{stranger.Token, path, `{"status":"failed"}`, 404, notFoundBody},
		{f.reg.AccessToken, "/api/collections/reboot_operations/records/aaaaaaaaaaaaaaa", `{"status":"failed"}`, 404, notFoundBody},
		{f.reg.AccessToken, path, `{"status":`, 400, `{"data":{},"message":"Failed to read the submitted data.","status":400}`},
		{f.reg.AccessToken, path, `{"status":"broken"}`, 400, `{"data":{"status":{"code":"validation_invalid_value","message":"Invalid value broken."}},"message":"Failed to update record.","status":400}`},
		{f.reg.AccessToken, path, `{"status":""}`, 400, `{"data":{"status":{"code":"validation_required","message":"Cannot be blank."}},"message":"Failed to update record.","status":400}`},
		{f.reg.AccessToken, path, `{"agent_id":"aaaaaaaaaaaaaaa","error_message":"` + strings.Repeat("x", 5001) + `"}`, 400, `{"data":{"agent_id":{"code":"validation_missing_rel_records","message":"Failed to find all relation records with the provided ids."},"error_message":{"code":"validation_max_text_constraint","message":"Must be less than 5000 character(s)."}},"message":"Failed to update record.","status":400}`},
	} {
		code, body := call(t, s, "PATCH", c.path, c.token, c.body)
		exact(t, c.status, c.want, code, body)
	}
	rec, _ := s.Record(RebootOperations, id)
	require.Equal(t, "rebooting", rec["status"], "refused updates change nothing")

	code, body := call(t, s, "PATCH", path, f.reg.AccessToken, `{"status":"failed","error_message":"reboot command failed: exit status 1","no_such_field":1}`)
	require.Equal(t, 200, code, body)
	rec, _ = s.Record(RebootOperations, id)
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, "reboot command failed: exit status 1", rec["error_message"])
	require.NotContains(t, rec, "no_such_field")
	b, err := json.Marshal(rec)
	require.NoError(t, err)
	require.JSONEq(t, string(b), body, "the answer is the updated record")
	action, got := rebootEvent(t, f.st)
	require.Equal(t, "update", action)
	require.Equal(t, "failed", got["status"])

	// Past the timeout and after metrics: the monitor leaves it failed,
	// and it stays the agent's pending reboot.
	s.Advance(time.Hour)
	metricsPost(t, s, f.reg.AccessToken)
	s.CheckReboots()
	rec, _ = s.Record(RebootOperations, id)
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, id, s.PendingReboot(f.reg.AgentID))
	code, body = call(t, s, "POST", "/api/reboot", f.u.Token, `{"agent_id":"`+f.reg.AgentID+`"}`)
	exact(t, 409, `{"error":"agent already has a pending reboot"}`, code, body)

	// Deleting the operation frees the agent at the next pass.
	require.NoError(t, s.DeleteRecord(RebootOperations, id))
	s.CheckReboots()
	require.Empty(t, s.PendingReboot(f.reg.AgentID))

	// The owner may update too; numbers and dates are cast as PocketBase
	// casts them.
	id2 := f.create(t, `{"agent_id":"`+f.reg.AgentID+`"}`)
	code, body = call(t, s, "PATCH", "/api/collections/reboot_operations/records/"+id2, f.u.Token,
		`{"timeout_seconds":"90","vmid":101,"completed_at":"not a date","reason":"maintenance"}`)
	require.Equal(t, 200, code, body)
	rec, _ = s.Record(RebootOperations, id2)
	require.Equal(t, 90.0, rec["timeout_seconds"])
	require.Equal(t, "101", rec["vmid"])
	require.Equal(t, "", rec["completed_at"])
	require.Equal(t, "maintenance", rec["reason"])
}

// TestRebootOfAnIngestedLXC: lxc_id names a container the agent
// reported; the create hook copies its vmid. Another agent's container
// is refused.
func TestRebootOfAnIngestedLXC(t *testing.T) {
	f := newRebootFixture(t)
	s := f.s
	ingested(t, s, "Node", "/api/proxmox/node", f.reg.AccessToken, pxNode)
	lxcID := ingested(t, s, "LXC", "/api/proxmox/lxc", f.reg.AccessToken, pxLXC)

	code, body := call(t, s, "POST", "/api/reboot", f.u.Token, `{"agent_id":"`+f.other.AgentID+`","lxc_id":"`+lxcID+`"}`)
	exact(t, 400, `{"error":"lxc container does not belong to the specified agent"}`, code, body)

	id := f.create(t, `{"agent_id":"`+f.reg.AgentID+`","lxc_id":"`+lxcID+`","reason":"ct update"}`)
	_, got := rebootEvent(t, f.st)
	require.Equal(t, id, got["id"])
	require.Equal(t, lxcID, got["lxc_id"])
	require.Equal(t, "100", got["vmid"])
	require.Equal(t, "sent", got["status"])
	require.Equal(t, id, s.PendingReboot(f.reg.AgentID), "a container's reboot is the agent's pending reboot too")
}
