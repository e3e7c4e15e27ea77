#!/usr/bin/env bash
# Lazy image pulling with EROFS over fscache, end to end, in one command:
#
#   1. build `erofs-ondemand` (static, for the VM) and the `erofs` inspection tool;
#   2. make a small tree and a chunk-based EROFS image from it: a metadata-only bootstrap plus
#      a separate data blob (the layout container images use);
#   3. boot the Linux 6.12 test kernel (../shared/vm) under qemu with the bootstrap and the blob
#      in a blob directory, start `erofs-ondemand serve` there, mount the image with
#      `mount -t erofs none -o fsid=demo,device=demo-blob`, and read part of it;
#   4. show what the kernel asked the daemon for (one log line per OPEN/READ/CLOSE) and what
#      was fetched in total, against the blob's size.
#
# Needs root on a Debian machine: it installs what it lacks (scripts/packages.txt: qemu, a static
# busybox, cpio, mkfs.ext4, ...) and uses the test kernel and mkfs.erofs of the test environment
# (../shared, or what scripts/build-testenv.sh builds; scripts/env.sh says which). Run from
# anywhere; nothing is mounted on the host. Work files go to $DEMO_DIR (default: target/demo).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")" && pwd)
. "$ROOT/scripts/env.sh"
erofs_setup
SHARED=$EROFS_SHARED_DIR
KERNEL=$SHARED/vm/linux-6.12.bzImage
WORK=${DEMO_DIR:-$ROOT/target/demo}
STATIC_TARGET=${EROFS_VM_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/vm-static}
TRIPLE=x86_64-unknown-linux-gnu

# Bold headings on a terminal only: no escapes into a pipe or a file.
if [ -t 1 ]; then
    say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    say() { printf '\n== %s\n' "$*"; }
fi
die() {
    echo "demo: $*" >&2
    exit 1
}

BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "needs a static busybox at $BUSYBOX (apt-get install busybox-static)"

say "building erofs-ondemand (static, for the VM) and the erofs tool"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$STATIC_TARGET \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo build --quiet --release --target $TRIPLE --manifest-path "$ROOT/Cargo.toml" \
    -p ondemand --features cli --bin erofs-ondemand
