package signals

import (
	"bufio"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helperEnv turns the test binary into a signal target named by its value
// (targetComm): it acknowledges each SIGUSR1 on stdout, so the next one is
// never merged into a pending one.
const helperEnv = "NANNY_SIGNALS_HELPER"

// targetComm is the signal target's name, unique to this test process.
func targetComm(t *testing.T) string { return catalogtest.UniqueComm(t, "sig-tgt") }

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		signalTarget(name)
	}
	os.Exit(m.Run())
}

func signalTarget(name string) {
	if err := os.WriteFile("/proc/self/comm", []byte(name), 0); err != nil {
		os.Exit(101)
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	os.Stdout.WriteString("ready\n")
	for range usr1 {
		os.Stdout.WriteString("ack\n")
	}
}

type target struct {
	cmd   *exec.Cmd
	lines *bufio.Scanner
}

func startTarget(t *testing.T) *target {
	t.Helper()
	cmd := catalogtest.SelfCommand(t, helperEnv, targetComm(t))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	tg := &target{cmd: cmd, lines: bufio.NewScanner(out)}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	tg.expect(t, "ready")
	return tg
}

func (tg *target) expect(t *testing.T, line string) {
	t.Helper()
	require.True(t, tg.lines.Scan(), "target ended: %v", tg.lines.Err())
	require.Equal(t, line, tg.lines.Text())
}

func (tg *target) pid() int { return tg.cmd.Process.Pid }

// usr1 sends SIGUSR1 n times, each after the previous one was handled.
func (tg *target) usr1(t *testing.T, n int) {
	for i := 0; i < n; i++ {
		require.NoError(t, syscall.Kill(tg.pid(), syscall.SIGUSR1))
		tg.expect(t, "ack")
	}
}

func (tg *target) kill(t *testing.T) {
	require.NoError(t, syscall.Kill(tg.pid(), syscall.SIGKILL))
	err := tg.cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
}

// The C struct: a layout change must show here, without root.
func TestLayout(t *testing.T) {
	require.Equal(t, uintptr(52), unsafe.Sizeof(signalsSigKey{}))
}

func TestSignalsCountsExactly(t *testing.T) {
	k := catalogtest.Kernel(t)
	const n = 25
	var child int
	me := os.Getpid()
	// The sender filter keeps the rows of other processes on the machine
	// from pushing these out of the top-N table.
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(me)}, func() {
		tg := startTarget(t)
		child = tg.pid()
		tg.usr1(t, n)
		tg.kill(t)
	})
	require.Zero(t, res.Lost)
	pairs := res.Tables[0]
	assert.Equal(t, uint64(n), count(t, pairs, me, child, "SIGUSR1", "kill", "delivered"))
	assert.Equal(t, uint64(1), count(t, pairs, me, child, "SIGKILL", "kill", "delivered"))
	var toChild int
	for _, r := range pairs.Rows {
		assert.Equal(t, catalog.U(me), r[0], "sender filter")
		if r[2] == catalog.U(child) {
			toChild++
			assert.Equal(t, targetComm(t), r[3])
		}
	}
	assert.Equal(t, 2, toChild, "rows: %v", pairs.Rows)
	assert.GreaterOrEqual(t, res.Events, uint64(n+1))
	assert.Equal(t, "tp_btf", res.Attach)
}

// A child's exit signals its parent, from the child: the sender is the
// child, the target the test process. The kernel picks any thread of the
// multi-threaded test process; the classic tracepoint records that thread,
// which the entry maps back to the process.
func TestSignalsChildExit(t *testing.T) {
	k := catalogtest.Kernel(t)
	classic := catalog.NewKernel(nil)
	classic.Disable[catalog.FeatureTpBTF] = true
	classic.Disable[catalog.FeatureRawTracepoint] = true
	comm := catalogtest.UniqueComm(t, "sig-sh")
	sh := catalogtest.CopyBinary(t, "/bin/sh", comm)
	for _, c := range []struct {
		name string
		k    *catalog.Kernel
	}{{"default", k}, {"tracepoint", classic}} {
		t.Run(c.name, func(t *testing.T) {
			var pids []int
			res := catalogtest.Run(t, c.k, Entry{}, catalog.Params{Comm: comm}, func() {
				for i := 0; i < 3; i++ {
					cmd := exec.Command(sh, "-c", "exit 0")
					require.NoError(t, cmd.Run())
					pids = append(pids, cmd.Process.Pid)
				}
			})
			require.Zero(t, res.Lost)
			for _, pid := range pids {
				assert.Equal(t, uint64(1), count(t, res.Tables[0], pid, os.Getpid(), "SIGCHLD", "child_exited", ""))
			}
			assert.Equal(t, uint64(3), res.Events)
			// The test's threads all live at stop: every target resolved.
			assert.Empty(t, res.Notes)
		})
	}
}

