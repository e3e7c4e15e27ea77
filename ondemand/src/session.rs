//! The pure part of the daemon: an object table keyed by object id, and the decisions that
//! turn each kernel [`Request`] into [`Action`]s: answer an OPEN, fill a window of an object,
//! complete a READ, forget an object.
//!
//! [`Session::handle`] makes no syscall and calls the server only for OPEN. [`Session::execute`]
//! carries the actions out through the [`ObjectFd`] trait and a command sink, and
//! [`Session::serve_message`] does both for one raw message read from a [`Device`]; tests drive
//! all three with scripted messages and temporary files instead of the kernel.
//!
//! Rules the session keeps:
//! - An object enters the table **before** its `copen` is written, so a READ that another
//!   worker reads right after the `copen` finds it. If the `copen` write fails it leaves again.
//! - A READ for a known object always ends with [`Action::ReadComplete`], whatever happened
//!   while filling: a READ that is never completed blocks its reader forever.
//! - A refused OPEN is answered with `copen <id>,-<errno>` and then its fd is closed.
//! - A READ window starts at the request's block, spans the request (at most
//!   [`MAX_READ_FILL`] of it) or the readahead size, whichever is longer, and stops at the
//!   object's size rounded up to a block; the tail past the object's end is zero-filled.
//! - A READ that continues the previous one's stream is followed, after its completion, by a
//!   fill ahead ([`Action::FillAhead`], [`Session::with_sequential_ahead`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cachefiles_proto::msg::{CACHEFILES_OP_OPEN, MsgHeader};
use cachefiles_proto::{
    CloseRequest, Command, DecodeError, Errno, MsgId, ObjectId, OpenReply, OpenRequest,
    ReadRequest, Request,
};
use zerocopy::FromBytes;

use crate::device::{AlignedBuf, BLOCK_SIZE, Device, ObjectFd};
pub use crate::metrics::{Stats, StatsSnapshot};
use crate::prefetch::Prefetcher;
use crate::ranges::RangeSet;
use crate::server::{ObjectKey, OnDemandServer, errno_of};

/// Default readahead window: 1 MiB.
pub const DEFAULT_READAHEAD: u64 = 1 << 20;

/// Default limit of [`Session::with_sequential_ahead`]: 8 MiB.
pub const DEFAULT_SEQUENTIAL_AHEAD: u64 = 8 << 20;

/// Chunk size of readahead filled after the READ's completion (asynchronous readahead).
const ASYNC_CHUNK: u64 = 256 << 10;

/// The most one READ makes the daemon fill for its requested part. The kernel asks for a
/// few MiB at most (netfs subrequests); a longer READ is filled up to this much and
/// completed, so a buggy or hostile channel cannot make one worker write without end.
pub const MAX_READ_FILL: u64 = 64 << 20;

/// The first fill ahead of a sequential reader is at least this long.
const AHEAD_MIN: u64 = 256 << 10;

const BLOCK: u64 = BLOCK_SIZE as u64;

/// An object the kernel opened and the server accepted.
pub struct Object<O, F> {
    id: ObjectId,
    key: String,
    cookie_key: Vec<u8>,
    volume_key: Vec<u8>,
    size: u64,
    state: O,
    fd: F,
    pub(crate) ranges: Mutex<ObjectRanges>,
    pub(crate) changed: Condvar,
    pub(crate) closed: AtomicBool,
}

/// What the daemon knows about the bytes of one object's cache file. All block-aligned.
#[derive(Debug, Default)]
pub(crate) struct ObjectRanges {
    /// Written by this session (READ fills and prefetch).
    pub(crate) written: RangeSet,
    /// The part of `written` that prefetch wrote.
    pub(crate) prefetched: RangeSet,
    /// Being filled right now (claimed by a READ or a prefetch).
    pub(crate) inflight: RangeSet,
    /// Found present in the cache file by a scan (`SEEK_DATA`), e.g. from an earlier daemon.
    pub(crate) scanned: RangeSet,
    /// Sequential-reader detection for [`Session::with_sequential_ahead`].
    pub(crate) stream: Stream,
}

/// Where the READs of one object have been going: the last READ window's start, the end of
/// what was filled for it (window and fill ahead), and the length of the last fill ahead.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stream {
    start: u64,
    end: u64,
    ahead: u64,
}

impl Stream {
    /// Record a READ `window` and return the range to fill ahead of it, if the READ continues
    /// the stream (it starts within the last window or what was filled ahead of it). The
    /// length ahead starts at `base` and doubles with every READ that continues the stream,
    /// up to `max`; a READ elsewhere resets it. Nothing past `limit`.
    pub(crate) fn advance(
        &mut self,
        window: &Range<u64>,
        base: u64,
        max: u64,
        limit: u64,
    ) -> Option<Range<u64>> {
        let sequential = self.end > self.start && (self.start..=self.end).contains(&window.start);
        self.ahead = match (sequential, self.ahead) {
            (false, _) => 0,
            (true, 0) => base.min(max),
            (true, a) => a.saturating_mul(2).min(max),
        };
        let ahead_end = window.end.saturating_add(self.ahead).min(limit);
        self.start = window.start;
        self.end = ahead_end.max(window.end);
        (ahead_end > window.end).then_some(window.end..ahead_end)
    }
}

impl ObjectRanges {
    /// Present or being filled: what a prefetch or readahead need not fetch.
    pub(crate) fn busy_or_present(&self) -> RangeSet {
        let mut all = self.written.clone();
        all.extend(&self.inflight);
        all.extend(&self.scanned);
        all
    }
}

impl<O, F> Object<O, F> {
    /// The kernel's id for it.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Its key, printable (`volume/cookie`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its size, as answered in `copen`.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The server's state for it.
    pub fn state(&self) -> &O {
        &self.state
    }

    /// Its fd.
    pub fn fd(&self) -> &F {
        &self.fd
    }

    /// The cookie key it was opened with.
    pub fn cookie_key(&self) -> &[u8] {
        &self.cookie_key
    }

    /// The volume key it was opened with (`erofs,<fsid or domain>`, without NUL).
    pub fn volume_key(&self) -> &[u8] {
        &self.volume_key
    }

    /// The ranges known present: written by this session, or found in the cache file.
    pub fn present(&self) -> RangeSet {
        let r = self.lock_ranges();
        let mut all = r.written.clone();
        all.extend(&r.scanned);
        all
    }

