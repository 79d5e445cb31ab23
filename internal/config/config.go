// Package config is the agent's configuration: one typed struct read from
// /etc/nannyagent/config.yaml, then overridden by environment variables,
// then by command-line flags (the CLI applies those), then validated.
//
// The keys, environment variables and defaults of the backend side are
// the ones the earlier agent used, so its config files keep working.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"unicode/utf8"
)

// DefaultPath is the only file read unless --config names another.
const DefaultPath = "/etc/nannyagent/config.yaml"

// Engine providers (ai.provider).
const (
	ProviderAuto     = "auto"
	ProviderOffline  = "offline"
	ProviderOpenAI   = "openai"
	ProviderNannyAPI = "nannyapi"
)

// Providers lists the valid values of ai.provider.
var Providers = []string{ProviderAuto, ProviderOffline, ProviderOpenAI, ProviderNannyAPI}

// Config is the whole configuration. Durations are whole seconds, as in
// the earlier agent's files.
type Config struct {
	// NannyAPIURL is the backend; required by the backend commands
	// (register, status, daemon), unused by local investigations.
	NannyAPIURL string `yaml:"nannyapi_url"`
	PortalURL   string `yaml:"portal_url"`
	TokenPath   string `yaml:"token_path"`
	// MetricsInterval and ProxmoxInterval are in seconds.
	MetricsInterval int    `yaml:"metrics_interval"`
	ProxmoxInterval int    `yaml:"proxmox_interval"`
	StaticToken     string `yaml:"static_token"`
	AgentID         string `yaml:"agent_id"`

	TokenRenewalThresholdDays     int `yaml:"token_renewal_threshold_days"`
	TokenRenewalCheckIntervalSecs int `yaml:"token_renewal_check_interval_secs"`
	TokenRenewalRetryIntervalSecs int `yaml:"token_renewal_retry_interval_secs"`

	Debug         bool          `yaml:"debug"`
	HTTPTransport HTTPTransport `yaml:"http_transport"`

	AI       AI       `yaml:"ai"`
	Diagnose Diagnose `yaml:"diagnose"`
	Daemon   Daemon   `yaml:"daemon"`
	// PlaybookDir holds the offline engine's extra playbooks; a missing
	// directory means none.
	PlaybookDir string `yaml:"playbook_dir"`

	// sources says where values that did not come from the file came
	// from ("NANNYAGENT_AI_PROVIDER", "--engine"), so that errors name
	// what the user has to change.
	sources map[string]string
}

// HTTPTransport tunes the backend client. A 0 in the file means the
// default.
type HTTPTransport struct {
	MaxIdleConns             int  `yaml:"max_idle_conns"`
	MaxIdleConnsPerHost      int  `yaml:"max_idle_conns_per_host"`
	IdleConnTimeoutSec       int  `yaml:"idle_conn_timeout_sec"`
	ResponseHeaderTimeoutSec int  `yaml:"response_header_timeout_sec"`
	DisableHTTP2             bool `yaml:"disable_http2"`
	TransportResetThreshold  int  `yaml:"transport_reset_threshold"`
	InitialRetryDelaySec     int  `yaml:"initial_retry_delay_sec"`
	MaxRetryDelaySec         int  `yaml:"max_retry_delay_sec"`
}

// AI chooses and configures the reasoning engine.
type AI struct {
	// Provider is auto, offline, openai or nannyapi; auto picks openai
	// when BaseURL is set, else offline.
	Provider string `yaml:"provider"`
	// BaseURL is an OpenAI-compatible endpoint ("http://127.0.0.1:11434/v1").
	BaseURL string `yaml:"base_url"`
	Model   string `yaml:"model"`
	// APIKeyEnv names the environment variable holding the key; APIKeyFile
	// is a file holding it (mode 0600 or 0400). Keys never come from argv
	// or from the config file itself.
	APIKeyEnv  string `yaml:"api_key_env"`
	APIKeyFile string `yaml:"api_key_file"`
	TimeoutSec int    `yaml:"timeout_sec"`
}

