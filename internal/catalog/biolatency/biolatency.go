// Package biolatency is the catalog entry that answers "how slow is the
// disk, and who is doing the I/O": block request latency (issue to
// completion) as log2 histograms per disk and operation, and the processes
// that submitted the requests.
package biolatency

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:    "biolatency",
	Answers: "how slow is block I/O per disk, and which processes do it",
	Reports: "log2 latency histograms (issue to completion, µs) per disk and operation (read/write/flush/discard) with p50/p90/p99; counts, bytes, average latency and errors per disk; top submitting processes",
	Aliases: []string{"biolatency", "biosnoop", "biotop", "bitesize", "iostat", "disk_latency"},
	Tracepoints: []string{"block:block_rq_issue", "block:block_rq_complete", "block:block_io_start",
		"block:block_bio_queue", "block:block_rq_insert"},
	Functions: []string{"blk_mq_start_request", "blk_account_io_start", "blk_account_io_done",
		"blk_mq_end_request", "submit_bio", "submit_bio_noacct", "blk_update_request"},
	Keywords: []string{"disk", "block", "io latency", "iowait", "slow disk", "storage", "bio", "nvme", "ssd"},
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm,
		catalog.FilterCgroup, catalog.FilterFailed, catalog.FilterMinLatency},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "block/block_rq_issue"},
		{Feature: catalog.FeatureTracepoint, Name: "block/block_rq_complete"},
		{Feature: catalog.FeatureTracepoint, Name: "block/block_bio_queue"},
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

// Op is a block operation class.
type Op uint32

// The classes the BPF program sorts requests into (OP_* in the C file).
const (
	OpRead Op = iota
	OpWrite
	OpFlush
	OpDiscard
	OpOther
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpDiscard:
		return "discard"
	}
	return "other"
}

// Dev is a kernel dev_t as block tracepoints carry it (major in the top 12
// bits, minor in the low 20).
type Dev uint32

func (d Dev) Major() uint32 { return uint32(d) >> 20 }
func (d Dev) Minor() uint32 { return uint32(d) & (1<<20 - 1) }

// MakeDev builds the kernel's dev_t from a major and minor.
func MakeDev(major, minor uint32) Dev { return Dev(major<<20 | minor&(1<<20-1)) }

// submitter tracepoints, preferred first: block_io_start (6.5+) fires once
// per request in the submitter's context; block_bio_queue per bio.
const (
	submitIoStart  = "block_io_start"
	submitBioQueue = "block_bio_queue"
)

// forceBioQueue makes tests take the pre-6.5 path on a new kernel.
var forceBioQueue bool

type trace struct {
	catalog.Session
	maps      biolatencyMaps
	issue     *ebpf.Program
	complete  *ebpf.Program
	submit    *ebpf.Program
	submitter string
}

func (t *trace) closeObjects() error {
	return catalog.CloseAll(t.submit, t.issue, t.complete, &t.maps)
}

// hasType reports whether the kernel's BTF has the named type. The block
// tracepoints' record types tell their layout: before 5.11 block_bio_queue
// had its own (not the block_bio class), before 5.18 block_rq_complete too
// (not block_rq_completion); the programs named *_old read those. Without
// kernel BTF no CO-RE program loads, and the load says so.
func hasType(k *catalog.Kernel, name string) bool {
	spec, err := k.BTF()
	if err != nil {
		return true
	}
	_, err = spec.AnyTypeByName(name)
	return err == nil
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadBiolatency)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p}, submitter: submitBioQueue}
	t.Objects, t.Collect = catalog.CloseFunc(t.closeObjects), t.collect
	if !forceBioQueue && catalog.TracepointExists("block/"+submitIoStart) {
		t.submitter = submitIoStart
	}
	t.Attach = "tracepoint (block_rq_issue/block_rq_complete, submitter from " + t.submitter + ")"
	complete, submit := "tp_rq_complete", "tp_io_start"
	if !hasType(k, "trace_event_raw_block_rq_completion") {
		complete = "tp_rq_complete_old"
	}
	if t.submitter == submitBioQueue {
		submit = "tp_bio_queue"
		if !hasType(k, "trace_event_raw_block_bio") {
			submit = "tp_bio_queue_old"
		}
	}
	progs, err := k.LoadPrograms(spec, &t.maps, "tp_rq_issue", complete, submit)
	if err != nil {
		return nil, fmt.Errorf("biolatency: %w", err)
	}
	t.issue, t.complete, t.submit = progs[0], progs[1], progs[2]
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	// Submitters first, so a request issued right after attach finds its
	// owner; completions before issues, so no timed request is missed.
	for _, a := range []struct {
		name string
		prog *ebpf.Program
	}{
		{t.submitter, t.submit},
		{"block_rq_complete", t.complete},
		{"block_rq_issue", t.issue},
	} {
		if err := t.Links.Tracepoint("block", a.name, a.prog); err != nil {
			return nil, fmt.Errorf("biolatency: %w", err)
		}
	}
	t.Begin()
	return t, nil
}

func (t *trace) collect() (*catalog.Result, error) {
	disks, procs, err := readMaps(&t.maps)
	return buildResult(t.Params, disks, procs, DiskName), err
}

// DiskKey and the stats below are the in-kernel aggregates, decoded.
type DiskKey struct {
	Dev Dev
	Op  Op
}

