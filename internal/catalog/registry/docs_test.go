package registry

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the generated part of docs/EBPF_MONITORING.md")

const docsPath = "../../../docs/EBPF_MONITORING.md"

// The catalog reference in the docs is generated from the entries' Info;
// this fails when an entry changed and `make docs` was not run.
func TestCatalogDocsUpToDate(t *testing.T) {
	data, err := os.ReadFile(docsPath)
	require.NoError(t, err)
	doc := string(data)
	begin := strings.Index(doc, DocsBegin)
	end := strings.Index(doc, DocsEnd)
	require.True(t, begin >= 0 && end > begin, "docs/EBPF_MONITORING.md lacks the generated-reference markers")
	end += len(DocsEnd) + 1
	want := doc[:begin] + Reference() + doc[end:]
	if *updateDocs {
		require.NoError(t, os.WriteFile(docsPath, []byte(want), 0o644))
		return
	}
	require.Equal(t, want, doc, "docs/EBPF_MONITORING.md is stale: run `make docs`")
}

func TestRegistryNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, i := range Infos() {
		require.False(t, seen[i.Name], "duplicate entry %s", i.Name)
		seen[i.Name] = true
		require.NotEmpty(t, i.Answers, i.Name)
		require.NotEmpty(t, i.Reports, i.Name)
		require.NotEmpty(t, i.Attach, i.Name)
		e, ok := Lookup(strings.ToUpper(i.Name))
		require.True(t, ok)
		require.Equal(t, i.Name, e.Info().Name)
	}
}
