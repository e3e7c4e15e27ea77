//! erofs-reader against mkfs.erofs and the host kernel: for each layout option, build the
//! test tree, make an image, and compare entry by entry (1) the reader's view with the
//! tree and (2) the reader's view with the kernel's mount of the same image.

use std::path::{Path, PathBuf};

use erofs_reader::{DataLayout, ExtentTarget, Image};
use tests::tree::{self, Compare, KernelMount, MtimeCheck, TreeOptions};

struct Case {
    name: &'static str,
    args: Vec<String>,
    opts: TreeOptions,
    /// Compare with the tree (what the layout keeps).
    vs_tree: Compare,
    /// Build from a tarball instead of the directory.
    tar: bool,
    /// Use a blob device (`--blobdev`).
    blob: bool,
    /// A layout every regular file with data must use.
    expect_layout: Option<DataLayout>,
}

fn case(name: &'static str, extra: &[&str]) -> Case {
    let args = tree::prefix_args(extra);
    Case {
        name,
        args,
        opts: TreeOptions::default(),
        vs_tree: Compare::default(),
        tar: false,
        blob: false,
        expect_layout: None,
    }
}

struct Built {
    /// Removed with the build (kept when a test fails).
    _scratch: tests::Scratch,
    image: PathBuf,
    blobs: Vec<PathBuf>,
    want: tree::Tree,
}

