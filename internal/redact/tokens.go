package redact

import (
	"encoding/base64"
	"strings"
)

// prefixRule is a credential format with a vendor prefix. The prefix is
// kept (ghp_[REDACTED]) so the reader still knows what kind of credential
// was there; the body goes.
type prefixRule struct {
	prefix string
	body   func(byte) bool
	// min is the shortest body; a shorter run is an ordinary word.
	min int
	// exact, when set, is the only body length: a longer run is not this
	// format.
	exact bool
	// mixed requires a digit and a letter in the body, to tell a key from
	// a hyphenated word.
	mixed bool
}

func upperDigit(c byte) bool { return isUpper(c) || isDigit(c) }
func b64url(c byte) bool     { return isAlnum(c) || c == '_' || c == '-' }
func alnumUnder(c byte) bool { return isAlnum(c) || c == '_' }
func alnumDash(c byte) bool  { return isAlnum(c) || c == '-' }
func lowerHex(c byte) bool   { return isDigit(c) || (c >= 'a' && c <= 'f') }
func cryptChar(c byte) bool {
	return isAlnum(c) || c == '.' || c == '/' || c == '$' || c == '=' || c == ',' || c == '+' || c == '-'
}

// Formats: AWS access key IDs (AKIA long-term, ASIA temporary), Google API
// keys, GitHub, GitLab, Slack, OpenAI/Anthropic-style, Stripe, npm,
// Hugging Face, Google OAuth access tokens, DigitalOcean, PyPI, NannyAPI
// static tokens, and crypt(3) password hashes as found in /etc/shadow.
var prefixRules = []prefixRule{
	{prefix: "AKIA", body: upperDigit, min: 16, exact: true},
	{prefix: "ASIA", body: upperDigit, min: 16, exact: true},
	{prefix: "AIza", body: b64url, min: 35},
	{prefix: "ghp_", body: isAlnum, min: 36},
	{prefix: "gho_", body: isAlnum, min: 36},
	{prefix: "ghu_", body: isAlnum, min: 36},
	{prefix: "ghs_", body: isAlnum, min: 36},
	{prefix: "ghr_", body: isAlnum, min: 36},
	{prefix: "github_pat_", body: alnumUnder, min: 22},
	{prefix: "glpat-", body: b64url, min: 20},
	{prefix: "xoxa-", body: alnumDash, min: 10},
	{prefix: "xoxb-", body: alnumDash, min: 10},
	{prefix: "xoxp-", body: alnumDash, min: 10},
	{prefix: "xoxr-", body: alnumDash, min: 10},
	{prefix: "xoxs-", body: alnumDash, min: 10},
	{prefix: "xoxe-", body: alnumDash, min: 10},
	{prefix: "xapp-", body: alnumDash, min: 10},
	{prefix: "sk-", body: b64url, min: 20, mixed: true},
	{prefix: "sk_live_", body: isAlnum, min: 16},
	{prefix: "sk_test_", body: isAlnum, min: 16},
	{prefix: "rk_live_", body: isAlnum, min: 16},
	{prefix: "rk_test_", body: isAlnum, min: 16},
	{prefix: "npm_", body: isAlnum, min: 36},
	{prefix: "hf_", body: isAlnum, min: 30},
	{prefix: "ya29.", body: b64url, min: 20},
	{prefix: "dop_v1_", body: lowerHex, min: 64},
	{prefix: "pypi-AgE", body: b64url, min: 50},
	{prefix: "nsk_", body: b64url, min: 16},
	{prefix: "$1$", body: cryptChar, min: 16},
	{prefix: "$2a$", body: cryptChar, min: 16},
	{prefix: "$2b$", body: cryptChar, min: 16},
	{prefix: "$2y$", body: cryptChar, min: 16},
	{prefix: "$5$", body: cryptChar, min: 16},
	{prefix: "$6$", body: cryptChar, min: 16},
	{prefix: "$7$", body: cryptChar, min: 16},
	{prefix: "$y$", body: cryptChar, min: 16},
	{prefix: "$gy$", body: cryptChar, min: 16},
	{prefix: "$argon2", body: cryptChar, min: 16},
}

