package nannyapitest

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// expiresIn is what register and refresh say, whatever the JWT's real
// lifetime.
const expiresIn = 3600

// userCodeAlphabet leaves out the letters and digits people confuse.
const userCodeAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// Metrics is the agent_metrics row of an agent (one per agent, upserted).
type Metrics struct {
	CPUPercent       float64
	CPUCores         int
	MemoryUsedGB     float64
	MemoryTotalGB    float64
	MemoryPercent    float64
	DiskUsedGB       float64
	DiskTotalGB      float64
	DiskUsagePercent float64
	NetworkInGB      float64
	NetworkOutGB     float64
	LoadAvg1Min      float64
	LoadAvg5Min      float64
	LoadAvg15Min     float64
	// Filesystems is the stored JSON text ("" when none were sent).
	Filesystems string
	RecordedAt  time.Time
}

// LatestMetrics returns the agent's stored metrics row.
func (s *Server) LatestMetrics(agentID string) (Metrics, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[agentID]
	if !ok || a.metrics == nil {
		return Metrics{}, false
	}
	return *a.metrics, true
}

func (s *Server) handleAgent(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Action string `json:"action"`
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	s.mu.Lock()
	renewal, static := s.renewal, s.staticAuth
	s.mu.Unlock()
	switch req.Action {
	case "device-auth-start":
		s.deviceAuthStart(w)
	case "authorize":
		s.authorizeAction(w, r, body)
	case "register":
		s.register(w, body)
	case "refresh":
		s.refresh(w, body, false)
	case "ingest-metrics":
		s.ingestMetrics(w, r, body)
	case "list":
		s.listAgents(w, r)
	case "health":
		s.agentHealth(w, r, body)
	case "revoke":
		s.revoke(w, r, body)
	case "renew-refresh-token":
		if !renewal {
			errorJSON(w, http.StatusBadRequest, "unknown action")
			return
		}
		s.refresh(w, body, true)
	case "register-with-token":
		if !static {
			errorJSON(w, http.StatusBadRequest, "unknown action")
			return
		}
		s.registerWithToken(w, r, body)
	default:
		errorJSON(w, http.StatusBadRequest, "unknown action")
	}
}

func (s *Server) deviceAuthStart(w http.ResponseWriter) {
	s.mu.Lock()
	dc := &deviceCode{
		id: pbID(), deviceCode: randomHex(16), userCode: randomFrom(userCodeAlphabet, 8),
		expires: s.Now().Add(s.opts.DeviceCodeTTL),
	}
	s.deviceCodes[dc.deviceCode] = dc
	s.userCodes[dc.userCode] = dc
	s.notifyLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, struct {
		DeviceCode      string `json:"device_code"`
		UserCode        string `json:"user_code"`
		VerificationURI string `json:"verification_uri"`
		ExpiresIn       int    `json:"expires_in"`
	}{dc.deviceCode, dc.userCode, strings.TrimSuffix(s.opts.FrontendURL, "/") + "/agent/authorize?user_code=" + dc.userCode, 600})
}

func (s *Server) authorizeAction(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		UserCode string `json:"user_code"`
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	if req.UserCode == "" {
		errorJSON(w, http.StatusBadRequest, "user_code required")
		return
	}
	auth := s.authenticate(r)
	if auth == nil {
		// The handler dereferences the missing auth record.
		panicked(w)
		return
	}
	if err := s.Authorize(&User{ID: auth.id}, req.UserCode); err != nil {
		errorJSON(w, http.StatusBadRequest, err.Error())
		return
	}
	writeSuccess(w, "device authorized")
}

// hostFields are the agent fields register, register-with-token and
// ingest-metrics carry.
type hostFields struct {
	Hostname       string   `json:"hostname"`
	OSType         string   `json:"os_type"`
	OSInfo         string   `json:"os_info"`
	OSVersion      string   `json:"os_version"`
	Version        string   `json:"version"`
	PrimaryIP      string   `json:"primary_ip"`
	KernelVersion  string   `json:"kernel_version"`
	Arch           string   `json:"arch"`
	AllIPs         []string `json:"all_ips"`
	PlatformFamily string   `json:"platform_family"`
	Platform       string   `json:"platform"`
}

