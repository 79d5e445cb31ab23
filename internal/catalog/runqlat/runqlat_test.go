package runqlat

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The C structs' sizes; a layout change must show here.
func TestLayout(t *testing.T) {
	assert.Equal(t, uintptr(16), unsafe.Sizeof(runqlatRunqStart{}))
	assert.Equal(t, uintptr(4*catalog.Log2Slots), unsafe.Sizeof(runqlatHist{}))
	assert.Equal(t, uintptr(136), unsafe.Sizeof(runqlatProcHist{}))
}

// switches reads a thread's voluntary + involuntary context switches and
// whether it is asleep.
func switches(t *testing.T, tid int) (n uint64, sleeping bool) {
	t.Helper()
	dir := "/proc/self/task/" + strconv.Itoa(tid)
	status, err := os.ReadFile(dir + "/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
			c, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			require.NoError(t, err)
			n += c
		}
	}
	stat, err := os.ReadFile(dir + "/stat")
	require.NoError(t, err)
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return n, fields[0] == "S"
}

// blockedIn reports whether the thread is asleep in read(fd): its
// /proc/<tid>/syscall names the syscall it is blocked in (the number, then
// the arguments in hex).
func blockedIn(t *testing.T, tid, fd int) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/syscall")
	require.NoError(t, err)
	f := strings.Fields(string(data))
	return len(f) > 1 && f[0] == strconv.Itoa(unix.SYS_READ) && f[1] == "0x"+strconv.FormatInt(int64(fd), 16)
}

// awaitBlocked returns the thread's switch count once it is asleep in
// read(fd), where only a write to the pipe wakes it. Asleep alone is not
// enough: the Go runtime parks a thread for moments on its own locks, and
// a count taken in such a sleep is followed by a wake the trace may not
// see (before it attached, or after it detached), one switch too many.
func awaitBlocked(t *testing.T, tid, fd int) uint64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, sleeping := switches(t, tid)
		if sleeping && blockedIn(t, tid, fd) {
			// Still in the same sleep: the count is the one of this sleep.
			if m, _ := switches(t, tid); m == n && blockedIn(t, tid, fd) {
				return n
			}
		}
		require.True(t, time.Now().Before(deadline), "thread %d never blocked in read(%d)", tid, fd)
		time.Sleep(time.Millisecond)
	}
}

// voluntarySwitches is the calling thread's count of switches it made by
// blocking.
func voluntarySwitches(t *testing.T) int64 {
	var ru unix.Rusage
	require.NoError(t, unix.Getrusage(unix.RUSAGE_THREAD, &ru))
	return ru.Nvcsw
}

// gate is a pipe a locked thread blocks on in a plain read(2), which
// os.Pipe would turn into a netpoller park.
type gate struct{ r, w int }

func newGate(t *testing.T) gate {
	var fds [2]int
	require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC))
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return gate{fds[0], fds[1]}
}

func (g gate) wait() {
	var b [1]byte
	for {
		if _, err := unix.Read(g.r, b[:]); err != unix.EINTR {
			return
		}
	}
}

func (g gate) open(t *testing.T) {
	_, err := unix.Write(g.w, []byte{1})
	require.NoError(t, err)
}

type contention struct {
	tid    int
	window uint64 // switches of the sleeper while it slept/woke N times
	total  uint64 // switches from before the trace to after it
}

const sleeps = 50

