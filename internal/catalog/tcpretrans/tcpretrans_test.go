package tcpretrans

import (
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The C structs retrans_key (40 bytes) and retrans_val (16): a layout
// change must show here.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(40), unsafe.Sizeof(tcpretransRetransKey{}))
	require.Equal(t, uintptr(16), unsafe.Sizeof(tcpretransRetransVal{}))
}

// dropper is a socket filter for the receiving socket that drops the next
// segment carrying data whenever the test arms it: a loss the sender
// cannot see, exactly as on a lossy link, with nothing installed and
// nothing outside the test's own socket affected.
type dropper struct {
	prog *ebpf.Program
	arm  *ebpf.Map
}

func newDropper(t *testing.T) *dropper {
	arm, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	require.NoError(t, err)
	t.Cleanup(func() { arm.Close() })
	// skb->data is at the TCP header when a TCP socket's filter runs.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),              // LD_ABS reads through R6
		asm.LoadMem(asm.R7, asm.R6, 0, asm.Word), // __sk_buff.len
		asm.LoadAbs(12, asm.Byte),                // data offset, high nibble
		asm.RSh.Imm(asm.R0, 4),
		asm.LSh.Imm(asm.R0, 2),
		asm.JGE.Reg(asm.R0, asm.R7, "pass"), // header only: an ACK
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, arm.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "pass"),
		asm.StoreImm(asm.R0, 0, 0, asm.Word), // disarm: one loss per arming
		asm.Mov.Imm(asm.R0, 0),               // keep 0 bytes: drop
		asm.Return(),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("pass"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, Instructions: insns, License: "GPL"})
	require.NoError(t, err)
	t.Cleanup(func() { prog.Close() })
	return &dropper{prog: prog, arm: arm}
}

func (d *dropper) attach(t *testing.T, c *net.TCPConn) {
	raw, err := c.SyscallConn()
	require.NoError(t, err)
	var serr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_BPF, d.prog.FD())
	}))
	require.NoError(t, serr)
}

func quickAck(t *testing.T, c *net.TCPConn) {
	raw, err := c.SyscallConn()
	require.NoError(t, err)
	var serr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	}))
	require.NoError(t, serr)
}

func (d *dropper) armOnce(t *testing.T) {
	require.NoError(t, d.arm.Put(uint32(0), uint32(1)))
}

func (d *dropper) armed(t *testing.T) bool {
	var v uint32
	require.NoError(t, d.arm.Lookup(uint32(0), &v))
	return v != 0
}

// Each round sends one request while exactly one segment is in flight and
// the receiver drops its first transmission; the sender recovers it with
// exactly one retransmission (a tail loss probe or the RTO timer, both
// through __tcp_retransmit_skb), and the echo proves it arrived before the
// next round. The echo is acknowledged at once, so the server never has
// anything to retransmit and the client's flow is the only one on the
// port. The exact reference is the kernel's own per-socket counter
// (tcp_info.tcpi_total_retrans), at least `drops`; it equals `drops`
// except when the loaded machine delays a segment long enough for a
// spurious extra retransmission, which the entry must count as well.
func TestRetransmitsCountedExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	d := newDropper(t)
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)

	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	defer client.Close()
	server := <-accepted
	require.NotNil(t, server)
	defer server.Close()
	d.attach(t, server)
	go func() { _, _ = io.Copy(server, server) }() // echo

	const drops = 3
	var kernelRetrans uint32
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{Port: port}, func() {
		msg := []byte("nanny-retransmit-probe")
		buf := make([]byte, len(msg))
		for i := 0; i < drops; i++ {
			d.armOnce(t)
			require.NoError(t, client.SetDeadline(time.Now().Add(10*time.Second)))
			_, err := client.Write(msg)
			require.NoError(t, err)
			_, err = io.ReadFull(client, buf)
			require.NoError(t, err)
			require.Equal(t, msg, buf)
			// ACK the echo now: left to the delayed ACK, it would ride on
			// the next request, which is dropped, and the server would
			// retransmit its echo too.
			quickAck(t, client)
			require.False(t, d.armed(t), "the filter saw no data segment")
		}
		kernelRetrans = totalRetrans(t, client)
	})
	require.Zero(t, res.Lost)
	// The kernel's own count for the socket (tcp_info) is the reference;
	// every drop needed at least one retransmission.
	require.GreaterOrEqual(t, kernelRetrans, uint32(drops))
	local := client.LocalAddr().String()
	remote := client.RemoteAddr().String()
	require.Len(t, res.Tables[0].Rows, 1, "only the test's flow uses port %d: %v", port, res.Tables[0].Rows)
	want := catalog.U(kernelRetrans)
	assert.Equal(t, []string{local, remote, "ESTABLISHED", want, "0"}, res.Tables[0].Rows[0])
	assert.Equal(t, []string{"ESTABLISHED", want}, res.Tables[1].Rows[0])
	assert.Equal(t, uint64(kernelRetrans), res.Events)
	assert.Contains(t, res.Summary, want+" TCP retransmits on 1 connections")
}

