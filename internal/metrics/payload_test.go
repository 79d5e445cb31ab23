package metrics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

const giB = 1 << 30

// contractSample is a host with every field set; its payload is written
// out in full in TestBuildExactJSON.
func contractSample() sample {
	return sample{
		CPUPercent: 12.5, CPUCores: 8,
		MemTotal: 16642998272, MemAvailable: 13194139533, // 15.5 GiB, 3.212 GiB used
		Root: &fsUsage{Total: 100 * giB, Free: 64295660421, Avail: 59592671232},
		Filesystems: []fsUsage{
			{Device: "/dev/sda2", Mount: "/boot", Total: giB, Free: 805306368, Avail: 751619276},
			{Device: "/dev/sda1", Mount: "/", Total: 100 * giB, Free: 64295660421, Avail: 59592671232},
		},
		Load:    [3]float64{0.5, 0.4, 0.3},
		RxBytes: 1320702443, TxBytes: 483183820,
		OSID: "debian", OSVersion: "12.11",
		Kernel: "6.1.0-18-amd64", Arch: "x86_64", Version: "0.1.0",
		PrimaryIP: "10.0.0.5", IPs: []string{"fe80::1", "10.0.0.5", "10.0.0.5"},
	}
}

// TestBuildExactJSON checks the whole request body byte for byte: key
// names and order, units (GiB), two decimals, used/total for the disk
// and used/(used+avail) for each filesystem, sorted unique addresses.
func TestBuildExactJSON(t *testing.T) {
	p, dropped := build(contractSample())
	require.Zero(t, dropped)
	require.NoError(t, Validate(p))
	b, err := json.Marshal(p)
	require.NoError(t, err)
	want := `{"action":"ingest-metrics","system_metrics":{"cpu_percent":12.5,"cpu_cores":8,` +
		`"memory_used_gb":3.21,"memory_total_gb":15.5,"memory_percent":20.72,` +
		`"disk_used_gb":40.12,"disk_total_gb":100,"disk_usage_percent":40.12,` +
		`"filesystems":[{"device":"/dev/sda1","mount_path":"/","used_gb":40.12,"free_gb":55.5,"total_gb":100,"usage_percent":41.96},` +
		`{"device":"/dev/sda2","mount_path":"/boot","used_gb":0.25,"free_gb":0.7,"total_gb":1,"usage_percent":26.32}],` +
		`"load_average":{"one_min":0.5,"five_min":0.4,"fifteen_min":0.3},` +
		`"network_stats":{"in_gb":1.23,"out_gb":0.45},"kernel_version":"6.1.0-18-amd64"},` +
		`"os_info":"debian","os_version":"12.11","os_type":"linux","platform_family":"debian","version":"0.1.0",` +
		`"primary_ip":"10.0.0.5","kernel_version":"6.1.0-18-amd64","arch":"x86_64","all_ips":["10.0.0.5","fe80::1"]}`
	require.JSONEq(t, want, string(b))
	require.Equal(t, want, string(b), "key order is the backend's struct order")
	requireContractShape(t, b)
}

// jsonKind is what the contract (NANNYAPI.md §2.7) says a key holds.
type jsonKind int

const (
	kString jsonKind = iota
	kInt             // a JSON number without fraction or exponent (a float is 400)
	kGiB             // a number ≥ 0 with at most two decimals
	kPct             // a number in 0–100 with at most two decimals
	kObject
	kArray
)

var contractKeys = map[string]jsonKind{
	"action": kString, "system_metrics": kObject, "os_info": kString, "os_version": kString,
	"os_type": kString, "platform_family": kString, "version": kString, "primary_ip": kString,
	"kernel_version": kString, "arch": kString, "all_ips": kArray,
}

var systemMetricsKeys = map[string]jsonKind{
	"cpu_percent": kPct, "cpu_cores": kInt, "memory_used_gb": kGiB, "memory_total_gb": kGiB,
	"memory_percent": kPct, "disk_used_gb": kGiB, "disk_total_gb": kGiB, "disk_usage_percent": kPct,
	"filesystems": kArray, "load_average": kObject, "network_stats": kObject, "kernel_version": kString,
}

