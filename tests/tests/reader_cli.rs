//! The `erofs` command-line tool: extract round trip, fsck on good and damaged images,
//! path traversal attempts, and the inspection subcommands.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use erofs_reader::{ExtentTarget, Image};
use tests::tree::{self, Compare};

struct Fixture {
    tree: PathBuf,
    image: PathBuf,
    chunked: PathBuf,
    blob: PathBuf,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        tests::require_tool("mkfs.erofs")?;
        tests::require_root("device nodes, owners and trusted xattrs")?;
        let (dir, src) = tree::scratch_tree("reader_cli");
        // Shared by every test of the binary: kept.
        let dir = dir.keep();
        let image = dir.join("image.erofs");
        tree::mkfs_with_prefixes(&image, &src, &[]);
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
            image,
            chunked,
            blob,
        })
    })
    .as_ref()
}

fn erofs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(tree::erofs_cli());
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run erofs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "erofs failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reader_cli_extract_round_trip() {
    let Some(f) = fixture() else { return };
    let scratch = tests::scratch_dir("reader_cli_extract");
    let dest = scratch.join("out");
    let out = erofs(&[&"extract", &f.image, &dest]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    let want = tree::snapshot_dir(&f.tree);
    let got = tree::snapshot_dir(&dest);
    tree::compare(&want, &got, &Compare::default()).unwrap();
}

#[test]
fn reader_cli_extract_with_blob_device() {
    let Some(f) = fixture() else { return };
    let scratch = tests::scratch_dir("reader_cli_extract_blob");
    let dest = scratch.join("out");
    ok(&erofs(&[
        &"extract",
        &f.chunked,
        &dest,
        &"--device",
        &f.blob,
    ]));
    let want = tree::snapshot_dir(&f.tree);
    let got = tree::snapshot_dir(&dest);
    tree::compare(&want, &got, &Compare::default()).unwrap();
    // Without the blob: a clear error, non-zero exit.
    let scratch2 = tests::scratch_dir("reader_cli_extract_noblob");
    let dest2 = scratch2.join("out");
    let out = erofs(&[&"extract", &f.chunked, &dest2]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("device 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reader_cli_fsck_good_images() {
    let Some(f) = fixture() else { return };
    let s = ok(&erofs(&[&"fsck", &f.image]));
    assert!(s.contains(" 0 errors"), "{s}");
    // Inodes: the tree's distinct inodes (hard links counted once).
    let want = tree::snapshot_dir(&f.tree);
    let inodes: std::collections::HashSet<u64> = want.values().map(|e| e.ino).collect();
    assert!(
        s.contains(&format!(": {} inodes", inodes.len())),
        "{s} (want {} inodes)",
        inodes.len()
    );
    let s = ok(&erofs(&[
        &"fsck",
        &f.chunked,
        &"--device",
        &f.blob,
        &"--threads",
        &"1",
    ]));
    assert!(s.contains(" 0 errors"), "{s}");
}

/// A damaged copy of an image, in a scratch directory removed with it.
struct Damaged {
    _dir: tests::Scratch,
    image: PathBuf,
}

impl std::ops::Deref for Damaged {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.image
    }
}

impl AsRef<std::ffi::OsStr> for Damaged {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.image.as_os_str()
    }
}

/// Write a damaged copy of `image`: `patch` gets the bytes and a reader of the original.
fn damaged(name: &str, image: &Path, patch: impl FnOnce(&mut Vec<u8>, &Image)) -> Damaged {
    let mut bytes = std::fs::read(image).unwrap();
    let reader = Image::from_source(bytes.clone()).unwrap();
    patch(&mut bytes, &reader);
    // Metadata in block 0 is covered by the superblock checksum: keep it valid so that the
    // damage itself is what the tool meets.
    let n = bytes.len().min(4096);
    erofs_format::checksum::write_superblock_checksum(&mut bytes[..n]).unwrap();
    let dir = tests::scratch_dir(&format!("reader_cli_damaged/{name}"));
    let image = dir.join("bad.erofs");
    std::fs::write(&image, &bytes).unwrap();
    Damaged { _dir: dir, image }
}

