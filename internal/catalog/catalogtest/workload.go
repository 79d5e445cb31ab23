package catalogtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

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
// directory and returns its path: a process started from it has comm name,
// which no other process on the machine shares, so comm-keyed counts stay
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
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+value)
	return cmd
}

// Thread is a goroutine locked to its own OS thread, so that a tid filter
// selects exactly the work given to Do and nothing the Go runtime does
// elsewhere.
type Thread struct {
	TID  uint32
	work chan func()
	done chan struct{}
}

// LockedThread starts a Thread; it ends with the test.
func LockedThread(t testing.TB) *Thread {
	th := &Thread{work: make(chan func()), done: make(chan struct{})}
	tids := make(chan uint32)
	go func() {
		// Never unlocked: the thread exits with the goroutine, so no
		// other goroutine ever runs on it.
		runtime.LockOSThread()
		tids <- uint32(unix.Gettid())
		for f := range th.work {
			f()
			th.done <- struct{}{}
		}
	}()
	th.TID = <-tids
	t.Cleanup(func() { close(th.work) })
	return th
}

// Do runs f on the thread and waits for it.
func (th *Thread) Do(f func()) {
	th.work <- f
	<-th.done
}
