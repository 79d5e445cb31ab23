// Package drops is the catalog entry that answers "where and why does the
// kernel drop packets": skb:kfree_skb counted in the kernel by drop reason
// and code location, with reasons named from the running kernel's BTF and
// locations symbolised through /proc/kallsyms.
package drops

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "drops",
	Answers:     "where and why the kernel drops packets",
	Reports:     "dropped packets by drop reason and kernel code location (function+offset); totals by reason; frees without a recorded reason counted apart. Before 5.17 the kernel records no reasons: every kfree_skb is counted, as reason unknown",
	Aliases:     []string{"drops", "dropwatch", "tcpdrop", "kfree_skb", "skb_drop", "packet_drops", "pwru"},
	Tracepoints: []string{"skb:kfree_skb"},
	Functions: []string{"kfree_skb", "kfree_skb_reason", "sk_skb_reason_drop", "kfree_skb_list_reason",
		"tcp_drop", "tcp_drop_reason", "__udp4_lib_rcv", "__udp6_lib_rcv", "nf_hook_slow"},
	Keywords: []string{"drop", "dropped packets", "packet loss", "kfree_skb", "drop reason", "netfilter drop",
		"no socket", "rcvbuf", "backlog", "qdisc drop"},
	// A drop in softirq context is counted for whichever task the softirq
	// interrupted (on loopback and for locally sent packets, the sender):
	// task filters narrow to drops that task's context caused.
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "skb/kfree_skb"},
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

// NoReason is the reason of every drop on kernels before 5.17.
const NoReason = 0xffffffff

// Key is one drop site: a reason and the kernel address that freed the
// packet.
type Key struct {
	Reason   uint32
	Location uint64
}

// Counts are the in-kernel counters.
type Counts struct {
	Counted     uint64 // drops in the per-site map
	Missed      uint64 // drops whose site did not fit in the map
	Unspecified uint64 // frees with reason NOT_SPECIFIED, left out of the map
}

type objects struct {
	TpKfreeSkb *ebpf.Program `ebpf:"tp_kfree_skb"`
	dropsMaps
}

func (o *objects) Close() error { return catalog.CloseAll(o.TpKfreeSkb, &o.dropsMaps) }

type trace struct {
	catalog.Session
	reasons    Reasons
	objs       objects
	hasReasons bool
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadDrops)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint (skb:kfree_skb), in-kernel per-CPU counts"}}
	t.Objects, t.Collect, t.Count = &t.objs, t.collect, t.count
	t.reasons, t.hasReasons = kernelReasons(k)
	if t.hasReasons {
		for name, global := range map[string]string{"NOT_SPECIFIED": "reason_not_specified", "SKB_CONSUMED": "reason_consumed"} {
			if v, ok := t.reasons.Value(name); ok {
				if err := spec.Variables[global].Set(uint32(v)); err != nil {
					return nil, fmt.Errorf("drops: set %s: %w", global, err)
				}
			}
		}
	}
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("drops: %w", err)
	}
	if err := t.Links.Tracepoint("skb", "kfree_skb", t.objs.TpKfreeSkb); err != nil {
		t.Abort()
		return nil, fmt.Errorf("drops: %w", err)
	}
	t.Begin()
	return t, nil
}

// count is the number of drops counted so far.
func (t *trace) count() uint64 {
	n, _ := catalog.SumPerCPU(t.objs.Counters, 0)
	return n
}

func (t *trace) collect() (*catalog.Result, error) {
	sites, readErr := readDrops(t.objs.Drops)
	var c Counts
	var err1, err2, err3 error
	c.Counted, err1 = catalog.SumPerCPU(t.objs.Counters, 0)
	c.Missed, err2 = catalog.SumPerCPU(t.objs.Counters, 1)
	c.Unspecified, err3 = catalog.SumPerCPU(t.objs.Counters, 2)
	var syms *Symbols
	var symErr error
	if len(sites) > 0 {
		syms, symErr = LoadKallsyms()
	}
	res := buildResult(t.Params, sites, c, t.reasons, syms)
	res.AddSkipped(catalog.RecursionMisses(t.objs.TpKfreeSkb), "drops")
	if !t.hasReasons {
		res.Notes = append(res.Notes, noReasonsNote)
	}
	if symErr != nil {
		res.Notes = append(res.Notes, "locations are raw addresses: "+symErr.Error())
	}
	return res, errors.Join(readErr, err1, err2, err3)
}

