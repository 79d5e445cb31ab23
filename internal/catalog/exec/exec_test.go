package exec

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// execveatEnv turns the test binary into a workload process that calls
// execveat from a thread that is not the leader: "missing|n|bin" fails n
// times on missing, then replaces itself with bin.
const execveatEnv = "NANNY_EXECVEAT_HELPER"

// init locks the main goroutine to the leader thread in the execveat
// helper: package init runs on the leader thread, while by TestMain the
// main goroutine may have moved to another one, letting the helper's
// goroutine land on the leader.
func init() {
	if os.Getenv(execveatEnv) != "" {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(execveatEnv); spec != "" {
		// The main goroutine keeps the leader thread (see init), so the
		// other goroutine runs on another thread.
		code := make(chan int)
		go func() { code <- execveatHelper(spec) }()
		os.Exit(<-code)
	}
	if spec := os.Getenv(commEnv); spec != "" {
		os.Exit(commParent(spec))
	}
	os.Exit(m.Run())
}

func execveatHelper(spec string) int {
	if unix.Gettid() == unix.Getpid() {
		return 103
	}
	f := strings.Split(spec, "|")
	if len(f) != 3 {
		return 100
	}
	n := 0
	for _, c := range f[1] {
		n = n*10 + int(c-'0')
	}
	for i := 0; i < n; i++ {
		if err := execveat(f[0], []string{f[0], "at"}); err != unix.ENOENT {
			return 101
		}
	}
	_ = execveat(f[2], []string{f[2], "at"})
	return 102 // the exec returned
}

func execveat(path string, argv []string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	args, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	env := []*byte{nil}
	cwd := unix.AT_FDCWD
	_, _, errno := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(cwd), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&args[0])), uintptr(unsafe.Pointer(&env[0])), 0, 0)
	return errno
}

// The C struct exec_event is 1324 bytes; a layout change must show here.
func TestEventLayout(t *testing.T) {
	require.Equal(t, uintptr(1324), unsafe.Sizeof(execExecEvent{}))
	require.Equal(t, 44, headerSize)
	require.Equal(t, uintptr(24), unsafe.Sizeof(execPendingExec{}))
}

func TestExecCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	truePath, err := exec.LookPath("true")
	require.NoError(t, err)
	// A comm filter on a name this test alone has keeps its execs and no
	// other's: however many programs a busy machine starts meanwhile, they
	// cannot push these rows out of the top-20 tables nor take the first
	// samples. The missing file is named the same, so its failed execs pass
	// the filter and count under it: as the program asked for.
	name := catalogtest.UniqueComm(t, "exec-ok")
	bin := catalogtest.CopyBinary(t, truePath, name)
	missing := filepath.Join(t.TempDir(), name)

	const ok, failed = 100, 7
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: name}, func() {
		catalogtest.Repeat(ok, func() { require.NoError(t, exec.Command(bin, "arg1", "two words").Run()) })
		catalogtest.Repeat(failed, func() { require.Error(t, exec.Command(missing).Run()) })
	})
	require.Zero(t, res.Lost)
	assert.Equal(t, uint64(ok+failed), res.Events)
	assert.Equal(t, [][]string{{name, catalog.U(ok + failed)}}, res.Tables[0].Rows, "a failed exec counts as the program asked for")
	assert.Equal(t, [][]string{{missing, "ENOENT", catalog.U(failed)}}, res.Tables[1].Rows)
	// The samples are the first execs, the successful ones, with their
	// argv.
	require.Len(t, res.Samples.Rows, catalog.MaxSamples)
	assert.Equal(t, ok+failed, res.Samples.TotalRows)
	for _, r := range res.Samples.Rows {
		assert.Equal(t, []string{catalog.U(os.Getpid()), catalog.U(os.Getuid()), name, "0", bin, bin + " arg1 two words"}, r[1:],
			"ppid is the test process")
	}
}

func TestExecFiltersFailedAndComm(t *testing.T) {
	k := catalogtest.Kernel(t)
	truePath, err := exec.LookPath("true")
	require.NoError(t, err)
	name := catalogtest.UniqueComm(t, "failcomm")
	bin := catalogtest.CopyBinary(t, truePath, name)
	missing := filepath.Join(t.TempDir(), name)
	// Failed-only with a comm keeps the failures of that program alone.
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{FailedOnly: true, Comm: name}, func() {
		catalogtest.Repeat(5, func() { require.NoError(t, exec.Command(bin).Run()) })
		catalogtest.Repeat(3, func() { require.Error(t, exec.Command(missing).Run()) })
	})
	assert.Equal(t, uint64(3), res.Events)
	assert.Equal(t, uint64(3), cell(t, res.Tables[1], missing, 2))
}

