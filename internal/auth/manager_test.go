package auth

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/version"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// env is one test backend, one user at its portal, and a configuration
// whose token files live in a fresh directory.
type env struct {
	t    *testing.T
	srv  *nannyapitest.Server
	user *nannyapitest.User
	cfg  *config.Config
}

func newEnv(t *testing.T) *env {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	cfg := config.Defaults()
	cfg.NannyAPIURL = srv.URL
	cfg.TokenPath = filepath.Join(t.TempDir(), "nannyagent", "token.json")
	require.NoError(t, cfg.Validate())
	return &env{t: t, srv: srv, user: srv.CreateUser("u1@example.com"), cfg: cfg}
}

func (e *env) manager() *Manager {
	e.t.Helper()
	m, err := New(e.cfg, Options{Now: e.srv.Now})
	require.NoError(e.t, err)
	return m
}

var testHost = Host{Hostname: "testhost", OSType: "linux", PlatformFamily: "debian", Version: version.Version, KernelVersion: "6.18.0-test"}

// register runs the device flow with the user authorizing the code as
// soon as it is shown.
func (e *env) register(m *Manager) *Registration {
	e.t.Helper()
	reg, err := m.Register(context.Background(), RegisterOptions{
		Host: testHost, PollInterval: time.Millisecond,
		OnDeviceCode: func(d DeviceCode) { require.NoError(e.t, e.srv.Authorize(e.user, d.UserCode)) },
	})
	require.NoError(e.t, err)
	return reg
}

func readTokenFile(t *testing.T, path string) *TokenFile {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	tf, err := ParseTokenFile(data, path)
	require.NoError(t, err)
	return tf
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Mode().Perm()
}

// The device flow end to end: the agent polls, the user authorizes the
// code at the portal while it does, the tokens land in private files
// and work.
func TestDeviceFlowAuthorizedMidPoll(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	require.False(t, m.Registered())
	ctx := context.Background()

	authorized := make(chan string, 1)
	go func() {
		// The person at the portal acts after the agent has polled twice.
		_ = e.srv.Wait(ctx, func() bool { return e.srv.Count("register") >= 2 })
		code, err := e.srv.AuthorizePending(ctx, e.user)
		if err != nil {
			code = "error: " + err.Error()
		}
		authorized <- code
	}()
	var shown DeviceCode
	var waits []time.Duration
	reg, err := m.Register(ctx, RegisterOptions{
		Host: testHost, PollInterval: time.Millisecond,
		OnDeviceCode: func(d DeviceCode) { shown = d },
		OnWaiting:    func(r time.Duration) { waits = append(waits, r) },
	})
	require.NoError(t, err)
	assert.Equal(t, shown.UserCode, <-authorized)
	assert.Equal(t, "http://localhost:8080/agent/authorize?user_code="+shown.UserCode, shown.VerificationURI)

	agents := e.srv.Agents()
	require.Len(t, agents, 1)
	assert.Equal(t, &Registration{Mode: ModeDevice, AgentID: agents[0], TokenPath: e.cfg.TokenPath}, reg)

	polls := e.srv.RequestsFor("register")
	require.GreaterOrEqual(t, len(polls), 3)
	for i, p := range polls {
		want := 400
		if i == len(polls)-1 {
			want = 200
		}
		assert.Equal(t, want, p.Status, "poll %d", i)
		var body map[string]any
		require.NoError(t, json.Unmarshal(p.Body, &body))
		assert.Equal(t, version.Version, body["version"])
		assert.Equal(t, "testhost", body["hostname"])
	}
	// One countdown step per unanswered poll, each less than the 600 s
	// the code lives and never growing.
	require.Len(t, waits, len(polls)-1)
	for i, w := range waits {
		assert.LessOrEqual(t, w, 600*time.Second)
		assert.Positive(t, w)
		if i > 0 {
			assert.LessOrEqual(t, w, waits[i-1])
		}
	}

	a, ok := e.srv.Agent(agents[0])
	require.True(t, ok)
	assert.Equal(t, version.Version, a.Version)
	assert.Equal(t, e.user.ID, a.UserID)

	tf := readTokenFile(t, e.cfg.TokenPath)
	assert.Equal(t, agents[0], tf.AgentID)
	assert.Equal(t, "", tf.TokenType)
	claims, err := nannyapi.ParseToken(tf.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, claims.Expires, tf.ExpiresAt, "expires_at is the JWT's exp, not now+expires_in")
	require.NotNil(t, tf.RegisteredAt)
	assert.False(t, tf.Estimated)
	rt, err := os.ReadFile(filepath.Join(filepath.Dir(e.cfg.TokenPath), ".refresh_token"))
	require.NoError(t, err)
	assert.Equal(t, tf.RefreshToken, string(rt))
	assert.Len(t, tf.RefreshToken, 32)

	assert.Equal(t, os.FileMode(0o700), mode(t, filepath.Dir(e.cfg.TokenPath)))
	assert.Equal(t, os.FileMode(0o600), mode(t, e.cfg.TokenPath))
	assert.Equal(t, os.FileMode(0o600), mode(t, filepath.Join(filepath.Dir(e.cfg.TokenPath), ".refresh_token")))

	require.True(t, m.Registered())
	assert.Equal(t, agents[0], m.AgentID())
	tok, err := m.Token(ctx)
	require.NoError(t, err)
	assert.Equal(t, tf.AccessToken, tok)
	_, err = m.Client().ListInvestigations(ctx)
	require.NoError(t, err, "the stored token is accepted")
}

