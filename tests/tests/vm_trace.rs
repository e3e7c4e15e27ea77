//! Record and replay (`--record PATH`, `--prefetch-list PATH`) against the real kernels, with a
//! zstd Nydus RAFS image (its blob's key, the blob id, is the same on every cold run):
//!
//! 1. A cold start reads some files of the image while the daemon records what the kernel
//!    demanded (`--record`). The trace names the bootstrap and the blob, in first-access
//!    order, and spans far less than the image.
//! 2. A daemon on a fresh cache replays the trace (`--prefetch-list`): once its prefetch is
//!    done, the same reads (page cache dropped) fetch nothing on the read path
//!    (`erofs_ondemand_fetched_bytes_total` unchanged; with cachefiles not even a READ is
//!    sent), and what the replay fetched in all is about what was recorded.
//!
//! Both runs use `--readahead 0 --sequential-ahead 0`: with cachefiles, reads of bytes the
//! readahead brought send no READ (the trace would list misses only), and in the replay it
//! keeps the count exact (the mount's first reads race the prefetch; without readahead they
//! fetch only what they ask for).
//!
//! One test per kernel: 6.12 (`serve`, EROFS over fscache) and 7.2 (`fanotify`, file-backed
//! EROFS with pre-content events); and on 6.12 the same with a Nydus image served from a
//! registry in the guest (`serve --image REF`), where the trace's keys are the layers'
//! digests and the registry's access log counts what each run fetched. And one on the host kernel, whose fanotify sends
//! pre-content events for ordinary reads of marked files on ext4 (not for EROFS backing
//! files): the library API (`FanotifyDaemon::with_recorder`, `PrefetchConfig::with_trace`)
//! with reads made by the test.

mod vm_prod_common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ondemand::fanotify::FanotifyDaemon;
use ondemand::{AccessTrace, LocalDirServer, PrefetchConfig, Recorder};
use tests::vm::{Kernel, VmRun, noise, nydus_zstd};
use tests::{require_root, require_tool, scratch_dir};
use vm_prod_common::PRELUDE;

/// The guest's helpers (after [`PRELUDE`]: `start_daemon`, `metric`, `wait_for`, ...).
const HELPERS: &str = r#"
# prefetch_done LOG KEY: the prefetch of the object whose key ends in KEY has finished.
prefetch_done() { grep -q "prefetch: object [0-9]* (.*$2) done" "$1"; }
# workload DIR: what the "container" reads: two whole files and the head of a third.
workload() {
    check "$2-small" sh -c "sha256sum $1/small | grep -q $(cat /vmtest/small.sha256)"
    check "$2-big1" sh -c "sha256sum $1/big1 | grep -q $(cat /vmtest/big1.sha256)"
    check "$2-big2-head" sh -c "head -c 300000 $1/big2 | sha256sum | grep -q $(cat /vmtest/big2-head.sha256)"
}
# snapshot NAME: the counters, once the metrics file is rewritten (every 500 ms).
snapshot() {
    sleep 1.2
    data "$1_reads" "$(metric erofs_ondemand_read_requests_total)"
    data "$1_fetched" "$(metric erofs_ondemand_fetched_bytes_total)"
    data "$1_prefetched" "$(metric erofs_ondemand_prefetched_bytes_total)"
    data "$1_errors" "$(metric erofs_ondemand_errors_total)"
}
# trace_facts: what the recorded trace holds.
trace_facts() {
    echo "--- trace"
    head -20 /data/trace
    echo "---"
    check trace-header sh -c "head -1 /data/trace | grep -qx 'erofs-ondemand-trace v1'"
    data trace_entries "$(tail -n +2 /data/trace | grep -vc '^#')"
    data trace_bytes "$(tail -n +2 /data/trace | awk '{ s += $3 } END { print s + 0 }')"
    data trace_blob_entries "$(grep -c "^$BLOB " /data/trace)"
    data trace_boot_entries "$(grep -c "^$BOOT " /data/trace)"
    data trace_first_key "$(sed -n '2s/ .*//p' /data/trace)"
}
"#;

