package realtime

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePB is the realtime part of a PocketBase backend, framed as §2.3 and
// §6.5 show: PB_CONNECT first, the subscription POST with its 204, 403
// and 404 answers, record events, the server ending the stream. Tests
// drive it step by step: they wait for a subscription, then send, close
// or cut that client's stream.
type fakePB struct {
	srv *httptest.Server
	// agents maps valid agent tokens to agent ids; any other bearer is a
	// guest, as PocketBase treats an invalid token.
	agents map[string]string

	mu            sync.Mutex
	next          int
	clients       map[string]*fakeClient
	connectFaults []int // statuses for the next stream requests
	subFaults     []int // statuses for the next subscription POSTs
	streamHeaders []http.Header
	posts         []fakePost

	// subscribed gets every client whose subscription was accepted.
	subscribed chan *fakeClient
	// quiet stops recording requests, for soak runs that measure memory.
	quiet bool
}

type fakePost struct {
	Header http.Header
	Body   string
}

type fakeClient struct {
	id      string
	auth    string // agent id of the first authorised subscription
	subs    []string
	out     chan string
	end     chan bool // true: abort the connection, false: end it cleanly
	endOnce sync.Once
}

func newFakePB(t *testing.T, agents map[string]string) *fakePB {
	f := &fakePB{agents: agents, clients: map[string]*fakeClient{}, subscribed: make(chan *fakeClient, 1<<16)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/realtime", f.stream)
	mux.HandleFunc("POST /api/realtime", f.subscribe)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePB) URL() string { return f.srv.URL }

func pbError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"data":{},"message":%q,"status":%d}`, message, status)
}

var pbMessages = map[int]string{
	http.StatusForbidden:           "The current and the previous request authorization don't match.",
	http.StatusNotFound:            "Missing or invalid client id.",
	http.StatusUnauthorized:        "The request requires valid record authorization token.",
	http.StatusInternalServerError: "Something went wrong while processing your request.",
	http.StatusBadRequest:          "Something went wrong while processing your request.",
}

func (f *fakePB) stream(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if !f.quiet {
		f.streamHeaders = append(f.streamHeaders, r.Header.Clone())
	}
	if len(f.connectFaults) > 0 {
		status := f.connectFaults[0]
		f.connectFaults = f.connectFaults[1:]
		f.mu.Unlock()
		pbError(w, status, pbMessages[status])
		return
	}
	f.next++
	// PocketBase client ids are 40 characters.
	c := &fakeClient{id: fmt.Sprintf("%040d", f.next), out: make(chan string, 64), end: make(chan bool, 1)}
	f.clients[c.id] = c
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.clients, c.id)
		f.mu.Unlock()
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fmt.Fprintf(w, "id:%s\nevent:PB_CONNECT\ndata:{\"clientId\":%q}\n\n", c.id, c.id)
	fl.Flush()
	for {
		select {
		case s := <-c.out:
			_, _ = w.Write([]byte(s))
			fl.Flush()
		case abort := <-c.end:
			// Everything sent before the end is written first, in order.
			for len(c.out) > 0 {
				_, _ = w.Write([]byte(<-c.out))
			}
			fl.Flush()
			if abort {
				// Cut the connection without ending the chunked body.
				panic(http.ErrAbortHandler)
			}
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (f *fakePB) subscribe(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ClientID      string   `json:"clientId"`
		Subscriptions []string `json:"subscriptions"`
	}
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	decodeErr := json.Unmarshal(raw, &body)

	f.mu.Lock()
	if !f.quiet {
		f.posts = append(f.posts, fakePost{Header: r.Header.Clone(), Body: string(raw)})
	}
	if len(f.subFaults) > 0 {
		status := f.subFaults[0]
		f.subFaults = f.subFaults[1:]
		f.mu.Unlock()
		pbError(w, status, pbMessages[status])
		return
	}
	if decodeErr != nil {
		f.mu.Unlock()
		pbError(w, http.StatusBadRequest, "An error occurred while validating the submitted data.")
		return
	}
	c := f.clients[body.ClientID]
	if c == nil {
		f.mu.Unlock()
		pbError(w, http.StatusNotFound, pbMessages[http.StatusNotFound])
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	auth := f.agents[tok]
	if c.auth != "" && c.auth != auth {
		f.mu.Unlock()
		pbError(w, http.StatusForbidden, pbMessages[http.StatusForbidden])
		return
	}
	c.auth = auth
	c.subs = body.Subscriptions
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	f.subscribed <- c
}

// recordFrame is an event as PocketBase writes it for a record.
func recordFrame(clientID, collection, action, record string) string {
	return "id:" + clientID + "\nevent:" + collection + "\ndata:{\"record\":" + record + ",\"action\":\"" + action + "\"}\n\n"
}

// Publish sends a record event to every client that may see it: an
// agent's own rows, to a subscription that authorised as that agent.
func (f *fakePB) Publish(agentID, collection, action, record string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.clients {
		if c.auth == agentID && slices.Contains(c.subs, collection) {
			c.out <- recordFrame(c.id, collection, action, record)
			n++
		}
	}
	return n
}

// Send writes raw bytes to c's stream.
func (c *fakeClient) Send(s string) { c.out <- s }

// Close ends c's stream cleanly, as the idle timeout does.
func (c *fakeClient) Close() { c.endOnce.Do(func() { c.end <- false }) }

// Abort cuts c's connection.
func (c *fakeClient) Abort() { c.endOnce.Do(func() { c.end <- true }) }

func (f *fakePB) FailConnects(statuses ...int) {
	f.mu.Lock()
	f.connectFaults = append(f.connectFaults, statuses...)
	f.mu.Unlock()
}

func (f *fakePB) FailSubscribes(statuses ...int) {
	f.mu.Lock()
	f.subFaults = append(f.subFaults, statuses...)
	f.mu.Unlock()
}

func (f *fakePB) Posts() []fakePost {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.posts)
}

func (f *fakePB) StreamHeaders() []http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.streamHeaders)
}

// WaitSubscribed returns the next client whose subscription was accepted.
func (f *fakePB) WaitSubscribed(t testing.TB) *fakeClient {
	t.Helper()
	return recv(t, f.subscribed, "a subscription")
}

func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// none fails if ch yields a value before the test's last checkpoint
// drains: the caller makes sure everything that could arrive has.
func none[T any](t testing.TB, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %+v", what, v)
	default:
	}
}
