package offline

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

var fileioCols = []string{"pid", "comm", "type", "file", "reads", "read_bytes", "writes", "write_bytes", "errors", "avg_read_ns", "avg_write_ns"}

// fileioResult is a 4 s fileio trace with its per process and file rows.
func fileioResult(params map[string]string, rows ...[]string) *catalog.Result {
	return result("fileio", params, tbl("I/O by process and file", fileioCols, rows...))
}

// The workloads of the scenarios, as the traces and facts show them on a
// fast virtual disk: a writer with two threads of 1 MiB O_DSYNC writes
// (4 s in write() per second of trace: both threads always waiting), a
// reader of random 4 KiB O_DIRECT blocks.
var (
	writerRows = [][]string{
		{"4457", "ingest-writer", "file", "/var/lib/ingest/data.0", "0", "0", "2500", "2621440000", "0", "-", "1600000"},
		{"4457", "ingest-writer", "file", "/var/lib/ingest/data.1", "0", "0", "2500", "2621440000", "0", "-", "1600000"},
	}
	writerBio  = []string{"4457", "ingest-writer", "vdb", "write", "5800", "5242880000", "490"}
	writerFact = sysinfo.Process{PID: 4457, Comm: "ingest-writer", Cmdline: "ingest-writer --sync", State: "D",
		WriteBytesPerSec: 1250 * float64(mib), WriteCallsPerSec: 1250,
		SyncFiles: []string{"/var/lib/ingest/data.0 (O_DSYNC)", "/var/lib/ingest/data.1 (O_DSYNC)"}}
	readerRow  = []string{"4600", "dbreader", "file", "/var/lib/db/table.db", "15000", "61440000", "0", "0", "0", "266000", "-"}
	readerBio  = []string{"4600", "dbreader", "vdb", "read", "13500", "55296000", "158"}
	readerFact = sysinfo.Process{PID: 4600, Comm: "dbreader", Cmdline: "dbreader", State: "D",
		ReadBytesPerSec: 13 * float64(mib), ReadCallsPerSec: 3750, SyncFiles: []string{"/var/lib/db/table.db (O_DIRECT)"}}
)

func renamed(row []string, comm string) []string {
	r := append([]string{}, row...)
	r[1] = comm
	return r
}

func withRead(r *catalog.Result, p50, p99, count uint64) *catalog.Result {
	r.Histograms = append(r.Histograms, catalog.Histogram{Title: "block I/O latency: vdb read", Unit: "us", Count: count, P50: p50, P90: p50, P99: p99})
	return r
}

