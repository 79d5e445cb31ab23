package pagefaults

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// threadFaults reads a thread's fault counters, minflt and majflt of
// /proc/self/task/<tid>/stat. The kernel raises them in mm_account_fault
// together with the page-fault perf events the entry counts; only faults
// taken for get_user_pages raise the counters without an event, and the
// workloads here take none.
func threadFaults(t *testing.T, tid uint32) (minor, major uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	require.NoError(t, err)
	// After the comm in parentheses: state ppid pgrp session tty_nr
	// tpgid flags minflt cminflt majflt ...
	i := bytes.LastIndexByte(b, ')')
	require.Positive(t, i, "%q", b)
	f := strings.Fields(string(b[i+1:]))
	require.Greater(t, len(f), 9, "%q", b)
	return catalogtest.Num(t, f[7]), catalogtest.Num(t, f[9])
}

// traceThread traces the faults of th's tid while th runs work, and
// returns the result with the faults th's own counters took over the same
// window. th is blocked in read(2) from before the first reading and the
// trace's start until work begins, and again from before the trace stops
// until after the second reading: whatever th faults on, work or the Go
// code that runs it, lands in both counts or in neither. getrusage on the
// thread around work would leave out the Go code between the thread's
// wake-up and work, and after work until it blocks again, which the trace
// sees: there the runtime can touch memory for the first time (e.g. a new
// M when the thread hands its P off), a few faults off.
func traceThread(t *testing.T, k *catalog.Kernel, th *catalogtest.Thread, work func()) (res *catalog.Result, minor, major uint64) {
	t.Helper()
	th.Idle(t)
	min0, maj0 := threadFaults(t, th.TID)
	res = catalogtest.Run(t, k, Entry{}, catalog.Params{TID: th.TID}, func() {
		th.Do(work)
		th.Idle(t)
	})
	min1, maj1 := threadFaults(t, th.TID)
	return res, min1 - min0, maj1 - maj0
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

	th := catalogtest.LockedThread(t)
	res, wantMinor, wantMajor := traceThread(t, k, th, func() {
		for i := 0; i < pages; i++ {
			mem[i*page] = 1
		}
	})
	major, minor := stats(t, res)
	t.Logf("thread's counters: minor %d major %d; trace: minor %d major %d", wantMinor, wantMajor, minor, major)
	assert.Equal(t, wantMinor, minor, "trace and the kernel's per-thread counter")
	assert.Equal(t, wantMajor, major)
	// One per page, plus any the thread took in Go code around them
	// (stack, scheduler), which the equality above already accounts for.
	assert.GreaterOrEqual(t, minor, uint64(pages))
	assert.Equal(t, res.Events, minor+major)
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
	th := catalogtest.LockedThread(t)
	res, wantMinor, wantMajor := traceThread(t, k, th, func() {
		for i := 0; i < pages; i++ {
			sink += mem[i*page]
		}
	})
	_ = sink
	major, minor := stats(t, res)
	t.Logf("thread's counters: minor %d major %d; trace: minor %d major %d", wantMinor, wantMajor, minor, major)
	assert.Equal(t, wantMinor, minor, "trace and the kernel's per-thread counter")
	assert.Equal(t, wantMajor, major)
	// Each page faults once. Whether it counts major is the kernel's
	// call, not the trace's: in the qemu guests one or two of the 64 come
	// out minor, their page already read when the fault was counted (e.g.
	// a retried fault that found it uptodate), in the counters and perf
	// alike. Most must still be major, or the workload did not work, and
	// every page must now be in the page cache.
	assert.LessOrEqual(t, major, uint64(pages))
	assert.Greater(t, major, uint64(pages/2), "the dropped pages must fault major")
	require.NoError(t, mincore(mem, resident))
	for i, r := range resident {
		assert.NotZero(t, r&1, "page %d was read", i)
	}
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
