package fileio

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
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

// The C structs' sizes; a layout change must show here.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(16), unsafe.Sizeof(fileioFileKey{}))
	require.Equal(t, uintptr(72), unsafe.Sizeof(fileioFileStats{}))
	require.Equal(t, uintptr(16), unsafe.Sizeof(fileioFileId{}))
	require.Equal(t, uintptr(656), unsafe.Sizeof(fileioFileName{}))
	require.Equal(t, uintptr(24), unsafe.Sizeof(fileioPendingIo{}))
	require.Equal(t, uintptr(catalog.Log2Slots*4), unsafe.Sizeof(fileioHist{}))
}

func uniqueFile(t *testing.T, name string) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	return filepath.Join(dir, name)
}

// Write 37 x 1000 bytes plus one writev of 2 x 500, read them back with
// 38 preads of 1000, reads of 8192 until EOF (4 full, 1 partial, 1 empty)
// and one readv of 300+700: exact ops and bytes for this file and process.
func TestFileIOCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	path := uniqueFile(t, "nanny-fileio-data")
	chunk := bytes.Repeat([]byte("n"), 1000)
	const writes, total = 38, 38000

	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() {
		f, err := os.Create(path)
		require.NoError(t, err)
		defer f.Close()
		for i := 0; i < writes-1; i++ {
			n, err := f.Write(chunk)
			require.NoError(t, err)
			require.Equal(t, 1000, n)
		}
		n, err := unix.Writev(int(f.Fd()), [][]byte{chunk[:500], chunk[500:]})
		require.NoError(t, err)
		require.Equal(t, 1000, n)

		buf := make([]byte, 1000)
		for i := 0; i < writes; i++ {
			_, err := f.ReadAt(buf, int64(i*1000))
			require.NoError(t, err)
		}
		_, err = f.Seek(0, io.SeekStart)
		require.NoError(t, err)
		big := make([]byte, 8192)
		var got int
		for {
			n, err := f.Read(big)
			got += n
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.Equal(t, total, got)
		_, err = f.Seek(0, io.SeekStart)
		require.NoError(t, err)
		n, err = unix.Readv(int(f.Fd()), [][]byte{make([]byte, 300), make([]byte, 700)})
		require.NoError(t, err)
		require.Equal(t, 1000, n)
	})

	// 38 preads + 6 reads + 1 readv; 38000 + 38000 + 1000 bytes.
	r := row(t, res.Tables[0], strconv.Itoa(os.Getpid()), path)
	assert.Equal(t, []string{"file", path, "45", "77000", "38", "38000", "0"}, r[2:9])
	assert.NotEqual(t, "-", r[9])
	f := row(t, res.Tables[1], path)
	assert.Equal(t, []string{path, "file", "1", "45", "77000", "38", "38000"}, f)
	// Other reads and writes of this process (the harness reading
	// /proc/self/fdinfo) add to the histograms, never take away.
	assert.GreaterOrEqual(t, res.Histograms[0].Count, uint64(45))
	assert.GreaterOrEqual(t, res.Histograms[1].Count, uint64(38))
	assert.Equal(t, "tracepoint, in-kernel aggregation", res.Attach)
	assert.Zero(t, res.Lost)
}

// The writer has exited long before Stop reads the maps: its file still
// has its full path, because the kernel built it at first sight. A pipe
// shows as pipe:[inode], like /proc/<pid>/fd.
func TestFileIOShortLivedWriterAndPipe(t *testing.T) {
	k := catalogtest.Kernel(t)
	path := uniqueFile(t, "nanny-fileio-child")
	// A shell under a unique name: the comm filter keeps its I/O apart
	// from every other process's.
	comm := catalogtest.UniqueComm(t, "fio-sh")
	shell := catalogtest.CopyBinary(t, "/bin/sh", comm)
	var child int
	var pipeIno uint64
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: comm}, func() {
		cmd := exec.Command(shell, "-c", `printf hello > "$0"; printf 123456789 >> "$0"`, path)
		require.NoError(t, cmd.Run())
		child = cmd.Process.Pid
	})
	r := row(t, res.Tables[0], strconv.Itoa(child), path)
	assert.Equal(t, []string{comm, "file", path, "0", "0", "2", "14"}, r[1:8])
	for _, r := range res.Tables[0].Rows {
		assert.Equal(t, comm, r[1])
	}

	// The test process itself, by pid: its pipe.
	res = catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer r.Close()
		defer w.Close()
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(int(w.Fd()), &st))
		pipeIno = st.Ino
		for i := 0; i < 3; i++ {
			_, err := w.Write(make([]byte, 100))
			require.NoError(t, err)
		}
	})
	p := row(t, res.Tables[0], strconv.Itoa(os.Getpid()), fmt.Sprintf("pipe:[%d]", pipeIno))
	assert.Equal(t, []string{"pipe", "0", "0", "3", "300"}, []string{p[2], p[4], p[5], p[6], p[7]})
}

