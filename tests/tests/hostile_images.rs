//! Hand-crafted hostile images: real images built by `mkfs.erofs` at test time, then
//! damaged with `erofs-format`'s typed structures (dirents, inodes, chunk indexes, the
//! superblock) and the superblock checksum rewritten, so that each damage reaches the code
//! it targets. Every case must end in a typed error, within a bounded time (each operation
//! runs on a worker thread with a deadline) and bounded memory (the process's peak RSS is
//! checked). The `erofs extract` cases check that no hostile name writes outside DEST.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use erofs_format::checksum;
use erofs_format::chunk::ChunkIndex;
use erofs_format::dirent::{DirBlock, Dirent};
use erofs_format::inode::InodeExtended;
use erofs_format::superblock::{FeatureCompat, SuperBlock};
use erofs_reader::{CorruptKind, Error, Image, ImageBuilder, Limits, Nid};
use zerocopy::FromBytes;

/// How long one operation on a hostile image may take (debug build).
const DEADLINE: Duration = Duration::from_secs(30);

/// Peak resident memory allowed for this test process.
const MAX_RSS_KIB: u64 = 1 << 20;

struct Fixture {
    dir: PathBuf,
    /// Extended inodes, no compression.
    plain: Vec<u8>,
    /// 4 KiB chunks, data in `blob`.
    chunked: Vec<u8>,
    blob: Vec<u8>,
    /// LZ4-compressed files.
    lz4: Vec<u8>,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        tests::require_tool("mkfs.erofs")?;
        let dir = tests::scratch_dir("hostile_images");
        let src = dir.join("tree");
        for d in ["a/b/c", "self/child", "names", "sub"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("a/b/c/f"), b"deep\n").unwrap();
        std::fs::write(src.join("a/b/file"), b"file\n").unwrap();
        std::fs::write(src.join("self/child/f"), b"child\n").unwrap();
        for n in ["aaa", "bbb", "ccc", "ddd", "zz"] {
            std::fs::write(src.join("names").join(n), n.as_bytes()).unwrap();
        }
        std::fs::write(src.join("sub/secret"), b"secret\n").unwrap();
        std::fs::write(src.join("big"), tests::tree::pattern(1, 3 * 4096)).unwrap();
        std::fs::write(src.join("data"), tests::tree::pattern(2, 16 * 4096)).unwrap();
        std::fs::write(src.join("zeros"), vec![0u8; 256 * 1024]).unwrap();
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, src.join(name)).unwrap();
        };
        link("loop-b", "loop-a");
        link("loop-a", "loop-b");
        link("self-link", "self-link");
        link("../../../../../../etc/passwd", "escape");
        // A chain of 60 links: longer than Linux's (and the reader's) 40 hops.
        for i in 0..60 {
            link(&format!("chain{}", i + 1), &format!("chain{i}"));
        }
        link("big", "chain60");

        let plain = dir.join("plain.erofs");
        tree_mkfs(&plain, &src, &["-Eforce-inode-extended"]);
        let chunked = dir.join("chunked.erofs");
        let blob = dir.join("chunked.blob");
        tree_mkfs(
            &chunked,
            &src,
            &[
                "-Eforce-inode-extended",
                "--chunksize=4096",
                &format!("--blobdev={}", blob.display()),
            ],
        );
        let lz4 = dir.join("lz4.erofs");
        tree_mkfs(&lz4, &src, &["-Eforce-inode-extended", "-zlz4"]);
        Some(Fixture {
            plain: std::fs::read(&plain).unwrap(),
            chunked: std::fs::read(&chunked).unwrap(),
            blob: std::fs::read(&blob).unwrap(),
            lz4: std::fs::read(&lz4).unwrap(),
            dir: dir.keep(),
        })
    })
    .as_ref()
}

fn tree_mkfs(image: &Path, src: &Path, args: &[&str]) {
    let mut all = vec!["-T0", "--all-root"];
    all.extend_from_slice(args);
    tests::tree::mkfs(image, src, &all);
}

