//! Nydus RAFS v6 bootstraps and blobs built by `nydus-image create -t dir-rafs -v 6`, decoded
//! with `erofs_format` (EROFS superblock, inodes, dirents, and the `rafs` module) and checked
//! against the source tree, the blob files, and what `nydus-image inspect` / `check -v` print.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use erofs_format::device::DeviceSlot;
use erofs_format::inode::{DataLayout, InodeContext, InodeData};
use erofs_format::rafs::{
    BlobCompressionContextHeader, BlobCompressor, BlobFeatures, ChunkInfo, ChunkInfoArray,
    Digester, FEATURE_COMPAT_RAFS_V6, RafsSuperFlags, RafsV6InodeChunkAddr, RafsV6SuperBlockExt,
};
use erofs_format::superblock::{FeatureIncompat, SuperBlock};
use erofs_format::{Error, Nid};
use zerocopy::FromBytes;

use tests::Rng;

/// The words of the compressible text files.
const WORDS: [&str; 6] = ["red ", "green ", "blue\n", "cyan ", "magenta ", "yellow "];

/// Regular files of the source tree by path (without a leading slash).
fn make_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    let mut files = BTreeMap::new();
    files.insert("rand.bin".to_string(), rng.bytes(1_300_001));
    files.insert("text.txt".to_string(), rng.text(&WORDS, 2_240_000));
    files.insert("small.txt".to_string(), b"small\n".to_vec());
    files.insert("d/dup.txt".to_string(), b"small\n".to_vec());
    files.insert("empty".to_string(), Vec::new());
    files.insert("d/e/nested.txt".to_string(), rng.text(&WORDS, 70_000));
    files.insert("exact.bin".to_string(), rng.bytes(1 << 20));
    for (path, data) in &files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    files
}

