//! Nydus RAFS v6 images built by `nydus-image create -t dir-rafs -v 6`, read through
//! `erofs_reader::nydus` (blob sources that decompress the stored blobs on demand):
//!
//! - each compressor (none, lz4_block, zstd) with chunk sizes 0x1000, 0x10000 and 0x100000
//!   and both digesters (blake3, sha256): `erofs extract --blob-dir` recreates the source tree
//!   byte for byte (and with its metadata), and `erofs fsck --blob-dir` decodes every chunk
//!   and checks every digest;
//! - `--features blob-toc` blobs (tar headers, a chunk-digest array and a ToC after the meta);
//! - `--prefetch-policy fs`: `erofs sb` lists the prefetch table with the paths it names;
//! - two images sharing a blob, through `--parent-bootstrap` and `--chunk-dict`: both
//!   extract equal to their trees from one blob directory, and the shared blob is read by both;
//! - a flipped byte in a stored blob: `erofs fsck` reports it (a digest mismatch for a raw
//!   chunk, a decode error or digest mismatch for a compressed one) and exits 1;
//! - laziness: reading one small file decodes only the chunks it lives in;
//! - `--blob-inline-meta` blobs (with and without a ToC): `erofs extract BLOB` and
//!   `erofs fsck BLOB --blob-dir` read the bootstrap the blob carries.

use std::path::{Path, PathBuf};
use std::process::Command;

use erofs_reader::ImageBuilder;
use erofs_reader::nydus::{BlobCompressor, RafsMeta};
use tests::tree::{self, Compare, TreeOptions};

/// A built image: the bootstrap, its blob directory and the source tree.
struct Built {
    /// Removed with the build (kept when a test fails).
    _scratch: tests::Scratch,
    boot: PathBuf,
    blobs: PathBuf,
    src: PathBuf,
}

/// `nydus-image create -t dir-rafs -v 6 ARGS -D blobs -B NAME src`, with `stdin` (the prefetch
/// list) when given.
fn nydus_create(src: &Path, blobs: &Path, boot: &Path, args: &[&str], stdin: Option<&str>) {
    nydus_create_to(src, blobs, Some(boot), args, stdin)
}

/// As [`nydus_create`]; without `boot` no `-B` (for `--blob-inline-meta`).
fn nydus_create_to(
    src: &Path,
    blobs: &Path,
    boot: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
) {
    let mut create = tests::nydus_image::Create::new(src, blobs).args(args);
    if let Some(b) = boot {
        create = create.bootstrap(b);
    }
    if let Some(list) = stdin {
        create = create.prefetch(list);
    }
    create.run().expect("nydus-image");
}

/// The test tree: every file kind nydus-image takes (no sockets), xattrs, hard links,
/// sparse and compressible files.
fn make_tree(src: &Path) {
    std::fs::create_dir_all(src).unwrap();
    tree::build_tree(
        src,
        &TreeOptions {
            socket: false,
            acls: false,
            ..TreeOptions::default()
        },
    );
    // Data that spans several 1 MiB chunks, compressible and not.
    let text: String = (0..90_000)
        .map(|i| format!("line {i}: the quick brown fox\n"))
        .collect();
    std::fs::write(src.join("big.txt"), text).unwrap();
    std::fs::write(src.join("big.bin"), tests::vm::noise(7, 2_500_000)).unwrap();
}

fn build(name: &str, args: &[&str], prefetch: Option<&str>) -> Option<Built> {
    tests::require_tool("nydus-image")?;
    tests::require_root("the test tree holds device nodes and files owned by other users")?;
    let dir = tests::scratch_dir(&format!("rafs_images/{name}"));
    let src = dir.join("src");
    make_tree(&src);
    let blobs = dir.join("blobs");
    let boot = dir.join("bootstrap");
    nydus_create(&src, &blobs, &boot, args, prefetch);
    Some(Built {
        _scratch: dir,
        boot,
        blobs,
        src,
    })
}

