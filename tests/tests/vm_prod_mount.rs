//! Daemonless mounts with `erofs-ondemand mount [--blob-dir DIR] IMAGE MOUNTPOINT`: when every
//! blob of an image is local and the kernel mounts files, it is mounted file-backed (no daemon,
//! no cache) and the command says so; when a blob is missing, or the kernel refuses the file
//! (ENOTBLK), nothing is mounted and the command says why (exit 2). On the host kernel (as
//! root) and in the 6.12 VM.

mod vm_prod_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tests::vm::{Kernel, VmRun, noise};
use tests::{require_root, require_tool, run, scratch_dir};
use vm_prod_common::{PRELUDE, chunked, daemon, mkfs, sha256};

/// A chunk-based image `blobs/img` + blob `blobs/imgblob` and a plain image `blobs/plain`,
/// from a tree with one 3 MiB file `f` and one small file `g`; returns the sha256 of `f`.
fn images(dir: &Path, mkfs_erofs: &Path) -> String {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    std::fs::write(tree.join("f"), noise(401, 3 << 20)).expect("write");
    std::fs::write(tree.join("g"), noise(403, 5000)).expect("write");
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    chunked(mkfs_erofs, &blobs, &tree, "img", "imgblob", 1 << 20);
    mkfs(mkfs_erofs, &blobs.join("plain"), &tree, &[]);
    sha256(&tree.join("f"))
}

#[test]
fn host_mounts_local_images_without_a_daemon() {
    let Some(mkfs_erofs) = require_tool("mkfs.erofs") else {
        return;
    };
    if require_root("mount(2)").is_none() {
        return;
    }
    let bin = daemon();
    let dir = scratch_dir("vm_prod/mount-host");
    let sum = images(&dir, &mkfs_erofs);
    let blobs = dir.join("blobs");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let out = run(Command::new(&bin)
        .args(["mount", "--blob-dir"])
        .arg(&blobs)
        .arg(blobs.join("img"))
        .arg(&mnt));
    let read = std::fs::read(mnt.join("f"));
    let umount = Command::new("umount").arg(&mnt).status();
    assert!(out.contains("file-backed (no daemon), devices "), "{out}");
    assert!(out.contains("imgblob"), "{out}");
    assert_eq!(sha256_of(&read.expect("read through the mount")), sum);
    assert!(umount.expect("umount").success());
    // Without the blob: nothing is mounted, and the reason is given.
    std::fs::rename(blobs.join("imgblob"), dir.join("away")).expect("move the blob away");
    let out = Command::new(&bin)
        .args(["mount", "--blob-dir"])
        .arg(&blobs)
        .arg(blobs.join("img"))
        .arg(&mnt)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("not mounted: needs EROFS over fscache: blob \"imgblob\" is not in"),
        "{stdout}"
    );
    assert!(
        std::fs::read_dir(&mnt).expect("ls").next().is_none(),
        "nothing mounted"
    );
    println!(
        "vm_prod_mount host: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

fn sha256_of(bytes: &[u8]) -> String {
    let dir = scratch_dir("vm_prod/mount-sum");
    let p = dir.join("x");
    std::fs::write(&p, bytes).expect("write");
    sha256(&p)
}

const SCRIPT: &str = r#"
mkdir -p /mnt/a /mnt/b /mnt/c
out=$(erofs-ondemand mount --blob-dir $B $B/img /mnt/a 2>&1)
echo "$out"
case $out in
*"file-backed (no daemon), devices /data/blobs/imgblob"*) pass chunked-file-backed ;;
*) fail chunked-file-backed "$out" ;;
esac
check chunked-content sh -c "sha256sum /mnt/a/f | grep -q $(cat /vmtest/f.sha256)"
check no-cache-bound sh -c "! grep -q ' A ' /proc/fs/fscache/caches 2>/dev/null"
check umount-a umount /mnt/a
out=$(erofs-ondemand mount $B/plain /mnt/b 2>&1)
case $out in
*"file-backed (no daemon)"*) pass plain-file-backed ;;
*) fail plain-file-backed "$out" ;;
esac
check plain-content sh -c "sha256sum /mnt/b/f | grep -q $(cat /vmtest/f.sha256)"
umount /mnt/b
mkdir -p /data/empty
out=$(erofs-ondemand mount --blob-dir /data/empty $B/img /mnt/c 2>&1)
rc=$?
data missing_rc $rc
case $out in
*"not mounted: needs EROFS over fscache: blob \"imgblob\" is not in /data/empty"*) pass missing-blob-explained ;;
*) fail missing-blob-explained "$out" ;;
esac
check nothing-mounted sh -c "! grep -q ' /mnt/c ' /proc/mounts"
# An image on the initramfs (rootfs): the kernel refuses file-backed mounts there (ENOTBLK),
# so only fscache could serve it; the command says so (exit 2) and why.
cp $B/plain /plain.img
out=$(erofs-ondemand mount /plain.img /mnt/c 2>&1)
data enotblk_rc $?
case $out in
*"not mounted: needs EROFS over fscache: "*"cannot mount EROFS from a file"*) pass enotblk-explained ;;
*) fail enotblk-explained "$out" ;;
esac
"#;

#[test]
fn vm_mounts_local_images_without_a_daemon() {
    let Some(mkfs_erofs) = require_tool("mkfs.erofs") else {
        return;
    };
    let bin = daemon();
    let dir = scratch_dir("vm_prod/mount-vm");
    let sum = images(&dir, &mkfs_erofs);
    let start = Instant::now();
    let Some(out) = VmRun::new("prod-mount")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &bin)
        .disk_file("blobs", &dir.join("blobs"))
        .bytes("vmtest/f.sha256", sum.as_bytes(), 0o644)
        .script(&format!("{PRELUDE}{SCRIPT}"))
        .timeout(Duration::from_secs(240))
        .run()
    else {
        return;
    };
    out.assert_passed(&[
        "chunked-file-backed",
        "chunked-content",
        "no-cache-bound",
        "umount-a",
        "plain-file-backed",
        "plain-content",
        "missing-blob-explained",
        "nothing-mounted",
        "enotblk-explained",
    ]);
    assert_eq!(out.data_u64("missing_rc"), 2, "{}", out.report());
    assert_eq!(out.data_u64("enotblk_rc"), 2, "{}", out.report());
    println!(
        "vm_prod_mount: {} checks, VM {:.1?} ({}), whole test {:.1?}",
        out.passed.len(),
        out.elapsed,
        out.accel,
        start.elapsed()
    );
}
