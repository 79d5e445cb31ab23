package nannyapitest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// call sends one request the way the curl exchanges of NANNYAPI.md §6
// do and returns the status and the body.
func call(t *testing.T, s *Server, method, path, token, body string) (int, string) {
	t.Helper()
	return callAuth(t, s, method, path, authHeader(token), body)
}

func authHeader(token string) string {
	if token == "" {
		return ""
	}
	return "Bearer " + token
}

func callAuth(t *testing.T, s *Server, method, path, auth, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// exact checks a status and the exact body (json.Encoder's trailing
// newline included).
func exact(t *testing.T, wantStatus int, wantBody string, status int, body string) {
	t.Helper()
	require.Equal(t, wantStatus, status, body)
	require.Equal(t, wantBody+"\n", body)
}

func decode(t *testing.T, body string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m), body)
	return m
}

const (
	panicBody    = `{"data":{},"message":"Something went wrong while processing your request.","status":500}`
	notFoundBody = `{"data":{},"message":"The requested resource wasn't found.","status":404}`
)

var (
	hex32   = regexp.MustCompile(`^[0-9a-f]{32}$`)
	pbIDRe  = regexp.MustCompile(`^[a-z0-9]{15}$`)
	userRe  = regexp.MustCompile(`^[ABCDEFGHJKLMNPQRSTUVWXYZ23456789]{8}$`)
	cliIDRe = regexp.MustCompile(`^[A-Za-z0-9]{40}$`)
)

func registerBody(deviceCode string) string {
	return `{"action":"register","device_code":"` + deviceCode + `","hostname":"testhost","platform":"","platform_family":"debian","version":"1.0.0","primary_ip":"","kernel_version":"","all_ips":null,"os_type":"linux"}`
}

// deviceFlow runs §6.2 up to a registered agent.
func deviceFlow(t *testing.T, s *Server, u *User) (agentID, access, refresh string) {
	t.Helper()
	st, body := call(t, s, "POST", "/api/agent", "", `{"action":"device-auth-start"}`)
	require.Equal(t, 200, st)
	start := decode(t, body)
	require.NoError(t, s.Authorize(u, start["user_code"].(string)))
	st, body = call(t, s, "POST", "/api/agent", "", registerBody(start["device_code"].(string)))
	require.Equal(t, 200, st, body)
	tr := decode(t, body)
	return tr["agent_id"].(string), tr["access_token"].(string), tr["refresh_token"].(string)
}

