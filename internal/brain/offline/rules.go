package offline

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// metric is a number a playbook rule can test.
type metric struct {
	doc string
	get func(v *view) (float64, bool)
}

// metrics are the numbers rules read. docs/OFFLINE_ENGINE.md lists them;
// "errno.NAME" (failures with that errno in the open and syscalls traces)
// is accepted for any errno name.
var metrics = map[string]metric{
	"cpu.busy_percent": {"CPU time neither idle nor iowait, %", func(v *view) (float64, bool) {
		return 100 - v.f.CPU.Idle - v.f.CPU.IOWait, cpuMeasured(v.f.CPU)
	}},
	"cpu.iowait_percent": {"CPU time idle with I/O outstanding, %", func(v *view) (float64, bool) { return v.f.CPU.IOWait, cpuMeasured(v.f.CPU) }},
	"cpu.steal_percent":  {"CPU time taken by the hypervisor, %", func(v *view) (float64, bool) { return v.f.CPU.Steal, cpuMeasured(v.f.CPU) }},
	"cpu.run_queue":      {"runnable tasks (procs_running, the reader excluded)", func(v *view) (float64, bool) { return float64(v.f.CPU.RunQueue - 1), v.f.CPU.RunQueue > 0 }},
	"cpu.blocked":        {"tasks in uninterruptible sleep (procs_blocked)", func(v *view) (float64, bool) { return float64(v.f.CPU.Blocked), cpuMeasured(v.f.CPU) }},
	"load.1":             {"1-minute load average", func(v *view) (float64, bool) { return v.f.Load[0], v.f.CPUs > 0 }},
	"load.per_cpu": {"1-minute load average per CPU", func(v *view) (float64, bool) {
		return v.f.Load[0] / float64(max(v.f.CPUs, 1)), v.f.CPUs > 0
	}},
	"memory.available_percent": {"MemAvailable of MemTotal, %", func(v *view) (float64, bool) {
		m := v.f.Memory
		return float64(m.AvailableBytes) / float64(max(m.TotalBytes, 1)) * 100, m.TotalBytes > 0
	}},
	"memory.major_faults_per_sec": {"major page faults per second", func(v *view) (float64, bool) { return v.f.Memory.MajorFaultsPerSec, v.f.Memory.TotalBytes > 0 }},
	"memory.swap_in_per_sec":      {"pages swapped in per second", func(v *view) (float64, bool) { return v.f.Memory.SwapInPerSec, v.f.Memory.TotalBytes > 0 }},
	"memory.swap_used_percent": {"swap in use, %", func(v *view) (float64, bool) {
		m := v.f.Memory
		if m.SwapTotalBytes == 0 {
			return 0, false
		}
		return float64(m.SwapTotalBytes-min(m.SwapFreeBytes, m.SwapTotalBytes)) / float64(m.SwapTotalBytes) * 100, true
	}},
	"memory.oom_kills":      {"OOM kills since boot (vmstat oom_kill)", func(v *view) (float64, bool) { return float64(v.f.Memory.OOMKills), v.f.Memory.TotalBytes > 0 }},
	"psi.cpu.some_avg10":    {"CPU pressure, some, avg10 %", psi(func(v *view) float64 { return v.f.PSI.CPU.SomeAvg10 })},
	"psi.memory.some_avg10": {"memory pressure, some, avg10 %", psi(func(v *view) float64 { return v.f.PSI.Memory.SomeAvg10 })},
	"psi.memory.full_avg10": {"memory pressure, full, avg10 %", psi(func(v *view) float64 { return v.f.PSI.Memory.FullAvg10 })},
	"psi.io.some_avg10":     {"I/O pressure, some, avg10 %", psi(func(v *view) float64 { return v.f.PSI.IO.SomeAvg10 })},
	"psi.io.full_avg10":     {"I/O pressure, full, avg10 %", psi(func(v *view) float64 { return v.f.PSI.IO.FullAvg10 })},
	"fs.max_used_percent": {"the fullest filesystem's space use, %", func(v *view) (float64, bool) {
		m := 0.0
		for _, fs := range v.f.Filesystems {
			m = max(m, usedPercent(fs))
		}
		return m, len(v.f.Filesystems) > 0
	}},
	"fs.max_inodes_used_percent": {"the highest inode use of any filesystem, %", func(v *view) (float64, bool) {
		m := 0.0
		for _, fs := range v.f.Filesystems {
			m = max(m, inodesPercent(fs))
		}
		return m, len(v.f.Filesystems) > 0
	}},
	"fd.system_used_percent": {"system file handles of file-max, %", func(v *view) (float64, bool) {
		l := v.f.Limits
		return float64(l.FileHandles) / float64(max(l.FileHandlesMax, 1)) * 100, l.FileHandlesMax > 0
	}},
	"tasks.used_percent": {"threads of threads-max, %", func(v *view) (float64, bool) {
		l := v.f.Limits
		return float64(l.Tasks) / float64(max(l.ThreadsMax, 1)) * 100, l.ThreadsMax > 0
	}},
	"disk.max_util_percent": {"the busiest disk's utilisation, %", func(v *view) (float64, bool) {
		m := 0.0
		for _, d := range v.f.Disks {
			m = max(m, d.UtilPercent)
		}
		return m, len(v.f.Disks) > 0
	}},
	"disk.max_await_ms": {"the slowest disk's mean time per request, ms", func(v *view) (float64, bool) {
		m := 0.0
		for _, d := range v.f.Disks {
			m = max(m, d.AwaitMS)
		}
		return m, len(v.f.Disks) > 0
	}},
	"net.retrans_percent": {"TCP segments retransmitted of segments sent, %", func(v *view) (float64, bool) {
		n := v.f.Network
		return n.TCPRetransPerSec / max(n.TCPOutSegsPerSec, 1e-9) * 100, n.TCPOutSegsPerSec > 0
	}},
	"net.listen_overflows": {"listen queue overflows since boot", func(v *view) (float64, bool) { return float64(v.f.Network.ListenOverflows), true }},
	"net.listen_drops":     {"SYNs dropped at listen since boot", func(v *view) (float64, bool) { return float64(v.f.Network.ListenDrops), true }},
	"dns.resolvers_failing": {"nameservers of resolv.conf that did not answer", func(v *view) (float64, bool) {
		n := 0
		for _, r := range v.f.Network.Resolvers {
			if !r.Answered {
				n++
			}
		}
		return float64(n), len(v.f.Network.Resolvers) > 0
	}},
	"services.failed":     {"failed systemd units", func(v *view) (float64, bool) { return float64(len(v.f.FailedUnits)), v.f.InitSystem == "systemd" }},
	"services.restarting": {"systemd units restarting", func(v *view) (float64, bool) { return float64(len(v.f.RestartingUnits)), v.f.InitSystem == "systemd" }},
	"uptime.seconds":      {"seconds since boot", func(v *view) (float64, bool) { return v.f.Uptime.Seconds(), v.f.Uptime > 0 }},
	"trace.runqlat.p99_us": {"run-queue latency p99 (runqlat), µs", func(v *view) (float64, bool) {
		h, ok := v.histogram("runqlat", "run-queue latency")
		return float64(h.P99), ok && h.Count > 0
	}},
	"trace.biolatency.p99_us": {"the slowest disk operation's p99 (biolatency), µs", func(v *view) (float64, bool) {
		m, ok := 0.0, false
		for _, tb := range v.tables("biolatency", "I/O by disk and operation") {
			for _, r := range tb.rows {
				m, ok = max(m, tb.num(r, "p99_us")), true
			}
		}
		return m, ok
	}},
	"trace.fileio.read_p99_us": {"read() latency p99 (fileio), µs", func(v *view) (float64, bool) {
		h, ok := v.histogram("fileio", "read latency")
		return float64(h.P99) / 1000, ok && h.Count > 0
	}},
	"trace.fileio.write_p99_us": {"write() latency p99 (fileio), µs", func(v *view) (float64, bool) {
		h, ok := v.histogram("fileio", "write latency")
		return float64(h.P99) / 1000, ok && h.Count > 0
	}},
	"trace.exit.abnormal": {"abnormal exits in the exit trace (answer utilities left out)", func(v *view) (float64, bool) {
		n := 0
		for _, e := range exitsByComm(v) {
			n += e.total
		}
		return float64(n), v.ran("exit")
	}},
	"trace.oomkill.kills": {"OOM kills during the oomkill trace", func(v *view) (float64, bool) {
		n := 0.0
		for _, r := range v.results("oomkill") {
			n += float64(r.Events)
		}
		return n, v.ran("oomkill")
	}},
	"trace.tcpretrans.retransmits": {"retransmits during the tcpretrans trace", func(v *view) (float64, bool) {
		n := 0.0
		for _, tb := range v.tables("tcpretrans", "retransmits by TCP state") {
			for _, r := range tb.rows {
				n += tb.num(r, "retransmits")
			}
		}
		return n, v.ran("tcpretrans")
	}},
}

