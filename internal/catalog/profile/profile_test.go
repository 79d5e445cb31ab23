package profile

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
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
// is set: after a line on its stdin (the trace is attached) it spins in
// profileSpinTarget until a second line comes, says "done" with the CPU
// time the spin took in nanoseconds, and stays alive until its stdin
// closes, so the profiler can still read its maps and binary when it
// stops.
func TestMain(m *testing.M) {
	if os.Getenv(spinEnv) != "" {
		in := bufio.NewReader(os.Stdin)
		if _, err := in.ReadString('\n'); err != nil {
			os.Exit(0)
		}
		var stop atomic.Bool
		eof := make(chan struct{})
		go func() {
			_, _ = in.ReadString('\n')
			stop.Store(true)
			_, _ = io.Copy(io.Discard, in)
			close(eof)
		}()
		begin := cpuTime()
		profileSpinTarget(&stop)
		fmt.Println("done", int64(cpuTime()-begin))
		<-eof
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var spinSink uint64

// profileSpinTarget is the function the profile must find on top; it
// spins until stop.
//
//go:noinline
func profileSpinTarget(stop *atomic.Bool) {
	x := uint64(1)
	for !stop.Load() {
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

// spinChild starts the test binary, waiting to spin. spin (the workload)
// lets it go, stops it once enough() and returns the CPU time the spin
// used, the child still alive; end ends it.
func spinChild(t *testing.T) (pid int, spin func(enough func() bool) time.Duration, end func()) {
	cmd := catalogtest.SelfCommand(t, spinEnv, "1")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid, func(enough func() bool) time.Duration {
			_, err := io.WriteString(stdin, "go\n")
			require.NoError(t, err)
			deadline := time.Now().Add(time.Minute)
			for !enough() {
				require.False(t, time.Now().After(deadline), "the spin did not get enough samples in a minute")
				// Nothing announces a sample of one process; poll.
				time.Sleep(10 * time.Millisecond)
			}
			_, err = io.WriteString(stdin, "stop\n")
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

// clockSampler is a second set of the entry's events (cpu-clock at the
// same frequency on every CPU) whose samples, with their pid, go to ring
// buffers the test reads: the reference the trace's count is held to.
// CPU time is no such reference: under qemu without KVM a vCPU runs in
// slices, its guest clock and the child's CPU time go on between them,
// and a timer that expired meanwhile fires once when the vCPU runs again
// (1.07 s of CPU drew 39 samples at 99 Hz on a busy host). The
// reference's timers are the same kind on the same CPUs, so they come
// late and merge together with the entry's.
type clockSampler struct {
	fds   []int
	rings [][]byte
}

func openClockSampler(t *testing.T, hz uint64) *clockSampler {
	t.Helper()
	cpus, err := catalog.OnlineCPUs()
	require.NoError(t, err)
	s := &clockSampler{}
	t.Cleanup(func() {
		for _, r := range s.rings {
			_ = unix.Munmap(r)
		}
		for _, fd := range s.fds {
			_ = unix.Close(fd)
		}
	})
	for _, cpu := range cpus {
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK, Sample: hz,
			Bits: unix.PerfBitFreq | unix.PerfBitDisabled, Sample_type: unix.PERF_SAMPLE_TID}
		attr.Size = uint32(unsafe.Sizeof(attr))
		fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
		require.NoError(t, err, "cpu-clock on cpu %d", cpu)
		s.fds = append(s.fds, fd)
		// 64 KiB of 16-byte records: far more than a few seconds at 99 Hz.
		ring, err := unix.Mmap(fd, 0, (1+16)*os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		require.NoError(t, err)
		s.rings = append(s.rings, ring)
	}
	return s
}

func (s *clockSampler) ioctl(t *testing.T, req uint) {
	for _, fd := range s.fds {
		require.NoError(t, unix.IoctlSetInt(fd, req, 0))
	}
}

// count returns the samples taken while pid ran; it fails on a lost
// record, which would make the count short.
func (s *clockSampler) count(t *testing.T, pid int) uint64 {
	t.Helper()
	var n uint64
	page := os.Getpagesize()
	for _, ring := range s.rings {
		// data_head sits at offset 1024 of struct perf_event_mmap_page;
		// the records below it are complete.
		head := atomic.LoadUint64((*uint64)(unsafe.Pointer(&ring[1024])))
		data := ring[page:]
		require.LessOrEqual(t, head, uint64(len(data)), "the ring wrapped")
		for off := uint64(0); off < head; {
			typ := binary.NativeEndian.Uint32(data[off:])
			size := uint64(binary.NativeEndian.Uint16(data[off+6:]))
			require.NotEqual(t, uint32(unix.PERF_RECORD_LOST), typ, "the reference sampler lost records")
			if typ == unix.PERF_RECORD_SAMPLE && binary.NativeEndian.Uint32(data[off+8:]) == uint32(pid) {
				n++
			}
			off += size
		}
	}
	return n
}

func runSpin(t *testing.T, k *catalog.Kernel) *catalog.Result {
	const hz = 99
	// Samples the reference must take of the spin before it stops: half a
	// second of CPU where timers come on time.
	const enough = hz / 2
	pid, spin, end := spinChild(t)
	ref := openClockSampler(t, hz)
	var used time.Duration
	res := catalogtest.Run(t, k, Entry{}, catalog.Params{PID: uint32(pid), Frequency: hz}, func() {
		ref.ioctl(t, unix.PERF_EVENT_IOC_ENABLE)
		used = spin(func() bool { return ref.count(t, pid) >= enough })
		ref.ioctl(t, unix.PERF_EVENT_IOC_DISABLE)
	})
	end()
	want := ref.count(t, pid)
	t.Logf("%s: %s; the reference sampled the child %d times, the spin used %v of CPU", res.Attach, res.Summary, want, used)
	require.Zero(t, res.Lost)
	require.GreaterOrEqual(t, want, uint64(enough))
	// The child spins only while the trace and the reference are both on.
	// Their timers differ in phase only, which moves a sample or so each
	// time the child is switched in or out; half and twice (+2 for the
	// child's start-up and exit inside the trace) are bounds that a
	// missed spin or a wrong frequency falls outside of.
	assert.GreaterOrEqual(t, res.Events, want/2, "samples, against the reference's %d", want)
	assert.LessOrEqual(t, res.Events, 2*want+2, "samples, against the reference's %d", want)
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
