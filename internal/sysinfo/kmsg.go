package sysinfo

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// kmsgRecord is one record of /dev/kmsg (Documentation/ABI/testing/dev-kmsg):
// "prefix,seq,usec,flags[,more];text", then optional " KEY=value"
// continuation lines.
type kmsgRecord struct {
	Level    int // 0 emerg … 7 debug
	Facility int // 0 kernel, others for messages written from user space
	Seq      uint64
	Usec     uint64 // CLOCK_MONOTONIC (local_clock) microseconds
	Text     string
}

// parseKmsgRecord parses the first line of a record (without its newline).
func parseKmsgRecord(line []byte) (kmsgRecord, error) {
	var r kmsgRecord
	head, text, ok := bytes.Cut(line, []byte(";"))
	if !ok {
		return r, errors.New("no ';' between header and text")
	}
	fields := bytes.Split(head, []byte(","))
	if len(fields) < 4 {
		return r, fmt.Errorf("header has %d fields, want at least 4", len(fields))
	}
	prefix, err := strconv.ParseUint(string(fields[0]), 10, 32)
	if err != nil {
		return r, fmt.Errorf("priority: %w", err)
	}
	if r.Seq, err = strconv.ParseUint(string(fields[1]), 10, 64); err != nil {
		return r, fmt.Errorf("sequence: %w", err)
	}
	if r.Usec, err = strconv.ParseUint(string(fields[2]), 10, 64); err != nil {
		return r, fmt.Errorf("timestamp: %w", err)
	}
	r.Level = int(prefix & 7)
	r.Facility = int(prefix >> 3)
	r.Text = string(text)
	return r, nil
}

// kmsgFilter keeps the last keep records of priority warning or worse.
type kmsgFilter struct {
	keep      int
	monoNow   time.Duration
	redact    func(string) string
	lines     []LogLine
	malformed int
	firstErr  error
	pending   []byte
}

const (
	maxKmsgText = 512
	maxKmsgLine = 64 << 10
	// maxKmsgReads bounds the reads of one Collect: a log buffer of
	// CONFIG_LOG_BUF_SHIFT=25 holds about 300,000 short records, and a
	// flood of new ones must not keep the reader going.
	maxKmsgReads = 400000
	levelWarning = 4
)

// add takes bytes as read: /dev/kmsg gives one whole record per read, a
// plain file (a test fixture) any number of lines at once.
func (k *kmsgFilter) add(chunk []byte) {
	k.pending = append(k.pending, chunk...)
	for {
		line, rest, ok := bytes.Cut(k.pending, []byte("\n"))
		if !ok {
			break
		}
		k.line(line)
		k.pending = rest
	}
	if len(k.pending) > maxKmsgLine {
		if k.malformed++; k.firstErr == nil {
			k.firstErr = fmt.Errorf("no line end within %d bytes", maxKmsgLine)
		}
		k.pending = nil
	}
}

func (k *kmsgFilter) flush() {
	if len(k.pending) > 0 {
		k.line(k.pending)
		k.pending = nil
	}
	// The slice kept the older lines until now; drop them.
	if len(k.lines) > k.keep {
		k.lines = append([]LogLine(nil), k.lines[len(k.lines)-k.keep:]...)
	}
}

func (k *kmsgFilter) line(line []byte) {
	if len(line) == 0 || line[0] == ' ' {
		return // a continuation (dictionary) line
	}
	r, err := parseKmsgRecord(line)
	if err != nil {
		if k.malformed++; k.firstErr == nil {
			k.firstErr = err
		}
		return
	}
	if r.Level > levelWarning || isTraceLine(r.Text) {
		return
	}
	age := k.monoNow - time.Duration(r.Usec)*time.Microsecond
	if age < 0 {
		age = 0
	}
	k.lines = append(k.lines, LogLine{Age: age, Priority: r.Level, Text: truncate(k.redact(r.Text), maxKmsgText)})
	// Keep memory bounded on a long log without copying on every line.
	if len(k.lines) >= 4*k.keep {
		k.lines = append(k.lines[:0], k.lines[len(k.lines)-k.keep:]...)
	}
}

// kernelLog reads the kernel log buffer without blocking: /dev/kmsg
// opened O_NONBLOCK returns EAGAIN once every stored record is read. It
// uses raw read(2): an os.File would hand EAGAIN to the poller and wait
// for the next message instead.
func (c *collector) kernelLog(keep int) []LogLine {
	k := &kmsgFilter{keep: keep, monoNow: c.opts.Monotonic(), redact: c.opts.Redact}
	path := c.path("/dev/kmsg")
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		c.warn("kernel log: open %s: %v", path, err)
		return nil
	}
	defer unix.Close(fd)
	buf := make([]byte, 16<<10) // a record is at most 8 KiB (CONSOLE_EXT_LOG_MAX)
	lost := false
	reads := 0
	for ; reads < maxKmsgReads; reads++ {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EPIPE {
			// Records were overwritten while reading; the next read
			// goes on from the oldest one still there.
			lost = true
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			c.warn("kernel log: read %s: %v", path, err)
			break
		}
		if n == 0 {
			break
		}
		k.add(buf[:n])
	}
	k.flush()
	if reads == maxKmsgReads {
		c.warn("kernel log: stopped after %d records", maxKmsgReads)
	}
	if lost {
		c.warn("kernel log: some records were overwritten while reading")
	}
	if k.malformed > 0 {
		c.warn("kernel log: %d malformed records (first: %v)", k.malformed, k.firstErr)
	}
	return k.lines
}

// isTraceLine tells the lines of an oops or warning dump (stack frames,
// registers, code bytes) from the messages that say what happened; a
// single dump is dozens of records and would push those out.
func isTraceLine(s string) bool {
	if s == "" || s[0] == ' ' || s[0] == '\t' {
		return true
	}
	for _, p := range []string{"<TASK>", "</TASK>", "<IRQ>", "</IRQ>", "Call Trace:", "Code: ", "Modules linked in:"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	// Register lines: "RAX: 0000…", "R10: …", "x29: …" (arm64), "pc : …".
	name, rest, ok := strings.Cut(s, ":")
	if !ok || len(name) > 4 || len(rest) < 2 || rest[0] != ' ' {
		return false
	}
	for _, r := range name {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == ' ') {
			return false
		}
	}
	hex := strings.TrimSpace(rest)
	for i, r := range hex {
		if i == 4 {
			return true
		}
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return false
}
