//! Shared domains in the 6.12 VM: two different images (`fsid=img1` and `fsid=img2`, their
//! own bootstraps with different metadata) whose file data is one blob, mounted with
//! `domain_id=dom`. Both read back right; the kernel opens the shared blob once (volume key
//! `erofs,dom`, cookie key the blob's tag), so the second image's data is served from the
//! cache the first one filled, with no READ for the blob; the blob's CLOSE comes only when the
//! last image using it is unmounted.

mod vm_prod_common;

use std::time::{Duration, Instant};

use tests::vm::{Kernel, VmRun, busybox, manifests, noise, set_device_tag};
use tests::{require_tool, scratch_dir};
use vm_prod_common::{PRELUDE, daemon, mkfs};

const SCRIPT: &str = r#"
mkdir -p /data/cache
RUST_LOG=debug start_daemon /tmp/d.log dm --cache-dir /data/cache || exit 1
# blob_reads: READs logged for the shared blob's object.
blob_reads() {
    _id=$(sed -n 's|.*OPEN object \([0-9]*\) (erofs,dom/shared).*|\1|p' "$DLOG" | tail -1)
    if [ -z "$_id" ]; then echo 0; else grep -c "READ msg [0-9]* object $_id " "$DLOG"; fi
}
od_mount img1 /mnt/img1 domain_id=dom
od_mount img2 /mnt/img2 domain_id=dom
check img1-sums sh -c "cd /mnt/img1 && sha256sum -c /vmtest/sums1"
data blob_reads_img1 "$(blob_reads)"
check img2-sums sh -c "cd /mnt/img2 && sha256sum -c /vmtest/sums2"
data blob_reads_total "$(blob_reads)"
check extra-only-in-img2 sh -c "test -d /mnt/img2/only-in-img2 && ! test -e /mnt/img1/only-in-img2"
data blob_opens "$(grep -c 'OPEN object [0-9]* (erofs,dom/shared)' "$DLOG")"
data boot_opens "$(grep -c -E 'OPEN object [0-9]+ \(erofs,dom/img[12]\)' "$DLOG")"
umount /mnt/img1
sleep 0.5
data blob_closes_after_1 "$(grep -c 'CLOSE object [0-9]* (erofs,dom/shared)' "$DLOG")"
check img1-closed grep -q "CLOSE object [0-9]* (erofs,dom/img1)" "$DLOG"
check img2-still-reads sh -c "cd /mnt/img2 && sha256sum -c /vmtest/sums2"
umount /mnt/img2
check blob-closed-last wait_for 5 grep -q "CLOSE object [0-9]* (erofs,dom/shared)" "$DLOG"
stop_daemon daemon-exit
data summary "$(summary $DLOG)"
"#;

#[test]
fn two_images_share_a_blob() {
    let (Some(mkfs_erofs), Some(busybox)) = (require_tool("mkfs.erofs"), busybox()) else {
        return;
    };
    let daemon = daemon();
    let dir = scratch_dir("vm_prod/domain");
    // Same file data in the same order; the second tree adds a directory and a symlink and
    // changes a mode, so its bootstrap differs while its blob comes out identical.
    let (tree1, tree2) = (dir.join("tree1"), dir.join("tree2"));
    for tree in [&tree1, &tree2] {
        std::fs::create_dir_all(tree.join("data")).expect("mkdir");
        std::fs::write(tree.join("data/f1"), noise(301, 3 << 20)).expect("write");
        std::fs::write(tree.join("data/f2"), noise(303, 2 << 20)).expect("write");
        std::fs::write(tree.join("data/f3"), noise(305, 100_000)).expect("write");
    }
    std::fs::create_dir_all(tree2.join("only-in-img2")).expect("mkdir");
    std::os::unix::fs::symlink("data/f1", tree2.join("link")).expect("symlink");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        tree2.join("data/f3"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    for (img, tree) in [("img1", &tree1), ("img2", &tree2)] {
        mkfs(
            &mkfs_erofs,
            &blobs.join(img),
            tree,
            &[
                "--chunksize=1048576".to_string(),
                format!("--blobdev={}", dir.join(format!("{img}.blob")).display()),
            ],
        );
        set_device_tag(&blobs.join(img), 0, "shared").expect("write the device tag");
    }
    let blob1 = std::fs::read(dir.join("img1.blob")).expect("read blob");
    let blob2 = std::fs::read(dir.join("img2.blob")).expect("read blob");
    assert!(
        blob1 == blob2,
        "mkfs.erofs laid the two trees' data out differently; the test needs one blob"
    );
    assert_ne!(
        std::fs::read(blobs.join("img1")).expect("read"),
        std::fs::read(blobs.join("img2")).expect("read"),
        "two different bootstraps"
    );
    std::fs::write(blobs.join("shared"), &blob1).expect("write blob");
    let (m1, m2) = (manifests(&busybox, &tree1), manifests(&busybox, &tree2));

    let start = Instant::now();
    let Some(out) = VmRun::new("prod-domain")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .bytes("vmtest/sums1", m1.sums.as_bytes(), 0o644)
        .bytes("vmtest/sums2", m2.sums.as_bytes(), 0o644)
        .script(&format!("{PRELUDE}{SCRIPT}"))
        .timeout(Duration::from_secs(240))
        .run()
    else {
        return;
    };
    out.assert_passed(&[
        "daemon-dm",
        "mount-img1",
        "mount-img2",
        "img1-sums",
        "img2-sums",
        "extra-only-in-img2",
        "img1-closed",
        "img2-still-reads",
        "blob-closed-last",
        "daemon-exit",
    ]);
    let v = |k: &str| out.data_u64(k);
    let report = out.report();
    assert_eq!(
        v("blob_opens"),
        1,
        "the shared blob is opened once\n{report}"
    );
    assert_eq!(v("boot_opens"), 2, "{report}");
    assert!(v("blob_reads_img1") > 0, "{report}");
    assert_eq!(
        v("blob_reads_total"),
        v("blob_reads_img1"),
        "img2's data came from the cache img1 filled\n{report}"
    );
    assert_eq!(v("blob_closes_after_1"), 0, "{report}");
    println!(
        "vm_prod_domain: {} checks, VM {:.1?} ({}), whole test {:.1?}; shared blob opened {} time(s), READs for it: {} while reading img1, {} more for img2; {}",
        out.passed.len(),
        out.elapsed,
        out.accel,
        start.elapsed(),
        v("blob_opens"),
        v("blob_reads_img1"),
        v("blob_reads_total") - v("blob_reads_img1"),
        out.data("summary").unwrap_or("?")
    );
}
