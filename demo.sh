#!/usr/bin/env bash
# Lazy image pulling from an OCI registry, end to end, in one command:
#
#   1. build `erofs-ondemand` (static, for the VM);
#   2. make a two-layer image of containerd's native kind (`application/vnd.erofs.layer.v1`:
#      each layer `mkfs.erofs --tar=f --aufs` of a layer tar; the upper one deletes a file with
#      a whiteout and adds one), write it as an OCI layout, start Debian's docker-registry on
#      127.0.0.1 and push the image there with skopeo;
#   3. boot the Linux 6.12 test kernel (../shared/vm) under qemu with the same registry binary
#      serving that storage on the guest's loopback, run
#      `erofs-ondemand serve --image 127.0.0.1:5000/demo:latest --mountpoint /mnt/demo` (EROFS
#      over fscache: each layer an object fetched by byte ranges, the rootfs their overlay),
#      and read part of the image;
#   4. print the requests and bytes the registry served (its access log) against the image's
#      size.
#
# Needs: cargo, qemu-system-x86_64, a static busybox (Debian: busybox-static), cpio,
# mkfs.ext4, tar, docker-registry, skopeo, and mkfs.erofs (../shared/tools/bin). Nothing is
# mounted on the host. Work files go to $DEMO_DIR (default: target/demo).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")" && pwd)
if [ -f "$ROOT/scripts/env.sh" ]; then
    # Installs the missing Debian packages and finds the test environment.
    . "$ROOT/scripts/env.sh"
    erofs_setup
    SHARED=$EROFS_SHARED_DIR
else
    SHARED=${EROFS_SHARED_DIR:-$ROOT/../shared}
    SHARED=$(cd "$SHARED" && pwd)
    export PATH="$SHARED/tools/bin:$PATH:/usr/sbin:/sbin"
fi
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

for tool in cargo qemu-system-x86_64 cpio mkfs.ext4 mkfs.erofs tar docker-registry skopeo sha256sum; do
    command -v "$tool" >/dev/null || die "needs $tool (see the comment at the top)"
