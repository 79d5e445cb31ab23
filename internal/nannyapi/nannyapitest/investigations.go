package nannyapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

const errNoRows = "sql: no rows in result set"

// investigationResponse is the backend's InvestigationResponse.
type investigationResponse struct {
	ID             string         `json:"id"`
	UserID         string         `json:"user_id"`
	AgentID        string         `json:"agent_id"`
	EpisodeID      string         `json:"episode_id"`
	UserPrompt     string         `json:"user_prompt"`
	Priority       string         `json:"priority"`
	Status         string         `json:"status"`
	ResolutionPlan string         `json:"resolution_plan"`
	InitiatedAt    time.Time      `json:"initiated_at"`
	CompletedAt    *time.Time     `json:"completed_at"`
	CreatedAt      time.Time      `json:"created_at"`
	UpdatedAt      time.Time      `json:"updated_at"`
	Metadata       map[string]any `json:"metadata"`
	InferenceCount int            `json:"inference_count"`
}

type investigationListItem struct {
	ID             string     `json:"id"`
	AgentID        string     `json:"agent_id"`
	UserPrompt     string     `json:"user_prompt"`
	Priority       string     `json:"priority"`
	Status         string     `json:"status"`
	InitiatedAt    time.Time  `json:"initiated_at"`
	CompletedAt    *time.Time `json:"completed_at"`
	CreatedAt      time.Time  `json:"created_at"`
	InferenceCount int        `json:"inference_count"`
}

func parsePB(v any) time.Time {
	s, _ := v.(string)
	t, _ := time.Parse(pbTime, s)
	return t
}

func recString(rec map[string]any, k string) string { s, _ := rec[k].(string); return s }

func (s *Server) handleInvestigations(w http.ResponseWriter, r *http.Request, body []byte) {
	auth, owner := s.requireOwner(w, r)
	if auth == nil {
		return
	}
	byID{
		create: func() { s.postInvestigation(w, auth, owner, body) },
		get:    func(id string) { s.getInvestigation(w, owner, id) },
		list:   func() { s.listInvestigations(w, owner) },
		update: func(id string) { s.patchInvestigation(w, owner, id, body) },
	}.route(w, r)
}

func (s *Server) postInvestigation(w http.ResponseWriter, auth *authRecord, owner string, body []byte) {
	var m map[string]any
	if !decodeBody(w, body, &m, "invalid JSON") {
		return
	}
	if invID, ok := m["investigation_id"].(string); ok {
		s.proxy(w, owner, invID, body)
		return
	}
	var req struct {
		AgentID  string `json:"agent_id"`
		Issue    string `json:"issue"`
		Priority string `json:"priority"`
	}
	if !decodeBody(w, body, &req, "invalid request format") {
		return
	}
	initiatedBy := "user"
	if auth.isAgent() {
		initiatedBy = "agent"
	}
	s.mu.Lock()
	rec, msg := s.createInvestigationLocked(owner, req.AgentID, req.Issue, req.Priority, initiatedBy)
	s.mu.Unlock()
	if msg != "" {
		errorJSON(w, http.StatusBadRequest, msg)
		return
	}
	resp := s.investigationResponse(rec)
	resp.InitiatedAt = rec["_initiated"].(time.Time)
	resp.Metadata = map[string]any{"initiated_by": initiatedBy}
	delete(rec, "_initiated")
	writeJSON(w, http.StatusCreated, resp)
}

// createInvestigationLocked validates and stores a new investigation,
// pushing its create event; a non-empty message is the 400 error. The
// record carries "_initiated" (the exact creation time) for the caller
// to remove.
func (s *Server) createInvestigationLocked(owner, agentID, issue, priority, initiatedBy string) (map[string]any, string) {
	if agentID == "" || issue == "" {
		return nil, "agent_id and issue are required"
	}
	issue = strings.TrimSpace(issue)
	if len(issue) < 10 {
		return nil, "issue must be at least 10 characters long"
	}
	if _, _, msg := s.ownAgentLocked(owner, agentID,
		"agent not found: "+errNoRows, "unauthorized: agent does not belong to user"); msg != "" {
		return nil, msg
	}
	if utf8.RuneCountInString(issue) > 2000 {
		return nil, "failed to save investigation: " + validationError(map[string]string{"user_prompt": maxLenMsg(2000)})
	}
	if priority == "" {
		priority = "medium"
	}
	now := s.Now().UTC()
	rec := map[string]any{
		"agent_id": agentID, "completed_at": "", "episode_id": "", "id": pbID(),
		"initiated_at": formatPB(now), "metadata": map[string]any{"initiated_by": initiatedBy},
		"priority": priority, "resolution_plan": "", "status": "pending", "user_id": owner, "user_prompt": issue,
	}
	s.insertLocked(s.collections[Investigations], rec)
	out := copyRecord(rec)
	out["_initiated"] = now
	return out, ""
}

