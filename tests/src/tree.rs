//! Test trees: build a source tree with every kind of file EROFS can hold, take a
//! snapshot of any view of it (the tree itself, a kernel mount, an [`erofs_reader::Image`]),
//! and compare two snapshots entry by entry.
//!
//! ```no_run
//! use tests::tree::{self, TreeOptions, Compare};
//! let root = tests::scratch_dir("example/tree");
//! tree::build_tree(&root, &TreeOptions::default());
//! let want = tree::snapshot_dir(&root);
//! // ... mkfs.erofs IMAGE root, then:
//! // let got = tree::snapshot_image(&erofs_reader::Image::open("IMAGE").unwrap());
//! // tree::compare(&want, &got, &Compare::default()).unwrap();
//! ```
//!
//! Snapshots key entries by their path relative to the root (`""` is the root itself).
//! Hard links are recorded as a link group: the first path (in sorted order) of the
//! entries that share an inode.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

/// The kind of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl Kind {
    /// The kind for an `st_mode` value.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o020000 => Kind::CharDev,
            0o060000 => Kind::BlockDev,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            _ => return None,
        })
    }
}

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files and symlinks; 0 for others, directories are not compared).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Link count.
    pub nlink: u64,
    /// Device number as (major, minor) for device nodes.
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes, full names.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// Hash of the contents of a regular file.
    pub content_hash: Option<u64>,
    /// For entries with hard links: the first path of the link group.
    pub link_group: Option<PathBuf>,
    /// The inode identity inside the snapshot (st_ino or nid); used to build link groups.
    pub ino: u64,
}

/// A snapshot: every entry by relative path.
pub type Tree = BTreeMap<PathBuf, Entry>;

/// Hash of file contents as stored in [`Entry::content_hash`].
pub fn content_hash(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(data);
    h.write_u64(data.len() as u64);
    h.finish()
}

pub use crate::tools::pattern;

/// What to put in a tree.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// Only what compact (32-byte) inodes can hold: ids up to 65535. (Mtimes are
    /// still set; compact inodes lose them, compare with [`MtimeCheck::Ignore`].)
    pub compact: bool,
    /// Include device nodes (needs root).
    pub devices: bool,
    /// Include POSIX ACLs.
    pub acls: bool,
    /// Include a sparse file with holes.
    pub sparse: bool,
    /// Include a Unix socket (GNU tar skips sockets).
    pub socket: bool,
    /// Number of entries in the large directory.
    pub bigdir_entries: usize,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            compact: false,
            devices: true,
            acls: true,
            sparse: true,
            socket: true,
            bigdir_entries: 400,
        }
    }
}

/// The long xattr name prefixes the tree uses; pass each as `--xattr-prefix=` to
/// mkfs.erofs to get long-prefix entries.
pub const LONG_XATTR_PREFIXES: &[&str] = &["trusted.overlay.", "user.erofs-rs.long-prefix."];

