//! `erofs-format` against real images: trees built at test time, imaged by `mkfs.erofs` with
//! several option sets, parsed with `erofs-format` alone (the whole image in memory), and
//! compared with what `dump.erofs` prints for the same image and with the source tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use erofs_format::Nid;
use erofs_format::checksum::verify_superblock_checksum;
use erofs_format::chunk::{ChunkMapping, ChunkTable};
use erofs_format::device::DeviceSlot;
use erofs_format::dirent::DirBlock;
use erofs_format::inode::{DataLayout, FileType, Inode, InodeContext, InodeData};
use erofs_format::superblock::{FeatureCompat, FeatureIncompat, SuperBlock};
use erofs_format::xattr::{InlineXattrs, LongPrefix, LongPrefixes, Xattr, short_prefix};

// ---------------------------------------------------------------------------------------
// A tiny image reader built from erofs-format alone.

/// An image read whole into memory, plus its extra devices (blobs).
struct Image {
    bytes: Vec<u8>,
    devices: Vec<Vec<u8>>,
}

impl Image {
    fn open(path: &Path, blobs: &[PathBuf]) -> Image {
        Image {
            bytes: fs::read(path).unwrap(),
            devices: blobs.iter().map(|b| fs::read(b).unwrap()).collect(),
        }
    }

    fn sb(&self) -> &SuperBlock {
        SuperBlock::parse(&self.bytes).expect("superblock")
    }

    fn ctx(&self) -> InodeContext {
        InodeContext::new(self.sb()).unwrap()
    }

    fn slice(&self, offset: u64, len: u64) -> &[u8] {
        let start = usize::try_from(offset).unwrap();
        let end = start + usize::try_from(len).unwrap();
        &self.bytes[start..end]
    }

    fn inode(&self, nid: Nid) -> Inode {
        let ctx = self.ctx();
        let off = ctx.nid_offset(nid).unwrap() as usize;
        let end = (off + 64).min(self.bytes.len());
        Inode::parse(&self.bytes[off..end], nid, &ctx)
            .unwrap_or_else(|e| panic!("inode {nid}: {e}"))
    }

    /// The device's bytes: 0 is the primary image, k the k-th blob.
    fn device(&self, id: u16) -> &[u8] {
        if id == 0 {
            &self.bytes
        } else {
            &self.devices[usize::from(id) - 1]
        }
    }

    /// The full data of an uncompressed inode.
    fn data(&self, ino: &Inode) -> Vec<u8> {
        let bs = self.sb().block_size();
        let mut out = Vec::new();
        match ino.data {
            InodeData::Flat { blkaddr } => {
                match ino.flat_extent().unwrap() {
                    Some((off, len)) => out.extend_from_slice(self.slice(off, len)),
                    // All inline, or a FLAT_PLAIN hole (null start block).
                    None if blkaddr.is_none() && ino.layout == DataLayout::FlatPlain => {
                        out.resize(ino.size as usize, 0)
                    }
                    None => {}
                }
                if let Some((off, len)) = ino.inline_tail().unwrap() {
                    out.extend_from_slice(self.slice(off, len));
                }
            }
            InodeData::Chunked { .. } => {
                let (off, format, count) = ino.chunk_table().unwrap().unwrap();
                let table = ChunkTable::parse(&self.bytes[off as usize..], format, count).unwrap();
                let chunk = bs << format.blkbits();
                let mask = self.sb().device_id_mask();
                for i in 0..count {
                    let len = chunk.min(ino.size - i * chunk) as usize;
                    match table.get(i as usize, format, mask).unwrap() {
                        ChunkMapping::Hole => out.resize(out.len() + len, 0),
                        ChunkMapping::Mapped { device_id, blkaddr } => {
                            let dev = self.device(device_id);
                            let start = (blkaddr.0 * bs) as usize;
                            out.extend_from_slice(&dev[start..start + len]);
                        }
                    }
                }
            }
            other => panic!("nid {}: no data in {other:?}", ino.nid),
        }
        assert_eq!(out.len() as u64, ino.size, "data size of nid {}", ino.nid);
        out
    }

