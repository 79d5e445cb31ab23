package safeexec

import (
	"os"
	"testing"
)

// TestMain first lets a sandbox child of this test binary enter the
// sandbox, then lets a sandboxed or namespaced copy of it act as a test
// helper (sandboxHelperOp), and only otherwise runs the tests.
func TestMain(m *testing.M) {
	EnterSandboxIfRequested()
	if op := os.Getenv(helperOpEnv); op != "" {
		os.Exit(sandboxHelper(op))
	}
	os.Exit(m.Run())
}
