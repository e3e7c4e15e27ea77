//! Ours against nydusd 2.2 in the 6.12 VM (EROFS over fscache, both daemons): a cold walk
//! that reads every file of a tree of many small files plus one 96 MiB file, from the same
//! zstd RAFS v6 image (nydus-image) on the VM's disk, served by `erofs-ondemand serve
//! --blob-dir` (defaults) and by nydusd (`localfs` backend, defaults: no prefetch).
//!
//! ```text
//! cargo bench -p tests --bench nydusd_walk
//! ```
//!
//! Four VM runs, the order alternated (ours first in odd runs, nydusd first in even ones, so
//! each order counts as much in the median, the mean of the middle two; with variants, the
//! order of ours and the variants is rotated every two runs);
//! each daemon starts fresh on an empty cache directory, mounts the image, the page cache is
//! dropped, then `vmtool walk` times the walk (readdir, lstat, read of every file).
//!
//! A warm-up comes first in every VM, the same for both daemons, so that neither pays alone
//! for what only the first daemon in a VM would (a fair bench, not one that favours ours): it
//! waits until the guest's ext4 has finished its lazy inode-table init of the disk (it runs for
//! the first 2-8 s after boot, during the first walk otherwise), writes and deletes 640 MiB in
//! the guest's tmpfs (qemu backs guest memory on first use), then ours and nydusd each serve
//! a throwaway cold read (60 small files and 16 MiB of the big file) from a cache directory
//! removed afterwards: the kernel's EROFS, fscache, cachefiles and ext4 paths and each
//! daemon's own code have run once (under TCG, code is translated the first time it runs)
//! before any walk is timed. Every measured walk is still cold: a fresh daemon, an empty
//! cache directory, the page cache dropped. `NYDUSD_WALK_WARMUP=0` leaves the warm-up out.
//!
//! Printed per run: both times and the ratio (nydusd's time / ours), the bytes each daemon read from
//! its blob store (ours: `stored_bytes` of its summary; nydusd: `read_amount_total` of its
//! backend metrics) and where the time went: the daemon's CPU time, the walker's own CPU time
//! and the whole guest's busy and idle time (2 CPUs, `/proc/stat`). Every file is then
//! checked against the host tree's sha256. Per walk too: the guest before it (uptime, whether
//! ext4's lazy init still runs, fscache cookies still held, free memory), the VM disk's reads and writes during it, and the
//! host CPU time other processes took during it (sampled every 100 ms on the host, qemu's own
//! time subtracted): TCG runs each of the guest's two vCPUs on a host thread, so on the
//! 2-CPU host that time is taken from the guest, whichever daemon it serves.
//!
//! Printed too, per daemon: where the walker's time went (`vmtool walk`: the big file, the
//! opens and reads of the small files, readdir and lstat) and, for ours, the READ upcalls
//! (count, mean latency, how many waited on a claim) and the RAFS decoding time.
//!
//! Settings: `NYDUSD_WALK_FILES` (small files, default 3000), `NYDUSD_WALK_BIG_MIB` (default
//! 96), `NYDUSD_WALK_RUNS` (default 4), `NYDUSD_WALK_VARIANTS` (`name=FLAGS;...`: more runs of
//! ours with these `serve` flags in each VM, e.g. `nofill=--fill-threads 0`),
//! `NYDUSD_WALK_BASELINE=PATH` (another static `erofs-ondemand` build, e.g. a copy of
//! `target/vm-static/x86_64-unknown-linux-gnu/release/erofs-ondemand` from before a change,
//! run with the defaults as the variant `base` in the same VMs),
//! `NYDUSD_WALK_READAHEAD_KB=N` (the kernel's readahead of both daemons' EROFS mounts, in KiB;
//! the kernel's default is 128), `NYDUSD_WALK_PEER_AGAIN=1` (nydusd walks once more, last, on a fresh cache: after itself
//! in odd runs, after ours in even ones), `NYDUSD_WALK_RUST_LOG=LEVEL` (ours logs at LEVEL, e.g. `debug`; its logs are copied to
//! the VM disk, `/data/KEY.log`, kept with `EROFS_VM_KEEP=1`), `NYDUSD_WALK_WARM=1` (ours walks a second time once its cache files hold every byte: the
//! kernel's own cost, with no upcall).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tests::nydusd::{self, Backend, Image};
use tests::vm::{DAEMON_PRELUDE, Kernel, VmOutcome, VmRun, busybox, manifests, noise, nydus_zstd};
use tests::{require_tool, scratch_dir, text};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `files` small files (100 B to 16 KiB; two in three are text, one in three random) in 50
/// directories, and `big.bin` of `big_mib` MiB (1 MiB pieces, three of text to one random).
fn walk_tree(root: &Path, files: u64, big_mib: u64) -> u64 {
    let mut total = 0u64;
    for i in 0..files {
        let len = (100 + (i * 7919) % 16_284) as usize;
        let data = if i % 3 == 2 {
            noise(1000 + i, len)
        } else {
            text(1000 + i, len)
        };
        let p = root.join(format!("d{:02}/f{i:05}", i % 50));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, &data).expect("write");
        total += len as u64;
    }
    let mut big = Vec::with_capacity((big_mib as usize) << 20);
    for k in 0..big_mib {
        if k % 4 == 3 {
            big.extend_from_slice(&noise(50_000 + k, 1 << 20));
        } else {
            big.extend_from_slice(&text(50_000 + k, 1 << 20));
        }
    }
    std::fs::write(root.join("big.bin"), &big).expect("write");
    total + big.len() as u64
}

