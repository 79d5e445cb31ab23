package safeexec

import (
	"strconv"
	"strings"
)

// checker decides whether a program's arguments (argv without argv[0],
// globs already expanded) are allowed.
type checker func(args []string) *Refusal

// opts describes a program's command line for parse. Refusing is the
// default: a flag not listed is refused unless harmless is set, and a
// denied flag is refused even then. Long flags are matched as GNU
// getopt_long does, so an abbreviation of a denied flag is refused too.
type opts struct {
	prog     string
	flags    string            // short flags without a value
	vals     string            // short flags that take a value
	long     []string          // long flags without a value, without "--"
	longVals []string          // long flags that take a value
	deny     map[string]string // "-c" or "--clear" -> why it is refused
	harmless bool              // unknown flags are read-only options of this program
	maxPos   int               // most positional arguments; -1 for any
	// singleDash: long flags written with one dash (find, ip style) are
	// not parsed here; such programs use their own checker.
}

type flagUse struct {
	name string // "-c" or "--lines"
	val  string
	has  bool
}

type parsed struct {
	flags []flagUse
	pos   []string
}

func (p parsed) has(names ...string) bool {
	for _, f := range p.flags {
		for _, n := range names {
			if f.name == n {
				return true
			}
		}
	}
	return false
}

func (p parsed) val(names ...string) (string, bool) {
	for _, f := range p.flags {
		for _, n := range names {
			if f.name == n {
				return f.val, true
			}
		}
	}
	return "", false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (o *opts) parse(args []string) (parsed, *Refusal) {
	var p parsed
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			p.pos = append(p.pos, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			switch {
			case contains(o.long, name):
				if hasVal {
					return p, refuse(o.prog, "%s --%s takes no value", o.prog, name)
				}
				p.flags = append(p.flags, flagUse{name: "--" + name})
				continue
			case contains(o.longVals, name):
				if !hasVal {
					if i+1 >= len(args) {
						return p, refuse(o.prog, "%s --%s needs a value", o.prog, name)
					}
					i++
					val = args[i]
				}
				p.flags = append(p.flags, flagUse{name: "--" + name, val: val, has: true})
				continue
			}
			for d, why := range o.deny {
				if strings.HasPrefix(d, "--") && name != "" && strings.HasPrefix(d[2:], name) {
					return p, refuse(o.prog, "%s %s is not allowed: %s", o.prog, d, why)
				}
			}
			if !o.harmless || name == "" {
				return p, refuse(o.prog, "%s: flag --%s is not on this program's allowlist", o.prog, name)
			}
			p.flags = append(p.flags, flagUse{name: "--" + name, val: val, has: hasVal})
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				c := a[j]
				f := "-" + string(c)
				if why, ok := o.deny[f]; ok {
					return p, refuse(o.prog, "%s %s is not allowed: %s", o.prog, f, why)
				}
				if strings.IndexByte(o.vals, c) >= 0 {
					val := a[j+1:]
					if val == "" {
						if i+1 >= len(args) {
							return p, refuse(o.prog, "%s %s needs a value", o.prog, f)
						}
						i++
						val = args[i]
					}
					p.flags = append(p.flags, flagUse{name: f, val: val, has: true})
					break
				}
				if strings.IndexByte(o.flags, c) < 0 && !o.harmless {
					return p, refuse(o.prog, "%s: flag %s is not on this program's allowlist", o.prog, f)
				}
				if c >= 0x80 || c < 0x20 {
					return p, refuse(o.prog, "%s: flag %q has non-ASCII characters", o.prog, a)
				}
				p.flags = append(p.flags, flagUse{name: f})
			}
		default:
			p.pos = append(p.pos, a)
		}
	}
	if o.maxPos >= 0 && len(p.pos) > o.maxPos {
		if o.maxPos == 0 {
			return p, refuse(o.prog, "%s takes no arguments here (got %q)", o.prog, p.pos[0])
		}
		return p, refuse(o.prog, "%s takes at most %d arguments here", o.prog, o.maxPos)
	}
	return p, nil
}

