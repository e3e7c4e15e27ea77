//! The engine under both kernel transports: the object table, range claims, the READ
//! window, the one fill loop (pad to blocks, direct write, mark), fill ahead of sequential
//! readers, prefetch, and the scan of present ranges after a restart.
//!
//! A transport turns kernel messages into engine calls and gives each object a [`Sink`]: the
//! cachefiles session ([`crate::Session`]) answers OPEN with [`Engine::open_object`] and READ
//! with a window fill through the object's anonymous fd; the fanotify transport
//! ([`crate::FanotifyDaemon`]) opens an object per backing file and serves each pre-content
//! event as a READ. What the engine knows about an object's bytes ([`Object::present`]) is
//! the same whichever transport asked for them, and two workers never fetch the same bytes.
//!
//! Files: `object.rs` (an object and its range claims), `window.rs` (the READ window and
//! the sequential stream), `fill.rs` (the fill loop, READ fills, fill ahead), `prefetch.rs`
//! (background filling), `report.rs` (metrics file, prefetch progress), `sink.rs` (what a
//! transport provides), `pool.rs` (the fill-ahead jobs and who runs them), `write_behind.rs`
//! (a pool thread's writes beside its decoding).

mod fill;
mod object;
mod pool;
mod prefetch;
mod report;
mod sink;
#[cfg(test)]
mod test_blob;
mod window;
mod write_behind;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cachefiles_proto::ObjectId;

pub use fill::ReadPlan;
pub(crate) use fill::{Answer, Later};
pub use object::Object;
pub use pool::default_fill_threads;
pub(crate) use prefetch::Prefetcher;
pub use prefetch::{
    DEFAULT_PREFETCH_CHUNK, DEFAULT_PREFETCH_NICE, PrefetchConfig, PrefetchObserver,
};
pub use sink::Sink;
pub use window::{DEFAULT_READAHEAD, DEFAULT_SEQUENTIAL_AHEAD, MAX_READ_FILL, window};
pub(crate) use window::{Growth, round_up};

use crate::metrics::{Stats, StatsSnapshot};
use crate::predict::Predictor;
use crate::server::{OnDemandServer, Opened};
use crate::trace::Recorder;

/// The least pool threads an engine with a predictor runs ([`Engine::with_predictor`]).
pub const PREDICT_FILL_THREADS: usize = 3;

/// Open objects by id.
type ObjectTable<O, K> = HashMap<ObjectId, Arc<Object<O, K>>>;

/// The object table, the fill logic and the counters, shared by all worker threads of a
/// transport.
///
/// `K` is the transport's per-object [`Sink`]: [`crate::AnonFd`] with cachefiles, the
/// backing file with fanotify, anything implementing it in tests.
pub struct Engine<S: OnDemandServer, K> {
    server: S,
    objects: Mutex<ObjectTable<S::Object, K>>,
    readahead: u64,
    async_readahead: bool,
    sequential_ahead: u64,
    /// The kernel sends a request even for present bytes (fanotify): present ranges of a
    /// request are trusted, not fetched again.
    pub(crate) asks_for_present: bool,
    /// How far the fill ahead of a sequential reader reaches: the transport's rule.
    pub(crate) growth: Growth,
    pub(crate) stats: Stats,
    /// READ fills in progress (prefetch gives way while there are any).
    pub(crate) active_reads: AtomicUsize,
    pub(crate) prefetch: Option<Prefetcher<S::Object, K>>,
    /// Fill-ahead jobs, and how many pool threads run them.
    pool: pool::FillPool<S::Object, K>,
    fill_threads: usize,
    /// Pool threads write behind their decoding ([`Engine::with_write_behind`]).
    write_behind: bool,
    /// Where the ranges readers ask for are recorded ([`Engine::with_recorder`]).
    recorder: Option<Arc<Recorder>>,
    /// What else to fill when a READ lands in a file ([`Engine::with_predictor`]).
    predictor: Option<Arc<Predictor>>,
    /// Told of what each prefetch job made present ([`Engine::with_prefetch_observer`]).
    prefetch_observer: Option<Arc<dyn PrefetchObserver>>,
}

