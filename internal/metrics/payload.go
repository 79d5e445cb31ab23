// Package metrics builds the host metrics the agent reports to NannyAPI
// with the `ingest-metrics` action, checks them against the limits the
// backend enforces, and sends them on the daemon's schedule.
//
// The backend stores the numbers in PocketBase fields with bounds (0–100
// for percentages, 0 and up for everything else) and a handful of text
// fields with length limits; a value outside them is not a 400 but a 500
// ("failed to save metrics", "failed to update agent"), which a client
// would retry for ever. So every value is clamped and every string
// truncated here, and Validate refuses anything that would still fail.
package metrics

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// ActionIngestMetrics is the `action` of the metrics request.
const ActionIngestMetrics = "ingest-metrics"

// Limits of the backend's columns. Lengths are counted in bytes, which is
// never less than PocketBase's count of characters, so a value within
// them is within the backend's limit whatever it counts.
const (
	// MaxKernelVersion: agents.kernel_version; longer answers 500
	// "failed to update agent".
	MaxKernelVersion = 45
	// MaxVersion: agents.version.
	MaxVersion = 50
	// MaxPrimaryIP: agents.primary_ip (the longest IPv6 text form).
	MaxPrimaryIP = 45
	// MaxPlatformFamily: agents.platform_family.
	MaxPlatformFamily = 100
	// MaxText: PocketBase's default for a text field without a maximum
	// (os_info, os_version, os_type, arch).
	MaxText = 5000
	// MaxFilesystemsJSON: the filesystems list is stored as one JSON
	// string in a text field of the default 5000 characters; the list is
	// kept strictly under it.
	MaxFilesystemsJSON = 5000
	// MaxAllIPs bounds all_ips; a host with more addresses is a router or
	// a container host, and the first few (sorted) say where it is.
	MaxAllIPs = 64
)

// Payload is the body of `POST /api/agent` with `ingest-metrics`
// (NANNYAPI.md §2.7). Marshalled as it is, it is the request body.
type Payload struct {
	Action        string        `json:"action"`
	SystemMetrics SystemMetrics `json:"system_metrics"`
	// OSInfo is the os-release ID ("debian", "ubuntu"), OSVersion its
	// version ("12.11" from /etc/debian_version on Debian, VERSION_ID
	// elsewhere); the backend matches patch scripts on them.
	OSInfo    string `json:"os_info"`
	OSVersion string `json:"os_version"`
	OSType    string `json:"os_type"`
	// PlatformFamily selects the patch script; the backend answers 400
	// without it, so it is never empty ("unknown" at worst).
	PlatformFamily string   `json:"platform_family"`
	Version        string   `json:"version"`
	PrimaryIP      string   `json:"primary_ip"`
	KernelVersion  string   `json:"kernel_version"`
	Arch           string   `json:"arch"`
	AllIPs         []string `json:"all_ips"`
}

// SystemMetrics are the numbers. Sizes are GiB (bytes/1024³) and every
// float has at most two decimals.
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
	// KernelVersion is ignored by the backend; it carries the same
	// (truncated) value as the top-level one.
	KernelVersion string `json:"kernel_version"`
}

// Filesystem is one mounted filesystem. The field order is the
// backend's, so the JSON measured here is the JSON it stores.
type Filesystem struct {
	Device       string  `json:"device"`
	MountPath    string  `json:"mount_path"`
	UsedGB       float64 `json:"used_gb"`
	FreeGB       float64 `json:"free_gb"` // available to unprivileged users, as df shows
	TotalGB      float64 `json:"total_gb"`
	UsagePercent float64 `json:"usage_percent"` // used/(used+free), df's Use%
}

// LoadAverage is /proc/loadavg.
type LoadAverage struct {
	OneMin     float64 `json:"one_min"`
	FiveMin    float64 `json:"five_min"`
	FifteenMin float64 `json:"fifteen_min"`
}

// NetworkStats are the bytes received and sent since boot over every
// interface but loopback, in GiB.
type NetworkStats struct {
	InGB  float64 `json:"in_gb"`
	OutGB float64 `json:"out_gb"`
}

const gib = 1 << 30

// round2 rounds to two decimals. Values too large to carry a fraction are
// returned as they are (x*100 would overflow to +Inf near the top of the
// float range).
func round2(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || math.Abs(x) >= 1<<52/100 {
		return x
	}
	r := math.Round(x*100) / 100
	if r == 0 {
		return 0 // never -0: "-0" in the JSON reads as a negative metric
	}
	return r
}

// nonNegative makes a metric the backend will store: finite, at least 0,
// two decimals. The kernel's counters cannot produce the others, but a
// parse of a damaged file or a counter going backwards can.
func nonNegative(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x <= 0 {
		return 0
	}
	return round2(x)
}

// clampPercent makes a percentage the backend will store: 0–100, two
// decimals.
func clampPercent(x float64) float64 {
	if math.IsNaN(x) || x <= 0 {
		return 0
	}
	if x >= 100 {
		return 100
	}
	return math.Min(round2(x), 100)
}

// percent is part/whole as a clamped percentage; 0 when whole is 0.
func percent(part, whole float64) float64 {
	if !(whole > 0) {
		return 0
	}
	return clampPercent(part / whole * 100)
}

// gibOf converts bytes to GiB with two decimals.
func gibOf(bytes uint64) float64 { return round2(float64(bytes) / gib) }