    /// All entries of a directory, in on-disk order, every block checked and sorted.
    fn read_dir(&self, dir: &Inode) -> Vec<(Vec<u8>, Nid, u8)> {
        assert_eq!(dir.file_type, FileType::Directory);
        let data = self.data(dir);
        let bs = self.sb().block_size() as usize;
        let mut out: Vec<(Vec<u8>, Nid, u8)> = Vec::new();
        for block in data.chunks(bs) {
            let view =
                DirBlock::parse(block).unwrap_or_else(|e| panic!("dir nid {}: {e}", dir.nid));
            view.check_sorted().unwrap();
            if let Some(prev) = out.last() {
                assert!(prev.0.as_slice() < view.first_name(), "blocks out of order");
            }
            for e in view.iter() {
                // The binary search finds every entry of its block.
                assert_eq!(view.lookup(e.name).unwrap().nid, e.nid);
                out.push((e.name.to_vec(), e.nid, e.file_type_code));
            }
        }
        out
    }

    /// Long xattr prefixes: absolute offset, or inside the packed inode's data.
    fn long_prefixes(&self) -> Vec<Vec<u8>> {
        let sb = self.sb();
        if sb.xattr_prefix_count == 0 {
            return Vec::new();
        }
        let start = u64::from(sb.xattr_prefix_start.get()) * 4;
        let packed;
        let bytes: &[u8] = match sb.packed_nid() {
            Some(nid) if !sb.compat().contains(FeatureCompat::PLAIN_XATTR_PFX) => {
                packed = self.data(&self.inode(nid));
                &packed[start as usize..]
            }
            _ => &self.bytes[start as usize..],
        };
        LongPrefixes::new(bytes, sb.xattr_prefix_count)
            .map(|p| {
                let p: LongPrefix<'_> = p.unwrap();
                [p.base(), p.infix].concat()
            })
            .collect()
    }

    /// All xattrs of an inode as full names, shared ones resolved.
    fn xattrs(&self, ino: &Inode) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut out = BTreeMap::new();
        if ino.xattr_size() == 0 {
            return out;
        }
        let prefixes = self.long_prefixes();
        let full = |x: Xattr<'_>| -> Vec<u8> {
            let prefix = match x.long_prefix_index() {
                Some(i) => prefixes[usize::from(i)].clone(),
                None => short_prefix(x.name_index).unwrap().to_vec(),
            };
            [prefix.as_slice(), x.name].concat()
        };
        let area = self.slice(ino.xattr_offset().unwrap(), u64::from(ino.xattr_size()));
        let inline = InlineXattrs::parse(area).unwrap();
        for x in inline.entries() {
            let x = x.unwrap();
            out.insert(full(x), x.value.to_vec());
        }
        for id in inline.shared_ids() {
            let off = self.sb().shared_xattr_offset(id).unwrap() as usize;
            let (x, _) = Xattr::parse(&self.bytes[off..]).unwrap();
            out.insert(full(x), x.value.to_vec());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// dump.erofs

fn dump(img: &Path, blobs: &[PathBuf], args: &[&str]) -> String {
    let tool = tests::require_tool("dump.erofs").expect("dump.erofs");
    let mut cmd = Command::new(tool);
    cmd.env("TZ", "UTC");
    for b in blobs {
        cmd.arg(format!("--device={}", b.display()));
    }
    tests::run(cmd.args(args).arg(img))
}

/// `Key: value` pairs of `dump.erofs -s`, keys without the "Filesystem " prefix.
fn dump_superblock(img: &Path, blobs: &[PathBuf]) -> BTreeMap<String, String> {
    dump(img, blobs, &["-s"])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().trim_start_matches("Filesystem ").to_string(),
                v.trim().to_string(),
            )
        })
        .collect()
}

/// The numbers of `dump.erofs --nid=N`.
#[derive(Debug, PartialEq)]
struct DumpInode {
    size: u64,
    nid: u64,
    links: u32,
    layout: u8,
    inode_size: u32,
    xattr_size: u32,
    uid: u32,
    gid: u32,
    access: String,
    timestamp: String,
}

