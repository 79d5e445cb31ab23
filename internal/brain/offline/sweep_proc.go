package offline

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nannyagent/nannyagent/internal/sysinfo"
)

// answerUtilities exit non-zero as an answer ("no match", "not equal",
// "not running"), not as a failure, so their exits are not crashes.
var answerUtilities = map[string]bool{
	"grep": true, "egrep": true, "fgrep": true, "zgrep": true, "rg": true, "readlink": true, "test": true,
	"[": true, "false": true, "diff": true, "cmp": true, "which": true, "pgrep": true, "pidof": true,
	"getent": true, "expr": true, "tput": true, "stty": true, "tty": true, "systemctl": true,
	"mountpoint": true, "dpkg-query": true, "ping": true,
}

// crashSignals are the signals of a program fault (they dump core by
// default); SIGTERM, SIGINT, SIGHUP and SIGPIPE are someone ending it.
var crashSignals = []string{"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "SIGSYS", "SIGTRAP"}
var endSignals = []string{"SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE", "SIGQUIT"}

func hasPrefixAny(s string, list []string) bool {
	for _, p := range list {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// unitJournal are the lines of `journalctl -u UNIT` outputs.
func unitJournal(v *view, unit string) []string {
	var out []string
	for _, r := range v.output("journalctl -u " + unit) {
		for _, line := range strings.Split(r.Stdout, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "-- ") {
				continue
			}
			if m := journalStampRE.FindStringSubmatch(line); m != nil {
				line = line[len(m[0]):]
			}
			out = append(out, line)
		}
	}
	return out
}

// startCauses map what a failing program or systemd logs to why it
// fails; the first pattern found in a unit's journal wins.
var startCauses = []struct {
	re    *regexp.Regexp
	cause string
}{
	{regexp.MustCompile(`(?i)address already in use|EADDRINUSE`), "it cannot bind its port because another process already listens there (EADDRINUSE)"},
	{regexp.MustCompile(`(?i)permission denied|EACCES|operation not permitted`), "it is denied access to a file, directory or port it needs (permission denied)"},
	{regexp.MustCompile(`status=203/EXEC`), "systemd cannot execute its ExecStart= program (missing, not executable, or a bad interpreter line)"},
	{regexp.MustCompile(`(?i)no such file or directory|ENOENT`), "a file it needs does not exist (a configuration, socket directory or binary)"},
	{regexp.MustCompile(`(?i)too many open files|EMFILE`), "it runs out of file descriptors (EMFILE)"},
	{regexp.MustCompile(`(?i)no space left on device|ENOSPC`), "a filesystem it writes to is full (ENOSPC)"},
	{regexp.MustCompile(`(?i)out of memory|oom-kill|status=9/KILL`), "it is killed for memory (OOM killer)"},
	{regexp.MustCompile(`(?i)segmentation fault|core-dump|status=11/SEGV|status=6/ABRT`), "it crashes (segmentation fault or abort)"},
	{regexp.MustCompile(`(?i)syntax error|invalid|unknown directive|configuration.*(error|fail)`), "its configuration is invalid"},
}

var portInLineRE = regexp.MustCompile(`:(\d{1,5})\b`)

func checkServices(v *view, fs *findings) {
	restarting := map[string]bool{}
	for _, u := range v.f.RestartingUnits {
		if u.Restarts < ServiceRestarts && u.SubState != "auto-restart" {
			continue
		}
		restarting[u.Name] = true
		f := fs.get("service.restarting", u.Name, sevCritical)
		f.add("systemd", "%s is %s/%s and was restarted %d times (last result: %s)", u.Name, u.ActiveState, u.SubState, u.Restarts, orDefault(u.Result, "unknown"))
		f.set("unit", u.Name)
		serviceCause(v, f, u, true)
	}
	for _, u := range v.f.FailedUnits {
		if restarting[u.Name] {
			continue
		}
		f := fs.get("service.failed", u.Name, sevWarning)
		f.add("systemd", "%s is %s/%s (result: %s, %d restarts)", u.Name, u.ActiveState, u.SubState, orDefault(u.Result, "unknown"), u.Restarts)
		f.set("unit", u.Name)
		serviceCause(v, f, u, false)
	}
}

func serviceCause(v *view, f *finding, u sysinfo.Unit, looping bool) {
	lines := unitJournal(v, u.Name)
	cause := ""
	for _, c := range startCauses {
		for _, l := range lines {
			if c.re.MatchString(l) {
				cause = c.cause
				f.add("journal", "journal of %s: %s", u.Name, clip(l, 200))
				if strings.Contains(c.cause, "EADDRINUSE") {
					if m := portInLineRE.FindStringSubmatch(l); m != nil {
						f.set("port", m[1])
					}
				}
				break
			}
		}
		if cause != "" {
			break
		}
	}
	if looping {
		f.title = fmt.Sprintf("%s keeps restarting (%d restarts)", u.Name, u.Restarts)
		f.rootCause = fmt.Sprintf("%s fails soon after each start and systemd restarts it again and again", u.Name)
	} else {
		f.title = fmt.Sprintf("%s has failed (%s)", u.Name, orDefault(u.Result, u.SubState))
		f.rootCause = fmt.Sprintf("%s stopped with an error and is not running", u.Name)
	}
	if cause != "" {
		f.rootCause += ": " + cause + "."
		f.conf = 2
	} else {
		f.rootCause += "; its journal says why (the last lines before each exit)."
		f.conf = 1
	}
	if p := f.vars["port"]; p != "" {
		if l, ok := holder(v, p); ok {
			f.add("listeners", "port %s is held by %s", p, l)
			f.rootCause += fmt.Sprintf(" Port %s is held by %s.", p, l)
		}
	}
	f.fix = []string{
		fmt.Sprintf("Read why it fails: journalctl -u %s -n 50 --no-pager; systemctl status %s", u.Name, u.Name),
		"Fix the cause the log names, then: systemctl reset-failed " + u.Name + " && systemctl start " + u.Name,
	}
}

// holder names the process listening on port (from ss -ltnp).
func holder(v *view, port string) (string, bool) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", false
	}
	ls, _ := v.listeners()
	for _, l := range ls {
		if l.port != p {
			continue
		}
		if l.comm != "" {
			return fmt.Sprintf("%s (pid %d, listening on %s)", l.comm, l.pid, l.addr), true
		}
		return "a process (listening on " + l.addr + ")", true
	}
	return "", false
}

