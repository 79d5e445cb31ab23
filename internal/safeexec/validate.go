package safeexec

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"mvdan.cc/sh/v3/syntax"
)

// Stage is one program invocation: globs already expanded, Argv[0] a bare
// program name that layer 2 resolves on its fixed PATH.
type Stage struct {
	Argv []string
}

// Redirect is a redirection of one stage: Target is "/dev/null", or "&1"
// for 2>&1. Redirects apply in order, as a shell applies them.
type Redirect struct {
	Fd     int
	Target string
}

// Pipeline is one or more stages joined by pipes; Redirects[i] belongs to
// Stages[i].
type Pipeline struct {
	Stages    []Stage
	Redirects [][]Redirect
}

// Item is one pipeline of a list; Op joins it to the next item: "&&",
// "||", ";", or "" for the last.
type Item struct {
	Pipeline Pipeline
	Op       string
}

// Plan is a validated command line, ready for Run.
type Plan struct {
	Line  string
	Items []Item
}

// Refusal is why a line was refused. Rule is a short stable name ("syntax",
// "redirect", "allowlist", a program name for its argument rules...);
// Reason says what was refused and why.
type Refusal struct {
	Rule, Reason string
}

func (r *Refusal) Error() string { return "refused (" + r.Rule + "): " + r.Reason }

func refuse(rule, format string, a ...any) *Refusal {
	return &Refusal{Rule: rule, Reason: fmt.Sprintf(format, a...)}
}

// Limits of layer 1. A line longer than MaxLineBytes is refused before it
// is parsed; globs are bounded so that a pattern cannot make the agent walk
// the whole filesystem or build an unbounded argv.
const (
	MaxLineBytes     = 64 << 10
	maxGlobWords     = 16
	maxGlobMatches   = 1000
	maxArgs          = 4096
	maxGlobMetaComps = 4
	maxItems         = 64
	maxStages        = 32
)

// globEntryBudget is how many directory entries the globs of one line may
// read (a variable so that tests need not create 20000 files).
var globEntryBudget = 20000

// Validate parses line and decides whether it may run. Relative globs are
// expanded against the current directory; see ValidateIn.
func Validate(line string) (*Plan, error) {
	return ValidateIn(line, "")
}

// ValidateIn is Validate with relative globs expanded against dir (the
// directory the plan will run in; "" means the current one).
func ValidateIn(line, dir string) (*Plan, error) {
	v := validator{dir: dir}
	p, r := v.validate(line)
	if r != nil {
		return nil, r
	}
	return p, nil
}

type validator struct {
	dir         string
	globWords   int
	globEntries int
	args        int
}

func (v *validator) validate(line string) (*Plan, *Refusal) {
	if len(line) > MaxLineBytes {
		return nil, refuse("length", "line is %d bytes, more than the %d allowed", len(line), MaxLineBytes)
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c == 0 {
			return nil, refuse("nul", "line contains a NUL byte at offset %d", i)
		}
		if c < 0x20 && c != '\t' && c != '\n' || c == 0x7f {
			return nil, refuse("control-char", "line contains control character %#x at offset %d", c, i)
		}
	}
	if strings.TrimSpace(line) == "" {
		return nil, refuse("syntax", "empty command line")
	}
	if r := backquotes(line); r != nil {
		return nil, r
	}
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(line), "")
	if err != nil {
		return nil, refuse("syntax", "cannot parse: %v", err)
	}
	if len(f.Stmts) == 0 {
		return nil, refuse("syntax", "no command")
	}
	plan := &Plan{Line: line}
	for i, st := range f.Stmts {
		if err := v.list(st, plan); err != nil {
			return nil, err
		}
		if i < len(f.Stmts)-1 {
			plan.Items[len(plan.Items)-1].Op = ";"
		}
	}
	if len(plan.Items) > maxItems {
		return nil, refuse("length", "%d commands in one line, more than the %d allowed", len(plan.Items), maxItems)
	}
	return plan, nil
}

