// Command vmtests runs the catalog's BPF test binaries as root inside a
// matrix of kernels (vmtests/kernels.txt) under qemu, or virtme-ng, and
// natively on the host kernel, then prints a kernel × package summary.
// `make vmtest` runs it; vmtests/README.md explains the design.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Plan lines run the catalog's test binaries once as they are, and once
// more with the preferred attach modes hidden (NANNYAGENT_DISABLE_FEATURES)
// for the entries that pick between tp_btf, raw tracepoints and
// tracepoints or between ring and perf buffers. That pass runs on every
// kernel, in addition to the tests that force fallbacks themselves.
const fallbackFeatures = "tp_btf,raw_tracepoint,ring_buffer"

// The value is a -test.skip pattern for the tests that name the mode they
// expect (they force every mode themselves, and hiding more than they
// hide breaks their premise). oomkill is left out: each of its exact
// tests forces a mode, and its cgroup filter needs tp_btf or raw_tp.
var fallbackPkgs = map[string]string{
	"dns": "", "exec": "", "open": "", "tcplife": "",
	"exit":    "^TestExitAttachFallbacks$",
	"signals": "^(TestSignalsAttachFallbacks|TestSignalsCountsExactly)$",
	"runqlat": "^(TestRunqlatSleeperTpBTF|TestRunqlatRawTracepointFallback)$",
}

// notInGuests are test packages the guests cannot run, with why.
var notInGuests = map[string]string{
	"bpftrace": "needs the bpftrace binary and its libraries, which the initramfs does not carry",
	"cli":      "end-to-end tests of the agent that build it with the go tool, drive it on pseudo-terminals and expect this machine's Landlock; the BPF they load is the catalog entries'",
}

// guestEnv is extra environment per package inside guests only: the
// initramfs and /tmp are RAM file systems, whose pages cannot be dropped
// (pagefaults needs major faults) or reclaimed (reclaim reads a file
// through a memory-limited cgroup).
var guestEnv = map[string][]string{
	"pagefaults": {"TMPDIR=/tmp/scratch"},
	"reclaim":    {"TMPDIR=/tmp/scratch"},
}

// PlanLine is one test binary run.
type PlanLine struct {
	Label   string
	Pkg     string // import path
	Dir     string // source directory (cwd of native runs, like go test)
	Bin     string // file name in the build directory
	Timeout int    // seconds, passed as -test.timeout
	Args    []string
	Env     []string
	Guest   []string // environment inside guests only
}

func (p PlanLine) guestLine() string {
	f := []string{p.Label, p.Bin, fmt.Sprint(p.Timeout)}
	f = append(f, p.Args...)
	f = append(f, p.Env...)
	f = append(f, p.Guest...)
	return strings.Join(f, " ")
}

type options struct {
	kernels  string
	dryRun   bool
	parallel int
	short    bool
	update   bool
	boot     string
	pkgTime  int
	vmTime   time.Duration
	vmIdle   time.Duration
	run      string
	verbose  bool
}

