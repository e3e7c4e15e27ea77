//! erofs-reader: laziness (a counting source), random-range reads against the source
//! files, missing and tag-found blob devices, and guard rails against corrupt images.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use erofs_format::dirent::DirBlock;
use erofs_reader::{CountingSource, Error, ExtentTarget, Image, ImageBuilder, Nid, Piece};
use proptest::prelude::*;
use tests::tree;

struct Fixture {
    tree: PathBuf,
    /// Default layout.
    flat: PathBuf,
    /// `-Enoinline_data`: every file's data in whole blocks.
    noinline: PathBuf,
    /// `--chunksize=65536 --blobdev`.
    chunked: PathBuf,
    blob: PathBuf,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        tests::require_tool("mkfs.erofs")?;
        tests::require_root("device nodes and chown in the test tree")?;
        let (dir, src) = tree::scratch_tree("reader_guards");
        // Shared by every test of the binary: kept.
        let dir = dir.keep();
        let flat = dir.join("flat.erofs");
        tree::mkfs(&flat, &src, &[]);
        let noinline = dir.join("noinline.erofs");
        tree::mkfs(&noinline, &src, &["-Enoinline_data"]);
        let chunked = dir.join("chunked.erofs");
        let blob = dir.join("blob");
        tree::mkfs(
            &chunked,
            &src,
            &[
                "--chunksize=65536",
                &format!("--blobdev={}", blob.display()),
            ],
        );
        Some(Fixture {
            tree: src,
            flat,
            noinline,
            chunked,
            blob,
        })
    })
    .as_ref()
}

fn tiny() -> Vec<u8> {
    std::fs::read(tests::workspace_root().join("erofs-reader/tests/data/tiny.erofs")).unwrap()
}

/// Byte ranges of regular-file data on the primary device.
fn file_data_ranges(image: &Image) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut stack = vec![image.root_nid()];
    let mut seen = HashSet::new();
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) {
            continue;
        }
        let inode = image.inode(nid).unwrap();
        if inode.metadata().is_dir() {
            for e in image.read_dir_inode(&inode).unwrap() {
                let e = e.unwrap();
                if e.name() != b"." && e.name() != b".." {
                    stack.push(e.nid());
                }
            }
        } else if inode.metadata().is_file() {
            for e in image.extents(&inode, 0..u64::MAX).unwrap() {
                if let ExtentTarget::Device {
                    index: 0, offset, ..
                } = e.target
                {
                    out.push(offset..offset + e.len);
                }
            }
        }
    }
    out
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

#[test]
fn reader_stat_touches_no_file_data() {
    let Some(f) = fixture() else { return };
    for path in [&f.flat, &f.noinline] {
        let bytes = std::fs::read(path).unwrap();
        let plain = Image::from_source(bytes.clone()).unwrap();
        let data = file_data_ranges(&plain);
        assert!(data.len() > 400, "{} data ranges", data.len());
        let counting = std::sync::Arc::new(CountingSource::new(bytes));
        let image = Image::from_source(counting.clone()).unwrap();
        counting.reset();
        let md = image.metadata("/a/b/c/d/e/deep.txt").unwrap();
        assert_eq!(md.len(), 5);
        image
            .metadata("/bigdir/entry-00123-with-a-longer-name-to-fill-blocks")
            .unwrap();
        image.symlink_metadata("/link-long").unwrap();
        image.metadata("/large.bin").unwrap();
        let touched = counting.ranges();
        assert!(!touched.is_empty());
        assert!(
            touched.len() < 100,
            "{} reads for four stats",
            touched.len()
        );
        for t in &touched {
            for d in &data {
                assert!(
                    !overlaps(t, d),
                    "{}: stat read {t:?}, which holds file data {d:?}",
                    path.display()
                );
            }
        }
        // The check can fail: reading a file does touch its data.
        counting.reset();
        image.read("/large.bin").unwrap();
        let touched = counting.ranges();
        assert!(
            touched.iter().any(|t| data.iter().any(|d| overlaps(t, d))),
            "reading /large.bin touched no data?"
        );
    }
}

