package offline

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nannyagent/nannyagent/internal/brain"
	"github.com/nannyagent/nannyagent/internal/safeexec"
	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

func TestEmbeddedPlaybooksLoad(t *testing.T) {
	pbs, warns := loadPlaybooks("")
	require.Empty(t, warns)
	var names []string
	for _, pb := range pbs {
		names = append(names, pb.Name)
		require.NotEmpty(t, pb.Description, pb.Name)
		require.NotEmpty(t, pb.Boost, pb.Name)
		require.False(t, pb.Match.Always, "a built-in playbook runs for the issues it matches only")
		require.Equal(t, "playbooks/"+pb.Name+".yaml", pb.Source, "file named after the playbook")
	}
	require.Equal(t, []string{"disk-full", "dns", "hardware-io", "high-load", "out-of-memory", "service-crash", "slow-disk", "web-permission"}, names)
}

func TestEmbeddedPlaybooksMatchTheirIssues(t *testing.T) {
	e := testEngine(t)
	cases := []struct {
		issue string
		first string
	}{
		{"On /var I cannot create files but df shows 30% free", "disk-full"},
		{"touch: cannot touch 'x': No space left on device", "disk-full"},
		{"our mysql queries got really slow since this morning", "slow-disk"},
		{"reads from the data disk are slow", "slow-disk"},
		{"the server is slow and unresponsive, load average is high", "high-load"},
		{"my java process gets killed every night, out of memory?", "out-of-memory"},
		{"apt update: Temporary failure in name resolution", "dns"},
		{"nginx returns 403 Forbidden, permission denied in error.log", "web-permission"},
		{"the service keeps crashing right after it starts", "service-crash"},
		{"app fails to start: address already in use", "service-crash"},
		{"dmesg shows I/O errors and the disk went read-only", "hardware-io"},
	}
	for _, c := range cases {
		m := e.match(c.issue)
		require.NotEmpty(t, m, c.issue)
		require.Equal(t, c.first, m[0].Name, c.issue)
	}
	for _, issue := range []string{"the room is warm", "the server is acting weird", "something is off", "broom"} {
		require.Empty(t, e.match(issue), issue)
	}
}

func TestKeywordsMatchWholeWords(t *testing.T) {
	re, err := keywordRE("oom")
	require.NoError(t, err)
	require.True(t, re.MatchString("OOM killer"))
	require.True(t, re.MatchString("an oom."))
	require.False(t, re.MatchString("room"))
	re, err = keywordRE("can't create")
	require.NoError(t, err)
	require.True(t, re.MatchString("I can’t   create files"))
	re, err = keywordRE("/var/log")
	require.NoError(t, err)
	require.True(t, re.MatchString("in /var/log/x"))
	_, err = keywordRE("  ")
	require.Error(t, err)
}

// TestBrokenPlaybookIsAWarningNamingFileAndLine: a broken file in the
// directory is skipped, the good ones and the built-in ones still load.
func TestBrokenPlaybookIsAWarningNamingFileAndLine(t *testing.T) {
	dir := t.TempDir()
	good := `name: app-errors
description: Our app logs errors
match:
  keywords: [app]
steps:
  commands: ["tail -n 50 /var/log/app.log"]
rules:
  - kind: app.errors
    when:
      - output: 'ERROR'
        command: tail -n 50 /var/log/app.log
    severity: warning
    title: "The app logs {{count}} errors"
    root_cause: "The app says: {{line}}"
    fix: ["Read /var/log/app.log"]
`
	bad := "name: broken\nmatch:\n  keywords: [x]\ncolour: blue\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "10-app.yaml"), []byte(good), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "20-broken.yml"), []byte(bad), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README"), []byte("not a playbook"), 0o644))
	e := New(Options{PlaybookDir: dir})
	require.Equal(t, []string{"playbook skipped: " + filepath.Join(dir, "20-broken.yml") + ":4: field colour not found in type offline.Playbook"}, e.Warnings())
	require.Len(t, e.Playbooks(), 9)
	require.Equal(t, "app-errors", e.Playbooks()[8])

	// The good one works: its command runs, its rule fires.
	r := investigate(t, e, "the app misbehaves", healthyFacts(),
		[]safeexec.Result{cmd("tail -n 50 /var/log/app.log", "INFO ok\nERROR db down\nERROR db down again\n")})
	require.Equal(t, "The app logs 2 errors", r.Findings[0].Title)
	require.Equal(t, "The app says: ERROR db down", r.Findings[0].RootCause)
	require.True(t, hasLine(r.Findings[0].Evidence, "tail -n 50 /var/log/app.log: ERROR db down"))

	// The warning reaches the operator in the first reply too.
	first := next(t, e, &brain.Investigation{Issue: "x", Facts: healthyFacts()})
	require.Contains(t, first.Reasoning, "Warning: playbook skipped: "+filepath.Join(dir, "20-broken.yml")+":4:")
}

