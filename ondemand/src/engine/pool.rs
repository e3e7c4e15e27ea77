//! The fill pool: fills ahead of sequential readers cut into chunk-sized jobs that any idle
//! thread runs, so one stream is produced (decompressed) on several cores at once while its
//! reader consumes what is done.
//!
//! A job is a range of one object, claimed in flight when it is queued (so a READ over it
//! waits for it, and nobody else fetches it) and released when it is run or dropped. Who runs
//! jobs:
//!
//! - the pool threads ([`Engine::with_fill_threads`], started beside a transport's workers by
//!   [`crate::Daemon::run`] and [`crate::FanotifyDaemon::run`]), which wait for jobs;
//! - the worker that queued them, which helps until none of its own jobs is left in the queue
//!   (so an engine without pool threads still fills everything it claimed); with pool
//!   threads, one such worker at a time (so fills ahead run on at most one thread more than
//!   the pool, and the other workers stay free for READs);
//! - a READ whose requested bytes are claimed by a queued job: it takes that job out of the
//!   queue and runs it itself, instead of waiting for a thread to get to it.
//!
//! The queue is bounded ([`MAX_QUEUED_JOBS`]): a worker that finds it full runs its job at
//! once. When the pool threads stop (shutdown), jobs still queued are dropped and their claims
//! released (nothing is marked written), so no READ waits for them.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{Engine, Object, Sink};
use crate::buf::AlignedBuf;
use crate::server::OnDemandServer;
use crate::shutdown::Shutdown;

/// Pool threads by default ([`Engine::with_fill_threads`], `--fill-threads`): one less than
/// the CPUs this process may run on (the worker that answered the READ fills too), at least
/// 1 and at most 8. On the 2-CPU test VM, 1: measured against 0 and 2 with the `nydusd_walk`
/// bench (DESIGN.md, "Fill ahead of sequential readers").
pub fn default_fill_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .clamp(1, 8)
}

/// Most jobs queued at once (with 1 MiB jobs, 64 MiB claimed ahead of readers).
pub(crate) const MAX_QUEUED_JOBS: usize = 64;

/// A claimed range of an object, waiting for a thread to fill it.
pub(crate) struct Job<O, K> {
    pub(crate) object: Arc<Object<O, K>>,
    pub(crate) range: Range<u64>,
    /// The call of [`Engine::fill_ahead`] that queued it.
    batch: u64,
    /// A far guess ([`crate::predict::Related::far`]): the first job dropped to make room
    /// for a nearer one.
    far: bool,
}

/// The queue of fill jobs shared by the pool threads and the workers.
pub(crate) struct FillPool<O, K> {
    jobs: Mutex<VecDeque<Job<O, K>>>,
    ready: Condvar,
    capacity: usize,
    next_batch: AtomicU64,
    /// A worker is helping the pool threads (at most one at a time, see
    /// [`Engine::fill_ahead`]).
    helping: AtomicBool,
}

