//! Background prefetch: fill objects before the kernel asks, so later reads cause no upcall.
//!
//! When an object is ready for writes (its `copen` written; with fanotify, its backing
//! file marked and writable), the [`Engine`] queues the ranges its
//! [`PrefetchConfig`] plans for it: ranges listed by the embedder for its cookie key (for
//! example the blob ranges of a list of paths, see [`crate::plan`]), then, with
//! [`PrefetchConfig::whole_objects`], the rest of the object. The plan is cut into jobs of at
//! most one prefetch chunk of ranges (1 MiB by default; the first jobs an eighth of that,
//! doubling, so the first bytes the readers need arrive first). Prefetch threads
//! ([`Engine::prefetch_worker`], started by [`crate::Daemon::run`] and
//! [`crate::FanotifyDaemon::run`]) take the jobs in order, several at once:
//!
//! - **One batch per job.** A job's ranges (a trace's scattered ranges in first-access order)
//!   are claimed at once and handed to the server in one [`OnDemandServer::fill_ranges`] call:
//!   [`crate::rafs::RafsServer`] fetches the stored bytes of every chunk they touch in one
//!   store batch, which a registry store turns into few merged range requests run in
//!   parallel. Touching ranges are written with one write.
//! - **Never twice.** Each object keeps what is written, what is in flight and what a scan of
//!   its cache file found ([`crate::ranges::RangeSet`]s). A job's ranges are claimed under the
//!   object's lock, and only their gaps are fetched. A READ whose requested part is in flight
//!   waits for that job instead of fetching it again; readahead skips it.
//! - **Survives restarts.** Before the first job of an object, its cache file is scanned
//!   with `SEEK_DATA`/`SEEK_HOLE` through the object's fd ([`Sink::data_ranges`]):
//!   the kernel's own record of what is present (it serves every allocated block as data), so
//!   a new daemon skips what an earlier one fetched, with no side file that could go stale.
//! - **Gives way.** Before each job, prefetch waits (up to 20 ms) while READ fills are in
//!   progress; jobs are small (default at most 1 MiB) so a READ waits at most one job. A
//!   [held](PrefetchConfig::held) prefetch starts only at [`Engine::start_prefetch`] (the CLI:
//!   once its own mount is up), and [`PrefetchConfig::with_nice`] lowers the threads'
//!   priority.
//! - **Bounded.** A fixed number of threads, and an optional bandwidth limit (bytes per second,
//!   a token bucket of one chunk).
//!
//! A prefetch that fails (server error, object closed) leaves the range to on-demand READs
//! and counts a prefetch error.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::window::BLOCK;
use super::{Engine, Object, Sink};
use crate::blob_store::RangeRead;
use crate::buf::AlignedBuf;
use crate::ranges::RangeSet;
use crate::server::OnDemandServer;
use crate::shutdown::Shutdown;

/// Default prefetch chunk: 1 MiB.
pub const DEFAULT_PREFETCH_CHUNK: u64 = 1 << 20;

/// Default nice value of the prefetch threads ([`PrefetchConfig::with_nice`]): 10, so that
/// on a busy CPU the readers run first (measured on the container-start bench's replay:
/// faster than nice 0 in each of three runs that compared them).
pub const DEFAULT_PREFETCH_NICE: i32 = 10;

/// Told of each prefetch job's ranges once they are present in the object's cache file
/// ([`Engine::with_prefetch_observer`]): on a prefetch thread, in the order the jobs finish
/// (the plan's order, give or take the jobs running at once). It must return quickly (hand
/// the work to a thread of its own, as [`crate::warm::PageCacheWarmer`] does).
pub trait PrefetchObserver: Send + Sync {
    /// `ranges` (in the plan's order, block-aligned) of the object with cookie key `key`
    /// are present: written by this job or found present.
    fn prefetched(&self, key: &[u8], ranges: &[Range<u64>]);
}

/// What to prefetch and how fast.
#[derive(Clone, Debug)]
pub struct PrefetchConfig {
    whole_objects: bool,
    /// Per cookie key, the listed ranges in the order given (block-aligned; a range that
    /// touches the one before it is merged into it).
    listed: HashMap<Vec<u8>, Vec<Range<u64>>>,
    threads: usize,
    chunk: u64,
    bandwidth: Option<u64>,
    held: bool,
    nice: i32,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self::whole_objects()
    }
}

impl PrefetchConfig {
    /// Prefetch every object whole, with 2 threads at nice [`DEFAULT_PREFETCH_NICE`], 1 MiB
    /// chunks and no bandwidth limit.
    pub fn whole_objects() -> Self {
        PrefetchConfig {
            whole_objects: true,
            listed: HashMap::new(),
            threads: 2,
            chunk: DEFAULT_PREFETCH_CHUNK,
            bandwidth: None,
            held: false,
            nice: DEFAULT_PREFETCH_NICE,
        }
    }

    /// Prefetch only ranges given with [`with_ranges`](Self::with_ranges) or
    /// [`with_trace`](Self::with_trace).
    pub fn listed_only() -> Self {
        PrefetchConfig {
            whole_objects: false,
            ..Self::whole_objects()
        }
    }

