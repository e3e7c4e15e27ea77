//! The one fill loop: produce a block-aligned range of an object with the server, pad the
//! object's last block with zeros, write it through the object's sink, mark it present. READ
//! windows, fills ahead of sequential readers and prefetch all go through it, over the
//! claims of [`super::Object`].

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::window::{ASYNC_CHUNK, BLOCK, round_up};
use super::{Engine, Object, Sink};
use crate::buf::AlignedBuf;
use crate::ranges::RangeSet;
use crate::server::OnDemandServer;

/// What the engine does for one read of an object ([`Engine::plan_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// The block-aligned window to fill and the end of its requested part; `None` when the
    /// read lies past the object (nothing to fill; the read is still answered).
    pub window: Option<(Range<u64>, u64)>,
    /// What to fill after the read is answered, ahead of a sequential reader
    /// ([`Engine::with_sequential_ahead`]).
    pub ahead: Option<Range<u64>>,
}

/// Readahead a READ claimed and left to fill after it is answered
/// ([`Engine::with_async_readahead`]).
pub(crate) type Later<O, K> = Vec<(Arc<Object<O, K>>, Vec<Range<u64>>)>;

/// The least a streaming fill writes early ([`OnDemandServer::fill_streaming`]), unless the
/// write answers a READ.
const EARLY_WRITE: usize = 256 << 10;

/// Answers a READ ([`Engine::fill_window_answering`]).
pub(crate) type Answer<'a> = &'a mut (dyn FnMut() + Send);

impl<S: OnDemandServer, K> Engine<S, K> {
    /// Count a read of `len` bytes at `off` of `object` and decide its window and the fill
    /// ahead of it (which advances the object's sequential stream).
    pub fn plan_read(&self, object: &Object<S::Object, K>, off: u64, len: u64) -> ReadPlan {
        self.count_read(object, off, len);
        self.plan(object, off, len)
    }

    /// [`plan_read`](Self::plan_read) for a read counted already.
    fn plan(&self, object: &Object<S::Object, K>, off: u64, len: u64) -> ReadPlan {
        let window = super::window(off, len, object.size(), self.readahead())
            .map(|(range, end)| (self.clip_to_plan(object, range, end), end));
        let ahead = match &window {
            Some((range, _)) if self.sequential_ahead() > 0 => {
                let limit = round_up(object.size().min(i64::MAX as u64));
                let mut r = object.lock_ranges();
                // Within a window answered early and still being filled: the reader reads on
                // in that window (which it would have found written had the READ waited for
                // all of it); the stream is its business once the window is done.
                if r.answered_rest
                    .intersects(range.start..range.start.saturating_add(BLOCK))
                {
                    None
                } else {
                    r.stream.advance(
                        range,
                        self.readahead(),
                        self.sequential_ahead(),
                        limit,
                        self.growth,
                    )
                }
            }
            Some(_) => None,
            None => {
                self.stats.read_errors.add(1);
                log::warn!(
                    "object {} ({}): read [{off}, +{len}) is past its size {}",
                    object.id(),
                    object.key(),
                    object.size()
                );
                None
            }
        };
        ReadPlan { window, ahead }
    }
}

impl<S: OnDemandServer, K> Engine<S, K> {
    /// Count a read of `len` bytes at `off` of `object` and record it in the access trace.
    fn count_read(&self, object: &Object<S::Object, K>, off: u64, len: u64) {
        self.stats.reads.add(1);
        self.stats.requested_bytes.add(len);
        if let Some(recorder) = self.recorder() {
            // What the kernel demanded within the object, before the window grows it.
            let end = off.saturating_add(len).min(object.size());
            if off < end {
                recorder.record(object.cookie_key(), off, end - off);
            }
        }
    }
}

