// Package inet names what the network tracepoints record: endpoints stored
// as 16-byte (v4-mapped) addresses, TCP states, and the kernel's reason
// enums (drop reasons, RST reasons), read from the running kernel's BTF
// because their numbering changes from one kernel to the next.
package inet

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
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

// Enum maps the values of one kernel enum to names, without their common
// prefix ("SKB_DROP_REASON_NO_SOCKET" -> "NO_SOCKET").
type Enum struct {
	names map[uint64]string
}

// KernelEnum reads enum name from spec and strips prefix from its
// value names.
func KernelEnum(spec *btf.Spec, name, prefix string) (Enum, error) {
	if spec == nil {
		return Enum{}, errors.New("no kernel BTF")
	}
	var e *btf.Enum
	if err := spec.TypeByName(name, &e); err != nil {
		return Enum{}, fmt.Errorf("enum %s in kernel BTF: %w", name, err)
	}
	m := Enum{names: make(map[uint64]string, len(e.Values))}
	for _, v := range e.Values {
		m.names[v.Value] = strings.TrimPrefix(v.Name, prefix)
	}
	return m, nil
}

// Name returns the name of v, or "N" when the enum does not know it.
func (e Enum) Name(v uint64) string {
	if n, ok := e.names[v]; ok {
		return n
	}
	return strconv.FormatUint(v, 10)
}

// Value returns the value named name (without the prefix).
func (e Enum) Value(name string) (uint64, bool) {
	for v, n := range e.names {
		if n == name {
			return v, true
		}
	}
	return 0, false
}

// NewEnum builds an Enum from a table (tests, kernels without BTF).
func NewEnum(names map[uint64]string) Enum { return Enum{names: names} }

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
