package profile

import (
	"bufio"
	"fmt"
	"io"
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
// is set: once a line arrives on its stdin (the trace is attached), it
// burns spinEnv's worth of CPU time in profileSpinTarget, says "done" with
// the CPU time the spin took in nanoseconds, and stays alive until its
// stdin closes, so the profiler can still read its maps and binary when it
// stops.
func TestMain(m *testing.M) {
	if d := os.Getenv(spinEnv); d != "" {
		budget, err := time.ParseDuration(d)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		in := bufio.NewReader(os.Stdin)
		if _, err := in.ReadString('\n'); err != nil {
			os.Exit(0)
		}
		begin := cpuTime()
		profileSpinTarget(begin + budget)
		fmt.Println("done", int64(cpuTime()-begin))
		_, _ = in.ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var spinSink uint64

// profileSpinTarget is the function the profile must find on top; it
// spins until the process has used until of CPU time.
//
//go:noinline
func profileSpinTarget(until time.Duration) {
	x := uint64(1)
	for cpuTime() < until {
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

// spinChild starts the test binary, waiting to burn budget of CPU time.
// spin (the workload) lets it go and returns once it is done, still alive,
// with the CPU time the spin used; end ends it.
func spinChild(t *testing.T, budget time.Duration) (pid int, spin func() time.Duration, end func()) {
	cmd := catalogtest.SelfCommand(t, spinEnv, budget.String())
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid, func() time.Duration {
			_, err := io.WriteString(stdin, "go\n")
			require.NoError(t, err)
			line, err := bufio.NewReader(stdout).ReadString('\n')
			require.NoError(t, err)
			var ns int64
			_, err = fmt.Sscanf(line, "done %d\n", &ns)
			require.NoError(t, err, "child said %q", line)
			return time.Duration(ns)
		}, func() {
			stdin.Close()
			require.NoError(t, cmd.Wait())
		}
}

func runSpin(t *testing.T, k *catalog.Kernel) *catalog.Result {
	const hz = 99
	pid, spin, end := spinChild(t, time.Second)
	var used time.Duration
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(pid), Frequency: hz}, func() { used = spin() })
	end()
	t.Logf("%s: %s; the spin used %v of CPU", res.Attach, res.Summary, used)
	require.Zero(t, res.Lost)
	// The child spins only once the trace is attached: one sample per
	// 1/99 s of the CPU time it used then. Half of that is the floor for
	// timer ticks that come late or merge (qemu without KVM delivers them
	// in bursts); a profile that misses the spin falls far below it.
	want := uint64(used.Seconds() * hz)
	assert.GreaterOrEqual(t, res.Events, want/2, "samples for %v of CPU", used)
	// Its start-up and exit add a few samples, never twice as many.
	assert.LessOrEqual(t, res.Events, 2*want+2, "samples for %v of CPU", used)
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
	if catalogtest.PerfLinks(t) {
		assert.Equal(t, "perf_event (cpu-clock, BPF link)", res.Attach)
	} else {
		// Before 5.15 the entry falls back to the ioctl.
		assert.Equal(t, "perf_event (cpu-clock, ioctl)", res.Attach)
	}
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