fn dump_inode(img: &Path, blobs: &[PathBuf], nid: Nid) -> DumpInode {
    let out = dump(img, blobs, &[&format!("--nid={}", nid.0)]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |key: &str| -> &str {
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("no {key} in {out}"));
        words[i + 1]
    };
    let num = |key: &str| after(key).parse::<u64>().unwrap();
    let ts = out
        .lines()
        .find_map(|l| l.strip_prefix("Timestamp: "))
        .unwrap()
        .trim()
        .to_string();
    // "Inode size: 64   Xattr size: 28"
    let isize_line = out.lines().find(|l| l.starts_with("Inode size:")).unwrap();
    let nums: Vec<u32> = isize_line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    DumpInode {
        size: num("Size:"),
        nid: num("NID:"),
        links: num("Links:") as u32,
        layout: num("Layout:") as u8,
        inode_size: nums[0],
        xattr_size: nums[1],
        uid: num("Uid:") as u32,
        gid: num("Gid:") as u32,
        access: after("Access:").to_string(),
        timestamp: ts,
    }
}

// ---------------------------------------------------------------------------------------
// Time formatting (UTC), to compare with dump.erofs: GNU date(1) does the calendar.

/// `secs` formatted by `date -u` with `format`.
fn gnu_date(secs: u64, format: &str) -> String {
    tests::run(Command::new("date").args(["-u", "-d", &format!("@{secs}"), format]))
        .trim_end()
        .to_string()
}

/// `2026-11-28 05:39:12.879275528`, as dump.erofs prints inode times.
fn fmt_timestamp(secs: u64, nsec: u32) -> String {
    format!("{}.{nsec:09}", gnu_date(secs, "+%Y-%m-%d %H:%M:%S"))
}

/// `Sat Nov 28 05:39:12 2026`, as ctime(3) prints the build time.
fn fmt_ctime(secs: u64) -> String {
    gnu_date(secs, "+%a %b %e %H:%M:%S %Y")
}

#[test]
fn time_formatting() {
    assert_eq!(fmt_ctime(0), "Thu Jan  1 00:00:00 1970");
    assert_eq!(fmt_ctime(1_700_000_000), "Tue Nov 14 22:13:20 2023");
    assert_eq!(
        fmt_timestamp(1_700_000_000, 5),
        "2023-11-14 22:13:20.000000005"
    );
}

// ---------------------------------------------------------------------------------------
// Source trees

/// Builds the test tree; returns its root.
fn make_tree(root: &Path, with_xattrs: bool) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::create_dir_all(src.join("many")).unwrap();
    fs::write(src.join("hello.txt"), b"hello, erofs\n").unwrap();
    fs::write(src.join("empty.txt"), b"").unwrap();
    // Several blocks plus a tail; not a multiple of 512 either.
    let big: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(src.join("dir/big.bin"), &big).unwrap();
    // Exactly two 4 KiB blocks.
    fs::write(src.join("dir/aligned.bin"), vec![0x5Au8; 8192]).unwrap();
    // Zeros: a chunked image may store them as a hole.
    fs::write(src.join("dir/zeros.bin"), vec![0u8; 12_288]).unwrap();
    fs::write(src.join("dir/sub/deep.txt"), b"deep\n").unwrap();
    symlink("hello.txt", src.join("link")).unwrap();
    symlink("x".repeat(300), src.join("longlink")).unwrap();
    fs::hard_link(src.join("hello.txt"), src.join("hardlink")).unwrap();
    // Enough entries to need several directory blocks, with names up to 255 bytes.
    for i in 0..120 {
        fs::write(
            src.join(format!("many/entry-{i:04}-{}", "n".repeat(i % 40))),
            b"",
        )
        .unwrap();
    }
    fs::write(src.join(format!("many/{}", "L".repeat(255))), b"long").unwrap();
    let mode =
        |p: &str, m: u32| fs::set_permissions(src.join(p), fs::Permissions::from_mode(m)).unwrap();
    mode("dir/sub/deep.txt", 0o4755);
    mode("empty.txt", 0o600);
    std::os::unix::fs::chown(src.join("dir/big.bin"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(src.join("dir/sub"), Some(70_000), Some(80_000)).unwrap();
    tests::run(Command::new("mkfifo").arg(src.join("fifo")));
    tests::run(
        Command::new("mknod")
            .arg(src.join("chr"))
            .args(["c", "1", "3"]),
    );
    tests::run(
        Command::new("mknod")
            .arg(src.join("blk"))
            .args(["b", "7", "200"]),
    );
    // Binding creates the socket inode; it stays after the listener is dropped.
    drop(std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap());
    if with_xattrs {
        let set = |p: &str, n: &str, v: &str| {
            let tool = tests::require_tool("setfattr").expect("setfattr");
            tests::run(Command::new(tool).args(["-n", n, "-v", v]).arg(src.join(p)));
        };
        // One value on three inodes: shared with -x1.
        for p in ["hello.txt", "dir/big.bin", "dir"] {
            set(p, "user.common", "shared-value");
        }
        set("hello.txt", "user.own", "mine");
        set("dir", "trusted.overlay.opaque", "y");
        set("dir/sub", "trusted.overlay.redirect", "/elsewhere");
        set(
            "empty.txt",
            "security.selinux",
            "system_u:object_r:etc_t:s0",
        );
        set("dir/aligned.bin", "user.empty", "");
    }
    src
}

/// Xattrs of a source file, via getfattr (hex-encoded values).
fn source_xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let tool = tests::require_tool("getfattr").expect("getfattr");
    let out = tests::run(
        Command::new(tool)
            .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
            .arg(path),
    );
    out.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, "0x"));
            let v = v.trim_start_matches("0x");
            let bytes = (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
                .collect();
            (k.as_bytes().to_vec(), bytes)
        })
        .collect()
}

