//! Compressed images: random byte ranges (proptest) against the source files, the extent
//! size limit, and corrupted indexes (a pcluster that decodes to the wrong length is an
//! error for the reader and EIO for the kernel).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use erofs_format::compress::{FULL_INDEX_OFFSET, LclusterIndex, LclusterType};
use erofs_reader::{Error, Image};
use proptest::prelude::*;
use zerocopy::{FromBytes, IntoBytes};

use tests::text;

/// Source files: compressible, random, mixed, around block boundaries.
fn sources() -> Vec<(&'static str, Vec<u8>)> {
    let mut mixed = Vec::new();
    for i in 0..12u64 {
        if i % 3 == 0 {
            mixed.extend(tests::tree::pattern(i + 7, 9000 + i as usize * 1001));
        } else {
            mixed.extend(text(i, 20_000 + i as usize * 333));
        }
    }
    vec![
        ("text.txt", text(1, 3 * 1024 * 1024 + 77)),
        ("rand.bin", tests::tree::pattern(5, 700_001)),
        ("mixed.bin", mixed),
        ("block.txt", text(2, 4096)),
        ("block-1.txt", text(3, 4095)),
        ("block+1.txt", text(4, 4097)),
        ("prefix.txt", text(1, 100_003)),
    ]
}

struct Built {
    /// Removed with the build (kept when a test fails).
    _scratch: tests::Scratch,
    image: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

fn build(name: &str, args: &[&str], files: Vec<(&'static str, Vec<u8>)>) -> Option<Built> {
    tests::require_tool("mkfs.erofs")?;
    let dir = tests::scratch_dir(&format!("reader_compress_ranges/{name}"));
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    for (n, d) in &files {
        std::fs::write(src.join(n), d).unwrap();
    }
    let image = dir.join("image.erofs");
    let mut argv = vec!["-T0", "--all-root"];
    argv.extend_from_slice(args);
    tests::tree::mkfs(&image, &src, &argv);
    Some(Built {
        _scratch: dir,
        image,
        files,
    })
}

fn check_ranges(b: &Built, image: &Image, file: usize, offset: u64, len: usize) {
    let (name, data) = &b.files[file % b.files.len()];
    let inode = image.lookup(format!("/{name}")).unwrap();
    let offset = if data.is_empty() {
        0
    } else {
        offset % (data.len() as u64 + 10)
    };
    let mut buf = vec![0xAAu8; len];
    let n = image.read_at(&inode, offset, &mut buf).unwrap();
    let start = (offset as usize).min(data.len());
    let end = (start + len).min(data.len());
    assert_eq!(n, end - start, "{name} @ {offset}+{len}");
    assert!(
        buf[..n] == data[start..end],
        "{name} @ {offset}+{len}: bytes differ"
    );
}

macro_rules! range_test {
    ($test:ident, $name:literal, $args:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn $test(file in 0usize..16, offset in 0u64..4_000_000, len in 0usize..300_000) {
                static IMG: OnceLock<Option<(Built, Image)>> = OnceLock::new();
                let Some((b, image)) = IMG.get_or_init(|| {
                    let b = build($name, $args, sources())?;
                    let image = Image::open(&b.image).unwrap();
                    Some((b, image))
                }) else {
                    return Ok(());
                };
                check_ranges(b, image, file, offset, len);
            }
        }
    };
}

range_test!(
    ranges_lz4hc_big_tail,
    "lz4hc",
    &["-zlz4hc", "-C65536", "-Eztailpacking"]
);
range_test!(
    ranges_lzma_fragments,
    "lzma",
    &["-zlzma", "-C16384", "-Efragments,dedupe"]
);
range_test!(
    ranges_deflate_1m,
    "deflate",
    &["-zdeflate", "-C1048576", "-Ededupe"]
);
range_test!(
    ranges_zstd_allfrag,
    "zstd",
    &["-zzstd", "-C32768", "-Eall-fragments"]
);

/// The absolute offset of full lcluster index `lcn` of `inode`.
fn full_index_pos(image: &Image, path: &str, lcn: u64) -> (u64, erofs_reader::Inode) {
    let inode = image.lookup(path).unwrap();
    let raw = inode.metadata().raw();
    assert_eq!(
        raw.layout,
        erofs_reader::DataLayout::CompressedFull,
        "{path}"
    );
    let header = raw.meta_end().unwrap().next_multiple_of(8);
    (header + FULL_INDEX_OFFSET + 8 * lcn, inode)
}

#[test]
fn extent_size_limit_is_configurable() {
    let Some(b) = build("limit", &["-zlz4hc", "-C1048576"], sources()) else {
        return;
    };
    let image = Image::open(&b.image).unwrap();
    let inode = image.lookup("/text.txt").unwrap();
    let longest = image
        .compressed_extents(&inode)
        .unwrap()
        .iter()
        .map(|e| e.len)
        .max()
        .unwrap();
    assert!(
        longest > 65536,
        "1 MiB pclusters decode to more than 64 KiB"
    );
    assert_eq!(image.max_extent_size(), 12 << 20);
    image.set_max_extent_size(65536);
    let err = image.read("/text.txt").unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("65536"), "{err}");
    image.set_max_extent_size(u64::MAX); // clamped to the kernel's 12 MiB
    assert_eq!(image.max_extent_size(), 12 << 20);
    assert_eq!(image.read("/text.txt").unwrap(), b.files[0].1);
}

