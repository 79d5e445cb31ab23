package nannyapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/metrics"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, srv *nannyapitest.Server, tokens TokenSource) *Client {
	t.Helper()
	c, err := New(Options{BaseURL: srv.URL, Tokens: tokens, UserAgent: "nannyagent/test"})
	require.NoError(t, err)
	return c
}

// refreshing is a TokenSource that refreshes through the client, as the
// auth layer will.
type refreshing struct {
	c       *Client
	refresh string

	mu        sync.Mutex
	token     string
	refreshes int
}

func (r *refreshing) Token(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.token != "" {
		return r.token, nil
	}
	tr, err := r.c.Refresh(ctx, r.refresh)
	if err != nil {
		return "", err
	}
	r.refreshes++
	r.token = tr.AccessToken
	return r.token, nil
}

func (r *refreshing) Invalidate() {
	r.mu.Lock()
	r.token = ""
	r.mu.Unlock()
}

func registerReq(code string) RegisterRequest {
	return RegisterRequest{
		DeviceCode: code, Hostname: "testhost", PlatformFamily: "debian", Version: "1.0.0", OSType: "linux",
	}
}

func TestDeviceFlow(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("u@example.com")
	c := newClient(t, srv, nil)
	ctx := testCtx(t)

	da, err := c.DeviceAuthStart(ctx)
	require.NoError(t, err)
	require.Len(t, da.DeviceCode, 32)
	require.Len(t, da.UserCode, 8)
	require.Equal(t, "http://localhost:8080/agent/authorize?user_code="+da.UserCode, da.VerificationURI)
	require.Equal(t, 600, da.ExpiresIn)

	_, err = c.Register(ctx, registerReq(da.DeviceCode))
	e, ok := AsError(err)
	require.True(t, ok, "%v", err)
	require.True(t, e.IsAuthorizationPending())
	require.False(t, e.Retryable())
	require.Equal(t, "nannyapi: register: 400 device not authorized yet", err.Error())

	require.NoError(t, srv.Authorize(u, da.UserCode))
	req := registerReq(da.DeviceCode)
	req.KernelVersion = strings.Repeat("é", 50)
	tr, err := c.Register(ctx, req)
	require.NoError(t, err)
	require.Len(t, tr.RefreshToken, 32)
	require.Equal(t, 3600, tr.ExpiresIn)
	claims, err := ParseToken(tr.AccessToken)
	require.NoError(t, err)
	require.Equal(t, AgentsCollectionID, claims.CollectionID)
	require.Equal(t, tr.AgentID, claims.ID)
	require.Equal(t, "auth", claims.Type)
	require.WithinDuration(t, srv.Now().Add(7*24*time.Hour), claims.Expires, 2*time.Second)
	a, _ := srv.Agent(tr.AgentID)
	require.Equal(t, strings.Repeat("é", 45), a.KernelVersion)

	_, err = c.Register(ctx, registerReq(da.DeviceCode))
	e, ok = AsError(err)
	require.True(t, ok)
	require.True(t, e.IsDeviceCodeUsed())
	require.Equal(t, tr.AgentID, e.AgentID)

	// What went on the wire.
	regs := srv.RequestsFor("register")
	require.Len(t, regs, 3)
	r := regs[0]
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Equal(t, "nannyagent/test", r.Header.Get("User-Agent"))
	require.Empty(t, r.Header.Get("Authorization"))
	require.Empty(t, r.Header.Get("X-Agent-ID"))
	require.JSONEq(t, `{"action":"register","device_code":"`+da.DeviceCode+`","hostname":"testhost","platform":"","platform_family":"debian","version":"1.0.0","primary_ip":"","kernel_version":"","all_ips":null,"os_type":"linux"}`, string(r.Body))
	require.JSONEq(t, `{"action":"device-auth-start"}`, string(srv.RequestsFor("device-auth-start")[0].Body))

	da, err = c.DeviceAuthStart(ctx)
	require.NoError(t, err)
	srv.Advance(601 * time.Second)
	_, err = c.Register(ctx, registerReq(da.DeviceCode))
	e, _ = AsError(err)
	require.True(t, e.IsDeviceCodeExpired(), "%v", err)

	// Requests the backend would refuse with a 500 are not sent.
	n := srv.Count("register")
	for _, bad := range []RegisterRequest{
		{Hostname: "h", Version: "1"},
		{DeviceCode: "x", Version: "1"},
		{DeviceCode: "x", Hostname: "h"},
		{DeviceCode: "x", Hostname: strings.Repeat("h", 256), Version: "1"},
	} {
		_, err := c.Register(ctx, bad)
		require.Error(t, err)
		_, isAPI := AsError(err)
		require.False(t, isAPI)
	}
	require.Equal(t, n, srv.Count("register"))
}

