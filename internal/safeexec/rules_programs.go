package safeexec

import (
	"strconv"
	"strings"
)

var findDenied = map[string]string{
	"-delete": "it deletes files", "-exec": "it runs programs", "-execdir": "it runs programs",
	"-ok": "it runs programs", "-okdir": "it runs programs", "-fprint": "it writes files",
	"-fprint0": "it writes files", "-fprintf": "it writes files", "-fls": "it writes files",
}

// checkFind refuses find's actions that write or run, wherever they appear:
// find's expression is a language of its own, so any argument equal to one
// of them is refused, even where it would be a -name value.
func checkFind(args []string) *Refusal {
	for _, a := range args {
		if why, ok := findDenied[a]; ok {
			return refuse("find", "find %s is not allowed: %s", a, why)
		}
		if strings.HasPrefix(a, "-fprint") || strings.HasPrefix(a, "-exec") || strings.HasPrefix(a, "-ok") {
			return refuse("find", "find %s is not allowed: it writes files or runs programs", a)
		}
	}
	return nil
}

func checkDate(args []string) *Refusal {
	o := opts{prog: "date", harmless: true, vals: "dfr", longVals: []string{"date", "file", "reference"}, maxPos: -1,
		deny: map[string]string{"-s": "it sets the clock", "--set": "it sets the clock"}}
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	for _, a := range p.pos {
		if !strings.HasPrefix(a, "+") {
			return refuse("date", "date %s is not allowed: an argument that is not +FORMAT sets the clock", a)
		}
	}
	return nil
}

func checkTop(args []string) *Refusal {
	o := opts{prog: "top", flags: "bcHiS1hsO", vals: "ndpuUoEew", maxPos: 0}
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	n, ok := p.val("-n")
	if !p.has("-b") || !ok {
		return refuse("top", "top needs -b (batch) and -n COUNT")
	}
	return boundedInt("top", "-n", n, 1, 10)
}

func checkIP(args []string) *Refusal {
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		f := strings.TrimLeft(args[i], "-")
		switch f {
		case "s", "stats", "statistics", "d", "details", "4", "6", "0", "j", "json", "p", "pretty", "br", "brief",
			"c", "color", "color=never", "color=auto", "o", "oneline", "r", "resolve", "h", "human", "human-readable", "N", "numeric":
		case "f", "family":
			if i+1 >= len(args) {
				return refuse("ip", "ip -f needs a family")
			}
			i++
		default:
			return refuse("ip", "ip option %s is not allowed (-batch, -force and -netns are refused; others are not on the allowlist)", args[i])
		}
	}
	if i >= len(args) {
		return refuse("ip", "ip needs an object (addr, link, route, neigh, rule)")
	}
	obj := args[i]
	objects := map[string][]string{
		"address": {"a", "ad", "add", "addr", "addre", "addres", "address"},
		"link":    {"l", "li", "lin", "link"},
		"route":   {"r", "ro", "rou", "rout", "route"},
		"neigh":   {"n", "ne", "nei", "neig", "neigh", "neighbor", "neighbour"},
		"rule":    {"ru", "rul", "rule"},
		"maddr":   {"m", "ma", "mad", "madd", "maddr", "maddress"},
		"netconf": {"netconf"},
		"tunnel":  {"t", "tu", "tun", "tunnel"},
		"netns":   {"netns"},
		"vrf":     {"vrf"},
	}
	kind := ""
	for k, names := range objects {
		if contains(names, obj) {
			kind = k
		}
	}
	if kind == "" {
		return refuse("ip", "ip %s is not allowed: only addr, link, route, neigh, rule, maddr, tunnel, netns, netconf, vrf", obj)
	}
	rest := args[i+1:]
	if len(rest) == 0 {
		return nil
	}
	verb := rest[0]
	ok := verb == "show" || verb == "list" || verb == "ls" || verb == "lst"
	if kind == "route" && verb == "get" {
		ok = true
	}
	if !ok {
		return refuse("ip", "ip %s %s is not allowed: only show and list (and route get)", obj, verb)
	}
	for _, a := range rest[1:] {
		switch a {
		case "add", "del", "delete", "set", "change", "replace", "flush", "exec", "append", "prepend", "save", "restore":
			return refuse("ip", "ip %s %s ... %s is not allowed", obj, verb, a)
		}
	}
	return nil
}

