// Package tcplife is the catalog entry that answers "how long do TCP
// connections live and what do they carry": one record per closed
// connection with its endpoints, owning process, duration, payload bytes
// each way and how it ended.
package tcplife

import (
	"context"
	"fmt"
	"math/bits"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "tcplife",
	Answers:     "how long TCP connections live, who owns them and how many bytes each carried",
	Reports:     "per closed connection: pid, comm, local and remote address, duration, payload bytes sent and received, how it ended (local close, peer close, reset); by process and peer; largest connections; duration histogram (us)",
	Aliases:     []string{"tcplife", "tcplife.bt", "tcpsession", "connection_lifetime"},
	Tracepoints: []string{"sock:inet_sock_set_state"},
	Functions:   []string{"tcp_set_state", "tcp_close", "tcp_done", "tcp_time_wait", "inet_csk_destroy_sock", "tcp_fin"},
	Keywords:    []string{"connection lifetime", "connection duration", "bytes per connection", "short-lived connections", "session", "tcp close", "throughput per connection", "who talks to whom"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup,
		catalog.FilterPort, catalog.FilterMinLatency},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "sock/inet_sock_set_state"},
	},
	Attach:  []string{"tracepoint"},
	Streams: true,
}

// Event is one closed connection.
type Event struct {
	Local, Remote netip.AddrPort
	// PID, UID and Comm are the owner: the task that connected, or for a
	// server's connection the task that closed it. OwnerKnown is false when
	// no transition ran in the owner's context (reset before any close).
	PID, UID   uint32
	Comm       string
	OwnerKnown bool
	// Duration is from connect (client) or handshake (server) to close;
	// DurationKnown is false for connections opened before the trace.
	Duration      time.Duration
	DurationKnown bool
	// TxBytes and RxBytes are payload bytes, without SYN and FIN.
	TxBytes, RxBytes uint64
	// Role is "client" when this side connected, "server" when it
	// accepted, "?" when the connection was opened before the trace.
	Role  string
	Err   int32 // sk_err at close, e.g. ECONNRESET
	State uint8 // the state it closed from
}

// TCP states (include/net/tcp_states.h), to tell who closed first.
const (
	tcpEstablished = 1
	tcpSynRecv     = 3
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpClosing     = 11
)

// Flags of the C event.
const (
	flagBirth = 1
	flagIdent = 2
)

const afInet = 2

// End says how the connection ended.
func (e *Event) End() string {
	switch {
	case e.Err != 0:
		return catalog.ErrnoName(int64(e.Err))
	case e.State == tcpLastAck:
		return "peer closed first"
	case e.State == tcpFinWait1 || e.State == tcpFinWait2 || e.State == tcpClosing:
		return "closed first"
	case e.State == tcpEstablished || e.State == tcpCloseWait || e.State == tcpSynRecv:
		// Closed with unread data or SO_LINGER 0: this side sent a reset.
		return "aborted"
	}
	return fmt.Sprintf("from state %d", e.State)
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
	tcplifeMaps
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpInetSockSetState, &o.tcplifeMaps)
}

type trace struct {
	catalog.Session
	objs objects

	mu  sync.Mutex // guards agg: written by the stream goroutine, read by Stop
	agg aggregate
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadTcplife)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint"}, agg: newAggregate()}
	t.Objects, t.Collect = &t.objs, t.collect
	usePerf, err := catalog.PrepareEvents(k, spec)
	if err != nil {
		return nil, fmt.Errorf("tcplife: %w", err)
	}
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("tcplife: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	handle := catalog.Records(&t.mu, &t.agg.malformed, func(rec *tcplifeEvent) { t.agg.add(decodeEvent(rec)) })
	if err := t.StartStream(catalog.StreamObjects{Events: t.objs.Events, EventsPerf: t.objs.EventsPerf, Lost: t.objs.Lost}, usePerf, handle); err != nil {
		return nil, err
	}
	if err := t.Links.Tracepoint("sock", "inet_sock_set_state", t.objs.TpInetSockSetState); err != nil {
		return nil, fmt.Errorf("tcplife: %w", err)
	}
	t.Begin()
	return t, nil
}

func decodeAddr(family uint16, b *[16]uint8, port uint16) netip.AddrPort {
	if family == afInet {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(*b).Unmap(), port)
}

func decodeEvent(rec *tcplifeEvent) Event {
	ev := Event{
		Local:         decodeAddr(rec.Family, &rec.Saddr, rec.Sport),
		Remote:        decodeAddr(rec.Family, &rec.Daddr, rec.Dport),
		PID:           rec.Pid,
		UID:           rec.Uid,
		Comm:          catalog.CString(rec.Comm[:]),
		OwnerKnown:    rec.Flags&flagIdent != 0,
		Duration:      time.Duration(rec.DurationNs),
		DurationKnown: rec.Flags&flagBirth != 0,
		TxBytes:       rec.TxBytes,
		RxBytes:       rec.RxBytes,
		Err:           rec.Err,
		State:         rec.Oldstate,
		Role:          "server",
	}
	switch {
	case rec.Active != 0:
		ev.Role = "client"
	case !ev.DurationKnown:
		ev.Role = "?"
	}
	return ev
}

func (t *trace) collect() (*catalog.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.agg.result(t.Params), nil
}

// groupKey gathers connections of one process with one peer: a client's
// remote endpoint, or a server's local port and remote address.
type groupKey struct {
	pid  uint32
	comm string
	role string
	peer string
}

type group struct {
	conns, tx, rx uint64
	maxDur        time.Duration
}