func TestDeviceAuthorizationAndRegistration(t *testing.T) {
	s := New(t, Options{FrontendURL: "http://127.0.0.1:3000"})
	u := s.CreateUser("u1@example.com")

	st, body := call(t, s, "POST", "/api/agent", "", `{"action":"device-auth-start"}`)
	require.Equal(t, 200, st)
	require.Regexp(t, `^\{"device_code":"[0-9a-f]{32}","user_code":"[A-Z2-9]{8}","verification_uri":"http://127\.0\.0\.1:3000/agent/authorize\?user_code=[A-Z2-9]{8}","expires_in":600\}\n$`, body)
	start := decode(t, body)
	dc, uc := start["device_code"].(string), start["user_code"].(string)
	require.Regexp(t, hex32, dc)
	require.Regexp(t, userRe, uc)
	require.True(t, strings.HasSuffix(start["verification_uri"].(string), "="+uc))
	require.Equal(t, []string{uc}, s.PendingUserCodes())

	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"register","device_code":"`+dc+`","hostname":"h1","os_type":"linux","platform_family":"debian","version":"1.0.0"}`)
	exact(t, 400, `{"error":"device not authorized yet"}`, st, body)

	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"authorize","user_code":"`+uc+`"}`)
	exact(t, 500, panicBody, st, body)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"authorize"}`)
	exact(t, 400, `{"error":"user_code required"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"authorize","user_code":"ZZZZZZZZ"}`)
	exact(t, 400, `{"error":"invalid user code"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"authorize","user_code":"`+uc+`"}`)
	exact(t, 200, `{"success":true,"message":"device authorized"}`, st, body)
	require.Empty(t, s.PendingUserCodes())

	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"register","device_code":"`+dc+`","hostname":"h1","os_type":"linux","platform_family":"debian"}`)
	exact(t, 500, `{"error":"failed to create agent: version: cannot be blank."}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"register","device_code":"`+dc+`","version":"1.0.0","kernel_version":"`+strings.Repeat("k", 46)+`"}`)
	exact(t, 500, `{"error":"failed to create agent: hostname: cannot be blank; kernel_version: Must be no more than 45 character(s).."}`, st, body)

	// The failed attempts left the code unconsumed.
	st, body = call(t, s, "POST", "/api/agent", "", registerBody(dc))
	require.Equal(t, 200, st, body)
	require.Regexp(t, `^\{"access_token":"eyJ[^"]+","refresh_token":"[0-9a-f]{32}","expires_in":3600,"agent_id":"[a-z0-9]{15}"\}\n$`, body)
	tr := decode(t, body)
	agentID := tr["agent_id"].(string)
	a, ok := s.Agent(agentID)
	require.True(t, ok)
	require.Equal(t, u.ID, a.UserID)
	require.Equal(t, "testhost", a.Hostname)
	require.Equal(t, "debian", a.PlatformFamily)
	require.WithinDuration(t, s.Now().Add(30*24*time.Hour), a.RefreshTokenExpires, 2*time.Second)

	st, body = call(t, s, "POST", "/api/agent", "", registerBody(dc))
	exact(t, 400, `{"agent_id":"`+agentID+`","error":"device code already used"}`, st, body)

	// The JWT is PocketBase's agent token, valid for 7 days.
	parts := strings.Split(tr["access_token"].(string), ".")
	require.Len(t, parts, 3)
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	require.NoError(t, err)
	require.Equal(t, `{"alg":"HS256","typ":"JWT"}`, string(hdr))
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	require.Regexp(t, `^\{"collectionId":"pbc_3549173383","exp":\d+,"id":"`+agentID+`","refreshable":true,"type":"auth"\}$`, string(payload))
	var claims struct{ Exp int64 }
	require.NoError(t, json.Unmarshal(payload, &claims))
	require.InDelta(t, s.Now().Add(604800*time.Second).Unix(), claims.Exp, 2)
}

func TestRegisterErrors(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	for _, tc := range []struct{ body, want string }{
		{`not json`, `{"error":"invalid request"}`},
		{`{"action":"frobnicate"}`, `{"error":"unknown action"}`},
		{`{}`, `{"error":"unknown action"}`},
		{`{"action":"register"}`, `{"error":"device_code required"}`},
		{`{"action":"register","device_code":"nope"}`, `{"error":"invalid device code"}`},
		{`{"action":"register","device_code":7}`, `{"error":"invalid request"}`},
	} {
		st, body := call(t, s, "POST", "/api/agent", "", tc.body)
		exact(t, 400, tc.want, st, body)
	}

	st, body := call(t, s, "POST", "/api/agent", "", `{"action":"device-auth-start"}`)
	require.Equal(t, 200, st)
	start := decode(t, body)
	s.Advance(601 * time.Second)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"authorize","user_code":"`+start["user_code"].(string)+`"}`)
	exact(t, 400, `{"error":"code expired"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", "", registerBody(start["device_code"].(string)))
	exact(t, 400, `{"error":"device code expired"}`, st, body)

	// An empty platform_family is guessed from os_info.
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"device-auth-start"}`)
	require.Equal(t, 200, st)
	start = decode(t, body)
	require.NoError(t, s.Authorize(u, start["user_code"].(string)))
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"register","device_code":"`+start["device_code"].(string)+`","hostname":"h","version":"2","os_info":"Ubuntu"}`)
	require.Equal(t, 200, st, body)
	a, _ := s.Agent(decode(t, body)["agent_id"].(string))
	require.Equal(t, "debian", a.PlatformFamily)
}