func (s *Server) investigationResponse(rec map[string]any) investigationResponse {
	resp := investigationResponse{
		ID: recString(rec, "id"), UserID: recString(rec, "user_id"), AgentID: recString(rec, "agent_id"),
		EpisodeID: recString(rec, "episode_id"), UserPrompt: recString(rec, "user_prompt"),
		Priority: recString(rec, "priority"), Status: recString(rec, "status"),
		ResolutionPlan: recString(rec, "resolution_plan"), InitiatedAt: parsePB(rec["initiated_at"]),
		CompletedAt: timePtr(parsePB(rec["completed_at"])),
		// metadata is stored as JSON the handler cannot read as a map,
		// so it always comes back empty.
		Metadata: map[string]any{},
	}
	return resp
}

// The get and patch handlers' refusals of an investigation id, which
// they answer with one status (the proxy words its own).
const (
	investigationNotFound = "investigation not found: " + errNoRows
	investigationNotYours = "unauthorized: investigation does not belong to user"
)

func (s *Server) getInvestigation(w http.ResponseWriter, owner, id string) {
	rec, _, msg := s.ownRecord(Investigations, ownedByUser(owner), id, investigationNotFound, investigationNotYours)
	if msg != "" {
		errorJSON(w, http.StatusNotFound, msg)
		return
	}
	resp := s.investigationResponse(rec)
	if resp.EpisodeID != "" && s.opts.NoClickHouse {
		panicked(w)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) listInvestigations(w http.ResponseWriter, owner string) {
	writeJSON(w, http.StatusOK, listOwned(s, Investigations, owner, func(rec map[string]any) investigationListItem {
		return investigationListItem{
			ID: recString(rec, "id"), AgentID: recString(rec, "agent_id"), UserPrompt: recString(rec, "user_prompt"),
			Priority: recString(rec, "priority"), Status: recString(rec, "status"),
			InitiatedAt: parsePB(rec["initiated_at"]), CompletedAt: timePtr(parsePB(rec["completed_at"])),
		}
	}))
}

func (s *Server) patchInvestigation(w http.ResponseWriter, owner, id string, body []byte) {
	var req struct {
		Status         string `json:"status"`
		ResolutionPlan string `json:"resolution_plan"`
		EpisodeID      string `json:"episode_id"`
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.collections[Investigations]
	if req.EpisodeID != "" {
		rec, _, msg := s.ownRecordLocked(Investigations, ownedByUser(owner), id,
			investigationNotFound, investigationNotYours)
		if msg != "" {
			errorJSON(w, http.StatusBadRequest, msg)
			return
		}
		rec["episode_id"] = req.EpisodeID
		s.saveLocked(c, rec)
	}
	if req.Status != "" {
		rec, _, msg := s.ownRecordLocked(Investigations, ownedByUser(owner), id,
			investigationNotFound, investigationNotYours)
		if msg != "" {
			errorJSON(w, http.StatusBadRequest, msg)
			return
		}
		if utf8.RuneCountInString(req.ResolutionPlan) > 5000 {
			errorJSON(w, http.StatusBadRequest, "failed to update investigation: "+
				validationError(map[string]string{"resolution_plan": maxLenMsg(5000)}))
			return
		}
		rec["status"] = req.Status
		if req.ResolutionPlan != "" {
			rec["resolution_plan"] = req.ResolutionPlan
		}
		if req.Status == "completed" || req.Status == "failed" {
			rec["completed_at"] = formatPB(s.Now())
		}
		s.saveLocked(c, rec)
	}
	writeJSON(w, http.StatusOK, map[string]string{"success": "true"})
}

// tzResponse is the backend's struct for the upstream reply: fields it
// does not know are dropped when it re-encodes the reply.
type tzResponse struct {
	ID        string `json:"id"`
	EpisodeID string `json:"episode_id"`
	Choices   []struct {
		Index        int    `json:"index"`
		FinishReason string `json:"finish_reason"`
		Message      struct {
			Role      string            `json:"role"`
			Content   string            `json:"content"`
			ToolCalls []json.RawMessage `json:"tool_calls"`
		} `json:"message"`
	} `json:"choices"`
	Created           int64   `json:"created"`
	Model             string  `json:"model"`
	SystemFingerprint string  `json:"system_fingerprint"`
	ServiceTier       *string `json:"service_tier"`
	Object            string  `json:"object"`
	Usage             struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// proxy is the TensorZero proxy: a chat turn of an investigation.
func (s *Server) proxy(w http.ResponseWriter, owner, invID string, body []byte) {
	rec, status, msg := s.ownRecord(Investigations, ownedByUser(owner), invID,
		"investigation not found", "unauthorized")
	if msg != "" {
		errorJSON(w, status, msg)
		return
	}
	episode := recString(rec, "episode_id")
	var req struct {
		Model    string        `json:"model"`
		Messages []chatMessage `json:"messages"`
	}
	if !decodeBody(w, body, &req, "invalid TensorZero request format") {
		return
	}
	if s.opts.TensorZeroURL == "" || s.opts.TensorZeroKey == "" {
		// "TENSORZERO_API_URL environment variable is required"
		panicked(w)
		return
	}
	if episode != "" && s.opts.NoClickHouse {
		panicked(w)
		return
	}
	resp, err := s.callUpstream(req.Messages, episode)
	if err != nil {
		errorJSON(w, http.StatusBadRequest, "TensorZero error: "+err.Error())
		return
	}
	s.track(invID, resp)
	for i := range resp.Choices {
		if resp.Choices[i].Message.ToolCalls == nil {
			resp.Choices[i].Message.ToolCalls = []json.RawMessage{}
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) callUpstream(msgs []chatMessage, episode string) (*tzResponse, error) {
	payload := map[string]any{"model": TensorZeroModel, "messages": msgs}
	if episode != "" {
		payload["tensorzero::episode_id"] = episode
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("failed to marshal request: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	url := strings.TrimSuffix(s.opts.TensorZeroURL, "/") + "/openai/v1/chat/completions"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("failed to create request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+s.opts.TensorZeroKey)
	hc := &http.Client{Timeout: s.opts.UpstreamTimeout}
	hresp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("failed to call TensorZero API: %w", err)
	}
	defer hresp.Body.Close()
	rb, err := io.ReadAll(hresp.Body)
	if err != nil {
		return nil, fmt.Errorf("failed to read response body: %w", err)
	}
	if hresp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("TensorZero API error: %d %s", hresp.StatusCode, string(rb))
	}
	var out tzResponse
	if err := json.Unmarshal(rb, &out); err != nil {
		return nil, fmt.Errorf("failed to unmarshal response: %w", err)
	}
	return &out, nil
}

// track applies a proxied reply to the investigation: the first
// episode_id starts it, an unfenced resolution with a plan completes
// it. The record is saved (and an update pushed) on every turn; a save
// that fails validation changes nothing and is only logged upstream.
func (s *Server) track(invID string, resp *tzResponse) {
	var plan string
	if len(resp.Choices) > 0 {
		var res struct {
			ResponseType   string `json:"response_type"`
			ResolutionPlan string `json:"resolution_plan"`
		}
		if json.Unmarshal([]byte(resp.Choices[0].Message.Content), &res) == nil &&
			res.ResponseType == "resolution" && res.ResolutionPlan != "" {
			plan = res.ResolutionPlan
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.collections[Investigations]
	rec, ok := c.recs[invID]
	if !ok {
		return
	}
	if utf8.RuneCountInString(plan) > 5000 {
		return
	}
	if resp.EpisodeID != "" && recString(rec, "episode_id") == "" {
		rec["episode_id"] = resp.EpisodeID
		rec["status"] = "in_progress"
	}
	if plan != "" {
		rec["resolution_plan"] = plan
		rec["status"] = "completed"
		rec["completed_at"] = formatPB(s.Now())
	}
	s.saveLocked(c, rec)
}