func main() {
	var o options
	flag.StringVar(&o.kernels, "kernel", os.Getenv("KERNEL"), "comma-separated kernels of vmtests/kernels.txt to run (default all)")
	flag.BoolVar(&o.dryRun, "dry-run", false, "print the guest commands instead of running them (still builds and fetches)")
	flag.IntVar(&o.parallel, "parallel", 2, "guests running at once (each takes one host CPU under TCG)")
	flag.BoolVar(&o.short, "short", true, "pass -test.short to the test binaries")
	flag.BoolVar(&o.update, "update", false, "re-pin every kernel to the newest build of its line")
	flag.StringVar(&o.boot, "boot", "auto", "how to boot guests: qemu, vng, or auto (vng when it is on PATH and the kernel can mount the host's / over 9p or virtiofs)")
	flag.IntVar(&o.pkgTime, "pkg-timeout", 150, "per test binary timeout in seconds")
	flag.DurationVar(&o.vmTime, "vm-timeout", 30*time.Minute, "per guest timeout: a guest still running then is a hang and a failure")
	flag.DurationVar(&o.vmIdle, "vm-idle", 0, "a guest whose console stays silent this long is a hang and a failure (default: -pkg-timeout plus 60s, past the init's kill of a stuck test binary)")
	flag.StringVar(&o.run, "run", "", "only these packages (comma-separated labels, e.g. exec,kfunc)")
	flag.BoolVar(&o.verbose, "v", false, "print every package's full test output")
	flag.Parse()
	if o.vmIdle == 0 {
		o.vmIdle = time.Duration(o.pkgTime+60) * time.Second
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ok, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (bool, error) {
	start := time.Now()
	here, err := moduleRoot()
	if err != nil {
		return false, err
	}
	vmDir := filepath.Join(here, "vmtests")
	cache := filepath.Join(vmDir, "cache")
	f, err := os.Open(filepath.Join(vmDir, "kernels.txt"))
	if err != nil {
		return false, err
	}
	all, err := parseKernels(f)
	f.Close()
	if err != nil {
		return false, err
	}
	kernels, err := selectKernels(all, o.kernels)
	if err != nil {
		return false, err
	}

	runDir := filepath.Join(cache, "runs", time.Now().Format("20060102-150405"))
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return false, err
	}
	pruneRuns(filepath.Join(cache, "runs"), 10)
	_ = os.Remove(filepath.Join(cache, "runs", "latest"))
	_ = os.Symlink(filepath.Base(runDir), filepath.Join(cache, "runs", "latest"))
	fmt.Printf("vmtest: run directory %s\n", runDir)

	images, err := resolveKernels(kernels, all, filepath.Join(vmDir, "kernels.lock"), cache, o.update, os.Stdout)
	if err != nil {
		return false, err
	}
	plan, err := makePlan(here, o)
	if err != nil {
		return false, err
	}
	buildDir := filepath.Join(cache, "build")
	t0 := time.Now()
	if err := build(ctx, here, buildDir, plan); err != nil {
		return false, err
	}
	fmt.Printf("vmtest: built %d test binaries and nannyagent in %s\n", len(uniqueBins(plan)), secs(time.Since(t0)))

	var labels []string
	var planText strings.Builder
	for _, p := range plan {
		labels = append(labels, p.Label)
		planText.WriteString(p.guestLine() + "\n")
	}
	var initrd string
	modules := map[string]string{}
	for _, c := range images {
		for k, v := range c.Modules {
			modules[k] = v
		}
	}
	needGuests := len(images) > 0
	if needGuests {
		initrd = filepath.Join(runDir, "initramfs.cpio")
		bins := map[string]string{}
		for _, b := range uniqueBins(plan) {
			bins[b] = filepath.Join(buildDir, b)
		}
		rf := Rootfs{Busybox: "/bin/busybox", Agent: filepath.Join(buildDir, "nannyagent"), TestBins: bins, Modules: modules, Plan: []byte(planText.String())}
		if err := rf.build(initrd); err != nil {
			return false, fmt.Errorf("initramfs: %w", err)
		}
		if st, err := os.Stat(initrd); err == nil {
			fmt.Printf("vmtest: initramfs %s (%d MiB)\n", initrd, st.Size()>>20)
		}
	}

	results := make([]KernelResult, len(kernels))
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, o.parallel))
	var mu sync.Mutex
	progress := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format, args...)
	}
	// The host runs first and alone: its tests measure real timings and
	// the guests would take both CPUs.
	for i, k := range kernels {
		if !k.Host() {
			continue
		}
		dir := filepath.Join(runDir, k.Name)
		if o.dryRun {
			fmt.Printf("vmtest: dry run: host kernel: would run %d test binaries natively from %s as root\n", len(plan), buildDir)
			results[i] = KernelResult{Kernel: k, Release: "(dry run)"}
			continue
		}
		results[i] = runHost(ctx, k, plan, buildDir, dir, progress)
	}
	for i, k := range kernels {
		if k.Host() {
			continue
		}
		b := Boot{Kernel: k, Image: images[k.Name], Initramfs: initrd, Dir: filepath.Join(runDir, k.Name), Timeout: o.vmTime, Idle: o.vmIdle}
		if err := os.MkdirAll(b.Dir, 0o755); err != nil {
			return false, err
		}
		useVng, why := chooseBoot(o.boot, b.Image)
		var argv []string
		if useVng {
			stage, err := stageForVng(b.Dir, buildDir, plan, planText.String(), b.Image)
			if err != nil {
				return false, err
			}
			b.Stage = stage
			argv = vngCommand(b)
		} else {
			argv = qemuCommand(b)
		}
		if o.dryRun {
			fmt.Printf("vmtest: dry run: kernel %s (%s, %s):\n  %s\n", k.Name, b.Image.Release, why, shellQuote(argv))
			results[i] = KernelResult{Kernel: k, Release: b.Image.Release}
			continue
		}
		// Taking the slot before starting keeps kernels.txt's order.
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			progress("vmtest: %s: booting %s (%s)\n", k.Name, b.Image.Release, why)
			g := runGuest(ctx, b, argv, useVng)
			results[i] = guestResult(k, b, g)
			progress("vmtest: %s: done in %s, %s\n", k.Name, secs(g.Wall), verdict(results[i]))
		}()
	}
	wg.Wait()
	if o.dryRun {
		return true, nil
	}
	// The initramfs is rebuilt every run and is most of a run's size.
	if initrd != "" {
		_ = os.Remove(initrd)
	}

	for _, r := range results {
		for _, l := range labels {
			if p, ok := r.Pkgs[l]; ok && (o.verbose || !p.OK()) {
				fmt.Printf("\n--- output of %s on %s\n%s", l, r.Kernel.Name, p.Output)
			}
		}
	}
	var summary strings.Builder
	writeSummary(io.MultiWriter(os.Stdout, &summary), labels, results, time.Since(start))
	fmt.Fprintf(&summary, "\nnot run in guests: ")
	for _, n := range sortedKeys(notInGuests) {
		fmt.Fprintf(&summary, "%s (%s) ", n, notInGuests[n])
	}
	fmt.Fprintf(&summary, "\nper-kernel console logs and `nannyagent check --json` output: %s/<kernel>/\n", runDir)
	if err := os.WriteFile(filepath.Join(runDir, "summary.txt"), []byte(summary.String()), 0o644); err != nil {
		return false, err
	}
	fmt.Printf("vmtest: summary, console logs and check output per kernel in %s\n", runDir)
	ok := true
	for _, r := range results {
		ok = ok && !r.Failed()
	}
	return ok, nil
}