struct Built {
    /// Removed with the build (kept when a test fails).
    _scratch: tests::Scratch,
    boot: Vec<u8>,
    boot_path: PathBuf,
    blob_dir: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

fn build(
    name: &str,
    compressor: &str,
    chunk_size: &str,
    extra: &[&str],
    prefetch: Option<&str>,
) -> Option<Built> {
    let dir = tests::scratch_dir(&format!("format_rafs/{name}"));
    let src = dir.join("src");
    let files = make_tree(&src);
    let blob_dir = dir.join("blobs");
    std::fs::create_dir_all(&blob_dir).unwrap();
    let boot_path = dir.join("bootstrap");
    let mut create = tests::nydus_image::Create::new(&src, &blob_dir)
        .bootstrap(&boot_path)
        .args(&["--compressor", compressor, "--chunk-size", chunk_size])
        .args(extra);
    if let Some(list) = prefetch {
        create = create.prefetch(list);
    }
    create.run()?;
    Some(Built {
        _scratch: dir,
        boot: std::fs::read(&boot_path).unwrap(),
        boot_path,
        blob_dir,
        files,
    })
}

use tests::raw::{read_inode, walk};

/// The decompressed chunk-info array of a blob (zstd through the `zstd` tool).
fn chunk_info_bytes(
    blob: &[u8],
    off: u64,
    csize: u64,
    compressor: Option<BlobCompressor>,
) -> Vec<u8> {
    let raw = &blob[off as usize..(off + csize) as usize];
    match compressor {
        Some(BlobCompressor::None) => raw.to_vec(),
        Some(BlobCompressor::Zstd) => {
            let zstd = tests::require_tool("zstd").expect("zstd is needed to read chunk infos");
            let mut child = Command::new(zstd)
                .args(["-d", "-c", "-q"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let input = raw.to_vec();
            let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
            let out = child.wait_with_output().unwrap();
            writer.join().unwrap();
            assert!(out.status.success(), "zstd -d failed");
            out.stdout
        }
        other => panic!("unexpected chunk-info compressor {other:?}"),
    }
}

/// `nydus-image check -v`: per file, its chunks as
/// `(ci index, blob index, coff, csize, uoff, usize)`; and per blob
/// `(id, compressed data size, file size, uncompressed size, chunks)`.
type CheckChunk = (u64, u64, u64, u64, u64, u64);
/// Per blob: `(id, [compressed data size, file size, uncompressed size, chunks])`.
type CheckBlob = (String, [u64; 4]);

fn nydus_check(
    boot: &Path,
    blob_dir: &Path,
) -> (BTreeMap<String, Vec<CheckChunk>>, Vec<CheckBlob>) {
    let nydus = tests::require_tool("nydus-image").unwrap();
    let out = tests::run(
        Command::new(nydus)
            .args(["check", "-v", "-l", "warn", "-B"])
            .arg(boot)
            .arg("-D")
            .arg(blob_dir),
    );
    let mut files: BTreeMap<String, Vec<CheckChunk>> = BTreeMap::new();
    let mut blobs = Vec::new();
    let mut current = None;
    let num = |s: &str| -> u64 {
        let s = s.trim().trim_end_matches(',');
        match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => s.parse().unwrap(),
        }
    };
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = line.strip_prefix("inode: file \"") {
            let path = rest
                .split('"')
                .next()
                .unwrap()
                .trim_start_matches('/')
                .to_string();
            files.entry(path.clone()).or_default();
            current = Some(path);
        } else if let Some(rest) = t.strip_prefix("chunk: id ") {
            let field = |key: &str| {
                rest.split(key)
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .trim()
                    .to_string()
            };
            let pair = |key: &str| {
                let v = field(key);
                let (a, b) = v.split_once('/').unwrap();
                (num(a), num(b))
            };
            let (coff, csize) = pair("compressed ");
            let (uoff, usize) = pair("uncompressed ");
            let chunk = (
                num(&field("index ")),
                num(&field("blob_index ")),
                coff,
                csize,
                uoff,
                usize,
            );
            files
                .get_mut(current.as_ref().unwrap())
                .unwrap()
                .push(chunk);
        } else if t.contains("compressed data size") {
            // "0: <id>, compressed data size 0x.., compressed file size 0x.., uncompressed file size 0x.., chunks: 0x.., ..."
            let (_, rest) = t.split_once(": ").unwrap();
            let id = rest.split(',').next().unwrap().to_string();
            let after = |key: &str| num(rest.split(key).nth(1).unwrap().split(',').next().unwrap());
            blobs.push((
                id,
                [
                    after("compressed data size "),
                    after("compressed file size "),
                    after("uncompressed file size "),
                    after("chunks: "),
                ],
            ));
        }
    }
    (files, blobs)
}

/// SHA-256 through coreutils' `sha256sum`.
fn sha256sum(data: &[u8]) -> [u8; 32] {
    let tool = tests::require_tool("sha256sum").expect("sha256sum");
    let mut child = Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    d
}

/// `(nid, path)` pairs of `nydus-image inspect -R prefetch`.
fn inspect_prefetch(boot: &Path) -> Vec<(u64, String)> {
    let nydus = tests::require_tool("nydus-image").unwrap();
    let out = tests::run(
        Command::new(nydus)
            .args(["inspect", "-l", "warn", "-R", "prefetch"])
            .arg(boot),
    );
    let mut v = Vec::new();
    for part in out.split("{\"inode\":").skip(1) {
        let nid: u64 = part.split(',').next().unwrap().parse().unwrap();
        let path = part
            .split("\"path\":[")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .trim_matches('"')
            .to_string();
        v.push((nid, path));
    }
    v
}

/// Everything this module can check about one build.
fn check(b: &Built, compressor: BlobCompressor, chunk_size: u32) -> Vec<Vec<ChunkInfo>> {
    let boot = &b.boot;
    assert_eq!(boot.len() % 4096, 0, "bootstrap size is a 4 KiB multiple");

    // EROFS superblock as nydus writes it.
    let sb = SuperBlock::parse(boot).unwrap();
    assert_ne!(sb.feature_compat.get() & FEATURE_COMPAT_RAFS_V6, 0);
    assert_eq!(
        sb.incompat(),
        FeatureIncompat::CHUNKED_FILE | FeatureIncompat::DEVICE_TABLE
    );
    assert_eq!(sb.blkszbits, 12);
    assert_eq!(sb.device_table_offset(), 0x580);

    // Extended superblock.
    let ext = RafsV6SuperBlockExt::from_bootstrap(boot).unwrap();
    ext.validate(boot.len() as u64).unwrap();
    assert_eq!(ext.chunk_size(), chunk_size);
    assert_eq!(ext.compressor(), Some(compressor));
    let sha256 = ext.digester() == Some(Digester::Sha256);
    assert!(
        ext.flags()
            .intersects(RafsSuperFlags::HASH_BLAKE3 | RafsSuperFlags::HASH_SHA256)
    );

    // Blob table = the blob files nydus wrote = the device tags.
    let blobs = ext.blob_table(boot).unwrap();
    assert_eq!(blobs.len(), usize::from(sb.extra_devices()));
    let on_disk: BTreeSet<String> = std::fs::read_dir(&b.blob_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let ids: BTreeSet<String> = blobs
        .iter()
        .map(|x| x.blob_id().unwrap().to_string())
        .collect();
    assert_eq!(ids, on_disk, "blob ids are the blob file names");
    let devt = sb.device_table_offset() as usize;
    let slots = DeviceSlot::table(&boot[devt..], sb.extra_devices()).unwrap();
    let (check_files, check_blobs) = nydus_check(&b.boot_path, &b.blob_dir);
    assert_eq!(check_blobs.len(), blobs.len());

    let mut all_ci = Vec::new();
    let mut all_digests = Vec::new();
    let mut blob_bytes = Vec::new();
    let mut total_blocks = 0;
    for (i, blob) in blobs.iter().enumerate() {
        blob.validate(i as u32, chunk_size).unwrap();
        let id = blob.blob_id().unwrap();
        assert_eq!(slots[i].tag(), id.as_bytes(), "device slot {i} tag");
        assert_eq!(slots[i].blocks(false) * 4096, blob.uncompressed_size.get());
        total_blocks += slots[i].blocks(false);
        assert_eq!(blob.compressor(), Some(compressor));
        let data = std::fs::read(b.blob_dir.join(id)).unwrap();
        assert_eq!(
            blob.compressed_size.get(),
            data.len() as u64,
            "plain blob: compressed_size is the file size"
        );

        // nydus-image check prints the same figures.
        let (cid, [cdata, cfile, usize_, chunks]) = &check_blobs[i];
        assert_eq!(cid, id);
        assert_eq!(*cdata, blob.compressed_data_size());
        assert_eq!(*cfile, blob.compressed_size.get());
        assert_eq!(*usize_, blob.uncompressed_size.get());
        assert_eq!(*chunks, u64::from(blob.chunk_count.get()));

        // The blob meta header ends the plain blob and agrees with the table.
        let hoff = blob.meta_header_offset().unwrap();
        let header = BlobCompressionContextHeader::parse(&data[hoff as usize..]).unwrap();
        assert!(header.matches(blob), "header differs from the blob table");
        assert!(header.features().contains(BlobFeatures::ALIGNED));
        let mut digests = None;
        if blob.features().contains(BlobFeatures::HAS_TOC) {
            // blob-toc: tar header "blob.meta", then the raw chunk-digest array.
            assert!(
                blob.features()
                    .contains(BlobFeatures::HAS_TAR_HEADER | BlobFeatures::INLINED_CHUNK_DIGEST)
            );
            let tar = &data[hoff as usize + 4096..hoff as usize + 4096 + 512];
            assert!(
                tar.starts_with(b"blob.meta\0"),
                "tar header after the blob meta"
            );
            let at = hoff as usize + 4096 + 512;
            let n = blob.chunk_count.get() as usize;
            digests = Some(data[at..at + 32 * n].to_vec());
            assert!(blob.blob_toc_size.get() > 512);
        } else {
            assert_eq!(hoff + 4096, data.len() as u64, "header is the last 4 KiB");
        }

        // Chunk infos.
        let ci_bytes = chunk_info_bytes(
            &data,
            blob.ci_offset.get(),
            blob.ci_compressed_size.get(),
            blob.ci_compressor(),
        );
        assert_eq!(ci_bytes.len() as u64, blob.ci_uncompressed_size.get());
        let arr = ChunkInfoArray::new(&ci_bytes, blob.features(), blob.chunk_count.get()).unwrap();
        assert!(
            matches!(arr, ChunkInfoArray::V1(_)),
            "dir-rafs writes v1 chunk infos"
        );
        let cis: Vec<ChunkInfo> = arr.iter().collect::<Result<_, _>>().unwrap();
        let (mut coff, mut uoff) = (0u64, 0u64);
        for (k, c) in cis.iter().enumerate() {
            assert_eq!(c.compressed_offset, coff, "chunk {k}: stored back to back");
            assert_eq!(
                c.uncompressed_offset, uoff,
                "chunk {k}: 4 KiB aligned and in order"
            );
            assert!(c.uncompressed_size >= 1 && c.uncompressed_size <= chunk_size);
            if compressor == BlobCompressor::None {
                assert!(!c.compressed);
                assert_eq!(c.compressed_size, c.uncompressed_size);
            } else {
                assert_eq!(c.compressed, c.compressed_size != c.uncompressed_size);
            }
            if c.compressed && compressor == BlobCompressor::Zstd {
                assert_eq!(
                    &data[coff as usize..coff as usize + 4],
                    &[0x28, 0xb5, 0x2f, 0xfd],
                    "chunk {k}: zstd frame"
                );
            }
            coff = c.compressed_end();
            uoff = c.uncompressed_end().next_multiple_of(4096);
        }
        assert_eq!(
            coff,
            blob.compressed_data_size(),
            "chunk data ends at the chunk infos"
        );
        assert_eq!(
            uoff,
            blob.uncompressed_size.get(),
            "uncompressed space is exactly covered"
        );
        all_ci.push(cis);
        all_digests.push(digests);
        blob_bytes.push(data);
    }
    assert_eq!(
        sb.blocks(),
        total_blocks,
        "superblock blocks = sum of blob blocks"
    );

    // Files: chunk indexes resolve to chunk infos that hold the file's bytes.
    let inodes = walk(boot);
    for (path, data) in &b.files {
        let inode = &inodes[path.as_str()];
        assert_eq!(inode.layout, DataLayout::ChunkBased, "{path}");
        assert!(matches!(inode.data, InodeData::Chunked { .. }));
        assert_eq!(inode.size, data.len() as u64);
        let (off, _format, _kernel_count) = inode.chunk_table().unwrap().unwrap();
        let n = inode.size.div_ceil(u64::from(chunk_size));
        let mut ours = Vec::new();
        for k in 0..n {
            let at = (off + 8 * k) as usize;
            let addr = RafsV6InodeChunkAddr::read_from_bytes(&boot[at..at + 8]).unwrap();
            let bi = usize::from(addr.blob_index().expect("chunk on a blob"));
            let ci = addr.chunk_index();
            let c = all_ci[bi][ci as usize];
            assert_eq!(
                c.uncompressed_offset,
                addr.uncompressed_offset(),
                "{path} chunk {k}"
            );
            let start = k * u64::from(chunk_size);
            let len = (inode.size - start).min(u64::from(chunk_size));
            assert_eq!(
                u64::from(c.uncompressed_size),
                len,
                "{path} chunk {k}: size"
            );
            if compressor == BlobCompressor::None {
                let blob = std::fs::read(b.blob_dir.join(blobs[bi].blob_id().unwrap())).unwrap();
                let stored = &blob[c.compressed_offset as usize..c.compressed_end() as usize];
                assert!(
                    stored == &data[start as usize..(start + len) as usize],
                    "{path} chunk {k}: data"
                );
            }
            ours.push((
                u64::from(ci),
                bi as u64,
                c.compressed_offset,
                u64::from(c.compressed_size),
                c.uncompressed_offset,
                u64::from(c.uncompressed_size),
            ));
        }
        if !data.is_empty() {
            assert_eq!(
                check_files[path.as_str()],
                ours,
                "{path}: nydus-image check -v"
            );
        }
    }

    // The chunk table at the end of the bootstrap repeats the chunk infos.
    let table = ext.chunk_table(boot).unwrap();
    assert!(!table.is_empty());
    for r in table {
        let c = all_ci[r.blob_index.get() as usize][r.index.get() as usize];
        assert_eq!(r.compressed_offset.get(), c.compressed_offset);
        assert_eq!(r.compressed_size.get(), c.compressed_size);
        assert_eq!(r.uncompressed_offset.get(), c.uncompressed_offset);
        assert_eq!(r.uncompressed_size.get(), c.uncompressed_size);
        assert_eq!(r.is_compressed(), c.compressed);
        let bi = r.blob_index.get() as usize;
        let ci = r.index.get() as usize;
        if let Some(d) = &all_digests[bi] {
            assert_eq!(
                &d[32 * ci..32 * ci + 32],
                &r.block_id,
                "digest array = chunk table"
            );
        }
        if sha256 && !c.compressed {
            let stored = &blob_bytes[bi][c.compressed_offset as usize..c.compressed_end() as usize];
            assert_eq!(
                sha256sum(stored),
                r.block_id,
                "chunk digest is sha256 of the data"
            );
        }
    }
    let unique: BTreeSet<_> = table
        .iter()
        .map(|r| (r.blob_index.get(), r.index.get()))
        .collect();
    assert_eq!(unique.len(), table.len());
    all_ci
}

#[test]
fn none_4k_chunks_with_prefetch() {
    let list = "/d\n/rand.bin\n/does/not/exist\nrelative/ignored\n";
    let Some(b) = build("none-4k", "none", "0x1000", &[], Some(list)) else {
        return;
    };
    check(&b, BlobCompressor::None, 0x1000);

    let ext = RafsV6SuperBlockExt::from_bootstrap(&b.boot).unwrap();
    let table = ext.prefetch_table(&b.boot).unwrap();
    // One slot per absolute pattern (3), the unmatched one left 0.
    assert_eq!(ext.s_prefetch_table_size.get(), 12);
    assert_eq!(table.raw().len(), 3);
    let inodes = walk(&b.boot);
    let expected: Vec<u64> = ["d", "rand.bin"].iter().map(|p| inodes[*p].nid.0).collect();
    assert_eq!(table.nids().collect::<Vec<_>>(), expected);
    let inspected = inspect_prefetch(&b.boot_path);
    let listed: Vec<u64> = inspected
        .iter()
        .map(|(n, _)| *n)
        .filter(|&n| n != 0)
        .collect();
    assert_eq!(
        listed, expected,
        "nydus-image inspect -R prefetch: {inspected:?}"
    );

    // Prefetched files come first in the blob: rand.bin's and /d's chunks precede text.txt's.
    let sb = SuperBlock::parse(&b.boot).unwrap();
    let ctx = InodeContext::new(sb).unwrap();
    let first_ci = |nid: Nid| {
        let inode = read_inode(&b.boot, &ctx, nid);
        let (off, _, _) = inode.chunk_table().unwrap().unwrap();
        RafsV6InodeChunkAddr::read_from_bytes(&b.boot[off as usize..off as usize + 8])
            .unwrap()
            .chunk_index()
    };
    assert!(first_ci(inodes["rand.bin"].nid) < first_ci(inodes["text.txt"].nid));
    assert!(first_ci(inodes["d/e/nested.txt"].nid) < first_ci(inodes["text.txt"].nid));
}

#[test]
fn lz4_1m_chunks() {
    let Some(b) = build("lz4-1m", "lz4_block", "0x100000", &[], None) else {
        return;
    };
    let cis = check(&b, BlobCompressor::Lz4Block, 0x10_0000);
    assert!(
        cis.iter().flatten().any(|c| c.compressed),
        "the text file compresses"
    );
    let ext = RafsV6SuperBlockExt::from_bootstrap(&b.boot).unwrap();
    assert_eq!(ext.s_prefetch_table_size.get(), 0);
}

#[test]
fn zstd_1m_chunks() {
    let Some(b) = build("zstd-1m", "zstd", "0x100000", &[], None) else {
        return;
    };
    let cis = check(&b, BlobCompressor::Zstd, 0x10_0000);
    assert!(cis.iter().flatten().any(|c| c.compressed));
    assert!(
        cis.iter().flatten().any(|c| !c.compressed),
        "random data stays raw"
    );
}

#[test]
fn zstd_4k_chunks() {
    let Some(b) = build("zstd-4k", "zstd", "0x1000", &[], None) else {
        return;
    };
    check(&b, BlobCompressor::Zstd, 0x1000);
}

#[test]
fn lz4_4k_chunks_blob_meta_blob_table_rules() {
    let Some(b) = build("lz4-4k", "lz4_block", "0x1000", &[], None) else {
        return;
    };
    check(&b, BlobCompressor::Lz4Block, 0x1000);
    // A corrupted blob table record is refused with a named rule.
    let ext = RafsV6SuperBlockExt::from_bootstrap(&b.boot).unwrap();
    let mut boot = b.boot.clone();
    let at = ext.s_blob_table_offset.get() as usize + 0x40;
    boot[at] = 7; // blob_index
    let ext2 = RafsV6SuperBlockExt::from_bootstrap(&boot).unwrap();
    let blobs = ext2.blob_table(&boot).unwrap();
    assert!(matches!(
        blobs[0].validate(0, 0x1000),
        Err(Error::BadRafs { .. })
    ));
}

#[test]
fn none_sha256_blob_toc() {
    let extra = ["--digester", "sha256", "--features", "blob-toc"];
    let Some(b) = build("none-sha256-toc", "none", "0x100000", &extra, None) else {
        return;
    };
    check(&b, BlobCompressor::None, 0x10_0000);
    let ext = RafsV6SuperBlockExt::from_bootstrap(&b.boot).unwrap();
    assert!(
        ext.flags()
            .contains(RafsSuperFlags::HASH_SHA256 | RafsSuperFlags::INLINED_CHUNK_DIGEST)
    );
    let blob = ext.blob_table(&b.boot).unwrap()[0];
    assert_eq!(blob.digester(), Some(Digester::Sha256));
    assert!(blob.features().contains(BlobFeatures::HAS_TOC));
    assert_eq!(blob.compressed_data_size() + 512, blob.ci_offset.get());
}
