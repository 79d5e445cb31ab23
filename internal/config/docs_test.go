package config

import (
	"errors"
	"flag"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/nannyagent/nannyagent/internal/docgen"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the generated part of docs/CONFIGURATION.md")

const docsPath = "../../docs/CONFIGURATION.md"

// The key reference in the docs is generated from the struct and the
// tables beside it; this fails when one of them changed and `make docs`
// was not run.
func TestConfigDocsUpToDate(t *testing.T) {
	docgen.Check(t, docsPath, DocsBegin, DocsEnd, Reference(), *updateDocs)
}

// The reference has one row per key, and names every environment
// variable and flag in the row of its key.
func TestReferenceRows(t *testing.T) {
	ref := Reference()
	rows := 0
	for _, line := range strings.Split(ref, "\n") {
		if strings.HasPrefix(line, "| `") {
			rows++
		}
	}
	require.Equal(t, len(Keys()), rows)
	rowOf := func(key string) string {
		i := strings.Index(ref, "| `"+key+"` |")
		require.GreaterOrEqual(t, i, 0, "no row for %s", key)
		require.Equal(t, 1, strings.Count(ref, "| `"+key+"` |"), "%s has more than one row", key)
		return ref[i : i+strings.Index(ref[i:], "\n")]
	}
	for _, k := range Keys() {
		rowOf(k)
	}
	for _, e := range EnvVars {
		assert.Contains(t, rowOf(e.Key), "| `"+e.Name+"` |")
	}
	for _, f := range Flags {
		assert.Contains(t, rowOf(f.Key), "| `--"+f.Name+"` |")
	}
	assert.Equal(t, "| `diagnose.round_budget_sec` | int | `120` | — | — | 5 to 3600 seconds, and at most `diagnose.max_wall_sec` | "+
		"Seconds one round's commands and traces may take together. |", rowOf("diagnose.round_budget_sec"))
	assert.Equal(t, "| `http_transport.max_retry_delay_sec` | int | `1800` | — | — | 1 to 86400 seconds, and at least "+
		"`http_transport.initial_retry_delay_sec`; 0 in the file means the default | The longest wait between retries. |",
		rowOf("http_transport.max_retry_delay_sec"))
	assert.Equal(t, "| `ai.provider` | string | `auto` | `NANNYAGENT_AI_PROVIDER` | `--engine` | one of auto, offline, openai, nannyapi; "+
		"`openai` needs `ai.base_url` | "+keyInfos["ai.provider"].desc+" |", rowOf("ai.provider"))
	assert.Equal(t, "| `daemon.reboot_command` | list of strings | `[]` | — | — | "+keyInfos["daemon.reboot_command"].rule+" | "+
		keyInfos["daemon.reboot_command"].desc+" |", rowOf("daemon.reboot_command"))
	assert.Equal(t, "| `debug` | bool | `false` | `DEBUG` | `--debug` | `true` or `false` | "+keyInfos["debug"].desc+" |", rowOf("debug"))
	assert.Equal(t, "| `nannyapi_url` | string | `\"\"` | `NANNYAPI_URL` | `--api-url` | "+urlRule+" | "+keyInfos["nannyapi_url"].desc+" |",
		rowOf("nannyapi_url"))
}

// keyInfos describes exactly the keys of Config, and says for each what
// the reference needs.
func TestEveryKeyHasInfo(t *testing.T) {
	keys := Keys()
	infoKeys := make([]string, 0, len(keyInfos))
	for k := range keyInfos {
		infoKeys = append(infoKeys, k)
	}
	require.ElementsMatch(t, keys, infoKeys, "keyInfos must have one entry per key of Config")
	def := reflect.ValueOf(Defaults()).Elem()
	for _, key := range keys {
		k := keyInfos[key]
		kind := fieldByKey(def, key).Kind()
		assert.NotEmpty(t, k.desc, "%s: no description", key)
		assert.Contains(t, []string{"int", "bool", "string", "list of strings"}, typeName(fieldByKey(def, key).Type()), key)
		if kind != reflect.Int {
			assert.True(t, k.min == 0 && k.max == 0 && k.unit == "" && k.atMost == "" && k.atLeast == "" && k.unset == noUnset,
				"%s is not an integer: it has no bounds", key)
			assert.Equal(t, kind == reflect.Bool, k.rule == "", "%s: a rule is written for text and lists, derived for booleans", key)
			continue
		}
		assert.Empty(t, k.rule, "%s: an integer's rule is derived from its bounds", key)
		assert.Less(t, k.min, k.max, key)
		for _, other := range []string{k.atMost, k.atLeast} {
			if other != "" {
				assert.Equal(t, reflect.Int, fieldByKey(def, other).Kind(), "%s is compared with %s, which must be an integer key", key, other)
			}
		}
	}
	for s := range sections {
		assert.Equal(t, reflect.Struct, fieldByKey(def, s).Kind(), "sections describes %s, which is not a block of keys", s)
	}
	for _, key := range keys {
		if section, _, ok := strings.Cut(key, "."); ok {
			assert.NotEmpty(t, sections[section], "section %s has no description", section)
		}
	}
}