// ethtoolNeedsAdmin are query forms the kernel answers only with
// CAP_NET_ADMIN (it asks for it before anything else: a register or
// EEPROM dump in the ioctl path, the module EEPROM over netlink).
var ethtoolNeedsAdmin = map[string]bool{"-d": true, "--register-dump": true, "-e": true, "--eeprom-dump": true,
	"-m": true, "--dump-module-eeprom": true, "--module-info": true}

func checkEthtool(args []string) *Refusal {
	query := map[string]bool{"-i": true, "--driver": true, "-S": true, "--statistics": true, "-k": true, "--show-features": true,
		"--show-offload": true, "-g": true, "--show-ring": true, "-a": true, "--show-pause": true, "-c": true, "--show-coalesce": true,
		"-l": true, "--show-channels": true, "-T": true,
		"--show-time-stamping": true, "-P": true, "--show-permaddr": true, "--show-eee": true, "--show-fec": true,
		"--show-priv-flags": true, "-u": true, "--show-ntuple": true,
		"-x": true, "--show-rxfh-indir": true, "--show-rxfh": true, "--phy-statistics": true, "-I": true, "--include-statistics": true,
		"-h": true, "--help": true, "--version": true, "--json": true}
	var pos []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			if ethtoolNeedsAdmin[a] {
				return refuse("ethtool", "ethtool %s cannot run in the sandbox: the kernel answers it only with CAP_NET_ADMIN, which the sandbox drops; -i, -S, -k, -g, -a, -c, -l, -T, -P work", a)
			}
			if !query[a] {
				return refuse("ethtool", "ethtool %s is not allowed: only query forms (-i -S -k -g -a -c -l -m -T -P ...)", a)
			}
			continue
		}
		pos = append(pos, a)
	}
	if len(pos) > 1 {
		return refuse("ethtool", "ethtool takes one interface in query forms")
	}
	return nil
}

func checkPing(args []string) *Refusal {
	o := opts{prog: "ping", flags: "nqvDO46AUa", vals: "ciWwstIlQ", maxPos: 1,
		deny: map[string]string{"-f": "it floods", "-l": "it preloads packets"}}
	delete(o.deny, "-l")
	o.vals = "ciWwstIQ"
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	c, ok := p.val("-c")
	if !ok {
		return refuse("ping", "ping needs -c COUNT (at most 10)")
	}
	if r := boundedInt("ping", "-c", c, 1, 10); r != nil {
		return r
	}
	if s, ok := p.val("-s"); ok {
		if r := boundedInt("ping", "-s", s, 0, 1500); r != nil {
			return r
		}
	}
	if i, ok := p.val("-i"); ok {
		if f, err := strconv.ParseFloat(i, 64); err != nil || f < 0.2 {
			return refuse("ping", "ping -i must be a number of seconds of at least 0.2")
		}
	}
	if len(p.pos) != 1 {
		return refuse("ping", "ping needs one host")
	}
	return nil
}