// Diagnose bounds an investigation.
type Diagnose struct {
	MaxRounds         int `yaml:"max_rounds"`
	MaxWallSec        int `yaml:"max_wall_sec"`
	RoundBudgetSec    int `yaml:"round_budget_sec"`
	CommandTimeoutSec int `yaml:"command_timeout_sec"`
	// ContextBytes is the budget of one round's results sent to a chat
	// engine.
	ContextBytes int `yaml:"context_bytes"`
}

// Daemon tunes `nannyagent --daemon`.
type Daemon struct {
	// MaxConcurrentInvestigations is how many portal investigations run
	// at once; more wait in order. One by default: investigations share
	// the host they measure, and two at once disturb each other's
	// figures.
	MaxConcurrentInvestigations int `yaml:"max_concurrent_investigations"`
	// PatchTimeoutSec bounds one patch script run; when it passes, the
	// script's whole process group is killed and the run reported failed.
	PatchTimeoutSec int `yaml:"patch_timeout_sec"`
	// RebootCommand is the host reboot command as an argument list;
	// empty means systemctl reboot, falling back to shutdown -r now.
	RebootCommand []string `yaml:"reboot_command"`
	// RebootDryRun acknowledges reboot operations and logs the command
	// instead of running it.
	RebootDryRun bool `yaml:"reboot_dry_run"`
}

// Defaults returns the configuration used when nothing is set.
func Defaults() *Config {
	return &Config{
		PortalURL:                     "https://nannyai.dev",
		TokenPath:                     "/var/lib/nannyagent/token.json",
		MetricsInterval:               30,
		ProxmoxInterval:               300,
		TokenRenewalThresholdDays:     7,
		TokenRenewalCheckIntervalSecs: 21600,
		TokenRenewalRetryIntervalSecs: 3600,
		HTTPTransport:                 defaultHTTPTransport(),
		AI:                            defaultAI(),
		Diagnose:                      defaultDiagnose(),
		Daemon:                        Daemon{MaxConcurrentInvestigations: 1, PatchTimeoutSec: 1800},
		PlaybookDir:                   "/etc/nannyagent/playbooks.d",
	}
}

func defaultHTTPTransport() HTTPTransport {
	return HTTPTransport{
		MaxIdleConns: 10, MaxIdleConnsPerHost: 5, IdleConnTimeoutSec: 30, ResponseHeaderTimeoutSec: 30,
		TransportResetThreshold: 3, InitialRetryDelaySec: 30, MaxRetryDelaySec: 1800,
	}
}

func defaultAI() AI { return AI{Provider: ProviderAuto, TimeoutSec: 120} }

func defaultDiagnose() Diagnose {
	return Diagnose{MaxRounds: 8, MaxWallSec: 600, RoundBudgetSec: 120, CommandTimeoutSec: 10, ContextBytes: 32 << 10}
}

// fillZeroDefaults applies the rule of the earlier agent: a 0 in the
// http_transport block, or a renewal value of 0 or less, means the
// default (keyInfos says which keys).
func (c *Config) fillZeroDefaults() {
	cv := reflect.ValueOf(c).Elem()
	def := reflect.ValueOf(Defaults()).Elem()
	for key, k := range keyInfos {
		f := fieldByKey(cv, key)
		if k.unset == zeroIsUnset && f.Int() == 0 || k.unset == nonPositiveIsUnset && f.Int() <= 0 {
			f.Set(fieldByKey(def, key))
		}
	}
}

// SetFrom records that key's value came from source (an environment
// variable or a flag), for error messages.
func (c *Config) SetFrom(key, source string) {
	if c.sources == nil {
		c.sources = map[string]string{}
	}
	c.sources[key] = source
}

// Source says where key's value came from: a flag, an environment
// variable, or "" for the file or the default.
func (c *Config) Source(key string) string { return c.sources[key] }

// EnvVar is one environment override.
type EnvVar struct {
	Name string
	Key  string
	set  func(c *Config, v string) error
}