// cleanText makes a string fit a column of max bytes: invalid UTF-8
// replaced (encoding/json would do it and change the length), control
// characters dropped, cut at a character boundary.
func cleanText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	return truncate(s, max)
}

// truncate cuts s to at most max bytes without splitting a character.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// filesystemsJSONLen is the length of the JSON the backend stores for
// these entries: "[" + entries joined by "," + "]" (an empty list is not
// stored at all).
func filesystemsJSONLen(fs []Filesystem) (int, error) {
	if len(fs) == 0 {
		return 0, nil
	}
	b, err := json.Marshal(fs)
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// ValidationError lists every value the backend would refuse, each with
// the answer it would give.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string {
	return "metrics payload the backend would refuse: " + strings.Join(e.Problems, "; ")
}

// Validate checks p against what the backend checks (NANNYAPI.md §0 item
// 9, §2.7, §2.12): the action, a platform_family, the bounds of every
// stored number, the lengths of the stored strings and of the filesystems
// JSON. It also refuses what cannot be sent at all (NaN and infinities do
// not marshal) and what this package promises beyond the backend: no
// negative or out-of-range value in the filesystem entries either.
func Validate(p Payload) error {
	var v validator
	if p.Action != ActionIngestMetrics {
		v.bad("action %q: must be %q (400 unknown action)", p.Action, ActionIngestMetrics)
	}
	if p.PlatformFamily == "" {
		v.bad("platform_family is empty (400 platform_family required)")
	}
	v.maxLen("platform_family", p.PlatformFamily, MaxPlatformFamily, "500 failed to update agent")
	v.maxLen("kernel_version", p.KernelVersion, MaxKernelVersion, "500 failed to update agent")
	v.maxLen("version", p.Version, MaxVersion, "500 failed to update agent")
	v.maxLen("primary_ip", p.PrimaryIP, MaxPrimaryIP, "500 failed to update agent")
	v.maxLen("os_info", p.OSInfo, MaxText, "500 failed to update agent")
	v.maxLen("os_version", p.OSVersion, MaxText, "500 failed to update agent")
	v.maxLen("os_type", p.OSType, MaxText, "500 failed to update agent")
	v.maxLen("arch", p.Arch, MaxText, "500 failed to update agent")
	for i, ip := range p.AllIPs {
		if !utf8.ValidString(ip) {
			v.bad("all_ips[%d] is not UTF-8", i)
		}
	}

	m := p.SystemMetrics
	v.pct("cpu_percent", m.CPUPercent)
	v.pct("memory_percent", m.MemoryPercent)
	v.pct("disk_usage_percent", m.DiskUsagePercent)
	if m.CPUCores < 0 {
		v.bad("cpu_cores %d is negative (500 failed to save metrics)", m.CPUCores)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"memory_used_gb", m.MemoryUsedGB}, {"memory_total_gb", m.MemoryTotalGB},
		{"disk_used_gb", m.DiskUsedGB}, {"disk_total_gb", m.DiskTotalGB},
		{"load_average.one_min", m.LoadAverage.OneMin}, {"load_average.five_min", m.LoadAverage.FiveMin},
		{"load_average.fifteen_min", m.LoadAverage.FifteenMin},
		{"network_stats.in_gb", m.NetworkStats.InGB}, {"network_stats.out_gb", m.NetworkStats.OutGB},
	} {
		v.nonNeg(f.name, f.v)
	}
	for i, f := range m.Filesystems {
		name := fmt.Sprintf("filesystems[%d]", i)
		v.nonNeg(name+".used_gb", f.UsedGB)
		v.nonNeg(name+".free_gb", f.FreeGB)
		v.nonNeg(name+".total_gb", f.TotalGB)
		v.pct(name+".usage_percent", f.UsagePercent)
		if !utf8.ValidString(f.Device) || !utf8.ValidString(f.MountPath) {
			v.bad("%s: device or mount_path is not UTF-8", name)
		}
	}
	// A marshal error here is a NaN or infinity, already reported.
	if n, err := filesystemsJSONLen(m.Filesystems); err == nil && n >= MaxFilesystemsJSON {
		v.bad("filesystems JSON is %d bytes: must be under %d (500 failed to save metrics)", n, MaxFilesystemsJSON)
	}
	if len(v.problems) > 0 {
		return &ValidationError{Problems: v.problems}
	}
	return nil
}

type validator struct{ problems []string }

func (v *validator) bad(format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, args...))
}

func (v *validator) maxLen(name, s string, max int, answer string) {
	if len(s) > max {
		v.bad("%s is %d bytes: at most %d (%s)", name, len(s), max, answer)
	}
	if !utf8.ValidString(s) {
		v.bad("%s is not UTF-8", name)
	}
}

func (v *validator) finite(name string, x float64) bool {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		v.bad("%s is %v: not a number JSON can carry", name, x)
		return false
	}
	return true
}

func (v *validator) nonNeg(name string, x float64) {
	if v.finite(name, x) && (x < 0 || math.Signbit(x)) {
		v.bad("%s %v is negative (500 failed to save metrics)", name, x)
	}
}

func (v *validator) pct(name string, x float64) {
	if !v.finite(name, x) {
		return
	}
	if x < 0 || math.Signbit(x) || x > 100 {
		v.bad("%s %v is outside 0–100 (500 failed to save metrics)", name, x)
	}
}
