//! erofs-reader on images with metadata compression (`mkfs.erofs -m`, the `METABOX`
//! feature of erofs-utils 1.9 and Linux 6.17): inodes, inline xattrs, inline tails,
//! compression indexes and long xattr prefixes live in the data of the metabox inode.
//!
//! For each option set, build the reader test tree plus compressible files, make an image
//! and check that
//!
//! * the superblock names a metabox and the root and most inodes live in it;
//! * the reader's view equals the source tree (contents, metadata, xattrs, symlinks) and
//!   the host kernel's mount of the same image, inode numbers included (`Image::ino`);
//! * compressed files' extents equal `dump.erofs -e` (metabox inline pclusters report
//!   their offset in the metabox, as dump.erofs does);
//! * inline tails of inodes in the metabox are reported as [`ExtentTarget::Metabox`];
//! * `erofs fsck` passes and `erofs extract` writes the tree the reader shows.

use std::path::PathBuf;
use std::process::Command;

use erofs_format::superblock::{FeatureIncompat, NID_METABOX_BIT};
use erofs_reader::{ExtentSource, ExtentTarget, Image, Nid};
use tests::text;
use tests::tree::{self, Compare, KernelMount, MtimeCheck};

struct Built {
    /// Removed with the build (kept when a test fails).
    _scratch: tests::Scratch,
    image: PathBuf,
    want: tree::Tree,
}

fn build(name: &str, args: &[&str]) -> Option<Built> {
    tests::require_tool("mkfs.erofs")?;
    tests::require_tool("dump.erofs")?;
    tests::require_root("device nodes, chown, trusted xattrs and kernel mounts")?;
    let (dir, src) = tree::scratch_tree(&format!("reader_metabox/{name}"));
    let z = src.join("z");
    std::fs::create_dir(&z).unwrap();
    std::fs::write(z.join("text.txt"), text(1, 3 * 1024 * 1024 + 77)).unwrap();
    std::fs::write(z.join("zeros.bin"), vec![0u8; 300_000]).unwrap();
    for n in [100usize, 4095, 4097, 9000, 20_011] {
        std::fs::write(z.join(format!("t-{n}")), text(n as u64, n)).unwrap();
    }
    let want = tree::snapshot_dir(&src);
    let image = dir.join("image.erofs");
    tree::mkfs_with_prefixes(&image, &src, args);
    Some(Built {
        _scratch: dir,
        image,
        want,
    })
}

