//! The image-kind fixtures (`tests::oci_images`) proven end to end with independent tools:
//! each kind is built from a two-layer tree (deletions, an opaque directory, an override),
//! pushed by skopeo to a plain registry, copied back by skopeo into a second layout, and the
//! copy is unpacked by a tool other than the registry client under test and compared with the
//! merged tree:
//!
//! - `tar+gzip`: GNU tar, whiteouts applied layer by layer;
//! - containerd EROFS layers: the host kernel mounts each layer and overlayfs stacks them;
//! - Nydus (single layer): `nydus-image unpack`; Nydus (two layers, two blobs) and zran (one
//!   layer; its `.tar.gz` also by GNU tar): the pulled bootstrap equals the built one, and
//!   `erofs extract --blob-dir` over the pulled blobs (the reader, proven against the kernel by
//!   the rafs_* tests) shows the tree;
//! - an index of two platforms: skopeo resolves it to this machine's manifest, and to the
//!   other one when told to.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::oci_images::{self, LayeredTree};
use tests::oci_layout::{OciLayout, Platform, annotation, media};
use tests::registry::Registry;
use tests::skopeo::Skopeo;
use tests::tree::{self, Compare, MtimeCheck};

fn compare_trees(want: &Path, got: &Path) {
    let mut w = tree::snapshot_dir(want);
    let mut g = tree::snapshot_dir(got);
    tree::fill_link_groups(&mut w);
    tree::fill_link_groups(&mut g);
    let how = Compare {
        mtime: MtimeCheck::Seconds,
        root_metadata: false,
        xattrs: false,
        dir_nlink: false,
    };
    if let Err(d) = tree::compare(&w, &g, &how) {
        panic!("{} differs from {}:\n{d}", got.display(), want.display());
    }
}

fn untar(archive: &Path, dest: &Path, gzip: bool) {
    std::fs::create_dir_all(dest).unwrap();
    tests::run(
        Command::new("tar")
            .arg(if gzip { "-xzf" } else { "-xf" })
            .arg(archive)
            .arg("--numeric-owner")
            .arg("-C")
            .arg(dest),
    );
}

/// One registry, one layout with every kind, pushed and copied back.
struct Pushed {
    _reg: Registry,
    dir: PathBuf,
    tree: LayeredTree,
    back: OciLayout,
    skopeo: Skopeo,
}

fn push_and_copy_back(
    name: &str,
    tags: &[&str],
    build: impl FnOnce(&OciLayout, &LayeredTree, &Path),
) -> Option<Pushed> {
    let reg = Registry::plain(name)?;
    let dir = reg.dir().to_path_buf();
    let skopeo = Skopeo::new(&dir.join("skopeo"))?;
    let tree = oci_images::layered_tree(&dir.join("tree"), 1 << 20);
    let layout = OciLayout::create(&dir.join("layout"));
    build(&layout, &tree, &dir);
    let back = OciLayout::create(&dir.join("back"));
    for t in tags {
        skopeo.push(layout.dir(), t, &reg, &format!("kinds:{t}"));
        skopeo.pull(&reg, &format!("kinds:{t}"), back.dir(), t);
    }
    Some(Pushed {
        _reg: reg,
        dir,
        tree,
        back,
        skopeo,
    })
}

#[test]
fn targz_layers_unpack_to_the_merged_tree() {
    let mut image = None;
    let Some(p) = push_and_copy_back("fixture_images/targz", &["targz"], |layout, tree, dir| {
        let i =
            oci_images::targz_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("targz", &i.manifest);
        image = Some(i);
    }) else {
        return;
    };
    let image = image.unwrap();
    assert_eq!(image.layers.len(), 2);
    let merged = p.dir.join("unpacked");
    for (i, l) in image.layers.iter().enumerate() {
        assert_eq!(l.media_type, media::LAYER_TAR_GZIP);
        let d = p.dir.join(format!("layer-{i}"));
        untar(&p.back.blob_path(&l.digest), &d, true);
        oci_images::apply_layer(&merged, &d);
    }
    compare_trees(&p.tree.merged, &merged);
    // The merged tree really lost and gained what the upper layer says.
    assert!(!merged.join("data/gone.txt").exists() && !merged.join("removed").exists());
    assert!(!merged.join("opaque/a").exists() && merged.join("opaque/c").exists());
    assert_eq!(
        std::fs::read(merged.join("etc/config")).unwrap(),
        b"version = 2, from the upper layer\n"
    );
    // The config's diff ids are the uncompressed tars' digests.
    let config: serde_json::Value =
        serde_json::from_slice(&p.back.read_blob(&image.config.digest)).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
}