func TestRefreshAndRenewal(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, nil)
	ctx := testCtx(t)

	tr, err := c.Refresh(ctx, reg.RefreshToken)
	require.NoError(t, err)
	require.Empty(t, tr.RefreshToken)
	require.Equal(t, reg.AgentID, tr.AgentID)
	require.NotEmpty(t, tr.AccessToken)
	require.JSONEq(t, `{"action":"refresh","refresh_token":"`+reg.RefreshToken+`"}`, string(srv.RequestsFor("refresh")[0].Body))

	_, err = c.RenewRefreshToken(ctx, reg.RefreshToken)
	require.True(t, IsUnknownAction(err), "%v", err)
	require.False(t, Retryable(err))
	require.Equal(t, "nannyapi: renew-refresh-token: 400 unknown action", err.Error())

	_, err = c.Refresh(ctx, "deadbeef")
	e, _ := AsError(err)
	require.True(t, e.IsRefreshTokenInvalid())
	require.True(t, e.IsUnauthorized())
	_, err = c.Refresh(ctx, "")
	require.Error(t, err)

	srv.SetRenewalSupported(true)
	renewed, err := c.RenewRefreshToken(ctx, reg.RefreshToken)
	require.NoError(t, err)
	require.NotEmpty(t, renewed.RefreshToken)
	require.NotEqual(t, reg.RefreshToken, renewed.RefreshToken)

	srv.ExpireRefreshTokens()
	_, err = c.Refresh(ctx, renewed.RefreshToken)
	e, _ = AsError(err)
	require.True(t, e.IsRefreshTokenExpired(), "%v", err)
}

func TestStaticToken(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("u@example.com")
	nsk := srv.CreateStaticToken(u)
	c := newClient(t, srv, StaticToken(nsk))
	ctx := testCtx(t)
	req := RegisterWithTokenRequest{Hostname: "h2", OSType: "linux", PlatformFamily: "debian", Version: "1.0.0", AllIPs: []string{"10.0.0.5"}}

	_, err := c.RegisterWithToken(ctx, nsk, req)
	require.True(t, IsUnknownAction(err), "%v", err)

	srv.SetStaticTokensSupported(true)
	_, err = c.RegisterWithToken(ctx, "nsk_wrong", req)
	e, _ := AsError(err)
	require.True(t, e.IsUnauthorized())
	require.Equal(t, "nannyapi: register-with-token: 401 invalid_token (static token not recognised or revoked)", err.Error())

	id, err := c.RegisterWithToken(ctx, nsk, req)
	require.NoError(t, err)
	c.SetAgentID(id)
	require.NoError(t, c.IngestMetrics(ctx, sampleMetrics()))

	rwt := srv.RequestsFor("register-with-token")
	require.Equal(t, "Bearer "+nsk, rwt[len(rwt)-1].Header.Get("Authorization"))
	require.Empty(t, rwt[len(rwt)-1].Header.Get("X-Agent-ID"))
	require.JSONEq(t, `{"action":"register-with-token","hostname":"h2","os_type":"linux","platform_family":"debian","version":"1.0.0","primary_ip":"","kernel_version":"","all_ips":["10.0.0.5"]}`, string(rwt[len(rwt)-1].Body))
	im := srv.RequestsFor("ingest-metrics")[0]
	require.Equal(t, "Bearer "+nsk, im.Header.Get("Authorization"))
	require.Equal(t, id, im.Header.Get("X-Agent-ID"))

	// A 401 with a static token is final: one request, no retry.
	c.SetAgentID("someoneelse0000")
	err = c.IngestMetrics(ctx, sampleMetrics())
	require.True(t, IsUnauthorized(err))
	require.Equal(t, 2, srv.Count("ingest-metrics"))
}

func sampleMetrics() metrics.Payload {
	return metrics.Payload{
		SystemMetrics: metrics.SystemMetrics{
			CPUPercent: 12.5, CPUCores: 8, MemoryUsedGB: 3.21, MemoryTotalGB: 15.5, MemoryPercent: 20.71,
			DiskUsedGB: 40.12, DiskTotalGB: 100, DiskUsagePercent: 40.12,
			Filesystems:  []metrics.Filesystem{{MountPath: "/", UsedGB: 40.12, FreeGB: 59.88, TotalGB: 100, UsagePercent: 40.12}},
			LoadAverage:  metrics.LoadAverage{OneMin: 0.5, FiveMin: 0.4, FifteenMin: 0.3},
			NetworkStats: metrics.NetworkStats{InGB: 1.23, OutGB: 0.45}, KernelVersion: "6.8.0-45-generic",
		},
		OSInfo: "ubuntu", OSVersion: "24.04", OSType: "linux", PlatformFamily: "debian", Version: "0.1.0",
		PrimaryIP: "10.0.0.5", KernelVersion: "6.8.0-45-generic", Arch: "x86_64", AllIPs: []string{"10.0.0.5", "fe80::1"},
	}
}