fn file_type_of(meta: &fs::Metadata) -> FileType {
    FileType::from_mode((meta.mode() & 0o170000) as u16).unwrap()
}

// ---------------------------------------------------------------------------------------
// The checks

struct Expect {
    /// Every inode must be compact (`Some(false)`) / extended (`Some(true)`).
    extended: Option<bool>,
    block_size: u64,
    /// Chunk-based regular files with this chunk size, and whether indexes are expected.
    chunked: Option<(u64, bool)>,
    xattrs: bool,
    /// Fixed build time (`-T`).
    build_time: Option<u64>,
    /// The build time is also every file's mtime (`-T` without `--mkfs-time`).
    all_time: bool,
}

fn mkfs(dir: &Path, name: &str, src: &Path, opts: &[&str]) -> PathBuf {
    let tool = tests::require_tool("mkfs.erofs").expect("mkfs.erofs");
    let img = dir.join(name);
    tests::run(Command::new(tool).args(opts).arg(&img).arg(src));
    img
}

fn check_image(img_path: &Path, blobs: &[PathBuf], src: &Path, expect: &Expect) {
    let img = Image::open(img_path, blobs);
    let sb = img.sb();

    // Superblock against dump.erofs -s.
    let d = dump_superblock(img_path, blobs);
    assert_eq!(d["magic number"], "0xE0F5E1E2");
    assert_eq!(d["blocksize"], sb.block_size().to_string());
    assert_eq!(sb.block_size(), expect.block_size);
    // dump.erofs prints the total over all devices.
    let device_blocks: u64 = if blobs.is_empty() {
        0
    } else {
        let off = sb.device_table_offset() as usize;
        DeviceSlot::table(&img.bytes[off..], sb.extra_devices())
            .unwrap()
            .iter()
            .map(|s| s.blocks(sb.has_48bit()))
            .sum()
    };
    assert_eq!(d["blocks"], (sb.blocks() + device_blocks).to_string());
    assert_eq!(
        d["inode metadata start block"],
        sb.meta_blkaddr.get().to_string()
    );
    assert_eq!(
        d["shared xattr metadata start block"],
        sb.xattr_blkaddr.get().to_string()
    );
    assert_eq!(d["root nid"], sb.root_nid().0.to_string());
    assert_eq!(d["inode count"], sb.inos.get().to_string());
    assert_eq!(d["sb_size"], sb.sb_size().to_string());
    assert_eq!(
        d["compatible features"],
        sb.compat().names().collect::<Vec<_>>().join(" ")
    );
    assert_eq!(
        d["incompatible features"],
        sb.incompat().names().collect::<Vec<_>>().join(" ")
    );
    if let Some(dist) = sb.lz4_max_distance() {
        assert_eq!(d["lz4_max_distance"], dist.to_string());
    }
    let u = sb.uuid;
    let hex =
        |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        d["UUID"],
        format!(
            "{}-{}-{}-{}-{}",
            hex(0..4),
            hex(4..6),
            hex(6..8),
            hex(8..10),
            hex(10..16)
        )
    );
    assert_eq!(d["created"], fmt_ctime(sb.build_time()));
    if let Some(t) = expect.build_time {
        assert_eq!(sb.build_time(), t);
    }

    // mkfs.erofs always writes a checksum; it must verify.
    assert!(sb.compat().contains(FeatureCompat::SB_CHKSUM));
    verify_superblock_checksum(&img.bytes).unwrap();

    // Devices.
    assert_eq!(usize::from(sb.extra_devices()), blobs.len());
    if !blobs.is_empty() {
        assert!(sb.incompat().contains(FeatureIncompat::DEVICE_TABLE));
        let off = sb.device_table_offset() as usize;
        let slots = DeviceSlot::table(&img.bytes[off..], sb.extra_devices()).unwrap();
        for (slot, blob) in slots.iter().zip(&img.devices) {
            assert_eq!(
                slot.blocks(sb.has_48bit()),
                blob.len() as u64 / sb.block_size()
            );
        }
    }

    // Walk the tree from the root, comparing with the source and with dump.erofs.
    let root = img.inode(sb.root_nid());
    let mut inodes_seen = BTreeSet::new();
    let mut chunked_files = 0;
    let mut pending = vec![(src.to_path_buf(), root, sb.root_nid())];
    while let Some((path, dir, parent)) = pending.pop() {
        inodes_seen.insert(dir.nid);
        check_inode(&img, img_path, blobs, &path, &dir, expect);
        let entries = img.read_dir(&dir);
        // dump.erofs --ls lists the same (nid, type, name) rows in the same order.
        let listed: Vec<(u64, u8, Vec<u8>)> =
            dump(img_path, blobs, &["--ls", &format!("--nid={}", dir.nid.0)])
                .lines()
                .skip_while(|l| !l.trim_start().starts_with("NID TYPE"))
                .skip(1)
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    let nid = w.next()?.parse().ok()?;
                    let ty = w.next()?.parse().ok()?;
                    Some((nid, ty, w.next()?.as_bytes().to_vec()))
                })
                .collect();
        let ours: Vec<(u64, u8, Vec<u8>)> = entries
            .iter()
            .map(|(name, nid, code)| (nid.0, *code, name.clone()))
            .collect();
        assert_eq!(listed, ours, "dump.erofs --ls of {}", path.display());
        let names: BTreeSet<Vec<u8>> = entries.iter().map(|e| e.0.clone()).collect();
        let mut want: BTreeSet<Vec<u8>> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_encoded_bytes())
            .collect();
        if !dir.dot_omitted() {
            want.insert(b".".to_vec());
        }
        want.insert(b"..".to_vec());
        assert_eq!(names, want, "entries of {}", path.display());
        for (name, nid, code) in entries {
            if name == b"." {
                assert_eq!(nid, dir.nid);
                continue;
            }
            if name == b".." {
                assert_eq!(nid, parent);
                continue;
            }
            let child_path = path.join(String::from_utf8(name).unwrap());
            let meta = fs::symlink_metadata(&child_path).unwrap();
            let ino = img.inode(nid);
            assert_eq!(FileType::from_dirent(code), Some(ino.file_type));
            assert_eq!(
                ino.file_type,
                file_type_of(&meta),
                "{}",
                child_path.display()
            );
            match ino.file_type {
                FileType::Directory => {
                    pending.push((child_path, ino, dir.nid));
                    continue;
                }
                FileType::Regular => {
                    let data = img.data(&ino);
                    assert_eq!(
                        data,
                        fs::read(&child_path).unwrap(),
                        "{}",
                        child_path.display()
                    );
                    if matches!(ino.data, InodeData::Chunked { .. }) {
                        chunked_files += 1;
                    }
                    if let (Some((chunk, indexes)), InodeData::Chunked { format }) =
                        (expect.chunked, ino.data)
                    {
                        // mkfs.erofs may widen the chunks of a file whose data is
                        // contiguous (one big chunk), never narrow them.
                        assert!(expect.block_size << format.blkbits() >= chunk);
                        assert_eq!(format.has_indexes(), indexes);
                    }
                }
                FileType::Symlink => {
                    let target = fs::read_link(&child_path).unwrap();
                    assert_eq!(img.data(&ino), target.into_os_string().into_encoded_bytes());
                }
                FileType::CharDevice | FileType::BlockDevice => {
                    let rdev = meta.rdev();
                    let major = ((rdev >> 8) & 0xfff) as u32 | ((rdev >> 32) & !0xfff) as u32;
                    let minor = (rdev & 0xff) as u32 | ((rdev >> 12) & !0xff) as u32;
                    assert_eq!(ino.data.rdev_major_minor(), Some((major, minor)));
                }
                FileType::Fifo | FileType::Socket => assert_eq!(ino.data, InodeData::None),
            }
            if inodes_seen.insert(nid) {
                check_inode(&img, img_path, blobs, &child_path, &ino, expect);
            }
        }
    }
    assert_eq!(inodes_seen.len() as u64, sb.inos.get(), "inode count");
    if expect.chunked.is_some() {
        assert!(chunked_files > 0, "no chunk-based files found");
    }
}

