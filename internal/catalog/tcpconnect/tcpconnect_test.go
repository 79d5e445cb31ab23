package tcpconnect

import (
	"net"
	"net/netip"
	"os"
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
	require.Equal(t, uintptr(40), unsafe.Sizeof(tcpconnectDestKey{}))
	require.Equal(t, uintptr(176), unsafe.Sizeof(tcpconnectDestStats{}))
	require.Equal(t, uintptr(48), unsafe.Sizeof(tcpconnectAttempt{}))
}

// loopback is one address family's test fixture: a listening port and a
// port that is bound (so nobody else can listen there) but refuses.
type loopback struct {
	open, closed netip.AddrPort
}

func newLoopback(t *testing.T, network, host string) loopback {
	t.Helper()
	ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
	if err != nil && network == "tcp6" {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := netip.MustParseAddr(host)
	return loopback{
		open:   ln.Addr().(*net.TCPAddr).AddrPort(),
		closed: netip.AddrPortFrom(addr, boundPort(t, addr, false)),
	}
}

// boundPort binds a TCP socket to a free port of addr, listening with a
// zero backlog when listen is true, and returns the port.
func boundPort(t *testing.T, addr netip.Addr, listen bool) uint16 {
	t.Helper()
	fd := socket(t, addr)
	require.NoError(t, unix.Bind(fd, sockaddr(netip.AddrPortFrom(addr, 0))))
	if listen {
		require.NoError(t, unix.Listen(fd, 0))
	}
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return uint16(sa.Port)
	case *unix.SockaddrInet6:
		return uint16(sa.Port)
	}
	t.Fatalf("unexpected sockaddr %T", sa)
	return 0
}

func socket(t *testing.T, addr netip.Addr) int {
	t.Helper()
	family := unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func dial(t *testing.T, ap netip.AddrPort, wantErr bool) {
	t.Helper()
	c, err := net.Dial("tcp", ap.String())
	if wantErr {
		require.ErrorIs(t, err, unix.ECONNREFUSED)
		return
	}
	require.NoError(t, err)
	c.Close()
}

func TestConnectOutcomesExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	v4 := newLoopback(t, "tcp4", "127.0.0.1")
	v6 := newLoopback(t, "tcp6", "::1")
	// A listener whose accept queue is full drops further SYNs silently:
	// the first connect fills it, the next one times out, the last one is
	// closed by the application while its SYN is unanswered.
	lo := netip.MustParseAddr("127.0.0.1")
	full := netip.AddrPortFrom(lo, boundPort(t, lo, true))

	const ok4, refused4, ok6, refused6 = 40, 15, 25, 10
	pid := os.Getpid()
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(pid)}, func() {
		catalogtest.Repeat(ok4, func() { dial(t, v4.open, false) })
		catalogtest.Repeat(refused4, func() { dial(t, v4.closed, true) })
		catalogtest.Repeat(ok6, func() { dial(t, v6.open, false) })
		catalogtest.Repeat(refused6, func() { dial(t, v6.closed, true) })

		fill := socket(t, lo)
		require.NoError(t, unix.Connect(fill, sockaddr(full)))
		timeout := socket(t, lo)
		// One SYN retransmission at most, and a user timeout below the
		// first RTO: the handshake fails with ETIMEDOUT after about 1 s.
		require.NoError(t, unix.SetsockoptInt(timeout, unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1))
		require.NoError(t, unix.SetsockoptInt(timeout, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 100))
		require.ErrorIs(t, unix.Connect(timeout, sockaddr(full)), unix.ETIMEDOUT)
		abort := socket(t, lo)
		require.NoError(t, unix.SetNonblock(abort, true))
		require.ErrorIs(t, unix.Connect(abort, sockaddr(full)), unix.EINPROGRESS)
		require.NoError(t, unix.Close(abort))
	})
	require.Zero(t, res.Lost)
	require.Equal(t, "connections by destination", res.Tables[0].Title)
	dests := res.Tables[0]
	me := "/" + strconv.Itoa(pid)

	for _, c := range []struct {
		dest                                     netip.AddrPort
		attempts, ok, refused, timedOut, aborted uint64
	}{
		{v4.open, ok4, ok4, 0, 0, 0},
		{v4.closed, refused4, 0, refused4, 0, 0},
		{v6.open, ok6, ok6, 0, 0, 0},
		{v6.closed, refused6, 0, refused6, 0, 0},
		{full, 3, 1, 0, 1, 1},
	} {
		r := catalogtest.Row(t, dests, c.dest.String())
		assert.Equal(t, c.attempts, catalogtest.Num(t, r[1]), "%s attempts", c.dest)
		assert.Equal(t, c.ok, catalogtest.Num(t, r[2]), "%s established", c.dest)
		assert.Equal(t, c.attempts-c.ok, catalogtest.Num(t, r[3]), "%s failed", c.dest)
		assert.Equal(t, c.refused, catalogtest.Num(t, r[4]), "%s refused", c.dest)
		assert.Equal(t, c.timedOut, catalogtest.Num(t, r[5]), "%s timed out", c.dest)
		assert.Equal(t, "0", r[6], "%s reset", c.dest)
		assert.Equal(t, c.aborted, catalogtest.Num(t, r[7]), "%s aborted", c.dest)
		assert.Equal(t, "0", r[8], "%s other", c.dest)
		assert.Equal(t, "0", r[9], "%s pending", c.dest)
		assert.True(t, strings.HasSuffix(r[12], me), "%s processes %q", c.dest, r[12])
	}
	assert.Len(t, dests.Rows, 5, "only this test's destinations pass the pid filter: %v", dests.Rows)

	procs := catalogtest.Row(t, res.Tables[1], strconv.Itoa(pid))
	assert.Equal(t, uint64(ok4+refused4+ok6+refused6+3), catalogtest.Num(t, procs[2]))
	assert.Equal(t, uint64(ok4+ok6+1), catalogtest.Num(t, procs[3]))

	hists := map[string]uint64{}
	for _, h := range res.Histograms {
		hists[h.Title] = h.Count
	}
	assert.Equal(t, uint64(ok4+ok6+1), hists["connect latency, all destinations"])
	assert.Equal(t, uint64(ok4), hists["connect latency to "+v4.open.String()])
	assert.Equal(t, uint64(ok6), hists["connect latency to "+v6.open.String()])
	assert.Equal(t, uint64(ok4+refused4+ok6+refused6+3), res.Events)
}

