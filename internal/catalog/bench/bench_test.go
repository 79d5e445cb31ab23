package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/nannyagent/nannyagent/internal/catalog/registry"
	"github.com/stretchr/testify/require"
)

// The four entries of the cold-start comparison, and bpftrace one-liners
// asking the same questions (aggregated the same way).
var fourEntries = []string{"exec", "syscalls", "biolatency", "tcpconnect"}

var bpftraceFor = map[string]string{
	// exec reports pid, ppid, comm, argv and the result of every exec:
	// execsnoop.bt's way of asking, plus the return value.
	"exec": `tracepoint:syscalls:sys_enter_execve { printf("%d %d %s ", pid, curtask->real_parent->tgid, comm); join(args->argv); }
tracepoint:syscalls:sys_exit_execve { printf("%d %d\n", tid, args->ret); }`,
	"syscalls": `tracepoint:raw_syscalls:sys_enter { @sys_start[tid] = nsecs; }
tracepoint:raw_syscalls:sys_exit /@sys_start[tid]/ { @sys_lat[args->id] = hist(nsecs - @sys_start[tid]); @sys_n[args->id] = count(); delete(@sys_start[tid]); }`,
	"biolatency": `tracepoint:block:block_rq_issue { @bio_start[args->dev, args->sector] = nsecs; }
tracepoint:block:block_rq_complete /@bio_start[args->dev, args->sector]/ { @bio_lat[args->dev] = hist(nsecs - @bio_start[args->dev, args->sector]); delete(@bio_start[args->dev, args->sector]); }`,
	"tcpconnect": `tracepoint:sock:inet_sock_set_state /args->newstate == 2/ { @c[args->dport] = count(); }`,
}

func bpftrace(b *testing.B) string {
	path, err := exec.LookPath("bpftrace")
	if err != nil {
		b.Skip("bpftrace is the baseline of every benchmark here and is not installed (apt-get install bpftrace)")
	}
	return path
}

func available(b *testing.B, names []string) []catalog.Entry {
	var out []catalog.Entry
	for _, n := range names {
		e, ok := registry.Lookup(n)
		if !ok {
			b.Skipf("entry %s is not in the registry", n)
		}
		out = append(out, e)
	}
	return out
}

func report(b *testing.B, ours, theirs []float64, unit string, higherIsBetter bool) {
	mo, mt := Median(ours), Median(theirs)
	b.ReportMetric(mo, "nanny-"+unit)
	b.ReportMetric(mt, "bpftrace-"+unit)
	if mo > 0 && mt > 0 {
		ratio := mt / mo
		if higherIsBetter {
			ratio = mo / mt
		}
		b.ReportMetric(ratio, "x-better")
	}
}

// One entry, BTF already parsed (a long-running agent): time from Start to
// attached, against bpftrace's start to "Attaching" (which it prints before
// attaching, in its favour).
func BenchmarkStartToAttachedOne(b *testing.B) {
	k := catalogtest.Kernel(b)
	bt := bpftrace(b)
	e := available(b, []string{"exec"})[0]
	_, err := k.BTF()
	require.NoError(b, err)
	var ours, theirs []float64
	for i := 0; i < b.N; i++ {
		start := time.Now()
		tr, err := e.Start(context.Background(), k, catalog.Params{})
		require.NoError(b, err)
		ours = append(ours, float64(time.Since(start).Microseconds())/1000)
		_, err = tr.Stop()
		require.NoError(b, err)

		p, err := StartUntil(exec.Command(bt, "-e", bpftraceFor["exec"]), "Attaching", 30*time.Second)
		require.NoError(b, err)
		theirs = append(theirs, float64(p.Ready.Microseconds())/1000)
		require.NoError(b, p.Stop())
	}
	report(b, ours, theirs, "ms", false)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func agentBinary(b *testing.B) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nanny-bench")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "nannyagent")
		out, err := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", binPath, "../../../cmd/nannyagent").CombinedOutput()
		if err != nil {
			buildErr = err
			b.Logf("%s", out)
		}
	})
	require.NoError(b, buildErr)
	return binPath
}

// Four entries from a cold process (`trace run exec,syscalls,biolatency,
// tcpconnect`): exec to attached and peak RSS, against one bpftrace process
// with the four equivalent one-liners.
func BenchmarkColdFour(b *testing.B) {
	catalogtest.Kernel(b)
	bt := bpftrace(b)
	available(b, fourEntries)
	bin := agentBinary(b)
	var script []string
	for _, n := range fourEntries {
		script = append(script, bpftraceFor[n])
	}
	var oursMs, theirsMs, oursRSS, theirsRSS []float64
	for i := 0; i < b.N; i++ {
		p, err := StartUntil(exec.Command(bin, "trace", "run", strings.Join(fourEntries, ","), "--duration", "1s", "--verbose"),
			"traces attached", 30*time.Second)
		require.NoError(b, err)
		require.NoError(b, p.Wait(context.Background()), p.Output())
		require.Contains(b, p.Output(), `"attached": 4`)
		oursMs = append(oursMs, float64(p.Ready.Microseconds())/1000)
		oursRSS = append(oursRSS, p.PeakRSSMB())

		q, err := StartUntil(exec.Command(bt, "-e", strings.Join(script, "\n")), "Attaching", 30*time.Second)
		require.NoError(b, err)
		time.Sleep(time.Second)
		require.NoError(b, q.Stop())
		theirsMs = append(theirsMs, float64(q.Ready.Microseconds())/1000)
		theirsRSS = append(theirsRSS, q.PeakRSSMB())
	}
	b.Run("attach", func(b *testing.B) { report(b, oursMs, theirsMs, "ms", false) })
	b.Run("peak-rss", func(b *testing.B) { report(b, oursRSS, theirsRSS, "MB", false) })
}