    /// Whether the kernel closed it (CLOSE) or it was forgotten.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn lock_ranges(&self) -> MutexGuard<'_, ObjectRanges> {
        // Range sets are updated by single calls; a poisoned lock is still consistent.
        self.ranges.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim the parts of `range` that nobody has written, is filling or found present: they
    /// go in flight (a READ over them waits) and are returned, for the caller to fill and
    /// [`release`](Self::release).
    pub(crate) fn claim_gaps(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut r = self.lock_ranges();
        let gaps = r.busy_or_present().gaps(range);
        for g in &gaps {
            r.inflight.insert(g.clone());
        }
        gaps
    }

    /// Mark `range` (claimed before) as done: written if `ok`, in any case no longer in flight.
    pub(crate) fn release(&self, range: Range<u64>, ok: bool, by_prefetch: bool) {
        let mut r = self.lock_ranges();
        r.inflight.remove(range.clone());
        if ok {
            r.written.insert(range.clone());
            if by_prefetch {
                r.prefetched.insert(range);
            }
        }
        drop(r);
        self.changed.notify_all();
    }
}

impl<O, F: ObjectFd> Object<O, F> {
    /// Ask the cache file what it already holds in `range` (written by an earlier daemon, or
    /// before a restart: two `lseek`s in the usual case) and remember the whole blocks as
    /// present, so nothing fetches them again.
    pub(crate) fn scan_present(&self, range: Range<u64>) {
        if let Ok(found) = self.fd.data_ranges(range) {
            let found = RangeSet::whole_blocks(found, BLOCK);
            if !found.is_empty() {
                self.lock_ranges().scanned.extend(&found);
            }
        }
    }
}

impl<O, F> fmt::Debug for Object<O, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What to do for a request. Produced by [`Session::handle`], carried out by
/// [`Session::execute`].
pub enum Action<O, F> {
    /// Write `copen <msg_id>,<size or -errno>`.
    Copen {
        /// The OPEN's id.
        msg_id: MsgId,
        /// Size or errno.
        reply: OpenReply,
        /// The object this OPEN put into the table (on success): if the `copen` cannot be
        /// written, it is taken out again.
        inserted: Option<ObjectId>,
    },
    /// Close an fd the session does not keep (after a refused OPEN, once its `copen` is out).
    CloseFd(F),
    /// Produce `range` of the object (block-aligned) and write it through its fd.
    Fill {
        /// The object.
        object: Arc<Object<O, F>>,
        /// The window, block-aligned, within the object's size rounded up to a block.
        range: Range<u64>,
        /// End of what the kernel asked for (the rest of `range` is readahead).
        requested_end: u64,
    },
    /// After the READ is completed: fill `range` (block-aligned), which follows the window of
    /// a sequential reader, so its next reads find the bytes present (or in flight) instead of
    /// waiting for an upcall ([`Session::with_sequential_ahead`]).
    FillAhead {
        /// The object.
        object: Arc<Object<O, F>>,
        /// What to fill, where nothing is present or in flight.
        range: Range<u64>,
    },
    /// Complete the READ through the object's fd.
    ReadComplete {
        /// The object.
        object: Arc<Object<O, F>>,
        /// The READ's id.
        msg_id: MsgId,
    },
    /// The object left the table: tell the server, then drop it (its fd closes once in-flight
    /// fills end).
    Close(Arc<Object<O, F>>),
    /// Nothing can be done; log it.
    Ignore(&'static str),
}

impl<O, F> fmt::Debug for Action<O, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Copen {
                msg_id,
                reply,
                inserted,
            } => f
                .debug_struct("Copen")
                .field("msg_id", msg_id)
                .field("reply", reply)
                .field("inserted", inserted)
                .finish(),
            Action::CloseFd(_) => f.write_str("CloseFd"),
            Action::Fill {
                object,
                range,
                requested_end,
            } => f
                .debug_struct("Fill")
                .field("object", &object.id)
                .field("range", range)
                .field("requested_end", requested_end)
                .finish(),
            Action::FillAhead { object, range } => f
                .debug_struct("FillAhead")
                .field("object", &object.id)
                .field("range", range)
                .finish(),
            Action::ReadComplete { object, msg_id } => f
                .debug_struct("ReadComplete")
                .field("object", &object.id)
                .field("msg_id", msg_id)
                .finish(),
            Action::Close(object) => f.debug_tuple("Close").field(&object.id).finish(),
            Action::Ignore(why) => f.debug_tuple("Ignore").field(why).finish(),
        }
    }
}

/// Open objects by id.
type ObjectTable<O, F> = HashMap<ObjectId, Arc<Object<O, F>>>;

/// The object table and the request logic, shared by all worker threads.
///
/// `F` is the per-object fd type: [`crate::AnonFd`] with the kernel, anything implementing
/// [`ObjectFd`] in tests.
pub struct Session<S: OnDemandServer, F> {
    server: S,
    objects: Mutex<ObjectTable<S::Object, F>>,
    readahead: u64,
    async_readahead: bool,
    sequential_ahead: u64,
    pub(crate) stats: Stats,
    /// READ fills in progress (prefetch gives way while there are any).
    pub(crate) active_reads: AtomicUsize,
    pub(crate) prefetch: Option<Prefetcher<S::Object, F>>,
}

impl<S: OnDemandServer, F> fmt::Debug for Session<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("objects", &self.lock().len())
            .field("readahead", &self.readahead)
            .field("sequential_ahead", &self.sequential_ahead)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

/// `x` rounded up to a block, saturating near `u64::MAX`.
fn round_up(x: u64) -> u64 {
    x.div_ceil(BLOCK).saturating_mul(BLOCK)
}

impl<S: OnDemandServer, F> Session<S, F> {
    /// A session serving `server`, with [`DEFAULT_READAHEAD`].
    pub fn new(server: S) -> Self {
        Session {
            server,
            objects: Mutex::new(HashMap::new()),
            readahead: DEFAULT_READAHEAD,
            async_readahead: false,
            sequential_ahead: DEFAULT_SEQUENTIAL_AHEAD,
            stats: Stats::default(),
            active_reads: AtomicUsize::new(0),
            prefetch: None,
        }
    }

