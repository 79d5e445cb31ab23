package oomkill

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hogEnv turns the test binary into a memory hog named by its value
// (hogComm): once told to start (a byte on stdin, after the test moved it
// into the limited cgroup) it touches memory until the OOM killer ends it.
const hogEnv = "NANNY_OOMKILL_HOG"

// hogComm is the hog's name, unique to this test process.
func hogComm(t *testing.T) string { return catalogtest.UniqueComm(t, "oom-hog") }

const (
	limit    = 32 << 20
	hogLimit = 512 << 20 // give up (exit 3) rather than eat the machine
)

func TestMain(m *testing.M) {
	if name := os.Getenv(hogEnv); name != "" {
		hog(name)
	}
	os.Exit(m.Run())
}

func hog(name string) {
	if err := os.WriteFile("/proc/self/comm", []byte(name), 0); err != nil {
		os.Exit(101)
	}
	if _, err := io.ReadFull(os.Stdin, make([]byte, 1)); err != nil {
		os.Exit(102)
	}
	var keep [][]byte
	for total := 0; total < hogLimit; total += 1 << 20 {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	_ = keep
	os.Exit(3)
}

// The C struct: a layout change must show here, without root.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(176), unsafe.Sizeof(oomkillOomEvent{}))
}

// memcg is a memory-limited cgroup made for one test: cgroup v2 where its
// memory controller is available, else cgroup v1's memory hierarchy.
type memcg struct {
	dir string
}

func newMemcg(t *testing.T) *memcg {
	t.Helper()
	name := fmt.Sprintf("nanny-oomkill-%d-%d", os.Getpid(), time.Now().UnixNano())
	var reasons []string
	for _, root := range memoryCgroupRoots("/proc/self/mountinfo") {
		ctrl, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err == nil {
			if !strings.Contains(" "+string(ctrl)+" ", " memory ") {
				reasons = append(reasons, root+": cgroup v2 without the memory controller ("+strings.TrimSpace(string(ctrl))+")")
				continue
			}
			// Children of root get the memory controller only when the
			// root delegates it.
			_ = os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+memory"), 0)
			return makeMemcg(t, filepath.Join(root, name), [][2]string{{"memory.max", strconv.Itoa(limit)}, {"memory.swap.max", "0"}})
		}
		if _, err := os.Stat(filepath.Join(root, "memory.limit_in_bytes")); err == nil {
			return makeMemcg(t, filepath.Join(root, name), [][2]string{{"memory.limit_in_bytes", strconv.Itoa(limit)}, {"memory.memsw.limit_in_bytes", strconv.Itoa(limit)}})
		}
	}
	t.Skipf("no cgroup with a memory controller to limit: %s", strings.Join(reasons, "; "))
	return nil
}

// makeMemcg writes settings in order: cgroup v1 refuses a memory+swap
// limit below the memory limit, so the memory limit goes first.
func makeMemcg(t *testing.T, dir string, settings [][2]string) *memcg {
	t.Helper()
	require.NoError(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() {
		// The killed hog leaves the cgroup once it is reaped; rmdir fails
		// with EBUSY until then.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	for _, set := range settings {
		file, v := set[0], set[1]
		p := filepath.Join(dir, file)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			continue // no swap accounting: nothing to limit
		}
		require.NoError(t, os.WriteFile(p, []byte(v), 0), "set %s", p)
	}
	return &memcg{dir: dir}
}

// runHog starts the hog inside cg and waits for the OOM killer to end it.
func runHog(t *testing.T, cg *memcg) int {
	t.Helper()
	cmd := catalogtest.SelfCommand(t, hogEnv, hogComm(t))
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	require.NoError(t, os.WriteFile(filepath.Join(cg.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0))
	_, err = in.Write([]byte{'x'})
	require.NoError(t, err)
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal(), "the hog was not OOM-killed: %v", err)
	return pid
}

func TestOOMKillExactly(t *testing.T) {
	catalogtest.Kernel(t)
	for _, c := range []struct {
		attach  string
		disable []catalog.Feature
	}{
		{"tp_btf, ring buffer", nil},
		{"raw_tp, perf buffer", []catalog.Feature{catalog.FeatureTpBTF, catalog.FeatureRingBuf}},
	} {
		t.Run(c.attach, func(t *testing.T) {
			k := catalog.NewKernel(nil)
			for _, f := range c.disable {
				k.Disable[f] = true
			}
			oomKillExactly(t, k, c.attach)
		})
	}
}