fn check_inode(
    img: &Image,
    img_path: &Path,
    blobs: &[PathBuf],
    path: &Path,
    ino: &Inode,
    expect: &Expect,
) {
    let meta = fs::symlink_metadata(path).unwrap();
    let what = path.display();
    assert_eq!(u32::from(ino.permissions()), meta.mode() & 0o7777, "{what}");
    assert_eq!(u32::from(ino.mode), meta.mode(), "{what}");
    assert_eq!((ino.uid, ino.gid), (meta.uid(), meta.gid()), "{what}");
    if ino.file_type != FileType::Directory {
        assert_eq!(u64::from(ino.nlink), meta.nlink(), "{what}");
    }
    if matches!(ino.file_type, FileType::Regular | FileType::Symlink) {
        assert_eq!(ino.size, meta.len(), "{what}");
    }
    if let Some(ext) = expect.extended {
        assert_eq!(ino.is_extended(), ext, "{what}");
    }
    let sb = img.sb();
    if expect.all_time {
        // -T with --all-time (the default): every inode carries the build time.
        assert_eq!((ino.mtime, ino.mtime_nsec), (sb.build_time(), 0), "{what}");
    } else if ino.is_extended() {
        assert_eq!(
            (ino.mtime as i64, i64::from(ino.mtime_nsec)),
            (meta.mtime(), meta.mtime_nsec()),
            "{what}"
        );
    } else if sb.has_48bit() {
        // 48-bit compact inodes keep whole seconds relative to the epoch.
        assert_eq!(ino.mtime as i64, meta.mtime(), "{what}");
        assert_eq!(ino.mtime_nsec, sb.fixed_nsec.get(), "{what}");
    } else {
        // Otherwise mkfs.erofs only picks a compact inode when its mtime is the build time.
        assert_eq!(ino.mtime, sb.epoch.get(), "{what}");
    }
    if expect.xattrs {
        assert_eq!(img.xattrs(ino), source_xattrs(path), "xattrs of {what}");
    }

    let d = dump_inode(img_path, blobs, ino.nid);
    assert_eq!(
        d,
        DumpInode {
            size: ino.size,
            nid: ino.nid.0,
            links: ino.nlink,
            layout: ino.layout.raw(),
            inode_size: ino.inode_size(),
            xattr_size: ino.xattr_size(),
            uid: ino.uid,
            gid: ino.gid,
            access: d.access.clone(),
            timestamp: fmt_timestamp(ino.mtime, ino.mtime_nsec),
        },
        "dump.erofs --nid={} ({what})",
        ino.nid
    );
    assert!(
        // dump.erofs prints only the rwx bits.
        d.access
            .starts_with(&format!("{:04o}/", ino.permissions() & 0o777)),
        "{} vs {:o}",
        d.access,
        ino.permissions()
    );
}