    /// Prefetch `ranges` (byte ranges, widened to 4 KiB blocks) of the object whose cookie key
    /// is `cookie_key` (a fsid, a blob id or `device=` name), first, when it is opened, in
    /// the order given after the ranges listed before (what was listed before is not
    /// fetched twice; ranges that touch merge).
    pub fn with_ranges(
        mut self,
        cookie_key: &[u8],
        ranges: impl IntoIterator<Item = Range<u64>>,
    ) -> Self {
        let list = self.listed.entry(cookie_key.to_vec()).or_default();
        for r in ranges {
            let start = r.start / BLOCK * BLOCK;
            let end = r.end.div_ceil(BLOCK).saturating_mul(BLOCK);
            if start >= end {
                continue;
            }
            match list.last_mut() {
                Some(last) if start <= last.end && end >= last.start => {
                    *last = last.start.min(start)..last.end.max(end);
                }
                _ => list.push(start..end),
            }
        }
        self
    }

    /// Prefetch the ranges of an access trace recorded by an earlier run
    /// ([`crate::Recorder`]), first, in the trace's order: each object's ranges are queued
    /// when it opens, and the prefetch threads fetch them in that order, in parallel.
    pub fn with_trace(mut self, trace: &crate::AccessTrace) -> Self {
        for e in trace.entries() {
            self = self.with_ranges(&e.key, [e.range.clone()]);
        }
        self
    }

    /// Prefetch threads (at least 1).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// The prefetch chunk (rounded up to 4 KiB, at least one block, at most 16 MiB).
    pub fn with_chunk(mut self, bytes: u64) -> Self {
        self.chunk = bytes.clamp(BLOCK, 16 << 20).div_ceil(BLOCK) * BLOCK;
        self
    }

    /// At most `bytes_per_second` of prefetch (`None`: unlimited).
    pub fn with_bandwidth(mut self, bytes_per_second: Option<u64>) -> Self {
        self.bandwidth = bytes_per_second.filter(|&b| b > 0);
        self
    }

    /// Queue each object's plan as it opens, but fetch nothing until
    /// [`Engine::start_prefetch`]: a daemon that mounts the image itself starts prefetching
    /// once the mount is up, so the prefetch's CPU and bandwidth do not delay the mount (whose
    /// reads are few and small) and the readers' first misses.
    pub fn held(mut self, held: bool) -> Self {
        self.held = held;
        self
    }

    /// Run the prefetch threads at this nice value (0 to 19, 0: as the daemon's other
    /// threads; default [`DEFAULT_PREFETCH_NICE`], the same as `erofs-ondemand`'s). A prefetch that fetches what the readers will need competes with them
    /// for the CPU (HTTP, decompression, cache writes); on a machine whose CPU is the limit, a
    /// higher value lets the readers run first and the prefetch use what they leave. Each
    /// thread that runs [`Engine::prefetch_worker`] sets it on itself.
    pub fn with_nice(mut self, nice: i32) -> Self {
        self.nice = nice.clamp(0, 19);
        self
    }

    /// The prefetch threads' nice value.
    pub fn nice(&self) -> i32 {
        self.nice
    }

    /// Whether prefetch waits for [`Engine::start_prefetch`] ([`held`](Self::held)).
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Prefetch threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The chunk size.
    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    /// The ranges planned for an object of `size` bytes with this cookie key, in order: the
    /// listed ranges within the object (in the order listed, each without what came before
    /// it), then, prefetching whole objects, the rest in offset order.
    pub fn plan(&self, cookie_key: &[u8], size: u64) -> Vec<Range<u64>> {
        let limit = size.div_ceil(BLOCK).saturating_mul(BLOCK);
        let mut out: Vec<Range<u64>> = Vec::new();
        // Start -> end of what is planned: a list in any order costs O(n log n).
        let mut planned: BTreeMap<u64, u64> = BTreeMap::new();
        for r in self.listed.get(cookie_key).into_iter().flatten() {
            let r = r.start.min(limit)..r.end.min(limit);
            for gap in unplanned(&planned, r) {
                planned.insert(gap.start, gap.end);
                match out.last_mut() {
                    Some(last) if last.end == gap.start => last.end = gap.end,
                    _ => out.push(gap),
                }
            }
        }
        if self.whole_objects {
            let mut pos = 0;
            for (&start, &end) in &planned {
                if start > pos {
                    out.push(pos..start);
                }
                pos = pos.max(end);
            }
            if pos < limit {
                out.push(pos..limit);
            }
        }
        out
    }
}

/// The parts of `r` that no range of `planned` (disjoint, start -> end) covers.
fn unplanned(planned: &BTreeMap<u64, u64>, r: Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut pos = r.start;
    // The range starting before `r` may reach into it.
    if let Some((_, &end)) = planned.range(..=r.start).next_back() {
        pos = pos.max(end);
    }
    for (&start, &end) in planned.range(r.start..r.end) {
        if start > pos {
            out.push(pos..start);
        }
        pos = pos.max(end);
    }
    if pos < r.end {
        out.push(pos..r.end);
    }
    out
}

/// A part of an object's plan (at most one chunk), for one prefetch thread: the parts of a
/// plan go to several threads at once, in the plan's order.
struct Job<O, F> {
    object: Arc<Object<O, F>>,
    ranges: Vec<Range<u64>>,
    /// What the jobs of one object's plan share.
    plan: Arc<PlanProgress>,
}

/// The progress of one object's plan, over its jobs.
struct PlanProgress {
    /// The scan of the object's cache file, made once by the first of its jobs to start
    /// (the others wait for it): how many bytes it found present.
    scan: OnceLock<u64>,
    /// Jobs not finished yet: the last one logs the object's line.
    jobs_left: AtomicUsize,
    /// Bytes fetched by the jobs.
    fetched: AtomicU64,
    /// A job stopped early (shutdown, object closed).
    stopped: AtomicBool,
    queued: Instant,
}

