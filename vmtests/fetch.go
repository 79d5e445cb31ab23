package main

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// keptModules are the modules (with their dependencies) copied out of a
// kernel package when it does not build them in: the loop driver for
// biolatency and the guest's scratch file system, ext4 (which mounts ext2)
// for that file system on the generic kernel, and crc32c_generic, which
// ext4 asks the crypto API for at mount time (no modprobe in the guest to
// load it on demand).
var keptModules = []string{"loop", "crc32c_generic", "ext4"}

// Cached is a kernel unpacked into the cache.
type Cached struct {
	Dir     string
	Vmlinuz string
	Release string            // uname -r of the kernel
	Modules map[string]string // "<release>/<name>.ko" -> path
	Config  string            // the kernel's build configuration
}

// cacheDir is keyed by package and version, so a second run with the same
// pin downloads nothing.
func cacheDir(cache string, p Pin) string {
	return filepath.Join(cache, "kernels", p.Key())
}

// loadCached returns the cached kernel of pin p, or nil when the cache
// lacks it or holds another build (different .deb hash).
func loadCached(cache string, p Pin) *Cached {
	dir := cacheDir(cache, p)
	sum, err := os.ReadFile(filepath.Join(dir, "debs.sha256"))
	if err != nil || string(sum) != p.Sums() {
		return nil
	}
	rel, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		return nil
	}
	c := &Cached{Dir: dir, Vmlinuz: filepath.Join(dir, "vmlinuz"), Release: strings.TrimSpace(string(rel)),
		Modules: map[string]string{}, Config: filepath.Join(dir, "config")}
	if _, err := os.Stat(c.Vmlinuz); err != nil {
		return nil
	}
	if want, err := os.ReadFile(filepath.Join(dir, "modules", "wanted")); err != nil || string(want) != strings.Join(keptModules, " ") {
		return nil // cached before keptModules changed
	}
	mods, _ := filepath.Glob(filepath.Join(dir, "modules", "*"))
	for _, m := range mods {
		if filepath.Base(m) != "wanted" {
			c.Modules[c.Release+"/"+filepath.Base(m)] = m
		}
	}
	return c
}

// apt runs apt-get and apt-cache on a private configuration in a
// temporary directory: its own sources list, lists, cache and an empty
// dpkg status. The system's apt configuration is never touched.
type apt struct {
	dir     string
	suites  []string
	updated bool
	log     io.Writer
}

func archiveURL(suite string) string {
	if strings.HasSuffix(suite, "-security") {
		return "http://deb.debian.org/debian-security"
	}
	return "http://deb.debian.org/debian"
}

func newApt(suites []string, log io.Writer) (*apt, error) {
	dir, err := os.MkdirTemp("", "vmtest-apt-")
	if err != nil {
		return nil, err
	}
	var src strings.Builder
	for _, s := range suites {
		fmt.Fprintf(&src, "deb %s %s main\n", archiveURL(s), s)
	}
	for _, d := range []string{"lists/partial", "cache/archives/partial", "parts", "prefs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "sources.list"), []byte(src.String()), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), nil, 0o644); err != nil {
		return nil, err
	}
	return &apt{dir: dir, suites: suites, log: log}, nil
}

func (a *apt) close() { os.RemoveAll(a.dir) }

func (a *apt) opts() []string {
	o := func(kv string) []string { return []string{"-o", kv} }
	var args []string
	for _, kv := range []string{
		"Dir::Etc::sourcelist=" + filepath.Join(a.dir, "sources.list"),
		"Dir::Etc::sourceparts=" + filepath.Join(a.dir, "parts"),
		"Dir::Etc::preferences=" + filepath.Join(a.dir, "prefs", "none"),
		"Dir::Etc::preferencesparts=" + filepath.Join(a.dir, "prefs"),
		"Dir::State::Lists=" + filepath.Join(a.dir, "lists"),
		"Dir::State::status=" + filepath.Join(a.dir, "status"),
		"Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"APT::Architecture=amd64",
		"APT::Architectures=amd64",
		"APT::Sandbox::User=root",
		"Acquire::Languages=none",
	} {
		args = append(args, o(kv)...)
	}
	return args
}

