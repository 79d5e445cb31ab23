package nannyapi

import (
	"encoding/json"
	"math"
	"unicode/utf8"
)

// MaxFilesystemsJSON is the length limit of the filesystems list as the
// backend stores it (JSON text); longer answers 500.
const MaxFilesystemsJSON = 5000

// MetricsRequest is ingest-metrics' body (§2.7). Sizes are GiB and
// percentages 0–100, rounded to 2 decimals by Sanitize.
type MetricsRequest struct {
	SystemMetrics  SystemMetrics `json:"system_metrics"`
	OSInfo         string        `json:"os_info"`
	OSVersion      string        `json:"os_version"`
	OSType         string        `json:"os_type"`
	PlatformFamily string        `json:"platform_family"`
	Version        string        `json:"version"`
	PrimaryIP      string        `json:"primary_ip"`
	KernelVersion  string        `json:"kernel_version"`
	Arch           string        `json:"arch"`
	AllIPs         []string      `json:"all_ips"`
}

// SystemMetrics is the metrics block.
type SystemMetrics struct {
	CPUPercent       float64      `json:"cpu_percent"`
	CPUCores         int          `json:"cpu_cores"`
	MemoryUsedGB     float64      `json:"memory_used_gb"`
	MemoryTotalGB    float64      `json:"memory_total_gb"`
	MemoryPercent    float64      `json:"memory_percent"`
	DiskUsedGB       float64      `json:"disk_used_gb"`
	DiskTotalGB      float64      `json:"disk_total_gb"`
	DiskUsagePercent float64      `json:"disk_usage_percent"`
	Filesystems      []Filesystem `json:"filesystems"`
	LoadAverage      LoadAverage  `json:"load_average"`
	NetworkStats     NetworkStats `json:"network_stats"`
	KernelVersion    string       `json:"kernel_version"`
}

// Filesystem is one mounted filesystem.
type Filesystem struct {
	Device       string  `json:"device"`
	MountPath    string  `json:"mount_path"`
	UsedGB       float64 `json:"used_gb"`
	FreeGB       float64 `json:"free_gb"`
	TotalGB      float64 `json:"total_gb"`
	UsagePercent float64 `json:"usage_percent"`
}

// LoadAverage is /proc/loadavg's three figures.
type LoadAverage struct {
	OneMin     float64 `json:"one_min"`
	FiveMin    float64 `json:"five_min"`
	FifteenMin float64 `json:"fifteen_min"`
}

// NetworkStats are bytes received and sent since boot, in GiB.
type NetworkStats struct {
	InGB  float64 `json:"in_gb"`
	OutGB float64 `json:"out_gb"`
}

func (m *MetricsRequest) clone() *MetricsRequest {
	c := *m
	c.SystemMetrics.Filesystems = append([]Filesystem(nil), m.SystemMetrics.Filesystems...)
	c.AllIPs = append([]string(nil), m.AllIPs...)
	return &c
}

// round2 rounds to 2 decimals; NaN and negatives become 0 (the backend
// refuses negatives), infinities the largest finite value.
func round2(v float64) float64 {
	switch {
	case math.IsNaN(v) || v <= 0:
		return 0
	case math.IsInf(v, 1) || v > 1e15:
		return 1e15
	}
	return math.Round(v*100) / 100
}

func percent(v float64) float64 { return math.Min(round2(v), 100) }

// Sanitize makes the payload one the backend accepts: every figure
// rounded to 2 decimals and at least 0, percentages at most 100,
// kernel_version (both), version and primary_ip cut to their limits,
// negative cpu_cores 0, and filesystems dropped from the end until
// their JSON fits in MaxFilesystemsJSON characters.
func (m *MetricsRequest) Sanitize() {
	s := &m.SystemMetrics
	s.CPUPercent = percent(s.CPUPercent)
	s.MemoryPercent = percent(s.MemoryPercent)
	s.DiskUsagePercent = percent(s.DiskUsagePercent)
	for _, p := range []*float64{
		&s.MemoryUsedGB, &s.MemoryTotalGB, &s.DiskUsedGB, &s.DiskTotalGB,
		&s.LoadAverage.OneMin, &s.LoadAverage.FiveMin, &s.LoadAverage.FifteenMin,
		&s.NetworkStats.InGB, &s.NetworkStats.OutGB,
	} {
		*p = round2(*p)
	}
	if s.CPUCores < 0 {
		s.CPUCores = 0
	}
	for i := range s.Filesystems {
		f := &s.Filesystems[i]
		f.UsedGB, f.FreeGB, f.TotalGB = round2(f.UsedGB), round2(f.FreeGB), round2(f.TotalGB)
		f.UsagePercent = percent(f.UsagePercent)
	}
	for len(s.Filesystems) > 0 && filesystemsLen(s.Filesystems) > MaxFilesystemsJSON {
		s.Filesystems = s.Filesystems[:len(s.Filesystems)-1]
	}
	s.KernelVersion = truncateRunes(s.KernelVersion, MaxKernelVersion)
	m.KernelVersion = truncateRunes(m.KernelVersion, MaxKernelVersion)
	m.Version = truncateRunes(m.Version, MaxVersion)
	if utf8.RuneCountInString(m.PrimaryIP) > MaxPrimaryIP {
		m.PrimaryIP = ""
	}
}

// filesystemsLen is the length of the list as the backend re-encodes
// and stores it.
func filesystemsLen(fs []Filesystem) int {
	b, _ := json.Marshal(fs)
	return utf8.RuneCount(b)
}
