// Package tcpretrans is the catalog entry that answers "which TCP
// connections retransmit": retransmits counted in the kernel per flow and
// TCP state, from the tcp:tcp_retransmit_skb tracepoint.
package tcpretrans

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/inet"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "tcpretrans",
	Answers:     "which TCP connections retransmit, and in which state",
	Reports:     "retransmits per flow (local and remote address:port) and TCP state, attempts that did not go out (newer kernels); totals by state",
	Aliases:     []string{"tcpretrans", "tcpretrans.bt", "retransmits", "tcp_retransmit"},
	Tracepoints: []string{"tcp:tcp_retransmit_skb"},
	Functions:   []string{"tcp_retransmit_skb", "__tcp_retransmit_skb", "tcp_retransmit_timer", "tcp_send_loss_probe", "tcp_xmit_retransmit_queue"},
	Keywords:    []string{"retransmit", "retransmission", "packet loss", "tcp loss", "rto", "network slow", "lossy link"},
	// The tracepoint fires from timers and softirqs: the current task is not
	// the flow's owner, so only the port filter means something.
	Filters: []catalog.Filter{catalog.FilterPort},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "tcp/tcp_retransmit_skb"},
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

// Flow is one retransmitting connection in one TCP state, seen from the
// retransmitting socket.
type Flow struct {
	Local, Remote [16]byte // v4-mapped for IPv4
	LPort, RPort  uint16
	State         uint32
}

// Stats counts a flow's retransmits.
type Stats struct {
	Retransmits uint64
	Failed      uint64 // attempts that did not go out: still queued, no memory (kernels whose record has err)
}

type objects struct {
	TpRetransmitSkb *ebpf.Program `ebpf:"tp_retransmit_skb"`
	tcpretransMaps
}

func (o *objects) Close() error { return catalog.CloseAll(o.TpRetransmitSkb, &o.tcpretransMaps) }

type trace struct {
	catalog.Session
	objs objects
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadTcpretrans)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p,
		Attach: "tracepoint (tcp:tcp_retransmit_skb), in-kernel counts"}}
	t.Objects, t.Collect, t.Count = &t.objs, t.collect, t.count
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("tcpretrans: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	if err := t.Links.Tracepoint("tcp", "tcp_retransmit_skb", t.objs.TpRetransmitSkb); err != nil {
		return nil, fmt.Errorf("tcpretrans: %w", err)
	}
	t.Begin()
	return t, nil
}

// count is the number of retransmits counted so far.
func (t *trace) count() uint64 {
	n, _ := catalog.SumPerCPU(t.objs.Counters, 0)
	return n
}

func (t *trace) collect() (*catalog.Result, error) {
	flows, readErr := readFlows(t.objs.Flows)
	total, err1 := catalog.SumPerCPU(t.objs.Counters, 0)
	missed, err2 := catalog.SumPerCPU(t.objs.Counters, 1)
	res := buildResult(t.Params, flows, total, missed)
	// A retransmit from a timer softirq that interrupts a tracing program
	// elsewhere is not counted.
	res.AddSkipped(catalog.RecursionMisses(t.objs.TpRetransmitSkb), "retransmits")
	return res, errors.Join(readErr, err1, err2)
}

func readFlows(m *ebpf.Map) (map[Flow]Stats, error) {
	flows := map[Flow]Stats{}
	err := catalog.EachEntry(m, func(k *tcpretransRetransKey, v *tcpretransRetransVal) {
		flows[flowOf(k)] = Stats{Retransmits: v.Count, Failed: v.Failed}
	})
	return flows, err
}

func flowOf(k *tcpretransRetransKey) Flow {
	return Flow{Local: k.Flow.Laddr, Remote: k.Flow.Raddr, LPort: k.Flow.Lport, RPort: k.Flow.Rport, State: k.State}
}

func (f Flow) less(g Flow) bool {
	if f.LPort != g.LPort {
		return f.LPort < g.LPort
	}
	if f.RPort != g.RPort {
		return f.RPort < g.RPort
	}
	return f.State < g.State
}

// buildResult turns the in-kernel counts into tables: total is every
// retransmit counted, missed those whose flow did not fit in the map.
func buildResult(p catalog.Params, flows map[Flow]Stats, total, missed uint64) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: total, Lost: missed}
	scores := make(map[Flow]uint64, len(flows))
	byState := map[string]uint64{}
	conns := map[inet.Conn]bool{}
	var failed uint64
	for f, s := range flows {
		scores[f] = s.Retransmits + s.Failed
		byState[inet.TCPState(f.State)] += s.Retransmits
		failed += s.Failed
		conns[inet.ConnOf(f.Local, f.LPort, f.Remote, f.RPort)] = true
	}
	top, n := catalog.TopN(scores, catalog.MaxRows, Flow.less)
	flowTab := catalog.Table{Title: "retransmits by flow", Columns: []string{"local", "remote", "state", "retransmits", "failed"}}
	for _, r := range top {
		s := flows[r.Key]
		flowTab.AddRow(inet.Endpoint(r.Key.Local, r.Key.LPort), inet.Endpoint(r.Key.Remote, r.Key.RPort),
			inet.TCPState(r.Key.State), catalog.U(s.Retransmits), catalog.U(s.Failed))
	}
	flowTab.TotalRows = n
	states, ns := catalog.TopN(byState, catalog.MaxRows, func(a, b string) bool { return a < b })
	stateTab := catalog.Table{Title: "retransmits by TCP state", Columns: []string{"state", "retransmits"}}
	for _, r := range states {
		stateTab.AddRow(r.Key, catalog.U(r.Score))
	}
	stateTab.TotalRows = ns
	res.Tables = []catalog.Table{flowTab, stateTab}
	res.Summary = fmt.Sprintf("%d TCP retransmits on %d connections", total-failed, len(conns))
	if failed > 0 {
		res.Summary += fmt.Sprintf(", %d more attempts did not go out", failed)
	}
	if len(top) > 0 {
		f := top[0].Key
		res.Summary += fmt.Sprintf("; most: %s -> %s (%d)", inet.Endpoint(f.Local, f.LPort), inet.Endpoint(f.Remote, f.RPort), top[0].Score)
	}
	if missed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d retransmits not attributed to a flow: the flow map was full", missed))
	}
	return res
}
