package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DaemonState is state.json, beside token.json: what the daemon last
// did, for --status. Only the daemon writes it.
type DaemonState struct {
	PID int `json:"pid"`
	// ProcessStart is the daemon's start in clock ticks since boot
	// (/proc/<pid>/stat field 22): with it, another process that gets the
	// PID later does not read as the daemon.
	ProcessStart  uint64    `json:"process_start"`
	StartedAt     time.Time `json:"started_at"`
	StoppedAt     time.Time `json:"stopped_at,omitzero"`
	LastMetricsAt time.Time `json:"last_metrics_at,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// StatePath is the state file of a token_path
// (/var/lib/nannyagent/state.json by default).
func StatePath(tokenPath string) string { return newFiles(tokenPath).statePath() }

// Running reports whether the process that wrote the state still runs
// and has not said it stopped.
func (s *DaemonState) Running() bool {
	if s.PID <= 0 || (!s.StoppedAt.IsZero() && !s.StoppedAt.Before(s.StartedAt)) {
		return false
	}
	start, err := processStart(s.PID)
	if err != nil {
		return false
	}
	return s.ProcessStart == 0 || s.ProcessStart == start
}

// processStart reads a process's start time from /proc/<pid>/stat.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself: count fields after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, errors.New("malformed stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ReadState reads the daemon's state file; a missing one (the daemon
// never ran) is fs.ErrNotExist in the chain.
func ReadState(tokenPath string) (*DaemonState, error) {
	f := newFiles(tokenPath)
	data, err := f.readPrivate(f.statePath())
	if err != nil {
		return nil, err
	}
	var s DaemonState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is not a state file: %s", f.statePath(), describeJSONError(data, err))
	}
	return &s, nil
}

// StateWriter records the daemon's state. It is safe for concurrent use.
type StateWriter struct {
	f   files
	now func() time.Time
	mu  sync.Mutex
	st  DaemonState
}

// OpenStateWriter starts the state of a daemon that starts now: this
// process's PID and start time, and nothing done yet (the last metrics
// time of an earlier run is kept: --status shows when metrics last left).
func OpenStateWriter(tokenPath string) (*StateWriter, error) {
	w := &StateWriter{f: newFiles(tokenPath), now: time.Now}
	if old, err := ReadState(tokenPath); err == nil {
		w.st.LastMetricsAt = old.LastMetricsAt
	}
	start, err := processStart(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("reading this process's start time: %w", err)
	}
	w.st.PID, w.st.ProcessStart, w.st.StartedAt = os.Getpid(), start, w.now().UTC()
	return w, w.write()
}

// MetricsSent records a metrics sample the backend accepted.
func (w *StateWriter) MetricsSent(at time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.LastMetricsAt = at.UTC()
	return w.write()
}

// Failed records the daemon's latest error.
func (w *StateWriter) Failed(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.LastError, w.st.LastErrorAt = err.Error(), w.now().UTC()
	return w.write()
}

// Stopped records a clean shutdown.
func (w *StateWriter) Stopped() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.StoppedAt = w.now().UTC()
	return w.write()
}

// State is the state as last written.
func (w *StateWriter) State() DaemonState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

func (w *StateWriter) write() error {
	w.st.UpdatedAt = w.now().UTC()
	data, err := json.MarshalIndent(&w.st, "", "  ")
	if err != nil {
		return err
	}
	if err := w.f.checkDir(true); err != nil {
		return err
	}
	return w.f.writeAtomic(w.f.statePath(), data)
}
