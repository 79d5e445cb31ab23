package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/spf13/cobra"
)

// backendFlags are the flags of the backend side: the §4 overrides every
// command takes, and the earlier agent's --register/--status spellings.
type backendFlags struct {
	apiURL, portalURL, tokenPath, agentID string
	metricsInterval, proxmoxInterval      int

	register, status, force bool

	// pollInterval replaces the device flow's 5 s in tests.
	pollInterval time.Duration
}

// addBackendFlags adds the configuration overrides of the backend keys
// (precedence: file < environment < these flags), named by config.Flags.
func (a *app) addBackendFlags(root *cobra.Command) {
	b := &a.backend
	pf := root.PersistentFlags()
	pf.StringVar(&b.apiURL, config.FlagFor("nannyapi_url"), "", "NannyAPI base URL (nannyapi_url; overrides NANNYAPI_URL)")
	pf.StringVar(&b.portalURL, config.FlagFor("portal_url"), "", "portal URL shown to users (portal_url; overrides NANNYAI_PORTAL_URL)")
	pf.StringVar(&b.tokenPath, config.FlagFor("token_path"), "", "token file (token_path; overrides TOKEN_PATH; default /var/lib/nannyagent/token.json)")
	pf.StringVar(&b.agentID, config.FlagFor("agent_id"), "", "agent ID sent with a static token (agent_id; overrides NANNYAI_AGENT_ID)")
	pf.IntVar(&b.metricsInterval, config.FlagFor("metrics_interval"), 0, "seconds between metrics reports of the daemon (metrics_interval; default 30)")
	pf.IntVar(&b.proxmoxInterval, config.FlagFor("proxmox_interval"), 0, "seconds between Proxmox reports of the daemon (proxmox_interval; default 300)")
}

// addLegacyBackendFlags are the earlier agent's spellings of the
// register and status commands, on the root command.
func (a *app) addLegacyBackendFlags(root *cobra.Command) {
	f := root.Flags()
	f.BoolVar(&a.backend.register, "register", false, "register this host with NannyAPI (the same as the register command; needs root)")
	f.BoolVar(&a.backend.status, "status", false, "show the registration, the backend and the daemon (the same as the status command)")
	f.BoolVar(&a.backend.force, "force", false, "with --register: replace an existing registration without asking")
}

// legacyBackend runs --register or --status; handled is false when
// neither was given.
func (a *app) legacyBackend(cmd *cobra.Command) (handled bool, err error) {
	b := a.backend
	switch {
	case b.register && b.status:
		return true, usageErr(errors.New("--register and --status are separate commands: give one"))
	case (b.register || b.status) && cmd.Flags().Changed("diagnose"):
		return true, usageErr(errors.New("--diagnose goes alone, not with --register or --status"))
	case b.register:
		return true, a.runRegister(cmd.Context(), b.force)
	case b.status:
		asJSON, _ := cmd.Flags().GetBool("json")
		return true, a.runStatus(cmd.Context(), asJSON)
	case b.force:
		return true, usageErr(errors.New("--force goes with --register"))
	}
	return false, nil
}

// loadConfig reads the configuration file, then the environment, then
// the flags, and validates the result: a flag can fix what the file or
// the environment got wrong.
func (a *app) loadConfig(cmd *cobra.Command, explicit bool) (*config.Config, error) {
	cfg := config.Defaults()
	data, err := os.ReadFile(a.configPath)
	switch {
	case err == nil:
		if cfg, err = config.Parse(data, a.configPath); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("config file %s does not exist", a.configPath)
	default:
		return nil, fmt.Errorf("config file: %w", err)
	}
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return nil, err
	}
	a.applyBackendFlags(cmd, cfg)
	if a.debug {
		cfg.Debug = true
		cfg.SetFrom("debug", "--"+config.FlagFor("debug"))
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", a.configPath, err)
	}
	return cfg, nil
}

func (a *app) applyBackendFlags(cmd *cobra.Command, cfg *config.Config) {
	b := &a.backend
	set := func(key string, apply func()) {
		flag := config.FlagFor(key)
		if fl := cmd.Flag(flag); fl != nil && fl.Changed {
			apply()
			cfg.SetFrom(key, "--"+flag)
		}
	}
	set("nannyapi_url", func() { cfg.NannyAPIURL = b.apiURL })
	set("portal_url", func() { cfg.PortalURL = b.portalURL })
	set("token_path", func() { cfg.TokenPath = b.tokenPath })
	set("agent_id", func() { cfg.AgentID = b.agentID })
	set("metrics_interval", func() { cfg.MetricsInterval = b.metricsInterval })
	set("proxmox_interval", func() { cfg.ProxmoxInterval = b.proxmoxInterval })
}
