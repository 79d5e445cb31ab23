package reclaim

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	assert.Equal(t, uintptr(16), unsafe.Sizeof(reclaimReclaimStart{}))
	assert.Equal(t, uintptr(8), unsafe.Sizeof(reclaimProcKey{}))
	assert.Equal(t, uintptr(4*catalog.Log2Slots), unsafe.Sizeof(reclaimHist{}))
	assert.Equal(t, uintptr(160), unsafe.Sizeof(reclaimProcStat{}))
}

const limit = 16 << 20

// memcg makes a memory cgroup limited to `limit` bytes: cgroup v2
// (memory.max) where the memory controller is on the unified hierarchy,
// else cgroup v1 (memory.limit_in_bytes), as on hybrid hosts. It returns
// the cgroup.procs path.
func memcg(t *testing.T) string {
	t.Helper()
	name := "nanny-reclaim-" + strconv.Itoa(os.Getpid())
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		ctrl, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err != nil || !strings.Contains(" "+string(bytes.TrimSpace(ctrl))+" ", " memory ") {
			continue
		}
		sub, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
		require.NoError(t, err)
		if !strings.Contains(string(sub), "memory") {
			continue // not ours to turn on for the whole machine
		}
		return makeGroup(t, filepath.Join(root, name), "memory.max")
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		return makeGroup(t, filepath.Join("/sys/fs/cgroup/memory", name), "memory.limit_in_bytes")
	}
	t.Skip("no memory cgroup controller to make a limited cgroup in")
	return ""
}

func makeGroup(t *testing.T, dir, limitFile string) string {
	t.Helper()
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() { _ = os.Remove(dir) })
	require.NoError(t, os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.Itoa(limit)), 0o644))
	return filepath.Join(dir, "cgroup.procs")
}

// uncachedFile writes size bytes and drops them from the page cache, so
// reading them charges new page-cache pages to the reader's cgroup.
func uncachedFile(t *testing.T, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nanny-reclaim-data")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	for i := 0; i < size>>20; i++ {
		_, err := f.Write(chunk)
		require.NoError(t, err)
	}
	require.NoError(t, f.Sync())
	require.NoError(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
	return path
}

// A reader in a cgroup limited to 16 MiB reads 64 MiB of uncached file:
// its page cache outgrows the limit and the kernel makes it reclaim in its
// cgroup, again and again. How many reclaims is the kernel's business
// (charge batching, how much each pass frees), so the test checks that
// they happen (> 0) and that every one is accounted exactly once: begun ==
// completed == histogram count == the process's row.
func TestReclaimMemcgCountsPairs(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	if !catalog.TracepointExists("vmscan/mm_vmscan_memcg_reclaim_begin") {
		t.Skip("no memcg reclaim tracepoints (CONFIG_MEMCG)")
	}
	procs := memcg(t)
	file := uncachedFile(t, 4*limit)

	cmd := exec.Command("sh", "-c", `read go && exec cat "$1" >/dev/null`, "sh", file)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	require.NoError(t, os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0o644))

	stalls := allocStalls(t)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(pid)}, func() {
		_, err := stdin.Write([]byte("go\n"))
		require.NoError(t, err)
		require.NoError(t, cmd.Wait())
	})
	stalls = allocStalls(t) - stalls
	require.Zero(t, res.Lost)
	assert.Equal(t, "tracepoint", res.Attach)
	t.Log(res.Summary)

	var memcgHist, directHist catalog.Histogram
	for _, h := range res.Histograms {
		switch h.Title {
		case "memcg reclaim latency":
			memcgHist = h
		case "direct reclaim latency":
			directHist = h
		}
	}
	require.Positive(t, memcgHist.Count, "no memcg reclaim: %s", res.Summary)
	assert.Equal(t, "us", memcgHist.Unit)
	// Direct (global) reclaim is up to the host: the reader enters it
	// only when the whole machine runs short of memory, and every direct
	// reclaim anywhere counts an allocation stall. None counted, none
	// may be traced; on a host under pressure, at most as many.
	assert.LessOrEqual(t, directHist.Count, stalls, "direct reclaims of the reader against the kernel's allocation stalls")

	counts := res.Tables[1]
	require.Equal(t, []string{"kind", "begun", "completed", "counted"}, counts.Columns)
	n := strconv.FormatUint(memcgHist.Count, 10)
	assert.Equal(t, []string{"memcg", n, n, n}, counts.Rows[1], "begun == completed == histogram count")
	d := strconv.FormatUint(directHist.Count, 10)
	assert.Equal(t, []string{"direct", d, d, d}, counts.Rows[0])

	byKind := map[string][]string{}
	for _, r := range res.Tables[0].Rows {
		assert.Equal(t, []string{strconv.Itoa(pid), "cat"}, r[:2], "only the reader: %v", res.Tables[0].Rows)
		byKind[r[2]] = r
	}
	if directHist.Count > 0 {
		assert.Equal(t, d, byKind["direct"][3])
	} else {
		assert.Len(t, res.Tables[0].Rows, 1, "%v", res.Tables[0].Rows)
	}
	row := byKind["memcg"]
	require.NotNil(t, row, "no memcg row: %v", res.Tables[0].Rows)
	assert.Equal(t, n, row[3])
	pages, err := strconv.ParseUint(row[7], 10, 64)
	require.NoError(t, err)
	// It read 4x its limit: at least the excess, (64-16) MiB in 4 KiB
	// pages, was reclaimed from it. Allow for larger pages.
	assert.GreaterOrEqual(t, pages*uint64(os.Getpagesize()), uint64(3*limit)*9/10, "pages reclaimed %d", pages)
	assert.Equal(t, res.Events, memcgHist.Count+directHist.Count)
	assert.Empty(t, res.Notes)
}