var filesystemKeys = map[string]jsonKind{
	"device": kString, "mount_path": kString, "used_gb": kGiB, "free_gb": kGiB, "total_gb": kGiB,
	"usage_percent": kPct,
}

var loadKeys = map[string]jsonKind{"one_min": kGiB, "five_min": kGiB, "fifteen_min": kGiB}
var networkKeys = map[string]jsonKind{"in_gb": kGiB, "out_gb": kGiB}

// requireContractShape decodes body as the backend would see it and
// checks every key, exactly the contract's set, and each value's JSON
// type and range.
func requireContractShape(t testing.TB, body []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var top map[string]any
	require.NoError(t, dec.Decode(&top))
	checkObject(t, "", top, contractKeys)
	sm := top["system_metrics"].(map[string]any)
	checkObject(t, "system_metrics.", sm, systemMetricsKeys)
	checkObject(t, "load_average.", sm["load_average"].(map[string]any), loadKeys)
	checkObject(t, "network_stats.", sm["network_stats"].(map[string]any), networkKeys)
	for i, f := range sm["filesystems"].([]any) {
		obj, ok := f.(map[string]any)
		require.True(t, ok, "filesystems[%d] is %T, want an object", i, f)
		checkObject(t, fmt.Sprintf("filesystems[%d].", i), obj, filesystemKeys)
	}
	for i, ip := range top["all_ips"].([]any) {
		_, ok := ip.(string)
		require.True(t, ok, "all_ips[%d] is %T, want a string", i, ip)
	}
	require.NotEmpty(t, top["platform_family"], "the backend answers 400 without platform_family")
	require.Equal(t, "ingest-metrics", top["action"])
	require.LessOrEqual(t, len(top["kernel_version"].(string)), MaxKernelVersion)
}

func checkObject(t testing.TB, prefix string, obj map[string]any, spec map[string]jsonKind) {
	t.Helper()
	var got, want []string
	for k := range obj {
		got = append(got, k)
	}
	for k := range spec {
		want = append(want, k)
	}
	sort.Strings(got)
	sort.Strings(want)
	require.Equal(t, want, got, "%skeys", prefix)
	for k, kind := range spec {
		v := obj[k]
		name := prefix + k
		switch kind {
		case kString:
			_, ok := v.(string)
			require.True(t, ok, "%s is %T, want a string", name, v)
		case kObject:
			_, ok := v.(map[string]any)
			require.True(t, ok, "%s is %T, want an object", name, v)
		case kArray:
			_, ok := v.([]any)
			require.True(t, ok, "%s is %T (%v), want an array", name, v, v)
		case kInt:
			n, ok := v.(json.Number)
			require.True(t, ok, "%s is %T, want a number", name, v)
			require.NotContains(t, n.String(), ".", "%s must be an integer", name)
			i, err := n.Int64()
			require.NoError(t, err, "%s must be an integer", name)
			require.GreaterOrEqual(t, i, int64(0), name)
		case kGiB, kPct:
			n, ok := v.(json.Number)
			require.True(t, ok, "%s is %T, want a number", name, v)
			f, err := n.Float64()
			require.NoError(t, err)
			require.False(t, strings.HasPrefix(n.String(), "-"), "%s is negative: %s", name, n)
			if kind == kPct {
				require.LessOrEqual(t, f, 100.0, name)
			}
			require.LessOrEqual(t, decimals(n.String()), 2, "%s = %s has more than two decimals", name, n)
		}
	}
}

// decimals counts the digits after the point of a JSON number, taking
// an exponent into account.
func decimals(s string) int {
	mant, exp, _ := strings.Cut(strings.ToLower(s), "e")
	e := 0
	if exp != "" {
		e, _ = strconv.Atoi(exp)
	}
	_, frac, _ := strings.Cut(mant, ".")
	return max(len(frac)-e, 0)
}