// exitCounts are one program's abnormal exits in one exit trace.
type exitCounts struct {
	comm     string
	total    int
	crash    int
	statuses []string
	lifetime string
	ppids    map[string]int
}

// exitsByComm reads the exit traces; a program seen by several (an
// unfiltered and a filtered one, in different rounds) keeps the trace
// where it exited most, so counts stay counts of one window.
func exitsByComm(v *view) []*exitCounts {
	var order []string
	best := map[string]*exitCounts{}
	for _, tb := range v.tables("exit", "process exits by command and status") {
		these := map[string]*exitCounts{}
		var local []string
		for _, r := range tb.rows {
			comm, status := tb.get(r, "comm"), tb.get(r, "status")
			n := int(tb.num(r, "count"))
			if status == "exit 0" || hasPrefixAny(status, endSignals) || v.own[comm] || answerUtilities[comm] {
				continue
			}
			e := these[comm]
			if e == nil {
				e = &exitCounts{comm: comm, ppids: map[string]int{}}
				these[comm] = e
				local = append(local, comm)
			}
			e.total += n
			if hasPrefixAny(status, crashSignals) {
				e.crash += n
			}
			e.statuses = append(e.statuses, fmt.Sprintf("%s ×%d", status, n))
			if e.lifetime == "" {
				e.lifetime = tb.get(r, "mean_lifetime")
			}
		}
		for _, st := range v.tables("exit", "abnormal exits") {
			if st.res != tb.res {
				continue
			}
			for _, r := range st.rows {
				if e := these[st.get(r, "comm")]; e != nil {
					e.ppids[st.get(r, "ppid")]++
				}
			}
		}
		for _, c := range local {
			if old, ok := best[c]; !ok || these[c].total > old.total {
				if !ok {
					order = append(order, c)
				}
				best[c] = these[c]
			}
		}
	}
	out := make([]*exitCounts, 0, len(order))
	for _, c := range order {
		out = append(out, best[c])
	}
	return out
}

func checkExits(v *view, fs *findings) {
	for _, e := range exitsByComm(v) {
		if e.total < CrashRepeat {
			if f := fs.find("process.crashing", e.comm); f == nil {
				continue
			}
		}
		sev := sevWarning
		if e.crash > 0 {
			sev = sevCritical
		}
		f := fs.get("process.crashing", e.comm, sev)
		d := v.traceSeconds("exit")
		f.add("trace exit", "exit: %s exited abnormally %d times in %s (%s), mean lifetime %s", e.comm, e.total, d, strings.Join(uniq(e.statuses), ", "), orDefault(e.lifetime, "unknown"))
		f.set("comm", e.comm)
		var parents []string
		for p, n := range e.ppids {
			if n >= 2 {
				parents = append(parents, p)
			}
		}
		if len(parents) == 1 {
			f.add("trace exit", "exit: each time started again by the same parent (pid %s)", parents[0])
		}
	}
	for _, f := range fs.ofKind("process.crashing") {
		c := f.subject
		f.title = fmt.Sprintf("%s keeps exiting abnormally", c)
		if f.sev == sevCritical {
			f.title = fmt.Sprintf("%s keeps crashing", c)
		}
		f.rootCause = fmt.Sprintf("%s exits with an error or a fault signal again and again: it fails at (or soon after) start, and whatever supervises it starts it again.", c)
		f.fix = []string{
			fmt.Sprintf("Run it by hand to see its error, or read its log (journalctl -t %s, its own log file)", c),
			fmt.Sprintf("See which system calls fail for it: nannyagent trace run syscalls,open --comm %s --failed", c),
		}
		f.conf = 1
	}
}

