package nannyapi

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

const rebootPath = "/api/reboot"

// Reboot operation statuses (reboot_operations.status).
const (
	RebootSent      = "sent"
	RebootRebooting = "rebooting"
	RebootCompleted = "completed"
	RebootFailed    = "failed"
	RebootTimeout   = "timeout"
)

// MaxRebootErrorMessage is reboot_operations.error_message's limit
// (PocketBase's default for a text field without one of its own).
const MaxRebootErrorMessage = 5000

// Reboot is GET /api/reboot/{id}'s answer. The collection has no
// created and updated fields, so CreatedAt and UpdatedAt are always
// the zero time; VMID is empty for a host reboot.
type Reboot struct {
	ID             string    `json:"id"`
	UserID         string    `json:"user_id"`
	AgentID        string    `json:"agent_id"`
	LXCID          string    `json:"lxc_id"`
	VMID           string    `json:"vmid"`
	Status         string    `json:"status"`
	Reason         string    `json:"reason"`
	TimeoutSeconds int       `json:"timeout_seconds"`
	RequestedAt    time.Time `json:"requested_at"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

func checkRebootID(op, id string) error {
	if !IsRecordID(id) {
		return fmt.Errorf("nannyapi: %s: reboot ID %q is not a record ID (15 lowercase letters and digits)", op, id)
	}
	return nil
}

// AcknowledgeReboot tells the backend the agent is about to reboot
// (POST /api/reboot/{id}/acknowledge, no body): the operation becomes
// rebooting with acknowledged_at set, and from then on the agent's next
// metrics post marks it completed. A reboot of another agent is an
// *Error with IsForbidden, an unknown one with IsNotFound.
func (c *Client) AcknowledgeReboot(ctx context.Context, id string) error {
	if err := checkRebootID("acknowledge reboot", id); err != nil {
		return err
	}
	path := rebootPath + "/" + id + "/acknowledge"
	return c.do(ctx, &request{
		op: "POST " + path, method: http.MethodPost, path: path, auth: true, agentID: true,
		ok: []int{http.StatusOK, http.StatusNoContent},
	})
}

// GetReboot reads a reboot operation of the agent's owner.
func (c *Client) GetReboot(ctx context.Context, id string) (*Reboot, error) {
	if err := checkRebootID("get reboot", id); err != nil {
		return nil, err
	}
	path := rebootPath + "/" + id
	var out Reboot
	err := c.do(ctx, &request{
		op: "GET " + path, method: http.MethodGet, path: path, auth: true, agentID: true, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// FailReboot records that a reboot could not be carried out, through
// the records API (PATCH /api/collections/reboot_operations/records/{id}
// with status failed): the backend has no route of its own for it. A
// message longer than the field's limit is cut to fit.
//
// The backend's monitor leaves a failed operation alone, so it stays
// the agent's pending reboot and new reboot requests for the agent are
// refused (409) until the operation is deleted.
func (c *Client) FailReboot(ctx context.Context, id, message string) error {
	if err := checkRebootID("fail reboot", id); err != nil {
		return err
	}
	path := "/api/collections/" + CollectionRebootOperations + "/records/" + id
	return c.do(ctx, &request{
		op: "PATCH " + path, method: http.MethodPatch, path: path, auth: true, agentID: true,
		body: struct {
			Status       string `json:"status"`
			ErrorMessage string `json:"error_message"`
		}{RebootFailed, truncateRunes(message, MaxRebootErrorMessage)},
		// The answer is the whole record; nothing in it is needed.
	})
}