// harmless is a program none of whose flags write or run anything.
func harmless(prog string, deny map[string]string) checker {
	o := &opts{prog: prog, harmless: true, deny: deny, maxPos: -1}
	return func(args []string) *Refusal {
		_, r := o.parse(args)
		return r
	}
}

func strict(o opts) checker {
	return func(args []string) *Refusal {
		_, r := o.parse(args)
		return r
	}
}

func checkArgs(prog string, args []string) *Refusal {
	c := programs[prog]
	if c == nil {
		return refuse("allowlist", "%s is not on the allowlist", prog)
	}
	return c(args)
}

func boundedInt(prog, flag, s string, lo, hi int) *Refusal {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return refuse(prog, "%s %s must be a number from %d to %d, not %q", prog, flag, lo, hi, s)
	}
	return nil
}

// verbs checks programs of the form `prog [global flags] verb [args]`.
func verbs(prog string, global opts, allowed map[string]*opts) checker {
	global.prog = prog
	return func(args []string) *Refusal {
		i := 0
		for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" {
			i++
		}
		if _, r := global.parse(args[:i]); r != nil {
			return r
		}
		if i >= len(args) {
			if _, ok := allowed[""]; ok {
				return nil
			}
			return refuse(prog, "%s needs one of its read-only subcommands", prog)
		}
		v := args[i]
		o, ok := allowed[v]
		if !ok || v == "" {
			return refuse(prog, "%s %s is not allowed: only %s", prog, v, verbList(allowed))
		}
		if o == nil {
			o = &opts{maxPos: -1}
		}
		oo := *o
		oo.prog = prog + " " + v
		_, r := oo.parse(args[i+1:])
		if r != nil {
			r.Rule = prog
		}
		return r
	}
}

func verbList(m map[string]*opts) string {
	var l []string
	for k := range m {
		if k != "" {
			l = append(l, k)
		}
	}
	sortStrings(l)
	return strings.Join(l, ", ")
}

func sortStrings(l []string) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j] < l[j-1]; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

var programs map[string]checker

// Why the kernel would refuse what these tools need inside the sandbox,
// and what to read instead. They are refused before anything runs, so a
// model learns at once where to look rather than from a tool's error.
const (
	whyNetfilter = "reading the firewall rules takes CAP_NET_ADMIN, the capability that also changes them, " +
		"and the sandbox drops it (the kernel answers EPERM even to a list). Read the saved rules instead " +
		"(/etc/nftables.conf, /etc/iptables/rules.v4, /etc/iptables/rules.v6, /etc/sysconfig/iptables), " +
		"which legacy tables are in use (cat /proc/net/ip_tables_names /proc/net/ip6_tables_names), " +
		"which netfilter modules are loaded (lsmod), or ask the operator for nft list ruleset"
	whySmart = "it reads SMART data through ATA pass-through or NVMe admin commands, which the kernel allows only " +
		"with CAP_SYS_RAWIO or CAP_SYS_ADMIN; the sandbox drops both because the same pass-through writes to the drive. " +
		"For disk health read the kernel log (dmesg | grep -iE 'ata|nvme|I/O error|medium'), " +
		"/sys/block/DEV/device/ (state, model, ioerr_cnt) and lsblk -o NAME,MODEL,SERIAL,STATE, or ask the operator for smartctl"
	whyStrace = "it attaches with ptrace, and a tracer can rewrite the traced process's memory, registers and signals, " +
		"so no sandbox keeps it read-only: the sandbox refuses ptrace. Ask for the eBPF catalog entry syscalls " +
		"with a pid filter instead (counts, errors and latency per system call, without stopping the process)"
	whyZFS = "libzfs opens /dev/zfs for writing, which the sandbox refuses: with it any ZFS ioctl could be sent, " +
		"and some (pool history, operations delegated with zfs allow) need no capability. Read the pool states in " +
		"/proc/spl/kstat/zfs/POOL/state, the ARC in /proc/spl/kstat/zfs/arcstats, the datasets with findmnt -t zfs " +
		"and df -t zfs, ZFS errors in the kernel log, or ask the operator for zpool status"
)