/// `erofs ARGS` → (success, stdout, stderr).
fn erofs(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(tree::erofs_cli())
        .args(args)
        .output()
        .expect("run erofs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `erofs extract BOOT --blob-dir BLOBS DEST`, then compare DEST with SRC.
fn extract_and_compare(boot: &Path, blobs: &Path, src: &Path, dest: &Path) {
    let (ok, _, err) = erofs(&[
        "extract".as_ref(),
        boot.as_os_str(),
        "--blob-dir".as_ref(),
        blobs.as_os_str(),
        dest.as_os_str(),
    ]);
    assert!(ok, "erofs extract failed: {err}");
    let mut want = tree::snapshot_dir(src);
    let mut got = tree::snapshot_dir(dest);
    tree::fill_link_groups(&mut want);
    tree::fill_link_groups(&mut got);
    let how = Compare {
        root_metadata: false,
        ..Compare::default()
    };
    if let Err(d) = tree::compare(&want, &got, &how) {
        panic!("{} extracted differs from the tree:\n{d}", boot.display());
    }
    // The library view (no extraction) agrees too.
    let image = ImageBuilder::open(boot)
        .unwrap()
        .blob_dir(blobs)
        .build()
        .unwrap();
    let lib = tree::snapshot_image(&image);
    let files = want
        .iter()
        .filter(|(_, e)| e.kind == tree::Kind::File)
        .count();
    for (path, w) in want.iter().filter(|(_, e)| e.kind == tree::Kind::File) {
        let g = lib
            .get(path)
            .unwrap_or_else(|| panic!("{}: missing", path.display()));
        assert_eq!(w.content_hash, g.content_hash, "{}", path.display());
    }
    assert!(files > 10);
}

/// `erofs fsck BOOT --blob-dir BLOBS` → (success, the RAFS line's (decoded, verified), output).
fn fsck(boot: &Path, blobs: &Path) -> (bool, (u64, u64), String) {
    let (ok, out, err) = erofs(&[
        "fsck".as_ref(),
        boot.as_os_str(),
        "--blob-dir".as_ref(),
        blobs.as_os_str(),
    ]);
    let line = out
        .lines()
        .find(|l| l.starts_with("RAFS: "))
        .unwrap_or_else(|| panic!("no RAFS line in fsck output:\n{out}\n{err}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (ok, (nums[0], nums[1]), format!("{out}{err}"))
}

fn check_variant(name: &str, compressor: &str, chunk: &str, digester: &str, extra: &[&str]) {
    let mut args = vec![
        "--compressor",
        compressor,
        "--chunk-size",
        chunk,
        "--digester",
        digester,
    ];
    args.extend_from_slice(extra);
    let Some(b) = build(name, &args, None) else {
        return;
    };
    let image = ImageBuilder::open(&b.boot)
        .unwrap()
        .blob_dir(&b.blobs)
        .build()
        .unwrap();
    let rafs = RafsMeta::from_image(&image).unwrap().expect("a RAFS image");
    assert_eq!(
        u64::from(rafs.chunk_size()),
        u64::from_str_radix(chunk.trim_start_matches("0x"), 16).unwrap()
    );
    let want = match compressor {
        "none" => BlobCompressor::None,
        "lz4_block" => BlobCompressor::Lz4Block,
        _ => BlobCompressor::Zstd,
    };
    assert_eq!(rafs.blobs().len(), 1);
    assert_eq!(rafs.blobs()[0].compressor, Some(want));
    extract_and_compare(&b.boot, &b.blobs, &b.src, &b.boot.with_file_name("out"));
    let (ok, (decoded, verified), out) = fsck(&b.boot, &b.blobs);
    assert!(ok, "fsck: {out}");
    assert_eq!(
        decoded,
        u64::from(rafs.blobs()[0].chunk_count),
        "every chunk decoded: {out}"
    );
    assert_eq!(verified, decoded, "every chunk's digest checked: {out}");
    println!("{name}: {} chunks, all digests verified", decoded);
}

#[test]
fn none_4k_blake3() {
    check_variant("none-4k-blake3", "none", "0x1000", "blake3", &[]);
}

#[test]
fn none_1m_sha256() {
    check_variant("none-1m-sha256", "none", "0x100000", "sha256", &[]);
}

#[test]
fn lz4_64k_sha256() {
    check_variant("lz4-64k-sha256", "lz4_block", "0x10000", "sha256", &[]);
}

#[test]
fn lz4_1m_blake3() {
    check_variant("lz4-1m-blake3", "lz4_block", "0x100000", "blake3", &[]);
}

#[test]
fn zstd_4k_sha256() {
    check_variant("zstd-4k-sha256", "zstd", "0x1000", "sha256", &[]);
}

#[test]
fn zstd_64k_blake3() {
    check_variant("zstd-64k-blake3", "zstd", "0x10000", "blake3", &[]);
}

#[test]
fn zstd_1m_blake3_blob_toc() {
    check_variant(
        "zstd-1m-toc",
        "zstd",
        "0x100000",
        "blake3",
        &["--features", "blob-toc"],
    );
}

#[test]
fn prefetch_list_in_sb() {
    let list = "/big.txt\n/a/b\n/does/not/exist\n";
    let Some(b) = build("prefetch", &["--compressor", "zstd"], Some(list)) else {
        return;
    };
    let image = ImageBuilder::open(&b.boot)
        .unwrap()
        .blob_dir(&b.blobs)
        .build()
        .unwrap();
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let paths: Vec<String> = rafs
        .prefetch_paths(&image, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.expect("every prefetch nid is in the tree"))
        .collect();
    let expect = ["/big.txt", "/a/b"];
    assert_eq!(paths, expect);
    for p in &paths {
        let nid = image.lookup(p).unwrap().nid().0;
        assert!(rafs.prefetch_nids().contains(&nid));
    }
    let (ok, out, err) = erofs(&[
        "sb".as_ref(),
        b.boot.as_os_str(),
        "--blob-dir".as_ref(),
        b.blobs.as_os_str(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("prefetch:      {} entries", paths.len())),
        "{out}"
    );
    for p in &paths {
        assert!(out.contains(&format!(": {p}\n")), "{p} in:\n{out}");
    }
    let id = &rafs.blobs()[0].id;
    assert!(
        out.contains(&format!("blob 0: {id} compressor Some(Zstd)")),
        "{out}"
    );
    extract_and_compare(&b.boot, &b.blobs, &b.src, &b.boot.with_file_name("out"));
}

/// A second tree: the first plus new and changed files (so the upper layer's merged view
/// equals it: nothing is deleted).
fn second_tree(first: &Path, second: &Path) {
    tests::run(Command::new("cp").arg("-a").arg(first).arg(second));
    std::fs::write(second.join("new-file"), tests::vm::noise(11, 300_000)).unwrap();
    std::fs::write(second.join("big.txt"), b"changed in the upper layer\n").unwrap();
}

#[test]
fn shared_blob_parent_bootstrap_and_chunk_dict() {
    let Some(a) = build(
        "shared",
        &["--compressor", "zstd", "--chunk-size", "0x10000"],
        None,
    ) else {
        return;
    };
    let dir = a.boot.parent().unwrap().to_path_buf();
    let src2 = dir.join("src2");
    second_tree(&a.src, &src2);
    // Layer on top of A: its bootstrap lists A's blob (shared chunks) and a new one.
    let upper = dir.join("upper");
    let boot_a = a.boot.to_str().unwrap().to_string();
    nydus_create(
        &src2,
        &a.blobs,
        &upper,
        &[
            "--compressor",
            "zstd",
            "--chunk-size",
            "0x10000",
            "--parent-bootstrap",
            &boot_a,
        ],
        None,
    );
    // A separate image deduplicated against A through a chunk dictionary.
    let dict = dir.join("dict");
    let dict_arg = format!("bootstrap={boot_a}");
    nydus_create(
        &src2,
        &a.blobs,
        &dict,
        &[
            "--compressor",
            "zstd",
            "--chunk-size",
            "0x10000",
            "--chunk-dict",
            &dict_arg,
        ],
        None,
    );
    let open = |boot: &Path| {
        let image = ImageBuilder::open(boot)
            .unwrap()
            .blob_dir(&a.blobs)
            .build()
            .unwrap();
        let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
        rafs.blobs()
            .iter()
            .map(|b| b.id.clone())
            .collect::<Vec<_>>()
    };
    let ids_a = open(&a.boot);
    for boot in [&upper, &dict] {
        let ids = open(boot);
        assert!(ids.len() >= 2, "{}: {ids:?}", boot.display());
        assert!(
            ids.contains(&ids_a[0]),
            "{} shares A's blob: {ids:?}",
            boot.display()
        );
    }
    extract_and_compare(&a.boot, &a.blobs, &a.src, &dir.join("out-a"));
    extract_and_compare(&upper, &a.blobs, &src2, &dir.join("out-upper"));
    extract_and_compare(&dict, &a.blobs, &src2, &dir.join("out-dict"));
    for boot in [&a.boot, &upper, &dict] {
        let (ok, (decoded, verified), out) = fsck(boot, &a.blobs);
        assert!(ok && decoded > 0 && verified > 0, "{out}");
    }
}

/// Flip one byte inside the stored data of the blob's first chunk; fsck must say so.
fn flipped(name: &str, compressor: &str) {
    let Some(b) = build(name, &["--compressor", compressor], None) else {
        return;
    };
    let image = ImageBuilder::open(&b.boot)
        .unwrap()
        .blob_dir(&b.blobs)
        .build()
        .unwrap();
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let blob = rafs.open_blob(&image, 0, &b.blobs, false).unwrap();
    // A chunk that is stored compressed when the blob is compressed (the text file's).
    let chunks = blob.chunk_infos().unwrap();
    let c = chunks
        .iter()
        .find(|c| c.compressed || compressor == "none")
        .copied()
        .expect("a chunk to damage");
    let (ok, _, out) = fsck(&b.boot, &b.blobs);
    assert!(ok, "{out}");
    let path = b.blobs.join(&rafs.blobs()[0].id);
    let mut data = std::fs::read(&path).unwrap();
    let at = (c.compressed_offset + u64::from(c.compressed_size) / 2) as usize;
    data[at] ^= 0x40;
    std::fs::write(&path, &data).unwrap();
    let (ok, (decoded, verified), out) = fsck(&b.boot, &b.blobs);
    assert!(!ok, "fsck passed a damaged blob: {out}");
    assert!(verified < decoded + 1, "{out}");
    assert!(
        out.contains("digest") || out.contains("zstd") || out.contains("lz4"),
        "{out}"
    );
    if compressor == "none" {
        // Raw data has no other check than the digest.
        assert!(out.contains("digest"), "{out}");
    }
    println!("{name}: fsck found the flipped byte at {at}");
}

#[test]
fn fsck_finds_flipped_byte_raw() {
    flipped("flip-none", "none");
}

#[test]
fn fsck_finds_flipped_byte_zstd() {
    flipped("flip-zstd", "zstd");
}

#[test]
fn reads_decode_only_touched_chunks() {
    let Some(b) = build(
        "lazy",
        &["--compressor", "zstd", "--chunk-size", "0x10000"],
        None,
    ) else {
        return;
    };
    let image = ImageBuilder::open(&b.boot)
        .unwrap()
        .blob_dir(&b.blobs)
        .build()
        .unwrap();
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let blob = rafs.open_blob(&image, 0, &b.blobs, true).unwrap();
    let total: u64 = blob
        .chunk_infos()
        .unwrap()
        .iter()
        .map(|c| u64::from(c.compressed_size))
        .sum();
    // The extents of big.bin's second 64 KiB: one chunk.
    let inode = image.lookup("/big.bin").unwrap();
    let ext = image.extents(&inode, 65_536..65_537).unwrap();
    let erofs_reader::ExtentTarget::Device { offset, .. } = ext[0].target else {
        panic!("big.bin is not on a blob: {ext:?}");
    };
    let mut buf = vec![0u8; 65_536];
    use erofs_reader::Source;
    blob.read_exact_at(&mut buf, offset).unwrap();
    assert_eq!(buf, tests::vm::noise(7, 2_500_000)[65_536..131_072]);
    let s = blob.stats();
    assert_eq!(s.chunks_decoded, 1, "{s:?}");
    assert_eq!(s.chunks_verified, 1, "{s:?}");
    assert_eq!(s.stored_bytes, 65_536, "{s:?}");
    assert!(s.stored_bytes < total / 10);
    // A part of the chunk is decoded again and kept; the next part comes from the cache.
    blob.read_exact_at(&mut buf[..100], offset + 10).unwrap();
    assert_eq!(buf[..100], tests::vm::noise(7, 2_500_000)[65_546..65_646]);
    blob.read_exact_at(&mut buf[..100], offset + 1000).unwrap();
    assert_eq!(buf[..100], tests::vm::noise(7, 2_500_000)[66_536..66_636]);
    assert_eq!(blob.stats().chunks_decoded, 2);
    assert_eq!(blob.stats().cache_hits, 1);
}

/// `--blob-inline-meta`: no bootstrap file, the blob carries it (uncompressed at its end, or
/// zstd-compressed and listed in the ToC with `blob-toc`); the bootstrap names its blob with
/// the placeholder id `"x" × 64`. `erofs extract BLOB` and `erofs fsck BLOB --blob-dir` work.
fn inline_meta(name: &str, args: &[&str]) {
    let Some(_) = tests::require_tool("nydus-image") else {
        return;
    };
    let Some(_) = tests::require_root("the test tree holds device nodes") else {
        return;
    };
    let dir = tests::scratch_dir(&format!("rafs_images/{name}"));
    let src = dir.join("src");
    make_tree(&src);
    let blobs = dir.join("blobs");
    let mut all = vec!["--blob-inline-meta"];
    all.extend_from_slice(args);
    nydus_create_to(&src, &blobs, None, &all, None);
    let files: Vec<PathBuf> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one blob, no bootstrap file: {files:?}");
    let blob = &files[0];
    let image = erofs_reader::nydus::open_inline_blob(blob, None)
        .unwrap()
        .expect("an inline-meta blob");
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    assert!(rafs.blobs()[0].has_placeholder_id());
    extract_and_compare_inline(blob, &src, &dir.join("out"));
    let (ok, (decoded, verified), out) = fsck(blob, &blobs);
    assert!(ok, "{out}");
    assert_eq!(decoded, u64::from(rafs.blobs()[0].chunk_count), "{out}");
    assert_eq!(verified, decoded, "{out}");
    // An EROFS image is not taken for an inline blob.
    assert!(
        erofs_reader::nydus::open_inline_blob(&dir.join("out/small.txt"), None)
            .unwrap()
            .is_none()
    );
}

fn extract_and_compare_inline(blob: &Path, src: &Path, dest: &Path) {
    let (ok, _, err) = erofs(&["extract".as_ref(), blob.as_os_str(), dest.as_os_str()]);
    assert!(ok, "erofs extract failed: {err}");
    let mut want = tree::snapshot_dir(src);
    let mut got = tree::snapshot_dir(dest);
    tree::fill_link_groups(&mut want);
    tree::fill_link_groups(&mut got);
    let how = Compare {
        root_metadata: false,
        ..Compare::default()
    };
    if let Err(d) = tree::compare(&want, &got, &how) {
        panic!("{} extracted differs from the tree:\n{d}", blob.display());
    }
}

#[test]
fn inline_meta_lz4() {
    inline_meta(
        "inline-lz4",
        &["--compressor", "lz4_block", "--chunk-size", "0x10000"],
    );
}

#[test]
fn inline_meta_zstd_blob_toc() {
    inline_meta(
        "inline-zstd-toc",
        &[
            "--compressor",
            "zstd",
            "--features",
            "blob-toc",
            "--digester",
            "sha256",
        ],
    );
}
