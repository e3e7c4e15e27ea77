//! Whole-image benchmark on an uncompressed image, like against like, as ratios from one run:
//!
//! * `erofs fsck IMAGE` against `fsck.erofs --extract IMAGE` (no directory: both read and
//!   check every byte of every file and write nothing; target ratio <= 0.8);
//! * `erofs extract IMAGE DIR` against `fsck.erofs --extract=DIR IMAGE` (both write the
//!   tree; target ratio <= 0.7 in every run, not only the median);
//!
//! and, for context, `erofs fsck --threads 1` and reading every file of the host kernel's
//! mount of the same image with two threads.
//!
//! Run as root with erofs-utils available (`$PATH`, `$MKFS_EROFS`/`$FSCK_EROFS`, or the
//! test environment's `tools/bin`):
//!
//! ```text
//! cargo bench -p erofs-reader --features cli --bench fsck
//! ```
//!
//! It builds a tree of 21,000+ files (about 400 MB; small, medium and large files of
//! pseudo-random bytes) under the target directory and an image of it with `mkfs.erofs`,
//! puts the image in the page cache as a file read from disk (its pages as mkfs wrote them
//! dropped, then read once: large folios), then runs each pair `EROFS_BENCH_RUNS` times
//! (default 5), the two commands of a pair back to back so that both see the same load, and
//! prints medians, every round's wall and CPU ratio in run order, the machine's load average,
//! the CPU the rest of the machine used during each run (and the worst of the rounds in
//! which it used under a quarter of a core during both commands) and each side's peak memory
//! split into heap (anonymous) and mapped page cache (file-backed).
//!
//! Extraction is fair only with care: each extraction goes into a filesystem of its own,
//! made for it right before (`mkfs.ext4` on a sparse file under the target directory,
//! loop-mounted; inode tables and journal initialised by mkfs, so no background
//! initialisation runs meanwhile), then `sync` (dirty pages flushed, the host filesystem's
//! journal committed), then the timed command; the filesystem is unmounted and removed
//! right after it, untimed. So every extraction, ours or theirs, first or second in its
//! round, starts from the same state. On a long-lived
//! filesystem ext4 skips recently deleted inodes when it allocates new ones
//! (`recently_deleted()`, a window of one to five minutes): after earlier runs' trees were
//! deleted, extractions into it ran 2-5 times slower, whichever command met the freed
//! inodes first. One untimed extraction by each command comes before the timed rounds (its
//! tree is checked against the source tree: entries, types, modes, bytes), and the two
//! commands of each pair take turns going first. The CPU the rest of the machine
//! used meanwhile (other sessions, writeback) tells a slow round with company from one
//! without. The source tree of an earlier run is reused (a stamp beside it records its
//! scale and size).
//!
//! This needs about 1 GB of free disk under the target directory (one filesystem of twice
//! the tree's size at a time, sparse) besides the tree and the image. `EROFS_BENCH_SCALE`
//! (default 1.0) scales the file counts; `EROFS_BENCH_EROFS` runs another `erofs` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{
    Measured, Pair, erofs, find_tool, median, pattern, print_pair, run_measured, settings,
};

/// Build the tree; returns (files, bytes).
fn build_tree(root: &Path, scale: f64) -> (u64, u64) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    let n = |k: f64| ((k * scale) as usize).max(1);
    let (small, medium, large) = (n(20_000.0), n(1_000.0), n(10.0));
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut write = |path: PathBuf, seed: u64, len: usize| {
        std::fs::write(path, pattern(seed, len)).unwrap();
        files += 1;
        bytes += len as u64;
    };
    for i in 0..small {
        let dir = root.join(format!("small/d{:03}", i % 200));
        if i < 200 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        // 100 B .. 16 KiB, skewed small.
        let len = 100 + ((i * 7919) % 97) * ((i * 104_729) % 171);
        write(dir.join(format!("f{i:06}")), i as u64, len);
    }
    std::fs::create_dir_all(root.join("medium")).unwrap();
    for i in 0..medium {
        // 64 KiB .. 320 KiB
        let len = 65536 + (i * 2_654_435_761) % (256 * 1024);
        let path = root.join(format!("medium/m{i:05}"));
        write(path, 1_000_000 + i as u64, len);
    }
    std::fs::create_dir_all(root.join("large")).unwrap();
    for i in 0..large {
        let len = (8 << 20) + i * 123_457;
        let path = root.join(format!("large/l{i:03}"));
        write(path, 2_000_000 + i as u64, len);
    }
    (files, bytes)
}

