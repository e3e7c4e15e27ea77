//! What the benchmarks share: their settings, finding the external tools, timing a
//! command and the median of runs.
//!
//! Compiled into each benchmark (`mod common;`); each reads the figures it reports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `EROFS_BENCH_RUNS` (default 3, at least 1) and `EROFS_BENCH_SCALE` (default 1.0).
pub(crate) fn settings() -> (usize, f64) {
    let runs = std::env::var("EROFS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let scale = std::env::var("EROFS_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    (runs, scale)
}

/// What [`run_timed`] measured.
pub(crate) struct Measured {
    /// Wall time.
    pub(crate) wall: Duration,
    /// User + system CPU time (from `/usr/bin/time`, when present).
    pub(crate) cpu: Option<Duration>,
    /// Peak RSS in KiB (from `/usr/bin/time`, when present).
    pub(crate) max_rss_kb: Option<u64>,
}

/// Run `cmd`, which must succeed, under `/usr/bin/time` when present (its figures go to a
/// file in `scratch`), and time it.
pub(crate) fn run_timed(cmd: &Command, scratch: &Path) -> Measured {
    let timer = Path::new("/usr/bin/time");
    let report = scratch.join("time.txt");
    let _ = std::fs::remove_file(&report);
    let mut run = if timer.is_file() {
        let mut c = Command::new(timer);
        c.arg("-f").arg("%U %S %M").arg("-o").arg(&report);
        c.arg(cmd.get_program());
        c
    } else {
        Command::new(cmd.get_program())
    };
    run.args(cmd.get_args());
    let start = Instant::now();
    let out = run.output().unwrap_or_else(|e| panic!("{run:?}: {e}"));
    let wall = start.elapsed();
    assert!(
        out.status.success(),
        "{run:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let figures = std::fs::read_to_string(&report).unwrap_or_default();
    let mut it = figures
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace();
    let (user, sys, rss) = (it.next(), it.next(), it.next());
    let secs = |v: Option<&str>| v.and_then(|v| v.parse::<f64>().ok());
    Measured {
        wall,
        cpu: secs(user)
            .zip(secs(sys))
            .map(|(u, s)| Duration::from_secs_f64(u + s)),
        max_rss_kb: rss.and_then(|v| v.parse().ok()),
    }
}

/// The external tool `name`: from `$NAME` (upper case, `-`/`.` as `_`), `$PATH`, or
/// `$EROFS_SHARED_DIR/tools/bin` (default `../shared/tools/bin` beside the workspace).
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let var: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join(name).is_file() {
                return Some(dir.join(name));
            }
        }
    }
    let shared = std::env::var_os("EROFS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = shared.join("tools/bin").join(name);
    p.is_file().then_some(p)
}

/// The median of `v` (not empty).
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
