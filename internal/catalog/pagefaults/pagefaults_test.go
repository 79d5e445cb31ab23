package pagefaults

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The C struct fault_stats is 32 bytes; a layout change must show here.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(32), unsafe.Sizeof(pagefaultsFaultStats{}))
}

// faultThread runs work on one locked OS thread and reports the thread's
// own fault counters (getrusage RUSAGE_THREAD) around it. The thread waits
// for go before and stays parked until release after, so with a tid
// filter the trace sees exactly what the thread did between the two
// readings.
// faultThread runs work on a locked thread, so that a tid filter sees
// exactly its faults, which run also measures with the thread's rusage.
type faultThread struct {
	*catalogtest.Thread
	work func()
}

func newFaultThread(t *testing.T, work func()) *faultThread {
	return &faultThread{catalogtest.LockedThread(t), work}
}

// run returns the minor and major faults of work.
func (ft *faultThread) run() (d [2]int64) {
	ft.Do(func() {
		var before, after unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_THREAD, &before)
		ft.work()
		_ = unix.Getrusage(unix.RUSAGE_THREAD, &after)
		d = [2]int64{after.Minflt - before.Minflt, after.Majflt - before.Majflt}
	})
	return d
}

func stats(t *testing.T, res *catalog.Result) (major, minor uint64) {
	t.Helper()
	tab := res.Tables[1]
	require.Len(t, tab.Rows, 1, "tid filter keeps one process: %v", tab.Rows)
	r := tab.Rows[0]
	require.Equal(t, strconv.Itoa(os.Getpid()), r[0])
	maj, err := strconv.ParseUint(r[2], 10, 64)
	require.NoError(t, err)
	min, err := strconv.ParseUint(r[3], 10, 64)
	require.NoError(t, err)
	return maj, min
}

// Writing K fresh anonymous pages takes exactly one minor fault each
// (huge pages are ruled out with MADV_NOHUGEPAGE). The trace must agree
// exactly with the kernel's own per-thread counter.
func TestMinorFaultsExactly(t *testing.T) {
	for _, ioctl := range []bool{false, true} {
		t.Run(map[bool]string{false: "bpf_link", true: "ioctl"}[ioctl], func(t *testing.T) {
			forceIoctl = ioctl
			defer func() { forceIoctl = false }()
			testMinorFaults(t, map[bool]string{false: "bpf_link", true: "ioctl"}[ioctl])
		})
	}
}

func testMinorFaults(t *testing.T, mode string) {
	k := catalogtest.Kernel(t)
	if mode == "bpf_link" && !catalogtest.PerfLinks(t) {
		// The entry falls back; the other subtest forces the same path.
		mode = "ioctl"
	}
	const pages = 4096 // fast enough to exceed any perf throttling rate
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, pages*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	defer unix.Munmap(mem)
	require.NoError(t, unix.Madvise(mem, unix.MADV_NOHUGEPAGE))

	ft := newFaultThread(t, func() {
		for i := 0; i < pages; i++ {
			mem[i*page] = 1
		}
	})
	var got [2]int64
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{TID: ft.TID}, func() { got = ft.run() })
	major, minor := stats(t, res)
	t.Logf("rusage: minor %d major %d; trace: minor %d major %d", got[0], got[1], minor, major)
	assert.Equal(t, uint64(got[0]), minor, "trace and the kernel's per-thread counter")
	assert.Equal(t, uint64(got[1]), major)
	assert.GreaterOrEqual(t, minor, uint64(pages))
	// A few more may come from the thread's own Go code (stack, the
	// rusage struct); the mapping itself gives exactly one per page.
	assert.LessOrEqual(t, minor, uint64(pages+8))
	assert.Zero(t, major)
	assert.Equal(t, res.Events, minor)
	assert.Contains(t, res.Attach, "perf_event")
	assert.Contains(t, res.Attach, mode)
}