func TestSignalsFailedOnlyFromOnePID(t *testing.T) {
	k := catalogtest.Kernel(t)
	sh := catalogtest.CopyBinary(t, "/bin/sh", catalogtest.UniqueComm(t, "sig-ign"))
	var child, ignorer int
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid()), FailedOnly: true}, func() {
		tg := startTarget(t)
		child = tg.pid()
		tg.usr1(t, 3)
		tg.kill(t)

		// A shell that sets SIGUSR2 to SIG_IGN, then waits on stdin.
		cmd := exec.Command(sh, "-c", "trap '' USR2; echo ready; read x; exit 0")
		in, err := cmd.StdinPipe()
		require.NoError(t, err)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		ignorer = cmd.Process.Pid
		lines := bufio.NewScanner(out)
		require.True(t, lines.Scan())
		for i := 0; i < 5; i++ {
			require.NoError(t, syscall.Kill(ignorer, syscall.SIGUSR2))
		}
		require.NoError(t, in.Close())
		require.NoError(t, cmd.Wait())
	})
	require.Zero(t, res.Lost)
	assert.Equal(t, uint64(5), count(t, res.Tables[2], os.Getpid(), ignorer, "SIGUSR2", "kill", "ignored"))
	// Only the test's own undelivered signals: none of the delivered
	// SIGUSR1/SIGKILL, no SIGCHLD from the children.
	for _, r := range res.Tables[0].Rows {
		assert.Equal(t, catalog.U(os.Getpid()), r[0])
		assert.NotEqual(t, "delivered", r[6])
		assert.NotEqual(t, catalog.U(child), r[2])
	}
}

func TestSignalsAttachFallbacks(t *testing.T) {
	catalogtest.Kernel(t)
	for _, c := range []struct {
		mode    string
		disable []catalog.Feature
	}{
		{"raw_tp", []catalog.Feature{catalog.FeatureTpBTF}},
		{"tracepoint", []catalog.Feature{catalog.FeatureTpBTF, catalog.FeatureRawTracepoint}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			k := catalog.NewKernel(nil)
			for _, f := range c.disable {
				k.Disable[f] = true
			}
			var child int
			res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(os.Getpid())}, func() {
				tg := startTarget(t)
				child = tg.pid()
				tg.usr1(t, 7)
				tg.kill(t)
			})
			assert.Equal(t, c.mode, res.Attach)
			require.Zero(t, res.Lost)
			// kill() targets the leader, whose thread id is the pid: the
			// classic tracepoint gives the same key.
			assert.Equal(t, uint64(7), count(t, res.Tables[0], os.Getpid(), child, "SIGUSR1", "kill", "delivered"))
			assert.Equal(t, uint64(1), count(t, res.Tables[0], os.Getpid(), child, "SIGKILL", "kill", "delivered"))
		})
	}
}