/// The guest script's helpers: `walk_run KEY DIR PID` (drop caches, the timed walk, the CPU
/// time of daemon PID and of the machine around it, then the sums), `ours KEY [FLAGS...]`
/// (a fresh cache directory per KEY), `peer KEY`.
const HELPERS: &str = r#"
walk_run() {
    drop_caches
    data "$1_probe" "up=$(cut -d' ' -f1 /proc/uptime) lazyinit=$(ps | grep -c '[e]xt4lazyinit') fscache_cookies=$(($(wc -l </proc/fs/fscache/cookies) - 1)) free=$(sed -n 's/^MemFree: *//p' /proc/meminfo | tr -d ' ')"
    _d0=$(cat /sys/block/vda/stat)
    _u0=$(cut -d' ' -f1 /proc/uptime)
    _t0=$(cut -d' ' -f14,15 /proc/$3/stat)
    _f0=$(cut -d' ' -f10 /proc/$3/stat)
    _s0=$(head -1 /proc/stat)
    _out=$(vmtool walk $2)
    _s1=$(head -1 /proc/stat)
    _t1=$(cut -d' ' -f14,15 /proc/$3/stat)
    _f1=$(cut -d' ' -f10 /proc/$3/stat)
    data "$1_daemon_faults" "$_f0 $_f1"
    _d1=$(cat /sys/block/vda/stat)
    data "$1_vda" "$_d0 | $_d1"
    data "$1_uptime" "$_u0 $(cut -d' ' -f1 /proc/uptime)"
    case $_out in
    files=*) pass "$1-walk" ;;
    *) fail "$1-walk" "$_out" ;;
    esac
    data "$1_walk" "$_out"
    data "$1_daemon_ticks" "$_t0 $_t1"
    data "$1_stat" "$_s0 | $_s1"
    check "$1-sums" sh -c "cd $2 && sha256sum -c /vmtest/sums >/tmp/sums.out 2>&1 || { grep -v ': OK\$' /tmp/sums.out | head -5; exit 1; }"
}
ours() {
    _key=$1
    shift
    start_daemon /tmp/$_key.log $_key --cache-dir /data/cache-$_key --metrics /tmp/$_key.prom "$@" || return 1
    set -- $_key
    od_mount walk /mnt/$1
    mount_readahead
    walk_run $1 /mnt/$1 $DPID
    [ -n "$WARM" ] && walk_run ${1}warm /mnt/$1 $DPID
    umount /mnt/$1
    stop_daemon daemon-exit-$1 >/dev/null
    data "$1_rafs" "$(grep '^erofs-ondemand: rafs ' /tmp/$1.log)"
    data "$1_summary" "$(grep '^erofs-ondemand: opens=' /tmp/$1.log)"
    [ -n "$KEEP_LOG" ] && cp /tmp/$1.log /data/$1.log
    data "$1_metrics" "$(grep -E '^erofs_ondemand_(read|read_wait|fetch)_duration_seconds_(sum|count) ' /tmp/$1.prom | tr ' ' '=' | tr '\n' ' ')"
}
# mount_readahead: with RA_KB set, the kernel's readahead of the EROFS mounts (each has a
# device info of its own, /sys/class/bdi/erofs-N), for both daemons alike.
mount_readahead() {
    [ -z "$RA_KB" ] && return 0
    for _f in /sys/class/bdi/erofs-*/read_ahead_kb; do echo $RA_KB >$_f; done
}
# base_ours KEY: `ours KEY` with the build of NYDUSD_WALK_BASELINE.
base_ours() {
    _path=$PATH
    PATH=/opt/base:$PATH
    ours "$@"
    PATH=$_path
}
peer() {
    nydusd_up /tmp/$1.log /etc/nydusd.json || return 1
    nydusd_mount walkn /mnt/$1
    mount_readahead
    walk_run $1 /mnt/$1 $NPID
    data "$1_backend" "$(nydusd_api "/api/v1/metrics/backend?id=$(cat /vmtest/blob.id)" | tr -d '\n ')"
    umount /mnt/$1
    nydusd_down nydusd-exit
    echo "--- nydusd log"
    tail -20 /tmp/$1.log
}
# warm_up: what the first daemon in a VM would otherwise pay alone, done for both before
# either is measured: wait until the guest's ext4 lazy init of /data has finished, then a
# throwaway cold read (60 small files and 16 MiB of the big file) served by ours and by nydusd,
# each on a cache directory removed afterwards.
warm_read() {
    check "$1-read" sh -c "cd $2 && vmtool read d00/* >/dev/null && head -c 16777216 big.bin >/dev/null"
}
warm_up() {
    _i=0
    while ps | grep -q '[e]xt4lazyinit' && [ $_i -lt 1200 ]; do
        _i=$((_i + 1))
        usleep 50000
    done
    data lazyinit_done "$(cut -d' ' -f1 /proc/uptime)"
    # Touch 640 MiB of guest memory once (qemu maps guest pages on first use).
    dd if=/dev/zero of=/tmp/touch bs=1M count=640 2>/dev/null
    rm -f /tmp/touch
    start_daemon /tmp/warm.log warm --cache-dir /data/cache-warm || return 1
    od_mount walk /mnt/warm
    warm_read warm /mnt/warm
    umount /mnt/warm
    stop_daemon daemon-exit-warm >/dev/null
    rm -rf /data/cache-warm
    nydusd_up /tmp/warmn.log /etc/nydusd.json || return 1
    nydusd_mount walkn /mnt/warmn
    warm_read warmn /mnt/warmn
    umount /mnt/warmn
    nydusd_down nydusd-exit-warm
    rm -rf /data/nydusd-cache
    data warm_done "$(cut -d' ' -f1 /proc/uptime)"
}
NYDUSD_LOG_LEVEL=warn
"#;

