package tcplife

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The C struct event is 104 bytes; a layout change must show here.
func TestEventLayout(t *testing.T) {
	require.Equal(t, uintptr(104), unsafe.Sizeof(tcplifeEvent{}))
	require.Equal(t, uintptr(40), unsafe.Sizeof(tcplifeSockInfo{}))
}

// exchange runs one connection over host: the client sends tx bytes, the
// server reads them all and answers rx bytes, the client reads them and
// closes first, then the server closes. It returns both endpoints.
func exchange(t *testing.T, network, host string, tx, rx int) (client, server netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
	if err != nil && network == "tcp6" {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	require.NoError(t, err)
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		if _, err := io.CopyN(io.Discard, c, int64(tx)); err != nil {
			served <- err
			return
		}
		if _, err := c.Write(make([]byte, rx)); err != nil {
			served <- err
			return
		}
		// Wait for the client's FIN so that the client closes first.
		_, err = c.Read(make([]byte, 1))
		if err == io.EOF {
			err = nil
		}
		served <- err
	}()
	c, err := net.Dial(network, ln.Addr().String())
	require.NoError(t, err)
	_, err = c.Write(make([]byte, tx))
	require.NoError(t, err)
	_, err = io.CopyN(io.Discard, c, int64(rx))
	require.NoError(t, err)
	client = c.LocalAddr().(*net.TCPAddr).AddrPort()
	require.NoError(t, c.Close())
	require.NoError(t, <-served)
	return client, ln.Addr().(*net.TCPAddr).AddrPort()
}

// runUntil is catalogtest.Run that also waits, after the workload, until
// the trace has seen want events: the last close of a loopback
// connection may still be in flight when the workload returns.
func runUntil(t *testing.T, k *catalog.Kernel, p catalog.Params, want uint64, workload func()) *catalog.Result {
	t.Helper()
	catalogtest.Supported(t, k, Entry{})
	before := catalogtest.OwnedBPF(t)
	tr, err := Entry{}.Start(context.Background(), k, p)
	require.NoError(t, err)
	during := catalogtest.OwnedBPF(t)
	workload()
	require.Eventually(t, func() bool { return tr.Seen() >= want }, 5*time.Second, 10*time.Millisecond,
		"events seen: %d, want %d", tr.Seen(), want)
	res, err := tr.Stop()
	require.NoError(t, err)
	again, err := tr.Stop()
	require.NoError(t, err)
	require.Same(t, res, again, "Stop must be idempotent")
	catalogtest.RequireReleased(t, before, during)
	return res
}

func TestLifetimesBytesExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	pid := strconv.Itoa(os.Getpid())
	cases := []struct {
		network, host string
		tx, rx        int
	}{
		{"tcp4", "127.0.0.1", 123457, 54321},
		{"tcp6", "::1", 7, 300001},
	}
	for _, c := range cases {
		t.Run(c.network, func(t *testing.T) {
			var client, server netip.AddrPort
			// The listener's port is unknown before the workload: filter on
			// this process, and pick this connection by its endpoints.
			res := runUntil(t, k, catalog.Params{PID: uint32(os.Getpid())}, 2, func() {
				client, server = exchange(t, c.network, c.host, c.tx, c.rx)
			})
			require.Zero(t, res.Lost)
			cl := connRowFor(t, res, client.String(), server.String())
			assert.Equal(t, []string{pid, "client", strconv.Itoa(c.tx), strconv.Itoa(c.rx), "closed first"},
				[]string{cl[0], cl[2], cl[5], cl[6], cl[8]})
			assert.Greater(t, catalogtest.Num(t, cl[7]), uint64(0), "duration")
			sv := connRowFor(t, res, server.String(), client.String())
			assert.Equal(t, []string{pid, "server", strconv.Itoa(c.rx), strconv.Itoa(c.tx), "peer closed first"},
				[]string{sv[0], sv[2], sv[5], sv[6], sv[8]})
			assert.Greater(t, catalogtest.Num(t, sv[7]), uint64(0), "duration")
			// Both show up in the groups and the largest table too.
			g := catalogtest.FindRow(t, res.Tables[0], func(r []string) bool { return r[3] == server.String() })
			assert.Equal(t, []string{pid, "client", "1", strconv.Itoa(c.tx), strconv.Itoa(c.rx)}, []string{g[0], g[2], g[4], g[5], g[6]})
			require.Len(t, res.Histograms, 1)
			assert.GreaterOrEqual(t, res.Histograms[0].Count, uint64(2))
		})
	}
}

