//! Cold prediction's rules on a Nydus image built by nydus-image.
//!
//! The ELF rule (`ondemand::predict::Rules::needed`) on an image built by
//! nydus-image from the host's own `ls` and the libraries it needs (laid out as Debian's
//! merged /usr: `lib -> usr/lib`, a library reached through a symlink): a READ of the
//! program's first bytes, with no pool threads, ends with the program's libraries (and
//! theirs) filled whole; without the rule, none of them. Whatever order the program's pieces
//! arrive in (its last piece, with the dynamic section, first). And `FileMap::files_in`
//! (blob ranges back to the image's paths, as `ondemand::warm::PageCacheWarmer` reads them
//! through a mount; here through the source tree).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cachefiles_proto::{Command as Cmd, MsgId, ObjectId, OpenRequest, ReadRequest, Request};
use erofs_reader::{ExtentTarget, Image};
use ondemand::predict::{FileMap, NeededRule, Predictor, Rules, elf};
use ondemand::rafs::RafsDirServer;
use ondemand::testing::FakeFd;
use ondemand::{AlignedBuf, Session};

use tests::program_tree::LIBDIR;
const CHUNK: u64 = 0x10000;

/// `bin/prog` (the host's `ls`) and the closure of its libraries ([`tests::program_tree`]),
/// bytecode directories and hostile programs beside them; returns the libraries' names.
fn build_tree(src: &Path) -> Vec<String> {
    let names = tests::program_tree::write(src);
    // Three packages' bytecode directories and a file beside one of them (the cousin rule).
    for (pkg, n) in [("a", 1), ("b", 2), ("c", 3)] {
        let d = src.join("usr/lib/py").join(pkg).join("__pycache__");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("m{n}.pyc")), tests::text(n, 30_000)).unwrap();
    }
    std::fs::write(src.join("usr/lib/py/c/source.py"), tests::text(9, 30_000)).unwrap();
    // A file beside the program: a READ in it fills the program by the directory rule.
    std::fs::write(src.join("bin/aaa"), tests::text(3, 20_000)).unwrap();
    // A program whose interpreter (`PT_INTERP`) no library names: the host's `cat` (chunks
    // of its own: nydus-image stores a chunk seen before once, and a file that shares
    // chunks with another is not one run) with `.so.2` of its interpreter's path made
    // `.so.9`, that file (bytes of its own), and a file beside the program.
    let cat = std::fs::read("/bin/cat").unwrap();
    let head = elf::Head::parse(&cat).unwrap();
    let r = head.interp_range().unwrap();
    let path = head
        .interpreter(&cat[r.start as usize..r.end as usize])
        .unwrap();
    assert_eq!(
        path, b"/lib64/ld-linux-x86-64.so.2",
        "the host's interpreter"
    );
    let mut prog9 = cat.clone();
    prog9[r.start as usize + path.len() - 1] = b'9';
    std::fs::create_dir_all(src.join("usr/libexec")).unwrap();
    std::fs::write(src.join("usr/libexec/prog9"), &prog9).unwrap();
    std::fs::set_permissions(
        src.join("usr/libexec/prog9"),
        PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(src.join("usr/libexec/aaa9"), tests::text(8, 20_000)).unwrap();
    std::fs::write(
        src.join("usr/lib64/ld-linux-x86-64.so.9"),
        tests::text(7, 150_000),
    )
    .unwrap();
    entrypoint_files(&src.join("opt"), &std::fs::read("/bin/ls").unwrap());
    names
}

