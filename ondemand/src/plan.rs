//! Image-aware prefetch plans: which blob ranges hold the data of a list of paths, read from
//! the image's metadata with `erofs-reader` (the chunk map), keyed by the cookie key each blob
//! has in the kernel's OPEN.
//!
//! Cookie keys (`kernel-abi.md` §2.12): the primary device (the bootstrap) is opened under the
//! mount's `fsid`; extra device `k` under the k-th `device=` mount option if the mount gave
//! them, else under the device slot's tag (the blob id for Nydus).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ondemand::{PrefetchConfig, plan};
//! let image = plan::open_image("/var/lib/blobs".as_ref(), "myimage")?;
//! let ranges = plan::ranges_for_paths(&image, b"myimage", &[], ["/usr/bin", "/etc/passwd"])?;
//! let mut config = PrefetchConfig::listed_only();
//! for (cookie_key, set) in &ranges {
//!     config = config.with_ranges(cookie_key, set.ranges().iter().cloned());
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::Path;

use erofs_reader::nydus::{RafsMeta, is_rafs_bootstrap};
use erofs_reader::{ExtentTarget, FileType, Image, ImageBuilder, Inode, Nid};

use crate::ranges::RangeSet;

/// Most files a directory walk visits, and how deep it goes.
const MAX_FILES: usize = 1 << 20;
const MAX_DEPTH: usize = 256;

/// Open the image whose bootstrap is `blob_dir/fsid`, finding its extra devices by tag in
/// `blob_dir` (opened lazily: only metadata is read here).
///
/// # Errors
///
/// The bootstrap cannot be opened or is not a valid image.
pub fn open_image(blob_dir: &Path, fsid: &str) -> erofs_reader::Result<Image> {
    ImageBuilder::open(blob_dir.join(fsid))?
        .blob_dir(blob_dir)
        .build()
}

/// The blob ranges named by the RAFS v6 prefetch table of the bootstrap `blob_dir/fsid`
/// (the files and directories `nydus-image --prefetch-policy fs` recorded), keyed like
/// [`ranges_for_paths`]: the blob id for each blob. Empty when the image is not a RAFS v6
/// bootstrap or its prefetch table is empty.
///
/// # Errors
///
/// The bootstrap cannot be opened, a prefetch nid is not an inode, or corrupt metadata.
pub fn rafs_prefetch_ranges(
    blob_dir: &Path,
    fsid: &str,
) -> erofs_reader::Result<HashMap<Vec<u8>, RangeSet>> {
    let image = open_image(blob_dir, fsid)?;
    let mut out: HashMap<Vec<u8>, RangeSet> = HashMap::new();
    let Some(meta) = RafsMeta::from_image(&image)? else {
        return Ok(out);
    };
    let mut files = 0usize;
    for &nid in meta.prefetch_nids() {
        let inode = image.inode(Nid(nid))?;
        add_inode(
            &image,
            &inode,
            fsid.as_bytes(),
            &[],
            &mut out,
            &mut files,
            0,
        )?;
    }
    Ok(out)
}

/// The RAFS v6 bootstraps in `blob_dir` (file names whose first block is an EROFS
/// superblock with the RAFS v6 compat bit), sorted by name. Unreadable entries are skipped.
pub fn rafs_bootstraps(blob_dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(blob_dir) else {
        return names;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let mut head = vec![0u8; 4096];
        let Ok(file) = std::fs::File::open(entry.path()) else {
            continue;
        };
        use std::os::unix::fs::FileExt;
        if file.read_exact_at(&mut head, 0).is_ok() && is_rafs_bootstrap(&head) {
            names.push(name);
        }
    }
    names.sort();
    names
}

/// The blob ranges that hold the data of `paths` (files, or directories walked recursively;
/// symlinks are followed for the named paths only), by cookie key: `fsid` for the primary
/// device, `device_names[k-1]` (or else the device tag) for extra device `k`. Holes need no
/// fetching and are left out; compressed files are skipped with a warning (their extents are
/// not mapped by the reader yet).
///
/// # Errors
///
/// A path that does not resolve, or corrupt metadata.
pub fn ranges_for_paths<P: AsRef<Path>>(
    image: &Image,
    fsid: &[u8],
    device_names: &[Vec<u8>],
    paths: impl IntoIterator<Item = P>,
) -> erofs_reader::Result<HashMap<Vec<u8>, RangeSet>> {
    let mut out: HashMap<Vec<u8>, RangeSet> = HashMap::new();
    let mut files = 0usize;
    for path in paths {
        let inode = image.lookup(path.as_ref())?;
        add_inode(image, &inode, fsid, device_names, &mut out, &mut files, 0)?;
    }
    Ok(out)
}

fn add_inode(
    image: &Image,
    inode: &Inode,
    fsid: &[u8],
    device_names: &[Vec<u8>],
    out: &mut HashMap<Vec<u8>, RangeSet>,
    files: &mut usize,
    depth: usize,
) -> erofs_reader::Result<()> {
    match inode.metadata().file_type() {
        FileType::Directory if depth < MAX_DEPTH => {
            for entry in image.read_dir_inode(inode)? {
                let entry = entry?;
                if entry.name() == b"." || entry.name() == b".." {
                    continue;
                }
                if *files >= MAX_FILES {
                    break;
                }
                let child = image.inode(entry.nid())?;
                add_inode(image, &child, fsid, device_names, out, files, depth + 1)?;
            }
        }
        FileType::Regular => {
            *files += 1;
            let len = inode.metadata().len();
            let extents = match image.extents(inode, 0..len) {
                Ok(e) => e,
                Err(e @ erofs_reader::Error::Unsupported { .. }) => {
                    log::warn!("prefetch plan: nid {}: {e}", inode.nid().0);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            for extent in extents {
                if let ExtentTarget::Device { index, tag, offset } = extent.target {
                    let key = if index == 0 {
                        fsid.to_vec()
                    } else {
                        device_names
                            .get(usize::from(index) - 1)
                            .cloned()
                            .unwrap_or(tag)
                    };
                    let end = offset.saturating_add(extent.len);
                    out.entry(key).or_default().insert(offset..end);
                }
            }
        }
        _ => {}
    }
    Ok(())
}