/// `k=N` from a summary line.
fn field(line: &str, k: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
}

/// `"key":N` from a flat JSON object.
fn json_u64(json: &str, k: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get(k)?.as_u64()
}

/// One daemon's walk in one run.
struct Walk {
    ns: u64,
    files: u64,
    bytes: u64,
    walker_us: (u64, u64),
    daemon_ms: u64,
    /// Of which in user mode (decoding, copies); the rest is the kernel's (cache file
    /// writes, reads of the blob, the device).
    daemon_user_ms: u64,
    /// Guest CPU time (all CPUs) during the walk: busy, idle + iowait, in ms.
    busy_ms: u64,
    idle_ms: u64,
    backend_bytes: Option<u64>,
    backend_reads: Option<u64>,
    /// The walker's phases (`vmtool walk`): big file; small files' opens and reads; the
    /// slowest small file; readdir and lstat.
    big_ns: u64,
    small_open_ns: u64,
    small_read_ns: u64,
    small_max_ns: u64,
    meta_ns: u64,
    /// Ours only: READ upcalls and their mean latency, the part of it spent waiting on
    /// claims (count, mean), RAFS decoding time.
    reads: Option<(u64, f64)>,
    waits: Option<(u64, f64)>,
    decode_ms: Option<u64>,
    chunks_decoded: Option<u64>,
    /// The guest before the walk: uptime, the ext4 lazy-init thread, free memory.
    probe: String,
    /// The VM disk during the walk: MB read, MB written.
    vda_mb: (f64, f64),
    /// The daemon's page faults during the walk.
    daemon_faults: Option<u64>,
}