/// Programs an image config may name, good and hostile (the entrypoint rule), in `opt`.
fn entrypoint_files(opt: &Path, ls: &[u8]) {
    let exe = |name: &str, bytes: &[u8]| {
        std::fs::write(opt.join(name), bytes).unwrap();
        std::fs::set_permissions(opt.join(name), PermissionsExt::from_mode(0o755)).unwrap();
    };
    std::fs::create_dir_all(opt.join("dir")).unwrap();
    // A script run by the program; a script run by that script (not followed); a script
    // with a relative interpreter.
    exe("run.sh", b"#!/bin/prog -l\n");
    exe("run2.sh", b"#!/opt/run.sh\n");
    exe("rel.sh", b"#!prog\n");
    // ELF magic and garbage; ELF program headers pointing past the file.
    let mut bad = b"\x7fELF".to_vec();
    bad.extend(tests::text(5, 300));
    exe("bad", &bad);
    let mut cut = ls[..4096].to_vec();
    cut[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff
    exe("cut", &cut);
    // Not executable; a symlink loop.
    std::fs::write(opt.join("noexec"), ls).unwrap();
    std::os::unix::fs::symlink("loop", opt.join("loop")).unwrap();
}

/// Where `path`'s bytes are on the blob.
fn extent(image: &Image, path: &str) -> std::ops::Range<u64> {
    let inode = image.lookup(path).unwrap();
    let len = inode.metadata().len();
    let e = image.extents(&inode, 0..len).unwrap();
    let ExtentTarget::Device { offset, .. } = e[0].target else {
        panic!("{path}: not on a blob");
    };
    offset..offset + len
}

struct Setup {
    _dir: tests::Scratch,
    blobs: PathBuf,
    image: Image,
    blob_id: Vec<u8>,
    libraries: Vec<String>,
}

fn setup(name: &str) -> Option<Setup> {
    tests::require_tool("nydus-image")?;
    let dir = tests::scratch_dir(name);
    let src = dir.path().join("src");
    let libraries = build_tree(&src);
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let boot = blobs.join("boot");
    tests::nydus_image::Create::new(&src, &blobs)
        .bootstrap(&boot)
        .args(&["--compressor", "zstd", "--chunk-size", "0x10000"])
        .run()?;
    let image = Image::open(&boot).unwrap();
    let blob_id = image.devices()[0].tag.clone();
    Some(Setup {
        _dir: dir,
        blobs,
        image,
        blob_id,
        libraries,
    })
}

/// A session over the blob (64 KiB windows, no fill ahead, no pool threads: the worker
/// runs every queued piece before `execute` returns) with `rules`, the blob opened as
/// object 1.
fn session(s: &Setup, rules: Rules, cache: &Path) -> Session<RafsDirServer, FakeFd> {
    let predictor = Arc::new(Predictor::new());
    predictor.set(FileMap::from_image(&s.image, rules, CHUNK).unwrap());
    let session = Session::new(RafsDirServer::new(&s.blobs))
        .with_readahead(CHUNK)
        .with_sequential_ahead(0)
        .with_predictor(predictor)
        .with_fill_threads(0);
    let (fd, _log) = FakeFd::create(cache);
    let open = Request::Open(OpenRequest {
        msg_id: MsgId(1),
        object_id: ObjectId(1),
        volume_key: b"erofs,test",
        cookie_key: &s.blob_id,
        fd: 3,
        flags: 0,
    });
    let actions = session.handle(&open, Some(fd));
    session.execute(actions, &|_: &Cmd<'_>| Ok(()), &mut AlignedBuf::new(4096));
    session
}

fn read(s: &Session<RafsDirServer, FakeFd>, msg: u32, off: u64) {
    let req = Request::Read(ReadRequest {
        msg_id: MsgId(msg),
        object_id: ObjectId(1),
        off,
        len: 4096,
    });
    let actions = s.handle(&req, None);
    s.execute(
        actions,
        &|_: &Cmd<'_>| Ok(()),
        &mut AlignedBuf::new(CHUNK as usize),
    );
}

/// Whether all of `range` (rounded out to blocks) is present in object 1.
fn present(s: &Session<RafsDirServer, FakeFd>, range: &std::ops::Range<u64>) -> bool {
    let object = s.object(ObjectId(1)).unwrap();
    let r = range.start / 4096 * 4096..range.end.div_ceil(4096) * 4096;
    object.present().gaps(r).is_empty()
}

#[test]
fn a_programs_libraries_are_filled_once_its_bytes_are() {
    let Some(s) = setup("predict_rules/libraries") else {
        return;
    };
    let prog = extent(&s.image, "/bin/prog");
    let libs: Vec<_> = s
        .libraries
        .iter()
        .map(|l| (l.clone(), extent(&s.image, &format!("/{LIBDIR}/{l}"))))
        .collect();
    assert!(libs.iter().any(|(l, _)| l == "libc.so.6"), "{libs:?}");
    let whole = Rules {
        whole_file: 64 << 20,
        directory: 0,
        needed: NeededRule::Off,
        cousins: 0,
    };
    let cache = s._dir.path().join("cache");

    // Without the rule: the program whole, no library.
    let plain = session(&s, whole, &cache);
    read(&plain, 2, prog.start);
    assert!(present(&plain, &prog));
    for (l, e) in &libs {
        assert!(!present(&plain, e), "{l} filled without the rule");
    }
    drop(plain);

    // With it: every library of the closure, whole, and the bytes are the blob's.
    let chained = session(
        &s,
        Rules {
            needed: NeededRule::All,
            ..whole
        },
        &cache,
    );
    read(&chained, 2, prog.start);
    for (l, e) in &libs {
        assert!(present(&chained, e), "{l} not filled");
    }
    let space = std::fs::read(&cache).unwrap();
    let libc = &libs.iter().find(|(l, _)| l == "libc.so.6").unwrap().1;
    assert_eq!(
        space[libc.start as usize..libc.end as usize],
        std::fs::read(tests::program_tree::host_library(b"libc.so.6")).unwrap()[..]
    );
    drop(chained);

    // The program's dynamic section filled before its head: a READ there fills its
    // window first, then the rest of the program from its start (the whole-file rule's
    // pieces), so the rule reads the dynamic section before it knows where it is.
    let head = elf::Head::parse(&std::fs::read("/bin/ls").unwrap()).unwrap();
    let dynamic = head.dynamic_range().unwrap();
    assert!(
        dynamic.start >= CHUNK,
        "ls's dynamic section is in its first chunk"
    );
    let late = session(
        &s,
        Rules {
            needed: NeededRule::All,
            ..whole
        },
        &cache,
    );
    read(&late, 2, prog.start + dynamic.start);
    for (l, e) in &libs {
        assert!(present(&late, e), "{l} not filled");
    }

    drop(late);

    // A program only guessed (filled by the directory rule for a READ in its neighbour):
    // `All` fills its libraries, `Demanded` only once a READ lands in it.
    let aaa = extent(&s.image, "/bin/aaa");
    let dir = Rules {
        whole_file: 64 << 20,
        directory: 64 << 20,
        needed: NeededRule::All,
        cousins: 0,
    };
    let all = session(&s, dir, &cache);
    read(&all, 2, aaa.start);
    assert!(present(&all, &prog));
    for (l, e) in &libs {
        assert!(present(&all, e), "{l} not filled");
    }
    drop(all);
    let demanded = session(
        &s,
        Rules {
            needed: NeededRule::Demanded,
            ..dir
        },
        &cache,
    );
    read(&demanded, 2, aaa.start);
    assert!(present(&demanded, &prog));
    for (l, e) in &libs {
        assert!(!present(&demanded, e), "{l} filled for a guess");
    }
    read(&demanded, 3, prog.start);
    for (l, e) in &libs {
        assert!(present(&demanded, e), "{l} not filled once demanded");
    }
}

/// The ELF rule looks up a demanded program's interpreter (`PT_INTERP`) as soon as its head
/// is filled and fills it whole, as the kernel maps it next; not without the rule, nor for a
/// program only guessed.
#[test]
fn a_programs_interpreter_is_filled_with_its_head() {
    let Some(s) = setup("predict_rules/interpreter") else {
        return;
    };
    let prog = extent(&s.image, "/usr/libexec/prog9");
    let loader = extent(&s.image, "/usr/lib64/ld-linux-x86-64.so.9");
    let cache = s._dir.path().join("cache");
    let rules = |needed| Rules {
        whole_file: 64 << 20,
        directory: 0,
        needed,
        cousins: 0,
    };
    let off = session(&s, rules(NeededRule::Off), &cache);
    read(&off, 2, prog.start);
    assert!(present(&off, &prog));
    assert!(
        !present(&off, &loader),
        "interpreter filled without the rule"
    );
    drop(off);
    let on = session(&s, rules(NeededRule::Demanded), &cache);
    read(&on, 2, prog.start);
    assert!(present(&on, &loader), "interpreter not filled");
    let space = std::fs::read(&cache).unwrap();
    assert_eq!(
        space[loader.start as usize..loader.end as usize],
        tests::text(7, 150_000)[..]
    );
    drop(on);
    // Guessed by the directory rule (a READ beside it): no interpreter with `Demanded`.
    let beside = extent(&s.image, "/usr/libexec/aaa9");
    let guessed = session(
        &s,
        Rules {
            directory: 64 << 20,
            ..rules(NeededRule::Demanded)
        },
        &cache,
    );
    read(&guessed, 2, beside.start);
    assert!(
        present(&guessed, &prog),
        "the directory rule did not fill the program"
    );
    assert!(
        !present(&guessed, &loader),
        "interpreter filled for a guess"
    );
}

/// `FileMap::files_in` on a real image: blob ranges back to the image's paths and the
/// files' own offsets; and a `PageCacheWarmer` given those ranges opens and reads the files
/// at those paths below its root (here the tree the image was built from, as a mount shows
/// it), nothing else.
#[test]
fn blob_ranges_map_to_the_paths_of_the_files_that_hold_them() {
    let Some(s) = setup("predict_rules/files_in") else {
        return;
    };
    let map = FileMap::from_image(&s.image, Rules::DEFAULT, CHUNK).unwrap();
    let prog = extent(&s.image, "/bin/prog");
    let len = prog.end - prog.start;
    assert_eq!(
        map.files_in(&s.blob_id, prog.clone()),
        vec![(b"/bin/prog".to_vec(), 0..len)]
    );
    // A middle part: the program's own offsets.
    assert_eq!(
        map.files_in(&s.blob_id, prog.start + 8192..prog.start + 12288),
        vec![(b"/bin/prog".to_vec(), 8192..12288)]
    );
    // libc (`libc.so.6` links to the file): by its directory's path (not the `lib`
    // symlink's), the regular file's name, the whole file.
    let libc = extent(&s.image, &format!("/{LIBDIR}/libc.so.6"));
    let got = map.files_in(&s.blob_id, libc.clone());
    assert_eq!(got.len(), 1, "{got:?}");
    let path = String::from_utf8(got[0].0.clone()).unwrap();
    assert!(path.starts_with(&format!("/{LIBDIR}/libc")), "{path}");
    assert_eq!(got[0].1, 0..libc.end - libc.start);
    let src = s._dir.path().join("src");
    let meta = std::fs::symlink_metadata(src.join(&path[1..])).unwrap();
    assert!(
        meta.is_file() && meta.len() == libc.end - libc.start,
        "{path}"
    );
    assert!(map.files_in(b"no such blob", prog.clone()).is_empty());

    let warmer = ondemand::warm::PageCacheWarmer::new(&src).unwrap();
    warmer.set_map(map);
    use ondemand::PrefetchObserver;
    warmer.prefetched(&s.blob_id, &[prog.clone(), libc.clone()]);
    let t = std::time::Instant::now();
    while !(warmer.is_idle() && warmer.counts().jobs == 1) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "warmer hangs"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let c = warmer.counts();
    assert_eq!((c.files, c.errors), (2, 0), "{c:?}");
    assert_eq!(c.bytes, len + (libc.end - libc.start));
}

/// A file not stored whole in one run of a blob (mkfs.erofs's chunks of a sparse file: holes,
/// one chunk of data) is not in the map, where it was mapped by its one stored chunk as if
/// that were the file's start: its blob bytes name no file (the entrypoint rule's rule, one
/// function for both).
#[test]
fn a_file_with_holes_is_not_mapped_by_its_stored_bytes() {
    let dir = tests::scratch_dir("predict_rules/holes");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("dense"), tests::text(1, 20_000)).unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &tests::text(2, 4096), 512 << 10).unwrap();
    let (img, blob) = (dir.path().join("img"), dir.path().join("blob"));
    tests::tree::mkfs(
        &img,
        &src,
        &["--chunksize=4096", &format!("--blobdev={}", blob.display())],
    );
    let image = Image::open_with_devices(&img, [&blob]).unwrap();
    let inode = image.lookup("/sparse").unwrap();
    let stored: Vec<_> = image
        .extents(&inode, 0..1 << 20)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.target {
            ExtentTarget::Device { offset, .. } => Some((e.file_offset, offset..offset + e.len)),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), 1, "one stored chunk among holes: {stored:?}");
    assert_eq!(stored[0].0, 512 << 10);
    let map = FileMap::from_image(&image, Rules::default(), 4096).unwrap();
    // mkfs.erofs --blobdev leaves the device's tag empty.
    assert_eq!(map.files_in(b"", stored[0].1.clone()), vec![]);
    let dense = extent(&image, "/dense");
    assert_eq!(
        map.files_in(b"", dense.clone()),
        vec![(b"/dense".to_vec(), 0..dense.end - dense.start)]
    );
}

