package sysinfo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// maxNameservers is glibc's MAXNS: later nameserver lines are ignored by
// the resolver library, so they are not checked either.
const maxNameservers = 3

// parseResolvConf returns the nameserver addresses of resolv.conf(5) in
// order, at most three, and the lines it could not use.
func parseResolvConf(data []byte) (servers []string, bad []string) {
	for line := range bytes.Lines(data) {
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		fields := strings.Fields(s)
		if fields[0] != "nameserver" {
			continue
		}
		if len(fields) < 2 {
			bad = append(bad, s)
			continue
		}
		addr, err := netip.ParseAddr(fields[1])
		if err != nil {
			bad = append(bad, s)
			continue
		}
		if len(servers) < maxNameservers {
			servers = append(servers, addr.String())
		}
	}
	return servers, bad
}

const (
	dnsTypeNS  = 2
	dnsClassIN = 1
	dnsHeader  = 12
)

var rcodeNames = []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"}

func rcodeName(rc int) string {
	if rc < len(rcodeNames) {
		return rcodeNames[rc]
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// dnsQuery builds a recursive query for the NS records of the root zone:
// every resolver has an answer for it (it is what they prime with), and
// it names nothing of this host.
func dnsQuery(id uint16) []byte {
	q := make([]byte, dnsHeader, dnsHeader+5)
	binary.BigEndian.PutUint16(q[0:], id)
	binary.BigEndian.PutUint16(q[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(q[4:], 1)      // QDCOUNT
	q = append(q, 0)                          // the root name
	q = binary.BigEndian.AppendUint16(q, dnsTypeNS)
	q = binary.BigEndian.AppendUint16(q, dnsClassIN)
	return q
}

var errNotReply = errors.New("not a reply to the query")

// parseDNSReply checks that b answers the query with this id and returns
// its response code. Servers may leave the question out of an error
// reply; when it is there it must be the one asked.
func parseDNSReply(b []byte, id uint16) (int, error) {
	if len(b) < dnsHeader {
		return 0, fmt.Errorf("reply of %d bytes is shorter than a DNS header", len(b))
	}
	if binary.BigEndian.Uint16(b[0:]) != id {
		return 0, errNotReply
	}
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&0x8000 == 0 {
		return 0, errors.New("QR bit not set: a query, not a reply")
	}
	if op := (flags >> 11) & 0xf; op != 0 {
		return 0, fmt.Errorf("opcode %d, want 0 (QUERY)", op)
	}
	rc := int(flags & 0xf)
	switch qd := binary.BigEndian.Uint16(b[4:]); qd {
	case 0:
		if rc == 0 {
			return 0, errors.New("NOERROR reply without the question")
		}
	case 1:
		if len(b) < dnsHeader+5 {
			return 0, errors.New("question section truncated")
		}
		if b[dnsHeader] != 0 || binary.BigEndian.Uint16(b[dnsHeader+1:]) != dnsTypeNS ||
			binary.BigEndian.Uint16(b[dnsHeader+3:]) != dnsClassIN {
			return 0, errors.New("reply is for another question")
		}
	default:
		return 0, fmt.Errorf("%d questions in the reply, want 1", qd)
	}
	return rc, nil
}

// resolvers reads resolv.conf and asks each nameserver one question, all
// at once.
func (c *collector) resolvers(ctx context.Context) (string, []Resolver) {
	const conf = "/etc/resolv.conf"
	b, err := c.read(conf)
	if err != nil {
		c.warn("name resolution: %v", err)
		return conf, nil
	}
	servers, bad := parseResolvConf(b)
	for _, l := range bad {
		c.warn("%s: unusable line %q", conf, truncate(l, 100))
	}
	if len(servers) == 0 {
		// What glibc does with no nameserver line.
		c.warn("%s has no nameserver; the resolver library falls back to 127.0.0.1", conf)
		servers = []string{"127.0.0.1"}
	}
	out := make([]Resolver, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { out[i] = probeResolver(ctx, s, 53, c.opts.DNSTimeout) })
	}
	wg.Wait()
	return conf, out
}

func probeResolver(ctx context.Context, server string, port uint16, timeout time.Duration) Resolver {
	r := Resolver{Address: server}
	addr, err := netip.ParseAddr(server)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	id := uint16(rand.Uint32())
	if _, err := conn.Write(dnsQuery(id)); err != nil {
		r.Error = err.Error()
		return r
	}
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case parent.Err() != nil:
				r.Error = "cancelled: " + parent.Err().Error()
			case errors.As(err, &ne) && ne.Timeout() || ctx.Err() != nil:
				r.Error = fmt.Sprintf("no answer within %v", timeout)
			default:
				r.Error = err.Error()
			}
			return r
		}
		rc, err := parseDNSReply(buf[:n], id)
		if errors.Is(err, errNotReply) {
			continue // a late answer to someone else; keep waiting
		}
		r.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
		if err != nil {
			r.Error = "malformed reply: " + err.Error()
			return r
		}
		r.Rcode = rcodeName(rc)
		if rc == 5 {
			r.Error = "the server refused the query"
			return r
		}
		r.Answered = true
		return r
	}
}