// aggregate is the user-space side: groups, largest connections, the
// duration histogram, end reasons and samples.
type aggregate struct {
	total, malformed uint64
	tx, rx           uint64
	groups           map[groupKey]*group
	largest          []Event // by TxBytes+RxBytes, at most catalog.MaxRows
	durations        [catalog.Log2Slots]uint64
	ends             map[string]uint64
	samples          []Event
}

func newAggregate() aggregate {
	return aggregate{groups: map[groupKey]*group{}, ends: map[string]uint64{}}
}

func peer(ev *Event) string {
	if ev.Role == "server" {
		return fmt.Sprintf(":%d <- %s", ev.Local.Port(), ev.Remote.Addr())
	}
	return ev.Remote.String()
}

func (a *aggregate) add(ev Event) {
	a.total++
	a.tx += ev.TxBytes
	a.rx += ev.RxBytes
	k := groupKey{ev.PID, ev.Comm, ev.Role, peer(&ev)}
	g := a.groups[k]
	if g == nil {
		g = &group{}
		a.groups[k] = g
	}
	g.conns++
	g.tx += ev.TxBytes
	g.rx += ev.RxBytes
	if ev.Duration > g.maxDur {
		g.maxDur = ev.Duration
	}
	if ev.DurationKnown {
		a.durations[log2Slot(uint64(ev.Duration/time.Microsecond))]++
	}
	a.ends[ev.End()]++
	if len(a.samples) < catalog.MaxSamples {
		a.samples = append(a.samples, ev)
	}
	a.keepLargest(ev)
}

// keepLargest keeps the MaxRows connections with the most bytes, in
// bounded memory whatever the number of connections.
func (a *aggregate) keepLargest(ev Event) {
	size := func(e *Event) uint64 { return e.TxBytes + e.RxBytes }
	if len(a.largest) == catalog.MaxRows && size(&ev) <= size(&a.largest[len(a.largest)-1]) {
		return
	}
	i := sort.Search(len(a.largest), func(i int) bool { return size(&a.largest[i]) < size(&ev) })
	a.largest = append(a.largest, Event{})
	copy(a.largest[i+1:], a.largest[i:])
	a.largest[i] = ev
	if len(a.largest) > catalog.MaxRows {
		a.largest = a.largest[:catalog.MaxRows]
	}
}

// log2Slot mirrors hist_add in bpf/common/hist.bpf.h.
func log2Slot(v uint64) int {
	if v == 0 {
		return 0
	}
	s := bits.Len64(v) - 1
	if s >= catalog.Log2Slots {
		s = catalog.Log2Slots - 1
	}
	return s
}

func durationCell(ev *Event) string {
	if !ev.DurationKnown {
		return "?"
	}
	return catalog.U(uint64(ev.Duration / time.Microsecond))
}

func ownerCells(ev *Event) (string, string) {
	if !ev.OwnerKnown {
		return "?", "?"
	}
	return catalog.U(ev.PID), ev.Comm
}

var connColumns = []string{"pid", "comm", "role", "local", "remote", "tx_bytes", "rx_bytes", "duration_us", "end"}

func connRow(tab *catalog.Table, ev *Event) {
	pid, comm := ownerCells(ev)
	tab.AddRow(pid, comm, ev.Role, ev.Local.String(), ev.Remote.String(), catalog.U(ev.TxBytes),
		catalog.U(ev.RxBytes), durationCell(ev), ev.End())
}

func (a *aggregate) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: a.total}

	scores := make(map[groupKey]uint64, len(a.groups))
	for k, g := range a.groups {
		scores[k] = g.conns
	}
	top, n := catalog.TopN(scores, catalog.MaxRows, func(x, y groupKey) bool {
		if x.pid != y.pid {
			return x.pid < y.pid
		}
		return x.peer < y.peer
	})
	groups := catalog.Table{Title: "connections by process and peer",
		Columns: []string{"pid", "comm", "role", "peer", "connections", "tx_bytes", "rx_bytes", "max_duration_us"}}
	for _, r := range top {
		g := a.groups[r.Key]
		groups.AddRow(catalog.U(r.Key.pid), r.Key.comm, r.Key.role, r.Key.peer, catalog.U(g.conns),
			catalog.U(g.tx), catalog.U(g.rx), catalog.U(uint64(g.maxDur/time.Microsecond)))
	}
	groups.TotalRows = n

	largest := catalog.Table{Title: "largest connections", Columns: connColumns}
	for i := range a.largest {
		connRow(&largest, &a.largest[i])
	}
	largest.TotalRows = int(a.total)

	samples := &catalog.Table{Title: "sample connections", Columns: connColumns}
	for i := range a.samples {
		connRow(samples, &a.samples[i])
	}
	samples.TotalRows = int(a.total)
	res.Tables = []catalog.Table{groups, largest}
	res.Samples = samples

	h := catalog.Log2Histogram("connection duration", "us", a.durations[:])
	if h.Count > 0 {
		res.Histograms = []catalog.Histogram{h}
	}
	res.Summary = fmt.Sprintf("%d connections closed, %d bytes sent, %d received", a.total, a.tx, a.rx)
	if h.Count > 0 {
		res.Summary += fmt.Sprintf("; duration p50 %d us, p99 %d us", h.P50, h.P99)
	}
	endTop, _ := catalog.TopN(a.ends, 4, func(x, y string) bool { return x < y })
	for i, r := range endTop {
		sep := ", "
		if i == 0 {
			sep = "; ended: "
		}
		res.Summary += fmt.Sprintf("%s%s %d", sep, r.Key, r.Score)
	}
	if a.malformed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d malformed event records ignored", a.malformed))
	}
	return res
}