#[test]
fn erofs_layers_overlay_to_the_merged_tree() {
    if tests::require_root("mounting EROFS layers and overlayfs with the host kernel").is_none() {
        return;
    }
    let mut image = None;
    let Some(p) = push_and_copy_back("fixture_images/erofs", &["erofs"], |layout, tree, dir| {
        let i =
            oci_images::erofs_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("erofs", &i.manifest);
        image = Some(i);
    }) else {
        return;
    };
    let image = image.unwrap();
    let mounts: Vec<tree::KernelMount> = image
        .layers
        .iter()
        .map(|l| {
            assert_eq!(l.media_type, media::EROFS_LAYER);
            tree::KernelMount::new(&p.back.blob_path(&l.digest), &[])
        })
        .collect();
    let target = p.dir.join("overlay");
    std::fs::create_dir_all(&target).unwrap();
    // lowerdir lists the top layer first.
    let lower: Vec<String> = mounts
        .iter()
        .rev()
        .map(|m| m.path().display().to_string())
        .collect();
    tests::run(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={}", lower.join(":")))
            .arg(&target),
    );
    let result = std::panic::catch_unwind(|| compare_trees(&p.tree.merged, &target));
    let _ = Command::new("umount").arg(&target).status();
    drop(mounts);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// The bootstrap layer copied back holds exactly `image/image.boot` = the built bootstrap.
fn pulled_bootstrap(p: &Pushed, image: &oci_images::NydusImage, name: &str) -> PathBuf {
    let boot = image.image.layers.last().unwrap();
    assert_eq!(boot.media_type, media::LAYER_TAR_GZIP);
    assert_eq!(
        boot.annotations
            .get(annotation::NYDUS_BOOTSTRAP)
            .map(String::as_str),
        Some("true")
    );
    let d = p.dir.join(name);
    untar(&p.back.blob_path(&boot.digest), &d, true);
    let entries: Vec<_> = walk(&d);
    assert_eq!(
        entries,
        vec![PathBuf::from("image"), PathBuf::from("image/image.boot")]
    );
    let got = d.join("image/image.boot");
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(&image.bootstrap).unwrap()
    );
    got
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = tree::snapshot_dir(d)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    v.sort();
    v
}

fn erofs_extract(boot: &Path, blob_dir: &Path, dest: &Path) {
    tests::run(
        Command::new(tree::erofs_cli())
            .arg("extract")
            .arg(boot)
            .arg("--blob-dir")
            .arg(blob_dir)
            .arg(dest),
    );
}

#[test]
fn nydus_images_read_back() {
    let mut images = Vec::new();
    let Some(p) = push_and_copy_back(
        "fixture_images/nydus",
        &["nydus", "nydus-flat"],
        |layout, tree, dir| {
            let two = oci_images::nydus_image(
                layout,
                &tree.layers(),
                &Platform::host(),
                &dir.join("work-2"),
            )
            .unwrap();
            layout.tag("nydus", &two.image.manifest);
            let flat = oci_images::nydus_image(
                layout,
                &[&tree.merged],
                &Platform::host(),
                &dir.join("work-1"),
            )
            .unwrap();
            layout.tag("nydus-flat", &flat.image.manifest);
            images = vec![two, flat];
        },
    ) else {
        return;
    };
    let (two, flat) = (&images[0], &images[1]);
    // Two layers with data: two blobs, their layers first, named by blob id.
    assert_eq!(two.blob_ids.len(), 2);
    assert_eq!(two.image.layers.len(), 3);
    for (l, id) in two.image.layers.iter().zip(&two.blob_ids) {
        assert_eq!(l.media_type, media::NYDUS_BLOB);
        assert_eq!(l.digest, format!("sha256:{id}"));
        assert_eq!(
            l.annotations
                .get(annotation::NYDUS_BLOB)
                .map(String::as_str),
            Some("true")
        );
    }
    let platform = two.image.manifest.platform.as_ref().unwrap();
    assert_eq!(
        platform.os_features,
        vec![oci_images::NYDUS_OS_FEATURE.to_string()]
    );

    // The flat image: nydus-image itself unpacks the pulled bootstrap and blob.
    let boot = pulled_bootstrap(&p, flat, "boot-flat");
    let tar = p.dir.join("flat.tar");
    let nydus = tests::require_tool("nydus-image").unwrap();
    tests::run(
        Command::new(nydus)
            .args(["unpack", "--log-level", "warn", "-b"])
            .arg(p.back.blob_path(&flat.blob_ids[0]))
            .arg("--output")
            .arg(&tar)
            .arg(&boot),
    );
    let out = p.dir.join("flat-unpacked");
    untar(&tar, &out, false);
    compare_trees(&p.tree.merged, &out);

    // The two-layer image: the reader over the pulled blobs shows the merged tree.
    let boot = pulled_bootstrap(&p, two, "boot-two");
    let out = p.dir.join("two-extracted");
    erofs_extract(&boot, &p.back.dir().join("blobs/sha256"), &out);
    compare_trees(&p.tree.merged, &out);
    let _ = &p.skopeo;
}

