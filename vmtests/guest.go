package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Guest settings: no KVM here, so TCG; thread=single because
// multi-threaded TCG with two vCPUs now and then crashes 6.12 kernels
// while they patch their own code.
const (
	guestMemory = "1G"
	guestCPUs   = "2"
	// loglevel=3 keeps kernel chatter off the console the results are
	// parsed from (the init prints dmesg after a failure); trust_cpu
	// seeds the RNG from the emulated RDRAND so Go's getrandom does not
	// wait for entropy on old kernels. no_timer_check: at boot the kernel
	// waits a calibrated delay for a timer interrupt through the IO-APIC
	// and panics ("IO-APIC + timer doesn't work!") when none came; under
	// TCG on a busy host the emulated timer can be later than that delay.
	kernelCmdline = "console=ttyS0 loglevel=3 panic=-1 mitigations=off random.trust_cpu=on no_timer_check rdinit=/init"
)

// Boot describes one guest run.
type Boot struct {
	Kernel    Kernel
	Image     *Cached
	Initramfs string        // qemu path: the cpio with init, busybox, tests
	Stage     string        // vng path: directory the init runs from (shared /)
	Dir       string        // per-kernel run directory on the host
	Timeout   time.Duration // the whole run
	Idle      time.Duration // the console silent this long is a hang
}

func (b Boot) consoleLog() string { return filepath.Join(b.Dir, "console.log") }
func (b Boot) statusLog() string  { return filepath.Join(b.Dir, "status.log") }

func qemuCommand(b Boot) []string {
	return []string{"qemu-system-x86_64",
		"-name", "vmtest-" + b.Kernel.Name,
		"-accel", "tcg,thread=single",
		"-cpu", "max",
		"-smp", guestCPUs,
		"-m", guestMemory,
		"-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", b.Image.Vmlinuz,
		"-initrd", b.Initramfs,
		"-append", kernelCmdline,
		// ttyS0: console and test output; ttyS1: the exit status.
		"-serial", "file:" + b.consoleLog(),
		"-serial", "file:" + b.statusLog(),
	}
}

// vngCommand boots through virtme-ng: the guest shares the host's / and
// runs the same init from the staging directory; the status goes to a
// file there instead of a serial port.
func vngCommand(b Boot) []string {
	return []string{"vng", "--run", b.Image.Vmlinuz, "--memory", guestMemory, "--cpus", guestCPUs, "--user", "root", "--",
		"env", "VMTEST_ROOT=" + b.Stage, "VMTEST_STATUS=" + b.statusLog(),
		"VMTEST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + filepath.Join(b.Stage, "applets"),
		"/bin/busybox", "sh", filepath.Join(b.Stage, "init")}
}

// GuestRun is what came back from a guest.
type GuestRun struct {
	Console string
	Exit    int    // the guest init's status; -1 when none came back
	Via     string // "status port", "console marker" or ""
	Err     error  // boot failure, hang or a missing status
	Wall    time.Duration
}

var exitMarker = regexp.MustCompile(`(?m)^(?:=== )?VMTEST-EXIT (\d+)\s*$`)

// guestExit reads the exit status from the status port's file, falling
// back to the console marker (e.g. when the second port lost the line).
func guestExit(status, console string) (int, string) {
	if m := exitMarker.FindStringSubmatch(status); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, "status port"
	}
	if m := exitMarker.FindStringSubmatch(console); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n, "console marker"
	}
	return -1, ""
}

func runGuest(ctx context.Context, b Boot, argv []string, useVng bool) GuestRun {
	start := time.Now()
	_ = os.Remove(b.consoleLog())
	_ = os.Remove(b.statusLog())
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	// A slow guest (TCG on a busy host runs several times slower) keeps
	// printing, a hung one falls silent: the init bounds every test binary
	// and prints as each starts and ends, so a silence longer than that
	// bound is a hang whatever the pace.
	ctx, hung := context.WithCancelCause(ctx)
	defer hung(nil)
	go watchConsole(ctx, b.consoleLog(), b.Idle, hung)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if useVng {
		f, err := os.Create(b.consoleLog())
		if err != nil {
			return GuestRun{Exit: -1, Err: err}
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	err := cmd.Run()
	r := GuestRun{Wall: time.Since(start)}
	console, _ := os.ReadFile(b.consoleLog())
	status, _ := os.ReadFile(b.statusLog())
	// The guest's tty turns every "\n" into "\r\n".
	r.Console = strings.ReplaceAll(string(console), "\r\n", "\n")
	r.Exit, r.Via = guestExit(string(status), r.Console)
	switch {
	case errors.Is(context.Cause(ctx), errSilent):
		r.Err = fmt.Errorf("guest hung: console silent for %s (killed); console tail:\n%s", b.Idle, tail(r.Console, 15))
		r.Exit = -1
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		r.Err = fmt.Errorf("guest hung: no exit status after %s (killed); console tail:\n%s", b.Timeout, tail(r.Console, 15))
		r.Exit = -1
	case r.Exit < 0 && err != nil:
		r.Err = fmt.Errorf("guest did not come back: %v: %s; console tail:\n%s", err, strings.TrimSpace(out.String()), tail(r.Console, 15))
	case r.Exit < 0:
		r.Err = fmt.Errorf("guest stopped without reporting an exit status (boot failure or crash); console tail:\n%s", tail(r.Console, 15))
	case useVng && err != nil && r.Exit == 0:
		// vng exits 255 when the command's status did not come back.
		r.Err = fmt.Errorf("vng: %v although the guest reported 0", err)
	}
	return r
}

var errSilent = errors.New("console silent")

// watchConsole cancels with errSilent once the console file has not grown
// for idle, until ctx ends.
func watchConsole(ctx context.Context, path string, idle time.Duration, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(min(time.Second, idle/4))
	defer tick.Stop()
	size, since := int64(-1), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			var n int64
			if fi, err := os.Stat(path); err == nil {
				n = fi.Size()
			}
			if n != size {
				size, since = n, now
			} else if now.Sub(since) > idle {
				cancel(errSilent)
				return
			}
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\*?;&|<>()[]{}!#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