// backquotes refuses `...` substitution before parsing: the parser
// re-parses nested backquotes, so a line of backquotes would take it
// exponential time.
func backquotes(line string) *Refusal {
	sq, dq := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case sq:
			sq = c != '\''
		case c == '\\':
			i++
		case c == '\'' && !dq:
			sq = true
		case c == '"':
			dq = !dq
		case c == '`':
			return refuse("substitution", "command substitution $(...) or `...` is not allowed")
		}
	}
	return nil
}

func stmtFlags(st *syntax.Stmt) *Refusal {
	switch {
	case st.Background || st.Disown:
		return refuse("background", "background jobs (&) are not allowed")
	case st.Coprocess:
		return refuse("background", "coprocesses are not allowed")
	case st.Negated:
		return refuse("syntax", "negation (!) is not allowed")
	}
	return nil
}

// list flattens a && || tree into items, in order: the shell evaluates
// such lists left to right with equal precedence.
func (v *validator) list(st *syntax.Stmt, plan *Plan) *Refusal {
	if r := stmtFlags(st); r != nil {
		return r
	}
	if b, ok := st.Cmd.(*syntax.BinaryCmd); ok && (b.Op == syntax.AndStmt || b.Op == syntax.OrStmt) {
		if len(st.Redirs) > 0 {
			return refuse("redirect", "redirection of a whole list is not allowed")
		}
		if r := v.list(b.X, plan); r != nil {
			return r
		}
		plan.Items[len(plan.Items)-1].Op = b.Op.String()
		return v.list(b.Y, plan)
	}
	var pl Pipeline
	if r := v.pipeline(st, &pl); r != nil {
		return r
	}
	plan.Items = append(plan.Items, Item{Pipeline: pl})
	return nil
}

func (v *validator) pipeline(st *syntax.Stmt, pl *Pipeline) *Refusal {
	if r := stmtFlags(st); r != nil {
		return r
	}
	switch c := st.Cmd.(type) {
	case *syntax.BinaryCmd:
		if c.Op == syntax.PipeAll {
			return refuse("redirect", "|& is not allowed; write 2>&1 |")
		}
		if c.Op != syntax.Pipe {
			return refuse("syntax", "%s inside a pipeline is not allowed", c.Op)
		}
		if len(st.Redirs) > 0 {
			return refuse("redirect", "redirection of a whole pipeline is not allowed")
		}
		if r := v.pipeline(c.X, pl); r != nil {
			return r
		}
		return v.pipeline(c.Y, pl)
	case *syntax.CallExpr:
		if len(c.Assigns) > 0 {
			return refuse("assignment", "variable assignment is not allowed")
		}
		if len(c.Args) == 0 {
			return refuse("syntax", "empty command")
		}
		reds, r := redirects(st.Redirs)
		if r != nil {
			return r
		}
		argv, r := v.command(c.Args)
		if r != nil {
			return r
		}
		pl.Stages = append(pl.Stages, Stage{Argv: argv})
		pl.Redirects = append(pl.Redirects, reds)
		if len(pl.Stages) > maxStages {
			return refuse("length", "more than %d commands in one pipeline", maxStages)
		}
		return nil
	case *syntax.Subshell:
		return refuse("subshell", "subshells ( ... ) are not allowed")
	case *syntax.Block:
		return refuse("subshell", "command groups { ... } are not allowed")
	case *syntax.FuncDecl:
		return refuse("function", "function definitions are not allowed")
	case *syntax.DeclClause:
		return refuse("assignment", "%s is not allowed", c.Variant.Value)
	case *syntax.IfClause, *syntax.WhileClause, *syntax.ForClause, *syntax.CaseClause:
		return refuse("syntax", "control structures (if, while, for, case) are not allowed")
	case *syntax.ArithmCmd:
		return refuse("expansion", "arithmetic commands (( )) are not allowed")
	case *syntax.TestClause:
		return refuse("syntax", "[[ ]] tests are not allowed")
	case *syntax.LetClause:
		return refuse("assignment", "let is not allowed")
	case *syntax.TimeClause:
		return refuse("wrapper", "time is not allowed: run the command itself")
	case *syntax.CoprocClause:
		return refuse("background", "coprocesses are not allowed")
	case nil:
		return refuse("redirect", "a redirection without a command is not allowed")
	default:
		return refuse("syntax", "%T is not allowed", c)
	}
}