/// The queue and limits of a session's prefetch.
pub(crate) struct Prefetcher<O, F> {
    config: PrefetchConfig,
    queue: Mutex<VecDeque<Job<O, F>>>,
    ready: Condvar,
    pending: AtomicU64,
    busy: AtomicUsize,
    next_slot: Mutex<Option<Instant>>,
    /// Nothing is fetched until [`Engine::start_prefetch`] clears it.
    held: AtomicBool,
    /// Per cookie key, the listed ranges as a set, when only they are planned (a replayed
    /// trace): READ windows are cut to them ([`Engine::clip_to_plan`]).
    listed_only: HashMap<Vec<u8>, RangeSet>,
}

impl<O, F> Prefetcher<O, F> {
    pub(crate) fn new(config: PrefetchConfig) -> Self {
        Prefetcher {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            pending: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            next_slot: Mutex::new(None),
            held: AtomicBool::new(config.held),
            listed_only: if config.whole_objects {
                HashMap::new()
            } else {
                config
                    .listed
                    .iter()
                    .map(|(key, ranges)| (key.clone(), ranges.iter().cloned().collect()))
                    .collect()
            },
            config,
        }
    }

    pub(crate) fn config(&self) -> &PrefetchConfig {
        &self.config
    }

    pub(crate) fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Whether nothing is queued or being prefetched.
    pub(crate) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
            && self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    /// Queue the planned ranges of a newly opened object.
    pub(crate) fn object_opened(&self, object: Arc<Object<O, F>>) {
        let ranges = self.config.plan(object.cookie_key(), object.size());
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        if total == 0 {
            return;
        }
        log::info!(
            "prefetch: queued {total} bytes of object {} ({})",
            object.id(),
            object.key()
        );
        self.pending.fetch_add(total, Ordering::SeqCst);
        // One job per chunk of the plan, so that several threads fetch one object's plan
        // (a trace of one big blob) at once, in order. The first jobs are smaller (an eighth
        // of a chunk, doubling), so the first bytes the readers need arrive first.
        let mut jobs = Vec::new();
        let mut current: Vec<Range<u64>> = Vec::new();
        let mut current_len = 0;
        let mut limit = (self.config.chunk / 8).max(BLOCK) / BLOCK * BLOCK;
        for r in ranges {
            let mut pos = r.start;
            while pos < r.end {
                let end = r.end.min(pos.saturating_add(limit - current_len));
                current.push(pos..end);
                current_len += end - pos;
                pos = end;
                if current_len == limit {
                    jobs.push(std::mem::take(&mut current));
                    current_len = 0;
                    limit = (limit * 2).min(self.config.chunk);
                }
            }
        }
        if !current.is_empty() {
            jobs.push(current);
        }
        let plan = Arc::new(PlanProgress {
            scan: OnceLock::new(),
            jobs_left: AtomicUsize::new(jobs.len()),
            fetched: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            queued: Instant::now(),
        });
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        for ranges in jobs {
            queue.push_back(Job {
                object: Arc::clone(&object),
                ranges,
                plan: Arc::clone(&plan),
            });
        }
        drop(queue);
        self.ready.notify_all();
    }

    /// Let the threads take jobs ([`PrefetchConfig::held`]).
    pub(crate) fn start(&self) {
        if self.held.swap(false, Ordering::SeqCst) {
            log::info!("prefetch: started");
        }
        // Under the lock, so no thread is between its check and its wait.
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        self.ready.notify_all();
    }

