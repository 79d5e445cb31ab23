// Package oomkill is the catalog entry that answers "what did the OOM killer
// kill, and why": each kill with its victim, the task whose allocation
// triggered it, the victim's memory cgroup and its sizes.
package oomkill

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/nannyagent/nannyagent/internal/catalog"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:        "oomkill",
	Answers:     "what did the OOM killer kill, and why",
	Reports:     "each OOM kill: victim pid/comm/uid, oom_score_adj, its memory cgroup, total_vm and anon/file/shmem rss (kB and pages), the triggering process; kills by victim and by memory cgroup",
	Aliases:     []string{"oomkill", "oom_kill", "oomkiller", "oom"},
	Tracepoints: []string{"oom:mark_victim"},
	Functions:   []string{"oom_kill_process", "__oom_kill_process", "mark_oom_victim", "out_of_memory", "mem_cgroup_out_of_memory"},
	Keywords:    []string{"oom", "out of memory", "oom killer", "killed process", "memory limit", "memory.max", "cgroup memory", "exit 137"},
	// Filters select the victim, not the trigger.
	Filters: []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureTracepoint, Name: "oom/mark_victim"},
	},
	Attach:  []string{"tp_btf", "raw_tp", "tracepoint"},
	Streams: true,
}

// Kill is one OOM kill, decoded.
type Kill struct {
	VictimPID, VictimTID   int32
	VictimComm             string
	VictimUID              uint32
	OOMScoreAdj            int16
	TriggerPID, TriggerTID int32
	TriggerComm            string
	// MemcgID is the victim's memory cgroup (its directory's inode); 0
	// when unknown (classic tracepoint mode).
	MemcgID   uint64
	MemcgName string
	// Sizes in kB; Flags say which fields the kernel gave.
	TotalVMKB, AnonRSSKB, FileRSSKB, ShmemRSSKB, PgtablesKB uint64
	Flags                                                   uint32
}

// Flags of a Kill (enum oom_flags in bpf/oomkill.bpf.c).
const (
	HasTask  = 1
	HasSizes = 2
	HasComm  = 4
	HasUID   = 8
	HasScore = 16
)

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

const rawTracepoint = "mark_victim"

// attachMode prefers tp_btf/raw_tp where the tracepoint passes the victim
// task (recent kernels; before, it passed only the pid), then the classic
// tracepoint.
func attachMode(k *catalog.Kernel) (catalog.Feature, error) {
	var typed []string
	if victimIsTask(k) {
		typed = []string{rawTracepoint}
	}
	mode, err := catalog.TracepointMode(k, typed, func() error { return catalog.CheckRequirements(k, Info) })
	if err != nil && typed == nil {
		err = fmt.Errorf("no tp_btf or raw_tp mark_victim with the victim task, and %w", err)
	}
	return mode, err
}

// victimIsTask reads btf_trace_mark_victim: is its first argument a task
// pointer?
func victimIsTask(k *catalog.Kernel) bool {
	args, err := k.RawTracepointArgs(rawTracepoint)
	if err != nil || len(args) < 1 {
		return false
	}
	arg, ok := btf.UnderlyingType(args[0].Type).(*btf.Pointer)
	if !ok {
		return false
	}
	st, ok := btf.UnderlyingType(arg.Target).(*btf.Struct)
	return ok && st.Name == "task_struct"
}

// classicFilterCheck refuses filters the classic tracepoint cannot apply on
// this kernel: its record has no cgroup, and older ones no comm or uid.
func classicFilterCheck(p catalog.Params) error {
	if p.Cgroup != "" {
		return errors.New("the cgroup filter needs the victim task (tp_btf or raw_tp mark_victim), not available here")
	}
	dir, err := catalog.EnsureTracefs()
	if err != nil {
		return err
	}
	format, err := os.ReadFile(filepath.Join(dir, "events/oom/mark_victim/format"))
	if err != nil {
		return fmt.Errorf("read mark_victim format: %w", err)
	}
	if p.Comm != "" && !strings.Contains(string(format), " comm;") {
		return errors.New("the comm filter needs a mark_victim record with comm, not on this kernel")
	}
	if p.UID != nil && !strings.Contains(string(format), " uid;") {
		return errors.New("the uid filter needs a mark_victim record with uid, not on this kernel")
	}
	return nil
}