// totalRetrans is the kernel's count of segments c retransmitted.
func totalRetrans(t *testing.T, c *net.TCPConn) uint32 {
	raw, err := c.SyscallConn()
	require.NoError(t, err)
	var info *unix.TCPInfo
	var gerr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}))
	require.NoError(t, gerr)
	return info.Total_retrans
}

func TestValidateRejectsTaskFilters(t *testing.T) {
	require.ErrorContains(t, catalog.Params{PID: 1}.Validate(Info), "tcpretrans does not support the pid filter")
	require.NoError(t, catalog.Params{Port: 80}.Validate(Info))
}

func v4(a, b, c, d byte) [16]byte { return [16]byte{10: 0xff, 11: 0xff, 12: a, 13: b, 14: c, 15: d} }

func TestBuildResult(t *testing.T) {
	est := Flow{Local: v4(10, 0, 0, 1), Remote: v4(10, 0, 0, 2), LPort: 40000, RPort: 443, State: 1}
	syn := Flow{Local: v4(10, 0, 0, 1), Remote: v4(10, 0, 0, 3), LPort: 40001, RPort: 80, State: 2}
	est2 := est
	est2.State = 4 // FIN_WAIT1: same connection, another state
	flows := map[Flow]Stats{est: {Retransmits: 7, Failed: 1}, syn: {Retransmits: 2}, est2: {Retransmits: 1}}
	res := buildResult(catalog.Params{}, flows, 11, 0)
	require.Len(t, res.Tables, 2)
	assert.Equal(t, [][]string{
		{"10.0.0.1:40000", "10.0.0.2:443", "ESTABLISHED", "7", "1"},
		{"10.0.0.1:40001", "10.0.0.3:80", "SYN_SENT", "2", "0"},
		{"10.0.0.1:40000", "10.0.0.2:443", "FIN_WAIT1", "1", "0"},
	}, res.Tables[0].Rows)
	assert.Equal(t, [][]string{{"ESTABLISHED", "7"}, {"SYN_SENT", "2"}, {"FIN_WAIT1", "1"}}, res.Tables[1].Rows)
	assert.Equal(t, "10 TCP retransmits on 2 connections, 1 more attempts did not go out; most: 10.0.0.1:40000 -> 10.0.0.2:443 (8)", res.Summary)
	assert.Equal(t, uint64(11), res.Events)
	assert.Empty(t, res.Notes)

	res = buildResult(catalog.Params{}, nil, 5, 5)
	assert.Equal(t, uint64(5), res.Lost)
	assert.Len(t, res.Notes, 1)
}

func TestBuildResultKeepsTopRows(t *testing.T) {
	flows := map[Flow]Stats{}
	for i := 0; i < 3*catalog.MaxRows; i++ {
		flows[Flow{Local: v4(10, 0, 0, 1), LPort: uint16(1000 + i), RPort: 80, State: 1}] = Stats{Retransmits: uint64(i + 1)}
	}
	res := buildResult(catalog.Params{}, flows, 0, 0)
	res.Compact()
	assert.Len(t, res.Tables[0].Rows, catalog.MaxRows)
	assert.Equal(t, 3*catalog.MaxRows, res.Tables[0].TotalRows)
	assert.Equal(t, catalog.U(3*catalog.MaxRows), res.Tables[0].Rows[0][3])
}
