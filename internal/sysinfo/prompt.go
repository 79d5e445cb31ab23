package sysinfo

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// PromptBudget bounds Prompt's text; a model's context is better spent
// on the investigation than on facts that look normal.
const PromptBudget = 6 << 10

const (
	fsAlarmPercent = 80
	promptTop      = 5
	promptLogLines = 15
	promptLogText  = 160
)

// Prompt renders the facts for a chat engine: the "SYSTEM INFORMATION:"
// block of the earlier agent (same lines, same order), then the richer
// facts compactly, most telling first, within PromptBudget bytes. The
// caller appends the issue ("ISSUE DESCRIPTION:" ...).
func (f *Facts) Prompt() string {
	p := &promptWriter{budget: PromptBudget}
	p.line("SYSTEM INFORMATION:")
	p.line("- Hostname: " + orUnknown(f.Hostname))
	p.line("- Operating System: " + orUnknown(f.Distro))
	p.line("- Kernel Version: " + orUnknown(f.Kernel))
	p.line("- Architecture: " + orUnknown(f.Arch))
	p.line(fmt.Sprintf("- CPU Cores: %d", f.CPUs))
	p.line("- Total Memory: " + bytesOrUnknown(f.Memory.TotalBytes))
	p.line("- System Uptime: " + formatUptime(f.Uptime))
	p.line(fmt.Sprintf("- Current Load Average: %.2f, %.2f, %.2f", f.Load[0], f.Load[1], f.Load[2]))
	p.line("- Root Disk Usage: " + f.rootUsage())
	ips := "No private IPs found"
	if len(f.Addresses) > 0 {
		ips = strings.Join(f.Addresses, ", ")
	}
	p.line("- Private IP Addresses: " + ips)
	p.line("- Go Runtime: " + runtime.Version())

	p.line("")
	p.line(fmt.Sprintf("HOST FACTS (rates over %v):", f.Interval.Round(time.Millisecond)))
	virt := f.Virtualization
	if virt == "" {
		virt = "none detected"
	}
	p.line(fmt.Sprintf("- Virtualization: %s; init: %s", virt, orUnknown(f.InitSystem)))
	p.line(fmt.Sprintf("- CPU: user %.1f%%, system %.1f%%, iowait %.1f%%, steal %.1f%%, idle %.1f%%; runnable %d, blocked (D state) %d",
		f.CPU.User, f.CPU.System, f.CPU.IOWait, f.CPU.Steal, f.CPU.Idle, f.CPU.RunQueue, f.CPU.Blocked))
	m := f.Memory
	p.line(fmt.Sprintf("- Memory: %s available of %s; swap %s used of %s; major faults %.1f/s, swap-ins %.1f/s; OOM kills since boot %d",
		formatBytes(m.AvailableBytes), formatBytes(m.TotalBytes), formatBytes(sub(m.SwapFreeBytes, m.SwapTotalBytes)),
		formatBytes(m.SwapTotalBytes), m.MajorFaultsPerSec, m.SwapInPerSec, m.OOMKills))
	if f.PSI != nil {
		pr := func(x Pressure) string {
			return fmt.Sprintf("some %.1f/%.1f full %.1f/%.1f", x.SomeAvg10, x.SomeAvg60, x.FullAvg10, x.FullAvg60)
		}
		p.line(fmt.Sprintf("- Pressure stalls %% (avg10/avg60): cpu %s; memory %s; io %s", pr(f.PSI.CPU), pr(f.PSI.Memory), pr(f.PSI.IO)))
	}
	l := f.Limits
	p.line(fmt.Sprintf("- Limits: file handles %d of %d; threads %d of %d; processes %d (pid_max %d)",
		l.FileHandles, l.FileHandlesMax, l.Tasks, l.ThreadsMax, l.Processes, l.PIDMax))
	n := f.Network
	net := fmt.Sprintf("- TCP: %.1f retransmits/s of %.1f segments/s; since boot: %d listen overflows, %d listen drops, %d failed connection attempts",
		n.TCPRetransPerSec, n.TCPOutSegsPerSec, n.ListenOverflows, n.ListenDrops, n.TCPAttemptFails)
	p.line(net)
	var ifaces []string
	for _, i := range n.Interfaces {
		s := i.Name
		if !i.Up {
			s += " down"
		}
		if c := i.RxErrors + i.TxErrors + i.RxDropped + i.TxDropped; c > 0 {
			s += fmt.Sprintf(" (rx errors %d, tx errors %d, rx dropped %d, tx dropped %d)", i.RxErrors, i.TxErrors, i.RxDropped, i.TxDropped)
		}
		ifaces = append(ifaces, s)
	}
	if len(ifaces) > 0 {
		p.line("- Interfaces: " + strings.Join(ifaces, ", "))
	}
	if len(n.Resolvers) > 0 {
		var rs []string
		for _, r := range n.Resolvers {
			switch {
			case r.Answered:
				rs = append(rs, fmt.Sprintf("%s answered %s in %.1fms", r.Address, r.Rcode, r.LatencyMS))
			default:
				rs = append(rs, fmt.Sprintf("%s FAILED: %s", r.Address, r.Error))
			}
		}
		p.line(fmt.Sprintf("- Name servers (%s): %s", n.ResolvConf, strings.Join(rs, "; ")))
	}

	if f.Services != "" {
		p.line("- Services: " + f.Services)
	}

	var full []string
	for _, fs := range f.Filesystems {
		sp, ip := percent(fs.UsedBytes, fs.UsedBytes+fs.AvailBytes), percent(fs.InodesUsed, fs.Inodes)
		if sp < fsAlarmPercent && ip < fsAlarmPercent {
			continue
		}
		s := fmt.Sprintf("- %s (%s on %s): space %.0f%% used (%s free of %s)", fs.Mount, fs.Type, fs.Device, sp,
			formatBytes(fs.AvailBytes), formatBytes(fs.SizeBytes))
		if fs.Inodes > 0 {
			s += fmt.Sprintf(", inodes %.0f%% used (%d free of %d)", ip, fs.InodesFree, fs.Inodes)
		}
		if fs.ReadOnly {
			s += ", read-only"
		}
		full = append(full, s)
	}
	p.section(fmt.Sprintf("Filesystems over %d%% space or inodes (%d checked):", fsAlarmPercent, len(f.Filesystems)), full)

	var cgs []string
	for _, cg := range f.Cgroups {
		var parts []string
		if cg.OOMKills > 0 {
			parts = append(parts, fmt.Sprintf("%d OOM kills", cg.OOMKills))
		}
		if cg.MemoryLimitBytes > 0 {
			parts = append(parts, fmt.Sprintf("memory %s of %s limit", formatBytes(cg.MemoryBytes), formatBytes(cg.MemoryLimitBytes)))
		}
		if cg.PIDsMax > 0 {
			parts = append(parts, fmt.Sprintf("pids %d of %d", cg.PIDs, cg.PIDsMax))
		}
		if cg.PIDsMaxEvents > 0 {
			parts = append(parts, fmt.Sprintf("%d forks refused at pids.max", cg.PIDsMaxEvents))
		}
		cgs = append(cgs, fmt.Sprintf("- %s (cgroup v%d): %s", cg.Path, cg.Version, strings.Join(parts, ", ")))
	}
	p.section("Cgroups at or near a limit:", cgs)

	var units []string
	for _, u := range f.FailedUnits {
		units = append(units, fmt.Sprintf("- failed: %s (%s/%s, result %s, %d restarts) %s", u.Name, u.ActiveState, u.SubState, orUnknown(u.Result), u.Restarts, u.Description))
	}
	for _, u := range f.RestartingUnits {
		units = append(units, fmt.Sprintf("- restarted %d times: %s (%s/%s) %s", u.Restarts, u.Name, u.ActiveState, u.SubState, u.Description))
	}
	p.section("Units:", units)

	var kl []string
	for _, e := range f.KernelLog {
		kl = append(kl, fmt.Sprintf("- [%s ago] %s: %s", e.Age.Round(time.Second), levelName(e.Priority), truncate(e.Text, promptLogText)))
	}
	if len(kl) > promptLogLines {
		kl = kl[len(kl)-promptLogLines:]
	}
	p.section("Kernel log, warning or worse (newest last):", kl)

	p.section("Top processes by CPU:", processLines(f.TopCPU, promptTop))
	p.section("Top processes by memory:", processLines(f.TopMemory, promptTop))
	p.section("Processes using over half their open-files limit:", processLines(f.FDHeavy, promptTop))
	p.section("Top processes by storage I/O:", ioLines(f.TopIO, promptTop))

	var disks []string
	for _, d := range f.Disks {
		disks = append(disks, fmt.Sprintf("- %s: %.0f%% busy, await %.1fms, %.0f reads/s %.0f writes/s, %s/s read %s/s written, %d in flight",
			d.Name, d.UtilPercent, d.AwaitMS, d.ReadsPerSec, d.WritesPerSec, formatBytes(uint64(d.ReadBytesSec)), formatBytes(uint64(d.WriteBytesSec)), d.InFlight))
	}
	p.section("Disks with I/O:", disks)

	if len(f.Catalog) > 0 {
		var ok, no []string
		for _, c := range f.Catalog {
			if c.Supported {
				ok = append(ok, c.Name)
			} else if c.Reason != "" {
				no = append(no, c.Name+" ("+c.Reason+")")
			} else {
				no = append(no, c.Name)
			}
		}
		var lines []string
		if len(ok) > 0 {
			lines = append(lines, "- work here: "+strings.Join(ok, ", "))
		}
		if len(no) > 0 {
			lines = append(lines, "- not available: "+strings.Join(no, ", "))
		}
		p.section("Trace catalog:", lines)
	}

	var warns []string
	for _, w := range f.Warnings {
		warns = append(warns, "- "+truncate(w, 200))
	}
	p.section("Facts that could not be read:", warns)
	return p.String()
}