// BPF time per event (kernel.bpf_stats_enabled), ours against the
// equivalent bpftrace one-liner under the same workload.
// perEventCase is one entry against the bpftrace one-liner asking the
// same question, under the same workload.
type perEventCase struct {
	entry    string
	name     string // the sub-benchmark, when not the entry's name
	params   catalog.Params
	script   string
	workload func()
}

func perEventCases(b *testing.B) []perEventCase {
	bin, err := exec.LookPath("true")
	require.NoError(b, err)
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	require.NoError(b, err)
	b.Cleanup(func() { null.Close() })
	buf := make([]byte, 100)
	missing := filepath.Join(b.TempDir(), "nanny-bench-missing")
	execs := func() {
		for i := 0; i < 200; i++ {
			_ = exec.Command(bin).Run()
		}
	}
	return []perEventCase{
		{entry: "exec", script: bpftraceFor["exec"], workload: execs},
		// A filter on the started program's comm: exec decides it at
		// sched_process_exec. bpftrace's nearest equivalent filters the
		// same tracepoint (without argv, which it cannot read there).
		{entry: "exec", name: "exec-comm", params: catalog.Params{Comm: filepath.Base(bin)},
			script:   fmt.Sprintf(`tracepoint:sched:sched_process_exec /comm == "%s"/ { printf("%%d %%d %%s %%s\n", pid, curtask->real_parent->tgid, comm, str(args->filename)); }`, filepath.Base(bin)),
			workload: execs},
		{entry: "syscalls", script: bpftraceFor["syscalls"], workload: func() {
			for i := 0; i < 200000; i++ {
				syscall.Getppid()
			}
		}},
		// opensnoop's question: who opened what, with what result.
		{entry: "open", script: `tracepoint:syscalls:sys_enter_openat { @path[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@path[tid]/ { printf("%d %s %s %d\n", pid, comm, str(@path[tid]), args->ret); delete(@path[tid]); }`,
			workload: func() {
				for i := 0; i < 20000; i++ {
					_, _ = syscall.Open(missing, syscall.O_RDONLY, 0)
				}
			}},
		// Bytes, ops and latency of writes per process and file.
		{entry: "fileio", script: `tracepoint:syscalls:sys_enter_write { @ts[tid] = nsecs; @fd[tid] = args->fd; }
tracepoint:syscalls:sys_exit_write /@ts[tid]/ { @bytes[pid, comm, @fd[tid]] = sum(args->ret); @ops[pid, comm, @fd[tid]] = count(); @lat = hist(nsecs - @ts[tid]); delete(@ts[tid]); delete(@fd[tid]); }`,
			workload: func() {
				for i := 0; i < 100000; i++ {
					_, _ = null.Write(buf)
				}
			}},
		// Count one tracepoint by process.
		{entry: "tracepoint", params: catalog.Params{Target: "syscalls:sys_enter_getppid"},
			script: `tracepoint:syscalls:sys_enter_getppid { @[pid, comm] = count(); }`,
			workload: func() {
				for i := 0; i < 200000; i++ {
					syscall.Getppid()
				}
			}},
	}
}

// BPF time per event (kernel.bpf_stats_enabled), ours against the
// equivalent bpftrace one-liner under the same workload.
func BenchmarkBPFTimePerEvent(b *testing.B) {
	catalogtest.Kernel(b)
	bt := bpftrace(b)
	stats, err := ebpf.EnableStats(uint32(0)) // BPF_STATS_RUN_TIME
	require.NoError(b, err)
	defer stats.Close()

	for _, c := range perEventCases(b) {
		name := c.name
		if name == "" {
			name = c.entry
		}
		b.Run(name, func(b *testing.B) {
			e := available(b, []string{c.entry})[0]
			k := catalogtest.Kernel(b)
			var ours, theirs []float64
			for i := 0; i < b.N; i++ {
				before := ProgramIDs()
				tr, err := e.Start(context.Background(), k, c.params)
				require.NoError(b, err)
				ours = append(ours, measure(b, before, c.workload))
				_, err = tr.Stop()
				require.NoError(b, err)

				before = ProgramIDs()
				p, err := StartUntil(exec.Command(bt, "-e", c.script), "Attaching", 30*time.Second)
				require.NoError(b, err)
				waitPrograms(b, before)
				theirs = append(theirs, measure(b, before, c.workload))
				require.NoError(b, p.Stop())
			}
			report(b, ours, theirs, "ns/event", false)
		})
	}
}

// waitPrograms waits until bpftrace's programs are loaded (it prints
// "Attaching" first).
func waitPrograms(b *testing.B, before map[ebpf.ProgramID]bool) {
	deadline := time.Now().Add(10 * time.Second)
	for len(NewPrograms(before)) == 0 {
		require.True(b, time.Now().Before(deadline), "bpftrace loaded no program")
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // attach follows load
}

func measure(b *testing.B, before map[ebpf.ProgramID]bool, workload func()) float64 {
	progs := NewPrograms(before)
	defer func() {
		for _, p := range progs {
			p.Close()
		}
	}()
	require.NotEmpty(b, progs)
	c0, err := ProgramCost(progs)
	require.NoError(b, err)
	runtime.LockOSThread()
	workload()
	runtime.UnlockOSThread()
	c1, err := ProgramCost(progs)
	require.NoError(b, err)
	return c1.Sub(c0).PerEvent()
}