func (a *apt) run(dir, tool string, args ...string) (string, error) {
	cmd := exec.Command(tool, append(a.opts(), args...)...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (a *apt) update() error {
	if a.updated {
		return nil
	}
	fmt.Fprintf(a.log, "apt: reading the package lists of %s (private configuration in %s)\n", strings.Join(a.suites, ", "), a.dir)
	if _, err := a.run("", "apt-get", "-q", "update"); err != nil {
		return err
	}
	a.updated = true
	return nil
}

// versionIn returns the version of pkg that suite carries ("" if none).
func (a *apt) versionIn(pkg, suite string) (string, error) {
	out, err := a.run("", "apt-cache", "madison", pkg)
	if err != nil {
		return "", err
	}
	return madisonVersion(out, suite), nil
}

// madisonVersion picks suite's version from `apt-cache madison` output
// ("pkg | version | url suite/component arch Packages"), newest first.
func madisonVersion(out, suite string) string {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			continue
		}
		src := strings.Fields(f[2])
		if len(src) >= 2 && strings.SplitN(src[1], "/", 2)[0] == suite {
			return strings.TrimSpace(f[1])
		}
	}
	return ""
}

// show returns the fields of pkg=version in the package index.
func (a *apt) show(pkg, version string) (map[string]string, error) {
	out, err := a.run("", "apt-cache", "show", pkg+"="+version)
	if err != nil {
		return nil, err
	}
	return controlFields(out), nil
}

// controlFields parses the first stanza of a Debian control file.
func controlFields(s string) map[string]string {
	fields := map[string]string{}
	key := ""
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			if len(fields) > 0 {
				break
			}
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && key != "" {
			fields[key] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key = k
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}

// exactDeps lists the dependencies pinned to one version ("pkg (= v)")
// whose names start with one of prefixes.
func exactDeps(depends string, prefixes ...string) []PkgPin {
	var out []PkgPin
	for _, d := range strings.Split(depends, ",") {
		d = strings.TrimSpace(strings.Split(d, "|")[0])
		name, rest, _ := strings.Cut(d, " ")
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, "(=") || !strings.HasSuffix(rest, ")") {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				out = append(out, PkgPin{Package: name, Version: strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(rest, "(="), ")"))})
				break
			}
		}
	}
	return out
}

// newest resolves the newest kernel of k's line in its suite.
func (a *apt) newest(k Kernel) (Pin, error) {
	if err := a.update(); err != nil {
		return Pin{}, err
	}
	mv, err := a.versionIn(k.Meta, k.Suite)
	if err != nil {
		return Pin{}, err
	}
	if mv == "" {
		return Pin{}, fmt.Errorf("kernel %s: %s is not in %s any more; edit vmtests/kernels.txt", k.Name, k.Meta, k.Suite)
	}
	meta, err := a.show(k.Meta, mv)
	if err != nil {
		return Pin{}, err
	}
	images := exactDeps(meta["Depends"], "linux-image-")
	if len(images) != 1 {
		return Pin{}, fmt.Errorf("kernel %s: %s %s does not depend on exactly one linux-image-* package (%q)", k.Name, k.Meta, mv, meta["Depends"])
	}
	pin := Pin{Name: k.Name}
	for i := 0; i < len(images); i++ {
		fields, err := a.show(images[i].Package, images[i].Version)
		if err != nil {
			return Pin{}, err
		}
		if len(fields["SHA256"]) != 64 {
			return Pin{}, fmt.Errorf("kernel %s: no SHA256 for %s in the index", k.Name, images[i].Package)
		}
		images[i].SHA256 = fields["SHA256"]
		pin.Pkgs = append(pin.Pkgs, images[i])
		if i == 0 {
			// Split packaging (sid): the image is a shell around the
			// binary, the modules and the base (config) of one build.
			images = append(images, exactDeps(fields["Depends"], "linux-binary-", "linux-modules-", "linux-base-")...)
		}
	}
	return pin, nil
}

// available reports whether the archive still carries the pinned build.
func (a *apt) available(k Kernel, p Pin) (bool, error) {
	if err := a.update(); err != nil {
		return false, err
	}
	for _, pkg := range p.Pkgs {
		v, err := a.versionIn(pkg.Package, k.Suite)
		if err != nil && !strings.Contains(err.Error(), "Unable to locate") {
			return false, err
		}
		if v != pkg.Version {
			return false, nil
		}
	}
	return len(p.Pkgs) > 0, nil
}

