package safeexec

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// canaryState fingerprints every file under dir: name, mode, size, mtime
// and content.
func canaryState(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %d %d\n", path, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		return nil
	})
	require.NoError(t, err)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// makeCanaryTree makes a small tree of files, a hidden one and a
// subdirectory, with old mtimes so that a rewrite of the same bytes still
// shows.
func makeCanaryTree(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, name := range []string{"app.log", "error.log", "data.txt", ".hidden", "sub/nested.conf"} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf("line %d\nerror here\n", i)), 0o644))
		require.NoError(t, os.Chtimes(p, old, old))
	}
	for _, d := range []string{"sub", "."} {
		require.NoError(t, os.Chtimes(filepath.Join(dir, d), old, old))
	}
	return dir
}

// The fingerprint sees every kind of change a command could make,
// including a rewrite of the same bytes (mtime) and a mode change.
func TestCanaryStateSeesChanges(t *testing.T) {
	for name, change := range map[string]func(dir string) error{
		"rewrite same bytes": func(d string) error {
			b, _ := os.ReadFile(filepath.Join(d, "data.txt"))
			return os.WriteFile(filepath.Join(d, "data.txt"), b, 0o644)
		},
		"chmod":  func(d string) error { return os.Chmod(filepath.Join(d, "app.log"), 0o600) },
		"rename": func(d string) error { return os.Rename(filepath.Join(d, "app.log"), filepath.Join(d, "app.log.1")) },
		"create": func(d string) error { return os.WriteFile(filepath.Join(d, "sub", "new"), nil, 0o644) },
		"remove": func(d string) error { return os.Remove(filepath.Join(d, ".hidden")) },
	} {
		dir := makeCanaryTree(t)
		before := canaryState(t, dir)
		require.NoError(t, change(dir), name)
		require.NotEqual(t, before, canaryState(t, dir), name)
	}
}

// Lines the validator accepts, run for real in the sandbox from inside a
// canary tree, leave the tree unchanged: layers 1 and 3 together. A
// deterministic sample of the allowed table keeps the test short (some
// lines read the whole file system or wait on the network).
func TestAcceptedLinesLeaveCanaryUnchanged(t *testing.T) {
	requireSandboxRoot(t)
	dir := makeCanaryTree(t)
	before := canaryState(t, dir)

	var sample []string
	for i := 0; i < len(allowed); i += 6 {
		sample = append(sample, allowed[i])
	}
	o := DefaultOptions()
	o.Dir = dir
	o.Timeout = 2 * time.Second
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	var mu sync.Mutex
	ran := 0
	for _, line := range sample {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res := RunLine(context.Background(), line, o)
			mu.Lock()
			defer mu.Unlock()
			if !res.Refused {
				ran++
			}
		}()
	}
	wg.Wait()
	t.Logf("ran %d of %d sampled lines in the sandbox", ran, len(sample))
	require.True(t, o.Sandbox)
	require.Greater(t, ran, len(sample)/2, "most of the sample must actually run")
	require.Equal(t, before, canaryState(t, dir), "an accepted line changed the canary tree")
}

// canarySeeds are lines that work on the canary tree (and a few that
// must be refused), for the fuzzer to mutate.
var canarySeeds = []string{
	`cat data.txt`,
	`ls -la`,
	`ls -laR . | wc -l`,
	`grep -rn error .`,
	`head -n 1 *.log`,
	`tail -n 2 app.log`,
	`sort data.txt | uniq -c`,
	`sort -k2 -n sub/nested.conf`,
	`awk '{print $1}' app.log`,
	`sed -n 1p data.txt`,
	`sed 's/line/LINE/' data.txt`,
	`find . -name '*.log' -newer data.txt`,
	`stat -c '%n %s %Y' *`,
	`du -a .`,
	`md5sum data.txt error.log`,
	`cut -d' ' -f1 error.log`,
	`tac app.log | head -n 1`,
	`cat data.txt >/dev/null 2>&1 && ls sub || echo none`,
	`sort -o data.txt data.txt`,
	`find . -delete`,
	`sed -i s/line/x/ data.txt`,
	`awk '{print > "x"}' app.log`,
	`echo x > data.txt`,
}

// FuzzAcceptedLineInSandbox: any line the validator accepts, run in the
// sandbox from inside a canary tree, leaves the tree unchanged (names,
// modes, sizes, contents, mtimes). The sandbox runs only for accepted
// lines, with a short timeout and a small output cap, so the fuzzer keeps
// a useful pace; as non-root only the validation runs.
func FuzzAcceptedLineInSandbox(f *testing.F) {
	for _, l := range canarySeeds {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		dir := makeCanaryTree(t)
		p, err := ValidateIn(line, dir)
		if err != nil {
			return
		}
		checkPlan(t, p)
		requireSandboxRoot(t)
		before := canaryState(t, dir)
		o := Options{Timeout: 2 * time.Second, OutputCap: 4 << 10, Sandbox: true, Dir: dir}
		res := Run(context.Background(), p, o)
		if after := canaryState(t, dir); after != before {
			t.Fatalf("accepted line %q changed the canary tree (exit %d, stderr %q)", line, res.ExitCode, res.Stderr)
		}
	})
}