// Reading K pages of a file whose page cache was dropped takes one major
// fault each: MADV_RANDOM turns off read-ahead and fault-around has no
// cached neighbours to map.
func TestMajorFaultsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	dir := t.TempDir()
	var fs unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &fs))
	if fs.Type == unix.TMPFS_MAGIC {
		t.Skip("the temp dir is on tmpfs: its pages cannot be dropped, faults there are minor")
	}
	const pages = 64
	page := os.Getpagesize()
	path := filepath.Join(dir, "nanny-pagefaults-major")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Write(make([]byte, pages*page))
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))

	mem, err := unix.Mmap(int(f.Fd()), 0, pages*page, unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(mem)
	require.NoError(t, unix.Madvise(mem, unix.MADV_RANDOM))
	resident := make([]byte, pages)
	require.NoError(t, mincore(mem, resident))
	for i, r := range resident {
		if r&1 != 0 {
			t.Skipf("page %d stayed in the page cache after FADV_DONTNEED: cannot force major faults here", i)
		}
	}

	var sink byte
	touch := false
	ft := newFaultThread(t, func() {
		for i := 0; touch && i < pages; i++ {
			sink += mem[i*page]
		}
	})
	// A first run without the file faults in whatever run itself touches
	// (its stack, the rusage buffers), so the measured run faults only on
	// the file's pages: on 5.10 that was one more minor fault.
	ft.run()
	touch = true
	var got [2]int64
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{TID: ft.TID}, func() { got = ft.run() })
	_ = sink
	major, minor := stats(t, res)
	t.Logf("rusage: minor %d major %d; trace: minor %d major %d", got[0], got[1], minor, major)
	assert.Equal(t, uint64(got[0]), minor, "trace and the kernel's per-thread counter")
	assert.Equal(t, uint64(got[1]), major)
	// Each page faults exactly once. Whether it counts major is the
	// kernel's call, not the trace's: in the qemu guests one of the 64
	// comes out minor, its page already read when the fault was counted
	// (e.g. a retried fault that found it uptodate), in rusage and perf
	// alike. Most must still be major, or the workload did not work.
	assert.Equal(t, uint64(pages), major+minor, "one fault per page")
	assert.Greater(t, major, uint64(pages/2), "the dropped pages must fault major")
	assert.Equal(t, []string{strconv.Itoa(os.Getpid()), res.Tables[1].Rows[0][1], strconv.Itoa(int(major)), res.Tables[1].Rows[0][3]}, res.Tables[0].Rows[0])
}

// mincore reports which pages of mem are in the page cache (x/sys/unix
// has no wrapper).
func mincore(mem, vec []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

func TestResult(t *testing.T) {
	s := snapshot{procs: []Faults{
		{PID: 10, Comm: "db", Minor: 5, Major: 7},
		{PID: 11, Comm: "web", Minor: 100},
		{PID: 12, Comm: "backup", Minor: 1, Major: 30},
	}, dropped: 2}
	res := s.result(catalog.Params{})
	res.Compact()
	assert.Equal(t, "37 major and 106 minor page faults in 3 processes; most major faults: backup (12) with 30; most faults: web (11) with 100", res.Summary)
	assert.Equal(t, [][]string{{"12", "backup", "30", "1"}, {"10", "db", "7", "5"}}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"11", "web", "0", "100"}, {"12", "backup", "30", "1"}, {"10", "db", "7", "5"}}, res.Tables[1].Rows)
	assert.Equal(t, uint64(143), res.Events)
	assert.Contains(t, res.Notes[0], "2 faults not counted")
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{FailedOnly: true}.Validate(Info), "pagefaults does not support the failed filter")
}

// The pid filter keeps the whole process and nothing else.
func TestPIDFilter(t *testing.T) {
	k := catalogtest.Kernel(t)
	const pages = 1024
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, pages*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	defer unix.Munmap(mem)
	require.NoError(t, unix.Madvise(mem, unix.MADV_NOHUGEPAGE))
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() {
		for i := 0; i < pages; i++ {
			mem[i*page] = 1
		}
	})
	// Other threads of this process (runtime, harness) may add a few.
	_, minor := stats(t, res)
	assert.GreaterOrEqual(t, minor, uint64(pages))
}
