package syscalls

import (
	"runtime"
	"strconv"
)

//go:generate go test -run ^TestNamesTable$ . -args -update

// Name returns the name of syscall nr on goarch ("amd64", "arm64"), or
// "syscall_<nr>" for a number the tables do not know (a syscall newer than
// the headers they came from, or another architecture).
func Name(goarch string, nr uint32) string {
	if t := syscallTables[goarch]; int(nr) < len(t) && t[nr] != "" {
		return t[nr]
	}
	return "syscall_" + strconv.FormatUint(uint64(nr), 10)
}

// localName names a syscall number of the machine the agent runs on: the
// raw_syscalls tracepoints report the native numbering.
func localName(nr uint32) string { return Name(runtime.GOARCH, nr) }
