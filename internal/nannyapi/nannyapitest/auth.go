package nannyapitest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// User is a portal account.
type User struct {
	ID    string
	Email string
	// Token is a valid user JWT (issued at creation with the server's
	// AccessTokenTTL); UserToken issues a fresh one.
	Token string
}

type agent struct {
	id, userID, deviceCodeID, deviceUserCode       string
	hostname, osType, osInfo, osVersion, version   string
	primaryIP, kernelVersion, arch, platformFamily string
	allIPs                                         []string
	lastSeen                                       time.Time
	refreshHash                                    string
	refreshExpires                                 time.Time
	staticToken                                    string
	metrics                                        *Metrics
	metricsCount                                   int
}

type deviceCode struct {
	id, deviceCode, userCode string
	authorized, consumed     bool
	userID, agentID          string
	expires                  time.Time
}

type staticToken struct {
	userID, agentID string
}

// Agent is what the backend stores about a registered agent.
type Agent struct {
	ID, UserID, Hostname, OSType, OSInfo, OSVersion, Version string
	PrimaryIP, KernelVersion, Arch, PlatformFamily           string
	AllIPs                                                   []string
	LastSeen                                                 time.Time
	RefreshTokenExpires                                      time.Time
	// Revoked is true once the refresh token was cleared (revoke).
	Revoked bool
	// MetricsCount is how many ingest-metrics calls were stored.
	MetricsCount int
}

// Registration is an agent registered by a helper, with its tokens.
type Registration struct {
	AgentID      string
	AccessToken  string
	RefreshToken string
}

// pbID is a PocketBase record ID: 15 lowercase alphanumerics.
func pbID() string { return randomFrom("abcdefghijklmnopqrstuvwxyz0123456789", 15) }

func randomFrom(alphabet string, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func randomHex(nbytes int) string {
	b := make([]byte, nbytes)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func hashToken(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

// CreateUser adds a portal user and returns it with a valid token.
func (s *Server) CreateUser(email string) *User {
	u := &User{ID: pbID(), Email: email}
	s.mu.Lock()
	s.users[u.ID] = u
	u.Token = s.issueLocked(UsersCollectionID, u.ID)
	s.notifyLocked()
	s.mu.Unlock()
	return u
}

// UserToken issues a fresh token for u.
func (s *Server) UserToken(u *User) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueLocked(UsersCollectionID, u.ID)
}

// AgentToken issues a fresh access token for an agent, as refresh does.
func (s *Server) AgentToken(agentID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueLocked(AgentsCollectionID, agentID)
}

// issueLocked signs a PocketBase auth JWT. Two tokens for the same
// record issued within one second are the same string, as with
// PocketBase; after ExpireAccessTokens new tokens expire later than
// every expired one, so they differ from them as a real refresh's do.
func (s *Server) issueLocked(collectionID, id string) string {
	exp := max(s.Now().Add(s.opts.AccessTokenTTL).Unix(), s.expiredUpTo+1)
	s.maxExp = max(s.maxExp, exp)
	payload, _ := json.Marshal(map[string]any{
		"collectionId": collectionID, "exp": exp, "id": id, "refreshable": true, "type": "auth",
	})
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(unsigned))
	return unsigned + "." + enc.EncodeToString(m.Sum(nil))
}

// ExpireAccessTokens makes every access token issued so far (user and
// agent) invalid, as if their exp had passed; new ones work.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	s.expiredUpTo = s.maxExp
	s.notifyLocked()
	s.mu.Unlock()
}

// ExpireRefreshTokens makes every agent's refresh token expired.
func (s *Server) ExpireRefreshTokens() {
	s.mu.Lock()
	for _, a := range s.agents {
		if a.refreshHash != "" {
			a.refreshExpires = s.Now().Add(-time.Second)
		}
	}
	s.notifyLocked()
	s.mu.Unlock()
}

// RevokeAgent does what the revoke action does: it clears the refresh
// token. The agent's access tokens keep working until they expire.
func (s *Server) RevokeAgent(agentID string) {
	s.mu.Lock()
	if a, ok := s.agents[agentID]; ok {
		a.refreshHash = ""
		a.refreshExpires = time.Time{}
	}
	s.notifyLocked()
	s.mu.Unlock()
}

// SetRenewalSupported makes renew-refresh-token a known action (the
// real backend answers 400 unknown action, the default).
func (s *Server) SetRenewalSupported(on bool) {
	s.mu.Lock()
	s.renewal = on
	s.mu.Unlock()
}

// SetStaticTokensSupported makes register-with-token a known action and
// nsk_ bearers (with X-Agent-ID) valid on the REST routes (the real
// backend has neither, the default).
func (s *Server) SetStaticTokensSupported(on bool) {
	s.mu.Lock()
	s.staticAuth = on
	s.mu.Unlock()
}

// CreateStaticToken makes an nsk_ token for u, as a portal with static
// token support would.
func (s *Server) CreateStaticToken(u *User) string {
	tok := "nsk_" + randomHex(16)
	s.mu.Lock()
	s.staticTokens[tok] = &staticToken{userID: u.ID}
	s.mu.Unlock()
	return tok
}

// Authorize authorizes a device code as u, as the portal does through
// the authorize action. Its errors are the action's messages.
func (s *Server) Authorize(u *User, userCode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if userCode == "" {
		return errors.New("user_code required")
	}
	dc, ok := s.userCodes[userCode]
	if !ok {
		return errors.New("invalid user code")
	}
	if s.Now().After(dc.expires) {
		return errors.New("code expired")
	}
	dc.authorized = true
	dc.userID = u.ID
	s.notifyLocked()
	return nil
}

