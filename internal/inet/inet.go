// Package inet names what the network tracepoints record: endpoints stored
// as 16-byte (v4-mapped) addresses and TCP states. The kernel's reason
// enums (drop reasons, RST reasons) are catalog.Enum, read from BTF.
package inet

import (
	"bytes"
	"net/netip"
	"strconv"
)

// Endpoint formats an address and port: "127.0.0.1:80", "[::1]:80". IPv4
// addresses arrive v4-mapped and print as IPv4.
func Endpoint(addr [16]byte, port uint16) string {
	return netip.AddrPortFrom(netip.AddrFrom16(addr).Unmap(), port).String()
}

// tcpStates are the kernel's TCP states (include/net/tcp_states.h, an ABI
// that tools such as ss rely on).
var tcpStates = []string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV", "BOUND_INACTIVE"}

// TCPState names a TCP state; "-" for 0 (no socket), "state N" when unknown.
func TCPState(s uint32) string {
	switch {
	case s == 0:
		return "-"
	case int(s) < len(tcpStates):
		return tcpStates[s]
	}
	return "state " + strconv.FormatUint(uint64(s), 10)
}

// Conn is a TCP connection independent of the side it is seen from: on
// loopback both ends are on this host and report the same connection.
type Conn struct {
	A, B   [16]byte
	PA, PB uint16
}

// ConnOf orders the two endpoints so that both sides give the same Conn.
func ConnOf(local [16]byte, lport uint16, remote [16]byte, rport uint16) Conn {
	c := Conn{local, remote, lport, rport}
	if cmp := bytes.Compare(local[:], remote[:]); cmp > 0 || (cmp == 0 && lport > rport) {
		c = Conn{remote, local, rport, lport}
	}
	return c
}
