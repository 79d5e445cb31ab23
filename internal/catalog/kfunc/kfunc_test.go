package kfunc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The C structs kf_key and kf_stats are 20 and 136 bytes; a layout change
// must show here.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(20), unsafe.Sizeof(kfuncKfKey{}))
	require.Equal(t, uintptr(136), unsafe.Sizeof(kfuncKfStats{}))
}

func TestValidateFunction(t *testing.T) {
	for _, ok := range []string{"vfs_read", "do_sys_openat2", "__x64_sys_getppid", "tcp_v4_connect", "Ab_9", strings.Repeat("a", 127)} {
		assert.NoError(t, ValidateFunction(ok), ok)
	}
	for _, c := range []struct{ in, want string }{
		{"", "empty name"},
		{strings.Repeat("a", 128), "longer than 127"},
		{"9lives", "starts with a digit"},
		{"vfs_read+0x10", "may only contain"},
		{"foo.isra.0", "may only contain"},
		{"kprobe:vfs_read", "may only contain"},
		{"../../etc", "may only contain"},
		{"vfs read", "may only contain"},
		{"bpf_prog_load", "is refused: it is part of the BPF runtime"},
		{"__bpf_prog_run", "is refused: it is part of the BPF runtime"},
		{"htab_map_update_elem", "is refused: it is part of the BPF runtime"},
		{"kprobe_ftrace_handler", "is refused: it is part of the kprobe machinery"},
		{"pre_handler_kretprobe", "is refused: it is part of the kprobe machinery"},
		{"ftrace_ops_list_func", "tracing and perf machinery"},
		{"perf_trace_run_bpf_submit", "tracing and perf machinery"},
		{"preempt_count_add", "preemption, RCU and spinlock"},
		{"rcu_read_unlock_strict", "preemption, RCU and spinlock"},
		{"_raw_spin_lock_irqsave", "preemption, RCU and spinlock"},
		{"exc_int3", "exception or NMI path"},
		{"ktime_get_mono_fast_ns", "clock, low-level architecture and memory"},
	} {
		err := ValidateFunction(c.in)
		require.Error(t, err, c.in)
		assert.Contains(t, err.Error(), c.want, c.in)
		assert.Contains(t, err.Error(), c.in, "the error names the function")
	}
}

func TestRefusedSaysWhichPrefix(t *testing.T) {
	reason, ok := Refused("rcu_note_context_switch")
	require.True(t, ok)
	assert.Contains(t, reason, `(functions starting with "rcu_")`)
	_, ok = Refused("vfs_read")
	assert.False(t, ok)
}

func FuzzValidateFunction(f *testing.F) {
	for _, s := range []string{"vfs_read", "bpf_x", "", "a.b", "\x00", "0x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateFunction(s) != nil {
			return
		}
		require.LessOrEqual(t, len(s), maxNameLen)
		require.Equal(t, -1, strings.IndexFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
		}), "accepted %q", s)
		_, refused := Refused(s)
		require.False(t, refused)
	})
}

// Bad requests fail before anything touches the kernel; /proc/kallsyms
// lists names to everyone, so this runs without root.
func TestStartRejectsBadRequests(t *testing.T) {
	k := catalog.NewKernel(nil)
	for _, c := range []struct {
		p           catalog.Params
		want        string
		unsupported bool
	}{
		{catalog.Params{}, "kfunc needs a target", false},
		{catalog.Params{Target: "vfs_read", Port: 80}, "does not support the port filter", false},
		{catalog.Params{Target: "vfs_read", FailedOnly: true}, "does not support the failed filter", false},
		{catalog.Params{Target: "vfs_read()"}, `kernel function "vfs_read()": may only contain`, false},
		{catalog.Params{Target: "bpf_map_update_elem"}, "kernel function bpf_map_update_elem is refused", false},
		{catalog.Params{Target: "nanny_no_such_function"}, "kernel function nanny_no_such_function does not exist on this kernel (not in /proc/kallsyms", true},
	} {
		tr, err := Entry{}.Start(context.Background(), k, c.p)
		require.Error(t, err, c.p)
		assert.Nil(t, tr)
		assert.Contains(t, err.Error(), c.want)
		assert.Equal(t, c.unsupported, catalog.IsUnsupported(err), "%v", err)
	}
}

