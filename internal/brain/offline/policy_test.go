package offline

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/exit"
	"github.com/nannyagent/nannyagent/internal/catalog/resolver"
	"github.com/nannyagent/nannyagent/internal/catalog/runner"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// everything the engine can ask for: the sweep's steps on a host where
// every condition holds, every playbook's steps, and every follow-up
// (built-in and playbook) filled with sample values.
func everyStep(t *testing.T) ([]string, []resolver.Request) {
	t.Helper()
	e := testEngine(t)
	f := healthyFacts()
	f.Cgroups = []sysinfo.Cgroup{{Path: "/x", MemoryLimitBytes: 1}}
	v := newView(&brain.Investigation{Facts: f})
	var all []matched
	for _, pb := range e.playbooks {
		all = append(all, matched{pb, 1})
	}
	var cmds []string
	var traces []resolver.Request
	for _, s := range e.firstSteps(v, all).steps {
		if s.trace != nil {
			traces = append(traces, *s.trace)
		} else {
			cmds = append(cmds, s.command)
		}
	}
	var fus []compiledFollowup
	fus = append(fus, builtinFollowups...)
	for _, pb := range e.playbooks {
		fus = append(fus, pb.followups...)
	}
	for _, fu := range fus {
		p := newPlan()
		vars := map[string]string{}
		for k, x := range sampleVars {
			vars[k] = x
		}
		// A value needing quotes must come out as one safe word.
		vars["path"] = "/srv/my www/it's.html"
		p.addFollowup(fu, subject{kind: fu.when, vars: vars}, "test", DefaultTraceDuration)
		require.NotEmpty(t, p.steps, "follow-up of %s produced nothing", fu.when)
		for _, s := range p.steps {
			if s.trace != nil {
				traces = append(traces, *s.trace)
			} else {
				cmds = append(cmds, s.command)
			}
		}
	}
	return cmds, traces
}

// TestEveryCommandPassesThePolicy holds the engine to the command policy:
// when a rule of safeexec changes, this fails, not the product.
func TestEveryCommandPassesThePolicy(t *testing.T) {
	cmds, _ := everyStep(t)
	require.Greater(t, len(cmds), 15)
	for _, c := range cmds {
		_, err := safeexec.Validate(c)
		require.NoError(t, err, c)
	}
	require.Contains(t, cmds, "namei -l '/srv/my www/it'\\''s.html'")
}

// TestEveryTraceResolves: every trace the engine asks for maps to a
// catalog entry, with every filter honoured.
func TestEveryTraceResolves(t *testing.T) {
	_, traces := everyStep(t)
	r := runner.NewResolver()
	entries := map[string]bool{}
	for _, tr := range traces {
		res := r.Resolve(tr)
		require.Equal(t, resolver.KindEntry, res.Kind(), "%s: %s", traceLabel(tr), res.Refused)
		for _, n := range res.Notes {
			require.NotContains(t, n, "dropped", traceLabel(tr))
		}
		entries[res.Entry] = true
	}
	for _, want := range []string{"exit", "syscalls", "open", "biolatency", "runqlat", "tcpretrans", "oomkill", "fileio", "reclaim", "exec", "dns", "profile"} {
		require.True(t, entries[want], "no step uses %s", want)
	}
}

