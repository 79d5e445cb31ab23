package main

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed init.sh
var initScript []byte

// cpioWriter writes the "newc" cpio format the kernel unpacks into its
// initramfs. Directories must come before their contents; the writer
// adds missing parents itself.
type cpioWriter struct {
	w    *bufio.Writer
	off  int64
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCpio(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{"": true, ".": true, "/": true}}
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) header(name string, mode uint32, size int64, rdevMajor, rdevMinor uint32) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	c.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write(append([]byte(name), 0))
	c.pad()
}

func (c *cpioWriter) parents(name string) {
	dir := path.Dir(strings.TrimPrefix(path.Clean("/"+name), "/"))
	if c.dirs[dir] {
		return
	}
	c.parents(dir)
	c.header(dir, modeDir|0o755, 0, 0, 0)
	c.dirs[dir] = true
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if c.dirs[name] {
		return
	}
	c.parents(name)
	c.header(name, modeDir|perm, 0, 0, 0)
	c.dirs[name] = true
}

// Bytes adds a regular file with the given content.
func (c *cpioWriter) Bytes(name string, perm uint32, data []byte) {
	c.parents(name)
	c.header(name, modeFile|perm, int64(len(data)), 0, 0)
	c.write(data)
	c.pad()
}

// File adds a copy of the host file src (following symlinks).
func (c *cpioWriter) File(name, src string, perm uint32) {
	if c.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		c.err = err
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		c.err = err
		return
	}
	c.parents(name)
	c.header(name, modeFile|perm, st.Size(), 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, f)
	c.off += n
	if err == nil && n != st.Size() {
		err = fmt.Errorf("%s changed while it was copied", src)
	}
	c.err = err
	c.pad()
}

// Symlink adds a symbolic link.
func (c *cpioWriter) Symlink(name, target string) {
	c.parents(name)
	c.header(name, modeSymlink|0o777, int64(len(target)), 0, 0)
	c.write([]byte(target))
	c.pad()
}

// CharDev adds a character device node (the kernel needs /dev/console
// before the init mounts devtmpfs).
func (c *cpioWriter) CharDev(name string, major, minor uint32) {
	c.parents(name)
	c.header(name, modeChar|0o600, 0, major, minor)
}

// Close writes the trailer and flushes.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

// hostTools are dynamic host binaries the tests copy or run under their
// own names (a busybox applet renamed by a test would not know what to
// be): /bin/sh is read by the exit and signals tests, true by exec,
// getent by dns (it exercises glibc's resolver, which the dns entry
// probes with uprobes).
var hostTools = map[string]string{
	"/bin/sh":     "dash",
	"/bin/true":   "true",
	"/bin/getent": "getent",
}

var etcFiles = map[string]string{
	"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
	"etc/group":         "root:x:0:\nnogroup:x:65534:\n",
	"etc/hosts":         "127.0.0.1 localhost vmtest\n::1 ip6-localhost ip6-loopback\n",
	"etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}

// Rootfs describes what goes into the guest's initramfs.
type Rootfs struct {
	Busybox  string            // static busybox
	Agent    string            // static nannyagent binary
	TestBins map[string]string // name in /vmtest/bin -> host path
	Modules  map[string]string // "<release>/<name>.ko" -> host path
	Plan     []byte
}

// build writes the initramfs to out.
func (r Rootfs) build(out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	c := newCpio(f)
	c.Dir("tmp", 0o1777)
	for _, d := range []string{"dev", "proc", "sys", "run", "root", "sbin", "usr/bin", "sys/fs/cgroup", "sys/fs/bpf", "sys/kernel/tracing", "sys/kernel/debug"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 5, 1)
	c.Bytes("init", 0o755, initScript)
	c.File("bin/busybox", r.Busybox, 0o755)
	applets, err := busyboxApplets(r.Busybox)
	if err != nil {
		f.Close()
		return err
	}
	for _, a := range applets {
		if _, taken := hostTools["/bin/"+a]; !taken && a != "busybox" {
			c.Symlink("bin/"+a, "busybox")
		}
	}
	libs := map[string]bool{}
	for _, dst := range sortedKeys(hostTools) {
		src, err := exec.LookPath(hostTools[dst])
		if err != nil {
			f.Close()
			return fmt.Errorf("host tool %s: %w", hostTools[dst], err)
		}
		c.File(dst, src, 0o755)
		deps, err := sharedLibs(src)
		if err != nil {
			f.Close()
			return err
		}
		for _, l := range deps {
			libs[l] = true
		}
	}
	for _, l := range sortedKeys(libs) {
		c.File(l, l, 0o755)
	}
	for _, name := range sortedKeys(etcFiles) {
		c.Bytes(name, 0o644, []byte(etcFiles[name]))
	}
	c.File("vmtest/nannyagent", r.Agent, 0o755)
	for _, name := range sortedKeys(r.TestBins) {
		c.File("vmtest/bin/"+name, r.TestBins[name], 0o755)
	}
	for _, name := range sortedKeys(r.Modules) {
		c.File("vmtest/modules/"+name, r.Modules[name], 0o644)
	}
	c.Bytes("vmtest/plan", 0o644, r.Plan)
	if err := c.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func busyboxApplets(bb string) ([]string, error) {
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w (apt-get install busybox-static)", bb, err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	return applets, nil
}

// sharedLibs lists the libraries (and the dynamic loader) a host binary
// loads, as ldd resolves them.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	return parseLdd(string(out)), nil
}

func parseLdd(out string) []string {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && filepath.IsAbs(f[2]):
			libs = append(libs, f[2])
		case len(f) >= 1 && filepath.IsAbs(f[0]):
			libs = append(libs, f[0]) // the loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
		}
	}
	return libs
}
