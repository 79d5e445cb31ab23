// Package nannyapitest is an in-process NannyAPI for tests: the backend
// of NANNYAPI.md (the nannyapi snapshot of 2026-01-28 on PocketBase
// v0.35.0) as it really behaves, and no more. It answers the /api/agent
// action multiplexer, the investigations API with its TensorZero proxy,
// the PocketBase realtime stream and the records API with the status
// codes and the two error shapes the backend uses ({"error":…} from its
// own handlers, {"data":{},"message":…,"status":N} from PocketBase), so
// that an agent that passes against it passes against the real one.
//
// Tests drive the portal side with helpers (users, authorizing device
// codes, creating investigations, patch and reboot operations, which
// push realtime events), inject faults (status codes, latency, hangs,
// connection resets, dropped streams, expired tokens), and read back
// every request the server received.
//
// As with the backend, a missing, invalid or expired token makes a
// request a guest's rather than an error of its own: ingest-metrics
// and /api/investigations answer 401 {"error":"authentication
// required"}, the user actions (authorize, list, health, revoke) a 500
// panic body, the records API an empty page, and the realtime
// subscription a guest's 204 (no events) or, after an authenticated
// one, a 403.
package nannyapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Collection IDs of the backend's PocketBase schema.
const (
	UsersCollectionID            = "_pb_users_auth_"
	AgentsCollectionID           = "pbc_3549173383"
	InvestigationsCollectionID   = "pbc_59972043"
	PatchOperationsCollectionID  = "pbc_2550880806"
	RebootOperationsCollectionID = "pbc_3109392152"
)

// Collection names the agent subscribes to and lists.
const (
	Investigations   = "investigations"
	PatchOperations  = "patch_operations"
	RebootOperations = "reboot_operations"
)

// TensorZeroModel is the model the backend always sends upstream,
// whatever the agent asked for.
const TensorZeroModel = "tensorzero::function_name::diagnose_and_heal_application"

// Options configure a server; the zero value is the backend's defaults
// with no TensorZero configured.
type Options struct {
	// FrontendURL prefixes verification_uri (FRONTEND_URL; default
	// http://localhost:8080).
	FrontendURL string
	// AccessTokenTTL is the JWT lifetime (default 604800 s, PocketBase's
	// default for the agents collection). Responses still say
	// "expires_in":3600, as the backend does.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is how long a refresh token lives after
	// registration (default 30 days); refresh never extends it.
	RefreshTokenTTL time.Duration
	// DeviceCodeTTL is the device code's lifetime (default 10 min).
	DeviceCodeTTL time.Duration
	// IdleTimeout closes a realtime stream that sent nothing for this
	// long (default 300 s, PocketBase's).
	IdleTimeout time.Duration
	// TensorZeroURL and TensorZeroKey are TENSORZERO_API_URL and
	// TENSORZERO_API_KEY: the proxy posts to
	// TensorZeroURL+"/openai/v1/chat/completions". With either empty the
	// proxy panics (500), as the backend does.
	TensorZeroURL string
	TensorZeroKey string
	// UpstreamTimeout bounds a proxied call (default 5 min).
	UpstreamTimeout time.Duration
	// NoClickHouse models a backend without CLICKHOUSE_URL: once an
	// investigation has an episode_id, GET ?id= and proxy calls on it
	// panic (500). The default is a configured (if unreachable)
	// ClickHouse, whose failures are only logged.
	NoClickHouse bool
	// MaxRecorded is how many requests Requests keeps (default 4096, the
	// newest); counts are kept for all.
	MaxRecorded int
}

func (o *Options) defaults() {
	if o.FrontendURL == "" {
		o.FrontendURL = "http://localhost:8080"
	}
	if o.AccessTokenTTL == 0 {
		o.AccessTokenTTL = 604800 * time.Second
	}
	if o.RefreshTokenTTL == 0 {
		o.RefreshTokenTTL = 30 * 24 * time.Hour
	}
	if o.DeviceCodeTTL == 0 {
		o.DeviceCodeTTL = 10 * time.Minute
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 300 * time.Second
	}
	if o.UpstreamTimeout == 0 {
		o.UpstreamTimeout = 5 * time.Minute
	}
	if o.MaxRecorded == 0 {
		o.MaxRecorded = 4096
	}
}

// Request is one request as the server received it.
type Request struct {
	Method string
	Path   string
	// Query is the raw query string.
	Query  string
	Header http.Header
	Body   []byte
	// Action is the /api/agent action ("" elsewhere or when the body
	// does not parse).
	Action string
	// Status is the answer's status code; 0 while the request is still
	// being served (a hang, an open stream) or when the connection was
	// reset.
	Status int
	At     time.Time
}

// Key is the fault and count key of the request: the action for
// /api/agent, else "METHOD /path".
func (r Request) Key() string {
	if r.Action != "" {
		return r.Action
	}
	return r.Method + " " + r.Path
}

