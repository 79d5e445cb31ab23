package offline

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/safeexec"
)

// A playbook is one YAML file: when its match section matches the issue
// text, its steps run in the first round, its follow-ups in the second,
// its boost list ranks the sweep's findings of those kinds higher, and its
// rules add findings of their own. docs/OFFLINE_ENGINE.md documents the
// schema with an example; every field is checked when the file is loaded,
// so a mistake is reported with its file and line instead of silently
// doing nothing.
//
//	name: disk-full                      # [a-z0-9-], unique
//	description: ...                     # one line
//	match:                               # keywords and/or regex, at least one
//	  keywords: ["no space", inode]      # case-insensitive, whole words
//	  regex: ['(?i)cannot create .*file']
//	boost: [fs.space, fs.inodes]         # finding kinds this issue is about
//	steps:                               # first round
//	  commands: ["df -i"]                # must pass the command policy
//	  traces:                            # must resolve to a catalog entry
//	    - {name: open, filters: {failed: true}, duration: 4}
//	followups:                           # second round, per subject found
//	  - when: fs.inodes                  # a finding kind or a subject kind
//	    commands: ["du --inodes -x -d 2 {{mount}} 2>/dev/null | sort -rn | head -n 10"]
//	rules:                               # findings of the playbook's own
//	  - kind: fs.readonly                # not a built-in kind
//	    when:                            # every condition must hold
//	      - log: '(?i)remounting filesystem read-only'
//	    severity: critical               # critical | warning | info
//	    confidence: High                 # High | Medium | Low
//	    title: "A filesystem was remounted read-only"
//	    root_cause: "The kernel said: {{line}}"
//	    fix: ["..."]
type Playbook struct {
	Name        string     `yaml:"name"`
	Description string     `yaml:"description"`
	Match       Match      `yaml:"match"`
	Boost       []string   `yaml:"boost"`
	Steps       Steps      `yaml:"steps"`
	Followups   []Followup `yaml:"followups"`
	Rules       []Rule     `yaml:"rules"`
	Source      string     `yaml:"-"` // file the playbook came from
	keywords    []*regexp.Regexp
	regexes     []*regexp.Regexp
	rules       []compiledRule
	followups   []compiledFollowup
	steps       compiledSteps
	boostKinds  map[string]bool
}

// Match says which issues a playbook is about.
type Match struct {
	Keywords []string `yaml:"keywords"`
	Regex    []string `yaml:"regex"`
	// Always applies the playbook to every issue (site-specific checks);
	// its boost list still needs a keyword or regex to match.
	Always bool `yaml:"always"`
}

// Steps are commands and traces to run.
type Steps struct {
	Commands []string    `yaml:"commands"`
	Traces   []TraceStep `yaml:"traces"`
}

// TraceStep is a trace request in the protocol's terms.
type TraceStep struct {
	Name     string         `yaml:"name"`
	Type     string         `yaml:"type"`
	Target   string         `yaml:"target"`
	Duration float64        `yaml:"duration"` // seconds; 0 is the engine's default
	Filters  map[string]any `yaml:"filters"`
}

// Followup is a step run in the second round once for each subject of
// kind When found in the first: a finding of that kind, or one of the
// subject kinds (process.named, process.listening, process.crashing).
// Commands and trace filters may use the subject's variables, {{comm}}.
type Followup struct {
	When     string      `yaml:"when"`
	Commands []string    `yaml:"commands"`
	Traces   []TraceStep `yaml:"traces"`
}

// Rule turns conditions over the facts and results into a finding.
type Rule struct {
	Kind       string      `yaml:"kind"`
	When       []Condition `yaml:"when"`
	Severity   string      `yaml:"severity"`
	Confidence string      `yaml:"confidence"`
	Title      string      `yaml:"title"`
	RootCause  string      `yaml:"root_cause"`
	Fix        []string    `yaml:"fix"`
}

// Condition is one test; exactly one of Metric, Log, Output and Finding
// is set. A metric needs Above or Below (strict comparisons); Output may
// be narrowed to the commands starting with Command.
type Condition struct {
	Metric  string   `yaml:"metric"`
	Above   *float64 `yaml:"above"`
	Below   *float64 `yaml:"below"`
	Log     string   `yaml:"log"`
	Output  string   `yaml:"output"`
	Command string   `yaml:"command"`
	Finding string   `yaml:"finding"`
}

