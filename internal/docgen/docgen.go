// Package docgen keeps the generated parts of the docs (the catalog
// reference, the configuration keys) in step with the code: each sits
// between a begin and an end marker in its page, and a test either
// checks it or, asked to (`make docs`), rewrites it.
package docgen

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Check compares the part of the page at path between the begin and end
// markers (both included, with the end marker's line break) with
// generated, which holds the markers itself; with update it writes the
// page with generated in place instead.
func Check(t testing.TB, path, begin, end, generated string, update bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	doc := string(data)
	require.Equal(t, 1, strings.Count(doc, begin), "%s must hold the begin marker once: %s", path, begin)
	require.Equal(t, 1, strings.Count(doc, end), "%s must hold the end marker once: %s", path, end)
	from, to := strings.Index(doc, begin), strings.Index(doc, end)
	require.Greater(t, to, from, "%s: the end marker comes before the begin marker", path)
	to += len(end)
	if to < len(doc) && doc[to] == '\n' {
		to++
	}
	want := doc[:from] + generated + doc[to:]
	if update {
		require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
		return
	}
	require.Equal(t, want, doc, "%s is stale: run `make docs`", path)
}
