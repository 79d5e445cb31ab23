package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// TokenTypeStatic marks a token.json written for a static-token
// registration: no tokens, only the agent ID (the earlier agent's marker).
const TokenTypeStatic = "static"

// Limits of what a token file may hold; a PocketBase JWT is a few
// hundred bytes, a refresh token 32 hex characters.
const (
	maxAccessToken  = 8192
	maxRefreshToken = 1024
	maxAgentID      = 256
)

// staticLifetime is how far in the future a static marker's expires_at
// lies, as the earlier agent writes it.
const staticLifetime = 100 * 365 * 24 * time.Hour

// TokenFile is token.json. The first five fields are the earlier agent's
// (§2.2 of the contract), written the same way, so either agent reads
// the other's file; the rest are this agent's additions, which the
// earlier agent's decoder ignores.
type TokenFile struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	// TokenType is "" against the real backend (it sends none), or
	// "static" for a static-token marker.
	TokenType string `json:"token_type"`
	// ExpiresAt is when the access token stops working: its JWT exp
	// here (the earlier agent wrote now+expires_in, which understates it).
	ExpiresAt time.Time `json:"expires_at"`
	AgentID   string    `json:"agent_id"`

	// RegisteredAt is when the agent registered; the refresh token dies
	// 30 days later unless renewed. Estimated is set when it was
	// inferred (from the file's birth time) for a file the earlier agent
	// wrote.
	RegisteredAt *time.Time `json:"registered_at,omitempty"`
	Estimated    bool       `json:"registered_at_estimated,omitempty"`
	// RenewedAt is the last renew-refresh-token; RefreshExpiresAt the
	// refresh token's expiry when a backend said it.
	RenewedAt        *time.Time `json:"refresh_token_renewed_at,omitempty"`
	RefreshExpiresAt *time.Time `json:"refresh_token_expires_at,omitempty"`
}

// Static reports whether the file is a static-token marker.
func (t *TokenFile) Static() bool { return t.TokenType == TokenTypeStatic }