// Bounds of one playbook, so a playbook cannot make a round unbounded.
const (
	maxPlaybookCommands = 8
	maxPlaybookTraces   = 4
	// MaxPlaybookTraceSeconds bounds a playbook trace: the first rounds
	// are meant to be short looks.
	MaxPlaybookTraceSeconds = 15
	maxPlaybookBytes        = 256 << 10
)

type compiledSteps struct {
	commands []string
	traces   []resolver.Request
}

type compiledFollowup struct {
	when     string
	commands []string
	traces   []resolver.Request
}

type compiledCondition struct {
	Condition
	re *regexp.Regexp
}

type compiledRule struct {
	Rule
	when []compiledCondition
}

//go:embed playbooks/*.yaml
var embedded embed.FS

// DefaultPlaybookDir is where operators add playbooks.
const DefaultPlaybookDir = "/etc/nannyagent/playbooks.d"

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
var kindRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// placeholderRE finds {{name}} in templates.
var placeholderRE = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_.]*)\s*\}\}`)

// loadPlaybooks reads the embedded playbooks, then the *.yaml and *.yml
// files of dir (sorted by name; a playbook there replaces an embedded one
// of the same name). An embedded playbook that fails is a programming
// error and fails every test; a broken file in dir is skipped with a
// warning naming it and the line.
func loadPlaybooks(dir string) ([]*Playbook, []string) {
	var out []*Playbook
	var warnings []string
	entries, err := fs.ReadDir(embedded, "playbooks")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	for _, e := range entries {
		b, err := embedded.ReadFile("playbooks/" + e.Name())
		if err != nil {
			panic(err)
		}
		pb, err := ParsePlaybook("playbooks/"+e.Name(), b)
		if err != nil {
			warnings = append(warnings, "built-in "+err.Error())
			continue
		}
		out = append(out, pb)
	}
	if dir == "" {
		return out, warnings
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			warnings = append(warnings, fmt.Sprintf("playbook directory %s: %v", dir, err))
		}
		return out, warnings
	}
	for _, f := range files {
		ext := filepath.Ext(f.Name())
		if f.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		path := filepath.Join(dir, f.Name())
		b, err := readBounded(path)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("playbook %s skipped: %v", path, err))
			continue
		}
		pb, err := ParsePlaybook(path, b)
		if err != nil {
			warnings = append(warnings, "playbook skipped: "+err.Error())
			continue
		}
		replaced := false
		for i, old := range out {
			if old.Name == pb.Name {
				out[i], replaced = pb, true
				warnings = append(warnings, fmt.Sprintf("playbook %s: %q replaces the one from %s", path, pb.Name, old.Source))
			}
		}
		if !replaced {
			out = append(out, pb)
		}
	}
	return out, warnings
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPlaybookBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPlaybookBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxPlaybookBytes)
	}
	return b, nil
}

// ParsePlaybook reads one playbook strictly: unknown fields, bad regular
// expressions, commands the policy refuses, traces no catalog entry
// answers and unknown kinds, metrics or placeholders are errors of the
// form "FILE:LINE: what".
func ParsePlaybook(file string, data []byte) (*Playbook, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s:%s", file, yamlError(err))
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty file", file)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var pb Playbook
	if err := dec.Decode(&pb); err != nil {
		return nil, fmt.Errorf("%s:%s", file, yamlError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, fmt.Errorf("%s:%s", file, yamlError(err))
		}
		return nil, fmt.Errorf("%s:%d: a second YAML document: one playbook per file", file, line)
	}
	pb.Source = file
	if perr := pb.compile(); perr != nil {
		return nil, fmt.Errorf("%s:%d: %s", file, lineOf(root.Content[0], perr.path), perr.msg)
	}
	return &pb, nil
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): `)

// yamlError turns yaml's "yaml: line N: what" into "N: what", so that
// every error reads FILE:LINE: what.
func yamlError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	s = strings.ReplaceAll(s, "unmarshal errors:\n  ", "")
	s = strings.ReplaceAll(s, "\n  ", "; ")
	if m := yamlLineRE.FindStringSubmatch(s); m != nil {
		return m[1] + ": " + s[len(m[0]):]
	}
	return " " + s
}

// pathError is a validation error at a path of keys and indexes.
type pathError struct {
	path []any
	msg  string
}

func perr(msg string, path ...any) *pathError { return &pathError{path: path, msg: msg} }

