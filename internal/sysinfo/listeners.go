package sysinfo

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// maxListeners bounds Network.Listeners; a host with more listening
// sockets than this is rare and the first ones (by port) are kept.
const maxListeners = 100

// tcpListen is the state of a listening socket in /proc/net/tcp
// (TCP_LISTEN in the kernel's tcp_states.h).
const tcpListen = "0A"

// listeners reads the listening TCP sockets of /proc/net/tcp and tcp6 and
// finds each one's owner through the socket inodes of /proc/[pid]/fd.
func (c *collector) listeners() []Listener {
	byInode := map[uint64]*Listener{}
	var out []*Listener
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := c.read(f)
		if err != nil {
			if !os.IsNotExist(err) {
				c.warn("listeners: %v", err)
			}
			continue
		}
		for _, l := range parseProcNetTCP(b) {
			l := l
			out = append(out, &l.Listener)
			if l.inode != 0 {
				byInode[l.inode] = &l.Listener
			}
		}
	}
	if len(byInode) > 0 {
		c.socketOwners(byInode)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	if len(out) > maxListeners {
		out = out[:maxListeners]
	}
	res := make([]Listener, 0, len(out))
	for _, l := range out {
		res = append(res, *l)
	}
	return res
}

type procNetListener struct {
	Listener
	inode uint64
}

// parseProcNetTCP reads the LISTEN rows of a /proc/net/tcp{,6} table:
// "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt
// uid timeout inode ...". For a listening socket rx_queue is the accept
// queue's length; the backlog is not in this table (ss reads it over
// netlink), so Backlog stays 0.
func parseProcNetTCP(b []byte) []procNetListener {
	var out []procNetListener
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != tcpListen {
			continue
		}
		addr, port, ok := procNetAddr(f[1])
		if !ok {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		queued, _ := strconv.ParseUint(rx, 16, 64)
		inode, _ := strconv.ParseUint(f[9], 10, 64)
		out = append(out, procNetListener{
			Listener: Listener{Address: net.JoinHostPort(addr, strconv.Itoa(port)), Port: port, Queued: queued},
			inode:    inode,
		})
	}
	return out
}

// procNetAddr decodes "0100007F:1F90" (IPv4, each 32-bit word in host
// byte order) or its 128-bit IPv6 form.
func procNetAddr(s string) (string, int, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return "", 0, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", 0, false
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", 0, false
	}
	// The kernel prints each 32-bit word as a number in host order; on
	// the little-endian hosts the agent runs on (amd64, arm64) that
	// reverses the bytes of every word.
	for i := 0; i+4 <= len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	return net.IP(raw).String(), int(port), true
}

// socketOwners fills PID and Comm of the listeners whose socket inode a
// process holds open; the lowest PID wins (the parent of forked workers).
func (c *collector) socketOwners(byInode map[uint64]*Listener) {
	procs, err := os.ReadDir(c.path("/proc"))
	if err != nil {
		return
	}
	pids := make([]int, 0, len(procs))
	for _, e := range procs {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	left := len(byInode)
	for _, pid := range pids {
		if left == 0 {
			return
		}
		dir := c.path("/proc/" + strconv.Itoa(pid) + "/fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(dir, fd.Name()))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if l := byInode[ino]; l != nil && l.PID == 0 {
				l.PID = pid
				if comm, err := c.read("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil {
					l.Comm = strings.TrimSpace(string(comm))
				}
				left--
			}
		}
	}
}