// pruneRuns keeps the newest keep run directories (their names sort by
// time).
func pruneRuns(dir string, keep int) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var runs []string
	for _, e := range ents {
		if e.IsDir() {
			runs = append(runs, e.Name())
		}
	}
	sort.Strings(runs)
	for len(runs) > keep {
		_ = os.RemoveAll(filepath.Join(dir, runs[0]))
		runs = runs[1:]
	}
}

func verdict(r KernelResult) string {
	if r.Failed() {
		if r.Err != nil {
			return "FAIL: " + strings.SplitN(r.Err.Error(), "\n", 2)[0]
		}
		return "FAIL"
	}
	return "pass"
}

// chooseBoot decides between qemu with the initramfs and virtme-ng.
func chooseBoot(mode string, c *Cached) (bool, string) {
	switch mode {
	case "qemu":
		return false, "qemu, as asked"
	case "vng":
		return true, "vng, as asked"
	}
	if _, err := exec.LookPath("vng"); err != nil {
		return false, "qemu: vng is not on PATH"
	}
	cfg, _ := os.ReadFile(c.Config)
	for _, opt := range []string{"CONFIG_9P_FS=y", "CONFIG_VIRTIO_FS=y"} {
		if strings.Contains(string(cfg), "\n"+opt+"\n") {
			return true, "vng: on PATH and the kernel has " + opt
		}
	}
	return false, "qemu: the kernel has no built-in 9p or virtiofs for vng to share /"
}

