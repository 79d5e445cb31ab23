package safeexec

import (
	"regexp"
	"strings"
)

// checkSed refuses in-place editing and any script that writes files or
// runs commands. The script is parsed, command by command, because sed's
// w, W and e commands and the s///w and s///e flags hide inside it.
func checkSed(args []string) *Refusal {
	o := opts{prog: "sed", flags: "nErsuz", vals: "el", maxPos: -1,
		long:     []string{"quiet", "silent", "regexp-extended", "separate", "unbuffered", "null-data", "posix", "debug", "sandbox", "follow-symlinks"},
		longVals: []string{"expression", "line-length"},
		deny: map[string]string{"-i": "it edits files in place", "--in-place": "it edits files in place",
			"-f": "a script file cannot be checked", "--file": "a script file cannot be checked"}}
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	var scripts []string
	for _, f := range p.flags {
		if f.name == "-e" || f.name == "--expression" {
			scripts = append(scripts, f.val)
		}
	}
	if len(scripts) == 0 {
		if len(p.pos) == 0 {
			return refuse("sed", "sed needs a script")
		}
		scripts = append(scripts, p.pos[0])
	}
	return sedScript(strings.Join(scripts, "\n"))
}

func sedScript(s string) *Refusal {
	bad := func(format string, a ...any) *Refusal { return refuse("sed", "sed script: "+format, a...) }
	i := 0
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	toEOL := func() {
		for i < len(s) && s[i] != '\n' {
			i++
		}
	}
	// delimited reads up to an unescaped delim, starting after the opening one.
	delimited := func(d byte) bool {
		for i < len(s) {
			c := s[i]
			if c == '\\' {
				i += 2
				continue
			}
			if c == '\n' && d != '\n' {
				return false
			}
			i++
			if c == d {
				return true
			}
		}
		return false
	}
	address := func() bool {
		if i >= len(s) {
			return true
		}
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '~') {
				i++
			}
		case c == '$':
			i++
		case c == '/':
			i++
			if !delimited('/') {
				return false
			}
			for i < len(s) && (s[i] == 'I' || s[i] == 'M') {
				i++
			}
		case c == '\\':
			if i+1 >= len(s) {
				return false
			}
			d := s[i+1]
			i += 2
			if !delimited(d) {
				return false
			}
			for i < len(s) && (s[i] == 'I' || s[i] == 'M') {
				i++
			}
		case c == '+' || c == '~':
			i++
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i++
			}
		}
		return true
	}
	for i < len(s) {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == ';') {
			i++
		}
		if i >= len(s) {
			break
		}
		if !address() {
			return bad("unterminated address")
		}
		skipSpace()
		if i < len(s) && s[i] == ',' {
			i++
			skipSpace()
			if !address() {
				return bad("unterminated address")
			}
		}
		skipSpace()
		for i < len(s) && s[i] == '!' {
			i++
			skipSpace()
		}
		if i >= len(s) {
			return bad("missing command")
		}
		c := s[i]
		i++
		if c == '{' {
			continue // a block's first command may follow at once: 1{p;q}
		}
		switch c {
		case '}', '=', 'd', 'D', 'g', 'G', 'h', 'H', 'n', 'N', 'p', 'P', 'x', 'z', 'F':
		case '#':
			toEOL()
		case ':', 'b', 't', 'T', 'v':
			for i < len(s) && s[i] != '\n' && s[i] != ';' && s[i] != '}' {
				i++
			}
		case 'l', 'L', 'q', 'Q':
			skipSpace()
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i++
			}
		case 'a', 'i', 'c':
			// Text to the end of the line, with backslash continuations.
			for i < len(s) && s[i] != '\n' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
		case 'r', 'R':
			toEOL() // reading a file is allowed
		case 'w', 'W':
			return bad("the %c command writes a file", c)
		case 'e':
			return bad("the e command runs a shell command")
		case 's':
			if i >= len(s) || s[i] == '\n' || s[i] == '\\' {
				return bad("bad s delimiter")
			}
			d := s[i]
			i++
			if !delimited(d) || !delimited(d) {
				return bad("unterminated s command")
			}
			for i < len(s) {
				f := s[i]
				switch {
				case f == 'g' || f == 'p' || f == 'i' || f == 'I' || f == 'm' || f == 'M' || f >= '0' && f <= '9':
					i++
					continue
				case f == 'w':
					return bad("the s///w flag writes a file")
				case f == 'e':
					return bad("the s///e flag runs a shell command")
				}
				break
			}
		case 'y':
			if i >= len(s) || s[i] == '\n' || s[i] == '\\' {
				return bad("bad y delimiter")
			}
			d := s[i]
			i++
			if !delimited(d) || !delimited(d) {
				return bad("unterminated y command")
			}
		default:
			return bad("unknown or disallowed command %q", c)
		}
		skipSpace()
		if i < len(s) && s[i] == '#' {
			toEOL()
		}
		if i < len(s) && s[i] != ';' && s[i] != '\n' && s[i] != '}' {
			return bad("unexpected %q after a command", s[i])
		}
	}
	return nil
}