// TestSyncIO: processes waiting on their own I/O make a finding whatever
// the disk's utilisation, named with the disk, the numbers and what
// makes the writes synchronous; the checks stay quiet on I/O that does
// not wait for a device.
func TestSyncIO(t *testing.T) {
	e := testEngine(t)
	type want struct {
		severity  string
		title     string
		rootCause []string
		evidence  [][]string
		absent    []string // finding titles that must not be there
		second    string   // the start of the second finding's title
	}
	cases := []struct {
		name   string
		issue  string
		facts  func(f *sysinfo.Facts)
		cmds   []safeexec.Result
		traces []*catalog.Result
		want   *want // nil: no io.* finding at all
	}{
		{
			name:  "a synchronous writer on a disk far from saturated, on a CPU-saturated host",
			issue: "writing to disk has become very slow on this server",
			facts: func(f *sysinfo.Facts) {
				f.TopIO = []sysinfo.Process{writerFact}
				f.PSI.IO.SomeAvg10 = 9
				f.CPU.Blocked = 2
				// A busier problem the issue is less specifically about.
				f.CPUs, f.CPU.RunQueue, f.Load = 2, 11, [3]float64{9, 9, 9}
			},
			traces: []*catalog.Result{fileioResult(nil, writerRows...), biolatencyResult(
				[][]string{{"vdb", "write", "5900", "5300000000", "495", "1000", "0"}}, writerBio,
				[]string{"61", "kworker/u8:1", "vdb", "write", "100", "57000000", "300"})},
			want: &want{"warning", "Heavy synchronous writes to vdb by ingest-writer (pid 4457): 1.2 GiB/s, 1.6 ms per write",
				[]string{"ingest-writer writes synchronously to vdb, with O_DSYNC files", "2.0 of them inside write() on average", "At 1.2 GiB/s (99% of the bytes written to vdb) it is what keeps vdb busy"},
				[][]string{
					{"fileio: ingest-writer (pid 4457) spent 8.0 s in 5000 write calls during the 4.0 s trace (2.0 threads waiting on average), 1.6 ms per write, 4.9 GiB written to /var/lib/ingest/data.0, /var/lib/ingest/data.1"},
					{"biolatency: ingest-writer (pid 4457) submitted 5800 write requests (4.9 GiB) to vdb itself, 490 µs each at the device"},
					{"ingest-writer (pid 4457) wrote 1.2 GiB/s to storage in 1250 write calls/s"},
					{"holds open /var/lib/ingest/data.0 (O_DSYNC), /var/lib/ingest/data.1 (O_DSYNC)"},
					{"seen in uninterruptible sleep (D state)"},
					{"I/O pressure: some task waited for I/O 9% of the last 10 s"},
					{"2 tasks in uninterruptible sleep (procs_blocked)"},
				}, nil, "CPU saturated: 10 runnable tasks for 2 CPUs"},
		},
		{
			name:  "a reader named by the issue waits while a synchronous writer fills the disk's queue",
			issue: "queries of our database dbreader have become slow",
			facts: func(f *sysinfo.Facts) {
				w := writerFact
				w.Comm = "backup-job"
				f.TopIO = []sysinfo.Process{w, readerFact}
			},
			traces: []*catalog.Result{
				fileioResult(nil, renamed(writerRows[0], "backup-job"), renamed(writerRows[1], "backup-job"), readerRow),
				withRead(biolatencyResult([][]string{{"vdb", "write", "5900", "5300000000", "495", "1000", "0"}, {"vdb", "read", "13500", "55296000", "158", "2100", "0"}},
					renamed(writerBio, "backup-job"), readerBio), 48, 2100, 13500),
			},
			want: &want{"warning", "I/O contention on vdb: dbreader's reads queue behind backup-job's synchronous writes (1.2 GiB/s)",
				[]string{"dbreader waits on reads from vdb (dbreader spends 99.8% of its time in read(), 266 µs per read)", "backup-job keeps the same disk busy with synchronous writes at 1.2 GiB/s",
					"The read latency shows the queueing: reads on vdb: median 48 µs, p99 2.1 ms over 13500 requests."},
				[][]string{
					{"fileio: dbreader (pid 4600) spent 4.0 s in 15000 read calls during the 4.0 s trace (99.8% of its time), 266 µs per read"},
					{"biolatency: dbreader (pid 4600)'s 13500 read requests (52.7 MiB) to vdb took 158 µs each at the device"},
					{"dbreader (pid 4600) holds open /var/lib/db/table.db (O_DIRECT)"},
					{"biolatency: reads on vdb: median 48 µs, p99 2.1 ms over 13500 requests (p99 44× the median: reads queue behind other requests)"},
					{"the issue names dbreader"},
					{"fileio: backup-job (pid 4457) spent 8.0 s in 5000 write calls"},
				}, []string{"Heavy synchronous writes to vdb by backup-job (pid 4457): 1.2 GiB/s, 1.6 ms per write"}, ""},
		},
		{
			name:  "contention without a latency tail says what it sees, no more",
			issue: "dbreader is slow",
			facts: func(f *sysinfo.Facts) { f.TopIO = []sysinfo.Process{writerFact, readerFact} },
			traces: []*catalog.Result{fileioResult(nil, writerRows[0], readerRow),
				withRead(biolatencyResult(nil, writerBio, readerBio), 48, 300, 13500)},
			want: &want{"warning", "I/O contention on vdb: dbreader waits on reads while ingest-writer's synchronous writes keep it busy (625.0 MiB/s)",
				[]string{"every read shares the device's queue and bandwidth with those writes"}, nil, nil, ""},
		},
		{
			name:  "a saturated disk's readings join the finding that says who saturates it",
			issue: "writes are slow",
			facts: func(f *sysinfo.Facts) {
				f.Disks[1].UtilPercent, f.Disks[1].AwaitMS = 99, 60
				f.TopIO = []sysinfo.Process{writerFact}
			},
			traces: []*catalog.Result{fileioResult(nil, writerRows...), biolatencyResult(nil,
				// More requests, less device time: not the heaviest.
				[]string{"700", "indexer", "vdb", "read", "9000", "36864000", "80"}, writerBio)},
			want: &want{"warning", "Heavy synchronous writes to vdb by ingest-writer (pid 4457): 1.2 GiB/s, 1.6 ms per write",
				[]string{"Disk vdb saturated: 99% busy, await 60 ms."},
				[][]string{{"vdb busy 99% of the time, await 60.0 ms"}, {"biolatency: ingest-writer (pid 4457) submitted 5800 write requests (4.9 GiB) to vdb, 2842 ms of device time"}},
				[]string{"Disk vdb saturated: 99% busy, await 60 ms"}, ""},
		},
		{
			name:  "a synchronous writer that waits a fifth of the time is not I/O-bound",
			issue: "writes are slow",
			facts: func(f *sysinfo.Facts) { f.TopIO = []sysinfo.Process{writerFact} },
			traces: []*catalog.Result{fileioResult(nil,
				[]string{"4457", "ingest-writer", "file", "/var/lib/ingest/data.0", "0", "0", "500", "524288000", "0", "-", "1600000"}), biolatencyResult(nil, writerBio)},
		},
		{
			name:  "a busy buffered writer on a loaded host is not synchronous",
			issue: "writes are slow",
			facts: func(f *sysinfo.Facts) {
				f.TopIO = []sysinfo.Process{{PID: 4457, Comm: "ingest-writer", State: "R", WriteBytesPerSec: float64(gib)}}
			},
			traces: []*catalog.Result{fileioResult(nil, writerRows...), biolatencyResult(nil, []string{"61", "kworker/u8:1", "vdb", "write", "5800", "5242880000", "490"})},
		},
		{
			name:  "a buffered writer throttled in D state waits on its writes, and is not called synchronous",
			issue: "writes are slow",
			facts: func(f *sysinfo.Facts) {
				f.TopIO = []sysinfo.Process{{PID: 4457, Comm: "ingest-writer", State: "D", WriteBytesPerSec: 300 * float64(mib)}}
			},
			traces: []*catalog.Result{fileioResult(nil, writerRows...), biolatencyResult(nil, []string{"61", "kworker/u8:1", "vdb", "write", "5800", "5242880000", "490"})},
			want: &want{"warning", "ingest-writer (pid 4457) waits on its writes to vdb: 1.2 GiB/s, 1.6 ms per write",
				[]string{"throttled until the disk catches up"}, [][]string{{"seen in uninterruptible sleep (D state)"}}, nil, ""},
		},
		{
			name:  "O_DIRECT on a file it reads does not make its buffered writes synchronous",
			issue: "writes are slow",
			facts: func(f *sysinfo.Facts) {
				f.TopIO = []sysinfo.Process{{PID: 4457, Comm: "ingest-writer", State: "R", WriteBytesPerSec: float64(gib), SyncFiles: []string{"/var/lib/ingest/index (O_DIRECT)"}}}
			},
			traces: []*catalog.Result{fileioResult(nil, writerRows...)},
		},
		{
			name:  "blocking reads of sockets, pipes, /proc and tmpfs are not disk I/O",
			issue: "everything is slow",
			facts: func(f *sysinfo.Facts) {
				f.TopIO = []sysinfo.Process{writerFact}
				f.Filesystems = append(f.Filesystems, sysinfo.Filesystem{Mount: "/dev/shm", Device: "tmpfs", Type: "tmpfs", SizeBytes: gib})
			},
			cmds: []safeexec.Result{cmd(cmdDstate, " 900 D    io_schedule                      rsyslogd\n")},
			traces: []*catalog.Result{fileioResult(nil,
				writerRows[0],
				[]string{"900", "rsyslogd", "file", "/proc/kmsg", "3", "300", "0", "0", "0", "1333000000", "-"},
				[]string{"901", "sshd", "socket", "socket:[1234]", "40", "4000", "0", "0", "0", "100000000", "-"},
				[]string{"902", "cat", "pipe", "pipe:[77]", "2", "20", "0", "0", "0", "2000000000", "-"},
				[]string{"903", "shmreader", "file", "/dev/shm/ring", "4000", "16384000", "0", "0", "0", "1000000", "-"},
			), biolatencyResult(nil, writerBio)},
			want: &want{"warning", "Heavy synchronous writes to vdb by ingest-writer (pid 4457): 625.0 MiB/s, 1.6 ms per write", nil, nil,
				[]string{"I/O contention on vdb"}, ""},
		},
		{
			name:   "a reader waiting on the disk with no writer to blame makes no contention",
			issue:  "dbreader is slow",
			facts:  func(f *sysinfo.Facts) { f.TopIO = []sysinfo.Process{readerFact} },
			traces: []*catalog.Result{fileioResult(nil, readerRow), withRead(biolatencyResult(nil, readerBio), 48, 2100, 13500)},
		},
		{
			name:   "fast reads from the page cache are not waiting on the disk",
			issue:  "dbreader is slow",
			facts:  func(f *sysinfo.Facts) { f.TopIO = []sysinfo.Process{writerFact, readerFact} },
			traces: []*catalog.Result{fileioResult(nil, writerRows[0], []string{"4600", "dbreader", "file", "/var/lib/db/table.db", "400000", "1638400000", "0", "0", "0", "9000", "-"}), biolatencyResult(nil, writerBio)},
			want: &want{"warning", "Heavy synchronous writes to vdb by ingest-writer (pid 4457): 625.0 MiB/s, 1.6 ms per write", nil, nil,
				[]string{"I/O contention on vdb"}, ""},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := healthyFacts()
			c.facts(f)
			r := investigate(t, e, c.issue, f, c.cmds, c.traces...)
			titles := findingTitles(r)
			if c.want == nil {
				for _, ti := range titles {
					require.False(t, strings.HasPrefix(ti, "Heavy synchronous") || strings.HasPrefix(ti, "I/O contention"), "no I/O finding expected: %q", titles)
				}
				return
			}
			require.NotEmpty(t, r.Findings)
			top := r.Findings[0]
			require.Equal(t, c.want.title, top.Title, "findings: %q", titles)
			require.Equal(t, c.want.severity, top.Severity)
			require.True(t, strings.HasPrefix(r.RootCause, top.Title+". "), r.RootCause)
			for _, s := range c.want.rootCause {
				require.Contains(t, top.RootCause, s)
			}
			for _, parts := range c.want.evidence {
				require.True(t, hasLine(top.Evidence, parts...), "evidence %q missing from:\n%s", parts, strings.Join(top.Evidence, "\n"))
			}
			for _, a := range c.want.absent {
				require.NotContains(t, titles, a)
			}
			if c.want.second != "" {
				require.True(t, strings.HasPrefix(titles[1], c.want.second), "findings: %q", titles)
			}
		})
	}
}