func TestAggregateResult(t *testing.T) {
	a := newAggregate()
	a.add(Key{SenderPID: 1, SenderComm: "a", TargetPID: 2, TargetComm: "b", Signal: 15}, 4)
	a.add(Key{SenderPID: 1, SenderComm: "a", TargetPID: 2, TargetComm: "b", Signal: 10, Result: AlreadyPending}, 2)
	a.add(Key{SenderPID: 2, SenderComm: "b", TargetPID: 1, TargetComm: "a", Signal: 17, Code: 1}, 1)
	res := a.result(catalog.Params{})
	assert.Equal(t, uint64(7), res.Events)
	assert.Equal(t, "7 signals generated, 2 not delivered, 3 distinct sender/target/signal kinds; most: a(1) -> b(2) SIGTERM (4)", res.Summary)
	assert.Equal(t, []string{"1", "a", "2", "b", "SIGTERM", "kill", "delivered", "4"}, res.Tables[0].Rows[0])
	assert.Equal(t, []string{"2", "b", "1", "a", "SIGCHLD", "child_exited", "delivered", "1"}, res.Tables[0].Rows[2])
	assert.Equal(t, [][]string{{"SIGTERM", "4"}, {"SIGUSR1", "2"}, {"SIGCHLD", "1"}}, res.Tables[1].Rows)
	assert.Equal(t, [][]string{{"1", "a", "2", "b", "SIGUSR1", "kill", "already_pending", "2"}}, res.Tables[2].Rows)
}

func TestToProcesses(t *testing.T) {
	a := newAggregate()
	a.add(Key{SenderPID: 9, TargetPID: 101, TargetComm: "app", Signal: 17, Code: 1}, 2)
	a.add(Key{SenderPID: 9, TargetPID: 102, TargetComm: "app", Signal: 17, Code: 1}, 3)
	a.add(Key{SenderPID: 9, TargetPID: 200, TargetComm: "gone", Signal: 15}, 1)
	a.dropped = 4
	tgids := map[uint32]uint32{101: 100, 102: 100}
	var lookups int
	b, gone := a.toProcesses(func(tid uint32, comm string) (uint32, bool) {
		lookups++
		tgid, ok := tgids[tid]
		return tgid, ok
	})
	assert.Equal(t, 1, gone)
	assert.Equal(t, 3, lookups)
	assert.Equal(t, uint64(4), b.dropped)
	assert.Equal(t, map[Key]uint64{
		{SenderPID: 9, TargetPID: 100, TargetComm: "app", Signal: 17, Code: 1}: 5,
		{SenderPID: 9, TargetPID: 200, TargetComm: "gone", Signal: 15}:         1,
	}, b.counts)
}

func TestProcTgid(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	name := strings.TrimSpace(string(comm))
	tid := uint32(syscall.Gettid())
	tgid, ok := procTgid(tid, name)
	require.True(t, ok)
	assert.Equal(t, uint32(os.Getpid()), tgid)
	_, ok = procTgid(tid, name+"x")
	assert.False(t, ok, "a thread whose name differs is another task")
	_, ok = procTgid(0, "")
	assert.False(t, ok)
}

func TestCodeName(t *testing.T) {
	assert.Equal(t, "tkill", CodeName(23, -6))
	assert.Equal(t, "kernel", CodeName(9, 0x80))
	assert.Equal(t, "segv_maperr", CodeName(11, 1))
	assert.Equal(t, "code 1", CodeName(10, 1))
}

func TestValidateRejectsUnsupportedFilter(t *testing.T) {
	require.ErrorContains(t, catalog.Params{Port: 80}.Validate(Info), "signals does not support the port filter")
}

func FuzzDecodeKey(f *testing.F) {
	f.Add(make([]byte, int(unsafe.Sizeof(signalsSigKey{}))))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var rec signalsSigKey
		if catalog.Decode(raw, &rec) != nil {
			return
		}
		a := newAggregate()
		a.add(decodeKey(&rec), 1)
		a.result(catalog.Params{}).Compact()
	})
}

// count sums the rows of tab matching sender, target, signal, code and
// (when given) result.
func count(t *testing.T, tab catalog.Table, sender, target int, sig, code, result string) uint64 {
	t.Helper()
	var n uint64
	var found bool
	for _, r := range tab.Rows {
		if r[0] == catalog.U(sender) && r[2] == catalog.U(target) && r[4] == sig && r[5] == code && (result == "" || r[6] == result) {
			v, err := strconv.ParseUint(r[7], 10, 64)
			require.NoError(t, err)
			n += v
			found = true
		}
	}
	require.True(t, found, "%s: no row %d -> %d %s %s %s in %v", tab.Title, sender, target, sig, code, result, tab.Rows)
	return n
}