func TestDeviceFlowExpired(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	_, err := m.Register(context.Background(), RegisterOptions{
		Host: testHost, PollInterval: time.Millisecond,
		// Nobody authorizes; the code's 10 minutes pass.
		OnDeviceCode: func(DeviceCode) { e.srv.Advance(11 * time.Minute) },
	})
	require.ErrorIs(t, err, ErrDeviceCodeExpired)
	assert.Contains(t, err.Error(), "run `sudo nannyagent --register` again")
	assert.Equal(t, 1, e.srv.Count("register"))
	assert.NoFileExists(t, e.cfg.TokenPath)
	assert.False(t, m.Registered())
}

// The backend still says "pending" but the code's lifetime has passed on
// this host's clock: the flow ends rather than polling forever.
func TestDeviceFlowLocalDeadline(t *testing.T) {
	e := newEnv(t)
	var skew time.Duration
	m, err := New(e.cfg, Options{Now: func() time.Time { return e.srv.Now().Add(skew) }})
	require.NoError(t, err)
	_, err = m.Register(context.Background(), RegisterOptions{
		Host: testHost, PollInterval: time.Millisecond,
		OnWaiting: func(time.Duration) { skew = 11 * time.Minute },
	})
	require.ErrorIs(t, err, ErrDeviceCodeExpired)
	assert.Equal(t, 2, e.srv.Count("register"))
}

func TestDeviceFlowCodeAlreadyUsed(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	// The backend's answer when the code registered an agent whose
	// answer never arrived (§2.1).
	e.srv.Inject("register", nannyapitest.Fault{Status: 400, Body: `{"agent_id":"brppshbc1nycil4","error":"device code already used"}`})
	_, err := m.Register(context.Background(), RegisterOptions{Host: testHost, PollInterval: time.Millisecond})
	require.ErrorIs(t, err, ErrDeviceCodeUsed)
	assert.Contains(t, err.Error(), "agent brppshbc1nycil4")
	assert.NoFileExists(t, e.cfg.TokenPath)
}

// A 5xx or a reset while polling is not the end of the flow.
func TestDeviceFlowPollRetriesTransientErrors(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.srv.Inject("register", nannyapitest.Fault{Status: 502, Times: 1})
	var retries []error
	reg, err := m.Register(context.Background(), RegisterOptions{
		Host: testHost, PollInterval: time.Millisecond,
		OnRetry: func(err error) {
			retries = append(retries, err)
			codes := e.srv.PendingUserCodes()
			require.Len(t, codes, 1)
			require.NoError(t, e.srv.Authorize(e.user, codes[0]))
		},
	})
	require.NoError(t, err)
	require.Len(t, retries, 1)
	assert.Equal(t, 2, e.srv.Count("register"))
	assert.Equal(t, e.srv.Agents()[0], reg.AgentID)
}

