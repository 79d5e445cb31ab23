package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// earlierAgentFile is token.json as the earlier agent writes it
// (json.MarshalIndent of its struct, §2.2): expires_at is now+3600 s.
func earlierAgentFile(access, refresh, agentID string, expires time.Time) string {
	return fmt.Sprintf("{\n  \"access_token\": %q,\n  \"refresh_token\": %q,\n  \"token_type\": \"\",\n  \"expires_at\": %q,\n  \"agent_id\": %q\n}",
		access, refresh, expires.Format(time.RFC3339Nano), agentID)
}

func writeEarlierAgentFiles(t *testing.T, tokenPath, content, refresh string) {
	t.Helper()
	dir := filepath.Dir(tokenPath)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.WriteFile(tokenPath, []byte(content), 0o600))
	if refresh != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, ".refresh_token"), []byte(refresh), 0o600))
	}
}

// The earlier agent's files load and work as they are.
func TestEarlierAgentFilesLoad(t *testing.T) {
	e := newEnv(t)
	reg := e.srv.RegisterAgent(e.user, "oldhost")
	writeEarlierAgentFiles(t, e.cfg.TokenPath,
		earlierAgentFile(reg.AccessToken, reg.RefreshToken, reg.AgentID, time.Now().Add(time.Hour)), reg.RefreshToken)

	m := e.manager()
	require.True(t, m.Registered())
	assert.Equal(t, reg.AgentID, m.AgentID())
	tok, err := m.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, reg.AccessToken, tok, "the JWT lives 7 days: no refresh at the file's expires_at")
	assert.Equal(t, 0, e.srv.Count("refresh"))
	st := m.Status()
	// The earlier agent rewrites token.json in place, so its birth time
	// is the registration's: an estimate, said to be one.
	require.False(t, st.RegisteredAt.IsZero(), "ext4 and tmpfs record birth times")
	assert.True(t, st.Estimated)
	assert.WithinDuration(t, time.Now(), st.RegisteredAt, time.Minute)
	assert.Equal(t, st.RegisteredAt.Add(30*24*time.Hour), st.RefreshTokenExpires)

	_, err = m.Client().ListInvestigations(context.Background())
	require.NoError(t, err)
}

// The earlier agent's recovery path: token.json lost its refresh token
// (it clears it after a refusal) or is gone, .refresh_token has it.
func TestRefreshTokenBackup(t *testing.T) {
	for _, name := range []string{"cleared", "missing"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			reg := e.srv.RegisterAgent(e.user, "oldhost")
			content := earlierAgentFile(reg.AccessToken, "", reg.AgentID, time.Now().Add(-time.Hour))
			writeEarlierAgentFiles(t, e.cfg.TokenPath, content, reg.RefreshToken+"\n")
			if name == "missing" {
				require.NoError(t, os.Remove(e.cfg.TokenPath))
			}
			e.srv.ExpireAccessTokens()
			m := e.manager()
			require.True(t, m.Registered())
			_, err := m.Client().ListInvestigations(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 1, e.srv.Count("refresh"))
			tf := readTokenFile(t, e.cfg.TokenPath)
			assert.Equal(t, reg.RefreshToken, tf.RefreshToken)
			assert.Equal(t, reg.AgentID, tf.AgentID)
			assert.Equal(t, reg.AgentID, m.AgentID())
		})
	}
}

// What this agent writes, the earlier agent's decoder reads: its five
// fields, with types it knows.
func TestEarlierAgentReadsOurFile(t *testing.T) {
	e := newEnv(t)
	m := e.manager()
	reg := e.register(m)
	data, err := os.ReadFile(e.cfg.TokenPath)
	require.NoError(t, err)
	var old struct {
		AccessToken  string    `json:"access_token"`
		RefreshToken string    `json:"refresh_token"`
		TokenType    string    `json:"token_type"`
		ExpiresAt    time.Time `json:"expires_at"`
		AgentID      string    `json:"agent_id"`
	}
	require.NoError(t, json.Unmarshal(data, &old))
	assert.Equal(t, reg.AgentID, old.AgentID)
	assert.Len(t, old.RefreshToken, 32)
	assert.NotEmpty(t, old.AccessToken)
	assert.True(t, old.ExpiresAt.After(time.Now().Add(6*24*time.Hour)))
	assert.True(t, strings.HasPrefix(string(data), "{\n  \"access_token\": "), "two-space indent as MarshalIndent writes it")
}

