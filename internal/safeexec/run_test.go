package safeexec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Plans are built by hand here so these tests exercise Run alone; RunLine
// has its own test once Validate exists.

func stage(argv ...string) Stage { return Stage{Argv: argv} }

func pipe(stages ...Stage) Pipeline { return Pipeline{Stages: stages} }

// item joins a pipeline to the next item with op.
func item(p Pipeline, op string) Item { return Item{Pipeline: p, Op: op} }

func planOf(line string, items ...Item) *Plan { return &Plan{Line: line, Items: items} }

func one(argv ...string) *Plan {
	return planOf(strings.Join(argv, " "), item(pipe(stage(argv...)), ""))
}

func testOptions() Options {
	o := DefaultOptions()
	o.Sandbox = false
	o.Timeout = 5 * time.Second
	return o
}

func TestRunPipeline(t *testing.T) {
	p := planOf(`printf 'b\na\n' | sort | head -n 1`,
		item(pipe(stage("printf", `b\na\n`), stage("sort"), stage("head", "-n", "1")), ""))
	res := Run(context.Background(), p, testOptions())
	require.Empty(t, res.Error)
	require.Equal(t, "a\n", res.Stdout)
	require.Equal(t, 0, res.ExitCode)
	require.Equal(t, p.Line, res.Command)
	require.Equal(t, [][]string{{"printf", `b\na\n`}, {"sort"}, {"head", "-n", "1"}}, res.Stages)
	require.False(t, res.Truncated)
	require.False(t, res.TimedOut)
}

// A reader that stops early must not hang the pipeline: the writer gets
// EPIPE only if the parent closed its copies of the pipe ends.
func TestRunPipelineEarlyExit(t *testing.T) {
	p := planOf("seq 1 10000000 | head -n 1",
		item(pipe(stage("seq", "1", "10000000"), stage("head", "-n", "1")), ""))
	res := Run(context.Background(), p, testOptions())
	require.Equal(t, "1\n", res.Stdout)
	require.Equal(t, 0, res.ExitCode, "status is the last stage's, as without pipefail")
	require.False(t, res.TimedOut)
}

func TestRunStdinIsDevNull(t *testing.T) {
	res := Run(context.Background(), one("cat"), testOptions())
	require.Equal(t, 0, res.ExitCode)
	require.Empty(t, res.Stdout)
	require.False(t, res.TimedOut)
}

func TestRunLists(t *testing.T) {
	echo := func(s string) Pipeline { return pipe(stage("echo", s)) }
	tru, fls := pipe(stage("true")), pipe(stage("false"))
	for _, tc := range []struct {
		line  string
		items []Item
		out   string
		code  int
	}{
		{"true && echo a", []Item{item(tru, "&&"), item(echo("a"), "")}, "a\n", 0},
		{"false && echo a", []Item{item(fls, "&&"), item(echo("a"), "")}, "", 1},
		{"false || echo a", []Item{item(fls, "||"), item(echo("a"), "")}, "a\n", 0},
		{"true || echo a", []Item{item(tru, "||"), item(echo("a"), "")}, "", 0},
		{"false ; echo a", []Item{item(fls, ";"), item(echo("a"), "")}, "a\n", 0},
		{"echo a ; false", []Item{item(echo("a"), ";"), item(fls, "")}, "a\n", 1},
		{"false && echo a || echo b", []Item{item(fls, "&&"), item(echo("a"), "||"), item(echo("b"), "")}, "b\n", 0},
		{"true || echo a && echo b", []Item{item(tru, "||"), item(echo("a"), "&&"), item(echo("b"), "")}, "b\n", 0},
		{"true && false && echo a ; echo b", []Item{item(tru, "&&"), item(fls, "&&"), item(echo("a"), ";"), item(echo("b"), "")}, "b\n", 0},
		{"echo a && echo b", []Item{item(echo("a"), "&&"), item(echo("b"), "")}, "a\nb\n", 0},
	} {
		t.Run(tc.line, func(t *testing.T) {
			res := Run(context.Background(), planOf(tc.line, tc.items...), testOptions())
			require.Empty(t, res.Error)
			require.Equal(t, tc.out, res.Stdout)
			require.Equal(t, tc.code, res.ExitCode)
		})
	}
}