// Fault is what the server does instead of (or before) answering
// requests that match a key. Build it with the fields; zero fields do
// nothing.
type Fault struct {
	// Delay is added before the request is handled (or faulted).
	Delay time.Duration
	// Status answers with this code instead of handling the request;
	// Body is the answer (default: the PocketBase envelope for Status).
	Status int
	Body   string
	// Hang never answers: the handler waits until the client goes away
	// or the server closes.
	Hang bool
	// Reset closes the connection without an answer.
	Reset bool
	// Times limits the fault to the next Times matching requests
	// (0: until cleared).
	Times int
}

// Server is the test backend.
type Server struct {
	*httptest.Server
	t    testing.TB
	opts Options

	secret []byte
	done   chan struct{}
	offset atomic.Int64 // clock advance in ns

	mu sync.Mutex
	// changed is closed and replaced on every state change, for Wait.
	changed chan struct{}

	users       map[string]*User
	agents      map[string]*agent
	agentOrder  []string
	deviceCodes map[string]*deviceCode // by device_code
	userCodes   map[string]*deviceCode // by user_code
	// maxExp is the latest exp issued; tokens with exp up to
	// expiredUpTo were expired by ExpireAccessTokens.
	maxExp       int64
	expiredUpTo  int64
	staticTokens map[string]*staticToken
	renewal      bool
	staticAuth   bool

	collections map[string]*collection
	clients     map[string]*rtClient
	// Fleet operations (§2.8–2.10), each kept by its own file.
	patches patchState
	reboots rebootState
	proxmox proxmoxState

	faults map[string]*Fault
	// requests is a ring of the newest MaxRecorded requests: request
	// number g (counting all, from 0) sits at g % MaxRecorded; reqNext
	// is the next number, reqLen how many are kept.
	requests []Request
	reqNext  int
	reqLen   int
	counts   map[string]int
}

// New starts a server; it is closed when the test ends.
func New(t testing.TB, opts Options) *Server {
	opts.defaults()
	s := &Server{
		t:            t,
		opts:         opts,
		secret:       []byte(randomHex(32)),
		done:         make(chan struct{}),
		changed:      make(chan struct{}),
		users:        map[string]*User{},
		agents:       map[string]*agent{},
		deviceCodes:  map[string]*deviceCode{},
		userCodes:    map[string]*deviceCode{},
		staticTokens: map[string]*staticToken{},
		collections:  newCollections(),
		clients:      map[string]*rtClient{},
		faults:       map[string]*Fault{},
		counts:       map[string]int{},
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Close ends hanging handlers and open streams, then stops the server.
// It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		return
	default:
		close(s.done)
	}
	s.mu.Unlock()
	s.Server.Close()
}

// Now is the server's clock: real time plus Advance.
func (s *Server) Now() time.Time { return time.Now().Add(time.Duration(s.offset.Load())) }

// Advance moves the server's clock forward (token, refresh token and
// device code expiry use it; the realtime idle timeout does not).
func (s *Server) Advance(d time.Duration) { s.offset.Add(int64(d)); s.notify() }

// Options returns the server's effective options.
func (s *Server) Options() Options { return s.opts }

// notify wakes Wait callers; it takes s.mu.
func (s *Server) notify() {
	s.mu.Lock()
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Wait returns when cond (called without the server's lock held) is
// true, re-checking after every request and state change, or ctx's
// error when ctx ends first.
func (s *Server) Wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return errors.New("nannyapitest: server closed")
		}
	}
}

// Inject sets the fault for key: an /api/agent action name
// ("ingest-metrics"), "METHOD /path" ("GET /api/realtime",
// "POST /api/investigations"), or "*" for every request. A key's fault
// replaces the previous one; the zero Fault clears it.
func (s *Server) Inject(key string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == (Fault{}) {
		delete(s.faults, key)
		return
	}
	s.faults[key] = &f
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = map[string]*Fault{}
	s.mu.Unlock()
}

// Requests returns the recorded requests, oldest first (at most
// Options.MaxRecorded of the newest).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, s.reqLen)
	for g := s.reqNext - s.reqLen; g < s.reqNext; g++ {
		out = append(out, s.requests[g%len(s.requests)])
	}
	return out
}

// RequestsFor returns the recorded requests whose Key is key.
func (s *Server) RequestsFor(key string) []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Key() == key {
			out = append(out, r)
		}
	}
	return out
}

// Count is how many requests with Key key arrived since the start (or
// the last ResetRequests), recorded or not.
func (s *Server) Count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

// ResetRequests forgets the recorded requests and counts.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	clear(s.requests)
	s.reqLen = 0
	s.counts = map[string]int{}
	s.mu.Unlock()
}

// record stores r and returns its global index for setStatus.
func (s *Server) record(r Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[r.Key()]++
	if s.requests == nil {
		s.requests = make([]Request, s.opts.MaxRecorded)
	}
	g := s.reqNext
	s.requests[g%len(s.requests)] = r
	s.reqNext++
	s.reqLen = min(s.reqLen+1, len(s.requests))
	s.notifyLocked()
	return g
}

func (s *Server) setStatus(i, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= s.reqNext-s.reqLen && i < s.reqNext {
		s.requests[i%len(s.requests)].Status = status
	}
	s.notifyLocked()
}