// commEnv turns the test binary into a parent named by the kernel after
// the copy it runs from: "n|path" execs path n times, waiting for each.
const commEnv = "NANNY_COMM_PARENT"

func commParent(spec string) int {
	n, path, ok := strings.Cut(spec, "|")
	if !ok {
		return 100
	}
	count, err := strconv.Atoi(n)
	if err != nil {
		return 100
	}
	for i := 0; i < count; i++ {
		_ = exec.Command(path).Run() // a missing path fails, as asked
	}
	return 0
}

// The comm filter is on the program started, whatever its parent is
// called: a parent with another comm starting the named binary is kept, a
// parent with the filter's comm starting another binary is not, and a
// failed exec counts by the basename of the path asked for. In both ways
// of finding a failed exec's arguments.
func TestExecCommIsTheProgramStarted(t *testing.T) {
	catalogtest.Kernel(t)
	truePath, err := exec.LookPath("true")
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	name, other := catalogtest.UniqueComm(t, "comm-tgt"), catalogtest.UniqueComm(t, "comm-oth")
	target := catalogtest.CopyBinary(t, truePath, name)
	otherBin := catalogtest.CopyBinary(t, truePath, other)
	// A parent that has the filter's comm: the test binary copied under it.
	namedParent := catalogtest.CopyBinary(t, self, name)
	missing := filepath.Join(t.TempDir(), name)
	missingOther := filepath.Join(t.TempDir(), other)
	parent := func(path, spec string) {
		cmd := exec.Command(path, "-test.run=^$")
		cmd.Env = append(os.Environ(), commEnv+"="+spec)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	eachExecMode(t, func(t *testing.T, k *catalog.Kernel, atEntry bool) {
		require.Equal(t, atEntry, keepAtEntry(k, catalog.Params{Comm: name}))
		var mu sync.Mutex
		var got []Event
		observe = func(ev Event) {
			mu.Lock()
			got = append(got, ev)
			mu.Unlock()
		}
		defer func() { observe = nil }()

		const ok, failed, otherOK, otherFailed = 12, 5, 4, 3
		res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: name}, func() {
			// Parents named after the test binary, not the filter.
			parent(self, strconv.Itoa(ok)+"|"+target)
			parent(self, strconv.Itoa(failed)+"|"+missing)
			// A parent named as the filter, starting other programs;
			// only its own start (the parent's exec) matches.
			parent(namedParent, strconv.Itoa(otherOK)+"|"+otherBin)
			parent(namedParent, strconv.Itoa(otherFailed)+"|"+missingOther)
		})
		require.Zero(t, res.Lost)
		mu.Lock()
		defer mu.Unlock()
		counts := map[string]int{}
		for _, ev := range got {
			counts[ev.Filename]++
			if ev.Ret == 0 {
				assert.Equal(t, name, ev.Comm, ev.Filename)
			}
		}
		assert.Equal(t, map[string]int{target: ok, missing: failed, namedParent: 2}, counts)
		assert.Equal(t, uint64(ok+failed+2), res.Events)
		assert.Equal(t, uint64(ok+failed+2), cell(t, res.Tables[0], name, 1))
		assert.Equal(t, uint64(failed), cell(t, res.Tables[1], missing, 2))
	})
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	err := catalog.Params{Port: 80}.Validate(Info)
	require.ErrorContains(t, err, "exec does not support the port filter")
}

// sampleRecord is a failed "ls -la" as the kernel sends it.
func sampleRecord() []byte {
	raw := make([]byte, headerSize+15)
	binary.NativeEndian.PutUint32(raw[16:], uint32(0xfffffffe)) // retval -2
	binary.NativeEndian.PutUint32(raw[20:], 1)                  // truncated
	binary.NativeEndian.PutUint16(raw[24:], 8)                  // filename_size
	binary.NativeEndian.PutUint16(raw[26:], 7)                  // args_size
	copy(raw[28:], "ls")
	copy(raw[headerSize:], "/bin/ls\x00ls\x00-la\x00")
	return raw
}

func TestDecodeRecord(t *testing.T) {
	var rec execExecEvent
	require.Error(t, decodeRecord(make([]byte, 10), &rec))
	raw := sampleRecord()
	require.NoError(t, decodeRecord(raw, &rec))
	ev := decodeEvent(&rec)
	assert.Equal(t, "/bin/ls", ev.Filename)
	assert.Equal(t, "ls", ev.Comm)
	assert.Equal(t, []string{"ls", "-la"}, ev.Args)
	assert.True(t, ev.ArgsTruncated)
	assert.Equal(t, int32(-2), ev.Ret)

	// Sizes past the end of the record are refused.
	require.ErrorContains(t, decodeRecord(raw[:len(raw)-1], &rec), "claims 8 bytes of filename and 7 of argv")
	binary.NativeEndian.PutUint16(raw[26:], 0xffff)
	require.Error(t, decodeRecord(append(raw, make([]byte, 1<<16)...), &rec))
}

