package catalogtest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CommLen is the longest comm the kernel keeps (TASK_COMM_LEN - 1).
const CommLen = 15

// tagLen is the length of the per-process part of a UniqueComm name.
const tagLen = 6

// MaxCommPrefix is the longest prefix UniqueComm takes: the rest of the
// kernel's 15 bytes hold "-" and the per-process tag.
const MaxCommPrefix = CommLen - 1 - tagLen

// commTag is this process's tag: random rather than the pid, because the
// kernel a test traces is shared by every pid namespace on the host, and
// in fresh containers pids repeat (two CI jobs can both be pid 123).
// 36^6 values make a clash between two concurrent test processes a
// one-in-two-billion event.
var commTag = sync.OnceValue(func() string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var b [tagLen]byte
	for i := range b {
		b[i] = digits[rand.IntN(len(digits))] // randomly seeded per process
	}
	return string(b[:])
})

// UniqueComm returns prefix + "-" + a tag drawn once per test process,
// at most 15 bytes: a comm that no other process on the host has, not even
// another run of the same test binary at the same time (make vmtest's host
// pass beside a go test ./..., two CI jobs on one machine). A test that
// filters a trace by comm, or counts rows keyed by comm, names its
// workload with it: a binary copied under it (CopyBinary), a thread
// renamed to it (Thread.SetComm), a helper process told it through its
// environment. The same prefix gives the same name throughout the process.
// prefix says what the workload is ("sig-sh", "exit-f"): 1 to 8 of
// a-z, 0-9, '-', '_'.
func UniqueComm(t testing.TB, prefix string) string {
	t.Helper()
	if err := checkCommPrefix(prefix); err != nil {
		t.Fatal(err)
	}
	return prefix + "-" + commTag()
}

func checkCommPrefix(prefix string) error {
	if prefix == "" || len(prefix) > MaxCommPrefix {
		return fmt.Errorf("UniqueComm prefix %q is %d bytes: give 1 to %d, so that it and the %d-byte tag fit the kernel's %d-byte comm",
			prefix, len(prefix), MaxCommPrefix, tagLen+1, CommLen)
	}
	if i := strings.IndexFunc(prefix, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}); i >= 0 {
		return fmt.Errorf("UniqueComm prefix %q has %q at byte %d: use only a-z, 0-9, '-' and '_' (the name is also a file name)", prefix, prefix[i], i)
	}
	return nil
}

// SetComm names the thread name, the comm the kernel records for what it
// does from then on; the other threads keep theirs. The old name comes
// back at the end of the test: the thread may be the process's leader,
// whose comm is the process's name (/proc/self/comm, SelfComm) and which
// outlives the test.
func (th *Thread) SetComm(t testing.TB, name string) {
	t.Helper()
	var old string
	var err error
	th.Do(func() {
		if old, err = threadComm(); err == nil {
			err = setThreadComm(name)
		}
	})
	if err != nil {
		t.Fatalf("name thread %d %q: %v", th.TID, name, err)
	}
	t.Cleanup(func() {
		th.Do(func() { err = setThreadComm(old) })
		if err != nil {
			t.Errorf("give thread %d its name %q back: %v", th.TID, old, err)
		}
	})
}

func threadComm() (string, error) {
	b, err := os.ReadFile("/proc/thread-self/comm")
	return strings.TrimSuffix(string(b), "\n"), err
}

// setThreadComm names the calling thread; its caller holds the thread.
func setThreadComm(name string) error {
	if len(name) > CommLen {
		return fmt.Errorf("%q is longer than the kernel's %d bytes", name, CommLen)
	}
	b, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(b)), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_NAME: %w", err)
	}
	runtime.KeepAlive(b)
	return nil
}

// uidBase and uidSpan bound UniqueUID: ids from 2^30 up, far above what
// accounts get (useradd stays below 60000, systemd's dynamic users below
// 2^16, /etc/subuid ranges start at 100000 with 65536 each) and below
// 2^31, which some tools read as negative.
const uidBase, uidSpan = 1 << 30, 1 << 30

var uidTag = sync.OnceValue(func() uint32 { return uidBase + rand.Uint32N(uidSpan) })

// UniqueUID returns a uid no account has and no other process on the host
// runs as, not even another run of the same test (a fixed one such as
// nobody's 65534 would be shared with it, and with the host's own nobody
// processes): drawn once per test process, like UniqueComm's tag. A test
// that filters a trace by uid runs its workload under it (setuid from a
// root helper); the kernel takes any id, with or without an account.
func UniqueUID() uint32 { return uidTag() }