impl<O, K> FillPool<O, K> {
    pub(crate) fn new(capacity: usize) -> Self {
        FillPool {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            next_batch: AtomicU64::new(0),
            helping: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Job<O, K>>> {
        // Single pushes and pops: a poisoned queue is still consistent.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn batch(&self) -> u64 {
        self.next_batch.fetch_add(1, Ordering::Relaxed)
    }

    /// Queue `range` (claimed) of `object`; if the queue is full, hand it back.
    pub(crate) fn push(
        &self,
        object: &Arc<Object<O, K>>,
        range: Range<u64>,
        batch: u64,
    ) -> Result<(), Range<u64>> {
        let mut q = self.lock();
        if q.len() >= self.capacity {
            return Err(range);
        }
        q.push_back(Job {
            object: Arc::clone(object),
            range,
            batch,
            far: false,
        });
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// Queue predicted `ranges` (claimed) of `object`, in their order: `near` ones ahead of
    /// every job queued (a full queue first drops far guesses from its back, their claims
    /// released), far ones behind. Returns the bytes queued; the ranges that found no room
    /// are released.
    pub(crate) fn push_predicted(
        &self,
        object: &Arc<Object<O, K>>,
        ranges: Vec<Range<u64>>,
        batch: u64,
        near: bool,
    ) -> u64 {
        let mut q = self.lock();
        let mut dropped = Vec::new();
        let mut refused = Vec::new();
        let mut queued = 0;
        // Where the next near job goes: behind the ones of this call.
        let mut front = 0;
        for range in ranges {
            if near {
                while q.len() >= self.capacity && q.back().is_some_and(|j| j.far) {
                    dropped.extend(q.pop_back());
                }
            }
            if q.len() >= self.capacity {
                refused.push(range);
                continue;
            }
            queued += range.end - range.start;
            let job = Job {
                object: Arc::clone(object),
                range,
                batch,
                far: !near,
            };
            if near {
                let at = front.min(q.len());
                q.insert(at, job);
                front = at + 1;
            } else {
                q.push_back(job);
            }
        }
        drop(q);
        if queued > 0 {
            self.ready.notify_all();
        }
        for job in dropped {
            job.object.release(job.range, false, false);
        }
        for range in refused {
            object.release(range, false, false);
        }
        queued
    }

    /// The first job, waiting up to `timeout` for one.
    pub(crate) fn pop_wait(&self, timeout: Duration) -> Option<Job<O, K>> {
        let mut q = self.lock();
        if q.is_empty() {
            q = self
                .ready
                .wait_timeout(q, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q.pop_front()
    }

    /// The first job if a job of `batch` is still queued.
    fn pop_for(&self, batch: u64) -> Option<Job<O, K>> {
        let mut q = self.lock();
        if q.iter().any(|j| j.batch == batch) {
            q.pop_front()
        } else {
            None
        }
    }

    /// The first job, if any.
    fn pop_any(&self) -> Option<Job<O, K>> {
        self.lock().pop_front()
    }

    /// Take out the queued jobs of `object` that overlap `range`.
    pub(crate) fn steal(&self, object: &Object<O, K>, range: &Range<u64>) -> Vec<Job<O, K>> {
        let mut q = self.lock();
        if q.is_empty() {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(q.len());
        for job in q.drain(..) {
            if std::ptr::eq(Arc::as_ptr(&job.object), object)
                && job.range.start < range.end
                && range.start < job.range.end
            {
                taken.push(job);
            } else {
                kept.push_back(job);
            }
        }
        *q = kept;
        taken
    }

    /// Drop every queued job, releasing its claim unwritten.
    pub(crate) fn clear(&self) {
        let jobs: Vec<_> = self.lock().drain(..).collect();
        for job in jobs {
            job.object.release(job.range, false, false);
        }
    }

    /// Jobs queued.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl<S: OnDemandServer, K: Sink> Engine<S, K> {
    /// Fill what nobody has or is fetching in `range`, ahead of a sequential reader: its gaps
    /// are claimed and queued as jobs of at most one readahead window each (cut at multiples
    /// of it, as the server's chunks), which the pool threads run in parallel; this worker
    /// helps until none of these jobs is left in the queue, unless another worker is helping
    /// already. Errors are logged: the reader's own READ fetches the range again.
    pub(crate) fn fill_ahead(
        &self,
        object: &Arc<Object<S::Object, K>>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
    ) {
        if object.is_closed() {
            return;
        }
        if !self.asks_for_present {
            object.scan_present(range.clone());
        }
        let chunk = self.ahead_chunk();
        let batch = self.pool.batch();
        let mut pos = range.start;
        while pos < range.end {
            let end = range
                .end
                .min((pos / chunk).saturating_add(1).saturating_mul(chunk));
            for gap in object.claim_gaps(pos..end) {
                if let Err(gap) = self.pool.push(object, gap, batch) {
                    // The queue is full: this worker fills the gap itself, now.
                    self.run_job(object, gap, buf);
                }
            }
            pos = end;
        }
        // Help the pool threads, one worker at a time: fills ahead then run on at most one
        // thread more than the pool has (the CPUs, by default), and the other workers stay
        // free for READs. Without pool threads, every worker runs its own jobs.
        let alone = self.fill_threads() == 0;
        if alone || !self.pool.helping.swap(true, Ordering::AcqRel) {
            while let Some(job) = self.pool.pop_for(batch) {
                self.run_job(&job.object, job.range, buf);
            }
            if !alone {
                self.pool.helping.store(false, Ordering::Release);
            }
        }
    }

    /// Queue, as fill-ahead jobs, what the predictor relates to a READ at `off` of `object`
    /// (outside the READ's `window`, which the READ fills itself): each piece's gaps of what
    /// is present or in flight, claimed. Nothing waits for them here: the pool threads run
    /// them, a READ over a queued one runs it, and the worker helps once its READ is
    /// answered ([`help_queued`](Self::help_queued)). A full queue drops the rest (a guess,
    /// not a demand). Returns the bytes queued.
    pub(crate) fn queue_predicted(
        &self,
        object: &Arc<Object<S::Object, K>>,
        off: u64,
        window: Option<&Range<u64>>,
    ) -> u64 {
        let Some(predictor) = &self.predictor else {
            return 0;
        };
        let Some(map) = predictor.get() else {
            return 0;
        };
        predictor.demand(object.cookie_key(), off);
        let related = map.related(object.cookie_key(), off);
        self.queue_pieces(object, related.near, window, true)
            + self.queue_pieces(object, related.far, window, false)
    }

    /// The predictor's ELF rule ([`crate::predict::Rules::needed`]): `bytes` were filled at
    /// `pos` of `object`; the libraries the ELF objects there need are found as their
    /// bytes arrive, and queued by [`queue_needed`](Self::queue_needed).
    pub(crate) fn observe_filled(&self, object: &Object<S::Object, K>, pos: u64, bytes: &[u8]) {
        if let Some(p) = &self.predictor {
            p.observe(object.cookie_key(), pos, bytes);
        }
    }

    /// Queue, as [`queue_predicted`](Self::queue_predicted) does, the pieces of the
    /// libraries the ELF rule found for `object` since the last call. Returns the bytes
    /// queued.
    pub(crate) fn queue_needed(&self, object: &Arc<Object<S::Object, K>>) -> u64 {
        let Some(p) = &self.predictor else {
            return 0;
        };
        let pieces = p.take_needed(object.cookie_key());
        if pieces.is_empty() {
            return 0;
        }
        let queued = self.queue_pieces(object, pieces, None, true);
        if queued > 0 {
            log::debug!(
                "object {}: {queued} bytes of needed libraries queued",
                object.id()
            );
        }
        queued
    }

    /// Queue `pieces` of `object` (outside `window`): each piece's gaps of what is present
    /// or in flight, claimed; `near` ones ahead of the queued jobs, in their order, others
    /// behind ([`FillPool::push_predicted`]); what finds no room is dropped. Returns the
    /// bytes queued.
    fn queue_pieces(
        &self,
        object: &Arc<Object<S::Object, K>>,
        pieces: Vec<Range<u64>>,
        window: Option<&Range<u64>>,
        near: bool,
    ) -> u64 {
        if object.is_closed() || pieces.is_empty() {
            return 0;
        }
        let limit = super::round_up(object.size().min(i64::MAX as u64));
        let mut gaps = Vec::new();
        for piece in pieces {
            let piece = piece.start / super::window::BLOCK * super::window::BLOCK
                ..super::round_up(piece.end).min(limit);
            let mut pieces = vec![piece];
            if let Some(w) = window {
                pieces = pieces
                    .into_iter()
                    .flat_map(|p| [p.start..p.end.min(w.start), p.start.max(w.end)..p.end])
                    .collect();
            }
            for p in pieces.into_iter().filter(|p| p.start < p.end) {
                if !self.asks_for_present {
                    object.scan_present(p.clone());
                }
                gaps.extend(object.claim_gaps(p));
            }
        }
        self.pool
            .push_predicted(object, gaps, self.pool.batch(), near)
    }

    /// Help the pool threads with queued jobs (predicted fills), one worker at a time, as
    /// [`fill_ahead`](Self::fill_ahead) does; without pool threads, run every queued job.
    pub(crate) fn help_queued(&self, buf: &mut AlignedBuf) {
        if self.predictor.is_none() || self.pool.len() == 0 {
            return;
        }
        let alone = self.fill_threads() == 0;
        if alone || !self.pool.helping.swap(true, Ordering::AcqRel) {
            while let Some(job) = self.pool.pop_any() {
                self.run_job(&job.object, job.range, buf);
            }
            if !alone {
                self.pool.helping.store(false, Ordering::Release);
            }
        }
    }

    /// The most one fill-ahead job spans: the readahead window (at least 256 KiB), as the
    /// lengths of [`super::window::Stream`].
    pub(crate) fn ahead_chunk(&self) -> u64 {
        self.readahead().max(super::window::AHEAD_MIN)
    }

    /// Run the queued jobs of `object` that overlap `range` (a READ's requested part) on
    /// this thread, instead of waiting for a pool thread to get to them.
    pub(crate) fn run_queued_over(
        &self,
        object: &Object<S::Object, K>,
        range: &Range<u64>,
        buf: &mut AlignedBuf,
    ) {
        for job in self.pool.steal(object, range) {
            self.run_job(&job.object, job.range, buf);
        }
    }

    /// Fill a claimed range ahead of a reader and release it (what was not written too).
    pub(crate) fn run_job(
        &self,
        object: &Arc<Object<S::Object, K>>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
    ) {
        let result = (!object.is_closed()).then(|| self.fill(object, range.clone(), buf, false));
        self.finish_job(object, range, result);
    }

    /// The end of a fill-ahead job: `result` is its fill's (`None`: not run, its object
    /// closed) and counted; the claim is released (what was not written, unwritten: the fill
    /// marked what it wrote), and the libraries an ELF object it completed needs are queued.
    pub(crate) fn finish_job(
        &self,
        object: &Arc<Object<S::Object, K>>,
        range: Range<u64>,
        result: Option<Result<(), (u64, std::io::Error)>>,
    ) {
        match result {
            Some(Ok(())) => self
                .stats
                .ahead_bytes
                .add(range.end.min(object.size()).saturating_sub(range.start)),
            Some(Err((pos, e))) => {
                // What was written before `pos` counts as filled ahead.
                self.stats
                    .ahead_bytes
                    .add(pos.min(object.size()).saturating_sub(range.start));
                log::warn!(
                    "object {} ({}): fill ahead {range:?} stopped at {pos}: {e}",
                    object.id(),
                    object.key()
                );
            }
            None => {}
        }
        object.release(range, false, false);
        self.queue_needed(object);
    }

    /// Run one pool thread until `shutdown`: take fill-ahead jobs as they are queued and
    /// fill them. When it stops, jobs still queued are dropped (their claims released).
    /// [`crate::Daemon::run`] and [`crate::FanotifyDaemon::run`] start
    /// [`fill_threads`](Self::fill_threads) of these; an embedder with its own loop may run
    /// them on its own threads.
    ///
    /// With [`Engine::with_write_behind`], each job's write into the object's sink runs on a
    /// writer thread of this pool thread's while it produces the next job
    /// (`engine/write_behind.rs`).
    pub fn fill_worker(&self, shutdown: &Shutdown) {
        let len = self.ahead_chunk().clamp(64 << 10, 16 << 20) as usize;
        if self.write_behind {
            self.run_jobs_writing_behind(shutdown, len);
        } else {
            let mut buf = AlignedBuf::new(len);
            while !shutdown.is_triggered() {
                if let Some(job) = self.pool.pop_wait(crate::shutdown::POLL_INTERVAL) {
                    self.run_job(&job.object, job.range, &mut buf);
                }
            }
        }
        self.pool.clear();
    }

    /// Fill-ahead jobs queued and not started yet.
    pub fn queued_fill_jobs(&self) -> usize {
        self.pool.len()
    }
}

#[cfg(test)]
// Expected range lists with one element are what they look like.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use std::time::Instant;

    use cachefiles_proto::ObjectId;

    use super::*;
    use crate::engine::test_blob::{SlowBlob, open_blob, read_blob};
    use crate::session::Session;
    use crate::testing::FakeFd;

    const MIB: u64 = 1 << 20;

    /// No byte produced twice, and every byte of the blob produced once.
    fn assert_each_byte_once(server: &SlowBlob) {
        let mut seen = crate::ranges::RangeSet::new();
        let mut total = 0;
        for (_, r) in server.fills() {
            assert!(!seen.intersects(r.clone()), "{r:?} fetched twice");
            seen.insert(r.clone());
            total += r.end - r.start;
        }
        assert_eq!(total, server.blob.len() as u64, "{seen:?}");
    }

    type S = Session<SlowBlob, FakeFd>;

    /// A session over a blob of `len` bytes (1 MiB readahead, so 1 MiB fill-ahead jobs), its
    /// object opened with id 1 on a cache file in `dir`.
    fn session(dir: &std::path::Path, len: usize, delay: Duration) -> (S, Arc<Object<(), FakeFd>>) {
        let s = Session::new(SlowBlob::new(len, delay))
            .with_readahead(MIB)
            .with_fill_threads(0);
        let object = open(&s, dir);
        (s, object)
    }

    /// Open object 1 (cookie key `blob`) on a cache file in `dir`, as the kernel's OPEN.
    fn open(s: &S, dir: &std::path::Path) -> Arc<Object<(), FakeFd>> {
        let (fd, _log) = FakeFd::create(&dir.join("cache"));
        open_blob(s, fd);
        s.object(ObjectId(1)).unwrap()
    }

    /// A READ in a file of a predictor's map: the rest of the file is queued before the
    /// window is filled, filled by the worker once the READ is answered (no pool threads),
    /// every byte once; the file's next READs then find it present and fetch nothing.
    #[test]
    fn a_read_in_a_file_fills_the_rest_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let len = 12 * MIB as usize;
        let s = Session::new(SlowBlob::new(len, Duration::ZERO))
            .with_readahead(MIB)
            .with_sequential_ahead(0)
            .with_fill_threads(0);
        let map = crate::predict::FileMap::from_entries(
            b"blob",
            &[
                (MIB / 2..5 * MIB, MIB / 2..5 * MIB),
                (5 * MIB..12 * MIB, 5 * MIB..12 * MIB),
            ],
            crate::predict::Rules {
                whole_file: 6 * MIB,
                directory: 0,
                needed: crate::predict::NeededRule::Off,
                cousins: 0,
            },
            MIB,
        );
        let predictor = Arc::new(crate::predict::Predictor::new());
        let s = s.with_predictor(Arc::clone(&predictor));
        open(&s, dir.path());
        // Before the map is set, a READ fetches its window only.
        read_blob(&s, 2, 9 * MIB, 4096);
        assert_eq!(s.server().produced(), MIB);
        predictor.set(map);
        read_blob(&s, 3, 2 * MIB, 4096);
        // The window [2, 3) MiB, then the file's other pieces from its start: [0.5, 2) and
        // [3, 5) MiB, cut at 0.5 + k MiB.
        let fills: Vec<_> = s.server().fills().into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            fills[1..],
            [
                2 * MIB..3 * MIB,
                MIB / 2..3 * MIB / 2,
                3 * MIB / 2..2 * MIB,
                3 * MIB..7 * MIB / 2,
                7 * MIB / 2..9 * MIB / 2,
                9 * MIB / 2..5 * MIB,
            ]
        );
        assert_eq!(s.queued_fill_jobs(), 0);
        // The file's other READs (whose windows end in it): nothing more fetched, and the
        // bytes are the blob's.
        let before = s.server().produced();
        for off in [MIB / 2, 3 * MIB, 4 * MIB] {
            read_blob(&s, 4, off, 4096);
        }
        assert_eq!(s.server().produced(), before);
        let cache = std::fs::read(dir.path().join("cache")).unwrap();
        assert_eq!(
            cache[MIB as usize / 2..5 * MIB as usize],
            s.server().blob[MIB as usize / 2..5 * MIB as usize]
        );
        // The second file (7 MiB) is above the bound: its READ fetches its window only.
        read_blob(&s, 5, 6 * MIB, 4096);
        assert_eq!(s.server().produced(), before + MIB);
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let t = Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(30), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn no_byte_is_fetched_twice_with_many_workers() {
        let dir = tempfile::tempdir().unwrap();
        let len = 24 * MIB as usize + 4321;
        let (s, object) = session(dir.path(), len, Duration::from_millis(1));
        // Four workers serve, interleaved, the READs of two readers of the same file going
        // forwards (128 KiB at a time, as the kernel's readahead) and of one going backwards,
        // while three pool threads run the fills ahead they queue.
        let next = std::sync::atomic::AtomicU64::new(0);
        let reads: Vec<u64> = (0..len as u64 / (128 << 10) + 1)
            .flat_map(|i| {
                let fwd = i * (128 << 10);
                [fwd, fwd, (len as u64).saturating_sub(fwd + 1)]
            })
            .collect();
        let stop = Shutdown::new();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| s.fill_worker(&stop));
            }
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                            let Some(&off) = reads.get(i) else { break };
                            read_blob(&s, i as u32 + 10, off, 128 << 10);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            wait_until("queue drained", || s.queued_fill_jobs() == 0);
            stop.trigger();
        });
        assert_each_byte_once(s.server());
        assert_eq!(
            object.lock_ranges().inflight,
            crate::ranges::RangeSet::new()
        );
        let cache = std::fs::read(dir.path().join("cache")).unwrap();
        assert_eq!(&cache[..len], &s.server().blob[..]);
        let st = s.stats();
        assert_eq!(st.fetched_bytes, len as u64);
        assert!(st.ahead_bytes > 0, "{st:?}");
        assert_eq!(st.read_errors, 0);
    }

