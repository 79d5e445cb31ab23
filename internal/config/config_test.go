package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func noEnv(string) string { return "" }

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	c := Defaults()
	require.NoError(t, c.Validate())
	assert.Equal(t, ProviderAuto, c.AI.Provider)
	assert.Equal(t, 8, c.Diagnose.MaxRounds)
	assert.Equal(t, 600, c.Diagnose.MaxWallSec)
	assert.Equal(t, 120, c.Diagnose.RoundBudgetSec)
	assert.Equal(t, 10, c.Diagnose.CommandTimeoutSec)
	assert.Equal(t, "/etc/nannyagent/playbooks.d", c.PlaybookDir)
	assert.Equal(t, "/var/lib/nannyagent/token.json", c.TokenPath)
	assert.Equal(t, 30, c.MetricsInterval)
	assert.Equal(t, 300, c.ProxmoxInterval)
	assert.Equal(t, 10, c.HTTPTransport.MaxIdleConns)
	assert.Equal(t, 1800, c.HTTPTransport.MaxRetryDelaySec)
	assert.Equal(t, 1, c.Daemon.MaxConcurrentInvestigations)
}

func TestDaemonKeyParses(t *testing.T) {
	c, err := Parse([]byte("daemon:\n  max_concurrent_investigations: 3\n"), "t.yaml")
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	assert.Equal(t, 3, c.Daemon.MaxConcurrentInvestigations)
	_, err = Parse([]byte("daemon:\n  max_concurrent: 3\n"), "t.yaml")
	require.ErrorContains(t, err, `unknown key "daemon.max_concurrent"`)
}

func TestParseGood(t *testing.T) {
	cases := []struct {
		name, yaml string
		check      func(t *testing.T, c *Config)
	}{
		{"empty file", "", func(t *testing.T, c *Config) { assert.Equal(t, Defaults(), c) }},
		{"only comments", "# nothing here\n", func(t *testing.T, c *Config) { assert.Equal(t, Defaults(), c) }},
		{"earlier agent's file", `
nannyapi_url: https://api.nannyai.dev
portal_url: https://nannyai.dev
token_path: /var/lib/nannyagent/token.json
metrics_interval: 60
proxmox_interval: 600
debug: true
http_transport:
  max_idle_conns: 20
  max_idle_conns_per_host: 0
  disable_http2: true
`, func(t *testing.T, c *Config) {
			assert.Equal(t, "https://api.nannyai.dev", c.NannyAPIURL)
			assert.Equal(t, 60, c.MetricsInterval)
			assert.Equal(t, 600, c.ProxmoxInterval)
			assert.True(t, c.Debug)
			assert.Equal(t, 20, c.HTTPTransport.MaxIdleConns)
			assert.Equal(t, 5, c.HTTPTransport.MaxIdleConnsPerHost, "0 means the default")
			assert.True(t, c.HTTPTransport.DisableHTTP2)
			assert.Equal(t, 30, c.HTTPTransport.IdleConnTimeoutSec, "unset keys keep their defaults")
		}},
		{"renewal values of zero or less are the defaults", "token_renewal_threshold_days: 0\ntoken_renewal_check_interval_secs: -5\n",
			func(t *testing.T, c *Config) {
				assert.Equal(t, 7, c.TokenRenewalThresholdDays)
				assert.Equal(t, 21600, c.TokenRenewalCheckIntervalSecs)
			}},
		{"ai and diagnose", `
ai:
  provider: openai
  base_url: http://127.0.0.1:11434/v1
  model: llama3.1
  api_key_env: OLLAMA_KEY
  timeout_sec: 30
diagnose:
  max_rounds: 3
  max_wall_sec: 120
  round_budget_sec: 20
  command_timeout_sec: 5
  context_bytes: 8192
playbook_dir: /srv/playbooks
`, func(t *testing.T, c *Config) {
			assert.Equal(t, AI{Provider: "openai", BaseURL: "http://127.0.0.1:11434/v1", Model: "llama3.1", APIKeyEnv: "OLLAMA_KEY", TimeoutSec: 30}, c.AI)
			assert.Equal(t, Diagnose{MaxRounds: 3, MaxWallSec: 120, RoundBudgetSec: 20, CommandTimeoutSec: 5, ContextBytes: 8192}, c.Diagnose)
			assert.Equal(t, "/srv/playbooks", c.PlaybookDir)
		}},
		{"keys given no value keep their defaults", "ai:\ndiagnose:\n  max_rounds:\nplaybook_dir:\n", func(t *testing.T, c *Config) {
			assert.Equal(t, Defaults(), c)
		}},
		{"a section partly given keeps the rest", "diagnose:\n  max_rounds: 2\n", func(t *testing.T, c *Config) {
			assert.Equal(t, 2, c.Diagnose.MaxRounds)
			assert.Equal(t, 600, c.Diagnose.MaxWallSec)
		}},
		{"yes/no booleans", "debug: yes\n", func(t *testing.T, c *Config) { assert.True(t, c.Debug) }},
		{"numbers as text values", "agent_id: 12345\n", func(t *testing.T, c *Config) { assert.Equal(t, "12345", c.AgentID) }},
		{"anchors and aliases", "metrics_interval: &n 45\nproxmox_interval: *n\n", func(t *testing.T, c *Config) {
			assert.Equal(t, 45, c.ProxmoxInterval)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "config.yaml")
			require.NoError(t, err)
			require.NoError(t, c.Validate())
			tc.check(t, c)
		})
	}
}

