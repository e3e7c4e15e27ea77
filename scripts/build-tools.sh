#!/usr/bin/env bash
# Builds the image tools the tests compare against, into OUT_DIR (default target/testenv/tools/bin):
#
#   - mkfs.erofs, fsck.erofs, dump.erofs from Debian's erofs-utils 1.9.4 source package
#     (suite sid), with lz4, lzma, deflate (libdeflate) and zstd;
#   - nydus-image 2.2.0 from crates.io (`cargo install nydus-rs --version 2.2.0 --locked`),
#     and from the same build nydusd 2.2.0, the peer daemon of tests/src/nydusd.rs.
#
#   scripts/build-tools.sh [OUT_DIR]
#
# Needs root for apt-get (it adds sid's deb-src to apt's sources); about 13 minutes on a busy 2-core machine, most of it `cargo install nydus-rs`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/testenv/tools/bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${WORK:-$root/target/testenv/build/tools}
mkdir -p "$work"
cd "$work"

export DEBIAN_FRONTEND=noninteractive
list=/etc/apt/sources.list.d/erofs-rs-sid-src.list
if [ ! -f "$list" ]; then
    echo "deb-src http://deb.debian.org/debian sid main" >"$list"
    apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends autoconf automake libtool pkg-config make gcc \
    dpkg-dev liblz4-dev liblzma-dev libzstd-dev libdeflate-dev uuid-dev zlib1g-dev \
    cmake libssl-dev >/dev/null

if [ ! -d erofs-utils-1.9.4 ]; then
    apt-get source --download-only erofs-utils=1.9.4-1
    dpkg-source -x erofs-utils_1.9.4-1.dsc erofs-utils-1.9.4
fi
(
    cd erofs-utils-1.9.4
    ./autogen.sh >/dev/null
    ./configure --enable-lzma --with-libzstd --with-libdeflate --disable-fuse >/dev/null
    make -j"$(nproc)" >/dev/null
    cp mkfs/mkfs.erofs fsck/fsck.erofs dump/dump.erofs "$out/"
)
cargo install --quiet nydus-rs --version 2.2.0 --locked --root "$work/nydus" \
    --bin nydus-image --bin nydusd
cp "$work/nydus/bin/nydus-image" "$work/nydus/bin/nydusd" "$out/"
"$out/mkfs.erofs" --version | head -1
"$out/nydus-image" --version | head -1
echo "built the image tools in $out"
