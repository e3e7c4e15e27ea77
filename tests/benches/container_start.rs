//! Container start, end to end, in the test VMs: how long from a cold node until a Python
//! program in the image does useful work, with the image in a registry behind an emulated
//! network link (issue 14).
//!
//! ```text
//! cargo bench -p tests --bench container_start
//! ```
//!
//! - **The image**: a Debian rootfs with `python3` built from Debian packages
//!   ([`tests::rootfs::DebianRootfs`], cached under `target/debian-rootfs`; with the
//!   stdlib's bytecode, as installed Debian has it), pushed with
//!   skopeo to Debian's docker-registry in four forms: `targz` (one OCI `tar+gzip` layer),
//!   `nydus` (Nydus RAFS v6, zstd, nydus-image's 1 MiB chunks: bootstrap + blob layer),
//!   `nydus-c256k` (the same with 256 KiB chunks), `erofs` (one containerd native EROFS
//!   layer, `mkfs.erofs --tar=f`). Every form's image config says `"Cmd":
//!   ["/usr/bin/python3"]` (as Docker's python images declare what they run; read by the
//!   daemon's `--predict-entrypoint`).
//! - **The workload**: `chroot ROOTFS /usr/bin/python3 -c 'import asyncio, json, sqlite3,
//!   email, http.server, ssl; print("ready")'`; "ready" ends the clock, which starts before
//!   the pull (or the daemon) starts.
//! - **The link**: the registry runs on the host, on 127.0.0.1 (a remote machine, as a real
//!   registry is: its CPU is not the guest's). Each link is a delaying, rate-limiting TCP
//!   proxy on the host's 127.0.0.1 in front of it ([`tests::netem`]: half the round trip
//!   each way, the rate in each direction shared by all connections); the guest reaches it
//!   over qemu's user network ([`VmRun::user_net`]) at `10.0.2.2:PORT`. Links:
//!   `20ms-200mbit` and `2ms-1gbit`.
//! - **Scenarios**, each from a cold cache (caches dropped, a fresh cache directory, a fresh
//!   daemon) and settled memory (below): `full-pull` (`oci-pull`, `src/bin/oci-pull.rs`: download every layer, gunzip,
//!   untar, then start), `cachefiles` (Linux 6.12, `erofs-ondemand serve --image`, Nydus),
//!   `erofs-layers` (6.12, the same with the EROFS layer), `nydusd` (6.12: nydusd 2.2 as
//!   nydus-snapshotter runs it: `oci-pull bootstrap` fetches the bootstrap layer, then
//!   `nydusd singleton --fscache` with its registry backend through the same link serves
//!   the `nydus` image, [`tests::nydusd`]), `chunk256k` and `chunk256k-ra256k` (6.12, our
//!   daemon on `nydus-c256k` with the default 1 MiB readahead window and with
//!   `--readahead 256K`), `fanotify` and `fanotify-chunk256k` (Linux 7.2,
//!   `erofs-ondemand fanotify --image`), `replay` (6.12: a cold start with `--record` writes
//!   the trace, then a cold start on a fresh cache with `--prefetch-list` of it).
//!   `full-pull` runs in both VMs, so every lazy figure has its peer from the same VM.
//! - **The floors**: the workload timed on its own, beside the starts, printed as
//!   `floor <name> <link> ms <ms> workload-cpu user <ms> sys <ms> ms [k v ...]` (see
//!   [`FLOORS`]): on the full pull's tree `fresh` (its first start, inside the full pull's
//!   time: the files in the page cache, python's code new to the emulator), `warm` (once
//!   more, everything cached: what the guest's CPU alone costs; also `warm_<link>`) and
//!   `disk-cold` (once more after drop_caches: ext4's reads and the code translated
//!   afresh); with `replay` run, after the recording run: `cached` (a fresh daemon on the
//!   recording run's cache dir, which holds every byte python read: our mount with nothing
//!   to fetch and no prefetch beside python; `cached-warm` is that mount once more,
//!   `cached-reads` the READs both sent) and `replay-idle` (a replay on a fresh cache,
//!   python started once the trace's prefetch is done: `waited` ms after the mount).
//! - **Settled memory**: before every scenario and floor the guest syncs and drops its
//!   caches; with `CONTAINER_START_SCRUB=1` (off by default) it then writes every free page
//!   once (`vmtool scrub 64`: one populated anonymous mapping of all but 64 MB of
//!   `MemFree`, unmapped again), outside the clock. Under qemu
//!   TCG a scenario's leftovers slowed the next one: the lazy start right after the full
//!   pull (whose floors run python three times) mounted 0.1-0.4 s late, its kernel work
//!   (cachefiles' volume directories) and the daemon's bootstrap walk both CPU-bound and
//!   slower, with no disk I/O and no dirty data left (`settle` lines); on a fresh boot
//!   (`CONTAINER_START_FULL_PULL=0`) the first lazy start was not late, and with the scrub
//!   it was not late after the full pull either (DESIGN.md, "The first lazy start of a run
//!   (session 13)"). What the scrub removes is, as far as measured, the emulator's: qemu's
//!   translations of the code earlier programs ran from pages the guest has freed since
//!   (inferred, not traced). It also touches every page of guest RAM once (qemu allocates
//!   the host's memory on first touch: before the first scenario the scrub takes ~3 s
//!   instead of ~1.3 s, a cost the full pull's untar paid before). On real hardware the
//!   scrub changes nothing. Its effect on the scenarios' totals points both ways and is
//!   within the run-to-run spread (DESIGN.md), so it is opt-in. The
//!   `settle_<scenario>_<link>` lines: `Dirty`,`Writeback` kB before the sync, the sync,
//!   drop and scrub times, `MemFree` after the drop.
//! - **The warm-up**: after each full pull, before the timed scenarios, one untimed lazy
//!   start of our daemon (`warmup`: the kernel's transport, the `nydus` image, default
//!   flags; counted in no scenario, its `phases warmup` line printed first). The lazy start
//!   right after the full pull mounted late (above), whichever it was; the warm-up takes
//!   that place, so every timed scenario is a second or later one, in either order
//!   (DESIGN.md, "The first lazy start of a run"). `CONTAINER_START_WARMUP=0` leaves it out.
//! - **Counted** at the registry, in its access log read on the host: the guest requests
//!   `/v2/_mark/begin-SCENARIO-LINK` and `/v2/_mark/end-SCENARIO-LINK` straight from the
//!   registry (not through a link) around each scenario, and the requests and body bytes
//!   between the two marks are the scenario's (the end mark follows the daemon's exit, so
//!   background fetches that finish after "ready" count too).
//!
//! Output: per VM a table and one line per scenario and link,
//! `start <scenario> <link> ready <ms> ms fetched <bytes> bytes requests <n>`
//! ([`tests::start_result`]), for each lazy scenario where its time went,
//! `phases <scenario> <link> manifest <ms> bootstrap <ms> mount <ms> mounted <ms> first-read
//! <ms> last-read <ms> ready <ms> ms reads <n> reads-wall <ms> ms in <n> fetches-wall <ms> ms
//! in <n> daemon-cpu user <ms> sys <ms> ms workload-cpu user <ms> sys <ms> ms guest-idle
//! <pct>%` (milestones after the daemon's start, see
//! [`phases_line`]; nydusd's are `bootstrap daemon-up mounted ready`), then the ratios issue
//! 14 names, and a plot (`target/container_start.png`).
//!
//! The clock of a lazy start stops waiting for the mount when the daemon says it is up
//! (`--ready-fd 3` on a FIFO the script reads: the wait of a runtime or a supervisor; a
//! build without the flag, an older baseline, is polled in /proc/mounts every 10 ms).
//!
//! Settings: `CONTAINER_START_BASELINE=PATH` puts another (static) build of
//! `erofs-ondemand` in the guest, which variants named `baseline*` run instead
//! (`CONTAINER_START_VARIANTS='baseline='`: a before/after pair from one VM run);
//! `CONTAINER_START_DAEMON_LOG=1` logs our daemons at debug (every fill and
//! registry request; with `CONTAINER_START_DUMP=1` to keep the logs);
//! `CONTAINER_START_PLOT_FROM=FILE` only re-draws the plot from a saved run's
//! output; `CONTAINER_START_PACKAGES` (the root packages, default [`ROOTS`]),
//! `CONTAINER_START_KERNELS` (`6.12,7.2`), `CONTAINER_START_LINKS`
//! (`20ms-200mbit,2ms-1gbit`: `<rtt>ms-<rate>mbit|gbit`); `CONTAINER_START_ONLY`,
//! `CONTAINER_START_VARIANTS` and `CONTAINER_START_REVERSE` (see `lazy_scenarios`);
//! `CONTAINER_START_DUMP=1` copies each lazy scenario's daemon log, the kernel's log since
//! the scenario before (with `KMARK` lines: the clock's start and the mount seen, in
//! milliseconds since the epoch, on the kernel's clock) and the recorded trace to the VM's
//! console log (`target/tmp/vm-container-start-*/console.log`), to study;
//! `CONTAINER_START_SAMPLE=1` (with `_DUMP=1`) samples the guest every 10 ms for the first
//! 1.5 s of each lazy start (`vmtool sample`: CPU jiffies, the disk's completed I/Os, every
//! running or blocked task with its kernel wait point; `SAMPLE` lines);
//! `CONTAINER_START_FULL_PULL=0` leaves the full pull out (the lazy scenarios on a fresh
//! boot; no ratios); `CONTAINER_START_SCRUB=1` and `CONTAINER_START_WARMUP=0` (above).
//!
//! The VMs run under software emulation (qemu TCG) on a shared machine: absolute times are
//! those of a slow, loaded computer; compare the ratios.