func readDrops(m *ebpf.Map) (map[Key]uint64, error) {
	out := map[Key]uint64{}
	err := catalog.EachEntry(m, func(k *dropsDropKey, perCPU *[]uint64) {
		var n uint64
		for _, v := range *perCPU {
			n += v
		}
		out[Key{Reason: k.Reason, Location: k.Location}] += n
	})
	if err != nil {
		return out, err
	}
	return out, nil
}

// kernelReasons reads the running kernel's drop reasons. Before 5.17
// there is no enum skb_drop_reason and the record has no reason: every
// free is counted, as reason "unknown" (false).
func kernelReasons(k *catalog.Kernel) (Reasons, bool) {
	enum, err := k.Enum("skb_drop_reason", "SKB_DROP_REASON_")
	if err != nil {
		return Reasons{}, false
	}
	return Reasons{enum}, true
}

// noReasonsNote is the note of a kernel without drop reasons.
const noReasonsNote = "this kernel records no drop reasons (before 5.17): every kfree_skb is counted, including frees that are not drops"

// Reasons names drop reasons from the running kernel's enum skb_drop_reason.
type Reasons struct{ catalog.Enum }

// subsysShift splits a reason into a subsystem (high bits) and its code:
// subsystems such as mac80211 or openvswitch number their own reasons in
// enums of their modules, which vmlinux BTF does not carry
// (SKB_DROP_REASON_SUBSYS_SHIFT).
const subsysShift = 16

// Name returns "NO_SOCKET", "unknown" for NoReason, "subsystem S reason C"
// for a module's reason, or the number.
func (r Reasons) Name(v uint32) string {
	if v == NoReason {
		return "unknown"
	}
	if v>>subsysShift != 0 {
		return fmt.Sprintf("subsystem %d reason %d", v>>subsysShift, v&(1<<subsysShift-1))
	}
	return r.Enum.Name(uint64(v))
}

type siteKey struct {
	reason   string
	location string
}

// buildResult ranks the drop sites. Locations are symbolised with syms
// (nil: raw addresses); sites in the same function at the same offset
// merge, so a reloaded module cannot split one row in two.
func buildResult(p catalog.Params, sites map[Key]uint64, c Counts, reasons Reasons, syms *Symbols) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: c.Counted + c.Missed, Lost: c.Missed}
	bySite := map[siteKey]uint64{}
	byReason := map[string]uint64{}
	for k, n := range sites {
		reason := reasons.Name(k.Reason)
		bySite[siteKey{reason, syms.Name(k.Location)}] += n
		byReason[reason] += n
	}
	top, n := catalog.TopN(bySite, catalog.MaxRows, func(a, b siteKey) bool {
		if a.reason != b.reason {
			return a.reason < b.reason
		}
		return a.location < b.location
	})
	siteTab := catalog.Table{Title: "drops by reason and location", Columns: []string{"reason", "location", "count"}}
	for _, r := range top {
		siteTab.AddRow(r.Key.reason, r.Key.location, catalog.U(r.Score))
	}
	siteTab.TotalRows = n
	rtop, nr := catalog.TopN(byReason, catalog.MaxRows, func(a, b string) bool { return a < b })
	reasonTab := catalog.Table{Title: "drops by reason", Columns: []string{"reason", "count"}}
	for _, r := range rtop {
		reasonTab.AddRow(r.Key, catalog.U(r.Score))
	}
	reasonTab.TotalRows = nr
	res.Tables = []catalog.Table{siteTab, reasonTab}
	res.Summary = fmt.Sprintf("%d packets dropped for %d reasons at %d locations", c.Counted+c.Missed, len(byReason), len(bySite))
	if len(top) > 0 {
		res.Summary += fmt.Sprintf("; most: %s at %s (%d)", top[0].Key.reason, top[0].Key.location, top[0].Score)
	}
	if c.Unspecified > 0 {
		res.Summary += fmt.Sprintf("; %d more frees without a recorded reason (NOT_SPECIFIED) not ranked", c.Unspecified)
	}
	if c.Missed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d drops not attributed to a location: the site map was full", c.Missed))
	}
	return res
}
