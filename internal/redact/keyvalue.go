package redact

import "strings"

// A key-value secret is a value after a name that says it is secret:
// password=x, "client_secret": "x", token: x, --password x, DB_PASSWORD=x,
// Authorization: Bearer x, Cookie: a=x. The scan finds every identifier
// holding one of the trigger words, decides from its components whether
// it names a secret, then reads the separator and the value the way the
// surrounding syntax (JSON, YAML, env, ini, command line, HTTP header,
// XML) delimits it.

var kvTriggers = []string{"pass", "pwd", "secret", "token", "key", "auth", "cookie", "psk"}

// isIdent is a byte of a key name: letters, digits, '_', '.', '-'.
func isIdent(c byte) bool { return isAlnum(c) || c == '_' || c == '.' || c == '-' }

// keyAt handles the identifier holding the trigger word s[i:i+n]. Each
// identifier is handled once, however many trigger words it holds.
func (r *redactor) keyAt(i, n int) int {
	s := r.s
	a, b := i, i+n
	for a > 0 && isIdent(s[a-1]) {
		a--
	}
	for b < len(s) && isIdent(s[b]) {
		b++
	}
	// A run longer than any key name is data (base64, a hash list), and
	// skipping it bounds the work per identifier.
	if a >= r.keysDone && b-a <= maxKeyName {
		r.keysDone = b
		r.keyValue(a, b)
	}
	return b
}

const maxKeyName = 256

type kind uint8

const (
	kindNone kind = iota
	// kindSecret: password, secret, token, passphrase, psk, pass.
	kindSecret
	// kindKey: api_key, private_key... A path value names a key file.
	kindKey
	// kindPwd: pwd. PWD=/root is the working directory, not a password.
	kindPwd
	kindAuthorization
	kindCookie
	kindSetCookie
)

// keyValue handles the identifier s[a:b].
func (r *redactor) keyValue(a, b int) {
	s := r.s
	// A JSON-escaped newline or tab before the name ("...\nDB_PASSWORD=x")
	// is not part of it.
	if a > 0 && s[a-1] == '\\' && strings.IndexByte("ntr", s[a]) >= 0 {
		a++
	}
	// A path component (/run/secrets/token, C:\keys) is not a key.
	if a > 0 && (s[a-1] == '/' || s[a-1] == '\\') {
		return
	}
	dashes := 0
	for a+dashes < b && s[a+dashes] == '-' {
		dashes++
	}
	flag := dashes == 1 || dashes == 2
	name, lname := s[a+dashes:b], r.lower[a+dashes:b]
	k, bareColon := classify(name, lname)
	if k == kindNone {
		return
	}
	n := len(s)
	p := b
	// The name may be quoted: "password", 'password', \"password\".
	quoted := false
	var before byte
	if a > 0 {
		before = s[a-1]
	}
	switch {
	case before == '"' && a >= 2 && s[a-2] == '\\' && strings.HasPrefix(s[p:], `\"`):
		quoted, p = true, p+2
	case (before == '"' || before == '\'') && p < n && s[p] == before:
		quoted, p = true, p+1
	case before == '<' && p < n && s[p] == '>':
		// <password>x</password>
		e := p + 1
		for e < n && s[e] != '<' && s[e] != '\n' {
			e++
		}
		r.addValue(k, p+1, e)
		return
	}
	// A name inside a quoted string ("DB_PASSWORD=x y", 'X-Token: x y')
	// bounds its value by that string.
	var ctx string
	if !quoted && (before == '"' || before == '\'') {
		ctx = string(before)
		if before == '"' && a >= 2 && s[a-2] == '\\' {
			ctx = `\"`
		}
	}
	atLineStart := r.atLineStart(a)
	sp := p
	for p < n && (s[p] == ' ' || s[p] == '\t') {
		p++
	}
	spaced := p > sp
	if p >= n {
		return
	}
	skip := func(p int) int {
		for p < n && (s[p] == ' ' || s[p] == '\t') {
			p++
		}
		return p
	}
	switch {
	case s[p] == '=' && !strings.HasPrefix(s[p:], "=="):
		v := p + 1
		if strings.HasPrefix(s[p:], "=>") {
			v++
		}
		v = skip(v)
		// "password = my phrase" at the start of an ini line runs to the
		// end of the line; env, query and flag values end at a delimiter.
		r.value(k, v, valueOpts{json: quoted, rest: atLineStart && spaced && !quoted, ctx: ctx})
	case s[p] == ':' && !strings.HasPrefix(s[p:], "::") && !strings.HasPrefix(s[p:], ":="):
		v := p + 1
		switch {
		case quoted:
			v = skip(v)
		case spaced:
			// "Password expires : never" (chage -l) is a table, not a key.
			return
		case bareColon:
			// "passwd: files" (nsswitch.conf), "PASS: test".
			return
		case v < n && (s[v] == ' ' || s[v] == '\t'):
			v = skip(v)
		case k == kindAuthorization || k == kindCookie || k == kindSetCookie:
			// Authorization:Bearer x as ps shows a curl -H argument.
		default:
			// sshd:auth, user:pass (handled as a URL), a:b:c tables.
			return
		}
		r.value(k, v, valueOpts{json: quoted, rest: atLineStart && !quoted, ctx: ctx})
	case flag && (spaced || s[p] == 0) && (k == kindSecret || k == kindKey || k == kindPwd):
		// --password x; a NUL separates arguments in /proc/PID/cmdline.
		for p < n && isBlank(s[p]) {
			p++
		}
		if p < n && s[p] != '-' {
			r.value(k, p, valueOpts{ctx: ctx})
		}
	case spaced && !flag && k == kindSecret && (s[p] == '\'' || s[p] == '"'):
		// SQL: WITH PASSWORD 'x'.
		r.value(k, p, valueOpts{})
	case spaced && !flag && spaceKeys[name] && (atLineStart || r.netrcLine(a)) && !pamControl(s[p:]):
		// netrc "password x", redis.conf "requirepass x".
		r.value(k, p, valueOpts{})
	}
}