// traceSeconds is the duration of entry's traces as text ("4s").
func (v *view) traceSeconds(entry string) string {
	for _, r := range v.results(entry) {
		if s := r.Seconds(); s > 0 {
			return strconv.FormatFloat(s, 'f', 0, 64) + " s"
		}
	}
	return "the trace"
}

// deniedOK are paths where EACCES/EPERM is a probe, not a problem.
func deniedNoise(path string) bool {
	return path == "" || strings.HasPrefix(path, "/proc/") || strings.HasPrefix(path, "/sys/") || strings.HasPrefix(path, "/dev/")
}

func checkErrnos(v *view, fs *findings) {
	// Permission denied: failed opens with their paths, and system calls
	// of a traced program (a trace filtered by comm).
	for _, errno := range []string{"EACCES", "EPERM"} {
		for _, e := range errnoFailures(v, errno) {
			if v.own[e.comm] {
				continue
			}
			switch e.entry {
			case "open":
				if deniedNoise(e.path) {
					continue
				}
				subject := e.comm
				if subject == "" {
					subject = filepath.Dir(e.path)
				}
				f := fs.get("perm.denied", subject, sevWarning)
				who := ""
				if e.comm != "" {
					who = " by " + e.comm
					if e.uid != "" {
						who += " (uid " + e.uid + ")"
					}
				}
				f.add("trace open", "open: %s denied with %s %s%s", e.path, errno, plural(e.count, "time", "times"), who)
				f.events += e.count
				if f.vars["path"] == "" {
					f.set("path", e.path)
					f.set("dir", filepath.Dir(e.path))
					f.set("uid", e.uid)
				}
				f.set("comm", e.comm)
				f.set("pid", e.pid)
			case "syscalls":
				if e.comm == "" || e.what == "epoll_ctl" {
					continue
				}
				f := fs.get("perm.denied", e.comm, sevWarning)
				f.add("trace syscalls", "syscalls: %s by %s failed with %s %s", e.what, e.comm, errno, plural(e.count, "time", "times"))
				f.events += e.count
				f.set("comm", e.comm)
			}
		}
	}
	servers := map[string]bool{}
	if ls, _ := v.listeners(); len(ls) > 0 {
		for _, l := range ls {
			servers[l.comm] = l.comm != ""
		}
	}
	for _, f := range fs.ofKind("perm.denied") {
		path := f.vars["path"]
		// A server denied again and again fails its clients' requests.
		if servers[f.vars["comm"]] && f.lines("trace open")+f.lines("trace syscalls") > 0 && f.events >= CrashRepeat {
			f.raise(sevCritical)
		}
		who := orDefault(f.vars["comm"], "A process")
		if u := f.vars["uid"]; u != "" && f.vars["comm"] != "" {
			who += " (uid " + u + ")"
		}
		if path != "" {
			f.title = fmt.Sprintf("%s is denied access to %s (permission denied)", orDefault(f.vars["comm"], "a process"), path)
			f.rootCause = fmt.Sprintf("%s cannot open %s: permission denied. The file, or a directory on its path, does not grant that user the access it asks for (owner, mode, ACL), or a security module (AppArmor, SELinux) refuses it.", who, path)
		} else {
			f.title = fmt.Sprintf("%s is refused system calls (permission denied)", who)
			f.rootCause = fmt.Sprintf("%s fails system calls with EACCES/EPERM: it lacks a permission or capability it needs (a privileged port, a file mode, a security policy).", who)
		}
		for _, r := range v.output("namei -l") {
			if path == "" || !strings.Contains(r.Command, path) {
				continue
			}
			var parts []string
			for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "f:") {
					parts = append(parts, line)
				}
			}
			if len(parts) > 0 {
				f.add("namei", "namei -l: %s", joinMax(parts, 8))
			}
		}
		if base := filepath.Base(path); path != "" && len(base) >= 4 && v.issueNames(base) {
			f.add(issueSource, "the issue names %s", base)
		}
		f.fix = []string{
			"Check owner and mode of every directory on the path: namei -l " + orDefault(shellQuote(path), "<path>"),
			"Grant the service's user access (chown/chmod the files, or add it to the owning group), keeping secrets private",
			"If modes look right, check the security module: journalctl -k | grep -i -E 'apparmor|avc'",
		}
		f.conf = 1
		if len(f.evidence) >= 2 || f.sources["namei"] {
			f.conf = 2
		}
	}
	checkPortInUse(v, fs)
}

