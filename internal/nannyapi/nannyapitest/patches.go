package nannyapitest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ScriptsCollectionID is the scripts collection's ID, the second part
// of a script_url.
const ScriptsCollectionID = "pbc_1280174292"

// MaxPatchFile is the patch_operations file fields' size limit: an
// upload with a larger stdout_file or stderr_file fails with a 500.
const MaxPatchFile = 10 << 20

// Script is a row of the scripts collection.
type Script struct {
	ID string
	// Name is the seeded file's name ("apt-update.sh"); File the stored
	// one ("apt_update_spmzr2mmy0.sh"), the last part of the URL.
	Name, File string
	// PlatformFamily and OSVersion select the script for an agent; an
	// empty OSVersion fits every version of the family.
	PlatformFamily, OSVersion string
	Content                   []byte
	// SHA256 is what /api/scripts/{id}/validate answers: the content's
	// digest unless a test made it disagree.
	SHA256 string
}

// URL is the script's script_url.
func (sc Script) URL() string {
	return "/api/files/" + ScriptsCollectionID + "/" + sc.ID + "/" + sc.File
}

// PatchResult is what the agent uploaded for an operation (the last
// upload), as the backend stored it.
type PatchResult struct {
	// ExitCode is the exit_code form value as sent ("" when absent).
	ExitCode string
	// Stdout and Stderr are the uploaded files' contents; their names
	// are the part's file names as sent ("stdout.txt") and as stored
	// ("stdout_<random>.txt", also the record's stdout_file).
	Stdout, Stderr               []byte
	StdoutSent, StderrSent       string
	StdoutStored, StderrStored   string
	HasStdoutFile, HasStderrFile bool
	// LXCID is the lxc_id form value, which the backend ignores.
	LXCID string
	// Uploads counts the accepted uploads for the operation.
	Uploads int
}

// patchState is the scripts collection, the package exceptions, the
// containers patches may target and the uploaded results (§2.9).
type patchState struct {
	scripts     map[string]*Script
	scriptOrder []string
	exceptions  map[string][]string // by agent ID
	lxcs        map[string]int      // proxmox_lxc ID → vmid
	results     map[string]*PatchResult
}

// seedScripts are the scripts the backend loads on its first migration
// (§2.9, §6.7). The contents are stand-ins: they take the real scripts'
// arguments, change nothing and report no updates.
var seedScripts = []struct{ id, family, name, file string }{
	{"a1pn3apkupd4t3s", "alpine", "apk-update.sh", "apk_update_k2m9q0w1z3.sh"},
	{"ar8chp4cmn7upd0", "arch", "pacman-update.sh", "pacman_update_x7c2n5b8v1.sh"},
	{DefaultScriptID, "debian", "apt-update.sh", "apt_update_spmzr2mmy0.sh"},
	{"rh3ld5nfupd8t1e", "rhel", "dnf-update.sh", "dnf_update_h4j6k8l0p2.sh"},
	{"rh3ly9mupd2t4e6", "rhel", "yum-update.sh", "yum_update_r5t7y9u1i3.sh"},
	{"su5ez7yppupd9t0", "suse", "zypper-update.sh", "zypper_update_d3f5g7h9j1.sh"},
}