// fetch downloads the pinned .debs, checks their hashes against the pin
// and unpacks the kernel into the cache.
func (a *apt) fetch(cache string, p Pin) (*Cached, error) {
	tmp, err := os.MkdirTemp("", "vmtest-deb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	for i, pkg := range p.Pkgs {
		dl := filepath.Join(tmp, fmt.Sprint(i))
		if err := os.Mkdir(dl, 0o755); err != nil {
			return nil, err
		}
		fmt.Fprintf(a.log, "apt: downloading %s %s\n", pkg.Package, pkg.Version)
		if _, err := a.run(dl, "apt-get", "-q", "download", pkg.Package+"="+pkg.Version); err != nil {
			return nil, err
		}
		debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
		if len(debs) != 1 {
			return nil, fmt.Errorf("apt-get download %s left %d .deb files", pkg.Package, len(debs))
		}
		sum, err := fileSHA256(debs[0])
		if err != nil {
			return nil, err
		}
		if sum != pkg.SHA256 {
			return nil, fmt.Errorf("%s %s: the .deb's SHA-256 is %s, kernels.lock pins %s", pkg.Package, pkg.Version, sum, pkg.SHA256)
		}
		if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg-deb -x %s: %w: %s", debs[0], err, out)
		}
		_ = os.Remove(debs[0])
	}
	return storeKernel(cache, p, root)
}

// kernelFiles finds the image, config and module tree in an unpacked
// package: boot/vmlinuz-<release> and lib/modules/<release> in the
// classic layout, usr/lib/modules/<release>/{vmlinuz,config} in the
// split one.
func kernelFiles(root string) (image, config, modules, release string, err error) {
	if m, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*")); len(m) == 1 {
		release = strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-")
		image, config = m[0], filepath.Join(root, "boot", "config-"+release)
		modules = filepath.Join(root, "lib", "modules", release)
		if _, err := os.Stat(modules); err != nil {
			modules = filepath.Join(root, "usr", "lib", "modules", release)
		}
		return image, config, modules, release, nil
	}
	for _, lib := range []string{"usr/lib/modules", "lib/modules"} {
		if m, _ := filepath.Glob(filepath.Join(root, lib, "*", "vmlinuz")); len(m) == 1 {
			modules = filepath.Dir(m[0])
			return m[0], filepath.Join(modules, "config"), modules, filepath.Base(modules), nil
		}
	}
	return "", "", "", "", errors.New("no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in the packages")
}

// storeKernel keeps the vmlinuz, the config and keptModules of an
// unpacked package, then marks the cache entry complete with the hash.
func storeKernel(cache string, p Pin, root string) (*Cached, error) {
	image, config, modules, release, err := kernelFiles(root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	dir := cacheDir(cache, p)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return nil, err
	}
	if err := copyFile(image, filepath.Join(dir, "vmlinuz")); err != nil {
		return nil, err
	}
	if err := copyFile(config, filepath.Join(dir, "config")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := storeModules(modules, filepath.Join(dir, "modules")); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), []byte(release+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "debs.sha256"), []byte(p.Sums()), 0o644); err != nil {
		return nil, err
	}
	c := loadCached(cache, p)
	if c == nil {
		return nil, fmt.Errorf("cache entry %s is incomplete", dir)
	}
	return c, nil
}

// storeModules copies keptModules and what they depend on from the
// package's module tree into dst as plain .ko files, and writes dst/order,
// the insmod order (dependencies first). A module the kernel builds in is
// absent from the tree, which is fine. Debian packages ship no
// modules.dep, so modinfo reads each module's dependencies.
func storeModules(tree, dst string) error {
	index := map[string]string{}
	_ = filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			name := filepath.Base(p)
			if i := strings.Index(name, ".ko"); i > 0 {
				index[strings.ReplaceAll(name[:i], "-", "_")] = p
			}
		}
		return nil
	})
	var order []string
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		name = strings.ReplaceAll(name, "-", "_")
		if seen[name] {
			return nil
		}
		seen[name] = true
		src, ok := index[name]
		if !ok {
			return nil
		}
		out := filepath.Join(dst, name+".ko")
		if err := plainModule(src, out); err != nil {
			return err
		}
		deps, err := moduleDepends(out)
		if err != nil {
			return err
		}
		for _, d := range strings.Split(deps, ",") {
			if d = strings.TrimSpace(d); d != "" {
				if err := visit(d); err != nil {
					return err
				}
			}
		}
		order = append(order, name)
		return nil
	}
	for _, m := range keptModules {
		if err := visit(m); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dst, "order"), []byte(strings.Join(order, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dst, "wanted"), []byte(strings.Join(keptModules, " ")), 0o644)
}