/// Raw `system.posix_acl_*` value: version 2, then (tag, perm, id) entries.
pub fn acl_value(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn write_file(path: &Path, data: &[u8], perm: u32) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(data).unwrap();
    drop(f);
    fs::set_permissions(path, fs::Permissions::from_mode(perm)).unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

fn mknod(path: &Path, ft: FileType, perm: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        CWD,
        path,
        ft,
        Mode::from_raw_mode(perm),
        rustix::fs::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
    // mknod honours the umask; set the exact mode.
    if ft != FileType::Socket {
        fs::set_permissions(path, fs::Permissions::from_mode(perm)).unwrap();
    }
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// Build the standard test tree under `root` (which must exist and be empty).
///
/// It holds: empty, small and large files; files of sizes around the 512- and
/// 4096-byte block boundaries; a sparse file; a directory of `bigdir_entries` entries
/// spanning several blocks; a 255-byte name; short, long (4095-byte), dangling,
/// absolute and directory symlinks; hard links (2 and 3 names); character and block
/// devices, a FIFO and a socket; xattrs in the user, trusted and security namespaces,
/// one value shared by many files (mkfs.erofs makes it a shared xattr), long-prefix
/// names; POSIX access and default ACLs; uids/gids above 65535 (unless `compact`); odd
/// modes (setuid, sticky, 000); nanosecond mtimes on every entry.
pub fn build_tree(root: &Path, opts: &TreeOptions) {
    let p = |rel: &str| root.join(rel);
    let (big_uid, big_gid) = if opts.compact {
        (65000, 65535)
    } else {
        (100_000, 4_000_000_000)
    };

    write_file(&p("empty"), b"", 0o644);
    write_file(&p("small.txt"), b"hello, erofs\n", 0o644);
    let mut sizes = vec![1usize, 2, 100];
    for bs in [512usize, 4096] {
        for k in [1usize, 2, 3] {
            sizes.extend([k * bs - 1, k * bs, k * bs + 1]);
        }
    }
    sizes.sort_unstable();
    sizes.dedup();
    fs::create_dir(p("sizes")).unwrap();
    for (i, s) in sizes.iter().enumerate() {
        write_file(
            &p(&format!("sizes/size-{s:05}")),
            &pattern(i as u64 + 1, *s),
            0o644,
        );
    }
    // Large: several 64 KiB chunks and not a multiple of the block size.
    write_file(&p("large.bin"), &pattern(99, 3 * 1024 * 1024 + 1234), 0o600);
    if opts.sparse {
        // 4 MiB + 100 with data at 0, at 2 MiB and at the end; holes between.
        let f = fs::File::create(p("sparse.bin")).unwrap();
        f.set_len(4 * 1024 * 1024 + 100).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&pattern(7, 5000), 0).unwrap();
        f.write_all_at(&pattern(8, 70000), 2 * 1024 * 1024).unwrap();
        f.write_all_at(b"tail", 4 * 1024 * 1024 + 96).unwrap();
    }

    // Directories, deep and big.
    fs::create_dir_all(p("a/b/c/d/e")).unwrap();
    write_file(&p("a/b/c/d/e/deep.txt"), b"deep\n", 0o644);
    write_file(&p("a/b/file"), &pattern(3, 10000), 0o755);
    fs::create_dir(p("bigdir")).unwrap();
    for i in 0..opts.bigdir_entries {
        write_file(
            &p(&format!(
                "bigdir/entry-{i:05}-with-a-longer-name-to-fill-blocks"
            )),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }
    fs::create_dir(p("emptydir")).unwrap();
    let long_name = "n".repeat(250) + "-255x";
    assert_eq!(long_name.len(), 255);
    write_file(&p(&long_name), b"long name\n", 0o644);

    // Symlinks.
    std::os::unix::fs::symlink("small.txt", p("link-short")).unwrap();
    let long_target: String = (0..4095)
        .map(|i| {
            if i % 100 == 99 {
                '/'
            } else {
                (b'a' + (i % 26) as u8) as char
            }
        })
        .collect();
    std::os::unix::fs::symlink(&long_target, p("link-long")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("link-dangling")).unwrap();
    std::os::unix::fs::symlink("/a/b/file", p("link-absolute")).unwrap();
    std::os::unix::fs::symlink("a/b", p("link-dir")).unwrap();

    // Hard links.
    write_file(&p("hard-1"), &pattern(11, 6000), 0o640);
    fs::hard_link(p("hard-1"), p("a/hard-2")).unwrap();
    write_file(&p("tri-1"), b"three names\n", 0o644);
    fs::hard_link(p("tri-1"), p("tri-2")).unwrap();
    fs::hard_link(p("tri-1"), p("a/b/tri-3")).unwrap();

    // Special files.
    fs::create_dir(p("dev")).unwrap();
    if opts.devices {
        mknod(&p("dev/null"), FileType::CharacterDevice, 0o666, 1, 3);
        mknod(&p("dev/loop200"), FileType::BlockDevice, 0o660, 7, 200);
        mknod(
            &p("dev/bigdev"),
            FileType::CharacterDevice,
            0o600,
            300,
            70000,
        );
    }
    mknod(&p("dev/fifo"), FileType::Fifo, 0o644, 0, 0);
    if opts.socket {
        let sock = p("dev/socket");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(l);
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o755)).unwrap();
    }

    // Odd modes.
    write_file(&p("setuid"), b"#!/bin/sh\n", 0o4755);
    write_file(&p("noperm"), b"secret\n", 0o000);
    fs::create_dir(p("sticky")).unwrap();
    fs::set_permissions(p("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();

    // Xattrs.
    set_xattr(&p("small.txt"), "user.color", b"blue");
    set_xattr(&p("small.txt"), "trusted.t1", b"trusted value");
    set_xattr(&p("small.txt"), "security.s1", b"sec\0binary\xff");
    set_xattr(&p("a/b/file"), "user.empty", b"");
    set_xattr(&p("a"), "user.on-a-dir", b"dir xattr");
    set_xattr(&p("link-short"), "trusted.on-a-symlink", b"symlink xattr");
    set_xattr(&p("large.bin"), "user.big", &pattern(5, 2000));
    for f in [
        "empty",
        "small.txt",
        "tri-1",
        "hard-1",
        "large.bin",
        "a/b/file",
    ] {
        // The same name and value on many inodes: mkfs.erofs stores it once, shared.
        set_xattr(&p(f), "user.shared", b"one value for many files");
        set_xattr(&p(f), "trusted.overlay.opaque", b"y");
    }
    set_xattr(&p("a/b"), "trusted.overlay.redirect", b"/somewhere/else");
    set_xattr(&p("empty"), "user.erofs-rs.long-prefix.x", b"long prefix 1");
    set_xattr(
        &p("emptydir"),
        "user.erofs-rs.long-prefix.",
        b"empty suffix",
    );
    if opts.acls {
        // ACL_USER_OBJ 1, ACL_USER 2, ACL_GROUP_OBJ 4, ACL_GROUP 8, ACL_MASK 0x10, ACL_OTHER 0x20
        let access = acl_value(&[
            (1, 6, u32::MAX),
            (2, 4, 1234),
            (4, 4, u32::MAX),
            (8, 6, 5678),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ]);
        set_xattr(&p("sizes/size-00100"), "system.posix_acl_access", &access);
        let default = acl_value(&[(1, 7, u32::MAX), (4, 5, u32::MAX), (0x20, 5, u32::MAX)]);
        set_xattr(&p("emptydir"), "system.posix_acl_default", &default);
    }

    // Owners.
    chown(&p("small.txt"), 1000, 1000);
    chown(&p("large.bin"), big_uid, big_gid);
    chown(&p("a/b"), big_uid, 0);
    chown(&p("link-short"), 0, big_gid);
    chown(&p("hard-1"), 4242, 4343);
    if opts.devices {
        chown(&p("dev/null"), big_uid, big_gid);
    }

    // Mtimes last, children before parents (creating entries changes a dir's mtime).
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in all.iter().enumerate() {
        let sec = 1_600_000_000 + (i as i64) * 3_607;
        let nsec = ((i as i64) * 123_456_789 + 1) % 1_000_000_000;
        set_mtime(path, sec, nsec);
    }
    set_mtime(root, 1_700_000_000, 987_654_321);
}

fn collect_paths(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        let ft = e.file_type().unwrap();
        out.push(path.clone());
        if ft.is_dir() {
            collect_paths(&path, out);
        }
    }
}

/// Build a tarball of `root` with GNU tar (POSIX format: nanosecond mtimes, xattrs).
pub fn make_tarball(root: &Path, tar: &Path) {
    crate::run(
        Command::new("tar")
            .arg("--format=posix")
            .arg("--xattrs")
            .arg("--xattrs-include=*")
            .arg("--numeric-owner")
            .arg("-cf")
            .arg(tar)
            .arg("-C")
            .arg(root)
            .arg("."),
    );
}

/// `gzip -c -n INPUT > OUTPUT` (no name or time in the header: the same bytes every run).
pub fn gzip(input: &Path, output: &Path) {
    let gz = crate::require_tool("gzip").expect("gzip");
    let out = Command::new(gz)
        .args(["-c", "-n"])
        .arg(input)
        .output()
        .unwrap_or_else(|e| panic!("gzip {}: {e}", input.display()));
    assert!(out.status.success(), "gzip {} failed", input.display());
    std::fs::write(output, out.stdout).unwrap();
}

fn read_xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        // Sockets, FIFOs and device nodes on some filesystems.
        Err(rustix::io::Errno::OPNOTSUPP) => return out,
        Err(e) => panic!("listxattr {}: {e}", path.display()),
    };
    let mut value = vec![0u8; 65536];
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_s = std::str::from_utf8(name).expect("utf-8 xattr name");
        let len = rustix::fs::lgetxattr(path, name_s, &mut value[..])
            .unwrap_or_else(|e| panic!("getxattr {name_s} {}: {e}", path.display()));
        out.insert(name.to_vec(), value[..len].to_vec());
    }
    out
}

