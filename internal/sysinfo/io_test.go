package sysinfo

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestParseProcIO(t *testing.T) {
	io, err := parseProcIO([]byte("rchar: 7783\nwchar: 38797312\nsyscr: 18\nsyscw: 37\nread_bytes: 4096\nwrite_bytes: 47214592\ncancelled_write_bytes: 0\n"))
	require.NoError(t, err)
	require.Equal(t, procIO{ReadBytes: 4096, WriteBytes: 47214592, Syscr: 18, Syscw: 37}, io)
	for _, in := range []string{"", "rchar: 1\n", "syscr: 1\nsyscw: 2\nread_bytes: 3\n", "syscr: 1\nsyscw: 2\nread_bytes: 3\nwrite_bytes: x\n"} {
		_, err := parseProcIO([]byte(in))
		require.Error(t, err, in)
	}
}

func TestParseFdinfoFlags(t *testing.T) {
	f, err := parseFdinfoFlags([]byte("pos:\t0\nflags:\t0110001\nmnt_id:\t25\nino:\t1234\n"))
	require.NoError(t, err)
	require.Equal(t, uint64(0110001), f)
	for _, in := range []string{"", "pos: 0\n", "flags:\t09\n", "flags:\n"} {
		_, err := parseFdinfoFlags([]byte(in))
		require.Error(t, err, in)
	}
}

func TestSyncKind(t *testing.T) {
	for _, c := range []struct {
		flags uint64
		want  string
	}{
		{unix.O_WRONLY, ""},
		{unix.O_RDWR | unix.O_CREAT | unix.O_APPEND, ""},
		{unix.O_WRONLY | unix.O_DSYNC, "O_DSYNC"},
		{unix.O_WRONLY | unix.O_SYNC, "O_SYNC"},
		{unix.O_RDONLY | unix.O_DIRECT, "O_DIRECT"},
		{unix.O_RDWR | unix.O_DIRECT | unix.O_DSYNC, "O_DSYNC|O_DIRECT"},
	} {
		require.Equal(t, c.want, syncKind(c.flags), "flags %o", c.flags)
	}
}

func TestParseProcStatBlkio(t *testing.T) {
	line := "7 (db) D 1 7 7 0 -1 4194560 1 0 0 0 10 5 0 0 20 0 8 0 500 1 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 345 0 0"
	p, err := parseProcStat([]byte(line))
	require.NoError(t, err)
	require.Equal(t, uint64(345), p.BlkioTicks, "field 42")
	require.Equal(t, "D", p.State)
	short, err := parseProcStat(fixture(t, "proc/42/stat"))
	require.NoError(t, err)
	require.Zero(t, short.BlkioTicks)
}