/// The cachefiles run (6.12): record with `serve`, replay with `serve` on a fresh cache.
const CACHEFILES: &str = r#"
mkdir -p /data/c1 /data/c2
start_daemon /tmp/rec.log rec --cache-dir /data/c1 --readahead 0 --sequential-ahead 0 \
    --record /data/trace --metrics $M || exit 1
od_mount $BOOT /mnt/rec
workload /mnt/rec rec
snapshot rec
umount /mnt/rec
stop_daemon daemon-exit-rec
trace_facts

start_daemon /tmp/rep.log rep --cache-dir /data/c2 --readahead 0 --sequential-ahead 0 \
    --prefetch-list /data/trace --metrics $M || exit 1
od_mount $BOOT /mnt/rep
# The first read of file data opens the blob (and queues its part of the trace).
check rep-first sh -c "head -c 1 /mnt/rep/small >/dev/null"
check prefetch-boot wait_for 60 prefetch_done /tmp/rep.log "/$BOOT"
check prefetch-blob wait_for 60 prefetch_done /tmp/rep.log "/$BLOB"
snapshot before
drop_caches
workload /mnt/rep rep
snapshot after
umount /mnt/rep
stop_daemon daemon-exit-rep
grep "prefetch:" /tmp/rep.log
"#;

/// The fanotify run (7.2): record with `fanotify`, replay with `fanotify` on a fresh cache.
const FANOTIFY: &str = r#"
case $(uname -r) in 7.2.*) pass kernel-7.2 ;; *) fail kernel-7.2 "uname -r: $(uname -r)" ;; esac
# fan_start NAME MNT ARGS...: `erofs-ondemand fanotify` on /data/NAME, mounted on MNT.
fan_start() {
    _fn=$1
    _fm=$2
    shift 2
    mkdir -p "$_fm" /data/$_fn
    DLOG=/tmp/$_fn.log
    erofs-ondemand fanotify --cache-dir /data/$_fn --blob-dir $B --image $BOOT --mountpoint "$_fm" \
        --readahead 0 --sequential-ahead 0 --on-open nothing --metrics $M "$@" >"$DLOG" 2>&1 &
    DPID=$!
    await_daemon "mount-$_fn" "not mounted" 600 grep -q " $_fm erofs " /proc/mounts
}
fan_start rec /mnt/rec --record /data/trace || exit 1
workload /mnt/rec rec
snapshot rec
stop_daemon daemon-exit-rec
trace_facts

fan_start rep /mnt/rep --prefetch-list /data/trace || exit 1
check prefetch-boot wait_for 60 prefetch_done /tmp/rep.log "/$BOOT"
check prefetch-blob wait_for 60 prefetch_done /tmp/rep.log "/$BLOB"
snapshot before
drop_caches
workload /mnt/rep rep
snapshot after
data rep_served_by_prefetch "$(metric erofs_ondemand_served_by_prefetch_bytes_total)"
stop_daemon daemon-exit-rep
grep "prefetch:" /tmp/rep.log
"#;

fn sha256(bytes: &[u8]) -> String {
    let sum = require_tool("sha256sum").expect("sha256sum");
    let mut child = Command::new(sum)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), bytes).expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// The image (files: `small`, `big1`, `big2`, `unread`), the blob id, the blob's
/// uncompressed span (the tree's data), and the guest's expected sums.
struct Fixture {
    /// Removed after a test that went well.
    _dir: tests::Scratch,
    blobs: PathBuf,
    blob_id: String,
    data_len: u64,
    sums: Vec<(String, String)>,
}

fn fixture(name: &str) -> Option<Fixture> {
    require_tool("nydus-image")?;
    let dir = scratch_dir(&format!("vm_trace/{name}"));
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let files = [
        ("small", noise(901, 10_000)),
        ("big1", noise(903, 6 << 20)),
        ("big2", noise(905, 4 << 20)),
        ("unread", noise(907, 6 << 20)),
    ];
    let mut sums = Vec::new();
    for (f, bytes) in &files {
        std::fs::write(tree.join(f), bytes).expect("write");
    }
    sums.push(("small".into(), sha256(&files[0].1)));
    sums.push(("big1".into(), sha256(&files[1].1)));
    sums.push(("big2-head".into(), sha256(&files[2].1[..300_000])));
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let blob_id = nydus_zstd(&blobs, "timg", &tree).id;
    let data_len = files.iter().map(|(_, b)| b.len() as u64).sum();
    Some(Fixture {
        _dir: dir,
        blobs,
        blob_id,
        data_len,
        sums,
    })
}