func TestRunRedirects(t *testing.T) {
	const missing = "/nonexistent-safeexec-test"
	ls := stage("ls", missing)
	null := func(fd int) Redirect { return Redirect{Fd: fd, Target: "/dev/null"} }
	dup := Redirect{Fd: 2, Target: "&1"}
	for _, tc := range []struct {
		name           string
		p              Pipeline
		stdout, stderr string // "*" means: mentions the missing path
		code           int
	}{
		{"none", Pipeline{Stages: []Stage{ls}}, "", "*", 2},
		{"2>/dev/null", Pipeline{Stages: []Stage{ls}, Redirects: [][]Redirect{{null(2)}}}, "", "", 2},
		{"2>&1", Pipeline{Stages: []Stage{ls}, Redirects: [][]Redirect{{dup}}}, "*", "", 2},
		// Order matters as in a shell: stderr goes where stdout was.
		{"2>&1 >/dev/null", Pipeline{Stages: []Stage{ls}, Redirects: [][]Redirect{{dup, null(1)}}}, "*", "", 2},
		{">/dev/null 2>&1", Pipeline{Stages: []Stage{ls}, Redirects: [][]Redirect{{null(1), dup}}}, "", "", 2},
		{"echo >/dev/null", Pipeline{Stages: []Stage{stage("echo", "hi")}, Redirects: [][]Redirect{{null(1)}}}, "", "", 0},
		// Each stage has its own redirects: stage 0's stderr joins the pipe.
		{"ls 2>&1 | wc -l", Pipeline{Stages: []Stage{ls, stage("wc", "-l")}, Redirects: [][]Redirect{{dup}, nil}}, "1\n", "", 0},
		{"ls | wc -l", Pipeline{Stages: []Stage{ls, stage("wc", "-l")}}, "0\n", "*", 0},
		{"cat </dev/null", Pipeline{Stages: []Stage{stage("cat")}, Redirects: [][]Redirect{{null(0)}}}, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Run(context.Background(), planOf(tc.name, item(tc.p, "")), testOptions())
			require.Empty(t, res.Error)
			check := func(what, want, got string) {
				if want == "*" {
					require.Contains(t, got, missing, what)
				} else {
					require.Equal(t, want, got, what)
				}
			}
			check("stdout", tc.stdout, res.Stdout)
			check("stderr", tc.stderr, res.Stderr)
			require.Equal(t, tc.code, res.ExitCode)
		})
	}
}

func TestRunRedirectRefused(t *testing.T) {
	p := Pipeline{Stages: []Stage{stage("echo", "x")}, Redirects: [][]Redirect{{{Fd: 1, Target: "/tmp/x"}}}}
	res := Run(context.Background(), planOf("echo x >/tmp/x", item(p, "")), testOptions())
	require.Contains(t, res.Error, "not allowed")
	require.NotEqual(t, 0, res.ExitCode)
	require.Empty(t, res.Stdout)
	_, err := os.Stat("/tmp/x-never-created")
	require.True(t, os.IsNotExist(err))
}

func TestRunStderrSeparate(t *testing.T) {
	res := Run(context.Background(), one("sh", "-c", "echo out; echo err >&2; exit 3"), testOptions())
	require.Equal(t, "out\n", res.Stdout)
	require.Equal(t, "err\n", res.Stderr)
	require.Equal(t, 3, res.ExitCode)
	require.Empty(t, res.Error)
}

func TestRunSignalExitCode(t *testing.T) {
	res := Run(context.Background(), one("sh", "-c", "kill -TERM $$"), testOptions())
	require.Equal(t, 128+int(syscall.SIGTERM), res.ExitCode)
}

func TestRunOutputCap(t *testing.T) {
	o := testOptions()
	o.OutputCap = 64 << 10
	// seq 1 200000 prints 1288895 bytes.
	const total = 1288895
	res := Run(context.Background(), one("seq", "1", "200000"), o)
	require.Equal(t, 0, res.ExitCode)
	require.True(t, res.Truncated)
	require.True(t, strings.HasPrefix(res.Stdout, "1\n2\n3\n"))
	require.True(t, strings.HasSuffix(res.Stdout, "199999\n200000\n"))
	marker := fmt.Sprintf("\n[... %d bytes cut ...]\n", total-o.OutputCap)
	require.Contains(t, res.Stdout, marker)
	require.Equal(t, o.OutputCap+len(marker), len(res.Stdout))
	require.Empty(t, res.Stderr)

	// Under the cap nothing is cut or marked.
	res = Run(context.Background(), one("seq", "1", "100"), o)
	require.False(t, res.Truncated)
	require.NotContains(t, res.Stdout, "cut")
}