// Every message is checked whole: these are what an operator reads.
func TestParseBad(t *testing.T) {
	top := "top-level keys: agent_id, ai, daemon, debug, diagnose, http_transport, metrics_interval, nannyapi_url, playbook_dir, portal_url, " +
		"proxmox_interval, static_token, token_path, token_renewal_check_interval_secs, token_renewal_retry_interval_secs, token_renewal_threshold_days"
	cases := []struct{ yaml, want string }{
		{"metric_interval: 5\n", `c.yaml: line 1: unknown key "metric_interval" (did you mean "metrics_interval"?); ` + top},
		{"debug: false\nai:\n  provder: offline\n",
			`c.yaml: line 3: unknown key "ai.provder" (did you mean "ai.provider"?); keys of ai: api_key_env, api_key_file, base_url, model, provider, timeout_sec`},
		{"diagnose:\n  maxRounds: 3\n",
			`c.yaml: line 2: unknown key "diagnose.maxRounds" (did you mean "diagnose.max_rounds"?); keys of diagnose: command_timeout_sec, context_bytes, max_rounds, max_wall_sec, round_budget_sec`},
		{"x: 1\n", `c.yaml: line 1: unknown key "x"; ` + top},
		{"metrics_interval: 1.5\n", `c.yaml: line 1: metrics_interval: "1.5" is not a whole number (seconds, written without a unit)`},
		{"diagnose:\n  max_wall_sec: 10m\n", `c.yaml: line 2: diagnose.max_wall_sec: "10m" is not a whole number (seconds, written without a unit)`},
		{"debug: maybe\n", `c.yaml: line 1: debug: "maybe" is not true or false`},
		{"ai: [1]\n", `c.yaml: line 1: ai is a section of keys (api_key_env, api_key_file, base_url, model, provider, timeout_sec), not a list`},
		{"ai: offline\n", `c.yaml: line 1: ai is a section of keys (api_key_env, api_key_file, base_url, model, provider, timeout_sec), not a single value`},
		{"nannyapi_url: [x]\n", `c.yaml: line 1: nannyapi_url takes a single value, not a list`},
		{"- a\n", `c.yaml: line 1: the config must be a mapping of keys (key: value), not a list`},
		{"metrics_interval: 1\nmetrics_interval: 2\n", `c.yaml: line 2: mapping key "metrics_interval" already defined at line 1`},
		{"debug: true\n---\ndebug: false\n", `c.yaml: line 2: a second YAML document (---); the config is one document`},
		{"? [a]\n: 1\n", `c.yaml: line 1: a key must be a plain name, not a list`},
		{"debug: [\n", `c.yaml: not valid YAML: line 1: did not find expected node content`},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.yaml), "c.yaml")
		require.Error(t, err, tc.yaml)
		assert.Equal(t, tc.want, err.Error(), tc.yaml)
	}
}

