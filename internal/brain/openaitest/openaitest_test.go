package openaitest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func post(t *testing.T, url, auth, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

type errBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func decodeErr(t *testing.T, body string) errBody {
	t.Helper()
	var e errBody
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	require.NotEmpty(t, e.Error.Message)
	require.NotEmpty(t, e.Error.Type)
	return e
}

const good = `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]}`

func TestScriptedStepsInOrder(t *testing.T) {
	s := New(t, Reply("first"), RateLimited("3"), Status(500, "boom"), Malformed("<html>"), Reply("last"))
	url := s.BaseURL() + "/chat/completions"

	code, _, body := post(t, url, "", good)
	require.Equal(t, 200, code)
	var c struct {
		Choices []struct {
			Message struct{ Role, Content string } `json:"message"`
		} `json:"choices"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &c))
	require.Equal(t, "assistant", c.Choices[0].Message.Role)
	require.Equal(t, "first", c.Choices[0].Message.Content)

	code, h, body := post(t, url, "", good)
	require.Equal(t, 429, code)
	require.Equal(t, "3", h.Get("Retry-After"))
	require.Equal(t, "rate_limit_exceeded", *decodeErr(t, body).Error.Code)

	code, _, body = post(t, url, "", good)
	require.Equal(t, 500, code)
	require.Equal(t, "boom", body)

	code, _, body = post(t, url, "", good)
	require.Equal(t, 200, code)
	require.Equal(t, "<html>", body)

	code, _, _ = post(t, url, "", good)
	require.Equal(t, 200, code)
	require.Zero(t, s.Left())

	reqs := s.Requests()
	require.Len(t, reqs, 5)
	require.Equal(t, []int{200, 429, 500, 200, 200}, []int{reqs[0].Status, reqs[1].Status, reqs[2].Status, reqs[3].Status, reqs[4].Status})
	require.Equal(t, "m", reqs[0].Model)
	require.Equal(t, []Message{{"system", "s"}, {"user", "u"}}, reqs[0].Messages)
	require.Equal(t, Path, reqs[0].URL)
}

func TestRejectsWhatOpenAIRejects(t *testing.T) {
	s := New(t)
	s.Key = "sk-test-0123456789"
	s.Models = []string{"m"}
	url := s.BaseURL() + "/chat/completions"
	auth := "Bearer " + s.Key
	cases := []struct {
		name, url, auth, body string
		code                  int
		msg                   string
	}{
		{"no key", url, "", good, 401, "You didn't provide an API key"},
		{"wrong key", url, "Bearer sk-wrong-key-42", good, 401, "Incorrect API key provided: sk-*****y-42"},
		{"wrong path", s.URL + "/chat/completions", auth, good, 404, "Invalid URL (POST /chat/completions)"},
		{"not json", url, auth, `{"model":`, 400, "could not parse the JSON body"},
		{"no model", url, auth, `{"messages":[{"role":"user","content":"u"}]}`, 400, "you must provide a model parameter"},
		{"empty model", url, auth, `{"model":"","messages":[{"role":"user","content":"u"}]}`, 400, "you must provide a model parameter"},
		{"no messages", url, auth, `{"model":"m"}`, 400, "Missing required parameter: 'messages'."},
		{"empty messages", url, auth, `{"model":"m","messages":[]}`, 400, "Missing required parameter: 'messages'."},
		{"bad role", url, auth, `{"model":"m","messages":[{"role":"robot","content":"u"}]}`, 400, "Invalid value: 'robot'"},
		{"content not string", url, auth, `{"model":"m","messages":[{"role":"user","content":5}]}`, 400, "'messages[0].content': expected a string"},
		{"temperature", url, auth, `{"model":"m","temperature":3,"messages":[{"role":"user","content":"u"}]}`, 400, "Expected a value <= 2"},
		{"response format", url, auth, `{"model":"m","response_format":{"type":"yaml"},"messages":[{"role":"user","content":"u"}]}`, 400, "Invalid value: 'yaml'"},
		{"unknown model", url, auth, `{"model":"gpt-9","messages":[{"role":"user","content":"u"}]}`, 404, "The model `gpt-9` does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, body := post(t, c.url, c.auth, c.body)
			require.Equal(t, c.code, code, body)
			require.Contains(t, decodeErr(t, body).Error.Message, c.msg)
		})
	}
	// Rejections are recorded and use no step.
	require.Len(t, s.Requests(), len(cases))
	require.Equal(t, 0, s.Left())
}

func TestHangEndsWhenTheClientGoes(t *testing.T) {
	for _, st := range []Step{Hang(), Stall()} {
		s := New(t, st)
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL()+"/chat/completions", strings.NewReader(good))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			errc <- err
		}()
		<-s.Arrived()
		select {
		case err := <-errc:
			t.Fatalf("answered before the client gave up: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
	}
}

func TestClosedRefuses(t *testing.T) {
	u := Closed(t)
	require.True(t, strings.HasSuffix(u, "/v1"))
	_, err := http.Post(u+"/chat/completions", "application/json", strings.NewReader(good))
	require.ErrorContains(t, err, "connection refused")
}
