package config

import (
	"fmt"
	"strings"
)

// Limits Validate enforces on text values; the reference quotes the same
// constants.
const (
	maxURLLen         = 2048
	maxPathLen        = 4096
	maxNameLen        = 256 // ai.model, agent_id
	staticTokenPrefix = "nsk_"
	maxStaticTokenLen = 512
	maxRebootArgs     = 32
	maxRebootArgLen   = 4096
)

// unsetRule says which values of an integer key, written in the file,
// mean "the default" (the earlier agent's rule, kept so its files read
// the same).
type unsetRule int

const (
	noUnset            unsetRule = iota
	zeroIsUnset                  // http_transport: 0 means the default
	nonPositiveIsUnset           // token renewal: 0 or less means the default
)

// keyInfo is what the reference says of one key beyond what the struct
// (name, type), Defaults, EnvVars and Flags already say. Validate takes
// the integer bounds from here and Parse the unset rule, so the
// reference states the ranges and rules that are enforced.
type keyInfo struct {
	desc string // what the key does, in a sentence or two
	rule string // what Validate accepts, for keys that are not integers

	// Integers: min to max (unit), and not above atMost's value or below
	// atLeast's.
	min, max        int
	unit            string
	atMost, atLeast string
	unset           unsetRule
}

var urlRule = fmt.Sprintf("empty, or an http:// or https:// URL with a host, at most %d characters", maxURLLen)

var pathRule = fmt.Sprintf("an absolute path, at most %d characters", maxPathLen)