// DiskStats is one disk and operation.
type DiskStats struct {
	Count, Bytes, TotalNs, Errors uint64
	Slots                         [catalog.Log2Slots]uint32 // latency in µs
}

// ProcKey is one submitting process on one disk and operation.
type ProcKey struct {
	PID  uint32
	Comm string
	Dev  Dev
	Op   Op
}

// ProcStats is what one process submitted.
type ProcStats struct {
	Count, Bytes, TotalNs uint64
}

func readMaps(m *biolatencyMaps) (map[DiskKey]DiskStats, map[ProcKey]ProcStats, error) {
	disks := map[DiskKey]DiskStats{}
	err1 := catalog.EachEntry(m.Disks, func(dk *biolatencyBioDiskKey, dv *biolatencyBioDiskStats) {
		disks[DiskKey{Dev(dk.Dev), Op(dk.Op)}] = DiskStats{Count: dv.Count, Bytes: dv.Bytes, TotalNs: dv.TotalNs,
			Errors: dv.Errors, Slots: dv.Hist.Slots}
	})
	procs := map[ProcKey]ProcStats{}
	err2 := catalog.EachEntry(m.Procs, func(pk *biolatencyBioProcKey, pv *biolatencyBioProcStats) {
		procs[ProcKey{PID: pk.Tgid, Comm: catalog.CString(pk.Comm[:]), Dev: Dev(pk.Dev), Op: Op(pk.Op)}] =
			ProcStats{Count: pv.Count, Bytes: pv.Bytes, TotalNs: pv.TotalNs}
	})
	return disks, procs, errors.Join(err1, err2)
}

// DiskName names a device the way /dev does ("sda", "nvme0n1p2",
// "loop3"), from sysfs; "MAJ:MIN" when sysfs does not know it (removed
// since).
func DiskName(d Dev) string {
	id := fmt.Sprintf("%d:%d", d.Major(), d.Minor())
	data, err := os.ReadFile(filepath.Join("/sys/dev/block", id, "uevent"))
	if err != nil {
		return id
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok && v != "" {
			return v
		}
	}
	return id
}

func avgUs(totalNs, count uint64) string {
	if count == 0 {
		return "0"
	}
	return strconv.FormatFloat(float64(totalNs)/float64(count)/1000, 'f', 1, 64)
}

func buildResult(p catalog.Params, disks map[DiskKey]DiskStats, procs map[ProcKey]ProcStats, name func(Dev) string) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}
	names := map[Dev]string{}
	nameOf := func(d Dev) string {
		if n, ok := names[d]; ok {
			return n
		}
		n := name(d)
		names[d] = n
		return n
	}
	byCount := map[DiskKey]uint64{}
	var total, errs uint64
	for k, v := range disks {
		byCount[k] = v.Count
		total += v.Count
		errs += v.Errors
	}
	res.Events = total
	lessDisk := func(a, b DiskKey) bool {
		if a.Dev != b.Dev {
			return a.Dev < b.Dev
		}
		return a.Op < b.Op
	}
	top, n := catalog.TopN(byCount, catalog.MaxRows, lessDisk)
	diskTab := catalog.Table{Title: "I/O by disk and operation", Columns: []string{"disk", "op", "count", "bytes", "avg_us", "p99_us", "errors"}}
	var slowest catalog.Histogram
	var slowestName string
	for _, r := range top {
		v := disks[r.Key]
		label := nameOf(r.Key.Dev) + " " + r.Key.Op.String()
		h := catalog.Log2Histogram("block I/O latency: "+label, "us", v.Slots[:])
		res.Histograms = append(res.Histograms, h)
		diskTab.AddRow(nameOf(r.Key.Dev), r.Key.Op.String(), catalog.U(v.Count), catalog.U(v.Bytes),
			avgUs(v.TotalNs, v.Count), catalog.U(h.P99), catalog.U(v.Errors))
		if h.P99 > slowest.P99 || slowestName == "" {
			slowest, slowestName = h, label
		}
	}
	diskTab.TotalRows = n

	procCount := map[ProcKey]uint64{}
	for k, v := range procs {
		procCount[k] = v.Count
	}
	ptop, pn := catalog.TopN(procCount, catalog.MaxRows, func(a, b ProcKey) bool {
		if a.PID != b.PID {
			return a.PID < b.PID
		}
		if a.Comm != b.Comm {
			return a.Comm < b.Comm
		}
		return lessDisk(DiskKey{a.Dev, a.Op}, DiskKey{b.Dev, b.Op})
	})
	procTab := catalog.Table{Title: "top processes by I/O (submitter)", Columns: []string{"pid", "comm", "disk", "op", "count", "bytes", "avg_us"}}
	for _, r := range ptop {
		v := procs[r.Key]
		procTab.AddRow(catalog.U(r.Key.PID), r.Key.Comm, nameOf(r.Key.Dev), r.Key.Op.String(), catalog.U(v.Count),
			catalog.U(v.Bytes), avgUs(v.TotalNs, v.Count))
	}
	procTab.TotalRows = pn
	res.Tables = []catalog.Table{diskTab, procTab}

	devs := map[Dev]bool{}
	for k := range disks {
		devs[k.Dev] = true
	}
	res.Summary = fmt.Sprintf("%d block I/Os on %d disks, %d errors", total, len(devs), errs)
	if slowestName != "" {
		res.Summary += fmt.Sprintf("; slowest p99: %s %d µs", slowestName, slowest.P99)
	}
	return res
}