func TestDeviceFlowRefusedDetails(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.srv.Inject("register", nannyapitest.Fault{Status: 500, Body: `{"error":"failed to create agent: hostname: Must be no more than 255 character(s)."}`})
	_, err := m.Register(context.Background(), RegisterOptions{Host: testHost, PollInterval: time.Millisecond})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the backend refused this host's details")
	assert.Equal(t, 1, e.srv.Count("register"))
}

func TestRegisterRefusesToReplaceWithoutForce(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	first := e.register(m)
	before, err := os.ReadFile(e.cfg.TokenPath)
	require.NoError(t, err)

	_, err = m.Register(context.Background(), RegisterOptions{Host: testHost})
	require.ErrorIs(t, err, ErrAlreadyRegistered)
	assert.Equal(t, "this host is already registered as agent "+first.AgentID+" ("+e.cfg.TokenPath+
		" exists): run `sudo nannyagent --register --force` to replace the registration", err.Error())
	assert.Equal(t, 1, e.srv.Count("device-auth-start"), "nothing was asked of the backend")
	after, err := os.ReadFile(e.cfg.TokenPath)
	require.NoError(t, err)
	assert.Equal(t, before, after)

	// A forced registration that fails leaves the old one in place.
	e.srv.Inject("device-auth-start", nannyapitest.Fault{Status: 500, Times: 1})
	_, err = m.Register(context.Background(), RegisterOptions{Host: testHost, Force: true})
	require.Error(t, err)
	after, err = os.ReadFile(e.cfg.TokenPath)
	require.NoError(t, err)
	assert.Equal(t, before, after)

	second, err := m.Register(context.Background(), RegisterOptions{
		Host: testHost, Force: true, PollInterval: time.Millisecond,
		OnDeviceCode: func(d DeviceCode) { require.NoError(t, e.srv.Authorize(e.user, d.UserCode)) },
	})
	require.NoError(t, err)
	assert.NotEqual(t, first.AgentID, second.AgentID)
	assert.Equal(t, second.AgentID, m.AgentID())
	assert.Equal(t, second.AgentID, readTokenFile(t, e.cfg.TokenPath).AgentID)
}

func TestStaticTokenSupported(t *testing.T) {
	e := newEnv(t)
	e.srv.SetStaticTokensSupported(true)
	e.cfg.StaticToken = e.srv.CreateStaticToken(e.user)
	m := e.manager()
	assert.Equal(t, ModeStatic, m.Mode())
	require.False(t, m.Registered(), "no agent ID yet")

	reg, err := m.Register(context.Background(), RegisterOptions{Host: testHost})
	require.NoError(t, err)
	agents := e.srv.Agents()
	require.Len(t, agents, 1)
	assert.Equal(t, &Registration{Mode: ModeStatic, AgentID: agents[0], TokenPath: e.cfg.TokenPath}, reg)
	rwt := e.srv.RequestsFor("register-with-token")
	require.Len(t, rwt, 1)
	assert.Equal(t, "Bearer "+e.cfg.StaticToken, rwt[0].Header.Get("Authorization"))
	assert.Empty(t, rwt[0].Header.Get("X-Agent-ID"))

	// The earlier agent's marker.
	tf := readTokenFile(t, e.cfg.TokenPath)
	assert.Equal(t, "static", tf.TokenType)
	assert.Equal(t, agents[0], tf.AgentID)
	assert.Empty(t, tf.AccessToken)
	assert.Empty(t, tf.RefreshToken)
	assert.True(t, tf.ExpiresAt.After(time.Now().Add(99*365*24*time.Hour)))
	assert.NoFileExists(t, filepath.Join(filepath.Dir(e.cfg.TokenPath), ".refresh_token"))
	assert.Equal(t, os.FileMode(0o600), mode(t, e.cfg.TokenPath))

	ctx := context.Background()
	for _, mm := range []*Manager{m, e.manager()} { // this one, and a later process
		require.True(t, mm.Registered())
		assert.Equal(t, agents[0], mm.AgentID())
		tok, err := mm.Token(ctx)
		require.NoError(t, err)
		assert.Equal(t, e.cfg.StaticToken, tok)
		e.srv.ResetRequests()
		require.NoError(t, mm.Check(ctx))
		_, err = mm.Client().ListInvestigations(ctx)
		require.NoError(t, err)
		for _, r := range e.srv.Requests() {
			assert.Equal(t, agents[0], r.Header.Get("X-Agent-ID"), r.Key())
			assert.Equal(t, "Bearer "+e.cfg.StaticToken, r.Header.Get("Authorization"), r.Key())
		}
		st := mm.Status()
		assert.Equal(t, ModeStatic, st.Mode)
		assert.True(t, st.Registered)
		assert.True(t, st.AccessTokenExpires.IsZero())
	}
}

