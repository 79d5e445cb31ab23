// Package dns is the catalog entry that answers "what names do processes
// resolve, how long does it take, what comes back": uprobes on the C
// library's resolver functions, one event per lookup.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:    "dns",
	Answers: "which names do processes resolve, how long does it take and what is the answer",
	Reports: "per lookup: pid, comm, libc function, name, status (EAI_* / not found), latency, first address; counts and latency by name, lookups by process, a latency histogram",
	Aliases: []string{"gethostlatency", "dnssnoop", "dns", "getaddrinfo", "resolver", "name_resolution"},
	Functions: []string{"getaddrinfo", "gethostbyname", "gethostbyname2", "gethostbyname_r", "gethostbyname2_r",
		"udp_sendmsg"},
	Keywords: []string{"dns", "resolve", "name resolution", "hostname", "lookup", "nslookup", "getaddrinfo", "resolv.conf", "slow dns"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup, catalog.FilterFailed, catalog.FilterMinLatency},
	Requires: []catalog.Requirement{{Feature: catalog.FeatureUprobe}},
	Attach:   []string{"uprobe"},
	Streams:  true,
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info { return Info }

func (Entry) Check(k *catalog.Kernel) error {
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return err
	}
	if _, err := findLibc(); err != nil {
		return &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	return nil
}

func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

// Func is the resolver function a lookup went through (enum lookup_func).
type Func uint32

const (
	FuncGetaddrinfo Func = iota
	FuncGethostbyname
	FuncGethostbyname2
	FuncGethostbynameR
	FuncGethostbyname2R
)

var funcNames = []string{"getaddrinfo", "gethostbyname", "gethostbyname2", "gethostbyname_r", "gethostbyname2_r"}

func (f Func) String() string {
	if int(f) < len(funcNames) {
		return funcNames[f]
	}
	return "func " + strconv.Itoa(int(f))
}

// libcCandidates are where distributions put the C library, by
// architecture (Debian multiarch, Fedora/Arch lib64, Alpine musl).
var libcCandidates = map[string][]string{
	"amd64": {"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6",
		"/usr/lib64/libc.so.6", "/usr/lib/libc.so.6", "/lib/ld-musl-x86_64.so.1"},
	"arm64": {"/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6",
		"/usr/lib64/libc.so.6", "/usr/lib/libc.so.6", "/lib/ld-musl-aarch64.so.1"},
}

// findLibc returns the host's C library. Only the first found is probed:
// /lib and /usr/lib are often the same directory, and two uprobes on one
// inode would count every lookup twice.
func findLibc() (string, error) {
	if p := os.Getenv("NANNYAGENT_LIBC"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("NANNYAGENT_LIBC: %w", err)
		}
		return p, nil
	}
	for _, p := range libcCandidates[runtime.GOARCH] {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no C library found in %v (set NANNYAGENT_LIBC to its path)", libcCandidates[runtime.GOARCH])
}

type objects struct {
	UprobeGetaddrinfo     *ebpf.Program `ebpf:"uprobe_getaddrinfo"`
	UprobeGethostbyname   *ebpf.Program `ebpf:"uprobe_gethostbyname"`
	UprobeGethostbyname2  *ebpf.Program `ebpf:"uprobe_gethostbyname2"`
	UprobeGethostbynameR  *ebpf.Program `ebpf:"uprobe_gethostbyname_r"`
	UprobeGethostbyname2R *ebpf.Program `ebpf:"uprobe_gethostbyname2_r"`
	UretprobeLookup       *ebpf.Program `ebpf:"uretprobe_lookup"`
	dnsMaps
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.UprobeGetaddrinfo, o.UprobeGethostbyname, o.UprobeGethostbyname2,
		o.UprobeGethostbynameR, o.UprobeGethostbyname2R, o.UretprobeLookup, &o.dnsMaps)
}