/// The tree of an earlier run if it is complete (its contents depend only on the scale),
/// else a new one. Deleting the old tree cost the first timed extraction up to 2.5× its
/// time: ext4 skips the 21,000 inodes just freed when it allocates (see the module docs).
fn reuse_or_build_tree(root: &Path, scale: f64) -> (u64, u64) {
    let stamp = root.with_extension("complete");
    if let Some((f, b)) = std::fs::read_to_string(&stamp).ok().and_then(|s| {
        let mut it = s.split_whitespace();
        let (sc, f, b) = (
            it.next()?,
            it.next()?.parse().ok()?,
            it.next()?.parse().ok()?,
        );
        (sc == scale.to_string() && root.is_dir()).then_some((f, b))
    }) {
        return (f, b);
    }
    let _ = std::fs::remove_file(&stamp);
    let (files, bytes) = build_tree(root, scale);
    std::fs::write(&stamp, format!("{scale} {files} {bytes}")).unwrap();
    (files, bytes)
}

fn read_mount(root: &Path, threads: usize) -> u64 {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push(e.path());
            }
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let total = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                use std::io::Read;
                let mut buf = vec![0u8; 1 << 20];
                let mut sum = 0u64;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = files.get(i) else { break };
                    let mut f = std::fs::File::open(p).unwrap();
                    loop {
                        let n = f.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        sum += n as u64;
                    }
                }
                total.fetch_add(sum, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    total.into_inner()
}

/// A fresh ext4 filesystem for one extraction: a sparse file, `mkfs.ext4`, loop-mounted at
/// a directory; unmounted and removed on drop.
struct ScratchFs {
    file: PathBuf,
    mnt: PathBuf,
}

impl ScratchFs {
    fn new(base: &Path, name: &str, size: u64) -> Self {
        let file = base.join(format!("{name}.ext4"));
        let mnt = base.join(name);
        // Leftovers of an interrupted run.
        let _ = Command::new("umount")
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_file(&file);
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::File::create(&file).unwrap().set_len(size).unwrap();
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&file)
            .status()
            .expect("mkfs.ext4 (e2fsprogs) is needed");
        assert!(st.success(), "mkfs.ext4 failed");
        mount("ext4", "loop", &file, &mnt);
        ScratchFs { file, mnt }
    }

    /// Where to extract (absent: both tools create it).
    fn dest(&self) -> PathBuf {
        self.mnt.join("tree")
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.mnt);
    }
}

/// Mount `what` (an image or a filesystem in a file) of type `fstype` at `at` with options
/// `opts`; needs root.
fn mount(fstype: &str, opts: &str, what: &Path, at: &Path) {
    let st = Command::new("mount")
        .args(["-t", fstype, "-o", opts])
        .arg(what)
        .arg(at)
        .status()
        .expect("mount (util-linux) is needed");
    assert!(
        st.success(),
        "mount -t {fstype} -o {opts} {} failed (root needed)",
        what.display()
    );
}

/// Flush dirty pages and commit the filesystems' journals, so that no run pays for the
/// writeback of the one before.
fn sync() {
    let _ = Command::new("sync").status();
}

/// One timed extraction, under the same conditions for either command: a new filesystem
/// made for it alone, then `sync`, then the command (`cmd` given the destination); the
/// filesystem is unmounted and removed right after, untimed. With `check`, the extracted
/// tree must equal that source tree (untimed).
fn extraction(
    base: &Path,
    name: &str,
    fs_size: u64,
    cmd: impl FnOnce(PathBuf) -> Command,
    check: Option<&Path>,
) -> Measured {
    let fs = ScratchFs::new(base, name, fs_size);
    let mut cmd = cmd(fs.dest());
    sync();
    let m = run_measured(&mut cmd);
    if let Some(tree) = check {
        assert_same_tree(tree, &fs.dest(), name);
    }
    m
}

