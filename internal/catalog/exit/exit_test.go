package exit

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helperEnv turns the test binary into a multi-threaded process that names
// itself and exits with a code, as its value "code|name" says: one process
// exit, however many threads end.
const helperEnv = "NANNY_EXIT_HELPER"

// helperComm is the helper's name, unique to this test process.
func helperComm(t *testing.T) string { return catalogtest.UniqueComm(t, "mt-exit") }

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		multiThreadedExit(spec)
	}
	os.Exit(m.Run())
}

func multiThreadedExit(spec string) {
	code, name, ok := strings.Cut(spec, "|")
	if !ok {
		os.Exit(100)
	}
	n, err := strconv.Atoi(code)
	if err != nil {
		os.Exit(100)
	}
	// /proc/self is the thread group leader: this names the process.
	if err := os.WriteFile("/proc/self/comm", []byte(name), 0); err != nil {
		os.Exit(101)
	}
	var ready sync.WaitGroup
	for i := 0; i < 4; i++ {
		ready.Add(1)
		go func() {
			runtime.LockOSThread() // each goroutine holds its own thread
			ready.Done()
			select {}
		}()
	}
	ready.Wait()
	os.Exit(n)
}

// The C structs: a layout change must show here, without root.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(48), unsafe.Sizeof(exitExitEvent{}))
	require.Equal(t, uintptr(20), unsafe.Sizeof(exitExitKey{}))
	require.Equal(t, uintptr(16), unsafe.Sizeof(exitExitVal{}))
	require.Equal(t, uintptr(catalog.Log2Slots*4), unsafe.Sizeof(exitHist{}))
}

func TestStatus(t *testing.T) {
	for _, c := range []struct {
		st       Status
		want     string
		abnormal bool
	}{
		{0, "exit 0", false},
		{3 << 8, "exit 3", true},
		{9, "SIGKILL", true},
		{11 | 0x80, "SIGSEGV (core dumped)", true},
	} {
		assert.Equal(t, c.want, c.st.String())
		assert.Equal(t, c.abnormal, c.st.Abnormal())
	}
}

// Filtered by the shell copy's name, the test's alone: a busy machine's
// other exits would outrank these rows in the top-20 tables and take the
// samples, and add to the totals.
func TestExitCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	comm := catalogtest.UniqueComm(t, "exit-sh")
	sh := catalogtest.CopyBinary(t, "/bin/sh", comm)
	const ok, code3, killed = 20, 10, 5
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: comm}, func() {
		catalogtest.Repeat(ok, func() { require.NoError(t, exec.Command(sh, "-c", "exit 0").Run()) })
		catalogtest.Repeat(code3, func() {
			err := exec.Command(sh, "-c", "exit 3").Run()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			require.Equal(t, 3, ee.ExitCode())
		})
		catalogtest.Repeat(killed, func() {
			err := exec.Command(sh, "-c", "kill -9 $$").Run()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
		})
	})
	require.Zero(t, res.Lost)
	byStatus := res.Tables[0]
	require.Len(t, byStatus.Rows, 3, "%v", byStatus.Rows)
	assert.Equal(t, uint64(ok), cell(t, byStatus, comm, "exit 0", 2))
	assert.Equal(t, uint64(code3), cell(t, byStatus, comm, "exit 3", 2))
	assert.Equal(t, uint64(killed), cell(t, byStatus, comm, "SIGKILL", 2))
	assert.Equal(t, [][]string{{comm, catalog.U(code3 + killed)}}, res.Tables[1].Rows)
	assert.Equal(t, uint64(ok+code3+killed), res.Events)
	require.Len(t, res.Histograms, 1)
	assert.Equal(t, uint64(ok+code3+killed), res.Histograms[0].Count)

	// Samples name the abnormal exits: the test is their parent.
	var sawKill, sawCode bool
	for _, r := range res.Samples.Rows {
		assert.Equal(t, comm, r[3])
		assert.Equal(t, catalog.U(os.Getpid()), r[1])
		sawKill = sawKill || r[4] == "SIGKILL"
		sawCode = sawCode || r[4] == "exit 3"
		assert.NotEqual(t, "exit 0", r[4], "normal exits are not samples")
	}
	assert.True(t, sawCode && sawKill, "samples: %v", res.Samples.Rows)
}

// A process of five threads that exits is one exit. Filtered by its
// name: unfiltered, a row of count 1 can be cut from a busy host's top
// rows. Its threads exit together, and where tracepoints run BPF
// preemptibly (7.x) the kernel now and then skips the program for a
// thread that exits while it runs on the same CPU for another: a run
// that lost the last thread must say so (Lost and a note), and a run
// that lost nothing must count exactly one exit. Runs repeat until one
// loses nothing (about one in seven loses some under TCG).
func TestExitMultithreadedCountedOnce(t *testing.T) {
	k := catalogtest.Kernel(t)
	name := helperComm(t)
	for attempt := 1; attempt <= 10; attempt++ {
		res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: name}, func() {
			cmd := catalogtest.SelfCommand(t, helperEnv, "7|"+name)
			err := cmd.Run()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			require.Equal(t, 7, ee.ExitCode())
		})
		if res.Lost > 0 {
			require.LessOrEqual(t, res.Events, uint64(1))
			require.NotEmpty(t, res.Notes)
			assert.Contains(t, strings.Join(res.Notes, "\n"), "thread exits not counted")
			t.Logf("attempt %d: %s", attempt, strings.Join(res.Notes, "; "))
			continue
		}
		assert.Equal(t, uint64(1), cell(t, res.Tables[0], name, "exit 7", 2))
		assert.Equal(t, uint64(1), res.Events)
		return
	}
	t.Fatal("every run lost thread exits")
}

