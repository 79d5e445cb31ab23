package redact

import "strings"

// privateKeyAt redacts the bodies of PEM and PGP armoured private keys:
// "-----BEGIN [TYPE ]PRIVATE KEY[ BLOCK]-----" (PKCS#8, RSA, EC, DSA,
// OPENSSH, ENCRYPTED, PGP) through "-----END ...-----". The armour lines
// stay, so the reader knows a key was there. The body may be on its own
// lines (a key file, a YAML block), on the header's line with escaped
// newlines (a GCP service-account JSON) or with spaces (a shell variable
// echoed unquoted). A key cut before its END line (head, the summariser)
// loses the body lines that are there.
func (r *redactor) privateKeyAt(i int) int {
	s := r.s
	hdrEnd, ok := pemHeader(s, i)
	if !ok {
		return i + 1
	}
	a, b := pemBody(s, hdrEnd)
	a, b = trimBody(s, a, b)
	r.add(a, b)
	return b
}

// pemHeader checks that a private key's BEGIN line starts at i and returns
// the offset after it.
func pemHeader(s string, i int) (int, bool) {
	j := i + len("-----BEGIN ")
	for j < len(s) && j-i < 64 && (isUpper(s[j]) || isDigit(s[j]) || s[j] == ' ') {
		j++
	}
	label := s[i+len("-----BEGIN ") : j]
	if !strings.HasSuffix(label, "PRIVATE KEY") && !strings.HasSuffix(label, "PRIVATE KEY BLOCK") {
		return 0, false
	}
	if !strings.HasPrefix(s[j:], "-----") {
		return 0, false
	}
	return j + len("-----"), true
}

// pemBody returns the extent of the body that follows a header ending at
// p: up to an END line, or up to the first line that cannot be part of a
// key when there is none.
func pemBody(s string, p int) (int, int) {
	q := p
	// The header's own line: base64, blanks, escaped newlines.
	for q < len(s) && s[q] != '\n' {
		switch c := s[q]; {
		case strings.HasPrefix(s[q:], "-----END "):
			return p, q
		case isBase64(c) || c == ' ' || c == '\t' || c == '\r':
			q++
		case c == '\\' && q+1 < len(s) && strings.IndexByte(`nrt/`, s[q+1]) >= 0:
			q += 2
		case strings.HasPrefix(s[q:], Marker):
			q += len(Marker)
		default:
			return p, q
		}
	}
	// Following lines: "Name: value" headers (Proc-Type, DEK-Info,
	// Version, Comment) before the first base64 line, blank lines, base64
	// lines, then END.
	headers := true
	for q < len(s) {
		ls := q + 1
		le := ls
		for le < len(s) && s[le] != '\n' {
			le++
		}
		a, b := trimSpan(s, ls, le)
		line := s[a:b]
		switch {
		case line == "":
		case strings.HasPrefix(line, "-----END "):
			return p, a
		case line == Marker:
			headers = false
		case allBase64(line):
			headers = false
		case headers && isArmorHeader(line):
		default:
			if e := strings.Index(line, "-----END "); e > 0 && allBase64(line[:e]) {
				return p, a + e
			}
			return p, q
		}
		q = le
	}
	return p, q
}

// trimBody narrows a key body past blanks and escaped newlines, so the
// lines around Marker keep their shape.
func trimBody(s string, a, b int) (int, int) {
	escape := func(i int) bool { return s[i] == '\\' && strings.IndexByte(`nrt`, s[i+1]) >= 0 }
	for a < b {
		switch {
		case isSpace(s[a]):
			a++
		case a+1 < b && escape(a):
			a += 2
		default:
			return a, trimBodyEnd(s, a, b, escape)
		}
	}
	return a, b
}

func trimBodyEnd(s string, a, b int, escape func(int) bool) int {
	for b > a {
		switch {
		case isSpace(s[b-1]):
			b--
		case b-2 >= a && escape(b-2):
			b -= 2
		default:
			return b
		}
	}
	return b
}

func isBase64(c byte) bool { return isAlnum(c) || c == '+' || c == '/' || c == '=' }

func allBase64(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isBase64(s[i]) {
			return false
		}
	}
	return true
}

// isArmorHeader matches "Name: value" with Name of letters, digits and '-'.
func isArmorHeader(line string) bool {
	i := 0
	for i < len(line) && (isAlnum(line[i]) || line[i] == '-') {
		i++
	}
	return i > 0 && isUpper(line[0]) && strings.HasPrefix(line[i:], ": ")
}
