// Package tcpconnect is the catalog entry that answers "which outgoing TCP
// connections are made, and do they work": per destination and process the
// attempts, successes, failures by reason (refused, timed out, reset,
// aborted, other errno), handshakes still pending, and the connect latency.
package tcpconnect

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "tcpconnect",
	Answers:     "which outgoing TCP connections are attempted, to where, by whom, do they succeed and how long does connecting take",
	Reports:     "per destination and process: attempts, established, failed by reason (refused, timed out, reset, aborted by the application, other errno), pending handshakes; connect latency histograms (us)",
	Aliases:     []string{"tcpconnect", "tcpconnlat", "tcpconnect.bt", "tcpconnlat.bt", "connect", "outgoing_connections"},
	Tracepoints: []string{"sock:inet_sock_set_state"},
	Functions:   []string{"tcp_v4_connect", "tcp_v6_connect", "tcp_connect", "tcp_set_state", "tcp_finish_connect", "tcp_rcv_state_process", "__inet_stream_connect"},
	Keywords:    []string{"connect", "outgoing connection", "connection refused", "ECONNREFUSED", "connect timeout", "ETIMEDOUT", "dial", "SYN", "handshake latency", "upstream unreachable"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup, catalog.FilterPort, catalog.FilterFailed},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "sock/inet_sock_set_state"},
	},
	Attach:  []string{"tracepoint"},
	Streams: false,
}

// Key is one destination as one process saw it.
type Key struct {
	Dest netip.AddrPort
	PID  uint32
	Comm string
}

// Counts are the outcomes of the handshakes to one Key.
type Counts struct {
	Attempts, Established             uint64
	Refused, TimedOut, Reset, Aborted uint64
	Other                             uint64
	OtherErrno                        int32 // the errno of the last Other
	Pending                           uint64
	Latency                           [catalog.Log2Slots]uint64 // us, successful handshakes
}

// Failed is every handshake that ended without a connection.
func (c *Counts) Failed() uint64 {
	return c.Refused + c.TimedOut + c.Reset + c.Aborted + c.Other
}

func (c *Counts) add(o *Counts) {
	c.Attempts += o.Attempts
	c.Established += o.Established
	c.Refused += o.Refused
	c.TimedOut += o.TimedOut
	c.Reset += o.Reset
	c.Aborted += o.Aborted
	if o.Other > 0 {
		c.OtherErrno = o.OtherErrno
	}
	c.Other += o.Other
	c.Pending += o.Pending
	catalog.AddSlots(c.Latency[:], o.Latency[:])
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

// objects names only what this entry loads.
type objects struct {
	TpInetSockSetState *ebpf.Program `ebpf:"tp_inet_sock_set_state"`
	tcpconnectMaps
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpInetSockSetState, &o.tcpconnectMaps)
}

type trace struct {
	catalog.Session
	objs objects
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadTcpconnect)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint"}}
	t.Objects, t.Collect = &t.objs, t.collect
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("tcpconnect: %w", err)
	}
	if err := t.Links.Tracepoint("sock", "inet_sock_set_state", t.objs.TpInetSockSetState); err != nil {
		t.Abort()
		return nil, fmt.Errorf("tcpconnect: %w", err)
	}
	t.Begin()
	return t, nil
}

// collect reads the counts, which stay in the kernel until Stop (Seen is
// 0 while running).
func (t *trace) collect() (*catalog.Result, error) {
	agg := newAggregate()
	err := t.read(&agg)
	return agg.result(t.Params), err
}

// read copies the in-kernel aggregates into agg.
func (t *trace) read(agg *aggregate) error {
	if err := catalog.EachEntry(t.objs.Stats, agg.addStats); err != nil {
		return err
	}
	err := catalog.EachEntry(t.objs.Inflight, func(_ *uint64, at *tcpconnectAttempt) { agg.addPending(&at.Key) })
	if err != nil {
		return err
	}
	dropped, err := catalog.SumPerCPU(t.objs.Dropped, 0)
	agg.dropped = dropped
	return err
}

// aggregate merges what the kernel counted.
type aggregate struct {
	rows    map[Key]*Counts
	dropped uint64
}

func newAggregate() aggregate { return aggregate{rows: map[Key]*Counts{}} }

func decodeKey(k *tcpconnectDestKey) Key {
	var addr netip.Addr
	if k.Family == afInet {
		addr = netip.AddrFrom4([4]byte(k.Daddr[:4]))
	} else {
		// An IPv6 socket connecting to a v4-mapped address reaches an IPv4
		// host: show it as one.
		addr = netip.AddrFrom16(k.Daddr).Unmap()
	}
	return Key{Dest: netip.AddrPortFrom(addr, k.Dport), PID: k.Tgid, Comm: catalog.CString(k.Comm[:])}
}

const afInet = 2

func (a *aggregate) row(k Key) *Counts {
	c := a.rows[k]
	if c == nil {
		c = &Counts{}
		a.rows[k] = c
	}
	return c
}

func (a *aggregate) addStats(k *tcpconnectDestKey, s *tcpconnectDestStats) {
	c := Counts{
		Attempts: s.Attempts, Established: s.Established,
		Refused: s.Refused, TimedOut: s.Timedout, Reset: s.Reset, Aborted: s.Aborted,
		Other: s.Other, OtherErrno: s.LastOther,
	}
	catalog.AddSlots(c.Latency[:], s.LatencyUs.Slots[:])
	a.row(decodeKey(k)).add(&c)
}

