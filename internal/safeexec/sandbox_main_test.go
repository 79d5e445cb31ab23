package safeexec

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// noLandlockEnv makes this test binary, and the sandbox children made of
// it, play a kernel built without Landlock.
const noLandlockEnv = "NANNYAGENT_SANDBOX_TEST_NO_LANDLOCK"

// fakeNoLandlock makes the Landlock probe answer ENOSYS until the
// returned function restores it.
func fakeNoLandlock() (restore func()) {
	old := landlockVersion
	landlockVersion = func() (uintptr, unix.Errno) { return 0, unix.ENOSYS }
	return func() { landlockVersion = old }
}

// TestMain first lets a sandbox child of this test binary enter the
// sandbox, then lets a sandboxed or namespaced copy of it act as a test
// helper (sandboxHelperOp), and only otherwise runs the tests.
func TestMain(m *testing.M) {
	if os.Getenv(noLandlockEnv) == "1" {
		fakeNoLandlock()
	}
	EnterSandboxIfRequested()
	if op := os.Getenv(helperOpEnv); op != "" {
		os.Exit(sandboxHelper(op))
	}
	os.Exit(m.Run())
}