/// Panic unless `got` has the same entries as `want`, with the same types, modes and
/// (regular files) bytes.
fn assert_same_tree(want: &Path, got: &Path, who: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![PathBuf::new()];
    let mut files = 0u64;
    while let Some(rel) = stack.pop() {
        let names = |root: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(root.join(&rel))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let entries = names(want);
        assert_eq!(entries, names(got), "{who}: entries of {}", rel.display());
        for n in entries {
            let r = rel.join(&n);
            let (w, g) = (
                std::fs::symlink_metadata(want.join(&r)).unwrap(),
                std::fs::symlink_metadata(got.join(&r)).unwrap(),
            );
            assert_eq!(
                w.file_type(),
                g.file_type(),
                "{who}: type of {}",
                r.display()
            );
            assert_eq!(
                w.permissions().mode(),
                g.permissions().mode(),
                "{who}: mode of {}",
                r.display()
            );
            if w.is_dir() {
                stack.push(r);
            } else if w.is_file() {
                files += 1;
                assert!(
                    std::fs::read(want.join(&r)).unwrap() == std::fs::read(got.join(&r)).unwrap(),
                    "{who}: bytes of {}",
                    r.display()
                );
            }
        }
    }
    eprintln!("{who}: the untimed extraction equals the source tree ({files} files)");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special. Only
    // run the (slow, root-only) measurement under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("fsck bench: run with `cargo bench` (skipped)");
        return;
    }
    let erofs = erofs();
    let (Some(mkfs), Some(fsck)) = (find_tool("mkfs.erofs"), find_tool("fsck.erofs")) else {
        eprintln!("fsck bench needs mkfs.erofs and fsck.erofs");
        std::process::exit(1);
    };
    let (runs, scale) = settings();
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("erofs-fsck-bench");
    std::fs::create_dir_all(&base).unwrap();
    let tree = base.join("tree");
    let image = base.join("image.erofs");

    let t = Instant::now();
    let (files, bytes) = reuse_or_build_tree(&tree, scale);
    eprintln!(
        "tree: {files} files, {:.1} MB in {:.1}s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&image);
    let st = Command::new(&mkfs)
        .arg("--quiet")
        .arg(&image)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.erofs failed");
    let image_len = std::fs::metadata(&image).unwrap().len();
    common::cache_as_read(&image);

    let extracts = base.join("extracts");
    let _ = std::fs::remove_dir_all(&extracts);
    std::fs::create_dir_all(&extracts).unwrap();
    // Room for the tree twice over (small files round up to blocks), and a floor for tiny
    // scales; sparse, so only what is written takes disk.
    let fs_size = (2 * bytes).max(64 << 20) + (256 << 20);
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let (mut fsck_pair, mut extract_pair) = (Pair::default(), Pair::default());
    let (mut one_thread, mut kernel) = (Vec::new(), Vec::<Duration>::new());
    let ours_fsck = || {
        let mut c = Command::new(&erofs);
        c.arg("fsck").arg(&image);
        c
    };
    let theirs_fsck = || {
        let mut c = Command::new(&fsck);
        c.arg("--extract").arg(&image);
        c
    };
    let ours_extract = |dest: PathBuf| {
        let mut c = Command::new(&erofs);
        c.args(["extract", "--quiet"]).arg(&image).arg(dest);
        c
    };
    let theirs_extract = |dest: PathBuf| {
        let mut c = Command::new(&fsck);
        c.arg(format!("--extract={}", dest.display())).arg(&image);
        c
    };
    // One untimed extraction each first: the first timed round was the slowest for us (on a
    // quiet host, session 6: 0.78x against 0.43-0.59x in the later rounds), whatever comes
    // first after the image is built (new loop devices, the kernel's caches growing, the
    // old image's blocks being discarded) now falls on untimed runs.
    // Both are checked against the source tree: like is compared with like.
    extraction(&extracts, "erofs", fs_size, ours_extract, Some(&tree));
    extraction(
        &extracts,
        "fsck.erofs",
        fs_size,
        theirs_extract,
        Some(&tree),
    );
    for run in 0..runs {
        // The two commands of each pair take turns going first.
        fsck_pair.round(
            run,
            || run_measured(&mut ours_fsck()),
            || run_measured(&mut theirs_fsck()),
        );
        extract_pair.round(
            run,
            || extraction(&extracts, "erofs", fs_size, ours_extract, None),
            || extraction(&extracts, "fsck.erofs", fs_size, theirs_extract, None),
        );

        one_thread.push(run_measured(
            Command::new(&erofs)
                .args(["fsck", "--threads", "1"])
                .arg(&image),
        ));

        mount("erofs", "ro", &image, &mnt);
        let t = Instant::now();
        let read = read_mount(&mnt, 2);
        kernel.push(t.elapsed());
        let st = Command::new("umount").arg(&mnt).status().unwrap();
        assert!(st.success(), "umount failed");
        assert_eq!(read, bytes, "kernel mount read a different byte count");
    }
    let _ = std::fs::remove_dir_all(&extracts);

    println!(
        "\nfsck bench: {files} files, {:.1} MB of data, image {:.1} MB, {runs} runs (medians), \
         load average {} at the end",
        bytes as f64 / 1e6,
        image_len as f64 / 1e6,
        common::loadavg()
    );
    print_pair(
        "fsck",
        "erofs fsck",
        "fsck.erofs --extract",
        &fsck_pair,
        0.8,
    );
    println!(
        "{:<10} each extraction into a new ext4 filesystem of its own ({} MB, loop-mounted \
         under {}), made right before it and removed after it, `sync` before each, one untimed extraction each first, first command alternating",
        "",
        fs_size >> 20,
        extracts.display(),
    );
    print_pair(
        "extract",
        "erofs extract",
        "fsck.erofs --extract=DIR",
        &extract_pair,
        0.7,
    );
    println!(
        "context:   erofs fsck --threads 1 {:.3}s; kernel mount read with 2 threads {:.3}s",
        common::wall(&one_thread).as_secs_f64(),
        median(kernel).as_secs_f64()
    );
}