// TestTablesTheRulesReadExist reads the catalog entries' sources: every
// table title and column the rules read is one an entry builds, so
// renaming a table in an entry fails here.
func TestTablesTheRulesReadExist(t *testing.T) {
	read := []struct {
		entry, title string
		cols         []string
	}{
		{"runqlat", "processes by run-queue wait", []string{"pid", "comm", "total_us", "p99_us"}},
		{"reclaim", "processes stalled in reclaim", []string{"pid", "comm", "kind", "total_us"}},
		{"oomkill", "OOM kills by victim command", []string{"comm", "kills", "max_rss_kb"}},
		{"oomkill", "OOM kills", []string{"victim_comm", "memory_cgroup"}},
		{"open", "failed opens by path", []string{"path", "error", "count"}},
		{"open", "sample opens", []string{"pid", "uid", "comm", "result", "path"}},
		{"syscalls", "failures by syscall and errno", []string{"syscall", "error", "count"}},
		{"syscalls", "syscalls by process", []string{"comm", "syscall", "errors"}},
		{"biolatency", "I/O by disk and operation", []string{"disk", "op", "count", "avg_us", "p99_us", "errors"}},
		{"biolatency", "top processes by I/O (submitter)", []string{"pid", "comm", "disk", "op", "count", "bytes", "avg_us"}},
		{"fileio", "I/O by process and file", []string{"pid", "comm", "type", "file", "reads", "read_bytes", "writes", "write_bytes", "avg_read_ns", "avg_write_ns"}},
		{"fileio", "I/O by process", []string{"pid", "comm", "reads", "read_bytes", "writes", "write_bytes"}},
		{"exit", "process exits by command and status", []string{"comm", "status", "count", "mean_lifetime"}},
		{"exit", "abnormal exits", []string{"comm", "ppid"}},
		{"tcpretrans", "retransmits by flow", []string{"local", "remote", "state", "retransmits"}},
		{"tcpretrans", "retransmits by TCP state", []string{"retransmits"}},
		{"dns", "lookups by name", []string{"name", "function", "result", "count"}},
		{"exec", "sample execs", []string{"comm", "argv"}},
	}
	colsRE := regexp.MustCompile(`^,\s*Columns:\s*(?:\[\]string\{([^}]*)\}|(\w+))`)
	for _, r := range read {
		src, err := os.ReadFile(filepath.Join("..", "..", "catalog", r.entry, r.entry+".go"))
		require.NoError(t, err)
		s := string(src)
		key := `Title: "` + r.title + `"`
		i := strings.Index(s, key)
		require.GreaterOrEqual(t, i, 0, "%s has no table %q", r.entry, r.title)
		m := colsRE.FindStringSubmatch(s[i+len(key):])
		require.NotNil(t, m, "%s %q: columns not found", r.entry, r.title)
		list := m[1]
		if m[2] != "" {
			// Columns held in a variable: the entry defines it nearby.
			d := regexp.MustCompile(m[2] + `\s*:?=\s*\[\]string\{([^}]*)\}`).FindStringSubmatch(s)
			require.NotNil(t, d, "%s: %s", r.entry, m[2])
			list = d[1]
		}
		for _, c := range r.cols {
			require.Contains(t, list, `"`+c+`"`, "%s %q has no column %s", r.entry, r.title, c)
		}
	}
	for _, h := range []struct{ entry, title string }{{"runqlat", "run-queue latency"}, {"fileio", "read latency"}, {"fileio", "write latency"}, {"biolatency", "block I/O latency: "}} {
		src, err := os.ReadFile(filepath.Join("..", "..", "catalog", h.entry, h.entry+".go"))
		require.NoError(t, err)
		require.Contains(t, string(src), `Log2Histogram("`+h.title+`"`, h.entry)
	}
}

// TestStatusAndErrnoNames: the rules match the exit entry's status text
// and the catalog's errno names.
func TestStatusAndErrnoNames(t *testing.T) {
	require.Equal(t, "exit 1", exit.Status(1<<8).String())
	segv := exit.Status(11 | 0x80).String()
	require.True(t, hasPrefixAny(segv, crashSignals), segv)
	require.True(t, hasPrefixAny(exit.Status(13).String(), endSignals), "SIGPIPE ends, not crashes")
	for _, n := range []int64{98, 13, 1, 24, 28, 11} {
		require.NotContains(t, catalog.ErrnoName(n), "errno ")
	}
	require.Equal(t, "EADDRINUSE", catalog.ErrnoName(98))
	require.Equal(t, "EACCES", catalog.ErrnoName(13))
	require.Equal(t, "EMFILE", catalog.ErrnoName(24))
	require.Equal(t, "ENOSPC", catalog.ErrnoName(28))
	require.Equal(t, "EAGAIN", catalog.ErrnoName(11))
}

// TestRepliesStayWithinTheProtocolBounds: even with every playbook
// matching, a reply asks for no more than the protocol allows.
func TestRepliesStayWithinTheProtocolBounds(t *testing.T) {
	e := testEngine(t)
	issue := "disk full inode slow database mysql high load oom killed dns resolve 403 permission denied crash port in use hardware i/o error"
	require.Len(t, e.match(issue), len(e.playbooks))
	r := next(t, e, &brain.Investigation{Issue: issue, Facts: healthyFacts()})
	require.LessOrEqual(t, len(r.Commands), protocol.MaxCommands)
	require.LessOrEqual(t, len(r.Traces), protocol.MaxTraces)
}
