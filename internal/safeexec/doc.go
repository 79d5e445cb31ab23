// Package safeexec runs diagnostic command lines that a model proposes so
// that nothing they do can change the host. Three layers each hold on
// their own: a line runs only if layer 1 accepts it, then only through
// layer 2, and each program only inside layer 3.
//
// # Layer 1: Validate
//
// Validate (ValidateIn expands relative globs in a given directory) parses
// the line with a real shell parser (mvdan.cc/sh/v3, bash dialect) and
// accepts only simple commands joined by |, &&, || and ;, quoting, globs
// that it expands itself (at most 16 patterns, 1000 matches each and
// 20000 directory entries read per line), and the redirections
// >/dev/null, 2>/dev/null, &>/dev/null, </dev/null and 2>&1. It refuses
// command and process substitution, variable, tilde, brace and arithmetic
// expansion, assignments, here-documents, subshells and groups,
// background jobs, functions, control structures, every other
// redirection, NUL and control bytes, non-ASCII program names (look-alike
// letters) and lines over MaxLineBytes. It is stricter than a shell on
// purpose: what runs is exactly what it saw.
//
// Every program must be on the allowlist (programs in rules.go), named
// bare or by a path in a standard bin directory. Programs that run other
// programs (env, xargs, timeout, sudo, busybox...) and interpreters (sh,
// python, perl, and the editors, pagers and debuggers that run commands:
// vi, less, gdb...) are refused. Each allowed program has an argument
// rule: harmless (none of its flags writes, runs a program or changes the
// system; the exceptions are listed and refused), strict (only the flags
// listed), verbs (only read-only subcommands), or a checker of its own
// where the arguments are a language (find's expression; sed and awk
// programs, which are parsed) or need a bound (ping -c, top -b -n, tcpdump
// -c). Refusing is the default: an unknown flag is refused unless the rule
// says the program's flags are harmless, and long flags match as
// getopt_long's abbreviations do (--vac is refused as --vacuum-size is).
//
// Some diagnostic tools cannot run in the sandbox, because the kernel
// wants something the sandbox takes away (unavailable in rules.go):
// iptables, ip6tables, nft and the -save forms need CAP_NET_ADMIN even to
// list rules; smartctl needs CAP_SYS_RAWIO or CAP_SYS_ADMIN for drive
// pass-through; strace needs ptrace; zpool and zfs open /dev/zfs for
// writing. They are refused at once with the reason and what to read
// instead. For the same reason ethtool -d, -e and -m (CAP_NET_ADMIN) are
// refused, tcpdump needs -p (promiscuous mode is refused) and lvs, vgs
// and pvs need --nolocking (LVM's lock files cannot be created).
//
// A refusal is a *Refusal naming its rule. RunLine returns it as a Result
// with Refused set and ExitCode ExitRefused, to go back to the model like
// any other output.
//
// # Layer 2: Run
//
// Run executes a Plan without a shell: pipes made in Go, && || ; decided
// on exit statuses as a shell would, programs resolved on a fixed PATH,
// a clean environment (PATH, LC_ALL=C, LANG=C and nothing of the
// agent's), stdin from /dev/null, each stage in a process group of its
// own, one timeout for the whole line (DefaultTimeout) after which every
// group is killed with SIGKILL, and an output cap per stream
// (DefaultOutputCap; head and tail kept, the cut marked).
//
// # Layer 3: the sandbox
//
// With Options.Sandbox (set by DefaultOptions) each stage starts through
// SandboxCommand: the agent re-executes itself (EnterSandboxIfRequested
// must run first in main), restricts that child, then execs the tool,
// which keeps every restriction and the child's pid:
//
//   - a private mount namespace (as root) with every mount remounted
//     read-only. The tool is shown the parent's mount tables, so mount,
//     findmnt and /proc/mounts report the host's rw and ro, and gets a
//     private 16 MiB tmpfs at /run/nannyagent/tmp as TMPDIR (GNU sort
//     and apt need temporary files); it vanishes with the command.
//   - Landlock: read and execute everywhere, write only to /dev/null and
//     the scratch tmpfs; from ABI 6, signals only within the sandbox.
//     Landlock also refuses ptrace of any process outside the sandbox.
//   - no_new_privs.
//   - a seccomp filter (amd64 and arm64; on other architectures nothing
//     runs) returning EPERM for reboot, kexec, module loading and
//     removal, mount and the new mount API, swapon/swapoff, setting
//     clocks, host and domain names, bpf, perf_event_open, unshare,
//     setns, ptrace, process_vm_writev, io_uring, keyrings, setpriority
//     and ioprio_set; signals only to itself; CPU affinity, scheduling
//     policy, page migration and resource limits only on itself (others'
//     limits may be read); syslog(2) only for reading; no
//     PACKET_ADD_MEMBERSHIP, which turns on promiscuous mode and needs no
//     capability. System calls through another ABI (i386's int 0x80)
//     kill the process; x32 ones are refused.
//   - capabilities: the bounding, permitted, effective and inheritable
//     sets are reduced and the ambient set cleared, keeping only
//     CAP_DAC_READ_SEARCH (read any file: logs, configuration, devices),
//     CAP_SYS_PTRACE (read other processes' /proc entries: lsof, ss -p,
//     ps; ptrace itself is refused by the filter), CAP_NET_RAW (ping,
//     tcpdump) and CAP_SYSLOG (dmesg, kallsyms; the filter lets
//     syslog(2) only read). CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_RAWIO,
//     CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_KILL, CAP_CHOWN,
//     CAP_FOWNER, CAP_DAC_OVERRIDE, CAP_SETUID, CAP_SETGID, CAP_MKNOD and
//     the others are gone.
//
// Tools that give up root themselves and exit when they cannot (tcpdump)
// start as uid 65534 with the kept capabilities as ambient ones: no more
// than any other sandboxed tool holds. Tools that exist to read other
// processes' open files, maps and environment (lsof, ss, netstat, fuser)
// run without Landlock, which refuses those reads (the kernel checks them
// as ptrace access) toward processes outside the sandbox; in its place
// every mount is also nodev, so that no device but /dev/null, zero, full,
// random and urandom can be opened.
//
// A step that fails ends the child with status 126 before the tool runs.
// On a kernel without Landlock the sandbox degrades: the read-only mounts
// still stop writes to files, and the filter refuses every open for
// writing in Landlock's place (read-only mounts do not stop writes to
// device nodes), with no scratch TMPDIR. SandboxWarning says so; `nannyagent check`
// prints it and Run logs it once (Options.Log). Without Landlock and
// without root nothing runs at all.
//
// What the sandbox does not stop is a request that a tool sends to a
// privileged daemon over a Unix socket: systemctl, timedatectl and
// resolvectl talk to systemd over D-Bus, docker and podman to their
// daemons. For those tools layer 1, which allows only their read-only
// verbs, is the guard.
//
// # Adding a program
//
// Add the name to programs in rules.go with the narrowest rule that
// covers its read-only use: harmless(name, deny) only when no flag of the
// program writes, runs another program or changes the system, with every
// flag that does in deny; strict(opts{...}) to list the flags; verbs for
// subcommands; a checker of its own (rules_programs.go, rules_scripts.go)
// when the arguments are a language or need a bound. Add lines the rule
// must accept to allowed, and attacks it must refuse to refused, in
// validate_test.go. Then run the tool in the sandbox as root: if the
// kernel refuses it something the sandbox drops, it belongs in
// unavailable, with the reason and what to read instead, not on the
// allowlist.
package safeexec