func TestFormatName(t *testing.T) {
	mk := func(mode, flags uint32, parts ...string) *fileioFileName {
		n := &fileioFileName{Mode: mode, Flags: flags}
		off := 0
		for _, p := range parts {
			for _, c := range []byte(p) {
				n.Buf[off] = int8(c)
				off++
			}
			off++
			n.Depth++
		}
		n.Size = uint32(off)
		return n
	}
	for _, c := range []struct {
		n    *fileioFileName
		want string
	}{
		{mk(unix.S_IFREG, nameRoot, "log", "nginx", "var"), "/var/nginx/log"},
		{mk(unix.S_IFREG, nameTruncated, "c", "b"), "…/b/c"},
		{mk(unix.S_IFDIR, nameRoot), "/"},
		{mk(unix.S_IFSOCK, namePseudo, "TCP"), "socket:[42] (TCP)"},
		{mk(unix.S_IFSOCK, namePseudo), "socket:[42]"},
		{mk(unix.S_IFIFO, namePseudo), "pipe:[42]"},
		{mk(0, namePseudo, "[eventfd]"), "anon_inode:[eventfd]"},
		{mk(0, 0), "inode 42"},
	} {
		assert.Equal(t, c.want, FormatName(c.n, 42))
	}
	// A size beyond the buffer is clamped, never a panic.
	n := mk(unix.S_IFREG, nameRoot, "x")
	n.Size = 1 << 20
	assert.Equal(t, "/x", FormatName(n, 1))
}

func TestResult(t *testing.T) {
	s := snapshot{usage: []Usage{
		{PID: 1, Comm: "db", File: "/data", Type: "file", Reads: 2, ReadBytes: 8192, ReadNs: 2000, Writes: 1, WriteBytes: 100, WriteNs: 500},
		{PID: 2, Comm: "log", File: "/log", Type: "file", Writes: 10, WriteBytes: 1000, WriteNs: 10000, Errors: 1},
		{PID: 2, Comm: "log", File: "/data", Type: "file", Reads: 1, ReadBytes: 10, ReadNs: 7},
	}, readHist: make([]uint32, catalog.Log2Slots), writeHist: make([]uint32, catalog.Log2Slots), dropped: 3}
	s.readHist[10] = 3
	res := s.result(catalog.Params{})
	res.Compact()
	assert.Equal(t, "3 reads (8202 bytes), 11 writes (1100 bytes), 1 errors on 2 files by 2 processes; most bytes: /data by db (1), 8292 bytes", res.Summary)
	assert.Equal(t, [][]string{
		{"1", "db", "file", "/data", "2", "8192", "1", "100", "0", "1000", "500"},
		{"2", "log", "file", "/log", "0", "0", "10", "1000", "1", "-", "1000"},
		{"2", "log", "file", "/data", "1", "10", "0", "0", "0", "7", "-"},
	}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"/data", "file", "2", "3", "8202", "1", "100"}, {"/log", "file", "1", "0", "0", "10", "1000"}}, res.Tables[1].Rows)
	assert.Equal(t, [][]string{{"1", "db", "1", "2", "8192", "1", "100"}, {"2", "log", "2", "1", "10", "10", "1000"}}, res.Tables[2].Rows)
	assert.Equal(t, uint64(14), res.Events)
	assert.Equal(t, uint64(3), res.Histograms[0].Count)
	assert.Contains(t, res.Notes[0], "3 updates dropped")
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{FailedOnly: true}.Validate(Info), "fileio does not support the failed filter")
}

func FuzzFormatName(f *testing.F) {
	f.Add(uint32(unix.S_IFREG), uint32(nameRoot), uint32(4), []byte("a\x00b\x00"))
	f.Add(uint32(unix.S_IFSOCK), uint32(namePseudo), uint32(600), []byte{})
	f.Fuzz(func(t *testing.T, mode, flags, size uint32, buf []byte) {
		var n fileioFileName
		n.Mode, n.Flags, n.Size = mode, flags, size
		for i := 0; i < len(buf) && i < len(n.Buf); i++ {
			n.Buf[i] = int8(buf[i])
		}
		_ = FormatName(&n, 7)
		_ = fileType(mode)
	})
}

// row finds the row whose first columns are keys.
func row(t *testing.T, tab catalog.Table, keys ...string) []string {
	t.Helper()
	for _, r := range tab.Rows {
		match := true
		for i, k := range keys {
			col := i
			if len(keys) == 2 && tab.Title == "I/O by process and file" && i == 1 {
				col = 3 // pid, comm, type, file
			}
			if r[col] != k {
				match = false
				break
			}
		}
		if match {
			return r
		}
	}
	t.Fatalf("%s: no row %v in %v", tab.Title, keys, tab.Rows)
	return nil
}