type trace struct {
	catalog.Session
	libc   string
	probed []string
	objs   objects

	mu  sync.Mutex // guards agg: written by the stream goroutine, read by Stop
	agg aggregate
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadDns)
	if err != nil {
		return nil, err
	}
	if err := (Entry{}).Check(k); err != nil {
		return nil, err
	}
	libc, _ := findLibc()
	ex, err := link.OpenExecutable(libc)
	if err != nil {
		return nil, fmt.Errorf("dns: open %s: %w", libc, err)
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "uprobe " + libc}, libc: libc, agg: newAggregate()}
	t.Objects, t.Collect = &t.objs, t.collect
	usePerf, err := catalog.PrepareEvents(k, spec)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	handle := catalog.Records(&t.mu, &t.agg.malformed, func(rec *dnsDnsEvent) { t.agg.add(decodeEvent(rec)) })
	if err := t.StartStream(catalog.StreamObjects{Events: t.objs.Events, EventsPerf: t.objs.EventsPerf, Lost: t.objs.Lost}, usePerf, handle); err != nil {
		return nil, err
	}
	// Return probes first: an entry seen without its return would leave
	// a pending lookup behind.
	for i, prog := range []*ebpf.Program{t.objs.UprobeGetaddrinfo, t.objs.UprobeGethostbyname,
		t.objs.UprobeGethostbyname2, t.objs.UprobeGethostbynameR, t.objs.UprobeGethostbyname2R} {
		sym := Func(i).String()
		err := t.Links.Uretprobe(ex, libc, sym, t.objs.UretprobeLookup)
		if errors.Is(err, link.ErrNoSymbol) && Func(i) != FuncGetaddrinfo {
			continue // an old or minimal libc without this entry point
		}
		if err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
		if err := t.Links.Uprobe(ex, libc, sym, prog); err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
		t.probed = append(t.probed, sym)
	}
	t.Begin()
	return t, nil
}

// Event is one lookup, decoded.
type Event struct {
	PID, TID int32
	UID      uint32
	Comm     string
	Func     Func
	Name     string
	Status   int32
	Latency  time.Duration
	Addr     netip.Addr // invalid when the lookup found nothing
}

func decodeEvent(rec *dnsDnsEvent) Event {
	ev := Event{PID: rec.Pid, TID: rec.Tid, UID: rec.Uid, Comm: catalog.CString(rec.Comm[:]), Func: Func(rec.Func),
		Name: catalog.CString(rec.Name[:]), Status: rec.Status, Latency: time.Duration(rec.LatencyNs)}
	switch rec.Family {
	case 2:
		ev.Addr = netip.AddrFrom4([4]byte(rec.Addr[:4]))
	case 10:
		ev.Addr = netip.AddrFrom16(rec.Addr)
	}
	return ev
}

// Result renders the outcome: "ok", an EAI_* name for getaddrinfo, "not
// found" or an errno name for the gethostbyname family.
func (e Event) Result() string {
	switch {
	case e.Status == 0:
		return "ok"
	case e.Func == FuncGetaddrinfo:
		return eaiName(e.Status)
	case e.Status == -1:
		return "not found"
	}
	return catalog.ErrnoName(int64(e.Status))
}

// The getaddrinfo error codes of glibc and musl (netdb.h).
var eaiNames = map[int32]string{-1: "EAI_BADFLAGS", -2: "EAI_NONAME", -3: "EAI_AGAIN", -4: "EAI_FAIL",
	-5: "EAI_NODATA", -6: "EAI_FAMILY", -7: "EAI_SOCKTYPE", -8: "EAI_SERVICE", -9: "EAI_ADDRFAMILY",
	-10: "EAI_MEMORY", -11: "EAI_SYSTEM", -12: "EAI_OVERFLOW"}

func eaiName(code int32) string {
	if n, ok := eaiNames[code]; ok {
		return n
	}
	return "EAI " + strconv.Itoa(int(code))
}

func (t *trace) collect() (*catalog.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := t.agg.result(t.Params)
	res.Notes = append(res.Notes, "seen: programs resolving through this C library ("+t.libc+"); not statically linked or pure-Go resolvers, nor containers with their own libc")
	return res, nil
}

type nameKey struct {
	name   string
	fn     Func
	result string
}

type nameStats struct {
	count   uint64
	totalNs uint64
	maxNs   uint64
	addr    netip.Addr
}

type procKey struct {
	pid  int32
	comm string
}