type trace struct {
	catalog.Session
	mode catalog.Feature
	prog *ebpf.Program
	maps oomkillMaps

	mu  sync.Mutex // guards agg: written by the stream goroutine
	agg aggregate
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadOomkill)
	if err != nil {
		return nil, err
	}
	mode, err := attachMode(k)
	if err != nil {
		return nil, &catalog.UnsupportedError{Entry: Info.Name, Reason: err.Error()}
	}
	if mode == catalog.FeatureTracepoint {
		if err := classicFilterCheck(p); err != nil {
			return nil, fmt.Errorf("oomkill: %w", err)
		}
	}
	if err := spec.Variables["page_kb"].Set(uint64(os.Getpagesize() / 1024)); err != nil {
		return nil, fmt.Errorf("oomkill: set page_kb: %w", err)
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: catalog.ModeName(mode)}, mode: mode}
	t.Objects, t.Collect = catalog.CloseFunc(func() error { return catalog.CloseAll(t.prog, &t.maps) }), t.collect
	usePerf, err := catalog.PrepareEvents(k, spec)
	if err != nil {
		return nil, fmt.Errorf("oomkill: %w", err)
	}
	progs, err := k.LoadPrograms(spec, &t.maps, map[catalog.Feature]string{
		catalog.FeatureTpBTF: "tp_btf_mark_victim", catalog.FeatureRawTracepoint: "raw_tp_mark_victim", catalog.FeatureTracepoint: "tp_mark_victim",
	}[mode])
	if err != nil {
		return nil, fmt.Errorf("oomkill: %w", err)
	}
	t.prog = progs[0]
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	handle := catalog.Records(&t.mu, &t.agg.malformed, func(rec *oomkillOomEvent) { t.agg.add(decodeKill(rec)) })
	if err := t.StartStream(catalog.StreamObjects{Events: t.maps.Events, EventsPerf: t.maps.EventsPerf, Lost: t.maps.Lost}, usePerf, handle); err != nil {
		return nil, err
	}
	if err := t.Links.Attach(mode, "oom", rawTracepoint, t.prog); err != nil {
		return nil, fmt.Errorf("oomkill: %w", err)
	}
	t.Begin()
	return t, nil
}

func decodeKill(rec *oomkillOomEvent) Kill {
	return Kill{
		VictimPID: rec.VictimPid, VictimTID: rec.VictimTid,
		VictimComm: catalog.CString(rec.VictimComm[:]), VictimUID: rec.VictimUid,
		OOMScoreAdj: rec.OomScoreAdj,
		TriggerPID:  rec.TriggerPid, TriggerTID: rec.TriggerTid,
		TriggerComm: catalog.CString(rec.TriggerComm[:]),
		MemcgID:     rec.MemcgId, MemcgName: catalog.CString(rec.MemcgName[:]),
		TotalVMKB: rec.TotalVmKb, AnonRSSKB: rec.AnonRssKb, FileRSSKB: rec.FileRssKb,
		ShmemRSSKB: rec.ShmemRssKb, PgtablesKB: rec.PgtablesKb,
		Flags: rec.Flags,
	}
}

func (t *trace) collect() (*catalog.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := t.agg.result(t.Params, newCgroupResolver())
	if t.mode == catalog.FeatureTracepoint {
		res.Notes = append(res.Notes, "classic tracepoint: the victim's memory cgroup is unknown (the kernel does not pass the victim task here)")
	}
	return res, nil
}

// aggregate keeps every kill: the OOM killer is rare, and MaxSamples
// bounds what the result shows.
type aggregate struct {
	kills     []Kill
	total     uint64
	malformed uint64
}

// maxKept bounds memory under an OOM storm; counts stay exact.
const maxKept = 4096

func (a *aggregate) add(k Kill) {
	a.total++
	if len(a.kills) < maxKept {
		a.kills = append(a.kills, k)
	}
}