    #[test]
    fn a_read_waits_for_a_chunk_being_filled_and_runs_a_queued_one_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (s, object) = session(dir.path(), 4 * MIB as usize, Duration::from_millis(300));
        let filler = std::thread::scope(|scope| {
            let producer = scope.spawn(|| {
                s.fill_ahead(&object, 0..3 * MIB, &mut AlignedBuf::new(MIB as usize));
                std::thread::current().id()
            });
            // Three jobs queued; the producer runs the first one.
            wait_until("first job started", || s.queued_fill_jobs() == 2);
            // A READ inside the running job waits for it and fetches nothing itself.
            read_blob(&s, 2, 4096, 4096);
            assert!(object.present().intersects(4096..8192));
            assert_eq!(s.metrics().claim_wait().count, 1);
            assert!(
                s.server()
                    .fills()
                    .iter()
                    .all(|(t, _)| *t != std::thread::current().id())
            );
            // The producer went on with the second job; a READ inside the third, still
            // queued, takes it out of the queue and fills it on its own thread.
            read_blob(&s, 3, 2 * MIB + 4096, 4096);
            assert!(object.present().intersects(2 * MIB..3 * MIB));
            producer.join().unwrap()
        });
        let fills = s.server().fills();
        let me = std::thread::current().id();
        let by = |r: Range<u64>| {
            fills
                .iter()
                .filter(|(_, f)| f.start < r.end && r.start < f.end)
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
        };
        assert_eq!(by(0..MIB), [filler]);
        assert_eq!(by(MIB..2 * MIB), [filler]);
        assert_eq!(by(2 * MIB..3 * MIB), [me]);
        let mut seen = crate::ranges::RangeSet::new();
        for (_, r) in &fills {
            assert!(!seen.intersects(r.clone()), "{r:?} fetched twice");
            seen.insert(r.clone());
        }
        assert_eq!(s.queued_fill_jobs(), 0);
        assert!(object.lock_ranges().inflight.is_empty());
        let cache = std::fs::read(dir.path().join("cache")).unwrap();
        assert_eq!(
            &cache[..3 * MIB as usize],
            &s.server().blob[..3 * MIB as usize]
        );
    }

    #[test]
    fn shutdown_drops_queued_jobs_and_releases_their_claims() {
        let dir = tempfile::tempdir().unwrap();
        let (s, object) = session(dir.path(), 4 * MIB as usize, Duration::from_millis(200));
        // Four jobs queued, as a worker would before helping with them.
        let batch = s.pool.batch();
        for i in 0..4 {
            for gap in object.claim_gaps(i * MIB..(i + 1) * MIB) {
                s.pool.push(&object, gap, batch).unwrap();
            }
        }
        let stop = Shutdown::new();
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| s.fill_worker(&stop));
            wait_until("first job started", || s.queued_fill_jobs() == 3);
            stop.trigger();
            worker.join().unwrap();
        });
        // The job in progress was finished; the queued ones were dropped, unclaimed.
        assert_eq!(s.queued_fill_jobs(), 0);
        assert!(object.lock_ranges().inflight.is_empty());
        assert_eq!(object.present(), std::iter::once(0..MIB).collect());
        assert_eq!(s.stats().ahead_bytes, MIB);
        // A READ for a dropped job's bytes fetches them (it does not wait for anyone).
        read_blob(&s, 2, 3 * MIB, 4096);
        assert!(object.present().intersects(3 * MIB..3 * MIB + 4096));
        let cache = std::fs::read(dir.path().join("cache")).unwrap();
        assert_eq!(
            &cache[3 * MIB as usize..],
            &s.server().blob[3 * MIB as usize..]
        );
    }

    #[test]
    fn the_queue_is_bounded_and_a_full_queue_is_filled_in_place() {
        let pool = FillPool::<(), FakeFd>::new(2);
        let dir = tempfile::tempdir().unwrap();
        let (mut s, object) = session(dir.path(), 5 * MIB as usize, Duration::ZERO);
        assert!(pool.push(&object, 0..4096, 0).is_ok());
        assert!(pool.push(&object, 4096..8192, 0).is_ok());
        assert_eq!(pool.push(&object, 8192..12288, 0), Err(8192..12288));
        assert_eq!(pool.len(), 2);
        pool.clear();
        assert!(object.lock_ranges().inflight.is_empty());
        // An engine whose queue holds two jobs: the first two chunks are queued, the next
        // three filled at once by the worker, then it helps with the queued two.
        s.pool = FillPool::new(2);
        s.fill_ahead(&object, 0..5 * MIB, &mut AlignedBuf::new(MIB as usize));
        let starts: Vec<u64> = s
            .server()
            .fills()
            .iter()
            .map(|(_, r)| r.start / MIB)
            .collect();
        assert_eq!(starts, [2, 3, 4, 0, 1]);
        assert_each_byte_once(s.server());
        assert_eq!(s.stats().ahead_bytes, 5 * MIB);
    }

    /// Predicted pieces: a READ's near ones ahead of every queued job, in their order; far
    /// ones behind; a full queue drops far guesses (their claims released) to make room for
    /// near ones, and refuses (releases) what still finds no room.
    #[test]
    fn near_guesses_go_first_and_far_ones_make_room() {
        let pool = FillPool::<(), FakeFd>::new(4);
        let dir = tempfile::tempdir().unwrap();
        let (_s, object) = session(dir.path(), 40 * MIB as usize, Duration::ZERO);
        let claim = |r: Range<u64>| {
            let gaps = object.claim_gaps(r.clone());
            assert_eq!(gaps, [r]);
            gaps
        };
        assert!(pool.push(&object, claim(0..MIB).remove(0), 0).is_ok());
        let far: Vec<_> = [10 * MIB..11 * MIB, 11 * MIB..12 * MIB]
            .into_iter()
            .flat_map(claim)
            .collect();
        assert_eq!(pool.push_predicted(&object, far, 1, false), 2 * MIB);
        let near: Vec<_> = [20 * MIB..21 * MIB, 21 * MIB..22 * MIB]
            .into_iter()
            .flat_map(claim)
            .collect();
        assert_eq!(pool.push_predicted(&object, near, 2, true), 2 * MIB);
        // The second far guess made room, and may be claimed again.
        assert_eq!(object.claim_gaps(11 * MIB..12 * MIB), [11 * MIB..12 * MIB]);
        object.release(11 * MIB..12 * MIB, false, false);
        // A later READ's near piece goes ahead of the earlier one's; the last far guess
        // makes room.
        let later = claim(30 * MIB..31 * MIB);
        assert_eq!(pool.push_predicted(&object, later, 3, true), MIB);
        // Full, nothing far left: refused, released.
        let more = claim(31 * MIB..32 * MIB);
        assert_eq!(pool.push_predicted(&object, more, 4, true), 0);
        assert_eq!(object.claim_gaps(31 * MIB..32 * MIB), [31 * MIB..32 * MIB]);
        object.release(31 * MIB..32 * MIB, false, false);
        let order: Vec<u64> = std::iter::from_fn(|| pool.pop_any())
            .map(|j| j.range.start / MIB)
            .collect();
        assert_eq!(order, [30, 20, 21, 0]);
    }
}
