#!/usr/bin/env bash
# Build the small real images the fuzz targets start from, with mkfs.erofs and nydus-image,
# into tests/data/seeds/ (committed; each < 64 KiB), then cut the per-target seed corpora
# (fuzz/corpus/<target>/) out of them with `cargo run --example make_corpus`.
#
# Usage: fuzz/make-seeds.sh            (tools from $PATH or ../shared/tools/bin)
#        SEEDS_OUT=DIR CORPUS_OUT=DIR fuzz/make-seeds.sh   (somewhere else, e.g. to compare)
#
# Seeds are added to the corpus directories (existing files are kept); run
# `cargo +nightly fuzz cmin TARGET` afterwards to drop the redundant ones.
#
# Re-running rewrites the images with fixed timestamps/UUIDs, so the output only changes
# when the tools or the trees below change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$(cd "$ROOT/../shared/tools/bin" 2>/dev/null && pwd || true)
export PATH="$PATH:$TOOLS"
OUT=${SEEDS_OUT:-$ROOT/tests/data/seeds}
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# A tree with one of everything the reader handles: nested directories, an empty file, an
# inline tail, a multi-block file, a hard link, symlinks (short, long, dangling), a FIFO,
# xattrs (short prefixes, a long prefix, shared), and a directory big enough for 2 blocks
# of dirents with 512-byte blocks.
tree() {
  local t=$1
  mkdir -p "$t/dir/sub/deeper" "$t/many" "$t/empty-dir"
  printf 'hello, erofs\n' >"$t/hello.txt"
  : >"$t/empty"
  head -c 9000 /dev/zero | tr '\0' 'a' >"$t/dir/tail"
  for i in $(seq 0 2999); do printf '%08d\n' "$i"; done >"$t/dir/sub/blocks"
  ln "$t/hello.txt" "$t/dir/hardlink"
  ln -s hello.txt "$t/link"
  ln -s ../../hello.txt "$t/dir/sub/up"
  ln -s "$(head -c 300 /dev/zero | tr '\0' 'x')" "$t/long-link"
  ln -s nowhere "$t/dangling"
  ln -s loop-b "$t/loop-a"
  ln -s loop-a "$t/loop-b"
  mkfifo "$t/fifo"
  for i in $(seq 1 40); do : >"$t/many/file-with-a-longish-name-$i"; done
  if command -v setfattr >/dev/null; then
    setfattr -n user.a -v 1 "$t/hello.txt"
    setfattr -n user.erofs-rs.long-prefix.x -v long "$t/hello.txt"
    setfattr -n trusted.shared -v same "$t/hello.txt"
    setfattr -n trusted.shared -v same "$t/dir/tail"
    setfattr -n user.dir -v "$(head -c 200 /dev/zero | tr '\0' 'v')" "$t/dir"
  fi
  touch -h -d @1700000000 "$t" "$t"/* "$t"/*/* "$t"/*/*/* 2>/dev/null || true
}

SRC=$TMP/tree
mkdir "$SRC"
tree "$SRC"
COMMON=(-T 1700000000 -U 6b7c6d6e-0000-4000-8000-000000000001 --all-root --quiet)

mkfs.erofs "${COMMON[@]}" -x 1 --xattr-prefix=user.erofs-rs.long-prefix. \
  "$OUT/plain.erofs" "$SRC"
mkfs.erofs "${COMMON[@]}" -b 512 "$OUT/plain-512.erofs" "$SRC"
mkfs.erofs "${COMMON[@]}" --chunksize=4096 --blobdev="$OUT/chunked.blob" \
  "$OUT/chunked.erofs" "$SRC"
mkfs.erofs "${COMMON[@]}" -zlz4hc -Eztailpacking "$OUT/lz4.erofs" "$SRC"
mkfs.erofs "${COMMON[@]}" -zlz4 -C16384 -Efragments,dedupe "$OUT/lz4-frag.erofs" "$SRC"
mkfs.erofs "${COMMON[@]}" -zlzma -C65536 "$OUT/lzma.erofs" "$SRC" 2>/dev/null ||
  rm -f "$OUT/lzma.erofs"

# Nydus RAFS v6: the bootstrap is an EROFS image with the RAFS extended superblock,
# a blob table and chunk-based inodes whose data is in the (separate) data blob.
rm -rf "$TMP/nydus"
mkdir -p "$TMP/nydus/blobs"
nydus-image create -t dir-rafs -v 6 --repeatable --compressor lz4_block \
  -B "$TMP/nydus/boot" -D "$TMP/nydus/blobs" -l warn "$SRC" >/dev/null
cp "$TMP/nydus/boot" "$OUT/rafs.boot"
blob=$(ls "$TMP/nydus/blobs" | head -1)
# The blob ends with the blob meta (chunk info array, compression context header).
tail -c 8192 "$TMP/nydus/blobs/$blob" >"$OUT/rafs-blob-tail.bin"

# Whole Nydus blobs for the rafs_blob target, one directory per kind under nydus/: the
# bootstrap (boot), the data blob and, for targz-ref, the separate blob meta, each named as
# nydus-image names them. targz-ref keeps the layer's .tar.gz as the data blob (named by its
# sha256) and adds ZRan inflate contexts to the blob meta.
for kind in none lz4_block zstd targz-ref; do
  d=$TMP/nb-$kind
  rm -rf "$d" "$OUT/nydus/$kind"
  mkdir -p "$d/blobs" "$OUT/nydus/$kind"
  if [ "$kind" = targz-ref ]; then
    # (without the FIFO: nydus-image 2.2 cannot read its tar header)
    tar -C "$SRC" --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
      --exclude=./fifo -cf "$d/layer.tar" .
    gzip -n -9 "$d/layer.tar"
    nydus-image create -t targz-ref -v 6 --repeatable -B "$d/boot" -D "$d/blobs" -l warn \
      "$d/layer.tar.gz" >/dev/null
    cp "$d/layer.tar.gz" "$d/blobs/$(sha256sum "$d/layer.tar.gz" | cut -d' ' -f1)"
  else
    nydus-image create -t dir-rafs -v 6 --repeatable --compressor "$kind" -B "$d/boot" \
      -D "$d/blobs" -l warn "$SRC" >/dev/null
  fi
  cp "$d/boot" "$d/blobs"/* "$OUT/nydus/$kind/"
done

for f in $(find "$OUT" -type f); do
  size=$(stat -c %s "$f")
  if [ "$size" -ge 65536 ]; then
    echo "$f is $size bytes (seeds must stay under 64 KiB)" >&2
    exit 1
  fi
done
ls -l "$OUT"

cargo run --quiet --manifest-path "$ROOT/fuzz/Cargo.toml" --no-default-features \
  --example make_corpus -- "$OUT" "${CORPUS_OUT:-$ROOT/fuzz/corpus}"
