package offline

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

const ssHeader = "State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n"

// TestEachFindingKind plants one anomaly per case on a healthy host and
// checks the top finding exactly: its title and root cause name the key
// fact, its evidence quotes the number.
func TestEachFindingKind(t *testing.T) {
	e := testEngine(t)
	type want struct {
		severity  string
		title     string   // exact
		rootCause []string // substrings
		evidence  [][]string
	}
	cases := []struct {
		name   string
		issue  string
		facts  func(f *sysinfo.Facts)
		cmds   []safeexec.Result
		traces []*catalog.Result
		want   want
	}{
		{
			name:  "inodes exhausted on a tmpfs with free space",
			issue: "the server is acting weird",
			facts: func(f *sysinfo.Facts) {
				f.Filesystems = append(f.Filesystems, sysinfo.Filesystem{Mount: "/srv/cache", Device: "tmpfs", Type: "tmpfs",
					SizeBytes: 64 * mib, UsedBytes: 32 * mib, AvailBytes: 32 * mib, Inodes: 2048, InodesUsed: 2048, InodesFree: 0})
			},
			cmds: []safeexec.Result{cmd("du --inodes -x -d 2 /srv/cache 2>/dev/null | sort -rn | head -n 12", "2048\t/srv/cache\n2001\t/srv/cache/sessions\n40\t/srv/cache/tmp\n")},
			want: want{"critical", "Inodes exhausted on /srv/cache (100% used) while space is only 50% used",
				[]string{"has used 2048 of its 2048 inodes", "df -h still shows 32.0 MiB free", "Most of them are in /srv/cache/sessions."},
				[][]string{{"/srv/cache (tmpfs, tmpfs): 2048 of 2048 inodes used (100%), 0 free"}, {"largest under /srv/cache: /srv/cache/sessions in 2001 inodes, /srv/cache/tmp in 40 inodes"}}},
		},
		{
			name:  "filesystem full",
			issue: "backups fail",
			facts: func(f *sysinfo.Facts) {
				f.Filesystems[1].UsedBytes, f.Filesystems[1].AvailBytes = 995*gib/10, gib/2
			},
			want: want{"critical", "Filesystem /var is 99.5% full (512.0 MiB available)",
				[]string{"has 512.0 MiB left of 100.0 GiB"},
				[][]string{{"/var (xfs, /dev/vdb1): 99.5 GiB used of 100.0 GiB, 512.0 MiB available (99.5% used; threshold 95%)"}}},
		},
		{
			name:  "CPU saturated by more threads than CPUs",
			issue: "everything is slow",
			facts: func(f *sysinfo.Facts) {
				f.CPUs = 2
				f.Load = [3]float64{7.9, 4, 2}
				f.CPU = sysinfo.CPUUse{User: 85, System: 15, RunQueue: 11}
				f.TopCPU = append([]sysinfo.Process{{PID: 4242, Comm: "stress", Cmdline: "stress -c 8", CPUPercent: 199}}, f.TopCPU...)
			},
			traces: []*catalog.Result{runqlatResult(4000, 120000, 5230, []string{"4242", "stress", "3100", "9500000", "3064", "4000", "120000"})},
			want: want{"critical", "CPU saturated: 10 runnable tasks for 2 CPUs, load 4.0 per CPU, p99 run-queue wait 120 ms",
				[]string{"More work is runnable than there are CPUs", "stress (pid 4242, 199% CPU)"},
				[][]string{{"10 runnable tasks on 2 CPUs (5.0 per CPU; threshold 2)"}, {"runqlat: p99 wait for a CPU 120 ms", "over 5230 waits"}}},
		},
		{
			name:  "memory nearly exhausted",
			issue: "it is slow",
			facts: func(f *sysinfo.Facts) {
				f.Memory.AvailableBytes = gib / 2
				f.Memory.MajorFaultsPerSec = 850
				f.TopMemory = []sysinfo.Process{{PID: 900, Comm: "java", Cmdline: "java -jar app.jar", RSSBytes: 14 * gib}}
			},
			want: want{"critical", "Memory pressure: 3.1% available, 850 major faults/s",
				[]string{"short of memory", "java (pid 900, 14.0 GiB)"},
				[][]string{{"memory available 512.0 MiB of 16.0 GiB (3.1%; threshold 10%)"}, {"850 major page faults per second"}}},
		},
		{
			name:  "swap nearly full",
			issue: "hmm",
			facts: func(f *sysinfo.Facts) { f.Memory.SwapFreeBytes = gib / 5 },
			want: want{"warning", "Swap is 90% full", []string{"OOM killer is next"},
				[][]string{{"swap 90% used of 2.0 GiB (threshold 80%)"}}},
		},
		{
			name:  "OOM kill in a memory-limited cgroup",
			issue: "my job disappears",
			facts: func(f *sysinfo.Facts) {
				f.Memory.OOMKills = 3
				f.Cgroups = []sysinfo.Cgroup{{Path: "/test.slice/leaky.service", MemoryLimitBytes: 64 * mib, MemoryBytes: 63 * mib, OOMKills: 3}}
				f.KernelLog = []sysinfo.LogLine{
					{Age: 2 * time.Minute, Priority: 6, Text: "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/test.slice/leaky.service,task_memcg=/test.slice/leaky.service,task=leaky,pid=23832,uid=0"},
					{Age: 2 * time.Minute, Priority: 3, Text: "Memory cgroup out of memory: Killed process 23832 (leaky) total-vm:1332328kB, anon-rss:65408kB, file-rss:5496kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0"},
				}
			},
			want: want{"critical", "OOM killer killed leaky in cgroup /test.slice/leaky.service",
				[]string{"leaky reached the memory limit of its cgroup /test.slice/leaky.service (64.0 MiB)"},
				[][]string{{"cgroup /test.slice/leaky.service: 3 OOM kills at its 64.0 MiB memory limit"}, {"kernel log: 1 OOM kill (1 at a memory cgroup's limit): leaky ×1, the last 2m0s ago"}}},
		},
		{
			name:  "cgroup close to its memory limit",
			issue: "x",
			facts: func(f *sysinfo.Facts) {
				f.Cgroups = []sysinfo.Cgroup{{Path: "/system.slice/cache.service", MemoryLimitBytes: 256 * mib, MemoryBytes: 250 * mib}}
			},
			want: want{"warning", "cgroup /system.slice/cache.service is at 98% of its memory limit", []string{"256.0 MiB"},
				[][]string{{"uses 250.0 MiB of its 256.0 MiB memory limit (98%; threshold 90%)"}}},
		},
		{
			name:  "system file table full",
			issue: "x",
			facts: func(f *sysinfo.Facts) { f.Limits.FileHandles, f.Limits.FileHandlesMax = 95000, 100000 },
			want: want{"critical", "System file table 95% full (95000 of 100000)", []string{"ENFILE"},
				[][]string{{"95000 of 100000 system file handles allocated (95%; threshold 90%)"}}},
		},
		{
			name:  "process at its open-files limit",
			issue: "too many open files",
			facts: func(f *sysinfo.Facts) {
				f.FDHeavy = []sysinfo.Process{{PID: 2211, Comm: "java", Cmdline: "java -jar app.jar", OpenFDs: 1024, FDLimit: 1024}}
			},
			traces: []*catalog.Result{openResult(map[string]string{"failed": "true"}, [][]string{{"/opt/app/data/x.log", "EMFILE", "37"}})},
			want: want{"critical", "java (pid 2211) is at its open-files limit (1024 of 1024)", []string{"EMFILE", "soft RLIMIT_NOFILE is 1024"},
				[][]string{{"java (pid 2211) has 1024 open files of its limit 1024 (100%"}, {"open: open failed with EMFILE 37 times"}}},
		},
		{
			name:  "out of threads",
			issue: "cannot fork",
			facts: func(f *sysinfo.Facts) { f.Limits.Tasks, f.Limits.ThreadsMax = 125000, 126000 },
			want: want{"critical", "Out of process IDs: 125000 threads of 126000", []string{"EAGAIN"},
				[][]string{{"125000 threads of threads-max 126000 (99.2%; threshold 90%)"}}},
		},
		{
			name:  "cgroup refusing forks at pids.max",
			issue: "x",
			facts: func(f *sysinfo.Facts) {
				f.Cgroups = []sysinfo.Cgroup{{Path: "/user.slice/forky", PIDsMax: 100, PIDs: 100, PIDsMaxEvents: 57}}
			},
			traces: []*catalog.Result{syscallsResult(map[string]string{"failed": "true"}, [][]string{{"clone", "EAGAIN", "57"}})},
			want: want{"critical", "cgroup /user.slice/forky refused 57 forks at pids.max 100", []string{"at most 100 tasks"},
				[][]string{{"cgroup /user.slice/forky: 100 of pids.max 100 tasks (100%), 57 forks refused"}, {"syscalls: clone failed with EAGAIN 57 times"}}},
		},
		{
			name:  "disk saturated by a writer while a reader waits",
			issue: "database queries are slow",
			facts: func(f *sysinfo.Facts) {
				f.Disks[1].UtilPercent, f.Disks[1].AwaitMS = 99, 180
				f.CPU.IOWait, f.CPU.Idle = 35, 57
			},
			cmds: []safeexec.Result{cmd(cmdDstate, "  640 D    io_schedule                      postgres\n 3131 D    io_schedule                      dd\n")},
			traces: []*catalog.Result{biolatencyResult(
				[][]string{{"vdb", "write", "5200", "681574400", "95000", "420000", "0"}, {"vdb", "read", "300", "2457600", "60000", "380000", "0"}},
				[]string{"3131", "dd", "vdb", "write", "5100", "668467200", "96000"}, []string{"640", "postgres", "vdb", "read", "290", "2375680", "61000"})},
			want: want{"warning", "Disk vdb saturated: 99% busy, await 180 ms, write p99 420 ms, read p99 380 ms",
				[]string{"Most of the I/O comes from dd (pid 3131); postgres waits behind it."},
				[][]string{{"vdb busy 99% of the time, await 180.0 ms"}, {"biolatency: vdb write p99 420 ms"}, {"iowait 35% of CPU time"}, {"tasks waiting in D state: postgres (pid 640, in io_schedule), dd (pid 3131"}, {"biolatency: dd (pid 3131) submitted 5100 write requests"}}},
		},
		{
			name:  "a named program's reads wait on I/O",
			issue: "postgres reads are slow",
			facts: func(f *sysinfo.Facts) { f.CPU.IOWait, f.CPU.Idle = 28, 64 },
			traces: []*catalog.Result{func() *catalog.Result {
				r := result("fileio", map[string]string{"comm": "postgres"}, tbl("I/O by process", []string{"pid", "comm", "files", "reads", "read_bytes", "writes", "write_bytes"},
					[]string{"640", "postgres", "3", "1200", "9830400", "0", "0"}))
				r.Histograms = []catalog.Histogram{{Title: "read latency", Unit: "ns", Count: 1200, P50: 2_000_000, P99: 350_000_000}}
				return r
			}()},
			want: want{"warning", "Processes wait on I/O: iowait 28%, postgres read() p99 350 ms",
				[]string{"Processes spend their time waiting for I/O", "Most of the I/O comes from postgres (pid 640)."},
				[][]string{{"iowait 28% of CPU time (threshold 20%)"}, {"fileio: postgres's read() p99 350 ms over 1200 reads"}}},
		},
		{
			name:  "I/O errors in the kernel log",
			issue: "x",
			facts: func(f *sysinfo.Facts) {
				f.KernelLog = []sysinfo.LogLine{
					{Age: 5 * time.Minute, Priority: 3, Text: "blk_update_request: I/O error, dev sdb, sector 2048 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0"},
					{Age: 5 * time.Minute, Priority: 3, Text: "Buffer I/O error on dev sdb1, logical block 0, async page read"},
				}
			},
			want: want{"critical", "I/O errors on sdb in the kernel log (2 messages)", []string{"failed I/O on sdb"},
				[][]string{{"kernel, 5m0s ago: blk_update_request: I/O error, dev sdb, sector 2048"}, {"Buffer I/O error on dev sdb1"}}},
		},
		{
			name:   "failed block requests during the trace",
			issue:  "x",
			facts:  func(f *sysinfo.Facts) {},
			traces: []*catalog.Result{biolatencyResult([][]string{{"vdb", "read", "120", "491520", "900", "2000", "7"}})},
			want: want{"critical", "I/O errors on vdb during the trace", []string{"Block requests to vdb complete with errors"},
				[][]string{{"biolatency: 7 read requests to vdb failed during the trace"}}},
		},
		{
			name:  "hung task",
			issue: "x",
			facts: func(f *sysinfo.Facts) {
				f.KernelLog = []sysinfo.LogLine{{Age: time.Minute, Priority: 3, Text: "INFO: task jbd2/sda1-8:312 blocked for more than 120 seconds."}}
			},
			want: want{"warning", "Task jbd2/sda1-8 (pid 312) hung for over 120 seconds", []string{"uninterruptible sleep"},
				[][]string{{"blocked for more than 120 seconds"}}},
		},
		{
			name:  "machine check",
			issue: "x",
			facts: func(f *sysinfo.Facts) {
				f.KernelLog = []sysinfo.LogLine{{Age: 10 * time.Minute, Priority: 2, Text: "mce: [Hardware Error]: Machine check events logged"}}
			},
			want: want{"critical", "Hardware or CPU errors in the kernel log (1 message)", []string{"machine checks"},
				[][]string{{"kernel, 10m0s ago: mce: [Hardware Error]: Machine check events logged"}}},
		},
		{
			name:   "TCP retransmits",
			issue:  "x",
			facts:  func(f *sysinfo.Facts) { f.Network.TCPRetransPerSec, f.Network.TCPOutSegsPerSec = 40, 400 },
			traces: []*catalog.Result{result("tcpretrans", nil, tbl("retransmits by flow", []string{"local", "remote", "state", "retransmits", "failed"}, []string{"10.0.0.5:443", "198.51.100.7:51514", "ESTABLISHED", "120", "0"}))},
			want: want{"warning", "TCP retransmits 10% of its segments", []string{"Most retransmits go to 198.51.100.7:51514."},
				[][]string{{"40.0 TCP segments retransmitted per second of 400.0 sent: 10% (threshold 5%)"}, {"tcpretrans: 10.0.0.5:443 -> 198.51.100.7:51514 (ESTABLISHED): 120 retransmits"}}},
		},
		{
			name:  "accept queue full",
			issue: "x",
			facts: func(f *sysinfo.Facts) { f.Network.ListenOverflows, f.Network.ListenDrops = 5120, 5120 },
			cmds:  []safeexec.Result{cmd(cmdSS, ssHeader+`LISTEN 129    128          0.0.0.0:8080      0.0.0.0:*    users:(("gunicorn",pid=4120,fd=5))`+"\n")},
			want: want{"warning", "Accept queue of 0.0.0.0:8080 of gunicorn (pid 4120) is full (129 of 128)", []string{"listen backlog (128) is full"},
				[][]string{{"ss -ltnp: listener 0.0.0.0:8080 of gunicorn (pid 4120) has 129 connections waiting for accept(), its backlog is 128"}, {"5120 listen queue overflows"}}},
		},
		{
			name:  "interface errors",
			issue: "x",
			facts: func(f *sysinfo.Facts) { f.Network.Interfaces[0].RxErrors = 1532 },
			want: want{"warning", "Interface eth0 counts 1532 errors", []string{"damaged frames"},
				[][]string{{"eth0: 1532 receive errors, 0 transmit errors"}}},
		},
		{
			name:  "no nameserver answers",
			issue: "curl: Could not resolve host",
			facts: func(f *sysinfo.Facts) {
				f.Network.Resolvers = []sysinfo.Resolver{{Address: "10.9.9.9", Error: "i/o timeout"}}
			},
			want: want{"critical", "Name resolution fails: no nameserver in /etc/resolv.conf answers (10.9.9.9)", []string{"Every nameserver /etc/resolv.conf lists (10.9.9.9) fails to answer"},
				[][]string{{"nameserver 10.9.9.9 did not answer a query: i/o timeout"}}},
		},
		{
			name:  "lookups time out while the probed nameserver answers",
			issue: "x",
			facts: func(f *sysinfo.Facts) {},
			traces: []*catalog.Result{result("dns", nil, tbl("lookups by name", []string{"name", "function", "result", "count", "avg_us", "max_us", "address"},
				[]string{"x.invalid", "getaddrinfo", "EAI_NONAME", "40", "100", "200", "-"},
				[]string{"api.internal", "getaddrinfo", "EAI_AGAIN", "5", "5000000", "5000000", "-"}))},
			want: want{"warning", "Name lookups fail: the resolver does not answer (5 failures during the trace)", []string{"EAI_AGAIN"},
				[][]string{{"dns: getaddrinfo lookup of api.internal failed with EAI_AGAIN 5 times"}}},
		},
		{
			name:  "unit restarting because its port is taken",
			issue: "api is down",
			facts: func(f *sysinfo.Facts) {
				f.RestartingUnits = []sysinfo.Unit{{Name: "api.service", ActiveState: "activating", SubState: "auto-restart", Restarts: 14, Result: "exit-code"}}
			},
			cmds: []safeexec.Result{
				cmd("journalctl -u api.service -n 30 --no-pager", "Jan 02 03:04:01 web1 api[5120]: Error: listen tcp 0.0.0.0:8080: bind: address already in use\nJan 02 03:04:01 web1 systemd[1]: api.service: Main process exited, code=exited, status=1/FAILURE\n"),
				cmd(cmdSS, ssHeader+`LISTEN 0      4096         0.0.0.0:8080      0.0.0.0:*    users:(("old-api",pid=3001,fd=7))`+"\n"),
			},
			want: want{"critical", "api.service keeps restarting (14 restarts)",
				[]string{"it cannot bind its port because another process already listens there (EADDRINUSE)", "Port 8080 is held by old-api (pid 3001, listening on 0.0.0.0:8080)."},
				[][]string{{"api.service is activating/auto-restart and was restarted 14 times (last result: exit-code)"}, {"journal of api.service: Error: listen tcp 0.0.0.0:8080: bind: address already in use"}}},
		},
		{
			name:  "failed unit",
			issue: "x",
			facts: func(f *sysinfo.Facts) {
				f.FailedUnits = []sysinfo.Unit{{Name: "backup.service", ActiveState: "failed", SubState: "failed", Result: "exit-code"}}
			},
			want: want{"warning", "backup.service has failed (exit-code)", []string{"stopped with an error"},
				[][]string{{"backup.service is failed/failed (result: exit-code, 0 restarts)"}}},
		},
		{
			name:  "program crash loop without systemd",
			issue: "worker keeps dying",
			facts: func(f *sysinfo.Facts) { f.InitSystem = "runit" },
			traces: []*catalog.Result{exitResult(map[string]string{"failed": "true"},
				[][]string{{"grep", "exit 1", "60", "1ms"}, {"worker", "SIGSEGV (core dumped)", "5", "12ms"}},
				[]string{"7001", "700", "0", "worker", "SIGSEGV (core dumped)", "12ms"}, []string{"7002", "700", "0", "worker", "SIGSEGV (core dumped)", "11ms"})},
			want: want{"critical", "worker keeps crashing", []string{"worker exits with an error or a fault signal again and again"},
				[][]string{{"exit: worker exited abnormally 5 times in 4 s (SIGSEGV (core dumped) ×5), mean lifetime 12ms"}, {"each time started again by the same parent (pid 700)"}}},
		},
		{
			name:  "web server denied its files",
			issue: "the website returns 403",
			facts: func(f *sysinfo.Facts) {},
			cmds:  []safeexec.Result{cmd("namei -l /srv/www/index.html", "f: /srv/www/index.html\ndrwxr-xr-x root root /\ndrwxr-xr-x root root srv\ndrwx------ root root www\n-rw------- root root index.html\n")},
			traces: []*catalog.Result{openResult(map[string]string{"failed": "true"},
				[][]string{{"/usr/lib/locale/C.UTF-8/LC_CTYPE", "ENOENT", "476"}, {"/proc/1/environ", "EACCES", "3"}, {"/srv/www/index.html", "EACCES", "12"}},
				[]string{"812", "812", "33", "nginx", "openat", "O_RDONLY", "EACCES", "/srv/www/index.html"})},
			want: want{"warning", "nginx is denied access to /srv/www/index.html (permission denied)", []string{"nginx (uid 33) cannot open /srv/www/index.html: permission denied"},
				[][]string{{"open: /srv/www/index.html denied with EACCES 12 times by nginx (uid 33)"}, {"namei -l: drwxr-xr-x root root /, drwxr-xr-x root root srv, drwx------ root root www"}}},
		},
		{
			name:  "port already in use makes a program exit",
			issue: "my app won't start on port 8080",
			facts: func(f *sysinfo.Facts) {},
			cmds:  []safeexec.Result{cmd(cmdSS, ssHeader+`LISTEN 0      5          127.0.0.1:8080      0.0.0.0:*    users:(("nc",pid=6000,fd=3))`+"\n")},
			traces: []*catalog.Result{
				exitResult(map[string]string{"failed": "true"}, [][]string{{"python3", "exit 1", "5", "180ms"}}),
				syscallsResult(map[string]string{"failed": "true"}, [][]string{{"openat", "ENOENT", "900"}, {"bind", "EADDRINUSE", "5"}},
					[]string{"7001", "python3", "bind", "1", "1", "0"}),
			},
			want: want{"critical", "python3 cannot bind port 8080: already in use by nc (pid 6000, listening on 127.0.0.1:8080)",
				[]string{"bind() fails with EADDRINUSE", "That is why python3 keeps exiting."},
				[][]string{{"syscalls: bind failed with EADDRINUSE 5 times by python3"}, {"port 8080 is already held by nc (pid 6000"}, {"exit: python3 exited abnormally 5 times in 4 s (exit 1 ×5)"}}},
		},
		{
			name:  "CPU steal",
			issue: "x",
			facts: func(f *sysinfo.Facts) { f.CPU.Steal, f.CPU.Idle = 25, 66.5 },
			want: want{"warning", "The hypervisor takes 25% of this guest's CPU time (steal)", []string{"Other guests"},
				[][]string{{"steal 25% of CPU time over 1s (threshold 10%)"}}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := healthyFacts()
			c.facts(f)
			reply := investigate(t, e, c.issue, f, c.cmds, c.traces...)
			require.NotEmpty(t, reply.Findings, reply.RootCause)
			top := reply.Findings[0]
			require.Equal(t, c.want.title, top.Title, "findings: %s", titles(reply.Findings))
			require.Equal(t, c.want.severity, top.Severity)
			for _, rc := range c.want.rootCause {
				require.Contains(t, top.RootCause, rc)
			}
			for _, ev := range c.want.evidence {
				require.True(t, hasLine(top.Evidence, ev...), "evidence %q not in:\n%s", ev, strings.Join(top.Evidence, "\n"))
			}
			require.NotEmpty(t, top.Fix)
			// The resolution is the top finding.
			require.True(t, strings.HasPrefix(reply.RootCause, top.Title+". "), reply.RootCause)
			require.Equal(t, top.Confidence, reply.Confidence)
			require.Equal(t, strings.Join(top.Evidence, "\n"), reply.Evidence)
			require.True(t, strings.HasPrefix(reply.ResolutionPlan, "1. "+top.Fix[0]), reply.ResolutionPlan)
		})
	}
}

func titles(fs []protocol.Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, "["+f.Severity+"] "+f.Title)
	}
	return strings.Join(s, "; ")
}