func TestRefreshRenewalAndStaticToken(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	agentID, _, refresh := deviceFlow(t, s, u)

	for range 2 { // never rotated: the same refresh token keeps working
		st, body := call(t, s, "POST", "/api/agent", "", `{"action":"refresh","refresh_token":"`+refresh+`"}`)
		require.Equal(t, 200, st)
		require.Regexp(t, `^\{"access_token":"eyJ[^"]+","refresh_token":"","expires_in":3600,"agent_id":"`+agentID+`"\}\n$`, body)
	}
	st, body := call(t, s, "POST", "/api/agent", "", `{"action":"refresh","refresh_token":"deadbeef"}`)
	exact(t, 401, `{"error":"invalid refresh token"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"refresh"}`)
	exact(t, 400, `{"error":"refresh_token required"}`, st, body)

	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"renew-refresh-token","refresh_token":"`+refresh+`"}`)
	exact(t, 400, `{"error":"unknown action"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent/renew-refresh-token", "", `{"refresh_token":"`+refresh+`"}`)
	exact(t, 404, notFoundBody, st, body)
	st, body = call(t, s, "POST", "/renew-refresh-token", "", `{"refresh_token":"`+refresh+`"}`)
	exact(t, 404, notFoundBody, st, body)
	st, body = call(t, s, "POST", "/api/agent", "nsk_test123", `{"action":"register-with-token","hostname":"h2","os_type":"linux","platform_family":"debian","version":"1.0.0"}`)
	exact(t, 400, `{"error":"unknown action"}`, st, body)

	// A backend with renewal: a new refresh token, the old one dead.
	s.SetRenewalSupported(true)
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"renew-refresh-token","refresh_token":"`+refresh+`"}`)
	require.Equal(t, 200, st, body)
	renewed := decode(t, body)
	newRefresh := renewed["refresh_token"].(string)
	require.Regexp(t, hex32, newRefresh)
	require.NotEqual(t, refresh, newRefresh)
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"refresh","refresh_token":"`+refresh+`"}`)
	exact(t, 401, `{"error":"invalid refresh token"}`, st, body)

	// 30 days later the refresh token is dead; re-registration is the
	// way out.
	s.Advance(30*24*time.Hour + time.Second)
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"refresh","refresh_token":"`+newRefresh+`"}`)
	exact(t, 401, `{"error":"refresh token expired"}`, st, body)

	// A backend with static tokens.
	s.SetStaticTokensSupported(true)
	nsk := s.CreateStaticToken(u)
	st, body = call(t, s, "POST", "/api/agent", "nsk_unknown", `{"action":"register-with-token","hostname":"h2","os_type":"linux","platform_family":"debian","version":"1.0.0"}`)
	exact(t, 401, `{"error":"invalid_token","error_description":"static token not recognised or revoked"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", nsk, `{"action":"register-with-token","hostname":"h2","os_type":"linux","platform_family":"debian","version":"1.0.0"}`)
	require.Equal(t, 200, st, body)
	staticID := decode(t, body)["agent_id"].(string)
	require.Regexp(t, pbIDRe, staticID)
	st, body = call(t, s, "POST", "/api/agent", nsk, `{"action":"register-with-token","hostname":"h2","os_type":"linux","platform_family":"debian","version":"1.0.1"}`)
	exact(t, 200, `{"agent_id":"`+staticID+`"}`, st, body)
	// nsk_ plus X-Agent-ID authenticates on REST calls; a wrong ID does not.
	req, _ := http.NewRequest("POST", s.URL+"/api/agent", strings.NewReader(metricsBody))
	req.Header.Set("Authorization", "Bearer "+nsk)
	req.Header.Set("X-Agent-ID", staticID)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	req, _ = http.NewRequest("POST", s.URL+"/api/agent", strings.NewReader(metricsBody))
	req.Header.Set("Authorization", "Bearer "+nsk)
	req.Header.Set("X-Agent-ID", agentID)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 401, resp.StatusCode)
}

