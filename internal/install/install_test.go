package install

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nannyagent/nannyagent/internal/config"
	"github.com/stretchr/testify/require"
)

var (
	repoRoot = mustAbs("../..")
	script   = filepath.Join(repoRoot, "install.sh")
)

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// requireRoot skips a test that runs install.sh to the end: its first
// check refuses anyone but root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("NANNYAGENT_REQUIRE_BPF") == "1" {
		t.Fatal("NANNYAGENT_REQUIRE_BPF=1 but not root: install.sh installs only as root")
	}
	t.Skip("install.sh installs only as root (its first check); run the tests as root")
}

// machines maps GOARCH to what uname -m says and to the ELF e_machine.
var machines = map[string]struct {
	uname string
	elf   byte
}{"amd64": {"x86_64", 62}, "arm64": {"aarch64", 183}}

func hostMachine(t *testing.T) string {
	m, ok := machines[runtime.GOARCH]
	if !ok {
		t.Skipf("install.sh supports amd64 and arm64, not %s", runtime.GOARCH)
	}
	return m.uname
}

func otherArch() string {
	if runtime.GOARCH == "amd64" {
		return "arm64"
	}
	return "amd64"
}

// fakeELF is the header of an ELF executable for goarch: all install.sh
// looks at before installing a file given with --binary.
func fakeELF(t *testing.T, goarch string) string {
	b := make([]byte, 64)
	copy(b, "\x7fELF\x02\x01\x01")
	b[16] = 2 // ET_EXEC
	b[18] = machines[goarch].elf
	p := filepath.Join(t.TempDir(), "nannyagent-"+goarch)
	require.NoError(t, os.WriteFile(p, b, 0o755))
	return p
}

var (
	buildOnce sync.Once
	buildDir  string
	builtBin  string
	buildErr  error
)

// agentBinary builds cmd/nannyagent once, with the compile flags
// install.sh uses, so that install.sh's own build of the checkout only
// links.
func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "nannyagent-install-test-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "nannyagent")
		cmd := exec.Command(goTool(t), "build", "-trimpath", "-buildvcs=false", "-o", builtBin, "./cmd/nannyagent")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New("go build ./cmd/nannyagent: " + err.Error() + "\n" + string(out))
		}
	})
	require.NoError(t, buildErr)
	return builtBin
}

func goTool(t *testing.T) string {
	// go test puts its own GOROOT/bin first in PATH.
	p, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is not in PATH")
	return p
}

type result struct {
	code           int
	stdout, stderr string
}

type runOpts struct {
	script string            // default: the repository's install.sh
	env    map[string]string // added to, or replacing, the defaults; "" unsets
	cred   *syscall.Credential
	wrap   []string // a command that runs the script: unshare ...
}

// detection returns the test-only inputs of a plain, supported machine:
// Linux on this architecture, kernel 6.1, no container markers, Debian,
// systemd 252 (no restart backoff drop-in).
func detection(t *testing.T) map[string]string {
	osRelease := filepath.Join(t.TempDir(), "os-release")
	require.NoError(t, os.WriteFile(osRelease, []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"), 0o644))
	return map[string]string{
		"NANNYAGENT_INSTALL_UNAME_S":         "Linux",
		"NANNYAGENT_INSTALL_UNAME_M":         hostMachine(t),
		"NANNYAGENT_INSTALL_UNAME_R":         "6.1.0-18-amd64",
		"NANNYAGENT_INSTALL_CONTAINER_ROOT":  t.TempDir(),
		"NANNYAGENT_INSTALL_OS_RELEASE":      osRelease,
		"NANNYAGENT_INSTALL_SYSTEMD_VERSION": "252",
	}
}

func runScript(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	s := o.script
	if s == "" {
		s = script
	}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NANNYAGENT_INSTALL_") || k == "DESTDIR" || k == "GO" {
			continue
		}
		env[k] = v
	}
	for k, v := range detection(t) {
		env[k] = v
	}
	for k, v := range o.env {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	argv := append(append(append([]string{}, o.wrap...), "bash", s), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = envList
	cmd.Dir = t.TempDir()
	if o.cred != nil {
		cmd.Dir = "/" // the test's directories are root's alone
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running %v: %v", argv, err)
	}
	return r
}

// requireCode fails with the script's output when the status is not want.
func requireCode(t *testing.T, r result, want int) {
	t.Helper()
	require.Equal(t, want, r.code, "exit status\n--- stdout\n%s--- stderr\n%s", r.stdout, r.stderr)
}

type entry struct {
	mode fs.FileMode
	sum  string // files: sha256; links: target
}

// snapshot lists everything under root, relative to it.
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	if _, err := os.Lstat(root); errors.Is(err, fs.ErrNotExist) {
		return out
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{mode: info.Mode()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			e.sum, err = os.Readlink(p)
		case info.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			s := sha256.Sum256(b)
			e.sum = hex.EncodeToString(s[:])
		}
		out[rel] = e
		return err
	})
	require.NoError(t, err)
	return out
}