/// Snapshot a directory on a real filesystem (the source tree or a kernel mount).
pub fn snapshot_dir(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let md = fs::symlink_metadata(&path).unwrap();
        let kind = Kind::from_mode(md.mode()).expect("known file type");
        let mut e = Entry {
            kind,
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if matches!(kind, Kind::File | Kind::Symlink) {
                md.size()
            } else {
                0
            },
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            nlink: md.nlink(),
            rdev: matches!(kind, Kind::CharDev | Kind::BlockDev)
                .then(|| (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()))),
            xattrs: read_xattrs(&path),
            target: None,
            content_hash: None,
            link_group: None,
            ino: md.ino(),
        };
        match kind {
            Kind::File => e.content_hash = Some(content_hash(&fs::read(&path).unwrap())),
            Kind::Symlink => {
                e.target = Some(
                    fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            }
            Kind::Dir => {
                for c in fs::read_dir(&path).unwrap() {
                    stack.push(rel.join(c.unwrap().file_name()));
                }
            }
            _ => {}
        }
        tree.insert(rel, e);
    }
    fill_link_groups(&mut tree);
    tree
}

/// Set [`Entry::link_group`] from [`Entry::ino`] for non-directories with more than one
/// path in the snapshot.
pub fn fill_link_groups(tree: &mut Tree) {
    let mut first: HashMap<u64, (PathBuf, usize)> = HashMap::new();
    for (path, e) in tree.iter() {
        if e.kind != Kind::Dir {
            first
                .entry(e.ino)
                .and_modify(|(_, n)| *n += 1)
                .or_insert((path.clone(), 1));
        }
    }
    for e in tree.values_mut() {
        if e.kind != Kind::Dir
            && let Some((p, n)) = first.get(&e.ino)
            && *n > 1
        {
            e.link_group = Some(p.clone());
        }
    }
}