func setInt(c *Config, key string, n int) {
	fieldByKey(reflect.ValueOf(c).Elem(), key).SetInt(int64(n))
}

func getInt(c *Config, key string) int { return int(fieldByKey(reflect.ValueOf(c).Elem(), key).Int()) }

// problemsOf returns Validate's problems about key.
func problemsOf(t *testing.T, c *Config, key string) []string {
	t.Helper()
	err := c.Validate()
	if err == nil {
		return nil
	}
	var ve *ValidationError
	require.True(t, errors.As(err, &ve), "Validate returned %T", err)
	var out []string
	for _, p := range ve.Problems {
		if strings.HasPrefix(p, key+" ") {
			out = append(out, p)
		}
	}
	return out
}

// The ranges the reference states are the ones Validate enforces: each
// bound is accepted and the value beyond it refused, and a key bounded
// by another accepts that key's value and refuses one past it.
func TestDocumentedRangesAreEnforced(t *testing.T) {
	def := reflect.ValueOf(Defaults()).Elem()
	checked := 0
	for _, key := range Keys() {
		if fieldByKey(def, key).Kind() != reflect.Int {
			continue
		}
		checked++
		k := keyInfos[key]
		for _, tc := range []struct {
			n  int
			ok bool
		}{{k.min, true}, {k.max, true}, {k.min - 1, false}, {k.max + 1, false}} {
			c := Defaults()
			// Make room: the key this one is compared with at its widest.
			if k.atMost != "" {
				setInt(c, k.atMost, keyInfos[k.atMost].max)
			}
			if k.atLeast != "" {
				setInt(c, k.atLeast, keyInfos[k.atLeast].min)
			}
			setInt(c, key, tc.n)
			problems := problemsOf(t, c, key)
			if tc.ok {
				assert.Empty(t, problems, "%s %d is documented as valid", key, tc.n)
			} else {
				assert.Len(t, problems, 1, "%s %d is documented as invalid", key, tc.n)
			}
		}
		for _, rel := range []struct {
			other string
			step  int // the first invalid value is the other's value plus step
		}{{k.atMost, 1}, {k.atLeast, -1}} {
			if rel.other == "" {
				continue
			}
			c := Defaults()
			limit := getInt(c, rel.other)
			setInt(c, key, limit)
			assert.Empty(t, problemsOf(t, c, key), "%s equal to %s (%d)", key, rel.other, limit)
			setInt(c, key, limit+rel.step)
			assert.Len(t, problemsOf(t, c, key), 1, "%s %d against %s (%d)", key, limit+rel.step, rel.other, limit)
		}
	}
	assert.Equal(t, 20, checked, "integer keys")
}

// yamlFor writes key: value as a file, nesting a dotted key.
func yamlFor(key, value string) string {
	if section, name, ok := strings.Cut(key, "."); ok {
		return section + ":\n  " + name + ": " + value + "\n"
	}
	return key + ": " + value + "\n"
}

// The unset rules the reference states are the ones Parse applies.
func TestUnsetRules(t *testing.T) {
	def := reflect.ValueOf(Defaults()).Elem()
	for _, key := range Keys() {
		if fieldByKey(def, key).Kind() != reflect.Int {
			continue
		}
		rule := keyInfos[key].unset
		for _, n := range []int{0, -1} {
			c, err := Parse([]byte(yamlFor(key, fmt.Sprint(n))), "t.yaml")
			require.NoError(t, err, key)
			want := n
			if rule == zeroIsUnset && n == 0 || rule == nonPositiveIsUnset {
				want = getInt(Defaults(), key)
			}
			assert.Equal(t, want, getInt(c, key), "%s: %d in the file", key, n)
		}
	}
}

