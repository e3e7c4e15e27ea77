//! The Debian rootfs fixture of `benches/container_start.rs` (`tests::rootfs`), on a tiny
//! package set: the resolver against the host's real apt lists, then a download and unpack
//! of two small packages (`apt-get download`, `dpkg-deb -x`: a few tens of KiB).

use tests::rootfs::{AptCache, DebianRootfs, closure};

#[test]
fn closure_from_apt_resolves_virtual_names() {
    if tests::require_package_tool("apt-cache", "apt").is_none() {
        return;
    }
    // base-files pre-depends on the virtual `awk`: Debian's `required` provider is mawk
    // (gawk and original-awk are `optional`).
    let pkgs = closure(&["base-files"], &mut AptCache::default()).unwrap();
    let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"base-files") && names.contains(&"mawk"),
        "{names:?}"
    );
    assert!(!names.contains(&"gawk"), "{names:?}");
    assert!(pkgs.iter().all(|p| !p.version.is_empty()), "{pkgs:?}");
    // mawk needs libc6, whose closure is there too.
    assert!(names.contains(&"libc6"), "{names:?}");
    assert!(closure(&["no-such-package-erofs-rs"], &mut AptCache::default()).is_err());
}

#[test]
fn tiny_rootfs_is_unpacked_merged_usr() {
    if tests::require_root("dpkg-deb -x keeps owners").is_none() {
        return;
    }
    // Two packages without dependencies.
    let cache = tests::scratch_dir("fixture_rootfs");
    let Some(root) = DebianRootfs::build_in(&cache, &["netbase", "media-types"]) else {
        return;
    };
    assert_eq!(root.packages.len(), 2, "{:?}", root.packages);
    assert!(
        root.packages[0].starts_with("media-types="),
        "{:?}",
        root.packages
    );
    let services = std::fs::read_to_string(root.dir.join("etc/services")).unwrap();
    assert!(
        services.contains("http\t\t80/tcp"),
        "netbase's services file"
    );
    assert!(root.dir.join("etc/mime.types").is_file());
    for d in ["bin", "sbin", "lib", "lib64"] {
        let link = std::fs::read_link(root.dir.join(d)).unwrap();
        assert_eq!(link.to_str(), Some(format!("usr/{d}").as_str()));
    }
    assert!(
        root.bytes > 10_000 && root.bytes < 1 << 20,
        "{}",
        root.bytes
    );
    // A second build reuses the cached tree.
    let again = DebianRootfs::build_in(&cache, &["media-types", "netbase"]).unwrap();
    assert_eq!((again.dir, again.bytes), (root.dir, root.bytes));
}