/// What both kernels must show.
fn check_figures(out: &tests::vm::VmOutcome, f: &Fixture, cachefiles: bool) {
    let v = |k: &str| out.data_u64(k);
    let report = out.report();
    // What the readers asked for: small (10000), big1 (6 MiB), 300000 bytes of big2, plus
    // metadata; never the unread file.
    let recorded = v("trace_bytes");
    let asked = 10_000 + (6 << 20) + 300_000;
    assert!(recorded >= asked, "{report}");
    assert!(recorded < asked + (2 << 20), "{report}");
    assert!(recorded < f.data_len / 2, "{report}");
    assert!(v("trace_blob_entries") > 0, "{report}");
    assert!(v("trace_boot_entries") > 0, "{report}");
    assert_eq!(out.data("trace_first_key"), Some("timg"), "{report}");
    // The recording run fetched what it was asked (no readahead): about the trace.
    assert!(v("rec_fetched") >= recorded, "{report}");
    // The replay: after its prefetch, the same reads fetch nothing on the read path.
    assert_eq!(v("after_fetched"), v("before_fetched"), "{report}");
    if cachefiles {
        // Every byte present in the cache files: the kernel sends no READ at all.
        assert_eq!(v("after_reads"), v("before_reads"), "{report}");
    } else {
        // fanotify sends an event per read, present or not: served from the prefetch.
        assert!(v("rep_served_by_prefetch") >= asked / 2, "{report}");
    }
    assert_eq!(v("after_errors"), 0, "{report}");
    // What the replay fetched in all (prefetch plus the mount's first reads) is about the
    // trace: block rounding of each range, and chunks decompressed whole do not count.
    let replay = v("after_prefetched") + v("after_fetched");
    let slack = v("trace_entries") * 8192;
    assert!(replay + slack >= recorded, "{report}");
    assert!(replay <= recorded + slack, "{report}");
    println!(
        "vm_trace ({}): VM {:.1?} ({}); recorded {} ranges, {recorded} bytes (image data {}); replay: prefetched {} bytes, fetched on the read path {} bytes (the whole replay), READs (fanotify: events) during the replayed reads: {}",
        if cachefiles {
            "6.12 cachefiles"
        } else {
            "7.2 fanotify"
        },
        out.elapsed,
        out.accel,
        v("trace_entries"),
        f.data_len,
        v("after_prefetched"),
        v("after_fetched"),
        v("after_reads") - v("before_reads"),
    );
}

fn vm(name: &str, kernel: Kernel, f: &Fixture, body: &str) -> Option<tests::vm::VmOutcome> {
    let daemon = tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"]);
    let mut vm = VmRun::new(name)
        .kernel(kernel)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &f.blobs)
        .script(&format!(
            "{PRELUDE}BOOT=timg\nBLOB={}\n{HELPERS}{body}",
            f.blob_id
        ))
        .timeout(Duration::from_secs(300));
    for (name, sum) in &f.sums {
        vm = vm.bytes(&format!("vmtest/{name}.sha256"), sum.as_bytes(), 0o644);
    }
    vm.run()
}

/// The checks both kernels pass.
const BOTH: [&str; 11] = [
    "rec-small",
    "rec-big1",
    "rec-big2-head",
    "daemon-exit-rec",
    "trace-header",
    "prefetch-boot",
    "prefetch-blob",
    "rep-small",
    "rep-big1",
    "rep-big2-head",
    "daemon-exit-rep",
];