func TestPlaybookInDirReplacesABuiltIn(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dns.yaml"), []byte("name: dns\nmatch:\n  keywords: [dns]\nboost: [dns.failing]\n"), 0o644))
	e := New(Options{PlaybookDir: dir})
	require.Len(t, e.Playbooks(), 8)
	require.Len(t, e.Warnings(), 1)
	require.Contains(t, e.Warnings()[0], `"dns" replaces the one from playbooks/dns.yaml`)
	m := e.match("dns")
	require.Equal(t, filepath.Join(dir, "dns.yaml"), m[0].Source)
}

func TestMissingPlaybookDirIsFine(t *testing.T) {
	e := New(Options{PlaybookDir: filepath.Join(t.TempDir(), "nope")})
	require.Empty(t, e.Warnings())
	require.Len(t, e.Playbooks(), 8)
}

func TestParsePlaybookErrors(t *testing.T) {
	cases := []struct {
		name, yaml, err string
	}{
		{"empty", "", "p.yaml: empty file"},
		{"syntax", "name: x\nmatch: [\n", "p.yaml:2: did not find expected node content"},
		{"unknown field", "name: x\nmatch:\n  keywords: [a]\n  keyword: [b]\n", "p.yaml:4: field keyword not found in type offline.Match"},
		{"no name", "match:\n  keywords: [a]\n", "p.yaml:1: name is missing"},
		{"bad name", "name: Disk Full\nmatch:\n  keywords: [a]\n", `p.yaml:1: name "Disk Full": use lowercase letters, digits and '-'`},
		{"matches nothing", "name: x\ndescription: y\n", "p.yaml:1: match needs keywords, regex or always"},
		{"bad regex", "name: x\nmatch:\n  regex:\n    - 'ok'\n    - '(unclosed'\n", "p.yaml:5: regex \"(unclosed\": error parsing regexp"},
		{"unknown boost", "name: x\nmatch:\n  keywords: [a]\nboost: [fs.full]\n", `p.yaml:4: boost: unknown finding kind "fs.full"`},
		{"refused command", "name: x\nmatch:\n  keywords: [a]\nsteps:\n  commands:\n    - df -h\n    - rm -rf /tmp/x\n", `p.yaml:7: command "rm -rf /tmp/x": refused (allowlist)`},
		{"redirect to a file", "name: x\nmatch:\n  keywords: [a]\nsteps:\n  commands: ['df -h > /tmp/out']\n", `p.yaml:5: command "df -h > /tmp/out": refused`},
		{"trace to bpftrace", "name: x\nmatch:\n  keywords: [a]\nsteps:\n  traces:\n    - name: count\n      type: bpftrace\n      target: 'tracepoint:syscalls:sys_enter_openat { @[comm] = count(); }'\n", `p.yaml:6: trace "count": it maps to a bpftrace script, not to a catalog entry`},
		{"filter the entry lacks", "name: x\nmatch:\n  keywords: [a]\nsteps:\n  traces:\n    - name: runqlat\n      filters: {port: 80}\n", `p.yaml:6: trace "runqlat": runqlat does not support the port filter`},
		{"long trace", "name: x\nmatch:\n  keywords: [a]\nsteps:\n  traces:\n    - name: exit\n      duration: 60\n", "p.yaml:7: duration 60 s: want 0 (the default) to 15 s"},
		{"too many commands", "name: x\nmatch:\n  keywords: [a]\nsteps:\n  commands: [a, b, c, d, e, f, g, h, i]\n", "p.yaml:5: 9 commands, at most 8"},
		{"unknown follow-up kind", "name: x\nmatch:\n  keywords: [a]\nfollowups:\n  - when: disk.full\n    commands: [df -h]\n", `p.yaml:5: when: unknown kind "disk.full"`},
		{"placeholder the kind lacks", "name: x\nmatch:\n  keywords: [a]\nfollowups:\n  - when: fs.inodes\n    commands: ['ls {{comm}}']\n", "p.yaml:6: placeholder {{comm}} is not available here (available: device, hostname, mount)"},
		{"empty follow-up", "name: x\nmatch:\n  keywords: [a]\nfollowups:\n  - when: fs.inodes\n", "p.yaml:5: a follow-up needs commands or traces"},
		{"rule of a built-in kind", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: oom\n    when: [{log: x}]\n    severity: info\n    title: t\n    root_cause: r\n", `p.yaml:5: kind "oom" is a built-in finding kind`},
		{"rule without condition", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: my.thing\n    severity: info\n    title: t\n    root_cause: r\n", "p.yaml:5: rule needs at least one condition under when"},
		{"bad severity", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: my.thing\n    when: [{log: x}]\n    severity: high\n    title: t\n    root_cause: r\n", `p.yaml:7: severity "high": want critical, warning or info`},
		{"unknown metric", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: my.thing\n    when:\n      - metric: cpu.temp\n        above: 80\n    severity: info\n    title: t\n    root_cause: r\n", `p.yaml:7: unknown metric "cpu.temp"`},
		{"metric without bound", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: my.thing\n    when:\n      - metric: load.1\n    severity: info\n    title: t\n    root_cause: r\n", "p.yaml:7: a metric condition has exactly one of above, below"},
		{"two tests in one condition", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: my.thing\n    when:\n      - log: x\n        output: y\n    severity: info\n    title: t\n    root_cause: r\n", "p.yaml:7: a condition has exactly one of metric, log, output, finding"},
		{"template of an absent value", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: my.thing\n    when: [{metric: load.1, above: 4}]\n    severity: info\n    title: 'load {{load.5}}'\n    root_cause: r\n", "p.yaml:5: placeholder {{load.5}} is not available here (available: hostname, load.1)"},
		{"duplicate rule kind", "name: x\nmatch:\n  keywords: [a]\nrules:\n  - {kind: my.a, when: [{log: x}], severity: info, title: t, root_cause: r}\n  - {kind: my.a, when: [{log: y}], severity: info, title: t, root_cause: r}\n", `p.yaml:6: kind "my.a" is used by an earlier rule of this playbook`},
		{"two documents", "name: x\nmatch:\n  keywords: [a]\n---\nname: y\n", "p.yaml:4: a second YAML document: one playbook per file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePlaybook("p.yaml", []byte(c.yaml))
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), c.err), "got %q\nwant prefix %q", err.Error(), c.err)
		})
	}
}

func TestPlaybookRulesFire(t *testing.T) {
	e := testEngine(t)
	mdstat := "Personalities : [raid1]\nmd0 : active raid1 sdb1[1] sda1[0](F)\n      1047552 blocks super 1.2 [2/1] [_U]\n\nunused devices: <none>\n"
	r := investigate(t, e, "is the raid degraded?", healthyFacts(), []safeexec.Result{cmd("cat /proc/mdstat", mdstat)})
	top := r.Findings[0]
	require.Equal(t, "A software RAID array is degraded", top.Title)
	require.Equal(t, "critical", top.Severity)
	require.Contains(t, top.RootCause, "[2/1] [_U]")
	require.True(t, hasLine(top.Evidence, "cat /proc/mdstat: 1047552 blocks super 1.2 [2/1] [_U]"))

	// The same output with an issue no playbook rule applies to: the
	// rule does not run, the sweep finds nothing.
	r = investigate(t, e, "acting weird", healthyFacts(), []safeexec.Result{cmd("cat /proc/mdstat", mdstat)})
	require.Empty(t, r.Findings)

	// A metric and an output condition together.
	f := healthyFacts()
	f.Network.Resolvers = []sysinfo.Resolver{{Address: "127.0.0.53", Error: "timeout"}}
	r = investigate(t, e, "dns does not resolve", f, []safeexec.Result{cmd("cat /etc/resolv.conf", "# stub\nnameserver 127.0.0.53\noptions edns0\n")})
	require.Contains(t, findingTitles(r), "The local systemd-resolved stub does not answer")
	for _, x := range r.Findings {
		if x.Title == "The local systemd-resolved stub does not answer" {
			require.True(t, hasLine(x.Evidence, "dns.resolvers_failing = 1 (above 0)"))
			require.True(t, hasLine(x.Evidence, "cat /etc/resolv.conf: nameserver 127.0.0.53"))
		}
	}
}

func TestShellQuote(t *testing.T) {
	require.Equal(t, "/srv/www", shellQuote("/srv/www"))
	require.Equal(t, "'a b'", shellQuote("a b"))
	require.Equal(t, `'it'\''s'`, shellQuote("it's"))
	line, ok := fill("ls {{path}}; echo {{x}}", map[string]string{"path": "a;b"}, true)
	require.False(t, ok)
	require.Equal(t, "ls 'a;b'; echo ", line)
}

func FuzzParsePlaybook(f *testing.F) {
	entries, err := embedded.ReadDir("playbooks")
	require.NoError(f, err)
	for _, e := range entries {
		b, err := embedded.ReadFile("playbooks/" + e.Name())
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte("name: x\nmatch:\n  keywords: [a]\nrules:\n  - kind: k\n    when: [{metric: errno.EACCES, above: 0}]\n    severity: info\n    title: '{{errno.EACCES}}'\n    root_cause: r\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("name: &a x\nmatch: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pb, err := ParsePlaybook("f.yaml", data)
		if err != nil {
			require.True(t, strings.HasPrefix(err.Error(), "f.yaml"), err.Error())
			return
		}
		require.NotEmpty(t, pb.Name)
		for _, c := range pb.steps.commands {
			_, err := safeexec.Validate(c)
			require.NoError(t, err)
		}
	})
}
