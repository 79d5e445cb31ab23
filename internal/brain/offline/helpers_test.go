package offline

import (
	"context"
	"strconv"
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

const (
	kib = uint64(1) << 10
	mib = kib << 10
	gib = mib << 10
)

// healthyFacts is a host where every check passes: each test plants
// exactly the anomaly it is about.
func healthyFacts() *sysinfo.Facts {
	return &sysinfo.Facts{
		CollectedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Hostname:    "web1",
		Distro:      "Debian GNU/Linux 12 (bookworm)",
		Kernel:      "6.1.0-18-amd64",
		Arch:        "x86_64",
		CPUs:        4,
		Uptime:      50 * time.Hour,
		Load:        [3]float64{0.4, 0.3, 0.2},
		InitSystem:  "systemd",
		CPU:         sysinfo.CPUUse{User: 6, System: 2, IOWait: 0.5, Idle: 91.5, RunQueue: 2},
		Interval:    time.Second,
		Memory: sysinfo.Memory{TotalBytes: 16 * gib, AvailableBytes: 11 * gib, SwapTotalBytes: 2 * gib, SwapFreeBytes: 2 * gib,
			MajorFaultsPerSec: 0.5},
		PSI: &sysinfo.PSI{CPU: sysinfo.Pressure{SomeAvg10: 0.2}, IO: sysinfo.Pressure{SomeAvg10: 0.1}},
		Filesystems: []sysinfo.Filesystem{
			{Mount: "/", Device: "/dev/vda1", Type: "ext4", SizeBytes: 40 * gib, UsedBytes: 16 * gib, AvailBytes: 22 * gib,
				Inodes: 2621440, InodesUsed: 180000, InodesFree: 2441440},
			{Mount: "/var", Device: "/dev/vdb1", Type: "xfs", SizeBytes: 100 * gib, UsedBytes: 30 * gib, AvailBytes: 70 * gib,
				Inodes: 52428800, InodesUsed: 90000, InodesFree: 52338800},
		},
		Disks: []sysinfo.Disk{
			{Name: "vda", ReadsPerSec: 2, WritesPerSec: 10, WriteBytesSec: 200 * 1024, UtilPercent: 1.5, AwaitMS: 0.8},
			{Name: "vdb", ReadsPerSec: 5, WritesPerSec: 20, WriteBytesSec: 800 * 1024, UtilPercent: 3, AwaitMS: 1.1},
		},
		Limits: sysinfo.Limits{FileHandles: 3200, FileHandlesMax: 9223372036854775807, Tasks: 412, Processes: 190, PIDMax: 4194304, ThreadsMax: 126000},
		Network: sysinfo.Network{
			TCPRetransPerSec: 0.1, TCPOutSegsPerSec: 120,
			Interfaces: []sysinfo.Interface{{Name: "eth0", Up: true}},
			Resolvers:  []sysinfo.Resolver{{Address: "192.0.2.53", Answered: true, LatencyMS: 3}},
			ResolvConf: "/etc/resolv.conf",
		},
		TopCPU: []sysinfo.Process{
			{PID: 812, Comm: "nginx", Cmdline: "nginx: worker process", User: "www-data", State: "S", CPUPercent: 4, RSSBytes: 30 * mib},
			{PID: 640, Comm: "postgres", Cmdline: "postgres: main", User: "postgres", State: "S", CPUPercent: 2, RSSBytes: 400 * mib},
		},
		TopMemory: []sysinfo.Process{
			{PID: 640, Comm: "postgres", Cmdline: "postgres: main", User: "postgres", State: "S", CPUPercent: 2, RSSBytes: 400 * mib},
		},
	}
}

func tbl(title string, cols []string, rows ...[]string) catalog.Table {
	return catalog.Table{Title: title, Columns: cols, Rows: rows, TotalRows: len(rows)}
}

func result(entry string, params map[string]string, tables ...catalog.Table) *catalog.Result {
	start := time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)
	if params == nil {
		params = map[string]string{}
	}
	params["duration"] = "4s"
	return &catalog.Result{Entry: entry, Params: params, Start: start, End: start.Add(4 * time.Second), Tables: tables}
}

// The table shapes below are the catalog entries' own (titles and
// columns); TestTablesTheRulesReadExist checks them against the entries'
// sources.