// contend pins three spinning threads and a sleeper to one CPU; inside
// the trace the sleeper sleeps and wakes `sleeps` times, each time waiting
// behind the spinners. The sleeper's tid is known before the trace starts,
// so the trace can filter on it.
//
// A nanosleep is a sleep only when the thread left the CPU for it: under
// qemu without KVM the vCPU can stop between arming the timer and
// schedule(), the timer has expired when it runs again, and the thread
// goes on without switching (50 nanosleeps once gave 47 switches). So the
// sleeper counts a nanosleep only when its voluntary switches
// (getrusage RUSAGE_THREAD) went up across it.
func contend(t *testing.T, k *catalog.Kernel, params func(tid int) catalog.Params) (*catalog.Result, *contention) {
	t.Helper()
	var set unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &set))
	cpu := 0
	for !set.IsSet(cpu) {
		cpu++
	}
	pin := func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its goroutine
		var one unix.CPUSet
		one.Set(cpu)
		require.NoError(t, unix.SchedSetaffinity(0, &one))
	}

	var stop atomic.Bool
	var spinners sync.WaitGroup
	for i := 0; i < 3; i++ {
		spinners.Add(1)
		go func() {
			defer spinners.Done()
			pin()
			for !stop.Load() {
			}
		}()
	}
	defer func() { stop.Store(true); spinners.Wait() }()

	c := &contention{}
	begin, release := newGate(t), newGate(t)
	tidCh, done := make(chan int), make(chan uint64)
	go func() {
		pin()
		tid := unix.Gettid()
		tidCh <- tid
		begin.wait()
		c0, _ := switches(t, tid)
		for slept, tries := 0, 0; slept < sleeps; tries++ {
			require.Less(t, tries, 100*sleeps, "%d of %d nanosleeps left the CPU", slept, tries)
			v := voluntarySwitches(t)
			require.NoError(t, unix.Nanosleep(&unix.Timespec{Nsec: 200_000}, nil))
			if voluntarySwitches(t) > v {
				slept++
			}
		}
		c1, _ := switches(t, tid)
		done <- c1 - c0
		release.wait()
	}()
	c.tid = <-tidCh
	before := awaitBlocked(t, c.tid, begin.r)
	res := catalogtest.Run(t, k, Entry{}, params(c.tid), func() {
		begin.open(t)
		c.window = <-done
		// Blocked again: nothing of it runs until the trace is stopped.
		awaitBlocked(t, c.tid, release.r)
	})
	c.total = awaitBlocked(t, c.tid, release.r) - before
	release.open(t)
	return res, c
}

// Every switch of the sleeper inside the window is followed by a switch
// back in, and each one of those is a recorded wait; no wait is recorded
// without a switch-in, and the sleeper switched in at most `total` times.
//
// Classic tracepoints match a wakeup to its sleep through the pid alone;
// in about one run in three one wait of the window goes unmatched there,
// so that mode is held to the N sleeps instead (exact: false).
func checkSleeperWaits(t *testing.T, res *catalog.Result, c *contention, exact bool) {
	t.Helper()
	require.Zero(t, res.Lost)
	require.GreaterOrEqual(t, c.window, uint64(sleeps))
	require.NotEmpty(t, res.Histograms, res.Summary)
	all := res.Histograms[0]
	t.Logf("%s: %d waits recorded, sleeper switched %d times in the window, %d during the trace; p50 %d us p99 %d us",
		res.Attach, all.Count, c.window, c.total, all.P50, all.P99)
	assert.Equal(t, "run-queue latency", all.Title)
	assert.Equal(t, "us", all.Unit)
	assert.GreaterOrEqual(t, all.Count, uint64(sleeps))
	if exact {
		// With task pointers even the wake from a sleep begun before the
		// trace is seen: one wait per switch-in, exactly.
		assert.GreaterOrEqual(t, all.Count, c.window, "window switches %d", c.window)
		assert.Equal(t, c.total, all.Count, "switches during the trace")
	} else {
		assert.LessOrEqual(t, all.Count, c.total, "switches during the trace")
	}

	pid := strconv.Itoa(os.Getpid())
	require.Len(t, res.Tables[0].Rows, 1, "only the sleeper's process: %v", res.Tables[0].Rows)
	r := res.Tables[0].Rows[0]
	assert.Equal(t, pid, r[0])
	assert.Equal(t, strconv.FormatUint(all.Count, 10), r[2], "per-process waits = all waits")
	require.Len(t, res.Histograms, 2)
	assert.Equal(t, all.Count, res.Histograms[1].Count)
	assert.Contains(t, res.Histograms[1].Title, "pid "+pid)
	// Behind three spinners the sleeper waits; it cannot all be sub-us.
	assert.Positive(t, all.P99)
}

