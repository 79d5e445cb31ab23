package tcpreset

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	"golang.org/x/sys/unix"
)

// The C struct reset_key is 48 bytes; a layout change must show here.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(48), unsafe.Sizeof(tcpresetResetKey{}))
}

// refusingPort returns a loopback port that refuses connections and that
// no other socket can take while the test runs: bound, without
// SO_REUSEADDR, and not listening, so a SYN to it finds no socket. A port
// released again (a listener closed) could be taken meanwhile by any
// socket on the host, as the local port of a connect among them, and its
// resets would pass the port filter.
func refusingPort(t *testing.T) uint16 {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	return uint16(sa.(*unix.SockaddrInet4).Port)
}

// refusedConnect connects to 127.0.0.1:port, where nothing listens, from
// a socket bound first to from (a loopback address) so its ephemeral port
// is known, and returns its endpoint. A connect that fails releases the
// port, and the next bind may be given it again: each connect from its
// own address is its own flow whatever the port.
func refusedConnect(t *testing.T, from [4]byte, port uint16) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: from}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(port)})
	require.ErrorIs(t, err, unix.ECONNREFUSED)
	return netip.AddrPortFrom(netip.AddrFrom4(from), uint16(sa.(*unix.SockaddrInet4).Port)).String()
}

func ep(port uint16) string { return "127.0.0.1:" + strconv.Itoa(int(port)) }

// rows indexes a flow table by direction, local and remote.
func rows(tab catalog.Table) map[[3]string][]string {
	m := map[[3]string][]string{}
	for _, r := range tab.Rows {
		m[[3]string{r[0], r[1], r[2]}] = r[3:]
	}
	return m
}

// reason is what the flow table says for a sent reset whose reason is
// want, on a kernel that shows s.
func (s sight) reason(want string) string {
	if !s.reasons {
		return "-"
	}
	return want
}

// A SYN to a port nobody listens on is answered with a RST without a
// socket (reason NO_SOCKET), and the connecting socket receives it in
// SYN_SENT: one reset each way per connect, each its own flow. Kernels
// before 6.10 trace only the received one, and say so in a note.
func TestRefusedConnectsCountedExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	sees := kernelSight(k)
	port := refusingPort(t)
	const n = 5
	var clients []string
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Port: port}, func() {
		for i := 0; i < n; i++ {
			// 127.0.0.2 to 127.0.0.6: all of 127/8 is loopback.
			clients = append(clients, refusedConnect(t, [4]byte{127, 0, 0, byte(2 + i)}, port))
		}
	})
	require.Zero(t, res.Lost)
	got := rows(res.Tables[0])
	sent := 0
	if sees.noSocket {
		sent = n
	}
	require.Len(t, got, sent+n, "only the test uses port %d: %v", port, res.Tables[0].Rows)
	for _, c := range clients {
		if sees.noSocket {
			assert.Equal(t, []string{"-", sees.reason("NO_SOCKET"), "1"}, got[[3]string{"sent", ep(port), c}], "client %s", c)
		}
		assert.Equal(t, []string{"SYN_SENT", "-", "1"}, got[[3]string{"received", c, ep(port)}], "client %s", c)
	}
	assert.Equal(t, uint64(sent+n), res.Events)
	byReason := [][]string{{"received", "-", "5"}}
	if sees.noSocket {
		byReason = [][]string{{"sent", sees.reason("NO_SOCKET"), "5"}, {"received", "-", "5"}}
	}
	assert.Equal(t, byReason, res.Tables[1].Rows)
	summary := fmt.Sprintf("%d RSTs sent, 5 received, on 5 connections;", sent)
	assert.True(t, strings.HasPrefix(res.Summary, summary), res.Summary)
	assert.Equal(t, sees.notes(), res.Notes)
}