func TestCapBuffer(t *testing.T) {
	for _, tc := range []struct {
		limit  int
		writes []string
		want   string
		trunc  bool
	}{
		{10, []string{"hello"}, "hello", false},
		{10, []string{"0123456789"}, "0123456789", false},
		{10, []string{"0123456789ab"}, "01234\n[... 2 bytes cut ...]\n789ab", true},
		{10, []string{"01", "23", "45", "67", "89", "ab", "cd"}, "01234\n[... 4 bytes cut ...]\n9abcd", true},
		{4, []string{"a", "bcdefghijklmnop", "q"}, "ab\n[... 13 bytes cut ...]\npq", true},
		{1, []string{"abc"}, "a\n[... 2 bytes cut ...]\n", true},
		// "é" is 2 bytes, "€" 3: halves never split a character.
		{6, []string{"aaéb€x"}, "aa\n[... 6 bytes cut ...]\nx", true},
		{6, []string{"€€€€"}, "€\n[... 6 bytes cut ...]\n€", true},
	} {
		b := newCapBuffer(tc.limit)
		for _, w := range tc.writes {
			n, err := b.Write([]byte(w))
			require.NoError(t, err)
			require.Equal(t, len(w), n)
		}
		require.Equal(t, tc.want, b.String(), "%d %q", tc.limit, tc.writes)
		require.Equal(t, tc.trunc, b.Truncated())
	}
}

// groupMembers lists the live (non-zombie) processes whose process group is
// pgid.
func groupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var live []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			live = append(live, pid)
		}
	}
	return live
}

func TestRunTimeoutKillsProcessGroup(t *testing.T) {
	checkTimeoutKillsGroup(t, testOptions())
}

func checkTimeoutKillsGroup(t *testing.T, o Options) {
	t.Helper()
	o.Timeout = 300 * time.Millisecond
	// The shell prints its pid (the group leader) and its background
	// child's, then waits on a second child: three processes to kill.
	p := planOf("fork and sleep",
		item(pipe(stage("sh", "-c", "sleep 300 & echo $!; echo $$; sleep 300; echo never")), ""))
	start := time.Now()
	res := Run(context.Background(), p, o)
	// Far below the 300 s the command would take, far above any start-up
	// delay of a loaded machine.
	require.Less(t, time.Since(start), 60*time.Second)
	require.True(t, res.TimedOut)
	require.Equal(t, 128+int(syscall.SIGKILL), res.ExitCode)
	require.Contains(t, res.Error, "timed out")
	require.GreaterOrEqual(t, res.DurationMS, int64(300))

	lines := strings.Fields(res.Stdout)
	require.Len(t, lines, 2, "output written before the deadline is kept: %q", res.Stdout)
	bg, err := strconv.Atoi(lines[0])
	require.NoError(t, err)
	leader, err := strconv.Atoi(lines[1])
	require.NoError(t, err)
	// Run returns once the pipes are closed, i.e. once every holder exited;
	// Eventually only covers reaping lag.
	require.Eventually(t, func() bool { return len(groupMembers(t, leader)) == 0 },
		10*time.Second, 10*time.Millisecond, "group %d still has %v", leader, groupMembers(t, leader))
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", bg))
		return err != nil || strings.Contains(string(b), ") Z ")
	}, 10*time.Second, 10*time.Millisecond, "background child %d survived", bg)
}

func TestRunTimeoutPipeline(t *testing.T) {
	o := testOptions()
	o.Timeout = 200 * time.Millisecond
	p := planOf("sleep 300 | sleep 300 ; echo after",
		item(pipe(stage("sleep", "300"), stage("sleep", "300")), ";"),
		item(pipe(stage("echo", "after")), ""))
	start := time.Now()
	res := Run(context.Background(), p, o)
	require.Less(t, time.Since(start), 60*time.Second, "the 300 s sleeps were waited out")
	require.True(t, res.TimedOut)
	require.Empty(t, res.Stdout, "nothing runs after the deadline")
}

