//! The fanotify pre-content transport (`ondemand::fanotify`), the successor of EROFS over
//! fscache, against real kernels:
//!
//! - `host_reads_of_marked_files_are_filled`: on the host kernel (6.18, root), ordinary reads
//!   of a marked sparse backing file send `FAN_PRE_ACCESS` events that the daemon fills from
//!   a [`LocalDirServer`]: a partial read fetches about one readahead window, a full read
//!   the rest, nothing twice, and the bytes equal the blob. (The host kernel sends no events
//!   for the reads an EROFS mount makes from its backing files, so mounts are tested in the VM.)
//! - `serve_file_backed_mounts_on_7_2`: in the Linux 7.2 VM (no fscache there), the
//!   `erofs-ondemand fanotify` command serves a chunk-based `mkfs.erofs --blobdev` image and a
//!   zstd Nydus RAFS v6 image (devices found from its device table) mounted file-backed:
//!   reading one small file fetches a small part of the blob, reading every file gives the
//!   host tree's sha256 sums, and the daemon exits cleanly after unmounting.
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

use ondemand::fanotify::FanotifyDaemon;
use ondemand::{LocalDirServer, OnDemandServer, StatsSnapshot};
use tests::vm::{DAEMON_PRELUDE, Kernel, VmRun, busybox, dense_tree, manifests, noise, nydus_zstd};
use tests::{require_root, require_tool, run, scratch_dir};

/// A host test's scratch dir `vm_fanotify/NAME`, with its blobs in `blobs/`.
struct Host {
    dir: tests::Scratch,
    blobs: PathBuf,
}

impl Host {
    /// `None` without root: `fanotify_init(FAN_CLASS_PRE_CONTENT)` needs `CAP_SYS_ADMIN`.
    fn new(name: &str) -> Option<Host> {
        require_root("fanotify_init(FAN_CLASS_PRE_CONTENT) needs CAP_SYS_ADMIN")?;
        let dir = scratch_dir(&format!("vm_fanotify/{name}"));
        let blobs = dir.join("blobs");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        Some(Host { dir, blobs })
    }

    /// Write blob `key`, `len` bytes of noise (seed `seed`), and return its bytes.
    fn blob(&self, key: &str, seed: u64, len: usize) -> Vec<u8> {
        let data = noise(seed, len);
        std::fs::write(self.blobs.join(key), &data).expect("write blob");
        data
    }

    /// A server of the blobs.
    fn server(&self) -> LocalDirServer {
        LocalDirServer::new(&self.blobs)
    }

    /// A daemon of `server` (in a fanotify group of its own) with its backing files in
    /// `CACHE/`; the library's defaults otherwise.
    fn daemon<S: OnDemandServer>(&self, cache: &str, server: S) -> FanotifyDaemon<S> {
        FanotifyDaemon::new(server, self.dir.join(cache)).expect("fanotify_init")
    }
}

/// A daemon serving on a thread of a scope until [`stop`](Self::stop), or until dropped (so
/// a failing assertion does not wait forever for the serving thread).
struct Serving<'scope> {
    stop: ondemand::Shutdown,
    thread: Option<ScopedJoinHandle<'scope, std::io::Result<StatsSnapshot>>>,
}

impl<'scope> Serving<'scope> {
    fn start<'env, S: OnDemandServer>(
        s: &'scope Scope<'scope, 'env>,
        daemon: &'env FanotifyDaemon<S>,
    ) -> Self {
        Serving {
            stop: daemon.shutdown_handle(),
            thread: Some(s.spawn(move || daemon.run())),
        }
    }

    /// Stop the daemon: its counters once every worker has ended.
    fn stop(mut self) -> StatsSnapshot {
        self.stop.trigger();
        let thread = self.thread.take().expect("serving");
        thread.join().expect("no panic").expect("run")
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

/// Serve `daemon` while `body` runs (in a thread scope, for readers of its own), then stop
/// it: its counters once every worker has ended.
fn serve<'env, S: OnDemandServer>(
    daemon: &'env FanotifyDaemon<S>,
    body: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>),
) -> StatsSnapshot {
    std::thread::scope(|s| {
        let serving = Serving::start(s, daemon);
        body(s);
        serving.stop()
    })
}

/// Poll `done` every 5 ms until it holds; after 30 s, fail with `what` and the daemon's
/// counters.
fn wait_for<S: OnDemandServer>(daemon: &FanotifyDaemon<S>, what: &str, done: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what}: {}",
            daemon.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn host_reads_of_marked_files_are_filled() {
    let len = 5 * 1024 * 1024 + 1234;
    let Some(h) = Host::new("host") else {
        return;
    };
    let data = h.blob("blob", 11, len);
    let readahead = 256 * 1024;
    // Direct writes (the file's unaligned last block buffered).
    let daemon = h
        .daemon("cache", h.server())
        .with_readahead(readahead)
        .with_direct_io(true);
    let path = daemon.add_object(b"img", b"blob").expect("add_object");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), len as u64);
    let stats = serve(&daemon, |_| {
        let file = std::fs::File::open(&path).expect("open backing file");
        let after_open = daemon.stats();
        // A 100-byte read in the middle: its block and one readahead window.
        let mut small = [0u8; 100];
        file.read_exact_at(&mut small, 3_000_000)
            .expect("read backing file");
        assert_eq!(&small[..], &data[3_000_000..3_000_100]);
        let partial = daemon.stats();
        println!("host: after open: {after_open}");
        println!("host: after a 100-byte read: {partial}");
        assert!(partial.reads > after_open.reads, "{partial}");
        let fetched = partial.fetched_bytes - after_open.fetched_bytes;
        assert!(
            fetched >= 100 && fetched <= readahead + 4096,
            "a 100-byte read fetched {fetched} bytes"
        );
        // The whole file: everything else, once.
        let all = std::fs::read(&path).expect("read backing file");
        assert!(all == data, "backing file differs from the blob");
        let full = daemon.stats();
        println!("host: after reading everything: {full}");
        assert_eq!(full.fetched_bytes, len as u64, "{full}");
        assert_eq!((full.errors(), full.read_errors), (0, 0), "{full}");
        assert_eq!(daemon.objects()[0].present, len as u64);
        // Present now: reads cost events but no fetches.
        let again = std::fs::read(&path).expect("read backing file");
        assert!(again == data);
        assert_eq!(daemon.stats().fetched_bytes, len as u64);
        assert!(daemon.remove_object(b"blob").expect("unmark"));
        assert!(!daemon.remove_object(b"blob").expect("unmark"));
        // Added again: the file is kept with what it holds (complete, so not marked), one
        // object.
        daemon.add_object(b"img", b"blob").expect("add_object");
        daemon.add_object(b"img", b"blob").expect("add_object");
        let objects = daemon.objects();
        assert_eq!(objects.len(), 1, "{objects:?}");
        assert_eq!((objects[0].present, objects[0].marked), (len as u64, false));
    });
    println!("host: final: {stats}");
}

/// Reads of bytes already present are answered without a fill and are no step of a
/// sequential stream (as on cachefiles, where the kernel sends no READ for them): small reads
/// all over one filled window, as a program reading many small files of one blob makes, fetch
/// nothing beyond that window; the next read that misses still continues the stream.
#[test]
fn host_reads_of_present_bytes_fetch_nothing_more() {
    const MIB: u64 = 1 << 20;
    let Some(h) = Host::new("host-present") else {
        return;
    };
    let data = h.blob("blob", 17, 8 * MIB as usize);
    let daemon = h
        .daemon("cache", h.server())
        .with_readahead(MIB)
        .with_threads(1);
    let path = daemon.add_object(b"img", b"blob").expect("add_object");
    let stats = serve(&daemon, |_| {
        let file = std::fs::File::open(&path).expect("open backing file");
        let mut block = [0u8; 4096];
        // The first read fills its window, [0, 1 MiB).
        file.read_exact_at(&mut block, 0).expect("read");
        assert_eq!(daemon.stats().fetched_bytes, MIB);
        // Fifteen more reads inside it, each an event on a present range.
        for i in 1..16u64 {
            let off = i * 64 * 1024;
            file.read_exact_at(&mut block, off).expect("read");
            assert_eq!(&block[..], &data[off as usize..][..4096]);
        }
        let st = daemon.stats();
        assert_eq!(st.reads, 16, "{st}");
        assert_eq!((st.fetched_bytes, st.ahead_bytes), (MIB, 0), "{st}");
        // A read past the window misses and continues the stream from the first read's
        // window: its own window, then the fill ahead of it.
        file.read_exact_at(&mut block, MIB).expect("read");
        assert_eq!(&block[..], &data[MIB as usize..][..4096]);
        assert!(daemon.stats().fetched_bytes >= 2 * MIB);
        wait_for(&daemon, "no fill ahead of a sequential read", || {
            daemon.stats().ahead_bytes > 0
        });
    });
    println!("host, present reads then a miss: {stats}");
    assert_eq!(stats.errors(), 0, "{stats}");
}

/// A stream's first step fills ahead only what the engine does; the growth on this transport
/// (twice what the stream has read) counts from there, not from the stream's first read:
/// one readahead batch can come as a 2 MiB request and then a small one right after its end
/// (EROFS cuts requests at 16 folios; a mapped library's page fault reads 4 MiB around it),
/// and counting the first as read fetched 4 MiB more ahead of a reader that read no further
/// (DESIGN.md "Direct I/O, session 10"). A read of [0, 2 MiB), then one of 100 KiB at 2 MiB:
/// its window [2, 3) MiB and the engine's 1 MiB ahead, 4 MiB in all (before: 7 MiB).
#[test]
fn host_a_streams_first_step_grows_nothing() {
    const MIB: u64 = 1 << 20;
    let Some(h) = Host::new("host-first-step") else {
        return;
    };
    let data = h.blob("blob", 31, 16 * MIB as usize);
    let daemon = h
        .daemon("cache", h.server())
        .with_readahead(MIB)
        .with_threads(1);
    let path = daemon.add_object(b"img", b"blob").expect("add_object");
    let st = serve(&daemon, |_| {
        let file = std::fs::File::open(&path).expect("open backing file");
        let mut first = vec![0u8; 2 * MIB as usize];
        file.read_exact_at(&mut first, 0).expect("read");
        assert_eq!(first, data[..2 * MIB as usize]);
        let st = daemon.stats();
        assert_eq!((st.fetched_bytes, st.ahead_bytes), (2 * MIB, 0), "{st}");
        let mut tail = vec![0u8; 100 << 10];
        file.read_exact_at(&mut tail, 2 * MIB).expect("read");
        assert_eq!(tail, data[2 * MIB as usize..][..100 << 10]);
        // The fill ahead runs after the answer: wait for it to start and settle.
        wait_for(&daemon, "no fill ahead", || {
            daemon.stats().ahead_bytes > 0 && daemon.engine().queued_fill_jobs() == 0
        });
        std::thread::sleep(Duration::from_millis(300));
    });
    println!("host, a stream's first step: {st}");
    assert_eq!(
        (st.fetched_bytes, st.ahead_bytes, st.errors()),
        (4 * MIB, MIB, 0),
        "{st}"
    );
}

