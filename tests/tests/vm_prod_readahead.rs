//! Asynchronous readahead (`serve --async-readahead`) in the 6.12 VM: a cold sequential read of
//! a 32 MiB chunk-based file through the daemon, with the default synchronous readahead (the
//! READ completes once its whole 1 MiB window is written) and with the asynchronous one (the
//! READ completes once its requested part is written; the window follows in 256 KiB chunks,
//! and READs for it wait for those chunks instead of fetching again). Both read back right and
//! fetch every byte once; the upcall counts and speeds against a file-backed mount of the same
//! image are printed (also for the asynchronous mode with a 4 MiB window).

mod vm_prod_common;

use std::time::{Duration, Instant};

use tests::vm::{Kernel, VmRun, noise};
use tests::{require_tool, scratch_dir};
use vm_prod_common::{PRELUDE, chunked, daemon, sha256};

const SCRIPT: &str = r#"
mkdir -p /data/cache /mnt/fb
S=$(cat /vmtest/big.sha256)
# cold NAME FSID: mount FSID (a volume the cache has not seen), read big once, check it.
cold() {
    od_mount $2 /mnt/$2
    ls /mnt/$2 >/dev/null
    drop_caches
    _out=$(vmtool read /mnt/$2/big)
    data "$1_ns" "${_out##*ns=}"
    check "$1-sum" sh -c "sha256sum /mnt/$2/big | grep -q $S"
}
check mount-file-backed vmtool mount erofs $B/big /mnt/fb device=$B/bigblob
i=0
for mode in sync async async4m; do
    _args=
    [ $mode = async ] && _args=--async-readahead
    [ $mode = async4m ] && _args="--async-readahead --readahead 4M"
    start_daemon /tmp/$mode.log $mode --cache-dir /data/cache --metrics $M $_args || exit 1
    for round in 1 2; do
        i=$((i + 1))
        cold ${mode}_$round big$i
        drop_caches
        _out=$(vmtool read /mnt/fb/big)
        data "fb_${mode}_${round}_ns" "${_out##*ns=}"
    done
    sleep 1.2
    data ${mode}_reads "$(metric erofs_ondemand_read_requests_total)"
    data ${mode}_fetched "$(metric erofs_ondemand_fetched_bytes_total)"
    data ${mode}_errors "$(metric erofs_ondemand_errors_total)"
    umount /mnt/big$((i - 1)) /mnt/big$i
    stop_daemon daemon-exit-$mode
done
umount /mnt/fb
"#;

#[test]
fn async_readahead_reads_right_and_fetches_once() {
    let Some(mkfs_erofs) = require_tool("mkfs.erofs") else {
        return;
    };
    let daemon = daemon();
    let dir = scratch_dir("vm_prod/readahead");
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let len: u64 = 32 << 20;
    std::fs::write(tree.join("big"), noise(601, len as usize)).expect("write");
    let sum = sha256(&tree.join("big"));
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    chunked(&mkfs_erofs, &blobs, &tree, "big", "bigblob", 1 << 20);
    std::fs::remove_dir_all(&tree).expect("remove tree");
    for i in 1..=6 {
        std::fs::copy(blobs.join("big"), blobs.join(format!("big{i}"))).expect("copy");
    }
    let start = Instant::now();
    let Some(out) = VmRun::new("prod-readahead")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .disk_size(512 << 20)
        .bytes("vmtest/big.sha256", sum.as_bytes(), 0o644)
        .script(&format!("{PRELUDE}{SCRIPT}"))
        .timeout(Duration::from_secs(180))
        .run()
    else {
        return;
    };
    out.assert_passed(&[
        "mount-file-backed",
        "daemon-sync",
        "sync_1-sum",
        "sync_2-sum",
        "daemon-exit-sync",
        "daemon-async",
        "async_1-sum",
        "async_2-sum",
        "daemon-exit-async",
        "daemon-async4m",
        "async4m_1-sum",
        "async4m_2-sum",
        "daemon-exit-async4m",
    ]);
    let v = |k: &str| out.data_u64(k);
    let report = out.report();
    let blob_len = std::fs::metadata(blobs.join("bigblob"))
        .expect("stat")
        .len();
    for mode in ["sync", "async", "async4m"] {
        assert_eq!(v(&format!("{mode}_errors")), 0, "{report}");
        // Two cold reads: every byte of the blob fetched once per read (plus the bootstrap).
        let fetched = v(&format!("{mode}_fetched"));
        assert!(
            fetched >= 2 * len && fetched <= 2 * (blob_len + (1 << 20)),
            "{mode}: fetched {fetched}\n{report}"
        );
    }
    let mib_s = |ns: u64| (len >> 20) as f64 / (ns as f64 / 1e9);
    let best = |k: &str| v(&format!("{k}_1_ns")).min(v(&format!("{k}_2_ns")));
    let fb = best("fb_sync")
        .min(best("fb_async"))
        .min(best("fb_async4m"));
    println!(
        "vm_prod_readahead: VM {:.1?} ({}), whole test {:.1?}; 32 MiB cold, best of 2:\n  file-backed {:.0} MiB/s\n  sync readahead 1M: {:.0} MiB/s ({:.2}x), {} READs for 2 reads\n  async readahead 1M: {:.0} MiB/s ({:.2}x), {} READs for 2 reads\n  async readahead 4M: {:.0} MiB/s ({:.2}x), {} READs for 2 reads",
        out.elapsed,
        out.accel,
        start.elapsed(),
        mib_s(fb),
        mib_s(best("sync")),
        fb as f64 / best("sync") as f64,
        v("sync_reads"),
        mib_s(best("async")),
        fb as f64 / best("async") as f64,
        v("async_reads"),
        mib_s(best("async4m")),
        fb as f64 / best("async4m") as f64,
        v("async4m_reads"),
    );
}
