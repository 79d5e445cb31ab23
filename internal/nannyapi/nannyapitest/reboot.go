package nannyapitest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// rebootState is what the reboot monitor needs (§2.10): the agents'
// pending_reboot_id, which the agents collection holds on the backend.
type rebootState struct {
	// pending is pending_reboot_id by agent ID; an agent with one gets
	// 409 on a new reboot until the monitor clears it.
	pending map[string]string
}

// Reboot operation statuses (the collection's select values).
var rebootStatuses = []string{"pending", "sent", "rebooting", "completed", "failed", "timeout"}

// The monitor's timeout messages.
const (
	RebootNoReconnect = "Agent did not reconnect within timeout period"
	RebootNoAck       = "Agent did not acknowledge reboot command"
)

// defaultRebootTimeout is the timeout of an operation created without
// one, and the monitor's when the record's is 0.
const defaultRebootTimeout = 300

// RebootOperation is what the portal sets on a new reboot operation.
type RebootOperation struct {
	Reason string
	// TimeoutSeconds of 0 means the default 300.
	TimeoutSeconds int
	// LXCID names an ingested proxmox_lxc row; the create hook copies
	// its vmid. VMID, when set, is stored as given instead, for tests
	// that ingest no Proxmox inventory.
	LXCID string
	VMID  string
}

// CreateReboot creates a reboot operation for the agent as POST
// /api/reboot does for its owner: the create hook makes it "sent", its
// create event is pushed, and it becomes the agent's pending reboot.
// An agent with a pending reboot gets "agent already has a pending
// reboot".
func (s *Server) CreateReboot(agentID string, r RebootOperation) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[agentID]
	if !ok {
		return "", errors.New("agent not found: " + errNoRows)
	}
	id, _, msg := s.createRebootLocked(a.userID, agentID, r)
	if msg != "" {
		return "", errors.New(msg)
	}
	return id, nil
}

// PendingReboot is the agent's pending_reboot_id ("" for none).
func (s *Server) PendingReboot(agentID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reboots.pending[agentID]
}

// CheckReboots runs one pass of the backend's reboot monitor (every 30 s
// there). The server also runs it on every metrics post and every
// reboot request, so tests call it only to see a timeout after Advance
// without another request.
func (s *Server) CheckReboots() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkRebootsLocked()
}

// createRebootLocked is reboots.CreateReboot and the create hooks; on
// failure it returns the status and the error text of POST /api/reboot.
func (s *Server) createRebootLocked(owner, agentID string, r RebootOperation) (string, int, string) {
	if agentID == "" {
		return "", http.StatusBadRequest, "agent_id is required"
	}
	if _, status, msg := s.ownAgentLocked(owner, agentID,
		"agent not found: "+errNoRows, "unauthorized: agent does not belong to user"); msg != "" {
		if status == http.StatusNotFound {
			// The handler maps only the bare "agent not found" to 404,
			// which the wrapped error never is.
			status = http.StatusBadRequest
		}
		return "", status, msg
	}
	if s.reboots.pending[agentID] != "" {
		return "", http.StatusConflict, "agent already has a pending reboot"
	}
	vmid := r.VMID
	if r.LXCID != "" && vmid == "" {
		lxcAgent, n, found := s.lxcLocked(r.LXCID)
		switch {
		case !found:
			return "", http.StatusBadRequest, "lxc container not found: " + errNoRows
		case lxcAgent != agentID:
			return "", http.StatusBadRequest, "lxc container does not belong to the specified agent"
		case n > 0:
			vmid = strconv.Itoa(n)
		}
	}
	timeout := r.TimeoutSeconds
	if timeout == 0 {
		timeout = defaultRebootTimeout
	}
	id := pbID()
	s.insertLocked(s.collections[RebootOperations], map[string]any{
		"acknowledged_at": "", "agent_id": agentID, "completed_at": "", "error_message": "", "id": id,
		"lxc_id": r.LXCID, "reason": r.Reason, "requested_at": formatPB(s.Now()), "status": "sent",
		"timeout_seconds": timeout, "user_id": owner, "vmid": vmid,
	})
	if s.reboots.pending == nil {
		s.reboots.pending = map[string]string{}
	}
	s.reboots.pending[agentID] = id
	return id, 0, ""
}

// lxcLocked finds an ingested proxmox_lxc row: the agent it belongs to
// and its vmid.
func (s *Server) lxcLocked(id string) (agentID string, vmid int, ok bool) {
	rec, ok := s.pxLocked().cols[ProxmoxLXC].recs[id]
	if !ok {
		return "", 0, false
	}
	n, _ := num(rec["vmid"])
	return recString(rec, "agent_id"), int(n), true
}