/// Cold prediction on fanotify (`FanotifyDaemon::with_predictor`), as for a cachefiles READ:
/// an event at the head of a file of a Nydus image (nydus-image, zstd) fills the rest of that
/// file on the fill pool, byte-exact; the same read without a predictor fills its window.
#[test]
fn host_an_event_fills_the_rest_of_its_file_with_a_predictor() {
    use ondemand::predict::{FileMap, NeededRule, Predictor, Rules};
    const LEN: usize = 3 << 20;
    let Some(h) = Host::new("host-predict") else {
        return;
    };
    require_tool("nydus-image").expect("nydus-image (tests need it)");
    let src = h.dir.join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    let big = noise(41, LEN);
    std::fs::write(src.join("d/big"), &big).expect("write");
    std::fs::write(src.join("small"), noise(42, 10_000)).expect("write");
    // The bootstrap beside the blob: `RafsDirServer` finds the blob's chunk map there.
    let boot = h.blobs.join("boot");
    tests::nydus_image::Create::new(&src, &h.blobs)
        .bootstrap(&boot)
        .args(&["--compressor", "zstd", "--chunk-size", "0x10000"])
        .run()
        .expect("nydus-image");
    let image = erofs_reader::Image::open(&boot).expect("bootstrap");
    let blob_id = image.devices()[0].tag.clone();
    let inode = image.lookup("/d/big").expect("lookup");
    let first = image.extents(&inode, 0..1).expect("extents").remove(0);
    let erofs_reader::ExtentTarget::Device { offset, .. } = first.target else {
        panic!("/d/big is not on the blob");
    };
    for predicted in [false, true] {
        let server = ondemand::rafs::RafsDirServer::new(&h.blobs);
        let mut daemon = h
            .daemon(if predicted { "cache-p" } else { "cache" }, server)
            .with_readahead(64 << 10)
            .with_sequential_ahead(0)
            .with_threads(1);
        if predicted {
            let p = std::sync::Arc::new(Predictor::new());
            let rules = Rules {
                whole_file: 8 << 20,
                directory: 0,
                needed: NeededRule::Off,
                cousins: 0,
            };
            p.set(FileMap::from_image(&image, rules, 0x10000).expect("file map"));
            daemon = daemon.with_predictor(p);
        }
        let path = daemon.add_object(b"img", &blob_id).expect("add_object");
        let st = serve(&daemon, |_| {
            let file = std::fs::File::open(&path).expect("open backing file");
            let mut head = vec![0u8; 4096];
            file.read_exact_at(&mut head, offset).expect("read");
            assert!(head == big[..4096], "the file's head differs");
            // The predicted pieces are filled by the pool after the answer.
            if predicted {
                wait_for(&daemon, "the rest of the file was not filled", || {
                    daemon.stats().fetched_bytes >= LEN as u64
                        && daemon.engine().queued_fill_jobs() == 0
                });
            }
            std::thread::sleep(Duration::from_millis(100));
            if predicted {
                // Present now: read without the daemon's help would fail; read it all.
                let mut all = vec![0u8; LEN];
                file.read_exact_at(&mut all, offset).expect("read");
                assert!(all == big, "the predicted file's bytes differ");
            }
        });
        println!("host, predictor {predicted}: {st}");
        if predicted {
            // The file, once: its second read (all of it, an event on a file still marked)
            // found every byte present.
            assert_eq!(st.fetched_bytes, LEN as u64, "{st}");
            assert!(st.ahead_bytes >= LEN as u64 - (64 << 10), "{st}");
        } else {
            assert!(st.fetched_bytes < 1 << 20, "{st}");
        }
        assert_eq!(st.errors(), 0, "{st}");
    }
}

/// A daemon whose blob shrank after `add_object`: its fills fail, so reads are denied.
#[test]
fn host_failed_fills_deny_with_eio() {
    let Some(h) = Host::new("host-deny") else {
        return;
    };
    h.blob("blob", 3, 100_000);
    let daemon = h
        .daemon("cache", h.server())
        .with_readahead(0)
        .with_zero_count(ondemand::fanotify::ZeroCount::Nothing);
    let path = daemon.add_object(b"img", b"blob").expect("add_object");
    // The server's file handle still reads the old inode: replace the blob's contents in place.
    std::fs::OpenOptions::new()
        .write(true)
        .open(h.blobs.join("blob"))
        .and_then(|f| f.set_len(10))
        .expect("truncate blob");
    let stats = serve(&daemon, |_| {
        let err = std::fs::read(&path).expect_err("a failed fill must fail the read");
        println!("host: read with a failing server: {err}");
        // EIO: FAN_DENY_ERRNO carried the server's error (not EPERM, plain FAN_DENY).
        assert_eq!(err.raw_os_error(), Some(5), "{err}");
    });
    assert!(stats.read_errors >= 1, "{stats}");
}

/// The guest script's helpers (after [`DAEMON_PRELUDE`]): `fan_start NAME MNT ARGS...` runs
/// `erofs-ondemand fanotify` (or `$FAN_BIN`) with a cache dir (`/data/cache/NAME`, or `$FAN_CACHE`) and a
/// metrics file of its own and waits for MNT to be mounted (check `mount-NAME`);
/// `metrics_line NAME` turns the metrics file's counters into `name=N ...` (`read_requests`,
/// `fetched_bytes`, `errors`, ...);
/// `present_of NAME OBJECT` reads an object's present bytes from the metrics file;
/// `complete_of NAME` counts the objects all present, `COMPLETE/ALL`; `sum_present NAME`
/// adds up the objects' present bytes;
/// `fan_round NAME MNT SMALL BLOB` reads one small file (checked against the host sums),
/// records the counters, reads every file (`verify_tree NAME`), records them again, re-reads
/// everything cold (`NAME-reread`), stops the daemon and checks the mount is gone.
const FAN_SCRIPT_HEAD: &str = r#"
fan_start() {
    _fn=$1
    _fm=$2
    shift 2
    _fc=/data/cache/${FAN_CACHE:-$_fn}
    mkdir -p "$_fm" $_fc
    DLOG=/tmp/$_fn.log
    ${FAN_BIN:-erofs-ondemand} fanotify --cache-dir $_fc --blob-dir $B --mountpoint "$_fm" \
        --metrics /tmp/$_fn.prom "$@" >"$DLOG" 2>&1 &
    DPID=$!
    await_daemon "mount-$_fn" "not mounted" 600 grep -q " $_fm erofs " /proc/mounts
}
settle() { sleep 1; }
# vm_line: the guest's page-cache write-back counters (pages).
vm_line() { grep -E '^(nr_dirtied|nr_written) ' /proc/vmstat | tr '\n' ' '; }
# buddy_line: the free blocks of each order in each zone (/proc/buddyinfo), ZONE:N0,N1,...,
# then pcp:N,N... the pages on each CPU's free list (/proc/zoneinfo), handed out before any block.
buddy_line() {
    awk '{ printf "%s:", $4; for (i = 5; i <= NF; i++) printf "%s%s", $i, (i < NF ? "," : " ") }' /proc/buddyinfo
    awk 'BEGIN { printf "pcp:" } $1 == "count:" { printf "%s%s", (n++ ? "," : ""), $2 }' /proc/zoneinfo
}
# ra_all KB: the readahead of every EROFS mount (file-backed EROFS has a bdi of its own).
ra_all() { for _f in /sys/class/bdi/erofs-*/read_ahead_kb; do echo $1 >$_f; done; }
latency_line() { sed -nE 's/^erofs_ondemand_(read|read_wait|fetch)_duration_seconds_(sum|count) /\1_\2=/p' /tmp/$1.prom | tr '\n' ' '; }
# cpu_line: the daemon's minor faults, user and system time in clock ticks (/proc/PID/stat).
cpu_line() { cut -d' ' -f10,14,15 /proc/$DPID/stat | sed 's/^\([0-9]*\) \([0-9]*\) \([0-9]*\)$/minflt=\1 utime=\2 stime=\3/'; }
# threads_line: each of the daemon's threads as NAME=UTIME+STIME (clock ticks).
threads_line() { cat /proc/$DPID/task/*/stat | awk '{ gsub(/[()]/, "", $2); printf "%s=%d ", $2, $14 + $15 }'; }
metrics_line() { sed -n 's/^erofs_ondemand_\([a-z_]*\)_total \([0-9]*\)$/\1=\2/p' /tmp/$1.prom | tr '\n' ' '; }
present_of() { sed -n "s|^erofs_ondemand_object_present_bytes{object=\"[^\"]*/$2\"} ||p" /tmp/$1.prom; }
sum_present() { sed -n 's/^erofs_ondemand_object_present_bytes{[^}]*} //p' /tmp/$1.prom | awk '{ s += $1 } END { print s + 0 }'; }
complete_of() {
    awk -F'[{}" ]+' '/^erofs_ondemand_object_size_bytes[{]/ { s[$3] = $4 }
        /^erofs_ondemand_object_present_bytes[{]/ { p[$3] = $4 }
        END { n = 0; c = 0; for (k in s) { n++; if (p[k] == s[k]) c++ }; printf "%d/%d", c, n }' /tmp/$1.prom
}
fan_round() {
    _fn=$1
    _fm=$2
    _fs=$3
    _fb=$4
    grep " ./$_fs\$" /vmtest/sums >/tmp/$_fn.one
    check $_fn-small sh -c "cd $_fm && sha256sum -c /tmp/$_fn.one"
    settle
    data ${_fn}_small_stats "$(metrics_line $_fn)"
    data ${_fn}_small_blob_present "$(present_of $_fn $_fb)"
    verify_tree $_fn $_fm
    settle
    data ${_fn}_full_stats "$(metrics_line $_fn)"
    data ${_fn}_full_blob_present "$(present_of $_fn $_fb)"
    data ${_fn}_full_objects "$(complete_of $_fn)"
    # Everything present and unmarked: a cold re-read sends no events.
    drop_caches
    check $_fn-reread sh -c "cd $_fm && sha256sum -c /vmtest/sums"
    settle
    data ${_fn}_reread_stats "$(metrics_line $_fn)"
    stop_daemon daemon-exit-$_fn
    data ${_fn}_summary "$(grep '^erofs-ondemand: opens=' $DLOG)"
    data ${_fn}_rafs "$(grep '^erofs-ondemand: rafs ' $DLOG)"
    check_fails $_fn-unmounted grep -q " $_fm erofs " /proc/mounts
    # What the kernel sent: the range records of the first events, from the debug log.
    grep -m 12 'event pid' $DLOG | sed 's/.*: event/event/'
    data ${_fn}_zero_count_events "$(grep -c 'range Some((.*, 0))' $DLOG)"
}
case $(uname -r) in 7.2.*) pass kernel-7.2 ;; *) fail kernel-7.2 "uname -r: $(uname -r)" ;; esac
"#;