func TestClampAndRound(t *testing.T) {
	for _, c := range []struct {
		in, pct, nonNeg float64
	}{
		{0, 0, 0},
		{math.Copysign(0, -1), 0, 0},
		{-0.001, 0, 0},
		{-5, 0, 0},
		{0.004, 0, 0},
		{0.005, 0.01, 0.01},
		{12.345678, 12.35, 12.35},
		{99.994, 99.99, 99.99},
		{99.996, 100, 100},
		{100, 100, 100},
		{150, 100, 150},
		{math.NaN(), 0, 0},
		{math.Inf(1), 100, 0},
		{math.Inf(-1), 0, 0},
		{1e300, 100, 1e300},
	} {
		require.Equal(t, c.pct, clampPercent(c.in), "clampPercent(%v)", c.in)
		require.False(t, math.Signbit(clampPercent(c.in)), "clampPercent(%v) is -0", c.in)
		require.Equal(t, c.nonNeg, nonNegative(c.in), "nonNegative(%v)", c.in)
		require.False(t, math.Signbit(nonNegative(c.in)), "nonNegative(%v) is -0", c.in)
	}
	require.Equal(t, 0.0, round2(-0.004))
	require.False(t, math.Signbit(round2(-0.004)), "round2 never gives -0")
	require.Equal(t, 1e300, round2(1e300), "x*100 would overflow")
	require.Equal(t, 0.0, percent(5, 0))
	require.Equal(t, 0.0, percent(5, -1))
	require.Equal(t, 0.0, percent(5, math.NaN()))
	require.Equal(t, 100.0, percent(7, 5), "used above total (a racing statfs) is 100, not 140")
	require.Equal(t, 33.33, percent(1, 3))
	require.Equal(t, 0.0, gibOf(0))
	require.Equal(t, 1.0, gibOf(giB))
	require.Equal(t, 17179869184.0, gibOf(math.MaxUint64))
}

func TestTruncation(t *testing.T) {
	long := "6.8.0-1234567890-this-is-a-very-long-custom-kernel-name" // 55 bytes
	require.Greater(t, len(long), MaxKernelVersion)
	s := contractSample()
	s.Kernel = long
	p, _ := build(s)
	require.Equal(t, long[:MaxKernelVersion], p.KernelVersion)
	require.Equal(t, p.KernelVersion, p.SystemMetrics.KernelVersion)
	require.NoError(t, Validate(p))

	// Cut at a character boundary: "é" is two bytes at 44–45.
	k := strings.Repeat("a", 44) + "é" + "b"
	require.Equal(t, strings.Repeat("a", 44), truncate(k, MaxKernelVersion))
	require.Equal(t, "ab", truncate("ab", 2))
	require.Equal(t, "", truncate("é", 1))

	require.Equal(t, "6.1.0\uFFFDx", cleanText("6.1.0\xffx\n", 45), "invalid UTF-8 replaced, control characters dropped")
	require.Equal(t, "ab", cleanText("  a\tb \x00", 45))

	s = contractSample()
	s.Version = strings.Repeat("v", 80)
	s.PrimaryIP = strings.Repeat("1", 60)
	s.OSID = strings.Repeat("X", 200)
	p, _ = build(s)
	require.Len(t, p.Version, MaxVersion)
	require.Empty(t, p.PrimaryIP, "a cut address would be a wrong one")
	require.Equal(t, strings.Repeat("x", MaxPlatformFamily), p.PlatformFamily)
	require.NoError(t, Validate(p))

	s = contractSample()
	s.IPs = nil
	for i := range 100 {
		s.IPs = append(s.IPs, fmt.Sprintf("10.0.%d.%d", i/250, i%250))
	}
	p, _ = build(s)
	require.Len(t, p.AllIPs, MaxAllIPs)
	require.True(t, sort.StringsAreSorted(p.AllIPs))

	s = contractSample()
	s.IPs, s.PrimaryIP = nil, ""
	p, _ = build(s)
	b, err := json.Marshal(p)
	require.NoError(t, err)
	require.Contains(t, string(b), `"all_ips":[]`, "an array, never null")
	require.Contains(t, string(b), `"primary_ip":""`)
}

