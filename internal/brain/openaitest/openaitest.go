// Package openaitest is an in-process OpenAI-compatible chat-completions
// server for tests. Each test scripts it with a queue of steps (a reply,
// an HTTP error, a hang, a malformed body) and reads back every request
// it received. It checks requests as a real server does: a wrong path,
// method, content type, body, missing model or messages, or a missing
// key get the status and the {"error":{"message","type","code"}} body
// OpenAI sends.
package openaitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Path is where the server answers chat completions.
const Path = "/v1/chat/completions"

// Step is what the server does with one accepted request. Exactly one
// kind is set; build steps with Reply, Status, RateLimited, Hang, Stall
// and Malformed.
type Step struct {
	// Content is the assistant message's content of a 200 answer.
	Content string
	// Status and Body are a non-200 answer (or a 200 with Body as is).
	Status int
	Body   string
	Header http.Header
	// Hang never answers: the handler waits until the client goes.
	Hang bool
	// Stall sends the headers and the start of the body, then waits
	// until the client goes (an answer that never ends).
	Stall bool
}

// Reply is a 200 answer whose choices[0].message.content is content.
func Reply(content string) Step { return Step{Content: content} }

// Status is an answer with status code and body as given.
func Status(code int, body string) Step { return Step{Status: code, Body: body} }

// Error is an answer with status code and OpenAI's error body.
func Error(code int, message, typ, errCode string) Step {
	return Step{Status: code, Body: ErrorBody(message, typ, errCode)}
}

// RateLimited is a 429 with Retry-After set to retryAfter (seconds, or
// an HTTP date; empty sends no header), as OpenAI sends it.
func RateLimited(retryAfter string) Step {
	s := Error(http.StatusTooManyRequests, "Rate limit reached for requests", "requests", "rate_limit_exceeded")
	if retryAfter != "" {
		s.Header = http.Header{"Retry-After": {retryAfter}}
	}
	return s
}

// Hang is a request never answered.
func Hang() Step { return Step{Hang: true} }

// Stall is an answer whose body never ends.
func Stall() Step { return Step{Stall: true} }

// Malformed is a 200 answer with body as is (not a chat completion).
func Malformed(body string) Step { return Step{Status: http.StatusOK, Body: body} }

// ErrorBody is OpenAI's error shape.
func ErrorBody(message, typ, code string) string {
	var c any
	if code != "" {
		c = code
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": message, "type": typ, "param": nil, "code": c}})
	return string(b)
}

// Message is one chat message as received.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one request as the server received it.
type Request struct {
	Method string
	// URL is the request URI (path and query).
	URL    string
	Header http.Header
	Body   []byte
	// Decoded fields of the body (when it was JSON).
	Model          string
	Messages       []Message
	Temperature    *float64
	ResponseFormat json.RawMessage
	// Status is what the server answered (0 for a hang the client left).
	Status int
}

// Server is the scripted server.
type Server struct {
	*httptest.Server
	t testing.TB
	// Key, when set, is the bearer token every request must carry.
	Key string
	// Models, when set, are the models the server knows; others get
	// OpenAI's 404 model_not_found.
	Models []string

	mu       sync.Mutex
	steps    []Step
	requests []Request
	done     chan struct{}
	arrived  chan struct{}
}

// New starts a server with steps queued; it is closed when the test ends.
// A request beyond the script fails the test.
func New(t testing.TB, steps ...Step) *Server {
	s := &Server{t: t, steps: steps, done: make(chan struct{}), arrived: make(chan struct{}, 1024)}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		// Hanging handlers end first, else Close waits for them.
		close(s.done)
		s.Server.Close()
	})
	return s
}

// BaseURL is the API root to configure a client with (…/v1).
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Push queues more steps.
func (s *Server) Push(steps ...Step) {
	s.mu.Lock()
	s.steps = append(s.steps, steps...)
	s.mu.Unlock()
}

// Requests returns a copy of the requests received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Left is the number of steps not used yet.
func (s *Server) Left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.steps)
}

// Arrived returns a channel that receives once per request as it
// arrives (before it is answered), so tests await requests instead of
// sleeping.
func (s *Server) Arrived() <-chan struct{} { return s.arrived }

func (s *Server) record(r Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	return len(s.requests) - 1
}

func (s *Server) setStatus(i, code int) {
	s.mu.Lock()
	s.requests[i].Status = code
	s.mu.Unlock()
}

func (s *Server) next() (Step, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.steps) == 0 {
		return Step{}, false
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	return st, true
}

