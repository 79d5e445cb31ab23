#!/usr/bin/env bash
# Regenerates the pinned headers the BPF programs compile against:
#   headers/bpf/*.h        libbpf's BPF-side headers, from Debian's libbpf-dev package
#   headers/vmlinux_x86.h  from this machine's kernel BTF (/sys/kernel/btf/vmlinux)
#   headers/vmlinux_arm64.h from the BTF inside a Debian arm64 kernel image
# Never changes the system's apt configuration: downloads go through a private
# state directory in a temporary folder.
#
# usage: headers/update.sh [libbpf|x86|arm64|all]   (default: all)
# env:   ARM64_KERNEL_PKG  (default: newest linux-image-6.12*-cloud-arm64 in the configured suites)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
what=${1:-all}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

need() { command -v "$1" >/dev/null || { echo "update.sh: $1 is required ($2)" >&2; exit 1; }; }

apt_private() { # arch, then apt-get arguments
  local arch=$1; shift
  mkdir -p "$tmp/$arch/lists/partial" "$tmp/$arch/cache/archives/partial"
  apt-get -q -o APT::Architecture="$arch" -o APT::Architectures="$arch" \
    -o Dir::State::Lists="$tmp/$arch/lists" -o Dir::Cache="$tmp/$arch/cache" "$@"
}

libbpf() {
  apt_private amd64 update >/dev/null
  (cd "$tmp" && apt_private amd64 download libbpf-dev >/dev/null)
  local deb; deb=$(ls "$tmp"/libbpf-dev_*.deb)
  dpkg-deb -x "$deb" "$tmp/libbpf"
  for h in bpf_helpers.h bpf_helper_defs.h bpf_tracing.h bpf_core_read.h bpf_endian.h; do
    cp "$tmp/libbpf/usr/include/bpf/$h" "$here/bpf/$h"
  done
  basename "$deb" > "$here/bpf/VERSION"
  echo "libbpf headers from $(cat "$here/bpf/VERSION")"
}

x86() {
  need bpftool "apt-get install bpftool"
  [ "$(uname -m)" = x86_64 ] || { echo "update.sh: x86 header must be made on an x86_64 host" >&2; exit 1; }
  { echo "/* vmlinux_x86.h: BTF of Linux $(uname -r) (x86_64), dumped by headers/update.sh x86 */"
    bpftool btf dump file /sys/kernel/btf/vmlinux format c; } > "$here/vmlinux_x86.h"
  echo "vmlinux_x86.h from $(uname -r)"
}

arm64() {
  need bpftool "apt-get install bpftool"
  apt_private arm64 update >/dev/null
  local pkg=${ARM64_KERNEL_PKG:-}
  if [ -z "$pkg" ]; then
    pkg=$(apt_private arm64 -s install --no-install-recommends 2>/dev/null true >/dev/null; \
          apt-cache -o APT::Architecture=arm64 -o Dir::State::Lists="$tmp/arm64/lists" pkgnames linux-image-6.12 \
          | grep -E '^linux-image-6\.12\.[0-9.+~a-z-]*-cloud-arm64$' | sort -V | tail -n1)
  fi
  [ -n "$pkg" ] || { echo "update.sh: no arm64 cloud kernel package found; set ARM64_KERNEL_PKG" >&2; exit 1; }
  (cd "$tmp" && apt_private arm64 download "$pkg" >/dev/null)
  dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/k"
  local img; img=$(ls "$tmp"/k/boot/vmlinuz-*)
  if gzip -t "$img" 2>/dev/null; then gunzip -c "$img" > "$tmp/Image"; else cp "$img" "$tmp/Image"; fi
  python3 - "$tmp/Image" "$tmp/vmlinux.btf" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
best = None
i = data.find(b'\x9f\xeb\x01\x00')
while i >= 0:
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from('<5I', data, i + 4)
    if hdr_len == 24 and type_off == 0 and str_off == type_len and type_len > 1_000_000:
        best = data[i:i + 24 + type_len + str_len]
        break
    i = data.find(b'\x9f\xeb\x01\x00', i + 1)
if best is None:
    sys.exit('no BTF blob found in the kernel image')
open(sys.argv[2], 'wb').write(best)
PY
  { echo "/* vmlinux_arm64.h: BTF of $(basename "$img" | sed 's/^vmlinuz-//') (arm64, package $pkg), dumped by headers/update.sh arm64 */"
    bpftool btf dump file "$tmp/vmlinux.btf" format c; } > "$here/vmlinux_arm64.h"
  echo "vmlinux_arm64.h from $pkg"
}

case $what in
  libbpf) libbpf ;;
  x86) x86 ;;
  arm64) arm64 ;;
  all) libbpf; x86; arm64 ;;
  *) echo "usage: $0 [libbpf|x86|arm64|all]" >&2; exit 2 ;;
esac
