package cli

import (
	"bytes"
	"testing"

	"github.com/nannyagent/nannyagent/internal/diagnose"
	"github.com/nannyagent/nannyagent/internal/protocol"
	"github.com/stretchr/testify/require"
)

func TestOtherFindingsLeaveOutTheChosenOne(t *testing.T) {
	rep := &diagnose.Report{Findings: []protocol.Finding{
		{Title: "Inodes exhausted on /var", Severity: "critical", RootCause: "many small files"},
		{Title: "Swap 80% used", Severity: "warning"},
	}}
	var b bytes.Buffer
	renderFindings(&b, rep, func(s string) string { return s }, "Inodes exhausted on /var. many small files")
	require.NotContains(t, b.String(), "Inodes exhausted")
	require.Contains(t, b.String(), "- [warning] Swap 80% used")
}