/// Run `f` on a worker thread; fail if it panics or misses the deadline, and check the
/// process's peak memory afterwards.
fn bounded<T: Send + std::fmt::Debug + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    let out = match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: no answer within {DEADLINE:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    };
    let rss = peak_rss_kib();
    assert!(
        rss < MAX_RSS_KIB,
        "{what}: peak RSS {rss} KiB (the operation returned {out:?})"
    );
    out
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Rewrite the superblock checksum (if the image has one) after editing block 0.
fn fix_checksum(bytes: &mut [u8]) {
    let sb = SuperBlock::locate(bytes).expect("superblock");
    if sb.compat().contains(FeatureCompat::SB_CHKSUM) {
        let bs = 1usize << sb.blkszbits;
        checksum::write_superblock_checksum(&mut bytes[..bs]).expect("checksum");
    }
}

fn open(bytes: &[u8]) -> Image {
    Image::from_source(bytes.to_vec()).expect("the undamaged image opens")
}

/// Byte offset and nid of the inode at `path` (not following a final symlink).
fn inode_at(bytes: &[u8], path: &str) -> (Nid, usize) {
    let image = open(bytes);
    let inode = image.symlink_lookup(path).expect(path);
    (inode.nid(), inode.metadata().raw().location as usize)
}

/// The extended inode at `path`, for editing.
fn extended_inode<'a>(bytes: &'a mut [u8], path: &str) -> &'a mut InodeExtended {
    let (_, at) = inode_at(bytes, path);
    let (ino, _) = InodeExtended::mut_from_prefix(&mut bytes[at..]).expect("inode bytes");
    assert!(ino.i_format.get() & 1 == 1, "{path}: not an extended inode");
    ino
}

/// Where a dirent and its name are in the image.
#[derive(Debug, Clone, Copy)]
struct DirentAt {
    /// Byte offset of the 12-byte dirent.
    dirent: usize,
    /// Byte offset of the name.
    name: usize,
    /// Index in its block.
    index: usize,
    /// Byte offset of its block (or inline tail).
    block: usize,
}

/// The byte ranges of a flat directory's blocks in the image.
fn dir_blocks(bytes: &[u8], dir: &str) -> Vec<(usize, usize)> {
    let image = open(bytes);
    let inode = image.lookup(dir).expect(dir);
    let raw = inode.metadata().raw();
    let bs = image.block_size() as usize;
    let mut size = raw.size as usize;
    let mut out = Vec::new();
    if let Some((off, len)) = raw.flat_extent().expect("flat extent") {
        let mut pos = 0;
        while pos < len as usize && size > 0 {
            let n = bs.min(size);
            out.push((off as usize + pos, n));
            pos += bs;
            size -= n;
        }
    }
    if let Some((off, len)) = raw.inline_tail().expect("inline tail") {
        out.push((off as usize, len as usize));
    }
    out
}

fn dirent_at(bytes: &[u8], dir: &str, name: &[u8]) -> DirentAt {
    for (block, len) in dir_blocks(bytes, dir) {
        let parsed = DirBlock::parse(&bytes[block..block + len]).expect("dir block");
        for (index, d) in parsed.dirents().iter().enumerate() {
            let e = parsed.get(index).expect("entry");
            if e.name == name {
                return DirentAt {
                    dirent: block + index * 12,
                    name: block + usize::from(d.nameoff.get()),
                    index,
                    block,
                };
            }
        }
    }
    panic!("{dir}: no entry {:?}", String::from_utf8_lossy(name));
}

fn dirent_mut(bytes: &mut [u8], at: usize) -> &mut Dirent {
    Dirent::mut_from_prefix(&mut bytes[at..]).expect("dirent").0
}