func TestStaticTokenUnsupported(t *testing.T) {
	e := newEnv(t)
	e.cfg.StaticToken = "nsk_0123456789abcdef"
	m := e.manager()
	_, err := m.Register(context.Background(), RegisterOptions{Host: testHost})
	require.ErrorIs(t, err, ErrStaticUnsupported)
	assert.Equal(t, `the backend does not support static tokens (it answered "unknown action" to register-with-token): remove static_token in the configuration and register with the device flow: sudo nannyagent --register`, err.Error())
	assert.NoFileExists(t, e.cfg.TokenPath)

	e.cfg.SetFrom("static_token", "NANNYAI_STATIC_TOKEN")
	_, err = e.manager().Register(context.Background(), RegisterOptions{Host: testHost})
	require.ErrorIs(t, err, ErrStaticUnsupported)
	assert.Contains(t, err.Error(), "remove NANNYAI_STATIC_TOKEN in the environment")
}

func TestStaticTokenRefused(t *testing.T) {
	e := newEnv(t)
	e.srv.SetStaticTokensSupported(true)
	e.cfg.StaticToken = "nsk_notonethebackendmade"
	_, err := e.manager().Register(context.Background(), RegisterOptions{Host: testHost})
	require.ErrorIs(t, err, ErrStaticTokenRefused)
	assert.Contains(t, err.Error(), "invalid_token: static token not recognised or revoked")
}

// A 401 makes the client invalidate the token; the Manager refreshes
// once and the call goes through.
func TestRefreshOn401(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.register(m)
	old, err := m.Token(context.Background())
	require.NoError(t, err)

	e.srv.ResetRequests()
	e.srv.ExpireAccessTokens()
	_, err = m.Client().ListInvestigations(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("refresh"))
	reqs := e.srv.RequestsFor("GET /api/investigations")
	require.Len(t, reqs, 2)
	assert.Equal(t, 401, reqs[0].Status)
	assert.Equal(t, 200, reqs[1].Status)

	fresh, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.NotEqual(t, old, fresh)
	tf := readTokenFile(t, e.cfg.TokenPath)
	assert.Equal(t, fresh, tf.AccessToken)
	assert.Equal(t, e.cfg.TokenPath, m.TokenPath())
	assert.Len(t, tf.RefreshToken, 32, "refresh answers refresh_token \"\": the old one is kept")
	assert.Equal(t, os.FileMode(0o600), mode(t, e.cfg.TokenPath))

	// A second 401 moments later does not refresh again at once: the
	// backend would hand out the same token.
	m.Invalidate()
	again, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, fresh, again)
	assert.Equal(t, 1, e.srv.Count("refresh"))
}

// The access token is replaced 5 minutes before its exp, not before.
func TestRefreshMargin(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.register(m)
	exp := m.Status().AccessTokenExpires
	require.WithinDuration(t, e.srv.Now().Add(7*24*time.Hour), exp, 2*time.Second, "the JWT lives 7 days")

	e.srv.ResetRequests()
	e.srv.Advance(exp.Sub(e.srv.Now()) - 6*time.Minute)
	_, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 0, e.srv.Count("refresh"))

	e.srv.Advance(2 * time.Minute)
	tok, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("refresh"))
	c, err := nannyapi.ParseToken(tok)
	require.NoError(t, err)
	assert.True(t, c.Expires.After(exp))
}