// allocStalls is the kernel's count of direct reclaims since boot, the sum
// of /proc/vmstat's allocstall_<zone> counters: do_try_to_free_pages
// counts one for every direct reclaim (more when it retries), and every
// mm_vmscan_direct_reclaim_begin leads there.
func allocStalls(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/vmstat")
	require.NoError(t, err)
	var n uint64
	var found bool
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if ok && strings.HasPrefix(name, "allocstall_") {
			n += catalogtest.Num(t, v)
			found = true
		}
	}
	require.True(t, found, "no allocstall_ counters in /proc/vmstat")
	return n
}

func TestSnapshotResult(t *testing.T) {
	slots := func(slot int, n uint64) []uint64 {
		s := make([]uint64, catalog.Log2Slots)
		s[slot] = n
		return s
	}
	s := &Snapshot{
		All: [2][]uint64{slots(10, 3), slots(5, 20)},
		Procs: map[ProcKey]ProcStats{
			{7, Direct}: {Comm: "a", Count: 3, TotalNs: 3_000_000, MaxNs: 1_500_000, NrReclaimed: 96, Slots: slots(10, 3)},
			{8, Memcg}:  {Comm: "b", Count: 20, TotalNs: 800_000, MaxNs: 60_000, NrReclaimed: 640, Slots: slots(5, 20)},
		},
		Begins: [2]uint64{4, 20}, Pairs: [2]uint64{3, 20}, Unmatched: 2,
	}
	res := s.result(catalog.Params{})
	assert.Equal(t, uint64(23), res.Events)
	assert.Equal(t, [][]string{{"7", "a", "direct", "3", "3000", "1500", "2036", "96"}, {"8", "b", "memcg", "20", "800", "60", "62", "640"}}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"direct", "4", "3", "3"}, {"memcg", "20", "20", "20"}}, res.Tables[1].Rows)
	require.Len(t, res.Histograms, 4)
	assert.Equal(t, "direct reclaim latency of a (pid 7)", res.Histograms[2].Title)
	assert.Contains(t, res.Summary, "3 direct reclaims, 20 memcg reclaims by 2 processes")
	assert.Contains(t, res.Summary, "most stalled: a (pid 7) 3000 us in direct reclaim")
	assert.Len(t, res.Notes, 2)

	empty := (&Snapshot{All: [2][]uint64{slots(0, 0), slots(0, 0)}, Procs: map[ProcKey]ProcStats{}}).result(catalog.Params{})
	assert.Zero(t, empty.Events)
	assert.Empty(t, empty.Histograms)
	assert.Empty(t, empty.Notes)
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{Port: 1}.Validate(Info), "reclaim does not support the port filter")
}