// spaceKeys are config keys whose value follows after blanks, in lower
// case as those formats write them.
var spaceKeys = map[string]bool{"password": true, "passwd": true, "requirepass": true, "masterauth": true}

// pamControl reports a PAM control field ("password requisite
// pam_pwquality.so", "password [success=1 default=ignore] pam_unix.so").
func pamControl(v string) bool {
	if strings.HasPrefix(v, "[") {
		return true
	}
	for _, w := range []string{"required", "requisite", "sufficient", "optional", "include", "substack"} {
		if strings.HasPrefix(v, w) && (len(v) == len(w) || isSpace(v[len(w)])) {
			return true
		}
	}
	return false
}

// atLineStart reports whether only indentation and list, quote or diff
// markers (or "export ") precede a on its line: a YAML key, an HTTP
// header in curl -v output, a config line. It looks back only over those
// bytes, so it costs nothing per key on a long line.
func (r *redactor) atLineStart(a int) bool {
	s := r.s
	j := a - 1
	for j >= 0 && !isEOL(s[j]) && (isBlank(s[j]) || strings.IndexByte("-<>#*+|", s[j]) >= 0) {
		j--
	}
	if j < 0 || isEOL(s[j]) {
		return true
	}
	const export = "export"
	e := j + 1 - len(export)
	return e >= 0 && s[e:j+1] == export && (e == 0 || isEOL(s[e-1]))
}

// netrcLine reports whether the line holding a is a .netrc entry.
func (r *redactor) netrcLine(a int) bool {
	s := r.s
	ls := r.bol(a)
	for ls < a && isBlank(s[ls]) {
		ls++
	}
	return strings.HasPrefix(s[ls:a], "machine ") || strings.HasPrefix(s[ls:a], "default ")
}

type valueOpts struct {
	// json: the name was quoted, so '}' and ']' end a bare value.
	json bool
	// rest: the value runs to the end of the line (YAML, headers, ini).
	rest bool
	// ctx: the quote the name sits inside, which also ends the value.
	ctx string
}

