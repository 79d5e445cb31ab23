#!/usr/bin/env bash
# install.sh: install nannyagent as a systemd service, upgrade it, or remove
# it. Run it as root from a clone of the repository:
#
#   sudo ./install.sh                      build from this checkout and install
#   sudo ./install.sh --binary ./nannyagent  install a binary built elsewhere
#   sudo ./install.sh --force              upgrade an existing installation
#   sudo ./install.sh --uninstall [--purge]
#
# Every exit status and what to do about it: docs/INSTALLATION.md.
#
# The checks run in this order, and the first that fails sets the status:
#   0 installed   1 not root   2 not Linux   3 not amd64/arm64
#   4 in a container   5 kernel older than 5.0   6 already installed
#   7 bpftrace could not be installed (only with --with-bpftrace)
#   8 Go missing   9 build failed   10 directories could not be created
#   11 a file (binary, unit, config) could not be installed
#   64 a command-line usage error
#
# Nothing is written until the checks have passed and the binary is built
# (only bpftrace, step 7, is installed before the build). With --destdir
# the script writes only under that directory, and runs neither systemctl
# nor a package manager.
set -uo pipefail

readonly E_ROOT=1 E_OS=2 E_ARCH=3 E_CONTAINER=4 E_KERNEL=5 E_EXISTS=6 E_BPFTRACE=7 \
	E_NOGO=8 E_BUILD=9 E_DIRS=10 E_FILES=11 E_USAGE=64

readonly UNIT_NAME=nannyagent.service
readonly BACKOFF_DROPIN=10-restart-backoff.conf
# The first systemd with RestartSteps= and RestartMaxDelaySec=; older ones
# warn about unknown keys on every daemon-reload, so they only get the
# drop-in that holds them when they understand it.
readonly SYSTEMD_BACKOFF_MIN=254

prog=install.sh
orig_args="$*"

usage() {
	cat <<'EOF'
Usage: sudo ./install.sh [options]

  --binary PATH       install this binary instead of building the checkout
  --force, --upgrade  replace an existing installation (the configuration and
                      the data directory are kept; the new default
                      configuration is written as config.yaml.new)
  --with-bpftrace     fail (exit 7) when bpftrace cannot be installed
  --without-bpftrace  do not install bpftrace
                      (default: install it if missing, carry on without it)
  --destdir DIR       write everything under DIR instead of / (also DESTDIR=DIR;
                      --prefix DIR is the same); no systemctl, no packages
  --uninstall         remove the binary and the unit, keep configuration and data
  --purge             --uninstall, and remove configuration and data too
  -h, --help          this text

Test-only (they replace what the script detects; never needed to install):
  NANNYAGENT_INSTALL_UNAME_S, NANNYAGENT_INSTALL_UNAME_M,
  NANNYAGENT_INSTALL_UNAME_R    stand in for uname -s, -m, -r
  NANNYAGENT_INSTALL_CONTAINER_ROOT
                                a directory read instead of / for container
                                markers; systemd-detect-virt is then not run
  NANNYAGENT_INSTALL_OS_RELEASE a file read instead of /etc/os-release
  NANNYAGENT_INSTALL_SYSTEMD_VERSION
                                stands in for the version systemctl reports
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
# die STATUS LINE...: each LINE on its own line; the last ones say how to
# fix it.
die() {
	local status=$1
	shift
	printf '%s: error: %s\n' "$prog" "$1" >&2
	shift
	local line
	for line in "$@"; do
		printf '  %s\n' "$line" >&2
	done
	exit "$status"
}

# ---- options

binary=""
force=0
bpftrace_mode=auto
root="${DESTDIR:-}"
uninstall=0
purge=0

need_arg() {
	if [ $# -lt 2 ] || [ -z "$2" ]; then
		die "$E_USAGE" "$1 needs a value" "see ./install.sh --help"
	fi
}

while [ $# -gt 0 ]; do
	case $1 in
	--binary) need_arg "$@"; binary=$2; shift 2 ;;
	--binary=*) binary=${1#*=}; shift ;;
	--force | --upgrade) force=1; shift ;;
	--with-bpftrace) bpftrace_mode=yes; shift ;;
	--without-bpftrace) bpftrace_mode=no; shift ;;
	--destdir | --prefix) need_arg "$@"; root=$2; shift 2 ;;
	--destdir=* | --prefix=*) root=${1#*=}; shift ;;
	--uninstall) uninstall=1; shift ;;
	--purge) uninstall=1; purge=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "$E_USAGE" "unknown option: $1" "see ./install.sh --help" ;;
	esac
