package offline

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

func next(t *testing.T, e *Engine, inv *brain.Investigation) protocol.Reply {
	t.Helper()
	raw, err := e.Next(context.Background(), inv)
	require.NoError(t, err)
	r, err := protocol.Parse(raw)
	require.NoError(t, err, raw)
	require.Empty(t, r.Notes, "the engine's replies need no correcting")
	return r
}

func traceNames(r protocol.Reply) []string {
	var out []string
	for _, t := range r.Traces {
		s := t.Name
		if c := t.Filters["comm"]; c != "" {
			s += ":" + c
		}
		out = append(out, s)
	}
	return out
}

func TestFirstRoundFollowsTheFacts(t *testing.T) {
	e := testEngine(t)

	t.Run("systemd host with disks and retransmits", func(t *testing.T) {
		r := next(t, e, &brain.Investigation{Issue: "the server is acting weird", Facts: healthyFacts()})
		require.Equal(t, protocol.Diagnostic, r.Type)
		require.Equal(t, []string{cmdDmesg, cmdJournal, cmdSS, cmdDfInode, cmdDstate}, r.Commands)
		require.Equal(t, []string{"exit", "syscalls", "open", "biolatency", "runqlat", "tcpretrans"}, traceNames(r))
		for _, tr := range r.Traces {
			require.Equal(t, DefaultTraceDuration, tr.Duration.D, tr.Name)
			require.NotEmpty(t, tr.Description)
		}
		require.Equal(t, "true", r.Traces[0].Filters["failed"])
		require.Contains(t, r.Reasoning, "No playbook matches the issue; the sweep alone decides.")
		require.Contains(t, r.Reasoning, "The facts alone show nothing past its thresholds.")
		require.LessOrEqual(t, strings.Count(r.Reasoning, "\n"), 8, "a few lines")
	})

	t.Run("no systemd, no disk I/O, no retransmits, memory limits", func(t *testing.T) {
		f := healthyFacts()
		f.InitSystem, f.Disks, f.Network.TCPRetransPerSec = "runit", nil, 0
		f.Cgroups = []sysinfo.Cgroup{{Path: "/job", MemoryLimitBytes: 64 * mib, MemoryBytes: 10 * mib}}
		r := next(t, e, &brain.Investigation{Issue: "x", Facts: f})
		require.Equal(t, []string{cmdDmesg, cmdSS, cmdDfInode, cmdDstate}, r.Commands)
		require.Equal(t, []string{"exit", "syscalls", "open", "runqlat", "oomkill"}, traceNames(r))
	})

	t.Run("a process moving much to or from storage gets its file I/O traced", func(t *testing.T) {
		f := healthyFacts()
		f.TopIO = []sysinfo.Process{{PID: 77, Comm: "backup", WriteBytesPerSec: 12 * float64(mib)}}
		r := next(t, e, &brain.Investigation{Issue: "x", Facts: f})
		require.Equal(t, []string{"exit", "syscalls", "open", "biolatency", "fileio", "runqlat", "tcpretrans"}, traceNames(r))
		f.TopIO[0].WriteBytesPerSec = 9 * float64(mib)
		require.NotContains(t, traceNames(next(t, e, &brain.Investigation{Issue: "x", Facts: f})), "fileio", "under IOHeavyBytesPerSec")
		f.PSI.IO.SomeAvg10 = IOEvidencePSI
		require.Contains(t, traceNames(next(t, e, &brain.Investigation{Issue: "x", Facts: f})), "fileio", "tasks stall on I/O")
	})

	t.Run("entries that do not work here are left out and said so", func(t *testing.T) {
		f := healthyFacts()
		f.Catalog = []sysinfo.CatalogEntry{{Name: "runqlat", Supported: false, Reason: "needs BTF"}, {Name: "exit", Supported: true}}
		r := next(t, e, &brain.Investigation{Issue: "x", Facts: f})
		require.NotContains(t, traceNames(r), "runqlat")
		require.Contains(t, r.Reasoning, "Not available here: runqlat: needs BTF")
	})

	t.Run("a matching playbook adds its steps and is named", func(t *testing.T) {
		r := next(t, e, &brain.Investigation{Issue: "On /var I cannot create files but df shows 30% free", Facts: healthyFacts()})
		require.Contains(t, r.Commands, "df -h")
		require.Contains(t, r.Reasoning, "Playbooks matching the issue: disk-full.")
		require.Contains(t, r.Reasoning, "- playbook disk-full: df -h")
		// The playbook's open trace is the sweep's: asked once.
		n := 0
		for _, name := range traceNames(r) {
			if name == "open" {
				n++
			}
		}
		require.Equal(t, 1, n)
	})

	t.Run("anomalies in the facts are named before the traces run", func(t *testing.T) {
		f := healthyFacts()
		f.Memory.AvailableBytes = gib / 2
		r := next(t, e, &brain.Investigation{Issue: "x", Facts: f})
		require.Contains(t, r.Reasoning, "The facts already show: Memory pressure: 3.1% available.")
		require.Contains(t, traceNames(r), "oomkill")
	})

	t.Run("steps past the reply bounds wait for the second round", func(t *testing.T) {
		issue := "slow database, out of memory, dns fails, disk errors, high load"
		r1 := next(t, e, &brain.Investigation{Issue: issue, Facts: healthyFacts()})
		require.Len(t, r1.Traces, protocol.MaxTraces)
		require.Contains(t, r1.Reasoning, "more steps wait for the next round")
		inv := &brain.Investigation{Issue: issue, Facts: healthyFacts(), Rounds: []brain.Round{{Reply: r1}}}
		r2 := next(t, e, inv)
		require.Equal(t, protocol.Diagnostic, r2.Type)
		for _, tr := range r2.Traces {
			for _, old := range r1.Traces {
				require.False(t, requestKey(tr) == requestKey(old), "asked again: %s", tr.Name)
			}
		}
		require.NotEmpty(t, r2.Traces)
	})
}

