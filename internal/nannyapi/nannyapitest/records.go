package nannyapitest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// pbTime is PocketBase's record date format (a space, not a T).
const pbTime = "2006-01-02 15:04:05.000Z"

func formatPB(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(pbTime)
}

type fieldKind int

const (
	kindText fieldKind = iota
	kindNumber
	kindDate
	kindJSON
)

type collection struct {
	id, name string
	fields   map[string]fieldKind
	order    []string
	recs     map[string]map[string]any
}

func newCollections() map[string]*collection {
	mk := func(id, name string, fields map[string]fieldKind) *collection {
		fields["id"] = kindText
		return &collection{id: id, name: name, fields: fields, recs: map[string]map[string]any{}}
	}
	return map[string]*collection{
		Investigations: mk(InvestigationsCollectionID, Investigations, map[string]fieldKind{
			"agent_id": kindText, "completed_at": kindDate, "episode_id": kindText, "initiated_at": kindDate,
			"metadata": kindJSON, "priority": kindText, "resolution_plan": kindText, "status": kindText,
			"user_id": kindText, "user_prompt": kindText,
		}),
		PatchOperations: mk(PatchOperationsCollectionID, PatchOperations, map[string]fieldKind{
			"agent_id": kindText, "completed_at": kindDate, "error_msg": kindText, "exclusions": kindJSON,
			"exit_code": kindNumber, "lxc_id": kindText, "mode": kindText, "output_path": kindText,
			"script_id": kindText, "script_url": kindText, "started_at": kindDate, "status": kindText,
			"stderr_file": kindText, "stdout_file": kindText, "user_id": kindText, "vmid": kindText,
		}),
		RebootOperations: mk(RebootOperationsCollectionID, RebootOperations, map[string]fieldKind{
			"acknowledged_at": kindDate, "agent_id": kindText, "completed_at": kindDate, "error_message": kindText,
			"lxc_id": kindText, "reason": kindText, "requested_at": kindDate, "status": kindText,
			"timeout_seconds": kindNumber, "user_id": kindText, "vmid": kindText,
		}),
	}
}

func (s *Server) collectionLocked(nameOrID string) *collection {
	if c, ok := s.collections[nameOrID]; ok {
		return c
	}
	for _, c := range s.collections {
		if c.id == nameOrID {
			return c
		}
	}
	return nil
}

// insertLocked stores a new record and pushes its create event.
func (s *Server) insertLocked(c *collection, rec map[string]any) {
	rec["collectionId"] = c.id
	rec["collectionName"] = c.name
	c.order = append(c.order, rec["id"].(string))
	c.recs[rec["id"].(string)] = rec
	s.broadcastLocked(c, "create", rec)
	s.notifyLocked()
}

// saveLocked pushes the update event of a changed record.
func (s *Server) saveLocked(c *collection, rec map[string]any) {
	s.broadcastLocked(c, "update", rec)
	s.notifyLocked()
}

func copyRecord(rec map[string]any) map[string]any {
	out := make(map[string]any, len(rec))
	for k, v := range rec {
		out[k] = v
	}
	return out
}

// recordLocked finds a record for the helpers tests call, or says which
// of the collection and the record there is not.
func (s *Server) recordLocked(collectionName, id string) (*collection, map[string]any, error) {
	c := s.collectionLocked(collectionName)
	if c == nil {
		return nil, nil, fmt.Errorf("no collection %q", collectionName)
	}
	rec, ok := c.recs[id]
	if !ok {
		return nil, nil, fmt.Errorf("no record %s/%s", collectionName, id)
	}
	return c, rec, nil
}

// Record returns a copy of a record as the records API shows it.
func (s *Server) Record(collectionName, id string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, rec, err := s.recordLocked(collectionName, id)
	if err != nil {
		return nil, false
	}
	return copyRecord(rec), true
}

// Records returns copies of a collection's records in creation order.
func (s *Server) Records(collectionName string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.collectionLocked(collectionName)
	if c == nil {
		return nil
	}
	out := make([]map[string]any, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, copyRecord(c.recs[id]))
	}
	return out
}