// promptWriter appends lines while they fit the budget; a section that
// does not fit whole says how many of its lines were left out.
type promptWriter struct {
	strings.Builder
	budget int
	full   bool
}

func (p *promptWriter) fits(s string) bool { return p.Len()+len(s)+1 <= p.budget }

func (p *promptWriter) line(s string) bool {
	if p.full || !p.fits(s) {
		p.full = true
		return false
	}
	p.WriteString(s)
	p.WriteByte('\n')
	return true
}

func (p *promptWriter) section(title string, lines []string) {
	if len(lines) == 0 || p.full {
		return
	}
	// The title and the "more" note must fit with at least one line.
	if !p.fits(title + "\n" + lines[0] + "\n- … 999 more") {
		p.full = true
		return
	}
	p.line(title)
	for i, l := range lines {
		more := fmt.Sprintf("- … %d more", len(lines)-i)
		if i < len(lines)-1 && !p.fits(l+"\n"+more) || !p.fits(l) {
			p.WriteString(more + "\n")
			p.full = true
			return
		}
		p.line(l)
	}
}

func processLines(ps []Process, n int) []string {
	var out []string
	for _, p := range ps[:min(n, len(ps))] {
		s := fmt.Sprintf("- pid %d %s (%s, %s): %.1f%% CPU, RSS %s, %d threads", p.PID, p.Comm, orUnknown(p.User), p.State,
			p.CPUPercent, formatBytes(p.RSSBytes), p.Threads)
		if p.FDLimit > 0 {
			s += fmt.Sprintf(", %d of %d fds", p.OpenFDs, p.FDLimit)
		}
		out = append(out, s+": "+truncate(p.Cmdline, 120))
	}
	return out
}

