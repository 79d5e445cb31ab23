package sysinfo

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The parsers take the bytes of one procfs file and return typed values
// or an error that says what was malformed; they never panic on odd input.

// cpuTimes are the aggregate "cpu" line of /proc/stat in clock ticks.
type cpuTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal uint64
}

func (t cpuTimes) total() uint64 {
	return t.User + t.Nice + t.System + t.Idle + t.IOWait + t.IRQ + t.SoftIRQ + t.Steal
}

// parseStat reads the aggregate CPU times, procs_running and procs_blocked
// from /proc/stat.
func parseStat(data []byte) (cpuTimes, int, int, error) {
	var t cpuTimes
	running, blocked := -1, -1
	seenCPU := false
	for line := range bytes.Lines(data) {
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		switch fields[0] {
		case "cpu":
			// Kernels before 2.6.11 had no steal column; all since have
			// at least the eight used here.
			if len(fields) < 9 {
				return t, 0, 0, fmt.Errorf("cpu line has %d fields, want at least 9", len(fields))
			}
			vals := make([]uint64, 8)
			for i := range vals {
				v, err := strconv.ParseUint(fields[i+1], 10, 64)
				if err != nil {
					return t, 0, 0, fmt.Errorf("cpu field %d: %w", i+1, err)
				}
				vals[i] = v
			}
			t = cpuTimes{vals[0], vals[1], vals[2], vals[3], vals[4], vals[5], vals[6], vals[7]}
			seenCPU = true
		case "procs_running", "procs_blocked":
			if len(fields) != 2 {
				return t, 0, 0, fmt.Errorf("%s line malformed", fields[0])
			}
			v, err := strconv.Atoi(fields[1])
			if err != nil || v < 0 {
				return t, 0, 0, fmt.Errorf("%s: bad value %q", fields[0], fields[1])
			}
			if fields[0] == "procs_running" {
				running = v
			} else {
				blocked = v
			}
		}
	}
	if !seenCPU {
		return t, 0, 0, errors.New("no cpu line")
	}
	if running < 0 || blocked < 0 {
		return t, 0, 0, errors.New("no procs_running/procs_blocked lines")
	}
	return t, running, blocked, nil
}

// parseKeyValues reads "name value" lines (/proc/vmstat) and "Name: value
// kB" lines (/proc/meminfo); values with a kB unit are turned into bytes.
// Lines it cannot read are skipped: these files grow new keys often.
func parseKeyValues(data []byte) map[string]uint64 {
	m := make(map[string]uint64)
	for line := range bytes.Lines(data) {
		fields := strings.Fields(string(line))
		if len(fields) < 2 {
			continue
		}
		v, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) == 3 && fields[2] == "kB" {
			v *= 1024
		}
		m[strings.TrimSuffix(fields[0], ":")] = v
	}
	return m
}

// parseLoadavg reads the three load averages of /proc/loadavg.
func parseLoadavg(data []byte) ([3]float64, error) {
	var l [3]float64
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return l, fmt.Errorf("%d fields, want at least 3", len(fields))
	}
	for i := range l {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil || v < 0 {
			return l, fmt.Errorf("field %d: bad value %q", i+1, fields[i])
		}
		l[i] = v
	}
	return l, nil
}

// parseSeconds reads the first field of /proc/uptime.
func parseSeconds(data []byte) (float64, error) {
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0, errors.New("empty")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || v < 0 || v > 1e12 {
		return 0, fmt.Errorf("bad value %q", fields[0])
	}
	return v, nil
}

// parsePressure reads one /proc/pressure file: a "some" line and, except
// for cpu on kernels before 5.13, a "full" line.
func parsePressure(data []byte) (Pressure, error) {
	var p Pressure
	seen := false
	for line := range bytes.Lines(data) {
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		var avg10, avg60 *float64
		switch fields[0] {
		case "some":
			avg10, avg60 = &p.SomeAvg10, &p.SomeAvg60
		case "full":
			avg10, avg60 = &p.FullAvg10, &p.FullAvg60
		default:
			return p, fmt.Errorf("unknown line %q", fields[0])
		}
		seen = true
		for _, kv := range fields[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return p, fmt.Errorf("field %q is not key=value", kv)
			}
			var dst *float64
			switch k {
			case "avg10":
				dst = avg10
			case "avg60":
				dst = avg60
			default:
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 100 {
				return p, fmt.Errorf("%s: bad value %q", k, v)
			}
			*dst = f
		}
	}
	if !seen {
		return p, errors.New("no some/full line")
	}
	return p, nil
}