// TestTopIO: the storage bytes, system calls and block I/O delay of two
// samples become per-second rates; a process without storage I/O is left
// out, and so is a PID reused between the samples.
func TestTopIO(t *testing.T) {
	root := t.TempDir()
	// pid 10 holds a file open with O_DSYNC and one plain; its fd 2 is a
	// socket with O_DIRECT set, which says nothing about storage.
	for _, fd := range []struct {
		n      string
		target string
		flags  int
	}{
		{"0", "/dev/null", unix.O_RDONLY},
		{"1", "socket:[1234]", unix.O_RDWR | unix.O_DIRECT},
		{"3", "/var/lib/db/wal", unix.O_WRONLY | unix.O_DSYNC},
		{"4", "/var/lib/db/data", unix.O_RDWR},
		{"5", "/var/lib/db/table", unix.O_RDONLY | unix.O_DIRECT},
	} {
		dir := filepath.Join(root, "proc/10")
		require.NoError(t, os.MkdirAll(dir+"/fd", 0o755))
		require.NoError(t, os.MkdirAll(dir+"/fdinfo", 0o755))
		require.NoError(t, os.Symlink(fd.target, dir+"/fd/"+fd.n))
		require.NoError(t, os.WriteFile(dir+"/fdinfo/"+fd.n, fmt.Appendf(nil, "pos:\t0\nflags:\t0%o\nmnt_id:\t1\n", fd.flags), 0o644))
	}
	c := &collector{root: root, opts: Options{}.withDefaults()}
	at := time.Unix(1000, 0)
	a := sample{at: at, procs: map[int]procStat{
		10: {Comm: "db", StartTime: 5, BlkioTicks: 100},
		11: {Comm: "idle", StartTime: 6},
		12: {Comm: "reader", StartTime: 7},
		13: {Comm: "reused", StartTime: 8},
	}, ios: map[int]procIO{
		10: {ReadBytes: 0, WriteBytes: 1 << 20, Syscr: 5, Syscw: 10},
		11: {ReadBytes: 4096, WriteBytes: 0, Syscr: 100, Syscw: 100},
		12: {ReadBytes: 0, Syscr: 0},
		13: {WriteBytes: 0},
	}}
	b := sample{at: at.Add(2 * time.Second), procs: map[int]procStat{
		10: {Comm: "db", StartTime: 5, BlkioTicks: 250},
		11: {Comm: "idle", StartTime: 6},
		12: {Comm: "reader", StartTime: 7},
		13: {Comm: "reused", StartTime: 9},
	}, ios: map[int]procIO{
		10: {ReadBytes: 0, WriteBytes: 41 << 20, Syscr: 5, Syscw: 50},
		11: {ReadBytes: 4096, WriteBytes: 0, Syscr: 300, Syscw: 100},
		12: {ReadBytes: 8 << 20, Syscr: 2048},
		13: {WriteBytes: 1 << 30},
	}}
	f := &Facts{}
	c.processes(f, a, b, map[int]*procDetail{}, 2*time.Second)
	require.Equal(t, []int{10, 12}, pids(f.TopIO), "most bytes first; pid 11 read nothing from storage, pid 13 is another process now")
	db := f.TopIO[0]
	require.Equal(t, float64(20<<20), db.WriteBytesPerSec)
	require.Zero(t, db.ReadBytesPerSec)
	require.Equal(t, 20.0, db.WriteCallsPerSec)
	require.Equal(t, 75.0, db.IODelayPercent, "150 ticks of 10 ms in 2 s")
	require.Equal(t, []string{"/var/lib/db/wal (O_DSYNC)", "/var/lib/db/table (O_DIRECT)"}, db.SyncFiles)
	r := f.TopIO[1]
	require.Equal(t, float64(4<<20), r.ReadBytesPerSec)
	require.Equal(t, 1024.0, r.ReadCallsPerSec)
	require.Empty(t, r.SyncFiles, "no fdinfo")
}

// TestLiveTopIO: a child writing with O_DSYNC to a file on a disk shows
// in TopIO with its write rates and the file.
func TestLiveTopIO(t *testing.T) {
	dir := ""
	for _, base := range []string{"/var/tmp", os.TempDir()} {
		var st unix.Statfs_t
		if unix.Statfs(base, &st) == nil && st.Type != unix.TMPFS_MAGIC {
			d, err := os.MkdirTemp(base, "sysinfo-io-")
			require.NoError(t, err)
			t.Cleanup(func() { os.RemoveAll(d) })
			dir = d
			break
		}
	}
	if dir == "" {
		t.Skip("no directory on a block device: tmpfs writes never reach storage")
	}
	path := filepath.Join(dir, "wal")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=syncwrite", "SYSINFO_HELPER_PATH="+path)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)

	opts := liveOptions()
	opts.Interval = 500 * time.Millisecond
	f := Collect(context.Background(), opts)
	var p *Process
	for i := range f.TopIO {
		if f.TopIO[i].PID == cmd.Process.Pid {
			p = &f.TopIO[i]
		}
	}
	require.NotNil(t, p, "pid %d not among %+v", cmd.Process.Pid, f.TopIO)
	require.Positive(t, p.WriteBytesPerSec)
	require.Positive(t, p.WriteCallsPerSec)
	require.Equal(t, []string{path + " (O_DSYNC)"}, p.SyncFiles)
	require.Contains(t, f.Prompt(), fmt.Sprintf("- pid %d ", cmd.Process.Pid))
}

// helperSyncWrite writes 4 KiB blocks with O_DSYNC to
// $SYSINFO_HELPER_PATH, says "ready" after the first, and goes on until
// its stdin closes.
func helperSyncWrite() {
	f, err := os.OpenFile(os.Getenv("SYSINFO_HELPER_PATH"), os.O_CREATE|os.O_WRONLY|unix.O_DSYNC, 0o600)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	buf := make([]byte, 4096)
	write := func() {
		if _, err := f.WriteAt(buf, 0); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
	}
	write()
	fmt.Println("ready")
	done := make(chan struct{})
	go func() { _, _ = bufio.NewReader(os.Stdin).ReadString('\n'); close(done) }()
	for {
		select {
		case <-done:
			os.Exit(0)
		default:
			write()
		}
	}
}
