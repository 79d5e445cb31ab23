package nannyapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TokenSource supplies the bearer of authenticated calls. The auth
// layer implements it: Token returns a valid token (refreshing when it
// must), Invalidate says the last one was refused (a 401), so the next
// Token must not return it again unless it has nothing better.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate()
}

// StaticToken is a token that never changes (an nsk_ static token, or a
// test's access token): a 401 with it is final.
type StaticToken string

// Token returns the token.
func (t StaticToken) Token(context.Context) (string, error) { return string(t), nil }

// Invalidate does nothing: there is no other token.
func (StaticToken) Invalidate() {}

// TokenFunc adapts a function to a TokenSource whose Invalidate does
// nothing (the function decides when to refresh).
type TokenFunc func(ctx context.Context) (string, error)

// Token calls f.
func (f TokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// Invalidate does nothing.
func (TokenFunc) Invalidate() {}

// Claims are the fields of a PocketBase auth token the agent uses.
type Claims struct {
	// CollectionID is "pbc_3549173383" for agents.
	CollectionID string
	// ID is the record (agent) ID.
	ID      string
	Type    string
	Expires time.Time
}

// AgentsCollectionID is the agents collection's ID, the collectionId
// of an agent token.
const AgentsCollectionID = "pbc_3549173383"

// ParseToken reads a JWT's claims without checking its signature (only
// the backend can): the exp claim, not the response's expires_in, says
// when the token stops working.
func ParseToken(token string) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Claims{}, errors.New("nannyapi: token is not a JWT (want three dot-separated parts)")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Claims{}, fmt.Errorf("nannyapi: token payload: %w", err)
	}
	var c struct {
		CollectionID string   `json:"collectionId"`
		ID           string   `json:"id"`
		Type         string   `json:"type"`
		Exp          *float64 `json:"exp"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return Claims{}, fmt.Errorf("nannyapi: token payload: %w", err)
	}
	if c.Exp == nil {
		return Claims{}, errors.New("nannyapi: token has no exp claim")
	}
	if *c.Exp < 0 || *c.Exp > 1<<40 {
		return Claims{}, fmt.Errorf("nannyapi: token exp %v is out of range", *c.Exp)
	}
	return Claims{CollectionID: c.CollectionID, ID: c.ID, Type: c.Type, Expires: time.Unix(int64(*c.Exp), 0).UTC()}, nil
}
