package resolver

import (
	"fmt"
	"math"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
)

// filterNames maps the spellings models use to the catalog's filters.
var filterNames = map[string]catalog.Filter{
	"pid": catalog.FilterPID, "tgid": catalog.FilterPID, "process_id": catalog.FilterPID,
	"tid": catalog.FilterTID, "thread_id": catalog.FilterTID,
	"uid": catalog.FilterUID, "user": catalog.FilterUID, "user_id": catalog.FilterUID,
	"comm": catalog.FilterComm, "process": catalog.FilterComm, "process_name": catalog.FilterComm,
	"command": catalog.FilterComm, "task": catalog.FilterComm,
	"cgroup": catalog.FilterCgroup, "cgroup_path": catalog.FilterCgroup,
	"failed": catalog.FilterFailed, "failed_only": catalog.FilterFailed, "errors": catalog.FilterFailed,
	"errors_only": catalog.FilterFailed, "error": catalog.FilterFailed,
	"min_latency": catalog.FilterMinLatency, "min_latency_ms": catalog.FilterMinLatency,
	"min_latency_us": catalog.FilterMinLatency, "min_latency_ns": catalog.FilterMinLatency,
	"latency": catalog.FilterMinLatency, "min_ms": catalog.FilterMinLatency, "threshold": catalog.FilterMinLatency,
	"port": catalog.FilterPort, "dport": catalog.FilterPort, "sport": catalog.FilterPort,
	"lport": catalog.FilterPort, "rport": catalog.FilterPort,
}

// frequencyNames set the profile sampling rate, which is a parameter,
// not a filter.
var frequencyNames = map[string]bool{"frequency": true, "freq": true, "hz": true, "sample_rate": true}

// applyFilters reads f into p for the entry info. A filter the entry does
// not honour, or a value that cannot be read, is dropped with a note
// rather than failing the request: models add filters loosely, and an
// unfiltered trace with a note answers more than a refusal. The notes say
// the results are wider than asked.
func applyFilters(f Filters, info catalog.Info, p *catalog.Params) []string {
	var notes []string
	drop := func(format string, a ...any) {
		notes = append(notes, fmt.Sprintf(format, a...)+"; filter dropped")
	}
	for _, key := range f.keys() {
		val := strings.TrimSpace(f[key])
		if frequencyNames[key] {
			hz, err := parseUint(val, 10000)
			switch {
			case info.Name != "profile":
				drop("%s=%s applies to profile only, not %s", key, val, info.Name)
			case err != nil || hz == 0:
				drop("%s=%q is not a rate in Hz (1..10000)", key, val)
			default:
				p.Frequency = int(hz)
			}
			continue
		}
		flt, known := filterNames[key]
		if !known {
			drop("%q is not a filter (known: %s)", key, "pid, tid, uid, comm, cgroup, failed, min_latency, port")
			continue
		}
		if !info.Supports(flt) {
			drop("%s does not support the %s filter (it supports: %s); results are not narrowed by %s=%s",
				info.Name, flt, listFilters(info.Filters), key, val)
			continue
		}
		if err := setFilter(p, flt, key, val); err != nil {
			drop("%s=%q: %v", key, val, err)
			continue
		}
		if flt == catalog.FilterComm && len(val) > 15 {
			notes = append(notes, fmt.Sprintf("comm %q cut to the kernel's 15 characters: %q", val, p.Comm))
		}
	}
	return notes
}

// errNoFilter is a value that means "no filter" (pid 0, failed=false).
var errNoFilter = fmt.Errorf("means no filter")

