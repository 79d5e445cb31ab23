package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// backendHarness runs the command line against a test backend, with the
// token files in a fresh directory named by --token-path.
type backendHarness struct {
	t         *testing.T
	srv       *nannyapitest.Server
	user      *nannyapitest.User
	config    string
	tokenPath string
	euid      int
	stdin     *os.File
}

func newBackendHarness(t *testing.T) *backendHarness {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	return &backendHarness{
		t: t, srv: srv, user: srv.CreateUser("u1@example.com"), config: writeConfig(t, ""),
		tokenPath: filepath.Join(t.TempDir(), "nannyagent", "token.json"), euid: 0,
	}
}

func (h *backendHarness) run(args ...string) (int, string, string) {
	h.t.Helper()
	var out, errb bytes.Buffer
	a := newApp(&out, &errb)
	a.geteuid = func() int { return h.euid }
	a.stdin = h.stdin
	a.backend.pollInterval = time.Millisecond
	code := a.run(context.Background(), append([]string{"--config", h.config, "--api-url", h.srv.URL, "--token-path", h.tokenPath}, args...))
	return code, out.String(), errb.String()
}

// register runs the command while the user authorizes the code at the
// portal.
func (h *backendHarness) register(args ...string) (int, string, string, string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	codes := make(chan string, 1)
	go func() {
		code, err := h.srv.AuthorizePending(ctx, h.user)
		if err != nil {
			code = err.Error()
		}
		codes <- code
	}()
	code, out, errOut := h.run(args...)
	cancel()
	return code, out, errOut, <-codes
}

func TestRegisterCommand(t *testing.T) {
	h := newBackendHarness(t)
	code, out, errOut, userCode := h.register("--register")
	require.Equal(t, 0, code, errOut)
	agents := h.srv.Agents()
	require.Len(t, agents, 1)
	assert.Contains(t, out, "Registering this host with NannyAPI at "+h.srv.URL+".")
	assert.Contains(t, out, "    http://localhost:8080/agent/authorize?user_code="+userCode+"\n")
	assert.Contains(t, out, "or enter this code in the portal (https://nannyai.dev):\n\n    "+userCode+"\n")
	assert.Contains(t, out, "Registered as agent "+agents[0]+". The tokens are in "+h.tokenPath+".\n")
	assert.Empty(t, errOut)
	st, err := os.Stat(h.tokenPath)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// Again, without --force and without a terminal to ask on: refused,
	// nothing asked of the backend, nothing changed.
	before, err := os.ReadFile(h.tokenPath)
	require.NoError(t, err)
	for _, args := range [][]string{{"--register"}, {"register"}} {
		code, out, errOut = h.run(args...)
		assert.Equal(t, 1, code, args)
		assert.Empty(t, out)
		assert.Equal(t, "nannyagent: this host is already registered as agent "+agents[0]+" ("+h.tokenPath+" exists): run `sudo nannyagent --register --force` to replace the registration\n", errOut)
	}
	assert.Equal(t, 1, h.srv.Count("device-auth-start"))
	after, err := os.ReadFile(h.tokenPath)
	require.NoError(t, err)
	assert.Equal(t, before, after)

	// With --force (both spellings) it registers again.
	for i, args := range [][]string{{"--register", "--force"}, {"register", "--force"}} {
		code, out, errOut, _ = h.register(args...)
		require.Equal(t, 0, code, "%v: %s", args, errOut)
		agents = h.srv.Agents()
		require.Len(t, agents, 2+i)
		assert.Contains(t, out, "Registered as agent "+agents[len(agents)-1]+".")
	}
}

// On a terminal the command asks before replacing a registration.
func TestRegisterAsksOnTerminal(t *testing.T) {
	h := newBackendHarness(t)
	code, _, errOut, _ := h.register("register")
	require.Equal(t, 0, code, errOut)
	first := h.srv.Agents()[0]

	for _, c := range []struct {
		answer string
		code   int
		agents int
	}{{"n\n", 1, 1}, {"\n", 1, 1}, {"yes\n", 0, 2}} {
		ptmx, tty, err := pty.Open()
		require.NoError(t, err)
		_, err = ptmx.Write([]byte(c.answer))
		require.NoError(t, err)
		h.stdin = tty
		var out string
		if c.code == 0 {
			code, out, errOut, _ = h.register("--register")
		} else {
			code, out, errOut = h.run("--register")
		}
		ptmx.Close()
		tty.Close()
		assert.Equal(t, c.code, code, "%q: %s", c.answer, errOut)
		assert.Contains(t, out, "This host is already registered as agent "+first+" ("+h.tokenPath+").\nRegister it again and replace that registration? [y/N] ")
		assert.Len(t, h.srv.Agents(), c.agents, "%q", c.answer)
	}
}

func TestRegisterNeedsRoot(t *testing.T) {
	h := newBackendHarness(t)
	h.euid = 1000
	code, out, errOut := h.run("--register")
	assert.Equal(t, 1, code)
	assert.Empty(t, out)
	assert.Equal(t, "nannyagent: registering needs root: the tokens go to "+h.tokenPath+", which only root may read (run: sudo nannyagent --register)\n", errOut)
	assert.Equal(t, 0, h.srv.Count("device-auth-start"))
}