func TestRunqlatSleeperTpBTF(t *testing.T) {
	k := catalogtest.Kernel(t)
	res, c := contend(t, k, func(tid int) catalog.Params { return catalog.Params{TID: uint32(tid)} })
	assert.Equal(t, "tp_btf", res.Attach)
	checkSleeperWaits(t, res, c, true)
}

// With tp_btf pretended missing the same programs run as raw_tp.
func TestRunqlatRawTracepointFallback(t *testing.T) {
	catalogtest.Kernel(t)
	k := catalog.NewKernel(nil)
	k.Disable[catalog.FeatureTpBTF] = true
	res, c := contend(t, k, func(tid int) catalog.Params { return catalog.Params{TID: uint32(tid)} })
	assert.Equal(t, "raw_tp", res.Attach)
	checkSleeperWaits(t, res, c, true)
}

// Classic tracepoints: the first wake (from a sleep begun before the
// trace) is missed, the window is still counted in full.
func TestRunqlatTracepointFallback(t *testing.T) {
	catalogtest.Kernel(t)
	k := catalog.NewKernel(nil)
	k.Disable[catalog.FeatureTpBTF] = true
	k.Disable[catalog.FeatureRawTracepoint] = true
	res, c := contend(t, k, func(tid int) catalog.Params { return catalog.Params{TID: uint32(tid)} })
	assert.Equal(t, "tracepoint", res.Attach)
	assert.NotEmpty(t, res.Notes)
	checkSleeperWaits(t, res, c, false)
}

// pid (the whole test process, spinners included) and min_latency.
func TestRunqlatPIDAndMinLatency(t *testing.T) {
	k := catalogtest.Kernel(t)
	res, _ := contend(t, k, func(int) catalog.Params { return catalog.Params{PID: uint32(os.Getpid())} })
	require.Len(t, res.Tables[0].Rows, 1)
	assert.Equal(t, strconv.Itoa(os.Getpid()), res.Tables[0].Rows[0][0])
	assert.GreaterOrEqual(t, res.Events, uint64(sleeps))

	res, _ = contend(t, k, func(tid int) catalog.Params { return catalog.Params{TID: uint32(tid), MinLatency: time.Hour} })
	assert.Zero(t, res.Events)
	assert.Empty(t, res.Tables[0].Rows)
}

func TestSnapshotResult(t *testing.T) {
	slots := func(pairs ...int) []uint64 {
		s := make([]uint64, catalog.Log2Slots)
		for i := 0; i < len(pairs); i += 2 {
			s[pairs[i]] = uint64(pairs[i+1])
		}
		return s
	}
	s := &Snapshot{
		All: slots(3, 90, 10, 10),
		Procs: map[uint32]Proc{
			7: {Comm: "a", TotalUs: 20000, Slots: slots(10, 10)},
			9: {Comm: "b", TotalUs: 900, Slots: slots(3, 90)},
		},
	}
	res := s.result(catalog.Params{})
	assert.Equal(t, uint64(100), res.Events)
	assert.Equal(t, []string{"pid", "comm", "waits", "total_us", "avg_us", "p50_us", "p99_us"}, res.Tables[0].Columns)
	assert.Equal(t, []string{"7", "a", "10", "20000", "2000", "1535", "2036"}, res.Tables[0].Rows[0])
	assert.Equal(t, []string{"9", "b", "90", "900", "10", "11", "14"}, res.Tables[0].Rows[1])
	require.Len(t, res.Histograms, 3)
	assert.Equal(t, "run-queue latency of a (pid 7)", res.Histograms[1].Title)
	assert.Contains(t, res.Summary, "100 waits for a CPU by 2 processes")
	assert.Contains(t, res.Summary, "most delayed: a (pid 7) waited 20000 us in total")

	empty := (&Snapshot{All: slots(), Procs: map[uint32]Proc{}}).result(catalog.Params{})
	assert.Zero(t, empty.Events)
	assert.Empty(t, empty.Histograms)
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{FailedOnly: true}.Validate(Info), "runqlat does not support the failed filter")
}