func TestValidateBad(t *testing.T) {
	cases := []struct {
		set  func(c *Config)
		want string
	}{
		{func(c *Config) { c.NannyAPIURL = "ftp://x" }, `nannyapi_url "ftp://x": must be an http:// or https:// URL with a host`},
		{func(c *Config) { c.NannyAPIURL = "https://" + strings.Repeat("a", 2045) }, `nannyapi_url "https://` + strings.Repeat("a", 72) + `…": must be at most 2048 characters (it has 2053)`},
		{func(c *Config) { c.PortalURL = "nannyai.dev" }, `portal_url "nannyai.dev": must be an http:// or https:// URL with a host`},
		{func(c *Config) { c.TokenPath = "token.json" }, `token_path "token.json": must be an absolute path`},
		{func(c *Config) { c.MetricsInterval = 4 }, `metrics_interval 4: must be 5 to 604800 seconds`},
		{func(c *Config) { c.ProxmoxInterval = 604801 }, `proxmox_interval 604801: must be 5 to 604800 seconds`},
		{func(c *Config) { c.StaticToken = "abc_secret" }, `static_token (10 characters): must start with nsk_ and be 5 to 512 characters`},
		{func(c *Config) { c.StaticToken = "nsk_" }, `static_token (4 characters): must start with nsk_ and be 5 to 512 characters`},
		{func(c *Config) { c.AgentID = "   " }, `agent_id "   ": must not be blank`},
		{func(c *Config) { c.TokenRenewalThresholdDays = 366 }, `token_renewal_threshold_days 366: must be 1 to 365 days`},
		{func(c *Config) { c.HTTPTransport.MaxIdleConns = 1001 }, `http_transport.max_idle_conns 1001: must be 0 to 1000`},
		{func(c *Config) { c.HTTPTransport.MaxIdleConnsPerHost = 11 }, `http_transport.max_idle_conns_per_host 11: must be 0 to max_idle_conns (10)`},
		{func(c *Config) { c.HTTPTransport.ResponseHeaderTimeoutSec = 301 }, `http_transport.response_header_timeout_sec 301: must be 0 to 300 seconds`},
		{func(c *Config) { c.HTTPTransport.MaxRetryDelaySec = 29 }, `http_transport.max_retry_delay_sec 29: must be initial_retry_delay_sec (30) to 86400 seconds`},
		{func(c *Config) { c.AI.Provider = "gpt" }, `ai.provider "gpt": must be one of auto, offline, openai, nannyapi`},
		{func(c *Config) { c.AI.Provider = "openai" }, `ai.provider "openai": needs ai.base_url (an OpenAI-compatible endpoint such as http://127.0.0.1:11434/v1)`},
		{func(c *Config) { c.AI.BaseURL = "localhost:11434"; c.AI.Model = "m" }, `ai.base_url "localhost:11434": must be an http:// or https:// URL with a host`},
		{func(c *Config) { c.AI.BaseURL = "ftp://u:hunter2@h/v1"; c.AI.Model = "m" }, `ai.base_url "ftp://u:xxxxx@h/v1": must be an http:// or https:// URL with a host`},
		{func(c *Config) { c.AI.BaseURL = "https://u:hunter2@h/v1"; c.AI.Model = "m" },
			`ai.base_url "https://u:xxxxx@h/v1": must not carry credentials: name the key's variable in ai.api_key_env or its file in ai.api_key_file`},
		{func(c *Config) { c.AI.BaseURL = "http://127.0.0.1:11434/v1" },
			`ai.model "": must be set with ai.base_url: the model the endpoint serves (llama3.1:8b for Ollama, gpt-4o-mini for OpenAI)`},
		{func(c *Config) { c.AI.APIKeyEnv = "OPENAI KEY" }, `ai.api_key_env "OPENAI KEY": must be the name of an environment variable (letters, digits, _; not starting with a digit)`},
		{func(c *Config) { c.AI.APIKeyFile = "key.txt" }, `ai.api_key_file "key.txt": must be an absolute path`},
		{func(c *Config) { c.AI.APIKeyFile = "/nonexistent/key" }, `ai.api_key_file "/nonexistent/key": does not exist`},
		{func(c *Config) { c.AI.TimeoutSec = 0 }, `ai.timeout_sec 0: must be 1 to 3600 seconds`},
		{func(c *Config) { c.Diagnose.MaxRounds = 51 }, `diagnose.max_rounds 51: must be 1 to 50`},
		{func(c *Config) { c.Diagnose.MaxRounds = 0 }, `diagnose.max_rounds 0: must be 1 to 50`},
		{func(c *Config) { c.Diagnose.MaxWallSec = 5 }, "invalid configuration:\n" +
			"  diagnose.max_wall_sec 5: must be 10 to 86400 seconds\n" +
			"  diagnose.round_budget_sec 120: must be 5 to 3600 seconds and at most diagnose.max_wall_sec (5)"},
		{func(c *Config) { c.Diagnose.CommandTimeoutSec = 121 }, `diagnose.command_timeout_sec 121: must be 1 to 600 seconds and at most diagnose.round_budget_sec (120)`},
		{func(c *Config) { c.Diagnose.ContextBytes = 100 }, `diagnose.context_bytes 100: must be 4096 to 1048576 bytes`},
		{func(c *Config) { c.PlaybookDir = "playbooks" }, `playbook_dir "playbooks": must be an absolute path`},
		{func(c *Config) { c.Daemon.MaxConcurrentInvestigations = 0 }, `daemon.max_concurrent_investigations 0: must be 1 to 16`},
		{func(c *Config) { c.Daemon.MaxConcurrentInvestigations = 17 }, `daemon.max_concurrent_investigations 17: must be 1 to 16`},
	}
	for _, tc := range cases {
		c := Defaults()
		tc.set(c)
		err := c.Validate()
		require.Error(t, err, tc.want)
		assert.Equal(t, tc.want, err.Error())
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	c, err := load(missing, false, noEnv)
	require.NoError(t, err, "a missing default file is fine")
	assert.Equal(t, Defaults(), c)

	_, err = load(missing, true, noEnv)
	require.EqualError(t, err, "config file "+missing+" does not exist")
}

func TestLoadNamesTheFile(t *testing.T) {
	p := writeFile(t, "diagnose:\n  max_rounds: 99\n")
	_, err := load(p, true, noEnv)
	require.EqualError(t, err, p+": diagnose.max_rounds 99: must be 1 to 50")
}

// Precedence: file < environment (flags are applied by the CLI on top).
func TestEnvOverridesFile(t *testing.T) {
	p := writeFile(t, `
nannyapi_url: https://file.example
portal_url: https://portal.file.example
token_path: /file/token.json
static_token: nsk_fromfile
agent_id: file-agent
debug: false
ai:
  provider: offline
`)
	env := envOf(map[string]string{
		"NANNYAPI_URL":           "https://env.example",
		"NANNYAI_PORTAL_URL":     "https://portal.env.example",
		"TOKEN_PATH":             "/env/token.json",
		"NANNYAI_STATIC_TOKEN":   "nsk_fromenv",
		"NANNYAI_AGENT_ID":       "env-agent",
		"DEBUG":                  "1",
		"NANNYAGENT_AI_PROVIDER": "auto",
	})
	c, err := load(p, true, env)
	require.NoError(t, err)
	assert.Equal(t, "https://env.example", c.NannyAPIURL)
	assert.Equal(t, "https://portal.env.example", c.PortalURL)
	assert.Equal(t, "/env/token.json", c.TokenPath)
	assert.Equal(t, "nsk_fromenv", c.StaticToken)
	assert.Equal(t, "env-agent", c.AgentID)
	assert.True(t, c.Debug)
	assert.Equal(t, "auto", c.AI.Provider)
	assert.Equal(t, "NANNYAGENT_AI_PROVIDER", c.Source("ai.provider"))
	assert.Equal(t, "", c.Source("metrics_interval"))

	// Unset or empty variables leave the file's values.
	c, err = load(p, true, noEnv)
	require.NoError(t, err)
	assert.Equal(t, "https://file.example", c.NannyAPIURL)
	assert.Equal(t, "offline", c.AI.Provider)
}

func TestEnvDebugValues(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "TRUE": true, "false": false, "0": false, "express:*": true} {
		c := Defaults()
		c.Debug = true
		require.NoError(t, c.ApplyEnv(envOf(map[string]string{"DEBUG": v})))
		assert.Equal(t, want, c.Debug, "DEBUG=%s over debug: true", v)
	}
	c := Defaults()
	require.NoError(t, c.ApplyEnv(envOf(map[string]string{"DEBUG": "yes please"})))
	assert.False(t, c.Debug, "other values are another tool's")
}