func TestParseTokenFileErrors(t *testing.T) {
	const name = "/var/lib/nannyagent/token.json"
	cases := []struct{ in, want string }{
		{"", name + " is empty (a write was cut short?): register again with sudo nannyagent --register --force"},
		{" \n", name + " is empty (a write was cut short?): register again with sudo nannyagent --register --force"},
		{`{"access_token": "a",`, name + " is not a token file: the JSON ends early (a write was cut short?)"},
		{"{\n  \"access_token\": 5\n}", name + " is not a token file: access_token on line 2: want a string, found number"},
		{`[1,2]`, name + " is not a token file: want a JSON object, found array"},
		{`{"access_token": "a"}}`, name + " is not a token file: more data after the JSON object"},
		{"{\n\"a\":\n}", name + " is not a token file: invalid JSON at line 3, column 1: invalid character '}' looking for beginning of value"},
		{`{"expires_at": "tomorrow"}`, name + `: expires_at is not a date: "\"tomorrow\""`},
		{`{"registered_at": 5}`, name + `: registered_at is not a date: "5"`},
		{`{"access_token": "a b"}`, name + ": access_token has a character a token cannot have (byte 0x20 at 1)"},
		{`{"refresh_token": "` + strings.Repeat("a", 1025) + `"}`, name + ": refresh_token is 1025 bytes long (at most 1024)"},
		{`{"agent_id": "x\ny"}`, name + ": agent_id has a character a token cannot have (byte 0x0a at 1)"},
	}
	for _, c := range cases {
		_, err := ParseTokenFile([]byte(c.in), name)
		require.Error(t, err, "%q", c.in)
		assert.Equal(t, c.want, err.Error(), "%q", c.in)
	}
}

// A broken token.json is a clear error from Token and Status, naming the
// file, and never a panic.
func TestBrokenTokenFile(t *testing.T) {
	e := newEnv(t)
	writeEarlierAgentFiles(t, e.cfg.TokenPath, `{"access_token": "a`, "")
	m := e.manager()
	assert.False(t, m.Registered())
	_, err := m.Token(context.Background())
	require.EqualError(t, err, e.cfg.TokenPath+" is not a token file: the JSON ends early (a write was cut short?)")
	assert.Equal(t, err.Error(), m.Status().Problem)

	// The fix is a new registration, which --force allows.
	_, err = m.Register(context.Background(), RegisterOptions{Host: testHost})
	require.ErrorIs(t, err, ErrAlreadyRegistered)
	_, err = m.Register(context.Background(), RegisterOptions{
		Host: testHost, Force: true, PollInterval: time.Millisecond,
		OnDeviceCode: func(d DeviceCode) { require.NoError(t, e.srv.Authorize(e.user, d.UserCode)) },
	})
	require.NoError(t, err)
	assert.True(t, m.Registered())
}