// value finds the value starting at v and redacts it.
func (r *redactor) value(k kind, v int, o valueOpts) {
	s := r.s
	n := len(s)
	if v >= n || s[v] == '\n' || s[v] == '\r' || s[v] == 0 {
		return
	}
	end := r.eol(v)
	if strings.HasPrefix(s[v:], Marker) {
		r.add(v, v+len(Marker))
		return
	}
	switch k {
	case kindAuthorization:
		a, b := r.region(v, end, o.ctx)
		r.authorization(a, b)
		return
	case kindCookie, kindSetCookie:
		a, b := r.region(v, end, o.ctx)
		r.cookie(k, a, b)
		return
	}
	switch c := s[v]; {
	case c == '"' || c == '\'' || c == '`':
		e := closingQuote(s, v+1, end, c)
		if e < 0 {
			// Cut off before its closing quote: the rest of the line.
			e = end
		}
		r.addValue(k, v+1, e)
		return
	case strings.HasPrefix(s[v:], `\"`):
		e := strings.Index(s[v+2:end], `\"`)
		if e < 0 {
			e = end - v - 2
		}
		r.addValue(k, v+2, v+2+e)
		return
	}
	if o.json && (s[v] == '{' || s[v] == '[') {
		// A nested object or list: its own keys say what is secret.
		return
	}
	if o.ctx != "" {
		if e := closingCtx(s, v, end, o.ctx); e >= 0 {
			r.addValue(k, v, e)
			return
		}
	}
	if o.rest {
		a, b := trimSpan(s, v, end)
		if blockScalar(s[a:b]) {
			r.yamlBlock(v, end)
			return
		}
		r.addValue(k, a, b)
		return
	}
	e := v
	for e < n {
		c := s[e]
		if isSpace(c) || strings.IndexByte("\"'`&;,", c) >= 0 ||
			(o.json && (c == '}' || c == ']')) ||
			(c == '\\' && e+1 < n && strings.IndexByte(`"'nrt`, s[e+1]) >= 0) {
			break
		}
		e++
	}
	r.addValue(k, v, e)
}

// blockScalar reports a YAML block scalar header: |, >, |-, >+, |2.
func blockScalar(v string) bool {
	if v == "" || (v[0] != '|' && v[0] != '>') {
		return false
	}
	for i := 1; i < len(v); i++ {
		if v[i] != '-' && v[i] != '+' && !isDigit(v[i]) {
			return false
		}
	}
	return true
}

// yamlBlock redacts the lines of a block scalar whose header ends the
// line at end: those indented deeper than the key's line, and blank
// lines between them.
func (r *redactor) yamlBlock(v, end int) {
	s := r.s
	ls := r.bol(v)
	indent := 0
	for ls+indent < v && (s[ls+indent] == ' ' || s[ls+indent] == '-') {
		indent++
	}
	start, last := -1, -1
	for p := end; p < len(s) && (s[p] == '\n' || s[p] == '\r'); {
		q := p + 1
		if s[p] == '\r' && q < len(s) && s[q] == '\n' {
			q++
		}
		d := 0
		for q+d < len(s) && s[q+d] == ' ' {
			d++
		}
		e := lineEnd(s, q)
		switch {
		case q+d == e:
			// blank: belongs to the block if more follows
		case d > indent:
			if start < 0 {
				start = q + d
			}
			last = e
		default:
			p = len(s)
			continue
		}
		p = e
	}
	if start >= 0 {
		r.add(start, last)
	}
}

// addValue redacts s[a:b] unless it is not a secret: empty, a boolean or
// null, or a path where the name is a key's or the working directory.
func (r *redactor) addValue(k kind, a, b int) {
	if a >= b {
		return
	}
	v := r.lower[a:b]
	switch v {
	case "null", "nil", "none", "true", "false", "yes", "no", "undefined":
		return
	}
	if (k == kindKey || k == kindPwd) && (v[0] == '/' || strings.HasPrefix(v, "~/") || strings.HasPrefix(v, "./")) {
		return
	}
	if codeExpr(v) {
		return
	}
	r.add(a, b)
}

// codeExpr reports a source expression that reads a secret instead of
// holding it, as a traceback quotes it: config["token"],
// os.environ.get("DB_PASSWORD"), getpass().
func codeExpr(v string) bool {
	i := 0
	for i < len(v) && (isAlnum(v[i]) || v[i] == '_' || v[i] == '.') {
		i++
	}
	if i == 0 || isDigit(v[0]) || i+1 >= len(v) {
		return false
	}
	switch v[i : i+2] {
	case `("`, `('`, `()`, `["`, `['`:
		return true
	}
	return false
}

// region is where a header value ends: its closing quote, the quote
// the header sits in, or the end of the line.
func (r *redactor) region(v, end int, ctx string) (int, int) {
	s := r.s
	if c := s[v]; c == '"' || c == '\'' {
		e := closingQuote(s, v+1, end, c)
		if e < 0 {
			e = end
		}
		return v + 1, e
	}
	if ctx != "" {
		if e := closingCtx(s, v, end, ctx); e >= 0 {
			end = e
		}
	}
	return trimSpan(s, v, end)
}

