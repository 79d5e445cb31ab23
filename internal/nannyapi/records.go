package nannyapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Collections the agent subscribes to and catches up on; they are also
// the realtime event names.
const (
	CollectionInvestigations   = "investigations"
	CollectionPatchOperations  = "patch_operations"
	CollectionRebootOperations = "reboot_operations"
)

// Topics is the realtime subscription of the daemon.
var Topics = []string{CollectionInvestigations, CollectionPatchOperations, CollectionRebootOperations}

// DateTime is a PocketBase record date ("2026-11-26 00:51:01.776Z"; ""
// is the zero time). It also reads RFC 3339.
type DateTime struct{ time.Time }

const pbLayout = "2006-01-02 15:04:05.000Z07:00"

// UnmarshalJSON reads a PocketBase date.
func (d *DateTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		d.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("date: %w", err)
	}
	if s == "" {
		d.Time = time.Time{}
		return nil
	}
	for _, layout := range []string{pbLayout, "2006-01-02 15:04:05Z07:00", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			d.Time = t.UTC()
			return nil
		}
	}
	return fmt.Errorf("date %q is neither PocketBase's format nor RFC 3339", s)
}

// MarshalJSON writes PocketBase's format ("" for the zero time).
func (d DateTime) MarshalJSON() ([]byte, error) {
	if d.IsZero() {
		return []byte(`""`), nil
	}
	return json.Marshal(d.UTC().Format("2006-01-02 15:04:05.000Z"))
}

// InvestigationRecord is an investigations record (realtime and records
// API).
type InvestigationRecord struct {
	ID             string          `json:"id"`
	CollectionID   string          `json:"collectionId"`
	CollectionName string          `json:"collectionName"`
	AgentID        string          `json:"agent_id"`
	UserID         string          `json:"user_id"`
	UserPrompt     string          `json:"user_prompt"`
	Priority       string          `json:"priority"`
	Status         string          `json:"status"`
	EpisodeID      string          `json:"episode_id"`
	ResolutionPlan string          `json:"resolution_plan"`
	InitiatedAt    DateTime        `json:"initiated_at"`
	CompletedAt    DateTime        `json:"completed_at"`
	Metadata       json.RawMessage `json:"metadata"`
}

// InitiatedBy is metadata.initiated_by ("user", "agent" or "").
func (r *InvestigationRecord) InitiatedBy() string {
	var m struct {
		InitiatedBy string `json:"initiated_by"`
	}
	if json.Unmarshal(r.Metadata, &m) != nil {
		return ""
	}
	return m.InitiatedBy
}

// PatchOperationRecord is a patch_operations record.
type PatchOperationRecord struct {
	ID             string   `json:"id"`
	CollectionID   string   `json:"collectionId"`
	CollectionName string   `json:"collectionName"`
	AgentID        string   `json:"agent_id"`
	UserID         string   `json:"user_id"`
	Mode           string   `json:"mode"`
	Status         string   `json:"status"`
	ScriptID       string   `json:"script_id"`
	ScriptURL      string   `json:"script_url"`
	OutputPath     string   `json:"output_path"`
	ErrorMsg       string   `json:"error_msg"`
	ExitCode       int      `json:"exit_code"`
	Exclusions     []string `json:"exclusions"`
	// LXCID is the proxmox_lxc record's ID, VMID the container number
	// (a string).
	LXCID       string   `json:"lxc_id"`
	VMID        string   `json:"vmid"`
	StdoutFile  string   `json:"stdout_file"`
	StderrFile  string   `json:"stderr_file"`
	StartedAt   DateTime `json:"started_at"`
	CompletedAt DateTime `json:"completed_at"`
}

// RebootOperationRecord is a reboot_operations record.
type RebootOperationRecord struct {
	ID             string   `json:"id"`
	CollectionID   string   `json:"collectionId"`
	CollectionName string   `json:"collectionName"`
	AgentID        string   `json:"agent_id"`
	UserID         string   `json:"user_id"`
	Status         string   `json:"status"`
	Reason         string   `json:"reason"`
	ErrorMessage   string   `json:"error_message"`
	TimeoutSeconds int      `json:"timeout_seconds"`
	LXCID          string   `json:"lxc_id"`
	VMID           string   `json:"vmid"`
	RequestedAt    DateTime `json:"requested_at"`
	AcknowledgedAt DateTime `json:"acknowledged_at"`
	CompletedAt    DateTime `json:"completed_at"`
}

