package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/nannyapi/nannyapitest"
	"github.com/nannyagent/nannyagent/internal/patch"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// patchRig is the host side of the patch tests: where the scripts
// record what they saw, the handler's base directory and a fake pct.
type patchRig struct {
	out, base, pct string
}

// withPatches gives the env's daemon the real patch handler.
func withPatches(t *testing.T, e *env) *patchRig {
	t.Helper()
	r := &patchRig{out: t.TempDir(), base: filepath.Join(t.TempDir(), "patches"), pct: filepath.Join(t.TempDir(), "pct")}
	// pct exec <vmid> -- <command>: record, then run the command here
	// with the same stdin, as the container would.
	fake := fmt.Sprintf("#!/bin/bash\nprintf '%%s\\n' \"$@\" > '%[1]s/pct-argv'\ncat > '%[1]s/pct-stdin'\nshift 3\nexec \"$@\" < '%[1]s/pct-stdin'\n", r.out)
	require.NoError(t, os.WriteFile(r.pct, []byte(fake), 0o700))
	h, err := patch.New(patch.Options{
		Client: e.cl, AgentID: e.reg.AgentID, BaseDir: r.base, Pct: r.pct,
		Timeout: time.Duration(e.opts.Config.Daemon.PatchTimeoutSec) * time.Second,
		Logger:  zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named("patches"),
	})
	require.NoError(t, err)
	e.opts.Patches = h
	return r
}

func (r *patchRig) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.out, name))
	require.NoError(t, err)
	return string(b)
}

// setScript makes the backend's debian script this body.
func (r *patchRig) setScript(t *testing.T, e *env, body string) string {
	t.Helper()
	s := "#!/bin/bash\nOUT='" + r.out + "'\n" + body
	require.NoError(t, e.srv.SetScriptContent(nannyapitest.DefaultScriptID, []byte(s)))
	return s
}

// createPatch is the portal's POST /api/patches with the user's token.
func createPatch(t *testing.T, e *env, body string) string {
	t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+"/api/patches", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.user.Token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, 201, resp.StatusCode, string(b))
	var m struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(b, &m))
	return m.ID
}

// waitResult waits for the operation's result upload.
func waitResult(t *testing.T, e *env, id string) nannyapitest.PatchResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var res nannyapitest.PatchResult
	require.NoError(t, e.srv.Wait(ctx, func() bool {
		var ok bool
		res, ok = e.srv.PatchResultFor(id)
		return ok
	}), "no result for %s", id)
	require.Equal(t, 1, res.Uploads)
	return res
}

// patchRecorder records its argv and prints a summary among text; it
// fails an apply run on purpose, so that both statuses are seen.
const patchRecorder = `{ printf '%s\n' "$#"; for a in "$@"; do printf '[%s]\n' "$a"; done; } > "$OUT/argv"
echo "=== APT Update ==="
echo '{"updates_available": 1, "packages": [{"package": "openssl", "current_version": "3.0.11", "new_version": "3.0.13"}], "dry_run": true}'
echo "note: from stderr" >&2
[ "$1" = --dry-run ] || { echo "E: apply refused in this test" >&2; exit 2; }
`

const patchRecorderStdout = "=== APT Update ===\n" +
	`{"updates_available": 1, "packages": [{"package": "openssl", "current_version": "3.0.11", "new_version": "3.0.13"}], "dry_run": true}` + "\n"