func TestPendingSlots(t *testing.T) {
	for _, c := range []struct{ pidMax, want uint32 }{
		{0, 1024}, {300, 1024}, {32768, 32768}, {32769, 65536}, {4194304, 65536}, {1 << 31, 65536},
	} {
		assert.Equal(t, c.want, pendingSlots(c.pidMax), "pid_max %d", c.pidMax)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(execExecEvent{}))))
	f.Add([]byte{1, 2, 3})
	f.Add(sampleRecord())
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec execExecEvent
		if decodeRecord(raw, &rec) != nil {
			return
		}
		ev := decodeEvent(&rec)
		a := newAggregate()
		a.add(ev)
		a.result(catalog.Params{}).Compact()
	})
}

func cell(t *testing.T, tab catalog.Table, key string, col int) uint64 {
	t.Helper()
	r := row(t, tab, key)
	var n uint64
	for _, c := range r[col] {
		n = n*10 + uint64(c-'0')
	}
	return n
}

func row(t *testing.T, tab catalog.Table, key string) []string {
	t.Helper()
	for _, r := range tab.Rows {
		if r[0] == key {
			return r
		}
	}
	t.Fatalf("%s: no row %q in %v", tab.Title, key, tab.Rows)
	return nil
}

// With the ring buffer pretended missing, events come through the perf
// buffer with the same exact counts. Filtered by the copy's name: a busy
// machine's other execs would outrank its row, and could overflow the
// perf buffer.
func TestExecPerfBufferFallback(t *testing.T) {
	catalogtest.Kernel(t)
	k := catalog.NewKernel(nil)
	k.Disable[catalog.FeatureRingBuf] = true
	name := catalogtest.UniqueComm(t, "exec-pb")
	bin := catalogtest.CopyBinary(t, "/bin/true", name)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: name}, func() {
		catalogtest.Repeat(50, func() { require.NoError(t, exec.Command(bin).Run()) })
	})
	assert.Contains(t, res.Attach, "perf buffer")
	assert.Zero(t, res.Lost)
	assert.Equal(t, uint64(50), res.Events)
	assert.Equal(t, [][]string{{name, "50"}}, res.Tables[0].Rows)
}

// Which way the pointers of a failed exec are found: a filter must see the
// caller before exec, so it keeps them at entry; otherwise they are read
// back from the registers at exit where the kernel can.
func TestKeepAtEntry(t *testing.T) {
	k := catalogtest.Kernel(t)
	uid := uint32(0)
	for _, p := range []catalog.Params{{PID: 1}, {TID: 1}, {UID: &uid}, {Cgroup: "/"}, {PID: 1, Comm: "x"}} {
		assert.True(t, keepAtEntry(k, p), "%+v", p)
	}
	regs := k.Have(catalog.FeatureTaskPtRegs)
	// The comm filter is decided after the exec: no entry hook for it.
	for _, p := range []catalog.Params{{}, {FailedOnly: true}, {Comm: "x"}, {Comm: "x", FailedOnly: true}} {
		assert.Equal(t, !regs, keepAtEntry(k, p), "%+v", p)
	}
	off := catalog.NewKernel(nil)
	off.Disable[catalog.FeatureTaskPtRegs] = true
	assert.True(t, keepAtEntry(off, catalog.Params{}))
}

// Every field of every kind of exec, in both ways of finding a failed
// exec's arguments: execve and execveat, successful and failed, argv that
// fits and argv that does not. Every file has one name, the test's alone
// (in a directory of its own), and the trace is filtered by it: the comm
// filter is the one that leaves the way to the kernel (keepAtEntry), and
// it keeps every exec of the workload and none of a busy machine's, whose
// rows would otherwise push the workload's out of the top-20 tables.
func TestExecEveryPathExactly(t *testing.T) {
	catalogtest.Kernel(t)
	eachExecMode(t, runEveryPath)
}

// eachExecMode runs f in a subtest per way of finding a failed exec's
// arguments: the task's saved registers at exit (5.15+, skipped before)
// and the pointers kept at entry (forced by disabling the feature).
func eachExecMode(t *testing.T, f func(t *testing.T, k *catalog.Kernel, atEntry bool)) {
	for _, mode := range []struct {
		name    string
		atEntry bool
	}{{"registers at exit", false}, {"pointers at entry", true}} {
		t.Run(mode.name, func(t *testing.T) {
			k := catalog.NewKernel(nil)
			if mode.atEntry {
				k.Disable[catalog.FeatureTaskPtRegs] = true
			} else if !k.Have(catalog.FeatureTaskPtRegs) {
				t.Skipf("no bpf_task_pt_regs here (5.15+): %s", k.Feature(catalog.FeatureTaskPtRegs).Detail)
			}
			f(t, k, mode.atEntry)
		})
	}
}