func TestIngestMetrics(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)

	require.NoError(t, c.IngestMetrics(ctx, sampleMetrics()))
	r := srv.RequestsFor("ingest-metrics")[0]
	require.JSONEq(t, `{"action":"ingest-metrics",
	 "system_metrics":{"cpu_percent":12.5,"cpu_cores":8,"memory_used_gb":3.21,"memory_total_gb":15.5,"memory_percent":20.71,
	   "disk_used_gb":40.12,"disk_total_gb":100,"disk_usage_percent":40.12,
	   "filesystems":[{"device":"","mount_path":"/","used_gb":40.12,"free_gb":59.88,"total_gb":100,"usage_percent":40.12}],
	   "load_average":{"one_min":0.5,"five_min":0.4,"fifteen_min":0.3},"network_stats":{"in_gb":1.23,"out_gb":0.45},
	   "kernel_version":"6.8.0-45-generic"},
	 "os_info":"ubuntu","os_version":"24.04","os_type":"linux","platform_family":"debian","version":"0.1.0",
	 "primary_ip":"10.0.0.5","kernel_version":"6.8.0-45-generic","arch":"x86_64","all_ips":["10.0.0.5","fe80::1"]}`, string(r.Body))
	require.Equal(t, "Bearer "+reg.AccessToken, r.Header.Get("Authorization"))
	require.Empty(t, r.Header.Get("X-Agent-ID"))

	stored, ok := srv.LatestMetrics(reg.AgentID)
	require.True(t, ok)
	require.Equal(t, 12.5, stored.CPUPercent)

	// Figures the backend would answer with a 500 (which the earlier
	// agent retried forever) are refused before sending, and not
	// retryable.
	m := sampleMetrics()
	m.SystemMetrics.CPUPercent = 150
	m.SystemMetrics.LoadAverage.OneMin = -0.5
	m.KernelVersion = strings.Repeat("6", 59)
	n := srv.Count("ingest-metrics")
	err := c.IngestMetrics(ctx, m)
	var ve *metrics.ValidationError
	require.ErrorAs(t, err, &ve)
	require.ErrorContains(t, err, "cpu_percent")
	require.ErrorContains(t, err, "kernel_version")
	require.False(t, Retryable(err))
	m = sampleMetrics()
	m.PlatformFamily = ""
	require.ErrorContains(t, c.IngestMetrics(ctx, m), "platform_family")
	require.Equal(t, n, srv.Count("ingest-metrics"))

	srv.Inject("ingest-metrics", nannyapitest.Fault{Status: 500, Body: `{"error":"failed to save metrics"}`, Times: 1})
	err = c.IngestMetrics(ctx, sampleMetrics())
	e, ok := AsError(err)
	require.True(t, ok)
	require.Equal(t, 500, e.Status)
	require.Equal(t, "failed to save metrics", e.Message)
	require.False(t, e.Envelope)
	require.True(t, Retryable(err))

	srv.Inject("ingest-metrics", nannyapitest.Fault{Status: 500, Times: 1})
	err = c.IngestMetrics(ctx, sampleMetrics())
	e, _ = AsError(err)
	require.True(t, e.Envelope)
	require.Equal(t, "Something went wrong while processing your request.", e.Message)
	require.JSONEq(t, `{}`, string(e.Data))
}

func TestRefreshOnUnauthorized(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, nil)
	src := &refreshing{c: c, refresh: reg.RefreshToken, token: reg.AccessToken}
	c.tokens = src
	ctx := testCtx(t)

	require.NoError(t, c.IngestMetrics(ctx, sampleMetrics()))
	srv.ExpireAccessTokens()
	require.NoError(t, c.IngestMetrics(ctx, sampleMetrics()))
	require.Equal(t, 1, src.refreshes)
	ims := srv.RequestsFor("ingest-metrics")
	require.Equal(t, []int{200, 401, 200}, []int{ims[0].Status, ims[1].Status, ims[2].Status})
	require.NotEqual(t, ims[1].Header.Get("Authorization"), ims[2].Header.Get("Authorization"))

	// A refused refresh ends the call with both errors.
	srv.ExpireAccessTokens()
	srv.ExpireRefreshTokens()
	err := c.IngestMetrics(ctx, sampleMetrics())
	require.True(t, IsUnauthorized(err))
	require.ErrorContains(t, err, "refresh token expired")
	require.Equal(t, 4, srv.Count("ingest-metrics"))

	// A source that yields the same token again: no second attempt.
	c.tokens = StaticToken(reg.AccessToken)
	err = c.IngestMetrics(ctx, sampleMetrics())
	require.True(t, IsUnauthorized(err))
	require.Equal(t, 5, srv.Count("ingest-metrics"))

	c.tokens = nil
	require.ErrorIs(t, c.IngestMetrics(ctx, sampleMetrics()), ErrNoTokenSource)
}

