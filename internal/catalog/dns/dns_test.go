package dns

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The C struct dns_event is 320 bytes; a layout change must show here.
func TestEventLayout(t *testing.T) {
	require.Equal(t, uintptr(320), unsafe.Sizeof(dnsDnsEvent{}))
}

func TestDecodeAndResult(t *testing.T) {
	var rec dnsDnsEvent
	rec.Pid, rec.Func, rec.Family, rec.LatencyNs = 42, uint32(FuncGetaddrinfo), 2, 1500
	copy(rec.Addr[:], []byte{127, 0, 0, 1})
	for i, c := range "example.com" {
		rec.Name[i] = int8(c)
	}
	ev := decodeEvent(&rec)
	assert.Equal(t, "example.com", ev.Name)
	assert.Equal(t, netip.MustParseAddr("127.0.0.1"), ev.Addr)
	assert.Equal(t, "ok", ev.Result())
	rec.Family = 10
	copy(rec.Addr[:], netip.MustParseAddr("2001:db8::1").AsSlice())
	assert.Equal(t, "2001:db8::1", decodeEvent(&rec).Addr.String())
	for _, c := range []struct {
		fn     Func
		status int32
		want   string
	}{
		{FuncGetaddrinfo, -2, "EAI_NONAME"},
		{FuncGetaddrinfo, -3, "EAI_AGAIN"},
		{FuncGetaddrinfo, -99, "EAI -99"},
		{FuncGethostbyname2, -1, "not found"},
		{FuncGethostbynameR, 34, "ERANGE"},
	} {
		assert.Equal(t, c.want, Event{Func: c.fn, Status: c.status}.Result())
	}
	assert.Equal(t, "func 9", Func(9).String())
}

func TestAggregate(t *testing.T) {
	a := newAggregate()
	ok := netip.MustParseAddr("10.0.0.1")
	for i := 0; i < 3; i++ {
		a.add(Event{PID: 5, Comm: "curl", Func: FuncGetaddrinfo, Name: "a.example", Latency: 2 * time.Millisecond, Addr: ok})
	}
	a.add(Event{PID: 6, Comm: "ping", Func: FuncGethostbyname2, Name: "b.example", Status: -1, Latency: time.Millisecond})
	res := a.result(catalog.Params{})
	assert.Equal(t, uint64(4), res.Events)
	assert.Equal(t, []string{"a.example", "getaddrinfo", "ok", "3", "2000.0", "2000.0", "10.0.0.1"}, res.Tables[0].Rows[0])
	assert.Equal(t, []string{"b.example", "gethostbyname2", "not found", "1", "1000.0", "1000.0", "-"}, res.Tables[0].Rows[1])
	assert.Equal(t, []string{"5", "curl", "3", "0"}, res.Tables[1].Rows[0])
	assert.Equal(t, []string{"6", "ping", "1", "1"}, res.Tables[1].Rows[1])
	require.Len(t, res.Histograms, 1)
	assert.Equal(t, uint64(4), res.Histograms[0].Count)
	assert.Contains(t, res.Summary, "4 lookups, 1 failed, 2 distinct names")
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(dnsDnsEvent{}))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec dnsDnsEvent
		if catalog.Decode(raw, &rec) != nil {
			return
		}
		a := newAggregate()
		a.add(decodeEvent(&rec))
		a.result(catalog.Params{}).Compact()
	})
}

// uniqueGetent copies getent under a unique name, so that a comm filter
// keeps exactly this test's lookups.
func uniqueGetent(t *testing.T) string {
	src, err := exec.LookPath("getent")
	if err != nil {
		t.Skip("getent not installed")
	}
	return catalogtest.CopyBinary(t, src, catalogtest.UniqueComm(t, "getent"))
}

func getent(bin string, args ...string) { _ = exec.Command(bin, args...).Run() }

// getent ahosts calls getaddrinfo once; getent hosts calls gethostbyname2
// for AF_INET6 and, when that fails, again for AF_INET (each nesting a
// gethostbyname2_r call that must not count). localhost comes from
// /etc/hosts; a .invalid name fails without a network.
func TestDNSGetentExact(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	bin := uniqueGetent(t)
	comm := filepath.Base(bin)
	missing := fmt.Sprintf("nanny-%d.invalid", rand.Uint64())
	const nMissing, nLocal, nHosts = 5, 4, 3
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: comm}, func() {
		catalogtest.Repeat(nMissing, func() { getent(bin, "ahosts", missing) })
		catalogtest.Repeat(nLocal, func() { getent(bin, "ahosts", "localhost") })
		catalogtest.Repeat(nHosts, func() { getent(bin, "hosts", missing) })
	})
	t.Logf("%s: %s", res.Attach, res.Summary)
	require.Zero(t, res.Lost)
	assert.Equal(t, uint64(nMissing+nLocal+2*nHosts), res.Events)
	names := res.Tables[0]
	assert.Equal(t, catalog.U(nMissing), catalogtest.Row(t, names, missing, "getaddrinfo", "EAI_NONAME")[3])
	local := catalogtest.Row(t, names, "localhost", "getaddrinfo", "ok")
	assert.Equal(t, catalog.U(nLocal), local[3])
	assert.Equal(t, "127.0.0.1", local[6])
	assert.Equal(t, catalog.U(2*nHosts), catalogtest.Row(t, names, missing, "gethostbyname2", "not found")[3])
	assert.Len(t, names.Rows, 3, "%v", names.Rows)
	// One process per getent run, each named comm.
	assert.Equal(t, nMissing+nLocal+nHosts, res.Tables[1].TotalRows)
	for _, r := range res.Tables[1].Rows {
		assert.Equal(t, comm, r[1])
	}
	require.Len(t, res.Histograms, 1)
	assert.Equal(t, res.Events, res.Histograms[0].Count)
	for _, s := range res.Samples.Rows {
		assert.NotEqual(t, "0.0", s[5], "latency of %v", s)
	}
}

func TestDNSFailedAndMinLatencyFilters(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	bin := uniqueGetent(t)
	comm := filepath.Base(bin)
	missing := fmt.Sprintf("nanny-%d.invalid", rand.Uint64())
	work := func() {
		catalogtest.Repeat(3, func() { getent(bin, "ahosts", missing) })
		catalogtest.Repeat(2, func() { getent(bin, "ahosts", "localhost") })
	}
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: comm, FailedOnly: true}, work)
	assert.Equal(t, uint64(3), res.Events)
	assert.Equal(t, "3", catalogtest.Row(t, res.Tables[0], missing, "getaddrinfo", "EAI_NONAME")[3])
	res = catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: comm, MinLatency: time.Hour}, work)
	assert.Zero(t, res.Events)
}

// With the ring buffer pretended missing, events come through the perf
// buffer with the same counts.
func TestDNSPerfBufferFallback(t *testing.T) {
	catalogtest.Kernel(t)
	k := catalog.NewKernel(nil)
	k.Disable[catalog.FeatureRingBuf] = true
	bin := uniqueGetent(t)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Comm: filepath.Base(bin)}, func() {
		catalogtest.Repeat(4, func() { getent(bin, "ahosts", "localhost") })
	})
	assert.Contains(t, res.Attach, "perf buffer")
	assert.Zero(t, res.Lost)
	assert.Equal(t, "4", catalogtest.Row(t, res.Tables[0], "localhost", "getaddrinfo", "ok")[3])
}
