//go:build !amd64 && !arm64

package safeexec

// No table: SandboxCommand refuses, so nothing runs unsandboxed.
var archTable *seccompTable
