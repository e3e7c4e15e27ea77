//! One object of the engine: its identity, the server's state, the transport's sink, and the
//! range claims over its bytes (the only copy): what was written, what is in flight, what a
//! scan of its backing file found present. A fill claims the gaps of a range, writes them and
//! releases them; whoever wants a range in flight waits for it instead of fetching it again.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use cachefiles_proto::ObjectId;

use super::Sink;
use super::window::{BLOCK, Stream};
use crate::ranges::RangeSet;

/// An object the server opened, with what the engine knows of its bytes.
pub struct Object<O, K> {
    id: ObjectId,
    key: String,
    cookie_key: Vec<u8>,
    volume_key: Vec<u8>,
    size: u64,
    state: O,
    sink: K,
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
    /// The rest of READ windows answered before it was written, still being filled
    /// ([`Engine::fill_window_answering`]): a READ that lands there is the same reader
    /// reading on, not a sequential reader's next READ past a window.
    pub(crate) answered_rest: RangeSet,
    /// Sequential-reader detection for [`Engine::with_sequential_ahead`].
    pub(crate) stream: Stream,
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

impl<O, K> Object<O, K> {
    pub(crate) fn new(
        id: ObjectId,
        volume_key: &[u8],
        cookie_key: &[u8],
        size: u64,
        state: O,
        sink: K,
    ) -> Self {
        Object {
            id,
            key: crate::server::ObjectKey {
                volume_key,
                cookie_key,
            }
            .to_string(),
            cookie_key: cookie_key.to_vec(),
            volume_key: volume_key.to_vec(),
            size,
            state,
            sink,
            ranges: Mutex::new(ObjectRanges::default()),
            changed: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Its id (the kernel's object id with cachefiles; a number the engine gave it with
    /// fanotify).
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

    /// Where its bytes go: the transport's [`Sink`] (with cachefiles, the object's
    /// anonymous fd).
    pub fn sink(&self) -> &K {
        &self.sink
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

impl<O, K: Sink> Object<O, K> {
    /// Ask the cache file what it already holds in `range` (written by an earlier daemon, or
    /// before a restart: two `lseek`s in the usual case) and remember the whole blocks as
    /// present, so nothing fetches them again.
    pub(crate) fn scan_present(&self, range: Range<u64>) {
        if let Ok(found) = self.sink.data_ranges(range) {
            let found = RangeSet::whole_blocks(found, BLOCK);
            if !found.is_empty() {
                self.lock_ranges().scanned.extend(&found);
            }
        }
    }
}

impl<O, K> fmt::Debug for Object<O, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}