func (s *Server) fault(key string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []string{key, "*"} {
		f, ok := s.faults[k]
		if !ok {
			continue
		}
		out := *f
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				delete(s.faults, k)
			}
		}
		return &out
	}
	return nil
}

// maxBody is PocketBase's default request body limit.
const maxBody = 32 << 20

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
	r.Body = io.NopCloser(bytes.NewReader(body))
	req := Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, At: s.Now(),
	}
	if r.URL.Path == "/api/agent" && r.Method == http.MethodPost {
		var a struct {
			Action string `json:"action"`
		}
		if json.Unmarshal(body, &a) == nil {
			req.Action = a.Action
		}
	}
	i := s.record(req)
	sw := &statusWriter{ResponseWriter: w}
	defer func() { s.setStatus(i, sw.status) }()

	if f := s.fault(req.Key()); f != nil {
		if f.Delay > 0 && !s.sleep(r.Context(), f.Delay) {
			return
		}
		switch {
		case f.Hang:
			s.hang(r.Context())
			return
		case f.Reset:
			reset(w)
			return
		case f.Status != 0:
			b := f.Body
			if b == "" {
				b = envelope(f.Status, defaultMessage(f.Status), nil)
			}
			writeRaw(sw, f.Status, b)
			return
		}
	}
	s.route(sw, r, body)
}

func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

func (s *Server) hang(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-s.done:
	}
}

// reset closes the client's connection without an answer.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, body []byte) {
	p := r.URL.Path
	switch {
	case p == "/api/agent" && r.Method == http.MethodPost:
		s.handleAgent(w, r, body)
	case p == "/api/realtime" && r.Method == http.MethodGet:
		s.handleConnect(w, r)
	case p == "/api/realtime" && r.Method == http.MethodPost:
		s.handleSubscribe(w, r, body)
	case p == "/api/investigations":
		s.handleInvestigations(w, r, body)
	case p == "/api/patches" || strings.HasPrefix(p, "/api/patches/"):
		s.handlePatches(w, r, body)
	case strings.HasPrefix(p, "/api/files/") && r.Method == http.MethodGet:
		s.handleFiles(w, r)
	case strings.HasPrefix(p, "/api/scripts/") && r.Method == http.MethodGet:
		s.handleScripts(w, r)
	case p == "/api/reboot" || strings.HasPrefix(p, "/api/reboot/"):
		s.handleReboot(w, r, body)
	case strings.HasPrefix(p, "/api/proxmox/"):
		s.handleProxmox(w, r, body)
	case p == "/api/health" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		writeJSON(w, http.StatusOK, struct {
			Message string         `json:"message"`
			Code    int            `json:"code"`
			Data    map[string]any `json:"data"`
		}{"API is healthy.", 200, map[string]any{}})
	case strings.HasPrefix(p, "/api/collections/reboot_operations/records/") && r.Method == http.MethodPatch:
		s.handleRebootRecordUpdate(w, r, body)
	case strings.HasPrefix(p, "/api/collections/") && r.Method == http.MethodGet:
		rest := strings.TrimPrefix(p, "/api/collections/")
		name, tail, ok := strings.Cut(rest, "/")
		if ok && tail == "records" && name != "" {
			s.handleList(w, r, name)
			return
		}
		notFound(w)
	default:
		notFound(w)
	}
}

// PocketBase's messages for its own errors.
const (
	msgNotFound = "The requested resource wasn't found."
	msgGeneric  = "Something went wrong while processing your request."
)

func defaultMessage(status int) string {
	switch status {
	case http.StatusNotFound:
		return msgNotFound
	case http.StatusBadRequest, http.StatusInternalServerError:
		return msgGeneric
	case http.StatusForbidden:
		return "You are not allowed to perform this request."
	case http.StatusUnauthorized:
		return "Missing or invalid authentication."
	case http.StatusTooManyRequests:
		return "Too Many Requests."
	}
	if t := http.StatusText(status); t != "" {
		return t + "."
	}
	return msgGeneric
}

// envelope is PocketBase's error body.
func envelope(status int, message string, data map[string]any) string {
	if data == nil {
		data = map[string]any{}
	}
	return encode(struct {
		Data    map[string]any `json:"data"`
		Message string         `json:"message"`
		Status  int            `json:"status"`
	}{data, message, status})
}

func notFound(w http.ResponseWriter) {
	writeRaw(w, http.StatusNotFound, envelope(http.StatusNotFound, msgNotFound, nil))
}

// panicked is what PocketBase answers after recovering a handler panic.
func panicked(w http.ResponseWriter) {
	writeRaw(w, http.StatusInternalServerError, envelope(http.StatusInternalServerError, msgGeneric, nil))
}

// errorJSON is the backend's own handlers' error body.
func errorJSON(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// encode is json.Encoder's output, as PocketBase writes it (HTML
// escaped, with a trailing newline).
func encode(v any) string {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		panic(err)
	}
	return b.String()
}

func writeJSON(w http.ResponseWriter, status int, v any) { writeRaw(w, status, encode(v)) }

func writeRaw(w http.ResponseWriter, status int, body string) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
