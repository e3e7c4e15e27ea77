//! Background prefetch in the 6.12 VM:
//!
//! 1. `serve --prefetch`: once the prefetch of the mount's objects is done, reading every file
//!    (page cache dropped) causes no READ upcall and fetches nothing (from the metrics file).
//! 2. Restart: a new daemon with `--prefetch` on the same cache finds the blob present in the
//!    cache file (`SEEK_DATA`/`SEEK_HOLE` through the object's fd) and fetches nothing again.
//! 3. `--prefetch-path FSID:PATH` (ranges from the image's chunk map, through erofs-reader),
//!    on a fresh volume: the listed file then reads with no upcall, another file still needs
//!    READs.

mod vm_prod_common;

use std::time::{Duration, Instant};

use tests::vm::{Kernel, VmRun, noise};
use tests::{require_tool, scratch_dir};
use vm_prod_common::{PRELUDE, chunked, daemon, sha256};

const SCRIPT: &str = r#"
mkdir -p /data/cache
# prefetch_done LOG KEY: the prefetch of object KEY (volume/cookie) has finished.
prefetch_done() { grep -q "prefetch: object [0-9]* ($2) done" "$1"; }
# snapshot NAME: record the READ count and on-demand fetched bytes as DATA NAME_reads/_fetched
# once the metrics file is at least 1 s newer than now.
snapshot() {
    sleep 1.2
    data "$1_reads" "$(metric erofs_ondemand_read_requests_total)"
    data "$1_fetched" "$(metric erofs_ondemand_fetched_bytes_total)"
    data "$1_prefetched" "$(metric erofs_ondemand_prefetched_bytes_total)"
    data "$1_skipped" "$(metric erofs_ondemand_prefetch_skipped_bytes_total)"
    data "$1_errors" "$(metric erofs_ondemand_errors_total)"
}
verify() {
    for f in $2; do
        check "$1-$f" sh -c "sha256sum /mnt/$1/$f | grep -q $(cat /vmtest/$f.sha256)"
    done
}

# 1. Whole objects.
start_daemon /tmp/p1.log pf1 --cache-dir /data/cache --prefetch --metrics $M || exit 1
od_mount img /mnt/img
# The blob's OPEN comes with the first read of file data.
verify img small
check prefetch-1-boot wait_for 60 prefetch_done /tmp/p1.log erofs,img/img
check prefetch-1-blob wait_for 60 prefetch_done /tmp/p1.log erofs,img/imgblob
check progress-line wait_for 5 grep -q "prefetch: fetched .* MiB, already present .* MiB, pending" /tmp/p1.log
snapshot p1_before
drop_caches
verify img "big1 big2 small"
snapshot p1_after
umount /mnt/img
stop_daemon daemon-exit-1
grep "prefetch: object" /tmp/p1.log

# 2. Restart on the same cache: everything is present already.
start_daemon /tmp/p2.log pf2 --cache-dir /data/cache --prefetch --metrics $M || exit 1
od_mount img /mnt/img
verify img small
check prefetch-2-blob wait_for 60 prefetch_done /tmp/p2.log erofs,img/imgblob
snapshot p2
drop_caches
verify img "big1 big2"
snapshot p2_after
umount /mnt/img
stop_daemon daemon-exit-2
grep "prefetch: object" /tmp/p2.log

# 3. Listed paths only, on a fresh volume (fsid img3: a copy of the bootstrap).
start_daemon /tmp/p3.log pf3 --cache-dir /data/cache --prefetch-path img3:/big1 --metrics $M || exit 1
od_mount img3 /mnt/img3
verify img3 small
check prefetch-3-blob wait_for 60 prefetch_done /tmp/p3.log erofs,img3/imgblob
snapshot p3_before
drop_caches
verify img3 big1
snapshot p3_big1
verify img3 big2
snapshot p3_big2
umount /mnt/img3
stop_daemon daemon-exit-3
"#;

/// The plan for a list of paths, from mkfs.erofs's own image on the host: every byte of the
/// listed files, and nothing else, by the cookie key the kernel will use.
#[test]
fn plan_covers_exactly_the_listed_files() {
    let Some(mkfs_erofs) = require_tool("mkfs.erofs") else {
        return;
    };
    let dir = scratch_dir("vm_prod/plan");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
    std::fs::write(tree.join("a"), noise(501, 3 << 20)).expect("write");
    std::fs::write(tree.join("sub/b"), noise(503, 100_000)).expect("write");
    std::fs::write(tree.join("sub/deeper/c"), noise(505, 5000)).expect("write");
    std::fs::write(tree.join("d"), noise(507, 2 << 20)).expect("write");
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    chunked(&mkfs_erofs, &blobs, &tree, "img", "imgblob", 65_536);
    let image = ondemand::plan::open_image(&blobs, "img").expect("open image");
    // A file and a directory (walked): the bytes of a, b and c (PrefetchConfig widens them to
    // blocks); not d.
    let plan = ondemand::plan::ranges_for_paths(&image, b"img", &[], ["/a", "/sub"]).expect("plan");
    assert_eq!(plan.keys().collect::<Vec<_>>(), [&b"imgblob".to_vec()]);
    let blob = &plan[&b"imgblob".to_vec()];
    assert_eq!(blob.len(), (3 << 20) + 100_000 + 5000, "{blob:?}");
    // The ranges hold exactly those files' bytes.
    let bytes = std::fs::read(blobs.join("imgblob")).expect("read blob");
    let mut got = Vec::new();
    for r in blob.ranges() {
        got.extend_from_slice(&bytes[r.start as usize..(r.end as usize).min(bytes.len())]);
    }
    let mut want = Vec::new();
    for (f, len) in [("a", 3 << 20), ("sub/b", 100_000), ("sub/deeper/c", 5000)] {
        let data = std::fs::read(tree.join(f)).expect("read");
        assert_eq!(data.len(), len);
        want.push(data);
    }
    for w in &want {
        assert!(
            got.windows(w.len().min(4096))
                .any(|win| win == &w[..w.len().min(4096)]),
            "a file's first block is in the planned ranges"
        );
    }
    // device= names replace the tag as the cookie key.
    let plan = ondemand::plan::ranges_for_paths(&image, b"img", &[b"other".to_vec()], ["/d"])
        .expect("plan");
    assert_eq!(plan[&b"other".to_vec()].len(), 2 << 20);
    assert!(ondemand::plan::ranges_for_paths(&image, b"img", &[], ["/missing"]).is_err());
}