func checkTcpdump(args []string) *Refusal {
	o := opts{prog: "tcpdump", flags: "nNvqteAXxlSKOUDLp#", vals: "cirsQBFjT", maxPos: -1,
		long:     []string{"immediate-mode", "list-interfaces", "list-time-stamp-types", "no-promiscuous-mode", "number", "version"},
		longVals: []string{"interface", "snapshot-length", "direction", "buffer-size", "time-stamp-type", "time-stamp-precision"},
		deny: map[string]string{"-w": "it writes a capture file", "-W": "it writes capture files", "-C": "it writes capture files",
			"-G": "it rotates capture files", "-z": "it runs a program", "-Z": "it changes user", "-I": "it changes the interface mode",
			"--monitor-mode": "it changes the interface mode", "-y": "it changes the link type", "-E": "it takes secrets"}}
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	if p.has("-D", "--list-interfaces", "--version", "-r") {
		return nil
	}
	if !p.has("-p", "--no-promiscuous-mode") {
		return refuse("tcpdump", "tcpdump needs -p: promiscuous mode changes the interface (the sandbox refuses it)")
	}
	c, ok := p.val("-c")
	if !ok {
		return refuse("tcpdump", "tcpdump needs -c COUNT (at most 10000)")
	}
	return boundedInt("tcpdump", "-c", c, 1, 10000)
}

func checkSystemctl(args []string) *Refusal {
	o := opts{prog: "systemctl", flags: "alqrtpnoP", vals: "tpno",
		long:     []string{"no-pager", "all", "full", "value", "plain", "no-legend", "failed", "user", "system", "quiet", "recursive", "reverse", "after", "before", "with-dependencies", "show-types"},
		longVals: []string{"type", "state", "property", "lines", "output"}, maxPos: -1}
	o.flags = "alqr"
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	if len(p.pos) == 0 {
		return nil // list-units
	}
	switch p.pos[0] {
	case "status", "show", "list-units", "list-unit-files", "list-timers", "list-sockets", "list-dependencies", "list-jobs",
		"is-active", "is-enabled", "is-failed", "is-system-running", "cat", "get-default", "list-machines", "show-environment":
		return nil
	}
	return refuse("systemctl", "systemctl %s is not allowed: only status, show, cat, list-*, is-*", p.pos[0])
}

func checkSysctl(args []string) *Refusal {
	o := opts{prog: "sysctl", flags: "aAXnNeqbdh", vals: "r", long: []string{"all", "values", "names", "binary", "ignore", "quiet", "deprecated"},
		longVals: []string{"pattern"}, maxPos: -1,
		deny: map[string]string{"-w": "it writes kernel parameters", "--write": "it writes kernel parameters", "-p": "it loads settings",
			"--load": "it loads settings", "-f": "it loads settings", "--system": "it loads settings"}}
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	for _, a := range p.pos {
		if strings.Contains(a, "=") {
			return refuse("sysctl", "sysctl %s is not allowed: NAME=VALUE writes a kernel parameter", a)
		}
	}
	return nil
}

func checkMdadm(args []string) *Refusal {
	o := opts{prog: "mdadm", flags: "DEQvbsY", long: []string{"detail", "examine", "query", "verbose", "brief", "scan", "export"}, maxPos: -1}
	p, r := o.parse(args)
	if r != nil {
		return r
	}
	if !p.has("-D", "--detail", "-E", "--examine", "-Q", "--query") {
		return refuse("mdadm", "mdadm is only allowed with --detail, --examine or --query")
	}
	return nil
}

func checkTune2fs(args []string) *Refusal {
	if len(args) != 2 || args[0] != "-l" || strings.HasPrefix(args[1], "-") {
		return refuse("tune2fs", "tune2fs is only allowed as tune2fs -l DEVICE")
	}
	return nil
}

func checkDpkg(args []string) *Refusal {
	actions := map[string]bool{"-l": true, "--list": true, "-s": true, "--status": true, "-L": true, "--listfiles": true,
		"-S": true, "--search": true, "-p": true, "--print-avail": true, "-W": true, "--show": true,
		"--get-selections": true, "--print-architecture": true, "--print-foreign-architectures": true, "-V": true, "--verify": true}
	if len(args) == 0 || !actions[args[0]] {
		return refuse("dpkg", "dpkg is only allowed with -l, -s, -L, -S, -p, -W, --get-selections, --verify")
	}
	for _, a := range args[1:] {
		if strings.HasPrefix(a, "-") && a != "-f" && !strings.HasPrefix(a, "--showformat=") {
			return refuse("dpkg", "dpkg %s is not allowed after %s", a, args[0])
		}
	}
	return nil
}

