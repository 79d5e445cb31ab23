package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxFileBytes bounds the config file: a real one is a few hundred
// bytes, and YAML aliases can make a small hostile file expand.
const maxFileBytes = 1 << 20

// Parse decodes one YAML document over the defaults. Unknown keys are
// errors naming the line, the key and the valid keys beside it; values
// that do not fit their key's type are errors naming the line and the
// key. Parse does not apply the environment or validate (Load does).
func Parse(data []byte, name string) (*Config, error) {
	c := Defaults()
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s: %d bytes: a config file is at most %d", name, len(data), maxFileBytes)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil // empty file
		}
		return nil, fmt.Errorf("%s: %s", name, yamlError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: line %d: a second YAML document (---); the config is one document", name, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return c, nil // a document of only comments, or "~"
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: line %d: the config must be a mapping of keys (key: value), not a %s", name, root.Line, kindName(root))
	}
	var nulls []string
	if err := checkKeys(root, reflect.TypeOf(Config{}), "", &nulls); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// The check above gives the helpful errors; KnownFields is kept as
	// the guarantee that nothing unknown is ever ignored.
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %s", name, yamlError(err))
	}
	// A key with nothing after it ("ai:", "model:") decodes as null and
	// zeroes its value; it means "the default", as an absent key does.
	def := reflect.ValueOf(Defaults()).Elem()
	cv := reflect.ValueOf(c).Elem()
	for _, key := range nulls {
		fieldByKey(cv, key).Set(fieldByKey(def, key))
	}
	c.fillZeroDefaults()
	if len(c.Daemon.RebootCommand) == 0 {
		// "reboot_command: []" is the default, as an absent key is.
		c.Daemon.RebootCommand = nil
	}
	return c, nil
}

// fieldByKey finds the field of a dotted key ("ai.model") in a Config
// value; the key was checked against the struct already.
func fieldByKey(v reflect.Value, key string) reflect.Value {
	for _, part := range strings.Split(key, ".") {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name == part {
				v = v.Field(i)
				break
			}
		}
	}
	return v
}

// checkKeys walks a mapping against the struct type it decodes into,
// checking keys and the kinds of values (the decoder would turn 1.5 into
// 1 for an int), and collects the keys given no value.
func checkKeys(m *yaml.Node, t reflect.Type, prefix string, nulls *[]string) error {
	fields := yamlFields(t)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		for v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: a key must be a plain name, not a %s", k.Line, kindName(k))
		}
		f, ok := fields[k.Value]
		if !ok {
			return unknownKey(k, prefix, fields)
		}
		key := prefix + k.Value
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			*nulls = append(*nulls, key)
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			if v.Kind != yaml.MappingNode {
				return fmt.Errorf("line %d: %s is a section of keys (%s), not a %s", v.Line, key,
					strings.Join(sortedNames(yamlFields(f.Type)), ", "), kindName(v))
			}
			if err := checkKeys(v, f.Type, key+".", nulls); err != nil {
				return err
			}
			continue
		}
		if f.Type.Kind() == reflect.Slice {
			if v.Kind != yaml.SequenceNode {
				return fmt.Errorf("line %d: %s takes a list ([program, arg, ...]), not a %s", v.Line, key, kindName(v))
			}
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("line %d: %s: each item must be a single value, not a %s", item.Line, key, kindName(item))
				}
			}
			continue
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: %s takes a single value, not a %s", v.Line, key, kindName(v))
		}
		switch f.Type.Kind() {
		case reflect.Int:
			if v.Tag != "!!int" {
				return fmt.Errorf("line %d: %s: %q is not a whole number%s", v.Line, key, truncate(v.Value, 40), unitHint(key))
			}
		case reflect.Bool:
			switch strings.ToLower(v.Value) {
			case "true", "false", "yes", "no", "on", "off":
			default:
				return fmt.Errorf("line %d: %s: %q is not true or false", v.Line, key, truncate(v.Value, 40))
			}
		}
	}
	return nil
}

func unitHint(key string) string {
	switch {
	case strings.HasSuffix(key, "_sec"), strings.HasSuffix(key, "_secs"), strings.HasSuffix(key, "_interval"):
		return " (seconds, written without a unit)"
	case strings.HasSuffix(key, "_days"):
		return " (days)"
	}
	return ""
}

func unknownKey(k *yaml.Node, prefix string, fields map[string]reflect.StructField) error {
	names := sortedNames(fields)
	where := "top-level keys"
	if prefix != "" {
		where = "keys of " + strings.TrimSuffix(prefix, ".")
	}
	msg := fmt.Sprintf("line %d: unknown key %q", k.Line, prefix+k.Value)
	if close := closest(k.Value, names); len(close) > 0 {
		for i := range close {
			close[i] = prefix + close[i]
		}
		msg += fmt.Sprintf(" (did you mean %s?)", quoteJoin(close, " or "))
	}
	return fmt.Errorf("%s; %s: %s", msg, where, strings.Join(names, ", "))
}

// closest returns the names within a small edit distance of s, nearest
// first: typos ("metric_interval") and case or separator slips
// ("maxRounds").
func closest(s string, names []string) []string {
	norm := func(x string) string {
		return strings.ReplaceAll(strings.ReplaceAll(strings.ToLower(x), "-", "_"), " ", "_")
	}
	type cand struct {
		name string
		d    int
	}
	var cs []cand
	for _, n := range names {
		d := editDistance(norm(s), norm(n))
		if strings.ReplaceAll(norm(s), "_", "") == strings.ReplaceAll(n, "_", "") {
			d = 0
		}
		// Short keys tolerate fewer slips, or "x" would suggest "ai".
		limit := min(len(n)/5+1, 3)
		if d <= limit {
			cs = append(cs, cand{n, d})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].d < cs[j].d })
	var out []string
	for i, c := range cs {
		if i == 3 {
			break
		}
		out = append(out, c.name)
	}
	return out
}

// editDistance is the Levenshtein distance, bounded to short strings
// (keys); longer input is simply far from everything.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func quoteJoin(ss []string, sep string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, sep)
}

func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = f
	}
	return m
}

func sortedNames(m map[string]reflect.StructField) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Keys lists every key of the file, sections as "ai.provider", in the
// struct's order.
func Keys() []string { return keysOf(reflect.TypeOf(Config{}), "") }

func keysOf(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, keysOf(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	if n.Tag == "!!null" {
		return "empty value"
	}
	return "single value"
}

// yamlError makes the decoder's messages name keys: "line 3: cannot
// unmarshal !!str `ten` into int" becomes "line 3: ... (a whole number
// is expected)".
func yamlError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var parts []string
		for _, e := range te.Errors {
			parts = append(parts, explainTypeError(e))
		}
		return strings.Join(parts, "; ")
	}
	return "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")
}

func explainTypeError(e string) string {
	switch {
	case strings.HasSuffix(e, " into int"):
		return e + " (a whole number is expected; durations are in seconds)"
	case strings.HasSuffix(e, " into bool"):
		return e + " (true or false is expected)"
	case strings.HasSuffix(e, " into string"):
		return e + " (a single text value is expected)"
	}
	return e
}