/// Damage a copy of `base` with `patch`, then fix the checksum.
fn damaged(base: &[u8], patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = base.to_vec();
    patch(&mut b);
    fix_checksum(&mut b);
    b
}

fn is_corrupt(r: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(r, Err(Error::Corrupt { .. }))
}

#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(what: &str, r: Result<T, Error>, want: CorruptKind) {
    match r {
        Err(Error::Corrupt {
            kind, what: msg, ..
        }) => assert_eq!(kind, want, "{what}: corrupt, but {msg:?}"),
        other => panic!("{what}: expected Error::Corrupt ({want:?}), got {other:?}"),
    }
}

/// Write `bytes` as an image file in the scratch dir and run `erofs ARGS... IMAGE ...`.
fn cli(name: &str, bytes: &[u8], args: &[&str], extra: &[&Path]) -> Output {
    let f = fixture().expect("fixture");
    let img = f.dir.join(format!("{name}.erofs"));
    std::fs::write(&img, bytes).unwrap();
    let bin = tests::tree::erofs_cli();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let extra: Vec<PathBuf> = extra.iter().map(|p| p.to_path_buf()).collect();
    bounded(&format!("erofs {args:?} {name}"), move || {
        let mut cmd = Command::new(bin);
        cmd.args(&args).arg(&img).args(&extra);
        cmd.output().expect("run erofs")
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `erofs fsck` (unless `fsck_needle` is empty) and `erofs extract` both refuse the image,
/// and extract writes nothing outside its destination.
fn cli_refuses(name: &str, bytes: &[u8], fsck_needle: &str, extract_needle: &str) {
    let f = fixture().expect("fixture");
    if !fsck_needle.is_empty() {
        let fsck = cli(name, bytes, &["fsck"], &[]);
        assert!(!fsck.status.success(), "{name}: fsck passed");
        assert!(
            stderr(&fsck).contains(fsck_needle)
                || String::from_utf8_lossy(&fsck.stdout).contains(fsck_needle),
            "{name}: fsck output does not mention {fsck_needle:?}: {}",
            stderr(&fsck)
        );
    }
    let root = f.dir.join(format!("x-{name}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let dest = root.join("dest");
    let x = cli(name, bytes, &["extract"], &[&dest]);
    assert!(!x.status.success(), "{name}: extract succeeded");
    assert!(
        stderr(&x).contains(extract_needle),
        "{name}: extract error does not mention {extract_needle:?}: {}",
        stderr(&x)
    );
    // Nothing but DEST appeared beside DEST.
    let beside: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        beside.iter().all(|n| n == "dest"),
        "{name}: extract wrote outside DEST: {beside:?}"
    );
}

#[test]
fn hostile_directory_cycle() {
    let Some(f) = fixture() else { return };
    // /a/b's entry "c" points back at /a.
    let (a, _) = inode_at(&f.plain, "/a");
    let at = dirent_at(&f.plain, "/a/b", b"c");
    let bad = damaged(&f.plain, |b| dirent_mut(b, at.dirent).nid = a.0.into());
    // Locally every directory is valid: the library resolves /a/b/c to /a ...
    let image = open(&bad);
    assert_eq!(image.lookup("/a/b/c").unwrap().nid(), a);
    // ... and a path that goes round the cycle forever stops at the component limit.
    let long = "/a".to_string() + &"/b/c".repeat(5000);
    let img = image.clone();
    let r = bounded("cycle lookup", move || img.lookup(long).map(|i| i.nid()));
    assert_corrupt("cycle lookup", r, CorruptKind::PathLimit);
    let limited = ImageBuilder::new(bad.clone())
        .limits(Limits {
            max_components: 64,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let r = limited.metadata("/a".to_string() + &"/b/c".repeat(40));
    assert_corrupt("cycle lookup, 64 components", r, CorruptKind::PathLimit);
    // Whole-tree walks notice the cycle.
    cli_refuses("cycle", &bad, "cycle", "cycle");
}

#[test]
fn hostile_dirent_points_at_its_own_directory() {
    let Some(f) = fixture() else { return };
    let (me, _) = inode_at(&f.plain, "/self");
    let at = dirent_at(&f.plain, "/self", b"child");
    let bad = damaged(&f.plain, |b| dirent_mut(b, at.dirent).nid = me.0.into());
    let image = open(&bad);
    assert_eq!(image.lookup("/self/child/child").unwrap().nid(), me);
    let img = image.clone();
    let r = bounded("self lookup", move || {
        img.metadata("/self".to_string() + &"/child".repeat(10_000))
    });
    assert_corrupt("self lookup", r, CorruptKind::PathLimit);
    cli_refuses("self", &bad, "cycle", "cycle");
}

#[test]
fn hostile_nameoff_out_of_bounds() {
    let Some(f) = fixture() else { return };
    let at = dirent_at(&f.plain, "/names", b"bbb");
    let bad = damaged(&f.plain, |b| {
        dirent_mut(b, at.dirent).nameoff = 0xfff0.into()
    });
    let image = open(&bad);
    let img = image.clone();
    let r = bounded("read_dir", move || {
        img.read_dir("/names")
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
            .map(|v| v.len())
    });
    assert_corrupt(
        "read_dir, nameoff past the block",
        r,
        CorruptKind::Directory,
    );
    assert_corrupt(
        "lookup",
        image.metadata("/names/ddd"),
        CorruptKind::Directory,
    );
    // The first nameoff sizes the dirent table: past the block, the table is refused.
    let first = DirentAt {
        dirent: at.block,
        ..at
    };
    let bad = damaged(&f.plain, |b| {
        dirent_mut(b, first.dirent).nameoff = 0xfff0.into()
    });
    assert_corrupt(
        "first nameoff past the block",
        open(&bad)
            .read_dir("/names")
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>()),
        CorruptKind::Directory,
    );
    // A first nameoff that is not a multiple of the dirent size.
    let bad = damaged(&f.plain, |b| {
        let d = dirent_mut(b, first.dirent);
        d.nameoff = (d.nameoff.get() + 1).into();
    });
    assert_corrupt(
        "misaligned first nameoff",
        open(&bad)
            .read_dir("/names")
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>()),
        CorruptKind::Directory,
    );
    cli_refuses(
        "nameoff",
        &damaged(&f.plain, |b| {
            dirent_mut(b, at.dirent).nameoff = 0xfff0.into()
        }),
        "directory block",
        "directory block",
    );
}

#[test]
fn hostile_nameoff_out_of_order() {
    let Some(f) = fixture() else { return };
    let b_at = dirent_at(&f.plain, "/names", b"bbb");
    let c_at = dirent_at(&f.plain, "/names", b"ccc");
    assert_eq!(b_at.index + 1, c_at.index);
    let bad = damaged(&f.plain, |b| {
        let (bo, co) = (
            dirent_mut(b, b_at.dirent).nameoff,
            dirent_mut(b, c_at.dirent).nameoff,
        );
        dirent_mut(b, b_at.dirent).nameoff = co;
        dirent_mut(b, c_at.dirent).nameoff = bo;
    });
    let image = open(&bad);
    let img = image.clone();
    let r = bounded("read_dir", move || {
        img.read_dir("/names")
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
            .map(|v| v.len())
    });
    assert_corrupt("names out of order", r, CorruptKind::Directory);
    assert!(is_corrupt(&image.metadata("/names/aaa")));
}

#[test]
fn hostile_overlapping_inodes() {
    let Some(f) = fixture() else { return };
    // bbb's dirent points into the second half of aaa's 64-byte inode, whose bytes there
    // (aaa's i_mtime) read as an i_format with unknown bits.
    let (aaa, _) = inode_at(&f.plain, "/names/aaa");
    let at = dirent_at(&f.plain, "/names", b"bbb");
    let bad = damaged(&f.plain, |b| {
        extended_inode(b, "/names/aaa").i_mtime = 0xffff_ffff_0000_ffff.into();
        dirent_mut(b, at.dirent).nid = (aaa.0 + 1).into();
    });
    let image = open(&bad);
    // aaa itself still decodes (any mtime is valid); the overlapping inode does not.
    assert_eq!(image.read("/names/aaa").unwrap(), b"aaa");
    let img = image.clone();
    let r = bounded("overlap", move || img.metadata("/names/bbb"));
    // Unknown i_format bits: the kernel says EOPNOTSUPP, the reader Unsupported.
    assert!(
        matches!(&r, Err(Error::Unsupported { feature }) if feature.contains("i_format")),
        "overlapping inode: {r:?}"
    );
    // An inline xattr area that claims 256 KiB runs over the following inodes and past
    // the metadata block.
    let bad = damaged(&f.plain, |b| {
        extended_inode(b, "/names/ccc").i_xattr_icount = 0xffff.into();
    });
    let image = open(&bad);
    let r = bounded("xattr overlap", move || image.xattrs("/names/ccc"));
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "xattr area over other inodes: {r:?}"
    );
}

#[test]
fn hostile_sizes_near_u64_max() {
    let Some(f) = fixture() else { return };
    // The largest non-negative size: metadata is fine, data is refused without
    // allocating it.
    let huge = i64::MAX as u64 - 1;
    let bad = damaged(&f.plain, |b| extended_inode(b, "/big").i_size = huge.into());
    let image = open(&bad);
    assert_eq!(image.metadata("/big").unwrap().len(), huge);
    let img = image.clone();
    let r = bounded("read huge", move || img.read("/big").map(|v| v.len()));
    assert_corrupt("read of a huge file", r, CorruptKind::DataMap);
    let img = image.clone();
    let r = bounded("read_at huge", move || {
        let mut buf = [0u8; 4096];
        img.read_at("/big", huge - 10, &mut buf)
    });
    assert_corrupt(
        "read_at near the end of a huge file",
        r,
        CorruptKind::DataMap,
    );
    let img = image.clone();
    let r = bounded("extents huge", move || img.extents("/big", 0..u64::MAX));
    assert_corrupt("extents of a huge file", r, CorruptKind::DataMap);
    // A size with the top bit set is a negative loff_t: the inode itself is refused.
    for size in [u64::MAX, 1 << 63] {
        let bad = damaged(&f.plain, |b| extended_inode(b, "/big").i_size = size.into());
        let image = open(&bad);
        assert_corrupt("negative size", image.metadata("/big"), CorruptKind::Inode);
    }
    // A directory claiming a huge size: listing it stops at the first bad block.
    let bad = damaged(&f.plain, |b| {
        extended_inode(b, "/names").i_size = huge.into()
    });
    let image = open(&bad);
    let r = bounded("huge dir", move || {
        image
            .read_dir("/names")
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
            .map(|v| v.len())
    });
    assert_corrupt("huge directory", r, CorruptKind::DataMap);
}

/// The chunk index table of `/data` in the chunked image: (byte offset, count).
fn chunk_indexes(bytes: &[u8]) -> (usize, u64) {
    let image = open(bytes);
    let inode = image.lookup("/data").unwrap();
    let (off, format, count) = inode
        .metadata()
        .raw()
        .chunk_table()
        .unwrap()
        .expect("/data is chunked");
    assert!(format.has_indexes(), "mkfs --blobdev writes chunk indexes");
    (off as usize, count)
}

fn chunk_index_mut(bytes: &mut [u8], at: usize) -> &mut ChunkIndex {
    ChunkIndex::mut_from_prefix(&mut bytes[at..]).unwrap().0
}

fn with_blob(bytes: &[u8], blob: &[u8]) -> Image {
    ImageBuilder::new(bytes.to_vec())
        .device(blob.to_vec())
        .build()
        .expect("opens")
}

#[test]
fn hostile_chunk_index_past_the_device() {
    let Some(f) = fixture() else { return };
    let (table, count) = chunk_indexes(&f.chunked);
    assert!(count >= 1);
    // The undamaged image reads back.
    let good = with_blob(&f.chunked, &f.blob);
    assert_eq!(
        good.read("/data").unwrap(),
        tests::tree::pattern(2, 16 * 4096)
    );
    // Damage the last chunk.
    let last = (count - 1) as usize;
    let chunk_len = 16 * 4096 / count;
    let blob_blocks = (f.blob.len() / 4096) as u32;
    for (what, blk) in [("far past", 0xffff_fff0u32), ("just past", blob_blocks)] {
        let bad = damaged(&f.chunked, |b| {
            chunk_index_mut(b, table + 8 * last).startblk_lo = blk.into();
        });
        let image = with_blob(&bad, &f.blob);
        let img = image.clone();
        let r = bounded("read", move || img.read("/data").map(|v| v.len()));
        assert!(
            matches!(r, Err(Error::Corrupt { .. } | Error::Io { .. })),
            "chunk {what} the device: {r:?}"
        );
        let mut buf = [0u8; 16];
        let r = image.read_at("/data", last as u64 * chunk_len, &mut buf);
        assert!(
            matches!(r, Err(Error::Corrupt { .. } | Error::Io { .. })),
            "read_at chunk {what} the device: {r:?}"
        );
        if count > 1 {
            assert_eq!(image.read_at("/data", 0, &mut buf).unwrap(), 16);
        }
    }
}

#[test]
fn hostile_device_id_past_the_table() {
    let Some(f) = fixture() else { return };
    let (table, count) = chunk_indexes(&f.chunked);
    let last = table + 8 * (count as usize - 1);
    let sb = SuperBlock::parse(&f.chunked).unwrap();
    assert_eq!(sb.extra_devices(), 1);
    assert_eq!(sb.device_id_mask(), 1);
    // With one extra device the mask (1) keeps every id in the table; claim three
    // devices (mask 3) and point a chunk at device 3, which the table does not have...
    let bad = damaged(&f.chunked, |b| {
        let sbm = SuperBlock::mut_from_bytes(&mut b[1024..1024 + 128]).unwrap();
        sbm.extra_devices = 2.into();
        chunk_index_mut(b, last).device_id = 3.into();
    });
    let image = with_blob(&bad, &f.blob);
    let img = image.clone();
    let r = bounded("read", move || img.read("/data").map(|v| v.len()));
    assert!(
        matches!(r, Err(Error::Corrupt { .. } | Error::MissingDevice { .. })),
        "device id past the table: {r:?}"
    );
    let r = image.extents("/data", 0..16 * 4096);
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "map of a chunk on device 3 of 2: {r:?}"
    );
    // ... and a device id that the mask keeps but no source was given for.
    let bad = damaged(&f.chunked, |b| {
        chunk_index_mut(b, last).device_id = 1.into();
    });
    let image = Image::from_source(bad).unwrap();
    let r = image.read("/data");
    assert!(
        matches!(r, Err(Error::MissingDevice { index: 1, .. })),
        "no source for device 1: {r:?}"
    );
}

/// The LZ4 image with `/zeros` (256 KiB of zeros, compressed) claiming 4 GiB.
fn lz4_claiming_4_gib(f: &Fixture) -> Image {
    let image = open(&f.lz4);
    let md = image.metadata("/zeros").unwrap();
    assert!(
        md.layout().is_compressed(),
        "mkfs -zlz4 compressed /zeros: {:?}",
        md.layout()
    );
    assert_eq!(image.read("/zeros").unwrap(), vec![0u8; 256 * 1024]);
    let bad = damaged(&f.lz4, |b| {
        extended_inode(b, "/zeros").i_size = (4u64 << 30).into()
    });
    let image = open(&bad);
    assert_eq!(image.metadata("/zeros").unwrap().len(), 4 << 30);
    image
}

#[test]
fn hostile_compressed_extent_claiming_4_gib() {
    let Some(f) = fixture() else { return };
    let image = lz4_claiming_4_gib(f);
    // The last (here: only) extent now runs to the claimed end, so its pcluster does not
    // decode to what the extent claims; past it, the map runs out of lcluster indexes.
    for off in [0, 256 * 1024, 1 << 31, (4 << 30) - 4096] {
        let img = image.clone();
        let r = bounded("read_at past the data", move || {
            let mut buf = vec![0u8; 64 * 1024];
            img.read_at("/zeros", off, &mut buf)
        });
        assert!(
            matches!(r, Err(Error::Corrupt { .. })),
            "read_at {off} of a 4 GiB claim: {r:?}"
        );
    }
    let img = image.clone();
    let r = bounded("extents 4 GiB", move || {
        img.extents("/zeros", 0..u64::MAX).map(|v| v.len())
    });
    assert!(
        matches!(r, Err(Error::Corrupt { .. } | Error::Unsupported { .. })),
        "map of a 4 GiB compressed claim: {r:?}"
    );
}

/// Reading the whole file must fail before allocating what the inode claims (an earlier
/// reader zero-filled the claimed 4 GiB first).
#[test]
fn hostile_compressed_4_gib_read_allocates_nothing() {
    let Some(f) = fixture() else { return };
    let image = lz4_claiming_4_gib(f);
    let r = bounded("read 4 GiB", move || image.read("/zeros").map(|v| v.len()));
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "4 GiB compressed claim: {r:?}"
    );
    // The same for a flat file of 12 KiB claiming 4 GiB in a small image.
    let bad = damaged(&f.plain, |b| {
        extended_inode(b, "/big").i_size = (4u64 << 30).into()
    });
    let image = open(&bad);
    let r = bounded("read 4 GiB flat", move || {
        image.read("/big").map(|v| v.len())
    });
    assert!(
        matches!(r, Err(Error::Corrupt { .. } | Error::Io { .. })),
        "4 GiB flat claim: {r:?}"
    );
}

#[test]
fn hostile_symlink_loops() {
    let Some(f) = fixture() else { return };
    let image = open(&f.plain);
    for p in ["/loop-a", "/self-link", "/loop-b/x", "/chain0"] {
        let img = image.clone();
        let r = bounded(p, move || img.metadata(p));
        assert_corrupt(p, r, CorruptKind::PathLimit);
    }
    // The end of the chain is 20 hops from chain40: within the limit.
    assert_eq!(
        image.read("/chain40").unwrap(),
        tests::tree::pattern(1, 3 * 4096)
    );
    // `..` never climbs above the root: the target resolves inside the image.
    assert!(matches!(image.metadata("/escape"), Err(Error::NotFound(_))));
    // The symlink itself is still readable.
    assert_eq!(image.read_link("/loop-a").unwrap(), PathBuf::from("loop-b"));
    // A tighter limit set by the embedder applies.
    let image = ImageBuilder::new(f.plain.clone())
        .limits(Limits {
            max_symlinks: 5,
            ..Limits::default()
        })
        .build()
        .unwrap();
    assert_corrupt(
        "chain of 20 with limit 5",
        image.metadata("/chain40"),
        CorruptKind::PathLimit,
    );
    assert!(image.metadata("/chain56").is_ok());
    // A symlink whose size claims more than PATH_MAX is refused before reading it.
    let bad = damaged(&f.plain, |b| {
        extended_inode(b, "/loop-a").i_size = (1u64 << 40).into()
    });
    let image = open(&bad);
    assert_corrupt(
        "huge symlink",
        image.read_link("/loop-a"),
        CorruptKind::DataMap,
    );
}

/// Rename `/names/<from>` to `to` (same length) in place.
fn rename(base: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = dirent_at(base, "/names", from);
    damaged(base, |b| b[at.name..at.name + to.len()].copy_from_slice(to))
}

#[test]
fn hostile_name_containing_a_slash() {
    let Some(f) = fixture() else { return };
    // "c/c" sorts where "ccc" was, so the block stays sorted.
    let bad = rename(&f.plain, b"ccc", b"c/c");
    let image = open(&bad);
    // A path cannot name it: "/names/c/c" is "c", then "c" inside it.
    assert!(matches!(
        image.metadata("/names/c/c"),
        Err(Error::NotFound(_))
    ));
    // Listing passes the raw name through, or refuses it; it never splits it.
    let names: Vec<Vec<u8>> = match image
        .read_dir("/names")
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(v) => v.iter().map(|e| e.name().to_vec()).collect(),
        Err(e) => {
            assert!(e.is_corrupt(), "{e:?}");
            Vec::new()
        }
    };
    assert!(!names.iter().any(|n| n == b"c"), "{names:?}");
    // `erofs fsck` reports the name; extract refuses it.
    cli_refuses("slash", &bad, "contains '/' or NUL", "unsafe name");
}