func TestPortAndProcessFilters(t *testing.T) {
	k := catalogtest.Kernel(t)
	// Port filter: a listener on a port chosen first, then exactly its two
	// sides.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	defer ln.Close()
	dialClose := func(n int) {
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp4", ln.Addr().String())
			require.NoError(t, err)
			_, err = c.Write([]byte("hello"))
			require.NoError(t, err)
			require.NoError(t, c.Close())
		}
	}
	res := runUntil(t, k, catalog.Params{Port: port}, 6, func() {
		dialClose(3)
		exchange(t, "tcp4", "127.0.0.1", 1, 1) // another port
	})
	require.Zero(t, res.Lost)
	require.Equal(t, uint64(6), res.Events, "3 client and 3 server sides: %v", res.Samples.Rows)
	var clientTx, serverRx uint64
	for _, r := range res.Samples.Rows {
		switch r[2] {
		case "client":
			clientTx += catalogtest.Num(t, r[5])
		case "server":
			serverRx += catalogtest.Num(t, r[6])
		}
	}
	assert.Equal(t, uint64(15), clientTx)
	assert.Equal(t, uint64(15), serverRx)

	// A uid nobody here runs as, and a minimum lifetime no connection
	// reaches: nothing passes.
	uid := uint32(4242)
	for _, p := range []catalog.Params{{Port: port, UID: &uid}, {Port: port, MinLatency: time.Hour}} {
		res = catalogtest.Run(t, k, Entry{}, p, func() { dialClose(2) })
		assert.Zero(t, res.Events, "%+v: %v", p, res.Samples.Rows)
	}
}

// A server that closes with SO_LINGER 0 resets the connection: the client
// sees ECONNRESET; the server's side ends aborted in close() without a
// transition that names its owner (see Event).
func TestReset(t *testing.T) {
	k := catalogtest.Kernel(t)
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	server := ln.Addr().(*net.TCPAddr).AddrPort()
	var client netip.AddrPort
	res := runUntil(t, k, catalog.Params{Port: server.Port()}, 2, func() {
		c, err := net.Dial("tcp4", server.String())
		require.NoError(t, err)
		defer c.Close()
		client = c.LocalAddr().(*net.TCPAddr).AddrPort()
		s, err := ln.AcceptTCP()
		require.NoError(t, err)
		require.NoError(t, s.SetLinger(0))
		require.NoError(t, s.Close())
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, syscall.ECONNRESET)
	})
	require.Zero(t, res.Lost)
	require.Equal(t, uint64(2), res.Events)
	cl := connRowFor(t, res, client.String(), server.String())
	assert.Equal(t, []string{strconv.Itoa(os.Getpid()), "client", "0", "0", "ECONNRESET"}, []string{cl[0], cl[2], cl[5], cl[6], cl[8]})
	sv := connRowFor(t, res, server.String(), client.String())
	assert.Equal(t, []string{"?", "server", "0", "0", "aborted"}, []string{sv[0], sv[2], sv[5], sv[6], sv[8]})
}

