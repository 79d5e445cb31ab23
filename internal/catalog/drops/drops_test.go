package drops

import (
	"net"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The C struct drop_key is 16 bytes; a layout change must show here.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(16), unsafe.Sizeof(dropsDropKey{}))
}

// refusingUDPPort returns a loopback UDP port where the test's datagrams
// find no socket, and that no other socket can take while the test runs:
// a socket bound to it, without SO_REUSEADDR, and connected to itself, so
// that it accepts datagrams from its own port alone. A port released
// again could be bound meanwhile by any socket on the host, which would
// then receive the datagrams instead of the kernel dropping them.
func refusingUDPPort(t *testing.T) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	lo := [4]byte{127, 0, 0, 1}
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: lo}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	port := sa.(*unix.SockaddrInet4).Port
	require.NoError(t, unix.Connect(fd, &unix.SockaddrInet4{Addr: lo, Port: port}))
	return port
}

// udpReceivers are the functions a no-socket UDP drop is attributed to:
// __udp4_lib_rcv does it, and is inlined into udp_rcv on some builds (7.x).
var udpReceivers = []string{"__udp4_lib_rcv+0x", "udp_rcv+0x"}

func udpReceiver(loc string) bool {
	for _, f := range udpReceivers {
		if strings.HasPrefix(loc, f) {
			return true
		}
	}
	return false
}

// A datagram no socket takes is dropped by __udp4_lib_rcv
// with reason NO_SOCKET (before 5.17, no reason: "unknown"). On loopback
// the receive softirq runs when the sender re-enables bottom halves at the
// end of its send, in the sender's context, so the pid filter keeps
// exactly the test's own drops. The sending socket is unconnected: a
// connected one would fail its next send with the ICMP error instead of
// sending.
func TestUDPNoSocketDropsCountedExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	reason := "NO_SOCKET"
	var notes []string
	if _, ok := kernelReasons(k); !ok {
		reason, notes = "unknown", []string{noReasonsNote}
	}
	port := refusingUDPPort(t)
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer src.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}

	const n = 40
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() {
		for i := 0; i < n; i++ {
			_, err := src.WriteToUDP([]byte("nanny-drop"), dst)
			require.NoError(t, err)
		}
	})
	require.Zero(t, res.Lost)
	var sites uint64
	for _, r := range res.Tables[0].Rows {
		if r[0] == reason {
			assert.True(t, udpReceiver(r[1]), "location %q", r[1])
			sites += catalogtest.Num(t, r[2])
		}
	}
	assert.Equal(t, uint64(n), sites, "drops: %v", res.Tables[0].Rows)
	assert.Contains(t, res.Tables[1].Rows, []string{reason, catalog.U(n)})
	assert.Equal(t, uint64(n), res.Events, "only the test's drops: %v", res.Tables[0].Rows)
	assert.Equal(t, notes, res.Notes)
}

func TestValidateFilters(t *testing.T) {
	require.ErrorContains(t, catalog.Params{Port: 53}.Validate(Info), "drops does not support the port filter")
	require.NoError(t, catalog.Params{PID: 1, Comm: "nginx"}.Validate(Info))
}

const kallsyms = `0000000000000000 A fixed_percpu_data
ffffffff81000000 T _stext
ffffffff81a00000 T __udp4_lib_rcv
ffffffff81a01000 t udp_queue_rcv_one_skb
ffffffff81a02000 D some_data
ffffffffc0100000 t nf_hook_thing	[nf_tables]
`

func TestKallsyms(t *testing.T) {
	s, err := ParseKallsyms(strings.NewReader(kallsyms))
	require.NoError(t, err)
	assert.Equal(t, "__udp4_lib_rcv+0x4bc", s.Name(0xffffffff81a004bc))
	assert.Equal(t, "udp_queue_rcv_one_skb+0x0", s.Name(0xffffffff81a01000))
	// Data symbols are not drop sites: the nearest text symbol names it.
	assert.Equal(t, "udp_queue_rcv_one_skb+0x1010", s.Name(0xffffffff81a02010))
	assert.Equal(t, "nf_hook_thing+0x10 [nf_tables]", s.Name(0xffffffffc0100010))
	assert.Equal(t, "0x1000", s.Name(0x1000))
	assert.Equal(t, "-", s.Name(0))
	var none *Symbols
	assert.Equal(t, "0xffffffff81a004bc", none.Name(0xffffffff81a004bc))

	_, err = ParseKallsyms(strings.NewReader("0000000000000000 T _stext\n0000000000000000 t foo\n"))
	require.ErrorContains(t, err, "kptr_restrict")
}

func FuzzParseKallsyms(f *testing.F) {
	f.Add([]byte(kallsyms), uint64(0xffffffff81a004bc))
	f.Add([]byte("zz T x\n1 T"), uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, addr uint64) {
		s, err := ParseKallsyms(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		_ = s.Name(addr)
	})
}

func testReasons() Reasons {
	return Reasons{catalog.NewEnum(map[uint64]string{2: "NOT_SPECIFIED", 3: "NO_SOCKET", 6: "SOCKET_RCVBUFF"})}
}

func TestReasonNames(t *testing.T) {
	r := testReasons()
	assert.Equal(t, "NO_SOCKET", r.Name(3))
	assert.Equal(t, "unknown", r.Name(NoReason))
	assert.Equal(t, "subsystem 1 reason 5", r.Name(1<<16|5))
	assert.Equal(t, "77", r.Name(77))
}

func TestBuildResult(t *testing.T) {
	syms, err := ParseKallsyms(strings.NewReader(kallsyms))
	require.NoError(t, err)
	sites := map[Key]uint64{
		{Reason: 3, Location: 0xffffffff81a004bc}: 10,
		{Reason: 6, Location: 0xffffffff81a01010}: 4,
		{Reason: 6, Location: 0xffffffff81a01020}: 4,
		{Reason: NoReason, Location: 0}:           1,
	}
	res := buildResult(catalog.Params{}, sites, Counts{Counted: 19, Unspecified: 7}, testReasons(), syms)
	assert.Equal(t, [][]string{
		{"NO_SOCKET", "__udp4_lib_rcv+0x4bc", "10"},
		{"SOCKET_RCVBUFF", "udp_queue_rcv_one_skb+0x10", "4"},
		{"SOCKET_RCVBUFF", "udp_queue_rcv_one_skb+0x20", "4"},
		{"unknown", "-", "1"},
	}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"NO_SOCKET", "10"}, {"SOCKET_RCVBUFF", "8"}, {"unknown", "1"}}, res.Tables[1].Rows)
	assert.Equal(t, "19 packets dropped for 3 reasons at 4 locations; most: NO_SOCKET at __udp4_lib_rcv+0x4bc (10); 7 more frees without a recorded reason (NOT_SPECIFIED) not ranked", res.Summary)
	assert.Zero(t, res.Lost)

	res = buildResult(catalog.Params{}, nil, Counts{Missed: 3}, testReasons(), nil)
	assert.Equal(t, uint64(3), res.Lost)
	assert.Equal(t, uint64(3), res.Events)
	assert.Len(t, res.Notes, 1)
}