impl Walk {
    fn parse(out: &VmOutcome, key: &str) -> Walk {
        let walk = out.data(&format!("{key}_walk")).unwrap_or_default();
        let get = |k: &str| {
            field(walk, k).unwrap_or_else(|| panic!("{key}: no {k} in {walk:?}\n{}", out.report()))
        };
        // USER_HZ is 100: one tick is 10 ms.
        let ticks: Vec<u64> = out
            .data(&format!("{key}_daemon_ticks"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        assert_eq!(ticks.len(), 4, "{key}: daemon ticks");
        let daemon_ms = (ticks[2] + ticks[3]).saturating_sub(ticks[0] + ticks[1]) * 10;
        let daemon_user_ms = ticks[2].saturating_sub(ticks[0]) * 10;
        let stat = out.data(&format!("{key}_stat")).unwrap_or_default();
        let (s0, s1) = stat.split_once('|').expect("two /proc/stat lines");
        let nums = |l: &str| -> Vec<u64> {
            l.split_whitespace()
                .skip(1)
                .filter_map(|t| t.parse().ok())
                .collect()
        };
        let (a, b) = (nums(s0), nums(s1));
        let delta: Vec<u64> = a.iter().zip(&b).map(|(x, y)| y - x).collect();
        let idle = delta[3] + delta[4];
        let busy = delta.iter().take(8).sum::<u64>() - idle;
        let (backend_bytes, backend_reads) = match out.data(&format!("{key}_rafs")) {
            Some(rafs) => (field(rafs, "stored_bytes"), field(rafs, "fetches")),
            None => {
                let json = out.data(&format!("{key}_backend")).unwrap_or_default();
                (
                    json_u64(json, "read_amount_total"),
                    json_u64(json, "read_count"),
                )
            }
        };
        // `name_sum=S name_count=N` from the metrics line: (N, mean ms).
        let metrics = out.data(&format!("{key}_metrics")).unwrap_or_default();
        let hist = |name: &str| -> Option<(u64, f64)> {
            let kv = |suffix: &str| {
                metrics.split_whitespace().find_map(|w| {
                    w.strip_prefix(&format!("erofs_ondemand_{name}_duration_seconds_{suffix}="))
                })
            };
            let sum: f64 = kv("sum")?.parse().ok()?;
            let count: u64 = kv("count")?.parse().ok()?;
            Some((
                count,
                if count > 0 {
                    sum * 1e3 / count as f64
                } else {
                    0.0
                },
            ))
        };
        // `/sys/block/vda/stat` before and after: sectors read (field 3), written (field 7).
        let vda = out.data(&format!("{key}_vda")).unwrap_or_default();
        let vda_mb = match vda.split_once('|') {
            Some((a, b)) => {
                let f = |l: &str, i: usize| -> f64 {
                    l.split_whitespace()
                        .nth(i)
                        .and_then(|t| t.parse::<u64>().ok())
                        .unwrap_or(0) as f64
                };
                let mb = |i| (f(b, i) - f(a, i)) * 512.0 / 1e6;
                (mb(2), mb(6))
            }
            None => (0.0, 0.0),
        };
        let faults: Vec<u64> = out
            .data(&format!("{key}_daemon_faults"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        let daemon_faults = match faults[..] {
            [a, b] => Some(b.saturating_sub(a)),
            _ => None,
        };
        Walk {
            daemon_faults,
            probe: out
                .data(&format!("{key}_probe"))
                .unwrap_or_default()
                .to_string(),
            vda_mb,
            big_ns: get("big_ns"),
            small_open_ns: get("small_open_ns"),
            small_read_ns: get("small_read_ns"),
            small_max_ns: get("small_max_ns"),
            meta_ns: get("meta_ns"),
            reads: hist("read"),
            waits: hist("read_wait"),
            decode_ms: out
                .data(&format!("{key}_rafs"))
                .and_then(|r| field(r, "decode_ms")),
            chunks_decoded: out
                .data(&format!("{key}_rafs"))
                .and_then(|r| field(r, "chunks_decoded")),
            ns: get("ns"),
            files: get("files"),
            bytes: get("bytes"),
            walker_us: (get("utime_us"), get("stime_us")),
            daemon_ms,
            daemon_user_ms,
            busy_ms: busy * 10,
            idle_ms: idle * 10,
            backend_bytes,
            backend_reads,
        }
    }

    fn ms(&self) -> f64 {
        self.ns as f64 / 1e6
    }

    fn profile(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        format!(
            "{:.0} ms; daemon CPU {} ms ({} user); walker CPU {:.0} ms user + {:.0} ms sys; guest (2 CPUs) busy {} ms, idle {} ms; backend {} bytes in {} reads; disk read {:.0} MB, written {:.0} MB; before: {}",
            self.ms(),
            self.daemon_ms,
            self.daemon_user_ms,
            self.walker_us.0 as f64 / 1e3,
            self.walker_us.1 as f64 / 1e3,
            self.busy_ms,
            self.idle_ms,
            opt(self.backend_bytes),
            opt(self.backend_reads),
            self.vda_mb.0,
            self.vda_mb.1,
            self.probe,
        )
    }

    /// The daemon's page faults during the walk.
    fn daemon_faults(&self) -> String {
        self.daemon_faults
            .map_or("?".into(), |f| format!("{f} page faults"))
    }

    /// Where the walker's time went, and (ours) the READ upcalls.
    fn phases(&self) -> String {
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut line = format!(
            "big file {:.0} ms; small files open {:.0} ms + read {:.0} ms (slowest {:.1} ms); readdir+lstat {:.0} ms",
            ms(self.big_ns),
            ms(self.small_open_ns),
            ms(self.small_read_ns),
            ms(self.small_max_ns),
            ms(self.meta_ns)
        );
        if let Some((n, mean)) = self.reads {
            let _ = write!(line, "; {n} READs, mean {mean:.1} ms");
        }
        if let Some((n, mean)) = self.waits {
            let _ = write!(line, " ({n} waited on a claim, mean {mean:.1} ms)");
        }
        if let (Some(d), Some(c)) = (self.decode_ms, self.chunks_decoded) {
            let _ = write!(line, "; decoding {d} ms ({c} chunks)");
        }
        line
    }
}

/// Ticks (1/100 s) of CPU time: the host's busy time (all CPUs), and qemu's (all its threads)
/// once it runs.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    busy: u64,
    qemu: Option<u64>,
}

fn ticks(stat: &str, first: usize, last: usize) -> u64 {
    // Fields after the command name's ")" start at field 3.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    (first..=last)
        .filter_map(|n| rest.get(n - 3).and_then(|t| t.parse::<u64>().ok()))
        .sum()
}

/// Our child `qemu-system-*`, if it runs.
fn qemu_pid() -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid = rest.split_whitespace().nth(1)?;
        (comm.contains("(qemu-system") && ppid == me).then_some(pid)
    })
}

