package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// Median of xs (xs is sorted in place).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// Process is a child whose output is watched for a line that marks it
// ready (bpftrace's "Attaching N probes", nannyagent's "traces attached").
type Process struct {
	Cmd     *exec.Cmd
	Ready   time.Duration // from start to the ready line
	output  strings.Builder
	done    chan struct{}
	waitErr error
}

// StartUntil starts cmd and returns once a line containing marker appears
// on stdout or stderr (or the process exits, or timeout passes).
func StartUntil(cmd *exec.Cmd, marker string, timeout time.Duration) (*Process, error) {
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.waitErr = cmd.Wait()
		pw.Close()
	}()
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		seen := false
		for sc.Scan() {
			line := sc.Text()
			p.output.WriteString(line + "\n")
			if !seen && strings.Contains(line, marker) {
				seen = true
				p.Ready = time.Since(start)
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		if !seen {
			close(ready)
		}
	}()
	select {
	case <-ready:
	case <-time.After(timeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return nil, fmt.Errorf("%s: no %q within %s; output:\n%s", cmd.Path, marker, timeout, p.output.String())
	}
	if p.Ready == 0 {
		<-p.done
		return nil, fmt.Errorf("%s exited before %q: %v; output:\n%s", cmd.Path, marker, p.waitErr, p.output.String())
	}
	return p, nil
}

// Stop sends SIGINT (re-sent every second: bpftrace 0.17 may miss one
// until its next event) and waits; SIGKILL after 10 s.
func (p *Process) Stop() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = p.Cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
			return nil
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			return errors.New("did not stop on SIGINT")
		}
	}
}

// Wait waits for the process to end by itself.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-ctx.Done():
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return ctx.Err()
	}
}

// Output is everything the process printed.
func (p *Process) Output() string { return p.output.String() }

// PeakRSSMB is the process's peak resident set, after it ended.
func (p *Process) PeakRSSMB() float64 {
	ru, ok := p.Cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

// ProgramIDs lists every BPF program loaded on the machine.
func ProgramIDs() map[ebpf.ProgramID]bool {
	ids := map[ebpf.ProgramID]bool{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return ids
		}
		ids[next] = true
		id = next
	}
}

// NewPrograms opens the programs loaded since before was taken.
func NewPrograms(before map[ebpf.ProgramID]bool) []*ebpf.Program {
	var out []*ebpf.Program
	for id := range ProgramIDs() {
		if before[id] {
			continue
		}
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Cost is the BPF time spent by a set of programs.
type Cost struct {
	Runtime  time.Duration
	MaxCount uint64 // the most-run program's count: one run per event
}

// ProgramCost sums run time over progs (kernel.bpf_stats_enabled must be
// on). Every program of an entry or a one-liner runs once per event, so
// total time / the largest run count is the BPF time per event.
func ProgramCost(progs []*ebpf.Program) (Cost, error) {
	var c Cost
	for _, p := range progs {
		st, err := p.Stats()
		if err != nil {
			return c, err
		}
		c.Runtime += st.Runtime
		if st.RunCount > c.MaxCount {
			c.MaxCount = st.RunCount
		}
	}
	return c, nil
}

// Sub is the cost accrued between two readings.
func (c Cost) Sub(before Cost) Cost {
	return Cost{Runtime: c.Runtime - before.Runtime, MaxCount: c.MaxCount - before.MaxCount}
}

// PerEvent is the BPF time per event in nanoseconds.
func (c Cost) PerEvent() float64 {
	if c.MaxCount == 0 {
		return 0
	}
	return float64(c.Runtime.Nanoseconds()) / float64(c.MaxCount)
}
