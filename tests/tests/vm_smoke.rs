//! Smoke test of the VM harness on the real 6.12 kernel, without our daemon: images built by
//! mkfs.erofs on the host are mounted in the guest (file-backed, and on a loop device) and
//! every file's checksum, mode, owner and type is compared with the host tree;
//! `/dev/cachefiles` exists and accepts `dir` + `bind ondemand` (and refuses a tmpfs cache and
//! a second bind, as the kernel should).

use std::process::Command;
use std::time::Instant;

use tests::vm::{Kernel, VmRun, busybox, dense_tree, manifests};
use tests::{require_tool, run, scratch_dir};

const SCRIPT: &str = r#"
# /dev/cachefiles exists and a cache on ext4 binds in ondemand mode.
check cachefiles-node test -c /dev/cachefiles
mkdir -p /data/cache
exec 3<>/dev/cachefiles
check cachefiles-dir sh -c 'echo "dir /data/cache" >&3'
check cachefiles-tag sh -c 'echo "tag smoke" >&3'
check bind-ondemand sh -c 'echo "bind ondemand" >&3'
check bind-made-dirs test -d /data/cache/cache -a -d /data/cache/graveyard
check_fails second-bind-refused sh -c 'echo "bind ondemand" >&3'
exec 3>&-
# A cache on tmpfs is refused (no sync_fs): EOPNOTSUPP. The device is free again once the
# first fd is closed.
mkdir -p /tmp/cache
exec 3<>/dev/cachefiles
echo "dir /tmp/cache" >&3
check_fails tmpfs-bind-refused sh -c 'echo "bind ondemand" >&3'
exec 3>&-

# Every image mounts from the ext4 disk, file-backed (vmtool calls mount(2) with the file) and
# on a loop device (what busybox mount does with a file), and reads back the host tree.
for img in plain lz4hc; do
    for how in file loop; do
        m=/mnt/$img-$how
        mkdir -p $m
        if [ $how = file ]; then
            vmtool mount erofs /data/img/$img.erofs $m
        else
            mount -t erofs -o ro /data/img/$img.erofs $m
        fi
        if [ $? -ne 0 ]; then
            fail mount-$img-$how "mount failed: $(dmesg | tail -3)"
            continue
        fi
        src=$(awk -v m=$m '$2 == m { print $1 }' /proc/mounts)
        case $how:$src in
        file:/data/img/$img.erofs | loop:/dev/loop*) pass mount-$img-$how ;;
        *) fail mount-$img-$how "mounted from '$src'" ;;
        esac
        verify_tree $img-$how $m
        check link-$img-$how test "$(readlink $m/a/link)" = ../sizes/f100
        umount $m
    done
done
# From the initramfs (rootfs) the kernel refuses a file-backed mount with ENOTBLK.
cp /data/img/plain.erofs /plain.erofs
out=$(vmtool mount erofs /plain.erofs /mnt/plain-file)
case $out in
*name=ENOTBLK*) pass rootfs-mount-refused ;;
*) fail rootfs-mount-refused "expected ENOTBLK, got: $out" ;;
esac
"#;

#[test]
fn file_backed_images_and_cachefiles_bind() {
    let Some(mkfs) = require_tool("mkfs.erofs") else {
        return;
    };
    let Some(busybox) = busybox() else {
        return;
    };
    let dir = scratch_dir("vm_smoke");
    let tree = dir.join("tree");
    dense_tree(&tree);
    let img = dir.join("img");
    std::fs::create_dir_all(&img).expect("mkdir");
    run(Command::new(&mkfs).arg(img.join("plain.erofs")).arg(&tree));
    run(Command::new(&mkfs)
        .arg("-zlz4hc")
        .arg(img.join("lz4hc.erofs"))
        .arg(&tree));
    let manifests = manifests(&busybox, &tree);
    assert!(manifests.sums.lines().count() >= 12, "{}", manifests.sums);

    let start = Instant::now();
    let Some(out) = VmRun::new("smoke")
        .kernel(Kernel::V6_12)
        .disk_file("img", &img)
        .manifests(&manifests)
        .script(SCRIPT)
        .timeout(std::time::Duration::from_secs(240))
        .run()
    else {
        return;
    };
    out.assert_passed(&[
        "cachefiles-node",
        "cachefiles-dir",
        "cachefiles-tag",
        "bind-ondemand",
        "bind-made-dirs",
        "second-bind-refused",
        "tmpfs-bind-refused",
        "mount-plain-file",
        "plain-file-sums",
        "plain-file-stats",
        "link-plain-file",
        "mount-plain-loop",
        "plain-loop-sums",
        "plain-loop-stats",
        "link-plain-loop",
        "mount-lz4hc-file",
        "lz4hc-file-sums",
        "lz4hc-file-stats",
        "link-lz4hc-file",
        "mount-lz4hc-loop",
        "lz4hc-loop-sums",
        "lz4hc-loop-stats",
        "link-lz4hc-loop",
        "rootfs-mount-refused",
    ]);
    println!(
        "vm_smoke: {} checks passed on {} (accel {}), VM {:.2?}, whole test {:.2?}",
        out.passed.len(),
        out.begin.as_deref().unwrap_or("?"),
        out.accel,
        out.elapsed,
        start.elapsed()
    );
}

/// The 7.2 kernel (fanotify pre-content, no EROFS fscache mode) boots with the same harness and
/// mounts an image file-backed.
#[test]
fn kernel_7_2_boots_and_mounts() {
    let (Some(mkfs), Some(busybox)) = (require_tool("mkfs.erofs"), busybox()) else {
        return;
    };
    let dir = scratch_dir("vm_smoke_7_2");
    let tree = dir.join("tree");
    dense_tree(&tree);
    let img = dir.join("img");
    std::fs::create_dir_all(&img).expect("mkdir");
    run(Command::new(&mkfs).arg(img.join("plain.erofs")).arg(&tree));
    let script = r#"
case $(uname -r) in 7.2.*) pass kernel-7.2 ;; *) fail kernel-7.2 "uname -r: $(uname -r)" ;; esac
mkdir -p /mnt/plain
check mount-plain vmtool mount erofs /data/img/plain.erofs /mnt/plain
verify_tree plain /mnt/plain
umount /mnt/plain
"#;
    let Some(out) = VmRun::new("smoke-7.2")
        .kernel(Kernel::V7_2)
        .disk_file("img", &img)
        .manifests(&manifests(&busybox, &tree))
        .script(script)
        .timeout(std::time::Duration::from_secs(240))
        .run()
    else {
        return;
    };
    out.assert_passed(&["kernel-7.2", "mount-plain", "plain-sums", "plain-stats"]);
    println!(
        "vm_smoke 7.2: {} checks passed, VM {:.2?}",
        out.passed.len(),
        out.elapsed
    );
}
