package registry

import (
	"flag"
	"strings"
	"testing"

	"github.com/nannyagent/nannyagent/internal/docgen"
	"github.com/stretchr/testify/require"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the generated part of docs/EBPF_MONITORING.md")

const docsPath = "../../../docs/EBPF_MONITORING.md"

// The catalog reference in the docs is generated from the entries' Info;
// this fails when an entry changed and `make docs` was not run.
func TestCatalogDocsUpToDate(t *testing.T) {
	docgen.Check(t, docsPath, DocsBegin, DocsEnd, Reference(), *updateDocs)
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