func exitResult(params map[string]string, byStatus [][]string, samples ...[]string) *catalog.Result {
	var ab [][]string
	counts := map[string]int{}
	var order []string
	for _, r := range byStatus {
		if r[1] != "exit 0" {
			if counts[r[0]] == 0 {
				order = append(order, r[0])
			}
			counts[r[0]] += int(num(r[2]))
		}
	}
	for _, c := range order {
		ab = append(ab, []string{c, itoa(counts[c])})
	}
	res := result("exit", params,
		tbl("process exits by command and status", []string{"comm", "status", "count", "mean_lifetime"}, byStatus...),
		tbl("abnormal exits (non-zero code or fatal signal) by command", []string{"comm", "count"}, ab...))
	s := tbl("abnormal exits", []string{"pid", "ppid", "uid", "comm", "status", "lifetime"}, samples...)
	res.Samples = &s
	return res
}

func openResult(params map[string]string, failByPath [][]string, samples ...[]string) *catalog.Result {
	byErr := map[string]int{}
	var order []string
	for _, r := range failByPath {
		if byErr[r[1]] == 0 {
			order = append(order, r[1])
		}
		byErr[r[1]] += int(num(r[2]))
	}
	var errRows [][]string
	for _, e := range order {
		errRows = append(errRows, []string{e, itoa(byErr[e])})
	}
	res := result("open", params,
		tbl("top opened paths", []string{"path", "opens", "failed"}),
		tbl("failed opens by path", []string{"path", "error", "count"}, failByPath...),
		tbl("failed opens by error", []string{"error", "count"}, errRows...),
		tbl("opens by process", []string{"pid", "comm", "opens", "failed"}))
	s := tbl("sample opens", []string{"pid", "tid", "uid", "comm", "syscall", "flags", "result", "path"}, samples...)
	res.Samples = &s
	return res
}

func syscallsResult(params map[string]string, failures [][]string, byProcess ...[]string) *catalog.Result {
	return result("syscalls", params,
		tbl("syscalls by count", []string{"syscall", "count", "errors", "total_us", "avg_ns"}),
		tbl("processes by syscall count", []string{"pid", "comm", "syscalls", "errors", "total_us", "top_syscall"}),
		tbl("syscalls by process", []string{"pid", "comm", "syscall", "count", "errors", "total_us"}, byProcess...),
		tbl("failures by syscall and errno", []string{"syscall", "error", "count"}, failures...))
}

func biolatencyResult(disks [][]string, procs ...[]string) *catalog.Result {
	return result("biolatency", nil,
		tbl("I/O by disk and operation", []string{"disk", "op", "count", "bytes", "avg_us", "p99_us", "errors"}, disks...),
		tbl("top processes by I/O (submitter)", []string{"pid", "comm", "disk", "op", "count", "bytes", "avg_us"}, procs...))
}

func runqlatResult(p50, p99, count uint64, procs ...[]string) *catalog.Result {
	res := result("runqlat", nil, tbl("processes by run-queue wait", []string{"pid", "comm", "waits", "total_us", "avg_us", "p50_us", "p99_us"}, procs...))
	res.Histograms = []catalog.Histogram{{Title: "run-queue latency", Unit: "us", Count: count, P50: p50, P90: p99, P99: p99}}
	return res
}

func itoa(n int) string { return strconv.Itoa(n) }

// cmd is a command that ran, with its stages as safeexec reports them.
func cmd(line, stdout string) safeexec.Result {
	r := safeexec.Result{Command: line, Stdout: stdout}
	if plan, err := safeexec.Validate(line); err == nil {
		for _, it := range plan.Items {
			for _, st := range it.Pipeline.Stages {
				r.Stages = append(r.Stages, st.Argv)
			}
		}
	}
	return r
}

// investigate runs the engine over one round of results and returns the
// resolution it must give (Final is set).
func investigate(t *testing.T, e *Engine, issue string, f *sysinfo.Facts, cmds []safeexec.Result, traces ...*catalog.Result) protocol.Reply {
	t.Helper()
	inv := &brain.Investigation{Issue: issue, Facts: f, Final: true}
	if len(cmds)+len(traces) > 0 {
		r := brain.Round{Reply: protocol.Reply{Type: protocol.Diagnostic}}
		for _, c := range cmds {
			r.Commands = append(r.Commands, brain.CommandRun{Result: c})
		}
		for _, tr := range traces {
			r.Traces = append(r.Traces, brain.TraceRun{Result: tr})
		}
		inv.Rounds = []brain.Round{r}
	}
	raw, err := e.Next(context.Background(), inv)
	require.NoError(t, err)
	reply, err := protocol.Parse(raw)
	require.NoError(t, err, raw)
	require.Equal(t, protocol.Resolution, reply.Type, raw)
	return reply
}

func testEngine(t *testing.T) *Engine {
	t.Helper()
	e := New(Options{PlaybookDir: t.TempDir()})
	require.Empty(t, e.Warnings())
	return e
}

func hasLine(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}
