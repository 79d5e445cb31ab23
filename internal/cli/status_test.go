package cli

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// registered registers the harness's host and starts a daemon state as
// the daemon does (this process stands in for it).
func (h *backendHarness) registered() (string, *auth.StateWriter) {
	h.t.Helper()
	code, _, errOut, _ := h.register("register")
	require.Equal(h.t, 0, code, errOut)
	w, err := auth.OpenStateWriter(h.tokenPath)
	require.NoError(h.t, err)
	return h.srv.Agents()[0], w
}

func TestStatusHealthy(t *testing.T) {
	h := newBackendHarness(t)
	agent, w := h.registered()
	sent := time.Now().Add(-12 * time.Second)
	require.NoError(t, w.MetricsSent(sent))
	h.srv.ResetRequests()

	for _, args := range [][]string{{"--status"}, {"status"}} {
		code, out, errOut := h.run(args...)
		require.Equal(t, 0, code, "%v\n%s%s", args, out, errOut)
		assert.Empty(t, errOut)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		require.Len(t, lines, 8, out)
		assert.Equal(t, "registration:   registered (device flow), agent "+agent, lines[0])
		assert.Equal(t, "token file:     "+h.tokenPath, lines[1])
		assert.Regexp(t, `^access token:   expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in (6d 23h|7d 0h)\)$`, lines[2])
		assert.Regexp(t, `^refresh token:  registered \d{4}-\d\d-\d\d, expires on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in (29d 23h|30d 0h)\); renewal: untried$`, lines[3])
		assert.Regexp(t, `^backend:        `+h.srv.URL+`: reachable, refresh accepted \(\d+ ms\)$`, lines[4])
		assert.Regexp(t, `^daemon:         running, pid `+strconv.Itoa(os.Getpid())+`, since `, lines[5])
		assert.Regexp(t, `^last metrics:   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(\d+s ago\)$`, lines[6])
		assert.Equal(t, "health:         healthy", lines[7])
	}
	assert.Equal(t, 2, h.srv.Count("refresh"), "one refresh per status: the credential check")

	code, out, _ := h.run("status", "--json")
	require.Equal(t, 0, code)
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.True(t, rep.Healthy)
	assert.Empty(t, rep.Problems)
	assert.Equal(t, agent, rep.Registration.AgentID)
	assert.Equal(t, auth.ModeDevice, rep.Registration.Mode)
	assert.True(t, rep.Backend.Accepted)
	assert.Equal(t, "refresh", rep.Backend.Check)
	assert.True(t, rep.Daemon.Running)
	assert.Equal(t, os.Getpid(), rep.Daemon.PID)
	assert.True(t, sent.Equal(rep.Daemon.LastMetricsAt), "%v != %v", sent, rep.Daemon.LastMetricsAt)
}

func TestStatusBackendDown(t *testing.T) {
	h := newBackendHarness(t)
	h.registered()
	h.srv.Close()
	code, out, _ := h.run("--status")
	assert.Equal(t, 1, code)
	assert.Regexp(t, `(?m)^backend:        `+h.srv.URL+`: unreachable: `, out)
	assert.Contains(t, out, "health:         unhealthy\n  - the backend at "+h.srv.URL+" cannot be reached: ")
	assert.Contains(t, out, "daemon:         running")
}

func TestStatusBackendErrors(t *testing.T) {
	h := newBackendHarness(t)
	h.registered()
	h.srv.Inject("refresh", nannyapitest.Fault{Status: 500})
	code, out, _ := h.run("--status")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "  - the backend at "+h.srv.URL+" answers with errors: ")
}

func TestStatusNotRegistered(t *testing.T) {
	h := newBackendHarness(t)
	code, out, errOut := h.run("--status")
	assert.Equal(t, 1, code, errOut)
	assert.Regexp(t, `^registration:   not usable
token file:     `+h.tokenPath+`
backend:        `+h.srv.URL+`: reachable \(health, \d+ ms\)
`, out)
	assert.Contains(t, out, `daemon:         not running (it has never run here)
last metrics:   never
health:         unhealthy
  - this host is not registered with NannyAPI: run sudo nannyagent --register
  - the daemon has never run here: sudo systemctl enable --now nannyagent
`)
	assert.Equal(t, 1, h.srv.Count("GET /api/health"))
}

func TestStatusDaemonStopped(t *testing.T) {
	h := newBackendHarness(t)
	_, w := h.registered()
	require.NoError(t, w.Failed(errString("ingest-metrics: backend unreachable")))
	require.NoError(t, w.Stopped())
	code, out, _ := h.run("--status")
	assert.Equal(t, 1, code)
	assert.Regexp(t, `(?m)^daemon:         not running \(stopped `, out)
	assert.Regexp(t, `(?m)^last error:     ingest-metrics: backend unreachable \(\d+s ago\)$`, out)
	assert.Contains(t, out, "  - the daemon is not running: sudo systemctl start nannyagent (journalctl -u nannyagent says why it stopped)\n")
}

func TestStatusRefreshTokenExpired(t *testing.T) {
	h := newBackendHarness(t)
	h.registered()
	h.srv.ExpireRefreshTokens()
	code, out, _ := h.run("status")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "registration:   not usable\n")
	assert.Regexp(t, "(?m)^  - the refresh token has expired \\(registration on \\d{4}-\\d\\d-\\d\\d \\+ 30 days\\): run `sudo nannyagent --register --force` to register again$", out)
	assert.Regexp(t, `(?m)^backend:        .*: reachable, refresh failed: the refresh token has expired`, out)
}

func TestStatusStaticToken(t *testing.T) {
	h := newBackendHarness(t)
	h.srv.SetStaticTokensSupported(true)
	t.Setenv("NANNYAI_STATIC_TOKEN", h.srv.CreateStaticToken(h.user))
	agent, _ := h.registered()
	code, out, errOut := h.run("status")
	require.Equal(t, 0, code, out+errOut)
	assert.Contains(t, out, "registration:   registered with a static token, agent "+agent+"\n")
	assert.Regexp(t, `(?m)^backend:        .*: reachable, investigation lookup accepted \(\d+ ms\)$`, out)
	reqs := h.srv.RequestsFor("GET /api/investigations")
	require.Len(t, reqs, 1)
	assert.Equal(t, 404, reqs[0].Status)
	assert.Equal(t, agent, reqs[0].Header.Get("X-Agent-ID"))
}

type errString string

func (e errString) Error() string { return string(e) }
