package daemon

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// listen opens a datagram socket as systemd's notify socket.
func listen(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return path, c
}

func readState(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(waitFor)))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestNotifier(t *testing.T) {
	path, c := listen(t)
	n, err := NotifierFromEnv(envOf(map[string]string{"NOTIFY_SOCKET": path}), 42)
	require.NoError(t, err)
	require.NoError(t, n.Notify("READY=1"))
	require.Equal(t, "READY=1", readState(t, c))
	require.NoError(t, n.Notify("STATUS=x\nWATCHDOG=1"))
	require.Equal(t, "STATUS=x\nWATCHDOG=1", readState(t, c))
	require.Zero(t, n.WatchdogEvery())
	require.ErrorContains(t, n.Notify(""), "empty state")

	// No service manager: nothing to do, and a nil Notifier is usable.
	none, err := NotifierFromEnv(envOf(nil), 42)
	require.NoError(t, err)
	require.Nil(t, none)
	require.NoError(t, none.Notify("READY=1"))
	require.Zero(t, none.WatchdogEvery())

	// The watchdog is ours only when WATCHDOG_PID names this process.
	for _, tc := range []struct {
		pid  string
		want time.Duration
	}{{"", 5 * time.Second}, {"42", 5 * time.Second}, {"43", 0}} {
		n, err := NotifierFromEnv(envOf(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": tc.pid}), 42)
		require.NoError(t, err)
		require.Equal(t, tc.want, n.WatchdogEvery(), "WATCHDOG_PID %q", tc.pid)
	}

	for _, bad := range []map[string]string{
		{"NOTIFY_SOCKET": "relative.sock"},
		{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"},
		{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "-5"},
	} {
		_, err := NotifierFromEnv(envOf(bad), 42)
		require.Error(t, err, "%v", bad)
	}

	// A socket nobody listens on is an error to log, not a crash.
	gone, err := NotifierFromEnv(envOf(map[string]string{"NOTIFY_SOCKET": filepath.Join(t.TempDir(), "gone.sock")}), 42)
	require.NoError(t, err)
	require.ErrorContains(t, gone.Notify("READY=1"), "sd_notify")
}

func TestAbstractSocket(t *testing.T) {
	name := "@nannyagent-test-" + strconv.Itoa(int(time.Now().UnixNano()))
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	require.NoError(t, err)
	defer c.Close()
	n, err := NotifierFromEnv(envOf(map[string]string{"NOTIFY_SOCKET": name}), 1)
	require.NoError(t, err)
	require.NoError(t, n.Notify("READY=1"))
	require.Equal(t, "READY=1", readState(t, c))
}

// TestDaemonNotifies: READY=1 once the components are started, WATCHDOG=1
// at half the watchdog interval, STOPPING=1 on the way out.
func TestDaemonNotifies(t *testing.T) {
	noLeaks(t)
	path, c := listen(t)
	n, err := NotifierFromEnv(envOf(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"}), 1)
	require.NoError(t, err)
	e := newEnv(t, envOptions{})
	e.opts.Notifier = n
	d, err := New(e.opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	require.Equal(t, "READY=1\nSTATUS=running", readState(t, c))
	require.Equal(t, "WATCHDOG=1", readState(t, c))
	require.Equal(t, "WATCHDOG=1", readState(t, c))
	cancel()
	require.NoError(t, <-done)
	for {
		s := readState(t, c)
		if s != "WATCHDOG=1" {
			require.Equal(t, "STOPPING=1", s)
			break
		}
	}
}
