// Package signals is the catalog entry that answers "who signals whom":
// every signal the kernel generates, counted in the kernel by sender,
// target, signal, how it was sent (si_code) and what became of it.
package signals

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "signals",
	Answers:     "who signals whom",
	Reports:     "signals by sender pid/comm, target pid/comm, signal, si_code (kill, tkill, sigqueue, kernel...) and result (delivered, ignored, already pending, queue full); undelivered signals. With the classic tracepoint (no tp_btf or raw_tp) the kernel records the target thread: its process is looked up at stop, and a thread that has exited stays a thread id",
	Aliases:     []string{"killsnoop", "sigsnoop", "signals", "kill", "signal"},
	Tracepoints: []string{"signal:signal_generate"},
	Functions:   []string{"__send_signal_locked", "__send_signal", "send_signal", "do_send_sig_info", "kill_pid_info", "group_send_sig_info", "__x64_sys_kill", "__x64_sys_tgkill", "__arm64_sys_kill", "__arm64_sys_tgkill"},
	Keywords:    []string{"signal", "kill", "sigkill", "sigterm", "sigsegv", "who killed", "sigchld"},
	// Filters select the sender.
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup, catalog.FilterFailed},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "signal/signal_generate"},
	},
	Attach:  []string{"tp_btf", "raw_tp", "tracepoint"},
	Streams: false,
}

// Entry is the catalog entry.
type Entry struct{}

func (Entry) Info() catalog.Info { return Info }

// Check accepts any of the three attach modes; the classic tracepoint is
// the declared baseline.
func (Entry) Check(k *catalog.Kernel) error {
	if _, err := attachMode(k); err != nil {
		return &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	return nil
}

func (Entry) Start(ctx context.Context, k *catalog.Kernel, p catalog.Params) (catalog.Trace, error) {
	return start(k, p)
}

const rawTracepoint = "signal_generate"

// attachMode prefers tp_btf and raw_tp, which see the target task (so the
// target is a process), over the classic tracepoint (a thread id only,
// mapped to its process at stop while the thread lives).
func attachMode(k *catalog.Kernel) (catalog.Feature, error) {
	return catalog.TracepointMode(k, []string{rawTracepoint}, func() error { return catalog.CheckRequirements(k, Info) })
}

type trace struct {
	catalog.Session
	mode catalog.Feature
	prog *ebpf.Program
	maps signalsMaps
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadSignals)
	if err != nil {
		return nil, err
	}
	mode, err := attachMode(k)
	if err != nil {
		return nil, &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: catalog.ModeName(mode)}, mode: mode}
	t.Objects, t.Collect = catalog.CloseFunc(func() error { return catalog.CloseAll(t.prog, &t.maps) }), t.collect
	progs, err := k.LoadPrograms(spec, &t.maps, map[catalog.Feature]string{
		catalog.FeatureTpBTF: "tp_btf_generate", catalog.FeatureRawTracepoint: "raw_tp_generate", catalog.FeatureTracepoint: "tp_generate",
	}[mode])
	if err != nil {
		return nil, fmt.Errorf("signals: %w", err)
	}
	t.prog = progs[0]
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	if err := t.Links.Attach(mode, "signal", rawTracepoint, t.prog); err != nil {
		return nil, fmt.Errorf("signals: %w", err)
	}
	t.Begin()
	return t, nil
}

func (t *trace) collect() (*catalog.Result, error) {
	a, err := t.readMaps()
	var gone int
	if t.mode == catalog.FeatureTracepoint {
		a, gone = a.toProcesses(procTgid)
	}
	res := a.result(t.Params)
	if gone > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d targets are thread ids: the classic tracepoint records the target "+
			"thread, whose process is looked up at stop, and these threads had exited", gone))
	}
	return res, err
}

// toProcesses replaces the target thread ids the classic tracepoint
// records with their processes, as tgidOf finds them (the thread's comm
// must still match, so a reused id is not taken for the thread), and
// returns how many targets it could not resolve. The BPF program cannot
// do it: it runs in the sender's context and the record holds no task.
func (a *aggregate) toProcesses(tgidOf func(tid uint32, comm string) (uint32, bool)) (*aggregate, int) {
	out := &aggregate{counts: make(map[Key]uint64, len(a.counts)), dropped: a.dropped}
	resolved := map[uint32]uint32{}
	gone := map[uint32]bool{}
	for k, n := range a.counts {
		tgid, ok := resolved[k.TargetPID]
		if !ok && !gone[k.TargetPID] {
			if tgid, ok = tgidOf(k.TargetPID, k.TargetComm); ok {
				resolved[k.TargetPID] = tgid
			} else {
				gone[k.TargetPID] = true
			}
		}
		if ok {
			k.TargetPID = tgid
		}
		out.counts[k] += n
	}
	return out, len(gone)
}

// procTgid reads the process of thread tid from /proc/<tid>/status
// (readable for any thread id, though not listed), if its name is comm.
func procTgid(tid uint32, comm string) (uint32, bool) {
	if tid == 0 {
		return 0, false
	}
	data, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return 0, false
	}
	var name string
	var tgid uint64
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Name":
			name = val
		case "Tgid":
			tgid, err = strconv.ParseUint(val, 10, 32)
			found = err == nil
		}
	}
	if !found || name != comm {
		return 0, false
	}
	return uint32(tgid), true
}

func (t *trace) readMaps() (*aggregate, error) {
	a := newAggregate()
	err := catalog.EachEntry(t.maps.Counts, func(key *signalsSigKey, n *uint64) { a.add(decodeKey(key), *n) })
	if err != nil {
		return a, err
	}
	dropped, err := catalog.SumPerCPU(t.maps.Dropped, 0)
	a.dropped = dropped
	return a, err
}