#[test]
fn record_and_replay_on_6_12_cachefiles() {
    let Some(f) = fixture("cachefiles") else {
        return;
    };
    let Some(out) = vm("trace-cachefiles", Kernel::V6_12, &f, CACHEFILES) else {
        return;
    };
    out.assert_passed(
        &[
            &BOTH[..],
            &["daemon-rec", "mount-timg", "daemon-rep", "rep-first"],
        ]
        .concat(),
    );
    check_figures(&out, &f, true);
}

#[test]
fn record_and_replay_on_7_2_fanotify() {
    let Some(f) = fixture("fanotify") else {
        return;
    };
    let Some(out) = vm("trace-fanotify", Kernel::V7_2, &f, FANOTIFY) else {
        return;
    };
    out.assert_passed(&[&BOTH[..], &["kernel-7.2", "mount-rec", "mount-rep"]].concat());
    check_figures(&out, &f, false);
}

/// The registry round (6.12): record and replay `serve --image REF`, the registry in the
/// guest counting the bytes of each run.
const REGISTRY: &str = r#"
# workload_tree DIR NAME: the same workload on the layered tree's files.
workload_tree() {
    check "$2-small" sh -c "sha256sum $1/small/s3 | grep -q $(cat /vmtest/small.sha256)"
    check "$2-big1" sh -c "sha256sum $1/data/random.bin | grep -q $(cat /vmtest/big1.sha256)"
    check "$2-big2-head" sh -c "head -c 300000 $1/data/big.txt | sha256sum | grep -q $(cat /vmtest/big2-head.sha256)"
}
check registry-up registry_up
# reg_mark: access-log lines so far; reg_bytes N: body bytes served after line N.
reg_mark() { grep -c 'HTTP/1.1"' /tmp/registry.log; }
reg_bytes() {
    grep 'HTTP/1.1"' /tmp/registry.log | awk -v n=$1 'NR > n { if ($10 ~ /^[0-9]+$/) b += $10 } END { print b + 0 }'
}
# all_prefetched LOG: the prefetch of every object the trace names is done (fscache looks
# cookies up asynchronously: a blob's OPEN may come after the mount returned).
all_prefetched() {
    _k=$(tail -n +2 /data/trace | cut -d' ' -f1 | sort -u | wc -l)
    [ "$(grep -c 'prefetch: object .* done' "$1")" -ge "$_k" ]
}
reg_serve() {
    _n=$1
    shift
    mkdir -p /mnt/$_n /data/c-$_n
    DLOG=/tmp/$_n.log
    erofs-ondemand serve --cache-dir /data/c-$_n --image 127.0.0.1:5000/rootfs:nydus \
        --mountpoint /mnt/$_n --readahead 0 --sequential-ahead 0 --metrics $M "$@" >"$DLOG" 2>&1 &
    DPID=$!
    await_daemon "mount-$_n" "not mounted" 2400 grep -q " /mnt/$_n " /proc/mounts
}
_m0=$(reg_mark)
reg_serve rec --record /data/trace --predict-file 0 --predict-dir 0 || exit 1
workload_tree /mnt/rec rec
snapshot rec
stop_daemon daemon-exit-rec
data rec_registry_bytes "$(reg_bytes $_m0)"
echo "--- trace"
cat /data/trace
echo "---"
data trace_entries "$(tail -n +2 /data/trace | grep -vc '^#')"
data trace_bytes "$(tail -n +2 /data/trace | awk '{ s += $3 } END { print s + 0 }')"
data trace_keys "$(tail -n +2 /data/trace | cut -d' ' -f1 | sort -u | wc -l)"
_m1=$(reg_mark)
# The trace's chunks are fetched early (the default with --image), with no gap merged: the
# replay's registry bytes are then the recorded chunks' exactly.
reg_serve rep --prefetch-list /data/trace --prefetch-early-gap 0 || exit 1
check prefetch-all wait_for 120 all_prefetched /tmp/rep.log
snapshot before
drop_caches
workload_tree /mnt/rep rep
snapshot after
stop_daemon daemon-exit-rep
data rep_registry_bytes "$(reg_bytes $_m1)"
grep "prefetch:\|registry requests" /tmp/rep.log
"#;