// diskStat is one /proc/diskstats line (counters since boot).
type diskStat struct {
	Reads, ReadSectors, ReadMS       uint64
	Writes, WriteSectors, WriteMS    uint64
	InFlight, IOMS                   uint64
	Discards, DiscardSectors, DiscMS uint64
}

// parseDiskstats reads /proc/diskstats: 14 fields up to kernel 4.18, 18
// with discards, 20 with flushes (Documentation/admin-guide/iostats.rst).
func parseDiskstats(data []byte) (map[string]diskStat, error) {
	m := make(map[string]diskStat)
	n := 0
	for line := range bytes.Lines(data) {
		n++
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 14 {
			return nil, fmt.Errorf("line %d: %d fields, want at least 14", n, len(fields))
		}
		var v [15]uint64
		count := min(len(fields)-3, 15)
		for i := 0; i < count; i++ {
			x, err := strconv.ParseUint(fields[i+3], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d field %d: %w", n, i+4, err)
			}
			v[i] = x
		}
		m[fields[2]] = diskStat{
			Reads: v[0], ReadSectors: v[2], ReadMS: v[3],
			Writes: v[4], WriteSectors: v[6], WriteMS: v[7],
			InFlight: v[8], IOMS: v[9],
			Discards: v[11], DiscardSectors: v[13], DiscMS: v[14],
		}
	}
	return m, nil
}

// parseSNMP reads the header/value line pairs of /proc/net/snmp and
// /proc/net/netstat ("Tcp: RtoAlgorithm ..." then "Tcp: 1 ...") into
// section -> counter -> value. Values are signed (Tcp MaxConn is -1).
func parseSNMP(data []byte) (map[string]map[string]int64, error) {
	out := make(map[string]map[string]int64)
	var header []string
	var section string
	n := 0
	for line := range bytes.Lines(data) {
		n++
		name, rest, ok := strings.Cut(strings.TrimSpace(string(line)), ":")
		if !ok {
			if strings.TrimSpace(string(line)) == "" {
				continue
			}
			return nil, fmt.Errorf("line %d: no section name", n)
		}
		fields := strings.Fields(rest)
		if header == nil || name != section {
			header, section = fields, name
			continue
		}
		if len(fields) != len(header) {
			return nil, fmt.Errorf("line %d: %s has %d values for %d names", n, name, len(fields), len(header))
		}
		m := make(map[string]int64, len(fields))
		for i, f := range fields {
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				// Counters past 2^63 wrap; keep them as the unsigned bits.
				u, uerr := strconv.ParseUint(f, 10, 64)
				if uerr != nil {
					return nil, fmt.Errorf("line %d: %s %s: %w", n, name, header[i], err)
				}
				v = int64(u)
			}
			m[header[i]] = v
		}
		out[name] = m
		header, section = nil, ""
	}
	if header != nil {
		return nil, fmt.Errorf("section %s has names but no values", section)
	}
	return out, nil
}

// procStat is what one /proc/[pid]/stat read gives.
type procStat struct {
	Comm      string
	State     string
	Ticks     uint64 // utime + stime
	Threads   int
	StartTime uint64 // ticks after boot, tells a reused PID apart
	RSSPages  uint64
	Kernel    bool // a kernel thread (PF_KTHREAD)
	// BlkioTicks is delayacct_blkio_ticks (field 42): 0 where the kernel
	// does not give it or delay accounting is off.
	BlkioTicks uint64
}

const pfKthread = 0x00200000

