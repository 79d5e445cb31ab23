package nannyapi

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/stretchr/testify/require"
)

func TestIsRecordID(t *testing.T) {
	for s, want := range map[string]bool{
		"vpiecet7copbe8j": true, "r13zcso5sx93pj7": true, "000000000000000": true,
		"": false, "vpiecet7copbe8": false, "vpiecet7copbe8jx": false, "Vpiecet7copbe8j": false,
		"vpiecet7copbe8/": false, "vpiecet7-opbe8j": false, "vpiecet7copbe8\n": false, "../../../etc/pa": false,
	} {
		require.Equal(t, want, IsRecordID(s), "%q", s)
	}
}

func TestScriptPath(t *testing.T) {
	p, q, err := ScriptPath(nannyapitest.DefaultScriptURL)
	require.NoError(t, err)
	require.Equal(t, nannyapitest.DefaultScriptURL, p)
	require.Empty(t, q)
	p, q, err = ScriptPath("/api/files/c/r/f.sh?thumb=0")
	require.NoError(t, err)
	require.Equal(t, "/api/files/c/r/f.sh", p)
	require.Equal(t, "0", q.Get("thumb"))
	for _, bad := range []string{
		"", "http://evil.example/api/files/c/r/f.sh", "https://127.0.0.1/api/files/c/r/f.sh", "//evil.example/x.sh",
		"api/files/c/r/f.sh", "/api/files/../../x.sh", "/api/files/./x.sh", "/api/files/c r/f.sh", `/api\files`,
		"/api/files/c/r/f.sh#x", "/api/files/\x00", "mailto:a@b", "\t/api/files/c/r/f.sh", "/api/files/c/r/f.sh\n",
	} {
		_, _, err := ScriptPath(bad)
		require.Error(t, err, "%q", bad)
		require.Contains(t, err.Error(), "script URL")
	}
}

func TestDownloadScript(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)
	want, _ := srv.Script(nannyapitest.DefaultScriptID)

	got, err := c.DownloadScript(ctx, nannyapitest.DefaultScriptURL, 0)
	require.NoError(t, err)
	require.Equal(t, want.Content, got)
	r := srv.RequestsFor("GET " + nannyapitest.DefaultScriptURL)
	require.Len(t, r, 1)
	require.Equal(t, "Bearer "+reg.AccessToken, r[0].Header.Get("Authorization"))

	// Over the cap: refused, not cut.
	_, err = c.DownloadScript(ctx, nannyapitest.DefaultScriptURL, int64(len(want.Content)-1))
	require.ErrorContains(t, err, "answer larger than")
	got, err = c.DownloadScript(ctx, nannyapitest.DefaultScriptURL, int64(len(want.Content)))
	require.NoError(t, err)
	require.Len(t, got, len(want.Content))

	_, err = c.DownloadScript(ctx, "/api/files/pbc_1280174292/"+nannyapitest.DefaultScriptID+"/gone.sh", 0)
	e, ok := AsError(err)
	require.True(t, ok, "%v", err)
	require.True(t, e.IsNotFound())
	require.True(t, e.Envelope)

	// An absolute URL is never fetched, so the bearer stays home.
	var hits atomic.Int32
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer evil.Close()
	before := len(srv.Requests())
	for _, u := range []string{evil.URL + "/x.sh", srv.URL + nannyapitest.DefaultScriptURL, "//" + strings.TrimPrefix(evil.URL, "http://") + "/x.sh"} {
		_, err = c.DownloadScript(ctx, u, 0)
		require.ErrorContains(t, err, "is not a path relative to the backend")
	}
	require.Zero(t, hits.Load())
	require.Len(t, srv.Requests(), before)
}

// TestDownloadScriptShortBody: an answer cut before its Content-Length
// is an error, never a shorter script.
func TestDownloadScriptShortBody(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			_, _ = conn.Read(buf)
			_, _ = conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/x-shellscript\r\nContent-Length: 100\r\n\r\n#!/bin/bash\necho partial\n"))
			conn.Close()
		}
	}()
	c, err := New(Options{BaseURL: "http://" + ln.Addr().String(), Tokens: StaticToken("t")})
	require.NoError(t, err)
	_, err = c.DownloadScript(testCtx(t), "/api/files/c/r/f.sh", 0)
	var te *TransportError
	require.True(t, errors.As(err, &te), "%v", err)
	require.True(t, Retryable(err))
}

func TestValidateScript(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)
	want, _ := srv.Script(nannyapitest.DefaultScriptID)

	info, err := c.ValidateScript(ctx, nannyapitest.DefaultScriptID)
	require.NoError(t, err)
	require.Equal(t, &ScriptInfo{ID: nannyapitest.DefaultScriptID, Name: "apt-update.sh", SHA256: want.SHA256}, info)
	_, err = c.ValidateScript(ctx, "nosuchscript000")
	require.Equal(t, "nannyapi: GET /api/scripts/{id}/validate: 404 script not found", err.Error())
	e, _ := AsError(err)
	require.True(t, e.IsNotFound())
	n := len(srv.Requests())
	_, err = c.ValidateScript(ctx, "../agent")
	require.ErrorContains(t, err, "is not a record ID")
	require.Len(t, srv.Requests(), n)
}

