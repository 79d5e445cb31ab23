package nannyapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/nannyagent/nannyagent/internal/metrics"
)

// MaxHostname is agents.hostname's limit (500 when exceeded); the
// other limits of the agents collection are the metrics package's.
const MaxHostname = 255

const agentPath = "/api/agent"

// DeviceAuth is device-auth-start's answer.
type DeviceAuth struct {
	DeviceCode string `json:"device_code"`
	UserCode   string `json:"user_code"`
	// VerificationURI is the portal page that takes the user code.
	VerificationURI string `json:"verification_uri"`
	// ExpiresIn is in seconds (600).
	ExpiresIn int `json:"expires_in"`
}

// RegisterRequest is what the agent sends while polling register.
type RegisterRequest struct {
	DeviceCode     string   `json:"device_code"`
	Hostname       string   `json:"hostname"`
	Platform       string   `json:"platform"`
	PlatformFamily string   `json:"platform_family"`
	Version        string   `json:"version"`
	PrimaryIP      string   `json:"primary_ip"`
	KernelVersion  string   `json:"kernel_version"`
	AllIPs         []string `json:"all_ips"`
	OSType         string   `json:"os_type"`
	OSInfo         string   `json:"os_info,omitempty"`
	OSVersion      string   `json:"os_version,omitempty"`
	Arch           string   `json:"arch,omitempty"`
}

// TokenResponse is register's, refresh's and renew-refresh-token's
// answer. Against the real backend RefreshToken is empty after refresh
// (keep the old one), TokenType is never sent, and ExpiresIn (3600)
// understates the JWT's real lifetime: use ParseToken.
type TokenResponse struct {
	AccessToken           string `json:"access_token"`
	RefreshToken          string `json:"refresh_token"`
	ExpiresIn             int    `json:"expires_in"`
	AgentID               string `json:"agent_id"`
	TokenType             string `json:"token_type,omitempty"`
	RefreshTokenExpiresIn int    `json:"refresh_token_expires_in,omitempty"`
}

// RegisterWithTokenRequest is register-with-token's body (static nsk_
// tokens).
type RegisterWithTokenRequest struct {
	Hostname       string   `json:"hostname"`
	OSType         string   `json:"os_type"`
	PlatformFamily string   `json:"platform_family"`
	Version        string   `json:"version"`
	PrimaryIP      string   `json:"primary_ip"`
	KernelVersion  string   `json:"kernel_version"`
	AllIPs         []string `json:"all_ips"`
}

// TruncateRunes cuts s to at most n characters, as the backend counts
// them (PocketBase's max length counts runes, not bytes).
func TruncateRunes(s string, n int) string { return truncateRunes(s, n) }

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// checkHost refuses what the backend would answer with a 500 (blank or
// long required fields) and cuts the optional fields it would refuse.
func checkHost(hostname, version *string, primaryIP, kernel *string) error {
	switch {
	case *hostname == "":
		return errors.New("nannyapi: hostname is required")
	case utf8.RuneCountInString(*hostname) > MaxHostname:
		return errors.New("nannyapi: hostname is longer than 255 characters")
	case *version == "":
		return errors.New("nannyapi: version is required")
	}
	*version = truncateRunes(*version, metrics.MaxVersion)
	*kernel = truncateRunes(*kernel, metrics.MaxKernelVersion)
	if utf8.RuneCountInString(*primaryIP) > metrics.MaxPrimaryIP {
		*primaryIP = ""
	}
	return nil
}

// DeviceAuthStart starts the device flow.
func (c *Client) DeviceAuthStart(ctx context.Context) (*DeviceAuth, error) {
	var out DeviceAuth
	err := c.do(ctx, &request{
		op: "device-auth-start", method: http.MethodPost, path: agentPath,
		body: struct {
			Action string `json:"action"`
		}{"device-auth-start"}, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Register polls register once. Until the user authorizes the code the
// answer is an *Error with IsAuthorizationPending. Hostname and Version
// are required; KernelVersion and Version are cut to the backend's
// limits.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*TokenResponse, error) {
	if req.DeviceCode == "" {
		return nil, errors.New("nannyapi: device code is required")
	}
	if err := checkHost(&req.Hostname, &req.Version, &req.PrimaryIP, &req.KernelVersion); err != nil {
		return nil, err
	}
	var out TokenResponse
	err := c.do(ctx, &request{
		op: "register", method: http.MethodPost, path: agentPath,
		body: struct {
			Action string `json:"action"`
			RegisterRequest
		}{"register", req},
		ok: []int{http.StatusOK, http.StatusCreated}, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) tokenAction(ctx context.Context, action, refreshToken string) (*TokenResponse, error) {
	if refreshToken == "" {
		return nil, errors.New("nannyapi: " + action + ": no refresh token")
	}
	var out TokenResponse
	err := c.do(ctx, &request{
		op: action, method: http.MethodPost, path: agentPath,
		body: struct {
			Action       string `json:"action"`
			RefreshToken string `json:"refresh_token"`
		}{action, refreshToken}, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Refresh gets a new access token. The refresh token is not rotated:
// the answer's RefreshToken is empty.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*TokenResponse, error) {
	return c.tokenAction(ctx, "refresh", refreshToken)
}

// RenewRefreshToken asks for a new refresh token. Backends without
// renewal (the real one) answer an *Error with IsUnknownAction.
func (c *Client) RenewRefreshToken(ctx context.Context, refreshToken string) (*TokenResponse, error) {
	return c.tokenAction(ctx, "renew-refresh-token", refreshToken)
}

// RegisterWithToken registers with a static nsk_ token and returns the
// agent ID. Backends without static tokens (the real one) answer an
// *Error with IsUnknownAction.
func (c *Client) RegisterWithToken(ctx context.Context, staticToken string, req RegisterWithTokenRequest) (string, error) {
	if staticToken == "" {
		return "", errors.New("nannyapi: register-with-token: no static token")
	}
	if err := checkHost(&req.Hostname, &req.Version, &req.PrimaryIP, &req.KernelVersion); err != nil {
		return "", err
	}
	var out struct {
		AgentID string `json:"agent_id"`
	}
	err := c.do(ctx, &request{
		op: "register-with-token", method: http.MethodPost, path: agentPath, bearer: staticToken,
		body: struct {
			Action string `json:"action"`
			RegisterWithTokenRequest
		}{"register-with-token", req},
		ok: []int{http.StatusOK, http.StatusCreated}, out: &out,
	})
	if err != nil {
		return "", err
	}
	if out.AgentID == "" {
		return "", &Error{Op: "register-with-token", Status: http.StatusOK, Message: "answer has no agent_id"}
	}
	return out.AgentID, nil
}

// IngestMetrics sends one metrics sample. The metrics package owns the
// payload and the backend's limits: a payload that fails
// metrics.Validate is refused here, unsent, with its *ValidationError
// (not Retryable: the same payload would be refused again).
func (c *Client) IngestMetrics(ctx context.Context, p metrics.Payload) error {
	if p.Action == "" {
		p.Action = metrics.ActionIngestMetrics
	}
	if err := metrics.Validate(p); err != nil {
		return fmt.Errorf("nannyapi: ingest-metrics: %w", err)
	}
	return c.do(ctx, &request{
		op: "ingest-metrics", method: http.MethodPost, path: agentPath, auth: true, agentID: true, body: p,
	})
}

// Health checks that the backend answers (GET /api/health, no auth).
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, &request{op: "GET /api/health", method: http.MethodGet, path: "/api/health"})
}