// parseProcStat reads /proc/[pid]/stat (proc(5)). The command name is
// between the first "(" and the last ")": it may hold spaces and
// parentheses itself.
func parseProcStat(data []byte) (procStat, error) {
	var p procStat
	s := string(data)
	open := strings.IndexByte(s, '(')
	end := strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return p, errors.New("no (comm)")
	}
	p.Comm = s[open+1 : end]
	fields := strings.Fields(s[end+1:])
	// fields[0] is field 3 (state); rss is field 24.
	if len(fields) < 22 {
		return p, fmt.Errorf("%d fields after comm, want at least 22", len(fields))
	}
	p.State = fields[0]
	num := func(i int) (uint64, error) {
		v, err := strconv.ParseUint(fields[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("field %d: %w", i+3, err)
		}
		return v, nil
	}
	var vals [6]uint64
	for i, idx := range []int{6, 11, 12, 17, 19} {
		v, err := num(idx)
		if err != nil {
			return p, err
		}
		vals[i] = v
	}
	// rss is signed in the kernel's format; a negative value cannot
	// happen but must not fail the whole process.
	if rss, err := strconv.ParseInt(fields[21], 10, 64); err == nil && rss > 0 {
		vals[5] = uint64(rss)
	} else if err != nil {
		return p, fmt.Errorf("field 24: %w", err)
	}
	if vals[3] > 1<<31 {
		return p, fmt.Errorf("field 20: %d threads", vals[3])
	}
	p.Kernel = vals[0]&pfKthread != 0
	p.Ticks = vals[1] + vals[2]
	p.Threads = int(vals[3])
	p.StartTime = vals[4]
	p.RSSPages = vals[5]
	// Field 42 came with Linux 2.6.18; a short line simply lacks it.
	if len(fields) > 39 {
		if v, err := num(39); err == nil {
			p.BlkioTicks = v
		}
	}
	return p, nil
}

// procIO is what one /proc/[pid]/io read gives.
type procIO struct {
	ReadBytes, WriteBytes, Syscr, Syscw uint64
}

// parseProcIO reads /proc/[pid]/io (proc_pid_io(5)); every field it
// needs must be there.
func parseProcIO(data []byte) (procIO, error) {
	kv := parseKeyValues(data)
	var io procIO
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{"read_bytes", &io.ReadBytes}, {"write_bytes", &io.WriteBytes}, {"syscr", &io.Syscr}, {"syscw", &io.Syscw}} {
		v, ok := kv[f.name]
		if !ok {
			return io, fmt.Errorf("no %s", f.name)
		}
		*f.dst = v
	}
	return io, nil
}

// parseFdinfoFlags returns the open flags of /proc/[pid]/fdinfo/N (an
// octal "flags:" line).
func parseFdinfoFlags(data []byte) (uint64, error) {
	for line := range bytes.Lines(data) {
		if v, ok := bytes.CutPrefix(line, []byte("flags:")); ok {
			return strconv.ParseUint(string(bytes.TrimSpace(v)), 8, 64)
		}
	}
	return 0, errors.New("no flags line")
}

// parseNoFileLimit returns the soft "Max open files" of /proc/[pid]/limits
// (0 for unlimited, which the kernel never allows for this limit).
func parseNoFileLimit(data []byte) (uint64, error) {
	for line := range bytes.Lines(data) {
		rest, ok := strings.CutPrefix(string(line), "Max open files")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, errors.New("Max open files has no value")
		}
		if fields[0] == "unlimited" {
			return 0, nil
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("Max open files: %w", err)
		}
		return v, nil
	}
	return 0, errors.New("no Max open files line")
}

// parseOSRelease returns PRETTY_NAME of os-release(5), else NAME VERSION.
func parseOSRelease(data []byte) string {
	vals := make(map[string]string)
	for line := range bytes.Lines(data) {
		k, v, ok := strings.Cut(strings.TrimSpace(string(line)), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `"'`)
		}
		vals[k] = v
	}
	if p := vals["PRETTY_NAME"]; p != "" {
		return p
	}
	return strings.TrimSpace(vals["NAME"] + " " + vals["VERSION"])
}

// parseUint reads a file holding one decimal number (a sysctl, a counter).
func parseUint(data []byte) (uint64, error) {
	return strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
}

// parseFileNr reads /proc/sys/fs/file-nr: allocated, free (always 0
// since 2.6), maximum.
func parseFileNr(data []byte) (allocated, max uint64, err error) {
	fields := strings.Fields(string(data))
	if len(fields) != 3 {
		return 0, 0, fmt.Errorf("%d fields, want 3", len(fields))
	}
	if allocated, err = strconv.ParseUint(fields[0], 10, 64); err != nil {
		return 0, 0, err
	}
	if max, err = strconv.ParseUint(fields[2], 10, 64); err != nil {
		return 0, 0, err
	}
	return allocated, max, nil
}
