package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/nannyapi"
	"github.com/nannyagent/nannyagent/internal/version"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// DefaultPollInterval is how often register is polled while the user
// authorizes the device code (the earlier agent's 5 s).
const DefaultPollInterval = 5 * time.Second

// Host is what registration tells the backend about this machine.
// Hostname, Version and PlatformFamily are required by the backend;
// ingest-metrics fills in the rest later in any case.
type Host struct {
	Hostname       string
	OSType         string
	PlatformFamily string
	Version        string
	KernelVersion  string
	Arch           string
	PrimaryIP      string
	AllIPs         []string
}

// DefaultHost describes this machine.
func DefaultHost() Host {
	h := Host{OSType: runtime.GOOS, Version: version.Version, Arch: runtime.GOARCH}
	h.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.KernelVersion = unix.ByteSliceToString(u.Release[:])
		h.Arch = unix.ByteSliceToString(u.Machine[:])
	}
	h.PlatformFamily = platformFamily()
	h.PrimaryIP, h.AllIPs = addresses()
	return h
}

// platformFamily is os-release's family as the backend keys its patch
// scripts (debian, rhel, suse, arch, alpine), else the distribution's
// own ID, else "unknown": the backend refuses an empty one.
func platformFamily() string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		data, _ = os.ReadFile("/usr/lib/os-release")
	}
	var id, like string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.ToLower(strings.Trim(v, `"'`))
		switch k {
		case "ID":
			id = v
		case "ID_LIKE":
			like = v
		}
	}
	families := map[string]string{
		"debian": "debian", "ubuntu": "debian", "rhel": "rhel", "centos": "rhel", "fedora": "rhel",
		"rocky": "rhel", "almalinux": "rhel", "amzn": "rhel", "ol": "rhel", "suse": "suse", "sles": "suse",
		"opensuse": "suse", "arch": "arch", "alpine": "alpine",
	}
	for _, c := range append([]string{id}, strings.Fields(like)...) {
		if f, ok := families[c]; ok {
			return f
		}
	}
	if id != "" && len(id) <= 100 {
		return id
	}
	return "unknown"
}

// addresses are the host's non-loopback addresses of interfaces that are
// up, the first IPv4 one as the primary.
func addresses() (string, []string) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", nil
	}
	var primary string
	var all []string
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok || n.IP.IsLinkLocalUnicast() {
				continue
			}
			all = append(all, n.IP.String())
			if primary == "" && n.IP.To4() != nil {
				primary = n.IP.String()
			}
		}
	}
	return primary, all
}

// DeviceCode is what the user needs to authorize this host.
type DeviceCode struct {
	UserCode string
	// VerificationURI is the portal page that takes the code (with the
	// code already in it).
	VerificationURI string
	ExpiresAt       time.Time
}

// RegisterOptions control Register.
type RegisterOptions struct {
	// Force replaces an existing registration (only once the new one
	// succeeded: a failed attempt leaves the old files alone).
	Force bool
	// Host is sent to the backend; the zero value means DefaultHost().
	Host Host
	// PollInterval defaults to DefaultPollInterval.
	PollInterval time.Duration
	// OnDeviceCode shows the code to the user (device flow).
	OnDeviceCode func(DeviceCode)
	// OnWaiting is called after each poll the user has not answered yet,
	// with the time left before the code expires.
	OnWaiting func(remaining time.Duration)
	// OnRetry is called when a poll failed in a way that may pass (the
	// backend unreachable or answering 5xx); polling goes on.
	OnRetry func(err error)
}

// Registration is a completed registration.
type Registration struct {
	Mode      string
	AgentID   string
	TokenPath string
	// Warning is something the user should fix although registration
	// succeeded.
	Warning string
}

// Errors of Register, for errors.Is.
var (
	ErrAlreadyRegistered  = errors.New("already registered")
	ErrDeviceCodeExpired  = errors.New("the device code expired before it was authorized")
	ErrDeviceCodeUsed     = errors.New("the device code was already used")
	ErrStaticUnsupported  = errors.New("the backend does not support static tokens")
	ErrStaticTokenRefused = errors.New("the backend refused the static token")
)

// AlreadyRegisteredError is Register refusing to replace a registration
// without Force.
type AlreadyRegisteredError struct {
	AgentID   string
	TokenPath string
}