// ParseTokenFile decodes token.json. Every problem is an error naming
// the file and what is wrong with it; nothing in the input can make it
// panic. Unknown fields are allowed: a later agent may add some.
func ParseTokenFile(data []byte, name string) (*TokenFile, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s is empty (a write was cut short?): register again with sudo nannyagent --register --force", name)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: it is not a token file", name, maxFileBytes)
	}
	// Dates are decoded one by one so that an error names its field.
	var raw struct {
		TokenFile
		ExpiresAt        json.RawMessage `json:"expires_at"`
		RegisteredAt     json.RawMessage `json:"registered_at"`
		RenewedAt        json.RawMessage `json:"refresh_token_renewed_at"`
		RefreshExpiresAt json.RawMessage `json:"refresh_token_expires_at"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s is not a token file: %s", name, describeJSONError(data, err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s is not a token file: more data after the JSON object", name)
	}
	t := raw.TokenFile
	t.RegisteredAt, t.RenewedAt, t.RefreshExpiresAt = nil, nil, nil
	for _, d := range []struct {
		key string
		raw json.RawMessage
		set func(time.Time)
	}{
		{"expires_at", raw.ExpiresAt, func(v time.Time) { t.ExpiresAt = v }},
		{"registered_at", raw.RegisteredAt, func(v time.Time) { t.RegisteredAt = &v }},
		{"refresh_token_renewed_at", raw.RenewedAt, func(v time.Time) { t.RenewedAt = &v }},
		{"refresh_token_expires_at", raw.RefreshExpiresAt, func(v time.Time) { t.RefreshExpiresAt = &v }},
	} {
		if len(d.raw) == 0 || string(d.raw) == "null" {
			continue
		}
		var v time.Time
		if err := v.UnmarshalJSON(d.raw); err != nil {
			return nil, fmt.Errorf("%s: %s is not a date: %s", name, d.key, snippet(d.raw))
		}
		d.set(v)
	}
	for _, f := range []struct {
		key, v string
		max    int
	}{
		{"access_token", t.AccessToken, maxAccessToken},
		{"refresh_token", t.RefreshToken, maxRefreshToken},
		{"agent_id", t.AgentID, maxAgentID},
		{"token_type", t.TokenType, 64},
	} {
		if err := checkTokenText(f.v, f.max); err != nil {
			return nil, fmt.Errorf("%s: %s %w", name, f.key, err)
		}
	}
	return &t, nil
}

// checkTokenText refuses what cannot be a token: it ends up in an HTTP
// header, where a control character or a space would break the request.
func checkTokenText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("is %d bytes long (at most %d)", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("has a character a token cannot have (byte %#02x at %d)", c, i)
		}
	}
	return nil
}

// describeJSONError says where the JSON went wrong, by line and column.
func describeJSONError(data []byte, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		// Offset counts the offending byte.
		line, col := position(data, syn.Offset-1)
		return fmt.Sprintf("invalid JSON at line %d, column %d: %v", line, col, syn)
	case errors.As(err, &typ):
		line, _ := position(data, typ.Offset)
		field := strings.TrimPrefix(typ.Field, "TokenFile.") // the embedded struct of ParseTokenFile
		if field == "" {
			return fmt.Sprintf("want a JSON object, found %s", typ.Value)
		}
		return fmt.Sprintf("%s on line %d: want a %s, found %s", field, line, typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "the JSON ends early (a write was cut short?)"
	}
	// time.Time's own errors ("parsing time ... as ...") and others.
	return err.Error()
}

func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// snippet quotes the start of a value for an error message.
func snippet(b []byte) string {
	const max = 40
	s := string(b)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// encodeTokenFile writes the file as the earlier agent does: two-space
// indent, no trailing newline.
func encodeTokenFile(t *TokenFile) ([]byte, error) {
	return json.MarshalIndent(t, "", "  ")
}

// stamp identifies a version of token.json on disk, so that a change
// made by another process (a new registration while the daemon runs) is
// noticed with one stat.
type stamp struct {
	ino   uint64
	size  int64
	mtime time.Time
}

func stampOf(path string) (stamp, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return stamp{}, false
	}
	s := stamp{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*unix.Stat_t); ok {
		s.ino = sys.Ino
	}
	return s, true
}

// ErrNotRegistered says there is no registration to use.
var ErrNotRegistered = errors.New("this host is not registered with NannyAPI: run sudo nannyagent --register")

// loadTokens reads token.json and, where it has no refresh token, the
// .refresh_token backup beside it (the earlier agent's recovery path).
// With neither file the error is ErrNotRegistered.
func (f files) loadTokens() (*TokenFile, stamp, error) {
	if err := f.checkDir(false); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, stamp{}, ErrNotRegistered
		}
		return nil, stamp{}, err
	}
	st, _ := stampOf(f.tokenPath)
	data, err := f.readPrivate(f.tokenPath)
	var t *TokenFile
	switch {
	case err == nil:
		if t, err = ParseTokenFile(data, f.tokenPath); err != nil {
			return nil, st, err
		}
	case errors.Is(err, fs.ErrNotExist):
		t = &TokenFile{}
	default:
		return nil, st, err
	}
	// The backup is read (and its mode checked) even when token.json
	// has the refresh token: a leaked copy is as bad as a leaked original.
	rt, err := f.readPrivate(f.refreshPath())
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(rt))
		if err := checkTokenText(tok, maxRefreshToken); err != nil {
			return nil, st, fmt.Errorf("%s: the refresh token %w", f.refreshPath(), err)
		}
		if t.RefreshToken == "" && !t.Static() {
			t.RefreshToken = tok
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, st, err
	}
	if t.AccessToken == "" && t.RefreshToken == "" && !t.Static() {
		if _, err := os.Lstat(f.tokenPath); err == nil {
			return t, st, fmt.Errorf("%s holds no access or refresh token (a refresh token refused earlier is cleared): register again with sudo nannyagent --register --force", f.tokenPath)
		}
		return nil, st, ErrNotRegistered
	}
	if t.RegisteredAt == nil && !t.Static() {
		// The earlier agent rewrites token.json in place, so the inode
		// is the one created at registration and its birth time is the
		// registration's.
		if born, ok := birthTime(f.tokenPath); ok {
			t.RegisteredAt, t.Estimated = &born, true
		}
	}
	return t, st, nil
}

func birthTime(path string) (time.Time, bool) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_BTIME, &stx); err != nil || stx.Mask&unix.STATX_BTIME == 0 {
		return time.Time{}, false
	}
	return time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)).UTC(), true
}

// saveTokens writes token.json, then the refresh token backup (or
// removes a stale one when there is no refresh token, as after a
// static-token registration).
func (f files) saveTokens(t *TokenFile) error {
	if err := f.checkDir(true); err != nil {
		return err
	}
	data, err := encodeTokenFile(t)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", f.tokenPath, err)
	}
	if err := f.writeAtomic(f.tokenPath, data); err != nil {
		return err
	}
	if t.RefreshToken == "" {
		if err := os.Remove(f.refreshPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the old %s: %w", f.refreshPath(), err)
		}
		return nil
	}
	return f.writeAtomic(f.refreshPath(), []byte(t.RefreshToken))
}
