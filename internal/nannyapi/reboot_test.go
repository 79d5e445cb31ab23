package nannyapi

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

func TestRebootCalls(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("u@example.com")
	reg := srv.RegisterAgent(u, "testhost")
	other := srv.RegisterAgent(u, "otherhost")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)
	id, err := srv.CreateReboot(reg.AgentID, nannyapitest.RebootOperation{Reason: "kernel update", TimeoutSeconds: 120})
	require.NoError(t, err)

	r, err := c.GetReboot(ctx, id)
	require.NoError(t, err)
	rec, _ := srv.Record(nannyapitest.RebootOperations, id)
	var requested DateTime
	require.NoError(t, json.Unmarshal([]byte(`"`+rec["requested_at"].(string)+`"`), &requested))
	require.Equal(t, Reboot{
		ID: id, UserID: u.ID, AgentID: reg.AgentID, Status: RebootSent, Reason: "kernel update",
		TimeoutSeconds: 120, RequestedAt: requested.Time, CreatedAt: time.Time{}, UpdatedAt: time.Time{},
	}, *r)

	require.NoError(t, c.AcknowledgeReboot(ctx, id))
	ack := srv.RequestsFor("POST /api/reboot/" + id + "/acknowledge")
	require.Len(t, ack, 1)
	require.Empty(t, ack[0].Body, "the acknowledgement has no body")
	require.Empty(t, ack[0].Header.Get("Content-Type"))
	require.Equal(t, "Bearer "+reg.AccessToken, ack[0].Header.Get("Authorization"))
	r, err = c.GetReboot(ctx, id)
	require.NoError(t, err)
	require.Equal(t, RebootRebooting, r.Status)

	// Another agent's operation, and one that does not exist.
	otherID, err := srv.CreateRebootOperation(other.AgentID, "", 0)
	require.NoError(t, err)
	err = c.AcknowledgeReboot(ctx, otherID)
	e, ok := AsError(err)
	require.True(t, ok, "%v", err)
	require.True(t, e.IsForbidden())
	require.Equal(t, "not your reboot operation", e.Message)
	err = c.AcknowledgeReboot(ctx, "aaaaaaaaaaaaaaa")
	e, ok = AsError(err)
	require.True(t, ok, "%v", err)
	require.True(t, e.IsNotFound())
	require.Equal(t, "reboot operation not found", e.Message)
	_, err = c.GetReboot(ctx, "aaaaaaaaaaaaaaa")
	e, _ = AsError(err)
	require.True(t, e.IsNotFound())

	// 204 is an acknowledgement too.
	srv.Inject("POST /api/reboot/"+id+"/acknowledge", nannyapitest.Fault{Status: 204, Body: " ", Times: 1})
	require.NoError(t, c.AcknowledgeReboot(ctx, id))

	// A failure report: status and message through the records API,
	// the message cut to the field's limit.
	long := strings.Repeat("é", MaxRebootErrorMessage+10)
	require.NoError(t, c.FailReboot(ctx, id, long))
	rec, _ = srv.Record(nannyapitest.RebootOperations, id)
	require.Equal(t, RebootFailed, rec["status"])
	require.Equal(t, MaxRebootErrorMessage, utf8.RuneCountInString(rec["error_message"].(string)))
	patch := srv.RequestsFor("PATCH /api/collections/reboot_operations/records/" + id)
	require.Len(t, patch, 1)
	require.Equal(t, "application/json", patch[0].Header.Get("Content-Type"))
	var body map[string]string
	require.NoError(t, json.Unmarshal(patch[0].Body, &body))
	require.Equal(t, []string{"error_message", "status"}, slices.Sorted(maps.Keys(body)))
	err = c.FailReboot(ctx, otherID, "x")
	e, ok = AsError(err)
	require.True(t, ok, "%v", err)
	require.True(t, e.IsNotFound() && e.Envelope, "the records API hides another agent's record: %v", err)
}

// TestRebootCallsRefuseBadIDs: an ID goes into the URL path, so only a
// record ID is sent; nothing reaches the backend otherwise.
func TestRebootCallsRefuseBadIDs(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	c := newClient(t, srv, StaticToken("t"))
	ctx := testCtx(t)
	for _, id := range []string{"", "../../agent", "j7c41fk1xukycx", "j7c41fk1xukycxvv", "J7C41FK1XUKYCXV", "j7c41fk1xukycx/"} {
		require.ErrorContains(t, c.AcknowledgeReboot(ctx, id), "is not a record ID", id)
		_, err := c.GetReboot(ctx, id)
		require.ErrorContains(t, err, "is not a record ID", id)
		require.ErrorContains(t, c.FailReboot(ctx, id, "x"), "is not a record ID", id)
	}
	require.Empty(t, srv.Requests())
}
