package bpftrace

import (
	"strings"
	"testing"

	"github.com/nannyagent/nannyagent/internal/catalog"
	"github.com/stretchr/testify/require"
)

// Output as bpftrace 0.17 prints it at exit (captured on this host).
const sample = `

@a: 10

@c: 1
@h: 
[0]                    1 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |
[1]                    0 |                                                    |
[2, 4)                 0 |                                                    |
[4, 8)                 2 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
[8, 16)                0 |                                                    |
[1K, 2K)               0 |                                                    |
[2K, 4K)               1 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |

@l[bpftrace, 5]: 
[0, 5)                 1 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|

@s[bash]: 3
@s[sshd]: 30
@s[cron]: 3
@neg[x]: -4
@x: count 1, average 4, total 4
`

func TestParseOutput(t *testing.T) {
	var res catalog.Result
	parseOutput(sample, &res)
	require.Equal(t, []catalog.Table{
		{Title: "bpftrace scalar maps", Columns: []string{"map", "value"}, Rows: [][]string{{"@a", "10"}, {"@c", "1"}, {"@neg[x]", "-4"}, {"@x", "count 1, average 4, total 4"}}, TotalRows: 4},
		{Title: "bpftrace map @s", Columns: []string{"key", "value"}, Rows: [][]string{{"sshd", "30"}, {"bash", "3"}, {"cron", "3"}}, TotalRows: 3},
	}, res.Tables)
	require.Len(t, res.Histograms, 2)
	h := res.Histograms[0]
	require.Equal(t, "@h", h.Title)
	require.Equal(t, uint64(4), h.Count)
	require.Equal(t, catalog.Bucket{Low: 0, High: 0, Count: 1}, h.Buckets[0])
	require.Equal(t, catalog.Bucket{Low: 4, High: 7, Count: 2}, h.Buckets[3])
	require.Equal(t, catalog.Bucket{Low: 2048, High: 4095, Count: 1}, h.Buckets[6])
	require.Equal(t, h.Percentile(50), h.P50)
	require.Equal(t, "@l[bpftrace, 5]", res.Histograms[1].Title)
	require.Equal(t, []catalog.Bucket{{Low: 0, High: 4, Count: 1}}, res.Histograms[1].Buckets)
}

func TestParseOutputTopN(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 50; i++ {
		b.WriteString("@[k" + string(rune('A'+i%26)) + string(rune('a'+i/26)) + "]: " + catalog.U(i) + "\n")
	}
	var res catalog.Result
	parseOutput(b.String(), &res)
	require.Len(t, res.Tables, 1)
	require.Len(t, res.Tables[0].Rows, catalog.MaxRows)
	require.Equal(t, 50, res.Tables[0].TotalRows)
	require.Equal(t, "49", res.Tables[0].Rows[0][1])
}

func TestCapped(t *testing.T) {
	c := newCapped(10)
	c.Write([]byte("abc"))
	require.Equal(t, "abc", c.String())
	c.Write([]byte("defgh"))
	require.Equal(t, "abcdefgh", c.String())
	c.Write([]byte("ijklmnopqrstuvwxyz"))
	require.Equal(t, 26, c.Total())
	require.Equal(t, 16, c.Dropped())
	require.Equal(t, "abcde\n…[16 bytes truncated]…\nvwxyz", c.String())
	for _, s := range []string{"1", "2", "3"} {
		c.Write([]byte(s))
	}
	require.Equal(t, "abcde\n…[19 bytes truncated]…\nyz123", c.String())
}

func TestProbes(t *testing.T) {
	script := `// count opens
BEGIN { printf("start {\n"); }
tracepoint:syscalls:sys_enter_openat,
tracepoint:syscalls:sys_enter_open /comm == "a/b"/ { @[comm] = count(); if (1) { @x = 1; } }
uprobe:/bin/bash:readline { @r = count(); }
END { clear(@x); }`
	require.Equal(t, []string{"BEGIN", "tracepoint:syscalls:sys_enter_openat", "tracepoint:syscalls:sys_enter_open", "uprobe:/bin/bash:readline", "END"}, Probes(script))
}

func FuzzParseOutput(f *testing.F) {
	f.Add(sample)
	f.Add("@h:\n[1M, ...) 3 |@@|\n")
	f.Add("@[a]: 18446744073709551615\n@[b]: 99999999999999999999\n")
	f.Fuzz(func(t *testing.T, out string) {
		var res catalog.Result
		parseOutput(out, &res)
		for _, h := range res.Histograms {
			var n uint64
			for _, b := range h.Buckets {
				n += b.Count
			}
			if n != h.Count {
				t.Fatalf("histogram count %d != bucket sum %d", h.Count, n)
			}
		}
		_ = Probes(out)
		_ = CheckScript(out)
	})
}
