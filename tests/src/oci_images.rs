//! Images of the kinds lazy pulling serves, built from trees the test creates with the real
//! tools and written into an [`OciLayout`] (push them with [`crate::skopeo::Skopeo::push`]):
//!
//! - [`nydus_image`]: Nydus RAFS v6 as nydusify pushes it: one `nydus-image create -t dir-rafs`
//!   per layer (each upper layer on its parent's bootstrap, so the last bootstrap lists every
//!   blob), the data blobs as layers of media type `application/vnd.oci.image.layer.nydus.blob.v1`
//!   (annotation `containerd.io/snapshot/nydus-blob: "true"`, digest `sha256:<blob id>`), then
//!   the bootstrap layer: a gzip tar holding `image/image.boot`
//!   (annotation `containerd.io/snapshot/nydus-bootstrap: "true"`).
//! - [`nydus_zran_image`]: the zran / targz-ref variant (one layer): `nydus-image create -t
//!   targz-ref` of the original `.tar.gz`; the `.tar.gz` is the data blob (blob id = its
//!   sha256), followed by its separate meta blob (chunk infos and ZRan contexts), then the
//!   bootstrap layer.
//! - [`erofs_image`]: containerd's native EROFS layers (`application/vnd.erofs.layer.v1`):
//!   each layer `mkfs.erofs --tar=f --aufs` of the layer's tar (aufs `.wh.` whiteouts become
//!   overlayfs whiteouts); the rootfs is the overlay of the layers.
//! - [`targz_image`]: plain OCI `tar+gzip` layers of the same layers (the full-pull peer).
//! - [`index`]: an image index over images of several platforms ([`Platform::other`] for a
//!   decoy the client must not pick).
//!
//! Layers are directories in aufs/OCI form: a file `.wh.NAME` deletes `NAME` of the layers
//! below, `.wh..wh..opq` makes its directory opaque. [`layered_tree`] makes a lower and an
//! upper layer that delete, override and add files, and the merged tree they should show;
//! [`apply_layer`] computes a merged tree for any layers.
//!
//! A whole set-up, as a registry client's test would write it:
//!
//! ```no_run
//! use tests::fault_proxy::{Fault, FaultProxy, Match};
//! use tests::oci_images;
//! use tests::oci_layout::{OciLayout, Platform};
//! use tests::registry::Registry;
//! use tests::skopeo::Skopeo;
//!
//! let Some(reg) = Registry::token("example/nydus") else { return };
//! let dir = reg.dir().to_path_buf();
//! let tree = oci_images::layered_tree(&dir.join("tree"), 4 << 20);
//! let layout = OciLayout::create(&dir.join("layout"));
//! let nydus = oci_images::nydus_image(&layout, &tree.layers(), &Platform::host(), &dir.join("work"))
//!     .unwrap();
//! layout.tag("v1", &nydus.image.manifest);
//! Skopeo::new(&dir.join("skopeo")).unwrap().push(layout.dir(), "v1", &reg, "demo/nydus:v1");
//! let proxy = FaultProxy::in_front_of(&reg);
//! proxy.inject(Match::Blobs, Fault::Status { status: 503, retry_after: Some(1) }, 1);
//! // The client under test reads `proxy.reference("demo/nydus:v1")` with the credentials
//! // `reg.credentials()`, and must show `tree.merged`; then count at the registry:
//! let (requests, bytes) = reg.blob_served(&nydus.image.layers[0].digest);
//! # let _ = (requests, bytes);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::nydus_image::Create;
use crate::oci_layout::{Descriptor, OciLayout, Platform, annotation, media, sha256_file};

/// Annotation nydusify puts on the bootstrap layer: the RAFS version.
pub const NYDUS_FS_VERSION: &str = "containerd.io/snapshot/nydus-fs-version";
/// The `os.features` entry of a Nydus manifest in an index.
pub const NYDUS_OS_FEATURE: &str = "nydus.remoteimage.v1";