impl<S: OnDemandServer, K> fmt::Debug for Engine<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("objects", &self.lock().len())
            .field("readahead", &self.readahead)
            .field("sequential_ahead", &self.sequential_ahead)
            .field("fill_threads", &self.fill_threads)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

/// Why [`Engine::open_object`] refused an object; the sink comes back, to be closed after
/// the kernel is answered.
#[derive(Debug)]
pub struct Refused<K> {
    /// The errno for the kernel.
    pub errno: cachefiles_proto::Errno,
    /// The sink the object would have had.
    pub sink: K,
}

impl<S: OnDemandServer, K> Engine<S, K> {
    /// An engine serving `server`, with [`DEFAULT_READAHEAD`] and
    /// [`DEFAULT_SEQUENTIAL_AHEAD`].
    pub fn new(server: S) -> Self {
        Engine {
            server,
            objects: Mutex::new(HashMap::new()),
            readahead: DEFAULT_READAHEAD,
            async_readahead: false,
            sequential_ahead: DEFAULT_SEQUENTIAL_AHEAD,
            asks_for_present: false,
            growth: Growth::Doubling,
            stats: Stats::default(),
            active_reads: AtomicUsize::new(0),
            prefetch: None,
            pool: pool::FillPool::new(pool::MAX_QUEUED_JOBS),
            fill_threads: default_fill_threads(),
            write_behind: false,
            recorder: None,
            predictor: None,
            prefetch_observer: None,
        }
    }

    /// Tell `observer` of each prefetch job's ranges once they are present (see
    /// [`PrefetchObserver`]): e.g. a [`crate::warm::PageCacheWarmer`] that reads them into
    /// a mount's page cache ahead of its readers.
    pub fn with_prefetch_observer(mut self, observer: Arc<dyn PrefetchObserver>) -> Self {
        self.prefetch_observer = Some(observer);
        self
    }

    /// When a READ lands in a file, fill what `predictor`'s map relates to it (the rest of
    /// the file, its directory's files: [`crate::predict::Rules`]) on the fill pool, in the
    /// background, while the READ's own window is filled (see [`crate::predict`]). Nothing is
    /// predicted until the map is set. cachefiles only (the fanotify transport ignores it).
    ///
    /// The pool threads become at least [`PREDICT_FILL_THREADS`] (a later
    /// [`with_fill_threads`](Self::with_fill_threads) sets them as it says): predicted pieces
    /// are waits for the network more than work for the CPU, and with one pool thread they
    /// queued behind each other (measured in the container start: DESIGN.md, "Cold
    /// prediction").
    pub fn with_predictor(mut self, predictor: Arc<Predictor>) -> Self {
        self.predictor = Some(predictor);
        self.fill_threads = self.fill_threads.max(PREDICT_FILL_THREADS);
        self
    }

