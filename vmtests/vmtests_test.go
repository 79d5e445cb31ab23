package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKernelsFileParses(t *testing.T) {
	f, err := os.Open("kernels.txt")
	require.NoError(t, err)
	defer f.Close()
	ks, err := parseKernels(f)
	require.NoError(t, err)
	var names []string
	for _, k := range ks {
		names = append(names, k.Name)
		assert.NotEmpty(t, k.Why, k.Name)
	}
	assert.Equal(t, []string{"5.10", "6.1", "6.12", "7.x", "generic", "host"}, names)

	sel, err := selectKernels(ks, "6.1, host")
	require.NoError(t, err)
	require.Len(t, sel, 2)
	assert.True(t, sel[1].Host())
	_, err = selectKernels(ks, "4.19")
	assert.ErrorContains(t, err, `unknown kernel "4.19"`)

	_, err = parseKernels(strings.NewReader("a bookworm linux-image-amd64 x\na sid linux-image-amd64 y\n"))
	assert.ErrorContains(t, err, "listed twice")
	_, err = parseKernels(strings.NewReader("a - - x\n"))
	assert.ErrorContains(t, err, "needs a suite")
}

func TestLockRoundTrip(t *testing.T) {
	sum := func(c byte) string { return strings.Repeat(string(c), 64) }
	pins := map[string]Pin{
		"6.1": {Name: "6.1", Pkgs: []PkgPin{{"linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", sum('a')}}},
		"7.x": {Name: "7.x", Pkgs: []PkgPin{
			{"linux-image-7.2.13+deb14-cloud-amd64", "7.2.13-1", sum('b')},
			{"linux-binary-7.2.13+deb14-cloud-amd64", "7.2.13-1", sum('c')},
		}},
		"gone": {Name: "gone", Pkgs: []PkgPin{{"linux-image-x", "1", sum('d')}}},
	}
	var buf bytes.Buffer
	require.NoError(t, writeLock(&buf, pins, []Kernel{{Name: "6.1"}, {Name: "7.x"}, {Name: "host"}}))
	back, err := parseLock(&buf)
	require.NoError(t, err)
	assert.Len(t, back, 2, "pins of kernels no longer listed are dropped")
	assert.True(t, back["7.x"].Equal(pins["7.x"]))
	assert.Equal(t, "linux-image-7.2.13+deb14-cloud-amd64 7.2.13-1", back["7.x"].String())
	assert.Equal(t, "linux-image-7.2.13+deb14-cloud-amd64_7.2.13-1", back["7.x"].Key())
	assert.False(t, back["6.1"].Equal(back["7.x"]))

	_, err = parseLock(strings.NewReader("6.1 pkg 1 abc\n"))
	assert.ErrorContains(t, err, "sha256")
}

func TestArchiveQueries(t *testing.T) {
	madison := ` linux-image-cloud-amd64 |   7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages
linux-image-cloud-amd64 | 6.1.192-2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-cloud-amd64 | 6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages
`
	assert.Equal(t, "6.1.176-1", madisonVersion(madison, "bookworm"))
	assert.Equal(t, "6.1.192-2", madisonVersion(madison, "bookworm-security"))
	assert.Equal(t, "", madisonVersion(madison, "trixie"))

	f := controlFields("Package: linux-image-7.2.13+deb14-cloud-amd64\nVersion: 7.2.13-1\nDepends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-cloud-amd64 (= 7.2.13-1),\n linux-binary-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-cloud-amd64 (= 7.2.13-1)\nSHA256: 00\n\nPackage: other\n")
	assert.Equal(t, "00", f["SHA256"])
	deps := exactDeps(f["Depends"], "linux-binary-", "linux-modules-", "linux-base-")
	require.Len(t, deps, 3)
	assert.Equal(t, PkgPin{Package: "linux-base-7.2.13+deb14-cloud-amd64", Version: "7.2.13-1"}, deps[0])
	assert.Empty(t, exactDeps("linux-image-6.1.0-50-cloud-amd64 (>= 1)", "linux-image-"))

	assert.Equal(t, "http://deb.debian.org/debian-security", archiveURL("bullseye-security"))
	assert.Equal(t, "http://deb.debian.org/debian", archiveURL("sid"))
}

