//! The peer fixture works (a check, run as a benchmark): nydusd 2.2 (`tests::nydusd`, built by `cargo install` on first
//! use) runs in the 6.12 VM in EROFS-over-fscache mode and serves two RAFS v6 images, read
//! back equal to their source trees (every file's sha256, every entry's mode, owner and type):
//!
//! - `local`: a zstd image built by nydus-image from [`dense_tree`], its blob and bootstrap
//!   on the VM's disk, nydusd's `localfs` backend;
//! - `remote`: the two-layer Nydus image of [`oci_images::nydus_image`] (whiteouts, an opaque
//!   directory), pushed by skopeo to Debian's docker-registry, whose storage the guest's
//!   registry serves on `127.0.0.1:5000`; nydusd's `registry` backend fetches the blobs (the
//!   guest registry's access log shows it), the bootstrap is on the disk.
//!
//! ```text
//! cargo bench -p tests --bench nydusd_check
//! ```
//!
//! A benchmark target, not a test, because the test command must not build nydusd: `cargo
//! install nydus-rs` took 43 minutes on this 2-core machine under load, CI has 30 minutes for
//! everything. Once the test environment carries nydusd (`scripts/build-tools.sh` puts it in
//! `tools/bin`, where [`nydusd::binary`] looks first), this can become a `#[test]` in
//! `tests/tests/` as it is. The benchmark against our daemon is
//! `cargo bench -p tests --bench nydusd_walk`.

use std::path::Path;
use std::time::Duration;

use tests::nydusd::{self, Backend, Image};
use tests::oci_images;
use tests::oci_layout::{OciLayout, Platform};
use tests::registry::{GUEST_REGISTRY_UP, Registry};
use tests::require_tool;
use tests::skopeo::Skopeo;
use tests::vm::{Kernel, VmRun, busybox, dense_tree, manifests, nydus_zstd};

const SCRIPT: &str = r#"
check registry-up registry_up
nydusd_up /tmp/nydusd.log /etc/nydusd.json || exit 1
nydusd_mount local /mnt/local
verify_tree local /mnt/local
nydusd_mount remote /mnt/remote
check remote-sums sh -c "cd /mnt/remote && sha256sum -c /vmtest/remote.sums"
(cd /mnt/remote && find . | sort | while IFS= read -r f; do stat -c '%n %a %u:%g %F' "$f"; done) >/tmp/remote.stats
check remote-stats cmp /tmp/remote.stats /vmtest/remote.stats
for b in $(cat /vmtest/remote.blobs); do
    check "registry-served-$b" grep -q "GET /v2/rootfs/blobs/sha256:$b HTTP/1.1\" 20[06] " /tmp/registry.log
done
# The backend's counters through nydusd's API: the local blob was read from the disk.
_m=$(nydusd_api "/api/v1/metrics/backend?id=$(cat /vmtest/local.blob)")
data local_backend "$(echo $_m | tr -d ' ')"
check local-backend-counted sh -c "echo '$_m' | grep -q '\"read_amount_total\":[1-9]'"
umount /mnt/local
umount /mnt/remote
nydusd_down nydusd-exit
echo "--- nydusd log"
cat /tmp/nydusd.log
"#;

fn main() {
    require_tool("nydus-image").expect("nydus-image");
    let busybox = busybox().expect("busybox");
    let nydusd_bin = nydusd::binary();
    let reg = Registry::plain("nydusd_check").expect("docker-registry");
    let dir = reg.dir().to_path_buf();

    // local: one zstd RAFS image, bootstrap and blob side by side.
    let tree = dir.join("tree");
    dense_tree(&tree);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let local_blob = nydus_zstd(&blobs, "local", &tree).id;

    // remote: a two-layer Nydus image in the registry.
    let skopeo = Skopeo::new(&dir.join("skopeo")).expect("skopeo");
    let layers = oci_images::layered_tree(&dir.join("layers"), 300_000);
    let layout = OciLayout::create(&dir.join("layout"));
    let image = oci_images::nydus_image(
        &layout,
        &layers.layers(),
        &Platform::host(),
        &dir.join("nydus"),
    )
    .expect("tar, gzip and nydus-image");
    layout.tag("nydus", &image.image.manifest);
    skopeo.push(layout.dir(), "nydus", &reg, "rootfs:nydus");
    let remote = manifests(&busybox, &layers.merged);

    let config = nydusd::config(&[
        Image::new(
            "local",
            "/data/blobs/local",
            Backend::LocalFs {
                dir: "/data/blobs".into(),
            },
        ),
        Image::new(
            "remote",
            "/data/remote.boot",
            Backend::guest_registry("rootfs"),
        ),
    ]);
    let vm = nydusd::into_guest(VmRun::new("nydusd-check").kernel(Kernel::V6_12));
    let out = reg
        .into_guest(vm)
        .bytes("etc/nydusd.json", config.as_bytes(), 0o644)
        .disk_file("blobs", &blobs)
        .disk_file("remote.boot", Path::new(&image.bootstrap))
        .manifests(&manifests(&busybox, &tree))
        .bytes("vmtest/remote.sums", remote.sums.as_bytes(), 0o644)
        .bytes("vmtest/remote.stats", remote.stats.as_bytes(), 0o644)
        .bytes("vmtest/local.blob", local_blob.as_bytes(), 0o644)
        .bytes(
            "vmtest/remote.blobs",
            image.blob_ids.join("\n").as_bytes(),
            0o644,
        )
        .script(&format!(
            "{GUEST_REGISTRY_UP}{}{SCRIPT}",
            nydusd::GUEST_NYDUSD
        ))
        .timeout(Duration::from_secs(400))
        .run()
        .expect("qemu, busybox and mkfs.ext4");
    let mut expected: Vec<String> = [
        "registry-up",
        "nydusd-up",
        "nydusd-mount-local",
        "local-sums",
        "local-stats",
        "nydusd-mount-remote",
        "remote-sums",
        "remote-stats",
        "local-backend-counted",
        "nydusd-exit",
    ]
    .map(String::from)
    .to_vec();
    assert!(!image.blob_ids.is_empty());
    expected.extend(
        image
            .blob_ids
            .iter()
            .map(|b| format!("registry-served-{b}")),
    );
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    out.assert_passed(&expected);
    println!(
        "nydusd_check: local backend metrics {}",
        out.data("local_backend").unwrap_or("?")
    );
    println!(
        "nydusd_check: nydusd {} ({}) served a localfs and a registry image; {} checks passed, VM {:.1?}",
        nydusd::VERSION,
        nydusd_bin.display(),
        out.passed.len(),
        out.elapsed
    );
}