/// Snapshot what an [`erofs_reader::Image`] shows, walking from its root.
pub fn snapshot_image(image: &erofs_reader::Image) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![(PathBuf::new(), image.root_nid())];
    while let Some((rel, nid)) = stack.pop() {
        let inode = image
            .inode(nid)
            .unwrap_or_else(|e| panic!("inode {nid:?} ({}): {e}", rel.display()));
        let md = inode.metadata();
        let kind = Kind::from_mode(md.mode().into()).expect("known file type");
        let mut xattrs = BTreeMap::new();
        for x in image
            .inode_xattrs(&inode)
            .unwrap_or_else(|e| panic!("xattrs of {}: {e}", rel.display()))
        {
            xattrs.insert(x.name, x.value);
        }
        let mut e = Entry {
            kind,
            perm: u32::from(md.permissions()),
            uid: md.uid(),
            gid: md.gid(),
            size: if matches!(kind, Kind::File | Kind::Symlink) {
                md.len()
            } else {
                0
            },
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            nlink: md.nlink().into(),
            rdev: matches!(kind, Kind::CharDev | Kind::BlockDev)
                .then(|| (md.rdev_major(), md.rdev_minor())),
            xattrs,
            target: None,
            content_hash: None,
            link_group: None,
            ino: md.nid().0,
        };
        match kind {
            Kind::File => {
                let data = image
                    .read_inode(&inode)
                    .unwrap_or_else(|e| panic!("read {}: {e}", rel.display()));
                e.content_hash = Some(content_hash(&data));
            }
            Kind::Symlink => {
                e.target = Some(
                    image
                        .read_link_inode(&inode)
                        .unwrap_or_else(|e| panic!("readlink {}: {e}", rel.display())),
                )
            }
            Kind::Dir => {
                for d in image
                    .read_dir_inode(&inode)
                    .unwrap_or_else(|e| panic!("read_dir {}: {e}", rel.display()))
                {
                    let d = d.unwrap_or_else(|e| panic!("read_dir {}: {e}", rel.display()));
                    if d.name() == b"." || d.name() == b".." {
                        continue;
                    }
                    stack.push((rel.join(d.file_name()), d.nid()));
                }
            }
            _ => {}
        }
        tree.insert(rel, e);
    }
    fill_link_groups(&mut tree);
    tree
}

/// How to compare modification times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtimeCheck {
    /// Seconds and nanoseconds.
    Exact,
    /// Seconds only.
    Seconds,
    /// Not at all (compact inodes carry only the build time).
    Ignore,
}

/// What [`compare`] checks.
#[derive(Debug, Clone)]
pub struct Compare {
    /// Mtimes.
    pub mtime: MtimeCheck,
    /// Whether to compare the root entry's metadata.
    pub root_metadata: bool,
    /// Whether to compare xattrs.
    pub xattrs: bool,
    /// Whether to compare link counts of directories.
    pub dir_nlink: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            mtime: MtimeCheck::Exact,
            root_metadata: true,
            xattrs: true,
            dir_nlink: true,
        }
    }
}