func TestFileModes(t *testing.T) {
	t.Run("created", func(t *testing.T) {
		e := newEnv(t)
		e.register(e.manager())
		dir := filepath.Dir(e.cfg.TokenPath)
		assert.Equal(t, os.FileMode(0o700), mode(t, dir))
		assert.Equal(t, os.FileMode(0o600), mode(t, e.cfg.TokenPath))
		assert.Equal(t, os.FileMode(0o600), mode(t, filepath.Join(dir, ".refresh_token")))
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		assert.Equal(t, []string{".refresh_token", "token.json"}, names, "no temporary files left behind")
	})
	t.Run("narrowed where ours", func(t *testing.T) {
		e := newEnv(t)
		reg := e.srv.RegisterAgent(e.user, "h")
		dir := filepath.Dir(e.cfg.TokenPath)
		writeEarlierAgentFiles(t, e.cfg.TokenPath, earlierAgentFile(reg.AccessToken, reg.RefreshToken, reg.AgentID, time.Now()), reg.RefreshToken)
		require.NoError(t, os.Chmod(dir, 0o755))
		require.NoError(t, os.Chmod(e.cfg.TokenPath, 0o644))
		require.NoError(t, os.Chmod(filepath.Join(dir, ".refresh_token"), 0o666))
		m := e.manager()
		require.True(t, m.Registered(), m.Status().Problem)
		assert.Equal(t, os.FileMode(0o700), mode(t, dir))
		assert.Equal(t, os.FileMode(0o600), mode(t, e.cfg.TokenPath))
		assert.Equal(t, os.FileMode(0o600), mode(t, filepath.Join(dir, ".refresh_token")))
	})
	t.Run("shared directory", func(t *testing.T) {
		// A directory holding other files is not chmod-ed (it could be
		// /etc); one others can write is refused.
		e := newEnv(t)
		dir := filepath.Dir(e.cfg.TokenPath)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "other"), nil, 0o644))
		require.NoError(t, os.Chmod(dir, 0o755))
		e.register(e.manager())
		assert.Equal(t, os.FileMode(0o755), mode(t, dir))
		assert.Equal(t, os.FileMode(0o600), mode(t, e.cfg.TokenPath))

		require.NoError(t, os.Chmod(dir, 0o777))
		m := e.manager()
		assert.False(t, m.Registered())
		want := "token directory " + dir + " has mode 0777: group or others can write it and so replace the tokens; run chmod 700 " + dir + ", or set token_path in a directory only root can write"
		assert.Equal(t, want, m.Status().Problem)
		_, err := m.Register(context.Background(), RegisterOptions{Host: testHost, Force: true})
		require.EqualError(t, err, want)
	})
	t.Run("sticky directory", func(t *testing.T) {
		e := newEnv(t)
		dir := filepath.Dir(e.cfg.TokenPath)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		require.NoError(t, os.Chmod(dir, os.ModeSticky|0o777))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := e.manager().Register(ctx, RegisterOptions{Host: testHost})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "has mode 1777")
		st, err := os.Stat(dir)
		require.NoError(t, err)
		assert.Equal(t, os.ModeSticky|0o777, st.Mode()&(os.ModeSticky|os.ModePerm), "a shared directory is never chmod-ed")
	})
	t.Run("symlink", func(t *testing.T) {
		e := newEnv(t)
		dir := filepath.Dir(e.cfg.TokenPath)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		target := filepath.Join(t.TempDir(), "elsewhere.json")
		require.NoError(t, os.WriteFile(target, []byte("{}"), 0o600))
		require.NoError(t, os.Symlink(target, e.cfg.TokenPath))
		m := e.manager()
		assert.Equal(t, e.cfg.TokenPath+" is a symbolic link; the token files must be regular files (remove it and register again)", m.Status().Problem)
	})
}

// Files and directories of another user are refused with the command
// that fixes them (needs root to set up).
func TestForeignOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown test files to another user")
	}
	const uid = 4242
	t.Run("file", func(t *testing.T) {
		e := newEnv(t)
		reg := e.srv.RegisterAgent(e.user, "h")
		writeEarlierAgentFiles(t, e.cfg.TokenPath, earlierAgentFile(reg.AccessToken, reg.RefreshToken, reg.AgentID, time.Now()), "")
		require.NoError(t, os.Chown(e.cfg.TokenPath, uid, uid))
		m := e.manager()
		assert.Equal(t, fmt.Sprintf("%s belongs to uid %d, who could change the tokens: run chown root:root %s", e.cfg.TokenPath, uid, e.cfg.TokenPath), m.Status().Problem)
	})
	t.Run("directory", func(t *testing.T) {
		e := newEnv(t)
		dir := filepath.Dir(e.cfg.TokenPath)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		require.NoError(t, os.Chown(dir, uid, uid))
		_, err := e.manager().Register(context.Background(), RegisterOptions{Host: testHost})
		require.EqualError(t, err, fmt.Sprintf("token directory %s belongs to uid %d, who could replace the tokens: run chown root:root %s, or set token_path in a directory only root can write", dir, uid, dir))
	})
}