fn cli(args: &[&std::ffi::OsStr], name: &str) {
    let out = Command::new(tree::erofs_cli()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name}: erofs {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one image showed.
#[derive(Debug, Default)]
struct Seen {
    in_metabox: usize,
    outside: usize,
    metabox_tails: usize,
    compressed: usize,
    metabox_inline_pclusters: usize,
    dumped: usize,
    metabox_compressed: bool,
}

fn run_case(name: &str, args: &[&str]) -> Option<Seen> {
    let b = build(name, args)?;
    let image = Image::open(&b.image).unwrap_or_else(|e| panic!("{name}: open: {e}"));
    let sb = image.superblock();
    assert!(sb.incompat().contains(FeatureIncompat::METABOX), "{name}");
    let head = std::fs::read(&b.image).unwrap();
    let mb = sb.metabox_nid(&head).expect("metabox nid");
    assert_eq!(mb.0 & NID_METABOX_BIT, 0, "{name}: metabox nid {mb}");
    let mbi = image.inode(mb).unwrap();
    assert!(
        mbi.metadata().is_file() && !mbi.metadata().is_empty(),
        "{name}"
    );

    // The reader against the tree and the kernel.
    let got = tree::snapshot_image(&image);
    let vs_tree = Compare {
        mtime: MtimeCheck::Seconds,
        ..Compare::default()
    };
    if let Err(e) = tree::compare(&b.want, &got, &vs_tree) {
        panic!("{name}: reader vs tree: {e}");
    }
    {
        let mount = KernelMount::new(&b.image, &[]);
        let kernel = tree::snapshot_dir(mount.path());
        if let Err(e) = tree::compare(&kernel, &got, &Compare::default()) {
            panic!("{name}: reader vs kernel: {e}");
        }
        // Inode numbers: Linux folds the metabox bit into bit 31 (`Image::ino`).
        for (path, inode) in tree::image_inodes(&image) {
            use std::os::unix::fs::MetadataExt;
            let st =
                std::fs::symlink_metadata(mount.path().join(path.trim_start_matches('/'))).unwrap();
            assert_eq!(st.ino(), image.ino(inode.nid()), "{name}: {path}: st_ino");
        }
    }

    let mut seen = Seen {
        metabox_compressed: mbi.metadata().layout().is_compressed(),
        ..Seen::default()
    };
    for (path, inode) in tree::image_inodes(&image) {
        if inode.nid().0 & NID_METABOX_BIT != 0 {
            seen.in_metabox += 1;
        } else {
            seen.outside += 1;
        }
        let md = inode.metadata();
        if md.layout().is_compressed() {
            seen.compressed += 1;
            let ours = image
                .compressed_extents(&inode)
                .unwrap_or_else(|e| panic!("{name}: {path}: extents: {e}"));
            for e in &ours {
                if let ExtentSource::Pcluster {
                    device: u16::MAX,
                    inline,
                    ..
                } = e.source
                {
                    assert!(inline, "{name}: {path}: {e:?}");
                    seen.metabox_inline_pclusters += 1;
                }
            }
            // dump.erofs is slow per call: the larger files and a sample of the others.
            if md.len() > 4096 || path.len() % 5 == 0 {
                let as_dump: Vec<_> = ours
                    .iter()
                    .map(|e| match e.source {
                        ExtentSource::Pcluster { offset, len, .. } => {
                            (e.file_offset, e.len, offset, len)
                        }
                        _ => (e.file_offset, e.len, 0, 0),
                    })
                    .collect();
                assert_eq!(
                    as_dump,
                    tree::dump_extents(&b.image, &format!("--path={path}"))
                        .into_iter()
                        .map(tree::DumpExtent::tuple)
                        .collect::<Vec<_>>(),
                    "{name}: {path}: extents vs dump.erofs -e"
                );
                seen.dumped += 1;
            }
        } else if md.is_file() || md.is_dir() {
            let exts = image.extents(&inode, 0..md.len()).unwrap();
            for e in &exts {
                if let ExtentTarget::Metabox { offset } = e.target {
                    assert!(inode.nid().0 & NID_METABOX_BIT != 0, "{name}: {path}");
                    assert!(
                        offset + e.len <= mbi.metadata().len(),
                        "{name}: {path}: {e:?}"
                    );
                    seen.metabox_tails += 1;
                }
            }
        }
    }
    assert!(seen.in_metabox > 100, "{name}: {seen:?}");
    assert!(seen.metabox_tails > 10, "{name}: {seen:?}");

    cli(&["fsck".as_ref(), b.image.as_os_str()], name);
    let dest = b.image.with_file_name("extracted");
    let _ = std::fs::remove_dir_all(&dest);
    cli(
        &["extract".as_ref(), b.image.as_os_str(), dest.as_os_str()],
        name,
    );
    if let Err(e) = tree::compare(&got, &tree::snapshot_dir(&dest), &Compare::default()) {
        panic!("{name}: extracted tree vs reader: {e}");
    }
    let _ = std::fs::remove_dir_all(&dest);
    eprintln!("{name}: {seen:?}");
    Some(seen)
}

#[test]
fn metabox_uncompressed_data() {
    let Some(s) = run_case("plain", &["-m4096"]) else {
        return;
    };
    assert_eq!(s.compressed, 0, "{s:?}");
}

#[test]
fn metabox_lz4_ztailpacking() {
    let Some(s) = run_case("lz4-ztail", &["-m4096", "-zlz4hc", "-Eztailpacking"]) else {
        return;
    };
    assert!(
        s.compressed > 5 && s.metabox_inline_pclusters > 0 && s.metabox_compressed,
        "{s:?}"
    );
}

#[test]
fn metabox_zstd_fragments() {
    let Some(s) = run_case("zstd-fragments", &["-m4096", "-zzstd", "-Efragments"]) else {
        return;
    };
    assert!(
        s.compressed > 5 && s.dumped > 0 && s.metabox_compressed,
        "{s:?}"
    );
}

#[test]
fn metabox_second_algorithm_dedupe_chunks() {
    // Data in lz4, the metabox in zstd (algorithm 1 of -z), big pclusters and dedupe.
    let Some(s) = run_case(
        "lz4-zstd-dedupe",
        &["-zlz4:zstd", "-m8192:1", "-C65536", "-Ededupe"],
    ) else {
        return;
    };
    assert!(s.compressed >= 3 && s.metabox_compressed, "{s:?}");
}

#[test]
fn metabox_chunked_files() {
    run_case("chunks", &["-m4096", "--chunksize=8192"]);
}

/// Recompute the superblock checksum (it covers block 0, where mkfs puts the metabox
/// inode too).
fn fix_checksum(b: &mut [u8]) {
    use erofs_format::superblock::{FeatureCompat, SuperBlock};
    let sb = *SuperBlock::locate(b).unwrap();
    if sb.compat().contains(FeatureCompat::SB_CHKSUM) {
        let bs = sb.block_size() as usize;
        erofs_format::checksum::write_superblock_checksum(&mut b[..bs]).unwrap();
    }
}

/// Set the metabox nid (superblock extension slot 1) and fix the superblock checksum.
fn with_metabox_nid(base: &[u8], nid: u64) -> Vec<u8> {
    let mut b = base.to_vec();
    let at = 1024 + 128; // the slot follows the 128-byte superblock
    b[at..at + 8].copy_from_slice(&nid.to_le_bytes());
    fix_checksum(&mut b);
    b
}

#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(r: erofs_reader::Result<T>, needle: &str) {
    match r {
        Err(e @ erofs_reader::Error::Corrupt { .. }) => {
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}")
        }
        other => panic!("expected a corruption error mentioning {needle:?}, got {other:?}"),
    }
}