func TestKernelFilesLayouts(t *testing.T) {
	classic := t.TempDir()
	writeFiles(t, classic, "boot/vmlinuz-6.1.0-50-cloud-amd64", "boot/config-6.1.0-50-cloud-amd64",
		"lib/modules/6.1.0-50-cloud-amd64/kernel/drivers/block/loop.ko")
	img, cfg, mods, rel, err := kernelFiles(classic)
	require.NoError(t, err)
	assert.Equal(t, "6.1.0-50-cloud-amd64", rel)
	assert.Equal(t, filepath.Join(classic, "boot/vmlinuz-6.1.0-50-cloud-amd64"), img)
	assert.Equal(t, filepath.Join(classic, "boot/config-6.1.0-50-cloud-amd64"), cfg)
	assert.Equal(t, filepath.Join(classic, "lib/modules/6.1.0-50-cloud-amd64"), mods)

	split := t.TempDir()
	writeFiles(t, split, "usr/lib/modules/7.2.13+deb14-cloud-amd64/vmlinuz", "usr/lib/modules/7.2.13+deb14-cloud-amd64/config")
	img, _, mods, rel, err = kernelFiles(split)
	require.NoError(t, err)
	assert.Equal(t, "7.2.13+deb14-cloud-amd64", rel)
	assert.Equal(t, filepath.Join(mods, "vmlinuz"), img)

	_, _, _, _, err = kernelFiles(t.TempDir())
	assert.Error(t, err)
}

// A second resolve of a cached pin must not need the archive.
func TestCachedPinNeedsNoNetwork(t *testing.T) {
	cache, root := t.TempDir(), t.TempDir()
	writeFiles(t, root, "boot/vmlinuz-6.1.0-50-cloud-amd64", "boot/config-6.1.0-50-cloud-amd64")
	pin := Pin{Name: "6.1", Pkgs: []PkgPin{{"linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", strings.Repeat("a", 64)}}}
	c, err := storeKernel(cache, pin, root)
	require.NoError(t, err)
	// No module in the tree: built in, nothing to load.
	assert.Equal(t, map[string]string{"6.1.0-50-cloud-amd64/order": filepath.Join(c.Dir, "modules", "order")}, c.Modules)

	lock := filepath.Join(t.TempDir(), "kernels.lock")
	ks := []Kernel{{Name: "6.1", Suite: "bookworm", Meta: "linux-image-cloud-amd64"}, {Name: "host"}}
	require.NoError(t, saveLock(lock, map[string]Pin{"6.1": pin}, ks))
	var log bytes.Buffer
	got, err := resolveKernels(ks, ks, lock, cache, false, &log)
	require.NoError(t, err)
	assert.Empty(t, log.String(), "nothing to fetch, nothing to say")
	assert.Equal(t, c, got["6.1"])

	other := pin
	other.Pkgs = []PkgPin{{pin.Pkgs[0].Package, pin.Pkgs[0].Version, strings.Repeat("b", 64)}}
	assert.Nil(t, loadCached(cache, other), "another build of the same version is not the cached one")
}

func writeFiles(t *testing.T, root string, names ...string) {
	for _, n := range names {
		p := filepath.Join(root, n)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(n), 0o644))
	}
}

func TestParseConsole(t *testing.T) {
	console := `[    1.0] noise before the plan
=== VMTEST-BEGIN exec
=== RUN   TestA
--- PASS: TestA (0.01s)
=== RUN   TestB
    b_test.go:12: kprobe unavailable: no kprobes
        on this kernel
--- SKIP: TestB (0.00s)
=== RUN   TestC
=== RUN   TestC/sub
    c_test.go:40: logged first
    c_test.go:41: declared unsupported here: tp_btf
    --- SKIP: TestC/sub (0.00s)
=== RUN   TestC/bad
    c_test.go:50: boom
    --- FAIL: TestC/bad (0.00s)
--- FAIL: TestC (0.00s)
FAIL
=== VMTEST-END exec rc=1 start=3.50 end=5.75
=== VMTEST-BEGIN kfunc
=== RUN   TestHang
`
	res := parseConsole(console)
	require.Len(t, res, 2)
	e := res[0]
	assert.Equal(t, "exec", e.Label)
	assert.Equal(t, [3]int{1, 1, 1}, [3]int{e.Pass, e.Fail, e.Skip})
	assert.Equal(t, 1, e.RC)
	assert.Equal(t, 2250*time.Millisecond, e.Time)
	assert.Equal(t, []string{"TestB: kprobe unavailable: no kprobes", "TestC/sub: declared unsupported here: tp_btf"}, e.Skips)
	assert.Equal(t, []string{"TestC/bad", "TestC"}, e.Failures)
	assert.False(t, e.OK())
	assert.Equal(t, "kfunc", res[1].Label)
	assert.Equal(t, -1, res[1].RC, "a package without END never finished")
	assert.False(t, res[1].OK())
}

func TestGuestExit(t *testing.T) {
	n, via := guestExit("pkg exec rc=0\nVMTEST-EXIT 0\n", "")
	assert.Equal(t, 0, n)
	assert.Equal(t, "status port", via)
	n, via = guestExit("pkg exec rc=1\n", "x\n=== VMTEST-EXIT 1\r\n")
	assert.Equal(t, 1, n)
	assert.Equal(t, "console marker", via)
	n, _ = guestExit("", "Kernel panic - not syncing\n")
	assert.Equal(t, -1, n)
}