// aggregate is the user-space side: by name and outcome, by process, a
// latency distribution, samples.
type aggregate struct {
	total, failed, malformed uint64
	byName                   map[nameKey]*nameStats
	byProc                   map[procKey]uint64
	failByProc               map[procKey]uint64
	slots                    [catalog.Log2Slots]uint64
	samples                  []Event
}

func newAggregate() aggregate {
	return aggregate{byName: map[nameKey]*nameStats{}, byProc: map[procKey]uint64{}, failByProc: map[procKey]uint64{}}
}

func log2Slot(v uint64) int {
	s := 0
	for v > 1 {
		v >>= 1
		s++
	}
	if s >= catalog.Log2Slots {
		s = catalog.Log2Slots - 1
	}
	return s
}

func (a *aggregate) add(ev Event) {
	a.total++
	k := nameKey{ev.Name, ev.Func, ev.Result()}
	s := a.byName[k]
	if s == nil {
		s = &nameStats{}
		a.byName[k] = s
	}
	ns := uint64(max(ev.Latency, 0))
	s.count++
	s.totalNs += ns
	s.maxNs = max(s.maxNs, ns)
	if ev.Addr.IsValid() {
		s.addr = ev.Addr
	}
	pk := procKey{ev.PID, ev.Comm}
	a.byProc[pk]++
	if ev.Status != 0 {
		a.failed++
		a.failByProc[pk]++
	}
	a.slots[log2Slot(ns/1000)]++
	if len(a.samples) < catalog.MaxSamples {
		a.samples = append(a.samples, ev)
	}
}

func us(ns uint64) string { return strconv.FormatFloat(float64(ns)/1000, 'f', 1, 64) }

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func (a *aggregate) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: a.total}
	counts := make(map[nameKey]uint64, len(a.byName))
	for k, s := range a.byName {
		counts[k] = s.count
	}
	top, n := catalog.TopN(counts, catalog.MaxRows, func(x, y nameKey) bool {
		if x.name != y.name {
			return x.name < y.name
		}
		if x.fn != y.fn {
			return x.fn < y.fn
		}
		return x.result < y.result
	})
	names := catalog.Table{Title: "lookups by name", Columns: []string{"name", "function", "result", "count", "avg_us", "max_us", "address"}}
	for _, r := range top {
		s := a.byName[r.Key]
		names.AddRow(r.Key.name, r.Key.fn.String(), r.Key.result, catalog.U(s.count), us(s.totalNs/s.count), us(s.maxNs), addrString(s.addr))
	}
	names.TotalRows = n
	ptop, pn := catalog.TopN(a.byProc, catalog.MaxRows, func(x, y procKey) bool { return x.pid < y.pid })
	procs := catalog.Table{Title: "lookups by process", Columns: []string{"pid", "comm", "lookups", "failed"}}
	for _, r := range ptop {
		procs.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(r.Score), catalog.U(a.failByProc[r.Key]))
	}
	procs.TotalRows = pn
	res.Tables = []catalog.Table{names, procs}
	h := catalog.Log2Histogram("name resolution latency", "us", a.slots[:])
	if h.Count > 0 {
		res.Histograms = []catalog.Histogram{h}
	}
	samples := &catalog.Table{Title: "sample lookups", Columns: []string{"pid", "comm", "function", "name", "result", "latency_us", "address"}}
	for _, ev := range a.samples {
		samples.AddRow(catalog.U(ev.PID), ev.Comm, ev.Func.String(), ev.Name, ev.Result(), us(uint64(max(ev.Latency, 0))), addrString(ev.Addr))
	}
	samples.TotalRows = int(a.total)
	res.Samples = samples
	res.Summary = fmt.Sprintf("%d lookups, %d failed, %d distinct names", a.total, a.failed, len(distinct(a.byName)))
	if h.Count > 0 {
		res.Summary += fmt.Sprintf("; latency p50 %d µs, p99 %d µs", h.P50, h.P99)
	}
	if a.malformed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d malformed event records ignored", a.malformed))
	}
	return res
}

func distinct(m map[nameKey]*nameStats) map[string]bool {
	d := map[string]bool{}
	for k := range m {
		d[k.name] = true
	}
	return d
}