// closingQuote finds the quote c that closes a string starting at i on a
// line ending at end; in double quotes a backslash escapes.
func closingQuote(s string, i, end int, c byte) int {
	for ; i < end; i++ {
		switch s[i] {
		case c:
			return i
		case '\\':
			if c == '"' {
				i++
			}
		}
	}
	return -1
}

func closingCtx(s string, v, end int, ctx string) int {
	if ctx == `\"` {
		if e := strings.Index(s[v:end], ctx); e >= 0 {
			return v + e
		}
		return -1
	}
	return closingQuote(s, v, end, ctx[0])
}

// Authorization schemes whose credential is one token; after any other
// scheme (Digest, AWS4-HMAC-SHA256) the whole rest is credentials.
var oneTokenSchemes = set("bearer", "basic", "token", "apikey", "dpop")

var schemes = set("bearer", "basic", "token", "apikey", "dpop", "oauth", "digest", "negotiate",
	"ntlm", "hoba", "mutual", "aws4-hmac-sha256", "sharedkey", "gssapi", "vapid", "scram-sha-256")

// authorization redacts an Authorization header value in [a, b), keeping
// the scheme.
func (r *redactor) authorization(a, b int) {
	s := r.s
	if a >= b {
		return
	}
	w := a
	for w < b && !isSpace(s[w]) {
		w++
	}
	scheme := r.lower[a:w]
	if !schemes[scheme] {
		r.add(a, b)
		return
	}
	if w == b {
		return
	}
	c := w
	for c < b && isSpace(s[c]) {
		c++
	}
	if !oneTokenSchemes[scheme] {
		r.add(c, b)
		return
	}
	e := c
	for e < b && !isSpace(s[e]) && s[e] != ',' {
		e++
	}
	r.add(c, e)
}

// cookie redacts cookie values in [a, b): every pair of a Cookie header,
// the first pair of a Set-Cookie header (the rest are attributes).
func (r *redactor) cookie(k kind, a, b int) {
	s := r.s
	if a < r.cookieUpTo {
		// Inside a value already handled ("Cookie: a=Cookie: b"): its
		// pairs were redacted with that one.
		return
	}
	r.cookieUpTo = b
	for a < b {
		e := a + strings.IndexByte(s[a:b], ';')
		if e < a {
			e = b
		}
		pa, pb := trimSpan(s, a, e)
		if eq := strings.IndexByte(s[pa:pb], '='); eq >= 0 {
			va, vb := trimSpan(s, pa+eq+1, pb)
			r.add(va, vb)
		} else {
			r.add(pa, pb)
		}
		if k == kindSetCookie {
			r.cookieUpTo = e
			return
		}
		a = e + 1
	}
}

// classify decides from a name's components whether it names a secret.
// bareColon is set for names that are common words before a colon
// ("passwd: files" in nsswitch.conf, "PASS: test"), which then need a
// quoted key to count.
func classify(name, lname string) (k kind, bareColon bool) {
	switch lname {
	case "authorization", "proxy-authorization", "http_authorization":
		return kindAuthorization, false
	case "cookie":
		return kindCookie, false
	case "set-cookie":
		return kindSetCookie, false
	}
	env := isEnvName(name)
	if env && strings.HasPrefix(name, "CONFIG_") {
		// Kernel configuration: CONFIG_SECRETMEM=y, CONFIG_MODULE_SIG_KEY=...
		return kindNone, false
	}
	var buf [16]string
	comps := components(name, lname, buf[:0])
	last := -1
	for i := range comps {
		ck := compKind(comps, i, env)
		if ck == kindNone {
			continue
		}
		last = i
		if k == kindNone || ck == kindSecret || (ck == kindKey && k == kindPwd) {
			k = ck
		}
	}
	if last < 0 {
		return kindNone, false
	}
	for _, c := range comps[last+1:] {
		if notSecretSuffix[c] {
			return kindNone, false
		}
	}
	bareColon = len(comps) == 1 && (comps[0] == "pass" || comps[0] == "passwd")
	return k, bareColon
}

