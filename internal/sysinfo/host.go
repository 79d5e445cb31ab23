package sysinfo

import (
	"bytes"
	"errors"
	"github.com/nannyagent/nannyagent/internal/procfmt"
	"io/fs"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// host fills the identity of the machine: the lines every prompt starts
// with.
func (c *collector) host(f *Facts) {
	if b, err := c.read("/proc/sys/kernel/hostname"); err == nil {
		f.Hostname = strings.TrimSpace(string(b))
	} else {
		c.warn("hostname: %v", err)
	}
	f.Distro = c.distro()
	if b, err := c.read("/proc/sys/kernel/osrelease"); err == nil {
		f.Kernel = strings.TrimSpace(string(b))
	} else {
		c.warn("kernel release: %v", err)
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		f.Arch = unix.ByteSliceToString(u.Machine[:])
	} else {
		f.Arch = runtime.GOARCH
	}
	f.CPUs = runtime.NumCPU()
	if b, err := c.read("/sys/devices/system/cpu/online"); err == nil {
		if n, err := procfmt.CPUListCount(string(b)); err == nil {
			f.CPUs = n
		} else {
			c.warn("online CPUs: %v", err)
		}
	} else {
		c.warn("online CPUs: %v (using the CPUs this process may run on)", err)
	}
	if b, err := c.read("/proc/uptime"); err == nil {
		if s, err := parseSeconds(b); err == nil {
			f.Uptime = time.Duration(s * float64(time.Second)).Truncate(time.Second)
		} else {
			c.warn("/proc/uptime: %v", err)
		}
	} else {
		c.warn("uptime: %v", err)
	}
	if b, err := c.read("/proc/loadavg"); err == nil {
		if l, err := parseLoadavg(b); err == nil {
			f.Load = l
		} else {
			c.warn("/proc/loadavg: %v", err)
		}
	} else {
		c.warn("load average: %v", err)
	}
	f.Virtualization = c.virtualization()
	if b, err := c.read("/proc/1/comm"); err == nil {
		f.InitSystem = strings.TrimSpace(string(b))
	} else {
		c.warn("PID 1: %v", err)
	}
	f.Addresses = privateAddresses()
}

func (c *collector) distro() string {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := c.read(p)
		if err == nil {
			return parseOSRelease(b)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			c.warn("%s: %v", p, err)
		}
	}
	c.warn("no os-release")
	return ""
}

// virtualization names the container or hypervisor from the marks each
// leaves (the same sources systemd-detect-virt reads first), or "" when
// none is found.
func (c *collector) virtualization() string {
	if b, err := c.read("/run/systemd/container"); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s
		}
	}
	if b, err := c.read("/proc/1/environ"); err == nil {
		for kv := range bytes.SplitSeq(b, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("container=")); ok && len(v) > 0 {
				return string(v)
			}
		}
	}
	if _, err := os.Stat(c.path("/.dockerenv")); err == nil {
		return "docker"
	}
	if _, err := os.Stat(c.path("/run/.containerenv")); err == nil {
		return "podman"
	}
	dmi := func(name string) string {
		b, _ := c.read("/sys/class/dmi/id/" + name)
		return strings.TrimSpace(string(b))
	}
	vendor := dmi("sys_vendor") + " " + dmi("product_name") + " " + dmi("bios_vendor")
	for _, v := range []struct{ mark, name string }{
		{"KVM", "kvm"}, {"QEMU", "qemu"}, {"VMware", "vmware"}, {"VirtualBox", "oracle"},
		{"innotek", "oracle"}, {"Xen", "xen"}, {"Microsoft Corporation", "microsoft"},
		{"Amazon EC2", "amazon"}, {"Google Compute Engine", "google"}, {"Parallels", "parallels"},
		{"Bochs", "bochs"}, {"Firecracker", "firecracker"},
	} {
		if strings.Contains(vendor, v.mark) {
			return v.name
		}
	}
	if b, err := c.read("/sys/hypervisor/type"); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s
		}
	}
	// A guest without DMI (microVMs) still has the CPUID hypervisor bit,
	// which x86 kernels show as a cpuinfo flag.
	if b, err := c.read("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(b) {
			if bytes.HasPrefix(line, []byte("flags")) {
				for _, f := range strings.Fields(string(line)) {
					if f == "hypervisor" {
						return "vm"
					}
				}
				break
			}
		}
	}
	return ""
}