fn setup(name: &str, xattrs: bool) -> (tests::Scratch, PathBuf) {
    tests::require_tool("mkfs.erofs").expect("mkfs.erofs");
    tests::require_tool("dump.erofs").expect("dump.erofs");
    tests::require_root("mknod and chown in the source tree").expect("root");
    let dir = tests::scratch_dir(&format!("format_mkfs/{name}"));
    let src = make_tree(&dir, xattrs);
    (dir, src)
}

const DEFAULT: Expect = Expect {
    extended: None,
    block_size: 4096,
    chunked: None,
    xattrs: false,
    build_time: None,
    all_time: false,
};

#[test]
fn default_options() {
    let (dir, src) = setup("default", false);
    let img = mkfs(&dir, "default.erofs", &src, &[]);
    check_image(&img, &[], &src, &DEFAULT);
}

#[test]
fn force_inode_compact_with_fixed_time() {
    let (dir, src) = setup("compact", false);
    // Compact inodes cannot hold uid 70000: drop the big ids for this image.
    std::os::unix::fs::chown(src.join("dir/sub"), Some(1), Some(2)).unwrap();
    let img = mkfs(
        &dir,
        "compact.erofs",
        &src,
        &["-Eforce-inode-compact", "-T", "1700000000"],
    );
    let expect = Expect {
        extended: Some(false),
        build_time: Some(1_700_000_000),
        all_time: true,
        ..DEFAULT
    };
    check_image(&img, &[], &src, &expect);
}