/// The address and page offset of libzstd's `ZSTD_decompressSequences_default` in the static
/// build at `path`, from `nm` (or why not).
fn zstd_offset(path: &Path) -> String {
    let out = match Command::new("nm").arg(path).output() {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => return format!("(nm: {})", o.status),
        Err(e) => return format!("(nm: {e})"),
    };
    String::from_utf8_lossy(&out)
        .lines()
        .find(|l| l.contains(" ZSTD_decompressSequences_default"))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .map_or_else(
            || "(not found)".into(),
            |a| format!("{a:#x} ({:#x})", a % 4096),
        )
}

/// `k=N` from a counters line.
fn field(line: &str, k: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {k} in {line:?}"))
}

#[test]
fn serve_file_backed_mounts_on_7_2() {
    let (Some(mkfs), Some(_), Some(busybox)) = (
        require_tool("mkfs.erofs"),
        require_tool("nydus-image"),
        busybox(),
    ) else {
        return;
    };
    let daemon = tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"]);
    let dir = scratch_dir("vm_fanotify/serve");
    let tree = dir.join("tree");
    dense_tree(&tree);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    // A chunk-based image whose data lives in one blob (device tags left empty: named by
    // --device).
    run(Command::new(&mkfs)
        .arg("--quiet")
        .arg("--chunksize=65536")
        .arg(format!("--blobdev={}", blobs.join("plain.blob").display()))
        .arg(blobs.join("plain.boot"))
        .arg(&tree));
    let plain_blob = std::fs::metadata(blobs.join("plain.blob"))
        .expect("blob")
        .len();
    // A zstd Nydus image: its device is found through the device table's tag (the blob id).
    let blob_id = nydus_zstd(&blobs, "rzstd", &tree).id;
    let zstd_stored = std::fs::metadata(blobs.join(&blob_id))
        .expect("nydus blob")
        .len();
    let script = format!(
        "{DAEMON_PRELUDE}{FAN_SCRIPT_HEAD}\
RUST_LOG=info,ondemand::fanotify=debug fan_start plain /mnt/plain --image plain.boot --device plain.blob --direct-io && \
fan_round plain /mnt/plain sizes/f100 plain.blob
fan_start rzstd /mnt/rzstd --image rzstd --verify-digests && fan_round rzstd /mnt/rzstd sizes/f4097 {blob_id}
"
    );
    let Some(out) = VmRun::new("fanotify-serve")
        .kernel(Kernel::V7_2)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .manifests(&manifests(&busybox, &tree))
        .script(&script)
        .timeout(Duration::from_secs(300))
        .run()
    else {
        return;
    };
    let mut expected = vec!["kernel-7.2".to_string()];
    for n in ["plain", "rzstd"] {
        for c in [
            "mount",
            "small",
            "sums",
            "stats",
            "reread",
            "daemon-exit",
            "unmounted",
        ] {
            expected.push(match c {
                "mount" => format!("mount-{n}"),
                "daemon-exit" => format!("daemon-exit-{n}"),
                _ => format!("{n}-{c}"),
            });
        }
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    out.assert_passed(&expected);
    println!(
        "vm_fanotify: {} checks passed, VM {:.1?} ({})",
        out.passed.len(),
        out.elapsed,
        out.accel
    );
    let zstd_size = {
        let image = erofs_reader::Image::open(blobs.join("rzstd")).expect("bootstrap");
        let rafs = erofs_reader::nydus::RafsMeta::from_image(&image)
            .expect("RAFS")
            .expect("RAFS");
        rafs.blobs()[0].uncompressed_size
    };
    for (n, blob_size) in [("plain", plain_blob), ("rzstd", zstd_size)] {
        let small = out.data(&format!("{n}_small_stats")).unwrap_or_default();
        let full = out.data(&format!("{n}_full_stats")).unwrap_or_default();
        let small_present = out.data_u64(&format!("{n}_small_blob_present"));
        let full_present = out.data_u64(&format!("{n}_full_blob_present"));
        println!("  {n}: blob {blob_size} bytes (as the kernel reads it)");
        println!("    after one small file: {small}; blob present {small_present}");
        println!("    after every file:     {full}; blob present {full_present}");
        println!(
            "    daemon: {}",
            out.data(&format!("{n}_summary")).unwrap_or("?")
        );
        println!(
            "    events with count 0 (opens): {}",
            out.data(&format!("{n}_zero_count_events")).unwrap_or("?")
        );
        // Served lazily: one small file needs a small part of the blob.
        assert!(field(small, "read_requests") > 0, "{n}: {small}");
        assert!(
            small_present < blob_size / 2,
            "{n}: one small file made {small_present} of {blob_size} blob bytes present"
        );
        // Every file read back equal (checked in the guest), with no errors, nothing fetched
        // twice, and more of the blob present than after the small read.
        assert_eq!(field(full, "errors"), 0, "{n}: {full}");
        assert_eq!(field(full, "read_errors"), 0, "{n}: {full}");
        assert!(
            full_present > small_present && full_present <= blob_size,
            "{n}"
        );
        // Every backing file complete, so unmarked: the cold re-read sent no events.
        let reread = out.data(&format!("{n}_reread_stats")).unwrap_or_default();
        let objects = out.data(&format!("{n}_full_objects")).unwrap_or_default();
        println!("    objects unmarked/all: {objects}; after a cold re-read: {reread}");
        if full_present == blob_size {
            assert_eq!(objects, "2/2", "{n}");
            assert_eq!(
                field(reread, "read_requests"),
                field(full, "read_requests"),
                "{n}"
            );
        }
        let summary = out.data(&format!("{n}_summary")).unwrap_or_default();
        assert!(
            field(summary, "fetched_bytes") >= full_present,
            "{n}: {summary}"
        );
    }
    let rafs = out.data("rzstd_rafs").unwrap_or_default();
    println!("  rzstd: {rafs}; the stored blob has {zstd_stored} bytes");
    assert!(field(rafs, "stored_bytes") <= zstd_stored, "{rafs}");
    assert_eq!(
        field(rafs, "chunks_verified"),
        field(rafs, "chunks_decoded"),
        "{rafs}"
    );
    // The plain round's log shows the kernel's event ranges (debug level) on the console.
    let ranges: Vec<&str> = out
        .console
        .lines()
        .filter(|l| l.contains("event pid"))
        .take(12)
        .collect();
    println!("  first events the 7.2 kernel sent for the plain image:");
    for l in ranges {
        println!("    {l}");
    }
}

/// Two workers, two files read at once by two threads: both come back equal to their blobs.
#[test]
fn host_two_workers_serve_concurrent_readers() {
    let Some(h) = Host::new("host-threads") else {
        return;
    };
    let data: Vec<Vec<u8>> = (0..2)
        .map(|i| h.blob(&format!("b{i}"), 20 + i, 3_000_000))
        .collect();
    let daemon = h
        .daemon("cache", h.server())
        .with_readahead(64 * 1024)
        .with_threads(2);
    let paths: Vec<_> = (0..2)
        .map(|i| {
            daemon
                .add_object(b"img", format!("b{i}").as_bytes())
                .expect("add_object")
        })
        .collect();
    let stats = serve(&daemon, |s| {
        let readers: Vec<_> = paths
            .iter()
            .map(|p| {
                s.spawn(move || {
                    // Small reads: many events, interleaved between the two files.
                    let f = std::fs::File::open(p).expect("open");
                    let mut out = vec![0u8; 3_000_000];
                    for (k, chunk) in out.chunks_mut(50_000).enumerate() {
                        f.read_exact_at(chunk, k as u64 * 50_000).expect("read");
                    }
                    out
                })
            })
            .collect();
        for (r, d) in readers.into_iter().zip(&data) {
            assert!(r.join().expect("reader") == *d, "contents differ");
        }
    });
    println!("host, two workers: {stats}");
    assert!(stats.reads >= 2 && stats.errors() == 0, "{stats}");
    assert!(stats.fetched_bytes >= 6_000_000, "{stats}");
}

/// What a test server's fills wait for until the test opens it.
#[derive(Default)]
struct Latch {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Latch {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }

    /// Wait until it is open, at most `limit`.
    fn wait(&self, limit: Duration) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        drop(
            self.opened
                .wait_timeout_while(open, limit, |open| !*open)
                .unwrap_or_else(|p| p.into_inner()),
        );
    }
}

/// Opens the latch when dropped, so a failing assertion does not leave a worker waiting.
struct OpenOnDrop<'a>(&'a Latch);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A server whose reads wait until its latch opens (at most a minute), counting the reads
/// that started.
struct Gate {
    inner: LocalDirServer,
    latch: Latch,
    entered: AtomicUsize,
}

impl OnDemandServer for Gate {
    type Object = <LocalDirServer as OnDemandServer>::Object;

    fn open(
        &self,
        key: &ondemand::ObjectKey<'_>,
    ) -> std::io::Result<ondemand::Opened<Self::Object>> {
        self.inner.open(key)
    }

    fn read_at(&self, object: &Self::Object, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.entered.fetch_add(1, SeqCst);
        self.latch.wait(Duration::from_secs(60));
        self.inner.read_at(object, off, buf)
    }
}

/// A server that streams ([`ondemand::OnDemandServer::fill_streaming`]): it reports the
/// first 64 KiB of each fill final, then holds the rest until the test opens its latch (at
/// most `HOLD`, so a daemon that waits for the whole fill still ends the test, failing it).
struct Streaming {
    inner: LocalDirServer,
    latch: Latch,
    fills: AtomicUsize,
    finished: AtomicUsize,
}