#[test]
fn reader_missing_blob_device() {
    let Some(f) = fixture() else { return };
    let image = Image::open(&f.chunked).unwrap();
    assert_eq!(image.devices().len(), 1);
    assert!(!image.devices()[0].present);
    // Metadata needs no blob.
    let names: Vec<_> = image
        .read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().name().to_vec())
        .collect();
    assert!(names.contains(&b"large.bin".to_vec()));
    assert_eq!(
        image.metadata("/large.bin").unwrap().len(),
        3 * 1024 * 1024 + 1234
    );
    // The chunk map needs no blob either.
    assert!(!image.extents("/large.bin", 0..100).unwrap().is_empty());
    match image.read("/large.bin") {
        Err(Error::MissingDevice { index: 1, .. }) => {}
        other => panic!("expected MissingDevice, got {other:?}"),
    }
    let io: std::io::Error = image.read("/large.bin").unwrap_err().into();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn reader_blob_dir_by_tag() {
    let Some(f) = fixture() else { return };
    let dir = tests::scratch_dir("reader_guards_blobdir");
    let mut bytes = std::fs::read(&f.chunked).unwrap();
    let image = Image::from_source(bytes.clone()).unwrap();
    let slot = image.superblock().device_table_offset() as usize;
    let tag = b"sha256-0123456789abcdef";
    bytes[slot..slot + tag.len()].copy_from_slice(tag);
    erofs_format::checksum::write_superblock_checksum(&mut bytes[..4096]).unwrap();
    let img = dir.join("tagged.erofs");
    std::fs::write(&img, &bytes).unwrap();
    let blobs = dir.join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    std::fs::copy(&f.blob, blobs.join("sha256-0123456789abcdef")).unwrap();
    let image = ImageBuilder::open(&img)
        .unwrap()
        .blob_dir(&blobs)
        .build()
        .unwrap();
    assert_eq!(image.devices()[0].tag, tag);
    assert!(image.devices()[0].present);
    assert_eq!(
        image.read("/large.bin").unwrap(),
        std::fs::read(f.tree.join("large.bin")).unwrap()
    );
    // A tag that is not a safe file name is refused.
    let bad = b"../etc/passwd";
    bytes[slot..slot + 64].fill(0);
    bytes[slot..slot + bad.len()].copy_from_slice(bad);
    erofs_format::checksum::write_superblock_checksum(&mut bytes[..4096]).unwrap();
    let err = ImageBuilder::new(bytes)
        .blob_dir(&blobs)
        .build()
        .unwrap_err();
    assert!(err.is_corrupt(), "{err}");
}