func TestStateFile(t *testing.T) {
	tokenPath := filepath.Join(t.TempDir(), "nannyagent", "token.json")
	assert.Equal(t, filepath.Join(filepath.Dir(tokenPath), "state.json"), StatePath(tokenPath))
	_, err := ReadState(tokenPath)
	require.ErrorIs(t, err, os.ErrNotExist)

	w, err := OpenStateWriter(tokenPath)
	require.NoError(t, err)
	st, err := ReadState(tokenPath)
	require.NoError(t, err)
	assert.Equal(t, os.Getpid(), st.PID)
	assert.True(t, st.Running())
	assert.True(t, st.LastMetricsAt.IsZero())
	assert.Equal(t, os.FileMode(0o600), mode(t, StatePath(tokenPath)))
	assert.Equal(t, os.FileMode(0o700), mode(t, filepath.Dir(tokenPath)))

	at := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	require.NoError(t, w.MetricsSent(at))
	require.NoError(t, w.Failed(fmt.Errorf("ingest-metrics: 500")))
	st, err = ReadState(tokenPath)
	require.NoError(t, err)
	assert.Equal(t, at, st.LastMetricsAt)
	assert.Equal(t, "ingest-metrics: 500", st.LastError)
	assert.Equal(t, w.State(), *st)

	// Another process that got the PID later is not the daemon.
	reused := *st
	reused.ProcessStart++
	assert.False(t, reused.Running())
	gone := *st
	gone.PID = 1 << 30
	assert.False(t, gone.Running())

	require.NoError(t, w.Stopped())
	st, err = ReadState(tokenPath)
	require.NoError(t, err)
	assert.False(t, st.Running())

	// A new run keeps the last metrics time.
	w2, err := OpenStateWriter(tokenPath)
	require.NoError(t, err)
	assert.Equal(t, at, w2.State().LastMetricsAt)
	assert.True(t, w2.State().StoppedAt.IsZero())
	st, err = ReadState(tokenPath)
	require.NoError(t, err)
	assert.True(t, st.Running())
}

func TestBrokenStateFile(t *testing.T) {
	tokenPath := filepath.Join(t.TempDir(), "token.json")
	require.NoError(t, os.WriteFile(StatePath(tokenPath), []byte(`{"pid": "x"}`), 0o600))
	_, err := ReadState(tokenPath)
	require.EqualError(t, err, StatePath(tokenPath)+` is not a state file: pid on line 1: want a int, found string`)
}

func FuzzParseTokenFile(f *testing.F) {
	f.Add([]byte(earlierAgentFile("eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln", "e68aca601862428500210d24304a819f", "brppshbc1nycil4", time.Date(2026, 11, 26, 1, 59, 55, 795839500, time.UTC))))
	f.Add([]byte(`{"access_token":"","refresh_token":"","token_type":"static","expires_at":"2126-11-26T00:00:00Z","agent_id":"x"}`))
	f.Add([]byte(`{"registered_at":"2026-11-26T00:00:00Z","registered_at_estimated":true,"refresh_token_renewed_at":null}`))
	f.Add([]byte(`{"access_token": 5}`))
	f.Add([]byte(`{"expires_at": "2026-13-45T99:99:99Z"}`))
	f.Add([]byte("{\"a\":\n"))
	f.Add([]byte(`null`))
	f.Add([]byte("\xff\xfe{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tf, err := ParseTokenFile(data, "token.json")
		if err != nil {
			require.True(t, strings.HasPrefix(err.Error(), "token.json"), "the error names the file: %v", err)
			return
		}
		// What parses survives a write and a read unchanged.
		out, err := encodeTokenFile(tf)
		require.NoError(t, err)
		back, err := ParseTokenFile(out, "token.json")
		require.NoError(t, err)
		require.True(t, tf.ExpiresAt.Equal(back.ExpiresAt))
		tf.ExpiresAt, back.ExpiresAt = time.Time{}, time.Time{}
		normalize := func(p **time.Time) {
			if *p != nil {
				u := (*p).UTC()
				*p = &u
			}
		}
		for _, x := range []*TokenFile{tf, back} {
			normalize(&x.RegisteredAt)
			normalize(&x.RenewedAt)
			normalize(&x.RefreshExpiresAt)
		}
		require.Equal(t, tf, back)
	})
}