// nonDirs lists the files and links of a snapshot, sorted.
func nonDirs(s map[string]entry) []string {
	var out []string
	for p, e := range s {
		if !e.mode.IsDir() {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func fileSum(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

const (
	binPath    = "usr/sbin/nannyagent"
	confDir    = "etc/nannyagent"
	confPath   = "etc/nannyagent/config.yaml"
	confNew    = "etc/nannyagent/config.yaml.new"
	dataDir    = "var/lib/nannyagent"
	unitPath   = "etc/systemd/system/nannyagent.service"
	dropinDir  = "etc/systemd/system/nannyagent.service.d"
	backoffPin = "etc/systemd/system/nannyagent.service.d/10-restart-backoff.conf"
)

// defaultConfig is the configuration install.sh writes, taken from the
// script itself.
func defaultConfig(t *testing.T) string {
	b, err := os.ReadFile(script)
	require.NoError(t, err)
	m := regexp.MustCompile(`(?s)\nconfig_text\(\) \{\n\tcat <<'EOF'\n(.*?\n)EOF\n`).FindSubmatch(b)
	require.NotNil(t, m, "install.sh has no config_text function with a quoted EOF here-document")
	return string(m[1])
}

// keyLine is a commented-out setting: "# key: value" or "#   key: value".
var keyLine = regexp.MustCompile(`^# ( *)([a-z0-9_]+):(?: (.*))?$`)

// uncomment turns every commented-out setting on, and returns the dotted
// keys it found.
func uncomment(text string) (string, []string) {
	var out, keys []string
	section := ""
	for _, line := range strings.Split(text, "\n") {
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			out = append(out, line)
			continue
		}
		out = append(out, strings.TrimPrefix(line, "# "))
		switch {
		case m[1] == "" && m[3] == "":
			section = m[2] + "."
		case m[1] == "":
			section = ""
			keys = append(keys, m[2])
		default:
			keys = append(keys, section+m[2])
		}
	}
	return strings.Join(out, "\n"), keys
}

// TestDefaultConfig: the file install.sh writes loads, and with every
// commented-out setting turned on it still is exactly config.Defaults()
// and names every key, so the values it shows are the real defaults.
func TestDefaultConfig(t *testing.T) {
	text := defaultConfig(t)

	p := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	c, err := config.Load(p, true)
	require.NoError(t, err)
	require.Equal(t, config.Defaults(), c)

	on, keys := uncomment(text)
	c, err = config.Parse([]byte(on), "config.yaml with every setting uncommented")
	require.NoError(t, err, "install.sh's config_text shows a key config.Parse rejects")
	require.Equal(t, config.Defaults(), c,
		"a value in install.sh's config_text is not the default in internal/config: change config_text to match Defaults()")
	require.NoError(t, c.Validate())
	require.ElementsMatch(t, config.Keys(), keys,
		"install.sh's config_text must show each key of internal/config once, commented out at its default")
}

func TestUncomment(t *testing.T) {
	on, keys := uncomment("# Prose: not a key\n# a: 1\n# s:\n#   b: x\n# c: \"\"\nnot: touched\n")
	require.Equal(t, "# Prose: not a key\na: 1\ns:\n  b: x\nc: \"\"\nnot: touched\n", on)
	require.Equal(t, []string{"a", "s.b", "c"}, keys)
}

func TestShellcheck(t *testing.T) {
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Skip("shellcheck is not installed (apt-get install shellcheck); make lint runs it too")
	}
	out, err := exec.Command(sc, script).CombinedOutput()
	require.NoError(t, err, "shellcheck install.sh:\n%s", out)
}

// TestLifecycle installs into a staging root, refuses a second install,
// upgrades without touching the configuration or the data, and
// uninstalls, then purges.
func TestLifecycle(t *testing.T) {
	requireRoot(t)
	bin := agentBinary(t)
	root := t.TempDir()
	inst := func(args ...string) result {
		return runScript(t, runOpts{}, append([]string{"--destdir", root, "--without-bpftrace"}, args...)...)
	}

	r := inst("--binary", bin)
	requireCode(t, r, 0)
	require.Contains(t, r.stdout, "sudo nannyagent --register")
	require.Contains(t, r.stdout, "sudo systemctl enable --now nannyagent")
	s := snapshot(t, root)
	require.Equal(t, []string{confPath, unitPath, binPath}, nonDirs(s))
	for p, mode := range map[string]fs.FileMode{
		binPath: 0o755, confPath: 0o600, unitPath: 0o644,
		confDir: fs.ModeDir | 0o700, dataDir: fs.ModeDir | 0o700,
	} {
		require.Equal(t, mode, s[p].mode, p)
	}
	require.Equal(t, fileSum(t, bin), s[binPath].sum)
	conf, err := os.ReadFile(filepath.Join(root, confPath))
	require.NoError(t, err)
	require.Equal(t, defaultConfig(t), string(conf))
	out, err := exec.Command(filepath.Join(root, binPath), "--version").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.True(t, strings.HasPrefix(string(out), "nannyagent "), "%s", out)

	// An existing installation: nothing changes without --force.
	r = inst("--binary", bin)
	requireCode(t, r, 6)
	require.Contains(t, r.stderr, "already installed")
	require.Contains(t, r.stderr, "./install.sh --force")
	require.Equal(t, s, snapshot(t, root))

	// The administrator's configuration and the agent's data survive an
	// upgrade; the new default lands beside the configuration.
	mine := "nannyapi_url: https://api.example.com\nmetrics_interval: 60\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, confPath), []byte(mine), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(root, dataDir, "token.json"), []byte("{}"), 0o600))
	bin2 := filepath.Join(t.TempDir(), "nannyagent")
	b, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin2, append(b, "v2"...), 0o700))

	r = inst("--binary", bin2, "--force")
	requireCode(t, r, 0)
	require.Contains(t, r.stdout, "nannyagent is upgraded")
	s = snapshot(t, root)
	require.Equal(t, []string{confPath, confNew, unitPath, binPath, dataDir + "/token.json"}, nonDirs(s))
	require.Equal(t, fileSum(t, bin2), s[binPath].sum)
	require.Equal(t, fs.FileMode(0o755), s[binPath].mode)
	got, err := os.ReadFile(filepath.Join(root, confPath))
	require.NoError(t, err)
	require.Equal(t, mine, string(got))
	got, err = os.ReadFile(filepath.Join(root, confNew))
	require.NoError(t, err)
	require.Equal(t, defaultConfig(t), string(got))
	require.Equal(t, fs.FileMode(0o600), s[confNew].mode)

	// A configuration that is the current default needs no .new.
	require.NoError(t, os.WriteFile(filepath.Join(root, confPath), []byte(defaultConfig(t)), 0o600))
	r = inst("--binary", bin, "--upgrade")
	requireCode(t, r, 0)
	require.Contains(t, r.stdout, "it is the current default")
	require.NoFileExists(t, filepath.Join(root, confNew))

	// What systemctl enable and systemctl edit leave behind.
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	require.NoError(t, os.MkdirAll(wants, 0o755))
	require.NoError(t, os.Symlink("/etc/systemd/system/nannyagent.service", filepath.Join(wants, "nannyagent.service")))
	require.NoError(t, os.MkdirAll(filepath.Join(root, dropinDir), 0o755))
	override := dropinDir + "/override.conf"
	require.NoError(t, os.WriteFile(filepath.Join(root, override), []byte("[Service]\nEnvironment=DEBUG=1\n"), 0o644))

	r = inst("--uninstall")
	requireCode(t, r, 0)
	require.Contains(t, r.stdout, "kept the configuration and data")
	s = snapshot(t, root)
	require.Equal(t, []string{confPath, override, dataDir + "/token.json"}, nonDirs(s))
	require.NotContains(t, s, "etc/systemd/system/multi-user.target.wants")

	// Again: nothing left to remove is not an error.
	r = inst("--uninstall")
	requireCode(t, r, 0)
	require.Equal(t, s, snapshot(t, root))

	r = inst("--uninstall", "--purge")
	requireCode(t, r, 0)
	s = snapshot(t, root)
	require.Empty(t, nonDirs(s))
	for _, p := range []string{confDir, dataDir, dropinDir} {
		require.NotContains(t, s, p)
	}
}

