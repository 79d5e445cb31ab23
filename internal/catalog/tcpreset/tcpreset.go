// Package tcpreset is the catalog entry that answers "which TCP
// connections are reset, and by whom": RSTs sent and received, counted in
// the kernel per flow, direction, TCP state and reason, from the
// tcp:tcp_send_reset and tcp:tcp_receive_reset tracepoints.
package tcpreset

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/inet"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "tcpreset",
	Answers:     "which TCP connections are reset, and by whom (this host or the peer)",
	Reports:     "RSTs sent and received per flow (local and remote address:port), TCP state of the local socket, RST reason; totals by direction and reason. Before 6.10 only resets sent from a socket are traced (not those answering a segment no socket wants, such as a refused connect), without a reason",
	Aliases:     []string{"tcpreset", "tcprst", "tcpresets", "tcp_reset", "connection_refused", "connection_reset"},
	Tracepoints: []string{"tcp:tcp_send_reset", "tcp:tcp_receive_reset"},
	Functions: []string{"tcp_v4_send_reset", "tcp_v6_send_reset", "tcp_send_active_reset", "tcp_reset",
		"tcp_done_with_error"},
	Keywords: []string{"reset", "rst", "connection refused", "connection reset by peer", "econnreset",
		"econnrefused", "abort", "closed port"},
	// Resets are sent and received in softirq context as often as in the
	// owner's: the current task says nothing, so only the port filter.
	Filters: []catalog.Filter{catalog.FilterPort},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "tcp/tcp_send_reset"},
		{Feature: catalog.FeatureTracepoint, Name: "tcp/tcp_receive_reset"},
	},
	Attach:  []string{"tracepoint"},
	Streams: false,
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info            { return Info }
func (Entry) Check(k *catalog.Kernel) error { return catalog.CheckRequirements(k, Info) }
func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

// Direction says who sent the RST.
type Direction uint32

// The directions (DIR_* in the C file).
const (
	Sent     Direction = 0 // by this host
	Received Direction = 1 // by the peer
)

func (d Direction) String() string {
	if d == Received {
		return "received"
	}
	return "sent"
}

// NoReason marks a reset whose reason the kernel does not report (received
// resets; sent ones before 6.10).
const NoReason = 0xffffffff

// Key is one flow's resets in one direction, state and reason.
type Key struct {
	Dir           Direction
	Local, Remote [16]byte // v4-mapped for IPv4; Local is this host's side
	LPort, RPort  uint16
	State         uint32 // of the local socket; 0 when there was none
	Reason        uint32 // enum sk_rst_reason, or NoReason
}

type objects struct {
	TpSendReset    *ebpf.Program `ebpf:"tp_send_reset"`
	TpReceiveReset *ebpf.Program `ebpf:"tp_receive_reset"`
	tcpresetMaps
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpSendReset, o.TpReceiveReset, &o.tcpresetMaps)
}

type trace struct {
	catalog.Session
	reasons catalog.Enum
	sees    sight
	objs    objects
}

// sight is what this kernel's tcp:tcp_send_reset shows: 6.10 gave it its
// own record, filled from the segment when there is no socket, with the
// reason; before, it fired only from a socket and had no reason.
type sight struct {
	noSocket bool // resets sent without a socket (refused connects)
	reasons  bool // the RST reason of sent resets
}

// kernelSight reads the record's layout from the kernel's BTF, the same
// type the C program's CO-RE checks resolve against.
func kernelSight(k *catalog.Kernel) sight {
	spec, err := k.BTF()
	if err != nil {
		return sight{}
	}
	var st *btf.Struct
	if spec.TypeByName("trace_event_raw_tcp_send_reset", &st) != nil {
		return sight{}
	}
	s := sight{noSocket: true}
	for _, m := range st.Members {
		if m.Name == "reason" {
			s.reasons = true
		}
	}
	return s
}

func (s sight) notes() []string {
	var n []string
	if !s.noSocket {
		n = append(n, "this kernel (before 6.10) traces only resets sent from a socket: "+
			"those answering segments no socket wants (refused connects, stray segments) are not counted")
	}
	if !s.reasons {
		n = append(n, "this kernel (before 6.10) gives no reason for the resets it sends")
	}
	return n
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadTcpreset)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p,
		Attach: "tracepoint (tcp:tcp_send_reset, tcp:tcp_receive_reset), in-kernel counts"}}
	t.Objects, t.Collect, t.Count = &t.objs, t.collect, t.count
	// Kernels before 6.10 have no enum sk_rst_reason and report no reason:
	// numbers then never need a name.
	t.reasons, _ = k.Enum("sk_rst_reason", "SK_RST_REASON_")
	t.sees = kernelSight(k)
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("tcpreset: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	if err := t.Links.Tracepoint("tcp", "tcp_send_reset", t.objs.TpSendReset); err != nil {
		return nil, fmt.Errorf("tcpreset: %w", err)
	}
	if err := t.Links.Tracepoint("tcp", "tcp_receive_reset", t.objs.TpReceiveReset); err != nil {
		return nil, fmt.Errorf("tcpreset: %w", err)
	}
	t.Begin()
	return t, nil
}