// guessFamily is the backend's fallback when platform_family is empty.
func guessFamily(osInfo string) string {
	o := strings.ToLower(osInfo)
	for _, f := range []struct{ fam, words string }{
		{"debian", "debian ubuntu mint raspbian pop kali"},
		{"rhel", "rhel red hat redhat centos fedora rocky alma oracle amazon"},
		{"suse", "suse sles opensuse"},
		{"arch", "arch manjaro endeavour"},
		{"alpine", "alpine"},
		{"darwin", "darwin macos"},
		{"windows", "windows"},
	} {
		for _, word := range strings.Fields(f.words) {
			if o != "" && strings.Contains(o, word) {
				return f.fam
			}
		}
	}
	return "unknown"
}

// validateAgent checks the agents collection's field constraints.
func validateAgent(a *agent) string {
	errs := map[string]string{}
	req := func(name, v string, max int) {
		switch {
		case v == "":
			errs[name] = "cannot be blank"
		case utf8.RuneCountInString(v) > max:
			errs[name] = maxLenMsg(max)
		}
	}
	opt := func(name, v string, max int) {
		if utf8.RuneCountInString(v) > max {
			errs[name] = maxLenMsg(max)
		}
	}
	req("hostname", a.hostname, 255)
	req("platform_family", a.platformFamily, 100)
	req("version", a.version, 50)
	opt("primary_ip", a.primaryIP, 45)
	opt("kernel_version", a.kernelVersion, 45)
	for name, v := range map[string]string{"os_type": a.osType, "os_info": a.osInfo, "os_version": a.osVersion, "arch": a.arch} {
		opt(name, v, 5000)
	}
	if len(errs) == 0 {
		return ""
	}
	return validationError(errs)
}