func psi(get func(v *view) float64) func(v *view) (float64, bool) {
	return func(v *view) (float64, bool) {
		if v.f.PSI == nil {
			return 0, false
		}
		return get(v), true
	}
}

func knownMetric(name string) bool {
	if _, ok := metrics[name]; ok {
		return true
	}
	if e, ok := strings.CutPrefix(name, "errno."); ok {
		return strings.HasPrefix(e, "E") && len(e) > 1 && strings.ToUpper(e) == e
	}
	return false
}

func metricValue(v *view, name string) (float64, bool) {
	if m, ok := metrics[name]; ok {
		return m.get(v)
	}
	if e, ok := strings.CutPrefix(name, "errno."); ok {
		n := 0
		for _, f := range errnoFailures(v, e) {
			if f.entry == "syscalls" || f.path != "" {
				n += f.count
			}
		}
		return float64(n), v.ran("open") || v.ran("syscalls")
	}
	return 0, false
}

func metricList() string {
	ks := make([]string, 0, len(metrics)+1)
	for k := range metrics {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(append(ks, "errno.<NAME>"), ", ")
}

func formatValue(f float64) string {
	if f == float64(int64(f)) {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// evalRule applies a playbook rule; it returns the finding when every
// condition holds.
func evalRule(v *view, pb *Playbook, r compiledRule, found *findings) *finding {
	vars := map[string]string{"hostname": v.f.Hostname}
	var evidence [][2]string
	for _, c := range r.when {
		switch {
		case c.Metric != "":
			val, ok := metricValue(v, c.Metric)
			if !ok {
				return nil
			}
			if c.Above != nil && !(val > *c.Above) || c.Below != nil && !(val < *c.Below) {
				return nil
			}
			vars[c.Metric] = formatValue(val)
			cmp := "above " + formatValue(*pointerOr(c.Above, c.Below))
			if c.Below != nil {
				cmp = "below " + formatValue(*c.Below)
			}
			evidence = append(evidence, [2]string{"metric " + c.Metric, fmt.Sprintf("%s = %s (%s)", c.Metric, formatValue(val), cmp)})
		case c.Log != "":
			var hits []string
			for _, l := range v.logs() {
				if c.re.MatchString(l.text) {
					hits = append(hits, l.text)
				}
			}
			if len(hits) == 0 {
				return nil
			}
			vars["line"], vars["count"] = clip(hits[len(hits)-1], 200), strconv.Itoa(len(hits))
			evidence = append(evidence, [2]string{"log", fmt.Sprintf("log (%s): %s", plural(len(hits), "line", "lines"), clip(hits[len(hits)-1], 200))})
		case c.Output != "":
			var hits []string
			var cmd string
			for _, res := range v.output(c.Command) {
				for _, line := range strings.Split(res.Stdout+"\n"+res.Stderr, "\n") {
					if c.re.MatchString(line) {
						hits = append(hits, strings.TrimSpace(line))
						cmd = res.Command
					}
				}
			}
			if len(hits) == 0 {
				return nil
			}
			vars["line"], vars["count"] = clip(hits[0], 200), strconv.Itoa(len(hits))
			evidence = append(evidence, [2]string{"command " + firstWord(cmd), fmt.Sprintf("%s: %s", cmd, clip(hits[0], 200))})
		case c.Finding != "":
			list := found.ofKind(c.Finding)
			if len(list) == 0 {
				return nil
			}
			vars["subject"] = list[0].subject
			evidence = append(evidence, [2]string{"finding " + c.Finding, "also found: " + list[0].title})
		}
	}
	sev := severities[r.Severity]
	f := &finding{kind: r.Kind, sev: sev, sources: map[string]bool{}, vars: map[string]string{}, playbook: pb.Name}
	for _, e := range evidence {
		f.add(e[0], "%s", e[1])
	}
	f.title, _ = fill(r.Title, vars, false)
	f.rootCause, _ = fill(r.RootCause, vars, false)
	for _, x := range r.Fix {
		s, _ := fill(x, vars, false)
		f.fix = append(f.fix, s)
	}
	switch r.Confidence {
	case "High":
		f.conf = 2
	case "Medium":
		f.conf = 1
	}
	return f
}

func pointerOr(a, b *float64) *float64 {
	if a != nil {
		return a
	}
	return b
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}