// EnvVars are the environment variables read after the file, in the
// order they are applied.
var EnvVars = []EnvVar{
	{"NANNYAPI_URL", "nannyapi_url", func(c *Config, v string) error { c.NannyAPIURL = v; return nil }},
	{"NANNYAI_PORTAL_URL", "portal_url", func(c *Config, v string) error { c.PortalURL = v; return nil }},
	{"TOKEN_PATH", "token_path", func(c *Config, v string) error { c.TokenPath = v; return nil }},
	{"NANNYAI_STATIC_TOKEN", "static_token", func(c *Config, v string) error { c.StaticToken = v; return nil }},
	{"NANNYAI_AGENT_ID", "agent_id", func(c *Config, v string) error { c.AgentID = v; return nil }},
	{"DEBUG", "debug", func(c *Config, v string) error {
		// DEBUG is a common name other tools set to their own values
		// ("express:*"); only the earlier agent's true/1 (and their
		// opposites) mean something here.
		switch strings.ToLower(v) {
		case "true", "1":
			c.Debug = true
		case "false", "0":
			c.Debug = false
		}
		return nil
	}},
	{"NANNYAGENT_AI_PROVIDER", "ai.provider", func(c *Config, v string) error { c.AI.Provider = v; return nil }},
}

// ApplyEnv overrides the configuration with the environment variables
// that are set and not empty; getenv is os.Getenv outside tests.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	for _, e := range EnvVars {
		v := getenv(e.Name)
		if v == "" {
			continue
		}
		if err := e.set(c, v); err != nil {
			return fmt.Errorf("%s=%q: %w", e.Name, v, err)
		}
		c.SetFrom(e.Key, e.Name)
	}
	return nil
}

// Load reads path (strictly: an unknown key is an error), applies the
// environment, and validates. A missing file is an error only when
// explicit (the user named it); the default file may be absent.
func Load(path string, explicit bool) (*Config, error) {
	return load(path, explicit, os.Getenv)
}

func load(path string, explicit bool, getenv func(string) string) (*Config, error) {
	c := Defaults()
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if c, err = Parse(data, path); err != nil {
			return nil, err
		}
	case errors.Is(err, os.ErrNotExist) && !explicit:
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("config file %s does not exist", path)
	default:
		return nil, fmt.Errorf("config file: %w", err)
	}
	if err := c.ApplyEnv(getenv); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ValidationError lists every problem found, one per line.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	return "invalid configuration:\n  " + strings.Join(e.Problems, "\n  ")
}

type validator struct {
	c        *Config
	problems []string
}

// bad records a problem with key: its value, where it came from when not
// the file, and what is allowed.
func (v *validator) bad(key string, value any, want string) {
	src := ""
	if s := v.c.Source(key); s != "" {
		src = " (from " + s + ")"
	}
	if s, ok := value.(string); ok {
		value = fmt.Sprintf("%q", truncate(s, 80))
	}
	v.problems = append(v.problems, fmt.Sprintf("%s %v%s: %s", key, value, src, want))
}

// intRange checks n against key's bounds in keyInfos, which the
// reference quotes.
func (v *validator) intRange(key string, n int) {
	if k := keyInfos[key]; n < k.min || n > k.max {
		v.bad(key, n, fmt.Sprintf("must be %d to %d%s", k.min, k.max, unitSuffix(k.unit)))
	}
}

func unitSuffix(unit string) string {
	if unit == "" {
		return ""
	}
	return " " + unit
}

// intAtMost checks n against key's bounds and against limit, the value
// of the key keyInfos names in atMost.
func (v *validator) intAtMost(key string, n, limit int) {
	if k := keyInfos[key]; n < k.min || n > k.max || n > limit {
		v.bad(key, n, fmt.Sprintf("must be %d to %d%s and at most %s (%d)", k.min, k.max, unitSuffix(k.unit), k.atMost, limit))
	}
}