/// Compare two snapshots; `Err` lists every difference (at most 50).
pub fn compare(want: &Tree, got: &Tree, how: &Compare) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (path, w) in want {
        let Some(g) = got.get(path) else {
            diffs.push(format!("{}: missing", path.display()));
            continue;
        };
        if path.as_os_str().is_empty() && !how.root_metadata {
            continue;
        }
        let mut d = |what: &str, a: String, b: String| {
            if a != b {
                diffs.push(format!("{}: {what}: want {a}, got {b}", path.display()));
            }
        };
        d("kind", format!("{:?}", w.kind), format!("{:?}", g.kind));
        d("perm", format!("{:o}", w.perm), format!("{:o}", g.perm));
        d("uid", w.uid.to_string(), g.uid.to_string());
        d("gid", w.gid.to_string(), g.gid.to_string());
        d("size", w.size.to_string(), g.size.to_string());
        match how.mtime {
            MtimeCheck::Exact => d(
                "mtime",
                format!("{}.{:09}", w.mtime, w.mtime_nsec),
                format!("{}.{:09}", g.mtime, g.mtime_nsec),
            ),
            MtimeCheck::Seconds => d("mtime", w.mtime.to_string(), g.mtime.to_string()),
            MtimeCheck::Ignore => {}
        }
        if w.kind != Kind::Dir || how.dir_nlink {
            d("nlink", w.nlink.to_string(), g.nlink.to_string());
        }
        d("rdev", format!("{:?}", w.rdev), format!("{:?}", g.rdev));
        if how.xattrs {
            d(
                "xattrs",
                format!("{:?}", show_xattrs(&w.xattrs)),
                format!("{:?}", show_xattrs(&g.xattrs)),
            );
        }
        d(
            "target",
            format!("{:?}", w.target.as_deref().map(String::from_utf8_lossy)),
            format!("{:?}", g.target.as_deref().map(String::from_utf8_lossy)),
        );
        d(
            "content",
            format!("{:?}", w.content_hash),
            format!("{:?}", g.content_hash),
        );
        d(
            "hard links",
            format!("{:?}", w.link_group),
            format!("{:?}", g.link_group),
        );
    }
    for path in got.keys() {
        if !want.contains_key(path) {
            diffs.push(format!("{}: unexpected", path.display()));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        let n = diffs.len();
        diffs.truncate(50);
        Err(format!("{n} differences:\n{}", diffs.join("\n")))
    }
}