/// Bump the cluster offset of the second HEAD of a file with full indexes by one: the
/// first extent now claims one byte more than its pcluster decodes to. The reader
/// reports corruption; the kernel answers EIO.
#[test]
fn wrong_decoded_length_is_corrupt() {
    if tests::require_root("kernel mount").is_none() {
        return;
    }
    let Some(b) = build(
        "wrong-length",
        &["-zlz4hc", "-C4096", "-Elegacy-compress"],
        sources(),
    ) else {
        return;
    };
    let mut bytes = std::fs::read(&b.image).unwrap();
    let image = Image::from_source(bytes.clone()).unwrap();
    let inode = image.lookup("/text.txt").unwrap();
    let exts = image.compressed_extents(&inode).unwrap();
    let second = exts[1].file_offset;
    let lcn = second >> 12;
    let (pos, _) = full_index_pos(&image, "/text.txt", lcn);
    let idx = LclusterIndex::mut_from_bytes(&mut bytes[pos as usize..pos as usize + 8]).unwrap();
    assert_ne!(idx.lcluster_type(), LclusterType::NonHead);
    let co = idx.di_clusterofs.get();
    assert!(u32::from(co) + 1 < 4096, "room to move the HEAD");
    idx.di_clusterofs.set(co + 1);
    erofs_format::checksum::write_superblock_checksum(&mut bytes[..4096]).unwrap();
    let bad = Image::from_source(bytes.clone()).unwrap();
    let inode = bad.lookup("/text.txt").unwrap();
    let mut buf = vec![0u8; 4096];
    let err = bad.read_at(&inode, 0, &mut buf).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(err.to_string().contains("decodes to"), "{err}");
    // The other files still read.
    assert_eq!(bad.read("/mixed.bin").unwrap(), b.files[2].1);

    let path = b.image.with_extension("bad.erofs");
    std::fs::write(&path, &bytes).unwrap();
    let mount = tests::tree::KernelMount::new(&path, &[]);
    let e = std::fs::read(mount.path().join("text.txt")).unwrap_err();
    // EFSCORRUPTED (EUCLEAN) from the decompressor, or EIO.
    assert!(matches!(e.raw_os_error(), Some(117 | 5)), "kernel: {e}");
    assert_eq!(
        std::fs::read(mount.path().join("mixed.bin")).unwrap(),
        b.files[2].1
    );
}

/// Rewrite a 13 MiB file's full indexes into one extent: the reader refuses it before
/// allocating anything, like the kernel (which reads at most 12 MiB per extent).
#[test]
fn huge_extent_is_refused() {
    let files = vec![("big.txt", text(9, 13 << 20))];
    let Some(b) = build("huge", &["-zlz4", "-Elegacy-compress"], files) else {
        return;
    };
    let mut bytes = std::fs::read(&b.image).unwrap();
    let image = Image::from_source(bytes.clone()).unwrap();
    let (pos0, inode) = full_index_pos(&image, "/big.txt", 0);
    let total = inode.metadata().len().div_ceil(4096);
    for lcn in 1..total {
        let p = (pos0 + 8 * lcn) as usize;
        let idx = LclusterIndex::mut_from_bytes(&mut bytes[p..p + 8]).unwrap();
        // NONHEAD, delta[0] = 1 (back to the previous lcluster), delta[1] = 1.
        idx.di_advise.set(LclusterType::NonHead as u16);
        idx.di_clusterofs.set(0);
        idx.di_u.set(1 | (1 << 16));
    }
    assert_eq!(&bytes[pos0 as usize..pos0 as usize + 2], 1u16.as_bytes());
    erofs_format::checksum::write_superblock_checksum(&mut bytes[..4096]).unwrap();
    let bad = Image::from_source(bytes).unwrap();
    let inode = bad.lookup("/big.txt").unwrap();
    let err = bad.read_at(&inode, 0, &mut [0u8; 16]).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("more than"), "{err}");
    let err = bad.read("/big.txt").unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

