package tracepoint

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary a workload process: it calls getppid the
// given number of times and exits, under the name of the file it runs from.
const helperEnv = "NANNY_TRACEPOINT_HELPER_GETPPID"

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			os.Exit(2)
		}
		getppid(n)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// getppid is the workload: no Go runtime path or test helper calls it, so
// every hit of sys_enter_getppid in this process is one of ours.
func getppid(n int) {
	for i := 0; i < n; i++ {
		unix.Getppid()
	}
}

const getppidTP = "syscalls:sys_enter_getppid"

// The C struct tp_key is 20 bytes; a layout change must show here.
func TestKeyLayout(t *testing.T) {
	require.Equal(t, uintptr(20), unsafe.Sizeof(tracepointTpKey{}))
}

func TestParseTarget(t *testing.T) {
	want := Target{Category: "syscalls", Name: "sys_enter_getppid"}
	for _, s := range []string{
		"syscalls:sys_enter_getppid",
		"tracepoint:syscalls:sys_enter_getppid",
		"t:syscalls:sys_enter_getppid",
		"syscalls/sys_enter_getppid",
		"  syscalls:sys_enter_getppid\n",
	} {
		got, err := ParseTarget(s)
		require.NoError(t, err, s)
		assert.Equal(t, want, got, s)
	}
	assert.Equal(t, "syscalls:sys_enter_getppid", want.String())

	for _, c := range []struct{ in, why string }{
		{"", "not exactly one separator"},
		{"sched", "not exactly one separator"},
		{"sched:sched_switch:extra", "not exactly one separator"},
		{"a/b/c", "not exactly one separator"},
		{"tracepoint:sched", "not exactly one separator"},
		{":sched_switch", "empty category"},
		{"sched:", "empty name"},
		{"Sched:sched_switch", "category may only contain"},
		{"sched:sched-switch", "name may only contain"},
		{"../..:id", "category may only contain"},
		{"sched:*", "name may only contain"},
		{"sched:sched switch", "name may only contain"},
		{"kprobe:vfs_read", ""}, // parses, then fails as a missing tracepoint
		{"sched:" + strings.Repeat("a", 200), "longer than 128"},
	} {
		_, err := ParseTarget(c.in)
		if c.why == "" {
			assert.NoError(t, err, c.in)
			continue
		}
		require.Error(t, err, c.in)
		assert.Contains(t, err.Error(), c.why, c.in)
		assert.Contains(t, err.Error(), strconv.Quote(c.in), "the error names the target")
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"sched:sched_switch", "tracepoint:a:b", "a/b", "::", "../x:y", "t:t:t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			return
		}
		for _, part := range []string{tg.Category, tg.Name} {
			require.NotEmpty(t, part)
			require.Equal(t, -1, strings.IndexFunc(part, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_')
			}), "accepted %q", s)
		}
	})
}

// Bad requests fail before anything touches the kernel, so this runs
// without root.
func TestStartRejectsBadRequests(t *testing.T) {
	k := catalog.NewKernel(nil)
	for _, c := range []struct {
		p    catalog.Params
		want string
	}{
		{catalog.Params{}, "tracepoint needs a target"},
		{catalog.Params{Target: "sched"}, `tracepoint target "sched"`},
		{catalog.Params{Target: "sched:../../x"}, `tracepoint target "sched:../../x"`},
		{catalog.Params{Target: getppidTP, FailedOnly: true}, "does not support the failed filter"},
		{catalog.Params{Target: getppidTP, Port: 53}, "does not support the port filter"},
	} {
		tr, err := Entry{}.Start(context.Background(), k, c.p)
		require.Error(t, err, c.p)
		assert.Nil(t, tr)
		assert.Contains(t, err.Error(), c.want)
	}
}

func TestAggregateResult(t *testing.T) {
	a := aggregate{byProc: map[proc]uint64{}, maxProcs: 8192}
	a.add(proc{10, "nginx"}, 30)
	a.add(proc{11, "nginx"}, 20)
	a.add(proc{12, "curl"}, 40)
	a.add(proc{13, "idle"}, 0) // an entry with no hits is no row
	a.dropped = 3
	res := a.result(Target{"syscalls", "sys_enter_read"}, catalog.Params{Target: "syscalls:sys_enter_read"}, 2*time.Second)

	assert.Equal(t, uint64(90), res.Events)
	assert.Equal(t, uint64(3), res.Lost)
	assert.Equal(t, "syscalls:sys_enter_read fired 90 times in 2.0s (45.0/s) in 3 processes; most: curl (pid 12) 40", res.Summary)
	require.Len(t, res.Tables, 2)
	assert.Equal(t, [][]string{{"12", "curl", "40", "20.0"}, {"10", "nginx", "30", "15.0"}, {"11", "nginx", "20", "10.0"}}, res.Tables[0].Rows)
	assert.Equal(t, 3, res.Tables[0].TotalRows)
	assert.Equal(t, [][]string{{"nginx", "50", "2"}, {"curl", "40", "1"}}, res.Tables[1].Rows)
	require.Len(t, res.Notes, 1)
	assert.Contains(t, res.Notes[0], "3 hits not counted: more than 8192 distinct processes")
}