fn dirent_offset(image: &Image, dir: &str, name: &[u8]) -> usize {
    let inode = image.lookup(dir).unwrap();
    let bs = image.block_size();
    let size = inode.metadata().len();
    let mut pos = 0;
    while pos < size {
        let len = (size - pos).min(bs) as usize;
        let mut block = vec![0u8; len];
        image.read_at(&inode, pos, &mut block).unwrap();
        let view = erofs_format::dirent::DirBlock::parse(&block).unwrap();
        if let Some(i) = view.iter().position(|e| e.name == name) {
            let ext = image.extents(&inode, pos..pos + 1).unwrap();
            let ExtentTarget::Device {
                index: 0, offset, ..
            } = ext[0].target
            else {
                panic!("directory data not on the primary device");
            };
            return (offset + 12 * i as u64) as usize;
        }
        pos += bs;
    }
    panic!("{name:?} not in {dir}");
}

/// Byte offset of `name`'s bytes in directory `dir`.
fn name_offset(image: &Image, bytes: &[u8], dir: &str, name: &[u8]) -> usize {
    let d = dirent_offset(image, dir, name);
    let nameoff = u16::from_le_bytes([bytes[d + 8], bytes[d + 9]]) as usize;
    let block_start = d - d % image.block_size() as usize;
    // Inline directories: the block view starts at the inline data, not at a block.
    let inode = image.lookup(dir).unwrap();
    let ext = image.extents(&inode, 0..1).unwrap();
    let ExtentTarget::Device { offset, .. } = ext[0].target else {
        panic!()
    };
    let base = if inode.metadata().len() <= image.block_size() {
        offset as usize
    } else {
        block_start
    };
    assert_eq!(&bytes[base + nameoff..base + nameoff + name.len()], name);
    base + nameoff
}

#[test]
fn reader_cli_fsck_damaged_images() {
    let Some(f) = fixture() else { return };
    // A file inode with an invalid file type.
    let bad_mode = damaged("mode", &f.image, |b, img| {
        let loc = img.lookup("/small.txt").unwrap().metadata().raw().location as usize;
        b[loc + 4..loc + 6].copy_from_slice(&0u16.to_le_bytes());
    });
    // A directory entry pointing back up: a directory cycle.
    let cycle = damaged("cycle", &f.image, |b, img| {
        let root = img.root_nid().0;
        let d = dirent_offset(img, "/a/b", b"c");
        b[d..d + 8].copy_from_slice(&root.to_le_bytes());
    });
    // A dirent nid far outside the image.
    let far = damaged("far", &f.image, |b, img| {
        let d = dirent_offset(img, "/a", b"b");
        b[d..d + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    });
    // A flat file whose blocks lie past the end of the image.
    let past_end = damaged("past-end", &f.image, |b, img| {
        let raw = *img.lookup("/large.bin").unwrap().metadata().raw();
        let loc = raw.location as usize;
        b[loc + 16..loc + 20].copy_from_slice(&0x00F0_0000u32.to_le_bytes());
    });
    for (what, img) in [
        ("bad mode", bad_mode),
        ("cycle", cycle),
        ("far nid", far),
        ("past end", past_end),
    ] {
        let out = erofs(&[&"fsck", &img]);
        assert!(!out.status.success(), "{what}: fsck passed a damaged image");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("erofs: "), "{what}: {err}");
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(!summary.contains(" 0 errors"), "{what}: {summary}");
        // extract refuses too, and never hangs on the cycle.
        let dest = tests::scratch_dir(&format!("reader_cli_damaged_x/{}", what.replace(' ', "-")));
        let out = erofs(&[&"extract", &img, &dest.join("out")]);
        assert!(!out.status.success(), "{what}: extract succeeded");
    }
}