/// Record and replay `serve --image REF` on 6.12: the files of a layered tree (a Nydus image
/// of two layers pushed by skopeo to the registry that then runs in the guest).
#[test]
fn registry_record_and_replay_on_6_12_cachefiles() {
    use tests::oci_images;
    use tests::oci_layout::{OciLayout, Platform};
    use tests::registry::{GUEST_REGISTRY_UP, Registry};
    use tests::skopeo::Skopeo;
    let Some(reg) = Registry::plain("vm_trace/registry") else {
        return;
    };
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let tree = oci_images::layered_tree(&dir.join("tree"), 4 << 20);
    let layout = OciLayout::create(&dir.join("layout"));
    let Some(image) = oci_images::nydus_image(
        &layout,
        &tree.layers(),
        &Platform::host(),
        &dir.join("nydus"),
    ) else {
        return;
    };
    layout.tag("nydus", &image.image.manifest);
    skopeo.push(layout.dir(), "nydus", &reg, "rootfs:nydus");
    let layers: u64 = image.image.layers.iter().map(|l| l.size).sum();
    // The workload's files, under the names `workload` reads.
    let file = |p: &str| std::fs::read(tree.merged.join(p)).expect("tree file");
    let big = file("data/big.txt");
    let sums = [
        ("small", sha256(&file("small/s3"))),
        ("big1", sha256(&file("data/random.bin"))),
        ("big2-head", sha256(&big[..300_000])),
    ];
    let script = format!("{PRELUDE}{GUEST_REGISTRY_UP}{HELPERS}{REGISTRY}");
    let daemon = tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"]);
    let mut vm = VmRun::new("trace-registry")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_size(layers * 3 + (256 << 20))
        .script(&script)
        .timeout(Duration::from_secs(600));
    for (name, sum) in &sums {
        vm = vm.bytes(&format!("vmtest/{name}.sha256"), sum.as_bytes(), 0o644);
    }
    let Some(out) = reg.into_guest(vm).run() else {
        return;
    };
    out.assert_passed(&[
        "registry-up",
        "mount-rec",
        "rec-small",
        "rec-big1",
        "rec-big2-head",
        "daemon-exit-rec",
        "mount-rep",
        "prefetch-all",
        "rep-small",
        "rep-big1",
        "rep-big2-head",
        "daemon-exit-rep",
    ]);
    let v = |k: &str| out.data_u64(k);
    let report = out.report();
    // Keys: the bootstrap layer's digest and the blob ids (digests of the blob layers).
    assert!(v("trace_keys") >= 2, "{report}");
    // After the prefetch, the reads send no READ and fetch nothing.
    assert_eq!(v("after_reads"), v("before_reads"), "{report}");
    assert_eq!(v("after_fetched"), v("before_fetched"), "{report}");
    assert_eq!(v("after_errors"), 0, "{report}");
    // The replay fetched what the recording run fetched from the registry, no more (the
    // same chunks; a prefetch chunk batches them into fewer, parallel range requests).
    let (rec, rep) = (v("rec_registry_bytes"), v("rep_registry_bytes"));
    assert!(rep <= rec + (64 << 10), "{report}");
    assert!(rep + (64 << 10) >= rec / 2, "{report}");
    println!(
        "vm_trace (6.12, registry): VM {:.1?} ({}); image layers {layers} bytes; recorded {} ranges, {} bytes of {} objects; registry bytes: recording run {rec}, replay {rep}; replay prefetched {} bytes, fetched on the read path {} bytes, READs during the replayed reads: {}",
        out.elapsed,
        out.accel,
        v("trace_entries"),
        v("trace_bytes"),
        v("trace_keys"),
        v("after_prefetched"),
        v("after_fetched"),
        v("after_reads") - v("before_reads"),
    );
}

/// Stops a daemon when dropped, so a failing assertion does not leave it serving.
struct StopOnDrop(ondemand::Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

/// Serve `blobs/blob` with `daemon` while `work` runs; returns `work`'s result.
fn serving<T>(daemon: &FanotifyDaemon<LocalDirServer>, work: impl FnOnce(&Path) -> T) -> T {
    let path = daemon.add_object(b"img", b"blob").expect("add_object");
    let stop = daemon.shutdown_handle();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(stop.clone());
        let serving = s.spawn(|| daemon.run());
        let out = work(&path);
        stop.trigger();
        serving.join().expect("no panic").expect("run");
        out
    })
}