// attachName is the mode as Info.Attach spells it.

// Key is one counted kind of signal.
type Key struct {
	SenderPID  uint32
	SenderComm string
	TargetPID  uint32
	TargetComm string
	Signal     int
	Code       int
	Result     Result
}

func decodeKey(k *signalsSigKey) Key {
	return Key{
		SenderPID: k.SenderPid, SenderComm: catalog.CString(k.SenderComm[:]),
		TargetPID: k.TargetPid, TargetComm: catalog.CString(k.TargetComm[:]),
		Signal: int(k.Sig), Code: int(k.Code), Result: Result(k.Result),
	}
}

// Result is what the kernel did with a signal (enum trace_signal_delivery).
type Result int

// The results signal_generate records.
const (
	Delivered      Result = 0
	Ignored        Result = 1
	AlreadyPending Result = 2
	OverflowFail   Result = 3
	LoseInfo       Result = 4
)

func (r Result) String() string {
	switch r {
	case Delivered:
		return "delivered"
	case Ignored:
		return "ignored"
	case AlreadyPending:
		return "already_pending"
	case OverflowFail:
		return "queue_full"
	case LoseInfo:
		return "delivered_without_info"
	}
	return fmt.Sprintf("result %d", int(r))
}

// CodeName names an si_code: how the signal was sent, or for SIGCHLD and
// the fault signals what happened.
func CodeName(sig, code int) string {
	switch code {
	case 0:
		return "kill"
	case 0x80:
		return "kernel"
	case -1:
		return "sigqueue"
	case -2:
		return "timer"
	case -3:
		return "mq_notify"
	case -4:
		return "aio"
	case -5:
		return "sigio"
	case -6:
		return "tkill"
	}
	if code > 0 {
		switch sig {
		case 17: // SIGCHLD
			if name, ok := cldCodes[code]; ok {
				return name
			}
		case 11: // SIGSEGV
			if name, ok := segvCodes[code]; ok {
				return name
			}
		}
	}
	return fmt.Sprintf("code %d", code)
}

var cldCodes = map[int]string{1: "child_exited", 2: "child_killed", 3: "child_dumped", 4: "child_trapped", 5: "child_stopped", 6: "child_continued"}
var segvCodes = map[int]string{1: "segv_maperr", 2: "segv_accerr", 3: "segv_bnderr", 4: "segv_pkuerr"}

// aggregate is the kernel's counts, read at Stop.
type aggregate struct {
	counts  map[Key]uint64
	dropped uint64
}

func newAggregate() *aggregate { return &aggregate{counts: map[Key]uint64{}} }

func (a *aggregate) add(k Key, n uint64) { a.counts[k] += n }

func keyLess(x, y Key) bool {
	if x.SenderPID != y.SenderPID {
		return x.SenderPID < y.SenderPID
	}
	if x.TargetPID != y.TargetPID {
		return x.TargetPID < y.TargetPID
	}
	if x.Signal != y.Signal {
		return x.Signal < y.Signal
	}
	if x.Code != y.Code {
		return x.Code < y.Code
	}
	return x.Result < y.Result
}

func (a *aggregate) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Lost: a.dropped}
	bySignal := map[int]uint64{}
	undelivered := map[Key]uint64{}
	var total, failed uint64
	for k, n := range a.counts {
		total += n
		bySignal[k.Signal] += n
		if k.Result != Delivered {
			failed += n
			undelivered[k] = n
		}
	}
	res.Events = total

	top, n := catalog.TopN(a.counts, catalog.MaxRows, keyLess)
	cols := []string{"sender_pid", "sender_comm", "target_pid", "target_comm", "signal", "code", "result", "count"}
	pairs := catalog.Table{Title: "signals by sender and target", Columns: cols}
	for _, r := range top {
		pairs.AddRow(row(r.Key, r.Score)...)
	}
	pairs.TotalRows = n

	topSig, nSig := catalog.TopN(bySignal, catalog.MaxRows, func(x, y int) bool { return x < y })
	sigTab := catalog.Table{Title: "signals by signal", Columns: []string{"signal", "count"}}
	for _, r := range topSig {
		sigTab.AddRow(catalog.SignalName(r.Key), catalog.U(r.Score))
	}
	sigTab.TotalRows = nSig

	topFail, nFail := catalog.TopN(undelivered, catalog.MaxRows, keyLess)
	failTab := catalog.Table{Title: "signals not delivered (ignored, already pending, queue full)", Columns: cols}
	for _, r := range topFail {
		failTab.AddRow(row(r.Key, r.Score)...)
	}
	failTab.TotalRows = nFail
	res.Tables = []catalog.Table{pairs, sigTab, failTab}

	res.Summary = fmt.Sprintf("%d signals generated, %d not delivered, %d distinct sender/target/signal kinds", total, failed, len(a.counts))
	if len(top) > 0 {
		k := top[0].Key
		res.Summary += fmt.Sprintf("; most: %s(%d) -> %s(%d) %s (%d)", k.SenderComm, k.SenderPID, k.TargetComm, k.TargetPID, catalog.SignalName(k.Signal), top[0].Score)
	}
	if a.dropped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d signals not counted: the kernel's count table was full", a.dropped))
	}
	return res
}

func row(k Key, n uint64) []string {
	return []string{catalog.U(k.SenderPID), k.SenderComm, catalog.U(k.TargetPID), k.TargetComm,
		catalog.SignalName(k.Signal), CodeName(k.Signal, k.Code), k.Result.String(), catalog.U(n)}
}
