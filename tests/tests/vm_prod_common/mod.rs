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
pub const PRELUDE: &str = concat!(
    tests::daemon_prelude!(),
    r#"M=/tmp/metrics.prom
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
"#
);
