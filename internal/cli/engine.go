package cli

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/brain/offline"
	"github.com/nannyagent/nannyagent/internal/brain/openai"
	"github.com/nannyagent/nannyagent/internal/config"
	"go.uber.org/zap"
)

// errNoNannyAPIEngine is what choosing the NannyAPI engine says until the
// backend client exists.
var errNoNannyAPIEngine = errors.New("the NannyAPI engine is not available in this build: use --engine offline, " +
	"or --engine openai with ai.base_url and ai.model set")

// engineChoice is the engine an investigation uses and why.
type engineChoice struct {
	// Provider is offline or openai (never auto).
	Provider string
	// Why says how it was chosen, for the banner and --verbose.
	Why string
}

// chooseEngine applies the precedence flag > NANNYAGENT_AI_PROVIDER >
// ai.provider (the environment was applied when the config was loaded),
// then resolves auto: openai when an endpoint is configured, else the
// offline engine, which needs nothing.
func chooseEngine(cfg *config.Config, flag string) (engineChoice, error) {
	if flag != "" {
		if !slices.Contains(config.Providers, flag) {
			return engineChoice{}, usageErr(fmt.Errorf("--engine %q: must be one of %s", flag, strings.Join(config.Providers, ", ")))
		}
		cfg.AI.Provider = flag
		cfg.SetFrom("ai.provider", "--engine")
		if err := cfg.Validate(); err != nil {
			return engineChoice{}, usageErr(err)
		}
	}
	p := cfg.AI.Provider
	from := cfg.Source("ai.provider")
	if from == "" {
		from = "ai.provider"
	}
	switch p {
	case config.ProviderAuto:
		if cfg.AI.BaseURL != "" {
			return engineChoice{config.ProviderOpenAI, "auto: ai.base_url is set"}, nil
		}
		return engineChoice{config.ProviderOffline, "auto: no ai.base_url configured"}, nil
	case config.ProviderNannyAPI:
		return engineChoice{}, usageErr(errNoNannyAPIEngine)
	}
	return engineChoice{p, "chosen by " + from}, nil
}

// newEngine builds the chosen engine.
func newEngine(cfg *config.Config, choice engineChoice, log *zap.Logger) (brain.Engine, error) {
	switch choice.Provider {
	case config.ProviderOffline:
		// A broken playbook file is skipped with a warning in the log.
		return offline.New(offline.Options{PlaybookDir: cfg.PlaybookDir, Log: log.Named("offline")}), nil
	case config.ProviderOpenAI:
		var key string
		var err error
		switch {
		case cfg.AI.APIKeyEnv != "":
			key, err = openai.KeyFromEnv(cfg.AI.APIKeyEnv)
		case cfg.AI.APIKeyFile != "":
			key, err = openai.KeyFromFile(cfg.AI.APIKeyFile)
		}
		if err != nil {
			return nil, err
		}
		return openai.New(openai.Config{
			BaseURL: cfg.AI.BaseURL, Model: cfg.AI.Model, APIKey: key,
			Timeout: time.Duration(cfg.AI.TimeoutSec) * time.Second, Log: log.Named("openai"),
		})
	}
	return nil, fmt.Errorf("unknown engine %q", choice.Provider)
}

// engineSummary is the banner's line about the engine.
func engineSummary(cfg *config.Config, choice engineChoice) string {
	switch choice.Provider {
	case config.ProviderOpenAI:
		return fmt.Sprintf("openai (model %s at %s; %s)", cfg.AI.Model, cfg.AI.BaseURL, choice.Why)
	case config.ProviderOffline:
		s := "offline (built-in playbooks and health sweep, no network; " + choice.Why + ")"
		if _, err := os.Stat(cfg.PlaybookDir); err == nil {
			s = "offline (built-in playbooks, " + cfg.PlaybookDir + ", health sweep, no network; " + choice.Why + ")"
		}
		return s
	}
	return choice.Provider
}