func stats(calls, total, maxNs uint64, slots map[int]uint32) *kfuncKfStats {
	v := &kfuncKfStats{Calls: calls, TotalNs: total, MaxNs: maxNs}
	for i, n := range slots {
		v.Hist.Slots[i] = n
	}
	return v
}

func TestAggregateResult(t *testing.T) {
	a := newAggregate()
	a.add(proc{10, "nginx"}, stats(3, 3000, 1500, map[int]uint32{9: 2, 10: 1}))
	a.add(proc{10, "nginx"}, stats(1, 5000, 5000, map[int]uint32{12: 1})) // merges
	a.add(proc{20, "curl"}, stats(2, 400, 300, map[int]uint32{6: 1, 8: 1}))
	a.add(proc{30, "idle"}, stats(0, 0, 0, nil)) // no calls, no row
	a.running, a.dropped = 2, 1
	res := a.result("vfs_read", catalog.Params{Target: "vfs_read"}, 2*time.Second)

	assert.Equal(t, uint64(6), res.Events)
	assert.Equal(t, uint64(1), res.Lost)
	require.Len(t, res.Tables, 1)
	assert.Equal(t, [][]string{
		{"10", "nginx", "4", "2.0", "8µs", "2µs", "5µs"},
		{"20", "curl", "2", "1.0", "400ns", "200ns", "300ns"},
	}, res.Tables[0].Rows)
	require.Len(t, res.Histograms, 3, "all calls, then each busy process")
	assert.Equal(t, uint64(6), res.Histograms[0].Count)
	assert.Equal(t, "latency of vfs_read in nginx (pid 10)", res.Histograms[1].Title)
	assert.Equal(t, uint64(4), res.Histograms[1].Count)
	assert.Equal(t, uint64(2), res.Histograms[2].Count)
	var counts []uint64
	for _, b := range res.Histograms[0].Buckets {
		counts = append(counts, b.Count)
	}
	assert.Equal(t, []uint64{1, 0, 1, 2, 1, 0, 1}, counts, "slots 6 to 12")
	assert.Equal(t, uint64(64), res.Histograms[0].Buckets[0].Low)
	assert.True(t, strings.HasPrefix(res.Summary, "vfs_read called 6 times in 2.0s (3.0/s) by 2 processes; latency p50 "), res.Summary)
	assert.True(t, strings.HasSuffix(res.Summary, " max 5µs; most: nginx (pid 10) 4 calls"), res.Summary)
	require.Len(t, res.Notes, 2)
	assert.Contains(t, res.Notes[0], "2 calls had not returned")
	assert.Contains(t, res.Notes[1], "1 calls not counted")
}

func TestAggregateEmpty(t *testing.T) {
	a := newAggregate()
	res := a.result("vfs_read", catalog.Params{Target: "vfs_read", MinLatency: time.Second}, time.Second)
	assert.Equal(t, "vfs_read called 0 times in 1.0s (0.0/s) by 0 processes", res.Summary)
	assert.Empty(t, res.Tables[0].Rows)
	assert.Equal(t, []string{"only calls of at least 1s are counted"}, res.Notes)
}