#[test]
fn a_read_in_a_bytecode_directory_fills_its_cousins() {
    let Some(s) = setup("predict_rules/cousins") else {
        return;
    };
    let a = extent(&s.image, "/usr/lib/py/a/__pycache__/m1.pyc");
    let b = extent(&s.image, "/usr/lib/py/b/__pycache__/m2.pyc");
    let c = extent(&s.image, "/usr/lib/py/c/__pycache__/m3.pyc");
    let source = extent(&s.image, "/usr/lib/py/c/source.py");
    let cache = s._dir.path().join("cache");
    let rules = Rules {
        whole_file: 0,
        directory: 0,
        needed: NeededRule::Off,
        cousins: 1 << 20,
    };
    // 4 KiB windows: nothing but the READ's block and the rule's pieces.
    let on = session(&s, rules, &cache).with_readahead(4096);
    read(&on, 2, a.start);
    assert!(present(&on, &b) && present(&on, &c));
    assert!(!present(&on, &source), "a file beside a cousin is not one");
    drop(on);
    // Over the bound: nothing.
    let small = session(
        &s,
        Rules {
            cousins: 40_000,
            ..rules
        },
        &cache,
    )
    .with_readahead(4096);
    read(&small, 2, a.start);
    assert!(!present(&small, &b) && !present(&small, &c));
}