done

if [ -n "$binary" ] && [ "$uninstall" = 1 ]; then
	die "$E_USAGE" "--binary and --uninstall do not go together" "see ./install.sh --help"
fi

# The staging root: "" means the machine itself.
case $root in
"" | /) root="" ;;
/*) root=${root%/} ;;
*) root="$PWD/${root%/}" ;;
esac
staged=0
[ -n "$root" ] && staged=1

readonly BIN="$root/usr/sbin/nannyagent"
readonly CONF_DIR="$root/etc/nannyagent"
readonly CONF="$CONF_DIR/config.yaml"
readonly DATA_DIR="$root/var/lib/nannyagent"
readonly UNIT_DIR="$root/etc/systemd/system"
readonly UNIT="$UNIT_DIR/$UNIT_NAME"
readonly DROPIN_DIR="$UNIT_DIR/$UNIT_NAME.d"

# systemd manages services here: not staged, and PID 1 is systemd (the
# test sd_booted(3) makes).
systemd_live() {
	[ "$staged" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# ---- check 1: root

check_root() {
	if [ "$(id -u)" != 0 ]; then
		die "$E_ROOT" "install.sh must run as root (it writes /usr/sbin, /etc and /var/lib, and the agent loads eBPF programs)" \
			"run it with sudo: sudo ./install.sh${orig_args:+ $orig_args}"
	fi
}

# ---- uninstall

remove_file() { # status path
	if [ -e "$2" ] || [ -L "$2" ]; then
		rm -f -- "$2" || die "$1" "cannot remove $2" "check that the file system is writable, then run ./install.sh --uninstall again"
		say "removed $2"
	fi
}

do_uninstall() {
	if systemd_live && [ -e "$UNIT" ]; then
		systemctl disable --now "$UNIT_NAME" >/dev/null 2>&1 || warn "systemctl disable --now $UNIT_NAME failed; see systemctl status $UNIT_NAME"
	fi
	remove_file "$E_FILES" "$BIN"
	remove_file "$E_FILES" "$UNIT"
	remove_file "$E_FILES" "$DROPIN_DIR/$BACKOFF_DROPIN"
	# Links left by "systemctl enable" when systemctl could not run
	# (staged, or systemd not running).
	local link
	for link in "$UNIT_DIR"/*.wants/"$UNIT_NAME"; do
		if [ -L "$link" ]; then
			remove_file "$E_FILES" "$link"
			rmdir -- "${link%/*}" 2>/dev/null || true
		fi
	done
	if [ "$purge" = 1 ]; then
		local d
		for d in "$CONF_DIR" "$DATA_DIR" "$DROPIN_DIR"; do
			if [ -e "$d" ]; then
				rm -rf -- "$d" || die "$E_DIRS" "cannot remove $d" "remove it by hand: sudo rm -rf $d"
				say "removed $d"
			fi
		done
	else
		# The drop-in directory is the administrator's once it holds
		# their overrides (systemctl edit); only an empty one goes.
		rmdir -- "$DROPIN_DIR" 2>/dev/null || true
	fi
	if systemd_live; then
		systemctl daemon-reload || warn "systemctl daemon-reload failed"
		systemctl reset-failed "$UNIT_NAME" >/dev/null 2>&1 || true
	fi
	if [ "$purge" = 0 ]; then
		local kept=""
		[ -e "$CONF_DIR" ] && kept="$kept $CONF_DIR"
		[ -e "$DATA_DIR" ] && kept="$kept $DATA_DIR"
		[ -e "$DROPIN_DIR" ] && kept="$kept $DROPIN_DIR"
		if [ -n "$kept" ]; then
			say "kept the configuration and data:$kept"
			say "(./install.sh --purge removes them too)"
		fi
	fi
	say "nannyagent is uninstalled"
	exit 0
}

# ---- checks 2 to 5: the machine

check_os() {
	local s=${NANNYAGENT_INSTALL_UNAME_S:-$(uname -s)}
	if [ "$s" != Linux ]; then
		die "$E_OS" "this is $s, not Linux: nannyagent traces the Linux kernel with eBPF and runs only there" \
			"install it on a Linux host (kernel 5.0 or newer, amd64 or arm64)"
	fi
}

arch=""
check_arch() {
	local m=${NANNYAGENT_INSTALL_UNAME_M:-$(uname -m)}
	case $m in
	x86_64 | amd64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) die "$E_ARCH" "the architecture is $m: nannyagent is built for amd64 (x86_64) and arm64 (aarch64) only" \
		"its eBPF programs and system-call filters exist for those two; install it on an amd64 or arm64 host" ;;
	esac
}

# container_marker prints what shows that this runs in a container, if
# anything does.
container_marker() {
	local r=${NANNYAGENT_INSTALL_CONTAINER_ROOT:-}
	if [ -e "$r/.dockerenv" ]; then
		say "$r/.dockerenv exists (Docker)"
		return
	fi
	if [ -e "$r/run/.containerenv" ]; then
		say "$r/run/.containerenv exists (Podman)"
		return
	fi
	local v
	if [ -r "$r/run/systemd/container" ] && v=$(head -c 64 "$r/run/systemd/container" 2>/dev/null) && [ -n "$v" ]; then
		say "$r/run/systemd/container says $v"
		return
	fi
	# PID 1's environment is readable only with CAP_SYS_PTRACE toward it;
	# when it is not, the other markers decide.
	if v=$(tr '\0' '\n' 2>/dev/null <"$r/proc/1/environ" | grep -m1 '^container='); then
		say "PID 1's environment has $v"
		return
	fi
	if v=$(grep -m1 -E '/(docker|lxc|libpod|kubepods|containerd|garden|actions_job)' "$r/proc/1/cgroup" 2>/dev/null); then
		say "PID 1's cgroup is $v"
		return
	fi
	if [ -z "$r" ] && command -v systemd-detect-virt >/dev/null 2>&1; then
		if v=$(systemd-detect-virt --container 2>/dev/null) && [ "$v" != none ]; then
			say "systemd-detect-virt --container says $v"
		fi
	fi
}

check_container() {
	local why
	why=$(container_marker)
	if [ -n "$why" ]; then
		die "$E_CONTAINER" "this is a container ($why)" \
			"a container shares the host's kernel and normally may not load eBPF programs or create the agent's sandbox;" \
			"install nannyagent on the host (the Proxmox node, the VM): it sees and diagnoses the containers from there"
	fi
}

kernel=""
check_kernel() {
	kernel=${NANNYAGENT_INSTALL_UNAME_R:-$(uname -r)}
	local major=${kernel%%.*}
	case $major in
	'' | *[!0-9]*)
		die "$E_KERNEL" "cannot read the kernel version from \"$kernel\"" \
			"nannyagent needs Linux 5.0 or newer; check uname -r" ;;
	esac
	if [ "$major" -lt 5 ]; then
		die "$E_KERNEL" "the kernel is $kernel, older than 5.0: the eBPF catalog needs BTF, CO-RE and the BPF features of 5.x kernels" \
			"boot a newer kernel (your distribution's backports or HWE kernel, or a newer release), then run install.sh again"
	fi
}

# Not fatal: the agent runs without them, with less. `nannyagent check`
# says exactly what works.
warn_features() {
	if [ "$staged" = 0 ]; then
		[ -e /sys/kernel/btf/vmlinux ] ||
			warn "/sys/kernel/btf/vmlinux is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), so the eBPF catalog cannot load; investigations still run without kernel traces"
		if [ -r /sys/kernel/security/lsm ] && ! grep -qw landlock /sys/kernel/security/lsm; then
			warn "Landlock is not enabled (it is not in /sys/kernel/security/lsm): the command sandbox falls back to read-only mounts and a stricter filter; add lsm=landlock,... to the kernel command line to enable it"
		fi
	fi
}

# ---- check 6: an existing installation

upgrade=0
check_existing() {
	if [ -e "$DATA_DIR" ]; then
		if [ "$force" = 0 ]; then
			die "$E_EXISTS" "nannyagent is already installed here ($DATA_DIR exists)" \
				"to upgrade it (configuration and data kept): sudo ./install.sh --force" \
				"to remove it first: sudo ./install.sh --uninstall (add --purge to remove configuration and data)"
		fi
		upgrade=1
	fi
}

# ---- check 7: bpftrace, the fallback for probes the catalog lacks

os_id=""
os_like=""
os_name=""
read_os_release() {
	local f=${NANNYAGENT_INSTALL_OS_RELEASE:-/etc/os-release}
	[ -r "$f" ] || f=/usr/lib/os-release
	[ -r "$f" ] || return 0
	local k v
	while IFS='=' read -r k v; do
		v=${v#[\"\']}
		v=${v%[\"\']}
		case $k in
		ID) os_id=$v ;;
		ID_LIKE) os_like=$v ;;
		PRETTY_NAME) os_name=$v ;;
		esac
	done <"$f"
}

# pkg_manager prints the package manager to use: the one the distribution
# names first, else whichever exists.
pkg_manager() {
	local want=""
	case " $os_id $os_like " in
	*" debian "* | *" ubuntu "*) want=apt-get ;;
	*" fedora "* | *" rhel "* | *" centos "*) want="dnf yum" ;;
	*" suse "* | *" opensuse "* | *" sles "*) want=zypper ;;
	*" arch "*) want=pacman ;;
	*" alpine "*) want=apk ;;
	esac
	local pm
	for pm in $want apt-get dnf yum zypper pacman apk; do
		if command -v "$pm" >/dev/null 2>&1; then
			say "$pm"
			return
		fi
	done
}

pkg_install_bpftrace() { # manager
	case $1 in
	apt-get) apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bpftrace ;;
	dnf) dnf install -y bpftrace ;;
	yum) yum install -y bpftrace ;;
	zypper) zypper --non-interactive install bpftrace ;;
	# -S without -y: a partial upgrade (-Sy) can break an Arch system.
	pacman) pacman -S --noconfirm --needed bpftrace ;;
	apk) apk add bpftrace ;;
	*) return 1 ;;
	esac
}

bpftrace_fail() { # reason how-to-fix
	if [ "$bpftrace_mode" = yes ]; then
		die "$E_BPFTRACE" "bpftrace could not be installed: $1" "$2" \
			"or leave out --with-bpftrace: the eBPF catalog does not need bpftrace, only the fallback for probes it lacks does"
	fi
	warn "bpftrace is not installed ($1); the eBPF catalog works without it, only the fallback for probes it lacks does not. $2"
}

check_bpftrace() {
	[ "$bpftrace_mode" = no ] && return
	if command -v bpftrace >/dev/null 2>&1; then
		say "bpftrace: $(command -v bpftrace)"
		return
	fi
	if [ "$staged" = 1 ]; then
		bpftrace_fail "packages cannot be installed into a staging root (--destdir)" \
			"install the bpftrace package on the machine that will run nannyagent"
		return
	fi
	local pm
	pm=$(pkg_manager)
	if [ -z "$pm" ]; then
		bpftrace_fail "no known package manager (apt-get, dnf, yum, zypper, pacman, apk) was found" \
			"install bpftrace from your distribution or https://github.com/bpftrace/bpftrace"
		return
	fi
	say "installing bpftrace with $pm"
	if ! pkg_install_bpftrace "$pm"; then
		bpftrace_fail "$pm failed (its output is above)" "fix the package manager's problem, or install bpftrace by hand"
		return
	fi
	if ! command -v bpftrace >/dev/null 2>&1; then
		bpftrace_fail "$pm succeeded but bpftrace is not in PATH ($PATH)" "install bpftrace by hand"
		return
	fi
	say "bpftrace: $(command -v bpftrace)"
}

# ---- checks 8 and 9: the binary

workdir=""
cleanup() {
	if [ -n "$workdir" ]; then
		rm -rf -- "$workdir"
	fi
}
trap cleanup EXIT

# elf_arch prints amd64 or arm64 for an ELF executable of either, else
# what it is.
elf_arch() {
	local magic
	magic=$(od -An -tx1 -N4 -- "$1" 2>/dev/null | tr -d ' \n')
	if [ "$magic" != 7f454c46 ]; then
		say "not an ELF executable"
		return
	fi
	# e_machine, little-endian as on both supported architectures.
	local lo hi
	read -r lo hi < <(od -An -tu1 -j18 -N2 -- "$1")
	case "${lo:-}.${hi:-}" in
	62.0) say amd64 ;;
	183.0) say arm64 ;;
	*) say "an ELF executable for machine number $((${lo:-0} + 256 * ${hi:-0}))" ;;
	esac
}

find_go() { # minimum-version
	if [ -n "${GO:-}" ]; then
		if command -v "$GO" >/dev/null 2>&1; then
			command -v "$GO"
			return
		fi
		die "$E_NOGO" "GO=$GO is not an executable Go command" \
			"point GO at the go binary (GO=/usr/local/go/bin/go), or unset it"
	fi
	if command -v go >/dev/null 2>&1; then
		command -v go
		return
	fi
	# sudo's secure_path leaves out where the official tarball installs.
	if [ -x /usr/local/go/bin/go ]; then
		say /usr/local/go/bin/go
		return
	fi
	die "$E_NOGO" "Go is not installed (no go in PATH or /usr/local/go/bin): it is needed to build nannyagent from this checkout" \
		"install Go $1 or newer (https://go.dev/doc/install, or your distribution's golang package) and run install.sh again;" \
		"if it is installed where sudo does not look: sudo GO=\$(command -v go) ./install.sh" \
		"or build elsewhere and install the result: sudo ./install.sh --binary PATH"
}

src_binary=""
get_binary() {
	if [ -n "$binary" ]; then
		if [ ! -f "$binary" ] || [ ! -r "$binary" ]; then
			die "$E_FILES" "--binary $binary is not a readable file" "give the path of a nannyagent binary (make build writes bin/nannyagent)"
		fi
		src_binary=$binary
	else
		build_binary
	fi
	local a
	a=$(elf_arch "$src_binary")
	if [ "$a" = "not an ELF executable" ]; then
		die "$E_FILES" "$src_binary is not an ELF executable" "give the path of a nannyagent binary (make build writes bin/nannyagent)"
	fi
	if [ "$a" != "$arch" ]; then
		die "$E_FILES" "$src_binary is $a, but this machine is $arch" \
			"build it for $arch: CGO_ENABLED=0 GOARCH=$arch go build -o nannyagent ./cmd/nannyagent"
	fi
}

build_binary() {
	local src
	src=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd) || die "$E_BUILD" "cannot find the directory of install.sh" "run it by its path from a clone: cd nannyagent && sudo ./install.sh"
	if [ ! -f "$src/go.mod" ] || [ ! -d "$src/cmd/nannyagent" ]; then
		die "$E_BUILD" "there is no nannyagent source tree beside install.sh ($src)" \
			"run install.sh from a clone of the repository, or give a binary with --binary PATH"
	fi
	local go gover
	gover=$(awk '$1 == "go" { print $2; exit }' "$src/go.mod")
	go=$(find_go "${gover:-1.24}") || exit
	# git refuses to describe a checkout owned by another user (sudo in
	# a user's clone) unless told it is safe; the version is cosmetic, so
	# any failure means "dev".
	local version
	version=$(git -c safe.directory="$src" -C "$src" describe --tags --always --dirty 2>/dev/null) || version=dev
	workdir=$(mktemp -d) || die "$E_BUILD" "cannot create a temporary directory" "check that \$TMPDIR (${TMPDIR:-/tmp}) is writable"
	say "building nannyagent $version with $go ($("$go" env GOVERSION 2>/dev/null || echo "unknown version"))"
	# -buildvcs=false: the version comes from -X; VCS stamping would run
	# git as root in a checkout it may not trust, and fail the build.
	if ! (cd -- "$src" && CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false \
		-ldflags "-s -w -X github.com/nannyagent/nannyagent/internal/version.Version=$version" \
		-o "$workdir/nannyagent" ./cmd/nannyagent); then
		die "$E_BUILD" "go build failed (its errors are above)" \
			"fix the build (make build shows the same errors), use a Go version the go.mod accepts, or install a prebuilt binary with --binary PATH"
	fi
	src_binary=$workdir/nannyagent
}

# ---- step 10: directories

make_dirs() {
	local d
	for d in "$root/usr/sbin" "$UNIT_DIR"; do
		mkdir -p -- "$d" || die "$E_DIRS" "cannot create $d" "check that its parent exists and is writable (is the file system read-only or full?)"
	done
	# The configuration may hold a token or a key, the data directory
	# holds the agent's credentials: root only.
	for d in "$CONF_DIR" "$DATA_DIR"; do
		if ! { mkdir -p -- "$d" && chmod 0700 -- "$d"; }; then
			die "$E_DIRS" "cannot create $d with mode 0700" "check that its parent exists and is writable (is the file system read-only or full?)"
		fi
	done
}

# ---- step 11: files

# install_file MODE DEST: writes stdin to DEST through a temporary file in
# the same directory and a rename, so that a running binary is replaced,
# not rewritten, and nothing is ever half-written. In a pipeline it runs
# in a subshell: callers add "|| exit".
install_file() {
	local mode=$1 dest=$2 tmp
	tmp="$dest.install.$$"
	if ! { (umask 077 && cat >"$tmp") && chmod "$mode" -- "$tmp" && mv -f -- "$tmp" "$dest"; }; then
		rm -f -- "$tmp"
		die "$E_FILES" "cannot write $dest" "check that ${dest%/*} is writable and has free space, then run install.sh again"
	fi
}

install_files() {
	install_file 0755 "$BIN" <"$src_binary"
	say "installed $BIN"

	unit_text | install_file 0644 "$UNIT" || exit
	say "installed $UNIT"

	local sv
	sv=${NANNYAGENT_INSTALL_SYSTEMD_VERSION:-$(systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 }')}
	sv=${sv%%[!0-9]*}
	if [ -n "$sv" ] && [ "$sv" -ge "$SYSTEMD_BACKOFF_MIN" ]; then
		mkdir -p -- "$DROPIN_DIR" || die "$E_DIRS" "cannot create $DROPIN_DIR" "check that $UNIT_DIR is writable"
		backoff_text | install_file 0644 "$DROPIN_DIR/$BACKOFF_DROPIN" || exit
		say "installed $DROPIN_DIR/$BACKOFF_DROPIN"
	elif [ -e "$DROPIN_DIR/$BACKOFF_DROPIN" ]; then
		remove_file "$E_FILES" "$DROPIN_DIR/$BACKOFF_DROPIN"
		rmdir -- "$DROPIN_DIR" 2>/dev/null || true
	fi

	# The configuration is the administrator's: never overwritten. An
	# upgrade puts the new default beside it to compare.
	if [ ! -e "$CONF" ]; then
		config_text | install_file 0600 "$CONF" || exit
		say "installed $CONF"
	else
		local perm
		perm=$(stat -c %a -- "$CONF" 2>/dev/null) || perm=""
		case $perm in
		"" | *00) ;;
		*) warn "$CONF has mode $perm: it may hold a token; chmod 600 $CONF" ;;
		esac
		if config_text | cmp -s - "$CONF"; then
			rm -f -- "$CONF.new"
			say "kept $CONF (it is the current default)"
		else
			config_text | install_file 0600 "$CONF.new" || exit
			say "kept $CONF; the new default is $CONF.new (diff them to see what changed)"
		fi
	fi
}

# ---- the systemd unit

# unit_text is the unit. Every directive, and every hardening directive
# left out, says why: the agent must see the host as it is (it diagnoses
# mounts, /tmp, /home, devices and kernel settings), load eBPF programs,
# build its own per-command sandbox, and run the patch scripts that the
# backend sends, which change the system on purpose.
unit_text() {
	cat <<'EOF'
# nannyagent.service, written by install.sh; an upgrade replaces it.
# Local changes belong in a drop-in (systemctl edit nannyagent), which
# upgrades leave alone. docs/INSTALLATION.md explains each choice.

[Unit]
Description=nannyagent Linux diagnostic agent
Documentation=https://github.com/nannyagent/nannyagent/blob/main/docs/INSTALLATION.md
# The daemon works with the NannyAPI backend. It retries on its own; being
# ordered after the network saves a round of failed connections at boot.
Wants=network-online.target
After=network-online.target
# A crash loop stops after 10 starts in 30 minutes rather than spinning
# forever; systemctl restart nannyagent starts it again. Systemd 254 and
# newer get a drop-in with a growing delay instead (see [Service]).
StartLimitIntervalSec=30min
StartLimitBurst=10

[Service]
# The daemon tells systemd when it is ready (READY=1) and that it is alive
# (WATCHDOG=1) through $NOTIFY_SOCKET; only the main process may, so
# nothing the agent runs can speak for it.
Type=notify
NotifyAccess=main
ExecStart=/usr/sbin/nannyagent --daemon
# A daemon that stops answering for a minute is killed and restarted. The
# hosts it diagnoses are often overloaded, hence a minute, not seconds.
WatchdogSec=60s
Restart=on-failure
RestartSec=10s
# Status 2 is a configuration or usage error: restarting cannot fix it.
# Fix the configuration, then systemctl restart nannyagent.
RestartPreventExitStatus=2
# The daemon shuts down within 10 seconds of SIGTERM; the rest is margin
# before SIGKILL.
TimeoutStopSec=30s

# Logs: JSON lines on stderr, kept by journald (journalctl -u nannyagent).
StandardOutput=journal
StandardError=journal
SyslogIdentifier=nannyagent

# /var/lib/nannyagent holds the agent's credentials: root only. systemd
# recreates it with this mode if it is missing.
StateDirectory=nannyagent
StateDirectoryMode=0700
# Not RuntimeDirectory=: /run/nannyagent (the sandbox's scratch mount
# point) is shared with nannyagent run from a shell, and systemd would
# delete it under a running investigation when the service stops.

# eBPF maps count against RLIMIT_MEMLOCK on kernels before 5.11; the
# default 8 MiB is too small for the catalog.
LimitMEMLOCK=infinity

# Capabilities the agent, the patch scripts it runs and their package
# managers never need. The agent needs the rest: CAP_BPF and CAP_PERFMON
# (CAP_SYS_ADMIN before 5.8) for eBPF, CAP_SYS_ADMIN for the sandbox's
# mount namespace and for tracefs, CAP_SETPCAP, CAP_SETUID and CAP_SETGID
# to drop privileges in the sandbox, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE,
# CAP_NET_RAW and CAP_SYSLOG for the diagnostic commands, CAP_IPC_LOCK and
# CAP_SYS_RESOURCE for eBPF and perf buffers on older kernels; package
# upgrades need CAP_CHOWN, CAP_FOWNER, CAP_SETFCAP, CAP_MAC_ADMIN and more.
# Reboots go through systemd (systemctl reboot), which holds its own
# CAP_SYS_BOOT.
CapabilityBoundingSet=~CAP_SYS_BOOT CAP_SYS_TIME CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_SYS_PACCT CAP_SYS_TTY_CONFIG CAP_LEASE
# Sockets: Unix (journald, D-Bus, container runtimes), IPv4 and IPv6 (the
# backend, ping, DNS), netlink (ss, ip, udev during upgrades) and packet
# (tcpdump). Nothing the agent runs uses another family.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
# Only the native system-call ABI: the agent is a native binary, and its
# sandbox already refuses the 32-bit ABI to diagnostic commands.
SystemCallArchitectures=native
# Nothing here changes its execution domain or needs real-time scheduling.
LockPersonality=yes
RestrictRealtime=yes

# Left out on purpose:
# - ProtectSystem=, ProtectHome=, PrivateTmp=, PrivateDevices=,
#   ProtectKernelTunables=, ProtectKernelModules=, ProtectKernelLogs=,
#   ProtectControlGroups=, ProtectProc=, ProcSubset=, ProtectHostname=,
#   ReadOnlyPaths= and the like give the service its own view of the file
#   systems: every mount would read "ro" in /proc/self/mountinfo, /tmp and
#   /home would be other directories, devices, kernel modules, logs and
#   settings hidden. The agent would diagnose that view, not the host's,
#   and its patch scripts could not upgrade anything. Each diagnostic
#   command runs in the agent's own sandbox instead: a read-only mount
#   namespace, Landlock, seccomp and a reduced capability set.
# - NoNewPrivileges=: under SELinux a process with no_new_privs cannot
#   enter the package manager's domain, so patch scripts would fail; the
#   sandbox sets no_new_privs for every diagnostic command.
# - RestrictSUIDSGID=, UMask=0077, MemoryDenyWriteExecute=, RestrictNamespaces=
#   and SystemCallFilter=: upgrades install set-uid programs and files
#   other users must read, bpftrace compiles its programs to executable
#   memory, and pct exec enters a container's namespaces.
# - MemoryMax=, CPUQuota=: patch scripts (kernel modules, initramfs) run
#   in this service's cgroup, and a throttled agent would be slowest on
#   the overloaded hosts it is there to diagnose.

[Install]
WantedBy=multi-user.target
EOF
}

backoff_text() {
	cat <<'EOF'
# Written by install.sh because this systemd (254 or newer) can lengthen
# the delay between restarts: from RestartSec (10 s) up to 10 minutes over
# 10 restarts. A crash loop then costs little, so the start limit is
# lifted and the agent never stays down for good.
[Unit]
StartLimitIntervalSec=0

[Service]
RestartSteps=10
RestartMaxDelaySec=10min
EOF
}

# ---- the default configuration

# config_text is the default /etc/nannyagent/config.yaml: every key
# commented out at its default, so that a later default applies unless the
# administrator chose a value. internal/install's tests check it against
# config.Defaults().
config_text() {
	cat <<'EOF'
# nannyagent configuration, written by install.sh (an upgrade never
# overwrites it; it writes the new default beside it as config.yaml.new).
# Each key below is commented out at its default: uncomment and change
# what you need. Every key, its environment variable, flag and allowed
# values are in docs/CONFIGURATION.md. Durations are whole seconds.
# This file may hold a token: keep it mode 0600.

# The NannyAPI backend, needed by --register, --status and --daemon (local
# investigations do not use it), e.g. https://api.nannyai.dev:
# nannyapi_url: ""
# portal_url: https://nannyai.dev
# token_path: /var/lib/nannyagent/token.json
# metrics_interval: 30
# proxmox_interval: 300
# A static registration token (nsk_...) instead of the device flow:
# static_token: ""
# agent_id: ""
# token_renewal_threshold_days: 7
# token_renewal_check_interval_secs: 21600
# token_renewal_retry_interval_secs: 3600
# debug: false

# The backend client; 0 means the default.
# http_transport:
#   max_idle_conns: 10
#   max_idle_conns_per_host: 5
#   idle_conn_timeout_sec: 30
#   response_header_timeout_sec: 30
#   disable_http2: false
#   transport_reset_threshold: 3
#   initial_retry_delay_sec: 30
#   max_retry_delay_sec: 1800

# The reasoning engine: auto is the built-in offline one unless base_url
# names an OpenAI-compatible endpoint (Ollama: http://127.0.0.1:11434/v1).
# The API key never goes here: name the variable that holds it
# (api_key_env) or a file only root can read (api_key_file).
# ai:
#   provider: auto
#   base_url: ""
#   model: ""
#   api_key_env: ""
#   api_key_file: ""
#   timeout_sec: 120

# The bounds of one investigation.
# diagnose:
#   max_rounds: 8
#   max_wall_sec: 600
#   round_budget_sec: 120
#   command_timeout_sec: 10
#   context_bytes: 32768

# The daemon: how many portal investigations run at once, how long a patch
# script may run, and how the host reboots when the portal asks (an
# absolute program path and its arguments; empty means systemctl reboot,
# falling back to shutdown -r now; reboot_dry_run only logs it).
# daemon:
#   max_concurrent_investigations: 1
#   patch_timeout_sec: 1800
#   reboot_command: []
#   reboot_dry_run: false

# Extra playbooks for the offline engine (a missing directory means none).
# playbook_dir: /etc/nannyagent/playbooks.d
EOF
}

# ---- main

if [ "$uninstall" = 1 ]; then
	check_root
	do_uninstall
fi

check_root
check_os
check_arch
check_container
check_kernel
check_existing
read_os_release
say "nannyagent install: ${os_name:-Linux} $kernel $arch${root:+, into $root}"
warn_features
check_bpftrace
get_binary
make_dirs
install_files

if systemd_live; then
	systemctl daemon-reload || warn "systemctl daemon-reload failed; run it yourself"
	if [ "$upgrade" = 1 ] && systemctl is-active --quiet "$UNIT_NAME"; then
		if systemctl restart "$UNIT_NAME"; then
			say "restarted $UNIT_NAME with the new binary"
		else
			warn "systemctl restart $UNIT_NAME failed; see journalctl -u nannyagent"
		fi
	fi
elif [ "$staged" = 0 ]; then
	warn "systemd is not running here: start /usr/sbin/nannyagent --daemon with your init system"
fi

if [ "$upgrade" = 1 ]; then
	say "nannyagent is upgraded."
else
	say "nannyagent is installed."
fi
cat <<'EOF'

Next steps:
  sudo nannyagent check                        what works on this kernel
  sudo nannyagent diagnose "what is wrong"     an investigation, offline
To connect it to NannyAPI:
  set nannyapi_url in /etc/nannyagent/config.yaml, then
  sudo nannyagent --register                   register this host
  sudo systemctl enable --now nannyagent       start the daemon, and at boot
  journalctl -u nannyagent -f                  its logs
EOF