// This kernel may lack kprobes: then the entry says so, as a declared
// limitation naming kprobes, both in Check and for a real function.
func TestDeclaresMissingKprobes(t *testing.T) {
	k := catalogtest.Kernel(t)
	if k.Have(catalog.FeatureKprobe) {
		t.Skip("kprobes work on this kernel")
	}
	err := Entry{}.Check(k)
	require.Error(t, err)
	require.True(t, catalog.IsUnsupported(err), "%v", err)
	assert.Contains(t, err.Error(), "kfunc is not supported on this kernel: kprobe unavailable")

	before := catalogtest.OwnedBPF(t)
	tr, err := Entry{}.Start(context.Background(), k, catalog.Params{Target: "vfs_read"})
	require.Error(t, err)
	assert.Nil(t, tr)
	require.True(t, catalog.IsUnsupported(err), "%v", err)
	assert.Contains(t, err.Error(), "kprobe unavailable")
	catalogtest.RequireReleased(t, before, catalogtest.OwnedBPF(t))
}

// The verifier accepts both programs on this kernel, kprobes or not (the
// program type exists wherever uprobes do).
func TestProgramsLoad(t *testing.T) {
	k := catalogtest.Kernel(t)
	spec, err := loadKfunc()
	require.NoError(t, err)
	require.NoError(t, catalog.SetFilters(spec, catalog.Params{PID: 1, MinLatency: time.Millisecond, Comm: "x"}))
	var objs objects
	require.NoError(t, k.Load(spec, &objs))
	require.NoError(t, objs.Close())
}

// getppidFunc is the kernel function the syscall table calls for getppid:
// called through a pointer, it is never inlined, so each getppid is exactly
// one call, on every kernel since 4.19.
func getppidFunc(t *testing.T) string {
	switch runtime.GOARCH {
	case "amd64":
		return "__x64_sys_getppid"
	case "arm64":
		return "__arm64_sys_getppid"
	}
	t.Skipf("no syscall function name known for %s", runtime.GOARCH)
	return ""
}

// getppid is the workload: no Go runtime path or test helper calls it.
func getppid(n int) {
	for i := 0; i < n; i++ {
		unix.Getppid()
	}
}

// On a kernel with kprobes: the test process calls getppid n times, the
// kprobe on the syscall's function counts exactly n for the test's pid,
// each with a latency.
func TestKprobeCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	fn := getppidFunc(t)
	const n = 1000
	pid := uint32(os.Getpid())
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Target: fn, PID: pid}, func() { getppid(n) })

	assert.Equal(t, uint64(n), res.Events)
	assert.Zero(t, res.Lost)
	assert.Equal(t, "kprobe", res.Attach)
	require.Len(t, res.Tables[0].Rows, 1, "only the test process passes the pid filter")
	assert.Equal(t, []string{catalog.U(pid), catalogtest.SelfComm(t), catalog.U(n)}, res.Tables[0].Rows[0][:3])
	require.Len(t, res.Histograms, 1)
	assert.Equal(t, uint64(n), res.Histograms[0].Count)
	assert.Empty(t, res.Notes, "no call left running, none dropped")
}

// On a kernel with kprobes: a tid filter counts one thread's calls only,
// and min_latency drops calls faster than it.
func TestKprobeFilters(t *testing.T) {
	k := catalogtest.Kernel(t)
	fn := getppidFunc(t)
	th := catalogtest.LockedThread(t)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Target: fn, TID: th.TID}, func() {
		getppid(40) // the test goroutine's thread: not counted
		th.Do(func() { getppid(60) })
	})
	assert.Equal(t, uint64(60), res.Events)

	res = catalogtest.Run(t, k, Entry{}, catalog.Params{Target: fn, PID: uint32(os.Getpid()), MinLatency: time.Hour}, func() { getppid(100) })
	assert.Zero(t, res.Events)
	assert.Empty(t, res.Tables[0].Rows)
}

// helperSource is a workload with a function of known call count and
// latency: fast calls return at once, slow ones sleep 50 ms.
const helperSource = `
#include <stdlib.h>
#include <time.h>
volatile int sink;
__attribute__((noinline)) int nanny_target(int slow)
{
	if (slow) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	sink++;
	return slow;
}
int main(int argc, char **argv)
{
	int fast = atoi(argv[1]), slow = atoi(argv[2]);
	for (int i = 0; i < fast; i++)
		nanny_target(0);
	for (int i = 0; i < slow; i++)
		nanny_target(1);
	return 0;
}
`