mod entrypoint {
    //! The entrypoint rule (`ondemand::predict::entrypoint`): the program an image config
    //! names, found in the image, and the files the kernel and the loader read to start it,
    //! each known (to be fetched) before its bytes are read.

    use super::*;
    use ondemand::predict::entrypoint::{self, ClosureFile, EntrypointError, Limits};
    use std::cell::RefCell;
    use std::ops::Range;

    /// The image with its blob, read through its decoded device.
    fn with_blob(s: &Setup) -> Image {
        erofs_reader::ImageBuilder::open(s.blobs.join("boot"))
            .unwrap()
            .blob_dir(&s.blobs)
            .build()
            .unwrap()
    }

    /// `closure` of `program`, reading through the image's device; returns the files and
    /// the device ranges read, in order, each after `found` was told of the file it is in.
    fn walk(image: &Image, program: &[u8], limits: Limits) -> (Vec<ClosureFile>, Vec<Range<u64>>) {
        let told: RefCell<Vec<ClosureFile>> = RefCell::new(Vec::new());
        let reads = RefCell::new(Vec::new());
        let files = entrypoint::closure(
            image,
            program,
            limits,
            &mut |tag: &[u8], r: Range<u64>| {
                assert_eq!(tag, &image.devices()[0].tag[..]);
                // Told of before any of its bytes are read.
                assert!(
                    told.borrow()
                        .iter()
                        .any(|f| f.extent.start <= r.start && r.end <= f.extent.end),
                    "{r:?} read before its file was found"
                );
                reads.borrow_mut().push(r.clone());
                let mut buf = vec![0; (r.end - r.start) as usize];
                image
                    .device_source(1)
                    .unwrap()
                    .read_exact_at(&mut buf, r.start)?;
                Ok(buf)
            },
            &mut |f: &ClosureFile| told.borrow_mut().push(f.clone()),
        );
        assert_eq!(
            files,
            *told.borrow(),
            "found is told of each file once, in order"
        );
        (files, reads.into_inner())
    }