fn read_both(image: &Image, path: &str, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xAAu8; len];
    let n = image.read_at(path, off, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

const FILES: &[&str] = &[
    "/large.bin",
    "/sparse.bin",
    "/hard-1",
    "/sizes/size-04097",
    "/sizes/size-00511",
    "/empty",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn reader_read_at_matches_source(file in 0..FILES.len(), off in 0u64..4_300_000, len in 0usize..200_000) {
        let Some(f) = fixture() else { return Ok(()) };
        static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
        let images = IMAGES.get_or_init(|| vec![
            Image::open(&f.flat).unwrap(),
            Image::open(&f.noinline).unwrap(),
            Image::open_with_devices(&f.chunked, [&f.blob]).unwrap(),
        ]);
        let path = FILES[file];
        let src = std::fs::read(f.tree.join(&path[1..])).unwrap();
        let size = src.len() as u64;
        let off = if size == 0 { off % 10 } else { off % (size + 100) };
        let start = off.min(size) as usize;
        let end = (off.saturating_add(len as u64)).min(size) as usize;
        let want = &src[start..end.max(start)];
        for image in images {
            prop_assert_eq!(read_both(image, path, off, len), want);
        }
    }
}

#[test]
fn reader_for_each_piece_covers_the_file() {
    let Some(f) = fixture() else { return };
    let image = Image::open_with_devices(&f.chunked, [&f.blob]).unwrap();
    let inode = image.lookup("/sparse.bin").unwrap();
    let mut out = Vec::new();
    let mut holes = 0;
    image
        .for_each_piece(&inode, |p| {
            match p {
                Piece::Data(d) => out.extend_from_slice(d),
                Piece::Zeros(n) => {
                    holes += 1;
                    out.resize(out.len() + n as usize, 0)
                }
            }
            Ok::<(), Error>(())
        })
        .unwrap();
    assert!(holes > 0);
    assert_eq!(out, std::fs::read(f.tree.join("sparse.bin")).unwrap());
}

// ---- guard rails ----

fn fix_checksum(bytes: &mut [u8]) {
    let n = bytes.len().min(4096);
    erofs_format::checksum::write_superblock_checksum(&mut bytes[..n]).unwrap();
}

#[test]
fn reader_not_an_image() {
    assert!(
        Image::from_source(vec![0u8; 8192])
            .unwrap_err()
            .is_corrupt()
    );
    assert!(Image::from_source(Vec::new()).is_err());
    let t = tiny();
    assert!(Image::from_source(t[..1100].to_vec()).is_err());
    // Any byte of the superblock block changed: the checksum catches it.
    let mut bad = t.clone();
    bad[2000] ^= 1;
    assert!(Image::from_source(bad).unwrap_err().is_corrupt());
}

#[test]
fn reader_root_nid_outside() {
    let mut t = tiny();
    // rootnid_2b at superblock offset 14.
    t[1024 + 14..1024 + 16].copy_from_slice(&0xFFFFu16.to_le_bytes());
    fix_checksum(&mut t);
    match Image::from_source(t) {
        Err(Error::Corrupt { context, what, .. }) => {
            assert_eq!(context.nid, Some(0xFFFF), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Byte offset of the dirent for `name` in directory `dir` of an image whose directory
/// data sits on the primary device.
fn dirent_offset(image: &Image, dir: &str, name: &[u8]) -> usize {
    let inode = image.lookup(dir).unwrap();
    let bs = image.block_size();
    let size = inode.metadata().len();
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(bs) as usize;
        let mut block = vec![0u8; len];
        image.read_at(&inode, pos, &mut block).unwrap();
        let view = DirBlock::parse(&block).unwrap();
        if let Some(i) = view.iter().position(|e| e.name == name) {
            let ext = image.extents(&inode, pos..pos + 1).unwrap();
            let ExtentTarget::Device {
                index: 0, offset, ..
            } = ext[0].target
            else {
                panic!("directory not on the primary device");
            };
            return (offset + 12 * i as u64) as usize;
        }
        pos += bs;
    }
    panic!("{name:?} not in {dir}");
}

#[test]
fn reader_dirent_nid_outside() {
    let t = tiny();
    let image = Image::from_source(t.clone()).unwrap();
    let off = dirent_offset(&image, "/", b"hello.txt");
    let mut bad = t.clone();
    bad[off..off + 8].copy_from_slice(&(u64::MAX / 64).to_le_bytes());
    // The whole tiny image is block 0, which the superblock checksum covers.
    fix_checksum(&mut bad);
    let image = Image::from_source(bad).unwrap();
    match image.metadata("/hello.txt") {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("nid"), "{e}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The directory still lists.
    assert!(image.read_dir("/").unwrap().all(|e| e.is_ok()));
}

#[test]
fn reader_symlink_loops_and_chains() {
    let Some(_) = fixture() else { return };
    let dir = tests::scratch_dir("reader_guards_symlinks");
    let src = dir.join("tree");
    std::fs::create_dir(&src).unwrap();
    let sl = |t: &str, l: &str| std::os::unix::fs::symlink(t, src.join(l)).unwrap();
    sl("loop2", "loop1");
    sl("loop1", "loop2");
    sl("self/x", "self");
    sl("../../../../up", "up");
    std::fs::write(src.join("target"), b"end").unwrap();
    sl("target", "chain-0");
    for i in 1..=45 {
        sl(&format!("chain-{}", i - 1), &format!("chain-{i}"));
    }
    let img = dir.join("img.erofs");
    tree::mkfs(&img, &src, &[]);
    let image = Image::open(&img).unwrap();
    for p in ["/loop1", "/self", "/up", "/chain-45", "/loop1/x"] {
        match image.read(p) {
            Err(e @ Error::Corrupt { .. }) => {
                assert!(e.to_string().contains("symbolic links"), "{p}: {e}")
            }
            other => panic!("{p}: expected a symlink-loop error, got {other:?}"),
        }
    }
    // 39 hops are fine (Linux allows 40).
    assert_eq!(image.read("/chain-38").unwrap(), b"end");
    // Not following the last one.
    assert!(image.symlink_metadata("/loop1").unwrap().is_symlink());
}

#[test]
fn reader_absurd_size() {
    let Some(f) = fixture() else { return };
    let mut bytes = std::fs::read(&f.noinline).unwrap();
    let image = Image::from_source(bytes.clone()).unwrap();
    let inode = image.lookup("/large.bin").unwrap();
    let raw = inode.metadata().raw();
    assert!(
        raw.is_extended(),
        "mtimes with nanoseconds need extended inodes"
    );
    let size_at = raw.location as usize + 8;
    bytes[size_at..size_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let image = Image::from_source(bytes).unwrap();
    let inode = image.lookup("/large.bin").unwrap();
    assert_eq!(inode.metadata().len(), 1 << 62);
    let err = image.read_inode(&inode).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(image.extents(&inode, 0..u64::MAX).unwrap_err().is_corrupt());
    let mut buf = [0u8; 16];
    assert!(
        image
            .read_at(&inode, 1 << 61, &mut buf)
            .unwrap_err()
            .is_corrupt()
    );
    // A chunk-based file claiming 2^50 bytes: its chunk table cannot fit in the image,
    // so reading it fails before allocating anything.
    let mut bytes = std::fs::read(&f.chunked).unwrap();
    let image = Image::from_source(bytes.clone()).unwrap();
    let loc = image
        .lookup("/large.bin")
        .unwrap()
        .metadata()
        .raw()
        .location as usize;
    bytes[loc + 8..loc + 16].copy_from_slice(&(1u64 << 50).to_le_bytes());
    fix_checksum(&mut bytes);
    let image = Image::from_source(bytes).unwrap();
    let inode = image.lookup("/large.bin").unwrap();
    for e in [
        image.read_inode(&inode).unwrap_err(),
        image.extents(&inode, 0..u64::MAX).unwrap_err(),
    ] {
        assert!(
            e.is_corrupt() && e.to_string().contains("does not fit"),
            "{e}"
        );
    }
}

/// Walk everything, ignoring errors; returns the number of inodes reached.
fn walk_all(image: &Image) -> usize {
    let mut seen = HashSet::new();
    let mut stack = vec![image.root_nid()];
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) || seen.len() > 100_000 {
            continue;
        }
        let Ok(inode) = image.inode(nid) else {
            continue;
        };
        let _ = image.inode_xattrs(&inode);
        let md = inode.metadata();
        if md.is_dir() {
            if let Ok(rd) = image.read_dir_inode(&inode) {
                for e in rd.flatten() {
                    stack.push(e.nid());
                    let _ = image.lookup_in(&inode, e.name());
                }
            }
        } else if md.is_symlink() {
            let _ = image.read_link_inode(&inode);
        } else {
            let mut buf = vec![0u8; 65536];
            let mut off = 0;
            while let Ok(n) = image.read_at(&inode, off, &mut buf) {
                if n == 0 {
                    break;
                }
                off += n as u64;
            }
            let _ = image.extents(&inode, 0..u64::MAX);
        }
    }
    seen.len()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random damage to a real image's metadata never panics or hangs.
    #[test]
    fn reader_corruption_never_panics(flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..12)) {
        let mut t = tiny();
        for (at, v) in flips {
            // Keep the superblock checksum valid so the damage reaches the inodes.
            t[at] = v;
        }
        // Recompute the checksum where the damaged superblock still allows it (a bad
        // block size makes that impossible; the open must then fail cleanly).
        let _ = erofs_format::checksum::write_superblock_checksum(&mut t);
        if let Ok(image) = Image::from_source(t) {
            walk_all(&image);
            let _ = image.metadata("/dir/nested.txt");
            let _ = image.read("/link");
        }
    }
}

#[test]
fn reader_corruption_of_a_large_image_never_panics() {
    let Some(f) = fixture() else { return };
    let orig = std::fs::read(&f.flat).unwrap();
    let image = Image::from_source(orig.clone()).unwrap();
    let n = walk_all(&image);
    assert!(n > 400);
    // Metadata lives in the blocks holding inodes; damage it at a deterministic spread
    // of places (xorshift), many times.
    let meta_end = image
        .inode(image.root_nid())
        .unwrap()
        .metadata()
        .raw()
        .location as usize
        + 4096;
    let meta_end = meta_end.min(orig.len());
    let mut x = 0x1234_5678_9abc_def0u64;
    for _ in 0..200 {
        let mut bytes = orig.clone();
        for _ in 0..16 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = 1024 + (x as usize % (meta_end - 1024));
            bytes[at] = (x >> 40) as u8;
        }
        let n = bytes.len().min(4096);
        let _ = erofs_format::checksum::write_superblock_checksum(&mut bytes[..n]);
        if let Ok(image) = Image::from_source(bytes) {
            walk_all(&image);
        }
    }
}

#[test]
fn reader_image_is_shared_across_threads() {
    let Some(f) = fixture() else { return };
    let image = Image::open_with_devices(&f.chunked, [&f.blob]).unwrap();
    let want = std::fs::read(f.tree.join("large.bin")).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let image = image.clone();
            let want = &want;
            s.spawn(move || {
                for i in 0..20u64 {
                    let off = (t * 7919 + i * 104_729) % want.len() as u64;
                    let got = read_both(&image, "/large.bin", off, 5000);
                    let end = (off as usize + 5000).min(want.len());
                    assert_eq!(got, &want[off as usize..end]);
                }
            });
        }
    });
}