func (a *aggregate) addPending(k *tcpconnectDestKey) {
	a.row(decodeKey(k)).Pending++
}

func lessAddrPort(x, y netip.AddrPort) bool { return x.Compare(y) < 0 }

func (a *aggregate) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}

	var total Counts
	byDest := map[netip.AddrPort]*Counts{}
	procs := map[netip.AddrPort][]string{}
	type proc struct {
		pid  uint32
		comm string
	}
	byProc := map[proc]*Counts{}
	procDests := map[proc]int{}
	for k, c := range a.rows {
		total.add(c)
		d := byDest[k.Dest]
		if d == nil {
			d = &Counts{}
			byDest[k.Dest] = d
		}
		d.add(c)
		procs[k.Dest] = append(procs[k.Dest], fmt.Sprintf("%s/%d", k.Comm, k.PID))
		pk := proc{k.PID, k.Comm}
		if byProc[pk] == nil {
			byProc[pk] = &Counts{}
		}
		byProc[pk].add(c)
		procDests[pk]++
	}
	res.Events = total.Attempts

	score := func(c *Counts) uint64 { return c.Attempts + c.Pending }
	destScores := map[netip.AddrPort]uint64{}
	for d, c := range byDest {
		destScores[d] = score(c)
	}
	top, n := catalog.TopN(destScores, catalog.MaxRows, lessAddrPort)
	dests := catalog.Table{Title: "connections by destination",
		Columns: []string{"destination", "attempts", "established", "failed", "refused", "timed_out", "reset", "aborted", "other_error", "pending", "p50_us", "p99_us", "processes"}}
	for _, r := range top {
		c := byDest[r.Key]
		h := catalog.Log2Histogram("", "us", c.Latency[:])
		ps := procs[r.Key]
		sort.Strings(ps)
		dests.AddRow(r.Key.String(), catalog.U(c.Attempts), catalog.U(c.Established), catalog.U(c.Failed()),
			catalog.U(c.Refused), catalog.U(c.TimedOut), catalog.U(c.Reset), catalog.U(c.Aborted),
			otherCell(c), catalog.U(c.Pending), catalog.U(h.P50), catalog.U(h.P99), strings.Join(ps, " "))
	}
	dests.TotalRows = n

	procScores := map[proc]uint64{}
	for pk, c := range byProc {
		procScores[pk] = score(c)
	}
	topProcs, n := catalog.TopN(procScores, catalog.MaxRows, func(x, y proc) bool { return x.pid < y.pid })
	procTab := catalog.Table{Title: "connections by process",
		Columns: []string{"pid", "comm", "attempts", "established", "failed", "pending", "destinations"}}
	for _, r := range topProcs {
		c := byProc[r.Key]
		procTab.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(c.Attempts), catalog.U(c.Established),
			catalog.U(c.Failed()), catalog.U(c.Pending), catalog.U(procDests[r.Key]))
	}
	procTab.TotalRows = n
	res.Tables = []catalog.Table{dests, procTab}

	all := catalog.Log2Histogram("connect latency, all destinations", "us", total.Latency[:])
	if all.Count > 0 {
		res.Histograms = append(res.Histograms, all)
		// Per destination for the busiest few: a slow upstream hides in the
		// overall distribution.
		okScores := map[netip.AddrPort]uint64{}
		for d, c := range byDest {
			if c.Established > 0 {
				okScores[d] = c.Established
			}
		}
		busiest, _ := catalog.TopN(okScores, maxDestHistograms, lessAddrPort)
		for _, r := range busiest {
			res.Histograms = append(res.Histograms,
				catalog.Log2Histogram("connect latency to "+r.Key.String(), "us", byDest[r.Key].Latency[:]))
		}
	}

	res.Summary = fmt.Sprintf("%d connection attempts to %d destinations: %d established, %d failed (%d refused, %d timed out, %d reset, %d aborted, %d other), %d pending",
		total.Attempts, len(byDest), total.Established, total.Failed(), total.Refused, total.TimedOut,
		total.Reset, total.Aborted, total.Other, total.Pending)
	if all.Count > 0 {
		res.Summary += fmt.Sprintf("; connect latency p50 %d us, p99 %d us", all.P50, all.P99)
	}
	failScores := map[netip.AddrPort]uint64{}
	for d, c := range byDest {
		if f := c.Failed(); f > 0 {
			failScores[d] = f
		}
	}
	if worst, _ := catalog.TopN(failScores, 1, lessAddrPort); len(worst) > 0 {
		res.Summary += fmt.Sprintf("; most failures: %s (%d)", worst[0].Key, worst[0].Score)
	}
	if p.FailedOnly {
		res.Notes = append(res.Notes, "failed-only: attempts count failed handshakes; pending ones are still unanswered")
	}
	if a.dropped > 0 {
		res.Lost = a.dropped
		res.Notes = append(res.Notes, fmt.Sprintf("%d attempts or outcomes not counted: an in-kernel map was full", a.dropped))
	}
	return res
}

// maxDestHistograms bounds the per-destination histograms of a result.
const maxDestHistograms = 5

func otherCell(c *Counts) string {
	if c.Other == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", c.Other, catalog.ErrnoName(int64(c.OtherErrno)))
}
