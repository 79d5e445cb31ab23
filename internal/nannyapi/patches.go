package nannyapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

const patchesPath = "/api/patches"

// StatusRunning is the patch status the agent sets when it starts.
const StatusRunning = "running"

// Patch modes.
const (
	PatchModeDryRun = "dry-run"
	PatchModeApply  = "apply"
)

// MaxPatchFileBytes is the backend's limit on each of a patch result's
// files (stdout_file, stderr_file): one byte more and the upload fails
// with a 500.
const MaxPatchFileBytes = 10 << 20

// DefaultMaxScriptBytes bounds a downloaded patch script; the seeded
// scripts are a few kilobytes.
const DefaultMaxScriptBytes = 1 << 20

// IsRecordID reports whether s is a PocketBase record ID as the
// backend makes them: 15 lowercase letters and digits. IDs go into URL
// paths and command lines, so anything else is refused.
func IsRecordID(s string) bool {
	if len(s) != 15 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// ScriptInfo is the answer of /api/scripts/{id}/validate: the script's
// expected SHA-256 (lowercase hex).
type ScriptInfo struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// ValidateScript reads a patch script's expected SHA-256. An unknown
// script is an *Error with IsNotFound ({"error":"script not found"}).
func (c *Client) ValidateScript(ctx context.Context, scriptID string) (*ScriptInfo, error) {
	if !IsRecordID(scriptID) {
		return nil, fmt.Errorf("nannyapi: validate script: %q is not a record ID (15 lowercase letters and digits)", scriptID)
	}
	path := "/api/scripts/" + scriptID + "/validate"
	var out ScriptInfo
	err := c.do(ctx, &request{
		op: "GET /api/scripts/{id}/validate", method: http.MethodGet, path: path, auth: true, agentID: true, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ScriptPath checks a record's script_url and returns its path and
// query. Only a URL relative to the backend is accepted ("/api/files/…"):
// an absolute one, a scheme-relative one ("//host/…") or one that climbs
// out with ".." is refused, so the bearer sent with the download never
// goes to another host.
func ScriptPath(scriptURL string) (string, url.Values, error) {
	bad := func(why string) (string, url.Values, error) {
		return "", nil, fmt.Errorf("nannyapi: script URL %q %s; the backend sends a path such as /api/files/<collection>/<record>/<file>", scriptURL, why)
	}
	if scriptURL == "" {
		return bad("is empty")
	}
	for _, r := range scriptURL {
		if r <= ' ' || r == 0x7f || r == '\\' {
			return bad("contains a space, a control character or a backslash")
		}
	}
	if !strings.HasPrefix(scriptURL, "/") || strings.HasPrefix(scriptURL, "//") {
		return bad("is not a path relative to the backend")
	}
	u, err := url.Parse(scriptURL)
	if err != nil {
		return bad("does not parse: " + err.Error())
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		return bad("is not a path relative to the backend")
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == ".." || seg == "." {
			return bad("has a . or .. segment")
		}
	}
	return u.Path, u.Query(), nil
}

// DownloadScript fetches a patch script (GET <base><script_url> with
// the bearer, which the file API does not need but accepts). The answer
// must be 200, at most maxBytes (default DefaultMaxScriptBytes) and as
// long as its Content-Length says.
func (c *Client) DownloadScript(ctx context.Context, scriptURL string, maxBytes int64) ([]byte, error) {
	path, query, err := ScriptPath(scriptURL)
	if err != nil {
		return nil, err
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxScriptBytes
	}
	var out []byte
	err = c.do(ctx, &request{
		op: "GET " + path, method: http.MethodGet, path: path, query: query, auth: true, agentID: true,
		rawOut: &out, maxBody: maxBytes, exactLength: true,
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PatchUpdate changes a patch operation (PATCH /api/patches?id=);
// empty fields are left alone, and nothing changes without a Status.
// running sets started_at; completed and failed set completed_at.
type PatchUpdate struct {
	Status     string `json:"status,omitempty"`
	OutputPath string `json:"output_path,omitempty"`
	ErrorMsg   string `json:"error_msg,omitempty"`
}

// MaxPatchErrorMsg is the patch_operations.error_msg limit.
const MaxPatchErrorMsg = 2000

// UpdatePatch PATCHes a patch operation of the agent's owner; an error
// message longer than the backend's limit is cut to fit.
func (c *Client) UpdatePatch(ctx context.Context, id string, u PatchUpdate) error {
	if !IsRecordID(id) {
		return fmt.Errorf("nannyapi: update patch: %q is not a record ID (15 lowercase letters and digits)", id)
	}
	u.ErrorMsg = truncateRunes(u.ErrorMsg, MaxPatchErrorMsg)
	var out struct {
		Success string `json:"success"`
	}
	return c.do(ctx, &request{
		op: "PATCH " + patchesPath, method: http.MethodPatch, path: patchesPath,
		query: url.Values{"id": {id}}, auth: true, agentID: true, body: u, out: &out,
	})
}

// PatchResult is what a run produced, for POST /api/patches/{id}/result.
type PatchResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
	// LXCID is the operation's lxc_id, sent when it targets a container
	// (the backend ignores it).
	LXCID string
}

// ErrPatchFileTooLarge is returned, before sending, for a result whose
// stdout or stderr the backend would refuse with a 500.
var ErrPatchFileTooLarge = errors.New("nannyapi: patch output over the backend's 10 MB file limit")

// UploadPatchResult sends a run's result as the backend's multipart
// form: exit_code, stdout_file (stdout.txt), stderr_file (stderr.txt)
// and lxc_id when set. The backend stores the files, sets exit_code, the
// status (completed for exit code 0, else failed) and completed_at.
func (c *Client) UploadPatchResult(ctx context.Context, id string, res PatchResult) error {
	if !IsRecordID(id) {
		return fmt.Errorf("nannyapi: upload patch result: %q is not a record ID (15 lowercase letters and digits)", id)
	}
	if len(res.Stdout) > MaxPatchFileBytes || len(res.Stderr) > MaxPatchFileBytes {
		return fmt.Errorf("%w (stdout %d bytes, stderr %d bytes): cut it first", ErrPatchFileTooLarge, len(res.Stdout), len(res.Stderr))
	}
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fields := [][2]string{{"exit_code", strconv.Itoa(res.ExitCode)}}
	if res.LXCID != "" {
		fields = append(fields, [2]string{"lxc_id", res.LXCID})
	}
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return fmt.Errorf("nannyapi: upload patch result: %w", err)
		}
	}
	for _, f := range []struct {
		field, name string
		data        []byte
	}{{"stdout_file", "stdout.txt", res.Stdout}, {"stderr_file", "stderr.txt", res.Stderr}} {
		w, err := mw.CreateFormFile(f.field, f.name)
		if err == nil {
			_, err = w.Write(f.data)
		}
		if err != nil {
			return fmt.Errorf("nannyapi: upload patch result: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return fmt.Errorf("nannyapi: upload patch result: %w", err)
	}
	var out struct {
		Status string `json:"status"`
	}
	return c.do(ctx, &request{
		op: "POST /api/patches/{id}/result", method: http.MethodPost, path: patchesPath + "/" + id + "/result",
		auth: true, agentID: true, raw: b.Bytes(), rawType: mw.FormDataContentType(), out: &out,
	})
}