    fn paths(files: &[ClosureFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| String::from_utf8(f.path.clone()).unwrap())
            .collect()
    }

    #[test]
    fn the_programs_closure_is_known_before_its_bytes_are_read() {
        let Some(s) = setup("predict_rules/entrypoint") else {
            return;
        };
        let image = with_blob(&s);
        // Looked up in PATH as a runtime does: relative and missing entries skipped.
        let prog = entrypoint::program(&image, "prog", "relative:/nonexistent:/opt/dir:/bin", "/")
            .unwrap();
        assert_eq!(prog, b"/bin/prog");
        let (files, reads) = walk(&image, &prog, Limits::DEFAULT);
        // The program, its interpreter (PT_INTERP, through /lib64's links), then every
        // library of the closure, each once, and nothing else.
        let mut want: Vec<Range<u64>> = s
            .libraries
            .iter()
            .map(|l| extent(&s.image, &format!("/{LIBDIR}/{l}")))
            .collect();
        want.push(extent(&s.image, "/bin/prog"));
        let mut got: Vec<Range<u64>> = files.iter().map(|f| f.extent.clone()).collect();
        want.sort_by_key(|r| r.start);
        got.sort_by_key(|r| r.start);
        assert_eq!(got, want, "{:?}", paths(&files));
        assert_eq!(files[0].path, b"/bin/prog");
        assert_eq!(files[0].depth, 0);
        assert_eq!(
            files[1].path,
            b"/lib64/ld-linux-x86-64.so.2",
            "{:?}",
            paths(&files)
        );
        assert!(files[1..].iter().all(|f| f.depth >= 1));
        // Heads and headers, not whole files.
        let read: u64 = reads.iter().map(|r| r.end - r.start).sum();
        let total: u64 = files.iter().map(|f| f.extent.end - f.extent.start).sum();
        assert!(read < total / 2, "{read} of {total} bytes read");

        // A script: its interpreter's closure too; a script's interpreter's interpreter not.
        let (files, _) = walk(&image, b"/opt/run.sh", Limits::DEFAULT);
        assert_eq!(files.len(), want.len() + 1, "{:?}", paths(&files));
        assert_eq!(files[1].path, b"/bin/prog");
        let (files, _) = walk(&image, b"/opt/run2.sh", Limits::DEFAULT);
        assert_eq!(paths(&files), ["/opt/run2.sh", "/opt/run.sh"]);
        let rel = entrypoint::program(&image, "rel.sh", "/opt", "").unwrap();
        assert_eq!(
            paths(&walk(&image, &rel, Limits::DEFAULT).0),
            ["/opt/rel.sh"]
        );
        // Relative to the working directory.
        assert_eq!(
            entrypoint::program(&image, "./run.sh", "", "/opt/").unwrap(),
            b"/opt/./run.sh"
        );
    }

