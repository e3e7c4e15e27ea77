#!/usr/bin/env bash
# Builds one test kernel from Debian's kernel source package: `make tinyconfig` plus the
# fragment scripts/kernel/linux-VERSION.config, no modules, no initramfs tools.
#
#   scripts/build-kernel.sh 6.12|7.2 [OUT_DIR]
#
# 6.12 (linux-source-6.12, suite trixie): EROFS over fscache, cachefiles ondemand.
# 7.2 (linux-source-7.2, suite sid): fanotify pre-content events on file-backed EROFS.
# Writes OUT_DIR/linux-VERSION.bzImage and OUT_DIR/linux-VERSION.full-config (the resulting
# .config). OUT_DIR defaults to target/testenv/vm. Needs root for apt-get (it adds the suite
# to apt's sources, pinned low so nothing else is upgraded from it); about 15 minutes on a busy 2-core machine.
set -euo pipefail
ver=${1:?usage: build-kernel.sh 6.12|7.2 [OUT_DIR]}
case $ver in
6.12) suite=trixie ;;
7.2) suite=sid ;;
*) echo "unknown version $ver (6.12 or 7.2)" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/target/testenv/vm}
mkdir -p "$out"
out=$(cd "$out" && pwd)
fragment=$root/scripts/kernel/linux-$ver.config
work=${WORK:-$root/target/testenv/build/linux-$ver}
mkdir -p "$work"
cd "$work"

# Build dependencies, and the source package's suite in apt's sources (pinned low).
export DEBIAN_FRONTEND=noninteractive
list=/etc/apt/sources.list.d/erofs-rs-$suite.list
if ! apt-cache policy 2>/dev/null | grep -q " $suite/main"; then
    echo "deb http://deb.debian.org/debian $suite main" >"$list"
    printf 'Package: *\nPin: release n=%s\nPin-Priority: 100\n' "$suite" \
        >/etc/apt/preferences.d/erofs-rs-$suite
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends bc bison flex gcc make libelf-dev libssl-dev \
    xz-utils dpkg-dev >/dev/null

if [ ! -d "linux-source-$ver" ]; then
    ls linux-source-"$ver"_*_all.deb >/dev/null 2>&1 || apt-get download -t "$suite" "linux-source-$ver"
    dpkg-deb --fsys-tarfile linux-source-"$ver"_*_all.deb |
        tar -x --strip-components=3 "./usr/src/linux-source-$ver.tar.xz"
    tar xf "linux-source-$ver.tar.xz"
fi
cd "linux-source-$ver"
make tinyconfig >/dev/null
./scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
make olddefconfig >/dev/null
# Every line of the fragment must have survived olddefconfig (a dropped option is a silent
# missing feature in the VM tests).
missing=$(grep '^CONFIG_' "$fragment" | while read -r line; do grep -qx "$line" .config || echo "$line"; done)
if [ -n "$missing" ]; then
    echo "these options of $fragment did not take (dependency missing?):" >&2
    echo "$missing" >&2
    exit 1
fi
make -j"$(nproc)" bzImage >/dev/null
cp arch/x86/boot/bzImage "$out/linux-$ver.bzImage"
cp .config "$out/linux-$ver.full-config"
echo "built $out/linux-$ver.bzImage"
