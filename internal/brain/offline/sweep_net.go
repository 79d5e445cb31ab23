package offline

import (
	"fmt"
	"strings"
)

func checkNetwork(v *view, fs *findings) {
	n := v.f.Network
	if n.TCPOutSegsPerSec > 0 && n.TCPRetransPerSec >= RetransMinPerSec {
		rate := n.TCPRetransPerSec / n.TCPOutSegsPerSec * 100
		if rate >= RetransPercent {
			f := fs.get("net.retrans", "", sevWarning)
			f.add("/proc/net/snmp", "%.1f TCP segments retransmitted per second of %.1f sent: %s (threshold %s)", n.TCPRetransPerSec, n.TCPOutSegsPerSec, pct(rate), pct(RetransPercent))
			var peers []string
			for _, tb := range v.tables("tcpretrans", "retransmits by flow") {
				for i, r := range tb.rows {
					if i == 3 {
						break
					}
					f.add("trace tcpretrans", "tcpretrans: %s -> %s (%s): %s retransmits", tb.get(r, "local"), tb.get(r, "remote"), tb.get(r, "state"), tb.get(r, "retransmits"))
					peers = append(peers, tb.get(r, "remote"))
				}
			}
			f.title = fmt.Sprintf("TCP retransmits %s of its segments", pct(rate))
			f.rootCause = "Packets are lost between this host and its peers (a congested or faulty link, a duplex mismatch, a peer that stopped answering), so TCP resends and connections stall."
			if len(peers) > 0 {
				f.rootCause += " Most retransmits go to " + joinMax(uniq(peers), 3) + "."
			}
			f.fix = []string{"Check the interface counters and the path: ip -s link; ethtool -S <iface>; mtr <peer>", "If one peer dominates, check that peer and the network in between"}
			f.conf = 1
		}
	}
	ls, haveSS := v.listeners()
	full := 0
	for _, l := range ls {
		if l.sendQ > 0 && l.recvQ >= l.sendQ {
			full++
			sub := fmt.Sprintf("port %d", l.port)
			f := fs.get("net.listen", sub, sevWarning)
			who := ""
			if l.comm != "" {
				who = fmt.Sprintf(" of %s (pid %d)", l.comm, l.pid)
			}
			f.add(l.source, "%s: listener %s%s has %d connections waiting for accept(), its backlog is %d", ssLabel(l.source), l.addr, who, l.recvQ, l.sendQ)
			if n.ListenOverflows > 0 {
				f.add("/proc/net/netstat", "%d listen queue overflows and %d SYNs dropped since boot", n.ListenOverflows, n.ListenDrops)
			}
			f.set("port", fmt.Sprint(l.port))
			f.set("comm", l.comm)
			if l.pid > 0 {
				f.set("pid", fmt.Sprint(l.pid))
			}
			f.title = fmt.Sprintf("Accept queue of %s%s is full (%d of %d)", l.addr, who, l.recvQ, l.sendQ)
			f.rootCause = fmt.Sprintf("The server%s does not accept() connections as fast as they arrive: its listen backlog (%d) is full, so new connections are dropped or time out. The application is stalled, overloaded or its backlog is too small.", who, l.sendQ)
			f.fix = []string{"See what the server is doing (its threads may be blocked): nannyagent trace run profile,syscalls --pid <pid>", "Add workers or raise the backlog (listen(2) backlog and net.core.somaxconn) once it is not stalled"}
			f.conf = 2
		}
	}
	if full == 0 && n.ListenOverflows+n.ListenDrops > 0 {
		f := fs.get("net.listen", "", sevInfo)
		f.add("/proc/net/netstat", "%d listen queue overflows and %d SYNs dropped since boot", n.ListenOverflows, n.ListenDrops)
		if haveSS {
			f.add("ss", "no listener has a full accept queue now")
		}
		f.title = fmt.Sprintf("Listen queues overflowed %d times since boot", n.ListenOverflows)
		f.rootCause = "At some time since boot a server did not accept connections as fast as they came and the kernel dropped some; it is not happening at this moment."
		f.fix = []string{"Watch the counters (netstat -s | grep -i listen) while the problem happens to see whether they grow"}
	}
	for _, i := range n.Interfaces {
		if e := i.RxErrors + i.TxErrors; e > 0 {
			f := fs.get("net.iface", i.Name, sevWarning)
			f.add("/proc/net/dev", "%s: %d receive errors, %d transmit errors, %d/%d dropped since boot", i.Name, i.RxErrors, i.TxErrors, i.RxDropped, i.TxDropped)
			f.set("iface", i.Name)
			f.title = fmt.Sprintf("Interface %s counts %d errors", i.Name, e)
			f.rootCause = fmt.Sprintf("%s receives or sends damaged frames: a bad cable, port, driver or duplex mismatch corrupts traffic.", i.Name)
			f.fix = []string{"See which errors: ethtool -S " + i.Name + "; ip -s link show " + i.Name, "Check cable, switch port and negotiated speed/duplex (ethtool " + i.Name + ")"}
			f.conf = 1
		} else if d := i.RxDropped + i.TxDropped; d >= InterfaceDrops {
			f := fs.get("net.iface", i.Name, sevInfo)
			f.add("/proc/net/dev", "%s: %d received and %d sent packets dropped since boot", i.Name, i.RxDropped, i.TxDropped)
			f.set("iface", i.Name)
			f.title = fmt.Sprintf("Interface %s dropped %d packets since boot", i.Name, d)
			f.rootCause = "The kernel dropped packets on this interface (full queues, unknown protocols or VLANs); often harmless, a problem when it grows with the trouble."
			f.fix = []string{"Find the reasons: nannyagent trace run drops --duration 10s"}
		}
	}
}