func TestUpdatePatch(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	reg := srv.RegisterAgent(srv.CreateUser("u@example.com"), "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)
	id, err := srv.CreatePatchOperation(reg.AgentID, nannyapitest.PatchOperation{})
	require.NoError(t, err)

	require.NoError(t, c.UpdatePatch(ctx, id, PatchUpdate{Status: StatusRunning}))
	rec, _ := srv.Record(nannyapitest.PatchOperations, id)
	require.Equal(t, "running", rec["status"])
	require.NotEmpty(t, rec["started_at"])
	r := srv.RequestsFor("PATCH /api/patches")
	require.Len(t, r, 1)
	require.Equal(t, "id="+id, r[0].Query)
	require.Equal(t, `{"status":"running"}`, string(r[0].Body))

	require.NoError(t, c.UpdatePatch(ctx, id, PatchUpdate{Status: StatusFailed, ErrorMsg: strings.Repeat("é", 2500)}))
	rec, _ = srv.Record(nannyapitest.PatchOperations, id)
	require.Equal(t, strings.Repeat("é", 2000), rec["error_msg"])

	err = c.UpdatePatch(ctx, "nosuchpatch0000", PatchUpdate{Status: StatusRunning})
	require.Equal(t, "nannyapi: PATCH /api/patches: 400 patch operation not found: sql: no rows in result set", err.Error())
	require.ErrorContains(t, c.UpdatePatch(ctx, "x&id=y", PatchUpdate{Status: StatusRunning}), "is not a record ID")
}

func TestUploadPatchResult(t *testing.T) {
	srv := nannyapitest.New(t, nannyapitest.Options{})
	u := srv.CreateUser("u@example.com")
	reg := srv.RegisterAgent(u, "h1")
	c := newClient(t, srv, StaticToken(reg.AccessToken))
	ctx := testCtx(t)
	id, err := srv.CreatePatchOperation(reg.AgentID, nannyapitest.PatchOperation{LXCID: "rhgs96k78q43f30", VMID: "100"})
	require.NoError(t, err)

	out := []byte("Reading package lists...\n{\"updates_available\": 0, \"packages\": []}\n")
	require.NoError(t, c.UploadPatchResult(ctx, id, PatchResult{ExitCode: 0, Stdout: out, Stderr: nil, LXCID: "rhgs96k78q43f30"}))
	res, ok := srv.PatchResultFor(id)
	require.True(t, ok)
	require.Equal(t, "0", res.ExitCode)
	require.Equal(t, out, res.Stdout)
	require.Empty(t, res.Stderr)
	require.Equal(t, "stdout.txt", res.StdoutSent)
	require.Equal(t, "stderr.txt", res.StderrSent)
	require.True(t, res.HasStdoutFile)
	require.True(t, res.HasStderrFile)
	require.Equal(t, "rhgs96k78q43f30", res.LXCID)
	rec, _ := srv.Record(nannyapitest.PatchOperations, id)
	require.Equal(t, "completed", rec["status"])
	r := srv.RequestsFor("POST /api/patches/" + id + "/result")
	require.Len(t, r, 1)
	require.True(t, strings.HasPrefix(r[0].Header.Get("Content-Type"), "multipart/form-data; boundary="))

	// Without lxc_id the field is not sent at all.
	id2, err := srv.CreatePatchOperation(reg.AgentID, nannyapitest.PatchOperation{})
	require.NoError(t, err)
	require.NoError(t, c.UploadPatchResult(ctx, id2, PatchResult{ExitCode: 1, Stderr: []byte("sha256 mismatch\n")}))
	res, _ = srv.PatchResultFor(id2)
	require.Equal(t, "1", res.ExitCode)
	require.Equal(t, "sha256 mismatch\n", string(res.Stderr))
	r = srv.RequestsFor("POST /api/patches/" + id2 + "/result")
	require.False(t, bytes.Contains(r[0].Body, []byte(`name="lxc_id"`)))
	rec, _ = srv.Record(nannyapitest.PatchOperations, id2)
	require.Equal(t, "failed", rec["status"])

	// Too large for the backend: refused before sending.
	n := len(srv.Requests())
	err = c.UploadPatchResult(ctx, id2, PatchResult{Stdout: make([]byte, MaxPatchFileBytes+1)})
	require.ErrorIs(t, err, ErrPatchFileTooLarge)
	require.Len(t, srv.Requests(), n)
	require.NoError(t, c.UploadPatchResult(ctx, id2, PatchResult{Stdout: make([]byte, MaxPatchFileBytes)}))

	// A user's token is refused by the backend.
	uc := newClient(t, srv, StaticToken(u.Token))
	err = uc.UploadPatchResult(ctx, id2, PatchResult{})
	require.Equal(t, "nannyapi: POST /api/patches/{id}/result: 403 only agents can upload results", err.Error())
}