/// `erofs fsck` reports the corruption (and exits non-zero).
#[test]
fn fsck_reports_wrong_length() {
    let Some(b) = build(
        "fsck-wrong-length",
        &["-zlz4", "-C4096", "-Elegacy-compress"],
        sources(),
    ) else {
        return;
    };
    let mut bytes = std::fs::read(&b.image).unwrap();
    let image = Image::from_source(bytes.clone()).unwrap();
    let inode = image.lookup("/mixed.bin").unwrap();
    let exts = image.compressed_extents(&inode).unwrap();
    let e = exts
        .iter()
        .skip(1)
        .find(|e| e.file_offset % 4096 < 4000)
        .unwrap();
    let (pos, _) = full_index_pos(&image, "/mixed.bin", e.file_offset >> 12);
    let idx = LclusterIndex::mut_from_bytes(&mut bytes[pos as usize..pos as usize + 8]).unwrap();
    idx.di_clusterofs.set(idx.di_clusterofs.get() + 1);
    // Metadata in block 0 is covered by the superblock checksum.
    erofs_format::checksum::write_superblock_checksum(&mut bytes[..4096]).unwrap();
    let path: &Path = &b.image.with_extension("bad.erofs");
    std::fs::write(path, &bytes).unwrap();
    let out = Command::new(tests::tree::erofs_cli())
        .arg("fsck")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "fsck passed a corrupt image:\n{text}"
    );
    assert!(text.contains("mixed.bin"), "{text}");
}

/// Read everything an image shows, ignoring errors (they are expected on damaged images).
fn read_all(image: &Image) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![(image.root_nid(), 0u32)];
    let mut seen = std::collections::HashSet::new();
    while let Some((nid, depth)) = stack.pop() {
        if depth > 8 || !seen.insert(nid) {
            continue;
        }
        let Ok(inode) = image.inode(nid) else {
            continue;
        };
        if inode.metadata().is_dir() {
            if let Ok(rd) = image.read_dir_inode(&inode) {
                for e in rd.take(2000).flatten() {
                    if e.name() != b"." && e.name() != b".." {
                        stack.push((e.nid(), depth + 1));
                    }
                }
            }
            continue;
        }
        let _ = image.compressed_extents(&inode);
        let mut buf = vec![0u8; 70_000];
        for off in [0u64, 4095, 65_536, 1 << 20] {
            if let Ok(n) = image.read_at(&inode, off, &mut buf) {
                total += n as u64;
            }
        }
        let _ = image.for_each_piece(&inode, |p| {
            if let erofs_reader::Piece::Data(d) = p {
                total += d.len() as u64;
            }
            Ok::<(), Error>(())
        });
    }
    total
}