// checkAwk refuses awk programs that run commands or write files: the
// program is tokenised (strings, regexes and comments skipped) and system,
// pipes, getline from commands, print/printf redirections, @load/@include
// and gawk's /inet special files are refused.
func checkAwk(args []string) *Refusal {
	o := opts{prog: "awk", flags: "bcPrnSst", vals: "Fve", maxPos: -1,
		long:     []string{"characters-as-bytes", "traditional", "posix", "re-interval", "non-decimal-data", "sandbox", "copyright", "version", "use-lc-numeric", "lint"},
		longVals: []string{"field-separator", "assign", "source"},
		deny: map[string]string{"-f": "a program file cannot be checked", "--file": "a program file cannot be checked",
			"-E": "a program file cannot be checked", "--exec": "a program file cannot be checked",
			"-i": "it loads code", "--include": "it loads code", "-l": "it loads extensions", "--load": "it loads extensions",
			"-d": "it writes a file", "--dump-variables": "it writes a file", "-p": "it writes a file", "--profile": "it writes a file",
			"-o": "it writes a file", "--pretty-print": "it writes a file", "-D": "it starts a debugger", "--debug": "it starts a debugger",
			"-W": "mawk -W options are not checked"}}
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	var progs []string
	for _, f := range p.flags {
		if f.name == "-e" || f.name == "--source" {
			progs = append(progs, f.val)
		}
	}
	if len(progs) == 0 {
		if len(p.pos) == 0 {
			return refuse("awk", "awk needs a program")
		}
		progs = append(progs, p.pos[0])
	}
	for _, prog := range progs {
		if r := awkProgram(prog); r != nil {
			return r
		}
	}
	for _, a := range p.pos {
		if strings.HasPrefix(a, "/inet") {
			return refuse("awk", "gawk /inet special files open network connections")
		}
	}
	return nil
}

var awkSystemCall = regexp.MustCompile(`\bsystem\s*\(`)

func awkProgram(s string) *Refusal {
	// Belt and braces for the tokenizer: system( anywhere, even inside what
	// looks like a string or a regex, is refused.
	if awkSystemCall.MatchString(s) {
		return refuse("awk", "awk program: system() runs commands")
	}
	budget := 16
	return awkScan(s, 0, false, 0, false, &budget)
}

// awkScan tokenises s from i. Whether / starts a regex or divides depends
// on the grammar; where the lexer cannot tell (after ")" or getline) both
// readings are scanned, so a string hidden by one reading is seen by the
// other.
func awkScan(s string, i int, inPrint bool, depth int, operand bool, budget *int) *Refusal {
	bad := func(format string, a ...any) *Refusal { return refuse("awk", "awk program: "+format, a...) }
	ambiguous := false
	for i < len(s) {
		if c := s[i]; c == '/' && ambiguous {
			*budget--
			if *budget < 0 {
				return bad("too ambiguous to check")
			}
			// The other reading only matters where it parses.
			if r := awkScan(s, i, inPrint, depth, !operand, budget); r != nil && !strings.Contains(r.Reason, "unterminated") {
				return r
			}
		}
		if c := s[i]; c != ' ' && c != '\t' {
			ambiguous = false
		}
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\\':
			i++
		case c == '\n' || c == ';' || c == '{' || c == '}':
			if c != '{' {
				inPrint = false
			}
			operand = false
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return bad("unterminated string")
			}
			if strings.HasPrefix(s[i+1:j], "/inet") {
				return bad("gawk /inet special files open network connections")
			}
			i = j + 1
			operand = true
		case c == '/' && !operand:
			j := i + 1
			inClass := false
			for j < len(s) && (s[j] != '/' || inClass) {
				switch s[j] {
				case '\\':
					j++
				case '[':
					inClass = true
				case ']':
					inClass = false
				case '\n':
					return bad("unterminated regex")
				}
				j++
			}
			if j >= len(s) {
				return bad("unterminated regex")
			}
			i = j + 1
			operand = true
		case c == '@':
			return bad("@ directives (@load, @include, indirect calls) are not allowed")
		case c == '|':
			if i+1 < len(s) && s[i+1] == '|' {
				i += 2
				operand = false
				continue
			}
			return bad("pipes (| and |&) run commands")
		case c == '>':
			if inPrint && depth == 0 {
				return bad("output redirection (> >>) writes files")
			}
			i++
			if i < len(s) && s[i] == '=' {
				i++
			}
			operand = false
		case c == '(':
			if inPrint {
				depth++
			}
			operand = false
			i++
		case c == ')' || c == ']':
			if c == ')' && inPrint && depth > 0 {
				depth--
			}
			operand = true
			ambiguous = c == ')'
			i++
		case isIdent(c):
			j := i
			for j < len(s) && (isIdent(s[j]) || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			w := s[i:j]
			i = j
			switch w {
			case "system":
				return bad("system() runs commands")
			case "print", "printf":
				inPrint, depth = true, 0
				operand = false
				continue
			case "getline":
				// "cmd" | getline is refused at the pipe; getline < file reads.
			}
			operand = !awkKeyword[w]
			ambiguous = w == "getline"
		case c >= '0' && c <= '9' || c == '.':
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == 'e' || s[i] == 'x' || s[i] >= 'a' && s[i] <= 'f' || s[i] >= 'A' && s[i] <= 'F') {
				i++
			}
			operand = true
		case c == '$':
			i++
			operand = false
		default:
			if c >= 0x80 {
				i++
				continue
			}
			operand = (c == '+' || c == '-') && i+1 < len(s) && s[i+1] == c // x++ / x--
			if operand {
				i++
			}
			i++
		}
	}
	return nil
}

var awkKeyword = map[string]bool{"in": true, "return": true, "if": true, "else": true, "while": true, "for": true, "do": true,
	"print": true, "printf": true, "case": true, "BEGIN": true, "END": true}

func isIdent(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }
