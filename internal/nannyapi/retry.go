package nannyapi

import (
	"context"
	"time"

	"github.com/nannyagent/nannyagent/internal/backoff"
	"github.com/nannyagent/nannyagent/internal/config"
)

// Backoff is the agent's retry policy (package backoff), named here for
// the client's callers.
type Backoff = backoff.Backoff

// BackoffFromConfig is the policy of the http_transport block
// (backoff.FromConfig).
func BackoffFromConfig(h config.HTTPTransport) Backoff { return backoff.FromConfig(h) }

// Retry calls fn under b until it succeeds or fails with an error that
// is not Retryable (see Backoff.Retry).
func Retry(ctx context.Context, b Backoff, fn func(ctx context.Context) error) error {
	return b.Retry(ctx, Retryable, fn)
}

// Sleep waits d, or returns ctx's error when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) error { return backoff.Sleep(ctx, d) }
