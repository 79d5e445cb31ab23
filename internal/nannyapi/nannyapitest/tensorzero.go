package nannyapitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TensorZero is a stand-in for the TensorZero gateway in front of an
// OpenAI-compatible server (such as internal/brain/openaitest): it
// takes the backend's calls on /openai/v1/chat/completions, forwards
// them to the model server, and adds the episode_id TensorZero returns
// (a new one per conversation, the given one when the call names it).
// Point Options.TensorZeroURL at its URL.
type TensorZero struct {
	*httptest.Server
	upstream string
	// UpstreamKey, when set, is the bearer sent to the model server (the
	// gateway's own provider key; the backend's key stops here).
	UpstreamKey string

	mu    sync.Mutex
	calls []TensorZeroCall
}

// TensorZeroCall is one call the gateway received from the backend.
type TensorZeroCall struct {
	Model string
	// EpisodeID is the tensorzero::episode_id the backend sent ("" when
	// it sent none).
	EpisodeID string
	Messages  []struct{ Role, Content string }
	// Authorization is the header the backend sent.
	Authorization string
}

// NewTensorZero starts a gateway forwarding to an OpenAI-compatible API
// root (…/v1; the requests go to root+"/chat/completions").
func NewTensorZero(t testing.TB, openAIBaseURL string) *TensorZero {
	g := &TensorZero{upstream: strings.TrimSuffix(openAIBaseURL, "/")}
	g.Server = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.Close)
	return g
}

// Calls returns the calls received so far.
func (g *TensorZero) Calls() []TensorZeroCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]TensorZeroCall(nil), g.calls...)
}

func newUUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

func (g *TensorZero) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/openai/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, `{"error":"Route not found: `+r.Method+` `+r.URL.Path+`"}`, http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, `{"error":"invalid JSON"}`, http.StatusBadRequest)
		return
	}
	call := TensorZeroCall{Authorization: r.Header.Get("Authorization")}
	_ = json.Unmarshal(req["model"], &call.Model)
	_ = json.Unmarshal(req["messages"], &call.Messages)
	_ = json.Unmarshal(req["tensorzero::episode_id"], &call.EpisodeID)
	g.mu.Lock()
	g.calls = append(g.calls, call)
	g.mu.Unlock()
	episode := call.EpisodeID
	if episode == "" {
		episode = newUUID()
	}
	delete(req, "tensorzero::episode_id")
	fwd, _ := json.Marshal(req)
	up, err := http.NewRequestWithContext(r.Context(), http.MethodPost, g.upstream+"/chat/completions", bytes.NewReader(fwd))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	up.Header.Set("Content-Type", "application/json")
	if g.UpstreamKey != "" {
		up.Header.Set("Authorization", "Bearer "+g.UpstreamKey)
	}
	resp, err := http.DefaultClient.Do(up)
	if err != nil {
		http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(rb)
		return
	}
	var out map[string]json.RawMessage
	if json.Unmarshal(rb, &out) != nil {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(rb)
		return
	}
	out["episode_id"], _ = json.Marshal(episode)
	writeJSON(w, http.StatusOK, out)
}