// TestChecks: each check's exit status, in the documented order, and
// nothing written when one fails.
func TestChecks(t *testing.T) {
	requireRoot(t)
	bin := agentBinary(t)
	marker := func(path, content string) map[string]string {
		dir := t.TempDir()
		p := filepath.Join(dir, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return map[string]string{"NANNYAGENT_INSTALL_CONTAINER_ROOT": dir}
	}
	with := func(maps ...map[string]string) map[string]string {
		out := map[string]string{}
		for _, m := range maps {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	osName := func(s string) map[string]string { return map[string]string{"NANNYAGENT_INSTALL_UNAME_S": s} }
	machine := func(s string) map[string]string { return map[string]string{"NANNYAGENT_INSTALL_UNAME_M": s} }
	kernel := func(s string) map[string]string { return map[string]string{"NANNYAGENT_INSTALL_UNAME_R": s} }

	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		rawArgs  []string // instead of the usual arguments
		existing bool
		code     int
		stderr   string
	}{
		{name: "FreeBSD", env: osName("FreeBSD"), code: 2, stderr: "this is FreeBSD, not Linux"},
		{name: "Darwin on riscv64: the OS is checked first", env: with(osName("Darwin"), machine("riscv64")), code: 2, stderr: "not Linux"},
		{name: "riscv64", env: machine("riscv64"), code: 3, stderr: "the architecture is riscv64"},
		{name: "i686", env: machine("i686"), code: 3, stderr: "amd64 (x86_64) and arm64 (aarch64) only"},
		{name: "armv7l in a container: the architecture is checked first", env: with(machine("armv7l"), marker(".dockerenv", "")), code: 3},
		{name: "Docker", env: marker(".dockerenv", ""), code: 4, stderr: ".dockerenv exists (Docker)"},
		{name: "Podman", env: marker("run/.containerenv", ""), code: 4, stderr: ".containerenv exists (Podman)"},
		{name: "systemd's container file", env: marker("run/systemd/container", "lxc\n"), code: 4, stderr: "run/systemd/container says lxc"},
		{name: "PID 1's environment", env: marker("proc/1/environ", "PATH=/bin\x00container=lxc\x00TERM=linux\x00"), code: 4, stderr: "PID 1's environment has container=lxc"},
		{name: "cgroup v1 docker path", env: marker("proc/1/cgroup", "12:pids:/docker/0123abcd\n"), code: 4, stderr: "PID 1's cgroup is 12:pids:/docker/0123abcd"},
		{name: "LXC cgroup", env: marker("proc/1/cgroup", "0::/lxc.payload.web1/init.scope\n"), code: 4},
		{name: "Kubernetes cgroup", env: marker("proc/1/cgroup", "0::/kubepods/burstable/pod1/abc\n"), code: 4},
		{name: "a host's cgroup", env: marker("proc/1/cgroup", "0::/init.scope\n"), code: 0},
		{name: "a host's PID 1 environment", env: marker("proc/1/environ", "HOME=/\x00TERM=linux\x00"), code: 0},
		{name: "container with an old kernel: the container is checked first", env: with(marker(".dockerenv", ""), kernel("4.19.0")), code: 4},
		{name: "kernel 4.19", env: kernel("4.19.0-26-amd64"), code: 5, stderr: "the kernel is 4.19.0-26-amd64, older than 5.0"},
		{name: "kernel 3.10", env: kernel("3.10.0-1160.el7.x86_64"), code: 5},
		{name: "unreadable kernel version", env: kernel("linux-generic"), code: 5, stderr: "cannot read the kernel version"},
		{name: "kernel 5.0", env: kernel("5.0.0"), code: 0},
		{name: "kernel 5.4", env: kernel("5.4.0-150-generic"), code: 0},
		{name: "an old kernel and an existing installation: the kernel is checked first", env: kernel("4.9.0"), existing: true, code: 5},
		{name: "an existing installation", existing: true, code: 6, stderr: "--force"},
		{name: "binary of the other architecture", args: []string{"--binary", fakeELF(t, otherArch())}, code: 11,
			stderr: "is " + otherArch() + ", but this machine is " + runtime.GOARCH},
		{name: "binary for this architecture, seen as the other", env: machine(machines[otherArch()].uname), code: 11},
		{name: "arm64 or amd64 header accepted", env: machine(machines[otherArch()].uname), args: []string{"--binary", fakeELF(t, otherArch())}, code: 0},
		{name: "not an executable", args: []string{"--binary", script}, code: 11, stderr: "is not an ELF executable"},
		{name: "missing binary", args: []string{"--binary", "/nonexistent/nannyagent"}, code: 11, stderr: "is not a readable file"},
		{name: "unknown option", args: []string{"--bogus"}, code: 64, stderr: "unknown option: --bogus"},
		{name: "option without its value", rawArgs: []string{"--destdir"}, code: 64, stderr: "--destdir needs a value"},
		{name: "uninstall with a binary", rawArgs: []string{"--uninstall", "--binary", script}, code: 64, stderr: "--binary and --uninstall do not go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.existing {
				require.NoError(t, os.MkdirAll(filepath.Join(root, dataDir), 0o700))
			}
			before := snapshot(t, root)
			args := append([]string{"--without-bpftrace", "--binary", bin}, tc.args...)
			args = append(args, "--destdir", root)
			if tc.rawArgs != nil {
				args = tc.rawArgs
			}
			r := runScript(t, runOpts{env: tc.env}, args...)
			requireCode(t, r, tc.code)
			require.Contains(t, r.stderr, tc.stderr)
			if tc.code != 0 {
				require.Equal(t, before, snapshot(t, root), "a failed check must write nothing")
				require.Regexp(t, `(?m)^install.sh: error: .+\n  \S`, r.stderr, "an error says what to do")
			}
		})
	}
}

