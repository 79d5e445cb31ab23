// Package catalogtest runs catalog entries in tests: it decides whether BPF
// tests run here (root, or NANNYAGENT_REQUIRE_BPF=1 to fail instead of
// skip), runs an entry around a workload, and checks that nothing stays
// loaded or attached afterwards.
package catalogtest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/stretchr/testify/require"
)

// RequireEnv is the variable that turns BPF skips into failures (CI and
// the kernel-matrix guests set it).
const RequireEnv = "NANNYAGENT_REQUIRE_BPF"

// Required reports whether BPF tests must run.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

var (
	kernelOnce sync.Once
	kernel     *catalog.Kernel
)

// Kernel returns the shared test kernel environment, or skips (fails when
// Required) when BPF cannot run here.
func Kernel(t testing.TB) *catalog.Kernel {
	t.Helper()
	if os.Geteuid() != 0 {
		if Required() {
			t.Fatalf("%s=1 but the test is not running as root", RequireEnv)
		}
		t.Skip("BPF tests need root (set " + RequireEnv + "=1 to make this a failure)")
	}
	kernelOnce.Do(func() { kernel = catalog.NewKernel(nil) })
	return kernel
}

// Supported skips the test when entry declares it cannot run on this
// kernel (an *catalog.UnsupportedError, e.g. no kprobes here); any other
// check failure is a test failure.
func Supported(t testing.TB, k *catalog.Kernel, e catalog.Entry) {
	t.Helper()
	err := e.Check(k)
	if err == nil {
		return
	}
	if catalog.IsUnsupported(err) {
		t.Skipf("declared unsupported here: %v", err)
	}
	t.Fatalf("check %s: %v", e.Info().Name, err)
}

// Run starts e with p, runs workload, stops, and returns the result. It
// fails the test when any BPF program or link of the trace is still known
// to the kernel after Stop.
func Run(t testing.TB, k *catalog.Kernel, e catalog.Entry, p catalog.Params, workload func()) *catalog.Result {
	t.Helper()
	Supported(t, k, e)
	before := OwnedBPF(t)
	tr, err := e.Start(context.Background(), k, p)
	require.NoError(t, err, "start %s", e.Info().Name)
	during := OwnedBPF(t)
	workload()
	res, err := tr.Stop()
	require.NoError(t, err, "stop %s", e.Info().Name)
	require.NotNil(t, res)
	again, err := tr.Stop()
	require.NoError(t, err, "second stop")
	require.Same(t, res, again, "Stop must be idempotent")
	RequireReleased(t, before, during)
	return res
}

// Owned lists the BPF program and link ids this process holds open.
type Owned struct {
	Progs map[uint32]bool
	Links map[uint32]bool
}

// OwnedBPF reads /proc/self/fdinfo for BPF program and link fds.
func OwnedBPF(t testing.TB) Owned {
	t.Helper()
	o := Owned{Progs: map[uint32]bool{}, Links: map[uint32]bool{}}
	ents, err := os.ReadDir("/proc/self/fdinfo")
	require.NoError(t, err)
	for _, ent := range ents {
		data, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", ent.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				continue
			}
			switch k {
			case "prog_id":
				o.Progs[uint32(id)] = true
			case "link_id":
				o.Links[uint32(id)] = true
			}
		}
	}
	return o
}

// RequireReleased fails unless every program and link that appeared
// between before and during is gone from the kernel. The kernel frees
// programs after an RCU grace period, so it waits a little.
func RequireReleased(t testing.TB, before, during Owned) {
	t.Helper()
	var progs, links []uint32
	for id := range during.Progs {
		if !before.Progs[id] {
			progs = append(progs, id)
		}
	}
	for id := range during.Links {
		if !before.Links[id] {
			links = append(links, id)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var alive []string
		for _, id := range progs {
			if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id)); err == nil {
				p.Close()
				alive = append(alive, "program "+strconv.Itoa(int(id)))
			}
		}
		for _, id := range links {
			if linkAlive(id) {
				alive = append(alive, "link "+strconv.Itoa(int(id)))
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still loaded or attached after Stop: %s", strings.Join(alive, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Workload helpers shared by the entries' tests.

// Repeat runs f n times.
func Repeat(n int, f func()) {
	for i := 0; i < n; i++ {
		f()
	}
}
