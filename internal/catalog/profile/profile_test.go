package profile

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/nannyagent/nannyagent/internal/catalog/catalogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const spinEnv = "NANNYAGENT_PROFILE_SPIN"

// TestMain turns the test binary into the profiled workload when spinEnv
// is set: it burns spinEnv's worth of CPU time in profileSpinTarget, says
// "done", and stays alive until its stdin closes, so the profiler can
// still read its maps and binary when it stops.
func TestMain(m *testing.M) {
	if d := os.Getenv(spinEnv); d != "" {
		budget, err := time.ParseDuration(d)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		profileSpinTarget(budget)
		fmt.Println("done")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var spinSink uint64

// profileSpinTarget is the function the profile must find on top.
//
//go:noinline
func profileSpinTarget(budget time.Duration) {
	x := uint64(1)
	for cpuTime() < budget {
		for i := 0; i < 1_000_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	spinSink = x
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestStructLayout(t *testing.T) {
	assert.Equal(t, uintptr(28), unsafe.Sizeof(profileProfKey{}))
}

func TestParseMaps(t *testing.T) {
	ms := parseMaps("00400000-00452000 r-xp 00001000 08:02 173521 /usr/bin/dbus daemon\n" +
		"00651000-00652000 rw-p 00051000 08:02 173521 /usr/bin/dbus-daemon\n" +
		"7ffd0000-7ffd1000 r-xp 00000000 00:00 0 [vdso]\n")
	require.Len(t, ms, 1)
	assert.Equal(t, mapping{Start: 0x400000, End: 0x452000, Offset: 0x1000, Path: "/usr/bin/dbus daemon", Key: "08:02:173521"}, ms[0])
}

func TestSymtabLookup(t *testing.T) {
	s := symtab{{Addr: 0x300, Name: "c"}, {Addr: 0x100, Size: 0x10, Name: "a"}, {Addr: 0x200, Size: 0x50, Name: "b"}}
	s.sort()
	for addr, want := range map[uint64]string{0x50: "", 0x100: "a", 0x10f: "a", 0x110: "", 0x240: "b", 0x999: "c"} {
		assert.Equal(t, want, s.lookup(addr), "%#x", addr)
	}
}

// The test binary symbolises its own function from its ELF file.
func TestSymboliseSelf(t *testing.T) {
	sym := newSymbolizer()
	pc := funcPC(t)
	assert.Equal(t, "github.com/nannyagent/nannyagent/internal/catalog/profile.profileSpinTarget", sym.userFrame(uint32(os.Getpid()), pc))
}

func funcPC(t *testing.T) uint64 {
	f := profileSpinTarget
	return uint64(**(**uintptr)(unsafe.Pointer(&f)))
}

func TestBuildResult(t *testing.T) {
	res := buildResult(catalog.Params{}, 99, 2, []Sample{
		{PID: 10, Comm: "app", User: []string{"hot", "main"}, Count: 30},
		{PID: 10, Comm: "app", Kernel: []string{"clear_page"}, User: []string{"alloc", "main"}, Count: 10},
		{PID: 11, Comm: "kworker", Kernel: []string{"memcpy"}, Count: 60},
	})
	assert.Equal(t, uint64(100), res.Events)
	assert.Equal(t, []string{"11", "kworker", "60", "60.0", "memcpy[k]"}, res.Tables[0].Rows[0])
	assert.Equal(t, []string{"10", "app", "30", "30.0", "hot <- main"}, res.Tables[0].Rows[1])
	assert.Equal(t, "clear_page[k] <- alloc <- main", res.Tables[0].Rows[2][4])
	assert.Equal(t, []string{"10", "app", "40", "40.0"}, res.Tables[1].Rows[1])
	assert.Equal(t, "100 samples at 99 Hz on 2 CPUs, 2 processes; busiest: kworker (pid 11) 60.0%; hottest frame: memcpy[k]", res.Summary)
}

func FuzzParseMaps(f *testing.F) {
	f.Add("00400000-00452000 r-xp 00001000 08:02 173521 /usr/bin/x\n")
	f.Fuzz(func(t *testing.T, s string) { parseMaps(s) })
}

// spinChild starts the test binary burning budget of CPU time; it returns
// once the child reports done (still alive) and a func that ends it.
func spinChild(t *testing.T, budget time.Duration) (pid int, started func(), wait func()) {
	cmd := catalogtest.SelfCommand(t, spinEnv, budget.String())
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid, func() {
			line, err := bufio.NewReader(stdout).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "done\n", line)
		}, func() {
			stdin.Close()
			require.NoError(t, cmd.Wait())
		}
}

func runSpin(t *testing.T, k *catalog.Kernel) *catalog.Result {
	const hz = 99
	budget := time.Second
	pid, done, end := spinChild(t, budget)
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(pid), Frequency: hz}, done)
	end()
	t.Logf("%s: %s", res.Attach, res.Summary)
	require.Zero(t, res.Lost)
	// One sample per 1/99 s of the child's CPU time, give or take the
	// start-up the trace missed and scheduling jitter.
	assert.GreaterOrEqual(t, res.Events, uint64(hz/2), "samples")
	assert.LessOrEqual(t, res.Events, uint64(2*hz), "samples")
	for _, r := range res.Tables[1].Rows {
		assert.Equal(t, catalog.U(pid), r[0], "pid filter let another process through: %v", r)
	}
	top := res.Tables[0].Rows[0]
	assert.Equal(t, catalog.U(pid), top[0])
	assert.Equal(t, "profile.test", top[1])
	assert.Contains(t, top[4], "profile.profileSpinTarget", "top stack %v", res.Tables[0].Rows)
	assert.Contains(t, res.Summary, "at 99 Hz")
	return res
}

func TestProfileFindsSpinningFunction(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	res := runSpin(t, k)
	assert.Equal(t, "perf_event (cpu-clock, BPF link)", res.Attach)
}

func TestProfileIoctlAttach(t *testing.T) {
	k := catalogtest.Kernel(t)
	catalogtest.Supported(t, k, Entry{})
	forceIoctl = true
	defer func() { forceIoctl = false }()
	res := runSpin(t, k)
	assert.Equal(t, "perf_event (cpu-clock, ioctl)", res.Attach)
}

func TestValidateFrequency(t *testing.T) {
	err := catalog.Params{Frequency: 20000}.Validate(Info)
	require.ErrorContains(t, err, "out of range")
	require.True(t, strings.Contains(catalog.Params{Port: 1}.Validate(Info).Error(), "port"))
}
