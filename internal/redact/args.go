package redact

import "strings"

// Short flags are passwords only for the program that defines them: -p is
// a port to ssh and a password to mysql. So these recognisers look at the
// arguments after a program's name, to the end of its line.

type progRule struct {
	name string
	fn   func(r *redactor, args []arg)
}

var progRules = []progRule{
	{"mysql", mysqlArgs},
	{"mariadb", mysqlArgs},
	{"sshpass", sshpassArgs},
	{"curl", userArgs},
	{"wget", userArgs},
	{"redis-cli", redisArgs},
	{"smbclient", smbArgs},
	{"openssl", opensslArgs},
}

// arg is one argument's extent, quotes included.
type arg struct{ a, b int }

func (r *redactor) programAt(p *progRule, i int) int {
	s := r.s
	if i > 0 && !isSpace(s[i-1]) && strings.IndexByte("/\"'(=", s[i-1]) < 0 {
		return i + len(p.name)
	}
	end := i + len(p.name)
	for end < len(s) && s[end] != '\n' {
		end++
	}
	p.fn(r, r.splitArgs(i, end))
	return end
}

// splitArgs splits s[i:end] at blanks outside quotes.
func (r *redactor) splitArgs(i, end int) []arg {
	s := r.s
	var out []arg
	for i < end {
		for i < end && isBlank(s[i]) {
			i++
		}
		if i == end {
			break
		}
		a := i
		var q byte
		for i < end && (q != 0 || !isBlank(s[i])) {
			switch c := s[i]; {
			case q == 0 && (c == '"' || c == '\''):
				q = c
			case c == q:
				q = 0
			}
			i++
		}
		out = append(out, arg{a, i})
	}
	return out
}

// unquote narrows s[a:b] to the inside of the quotes around it, if it is
// quoted as a whole.
func (r *redactor) unquote(a, b int) (int, int) {
	s := r.s
	if b-a >= 2 && (s[a] == '"' || s[a] == '\'') && s[b-1] == s[a] {
		return a + 1, b - 1
	}
	return a, b
}

// secret redacts s[a:b] without the quotes around it. A value quoted in
// pieces (-p'a'b) or left open goes whole, quotes and all.
func (r *redactor) secret(a, b int) {
	a, b = r.unquote(a, b)
	r.add(trimSpan(r.s, a, b))
}

// after redacts what follows the first sep in s[a:b] (user:password,
// user%password).
func (r *redactor) after(a, b int, sep byte) {
	a, b = r.unquote(a, b)
	if i := strings.IndexByte(r.s[a:b], sep); i >= 0 {
		r.secret(a+i+1, b)
	}
}

// mysqlArgs: -pSECRET and -p'SECRET' (a lone -p prompts; --password=x is
// a key-value form).
func mysqlArgs(r *redactor, args []arg) {
	for _, g := range args {
		if t := r.s[g.a:g.b]; len(t) > 2 && strings.HasPrefix(t, "-p") {
			r.secret(g.a+2, g.b)
		}
	}
}

// sshpassArgs: -p SECRET, -pSECRET.
func sshpassArgs(r *redactor, args []arg) {
	for i, g := range args {
		t := r.s[g.a:g.b]
		switch {
		case t == "-p" && i+1 < len(args):
			r.secret(args[i+1].a, args[i+1].b)
		case len(t) > 2 && strings.HasPrefix(t, "-p"):
			r.secret(g.a+2, g.b)
		}
	}
}

// userArgs: curl and wget -u/--user/--proxy-user user:SECRET.
func userArgs(r *redactor, args []arg) {
	for i, g := range args {
		t := r.s[g.a:g.b]
		switch {
		case (t == "-u" || t == "-U" || t == "--user" || t == "--proxy-user") && i+1 < len(args):
			r.after(args[i+1].a, args[i+1].b, ':')
		case strings.HasPrefix(t, "--user=") || strings.HasPrefix(t, "--proxy-user="):
			r.after(g.a+strings.IndexByte(t, '=')+1, g.b, ':')
		case len(t) > 2 && strings.HasPrefix(t, "-u"):
			r.after(g.a+2, g.b, ':')
		}
	}
}

// redisArgs: redis-cli -a SECRET.
func redisArgs(r *redactor, args []arg) {
	for i, g := range args {
		if r.s[g.a:g.b] == "-a" && i+1 < len(args) {
			r.secret(args[i+1].a, args[i+1].b)
		}
	}
}

// smbArgs: smbclient -U user%SECRET.
func smbArgs(r *redactor, args []arg) {
	for i, g := range args {
		t := r.s[g.a:g.b]
		switch {
		case (t == "-U" || t == "--user") && i+1 < len(args):
			r.after(args[i+1].a, args[i+1].b, '%')
		case strings.HasPrefix(t, "--user="):
			r.after(g.a+len("--user="), g.b, '%')
		}
	}
}

// opensslArgs: pass:SECRET pass phrase arguments, enc -k SECRET.
func opensslArgs(r *redactor, args []arg) {
	for i, g := range args {
		t := r.s[g.a:g.b]
		switch {
		case strings.HasPrefix(t, "pass:"):
			r.secret(g.a+len("pass:"), g.b)
		case t == "-k" && i+1 < len(args):
			r.secret(args[i+1].a, args[i+1].b)
		}
	}
}

// identifiedAt redacts SQL account passwords: IDENTIFIED BY 'x',
// IDENTIFIED WITH plugin BY 'x', IDENTIFIED WITH plugin AS 'hash'.
func (r *redactor) identifiedAt(i int) int {
	s, low := r.s, r.lower
	p := i + len("identified")
	word := func() (int, int) {
		for p < len(s) && (s[p] == ' ' || s[p] == '\t') {
			p++
		}
		a := p
		for p < len(s) && !isSpace(s[p]) && s[p] != '\'' && s[p] != '"' {
			p++
		}
		return a, p
	}
	a, b := word()
	if low[a:b] == "with" {
		word()
		a, b = word()
	}
	if w := low[a:b]; w != "by" && w != "as" {
		return p
	}
	for p < len(s) && (s[p] == ' ' || s[p] == '\t') {
		p++
	}
	if p < len(s) && (s[p] == '\'' || s[p] == '"') {
		end := r.eol(p + 1)
		e := closingQuote(s, p+1, end, s[p])
		if e < 0 {
			e = end
		}
		r.add(p+1, e)
		return e
	}
	return p
}