#[test]
fn prefetched_ranges_need_no_upcall() {
    let Some(mkfs_erofs) = require_tool("mkfs.erofs") else {
        return;
    };
    let daemon = daemon();
    let dir = scratch_dir("vm_prod/prefetch");
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let mut sums = Vec::new();
    for (i, (name, len)) in [("big1", 16 << 20), ("big2", 8 << 20), ("small", 10_000)]
        .into_iter()
        .enumerate()
    {
        std::fs::write(tree.join(name), noise(201 + 2 * i as u64, len)).expect("write");
        sums.push((name, sha256(&tree.join(name))));
    }
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    chunked(&mkfs_erofs, &blobs, &tree, "img", "imgblob", 1 << 20);
    std::fs::copy(blobs.join("img"), blobs.join("img3")).expect("copy bootstrap");
    let blob_len = std::fs::metadata(blobs.join("imgblob"))
        .expect("stat")
        .len();

    let start = Instant::now();
    let mut vm = VmRun::new("prod-prefetch")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .script(&format!("{PRELUDE}{SCRIPT}"))
        .timeout(Duration::from_secs(180));
    for (name, sum) in &sums {
        vm = vm.bytes(&format!("vmtest/{name}.sha256"), sum.as_bytes(), 0o644);
    }
    let Some(out) = vm.run() else {
        return;
    };
    out.assert_passed(&[
        "daemon-pf1",
        "mount-img",
        "img-small",
        "prefetch-1-boot",
        "prefetch-1-blob",
        "progress-line",
        "img-big1",
        "img-big2",
        "daemon-exit-1",
        "daemon-pf2",
        "prefetch-2-blob",
        "daemon-exit-2",
        "daemon-pf3",
        "mount-img3",
        "img3-small",
        "prefetch-3-blob",
        "img3-big1",
        "img3-big2",
        "daemon-exit-3",
    ]);
    let v = |k: &str| out.data_u64(k);
    let report = out.report();
    // 1. After the prefetch, reading every file makes no upcall and fetches nothing.
    assert_eq!(v("p1_after_reads"), v("p1_before_reads"), "{report}");
    assert_eq!(v("p1_after_fetched"), v("p1_before_fetched"), "{report}");
    assert!(
        v("p1_before_prefetched") + v("p1_before_fetched") >= blob_len,
        "{report}"
    );
    assert_eq!(v("p1_after_errors"), 0, "{report}");
    // 2. The restarted daemon found the blob in the cache file and fetched nothing.
    assert_eq!(v("p2_prefetched"), 0, "{report}");
    assert!(v("p2_skipped") >= blob_len - (1 << 20), "{report}");
    assert_eq!(v("p2_after_reads"), v("p2_reads"), "{report}");
    // 3. Listed paths: big1 needs no upcall, big2 does.
    // The first read's readahead may have fetched the start of big1 already.
    assert!(v("p3_before_prefetched") >= 15 << 20, "{report}");
    assert!(
        v("p3_before_prefetched") < blob_len,
        "only the listed file: {report}"
    );
    assert_eq!(v("p3_big1_reads"), v("p3_before_reads"), "{report}");
    assert!(v("p3_big2_reads") > v("p3_big1_reads"), "{report}");
    println!(
        "vm_prod_prefetch: {} checks, VM {:.1?} ({}), whole test {:.1?}\n  whole objects: prefetched {} bytes (blob {blob_len}); READs while reading all files afterwards: {}\n  restart: prefetched {} bytes, found present {} bytes\n  --prefetch-path img3:/big1: prefetched {} bytes; READs for big1: {}, for big2: {}",
        out.passed.len(),
        out.elapsed,
        out.accel,
        start.elapsed(),
        v("p1_before_prefetched"),
        v("p1_after_reads") - v("p1_before_reads"),
        v("p2_prefetched"),
        v("p2_skipped"),
        v("p3_before_prefetched"),
        v("p3_big1_reads") - v("p3_before_reads"),
        v("p3_big2_reads") - v("p3_big1_reads"),
    );
}
