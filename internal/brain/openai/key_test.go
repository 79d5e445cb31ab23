package openai_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nannyagent/nannyagent/internal/brain/openai"
	"github.com/stretchr/testify/require"
)

func TestKeyFromEnv(t *testing.T) {
	t.Setenv("NANNY_TEST_KEY", "  "+key+"\n")
	got, err := openai.KeyFromEnv("NANNY_TEST_KEY")
	require.NoError(t, err)
	require.Equal(t, key, got)

	t.Setenv("NANNY_TEST_EMPTY", " ")
	_, err = openai.KeyFromEnv("NANNY_TEST_EMPTY")
	require.EqualError(t, err, "the API key variable NANNY_TEST_EMPTY (ai.api_key_env) is empty")
	_, err = openai.KeyFromEnv("NANNY_TEST_UNSET_4f1e")
	require.EqualError(t, err, "the API key variable NANNY_TEST_UNSET_4f1e (ai.api_key_env) is not set")
	_, err = openai.KeyFromEnv("")
	require.EqualError(t, err, "no environment variable named for the API key (ai.api_key_env is empty)")
	t.Setenv("NANNY_TEST_BAD", "sk-a\x01b")
	_, err = openai.KeyFromEnv("NANNY_TEST_BAD")
	require.EqualError(t, err, "the API key in NANNY_TEST_BAD: the API key contains a control character at byte 5")
}

func TestKeyFromFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	good := write("good", "\n  "+key+"  \nsecond line ignored\n", 0o600)
	got, err := openai.KeyFromFile(good)
	require.NoError(t, err)
	require.Equal(t, key, got)
	ro := write("ro", key, 0o400)
	got, err = openai.KeyFromFile(ro)
	require.NoError(t, err)
	require.Equal(t, key, got)

	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620} {
		p := write("open", key, mode)
		_, err := openai.KeyFromFile(p)
		require.EqualError(t, err, "API key file "+p+" is readable or writable by group or others (mode "+
			map[os.FileMode]string{0o644: "0644", 0o640: "0640", 0o604: "0604", 0o620: "0620"}[mode]+"): run chmod 600 "+p)
	}
	// A link to an open file is judged by the file.
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(filepath.Join(dir, "open"), link))
	_, err = openai.KeyFromFile(link)
	require.ErrorContains(t, err, "is readable or writable by group or others")

	empty := write("empty", " \n\n", 0o600)
	_, err = openai.KeyFromFile(empty)
	require.EqualError(t, err, "API key file "+empty+" is empty")
	_, err = openai.KeyFromFile(dir)
	require.EqualError(t, err, "API key file "+dir+" is not a regular file")
	_, err = openai.KeyFromFile(filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "API key file: open "+filepath.Join(dir, "missing")+": no such file or directory")
	huge := write("huge", string(make([]byte, 20<<10)), 0o600)
	_, err = openai.KeyFromFile(huge)
	require.EqualError(t, err, "API key file "+huge+" is over 16 KiB: not a key file")
	bad := write("bad", "sk-\x1bX", 0o600)
	_, err = openai.KeyFromFile(bad)
	require.EqualError(t, err, "API key file "+bad+": the API key contains a control character at byte 4")
}