/// An image written into a layout.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest (its descriptor carries the platform, for [`index`]).
    pub manifest: Descriptor,
    /// The config blob.
    pub config: Descriptor,
    /// The layers in manifest order.
    pub layers: Vec<Descriptor>,
}

/// A Nydus image and the local files it was built from (for comparisons).
#[derive(Debug, Clone)]
pub struct NydusImage {
    /// The OCI objects.
    pub image: Image,
    /// The final bootstrap (`image/image.boot` of the bootstrap layer).
    pub bootstrap: PathBuf,
    /// A directory holding every blob under its blob id (and meta blobs under their digest).
    pub blob_dir: PathBuf,
    /// The blob ids in the bootstrap's blob table order.
    pub blob_ids: Vec<String>,
}

/// A lower and an upper layer, and the tree their overlay shows.
#[derive(Debug, Clone)]
pub struct LayeredTree {
    /// The lower layer (a plain tree).
    pub lower: PathBuf,
    /// The upper layer, with whiteouts (`.wh.NAME`) and an opaque directory.
    pub upper: PathBuf,
    /// What the overlay of the two shows ([`apply_layer`] of both).
    pub merged: PathBuf,
}

impl LayeredTree {
    /// `[lower, upper]`, the argument the image builders take.
    pub fn layers(&self) -> Vec<&Path> {
        vec![&self.lower, &self.upper]
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Make a [`LayeredTree`] in `dir` (`lower/`, `upper/`, `merged/`). `big` is the size of the
/// large compressible file (`data/big.txt`) in the lower layer; the lower layer also has an
/// incompressible 1.5 MiB file, small files, a symlink and a hard link. The upper layer
/// overrides `etc/config`, deletes `data/gone.txt` and the directory `removed/`, makes `opaque/`
/// opaque (its old files vanish, `opaque/c` appears) and adds `new/file.txt`.
pub fn layered_tree(dir: &Path, big: usize) -> LayeredTree {
    let lower = dir.join("lower");
    let upper = dir.join("upper");
    let merged = dir.join("merged");
    for d in [&lower, &upper, &merged] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).unwrap();
    }
    write(&lower.join("etc/config"), b"version = 1\n");
    write(&lower.join("data/big.txt"), &crate::text(1, big));
    write(
        &lower.join("data/random.bin"),
        &crate::Rng(7).bytes(1_500_000),
    );
    write(
        &lower.join("data/gone.txt"),
        b"deleted by the upper layer\n",
    );
    for i in 0..8u64 {
        let n = (i * 997 % 5000) as usize + 1;
        write(&lower.join(format!("small/s{i}")), &crate::text(10 + i, n));
    }
    write(
        &lower.join("removed/x"),
        b"in a directory the upper layer deletes\n",
    );
    write(&lower.join("opaque/a"), b"hidden by an opaque directory\n");
    write(&lower.join("opaque/b"), b"hidden too\n");
    std::os::unix::fs::symlink("etc/config", lower.join("config-link")).unwrap();
    std::fs::hard_link(lower.join("small/s3"), lower.join("small/s3-link")).unwrap();

    write(
        &upper.join("etc/config"),
        b"version = 2, from the upper layer\n",
    );
    write(&upper.join("data/.wh.gone.txt"), b"");
    write(&upper.join(".wh.removed"), b"");
    write(&upper.join("opaque/.wh..wh..opq"), b"");
    write(&upper.join("opaque/c"), b"the only file of opaque/\n");
    write(&upper.join("new/file.txt"), &crate::text(99, 10_000));

    apply_layer(&merged, &lower);
    apply_layer(&merged, &upper);
    LayeredTree {
        lower,
        upper,
        merged,
    }
}