func TestBuildZeroSample(t *testing.T) {
	p, dropped := build(sample{})
	require.Zero(t, dropped)
	require.NoError(t, Validate(p))
	require.Equal(t, "unknown", p.PlatformFamily)
	b, err := json.Marshal(p)
	require.NoError(t, err)
	requireContractShape(t, b)
	require.Contains(t, string(b), `"filesystems":[]`)
}

func TestBuildCountersOutOfOrder(t *testing.T) {
	// Free above total, available above total, negative and NaN loads:
	// what a damaged file or a racing read can produce.
	s := sample{
		CPUPercent: math.NaN(), CPUCores: -3,
		MemTotal: 100, MemAvailable: 500,
		Root:        &fsUsage{Total: 10, Free: 50, Avail: 70},
		Filesystems: []fsUsage{{Mount: "/x", Total: 10, Free: 50, Avail: 70}},
		Load:        [3]float64{-1, math.Inf(1), math.NaN()},
	}
	p, _ := build(s)
	require.NoError(t, Validate(p))
	require.Equal(t, 0, p.SystemMetrics.CPUCores)
	require.Equal(t, 0.0, p.SystemMetrics.MemoryPercent)
	require.Equal(t, 0.0, p.SystemMetrics.DiskUsagePercent)
	require.Equal(t, LoadAverage{}, p.SystemMetrics.LoadAverage)
}

func fsEntry(mount string, totalGB float64) Filesystem {
	return Filesystem{Device: "/dev/x", MountPath: mount, UsedGB: 1, FreeGB: 1, TotalGB: totalGB, UsagePercent: 50}
}

func TestCapFilesystems(t *testing.T) {
	// 200 filesystems: far over 5000 bytes. The root and the largest are
	// kept, the smallest dropped, the result sorted by mount path.
	var in []Filesystem
	for i := range 200 {
		in = append(in, fsEntry(fmt.Sprintf("/srv/vol%03d", i), float64(i+1)))
	}
	in = append(in, fsEntry("/", 0.5))
	out, dropped := capFilesystems(in, MaxFilesystemsJSON)
	n, err := filesystemsJSONLen(out)
	require.NoError(t, err)
	require.Less(t, n, MaxFilesystemsJSON)
	require.Equal(t, len(in)-len(out), dropped)
	require.Positive(t, dropped)
	require.Equal(t, "/", out[0].MountPath, "root is kept first even though it is the smallest")
	require.True(t, sortedByMount(out))
	kept := map[string]bool{}
	for _, f := range out {
		kept[f.MountPath] = true
	}
	for i := 199; i >= 0; i-- {
		name := fmt.Sprintf("/srv/vol%03d", i)
		if i >= 200-(len(out)-1) {
			require.True(t, kept[name], "%s (%d GiB) is among the largest and must be kept", name, i+1)
		} else {
			require.False(t, kept[name], "%s (%d GiB) is among the smallest and must be dropped", name, i+1)
		}
	}
	// One more entry would not have fitted.
	next := fsEntry(fmt.Sprintf("/srv/vol%03d", 200-len(out)), float64(200-len(out)+1))
	m, _ := filesystemsJSONLen(append(append([]Filesystem{}, out...), next))
	require.GreaterOrEqual(t, m, MaxFilesystemsJSON)
}

func sortedByMount(fs []Filesystem) bool {
	return sort.SliceIsSorted(fs, func(i, j int) bool { return fs[i].MountPath < fs[j].MountPath })
}

func TestCapFilesystemsBoundary(t *testing.T) {
	one := fsEntry("/a", 1)
	n1, err := filesystemsJSONLen([]Filesystem{one})
	require.NoError(t, err)
	// A limit of exactly the list's length keeps it out (strictly under);
	// one more byte lets it in.
	out, dropped := capFilesystems([]Filesystem{one}, n1)
	require.Empty(t, out)
	require.Equal(t, 1, dropped)
	out, dropped = capFilesystems([]Filesystem{one}, n1+1)
	require.Len(t, out, 1)
	require.Zero(t, dropped)

	// Two entries need n1 + n2 - 1 bytes ("[a,b]").
	two := fsEntry("/b", 1)
	n2, _ := filesystemsJSONLen([]Filesystem{two})
	both, _ := filesystemsJSONLen([]Filesystem{one, two})
	require.Equal(t, n1+n2-1, both)
	out, _ = capFilesystems([]Filesystem{one, two}, both+1)
	require.Len(t, out, 2)
	out, dropped = capFilesystems([]Filesystem{one, two}, both)
	require.Len(t, out, 1)
	require.Equal(t, 1, dropped)

	// An entry too long to fit alone is skipped; smaller ones still go.
	huge := fsEntry("/"+strings.Repeat("h", 6000), 1000)
	out, dropped = capFilesystems([]Filesystem{huge, one, two}, MaxFilesystemsJSON)
	require.Equal(t, []Filesystem{one, two}, out)
	require.Equal(t, 1, dropped)
}