func redirects(rs []*syntax.Redirect) ([]Redirect, *Refusal) {
	var out []Redirect
	for _, rd := range rs {
		if rd.Hdoc != nil || rd.Op == syntax.Hdoc || rd.Op == syntax.DashHdoc || rd.Op == syntax.WordHdoc {
			return nil, refuse("heredoc", "here-documents and here-strings are not allowed")
		}
		target, ok := plainWord(rd.Word)
		if !ok {
			return nil, refuse("redirect", "redirection targets must be plain words")
		}
		fd := -1
		if rd.N != nil {
			switch rd.N.Value {
			case "0":
				fd = 0
			case "1":
				fd = 1
			case "2":
				fd = 2
			default:
				return nil, refuse("redirect", "redirection of fd %q is not allowed", rd.N.Value)
			}
		}
		switch rd.Op {
		case syntax.RdrOut, syntax.AppOut, syntax.RdrClob:
			if target != "/dev/null" {
				return nil, refuse("redirect", "output may only be redirected to /dev/null, not %q", target)
			}
			if fd == -1 {
				fd = 1
			}
			if fd == 0 {
				return nil, refuse("redirect", "redirecting stdin for writing is not allowed")
			}
			out = append(out, Redirect{Fd: fd, Target: "/dev/null"})
		case syntax.RdrAll, syntax.AppAll:
			if target != "/dev/null" || fd != -1 {
				return nil, refuse("redirect", "output may only be redirected to /dev/null, not %q", target)
			}
			out = append(out, Redirect{Fd: 1, Target: "/dev/null"}, Redirect{Fd: 2, Target: "/dev/null"})
		case syntax.RdrIn:
			if target != "/dev/null" {
				return nil, refuse("redirect", "input may only come from /dev/null, not %q", target)
			}
			if fd != -1 && fd != 0 {
				return nil, refuse("redirect", "only stdin may be redirected from /dev/null")
			}
			out = append(out, Redirect{Fd: 0, Target: "/dev/null"})
		case syntax.DplOut:
			if fd != 2 || target != "1" {
				return nil, refuse("redirect", "the only descriptor duplication allowed is 2>&1")
			}
			out = append(out, Redirect{Fd: 2, Target: "&1"})
		default:
			return nil, refuse("redirect", "redirection %s is not allowed", rd.Op)
		}
	}
	return out, nil
}

// plainWord is a word made only of unquoted literal text with no escapes
// or pattern characters: what redirection targets must be.
func plainWord(w *syntax.Word) (string, bool) {
	if w == nil || len(w.Parts) != 1 {
		return "", false
	}
	l, ok := w.Parts[0].(*syntax.Lit)
	if !ok || strings.ContainsAny(l.Value, "\\*?[]{}~$`'\"") {
		return "", false
	}
	return l.Value, true
}

var stdDirs = map[string]bool{
	"/bin": true, "/sbin": true, "/usr/bin": true, "/usr/sbin": true,
	"/usr/local/bin": true, "/usr/local/sbin": true,
}