func standInScript(name string) []byte {
	return []byte(`#!/bin/bash
# Stand-in for the seeded ` + name + `: it takes the same arguments and
# reports no updates, changing nothing.
DRY_RUN=false
EXCLUDE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=true; shift ;;
    --exclude) EXCLUDE="$2"; shift 2 ;;
    *) echo "Unknown option: $1"; exit 1 ;;
  esac
done
echo "=== ` + name + ` ==="
echo "Dry Run: $DRY_RUN"
echo "Excluded Packages: ${EXCLUDE:-none}"
echo "No updates available"
echo '{"updates_available": 0, "packages": [], "dry_run": '"$DRY_RUN"'}'
`)
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// patchesLocked returns the patch state, seeding the scripts on first
// use.
func (s *Server) patchesLocked() *patchState {
	p := &s.patches
	if p.scripts != nil {
		return p
	}
	p.scripts = map[string]*Script{}
	p.exceptions = map[string][]string{}
	p.lxcs = map[string]int{}
	p.results = map[string]*PatchResult{}
	for _, sd := range seedScripts {
		c := standInScript(sd.name)
		p.scripts[sd.id] = &Script{ID: sd.id, Name: sd.name, File: sd.file, PlatformFamily: sd.family, Content: c, SHA256: digest(c)}
		p.scriptOrder = append(p.scriptOrder, sd.id)
	}
	return p
}

// Script returns a copy of a script row.
func (s *Server) Script(id string) (Script, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, ok := s.patchesLocked().scripts[id]
	if !ok {
		return Script{}, false
	}
	out := *sc
	out.Content = append([]byte(nil), sc.Content...)
	return out, true
}

// Scripts lists the script rows in the order the backend finds them.
func (s *Server) Scripts() []Script {
	s.mu.Lock()
	p := s.patchesLocked()
	ids := append([]string(nil), p.scriptOrder...)
	s.mu.Unlock()
	out := make([]Script, 0, len(ids))
	for _, id := range ids {
		sc, _ := s.Script(id)
		out = append(out, sc)
	}
	return out
}

// AddScript adds a script row, as an admin uploading one does: its
// SHA256 is computed, an empty ID or File is made up. It returns the
// stored row.
func (s *Server) AddScript(sc Script) (Script, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.patchesLocked()
	if sc.ID == "" {
		sc.ID = pbID()
	}
	if _, dup := p.scripts[sc.ID]; dup {
		return Script{}, fmt.Errorf("script %s exists", sc.ID)
	}
	if sc.Name == "" || sc.PlatformFamily == "" {
		return Script{}, errors.New("a script needs a name and a platform family")
	}
	if sc.File == "" {
		base, ext, _ := strings.Cut(sc.Name, ".")
		sc.File = strings.ReplaceAll(base, "-", "_") + "_" + randomFrom("abcdefghijklmnopqrstuvwxyz0123456789", 10) + "." + ext
	}
	sc.Content = append([]byte(nil), sc.Content...)
	sc.SHA256 = digest(sc.Content)
	p.scripts[sc.ID] = &sc
	p.scriptOrder = append(p.scriptOrder, sc.ID)
	return sc, nil
}

// SetScriptContent replaces a script's file; its SHA256 follows, as the
// backend's update hook recomputes it.
func (s *Server) SetScriptContent(id string, content []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, ok := s.patchesLocked().scripts[id]
	if !ok {
		return fmt.Errorf("no script %s", id)
	}
	sc.Content = append([]byte(nil), content...)
	sc.SHA256 = digest(sc.Content)
	return nil
}

// SetScriptSHA256 sets the digest the validate endpoint answers without
// touching the file, so the two disagree (a tampered file, or a stale
// digest).
func (s *Server) SetScriptSHA256(id, sha string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, ok := s.patchesLocked().scripts[id]
	if !ok {
		return fmt.Errorf("no script %s", id)
	}
	sc.SHA256 = sha
	return nil
}

// SetPackageExceptions sets the agent's active package_exceptions
// (package names, in order); new patch operations carry them as
// exclusions. None clears them.
func (s *Server) SetPackageExceptions(agentID string, packages ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.patchesLocked()
	if len(packages) == 0 {
		delete(p.exceptions, agentID)
		return
	}
	p.exceptions[agentID] = append([]string(nil), packages...)
}

// SetPatchLXC makes lxcID a proxmox_lxc row with this vmid, so that a
// patch operation may target it (its vmid is filled from the row)
// without a Proxmox ingestion first; ingested rows serve as well.
func (s *Server) SetPatchLXC(lxcID string, vmid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patchesLocked().lxcs[lxcID] = vmid
}

// PatchResultFor returns what the agent uploaded for an operation.
func (s *Server) PatchResultFor(opID string) (PatchResult, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.patchesLocked().results[opID]
	if !ok {
		return PatchResult{}, false
	}
	out := *r
	out.Stdout = append([]byte(nil), r.Stdout...)
	out.Stderr = append([]byte(nil), r.Stderr...)
	return out, true
}

// fillPatchLocked applies the patch_operations create hook to a new
// record's fields: exclusions from the agent's active package
// exceptions when none were given, and the vmid of a known container.
func (s *Server) fillPatchLocked(agentID string, p *PatchOperation) {
	ps := s.patchesLocked()
	if p.Exclusions == nil {
		if ex := ps.exceptions[agentID]; len(ex) > 0 {
			p.Exclusions = append([]string(nil), ex...)
		}
	}
	if p.LXCID != "" && p.VMID == "" {
		if vmid, ok := s.lxcVMIDLocked(p.LXCID); ok {
			p.VMID = strconv.Itoa(vmid)
		}
	}
}

// lxcVMIDLocked finds a proxmox_lxc row: one set with SetPatchLXC, or
// one an agent's Proxmox ingestion stored.
func (s *Server) lxcVMIDLocked(lxcID string) (int, bool) {
	if vmid, ok := s.patchesLocked().lxcs[lxcID]; ok {
		return vmid, true
	}
	if rec, ok := s.pxLocked().cols[ProxmoxLXC].recs[lxcID]; ok {
		vmid, ok := rec["vmid"].(int)
		return vmid, ok
	}
	return 0, false
}

// patchResponse is the backend's PatchResponse; the digest is only in
// the create answer.
type patchResponse struct {
	ID           string    `json:"id"`
	UserID       string    `json:"user_id"`
	AgentID      string    `json:"agent_id"`
	Mode         string    `json:"mode"`
	Status       string    `json:"status"`
	ScriptURL    string    `json:"script_url"`
	ScriptSHA256 string    `json:"script_sha256,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func toPatchResponse(rec map[string]any) patchResponse {
	return patchResponse{
		ID: recString(rec, "id"), UserID: recString(rec, "user_id"), AgentID: recString(rec, "agent_id"),
		Mode: recString(rec, "mode"), Status: recString(rec, "status"), ScriptURL: recString(rec, "script_url"),
	}
}

// handlePatches serves /api/patches and /api/patches/{id}/result.
func (s *Server) handlePatches(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.URL.Path != "/api/patches" {
		rest := strings.TrimPrefix(r.URL.Path, "/api/patches/")
		id, tail, ok := strings.Cut(rest, "/")
		if !ok || tail != "result" || id == "" || r.Method != http.MethodPost {
			notFound(w)
			return
		}
		s.patchResult(w, r, id)
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet && r.Method != http.MethodPatch {
		notFound(w)
		return
	}
	auth, owner := s.requireOwner(w, r)
	if auth == nil {
		return
	}
	byID{
		create: func() { s.createPatch(w, owner, body) },
		get:    func(id string) { s.getPatch(w, owner, id) },
		list:   func() { s.listPatches(w, owner) },
		update: func(id string) { s.updatePatch(w, owner, id, body) },
	}.route(w, r)
}

// createPatch is POST /api/patches: the portal starting a patch run.
func (s *Server) createPatch(w http.ResponseWriter, owner string, body []byte) {
	var req struct {
		AgentID    string `json:"agent_id"`
		Mode       string `json:"mode"`
		LXCID      string `json:"lxc_id"`
		ScriptArgs string `json:"script_args"` // accepted, never stored
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.AgentID == "" {
		errorJSON(w, http.StatusBadRequest, "agent_id is required")
		return
	}
	a, _, msg := s.ownAgentLocked(owner, req.AgentID,
		"agent not found: "+errNoRows, "unauthorized: agent does not belong to user")
	if msg != "" {
		errorJSON(w, http.StatusBadRequest, msg)
		return
	}
	sc := s.scriptForLocked(a.platformFamily, a.osVersion)
	if sc == nil {
		errorJSON(w, http.StatusBadRequest, "no compatible patch script found for agent platform: "+a.platformFamily+" "+a.osVersion)
		return
	}
	if req.Mode != "dry-run" && req.Mode != "apply" {
		errorJSON(w, http.StatusBadRequest, "invalid mode: must be dry-run or apply")
		return
	}
	if req.LXCID != "" {
		if _, ok := s.lxcVMIDLocked(req.LXCID); !ok {
			errorJSON(w, http.StatusBadRequest, "failed to save patch operation: "+errNoRows)
			return
		}
	}
	rec := s.insertPatchLocked(a.id, a.userID, PatchOperation{
		Mode: req.Mode, ScriptID: sc.ID, ScriptURL: sc.URL(), LXCID: req.LXCID,
	})
	resp := toPatchResponse(rec)
	resp.ScriptSHA256 = sc.SHA256
	writeJSON(w, http.StatusCreated, resp)
}

// scriptForLocked is the script choice: the family and version, else
// the family's script for every version.
func (s *Server) scriptForLocked(family, version string) *Script {
	p := s.patchesLocked()
	for _, v := range []string{version, ""} {
		for _, id := range p.scriptOrder {
			sc := p.scripts[id]
			if sc.PlatformFamily == family && sc.OSVersion == v {
				return sc
			}
		}
		if version == "" {
			break
		}
	}
	return nil
}

// insertPatchLocked stores a pending operation (after the create hook)
// and pushes its create event.
func (s *Server) insertPatchLocked(agentID, userID string, p PatchOperation) map[string]any {
	s.fillPatchLocked(agentID, &p)
	var excl any
	if p.Exclusions != nil {
		excl = append([]string(nil), p.Exclusions...)
	}
	rec := map[string]any{
		"agent_id": agentID, "completed_at": "", "error_msg": "", "exclusions": excl, "exit_code": 0,
		"id": pbID(), "lxc_id": p.LXCID, "mode": p.Mode, "output_path": "", "script_id": p.ScriptID,
		"script_url": p.ScriptURL, "started_at": "", "status": "pending", "stderr_file": "",
		"stdout_file": "", "user_id": userID, "vmid": p.VMID,
	}
	s.insertLocked(s.collections[PatchOperations], rec)
	return rec
}

// The get and update handlers' refusals of an operation id, which they
// answer with one status (the result upload words its own).
const (
	patchNotFound = "patch operation not found: " + errNoRows
	patchNotYours = "unauthorized: operation does not belong to user"
)

func (s *Server) getPatch(w http.ResponseWriter, owner, id string) {
	rec, _, msg := s.ownRecord(PatchOperations, ownedByUser(owner), id, patchNotFound, patchNotYours)
	if msg != "" {
		errorJSON(w, http.StatusNotFound, msg)
		return
	}
	writeJSON(w, http.StatusOK, toPatchResponse(rec))
}

func (s *Server) listPatches(w http.ResponseWriter, owner string) {
	writeJSON(w, http.StatusOK, listOwned(s, PatchOperations, owner, toPatchResponse))
}

// updatePatch is PATCH /api/patches?id=, which agents use to say a run
// started.
func (s *Server) updatePatch(w http.ResponseWriter, owner, id string, body []byte) {
	var req struct {
		Status     string `json:"status"`
		OutputPath string `json:"output_path"`
		ErrorMsg   string `json:"error_msg"`
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	if req.Status != "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		rec, _, msg := s.ownRecordLocked(PatchOperations, ownedByUser(owner), id, patchNotFound, patchNotYours)
		if msg != "" {
			errorJSON(w, http.StatusBadRequest, msg)
			return
		}
		if utf8.RuneCountInString(req.ErrorMsg) > 2000 {
			errorJSON(w, http.StatusBadRequest, "failed to update patch operation: "+
				validationError(map[string]string{"error_msg": maxLenMsg(2000)}))
			return
		}
		rec["status"] = req.Status
		switch req.Status {
		case "running":
			rec["started_at"] = formatPB(s.Now())
		case "completed", "failed":
			rec["completed_at"] = formatPB(s.Now())
		}
		if req.OutputPath != "" {
			rec["output_path"] = req.OutputPath
		}
		if req.ErrorMsg != "" {
			rec["error_msg"] = req.ErrorMsg
		}
		s.saveLocked(s.collections[PatchOperations], rec)
	}
	writeJSON(w, http.StatusOK, map[string]string{"success": "true"})
}

// uploadedFile reads one file part of the result form; ok is false when
// the part is absent.
func uploadedFile(r *http.Request, field string) (data []byte, name string, ok bool, err error) {
	f, h, ferr := r.FormFile(field)
	if ferr != nil {
		return nil, "", false, nil
	}
	defer f.Close()
	data, err = io.ReadAll(f)
	return data, h.Filename, true, err
}

// storedName is how PocketBase names an uploaded file: the sanitized
// base, an underscore, ten random characters, the extension.
func storedName(sent string) string {
	base, ext := sent, ""
	if i := strings.LastIndexByte(sent, '.'); i > 0 {
		base, ext = sent[:i], sent[i:]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String() + "_" + randomFrom("abcdefghijklmnopqrstuvwxyz0123456789", 10) + ext
}

// patchResult is POST /api/patches/{id}/result: the agent's upload.
func (s *Server) patchResult(w http.ResponseWriter, r *http.Request, id string) {
	auth := s.requireAgent(w, r, http.StatusForbidden, "only agents can upload results")
	if auth == nil {
		return
	}
	if _, status, msg := s.ownRecord(PatchOperations, ownedByAgent(auth.id), id,
		"patch operation not found", "unauthorized: operation does not belong to agent"); msg != "" {
		errorJSON(w, status, msg)
		return
	}
	// FormValue parses the multipart form (or an urlencoded one); a body
	// that is neither leaves every value empty, as with PocketBase.
	exitCode := r.FormValue("exit_code")
	lxcID := r.FormValue("lxc_id")
	res := PatchResult{ExitCode: exitCode, LXCID: lxcID}
	var tooLarge []string
	for _, f := range []struct {
		field string
		data  *[]byte
		sent  *string
		has   *bool
	}{{"stdout_file", &res.Stdout, &res.StdoutSent, &res.HasStdoutFile}, {"stderr_file", &res.Stderr, &res.StderrSent, &res.HasStderrFile}} {
		data, name, present, err := uploadedFile(r, f.field)
		if err != nil {
			errorJSON(w, http.StatusBadRequest, "failed to read "+f.field)
			return
		}
		if !present {
			continue
		}
		if len(data) > MaxPatchFile {
			tooLarge = append(tooLarge, fmt.Sprintf("%s: Failed to upload %q - the maximum allowed file size is %d bytes.", f.field, name, MaxPatchFile))
			continue
		}
		*f.data, *f.sent, *f.has = data, name, true
	}
	if len(tooLarge) > 0 {
		errorJSON(w, http.StatusInternalServerError, "failed to save patch result: "+strings.Join(tooLarge, "; "))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.collections[PatchOperations].recs[id]
	if !ok {
		errorJSON(w, http.StatusNotFound, "patch operation not found")
		return
	}
	if exitCode != "" {
		n, err := strconv.ParseFloat(strings.TrimSpace(exitCode), 64)
		if err != nil {
			n = 0
		}
		rec["exit_code"] = n
	}
	prev := s.patchesLocked().results[id]
	if prev != nil {
		res.Uploads = prev.Uploads
		if !res.HasStdoutFile {
			res.Stdout, res.StdoutSent, res.StdoutStored, res.HasStdoutFile = prev.Stdout, prev.StdoutSent, prev.StdoutStored, prev.HasStdoutFile
		}
		if !res.HasStderrFile {
			res.Stderr, res.StderrSent, res.StderrStored, res.HasStderrFile = prev.Stderr, prev.StderrSent, prev.StderrStored, prev.HasStderrFile
		}
	}
	if res.HasStdoutFile && res.StdoutStored == "" {
		res.StdoutStored = storedName(res.StdoutSent)
		rec["stdout_file"] = res.StdoutStored
	}
	if res.HasStderrFile && res.StderrStored == "" {
		res.StderrStored = storedName(res.StderrSent)
		rec["stderr_file"] = res.StderrStored
	}
	res.Uploads++
	s.patchesLocked().results[id] = &res
	if exitCode == "0" {
		rec["status"] = "completed"
	} else {
		rec["status"] = "failed"
	}
	rec["completed_at"] = formatPB(s.Now())
	s.saveLocked(s.collections[PatchOperations], rec)
	writeJSON(w, http.StatusOK, map[string]string{"status": "updated"})
}

// handleFiles serves the PocketBase file API
// (/api/files/<collection>/<record>/<file>) for the scripts; the file
// field is public, so no token is needed.
func (s *Server) handleFiles(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/files/"), "/")
	if len(parts) != 3 || parts[0] != ScriptsCollectionID {
		notFound(w)
		return
	}
	s.mu.Lock()
	sc, ok := s.patchesLocked().scripts[parts[1]]
	var content []byte
	if ok && sc.File == parts[2] {
		content = append([]byte(nil), sc.Content...)
	} else {
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	w.Header().Set("Content-Type", "text/x-shellscript")
	w.Header().Set("Content-Length", strconv.Itoa(len(content)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(content)
}

// handleScripts serves /api/scripts/{id}/validate.
func (s *Server) handleScripts(w http.ResponseWriter, r *http.Request) {
	id, tail, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/api/scripts/"), "/")
	if !ok || tail != "validate" || id == "" {
		notFound(w)
		return
	}
	if s.requireAuth(w, r) == nil {
		return
	}
	s.mu.Lock()
	sc, found := s.patchesLocked().scripts[id]
	var out map[string]string
	if found {
		out = map[string]string{"id": sc.ID, "name": sc.Name, "sha256": sc.SHA256}
	}
	s.mu.Unlock()
	if !found {
		errorJSON(w, http.StatusNotFound, "script not found")
		return
	}
	writeJSON(w, http.StatusOK, out)
}
