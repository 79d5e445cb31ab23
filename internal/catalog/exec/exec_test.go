package exec

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The C struct exec_event is 1336 bytes; a layout change must show here.
func TestEventLayout(t *testing.T) {
	require.Equal(t, uintptr(1336), unsafe.Sizeof(execExecEvent{}))
}

func TestExecCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	truePath, err := exec.LookPath("true")
	require.NoError(t, err)
	// A copy with a unique name, so other processes on the machine cannot
	// change the count.
	dir := t.TempDir()
	bin := filepath.Join(dir, "nanny-exec-ok")
	data, err := os.ReadFile(truePath)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	missing := filepath.Join(dir, "nanny-missing")

	const ok, failed = 100, 7
	// Before exec a child has this test's comm: the filter keeps exactly
	// this test's execs, whatever else the machine runs.
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: catalogtest.SelfComm(t)}, func() {
		catalogtest.Repeat(ok, func() { require.NoError(t, exec.Command(bin, "arg1", "two words").Run()) })
		catalogtest.Repeat(failed, func() { require.Error(t, exec.Command(missing).Run()) })
	})
	require.Zero(t, res.Lost)
	assert.Equal(t, uint64(ok), cell(t, res.Tables[0], "nanny-exec-ok", 1))
	assert.Equal(t, uint64(failed), cell(t, res.Tables[1], missing, 2))
	assert.Equal(t, "ENOENT", row(t, res.Tables[1], missing)[1])
	assert.Equal(t, uint64(ok+failed), res.Events)
	// Samples carry the argv.
	var sawArgv bool
	for _, r := range res.Samples.Rows {
		if strings.HasSuffix(r[6], "nanny-exec-ok arg1 two words") {
			assert.Equal(t, bin, r[5], "filename")
			sawArgv = true
			assert.Equal(t, "nanny-exec-ok", r[3])
			assert.Equal(t, "0", r[4])
			assert.Equal(t, catalog.U(os.Getpid()), r[1], "ppid is the test process")
		}
	}
	assert.True(t, sawArgv, "samples: %v", res.Samples.Rows)
}

func TestExecFiltersFailedAndComm(t *testing.T) {
	k := catalogtest.Kernel(t)
	missing := filepath.Join(t.TempDir(), "nanny-missing2")
	// Before exec a child still has the test binary's comm: filtering on it
	// keeps the test's own execs, and failed-only keeps the 3 failures.
	comm, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{FailedOnly: true, Comm: strings.TrimSpace(string(comm))}, func() {
		catalogtest.Repeat(5, func() { require.NoError(t, exec.Command("true").Run()) })
		catalogtest.Repeat(3, func() { require.Error(t, exec.Command(missing).Run()) })
	})
	assert.Equal(t, uint64(3), res.Events)
	assert.Equal(t, uint64(3), cell(t, res.Tables[1], missing, 2))
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	err := catalog.Params{Port: 80}.Validate(Info)
	require.ErrorContains(t, err, "exec does not support the port filter")
}

func TestDecodeRecord(t *testing.T) {
	var rec execExecEvent
	require.Error(t, decodeRecord(make([]byte, 10), &rec))
	raw := make([]byte, headerSize+7)
	copy(raw[headerSize:], "ls\x00-la\x00")
	raw[headerSize-1] = 0
	require.NoError(t, decodeRecord(raw, &rec))
	rec.ArgsSize = 7
	assert.Equal(t, []string{"ls", "-la"}, decodeEvent(&rec).Args)
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(execExecEvent{}))))
	f.Add([]byte{1, 2, 3})
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
// buffer with the same exact counts.
func TestExecPerfBufferFallback(t *testing.T) {
	catalogtest.Kernel(t)
	k := catalog.NewKernel(nil)
	k.Disable[catalog.FeatureRingBuf] = true
	bin := filepath.Join(t.TempDir(), "nanny-exec-pb")
	data, err := os.ReadFile("/bin/true")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{}, func() {
		catalogtest.Repeat(50, func() { require.NoError(t, exec.Command(bin).Run()) })
	})
	assert.Contains(t, res.Attach, "perf buffer")
	assert.Zero(t, res.Lost)
	assert.Equal(t, uint64(50), cell(t, res.Tables[0], "nanny-exec-pb", 1))
}