#[test]
fn reader_lookup_by_nid_and_as_inode() {
    let Some(f) = fixture() else { return };
    let image = Image::open(&f.flat).unwrap();
    let inode = image.lookup("/small.txt").unwrap();
    let nid: Nid = inode.nid();
    let mut buf = [0u8; 5];
    assert_eq!(image.read_at(nid, 0, &mut buf).unwrap(), 5);
    assert_eq!(&buf, b"hello");
    assert_eq!(image.read_at(&inode, 7, &mut buf).unwrap(), 5);
    assert_eq!(&buf, b"erofs");
    assert_eq!(
        image
            .read_at(Path::new("/small.txt"), 12, &mut buf)
            .unwrap(),
        1
    );
    let p = PathBuf::from("/small.txt");
    assert_eq!(image.read_at(&p, 13, &mut buf).unwrap(), 0);
    // A primary source that is a plain File (copying reads) sees the same.
    let file = std::fs::File::open(&f.flat).unwrap();
    let by_file = Image::from_source(file).unwrap();
    assert_eq!(
        by_file.read("/a/b/file").unwrap(),
        image.read("/a/b/file").unwrap()
    );
    assert!(by_file.primary().bytes(0, 10).is_none());
}

/// Every regular file of `image` (path, nid).
fn regular_files(image: &Image) -> Vec<(PathBuf, Nid)> {
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/"), image.root_nid())];
    while let Some((p, nid)) = stack.pop() {
        let inode = image.inode(nid).unwrap();
        for e in image.read_dir_inode(&inode).unwrap() {
            let e = e.unwrap();
            if e.name() == b"." || e.name() == b".." {
                continue;
            }
            let child = p.join(e.file_name());
            match e.file_type() {
                erofs_reader::FileType::Directory => stack.push((child, e.nid())),
                erofs_reader::FileType::Regular => out.push((child, e.nid())),
                _ => {}
            }
        }
    }
    out
}

