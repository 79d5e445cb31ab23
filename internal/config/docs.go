package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Markers around the generated part of docs/CONFIGURATION.md.
const (
	DocsBegin = "<!-- BEGIN GENERATED: config keys, from internal/config by `make docs`; do not edit -->"
	DocsEnd   = "<!-- END GENERATED: config keys -->"
)

// Reference renders the key reference of docs/CONFIGURATION.md (Markdown,
// markers included) from the Config struct, Defaults, EnvVars, Flags and
// keyInfos, so that the page states what the code does.
func Reference() string {
	var b strings.Builder
	b.WriteString(DocsBegin + "\n")
	t := reflect.TypeOf(Config{})
	def := reflect.ValueOf(Defaults()).Elem()

	b.WriteString("\n### Top-level keys\n\n")
	writeTableHead(&b)
	for i := 0; i < t.NumField(); i++ {
		if name := yamlName(t.Field(i)); name != "" && t.Field(i).Type.Kind() != reflect.Struct {
			writeRow(&b, name, def.Field(i))
		}
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || f.Type.Kind() != reflect.Struct {
			continue
		}
		fmt.Fprintf(&b, "\n### `%s`\n\n%s\n\n", name, sections[name])
		writeTableHead(&b)
		for j := 0; j < f.Type.NumField(); j++ {
			if sub := yamlName(f.Type.Field(j)); sub != "" {
				writeRow(&b, name+"."+sub, def.Field(i).Field(j))
			}
		}
	}
	b.WriteString("\n" + DocsEnd + "\n")
	return b.String()
}

// yamlName is a field's key, "" for fields that are not keys.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

func writeTableHead(b *strings.Builder) {
	b.WriteString("| key | type | default | environment | flag | valid values | meaning |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
}

func writeRow(b *strings.Builder, key string, def reflect.Value) {
	env, flag := "—", "—"
	if e := envFor(key); e != "" {
		env = "`" + e + "`"
	}
	if f := FlagFor(key); f != "" {
		flag = "`--" + f + "`"
	}
	k := keyInfos[key]
	cells := []string{"`" + key + "`", typeName(def.Type()), "`" + yamlValue(def) + "`", env, flag, validRule(def.Kind(), k), k.desc}
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(c, "|", `\|`)
	}
	b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

func typeName(t reflect.Type) string {
	switch {
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "list of strings"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Bool, t.Kind() == reflect.String:
		return t.Kind().String()
	}
	return t.String()
}

// yamlValue writes a default as it would be written in the file.
func yamlValue(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		if v.String() == "" {
			return `""`
		}
		return v.String()
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = yamlValue(v.Index(i))
		}
		return "[" + strings.Join(items, ", ") + "]"
	case reflect.Int:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	}
	return fmt.Sprint(v.Interface())
}

// validRule says what Validate accepts: integers from their bounds (the
// ones Validate uses), booleans from their type, the rest from the rule
// written next to the bounds.
func validRule(kind reflect.Kind, k keyInfo) string {
	switch kind {
	case reflect.Bool:
		return "`true` or `false`"
	case reflect.Int:
	default:
		return k.rule
	}
	s := fmt.Sprintf("%d to %d%s", k.min, k.max, unitSuffix(k.unit))
	if k.atMost != "" {
		s += ", and at most `" + k.atMost + "`"
	}
	if k.atLeast != "" {
		s += ", and at least `" + k.atLeast + "`"
	}
	switch k.unset {
	case zeroIsUnset:
		s += "; 0 in the file means the default"
	case nonPositiveIsUnset:
		s += "; 0 or less in the file means the default"
	}
	return s
}