fn build(c: &Case) -> Option<Built> {
    tests::require_tool("mkfs.erofs")?;
    tests::require_root("device nodes, chown, trusted xattrs and kernel mounts")?;
    let dir = tests::scratch_dir(&format!("reader_images/{}", c.name));
    let src = dir.join("tree");
    std::fs::create_dir(&src).unwrap();
    tree::build_tree(&src, &c.opts);
    let want = tree::snapshot_dir(&src);
    let image = dir.join("image.erofs");
    let mut args: Vec<String> = c.args.clone();
    let mut blobs = Vec::new();
    if c.blob {
        let blob = dir.join("blob");
        args.push(format!("--blobdev={}", blob.display()));
        blobs.push(blob);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    if c.tar {
        let tarball = dir.join("tree.tar");
        tree::make_tarball(&src, &tarball);
        tree::mkfs(&image, &tarball, &argv);
    } else {
        tree::mkfs(&image, &src, &argv);
    }
    Some(Built {
        _scratch: dir,
        image,
        blobs,
        want,
    })
}

fn open(b: &Built) -> Image {
    Image::open_with_devices(&b.image, &b.blobs).unwrap_or_else(|e| panic!("open: {e}"))
}

fn run_case(c: Case) {
    let Some(b) = build(&c) else { return };
    let image = open(&b);
    let got = tree::snapshot_image(&image);
    let xattrs: usize = got.values().map(|e| e.xattrs.len()).sum();
    let links = got.values().filter(|e| e.link_group.is_some()).count();
    eprintln!(
        "{}: {} entries, {} xattrs, {} hard-linked names (tree: {} entries, {} xattrs)",
        c.name,
        got.len(),
        xattrs,
        links,
        b.want.len(),
        b.want.values().map(|e| e.xattrs.len()).sum::<usize>()
    );
    if let Err(e) = tree::compare(&b.want, &got, &c.vs_tree) {
        panic!("{}: reader vs tree: {e}", c.name);
    }
    if let Some(layout) = c.expect_layout {
        let md = image.metadata("/large.bin").unwrap();
        assert_eq!(md.layout(), layout, "{}: layout of /large.bin", c.name);
    }
    // mkfs.erofs shares xattrs only when it sees the whole tree first (not from a tar stream).
    check_xattr_kinds(&image, &got, c.name, !c.tar);
    let mount = KernelMount::new(&b.image, &b.blobs);
    let kernel = tree::snapshot_dir(mount.path());
    assert_eq!(
        kernel.len(),
        got.len(),
        "{}: kernel mount entry count",
        c.name
    );
    if let Err(e) = tree::compare(&kernel, &got, &Compare::default()) {
        panic!("{}: reader vs kernel: {e}", c.name);
    }
    check_lookups(&image, c.name);
}

/// Path-based API checks that a walk by nid does not cover.
fn check_lookups(image: &Image, name: &str) {
    assert_eq!(
        image.read("/link-short").unwrap(),
        b"hello, erofs\n",
        "{name}: symlink followed"
    );
    assert_eq!(
        image.read("/link-dir/c/../file").unwrap(),
        tree::pattern(3, 10000),
        "{name}: .. after a symlink"
    );
    assert_eq!(
        image.read("/link-absolute").unwrap(),
        tree::pattern(3, 10000),
        "{name}: absolute symlink"
    );
    assert_eq!(image.read("/../../small.txt").unwrap(), b"hello, erofs\n");
    assert!(image.symlink_metadata("/link-short").unwrap().is_symlink());
    assert!(image.metadata("/link-dir").unwrap().is_dir());
    assert!(matches!(
        image.metadata("/link-dangling"),
        Err(erofs_reader::Error::NotFound(_))
    ));
    assert!(matches!(
        image.metadata("/small.txt/x"),
        Err(erofs_reader::Error::NotADirectory(_))
    ));
    assert!(matches!(
        image.read("/a"),
        Err(erofs_reader::Error::IsADirectory(_))
    ));
    assert!(matches!(
        image.read_link("/small.txt"),
        Err(erofs_reader::Error::NotASymlink(_))
    ));
    // Every name of the big directory is found by binary search.
    for i in (0..400).step_by(7) {
        let p = format!("/bigdir/entry-{i:05}-with-a-longer-name-to-fill-blocks");
        assert_eq!(
            image.read(&p).unwrap(),
            format!("{i}\n").as_bytes(),
            "{name}: {p}"
        );
    }
    assert!(image.metadata("/bigdir/entry-00400-nope").is_err());
    assert!(image.metadata("/bigdir/a").is_err());
    assert!(image.metadata("/bigdir/zzzz").is_err());
    // read_at at odd offsets equals the source pattern.
    let want = tree::pattern(99, 3 * 1024 * 1024 + 1234);
    let inode = image.lookup("/large.bin").unwrap();
    for (off, len) in [
        (0usize, 1usize),
        (4095, 2),
        (65535, 70000),
        (want.len() - 10, 100),
    ] {
        let mut buf = vec![0u8; len];
        let n = image.read_at(&inode, off as u64, &mut buf).unwrap();
        let end = (off + len).min(want.len());
        assert_eq!(&buf[..n], &want[off..end], "{name}: read_at {off}+{len}");
    }
    // Extents cover the file exactly.
    let ext = image.extents(&inode, 0..u64::MAX).unwrap();
    let mut pos = 0;
    for e in &ext {
        assert_eq!(e.file_offset, pos);
        pos += e.len;
    }
    assert_eq!(pos, want.len() as u64, "{name}: extents cover the file");
}

#[test]
fn reader_default() {
    let mut c = case("default", &[]);
    c.expect_layout = Some(DataLayout::FlatInline);
    run_case(c);
}

#[test]
fn reader_force_inode_compact() {
    let mut c = case("compact", &["-Eforce-inode-compact"]);
    c.opts.compact = true;
    // Compact inodes keep only a per-image time.
    c.vs_tree.mtime = MtimeCheck::Ignore;
    run_case(c);
}

#[test]
fn reader_force_inode_extended() {
    run_case(case("extended", &["-Eforce-inode-extended"]));
}

#[test]
fn reader_noinline_data() {
    let mut c = case("noinline", &["-Enoinline_data"]);
    c.expect_layout = Some(DataLayout::FlatPlain);
    run_case(c);
}

#[test]
fn reader_block_size_512() {
    run_case(case("bs512", &["-b", "512"]));
}

#[test]
fn reader_block_size_4096() {
    run_case(case("bs4096", &["-b", "4096"]));
}

#[test]
fn reader_chunks_block_map() {
    let mut c = case("chunks", &["--chunksize=65536"]);
    c.expect_layout = Some(DataLayout::ChunkBased);
    run_case(c);
}

#[test]
fn reader_chunk_indexes() {
    let mut c = case(
        "chunk-indexes",
        &["--chunksize=65536", "-Eforce-chunk-indexes"],
    );
    c.expect_layout = Some(DataLayout::ChunkBased);
    run_case(c);
}

#[test]
fn reader_chunks_blobdev() {
    let mut c = case("blobdev", &["--chunksize=65536"]);
    c.blob = true;
    c.expect_layout = Some(DataLayout::ChunkBased);
    let Some(b) = build(&c) else { return };
    let image = open(&b);
    assert_eq!(image.devices().len(), 1);
    // Data of a chunked file lives on the blob.
    let ext = image.extents(Path::new("/large.bin"), 0..u64::MAX).unwrap();
    assert!(
        ext.iter()
            .any(|e| matches!(e.target, ExtentTarget::Device { index: 1, .. })),
        "{ext:?}"
    );
    // Holes of the sparse file are null chunks.
    let sparse = image.extents("/sparse.bin", 0..u64::MAX).unwrap();
    assert!(
        sparse.iter().any(|e| e.target == ExtentTarget::Hole),
        "{sparse:?}"
    );
    drop(image);
    run_case(c);
}

#[test]
fn reader_tar_full() {
    let mut c = case("tar", &["--tar=f"]);
    c.tar = true;
    // GNU tar skips sockets and stores ACLs only with --acls (as text mkfs.erofs does
    // not read).
    c.opts.socket = false;
    c.opts.acls = false;
    run_case(c);
}

/// The images really hold the kinds of xattrs the test is about: shared ones (the same
/// name and value on many inodes) and long-prefix ones.
fn check_xattr_kinds(image: &Image, got: &tree::Tree, name: &str, want_shared: bool) {
    use erofs_format::xattr::InlineXattrs;
    assert_eq!(
        image.superblock().xattr_prefix_count,
        tree::LONG_XATTR_PREFIXES.len() as u8,
        "{name}: long prefixes"
    );
    let mut shared = 0;
    let mut long = 0;
    for e in got.values() {
        let inode = image.inode(erofs_reader::Nid(e.ino)).unwrap();
        let raw = inode.metadata().raw();
        if raw.xattr_size() == 0 {
            continue;
        }
        let mut area = vec![0u8; raw.xattr_size() as usize];
        image
            .primary()
            .read_exact_at(&mut area, raw.xattr_offset().unwrap())
            .unwrap();
        let x = InlineXattrs::parse(&area).unwrap();
        shared += x.shared_ids().len();
        long += x
            .entries()
            .filter(|x| x.as_ref().unwrap().is_long_prefix())
            .count();
    }
    assert_eq!(shared > 0, want_shared, "{name}: shared xattrs: {shared}");
    assert!(long > 0, "{name}: no inline long-prefix xattrs");
}

#[test]
fn reader_48bit() {
    // erofs-utils 1.9 layout: 48-bit block addresses, compact-inode mtimes relative to
    // the superblock epoch, nlink-1 compact inodes. Linux 6.15+ (the host) mounts it.
    let mut c = case("48bit", &["-E48bit"]);
    // Compact inodes here keep whole seconds (relative to the epoch) but not nanoseconds.
    c.vs_tree.mtime = MtimeCheck::Seconds;
    run_case(c);
}

#[test]
fn reader_dot_omitted() {
    // Directories without a `.` entry (implies 48bit in mkfs.erofs 1.9).
    let mut c = case("dot-omitted", &["-Edot-omitted"]);
    c.vs_tree.mtime = MtimeCheck::Seconds;
    run_case(c);
}

#[test]
fn reader_48bit_chunks_blobdev() {
    let mut c = case("48bit-blobdev", &["-E48bit", "--chunksize=65536"]);
    c.vs_tree.mtime = MtimeCheck::Seconds;
    c.blob = true;
    c.expect_layout = Some(DataLayout::ChunkBased);
    run_case(c);
}
