//! What the benchmarks share: their settings, timing a command with its peak memory, pairs
//! of commands run back to back, and the median of runs. Tool lookup and test data come from
//! the test crate's `tools.rs` (compiled in, one copy).
//!
//! Compiled into each benchmark (`mod common;`); each reads the figures it reports.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../tests/src/tools.rs"]
#[allow(dead_code, unreachable_pub)]
mod tools;
#[allow(unused_imports)] // each benchmark uses its part
pub(crate) use tools::{find_tool, pattern, text};

/// `EROFS_BENCH_RUNS` (default 5, at least 1) and `EROFS_BENCH_SCALE` (default 1.0).
pub(crate) fn settings() -> (usize, f64) {
    let runs = std::env::var("EROFS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    let scale = std::env::var("EROFS_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    (runs, scale)
}

/// The `erofs` binary of this package, built with the benchmark profile, or
/// `$EROFS_BENCH_EROFS` (another build of it, to compare before and after a change under the
/// same conditions).
pub(crate) fn erofs() -> PathBuf {
    std::env::var_os("EROFS_BENCH_EROFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_erofs")))
}

/// What [`run_measured`] saw.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Measured {
    /// Wall time.
    pub(crate) wall: Duration,
    /// Peak anonymous resident memory (heap, stacks) in KiB, sampled every 2 ms from
    /// `/proc/PID/status` (`RssAnon`).
    pub(crate) peak_anon_kb: u64,
    /// Peak resident file-backed memory (mapped page cache: the image, the binary) in KiB
    /// (`RssFile`), sampled likewise. These pages belong to the page cache, not the process.
    pub(crate) peak_file_kb: u64,
    /// User + system CPU time of the child and its threads, exact (microseconds, from
    /// `getrusage(RUSAGE_CHILDREN)` before and after it is reaped): what the run cost,
    /// whatever the machine's load.
    pub(crate) cpu: Duration,
    /// CPU time the rest of the machine used meanwhile (every core's busy time from
    /// `/proc/stat`, in 10 ms ticks, less [`Self::cpu`]): other sessions, and kernel threads
    /// doing work left by earlier commands (writeback, discards). Tells a slow round that
    /// had company from one that did not.
    pub(crate) others: Duration,
}

/// Busy time of all cores so far (`/proc/stat`: every state but idle and iowait), from the
/// kernel's `USER_HZ` ticks (100 per second on Linux).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4 && i < 8)
        .map(|(_, t)| t)
        .sum();
    Duration::from_millis(busy * 10)
}

/// User + system CPU time of every child reaped so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    us(u.user_time()) + us(u.system_time())
}

fn status_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Run `cmd`, which must succeed, with stdout discarded; time it and sample its memory.
pub(crate) fn run_measured(cmd: &mut Command) -> Measured {
    // Children are run one at a time: the growth of the reaped children's CPU time while
    // this one runs is its own.
    let cpu_before = children_cpu();
    let busy_before = machine_busy();
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let status_path = format!("/proc/{}/status", child.id());
    let mut m = Measured::default();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            m.peak_anon_kb = m.peak_anon_kb.max(status_kb(&s, "RssAnon:"));
            m.peak_file_kb = m.peak_file_kb.max(status_kb(&s, "RssFile:"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    m.wall = start.elapsed();
    m.cpu = children_cpu().saturating_sub(cpu_before);
    m.others = machine_busy()
        .saturating_sub(busy_before)
        .saturating_sub(m.cpu);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{cmd:?} failed: {err}");
    m
}

/// Runs of a command under test and of its peer, made back to back so that both see the
/// same machine load; the figures are medians.
#[derive(Default)]
pub(crate) struct Pair {
    pub(crate) ours: Vec<Measured>,
    pub(crate) theirs: Vec<Measured>,
}

impl Pair {
    /// Round `run` (counted from 0) of the pair: both commands back to back, ours first in
    /// even rounds and theirs first in odd ones, so that neither always meets what the
    /// other left behind.
    pub(crate) fn round(
        &mut self,
        run: usize,
        ours: impl FnOnce() -> Measured,
        theirs: impl FnOnce() -> Measured,
    ) {
        if run.is_multiple_of(2) {
            self.ours.push(ours());
            self.theirs.push(theirs());
        } else {
            self.theirs.push(theirs());
            self.ours.push(ours());
        }
    }

    /// Median wall time of ours / median wall time of theirs.
    pub(crate) fn ratio(&self) -> f64 {
        wall(&self.ours).as_secs_f64() / wall(&self.theirs).as_secs_f64()
    }

    /// Each round's own wall ratio (ours / theirs), in run order.
    pub(crate) fn rounds(&self) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.theirs)
            .map(|(a, b)| a.wall.as_secs_f64() / b.wall.as_secs_f64())
            .collect()
    }

    /// Each round's own CPU ratio (ours / theirs), in run order.
    pub(crate) fn cpu_rounds(&self) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.theirs)
            .map(|(a, b)| a.cpu.as_secs_f64() / b.cpu.as_secs_f64().max(1e-3))
            .collect()
    }

    /// The worst (highest) round's wall ratio.
    pub(crate) fn worst(&self) -> f64 {
        self.rounds().into_iter().fold(0.0, f64::max)
    }

    /// The wall ratios of the rounds in which the rest of the machine used less than
    /// [`QUIET_CORES`] of a core on average during both commands, each of which ran at least
    /// [`QUIET_MIN_WALL`] (shorter runs are too short for `/proc/stat`'s 10 ms ticks).
    pub(crate) fn quiet_rounds(&self) -> Vec<f64> {
        let quiet = |m: &Measured| {
            m.wall >= QUIET_MIN_WALL && m.others.as_secs_f64() < QUIET_CORES * m.wall.as_secs_f64()
        };
        self.ours
            .iter()
            .zip(&self.theirs)
            .filter(|(a, b)| quiet(a) && quiet(b))
            .map(|(a, b)| a.wall.as_secs_f64() / b.wall.as_secs_f64())
            .collect()
    }
}