impl Streaming {
    const HOLD: Duration = Duration::from_secs(20);

    fn new(inner: LocalDirServer) -> Self {
        Streaming {
            inner,
            latch: Latch::default(),
            fills: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        }
    }
}

impl OnDemandServer for Streaming {
    type Object = <LocalDirServer as OnDemandServer>::Object;

    fn open(
        &self,
        key: &ondemand::ObjectKey<'_>,
    ) -> std::io::Result<ondemand::Opened<Self::Object>> {
        self.inner.open(key)
    }

    fn read_at(&self, object: &Self::Object, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(object, off, buf)
    }

    fn fill_streaming(
        &self,
        object: &Self::Object,
        off: u64,
        buf: &mut [u8],
        ready: &mut (dyn FnMut(&[u8]) + Send),
    ) -> std::io::Result<()> {
        self.fills.fetch_add(1, SeqCst);
        self.inner.fill(object, off, buf)?;
        ready(&buf[..buf.len().min(64 << 10)]);
        self.latch.wait(Self::HOLD);
        self.finished.fetch_add(1, SeqCst);
        Ok(())
    }
}

/// Issue 14's transport parity: an event whose range a streaming fill has written is allowed
/// then, while the rest of its window is still coming (as cachefiles completes a READ), and
/// an event landing in that rest waits for it instead of fetching it again
/// ([`FanotifyDaemon::with_early_answer`]). Without the early answer the first read returns
/// only once the server's fill ends (after `Streaming::HOLD`).
#[test]
fn host_an_event_is_allowed_once_its_range_is_written() {
    const MIB: u64 = 1 << 20;
    let Some(h) = Host::new("host-early") else {
        return;
    };
    let data = h.blob("blob", 23, 2 * MIB as usize);
    let daemon = h
        .daemon("cache", Streaming::new(h.server()))
        .with_readahead(MIB)
        .with_sequential_ahead(0)
        .with_early_answer(true)
        .with_threads(2);
    let path = daemon.add_object(b"img", b"blob").expect("add_object");
    let server = daemon.server();
    let st = serve(&daemon, |s| {
        let file = std::fs::File::open(&path).expect("open backing file");
        let mut block = [0u8; 4096];
        let t = std::time::Instant::now();
        file.read_exact_at(&mut block, 0).expect("read");
        let took = t.elapsed();
        assert_eq!(&block[..], &data[..4096]);
        // Answered while its window's fill still waits at the latch.
        assert_eq!(
            (server.fills.load(SeqCst), server.finished.load(SeqCst)),
            (1, 0),
            "the event was answered only after its whole window was filled ({took:?})"
        );
        // A read in the rest of that window waits for the same fill.
        let other = file.try_clone().expect("dup");
        let rest = s.spawn(move || {
            let mut block = [0u8; 4096];
            other.read_exact_at(&mut block, MIB / 2).expect("read");
            block
        });
        while daemon.stats().reads < 2 {
            assert!(t.elapsed() < Duration::from_secs(30), "{}", daemon.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !rest.is_finished(),
            "answered before its bytes were written"
        );
        server.latch.open();
        let block = rest.join().expect("reader");
        assert_eq!(&block[..], &data[MIB as usize / 2..][..4096]);
        println!(
            "host, early answer: first read {took:?}; {}",
            daemon.stats()
        );
    });
    assert_eq!(server.fills.load(SeqCst), 1, "{st}");
    assert_eq!(
        (st.fetched_bytes, st.reads, st.errors()),
        (MIB, 2, 0),
        "{st}"
    );
}

/// Events that land in a window another event is filling wait for that fill and are no step
/// of the sequential stream (with `directio` the kernel sends one readahead batch as several
/// requests at once; each used to double the fill ahead, DESIGN.md "Direct I/O, session 9"):
/// two reads of one 1 MiB window, the second made while the first one's fill is held, fetch
/// that window and nothing ahead of it.
#[test]
fn host_an_event_over_a_fill_in_flight_is_no_stream_step() {
    const MIB: u64 = 1 << 20;
    let Some(h) = Host::new("host-inflight") else {
        return;
    };
    let data = h.blob("blob", 29, 4 * MIB as usize);
    // The fill ahead on (the default), the early answer off (the default).
    let daemon = h
        .daemon("cache", Streaming::new(h.server()))
        .with_readahead(MIB)
        .with_threads(2);
    let path = daemon.add_object(b"img", b"blob").expect("add_object");
    let server = daemon.server();
    let st = serve(&daemon, |s| {
        let t = std::time::Instant::now();
        let read_at = |off: u64| {
            let file = std::fs::File::open(&path).expect("open backing file");
            s.spawn(move || {
                let mut block = [0u8; 4096];
                file.read_exact_at(&mut block, off).expect("read");
                block
            })
        };
        // The first read's window, [0, 1 MiB), is held in the server's fill.
        let first = read_at(0);
        while server.fills.load(SeqCst) < 1 {
            assert!(t.elapsed() < Duration::from_secs(10), "{}", daemon.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        // A second read in that window while it is in flight.
        let second = read_at(MIB / 2);
        while daemon.stats().reads < 2 {
            assert!(t.elapsed() < Duration::from_secs(10), "{}", daemon.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.finished.load(SeqCst), 0, "the fill was held");
        server.latch.open();
        assert_eq!(first.join().expect("reader"), data[..4096]);
        assert_eq!(
            second.join().expect("reader"),
            data[MIB as usize / 2..][..4096]
        );
    });
    println!("host, an event over a fill in flight: {st}");
    assert_eq!(server.fills.load(SeqCst), 1, "{st}");
    assert_eq!(
        (st.fetched_bytes, st.ahead_bytes, st.reads, st.errors()),
        (MIB, 0, 2, 0),
        "{st}"
    );
}

/// The fd numbers of the events in progress that the event journal at `path` holds: a
/// 48-byte slot at `fd * 48` (`fanotify/journal.rs`), in use when it starts with the magic
/// 0x45764a6e (host-endian) followed by its own fd number.
fn journaled(path: &Path) -> Vec<i32> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .chunks_exact(48)
        .enumerate()
        .filter(|(i, slot)| {
            slot[..4] == 0x4576_4a6eu32.to_ne_bytes()
                && slot[4..8] == i32::try_from(*i).unwrap().to_ne_bytes()
        })
        .map(|(i, _)| i32::try_from(i).unwrap())
        .collect()
}

/// Failover's journal holds every event the daemon has read, not only the one it serves:
/// two readers' events queued before the only worker starts arrive in one `read(2)`; while
/// the first one's fill waits (the server is held), the second one is journaled too (a
/// successor would answer it if this daemon died now). Once served, the journal is empty.
#[test]
fn host_journal_holds_every_event_read() {
    let Some(h) = Host::new("host-journal") else {
        return;
    };
    let data: Vec<Vec<u8>> = (0..2)
        .map(|i| h.blob(&format!("b{i}"), 40 + i, 200_000))
        .collect();
    let journal = h.dir.join("cache").join(ondemand::fanotify::EVENT_JOURNAL);
    let gate = Gate {
        inner: h.server(),
        latch: Latch::default(),
        entered: AtomicUsize::new(0),
    };
    let daemon = h
        .daemon("cache", gate)
        .with_threads(1)
        .with_event_journal(&journal)
        .expect("journal");
    let paths: Vec<_> = (0..2)
        .map(|i| {
            daemon
                .add_object(b"img", format!("b{i}").as_bytes())
                .expect("add_object")
        })
        .collect();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !done() {
            assert!(t.elapsed() < Duration::from_secs(60), "waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    std::thread::scope(|s| {
        let open_on_drop = OpenOnDrop(&daemon.server().latch);
        let (tids, tid) = std::sync::mpsc::channel();
        let readers: Vec<_> = paths
            .iter()
            .map(|p| {
                let tids = tids.clone();
                s.spawn(move || {
                    let me = std::fs::read_link("/proc/thread-self").expect("thread-self");
                    tids.send(me).expect("send");
                    let mut out = vec![0u8; 200_000];
                    std::fs::File::open(p)
                        .expect("open")
                        .read_exact_at(&mut out, 0)
                        .expect("read");
                    out
                })
            })
            .collect();
        // Both readers blocked in pread64 (17): their events are queued, no worker runs yet.
        for _ in 0..2 {
            let me = tid.recv().expect("tid");
            wait_for("a reader blocked in its event", &|| {
                std::fs::read_to_string(Path::new("/proc").join(&me).join("syscall"))
                    .is_ok_and(|s| s.starts_with("17 "))
            });
        }
        let serving = Serving::start(s, &daemon);
        wait_for("the first fill", &|| {
            daemon.server().entered.load(SeqCst) > 0
        });
        let held = journaled(&journal);
        println!("host, journal while the first fill waits: event fds {held:?}");
        assert_eq!(held.len(), 2, "both events read are journaled: {held:?}");
        drop(open_on_drop);
        for (r, d) in readers.into_iter().zip(&data) {
            assert!(r.join().expect("reader") == *d, "contents differ");
        }
        // Each slot is cleared right after its answer.
        wait_for("the journal to empty", &|| journaled(&journal).is_empty());
        serving.stop();
    });
}

/// `--mount-readahead` reaches the kernel: a file-backed EROFS mount made by
/// `ImageFiles::mount_with_readahead` has a device info of its own (`/sys/class/bdi/erofs-N`,
/// new with the mount) whose `read_ahead_kb` is what was asked, and `ImageFiles::mount_direct`
/// mounts with `directio` and reads right. On the host, no daemon needed: an image without
/// blobs. (The 7.2 VM's figures check the daemon's log line.)
#[test]
fn host_mount_readahead_reaches_the_bdi() {
    let (Some(()), Some(mkfs_erofs)) = (
        require_root("mount(2) needs CAP_SYS_ADMIN"),
        require_tool("mkfs.erofs"),
    ) else {
        return;
    };
    let dir = scratch_dir("vm_fanotify/host-readahead");
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    std::fs::write(tree.join("f"), noise(3, 300_000)).expect("write");
    let image = dir.join("image.erofs");
    run(Command::new(&mkfs_erofs)
        .arg("--quiet")
        .arg(&image)
        .arg(&tree));
    let target = dir.join("mnt");
    std::fs::create_dir_all(&target).expect("mkdir");
    let bdis = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/sys/class/bdi")
            .expect("/sys/class/bdi")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = bdis();
    let files = ondemand::fanotify::ImageFiles {
        image,
        devices: Vec::new(),
    };
    files
        .mount_with_readahead(&target, 4 << 20)
        .expect("file-backed mount");
    let new: Vec<String> = bdis().difference(&before).cloned().collect();
    let kb = new.iter().map(|name| {
        std::fs::read_to_string(format!("/sys/class/bdi/{name}/read_ahead_kb"))
            .expect("read_ahead_kb")
            .trim()
            .to_string()
    });
    let kb: Vec<String> = kb.collect();
    let same = std::fs::read(target.join("f")).expect("read through the mount");
    run(Command::new("umount").arg(&target));
    assert_eq!(new.len(), 1, "one new device info with the mount: {new:?}");
    assert_eq!(kb, ["4096"], "{new:?}");
    assert_eq!(same, std::fs::read(tree.join("f")).expect("read"));
    // `mount_direct`: the same, reading the image with direct I/O (`directio`).
    files
        .mount_direct(&target, 4 << 20)
        .expect("file-backed mount with directio");
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(target.to_str().expect("utf-8")))
        .map(str::to_string);
    let direct = std::fs::read(target.join("f")).expect("read through the mount");
    run(Command::new("umount").arg(&target));
    assert!(
        line.as_deref().is_some_and(|l| l.contains("directio")),
        "{line:?}"
    );
    assert_eq!(direct, std::fs::read(tree.join("f")).expect("read"));
}

/// `fanotify` at parity with `serve`, on the host kernel's ordinary reads of marked files:
/// two readers of one file with four workers fetch no byte twice; a daemon started again on
/// the same cache dir keeps what the first one fetched and fetches none of it again;
/// prefetch fills a file before it is read, so the read has no fill on its path.
#[test]
fn host_dedup_restart_and_prefetch() {
    let len = 6 * 1024 * 1024 + 123;
    let Some(h) = Host::new("host-parity") else {
        return;
    };
    let data = h.blob("blob", 31, len);
    let read_all = |p: &Path, step: usize, upto: usize| {
        let f = std::fs::File::open(p).expect("open");
        let mut out = vec![0u8; upto];
        for (k, chunk) in out.chunks_mut(step).enumerate() {
            f.read_exact_at(chunk, (k * step) as u64).expect("read");
        }
        out
    };
    // Two readers of the first 4 MiB at once, four workers.
    let first = 4 << 20;
    let present = {
        let daemon = h
            .daemon("cache", h.server())
            .with_readahead(128 << 10)
            // No fill ahead: part of the file stays missing for the restart below.
            .with_sequential_ahead(0)
            .with_threads(4);
        assert_eq!(
            daemon.objects().len(),
            0,
            "library default: {} threads",
            ondemand::DEFAULT_THREADS
        );
        let path = daemon.add_object(b"img", b"blob").expect("add_object");
        let stats = serve(&daemon, |s| {
            let readers: Vec<_> = [65536, 40960]
                .into_iter()
                .map(|step| {
                    let path = &path;
                    s.spawn(move || read_all(path, step, first))
                })
                .collect();
            for r in readers {
                let got = r.join().expect("reader");
                let bad = got.iter().zip(&data).position(|(a, b)| a != b);
                assert!(
                    bad.is_none(),
                    "contents differ at {bad:?}: {}",
                    daemon.stats()
                );
            }
        });
        let present = daemon.objects()[0].present;
        println!("host, two readers, four workers: {stats}; present {present}");
        assert_eq!(stats.errors(), 0, "{stats}");
        assert!(present >= first as u64 && present < len as u64, "{present}");
        // Every present byte fetched once (the last block's padding is not counted).
        assert_eq!(
            stats.fetched_bytes, present,
            "a byte was fetched twice: {stats}"
        );
        present
    };
    // Started again on the same cache dir: what is there is kept and not fetched again.
    {
        let daemon = h.daemon("cache", h.server()).with_readahead(128 << 10);
        let path = daemon.add_object(b"img", b"blob").expect("add_object");
        assert_eq!(
            daemon.objects()[0].present,
            present,
            "the scan found it all"
        );
        let stats = serve(&daemon, |_| {
            assert!(read_all(&path, 65536, len) == data, "contents differ");
        });
        println!("host, restarted: {stats}");
        assert_eq!(stats.errors(), 0, "{stats}");
        assert_eq!(
            stats.fetched_bytes,
            len as u64 - present,
            "only what was missing is fetched: {stats}"
        );
    }
    // Prefetch: the whole file is filled before the read, which then fetches nothing.
    {
        let daemon = h
            .daemon("cache-prefetch", h.server())
            .with_prefetch(ondemand::PrefetchConfig::whole_objects());
        let path = daemon.add_object(b"img", b"blob").expect("add_object");
        serve(&daemon, |_| {
            let t = std::time::Instant::now();
            while daemon.stats().prefetched_bytes < len as u64 {
                assert!(t.elapsed() < Duration::from_secs(60), "{}", daemon.stats());
                std::thread::sleep(Duration::from_millis(10));
            }
            let before = daemon.stats();
            assert!(read_all(&path, 65536, len) == data, "contents differ");
            let after = daemon.stats();
            println!("host, prefetched: before the read {before}; after {after}");
            assert_eq!(after.fetched_bytes, 0, "a fill on the read path: {after}");
            assert_eq!(after.prefetched_bytes, len as u64, "{after}");
            assert_eq!(after.errors(), 0, "{after}");
            assert!(!daemon.objects()[0].marked, "complete, so unmarked");
        });
    }
}

/// The failover script's part: a holder, a daemon under it killed with SIGKILL while a reader
/// reads `big.bin`, a successor taking the group over; the reader's result and the tree.
const FAILOVER_SCRIPT: &str = r#"
erofs-ondemand hold --socket /tmp/hold.sock >/tmp/hold.log 2>&1 &
HPID=$!
_i=0
while [ ! -S /tmp/hold.sock ] && [ $_i -lt 200 ]; do sleep 0.05; _i=$((_i + 1)); done
fan_start fo /mnt/fo --image rzstd --threads 1 --supervisor /tmp/hold.sock
(cd /mnt/fo && sha256sum big.bin >/tmp/fo.big 2>/tmp/fo.err; echo $? >/tmp/fo.rc) &
RPID=$!
sleep 0.5
kill -KILL $DPID
wait $DPID 2>/dev/null
data fo_reader_alive_at_kill "$(kill -0 $RPID 2>/dev/null && echo yes || echo no)"
data fo_present_at_kill "$(sum_present fo)"
check fo-mount-stays grep -q " /mnt/fo erofs " /proc/mounts
DLOG=/tmp/fo2.log
erofs-ondemand fanotify --cache-dir /data/cache/fo --blob-dir $B --mountpoint /mnt/fo \
    --metrics /tmp/fo2.prom --image rzstd --supervisor /tmp/hold.sock >$DLOG 2>&1 &
DPID=$!
_i=0
while kill -0 $RPID 2>/dev/null && [ $_i -lt 1200 ]; do sleep 0.1; _i=$((_i + 1)); done
data fo_reader "$(kill -0 $RPID 2>/dev/null && echo hung || echo "done rc=$(cat /tmp/fo.rc) $(cat /tmp/fo.err)")"
_want=$(grep ' ./big.bin$' /vmtest/sums | cut -d' ' -f1)
check fo-reader-sum sh -c "[ \"\$(cut -d' ' -f1 /tmp/fo.big)\" = $_want ]"
verify_tree fo /mnt/fo
settle
data fo2_stats "$(metrics_line fo2)"
stop_daemon daemon-exit-fo2
data fo2_summary "$(grep '^erofs-ondemand: opens=' $DLOG)"
grep -i 'took over\|handed' /tmp/fo.log /tmp/fo2.log
umount /mnt/fo
kill -TERM $HPID
wait $HPID
"#;

/// `fanotify` at parity with `serve` on the 7.2 kernel, with a zstd Nydus RAFS image mounted
/// file-backed:
///
/// - two readers of the whole tree at once with `--threads 4` fetch no byte twice (the bytes
///   fetched equal the bytes present, from the metrics file);
/// - a daemon started again on the same cache dir re-reads the whole tree cold with 0 bytes
///   fetched;
/// - with `--prefetch`, once the files are complete, a cold read of the tree has no fill on
///   its path (no fetch, no event);
/// - a daemon under `hold` (`--supervisor`) killed with SIGKILL while a reader reads a big
///   file is replaced by a successor that takes the fanotify group over: the reader's bytes
///   equal the source (no zeros, no error), and so does the tree.
#[test]
fn parity_and_failover_on_7_2() {
    let (Some(_), Some(busybox)) = (require_tool("nydus-image"), busybox()) else {
        return;
    };
    let daemon = tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"]);
    let dir = scratch_dir("vm_fanotify/parity");
    let tree = dir.join("tree");
    dense_tree(&tree);
    std::fs::write(tree.join("big.bin"), noise(77, 24 << 20)).expect("write big.bin");
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    nydus_zstd(&blobs, "rzstd", &tree);
    let script = format!(
        "{DAEMON_PRELUDE}{FAN_SCRIPT_HEAD}
fan_start par /mnt/par --image rzstd --threads 4
(cd /mnt/par && find . -type f | sort | xargs cat >/dev/null) &
R1=$!
(cd /mnt/par && find . -type f | sort -r | xargs cat >/dev/null) &
R2=$!
wait $R1
wait $R2
verify_tree par /mnt/par
settle
data par_stats \"$(metrics_line par)\"
data par_present \"$(sum_present par)\"
stop_daemon daemon-exit-par
FAN_CACHE=par fan_start re /mnt/re --image rzstd
drop_caches
verify_tree re /mnt/re
settle
data re_stats \"$(metrics_line re)\"
stop_daemon daemon-exit-re
fan_start pf /mnt/pf --image rzstd --prefetch
prefetched() {{ [ \"$(complete_of pf)\" = 2/2 ]; }}
await_daemon pf-complete \"prefetch not complete\" 1200 prefetched
drop_caches
data pf_before \"$(metrics_line pf)\"
verify_tree pf /mnt/pf
settle
data pf_after \"$(metrics_line pf)\"
stop_daemon daemon-exit-pf
{FAILOVER_SCRIPT}"
    );
    let Some(out) = VmRun::new("fanotify-parity")
        .kernel(Kernel::V7_2)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .disk_size(1 << 30)
        .manifests(&manifests(&busybox, &tree))
        .script(&script)
        .timeout(Duration::from_secs(600))
        .run()
    else {
        return;
    };
    println!(
        "vm_fanotify parity: VM {:.1?} ({}); failover: reader alive at the kill: {}, present at the kill {}, reader {}",
        out.elapsed,
        out.accel,
        out.data("fo_reader_alive_at_kill").unwrap_or("?"),
        out.data("fo_present_at_kill").unwrap_or("?"),
        out.data("fo_reader").unwrap_or("?"),
    );
    for k in [
        "par_stats",
        "par_present",
        "re_stats",
        "pf_before",
        "pf_after",
        "fo2_stats",
        "fo2_summary",
    ] {
        println!("  {k}: {}", out.data(k).unwrap_or("?"));
    }
    out.assert_passed(&[
        "kernel-7.2",
        "mount-par",
        "par-sums",
        "par-stats",
        "daemon-exit-par",
        "mount-re",
        "re-sums",
        "re-stats",
        "daemon-exit-re",
        "mount-pf",
        "pf-complete",
        "pf-sums",
        "pf-stats",
        "daemon-exit-pf",
        "mount-fo",
        "fo-mount-stays",
        "fo-reader-sum",
        "fo-sums",
        "fo-stats",
        "daemon-exit-fo2",
    ]);
    let par = out.data("par_stats").unwrap_or_default();
    // Two readers, four workers: every byte present was fetched once.
    assert_eq!(field(par, "errors"), 0, "{par}");
    assert_eq!(
        field(par, "fetched_bytes") + field(par, "prefetched_bytes"),
        out.data_u64("par_present"),
        "a byte was fetched twice: {par}"
    );
    // Restarted on the same cache dir: the whole tree with nothing fetched.
    let re = out.data("re_stats").unwrap_or_default();
    assert_eq!(field(re, "errors"), 0, "{re}");
    assert_eq!(field(re, "fetched_bytes"), 0, "{re}");
    // Prefetched: the cold read fetched nothing and sent no event.
    let (before, after) = (
        out.data("pf_before").unwrap_or_default(),
        out.data("pf_after").unwrap_or_default(),
    );
    assert!(field(before, "prefetched_bytes") > 0, "{before}");
    // (What the mount read before prefetch began was fetched on its path, before.)
    assert_eq!(
        field(after, "fetched_bytes"),
        field(before, "fetched_bytes"),
        "{after}"
    );
    assert_eq!(
        field(after, "read_requests"),
        field(before, "read_requests"),
        "{after}"
    );
    let fo2 = out.data("fo2_stats").unwrap_or_default();
    assert_eq!(field(fo2, "errors"), 0, "{fo2}");
}

/// The `vm.percpu_pagelist_high_fraction` [`figures_fanotify_vs_file_backed`] writes by
/// default: large enough that every CPU's free list is held at the kernel's floor (4 batches,
/// `zone_highsize` in `mm/page_alloc.c`; no auto-tuning once it is set).
const PCP_FLOOR: u64 = 1 << 20;

/// A setting of `erofs-ondemand fanotify` that [`figures_fanotify_vs_file_backed`] measures.
struct FanVariant {
    key: String,
    args: String,
    what: String,
    /// The mount readahead these arguments give (`--mount-readahead`), in KiB.
    readahead_kb: u64,
}

/// The settings [`figures_fanotify_vs_file_backed`] measures; `EROFS_VM_FAN_VARIANTS=KEY=ARGS;
/// KEY=ARGS...` replaces them (for tuning). With `EROFS_VM_FAN_BASELINE=PATH` (another static
/// build of `erofs-ondemand`), variants whose key starts with `base` run that build: a
/// before/after pair from one VM run. `EROFS_VM_FAN_BINARIES=PREFIX=PATH;...` adds more
/// builds, each run by the variants whose key starts with its PREFIX (e.g. a layout control:
/// the baseline's code padded so that libzstd lands where the candidate's does, DESIGN.md
/// "Session 15"; the run prints where each build has libzstd).
fn fan_variants() -> Vec<FanVariant> {
    let variant = |key: &str, args: &str, what: &str| {
        let mut readahead = ondemand::fanotify::MOUNT_READAHEAD;
        let words: Vec<&str> = args.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] == "--mount-readahead" {
                let v = pair[1].to_ascii_uppercase();
                let (n, unit) = match v.strip_suffix('K') {
                    Some(n) => (n, 1 << 10),
                    None => match v.strip_suffix('M') {
                        Some(n) => (n, 1 << 20),
                        None => (v.as_str(), 1),
                    },
                };
                readahead = n.parse::<u64>().expect("--mount-readahead N[K|M]") * unit;
            }
        }
        FanVariant {
            key: key.into(),
            args: args.into(),
            what: what.into(),
            // 0: the kernel's.
            readahead_kb: if readahead == 0 { 128 } else { readahead >> 10 },
        }
    };
    if let Ok(list) = std::env::var("EROFS_VM_FAN_VARIANTS") {
        return list
            .split(';')
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                let (k, args) = v.split_once('=').unwrap_or((v, ""));
                variant(k.trim(), args.trim(), v)
            })
            .collect();
    }
    vec![
        variant(
            "def",
            "",
            "defaults (4 threads, mount readahead 4 MiB, direct I/O)",
        ),
        variant(
            "k128",
            "--mount-readahead 0",
            "the kernel's mount readahead (128 KiB)",
        ),
        variant("t1", "--threads 1", "--threads 1"),
        variant(
            "buf",
            "--buffered-io",
            "--buffered-io (no directio mount, buffered writes)",
        ),
    ]
}

/// A benchmark, not a timed test: in one 7.2 VM run, three rounds (the second in the reverse
/// order) of a cold read of the 48 MiB benchmark tree ([`tests::vm::bench_tree`]) from the
/// uncompressed mkfs.erofs image mounted file-backed, at the kernel's mount readahead and at
/// each variant's, and from the zstd Nydus RAFS image served by `erofs-ondemand fanotify`
/// with each of [`fan_variants`] (a fresh cache dir each time). Prints the throughputs, the
/// ratio of the best of each against file-backed at the kernel's readahead and at the same
/// readahead (target: at least 0.6), and the pre-content events per MiB read. Also prints the
/// floor: the blob's chunks decoded by our decoder alone in the guest (`decode-floor`, on one
/// thread and on two, two passes in each round; then again with every chunk written into a
/// sparse file on the guest's ext4, as a fill writes a backing file) and the peer's time over
/// the two-thread pass, the best ratio any fill path could reach on this guest. Per round it
/// prints the guest's free memory before the read and how the page cache held `access.log`
/// after it ([`memory_line`]: on this kernel, without large folios, a file-backed EROFS
/// request is 16 physically contiguous runs of pages, so the runs set the events' size), and
/// the events' mean size. The guest's per-CPU free lists are held at their floor
/// (`EROFS_VM_FAN_PCP_FRACTION=N` or `N,N,N` for the three rounds, default [`PCP_FLOOR`]; `0`
/// keeps the kernel's auto-tuning) and
/// its memory is `EROFS_VM_FAN_MEMORY_MIB` (default 512). Checks the bytes and that the daemon
/// set its mount's readahead.
#[test]
fn figures_fanotify_vs_file_backed() {
    // `EROFS_VM_FAN_BINARIES=PREFIX=PATH;...`: more static builds, for variants by key prefix;
    // `EROFS_VM_FAN_BASELINE=PATH` is one of them, for the prefix `base`.
    let mut binaries: Vec<(String, PathBuf)> = std::env::var("EROFS_VM_FAN_BINARIES")
        .unwrap_or_default()
        .split(';')
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let (prefix, path) = b
                .split_once('=')
                .expect("EROFS_VM_FAN_BINARIES=PREFIX=PATH;...");
            (prefix.trim().to_string(), PathBuf::from(path.trim()))
        })
        .collect();
    let (Some(_), Some(mkfs_erofs), Some(busybox)) = (
        require_tool("nydus-image"),
        require_tool("mkfs.erofs"),
        busybox(),
    ) else {
        return;
    };
    let daemon = tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"]);
    let floor = tests::vm::static_binary("tests", "decode-floor", &[]);
    let dir = scratch_dir("vm_fanotify/figures");
    let tree = dir.join("tree");
    tests::vm::bench_tree(&tree);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    nydus_zstd(&blobs, "bench", &tree);
    run(Command::new(&mkfs_erofs)
        .arg("--quiet")
        .arg("-b4096")
        .arg(blobs.join("plain.erofs"))
        .arg(&tree));
    let variants = fan_variants();
    if let Some(path) = std::env::var_os("EROFS_VM_FAN_BASELINE") {
        binaries.push(("base".to_string(), PathBuf::from(path)));
    }
    // `EROFS_VM_FAN_LOG=FILTER`: the daemons' RUST_LOG (`ondemand::fanotify=trace` times every
    // event; the logs are in the console log, target/tmp/vm-fanotify-figures/console.log).
    let log_filter = std::env::var("EROFS_VM_FAN_LOG").unwrap_or_else(|_| "info".into());
    // `EROFS_VM_FAN_MEMORY_MIB=N`: the guest's memory (default 512 MiB, as every VM test).
    let memory_mib: u32 = std::env::var("EROFS_VM_FAN_MEMORY_MIB")
        .map(|v| v.parse().expect("EROFS_VM_FAN_MEMORY_MIB=MIB"))
        .unwrap_or(512);
    // `EROFS_VM_FAN_PCP_FRACTION=N`: the guest's vm.percpu_pagelist_high_fraction, written
    // before each round's reads; 0 keeps the kernel's auto-tuned per-CPU free lists, which
    // grow (up to an eighth of memory over the CPUs) when `drop_caches` frees a read's page
    // cache, and hand those pages, physically scattered, to the next read (DESIGN.md,
    // "Session 12"). The default holds each CPU's list at its floor (4 batches: 124 pages in
    // the 512 MiB guest) for the peer and the daemon alike. `N,N,N`: one for each round (a
    // same-VM comparison of the two).
    let pcp_fractions: Vec<u64> = match std::env::var("EROFS_VM_FAN_PCP_FRACTION") {
        Ok(v) => v
            .split(',')
            .map(|n| n.trim().parse().expect("EROFS_VM_FAN_PCP_FRACTION=N[,N,N]"))
            .collect(),
        Err(_) => vec![PCP_FLOOR],
    };
    assert!(
        pcp_fractions.len() == 1 || pcp_fractions.len() == 3,
        "EROFS_VM_FAN_PCP_FRACTION: one value, or one for each of the 3 rounds"
    );
    let pcp_fraction = |r: usize| pcp_fractions[(r - 1) % pcp_fractions.len()];
    let mut script = format!(
        "{DAEMON_PRELUDE}{FAN_SCRIPT_HEAD}
export RUST_LOG='{log_filter}'
mkdir -p /mnt/fb /mnt/fbd
check mount-file-backed vmtool mount erofs $B/plain.erofs /mnt/fb
check mount-file-backed-directio vmtool mount erofs $B/plain.erofs /mnt/fbd directio
ls -lR /mnt/fb /mnt/fbd >/dev/null
"
    );
    // The file-backed peer at the kernel's readahead and at each variant's.
    let mut readaheads: Vec<u64> = variants.iter().map(|v| v.readahead_kb).collect();
    readaheads.push(128);
    readaheads.sort_unstable();
    readaheads.dedup();
    for r in 1..=3 {
        // Round 2 runs everything in the other order, so drift on a loaded host shows.
        let order = |n: usize| -> Vec<usize> {
            if r == 2 {
                (0..n).rev().collect()
            } else {
                (0..n).collect()
            }
        };
        // The round's per-CPU free lists, for the peer and the daemon alike.
        script.push_str(&format!(
            "echo {} >/proc/sys/vm/percpu_pagelist_high_fraction
data pcp_{r} \"$(cat /proc/sys/vm/percpu_pagelist_high_fraction) high marks $(awk '$1 == \"high:\" {{ printf \"%s \", $2 }}' /proc/zoneinfo)\"
",
            pcp_fraction(r)
        ));
        // The peer as a user mounts it (`fb`), and with our mounts' options (`fbd`: directio).
        for ra in order(readaheads.len()).into_iter().map(|i| &readaheads[i]) {
            for fb in ["fb", "fbd"] {
                script.push_str(&format!(
                    "ra_all {ra}
drop_caches
data {fb}{ra}_{r}_buddy \"$(buddy_line)\"
data {fb}{ra}_{r}_vm_before \"$(vm_line)\"
data {fb}{ra}_{r}_guest_before \"$(head -1 /proc/stat)\"
read_tree {fb}{ra}_{r} /mnt/{fb}
data {fb}{ra}_{r}_guest_after \"$(head -1 /proc/stat)\"
data {fb}{ra}_{r}_vm_after \"$(vm_line)\"
data {fb}{ra}_{r}_pages \"$(vmtool pages /mnt/{fb}/access.log)\"
"
                ));
            }
        }
        // The decoder's floor: the blob's chunks decoded by our decoder alone, on one thread
        // and on two (`decode-floor`, two passes of each), beside the peer's rounds.
        script.push_str(&format!(
            "data floor_{r} \"$(decode-floor $B/bench $B 2 /data/floor.bin 2>&1)\"\nrm -f /data/floor.bin\n"
        ));
        for i in order(variants.len()) {
            let FanVariant { key: k, args, .. } = &variants[i];
            let bin = match binaries.iter().find(|(p, _)| k.starts_with(p.as_str())) {
                Some((prefix, _)) => format!("erofs-ondemand-{prefix}"),
                None => "erofs-ondemand".to_string(),
            };
            script.push_str(&format!(
                "FAN_BIN={bin}
fan_start {k}{r} /mnt/{k}{r} --image bench {args}
ls -lR /mnt/{k}{r} >/dev/null
data {k}{r}_readahead \"$(grep -c 'mount readahead set' $DLOG)\"
data {k}{r}_readahead_log \"$(grep 'mount readahead' $DLOG | tr '\\n' ' ')\"
data {k}{r}_bdis \"$(ls /sys/class/bdi | tr '\\n' ' ')\"
_knob=$(sed -n 's|.*(\\(/sys/class/bdi/[^)]*\\)).*|\\1|p' $DLOG | tail -1)
data {k}{r}_ra_kb \"$([ -n \"$_knob\" ] && cat \"$_knob\")\"
drop_caches
settle
data {k}{r}_buddy \"$(buddy_line)\"
data {k}{r}_before \"$(metrics_line {k}{r})\"
data {k}{r}_cpu_before \"$(cpu_line)\"
data {k}{r}_threads_before \"$(threads_line)\"
data {k}{r}_vm_before \"$(vm_line)\"
data {k}{r}_guest_before \"$(head -1 /proc/stat)\"
read_tree {k}{r} /mnt/{k}{r}
data {k}{r}_guest_after \"$(head -1 /proc/stat)\"
data {k}{r}_vm_after \"$(vm_line)\"
data {k}{r}_cpu_after \"$(cpu_line)\"
data {k}{r}_threads_after \"$(threads_line)\"
settle
data {k}{r}_after \"$(metrics_line {k}{r})\"
data {k}{r}_latency \"$(latency_line {k}{r})\"
data {k}{r}_pages \"$(vmtool pages /mnt/{k}{r}/access.log)\"
stop_daemon daemon-exit-{k}{r}
"
            ));
        }
    }
    script.push_str("check fb-sums sh -c \"cd /mnt/fb && sha256sum -c /vmtest/sums\"\n");
    script.push_str("check fbd-sums sh -c \"cd /mnt/fbd && sha256sum -c /vmtest/sums\"\n");
    let mut vm = VmRun::new("fanotify-figures");
    for (prefix, path) in &binaries {
        vm = vm.file(&format!("bin/erofs-ondemand-{prefix}"), path);
    }
    let Some(out) = vm
        .kernel(Kernel::V7_2)
        .memory_mib(memory_mib)
        .file("bin/erofs-ondemand", &daemon)
        .file("bin/decode-floor", &floor)
        .disk_file("blobs", &blobs)
        .disk_size(1 << 30)
        .manifests(&manifests(&busybox, &tree))
        .script(&script)
        .timeout(Duration::from_secs(1200))
        .run()
    else {
        return;
    };
    let mut expected = vec![
        "kernel-7.2".to_string(),
        "mount-file-backed".into(),
        "mount-file-backed-directio".into(),
        "fb-sums".into(),
        "fbd-sums".into(),
    ];
    for r in 1..=3 {
        for v in &variants {
            expected.push(format!("mount-{}{r}", v.key));
            expected.push(format!("daemon-exit-{}{r}", v.key));
        }
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    out.assert_passed(&expected);
    let read = out.data_u64("fb128_1_bytes");
    let mib = read as f64 / (1 << 20) as f64;
    let ns = |k: &str| out.data_u64(&format!("{k}_ns")) as f64;
    let mib_s = |ns: f64| mib / (ns / 1e9);
    let best = tests::vm::best;
    let show = |v: &[f64]| {
        v.iter()
            .map(|&n| format!("{:.0} MiB/s ({:.0} ms)", mib_s(n), n / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "vm_fanotify figures ({} guest, {memory_mib} MiB, VM {:.1?}, host load {}): cold read of the 48 MiB tree ({read} bytes), Linux 7.2",
        out.accel,
        out.elapsed,
        tests::vm::host_load()
    );
    // Where each build has libzstd's sequence decoder: under TCG its offset within a page
    // alone moved the read by up to 15% (DESIGN.md, "Session 15").
    let mut builds = vec![("ours".to_string(), daemon.clone())];
    builds.extend(binaries.iter().cloned());
    let layout: Vec<String> = builds
        .iter()
        .map(|(name, path)| format!("{name} {}", zstd_offset(path)))
        .collect();
    println!(
        "  ZSTD_decompressSequences_default (address, page offset): {}",
        layout.join("; ")
    );
    println!(
        "  vm.percpu_pagelist_high_fraction (0: the kernel's auto-tuning) and the CPUs' free lists' high marks then: round 1 {}; round 2 {}; round 3 {}",
        out.data("pcp_1").unwrap_or_default().trim(),
        out.data("pcp_2").unwrap_or_default().trim(),
        out.data("pcp_3").unwrap_or_default().trim(),
    );
    if let Some(v) = variants.iter().find(|v| v.readahead_kb != 128) {
        println!(
            "  {} round 1: {}; backing device infos then: {}",
            v.key,
            out.data(&format!("{}1_readahead_log", v.key))
                .unwrap_or_default()
                .trim(),
            out.data(&format!("{}1_bdis", v.key)).unwrap_or_default()
        );
    }
    let mut fb_best = std::collections::HashMap::new();
    let mut fb_median = std::collections::HashMap::new();
    // Of three rounds: the middle one (the file-backed peer's rounds alone differ 1.5-2x).
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (fb, how) in [("fb", ""), ("fbd", ", directio")] {
        for ra in &readaheads {
            let t: Vec<f64> = (1..=3).map(|r| ns(&format!("{fb}{ra}_{r}"))).collect();
            let idle: Vec<String> = (1..=3)
                .map(|r| guest_idle(&out, &format!("{fb}{ra}_{r}")))
                .collect();
            println!(
                "  uncompressed mkfs.erofs image, file-backed{how}, mount readahead {ra} KiB: {} (median {:.0} ms; guest CPUs idle {} of the time)",
                show(&t),
                median(&t) / 1e6,
                idle.join(", ")
            );
            for r in 1..=3 {
                println!(
                    "    round {r}: {}",
                    memory_line(&out, &format!("{fb}{ra}_{r}"))
                );
            }
            fb_best.insert((fb, *ra), best(&t));
            fb_median.insert((fb, *ra), median(&t));
        }
    }
    // The floor: the peer's time over the two-thread decode alone bounds the ratio any fill
    // path can reach on this guest.
    let mut passes: [Vec<f64>; 4] = Default::default();
    for r in 1..=3 {
        let line = out.data(&format!("floor_{r}")).unwrap_or_default();
        assert!(
            line.starts_with("chunks="),
            "decode-floor round {r}: {line}"
        );
        // (decode-floor itself checks every chunk decoded to its declared size.)
        assert!(
            field(line, "decoded") * 10 >= read * 9,
            "{line}: read {read}"
        );
        for (name, into) in ["t1_ns", "t2_ns", "w1_ns", "w2_ns"].iter().zip(&mut passes) {
            let list = line
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_default();
            into.extend(list.split(',').filter_map(|n| n.parse::<f64>().ok()));
        }
    }
    assert!(
        passes.iter().all(|p| p.len() == 6),
        "decode-floor passes: {passes:?}"
    );
    let [t1, t2, w1, w2] = &passes;
    let peer = (fb_best[&("fb", 128)], fb_median[&("fb", 128)]);
    let ms = |v: f64| v / 1e6;
    println!(
        "  floor decode-1t {:.0} ms decode-2t {:.0} ms peer {:.0} ms bound {:.2} (best of 6 passes; the peer as a user mounts it, best of 3); medians decode-1t {:.0} ms decode-2t {:.0} ms peer {:.0} ms bound {:.2}",
        ms(best(t1)),
        ms(best(t2)),
        ms(peer.0),
        peer.0 / best(t2),
        ms(median(t1)),
        ms(median(t2)),
        ms(peer.1),
        peer.1 / median(t2),
    );
    println!(
        "  floor with the writes into a sparse file on the guest's ext4 (buffered): decode+write-1t {:.0} ms decode+write-2t {:.0} ms bound {:.2} (best); medians {:.0} ms, {:.0} ms, bound {:.2}; the blob's chunks decoded by BlobSource alone: {}",
        ms(best(w1)),
        ms(best(w2)),
        peer.0 / best(w2),
        ms(median(w1)),
        ms(median(w2)),
        peer.1 / median(w2),
        out.data("floor_1").unwrap_or_default(),
    );
    for v in &variants {
        let k = &v.key;
        let samples: Vec<f64> = (1..=3).map(|r| ns(&format!("{k}{r}"))).collect();
        let mut events = Vec::new();
        let mut inside = Vec::new();
        for r in 1..=3 {
            let before = out.data(&format!("{k}{r}_before")).unwrap_or_default();
            let after = out.data(&format!("{k}{r}_after")).unwrap_or_default();
            assert_eq!(
                out.data_u64(&format!("{k}{r}_bytes")),
                read,
                "{k} round {r}"
            );
            assert_eq!(field(after, "errors"), 0, "{after}");
            // The daemon set the mount's readahead when it was asked to.
            assert_eq!(
                out.data_u64(&format!("{k}{r}_readahead")),
                u64::from(v.readahead_kb != 128),
                "{k} round {r}: 'mount readahead set' lines in the daemon's log: {:?}",
                out.data(&format!("{k}{r}_readahead_log"))
            );
            if v.readahead_kb != 128 {
                // The knob the daemon named holds what it wrote (the mount's erofs-N bdi,
                // found among the bdis listed here).
                assert_eq!(
                    out.data_u64(&format!("{k}{r}_ra_kb")),
                    v.readahead_kb,
                    "{k} round {r}: {:?}; bdis {:?}",
                    out.data(&format!("{k}{r}_readahead_log")),
                    out.data(&format!("{k}{r}_bdis"))
                );
            }
            let n = field(after, "read_requests") - field(before, "read_requests");
            let asked = field(after, "requested_bytes") - field(before, "requested_bytes");
            events.push(n);
            inside.push(format!(
                "{}; events of {:.0} KiB mean; {}",
                daemon_figures(&out, &format!("{k}{r}")),
                asked as f64 / n.max(1) as f64 / 1024.0,
                memory_line(&out, &format!("{k}{r}"))
            ));
        }
        // Against the peer as a user mounts it (the kernel's readahead, buffered), and
        // against the peer with this variant's mount options (its readahead; directio unless
        // --buffered-io, the default since session 10: a baseline build (`base*`) is taken to
        // be older, directio only with --direct-io).
        let direct = if v.key.starts_with("base") {
            v.args.contains("--direct-io")
        } else {
            !v.args.contains("--buffered-io")
        };
        let same = if direct { "fbd" } else { "fb" };
        let ratio = |fb: &'static str, ra: u64| {
            (
                fb_best[&(fb, ra)] / best(&samples),
                fb_median[&(fb, ra)] / median(&samples),
            )
        };
        let (user_best, user_median) = ratio("fb", 128);
        let (same_best, same_median) = ratio(same, v.readahead_kb);
        let mut sorted = events.clone();
        sorted.sort_unstable();
        println!(
            "  zstd RAFS through erofs-ondemand fanotify, {}: {} (median {:.0} ms); {user_best:.2} of the file-backed speed as a user mounts it (kernel's readahead, buffered), {same_best:.2} of file-backed with the same mount options ({} KiB{}) (best against best; target >= 0.6); median against median {user_median:.2} and {same_median:.2}; pre-content events {events:?} ({:.1} per MiB read, the median round)",
            v.what,
            show(&samples),
            median(&samples) / 1e6,
            v.readahead_kb,
            if same == "fbd" { ", directio" } else { "" },
            sorted[sorted.len() / 2] as f64 / mib,
        );
        for (r, line) in inside.iter().enumerate() {
            println!("    round {}: {line}", r + 1);
        }
    }
}

/// Where one figures round's time went inside the daemon: per event, the mean time from its
/// read to its answer; how many events waited for a fill in flight (and how long); the time
/// spent in the server's fills; the daemon's CPU time (user, system) and minor faults
/// during the read; the share of the guest's CPU time that was idle.
fn daemon_figures(out: &tests::vm::VmOutcome, key: &str) -> String {
    let get = |what: &str, name: &str| -> f64 {
        out.data(&format!("{key}_{what}"))
            .unwrap_or_default()
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let ms = |sum: f64, n: f64| if n > 0.0 { sum / n * 1e3 } else { 0.0 };
    let cpu = |name: &str| get("cpu_after", name) - get("cpu_before", name);
    // CPU per thread during the read (ticks of 10 ms), threads that used none left out.
    let threads = |what: &str| -> std::collections::BTreeMap<String, i64> {
        out.data(&format!("{key}_threads_{what}"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect()
    };
    let before = threads("before");
    let per_thread: Vec<String> = threads("after")
        .into_iter()
        .map(|(k, v)| (v - before.get(&k).copied().unwrap_or(0), k))
        .filter(|(v, _)| *v > 0)
        .map(|(v, k)| format!("{k} {:.2}", v as f64 / 100.0))
        .collect();
    format!(
        "event to answer {:.2} ms mean, {} waited for a fill in flight ({:.1} ms mean); fills {:.0} ms in {}; daemon CPU user {:.2} s, system {:.2} s ({}), {} minor faults; guest CPUs idle {}",
        ms(get("latency", "read_sum"), get("latency", "read_count")),
        get("latency", "read_wait_count"),
        ms(
            get("latency", "read_wait_sum"),
            get("latency", "read_wait_count")
        ),
        get("latency", "fetch_sum") * 1e3,
        get("latency", "fetch_count"),
        cpu("utime") / 100.0,
        cpu("stime") / 100.0,
        per_thread.join(", "),
        cpu("minflt"),
        guest_idle(out, key),
    )
}

/// The guest's free memory before the read `key` (`KEY_buddy`: `/proc/buddyinfo`, free blocks
/// per order) and how the page cache held `access.log` after it (`KEY_pages`: `vmtool pages`):
/// free MiB in all, in blocks of 64 KiB (order 4) and more, of 1 MiB (order 8) and more (the
/// pages on the CPUs' free lists, `pcp:`, are listed, not counted); the
/// file's cached pages, their physically contiguous runs and the mean run (a file-backed EROFS
/// request is at most 16 such runs: 16 pages for 64 KiB requests) and the pages in large
/// folios.
fn memory_line(out: &tests::vm::VmOutcome, key: &str) -> String {
    let buddy = out.data(&format!("{key}_buddy")).unwrap_or_default();
    let (mut free, mut o4, mut o8) = (0u64, 0u64, 0u64);
    for zone in buddy.split_whitespace().filter(|z| !z.starts_with("pcp:")) {
        let counts = zone.split_once(':').map_or("", |(_, c)| c);
        for (order, n) in counts.split(',').enumerate() {
            let pages = n.parse::<u64>().unwrap_or(0) << order;
            free += pages;
            if order >= 4 {
                o4 += pages;
            }
            if order >= 8 {
                o8 += pages;
            }
        }
    }
    let pages = out.data(&format!("{key}_pages")).unwrap_or_default();
    if !pages.starts_with("pages=") {
        return format!(
            "free {} MiB ({}); vmtool pages: {pages:?}",
            free / 256,
            buddy.trim()
        );
    }
    let (cached, runs) = (field(pages, "cached"), field(pages, "runs"));
    format!(
        "free {} MiB, {} MiB in blocks >= 64 KiB, {} MiB >= 1 MiB ({}); access.log {cached}/{} pages cached in {runs} contiguous runs ({:.1} pages mean), {} in large folios",
        free / 256,
        o4 / 256,
        o8 / 256,
        buddy.trim(),
        field(pages, "pages"),
        cached as f64 / runs.max(1) as f64,
        field(pages, "large"),
    )
}

/// The share of the guest's CPU time (both vCPUs, `/proc/stat`) that was idle during the read
/// `key` (`KEY_guest_before`, `KEY_guest_after`): near 0 means the read was CPU-bound; then
/// where the rest went (user, system, iowait, softirq) and how much page cache was dirtied
/// and written back meanwhile (`KEY_vm_before`, `KEY_vm_after`: `/proc/vmstat`).
fn guest_idle(out: &tests::vm::VmOutcome, key: &str) -> String {
    let ticks = |what: &str| -> Vec<u64> {
        out.data(&format!("{key}_guest_{what}"))
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    let (before, after) = (ticks("before"), ticks("after"));
    if before.len() < 5 || after.len() != before.len() {
        return "?".into();
    }
    let delta: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = delta.iter().sum();
    // Fields: user nice system idle iowait irq softirq ... (clock ticks of 10 ms).
    let idle = delta[3] + delta[4];
    if total == 0 {
        return "?".into();
    }
    let s = |i: usize| delta.get(i).copied().unwrap_or(0) as f64 / 100.0;
    // The page cache written back during the read (the backing files' dirty pages).
    let vm = |what: &str, name: &str| -> u64 {
        out.data(&format!("{key}_vm_{what}"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .chunks_exact(2)
            .find(|kv| kv[0] == name)
            .and_then(|kv| kv[1].parse().ok())
            .unwrap_or(0)
    };
    let pages = |name: &str| vm("after", name).saturating_sub(vm("before", name)) as f64 / 256.0;
    format!(
        "{:.0}% (user {:.2} s, system {:.2} s, iowait {:.2} s, softirq {:.2} s; {:.1} MiB dirtied, {:.1} MiB written back)",
        idle as f64 * 100.0 / total as f64,
        s(0) + s(1),
        s(2),
        s(4),
        s(6),
        pages("nr_dirtied"),
        pages("nr_written"),
    )
}
