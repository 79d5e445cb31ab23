#!/bin/busybox sh
# /init of the kernel-matrix guest (see vmtests/README.md). It prepares
# what the BPF tests expect of a machine, runs every line of /vmtest/plan
# as root and reports on two channels: test output and markers on the
# console (ttyS0), one status line per package and the final exit status
# on ttyS1, which the host reads from a file. Under vng the same script
# runs with VMTEST_ROOT pointing at the host's run directory.
export PATH=${VMTEST_PATH:-/bin:/sbin}
root=${VMTEST_ROOT:-/vmtest}
status=${VMTEST_STATUS:-/dev/ttyS1}

mnt() { mountpoint -q "$3" 2>/dev/null || { mkdir -p "$3"; mount -t "$1" "$2" "$3"; }; }
mnt proc proc /proc
mnt sysfs sys /sys
mnt devtmpfs dev /dev
mnt tmpfs tmp /tmp
mnt tracefs tracefs /sys/kernel/tracing
mnt debugfs debugfs /sys/kernel/debug
mnt bpf bpf /sys/fs/bpf
mnt cgroup2 cgroup2 /sys/fs/cgroup
# The oomkill and reclaim tests make memory-limited child cgroups.
echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
ip link set lo up
hostname vmtest
ulimit -l unlimited 2>/dev/null
# Debian builds the loop driver (biolatency) and, in the generic flavour,
# ext4 as modules; "order" lists them dependencies first.
mods="$root/modules/$(uname -r)"
[ -f "$mods/order" ] && for m in $(cat "$mods/order"); do
	insmod "$mods/$m.ko" || echo "vmtest: insmod $m failed"
done

# A disk-backed scratch file system (sparse, so it costs RAM only for what
# is written): pages of tmpfs cannot be dropped or reclaimed, so tests
# that need major page faults or page-cache reclaim get an ext2 file
# system on a loop device instead (TMPDIR=/tmp/scratch in their plan line).
if [ -e /dev/loop-control ]; then
	dd if=/dev/zero of=/tmp/scratch.img bs=1M count=0 seek=256 2>/dev/null &&
		dev=$(losetup -f) && losetup "$dev" /tmp/scratch.img &&
		mke2fs -q "$dev" >/dev/null && mkdir -p /tmp/scratch &&
		mount -t ext4 "$dev" /tmp/scratch || echo "vmtest: no /tmp/scratch file system"
fi

echo "=== VMTEST-KERNEL $(uname -r)"
echo "=== VMTEST-CHECK-BEGIN"
"$root"/nannyagent check --json 2>/tmp/check.err
echo "=== VMTEST-CHECK-END"
cat /tmp/check.err

up() { cut -d' ' -f1 /proc/uptime; }
rc=0
# A plan line: label, test binary, timeout in seconds, then test flags
# (-test.*) and environment assignments (NAME=value) in any order.
while read -r label bin tmo rest; do
	case "$label" in '' | '#'*) continue ;; esac
	args="" envs=""
	for w in $rest; do
		case "$w" in -*) args="$args $w" ;; *=*) envs="$envs $w" ;; esac
	done
	mkdir -p /tmp/work && cd /tmp/work || exit 1
	echo "=== VMTEST-BEGIN $label"
	t0=$(up)
	# -test.timeout makes a stuck test binary dump its goroutines; the
	# KILL is the last resort for a binary that cannot even do that.
	env $envs NANNYAGENT_REQUIRE_BPF=1 timeout -s KILL $((tmo + 15)) \
		"$root/bin/$bin" -test.v -test.count=1 -test.timeout="${tmo}s" $args </dev/null 2>&1
	r=$?
	t1=$(up)
	echo "=== VMTEST-END $label rc=$r start=$t0 end=$t1"
	echo "pkg $label rc=$r" >"$status"
	[ $r -ne 0 ] && rc=1
	cd / && rm -rf /tmp/work
done <"$root/plan"

if [ $rc -ne 0 ]; then
	echo "=== VMTEST-DMESG"
	dmesg | tail -n 40
fi
echo "=== VMTEST-EXIT $rc"
echo "VMTEST-EXIT $rc" >"$status"
sync
[ -n "$VMTEST_ROOT" ] && exit $rc
reboot -f