func setFilter(p *catalog.Params, f catalog.Filter, key, val string) error {
	switch f {
	case catalog.FilterPID, catalog.FilterTID:
		n, err := parseUint(val, math.MaxInt32)
		if err != nil {
			return err
		}
		if n == 0 {
			return errNoFilter
		}
		if f == catalog.FilterPID {
			p.PID = uint32(n)
		} else {
			p.TID = uint32(n)
		}
	case catalog.FilterUID:
		n, err := parseUint(val, math.MaxUint32-1)
		if err != nil {
			u, lerr := user.Lookup(val)
			if lerr != nil {
				return fmt.Errorf("not a uid and not a local user")
			}
			if n, err = parseUint(u.Uid, math.MaxUint32-1); err != nil {
				return err
			}
		}
		uid := uint32(n)
		p.UID = &uid
	case catalog.FilterComm:
		if val == "" {
			return errNoFilter
		}
		for _, r := range val {
			if r < 0x20 || r == 0x7f {
				return fmt.Errorf("control character in comm")
			}
		}
		if len(val) > 15 {
			// The kernel keeps 15 bytes of a task's name: a longer one
			// can only match by its start.
			val = val[:15]
		}
		p.Comm = val
	case catalog.FilterCgroup:
		return setCgroup(p, val)
	case catalog.FilterFailed:
		on, err := parseBool(val)
		if err != nil {
			return err
		}
		if !on {
			return errNoFilter
		}
		p.FailedOnly = true
	case catalog.FilterMinLatency:
		d, err := parseLatency(key, val)
		if err != nil {
			return err
		}
		if d == 0 {
			return errNoFilter
		}
		p.MinLatency = d
	case catalog.FilterPort:
		n, err := parseUint(val, 65535)
		if err != nil {
			return err
		}
		if n == 0 {
			return errNoFilter
		}
		p.Port = uint16(n)
	}
	return nil
}

// setCgroup accepts a cgroup v2 directory under /sys/fs/cgroup that
// exists now: a missing one would fail the trace's start instead.
func setCgroup(p *catalog.Params, val string) error {
	if val == "" {
		return errNoFilter
	}
	path := val
	if !filepath.IsAbs(path) {
		path = filepath.Join("/sys/fs/cgroup", path)
	}
	path = filepath.Clean(path)
	if path != "/sys/fs/cgroup" && !strings.HasPrefix(path, "/sys/fs/cgroup/") {
		return fmt.Errorf("not under /sys/fs/cgroup")
	}
	if _, err := catalog.CgroupID(path); err != nil {
		return fmt.Errorf("no such cgroup v2 directory")
	}
	p.Cgroup = path
	return nil
}

// parseUint reads a non-negative integer, also written as a whole float
// ("1234.0"), at most max.
func parseUint(s string, max uint64) (uint64, error) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f < 0 || f != math.Trunc(f) || f > float64(max) {
			return 0, fmt.Errorf("not a whole number up to %d", max)
		}
		n = uint64(f)
	}
	if n > max {
		return 0, fmt.Errorf("larger than %d", max)
	}
	return n, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes", "y", "on", "only":
		return true, nil
	case "0", "false", "no", "n", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean")
}

// parseLatency reads a bare number in the unit the key names (ms unless
// it ends in _us or _ns) or a duration string ("10ms", "1.5s", "200us").
func parseLatency(key, s string) (time.Duration, error) {
	unit := time.Millisecond
	switch {
	case strings.HasSuffix(key, "_us"):
		unit = time.Microsecond
	case strings.HasSuffix(key, "_ns"):
		unit = time.Nanosecond
	}
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 || math.IsNaN(f) || f*float64(unit) > float64(time.Hour) {
			return 0, fmt.Errorf("out of range (0..1h)")
		}
		return time.Duration(f * float64(unit)), nil
	}
	d, err := time.ParseDuration(strings.ReplaceAll(s, " ", ""))
	if err != nil || d < 0 || d > time.Hour {
		return 0, fmt.Errorf("not a latency (a number of ms or e.g. 10ms)")
	}
	return d, nil
}

func listFilters(fs []catalog.Filter) string {
	if len(fs) == 0 {
		return "none"
	}
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = string(f)
	}
	return strings.Join(s, ", ")
}