#[test]
fn hostile_extract_refuses_bad_names() {
    let Some(f) = fixture() else { return };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // `..` for a regular file, and `.`.
        ("dotdot", rename(&f.plain, b"zz", b".."), "unsafe name"),
        (
            "dot",
            {
                // "zz" is the last entry: a 1-byte name ends at the first NUL.
                let at = dirent_at(&f.plain, "/names", b"zz");
                damaged(&f.plain, |b| {
                    b[at.name..at.name + 2].copy_from_slice(b".\0")
                })
            },
            "unsafe name",
        ),
        // A NUL inside a name that is not the last one.
        ("nul", rename(&f.plain, b"bbb", b"b\0b"), "unsafe name"),
        // Leading "../" that would climb out of DEST.
        ("climb", rename(&f.plain, b"ddd", b"../"), "unsafe name"),
        // An absolute-looking name.
        ("absolute", rename(&f.plain, b"aaa", b"/et"), "unsafe name"),
    ];
    for (name, bytes, needle) in &cases {
        let root = f.dir.join(format!("x-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let dest = root.join("dest");
        let x = cli(name, bytes, &["extract"], &[&dest]);
        assert!(!x.status.success(), "{name}: extract succeeded");
        assert!(
            stderr(&x).contains(needle),
            "{name}: {:?} not in {}",
            needle,
            stderr(&x)
        );
        let beside: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(beside.iter().all(|n| n == "dest"), "{name}: {beside:?}");
        assert!(!Path::new("/et").exists());
    }
    // An empty name: two dirents whose names start at the same offset.
    let b_at = dirent_at(&f.plain, "/names", b"bbb");
    let c_at = dirent_at(&f.plain, "/names", b"ccc");
    let bad = damaged(&f.plain, |b| {
        let off = dirent_mut(b, b_at.dirent).nameoff;
        dirent_mut(b, c_at.dirent).nameoff = off;
    });
    assert_corrupt(
        "empty name",
        open(&bad)
            .read_dir("/names")
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>()),
        CorruptKind::Directory,
    );
    let root = f.dir.join("x-empty");
    let _ = std::fs::remove_dir_all(&root);
    let x = cli("empty", &bad, &["extract"], &[&root.join("dest")]);
    assert!(!x.status.success(), "empty name: extract succeeded");
    // The undamaged image extracts.
    let root = f.dir.join("x-good");
    let _ = std::fs::remove_dir_all(&root);
    let x = cli("good", &f.plain, &["extract"], &[&root.join("dest")]);
    assert!(x.status.success(), "{}", stderr(&x));
    assert_eq!(std::fs::read(root.join("dest/names/ccc")).unwrap(), b"ccc");
}