func (e *AlreadyRegisteredError) Error() string {
	agent := ""
	if e.AgentID != "" {
		agent = " as agent " + e.AgentID
	}
	return fmt.Sprintf("this host is already registered%s (%s exists): run `sudo nannyagent --register --force` to replace the registration", agent, e.TokenPath)
}

// Is makes errors.Is(err, ErrAlreadyRegistered) true.
func (e *AlreadyRegisteredError) Is(target error) bool { return target == ErrAlreadyRegistered }

// Existing reports whether a registration is on disk (token.json
// exists, whatever it holds), and the agent ID when it is readable.
func (m *Manager) Existing() (bool, string) {
	if _, err := os.Lstat(m.files.tokenPath); err != nil {
		return false, ""
	}
	return true, m.AgentID()
}

// Register registers this host: with register-with-token when a static
// token is configured, else through the device flow. The tokens are
// stored only once the backend issued them, and the Manager uses them
// from then on.
func (m *Manager) Register(ctx context.Context, opts RegisterOptions) (*Registration, error) {
	if exists, id := m.Existing(); exists && !opts.Force {
		return nil, &AlreadyRegisteredError{AgentID: id, TokenPath: m.files.tokenPath}
	}
	// Fail on an unusable directory before the user authorizes anything.
	if err := m.files.checkDir(true); err != nil {
		return nil, err
	}
	if opts.Host.Hostname == "" && opts.Host.Version == "" {
		opts.Host = DefaultHost()
	}
	if opts.Host.Version == "" {
		opts.Host.Version = version.Version
	}
	if opts.Host.PlatformFamily == "" {
		opts.Host.PlatformFamily = "unknown"
	}
	if m.static != "" {
		return m.registerStatic(ctx, opts.Host)
	}
	return m.registerDevice(ctx, opts)
}

func (m *Manager) registerDevice(ctx context.Context, opts RegisterOptions) (*Registration, error) {
	interval := opts.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	da, err := m.client.DeviceAuthStart(ctx)
	if err != nil {
		return nil, fmt.Errorf("starting the device authorization: %w", err)
	}
	lifetime := time.Duration(da.ExpiresIn) * time.Second
	if lifetime <= 0 {
		lifetime = 10 * time.Minute
	}
	expires := m.now().Add(lifetime)
	if opts.OnDeviceCode != nil {
		opts.OnDeviceCode(DeviceCode{UserCode: da.UserCode, VerificationURI: da.VerificationURI, ExpiresAt: expires})
	}
	h := opts.Host
	req := nannyapi.RegisterRequest{
		DeviceCode: da.DeviceCode, Hostname: h.Hostname, OSType: h.OSType, PlatformFamily: h.PlatformFamily,
		Version: h.Version, KernelVersion: h.KernelVersion, Arch: h.Arch, PrimaryIP: h.PrimaryIP, AllIPs: h.AllIPs,
	}
	for {
		resp, err := m.client.Register(ctx, req)
		if err == nil {
			return m.storeDevice(resp)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("registration cancelled: %w", ctx.Err())
		}
		e, isAPI := nannyapi.AsError(err)
		switch {
		case isAPI && e.IsAuthorizationPending():
		case isAPI && e.IsDeviceCodeExpired():
			return nil, fmt.Errorf("%w (the code %s was valid for %s): run `sudo nannyagent --register` again and authorize the new code in time",
				ErrDeviceCodeExpired, da.UserCode, lifetime)
		case isAPI && e.IsDeviceCodeUsed():
			return nil, fmt.Errorf("%w to register agent %s, but its tokens never reached this host (an answer lost on the way?): run `sudo nannyagent --register` again, and remove agent %s in the portal",
				ErrDeviceCodeUsed, e.AgentID, e.AgentID)
		case isAPI && strings.HasPrefix(e.Message, "failed to create agent"):
			// The backend's validation of the host's details: polling
			// again sends the same details.
			return nil, fmt.Errorf("the backend refused this host's details: %w", err)
		case nannyapi.Retryable(err):
			m.log.Warn("registration poll failed; polling again", zap.Error(err))
			if opts.OnRetry != nil {
				opts.OnRetry(err)
			}
		default:
			return nil, fmt.Errorf("registering: %w", err)
		}
		remaining := expires.Sub(m.now())
		if remaining <= 0 {
			return nil, fmt.Errorf("%w (the code %s was valid for %s): run `sudo nannyagent --register` again and authorize the new code in time",
				ErrDeviceCodeExpired, da.UserCode, lifetime)
		}
		if opts.OnWaiting != nil {
			opts.OnWaiting(remaining)
		}
		if err := nannyapi.Sleep(ctx, min(interval, remaining)); err != nil {
			return nil, fmt.Errorf("registration cancelled: %w", err)
		}
	}
}