func TestCapFilesystemsMeasuresEscapes(t *testing.T) {
	// encoding/json writes "<" as \u003c and a newline as \n: the limit
	// applies to the JSON, not to the strings.
	var in []Filesystem
	for i := range 60 {
		in = append(in, fsEntry(fmt.Sprintf("/mnt/<%02d>\n&", i), float64(i)))
	}
	out, _ := capFilesystems(in, MaxFilesystemsJSON)
	b, err := json.Marshal(out)
	require.NoError(t, err)
	require.Less(t, len(b), MaxFilesystemsJSON)
	require.Contains(t, string(b), `\u003c`)
}

func TestBuildDropsFilesystems(t *testing.T) {
	s := contractSample()
	for i := range 100 {
		s.Filesystems = append(s.Filesystems, fsUsage{Device: "rpool/data/subvol-" + strconv.Itoa(100+i) + "-disk-0",
			Mount: "/rpool/data/subvol-" + strconv.Itoa(100+i) + "-disk-0", Total: uint64(i+1) * giB, Free: giB / 2, Avail: giB / 2})
	}
	p, dropped := build(s)
	require.NoError(t, Validate(p))
	require.Positive(t, dropped)
	require.Equal(t, 102, len(p.SystemMetrics.Filesystems)+dropped)
	require.Equal(t, "/", p.SystemMetrics.Filesystems[0].MountPath)
}

func TestValidateContractExample(t *testing.T) {
	// The §2.7 example body, which the backend accepts.
	body := `{"action":"ingest-metrics",
 "system_metrics":{
   "cpu_percent":12.5, "cpu_cores":8,
   "memory_used_gb":3.21, "memory_total_gb":15.5, "memory_percent":20.71,
   "disk_used_gb":40.12, "disk_total_gb":100.0, "disk_usage_percent":40.12,
   "filesystems":[{"device":"","mount_path":"/","used_gb":40.12,"free_gb":59.88,"total_gb":100.0,"usage_percent":40.12}],
   "load_average":{"one_min":0.5,"five_min":0.4,"fifteen_min":0.3},
   "network_stats":{"in_gb":1.23,"out_gb":0.45},
   "kernel_version":"6.8.0-45-generic"},
 "os_info":"ubuntu","os_version":"24.04","os_type":"linux","platform_family":"debian","version":"0.1.0",
 "primary_ip":"10.0.0.5","kernel_version":"6.8.0-45-generic","arch":"x86_64","all_ips":["10.0.0.5","fe80::1"]}`
	var p Payload
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&p), "Payload has exactly the contract's fields")
	require.NoError(t, Validate(p))
	b, err := json.Marshal(p)
	require.NoError(t, err)
	require.JSONEq(t, body, string(b))
	requireContractShape(t, b)
}