// TestDiskErrorsOfAGoneDevice: kernel I/O errors about a block device
// that is no longer attached are its history, listed but not the answer;
// the same errors on a device still there are.
func TestDiskErrorsOfAGoneDevice(t *testing.T) {
	e := testEngine(t)
	f := healthyFacts()
	f.KernelLog = []sysinfo.LogLine{
		{Age: 4 * time.Minute, Priority: 3, Text: "Buffer I/O error on device loop0, logical block 32769"},
		{Age: 4 * time.Minute, Priority: 4, Text: "EXT4-fs warning (device loop0): ext4_end_bio:368: I/O error 3 writing to inode 12 starting block 34049)"},
	}
	f.BlockDevices = []sysinfo.BlockDevice{{Name: "vda", SizeBytes: 40 * gib}, {Name: "vdb", SizeBytes: 100 * gib}}
	r := investigate(t, e, "the disk is slow", f, nil)
	require.Equal(t, "info", r.Findings[0].Severity)
	require.Equal(t, "I/O errors in the kernel log on loop0, which is no longer attached (2 messages)", r.Findings[0].Title)
	require.Contains(t, r.RootCause, "No anomaly found")

	f.BlockDevices = append(f.BlockDevices, sysinfo.BlockDevice{Name: "loop0", SizeBytes: 64 * mib, BackingFile: "/srv/disk.img"})
	r = investigate(t, e, "the disk is slow", f, nil)
	require.Equal(t, "critical", r.Findings[0].Severity)
	require.Equal(t, "I/O errors on loop0 in the kernel log (2 messages)", r.Findings[0].Title)

	// Errors seen by biolatency during the trace are current, whatever
	// sysfs said when the facts were read.
	f.BlockDevices = f.BlockDevices[:2]
	r = investigate(t, e, "the disk is slow", f, nil, biolatencyResult([][]string{{"loop0", "write", "10", "40960", "90", "200", "2"}}))
	require.Equal(t, "critical", r.Findings[0].Severity)
	require.Equal(t, "I/O errors on loop0 in the kernel log (2 messages)", r.Findings[0].Title)
}

// TestRankingPrefersTheSpecificPlaybook: of two warnings the issue is
// about, the one a more specific playbook is about comes first, even
// with less support ("writes are slow" is about the disk more than
// "slow" is about the CPU).
func TestRankingPrefersTheSpecificPlaybook(t *testing.T) {
	mk := func(kind string, sources, hits int) *finding {
		f := &finding{kind: kind, subject: kind, sev: sevWarning, sources: map[string]bool{}, vars: map[string]string{}, boosted: true, boostHits: hits}
		for i := range sources {
			f.sources[string(rune('a'+i))] = true
		}
		return f
	}
	fs := &findings{list: []*finding{mk("cpu.saturation", 5, 4), mk("io.sync", 2, 30)}}
	var got []string
	for _, f := range fs.ranked() {
		got = append(got, f.kind)
	}
	require.Equal(t, []string{"io.sync", "cpu.saturation"}, got)

	e := testEngine(t)
	hits := map[string]int{}
	for _, m := range e.match("writing to disk has become very slow on this server") {
		hits[m.Name] = m.hits
	}
	require.Equal(t, map[string]int{"high-load": len("slow"), "slow-disk": len("writing to disk has become very slow")}, hits)
}
