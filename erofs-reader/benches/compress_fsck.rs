//! Decompression benchmark: `erofs fsck` against `fsck.erofs --extract=DIR` on the same
//! compressed image, per algorithm, as a ratio of wall times from one run.
//!
//! ```text
//! cargo bench -p erofs-reader --features cli --bench compress_fsck
//! ```
//!
//! It writes a tree of about 300 MB (files of 4 KiB to 64 MiB: 7-bit random data, which
//! entropy coders shrink by about 1/8 and LZ4 cannot shrink, and word salad, which all
//! compress well) so that every image is at least 200 MB, then for each of lz4, lz4hc,
//! lzma, deflate, libdeflate and zstd (`-C65536`, fast levels: the build time is not
//! measured) it builds an image with `mkfs.erofs`, reads it once into the page cache, and
//! times `EROFS_BENCH_RUNS` runs (default 3; the median is reported) of:
//!
//! * `erofs fsck IMAGE`: reads every file through the reader's normal read path on all
//!   cores, decoding every pcluster (checked: the data size must match);
//! * `fsck.erofs --extract=DIR IMAGE` (erofs-utils 1.9.4): decodes and writes every file.
//!
//! `EROFS_BENCH_SCALE` (default 1.0) scales the tree, `EROFS_BENCH_ALGS` (comma-separated
//! names) picks algorithms. The target is a ratio of at most 0.5 for every algorithm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{find_tool, median, run_timed, settings};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 7-bit random bytes: incompressible for LZ4, ~7/8 for entropy coders.
fn noise(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        let x = rng.next();
        v.extend_from_slice(&(x & 0x7F7F_7F7F_7F7F_7F7F).to_le_bytes());
    }
    v.truncate(n);
    v
}

fn words(rng: &mut Rng, n: usize) -> Vec<u8> {
    const W: [&str; 16] = [
        "erofs ",
        "kernel ",
        "lz4 ",
        "zstd ",
        "deflate ",
        "lzma ",
        "pcluster\n",
        "extent ",
        "lcluster ",
        "fragment ",
        "inline ",
        "dedupe ",
        "block ",
        "reader ",
        "mount ",
        "image\n",
    ];
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        let x = rng.next();
        for k in 0..8 {
            v.extend_from_slice(W[((x >> (4 * k)) & 15) as usize].as_bytes());
        }
    }
    v.truncate(n);
    v
}

/// The tree: returns (files, bytes).
fn build_tree(root: &Path, scale: f64) -> (usize, u64) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut files = 0;
    let mut bytes = 0u64;
    let plan: [(usize, usize, &str); 5] = [
        // (count, size, kind)
        (2000, 4096 + 123, "small"),
        (400, 100_000, "mid"),
        (60, 2_000_000, "big"),
        (4, 16 << 20, "huge"),
        (1, 64 << 20, "giant"),
    ];
    for (count, size, kind) in plan {
        let count = ((count as f64 * scale).ceil() as usize).max(1);
        let dir = root.join(kind);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..count {
            // About 70% of the bytes are noise, 30% words, mixed within files.
            let mut data = Vec::with_capacity(size);
            while data.len() < size {
                let chunk = (size - data.len()).min(65536);
                if rng.next() % 10 < 7 {
                    data.extend(noise(&mut rng, chunk));
                } else {
                    data.extend(words(&mut rng, chunk));
                }
            }
            std::fs::write(dir.join(format!("{i:05}")), &data).unwrap();
            files += 1;
            bytes += data.len() as u64;
        }
    }
    (files, bytes)
}

fn median_cpu(v: &[Option<Duration>]) -> Option<Duration> {
    let v: Option<Vec<Duration>> = v.iter().copied().collect();
    v.map(median)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compress_fsck bench: run with `cargo bench` (skipped)");
        return;
    }
    let erofs = PathBuf::from(env!("CARGO_BIN_EXE_erofs"));
    let (Some(mkfs), Some(fsck)) = (find_tool("mkfs.erofs"), find_tool("fsck.erofs")) else {
        eprintln!("compress_fsck bench needs mkfs.erofs and fsck.erofs");
        std::process::exit(1);
    };
    let (runs, scale) = settings();
    let all = [
        ("lz4", "-zlz4"),
        ("lz4hc", "-zlz4hc,level=4"),
        ("lzma", "-zlzma,level=0"),
        ("deflate", "-zdeflate,level=1"),
        ("libdeflate", "-zlibdeflate,level=1"),
        ("zstd", "-zzstd,level=1"),
    ];
    let pick = std::env::var("EROFS_BENCH_ALGS").ok();
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("erofs-compress-bench");
    std::fs::create_dir_all(&base).unwrap();
    let tree = base.join("tree");
    let t = Instant::now();
    let (files, bytes) = build_tree(&tree, scale);
    eprintln!(
        "tree: {files} files, {:.1} MB in {:.1}s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let mut results = Vec::new();
    for (name, opt) in all {
        if let Some(p) = &pick
            && !p.split(',').any(|x| x == name)
        {
            continue;
        }
        let image = base.join(format!("{name}.erofs"));
        let _ = std::fs::remove_file(&image);
        let t = Instant::now();
        run_timed(
            Command::new(&mkfs)
                .args(["--quiet", "-T0", "--all-root", opt, "-C65536"])
                .arg(&image)
                .arg(&tree),
            &base,
        );
        let size = std::fs::metadata(&image).unwrap().len();
        eprintln!(
            "{name}: image {:.1} MB built in {:.1}s",
            size as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        // Into the page cache.
        let _ = std::fs::read(&image).unwrap();
        let (mut ours, mut ours_cpu) = (Vec::new(), Vec::new());
        let (mut theirs, mut theirs_cpu) = (Vec::new(), Vec::new());
        let out = base.join("extract");
        for _ in 0..runs {
            let m = run_timed(Command::new(&erofs).arg("fsck").arg(&image), &base);
            ours.push(m.wall);
            ours_cpu.push(m.cpu);
            let _ = std::fs::remove_dir_all(&out);
            let m = run_timed(
                Command::new(&fsck)
                    .arg(format!("--extract={}", out.display()))
                    .arg(&image),
                &base,
            );
            theirs.push(m.wall);
            theirs_cpu.push(m.cpu);
            let _ = std::fs::remove_dir_all(&out);
        }
        let (a, b) = (median(ours), median(theirs));
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        let cpu = match (median_cpu(&ours_cpu), median_cpu(&theirs_cpu)) {
            (Some(x), Some(y)) => {
                format!("  cpu {:.2}s vs {:.2}s", x.as_secs_f64(), y.as_secs_f64())
            }
            _ => String::new(),
        };
        println!(
            "{name:>10}: image {:>6.1} MB  erofs fsck {:>6.2}s ({:>6.0} MB/s)  fsck.erofs --extract {:>6.2}s  ratio {ratio:.3}{cpu}",
            size as f64 / 1e6,
            a.as_secs_f64(),
            bytes as f64 / 1e6 / a.as_secs_f64(),
            b.as_secs_f64()
        );
        results.push((name, size, ratio));
        let _ = std::fs::remove_file(&image);
    }
    let worst = results.iter().map(|r| r.2).fold(0.0f64, f64::max);
    println!("worst ratio {worst:.3} (target <= 0.5)");
}
