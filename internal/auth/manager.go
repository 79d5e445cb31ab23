// Package auth is the agent's side of NannyAPI authentication: the token
// files the earlier agent kept (token.json and .refresh_token, §2.2 of
// the contract), registration (the device flow and static nsk_ tokens),
// and a Manager that hands out valid access tokens, refreshing them
// before they expire and after a 401, and renewing the refresh token
// where the backend can.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"go.uber.org/zap"
)

// Modes of a registration.
const (
	// ModeDevice: registered through the device flow; access and
	// refresh tokens in token.json.
	ModeDevice = "device"
	// ModeStatic: a static nsk_ token from the configuration is the
	// bearer, with X-Agent-ID.
	ModeStatic = "static"
)

// RefreshTokenLifetime is how long the backend's refresh token lives
// after registration (it is neither rotated nor extended by refresh).
const RefreshTokenLifetime = 30 * 24 * time.Hour

// DefaultRefreshMargin is how long before its expiry an access token is
// replaced, so that no request leaves with a token about to lapse.
const DefaultRefreshMargin = 5 * time.Minute

// invalidateGrace is how long a token this process just obtained is
// kept despite a 401: the backend hands out the same token for the same
// agent within a second, so refreshing again at once gets the same
// answer, and a storm of 401s would become a storm of refreshes.
const invalidateGrace = 10 * time.Second

// Options tune a Manager; the zero value is what the agent uses.
type Options struct {
	// Client talks to the backend. nil builds one from the
	// configuration with the Manager as its token source (Client()
	// returns it).
	Client *nannyapi.Client
	Logger *zap.Logger
	// Now is the clock (tests use the test server's).
	Now func() time.Time
	// RefreshMargin defaults to DefaultRefreshMargin.
	RefreshMargin time.Duration
}

// Renewal states of the refresh token's renewal.
const (
	RenewalUntried     = "untried"
	RenewalSupported   = "supported"
	RenewalUnsupported = "unsupported"
)

// Manager is the agent's token source (nannyapi.TokenSource). It is safe
// for concurrent use; concurrent callers that need a new token share one
// refresh.
type Manager struct {
	cfg    *config.Config
	client *nannyapi.Client
	log    *zap.Logger
	now    func() time.Time
	margin time.Duration
	files  files
	// static is the nsk_ token in static mode, "" otherwise.
	static string

	mu     sync.Mutex
	tok    *TokenFile
	stamp  stamp
	hasTok bool // a token.json version was seen (stamp is valid)
	// loadErr is why tok is unusable or nil.
	loadErr error
	// obtained is when this process got the current access token (zero
	// for one read from disk).
	obtained time.Time
	// refused is the access token a 401 refused.
	refused string
	flight  *flight
	// permanent is a refresh failure only a new registration fixes; it
	// is kept (no more refreshes) until token.json changes.
	permanent error
	renewal   string
	// nextRenewal is the earliest time renewal is tried again after a
	// failure (token_renewal_retry_interval_secs).
	nextRenewal time.Time
}

type flight struct {
	done chan struct{}
	tok  string
	err  error
}

// New returns the Manager of the configuration's registration. It reads
// the token files at once; a missing or broken registration is not an
// error here (Registered and Status say what is wrong, Token returns
// it), but an unusable configuration is.
func New(cfg *config.Config, opts Options) (*Manager, error) {
	m := &Manager{
		cfg: cfg, client: opts.Client, log: opts.Logger, now: opts.Now, margin: opts.RefreshMargin,
		files: newFiles(cfg.TokenPath), renewal: RenewalUntried,
	}
	if m.log == nil {
		m.log = zap.NewNop()
	}
	m.log = m.log.Named("auth")
	if m.now == nil {
		m.now = time.Now
	}
	if m.margin <= 0 {
		m.margin = DefaultRefreshMargin
	}
	if strings.HasPrefix(cfg.StaticToken, "nsk_") {
		m.static = cfg.StaticToken
	}
	if m.client == nil {
		c, err := nannyapi.NewFromConfig(cfg, m)
		if err != nil {
			return nil, err
		}
		m.client = c
	}
	m.mu.Lock()
	m.reloadLocked()
	m.mu.Unlock()
	return m, nil
}

// Client is the backend client that uses this Manager's tokens (and, in
// static mode, its agent ID as X-Agent-ID).
func (m *Manager) Client() *nannyapi.Client { return m.client }