// TestDestdirForms: every way to name the staging root puts the files
// under it.
func TestDestdirForms(t *testing.T) {
	requireRoot(t)
	bin := agentBinary(t)
	for _, tc := range []struct {
		name string
		args func(root string) []string
		env  func(root string) map[string]string
	}{
		{"--destdir DIR", func(r string) []string { return []string{"--destdir", r} }, nil},
		{"--destdir=DIR", func(r string) []string { return []string{"--destdir=" + r + "/"} }, nil},
		{"--prefix DIR", func(r string) []string { return []string{"--prefix", r} }, nil},
		{"DESTDIR=DIR", nil, func(r string) map[string]string { return map[string]string{"DESTDIR": r} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			var o runOpts
			args := []string{"--binary", bin, "--without-bpftrace"}
			if tc.args != nil {
				args = append(args, tc.args(root)...)
			}
			if tc.env != nil {
				o.env = tc.env(root)
			}
			r := runScript(t, o, args...)
			requireCode(t, r, 0)
			require.Contains(t, r.stdout, "installed "+filepath.Join(root, binPath)+"\n")
			require.Equal(t, []string{confPath, unitPath, binPath}, nonDirs(snapshot(t, root)))
		})
	}
}

// TestNotRoot: anyone but root gets status 1 before any other check.
func TestNotRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "stage")
	o := runOpts{env: map[string]string{"NANNYAGENT_INSTALL_UNAME_S": "FreeBSD"}}
	if os.Geteuid() == 0 {
		o.cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		// The checkout must let nobody read the script for this to
		// test it (a clone under /root does not).
		probe := exec.Command("test", "-r", script)
		probe.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
		if err := probe.Run(); err != nil {
			t.Skipf("uid 65534 cannot read %s (%v): the checkout's directories are closed to other users", script, err)
		}
	}
	for _, args := range [][]string{
		{"--destdir", root, "--binary", script},
		{"--destdir", root, "--uninstall"},
		{"--destdir", root, "--purge"},
	} {
		r := runScript(t, o, args...)
		requireCode(t, r, 1)
		require.Contains(t, r.stderr, "install.sh: error: install.sh must run as root")
		require.Contains(t, r.stderr, "sudo ./install.sh "+strings.Join(args, " "))
		require.NoDirExists(t, root)
	}
}