fn show_xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<(String, String)> {
    x.iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

static MOUNT_SEQ: AtomicU32 = AtomicU32::new(0);

/// A read-only kernel mount of an EROFS image, unmounted (and its loop devices
/// detached) on drop. Mount points are unique per process and call.
#[derive(Debug)]
pub struct KernelMount {
    dir: PathBuf,
    loops: Vec<String>,
    mounted: bool,
}

impl KernelMount {
    /// Mount `image` with the host kernel (`mount -t erofs -o ro`), attaching each of
    /// `devices` (blob files, device-table order) to a read-only loop device and passing
    /// it as `device=`.
    pub fn new(image: &Path, devices: &[PathBuf]) -> KernelMount {
        let n = MOUNT_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("erofs-mnt-{}-{n}", std::process::id()));
        let _ = fs::remove_dir(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut m = KernelMount {
            dir,
            loops: Vec::new(),
            mounted: false,
        };
        let mut opts = String::from("ro");
        for d in devices {
            let out = crate::run(Command::new("losetup").args(["-f", "--show", "-r"]).arg(d));
            let dev = out.trim().to_string();
            opts.push_str(",device=");
            opts.push_str(&dev);
            m.loops.push(dev);
        }
        crate::run(
            Command::new("mount")
                .args(["-t", "erofs", "-o", &opts])
                .arg(image)
                .arg(&m.dir),
        );
        m.mounted = true;
        m
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if self.mounted {
            let st = Command::new("umount").arg(&self.dir).status();
            if !matches!(st, Ok(s) if s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        for l in &self.loops {
            let _ = Command::new("losetup").arg("-d").arg(l).status();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `--xattr-prefix=P` for each of [`LONG_XATTR_PREFIXES`], then `extra`: mkfs.erofs arguments
/// that store the test tree's long xattr names with long prefixes.
pub fn prefix_args(extra: &[&str]) -> Vec<String> {
    LONG_XATTR_PREFIXES
        .iter()
        .map(|p| format!("--xattr-prefix={p}"))
        .chain(extra.iter().map(|s| s.to_string()))
        .collect()
}

/// [`mkfs`] with [`prefix_args`]`(extra)`.
pub fn mkfs_with_prefixes(image: &Path, source: &Path, extra: &[&str]) {
    let args = prefix_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mkfs(image, source, &args);
}

/// A fresh scratch directory `name` (see [`crate::scratch_dir`]) holding `tree/`, the
/// default test tree ([`build_tree`]); returns both paths.
pub fn scratch_tree(name: &str) -> (crate::Scratch, PathBuf) {
    let dir = crate::scratch_dir(name);
    let src = dir.join("tree");
    fs::create_dir(&src).expect("mkdir tree");
    build_tree(&src, &TreeOptions::default());
    (dir, src)
}

/// Run `mkfs.erofs --quiet ARGS IMAGE SOURCE` (the tool from [`crate::require_tool`]).
pub fn mkfs(image: &Path, source: &Path, args: &[&str]) {
    let tool = crate::require_tool("mkfs.erofs").expect("mkfs.erofs");
    crate::run(
        Command::new(tool)
            .arg("--quiet")
            .args(args)
            .arg(image)
            .arg(source),
    );
}

/// Every inode reachable from the root of `image`, by path (`"/"` is the root), through the
/// reader's directories.
pub fn image_inodes(image: &erofs_reader::Image) -> BTreeMap<String, erofs_reader::Inode> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), image.root_nid())];
    while let Some((path, nid)) = stack.pop() {
        let inode = image.inode(nid).expect("inode");
        if inode.metadata().is_dir() {
            for e in image.read_dir_inode(&inode).expect("read_dir") {
                let e = e.expect("dirent");
                if e.name() != b"." && e.name() != b".." {
                    let name = String::from_utf8_lossy(e.name()).into_owned();
                    stack.push((format!("{path}/{name}"), e.nid()));
                }
            }
        }
        out.insert(if path.is_empty() { "/".into() } else { path }, inode);
    }
    out
}

/// One extent as `dump.erofs -e` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpExtent {
    /// Logical (file) start.
    pub la: u64,
    /// Logical length.
    pub llen: u64,
    /// Physical start.
    pub pa: u64,
    /// Physical length.
    pub plen: u64,
}

impl DumpExtent {
    /// `(la, llen, pa, plen)`.
    pub fn tuple(self) -> (u64, u64, u64, u64) {
        (self.la, self.llen, self.pa, self.plen)
    }
}

/// `dump.erofs -e SELECT IMAGE` (`SELECT` is `--path=/x` or `--nid=N`): the extents of one
/// inode.
pub fn dump_extents(image: &Path, select: &str) -> Vec<DumpExtent> {
    let dump = crate::require_tool("dump.erofs").expect("dump.erofs");
    let out = crate::run(Command::new(dump).arg("-e").arg(select).arg(image));
    let mut exts = Vec::new();
    for line in out.lines() {
        let Some((idx, rest)) = line.split_once(':') else {
            continue;
        };
        if idx.trim().parse::<u64>().is_err() {
            continue;
        }
        let nums: Vec<u64> = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("digits"))
            .collect();
        assert_eq!(nums.len(), 6, "unexpected dump.erofs line {line:?}");
        exts.push(DumpExtent {
            la: nums[0],
            llen: nums[2],
            pa: nums[3],
            plen: nums[5],
        });
    }
    exts
}

/// The `erofs` command-line tool of `erofs-reader`, built on first use with the same
/// `cargo` into `<target>/reader-cli` (a separate target dir, so that it never waits for
/// the lock of the `cargo test` that runs this), so it is never stale.
pub fn erofs_cli() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("EROFS_CLI") {
            return PathBuf::from(p);
        }
        // <target>/debug/deps/<test binary>
        let exe = std::env::current_exe().expect("current exe");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("test binary lives in <target>/<profile>/deps")
            .to_path_buf();
        let dir = target.join("reader-cli");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        crate::run(
            Command::new(cargo)
                .current_dir(crate::workspace_root())
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "erofs-reader",
                    "--features",
                    "cli",
                    "--bin",
                    "erofs",
                ])
                .env("CARGO_TARGET_DIR", &dir),
        );
        dir.join("debug/erofs")
    })
    .clone()
}
