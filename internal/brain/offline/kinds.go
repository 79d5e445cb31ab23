package offline

import (
	"sort"
	"strings"
)

// kind describes one kind of finding the sweep produces, or one kind of
// subject the first round discovers (a process the issue names, a
// listening process, a crashing one); follow-ups run per subject and may
// use its variables.
type kind struct {
	doc string
	// vars are the placeholders a follow-up of this kind may use.
	vars []string
	// subject kinds are never findings; they only trigger follow-ups.
	subject bool
}

// kinds are the built-in kinds; docs/OFFLINE_ENGINE.md lists them.
var kinds = map[string]kind{
	"cpu.saturation":     {doc: "more runnable work than CPUs: run queue, load, run-queue latency, CPU pressure", vars: []string{"comm", "pid"}},
	"cpu.steal":          {doc: "the hypervisor takes CPU time from this guest"},
	"mem.pressure":       {doc: "memory nearly exhausted: little available, major faults, swap-ins, memory pressure, reclaim stalls", vars: []string{"comm", "pid"}},
	"mem.swap":           {doc: "swap space nearly full"},
	"oom":                {doc: "the OOM killer killed processes (kernel log, vmstat, cgroup events, oomkill trace)", vars: []string{"comm", "pid", "cgroup"}},
	"cgroup.memory":      {doc: "a cgroup is close to its memory limit", vars: []string{"cgroup"}},
	"fs.space":           {doc: "a filesystem is (nearly) full", vars: []string{"mount", "device"}},
	"fs.inodes":          {doc: "a filesystem is out of inodes, whatever its free space", vars: []string{"mount", "device"}},
	"fd.system":          {doc: "the system file table is nearly full (ENFILE)"},
	"fd.process":         {doc: "a process is at its open-files limit (EMFILE)", vars: []string{"comm", "pid"}},
	"pids.system":        {doc: "the system is near pid_max or threads-max"},
	"pids.cgroup":        {doc: "a cgroup refused forks at pids.max", vars: []string{"cgroup"}},
	"disk.saturation":    {doc: "a disk is saturated or slow: utilisation, await, biolatency p99, iowait, I/O pressure, tasks in D state", vars: []string{"disk", "comm", "pid"}},
	"disk.errors":        {doc: "the kernel logged I/O or device errors", vars: []string{"disk"}},
	"io.sync":            {doc: "a process spends its time waiting on synchronous writes to a disk (O_SYNC, O_DSYNC, fsync per write)", vars: []string{"comm", "pid", "disk"}},
	"io.contention":      {doc: "processes wait on reads from a disk that a synchronous writer keeps busy", vars: []string{"disk", "comm", "pid", "reader"}},
	"kernel.hung":        {doc: "the kernel reported tasks blocked for minutes (hung tasks)", vars: []string{"comm"}},
	"hw.errors":          {doc: "machine checks, memory (EDAC) errors, soft lockups, thermal throttling"},
	"net.retrans":        {doc: "TCP retransmits a large share of what it sends"},
	"net.listen":         {doc: "listen queues overflow: connections dropped before accept()", vars: []string{"port", "comm", "pid"}},
	"net.iface":          {doc: "a network interface counts errors or many drops", vars: []string{"iface"}},
	"dns.failing":        {doc: "the configured nameservers do not answer: name resolution fails", vars: []string{"resolver"}},
	"service.failed":     {doc: "a systemd unit has failed", vars: []string{"unit"}},
	"service.restarting": {doc: "a systemd unit keeps restarting", vars: []string{"unit"}},
	"process.crashing":   {doc: "a program exits abnormally again and again (exit trace)", vars: []string{"comm"}},
	"perm.denied":        {doc: "opens or system calls fail with EACCES/EPERM", vars: []string{"path", "dir", "comm", "pid"}},
	"port.inuse":         {doc: "a program cannot bind its port: EADDRINUSE", vars: []string{"comm", "port"}},

	"process.named":     {doc: "a process the issue names (its comm or unit)", vars: []string{"comm", "pid"}, subject: true},
	"process.listening": {doc: "a process listening on a TCP port (ss -ltnp)", vars: []string{"comm", "pid", "port"}, subject: true},
}

// kindOrder breaks ranking ties: errors before saturation before
// utilisation, as the USE method reads them.
var kindOrder = []string{
	"oom", "disk.errors", "hw.errors", "fs.inodes", "fs.space", "port.inuse", "perm.denied",
	"service.restarting", "process.crashing", "service.failed", "dns.failing", "fd.system", "fd.process",
	"pids.system", "pids.cgroup", "kernel.hung", "io.contention", "io.sync", "disk.saturation", "mem.pressure", "cgroup.memory",
	"cpu.saturation", "net.listen", "net.retrans", "net.iface", "mem.swap", "cpu.steal",
}

func kindRank(k string) int {
	for i, o := range kindOrder {
		if o == k {
			return i
		}
	}
	return len(kindOrder)
}

func kindList(withSubjects bool) string {
	var ks []string
	for k, d := range kinds {
		if withSubjects || !d.subject {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}