    /// Fill objects in the background as they are opened, as `config` says (see
    /// [`crate::prefetch`]). The prefetch threads run inside [`crate::Daemon::run`], or in
    /// the embedder's own threads through [`Session::prefetch_worker`].
    pub fn with_prefetch(mut self, config: crate::prefetch::PrefetchConfig) -> Self {
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
    /// The fill runs on the worker that handled the READ, after its completion; with a
    /// single worker thread, other requests wait for it.
    pub fn with_sequential_ahead(mut self, max_bytes: u64) -> Self {
        self.sequential_ahead = round_up(max_bytes.min(i64::MAX as u64 / 2));
        self
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
        crate::metrics::render_prometheus(&self.stats, gauges)
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
    pub fn object(&self, id: ObjectId) -> Option<Arc<Object<S::Object, F>>> {
        self.lock().get(&id).cloned()
    }

    /// The open object with these keys, if any. In a shared domain (`domain_id=`) the volume
    /// key names the domain, so one object serves every image of the domain that uses the
    /// blob (the kernel opens a shared blob once).
    pub fn find(&self, volume_key: &[u8], cookie_key: &[u8]) -> Option<Arc<Object<S::Object, F>>> {
        self.lock()
            .values()
            .find(|o| o.volume_key == volume_key && o.cookie_key == cookie_key)
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, ObjectTable<S::Object, F>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget an object (its `copen` could not be written, or the embedder wants it gone).
    /// Returns it; drop it to close its fd.
    pub fn forget(&self, id: ObjectId) -> Option<Arc<Object<S::Object, F>>> {
        let object = self.lock().remove(&id)?;
        object.closed.store(true, Ordering::SeqCst);
        object.changed.notify_all();
        Some(object)
    }

    /// Decide what to do for `request`. `fd` is the adopted fd of an OPEN (ignored, and
    /// dropped, for other requests). Calls the server's `open` for an OPEN; nothing else.
    pub fn handle(&self, request: &Request<'_>, fd: Option<F>) -> Vec<Action<S::Object, F>> {
        match request {
            Request::Open(open) => match fd {
                Some(fd) => self.handle_open(open, fd),
                None => {
                    Stats::bump(&self.stats.opens, 1);
                    Stats::bump(&self.stats.open_errors, 1);
                    vec![Action::Copen {
                        msg_id: open.msg_id,
                        reply: OpenReply::Error(Errno::EIO),
                        inserted: None,
                    }]
                }
            },
            Request::Read(read) => self.handle_read(read),
            Request::Close(close) => self.handle_close(close),
        }
    }

    fn handle_open(&self, open: &OpenRequest<'_>, fd: F) -> Vec<Action<S::Object, F>> {
        Stats::bump(&self.stats.opens, 1);
        let key = ObjectKey {
            volume_key: open.volume_key,
            cookie_key: open.cookie_key,
        };
        let refuse = |errno: Errno, fd: F| {
            Stats::bump(&self.stats.open_errors, 1);
            vec![
                Action::Copen {
                    msg_id: open.msg_id,
                    reply: OpenReply::Error(errno),
                    inserted: None,
                },
                Action::CloseFd(fd),
            ]
        };
        if self.lock().contains_key(&open.object_id) {
            log::error!(
                "OPEN object {} ({key}): object id already open; refusing with EEXIST",
                open.object_id
            );
            return refuse(Errno::new(nix::libc::EEXIST).unwrap_or(Errno::EIO), fd);
        }
        let opened = match self.server.open(&key) {
            Ok(opened) => opened,
            Err(e) => {
                let errno = errno_of(&e);
                log::warn!(
                    "OPEN object {} ({key}): refused with errno {}: {e}",
                    open.object_id,
                    errno.get()
                );
                return refuse(errno, fd);
            }
        };
        if opened.size > i64::MAX as u64 {
            log::warn!(
                "OPEN object {} ({key}): size {} too large",
                open.object_id,
                opened.size
            );
            self.server.close(&opened.object);
            return refuse(Errno::new(nix::libc::EFBIG).unwrap_or(Errno::EIO), fd);
        }
        let size = opened.size;
        let object = Arc::new(Object {
            id: open.object_id,
            key: key.to_string(),
            cookie_key: open.cookie_key.to_vec(),
            volume_key: open.volume_key.to_vec(),
            size,
            state: opened.object,
            fd,
            ranges: Mutex::new(ObjectRanges::default()),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let id = object.id;
        {
            let mut table = self.lock();
            // Checked again under the lock: another worker may have raced us to this id.
            if table.contains_key(&id) {
                drop(table);
                log::error!(
                    "OPEN object {id} ({key}): object id already open; refusing with EEXIST"
                );
                self.server.close(&object.state);
                Stats::bump(&self.stats.open_errors, 1);
                // Dropping the object closes its fd before the copen; the kernel fails
                // that OPEN either way.
                drop(object);
                return vec![Action::Copen {
                    msg_id: open.msg_id,
                    reply: OpenReply::Error(Errno::new(nix::libc::EEXIST).unwrap_or(Errno::EIO)),
                    inserted: None,
                }];
            }
            log::info!("OPEN object {id} ({}): size {size}", object.key);
            table.insert(id, object);
        }
        vec![Action::Copen {
            msg_id: open.msg_id,
            reply: OpenReply::Size(size),
            inserted: Some(id),
        }]
    }

    fn handle_read(&self, read: &ReadRequest) -> Vec<Action<S::Object, F>> {
        Stats::bump(&self.stats.reads, 1);
        Stats::bump(&self.stats.requested_bytes, read.len);
        let Some(object) = self.object(read.object_id) else {
            Stats::bump(&self.stats.read_errors, 1);
            log::error!(
                "READ msg {} for unknown object {}: no fd to complete it with",
                read.msg_id,
                read.object_id
            );
            return vec![Action::Ignore("READ for an unknown object")];
        };
        let mut actions = Vec::with_capacity(2);
        match self.window(read, object.size) {
            Some((range, requested_end)) => {
                log::debug!(
                    "READ msg {} object {} [{}, +{}): filling {:?}",
                    read.msg_id,
                    object.id,
                    read.off,
                    read.len,
                    range
                );
                actions.push(Action::Fill {
                    object: Arc::clone(&object),
                    range,
                    requested_end,
                })
            }
            None => {
                Stats::bump(&self.stats.read_errors, 1);
                log::warn!(
                    "READ msg {} object {} [{}, +{}) is past the object's size {}",
                    read.msg_id,
                    object.id,
                    read.off,
                    read.len,
                    object.size
                );
            }
        }
        let ahead = match actions.first() {
            Some(Action::Fill { range, .. }) if self.sequential_ahead > 0 => {
                let limit = round_up(object.size.min(i64::MAX as u64));
                let base = self.readahead.max(AHEAD_MIN);
                object
                    .lock_ranges()
                    .stream
                    .advance(range, base, self.sequential_ahead, limit)
            }
            _ => None,
        };
        actions.push(Action::ReadComplete {
            object: Arc::clone(&object),
            msg_id: read.msg_id,
        });
        if let Some(range) = ahead {
            actions.push(Action::FillAhead { object, range });
        }
        actions
    }

    /// The block-aligned window to fill for `read` of an object of `size` bytes, and the end
    /// of the requested part; `None` if the request lies past the object.
    pub fn window(&self, read: &ReadRequest, size: u64) -> Option<(Range<u64>, u64)> {
        // Sizes are at most i64::MAX (checked at OPEN), so `limit` is block-aligned.
        let limit = round_up(size.min(i64::MAX as u64));
        let start = read.off / BLOCK * BLOCK;
        if start >= limit {
            return None;
        }
        // `limit` is block-aligned and above `start`, so a whole block fits: a READ of length
        // 0 still gets the block at its offset.
        let requested_end = round_up(read.off.saturating_add(read.len.min(MAX_READ_FILL)))
            .min(limit)
            .max(start + BLOCK);
        let end = requested_end.max(start.saturating_add(self.readahead).min(limit));
        Some((start..end, requested_end))
    }

    fn handle_close(&self, close: &CloseRequest) -> Vec<Action<S::Object, F>> {
        Stats::bump(&self.stats.closes, 1);
        match self.forget(close.object_id) {
            Some(object) => {
                log::info!("CLOSE object {} ({})", object.id, object.key);
                vec![Action::Close(object)]
            }
            None => {
                log::warn!("CLOSE for unknown object {}", close.object_id);
                vec![Action::Ignore("CLOSE for an unknown object")]
            }
        }
    }
}

impl<S: OnDemandServer, F: ObjectFd> Session<S, F> {
    /// Carry out `actions`: commands go to `send`, fills use `buf` (reused between calls).
    /// Errors are logged and counted, never returned: the daemon keeps serving.
    pub fn execute(
        &self,
        actions: Vec<Action<S::Object, F>>,
        send: &dyn Fn(&Command<'_>) -> io::Result<()>,
        buf: &mut AlignedBuf,
    ) {
        // Readahead claimed by READs, filled once their actions (the cread) are done.
        let mut deferred = Vec::new();
        // Fills ahead of sequential readers, after that.
        let mut aheads = Vec::new();
        for action in actions {
            match action {
                Action::Copen {
                    msg_id,
                    reply,
                    inserted,
                } => match send(&Command::Copen { msg_id, reply }) {
                    Err(e) => {
                        log::error!("copen {msg_id} failed: {e}");
                        if let Some(id) = inserted {
                            // The object went into the table before the copen; take it out.
                            Stats::bump(&self.stats.open_errors, 1);
                            drop(self.forget(id));
                        }
                    }
                    Ok(()) => {
                        // Writes are allowed once the copen is in: start prefetching.
                        if let (Some(prefetch), Some(id)) = (&self.prefetch, inserted)
                            && let Some(object) = self.object(id)
                        {
                            prefetch.object_opened(object);
                        }
                    }
                },
                Action::CloseFd(fd) => drop(fd),
                Action::Fill {
                    object,
                    range,
                    requested_end,
                } => {
                    self.active_reads.fetch_add(1, Ordering::SeqCst);
                    let mut later = Vec::new();
                    let result = self.fill_read(
                        &object,
                        range.clone(),
                        requested_end,
                        buf,
                        self.async_readahead.then_some(&mut later),
                    );
                    self.active_reads.fetch_sub(1, Ordering::SeqCst);
                    if !later.is_empty() {
                        deferred.push((Arc::clone(&object), later));
                    }
                    if let Err((pos, e)) = result {
                        if pos < requested_end {
                            Stats::bump(&self.stats.read_errors, 1);
                            log::error!(
                                "object {} ({}): filling {range:?} failed at {pos}: {e}",
                                object.id,
                                object.key
                            );
                        } else {
                            log::warn!(
                                "object {} ({}): readahead {range:?} stopped at {pos}: {e}",
                                object.id,
                                object.key
                            );
                        }
                    }
                }
                Action::FillAhead { object, range } => aheads.push((object, range)),
                Action::ReadComplete { object, msg_id } => {
                    if let Err(e) = object.fd.read_complete(msg_id) {
                        // EINVAL: the READ was cancelled (CLOSE, killed reader). Harmless.
                        log::debug!("object {}: READ_COMPLETE {msg_id}: {e}", object.id);
                    }
                }
                Action::Close(object) => {
                    self.server.close(&object.state);
                    drop(object);
                }
                Action::Ignore(_) => {}
            }
        }
        for (object, ranges) in deferred {
            for r in ranges {
                // Small chunks: a READ waiting for part of this window waits for one chunk.
                let result = self.fill_in_chunks(&object, r.clone(), buf, false, ASYNC_CHUNK);
                object.release(r.clone(), false, false);
                if let Err((pos, e)) = result {
                    log::warn!(
                        "object {} ({}): readahead {r:?} stopped at {pos}: {e}",
                        object.id,
                        object.key
                    );
                }
            }
        }
        for (object, range) in aheads {
            self.fill_ahead(&object, range, buf);
        }
    }

    /// Fill what nobody has or is fetching in `range`, ahead of a sequential reader. Errors
    /// are logged: the reader's own READ fetches the range again.
    fn fill_ahead(&self, object: &Object<S::Object, F>, range: Range<u64>, buf: &mut AlignedBuf) {
        if object.is_closed() {
            return;
        }
        object.scan_present(range.clone());
        let mut stopped = false;
        for c in object.claim_gaps(range) {
            if !stopped && !object.is_closed() {
                match self.fill(object, c.clone(), buf, false) {
                    Ok(()) => Stats::bump(
                        &self.stats.ahead_bytes,
                        c.end.min(object.size).saturating_sub(c.start),
                    ),
                    Err((pos, e)) => {
                        stopped = true;
                        log::warn!(
                            "object {} ({}): fill ahead {c:?} stopped at {pos}: {e}",
                            object.id,
                            object.key
                        );
                    }
                }
            }
            // Whatever was not written is released too (fill marks written chunks itself).
            object.release(c, false, false);
        }
    }

    /// Fill the window of a READ: wait for fills already in flight over the requested part
    /// (a prefetch or another READ) instead of fetching those bytes again, then fetch what is
    /// still missing of the requested part, then the readahead part that nobody has or is
    /// fetching. On error, returns where the first failure was.
    ///
    /// With `later`, the readahead claims are not filled but handed back (still claimed), to
    /// be filled after the READ is completed ([`Session::with_async_readahead`]).
    fn fill_read(
        &self,
        object: &Object<S::Object, F>,
        range: Range<u64>,
        requested_end: u64,
        buf: &mut AlignedBuf,
        mut later: Option<&mut Vec<Range<u64>>>,
    ) -> Result<(), (u64, io::Error)> {
        let requested = range.start..requested_end;
        let readahead = requested_end..range.end;
        // What the cache file already holds in the readahead part is not fetched again.
        if !readahead.is_empty() {
            object.scan_present(readahead.clone());
        }
        let mut r = object.lock_ranges();
        // Bounded: fills in flight always end (success or failure); the bound only guards
        // against a server that hangs.
        let deadline = Instant::now() + Duration::from_secs(60);
        while r.inflight.intersects(requested.clone())
            && !object.is_closed()
            && Instant::now() < deadline
        {
            r = object
                .changed
                .wait_timeout(r, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut claims = r.written.gaps(requested.clone());
        // Written before: the kernel asked anyway, so check the cache file (a READ can race
        // with the write that made the range present); refill what is not there.
        let covered = r.written.intersection(requested.clone());
        Stats::bump(
            &self.stats.served_by_prefetch_bytes,
            r.prefetched.intersection_len(requested.clone()),
        );
        if !readahead.is_empty() {
            claims.extend(r.busy_or_present().gaps(readahead));
        }
        // Adjacent claims (the requested part and the readahead after it) merge, so one fill
        // writes whole buffers. The covered ranges that turn out missing are refilled without
        // a claim (rare).
        let claims: RangeSet = claims.into_iter().collect();
        for c in claims.ranges() {
            r.inflight.insert(c.clone());
        }
        drop(r);
        let mut first_err = None;
        for c in covered {
            let missing = match object.fd.data_ranges(c.clone()) {
                // Whole blocks only, so what is refilled stays block-aligned.
                Ok(present) => RangeSet::whole_blocks(present, BLOCK).gaps(c),
                Err(_) => Vec::new(),
            };
            for m in missing {
                log::debug!("object {}: {m:?} written before but not present", object.id);
                if let Err(e) = self.fill(object, m, buf, false) {
                    first_err.get_or_insert(e);
                }
            }
        }
        for c in claims.ranges().iter().cloned() {
            let c = match later.as_deref_mut() {
                Some(later) if c.end > requested_end => {
                    later.push(c.start.max(requested_end)..c.end);
                    if c.start >= requested_end {
                        continue;
                    }
                    c.start..requested_end
                }
                _ => c,
            };
            let result = self.fill(object, c.clone(), buf, false);
            // Whatever was not written is released too (fill marks written chunks itself).
            object.release(c, false, false);
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Fill `range` of `object`, in chunks of `buf`'s size, marking each written chunk in the
    /// object's ranges. `prefetch` says who fetches (for the counters). On error, returns
    /// where it stopped.
    pub(crate) fn fill(
        &self,
        object: &Object<S::Object, F>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
        prefetch: bool,
    ) -> Result<(), (u64, io::Error)> {
        self.fill_in_chunks(object, range, buf, prefetch, u64::MAX)
    }

    /// [`fill`](Self::fill) in chunks of at most `max_chunk` bytes (whole blocks).
    fn fill_in_chunks(
        &self,
        object: &Object<S::Object, F>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
        prefetch: bool,
        max_chunk: u64,
    ) -> Result<(), (u64, io::Error)> {
        let chunk = (buf.len() as u64).min(max_chunk.max(BLOCK) / BLOCK * BLOCK);
        let bytes = buf.as_mut_bytes();
        let mut pos = range.start;
        while pos < range.end {
            let end = range.end.min(pos.saturating_add(chunk));
            // At most `chunk` bytes: fits in usize.
            let n = (end - pos) as usize;
            let valid = (end.min(object.size).saturating_sub(pos)) as usize;
            let out = &mut bytes[..n];
            let started = Instant::now();
            self.server
                .fill(&object.state, pos, &mut out[..valid])
                .map_err(|e| (pos, e))?;
            self.stats.fetch_latency.observe(started.elapsed());
            let fetched = if prefetch {
                &self.stats.prefetched_bytes
            } else {
                &self.stats.fetched_bytes
            };
            Stats::bump(fetched, valid as u64);
            out[valid..].fill(0);
            object.fd.write_at(out, pos).map_err(|e| (pos, e))?;
            Stats::bump(&self.stats.writes, 1);
            Stats::bump(&self.stats.bytes_written, n as u64);
            object.release(pos..end, true, prefetch);
            pos = end;
        }
        Ok(())
    }

    /// Decode one message read from `device`, adopt the fd of an OPEN, decide and act.
    /// Errors are logged and counted; the daemon keeps serving.
    pub fn serve_message<D: Device<Fd = F>>(&self, device: &D, msg: &[u8], buf: &mut AlignedBuf) {
        let request = match Request::decode(msg) {
            Ok(r) => r,
            Err(e) => {
                Stats::bump(&self.stats.bad_messages, 1);
                self.refuse_undecodable(device, msg, e);
                return;
            }
        };
        let fd = match &request {
            Request::Open(open) => match device.adopt(open.fd) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::error!(
                        "OPEN object {}: cannot adopt fd {}: {e}",
                        open.object_id,
                        open.fd
                    );
                    None
                }
            },
            _ => None,
        };
        let started = Instant::now();
        let actions = self.handle(&request, fd);
        self.execute(actions, &|cmd| device.send(cmd), buf);
        match request {
            Request::Open(_) => self.stats.open_latency.observe(started.elapsed()),
            Request::Read(_) => self.stats.read_latency.observe(started.elapsed()),
            Request::Close(_) => {}
        }
    }

    /// A message that did not decode. An OPEN must still be answered, or its mount hangs:
    /// answer it with `-EINVAL` (its fd is left alone: the message is not trusted).
    fn refuse_undecodable<D: Device<Fd = F>>(&self, device: &D, msg: &[u8], e: DecodeError) {
        log::error!("undecodable message ({} bytes): {e}", msg.len());
        if let Ok((header, _)) = MsgHeader::read_from_prefix(msg)
            && header.opcode == CACHEFILES_OP_OPEN
        {
            let cmd = Command::Copen {
                msg_id: MsgId(header.msg_id),
                reply: OpenReply::Error(Errno::EINVAL),
            };
            if let Err(e) = device.send(&cmd) {
                log::error!("{cmd} failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use cachefiles_proto::msg::{CACHEFILES_OP_OPEN, MsgHeader, OpenPayload};
    use zerocopy::IntoBytes;

    use super::*;
    use crate::fake::{FakeDevice, FakeFd};
    use crate::local::LocalDirServer;
    use crate::server::Opened;

    const BLOB_LEN: usize = 3 * 1024 * 1024 + 1000;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    struct Env {
        _tmp: tempfile::TempDir,
        device: FakeDevice,
        session: Session<LocalDirServer, FakeFd>,
        buf: AlignedBuf,
        blob: Vec<u8>,
    }

    fn env(readahead: u64) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        let blob = pattern(BLOB_LEN);
        std::fs::write(blobs.join("boot"), &blob).unwrap();
        std::fs::write(blobs.join("empty"), b"").unwrap();
        let device = FakeDevice::new(tmp.path());
        let session = Session::new(LocalDirServer::new(blobs)).with_readahead(readahead);
        Env {
            _tmp: tmp,
            device,
            session,
            buf: AlignedBuf::new(256 << 10),
            blob,
        }
    }

    impl Env {
        fn send(&mut self, request: Request<'_>) {
            let mut msg = [0u8; 1024];
            let n = request.encode(&mut msg).unwrap();
            self.session
                .serve_message(&self.device, &msg[..n], &mut self.buf);
        }

        fn open(&mut self, msg_id: u32, object_id: u32, key: &[u8], fd: u32) {
            self.send(Request::Open(OpenRequest {
                msg_id: MsgId(msg_id),
                object_id: ObjectId(object_id),
                volume_key: b"erofs,boot",
                cookie_key: key,
                fd,
                flags: 0,
            }));
        }

        fn read(&mut self, msg_id: u32, object_id: u32, off: u64, len: u64) {
            self.send(Request::Read(ReadRequest {
                msg_id: MsgId(msg_id),
                object_id: ObjectId(object_id),
                off,
                len,
            }));
        }

        fn close(&mut self, msg_id: u32, object_id: u32) {
            self.send(Request::Close(CloseRequest {
                msg_id: MsgId(msg_id),
                object_id: ObjectId(object_id),
            }));
        }

        fn cache(&self, fd: u32) -> Vec<u8> {
            std::fs::read(self.device.cache_file(fd)).unwrap()
        }
    }

    #[test]
    fn open_read_close() {
        let mut e = env(0);
        e.open(10, 1, b"boot", 7);
        assert_eq!(e.device.commands(), [format!("copen 10,{BLOB_LEN}")]);
        assert_eq!(e.session.object_count(), 1);

        // Readahead off: exactly the requested blocks.
        e.read(11, 1, 8192, 4096);
        let log = e.device.fd_log(7);
        assert_eq!(*log.writes.lock().unwrap(), [(8192, 4096)]);
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(11)]);
        assert_eq!(&e.cache(7)[8192..12288], &e.blob[8192..12288]);

        // The last, partial block is zero-padded to a whole block.
        let last = (BLOB_LEN / 4096 * 4096) as u64;
        e.read(12, 1, last, 4096);
        let cache = e.cache(7);
        assert_eq!(cache.len(), BLOB_LEN.div_ceil(4096) * 4096);
        assert_eq!(&cache[last as usize..BLOB_LEN], &e.blob[last as usize..]);
        assert!(cache[BLOB_LEN..].iter().all(|&b| b == 0));

        e.close(13, 1);
        assert_eq!(e.session.object_count(), 0);
        assert!(log.closed.load(Ordering::SeqCst), "CLOSE closes the fd");
        assert_eq!(
            e.session.stats(),
            StatsSnapshot {
                opens: 1,
                reads: 2,
                closes: 1,
                writes: 2,
                bytes_written: 8192,
                requested_bytes: 8192,
                // The last block holds the blob's last 1000 bytes.
                fetched_bytes: 4096 + 1000,
                ..Default::default()
            }
        );
    }

    #[test]
    fn readahead_fills_a_window_in_chunks() {
        let mut e = env(DEFAULT_READAHEAD);
        e.open(1, 3, b"boot", 5);
        e.read(2, 3, 0, 4096);
        let log = e.device.fd_log(5);
        // 1 MiB window, written through a 256 KiB buffer.
        let w = 256 << 10;
        assert_eq!(
            *log.writes.lock().unwrap(),
            [(0, w), (w as u64, w), (2 * w as u64, w), (3 * w as u64, w)]
        );
        assert_eq!(&e.cache(5)[..1 << 20], &e.blob[..1 << 20]);
        // A cold sequential read of the whole blob takes one READ per MiB.
        let mut off = 1 << 20;
        let mut id = 3;
        while off < BLOB_LEN as u64 {
            e.read(id, 3, off, 4096);
            id += 1;
            off += 1 << 20;
        }
        let cache = e.cache(5);
        assert_eq!(&cache[..BLOB_LEN], &e.blob[..]);
        assert_eq!(e.session.stats().reads, BLOB_LEN.div_ceil(1 << 20) as u64);
        assert_eq!(log.completed.lock().unwrap().len(), 4);
    }

    /// Records writes and completions in one sequence.
    #[derive(Default)]
    struct Events(Mutex<Vec<(char, u64)>>);

    impl ObjectFd for Events {
        fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
            self.0.lock().unwrap().push(('w', off));
            assert_eq!(data.len() % 4096, 0);
            Ok(())
        }
        fn read_complete(&self, msg_id: MsgId) -> io::Result<()> {
            self.0.lock().unwrap().push(('c', u64::from(msg_id.0)));
            Ok(())
        }
    }

    #[test]
    fn async_readahead_completes_before_filling_the_window() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("boot"), pattern(BLOB_LEN)).unwrap();
        let run = |async_readahead| {
            let s = Session::<LocalDirServer, Events>::new(LocalDirServer::new(tmp.path()))
                .with_readahead(1 << 20)
                .with_async_readahead(async_readahead);
            let open = Request::Open(OpenRequest {
                msg_id: MsgId(1),
                object_id: ObjectId(1),
                volume_key: b"erofs,boot",
                cookie_key: b"boot",
                fd: 3,
                flags: 0,
            });
            let mut buf = AlignedBuf::new(1 << 20);
            let send = |_: &Command<'_>| Ok(());
            let actions = s.handle(&open, Some(Events::default()));
            s.execute(actions, &send, &mut buf);
            let read = Request::Read(ReadRequest {
                msg_id: MsgId(2),
                object_id: ObjectId(1),
                off: 8192,
                len: 4096,
            });
            let actions = s.handle(&read, None);
            s.execute(actions, &send, &mut buf);
            let object = s.object(ObjectId(1)).unwrap();
            let events = object.fd().0.lock().unwrap().clone();
            (events, object.present(), s.stats().fetched_bytes)
        };
        // Synchronous: the whole window, then the completion.
        let (events, present, fetched) = run(false);
        assert_eq!(events, [('w', 8192), ('c', 2)]);
        assert_eq!(present.ranges().len(), 1);
        assert_eq!(present.ranges()[0], 8192..8192 + (1 << 20));
        // Asynchronous: the requested block, the completion, then the window in 256 KiB chunks.
        let (events, present2, fetched2) = run(true);
        assert_eq!(
            events,
            [
                ('w', 8192),
                ('c', 2),
                ('w', 12288),
                ('w', 12288 + (256 << 10)),
                ('w', 12288 + (512 << 10)),
                ('w', 12288 + (768 << 10)),
            ]
        );
        assert_eq!(present2, present);
        assert_eq!(fetched2, fetched);
    }

    #[test]
    fn sequential_reads_are_filled_ahead() {
        let mut e = env(1 << 20);
        e.open(1, 3, b"boot", 5);
        // The first READ of an object starts no stream: its window only.
        e.read(2, 3, 0, 4096);
        assert_eq!(e.session.stats().ahead_bytes, 0);
        assert_eq!(
            e.session.object(ObjectId(3)).unwrap().present().len(),
            1 << 20
        );
        // The next READ starts where that window ended: its window, its completion, then
        // one more window ahead.
        e.read(3, 3, 1 << 20, 4096);
        let log = e.device.fd_log(5);
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(2), MsgId(3)]);
        let st = e.session.stats();
        assert_eq!(st.ahead_bytes, 1 << 20);
        assert_eq!(st.fetched_bytes, 3 << 20);
        assert_eq!(&e.cache(5)[..3 << 20], &e.blob[..3 << 20]);
        // The stream goes on at the end of what was filled ahead: the rest of the blob.
        e.read(4, 3, 3 << 20, 4096);
        assert_eq!(&e.cache(5)[..BLOB_LEN], &e.blob[..]);
        let st = e.session.stats();
        assert_eq!(
            (st.reads, st.ahead_bytes, st.fetched_bytes),
            (3, 1 << 20, BLOB_LEN as u64)
        );
    }

    #[test]
    fn random_reads_are_not_filled_ahead() {
        let mut e = env(256 << 10);
        e.open(1, 3, b"boot", 5);
        for (id, off) in [
            (2, 2 << 20),
            (3, 0),
            (4, 1 << 20),
            (5, 3 << 20),
            (6, 512 << 10),
        ] {
            e.read(id, 3, off, 4096);
        }
        let st = e.session.stats();
        assert_eq!(st.ahead_bytes, 0);
        assert_eq!(
            st.fetched_bytes,
            4 * (256 << 10) + (BLOB_LEN as u64 - (3 << 20))
        );
    }

    #[test]
    fn the_stream_ramps_up_resets_and_stops_at_the_limit() {
        // In half MiBs: (window, object size, the fill ahead it starts).
        type Step = ((u64, u64), u64, Option<(u64, u64)>);
        let steps: [Step; 9] = [
            ((0, 2), 200, None),
            ((2, 4), 200, Some((4, 6))),
            // Within what was filled ahead: twice as far, each time.
            ((5, 7), 200, Some((7, 11))),
            ((11, 13), 200, Some((13, 21))),
            ((21, 23), 200, Some((23, 39))),
            // At most `max` (8 MiB).
            ((39, 41), 200, Some((41, 57))),
            // Not past the object; nothing at all at its end.
            ((57, 59), 60, Some((59, 60))),
            ((58, 60), 60, None),
            // A READ elsewhere (behind the stream) starts over.
            ((0, 2), 200, None),
        ];
        let h = 1 << 19;
        let mut s = Stream::default();
        for ((a, b), size, want) in steps {
            let got = s.advance(&(a * h..b * h), 2 * h, 16 * h, size * h);
            assert_eq!(
                got,
                want.map(|(x, y)| x * h..y * h),
                "window [{a}, {b}) half MiBs"
            );
        }
        assert_eq!(
            s.advance(&(2 * h..4 * h), 2 * h, 16 * h, 200 * h),
            Some(4 * h..6 * h)
        );
    }

    #[test]
    fn window_logic() {
        let s = Session::<LocalDirServer, FakeFd>::new(LocalDirServer::new("/x"));
        let read = |off, len| ReadRequest {
            msg_id: MsgId(0),
            object_id: ObjectId(1),
            off,
            len,
        };
        let mib = 1 << 20;
        // Clipped to the object rounded up to a block.
        assert_eq!(s.window(&read(0, 4096), 10_000), Some((0..12288, 4096)));
        assert_eq!(
            s.window(&read(4096, 4096), 10 * mib),
            Some((4096..4096 + mib, 8192))
        );
        // A request bigger than the window is served whole.
        assert_eq!(
            s.window(&read(0, 3 * mib), 10 * mib),
            Some((0..3 * mib, 3 * mib))
        );
        // Unaligned requests are widened to blocks.
        assert_eq!(s.window(&read(100, 10), 10 * mib), Some((0..mib, 4096)));
        // A READ longer than MAX_READ_FILL gets that much.
        assert_eq!(
            s.window(&read(4096, 1 << 40), 1 << 41),
            Some((4096..4096 + MAX_READ_FILL, 4096 + MAX_READ_FILL))
        );
        // Past the end: nothing to write (the READ is still completed).
        assert_eq!(s.window(&read(12288, 4096), 10_000), None);
        assert_eq!(s.window(&read(0, 4096), 0), None);
        // The tail block past the last byte.
        assert_eq!(
            s.window(&read(8192, 4096), 10_000),
            Some((8192..12288, 12288))
        );
        // Extreme values do not overflow.
        assert_eq!(s.window(&read(u64::MAX - 5, 100), u64::MAX), None);
        let off = i64::MAX as u64 / 4096 * 4096 - 4096;
        assert!(s.window(&read(off, 4096), i64::MAX as u64).is_some());
        let s = s.with_readahead(5000);
        assert_eq!(s.readahead(), 8192);
        assert_eq!(s.window(&read(0, 4096), 10 * mib), Some((0..8192, 4096)));
    }

    proptest::proptest! {
        #[test]
        fn windows_are_aligned_and_cover_the_request(
            off in 0u64..(1 << 40),
            len in 0u64..(16 << 20),
            size in 0u64..(1 << 40),
            readahead in 0u64..(8 << 20),
        ) {
            let s = Session::<LocalDirServer, FakeFd>::new(LocalDirServer::new("/x"))
                .with_readahead(readahead);
            let read = ReadRequest { msg_id: MsgId(0), object_id: ObjectId(1), off, len };
            let limit = size.div_ceil(BLOCK) * BLOCK;
            match s.window(&read, size) {
                None => proptest::prop_assert!(off / BLOCK * BLOCK >= limit),
                Some((range, requested_end)) => {
                    proptest::prop_assert_eq!(range.start % BLOCK, 0);
                    proptest::prop_assert_eq!(range.end % BLOCK, 0);
                    proptest::prop_assert!(range.start <= off && range.start + BLOCK > off);
                    proptest::prop_assert!(range.start < range.end && range.end <= limit);
                    // The requested bytes that exist are all inside.
                    proptest::prop_assert!(requested_end >= (off + len).min(size));
                    proptest::prop_assert!(requested_end <= range.end);
                    // Never more than the request or the readahead window, whichever is larger.
                    let span = range.end - range.start;
                    proptest::prop_assert!(
                        span <= s.readahead().max(requested_end - range.start).max(BLOCK)
                    );
                }
            }
        }
    }

    #[test]
    fn read_and_close_for_unknown_objects() {
        let mut e = env(0);
        e.read(1, 42, 0, 4096);
        e.close(2, 42);
        assert!(e.device.commands().is_empty());
        let s = e.session.stats();
        assert_eq!((s.reads, s.read_errors, s.closes, s.writes), (1, 1, 1, 0));
        // The session goes on serving.
        e.open(3, 1, b"boot", 4);
        assert_eq!(e.device.commands(), [format!("copen 3,{BLOB_LEN}")]);
    }

    #[test]
    fn objects_are_found_by_volume_and_cookie() {
        let mut e = env(0);
        e.open(1, 1, b"boot", 4);
        e.send(Request::Open(OpenRequest {
            msg_id: MsgId(2),
            object_id: ObjectId(2),
            volume_key: b"erofs,dom",
            cookie_key: b"boot",
            fd: 5,
            flags: 0,
        }));
        let a = e.session.find(b"erofs,boot", b"boot").unwrap();
        let b = e.session.find(b"erofs,dom", b"boot").unwrap();
        assert_eq!((a.id(), b.id()), (ObjectId(1), ObjectId(2)));
        assert_eq!(b.volume_key(), b"erofs,dom");
        assert!(e.session.find(b"erofs,dom", b"other").is_none());
        e.close(3, 2);
        assert!(e.session.find(b"erofs,dom", b"boot").is_none());
        assert!(
            b.is_closed(),
            "a closed object says so to whoever still holds it"
        );
    }

    #[test]
    fn duplicate_object_ids_are_refused() {
        let mut e = env(0);
        e.open(1, 1, b"boot", 4);
        e.open(2, 1, b"boot", 5);
        assert_eq!(
            e.device.commands(),
            [format!("copen 1,{BLOB_LEN}"), "copen 2,-17".into()]
        );
        assert!(
            e.device.fd_log(5).closed.load(Ordering::SeqCst),
            "the new fd is closed"
        );
        assert!(
            !e.device.fd_log(4).closed.load(Ordering::SeqCst),
            "the old one is kept"
        );
        e.read(3, 1, 0, 4096);
        assert_eq!(*e.device.fd_log(4).completed.lock().unwrap(), [MsgId(3)]);
    }

    #[test]
    fn failing_opens_become_errnos() {
        let mut e = env(0);
        e.open(1, 1, b"missing", 4);
        e.open(2, 2, b"../etc", 5);
        e.open(3, 3, b"", 6);
        e.open(4, 4, b"empty", 7);
        assert_eq!(
            e.device.commands(),
            ["copen 1,-2", "copen 2,-22", "copen 3,-22", "copen 4,0"]
        );
        for fd in [4, 5, 6] {
            assert!(
                e.device.fd_log(fd).closed.load(Ordering::SeqCst),
                "fd {fd} closed"
            );
        }
        assert_eq!(e.session.stats().open_errors, 3);
        // An empty object: a READ writes nothing but is completed.
        e.read(5, 4, 0, 4096);
        let log = e.device.fd_log(7);
        assert!(log.writes.lock().unwrap().is_empty());
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(5)]);
    }

    /// A server whose reads fail.
    struct Broken;

    impl OnDemandServer for Broken {
        type Object = ();
        fn open(&self, _: &ObjectKey<'_>) -> io::Result<Opened<()>> {
            Ok(Opened {
                object: (),
                size: 1 << 20,
            })
        }
        fn read_at(&self, _: &(), _: u64, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("backend down"))
        }
    }

    #[test]
    fn failing_reads_are_still_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let device = FakeDevice::new(tmp.path());
        let session = Session::<Broken, FakeFd>::new(Broken);
        let mut buf = AlignedBuf::new(4096);
        let mut msg = [0u8; 1024];
        for req in [
            Request::Open(OpenRequest {
                msg_id: MsgId(1),
                object_id: ObjectId(1),
                volume_key: b"v",
                cookie_key: b"c",
                fd: 3,
                flags: 0,
            }),
            Request::Read(ReadRequest {
                msg_id: MsgId(2),
                object_id: ObjectId(1),
                off: 0,
                len: 4096,
            }),
        ] {
            let n = req.encode(&mut msg).unwrap();
            session.serve_message(&device, &msg[..n], &mut buf);
        }
        let log = device.fd_log(3);
        assert!(log.writes.lock().unwrap().is_empty());
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(2)]);
        assert_eq!(session.stats().read_errors, 1);
    }

    #[test]
    fn failing_writes_are_still_completed() {
        let mut e = env(0);
        e.open(1, 1, b"boot", 4);
        e.device.fd_log(4).fail_writes.store(true, Ordering::SeqCst);
        e.read(2, 1, 0, 4096);
        assert_eq!(*e.device.fd_log(4).completed.lock().unwrap(), [MsgId(2)]);
        assert_eq!(e.session.stats().read_errors, 1);
    }

    #[test]
    fn a_failed_copen_forgets_the_object() {
        let mut e = env(0);
        e.device.fail_copen.store(true, Ordering::SeqCst);
        e.open(1, 1, b"boot", 4);
        assert_eq!(e.session.object_count(), 0);
        assert!(e.device.fd_log(4).closed.load(Ordering::SeqCst));
        assert_eq!(e.session.stats().open_errors, 1);
    }

    #[test]
    fn undecodable_messages_are_counted_and_opens_refused() {
        let mut e = env(0);
        // An OPEN whose volume key is not NUL-terminated.
        let mut msg = Vec::new();
        msg.extend_from_slice(
            MsgHeader {
                msg_id: 9,
                opcode: CACHEFILES_OP_OPEN,
                len: 34,
                object_id: 1,
            }
            .as_bytes(),
        );
        msg.extend_from_slice(
            OpenPayload {
                volume_key_size: 1,
                cookie_key_size: 1,
                fd: 3,
                flags: 0,
            }
            .as_bytes(),
        );
        msg.extend_from_slice(b"xy");
        e.session.serve_message(&e.device, &msg, &mut e.buf);
        // Garbage.
        e.session.serve_message(&e.device, &[1, 2, 3], &mut e.buf);
        assert_eq!(e.device.commands(), ["copen 9,-22"]);
        assert_eq!(e.session.stats().bad_messages, 2);
        assert!(
            e.device.fds.lock().unwrap().is_empty(),
            "no fd adopted from a bad message"
        );
    }
}
