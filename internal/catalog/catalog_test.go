package catalog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLog2HistogramBucketsAndPercentiles(t *testing.T) {
	slots := make([]uint32, Log2Slots)
	slots[3] = 10 // [8, 15]
	slots[4] = 80 // [16, 31]
	slots[10] = 10
	h := Log2Histogram("latency", "us", slots)
	require.Len(t, h.Buckets, 8, "trimmed to slots 3..10")
	assert.Equal(t, Bucket{Low: 8, High: 15, Count: 10}, h.Buckets[0])
	assert.Equal(t, Bucket{Low: 1024, High: 2047, Count: 10}, h.Buckets[7])
	assert.Equal(t, uint64(100), h.Count)
	// p50: rank 50 falls in [16,31] at (50-10)/80 = half way.
	assert.Equal(t, uint64(23), h.P50)
	assert.Equal(t, uint64(31), h.P90)
	assert.True(t, h.P99 >= 1024 && h.P99 <= 2047, "p99 %d", h.P99)
}

func TestLog2HistogramEmptyAndZeroSlot(t *testing.T) {
	h := Log2Histogram[uint64]("x", "ns", make([]uint64, Log2Slots))
	assert.Zero(t, h.Count)
	assert.Empty(t, h.Buckets)
	assert.Zero(t, h.Percentile(99))
	h = Log2Histogram("x", "ns", []uint64{5})
	assert.Equal(t, []Bucket{{0, 1, 5}}, h.Buckets)
}

func TestTopNOrdersAndCuts(t *testing.T) {
	m := map[string]uint64{"a": 1, "b": 5, "c": 5, "d": 3}
	top, total := TopN(m, 3, func(x, y string) bool { return x < y })
	assert.Equal(t, 4, total)
	assert.Equal(t, []Ranked[string]{{"b", 5}, {"c", 5}, {"d", 3}}, top)
}

func TestTruncateMarksCut(t *testing.T) {
	assert.Equal(t, "short", Truncate("short", 10))
	long := strings.Repeat("x", 500)
	got := Truncate(long, MaxCellChars)
	assert.Len(t, []rune(got), MaxCellChars)
	assert.True(t, strings.HasSuffix(got, TruncMarker))
}

func TestCompactBoundsResult(t *testing.T) {
	r := &Result{Entry: "x"}
	tab := Table{Title: "t", Columns: []string{"k"}}
	for i := 0; i < 100; i++ {
		tab.AddRow(strings.Repeat("y", 1000))
	}
	r.Tables = []Table{tab}
	r.Samples = &Table{Columns: []string{"k"}}
	for i := 0; i < 100; i++ {
		r.Samples.AddRow("s")
	}
	r.Compact()
	assert.Len(t, r.Tables[0].Rows, MaxRows)
	assert.Equal(t, 100, r.Tables[0].TotalRows)
	assert.Len(t, r.Samples.Rows, MaxSamples)
	assert.LessOrEqual(t, len([]rune(r.Tables[0].Rows[0][0])), MaxCellChars)
}

func TestResultJSONFieldNames(t *testing.T) {
	r := Result{Entry: "exec", Events: 3, Summary: "s", Start: time.Unix(0, 0).UTC(), End: time.Unix(1, 0).UTC(),
		Histograms: []Histogram{Log2Histogram("h", "us", []uint32{1})}}
	b, err := json.Marshal(r)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"entry", "start", "end", "events", "lost", "summary", "histograms"} {
		assert.Contains(t, m, k)
	}
	h := m["histograms"].([]any)[0].(map[string]any)
	for _, k := range []string{"title", "unit", "buckets", "count", "p50", "p90", "p99"} {
		assert.Contains(t, h, k)
	}
}

func TestRenderShowsTablesAndBars(t *testing.T) {
	r := &Result{Entry: "exec", Events: 2, Lost: 1, Summary: "two execs", Start: time.Unix(0, 0), End: time.Unix(2, 0)}
	r.Tables = []Table{{Title: "by comm", Columns: []string{"comm", "count"}}}
	r.Tables[0].AddRow("bash", "2")
	r.Histograms = []Histogram{Log2Histogram("lat", "us", []uint32{0, 4, 2})}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	assert.Contains(t, out, "== exec: 2 events, 1 lost, 2.0s")
	assert.Contains(t, out, "WARNING: 1 events were lost")
	assert.Contains(t, out, "  COMM  COUNT\n  bash  2\n")
	assert.Contains(t, out, "|****************************************|")
	assert.Contains(t, out, "|********************                    |")
}

func TestParamsValidate(t *testing.T) {
	info := Info{Name: "open", Filters: []Filter{FilterPID, FilterComm, FilterFailed}}
	assert.NoError(t, Params{PID: 1, Comm: "bash", FailedOnly: true}.Validate(info))
	assert.ErrorContains(t, Params{Port: 80}.Validate(info), "open does not support the port filter (it supports: pid, comm, failed)")
	assert.ErrorContains(t, Params{Comm: "a-very-long-command-name"}.Validate(info), "longer than the kernel's 15 characters")
	assert.ErrorContains(t, Params{Target: "x"}.Validate(info), "takes no target")
	gen := Info{Name: "tracepoint", NeedsTarget: true}
	assert.ErrorContains(t, Params{}.Validate(gen), "needs a target")
}

func TestClampDuration(t *testing.T) {
	assert.Equal(t, DefaultDuration, ClampDuration(0))
	assert.Equal(t, DefaultDuration, ClampDuration(-time.Second))
	assert.Equal(t, MaxDuration, ClampDuration(time.Hour))
	assert.Equal(t, 3*time.Second, ClampDuration(3*time.Second))
}

func TestSetFiltersRefusesMissingGlobal(t *testing.T) {
	spec := &ebpf.CollectionSpec{Variables: map[string]*ebpf.VariableSpec{}}
	assert.NoError(t, SetFilters(spec, Params{}))
	assert.ErrorContains(t, SetFilters(spec, Params{PID: 1}), "no targ_tgid")
}

func TestCgroupIDErrors(t *testing.T) {
	_, err := CgroupID("/nonexistent-cgroup-dir")
	assert.ErrorContains(t, err, "give a cgroup v2 directory")
	id, err := CgroupID(t.TempDir())
	require.NoError(t, err)
	assert.NotZero(t, id)
}

func TestErrnoAndSignalNames(t *testing.T) {
	assert.Equal(t, "ENOENT", ErrnoName(-2))
	assert.Equal(t, "ENOSPC", ErrnoName(28))
	assert.Equal(t, "errno 4000", ErrnoName(4000))
	assert.Equal(t, "SIGKILL", SignalName(9))
	assert.Equal(t, "signal 99", SignalName(99))
}

func TestSplitArgs(t *testing.T) {
	b := []int8{'a', 0, 'b', 'c', 0, 0, 0}
	assert.Equal(t, []string{"a", "bc"}, SplitArgs(b, 5))
	assert.Nil(t, SplitArgs(b, 0))
	assert.Equal(t, []string{"a", "bc"}, SplitArgs(b, 100), "size beyond the buffer is clamped")
}

func FuzzDecodeNeverPanics(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var v struct {
			A uint64
			B [3]int8
		}
		_ = Decode(raw, &v)
		_ = SplitArgs(raw, len(raw)+3)
		_ = CString(raw)
	})
}