// sourceTree makes a directory holding install.sh and, when main is not
// empty, a module whose cmd/nannyagent is main.
func sourceTree(t *testing.T, main string) string {
	dir := t.TempDir()
	b, err := os.ReadFile(script)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "install.sh"), b, 0o755))
	if main != "" {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "cmd/nannyagent"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/tree\n\ngo 1.24\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "cmd/nannyagent/main.go"), []byte(main), 0o644))
	}
	return dir
}

// TestBuild: without --binary the script builds the checkout beside it:
// 8 without Go, 9 when the build fails, and the built binary installed
// otherwise.
func TestBuild(t *testing.T) {
	requireRoot(t)
	goBin := goTool(t)
	local := map[string]string{"GO": goBin, "GOTOOLCHAIN": "local", "GOFLAGS": ""}
	run := func(t *testing.T, tree string, env map[string]string) (result, string) {
		root := t.TempDir()
		return runScript(t, runOpts{script: filepath.Join(tree, "install.sh"), env: env}, "--destdir", root, "--without-bpftrace"), root
	}

	t.Run("no Go", func(t *testing.T) {
		r, root := run(t, sourceTree(t, "package main\n\nfunc main() {}\n"), map[string]string{"GO": "/nonexistent/go"})
		requireCode(t, r, 8)
		require.Contains(t, r.stderr, "GO=/nonexistent/go is not an executable Go command")
		require.Empty(t, snapshot(t, root))
	})
	t.Run("syntax error", func(t *testing.T) {
		r, root := run(t, sourceTree(t, "package main\n\nfunc main() {\n"), local)
		requireCode(t, r, 9)
		require.Contains(t, r.stderr, "cmd/nannyagent/main.go:4")
		require.Contains(t, r.stderr, "go build failed (its errors are above)")
		require.Empty(t, snapshot(t, root))
	})
	t.Run("no source tree", func(t *testing.T) {
		r, root := run(t, sourceTree(t, ""), local)
		requireCode(t, r, 9)
		require.Contains(t, r.stderr, "there is no nannyagent source tree beside install.sh")
		require.Empty(t, snapshot(t, root))
	})
	t.Run("small tree", func(t *testing.T) {
		r, root := run(t, sourceTree(t, "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"built from the tree\") }\n"), local)
		requireCode(t, r, 0)
		out, err := exec.Command(filepath.Join(root, binPath)).CombinedOutput()
		require.NoError(t, err)
		require.Equal(t, "built from the tree\n", string(out))
	})
	t.Run("this checkout", func(t *testing.T) {
		agentBinary(t) // fills the build cache: install.sh's build then only links
		r, root := run(t, repoRoot, local)
		requireCode(t, r, 0)
		want, err := exec.Command("git", "-C", repoRoot, "describe", "--tags", "--always", "--dirty").Output()
		require.NoError(t, err)
		out, err := exec.Command(filepath.Join(root, binPath), "--version").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, "nannyagent "+string(want), string(out))
	})
}

// pathWithout is a PATH directory with every program of /usr/bin and
// /usr/sbin but the ones named.
func pathWithout(t *testing.T, names ...string) string {
	dir := t.TempDir()
	for _, src := range []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"} {
		ents, err := os.ReadDir(src)
		if err != nil {
			continue
		}
		for _, e := range ents {
			n := e.Name()
			if contains(names, n) {
				continue
			}
			if _, err := os.Lstat(filepath.Join(dir, n)); err == nil {
				continue
			}
			require.NoError(t, os.Symlink(filepath.Join(src, n), filepath.Join(dir, n)))
		}
	}
	return dir
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestBpftraceStaged: into a staging root no package manager runs, so a
// missing bpftrace is fatal only with --with-bpftrace.
func TestBpftraceStaged(t *testing.T) {
	requireRoot(t)
	bin := agentBinary(t)
	noBpftrace := map[string]string{"PATH": pathWithout(t, "bpftrace")}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		flag   string
		code   int
		stdout string
		stderr string
	}{
		{name: "asked for, missing", env: noBpftrace, flag: "--with-bpftrace", code: 7,
			stderr: "bpftrace could not be installed: packages cannot be installed into a staging root"},
		{name: "by default, missing", env: noBpftrace, code: 0, stderr: "warning: bpftrace is not installed"},
		{name: "not wanted, missing", env: noBpftrace, flag: "--without-bpftrace", code: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			args := []string{"--destdir", root, "--binary", bin}
			if tc.flag != "" {
				args = append(args, tc.flag)
			}
			r := runScript(t, runOpts{env: tc.env}, args...)
			requireCode(t, r, tc.code)
			require.Contains(t, r.stderr, tc.stderr)
			if tc.flag == "--without-bpftrace" {
				require.NotContains(t, r.stdout+r.stderr, "bpftrace")
			}
			if tc.code != 0 {
				require.Empty(t, snapshot(t, root))
			}
		})
	}
	t.Run("asked for, present", func(t *testing.T) {
		p, err := exec.LookPath("bpftrace")
		if err != nil {
			t.Skip("bpftrace is not installed here")
		}
		r := runScript(t, runOpts{}, "--destdir", t.TempDir(), "--binary", bin, "--with-bpftrace")
		requireCode(t, r, 0)
		require.Contains(t, r.stdout, "bpftrace: "+p+"\n")
	})
}