func TestRunCleanEnv(t *testing.T) {
	t.Setenv("NANNYAGENT_TEST_SECRET", "hunter2")
	t.Setenv("LD_PRELOAD", "/nonexistent.so")
	res := Run(context.Background(), one("env"), testOptions())
	require.Equal(t, 0, res.ExitCode)
	got := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	sort.Strings(got)
	want := []string{"LANG=C", "LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	require.Equal(t, want, got)
}

func TestRunDir(t *testing.T) {
	o := testOptions()
	o.Dir = t.TempDir()
	res := Run(context.Background(), one("pwd"), o)
	require.Equal(t, o.Dir+"\n", res.Stdout)
}

func TestRunMissingProgram(t *testing.T) {
	res := Run(context.Background(), one("no-such-program-safeexec"), testOptions())
	require.Equal(t, ExitNotFound, res.ExitCode)
	require.Contains(t, res.Error, `"no-such-program-safeexec" not found`)

	// As in a shell, the list goes on with status 127.
	p := planOf("no-such-program-safeexec || echo fallback",
		item(pipe(stage("no-such-program-safeexec")), "||"), item(pipe(stage("echo", "fallback")), ""))
	res = Run(context.Background(), p, testOptions())
	require.Equal(t, "fallback\n", res.Stdout)
	require.Equal(t, 0, res.ExitCode)
	require.Contains(t, res.Error, "not found")

	// A missing stage stops its whole pipeline before anything starts.
	p = planOf("echo x | no-such-program-safeexec",
		item(pipe(stage("echo", "x"), stage("no-such-program-safeexec")), ""))
	res = Run(context.Background(), p, testOptions())
	require.Equal(t, ExitNotFound, res.ExitCode)
	require.Empty(t, res.Stdout)

	// Only bare names, resolved against the fixed PATH.
	for _, name := range []string{"/bin/echo", "./echo", "../bin/echo", ""} {
		res = Run(context.Background(), one(name, "x"), testOptions())
		require.Empty(t, res.Stdout, name)
		require.NotEqual(t, 0, res.ExitCode, name)
		require.Contains(t, res.Error, "bare program name", name)
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := Run(ctx, one("echo", "x"), testOptions())
	require.Empty(t, res.Stdout)
	require.False(t, res.TimedOut)
	require.Contains(t, res.Error, "cancelled")
}

func TestRunSandboxed(t *testing.T) {
	if _, err := SandboxCommand(context.Background(), []string{"/bin/true"}); err != nil && strings.Contains(err.Error(), "not implemented") {
		t.Skip("SandboxCommand not implemented yet")
	}
	o := testOptions()
	o.Sandbox = true
	p := planOf("printf 'b\\na\\n' | sort | head -n 1",
		item(pipe(stage("printf", `b\na\n`), stage("sort"), stage("head", "-n", "1")), "&&"),
		item(pipe(stage("env")), ""))
	res := Run(context.Background(), p, o)
	require.Empty(t, res.Error)
	require.Equal(t, 0, res.ExitCode)
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	require.Equal(t, "a", lines[0])
	env := lines[1:]
	sort.Strings(env)
	want := []string{"LANG=C", "LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if _, err := landlockABI(); err == nil && os.Geteuid() == 0 {
		want = append(want, "TMPDIR="+scratchDir) // the sandbox's private scratch
	}
	require.Equal(t, want, env, "the sandbox must not pass its markers on to the tool")

	// The sandbox really is in the way: a write that the unsandboxed run
	// makes is refused, and the host is unchanged.
	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	res = Run(context.Background(), one("touch", canary), testOptions())
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	require.NoError(t, os.Remove(canary))
	res = Run(context.Background(), one("touch", canary), o)
	require.NotEqual(t, 0, res.ExitCode)
	require.NotEmpty(t, res.Stderr)
	_, err := os.Stat(canary)
	require.True(t, os.IsNotExist(err), "sandboxed touch created %s", canary)

	checkTimeoutKillsGroup(t, o)
}

func TestRunLineRefused(t *testing.T) {
	if _, err := Validate("uname"); err != nil && strings.Contains(err.Error(), "not implemented") {
		t.Skip("Validate not implemented yet")
	}
	res := RunLine(context.Background(), "rm -rf /tmp/safeexec-never", testOptions())
	require.True(t, res.Refused)
	require.Equal(t, ExitRefused, res.ExitCode)
	require.NotEmpty(t, res.Reason)
	require.Empty(t, res.Stdout)
	require.Equal(t, "rm -rf /tmp/safeexec-never", res.Command)

	res = RunLine(context.Background(), "uname", testOptions())
	require.False(t, res.Refused, res.Reason)
	require.Equal(t, "Linux\n", res.Stdout)

	// As the agent runs lines: sandboxed, globs expanded in o.Dir.
	o := DefaultOptions()
	o.Dir = t.TempDir()
	for _, f := range []string{"b.log", "a.log", "c.txt"} {
		require.NoError(t, os.WriteFile(filepath.Join(o.Dir, f), []byte(f+"\n"), 0o644))
	}
	res = RunLine(context.Background(), "cat *.log | sort -r 2>/dev/null && uname", o)
	require.False(t, res.Refused, res.Reason)
	require.Empty(t, res.Error)
	require.Equal(t, "b.log\na.log\nLinux\n", res.Stdout)
	require.Equal(t, [][]string{{"cat", "a.log", "b.log"}, {"sort", "-r"}, {"uname"}}, res.Stages)
}