func perrf(path []any, format string, a ...any) *pathError {
	return &pathError{path: path, msg: fmt.Sprintf(format, a...)}
}

// lineOf finds the line of the node at path (mapping keys and sequence
// indexes); the deepest node found when the path does not exist all the
// way.
func lineOf(n *yaml.Node, path []any) int {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return n.Line
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == k {
					n, found = n.Content[i+1], true
					break
				}
			}
			if !found {
				return n.Line
			}
		case int:
			if n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return n.Line
			}
			n = n.Content[k]
		}
	}
	return n.Line
}

func (pb *Playbook) compile() *pathError {
	if pb.Name == "" {
		return perr("name is missing")
	}
	if !nameRE.MatchString(pb.Name) {
		return perr(fmt.Sprintf("name %q: use lowercase letters, digits and '-'", pb.Name), "name")
	}
	if len(pb.Match.Keywords) == 0 && len(pb.Match.Regex) == 0 && !pb.Match.Always {
		return perr("match needs keywords, regex or always: a playbook that matches nothing never runs", "match")
	}
	for i, k := range pb.Match.Keywords {
		re, err := keywordRE(k)
		if err != nil {
			return perrf([]any{"match", "keywords", i}, "keyword %q: %v", k, err)
		}
		pb.keywords = append(pb.keywords, re)
	}
	for i, r := range pb.Match.Regex {
		re, err := regexp.Compile(r)
		if err != nil {
			return perrf([]any{"match", "regex", i}, "regex %q: %v", r, err)
		}
		pb.regexes = append(pb.regexes, re)
	}
	own := map[string]bool{}
	for _, r := range pb.Rules {
		own[r.Kind] = true
	}
	pb.boostKinds = map[string]bool{}
	for i, k := range pb.Boost {
		if _, ok := kinds[k]; !ok && !own[k] {
			return perrf([]any{"boost", i}, "boost: unknown finding kind %q (known: %s)", k, kindList(false))
		}
		pb.boostKinds[k] = true
	}
	steps, e := compileSteps(pb.Steps.Commands, pb.Steps.Traces, nil, []any{"steps"})
	if e != nil {
		return e
	}
	pb.steps = steps
	for i, f := range pb.Followups {
		at := []any{"followups", i}
		k, ok := kinds[f.When]
		if !ok {
			return perrf(append(at, "when"), "when: unknown kind %q (known: %s)", f.When, kindList(true))
		}
		if len(f.Commands) == 0 && len(f.Traces) == 0 {
			return perr("a follow-up needs commands or traces", at...)
		}
		s, e := compileSteps(f.Commands, f.Traces, k.vars, at)
		if e != nil {
			return e
		}
		pb.followups = append(pb.followups, compiledFollowup{when: f.When, commands: s.commands, traces: s.traces})
	}
	seen := map[string]bool{}
	for i, r := range pb.Rules {
		cr, e := compileRule(r, []any{"rules", i})
		if e != nil {
			return e
		}
		if seen[r.Kind] {
			return perrf([]any{"rules", i, "kind"}, "kind %q is used by an earlier rule of this playbook", r.Kind)
		}
		seen[r.Kind] = true
		pb.rules = append(pb.rules, cr)
	}
	return nil
}

// keywordRE matches a keyword case-insensitively as whole words: "oom"
// does not match "room", "can't" matches "can't" and "can’t".
func keywordRE(k string) (*regexp.Regexp, error) {
	k = strings.TrimSpace(k)
	if k == "" {
		return nil, errors.New("empty")
	}
	q := regexp.QuoteMeta(strings.ToLower(k))
	q = strings.ReplaceAll(q, "'", "['’]")
	q = strings.Join(strings.Fields(q), `\s+`)
	isWord := func(b byte) bool {
		return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z'
	}
	lk := strings.ToLower(k)
	if isWord(lk[0]) {
		q = `\b` + q
	}
	if isWord(lk[len(lk)-1]) {
		q += `\b`
	}
	return regexp.Compile(`(?i)` + q)
}

// sampleVars fill follow-up templates when their commands are checked
// against the policy at load time.
var sampleVars = map[string]string{
	"comm": "sample", "pid": "1", "port": "8080", "mount": "/srv/data", "device": "/dev/vdb",
	"disk": "vdb", "unit": "sample.service", "path": "/srv/www/index.html", "cgroup": "/system.slice/sample.service",
	"iface": "eth0", "resolver": "192.0.2.53", "dir": "/srv/www", "hostname": "host",
}

