package biolatency

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
func TestStructLayout(t *testing.T) {
	assert.Equal(t, uintptr(8), unsafe.Sizeof(biolatencyBioDiskKey{}))
	assert.Equal(t, uintptr(144), unsafe.Sizeof(biolatencyBioDiskStats{}))
	assert.Equal(t, uintptr(28), unsafe.Sizeof(biolatencyBioProcKey{}))
	assert.Equal(t, uintptr(24), unsafe.Sizeof(biolatencyBioProcStats{}))
	assert.Equal(t, uintptr(16), unsafe.Sizeof(biolatencyBioRqKey{}))
	assert.Equal(t, uintptr(32), unsafe.Sizeof(biolatencyBioStart{}))
}

func TestDev(t *testing.T) {
	d := MakeDev(259, 3)
	assert.Equal(t, uint32(259), d.Major())
	assert.Equal(t, uint32(3), d.Minor())
	assert.Equal(t, "write", OpWrite.String())
	assert.Equal(t, "other", Op(42).String())
}

func TestBuildResult(t *testing.T) {
	sda, nvme := MakeDev(8, 0), MakeDev(259, 0)
	var slots [catalog.Log2Slots]uint32
	slots[3], slots[10] = 9, 1 // 8-15 µs, 1024-2047 µs
	disks := map[DiskKey]DiskStats{
		{sda, OpRead}:   {Count: 10, Bytes: 40960, TotalNs: 100_000, Slots: slots},
		{nvme, OpWrite}: {Count: 3, Bytes: 12288, TotalNs: 30_000, Errors: 1},
	}
	procs := map[ProcKey]ProcStats{
		{PID: 7, Comm: "dd", Dev: sda, Op: OpRead}:         {Count: 10, Bytes: 40960, TotalNs: 100_000},
		{PID: 9, Comm: "postgres", Dev: nvme, Op: OpWrite}: {Count: 3, Bytes: 12288, TotalNs: 30_000},
	}
	names := map[Dev]string{sda: "sda", nvme: "nvme0n1"}
	res := buildResult(catalog.Params{}, disks, procs, func(d Dev) string { return names[d] })
	assert.Equal(t, uint64(13), res.Events)
	assert.Equal(t, []string{"sda", "read", "10", "40960", "10.0", res.Tables[0].Rows[0][5], "0"}, res.Tables[0].Rows[0])
	assert.Equal(t, []string{"nvme0n1", "write", "3", "12288", "10.0", "0", "1"}, res.Tables[0].Rows[1])
	assert.Equal(t, []string{"7", "dd", "sda", "read", "10", "40960", "10.0"}, res.Tables[1].Rows[0])
	require.Len(t, res.Histograms, 2)
	h := res.Histograms[0]
	assert.Equal(t, "block I/O latency: sda read", h.Title)
	assert.Equal(t, uint64(10), h.Count)
	assert.GreaterOrEqual(t, h.P99, uint64(1024))
	assert.Contains(t, res.Summary, "13 block I/Os on 2 disks, 1 errors")
	assert.Contains(t, res.Summary, "slowest p99: sda read")
}

func TestDiskNameFallsBackToNumbers(t *testing.T) {
	assert.Equal(t, "4095:1048575", DiskName(MakeDev(4095, 1<<20-1)))
}

// loopDevice attaches a fresh loop device over a temp file and detaches it
// when the test ends.
func loopDevice(t *testing.T) (string, Dev) {
	t.Helper()
	back, err := os.Create(filepath.Join(t.TempDir(), "backing"))
	require.NoError(t, err)
	defer back.Close()
	require.NoError(t, back.Truncate(8<<20))
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("no /dev/loop-control: the loop driver is not available")
	}
	require.NoError(t, err)
	defer ctl.Close()
	// Other processes may grab the free device between the two ioctls:
	// LOOP_CONFIGURE then fails with EBUSY and we ask again.
	for try := 0; try < 20; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		require.NoError(t, err, "LOOP_CTL_GET_FREE")
		path := "/dev/loop" + strconv.Itoa(n)
		lf, err := os.OpenFile(path, os.O_RDWR, 0)
		require.NoError(t, err)
		cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue
		}
		require.NoError(t, err, "LOOP_CONFIGURE %s", path)
		t.Cleanup(func() {
			assert.NoError(t, unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0), "LOOP_CLR_FD")
			lf.Close()
		})
		var st unix.Stat_t
		require.NoError(t, unix.Stat(path, &st))
		return path, MakeDev(unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	t.Fatal("no free loop device after 20 tries")
	return "", 0
}