/// Samples the host's CPU time every 100 ms until `stop`: the time other processes (other
/// sessions, builds) took from the two host CPUs that TCG's two vCPU threads need.
fn sample_host(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        let mut qemu = None;
        while !stop.load(Ordering::Relaxed) {
            let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
            let cpu: Vec<u64> = stat
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .skip(1)
                .filter_map(|t| t.parse().ok())
                .collect();
            let busy = cpu.iter().take(8).sum::<u64>()
                - cpu.get(3).copied().unwrap_or(0)
                - cpu.get(4).copied().unwrap_or(0);
            if qemu.is_none() {
                qemu = qemu_pid();
            }
            let q = qemu.and_then(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .map(|s| ticks(&s, 14, 15))
            });
            samples.push(Sample {
                at: Instant::now(),
                busy,
                qemu: q,
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        samples
    })
}

/// The host CPU time (ms) that processes other than qemu took between `from` and `to`.
fn others_ms(samples: &[Sample], from: Instant, to: Instant) -> Option<u64> {
    let a = samples.iter().find(|s| s.at >= from && s.qemu.is_some())?;
    let b = samples
        .iter()
        .rev()
        .find(|s| s.at <= to && s.qemu.is_some())?;
    if b.at <= a.at {
        return None;
    }
    let busy = b.busy.checked_sub(a.busy)?;
    let qemu = b.qemu?.saturating_sub(a.qemu?);
    Some(busy.saturating_sub(qemu) * 10)
}

