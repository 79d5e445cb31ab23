package cli

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/auth"
	"github.com/nannyagent/nannyagent/internal/brain"
	brainapi "github.com/nannyagent/nannyagent/internal/brain/nannyapi"
	"github.com/nannyagent/nannyagent/internal/brain/offline"
	"github.com/nannyagent/nannyagent/internal/brain/openai"
	"github.com/nannyagent/nannyagent/internal/config"
	"go.uber.org/zap"
)

// errNotRegistered is what choosing the NannyAPI engine says on a host
// that is not registered.
var errNotRegistered = errors.New("not registered: run sudo nannyagent --register (or choose --engine offline, " +
	"or --engine openai with ai.base_url and ai.model set)")

// engineChoice is the engine an investigation uses and why.
type engineChoice struct {
	// Provider is offline, openai or nannyapi (never auto).
	Provider string
	// Why says how it was chosen, for the banner and --verbose.
	Why string
	// Auth is the registration the nannyapi engine uses.
	Auth *auth.Manager
}

// registration returns this host's NannyAPI registration, or nil when
// there is none to use (no nannyapi_url, no readable token files); the
// error says why when it is worth saying.
func registration(cfg *config.Config, log *zap.Logger) (*auth.Manager, error) {
	if cfg.NannyAPIURL == "" {
		return nil, errors.New("nannyapi_url is not set")
	}
	m, err := auth.New(cfg, auth.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	if !m.Registered() {
		return nil, errors.New(m.Status().Problem)
	}
	return m, nil
}

// chooseEngine applies the precedence flag > NANNYAGENT_AI_PROVIDER >
// ai.provider (the environment was applied when the config was loaded),
// then resolves auto: NannyAPI when this host is registered, else openai
// when an endpoint is configured, else the offline engine, which needs
// nothing. reg finds the registration (registration outside tests).
func chooseEngine(cfg *config.Config, flag string, reg func() (*auth.Manager, error)) (engineChoice, error) {
	if flag != "" {
		if !slices.Contains(config.Providers, flag) {
			return engineChoice{}, usageErr(fmt.Errorf("--engine %q: must be one of %s", flag, strings.Join(config.Providers, ", ")))
		}
		cfg.AI.Provider = flag
		cfg.SetFrom("ai.provider", "--"+config.FlagFor("ai.provider"))
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
		if m, err := reg(); err == nil {
			return engineChoice{Provider: config.ProviderNannyAPI, Why: "auto: this host is registered with NannyAPI", Auth: m}, nil
		}
		if cfg.AI.BaseURL != "" {
			return engineChoice{Provider: config.ProviderOpenAI, Why: "auto: ai.base_url is set"}, nil
		}
		return engineChoice{Provider: config.ProviderOffline, Why: "auto: no ai.base_url configured"}, nil
	case config.ProviderNannyAPI:
		m, err := reg()
		if err != nil {
			return engineChoice{}, usageErr(fmt.Errorf("not registered (%v): run sudo nannyagent --register, "+
				"or choose --engine offline, or --engine openai with ai.base_url and ai.model set", err))
		}
		return engineChoice{Provider: p, Why: "chosen by " + from, Auth: m}, nil
	}
	return engineChoice{Provider: p, Why: "chosen by " + from}, nil
}

// newEngine builds the chosen engine.
func newEngine(cfg *config.Config, choice engineChoice, log *zap.Logger) (brain.Engine, error) {
	switch choice.Provider {
	case config.ProviderOffline:
		// A broken playbook file is skipped with a warning in the log.
		return offline.New(offline.Options{PlaybookDir: cfg.PlaybookDir, Log: log.Named("offline")}), nil
	case config.ProviderNannyAPI:
		if choice.Auth == nil {
			return nil, errNotRegistered
		}
		return brainapi.New(brainapi.Config{
			Client: choice.Auth.Client(), AgentID: choice.Auth.AgentID(), Log: log.Named("nannyapi"),
		})
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
	case config.ProviderNannyAPI:
		s := "nannyapi (NannyAPI at " + cfg.NannyAPIURL
		if choice.Auth != nil {
			s += ", agent " + choice.Auth.AgentID()
		}
		return s + "; " + choice.Why + ")"
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