/// Apply layer `layer` (aufs/OCI whiteouts) onto the tree at `merged`, as an overlay mount
/// or a full pull would: whiteouts delete, an opaque directory drops what was below, an entry
/// of another type replaces the one below, then the layer is copied over with one
/// `cp -a --remove-destination` (modes, owners, times, symlinks and hard links kept) and the
/// whiteout files are removed from the result.
pub fn apply_layer(merged: &Path, layer: &Path) {
    std::fs::create_dir_all(merged).unwrap();
    let mut whiteouts = Vec::new();
    prepare(merged, layer, Path::new(""), &mut whiteouts);
    crate::run(
        Command::new("cp")
            .args(["-a", "--remove-destination"])
            .arg(layer.join("."))
            .arg(merged),
    );
    for w in &whiteouts {
        remove(&merged.join(w));
    }
    // Removing the whiteout files touched their directories: restore them, deepest first.
    let mut dirs: Vec<&Path> = whiteouts.iter().filter_map(|w| w.parent()).collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        copy_dir_metadata(&layer.join(d), &merged.join(d));
    }
}

/// Delete what `layer`'s whiteouts and opaque directories hide, and entries whose type the
/// layer changes (directory vs not); collect the whiteout files' relative paths.
fn prepare(merged: &Path, layer: &Path, rel: &Path, whiteouts: &mut Vec<PathBuf>) {
    let dir = layer.join(rel);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().expect("UTF-8 names"))
        .collect();
    names.sort();
    if names.iter().any(|n| n == ".wh..wh..opq")
        && let Ok(rd) = std::fs::read_dir(merged.join(rel))
    {
        for e in rd {
            remove(&e.unwrap().path());
        }
    }
    for name in &names {
        let r = rel.join(name);
        if name.starts_with(".wh.") {
            whiteouts.push(r.clone());
            if let Some(gone) = name.strip_prefix(".wh.").filter(|g| *g != ".wh..opq") {
                remove(&merged.join(rel).join(gone));
            }
            continue;
        }
        let src_dir = std::fs::symlink_metadata(layer.join(&r)).unwrap().is_dir();
        match std::fs::symlink_metadata(merged.join(&r)) {
            Ok(m) if m.is_dir() != src_dir => remove(&merged.join(&r)),
            _ => {}
        }
        if src_dir {
            prepare(merged, layer, &r, whiteouts);
        }
    }
}

fn copy_dir_metadata(from: &Path, to: &Path) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(from).unwrap();
    std::os::unix::fs::lchown(to, Some(m.uid()), Some(m.gid())).unwrap();
    std::fs::set_permissions(to, m.permissions()).unwrap();
    let f = std::fs::File::open(to).unwrap();
    f.set_times(
        std::fs::FileTimes::new()
            .set_accessed(m.accessed().unwrap())
            .set_modified(m.modified().unwrap()),
    )
    .unwrap();
}

fn remove(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

/// Tar `layer` (`layer-i.tar`) and gzip it (`layer-i.tar.gz`) in `work`.
fn tar_layer(work: &Path, i: usize, layer: &Path) -> (PathBuf, PathBuf) {
    let tar = work.join(format!("layer-{i}.tar"));
    let tgz = work.join(format!("layer-{i}.tar.gz"));
    crate::tree::make_tarball(layer, &tar);
    crate::tree::gzip(&tar, &tgz);
    (tar, tgz)
}

fn need(tools: &[&str]) -> Option<()> {
    for t in tools {
        crate::require_tool(t)?;
    }
    Some(())
}

/// Write config and manifest for `layers` (with their diff ids) and return the image.
fn finish(
    layout: &OciLayout,
    platform: &Platform,
    layers: Vec<Descriptor>,
    diff_ids: &[String],
) -> Image {
    let config = layout.add_config(platform, diff_ids);
    let manifest = layout
        .add_manifest(&config, &layers, &BTreeMap::new())
        .with_platform(platform.clone());
    Image {
        manifest,
        config,
        layers,
    }
}

/// Plain OCI image: one `tar+gzip` layer per directory of `layers` (bottom first).
pub fn targz_image(
    layout: &OciLayout,
    layers: &[&Path],
    platform: &Platform,
    work: &Path,
) -> Option<Image> {
    need(&["tar", "gzip"])?;
    std::fs::create_dir_all(work).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (tar, tgz) = tar_layer(work, i, l);
        diff_ids.push(sha256_file(&tar));
        descs.push(layout.add_blob_file(media::LAYER_TAR_GZIP, &tgz));
    }
    Some(finish(layout, platform, descs, &diff_ids))
}