// TokenPath is where the tokens are kept.
func (m *Manager) TokenPath() string { return m.files.tokenPath }

// Mode is ModeStatic when a static token is configured, else ModeDevice.
func (m *Manager) Mode() string {
	if m.static != "" {
		return ModeStatic
	}
	return ModeDevice
}

// reloadLocked reads the token files (again).
func (m *Manager) reloadLocked() {
	t, st, err := m.files.loadTokens()
	m.tok, m.stamp, m.loadErr = t, st, err
	m.hasTok = st != (stamp{})
	m.obtained, m.refused, m.permanent = time.Time{}, "", nil
	if m.static != "" {
		m.applyStaticAgentIDLocked()
	}
}

// reloadIfChangedLocked notices a token.json written by another process
// (a registration made while the daemon runs, a refresh by --status) and
// reads it.
func (m *Manager) reloadIfChangedLocked() {
	st, ok := stampOf(m.files.tokenPath)
	if ok == m.hasTok && (!ok || st == m.stamp) {
		return
	}
	m.reloadLocked()
}

// staticAgentIDLocked is the agent ID in static mode: the configuration's
// agent_id, else the one register-with-token named (in the marker).
func (m *Manager) staticAgentIDLocked() string {
	if m.cfg.AgentID != "" {
		return m.cfg.AgentID
	}
	if m.tok != nil && m.tok.Static() {
		return m.tok.AgentID
	}
	return ""
}

func (m *Manager) applyStaticAgentIDLocked() {
	if id := m.staticAgentIDLocked(); id != "" && m.client.AgentID() != id {
		m.client.SetAgentID(id)
	}
}

// AgentID is the registered agent's ID ("" when not registered).
func (m *Manager) AgentID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reloadIfChangedLocked()
	return m.agentIDLocked()
}

func (m *Manager) agentIDLocked() string {
	if m.static != "" {
		return m.staticAgentIDLocked()
	}
	if m.tok == nil {
		return ""
	}
	if m.tok.AgentID != "" {
		return m.tok.AgentID
	}
	if c, err := nannyapi.ParseToken(m.tok.AccessToken); err == nil && c.CollectionID == nannyapi.AgentsCollectionID {
		return c.ID
	}
	return ""
}

// Registered reports whether there is a registration to use: tokens in
// device mode, an agent ID in static mode. A refresh token that expired
// still counts until the backend refuses it.
func (m *Manager) Registered() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reloadIfChangedLocked()
	return m.problemLocked() == ""
}

// problemLocked says why the registration cannot be used ("" when it
// can).
func (m *Manager) problemLocked() string {
	if m.static != "" {
		if m.staticAgentIDLocked() == "" {
			return "a static token is configured but no agent ID is known: run sudo nannyagent --register (register-with-token names the agent) or set agent_id"
		}
		return ""
	}
	switch {
	case m.loadErr != nil:
		return m.loadErr.Error()
	case m.tok == nil:
		return ErrNotRegistered.Error()
	case m.tok.Static():
		return fmt.Sprintf("%s records a static-token registration (agent %s) but no static_token is configured: set static_token (or NANNYAI_STATIC_TOKEN), or register with the device flow: sudo nannyagent --register --force", m.files.tokenPath, m.tok.AgentID)
	case m.permanent != nil:
		return m.permanent.Error()
	}
	return ""
}

// accessExpiry is when an access token stops working: its exp claim,
// else the file's expires_at.
func (m *Manager) accessExpiry(t *TokenFile) time.Time {
	if c, err := nannyapi.ParseToken(t.AccessToken); err == nil {
		return c.Expires
	}
	return t.ExpiresAt
}

// refreshExpiry is when the refresh token dies, as far as is known.
func refreshExpiry(t *TokenFile) (time.Time, bool) {
	switch {
	case t.RefreshExpiresAt != nil:
		return *t.RefreshExpiresAt, true
	case t.RenewedAt != nil:
		return t.RenewedAt.Add(RefreshTokenLifetime), true
	case t.RegisteredAt != nil:
		return t.RegisteredAt.Add(RefreshTokenLifetime), true
	}
	return time.Time{}, false
}

// Token returns a valid access token (the static token in static mode),
// refreshing it first when it expires within the margin or a 401 refused
// it, and renewing the refresh token when it is due and the backend can.
func (m *Manager) Token(ctx context.Context) (string, error) {
	return m.token(ctx, false)
}