done
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "needs a static busybox at $BUSYBOX (apt-get install busybox-static)"
[ -f "$KERNEL" ] || die "no test kernel at $KERNEL"
REGISTRY_BIN=$(command -v docker-registry)
LDSO=/lib64/ld-linux-x86-64.so.2
LIBC=/lib/x86_64-linux-gnu/libc.so.6
[ -e $LDSO ] && [ -e $LIBC ] || die "needs $LDSO and $LIBC for the guest's docker-registry"
case "$WORK" in /*/*) ;; *) die "DEMO_DIR must be an absolute path below /: $WORK" ;; esac

say "building erofs-ondemand (static, for the VM)"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$STATIC_TARGET \
    CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo build --quiet --release --target $TRIPLE --manifest-path "$ROOT/Cargo.toml" \
    -p ondemand --features cli --bin erofs-ondemand
DAEMON=$STATIC_TARGET/$TRIPLE/release/erofs-ondemand

say "a two-layer image of EROFS layers (mkfs.erofs --tar=f --aufs), as an OCI layout"
rm -rf "$WORK"
L=$WORK/layout
mkdir -p "$WORK/lower/docs" "$WORK/lower/data" "$WORK/upper/data" "$L/blobs/sha256"
echo "hello from a lazily pulled image" >"$WORK/lower/hello.txt"
for i in 1 2 3; do
    seq 1 2000 | sed "s/^/doc $i line /" >"$WORK/lower/docs/doc$i.txt"
done
head -c $((4 << 20)) /dev/urandom >"$WORK/lower/data/small-4m"
head -c $((16 << 20)) /dev/urandom >"$WORK/lower/data/large-16m"
echo "deleted by the upper layer" >"$WORK/lower/data/old.txt"
: >"$WORK/upper/data/.wh.old.txt"
echo "added by the upper layer" >"$WORK/upper/new.txt"
# blob FILE MEDIA_TYPE: put FILE into the layout, print its descriptor.
blob() {
    local d
    d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$L/blobs/sha256/$d"
    printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$d" "$(stat -c %s "$1")"
}
layers=()
diff_ids=()
for l in lower upper; do
    tar --numeric-owner --owner=0 --group=0 -C "$WORK/$l" -cf "$WORK/$l.tar" .
    mkfs.erofs --quiet --tar=f --aufs "$WORK/$l.erofs" "$WORK/$l.tar"
    layers+=("$(blob "$WORK/$l.erofs" application/vnd.erofs.layer.v1)")
    diff_ids+=("\"sha256:$(sha256sum "$WORK/$l.erofs" | cut -d' ' -f1)\"")
done
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$(IFS=,; echo "${diff_ids[*]}")" >"$WORK/config.json"
config=$(blob "$WORK/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$config" "$(IFS=,; echo "${layers[*]}")" >"$WORK/manifest.json"
manifest=$(blob "$WORK/manifest.json" application/vnd.oci.image.manifest.v1+json)
printf '{"schemaVersion":2,"manifests":[%s,"annotations":{"org.opencontainers.image.ref.name":"demo"}}]}' \
    "${manifest%\}}" >"$L/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
IMAGE_SIZE=$(($(stat -c %s "$WORK/lower.erofs") + $(stat -c %s "$WORK/upper.erofs")))
ls -l "$WORK"/*.erofs
SMALL_SUM=$(sha256sum "$WORK/lower/data/small-4m" | cut -d' ' -f1)
HEAD_SUM=$(head -c 100000 "$WORK/lower/data/large-16m" | sha256sum | cut -d' ' -f1)

say "docker-registry on 127.0.0.1, the image pushed there by skopeo"
PORT=$((20000 + RANDOM % 20000))
{
    echo "version: 0.1"
    echo "log: { level: warn, accesslog: { disabled: false } }"
    echo "storage: { filesystem: { rootdirectory: $WORK/registry }, maintenance: { uploadpurging: { enabled: false } } }"
    echo "http: { addr: 127.0.0.1:$PORT, secret: erofs-rs-demo }"
} >"$WORK/registry.yml"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
trap 'kill $REGISTRY_PID 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    "$BUSYBOX" wget -q -O /dev/null "http://127.0.0.1:$PORT/v2/" 2>/dev/null && break
    sleep 0.1
done
mkdir -p "$WORK/skopeo/tmp"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$WORK/skopeo/policy.json"
TMPDIR=$WORK/skopeo/tmp skopeo --policy "$WORK/skopeo/policy.json" copy --quiet \
    --dest-tls-verify=false "oci:$L:demo" "docker://127.0.0.1:$PORT/demo:latest"
echo "pushed 127.0.0.1:$PORT/demo:latest ($IMAGE_SIZE bytes of layers)"
kill $REGISTRY_PID
wait $REGISTRY_PID 2>/dev/null || true
trap - EXIT

say "the guest: busybox, erofs-ondemand and docker-registry in an initramfs; the registry's storage on an ext4 disk"
I=$WORK/initramfs
mkdir -p "$I/bin" "$I/vmtest" "$I/etc" "$I/lib64" "$I/lib/x86_64-linux-gnu"
cp "$BUSYBOX" "$I/bin/busybox"
ln -s busybox "$I/bin/sh"
cp "$DAEMON" "$I/bin/erofs-ondemand"
cp "$REGISTRY_BIN" "$I/bin/docker-registry"
cp -L $LDSO "$I/lib64/"
cp -L $LIBC "$I/lib/x86_64-linux-gnu/"
sed "s|$WORK/registry|/data/registry|; s|127.0.0.1:$PORT|127.0.0.1:5000|" \
    "$WORK/registry.yml" >"$I/etc/registry.yml"
install -m 755 "$ROOT/tests/vm/init.sh" "$I/init"
# The guest script: a template with @IMAGE_SIZE@, @HEAD_SUM@, @SMALL_SUM@ filled in.
sed "s/@IMAGE_SIZE@/$IMAGE_SIZE/g; s/@HEAD_SUM@/$HEAD_SUM/g; s/@SMALL_SUM@/$SMALL_SUM/g" \
    >"$I/vmtest/test.sh" <<'GUEST'
say() { echo; echo "-- $*"; }
# mark: access-log lines so far; served N: requests and body bytes after line N.
mark() { grep -c 'HTTP/1.1"' /tmp/registry.log; }
served() {
    grep 'HTTP/1.1"' /tmp/registry.log | awk -v n="$1" -v size=@IMAGE_SIZE@ '
        NR > n { r++; if ($10 ~ /^[0-9]+$/) b += $10 }
        END { printf "%d requests, %d bytes (%.2f%% of the image'"'"'s %d bytes)\n", r, b, b * 100 / size, size }'
}
ip link set lo up
say "guest: docker-registry serve (127.0.0.1:5000, the storage skopeo pushed on the host)"
docker-registry serve /etc/registry.yml >/tmp/registry.log 2>&1 &
while ! wget -q -O /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; do sleep 0.1; done
m0=$(mark)
mkdir -p /data/cache /mnt/demo
say "guest: erofs-ondemand serve --cache-dir /data/cache --image 127.0.0.1:5000/demo:latest --mountpoint /mnt/demo"
erofs-ondemand serve --cache-dir /data/cache --image 127.0.0.1:5000/demo:latest \
    --mountpoint /mnt/demo --metrics /tmp/metrics.prom >/tmp/daemon.log 2>&1 &
DAEMON=$!
while ! grep -q " /mnt/demo " /proc/mounts; do
    kill -0 $DAEMON 2>/dev/null || { cat /tmp/daemon.log; exit 1; }
    sleep 0.05
done
grep " /mnt/demo \| /data/cache/layers" /proc/mounts
echo "registry so far (manifest, each layer's superblock and root): $(served $m0)"
ls -lR /mnt/demo
say "guest: cat /mnt/demo/hello.txt /mnt/demo/new.txt (data/old.txt is whited out by the upper layer)"
m1=$(mark)
cat /mnt/demo/hello.txt /mnt/demo/new.txt
if [ -e /mnt/demo/data/old.txt ]; then echo "MISMATCH: data/old.txt is visible"; else echo "data/old.txt: gone, as the upper layer says"; fi
echo "registry for these reads: $(served $m1)"
say "guest: read the first 100000 bytes of the 16 MiB file"
m1=$(mark)
got=$(head -c 100000 /mnt/demo/data/large-16m | sha256sum | cut -d' ' -f1)
if [ "$got" = @HEAD_SUM@ ]; then echo "sha256 matches the host: $got"; else echo "MISMATCH: $got"; fi
echo "registry for this read: $(served $m1)"
say "guest: read the whole 4 MiB file"
m1=$(mark)
got=$(sha256sum /mnt/demo/data/small-4m | cut -d' ' -f1)
if [ "$got" = @SMALL_SUM@ ]; then echo "sha256 matches the host: $got"; else echo "MISMATCH: $got"; fi
echo "registry for this read: $(served $m1)"
say "guest: SIGTERM: the daemon unmounts the overlay and the layers, then stops"
kill -TERM $DAEMON
wait $DAEMON
grep '^erofs-ondemand: ' /tmp/daemon.log
if grep -q " /mnt/demo " /proc/mounts; then echo "MISMATCH: still mounted"; else echo "unmounted"; fi
say "the daemon's registry counters (--metrics)"
grep '^erofs_ondemand_registry_' /tmp/metrics.prom
say "in all, counted at the registry: $(served $m0)"
GUEST
(cd "$I" && find . | cpio --quiet -o -H newc) >"$WORK/initrd.cpio"
# The disk's root gets registry/ (mkfs.ext4 -d copies a directory's contents).
mkdir -p "$WORK/disk-root"
cp -r "$WORK/registry" "$WORK/disk-root/"
truncate -s 256M "$WORK/disk.ext4"
mkfs.ext4 -q -F -d "$WORK/disk-root" "$WORK/disk.ext4"

say "booting Linux 6.12 under qemu (software emulation; a few seconds)"
timeout 600 qemu-system-x86_64 -m 512 -smp 2,sockets=2 -nographic -no-reboot -monitor none \
    -serial stdio -serial null \
    -kernel "$KERNEL" -initrd "$WORK/initrd.cpio" \
    -drive file="$WORK/disk.ext4",format=raw,if=virtio \
    -append "console=ttyS0 panic=-1 quiet clocksource=tsc tsc=reliable" </dev/null |
    tr -d '\r' | sed -n 's/.*\(VMTEST BEGIN\)/\1/; /VMTEST BEGIN/,/VMTEST END/p' | grep -v '^VMTEST'
say "done (work files in $WORK)"