func (m *Manager) storeDevice(resp *nannyapi.TokenResponse) (*Registration, error) {
	if resp.AccessToken == "" || resp.RefreshToken == "" {
		return nil, errors.New("registering: the backend's answer lacks the access or refresh token")
	}
	now := m.now().UTC()
	t := &TokenFile{
		AccessToken: resp.AccessToken, RefreshToken: resp.RefreshToken, TokenType: resp.TokenType,
		ExpiresAt: now.Add(time.Duration(resp.ExpiresIn) * time.Second), AgentID: resp.AgentID, RegisteredAt: &now,
	}
	if c, err := nannyapi.ParseToken(resp.AccessToken); err == nil {
		t.ExpiresAt = c.Expires
		if t.AgentID == "" {
			t.AgentID = c.ID
		}
	}
	if resp.RefreshTokenExpiresIn > 0 {
		exp := now.Add(time.Duration(resp.RefreshTokenExpiresIn) * time.Second)
		t.RefreshExpiresAt = &exp
	}
	if err := m.store(t); err != nil {
		return nil, err
	}
	return &Registration{Mode: ModeDevice, AgentID: t.AgentID, TokenPath: m.files.tokenPath}, nil
}

// store writes a new registration and makes it the Manager's.
func (m *Manager) store(t *TokenFile) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.files.saveTokens(t); err != nil {
		return fmt.Errorf("the backend registered agent %s, but its tokens could not be saved: %w", t.AgentID, err)
	}
	m.renewal, m.nextRenewal = RenewalUntried, time.Time{}
	m.reloadLocked()
	return nil
}

func (m *Manager) registerStatic(ctx context.Context, h Host) (*Registration, error) {
	id, err := m.client.RegisterWithToken(ctx, m.static, nannyapi.RegisterWithTokenRequest{
		Hostname: h.Hostname, OSType: h.OSType, PlatformFamily: h.PlatformFamily, Version: h.Version,
		PrimaryIP: h.PrimaryIP, KernelVersion: h.KernelVersion, AllIPs: h.AllIPs,
	})
	if err != nil {
		src := "static_token in the configuration"
		if s := m.cfg.Source("static_token"); s != "" {
			src = s + " in the environment"
		}
		if nannyapi.IsUnknownAction(err) {
			return nil, fmt.Errorf("%w (it answered \"unknown action\" to register-with-token): remove %s and register with the device flow: sudo nannyagent --register",
				ErrStaticUnsupported, src)
		}
		if e, ok := nannyapi.AsError(err); ok && (e.IsUnauthorized() || e.IsForbidden()) {
			why := e.Message
			if e.Description != "" {
				why += ": " + e.Description
			}
			return nil, fmt.Errorf("%w (%s): check %s, or create a new token in the portal", ErrStaticTokenRefused, why, src)
		}
		return nil, fmt.Errorf("registering with the static token: %w", err)
	}
	now := m.now().UTC()
	t := &TokenFile{TokenType: TokenTypeStatic, ExpiresAt: now.Add(staticLifetime), AgentID: id, RegisteredAt: &now}
	if err := m.store(t); err != nil {
		return nil, err
	}
	r := &Registration{Mode: ModeStatic, AgentID: id, TokenPath: m.files.tokenPath}
	if m.cfg.AgentID != "" && m.cfg.AgentID != id {
		r.Warning = fmt.Sprintf("agent_id %s in the configuration is not the agent this token registered (%s), and the configured one is sent as X-Agent-ID: set agent_id to %s or remove it", m.cfg.AgentID, id, id)
	}
	return r, nil
}
