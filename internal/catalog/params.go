package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Filter names a trace filter; entries declare the ones they honour.
type Filter string

// The filters. In BPF they are const volatile globals set before load
// (bpf/common/filter.bpf.h), so a disabled one costs nothing.
const (
	FilterPID        Filter = "pid" // the kernel's tgid
	FilterTID        Filter = "tid"
	FilterUID        Filter = "uid"
	FilterComm       Filter = "comm"
	FilterCgroup     Filter = "cgroup"
	FilterFailed     Filter = "failed"      // failed operations only
	FilterMinLatency Filter = "min_latency" // events at least this slow
	FilterPort       Filter = "port"
)

// AllFilters lists every filter, in display order.
var AllFilters = []Filter{FilterPID, FilterTID, FilterUID, FilterComm, FilterCgroup, FilterFailed, FilterMinLatency, FilterPort}

// Durations of a trace: requests without one get DefaultDuration, and none
// runs longer than MaxDuration.
const (
	DefaultDuration = 10 * time.Second
	MaxDuration     = 120 * time.Second
)

// Params are what a caller asks of one trace. The zero value traces
// everything for DefaultDuration.
type Params struct {
	Duration   time.Duration
	PID        uint32
	TID        uint32
	UID        *uint32
	Comm       string
	Cgroup     string // a cgroup v2 directory, absolute or under /sys/fs/cgroup
	FailedOnly bool
	MinLatency time.Duration
	Port       uint16
	// Target is what a generic entry traces: "category:name" for the
	// tracepoint entry, a kernel function for kfunc.
	Target string
	// Frequency is the sampling rate in Hz (profile).
	Frequency int
}

// ClampDuration returns d bounded to (0, MaxDuration], DefaultDuration for 0.
func ClampDuration(d time.Duration) time.Duration {
	switch {
	case d <= 0:
		return DefaultDuration
	case d > MaxDuration:
		return MaxDuration
	}
	return d
}

// Set reports which filters p uses.
func (p Params) Set() []Filter {
	var fs []Filter
	add := func(on bool, f Filter) {
		if on {
			fs = append(fs, f)
		}
	}
	add(p.PID != 0, FilterPID)
	add(p.TID != 0, FilterTID)
	add(p.UID != nil, FilterUID)
	add(p.Comm != "", FilterComm)
	add(p.Cgroup != "", FilterCgroup)
	add(p.FailedOnly, FilterFailed)
	add(p.MinLatency > 0, FilterMinLatency)
	add(p.Port != 0, FilterPort)
	return fs
}

// Validate checks p against the entry: every filter set must be one the
// entry honours, the comm must fit the kernel's 15 characters, and a
// target must be given exactly when the entry needs one.
func (p Params) Validate(info Info) error {
	for _, f := range p.Set() {
		if !info.Supports(f) {
			return fmt.Errorf("%s does not support the %s filter (it supports: %s)", info.Name, f, filterList(info.Filters))
		}
	}
	if len(p.Comm) > 15 {
		return fmt.Errorf("comm %q is longer than the kernel's 15 characters: give the first 15", p.Comm)
	}
	if info.NeedsTarget && p.Target == "" {
		return fmt.Errorf("%s needs a target (e.g. --target %s)", info.Name, targetExample(info.Name))
	}
	if !info.NeedsTarget && p.Target != "" {
		return fmt.Errorf("%s takes no target (got %q)", info.Name, p.Target)
	}
	if p.Frequency < 0 || p.Frequency > 10000 {
		return fmt.Errorf("frequency %d Hz is out of range (1..10000)", p.Frequency)
	}
	return nil
}

func targetExample(entry string) string {
	if entry == "kfunc" {
		return "vfs_read"
	}
	return "sched:sched_switch"
}

func filterList(fs []Filter) string {
	if len(fs) == 0 {
		return "none"
	}
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ", ")
}

// Describe renders the parameters for a result, by filter name.
func (p Params) Describe() map[string]string {
	m := map[string]string{"duration": ClampDuration(p.Duration).String()}
	if p.PID != 0 {
		m["pid"] = strconv.FormatUint(uint64(p.PID), 10)
	}
	if p.TID != 0 {
		m["tid"] = strconv.FormatUint(uint64(p.TID), 10)
	}
	if p.UID != nil {
		m["uid"] = strconv.FormatUint(uint64(*p.UID), 10)
	}
	if p.Comm != "" {
		m["comm"] = p.Comm
	}
	if p.Cgroup != "" {
		m["cgroup"] = p.Cgroup
	}
	if p.FailedOnly {
		m["failed"] = "true"
	}
	if p.MinLatency > 0 {
		m["min_latency"] = p.MinLatency.String()
	}
	if p.Port != 0 {
		m["port"] = strconv.FormatUint(uint64(p.Port), 10)
	}
	if p.Target != "" {
		m["target"] = p.Target
	}
	if p.Frequency != 0 {
		m["frequency"] = strconv.Itoa(p.Frequency)
	}
	return m
}

// CgroupID resolves a cgroup v2 directory to the id the kernel reports for
// it (bpf_get_current_cgroup_id): the directory's inode number.
func CgroupID(path string) (uint64, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join("/sys/fs/cgroup", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %w (give a cgroup v2 directory, e.g. /sys/fs/cgroup/system.slice/nginx.service)", path, err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("cgroup %s is not a directory", path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("cgroup %s: no inode number", path)
	}
	return st.Ino, nil
}
