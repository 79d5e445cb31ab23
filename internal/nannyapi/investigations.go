package nannyapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const investigationsPath = "/api/investigations"

// Investigation statuses.
const (
	StatusPending    = "pending"
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
)

// Investigation is the backend's investigation answer (create and GET).
// Metadata comes back empty from GET whatever was stored; the realtime
// and records payloads carry the real one.
type Investigation struct {
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
	Metadata       map[string]any `json:"metadata"`
	InferenceCount int            `json:"inference_count"`
}

// InvestigationSummary is one item of the list.
type InvestigationSummary struct {
	ID             string     `json:"id"`
	AgentID        string     `json:"agent_id"`
	UserPrompt     string     `json:"user_prompt"`
	Priority       string     `json:"priority"`
	Status         string     `json:"status"`
	InitiatedAt    time.Time  `json:"initiated_at"`
	CompletedAt    *time.Time `json:"completed_at"`
	InferenceCount int        `json:"inference_count"`
}

// CreateInvestigationRequest creates an investigation; Issue must have
// at least 10 characters once trimmed, Priority defaults to medium.
type CreateInvestigationRequest struct {
	AgentID  string `json:"agent_id"`
	Issue    string `json:"issue"`
	Priority string `json:"priority,omitempty"`
}

// CreateInvestigation creates an investigation (201); made with an
// agent token, its metadata says initiated_by "agent", and the backend
// pushes its create event to the agent itself.
func (c *Client) CreateInvestigation(ctx context.Context, req CreateInvestigationRequest) (*Investigation, error) {
	if req.AgentID == "" {
		return nil, errors.New("nannyapi: create investigation: agent ID is required")
	}
	if len(strings.TrimSpace(req.Issue)) < 10 {
		return nil, errors.New("nannyapi: create investigation: the issue must have at least 10 characters")
	}
	var out Investigation
	err := c.do(ctx, &request{
		op: "POST " + investigationsPath, method: http.MethodPost, path: investigationsPath,
		auth: true, agentID: true, body: req, ok: []int{http.StatusCreated}, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ChatMessage is one turn of a conversation.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// ChatRequest is a turn through the TensorZero proxy. Model is
// forwarded by nobody: the backend picks its own.
type ChatRequest struct {
	InvestigationID string        `json:"investigation_id"`
	Model           string        `json:"model"`
	Messages        []ChatMessage `json:"messages"`
}

// ChatResponse is the proxied chat completion.
type ChatResponse struct {
	ID        string       `json:"id"`
	EpisodeID string       `json:"episode_id"`
	Choices   []ChatChoice `json:"choices"`
	Created   int64        `json:"created"`
	Model     string       `json:"model"`
	Usage     struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

// ChatChoice is one choice of a ChatResponse.
type ChatChoice struct {
	Index        int         `json:"index"`
	FinishReason string      `json:"finish_reason"`
	Message      ChatMessage `json:"message"`
}

// Content is the first choice's content, the model's reply.
func (r *ChatResponse) Content() (string, error) {
	if len(r.Choices) == 0 {
		return "", errors.New("nannyapi: chat answer has no choices")
	}
	return r.Choices[0].Message.Content, nil
}

// Chat sends one turn of an investigation through the TensorZero proxy
// (bounded by the ChatTimeout). The first answer with an episode_id
// moves the investigation to in_progress; an unfenced resolution with a
// plan completes it.
func (c *Client) Chat(ctx context.Context, req ChatRequest) (*ChatResponse, error) {
	if req.InvestigationID == "" {
		return nil, errors.New("nannyapi: chat: investigation ID is required")
	}
	if len(req.Messages) == 0 {
		return nil, errors.New("nannyapi: chat: no messages")
	}
	var out ChatResponse
	err := c.do(ctx, &request{
		op: "POST " + investigationsPath + " (chat)", method: http.MethodPost, path: investigationsPath,
		auth: true, agentID: true, accept: true, body: req, timeout: c.chatTimeout, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// GetInvestigation reads one investigation (GET ?id=; the
// /api/investigations/<id> form does not exist).
func (c *Client) GetInvestigation(ctx context.Context, id string) (*Investigation, error) {
	if id == "" {
		return nil, errors.New("nannyapi: get investigation: ID is required")
	}
	var out Investigation
	err := c.do(ctx, &request{
		op: "GET " + investigationsPath, method: http.MethodGet, path: investigationsPath,
		query: url.Values{"id": {id}}, auth: true, agentID: true, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ListInvestigations lists the investigations of all the owner's
// agents (the backend answers null for none: an empty list here).
func (c *Client) ListInvestigations(ctx context.Context) ([]InvestigationSummary, error) {
	var out []InvestigationSummary
	err := c.do(ctx, &request{
		op: "GET " + investigationsPath, method: http.MethodGet, path: investigationsPath,
		auth: true, agentID: true, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// InvestigationUpdate changes an investigation; empty fields are left
// alone, and ResolutionPlan is only stored together with a Status.
// completed and failed also set completed_at.
type InvestigationUpdate struct {
	Status         string `json:"status,omitempty"`
	ResolutionPlan string `json:"resolution_plan,omitempty"`
	EpisodeID      string `json:"episode_id,omitempty"`
}

// MaxResolutionPlan is the investigations.resolution_plan limit.
const MaxResolutionPlan = 5000

// UpdateInvestigation PATCHes an investigation (agent tokens may). A
// plan longer than the backend's limit is cut to fit.
func (c *Client) UpdateInvestigation(ctx context.Context, id string, u InvestigationUpdate) error {
	if id == "" {
		return errors.New("nannyapi: update investigation: ID is required")
	}
	if u.ResolutionPlan != "" && u.Status == "" {
		return errors.New("nannyapi: update investigation: a resolution plan needs a status")
	}
	u.ResolutionPlan = truncateRunes(u.ResolutionPlan, MaxResolutionPlan)
	var out struct {
		Success string `json:"success"`
	}
	return c.do(ctx, &request{
		op: "PATCH " + investigationsPath, method: http.MethodPatch, path: investigationsPath,
		query: url.Values{"id": {id}}, auth: true, agentID: true, body: u, out: &out,
	})
}