func TestRevokeKeepsAccessTokenValid(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	agentID, access, refresh := deviceFlow(t, s, u)
	st, body := call(t, s, "POST", "/api/agent", "", `{"action":"revoke","agent_id":"`+agentID+`"}`)
	exact(t, 500, panicBody, st, body)
	other := s.CreateUser("o@example.com")
	st, body = call(t, s, "POST", "/api/agent", other.Token, `{"action":"revoke","agent_id":"`+agentID+`"}`)
	exact(t, 403, `{"error":"not your agent"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"revoke","agent_id":"nope"}`)
	exact(t, 404, `{"error":"agent not found"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"revoke","agent_id":"`+agentID+`"}`)
	exact(t, 200, `{"success":true,"message":"agent revoked"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", "", `{"action":"refresh","refresh_token":"`+refresh+`"}`)
	exact(t, 401, `{"error":"invalid refresh token"}`, st, body)
	st, body = call(t, s, "POST", "/api/agent", access, metricsBody)
	exact(t, 200, `{"success":true,"message":"metrics recorded"}`, st, body)
}

// metricsBody is the §2.7 example.
const metricsBody = `{"action":"ingest-metrics",
 "system_metrics":{
   "cpu_percent":12.5, "cpu_cores":8,
   "memory_used_gb":3.21, "memory_total_gb":15.5, "memory_percent":20.71,
   "disk_used_gb":40.12, "disk_total_gb":100.0, "disk_usage_percent":40.12,
   "filesystems":[{"device":"","mount_path":"/","used_gb":40.12,"free_gb":59.88,"total_gb":100.0,"usage_percent":40.12}],
   "load_average":{"one_min":0.5,"five_min":0.4,"fifteen_min":0.3},
   "network_stats":{"in_gb":1.23,"out_gb":0.45},
   "kernel_version":"6.8.0-45-generic"},
 "os_info":"ubuntu","os_version":"24.04","os_type":"linux","platform_family":"debian","version":"0.1.0",
 "primary_ip":"10.0.0.5","kernel_version":"6.8.0-45-generic","arch":"x86_64","all_ips":["10.0.0.5","fe80::1"]}`

func TestIngestMetrics(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	agentID, access, _ := deviceFlow(t, s, u)

	st, body := call(t, s, "POST", "/api/agent", access, metricsBody)
	exact(t, 200, `{"success":true,"message":"metrics recorded"}`, st, body)
	m, ok := s.LatestMetrics(agentID)
	require.True(t, ok)
	require.Equal(t, Metrics{
		CPUPercent: 12.5, CPUCores: 8, MemoryUsedGB: 3.21, MemoryTotalGB: 15.5, MemoryPercent: 20.71,
		DiskUsedGB: 40.12, DiskTotalGB: 100, DiskUsagePercent: 40.12, NetworkInGB: 1.23, NetworkOutGB: 0.45,
		LoadAvg1Min: 0.5, LoadAvg5Min: 0.4, LoadAvg15Min: 0.3,
		Filesystems: `[{"device":"","mount_path":"/","used_gb":40.12,"free_gb":59.88,"total_gb":100,"usage_percent":40.12}]`,
		RecordedAt:  m.RecordedAt,
	}, m)
	a, _ := s.Agent(agentID)
	require.Equal(t, "ubuntu", a.OSInfo)
	require.Equal(t, "24.04", a.OSVersion)
	require.Equal(t, "0.1.0", a.Version)
	require.Equal(t, "6.8.0-45-generic", a.KernelVersion)
	require.Equal(t, "x86_64", a.Arch)
	require.Equal(t, []string{"10.0.0.5", "fe80::1"}, a.AllIPs)
	require.Equal(t, "testhost", a.Hostname)
	require.Equal(t, 1, a.MetricsCount)

	mod := func(old, repl string) string {
		require.Contains(t, metricsBody, old)
		return strings.Replace(metricsBody, old, repl, 1)
	}
	bigFS := `"filesystems":[` + strings.TrimSuffix(strings.Repeat(`{"device":"/dev/sda1","mount_path":"/srv/data/volume/aaaa","used_gb":40.12,"free_gb":59.88,"total_gb":100,"usage_percent":40.12},`, 50), ",") + `],`
	for _, tc := range []struct {
		name, auth, body string
		status           int
		want             string
	}{
		{"no platform_family", "Bearer " + access, mod(`"platform_family":"debian",`, ""), 400, `{"error":"platform_family required"}`},
		{"empty platform_family", "Bearer " + access, mod(`"platform_family":"debian"`, `"platform_family":""`), 400, `{"error":"platform_family required"}`},
		{"no auth", "", metricsBody, 401, `{"error":"authentication required"}`},
		{"bad token", "Bearer eyJnope.x.y", metricsBody, 401, `{"error":"authentication required"}`},
		{"user token", "Bearer " + u.Token, metricsBody, 401, `{"error":"invalid agent authentication"}`},
		{"bare token", access, metricsBody, 200, `{"success":true,"message":"metrics recorded"}`},
		{"lower-case bearer", "bearer " + access, metricsBody, 200, `{"success":true,"message":"metrics recorded"}`},
		{"cpu_percent 150", "Bearer " + access, mod(`"cpu_percent":12.5`, `"cpu_percent":150`), 500, `{"error":"failed to save metrics"}`},
		{"memory_percent 100.01", "Bearer " + access, mod(`"memory_percent":20.71`, `"memory_percent":100.01`), 500, `{"error":"failed to save metrics"}`},
		{"disk_usage_percent 100", "Bearer " + access, mod(`"disk_usage_percent":40.12`, `"disk_usage_percent":100`), 200, `{"success":true,"message":"metrics recorded"}`},
		{"negative load", "Bearer " + access, mod(`"one_min":0.5`, `"one_min":-0.5`), 500, `{"error":"failed to save metrics"}`},
		{"negative network", "Bearer " + access, mod(`"out_gb":0.45`, `"out_gb":-1`), 500, `{"error":"failed to save metrics"}`},
		{"filesystems over 5000", "Bearer " + access, mod(`"filesystems":[{"device":"","mount_path":"/","used_gb":40.12,"free_gb":59.88,"total_gb":100.0,"usage_percent":40.12}],`, bigFS), 500, `{"error":"failed to save metrics"}`},
		{"kernel_version 59 chars", "Bearer " + access, mod(`"primary_ip":"10.0.0.5","kernel_version":"6.8.0-45-generic"`, `"primary_ip":"10.0.0.5","kernel_version":"`+strings.Repeat("6", 59)+`"`), 500, `{"error":"failed to update agent"}`},
		{"kernel_version 45 chars", "Bearer " + access, mod(`"primary_ip":"10.0.0.5","kernel_version":"6.8.0-45-generic"`, `"primary_ip":"10.0.0.5","kernel_version":"`+strings.Repeat("6", 45)+`"`), 200, `{"success":true,"message":"metrics recorded"}`},
		{"cpu_cores 2.5", "Bearer " + access, mod(`"cpu_cores":8`, `"cpu_cores":2.5`), 400, `{"error":"invalid request"}`},
		{"no system_metrics", "Bearer " + access, `{"action":"ingest-metrics","platform_family":"debian"}`, 200, `{"success":true,"message":"metrics recorded"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, body := callAuth(t, s, "POST", "/api/agent", tc.auth, tc.body)
			exact(t, tc.status, tc.want, st, body)
		})
	}
	// The failed kernel_version update changed nothing; the accepted 45
	// characters stayed.
	a, _ = s.Agent(agentID)
	require.Equal(t, strings.Repeat("6", 45), a.KernelVersion)
	// An empty request stores zeros and keeps the filesystems text.
	m, _ = s.LatestMetrics(agentID)
	require.Zero(t, m.CPUPercent)
	require.Contains(t, m.Filesystems, `"mount_path":"/"`)

	s.ExpireAccessTokens()
	st, body = call(t, s, "POST", "/api/agent", access, metricsBody)
	exact(t, 401, `{"error":"authentication required"}`, st, body)
	fresh := s.AgentToken(agentID)
	st, _ = call(t, s, "POST", "/api/agent", fresh, metricsBody)
	require.Equal(t, 200, st)

	// The JWT's own expiry.
	s.Advance(604801 * time.Second)
	st, body = call(t, s, "POST", "/api/agent", fresh, metricsBody)
	exact(t, 401, `{"error":"authentication required"}`, st, body)
}