// stageForVng lays out, in the run directory on the host's /, what the
// initramfs would carry: the init, the plan, the binaries, the modules
// and busybox applets (last on PATH, behind the host's own tools).
func stageForVng(dir, buildDir string, plan []PlanLine, planText string, c *Cached) (string, error) {
	stage := filepath.Join(dir, "stage")
	for _, d := range []string{"bin", "applets", "modules/" + c.Release} {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(stage, "init"), initScript, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(stage, "plan"), []byte(planText), 0o644); err != nil {
		return "", err
	}
	link := func(src, dst string) error {
		_ = os.Remove(dst)
		return os.Symlink(src, dst)
	}
	if err := link(filepath.Join(buildDir, "nannyagent"), filepath.Join(stage, "nannyagent")); err != nil {
		return "", err
	}
	for _, b := range uniqueBins(plan) {
		if err := link(filepath.Join(buildDir, b), filepath.Join(stage, "bin", b)); err != nil {
			return "", err
		}
	}
	for name, p := range c.Modules {
		if err := link(p, filepath.Join(stage, "modules", name)); err != nil {
			return "", err
		}
	}
	applets, err := busyboxApplets("/bin/busybox")
	if err != nil {
		return "", err
	}
	for _, a := range applets {
		if err := link("/bin/busybox", filepath.Join(stage, "applets", a)); err != nil {
			return "", err
		}
	}
	return stage, nil
}

func guestResult(k Kernel, b Boot, g GuestRun) KernelResult {
	r := KernelResult{Kernel: k, Release: b.Image.Release, Wall: g.Wall, Err: g.Err, Exit: g.Exit, Via: g.Via, Pkgs: map[string]PkgResult{}}
	for _, p := range parseConsole(g.Console) {
		r.Pkgs[p.Label] = p
	}
	r.Kprobe = saveCheck(g.Console, b.Dir)
	if r.Err == nil && r.Exit == 0 {
		// A guest that exits 0 but ran fewer packages than planned lost
		// some of its work: never a pass.
		if m := regexp.MustCompile(`(?m)^=== VMTEST-BEGIN `).FindAllStringIndex(g.Console, -1); len(m) == 0 {
			r.Err = fmt.Errorf("the guest reported success but ran no test binary")
		}
	}
	return r
}

// saveCheck stores the guest's `nannyagent check --json` output and
// returns its kprobe verdict.
func saveCheck(console, dir string) string {
	_, after, ok := strings.Cut(console, "=== VMTEST-CHECK-BEGIN\n")
	if !ok {
		return "?"
	}
	body, _, ok := strings.Cut(after, "=== VMTEST-CHECK-END")
	if !ok {
		return "?"
	}
	_ = os.WriteFile(filepath.Join(dir, "check.json"), []byte(body), 0o644)
	return kprobeState([]byte(body))
}

func kprobeState(js []byte) string {
	var c struct {
		Features map[string]struct {
			State string `json:"state"`
		} `json:"features"`
	}
	if i := strings.IndexByte(string(js), '{'); i > 0 {
		js = js[i:]
	}
	if err := json.Unmarshal(js, &c); err != nil {
		return "?"
	}
	if s, ok := c.Features["kprobe"]; ok {
		return s.State
	}
	return "?"
}

