package syscalls

import (
	"os"
	"runtime"
	"strconv"
	"testing"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The C structs' sizes; a layout change must show here.
func TestLayout(t *testing.T) {
	assert.Equal(t, uintptr(24), unsafe.Sizeof(syscallsScStat{}))
	assert.Equal(t, uintptr(8), unsafe.Sizeof(syscallsProcKey{}))
	assert.Equal(t, uintptr(40), unsafe.Sizeof(syscallsProcStat{}))
	assert.Equal(t, uintptr(8), unsafe.Sizeof(syscallsErrKey{}))
	assert.Equal(t, uintptr(4*catalog.Log2Slots), unsafe.Sizeof(syscallsHist{}))
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		arch string
		nr   uint32
		want string
	}{
		{"amd64", 0, "read"}, {"amd64", 3, "close"}, {"amd64", 110, "getppid"}, {"amd64", 262, "newfstatat"},
		{"arm64", 57, "close"}, {"arm64", 63, "read"}, {"arm64", 173, "getppid"}, {"arm64", 25, "fcntl"},
		{"arm64", 79, "newfstatat"}, {"arm64", 435, "clone3"}, {"amd64", 435, "clone3"},
		{"amd64", 100000, "syscall_100000"}, {"riscv64", 1, "syscall_1"},
	} {
		assert.Equal(t, c.want, Name(c.arch, c.nr), "%s %d", c.arch, c.nr)
	}
}

// The table of the build architecture agrees with x/sys/unix, which has
// its numbers from another source (the kernel's syscall tables).
func TestNamesMatchXSys(t *testing.T) {
	if _, ok := syscallTables[runtime.GOARCH]; !ok {
		t.Skipf("no table for %s", runtime.GOARCH)
	}
	for nr, name := range map[uintptr]string{
		unix.SYS_READ: "read", unix.SYS_WRITE: "write", unix.SYS_CLOSE: "close", unix.SYS_GETPPID: "getppid",
		unix.SYS_OPENAT: "openat", unix.SYS_FUTEX: "futex", unix.SYS_EPOLL_PWAIT: "epoll_pwait",
		unix.SYS_CLONE3: "clone3", unix.SYS_IO_URING_ENTER: "io_uring_enter", unix.SYS_EXIT_GROUP: "exit_group",
	} {
		assert.Equal(t, name, localName(uint32(nr)))
	}
}

// From a locked OS thread, filtered by its tid: getppid (never called by
// the Go runtime) exactly N times and close(-1) exactly M times.
func TestSyscallsCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(unix.Gettid())
	const n, m = 1000, 37
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{TID: tid}, func() {
		for i := 0; i < n; i++ {
			unix.Getppid()
		}
		for i := 0; i < m; i++ {
			require.ErrorIs(t, unix.Close(-1), unix.EBADF)
		}
	})
	require.Zero(t, res.Lost)
	assert.Equal(t, "tracepoint", res.Attach)

	sc := row(t, res.Tables[0], 0, "getppid")
	assert.Equal(t, strconv.Itoa(n), sc[1])
	assert.Equal(t, "0", sc[2])
	cl := row(t, res.Tables[0], 0, "close")
	assert.Equal(t, strconv.Itoa(m), cl[2], "close errors")

	pid := strconv.Itoa(os.Getpid())
	var pair []string
	for _, r := range res.Tables[2].Rows {
		if r[0] == pid && r[2] == "getppid" {
			pair = r
		}
	}
	require.NotNil(t, pair, "pid %s getppid in %v", pid, res.Tables[2].Rows)
	assert.Equal(t, strconv.Itoa(n), pair[3])
	assert.Equal(t, pid, row(t, res.Tables[1], 0, pid)[0])

	ebadf := row(t, res.Tables[3], 0, "close")
	assert.Equal(t, []string{"close", "EBADF", strconv.Itoa(m)}, ebadf)

	h := hist(t, res, "getppid latency")
	assert.Equal(t, uint64(n), h.Count)
	assert.Equal(t, "ns", h.Unit)
	assert.Positive(t, h.P99)
	assert.GreaterOrEqual(t, res.Events, uint64(n+m))
}

