package metrics

import (
	"bytes"
	"fmt"
	"github.com/nannyagent/nannyagent/internal/procfmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// cpuTimes is the aggregate "cpu" line of /proc/stat, in clock ticks.
type cpuTimes struct {
	// Busy excludes idle and iowait; guest time is already inside user
	// and nice (proc_stat(5)), so it is not added again.
	Busy, Idle uint64
}

func (t cpuTimes) total() uint64 { return satAdd(t.Busy, t.Idle) }

// parseCPUStat reads the first line of /proc/stat: "cpu  user nice system
// idle iowait irq softirq steal guest guest_nice". Kernels before 2.6.33
// have fewer columns; four is the least any kernel writes.
func parseCPUStat(data []byte) (cpuTimes, error) {
	line, _, _ := bytes.Cut(data, []byte{'\n'})
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("first line %q is not the aggregate cpu line", truncate(string(line), 80))
	}
	var v [8]uint64
	for i := 1; i < len(fields) && i <= len(v); i++ {
		n, err := strconv.ParseUint(fields[i], 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("cpu column %d: %q is not a counter", i, fields[i])
		}
		v[i-1] = n
	}
	user, nice, system, idle, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
	busy := satAdd(satAdd(satAdd(user, nice), satAdd(system, irq)), satAdd(softirq, steal))
	return cpuTimes{Busy: busy, Idle: satAdd(idle, iowait)}, nil
}

// cpuPercent is the share of non-idle time between two samples. ok is
// false when no time passed between them, or the counters went backwards
// (a CPU taken offline removes its ticks from the sum).
func cpuPercent(prev, cur cpuTimes) (pct float64, ok bool) {
	if cur.total() <= prev.total() {
		return 0, false
	}
	dTotal := float64(cur.total() - prev.total())
	// iowait can run backwards on tickless kernels (proc_stat(5)), so
	// the idle delta alone may be negative; busy is what is left.
	dIdle := float64(cur.Idle) - float64(prev.Idle)
	return percent(dTotal-math.Max(dIdle, 0), dTotal), true
}

// parseMeminfo returns MemTotal and the memory available to new work,
// both in bytes. MemAvailable is the kernel's own estimate (3.14+); older
// kernels get MemFree + Buffers + Cached.
func parseMeminfo(data []byte) (total, available uint64, err error) {
	vals := map[string]uint64{}
	for line := range bytes.Lines(data) {
		key, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		fields := strings.Fields(string(rest))
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %q is not a number", key, fields[0])
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n = satMul(n, 1024)
		}
		vals[string(key)] = n
	}
	total, ok := vals["MemTotal"]
	if !ok {
		return 0, 0, fmt.Errorf("no MemTotal")
	}
	available, ok = vals["MemAvailable"]
	if !ok {
		available = satAdd(vals["MemFree"], satAdd(vals["Buffers"], vals["Cached"]))
	}
	return total, min(available, total), nil
}

// parseLoadavg reads the three averages of /proc/loadavg.
func parseLoadavg(data []byte) ([3]float64, error) {
	var l [3]float64
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return l, fmt.Errorf("%d fields, want at least 3", len(fields))
	}
	for i := range l {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return l, fmt.Errorf("field %d: %q is not a number", i+1, fields[i])
		}
		l[i] = v
	}
	return l, nil
}

// parseNetDev sums the received and sent bytes of /proc/net/dev over
// every interface but lo: loopback traffic never leaves the host, and it
// would count each byte twice, once each way.
func parseNetDev(data []byte) (rx, tx uint64, err error) {
	n := 0
	for line := range bytes.Lines(data) {
		n++
		name, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			if n <= 2 {
				continue // the two header lines
			}
			return 0, 0, fmt.Errorf("line %d has no interface name", n)
		}
		iface := strings.TrimSpace(string(name))
		fields := strings.Fields(string(rest))
		// 8 receive columns then 8 transmit columns; bytes lead each.
		if len(fields) < 16 {
			return 0, 0, fmt.Errorf("interface %s: %d columns, want 16", iface, len(fields))
		}
		r, err1 := strconv.ParseUint(fields[0], 10, 64)
		t, err2 := strconv.ParseUint(fields[8], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("interface %s: byte counters %q %q", iface, fields[0], fields[8])
		}
		if iface == "lo" {
			continue
		}
		rx, tx = satAdd(rx, r), satAdd(tx, t)
	}
	return rx, tx, nil
}

// parseOSRelease reads os-release(5): KEY=value lines, values optionally
// quoted, with backslash escapes inside double quotes.
func parseOSRelease(data []byte) map[string]string {
	out := map[string]string{}
	for line := range bytes.Lines(data) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		out[strings.TrimSpace(k)] = unquote(strings.TrimSpace(v))
	}
	return out
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1]
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
				i++
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	return v
}

// countProcessors counts the "processor" entries of /proc/cpuinfo: the
// CPUs this system (or, under lxcfs, this container) may run on, which is
// what the earlier agent reported.
func countProcessors(data []byte) int {
	n := 0
	for line := range bytes.Lines(data) {
		k, _, ok := bytes.Cut(line, []byte{':'})
		if ok && string(bytes.TrimSpace(k)) == "processor" {
			n++
		}
	}
	return n
}

// defaultRouteIface is the interface of the IPv4 default route with the
// lowest metric in /proc/net/route, "" when there is none.
func defaultRouteIface(data []byte) string {
	best, bestMetric := "", uint64(math.MaxUint64)
	first := true
	for line := range bytes.Lines(data) {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(string(line))
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&0x1 == 0 { // RTF_UP
			continue
		}
		metric, err := strconv.ParseUint(f[6], 10, 64)
		if err != nil {
			continue
		}
		if metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	return best
}

// mount is one line of /proc/self/mountinfo (proc_pid_mountinfo(5)).
type mount struct {
	Dev    string // "major:minor"
	Path   string
	FSType string
	Source string
}

// parseMountinfo reads mountinfo; paths are decoded from the kernel's
// octal escapes (\040 for a space).
func parseMountinfo(data []byte) ([]mount, error) {
	var out []mount
	n := 0
	for line := range bytes.Lines(data) {
		n++
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		sep := slices.Index(f, "-")
		// Six fixed fields, optional ones, "-", then type and source.
		if sep < 6 || len(f) < sep+2 {
			return nil, fmt.Errorf("mountinfo line %d: malformed", n)
		}
		m := mount{Dev: f[2], Path: procfmt.UnescapeOctal(f[4]), FSType: f[sep+1]}
		if len(f) >= sep+4 {
			m.Source = procfmt.UnescapeOctal(f[sep+2])
		}
		out = append(out, m)
	}
	return out, nil
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func satMul(a, b uint64) uint64 {
	if a != 0 && b > math.MaxUint64/a {
		return math.MaxUint64
	}
	return a * b
}
