package procfmt

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCPUListCount(t *testing.T) {
	for in, want := range map[string]int{"0": 1, "0-3": 4, "0-3,6\n": 5, "0-1,4-5,8": 5, "0-3,6,8-9\n": 7, "2-2": 1} {
		n, err := CPUListCount(in)
		require.NoError(t, err, in)
		require.Equal(t, want, n, in)
	}
	for _, in := range []string{"", "a", "x", "3-1", "0-", "-1", "0-4294967296", "0-99999999"} {
		_, err := CPUListCount(in)
		require.Error(t, err, "%q", in)
	}
}

func TestUnescapeOctal(t *testing.T) {
	require.Equal(t, `a b	c\d\9x\`, UnescapeOctal(`a\040b\011c\134d\9x\`))
	require.Equal(t, `a\b\477\0`, UnescapeOctal(`a\134b\477\0`))
	require.Equal(t, "plain", UnescapeOctal("plain"))
}

func FuzzCPUListCount(f *testing.F) {
	f.Add("0-3,8,10-11")
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := CPUListCount(s); err == nil && (n < 1 || n > 1<<20) {
			t.Fatalf("%q counted %d CPUs", s, n)
		}
	})
}
