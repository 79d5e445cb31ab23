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
func canaryState(t *testing.T, dir string) string {
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

// Lines the validator accepts, run for real in the sandbox from inside a
// canary tree, leave the tree unchanged: layers 1 and 3 together. A
// deterministic sample of the allowed table keeps the test short (some
// lines read the whole file system or wait on the network).
func TestAcceptedLinesLeaveCanaryUnchanged(t *testing.T) {
	requireSandboxRoot(t)
	dir := t.TempDir()
	for i, name := range []string{"app.log", "error.log", "data.txt", ".hidden", "sub/nested.conf"} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf("line %d\nerror here\n", i)), 0o644))
	}
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