func TestTimeoutsHangsAndResets(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c, err := New(Options{BaseURL: srv.URL, Tokens: StaticToken(reg.AccessToken), Timeout: 200 * time.Millisecond})
	require.NoError(t, err)
	ctx := testCtx(t)

	srv.Inject("ingest-metrics", nannyapitest.Fault{Hang: true})
	start := time.Now()
	err = c.IngestMetrics(ctx, sampleMetrics())
	var te *TransportError
	require.ErrorAs(t, err, &te)
	require.Equal(t, 200*time.Millisecond, te.Timeout)
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	require.True(t, Retryable(err))
	require.Equal(t, "nannyapi: ingest-metrics: no answer within 200ms", err.Error())

	// The caller's own cancellation is not retryable. (A patient client:
	// only the cancellation may end this call, however loaded the host.)
	patient, err := New(Options{BaseURL: srv.URL, Tokens: StaticToken(reg.AccessToken), Timeout: time.Minute})
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_ = srv.Wait(ctx, func() bool { return srv.Count("ingest-metrics") == 2 })
		cancel()
	}()
	err = patient.IngestMetrics(cctx, sampleMetrics())
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, Retryable(err))

	srv.Inject("ingest-metrics", nannyapitest.Fault{Reset: true})
	err = c.IngestMetrics(ctx, sampleMetrics())
	require.ErrorAs(t, err, &te)
	require.Zero(t, te.Timeout)
	require.True(t, Retryable(err))

	srv.Inject("ingest-metrics", nannyapitest.Fault{Delay: 50 * time.Millisecond})
	require.NoError(t, patient.IngestMetrics(ctx, sampleMetrics()))

	// A chat turn has its own, longer bound.
	chat, err := New(Options{BaseURL: srv.URL, Tokens: StaticToken(reg.AccessToken), Timeout: 50 * time.Millisecond, ChatTimeout: time.Minute})
	require.NoError(t, err)
	invID, err := srv.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	turn := ChatRequest{InvestigationID: invID, Messages: []ChatMessage{{"user", "x"}}}
	srv.Inject("POST /api/investigations", nannyapitest.Fault{Delay: 300 * time.Millisecond, Times: 1})
	_, err = chat.Chat(ctx, turn)
	e, ok := AsError(err)
	require.True(t, ok, "an answer after the plain timeout: %v", err)
	require.Equal(t, 500, e.Status) // no TensorZero configured
	shortChat, err := New(Options{BaseURL: srv.URL, Tokens: StaticToken(reg.AccessToken), ChatTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	srv.Inject("POST /api/investigations", nannyapitest.Fault{Hang: true, Times: 1})
	_, err = shortChat.Chat(ctx, turn)
	require.ErrorAs(t, err, &te)
	require.Equal(t, 300*time.Millisecond, te.Timeout)
	require.ErrorContains(t, chat.IngestMetrics(ctx, metrics.Payload{}), "platform_family", "an empty payload is refused unsent")

	// A long answer is refused rather than read whole.
	small, err := New(Options{BaseURL: srv.URL, MaxResponseBytes: 64})
	require.NoError(t, err)
	srv.Inject("GET /api/health", nannyapitest.Fault{Status: 200, Body: `{"message":"` + strings.Repeat("x", 100) + `"}`})
	require.ErrorContains(t, small.Health(ctx), "answer larger than 64 bytes")
	srv.ClearFaults()
	require.NoError(t, small.Health(ctx))

	// Unreachable backend.
	srv.Close()
	err = c.Health(ctx)
	require.ErrorAs(t, err, &te)
	require.True(t, Retryable(err))
}

// failingTransport fails every request and counts idle-connection
// resets.
type failingTransport struct {
	mu     sync.Mutex
	resets int
}

func (f *failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("connection reset by peer")
}

func (f *failingTransport) CloseIdleConnections() {
	f.mu.Lock()
	f.resets++
	f.mu.Unlock()
}

func TestResetThreshold(t *testing.T) {
	ft := &failingTransport{}
	c, err := New(Options{BaseURL: "http://127.0.0.1:9", HTTPClient: &http.Client{Transport: ft}, ResetThreshold: 3})
	require.NoError(t, err)
	for range 7 {
		require.Error(t, c.Health(testCtx(t)))
	}
	require.Equal(t, 2, ft.resets)
}

func TestNewFromConfig(t *testing.T) {
	cfg := config.Defaults()
	_, err := NewFromConfig(cfg, nil)
	require.Error(t, err)
	cfg.NannyAPIURL = "https://api.example/"
	cfg.AgentID = "abc"
	c, err := NewFromConfig(cfg, nil)
	require.NoError(t, err)
	require.Equal(t, "https://api.example", c.BaseURL())
	require.Equal(t, "", c.AgentID(), "X-Agent-ID only in static-token mode")
	require.Equal(t, 30*time.Second, c.timeout)
	require.Equal(t, 3, c.resetAfter)
	cfg.StaticToken = "nsk_abc"
	c, err = NewFromConfig(cfg, StaticToken(cfg.StaticToken))
	require.NoError(t, err)
	require.Equal(t, "abc", c.AgentID())
	tr := c.hc.Transport.(*http.Transport)
	require.Equal(t, 10, tr.MaxIdleConns)
	require.Equal(t, 5, tr.MaxIdleConnsPerHost)
	require.Equal(t, 30*time.Second, tr.IdleConnTimeout)
	require.True(t, tr.ForceAttemptHTTP2)
	cfg.HTTPTransport.DisableHTTP2 = true
	c, err = NewFromConfig(cfg, nil)
	require.NoError(t, err)
	tr = c.hc.Transport.(*http.Transport)
	require.False(t, tr.ForceAttemptHTTP2)
	require.NotNil(t, tr.TLSNextProto)

	for _, bad := range []string{"", "api.example", "ftp://x", "http://"} {
		_, err := New(Options{BaseURL: bad})
		require.Error(t, err, bad)
	}
}

func TestSubscribe(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("u@example.com")
	reg := srv.RegisterAgent(u, "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	c.SetAgentID(reg.AgentID)
	ctx := testCtx(t)

	resp, err := http.Get(srv.URL + "/api/realtime")
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	_, event, data, err := nannyapitest.ReadEvent(br)
	require.NoError(t, err)
	require.Equal(t, "PB_CONNECT", event)
	var hello struct{ ClientID string }
	require.NoError(t, json.Unmarshal(data, &hello))

	require.NoError(t, c.Subscribe(ctx, hello.ClientID, Topics))
	require.Equal(t, 1, srv.Subscribed(reg.AgentID))
	sub := srv.RequestsFor("POST /api/realtime")[0]
	require.JSONEq(t, `{"clientId":"`+hello.ClientID+`","subscriptions":["investigations","patch_operations","reboot_operations"]}`, string(sub.Body))
	require.Equal(t, "Bearer "+reg.AccessToken, sub.Header.Get("Authorization"))
	require.Empty(t, sub.Header.Get("X-Agent-ID"))

	invID, err := srv.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	_, event, data, err = nannyapitest.ReadEvent(br)
	require.NoError(t, err)
	require.Equal(t, CollectionInvestigations, event)
	var ev struct {
		Action string          `json:"action"`
		Record json.RawMessage `json:"record"`
	}
	require.NoError(t, json.Unmarshal(data, &ev))
	var rec InvestigationRecord
	require.NoError(t, DecodeRecord(ev.Record, CollectionInvestigations, &rec))
	require.Equal(t, invID, rec.ID)
	require.Equal(t, "user", rec.InitiatedBy())
	require.Equal(t, "pending", rec.Status)
	require.False(t, rec.InitiatedAt.IsZero())
	require.True(t, rec.CompletedAt.IsZero())
	require.Error(t, DecodeRecord(ev.Record, CollectionPatchOperations, &PatchOperationRecord{}))

	err = c.Subscribe(ctx, "nope", Topics)
	e, _ := AsError(err)
	require.True(t, e.IsNotFound())
	require.True(t, e.Envelope)
	require.Equal(t, "Missing or invalid client id.", e.Message)

	cu := newClient(t, srv, StaticToken(u.Token))
	err = cu.Subscribe(ctx, hello.ClientID, Topics)
	e, _ = AsError(err)
	require.True(t, e.IsForbidden())
	require.Equal(t, "The current and the previous request authorization don't match.", e.Message)
}
