package daemon

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/nannyagent/nannyagent/internal/metrics"
	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"go.uber.org/zap"
)

// MetricsOptions configure the metrics loop of the daemon.
type MetricsOptions struct {
	Config *config.Config
	Client *nannyapi.Client
	// Collect takes one payload (metrics.Collector.Collect).
	Collect metrics.CollectFunc
	// Sent hears of every payload the backend accepted (the state file
	// keeps the time for --status); called on the loop's goroutine.
	Sent   func(at time.Time)
	Logger *zap.Logger
	// Clock replaces the Sender's clock in tests.
	Clock metrics.Clock
}

// NewMetrics is the metrics loop: a payload every metrics_interval and
// one at start, retried with http_transport's bounded backoff while the
// backend is away.
func NewMetrics(o MetricsOptions) (*metrics.Sender, error) {
	if o.Client == nil || o.Collect == nil {
		return nil, errors.New("daemon: metrics need a backend client and a collector")
	}
	if o.Config == nil {
		o.Config = config.Defaults()
	}
	interval, initial, maxRetry := metrics.ConfigSchedule(o.Config)
	var last time.Time
	return metrics.NewSender(metrics.SenderOptions{
		Interval: interval, InitialRetry: initial, MaxRetry: maxRetry,
		Collect: o.Collect,
		Send: func(ctx context.Context, p metrics.Payload) error {
			return classifyMetricsError(o.Client.IngestMetrics(ctx, p))
		},
		Logger: o.Logger, Clock: o.Clock,
		OnStatus: func(st metrics.Status) {
			if o.Sent != nil && st.LastSent.After(last) {
				last = st.LastSent
				o.Sent(last)
			}
		},
	})
}

// classifyMetricsError marks the answers that the same payload would get
// again as permanent, so the Sender drops the payload instead of
// retrying it: a payload refused before sending, a 4xx other than a
// refused token or a rate limit, and the backend's validation 500s.
func classifyMetricsError(err error) error {
	if err == nil {
		return nil
	}
	var ve *metrics.ValidationError
	if errors.As(err, &ve) {
		return metrics.Permanent(err)
	}
	e, ok := nannyapi.AsError(err)
	if !ok {
		return err
	}
	switch {
	case e.Status == http.StatusInternalServerError && !e.Envelope &&
		(e.Message == "failed to save metrics" || e.Message == "failed to update agent"):
		return metrics.Permanent(err)
	case e.Status >= 400 && e.Status < 500 && !e.IsUnauthorized() && !e.Retryable():
		return metrics.Permanent(err)
	}
	return err
}

// TokenRefresher is what the auth loop needs of the token source.
type TokenRefresher interface {
	Token(ctx context.Context) (string, error)
}

// AuthLoop keeps the agent's token fresh between requests: every check
// interval (token_renewal_check_interval_secs) it asks for a token, which
// refreshes it when it is about to expire and renews the refresh token
// when it is due. A failure is logged and tried again after the retry
// interval (token_renewal_retry_interval_secs); report hears of it (the
// state file) so that --status can say why the daemon cannot work.
func AuthLoop(tokens TokenRefresher, cfg *config.Config, log *zap.Logger, report func(error)) Runner {
	check := time.Duration(cfg.TokenRenewalCheckIntervalSecs) * time.Second
	retry := time.Duration(cfg.TokenRenewalRetryIntervalSecs) * time.Second
	if log == nil {
		log = zap.NewNop()
	}
	return RunFunc(func(ctx context.Context) error {
		wait := time.Duration(0)
		for {
			if err := nannyapi.Sleep(ctx, wait); err != nil {
				return nil
			}
			if _, err := tokens.Token(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				log.Error("cannot get a valid agent token", zap.Error(err), zap.Duration("retry_in", retry))
				if report != nil {
					report(err)
				}
				wait = retry
				continue
			}
			wait = check
		}
	})
}