// Validate checks every value; the error names each bad key, its value
// and what is allowed.
func (c *Config) Validate() error {
	v := &validator{c: c}
	if c.NannyAPIURL != "" {
		v.httpURL("nannyapi_url", c.NannyAPIURL)
	}
	if c.PortalURL != "" {
		v.httpURL("portal_url", c.PortalURL)
	}
	v.absPath("token_path", c.TokenPath)
	v.intRange("metrics_interval", c.MetricsInterval)
	v.intRange("proxmox_interval", c.ProxmoxInterval)
	if c.StaticToken != "" && (!strings.HasPrefix(c.StaticToken, staticTokenPrefix) ||
		len(c.StaticToken) <= len(staticTokenPrefix) || len(c.StaticToken) > maxStaticTokenLen) {
		// Never echo a token, even a malformed one.
		v.problems = append(v.problems, fmt.Sprintf("static_token (%d characters%s): must start with %s and be %d to %d characters",
			len(c.StaticToken), v.from("static_token"), staticTokenPrefix, len(staticTokenPrefix)+1, maxStaticTokenLen))
	}
	if c.AgentID != "" {
		if strings.TrimSpace(c.AgentID) == "" {
			v.bad("agent_id", c.AgentID, "must not be blank")
		} else if len(c.AgentID) > maxNameLen {
			v.bad("agent_id", c.AgentID, fmt.Sprintf("must be at most %d characters (it has %d)", maxNameLen, len(c.AgentID)))
		}
	}
	v.intRange("token_renewal_threshold_days", c.TokenRenewalThresholdDays)
	v.intRange("token_renewal_check_interval_secs", c.TokenRenewalCheckIntervalSecs)
	v.intRange("token_renewal_retry_interval_secs", c.TokenRenewalRetryIntervalSecs)

	h := c.HTTPTransport
	v.intRange("http_transport.max_idle_conns", h.MaxIdleConns)
	if k := keyInfos["http_transport.max_idle_conns_per_host"]; h.MaxIdleConnsPerHost < k.min ||
		h.MaxIdleConnsPerHost > k.max || h.MaxIdleConnsPerHost > h.MaxIdleConns {
		v.bad("http_transport.max_idle_conns_per_host", h.MaxIdleConnsPerHost,
			fmt.Sprintf("must be %d to max_idle_conns (%d)", k.min, h.MaxIdleConns))
	}
	v.intRange("http_transport.idle_conn_timeout_sec", h.IdleConnTimeoutSec)
	v.intRange("http_transport.response_header_timeout_sec", h.ResponseHeaderTimeoutSec)
	v.intRange("http_transport.transport_reset_threshold", h.TransportResetThreshold)
	v.intRange("http_transport.initial_retry_delay_sec", h.InitialRetryDelaySec)
	if k := keyInfos["http_transport.max_retry_delay_sec"]; h.MaxRetryDelaySec < k.min ||
		h.MaxRetryDelaySec < h.InitialRetryDelaySec || h.MaxRetryDelaySec > k.max {
		v.bad("http_transport.max_retry_delay_sec", h.MaxRetryDelaySec,
			fmt.Sprintf("must be initial_retry_delay_sec (%d) to %d seconds", h.InitialRetryDelaySec, k.max))
	}

	c.validateAI(v)

	d := c.Diagnose
	v.intRange("diagnose.max_rounds", d.MaxRounds)
	v.intRange("diagnose.max_wall_sec", d.MaxWallSec)
	v.intAtMost("diagnose.round_budget_sec", d.RoundBudgetSec, d.MaxWallSec)
	v.intAtMost("diagnose.command_timeout_sec", d.CommandTimeoutSec, d.RoundBudgetSec)
	v.intRange("diagnose.context_bytes", d.ContextBytes)
	v.absPath("playbook_dir", c.PlaybookDir)
	v.intRange("daemon.max_concurrent_investigations", c.Daemon.MaxConcurrentInvestigations)
	v.intRange("daemon.patch_timeout_sec", c.Daemon.PatchTimeoutSec)
	v.rebootCommand(c.Daemon.RebootCommand)

	if len(v.problems) > 0 {
		return &ValidationError{Problems: v.problems}
	}
	return nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (c *Config) validateAI(v *validator) {
	a := c.AI
	valid := false
	for _, p := range Providers {
		valid = valid || a.Provider == p
	}
	if !valid {
		v.bad("ai.provider", a.Provider, "must be one of "+strings.Join(Providers, ", "))
	}
	if a.BaseURL != "" {
		if v.httpURL("ai.base_url", a.BaseURL) && hasUser(a.BaseURL) {
			u, _ := url.Parse(a.BaseURL)
			v.bad("ai.base_url", u.Redacted(), "must not carry credentials: name the key's variable in ai.api_key_env or its file in ai.api_key_file")
		}
		if strings.TrimSpace(a.Model) == "" {
			v.bad("ai.model", a.Model, "must be set with ai.base_url: the model the endpoint serves (llama3.1:8b for Ollama, gpt-4o-mini for OpenAI)")
		}
	} else if a.Provider == ProviderOpenAI {
		v.bad("ai.provider", a.Provider, "needs ai.base_url (an OpenAI-compatible endpoint such as http://127.0.0.1:11434/v1)")
	}
	if len(a.Model) > maxNameLen {
		v.bad("ai.model", a.Model, fmt.Sprintf("must be at most %d characters", maxNameLen))
	}
	if a.APIKeyEnv != "" && !envName.MatchString(a.APIKeyEnv) {
		v.bad("ai.api_key_env", a.APIKeyEnv, "must be the name of an environment variable (letters, digits, _; not starting with a digit)")
	}
	if a.APIKeyEnv != "" && a.APIKeyFile != "" {
		v.bad("ai.api_key_file", a.APIKeyFile, "set either ai.api_key_env or ai.api_key_file, not both")
	}
	if a.APIKeyFile != "" {
		if !filepath.IsAbs(a.APIKeyFile) {
			v.bad("ai.api_key_file", a.APIKeyFile, "must be an absolute path")
		} else if err := checkKeyFile(a.APIKeyFile); err != nil {
			v.bad("ai.api_key_file", a.APIKeyFile, err.Error())
		}
	}
	v.intRange("ai.timeout_sec", a.TimeoutSec)
}

// checkKeyFile refuses a key file others can read or write: a key another
// user can read has leaked, and one they can write lets them redirect the
// agent's traffic to an account of theirs.
func checkKeyFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("does not exist")
		}
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("is not a regular file")
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("has mode %04o, which lets other users read or write it; it must be 0600 or 0400 (chmod 600 %s)", perm, path)
	}
	return nil
}