func TestEnvErrorNamesTheVariable(t *testing.T) {
	_, err := load(filepath.Join(t.TempDir(), "none"), false, envOf(map[string]string{"NANNYAGENT_AI_PROVIDER": "skynet"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `ai.provider "skynet" (from NANNYAGENT_AI_PROVIDER): must be one of auto, offline, openai, nannyapi`)
}

func TestAPIKeyFilePermissions(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	require.NoError(t, os.WriteFile(key, []byte("sk-test-123\n"), 0o600))
	for _, mode := range []os.FileMode{0o600, 0o400} {
		require.NoError(t, os.Chmod(key, mode))
		c := Defaults()
		c.AI.APIKeyFile = key
		require.NoError(t, c.Validate(), "mode %o", mode)
	}
	for mode, octal := range map[os.FileMode]string{0o640: "0640", 0o604: "0604", 0o644: "0644", 0o660: "0660", 0o602: "0602"} {
		require.NoError(t, os.Chmod(key, mode))
		c := Defaults()
		c.AI.APIKeyFile = key
		assert.EqualError(t, c.Validate(), `ai.api_key_file "`+key+`": has mode `+octal+
			`, which lets other users read or write it; it must be 0600 or 0400 (chmod 600 `+key+`)`)
	}
	require.NoError(t, os.Chmod(key, 0o600))
	c := Defaults()
	c.AI.APIKeyFile = dir
	assert.EqualError(t, c.Validate(), `ai.api_key_file "`+dir+`": is not a regular file`)

	c.AI.APIKeyFile = key
	c.AI.APIKeyEnv = "KEY"
	assert.EqualError(t, c.Validate(), `ai.api_key_file "`+key+`": set either ai.api_key_env or ai.api_key_file, not both`)
}

func TestRequireBackend(t *testing.T) {
	c := Defaults()
	assert.EqualError(t, c.RequireBackend(), "nannyapi_url is not set: set it in the config file, with NANNYAPI_URL or with --api-url")
	c.NannyAPIURL = "http://127.0.0.1:8090"
	assert.NoError(t, c.RequireBackend())
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("nannyapi_url: https://x\nai:\n  provider: openai\n  base_url: http://h/v1\n"))
	f.Add([]byte("diagnose:\n  max_rounds: 3\n  maxRounds: 2\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("ai: &x\n  model: m\ndiagnose: *x\n"))
	f.Add([]byte("? [a]\n: 1\n"))
	f.Add([]byte("metrics_interval: 0x10\nhttp_transport: {max_idle_conns: -1}\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err != nil {
			require.Nil(t, c)
			require.NotEmpty(t, err.Error())
			return
		}
		_ = c.Validate()
	})
}

func TestRebootCommandValidation(t *testing.T) {
	c, err := Parse([]byte("daemon:\n  reboot_command: [/usr/bin/systemctl, reboot]\n  patch_timeout_sec: 600\n"), "t.yaml")
	require.NoError(t, err)
	require.NoError(t, c.Validate())
	assert.Equal(t, []string{"/usr/bin/systemctl", "reboot"}, c.Daemon.RebootCommand)
	assert.Equal(t, 600, c.Daemon.PatchTimeoutSec)

	for in, want := range map[string]string{
		"daemon:\n  reboot_command: [systemctl, reboot]\n": "must be an absolute path",
		"daemon:\n  reboot_command: [/sbin/reboot, '']\n":  "must be non-empty",
		"daemon:\n  patch_timeout_sec: 5\n":                "daemon.patch_timeout_sec 5: must be 60 to 86400 seconds",
	} {
		c, err := Parse([]byte(in), "t.yaml")
		require.NoError(t, err, in)
		err = c.Validate()
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
	}
}

func TestRebootCommandMustBeAList(t *testing.T) {
	_, err := Parse([]byte("daemon:\n  reboot_command: /sbin/reboot\n"), "t.yaml")
	require.EqualError(t, err, "t.yaml: line 2: daemon.reboot_command takes a list ([program, arg, ...]), not a single value")
	_, err = Parse([]byte("daemon:\n  reboot_command: [[a]]\n"), "t.yaml")
	require.ErrorContains(t, err, "each item must be a single value")
}