// failed keeps only failures, min_latency only slow calls.
func TestSyscallsFilters(t *testing.T) {
	k := catalogtest.Kernel(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := uint32(unix.Gettid())
	const n, m = 200, 11
	work := func() {
		for i := 0; i < n; i++ {
			unix.Getppid()
		}
		for i := 0; i < m; i++ {
			_ = unix.Close(-1)
		}
	}
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{TID: tid, FailedOnly: true}, work)
	for _, r := range res.Tables[0].Rows {
		assert.Equal(t, r[1], r[2], "failed-only: every counted call failed: %v", r)
		assert.NotEqual(t, "getppid", r[0])
	}
	assert.Equal(t, []string{"close", "EBADF", strconv.Itoa(m)}, row(t, res.Tables[3], 0, "close"))

	// No getppid takes an hour.
	res = catalogtest.Run(t, k, Entry{}, catalog.Params{TID: tid, MinLatency: 3600e9}, work)
	assert.Zero(t, res.Events)
	assert.Empty(t, res.Histograms)
}

func TestSnapshotResult(t *testing.T) {
	s := newSnapshot()
	s.BySyscall[0] = Stats{Count: 10, Errors: 2, TotalNs: 10000}
	s.BySyscall[3] = Stats{Count: 5, Errors: 5, TotalNs: 500}
	s.ByProc[ProcKey{42, 0}] = ProcStats{Stats{7, 2, 7000}, "a"}
	s.ByProc[ProcKey{42, 3}] = ProcStats{Stats{5, 5, 500}, "a"}
	s.ByProc[ProcKey{43, 0}] = ProcStats{Stats{3, 0, 3000}, "b"}
	s.ByErrno[ErrKey{3, uint32(unix.EBADF)}] = 5
	s.ByErrno[ErrKey{0, uint32(unix.EAGAIN)}] = 2
	slots := make([]uint64, catalog.Log2Slots)
	slots[10] = 10
	s.Hists[0] = slots
	res := s.result(catalog.Params{}, func(nr uint32) string { return Name("amd64", nr) })
	assert.Equal(t, uint64(15), res.Events)
	assert.Equal(t, [][]string{{"read", "10", "2", "10", "1000"}, {"close", "5", "5", "0", "100"}}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"42", "a", "12", "7", "7", "read"}, {"43", "b", "3", "0", "3", "read"}}, res.Tables[1].Rows)
	assert.Equal(t, []string{"42", "a", "read", "7", "2", "7"}, res.Tables[2].Rows[0])
	assert.Equal(t, [][]string{{"close", "EBADF", "5"}, {"read", "EAGAIN", "2"}}, res.Tables[3].Rows)
	require.Len(t, res.Histograms, 2)
	assert.Equal(t, uint64(10), res.Histograms[0].Count)
	assert.Equal(t, "read latency", res.Histograms[1].Title)
	assert.Contains(t, res.Summary, "15 syscalls (7 failed) of 2 kinds from 2 processes; most frequent: read (10); top failure: close EBADF (5)")

	empty := newSnapshot().result(catalog.Params{}, localName)
	assert.Zero(t, empty.Events)
	assert.Empty(t, empty.Histograms)
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{Port: 80}.Validate(Info), "syscalls does not support the port filter")
}

// The cost a traced syscall pays: compare with -run=^$ -bench=. as root
// (traced) and the same loop untraced (BenchmarkGetppidUntraced).
func BenchmarkGetppidTraced(b *testing.B) {
	k := catalogtest.Kernel(b)
	tr, err := Entry{}.Start(b.Context(), k, catalog.Params{})
	require.NoError(b, err)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		unix.Getppid()
	}
	b.StopTimer()
	_, err = tr.Stop()
	require.NoError(b, err)
}

func BenchmarkGetppidUntraced(b *testing.B) {
	for i := 0; i < b.N; i++ {
		unix.Getppid()
	}
}

func row(t *testing.T, tab catalog.Table, col int, key string) []string {
	t.Helper()
	for _, r := range tab.Rows {
		if r[col] == key {
			return r
		}
	}
	t.Fatalf("%s: no row %q in %v", tab.Title, key, tab.Rows)
	return nil
}

func hist(t *testing.T, res *catalog.Result, title string) catalog.Histogram {
	t.Helper()
	for _, h := range res.Histograms {
		if h.Title == title {
			return h
		}
	}
	t.Fatalf("no histogram %q", title)
	return catalog.Histogram{}
}
