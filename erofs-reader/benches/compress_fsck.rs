//! Decompression benchmark, like against like: `erofs fsck` against `fsck.erofs --extract`
//! (no directory: both decode and check every byte and write nothing) on the same
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
//! measured) it builds an image with `mkfs.erofs`, puts it in the page cache as read from
//! disk (the pages mkfs wrote dropped, then read once), and runs the pair
//! `EROFS_BENCH_RUNS` times (default 5) back to back, the two taking turns going first,
//! printing medians, every round's wall and CPU ratio in run order, the worst round, the CPU
//! the rest of the machine used during each run (and the worst of the rounds in which it
//! used under a quarter of a core: those say what the two cores give) and peak memory (heap
//! vs mapped page cache).
//!
//! On a machine whose cores are busy with other sessions, the wall ratio follows the CPU
//! ratio: with autogroup scheduling a session gets its share of the cores whatever its
//! thread count, so the second worker thread only pays off on idle cores (DESIGN.md,
//! "fsck speed").
//!
//! `EROFS_BENCH_SCALE` (default 1.0) scales the tree, `EROFS_BENCH_ALGS` (comma-separated
//! names) picks algorithms, `EROFS_BENCH_EROFS` runs another `erofs` binary (to compare
//! builds under the same conditions). The target is a ratio of at most 0.5 for every
//! algorithm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{Pair, erofs, find_tool, print_pair, run_measured, settings};

/// 7-bit random bytes: incompressible for LZ4, ~7/8 for entropy coders.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut v = common::pattern(seed, n);
    for b in &mut v {
        *b &= 0x7f;
    }
    v
}

/// The tree: returns (files, bytes).
fn build_tree(root: &Path, scale: f64) -> (usize, u64) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    let mut seed = 0x1234_5678_9ABC_DEF1u64;
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
                seed += 1;
                if seed % 10 < 7 {
                    data.extend(noise(seed, chunk));
                } else {
                    data.extend(common::text(seed, chunk));
                }
            }
            std::fs::write(dir.join(format!("{i:05}")), &data).unwrap();
            files += 1;
            bytes += data.len() as u64;
        }
    }
    (files, bytes)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compress_fsck bench: run with `cargo bench` (skipped)");
        return;
    }
    let erofs = erofs();
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
        run_measured(
            Command::new(&mkfs)
                .args(["--quiet", "-T0", "--all-root", opt, "-C65536"])
                .arg(&image)
                .arg(&tree),
        );
        let size = std::fs::metadata(&image).unwrap().len();
        eprintln!(
            "{name}: image {:.1} MB built in {:.1}s",
            size as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        common::cache_as_read(&image);
        let mut pair = Pair::default();
        for run in 0..runs {
            // The two take turns going first.
            let mut ours = Command::new(&erofs);
            ours.arg("fsck").arg(&image);
            let mut theirs = Command::new(&fsck);
            theirs.arg("--extract").arg(&image);
            pair.round(
                run,
                || run_measured(&mut ours),
                || run_measured(&mut theirs),
            );
        }
        println!(
            "{name}: image {:.1} MB, {files} files, {:.1} MB of data, load average {}",
            size as f64 / 1e6,
            bytes as f64 / 1e6,
            common::loadavg()
        );
        print_pair(name, "erofs fsck", "fsck.erofs --extract", &pair, 0.5);
        let quiet = pair.quiet_rounds();
        results.push((
            name,
            pair.ratio(),
            pair.worst(),
            quiet.iter().copied().fold(f64::NAN, f64::max),
        ));
        let _ = std::fs::remove_file(&image);
    }
    let worst = results.iter().map(|r| r.1).fold(0.0f64, f64::max);
    let worst_round = results.iter().map(|r| r.2).fold(0.0f64, f64::max);
    println!(
        "worst median ratio {worst:.2}, worst round {worst_round:.2} (target <= 0.5: {})",
        if worst <= 0.5 { "ok" } else { "MISSED" }
    );
    // NaN (no quiet round for an algorithm) is skipped by f64::max.
    let quiet: Vec<String> = results
        .iter()
        .map(|r| format!("{} {:.2}", r.0, r.3))
        .collect();
    println!(
        "worst quiet round per algorithm (NaN: none was quiet): {}",
        quiet.join(", ")
    );
}