// A refresh that fails before the token expires is not yet a problem;
// after it is.
func TestRefreshFailureBeforeAndAfterExpiry(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.register(m)
	old, err := m.Token(context.Background())
	require.NoError(t, err)
	exp := m.Status().AccessTokenExpires

	e.srv.Inject("refresh", nannyapitest.Fault{Status: 503})
	e.srv.Advance(exp.Sub(e.srv.Now()) - 2*time.Minute)
	tok, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, old, tok)

	e.srv.Advance(3 * time.Minute)
	_, err = m.Token(context.Background())
	require.Error(t, err)
	assert.True(t, nannyapi.Retryable(err), "a 503 stays retryable: %v", err)
	assert.NotErrorIs(t, err, ErrReregister)

	e.srv.ClearFaults()
	_, err = m.Token(context.Background())
	require.NoError(t, err)
}

func TestExpiredRefreshToken(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	reg := e.register(m)
	registered := m.Status().RegisteredAt
	require.False(t, registered.IsZero())

	e.srv.ResetRequests()
	e.srv.Advance(31 * 24 * time.Hour)
	_, err := m.Client().ListInvestigations(context.Background())
	require.ErrorIs(t, err, ErrReregister)
	want := "the refresh token has expired (registration on " + registered.UTC().Format("2006-01-02") +
		" + 30 days): run `sudo nannyagent --register --force` to register again"
	_, err = m.Token(context.Background())
	require.EqualError(t, err, want)
	var re *ReregisterError
	require.ErrorAs(t, err, &re)
	assert.True(t, re.Expired)

	// No retry storm: the answer is remembered.
	for range 5 {
		_, err = m.Token(context.Background())
		require.EqualError(t, err, want)
	}
	assert.Equal(t, 1, e.srv.Count("refresh"))
	st := m.Status()
	assert.False(t, st.Registered)
	assert.Equal(t, want, st.Problem)

	// --register --force works again without removing files by hand,
	// and a running Manager (the daemon) picks the new registration up.
	daemon := m
	cli := e.manager()
	second, err := cli.Register(context.Background(), RegisterOptions{
		Host: testHost, Force: true, PollInterval: time.Millisecond,
		OnDeviceCode: func(d DeviceCode) { require.NoError(t, e.srv.Authorize(e.user, d.UserCode)) },
	})
	require.NoError(t, err)
	assert.NotEqual(t, reg.AgentID, second.AgentID)
	require.True(t, daemon.Registered())
	assert.Equal(t, second.AgentID, daemon.AgentID())
	_, err = daemon.Client().ListInvestigations(context.Background())
	require.NoError(t, err)
}

// A revoked agent's refresh token is refused; its access token still
// works until it expires (§2.1 revoke).
func TestRevokedAgent(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	reg := e.register(m)
	e.srv.RevokeAgent(reg.AgentID)
	err := m.Check(context.Background())
	require.ErrorIs(t, err, ErrReregister)
	assert.Equal(t, "the backend refused the refresh token (invalid refresh token: the agent was revoked, or registered again from another copy of its token files): run `sudo nannyagent --register --force` to register again", err.Error())
	tok, err := m.Token(context.Background())
	require.NoError(t, err, "the access token keeps working")
	assert.NotEmpty(t, tok)
}

func TestRenewalSupported(t *testing.T) {
	e := newEnv(t)
	e.srv.SetRenewalSupported(true)
	m := e.manager()
	reg := e.register(m)
	oldRefresh := readTokenFile(t, e.cfg.TokenPath).RefreshToken

	e.srv.ResetRequests()
	e.srv.Advance(24 * 24 * time.Hour) // 6 days left: within the 7-day threshold
	_, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("renew-refresh-token"))
	assert.Equal(t, 0, e.srv.Count("refresh"))

	tf := readTokenFile(t, e.cfg.TokenPath)
	assert.NotEqual(t, oldRefresh, tf.RefreshToken)
	rt, err := os.ReadFile(filepath.Join(filepath.Dir(e.cfg.TokenPath), ".refresh_token"))
	require.NoError(t, err)
	assert.Equal(t, tf.RefreshToken, string(rt))
	a, _ := e.srv.Agent(reg.AgentID)
	assert.WithinDuration(t, e.srv.Now().Add(30*24*time.Hour), a.RefreshTokenExpires, 2*time.Second)
	st := m.Status()
	assert.Equal(t, RenewalSupported, st.Renewal)
	require.NotNil(t, tf.RenewedAt)
	assert.Equal(t, tf.RenewedAt.Add(30*24*time.Hour), st.RefreshTokenExpires)

	// 44 days after registration the renewed token still refreshes.
	e.srv.Advance(20 * 24 * time.Hour)
	_, err = m.Client().ListInvestigations(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("refresh"))
	assert.Equal(t, 1, e.srv.Count("renew-refresh-token"))
}