#[test]
fn nydus_zran_image_reads_back() {
    let mut image = None;
    let Some(p) = push_and_copy_back("fixture_images/zran", &["zran"], |layout, tree, dir| {
        let i = oci_images::nydus_zran_image(
            layout,
            &[&tree.merged],
            &Platform::host(),
            &dir.join("work"),
        )
        .unwrap();
        layout.tag("zran", &i.image.manifest);
        image = Some(i);
    }) else {
        return;
    };
    let image = image.unwrap();
    // The original .tar.gz (blob id = its sha256), its meta blob, the bootstrap layer.
    assert_eq!(image.blob_ids.len(), 1);
    let l = &image.image.layers;
    assert_eq!(l.len(), 3);
    assert_eq!(
        (l[0].media_type.as_str(), l[0].hex()),
        (media::LAYER_TAR_GZIP, image.blob_ids[0].as_str())
    );
    assert_eq!(
        l[0].annotations
            .get(annotation::NYDUS_BLOB)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(l[1].media_type, media::NYDUS_BLOB);
    // The pulled .tar.gz is a plain gzip tar of the tree.
    let untarred = p.dir.join("zran-untarred");
    untar(&p.back.blob_path(&l[0].digest), &untarred, true);
    compare_trees(&p.tree.merged, &untarred);
    // The reader over the pulled blobs shows the tree.
    let boot = pulled_bootstrap(&p, &image, "boot-zran");
    let out = p.dir.join("zran-extracted");
    erofs_extract(&boot, &p.back.dir().join("blobs/sha256"), &out);
    compare_trees(&p.tree.merged, &out);
}

#[test]
fn index_resolves_to_this_platform() {
    let mut want = None;
    let Some(p) = push_and_copy_back("fixture_images/index", &["multi"], |layout, tree, dir| {
        let host = oci_images::targz_image(
            layout,
            &tree.layers(),
            &Platform::host(),
            &dir.join("w-host"),
        )
        .unwrap();
        // The decoy: another tree, another architecture.
        let other_tree = dir.join("other-tree");
        std::fs::create_dir_all(&other_tree).unwrap();
        std::fs::write(other_tree.join("decoy"), b"wrong platform\n").unwrap();
        let other = oci_images::targz_image(
            layout,
            &[&other_tree],
            &Platform::other(),
            &dir.join("w-other"),
        )
        .unwrap();
        let nydus = oci_images::nydus_image(
            layout,
            &tree.layers(),
            &Platform::host(),
            &dir.join("w-nydus"),
        )
        .unwrap();
        let index = oci_images::index(layout, &[&host, &nydus.image, &other]);
        layout.tag("multi", &index);
        want = Some((index, host, other));
    }) else {
        return;
    };
    let (index, host, other) = want.unwrap();
    let reg = &p._reg;
    // The registry serves the index as pushed.
    assert_eq!(
        p.skopeo.inspect_raw(reg, "kinds:multi"),
        p.back.read_blob(&index.digest)
    );
    let v: serde_json::Value = serde_json::from_slice(&p.back.read_blob(&index.digest)).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["manifests"][1]["platform"]["os.features"][0],
        oci_images::NYDUS_OS_FEATURE
    );
    // skopeo resolves it to this machine's platform...
    let config = p.skopeo.inspect_config(reg, "kinds:multi");
    assert_eq!(config["architecture"], Platform::host().architecture);
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::from_slice::<serde_json::Value>(&p.back.read_blob(&host.config.digest))
            .unwrap()["rootfs"]["diff_ids"]
    );
    // ... and to the other one when told to.
    let mut c = p.skopeo.command();
    c.args([
        "--override-arch",
        &Platform::other().architecture,
        "--override-variant",
        &Platform::other().variant,
    ]);
    c.args(["inspect", "--config", "--tls-verify=false"])
        .arg(format!("docker://{}", reg.reference("kinds:multi")));
    let config: serde_json::Value = serde_json::from_str(&tests::run(&mut c)).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::from_slice::<serde_json::Value>(&p.back.read_blob(&other.config.digest))
            .unwrap()["rootfs"]["diff_ids"]
    );
}