func compileSteps(cmds []string, traces []TraceStep, vars []string, at []any) (compiledSteps, *pathError) {
	var s compiledSteps
	if len(cmds) > maxPlaybookCommands {
		return s, perrf(append(at, "commands"), "%d commands, at most %d", len(cmds), maxPlaybookCommands)
	}
	if len(traces) > maxPlaybookTraces {
		return s, perrf(append(at, "traces"), "%d traces, at most %d", len(traces), maxPlaybookTraces)
	}
	allowed := map[string]bool{"hostname": true}
	for _, v := range vars {
		allowed[v] = true
	}
	for i, c := range cmds {
		p := append(append([]any{}, at...), "commands", i)
		c = strings.TrimSpace(c)
		if c == "" {
			return s, perr("empty command", p...)
		}
		if e := checkPlaceholders(c, allowed, p); e != nil {
			return s, e
		}
		line, _ := fill(c, sampleVars, true)
		if _, err := safeexec.Validate(line); err != nil {
			return s, perrf(p, "command %q: %v", c, err)
		}
		s.commands = append(s.commands, c)
	}
	for i, t := range traces {
		p := append(append([]any{}, at...), "traces", i)
		req, e := t.request(p)
		if e != nil {
			return s, e
		}
		for k, v := range req.Filters {
			if e := checkPlaceholders(v, allowed, append(p, "filters", k)); e != nil {
				return s, e
			}
		}
		probe := req
		probe.Filters = resolver.Filters{}
		for k, v := range req.Filters {
			probe.Filters[k], _ = fill(v, sampleVars, false)
		}
		// A comm or cgroup filled from a subject is checked by its shape
		// only: the sample cgroup does not exist here.
		delete(probe.Filters, "cgroup")
		res := catalogResolver.Resolve(probe)
		if res.Kind() != resolver.KindEntry {
			why := res.Refused
			if res.Kind() == resolver.KindFallback {
				why = "it maps to a bpftrace script, not to a catalog entry"
			}
			return s, perrf(p, "trace %q: %s", traceLabel(req), why)
		}
		for _, n := range res.Notes {
			if strings.Contains(n, "filter dropped") {
				return s, perrf(p, "trace %q: %s", traceLabel(req), n)
			}
		}
		s.traces = append(s.traces, req)
	}
	return s, nil
}

func traceLabel(r resolver.Request) string {
	if r.Name != "" {
		return r.Name
	}
	return r.Target
}

func (t TraceStep) request(p []any) (resolver.Request, *pathError) {
	if t.Name == "" && t.Target == "" {
		return resolver.Request{}, perr("a trace needs a name or a target", p...)
	}
	if t.Duration < 0 || t.Duration > MaxPlaybookTraceSeconds || math.IsNaN(t.Duration) {
		return resolver.Request{}, perrf(append(p, "duration"), "duration %g s: want 0 (the default) to %d s", t.Duration, MaxPlaybookTraceSeconds)
	}
	req := resolver.Request{Name: t.Name, Type: t.Type, Target: t.Target}
	if t.Duration > 0 {
		req.Duration = resolver.Seconds(t.Duration)
	}
	if len(t.Filters) > 0 {
		req.Filters = resolver.Filters{}
		keys := make([]string, 0, len(t.Filters))
		for k := range t.Filters {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch v := t.Filters[k].(type) {
			case string:
				req.Filters[strings.ToLower(k)] = v
			case bool, int, float64:
				req.Filters[strings.ToLower(k)] = fmt.Sprint(v)
			default:
				return resolver.Request{}, perrf(append(p, "filters", k), "filter %s: want a string, number or boolean", k)
			}
		}
	}
	return req, nil
}