func compKind(comps []string, i int, env bool) kind {
	c := comps[i]
	last := i == len(comps)-1
	switch {
	case strings.Contains(c, "password") || strings.Contains(c, "passwd") || strings.Contains(c, "passphrase"):
		return kindSecret
	case c == "secret" || (strings.HasSuffix(c, "secret") && c != "libsecret"):
		// client_secret, clientSecret, JWTSECRET; not libsecret-common or
		// python3-secretstorage as dpkg -S prints them.
		return kindSecret
	case strings.HasSuffix(c, "token"):
		return kindSecret
	case c == "requirepass" || c == "masterauth":
		return kindSecret
	case fusedKeys[c]:
		return kindKey
	case c == "key" && i > 0 && keyQualifiers[comps[i-1]]:
		return kindKey
	case c == "key" && env && last && i > 0 && !publicKeys[comps[i-1]]:
		// Environment names: STRIPE_KEY, ENCRYPTION_KEY...
		return kindKey
	// Short words name a secret only at the end: db_pass, wpa_psk,
	// MYSQL_PWD, but not bridge-nf-pass-vlan-input-dev.
	case last && (c == "pass" || c == "psk"):
		return kindSecret
	case last && c == "pwd":
		return kindPwd
	case last && c == "auth" && (len(comps) == 1 || env):
		// Docker's config.json "auth", REDISCLI_AUTH.
		return kindSecret
	}
	return kindNone
}

var fusedKeys = set("apikey", "accesskey", "privatekey", "secretkey", "secretaccesskey", "signingkey", "encryptionkey",
	"masterkey", "sessionkey", "clientkey", "authkey", "licensekey", "subscriptionkey", "accountkey",
	"sharedkey", "hmackey")

// keyQualifiers make "<q>_key" a secret key's name.
var keyQualifiers = set("api", "access", "secret", "private", "signing", "encryption", "encrypt",
	"decrypt", "master", "session", "client", "auth", "license", "subscription", "account", "app",
	"shared", "hmac", "storage", "sas", "jwt", "webhook", "cookie")

// publicKeys qualify an environment *_KEY that is not secret.
var publicKeys = set("public", "pub", "gpg", "primary", "foreign", "sort", "partition", "routing", "cache",
	"lookup", "idempotency", "group", "map", "index", "row", "column", "dedup", "shard")

// notSecretSuffix after the secret word makes the name describe the
// secret instead of holding it: token_file, password_min_length,
// token_uri, api_key_env, systemd-ask-password-console.service,
// token.json.
var notSecretSuffix = set("file", "files", "path", "paths", "dir", "directory", "folder",
	"url", "uri", "endpoint", "host", "hostname", "server", "port",
	"ttl", "expiry", "expires", "expire", "expiration", "expired", "lifetime", "age", "timeout", "interval",
	"length", "len", "size", "count", "min", "max", "limit",
	"type", "kind", "mode", "policy", "enabled", "enable", "disabled", "disable", "required", "require",
	"name", "names", "env", "var", "format", "algorithm", "algo", "method", "header", "prefix", "suffix",
	"source", "location", "command", "cmd", "helper", "program", "prompt", "change", "changed", "status",
	"sock", "socket", "service", "timer", "mount", "target", "slice", "scope", "device",
	"conf", "cfg", "config", "json", "yaml", "yml", "toml", "txt", "pem", "crt", "ini", "log", "pid",
	"lock", "db", "bak", "gpg", "asc", "csv", "xml", "so", "py", "sh")

func set(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// isEnvName reports an environment-style name: upper case, digits and '_'.
func isEnvName(name string) bool {
	if name == "" || !isUpper(name[0]) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isUpper(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

// components splits a name at '_', '.', '-' and camelCase boundaries
// (keyStorePassword, APIKey, OAuth2Token) and returns lowered parts,
// sliced from lname.
func components(name, lname string, out []string) []string {
	start := 0
	flush := func(end int) {
		if end > start {
			out = append(out, lname[start:end])
		}
	}
	env := isEnvName(name)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || c == '.' || c == '-' {
			flush(i)
			start = i + 1
			continue
		}
		if env || i == start || !isUpper(c) {
			continue
		}
		p := name[i-1]
		if isLower(p) || isDigit(p) || (isUpper(p) && i+1 < len(name) && isLower(name[i+1])) {
			flush(i)
			start = i
		}
	}
	flush(len(name))
	return out
}
