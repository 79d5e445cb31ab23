package open

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a workload child: it opens
// $NANNY_OPEN_PATH $NANNY_OPEN_COUNT times after setting
// RLIMIT_NOFILE to $NANNY_OPEN_NOFILE (when given), and exits 0 when
// every open failed with $NANNY_OPEN_ERRNO.
const helperEnv = "NANNY_OPEN_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helper())
	}
	os.Exit(m.Run())
}

func helper() int {
	path := os.Getenv("NANNY_OPEN_PATH")
	n, _ := strconv.Atoi(os.Getenv("NANNY_OPEN_COUNT"))
	want, _ := strconv.Atoi(os.Getenv("NANNY_OPEN_ERRNO"))
	if s := os.Getenv("NANNY_OPEN_UID"); s != "" {
		// Set here rather than through SysProcAttr.Credential: the test
		// binary sits in a root-only build directory a non-root exec
		// cannot reach. Leaving uid 0 drops every capability, so
		// DAC_OVERRIDE no longer hides EACCES.
		id, _ := strconv.Atoi(s)
		if syscall.Setgid(id) != nil || syscall.Setuid(id) != nil {
			return 2
		}
	}
	if s := os.Getenv("NANNY_OPEN_NOFILE"); s != "" {
		lim, _ := strconv.ParseUint(s, 10, 64)
		// A soft limit of 0 makes every new descriptor fail with EMFILE,
		// whatever the runtime already holds open.
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim, Max: lim}); err != nil {
			return 3
		}
	}
	for i := 0; i < n; i++ {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
			return 4
		}
		if !errors.Is(err, syscall.Errno(want)) {
			return 5
		}
	}
	return 0
}

// runHelper runs the helper from bin, the test binary or a copy of it.
func runHelper(t *testing.T, bin, path string, n int, errno syscall.Errno, nofile, uid string) {
	t.Helper()
	cmd := catalogtest.SelfCommandFrom(t, bin, helperEnv, "1")
	cmd.Env = append(cmd.Env, "NANNY_OPEN_PATH="+path,
		"NANNY_OPEN_COUNT="+strconv.Itoa(n), "NANNY_OPEN_ERRNO="+strconv.Itoa(int(errno)))
	if nofile != "" {
		cmd.Env = append(cmd.Env, "NANNY_OPEN_NOFILE="+nofile)
	}
	if uid != "" {
		cmd.Env = append(cmd.Env, "NANNY_OPEN_UID="+uid)
	}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helper: %s", out)
}

// The C struct open_event is 312 bytes; a layout change must show here.
func TestEventLayout(t *testing.T) {
	require.Equal(t, uintptr(312), unsafe.Sizeof(openOpenEvent{}))
	require.Equal(t, uintptr(320), unsafe.Sizeof(openPendingOpen{}))
}

func TestOpenCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	dir := t.TempDir()
	// Unique names, so other processes on the machine cannot change the
	// counts.
	missing := filepath.Join(dir, "nanny-open-missing")
	existing := filepath.Join(dir, "nanny-open-exists")
	require.NoError(t, os.WriteFile(existing, []byte("x"), 0o644))
	// Mode 0000 in a root-only directory: a non-root child gets EACCES.
	locked := filepath.Join(dir, "nanny-open-locked")
	require.NoError(t, os.WriteFile(locked, nil, 0))
	emfile := filepath.Join(dir, "nanny-open-emfile")
	require.NoError(t, os.WriteFile(emfile, nil, 0o644))

	const nMissing, nExisting, nDenied, nEmfile = 50, 20, 7, 9
	// A comm filter on a name this test alone has (not even another run of
	// this binary) keeps every open of the workload and of no one else:
	// other processes' busy paths cannot push ours out of the top-20
	// tables. The test's own opens come from a thread renamed to it, the
	// helpers from a copy of the test binary under it.
	comm := catalogtest.UniqueComm(t, "open")
	helperBin := catalogtest.SelfCopy(t, comm)
	th := catalogtest.LockedThread(t)
	th.SetComm(t, comm)
	var openErrs []error
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: comm}, func() {
		// No require on the thread: a failure there would never return
		// from Do. The errors are checked below.
		th.Do(func() {
			for i := 0; i < nMissing; i++ {
				_, err := os.Open(missing)
				openErrs = append(openErrs, err)
			}
			for i := 0; i < nExisting; i++ {
				f, err := os.Open(existing)
				if err == nil {
					err = f.Close()
				}
				openErrs = append(openErrs, err)
			}
		})
		runHelper(t, helperBin, locked, nDenied, unix.EACCES, "", catalog.U(catalogtest.UniqueUID()))
		runHelper(t, helperBin, emfile, nEmfile, unix.EMFILE, "0", "")
	})
	require.Len(t, openErrs, nMissing+nExisting)
	for _, err := range openErrs[:nMissing] {
		require.ErrorIs(t, err, os.ErrNotExist)
	}
	for _, err := range openErrs[nMissing:] {
		require.NoError(t, err)
	}
	require.Zero(t, res.Lost)
	paths, fails, errnos, procs := res.Tables[0], res.Tables[1], res.Tables[2], res.Tables[3]

	assert.Equal(t, []string{missing, "50", "50"}, catalogtest.Row(t, paths, missing))
	assert.Equal(t, []string{existing, "20", "0"}, catalogtest.Row(t, paths, existing))
	assert.Equal(t, []string{locked, "7", "7"}, catalogtest.Row(t, paths, locked))
	assert.Equal(t, []string{emfile, "9", "9"}, catalogtest.Row(t, paths, emfile))
	assert.Equal(t, []string{missing, "ENOENT", "50"}, catalogtest.Row(t, fails, missing))
	assert.Equal(t, []string{locked, "EACCES", "7"}, catalogtest.Row(t, fails, locked))
	assert.Equal(t, []string{emfile, "EMFILE", "9"}, catalogtest.Row(t, fails, emfile))
	// The Go runtime and the test framework open files of their own: at
	// least ours.
	assert.GreaterOrEqual(t, catalogtest.Num(t, catalogtest.Row(t, errnos, "ENOENT")[1]), uint64(nMissing))
	assert.GreaterOrEqual(t, catalogtest.Num(t, catalogtest.Row(t, errnos, "EACCES")[1]), uint64(nDenied))
	assert.GreaterOrEqual(t, catalogtest.Num(t, catalogtest.Row(t, errnos, "EMFILE")[1]), uint64(nEmfile))
	assert.GreaterOrEqual(t, catalogtest.Num(t, catalogtest.Row(t, procs, strconv.Itoa(os.Getpid()))[2]), uint64(nMissing+nExisting))
	assert.GreaterOrEqual(t, res.Events, uint64(nMissing+nExisting+nDenied+nEmfile))
	assert.Contains(t, res.Attach, "tracepoint")
}