#[test]
fn force_inode_extended() {
    let (dir, src) = setup("extended", false);
    let img = mkfs(&dir, "extended.erofs", &src, &["-Eforce-inode-extended"]);
    let expect = Expect {
        extended: Some(true),
        ..DEFAULT
    };
    check_image(&img, &[], &src, &expect);
}

#[test]
fn block_sizes() {
    let (dir, src) = setup("blocksizes", false);
    for bs in [512u64, 1024, 2048, 4096] {
        let img = mkfs(
            &dir,
            &format!("b{bs}.erofs"),
            &src,
            &["-b", &bs.to_string()],
        );
        let expect = Expect {
            block_size: bs,
            ..DEFAULT
        };
        check_image(&img, &[], &src, &expect);
    }
}

#[test]
fn chunked_block_map() {
    let (dir, src) = setup("chunked", false);
    let img = mkfs(&dir, "chunked.erofs", &src, &["--chunksize=4096"]);
    let expect = Expect {
        chunked: Some((4096, false)),
        ..DEFAULT
    };
    check_image(&img, &[], &src, &expect);
    let sb_img = Image::open(&img, &[]);
    assert!(
        sb_img
            .sb()
            .incompat()
            .contains(FeatureIncompat::CHUNKED_FILE)
    );
}

#[test]
fn chunked_forced_indexes() {
    let (dir, src) = setup("chunk-indexes", false);
    let img = mkfs(
        &dir,
        "indexes.erofs",
        &src,
        &["--chunksize=8192", "-Eforce-chunk-indexes"],
    );
    let expect = Expect {
        chunked: Some((8192, true)),
        ..DEFAULT
    };
    check_image(&img, &[], &src, &expect);
}

#[test]
fn chunked_with_blob_device() {
    let (dir, src) = setup("blobdev", false);
    let blob = dir.join("blob.bin");
    let img = mkfs(
        &dir,
        "blobdev.erofs",
        &src,
        &["--chunksize=4096", &format!("--blobdev={}", blob.display())],
    );
    let expect = Expect {
        chunked: Some((4096, true)),
        ..DEFAULT
    };
    check_image(&img, std::slice::from_ref(&blob), &src, &expect);
    // Chunks of the big file live on device 1.
    let image = Image::open(&img, &[blob]);
    let root = image.inode(image.sb().root_nid());
    let dir_nid = image
        .read_dir(&root)
        .into_iter()
        .find(|e| e.0 == b"dir")
        .unwrap()
        .1;
    let big_nid = image
        .read_dir(&image.inode(dir_nid))
        .into_iter()
        .find(|e| e.0 == b"big.bin")
        .unwrap()
        .1;
    let big = image.inode(big_nid);
    let (off, format, count) = big.chunk_table().unwrap().unwrap();
    let table = ChunkTable::parse(&image.bytes[off as usize..], format, count).unwrap();
    assert!(format.has_indexes(), "a blob device needs chunk indexes");
    // mkfs.erofs leaves the tag empty (the device is named by --device= / device=) and
    // maps the blob after the primary device in the unified address space.
    let sb = image.sb();
    let slots = DeviceSlot::table(
        &image.bytes[sb.device_table_offset() as usize..],
        sb.extra_devices(),
    )
    .unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].tag(), b"");
    assert!(slots[0].mapped_blkaddr(sb.has_48bit()) >= sb.blocks());
    assert_eq!(count, 20_000u64.div_ceil(4096 << format.blkbits()));
    assert_eq!(table.len() as u64, count);
    for i in 0..table.len() {
        assert!(matches!(
            table.get(i, format, image.sb().device_id_mask()),
            Some(ChunkMapping::Mapped { device_id: 1, .. })
        ));
    }
}

