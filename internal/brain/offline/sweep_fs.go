package offline

import (
	"fmt"
	"strings"

	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// usedPercent is df's Use%: used / (used + available to users), so the
// blocks reserved for root count as full.
func usedPercent(fs sysinfo.Filesystem) float64 {
	if fs.UsedBytes+fs.AvailBytes == 0 {
		return 0
	}
	return float64(fs.UsedBytes) / float64(fs.UsedBytes+fs.AvailBytes) * 100
}

func inodesPercent(fs sysinfo.Filesystem) float64 {
	if fs.Inodes == 0 {
		return 0
	}
	return float64(fs.InodesUsed) / float64(fs.Inodes) * 100
}

func checkFilesystems(v *view, fsx *findings) {
	enospc := errnoFailures(v, "ENOSPC")
	for _, fs := range v.f.Filesystems {
		if fs.ReadOnly {
			continue
		}
		ip := inodesPercent(fs)
		sp := usedPercent(fs)
		if fs.Inodes > 0 && (ip >= InodesUsedPercent || fs.InodesFree == 0) {
			sev := sevWarning
			if ip >= InodesUsedCriticalPercent || fs.InodesFree == 0 {
				sev = sevCritical
			}
			f := fsx.get("fs.inodes", fs.Mount, sev)
			f.add("statfs", "%s (%s, %s): %d of %d inodes used (%s), %d free (threshold %s)", fs.Mount, fs.Type, fs.Device, fs.InodesUsed, fs.Inodes, pct(ip), fs.InodesFree, pct(InodesUsedPercent))
			f.add("statfs", "%s space: %s used, %s available (%s)", fs.Mount, bytesStr(fs.UsedBytes), bytesStr(fs.AvailBytes), pct(sp))
			f.set("mount", fs.Mount)
			f.set("device", fs.Device)
			if sp < FSUsedPercent {
				f.title = fmt.Sprintf("Inodes exhausted on %s (%s used) while space is only %s used", fs.Mount, pct(ip), pct(sp))
				f.rootCause = fmt.Sprintf("The filesystem %s (%s) has used %d of its %d inodes. Every file, directory and symlink takes one inode, so new files cannot be created (ENOSPC, \"No space left on device\") although df -h still shows %s free: the space is not the limit, the inode table is. Typically many small files (caches, sessions, mail queues, build artefacts) fill it.",
					fs.Mount, fs.Type, fs.InodesUsed, fs.Inodes, bytesStr(fs.AvailBytes))
			} else {
				f.title = fmt.Sprintf("Inodes exhausted on %s (%s used), and space too (%s)", fs.Mount, pct(ip), pct(sp))
				f.rootCause = fmt.Sprintf("The filesystem %s is out of inodes (%d of %d used) and nearly out of space: new files cannot be created.", fs.Mount, fs.InodesUsed, fs.Inodes)
			}
			f.fix = []string{
				fmt.Sprintf("Find the directories holding most files: du --inodes -x -d 3 %s 2>/dev/null | sort -rn | head", shellQuote(fs.Mount)),
				"Delete or archive the small files that are no longer needed (old sessions, caches, spool files)",
				inodeFix(fs),
			}
			f.conf = 2
			attachErrno(f, enospc, fs.Mount, v)
			attachDu(f, v, "du --inodes", fs.Mount, "inodes")
		}
		if sp >= FSUsedPercent || (fs.SizeBytes > 0 && fs.AvailBytes == 0) {
			sev := sevWarning
			if sp >= FSUsedCriticalPercent || fs.AvailBytes == 0 {
				sev = sevCritical
			}
			f := fsx.get("fs.space", fs.Mount, sev)
			f.add("statfs", "%s (%s, %s): %s used of %s, %s available (%s used; threshold %s)", fs.Mount, fs.Type, fs.Device, bytesStr(fs.UsedBytes), bytesStr(fs.SizeBytes), bytesStr(fs.AvailBytes), pct(sp), pct(FSUsedPercent))
			f.set("mount", fs.Mount)
			f.set("device", fs.Device)
			f.title = fmt.Sprintf("Filesystem %s is %s full (%s available)", fs.Mount, pct(sp), bytesStr(fs.AvailBytes))
			f.rootCause = fmt.Sprintf("The filesystem %s (%s on %s) has %s left of %s: writes fail with ENOSPC (\"No space left on device\") once it is full, and root-reserved blocks only delay that for root.", fs.Mount, fs.Type, fs.Device, bytesStr(fs.AvailBytes), bytesStr(fs.SizeBytes))
			f.fix = []string{
				fmt.Sprintf("Find what takes the space: du -xh --max-depth=2 %s 2>/dev/null | sort -rh | head -n 20", shellQuote(fs.Mount)),
				"Remove or compress old logs, dumps and caches; check for deleted files still held open: lsof +L1",
				"Grow the filesystem or move data elsewhere if the growth is legitimate",
			}
			f.conf = 2
			attachErrno(f, enospc, fs.Mount, v)
			attachDu(f, v, "du -xh", fs.Mount, "")
		}
	}
}

// attachDu quotes the largest directories from a du follow-up on mount.
func attachDu(f *finding, v *view, prefix, mount, unit string) {
	for _, r := range v.output(prefix) {
		if !strings.Contains(r.Command, " "+shellQuote(mount)+" ") {
			continue
		}
		var top []string
		for _, line := range strings.Split(r.Stdout, "\n") {
			size, dir, ok := strings.Cut(strings.TrimSpace(line), "\t")
			if !ok || dir == mount || len(top) == 3 {
				continue
			}
			if unit != "" {
				size += " " + unit
			}
			top = append(top, fmt.Sprintf("%s in %s", dir, size))
		}
		if len(top) > 0 {
			f.add("du", "largest under %s: %s", mount, strings.Join(top, ", "))
			if f.kind == "fs.inodes" {
				f.rootCause += " Most of them are in " + strings.SplitN(top[0], " in ", 2)[0] + "."
			}
		}
		return
	}
}

func inodeFix(fs sysinfo.Filesystem) string {
	switch fs.Type {
	case "tmpfs":
		return fmt.Sprintf("tmpfs inodes are a mount option: mount -o remount,nr_inodes=<more> %s", fs.Mount)
	case "ext2", "ext3", "ext4":
		return "ext4 fixes its inode count at mkfs: recreate with more inodes (mkfs.ext4 -i <bytes-per-inode>) or move the small files to another filesystem"
	case "xfs":
		return "XFS allocates inodes dynamically up to imaxpct: raise it (xfs_growfs -m <percent>) or grow the filesystem"
	}
	return "Recreate or grow the filesystem with more inodes, or move the small files elsewhere"
}

// errnoFailure is a failed open or system call seen in a trace.
type errnoFailure struct {
	entry, what, path, comm, pid, uid string
	count                             int
}

// errnoFailures collects the failures with errno name from the open and
// syscalls traces: paths from the open tables and samples, system calls
// from the syscalls table.
func errnoFailures(v *view, errno string) []errnoFailure {
	var out []errnoFailure
	for _, tb := range v.tables("open", "failed opens by path") {
		for _, r := range tb.rows {
			if tb.get(r, "error") == errno {
				out = append(out, errnoFailure{entry: "open", what: "open", path: tb.get(r, "path"), comm: tb.res.Params["comm"], count: int(tb.num(r, "count"))})
			}
		}
	}
	for _, tb := range v.tables("open", "sample opens") {
		for _, r := range tb.rows {
			if tb.get(r, "result") != errno {
				continue
			}
			path, comm := tb.get(r, "path"), tb.get(r, "comm")
			merged := false
			for i := range out {
				if out[i].entry == "open" && out[i].path == path && (out[i].comm == "" || out[i].comm == comm) {
					out[i].comm, out[i].pid, out[i].uid = comm, tb.get(r, "pid"), tb.get(r, "uid")
					merged = true
				}
			}
			if !merged {
				out = append(out, errnoFailure{entry: "open", what: "open", path: path, comm: comm, pid: tb.get(r, "pid"), uid: tb.get(r, "uid"), count: 1})
			}
		}
	}
	for _, tb := range v.tables("syscalls", "failures by syscall and errno") {
		for _, r := range tb.rows {
			if tb.get(r, "error") == errno {
				out = append(out, errnoFailure{entry: "syscalls", what: tb.get(r, "syscall"), comm: tb.res.Params["comm"], count: int(tb.num(r, "count"))})
			}
		}
	}
	return out
}

// attachErrno adds the ENOSPC failures under mount to f.
func attachErrno(f *finding, fails []errnoFailure, mount string, v *view) {
	for _, e := range fails {
		if e.path == "" || !strings.HasPrefix(e.path, "/") {
			continue
		}
		if fs := v.mountOf(e.path); fs == nil || fs.Mount != mount {
			continue
		}
		who := ""
		if e.comm != "" {
			who = " by " + e.comm
		}
		f.add("trace open", "open: %s failed with ENOSPC %s%s", e.path, plural(e.count, "time", "times"), who)
	}
}

func checkFDs(v *view, fsx *findings) {
	l := v.f.Limits
	if l.FileHandlesMax > 0 {
		p := float64(l.FileHandles) / float64(l.FileHandlesMax) * 100
		if p >= FileHandlesPercent {
			f := fsx.get("fd.system", "", sevCritical)
			f.add("/proc/sys/fs/file-nr", "%d of %d system file handles allocated (%s; threshold %s)", l.FileHandles, l.FileHandlesMax, pct(p), pct(FileHandlesPercent))
			f.title = fmt.Sprintf("System file table %s full (%d of %d)", pct(p), l.FileHandles, l.FileHandlesMax)
			f.rootCause = "The kernel's table of open files is nearly exhausted: opens, sockets and pipes anywhere on the host fail with ENFILE (\"Too many open files in system\")."
			f.fix = []string{"Find who holds the descriptors: for p in /proc/[0-9]*; do echo $(ls $p/fd | wc -l) $p; done | sort -rn | head", "Fix the leak in that process, or raise fs.file-max if the use is legitimate"}
			f.conf = 2
		}
	}
	emfile := errnoFailures(v, "EMFILE")
	for _, p := range v.f.FDHeavy {
		if p.FDLimit == 0 || v.own[p.Comm] {
			continue
		}
		use := float64(p.OpenFDs) / float64(p.FDLimit) * 100
		if use < ProcessFDPercent {
			continue
		}
		sev := sevWarning
		if uint64(p.OpenFDs) >= p.FDLimit {
			sev = sevCritical
		}
		subject := fmt.Sprintf("%s (pid %d)", p.Comm, p.PID)
		f := fsx.get("fd.process", subject, sev)
		f.add("/proc/<pid>/fd", "%s has %d open files of its limit %d (%s; threshold %s)", subject, p.OpenFDs, p.FDLimit, pct(use), pct(ProcessFDPercent))
		f.set("comm", p.Comm)
		f.set("pid", fmt.Sprint(p.PID))
		for _, e := range emfile {
			if e.comm == "" || e.comm == p.Comm {
				f.add("trace "+e.entry, "%s: %s failed with EMFILE %s", e.entry, e.what, plural(e.count, "time", "times"))
				f.raise(sevCritical)
			}
		}
		f.title = fmt.Sprintf("%s is at its open-files limit (%d of %d)", subject, p.OpenFDs, p.FDLimit)
		f.rootCause = fmt.Sprintf("%s holds %d file descriptors and its soft RLIMIT_NOFILE is %d: further opens, accepts and sockets fail with EMFILE (\"Too many open files\"). Either it leaks descriptors or its limit is too low for its load.", subject, p.OpenFDs, p.FDLimit)
		f.fix = []string{
			fmt.Sprintf("See what the descriptors are: ls -l /proc/%d/fd | awk '{print $NF}' | sort | uniq -c | sort -rn | head", p.PID),
			"If they leak (growing count of the same kind), fix the program; otherwise raise its limit (systemd LimitNOFILE=, or limits.conf nofile)",
		}
		f.conf = 2
	}
}

func checkPIDs(v *view, fsx *findings) {
	l := v.f.Limits
	var parts []string
	f := (*finding)(nil)
	if l.ThreadsMax > 0 {
		if p := float64(l.Tasks) / float64(l.ThreadsMax) * 100; p >= TasksPercent {
			f = fsx.get("pids.system", "", sevCritical)
			f.add("/proc", "%d threads of threads-max %d (%s; threshold %s)", l.Tasks, l.ThreadsMax, pct(p), pct(TasksPercent))
			parts = append(parts, fmt.Sprintf("%d threads of %d", l.Tasks, l.ThreadsMax))
		}
	}
	if l.PIDMax > 0 {
		if p := float64(l.Tasks) / float64(l.PIDMax) * 100; p >= TasksPercent {
			f = fsx.get("pids.system", "", sevCritical)
			f.add("/proc", "%d tasks of pid_max %d (%s; threshold %s)", l.Tasks, l.PIDMax, pct(p), pct(TasksPercent))
			parts = append(parts, fmt.Sprintf("%d tasks of pid_max %d", l.Tasks, l.PIDMax))
		}
	}
	eagain := 0
	for _, e := range errnoFailures(v, "EAGAIN") {
		if e.entry == "syscalls" && (e.what == "clone" || e.what == "clone3" || e.what == "fork" || e.what == "vfork") {
			eagain += e.count
		}
	}
	if f != nil {
		f.title = "Out of process IDs: " + strings.Join(parts, ", ")
		f.rootCause = "The system is at its limit of tasks: fork() and thread creation fail with EAGAIN (\"Resource temporarily unavailable\"), so services cannot start workers and shells cannot run commands."
		f.fix = []string{"Find the process with most threads: ps -eo nlwp,pid,comm --sort=-nlwp | head", "Stop the fork/thread leak; raise kernel.pid_max / kernel.threads-max only if the count is legitimate"}
		f.conf = 2
		if eagain > 0 {
			f.add("trace syscalls", "syscalls: clone failed with EAGAIN %d times", eagain)
		}
	}
	for _, cg := range v.f.Cgroups {
		if cg.PIDsMax == 0 {
			continue
		}
		use := float64(cg.PIDs) / float64(cg.PIDsMax) * 100
		if cg.PIDsMaxEvents == 0 && use < CgroupPIDsPercent {
			continue
		}
		sev := sevWarning
		if cg.PIDsMaxEvents > 0 {
			sev = sevCritical
		}
		c := fsx.get("pids.cgroup", cg.Path, sev)
		c.add("cgroup", "cgroup %s: %d of pids.max %d tasks (%s), %d forks refused (pids.events max)", cg.Path, cg.PIDs, cg.PIDsMax, pct(use), cg.PIDsMaxEvents)
		if eagain > 0 {
			c.add("trace syscalls", "syscalls: clone failed with EAGAIN %d times", eagain)
		}
		c.set("cgroup", cg.Path)
		if cg.PIDsMaxEvents > 0 {
			c.title = fmt.Sprintf("cgroup %s refused %d forks at pids.max %d", cg.Path, cg.PIDsMaxEvents, cg.PIDsMax)
		} else {
			c.title = fmt.Sprintf("cgroup %s is at %s of pids.max %d", cg.Path, pct(use), cg.PIDsMax)
		}
		c.rootCause = fmt.Sprintf("The processes of %s may have at most %d tasks; at that limit fork() and pthread_create() fail with EAGAIN inside the cgroup.", cg.Path, cg.PIDsMax)
		c.fix = []string{"Find which process creates the tasks: systemd-cgls, or ps -eo nlwp,pid,comm --sort=-nlwp | head", "Raise the limit (systemd TasksMax=, pids.max) if the count is legitimate, else fix the leak"}
		c.conf = 2
	}
}
