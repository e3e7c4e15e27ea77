//! Whole-image read benchmark: `erofs fsck` against `fsck.erofs` and against reading the
//! host kernel's mount of the same image, as ratios from one run.
//!
//! Run as root with erofs-utils available (`$PATH`, `$MKFS_EROFS`/`$FSCK_EROFS`, or
//! `../shared/tools/bin`):
//!
//! ```text
//! cargo bench -p erofs-reader --features cli --bench fsck
//! ```
//!
//! It builds a tree of 21,000+ files (about 400 MB; small, medium and large files of
//! pseudo-random bytes) under the target directory, makes an uncompressed image with
//! `mkfs.erofs`, then times, each `EROFS_BENCH_RUNS` times (default 3, median reported),
//! with the image file in the page cache for all of them:
//!
//! * `erofs fsck IMAGE` (both cores, zero-copy reads from a memory map);
//! * `erofs fsck --threads 1 IMAGE`;
//! * `fsck.erofs --extract=DIR IMAGE` (reads and writes every file);
//! * `fsck.erofs IMAGE` (checks without extracting);
//! * a walk of the kernel's mount (`mount -t erofs -o ro`, fresh for each run) reading
//!   every file with two threads.
//!
//! Peak memory (max RSS) of the external commands comes from `/usr/bin/time` if present.
//! `EROFS_BENCH_SCALE` (default 1.0) scales the file counts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{find_tool, median, run_timed, settings};

fn pattern(seed: u64, buf: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
}

/// Build the tree; returns (files, bytes).
fn build_tree(root: &Path, scale: f64) -> (u64, u64) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    let n = |k: f64| ((k * scale) as usize).max(1);
    let (small, medium, large) = (n(20_000.0), n(1_000.0), n(10.0));
    let mut buf = vec![0u8; 16 << 20];
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut write = |path: PathBuf, seed: u64, len: usize| {
        pattern(seed, &mut buf[..len]);
        std::fs::write(path, &buf[..len]).unwrap();
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
        write(
            root.join(format!("medium/m{i:05}")),
            1_000_000 + i as u64,
            len,
        );
    }
    std::fs::create_dir_all(root.join("large")).unwrap();
    for i in 0..large {
        let len = (8 << 20) + i * 123_457;
        write(
            root.join(format!("large/l{i:03}")),
            2_000_000 + i as u64,
            len,
        );
    }
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

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special. Only
    // run the (slow, root-only) measurement under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("fsck bench: run with `cargo bench` (skipped)");
        return;
    }
    let erofs = PathBuf::from(env!("CARGO_BIN_EXE_erofs"));
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
    let (files, bytes) = build_tree(&tree, scale);
    eprintln!(
        "tree: {files} files, {:.1} MB in {:.1}s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&image);
    let t = Instant::now();
    let st = Command::new(&mkfs)
        .arg("--quiet")
        .arg(&image)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.erofs failed");
    let image_len = std::fs::metadata(&image).unwrap().len();
    eprintln!(
        "image: {:.1} MB in {:.1}s",
        image_len as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // Warm the page cache for the image file.
    let _ = std::fs::read(&image).unwrap();

    let extract_dir = base.join("extract");
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut results: Vec<(&str, Vec<Duration>, Option<u64>)> = vec![
        ("erofs fsck", Vec::new(), None),
        ("erofs fsck --threads 1", Vec::new(), None),
        ("fsck.erofs --extract", Vec::new(), None),
        ("fsck.erofs", Vec::new(), None),
        ("kernel mount, 2 threads", Vec::new(), None),
    ];
    let record =
        |results: &mut Vec<(&str, Vec<Duration>, Option<u64>)>, k: usize, cmd: &mut Command| {
            let m = run_timed(cmd.stdout(std::process::Stdio::null()), &base);
            results[k].1.push(m.wall);
            results[k].2 = results[k].2.max(m.max_rss_kb);
        };
    for _ in 0..runs {
        record(
            &mut results,
            0,
            Command::new(&erofs).arg("fsck").arg(&image),
        );
        record(
            &mut results,
            1,
            Command::new(&erofs)
                .args(["fsck", "--threads", "1"])
                .arg(&image),
        );
        let _ = std::fs::remove_dir_all(&extract_dir);
        let extract = format!("--extract={}", extract_dir.display());
        record(
            &mut results,
            2,
            Command::new(&fsck).arg(extract).arg(&image),
        );
        let _ = std::fs::remove_dir_all(&extract_dir);
        record(&mut results, 3, Command::new(&fsck).arg(&image));

        let st = Command::new("mount")
            .args(["-t", "erofs", "-o", "ro"])
            .arg(&image)
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success(), "mount failed (root needed)");
        let t = Instant::now();
        let read = read_mount(&mnt, 2);
        results[4].1.push(t.elapsed());
        let st = Command::new("umount").arg(&mnt).status().unwrap();
        assert!(st.success(), "umount failed");
        assert_eq!(read, bytes, "kernel mount read a different byte count");
    }

    let ours = median(results[0].1.clone());
    println!(
        "\nfsck bench: {files} files, {:.1} MB of data, image {:.1} MB, median of {runs} runs",
        bytes as f64 / 1e6,
        image_len as f64 / 1e6
    );
    println!(
        "{:<26} {:>9} {:>12} {:>14}",
        "command", "time (s)", "max RSS (MB)", "time / erofs fsck"
    );
    for (name, times, rss) in &results {
        let t = median(times.clone());
        println!(
            "{:<26} {:>9.3} {:>12} {:>14.2}",
            name,
            t.as_secs_f64(),
            rss.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
            t.as_secs_f64() / ours.as_secs_f64()
        );
    }
    let extract = median(results[2].1.clone());
    println!(
        "erofs fsck takes {:.2}x the time of fsck.erofs --extract (target <= 0.5)",
        ours.as_secs_f64() / extract.as_secs_f64()
    );
}