// TestCrashLoopFollowUpFindsThePort is the second round at work: the
// sweep sees a program exiting again and again, follows it with traces
// filtered to it, and those show why.
func TestCrashLoopFollowUpFindsThePort(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.InitSystem = "runit"
	issue := "the service keeps crashing right after it starts"
	r1 := next(t, e, &brain.Investigation{Issue: issue, Facts: f})
	round1 := brain.Round{Reply: r1,
		Commands: []brain.CommandRun{{Result: cmd(cmdSS, ssHeader+`LISTEN 0      5          127.0.0.1:9090      0.0.0.0:*    users:(("nc",pid=6000,fd=3))`+"\n")}},
		Traces: []brain.TraceRun{{Result: exitResult(map[string]string{"failed": "true"},
			[][]string{{"readlink", "exit 1", "34", "1ms"}, {"myservice", "exit 1", "6", "40ms"}},
			[]string{"7001", "700", "0", "myservice", "exit 1", "40ms"}, []string{"7010", "700", "0", "myservice", "exit 1", "41ms"})}},
	}
	inv := &brain.Investigation{Issue: issue, Facts: f, Rounds: []brain.Round{round1}}
	r2 := next(t, e, inv)
	require.Equal(t, protocol.Diagnostic, r2.Type)
	require.Equal(t, []string{"syscalls:myservice", "open:myservice", "exec:myservice"}, traceNames(r2))
	require.Contains(t, r2.Reasoning, "myservice keeps exiting abnormally (warning)")
	require.Contains(t, r2.Reasoning, "look closer at process.crashing myservice")

	round2 := brain.Round{Reply: r2, Traces: []brain.TraceRun{
		{Result: syscallsResult(map[string]string{"comm": "myservice", "failed": "true"}, [][]string{{"bind", "EADDRINUSE", "4"}, {"openat", "ENOENT", "12"}})},
		{Result: result("exec", map[string]string{"comm": "myservice"}, tbl("sample execs", []string{"pid", "ppid", "uid", "comm", "ret", "filename", "argv"},
			[]string{"7020", "700", "0", "myservice", "0", "/opt/myservice", "/opt/myservice --listen 127.0.0.1:9090"}))},
	}}
	inv.Rounds = append(inv.Rounds, round2)
	r3 := next(t, e, inv)
	require.Equal(t, protocol.Resolution, r3.Type)
	top := r3.Findings[0]
	require.Equal(t, "myservice cannot bind port 9090: already in use by nc (pid 6000, listening on 127.0.0.1:9090)", top.Title, titles(r3.Findings))
	require.Equal(t, "critical", top.Severity)
	require.Equal(t, "High", r3.Confidence)
	require.True(t, hasLine(top.Evidence, "syscalls: bind failed with EADDRINUSE 4 times by myservice"))
	require.True(t, hasLine(top.Evidence, "exit: myservice exited abnormally 6 times in 4 s (exit 1 ×6)"))
	require.True(t, hasLine(top.Evidence, "matches the issue (playbook service-crash)"))
	for _, f := range r3.Findings {
		require.NotContains(t, f.Title, "readlink", "answer utilities are not crashes")
		require.NotEqual(t, "myservice keeps exiting abnormally", f.Title, "the crash is explained by the port, not listed twice")
	}
}