// keyInfos has one entry for every key of Config; a test checks that.
var keyInfos = map[string]keyInfo{
	"nannyapi_url": {desc: "The NannyAPI backend. Required by the backend commands (register, status, the daemon); " +
		"local investigations do not use it.", rule: urlRule},
	"portal_url": {desc: "The portal, shown to the user while registering.", rule: urlRule},
	"token_path": {desc: "The registration's token file; `.refresh_token` and `state.json` live beside it " +
		"(see [Token files](#token-files)).", rule: pathRule},
	"metrics_interval": {desc: "Seconds between the daemon's metrics reports.", min: 5, max: 604800, unit: "seconds"},
	"proxmox_interval": {desc: "Seconds between the daemon's Proxmox reports.", min: 5, max: 604800, unit: "seconds"},
	"static_token": {desc: "A static token from the portal: `--register` uses it instead of the device flow. " +
		"It has no flag on purpose: a command line is visible to every user of the host.",
		rule: fmt.Sprintf("empty, or starting with `%s` and %d to %d characters; never echoed in errors",
			staticTokenPrefix, len(staticTokenPrefix)+1, maxStaticTokenLen)},
	"agent_id": {desc: "The agent ID sent as X-Agent-ID with a static token.",
		rule: fmt.Sprintf("empty, or not blank and at most %d characters", maxNameLen)},
	"token_renewal_threshold_days": {desc: "Renew the refresh token when it expires within this many days.",
		min: 1, max: 365, unit: "days", unset: nonPositiveIsUnset},
	"token_renewal_check_interval_secs": {desc: "Seconds between the daemon's checks of its token, " +
		"which refresh it when it is about to expire.", min: 1, max: 2592000, unit: "seconds", unset: nonPositiveIsUnset},
	"token_renewal_retry_interval_secs": {desc: "Seconds before a failed token refresh or renewal is tried again.",
		min: 1, max: 2592000, unit: "seconds", unset: nonPositiveIsUnset},
	"debug": {desc: "Debug logging on stderr, as `--verbose`. `DEBUG` turns it on with `true` or `1` and off with " +
		"`false` or `0`; other values are ignored, since other tools use that name."},

	"http_transport.max_idle_conns": {desc: "Idle connections to the backend kept open, in all.",
		min: 0, max: 1000, unset: zeroIsUnset},
	"http_transport.max_idle_conns_per_host": {desc: "Idle connections kept open per backend host.",
		min: 0, max: 1000, atMost: "http_transport.max_idle_conns", unset: zeroIsUnset},
	"http_transport.idle_conn_timeout_sec": {desc: "Seconds an idle connection is kept open.",
		min: 0, max: 3600, unit: "seconds", unset: zeroIsUnset},
	"http_transport.response_header_timeout_sec": {desc: "Seconds one backend request may take " +
		"(a chat turn proxied by the backend has its own, longer bound).",
		min: 0, max: 300, unit: "seconds", unset: zeroIsUnset},
	"http_transport.disable_http2": {desc: "Speak HTTP/1.1 to the backend."},
	"http_transport.transport_reset_threshold": {desc: "Transport errors in a row after which the idle connections " +
		"are closed, so that a dead kept-alive connection is not used again.",
		min: 1, max: 100, unset: zeroIsUnset},
	"http_transport.initial_retry_delay_sec": {desc: "The first wait before a failed backend call is tried again; " +
		"it doubles on each failure, each wait being between half and all of its delay.",
		min: 1, max: 86400, unit: "seconds", unset: zeroIsUnset},
	"http_transport.max_retry_delay_sec": {desc: "The longest wait between retries.",
		min: 1, max: 86400, unit: "seconds", atLeast: "http_transport.initial_retry_delay_sec", unset: zeroIsUnset},

	"ai.provider": {desc: "The reasoning engine. `auto` is `nannyapi` when this host is registered " +
		"(`nannyagent --register`; its tokens readable, so as root), else `openai` when `ai.base_url` is set, " +
		"else `offline`. `nannyapi` needs a registration: each investigation is created on the backend, " +
		"converses through its proxy, and is recorded completed or failed at the end; NannyAPI wants an issue " +
		"of at least 10 characters and 3 words.",
		rule: "one of " + strings.Join(Providers, ", ") + "; `openai` needs `ai.base_url`"},
	"ai.base_url": {desc: "An OpenAI-compatible endpoint (`http://127.0.0.1:11434/v1` for Ollama); " +
		"requests go to `{base_url}/chat/completions`.", rule: urlRule + ", without credentials in it"},
	"ai.model": {desc: "The model the endpoint serves (`llama3.1:8b` for Ollama, `gpt-4o-mini` for OpenAI).",
		rule: fmt.Sprintf("required when `ai.base_url` is set; at most %d characters", maxNameLen)},
	"ai.api_key_env": {desc: "The *name* of the environment variable holding the endpoint's key.",
		rule: "empty, or a variable name: letters, digits and `_`, not starting with a digit"},
	"ai.api_key_file": {desc: "A file holding the endpoint's key (its first non-blank line).",
		rule: "empty, or the absolute path of a regular file with mode 0600 or 0400 (a file that group or " +
			"others can read or write is refused); not together with `ai.api_key_env`"},
	"ai.timeout_sec": {desc: "Seconds one request to the endpoint may take.", min: 1, max: 3600, unit: "seconds"},

	"diagnose.max_rounds":   {desc: "Diagnostic rounds before the engine must answer.", min: 1, max: 50},
	"diagnose.max_wall_sec": {desc: "Seconds the whole investigation may take.", min: 10, max: 86400, unit: "seconds"},
	"diagnose.round_budget_sec": {desc: "Seconds one round's commands and traces may take together.",
		min: 5, max: 3600, unit: "seconds", atMost: "diagnose.max_wall_sec"},
	"diagnose.command_timeout_sec": {desc: "Seconds one command may take.",
		min: 1, max: 600, unit: "seconds", atMost: "diagnose.round_budget_sec"},
	"diagnose.context_bytes": {desc: "One round's results as sent to a chat engine; outputs are cut to fit, " +
		"keeping head and tail.", min: 4096, max: 1 << 20, unit: "bytes"},

	"daemon.max_concurrent_investigations": {desc: "Portal investigations the daemon runs at once; the others wait " +
		"in arrival order. More than one lets investigations disturb each other's measurements of the host.",
		min: 1, max: 16},
	"daemon.patch_timeout_sec": {desc: "Seconds a patch script may run; then it is killed with its whole process " +
		"group and reported failed.", min: 60, max: 86400, unit: "seconds"},
	"daemon.reboot_command": {desc: "The host reboot command and its arguments; empty means `systemctl reboot`, " +
		"falling back to `shutdown -r now`. Container reboots always use `pct reboot <vmid>`.",
		rule: fmt.Sprintf("empty, or an absolute program path and its arguments: at most %d items, each non-empty, "+
			"at most %d bytes and without NUL", maxRebootArgs, maxRebootArgLen)},
	"daemon.reboot_dry_run": {desc: "Acknowledge reboot operations and log the command instead of running it."},

	"playbook_dir": {desc: "The offline engine's extra playbooks; a missing directory means none.", rule: pathRule},
}

// sections describes each block of keys, for the reference.
var sections = map[string]string{
	"http_transport": "The backend client: its connection pool and its retries.",
	"ai":             "The reasoning engine of investigations.",
	"diagnose":       "The bounds of one investigation.",
	"daemon":         "`nannyagent --daemon`, the service that takes its work from the portal.",
}

// Flag is a command-line flag that overrides a key. The CLI names its
// flags from this table, so the reference and the CLI agree.
type Flag struct {
	Name string // without the leading dashes
	Key  string
}

// Flags lists the flags that override keys.
var Flags = []Flag{
	{"api-url", "nannyapi_url"},
	{"portal-url", "portal_url"},
	{"token-path", "token_path"},
	{"agent-id", "agent_id"},
	{"metrics-interval", "metrics_interval"},
	{"proxmox-interval", "proxmox_interval"},
	{"debug", "debug"},
	{"engine", "ai.provider"},
}

// FlagFor names the flag that overrides key, without the dashes; "" when
// none does.
func FlagFor(key string) string {
	for _, f := range Flags {
		if f.Key == key {
			return f.Name
		}
	}
	return ""
}

// envFor names the environment variable that overrides key; "" when none
// does.
func envFor(key string) string {
	for _, e := range EnvVars {
		if e.Key == key {
			return e.Name
		}
	}
	return ""
}