func TestRegisterStaticTokenUnsupported(t *testing.T) {
	h := newBackendHarness(t)
	t.Setenv("NANNYAI_STATIC_TOKEN", "nsk_0123456789abcdef")
	code, _, errOut := h.run("register")
	assert.Equal(t, 1, code)
	assert.Equal(t, "nannyagent: the backend does not support static tokens (it answered \"unknown action\" to register-with-token): remove NANNYAI_STATIC_TOKEN in the environment and register with the device flow: sudo nannyagent --register\n", errOut)
	assert.NoFileExists(t, h.tokenPath)
}

func TestRegisterStaticToken(t *testing.T) {
	h := newBackendHarness(t)
	h.srv.SetStaticTokensSupported(true)
	t.Setenv("NANNYAI_STATIC_TOKEN", h.srv.CreateStaticToken(h.user))
	code, out, errOut := h.run("register")
	require.Equal(t, 0, code, errOut)
	agents := h.srv.Agents()
	require.Len(t, agents, 1)
	assert.Contains(t, out, "with the configured static token.")
	assert.Contains(t, out, "Registered as agent "+agents[0]+".")
	assert.NotContains(t, out, "enter this code")
}

func TestRegisterDeviceCodeExpired(t *testing.T) {
	h := newBackendHarness(t)
	go func() {
		// Nobody authorizes the code; its 10 minutes pass.
		_ = h.srv.Wait(context.Background(), func() bool { return h.srv.Count("register") >= 1 })
		h.srv.Advance(11 * time.Minute)
	}()
	code, out, errOut := h.run("register")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "Waiting for authorization: ")
	assert.Regexp(t, `^nannyagent: the device code expired before it was authorized \(the code [A-Z0-9]{8} was valid for 10m0s\): run `+"`sudo nannyagent --register`"+` again and authorize the new code in time\n$`, errOut)
}

// The backend keys are overridden by flags, over the environment, over
// the file (§4).
func TestBackendFlagPrecedence(t *testing.T) {
	dir := t.TempDir()
	fileTP, envTP, flagTP := filepath.Join(dir, "file", "token.json"), filepath.Join(dir, "env", "token.json"), filepath.Join(dir, "flag", "token.json")
	cfgPath := writeConfig(t, fmt.Sprintf("nannyapi_url: http://127.0.0.1:1\ntoken_path: %s\nmetrics_interval: 60\n", fileTP))
	statusJSON := func(args ...string) statusReport {
		t.Helper()
		var out, errb bytes.Buffer
		a := newApp(&out, &errb)
		code := a.run(context.Background(), append([]string{"--config", cfgPath, "status", "--json"}, args...))
		require.Equal(t, 1, code, errb.String())
		var rep statusReport
		require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
		return rep
	}
	assert.Equal(t, fileTP, statusJSON().Registration.TokenPath)
	t.Setenv("TOKEN_PATH", envTP)
	t.Setenv("NANNYAPI_URL", "http://127.0.0.1:2")
	rep := statusJSON()
	assert.Equal(t, envTP, rep.Registration.TokenPath)
	assert.Equal(t, "http://127.0.0.1:2", rep.Backend.URL)
	rep = statusJSON("--token-path", flagTP, "--api-url", "http://127.0.0.1:3")
	assert.Equal(t, flagTP, rep.Registration.TokenPath)
	assert.Equal(t, "http://127.0.0.1:3", rep.Backend.URL)

	// A flag's bad value is named with its source; a flag fixes what the
	// environment got wrong.
	code, _, errOut := runCLI(t, context.Background(), "--config", cfgPath, "--metrics-interval", "1", "status")
	assert.Equal(t, 2, code)
	assert.Equal(t, "nannyagent: "+cfgPath+": metrics_interval 1 (from --metrics-interval): must be 5 to 604800 seconds\n", errOut)
	t.Setenv("NANNYAPI_URL", "ftp://nowhere")
	code, _, errOut = runCLI(t, context.Background(), "--config", cfgPath, "status")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `nannyapi_url "ftp://nowhere" (from NANNYAPI_URL)`)
	assert.Equal(t, "http://127.0.0.1:3", statusJSON("--api-url", "http://127.0.0.1:3").Backend.URL)
}

func TestBackendFlagsInHelp(t *testing.T) {
	code, out, _ := runCLI(t, context.Background(), "--help")
	require.Equal(t, 0, code)
	for _, f := range []string{"--api-url", "--portal-url", "--token-path", "--agent-id", "--metrics-interval", "--proxmox-interval", "--register", "--status", "--force", "register ", "status "} {
		assert.Contains(t, out, f)
	}
	code, out, _ = runCLI(t, context.Background(), "register", "--help")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "--api-url")
	assert.Contains(t, out, "--force")
}

func TestLegacyBackendFlagMisuse(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--register", "--status"}, "--register and --status are separate commands: give one"},
		{[]string{"--force"}, "--force goes with --register"},
		{[]string{"--status", "--diagnose", "disk full"}, "--diagnose goes alone, not with --register or --status"},
	}
	for _, c := range cases {
		code, _, errOut := runCLI(t, context.Background(), append([]string{"--config", writeConfig(t, "")}, c.args...)...)
		assert.Equal(t, 2, code, c.args)
		assert.Equal(t, "nannyagent: "+c.want+"\n", errOut, c.args)
	}
}