// wireRequest is the body as a server decodes it.
type wireRequest struct {
	Model          *string           `json:"model"`
	Messages       []json.RawMessage `json:"messages"`
	Temperature    *float64          `json:"temperature"`
	ResponseFormat json.RawMessage   `json:"response_format"`
	Stream         bool              `json:"stream"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	req := Request{Method: r.Method, URL: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body}
	status, msg, typ, code := s.check(r, body, &req)
	i := s.record(req)
	if status != 0 {
		s.setStatus(i, status)
		writeJSON(w, status, nil, ErrorBody(msg, typ, code))
		return
	}
	st, ok := s.next()
	if !ok {
		s.t.Errorf("openaitest: request %d arrived after the script ended", i+1)
		s.setStatus(i, http.StatusInternalServerError)
		writeJSON(w, http.StatusInternalServerError, nil, ErrorBody("openaitest: no scripted step left", "server_error", ""))
		return
	}
	switch {
	case st.Hang:
		s.wait(r)
	case st.Stall:
		s.setStatus(i, http.StatusOK)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"id":"chatcmpl-stall","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"{\"response_type\":`)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.wait(r)
	case st.Status != 0:
		s.setStatus(i, st.Status)
		writeJSON(w, st.Status, st.Header, st.Body)
	default:
		s.setStatus(i, http.StatusOK)
		writeJSON(w, http.StatusOK, st.Header, completion(req.Model, st.Content))
	}
}

func (s *Server) wait(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.done:
	}
}

// check validates a request as OpenAI does and fills the decoded fields.
// A non-zero status is the rejection.
func (s *Server) check(r *http.Request, body []byte, req *Request) (int, string, string, string) {
	if r.URL.Path != Path {
		return http.StatusNotFound, fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path), "invalid_request_error", ""
	}
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, fmt.Sprintf("Invalid method for URL (%s %s)", r.Method, r.URL.Path), "invalid_request_error", ""
	}
	if s.Key != "" {
		auth := r.Header.Get("Authorization")
		if auth == "" {
			return http.StatusUnauthorized, "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", "invalid_request_error", ""
		}
		if auth != "Bearer "+s.Key {
			// OpenAI echoes the start and end of the key it was given.
			given := strings.TrimPrefix(auth, "Bearer ")
			return http.StatusUnauthorized, "Incorrect API key provided: " + mask(given) + ". You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"
		}
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return http.StatusBadRequest, "Unsupported content type: '" + ct + "'. This API method only accepts 'application/json' requests.", "invalid_request_error", ""
	}
	var w wireRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return http.StatusBadRequest, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)", "invalid_request_error", ""
	}
	if w.Model == nil || *w.Model == "" {
		return http.StatusBadRequest, "you must provide a model parameter", "invalid_request_error", ""
	}
	req.Model = *w.Model
	req.Temperature = w.Temperature
	req.ResponseFormat = w.ResponseFormat
	if len(w.Messages) == 0 {
		return http.StatusBadRequest, "Missing required parameter: 'messages'.", "invalid_request_error", "missing_required_parameter"
	}
	for i, raw := range w.Messages {
		var m struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &m) != nil {
			return http.StatusBadRequest, fmt.Sprintf("Invalid type for 'messages[%d]': expected an object.", i), "invalid_request_error", "invalid_type"
		}
		switch m.Role {
		case "system", "developer", "user", "assistant", "tool":
		default:
			return http.StatusBadRequest, fmt.Sprintf("Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'.", m.Role), "invalid_request_error", "invalid_value"
		}
		var text string
		if json.Unmarshal(m.Content, &text) != nil {
			return http.StatusBadRequest, fmt.Sprintf("Invalid type for 'messages[%d].content': expected a string.", i), "invalid_request_error", "invalid_type"
		}
		req.Messages = append(req.Messages, Message{Role: m.Role, Content: text})
	}
	if t := w.Temperature; t != nil && (*t < 0 || *t > 2) {
		return http.StatusBadRequest, fmt.Sprintf("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got %g instead.", *t), "invalid_request_error", "decimal_above_max_value"
	}
	if len(w.ResponseFormat) > 0 {
		var rf struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(w.ResponseFormat, &rf)
		switch rf.Type {
		case "text", "json_object", "json_schema":
		default:
			return http.StatusBadRequest, fmt.Sprintf("Invalid value: '%s'. Supported values are: 'json_object', 'json_schema', and 'text'.", rf.Type), "invalid_request_error", "invalid_value"
		}
	}
	if w.Stream {
		return http.StatusBadRequest, "openaitest: streaming is not scripted", "invalid_request_error", ""
	}
	if len(s.Models) > 0 && !contains(s.Models, req.Model) {
		return http.StatusNotFound, fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", req.Model), "invalid_request_error", "model_not_found"
	}
	return 0, "", "", ""
}

func mask(k string) string {
	if len(k) <= 8 {
		return "****"
	}
	return k[:3] + "*****" + k[len(k)-4:]
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// completion is a chat-completions answer carrying content.
func completion(model, content string) string {
	b, _ := json.Marshal(map[string]any{
		"id":      "chatcmpl-openaitest",
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": content},
			"finish_reason": "stop",
		}},
		"usage": map[string]int{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
	})
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, h http.Header, body string) {
	for k, vs := range h {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// Closed returns the URL of a port nothing listens on (a server started
// and closed), for unreachable-endpoint tests.
func Closed(t testing.TB) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	return u + "/v1"
}
