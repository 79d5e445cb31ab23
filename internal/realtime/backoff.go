package realtime

import (
	"github.com/nannyagent/nannyagent/internal/backoff"
	"github.com/nannyagent/nannyagent/internal/config"
)

// Backoff is the wait between failed attempts (package backoff). A zero
// Jitter is taken as 0.5: each wait is between half and all of its
// delay, so that a fleet of agents cut off by one backend outage does not
// come back in lockstep.
type Backoff = backoff.Backoff

// BackoffFromConfig takes the bounds from http_transport, the keys the
// earlier agent used for its retries.
func BackoffFromConfig(h config.HTTPTransport) Backoff { return backoff.FromConfig(h) }
