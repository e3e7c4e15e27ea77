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
//!   (so an engine without pool threads still fills everything it claimed);
//! - a READ whose requested bytes are claimed by a queued job: it takes that job out of the
//!   queue and runs it itself, instead of waiting for a thread to get to it.
//!
//! The queue is bounded ([`MAX_QUEUED_JOBS`]): a worker that finds it full runs its job at
//! once. When the pool threads stop (shutdown), jobs still queued are dropped and their claims
//! released (nothing is marked written), so no READ waits for them.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{Engine, Object, Sink};
use crate::buf::AlignedBuf;
use crate::server::OnDemandServer;
use crate::shutdown::Shutdown;

/// Pool threads by default ([`Engine::with_fill_threads`]).
pub const DEFAULT_FILL_THREADS: usize = 2;

/// Most jobs queued at once (with 1 MiB jobs, 64 MiB claimed ahead of readers).
pub(crate) const MAX_QUEUED_JOBS: usize = 64;

/// A claimed range of an object, waiting for a thread to fill it.
pub(crate) struct Job<O, K> {
    pub(crate) object: Arc<Object<O, K>>,
    pub(crate) range: Range<u64>,
    /// The call of [`Engine::fill_ahead`] that queued it.
    batch: u64,
}

/// The queue of fill jobs shared by the pool threads and the workers.
pub(crate) struct FillPool<O, K> {
    jobs: Mutex<VecDeque<Job<O, K>>>,
    ready: Condvar,
    capacity: usize,
    next_batch: AtomicU64,
}

impl<O, K> FillPool<O, K> {
    pub(crate) fn new(capacity: usize) -> Self {
        FillPool {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            next_batch: AtomicU64::new(0),
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
        });
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// The first job, waiting up to `timeout` for one.
    fn pop_wait(&self, timeout: Duration) -> Option<Job<O, K>> {
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
    /// helps until none of these jobs is left in the queue. Errors are logged: the reader's
    /// own READ fetches the range again.
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
        while let Some(job) = self.pool.pop_for(batch) {
            self.run_job(&job.object, job.range, buf);
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
    fn run_job(&self, object: &Object<S::Object, K>, range: Range<u64>, buf: &mut AlignedBuf) {
        if !object.is_closed() {
            match self.fill(object, range.clone(), buf, false) {
                Ok(()) => self
                    .stats
                    .ahead_bytes
                    .add(range.end.min(object.size()).saturating_sub(range.start)),
                Err((pos, e)) => {
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
            }
        }
        // Fill marks the pieces it wrote; whatever was not written is released unwritten.
        object.release(range, false, false);
    }

    /// Run one pool thread until `shutdown`: take fill-ahead jobs as they are queued and
    /// fill them. When it stops, jobs still queued are dropped (their claims released).
    /// [`crate::Daemon::run`] and [`crate::FanotifyDaemon::run`] start
    /// [`fill_threads`](Self::fill_threads) of these; an embedder with its own loop may run
    /// them on its own threads.
    pub fn fill_worker(&self, shutdown: &Shutdown) {
        let mut buf = AlignedBuf::new(self.ahead_chunk().clamp(64 << 10, 16 << 20) as usize);
        while !shutdown.is_triggered() {
            if let Some(job) = self.pool.pop_wait(crate::shutdown::POLL_INTERVAL) {
                self.run_job(&job.object, job.range, &mut buf);
            }
        }
        self.pool.clear();
    }

    /// Fill-ahead jobs queued and not started yet.
    pub fn queued_fill_jobs(&self) -> usize {
        self.pool.len()
    }
}
