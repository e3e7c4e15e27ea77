//! The registry inside the test VM (`Registry::into_guest`): an image pushed by skopeo on the
//! host, the registry's storage copied onto the VM's disk, Debian's `docker-registry` started
//! on the guest's loopback, and busybox `wget` reading the manifest, a whole blob and the rest
//! of a blob from byte 1000 (`206`, counted in the guest registry's access log), checked
//! against digests and sizes computed on the host.

use tests::oci_images;
use tests::oci_layout::{OciLayout, Platform, media};
use tests::registry::{self, Registry};
use tests::skopeo::Skopeo;
use tests::vm::{Kernel, VmRun};

#[test]
fn registry_serves_inside_the_vm() {
    let Some(reg) = Registry::plain("vm_registry") else {
        return;
    };
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let layers = oci_images::layered_tree(&dir.join("tree"), 200_000);
    let layout = OciLayout::create(&dir.join("layout"));
    let Some(image) = oci_images::targz_image(
        &layout,
        &layers.layers(),
        &Platform::host(),
        &dir.join("work"),
    ) else {
        return;
    };
    layout.tag("v1", &image.manifest);
    skopeo.push(layout.dir(), "v1", &reg, "demo/app:v1");
    let layer = &image.layers[0];
    let script = format!(
        r#"{up}
check registry-up registry_up
base=http://127.0.0.1:{port}/v2/demo/app
wget -q -O /tmp/manifest --header 'Accept: {accept}' $base/manifests/v1
check manifest-digest test "$(sha256sum /tmp/manifest | cut -d' ' -f1)" = {manifest}
wget -q -O /tmp/blob $base/blobs/{digest}
check blob-digest test "$(sha256sum /tmp/blob | cut -d' ' -f1)" = {hex}
# A range: busybox wget -c sends `Range: bytes=1000-` after 1000 bytes it holds and accepts 206.
head -c 1000 /tmp/blob > /tmp/range
check range-continue wget -q -c -O /tmp/range $base/blobs/{digest}
check range-digest test "$(sha256sum /tmp/range | cut -d' ' -f1)" = {hex}
check range-206 grep -q '"GET /v2/demo/app/blobs/{digest} HTTP/1.1" 206 {rest} ' /tmp/registry.log
"#,
        up = registry::GUEST_REGISTRY_UP,
        port = registry::GUEST_PORT,
        accept = media::MANIFEST,
        manifest = image.manifest.hex(),
        digest = layer.digest,
        hex = layer.hex(),
        rest = layer.size - 1000,
    );
    let Some(out) = reg
        .into_guest(VmRun::new("registry").kernel(Kernel::V6_12))
        .script(&script)
        .timeout(std::time::Duration::from_secs(300))
        .run()
    else {
        return;
    };
    out.assert_passed(&[
        "registry-up",
        "manifest-digest",
        "blob-digest",
        "range-continue",
        "range-digest",
        "range-206",
    ]);
}