// moduleDepends reads "depends=" from a module's .modinfo section (a list
// of NUL-terminated key=value strings).
func moduleDepends(ko string) (string, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return "", fmt.Errorf("module %s: %w", ko, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return "", nil
	}
	data, err := sec.Data()
	if err != nil {
		return "", fmt.Errorf("module %s: %w", ko, err)
	}
	for _, kv := range strings.Split(string(data), "\x00") {
		if v, ok := strings.CutPrefix(kv, "depends="); ok {
			return v, nil
		}
	}
	return "", nil
}

// plainModule copies a module, decompressing .ko.xz/.ko.zst/.ko.gz on the
// host (busybox insmod loads plain modules only).
func plainModule(src, dst string) error {
	for ext, cmd := range map[string][]string{".xz": {"xz", "-dc"}, ".zst": {"zstd", "-dcq"}, ".gz": {"gzip", "-dc"}} {
		if strings.HasSuffix(src, ".ko"+ext) {
			out, err := exec.Command(cmd[0], append(cmd[1:], src)...).Output()
			if err != nil {
				return fmt.Errorf("%s %s: %w", strings.Join(cmd, " "), src, err)
			}
			return os.WriteFile(dst, out, 0o644)
		}
	}
	return copyFile(src, dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReader(f)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// resolveKernels makes sure every selected guest kernel is pinned and
// cached. It touches the network only for what the cache lacks; a pin
// that has left the archive is replaced by the newest build of the same
// line, and the lock file is rewritten with what changed printed.
func resolveKernels(kernels, all []Kernel, lockPath, cache string, update bool, log io.Writer) (map[string]*Cached, error) {
	pins := map[string]Pin{}
	if f, err := os.Open(lockPath); err == nil {
		pins, err = parseLock(f)
		f.Close()
		if err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var a *apt
	getApt := func() (*apt, error) {
		if a != nil {
			return a, nil
		}
		var suites []string
		seen := map[string]bool{}
		for _, k := range kernels {
			if !k.Host() && !seen[k.Suite] {
				seen[k.Suite] = true
				suites = append(suites, k.Suite)
			}
		}
		var err error
		a, err = newApt(suites, log)
		return a, err
	}
	defer func() {
		if a != nil {
			a.close()
		}
	}()
	out := map[string]*Cached{}
	changed := false
	for _, k := range kernels {
		if k.Host() {
			continue
		}
		pin, pinned := pins[k.Name]
		if pinned && !update {
			if c := loadCached(cache, pin); c != nil {
				out[k.Name] = c
				continue
			}
		}
		a, err := getApt()
		if err != nil {
			return nil, err
		}
		use := pin
		ok := false
		if pinned && !update {
			if ok, err = a.available(k, pin); err != nil {
				return nil, err
			}
		}
		if !ok {
			newest, err := a.newest(k)
			if err != nil {
				return nil, err
			}
			switch {
			case !pinned:
				fmt.Fprintf(log, "kernel %s: not pinned yet; pinning %s\n", k.Name, newest)
			case !newest.Equal(pin) && update:
				fmt.Fprintf(log, "kernel %s: updating the pin %s -> %s\n", k.Name, pin, newest)
			case !newest.Equal(pin):
				fmt.Fprintf(log, "kernel %s: the pinned %s has left the %s archive; using the newest of the line, %s (sha256 %s -> %s)\n",
					k.Name, pin, k.Suite, newest, pin.Main().SHA256[:12], newest.Main().SHA256[:12])
			}
			if !newest.Equal(pin) {
				changed = true
			}
			use = newest
		}
		c := loadCached(cache, use)
		if c == nil {
			if c, err = a.fetch(cache, use); err != nil {
				return nil, err
			}
		}
		pins[k.Name] = use
		out[k.Name] = c
	}
	if changed {
		if err := saveLock(lockPath, pins, all); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "kernels.lock updated: commit vmtests/kernels.lock\n")
	}
	return out, nil
}