func TestRoundBounds(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	dr := brain.Round{Reply: protocol.Reply{Type: protocol.Diagnostic, Commands: []string{cmdSS}}}
	cases := []struct {
		name string
		inv  brain.Investigation
	}{
		{"final flag at the start", brain.Investigation{Final: true}},
		{"after two diagnostic rounds", brain.Investigation{Rounds: []brain.Round{dr, dr}}},
		{"round limit of one", brain.Investigation{Rounds: []brain.Round{dr}, Limits: brain.Limits{MaxRounds: 1}}},
		{"too little time for traces", brain.Investigation{Limits: brain.Limits{Deadline: time.Now().Add(5 * time.Second)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inv := c.inv
			inv.Issue, inv.Facts = "x", f
			r := next(t, e, &inv)
			require.Equal(t, protocol.Resolution, r.Type)
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e.Next(ctx, &brain.Investigation{Issue: "x", Facts: f})
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("no investigation", func(t *testing.T) {
		_, err := e.Next(context.Background(), nil)
		require.Error(t, err)
	})
	t.Run("no facts", func(t *testing.T) {
		r := next(t, e, &brain.Investigation{Issue: "x"})
		require.Equal(t, protocol.Diagnostic, r.Type)
		r = next(t, e, &brain.Investigation{Issue: "x", Final: true})
		require.True(t, strings.HasPrefix(r.RootCause, "No anomaly found"))
	})
}

// TestVagueIssueGetsEveryAnomaly: no playbook matches "acting weird",
// and the sweep alone finds both planted problems, ranked.
func TestVagueIssueGetsEveryAnomaly(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.Filesystems = append(f.Filesystems, sysinfo.Filesystem{Mount: "/srv/cache", Device: "tmpfs", Type: "tmpfs",
		SizeBytes: 64 * mib, UsedBytes: 32 * mib, AvailBytes: 32 * mib, Inodes: 2048, InodesUsed: 2048})
	f.Memory.OOMKills = 2
	f.Cgroups = []sysinfo.Cgroup{{Path: "/job.slice", MemoryLimitBytes: 64 * mib, MemoryBytes: 64 * mib, OOMKills: 2}}
	f.KernelLog = []sysinfo.LogLine{{Age: 3 * time.Minute, Priority: 3, Text: "Memory cgroup out of memory: Killed process 4410 (hog) total-vm:1332328kB, anon-rss:65408kB, file-rss:5496kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0"}}
	f.Memory.SwapFreeBytes = gib / 10

	require.Empty(t, e.match("the server is acting weird"))
	r := investigate(t, e, "the server is acting weird", f, nil)
	require.Equal(t, []string{
		// critical, three sources: kernel log, cgroup, vmstat
		"OOM killer killed hog in cgroup /job.slice",
		// critical, one source: statfs
		"Inodes exhausted on /srv/cache (100% used) while space is only 50% used",
		// warning
		"Swap is 95% full",
	}, findingTitles(r))
	require.Equal(t, "High", r.Confidence)
}

func findingTitles(r protocol.Reply) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, f.Title)
	}
	return out
}

func TestCleanHostIsHonest(t *testing.T) {
	e := testEngine(t)
	r := investigate(t, e, "the server is acting weird", healthyFacts(), nil,
		runqlatResult(6, 180, 41000), exitResult(map[string]string{"failed": "true"}, [][]string{{"grep", "exit 1", "3", "1ms"}}))
	require.Empty(t, r.Findings)
	require.Equal(t, "Low", r.Confidence)
	require.True(t, strings.HasPrefix(r.RootCause, "No anomaly found: every check of the sweep is within its thresholds."), r.RootCause)
	for _, want := range []string{
		"CPU: 8% busy, iowait 0.5%, load 0.40 on 4 CPUs",
		"memory: 11.0 GiB available of 16.0 GiB",
		"2 filesystems: fullest / at 42% space, highest inode use / at 6.9%",
		"network: 0.1 retransmits/s of 120.0 segments/s; 0 listen overflows since boot; 1 of 1 nameserver answering",
		"services: 0 failed, 0 restarting",
		"traces: runqlat (0 events), exit (0 events)",
	} {
		require.Contains(t, r.Evidence, want)
	}
	require.Contains(t, r.ResolutionPlan, "1. Run the diagnosis again while the problem is happening")
}

func TestInfoFindingsDoNotMakeARootCause(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.Network.ListenOverflows, f.Network.ListenDrops = 12, 12
	r := investigate(t, e, "x", f, []safeexec.Result{cmd(cmdSS, ssHeader)})
	require.Equal(t, []string{"Listen queues overflowed 12 times since boot"}, findingTitles(r))
	require.Equal(t, "info", r.Findings[0].Severity)
	require.True(t, strings.HasPrefix(r.RootCause, "No anomaly found: every check of the sweep is within its thresholds (1 observation of minor note listed)."), r.RootCause)
	require.Equal(t, "Low", r.Confidence)
}

func TestRanking(t *testing.T) {
	mk := func(kind string, sev severity, sources int, boosted bool) *finding {
		f := &finding{kind: kind, subject: kind, sev: sev, sources: map[string]bool{}, vars: map[string]string{}, boosted: boosted}
		for i := 0; i < sources; i++ {
			f.sources[string(rune('a'+i))] = true
		}
		return f
	}
	named := func(kind string, sev severity) *finding {
		f := mk(kind, sev, 1, false)
		f.sources[issueSource] = true
		return f
	}
	fs := &findings{}
	for i, f := range []*finding{
		mk("net.iface", sevWarning, 1, false),
		mk("mem.swap", sevWarning, 1, true),   // a warning the issue asks about beats an unrelated critical
		mk("cpu.steal", sevWarning, 2, false), // support beats kind order
		mk("net.retrans", sevInfo, 5, true),   // an info is never the answer, even if asked about
		mk("fs.space", sevCritical, 1, false), // severity beats support
		mk("oom", sevWarning, 1, false),       // kind order: errors first
		named("process.crashing", sevWarning), // the issue naming it beats a playbook's boost
	} {
		f.seq = i
		fs.list = append(fs.list, f)
	}
	var got []string
	for _, f := range fs.ranked() {
		got = append(got, f.kind)
	}
	require.Equal(t, []string{"process.crashing", "mem.swap", "fs.space", "cpu.steal", "oom", "net.iface", "net.retrans"}, got)
}

// TestIssueNamingAMountRanksIt: the same anomaly on two mounts; the one
// the user's path lies on comes first.
func TestIssueNamingAMountRanksIt(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	for _, m := range []string{"/srv/a", "/srv/b"} {
		f.Filesystems = append(f.Filesystems, sysinfo.Filesystem{Mount: m, Device: "tmpfs", Type: "tmpfs",
			SizeBytes: 64 * mib, UsedBytes: 10 * mib, AvailBytes: 54 * mib, Inodes: 100, InodesUsed: 100})
	}
	r := investigate(t, e, "touch /srv/b/new.txt says no space left on device", f, nil)
	require.Equal(t, "Inodes exhausted on /srv/b (100% used) while space is only 16% used", r.Findings[0].Title)
	require.True(t, hasLine(r.Findings[0].Evidence, "the issue names /srv/b"))
	require.True(t, hasLine(r.Findings[0].Evidence, "matches the issue (playbook disk-full)"))
	require.Equal(t, "Inodes exhausted on /srv/a (100% used) while space is only 16% used", r.Findings[1].Title)
}

// TestBoostFollowsTheIssue: two warnings with equal support swap places
// with the issue text.
func TestBoostFollowsTheIssue(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.Memory.SwapFreeBytes = gib / 5
	f.Network.Interfaces[0].RxErrors = 7
	r := investigate(t, e, "it is swapping a lot", f, nil)
	require.Equal(t, []string{"Swap is 90% full", "Interface eth0 counts 7 errors"}, findingTitles(r))
	r = investigate(t, e, "name resolution is flaky", f, nil)
	require.Equal(t, []string{"Interface eth0 counts 7 errors", "Swap is 90% full"}, findingTitles(r))
}

func TestOwnCommandsAreNotTheHostsProblem(t *testing.T) {
	e := testEngine(t)
	r := investigate(t, e, "x", healthyFacts(), []safeexec.Result{cmd(cmdDmesg, "")},
		exitResult(map[string]string{"failed": "true"}, [][]string{{"dmesg", "exit 1", "5", "2ms"}, {"tail", "exit 1", "5", "2ms"}}))
	require.Empty(t, r.Findings)
}

func TestRepliesAreDeterministic(t *testing.T) {
	e := testEngine(t)
	build := func() *brain.Investigation {
		f := healthyFacts()
		f.Memory.AvailableBytes = gib / 2
		f.Disks[1].UtilPercent = 97
		f.RestartingUnits = []sysinfo.Unit{{Name: "a.service", Restarts: 5, SubState: "auto-restart"}, {Name: "b.service", Restarts: 9, SubState: "auto-restart"}}
		f.FailedUnits = []sysinfo.Unit{{Name: "c.service", ActiveState: "failed"}}
		return &brain.Investigation{Issue: "slow and crashing", Facts: f, Rounds: []brain.Round{{
			Traces: []brain.TraceRun{{Result: exitResult(nil, [][]string{{"x", "exit 2", "4", "1ms"}, {"y", "SIGABRT", "3", "1ms"}},
				[]string{"1", "9", "0", "x", "exit 2", "1ms"}, []string{"2", "9", "0", "x", "exit 2", "1ms"}, []string{"3", "8", "0", "y", "SIGABRT", "1ms"})}},
		}}}
	}
	a, err := e.Next(context.Background(), build())
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		b, err := e.Next(context.Background(), build())
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
	inv := build()
	inv.Final = true
	a, err = e.Next(context.Background(), inv)
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		inv := build()
		inv.Final = true
		b, err := e.Next(context.Background(), inv)
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
}

func TestEvidenceIsBounded(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	for i := 0; i < 40; i++ {
		f.KernelLog = append(f.KernelLog, sysinfo.LogLine{Age: time.Minute, Priority: 3,
			Text: "blk_update_request: I/O error, dev sdc, sector " + itoa(1000+i) + " op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0"})
	}
	r := investigate(t, e, "x", f, nil)
	top := r.Findings[0]
	require.Equal(t, "I/O errors on sdc in the kernel log (40 messages)", top.Title)
	require.Len(t, top.Evidence, maxEvidencePerSource+1)
	require.Equal(t, "(34 more from kernel log)", top.Evidence[maxEvidencePerSource])
}

var _ = catalog.MaxRows

// TestWebServerDeniedItsFiles: the sandboxed ss cannot name owners, the
// facts can; the playbook follows the listening server with an open
// trace filtered to it, which names the file, the program and its uid.
func TestWebServerDeniedItsFiles(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.Network.Listeners = []sysinfo.Listener{{Address: "127.0.0.1:8080", Port: 8080, PID: 2424, Comm: "python3"}, {Address: "0.0.0.0:22", Port: 22, PID: 500, Comm: "sshd"}}
	// An unrelated, recent OOM kill: critical too, but less supported.
	f.Memory.OOMKills = 1
	f.KernelLog = []sysinfo.LogLine{{Age: 10 * time.Minute, Priority: 3, Text: "Out of memory: Killed process 999 (batch) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0"}}
	issue := "the web server returns errors for private.html, permission denied?"
	r1 := next(t, e, &brain.Investigation{Issue: issue, Facts: f})
	round1 := brain.Round{Reply: r1,
		Commands: []brain.CommandRun{{Result: cmd(cmdSS, ssHeader+"LISTEN 0      5          127.0.0.1:8080      0.0.0.0:*\nLISTEN 0      128          0.0.0.0:22      0.0.0.0:*\n")}},
		Traces: []brain.TraceRun{{Result: openResult(map[string]string{"failed": "true"},
			[][]string{{"/usr/lib/locale/C.UTF-8/LC_CTYPE", "ENOENT", "476"}, {"/srv/www/private.html", "EACCES", "6"}},
			[]string{"9248", "9248", "0", "pyenv-hooks", "openat", "O_RDONLY|O_CLOEXEC", "ENOENT", "/usr/lib/locale/locale-archive"})}},
	}
	inv := &brain.Investigation{Issue: issue, Facts: f, Rounds: []brain.Round{round1}}
	r2 := next(t, e, inv)
	require.Equal(t, protocol.Diagnostic, r2.Type)
	require.Contains(t, r2.Commands, "namei -l /srv/www/private.html")
	require.Contains(t, traceNames(r2), "open:python3")
	require.Contains(t, traceNames(r2), "open:sshd")
	require.Contains(t, r2.Reasoning, "- playbook web-permission: process.listening python3: open (python3)")

	round2 := brain.Round{Reply: r2,
		Commands: []brain.CommandRun{{Result: cmd("namei -l /srv/www/private.html", "f: /srv/www/private.html\ndrwxr-xr-x root root /\ndrwxr-xr-x root root srv\ndrwxr-xr-x root root www\n-rw------- root root private.html\n")}},
		Traces: []brain.TraceRun{{Result: openResult(map[string]string{"comm": "python3", "failed": "true"},
			[][]string{{"/srv/www/private.html", "EACCES", "31"}},
			[]string{"2424", "2424", "65534", "python3", "openat", "O_RDONLY|O_CLOEXEC", "EACCES", "/srv/www/private.html"})}},
	}
	inv.Rounds = append(inv.Rounds, round2)
	r3 := next(t, e, inv)
	require.Equal(t, protocol.Resolution, r3.Type)
	require.Equal(t, []string{
		"python3 is denied access to /srv/www/private.html (permission denied)",
		"OOM killer killed batch",
	}, findingTitles(r3))
	top := r3.Findings[0]
	require.Equal(t, "critical", top.Severity)
	require.Contains(t, top.RootCause, "python3 (uid 65534) cannot open /srv/www/private.html: permission denied.")
	require.True(t, hasLine(top.Evidence, "open: /srv/www/private.html denied with EACCES 31 times by python3 (uid 65534)"))
	require.True(t, hasLine(top.Evidence, "namei -l: drwxr-xr-x root root /, drwxr-xr-x root root srv, drwxr-xr-x root root www, -rw------- root root private.html"))
	require.True(t, hasLine(top.Evidence, "the issue names private.html"))
	require.Equal(t, "High", top.Confidence)
}

func TestPortHolderFromTheFacts(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.Network.Listeners = []sysinfo.Listener{{Address: "0.0.0.0:5432", Port: 5432, PID: 777, Comm: "postgres"}}
	r := investigate(t, e, "postgres-new fails on port 5432", f, []safeexec.Result{cmd(cmdSS, ssHeader+"LISTEN 0      244          0.0.0.0:5432      0.0.0.0:*\n")},
		syscallsResult(map[string]string{"comm": "postgres-new", "failed": "true"}, [][]string{{"bind", "EADDRINUSE", "3"}}))
	require.Equal(t, "postgres-new cannot bind port 5432: already in use by postgres (pid 777, listening on 0.0.0.0:5432)", r.Findings[0].Title)
}

func TestTraceDurations(t *testing.T) {
	require.Equal(t, DefaultTraceDuration, New(Options{PlaybookDir: t.TempDir()}).traceDur)
	require.Equal(t, time.Second, New(Options{PlaybookDir: t.TempDir(), TraceDuration: time.Millisecond}).traceDur)
	require.Equal(t, 15*time.Second, New(Options{PlaybookDir: t.TempDir(), TraceDuration: time.Hour}).traceDur)
	e := testEngine(t)
	r := next(t, e, &brain.Investigation{Issue: "x", Facts: healthyFacts(), Limits: brain.Limits{RoundBudget: 5 * time.Second}})
	for _, tr := range r.Traces {
		require.Equal(t, 3*time.Second, tr.Duration.D, "within the round budget")
	}
}

// FuzzCommandOutputs feeds arbitrary text as the output of every command
// the sweep parses, and as a kernel log line: the engine must still
// answer with a valid resolution.
func FuzzCommandOutputs(f *testing.F) {
	f.Add(ssHeader+`LISTEN 129 128 0.0.0.0:8080 0.0.0.0:* users:(("gunicorn",pid=4120,fd=5))`, "Jan 02 03:04:01 web1 api[5120]: bind: address already in use :8080",
		"2048\t/srv\n", "blk_update_request: I/O error, dev sdb, sector 2048")
	f.Add("LISTEN x y :", "-- No entries --", "x\ty\tz", "Killed process 1 () oom-kill:oom_memcg=,task=,pid=1")
	f.Add("LISTEN 1 1 [::]:", "kernel: mce: [Hardware Error]", "\t", "INFO: task :1 blocked for more than 1 seconds")
	e := New(Options{PlaybookDir: f.TempDir()})
	f.Fuzz(func(t *testing.T, ss, journal, du, klog string) {
		fa := healthyFacts()
		fa.Filesystems[1].InodesFree, fa.Filesystems[1].InodesUsed = 0, fa.Filesystems[1].Inodes
		fa.RestartingUnits = []sysinfo.Unit{{Name: "api.service", Restarts: 5}}
		fa.KernelLog = []sysinfo.LogLine{{Age: time.Minute, Priority: 3, Text: klog}}
		inv := &brain.Investigation{Issue: "port 8080 " + klog, Facts: fa, Final: true, Rounds: []brain.Round{{
			Commands: []brain.CommandRun{
				{Result: safeexec.Result{Command: cmdSS, Stdout: ss}},
				{Result: safeexec.Result{Command: "journalctl -u api.service -n 30 --no-pager", Stdout: journal}},
				{Result: safeexec.Result{Command: cmdJournal, Stdout: journal}},
				{Result: safeexec.Result{Command: "du --inodes -x -d 2 /var 2>/dev/null | sort -rn | head -n 12", Stdout: du}},
				{Result: safeexec.Result{Command: cmdDmesg, Stdout: klog}},
				{Result: safeexec.Result{Command: cmdDstate, Stdout: ss}},
				{Result: safeexec.Result{Command: "namei -l /x", Stdout: du}},
			},
			Traces: []brain.TraceRun{{Result: syscallsResult(nil, [][]string{{"bind", "EADDRINUSE", "2"}})}},
		}}}
		raw, err := e.Next(context.Background(), inv)
		require.NoError(t, err)
		r, err := protocol.Parse(raw)
		require.NoError(t, err)
		require.Equal(t, protocol.Resolution, r.Type)
		require.NotEmpty(t, r.Findings)
	})
}

// TestOOMVictimNamedByIssueFirst: when other processes were killed
// after the one the issue asks about, the finding still names it first,
// with its own pid.
func TestOOMVictimNamedByIssueFirst(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.Memory.OOMKills = 5
	f.Cgroups = []sysinfo.Cgroup{{Path: "/app.slice", MemoryLimitBytes: 64 * mib, MemoryBytes: 64 * mib, OOMKills: 1}}
	kill := func(age time.Duration, pid int, comm string) sysinfo.LogLine {
		return sysinfo.LogLine{Age: age, Priority: 3, Text: fmt.Sprintf("Memory cgroup out of memory: Killed process %d (%s) total-vm:1332328kB, anon-rss:65408kB, file-rss:5496kB, shmem-rss:0kB, UID:0 pgtables:176kB oom_score_adj:0", pid, comm)}
	}
	f.KernelLog = []sysinfo.LogLine{
		kill(5*time.Minute, 4410, "leaky-app"),
		kill(4*time.Minute, 4500, "batch-a"), kill(3*time.Minute, 4501, "batch-b"),
		kill(2*time.Minute, 4502, "batch-c"), kill(time.Minute, 4503, "batch-d"),
	}
	r := investigate(t, e, "my application leaky-app keeps getting killed", f, nil)
	require.NotEmpty(t, r.Findings)
	require.Equal(t, "OOM killer killed leaky-app, batch-d, batch-c and 2 more in cgroup /app.slice", r.Findings[0].Title)
	require.Contains(t, r.RootCause, "leaky-app")
}