// count is the number of resets counted so far.
func (t *trace) count() uint64 {
	n, _ := catalog.SumPerCPU(t.objs.Counters, 0)
	return n
}

func (t *trace) collect() (*catalog.Result, error) {
	resets, readErr := readResets(t.objs.Resets)
	total, err1 := catalog.SumPerCPU(t.objs.Counters, 0)
	missed, err2 := catalog.SumPerCPU(t.objs.Counters, 1)
	res := buildResult(t.Params, resets, total, missed, t.reasons)
	res.Notes = append(res.Notes, t.sees.notes()...)
	res.AddSkipped(catalog.RecursionMisses(t.objs.TpSendReset, t.objs.TpReceiveReset), "resets")
	return res, errors.Join(readErr, err1, err2)
}

func readResets(m *ebpf.Map) (map[Key]uint64, error) {
	out := map[Key]uint64{}
	err := catalog.EachEntry(m, func(k *tcpresetResetKey, n *uint64) { out[keyOf(k)] = *n })
	return out, err
}

func keyOf(k *tcpresetResetKey) Key {
	return Key{Dir: Direction(k.Dir), Local: k.Flow.Laddr, Remote: k.Flow.Raddr, LPort: k.Flow.Lport,
		RPort: k.Flow.Rport, State: k.State, Reason: k.Reason}
}

func (k Key) less(o Key) bool {
	if k.Dir != o.Dir {
		return k.Dir < o.Dir
	}
	if k.LPort != o.LPort {
		return k.LPort < o.LPort
	}
	if k.RPort != o.RPort {
		return k.RPort < o.RPort
	}
	if k.State != o.State {
		return k.State < o.State
	}
	return k.Reason < o.Reason
}

func reasonName(reasons catalog.Enum, r uint32) string {
	if r == NoReason {
		return "-"
	}
	return reasons.Name(uint64(r))
}

type dirReason struct {
	dir    Direction
	reason string
}

// buildResult turns the in-kernel counts into tables: total is every reset
// counted, missed those whose flow did not fit in the map.
func buildResult(p catalog.Params, resets map[Key]uint64, total, missed uint64, reasons catalog.Enum) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: total, Lost: missed}
	var byDir [2]uint64
	byReason := map[dirReason]uint64{}
	conns := map[inet.Conn]bool{}
	for k, n := range resets {
		byDir[k.Dir&1] += n
		byReason[dirReason{k.Dir, reasonName(reasons, k.Reason)}] += n
		conns[inet.ConnOf(k.Local, k.LPort, k.Remote, k.RPort)] = true
	}
	top, nrows := catalog.TopN(resets, catalog.MaxRows, Key.less)
	flows := catalog.Table{Title: "resets by flow", Columns: []string{"direction", "local", "remote", "state", "reason", "count"}}
	for _, r := range top {
		k := r.Key
		flows.AddRow(k.Dir.String(), inet.Endpoint(k.Local, k.LPort), inet.Endpoint(k.Remote, k.RPort),
			inet.TCPState(k.State), reasonName(reasons, k.Reason), catalog.U(r.Score))
	}
	flows.TotalRows = nrows
	rtop, nr := catalog.TopN(byReason, catalog.MaxRows, func(a, b dirReason) bool {
		if a.dir != b.dir {
			return a.dir < b.dir
		}
		return a.reason < b.reason
	})
	reasonTab := catalog.Table{Title: "resets by direction and reason", Columns: []string{"direction", "reason", "count"}}
	for _, r := range rtop {
		reasonTab.AddRow(r.Key.dir.String(), r.Key.reason, catalog.U(r.Score))
	}
	reasonTab.TotalRows = nr
	res.Tables = []catalog.Table{flows, reasonTab}
	res.Summary = fmt.Sprintf("%d RSTs sent, %d received, on %d connections", byDir[Sent], byDir[Received], len(conns))
	if len(top) > 0 {
		k := top[0].Key
		res.Summary += fmt.Sprintf("; most: %s %s -> %s (%d)", k.Dir, inet.Endpoint(k.Local, k.LPort), inet.Endpoint(k.Remote, k.RPort), top[0].Score)
	}
	if missed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d resets not attributed to a flow: the flow map was full", missed))
	}
	return res
}