// The length limits the reference quotes are the ones Validate enforces.
func TestDocumentedTextLimits(t *testing.T) {
	long := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }
	cases := []struct {
		key         string
		set         func(c *Config, s string)
		good, bad   string
		wantProblem string
	}{
		{"nannyapi_url", func(c *Config, s string) { c.NannyAPIURL = s }, long("https://h/", maxURLLen), long("https://h/", maxURLLen+1), "must be at most 2048 characters"},
		{"portal_url", func(c *Config, s string) { c.PortalURL = s }, long("https://h/", maxURLLen), long("https://h/", maxURLLen+1), "must be at most 2048 characters"},
		{"ai.base_url", func(c *Config, s string) { c.AI.BaseURL = s; c.AI.Model = "m" }, long("https://h/", maxURLLen), long("https://h/", maxURLLen+1), "must be at most 2048 characters"},
		{"token_path", func(c *Config, s string) { c.TokenPath = s }, long("/", maxPathLen), long("/", maxPathLen+1), "must be at most 4096 characters"},
		{"playbook_dir", func(c *Config, s string) { c.PlaybookDir = s }, long("/", maxPathLen), long("/", maxPathLen+1), "must be at most 4096 characters"},
		{"agent_id", func(c *Config, s string) { c.AgentID = s }, long("", maxNameLen), long("", maxNameLen+1), "must be at most 256 characters"},
		{"ai.model", func(c *Config, s string) { c.AI.Model = s }, long("", maxNameLen), long("", maxNameLen+1), "must be at most 256 characters"},
		{"static_token", func(c *Config, s string) { c.StaticToken = s }, long("nsk_", maxStaticTokenLen), long("nsk_", maxStaticTokenLen+1), "be 5 to 512 characters"},
		{"static_token", func(c *Config, s string) { c.StaticToken = s }, "nsk_a", "nsk_", "be 5 to 512 characters"},
	}
	for _, tc := range cases {
		c := Defaults()
		tc.set(c, tc.good)
		assert.Empty(t, problemsOf(t, c, tc.key), "%s of %d characters", tc.key, len(tc.good))
		c = Defaults()
		tc.set(c, tc.bad)
		problems := problemsOf(t, c, tc.key)
		require.Len(t, problems, 1, "%s of %d characters", tc.key, len(tc.bad))
		assert.Contains(t, problems[0], tc.wantProblem)
	}

	args := func(n, size int) []string {
		argv := []string{"/sbin/reboot"}
		for len(argv) < n {
			argv = append(argv, strings.Repeat("a", size))
		}
		return argv
	}
	c := Defaults()
	c.Daemon.RebootCommand = args(maxRebootArgs, maxRebootArgLen)
	assert.Empty(t, problemsOf(t, c, "daemon.reboot_command"), "%d arguments of %d bytes", maxRebootArgs, maxRebootArgLen)
	c.Daemon.RebootCommand = args(maxRebootArgs+1, 1)
	assert.Equal(t, []string{"daemon.reboot_command 33: must have at most 32 arguments"}, problemsOf(t, c, "daemon.reboot_command"))
	c.Daemon.RebootCommand = args(2, maxRebootArgLen+1)
	assert.Len(t, problemsOf(t, c, "daemon.reboot_command"), 1)
	assert.Contains(t, problemsOf(t, c, "daemon.reboot_command")[0], "arguments must be non-empty, at most 4096 bytes and without NUL")
}

// Flags names real keys, each flag and each key once.
func TestFlagsTable(t *testing.T) {
	names, keys := map[string]bool{}, map[string]bool{}
	for _, f := range Flags {
		assert.Contains(t, Keys(), f.Key, "flag --%s", f.Name)
		assert.False(t, names[f.Name], "flag --%s twice", f.Name)
		assert.False(t, keys[f.Key], "key %s has two flags", f.Key)
		assert.False(t, strings.HasPrefix(f.Name, "-"), "flag %s: names go without dashes", f.Name)
		names[f.Name], keys[f.Key] = true, true
		assert.Equal(t, f.Name, FlagFor(f.Key))
	}
	assert.Equal(t, "api-url", FlagFor("nannyapi_url"))
	assert.Equal(t, "engine", FlagFor("ai.provider"))
	assert.Equal(t, "", FlagFor("static_token"), "a token never goes on a command line")
	assert.Equal(t, "", FlagFor("no_such_key"))
}