func (r *redactor) prefixedTokenAt(p *prefixRule, i int) int {
	s := r.s
	a := i + len(p.prefix)
	// The byte before must not continue the token: a match inside a
	// longer identifier or base64 blob is not this format.
	if i > 0 && (b64url(s[i-1]) || s[i-1] == '$') {
		return a
	}
	b := a
	digit, letter := false, false
	for b < len(s) && p.body(s[b]) {
		digit = digit || isDigit(s[b])
		letter = letter || isUpper(s[b]) || isLower(s[b])
		b++
	}
	switch {
	case b-a < p.min,
		p.exact && (b-a != p.min || (b < len(s) && isAlnum(s[b]))),
		p.mixed && !(digit && letter):
		return a
	}
	r.add(a, b)
	return b
}

// jwtAt redacts JSON Web Tokens whole: a base64url JSON header (so "eyJ"),
// a payload and a signature, dot-separated. The signature may be empty
// (alg "none"); JWE adds two more segments.
func (r *redactor) jwtAt(i int) int {
	s := r.s
	if i > 0 && b64url(s[i-1]) {
		return i + 3
	}
	run := func(j int) int {
		for j < len(s) && b64url(s[j]) {
			j++
		}
		return j
	}
	e1 := run(i)
	if e1-i < 10 || e1 >= len(s) || s[e1] != '.' {
		return e1
	}
	e2 := run(e1 + 1)
	if e2-e1-1 < 2 || e2 >= len(s) || s[e2] != '.' {
		return e2
	}
	end := run(e2 + 1)
	for k := 0; k < 2 && end < len(s) && s[end] == '.'; k++ {
		end = run(end + 1)
	}
	r.add(i, end)
	return end
}

// urlCredentialsAt redacts the password of scheme://user:password@host.
// The user stays: which account a service connects as is a useful fact.
// The authority ends at the first '/', so a password with an unencoded
// '/' is not recognised (RFC 3986 requires it to be percent-encoded).
func (r *redactor) urlCredentialsAt(i int) int {
	s := r.s
	p := i + 3
	if i == 0 || !isAlnum(s[i-1]) {
		return p
	}
	at, e := -1, p
	for ; e < len(s); e++ {
		c := s[e]
		if isSpace(c) || strings.IndexByte("/?#\"'<>`\\", c) >= 0 {
			break
		}
		if c == '@' {
			at = e
		}
	}
	if at > p {
		if colon := strings.IndexByte(s[p:at], ':'); colon >= 0 {
			r.add(p+colon+1, at)
		}
	}
	return e
}

// bearerAt and basicAt redact credentials after the words Bearer and Basic where
// no Authorization header names them (a token pasted into a log line, a
// curl command cut by ps). The text after them must look like a
// credential, so prose ("bearer of", "basic information") stays.
func (r *redactor) bearerAt(i int) int {
	s := r.s
	a, ok := schemeWord(s, i, len("bearer"))
	if !ok {
		return i + 1
	}
	b := a
	for b < len(s) && (b64url(s[b]) || strings.IndexByte("._~+/=", s[b]) >= 0) {
		b++
	}
	if tokenLike(s[a:b]) {
		r.add(a, b)
	}
	return b
}

func (r *redactor) basicAt(i int) int {
	s := r.s
	a, ok := schemeWord(s, i, len("basic"))
	if !ok {
		return i + 1
	}
	b := a
	for b < len(s) && isBase64(s[b]) {
		b++
	}
	if b-a >= 8 && basicCredential(s[a:b]) {
		r.add(a, b)
	}
	return b
}

// schemeWord checks that the n-byte word at i stands alone and is
// followed by blanks, and returns where the credential starts.
func schemeWord(s string, i, n int) (int, bool) {
	if i > 0 && isAlnum(s[i-1]) {
		return 0, false
	}
	a := i + n
	for a < len(s) && (s[a] == ' ' || s[a] == '\t') {
		a++
	}
	return a, a > i+n
}

// tokenLike tells an opaque token from a word: long enough, and with a
// digit or mixed case.
func tokenLike(t string) bool {
	if len(t) < 8 {
		return false
	}
	digit, upper, lower := false, false, false
	for i := 0; i < len(t); i++ {
		digit = digit || isDigit(t[i])
		upper = upper || isUpper(t[i])
		lower = lower || isLower(t[i])
	}
	return digit || (upper && lower)
}

// basicCredential reports whether t is base64 of printable "user:password".
func basicCredential(t string) bool {
	raw, err := base64.StdEncoding.DecodeString(t)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(t, "="))
		if err != nil {
			return false
		}
	}
	colon := false
	for _, c := range raw {
		if c < 0x20 || c > 0x7e {
			return false
		}
		colon = colon || c == ':'
	}
	return colon
}