// runHost runs the plan natively, the way go test would (cwd = the
// package's source directory), with the guests' markers so the same
// parser reads the output.
func runHost(ctx context.Context, k Kernel, plan []PlanLine, buildDir, dir string, progress func(string, ...any)) KernelResult {
	start := time.Now()
	r := KernelResult{Kernel: k, Pkgs: map[string]PkgResult{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.Err = err
		return r
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		r.Release = strings.TrimSpace(string(out))
	}
	if os.Geteuid() != 0 {
		r.Err = fmt.Errorf("the host kernel's BPF tests need root")
		return r
	}
	progress("vmtest: host: running %d test binaries natively on %s\n", len(plan), r.Release)
	if js, err := exec.Command(filepath.Join(buildDir, "nannyagent"), "check", "--json").Output(); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "check.json"), js, 0o644)
		r.Kprobe = kprobeState(js)
	}
	var log strings.Builder
	for _, p := range plan {
		pctx, cancel := context.WithTimeout(ctx, time.Duration(p.Timeout+15)*time.Second)
		args := append([]string{"-test.v", "-test.count=1", fmt.Sprintf("-test.timeout=%ds", p.Timeout)}, p.Args...)
		cmd := exec.CommandContext(pctx, filepath.Join(buildDir, p.Bin), args...)
		cmd.Dir = p.Dir
		cmd.Env = append(append(os.Environ(), "NANNYAGENT_REQUIRE_BPF=1"), p.Env...)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		cancel()
		rc := 0
		if err != nil {
			rc = 1
			if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
				rc = ee.ExitCode()
			}
		}
		up := time.Since(start).Seconds()
		fmt.Fprintf(&log, "=== VMTEST-BEGIN %s\n%s=== VMTEST-END %s rc=%d start=%.2f end=%.2f\n",
			p.Label, out, p.Label, rc, up-time.Since(t0).Seconds(), up)
	}
	_ = os.WriteFile(filepath.Join(dir, "console.log"), []byte(log.String()), 0o644)
	for _, p := range parseConsole(log.String()) {
		r.Pkgs[p.Label] = p
	}
	r.Wall = time.Since(start)
	r.Via = "native"
	progress("vmtest: host: done in %s, %s\n", secs(r.Wall), verdict(r))
	return r
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run from inside the nannyagent module")
	}
	return filepath.Dir(mod), nil
}

// makePlan lists the packages whose tests load BPF programs (they import
// catalogtest, plus the catalog core whose feature tests probe the
// kernel) and turns them into plan lines.
func makePlan(root string, o options) ([]PlanLine, error) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{.Dir}}|{{join .TestImports " "}} {{join .XTestImports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	only := map[string]bool{}
	for _, l := range strings.Split(o.run, ",") {
		if l = strings.TrimSpace(l); l != "" {
			only[l] = true
		}
	}
	const core = "github.com/nannyagent/nannyagent/internal/catalog"
	var plan []PlanLine
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, "|", 3)
		if len(f) != 3 {
			continue
		}
		pkg, dir, imports := f[0], f[1], " "+f[2]+" "
		if pkg != core && !strings.Contains(imports, " "+core+"/catalogtest ") {
			continue
		}
		name := filepath.Base(pkg)
		if _, skip := notInGuests[name]; skip {
			continue
		}
		if len(only) > 0 && !only[name] {
			continue
		}
		base := PlanLine{Label: name, Pkg: pkg, Dir: dir, Bin: name + ".test", Timeout: o.pkgTime, Guest: guestEnv[name]}
		if o.short {
			base.Args = []string{"-test.short"}
		}
		plan = append(plan, base)
		if skip, ok := fallbackPkgs[name]; ok {
			fb := base
			fb.Label = name + "+fallback"
			fb.Env = []string{"NANNYAGENT_DISABLE_FEATURES=" + fallbackFeatures}
			if skip != "" {
				fb.Args = append(append([]string{}, base.Args...), "-test.skip="+skip)
			}
			plan = append(plan, fb)
		}
	}
	if len(plan) == 0 {
		return nil, fmt.Errorf("no test package selected (-run %q)", o.run)
	}
	sort.SliceStable(plan, func(i, j int) bool { return plan[i].Label < plan[j].Label })
	return plan, nil
}

func uniqueBins(plan []PlanLine) []string {
	seen := map[string]bool{}
	var bins []string
	for _, p := range plan {
		if !seen[p.Bin] {
			seen[p.Bin] = true
			bins = append(bins, p.Bin)
		}
	}
	return bins
}

// build compiles the test binaries and the agent on the host: static
// (CGO_ENABLED=0) so they run in a busybox initramfs, stripped to keep it
// small.
func build(ctx context.Context, root, dir string, plan []PlanLine) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	seen := map[string]bool{}
	args := []string{"test", "-c", "-trimpath", "-ldflags=-s -w", "-o", dir + "/"}
	for _, p := range plan {
		if !seen[p.Pkg] {
			seen[p.Pkg] = true
			args = append(args, p.Pkg)
		}
	}
	for _, c := range [][]string{args, {"build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "nannyagent"), "./cmd/nannyagent"}} {
		cmd := exec.CommandContext(ctx, "go", c...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(c[:2], " "), err, out)
		}
	}
	return nil
}