func (v *validator) command(words []*syntax.Word) ([]string, *Refusal) {
	name, glob, r := v.literal(words[0])
	if r != nil {
		return nil, r
	}
	if glob {
		return nil, refuse("glob", "a program name may not contain a glob")
	}
	prog, r := programName(name)
	if r != nil {
		return nil, r
	}
	argv := []string{prog}
	for _, w := range words[1:] {
		fields, r := v.word(w)
		if r != nil {
			return nil, r
		}
		argv = append(argv, fields...)
		v.args += len(fields)
		if v.args > maxArgs {
			return nil, refuse("glob", "more than %d arguments", maxArgs)
		}
	}
	if r := checkArgs(prog, argv[1:]); r != nil {
		return nil, r
	}
	return argv, nil
}

func programName(name string) (string, *Refusal) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return "", refuse("non-ascii", "program name %q contains non-ASCII characters (look-alikes are refused)", name)
		}
	}
	if name == "" {
		return "", refuse("allowlist", "empty program name")
	}
	prog := name
	if strings.Contains(name, "/") {
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		if path.Clean(name) != name || !stdDirs[dir] {
			return "", refuse("allowlist", "program %q: only bare names or paths in the standard bin directories are allowed", name)
		}
		prog = base
	}
	for i := 0; i < len(prog); i++ {
		c := prog[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+' || c == '[') {
			return "", refuse("allowlist", "program name %q has unexpected characters", name)
		}
	}
	if why, ok := wrappers[prog]; ok {
		return "", refuse("wrapper", "%s is not allowed: %s", prog, why)
	}
	if interpreters[prog] || strings.HasPrefix(prog, "python") || strings.HasPrefix(prog, "perl") || strings.HasPrefix(prog, "ruby") || strings.HasPrefix(prog, "php") || strings.HasPrefix(prog, "lua") {
		return "", refuse("interpreter", "%s is an interpreter: it can run any code", prog)
	}
	if why, ok := unavailable[prog]; ok {
		return "", refuse(prog, "%s cannot run in the sandbox: %s", prog, why)
	}
	if _, ok := programs[prog]; !ok {
		return "", refuse("allowlist", "%s is not on the allowlist of read-only diagnostic tools", prog)
	}
	return prog, nil
}

var wrappers = map[string]string{
	"env": "it runs another program", "nice": "it runs another program", "ionice": "it runs another program",
	"nohup": "it runs another program", "busybox": "it bundles every tool, including ones that write",
	"toybox": "it bundles every tool, including ones that write", "xargs": "it runs another program",
	"timeout": "it runs another program (the agent bounds time itself)", "sudo": "it runs another program",
	"su": "it runs another program", "doas": "it runs another program", "chroot": "it runs another program",
	"setsid": "it runs another program", "stdbuf": "it runs another program", "unshare": "it runs another program",
	"nsenter": "it runs another program", "taskset": "it runs another program", "chrt": "it runs another program",
	"flock": "it runs another program", "watch": "it runs another program", "exec": "it replaces the process",
	"eval": "it evaluates shell code", "command": "it runs another program", "builtin": "it runs another program",
	"parallel": "it runs other programs", "script": "it runs a shell", "systemd-run": "it starts units",
	"run-parts": "it runs other programs", "setpriv": "it runs another program", "capsh": "it runs another program",
	"runuser": "it runs another program", "sg": "it runs another program", "newgrp": "it runs a shell",
	"find-exec": "it runs another program", "ssh": "it runs commands elsewhere", "time": "it runs another program",
	"source": "it evaluates shell code", ".": "it evaluates shell code",
}

var interpreters = map[string]bool{
	"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "mksh": true, "fish": true, "csh": true,
	"tcsh": true, "ash": true, "rbash": true, "node": true, "nodejs": true, "tclsh": true, "wish": true,
	"expect": true, "guile": true, "gdb": true, "vim": true, "vi": true, "nano": true, "emacs": true, "ed": true,
	"ex": true, "less": true, "more": true, "man": true, "bc": true, "dc": true, "osascript": true,
	"java": true, "jshell": true, "irb": true, "julia": true, "R": true, "Rscript": true, "gawk-exec": true,
}