func (a *aggregate) result(p catalog.Params, cg cgroupResolver) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe(), Events: a.total}
	byVictim := map[string]uint64{}
	byMemcg := map[string]uint64{}
	maxRSS := map[string]uint64{}
	for i := range a.kills {
		k := &a.kills[i]
		byVictim[k.VictimComm]++
		rss := k.AnonRSSKB + k.FileRSSKB + k.ShmemRSSKB
		maxRSS[k.VictimComm] = max(maxRSS[k.VictimComm], rss)
		byMemcg[cg.path(k)]++
	}
	top, n := catalog.TopN(byVictim, catalog.MaxRows, func(x, y string) bool { return x < y })
	vt := catalog.Table{Title: "OOM kills by victim command", Columns: []string{"comm", "kills", "max_rss_kb"}}
	for _, r := range top {
		vt.AddRow(r.Key, catalog.U(r.Score), catalog.U(maxRSS[r.Key]))
	}
	vt.TotalRows = n
	topCg, nCg := catalog.TopN(byMemcg, catalog.MaxRows, func(x, y string) bool { return x < y })
	ct := catalog.Table{Title: "OOM kills by memory cgroup", Columns: []string{"memory_cgroup", "kills"}}
	for _, r := range topCg {
		ct.AddRow(r.Key, catalog.U(r.Score))
	}
	ct.TotalRows = nCg
	res.Tables = []catalog.Table{vt, ct}

	pageKB := uint64(os.Getpagesize() / 1024)
	samples := &catalog.Table{Title: "OOM kills", Columns: []string{"victim_pid", "victim_comm", "uid", "oom_score_adj", "memory_cgroup",
		"trigger_pid", "trigger_comm", "anon_rss_kb", "file_rss_kb", "shmem_rss_kb", "rss_pages", "total_vm_kb", "pgtables_kb"}}
	for i := range a.kills {
		k := &a.kills[i]
		rss := k.AnonRSSKB + k.FileRSSKB + k.ShmemRSSKB
		samples.AddRow(catalog.U(k.VictimPID), known(k.Flags, HasComm, k.VictimComm), known(k.Flags, HasUID, catalog.U(k.VictimUID)),
			known(k.Flags, HasScore, fmt.Sprint(k.OOMScoreAdj)), cg.path(k),
			catalog.U(k.TriggerPID), k.TriggerComm,
			known(k.Flags, HasSizes, catalog.U(k.AnonRSSKB)), known(k.Flags, HasSizes, catalog.U(k.FileRSSKB)),
			known(k.Flags, HasSizes, catalog.U(k.ShmemRSSKB)), known(k.Flags, HasSizes, catalog.U(rss/pageKB)),
			known(k.Flags, HasSizes, catalog.U(k.TotalVMKB)), known(k.Flags, HasSizes, catalog.U(k.PgtablesKB)))
	}
	samples.TotalRows = int(a.total)
	res.Samples = samples

	res.Summary = fmt.Sprintf("%d OOM kills", a.total)
	if len(a.kills) > 0 {
		k := &a.kills[len(a.kills)-1]
		res.Summary += fmt.Sprintf("; last: %s (pid %d) in %s, triggered by %s (pid %d)", k.VictimComm, k.VictimPID, cg.path(k), k.TriggerComm, k.TriggerPID)
		if k.Flags&HasSizes != 0 {
			res.Summary += fmt.Sprintf(", rss %d kB", k.AnonRSSKB+k.FileRSSKB+k.ShmemRSSKB)
		}
	}
	if a.total > uint64(len(a.kills)) {
		res.Notes = append(res.Notes, fmt.Sprintf("tables cover the first %d of %d kills", len(a.kills), a.total))
	}
	if a.malformed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d malformed event records ignored", a.malformed))
	}
	return res
}

func known(flags, bit uint32, v string) string {
	if flags&bit == 0 {
		return "?"
	}
	return v
}

// cgroupResolver names memory cgroups by path. The kernel gives the
// kernfs id (the directory's inode) and the leaf name; inode numbers repeat
// across cgroup v1 hierarchies, so both must match, and only hierarchies
// that carry the memory controller are searched.
type cgroupResolver struct {
	roots []string
	cache map[uint64]string
}

func newCgroupResolver() cgroupResolver {
	return cgroupResolver{roots: memoryCgroupRoots("/proc/self/mountinfo"), cache: map[uint64]string{}}
}

func (c cgroupResolver) path(k *Kill) string {
	if k.Flags&HasTask == 0 || k.MemcgID == 0 {
		return "?"
	}
	if p, ok := c.cache[k.MemcgID]; ok {
		return p
	}
	p := findCgroup(c.roots, k.MemcgID, k.MemcgName)
	if p == "" {
		p = fmt.Sprintf("%s (id %d)", k.MemcgName, k.MemcgID)
	}
	if c.cache != nil {
		c.cache[k.MemcgID] = p
	}
	return p
}

// memoryCgroupRoots lists the mount points of cgroup2 and of cgroup v1
// hierarchies with the memory controller.
func memoryCgroupRoots(mountinfo string) []string {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil
	}
	defer f.Close()
	var roots []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch {
		case qf[0] == "cgroup2":
			roots = append(roots, pf[4])
		case qf[0] == "cgroup" && hasOption(qf[2], "memory"):
			roots = append(roots, pf[4])
		}
	}
	return roots
}

func hasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// findCgroup walks the roots for the directory with inode id and leaf
// name (a hierarchy's root has an empty or "/" name in the kernel).
func findCgroup(roots []string, id uint64, name string) string {
	const maxDepth = 10
	for _, root := range roots {
		var found string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if strings.Count(strings.TrimPrefix(p, root), "/") > maxDepth {
				return fs.SkipDir
			}
			if p == root {
				if name != "" && name != "/" {
					return nil
				}
			} else if filepath.Base(p) != name {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Ino == id {
				found = p
				return fs.SkipAll
			}
			return nil
		})
		if found != "" {
			return found
		}
	}
	return ""
}