/// Cores the rest of the machine may use on average during a run that still counts as
/// quiet: on two cores, a command with two threads then has most of the second one.
pub(crate) const QUIET_CORES: f64 = 0.25;

/// Shortest run whose company [`Measured::others`] can tell.
pub(crate) const QUIET_MIN_WALL: Duration = Duration::from_millis(200);

/// The median CPU time of runs (not empty).
pub(crate) fn cpu(runs: &[Measured]) -> Duration {
    median(runs.iter().map(|m| m.cpu).collect())
}

/// The median wall time of runs (not empty).
pub(crate) fn wall(runs: &[Measured]) -> Duration {
    median(runs.iter().map(|m| m.wall).collect())
}

/// Peak (anonymous, file-backed) memory over runs, in MB.
pub(crate) fn peak_mb(runs: &[Measured]) -> (f64, f64) {
    let a = runs.iter().map(|m| m.peak_anon_kb).max().unwrap_or(0);
    let f = runs.iter().map(|m| m.peak_file_kb).max().unwrap_or(0);
    (a as f64 / 1024.0, f as f64 / 1024.0)
}

/// The median of `v` (not empty).
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Put `image` in the page cache as a file read from disk is: drop its cached pages (they
/// were cached as mkfs wrote them, in small folios), then read it once (readahead caches it
/// in large folios). Both commands of a pair then read the same cache; a mapped reader
/// faults once per folio, so the folio size matters to it (DESIGN.md, "fsck speed").
pub(crate) fn cache_as_read(image: &std::path::Path) {
    let f = std::fs::File::open(image).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    drop(f);
    let _ = std::fs::read(image).unwrap();
}

/// The machine's load average over the last minute, to print beside the figures.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// One table row: a pair's medians, ratio, spread and memory.
pub(crate) fn print_pair(what: &str, ours: &str, theirs: &str, p: &Pair, target: f64) {
    let (oa, of) = peak_mb(&p.ours);
    let (ta, tf) = peak_mb(&p.theirs);
    let worst = p.worst();
    println!(
        "{what:<10} {ours} {:.3}s vs {theirs} {:.3}s: ratio {:.2}, worst round {worst:.2} (target <= {target}: median {}, worst {})",
        wall(&p.ours).as_secs_f64(),
        wall(&p.theirs).as_secs_f64(),
        p.ratio(),
        if p.ratio() <= target { "ok" } else { "MISSED" },
        if worst <= target { "ok" } else { "MISSED" },
    );
    let list = |v: Vec<f64>| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{:<10} every round, in run order: wall {}",
        "",
        list(p.rounds())
    );
    println!(
        "{:<10}                            CPU  {}",
        "",
        list(p.cpu_rounds())
    );
    let secs = |v: &[Measured]| {
        v.iter()
            .map(|m| format!("{:.3}/{:.3}", m.wall.as_secs_f64(), m.cpu.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{:<10} every round, wall/CPU seconds: ours {}; theirs {}",
        "",
        secs(&p.ours),
        secs(&p.theirs)
    );
    let others = |v: &[Measured]| {
        v.iter()
            .map(|m| format!("{:.2}", m.others.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{:<10} CPU seconds the rest of the machine used meanwhile: during ours {}; theirs {}",
        "",
        others(&p.ours),
        others(&p.theirs)
    );
    let quiet = p.quiet_rounds();
    println!(
        "{:<10} quiet rounds (the rest of the machine under {QUIET_CORES} core during both commands, runs of {} s or more): {} of {}{}",
        "",
        QUIET_MIN_WALL.as_secs_f64(),
        quiet.len(),
        p.ours.len(),
        if quiet.is_empty() {
            String::new()
        } else {
            format!(
                ", worst wall ratio among them {:.2}",
                quiet.iter().copied().fold(0.0, f64::max)
            )
        }
    );
    // On a loaded machine the wall ratio is what our share of the cores allows (with
    // autogroup scheduling, a session's threads share one slice): the CPU ratio says what
    // each side cost.
    println!(
        "{:<10} CPU (user+sys, median): ours {:.3}s, theirs {:.3}s: ratio {:.2}",
        "",
        cpu(&p.ours).as_secs_f64(),
        cpu(&p.theirs).as_secs_f64(),
        cpu(&p.ours).as_secs_f64() / cpu(&p.theirs).as_secs_f64().max(1e-3)
    );
    println!(
        "{:<10} peak memory: ours heap {oa:.1} MB + mapped page cache {of:.1} MB; theirs heap {ta:.1} MB + mapped {tf:.1} MB",
        ""
    );
}