/// Rewrite every chunk index `(device 1, blk)` as `(device 0, blk + mapped_blkaddr)`: the
/// unified address space, where the device is found by its `mapped_blkaddr` window (as the
/// kernel's `erofs_map_dev` does). Returns the patched image.
fn to_unified(bytes: &[u8]) -> Vec<u8> {
    let image = Image::from_source(bytes.to_vec()).unwrap();
    let mapped = image.devices()[0].mapped_blkaddr;
    assert!(
        mapped > 0,
        "mkfs.erofs --blobdev maps the blob at a unified address"
    );
    let mut out = bytes.to_vec();
    let mut patched = 0;
    let mut nids: Vec<Nid> = regular_files(&image).into_iter().map(|(_, n)| n).collect();
    // Hard links: patch each inode once.
    nids.sort();
    nids.dedup();
    for nid in nids {
        let inode = image.inode(nid).unwrap();
        let Some((table, format, count)) = inode.metadata().raw().chunk_table().unwrap() else {
            continue;
        };
        assert!(format.has_indexes());
        for i in 0..count as usize {
            let at = table as usize + 8 * i;
            let dev = u16::from_le_bytes([out[at + 2], out[at + 3]]);
            let blk = u32::from_le_bytes(out[at + 4..at + 8].try_into().unwrap());
            if blk == u32::MAX {
                continue;
            }
            assert_eq!(dev, 1);
            out[at + 2..at + 4].copy_from_slice(&0u16.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&(blk + mapped as u32).to_le_bytes());
            patched += 1;
        }
    }
    assert!(patched > 50, "{patched} chunks patched");
    fix_checksum(&mut out);
    out
}