use std::path::Path;
use std::time::Duration;

use tests::netem::{self, LinkSpec};
use tests::nydusd::{self, Backend, Image};
use tests::oci_images;
use tests::oci_layout::{OciLayout, Platform};
use tests::registry::{AccessEntry, Registry};
use tests::rootfs::DebianRootfs;
use tests::skopeo::Skopeo;
use tests::start_result::{self, StartResult};
use tests::vm::{GUEST_HOST, Kernel, VmOutcome, VmRun};

/// The default root packages: python3 (whose closure has what the workload imports) and a
/// minimal Debian base, about 150 MB unpacked.
const ROOTS: &str = "python3 base-files base-passwd bash coreutils dash debianutils \
                     diffutils findutils grep gzip hostname libc-bin login mawk sed tar \
                     util-linux ncurses-base perl-base";

/// The workload's Python program.
const WORKLOAD: &str = "import asyncio, json, sqlite3, email, http.server, ssl; print(\"ready\")";

/// The images' tags in the registry: `nydus-c256k` is the `nydus` image with 256 KiB chunks
/// instead of nydus-image's 1 MiB (`--chunk-size 0x40000`).
const TAGS: [&str; 4] = ["targz", "nydus", "erofs", "nydus-c256k"];

/// The image (tag) a scenario starts from.
fn scenario_tag(scenario: &str) -> &'static str {
    match scenario {
        "full-pull" => "targz",
        "erofs-layers" => "erofs",
        s if s.contains("chunk256k") => "nydus-c256k",
        _ => "nydus",
    }
}

/// An emulated link: its name, the shape of its proxy.
#[derive(Clone, Debug)]
struct Link {
    name: String,
    spec: LinkSpec,
}

/// `20ms-200mbit` → a 20 ms round trip (10 ms each way), 200 Mbit/s each way.
fn parse_link(name: &str) -> Link {
    let parsed = (|| {
        let (rtt, rate) = name.split_once("ms-")?;
        let rtt: f64 = rtt.parse().ok()?;
        let bits_per_sec = match (rate.strip_suffix("mbit"), rate.strip_suffix("gbit")) {
            (Some(m), _) => m.parse::<f64>().ok()? * 1e6,
            (_, Some(g)) => g.parse::<f64>().ok()? * 1e9,
            _ => return None,
        };
        Some((rtt, bits_per_sec))
    })();
    let Some((rtt, bits_per_sec)) = parsed else {
        panic!("link {name:?}: want <rtt>ms-<rate>mbit|gbit")
    };
    Link {
        name: name.to_string(),
        spec: LinkSpec {
            rtt: Duration::from_secs_f64(rtt / 1000.0),
            bytes_per_sec: (bits_per_sec / 8.0) as u64,
        },
    }
}

/// The daemon's log filter: the READs at debug, with millisecond times (the phases).
const PHASES_LOG: &str = "info,ondemand::session=debug";

/// With `CONTAINER_START_DAEMON_LOG=1`: also the engine's fills, every registry request and
/// whether its connection was new or pooled.
const DEBUG_LOG: &str = concat!(
    "info,erofs_ondemand=debug,ondemand=debug,oci_lazy=debug,",
    "ureq::pool=debug,ureq::unversioned::transport::tcp=debug"
);

/// `CONTAINER_START_DAEMON_LOG=1`: our daemons log at debug (see the logs with
/// `CONTAINER_START_DUMP=1`).
fn debug_log() -> bool {
    flag("CONTAINER_START_DAEMON_LOG", false)
}

/// The guest's shell functions.
const SCRIPT_HEAD: &str = r#"
WORKLOAD='@WORKLOAD@'
MARK_URL=http://@GUEST_HOST@:@REG_PORT@/v2/_mark
now() { oci-pull now; }
# mark NAME: a request straight to the host's registry (not through a link), so its access
# log, read on the host after the run, is cut into scenarios.
mark() { wget -q -O /dev/null "$MARK_URL/$1" >/dev/null 2>&1; true; }
# cold: sync, drop the caches, then (with CONTAINER_START_SCRUB=1) write every free page
# once, so no scenario meets the translated code of an earlier one in the pages it gets
# (qemu TCG; see the module doc). SETTLE says what was left to write (Dirty, Writeback kB
# of /proc/meminfo before the sync), how long each step took and what was free.
cold() {
    _s0=$(now)
    _dw=$(grep -E '^(Dirty|Writeback):' /proc/meminfo | tr -s ' ' | cut -d' ' -f2 | tr '\n' ,)
    sync
    _s1=$(now)
    echo 3 >/proc/sys/vm/drop_caches
    _s2=$(now)
    _free=$(grep '^MemFree:' /proc/meminfo | tr -s ' ' | cut -d' ' -f2)
    _sc=
    if [ -n "@SCRUB@" ] && ! _sc=$(vmtool scrub 64 2>&1); then
        fail "settle-$LINK" "vmtool scrub: $_sc"
    fi
    _s3=$(now)
    SETTLE="dirty_wb_kb=${_dw%,} sync_ms=$((_s1 - _s0)) drop_ms=$((_s2 - _s1)) free_kb=$_free scrub_ms=$((_s3 - _s2)) $_sc"
    [ -n "@DUMP@" ] && echo "KMARK cold done at $_s2" >/dev/kmsg
    true
}
# Python seeds its hashes with the kernel's random numbers, and the rootfs has no
# /dev/urandom to fall back on: a start before the guest's CRNG is seeded failed ("failed to
# get random numbers"). A blocking read of /dev/random waits for it (the kernel gathers
# jitter entropy meanwhile), before any clock starts.
head -c 1 /dev/random >/dev/null
# Whether a build says when its mount is up (`--ready-fd`); one that does not (an older
# baseline) is watched in /proc/mounts instead. Asked once, outside every clock.
READY_OURS=
erofs-ondemand serve --help 2>/dev/null | grep -q -e --ready-fd && READY_OURS=1
READY_BASE=
command -v erofs-ondemand-baseline >/dev/null &&
    erofs-ondemand-baseline serve --help 2>/dev/null | grep -q -e --ready-fd && READY_BASE=1