#[test]
fn xattrs_shared_and_long_prefix() {
    tests::require_tool("setfattr").expect("setfattr");
    tests::require_tool("getfattr").expect("getfattr");
    let (dir, src) = setup("xattrs", true);
    let img = mkfs(
        &dir,
        "xattrs.erofs",
        &src,
        &["-x1", "--xattr-prefix=trusted.overlay."],
    );
    let expect = Expect {
        xattrs: true,
        ..DEFAULT
    };
    check_image(&img, &[], &src, &expect);
    let image = Image::open(&img, &[]);
    let sb = image.sb();
    assert!(sb.incompat().contains(FeatureIncompat::XATTR_PREFIXES));
    assert_eq!(image.long_prefixes(), [b"trusted.overlay.".to_vec()]);
    // The value used by three inodes is shared (referenced by id), the one used by one
    // inode (`dir`'s long-prefixed trusted.overlay.opaque) is inline. (hello.txt is not
    // used here: its hard link makes mkfs.erofs count its xattrs twice.)
    let root = image.inode(sb.root_nid());
    let dir_nid = image
        .read_dir(&root)
        .into_iter()
        .find(|e| e.0 == b"dir")
        .unwrap()
        .1;
    let dir_inode = image.inode(dir_nid);
    let area = image.slice(
        dir_inode.xattr_offset().unwrap(),
        u64::from(dir_inode.xattr_size()),
    );
    let inline = InlineXattrs::parse(area).unwrap();
    assert_eq!(inline.shared_ids().len(), 1);
    assert_eq!(inline.entries().count(), 1);

    // With a higher tolerance (-x5: share only values used more than 5 times) nothing is
    // shared and every xattr is inline.
    let img2 = mkfs(&dir, "xattrs-inline.erofs", &src, &["-x5"]);
    check_image(&img2, &[], &src, &expect);
    let image = Image::open(&img2, &[]);
    let root = image.inode(image.sb().root_nid());
    let dir_nid = image
        .read_dir(&root)
        .into_iter()
        .find(|e| e.0 == b"dir")
        .unwrap()
        .1;
    let dir_inode = image.inode(dir_nid);
    let area = image.slice(
        dir_inode.xattr_offset().unwrap(),
        u64::from(dir_inode.xattr_size()),
    );
    let inline = InlineXattrs::parse(area).unwrap();
    assert_eq!(inline.shared_ids().len(), 0);
    assert_eq!(inline.entries().count(), 2);
}

#[test]
fn forty_eight_bit_layout() {
    let (dir, src) = setup("48bit", false);
    let img = mkfs(
        &dir,
        "48bit.erofs",
        &src,
        &["-E48bit,dot-omitted", "--mkfs-time", "-T", "1700000000"],
    );
    let expect = Expect {
        build_time: Some(1_700_000_000),
        ..DEFAULT
    };
    check_image(&img, &[], &src, &expect);
    let image = Image::open(&img, &[]);
    let sb = image.sb();
    assert!(sb.has_48bit());
    // The build time is split into a base (epoch) and an offset (build_time).
    assert_eq!(
        sb.epoch.get() + u64::from(sb.build_time.get()),
        1_700_000_000
    );
    let root = image.inode(sb.root_nid());
    assert!(root.dot_omitted());
    assert!(
        !root.is_extended(),
        "48-bit images can keep mtimes in compact inodes"
    );
    assert!(image.read_dir(&root).iter().all(|e| e.0 != b"."));
}