// pid and failed-only together keep exactly the test's own failures; the
// uid filter keeps exactly the non-root child's opens of its path.
func TestOpenFilters(t *testing.T) {
	k := catalogtest.Kernel(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "nanny-open-missing2")
	existing := filepath.Join(dir, "nanny-open-exists2")
	require.NoError(t, os.WriteFile(existing, nil, 0o644))
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid()), FailedOnly: true}, func() {
		catalogtest.Repeat(5, func() {
			f, err := os.Open(existing)
			require.NoError(t, err)
			f.Close()
		})
		catalogtest.Repeat(3, func() {
			_, err := os.Open(missing)
			require.Error(t, err)
		})
	})
	require.Zero(t, res.Lost)
	// catalogtest.Run itself reads /proc/self/fdinfo inside the trace
	// window (and an fd may close under it): those are the only other
	// opens this process makes, so every row must be a failure.
	assert.Equal(t, []string{missing, "3", "3"}, catalogtest.Row(t, res.Tables[0], missing))
	for _, r := range res.Tables[0].Rows {
		assert.Equal(t, r[1], r[2], "failed-only kept a success: %v", r)
		assert.NotEqual(t, existing, r[0])
	}
	var ours int
	for _, r := range res.Samples.Rows {
		assert.Equal(t, strconv.Itoa(os.Getpid()), r[0])
		assert.NotEqual(t, "fd", r[6][:2])
		if r[7] == missing {
			ours++
			assert.Equal(t, "ENOENT", r[6])
			assert.Equal(t, "openat", r[4])
			assert.Equal(t, "O_RDONLY|O_CLOEXEC", r[5])
		}
	}
	assert.Equal(t, 3, ours)

	locked := filepath.Join(dir, "nanny-open-locked2")
	require.NoError(t, os.WriteFile(locked, nil, 0))
	// A uid of this test's alone: with nobody's (65534), the host's nobody
	// processes (or another run of this test) could fill the top-20 rows.
	uid := catalogtest.UniqueUID()
	self, err := os.Executable()
	require.NoError(t, err)
	res = catalogtest.Run(t, k, Entry{}, catalog.Params{UID: &uid}, func() {
		_, err := os.Open(missing) // root's: filtered out
		require.Error(t, err)
		runHelper(t, self, locked, 4, unix.EACCES, "", catalog.U(uid))
	})
	// The helper takes the uid just before its opens, and nothing else runs
	// as it: exactly those opens.
	assert.Equal(t, uint64(4), res.Events)
	assert.Equal(t, [][]string{{locked, "4", "4"}}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{locked, "EACCES", "4"}}, res.Tables[1].Rows)
	require.Len(t, res.Samples.Rows, 4)
	for _, r := range res.Samples.Rows {
		assert.Equal(t, catalog.U(uid), r[2])
	}
}