func checkPlaceholders(s string, allowed map[string]bool, p []any) *pathError {
	for _, m := range placeholderRE.FindAllStringSubmatch(s, -1) {
		if !allowed[m[1]] {
			return perrf(p, "placeholder {{%s}} is not available here (available: %s)", m[1], sortedKeys(allowed))
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

var severities = map[string]severity{"critical": sevCritical, "warning": sevWarning, "info": sevInfo}
var confidences = map[string]bool{"High": true, "Medium": true, "Low": true}

func compileRule(r Rule, at []any) (compiledRule, *pathError) {
	cr := compiledRule{Rule: r}
	if r.Kind == "" {
		return cr, perr("rule kind is missing", at...)
	}
	if !kindRE.MatchString(r.Kind) {
		return cr, perrf(append(at, "kind"), "kind %q: use lowercase letters, digits, '.', '_' and '-'", r.Kind)
	}
	if _, builtin := kinds[r.Kind]; builtin {
		return cr, perrf(append(at, "kind"), "kind %q is a built-in finding kind: name the playbook's own (boost the built-in one instead)", r.Kind)
	}
	if len(r.When) == 0 {
		return cr, perr("rule needs at least one condition under when", at...)
	}
	if _, ok := severities[r.Severity]; !ok {
		return cr, perrf(append(at, "severity"), "severity %q: want critical, warning or info", r.Severity)
	}
	if r.Confidence == "" {
		cr.Confidence = "Medium"
	} else if !confidences[r.Confidence] {
		return cr, perrf(append(at, "confidence"), "confidence %q: want High, Medium or Low", r.Confidence)
	}
	if strings.TrimSpace(r.Title) == "" {
		return cr, perr("rule title is missing", at...)
	}
	if strings.TrimSpace(r.RootCause) == "" {
		return cr, perr("rule root_cause is missing", at...)
	}
	vars := map[string]bool{"hostname": true}
	for i, c := range r.When {
		p := append(append([]any{}, at...), "when", i)
		set := 0
		for _, s := range []string{c.Metric, c.Log, c.Output, c.Finding} {
			if s != "" {
				set++
			}
		}
		if set != 1 {
			return cr, perr("a condition has exactly one of metric, log, output, finding", p...)
		}
		cc := compiledCondition{Condition: c}
		switch {
		case c.Metric != "":
			if !knownMetric(c.Metric) {
				return cr, perrf(append(p, "metric"), "unknown metric %q (known: %s)", c.Metric, metricList())
			}
			if (c.Above == nil) == (c.Below == nil) {
				return cr, perr("a metric condition has exactly one of above, below", p...)
			}
			vars[c.Metric] = true
		case c.Log != "", c.Output != "":
			pat, key := c.Log, "log"
			if c.Output != "" {
				pat, key = c.Output, "output"
			}
			re, err := regexp.Compile(pat)
			if err != nil {
				return cr, perrf(append(p, key), "%s %q: %v", key, pat, err)
			}
			cc.re = re
			vars["line"], vars["count"] = true, true
		case c.Finding != "":
			if _, ok := kinds[c.Finding]; !ok {
				return cr, perrf(append(p, "finding"), "unknown finding kind %q (known: %s)", c.Finding, kindList(false))
			}
			vars["subject"] = true
		}
		if c.Command != "" && c.Output == "" {
			return cr, perr("command narrows an output condition only", p...)
		}
		if c.Metric == "" && (c.Above != nil || c.Below != nil) {
			return cr, perr("above and below apply to a metric", p...)
		}
		cr.when = append(cr.when, cc)
	}
	for _, t := range append([]string{r.Title, r.RootCause}, r.Fix...) {
		if e := checkPlaceholders(t, vars, at); e != nil {
			return cr, e
		}
	}
	return cr, nil
}

// matches reports how much of issue the playbook's keywords and patterns
// cover: the characters of the text they match, so a specific phrase
// ("reads are slow") outweighs a general word ("slow"). 0 is no match.
func (pb *Playbook) matches(issue string) int {
	n := 0
	for _, re := range append(append([]*regexp.Regexp{}, pb.keywords...), pb.regexes...) {
		for _, m := range re.FindAllString(issue, -1) {
			n += len(m)
		}
	}
	return n
}

// fill replaces {{name}} with vars[name]; for command lines the values
// are shell-quoted. It reports false when a placeholder has no value.
func fill(s string, vars map[string]string, quote bool) (string, bool) {
	ok := true
	out := placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		name := placeholderRE.FindStringSubmatch(m)[1]
		v, has := vars[name]
		if !has || v == "" {
			ok = false
			return ""
		}
		if quote {
			return shellQuote(v)
		}
		return v
	})
	return out, ok
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// requestKey identifies a trace request for deduplication: entry or
// target and filters, not duration.
func requestKey(r resolver.Request) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(r.Name))
	b.WriteByte('|')
	b.WriteString(r.Target)
	keys := make([]string, 0, len(r.Filters))
	for k := range r.Filters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString("|" + k + "=" + r.Filters[k])
	}
	return b.String()
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