// uprobes run the same BPF_PROG_TYPE_KPROBE programs, so on kernels
// without kprobes the in-kernel side (filters, entry/return pairing,
// per-process stats, histogram, min_latency) is still tested for real on
// a C function of a helper process.
func TestProgramsThroughUprobes(t *testing.T) {
	k := catalogtest.Kernel(t)
	if !k.Have(catalog.FeatureUprobe) {
		t.Skip("no uprobes on this kernel")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to build the uprobe workload")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "helper.c")
	require.NoError(t, os.WriteFile(src, []byte(helperSource), 0o644))
	// A unique name: the comm filter keeps only it.
	comm := catalogtest.UniqueComm(t, "kf-help")
	bin := filepath.Join(dir, comm)
	out, err := exec.Command(cc, "-O1", "-o", bin, src).CombinedOutput()
	require.NoError(t, err, "%s", out)

	attach := func(ls *catalog.Links, target string, entry, ret *ebpf.Program) error {
		ex, err := link.OpenExecutable(bin)
		if err != nil {
			return err
		}
		if err := ls.Uretprobe(ex, bin, target, ret); err != nil {
			return err
		}
		return ls.Uprobe(ex, bin, target, entry)
	}
	runHelper := func(p catalog.Params, fast, slow int) (*catalog.Result, int) {
		before := catalogtest.OwnedBPF(t)
		tr, err := start(k, p, "nanny_target", "uprobe", attach)
		require.NoError(t, err)
		during := catalogtest.OwnedBPF(t)
		cmd := exec.Command(bin, strconv.Itoa(fast), strconv.Itoa(slow))
		require.NoError(t, cmd.Run())
		res, err := tr.Stop()
		require.NoError(t, err)
		again, err := tr.Stop()
		require.NoError(t, err)
		require.Same(t, res, again)
		assert.Equal(t, res.Events, tr.Seen(), "Seen after Stop is the result")
		catalogtest.RequireReleased(t, before, during)
		return res, cmd.Process.Pid
	}

	const fast, slow = 200, 3
	res, pid := runHelper(catalog.Params{Comm: comm}, fast, slow)
	assert.Equal(t, uint64(fast+slow), res.Events)
	assert.Zero(t, res.Lost)
	assert.Empty(t, res.Notes)
	require.Len(t, res.Tables[0].Rows, 1)
	row := res.Tables[0].Rows[0]
	assert.Equal(t, []string{catalog.U(pid), comm, catalog.U(fast + slow)}, row[:3])
	maxLat, err := time.ParseDuration(row[6])
	require.NoError(t, err)
	assert.GreaterOrEqual(t, maxLat, 50*time.Millisecond, "the slowest call slept 50 ms")
	require.Len(t, res.Histograms, 1)
	h := res.Histograms[0]
	assert.Equal(t, uint64(fast+slow), h.Count)
	// 50 ms calls land at or above 2^25 ns (33.5 ms); a fast call would
	// need to be held up 16 ms to reach 2^24.
	var below, above uint64
	for _, b := range h.Buckets {
		switch {
		case b.High < 1<<24:
			below += b.Count
		case b.Low >= 1<<25:
			above += b.Count
		}
	}
	assert.Equal(t, uint64(fast), below, "%+v", h.Buckets)
	assert.Equal(t, uint64(slow), above, "%+v", h.Buckets)

	// min_latency keeps just the slow calls.
	res, _ = runHelper(catalog.Params{Comm: comm, MinLatency: 20 * time.Millisecond}, fast, slow)
	assert.Equal(t, uint64(slow), res.Events)

	// A pid filter on another process sees nothing of the helper.
	res, _ = runHelper(catalog.Params{PID: uint32(os.Getpid())}, fast, slow)
	assert.Zero(t, res.Events)
}