    #[test]
    fn hostile_programs_and_objects_end_in_errors_or_nothing() {
        let Some(s) = setup("predict_rules/entrypoint_hostile") else {
            return;
        };
        let image = with_blob(&s);
        let find = |name: &str| entrypoint::program(&image, name, "/opt:/bin", "/");
        assert!(matches!(find(""), Err(EntrypointError::NoProgram)));
        assert!(matches!(find("a\0b"), Err(EntrypointError::BadName(_))));
        assert!(matches!(
            find(&"x".repeat(5000)),
            Err(EntrypointError::BadName(_))
        ));
        for missing in [
            "nope",
            "noexec",
            "dir",
            "/opt/dir",
            "/opt/noexec",
            "/bin/prog/x",
        ] {
            assert!(
                matches!(find(missing), Err(EntrypointError::NotFound(_))),
                "{missing}: {:?}",
                find(missing)
            );
        }
        // A symlink loop: the reader's error, typed.
        assert!(matches!(
            find("/opt/loop"),
            Err(EntrypointError::Image { .. } | EntrypointError::NotFound(_))
        ));
        // `..` stays in the image.
        assert_eq!(
            find("../../../../bin/prog").unwrap(),
            b"/../../../../bin/prog"
        );
        // ELF magic with garbage, program headers past the file: the file alone.
        for bad in [&b"/opt/bad"[..], b"/opt/cut"] {
            assert_eq!(walk(&image, bad, Limits::DEFAULT).0.len(), 1);
        }
        // The limits.
        let only = |l: Limits| paths(&walk(&image, b"/bin/prog", l).0);
        assert_eq!(
            only(Limits {
                files: 1,
                ..Limits::DEFAULT
            }),
            ["/bin/prog"]
        );
        assert_eq!(
            only(Limits {
                depth: 0,
                ..Limits::DEFAULT
            }),
            ["/bin/prog"]
        );
        assert!(
            only(Limits {
                files: 0,
                ..Limits::DEFAULT
            })
            .is_empty()
        );
        assert!(
            only(Limits {
                bytes: 1,
                ..Limits::DEFAULT
            })
            .is_empty()
        );
        // A device that fails, or answers garbage or too little: the program alone.
        type Read = Box<dyn FnMut(&[u8], Range<u64>) -> std::io::Result<Vec<u8>>>;
        let readers: Vec<Read> = vec![
            Box::new(|_, _| Err(std::io::Error::other("EIO"))),
            Box::new(|_, r| Ok(tests::text(7, (r.end - r.start) as usize))),
            Box::new(|_, _| Ok(b"\x7fELF".to_vec())),
            Box::new(|_, _| Ok(Vec::new())),
        ];
        for mut read in readers {
            let files = entrypoint::closure(
                &image,
                b"/bin/prog",
                Limits::DEFAULT,
                &mut read,
                &mut |_| {},
            );
            assert_eq!(paths(&files), ["/bin/prog"]);
        }
    }
}