// TestValidateRefusals: each change the backend answers with a 400 or a
// 500 (NANNYAPI.md §0 item 9, §6.4) is refused, naming the field.
func TestValidateRefusals(t *testing.T) {
	valid, _ := build(contractSample())
	require.NoError(t, Validate(valid))
	manyFS := make([]Filesystem, 0, 60)
	for i := range 60 {
		manyFS = append(manyFS, fsEntry(fmt.Sprintf("/srv/volume-number-%03d", i), 1))
	}
	for _, c := range []struct {
		name   string
		change func(*Payload)
		want   string
	}{
		{"no platform_family (400)", func(p *Payload) { p.PlatformFamily = "" }, "platform_family required"},
		{"other action", func(p *Payload) { p.Action = "ingest" }, "action"},
		{"cpu_percent 150", func(p *Payload) { p.SystemMetrics.CPUPercent = 150 }, "cpu_percent 150"},
		{"memory_percent 100.01", func(p *Payload) { p.SystemMetrics.MemoryPercent = 100.01 }, "memory_percent"},
		{"disk_usage_percent -1", func(p *Payload) { p.SystemMetrics.DiskUsagePercent = -1 }, "disk_usage_percent"},
		{"negative load", func(p *Payload) { p.SystemMetrics.LoadAverage.FiveMin = -0.5 }, "load_average.five_min"},
		{"negative zero load", func(p *Payload) { p.SystemMetrics.LoadAverage.OneMin = math.Copysign(0, -1) }, "load_average.one_min"},
		{"negative cores", func(p *Payload) { p.SystemMetrics.CPUCores = -1 }, "cpu_cores"},
		{"negative memory", func(p *Payload) { p.SystemMetrics.MemoryUsedGB = -2 }, "memory_used_gb"},
		{"negative network", func(p *Payload) { p.SystemMetrics.NetworkStats.OutGB = -2 }, "network_stats.out_gb"},
		{"NaN disk", func(p *Payload) { p.SystemMetrics.DiskTotalGB = math.NaN() }, "disk_total_gb is NaN"},
		{"Inf cpu", func(p *Payload) { p.SystemMetrics.CPUPercent = math.Inf(1) }, "cpu_percent is +Inf"},
		{"kernel_version of 59 chars", func(p *Payload) { p.KernelVersion = strings.Repeat("k", 59) }, "kernel_version is 59 bytes"},
		{"version of 51", func(p *Payload) { p.Version = strings.Repeat("v", 51) }, "version is 51 bytes"},
		{"primary_ip of 46", func(p *Payload) { p.PrimaryIP = strings.Repeat("1", 46) }, "primary_ip"},
		{"platform_family of 101", func(p *Payload) { p.PlatformFamily = strings.Repeat("f", 101) }, "platform_family is 101"},
		{"os_info of 5001", func(p *Payload) { p.OSInfo = strings.Repeat("o", 5001) }, "os_info"},
		{"invalid UTF-8", func(p *Payload) { p.Arch = "x\xff" }, "arch is not UTF-8"},
		{"filesystems JSON over 5000", func(p *Payload) { p.SystemMetrics.Filesystems = manyFS }, "filesystems JSON is"},
		{"filesystem percent", func(p *Payload) { p.SystemMetrics.Filesystems[0].UsagePercent = 101 }, "filesystems[0].usage_percent"},
		{"filesystem negative", func(p *Payload) { p.SystemMetrics.Filesystems[1].FreeGB = -1 }, "filesystems[1].free_gb"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := valid
			p.SystemMetrics.Filesystems = append([]Filesystem(nil), valid.SystemMetrics.Filesystems...)
			c.change(&p)
			err := Validate(p)
			require.Error(t, err)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Contains(t, err.Error(), c.want)
		})
	}
	b, _ := json.Marshal(manyFS)
	require.GreaterOrEqual(t, len(b), MaxFilesystemsJSON, "the case above is over the limit")

	// Several problems are all named.
	p := valid
	p.PlatformFamily, p.SystemMetrics.CPUPercent = "", 200
	var ve *ValidationError
	require.ErrorAs(t, Validate(p), &ve)
	require.Len(t, ve.Problems, 2)
}