// checkRebootsLocked is CheckRebootCompletions: for each agent with a
// pending reboot, a rebooting operation completes once the agent's
// last_seen is after acknowledged_at, and a rebooting or sent one times
// out after timeout_seconds; either clears the pending reboot. Other
// statuses (failed) are left alone, and stay pending.
func (s *Server) checkRebootsLocked() {
	c := s.collections[RebootOperations]
	now := s.Now()
	for _, agentID := range s.agentOrder {
		id := s.reboots.pending[agentID]
		if id == "" {
			continue
		}
		rec, ok := c.recs[id]
		if !ok {
			delete(s.reboots.pending, agentID)
			continue
		}
		timeout := time.Duration(defaultRebootTimeout) * time.Second
		if n, ok := num(rec["timeout_seconds"]); ok && n != 0 {
			timeout = time.Duration(n) * time.Second
		}
		finish := func(status, field, value string) {
			rec["status"] = status
			rec[field] = value
			s.saveLocked(c, rec)
			delete(s.reboots.pending, agentID)
		}
		switch recString(rec, "status") {
		case "rebooting":
			acked := parsePB(rec["acknowledged_at"])
			// Both dates are stored to the millisecond.
			if s.agents[agentID].lastSeen.Truncate(time.Millisecond).After(acked) {
				finish("completed", "completed_at", formatPB(now))
			} else if now.Sub(acked) > timeout {
				finish("timeout", "error_message", RebootNoReconnect)
			}
		case "sent":
			if now.Sub(parsePB(rec["requested_at"])) > timeout {
				finish("timeout", "error_message", RebootNoAck)
			}
		}
	}
}

// handleReboot serves /api/reboot, /api/reboot/{id} and
// /api/reboot/{id}/acknowledge.
func (s *Server) handleReboot(w http.ResponseWriter, r *http.Request, body []byte) {
	s.CheckReboots()
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/api/reboot"), "/")
	id, action, _ := strings.Cut(rest, "/")
	switch {
	case rest == "" && r.Method == http.MethodPost:
		s.postReboot(w, r, body)
	case rest == "" && r.Method == http.MethodGet:
		if auth, _ := s.requireOwner(w, r); auth != nil {
			errorJSON(w, http.StatusInternalServerError, `failed to fetch reboot operations: invalid sort field "created"`)
		}
	case id != "" && !strings.Contains(rest, "/") && r.Method == http.MethodGet:
		s.getReboot(w, r, id)
	case id != "" && action == "acknowledge" && r.Method == http.MethodPost:
		s.acknowledgeReboot(w, r, id)
	default:
		notFound(w)
	}
}

func (s *Server) postReboot(w http.ResponseWriter, r *http.Request, body []byte) {
	auth := s.requireAuth(w, r)
	if auth == nil {
		return
	}
	if auth.isAgent() {
		errorJSON(w, http.StatusForbidden, "agents cannot initiate reboots")
		return
	}
	var req struct {
		AgentID        string `json:"agent_id"`
		LXCID          string `json:"lxc_id"`
		Reason         string `json:"reason"`
		TimeoutSeconds int    `json:"timeout_seconds"`
	}
	if !decodeBody(w, body, &req, "invalid request body") {
		return
	}
	s.mu.Lock()
	id, status, msg := s.createRebootLocked(auth.id, req.AgentID, RebootOperation{
		Reason: req.Reason, TimeoutSeconds: req.TimeoutSeconds, LXCID: req.LXCID,
	})
	s.mu.Unlock()
	if msg != "" {
		errorJSON(w, status, msg)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"success": true, "reboot_id": id, "status": "sent",
		"message": "Reboot command sent. Agent will receive via realtime subscription.",
	})
}