/// Flip random bytes of the metadata of compressed images (map headers, indexes, extent
/// records, inline pclusters, inodes), keep the superblock checksum valid, and read
/// everything: errors are fine, panics and hangs are not.
#[test]
fn corrupted_metadata_never_panics() {
    let cases: [(&str, &[&str]); 4] = [
        ("fuzz-lz4", &["-zlz4hc", "-C16384", "-Eztailpacking"]),
        ("fuzz-full", &["-zlz4", "-Elegacy-compress", "-Ededupe"]),
        ("fuzz-zstd", &["-zzstd", "-C8192", "-Efragments", "--zD"]),
        ("fuzz-48bit", &["-zlzma", "-E48bit,ztailpacking"]),
    ];
    let small: Vec<(&'static str, Vec<u8>)> = sources()
        .into_iter()
        .map(|(n, d)| (n, d[..d.len().min(150_000)].to_vec()))
        .collect();
    for (name, args) in cases {
        let Some(b) = build(name, args, small.clone()) else {
            return;
        };
        let clean = std::fs::read(&b.image).unwrap();
        // Metadata lives before the first data block of the largest file; corrupt the
        // whole image except block 0's superblock fields, biased to the metadata area.
        let meta_end = {
            let image = Image::from_source(clean.clone()).unwrap();
            let inode = image.lookup("/text.txt").unwrap();
            let first = image.compressed_extents(&inode).unwrap();
            match first[0].source {
                erofs_reader::ExtentSource::Pcluster { offset, .. } => offset as usize,
                _ => clean.len(),
            }
            .clamp(4096, clean.len())
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let mut rnd = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let iters: usize = std::env::var("EROFS_CORRUPT_ITERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(150);
            for _ in 0..iters {
                let mut bytes = clean.clone();
                for _ in 0..1 + rnd() % 4 {
                    let at = 1024 + 128 + (rnd() as usize) % (meta_end - 1024 - 128);
                    bytes[at] ^= 1 << (rnd() % 8);
                }
                let _ = erofs_format::checksum::write_superblock_checksum(&mut bytes[..4096]);
                if let Ok(image) = Image::from_source(bytes) {
                    read_all(&image);
                }
            }
            tx.send(()).unwrap();
        });
        match rx.recv_timeout(std::time::Duration::from_secs(300)) {
            Ok(()) => worker.join().unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // The worker panicked: report its panic.
                worker.join().unwrap();
            }
            Err(e) => panic!("{name}: reading corrupted images hangs ({e})"),
        }
    }
}

/// A read decodes only the pclusters its range touches: with a counting source, the
/// only pcluster bytes read are those of the extents holding the range, and a second read
/// of the same range is served by the cache (no pcluster bytes read at all).
#[test]
fn reads_touch_only_their_pclusters() {
    let Some(b) = build("lazy", &["-zlz4hc", "-C16384", "-Eztailpacking"], sources()) else {
        return;
    };
    let bytes = std::fs::read(&b.image).unwrap();
    let plain = Image::from_source(bytes.clone()).unwrap();
    // Every stored pcluster of every file.
    let mut pclusters: Vec<std::ops::Range<u64>> = Vec::new();
    for (name, _) in &b.files {
        let inode = plain.lookup(format!("/{name}")).unwrap();
        if !inode.metadata().layout().is_compressed() {
            continue;
        }
        for e in plain.compressed_extents(&inode).unwrap() {
            if let erofs_reader::ExtentSource::Pcluster {
                offset,
                len,
                inline: false,
                ..
            } = e.source
            {
                pclusters.push(offset..offset + len);
            }
        }
    }
    let inode = plain.lookup("/text.txt").unwrap();
    let exts = plain.compressed_extents(&inode).unwrap();
    assert!(exts.len() > 20, "{} extents", exts.len());
    let counting = std::sync::Arc::new(erofs_reader::CountingSource::new(bytes));
    let image = Image::from_source(counting.clone()).unwrap();
    let inode = image.lookup("/text.txt").unwrap();
    let want = &b.files[0].1;
    let overlaps =
        |a: &std::ops::Range<u64>, b: &std::ops::Range<u64>| a.start < b.end && b.start < a.end;
    for k in [3usize, 10, exts.len() / 2] {
        // A range from inside extent k into extent k + 1.
        let start = exts[k].file_offset + exts[k].len - 100;
        let mut buf = vec![0u8; 300];
        let allowed: Vec<std::ops::Range<u64>> = exts[k..k + 2]
            .iter()
            .map(|e| match e.source {
                erofs_reader::ExtentSource::Pcluster { offset, len, .. } => offset..offset + len,
                _ => 0..0,
            })
            .collect();
        counting.reset();
        image.read_at(&inode, start, &mut buf).unwrap();
        assert_eq!(&buf[..], &want[start as usize..start as usize + 300]);
        let touched = counting.ranges();
        let mut hit = 0;
        for t in &touched {
            for p in &pclusters {
                if overlaps(t, p) {
                    assert!(
                        allowed.contains(p),
                        "read of {start}+300 touched pcluster {p:?}, not one of {allowed:?}"
                    );
                    hit += 1;
                }
            }
        }
        assert!(hit >= 2, "read of {start}+300 touched {hit} pclusters");
        // Again: decoded extents come from the cache.
        counting.reset();
        image.read_at(&inode, start, &mut buf).unwrap();
        assert_eq!(&buf[..], &want[start as usize..start as usize + 300]);
        for t in counting.ranges() {
            assert!(
                !pclusters.iter().any(|p| overlaps(&t, p)),
                "cached read touched pcluster data at {t:?}"
            );
        }
    }
}