func TestPlatformFamily(t *testing.T) {
	for _, c := range []struct{ id, like, want string }{
		{"debian", "", "debian"},
		{"ubuntu", "debian", "debian"},
		{"linuxmint", "ubuntu debian", "debian"},
		{"pop", "ubuntu debian", "debian"},
		{"neon", "ubuntu debian", "debian"}, // unknown ID, known ID_LIKE
		{"rhel", "fedora", "rhel"},
		{"centos", "rhel fedora", "rhel"},
		{"rocky", "rhel centos fedora", "rhel"},
		{"almalinux", "rhel centos fedora", "rhel"},
		{"ol", "fedora", "rhel"},
		{"amzn", "centos rhel fedora", "rhel"},
		{"fedora", "", "rhel"},
		{"opensuse-leap", "suse opensuse", "suse"},
		{"opensuse-tumbleweed", "opensuse suse", "suse"},
		{"sles", "suse", "suse"},
		{"arch", "", "arch"},
		{"manjaro", "arch", "arch"},
		{"endeavouros", "arch", "arch"},
		{"alpine", "", "alpine"},
		{"postmarketos", "alpine", "alpine"},
		{"gentoo", "", "gentoo"},
		{"Ubuntu", "", "debian"},
		{`"debian"`, "", "debian"},
		{"nixos", "", "nixos"},
		{"void", "", "void"},
		{"", "", "unknown"},
		{"", "debian", "debian"},
		{"  ", "?!", "unknown"},
		{strings.Repeat("z", 300), "", strings.Repeat("z", MaxPlatformFamily)},
	} {
		require.Equal(t, c.want, platformFamily(c.id, c.like), "ID=%q ID_LIKE=%q", c.id, c.like)
	}
}

// FuzzBuild: whatever a sample holds, build gives a payload the backend
// accepts, with the contract's shape, two decimals and capped lists.
func FuzzBuild(f *testing.F) {
	f.Add(12.5, 8, uint64(16642998272), uint64(13194139533), uint64(100*giB), uint64(60*giB), uint64(55*giB),
		0.5, 0.4, 0.3, uint64(1320702443), uint64(483183820), "debian", "", "12.11", "6.1.0-18-amd64", "x86_64",
		"0.1.0", "10.0.0.5", "/", "/dev/sda1", 1)
	f.Add(math.NaN(), -1, uint64(0), uint64(1), uint64(0), uint64(10), uint64(20),
		-1.0, math.Inf(1), math.NaN(), uint64(math.MaxUint64), uint64(0), "", "", "", strings.Repeat("k", 80), "",
		strings.Repeat("v", 90), strings.Repeat("1", 90), "/mnt/\xff\n<x>", "\x00", 300)
	f.Add(1e308, math.MaxInt, uint64(math.MaxUint64), uint64(math.MaxUint64), uint64(math.MaxUint64), uint64(0),
		uint64(math.MaxUint64), 1e308, 1e-320, -0.0, uint64(1), uint64(1), "Ubuntu", "debian", "24.04",
		"6.8.0-45-generic", "aarch64", "", "fe80::1", strings.Repeat("/very/long/mount", 300), "dev", 40)
	f.Fuzz(func(t *testing.T, cpu float64, cores int, memTotal, memAvail, fsTotal, fsFree, fsAvail uint64,
		l1, l5, l15 float64, rx, tx uint64, id, like, ver, kernel, arch, version, ip, mount, dev string, nfs int) {
		s := sample{
			CPUPercent: cpu, CPUCores: cores, MemTotal: memTotal, MemAvailable: memAvail,
			Root: &fsUsage{Total: fsTotal, Free: fsFree, Avail: fsAvail}, Load: [3]float64{l1, l5, l15},
			RxBytes: rx, TxBytes: tx, OSID: id, OSIDLike: like, OSVersion: ver, Kernel: kernel, Arch: arch,
			Version: version, PrimaryIP: ip, IPs: []string{ip, mount, dev},
		}
		nfs = min(max(nfs, 0), 400)
		for i := range nfs {
			s.Filesystems = append(s.Filesystems, fsUsage{Device: dev, Mount: fmt.Sprintf("%s/%d", mount, i),
				Total: fsTotal / uint64(i+1), Free: fsFree, Avail: fsAvail / uint64(i+1)})
		}
		p, dropped := build(s)
		require.NoError(t, Validate(p))
		require.Equal(t, nfs, len(p.SystemMetrics.Filesystems)+dropped)
		require.True(t, sortedByMount(p.SystemMetrics.Filesystems))
		require.True(t, utf8.ValidString(p.KernelVersion))
		b, err := json.Marshal(p)
		require.NoError(t, err)
		requireContractShape(t, b)
	})
}