func (s *Server) register(w http.ResponseWriter, body []byte) {
	var req struct {
		DeviceCode string `json:"device_code"`
		hostFields
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	if req.DeviceCode == "" {
		errorJSON(w, http.StatusBadRequest, "device_code required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dc, ok := s.deviceCodes[req.DeviceCode]
	switch {
	case !ok:
		errorJSON(w, http.StatusBadRequest, "invalid device code")
		return
	case s.Now().After(dc.expires):
		errorJSON(w, http.StatusBadRequest, "device code expired")
		return
	case !dc.authorized:
		errorJSON(w, http.StatusBadRequest, "device not authorized yet")
		return
	case dc.consumed:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "device code already used", "agent_id": dc.agentID})
		return
	case dc.userID == "":
		errorJSON(w, http.StatusBadRequest, "user_id missing")
		return
	}
	a := &agent{
		id: pbID(), userID: dc.userID, deviceCodeID: dc.id, deviceUserCode: dc.userCode, lastSeen: s.Now(),
	}
	a.setHost(req.hostFields, true)
	if a.platformFamily == "" {
		a.platformFamily = guessFamily(a.osInfo)
	}
	if msg := validateAgent(a); msg != "" {
		// The device code stays unconsumed: a fixed retry works.
		errorJSON(w, http.StatusInternalServerError, "failed to create agent: "+msg)
		return
	}
	refresh := randomHex(16)
	a.refreshHash = hashToken(refresh)
	a.refreshExpires = s.Now().Add(s.opts.RefreshTokenTTL)
	s.addAgentLocked(a)
	dc.consumed = true
	dc.agentID = a.id
	writeJSON(w, http.StatusOK, tokenResponse{s.issueLocked(AgentsCollectionID, a.id), refresh, expiresIn, a.id})
}

// setHost copies host fields; with all, empty values are copied too
// (creation), else empty values leave the stored ones (ingest-metrics).
func (a *agent) setHost(h hostFields, all bool) {
	set := func(dst *string, v string) {
		if all || v != "" {
			*dst = v
		}
	}
	set(&a.hostname, h.Hostname)
	set(&a.osType, h.OSType)
	set(&a.osInfo, h.OSInfo)
	set(&a.osVersion, h.OSVersion)
	set(&a.version, h.Version)
	set(&a.primaryIP, h.PrimaryIP)
	set(&a.kernelVersion, h.KernelVersion)
	set(&a.arch, h.Arch)
	if len(h.AllIPs) > 0 {
		a.allIPs = append([]string(nil), h.AllIPs...)
	}
	a.platformFamily = h.PlatformFamily
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	AgentID      string `json:"agent_id"`
}

// refresh answers refresh and, with renew, the renew-refresh-token a
// backend with renewal would: a new refresh token replacing the old one.
func (s *Server) refresh(w http.ResponseWriter, body []byte, renew bool) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	if req.RefreshToken == "" {
		errorJSON(w, http.StatusBadRequest, "refresh_token required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h := hashToken(req.RefreshToken)
	var a *agent
	for _, id := range s.agentOrder {
		if ag := s.agents[id]; ag.refreshHash != "" && ag.refreshHash == h {
			a = ag
			break
		}
	}
	if a == nil {
		errorJSON(w, http.StatusUnauthorized, "invalid refresh token")
		return
	}
	if s.Now().After(a.refreshExpires) {
		errorJSON(w, http.StatusUnauthorized, "refresh token expired")
		return
	}
	newRefresh := ""
	if renew {
		newRefresh = randomHex(16)
		a.refreshHash = hashToken(newRefresh)
		a.refreshExpires = s.Now().Add(s.opts.RefreshTokenTTL)
	}
	s.notifyLocked()
	writeJSON(w, http.StatusOK, tokenResponse{s.issueLocked(AgentsCollectionID, a.id), newRefresh, expiresIn, a.id})
}

// registerWithToken is what a backend with static tokens would answer:
// the agent bound to the nsk_ bearer (created on first use).
func (s *Server) registerWithToken(w http.ResponseWriter, r *http.Request, body []byte) {
	var req hostFields
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	tok := bearer(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.staticTokens[tok]
	if !ok {
		writeJSON(w, http.StatusUnauthorized, struct {
			Error            string `json:"error"`
			ErrorDescription string `json:"error_description"`
		}{"invalid_token", "static token not recognised or revoked"})
		return
	}
	a, ok := s.agents[st.agentID]
	fresh := !ok
	if fresh {
		a = &agent{id: pbID(), userID: st.userID, staticToken: tok}
	}
	b := *a
	b.setHost(req, fresh)
	if b.platformFamily == "" {
		b.platformFamily = guessFamily(b.osInfo)
	}
	if msg := validateAgent(&b); msg != "" {
		errorJSON(w, http.StatusInternalServerError, "failed to create agent: "+msg)
		return
	}
	b.lastSeen = s.Now()
	*a = b
	if fresh {
		st.agentID = a.id
		s.addAgentLocked(a)
	}
	s.notifyLocked()
	writeJSON(w, http.StatusOK, map[string]string{"agent_id": a.id})
}

type wireFilesystem struct {
	Device       string  `json:"device"`
	MountPath    string  `json:"mount_path"`
	UsedGB       float64 `json:"used_gb"`
	FreeGB       float64 `json:"free_gb"`
	TotalGB      float64 `json:"total_gb"`
	UsagePercent float64 `json:"usage_percent"`
}

type wireSystemMetrics struct {
	CPUPercent       float64          `json:"cpu_percent"`
	CPUCores         int              `json:"cpu_cores"`
	MemoryUsedGB     float64          `json:"memory_used_gb"`
	MemoryTotalGB    float64          `json:"memory_total_gb"`
	MemoryPercent    float64          `json:"memory_percent"`
	DiskUsedGB       float64          `json:"disk_used_gb"`
	DiskTotalGB      float64          `json:"disk_total_gb"`
	DiskUsagePercent float64          `json:"disk_usage_percent"`
	Filesystems      []wireFilesystem `json:"filesystems"`
	LoadAverage      struct {
		OneMin     float64 `json:"one_min"`
		FiveMin    float64 `json:"five_min"`
		FifteenMin float64 `json:"fifteen_min"`
	} `json:"load_average"`
	NetworkStats struct {
		InGB  float64 `json:"in_gb"`
		OutGB float64 `json:"out_gb"`
	} `json:"network_stats"`
	KernelVersion string `json:"kernel_version"`
}

// maxFilesystemsJSON is the agent_metrics.filesystems text field's limit.
const maxFilesystemsJSON = 5000

func (s *Server) ingestMetrics(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		SystemMetrics wireSystemMetrics `json:"system_metrics"`
		hostFields
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return
	}
	if req.PlatformFamily == "" {
		errorJSON(w, http.StatusBadRequest, "platform_family required")
		return
	}
	auth := s.requireAgent(w, r, http.StatusUnauthorized, "invalid agent authentication")
	if auth == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.agents[auth.id]
	b := *a
	req.Hostname = ""
	req.OSType = ""
	b.setHost(req.hostFields, false)
	b.lastSeen = s.Now()
	if validateAgent(&b) != "" {
		errorJSON(w, http.StatusInternalServerError, "failed to update agent")
		return
	}
	*a = b
	s.notifyLocked()
	s.checkRebootsLocked()

	m := req.SystemMetrics
	stored := Metrics{
		CPUPercent: m.CPUPercent, CPUCores: m.CPUCores,
		MemoryUsedGB: m.MemoryUsedGB, MemoryTotalGB: m.MemoryTotalGB, MemoryPercent: m.MemoryPercent,
		DiskUsedGB: m.DiskUsedGB, DiskTotalGB: m.DiskTotalGB, DiskUsagePercent: m.DiskUsagePercent,
		NetworkInGB: m.NetworkStats.InGB, NetworkOutGB: m.NetworkStats.OutGB,
		LoadAvg1Min: m.LoadAverage.OneMin, LoadAvg5Min: m.LoadAverage.FiveMin, LoadAvg15Min: m.LoadAverage.FifteenMin,
		RecordedAt: s.Now(),
	}
	if a.metrics != nil {
		// Upserted: a request without filesystems keeps the old text.
		stored.Filesystems = a.metrics.Filesystems
	}
	if len(m.Filesystems) > 0 {
		fs, _ := json.Marshal(m.Filesystems)
		stored.Filesystems = string(fs)
	}
	if !metricsValid(stored) {
		errorJSON(w, http.StatusInternalServerError, "failed to save metrics")
		return
	}
	a.metrics = &stored
	a.metricsCount++
	writeSuccess(w, "metrics recorded")
}

// metricsValid checks the agent_metrics columns' constraints:
// percentages 0–100, everything else at least 0, filesystems at most
// 5000 characters.
func metricsValid(m Metrics) bool {
	for _, p := range []float64{m.CPUPercent, m.MemoryPercent, m.DiskUsagePercent} {
		if p < 0 || p > 100 {
			return false
		}
	}
	for _, v := range []float64{
		float64(m.CPUCores), m.MemoryUsedGB, m.MemoryTotalGB, m.DiskUsedGB, m.DiskTotalGB,
		m.NetworkInGB, m.NetworkOutGB, m.LoadAvg1Min, m.LoadAvg5Min, m.LoadAvg15Min,
	} {
		if v < 0 {
			return false
		}
	}
	return utf8.RuneCountInString(m.Filesystems) <= maxFilesystemsJSON
}

// health is how the backend rates an agent by its last_seen.
func (s *Server) health(lastSeen time.Time) string {
	switch d := s.Now().Sub(lastSeen); {
	case lastSeen.IsZero():
		return "inactive"
	case d < 5*time.Minute:
		return "healthy"
	case d < 15*time.Minute:
		return "stale"
	}
	return "inactive"
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Millisecond)
	return &t
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	auth := s.authenticate(r)
	if auth == nil {
		panicked(w)
		return
	}
	type item struct {
		ID            string     `json:"id"`
		Hostname      string     `json:"hostname"`
		OSType        string     `json:"os_type"`
		OSInfo        string     `json:"os_info"`
		OSVersion     string     `json:"os_version"`
		Version       string     `json:"version"`
		Status        string     `json:"status"`
		Health        string     `json:"health"`
		LastSeen      *time.Time `json:"last_seen"`
		Created       time.Time  `json:"created"`
		KernelVersion string     `json:"kernel_version"`
		Arch          string     `json:"arch"`
	}
	s.mu.Lock()
	items := []item{}
	for _, id := range s.agentOrder {
		a := s.agents[id]
		if a.userID != auth.id {
			continue
		}
		items = append(items, item{
			ID: a.id, Hostname: a.hostname, OSType: a.osType, OSInfo: a.osInfo, OSVersion: a.osVersion,
			Version: a.version, Health: s.health(a.lastSeen), LastSeen: timePtr(a.lastSeen),
			KernelVersion: a.kernelVersion, Arch: a.arch,
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"agents": items})
}

// actionAgent binds the {"agent_id"} of a user action (health, revoke)
// and finds the caller's agent; it writes the error and returns nil
// when that fails.
func (s *Server) actionAgent(w http.ResponseWriter, r *http.Request, body []byte) *agent {
	var req struct {
		AgentID string `json:"agent_id"`
	}
	if !decodeBody(w, body, &req, "invalid request") {
		return nil
	}
	if req.AgentID == "" {
		errorJSON(w, http.StatusBadRequest, "agent_id required")
		return nil
	}
	auth := s.authenticate(r)
	if auth == nil {
		panicked(w)
		return nil
	}
	s.mu.Lock()
	a, status, msg := s.ownAgentLocked(auth.id, req.AgentID, "agent not found", "not your agent")
	s.mu.Unlock()
	if msg != "" {
		errorJSON(w, status, msg)
		return nil
	}
	return a
}

func (s *Server) agentHealth(w http.ResponseWriter, r *http.Request, body []byte) {
	a := s.actionAgent(w, r, body)
	if a == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var latest *wireSystemMetrics
	if m := a.metrics; m != nil {
		l := wireSystemMetrics{
			CPUPercent: m.CPUPercent, CPUCores: m.CPUCores, MemoryUsedGB: m.MemoryUsedGB,
			MemoryTotalGB: m.MemoryTotalGB, MemoryPercent: m.MemoryPercent, DiskUsedGB: m.DiskUsedGB,
			DiskTotalGB: m.DiskTotalGB, DiskUsagePercent: m.DiskUsagePercent,
		}
		_ = json.Unmarshal([]byte(m.Filesystems), &l.Filesystems)
		l.LoadAverage.OneMin, l.LoadAverage.FiveMin, l.LoadAverage.FifteenMin = m.LoadAvg1Min, m.LoadAvg5Min, m.LoadAvg15Min
		l.NetworkStats.InGB, l.NetworkStats.OutGB = m.NetworkInGB, m.NetworkOutGB
		latest = &l
	}
	writeJSON(w, http.StatusOK, struct {
		AgentID       string             `json:"agent_id"`
		Status        string             `json:"status"`
		Health        string             `json:"health"`
		LastSeen      *time.Time         `json:"last_seen"`
		LatestMetrics *wireSystemMetrics `json:"latest_metrics"`
	}{a.id, "", s.health(a.lastSeen), timePtr(a.lastSeen), latest})
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request, body []byte) {
	a := s.actionAgent(w, r, body)
	if a == nil {
		return
	}
	s.RevokeAgent(a.id)
	writeSuccess(w, "agent revoked")
}