fn main() {
    let files = env("NYDUSD_WALK_FILES", 3000);
    let big_mib = env("NYDUSD_WALK_BIG_MIB", 96);
    let runs = env("NYDUSD_WALK_RUNS", 4);
    let warm = env("NYDUSD_WALK_WARM", 0) == 1;
    let warm_up = env("NYDUSD_WALK_WARMUP", 1) == 1;
    let peer_again = env("NYDUSD_WALK_PEER_AGAIN", 0) == 1;
    let readahead_kb = std::env::var("NYDUSD_WALK_READAHEAD_KB").ok().map(|v| {
        v.parse::<u32>()
            .expect("NYDUSD_WALK_READAHEAD_KB: a number of KiB")
    });
    require_tool("nydus-image").expect("nydus-image");
    let busybox = busybox().expect("busybox");
    let nydusd_bin = nydusd::binary();
    let daemon = tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"]);

    let dir = scratch_dir("nydusd_walk");
    let tree = dir.join("tree");
    let tree_bytes = walk_tree(&tree, files, big_mib);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let blob = nydus_zstd(&blobs, "walk", &tree);
    let config = nydusd::config(&[Image::new(
        "walkn",
        "/data/blobs/walk",
        Backend::LocalFs {
            dir: "/data/blobs".into(),
        },
    )]);
    let sums = manifests(&busybox, &tree);
    std::fs::remove_dir_all(&tree).expect("remove the tree");

    // Other settings of ours, each run in the same VMs: `name=FLAGS;name=FLAGS`.
    let mut variants: Vec<(String, String)> = std::env::var("NYDUSD_WALK_VARIANTS")
        .unwrap_or_default()
        .split(';')
        .filter_map(|v| v.split_once('='))
        .map(|(k, v)| {
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric()) && !k.is_empty() && k != "base",
                "variant name {k:?}: letters and digits only, not `base`"
            );
            (k.to_string(), v.to_string())
        })
        .collect();
    // Another build of `erofs-ondemand` (before/after a change), run with the defaults as the
    // variant `base`.
    let baseline = std::env::var_os("NYDUSD_WALK_BASELINE").map(std::path::PathBuf::from);
    if let Some(b) = &baseline {
        assert!(
            b.is_file(),
            "NYDUSD_WALK_BASELINE {}: no such file",
            b.display()
        );
        variants.push(("base".into(), String::new()));
    }
    let mut results = Vec::new();
    let mut variant_ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for r in 1..=runs {
        // Ours and the variants, their order rotated by one each run (none always first),
        // then nydusd; the other way round in even runs.
        let mut order: Vec<(&str, String)> = vec![("ours", "ours ours".to_string())];
        order.extend(variants.iter().map(|(k, flags)| match k.as_str() {
            "base" => ("base", "base_ours base".to_string()),
            k => (k, format!("ours {k} {flags}")),
        }));
        let n = order.len();
        order.rotate_left((r as usize - 1) / 2 % n);
        order.push(("nydusd", "peer nydusd".to_string()));
        if r % 2 == 0 {
            order.reverse();
        }
        if peer_again {
            // nydusd once more, last, on a fresh cache: the same daemon after ours or after
            // itself, at the same place in the VM.
            order.push((
                "nydusd2",
                "rm -rf /data/nydusd-cache\npeer nydusd2".to_string(),
            ));
        }
        let mut script = format!(
            "data script_uptime \"$(cut -d' ' -f1 /proc/uptime)\"\n{DAEMON_PRELUDE}{}{HELPERS}",
            nydusd::GUEST_NYDUSD
        );
        if warm {
            script.push_str("WARM=1\n");
        }
        if let Ok(level) = std::env::var("NYDUSD_WALK_RUST_LOG") {
            let _ = writeln!(script, "export RUST_LOG={level}\nKEEP_LOG=1");
        }
        if let Some(kb) = readahead_kb {
            let _ = writeln!(script, "RA_KB={kb}");
        }
        if warm_up {
            script.push_str("warm_up\n");
        }
        for (_, call) in &order {
            let _ = writeln!(script, "{call}");
        }
        let vm = nydusd::into_guest(VmRun::new(&format!("nydusd-walk-{r}")))
            .kernel(Kernel::V6_12)
            .file("bin/erofs-ondemand", &daemon)
            .bytes("etc/nydusd.json", config.as_bytes(), 0o644)
            .disk_file("blobs", &blobs)
            .disk_size(1 << 30)
            .memory_mib(1024)
            .manifests(&sums)
            .bytes("vmtest/blob.id", blob.id.as_bytes(), 0o644)
            .script(&script)
            .timeout(Duration::from_secs(1200));
        let vm = match &baseline {
            Some(b) => vm.file("opt/base/erofs-ondemand", b),
            None => vm,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_host(stop.clone());
        let out = vm.run().expect("qemu, busybox and mkfs.ext4");
        stop.store(true, Ordering::Relaxed);
        let samples = sampler.join().expect("sampler");
        // The guest's uptime U maps to the host's clock at qemu's start + boot + (U - the
        // uptime when the script began).
        let qemu_start = samples.iter().find(|s| s.qemu.is_some()).map(|s| s.at);
        let script_up: Option<f64> = out.data("script_uptime").and_then(|u| u.parse().ok());
        let host_others = |key: &str| -> String {
            let (Some(start), Some(boot), Some(up0)) = (qemu_start, out.boot_time, script_up)
            else {
                return "?".into();
            };
            let ups: Vec<f64> = out
                .data(&format!("{key}_uptime"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|u| u.parse().ok())
                .collect();
            let [u0, u1] = ups[..] else {
                return "?".into();
            };
            let at = |u: f64| start + boot + Duration::from_secs_f64((u - up0).max(0.0));
            others_ms(&samples, at(u0), at(u1)).map_or("?".into(), |ms| {
                format!(
                    "{ms} ms ({:.0} % of one CPU)",
                    ms as f64 / ((u1 - u0) * 10.0)
                )
            })
        };
        let mut expected: Vec<String> = Vec::new();
        for key in std::iter::once("ours").chain(variants.iter().map(|(k, _)| k.as_str())) {
            expected.extend([
                format!("daemon-{key}"),
                format!("{key}-walk"),
                format!("{key}-sums"),
                format!("daemon-exit-{key}"),
            ]);
        }
        expected.extend(
            [
                "mount-walk",
                "nydusd-up",
                "nydusd-mount-walkn",
                "nydusd-walk",
                "nydusd-sums",
                "nydusd-exit",
            ]
            .map(String::from),
        );
        if warm_up {
            expected.extend(
                [
                    "daemon-warm",
                    "warm-read",
                    "daemon-exit-warm",
                    "warmn-read",
                    "nydusd-exit-warm",
                ]
                .map(String::from),
            );
        }
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        out.assert_passed(&expected);
        let ours = Walk::parse(&out, "ours");
        let peer = Walk::parse(&out, "nydusd");
        for w in [&ours, &peer] {
            assert_eq!((w.files, w.bytes), (files + 1, tree_bytes));
        }
        println!(
            "nydusd_walk run {r} ({} first, VM {:.0?}, {}): ours {:.0} ms, nydusd {:.0} ms: ours {:.2}x faster",
            order[0].0,
            out.elapsed,
            out.accel,
            ours.ms(),
            peer.ms(),
            peer.ms() / ours.ms()
        );
        if warm_up {
            println!(
                "  warm-up: the guest's ext4 lazy init done at uptime {} s, both daemons' throwaway reads done at {} s",
                out.data("lazyinit_done").unwrap_or("?"),
                out.data("warm_done").unwrap_or("?")
            );
        }
        println!(
            "  host CPU taken by other processes during each walk: ours {}, nydusd {}",
            host_others("ours"),
            host_others("nydusd")
        );
        println!("  ours:   {}", ours.profile());
        println!("          {}", ours.phases());
        println!("          daemon: {}", ours.daemon_faults());
        if warm {
            // The same walk again, every byte in the cache files: the kernel's own cost.
            let w = Walk::parse(&out, "ourswarm");
            println!(
                "  ours again, cache files full (no upcall): {}",
                w.profile()
            );
            println!("          {}", w.phases());
        }
        for (i, (k, flags)) in variants.iter().enumerate() {
            let w = Walk::parse(&out, k);
            assert_eq!((w.files, w.bytes), (files + 1, tree_bytes));
            println!(
                "  {k} ({flags}): {:.0} ms, nydusd / {k} {:.2}x",
                w.ms(),
                peer.ms() / w.ms()
            );
            println!("          {}", w.profile());
            println!("          {}", w.phases());
            println!("          daemon: {}", w.daemon_faults());
            println!(
                "          host CPU taken by other processes: {}",
                host_others(k)
            );
            variant_ratios[i].push(peer.ms() / w.ms());
        }
        if peer_again {
            let again = Walk::parse(&out, "nydusd2");
            println!(
                "  nydusd again, last, after {}: {:.0} ms; host CPU taken by other processes: {}",
                order[order.len() - 2].0,
                again.ms(),
                host_others("nydusd2")
            );
        }
        println!("  nydusd: {}", peer.profile());
        println!("          {}", peer.phases());
        println!("          daemon: {}", peer.daemon_faults());
        results.push((ours, peer));
    }
    let ratios: Vec<f64> = results.iter().map(|(o, p)| p.ms() / o.ms()).collect();
    println!(
        "nydusd_walk: erofs-ondemand against nydusd {} ({}): cold walk of {} files ({files} of 100 B-16 KiB, one of {big_mib} MiB; {tree_bytes} bytes), zstd RAFS blob {} bytes ({} uncompressed); host load {}",
        nydusd::VERSION,
        nydusd_bin.display(),
        files + 1,
        blob.compressed_size,
        blob.uncompressed_size,
        tests::vm::host_load()
    );
    // Runs with ours (or a variant) first are the odd ones.
    let by_order = |first_ours: bool| -> Vec<f64> {
        ratios
            .iter()
            .enumerate()
            .filter(|(i, _)| (i % 2 == 0) == first_ours)
            .map(|(_, r)| *r)
            .collect()
    };
    println!(
        "nydusd_walk: nydusd time / ours per run: {} (median {:.2}x; goal >= 2x; ours first: median {:.2}x, nydusd first: {:.2}x)",
        list(&ratios),
        median(&ratios),
        median(&by_order(true)),
        median(&by_order(false)),
    );
    for ((k, flags), ratios) in variants.iter().zip(variant_ratios) {
        println!(
            "nydusd_walk: nydusd time / {k} ({flags}): {} (median {:.2}x)",
            list(&ratios),
            median(&ratios)
        );
    }
}

fn list(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}x"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The middle value; of an even count, the mean of the middle two (NaN if empty).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
