package nannyapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is an answer the backend gave with an unexpected status. Both
// error families decode into it: the backend's own {"error":…} (Message
// is the error text) and PocketBase's {"data":{},"message":…,"status":N}
// (Envelope is true). Anything else keeps a snippet of the body.
type Error struct {
	// Op is the action ("register") or "METHOD /path" of the call.
	Op     string
	Status int
	// Message is the backend's error text, or a description when the
	// body was neither shape.
	Message string
	// Description is error_description, which only a backend with
	// static tokens may send.
	Description string
	// AgentID is set by register on an already used device code.
	AgentID string
	// Envelope is true for PocketBase's own errors (unknown route,
	// recovered panic, its validation); Data is their "data".
	Envelope bool
	Data     json.RawMessage
	// Body is the start of the answer, for logs.
	Body string
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Description != "" {
		msg += " (" + e.Description + ")"
	}
	return fmt.Sprintf("nannyapi: %s: %d %s", e.Op, e.Status, msg)
}

// IsUnknownAction: the backend does not implement the action (this is
// how it answers renew-refresh-token and register-with-token).
func (e *Error) IsUnknownAction() bool {
	return e.Status == http.StatusBadRequest && e.Message == "unknown action"
}

// IsUnauthorized: 401 (missing, expired or invalid token; invalid or
// expired refresh token).
func (e *Error) IsUnauthorized() bool { return e.Status == http.StatusUnauthorized }

// IsForbidden: 403.
func (e *Error) IsForbidden() bool { return e.Status == http.StatusForbidden }

// IsNotFound: 404.
func (e *Error) IsNotFound() bool { return e.Status == http.StatusNotFound }

// IsServerError: 5xx, including a handler panic the backend recovered.
func (e *Error) IsServerError() bool { return e.Status >= 500 }

// IsAuthorizationPending: register polled before the user authorized
// the device code (the earlier agent matches this substring too).
func (e *Error) IsAuthorizationPending() bool {
	return e.Status == http.StatusBadRequest && strings.Contains(e.Message, "device not authorized")
}

// IsDeviceCodeExpired: the device code's 10 minutes are over.
func (e *Error) IsDeviceCodeExpired() bool {
	return e.Status == http.StatusBadRequest && e.Message == "device code expired"
}

// IsDeviceCodeUsed: the device code already registered an agent
// (AgentID names it).
func (e *Error) IsDeviceCodeUsed() bool {
	return e.Status == http.StatusBadRequest && e.Message == "device code already used"
}

// IsRefreshTokenExpired: the refresh token's 30 days are over; the
// agent must register again.
func (e *Error) IsRefreshTokenExpired() bool {
	return e.Status == http.StatusUnauthorized && e.Message == "refresh token expired"
}

// IsRefreshTokenInvalid: unknown refresh token, or the agent was
// revoked; the agent must register again.
func (e *Error) IsRefreshTokenInvalid() bool {
	return e.Status == http.StatusUnauthorized && e.Message == "invalid refresh token"
}

// Retryable: worth another attempt later (5xx, 429, 408).
func (e *Error) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// TransportError is an exchange that got no answer: connection
// refused or reset, a broken body, or the per-request timeout.
type TransportError struct {
	Op  string
	Err error
	// Timeout is the per-request bound that expired (0 otherwise).
	Timeout time.Duration
}

func (e *TransportError) Error() string {
	if e.Timeout > 0 {
		return fmt.Sprintf("nannyapi: %s: no answer within %s", e.Op, e.Timeout)
	}
	return fmt.Sprintf("nannyapi: %s: %v", e.Op, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// AsError returns the *Error in err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// IsUnknownAction reports whether err is the backend's 400 unknown
// action.
func IsUnknownAction(err error) bool {
	e, ok := AsError(err)
	return ok && e.IsUnknownAction()
}

// IsUnauthorized reports whether err is a 401 answer.
func IsUnauthorized(err error) bool {
	e, ok := AsError(err)
	return ok && e.IsUnauthorized()
}

// Retryable reports whether another attempt may succeed: transport
// failures and 5xx/429/408 answers yes; other answers, bad requests and
// the caller's context ending no.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var te *TransportError
	if errors.As(err, &te) {
		return true
	}
	if e, ok := AsError(err); ok {
		return e.Retryable()
	}
	return false
}

// snippetLen bounds the body kept in an Error.
const snippetLen = 512

func snippet(b []byte) string {
	if len(b) > snippetLen {
		b = b[:snippetLen]
		for len(b) > 0 && !utf8.Valid(b) {
			b = b[:len(b)-1]
		}
		return string(b) + "…"
	}
	return string(b)
}

func decodeError(op string, status int, body []byte) *Error {
	e := &Error{Op: op, Status: status, Body: snippet(body)}
	var m struct {
		Error            *string         `json:"error"`
		ErrorDescription string          `json:"error_description"`
		AgentID          string          `json:"agent_id"`
		Message          *string         `json:"message"`
		Status           *int            `json:"status"`
		Data             json.RawMessage `json:"data"`
	}
	if json.Unmarshal(body, &m) == nil {
		switch {
		case m.Error != nil:
			e.Message, e.Description, e.AgentID = *m.Error, m.ErrorDescription, m.AgentID
			return e
		case m.Message != nil && m.Status != nil:
			e.Message, e.Envelope, e.Data = *m.Message, true, m.Data
			return e
		}
	}
	e.Message = http.StatusText(status)
	if s := strings.TrimSpace(strings.ReplaceAll(e.Body, "\n", " ")); s != "" {
		e.Message += ": " + s
	}
	return e
}
