package catalogtest

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUniqueComm(t *testing.T) {
	a := UniqueComm(t, "sig-sh")
	prefix, tag, ok := strings.Cut(a, "-sh-")
	require.True(t, ok, a)
	assert.Equal(t, "sig", prefix)
	assert.Len(t, tag, tagLen)
	for _, c := range tag {
		assert.True(t, c >= 'a' && c <= 'z' || c >= '0' && c <= '9', "tag %q", tag)
	}
	assert.Equal(t, a, UniqueComm(t, "sig-sh"), "one name per prefix in a process")
	assert.NotEqual(t, a, UniqueComm(t, "sig-tgt"))

	longest := UniqueComm(t, "exec_ok8")
	assert.Len(t, longest, CommLen, "a full-length prefix fills the comm exactly")
}

func TestUniqueUID(t *testing.T) {
	uid := UniqueUID()
	assert.GreaterOrEqual(t, uid, uint32(uidBase))
	assert.Less(t, uid, uint32(uidBase+uidSpan))
	assert.Equal(t, uid, UniqueUID(), "one uid per process")
}

func TestUniqueCommRefusesBadPrefixes(t *testing.T) {
	for _, c := range []struct{ prefix, want string }{
		{"", `prefix "" is 0 bytes: give 1 to 8`},
		{"nanny-exec", `prefix "nanny-exec" is 10 bytes: give 1 to 8`},
		{"a/b", `prefix "a/b" has '/' at byte 1: use only a-z, 0-9, '-' and '_'`},
		{"Exec", `prefix "Exec" has 'E' at byte 0`},
	} {
		err := checkCommPrefix(c.prefix)
		require.Error(t, err, c.prefix)
		assert.Contains(t, err.Error(), c.want)
	}
}

// The name lands on the thread alone, and goes back at the end of the
// test: the leader (the process's name) keeps or gets back its own.
func TestThreadSetComm(t *testing.T) {
	leader, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	name := UniqueComm(t, "thr")
	t.Run("named", func(t *testing.T) {
		th := LockedThread(t)
		th.SetComm(t, name)
		got, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", th.TID))
		require.NoError(t, err)
		assert.Equal(t, name+"\n", string(got))
		if th.TID != uint32(os.Getpid()) {
			now, err := os.ReadFile("/proc/self/comm")
			require.NoError(t, err)
			assert.Equal(t, string(leader), string(now), "another thread's name")
		}
	})
	after, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	assert.Equal(t, string(leader), string(after))

	require.ErrorContains(t, setThreadComm("sixteen-bytes-xx"), "longer than the kernel's 15 bytes")
}
