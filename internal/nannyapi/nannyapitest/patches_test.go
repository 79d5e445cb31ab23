package nannyapitest

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const scriptsPath = "/api/files/" + ScriptsCollectionID + "/"

// upload posts a patch result the way the agent (and curl -F) does.
func upload(t *testing.T, s *Server, token, opID string, fields map[string]string, files map[string][]byte) (int, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for k, v := range fields {
		require.NoError(t, mw.WriteField(k, v))
	}
	for field, data := range files {
		w, err := mw.CreateFormFile(field, strings.TrimSuffix(field, "_file")+".txt")
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
	}
	require.NoError(t, mw.Close())
	req, err := http.NewRequest("POST", s.URL+"/api/patches/"+opID+"/result", &b)
	require.NoError(t, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func get(t *testing.T, s *Server, path, token string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", s.URL+path, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

func TestPatchScripts(t *testing.T) {
	s := New(t, Options{})
	reg := s.RegisterAgent(s.CreateUser("u@example.com"), "h1")

	scripts := s.Scripts()
	var names []string
	for _, sc := range scripts {
		names = append(names, sc.PlatformFamily+"/"+sc.Name)
		require.Regexp(t, pbIDRe, sc.ID)
		require.Equal(t, digest(sc.Content), sc.SHA256)
		require.Equal(t, scriptsPath+sc.ID+"/"+sc.File, sc.URL())
		require.Empty(t, sc.OSVersion)
	}
	require.Equal(t, []string{"alpine/apk-update.sh", "arch/pacman-update.sh", "debian/apt-update.sh",
		"rhel/dnf-update.sh", "rhel/yum-update.sh", "suse/zypper-update.sh"}, names)
	deb, ok := s.Script(DefaultScriptID)
	require.True(t, ok)
	require.Equal(t, DefaultScriptURL, deb.URL())

	// The file API: the raw script, with or without a token.
	for _, tok := range []string{reg.AccessToken, ""} {
		code, h, body := get(t, s, DefaultScriptURL, tok)
		require.Equal(t, 200, code)
		require.Equal(t, "text/x-shellscript", h.Get("Content-Type"))
		require.Equal(t, strconv.Itoa(len(deb.Content)), h.Get("Content-Length"))
		require.Equal(t, deb.Content, body)
	}
	for _, p := range []string{scriptsPath + DefaultScriptID + "/other.sh", scriptsPath + "nosuchscript000/x.sh",
		"/api/files/pbc_2550880806/" + DefaultScriptID + "/" + deb.File, scriptsPath + DefaultScriptID} {
		code, _, body := get(t, s, p, "")
		exact(t, 404, notFoundBody, code, string(body))
	}

	// validate: the digest, for agents (and users) only.
	code, body := call(t, s, "GET", "/api/scripts/"+DefaultScriptID+"/validate", reg.AccessToken, "")
	exact(t, 200, `{"id":"`+DefaultScriptID+`","name":"apt-update.sh","sha256":"`+deb.SHA256+`"}`, code, body)
	code, body = call(t, s, "GET", "/api/scripts/nosuchscript000/validate", reg.AccessToken, "")
	exact(t, 404, `{"error":"script not found"}`, code, body)
	code, body = call(t, s, "GET", "/api/scripts/"+DefaultScriptID+"/validate", "", "")
	exact(t, 401, `{"error":"authentication required"}`, code, body)
	code, body = call(t, s, "GET", "/api/scripts/"+DefaultScriptID, reg.AccessToken, "")
	exact(t, 404, notFoundBody, code, body)

	// A test changes the file (the digest follows) or only the digest.
	require.NoError(t, s.SetScriptContent(DefaultScriptID, []byte("#!/bin/bash\necho hi\n")))
	_, _, got := get(t, s, DefaultScriptURL, "")
	require.Equal(t, "#!/bin/bash\necho hi\n", string(got))
	code, body = call(t, s, "GET", "/api/scripts/"+DefaultScriptID+"/validate", reg.AccessToken, "")
	exact(t, 200, `{"id":"`+DefaultScriptID+`","name":"apt-update.sh","sha256":"`+digest(got)+`"}`, code, body)
	require.NoError(t, s.SetScriptSHA256(DefaultScriptID, strings.Repeat("0", 64)))
	code, body = call(t, s, "GET", "/api/scripts/"+DefaultScriptID+"/validate", reg.AccessToken, "")
	exact(t, 200, `{"id":"`+DefaultScriptID+`","name":"apt-update.sh","sha256":"`+strings.Repeat("0", 64)+`"}`, code, body)
	_, _, got = get(t, s, DefaultScriptURL, "")
	require.Equal(t, "#!/bin/bash\necho hi\n", string(got))
	require.Error(t, s.SetScriptContent("nosuchscript000", nil))
	require.Error(t, s.SetScriptSHA256("nosuchscript000", ""))
}

func TestPatchCreate(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	other := s.RegisterAgent(s.CreateUser("o@example.com"), "h2")
	deb, _ := s.Script(DefaultScriptID)
	st := connect(t, s, reg.AccessToken)
	code, _ := subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 204, code)

	code, body := call(t, s, "POST", "/api/patches", u.Token, `{"agent_id":"`+reg.AgentID+`","mode":"dry-run"}`)
	require.Equal(t, 201, code, body)
	resp := decode(t, body)
	id := resp["id"].(string)
	require.Regexp(t, pbIDRe, id)
	exact(t, 201, `{"id":"`+id+`","user_id":"`+u.ID+`","agent_id":"`+reg.AgentID+`","mode":"dry-run","status":"pending","script_url":"`+DefaultScriptURL+`","script_sha256":"`+deb.SHA256+`","created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z"}`, code, body)
	_, event, data, err := ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, "patch_operations", event)
	require.Equal(t, `{"record":{"agent_id":"`+reg.AgentID+`","collectionId":"pbc_2550880806","collectionName":"patch_operations","completed_at":"","error_msg":"","exclusions":null,"exit_code":0,"id":"`+id+`","lxc_id":"","mode":"dry-run","output_path":"","script_id":"`+DefaultScriptID+`","script_url":"`+DefaultScriptURL+`","started_at":"","status":"pending","stderr_file":"","stdout_file":"","user_id":"`+u.ID+`","vmid":""},"action":"create"}`, string(data))

	// Package exceptions become exclusions; a known container gives its
	// vmid; an agent's token creates for its owner.
	s.SetPackageExceptions(reg.AgentID, "nginx", "linux-image-amd64")
	s.SetPatchLXC("rhgs96k78q43f30", 100)
	code, body = call(t, s, "POST", "/api/patches", reg.AccessToken, `{"agent_id":"`+reg.AgentID+`","mode":"apply","lxc_id":"rhgs96k78q43f30","script_args":"--yes"}`)
	require.Equal(t, 201, code, body)
	rec, ok := s.Record(PatchOperations, decode(t, body)["id"].(string))
	require.True(t, ok)
	require.Equal(t, []string{"nginx", "linux-image-amd64"}, rec["exclusions"])
	require.Equal(t, "rhgs96k78q43f30", rec["lxc_id"])
	require.Equal(t, "100", rec["vmid"])
	require.Equal(t, "apply", rec["mode"])
	require.Equal(t, u.ID, rec["user_id"])
	_, hasArgs := rec["script_args"]
	require.False(t, hasArgs)
	// The helper applies the same hook.
	hid, err := s.CreatePatchOperation(reg.AgentID, PatchOperation{LXCID: "rhgs96k78q43f30"})
	require.NoError(t, err)
	rec, _ = s.Record(PatchOperations, hid)
	require.Equal(t, []string{"nginx", "linux-image-amd64"}, rec["exclusions"])
	require.Equal(t, "100", rec["vmid"])
	// An ingested container serves as well.
	s.mu.Lock()
	s.pxLocked().cols[ProxmoxLXC].insert(map[string]any{"id": "ingestedlxc0001", "vmid": 205})
	s.mu.Unlock()
	code, body = call(t, s, "POST", "/api/patches", u.Token, `{"agent_id":"`+reg.AgentID+`","mode":"dry-run","lxc_id":"ingestedlxc0001"}`)
	require.Equal(t, 201, code, body)
	rec, _ = s.Record(PatchOperations, decode(t, body)["id"].(string))
	require.Equal(t, "205", rec["vmid"])
	s.SetPackageExceptions(reg.AgentID)
	hid, err = s.CreatePatchOperation(reg.AgentID, PatchOperation{})
	require.NoError(t, err)
	rec, _ = s.Record(PatchOperations, hid)
	require.Nil(t, rec["exclusions"])

	// The script is chosen by platform family and version.
	v12, err := s.AddScript(Script{Name: "apt-update.sh", PlatformFamily: "debian", OSVersion: "12", Content: []byte("#!/bin/bash\n")})
	require.NoError(t, err)
	require.Regexp(t, `^apt_update_[a-z0-9]{10}\.sh$`, v12.File)
	s.mu.Lock()
	s.agents[reg.AgentID].osVersion = "12"
	s.agents[other.AgentID].platformFamily = "gentoo"
	s.agents[other.AgentID].osVersion = "2.17"
	s.mu.Unlock()
	code, body = call(t, s, "POST", "/api/patches", u.Token, `{"agent_id":"`+reg.AgentID+`","mode":"dry-run"}`)
	require.Equal(t, 201, code, body)
	require.Equal(t, v12.URL(), decode(t, body)["script_url"])
	require.Equal(t, digest([]byte("#!/bin/bash\n")), decode(t, body)["script_sha256"])
	s.mu.Lock()
	s.agents[reg.AgentID].osVersion = "11"
	s.mu.Unlock()
	code, body = call(t, s, "POST", "/api/patches", u.Token, `{"agent_id":"`+reg.AgentID+`","mode":"dry-run"}`)
	require.Equal(t, 201, code, body)
	require.Equal(t, DefaultScriptURL, decode(t, body)["script_url"])

	n := len(s.Records(PatchOperations))
	for _, c := range []struct {
		token, body string
		status      int
		want        string
	}{
		{u.Token, `{"agent_id":`, 400, `{"error":"invalid request"}`},
		{u.Token, `{"mode":"dry-run"}`, 400, `{"error":"agent_id is required"}`},
		{u.Token, `{"agent_id":"nosuchagent0000","mode":"dry-run"}`, 400, `{"error":"agent not found: sql: no rows in result set"}`},
		{u.Token, `{"agent_id":"` + other.AgentID + `","mode":"dry-run"}`, 400, `{"error":"unauthorized: agent does not belong to user"}`},
		{u.Token, `{"agent_id":"` + reg.AgentID + `","mode":"--dry-run"}`, 400, `{"error":"invalid mode: must be dry-run or apply"}`},
		{u.Token, `{"agent_id":"` + reg.AgentID + `"}`, 400, `{"error":"invalid mode: must be dry-run or apply"}`},
		{u.Token, `{"agent_id":"` + reg.AgentID + `","mode":"apply","lxc_id":"nosuchlxc000000"}`, 400, `{"error":"failed to save patch operation: sql: no rows in result set"}`},
		{other.AccessToken, `{"agent_id":"` + other.AgentID + `","mode":"apply"}`, 400, `{"error":"no compatible patch script found for agent platform: gentoo 2.17"}`},
		{"", `{"agent_id":"` + reg.AgentID + `","mode":"apply"}`, 401, `{"error":"authentication required"}`},
	} {
		code, body := call(t, s, "POST", "/api/patches", c.token, c.body)
		exact(t, c.status, c.want, code, body)
	}
	require.Len(t, s.Records(PatchOperations), n, "refused creations store nothing")
}

func TestPatchReadAndUpdate(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	o := s.CreateUser("o@example.com")

	code, body := call(t, s, "GET", "/api/patches", u.Token, "")
	exact(t, 200, `null`, code, body)
	id, err := s.CreatePatchOperation(reg.AgentID, PatchOperation{Mode: "apply"})
	require.NoError(t, err)
	one := `{"id":"` + id + `","user_id":"` + u.ID + `","agent_id":"` + reg.AgentID + `","mode":"apply","status":"pending","script_url":"` + DefaultScriptURL + `","created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z"}`
	code, body = call(t, s, "GET", "/api/patches", reg.AccessToken, "")
	exact(t, 200, `[`+one+`]`, code, body)
	code, body = call(t, s, "GET", "/api/patches?id="+id, u.Token, "")
	exact(t, 200, one, code, body)
	code, body = call(t, s, "GET", "/api/patches?id=nosuchpatch0000", u.Token, "")
	exact(t, 404, `{"error":"patch operation not found: sql: no rows in result set"}`, code, body)
	code, body = call(t, s, "GET", "/api/patches?id="+id, o.Token, "")
	exact(t, 404, `{"error":"unauthorized: operation does not belong to user"}`, code, body)
	code, body = call(t, s, "GET", "/api/patches", o.Token, "")
	exact(t, 200, `null`, code, body)

	st := connect(t, s, reg.AccessToken)
	code, _ = subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 204, code)
	code, body = call(t, s, "PATCH", "/api/patches?id="+id, reg.AccessToken, `{"status":"running"}`)
	exact(t, 200, `{"success":"true"}`, code, body)
	rec, _ := s.Record(PatchOperations, id)
	require.Equal(t, "running", rec["status"])
	require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$`, rec["started_at"])
	require.Equal(t, "", rec["completed_at"])
	_, event, data, err := ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, "patch_operations", event)
	require.Contains(t, string(data), `"status":"running"`)
	require.True(t, strings.HasSuffix(string(data), `},"action":"update"}`))

	code, body = call(t, s, "PATCH", "/api/patches?id="+id, u.Token, `{"status":"failed","error_msg":"boom","output_path":"/var/log/x"}`)
	exact(t, 200, `{"success":"true"}`, code, body)
	rec, _ = s.Record(PatchOperations, id)
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, "boom", rec["error_msg"])
	require.Equal(t, "/var/log/x", rec["output_path"])
	require.NotEmpty(t, rec["completed_at"])

	for _, c := range []struct {
		token, query, body string
		status             int
		want               string
	}{
		{u.Token, "", `{"status":"running"}`, 400, `{"error":"id parameter required"}`},
		{u.Token, "?id=" + id, `{"status":`, 400, `{"error":"invalid request"}`},
		{u.Token, "?id=nosuchpatch0000", `{"status":"running"}`, 400, `{"error":"patch operation not found: sql: no rows in result set"}`},
		{o.Token, "?id=" + id, `{"status":"running"}`, 400, `{"error":"unauthorized: operation does not belong to user"}`},
		{u.Token, "?id=" + id, `{"status":"failed","error_msg":"` + strings.Repeat("x", 2001) + `"}`, 400, `{"error":"failed to update patch operation: error_msg: Must be no more than 2000 character(s).."}`},
		{u.Token, "?id=nosuchpatch0000", `{}`, 200, `{"success":"true"}`},
		{"", "?id=" + id, `{"status":"running"}`, 401, `{"error":"authentication required"}`},
	} {
		code, body := call(t, s, "PATCH", "/api/patches"+c.query, c.token, c.body)
		exact(t, c.status, c.want, code, body)
	}
	rec, _ = s.Record(PatchOperations, id)
	require.Equal(t, "failed", rec["status"], "refused updates change nothing")
	require.Equal(t, "boom", rec["error_msg"])
	code, body = call(t, s, "DELETE", "/api/patches?id="+id, u.Token, "")
	exact(t, 404, notFoundBody, code, body)
}

func TestPatchResult(t *testing.T) {
	s := New(t, Options{})
	u := s.CreateUser("u@example.com")
	reg := s.RegisterAgent(u, "h1")
	other := s.RegisterAgent(u, "h2")
	id, err := s.CreatePatchOperation(reg.AgentID, PatchOperation{})
	require.NoError(t, err)
	st := connect(t, s, reg.AccessToken)
	code, _ := subscribe(t, s, reg.AccessToken, st.id, allTopics...)
	require.Equal(t, 204, code)

	files := map[string][]byte{"stdout_file": []byte("out\n{\"updates_available\": 0}\n"), "stderr_file": []byte("warn\n")}
	for _, c := range []struct {
		token, id string
		status    int
		want      string
	}{
		{"", id, 401, `{"error":"authentication required"}`},
		{u.Token, id, 403, `{"error":"only agents can upload results"}`},
		{other.AccessToken, id, 403, `{"error":"unauthorized: operation does not belong to agent"}`},
		{reg.AccessToken, "nosuchpatch0000", 404, `{"error":"patch operation not found"}`},
	} {
		code, body := upload(t, s, c.token, c.id, map[string]string{"exit_code": "0"}, files)
		exact(t, c.status, c.want, code, body)
	}
	_, ok := s.PatchResultFor(id)
	require.False(t, ok)

	// Each file at most 10 MB: one byte more fails the whole upload.
	big := bytes.Repeat([]byte("x"), MaxPatchFile+1)
	code, body := upload(t, s, reg.AccessToken, id, map[string]string{"exit_code": "0"}, map[string][]byte{"stdout_file": big, "stderr_file": nil})
	exact(t, 500, `{"error":"failed to save patch result: stdout_file: Failed to upload \"stdout.txt\" - the maximum allowed file size is 10485760 bytes."}`, code, body)
	rec, _ := s.Record(PatchOperations, id)
	require.Equal(t, "pending", rec["status"])

	code, body = upload(t, s, reg.AccessToken, id, map[string]string{"exit_code": "0", "lxc_id": "rhgs96k78q43f30"}, files)
	exact(t, 200, `{"status":"updated"}`, code, body)
	rec, _ = s.Record(PatchOperations, id)
	require.Equal(t, "completed", rec["status"])
	require.Equal(t, float64(0), rec["exit_code"])
	require.Regexp(t, regexp.MustCompile(`^stdout_[a-z0-9]{10}\.txt$`), rec["stdout_file"])
	require.Regexp(t, regexp.MustCompile(`^stderr_[a-z0-9]{10}\.txt$`), rec["stderr_file"])
	require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$`, rec["completed_at"])
	require.Equal(t, "", rec["lxc_id"], "lxc_id of the form is ignored")
	res, ok := s.PatchResultFor(id)
	require.True(t, ok)
	require.Equal(t, PatchResult{
		ExitCode: "0", Stdout: files["stdout_file"], Stderr: files["stderr_file"],
		StdoutSent: "stdout.txt", StderrSent: "stderr.txt",
		StdoutStored: rec["stdout_file"].(string), StderrStored: rec["stderr_file"].(string),
		HasStdoutFile: true, HasStderrFile: true, LXCID: "rhgs96k78q43f30", Uploads: 1,
	}, res)
	_, event, data, err := ReadEvent(st.r)
	require.NoError(t, err)
	require.Equal(t, "patch_operations", event)
	var ev struct {
		Record map[string]any `json:"record"`
		Action string         `json:"action"`
	}
	require.NoError(t, json.Unmarshal(data, &ev))
	require.Equal(t, "update", ev.Action)
	require.Equal(t, "completed", ev.Record["status"])
	require.Equal(t, rec["stdout_file"], ev.Record["stdout_file"])

	// A non-zero exit code fails the operation.
	id2, err := s.CreatePatchOperation(reg.AgentID, PatchOperation{Mode: "apply"})
	require.NoError(t, err)
	code, body = upload(t, s, reg.AccessToken, id2, map[string]string{"exit_code": "100"}, map[string][]byte{"stdout_file": nil, "stderr_file": []byte("E: dpkg was interrupted\n")})
	exact(t, 200, `{"status":"updated"}`, code, body)
	rec, _ = s.Record(PatchOperations, id2)
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, float64(100), rec["exit_code"])
	res, _ = s.PatchResultFor(id2)
	require.Equal(t, "E: dpkg was interrupted\n", string(res.Stderr))
	require.Empty(t, res.Stdout)
	require.True(t, res.HasStdoutFile)

	// Without exit_code the status is failed and exit_code untouched.
	id3, err := s.CreatePatchOperation(reg.AgentID, PatchOperation{})
	require.NoError(t, err)
	code, body = upload(t, s, reg.AccessToken, id3, nil, nil)
	exact(t, 200, `{"status":"updated"}`, code, body)
	rec, _ = s.Record(PatchOperations, id3)
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, 0, rec["exit_code"])
	require.Equal(t, "", rec["stdout_file"])

	code, body = call(t, s, "GET", "/api/patches/"+id+"/result", reg.AccessToken, "")
	exact(t, 404, notFoundBody, code, body)
}