    fn next_job(&self, timeout: Duration) -> Option<Job<O, F>> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() || self.held.load(Ordering::SeqCst) {
            q = self
                .ready
                .wait_timeout(q, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if self.held.load(Ordering::SeqCst) {
            return None;
        }
        let job = q.pop_front();
        if job.is_some() {
            self.busy.fetch_add(1, Ordering::SeqCst);
        }
        job
    }

    /// Wait for the bandwidth limit to allow `bytes` more.
    fn throttle(&self, bytes: u64, shutdown: &Shutdown) {
        let Some(rate) = self.config.bandwidth else {
            return;
        };
        let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
        let start = {
            let mut slot = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = slot.map_or(now, |s| s.max(now));
            *slot = Some(start + cost);
            start
        };
        while !shutdown.is_triggered() {
            let now = Instant::now();
            if now >= start {
                break;
            }
            std::thread::sleep((start - now).min(Duration::from_millis(50)));
        }
    }
}

impl<S: OnDemandServer, K> Engine<S, K> {
    /// The READ window `range` (its requested part ends at `requested_end`) of `object`, its
    /// readahead cut to what a listed-only plan (a replayed trace) says is read next: when
    /// the requested part lies in the plan, the window goes on only as far as the planned
    /// ranges run on from it without a gap. A trace recorded from a start lists what that
    /// start read, so the rest of a readahead window is bytes the replay would fetch, decode
    /// and write for nothing (a READ races the prefetch only at the start, when the window's
    /// planned parts are still queued). A READ outside the plan keeps its whole window.
    pub(crate) fn clip_to_plan(
        &self,
        object: &Object<S::Object, K>,
        range: Range<u64>,
        requested_end: u64,
    ) -> Range<u64> {
        let Some(planned) = self
            .prefetch
            .as_ref()
            .and_then(|p| p.listed_only.get(object.cookie_key()))
        else {
            return range;
        };
        if requested_end >= range.end || !planned.intersects(range.start..requested_end) {
            return range;
        }
        let end = planned
            .gaps(requested_end..range.end)
            .first()
            .map_or(range.end, |gap| gap.start);
        range.start..end.max(requested_end)
    }
}

impl<S: OnDemandServer, K: Sink> Engine<S, K> {
    /// Run one prefetch thread until `shutdown`: take queued objects and fill their planned
    /// ranges (see the [`PrefetchConfig`]). Returns at once if the session has no
    /// prefetch. [`crate::Daemon::run`] starts [`PrefetchConfig::threads`] of these.
    pub fn prefetch_worker(&self, shutdown: &Shutdown) {
        let Some(prefetch) = &self.prefetch else {
            return;
        };
        if prefetch.config.nice > 0
            && let Err(e) = crate::sys::set_thread_nice(prefetch.config.nice)
        {
            log::warn!("prefetch: cannot set nice {}: {e}", prefetch.config.nice);
        }
        let mut buf = AlignedBuf::new(prefetch.config.chunk as usize);
        while !shutdown.is_triggered() {
            if let Some(job) = prefetch.next_job(Duration::from_millis(100)) {
                self.prefetch_job(prefetch, &job, shutdown, &mut buf);
                prefetch.busy.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Start fetching what a [held](PrefetchConfig::held) prefetch queued (and what it
    /// queues from now on). Does nothing if prefetch is not held or already started.
    pub fn start_prefetch(&self) {
        if let Some(prefetch) = &self.prefetch {
            prefetch.start();
        }
    }

    /// Whether prefetch is configured and has nothing queued or in progress.
    pub fn prefetch_idle(&self) -> bool {
        self.prefetch.as_ref().is_some_and(|p| p.is_idle())
    }

    /// Scan the object's cache file for present blocks, retrying while the kernel has not
    /// attached it yet (`ENOBUFS` right after the copen).
    fn scan_cache_file(&self, object: &Object<S::Object, K>, shutdown: &Shutdown) -> u64 {
        let limit = object.size().div_ceil(BLOCK).saturating_mul(BLOCK);
        for _ in 0..200 {
            match object.sink().data_ranges(0..limit) {
                Ok(found) => {
                    // A data extent ends mid-block only at the file's end: such a block is
                    // not trusted.
                    let found = RangeSet::whole_blocks(found, BLOCK);
                    let n = found.len();
                    object.lock_ranges().scanned.extend(&found);
                    return n;
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    if shutdown.is_triggered() || object.is_closed() {
                        return 0;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    log::debug!("object {}: cannot scan the cache file: {e}", object.id());
                    return 0;
                }
            }
        }
        0
    }

    /// Fill one job: its ranges' gaps are claimed at once (a READ over any of them waits for
    /// this job, and nobody else fetches them), then produced by the server in one batch
    /// ([`OnDemandServer::fill_ranges`]: for a remote RAFS blob, few large range requests
    /// for all of them) and written, the touching ones merged into one write.
    fn prefetch_job(
        &self,
        prefetch: &Prefetcher<S::Object, K>,
        job: &Job<S::Object, K>,
        shutdown: &Shutdown,
        buf: &mut AlignedBuf,
    ) {
        let object = &job.object;
        let present = *job
            .plan
            .scan
            .get_or_init(|| self.scan_cache_file(object, shutdown));
        let total: u64 = job.ranges.iter().map(|r| r.end - r.start).sum();
        if shutdown.is_triggered() || object.is_closed() {
            job.plan.stopped.store(true, Ordering::SeqCst);
        } else {
            // Give way to READs in progress (bounded, so prefetch still moves on).
            let wait = Instant::now();
            while self.active_reads.load(Ordering::SeqCst) > 0
                && wait.elapsed() < Duration::from_millis(20)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Throttle before claiming, so a READ never waits for a throttled prefetch.
            let estimate: u64 = {
                let r = object.lock_ranges();
                let busy = r.busy_or_present();
                job.ranges
                    .iter()
                    .flat_map(|range| busy.gaps(range.clone()))
                    .map(|g| g.end - g.start)
                    .sum()
            };
            if estimate > 0 {
                prefetch.throttle(estimate, shutdown);
            }
            let mut gaps: Vec<Range<u64>> = job
                .ranges
                .iter()
                .flat_map(|r| object.claim_gaps(r.clone()))
                .collect();
            gaps.sort_by_key(|g| g.start);
            // Touching gaps are one write.
            let mut spans: Vec<Range<u64>> = Vec::with_capacity(gaps.len());
            for g in gaps {
                match spans.last_mut() {
                    Some(last) if last.end == g.start => last.end = g.end,
                    _ => spans.push(g),
                }
            }
            let missing: u64 = spans.iter().map(|g| g.end - g.start).sum();
            self.stats.prefetch_skipped_bytes.add(total - missing);
            let mut made_present = spans.is_empty();
            if !spans.is_empty() {
                let result = self.fill_batch(object, &spans, buf);
                // `fill_batch` marked what it wrote; the rest is released unwritten.
                for s in &spans {
                    object.release(s.clone(), false, true);
                }
                match result {
                    Ok(fetched) => {
                        job.plan.fetched.fetch_add(fetched, Ordering::SeqCst);
                        made_present = true;
                    }
                    Err(e) => {
                        self.stats.prefetch_errors.add(1);
                        log::warn!(
                            "prefetch: object {} ({}): {} ranges from {} failed: {e}",
                            object.id(),
                            object.key(),
                            spans.len(),
                            spans[0].start
                        );
                    }
                }
            }
            if let (true, Some(observer)) = (made_present, &self.prefetch_observer) {
                observer.prefetched(object.cookie_key(), &job.ranges);
            }
        }
        prefetch.pending.fetch_sub(total, Ordering::SeqCst);
        // The object's last job says how its plan went.
        if job.plan.jobs_left.fetch_sub(1, Ordering::SeqCst) == 1 {
            log::info!(
                "prefetch: object {} ({}) done in {:.3?}: cache file held {present} bytes, fetched {} bytes{}",
                object.id(),
                object.key(),
                job.plan.queued.elapsed(),
                job.plan.fetched.load(Ordering::SeqCst),
                if job.plan.stopped.load(Ordering::SeqCst) {
                    " (stopped early)"
                } else {
                    ""
                }
            );
        }
    }

    /// Produce `spans` (claimed, block-aligned, sorted, together at most `buf`'s length) of
    /// `object` in one server batch, pad each one's last block past the object's end with
    /// zeros, write each with one write and mark it written. Returns the bytes fetched.
    fn fill_batch(
        &self,
        object: &Object<S::Object, K>,
        spans: &[Range<u64>],
        buf: &mut AlignedBuf,
    ) -> std::io::Result<u64> {
        let size = object.size();
        let valid = |s: &Range<u64>| s.end.min(size).saturating_sub(s.start) as usize;
        // Each span's part of the buffer (its start stays block-aligned).
        let mut parts: Vec<(Range<u64>, &mut [u8])> = Vec::with_capacity(spans.len());
        let mut rest: &mut [u8] = buf.as_mut_bytes();
        for s in spans {
            // A job is at most one prefetch chunk, the buffer's length.
            let (head, tail) = rest.split_at_mut((s.end - s.start) as usize);
            parts.push((s.clone(), head));
            rest = tail;
        }
        let mut reads: Vec<RangeRead<'_>> = parts
            .iter_mut()
            .filter(|(s, _)| valid(s) > 0)
            .map(|(s, b)| RangeRead {
                offset: s.start,
                buf: &mut b[..valid(s)],
            })
            .collect();
        let started = Instant::now();
        self.server().fill_ranges(object.state(), &mut reads)?;
        self.stats.fetch_latency.observe(started.elapsed());
        drop(reads);
        let mut fetched = 0;
        for (s, b) in parts {
            let n = valid(&s);
            b[n..].fill(0);
            object.sink().write_at(b, s.start)?;
            self.stats.writes.incr();
            self.stats.bytes_written.add(b.len() as u64);
            self.stats.prefetched_bytes.add(n as u64);
            fetched += n as u64;
            object.release(s, true, true);
        }
        Ok(fetched)
    }
}

#[cfg(test)]
// Expected range lists with one element are what they look like.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn plans_listed_ranges_first_then_the_rest() {
        let c = PrefetchConfig::whole_objects().with_ranges(b"blob", [5000..9000, 100..200]);
        // Adjacent listed ranges merge.
        assert_eq!(c.plan(b"blob", 20_000), [0..12288, 12288..20480]);
        assert_eq!(c.plan(b"other", 5000), [0..8192]);
        let c = PrefetchConfig::listed_only()
            .with_ranges(b"blob", [5000..9000, 1 << 40..(1 << 40) + 1]);
        assert_eq!(c.plan(b"blob", 20_000), [4096..12288]);
        assert_eq!(c.plan(b"other", 5000), Vec::<Range<u64>>::new());
        assert_eq!(c.plan(b"blob", 0), Vec::<Range<u64>>::new());
        assert_eq!(PrefetchConfig::default().with_chunk(1).chunk(), 4096);
        assert_eq!(PrefetchConfig::default().with_chunk(5000).chunk(), 8192);
        assert_eq!(PrefetchConfig::default().with_threads(0).threads(), 1);
    }

    #[test]
    fn listed_ranges_keep_their_order_once_each() {
        let c = PrefetchConfig::listed_only()
            .with_ranges(b"blob", [40960..49152, 0..4096, 4096..6000])
            .with_ranges(b"blob", [0..100, 45000..60000, 1 << 62..u64::MAX]);
        // In the order listed; touching ranges merge; what came before is not planned twice;
        // nothing past the object.
        assert_eq!(
            c.plan(b"blob", 100_000),
            [40960..49152, 0..8192, 49152..61440]
        );
        let c = PrefetchConfig::whole_objects().with_ranges(b"blob", [40960..49152, 0..4096]);
        assert_eq!(
            c.plan(b"blob", 60_000),
            [40960..49152, 0..4096, 4096..40960, 49152..61440]
        );
    }

    #[test]
    fn partial_blocks_are_not_trusted() {
        assert_eq!(
            RangeSet::whole_blocks(vec![100..9000, 12288..12300, 16384..20480], BLOCK).ranges(),
            [4096..8192, 16384..20480]
        );
    }
}

#[cfg(test)]
// Expected range lists with one element are what they look like.
#[allow(clippy::single_range_in_vec_init)]
mod session_tests {

    use cachefiles_proto::ObjectId;

    use super::*;
    use crate::engine::test_blob::{SlowBlob, blob, open_blob, read_blob};
    use crate::session::Session;
    use crate::testing::FakeFd;

    const LEN: usize = 5 * 1024 * 1024 + 123;

    fn session(delay: Duration, config: PrefetchConfig) -> Session<SlowBlob, FakeFd> {
        Session::new(SlowBlob::new(LEN, delay))
            .with_readahead(0)
            .with_sequential_ahead(0)
            .with_prefetch(config)
    }

    /// Run prefetch threads until the queue is done.
    fn prefetch_until_idle(s: &Session<SlowBlob, FakeFd>, threads: usize) {
        let stop = Shutdown::new();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| s.prefetch_worker(&stop));
            }
            let t = Instant::now();
            while !(s.prefetch_idle() && s.prefetch_pending_bytes() == 0) {
                assert!(t.elapsed() < Duration::from_secs(30), "prefetch hangs");
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.trigger();
        });
    }