func (v *validator) from(key string) string {
	if s := v.c.Source(key); s != "" {
		return ", from " + s
	}
	return ""
}

func hasUser(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.User != nil
}

// httpURL reports whether s is a usable http(s) URL, recording why not.
func (v *validator) httpURL(key, s string) bool {
	if len(s) > maxURLLen {
		v.bad(key, s, fmt.Sprintf("must be at most %d characters (it has %d)", maxURLLen, len(s)))
		return false
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		if err == nil {
			s = u.Redacted() // never echo a password
		}
		v.bad(key, s, "must be an http:// or https:// URL with a host")
		return false
	}
	return true
}

func (v *validator) absPath(key, p string) {
	switch {
	case p == "" || !filepath.IsAbs(p):
		v.bad(key, p, "must be an absolute path")
	case len(p) > maxPathLen:
		v.bad(key, p, fmt.Sprintf("must be at most %d characters (it has %d)", maxPathLen, len(p)))
	}
}

// RequireBackend reports whether the backend commands can run: they need
// nannyapi_url.
func (c *Config) RequireBackend() error {
	if c.NannyAPIURL == "" {
		return errors.New("nannyapi_url is not set: set it in the config file, with NANNYAPI_URL or with --api-url")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a character boundary.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// rebootCommand checks daemon.reboot_command: an absolute program path
// (the daemon's PATH is not the operator's shell's) and no empty or
// over-long arguments.
func (v *validator) rebootCommand(argv []string) {
	if len(argv) == 0 {
		return
	}
	const key = "daemon.reboot_command"
	switch {
	case len(argv) > maxRebootArgs:
		v.bad(key, len(argv), fmt.Sprintf("must have at most %d arguments", maxRebootArgs))
	case !filepath.IsAbs(argv[0]):
		v.bad(key, argv[0], "the program must be an absolute path (e.g. [/usr/bin/systemctl, reboot])")
	}
	for _, a := range argv {
		if a == "" || len(a) > maxRebootArgLen || strings.ContainsRune(a, 0) {
			v.bad(key, a, fmt.Sprintf("arguments must be non-empty, at most %d bytes and without NUL", maxRebootArgLen))
			return
		}
	}
}