// unavailable are diagnostic tools that cannot run in the sandbox.
var unavailable = map[string]string{
	"iptables": whyNetfilter, "ip6tables": whyNetfilter, "iptables-save": whyNetfilter,
	"ip6tables-save": whyNetfilter, "iptables-legacy": whyNetfilter, "ip6tables-legacy": whyNetfilter,
	"iptables-nft": whyNetfilter, "ip6tables-nft": whyNetfilter, "nft": whyNetfilter,
	"smartctl": whySmart, "strace": whyStrace, "zpool": whyZFS, "zfs": whyZFS,
}

func init() {
	writes := "it writes files"
	programs = map[string]checker{
		// Text readers.
		"cat": harmless("cat", nil), "tac": harmless("tac", nil), "nl": harmless("nl", nil),
		"head": harmless("head", nil), "tail": harmless("tail", nil),
		"grep": harmless("grep", nil), "egrep": harmless("egrep", nil), "fgrep": harmless("fgrep", nil),
		"zgrep": harmless("zgrep", nil), "zcat": harmless("zcat", nil),
		"wc": harmless("wc", nil), "cut": harmless("cut", nil), "tr": harmless("tr", nil),
		"column": harmless("column", nil), "paste": harmless("paste", nil), "fold": harmless("fold", nil),
		"expand": harmless("expand", nil), "rev": harmless("rev", nil), "comm": harmless("comm", nil),
		"join": harmless("join", nil), "diff": harmless("diff", nil), "cmp": harmless("cmp", nil),
		"strings": harmless("strings", nil), "od": harmless("od", nil), "hexdump": harmless("hexdump", nil),
		"md5sum": harmless("md5sum", nil), "sha1sum": harmless("sha1sum", nil), "sha256sum": harmless("sha256sum", nil),
		"sha512sum": harmless("sha512sum", nil), "cksum": harmless("cksum", nil),
		"echo": harmless("echo", nil), "printf": harmless("printf", nil), "true": harmless("true", nil),
		"false": harmless("false", nil), "seq": harmless("seq", nil),
		"sort": harmless("sort", map[string]string{"-o": writes, "--output": writes,
			"-T": writes, "--temporary-directory": writes, "--compress-program": "it runs a program"}),
		"uniq": func(args []string) *Refusal {
			o := opts{prog: "uniq", harmless: true, maxPos: 1, vals: "fsw"}
			_, r := o.parse(args)
			if r != nil && strings.Contains(r.Reason, "at most") {
				r.Reason = "uniq with a second file argument writes to it"
			}
			return r
		},
		// Files.
		"ls": harmless("ls", nil), "stat": harmless("stat", nil), "readlink": harmless("readlink", nil),
		"realpath": harmless("realpath", nil), "basename": harmless("basename", nil), "dirname": harmless("dirname", nil),
		"namei": harmless("namei", nil), "lsattr": harmless("lsattr", nil), "getfacl": harmless("getfacl", nil),
		"file":  harmless("file", map[string]string{"-C": writes, "--compile": writes}),
		"find":  checkFind,
		"du":    harmless("du", nil),
		"df":    harmless("df", nil),
		"which": harmless("which", nil),
		// System.
		"free": harmless("free", nil), "uptime": harmless("uptime", nil), "uname": harmless("uname", nil),
		"id": harmless("id", nil), "who": harmless("who", nil), "w": harmless("w", nil), "last": harmless("last", nil),
		"whoami": harmless("whoami", nil), "groups": harmless("groups", nil), "nproc": harmless("nproc", nil),
		"getent": harmless("getent", nil), "arch": harmless("arch", nil), "getconf": harmless("getconf", nil),
		"printenv": harmless("printenv", nil), "locale": harmless("locale", nil),
		"hostname": strict(opts{prog: "hostname", flags: "fsdiIAay", long: []string{"fqdn", "long", "short", "domain",
			"ip-address", "all-ip-addresses", "all-fqdns", "alias", "nis", "yp"}}),
		"date": checkDate,
		// Processes.
		"ps": harmless("ps", nil), "pgrep": harmless("pgrep", nil), "pidof": harmless("pidof", nil),
		"pstree": harmless("pstree", nil), "top": checkTop,
		"vmstat": harmless("vmstat", nil), "iostat": harmless("iostat", nil), "mpstat": harmless("mpstat", nil),
		"pidstat": harmless("pidstat", map[string]string{"-e": "it runs a program"}),
		"sar":     harmless("sar", map[string]string{"-o": writes}),
		"lsof":    harmless("lsof", nil),
		"fuser":   harmless("fuser", map[string]string{"-k": "it kills processes", "--kill": "it kills processes"}),
		// Network.
		"ss": harmless("ss", map[string]string{"-K": "it kills sockets", "--kill": "it kills sockets",
			"-D": writes, "--diag": writes, "-F": "it reads a filter file"}),
		"netstat":  harmless("netstat", nil),
		"ip":       checkIP,
		"ifconfig": strict(opts{prog: "ifconfig", flags: "asv", maxPos: 1}),
		"route":    strict(opts{prog: "route", flags: "neFCv46", vals: "A", maxPos: 0}),
		"arp":      strict(opts{prog: "arp", flags: "naevD", vals: "iH", maxPos: 1}),
		"ethtool":  checkEthtool,
		"ping":     checkPing, "ping6": checkPing,
		"dig": harmless("dig", nil), "host": harmless("host", nil), "nslookup": harmless("nslookup", nil),
		"resolvectl": verbs("resolvectl", opts{flags: "46", vals: "itcp", long: []string{"no-pager", "legend", "raw"},
			longVals: []string{"interface", "type", "class", "protocol", "legend", "cache", "search", "json"}},
			map[string]*opts{"status": {maxPos: -1, long: []string{"no-pager"}}, "query": {flags: "46", vals: "itcp", long: []string{"no-pager"}, longVals: []string{"type", "class", "interface"}, maxPos: -1},
				"statistics": {maxPos: 0}, "": nil}),
		"tcpdump": checkTcpdump,
		// Kernel and logs.
		"dmesg": harmless("dmesg", map[string]string{"-c": "it clears the kernel ring buffer", "--read-clear": "it clears the kernel ring buffer",
			"-C": "it clears the kernel ring buffer", "--clear": "it clears the kernel ring buffer",
			"-D": "it changes console logging", "--console-off": "it changes console logging",
			"-E": "it changes console logging", "--console-on": "it changes console logging",
			"-n": "it changes the console log level", "--console-level": "it changes the console log level"}),
		"journalctl": harmless("journalctl", map[string]string{
			"--vacuum-size": "it deletes journal files", "--vacuum-time": "it deletes journal files", "--vacuum-files": "it deletes journal files",
			"--rotate": "it rotates journal files", "--flush": "it moves journal files", "--sync": "it writes the journal",
			"--relinquish-var": "it changes where the journal is written", "--smart-relinquish-var": "it changes where the journal is written",
			"--setup-keys": "it writes sealing keys", "--update-catalog": "it writes the catalog", "--cursor-file": writes,
			"--image": "it mounts an image", "--new-id128": "not a log query"}),
		"systemctl": checkSystemctl,
		"timedatectl": verbs("timedatectl", opts{flags: "ap", long: []string{"no-pager", "all", "value", "monitor"}, longVals: []string{"property"}},
			map[string]*opts{"": nil, "status": {maxPos: 0}, "show": {maxPos: 0, flags: "a", vals: "p", long: []string{"all", "value"}, longVals: []string{"property"}},
				"timesync-status": {maxPos: 0}, "show-timesync": {maxPos: 0}, "list-timezones": {maxPos: 0}}),
		"sysctl":  checkSysctl,
		"lsmod":   strict(opts{prog: "lsmod", maxPos: 0}),
		"modinfo": harmless("modinfo", nil),
		"uptime-": nil,
		// Hardware and storage.
		"lsblk": harmless("lsblk", nil), "findmnt": harmless("findmnt", nil), "lscpu": harmless("lscpu", nil),
		"lspci": harmless("lspci", nil), "lsusb": harmless("lsusb", nil), "lsns": harmless("lsns", nil),
		"lslocks": harmless("lslocks", nil), "lsipc": harmless("lsipc", nil), "lsirq": harmless("lsirq", nil),
		"blkid": harmless("blkid", map[string]string{"-g": "it rewrites the blkid cache", "--garbage-collect": "it rewrites the blkid cache",
			"-c": "it writes a cache file", "--cache-file": "it writes a cache file", "-w": writes, "--write-cache-file": writes}),
		"mount":    strict(opts{prog: "mount", flags: "l", vals: "t", maxPos: 0}),
		"numactl":  strict(opts{prog: "numactl", flags: "Hs", long: []string{"hardware", "show"}, maxPos: 0}),
		"mdadm":    checkMdadm,
		"lvs":      checkLVM("lvs"),
		"vgs":      checkLVM("vgs"),
		"pvs":      checkLVM("pvs"),
		"xfs_info": strict(opts{prog: "xfs_info", flags: "V", maxPos: 1}),
		"tune2fs":  checkTune2fs,
		"dumpe2fs": strict(opts{prog: "dumpe2fs", flags: "hxbfVi", vals: "o", maxPos: 1}),
		// Packages.
		"dpkg":       checkDpkg,
		"dpkg-query": checkDpkg,
		"rpm":        checkRpm,
		"apt": verbs("apt", opts{}, map[string]*opts{
			"list":   {flags: "av", long: []string{"installed", "upgradable", "upgradeable", "all-versions", "manual-installed", "verbose"}, maxPos: -1},
			"show":   {flags: "a", long: []string{"all-versions"}, maxPos: -1},
			"policy": {maxPos: -1}}),
		"apt-cache": verbs("apt-cache", opts{}, map[string]*opts{
			"policy": {maxPos: -1}, "show": {maxPos: -1}, "search": {flags: "n", long: []string{"names-only", "full"}, maxPos: -1},
			"depends": {maxPos: -1}, "rdepends": {maxPos: -1, long: []string{"installed"}}, "madison": {maxPos: -1}}),
		// Containers and hypervisors.
		"docker": checkContainer("docker"), "podman": checkContainer("podman"),
		"pct": verbs("pct", opts{}, map[string]*opts{"list": {maxPos: 0}, "config": {long: []string{"current"}, longVals: []string{"snapshot"}, maxPos: 1},
			"status": {long: []string{"verbose"}, maxPos: 1}}),
		"qm": verbs("qm", opts{}, map[string]*opts{"list": {long: []string{"full"}, maxPos: 0}, "config": {long: []string{"current"}, longVals: []string{"snapshot"}, maxPos: 1},
			"status": {long: []string{"verbose"}, maxPos: 1}}),
		"pvesh": verbs("pvesh", opts{}, map[string]*opts{"get": {long: []string{"noborder", "noheader", "human-readable"}, longVals: []string{"output-format"}, maxPos: 1}}),
		// Scripts.
		"sed": checkSed,
		"awk": checkAwk, "gawk": checkAwk, "mawk": checkAwk, "nawk": checkAwk,
	}
	delete(programs, "uptime-")
}