func TestFailedAndPortFilters(t *testing.T) {
	k := catalogtest.Kernel(t)
	v4 := newLoopback(t, "tcp4", "127.0.0.1")
	other := newLoopback(t, "tcp4", "127.0.0.1")
	pid := uint32(os.Getpid())
	work := func() {
		catalogtest.Repeat(10, func() { dial(t, v4.open, false) })
		catalogtest.Repeat(7, func() { dial(t, v4.closed, true) })
		catalogtest.Repeat(4, func() { dial(t, other.closed, true) })
	}

	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: pid, FailedOnly: true}, work)
	require.Len(t, res.Tables[0].Rows, 2, "failed-only keeps the refused destinations: %v", res.Tables[0].Rows)
	assert.Equal(t, uint64(7), catalogtest.Num(t, catalogtest.Row(t, res.Tables[0], v4.closed.String())[4]))
	assert.Equal(t, uint64(4), catalogtest.Num(t, catalogtest.Row(t, res.Tables[0], other.closed.String())[1]))
	assert.Empty(t, res.Histograms)

	res = catalogtest.Run(t, k, Entry{}, catalog.Params{Port: v4.closed.Port()}, work)
	require.Len(t, res.Tables[0].Rows, 1, "the port filter keeps one destination: %v", res.Tables[0].Rows)
	assert.Equal(t, uint64(7), catalogtest.Num(t, catalogtest.Row(t, res.Tables[0], v4.closed.String())[4]))
}

func TestAggregateMergesProcessesAndPending(t *testing.T) {
	a := newAggregate()
	key := func(pid uint32, comm string, port uint16) *tcpconnectDestKey {
		k := &tcpconnectDestKey{Tgid: pid, Dport: port, Family: afInet}
		copy(k.Daddr[:], []byte{10, 0, 0, 1})
		for i := range comm {
			k.Comm[i] = int8(comm[i])
		}
		return k
	}
	s := &tcpconnectDestStats{Attempts: 5, Established: 3, Refused: 1, Other: 1, LastOther: int32(unix.EHOSTUNREACH)}
	s.LatencyUs.Slots[4] = 3
	a.addStats(key(1, "curl", 443), s)
	a.addStats(key(2, "wget", 443), &tcpconnectDestStats{Attempts: 2, Timedout: 2})
	a.addPending(key(2, "wget", 443))
	a.addStats(key(1, "curl", 80), &tcpconnectDestStats{Attempts: 1, Aborted: 1})
	res := a.result(catalog.Params{})
	res.Compact()

	r := catalogtest.Row(t, res.Tables[0], "10.0.0.1:443")
	assert.Equal(t, []string{"10.0.0.1:443", "7", "3", "4", "1", "2", "0", "0", "1 (EHOSTUNREACH)", "1", "23", "30", "curl/1 wget/2"}, r)
	assert.Equal(t, []string{"1", "curl", "6", "3", "3", "0", "2"}, catalogtest.Row(t, res.Tables[1], "1"))
	assert.Equal(t, uint64(8), res.Events)
	require.Len(t, res.Histograms, 2)
	assert.Equal(t, uint64(3), res.Histograms[1].Count)
	assert.Contains(t, res.Summary, "8 connection attempts to 2 destinations: 3 established, 5 failed (1 refused, 2 timed out, 0 reset, 1 aborted, 1 other), 1 pending")
	assert.Contains(t, res.Summary, "most failures: 10.0.0.1:443 (4)")
}

func TestDecodeKeyIPv6(t *testing.T) {
	k := tcpconnectDestKey{Dport: 5432, Family: 10}
	copy(k.Daddr[:], netip.MustParseAddr("2001:db8::1").AsSlice())
	assert.Equal(t, "[2001:db8::1]:5432", decodeKey(&k).Dest.String())
	copy(k.Daddr[:], netip.MustParseAddr("::ffff:192.0.2.7").AsSlice())
	assert.Equal(t, "192.0.2.7:5432", decodeKey(&k).Dest.String(), "v4-mapped shown as IPv4")
}

func TestValidate(t *testing.T) {
	require.NoError(t, catalog.Params{Port: 443, FailedOnly: true, Comm: "curl"}.Validate(Info))
	require.ErrorContains(t, catalog.Params{MinLatency: 1}.Validate(Info), "tcpconnect does not support the min_latency filter")
}

// The map keys and values come from the kernel; whatever their bytes, the
// aggregation must not panic.
func FuzzDecodeStats(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(tcpconnectDestKey{})+unsafe.Sizeof(tcpconnectDestStats{}))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var (
			key tcpconnectDestKey
			val tcpconnectDestStats
		)
		ks := int(unsafe.Sizeof(key))
		if catalog.Decode(raw, &key) != nil || catalog.Decode(raw[ks:], &val) != nil {
			return
		}
		a := newAggregate()
		a.addStats(&key, &val)
		a.addPending(&key)
		a.result(catalog.Params{FailedOnly: true}).Compact()
	})
}