#[test]
fn reader_unified_addressing() {
    let Some(f) = fixture() else { return };
    let dir = tests::scratch_dir("reader_guards_unified");
    let unified = to_unified(&std::fs::read(&f.chunked).unwrap());
    let img = dir.join("unified.erofs");
    std::fs::write(&img, &unified).unwrap();
    let image = Image::open_with_devices(&img, [&f.blob]).unwrap();
    let ext = image.extents("/large.bin", 0..u64::MAX).unwrap();
    assert!(
        ext.iter()
            .all(|e| matches!(e.target, ExtentTarget::Device { index: 1, .. })),
        "{ext:?}"
    );
    let want = tree::snapshot_dir(&f.tree);
    let got = tree::snapshot_image(&image);
    tree::compare(&want, &got, &tree::Compare::default()).unwrap();
    // The kernel reads the same image the same way.
    let mount = tree::KernelMount::new(&img, std::slice::from_ref(&f.blob));
    let kernel = tree::snapshot_dir(mount.path());
    tree::compare(&kernel, &got, &tree::Compare::default()).unwrap();
}

#[test]
fn reader_flat_devices() {
    let Some(f) = fixture() else { return };
    // flatdev: the blob lives inside the primary device at mapped_blkaddr.
    let mut bytes = std::fs::read(&f.chunked).unwrap();
    let image = Image::from_source(bytes.clone()).unwrap();
    let at = (image.devices()[0].mapped_blkaddr * image.block_size()) as usize;
    assert!(at >= bytes.len(), "blob window overlaps the primary device");
    bytes.resize(at, 0);
    bytes.extend_from_slice(&std::fs::read(&f.blob).unwrap());
    let image = ImageBuilder::new(bytes).flat_devices(true).build().unwrap();
    assert_eq!(
        image.read("/large.bin").unwrap(),
        std::fs::read(f.tree.join("large.bin")).unwrap()
    );
    assert_eq!(
        image.read("/sparse.bin").unwrap(),
        std::fs::read(f.tree.join("sparse.bin")).unwrap()
    );
}