    #[test]
    fn prefetches_whole_objects_once_and_reads_then_fetch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let s = session(
            Duration::ZERO,
            PrefetchConfig::whole_objects().with_threads(2),
        );
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&s, fd);
        assert_eq!(s.prefetch_pending_bytes(), LEN.div_ceil(4096) as u64 * 4096);
        prefetch_until_idle(&s, 3);
        let cache = std::fs::read(&path).unwrap();
        assert_eq!(&cache[..LEN], &blob(LEN)[..]);
        let st = s.stats();
        assert_eq!(
            st.prefetched_bytes, LEN as u64,
            "every byte fetched exactly once"
        );
        assert_eq!(s.server().produced(), LEN as u64);
        assert_eq!(st.prefetch_errors, 0);
        // A READ the kernel sends anyway (it raced with the prefetch): nothing is fetched.
        read_blob(&s, 2, 4096, 8192);
        let st = s.stats();
        assert_eq!(st.fetched_bytes, 0);
        assert_eq!(st.served_by_prefetch_bytes, 8192);
        assert!(
            s.render_prometheus()
                .contains("erofs_ondemand_prefetched_bytes_total 5243003\n")
        );
    }

    #[test]
    fn present_ranges_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        // The first daemon prefetches only the listed 1 MiB.
        let first = session(
            Duration::ZERO,
            PrefetchConfig::listed_only().with_ranges(b"blob", [1 << 20..2 << 20]),
        );
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&first, fd);
        prefetch_until_idle(&first, 1);
        assert_eq!(first.stats().prefetched_bytes, 1 << 20);
        drop(first);
        // The second finds that MiB in the cache file and fetches the rest only.
        let second = session(Duration::ZERO, PrefetchConfig::whole_objects());
        let (fd, _log) = FakeFd::reopen(&path);
        open_blob(&second, fd);
        prefetch_until_idle(&second, 2);
        let st = second.stats();
        assert_eq!(st.prefetch_skipped_bytes, 1 << 20);
        assert_eq!(st.prefetched_bytes, LEN as u64 - (1 << 20));
        assert_eq!(&std::fs::read(&path).unwrap()[..LEN], &blob(LEN)[..]);
        let present = second.object(ObjectId(1)).unwrap().present();
        assert_eq!(present.ranges(), [0..LEN.div_ceil(4096) as u64 * 4096]);
    }

    #[test]
    fn a_read_waits_for_the_prefetch_of_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        // 20 ms per 1 MiB chunk: the READ lands while its chunk is in flight.
        let s = session(
            Duration::from_millis(20),
            PrefetchConfig::whole_objects().with_threads(1),
        );
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&s, fd);
        let stop = Shutdown::new();
        std::thread::scope(|scope| {
            scope.spawn(|| s.prefetch_worker(&stop));
            // Wait until the first chunk is claimed, then read inside it.
            let t = Instant::now();
            while !s
                .object(ObjectId(1))
                .unwrap()
                .lock_ranges()
                .inflight
                .intersects(0..4096)
            {
                assert!(t.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_micros(200));
            }
            read_blob(&s, 2, 0, 4096);
            // The READ completed only after the prefetch wrote its block.
            assert!(s.object(ObjectId(1)).unwrap().present().intersects(0..4096));
            while !(s.prefetch_idle() && s.prefetch_pending_bytes() == 0) {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.trigger();
        });
        let st = s.stats();
        assert_eq!(st.fetched_bytes, 0, "the READ fetched nothing itself");
        assert_eq!(st.served_by_prefetch_bytes, 4096);
        // The wait is measured: one READ waited, for part of a 20 ms chunk at most.
        let waited = s.metrics().claim_wait();
        assert_eq!(waited.count, 1);
        assert!(waited.sum < Duration::from_secs(5), "{waited:?}");
        assert_eq!(s.server().produced(), LEN as u64);
        assert_eq!(&std::fs::read(&path).unwrap()[..LEN], &blob(LEN)[..]);
    }

    #[test]
    fn overlapping_reads_fetch_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        // Readahead 1 MiB, 50 ms per fill: four READs inside the first MiB arrive together.
        let s = Session::new(SlowBlob::new(LEN, Duration::from_millis(50)))
            .with_readahead(1 << 20)
            .with_sequential_ahead(0);
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&s, fd);
        std::thread::scope(|scope| {
            for i in 0..4u32 {
                let s = &s;
                scope.spawn(move || read_blob(s, 10 + i, u64::from(i) * 8192, 4096));
            }
        });
        // Each READ's window starts at its own block, so their union is at most 1 MiB + 24 KiB;
        // claims never overlap, so every byte written was fetched exactly once.
        let produced = s.server().produced();
        let written = s.object(ObjectId(1)).unwrap().present().len();
        assert_eq!(produced, written);
        assert!(produced <= (1 << 20) + 3 * 8192, "{produced}");
        assert_eq!(s.stats().fetched_bytes, produced);
        assert_eq!(&std::fs::read(&path).unwrap()[..32768], &blob(LEN)[..32768]);
    }

    #[test]
    fn readahead_skips_what_the_cache_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let with_readahead =
            |ra| Session::new(SlowBlob::new(LEN, Duration::ZERO)).with_readahead(ra);
        // A first daemon filled the second MiB.
        let first = with_readahead(0);
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&first, fd);
        read_blob(&first, 2, 1 << 20, 1 << 20);
        drop(first);
        // The next one reads from 0 with a 4 MiB window: the second MiB is not fetched again.
        let second = with_readahead(4 << 20);
        let (fd, _log) = FakeFd::reopen(&path);
        open_blob(&second, fd);
        read_blob(&second, 2, 0, 4096);
        assert_eq!(second.server().produced(), 3 << 20);
        assert_eq!(
            &std::fs::read(&path).unwrap()[..4 << 20],
            &blob(LEN)[..4 << 20]
        );
    }

    #[test]
    fn a_read_refills_what_was_written_but_is_gone() {
        use nix::fcntl::{FallocateFlags, fallocate};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let s = session(Duration::ZERO, PrefetchConfig::listed_only());
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&s, fd);
        read_blob(&s, 2, 0, 8192);
        assert_eq!(s.server().produced(), 8192);
        // The block vanishes from the cache file behind the daemon's back (as if the kernel
        // had replaced the file); the kernel asks again and gets it again.
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        fallocate(
            &f,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            4096,
            4096,
        )
        .unwrap();
        read_blob(&s, 3, 0, 8192);
        assert_eq!(s.server().produced(), 12288);
        assert_eq!(&std::fs::read(&path).unwrap()[..8192], &blob(LEN)[..8192]);
    }

    /// The reads of a container start: scattered, some repeated, some unaligned.
    const READS: [(u64, u64); 6] = [
        (0, 4096),
        (3 << 20, 128 << 10),
        (1 << 20, 8192),
        (3 << 20, 4096),
        ((5 << 20) + 100, 23),
        (2_000_000, 70_000),
    ];

    #[test]
    fn a_recorded_trace_replayed_on_a_cold_cache_leaves_nothing_to_fetch_on_reads() {
        let dir = tempfile::tempdir().unwrap();
        let trace_path = dir.path().join("trace");
        // The recording run: every read is a miss (no readahead), each one recorded.
        let recorder = Arc::new(crate::Recorder::create(&trace_path).unwrap());
        let first = session(Duration::ZERO, PrefetchConfig::listed_only())
            .with_recorder(Arc::clone(&recorder));
        let (fd, _log) = FakeFd::create(&dir.path().join("cache1"));
        open_blob(&first, fd);
        for (i, (off, len)) in READS.into_iter().enumerate() {
            read_blob(&first, 10 + i as u32, off, len);
        }
        assert_eq!(first.stats().prefetched_bytes, 0);
        let fetched_cold = first.stats().fetched_bytes;
        recorder.flush().unwrap();
        drop(first);
        let trace = crate::AccessTrace::read(&trace_path).unwrap();
        assert_eq!(trace.skipped(), 0);
        // First-access order, without the repeated range.
        let ranges: Vec<_> = trace.entries().iter().map(|e| e.range.clone()).collect();
        assert_eq!(
            ranges,
            [
                0..4096,
                3 << 20..(3 << 20) + (128 << 10),
                1 << 20..(1 << 20) + 8192,
                (5 << 20) + 100..(5 << 20) + 123,
                2_000_000..2_070_000,
            ]
        );
        assert!(trace.entries().iter().all(|e| e.key == b"blob"));
        // The replay, on a cold cache: prefetch the trace, then read the same.
        let second = session(
            Duration::ZERO,
            PrefetchConfig::listed_only()
                .with_trace(&trace)
                .with_threads(2)
                .with_chunk(64 << 10),
        );
        let (fd, _log) = FakeFd::create(&dir.path().join("cache2"));
        open_blob(&second, fd);
        prefetch_until_idle(&second, 2);
        let st = second.stats();
        assert_eq!(st.prefetch_errors, 0);
        assert_eq!(
            st.prefetched_bytes, fetched_cold,
            "the same bytes, fetched ahead"
        );
        for (i, (off, len)) in READS.into_iter().enumerate() {
            read_blob(&second, 10 + i as u32, off, len);
        }
        let st = second.stats();
        assert_eq!(st.fetched_bytes, 0, "no fill on the read path");
        assert_eq!(st.read_errors, 0);
        assert_eq!(
            std::fs::read(dir.path().join("cache2")).unwrap()[2_000_000..2_070_000],
            blob(LEN)[2_000_000..2_070_000]
        );
    }

    #[test]
    fn a_job_is_one_server_batch_and_touching_ranges_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        // A trace's ranges in first-access order, scattered within the first MiB (one job);
        // two of them touch. One READ came first and filled one range itself.
        let trace = [600_000..610_000, 4096..8192, 8192..12288, 300_000..301_000];
        let s = session(
            Duration::ZERO,
            PrefetchConfig::listed_only()
                .with_ranges(b"blob", trace.clone())
                .with_threads(1)
                .held(true),
        );
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&s, fd);
        read_blob(&s, 2, 300_000, 1000);
        s.start_prefetch();
        prefetch_until_idle(&s, 1);
        // The rest is one call with the three gaps, sorted, and three writes.
        assert_eq!(s.server().batches(), [2]);
        let fills: Vec<_> = s.server().fills().into_iter().map(|(_, r)| r).collect();
        assert_eq!(fills, [299_008..303_104, 4096..12288, 598_016..610_304]);
        let st = s.stats();
        assert_eq!(st.writes, 3, "{st:?}");
        assert_eq!(st.prefetched_bytes, 8192 + 12288);
        assert_eq!(st.prefetch_skipped_bytes, 4096);
        let cache = std::fs::read(&path).unwrap();
        for r in trace {
            let r = r.start as usize..r.end as usize;
            assert_eq!(cache[r.clone()], blob(LEN)[r]);
        }
    }

    #[test]
    fn read_windows_are_cut_to_a_replayed_trace() {
        let dir = tempfile::tempdir().unwrap();
        let s = Session::new(SlowBlob::new(LEN, Duration::ZERO))
            .with_readahead(1 << 20)
            .with_sequential_ahead(0)
            .with_prefetch(
                PrefetchConfig::listed_only()
                    .with_ranges(b"blob", [0..8192, 8192..20000, 300_000..310_000])
                    .held(true),
            );
        let (fd, _log) = FakeFd::create(&dir.path().join("cache"));
        open_blob(&s, fd);
        // In the trace: the window runs on as far as the trace does, not 1 MiB.
        read_blob(&s, 2, 0, 4096);
        // Outside the trace: the whole window.
        read_blob(&s, 3, 2 << 20, 4096);
        // In the trace, at the end of a range: the requested part only.
        read_blob(&s, 4, 307_200, 4096);
        let fills: Vec<_> = s.server().fills().into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            fills,
            [0..20480, 2 << 20..3 << 20, 307_200..311_296],
            "nothing of the trace was prefetched (held)"
        );
    }

    /// What an observer was told: a key and its ranges.
    type Told = (Vec<u8>, Vec<Range<u64>>);

    /// Keeps what it is told.
    #[derive(Default)]
    struct Observed(Mutex<Vec<Told>>);

    impl PrefetchObserver for Observed {
        fn prefetched(&self, key: &[u8], ranges: &[Range<u64>]) {
            self.0.lock().unwrap().push((key.to_vec(), ranges.to_vec()));
        }
    }

    #[test]
    fn the_observer_is_told_each_jobs_ranges_once_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let observed = Arc::new(Observed::default());
        // Two listed ranges, out of offset order; then 256 KiB: jobs of 128 KiB, 256 KiB.
        let s = session(
            Duration::ZERO,
            PrefetchConfig::listed_only().with_ranges(
                b"blob",
                [
                    1 << 20..(1 << 20) + 8192,
                    8192..16384,
                    2 << 20..(2 << 20) + (256 << 10),
                ],
            ),
        )
        .with_prefetch_observer(Arc::clone(&observed) as _);
        let (fd, _log) = FakeFd::create(&path);
        open_blob(&s, fd);
        // Nothing is told before it is written.
        assert!(observed.0.lock().unwrap().is_empty());
        prefetch_until_idle(&s, 1);
        let cache = std::fs::read(&path).unwrap();
        let told = observed.0.lock().unwrap().clone();
        let mut all: Vec<Range<u64>> = Vec::new();
        for (key, ranges) in &told {
            assert_eq!(key, b"blob");
            for r in ranges {
                // Present when told: the blob's bytes are in the cache file.
                let (a, b) = (r.start as usize, r.end as usize);
                assert_eq!(&cache[a..b], &blob(LEN)[a..b]);
            }
            all.extend(ranges.iter().cloned());
        }
        // Every planned range, in the plan's order (one thread: the jobs' order).
        assert_eq!(
            all,
            vec![
                1 << 20..(1 << 20) + 8192,
                8192..16384,
                2 << 20..(2 << 20) + (112 << 10),
                (2 << 20) + (112 << 10)..(2 << 20) + (256 << 10),
            ]
        );
        assert_eq!(told.len(), 2);
    }

    #[test]
    fn a_held_prefetch_fetches_nothing_until_started() {
        let dir = tempfile::tempdir().unwrap();
        let s = session(Duration::ZERO, PrefetchConfig::whole_objects().held(true));
        let (fd, _log) = FakeFd::create(&dir.path().join("cache"));
        open_blob(&s, fd);
        let stop = Shutdown::new();
        std::thread::scope(|scope| {
            scope.spawn(|| s.prefetch_worker(&stop));
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(s.server().produced(), 0, "held");
            assert!(!s.prefetch_idle());
            s.start_prefetch();
            let t = Instant::now();
            while !(s.prefetch_idle() && s.prefetch_pending_bytes() == 0) {
                assert!(t.elapsed() < Duration::from_secs(30), "prefetch hangs");
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.trigger();
        });
        assert_eq!(s.server().produced(), LEN as u64);
    }

    #[test]
    fn hostile_traces_fetch_nothing_outside_the_objects() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "erofs-ondemand-trace v1\n\
             other 0 4096\n\
             blob {} 4096\n\
             blob 4096 18446744073709000000\n\
             blob 18446744073709551615 1\n\
             blob x y\n\
             %00%FF 1 1\n",
            1u64 << 40
        );
        let trace = crate::AccessTrace::parse(text.as_bytes()).unwrap();
        assert_eq!(trace.skipped(), 2);
        let s = session(
            Duration::ZERO,
            PrefetchConfig::listed_only().with_trace(&trace),
        );
        let (fd, _log) = FakeFd::create(&dir.path().join("cache"));
        open_blob(&s, fd);
        prefetch_until_idle(&s, 1);
        // The huge range is clipped to the object; the range past it and the unknown key
        // fetch nothing.
        assert_eq!(s.stats().prefetched_bytes, LEN as u64 - 4096);
        assert_eq!(s.stats().prefetch_errors, 0);
    }

    #[test]
    fn bandwidth_is_limited() {
        let dir = tempfile::tempdir().unwrap();
        let s = session(
            Duration::ZERO,
            PrefetchConfig::whole_objects()
                .with_chunk(256 << 10)
                .with_bandwidth(Some(20 << 20)),
        );
        let (fd, _log) = FakeFd::create(&dir.path().join("cache"));
        open_blob(&s, fd);
        let t = Instant::now();
        prefetch_until_idle(&s, 2);
        // 5 MiB at 20 MiB/s: at least ~0.25 s (the first chunk is free).
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(s.stats().prefetched_bytes, LEN as u64);
    }
}
