package daemon

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Notifier speaks systemd's notification protocol (sd_notify(3)): one
// datagram per state change to the unix socket named by NOTIFY_SOCKET.
// It is a few lines over a datagram socket, not worth a dependency.
type Notifier struct {
	addr *net.UnixAddr
	// Watchdog is how often systemd expects WATCHDOG=1 (WATCHDOG_USEC),
	// 0 when the unit has no watchdog.
	Watchdog time.Duration
}

// NotifierFromEnv returns the notifier of the service manager that
// started this process, or nil when there is none (NOTIFY_SOCKET unset).
// getenv is os.Getenv outside tests; pid is the process's own, which
// WATCHDOG_PID must name for the watchdog to be ours.
func NotifierFromEnv(getenv func(string) string, pid int) (*Notifier, error) {
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil, nil
	}
	// A leading @ names a socket in the abstract namespace; the net
	// package maps it to the leading NUL byte the kernel expects.
	if path[0] != '/' && path[0] != '@' {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q is neither an absolute path nor an abstract socket name (@…)", path)
	}
	n := &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
	if us := getenv("WATCHDOG_USEC"); us != "" {
		v, err := strconv.ParseInt(us, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("WATCHDOG_USEC %q is not a positive number of microseconds", us)
		}
		if p := getenv("WATCHDOG_PID"); p == "" || p == strconv.Itoa(pid) {
			n.Watchdog = time.Duration(v) * time.Microsecond
		}
	}
	return n, nil
}

// Notify sends one state ("READY=1", "WATCHDOG=1", "STOPPING=1",
// "STATUS=…"; several separated by newlines). A nil Notifier does
// nothing.
func (n *Notifier) Notify(state string) error {
	if n == nil {
		return nil
	}
	if state == "" {
		return errors.New("sd_notify: empty state")
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}

// WatchdogEvery is how often to send WATCHDOG=1: half the interval
// systemd allows, as sd_watchdog_enabled(3) advises; 0 for none.
func (n *Notifier) WatchdogEvery() time.Duration {
	if n == nil {
		return 0
	}
	return n.Watchdog / 2
}