/// Hostile metabox pointers and nids: typed errors, no panic, nothing read out of bounds.
#[test]
fn metabox_hostile_pointers() {
    let Some(b) = build("hostile", &["-m4096"]) else {
        return;
    };
    let base = std::fs::read(&b.image).unwrap();
    let image = Image::from_source(base.clone()).unwrap();
    let mb = image.superblock().metabox_nid(&base).unwrap();
    // The slot is where the test edits it.
    assert_eq!(with_metabox_nid(&base, mb.0), base);

    // A metabox nid with the metabox bit, or past the device.
    let bad = with_metabox_nid(&base, mb.0 | NID_METABOX_BIT);
    assert_corrupt(Image::from_source(bad), "metabox bit");
    let bad = with_metabox_nid(&base, u64::MAX >> 8);
    assert_corrupt(Image::from_source(bad), "nid");

    // Inodes inside the metabox are bounded by the metabox's size.
    let size = image.inode(mb).unwrap().metadata().len();
    let past = NID_METABOX_BIT | size.div_ceil(32);
    assert_corrupt(image.inode(Nid(past)), "metabox");
    assert_corrupt(image.inode(Nid(NID_METABOX_BIT | (u64::MAX >> 2))), "nid");

    // The metabox inode shrunk below the root inode: opening fails cleanly.
    let raw = image.inode(mb).unwrap().metadata().raw().location as usize;
    let mut small = base.clone();
    let compact = small[raw] & 1 == 0;
    if compact {
        // i_size of a compact inode: bytes 8..12.
        small[raw + 8..raw + 12].copy_from_slice(&16u32.to_le_bytes());
    } else {
        // i_size of an extended inode: bytes 8..16.
        small[raw + 8..raw + 16].copy_from_slice(&16u64.to_le_bytes());
    }
    fix_checksum(&mut small);
    // The long xattr prefixes (in the metabox) are read first and now run past it.
    assert_corrupt(Image::from_source(small.clone()), "truncated");

    // Without a prefix table the root inode is the first thing read past the end.
    let dir = tests::scratch_dir("reader_metabox/hostile-small");
    let src = dir.join("tree");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"metabox\n").unwrap();
    let img = dir.join("image.erofs");
    tree::mkfs(&img, &src, &["-m4096"]);
    let base = std::fs::read(&img).unwrap();
    let image = Image::from_source(base.clone()).unwrap();
    assert_eq!(image.read("/d/f").unwrap(), b"metabox\n");
    let mb = image.superblock().metabox_nid(&base).unwrap();
    let at = image.inode(mb).unwrap().metadata().raw().location as usize;
    let mut small = base;
    if small[at] & 1 == 0 {
        small[at + 8..at + 12].copy_from_slice(&16u32.to_le_bytes());
    } else {
        small[at + 8..at + 16].copy_from_slice(&16u64.to_le_bytes());
    }
    fix_checksum(&mut small);
    assert_corrupt(Image::from_source(small), "metabox");
}