func TestListAndHealth(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	agentID, access, _ := deviceFlow(t, s, u)
	st, _ := call(t, s, "POST", "/api/agent", access, metricsBody)
	require.Equal(t, 200, st)

	st, body := call(t, s, "POST", "/api/agent", "", `{"action":"list"}`)
	exact(t, 500, panicBody, st, body)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"list"}`)
	require.Equal(t, 200, st)
	require.Regexp(t, `^\{"agents":\[\{"id":"`+agentID+`","hostname":"testhost","os_type":"linux","os_info":"ubuntu","os_version":"24.04","version":"0.1.0","status":"","health":"healthy","last_seen":"[-0-9T:.]+Z","created":"0001-01-01T00:00:00Z","kernel_version":"6.8.0-45-generic","arch":"x86_64"\}\]\}\n$`, body)

	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"health","agent_id":"`+agentID+`"}`)
	require.Equal(t, 200, st)
	require.Regexp(t, `^\{"agent_id":"`+agentID+`","status":"","health":"healthy","last_seen":"[-0-9T:.]+Z","latest_metrics":\{"cpu_percent":12.5,"cpu_cores":8,.*"filesystems":\[\{"device":"","mount_path":"/",.*"load_average":\{"one_min":0.5,"five_min":0.4,"fifteen_min":0.3\},"network_stats":\{"in_gb":1.23,"out_gb":0.45\},"kernel_version":""\}\}\n$`, body)
	s.Advance(6 * time.Minute)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"health","agent_id":"`+agentID+`"}`)
	require.Equal(t, 200, st)
	require.Contains(t, body, `"health":"stale"`)
	s.Advance(10 * time.Minute)
	st, body = call(t, s, "POST", "/api/agent", u.Token, `{"action":"health","agent_id":"`+agentID+`"}`)
	require.Equal(t, 200, st)
	require.Contains(t, body, `"health":"inactive"`)
}

func TestHealthRoute(t *testing.T) {
	s := New(t, Options{})
	st, body := call(t, s, "GET", "/api/health", "", "")
	exact(t, 200, `{"message":"API is healthy.","code":200,"data":{}}`, st, body)
	st, body = call(t, s, "GET", "/health", "", "")
	exact(t, 404, notFoundBody, st, body)
	st, body = call(t, s, "POST", "/api/auth", "", `{}`)
	exact(t, 404, notFoundBody, st, body)
}

// stream is an open realtime connection.
type stream struct {
	resp *http.Response
	r    *bufio.Reader
	id   string
}

func connect(t *testing.T, s *Server, token string) *stream {
	t.Helper()
	req, err := http.NewRequest("GET", s.URL+"/api/realtime", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	st := &stream{resp: resp, r: bufio.NewReader(resp.Body)}
	// The first event, byte for byte.
	first, err := st.r.ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(first, "id:"), first)
	st.id = strings.TrimSuffix(strings.TrimPrefix(first, "id:"), "\n")
	require.Regexp(t, cliIDRe, st.id)
	rest := make([]byte, len("event:PB_CONNECT\ndata:{\"clientId\":\"\"}\n\n")+len(st.id))
	_, err = io.ReadFull(st.r, rest)
	require.NoError(t, err)
	require.Equal(t, "event:PB_CONNECT\ndata:{\"clientId\":\""+st.id+"\"}\n\n", string(rest))
	return st
}

func subscribe(t *testing.T, s *Server, token, clientID string, topics ...string) (int, string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"clientId": clientID, "subscriptions": topics})
	return call(t, s, "POST", "/api/realtime", token, string(b))
}

var allTopics = []string{Investigations, PatchOperations, RebootOperations}

func TestRealtime(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	other := s.RegisterAgent(s.CreateUser("o@example.com"), "h2")

	st := connect(t, s, reg.AccessToken)
	code, body := subscribe(t, s, reg.AccessToken, "nope", allTopics...)
	exact(t, 404, `{"data":{},"message":"Missing or invalid client id.","status":404}`, code, body)
	code, body = subscribe(t, s, reg.AccessToken, "", allTopics...)
	exact(t, 400, `{"data":{"clientId":{"code":"validation_required","message":"Cannot be blank."}},"message":"Something went wrong while processing your request.","status":400}`, code, body)
	code, body = call(t, s, "POST", "/api/realtime", reg.AccessToken, `{"clientId":`)
	exact(t, 400, `{"data":{},"message":"Something went wrong while processing your request.","status":400}`, code, body)
	code, body = subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 204, code)
	require.Empty(t, body)
	require.Equal(t, 1, s.Subscribed(reg.AgentID))
	require.Equal(t, [][]string{allTopics}, s.Subscriptions(reg.AgentID))

	const forbidden = `{"data":{},"message":"The current and the previous request authorization don't match.","status":403}`
	code, body = subscribe(t, s, u.Token, st.id, allTopics...)
	exact(t, 403, forbidden, code, body)
	code, body = subscribe(t, s, "", st.id, allTopics...)
	exact(t, 403, forbidden, code, body)
	code, _ = subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 204, code)

	// Events: only this agent's rows, framed as PocketBase frames them.
	_, err := s.CreateInvestigation(other.AgentID, "Not for the first agent at all", "")
	require.NoError(t, err)
	invID, err := s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "high")
	require.NoError(t, err)
	rec, _ := s.Record(Investigations, invID)
	id, event, data, err := ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, st.id, id)
	require.Equal(t, "investigations", event)
	require.Equal(t, `{"record":{"agent_id":"`+reg.AgentID+`","collectionId":"pbc_59972043","collectionName":"investigations","completed_at":"","episode_id":"","id":"`+invID+`","initiated_at":"`+rec["initiated_at"].(string)+`","metadata":{"initiated_by":"user"},"priority":"high","resolution_plan":"","status":"pending","user_id":"`+u.ID+`","user_prompt":"Disk is full on /var partition"},"action":"create"}`, string(data))
	require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$`, rec["initiated_at"])

	patchID, err := s.CreatePatchOperation(reg.AgentID, PatchOperation{Exclusions: []string{"nginx"}})
	require.NoError(t, err)
	_, event, data, err = ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, "patch_operations", event)
	require.Equal(t, `{"record":{"agent_id":"`+reg.AgentID+`","collectionId":"pbc_2550880806","collectionName":"patch_operations","completed_at":"","error_msg":"","exclusions":["nginx"],"exit_code":0,"id":"`+patchID+`","lxc_id":"","mode":"dry-run","output_path":"","script_id":"r13zcso5sx93pj7","script_url":"/api/files/pbc_1280174292/r13zcso5sx93pj7/apt_update_spmzr2mmy0.sh","started_at":"","status":"pending","stderr_file":"","stdout_file":"","user_id":"`+u.ID+`","vmid":""},"action":"create"}`, string(data))

	rebootID, err := s.CreateRebootOperation(reg.AgentID, "kernel update", 120)
	require.NoError(t, err)
	rrec, _ := s.Record(RebootOperations, rebootID)
	_, event, data, err = ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, "reboot_operations", event)
	require.Equal(t, `{"record":{"acknowledged_at":"","agent_id":"`+reg.AgentID+`","collectionId":"pbc_3109392152","collectionName":"reboot_operations","completed_at":"","error_message":"","id":"`+rebootID+`","lxc_id":"","reason":"kernel update","requested_at":"`+rrec["requested_at"].(string)+`","status":"sent","timeout_seconds":120,"user_id":"`+u.ID+`","vmid":""},"action":"create"}`, string(data))

	require.NoError(t, s.UpdateRecord(RebootOperations, rebootID, map[string]any{"status": "rebooting"}))
	_, _, data, err = ReadEvent(st.r)
	require.NoError(t, err)
	require.Contains(t, string(data), `"status":"rebooting"`)
	require.True(t, strings.HasSuffix(string(data), `},"action":"update"}`))
	require.NoError(t, s.DeleteRecord(PatchOperations, patchID))
	_, event, data, err = ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, "patch_operations", event)
	require.True(t, strings.HasSuffix(string(data), `},"action":"delete"}`))

	// A guest subscription gets nothing; the agent's stream gets the
	// next event, so the guest's silence is not a timing accident.
	guest := connect(t, s, "")
	code, _ = subscribe(t, s, "", guest.id, allTopics...)
	require.Equal(t, 204, code)
	invID2, err := s.CreateInvestigation(reg.AgentID, "Second issue on the same agent", "")
	require.NoError(t, err)
	_, _, data, err = ReadEvent(st.r)
	require.NoError(t, err)
	require.Contains(t, string(data), invID2)
	s.DropStreams()
	_, _, _, err = ReadEvent(guest.r)
	require.Error(t, err)
	require.False(t, errors.Is(err, io.EOF), "a dropped stream is not a clean end: %v", err)
	_, _, _, err = ReadEvent(st.r)
	require.Error(t, err)
	require.NoError(t, s.Wait(ctx(t), func() bool { return s.Streams() == 0 }))
	code, _ = subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 404, code)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestRealtimeIdleClose(t *testing.T) {
	const idle = 300 * time.Millisecond
	s := New(t, Options{IdleTimeout: idle})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	start := time.Now()
	st := connect(t, s, reg.AccessToken)
	code, _ := subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 204, code)
	_, _, _, err := ReadEvent(st.r)
	require.ErrorIs(t, err, io.EOF, "the idle close ends the stream cleanly")
	require.GreaterOrEqual(t, time.Since(start), idle)

	// A message resets the idle timer.
	st = connect(t, s, reg.AccessToken)
	code, _ = subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 204, code)
	// The event is written after this instant, so the stream ends at
	// least idle after it.
	sent := time.Now()
	_, err = s.CreateInvestigation(reg.AgentID, "Something to keep the stream busy", "")
	require.NoError(t, err)
	_, _, _, err = ReadEvent(st.r)
	require.NoError(t, err)
	_, _, _, err = ReadEvent(st.r)
	require.ErrorIs(t, err, io.EOF)
	require.GreaterOrEqual(t, time.Since(sent), idle)
}