impl<S: OnDemandServer, K: Sink> Engine<S, K> {
    /// A read of `len` bytes at `off` of `object` from a kernel that asks about present bytes
    /// too (fanotify): counted once, whatever follows. `None` when its requested blocks are
    /// all present (written, or found in the backing file): answer it at once, without a
    /// fill; it is counted as served by prefetch where a prefetch wrote it, and is no step of
    /// the sequential stream. Else the plan [`plan_read`](Self::plan_read) makes for it.
    ///
    /// The cachefiles kernel never asks about present bytes, so there the stream (and the fill
    /// ahead) advances only at misses, and so it does here: a program reading many small files
    /// within what one window filled would otherwise ramp the fill ahead up for a reader that
    /// does not read on.
    ///
    /// A read whose missing blocks are all in flight (another event's window, a fill ahead)
    /// waits for them first (running a queued fill ahead over them itself), and is then a
    /// read of present bytes if they were written, else (the fill failed) planned as a miss:
    /// with `directio` the kernel sends the requests of one readahead batch at once, and each
    /// request landing in the window the first one is filling would otherwise be one more step
    /// of the stream.
    pub(crate) fn plan_read_unless_present(
        &self,
        object: &Object<S::Object, K>,
        off: u64,
        len: u64,
        buf: &mut AlignedBuf,
    ) -> Option<ReadPlan> {
        let requested = match super::window(off, len, object.size(), 0) {
            Some((range, end))
                if object
                    .lock_ranges()
                    .busy_or_present()
                    .gaps(range.start..end)
                    .is_empty() =>
            {
                range.start..end
            }
            _ => return Some(self.plan_read(object, off, len)),
        };
        // Every requested block is present or in flight: counted now, before any wait, as
        // `plan_read` counts a read before its fill waits.
        self.count_read(object, off, len);
        let mut r = object.lock_ranges();
        if r.inflight.intersects(requested.clone()) {
            drop(r);
            self.run_queued_over(object, &requested, buf);
            r = object.lock_ranges();
            let waited = Instant::now();
            r = wait_in_flight(object, r, &requested);
            let waited = waited.elapsed();
            self.stats.claim_wait.observe(waited);
            log::debug!(
                "object {}: read {requested:?} waited {:.1} ms for fills in flight",
                object.id(),
                waited.as_secs_f64() * 1e3
            );
        }
        let mut present = r.written.clone();
        present.extend(&r.scanned);
        if !present.gaps(requested.clone()).is_empty() {
            // A fill it waited for failed: planned as any read that misses, not counted again.
            drop(r);
            return Some(self.plan(object, off, len));
        }
        self.stats
            .served_by_prefetch_bytes
            .add(r.prefetched.intersection_len(requested));
        None
    }

    /// Fill the window of a READ ([`ReadPlan::window`]): what is in flight over the requested
    /// part is waited for, what is missing fetched, and the readahead part that nobody has or
    /// is fetching is fetched too (or, with asynchronous readahead, claimed and pushed on
    /// `later`, for [`fill_later`](Self::fill_later) once the READ is answered). With a
    /// predictor, what it relates to the READ is queued on the fill pool first (fetched while
    /// the window is), and the libraries of an ELF object the window completed a step of
    /// after it: the same for every transport.
    ///
    /// # Errors
    ///
    /// The requested part could not be filled (counted as a read error and logged): answer
    /// the READ with an error. A failure in the readahead part is only logged.
    pub(crate) fn fill_window(
        &self,
        object: &Arc<Object<S::Object, K>>,
        range: Range<u64>,
        requested_end: u64,
        buf: &mut AlignedBuf,
        later: &mut Later<S::Object, K>,
    ) -> io::Result<()> {
        self.fill_window_answering(object, range, requested_end, buf, later, None)
    }

    /// [`fill_window`](Self::fill_window), calling `answer` (once) as soon as the requested
    /// part is written when a server that streams ([`OnDemandServer::fill_streaming`])
    /// writes it while the rest of the window is still being produced: the READ is answered
    /// then, and the rest of the same fill goes on (claimed: a READ that lands in it waits
    /// for its part instead of fetching it again). Not called otherwise: the caller answers
    /// after this returns.
    pub(crate) fn fill_window_answering(
        &self,
        object: &Arc<Object<S::Object, K>>,
        range: Range<u64>,
        requested_end: u64,
        buf: &mut AlignedBuf,
        later: &mut Later<S::Object, K>,
        answer: Option<Answer<'_>>,
    ) -> io::Result<()> {
        let predicted = self.queue_predicted(object, range.start, Some(&range));
        if predicted > 0 {
            log::debug!(
                "object {} ({}) [{}, ...): {predicted} bytes predicted",
                object.id(),
                object.key(),
                range.start
            );
        }
        self.active_reads.fetch_add(1, Ordering::SeqCst);
        let mut deferred = Vec::new();
        let result = self.fill_read(
            object,
            range.clone(),
            requested_end,
            buf,
            self.async_readahead.then_some(&mut deferred),
            false,
            answer,
        );
        self.active_reads.fetch_sub(1, Ordering::SeqCst);
        if !deferred.is_empty() {
            later.push((Arc::clone(object), deferred));
        }
        self.queue_needed(object);
        match result {
            Ok(()) => Ok(()),
            Err((pos, e)) if pos < requested_end => {
                self.stats.read_errors.add(1);
                log::error!(
                    "object {} ({}): filling {range:?} failed at {pos}: {e}",
                    object.id(),
                    object.key()
                );
                Err(e)
            }
            Err((pos, e)) => {
                log::warn!(
                    "object {} ({}): readahead {range:?} stopped at {pos}: {e}",
                    object.id(),
                    object.key()
                );
                Ok(())
            }
        }
    }

