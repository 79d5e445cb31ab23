package realtime

import (
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
)

// Backoff is a jittered exponential delay: attempt n waits between half
// and all of min(Initial·2ⁿ, Max), so delays grow, stay bounded, and a
// fleet of agents cut off by one backend outage does not come back in
// lockstep.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// BackoffFromConfig takes the bounds from http_transport, the keys the
// earlier agent used for its retries.
func BackoffFromConfig(h config.HTTPTransport) Backoff {
	return Backoff{
		Initial: time.Duration(h.InitialRetryDelaySec) * time.Second,
		Max:     time.Duration(h.MaxRetryDelaySec) * time.Second,
	}
}

func (b Backoff) withDefaults() Backoff {
	d := BackoffFromConfig(config.Defaults().HTTPTransport)
	if b.Initial <= 0 {
		b.Initial = d.Initial
	}
	if b.Max <= 0 {
		b.Max = d.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	return b
}

// Delay is the wait before retry attempt n (0-based); u is a uniform
// random number in [0, 1).
func (b Backoff) Delay(n int, u float64) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	if u < 0 || u >= 1 || u != u {
		u = 0
	}
	half := d / 2
	return half + time.Duration(float64(d-half)*u)
}