func TestRealtimeTopics(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	st := connect(t, s, reg.AccessToken)
	// A guest subscription may be upgraded to an authenticated one.
	code, _ := subscribe(t, s, "", st.id, "investigations")
	require.Equal(t, 204, code)
	code, _ = subscribe(t, s, reg.AccessToken, st.id, "investigations/*", InvestigationsCollectionID)
	require.Equal(t, 204, code)
	invID, err := s.CreateInvestigation(reg.AgentID, "Disk is full on /var partition", "")
	require.NoError(t, err)
	var events []string
	for range 2 {
		_, event, data, err := ReadEvent(st.r)
		require.NoError(t, err)
		require.Contains(t, string(data), invID)
		events = append(events, event)
	}
	require.ElementsMatch(t, []string{"investigations/*", InvestigationsCollectionID}, events)
	// The user owning the agent sees the same rows on its own stream.
	us := connect(t, s, u.Token)
	code, _ = subscribe(t, s, u.Token, us.id, "investigations")
	require.Equal(t, 204, code)
	require.NoError(t, s.UpdateRecord(Investigations, invID, map[string]any{"status": "failed"}))
	_, event, data, err := ReadEvent(us.r)
	require.NoError(t, err)
	require.Equal(t, "investigations", event)
	require.Contains(t, string(data), `"status":"failed"`)
}

func TestAuthorizePending(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	got := make(chan string, 1)
	go func() {
		code, err := s.AuthorizePending(ctx(t), u)
		if err != nil {
			code = err.Error()
		}
		got <- code
	}()
	st, body := call(t, s, "POST", "/api/agent", "", `{"action":"device-auth-start"}`)
	require.Equal(t, 200, st)
	start := decode(t, body)
	require.Equal(t, start["user_code"], <-got)
	st, body = call(t, s, "POST", "/api/agent", "", registerBody(start["device_code"].(string)))
	require.Equal(t, 200, st, body)
	a, _ := s.Agent(decode(t, body)["agent_id"].(string))
	require.Equal(t, u.ID, a.UserID)
}
