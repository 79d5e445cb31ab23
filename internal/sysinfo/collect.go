package sysinfo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune one Collect. The zero value collects this host.
type Options struct {
	// Interval is how long the rates (CPU, per-process CPU, disks, vmstat,
	// TCP counters) are measured over; default 1 s. The other facts are
	// gathered while it runs, so Collect takes about Interval.
	Interval time.Duration
	// Root is where procfs, sysfs, /dev/kmsg and /etc are read from
	// ("/proc" is Root+"/proc"); default "/". Tests point it at a fixture
	// tree. Things that only exist live (statfs of the mounts, DNS
	// queries, interface addresses, uname) are still taken from the
	// running system.
	Root string
	// Now stamps CollectedAt; default time.Now.
	Now func() time.Time
	// Monotonic is CLOCK_MONOTONIC now, which kernel log timestamps count
	// from; default the clock itself.
	Monotonic func() time.Duration
	// DNSTimeout bounds the query sent to each resolver; default 2 s.
	DNSTimeout time.Duration
	// Redact is applied to process command lines and kernel log text,
	// which can carry secrets; default identity.
	Redact func(string) string
	// Systemctl is the systemctl binary queried for failed and restarting
	// units when PID 1 is systemd; default "systemctl" from PATH.
	Systemctl string
}

const (
	defaultInterval   = time.Second
	defaultDNSTimeout = 2 * time.Second
	// statfsTimeout bounds each statfs: a hung network filesystem blocks
	// statfs in the kernel, and Collect must still return.
	statfsTimeout = time.Second
	// systemctlTimeout bounds the systemd queries together.
	systemctlTimeout = 2 * time.Second
	maxKernelLog     = 50
	maxTop           = 10
)

type collector struct {
	opts Options
	root string

	mu       sync.Mutex
	warnings []string

	usersOnce sync.Once
	users     map[uint32]string
}

func (o Options) withDefaults() Options {
	if o.Interval <= 0 {
		o.Interval = defaultInterval
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Monotonic == nil {
		o.Monotonic = monotonicNow
	}
	if o.DNSTimeout <= 0 {
		o.DNSTimeout = defaultDNSTimeout
	}
	if o.Redact == nil {
		o.Redact = func(s string) string { return s }
	}
	if o.Systemctl == "" {
		o.Systemctl = "systemctl"
	}
	return o
}

func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// path joins an absolute host path onto Root.
func (c *collector) path(p string) string { return filepath.Join(c.root, p) }

func (c *collector) warn(format string, args ...any) {
	c.mu.Lock()
	c.warnings = append(c.warnings, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *collector) read(p string) ([]byte, error) { return os.ReadFile(c.path(p)) }

// Collect takes one snapshot of the host. It never fails: whatever could
// not be read is left zero and explained in Warnings. Cancelling ctx cuts
// the interval short (the rates are then over the time that passed) and
// abandons the slow queries (DNS, systemctl).
func Collect(ctx context.Context, opts Options) *Facts {
	opts = opts.withDefaults()
	c := &collector{opts: opts, root: opts.Root}
	f := &Facts{CollectedAt: opts.Now()}

	first := c.sample(true)
	start := first.at
	timer := time.NewTimer(opts.Interval)
	defer timer.Stop()

	// Everything that is not a rate is gathered while the interval runs.
	// Each task writes only its own fields of f.
	var wg sync.WaitGroup
	spawn := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	var mounts []mountInfo
	var mountsOK bool
	mountsRead := make(chan struct{})
	spawn(func() {
		defer close(mountsRead)
		mounts, mountsOK = c.mountinfo()
	})
	spawn(func() { c.host(f) })
	spawn(func() {
		<-mountsRead
		f.Filesystems = c.filesystems(mounts)
	})
	spawn(func() {
		<-mountsRead
		f.Cgroups = c.cgroups(mounts, mountsOK)
	})
	spawn(func() { f.KernelLog = c.kernelLog(maxKernelLog) })
	spawn(func() { c.services(ctx, f) })
	spawn(func() { f.Network.ResolvConf, f.Network.Resolvers = c.resolvers(ctx) })
	spawn(func() { f.Network.Interfaces = c.interfaces() })
	spawn(func() { f.Network.Listeners = c.listeners() })
	spawn(func() { f.Memory = c.memory(); f.PSI = c.psi() })
	spawn(func() { f.Limits = c.limits() })
	spawn(func() { f.BlockDevices = c.blockDevices() })
	var details map[int]*procDetail
	spawn(func() { details = c.procDetails(first.procs) })

	select {
	case <-timer.C:
	case <-ctx.Done():
		c.warn("interval cut short after %v: %v", time.Since(start).Round(time.Millisecond), ctx.Err())
	}
	second := c.sample(false)
	elapsed := second.at.Sub(first.at)
	wg.Wait()

	f.Interval = elapsed
	c.rates(f, first, second, elapsed)
	c.processes(f, first, second, details, elapsed)
	f.Warnings = c.warnings
	return f
}
