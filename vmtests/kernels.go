package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// hostKernel is the name of the matrix line that runs on this machine.
const hostKernel = "host"

// Kernel is one line of kernels.txt.
type Kernel struct {
	Name  string
	Suite string // Debian suite; "-" for the host
	Meta  string // metapackage whose linux-image-* dependency is the kernel
	Why   string
}

// Host reports whether the line is the natively run host kernel.
func (k Kernel) Host() bool { return k.Name == hostKernel }

// Pin is what kernels.lock holds for one kernel: the exact packages
// that carry it. Older Debian kernels are one linux-image-* package; sid
// splits the image into linux-binary-* (vmlinuz), linux-modules-* and
// linux-base-* (config), all pinned.
type Pin struct {
	Name string
	Pkgs []PkgPin
}

// PkgPin is one line of kernels.lock.
type PkgPin struct {
	Package string
	Version string
	SHA256  string // of the .deb, as the archive's Packages index lists it
}

// Main is the linux-image-* package that names the kernel.
func (p Pin) Main() PkgPin {
	for _, k := range p.Pkgs {
		if strings.HasPrefix(k.Package, "linux-image-") {
			return k
		}
	}
	if len(p.Pkgs) > 0 {
		return p.Pkgs[0]
	}
	return PkgPin{}
}

func (p Pin) String() string { m := p.Main(); return m.Package + " " + m.Version }

// Equal compares the pinned builds.
func (p Pin) Equal(q Pin) bool {
	if len(p.Pkgs) != len(q.Pkgs) {
		return false
	}
	for i := range p.Pkgs {
		if p.Pkgs[i] != q.Pkgs[i] {
			return false
		}
	}
	return true
}

// Key identifies the build in the cache.
func (p Pin) Key() string {
	m := p.Main()
	return m.Package + "_" + m.Version
}

// Sums is the fingerprint of every pinned .deb, stored with a cache entry.
func (p Pin) Sums() string {
	var b strings.Builder
	for _, k := range p.Pkgs {
		fmt.Fprintf(&b, "%s  %s_%s.deb\n", k.SHA256, k.Package, k.Version)
	}
	return b.String()
}

// parseKernels reads kernels.txt: name, suite, package, then free text.
func parseKernels(r io.Reader) ([]Kernel, error) {
	var ks []Kernel
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("kernels.txt:%d: want name, suite, package and why", n)
		}
		k := Kernel{Name: f[0], Suite: f[1], Meta: f[2], Why: strings.Join(f[3:], " ")}
		if seen[k.Name] {
			return nil, fmt.Errorf("kernels.txt:%d: kernel %q listed twice", n, k.Name)
		}
		if !k.Host() && (k.Suite == "-" || k.Meta == "-") {
			return nil, fmt.Errorf("kernels.txt:%d: kernel %q needs a suite and a package", n, k.Name)
		}
		seen[k.Name] = true
		ks = append(ks, k)
	}
	return ks, sc.Err()
}

// selectKernels keeps the kernels named in the comma-separated list (all
// when it is empty).
func selectKernels(all []Kernel, list string) ([]Kernel, error) {
	if strings.TrimSpace(list) == "" {
		return all, nil
	}
	byName := map[string]Kernel{}
	var names []string
	for _, k := range all {
		byName[k.Name] = k
		names = append(names, k.Name)
	}
	var out []Kernel
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		k, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("unknown kernel %q (kernels.txt has %s)", n, strings.Join(names, ", "))
		}
		out = append(out, k)
	}
	return out, nil
}

// parseLock reads kernels.lock: name, package, version, sha256; a kernel
// made of several packages has several lines.
func parseLock(r io.Reader) (map[string]Pin, error) {
	pins := map[string]Pin{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 || len(f[3]) != 64 {
			return nil, fmt.Errorf("kernels.lock:%d: want name, package, version and a sha256", n)
		}
		p := pins[f[0]]
		p.Name = f[0]
		p.Pkgs = append(p.Pkgs, PkgPin{Package: f[1], Version: f[2], SHA256: f[3]})
		pins[f[0]] = p
	}
	return pins, sc.Err()
}

const lockHeader = `# Pinned kernels of the matrix (vmtests/kernels.txt): name, Debian
# package, version, SHA-256 of the .deb. Written by the runner when a pin
# is missing or has left the archive, or with -update; commit the change.
`

func writeLock(w io.Writer, pins map[string]Pin, order []Kernel) error {
	if _, err := io.WriteString(w, lockHeader); err != nil {
		return err
	}
	done := map[string]bool{}
	var names []string
	for _, k := range order {
		names = append(names, k.Name)
	}
	// Pins of lines no longer in kernels.txt are dropped; the rest keep
	// the order of kernels.txt.
	for _, n := range names {
		p, ok := pins[n]
		if !ok || done[n] {
			continue
		}
		done[n] = true
		for _, k := range p.Pkgs {
			if _, err := fmt.Fprintf(w, "%-8s %-40s %-20s %s\n", p.Name, k.Package, k.Version, k.SHA256); err != nil {
				return err
			}
		}
	}
	return nil
}

func saveLock(path string, pins map[string]Pin, order []Kernel) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := writeLock(f, pins, order); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