func TestAggregate(t *testing.T) {
	a := newAggregate()
	srv := netip.MustParseAddrPort("10.0.0.1:5432")
	for i := 0; i < 30; i++ {
		a.add(Event{Local: netip.MustParseAddrPort("10.0.0.2:40000"), Remote: srv, PID: 7, Comm: "psql", OwnerKnown: true,
			Role: "client", TxBytes: uint64(i), RxBytes: 1000, Duration: time.Duration(i+1) * time.Millisecond,
			DurationKnown: true, State: tcpFinWait2})
	}
	a.add(Event{Local: srv, Remote: netip.MustParseAddrPort("10.0.0.9:1234"), Role: "server", Err: 104, State: tcpEstablished, DurationKnown: true, RxBytes: 5000})
	a.add(Event{Local: srv, Remote: netip.MustParseAddrPort("10.0.0.9:1235"), Role: "?", OwnerKnown: true, PID: 9, Comm: "pg", State: tcpLastAck})
	res := a.result(catalog.Params{})
	res.Compact()
	assert.Equal(t, uint64(32), res.Events)
	assert.Equal(t, []string{"7", "psql", "client", "10.0.0.1:5432", "30", "435", "30000", "30000"}, res.Tables[0].Rows[0])
	require.Len(t, res.Tables[1].Rows, catalog.MaxRows)
	assert.Equal(t, "5000", res.Tables[1].Rows[0][6], "largest first")
	assert.Equal(t, "29", res.Tables[1].Rows[1][5])
	assert.Equal(t, "11", res.Tables[1].Rows[catalog.MaxRows-1][5])
	assert.Equal(t, 32, res.Tables[1].TotalRows)
	assert.Equal(t, []string{"?", "?", "server", "10.0.0.1:5432", "10.0.0.9:1234", "0", "5000", "0", "ECONNRESET"}, catalogtest.FindRow(t, res.Tables[1], func(r []string) bool { return r[4] == "10.0.0.9:1234" }))
	assert.Equal(t, uint64(31), res.Histograms[0].Count, "the connection opened before the trace has no duration")
	assert.Contains(t, res.Summary, "32 connections closed, 435 bytes sent, 35000 received")
	assert.Contains(t, res.Summary, "ended: closed first 30, ECONNRESET 1, peer closed first 1")
	g := catalogtest.FindRow(t, res.Tables[0], func(r []string) bool { return r[2] == "server" })
	assert.Equal(t, ":5432 <- 10.0.0.9", g[3])
}

func TestDecodeEvent(t *testing.T) {
	rec := tcplifeEvent{Family: 10, Sport: 443, Dport: 50000, Active: 0, Flags: flagBirth | flagIdent | 4,
		TxBytes: 5, RxBytes: 6, DurationNs: 2500, Pid: 11, Oldstate: tcpLastAck}
	copy(rec.Saddr[:], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(rec.Daddr[:], netip.MustParseAddr("::ffff:192.0.2.1").AsSlice())
	copy(rec.Comm[:], []int8{'n', 'g', 'x'})
	ev := decodeEvent(&rec)
	assert.Equal(t, "[2001:db8::1]:443", ev.Local.String())
	assert.Equal(t, "192.0.2.1:50000", ev.Remote.String())
	assert.Equal(t, "server", ev.Role)
	assert.Equal(t, "ngx", ev.Comm)
	assert.Equal(t, "peer closed first", ev.End())
	assert.True(t, ev.OwnerKnown && ev.DurationKnown)
}

func TestValidate(t *testing.T) {
	require.NoError(t, catalog.Params{Port: 443, MinLatency: time.Second, Comm: "nginx"}.Validate(Info))
	require.ErrorContains(t, catalog.Params{FailedOnly: true}.Validate(Info), "tcplife does not support the failed filter")
}

func FuzzDecode(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(tcplifeEvent{}))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec tcplifeEvent
		if catalog.Decode(raw, &rec) != nil {
			return
		}
		ev := decodeEvent(&rec)
		a := newAggregate()
		a.add(ev)
		a.add(ev)
		a.result(catalog.Params{}).Compact()
	})
}

func connRowFor(t *testing.T, res *catalog.Result, local, remote string) []string {
	t.Helper()
	return catalogtest.FindRow(t, *res.Samples, func(r []string) bool { return r[3] == local && r[4] == remote })
}