func (m *Manager) token(ctx context.Context, force bool) (string, error) {
	if m.static != "" {
		m.mu.Lock()
		m.reloadIfChangedLocked()
		m.mu.Unlock()
		return m.static, nil
	}
	m.mu.Lock()
	m.reloadIfChangedLocked()
	f := m.flight
	if f == nil {
		if p := m.problemLocked(); p != "" && m.permanent == nil {
			err := m.loadErr
			m.mu.Unlock()
			if err != nil {
				return "", err
			}
			return "", errors.New(p)
		}
		now := m.now()
		exp := m.accessExpiry(m.tok)
		usable := m.tok.AccessToken != "" && m.tok.AccessToken != m.refused && now.Before(exp)
		fresh := usable && now.Before(exp.Add(-m.margin))
		if m.permanent != nil {
			// The last access token may outlive the refresh token by
			// days: use it while it works, then say what to do.
			err := m.permanent
			tok := m.tok.AccessToken
			m.mu.Unlock()
			if usable && !force {
				return tok, nil
			}
			return "", err
		}
		if fresh && !force && !m.renewalDueLocked(now) {
			tok := m.tok.AccessToken
			m.mu.Unlock()
			return tok, nil
		}
		f = &flight{done: make(chan struct{})}
		m.flight = f
		snapshot := *m.tok
		// The refresh outlives a caller that gives up: the others
		// waiting for it, and the next call, still want its answer.
		go m.fly(context.WithoutCancel(ctx), f, snapshot, usable, force)
	}
	m.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// renewalDueLocked: the refresh token expires within
// token_renewal_threshold_days, renewal is not known to be unsupported,
// and no failed attempt asks to wait.
func (m *Manager) renewalDueLocked(now time.Time) bool {
	if m.renewal == RenewalUnsupported || now.Before(m.nextRenewal) || m.tok.RefreshToken == "" {
		return false
	}
	exp, ok := refreshExpiry(m.tok)
	if !ok {
		return false
	}
	threshold := time.Duration(m.cfg.TokenRenewalThresholdDays) * 24 * time.Hour
	return !now.Before(exp.Add(-threshold)) && now.Before(exp)
}

// fly refreshes (and renews when due) for every caller waiting on f.
func (m *Manager) fly(ctx context.Context, f *flight, t TokenFile, usable, force bool) {
	tok, err := m.refresh(ctx, &t, usable, force)
	m.mu.Lock()
	m.flight = nil
	m.mu.Unlock()
	f.tok, f.err = tok, err
	close(f.done)
}

func (m *Manager) refresh(ctx context.Context, t *TokenFile, usable, force bool) (string, error) {
	m.mu.Lock()
	renew := m.renewalDueLocked(m.now())
	m.mu.Unlock()
	if renew {
		if tok, ok := m.renew(ctx, t); ok {
			return tok, nil
		}
		if usable && !force {
			return t.AccessToken, nil
		}
	}
	if t.RefreshToken == "" {
		err := fmt.Errorf("%s has no refresh token: register again with sudo nannyagent --register --force", m.files.tokenPath)
		m.setPermanent(t, err)
		return m.fallback(t, usable && !force, err)
	}
	resp, err := m.client.Refresh(ctx, t.RefreshToken)
	if err != nil {
		if e, ok := nannyapi.AsError(err); ok && (e.IsRefreshTokenExpired() || e.IsRefreshTokenInvalid()) {
			perm := m.reregisterError(t, e)
			m.setPermanent(t, perm)
			return m.fallback(t, usable && !force, perm)
		}
		m.log.Warn("token refresh failed", zap.Error(err))
		return m.fallback(t, usable && !force, fmt.Errorf("refreshing the access token: %w", err))
	}
	if resp.AccessToken == "" {
		return m.fallback(t, usable && !force, errors.New("refreshing the access token: the answer has no access_token"))
	}
	m.apply(t, resp, false)
	return resp.AccessToken, nil
}

// fallback returns the current token when it still works (a refresh
// that failed before expiry is not yet a problem), else err.
func (m *Manager) fallback(t *TokenFile, usable bool, err error) (string, error) {
	if usable {
		return t.AccessToken, nil
	}
	return "", err
}

// renew tries renew-refresh-token once; a backend without the action
// is remembered, and other failures wait
// token_renewal_retry_interval_secs.
func (m *Manager) renew(ctx context.Context, t *TokenFile) (string, bool) {
	resp, err := m.client.RenewRefreshToken(ctx, t.RefreshToken)
	if err == nil && (resp.RefreshToken == "" || resp.AccessToken == "") {
		err = errors.New("renew-refresh-token: the answer lacks a refresh or access token")
	}
	if err == nil {
		m.mu.Lock()
		m.renewal = RenewalSupported
		m.mu.Unlock()
		m.apply(t, resp, true)
		return resp.AccessToken, true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if nannyapi.IsUnknownAction(err) {
		m.renewal = RenewalUnsupported
		m.log.Info("the backend cannot renew refresh tokens (unknown action); re-register before the refresh token expires")
		return "", false
	}
	m.nextRenewal = m.now().Add(time.Duration(m.cfg.TokenRenewalRetryIntervalSecs) * time.Second)
	m.log.Warn("refresh token renewal failed", zap.Error(err), zap.Time("retry_after", m.nextRenewal))
	return "", false
}

// apply stores a token answer in memory and on disk. A file that cannot
// be written is logged, not fatal: the token in memory still works.
func (m *Manager) apply(t *TokenFile, resp *nannyapi.TokenResponse, renewed bool) {
	now := m.now()
	n := *t
	n.AccessToken = resp.AccessToken
	if resp.RefreshToken != "" {
		n.RefreshToken = resp.RefreshToken
	}
	if resp.TokenType != "" {
		n.TokenType = resp.TokenType
	}
	if n.AgentID == "" {
		n.AgentID = resp.AgentID
	}
	n.ExpiresAt = now.Add(time.Duration(resp.ExpiresIn) * time.Second).UTC()
	if c, err := nannyapi.ParseToken(resp.AccessToken); err == nil {
		n.ExpiresAt = c.Expires
	}
	if renewed {
		at := now.UTC()
		n.RenewedAt = &at
		n.RefreshExpiresAt = nil
		if resp.RefreshTokenExpiresIn > 0 {
			exp := now.Add(time.Duration(resp.RefreshTokenExpiresIn) * time.Second).UTC()
			n.RefreshExpiresAt = &exp
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tok == nil || m.tok.RefreshToken != t.RefreshToken {
		// Another process wrote new tokens (a new registration) while
		// this refresh ran: theirs win.
		return
	}
	if err := m.files.saveTokens(&n); err != nil {
		m.log.Warn("cannot save the new tokens; they are kept in memory", zap.String("path", m.files.tokenPath), zap.Error(err))
	}
	m.tok, m.loadErr, m.permanent, m.refused = &n, nil, nil, ""
	m.obtained = now
	m.stamp, m.hasTok = stampOf(m.files.tokenPath)
}

func (m *Manager) setPermanent(t *TokenFile, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tok != nil && m.tok.RefreshToken == t.RefreshToken {
		m.permanent = err
	}
	m.log.Error("re-registration needed", zap.Error(err))
}

// ReregisterError is a refresh the backend refused for good: the refresh
// token expired or is unknown (revoked, or replaced by another
// registration). Only a new registration helps.
type ReregisterError struct {
	// Expired is true for an expired refresh token, false for a refused
	// one.
	Expired bool
	// Since is the date the 30 days count from, when known; Renewed
	// says it was a renewal rather than the registration.
	Since   time.Time
	Renewed bool
	// Estimated says Since was inferred (a file the earlier agent
	// wrote).
	Estimated bool
	// Backend is the backend's answer.
	Backend *nannyapi.Error
}

// ErrReregister matches every *ReregisterError with errors.Is.
var ErrReregister = errors.New("the registration must be renewed")

func (e *ReregisterError) Error() string {
	const fix = "run `sudo nannyagent --register --force` to register again"
	if !e.Expired {
		return "the backend refused the refresh token (" + e.Backend.Message + ": the agent was revoked, or registered again from another copy of its token files): " + fix
	}
	if e.Since.IsZero() {
		return "the refresh token has expired (30 days after registration): " + fix
	}
	what := "registration"
	if e.Renewed {
		what = "renewal"
	}
	est := ""
	if !e.Renewed && e.Estimated {
		est = "about "
	}
	return fmt.Sprintf("the refresh token has expired (%s on %s%s + 30 days): %s", what, est, e.Since.UTC().Format("2006-01-02"), fix)
}

// Is makes errors.Is(err, ErrReregister) true.
func (e *ReregisterError) Is(target error) bool { return target == ErrReregister }

func (m *Manager) reregisterError(t *TokenFile, be *nannyapi.Error) *ReregisterError {
	e := &ReregisterError{Expired: be.IsRefreshTokenExpired(), Backend: be}
	switch {
	case t.RenewedAt != nil:
		e.Since, e.Renewed = *t.RenewedAt, true
	case t.RegisteredAt != nil:
		e.Since, e.Estimated = *t.RegisteredAt, t.Estimated
	}
	return e
}

// Invalidate says a request was refused with the current token (a 401):
// the next Token gets a new one. A token obtained moments ago is kept,
// see invalidateGrace.
func (m *Manager) Invalidate() {
	if m.static != "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tok == nil || m.flight != nil {
		return
	}
	if !m.obtained.IsZero() && m.now().Sub(m.obtained) < invalidateGrace {
		return
	}
	m.refused = m.tok.AccessToken
}

// Check proves the registration against the backend with the cheapest
// call that fails when the credentials do. In device mode that is a
// refresh: it reaches the backend and checks the refresh token, the one
// credential that can die while the agent runs (expired after 30 days,
// or cleared by revoke, which leaves access tokens working); the records
// API cannot tell, since it answers a refused token as a guest with an
// empty page. In static mode it is GET /api/investigations?id= of an ID
// no record has: that route requires auth (401 without it), and a 404
// proves the token was accepted.
func (m *Manager) Check(ctx context.Context) error {
	if m.static != "" {
		m.mu.Lock()
		m.reloadIfChangedLocked()
		p := m.problemLocked()
		m.mu.Unlock()
		if p != "" {
			return errors.New(p)
		}
		_, err := m.client.GetInvestigation(ctx, probeID)
		if e, ok := nannyapi.AsError(err); ok && e.IsNotFound() && !e.Envelope {
			return nil
		}
		if err == nil {
			return nil
		}
		if nannyapi.IsUnauthorized(err) {
			return fmt.Errorf("the backend refused the static token: %w", err)
		}
		return err
	}
	_, err := m.token(ctx, true)
	return err
}

// probeID is a well-formed record ID no record has (PocketBase IDs are
// 15 random lowercase alphanumerics; all zeros is never generated in
// practice).
const probeID = "000000000000000"

// Status is what --status shows of the registration.
type Status struct {
	Mode       string `json:"mode"`
	Registered bool   `json:"registered"`
	// Problem says why the registration cannot be used and what to do.
	Problem   string `json:"problem,omitempty"`
	AgentID   string `json:"agent_id,omitempty"`
	TokenPath string `json:"token_path"`
	// AccessTokenExpires is the access token's expiry (zero in static
	// mode).
	AccessTokenExpires time.Time `json:"access_token_expires,omitzero"`
	// RegisteredAt is when the agent registered; Estimated when it was
	// inferred for a file the earlier agent wrote.
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	Estimated    bool      `json:"registered_at_estimated,omitempty"`
	// RefreshTokenExpires is when a new registration will be needed
	// unless the refresh token is renewed (zero when unknown).
	RefreshTokenExpires time.Time `json:"refresh_token_expires,omitzero"`
	// Renewal is RenewalUntried, RenewalSupported or RenewalUnsupported.
	Renewal string `json:"renewal"`
}

// Status describes the registration as it stands, without asking the
// backend.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reloadIfChangedLocked()
	s := Status{Mode: m.Mode(), TokenPath: m.files.tokenPath, Renewal: m.renewal, AgentID: m.agentIDLocked()}
	s.Problem = m.problemLocked()
	s.Registered = s.Problem == ""
	if m.tok != nil && m.tok.RegisteredAt != nil {
		s.RegisteredAt, s.Estimated = *m.tok.RegisteredAt, m.tok.Estimated
	}
	if m.static != "" || m.tok == nil || m.tok.Static() {
		return s
	}
	if m.tok.AccessToken != "" {
		s.AccessTokenExpires = m.accessExpiry(m.tok)
	}
	if exp, ok := refreshExpiry(m.tok); ok {
		s.RefreshTokenExpires = exp
	}
	return s
}