// rebootResponse is the backend's RebootResponse. The collection has no
// created and updated fields, so those read as the zero time.
type rebootResponse struct {
	ID             string    `json:"id"`
	UserID         string    `json:"user_id"`
	AgentID        string    `json:"agent_id"`
	LXCID          string    `json:"lxc_id,omitempty"`
	VMID           string    `json:"vmid,omitempty"`
	Status         string    `json:"status"`
	Reason         string    `json:"reason,omitempty"`
	TimeoutSeconds int       `json:"timeout_seconds"`
	RequestedAt    time.Time `json:"requested_at"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

func (s *Server) getReboot(w http.ResponseWriter, r *http.Request, id string) {
	auth, owner := s.requireOwner(w, r)
	if auth == nil {
		return
	}
	rec, status, msg := s.ownRecord(RebootOperations, ownedByUser(owner), id,
		"reboot operation not found", "unauthorized: reboot operation does not belong to user")
	if msg != "" {
		errorJSON(w, status, msg)
		return
	}
	n, _ := num(rec["timeout_seconds"])
	writeJSON(w, http.StatusOK, rebootResponse{
		ID: id, UserID: owner, AgentID: recString(rec, "agent_id"), LXCID: recString(rec, "lxc_id"),
		VMID: recString(rec, "vmid"), Status: recString(rec, "status"), Reason: recString(rec, "reason"),
		TimeoutSeconds: int(n), RequestedAt: parsePB(rec["requested_at"]),
	})
}

func (s *Server) acknowledgeReboot(w http.ResponseWriter, r *http.Request, id string) {
	auth := s.requireAgent(w, r, http.StatusForbidden, "only agents can acknowledge reboots")
	if auth == nil {
		return
	}
	s.mu.Lock()
	rec, status, msg := s.ownRecordLocked(RebootOperations, ownedByAgent(auth.id), id,
		"reboot operation not found", "not your reboot operation")
	if msg != "" {
		s.mu.Unlock()
		errorJSON(w, status, msg)
		return
	}
	// Whatever the status: the backend acknowledges a completed or timed
	// out operation too.
	rec["status"] = "rebooting"
	rec["acknowledged_at"] = formatPB(s.Now())
	s.saveLocked(s.collections[RebootOperations], rec)
	s.mu.Unlock()
	writeSuccess(w, "Reboot acknowledged. Agent should proceed with reboot.")
}

// handleRebootRecordUpdate serves PATCH
// /api/collections/reboot_operations/records/{id}, which the
// collection's UpdateRule (user_id = @request.auth.id || agent_id =
// @request.auth.id) allows the owner and the agent (§2.10, §7.8). As in
// PocketBase, a record the rule hides is a 404, fields the collection
// lacks are ignored, and the answer is the updated record.
func (s *Server) handleRebootRecordUpdate(w http.ResponseWriter, r *http.Request, body []byte) {
	s.CheckReboots()
	id := strings.TrimPrefix(r.URL.Path, "/api/collections/"+RebootOperations+"/records/")
	if id == "" || strings.Contains(id, "/") {
		notFound(w)
		return
	}
	auth := s.authenticate(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.collections[RebootOperations]
	rec, ok := c.recs[id]
	if !ok || !canSee(auth, rec) {
		notFound(w)
		return
	}
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil && len(body) > 0 {
		writeRaw(w, http.StatusBadRequest, envelope(http.StatusBadRequest, "Failed to read the submitted data.", nil))
		return
	}
	next := copyRecord(rec)
	errs := map[string]any{}
	for k, v := range in {
		kind, known := c.fields[k]
		if !known || k == "id" {
			continue
		}
		value, problem := s.rebootFieldLocked(k, kind, v)
		if problem != nil {
			errs[k] = problem
			continue
		}
		next[k] = value
	}
	for _, k := range []string{"agent_id", "user_id", "status", "requested_at"} {
		if _, bad := errs[k]; !bad && recString(next, k) == "" {
			errs[k] = fieldError("validation_required", "Cannot be blank.")
		}
	}
	if len(errs) > 0 {
		writeRaw(w, http.StatusBadRequest, envelope(http.StatusBadRequest, "Failed to update record.", errs))
		return
	}
	for k, v := range next {
		rec[k] = v
	}
	s.saveLocked(c, rec)
	writeJSON(w, http.StatusOK, copyRecord(rec))
}

func fieldError(code, message string) map[string]string {
	return map[string]string{"code": code, "message": message}
}

// maxText is PocketBase's limit of a text field without one of its own.
const maxText = 5000

// rebootFieldLocked casts a submitted value as the reboot_operations
// field would, or says why the field refuses it.
func (s *Server) rebootFieldLocked(name string, kind fieldKind, v any) (any, map[string]string) {
	switch name {
	case "status":
		st := str(v)
		for _, ok := range rebootStatuses {
			if st == ok {
				return st, nil
			}
		}
		if st == "" {
			return "", nil // reported as blank
		}
		return nil, fieldError("validation_invalid_value", fmt.Sprintf("Invalid value %s.", st))
	case "agent_id", "user_id", "lxc_id":
		ref := str(v)
		if ref == "" {
			return "", nil
		}
		exists := false
		switch name {
		case "agent_id":
			_, exists = s.agents[ref]
		case "user_id":
			_, exists = s.users[ref]
		default:
			_, _, exists = s.lxcLocked(ref)
		}
		if !exists {
			return nil, fieldError("validation_missing_rel_records", "Failed to find all relation records with the provided ids.")
		}
		return ref, nil
	}
	switch kind {
	case kindNumber:
		if n, ok := num(v); ok {
			return n, nil
		}
		f, _ := strconv.ParseFloat(strings.TrimSpace(str(v)), 64)
		return f, nil
	case kindDate:
		// An unreadable date is stored as none, as PocketBase casts it.
		for _, layout := range []string{pbTime, "2006-01-02 15:04:05Z07:00", time.RFC3339Nano} {
			if t, err := time.Parse(layout, str(v)); err == nil {
				return formatPB(t), nil
			}
		}
		return "", nil
	default:
		t := str(v)
		if utf8.RuneCountInString(t) > maxText {
			return nil, fieldError("validation_max_text_constraint", fmt.Sprintf("Must be less than %d character(s).", maxText))
		}
		return t, nil
	}
}
