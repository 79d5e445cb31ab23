package catalog

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"0": {0}, "0-3": {0, 1, 2, 3}, "0-1,4,6-7": {0, 1, 4, 6, 7}} {
		got, err := ParseCPUList(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "x", "3-1", "1-x", "1-y", "-1"} {
		_, err := ParseCPUList(bad)
		assert.Error(t, err, bad)
	}
}

func FuzzParseCPUList(f *testing.F) {
	f.Add("0-3,5")
	f.Add("1-")
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := ParseCPUList(s)
		if err == nil && len(cpus) == 0 {
			t.Fatal("no error and no CPUs")
		}
	})
}