func oomKillExactly(t *testing.T, k *catalog.Kernel, attach string) {
	catalogtest.Supported(t, k, Entry{})
	cg := newMemcg(t)
	var pid int
	// The cgroup filter matches the victim's memory cgroup: kills elsewhere
	// on the machine stay out.
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Cgroup: cg.dir}, func() { pid = runHog(t, cg) })
	require.Zero(t, res.Lost)
	require.Equal(t, uint64(1), res.Events, "samples: %v", res.Samples.Rows)
	assert.Equal(t, attach, res.Attach)
	require.Len(t, res.Samples.Rows, 1)
	row := sample(res.Samples, res.Samples.Rows[0])
	assert.Equal(t, catalog.U(pid), row["victim_pid"])
	assert.Equal(t, hogComm(t), row["victim_comm"])
	assert.Equal(t, "0", row["uid"])
	assert.Equal(t, cg.dir, row["memory_cgroup"])
	// The hog's own page fault ran out of memory: it is also the trigger.
	assert.Equal(t, catalog.U(pid), row["trigger_pid"])
	assert.Equal(t, hogComm(t), row["trigger_comm"])
	anon := catalogtest.Num(t, row["anon_rss_kb"])
	assert.Greater(t, anon, uint64(limit/1024/2), "most of the limit is the hog's anonymous memory")
	// rss is the whole process: what it touched before joining the cgroup
	// (the Go runtime's first pages) is charged elsewhere.
	assert.LessOrEqual(t, anon, uint64(limit/1024+16<<10))
	assert.Greater(t, catalogtest.Num(t, row["total_vm_kb"]), anon)
	assert.Equal(t, [][]string{{cg.dir, "1"}}, res.Tables[1].Rows)
	assert.Equal(t, [][]string{{hogComm(t), "1", catalog.U(catalogtest.Num(t, row["anon_rss_kb"]) + catalogtest.Num(t, row["file_rss_kb"]) + catalogtest.Num(t, row["shmem_rss_kb"]))}}, res.Tables[0].Rows)
}

// Without the victim task (classic tracepoint) the kill is still reported,
// from the tracepoint record, with the memory cgroup unknown.
func TestOOMKillClassicTracepoint(t *testing.T) {
	catalogtest.Kernel(t)
	k := catalog.NewKernel(nil)
	k.Disable[catalog.FeatureTpBTF] = true
	k.Disable[catalog.FeatureRawTracepoint] = true
	catalogtest.Supported(t, k, Entry{})
	_, err := Entry{}.Start(t.Context(), k, catalog.Params{Cgroup: "/sys/fs/cgroup"})
	require.ErrorContains(t, err, "cgroup filter needs the victim task")

	cg := newMemcg(t)
	var pid int
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: hogComm(t)}, func() { pid = runHog(t, cg) })
	require.Zero(t, res.Lost)
	require.Equal(t, uint64(1), res.Events)
	assert.Equal(t, "tracepoint, ring buffer", res.Attach)
	row := sample(res.Samples, res.Samples.Rows[0])
	assert.Equal(t, catalog.U(pid), row["victim_pid"])
	assert.Equal(t, hogComm(t), row["victim_comm"])
	assert.Equal(t, "?", row["memory_cgroup"])
	assert.Equal(t, catalog.U(pid), row["trigger_pid"])
	assert.Greater(t, catalogtest.Num(t, row["anon_rss_kb"]), uint64(limit/1024/2))
}

func TestAggregateResult(t *testing.T) {
	var a aggregate
	a.add(Kill{VictimPID: 10, VictimComm: "java", TriggerPID: 11, TriggerComm: "java", Flags: HasComm | HasSizes, AnonRSSKB: 1000, FileRSSKB: 24})
	a.add(Kill{VictimPID: 12, VictimComm: "java", TriggerPID: 12, TriggerComm: "java", Flags: HasComm | HasSizes, AnonRSSKB: 2048})
	res := a.result(catalog.Params{}, cgroupResolver{})
	assert.Equal(t, uint64(2), res.Events)
	assert.Equal(t, "2 OOM kills; last: java (pid 12) in ?, triggered by java (pid 12), rss 2048 kB", res.Summary)
	assert.Equal(t, [][]string{{"java", "2", "2048"}}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"?", "2"}}, res.Tables[1].Rows)
	row := sample(res.Samples, res.Samples.Rows[0])
	assert.Equal(t, "?", row["uid"], "unknown fields say so")
	assert.Equal(t, "1000", row["anon_rss_kb"])
}

func TestMemoryCgroupRoots(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	require.NoError(t, os.WriteFile(mi, []byte(strings.Join([]string{
		"30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory",
		"31 25 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu",
		"32 25 0:28 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw",
		"33 25 0:29 / /proc rw - proc proc rw",
	}, "\n")), 0o644))
	assert.Equal(t, []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified"}, memoryCgroupRoots(mi))
}

func TestFindCgroup(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a", "svc")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	ino := fi.Sys().(*syscall.Stat_t).Ino
	assert.Equal(t, dir, findCgroup([]string{root}, ino, "svc"))
	assert.Equal(t, "", findCgroup([]string{root}, ino, "other"), "the name must match too")
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{FailedOnly: true}.Validate(Info), "oomkill does not support the failed filter")
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(oomkillOomEvent{}))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec oomkillOomEvent
		if catalog.Decode(raw, &rec) != nil {
			return
		}
		var a aggregate
		a.add(decodeKill(&rec))
		a.result(catalog.Params{}, cgroupResolver{}).Compact()
	})
}

func sample(tab *catalog.Table, r []string) map[string]string {
	m := map[string]string{}
	for i, c := range tab.Columns {
		m[c] = r[i]
	}
	return m
}