func ssLabel(source string) string {
	if source == "ss" {
		return "ss -ltnp"
	}
	return source
}

func checkDNS(v *view, fs *findings) {
	rs := v.f.Network.Resolvers
	var failing, answering []string
	var errs []string
	for _, r := range rs {
		if r.Answered {
			answering = append(answering, r.Address)
			continue
		}
		failing = append(failing, r.Address)
		e := r.Error
		if e == "" {
			e = "no answer"
		}
		errs = append(errs, fmt.Sprintf("nameserver %s did not answer a query: %s", r.Address, e))
	}
	conf := v.f.Network.ResolvConf
	if conf == "" {
		conf = "resolv.conf"
	}
	var f *finding
	if len(failing) > 0 {
		sev := sevWarning
		if len(answering) == 0 {
			sev = sevCritical
		}
		f = fs.get("dns.failing", "", sev)
		f.set("resolver", failing[0])
		for _, e := range errs {
			f.add("resolver probe", "%s", e)
		}
		if len(answering) > 0 {
			f.add("resolver probe", "answering: %s", strings.Join(answering, ", "))
			f.title = fmt.Sprintf("Nameserver %s in %s does not answer", joinMax(failing, 2), conf)
			f.rootCause = fmt.Sprintf("%s lists %s, which does not answer; lookups that try it first wait for its timeout before the next server answers, so name resolution is slow or fails intermittently.", conf, joinMax(failing, 3))
		} else {
			f.title = fmt.Sprintf("Name resolution fails: no nameserver in %s answers (%s)", conf, joinMax(failing, 3))
			f.rootCause = fmt.Sprintf("Every nameserver %s lists (%s) fails to answer, so every lookup of a host name fails or times out (getaddrinfo EAI_AGAIN, \"Temporary failure in name resolution\"); anything that connects by name breaks.", conf, joinMax(failing, 3))
		}
		f.fix = []string{
			"Check the resolver configuration: cat " + conf + " (and resolvectl status where systemd-resolved runs)",
			"Test a nameserver directly: dig @<server> example.com; check routes and firewalls to it (ip route get <server>)",
			"Point " + conf + " (or the network manager / DHCP that writes it) at nameservers that answer",
		}
		f.conf = 2
	}
	failed := 0
	var lines []string
	for _, tb := range v.tables("dns", "lookups by name") {
		for _, r := range tb.rows {
			// EAI_NONAME and "not found" are answers (the name does not
			// exist); only these say the resolver itself failed.
			res := tb.get(r, "result")
			if res != "EAI_AGAIN" && res != "EAI_FAIL" && res != "EAI_SYSTEM" {
				continue
			}
			c := int(tb.num(r, "count"))
			failed += c
			lines = append(lines, fmt.Sprintf("dns: %s lookup of %s failed with %s %s", tb.get(r, "function"), tb.get(r, "name"), res, plural(c, "time", "times")))
		}
	}
	if failed == 0 {
		return
	}
	if f == nil {
		if failed < CrashRepeat {
			return
		}
		f = fs.get("dns.failing", "", sevWarning)
		f.title = fmt.Sprintf("Name lookups fail: the resolver does not answer (%d failures during the trace)", failed)
		f.rootCause = "Programs on this host fail to resolve host names with temporary failures (EAI_AGAIN): the resolver they use does not answer, although the nameservers the agent probed did."
		f.fix = []string{"Check the names the programs look up and the resolver configuration (cat /etc/resolv.conf, getent hosts <name>)"}
		f.conf = 1
	}
	for i, l := range lines {
		if i == 3 {
			break
		}
		f.add("trace dns", "%s", l)
	}
}