/// containerd native EROFS image: one `mkfs.erofs --tar=f --aufs` image per layer.
pub fn erofs_image(
    layout: &OciLayout,
    layers: &[&Path],
    platform: &Platform,
    work: &Path,
) -> Option<Image> {
    need(&["tar", "gzip", "mkfs.erofs"])?;
    std::fs::create_dir_all(work).unwrap();
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (tar, _) = tar_layer(work, i, l);
        let img = work.join(format!("layer-{i}.erofs"));
        crate::tree::mkfs(&img, &tar, &["--tar=f", "--aufs"]);
        descs.push(layout.add_blob_file(media::EROFS_LAYER, &img));
    }
    let diff_ids: Vec<String> = descs.iter().map(|d| d.digest.clone()).collect();
    Some(finish(layout, platform, descs, &diff_ids))
}

/// The bootstrap layer: a gzip tar holding `image/image.boot`. Returns (descriptor, diff id).
fn bootstrap_layer(layout: &OciLayout, boot: &Path, work: &Path) -> (Descriptor, String) {
    let d = work.join("bootstrap-layer");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("image")).unwrap();
    std::fs::copy(boot, d.join("image/image.boot")).unwrap();
    let tar = work.join("bootstrap.tar");
    crate::run(
        Command::new("tar")
            .args([
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--mtime=@0",
                "-cf",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(&d)
            .arg("image/image.boot"),
    );
    let tgz = work.join("bootstrap.tar.gz");
    crate::tree::gzip(&tar, &tgz);
    let desc = layout
        .add_blob_file(media::LAYER_TAR_GZIP, &tgz)
        .annotate(annotation::NYDUS_BOOTSTRAP, "true")
        .annotate(NYDUS_FS_VERSION, "6");
    (desc, sha256_file(&tar))
}

/// Append the bootstrap layer to a Nydus image's blob layers and write config and manifest
/// (platform with `os.features: ["nydus.remoteimage.v1"]`).
#[allow(clippy::too_many_arguments)]
fn finish_nydus(
    layout: &OciLayout,
    platform: &Platform,
    work: &Path,
    mut descs: Vec<Descriptor>,
    mut diff_ids: Vec<String>,
    bootstrap: PathBuf,
    blob_dir: PathBuf,
    blob_ids: Vec<String>,
) -> NydusImage {
    let (boot_desc, boot_diff) = bootstrap_layer(layout, &bootstrap, work);
    descs.push(boot_desc);
    diff_ids.push(boot_diff);
    let platform = platform.clone().with_features(&[NYDUS_OS_FEATURE]);
    NydusImage {
        image: finish(layout, &platform, descs, &diff_ids),
        bootstrap,
        blob_dir,
        blob_ids,
    }
}

/// Nydus RAFS v6 image, one blob per layer that has file data (see the module docs). The
/// manifest's platform has `os.features: ["nydus.remoteimage.v1"]` (used by [`index`]).
pub fn nydus_image(
    layout: &OciLayout,
    layers: &[&Path],
    platform: &Platform,
    work: &Path,
) -> Option<NydusImage> {
    nydus_image_with(layout, layers, platform, work, &[])
}

/// [`nydus_image`] with more arguments for `nydus-image create` (e.g. `--chunk-size 0x40000`).
pub fn nydus_image_with(
    layout: &OciLayout,
    layers: &[&Path],
    platform: &Platform,
    work: &Path,
    create_args: &[&str],
) -> Option<NydusImage> {
    need(&["tar", "gzip", "nydus-image"])?;
    let blob_dir = work.join("blobs");
    std::fs::create_dir_all(&blob_dir).unwrap();
    let mut parent: Option<PathBuf> = None;
    let mut blob_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let boot = work.join(format!("bootstrap-{i}"));
        blob_ids = Create::new(l, &blob_dir)
            .bootstrap(&boot)
            .parent(parent.as_deref())
            .args(create_args)
            .run()?;
        parent = Some(boot);
    }
    let bootstrap = parent.expect("at least one layer");
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for id in &blob_ids {
        let d = layout
            .add_blob_file(media::NYDUS_BLOB, &blob_dir.join(id))
            .annotate(annotation::NYDUS_BLOB, "true");
        assert_eq!(d.hex(), id, "a Nydus blob id is its sha256");
        diff_ids.push(d.digest.clone());
        descs.push(d);
    }
    Some(finish_nydus(
        layout, platform, work, descs, diff_ids, bootstrap, blob_dir, blob_ids,
    ))
}