// TestPatchOperationsEndToEnd: the portal creates patch operations; the
// daemon receives them over the realtime stream and the real handler
// downloads, verifies, runs and reports each, on the host and in a
// container.
func TestPatchOperationsEndToEnd(t *testing.T) {
	noLeaks(t)
	e := newEnv(t, envOptions{})
	r := withPatches(t, e)
	r.setScript(t, e, patchRecorder)
	e.start()
	pending := func(id string) map[string]any {
		rec, ok := e.srv.Record(nannyapitest.PatchOperations, id)
		require.True(t, ok)
		return rec
	}

	// A dry run.
	id := createPatch(t, e, `{"agent_id":"`+e.reg.AgentID+`","mode":"dry-run"}`)
	res := waitResult(t, e, id)
	require.Equal(t, "1\n[--dry-run]\n", r.read(t, "argv"))
	require.Equal(t, "0", res.ExitCode)
	require.Equal(t, patchRecorderStdout, string(res.Stdout))
	require.Equal(t, "note: from stderr\n", string(res.Stderr))
	require.Equal(t, "stdout.txt", res.StdoutSent)
	rec := pending(id)
	require.Equal(t, "completed", rec["status"])
	require.Equal(t, float64(0), rec["exit_code"])
	require.Regexp(t, `^stdout_[a-z0-9]{10}\.txt$`, rec["stdout_file"])
	require.NotEmpty(t, rec["started_at"], "marked running first")
	require.NotEmpty(t, rec["completed_at"])

	// An apply with the agent's package exceptions, which the script
	// fails.
	e.srv.SetPackageExceptions(e.reg.AgentID, "nginx", "openssl")
	id = createPatch(t, e, `{"agent_id":"`+e.reg.AgentID+`","mode":"apply"}`)
	res = waitResult(t, e, id)
	require.Equal(t, "2\n[--exclude]\n[nginx,openssl]\n", r.read(t, "argv"))
	require.Equal(t, "2", res.ExitCode)
	require.Equal(t, patchRecorderStdout, string(res.Stdout))
	require.Equal(t, "note: from stderr\nE: apply refused in this test\n", string(res.Stderr))
	rec = pending(id)
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, float64(2), rec["exit_code"])

	// A script whose digest does not match never runs.
	r.setScript(t, e, "touch \"$OUT/canary\"\n"+patchRecorder)
	require.NoError(t, e.srv.SetScriptSHA256(nannyapitest.DefaultScriptID, strings.Repeat("0", 64)))
	id, err := e.srv.CreatePatchOperation(e.reg.AgentID, nannyapitest.PatchOperation{})
	require.NoError(t, err)
	res = waitResult(t, e, id)
	_, statErr := os.Stat(filepath.Join(r.out, "canary"))
	require.True(t, os.IsNotExist(statErr), "the script ran")
	require.Equal(t, "1", res.ExitCode)
	require.Empty(t, res.Stdout)
	require.True(t, strings.HasPrefix(string(res.Stderr), "nannyagent: patch script not run: SHA-256 mismatch for script "+nannyapitest.DefaultScriptID+": downloaded "), string(res.Stderr))
	require.True(t, strings.HasSuffix(string(res.Stderr), ", backend says "+strings.Repeat("0", 64)+"\n"), string(res.Stderr))
	require.Equal(t, "failed", pending(id)["status"])

	// A container, through pct, with the exclusions.
	script := r.setScript(t, e, patchRecorder)
	e.srv.SetPatchLXC("rhgs96k78q43f30", 101)
	id = createPatch(t, e, `{"agent_id":"`+e.reg.AgentID+`","mode":"dry-run","lxc_id":"rhgs96k78q43f30"}`)
	res = waitResult(t, e, id)
	require.Equal(t, "exec\n101\n--\nbash\n-s\n--\n--dry-run\n--exclude\nnginx,openssl\n", r.read(t, "pct-argv"))
	require.Equal(t, script, r.read(t, "pct-stdin"))
	require.Equal(t, "3\n[--dry-run]\n[--exclude]\n[nginx,openssl]\n", r.read(t, "argv"))
	require.Equal(t, "0", res.ExitCode)
	require.Equal(t, "rhgs96k78q43f30", res.LXCID)
	require.Equal(t, patchRecorderStdout, string(res.Stdout))
	rec = pending(id)
	require.Equal(t, "completed", rec["status"])
	require.Equal(t, "101", rec["vmid"])

	err, _ = e.stop()
	require.NoError(t, err)
	require.Equal(t, uint64(4), e.d.Stats().Patches)
	entries, err := os.ReadDir(r.base)
	require.NoError(t, err)
	require.Empty(t, entries, "every run removed its directory")
	require.Equal(t, 4, e.srv.Count("PATCH /api/patches"), "each operation was marked running before its download")
}