#[test]
fn host_fanotify_record_and_replay() {
    if require_root("fanotify_init(FAN_CLASS_PRE_CONTENT) needs CAP_SYS_ADMIN").is_none() {
        return;
    }
    let dir = scratch_dir("vm_trace/host");
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let len = 6 * 1024 * 1024 + 777;
    let data = noise(911, len);
    std::fs::write(blobs.join("blob"), &data).expect("write blob");
    // Scattered reads, one of them twice, one unaligned, the file's tail.
    let reads: [(u64, usize); 6] = [
        (0, 4096),
        (4 << 20, 200_000),
        (1 << 20, 10_000),
        (4 << 20, 4096),
        (3_000_001, 5000),
        (len as u64 - 700, 700),
    ];
    let read = |path: &Path| {
        let f = std::fs::File::open(path).expect("open backing file");
        for (off, n) in reads {
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, off).expect("read");
            assert!(
                buf[..] == data[off as usize..off as usize + n],
                "bytes at {off}"
            );
        }
    };
    // 1. Record.
    let trace_path = dir.join("trace");
    let recorder = Arc::new(Recorder::create(&trace_path).expect("create trace"));
    let daemon = FanotifyDaemon::new(LocalDirServer::new(&blobs), dir.join("cache1"))
        .expect("fanotify_init")
        .with_readahead(0)
        .with_sequential_ahead(0)
        .with_recorder(Arc::clone(&recorder));
    serving(&daemon, read);
    let recorded = daemon.stats();
    // `run` flushed the trace as it returned.
    let trace = AccessTrace::read(&trace_path).expect("read trace");
    println!("host fanotify: recorded {recorded}\n{}", trace.to_text());
    assert_eq!(trace.skipped(), 0);
    assert_eq!(trace.keys(), [&b"blob"[..]]);
    // Page-aligned event ranges, in first-access order, each byte once.
    let first: Vec<u64> = trace.entries().iter().map(|e| e.range.start).collect();
    assert_eq!(first[0], 0, "{first:?}");
    assert!(
        first[1] <= 4 << 20 && first[1] + (64 << 10) > 4 << 20,
        "{first:?}"
    );
    let asked: u64 = reads.iter().map(|&(_, n)| n as u64).sum::<u64>() - 4096;
    assert!(trace.bytes() >= asked, "{} < {asked}", trace.bytes());
    assert!(trace.bytes() <= asked + 16 * 4096, "{}", trace.bytes());
    assert_eq!(
        recorded.fetched_bytes,
        trace.bytes().min(recorded.fetched_bytes)
    );
    // 2. Replay on a fresh cache dir: the prefetch fills the trace before the reads.
    let daemon = FanotifyDaemon::new(LocalDirServer::new(&blobs), dir.join("cache2"))
        .expect("fanotify_init")
        .with_readahead(0)
        .with_sequential_ahead(0)
        .with_prefetch(
            PrefetchConfig::listed_only()
                .with_trace(&trace)
                .with_threads(2),
        );
    serving(&daemon, |path| {
        let t = std::time::Instant::now();
        while !(daemon.engine().prefetch_idle() && daemon.engine().prefetch_pending_bytes() == 0)
            || daemon.stats().prefetched_bytes == 0
        {
            assert!(t.elapsed() < Duration::from_secs(60), "{}", daemon.stats());
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = daemon.stats();
        read(path);
        let after = daemon.stats();
        println!("host fanotify replay: before the reads {before}; after {after}");
        assert_eq!(after.fetched_bytes, 0, "a fill on the read path: {after}");
        assert_eq!(after.prefetched_bytes, recorded.fetched_bytes, "{after}");
        assert!(after.served_by_prefetch_bytes >= asked, "{after}");
        assert_eq!(after.errors(), 0, "{after}");
    });
}