/// Nydus zran (targz-ref) image of one layer: `nydus-image create -t targz-ref` of its
/// `.tar.gz`. Layers: the original `.tar.gz` (media type `tar+gzip`, annotation `nydus-blob`,
/// digest = blob id), its meta blob (media type Nydus blob: chunk infos and ZRan contexts),
/// then the bootstrap layer. `blob_dir` holds the `.tar.gz` under its blob id and the meta blob
/// under its digest, as `erofs --blob-dir` reads them.
///
/// One layer only: nydus-image 2.2's `-t targz-ref` on a `--parent-bootstrap` records the new
/// layer's chunks with `blob_index 0` (its own `check -v` shows it), so a stacked zran
/// bootstrap reads the upper files from the lower blob; nydusify instead merges per-layer
/// bootstraps with TOC digests, which this fixture does not reproduce. Panics for more layers.
pub fn nydus_zran_image(
    layout: &OciLayout,
    layers: &[&Path],
    platform: &Platform,
    work: &Path,
) -> Option<NydusImage> {
    assert_eq!(
        layers.len(),
        1,
        "nydus_zran_image builds one layer (see its docs: stacked targz-ref bootstraps are wrong)"
    );
    need(&["tar", "gzip", "nydus-image"])?;
    let blob_dir = work.join("blobs");
    std::fs::create_dir_all(&blob_dir).unwrap();
    let mut parent: Option<PathBuf> = None;
    let mut blob_ids = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (tar, tgz) = tar_layer(work, i, l);
        let meta_dir = work.join(format!("meta-{i}"));
        std::fs::create_dir_all(&meta_dir).unwrap();
        let boot = work.join(format!("bootstrap-{i}"));
        blob_ids = Create::new(&tgz, &meta_dir)
            .kind("targz-ref")
            .bootstrap(&boot)
            .parent(parent.as_deref())
            .run()?;
        parent = Some(boot);
        let data = layout
            .add_blob_file(media::LAYER_TAR_GZIP, &tgz)
            .annotate(annotation::NYDUS_BLOB, "true");
        assert_eq!(
            blob_ids.last().map(String::as_str),
            Some(data.hex()),
            "zran blob id = sha256 of the .tar.gz"
        );
        std::fs::copy(&tgz, blob_dir.join(data.hex())).unwrap();
        diff_ids.push(sha256_file(&tar));
        descs.push(data);
        for e in std::fs::read_dir(&meta_dir).unwrap() {
            let p = e.unwrap().path();
            let meta = layout
                .add_blob_file(media::NYDUS_BLOB, &p)
                .annotate(annotation::NYDUS_BLOB, "true");
            std::fs::copy(&p, blob_dir.join(meta.hex())).unwrap();
            diff_ids.push(meta.digest.clone());
            descs.push(meta);
        }
    }
    let bootstrap = parent.expect("at least one layer");
    Some(finish_nydus(
        layout, platform, work, descs, diff_ids, bootstrap, blob_dir, blob_ids,
    ))
}

/// An image index over `images` (each manifest descriptor with its platform).
pub fn index(layout: &OciLayout, images: &[&Image]) -> Descriptor {
    let manifests: Vec<Descriptor> = images.iter().map(|i| i.manifest.clone()).collect();
    layout.add_index(&manifests)
}