// PendingUserCodes lists the user codes started and not yet
// authorized, oldest first; a test stands in for the person reading
// the code off the agent's screen.
func (s *Server) PendingUserCodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, dc := range s.deviceCodeList() {
		if !dc.authorized {
			out = append(out, dc.userCode)
		}
	}
	return out
}

func (s *Server) deviceCodeList() []*deviceCode {
	out := make([]*deviceCode, 0, len(s.deviceCodes))
	for _, dc := range s.deviceCodes {
		out = append(out, dc)
	}
	// Codes are random; expiry follows creation.
	slices.SortFunc(out, func(a, b *deviceCode) int { return a.expires.Compare(b.expires) })
	return out
}

// AuthorizePending waits for a device code nobody authorized yet (an
// agent running the device flow), authorizes it as u and returns its
// user code: the person at the portal, for end-to-end tests.
func (s *Server) AuthorizePending(ctx context.Context, u *User) (string, error) {
	var code string
	err := s.Wait(ctx, func() bool {
		codes := s.PendingUserCodes()
		if len(codes) == 0 {
			return false
		}
		code = codes[0]
		return true
	})
	if err != nil {
		return "", err
	}
	return code, s.Authorize(u, code)
}

// RegisterAgent registers an agent owned by u directly (as a completed
// device flow would) and returns its tokens.
func (s *Server) RegisterAgent(u *User, hostname string) Registration {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &agent{
		id: pbID(), userID: u.ID, hostname: hostname, osType: "linux",
		platformFamily: "debian", version: "1.0.0", lastSeen: s.Now(),
	}
	refresh := randomHex(16)
	a.refreshHash = hashToken(refresh)
	a.refreshExpires = s.Now().Add(s.opts.RefreshTokenTTL)
	s.addAgentLocked(a)
	return Registration{AgentID: a.id, AccessToken: s.issueLocked(AgentsCollectionID, a.id), RefreshToken: refresh}
}

func (s *Server) addAgentLocked(a *agent) {
	s.agents[a.id] = a
	s.agentOrder = append(s.agentOrder, a.id)
	s.notifyLocked()
}

// Agent returns what the backend stores about an agent.
func (s *Server) Agent(id string) (Agent, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[id]
	if !ok {
		return Agent{}, false
	}
	return Agent{
		ID: a.id, UserID: a.userID, Hostname: a.hostname, OSType: a.osType, OSInfo: a.osInfo,
		OSVersion: a.osVersion, Version: a.version, PrimaryIP: a.primaryIP, KernelVersion: a.kernelVersion,
		Arch: a.arch, PlatformFamily: a.platformFamily, AllIPs: append([]string(nil), a.allIPs...),
		LastSeen: a.lastSeen, RefreshTokenExpires: a.refreshExpires, Revoked: a.refreshHash == "" && a.staticToken == "",
		MetricsCount: a.metricsCount,
	}, true
}

// Agents lists the registered agents' IDs in registration order.
func (s *Server) Agents() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.agentOrder...)
}

// authRecord is who a request is authenticated as.
type authRecord struct {
	collectionID string
	id           string
}

func (a *authRecord) isAgent() bool { return a != nil && a.collectionID == AgentsCollectionID }

// owner is the user on whose behalf the record acts.
func (s *Server) ownerLocked(a *authRecord) string {
	if a.isAgent() {
		if ag, ok := s.agents[a.id]; ok {
			return ag.userID
		}
		return ""
	}
	return a.id
}

// bearer strips "Bearer " case-insensitively; a bare token also works.
func bearer(r *http.Request) string {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	if len(h) >= 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return h
}

// authenticate is LoadAuthContext: a valid bearer gives a record, any
// other (missing, malformed, expired, unknown, nsk_) none.
func (s *Server) authenticate(r *http.Request) *authRecord {
	tok := bearer(r)
	if tok == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasPrefix(tok, "nsk_") {
		if !s.staticAuth {
			return nil
		}
		st, ok := s.staticTokens[tok]
		if !ok || st.agentID == "" {
			return nil
		}
		if id := r.Header.Get("X-Agent-ID"); id != "" && id != st.agentID {
			return nil
		}
		return &authRecord{collectionID: AgentsCollectionID, id: st.agentID}
	}
	return s.verifyLocked(tok)
}

func (s *Server) verifyLocked(tok string) *authRecord {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var c struct {
		CollectionID string `json:"collectionId"`
		Exp          int64  `json:"exp"`
		ID           string `json:"id"`
		Type         string `json:"type"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Type != "auth" || !s.Now().Before(time.Unix(c.Exp, 0)) || c.Exp <= s.expiredUpTo {
		return nil
	}
	switch c.CollectionID {
	case AgentsCollectionID:
		if _, ok := s.agents[c.ID]; !ok {
			return nil
		}
	case UsersCollectionID:
		if _, ok := s.users[c.ID]; !ok {
			return nil
		}
	default:
		return nil
	}
	return &authRecord{collectionID: c.CollectionID, id: c.ID}
}

// validationError formats errors like ozzo-validation's Errors (keys
// sorted, "; " between them, a final "."), which is how the backend's
// "failed to create agent: …" reads.
func validationError(errs map[string]string) string {
	keys := slices.Sorted(maps.Keys(errs))
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", k, errs[k])
	}
	b.WriteString(".")
	return b.String()
}

func maxLenMsg(n int) string { return fmt.Sprintf("Must be no more than %d character(s).", n) }
