package catalog

import (
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Decode copies a raw event record into out. The record comes from a BPF
// program on this machine, so it is in native byte order with the C
// struct's layout (the generated Go struct has the same layout; each
// entry's tests assert its size). Short records are an error, never a panic.
// It does not allocate.
func Decode[T any](raw []byte, out *T) error {
	size := int(unsafe.Sizeof(*out))
	if len(raw) < size {
		return fmt.Errorf("event record of %d bytes, want %d", len(raw), size)
	}
	*out = *(*T)(unsafe.Pointer(unsafe.SliceData(raw)))
	return nil
}

// ErrnoName returns "ENOENT" for 2 or -2, or "errno N" when unknown.
func ErrnoName(errno int64) string {
	if errno < 0 {
		errno = -errno
	}
	if name := unix.ErrnoName(unix.Errno(errno)); name != "" {
		return name
	}
	return fmt.Sprintf("errno %d", errno)
}

// SignalName returns "SIGKILL" for 9, or "signal N" when unknown.
func SignalName(sig int) string {
	if name := unix.SignalName(unix.Signal(sig)); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", sig)
}

// SplitArgs splits NUL-separated strings (an argv copied by a BPF program).
func SplitArgs[T ~int8 | ~uint8](b []T, size int) []string {
	if size > len(b) {
		size = len(b)
	}
	buf := make([]byte, size)
	for i := 0; i < size; i++ {
		buf[i] = byte(b[i])
	}
	parts := strings.Split(strings.TrimRight(string(buf), "\x00"), "\x00")
	if len(parts) == 1 && parts[0] == "" {
		return nil
	}
	return parts
}
