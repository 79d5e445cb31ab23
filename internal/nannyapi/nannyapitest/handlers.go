package nannyapitest

import (
	"encoding/json"
	"net/http"
)

// The backend's own handlers (the agent actions, investigations,
// patches, reboots) share how they authenticate, bind a body and find
// the caller's record or agent. The texts and some of the status codes
// differ from handler to handler, as they do on the backend, so each
// handler passes its own.

// requireAuth returns the caller's auth record; a guest gets 401
// {"error":"authentication required"} and nil.
func (s *Server) requireAuth(w http.ResponseWriter, r *http.Request) *authRecord {
	auth := s.authenticate(r)
	if auth == nil {
		errorJSON(w, http.StatusUnauthorized, "authentication required")
	}
	return auth
}

// requireAgent is requireAuth for a route only agents may call: a
// user's token gets status and notAgent, and nil.
func (s *Server) requireAgent(w http.ResponseWriter, r *http.Request, status int, notAgent string) *authRecord {
	auth := s.requireAuth(w, r)
	if auth != nil && !auth.isAgent() {
		errorJSON(w, status, notAgent)
		return nil
	}
	return auth
}

// requireOwner is requireAuth for a route that acts for a user: the
// user's own token, or an agent's acting for its owner. An agent
// without an owner gets 403 {"error":"agent has no owner"}. The auth
// record is nil when the answer was written.
func (s *Server) requireOwner(w http.ResponseWriter, r *http.Request) (auth *authRecord, owner string) {
	auth = s.requireAuth(w, r)
	if auth == nil {
		return nil, ""
	}
	s.mu.Lock()
	owner = s.ownerLocked(auth)
	s.mu.Unlock()
	if owner == "" {
		errorJSON(w, http.StatusForbidden, "agent has no owner")
		return nil, ""
	}
	return auth, owner
}

// decodeBody binds a JSON body into v; a body that does not bind gets
// 400 {"error":msg} (each handler words it its own way) and false.
func decodeBody(w http.ResponseWriter, body []byte, v any, msg string) bool {
	if json.Unmarshal(body, v) != nil {
		errorJSON(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

// writeSuccess is the {"success":true,"message":…} answer.
func writeSuccess(w http.ResponseWriter, message string) {
	writeJSON(w, http.StatusOK, struct {
		Success bool   `json:"success"`
		Message string `json:"message"`
	}{true, message})
}

// recordOwner is whose records a handler may touch: a user's by their
// user_id, an agent's by their agent_id.
type recordOwner struct{ field, id string }

func ownedByUser(userID string) recordOwner   { return recordOwner{"user_id", userID} }
func ownedByAgent(agentID string) recordOwner { return recordOwner{"agent_id", agentID} }

// ownRecordLocked finds record id of a collection that belongs to who.
// When it cannot, it returns the refusal: 404 and notFound when there
// is no such record, 403 and notYours when it is someone else's.
// Handlers that answer both with one status use only the text.
func (s *Server) ownRecordLocked(collection string, who recordOwner, id, notFound, notYours string) (map[string]any, int, string) {
	rec, ok := s.collections[collection].recs[id]
	if !ok {
		return nil, http.StatusNotFound, notFound
	}
	if recString(rec, who.field) != who.id {
		return nil, http.StatusForbidden, notYours
	}
	return rec, 0, ""
}

// ownRecord is ownRecordLocked for a handler that only reads the
// record: it takes the lock and returns a copy.
func (s *Server) ownRecord(collection string, who recordOwner, id, notFound, notYours string) (map[string]any, int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, status, msg := s.ownRecordLocked(collection, who, id, notFound, notYours)
	if rec != nil {
		rec = copyRecord(rec)
	}
	return rec, status, msg
}

// ownAgentLocked finds agent id among owner's agents, refusing as
// ownRecordLocked does: 404 and notFound, or 403 and notYours.
func (s *Server) ownAgentLocked(owner, id, notFound, notYours string) (*agent, int, string) {
	a, ok := s.agents[id]
	if !ok {
		return nil, http.StatusNotFound, notFound
	}
	if a.userID != owner {
		return nil, http.StatusForbidden, notYours
	}
	return a, 0, ""
}

// listOwned lists owner's records of a collection (by user_id) in
// creation order, each as view shows it. No records is nil, which the
// backend's list handlers answer as null.
func listOwned[T any](s *Server, collection, owner string, view func(rec map[string]any) T) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.collections[collection]
	var out []T
	for _, id := range c.order {
		if rec := c.recs[id]; recString(rec, "user_id") == owner {
			out = append(out, view(rec))
		}
	}
	return out
}

// byID are the handlers of an endpoint the backend routes by ?id=, as
// /api/investigations and /api/patches.
type byID struct {
	create func()
	get    func(id string)
	list   func()
	update func(id string)
}

// route picks the handler: POST creates, GET reads the ?id= record or
// lists, PATCH updates the ?id= record and needs one.
func (h byID) route(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	switch r.Method {
	case http.MethodPost:
		h.create()
	case http.MethodGet:
		if id != "" {
			h.get(id)
			return
		}
		h.list()
	case http.MethodPatch:
		if id == "" {
			errorJSON(w, http.StatusBadRequest, "id parameter required")
			return
		}
		h.update(id)
	default:
		errorJSON(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}