func checkPortInUse(v *view, fs *findings) {
	total := 0
	var comms []string
	for _, e := range errnoFailures(v, "EADDRINUSE") {
		if e.what != "bind" && e.what != "listen" {
			continue
		}
		total += e.count
		if e.comm != "" {
			comms = append(comms, e.comm)
		}
	}
	if total == 0 {
		return
	}
	if len(comms) == 0 {
		for _, tb := range v.tables("syscalls", "syscalls by process") {
			for _, r := range tb.rows {
				if tb.get(r, "syscall") == "bind" && tb.num(r, "errors") > 0 && !v.own[tb.get(r, "comm")] {
					comms = append(comms, tb.get(r, "comm"))
				}
			}
		}
	}
	comms = uniq(comms)
	subject := ""
	if len(comms) > 0 {
		subject = comms[0]
	}
	f := fs.get("port.inuse", subject, sevWarning)
	f.add("trace syscalls", "syscalls: bind failed with EADDRINUSE %s%s", plural(total, "time", "times"), byWhom(comms))
	f.set("comm", subject)
	// The port: named by the issue, by a log line, or a number in the
	// failing program's command line that a listener holds.
	var ports []string
	for _, p := range v.issuePorts() {
		ports = append(ports, strconv.Itoa(p))
	}
	for _, l := range v.logs() {
		if strings.Contains(strings.ToLower(l.text), "address already in use") {
			if m := portInLineRE.FindStringSubmatch(l.text); m != nil {
				ports = append(ports, m[1])
			}
		}
	}
	for _, tb := range v.tables("exec", "sample execs") {
		for _, r := range tb.rows {
			if subject != "" && tb.get(r, "comm") != subject {
				continue
			}
			for _, w := range regexp.MustCompile(`\d{2,5}`).FindAllString(tb.get(r, "argv"), -1) {
				if _, ok := holder(v, w); ok {
					ports = append(ports, w)
				}
			}
		}
	}
	var held string
	for _, p := range uniq(ports) {
		if h, ok := holder(v, p); ok {
			f.set("port", p)
			held = h
			f.add("listeners", "port %s is already held by %s", p, h)
			break
		}
	}
	if f.vars["port"] == "" && len(ports) > 0 {
		f.set("port", ports[0])
	}
	if fc := fs.find("process.crashing", subject); fc != nil && subject != "" {
		f.raise(sevCritical)
	}
	who := orDefault(subject, "A program")
	switch {
	case held != "":
		f.title = fmt.Sprintf("%s cannot bind port %s: already in use by %s", who, f.vars["port"], held)
		f.rootCause = fmt.Sprintf("%s tries to listen on port %s, but %s already listens there, so bind() fails with EADDRINUSE (\"Address already in use\") and it cannot start.", who, f.vars["port"], held)
		f.conf = 2
	case f.vars["port"] != "":
		f.title = fmt.Sprintf("%s cannot bind port %s: address already in use", who, f.vars["port"])
		f.rootCause = fmt.Sprintf("%s fails to bind port %s with EADDRINUSE: another socket holds the address (another instance, another service, or connections in TIME_WAIT without SO_REUSEADDR).", who, f.vars["port"])
		f.conf = 1
	default:
		f.title = fmt.Sprintf("%s cannot bind its port: address already in use", who)
		f.rootCause = fmt.Sprintf("%s fails bind() with EADDRINUSE: the address and port it wants are already taken by another socket.", who)
		f.conf = 1
	}
	f.fix = []string{
		"See who holds the port: ss -ltnp | grep ':" + orDefault(f.vars["port"], "<port>") + " '",
		"Stop the other listener (an old instance, a conflicting service) or configure one of them to use another port",
	}
}

func byWhom(comms []string) string {
	if len(comms) == 0 {
		return ""
	}
	return " by " + joinMax(comms, 3)
}

// explain folds a crash into the finding that explains it: the same
// program failing bind with EADDRINUSE, denied a file, at its
// open-files limit, or killed by the OOM killer. One cause, one finding.
func explain(v *view, fs *findings) {
	for _, c := range fs.ofKind("process.crashing") {
		comm := c.subject
		var into *finding
		for _, k := range []string{"port.inuse", "perm.denied", "fd.process"} {
			for _, f := range fs.ofKind(k) {
				if f.vars["comm"] == comm {
					into = f
				}
			}
			if into != nil {
				break
			}
		}
		if into == nil {
			if o := fs.find("oom", ""); o != nil && o.vars["comm"] == comm {
				into = o
			}
		}
		if into != nil {
			fs.absorb(into, c)
			if into.kind == "port.inuse" || into.kind == "perm.denied" {
				into.rootCause += fmt.Sprintf(" That is why %s keeps exiting.", comm)
			}
		}
	}
}