// literal expands a word that must be one field (a program name).
func (v *validator) literal(w *syntax.Word) (string, bool, *Refusal) {
	s, _, glob, r := wordText(w)
	return s, glob, r
}

// word expands one shell word into fields: exactly one, unless it has an
// unquoted glob that matches files.
func (v *validator) word(w *syntax.Word) ([]string, *Refusal) {
	lit, pat, glob, r := wordText(w)
	if r != nil {
		return nil, r
	}
	if !glob {
		return []string{lit}, nil
	}
	v.globWords++
	if v.globWords > maxGlobWords {
		return nil, refuse("glob", "more than %d glob patterns in one line", maxGlobWords)
	}
	m, r := v.expandGlob(pat)
	if r != nil {
		return nil, r
	}
	if len(m) == 0 {
		// As bash without nullglob: an unmatched pattern stays as written.
		return []string{lit}, nil
	}
	return m, nil
}

func (v *validator) expandGlob(pat string) ([]string, *Refusal) {
	comps := strings.Split(pat, "/")
	n := 0
	for _, c := range comps {
		if hasMeta(c) {
			n++
		}
	}
	if n > maxGlobMetaComps {
		return nil, refuse("glob", "glob %q has more than %d wildcard path components", pat, maxGlobMetaComps)
	}
	if _, err := filepath.Match(pat, ""); err != nil {
		return nil, nil // a malformed pattern stays literal, as in bash
	}
	// Walk one component at a time, reading at most maxGlobEntries
	// directory entries for the whole line: filepath.Glob has no bound, and
	// /sys/*/*/*/* would keep the agent busy for seconds.
	cands := []string{""}
	if strings.HasPrefix(pat, "/") {
		cands = []string{"/"}
		comps = comps[1:]
	}
	for ci, comp := range comps {
		last := ci == len(comps)-1
		if comp == "" {
			if !last {
				continue
			}
			for i := range cands {
				cands[i] += "/"
			}
			break
		}
		var next []string
		if !hasMeta(comp) {
			lit := unescapeGlob(comp)
			for _, c := range cands {
				next = append(next, joinGlob(c, lit))
			}
			cands = next
			continue
		}
		for _, c := range cands {
			names, r := v.readDir(c, pat)
			if r != nil {
				return nil, r
			}
			for _, name := range names {
				if strings.HasPrefix(name, ".") && !strings.HasPrefix(comp, ".") {
					continue
				}
				if ok, _ := filepath.Match(comp, name); ok {
					next = append(next, joinGlob(c, name))
				}
			}
			if len(next) > maxGlobMatches {
				return nil, refuse("glob", "glob %q matches more than the %d paths allowed", pat, maxGlobMatches)
			}
		}
		cands = next
		if len(cands) == 0 {
			return nil, nil
		}
	}
	out := cands[:0]
	for _, c := range cands {
		if _, err := os.Lstat(v.abs(c)); err == nil {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (v *validator) abs(p string) string {
	if p == "" {
		p = "."
	}
	if v.dir != "" && !filepath.IsAbs(p) {
		return filepath.Join(v.dir, p)
	}
	return p
}

func joinGlob(dir, name string) string {
	switch dir {
	case "":
		return name
	case "/":
		return "/" + name
	}
	return dir + "/" + name
}

func unescapeGlob(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (v *validator) readDir(dir, pat string) ([]string, *Refusal) {
	// O_DIRECTORY|O_NONBLOCK: a candidate that is a FIFO or a terminal
	// must neither block the validator nor be opened as a device.
	f, err := os.OpenFile(v.abs(dir), os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	left := globEntryBudget - v.globEntries
	names, _ := f.Readdirnames(left + 1)
	v.globEntries += len(names)
	if len(names) > left {
		return nil, refuse("glob", "glob %q reads more than %d directory entries", pat, globEntryBudget)
	}
	return names, nil
}

func hasMeta(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '*', '?', '[':
			return true
		}
	}
	return false
}

// wordText returns a word's literal value, the same value as a
// filepath.Match pattern (quoted parts escaped), and whether it has an
// unquoted glob character.
func wordText(w *syntax.Word) (lit, pat string, glob bool, r *Refusal) {
	var lb, pb strings.Builder
	quote := func(s string) {
		lb.WriteString(s)
		for _, c := range []byte(s) {
			if c == '*' || c == '?' || c == '[' || c == ']' || c == '\\' {
				pb.WriteByte('\\')
			}
			pb.WriteByte(c)
		}
	}
	for i, part := range w.Parts {
		switch p := part.(type) {
		case *syntax.Lit:
			s := p.Value
			if i == 0 && strings.HasPrefix(s, "~") {
				return "", "", false, refuse("expansion", "tilde expansion is not allowed; write the path")
			}
			if braceLike(s) {
				return "", "", false, refuse("expansion", "brace expansion is not allowed; write each word")
			}
			for j := 0; j < len(s); j++ {
				c := s[j]
				switch {
				case c == '\\':
					if j+1 < len(s) {
						j++
						if s[j] == '\n' {
							continue
						}
						quote(s[j : j+1])
					}
				case c == '*' || c == '?':
					glob = true
					lb.WriteByte(c)
					pb.WriteByte(c)
				case c == '[':
					glob = true
					lb.WriteByte(c)
					pb.WriteByte(c)
					if j+1 < len(s) && s[j+1] == '!' {
						j++
						lb.WriteByte('!')
						pb.WriteByte('^')
					}
				default:
					lb.WriteByte(c)
					pb.WriteByte(c)
				}
			}
		case *syntax.SglQuoted:
			if p.Dollar {
				return "", "", false, refuse("expansion", "$'...' quoting is not allowed")
			}
			quote(p.Value)
		case *syntax.DblQuoted:
			if p.Dollar {
				return "", "", false, refuse("expansion", "$\"...\" quoting is not allowed")
			}
			for _, dp := range p.Parts {
				l, ok := dp.(*syntax.Lit)
				if !ok {
					return "", "", false, partRefusal(dp)
				}
				s := l.Value
				var b strings.Builder
				for j := 0; j < len(s); j++ {
					if s[j] == '\\' && j+1 < len(s) && strings.IndexByte("$`\"\\\n", s[j+1]) >= 0 {
						j++
						if s[j] == '\n' {
							continue
						}
					}
					b.WriteByte(s[j])
				}
				quote(b.String())
			}
		default:
			return "", "", false, partRefusal(part)
		}
	}
	return lb.String(), pb.String(), glob, nil
}

func partRefusal(p syntax.WordPart) *Refusal {
	switch p := p.(type) {
	case *syntax.CmdSubst:
		return refuse("substitution", "command substitution $(...) or `...` is not allowed")
	case *syntax.ProcSubst:
		return refuse("substitution", "process substitution <(...) >(...) is not allowed")
	case *syntax.ParamExp:
		return refuse("expansion", "variable expansion $%s is not allowed", paramName(p))
	case *syntax.ArithmExp:
		return refuse("expansion", "arithmetic expansion $((...)) is not allowed")
	case *syntax.ExtGlob:
		return refuse("glob", "extended globs are not allowed")
	case *syntax.BraceExp:
		return refuse("expansion", "brace expansion is not allowed")
	default:
		return refuse("syntax", "%T in a word is not allowed", p)
	}
}

func paramName(p *syntax.ParamExp) string {
	if p.Param != nil {
		return p.Param.Value
	}
	return "{...}"
}

// braceLike reports an unquoted {a,b} or {1..3}, which bash would expand.
func braceLike(s string) bool {
	open := -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '{':
			open = i
		case '}':
			if open >= 0 {
				in := s[open+1 : i]
				if strings.Contains(in, ",") || strings.Contains(in, "..") {
					return true
				}
			}
		}
	}
	return false
}