    /// Record every range the kernel demands (each READ; each fanotify pre-content event),
    /// before the window grows it, keyed by the object's cookie key: an access trace for
    /// [`PrefetchConfig::with_trace`] on the next cold start (see [`Recorder`]).
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// The recorder, if any.
    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.recorder.as_ref()
    }

    /// Make the recorded trace durable (the daemons call it as their `run` returns).
    pub(crate) fn flush_recorder(&self) {
        if let Some(recorder) = &self.recorder {
            match recorder.flush() {
                Ok(()) => log::info!(
                    "access trace: {} ranges, {} bytes recorded",
                    recorder.entries(),
                    recorder.bytes()
                ),
                Err(e) => log::error!("access trace: {e}"),
            }
        }
    }

    /// Fill objects in the background as they are opened, as `config` says (see
    /// [`crate::PrefetchConfig`]). The prefetch threads run inside [`crate::Daemon::run`], or in
    /// the embedder's own threads through [`Engine::prefetch_worker`].
    pub fn with_prefetch(mut self, config: PrefetchConfig) -> Self {
        self.prefetch = Some(Prefetcher::new(config));
        self
    }

    /// Set the readahead window in bytes (rounded up to 4 KiB; 0 turns readahead off, so each
    /// READ fills only what it asked for).
    pub fn with_readahead(mut self, bytes: u64) -> Self {
        self.readahead = round_up(bytes.min(i64::MAX as u64 / 2));
        self
    }

    /// Complete each READ as soon as its requested part is written, and fill the rest of its
    /// readahead window afterwards (claimed first, so a READ for that part waits for it
    /// instead of fetching it again). The reader then waits for what it asked for only, at the
    /// price of more upcalls: the kernel sends READs for window parts not written yet. Off by
    /// default (one upcall per window).
    pub fn with_async_readahead(mut self, on: bool) -> Self {
        self.async_readahead = on;
        self
    }

    /// Fill ahead of sequential readers, up to `max_bytes` past their READ's window (rounded
    /// up to 4 KiB; 0 turns it off). Default [`DEFAULT_SEQUENTIAL_AHEAD`].
    ///
    /// The kernel sends a READ only for bytes its cache file lacks, so a daemon sees a
    /// sequential reader only at its misses. When a READ starts where the previous READ's
    /// window (or what was filled ahead of it) of the same object ended or within it, the
    /// worker completes the READ and then goes on filling the range after the window: the
    /// readahead window's length (at least 256 KiB) the first time, twice the previous length
    /// each time the stream continues, up to `max_bytes`. The reader consumes one part while
    /// the server produces the next (on another core), and most of its reads then find the
    /// bytes present without any upcall. A READ elsewhere resets the stream, so random reads
    /// fetch no more than their readahead window. What a fill ahead claims, a READ waits for
    /// instead of fetching again; what is present or in flight is skipped.
    ///
    /// The fill starts after the READ's completion, cut into chunks that the pool threads
    /// ([`with_fill_threads`](Self::with_fill_threads)) and the worker that handled the READ
    /// run in parallel.
    pub fn with_sequential_ahead(mut self, max_bytes: u64) -> Self {
        self.sequential_ahead = round_up(max_bytes.min(i64::MAX as u64 / 2));
        self
    }

    /// Run fills ahead of sequential readers on `n` pool threads besides the worker that
    /// answered the READ (default [`default_fill_threads`], the CPUs but one; 0: that worker alone, with
    /// help from READs that land on its queued chunks). The fill is cut into jobs of one
    /// readahead window (at least 256 KiB), so a compressed stream is decoded on several
    /// cores at once while its reader consumes what is done; claims keep any two threads from
    /// fetching the same bytes, and a READ over a chunk in progress waits for it. The threads
    /// run inside [`crate::Daemon::run`] and [`crate::FanotifyDaemon::run`], or in the
    /// embedder's own threads through [`Engine::fill_worker`].
    pub fn with_fill_threads(mut self, n: usize) -> Self {
        self.fill_threads = n;
        self
    }

    /// Let each pool thread ([`with_fill_threads`](Self::with_fill_threads)) write behind its
    /// decoding (default off): a writer thread of its own writes a job into the object's sink
    /// while the pool thread produces the next job in a second buffer (one more thread and
    /// one more buffer per pool thread). A job is marked present only once its write
    /// returned. Measured on the fanotify read of a zstd RAFS tree (DESIGN.md, "Session 14"):
    /// faster in three same-VM runs of four, slower in one, so not the default.
    pub fn with_write_behind(mut self, on: bool) -> Self {
        self.write_behind = on;
        self
    }

    /// Pool threads for fills ahead ([`with_fill_threads`](Self::with_fill_threads)).
    pub fn fill_threads(&self) -> usize {
        self.fill_threads
    }

    /// The most a fill ahead of a sequential reader spans, in bytes (0: off).
    pub fn sequential_ahead(&self) -> u64 {
        self.sequential_ahead
    }

    /// The readahead window in bytes.
    pub fn readahead(&self) -> u64 {
        self.readahead
    }

    /// The server.
    pub fn server(&self) -> &S {
        &self.server
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The counters and latency histograms.
    pub fn metrics(&self) -> &Stats {
        &self.stats
    }

    /// The counters, histograms and gauges as Prometheus text (see [`crate::metrics`]).
    pub fn render_prometheus(&self) -> String {
        let gauges = crate::metrics::Gauges {
            objects: self.object_count() as u64,
            prefetch_pending_bytes: self.prefetch_pending_bytes(),
        };
        let mut objects = self.objects();
        objects.sort_by(|a, b| a.key().cmp(b.key()));
        // The server's own metrics first: the last line stays the fetch latency count.
        let mut text = String::new();
        self.server().render_metrics(&mut text);
        text.push_str(&crate::metrics::render_prometheus_with_objects(
            &self.stats,
            gauges,
            objects
                .iter()
                .map(|o| (o.key(), o.size(), o.present().intersection_len(0..o.size()))),
        ));
        text
    }

    /// Bytes queued for prefetch and not yet fetched or skipped (0 without prefetch).
    pub fn prefetch_pending_bytes(&self) -> u64 {
        self.prefetch.as_ref().map_or(0, |p| p.pending_bytes())
    }

    /// Number of open objects.
    pub fn object_count(&self) -> usize {
        self.lock().len()
    }

    /// The object with this id, if open.
    pub fn object(&self, id: ObjectId) -> Option<Arc<Object<S::Object, K>>> {
        self.lock().get(&id).cloned()
    }

    /// The open object with these keys, if any. In a shared domain (`domain_id=`) the volume
    /// key names the domain, so one object serves every image of the domain that uses the
    /// blob (the kernel opens a shared blob once).
    pub fn find(&self, volume_key: &[u8], cookie_key: &[u8]) -> Option<Arc<Object<S::Object, K>>> {
        self.lock()
            .values()
            .find(|o| o.volume_key() == volume_key && o.cookie_key() == cookie_key)
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, ObjectTable<S::Object, K>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget an object (its `copen` could not be written, or the embedder wants it gone).
    /// Returns it; drop it to close its fd.
    pub fn forget(&self, id: ObjectId) -> Option<Arc<Object<S::Object, K>>> {
        let object = self.lock().remove(&id)?;
        object.closed.store(true, Ordering::SeqCst);
        object.changed.notify_all();
        Some(object)
    }

    /// Put an object into the table under `id`, as the server opened it (`opened`), with the
    /// transport's `sink`. Refused (`EEXIST`) if the id is taken, (`EFBIG`) if the size is
    /// above `i64::MAX`; the server's object is then closed.
    pub fn open_object(
        &self,
        id: ObjectId,
        volume_key: &[u8],
        cookie_key: &[u8],
        opened: Opened<S::Object>,
        sink: K,
    ) -> Result<Arc<Object<S::Object, K>>, Refused<K>> {
        let errno =
            |e: i32| cachefiles_proto::Errno::new(e).unwrap_or(cachefiles_proto::Errno::EIO);
        let key = crate::server::ObjectKey {
            volume_key,
            cookie_key,
        };
        if opened.size > i64::MAX as u64 {
            log::warn!("object {id} ({key}): size {} too large", opened.size);
            self.server.close(&opened.object);
            return Err(Refused {
                errno: errno(nix::libc::EFBIG),
                sink,
            });
        }
        let mut table = self.lock();
        if table.contains_key(&id) {
            drop(table);
            log::error!("object {id} ({key}): object id already open; refusing with EEXIST");
            self.server.close(&opened.object);
            return Err(Refused {
                errno: errno(nix::libc::EEXIST),
                sink,
            });
        }
        let object = Arc::new(Object::new(
            id,
            volume_key,
            cookie_key,
            opened.size,
            opened.object,
            sink,
        ));
        log::info!("OPEN object {id} ({key}): size {}", opened.size);
        table.insert(id, Arc::clone(&object));
        Ok(object)
    }

    /// Whether an object with this id is open.
    pub fn contains(&self, id: ObjectId) -> bool {
        self.lock().contains_key(&id)
    }

    /// Start prefetching `object` as the prefetch configuration plans (nothing without
    /// prefetch). Call it once the object's sink accepts writes.
    pub fn object_ready(&self, object: &Arc<Object<S::Object, K>>) {
        if let Some(prefetch) = &self.prefetch {
            prefetch.object_opened(Arc::clone(object));
        }
    }

    /// The whole objects in the table, in no order.
    pub fn objects(&self) -> Vec<Arc<Object<S::Object, K>>> {
        self.lock().values().cloned().collect()
    }
}
