// Package fileio is the catalog entry that answers "who reads and writes
// what": ops, bytes and latency per process and file from the read/write
// family of syscalls, aggregated in the kernel, with the file's path built
// in the kernel when the file is first seen.
package fileio

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"golang.org/x/sys/unix"
)

// Info describes the entry.
var Info = catalog.Info{
	Name:    "fileio",
	Answers: "who reads and writes what: bytes, ops and latency per process and file",
	Reports: "per process and file (path resolved in the kernel, sockets and pipes by inode): reads, writes, bytes, errors, average latency; totals per file and per process; read and write latency histograms",
	Aliases: []string{"filetop", "rwtop", "fileslower", "fileio", "vfs_read", "vfs_write", "read_write"},
	Tracepoints: []string{"syscalls:sys_enter_read", "syscalls:sys_exit_read", "syscalls:sys_enter_write", "syscalls:sys_exit_write",
		"syscalls:sys_enter_pread64", "syscalls:sys_exit_pread64", "syscalls:sys_enter_pwrite64", "syscalls:sys_exit_pwrite64",
		"syscalls:sys_enter_readv", "syscalls:sys_exit_readv", "syscalls:sys_enter_writev", "syscalls:sys_exit_writev",
		"syscalls:sys_enter_preadv", "syscalls:sys_exit_preadv", "syscalls:sys_enter_pwritev", "syscalls:sys_exit_pwritev"},
	Functions: []string{"vfs_read", "vfs_write", "vfs_readv", "vfs_writev", "ksys_read", "ksys_write", "ksys_pread64", "ksys_pwrite64",
		"__x64_sys_read", "__x64_sys_write", "__arm64_sys_read", "__arm64_sys_write", "new_sync_read", "new_sync_write"},
	Keywords: []string{"read", "write", "file io", "file i/o", "bytes written", "bytes read", "disk usage by process", "who writes", "log file", "throughput per file"},
	Filters:  []catalog.Filter{catalog.FilterPID, catalog.FilterTID, catalog.FilterUID, catalog.FilterComm, catalog.FilterCgroup},
	Requires: []catalog.Requirement{
		{Feature: catalog.FeatureBTF},
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_enter_read"},
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_exit_read"},
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_enter_write"},
		{Feature: catalog.FeatureTracepoint, Name: "syscalls/sys_exit_write"},
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

// The syscalls of each direction; all take the fd first. The vectored
// ones are optional (present everywhere today, but not required).
var (
	readCalls  = []string{"read", "pread64", "readv", "preadv"}
	writeCalls = []string{"write", "pwrite64", "writev", "pwritev"}
)

type objects struct {
	TpEnterRead  *ebpf.Program `ebpf:"tp_enter_read"`
	TpEnterWrite *ebpf.Program `ebpf:"tp_enter_write"`
	TpExitIo     *ebpf.Program `ebpf:"tp_exit_io"`
	Stats        *ebpf.Map     `ebpf:"stats"`
	Names        *ebpf.Map     `ebpf:"names"`
	Latency      *ebpf.Map     `ebpf:"latency"`
	Dropped      *ebpf.Map     `ebpf:"dropped"`
	Pending      *ebpf.Map     `ebpf:"pending"`
	Scratch      *ebpf.Map     `ebpf:"scratch"`
}

func (o *objects) Close() error {
	return catalog.CloseAll(o.TpEnterRead, o.TpEnterWrite, o.TpExitIo, o.Stats, o.Names, o.Latency, o.Dropped, o.Pending, o.Scratch)
}

type trace struct {
	catalog.Session
	objs  objects
	notes []string
}

func start(k *catalog.Kernel, p catalog.Params) (_ catalog.Trace, err error) {
	spec, err := catalog.Prepare(Info, p, loadFileio)
	if err != nil {
		return nil, err
	}
	if err := catalog.CheckRequirements(k, Info); err != nil {
		return nil, err
	}
	t := &trace{Session: catalog.Session{Entry: Info.Name, Params: p, Attach: "tracepoint, in-kernel aggregation"}}
	t.Objects, t.Collect = &t.objs, t.collect
	if err := k.Load(spec, &t.objs); err != nil {
		return nil, fmt.Errorf("fileio: %w", err)
	}
	defer func() {
		if err != nil {
			t.Abort()
		}
	}()
	type attach struct {
		name string
		prog *ebpf.Program
	}
	// Exits first: an enter without its exit would leave a pending entry.
	var exits, enters []attach
	for _, c := range readCalls {
		exits = append(exits, attach{"sys_exit_" + c, t.objs.TpExitIo})
		enters = append(enters, attach{"sys_enter_" + c, t.objs.TpEnterRead})
	}
	for _, c := range writeCalls {
		exits = append(exits, attach{"sys_exit_" + c, t.objs.TpExitIo})
		enters = append(enters, attach{"sys_enter_" + c, t.objs.TpEnterWrite})
	}
	for _, a := range append(exits, enters...) {
		if !catalog.TracepointExists("syscalls/" + a.name) {
			// Only the vectored calls can get here: Check required the rest.
			t.notes = append(t.notes, "not traced (no tracepoint): "+a.name)
			continue
		}
		if err := t.Links.Tracepoint("syscalls", a.name, a.prog); err != nil {
			return nil, fmt.Errorf("fileio: %w", err)
		}
	}
	t.Begin()
	return t, nil
}

// collect reads the kernel's aggregates at Stop. Seen stays 0 until then
// (no Session.Count): reading the map on every progress tick would cost
// more than it tells.
func (t *trace) collect() (*catalog.Result, error) {
	snap, err := t.read()
	res := snap.result(t.Params)
	res.Notes = append(res.Notes, t.notes...)
	return res, err
}

// Usage is one process's I/O on one file.
type Usage struct {
	PID        uint32
	Comm       string
	File       string
	Type       string
	Reads      uint64
	Writes     uint64
	ReadBytes  uint64
	WriteBytes uint64
	ReadNs     uint64
	WriteNs    uint64
	Errors     uint64
}

// snapshot is what the kernel aggregated.
type snapshot struct {
	usage      []Usage
	readHist   []uint32
	writeHist  []uint32
	dropped    uint64
	unresolved int
}

func (t *trace) read() (snapshot, error) {
	var snap snapshot
	var errs []error
	names := map[fileioFileId]fileioFileName{}
	err := catalog.EachEntry(t.objs.Stats, func(key *fileioFileKey, val *fileioFileStats) {
		id := fileioFileId{Ino: key.Ino, Dev: key.Dev}
		name, ok := names[id]
		if !ok {
			if err := t.objs.Names.Lookup(&id, &name); err != nil {
				snap.unresolved++
				name = fileioFileName{}
			}
			names[id] = name
		}
		snap.usage = append(snap.usage, usageOf(key, val, &name))
	})
	if err != nil {
		errs = append(errs, err)
	}
	for op, dst := range []*[]uint32{&snap.readHist, &snap.writeHist} {
		var h fileioHist
		if err := t.objs.Latency.Lookup(uint32(op), &h); err != nil {
			errs = append(errs, fmt.Errorf("read latency: %w", err))
			continue
		}
		*dst = h.Slots[:]
	}
	d, err := catalog.SumPerCPU(t.objs.Dropped, 0)
	if err != nil {
		errs = append(errs, err)
	}
	snap.dropped = d
	return snap, errors.Join(errs...)
}

func usageOf(key *fileioFileKey, val *fileioFileStats, name *fileioFileName) Usage {
	return Usage{
		PID: key.Tgid, Comm: catalog.CString(val.Comm[:]),
		File: FormatName(name, key.Ino), Type: fileType(name.Mode),
		Reads: val.Reads, Writes: val.Writes, ReadBytes: val.ReadBytes, WriteBytes: val.WriteBytes,
		ReadNs: val.ReadNs, WriteNs: val.WriteNs, Errors: val.Errors,
	}
}

// The flags of struct file_name in bpf/fileio.bpf.c.
const (
	nameRoot      = 1
	nameTruncated = 2
	namePseudo    = 4
)

// FormatName turns the kernel's leaf-first components into a path:
// absolute when the walk reached the root, "…/" in front when it stopped
// early, and "socket:[inode]"-style names for pseudo files, as
// /proc/<pid>/fd shows them.
func FormatName(n *fileioFileName, ino uint64) string {
	size := int(n.Size)
	if size > len(n.Buf) {
		size = len(n.Buf)
	}
	parts := catalog.SplitArgs(n.Buf[:], size)
	if n.Flags&namePseudo != 0 {
		leaf := ""
		if len(parts) > 0 {
			leaf = parts[0]
		}
		switch n.Mode & unix.S_IFMT {
		case unix.S_IFSOCK:
			if leaf != "" {
				return fmt.Sprintf("socket:[%d] (%s)", ino, leaf)
			}
			return fmt.Sprintf("socket:[%d]", ino)
		case unix.S_IFIFO:
			return fmt.Sprintf("pipe:[%d]", ino)
		}
		if leaf == "" {
			return fmt.Sprintf("anon_inode:[%d]", ino)
		}
		return "anon_inode:" + leaf
	}
	if len(parts) == 0 {
		if n.Flags&nameRoot != 0 {
			return "/"
		}
		return fmt.Sprintf("inode %d", ino)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	p := strings.Join(parts, "/")
	switch {
	case n.Flags&nameRoot != 0:
		return "/" + p
	case n.Flags&nameTruncated != 0:
		return "…/" + p
	}
	return p
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "pipe"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFLNK:
		return "symlink"
	}
	return "anon"
}

type fileKey struct{ file, typ string }

type procKey struct {
	pid  uint32
	comm string
}

type totals struct {
	reads, writes, readBytes, writeBytes, readNs, writeNs, errors uint64
	n                                                             int // processes of a file, files of a process
}

func (x *totals) add(u Usage) {
	x.reads += u.Reads
	x.writes += u.Writes
	x.readBytes += u.ReadBytes
	x.writeBytes += u.WriteBytes
	x.readNs += u.ReadNs
	x.writeNs += u.WriteNs
	x.errors += u.Errors
	x.n++
}

func avg(sum, n uint64) string {
	if n == 0 {
		return "-"
	}
	return catalog.U(sum / n)
}

func (s snapshot) result(p catalog.Params) *catalog.Result {
	res := &catalog.Result{Entry: Info.Name, Params: p.Describe()}
	var all totals
	byFile := map[fileKey]*totals{}
	byProc := map[procKey]*totals{}
	pairScore := map[int]uint64{}
	for i, u := range s.usage {
		all.add(u)
		fk, pk := fileKey{u.File, u.Type}, procKey{u.PID, u.Comm}
		if byFile[fk] == nil {
			byFile[fk] = &totals{}
		}
		byFile[fk].add(u)
		if byProc[pk] == nil {
			byProc[pk] = &totals{}
		}
		byProc[pk].add(u)
		pairScore[i] = u.ReadBytes + u.WriteBytes
	}
	res.Events = all.reads + all.writes

	// Ranked by bytes; equal bytes by ops, then by name, so the order is
	// stable.
	top, total := catalog.TopN(pairScore, catalog.MaxRows, func(a, b int) bool {
		ua, ub := s.usage[a], s.usage[b]
		if oa, ob := ua.Reads+ua.Writes, ub.Reads+ub.Writes; oa != ob {
			return oa > ob
		}
		if ua.File != ub.File {
			return ua.File < ub.File
		}
		return ua.PID < ub.PID
	})
	pairs := catalog.Table{Title: "I/O by process and file", Columns: []string{"pid", "comm", "type", "file",
		"reads", "read_bytes", "writes", "write_bytes", "errors", "avg_read_ns", "avg_write_ns"}}
	for _, r := range top {
		u := s.usage[r.Key]
		pairs.AddRow(catalog.U(u.PID), u.Comm, u.Type, u.File, catalog.U(u.Reads), catalog.U(u.ReadBytes),
			catalog.U(u.Writes), catalog.U(u.WriteBytes), catalog.U(u.Errors), avg(u.ReadNs, u.Reads), avg(u.WriteNs, u.Writes))
	}
	pairs.TotalRows = total

	fileScore := map[fileKey]uint64{}
	for k, v := range byFile {
		fileScore[k] = v.readBytes + v.writeBytes
	}
	topFiles, total := catalog.TopN(fileScore, catalog.MaxRows, func(a, b fileKey) bool { return a.file < b.file })
	files := catalog.Table{Title: "I/O by file", Columns: []string{"file", "type", "processes", "reads", "read_bytes", "writes", "write_bytes"}}
	for _, r := range topFiles {
		v := byFile[r.Key]
		files.AddRow(r.Key.file, r.Key.typ, catalog.U(v.n), catalog.U(v.reads), catalog.U(v.readBytes), catalog.U(v.writes), catalog.U(v.writeBytes))
	}
	files.TotalRows = total

	procScore := map[procKey]uint64{}
	for k, v := range byProc {
		procScore[k] = v.readBytes + v.writeBytes
	}
	topProcs, total := catalog.TopN(procScore, catalog.MaxRows, func(a, b procKey) bool { return a.pid < b.pid })
	procs := catalog.Table{Title: "I/O by process", Columns: []string{"pid", "comm", "files", "reads", "read_bytes", "writes", "write_bytes"}}
	for _, r := range topProcs {
		v := byProc[r.Key]
		procs.AddRow(catalog.U(r.Key.pid), r.Key.comm, catalog.U(v.n), catalog.U(v.reads), catalog.U(v.readBytes), catalog.U(v.writes), catalog.U(v.writeBytes))
	}
	procs.TotalRows = total

	res.Tables = []catalog.Table{pairs, files, procs}
	res.Histograms = []catalog.Histogram{
		catalog.Log2Histogram("read latency", "ns", s.readHist),
		catalog.Log2Histogram("write latency", "ns", s.writeHist),
	}
	res.Summary = fmt.Sprintf("%d reads (%d bytes), %d writes (%d bytes), %d errors on %d files by %d processes",
		all.reads, all.readBytes, all.writes, all.writeBytes, all.errors, len(byFile), len(byProc))
	if len(top) > 0 {
		u := s.usage[top[0].Key]
		res.Summary += fmt.Sprintf("; most bytes: %s by %s (%d), %d bytes", u.File, u.Comm, u.PID, u.ReadBytes+u.WriteBytes)
	}
	if s.dropped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d updates dropped: the per-file map was full, totals are lower bounds", s.dropped))
	}
	if s.unresolved > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d files without a path (the name map was full): shown by inode", s.unresolved))
	}
	res.Notes = append(res.Notes, "latency is per syscall (page-cache hits included); ops and bytes count successful calls, errors the failed ones; mmap, sendfile, splice and io_uring I/O are not seen")
	return res
}