/// `fsck`'s report (errors included) and `extract`'s tree are the same whatever the number
/// of worker threads.
#[test]
fn reader_cli_same_result_for_any_thread_count() {
    let Some(f) = fixture() else { return };
    // Data errors in several files (found by the workers, in any order) and a metadata
    // error (found by the walk).
    let img = damaged("threads", &f.image, |b, img| {
        for path in ["/large.bin", "/a/b/file", "/hard-1"] {
            let loc = img.lookup(path).unwrap().metadata().raw().location as usize;
            b[loc + 16..loc + 20].copy_from_slice(&0x00F0_0000u32.to_le_bytes());
        }
        let loc = img.lookup("/small.txt").unwrap().metadata().raw().location as usize;
        b[loc + 4..loc + 6].copy_from_slice(&0u16.to_le_bytes());
    });
    // The summary line without its time ("... bytes read in 0.012s, ...").
    let fsck = |image: &Path, threads: &str| {
        let out = erofs(&[&"fsck", &image, &"--threads", &threads]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, rest) = stdout.split_once(" read in ").expect("summary line");
        let (_, tail) = rest.split_once("s, ").expect("summary line");
        (
            out.status.success(),
            format!("{head} read in _s, {tail}"),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let one = fsck(&img, "1");
    assert!(!one.0, "fsck passed a damaged image: {one:?}");
    assert!(one.2.lines().count() >= 4, "{}", one.2);
    for path in ["large.bin", "a/b/file", "hard-1", "small.txt"] {
        assert!(one.2.contains(path), "no error for {path}: {}", one.2);
    }
    for threads in ["2", "7"] {
        assert_eq!(fsck(&img, threads), one, "fsck --threads {threads}");
    }
    let good = fsck(&f.image, "1");
    assert!(good.0 && good.1.contains(" 0 errors"), "{good:?}");
    assert_eq!(fsck(&f.image, "5"), good);

    let base = tests::scratch_dir("reader_cli_extract_threads");
    let one = base.join("one");
    let many = base.join("many");
    ok(&erofs(&[&"extract", &"-j", &"1", &f.image, &one]));
    ok(&erofs(&[&"extract", &"--threads", &"6", &f.image, &many]));
    let (one, many) = (tree::snapshot_dir(&one), tree::snapshot_dir(&many));
    tree::compare(&one, &many, &Compare::default()).unwrap();
    tree::compare(&tree::snapshot_dir(&f.tree), &many, &Compare::default()).unwrap();
}

#[test]
fn reader_cli_extract_refuses_traversal() {
    let Some(_) = fixture() else { return };
    let dir = tests::scratch_dir("reader_cli_traversal");
    let src = dir.join("tree");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/xx"), b"pwned").unwrap();
    std::fs::write(src.join("zz-escapes-as-name"), b"pwned").unwrap();
    // A symlink pointing outside, and a directory that will be renamed onto it.
    let outside = dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, src.join("aaa-link")).unwrap();
    std::fs::create_dir(src.join("aaa-lind")).unwrap();
    std::fs::write(src.join("aaa-lind/pwn"), b"pwned").unwrap();
    let img = dir.join("img.erofs");
    tree::mkfs(&img, &src, &[]);

    // 1. A name with "../" in it.
    let dotdot = damaged("dotdot", &img, |b, image| {
        let at = name_offset(image, b, "/", b"zz-escapes-as-name");
        b[at..at + 18].copy_from_slice(b"../../../../escape");
    });
    // 2. A name ".." for a regular file.
    let parent = damaged("parent", &img, |b, image| {
        let at = name_offset(image, b, "/d", b"xx");
        b[at..at + 2].copy_from_slice(b"..");
    });
    // 3. A directory renamed to the symlink's name: files under it would land outside.
    let via_link = damaged("vialink", &img, |b, image| {
        let at = name_offset(image, b, "/", b"aaa-lind");
        b[at..at + 8].copy_from_slice(b"aaa-link");
    });
    for (what, bad) in [
        ("dotdot", dotdot),
        ("parent", parent),
        ("via symlink", via_link),
    ] {
        let dest = dir.join(format!("dest-{}", what.replace(' ', "-")));
        let out = erofs(&[&"extract", &bad, &dest]);
        assert!(
            !out.status.success(),
            "{what}: extract accepted a hostile image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{what}: wrote outside DEST"
        );
        for p in ["escape", "../escape", "../../escape"] {
            assert!(!dest.join(p).exists(), "{what}: {p} exists");
        }
    }
    // The undamaged image extracts fine.
    ok(&erofs(&[&"extract", &img, &dir.join("dest-good")]));
}

#[test]
fn reader_cli_inspection() {
    let Some(f) = fixture() else { return };
    let sb = ok(&erofs(&[&"sb", &f.image]));
    assert!(sb.contains("block size:      4096"), "{sb}");
    assert!(sb.contains("xattr_prefixes"), "{sb}");
    let sb = ok(&erofs(&[&"sb", &f.chunked]));
    assert!(sb.contains("extra devices:   1"), "{sb}");
    assert!(sb.contains("(absent)"), "{sb}");

    let ls = ok(&erofs(&[&"ls", &f.image]));
    let mut want: Vec<String> = std::fs::read_dir(&f.tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(ls.lines().collect::<Vec<_>>(), want);
    let lsl = ok(&erofs(&[&"ls", &"-l", &f.image, &"/dev"]));
    assert!(
        lsl.lines()
            .any(|l| l.starts_with("crw-rw-rw-") && l.contains("1, 3") && l.ends_with(" null")),
        "{lsl}"
    );
    assert!(lsl.lines().any(|l| l.starts_with("prw-r--r--")), "{lsl}");
    assert!(lsl.lines().any(|l| l.starts_with("srwxr-xr-x")), "{lsl}");
    let lsr = ok(&erofs(&[&"ls", &"-R", &f.image, &"/a"]));
    assert!(lsr.contains("/a/b/c/d/e:\ndeep.txt"), "{lsr}");
    let lsl = ok(&erofs(&[&"ls", &"-l", &f.image, &"/link-short"]));
    assert!(lsl.contains("-> small.txt"), "{lsl}");

    let stat = ok(&erofs(&[&"stat", &f.image, &"/large.bin"]));
    assert!(stat.contains("size: 3146962"), "{stat}");
    assert!(stat.contains("uid: 100000"), "{stat}");
    assert!(stat.contains("gid: 4000000000"), "{stat}");

    let cat = erofs(&[&"cat", &f.image, &"/large.bin"]);
    ok(&cat);
    assert_eq!(cat.stdout, std::fs::read(f.tree.join("large.bin")).unwrap());
    let cat = erofs(&[&"cat", &f.chunked, &"/sparse.bin", &"--device", &f.blob]);
    ok(&cat);
    assert_eq!(
        cat.stdout,
        std::fs::read(f.tree.join("sparse.bin")).unwrap()
    );

    let x = ok(&erofs(&[&"xattrs", &f.image, &"/small.txt"]));
    for line in [
        "user.color=\"blue\"",
        "trusted.t1=\"trusted value\"",
        "security.s1=0x7365630062696e617279ff",
        "user.shared=\"one value for many files\"",
        "trusted.overlay.opaque=\"y\"",
    ] {
        assert!(x.lines().any(|l| l == line), "missing {line} in\n{x}");
    }
    let x = ok(&erofs(&[&"xattrs", &f.image, &"/emptydir"]));
    assert!(x.contains("system.posix_acl_default=0x02000000"), "{x}");

    let chunks = ok(&erofs(&[&"chunks", &f.chunked, &"/sparse.bin"]));
    assert!(chunks.contains("hole"), "{chunks}");
    assert!(chunks.contains("device 1 offset"), "{chunks}");

    // Errors: stderr and a non-zero exit.
    for args in [
        vec!["cat", "IMAGE", "/nope"],
        vec!["cat", "IMAGE", "/a"],
        vec!["stat", "IMAGE", "/small.txt/x"],
        vec!["ls", "/nonexistent/image"],
    ] {
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| -> &dyn AsRef<std::ffi::OsStr> {
                if *a == "IMAGE" { &f.image } else { a }
            })
            .collect();
        let out = erofs(&args);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("erofs: "));
    }
    let out = erofs(&[&"frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

/// `extract` is all or nothing: a non-empty DEST is refused unless `--force`, a failure
/// leaves neither a partial tree nor a temporary one, and `--force` replaces only the
/// entries the image has.
#[test]
fn reader_cli_extract_all_or_nothing() {
    let Some(f) = fixture() else { return };
    let dir = tests::scratch_dir("reader_cli_extract_aon");
    let siblings = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    // A non-empty DEST: refused, untouched, with what to do.
    let dest = dir.join("busy");
    std::fs::create_dir_all(dest.join("small.txt")).unwrap();
    std::fs::write(dest.join("mine"), b"keep me").unwrap();
    let out = erofs(&[&"extract", &f.image, &dest]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(siblings(&dest), ["mine", "small.txt"]);

    // --force: the image's entries replace those of the same name, others stay.
    ok(&erofs(&[&"extract", &"--force", &f.image, &dest]));
    assert_eq!(std::fs::read(dest.join("mine")).unwrap(), b"keep me");
    assert_eq!(
        std::fs::read(dest.join("small.txt")).unwrap(),
        std::fs::read(f.tree.join("small.txt")).unwrap()
    );
    assert_eq!(siblings(&dir), ["busy"], "no temporary tree left");

    // A failure half way (the blob device is missing): no DEST, no temporary tree, a hint.
    let dest = dir.join("fails");
    let out = erofs(&[&"extract", &f.chunked, &dest]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device") && err.contains("removed the partial tree"),
        "{err}"
    );
    assert!(!dest.exists());
    assert_eq!(siblings(&dir), ["busy"], "no temporary tree left");
    // ... so the next try, with the device, succeeds.
    ok(&erofs(&[
        &"extract",
        &f.chunked,
        &dest,
        &"--device",
        &f.blob,
    ]));

    // An empty DEST is fine.
    let dest = dir.join("empty");
    std::fs::create_dir(&dest).unwrap();
    ok(&erofs(&[&"extract", &"--quiet", &f.image, &dest]));
    let got = tree::snapshot_dir(&dest);
    tree::compare(&tree::snapshot_dir(&f.tree), &got, &Compare::default()).unwrap();
}

/// Modes and owners come out as the image says whatever masks or sets them where the tree
/// is made: a restrictive umask, a parent directory that is set-group-ID with another group,
/// a default ACL on the parent (which masks new entries instead of the umask). `extract`
/// creates files that need no `fchown`/`fchmod` with their final mode: these are the cases
/// where it must not.
#[test]
fn reader_cli_extract_modes_whatever_the_parent() {
    let Some(f) = fixture() else { return };
    let Some(setfacl) = tests::require_tool("setfacl") else {
        return;
    };
    let dir = tests::scratch_dir("reader_cli_extract_modes");
    let want = tree::snapshot_dir(&f.tree);
    let check = |dest: &Path, how: &Compare| {
        if let Err(d) = tree::compare(&want, &tree::snapshot_dir(dest), how) {
            panic!("{}:\n{d}", dest.display());
        }
    };
    let no_root = Compare {
        root_metadata: false,
        ..Compare::default()
    };

    // umask 077: the modes are the image's, not masked.
    let dest = dir.join("umask");
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" extract \"$1\" \"$2\"")
        .arg(tree::erofs_cli())
        .arg(&f.image)
        .arg(&dest)
        .output()
        .unwrap();
    ok(&out);
    check(&dest, &Compare::default());

    // A set-group-ID parent owned by another group: new entries take its group; extract
    // must give each its own.
    let sgid = dir.join("sgid");
    std::fs::create_dir(&sgid).unwrap();
    std::os::unix::fs::chown(&sgid, None, Some(5)).unwrap();
    std::fs::set_permissions(&sgid, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let dest = sgid.join("out");
    ok(&erofs(&[&"extract", &f.image, &dest]));
    check(&dest, &no_root);

    // A default ACL with no permission for group and others: it, not the umask, masks the
    // modes of new entries. (New directories inherit it as an xattr: xattrs not compared.)
    let acl = dir.join("acl");
    std::fs::create_dir(&acl).unwrap();
    tests::run(
        Command::new(setfacl)
            .args(["-d", "-m", "u::rwx,g::---,o::---"])
            .arg(&acl),
    );
    let dest = acl.join("out");
    ok(&erofs(&[&"extract", &f.image, &dest]));
    check(
        &dest,
        &Compare {
            xattrs: false,
            ..no_root
        },
    );
}

/// The inspection commands as handy as dump.erofs: several paths for `cat`, dashed UUIDs and
/// readable times, on-disk size in `stat`, extents of compressed files, errors with hints.
#[test]
fn reader_cli_like_dump_erofs() {
    let Some(f) = fixture() else { return };
    let cat = ok(&erofs(&[&"cat", &f.image, &"/small.txt", &"/small.txt"]));
    let small = std::fs::read_to_string(f.tree.join("small.txt")).unwrap();
    assert_eq!(cat, format!("{small}{small}"));
    // One missing path: the others are still written, the exit code says it failed.
    let out = erofs(&[&"cat", &f.image, &"/nope", &"/small.txt"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), small);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nope"));

    let sb = ok(&erofs(&[&"sb", &f.image]));
    let uuid = sb
        .lines()
        .find_map(|l| l.strip_prefix("uuid:"))
        .unwrap()
        .trim();
    let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{sb}");
    let dump = tests::run(Command::new(tests::require_tool("dump.erofs").unwrap()).arg(&f.image));
    assert!(dump.contains(uuid), "dump.erofs: {dump}\nerofs: {sb}");
    let created = dump
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem created:"))
        .unwrap()
        .trim();
    // dump.erofs prints local time; the tests run with TZ unset (UTC) as CI does.
    if std::env::var_os("TZ").is_none() {
        assert!(sb.contains(created), "dump.erofs: {created}\nerofs: {sb}");
    }

    let stat = ok(&erofs(&[&"stat", &f.image, &"/large.bin"]));
    assert!(stat.contains("  disk: "), "{stat}");
    assert!(stat.contains(" UTC"), "{stat}");

    // A compressed file: its extents, as dump.erofs -e counts them.
    let dir = tests::scratch_dir("reader_cli_extents");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("text"), tests::text(7, 300_000)).unwrap();
    let img = dir.join("lz4.erofs");
    tree::mkfs(&img, &src, &["-zlz4hc", "-C16384"]);
    let ext = ok(&erofs(&[&"extents", &img, &"/text"]));
    let dumped = tests::run(
        Command::new(tests::require_tool("dump.erofs").unwrap())
            .args(["--path=/text", "-e"])
            .arg(&img),
    );
    let count = dumped
        .lines()
        .find_map(|l| l.strip_suffix(" extents found"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("{dumped}"));
    assert_eq!(ext.lines().count(), count + 1, "{ext}\n{dumped}");
    assert!(ext.contains("lz4"), "{ext}");
    let stat = ok(&erofs(&[&"stat", &img, &"/text"]));
    assert!(stat.contains("(ratio "), "{stat}");

    // Errors name the file and say what to do.
    let out = erofs(&[&"cat", &f.chunked, &"/large.bin"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/large.bin") && err.contains("--device"),
        "{err}"
    );
    let out = erofs(&[&"sb", &dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a directory"), "{err}");
}

/// A full disk half way through a file the kernel copies (`sendfile(2)`: an uncompressed
/// file of 3 MiB into a 1 MiB tmpfs, so the copy comes short): `extract` falls back to
/// writing the file itself, which fails with the disk's error, names the file, exits 1
/// (not a panic) and leaves no partial tree.
#[test]
fn reader_cli_extract_full_disk_mid_kernel_copy() {
    if tests::require_tool("mkfs.erofs").is_none()
        || tests::require_root("mounts a 1 MiB tmpfs").is_none()
    {
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let dir = tests::scratch_dir("reader_cli_extract_full");
    let src = dir.join("tree");
    std::fs::create_dir(&src).unwrap();
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 1234u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(src.join("big"), &big).unwrap();
    let image = dir.join("image.erofs");
    tree::mkfs(&image, &src, &[]);

    let disk = dir.join("disk");
    std::fs::create_dir(&disk).unwrap();
    tests::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&disk),
    );
    let _unmount = Unmount(&disk);
    let dest = disk.join("out");
    let out = erofs(&[&"extract", &image, &dest]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No space left on device") && err.contains("big"),
        "{err}"
    );
    assert!(err.contains("removed the partial tree"), "{err}");
    assert_eq!(std::fs::read_dir(&disk).unwrap().count(), 0, "nothing left");

    // The same image into room enough: the kernel copy gives the right bytes.
    drop(_unmount);
    let dest = dir.join("roomy");
    ok(&erofs(&[&"extract", &image, &dest]));
    assert_eq!(std::fs::read(dest.join("big")).unwrap(), big);
}