func TestExitFilterFailedAndComm(t *testing.T) {
	k := catalogtest.Kernel(t)
	comm := catalogtest.UniqueComm(t, "exit-f")
	sh := catalogtest.CopyBinary(t, "/bin/sh", comm)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{FailedOnly: true, Comm: comm}, func() {
		catalogtest.Repeat(6, func() { require.NoError(t, exec.Command(sh, "-c", "exit 0").Run()) })
		catalogtest.Repeat(4, func() { require.Error(t, exec.Command(sh, "-c", "exit 2").Run()) })
		catalogtest.Repeat(2, func() { require.Error(t, exec.Command(sh, "-c", "kill -TERM $$").Run()) })
	})
	require.Zero(t, res.Lost)
	assert.Equal(t, uint64(6), res.Events)
	assert.Equal(t, uint64(4), cell(t, res.Tables[0], comm, "exit 2", 2))
	assert.Equal(t, uint64(2), cell(t, res.Tables[0], comm, "SIGTERM", 2))
	assert.Len(t, res.Tables[0].Rows, 2)
	assert.Len(t, res.Samples.Rows, 6)
}

// Each attach mode gives the same exact counts.
func TestExitAttachFallbacks(t *testing.T) {
	catalogtest.Kernel(t)
	for _, c := range []struct {
		mode    string
		disable []catalog.Feature
	}{
		{"raw_tp", []catalog.Feature{catalog.FeatureTpBTF}},
		{"tracepoint", []catalog.Feature{catalog.FeatureTpBTF, catalog.FeatureRawTracepoint, catalog.FeatureRingBuf}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			k := catalog.NewKernel(nil)
			for _, f := range c.disable {
				k.Disable[f] = true
			}
			comm := catalogtest.UniqueComm(t, "exit-fb")
			sh := catalogtest.CopyBinary(t, "/bin/sh", comm)
			res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: comm}, func() {
				catalogtest.Repeat(5, func() { require.NoError(t, exec.Command(sh, "-c", "exit 0").Run()) })
				catalogtest.Repeat(3, func() { require.Error(t, exec.Command(sh, "-c", "kill -9 $$").Run()) })
			})
			assert.Contains(t, res.Attach, c.mode)
			require.Zero(t, res.Lost)
			assert.Equal(t, uint64(5), cell(t, res.Tables[0], comm, "exit 0", 2))
			assert.Equal(t, uint64(3), cell(t, res.Tables[0], comm, "SIGKILL", 2))
			assert.Len(t, res.Samples.Rows, 3)
		})
	}
}

func TestAggregateResult(t *testing.T) {
	a := newAggregate()
	a.add("b", 0, 4, 4*time.Millisecond)
	a.add("b", 9, 2, time.Second)
	a.add("a", 1<<8, 3, 0)
	a.lifetime = make([]uint32, catalog.Log2Slots)
	a.lifetime[3] = 9
	res := a.result(catalog.Params{}, &sampler{})
	assert.Equal(t, uint64(9), res.Events)
	assert.Equal(t, "9 processes exited, 5 abnormally (2 by a fatal signal); most abnormal exits: a (3)", res.Summary)
	assert.Equal(t, []string{"b", "exit 0", "4", "1ms"}, res.Tables[0].Rows[0])
	assert.Equal(t, []string{"b", "SIGKILL", "2", "500ms"}, res.Tables[0].Rows[2])
	assert.Equal(t, [][]string{{"a", "3"}, {"b", "2"}}, res.Tables[1].Rows)
	assert.Equal(t, uint64(9), res.Histograms[0].Count)
}

func TestSamplerKeepsDistinctStatuses(t *testing.T) {
	var s sampler
	for i := 0; i < 30; i++ {
		s.add(Event{PID: int32(i), Comm: "a", Status: 1 << 8})
	}
	s.add(Event{PID: 100, Comm: "a", Status: 9})
	s.add(Event{PID: 101, Comm: "a", Status: 9})
	s.add(Event{PID: 102, Comm: "b", Status: 9})
	require.Len(t, s.events, catalog.MaxSamples)
	assert.Equal(t, uint64(33), s.seen)
	pids := map[int32]bool{}
	for _, e := range s.events {
		pids[e.PID] = true
	}
	assert.True(t, pids[0] && pids[100] && pids[102] && !pids[101], "%v", s.events)
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{Port: 80}.Validate(Info), "exit does not support the port filter")
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(exitExitEvent{}))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec exitExitEvent
		if catalog.Decode(raw, &rec) != nil {
			return
		}
		var s sampler
		s.add(decodeEvent(&rec))
		newAggregate().result(catalog.Params{}, &s).Compact()
	})
}

// cell returns column col of the row whose first cells are comm (and
// status, when given).
func cell(t *testing.T, tab catalog.Table, comm, status string, col int) uint64 {
	t.Helper()
	for _, r := range tab.Rows {
		if r[0] == comm && (status == "" || r[1] == status) {
			n, err := strconv.ParseUint(r[col], 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("%s: no row %s/%s in %v", tab.Title, comm, status, tab.Rows)
	return 0
}