func TestAggregateTopN(t *testing.T) {
	a := aggregate{byProc: map[proc]uint64{}}
	for i := 1; i <= 50; i++ {
		a.add(proc{uint32(i), "p" + strconv.Itoa(i)}, uint64(i))
	}
	res := a.result(Target{"a", "b"}, catalog.Params{}, time.Second)
	res.Compact()
	require.Len(t, res.Tables[0].Rows, catalog.MaxRows)
	assert.Equal(t, 50, res.Tables[0].TotalRows)
	assert.Equal(t, []string{"50", "p50", "50", "50.0"}, res.Tables[0].Rows[0])
	assert.Empty(t, res.Notes)
}

// The test process calls getppid exactly n times; filtered by its pid the
// tracepoint counts exactly n, in one row under the test's comm.
func TestCountsExactlyByPID(t *testing.T) {
	k := catalogtest.Kernel(t)
	const n = 1000
	pid := uint32(os.Getpid())
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Target: getppidTP, PID: pid}, func() { getppid(n) })

	assert.Equal(t, uint64(n), res.Events)
	assert.Zero(t, res.Lost)
	assert.Equal(t, "tracepoint syscalls:sys_enter_getppid", res.Attach)
	require.Len(t, res.Tables[0].Rows, 1, "only the test process passes the pid filter")
	assert.Equal(t, []string{catalog.U(pid), catalogtest.SelfComm(t), catalog.U(n)}, res.Tables[0].Rows[0][:3])
	assert.Equal(t, []string{catalogtest.SelfComm(t), catalog.U(n), "1"}, res.Tables[1].Rows[0])
	assert.Equal(t, getppidTP, res.Params["target"])
}

// The accepted spellings of a target attach to the same tracepoint.
func TestTargetSpellings(t *testing.T) {
	k := catalogtest.Kernel(t)
	for i, target := range []string{"tracepoint:syscalls:sys_enter_getppid", "syscalls/sys_enter_getppid"} {
		n := 10 + i
		res := catalogtest.Run(t, k, Entry{}, catalog.Params{Target: target, PID: uint32(os.Getpid())}, func() { getppid(n) })
		assert.Equal(t, uint64(n), res.Events, target)
	}
}

// Two processes under one comm: the comm filter keeps both and nothing
// else on the machine, and each gets its own exact row. The comm is this
// test's alone, even beside another run of this binary: in the test
// process, a thread renamed to it makes the calls; the child runs from a
// copy of the test binary under it.
func TestCountsPerProcessWithCommFilter(t *testing.T) {
	k := catalogtest.Kernel(t)
	const parentN, childN = 300, 700
	comm := catalogtest.UniqueComm(t, "tp-ppid")
	childBin := catalogtest.SelfCopy(t, comm)
	th := catalogtest.LockedThread(t)
	th.SetComm(t, comm)
	var childPID int
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Target: getppidTP, Comm: comm}, func() {
		th.Do(func() { getppid(parentN) })
		cmd := catalogtest.SelfCommandFrom(t, childBin, helperEnv, strconv.Itoa(childN))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		childPID = cmd.Process.Pid
	})
	assert.Equal(t, uint64(parentN+childN), res.Events)
	assert.Equal(t, [][]string{
		{catalog.U(childPID), comm, catalog.U(childN)},
		{catalog.U(os.Getpid()), comm, catalog.U(parentN)},
	}, firstCols(res.Tables[0], 3))
	assert.Equal(t, []string{comm, catalog.U(parentN + childN), "2"}, res.Tables[1].Rows[0])
}

// A tid filter counts only the calls of one thread.
func TestCountsExactlyByTID(t *testing.T) {
	k := catalogtest.Kernel(t)
	th := catalogtest.LockedThread(t)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Target: getppidTP, TID: th.TID}, func() {
		getppid(50) // on the test goroutine's thread: not counted
		th.Do(func() { getppid(77) })
	})
	assert.Equal(t, uint64(77), res.Events)
}

func TestMissingTracepoint(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	for _, c := range []struct{ target, want string }{
		{"syscalls:sys_enter_nanny_nope", `tracepoint syscalls:sys_enter_nanny_nope does not exist on this kernel: category "syscalls" has no "sys_enter_nanny_nope"`},
		{"syscalls:getppid", `(similar: syscalls:sys_enter_getppid, syscalls:sys_exit_getppid)`},
		{"nannynope:thing", `tracepoint nannynope:thing does not exist on this kernel: no category "nannynope"`},
	} {
		tr, err := Entry{}.Start(context.Background(), k, catalog.Params{Target: c.target})
		require.Error(t, err, c.target)
		assert.Nil(t, tr)
		assert.True(t, catalog.IsUnsupported(err), "%v", err)
		assert.Contains(t, err.Error(), c.want)
	}
}

// ftrace's own events sit in tracefs like tracepoints but refuse BPF.
func TestNotATracepoint(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	if !catalog.TracepointExists("ftrace/function") {
		t.Skip("no ftrace:function event on this kernel")
	}
	before := catalogtest.OwnedBPF(t)
	_, err := Entry{}.Start(context.Background(), k, catalog.Params{Target: "ftrace:function"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ftrace:function is a trace event BPF tracepoint programs cannot attach to")
	// Nothing stays loaded after a failed start.
	catalogtest.RequireReleased(t, before, catalogtest.OwnedBPF(t))
}

func firstCols(tab catalog.Table, n int) [][]string {
	out := make([][]string, len(tab.Rows))
	for i, r := range tab.Rows {
		out[i] = r[:n]
	}
	return out
}