func ioLines(ps []Process, n int) []string {
	var out []string
	for _, p := range ps[:min(n, len(ps))] {
		s := fmt.Sprintf("- pid %d %s (%s): read %s/s, written %s/s; %.0f read and %.0f write calls/s", p.PID, p.Comm, p.State,
			formatBytes(uint64(p.ReadBytesPerSec)), formatBytes(uint64(p.WriteBytesPerSec)), p.ReadCallsPerSec, p.WriteCallsPerSec)
		if p.IODelayPercent > 0 {
			s += fmt.Sprintf("; waited for block I/O %.0f%% of the time", p.IODelayPercent)
		}
		if len(p.SyncFiles) > 0 {
			s += "; synchronous: " + strings.Join(p.SyncFiles, ", ")
		}
		out = append(out, truncate(s, 300))
	}
	return out
}

func (f *Facts) rootUsage() string {
	for _, fs := range f.Filesystems {
		if fs.Mount == "/" {
			return fmt.Sprintf("Root: %s/%s (%.0f%% used)", formatBytes(fs.UsedBytes), formatBytes(fs.SizeBytes),
				percent(fs.UsedBytes, fs.UsedBytes+fs.AvailBytes))
		}
	}
	return "unknown"
}

// percent is used of total in percent; df computes use% the same way,
// against used+available, since the reserved blocks are not usable.
func percent(used, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return 100 * float64(used) / float64(total)
}

var levelNames = []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

func levelName(l int) string {
	if l >= 0 && l < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("level %d", l)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func bytesOrUnknown(b uint64) string {
	if b == 0 {
		return "unknown"
	}
	return formatBytes(b)
}

// formatBytes prints a size in binary units, one decimal below 10.
func formatBytes(b uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(b)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i > 0 && v < 10 {
		return fmt.Sprintf("%.1f%s", v, units[i])
	}
	return fmt.Sprintf("%.0f%s", v, units[i])
}

func formatUptime(d time.Duration) string {
	if d <= 0 {
		return "unknown"
	}
	secs := int64(d / time.Second)
	days, hours, mins := secs/86400, secs%86400/3600, secs%3600/60
	plural := func(n int64, unit string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s", unit)
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case days > 0:
		return "up " + plural(days, "day") + ", " + plural(hours, "hour")
	case hours > 0:
		return "up " + plural(hours, "hour") + ", " + plural(mins, "minute")
	case mins > 0:
		return "up " + plural(mins, "minute")
	}
	return "up " + plural(secs, "second")
}