    /// Make `range` (block-aligned) present as a prefetch does (counted as prefetched), but
    /// waiting for fills in flight over it as a READ does: when this returns `Ok`, all of
    /// `range` is written.
    ///
    /// # Errors
    ///
    /// Where the fill failed.
    pub(crate) fn fill_for_prefetch(
        &self,
        object: &Object<S::Object, K>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
    ) -> io::Result<()> {
        let end = range.end;
        self.fill_read(object, range, end, buf, None, true, None)
            .map_err(|(_, e)| e)
    }

    /// Fill the readahead that [`fill_window`](Self::fill_window) left for after the READ's
    /// answer, in small chunks (a READ waiting for part of it waits for one chunk).
    pub(crate) fn fill_later(&self, later: Later<S::Object, K>, buf: &mut AlignedBuf) {
        for (object, ranges) in later {
            for r in ranges {
                let result = self.fill_in_chunks(&object, r.clone(), buf, false, ASYNC_CHUNK);
                object.release(r.clone(), false, false);
                if let Err((pos, e)) = result {
                    log::warn!(
                        "object {} ({}): readahead {r:?} stopped at {pos}: {e}",
                        object.id(),
                        object.key()
                    );
                }
            }
        }
    }

    /// Fill the window of a READ: wait for fills already in flight over the requested part
    /// (a prefetch or another READ) instead of fetching those bytes again, then fetch what is
    /// still missing of the requested part, then the readahead part that nobody has or is
    /// fetching. On error, returns where the first failure was.
    ///
    /// With `later`, the readahead claims are not filled but handed back (still claimed), to
    /// be filled after the READ is completed ([`Engine::with_async_readahead`]).
    // The READ's range and buffer, who fills, and the two ways a READ's answer can move.
    #[allow(clippy::too_many_arguments)]
    fn fill_read(
        &self,
        object: &Object<S::Object, K>,
        range: Range<u64>,
        requested_end: u64,
        buf: &mut AlignedBuf,
        mut later: Option<&mut Vec<Range<u64>>>,
        by_prefetch: bool,
        mut answer: Option<Answer<'_>>,
    ) -> Result<(), (u64, io::Error)> {
        let requested = range.start..requested_end;
        let readahead = requested_end..range.end;
        // What the cache file already holds in the readahead part is not fetched again.
        // (With fanotify the engine is the file's only writer and scanned it whole when the
        // object was added: no `lseek`s on every event.)
        if !readahead.is_empty() && !self.asks_for_present {
            object.scan_present(readahead.clone());
        }
        // A queued fill ahead over the requested part: run it now, on this thread, rather
        // than wait for a pool thread to start it.
        if object.lock_ranges().inflight.intersects(requested.clone()) {
            self.run_queued_over(object, &requested, buf);
        }
        let mut r = object.lock_ranges();
        let waited = Instant::now();
        let must_wait = r.inflight.intersects(requested.clone());
        // Checked before waiting: the fill it waits for forgets its rest when it ends.
        let in_answered_rest = r.answered_rest.intersects(requested.clone());
        r = wait_in_flight(object, r, &requested);
        if must_wait {
            self.stats.claim_wait.observe(waited.elapsed());
        }
        let (mut claims, covered) = if self.asks_for_present {
            // The kernel asks for present bytes too (fanotify): what is known present (written,
            // or found in the backing file) is not fetched again.
            let mut present = r.written.clone();
            present.extend(&r.scanned);
            (present.gaps(requested.clone()), Vec::new())
        } else {
            // Written before: the kernel asked anyway, so check the cache file (a READ can
            // race with the write that made the range present); refill what is not there.
            (
                r.written.gaps(requested.clone()),
                r.written.intersection(requested.clone()),
            )
        };
        self.stats
            .served_by_prefetch_bytes
            .add(r.prefetched.intersection_len(requested.clone()));
        // A READ that landed in the rest of a window answered early (the reader reading on
        // there): that fill is its readahead.
        if !readahead.is_empty() && !in_answered_rest {
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
            let missing = match object.sink().data_ranges(c.clone()) {
                // Whole blocks only, so what is refilled stays block-aligned.
                Ok(present) => RangeSet::whole_blocks(present, BLOCK).gaps(c),
                Err(_) => Vec::new(),
            };
            for m in missing {
                log::debug!(
                    "object {}: {m:?} written before but not present",
                    object.id()
                );
                if let Err(e) = self.fill(object, m, buf, by_prefetch) {
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
            // The fill that writes the end of the requested part may answer the READ, if all
            // before it went well.
            let hook = match answer.take() {
                Some(a) if first_err.is_none() && c.start < requested_end => {
                    Some((requested_end, a))
                }
                other => {
                    answer = other;
                    None
                }
            };
            let result =
                self.fill_in_chunks_answering(object, c.clone(), buf, by_prefetch, u64::MAX, hook);
            // Whatever was not written is released too (fill marks written chunks itself).
            object.release(c, false, by_prefetch);
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
        object: &Object<S::Object, K>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
        prefetch: bool,
    ) -> Result<(), (u64, io::Error)> {
        self.fill_in_chunks(object, range, buf, prefetch, u64::MAX)
    }

    /// [`fill`](Self::fill) in chunks of at most `max_chunk` bytes (whole blocks). A range
    /// that fits one chunk is one fill (a READ's window, wherever it starts: one batch of
    /// requests to a remote store, one round trip); a longer one is cut at multiples of the
    /// chunk size (a range that starts mid-chunk begins with a short one), so that fills of
    /// one stream line up with a server's fixed-size chunks.
    pub(crate) fn fill_in_chunks(
        &self,
        object: &Object<S::Object, K>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
        prefetch: bool,
        max_chunk: u64,
    ) -> Result<(), (u64, io::Error)> {
        self.fill_in_chunks_answering(object, range, buf, prefetch, max_chunk, None)
    }

    /// [`fill_in_chunks`](Self::fill_in_chunks), writing (and marking) each part of a chunk
    /// as soon as the server reports it final ([`OnDemandServer::fill_streaming`]), and
    /// calling `answer`'s hook once the bytes up to its offset are written that way.
    fn fill_in_chunks_answering(
        &self,
        object: &Object<S::Object, K>,
        range: Range<u64>,
        buf: &mut AlignedBuf,
        prefetch: bool,
        max_chunk: u64,
        mut answer: Option<(u64, Answer<'_>)>,
    ) -> Result<(), (u64, io::Error)> {
        let chunk = (buf.len() as u64).min(max_chunk.max(BLOCK) / BLOCK * BLOCK);
        let bytes = buf.as_mut_bytes();
        let whole = range.end.saturating_sub(range.start) <= chunk;
        let mut pos = range.start;
        while pos < range.end {
            let end = if whole {
                range.end
            } else {
                range
                    .end
                    .min((pos / chunk).saturating_add(1).saturating_mul(chunk))
            };
            let produced = self.produce(object, pos..end, bytes, prefetch, &mut answer)?;
            self.write_produced(object, &produced, bytes, prefetch)?;
            pos = end;
        }
        Ok(())
    }

    /// Produce `range` (at most `bytes.len()`, whole blocks) of `object` into `bytes` with the
    /// server, padded with zeros past the object's end. What a streaming server reports final
    /// early is written (and marked) on the way, `answer`'s hook called once its offset is
    /// written; the rest is left to [`write_produced`](Self::write_produced). On error,
    /// returns where it stopped (nothing past what was written early is marked).
    pub(crate) fn produce(
        &self,
        object: &Object<S::Object, K>,
        range: Range<u64>,
        bytes: &mut [u8],
        prefetch: bool,
        answer: &mut Option<(u64, Answer<'_>)>,
    ) -> Result<Produced, (u64, io::Error)> {
        let Range { start: pos, end } = range;
        // At most the buffer's length: fits in usize.
        let n = (end - pos) as usize;
        let valid = (end.min(object.size()).saturating_sub(pos)) as usize;
        let out = &mut bytes[..n];
        let started = Instant::now();
        // Whole blocks of `out` written while the server still fills the rest.
        let mut early = 0usize;
        let mut early_err = None;
        let mut answered_early = false;
        let end_of_fill = end;
        let mut ready = |prefix: &[u8]| {
            let upto = prefix.len() / BLOCK as usize * BLOCK as usize;
            // Written when it answers the READ, else in steps of at least EARLY_WRITE:
            // each write is a syscall and a direct write into the cache file.
            let answers = answer
                .as_ref()
                .is_some_and(|(end, _)| pos + upto as u64 >= *end);
            if early_err.is_some() || upto <= early || (!answers && upto - early < EARLY_WRITE) {
                return;
            }
            let at = pos + early as u64;
            if let Err(e) = object.sink().write_at(&prefix[early..upto], at) {
                early_err = Some((at, e));
                return;
            }
            self.stats.writes.incr();
            self.stats.bytes_written.add((upto - early) as u64);
            object.release(at..pos + upto as u64, true, prefetch);
            early = upto;
            if let Some((end, _)) = answer
                && pos + upto as u64 >= *end
                && let Some((_, answer)) = answer.take()
            {
                log::debug!(
                    "object {}: [{pos}, +{upto}) written after {:.1} ms: READ answered",
                    object.id(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                if pos + (upto as u64) < end_of_fill {
                    object
                        .lock_ranges()
                        .answered_rest
                        .insert(pos + upto as u64..end_of_fill);
                    answered_early = true;
                }
                answer();
            }
        };
        let filled = self
            .server
            .fill_streaming(object.state(), pos, &mut out[..valid], &mut ready);
        if answered_early {
            object.lock_ranges().answered_rest.remove(pos..end);
        }
        if let Some(e) = early_err {
            return Err(e);
        }
        filled.map_err(|e| (pos + early as u64, e))?;
        // Cold prediction's ELF rule reads the objects these bytes hold.
        self.observe_filled(object, pos, &out[..valid]);
        let fetched_in = started.elapsed();
        self.stats.fetch_latency.observe(fetched_in);
        let fetched = if prefetch {
            &self.stats.prefetched_bytes
        } else {
            &self.stats.fetched_bytes
        };
        fetched.add(valid as u64);
        out[valid..].fill(0);
        Ok(Produced {
            pos,
            n,
            early,
            fetched_in,
        })
    }

    /// Write what [`produce`](Self::produce) left (`bytes[early..n]`, the buffer it produced
    /// into) and mark it present, only once the write returned.
    ///
    /// # Errors
    ///
    /// The sink's, with where it failed: nothing of the rest is marked.
    pub(crate) fn write_produced(
        &self,
        object: &Object<S::Object, K>,
        produced: &Produced,
        bytes: &[u8],
        prefetch: bool,
    ) -> Result<(), (u64, io::Error)> {
        let Produced {
            pos,
            n,
            early,
            fetched_in,
        } = *produced;
        let written = Instant::now();
        let rest = pos + early as u64;
        if early < n {
            object
                .sink()
                .write_at(&bytes[early..n], rest)
                .map_err(|e| (rest, e))?;
        }
        log::debug!(
            "object {}: filled [{pos}, +{n}) on thread {}: fetched in {:.1} ms, written in {:.1} ms",
            object.id(),
            std::thread::current().name().unwrap_or("?"),
            fetched_in.as_secs_f64() * 1e3,
            written.elapsed().as_secs_f64() * 1e3
        );
        if early < n {
            self.stats.writes.incr();
            self.stats.bytes_written.add((n - early) as u64);
            object.release(rest..pos + n as u64, true, prefetch);
        }
        Ok(())
    }
}

/// One chunk [`Engine::produce`] made in a fill buffer: `[pos, pos + n)`, of which the first
/// `early` bytes are written already (streamed out), the rest waiting for
/// [`Engine::write_produced`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Produced {
    pos: u64,
    n: usize,
    early: usize,
    fetched_in: Duration,
}

/// Wait, with the object's ranges locked (`r`), until nothing of `requested` is in flight
/// (or the object is closed). Bounded: fills in flight always end (success or failure); the
/// bound only guards against a server that hangs.
fn wait_in_flight<'a, O, K>(
    object: &'a Object<O, K>,
    mut r: std::sync::MutexGuard<'a, super::object::ObjectRanges>,
    requested: &Range<u64>,
) -> std::sync::MutexGuard<'a, super::object::ObjectRanges> {
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
    r
}

#[cfg(test)]
mod tests {
    use std::sync::{Condvar, Mutex};

    use cachefiles_proto::ObjectId;

    use super::*;
    use crate::server::{ObjectKey, Opened};
    use crate::testing::FakeFd;

    const MIB: u64 = 1 << 20;

    /// A 4 MiB object whose every read fails with EIO, the first one once the gate opens.
    #[derive(Default)]
    struct FailingGate {
        entered: Mutex<usize>,
        open: Mutex<bool>,
        changed: Condvar,
    }

    impl FailingGate {
        fn wait_entered(&self) {
            let entered = self.entered.lock().unwrap();
            let (entered, timeout) = self
                .changed
                .wait_timeout_while(entered, Duration::from_secs(30), |n| *n == 0)
                .unwrap();
            assert!(!timeout.timed_out() && *entered > 0, "no fill started");
        }

        fn let_through(&self) {
            *self.open.lock().unwrap() = true;
            self.changed.notify_all();
        }
    }

    impl OnDemandServer for FailingGate {
        type Object = ();
        fn open(&self, _: &ObjectKey<'_>) -> io::Result<Opened<()>> {
            Ok(Opened {
                object: (),
                size: 4 * MIB,
            })
        }
        fn read_at(&self, _: &(), _: u64, _: &mut [u8]) -> io::Result<usize> {
            *self.entered.lock().unwrap() += 1;
            self.changed.notify_all();
            let open = self.open.lock().unwrap();
            drop(
                self.changed
                    .wait_timeout_while(open, Duration::from_secs(30), |open| !*open)
                    .unwrap(),
            );
            Err(io::Error::from_raw_os_error(nix::libc::EIO))
        }
    }

    /// A fanotify event over a window another event is filling waits for that fill; when the
    /// fill fails, the event is planned as a miss (and fails in turn), and still counts as one
    /// read: two events, two reads, two read errors.
    #[test]
    fn a_read_waiting_on_a_fill_that_fails_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = Engine::new(FailingGate::default()).with_readahead(MIB);
        engine.asks_for_present = true;
        let key = ObjectKey {
            volume_key: b"v",
            cookie_key: b"blob",
        };
        let opened = engine.server().open(&key).unwrap();
        let (sink, _log) = FakeFd::create(&dir.path().join("cache"));
        let object = engine
            .open_object(ObjectId(1), b"v", b"blob", opened, sink)
            .unwrap();
        let engine = &engine;
        let read = |off: u64| {
            let mut buf = AlignedBuf::new(MIB as usize);
            let plan = engine.plan_read_unless_present(&object, off, 4096, &mut buf);
            let Some(ReadPlan {
                window: Some((range, end)),
                ..
            }) = plan
            else {
                panic!("a read of missing bytes planned as {plan:?}");
            };
            engine.fill_window(&object, range, end, &mut buf, &mut Vec::new())
        };
        std::thread::scope(|s| {
            // The first event's window, [0, 1 MiB), is in flight, held by the server.
            let first = s.spawn(|| read(0));
            engine.server().wait_entered();
            // The second one, inside that window, counted (so past its check: it found the
            // window in flight) and waiting for it.
            let second = s.spawn(|| read(MIB / 2));
            let t = Instant::now();
            while engine.stats().reads < 2 {
                assert!(t.elapsed() < Duration::from_secs(30), "{}", engine.stats());
                std::thread::sleep(Duration::from_millis(1));
            }
            engine.server().let_through();
            assert!(first.join().unwrap().is_err());
            assert!(second.join().unwrap().is_err());
        });
        let st = engine.stats();
        assert_eq!((st.reads, st.read_errors), (2, 2), "{st}");
        assert_eq!(st.requested_bytes, 2 * 4096, "{st}");
    }
}