# use_link NAME PORT: the scenarios that follow pull through the host's link proxy on PORT.
use_link() {
    LINK=$1
    HOST=@GUEST_HOST@:$2
    REF=$HOST/start
    export OCI_PULL_INSECURE=$HOST
}
# cpu_now: the guest's busy and idle (with iowait) jiffies since boot, `BUSY,IDLE`.
cpu_now() {
    read -r _c _u _n _s _i _w _q _sq _st _rest </proc/stat
    echo "$((_u + _n + _s + _q + _sq + _st)),$((_i + _w))"
}
# proc_cpu PID: the user and system jiffies PID (all its threads) used, `USER,SYS`.
proc_cpu() { set -- $(cat /proc/$1/stat 2>/dev/null); echo "${14},${15}"; }
# children_cpu VAR: VAR=USER,SYS, the jiffies of this shell's reaped children (the workload).
# /proc/self read by the shell itself: a $(...) would read the subshell's, and $$ is the
# script's first shell, which may not be the one that waits.
children_cpu() {
    read -r _st </proc/self/stat
    _var=$1
    set -- $_st
    eval "$_var=\${16},\${17}"
}
# metric NAME FILE: the value of a Prometheus line `NAME VALUE` in FILE (the daemon's
# --metrics), or nothing.
metric() { grep -m1 -e "^$1 " "$2" 2>/dev/null | cut -d' ' -f2; }
# logged PATTERN: the time of the daemon log's first line with PATTERN (env_logger's
# `[2026-12-06T08:20:00.123Z ...`), or nothing.
logged() { grep -m1 -e "$1" $DLOG | cut -c2-25; }
# workload ROOT: the container's start; prints what python printed.
workload() { chroot "$1" /usr/bin/python3 -c "$WORKLOAD" 2>&1; }
# result SCENARIO T0 T1 OUTPUT
result() {
    if [ "$4" = ready ]; then
        pass "$1-$LINK"
        data "start_$1_$LINK" "ms=$(($3 - $2))"
    else
        fail "$1-$LINK" "the workload printed: $4"
    fi
}
full_pull() {
    rm -rf /data/pull
    cold
    data "settle_full-pull_$LINK" "$SETTLE"
    mark "begin-full-pull-$LINK"
    _t0=$(now)
    if _o=$(oci-pull pull $REF:targz /data/pull/rootfs /data/pull/content 2>&1); then
        # The first start on the fresh tree: its files in the page cache (just written),
        # python's code new to the emulator.
        floor fresh /data/pull/rootfs
        _t1=$(now)
        mark "end-full-pull-$LINK"
        result full-pull $_t0 $_t1 "$_fo"
        data pulled_$LINK "$_o"
        # The floor: the same start again, everything local and in the page cache.
        floor warm /data/pull/rootfs
        data warm_$LINK "ms=$_fms printed=$_fo"
        # Again after drop_caches: ext4's buffered reads from the disk, the code translated
        # afresh.
        cold
        floor disk-cold /data/pull/rootfs
    else
        mark "end-full-pull-$LINK"
        fail full-pull-$LINK "oci-pull: $_o"
    fi
    rm -rf /data/pull
    [ -n "@DUMP@" ] && dmesg -c | sed "s/^/DMESG full-pull-$LINK: /"
    true
}
# mounted MNT TRIES: wait (10 ms a try, at most TRIES) until MNT is in /proc/mounts while
# the daemon DPID lives; nonzero if it died or the tries ran out.
mounted() {
    _i=0
    while ! grep -q " $1 " /proc/mounts; do
        _i=$((_i + 1))
        if [ $_i -gt $2 ] || ! kill -0 $DPID 2>/dev/null; then
            return 1
        fi
        usleep 10000
    done
}
# floor NAME ROOT [MORE]: the workload once on ROOT, timed from here, with its CPU:
# data floor_NAME_LINK (the bench's `floor` lines); _fo what it printed, _fms its time.
floor() {
    children_cpu _f0
    _ft0=$(now)
    _fo=$(workload $2)
    _ft1=$(now)
    children_cpu _f1
    _fms=$((_ft1 - _ft0))
    data "floor_$1_$LINK" "ms=$_fms workload0=$_f0 workload1=$_f1 printed=$_fo $3"
}
# floor_daemon NAME CACHE FLAGS: our daemon on CACHE (a cache dir, kept) with FLAGS, after
# drop_caches; returns once mounted (DPID, DLOG, _mnt set).
floor_daemon() {
    _mnt=/mnt/floor-$1-$LINK
    mkdir -p $_mnt $2
    cold
    DLOG=/tmp/floor-$1-$LINK.log
    RUST_LOG=@DAEMON_LOG@ erofs-ondemand serve --cache-dir $2 --image $REF:nydus \
        --insecure-registry $HOST --mountpoint $_mnt $3 >$DLOG 2>&1 &
    DPID=$!
    if ! mounted $_mnt 6000; then
        fail "floor-$1-$LINK" "not mounted: $(cat $DLOG)"
        return 1
    fi
}
# lazy_floors: after `record` (its cache dir kept: every byte python read, nothing else),
# python over our cachefiles mount with nothing to fetch: `cached` (a fresh daemon on that
# cache dir, drop_caches before it: the cache files' direct reads and fresh code, no fetch,
# no prefetch beside it), `cached-warm` (the same mount again: its page cache full), and
# `replay-idle` (a replay on a fresh cache, python started once the trace's prefetch is
# done).
lazy_floors() {
    _rc=/data/cache/record-$LINK
    if floor_daemon cached $_rc "--readahead 0 --sequential-ahead 0 --predict-file 0 --predict-dir 0"; then
        floor cached $_mnt
        floor cached-warm $_mnt "cached-reads=$(grep -c -e 'READ msg ' $DLOG)"
        stop_daemon floor-exit-cached-$LINK
    fi
    rm -rf $_rc
    if floor_daemon replay-idle /data/cache/floor-replay-$LINK "--prefetch-list /data/trace-$LINK"; then
        _i=0
        # Every object's plan queued is done.
        while [ $_i -lt 600 ]; do
            _q=$(grep -c 'prefetch: queued ' $DLOG)
            [ "$_q" -gt 0 ] && [ "$(grep -c 'prefetch: object .* done' $DLOG)" -ge "$_q" ] && break
            _i=$((_i + 1))
            usleep 50000
        done
        usleep 200000
        floor replay-idle $_mnt "waited=$((_i * 50)) reads=$(grep -c -e 'READ msg ' $DLOG)"
        stop_daemon floor-exit-replay-idle-$LINK
    fi
    rm -rf /data/cache/floor-replay-$LINK
}
# run_daemon BIN CMD TAG FLAGS: BIN CMD --image REF:TAG FLAGS on $_mnt, $_cache, $_prom
# (run in the background: the subshell becomes the daemon, so `$!` is its pid).
run_daemon() {
    export RUST_LOG=@DAEMON_LOG@
    exec $1 $2 --cache-dir $_cache --image $REF:$3 --insecure-registry $HOST \
        --mountpoint $_mnt --metrics $_prom $4
}
# lazy SCENARIO CMD TAG [FLAGS]: erofs-ondemand CMD --image REF:TAG FLAGS, then the
# workload on its mount; the scenario ends (for the registry's count) when the daemon stopped.
# The mount's start is the daemon's word (`--ready-fd 3` on a FIFO: the wait of a runtime
# or a supervisor), or, for a build without it, its mount seen in /proc/mounts.
lazy() {
    _mnt=/mnt/$1-$LINK
    _cache=/data/cache/$1-$LINK
    _fifo=/tmp/ready-$1-$LINK
    mkdir -p $_mnt $_cache
    rm -f $_fifo && mkfifo $_fifo
    cold
    data "settle_$1_$LINK" "$SETTLE"
    mark "begin-$1-$LINK"
    DLOG=/tmp/$1-$LINK.log
    _cpu0=$(cpu_now)
    _t0=$(now)
    [ -n "@DUMP@" ] && echo "KMARK $1-$LINK t0 $_t0" >/dev/kmsg
    # READs logged (debug) with millisecond times: the phases of the start.
    # --metrics: the READs' and fetches' summed wall time.
    _prom=/tmp/$1-$LINK.prom
    # CONTAINER_START_SAMPLE=1: what the guest does, every 10 ms for 1.5 s (`vmtool sample`).
    [ -n "@SAMPLE@" ] && vmtool sample 10 1500 >/tmp/sample-$1-$LINK &
    # Scenarios named baseline* run another build (CONTAINER_START_BASELINE).
    case $1 in
        baseline*) _bin=erofs-ondemand-baseline _rfd=$READY_BASE ;;
        *) _bin=erofs-ondemand _rfd=$READY_OURS ;;
    esac
    if [ -n "$_rfd" ]; then
        run_daemon $_bin $2 $3 "$4 --ready-fd 3" >$DLOG 2>&1 3>$_fifo &
        DPID=$!
        # A line once mounted; end-of-file if the daemon failed first.
        _ready=$(ready_line $_fifo 600)
    else
        run_daemon $_bin $2 $3 "$4" >$DLOG 2>&1 &
        DPID=$!
        mounted $_mnt 60000 && _ready=READY=1 || _ready=
    fi
    if [ "$_ready" != READY=1 ]; then
        mark "end-$1-$LINK"
        fail "$1-$LINK" "not mounted: $(cat $DLOG)"
        return 1
    fi
    _tm=$(now)
    [ -n "@DUMP@" ] && echo "KMARK $1-$LINK mounted $_tm" >/dev/kmsg
    children_cpu _w0
    _out=$(workload $_mnt)
    _t1=$(now)
    _cpu1=$(cpu_now)
    children_cpu _w1
    _d=$(proc_cpu $DPID)
    if [ -n "@DUMP@" ]; then
        # Per thread: name, user and system jiffies at "ready".
        for _t in /proc/$DPID/task/*; do
            echo "THREAD $1-$LINK: $(cat $_t/comm) $(cut -d' ' -f14,15 $_t/stat)"
        done
    fi
    # The metrics file is rewritten every 500 ms (not at exit): wait for one after "ready".
    usleep 700000
    _m=$_prom
    _dur=erofs_ondemand_read_duration_seconds
    _metrics="read_sum=$(metric ${_dur}_sum $_m) read_count=$(metric ${_dur}_count $_m) \
fetch_sum=$(metric erofs_ondemand_fetch_duration_seconds_sum $_m) \
fetch_count=$(metric erofs_ondemand_fetch_duration_seconds_count $_m)"
    stop_daemon daemon-exit-$1-$LINK
    mark "end-$1-$LINK"
    result $1 $_t0 $_t1 "$_out"
    data "totals_$1_$LINK" "$(grep '^erofs-ondemand: registry ' $DLOG)"
    data "phases_$1_$LINK" "t0=$_t0 mounted=$_tm ready=$_t1 \
manifest=$(logged ': manifest ') bootstrap=$(logged ' bootstrap of ') \
mount=$(logged '] mounted ') first_read=$(logged 'READ msg ') \
last_read=$(grep -e 'READ msg ' $DLOG | tail -1 | cut -c2-25) \
reads=$(grep -c -e 'READ msg ' $DLOG) daemon_cpu=$_d cpu0=$_cpu0 cpu1=$_cpu1 \
workload0=$_w0 workload1=$_w1 $_metrics"
    if [ -n "@DUMP@" ]; then
        # CONTAINER_START_DUMP=1: the daemon's log and the trace on the console, to study.
        sed "s/^/DUMP $1-$LINK: /" $DLOG
        dmesg -c | sed "s/^/DMESG $1-$LINK: /"
        [ -n "@SAMPLE@" ] && sed "s/^/SAMPLE $1-$LINK: /" /tmp/sample-$1-$LINK
        [ "$1" = record ] && sed "s/^/TRACE $LINK: /" /data/trace-$LINK
    fi
    # The recording run's cache is the `cached` floor's (lazy_floors removes it).
    [ "$1" = record ] || rm -rf $_cache
    rm -f $_m
}
# nydusd_start: nydusd 2.2 as nydus-snapshotter runs it: the bootstrap layer pulled first,
# then `nydusd singleton --fscache` with the registry backend through the link, mounted by
# the kernel, the workload on the mount.
nydusd_start() {
    _mnt=/mnt/nydusd-$LINK
    cold
    data "settle_nydusd_$LINK" "$SETTLE"
    mark "begin-nydusd-$LINK"
    _cpu0=$(cpu_now)
    _t0=$(now)
    if ! _o=$(oci-pull bootstrap $REF:nydus /data/nydusd.boot 2>&1); then
        mark "end-nydusd-$LINK"
        fail "nydusd-$LINK" "oci-pull bootstrap: $_o"
        return 1
    fi
    _tb=$(now)
    nydusd_up /tmp/nydusd-$LINK.log /etc/nydusd-$LINK.json || { mark "end-nydusd-$LINK"; return 1; }
    _tu=$(now)
    nydusd_mount start $_mnt
    _tm=$(now)
    children_cpu _w0
    _out=$(workload $_mnt)
    _t1=$(now)
    _cpu1=$(cpu_now)
    children_cpu _w1
    _d=$(proc_cpu $NPID)
    umount $_mnt
    nydusd_down nydusd-exit-$LINK
    mark "end-nydusd-$LINK"
    result nydusd $_t0 $_t1 "$_out"
    data "phases_nydusd_$LINK" "t0=$_t0 bootstrap=$_tb daemon_up=$_tu mounted=$_tm \
ready=$_t1 daemon_cpu=$_d cpu0=$_cpu0 cpu1=$_cpu1 workload0=$_w0 workload1=$_w1"
    data "nydusd_log_$LINK" "$(grep -ci error /tmp/nydusd-$LINK.log) error lines"
    rm -rf /data/nydusd-cache /data/nydusd.boot
}
"#;

/// What one scenario runs in the guest.
#[derive(Clone, Debug)]
enum Run {
    /// `erofs-ondemand CMD --image REF:TAG FLAGS` (`@TRACE@` in FLAGS: the link's trace file).
    Ours {
        cmd: &'static str,
        tag: &'static str,
        flags: String,
    },
    /// nydusd 2.2 with its registry backend ([`tests::nydusd`]), the `nydus` image.
    Nydusd,
}

/// What the VM of one kernel runs after the full pull. `record` (not a result of its own)
/// is a cold start that writes the trace `replay` then prefetches from at mount time, on a
/// fresh cache. On cachefiles the recording run has no readahead or fill ahead: the kernel
/// sends no READ for what those already wrote, so the trace would miss it.
///
/// `CONTAINER_START_ONLY=NAME,...` keeps only these (and `record` with a replay);
/// `CONTAINER_START_VARIANTS=NAME=FLAGS;...` adds scenarios of our daemon on the `nydus`
/// image (on `nydus-c256k` for a NAME with `chunk256k` in it, as [`scenario_tag`] says)
/// with more flags (`serve` on 6.12, `fanotify` on 7.2; `@TRACE@` is the trace of
/// `record`), to compare settings in one run; `CONTAINER_START_REVERSE=1` runs the lazy
/// scenarios in the reverse order (the full pull still first).
fn lazy_scenarios(kernel: Kernel) -> Vec<(String, Run)> {
    let ours = |cmd, tag, flags: &str| Run::Ours {
        cmd,
        tag,
        flags: flags.to_string(),
    };
    let mut all = match kernel {
        Kernel::V6_12 => vec![
            ("cachefiles", ours("serve", "nydus", "")),
            ("erofs-layers", ours("serve", "erofs", "")),
            ("nydusd", Run::Nydusd),
            ("chunk256k", ours("serve", "nydus-c256k", "")),
            (
                "chunk256k-ra256k",
                ours("serve", "nydus-c256k", "--readahead 256K"),
            ),
            (
                RECORD,
                ours(
                    "serve",
                    "nydus",
                    "--record @TRACE@ --readahead 0 --sequential-ahead 0 --predict-file 0 --predict-dir 0",
                ),
            ),
            ("replay", ours("serve", "nydus", "--prefetch-list @TRACE@")),
        ],
        Kernel::V7_2 => vec![
            ("fanotify", ours("fanotify", "nydus", "")),
            ("fanotify-chunk256k", ours("fanotify", "nydus-c256k", "")),
        ],
    }
    .into_iter()
    .map(|(n, r)| (n.to_string(), r))
    .collect::<Vec<_>>();
    let cmd = daemon_cmd(kernel);
    if let Ok(v) = std::env::var("CONTAINER_START_VARIANTS") {
        for spec in v.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, flags) = spec
                .split_once('=')
                .unwrap_or_else(|| panic!("CONTAINER_START_VARIANTS: {spec:?} is not NAME=FLAGS"));
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "CONTAINER_START_VARIANTS: name {name:?} (letters, digits, '-')"
            );
            all.push((name.to_string(), ours(cmd, scenario_tag(name), flags)));
        }
    }
    if let Ok(only) = std::env::var("CONTAINER_START_ONLY") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        let replays = all.iter().any(|(n, r)| {
            only.contains(&n.as_str())
                && matches!(r, Run::Ours { flags, .. } if flags.contains("--prefetch-list"))
        });
        all.retain(|(n, _)| only.contains(&n.as_str()) || (n == RECORD && replays));
    }
    if flag("CONTAINER_START_REVERSE", false) {
        // The other order, to see drift in a loaded machine; the trace is still recorded
        // before its first replay.
        all.reverse();
        if let Some(r) = all.iter().position(|(n, _)| n == RECORD) {
            let record = all.remove(r);
            let first_replay = all
                .iter()
                .position(|(_, run)| matches!(run, Run::Ours { flags, .. } if flags.contains("--prefetch-list")))
                .unwrap_or(all.len());
            all.insert(first_replay, record);
        }
    }
    all
}

/// Our daemon's command on `kernel`: `serve` (cachefiles) on 6.12, `fanotify` on 7.2.
fn daemon_cmd(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::V6_12 => "serve",
        Kernel::V7_2 => "fanotify",
    }
}

/// The untimed lazy start after each full pull ([`warmup_runs`]).
const WARMUP: &str = "warmup";

/// Whether an untimed lazy start of our daemon (the kernel's transport, the `nydus` image,
/// default flags; counted nowhere) runs after each full pull of `kernel`, before the timed
/// scenarios: when there is a full pull and a lazy scenario of ours after it, unless
/// `CONTAINER_START_WARMUP=0`. Under qemu TCG the first lazy start after the full pull
/// (whose three python runs leave their code in pages the guest frees) mounted 0.1-0.7 s
/// late, whichever scenario it was, ours or a variant, and the ones after it did not
/// (DESIGN.md, "The first lazy start of a run (session 13)"): with the warm-up taking that
/// place, every timed scenario starts as the second or later, in either order.
fn warmup_runs(kernel: Kernel) -> bool {
    full_pull_runs()
        && flag("CONTAINER_START_WARMUP", true)
        && lazy_scenarios(kernel)
            .iter()
            .any(|(_, r)| matches!(r, Run::Ours { .. }))
}

/// Whether the full pull runs: unless `CONTAINER_START_FULL_PULL=0` (the lazy scenarios on a
/// fresh boot, to see what the full pull leaves them).
fn full_pull_runs() -> bool {
    flag("CONTAINER_START_FULL_PULL", true)
}

/// An on/off setting: whether `NAME` is `1` (unset: `default`).
fn flag(name: &str, default: bool) -> bool {
    std::env::var_os(name).map_or(default, |v| v == "1")
}

/// [`flag`] for the guest script: `"1"` or `""` (the script tests `[ -n "@KNOB@" ]`).
fn knob(name: &str, default: bool) -> &'static str {
    if flag(name, default) { "1" } else { "" }
}

/// The recording run of `record`/`replay`: timed and counted, not a scenario of the table.
const RECORD: &str = "record";

fn kernel_name(k: Kernel) -> &'static str {
    match k {
        Kernel::V6_12 => "6.12",
        Kernel::V7_2 => "7.2",
    }
}

/// The links as the host runs them: each a delaying, rate-limiting proxy on 127.0.0.1 in
/// front of the registry ([`tests::netem`]); the guest reaches it over qemu's user network.
struct HostLink {
    link: Link,
    proxy: netem::Link,
}

fn run_vm(kernel: Kernel, reg: &Registry, links: &[HostLink], storage_bytes: u64) -> VmOutcome {
    let daemon = tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"]);
    let puller = tests::vm::static_binary("tests", "oci-pull", &[]);
    let mut script = format!(
        "{}{}{}",
        tests::vm::DAEMON_PRELUDE,
        nydusd::GUEST_NYDUSD,
        SCRIPT_HEAD
            .replace("@WORKLOAD@", WORKLOAD)
            .replace("@GUEST_HOST@", GUEST_HOST)
            .replace("@REG_PORT@", &reg.addr().port().to_string())
            .replace("@DUMP@", knob("CONTAINER_START_DUMP", false))
            .replace("@SAMPLE@", knob("CONTAINER_START_SAMPLE", false))
            .replace("@SCRUB@", knob("CONTAINER_START_SCRUB", false))
            .replace(
                "@DAEMON_LOG@",
                if debug_log() { DEBUG_LOG } else { PHASES_LOG }
            )
    );
    let mut expected = vec!["net-up".to_string()];
    let mut run = VmRun::new(&format!("container-start-{}", kernel_name(kernel)))
        .kernel(kernel)
        .user_net()
        .memory_mib(1024)
        .file("bin/erofs-ondemand", &daemon)
        .file("bin/oci-pull", &puller);
    let scenarios = lazy_scenarios(kernel);
    match std::env::var_os("CONTAINER_START_BASELINE") {
        Some(path) => run = run.file("bin/erofs-ondemand-baseline", Path::new(&path)),
        None => assert!(
            !scenarios.iter().any(|(s, _)| s.starts_with("baseline")),
            "scenarios named baseline* need CONTAINER_START_BASELINE=PATH (another erofs-ondemand build)"
        ),
    }
    if scenarios.iter().any(|s| matches!(s.1, Run::Nydusd)) {
        run = nydusd::into_guest(run);
    }
    for HostLink { link, proxy } in links {
        let port = proxy
            .host()
            .rsplit_once(':')
            .expect("HOST:PORT")
            .1
            .to_string();
        script.push_str(&format!("use_link {} {port}\n", link.name));
        if full_pull_runs() {
            script.push_str("full_pull\n");
            expected.push(format!("full-pull-{}", link.name));
            // An untimed lazy start after the full pull, so that no timed one pays for what
            // the full pull's python runs left in the emulator (`warmup`).
            if warmup_runs(kernel) {
                let cmd = daemon_cmd(kernel);
                script.push_str(&format!("lazy {WARMUP} {cmd} nydus \"\"\n"));
                expected.push(format!("daemon-exit-{WARMUP}-{}", link.name));
                expected.push(format!("{WARMUP}-{}", link.name));
            }
        }
        for (scenario, what) in &scenarios {
            match what {
                Run::Ours { cmd, tag, flags } => {
                    let flags = flags.replace("@TRACE@", &format!("/data/trace-{}", link.name));
                    script.push_str(&format!("lazy {scenario} {cmd} {tag} \"{flags}\"\n"));
                    expected.push(format!("daemon-exit-{scenario}-{}", link.name));
                    if scenario == RECORD && kernel == Kernel::V6_12 {
                        script.push_str("lazy_floors\n");
                        for f in ["cached", "replay-idle"] {
                            expected.push(format!("floor-exit-{f}-{}", link.name));
                        }
                    }
                }
                Run::Nydusd => {
                    let config = nydusd::config(&[Image::new(
                        "start",
                        "/data/nydusd.boot",
                        Backend::Registry {
                            host: format!("{GUEST_HOST}:{port}"),
                            repo: "start".into(),
                        },
                    )]);
                    run = run.bytes(
                        &format!("etc/nydusd-{}.json", link.name),
                        config.as_bytes(),
                        0o644,
                    );
                    script.push_str("nydusd_start\n");
                    expected.push("nydusd-up".into());
                    expected.push("nydusd-mount-start".into());
                    expected.push(format!("nydusd-exit-{}", link.name));
                }
            }
            expected.push(format!("{scenario}-{}", link.name));
        }
    }
    // A full pull's layer and rootfs, and the lazy caches.
    let disk = storage_bytes * 3 + (1 << 30);
    let out = run
        .disk_size(disk)
        .script(&script)
        .timeout(Duration::from_secs(3600))
        .run()
        .expect("qemu");
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    out.assert_passed(&expected);
    out
}

/// `(requests, body bytes)` the registry served between the guest's marks `begin-NAME` and
/// `end-NAME` (the marks themselves not counted).
fn counted(log: &[AccessEntry], name: &str) -> Option<(u64, u64)> {
    let at = |m: String| log.iter().position(|e| e.target == m);
    let begin = at(format!("/v2/_mark/begin-{name}"))?;
    let end = at(format!("/v2/_mark/end-{name}"))?;
    Some(
        log[begin + 1..end]
            .iter()
            .filter(|e| !e.target.starts_with("/v2/_mark/"))
            .fold((0, 0), |(n, b), e| (n + 1, b + e.bytes)),
    )
}

/// `k=N` from a counters line.
fn field(line: &str, k: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {k} in {line:?}"))
}

fn results(
    out: &VmOutcome,
    log: &[AccessEntry],
    kernel: Kernel,
    links: &[Link],
) -> Vec<StartResult> {
    let mut scenarios: Vec<String> = full_pull_runs()
        .then(|| "full-pull".to_string())
        .into_iter()
        .collect();
    scenarios.extend(
        lazy_scenarios(kernel)
            .into_iter()
            .map(|s| s.0)
            .filter(|s| s != RECORD),
    );
    let mut res = Vec::new();
    for link in links {
        for s in &scenarios {
            let name = format!("{s}-{}", link.name);
            let line = out
                .data(&format!("start_{s}_{}", link.name))
                .unwrap_or_else(|| panic!("no result for {name}\n{}", out.report()));
            let (requests, fetched) = counted(log, &name)
                .unwrap_or_else(|| panic!("no marks of {name} in the registry's access log"));
            res.push(StartResult {
                scenario: s.to_string(),
                link: link.name.clone(),
                ready_ms: field(line, "ms"),
                fetched,
                requests,
            });
        }
    }
    res
}

/// The milestones of a start, in order, as the guest's `phases_SCENARIO_LINK` data names
/// them and as the `phases` line prints them: our daemon's log (`manifest` resolved,
/// Nydus `bootstrap` fetched, `mount` done, `first_read`/`last_read` the kernel's first and
/// last READ), nydusd's steps (`bootstrap` pulled, `daemon_up`), and the script's own
/// (`mounted`: our daemon said so on `--ready-fd`, or, for nydusd and a build without the
/// flag, the mount was seen in /proc/mounts; the workload started; `ready` printed).
const MILESTONES: [&str; 8] = [
    "manifest",
    "bootstrap",
    "daemon_up",
    "mount",
    "mounted",
    "first_read",
    "last_read",
    "ready",
];

/// Milliseconds since the Unix epoch of a guest time: `now`'s milliseconds, or env_logger's
/// `2026-12-06T08:20:00.123Z`.
fn epoch_ms(t: &str) -> Option<i64> {
    if let Ok(ms) = t.parse() {
        return Some(ms);
    }
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let num = |s: &str| s.parse::<i64>().ok();
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let mut c = time.splitn(3, ':');
    let (h, min, sec) = (num(c.next()?)?, num(c.next()?)?, c.next()?);
    let (sec, milli) = sec.split_once('.').unwrap_or((sec, "0"));
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + min) * 60 + num(sec)?) * 1000 + num(milli)?)
}

/// A guest data line's `k=v` words.
struct Kv<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Kv<'a> {
    fn parse(data: &'a str) -> Self {
        Kv(data
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect())
    }

    /// The value of `k`.
    fn get(&self, k: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    /// `k=A,B` as two numbers.
    fn pair(&self, k: &str) -> Option<(i64, i64)> {
        let (a, b) = self.get(k)?.split_once(',')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// The `phases` line of a scenario from its guest data: each milestone in milliseconds after
/// the start (`-` when the log has none), the daemon's user and system CPU, the workload's
/// (python, from the script's reaped children) and the guest's idle share over the whole start
/// (all its CPUs: with two, a busy one and an idle one are 50%); for our daemon also the summed
/// wall time of its READs (read to completed) and of its fetches (`--metrics`).
/// `/proc`'s times are in USER_HZ (100 per second) ticks.
fn phases_line(scenario: &str, link: &str, data: &str) -> String {
    let kv = Kv::parse(data);
    let get = |k: &str| kv.get(k);
    let pair = |k: &str| kv.pair(k);
    let t0 = get("t0").and_then(epoch_ms);
    let mut line = format!("phases {scenario} {link}");
    for m in MILESTONES {
        if let Some(v) = get(m) {
            let at = t0.zip(epoch_ms(v)).map(|(a, b)| b - a);
            match at {
                Some(ms) => line.push_str(&format!(" {} {ms}", m.replace('_', "-"))),
                None => line.push_str(&format!(" {} -", m.replace('_', "-"))),
            }
        }
    }
    line.push_str(" ms");
    if let Some(n) = get("reads") {
        line.push_str(&format!(" reads {n}"));
    }
    for (name, sum, count) in [
        ("reads-wall", "read_sum", "read_count"),
        ("fetches-wall", "fetch_sum", "fetch_count"),
    ] {
        let secs = get(sum).and_then(|v| v.parse::<f64>().ok());
        if let (Some(secs), Some(n)) = (secs, get(count)) {
            line.push_str(&format!(" {name} {:.0} ms in {n}", secs * 1000.0));
        }
    }
    let ms = |ticks: i64| ticks * 10;
    if let Some((u, s)) = pair("daemon_cpu") {
        line.push_str(&format!(" daemon-cpu user {} sys {} ms", ms(u), ms(s)));
    }
    if let (Some((u0, s0)), Some((u1, s1))) = (pair("workload0"), pair("workload1")) {
        line.push_str(&format!(
            " workload-cpu user {} sys {} ms",
            ms(u1 - u0),
            ms(s1 - s0)
        ));
    }
    if let (Some((b0, i0)), Some((b1, i1))) = (pair("cpu0"), pair("cpu1")) {
        let (busy, idle) = (b1 - b0, i1 - i0);
        if busy + idle > 0 {
            line.push_str(&format!(
                " guest-idle {:.0}%",
                idle as f64 * 100.0 / (busy + idle) as f64
            ));
        }
    }
    line
}

/// The floors the guest measures beside the starts (`floor NAME ROOT` in the script), in
/// the order printed: the full pull's tree `fresh` (its first start: files in the page
/// cache, python's code new to the emulator), `warm` (run again), `disk-cold` (again after
/// drop_caches); our mount with nothing to fetch `cached` (a fresh daemon on the recording
/// run's cache dir), `cached-warm` (that mount again) and `replay-idle` (a replay, python
/// started once the trace's prefetch is done).
const FLOORS: [&str; 6] = [
    "fresh",
    "disk-cold",
    "warm",
    "cached",
    "cached-warm",
    "replay-idle",
];

/// The `floor` line of one floor from its guest data (`ms=N workload0=U,S workload1=U,S
/// printed=... [k=v ...]`): `floor <name> <link> ms <ms> workload-cpu user <ms> sys <ms> ms`,
/// then the other `k=v` pairs as `k v` (`cached-reads`, `waited`, `reads`).
fn floor_line(name: &str, link: &str, data: &str) -> String {
    let kv = Kv::parse(data);
    let get = |k: &str| kv.get(k);
    let pair = |k: &str| kv.pair(k);
    let mut line = format!("floor {name} {link} ms {}", get("ms").unwrap_or("-"));
    if let (Some((u0, s0)), Some((u1, s1))) = (pair("workload0"), pair("workload1")) {
        line.push_str(&format!(
            " workload-cpu user {} sys {} ms",
            (u1 - u0) * 10,
            (s1 - s0) * 10
        ));
    }
    if get("printed") != Some("ready") {
        line.push_str(" (not ready)");
    }
    for (k, v) in &kv.0 {
        if !["ms", "workload0", "workload1", "printed"].contains(k) {
            line.push_str(&format!(" {k} {v}"));
        }
    }
    line
}

/// The ratios of issue 14's goals; `image_bytes` is the unpacked rootfs, `sizes` the sum
/// of each form's layers by tag.
fn print_ratios(res: &[StartResult], image_bytes: u64, sizes: &[(&str, u64)], links: &[Link]) {
    let t = |r: &StartResult| r.ready_ms;
    for link in links {
        let l = link.name.as_str();
        let lazies = res
            .iter()
            .filter(|r| r.link == l && r.scenario != "full-pull");
        for r in lazies {
            let lazy = r.scenario.as_str();
            if let Some(q) = start_result::ratio(res, (lazy, l), ("full-pull", l), t) {
                println!(
                    "ratio {l}: {lazy} ready / full-pull ready = {q:.2} (goal at 20ms-200mbit: <= 0.3)"
                );
            }
            let tag = scenario_tag(lazy);
            let layers = sizes.iter().find(|s| s.0 == tag).map_or(0, |s| s.1);
            println!(
                "ratio {l}: {lazy} fetched / unpacked rootfs = {:.3} (goal <= 0.15), \
                 / its image's layers ({tag}, {layers} bytes) = {:.3}",
                r.fetched as f64 / image_bytes as f64,
                r.fetched as f64 / layers.max(1) as f64
            );
        }
        if let Some(q) = start_result::ratio(res, ("cachefiles", l), ("nydusd", l), t) {
            println!("ratio {l}: cachefiles ready / nydusd ready = {q:.2} (goal <= 0.8)");
        }
        if let Some(q) = start_result::ratio(res, ("replay", l), ("cachefiles", l), t) {
            println!("ratio {l}: replay ready / cachefiles ready = {q:.2} (goal <= 0.7)");
        }
    }
}

/// The start lines of a saved run's output, per VM (`--- Linux K` opens a VM's section).
fn saved_results(text: &str) -> Vec<(&'static str, Vec<StartResult>)> {
    text.split("--- Linux ")
        .skip(1)
        .map(|sec| {
            let k = if sec.starts_with("6.12") {
                "6.12"
            } else {
                "7.2"
            };
            (k, start_result::parse_all(sec))
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let png = tests::workspace_root().join("target/container_start.png");
    if let Ok(saved) = std::env::var("CONTAINER_START_PLOT_FROM") {
        // Re-draw the plot from a saved run's output, without running anything.
        let text = std::fs::read_to_string(&saved).unwrap_or_else(|e| panic!("{saved}: {e}"));
        let all = saved_results(&text);
        let mut links: Vec<Link> = Vec::new();
        for r in all.iter().flat_map(|(_, rs)| rs) {
            if !links.iter().any(|l| l.name == r.link) {
                links.push(parse_link(&r.link));
            }
        }
        plot(&png, &all, &links).unwrap_or_else(|e| panic!("plot: {e}"));
        println!("plot: {}", png.display());
        return;
    }
    let roots = std::env::var("CONTAINER_START_PACKAGES").unwrap_or_else(|_| ROOTS.into());
    let roots: Vec<&str> = roots.split_whitespace().collect();
    let kernels: Vec<Kernel> = std::env::var("CONTAINER_START_KERNELS")
        .unwrap_or_else(|_| "6.12,7.2".into())
        .split(',')
        .map(|k| match k.trim() {
            "6.12" => Kernel::V6_12,
            "7.2" => Kernel::V7_2,
            other => panic!("CONTAINER_START_KERNELS: unknown kernel {other:?}"),
        })
        .collect();
    let links: Vec<Link> = std::env::var("CONTAINER_START_LINKS")
        .unwrap_or_else(|_| "20ms-200mbit,2ms-1gbit".into())
        .split(',')
        .map(|l| parse_link(l.trim()))
        .collect();

    let rootfs = DebianRootfs::build(&roots).expect("apt-get and dpkg-deb");
    println!(
        "rootfs: {} packages, {:.1} MB of file data in {}",
        rootfs.packages.len(),
        rootfs.bytes as f64 / 1e6,
        rootfs.dir.display()
    );
    let reg = Registry::plain("container_start").expect("docker-registry");
    let dir = reg.dir().to_path_buf();
    let skopeo = Skopeo::new(&dir.join("skopeo")).expect("skopeo");
    // What the image runs, as Docker's python images declare it (the entrypoint rule of cold
    // prediction reads it); the workload runs the same program.
    let layout = OciLayout::create(&dir.join("layout")).with_cmd(&["/usr/bin/python3"]);
    let platform = Platform::host();
    let layers = [rootfs.dir.as_path()];
    let mut sizes = Vec::new();
    // Only the images the scenarios run start from (the full pull's always, the warm-up's
    // when it runs).
    let needed: Vec<&str> = kernels
        .iter()
        .flat_map(|&k| lazy_scenarios(k))
        .map(|(s, _)| scenario_tag(&s))
        .chain(["targz"])
        .chain(kernels.iter().any(|&k| warmup_runs(k)).then_some("nydus"))
        .collect();
    for tag in TAGS.into_iter().filter(|t| needed.contains(t)) {
        let work = dir.join(tag);
        let image = match tag {
            "targz" => oci_images::targz_image(&layout, &layers, &platform, &work),
            "erofs" => oci_images::erofs_image(&layout, &layers, &platform, &work),
            "nydus" => oci_images::nydus_image(&layout, &layers, &platform, &work).map(|n| n.image),
            _ => oci_images::nydus_image_with(
                &layout,
                &layers,
                &platform,
                &work,
                &["--chunk-size", "0x40000"],
            )
            .map(|n| n.image),
        }
        .expect("image tools");
        layout.tag(tag, &image.manifest);
        skopeo.push(layout.dir(), tag, &reg, &format!("start:{tag}"));
        let size: u64 = image.layers.iter().map(|l| l.size).sum();
        println!("image {tag}: {} layer(s), {size} bytes", image.layers.len());
        sizes.push((tag, size));
        // The work files (tar, layer images) are in the layout and the registry now.
        let _ = std::fs::remove_dir_all(&work);
    }
    let _ = std::fs::remove_dir_all(layout.dir());
    let storage: u64 = tests::rootfs::tree_bytes(&reg.storage_dir());
    let host_links: Vec<HostLink> = links
        .iter()
        .map(|link| HostLink {
            link: link.clone(),
            proxy: netem::Link::start(reg.addr(), link.spec),
        })
        .collect();

    let mut all = Vec::new();
    for &kernel in &kernels {
        println!(
            "--- Linux {} (qemu TCG, host load {})",
            kernel_name(kernel),
            tests::vm::host_load()
        );
        let out = run_vm(kernel, &reg, &host_links, storage);
        let res = results(&out, &reg.access_log(), kernel, &links);
        for (k, v) in &out.data {
            if ["pulled_", "totals_", "nydusd_log_", "warm_", "settle_"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                println!("  {k}: {v}");
            }
        }
        println!("{}", start_result::table(&res, rootfs.bytes));
        for r in &res {
            println!("{r}");
        }
        for link in &links {
            // The untimed warm-up first: what the first lazy start after the full pull paid.
            let names = std::iter::once(WARMUP.to_string())
                .chain(lazy_scenarios(kernel).into_iter().map(|(s, _)| s));
            for s in names {
                if let Some(d) = out.data(&format!("phases_{s}_{}", link.name)) {
                    println!("{}", phases_line(&s, &link.name, d));
                }
            }
        }
        for link in &links {
            for f in FLOORS {
                if let Some(d) = out.data(&format!("floor_{f}_{}", link.name)) {
                    println!("{}", floor_line(f, &link.name, d));
                }
            }
        }
        print_ratios(&res, rootfs.bytes, &sizes, &links);
        println!(
            "VM {:.1?}, host load after: {}",
            out.elapsed,
            tests::vm::host_load()
        );
        all.push((kernel_name(kernel), res));
    }
    match plot(&png, &all, &links) {
        Ok(()) => println!("plot: {}", png.display()),
        Err(e) => panic!("plot {}: {e}", png.display()),
    }
}

/// Where the plot's font comes from (Debian's `fonts-dejavu-core`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Two bar charts side by side: time to "ready" and bytes fetched, one group of bars per
/// (scenario, kernel), one bar per link.
fn plot(path: &Path, all: &[(&str, Vec<StartResult>)], links: &[Link]) -> Result<(), String> {
    use plotters::prelude::*;
    use plotters::style::{FontStyle, register_font};

    let font = std::fs::read(FONT)
        .map_err(|e| format!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| format!("{FONT}: not a usable font"))?;
    let groups: Vec<(String, Vec<&StartResult>)> = all
        .iter()
        .flat_map(|(k, res)| {
            let mut names: Vec<&str> = Vec::new();
            for r in res {
                if !names.contains(&r.scenario.as_str()) {
                    names.push(&r.scenario);
                }
            }
            names
                .into_iter()
                .map(|s| {
                    let rs = res.iter().filter(|r| r.scenario == s).collect();
                    (format!("{s} {k}"), rs)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    let root = BitMapBackend::new(path, (2400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(1200);
    /// A panel's value of a result.
    type Value = fn(&StartResult) -> f64;
    let seconds: Value = |r| r.ready_ms as f64 / 1000.0;
    let megabytes: Value = |r| r.fetched as f64 / 1e6;
    let panels = [
        (&left, "time to \"ready\" (s)", seconds),
        (&right, "fetched from the registry (MB)", megabytes),
    ];
    let n = groups.len() as f64;
    for (area, title, value) in panels {
        let max = groups
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|r| value(r)))
            .fold(0.0f64, f64::max)
            * 1.3;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..max.max(0.001))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 {
                    groups.get(i).map(|g| g.0.clone()).unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_label_style(("sans-serif", 12))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        let w = 0.8 / links.len() as f64;
        for (li, link) in links.iter().enumerate() {
            let color = colors[li % colors.len()];
            let bars: Vec<Rectangle<(f64, f64)>> = groups
                .iter()
                .enumerate()
                .filter_map(|(gi, (_, rs))| {
                    let r = rs.iter().find(|r| r.link == link.name)?;
                    let x0 = gi as f64 + 0.1 + li as f64 * w;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + w, value(r))],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(link.name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