// UpdateRecord sets fields of a record (time.Time values are stored in
// PocketBase's format) and pushes an update event, as a hook or the
// portal changing it would.
func (s *Server) UpdateRecord(collectionName, id string, fields map[string]any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, rec, err := s.recordLocked(collectionName, id)
	if err != nil {
		return err
	}
	for k, v := range fields {
		if _, known := c.fields[k]; !known || k == "id" {
			return fmt.Errorf("collection %s has no field %q", collectionName, k)
		}
		if t, ok := v.(time.Time); ok {
			v = formatPB(t)
		}
		rec[k] = v
	}
	s.saveLocked(c, rec)
	return nil
}

// DeleteRecord removes a record and pushes its delete event.
func (s *Server) DeleteRecord(collectionName, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, rec, err := s.recordLocked(collectionName, id)
	if err != nil {
		return err
	}
	delete(c.recs, id)
	c.order = slices.DeleteFunc(c.order, func(x string) bool { return x == id })
	s.broadcastLocked(c, "delete", rec)
	s.notifyLocked()
	return nil
}

// CreateInvestigation creates an investigation as the agent's owner
// does from the portal (POST /api/investigations with a user token):
// it is pending, initiated_by "user", and pushes a create event.
func (s *Server) CreateInvestigation(agentID, issue, priority string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[agentID]
	if !ok {
		return "", fmt.Errorf("agent not found: sql: no rows in result set")
	}
	rec, msg := s.createInvestigationLocked(a.userID, agentID, issue, priority, "user")
	if msg != "" {
		return "", errors.New(msg)
	}
	return rec["id"].(string), nil
}

// PatchOperation is what the portal sets on a new patch operation; the
// zero value is a dry run of the seeded debian script.
type PatchOperation struct {
	Mode       string // "dry-run" (default) or "apply"
	ScriptID   string
	ScriptURL  string
	Exclusions []string // nil is stored as null
	LXCID      string
	VMID       string
}

// The seeded debian script's IDs (§2.9).
const (
	DefaultScriptID  = "r13zcso5sx93pj7"
	DefaultScriptURL = "/api/files/pbc_1280174292/r13zcso5sx93pj7/apt_update_spmzr2mmy0.sh"
)

// CreatePatchOperation creates a pending patch operation for the agent
// (owned by the agent's user) and pushes its create event. As the
// backend's create hook does, nil Exclusions are filled from the
// agent's package exceptions (SetPackageExceptions) and an empty VMID
// from a container set with SetPatchLXC.
func (s *Server) CreatePatchOperation(agentID string, p PatchOperation) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[agentID]
	if !ok {
		return "", fmt.Errorf("agent not found")
	}
	if p.Mode == "" {
		p.Mode = "dry-run"
	}
	if p.Mode != "dry-run" && p.Mode != "apply" {
		return "", errors.New("invalid mode: must be dry-run or apply")
	}
	if p.ScriptID == "" {
		p.ScriptID = DefaultScriptID
	}
	if p.ScriptURL == "" {
		p.ScriptURL = DefaultScriptURL
	}
	rec := s.insertPatchLocked(agentID, a.userID, p)
	return rec["id"].(string), nil
}

// CreateRebootOperation creates a host reboot operation for the agent
// (CreateReboot with a reason and a timeout; 0 means 300 s).
func (s *Server) CreateRebootOperation(agentID, reason string, timeoutSeconds int) (string, error) {
	return s.CreateReboot(agentID, RebootOperation{Reason: reason, TimeoutSeconds: timeoutSeconds})
}

// canSee is the collections' ListRule:
// user_id = @request.auth.id || agent_id = @request.auth.id.
func canSee(auth *authRecord, rec map[string]any) bool {
	if auth == nil {
		return false
	}
	return rec["user_id"] == auth.id || rec["agent_id"] == auth.id
}