// directIO writes n 4 KiB blocks with O_DIRECT (each followed by
// fdatasync) and reads them back, so each is exactly one block request.
func directIO(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	require.NoError(t, err)
	defer f.Close()
	// O_DIRECT needs an aligned buffer: a page from mmap is.
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	require.NoError(t, err)
	defer unix.Munmap(buf)
	fd := int(f.Fd())
	for i := 0; i < n; i++ {
		buf[0] = byte(i)
		w, err := unix.Pwrite(fd, buf, int64(i)*4096)
		require.NoError(t, err)
		require.Equal(t, 4096, w)
		require.NoError(t, unix.Fdatasync(fd))
	}
	for i := 0; i < n; i++ {
		r, err := unix.Pread(fd, buf, int64(i)*4096)
		require.NoError(t, err)
		require.Equal(t, 4096, r)
		require.Equal(t, byte(i), buf[0])
	}
}

func row(tab catalog.Table, cells ...string) []string {
next:
	for _, r := range tab.Rows {
		for i, c := range cells {
			if c != "" && r[i] != c {
				continue next
			}
		}
		return r
	}
	return nil
}

func hist(res *catalog.Result, title string) *catalog.Histogram {
	for i := range res.Histograms {
		if res.Histograms[i].Title == title {
			return &res.Histograms[i]
		}
	}
	return nil
}

func checkExact(t *testing.T, res *catalog.Result, disk string, n int) {
	t.Helper()
	require.Zero(t, res.Lost)
	pid, comm := catalog.U(os.Getpid()), filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}
	for _, op := range []string{"write", "read"} {
		r := row(res.Tables[0], disk, op)
		require.NotNil(t, r, "no %s %s row in %v", disk, op, res.Tables[0].Rows)
		assert.Equal(t, strconv.Itoa(n), r[2], "%s count", op)
		assert.Equal(t, strconv.Itoa(n*4096), r[3], "%s bytes", op)
		assert.Equal(t, "0", r[6], "%s errors", op)
		h := hist(res, "block I/O latency: "+disk+" "+op)
		require.NotNil(t, h, "%s histogram", op)
		assert.Equal(t, uint64(n), h.Count, "%s histogram count", op)
		p := row(res.Tables[1], pid, comm, disk, op)
		require.NotNil(t, p, "no process row for %s in %v", op, res.Tables[1].Rows)
		assert.Equal(t, strconv.Itoa(n), p[4], "%s count by process", op)
	}
	for _, r := range res.Tables[1].Rows {
		assert.Equal(t, pid, r[0], "pid filter let another process through: %v", r)
	}
}

func TestBiolatencyLoopDeviceExact(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	path, dev := loopDevice(t)
	disk := DiskName(dev)
	require.Equal(t, filepath.Base(path), disk)
	const n = 24
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() { directIO(t, path, n) })
	t.Logf("%s: %s; disks %v", res.Attach, res.Summary, res.Tables[0].Rows)
	if catalog.TracepointExists("block/block_io_start") {
		assert.Contains(t, res.Attach, "block_io_start")
	}
	checkExact(t, res, disk, n)
}

// The pre-6.5 path (submitter from block_bio_queue) counts the same.
func TestBiolatencyBioQueueFallback(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	forceBioQueue = true
	defer func() { forceBioQueue = false }()
	path, dev := loopDevice(t)
	const n = 10
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() { directIO(t, path, n) })
	assert.Contains(t, res.Attach, "block_bio_queue")
	checkExact(t, res, DiskName(dev), n)
}

// Successful I/O does not pass the failed filter, nor I/O faster than an
// hour the min_latency one.
func TestBiolatencyFailedAndMinLatencyFilters(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	path, dev := loopDevice(t)
	disk := DiskName(dev)
	for _, p := range []catalog.Params{
		{PID: uint32(os.Getpid()), FailedOnly: true},
		{PID: uint32(os.Getpid()), MinLatency: time.Hour},
	} {
		res := catalogtest.Run(t, k, Entry{}, p, func() { directIO(t, path, 4) })
		assert.Nil(t, row(res.Tables[0], disk, ""), fmt.Sprintf("%+v: %v", p, res.Tables[0].Rows))
	}
}