// Closing an established connection with SO_LINGER 0 aborts it: the
// closing side sends one RST, the peer receives it while ESTABLISHED.
// tcp_disconnect moves the socket to CLOSE before it sends, and 6.10+
// names the reason after the state it left (TCP_STATE).
func TestAbortiveClosesCountedExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	sees := kernelSight(k)
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	const m = 4
	var clients []string
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Port: port}, func() {
		for i := 0; i < m; i++ {
			// Each client from its own loopback address: an aborted
			// connection leaves no TIME_WAIT to hold its port, and the
			// next one may be given it again.
			from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
			c, err := net.DialTCP("tcp4", from, ln.Addr().(*net.TCPAddr))
			require.NoError(t, err)
			s, err := ln.AcceptTCP()
			require.NoError(t, err)
			clients = append(clients, c.LocalAddr().String())
			require.NoError(t, c.SetLinger(0))
			require.NoError(t, c.Close())
			// The server's read ends with the reset: it has arrived.
			require.NoError(t, s.SetReadDeadline(time.Now().Add(5*time.Second)))
			_, err = s.Read(make([]byte, 1))
			require.True(t, errors.Is(err, syscall.ECONNRESET), "read after the peer's abort: %v", err)
			require.NoError(t, s.Close())
		}
	})
	require.Zero(t, res.Lost)
	got := rows(res.Tables[0])
	require.Len(t, got, 2*m, "only the test uses port %d: %v", port, res.Tables[0].Rows)
	for _, c := range clients {
		assert.Equal(t, []string{"CLOSE", sees.reason("TCP_STATE"), "1"}, got[[3]string{"sent", c, ep(port)}], "client %s", c)
		assert.Equal(t, []string{"ESTABLISHED", "-", "1"}, got[[3]string{"received", ep(port), c}], "client %s", c)
	}
	assert.Equal(t, uint64(2*m), res.Events)
	assert.Equal(t, [][]string{{"sent", sees.reason("TCP_STATE"), "4"}, {"received", "-", "4"}}, res.Tables[1].Rows)
	assert.Equal(t, sees.notes(), res.Notes)
}

func TestSightNotes(t *testing.T) {
	assert.Empty(t, sight{noSocket: true, reasons: true}.notes())
	assert.Len(t, sight{}.notes(), 2)
}

func TestValidateRejectsTaskFilters(t *testing.T) {
	require.ErrorContains(t, catalog.Params{Comm: "curl"}.Validate(Info), "tcpreset does not support the comm filter")
	require.NoError(t, catalog.Params{Port: 443}.Validate(Info))
}

func v4(d byte) [16]byte { return [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: d} }

func TestBuildResult(t *testing.T) {
	reasons := catalog.NewEnum(map[uint64]string{1: "NO_SOCKET", 14: "TCP_STATE"})
	resets := map[Key]uint64{
		{Dir: Sent, Local: v4(1), LPort: 80, Remote: v4(2), RPort: 50000, Reason: 1}:                       3,
		{Dir: Received, Local: v4(1), LPort: 40000, Remote: v4(3), RPort: 443, State: 1, Reason: NoReason}: 2,
		{Dir: Sent, Local: v4(1), LPort: 40001, Remote: v4(3), RPort: 443, State: 7, Reason: 14}:           2,
		{Dir: Sent, Local: v4(1), LPort: 22, Remote: v4(4), RPort: 1, State: 1, Reason: 99}:                1,
	}
	res := buildResult(catalog.Params{}, resets, 8, 0, reasons)
	assert.Equal(t, [][]string{
		{"sent", "10.0.0.1:80", "10.0.0.2:50000", "-", "NO_SOCKET", "3"},
		{"sent", "10.0.0.1:40001", "10.0.0.3:443", "CLOSE", "TCP_STATE", "2"},
		{"received", "10.0.0.1:40000", "10.0.0.3:443", "ESTABLISHED", "-", "2"},
		{"sent", "10.0.0.1:22", "10.0.0.4:1", "ESTABLISHED", "99", "1"},
	}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"sent", "NO_SOCKET", "3"}, {"sent", "TCP_STATE", "2"}, {"received", "-", "2"}, {"sent", "99", "1"}}, res.Tables[1].Rows)
	assert.Equal(t, "6 RSTs sent, 2 received, on 4 connections; most: sent 10.0.0.1:80 -> 10.0.0.2:50000 (3)", res.Summary)
	assert.Empty(t, res.Notes)

	res = buildResult(catalog.Params{}, nil, 4, 4, catalog.Enum{})
	assert.Equal(t, uint64(4), res.Lost)
	assert.Equal(t, "0 RSTs sent, 0 received, on 0 connections", res.Summary)
	assert.Len(t, res.Notes, 1)
}