// PocketBase's search limits.
const (
	defaultPerPage = 30
	maxPerPage     = 1000
)

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, name string) {
	auth := s.authenticate(r)
	s.mu.Lock()
	c := s.collectionLocked(name)
	s.mu.Unlock()
	if c == nil {
		writeRaw(w, http.StatusNotFound, envelope(http.StatusNotFound, "Missing collection context.", nil))
		return
	}
	bad := func() { writeRaw(w, http.StatusBadRequest, envelope(http.StatusBadRequest, msgGeneric, nil)) }
	q := r.URL.Query()
	page, perPage := 1, defaultPerPage
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			bad()
			return
		}
		page = n
	}
	if v := q.Get("perPage"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			bad()
			return
		}
		perPage = n
	}
	skipTotal := false
	if v := q.Get("skipTotal"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad()
			return
		}
		skipTotal = b
	}
	var filter expr
	if f := q.Get("filter"); f != "" {
		e, err := parseFilter(f, c)
		if err != nil {
			bad()
			return
		}
		filter = e
	}
	sorts, err := parseSort(q.Get("sort"), c)
	if err != nil {
		bad()
		return
	}

	s.mu.Lock()
	var items []map[string]any
	for _, id := range c.order {
		rec := c.recs[id]
		if canSee(auth, rec) && (filter == nil || filter.eval(rec)) {
			items = append(items, copyRecord(rec))
		}
	}
	s.mu.Unlock()
	slices.SortStableFunc(items, func(a, b map[string]any) int {
		for _, sf := range sorts {
			if n := compareValues(a[sf.field], b[sf.field]); n != 0 {
				if sf.desc {
					return -n
				}
				return n
			}
		}
		return 0
	})
	if perPage <= 0 {
		perPage = defaultPerPage
	} else if perPage > maxPerPage {
		perPage = maxPerPage
	}
	if page <= 0 {
		page = 1
	}
	total := len(items)
	totalPages := int(math.Ceil(float64(total) / float64(perPage)))
	from := min((page-1)*perPage, total)
	to := min(from+perPage, total)
	out := make([]json.RawMessage, 0, to-from)
	for _, rec := range items[from:to] {
		b, _ := json.Marshal(rec)
		out = append(out, b)
	}
	if skipTotal {
		total, totalPages = -1, -1
	}
	writeJSON(w, http.StatusOK, struct {
		Page       int               `json:"page"`
		PerPage    int               `json:"perPage"`
		TotalItems int               `json:"totalItems"`
		TotalPages int               `json:"totalPages"`
		Items      []json.RawMessage `json:"items"`
	}{page, perPage, total, totalPages, out})
}

type sortField struct {
	field string
	desc  bool
}

func parseSort(s string, c *collection) ([]sortField, error) {
	var out []sortField
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		sf := sortField{}
		switch {
		case strings.HasPrefix(part, "-"):
			sf.desc, part = true, part[1:]
		case strings.HasPrefix(part, "+"):
			part = part[1:]
		}
		if _, ok := c.fields[part]; !ok {
			return nil, fmt.Errorf("invalid sort field %q", part)
		}
		sf.field = part
		out = append(out, sf)
	}
	return out, nil
}

// A filter is the subset of PocketBase's filter syntax the agent can
// use on these collections: field op literal comparisons (=, !=, >,
// >=, <, <=, ~, !~) joined by && and || with parentheses.
type expr interface{ eval(rec map[string]any) bool }

type andExpr struct{ l, r expr }
type orExpr struct{ l, r expr }
type cmpExpr struct {
	op          string
	left, right operand
}

type operand struct {
	field string // set for a field reference
	value any    // literal: string, float64, bool or nil
}

func (e andExpr) eval(rec map[string]any) bool { return e.l.eval(rec) && e.r.eval(rec) }
func (e orExpr) eval(rec map[string]any) bool  { return e.l.eval(rec) || e.r.eval(rec) }

func (o operand) resolve(rec map[string]any) any {
	if o.field != "" {
		v := rec[o.field]
		switch v.(type) {
		case map[string]any, []any, []string:
			b, _ := json.Marshal(v)
			return string(b)
		}
		return v
	}
	return o.value
}

func (e cmpExpr) eval(rec map[string]any) bool {
	l, r := e.left.resolve(rec), e.right.resolve(rec)
	switch e.op {
	case "=":
		return equalValues(l, r)
	case "!=":
		return !equalValues(l, r)
	case ">":
		return compareValues(l, r) > 0
	case ">=":
		return compareValues(l, r) >= 0
	case "<":
		return compareValues(l, r) < 0
	case "<=":
		return compareValues(l, r) <= 0
	case "~":
		return strings.Contains(strings.ToLower(str(l)), strings.ToLower(str(r)))
	case "!~":
		return !strings.Contains(strings.ToLower(str(l)), strings.ToLower(str(r)))
	}
	return false
}