// openat2 carries its flags in a struct in user memory. Failed-only keeps
// the harness's own /proc/self/fdinfo opens out of the samples.
func TestOpenat2(t *testing.T) {
	k := catalogtest.Kernel(t)
	if !catalog.TracepointExists("syscalls/sys_enter_openat2") {
		t.Skip("no openat2 on this kernel")
	}
	path := filepath.Join(t.TempDir(), "nanny-open-at2")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid()), FailedOnly: true}, func() {
		catalogtest.Repeat(3, func() {
			_, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC, Mode: 0o600})
			require.ErrorIs(t, err, unix.EEXIST)
		})
	})
	require.Equal(t, []string{path, "3", "3"}, catalogtest.Row(t, res.Tables[0], path))
	var found int
	for _, r := range res.Samples.Rows {
		if r[7] == path {
			found++
			assert.Equal(t, "openat2", r[4])
			assert.Equal(t, "O_WRONLY|O_CLOEXEC|O_CREAT|O_EXCL", r[5])
			assert.Equal(t, "EEXIST", r[6])
		}
	}
	assert.Equal(t, 3, found, "samples: %v", res.Samples.Rows)
}

func TestAggregate(t *testing.T) {
	a := newAggregate()
	for i := 0; i < 15; i++ {
		a.add(Event{PID: 1, Comm: "a", Path: "/ok", Ret: 3})
	}
	a.add(Event{PID: 2, Comm: "b", Path: "/missing", Ret: -int32(unix.ENOENT)})
	a.add(Event{PID: 2, Comm: "b", Path: "/missing", Ret: -int32(unix.ENOENT)})
	a.add(Event{PID: 2, Comm: "b", Path: "/secret", Ret: -int32(unix.EACCES)})
	res := a.result(catalog.Params{})
	res.Compact()
	assert.Equal(t, "18 opens, 3 failed, 3 distinct paths; most opened: /ok (15); most common error: ENOENT (2)", res.Summary)
	assert.Equal(t, [][]string{{"/ok", "15", "0"}, {"/missing", "2", "2"}, {"/secret", "1", "1"}}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"/missing", "ENOENT", "2"}, {"/secret", "EACCES", "1"}}, res.Tables[1].Rows)
	assert.Equal(t, [][]string{{"ENOENT", "2"}, {"EACCES", "1"}}, res.Tables[2].Rows)
	assert.Equal(t, [][]string{{"1", "a", "15", "0"}, {"2", "b", "3", "3"}}, res.Tables[3].Rows)
	// Failures displace successful samples once the samples are full.
	var failedSamples int
	for _, r := range res.Samples.Rows {
		if r[6] != "fd 3" {
			failedSamples++
		}
	}
	assert.Equal(t, 3, failedSamples)
	assert.Equal(t, 18, res.Samples.TotalRows)
}

func TestFlagString(t *testing.T) {
	for flags, want := range map[uint64]string{
		unix.O_RDONLY: "O_RDONLY",
		unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC | unix.O_CLOEXEC: "O_WRONLY|O_CLOEXEC|O_CREAT|O_TRUNC",
		unix.O_RDWR | unix.O_SYNC:                                    "O_RDWR|O_SYNC",
		unix.O_RDONLY | 1<<30:                                        "O_RDONLY|0x40000000",
		unix.O_RDWR | unix.O_TMPFILE:                                 "O_RDWR|O_DIRECTORY|O_TMPFILE",
		unix.O_PATH | unix.O_DIRECTORY:                               "O_RDONLY|O_DIRECTORY|O_PATH",
	} {
		assert.Equal(t, want, FlagString(flags), "%#x", flags)
	}
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{Port: 80}.Validate(Info), "open does not support the port filter")
}

func TestDecodeShortRecord(t *testing.T) {
	var rec openOpenEvent
	require.Error(t, catalog.Decode(make([]byte, 10), &rec))
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(openOpenEvent{}))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec openOpenEvent
		if catalog.Decode(raw, &rec) != nil {
			return
		}
		a := newAggregate()
		a.add(decodeEvent(&rec))
		res := a.result(catalog.Params{})
		res.Compact()
		_ = FlagString(rec.Flags)
	})
}

// With the ring buffer pretended missing, events come through the perf
// buffer with the same exact counts. Filtered by the test's pid: a busy
// machine's failed opens (every dynamic program's loader probes missing
// paths) would outrank the row and overflow the perf buffer.
func TestOpenPerfBufferFallback(t *testing.T) {
	catalogtest.Kernel(t)
	k := catalog.NewKernel(nil)
	k.Disable[catalog.FeatureRingBuf] = true
	missing := filepath.Join(t.TempDir(), "nanny-open-pb")
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() {
		catalogtest.Repeat(30, func() {
			_, err := os.Open(missing)
			require.Error(t, err)
		})
	})
	assert.Contains(t, res.Attach, "perf buffer")
	assert.Zero(t, res.Lost)
	assert.Equal(t, []string{missing, "ENOENT", "30"}, catalogtest.Row(t, res.Tables[1], missing))
}