func TestRenewalUnsupported(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.register(m)
	e.srv.ResetRequests()
	e.srv.Advance(24 * 24 * time.Hour)
	_, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("renew-refresh-token"))
	assert.Equal(t, 1, e.srv.Count("refresh"))
	assert.Equal(t, RenewalUnsupported, m.Status().Renewal)

	// Remembered: later refreshes do not ask again.
	for range 3 {
		e.srv.Advance(time.Hour)
		m.Invalidate()
		_, err = m.Token(context.Background())
		require.NoError(t, err)
	}
	assert.Equal(t, 1, e.srv.Count("renew-refresh-token"))
	assert.Equal(t, 4, e.srv.Count("refresh"))
}

// A renewal that fails for another reason waits
// token_renewal_retry_interval_secs before the next attempt.
func TestRenewalRetryInterval(t *testing.T) {
	e := newEnv(t)
	e.srv.SetRenewalSupported(true)
	m := e.manager()
	e.register(m)
	e.srv.ResetRequests()
	e.srv.Inject("renew-refresh-token", nannyapitest.Fault{Status: 500, Times: 1})
	e.srv.Advance(24 * 24 * time.Hour)
	_, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("renew-refresh-token"))
	assert.Equal(t, 1, e.srv.Count("refresh"), "the access token came from a plain refresh")

	e.srv.Advance(30 * time.Minute)
	_, err = m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("renew-refresh-token"), "not before the retry interval")

	e.srv.Advance(31 * time.Minute)
	_, err = m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, e.srv.Count("renew-refresh-token"))
	assert.Equal(t, RenewalSupported, m.Status().Renewal)
}

func TestConcurrentTokenCallsRefreshOnce(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.register(m)
	e.srv.ResetRequests()
	// The refresh takes a while, so that every caller arrives during it.
	e.srv.Inject("refresh", nannyapitest.Fault{Delay: 100 * time.Millisecond})
	e.srv.Advance(8 * 24 * time.Hour)

	const n = 16
	start := make(chan struct{})
	toks := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			toks[i], errs[i] = m.Token(context.Background())
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, toks[0], toks[i])
	}
	assert.Equal(t, 1, e.srv.Count("refresh"))
}

// A caller that gives up does not cancel the refresh the others wait
// for.
func TestTokenCallerCancelled(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	e.register(m)
	e.srv.ResetRequests()
	e.srv.Inject("refresh", nannyapitest.Fault{Delay: 200 * time.Millisecond})
	e.srv.Advance(8 * 24 * time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := m.Token(ctx); done <- err }()
	require.NoError(t, e.srv.Wait(context.Background(), func() bool { return e.srv.Count("refresh") == 1 }))
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	_, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, e.srv.Count("refresh"))
}

func TestNotRegistered(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	assert.False(t, m.Registered())
	assert.Equal(t, "", m.AgentID())
	_, err := m.Token(context.Background())
	require.ErrorIs(t, err, ErrNotRegistered)
	st := m.Status()
	assert.Equal(t, Status{Mode: ModeDevice, Problem: ErrNotRegistered.Error(), TokenPath: e.cfg.TokenPath, Renewal: RenewalUntried}, st)
	assert.NoDirExists(t, filepath.Dir(e.cfg.TokenPath), "reading creates nothing")
}

func TestNewNeedsBackend(t *testing.T) {
	cfg := config.Defaults()
	_, err := New(cfg, Options{})
	require.EqualError(t, err, "nannyapi_url is not set: set it in the config file, with NANNYAPI_URL or with --api-url")
}

func TestReregisterErrorIs(t *testing.T) {
	err := error(&ReregisterError{Expired: true})
	assert.True(t, errors.Is(err, ErrReregister))
	assert.Equal(t, "the refresh token has expired (30 days after registration): run `sudo nannyagent --register --force` to register again", err.Error())
}