// unshareRO runs a command in a mount namespace where every mount is
// read-only but stage: anything the script writes elsewhere fails.
const unshareRO = `set -eu
stage=$1; shift
findmnt -rn -o TARGET | while read -r m; do mount -o remount,bind,ro "$m"; done
mount --bind "$stage" "$stage"
mount -o remount,bind,rw "$stage"
rw=$(findmnt -rn -o TARGET,OPTIONS | awk -v s="$stage" '{o[$1] = $2} END {for (t in o) if (t != s && o[t] !~ /^ro/) print t}')
if [ -n "$rw" ]; then echo "still writable: $rw" >&2; exit 99; fi
exec "$@"
`

func requireUnshare(t *testing.T) {
	for _, p := range []string{"unshare", "findmnt", "mount"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed (util-linux)", p)
		}
	}
	// Root in a container without CAP_SYS_ADMIN cannot make a mount
	// namespace.
	if out, err := exec.Command("unshare", "--mount", "true").CombinedOutput(); err != nil {
		if os.Getenv("NANNYAGENT_REQUIRE_BPF") == "1" {
			t.Fatalf("NANNYAGENT_REQUIRE_BPF=1 but unshare --mount fails: %v: %s", err, out)
		}
		t.Skipf("cannot create a mount namespace here: %v: %s", err, out)
	}
}

// TestStagedWritesOnlyUnderRoot: install, upgrade and uninstall into a
// staging root with the rest of the machine read-only.
func TestStagedWritesOnlyUnderRoot(t *testing.T) {
	requireRoot(t)
	requireUnshare(t)
	bin := agentBinary(t)
	stage := t.TempDir()
	wrap := []string{"unshare", "--mount", "--propagation", "private", "bash", "-c", unshareRO, "unshare-ro", stage}
	o := runOpts{wrap: wrap, env: map[string]string{"NANNYAGENT_INSTALL_SYSTEMD_VERSION": "254"}}
	installed := []string{confPath, unitPath, backoffPin, binPath}
	for _, step := range []struct {
		args  []string
		files []string
	}{
		{[]string{"--binary", bin}, installed},
		{[]string{"--binary", bin, "--force"}, installed},
		{[]string{"--uninstall"}, []string{confPath}},
		{[]string{"--purge"}, nil},
	} {
		r := runScript(t, o, append(step.args, "--destdir", stage, "--without-bpftrace")...)
		requireCode(t, r, 0)
		require.Equal(t, step.files, nonDirs(snapshot(t, stage)), "after %v", step.args)
	}
}

// liveOverlay runs a command in a mount namespace where /etc, /usr/sbin
// and /var/lib are overlays whose changes go to a tmpfs, and /run/systemd
// is hidden (no systemctl), then lists what changed.
const liveOverlay = `set -eu
w=$1; shift
mount -t tmpfs tmpfs "$w"
for d in /etc /usr/sbin /var/lib; do
	n=$(printf %s "$d" | tr / _)
	mkdir -p "$w/upper$n" "$w/work$n"
	mount -t overlay overlay -o "lowerdir=$d,upperdir=$w/upper$n,workdir=$w/work$n" "$d"
done
if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi
set +e
"$@"
status=$?
cd "$w" && find upper_* -printf '%M %p\n' | LC_ALL=C sort >&3
exit $status
`

// TestLiveInstall installs onto the machine itself, in a mount namespace
// whose writes land in overlays: the path that runs the package manager
// (a fake apt-get here) for bpftrace.
func TestLiveInstall(t *testing.T) {
	requireRoot(t)
	requireUnshare(t)
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(b, []byte("\toverlay\n")) {
		t.Skip("the kernel has no overlay file system")
	}
	bin := agentBinary(t)
	base := pathWithout(t, "bpftrace", "apt-get", "dnf", "yum", "zypper", "pacman", "apk")
	host := hostState(t)

	// What a successful live install writes under the overlays.
	installed := []string{
		"-rw------- upper_etc/nannyagent/config.yaml",
		"-rw-r--r-- upper_etc/systemd/system/nannyagent.service",
		"-rwxr-xr-x upper_usr_sbin/nannyagent",
		"drwx------ upper_etc/nannyagent",
		"drwx------ upper_var_lib/nannyagent",
		"drwxr-xr-x upper_etc/systemd",
		"drwxr-xr-x upper_etc/systemd/system",
	}
	for _, tc := range []struct {
		name    string
		aptGet  string // the fake's body; $fake is its directory
		flag    string
		code    int
		log     string
		changes []string
		stderr  string
	}{
		{
			name:    "apt-get installs bpftrace",
			aptGet:  `case $1 in install) printf '#!/bin/sh\n' >"$fake/bpftrace"; chmod 755 "$fake/bpftrace" ;; esac`,
			flag:    "--with-bpftrace",
			code:    0,
			log:     "update -q\ninstall -y -q bpftrace\n",
			changes: installed,
			stderr:  "warning: systemd is not running here",
		},
		{
			name:   "apt-get fails, bpftrace asked for",
			aptGet: `case $1 in install) exit 100 ;; esac`,
			flag:   "--with-bpftrace",
			code:   7,
			log:    "update -q\ninstall -y -q bpftrace\n",
			stderr: "bpftrace could not be installed: apt-get failed",
		},
		{
			name:   "apt-get installs nothing, bpftrace asked for",
			aptGet: `:`,
			flag:   "--with-bpftrace",
			code:   7,
			log:    "update -q\ninstall -y -q bpftrace\n",
			stderr: "apt-get succeeded but bpftrace is not in PATH",
		},
		{
			name:    "apt-get fails, bpftrace optional",
			aptGet:  `case $1 in install) exit 100 ;; esac`,
			code:    0,
			log:     "update -q\ninstall -y -q bpftrace\n",
			changes: installed,
			stderr:  "warning: bpftrace is not installed (apt-get failed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lr := runLive(t, bin, base, nil, map[string]string{"apt-get": tc.aptGet}, tc.flag)
			requireCode(t, lr.result, tc.code)
			require.Contains(t, lr.stderr, tc.stderr)
			require.Equal(t, tc.log, lr.log["apt-get"])
			require.Equal(t, tc.changes, lr.changes)
			require.Equal(t, host, hostState(t), "the machine itself must not change")
		})
	}
}

