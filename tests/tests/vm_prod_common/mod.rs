//! Shared by the `vm_prod_*` tests: the static daemon, images, and shell helpers for the guest.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::run;
use tests::vm::set_device_tag;

/// The daemon, built static for the guest.
pub fn daemon() -> PathBuf {
    tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"])
}

/// `mkfs.erofs -b4096 [ARGS] IMAGE TREE` (fscache mode needs page-sized blocks).
pub fn mkfs(mkfs: &Path, image: &Path, tree: &Path, args: &[String]) {
    run(Command::new(mkfs)
        .arg("-b4096")
        .args(args)
        .arg(image)
        .arg(tree));
}

/// A chunk-based image `blobs/BOOT` whose file data is in the blob `blobs/TAG`, with `TAG`
/// written into its device slot.
pub fn chunked(mkfs_erofs: &Path, blobs: &Path, tree: &Path, boot: &str, tag: &str, chunk: u32) {
    let image = blobs.join(boot);
    mkfs(
        mkfs_erofs,
        &image,
        tree,
        &[
            format!("--chunksize={chunk}"),
            format!("--blobdev={}", blobs.join(tag).display()),
        ],
    );
    set_device_tag(&image, 0, tag).expect("write the device tag");
}

/// The sha256 of a file, as hex.
pub fn sha256(path: &Path) -> String {
    let sum = tests::require_tool("sha256sum").expect("sha256sum");
    run(Command::new(sum).arg(path))
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// Shell helpers for the guest.
pub const PRELUDE: &str = r#"
B=/data/blobs
DPID=
DLOG=
M=/tmp/metrics.prom
# start_daemon LOG TAG ARGS...: start erofs-ondemand with cache tag TAG in the background and
# wait until /proc/fs/fscache/caches shows that cache active (bound).
start_daemon() {
    DLOG=$1
    _tag=$2
    shift 2
    erofs-ondemand serve --blob-dir $B --tag "$_tag" "$@" >"$DLOG" 2>&1 &
    DPID=$!
    _i=0
    while ! grep -q " A $_tag\$" /proc/fs/fscache/caches; do
        _i=$((_i + 1))
        if [ $_i -gt 400 ] || ! kill -0 $DPID 2>/dev/null; then
            fail "daemon-$_tag" "cache not bound after $_i polls: $(cat "$DLOG")"
            return 1
        fi
        sleep 0.05
    done
    pass "daemon-$_tag"
}
# stop_daemon NAME: SIGTERM, wait; NAME passes if the daemon exits 0.
stop_daemon() {
    kill -TERM $DPID
    wait $DPID
    _rc=$?
    if [ $_rc -eq 0 ]; then
        pass "$1"
    else
        fail "$1" "daemon exited with status $_rc: $(tail -5 "$DLOG")"
    fi
    echo "--- daemon log $DLOG"
    cat "$DLOG"
    echo "---"
}
# od_mount FSID DIR [OPTIONS]: an EROFS-over-fscache mount (check mount-FSID).
od_mount() {
    mkdir -p "$2"
    _opts="fsid=$1"
    [ -n "$3" ] && _opts="$_opts,$3"
    check "mount-$1" timeout -s KILL 60 mount -t erofs none -o "$_opts" "$2"
}
# metric NAME [FILE]: the value of an unlabelled metric in the metrics file.
metric() { sed -n "s/^$1 //p" "${2:-$M}"; }
# wait_for SECONDS CMD...: poll CMD every 50 ms until it succeeds; fail after SECONDS.
wait_for() {
    _n=$(($1 * 20))
    shift
    while ! "$@" >/dev/null 2>&1; do
        _n=$((_n - 1))
        [ $_n -le 0 ] && return 1
        sleep 0.05
    done
}
summary() { grep "^erofs-ondemand: opens=" "$1"; }
# field KEY LINE: the value of KEY=N in a summary line.
field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
"#;