func runEveryPath(t *testing.T, k *catalog.Kernel, atEntry bool) {
	truePath, err := exec.LookPath("true")
	require.NoError(t, err)
	// One name, in six directories (CopyBinary and t.TempDir make a new
	// one each time): the comm of each success and the basename of each
	// failure, which the comm filter keeps.
	name := catalogtest.UniqueComm(t, "exec-all")
	bin := catalogtest.CopyBinary(t, truePath, name)
	long := catalogtest.CopyBinary(t, truePath, name)
	binAt := catalogtest.CopyBinary(t, truePath, name)
	missing := filepath.Join(t.TempDir(), name)
	missingLong := filepath.Join(t.TempDir(), name)
	missingAt := filepath.Join(t.TempDir(), name)
	p := catalog.Params{Comm: name}
	require.Equal(t, atEntry, keepAtEntry(k, p))

	longArgv := []string{long}
	for i := 0; i < 300; i++ {
		longArgv = append(longArgv, "0123456789")
	}
	manyArgv := []string{missingLong}
	for i := 0; i < 24; i++ {
		manyArgv = append(manyArgv, "a")
	}

	var mu sync.Mutex
	got := map[string][]Event{}
	observe = func(ev Event) {
		switch ev.Filename {
		case bin, long, binAt, missing, missingLong, missingAt:
			mu.Lock()
			got[ev.Filename] = append(got[ev.Filename], ev)
			mu.Unlock()
		}
	}
	defer func() { observe = nil }()

	const ok, failed, failedAt = 20, 7, 3
	var helper int
	res := catalogtest.Run(t, k, Entry{}, p, func() {
		catalogtest.Repeat(ok, func() { require.NoError(t, exec.Command(bin, "arg1", "two words").Run()) })
		catalogtest.Repeat(failed, func() { require.Error(t, exec.Command(missing, "x", "y z").Run()) })
		require.NoError(t, exec.Command(long, longArgv[1:]...).Run())
		require.Error(t, exec.Command(missingLong, manyArgv[1:]...).Run())
		cmd := catalogtest.SelfCommand(t, execveatEnv, missingAt+"|3|"+binAt)
		require.NoError(t, cmd.Run())
		helper = cmd.Process.Pid
	})
	require.Zero(t, res.Lost)
	mu.Lock()
	defer mu.Unlock()

	self, uid, comm := int32(os.Getpid()), uint32(os.Getuid()), catalogtest.SelfComm(t)
	check := func(path string, n int, ret int32, comm string, argv []string, truncated bool) {
		t.Helper()
		require.Len(t, got[path], n, path)
		for _, ev := range got[path] {
			assert.Equal(t, ret, ev.Ret, path)
			assert.Equal(t, comm, ev.Comm, path)
			assert.Equal(t, argv, ev.Args, path)
			assert.Equal(t, truncated, ev.ArgsTruncated, path)
			assert.Equal(t, self, ev.PPID, path)
			assert.Equal(t, uid, ev.UID, path)
			if path == missingAt {
				assert.Equal(t, int32(helper), ev.PID, path)
				assert.NotEqual(t, ev.PID, ev.TID, "%s: from a thread that is not the leader", path)
			} else {
				// A child of exec.Command has one thread; a successful
				// exec leaves one, with the process's id.
				assert.Equal(t, ev.PID, ev.TID, path)
			}
		}
	}
	check(bin, ok, 0, name, []string{bin, "arg1", "two words"}, false)
	check(missing, failed, -2, comm, []string{missing, "x", "y z"}, false)
	// A successful exec sends the first 1024 bytes of its argv; a failed
	// one its first 20 arguments.
	check(long, 1, 0, name, catalog.SplitArgs([]byte(strings.Join(longArgv, "\x00")), 1024), true)
	check(missingLong, 1, -2, comm, manyArgv[:20], true)
	check(missingAt, failedAt, -2, comm, []string{missingAt, "at"}, false)
	// Exec from a thread that is not the leader: it takes the leader's id.
	check(binAt, 1, 0, name, []string{binAt, "at"}, false)
	assert.Equal(t, int32(helper), got[binAt][0].TID)

	// The helper's own start (the test binary's name) is filtered out.
	const all = ok + failed + 1 + 1 + failedAt + 1
	assert.Equal(t, uint64(all), res.Events)
	assert.Equal(t, [][]string{{name, catalog.U(all)}}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{
		{missing, "ENOENT", catalog.U(failed)},
		{missingAt, "ENOENT", catalog.U(failedAt)},
		{missingLong, "ENOENT", "1"},
	}, res.Tables[1].Rows)
}