// liveResult is one install.sh run on the live paths (see runLive).
type liveResult struct {
	result
	// log holds each fake package manager's argument lines.
	log map[string]string
	// changes lists what the run wrote under the overlays.
	changes []string
}

// runLive runs install.sh on the machine's own paths with overlays over
// them (liveOverlay), fake package managers (name → shell body; $fake is
// their directory) first in PATH before base, and extra environment.
func runLive(t *testing.T, bin, base string, env, fakes map[string]string, flag string) liveResult {
	t.Helper()
	fake := t.TempDir()
	for name, body := range fakes {
		script := "#!/bin/sh\nfake=" + fake + "\necho \"$*\" >>" + filepath.Join(fake, name+".log") + "\n" + body + "\n"
		require.NoError(t, os.WriteFile(filepath.Join(fake, name), []byte(script), 0o755))
	}
	changes := filepath.Join(t.TempDir(), "changes")
	// Not t.TempDir: the name of the subtest, commas and all, would end
	// up in the overlay's comma-separated options.
	work, err := os.MkdirTemp("", "nannyagent-overlay-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(work) })
	wrap := []string{"unshare", "--mount", "--propagation", "private", "bash", "-c",
		"exec 3>" + changes + "\n" + liveOverlay, "live-overlay", work}
	args := []string{"--binary", bin}
	if flag != "" {
		args = append(args, flag)
	}
	allEnv := map[string]string{"PATH": fake + ":" + base}
	for k, v := range env {
		allEnv[k] = v
	}
	lr := liveResult{result: runScript(t, runOpts{wrap: wrap, env: allEnv}, args...), log: map[string]string{}}
	for name := range fakes {
		if b, err := os.ReadFile(filepath.Join(fake, name+".log")); err == nil {
			lr.log[name] = string(b)
		}
	}
	list, err := os.ReadFile(changes)
	require.NoError(t, err)
	// The overlays' own upper directories are there whatever happened;
	// what is inside them was written.
	for _, l := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		if strings.Contains(l, "/") {
			lr.changes = append(lr.changes, l)
		}
	}
	return lr
}

// TestLivePackageManagers: on each distribution family install.sh picks
// that family's package manager (the one os-release names first, else
// whichever exists) and asks it for bpftrace with the right arguments.
func TestLivePackageManagers(t *testing.T) {
	requireRoot(t)
	requireUnshare(t)
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(b, []byte("\toverlay\n")) {
		t.Skip("the kernel has no overlay file system")
	}
	bin := agentBinary(t)
	base := pathWithout(t, "bpftrace", "apt-get", "dnf", "yum", "zypper", "pacman", "apk")
	host := hostState(t)
	installs := `case "$*" in *bpftrace*) printf '#!/bin/sh\n' >"$fake/bpftrace"; chmod 755 "$fake/bpftrace" ;; esac`
	for _, tc := range []struct {
		name      string
		osRelease string
		present   []string // fake managers in PATH, some before want in the fallback order
		want      string
		log       string
	}{
		{"fedora prefers dnf over yum", "ID=fedora\n", []string{"apt-get", "yum", "dnf"}, "dnf", "install -y bpftrace\n"},
		{"an old rhel has only yum", "ID=rhel\nID_LIKE=\"fedora\"\n", []string{"apt-get", "yum"}, "yum", "install -y bpftrace\n"},
		{"centos through ID_LIKE", "ID=rocky\nID_LIKE=\"rhel centos fedora\"\n", []string{"apt-get", "dnf"}, "dnf", "install -y bpftrace\n"},
		{"opensuse", "ID=opensuse-leap\nID_LIKE=\"suse opensuse\"\n", []string{"yum", "zypper"}, "zypper", "--non-interactive install bpftrace\n"},
		{"arch, no partial upgrade", "ID=arch\n", []string{"zypper", "pacman"}, "pacman", "-S --noconfirm --needed bpftrace\n"},
		{"alpine", "ID=alpine\n", []string{"pacman", "apk"}, "apk", "add bpftrace\n"},
		{"ubuntu", "ID=ubuntu\nID_LIKE=debian\n", []string{"dnf", "apt-get"}, "apt-get", "update -q\ninstall -y -q bpftrace\n"},
		{"an unknown distribution takes whichever exists", "ID=plan9\n", []string{"zypper"}, "zypper", "--non-interactive install bpftrace\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			osRelease := filepath.Join(t.TempDir(), "os-release")
			require.NoError(t, os.WriteFile(osRelease, []byte(tc.osRelease), 0o644))
			fakes := map[string]string{}
			for _, pm := range tc.present {
				fakes[pm] = installs
			}
			lr := runLive(t, bin, base, map[string]string{"NANNYAGENT_INSTALL_OS_RELEASE": osRelease}, fakes, "--with-bpftrace")
			requireCode(t, lr.result, 0)
			require.Contains(t, lr.stdout, "installing bpftrace with "+tc.want+"\n")
			want := map[string]string{tc.want: tc.log}
			require.Equal(t, want, lr.log, "only %s may run, with these arguments", tc.want)
			require.Equal(t, host, hostState(t), "the machine itself must not change")
		})
	}
}