DAEMON=$STATIC_TARGET/$TRIPLE/release/erofs-ondemand
cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p erofs-reader --features cli --bin erofs
EROFS=$(cargo metadata --quiet --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/erofs
[ -x "$EROFS" ] || die "erofs tool not found at $EROFS"

say "a small tree and a chunk-based image (1 MiB chunks): bootstrap + blob"
rm -rf "$WORK"
mkdir -p "$WORK/tree/docs" "$WORK/tree/data" "$WORK/blobs"
echo "hello from a lazily pulled image" >"$WORK/tree/hello.txt"
for i in 1 2 3; do
    seq 1 2000 | sed "s/^/doc $i line /" >"$WORK/tree/docs/doc$i.txt"
done
head -c $((4 << 20)) /dev/urandom >"$WORK/tree/data/small-4m"
head -c $((16 << 20)) /dev/urandom >"$WORK/tree/data/large-16m"
mkfs.erofs -b4096 --chunksize=1048576 --blobdev="$WORK/blobs/demo-blob" \
    "$WORK/blobs/demo" "$WORK/tree" >/dev/null
ls -l "$WORK/blobs"
echo
"$EROFS" ls -lR --device "$WORK/blobs/demo-blob" "$WORK/blobs/demo"
echo
for f in /data/large-16m /data/small-4m /docs/doc1.txt; do
    echo "where $f lives:"
    "$EROFS" chunks --device "$WORK/blobs/demo-blob" "$WORK/blobs/demo" $f
done
SMALL_SUM=$(sha256sum "$WORK/tree/data/small-4m" | cut -d' ' -f1)
HEAD_SUM=$(head -c 100000 "$WORK/tree/data/large-16m" | sha256sum | cut -d' ' -f1)

say "the guest: busybox + erofs-ondemand in an initramfs, the blobs on an ext4 disk"
mkdir -p "$WORK/initramfs/bin" "$WORK/initramfs/vmtest"
cp "$BUSYBOX" "$WORK/initramfs/bin/busybox"
ln -s busybox "$WORK/initramfs/bin/sh"
cp "$DAEMON" "$WORK/initramfs/bin/erofs-ondemand"
install -m 755 "$ROOT/tests/vm/init.sh" "$WORK/initramfs/init"
cat >"$WORK/initramfs/vmtest/test.sh" <<EOF
say() { echo; echo "-- \$*"; }
mkdir -p /data/cache /mnt/demo
say "guest: erofs-ondemand serve --cache-dir /data/cache --blob-dir /data/blobs"
RUST_LOG=debug erofs-ondemand serve --cache-dir /data/cache --blob-dir /data/blobs \\
    --tag demo >/tmp/daemon.log 2>&1 &
DAEMON=\$!
while ! grep -q " A demo\\\$" /proc/fs/fscache/caches; do sleep 0.05; done
say "guest: mount -t erofs none -o fsid=demo,device=demo-blob /mnt/demo"
mount -t erofs none -o fsid=demo,device=demo-blob /mnt/demo
ls -lR /mnt/demo
say "guest: cat /mnt/demo/hello.txt"
cat /mnt/demo/hello.txt
say "guest: read the first 100000 bytes of the 16 MiB file"
got=\$(head -c 100000 /mnt/demo/data/large-16m | sha256sum | cut -d' ' -f1)
[ "\$got" = $HEAD_SUM ] && echo "sha256 matches the host: \$got" || echo "MISMATCH: \$got"
say "guest: read the whole 4 MiB file"
got=\$(sha256sum /mnt/demo/data/small-4m | cut -d' ' -f1)
[ "\$got" = $SMALL_SUM ] && echo "sha256 matches the host: \$got" || echo "MISMATCH: \$got"
say "guest: umount, stop the daemon"
umount /mnt/demo
kill -TERM \$DAEMON
wait \$DAEMON
say "the daemon's log: every OPEN, READ (debug level) and CLOSE"
sed 's/^\[[^ ]* /[/' /tmp/daemon.log
say "what was fetched on demand, and why"
# The daemon's exit line: opens=.. reads=.. bytes_written=.. requested_bytes=.. fetched_bytes=..
counter() { sed -n "s/.* \$1=\([0-9]*\).*/\\1/p" /tmp/daemon.log | tail -1; }
requested=\$(counter requested_bytes)
fetched=\$(counter fetched_bytes)
ahead=\$(counter ahead_bytes)
prefetched=\$(counter prefetched_bytes)
written=\$(counter bytes_written)
# The READ lines above: "filling A..B" is the window the daemon filled for that READ.
windows=\$(sed -n 's/.*: filling \([0-9]*\)\.\.\([0-9]*\).*/\\1 \\2/p' /tmp/daemon.log |
    awk '{ s += \$2 - \$1 } END { print s + 0 }')
echo "the kernel's READ requests asked for        \$requested bytes"
echo "the daemon filled READ windows (logged)      \$windows bytes (each request rounded up to the readahead window)"
echo "  plus ahead of the sequential reader        \$ahead bytes (not logged per fill; counted in fetched)"
echo "  = fetched for READs                        \$fetched bytes (\$((windows + ahead)) from the two lines above)"
echo "prefetched in the background                 \$prefetched bytes"
echo "written into the cache files                 \$written bytes (fetched + prefetched, zero padding to 4 KiB included)"
blob=\$(stat -c %s /data/blobs/demo-blob)
boot=\$(stat -c %s /data/blobs/demo)
echo
echo "per object, as allocated in the cache (du):"
for f in \$(find /data/cache/cache -type f); do
    kib=\$(du -k "\$f" | cut -f1)
    case \$f in
    *demo-blob*) echo "  blob demo-blob:  \$kib KiB of the blob's \$((blob / 1024)) KiB (\$((kib * 1024 * 100 / blob))%)" ;;
    *demo*) echo "  bootstrap demo:  \$kib KiB of \$((boot / 1024)) KiB (metadata: read once at mount)" ;;
    esac
done
EOF
(cd "$WORK/initramfs" && find . | cpio --quiet -o -H newc) >"$WORK/initrd.cpio"
# The disk's root gets blobs/ (mkfs.ext4 -d copies a directory's contents).
mkdir -p "$WORK/disk-root"
cp -r "$WORK/blobs" "$WORK/disk-root/"
truncate -s 128M "$WORK/disk.ext4"
mkfs.ext4 -q -F -d "$WORK/disk-root" "$WORK/disk.ext4"

say "booting Linux 6.12 under qemu (software emulation; a few seconds)"
timeout 300 qemu-system-x86_64 -m 512 -smp 2,sockets=2 -nographic -no-reboot -monitor none \
    -serial stdio -serial null \
    -kernel "$KERNEL" -initrd "$WORK/initrd.cpio" \
    -drive file="$WORK/disk.ext4",format=raw,if=virtio \
    -append "console=ttyS0 panic=-1 quiet clocksource=tsc tsc=reliable" </dev/null |
    tr -d '\r' | sed -n 's/.*\(VMTEST BEGIN\)/\1/; /VMTEST BEGIN/,/VMTEST END/p' | grep -v '^VMTEST'
say "done (work files in $WORK)"
