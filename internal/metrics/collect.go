package metrics

import (
	"context"
	"errors"
	"fmt"
	"github.com/nannyagent/nannyagent/internal/procfmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/nannyagent/nannyagent/internal/backoff"
	"github.com/nannyagent/nannyagent/internal/version"
)

// Options tune a Collector. The zero value collects this host.
//
// internal/sysinfo is not used here: its one entry point takes a whole
// investigation snapshot (every process, the kernel log, DNS probes of
// each resolver, systemctl), far too much to repeat every 30 s, and it
// has neither the byte counters nor the os-release ID this payload needs.
// The few files read here are small and read directly.
type Options struct {
	// Root is where /proc, /sys and /etc are read from; default "/".
	// Tests point it at a fixture tree. statfs, interface addresses and
	// uname are live unless their hooks below are set.
	Root string
	// Version is the agent version reported; default version.Version.
	Version string
	// FirstSample is how long the first CPU measurement runs (later ones
	// cover the time since the previous collection); default 250 ms.
	FirstSample time.Duration
	// StatfsTimeout bounds the statfs calls together: a hard-mounted
	// filesystem whose server is gone blocks statfs in the kernel.
	// Default 1 s.
	StatfsTimeout time.Duration
	Logger        *zap.Logger

	// Statfs is unix.Statfs by default.
	Statfs func(path string, st *unix.Statfs_t) error
	// Interfaces lists the network interfaces; default net.Interfaces.
	Interfaces func() ([]Interface, error)
	// Machine is uname's machine ("x86_64"); default uname(2).
	Machine func() string
	// Sleep waits d or until ctx ends; default a timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Interface is one network interface and its addresses.
type Interface struct {
	Name     string
	Up       bool
	Loopback bool
	Addrs    []netip.Addr
}

const (
	defaultFirstSample   = 250 * time.Millisecond
	defaultStatfsTimeout = time.Second
)

func (o Options) withDefaults() Options {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Version == "" {
		o.Version = version.Version
	}
	if o.FirstSample <= 0 {
		o.FirstSample = defaultFirstSample
	}
	if o.StatfsTimeout <= 0 {
		o.StatfsTimeout = defaultStatfsTimeout
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Statfs == nil {
		o.Statfs = unix.Statfs
	}
	if o.Interfaces == nil {
		o.Interfaces = systemInterfaces
	}
	if o.Machine == nil {
		o.Machine = unameMachine
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	return o
}

// Collector collects payloads one after another, keeping the previous CPU
// sample so that each payload's cpu_percent is the use since the one
// before. It is safe for concurrent use; collections are serialised.
type Collector struct {
	opts Options
	log  *zap.Logger

	mu       sync.Mutex
	prevCPU  cpuTimes
	havePrev bool
	warned   map[string]bool
	dropped  int

	// statfsPending are the mount points whose statfs has not returned
	// yet; they are skipped until it does, so a hung mount holds one
	// goroutine, not one per collection.
	pendingMu     sync.Mutex
	statfsPending map[string]bool
}

// NewCollector returns a Collector for opts.
func NewCollector(opts Options) *Collector {
	opts = opts.withDefaults()
	return &Collector{
		opts:          opts,
		log:           opts.Logger.Named("metrics"),
		warned:        map[string]bool{},
		statfsPending: map[string]bool{},
	}
}

// Collect takes one payload with a fresh Collector (so its CPU use is
// measured over Options.FirstSample).
func Collect(ctx context.Context, opts Options) (Payload, error) {
	return NewCollector(opts).Collect(ctx)
}

// Collect reads the host and builds the payload. What cannot be read is
// left zero and logged (once, until it changes): the backend accepts
// zeros, and a missing number is no reason to stop reporting. The error
// is ctx's when it ends during the first CPU sample, or the validation
// error of a payload the backend would refuse (which would be a bug).
func (c *Collector) Collect(ctx context.Context) (Payload, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Payload{}, err
	}
	var warns []string
	warn := func(format string, args ...any) { warns = append(warns, fmt.Sprintf(format, args...)) }

	var s sample
	pct, err := c.cpu(ctx, warn)
	if err != nil {
		return Payload{}, err
	}
	s.CPUPercent = pct
	s.CPUCores = c.cores(warn)

	if b, err := c.read("/proc/meminfo"); err != nil {
		warn("memory: %v", err)
	} else if s.MemTotal, s.MemAvailable, err = parseMeminfo(b); err != nil {
		warn("/proc/meminfo: %v", err)
	}
	if b, err := c.read("/proc/loadavg"); err != nil {
		warn("load average: %v", err)
	} else if s.Load, err = parseLoadavg(b); err != nil {
		warn("/proc/loadavg: %v", err)
	}
	if b, err := c.read("/proc/net/dev"); err != nil {
		warn("network counters: %v", err)
	} else if s.RxBytes, s.TxBytes, err = parseNetDev(b); err != nil {
		warn("/proc/net/dev: %v", err)
	}
	c.osRelease(&s, warn)
	if b, err := c.read("/proc/sys/kernel/osrelease"); err == nil {
		s.Kernel = strings.TrimSpace(string(b))
	} else {
		warn("kernel release: %v", err)
	}
	s.Arch = c.opts.Machine()
	s.Version = c.opts.Version
	c.addresses(&s, warn)
	c.filesystems(ctx, &s, warn)
	if err := ctx.Err(); err != nil {
		return Payload{}, err
	}

	p, dropped := build(s)
	c.report(warns, dropped)
	if err := Validate(p); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// sample is what one collection read, before the units and limits of the
// payload are applied.
type sample struct {
	CPUPercent                float64
	CPUCores                  int
	MemTotal, MemAvailable    uint64
	Root                      *fsUsage // nil when / could not be measured
	Filesystems               []fsUsage
	Load                      [3]float64
	RxBytes, TxBytes          uint64
	OSID, OSIDLike, OSVersion string
	Kernel, Arch, Version     string
	PrimaryIP                 string
	IPs                       []string
}

// fsUsage is one statfs, in bytes: Free counts the blocks reserved for
// root, Avail does not.
type fsUsage struct {
	Device, Mount      string
	Total, Free, Avail uint64
}

// build turns a sample into a payload the backend accepts whatever the
// sample holds, and says how many filesystems did not fit.
func build(s sample) (Payload, int) {
	kernel := cleanText(s.Kernel, MaxKernelVersion)
	m := SystemMetrics{
		CPUPercent:    clampPercent(s.CPUPercent),
		CPUCores:      max(s.CPUCores, 0),
		MemoryTotalGB: gibOf(s.MemTotal),
		LoadAverage: LoadAverage{
			OneMin: nonNegative(s.Load[0]), FiveMin: nonNegative(s.Load[1]), FifteenMin: nonNegative(s.Load[2]),
		},
		NetworkStats:  NetworkStats{InGB: gibOf(s.RxBytes), OutGB: gibOf(s.TxBytes)},
		KernelVersion: kernel,
	}
	used := s.MemTotal - min(s.MemAvailable, s.MemTotal)
	m.MemoryUsedGB = gibOf(used)
	m.MemoryPercent = percent(float64(used), float64(s.MemTotal))
	if r := s.Root; r != nil {
		used := r.Total - min(r.Free, r.Total)
		m.DiskTotalGB = gibOf(r.Total)
		m.DiskUsedGB = gibOf(used)
		// used/total, not df's used/(used+avail): the contract's
		// definition (NANNYAPI.md §2.7).
		m.DiskUsagePercent = percent(float64(used), float64(r.Total))
	}
	entries := make([]Filesystem, 0, len(s.Filesystems))
	for _, f := range s.Filesystems {
		used := f.Total - min(f.Free, f.Total)
		entries = append(entries, Filesystem{
			Device:       strings.ToValidUTF8(f.Device, "\uFFFD"),
			MountPath:    strings.ToValidUTF8(f.Mount, "\uFFFD"),
			UsedGB:       gibOf(used),
			FreeGB:       gibOf(f.Avail),
			TotalGB:      gibOf(f.Total),
			UsagePercent: percent(float64(used), float64(used)+float64(f.Avail)),
		})
	}
	var dropped int
	m.Filesystems, dropped = capFilesystems(entries, MaxFilesystemsJSON)

	p := Payload{
		Action:         ActionIngestMetrics,
		SystemMetrics:  m,
		OSInfo:         cleanText(normalizeID(s.OSID), MaxText),
		OSVersion:      cleanText(s.OSVersion, MaxText),
		OSType:         "linux",
		PlatformFamily: platformFamily(s.OSID, s.OSIDLike),
		Version:        cleanText(s.Version, MaxVersion),
		KernelVersion:  kernel,
		Arch:           cleanText(s.Arch, MaxText),
		AllIPs:         []string{},
	}
	// An address longer than the column cannot be an address; better none
	// than a cut one.
	if ip := cleanText(s.PrimaryIP, MaxPrimaryIP+1); len(ip) <= MaxPrimaryIP {
		p.PrimaryIP = ip
	}
	seen := map[string]bool{}
	for _, ip := range s.IPs {
		ip = cleanText(ip, MaxText)
		if ip != "" && !seen[ip] {
			seen[ip] = true
			p.AllIPs = append(p.AllIPs, ip)
		}
	}
	sort.Strings(p.AllIPs)
	if len(p.AllIPs) > MaxAllIPs {
		p.AllIPs = p.AllIPs[:MaxAllIPs]
	}
	return p, dropped
}

// capFilesystems keeps the entries whose JSON list stays under limit
// bytes: the root filesystem first, then the largest (a small one says
// least about where the space is), skipping any that would not fit. The
// kept ones are returned sorted by mount path, with how many were left
// out.
func capFilesystems(entries []Filesystem, limit int) ([]Filesystem, int) {
	if len(entries) == 0 {
		return []Filesystem{}, 0
	}
	ranked := slices.Clone(entries)
	slices.SortStableFunc(ranked, func(a, b Filesystem) int {
		if (a.MountPath == "/") != (b.MountPath == "/") {
			if a.MountPath == "/" {
				return -1
			}
			return 1
		}
		if a.TotalGB != b.TotalGB {
			if a.TotalGB > b.TotalGB {
				return -1
			}
			return 1
		}
		return strings.Compare(a.MountPath, b.MountPath)
	})
	kept := make([]Filesystem, 0, len(ranked))
	size := 1 // "[" now, "," or "]" added per entry
	for _, f := range ranked {
		n, err := filesystemsJSONLen([]Filesystem{f}) // "[" + entry + "]"
		if err != nil {
			continue
		}
		if size+n-1 < limit {
			size += n - 1
			kept = append(kept, f)
		}
	}
	slices.SortFunc(kept, func(a, b Filesystem) int { return strings.Compare(a.MountPath, b.MountPath) })
	return kept, len(entries) - len(kept)
}

// report logs what could not be read and how many filesystems were left
// out, each only when it differs from the previous collection: the same
// warning every 30 s would bury everything else in the journal.
func (c *Collector) report(warns []string, dropped int) {
	now := make(map[string]bool, len(warns))
	for _, w := range warns {
		now[w] = true
		if !c.warned[w] {
			c.log.Warn("metrics source unavailable; its values are sent as 0", zap.String("problem", w))
		}
	}
	c.warned = now
	if dropped != c.dropped {
		if dropped > 0 {
			c.log.Info("filesystems left out of the metrics to keep their JSON under the backend's limit",
				zap.Int("dropped", dropped), zap.Int("limit_bytes", MaxFilesystemsJSON))
		} else {
			c.log.Info("all filesystems fit in the metrics again")
		}
		c.dropped = dropped
	}
}

func (c *Collector) read(p string) ([]byte, error) {
	return os.ReadFile(filepath.Join(c.opts.Root, p))
}

// cpu measures the CPU use since the previous collection, or over
// FirstSample when there is none or the counters cannot be compared.
func (c *Collector) cpu(ctx context.Context, warn func(string, ...any)) (float64, error) {
	readStat := func() (cpuTimes, error) {
		b, err := c.read("/proc/stat")
		if err != nil {
			return cpuTimes{}, err
		}
		return parseCPUStat(b)
	}
	cur, err := readStat()
	if err != nil {
		c.havePrev = false
		warn("CPU use: /proc/stat: %v", err)
		return 0, nil
	}
	if c.havePrev {
		if pct, ok := cpuPercent(c.prevCPU, cur); ok {
			c.prevCPU = cur
			return pct, nil
		}
	}
	if err := c.opts.Sleep(ctx, c.opts.FirstSample); err != nil {
		return 0, err
	}
	next, err := readStat()
	if err != nil {
		c.havePrev = false
		warn("CPU use: /proc/stat: %v", err)
		return 0, nil
	}
	c.prevCPU, c.havePrev = next, true
	pct, _ := cpuPercent(cur, next)
	return pct, nil
}

func (c *Collector) cores(warn func(string, ...any)) int {
	if b, err := c.read("/proc/cpuinfo"); err == nil {
		if n := countProcessors(b); n > 0 {
			return n
		}
	}
	if b, err := c.read("/sys/devices/system/cpu/online"); err == nil {
		if n, err := procfmt.CPUListCount(string(b)); err == nil {
			return n
		}
	}
	warn("CPU count: neither /proc/cpuinfo nor /sys/devices/system/cpu/online could be read; using the CPUs this process may run on")
	return runtime.NumCPU()
}

func (c *Collector) osRelease(s *sample, warn func(string, ...any)) {
	var rel map[string]string
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := c.read(p)
		if err == nil {
			rel = parseOSRelease(b)
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			warn("%s: %v", p, err)
		}
	}
	if rel == nil {
		for _, l := range legacyRelease {
			if _, err := os.Stat(filepath.Join(c.opts.Root, l.file)); err == nil {
				s.OSID = l.id
				break
			}
		}
		if s.OSID == "" {
			warn("no os-release: platform_family is \"unknown\"")
		}
	} else {
		s.OSID, s.OSIDLike, s.OSVersion = rel["ID"], rel["ID_LIKE"], rel["VERSION_ID"]
	}
	// Debian's point release ("12.11") is only in /etc/debian_version;
	// the earlier agent reported it, and patch scripts may be keyed on it.
	if normalizeID(s.OSID) == "debian" {
		if b, err := c.read("/etc/debian_version"); err == nil {
			if v := strings.TrimSpace(string(b)); v != "" && v[0] >= '0' && v[0] <= '9' {
				s.OSVersion = v
			}
		}
	}
}

// addresses fills all_ips with the addresses of the interfaces that are
// up (loopback left out) and primary_ip with the IPv4 address of the
// default route's interface, else the first global IPv4 address, else the
// first address at all.
func (c *Collector) addresses(s *sample, warn func(string, ...any)) {
	ifs, err := c.opts.Interfaces()
	if err != nil {
		warn("network interfaces: %v", err)
		return
	}
	var routeIface string
	if b, err := c.read("/proc/net/route"); err == nil {
		routeIface = defaultRouteIface(b)
	}
	var onRoute, global, any4 netip.Addr
	for _, ifc := range ifs {
		if !ifc.Up || ifc.Loopback {
			continue
		}
		for _, a := range ifc.Addrs {
			a = a.Unmap()
			if !a.IsValid() || a.IsLoopback() || a.IsUnspecified() {
				continue
			}
			s.IPs = append(s.IPs, a.WithZone("").String())
			if !a.Is4() {
				continue
			}
			if ifc.Name == routeIface && !onRoute.IsValid() && !a.IsLinkLocalUnicast() {
				onRoute = a
			}
			if !global.IsValid() && a.IsGlobalUnicast() {
				global = a
			}
			if !any4.IsValid() {
				any4 = a
			}
		}
	}
	for _, a := range []netip.Addr{onRoute, global, any4} {
		if a.IsValid() {
			s.PrimaryIP = a.String()
			return
		}
	}
	if len(s.IPs) > 0 {
		s.PrimaryIP = slices.Min(s.IPs)
	}
}

// localFS are the filesystem types reported: local storage whose space
// runs out. Memory-backed (tmpfs), network (which can hang statfs and is
// another host's disk) and read-only image filesystems are left out.
var localFS = map[string]bool{
	"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true, "bcachefs": true,
	"zfs": true, "f2fs": true, "jfs": true, "reiserfs": true, "nilfs2": true, "hfsplus": true,
	"vfat": true, "msdos": true, "exfat": true, "ntfs": true, "ntfs3": true, "fuseblk": true,
}

// selectMounts keeps one mount per filesystem: the last mount on a path
// (it hides the ones below), and of several mounts of the same device
// (bind mounts, btrfs subvolumes: statfs gives the same numbers for each)
// the one with the shortest path.
func selectMounts(mounts []mount) []mount {
	byPath := map[string]mount{}
	for _, m := range mounts {
		if !localFS[m.FSType] {
			delete(byPath, m.Path) // a later non-local mount hides it
			continue
		}
		byPath[m.Path] = m
	}
	byDev := map[string]mount{}
	for _, m := range byPath {
		if cur, ok := byDev[m.Dev]; !ok || len(m.Path) < len(cur.Path) ||
			(len(m.Path) == len(cur.Path) && m.Path < cur.Path) {
			byDev[m.Dev] = m
		}
	}
	out := make([]mount, 0, len(byDev))
	for _, m := range byDev {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b mount) int { return strings.Compare(a.Path, b.Path) })
	return out
}

func (c *Collector) filesystems(ctx context.Context, s *sample, warn func(string, ...any)) {
	var sel []mount
	if b, err := c.read("/proc/self/mountinfo"); err != nil {
		warn("mounts: %v", err)
	} else if all, err := parseMountinfo(b); err != nil {
		warn("/proc/self/mountinfo: %v", err)
	} else {
		sel = selectMounts(all)
	}
	paths := []string{"/"}
	for _, m := range sel {
		if m.Path != "/" {
			paths = append(paths, m.Path)
		}
	}
	got := c.statfsAll(ctx, paths, warn)
	if u, ok := got["/"]; ok {
		s.Root = &u
	}
	for _, m := range sel {
		if u, ok := got[m.Path]; ok && u.Total > 0 {
			u.Device, u.Mount = m.Source, m.Path
			s.Filesystems = append(s.Filesystems, u)
		}
	}
}

// statfsAll statfs's the paths at once and gives up on those that do not
// answer within StatfsTimeout. A call that hangs keeps its goroutine until
// the kernel lets go; it then writes into a buffered channel nobody reads
// and ends, and its path is tried again by the next collection.
func (c *Collector) statfsAll(ctx context.Context, paths []string, warn func(string, ...any)) map[string]fsUsage {
	type result struct {
		path string
		st   unix.Statfs_t
		err  error
	}
	results := make(chan result, len(paths))
	var started []string
	for _, p := range paths {
		c.pendingMu.Lock()
		busy := c.statfsPending[p]
		if !busy {
			c.statfsPending[p] = true
		}
		c.pendingMu.Unlock()
		if busy {
			warn("statfs %s: still no answer from an earlier collection (hung filesystem?)", p)
			continue
		}
		started = append(started, p)
		go func() {
			var st unix.Statfs_t
			err := c.opts.Statfs(p, &st)
			c.pendingMu.Lock()
			delete(c.statfsPending, p)
			c.pendingMu.Unlock()
			results <- result{p, st, err}
		}()
	}
	out := make(map[string]fsUsage, len(started))
	timer := time.NewTimer(c.opts.StatfsTimeout)
	defer timer.Stop()
	answered := map[string]bool{}
wait:
	for range len(started) {
		select {
		case r := <-results:
			answered[r.path] = true
			if r.err != nil {
				warn("statfs %s: %v", r.path, r.err)
				continue
			}
			bs := uint64(r.st.Frsize)
			if bs == 0 {
				bs = uint64(r.st.Bsize)
			}
			out[r.path] = fsUsage{
				Total: satMul(r.st.Blocks, bs),
				Free:  satMul(r.st.Bfree, bs),
				Avail: satMul(r.st.Bavail, bs),
			}
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for _, p := range started {
		if !answered[p] {
			warn("statfs %s: no answer within %v (hung filesystem?)", p, c.opts.StatfsTimeout)
		}
	}
	return out
}

// pendingStatfs is how many statfs calls have not returned.
func (c *Collector) pendingStatfs() int {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	return len(c.statfsPending)
}

func systemInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifc := range ifs {
		i := Interface{Name: ifc.Name, Up: ifc.Flags&net.FlagUp != 0, Loopback: ifc.Flags&net.FlagLoopback != 0}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					i.Addrs = append(i.Addrs, ip.Unmap())
				}
			}
		}
		out = append(out, i)
	}
	return out, nil
}

func unameMachine() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		return unix.ByteSliceToString(u.Machine[:])
	}
	return runtime.GOARCH
}