// hostState is what the live paths look like on the machine itself.
func hostState(t *testing.T) map[string]string {
	out := map[string]string{}
	for _, p := range []string{"/usr/sbin/nannyagent", "/etc/nannyagent", "/var/lib/nannyagent", "/etc/systemd/system/nannyagent.service"} {
		info, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out[p] = "absent"
		case err != nil:
			t.Fatal(err)
		default:
			out[p] = info.Mode().String() + " " + info.ModTime().String()
		}
	}
	return out
}

// systemdVersion is the version systemd-analyze reports, 0 when unknown.
func systemdVersion(t *testing.T, analyze string) int {
	out, err := exec.Command(analyze, "--version").Output()
	require.NoError(t, err)
	m := regexp.MustCompile(`^systemd (\d+)`).FindSubmatch(out)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	return n
}

// verify runs systemd-analyze verify on unit, with ExecStart pointed at
// the staged binary (verify checks that it is executable), and returns
// what it printed.
func verify(t *testing.T, analyze, unit, stagedBin string) string {
	dir := t.TempDir()
	text := strings.Replace(unit, "\nExecStart=/usr/sbin/nannyagent ", "\nExecStart="+stagedBin+" ", 1)
	require.NotEqual(t, unit, text)
	p := filepath.Join(dir, "nannyagent.service")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	cmd := exec.Command(analyze, "verify", p)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify:\n%s", out)
	return string(out)
}

// TestUnit: the unit install.sh writes runs the daemon as the issue
// says, and systemd-analyze verify accepts it without a word; the restart
// backoff drop-in comes only with a systemd that knows its keys.
func TestUnit(t *testing.T) {
	requireRoot(t)
	bin := agentBinary(t)
	root := t.TempDir()
	r := runScript(t, runOpts{}, "--destdir", root, "--binary", bin, "--without-bpftrace")
	requireCode(t, r, 0)
	b, err := os.ReadFile(filepath.Join(root, unitPath))
	require.NoError(t, err)
	unit := string(b)
	for _, line := range []string{
		"ExecStart=/usr/sbin/nannyagent --daemon", "Type=notify", "NotifyAccess=main", "WatchdogSec=60s",
		"Restart=on-failure", "RestartSec=10s", "RestartPreventExitStatus=2", "StandardError=journal",
		"StateDirectory=nannyagent", "StateDirectoryMode=0700", "LimitMEMLOCK=infinity", "WantedBy=multi-user.target",
	} {
		require.Contains(t, strings.Split(unit, "\n"), line)
	}
	for _, d := range []string{"ProtectSystem=", "PrivateTmp=", "NoNewPrivileges=", "RestartSteps="} {
		require.NotRegexp(t, `(?m)^`+d, unit, "%s is left out on purpose (see the unit's comments)", d)
	}
	require.NoDirExists(t, filepath.Join(root, dropinDir))

	r = runScript(t, runOpts{env: map[string]string{"NANNYAGENT_INSTALL_SYSTEMD_VERSION": "254"}},
		"--destdir", root, "--binary", bin, "--without-bpftrace", "--force")
	requireCode(t, r, 0)
	pin, err := os.ReadFile(filepath.Join(root, backoffPin))
	require.NoError(t, err)
	require.Contains(t, string(pin), "\n[Service]\nRestartSteps=10\nRestartMaxDelaySec=10min\n")
	require.Contains(t, string(pin), "\n[Unit]\nStartLimitIntervalSec=0\n")

	// Back to an older systemd: the drop-in goes.
	r = runScript(t, runOpts{}, "--destdir", root, "--binary", bin, "--without-bpftrace", "--force")
	requireCode(t, r, 0)
	require.NoDirExists(t, filepath.Join(root, dropinDir))

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the unit is not verified")
	}
	stagedBin := filepath.Join(root, binPath)
	require.Empty(t, verify(t, analyze, unit, stagedBin))
	if v := systemdVersion(t, analyze); v >= 254 {
		// A section may appear twice in a unit file: the drop-in's keys
		// are checked as part of the unit.
		require.Empty(t, verify(t, analyze, unit+"\n"+string(pin), stagedBin))
	} else {
		t.Logf("systemd %d predates RestartSteps=: the backoff drop-in is not verified", v)
	}
}