func checkRpm(args []string) *Refusal {
	if len(args) == 0 {
		return refuse("rpm", "rpm is only allowed in query (-q) or verify (-V) mode")
	}
	first := args[0]
	if !(first == "--query" || first == "--verify" || (strings.HasPrefix(first, "-q") || strings.HasPrefix(first, "-V")) && !strings.HasPrefix(first, "--")) {
		return refuse("rpm", "rpm is only allowed in query (-q) or verify (-V) mode")
	}
	if !strings.HasPrefix(first, "--") && strings.Trim(first[2:], "ailfcdRsip") != "" {
		return refuse("rpm", "rpm %s: only query letters a i l f c d R s p are allowed", first)
	}
	for _, a := range args {
		if strings.Contains(a, "%(") || strings.Contains(a, "%{lua") || strings.Contains(a, "%{expand") || strings.Contains(a, "%[") {
			return refuse("rpm", "rpm macro expressions are not allowed: %%(...) runs commands")
		}
	}
	o := opts{prog: "rpm", flags: "ailfcdRsp", vals: "", long: []string{"all", "info", "list", "file", "configfiles", "docfiles", "requires",
		"provides", "whatprovides", "whatrequires", "changelog", "scripts", "last", "state", "package", "dump", "nodeps", "nofiles", "nodigest", "nosignature"},
		longVals: []string{"qf", "queryformat"}, maxPos: -1}
	_, r := o.parse(args[1:])
	return r
}

func checkContainer(prog string) checker {
	fmtv := []string{"format", "filter"}
	c := verbs(prog, opts{}, map[string]*opts{
		"ps":      {flags: "aqlns", vals: "nf", long: []string{"all", "quiet", "latest", "no-trunc", "size", "pod", "external", "sort", "ns"}, longVals: append([]string{"last"}, fmtv...), maxPos: 0},
		"inspect": {flags: "s", vals: "f", long: []string{"size"}, longVals: []string{"format", "type"}, maxPos: -1},
		"logs":    {flags: "tfn", vals: "n", long: []string{"timestamps", "follow", "details", "names"}, longVals: []string{"tail", "since", "until"}, maxPos: -1},
		"stats":   {flags: "a", long: []string{"no-stream", "all", "no-trunc", "no-reset"}, longVals: []string{"format", "interval"}, maxPos: -1},
		"images":  {flags: "aq", vals: "f", long: []string{"all", "quiet", "digests", "no-trunc"}, longVals: fmtv, maxPos: 1},
		"info":    {vals: "f", longVals: []string{"format"}, maxPos: 0},
		"version": {vals: "f", longVals: []string{"format"}, maxPos: 0},
		"top":     {maxPos: -1},
	})
	return func(args []string) *Refusal {
		if r := c(args); r != nil {
			return r
		}
		if len(args) > 0 && args[0] == "stats" && !contains(args, "--no-stream") {
			return refuse(prog, "%s stats needs --no-stream", prog)
		}
		return nil
	}
}

// checkLVM requires --nolocking: LVM takes its locks by creating files
// under /run/lock/lvm, which the read-only sandbox refuses ("File locking
// initialisation failed"), and --readonly still initialises locking.
// Reports need no lock; a report read while a change is under way may
// show either side of it.
func checkLVM(prog string) checker {
	o := opts{prog: prog, harmless: true, maxPos: -1, deny: map[string]string{"--config": "it changes LVM configuration"}}
	return func(args []string) *Refusal {
		p, r := o.parse(args)
		if r != nil {
			return r
		}
		if !p.has("--nolocking") {
			return refuse(prog, "%s needs --nolocking: LVM creates lock files, which the read-only sandbox refuses", prog)
		}
		return nil
	}
}
