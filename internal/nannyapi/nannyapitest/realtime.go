package nannyapitest

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

const clientIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

type rtClient struct {
	id   string
	auth *authRecord
	subs []string
	// queue holds framed messages not yet written; signal says there
	// are some.
	queue  [][]byte
	signal chan struct{}
	drop   chan struct{}
}

func (c *rtClient) wake() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// frame is PocketBase's SSE framing: no space after the colons, a blank
// line after each event, the client ID as the event id.
func frame(clientID, event string, data []byte) []byte {
	b := make([]byte, 0, len(clientID)+len(event)+len(data)+20)
	b = append(b, "id:"...)
	b = append(b, clientID...)
	b = append(b, "\nevent:"...)
	b = append(b, event...)
	b = append(b, "\ndata:"...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	c := &rtClient{
		id:     randomFrom(clientIDAlphabet, 40),
		signal: make(chan struct{}, 1),
		drop:   make(chan struct{}),
	}
	s.mu.Lock()
	s.clients[c.id] = c
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c.id)
		s.notifyLocked()
		s.mu.Unlock()
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flush := func() { w.(http.Flusher).Flush() }
	if _, err := w.Write(frame(c.id, "PB_CONNECT", []byte(`{"clientId":"`+c.id+`"}`))); err != nil {
		return
	}
	flush()

	idle := time.NewTimer(s.opts.IdleTimeout)
	defer idle.Stop()
	for {
		select {
		case <-idle.C:
			// PocketBase ends the request: the stream ends cleanly.
			return
		case <-c.drop:
			// A dropped connection, not a finished response.
			panic(http.ErrAbortHandler)
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-c.signal:
			s.mu.Lock()
			msgs := c.queue
			c.queue = nil
			s.mu.Unlock()
			for _, m := range msgs {
				if _, err := w.Write(m); err != nil {
					return
				}
			}
			flush()
			idle.Reset(s.opts.IdleTimeout)
		}
	}
}

func (s *Server) handleSubscribe(w http.ResponseWriter, r *http.Request, body []byte) {
	var form struct {
		ClientID      string   `json:"clientId"`
		Subscriptions []string `json:"subscriptions"`
	}
	if json.Unmarshal(body, &form) != nil {
		writeRaw(w, http.StatusBadRequest, envelope(http.StatusBadRequest, msgGeneric, nil))
		return
	}
	if form.ClientID == "" {
		writeRaw(w, http.StatusBadRequest, envelope(http.StatusBadRequest, msgGeneric, map[string]any{
			"clientId": map[string]string{"code": "validation_required", "message": "Cannot be blank."},
		}))
		return
	}
	auth := s.authenticate(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[form.ClientID]
	if !ok {
		writeRaw(w, http.StatusNotFound, envelope(http.StatusNotFound, "Missing or invalid client id.", nil))
		return
	}
	// Only a guest -> auth upgrade is allowed; any other change of
	// auth, including losing it (an expired token), is refused.
	if c.auth != nil && (auth == nil || *auth != *c.auth) {
		writeRaw(w, http.StatusForbidden, envelope(http.StatusForbidden, "The current and the previous request authorization don't match.", nil))
		return
	}
	c.auth = auth
	c.subs = c.subs[:0]
	for _, sub := range form.Subscriptions {
		if sub != "" && !slices.Contains(c.subs, sub) {
			c.subs = append(c.subs, sub)
		}
	}
	s.notifyLocked()
	w.WriteHeader(http.StatusNoContent)
}

// topicMatches says whether a subscription topic covers a record of c:
// the collection (name or ID) alone, with "/*", or with the record ID;
// PocketBase's "?options=" suffix is ignored.
func topicMatches(topic string, c *collection, recID string) bool {
	base, _, _ := strings.Cut(topic, "?")
	for _, coll := range []string{c.name, c.id} {
		if base == coll || base == coll+"/*" || base == coll+"/"+recID {
			return true
		}
	}
	return false
}

// broadcastLocked queues the record event for every client whose auth
// may see the record, once per matching topic, with the topic as the
// event name. Guests receive nothing.
func (s *Server) broadcastLocked(c *collection, action string, rec map[string]any) {
	data, err := json.Marshal(struct {
		Record map[string]any `json:"record"`
		Action string         `json:"action"`
	}{rec, action})
	if err != nil {
		panic(err)
	}
	id, _ := rec["id"].(string)
	for _, cl := range s.clients {
		if !canSee(cl.auth, rec) {
			continue
		}
		for _, topic := range cl.subs {
			if topicMatches(topic, c, id) {
				cl.queue = append(cl.queue, frame(cl.id, topic, data))
				cl.wake()
			}
		}
	}
}

// Streams is the number of open realtime streams.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// Subscribed is the number of open streams subscribed with the
// agent's auth to at least one topic.
func (s *Server) Subscribed(agentID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.clients {
		if c.auth.isAgent() && c.auth.id == agentID && len(c.subs) > 0 {
			n++
		}
	}
	return n
}

// Subscriptions returns the topics of the agent's open, subscribed
// streams (one slice per stream).
func (s *Server) Subscriptions(agentID string) [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]string
	for _, c := range s.clients {
		if c.auth.isAgent() && c.auth.id == agentID && len(c.subs) > 0 {
			out = append(out, append([]string(nil), c.subs...))
		}
	}
	return out
}

// WaitSubscribed waits until n streams are subscribed as the agent.
func (s *Server) WaitSubscribed(ctx context.Context, agentID string, n int) error {
	return s.Wait(ctx, func() bool { return s.Subscribed(agentID) >= n })
}

// DropStreams breaks every open realtime stream (the connection closes
// mid-response, as when the network or the server goes away).
func (s *Server) DropStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		select {
		case <-c.drop:
		default:
			close(c.drop)
		}
	}
}

// ReadEvent reads one SSE event (PocketBase framing) from r, for tests
// of the server itself and of callers that want raw events.
func ReadEvent(r *bufio.Reader) (id, event string, data []byte, err error) {
	got := false
	for {
		var line string
		line, err = r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if got {
				return
			}
			continue
		}
		got = true
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "id":
			id = v
		case "event":
			event = v
		case "data":
			data = append(data, v...)
		}
	}
}