// privateAddresses lists the RFC 1918 / ULA addresses of the interfaces
// that are up, as "10.0.0.5 (eth0)".
func privateAddresses() []string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []string
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsPrivate() {
				out = append(out, n.IP.String()+" ("+iface.Name+")")
			}
		}
	}
	sort.Strings(out)
	return out
}

func (c *collector) memory() Memory {
	var m Memory
	b, err := c.read("/proc/meminfo")
	if err != nil {
		c.warn("memory: %v", err)
		return m
	}
	kv := parseKeyValues(b)
	m.TotalBytes = kv["MemTotal"]
	m.AvailableBytes = kv["MemAvailable"]
	m.SwapTotalBytes = kv["SwapTotal"]
	m.SwapFreeBytes = kv["SwapFree"]
	if m.TotalBytes == 0 {
		c.warn("/proc/meminfo has no MemTotal")
	}
	return m
}

// psi returns nil where the kernel has no pressure stall information
// (before 4.20, or booted with psi=0: then the files exist but reading
// them fails with EOPNOTSUPP).
func (c *collector) psi() *PSI {
	var p PSI
	for _, r := range []struct {
		name string
		dst  *Pressure
	}{{"cpu", &p.CPU}, {"memory", &p.Memory}, {"io", &p.IO}} {
		b, err := c.read("/proc/pressure/" + r.name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.EOPNOTSUPP) {
				c.warn("pressure %s: %v", r.name, err)
			}
			return nil
		}
		pr, err := parsePressure(b)
		if err != nil {
			c.warn("/proc/pressure/%s: %v", r.name, err)
			return nil
		}
		*r.dst = pr
	}
	return &p
}

func (c *collector) limits() Limits {
	var l Limits
	if b, err := c.read("/proc/sys/fs/file-nr"); err == nil {
		var max uint64
		if l.FileHandles, max, err = parseFileNr(b); err != nil {
			c.warn("/proc/sys/fs/file-nr: %v", err)
		}
		l.FileHandlesMax = max
	} else {
		c.warn("file handles: %v", err)
	}
	for _, s := range []struct {
		path string
		dst  *uint64
	}{
		{"/proc/sys/fs/file-max", &l.FileHandlesMax},
		{"/proc/sys/kernel/pid_max", &l.PIDMax},
		{"/proc/sys/kernel/threads-max", &l.ThreadsMax},
	} {
		b, err := c.read(s.path)
		if err != nil {
			c.warn("%s: %v", s.path, err)
			continue
		}
		v, err := parseUint(b)
		if err != nil {
			c.warn("%s: %v", s.path, err)
			continue
		}
		*s.dst = v
	}
	return l
}

// interfaces reads each interface's state and error counters from sysfs.
func (c *collector) interfaces() []Interface {
	const maxInterfaces = 128
	dir := c.path("/sys/class/net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		c.warn("network interfaces: %v", err)
		return nil
	}
	var out []Interface
	for _, e := range entries {
		name := e.Name()
		if name == "lo" {
			continue
		}
		if len(out) == maxInterfaces {
			c.warn("more than %d network interfaces; the rest are left out", maxInterfaces)
			break
		}
		iface := Interface{Name: name}
		if b, err := c.read("/sys/class/net/" + name + "/operstate"); err == nil {
			iface.Up = strings.TrimSpace(string(b)) == "up"
		}
		for _, s := range []struct {
			file string
			dst  *uint64
		}{
			{"rx_errors", &iface.RxErrors}, {"tx_errors", &iface.TxErrors},
			{"rx_dropped", &iface.RxDropped}, {"tx_dropped", &iface.TxDropped},
		} {
			if b, err := c.read("/sys/class/net/" + name + "/statistics/" + s.file); err == nil {
				*s.dst, _ = parseUint(b)
			}
		}
		out = append(out, iface)
	}
	return out
}