func num(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	}
	return 0, false
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		if x {
			return "1"
		}
		return "0"
	}
	if n, ok := num(v); ok {
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == "" || x == "null" || x == "[]" || x == "{}"
	case bool:
		return !x
	}
	n, ok := num(v)
	return ok && n == 0
}

// equalValues compares as SQLite would for these columns; null matches
// a field's empty value, as PocketBase's filter does.
func equalValues(a, b any) bool {
	if a == nil || b == nil {
		return isZero(a) && isZero(b)
	}
	return compareValues(a, b) == 0
}

func compareValues(a, b any) int {
	an, aok := num(a)
	bn, bok := num(b)
	if aok && bok {
		switch {
		case an < bn:
			return -1
		case an > bn:
			return 1
		}
		return 0
	}
	return strings.Compare(str(a), str(b))
}

type filterParser struct {
	toks []string
	pos  int
	c    *collection
}

func parseFilter(s string, c *collection) (expr, error) {
	toks, err := lexFilter(s)
	if err != nil {
		return nil, err
	}
	p := &filterParser{toks: toks, c: c}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.pos])
	}
	return e, nil
}

func (p *filterParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return ""
}

func (p *filterParser) or() (expr, error) {
	l, err := p.and()
	for err == nil && p.peek() == "||" {
		p.pos++
		var r expr
		if r, err = p.and(); err == nil {
			l = orExpr{l, r}
		}
	}
	return l, err
}

func (p *filterParser) and() (expr, error) {
	l, err := p.unary()
	for err == nil && p.peek() == "&&" {
		p.pos++
		var r expr
		if r, err = p.unary(); err == nil {
			l = andExpr{l, r}
		}
	}
	return l, err
}

func (p *filterParser) unary() (expr, error) {
	if p.peek() == "(" {
		p.pos++
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, errors.New("missing )")
		}
		p.pos++
		return e, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	op := p.peek()
	switch op {
	case "=", "!=", ">", ">=", "<", "<=", "~", "!~":
	default:
		return nil, fmt.Errorf("expected a comparison, got %q", op)
	}
	p.pos++
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	return cmpExpr{op: op, left: l, right: r}, nil
}

func (p *filterParser) operand() (operand, error) {
	t := p.peek()
	if t == "" {
		return operand{}, errors.New("unexpected end of filter")
	}
	p.pos++
	switch {
	case t[0] == '\'' || t[0] == '"':
		return operand{value: t[1:]}, nil
	case t == "true" || t == "false":
		return operand{value: t == "true"}, nil
	case t == "null":
		return operand{}, nil
	}
	if n, err := strconv.ParseFloat(t, 64); err == nil {
		return operand{value: n}, nil
	}
	if _, ok := p.c.fields[t]; ok {
		return operand{field: t}, nil
	}
	return operand{}, fmt.Errorf("unknown field %q", t)
}

// lexFilter splits a filter into tokens; a string token keeps its
// opening quote as a marker and loses its escapes.
func lexFilter(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		ch := s[i]
		switch {
		case ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r':
			i++
		case ch == '(' || ch == ')':
			toks = append(toks, string(ch))
			i++
		case ch == '\'' || ch == '"':
			var b strings.Builder
			b.WriteByte(ch)
			j := i + 1
			for ; j < len(s) && s[j] != ch; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, errors.New("unterminated string")
			}
			toks = append(toks, b.String())
			i = j + 1
		case strings.HasPrefix(s[i:], "&&") || strings.HasPrefix(s[i:], "||") ||
			strings.HasPrefix(s[i:], "!=") || strings.HasPrefix(s[i:], ">=") ||
			strings.HasPrefix(s[i:], "<=") || strings.HasPrefix(s[i:], "!~"):
			toks = append(toks, s[i:i+2])
			i += 2
		case ch == '=' || ch == '>' || ch == '<' || ch == '~':
			toks = append(toks, string(ch))
			i++
		default:
			j := i
			for j < len(s) && (isIdent(s[j]) || s[j] == '.' || s[j] == '-' || s[j] == '+') {
				j++
			}
			if j == i {
				r, _ := utf8.DecodeRuneInString(s[i:])
				return nil, fmt.Errorf("unexpected %q", r)
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}

func isIdent(c byte) bool {
	return c == '_' || c == '@' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