// ListQuery selects records: a PocketBase filter ("status='pending'"),
// a sort ("-initiated_at,id"), a page (from 1) and a page size
// (default 30, at most 1000).
type ListQuery struct {
	Filter    string
	Sort      string
	Page      int
	PerPage   int
	SkipTotal bool
}

// RecordPage is one page of records; Items are the records' JSON, to
// decode into the typed records. TotalItems and TotalPages are -1 with
// SkipTotal.
type RecordPage struct {
	Page       int               `json:"page"`
	PerPage    int               `json:"perPage"`
	TotalItems int               `json:"totalItems"`
	TotalPages int               `json:"totalPages"`
	Items      []json.RawMessage `json:"items"`
}

// ListRecords reads one page of a collection through PocketBase's
// records API; the collection's rules show the agent only its own
// rows. An expired token is not refused there: it reads as a guest and
// gets an empty page, so callers should hold a valid token.
func (c *Client) ListRecords(ctx context.Context, collection string, q ListQuery) (*RecordPage, error) {
	if collection == "" || strings.ContainsAny(collection, "/?#") {
		return nil, fmt.Errorf("nannyapi: list records: bad collection name %q", collection)
	}
	v := url.Values{}
	if q.Filter != "" {
		v.Set("filter", q.Filter)
	}
	if q.Sort != "" {
		v.Set("sort", q.Sort)
	}
	if q.Page > 0 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if q.PerPage > 0 {
		v.Set("perPage", strconv.Itoa(q.PerPage))
	}
	if q.SkipTotal {
		v.Set("skipTotal", "1")
	}
	path := "/api/collections/" + collection + "/records"
	var out RecordPage
	err := c.do(ctx, &request{
		op: "GET " + path, method: http.MethodGet, path: path, query: v, auth: true, agentID: true, out: &out,
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// maxCatchUpPages bounds ListAll: 50 pages of 200 records.
const (
	maxCatchUpPages = 50
	catchUpPerPage  = 200
)

// ListAll reads every record matching filter, page by page (at most
// 10000; more is an error rather than a silent cut).
func (c *Client) ListAll(ctx context.Context, collection, filter, sort string) ([]json.RawMessage, error) {
	var all []json.RawMessage
	for page := 1; page <= maxCatchUpPages; page++ {
		p, err := c.ListRecords(ctx, collection, ListQuery{Filter: filter, Sort: sort, Page: page, PerPage: catchUpPerPage})
		if err != nil {
			return nil, err
		}
		all = append(all, p.Items...)
		if len(p.Items) < p.PerPage || page >= p.TotalPages {
			return all, nil
		}
	}
	return nil, fmt.Errorf("nannyapi: %s: more than %d records match %q", collection, maxCatchUpPages*catchUpPerPage, filter)
}

// Subscribe sets the realtime subscriptions of a connected client
// (POST /api/realtime, 204). The subscription's auth is this request's
// bearer; X-Agent-ID is not sent. A clientId the server no longer knows
// is an *Error with IsNotFound (reconnect); a changed or lost auth is
// one with IsForbidden.
func (c *Client) Subscribe(ctx context.Context, clientID string, topics []string) error {
	if clientID == "" {
		return errors.New("nannyapi: subscribe: client ID is required")
	}
	if topics == nil {
		topics = []string{}
	}
	return c.do(ctx, &request{
		op: "POST /api/realtime", method: http.MethodPost, path: "/api/realtime", auth: true,
		body: struct {
			ClientID      string   `json:"clientId"`
			Subscriptions []string `json:"subscriptions"`
		}{clientID, topics},
		ok: []int{http.StatusNoContent},
	})
}

// DecodeRecord decodes a record's JSON strictly enough to notice a
// payload of the wrong collection: the collectionName, when present,
// must be want.
func DecodeRecord(raw json.RawMessage, want string, out any) error {
	var head struct {
		CollectionName string `json:"collectionName"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return fmt.Errorf("nannyapi: %s record: %w", want, err)
	}
	if head.CollectionName != "" && head.CollectionName != want {
		return fmt.Errorf("nannyapi: record of %q where %q was expected", head.CollectionName, want)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("nannyapi: %s record: %w", want, err)
	}
	return nil
}