func TestKprobeState(t *testing.T) {
	assert.Equal(t, "yes", kprobeState([]byte(`{"features":{"kprobe":{"state":"yes"}}}`)))
	assert.Equal(t, "no", kprobeState([]byte("noise\n{\"features\":{\"kprobe\":{\"state\":\"no\",\"detail\":\"x\"}}}\n")))
	assert.Equal(t, "?", kprobeState([]byte("not json")))
}

// The cpio must be what the kernel's unpacker expects: 110-byte newc
// headers, names and data padded to 4 bytes, parents before children.
func TestCpioNewc(t *testing.T) {
	var buf bytes.Buffer
	c := newCpio(&buf)
	c.Bytes("a/b/file", 0o644, []byte("hello"))
	c.Symlink("a/link", "b/file")
	c.CharDev("dev/console", 5, 1)
	require.NoError(t, c.Close())
	data := buf.Bytes()
	var names []string
	for off := 0; off < len(data); {
		require.Equal(t, "070701", string(data[off:off+6]), "at %d", off)
		hdr := off
		field := func(i int) int {
			v, err := strconv.ParseUint(string(data[hdr+6+8*i:hdr+14+8*i]), 16, 32)
			require.NoError(t, err)
			return int(v)
		}
		size, nameLen := field(6), field(11)
		name := string(data[off+110 : off+110+nameLen-1])
		names = append(names, name)
		off = align4(off + 110 + nameLen)
		if name == "a/b/file" {
			assert.Equal(t, "hello", string(data[off:off+size]))
			assert.Equal(t, modeFile|0o644, field(1))
		}
		if name == "dev/console" {
			assert.Equal(t, [2]int{5, 1}, [2]int{field(9), field(10)})
		}
		off = align4(off + size)
		if name == "TRAILER!!!" {
			assert.Equal(t, len(data), off)
			break
		}
	}
	assert.Equal(t, []string{"a", "a/b", "a/b/file", "a/link", "dev", "dev/console", "TRAILER!!!"}, names)
}

func align4(n int) int { return (n + 3) &^ 3 }

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	assert.Equal(t, []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}, parseLdd(out))
}

func TestSummaryShowsFailuresAndSkips(t *testing.T) {
	res := []KernelResult{
		{Kernel: Kernel{Name: "6.1"}, Release: "6.1.0-50-cloud-amd64", Kprobe: "yes", Wall: 30 * time.Second, Pkgs: map[string]PkgResult{
			"exec":  {Label: "exec", Pass: 7, Time: time.Second},
			"kfunc": {Label: "kfunc", Pass: 3, Fail: 1, RC: 1, Failures: []string{"TestKprobe"}, Output: "    kfunc_test.go:9: verifier said no\n--- FAIL: TestKprobe (0.1s)\n"},
		}, Exit: 1},
		{Kernel: Kernel{Name: "host"}, Kprobe: "no", Pkgs: map[string]PkgResult{
			"exec":  {Label: "exec", Pass: 7},
			"kfunc": {Label: "kfunc", Pass: 2, Skip: 2, Skips: []string{"TestKprobe: declared unsupported here: kprobe unavailable"}},
		}},
		{Kernel: Kernel{Name: "5.10"}, Err: errString("guest hung")},
	}
	var b strings.Builder
	writeSummary(&b, []string{"exec", "kfunc"}, res, time.Minute)
	s := b.String()
	assert.Contains(t, s, "3/1/0 0.0s !")
	assert.Contains(t, s, "kfunc: TestKprobe: declared unsupported here: kprobe unavailable [host]")
	assert.Contains(t, s, "== FAIL kfunc on 6.1 (rc=1): TestKprobe")
	assert.Contains(t, s, "verifier said no")
	assert.Contains(t, s, "== FAIL 5.10: guest hung")
	assert.Contains(t, s, "not run")
	assert.True(t, res[0].Failed())
	assert.False(t, res[1].Failed())
	assert.True(t, res[2].Failed())
}

type errString string

func (e errString) Error() string { return string(e) }

// A console that keeps growing is never a hang, however slowly; one that
// stops is, once idle has passed.
func TestWatchConsole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	const idle = time.Second

	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan struct{})
	go func() { watchConsole(ctx, path, idle, cancel); close(done) }()
	// Writes idle/20 apart for twice idle: a growing console.
	for i := 0; i < 40; i++ {
		_, err := f.WriteString("line\n")
		require.NoError(t, err)
		time.Sleep(idle / 20)
		require.NoError(t, context.Cause(ctx), "a growing console was called silent")
	}
	<-done
	require.ErrorIs(t, context.Cause(ctx), errSilent)
}
