package catalogtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Row returns the row of tab whose first cells are cells, failing the test
// when there is none: tests look rows up by their key, whatever the rank.
func Row(t testing.TB, tab catalog.Table, cells ...string) []string {
	t.Helper()
	return FindRow(t, tab, func(r []string) bool {
		if len(r) < len(cells) {
			return false
		}
		for i, c := range cells {
			if r[i] != c {
				return false
			}
		}
		return true
	})
}

// FindRow returns the first row of tab that match accepts, failing the
// test when there is none.
func FindRow(t testing.TB, tab catalog.Table, match func([]string) bool) []string {
	t.Helper()
	for _, r := range tab.Rows {
		if match(r) {
			return r
		}
	}
	t.Fatalf("%s: no matching row in %v", tab.Title, tab.Rows)
	return nil
}

// Num parses a count cell, failing the test when it is not one.
func Num(t testing.TB, cell string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(cell, 10, 64)
	require.NoError(t, err, "cell %q", cell)
	return n
}

// CopyBinary copies the executable src under name into a temporary
// directory and returns its path: a process started from it has comm name.
// Give a name from UniqueComm, which no other process on the host shares
// (not even a concurrent run of the same test), so comm-keyed counts stay
// exact.
func CopyBinary(t testing.TB, src, name string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	return bin
}

// SelfComm is this process's comm (the test binary's name, cut to 15
// characters by the kernel).
func SelfComm(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// SelfCommand re-runs the test binary as a workload process, running no
// test: the package's TestMain sees env=value and plays the helper.
func SelfCommand(t testing.TB, env, value string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	return SelfCommandFrom(t, self, env, value)
}

// SelfCommandFrom is SelfCommand run from bin, a copy of the test binary
// (SelfCopy): the helper's comm is then bin's name rather than the test
// binary's, which every run of the same test shares.
func SelfCommandFrom(t testing.TB, bin, env, value string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+value)
	return cmd
}

// SelfCopy copies the test binary under name (CopyBinary) for
// SelfCommandFrom.
func SelfCopy(t testing.TB, name string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	return CopyBinary(t, self, name)
}

// Thread is a goroutine locked to its own OS thread, so that a tid filter
// selects exactly the work given to Do and nothing the Go runtime does
// elsewhere. Between calls it waits in read(2) on a pipe, and Do's caller
// waits on another. A Go channel there would park the thread in the
// scheduler, which hands its P off and, with no idle M, creates one from
// this thread: the first touches of the new M's memory are page faults of
// the thread that no work of the test caused. Idle tells when the thread
// is back in its read, where it runs nothing.
type Thread struct {
	TID          uint32
	work         chan func()
	done         chan struct{}
	goR, goW     int // the thread waits on goR; Do writes goW
	doneR, doneW int // Do's caller waits on doneR
}

// LockedThread starts a Thread; it ends with the test.
func LockedThread(t testing.TB) *Thread {
	t.Helper()
	var goP, doneP [2]int
	require.NoError(t, unix.Pipe2(goP[:], unix.O_CLOEXEC))
	require.NoError(t, unix.Pipe2(doneP[:], unix.O_CLOEXEC))
	// Buffered: a send finds no receiver parked, so it wakes no goroutine;
	// the channels only order memory for the race detector.
	th := &Thread{work: make(chan func(), 1), done: make(chan struct{}, 1),
		goR: goP[0], goW: goP[1], doneR: doneP[0], doneW: doneP[1]}
	tids := make(chan uint32)
	go func() {
		// Never unlocked: the thread exits with the goroutine, so no
		// other goroutine ever runs on it.
		runtime.LockOSThread()
		defer unix.Close(th.doneW)
		defer unix.Close(th.goR)
		tids <- uint32(unix.Gettid())
		for wait(th.goR) {
			f := <-th.work
			f()
			th.done <- struct{}{}
			signal(th.doneW)
		}
	}()
	th.TID = <-tids
	t.Cleanup(func() {
		unix.Close(th.goW) // the thread reads EOF and exits
		unix.Close(th.doneR)
	})
	return th
}

// Do runs f on the thread and waits for it.
func (th *Thread) Do(f func()) {
	th.work <- f
	signal(th.goW)
	wait(th.doneR)
	<-th.done
}

// Idle waits until the thread is blocked in its read between two Do calls
// (its /proc syscall file names read(2) on its pipe). From then until the
// next Do it takes no page fault, runs no Go code and makes no system call,
// so its counters can be read from another thread, and a trace started or
// stopped, at a point where the thread is known to be still.
func (th *Thread) Idle(t testing.TB) {
	t.Helper()
	path := fmt.Sprintf("/proc/self/task/%d/syscall", th.TID)
	want := fmt.Sprintf("%d 0x%x ", unix.SYS_READ, th.goR)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.HasPrefix(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d not blocked in read on fd %d after 10s: %s: %q %v", th.TID, th.goR, path, b, err)
		}
		// Nothing announces the thread's arrival in read(2); /proc is
		// the only witness, so poll it.
		time.Sleep(200 * time.Microsecond)
	}
}

// signal writes one byte to fd; wait reads one and reports false at EOF.
// A goroutine blocked in them stays on its thread, in the kernel, where
// /proc shows the call, instead of parking in the Go scheduler.
func signal(fd int) {
	for {
		if _, err := unix.Write(fd, []byte{1}); err != unix.EINTR {
			return
		}
	}
}

func wait(fd int) bool {
	var b [1]byte
	for {
		n, err := unix.Read(fd, b[:])
		if err != unix.EINTR {
			return n == 1
		}
	}
}
