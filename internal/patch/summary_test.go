package patch

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func boolp(b bool) *bool { return &b }

func TestParseSummary(t *testing.T) {
	two := &Summary{UpdatesAvailable: 2, DryRun: boolp(false), Packages: []PackageUpdate{
		{Package: "openssl", CurrentVersion: "3.0.11", NewVersion: "3.0.13"},
		{Package: "curl", CurrentVersion: "unknown", NewVersion: "7.88.2"},
	}}
	for _, c := range []struct {
		name, in string
		want     *Summary
	}{
		{"the scripts' multi-line block", "=== Debian/Ubuntu APT Update Script ===\nDry Run: false\n${EXCLUDE}\n{\n  \"updates_available\": 2,\n  \"packages\": [\n" +
			`    {"package": "openssl", "current_version": "3.0.11", "new_version": "3.0.13"},` + "\n" +
			`    {"package": "curl", "current_version": "unknown", "new_version": "7.88.2"}` + "\n  ],\n  \"dry_run\": false\n}\n\n=== Performing Upgrade ===\n{ not json }\n", two},
		{"the no-updates line", "No updates available\n{\"updates_available\": 0, \"packages\": []}\n", &Summary{Packages: []PackageUpdate{}}},
		{"packages first", `text {"packages": [{"package": "openssl", "current_version": "3.0.11", "new_version": "3.0.13"}, {"package": "curl", "current_version": "unknown", "new_version": "7.88.2"}], "dry_run": false, "updates_available": 2} tail`, two},
		{"the last of two", `{"updates_available": 1, "packages": []} then {"updates_available": 3, "packages": [], "dry_run": true}`, &Summary{UpdatesAvailable: 3, Packages: []PackageUpdate{}, DryRun: boolp(true)}},
		{"a broken last one falls back", `{"updates_available": 1, "packages": []} then {"updates_available": 3, "packages": [`, &Summary{UpdatesAvailable: 1, Packages: []PackageUpdate{}}},
		{"nested: the inner object", `{"result": {"updates_available": 4}}`, &Summary{UpdatesAvailable: 4}},
		{"no summary", "Reading package lists... Done\n", nil},
		{"key in a string", `{"message": "\"updates_available\": 3"}`, nil},
		{"key in text", `"updates_available": 3`, nil},
		{"count a string", `{"updates_available": "3", "packages": []}`, nil},
		{"count a fraction", `{"updates_available": 2.5}`, nil},
		{"count negative", `{"updates_available": -1}`, nil},
		{"packages wrong type", `{"updates_available": 1, "packages": "openssl"}`, nil},
		{"empty", "", nil},
	} {
		got, ok := ParseSummary([]byte(c.in))
		require.Equal(t, c.want != nil, ok, c.name)
		require.Equal(t, c.want, got, c.name)
	}
}

// TestParseSummaryBounded: output made to defeat the search (a brace
// before every key, unterminated strings) ends within the work budget.
func TestParseSummaryBounded(t *testing.T) {
	var b bytes.Buffer
	for b.Len() < 8<<20 {
		b.WriteString(`{"a": "` + strings.Repeat("x", 1000) + ` "updates_available"`)
	}
	_, ok := ParseSummary(b.Bytes())
	require.False(t, ok)
	deep := strings.Repeat(`{"a":`, 100000) + `{"updates_available": 1}`
	s, ok := ParseSummary([]byte(deep))
	require.True(t, ok)
	require.Equal(t, 1, s.UpdatesAvailable)
}

// FuzzParseSummary: any output parses without panicking into a summary
// with a sane count, and a summary the script prints is found whatever
// text surrounds it (text without the key itself).
func FuzzParseSummary(f *testing.F) {
	f.Add("=== APT ===\n", "\n=== Dry Run Complete ===\n", 2, true)
	f.Add("", "", 0, false)
	f.Add(`{"updates_available":`, `}`, 1, false)
	f.Add(`{ "a": [`, `] }`, 7, true)
	f.Add("${X} {\"x\": \"", "\"} {", 3, false)
	f.Fuzz(func(t *testing.T, before, after string, n int, dry bool) {
		for _, in := range []string{before, after, before + after} {
			if s, ok := ParseSummary([]byte(in)); ok {
				require.GreaterOrEqual(t, s.UpdatesAvailable, 0)
			}
		}
		if n < 0 || strings.Contains(before, summaryKey) || strings.Contains(after, summaryKey) {
			return
		}
		want := Summary{UpdatesAvailable: n, DryRun: &dry, Packages: []PackageUpdate{{Package: "p", CurrentVersion: "1", NewVersion: "2"}}}
		js, err := json.Marshal(want)
		require.NoError(t, err)
		got, ok := ParseSummary([]byte(before + "\n" + string(js) + "\n" + after))
		require.True(t, ok, "%q", before+string(js)+after)
		require.Equal(t, &want, got)
	})
}
