//! [`RafsServer`]: serves Nydus RAFS v6 images (and anything else) from a [`BlobStore`];
//! [`RafsDirServer`] is the one over a local directory ([`LocalDirStore`]).
//!
//! A RAFS v6 image is a bootstrap (an EROFS image, opened by the kernel under the mount's
//! `fsid`) plus data blobs, one EROFS device each, opened under the blob id (the device
//! tag). The kernel reads a blob device in its **uncompressed** address space, while the
//! stored blob holds its chunks compressed (lz4_block, zstd) or raw, back to back. This
//! server answers:
//!
//! * OPEN of a cookie key naming a stored RAFS v6 bootstrap: the bootstrap as it is (its
//!   size), and its blob table is remembered;
//! * OPEN of a blob id listed by a bootstrap of the store (the one just opened, or any found
//!   among [`BlobStore::names`]): the blob's uncompressed size, the size the device slot
//!   gives the kernel;
//! * READ of such a blob: the stored bytes of every chunk the range touches are asked of the
//!   store in one [`StoredBlob::read_ranges`] batch (a remote store merges and parallelizes
//!   them), then decompressed, optionally checked against the bootstrap's chunk digests, and
//!   returned at their uncompressed offsets (zeros between chunks) by
//!   [`erofs_reader::nydus::BlobSource`]; the engine writes them aligned. From a store that
//!   streams (a registry), a window's chunks are decoded as their stored bytes arrive, the
//!   first one as far as its stored prefix goes (zstd and raw chunks,
//!   [`erofs_reader::nydus::ChunkStream`]), and the engine writes each final prefix
//!   ([`OnDemandServer::fill_streaming`]). A store error or a digest mismatch fails the
//!   read (the reader gets `EIO`), never gives other bytes. Reads on several threads never
//!   fetch one chunk twice: a read that splits a chunk with one in flight asks for its
//!   other chunks at once and waits for that read only to decode the shared chunk;
//! * OPEN of a cookie key naming a `--blob-inline-meta` data blob (mounted with
//!   `fsid=BLOB_ID`): the bootstrap inlined in it; the kernel then opens the device under the
//!   placeholder tag `"x" × 64`, which is served as that blob (the volume's fsid);
//! * anything else: the stored bytes named by the cookie key, as they are.
//!
//! So `erofs-ondemand serve --blob-dir DIR` serves every Nydus image in `DIR` with no
//! configuration: put the bootstrap and the blobs (named by their ids) there and mount with
//! `mount -t erofs none -o fsid=BOOTSTRAP_NAME /mnt`.
//!
//! ```no_run
//! use ondemand::rafs::RafsDirServer;
//! use ondemand::{CachefilesDevice, Daemon, Session};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = RafsDirServer::new("/var/lib/nydus").with_verify_digests(true);
//! let dev = CachefilesDevice::open()?;
//! dev.bind_ondemand("/var/cache/erofs".as_ref(), None)?;
//! let mut daemon = Daemon::new(dev, Session::new(server));
//! daemon.run()?;
//! println!("{}", daemon.session().server().totals());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use erofs_format::rafs::ChunkInfo;
use erofs_reader::nydus::{BlobInfo, BlobSource, BlobStats, ChunkStream, Digest, RafsMeta};
use erofs_reader::{Image, Source};

use crate::blob_store::{BlobStore, LocalDirStore, RangeRead, StoredBlob};
use crate::chunk_claims::{ChunkClaims, Claim};
use crate::server::{ObjectKey, OnDemandServer, Opened};

/// Reads at least this long are taken as sequential readahead windows, whose next window
/// is decoded in the background.
const DECODE_AHEAD_MIN: u64 = 256 * 1024;

/// The device tag `--blob-inline-meta` bootstraps carry for their own blob.
const INLINE_PLACEHOLDER: &[u8] = &[b'x'; 64];

/// Most names one scan for bootstraps looks at.
const MAX_SCAN_ENTRIES: usize = 100_000;

/// Most stored bytes one batch stages for a read (a longer read is served without a batch).
const MAX_BATCH_BYTES: u64 = 64 << 20;

/// An object served by [`RafsServer`].
pub enum RafsObject {
    /// Stored bytes served as they are (a bootstrap, or any non-Nydus blob).
    Stored(Arc<dyn StoredBlob>),
    /// A Nydus data blob served as its uncompressed address space.
    Blob(Arc<RafsBlob>),
    /// The bootstrap inlined in a `--blob-inline-meta` data blob (the mount's fsid names
    /// the blob).
    Inline(Arc<[u8]>),
}

/// A blob a bootstrap lists: enough to open it later.
#[derive(Clone)]
struct KnownBlob {
    info: BlobInfo,
    digests: Option<Vec<Option<Digest>>>,
}

impl fmt::Debug for RafsObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RafsObject::Stored(_) => f.write_str("Stored"),
            RafsObject::Blob(b) => f.debug_tuple("Blob").field(&b.source).finish(),
            RafsObject::Inline(b) => f.debug_tuple("Inline").field(&b.len()).finish(),
        }
    }
}

/// A Nydus data blob being served: its decoded view over the stored blob, with the stored ranges
/// of a read fetched ahead of decoding in one batch.
#[derive(Debug)]
pub struct RafsBlob {
    source: Arc<BlobSource>,
    staged: Arc<Staged>,
    /// Chunks being read by some thread: a read that touches one leaves it to that thread
    /// (fetching its other chunks meanwhile) and waits for it only to decode it, so two
    /// workers never fetch and decode the same chunk for two parts of it.
    claims: ChunkClaims,
}

impl RafsBlob {
    /// The decoded view (uncompressed address space, chunk map, counters).
    pub fn source(&self) -> &BlobSource {
        &self.source
    }

    /// Read `buf.len()` uncompressed bytes at `off`: first the stored bytes of every chunk
    /// that the range touches, in one [`StoredBlob::read_ranges`] batch, then the decoding
    /// (which finds them staged).
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.read_batch(&mut [RangeRead { offset: off, buf }])
    }

    /// Read several uncompressed ranges (sorted, not overlapping) as one batch: the stored
    /// bytes of every chunk they touch in one [`StoredBlob::read_ranges`] call (a remote
    /// store merges near ranges into few requests and runs them in parallel), then each
    /// range decoded from them.
    fn read_batch(&self, reads: &mut [RangeRead<'_>]) -> io::Result<()> {
        let wanted: Vec<Range<u64>> = reads
            .iter()
            .map(|r| r.offset..r.offset.saturating_add(r.buf.len() as u64))
            .collect();
        let mut chunks: Vec<usize> = wanted
            .iter()
            .flat_map(|r| self.chunk_span(r.clone()))
            .collect();
        chunks.sort_unstable();
        chunks.dedup();
        let mut claim = self.claims.claim_free(&chunks);
        self.read_claimed(reads, &wanted, &mut claim)
    }

    /// Read `buf.len()` uncompressed bytes at `off` from a store that streams
    /// ([`StoredBlob::streams`]): the stored bytes of every chunk the range touches in one
    /// [`StoredBlob::read_ranges_arriving`] call, each chunk decoded into `buf` as its
    /// stored bytes come in (while the next ones are on the wire), and `ready` told of each
    /// longer prefix of `buf` that is final. The first chunk not decoded yet is decoded as
    /// far as its stored prefix goes ([`ChunkStream`]: zstd and raw chunks, when digests
    /// are not checked), the others once all their bytes are in. Chunks already decoded
    /// need no stored bytes; a batch that cannot be staged (ZRan blobs, overlapping or too
    /// many stored bytes) is read as [`read_batch`](Self::read_batch) does, and reported
    /// whole.
    fn read_streaming(
        &self,
        buf: &mut [u8],
        off: u64,
        ready: &mut (dyn FnMut(&[u8]) + Send),
    ) -> io::Result<()> {
        let range = off..off.saturating_add(buf.len() as u64);
        let span = self.chunk_span(range.clone());
        let chunks: Vec<usize> = span.clone().collect();
        let mut claim = self.claims.claim_free(&chunks);
        self.read_streaming_claimed(buf, range, span, ready, &mut claim)
    }

    fn read_streaming_claimed(
        &self,
        buf: &mut [u8],
        range: Range<u64>,
        span: Range<usize>,
        ready: &mut (dyn FnMut(&[u8]) + Send),
        claim: &mut Claim<'_>,
    ) -> io::Result<()> {
        let wanted = [range.clone()];
        // One range per chunk (one request all the same): each handed over as it arrives.
        // The chunks another read is fetching are not: decoded once that read is over.
        let stored = self.stored_chunk_ranges(&wanted, claim);
        let Ok(chunks) = self.source.chunk_infos() else {
            // The decoder reports the chunk map's error.
            self.wait_theirs(claim);
            return self.source.read_exact_at(buf, range.start);
        };
        if stored.is_empty() {
            // Decoded already, nothing stored, or not stageable: the batch way.
            self.read_claimed(
                &mut [RangeRead {
                    offset: range.start,
                    buf,
                }],
                &wanted,
                claim,
            )?;
            ready(buf);
            return Ok(());
        }
        let mut bufs: Vec<Vec<u8>> = stored
            .iter()
            .map(|r| vec![0u8; (r.end - r.start) as usize])
            .collect();
        let mut reads: Vec<RangeRead<'_>> = stored
            .iter()
            .zip(bufs.iter_mut())
            .map(|(r, b)| RangeRead {
                offset: r.start,
                buf: b,
            })
            .collect();
        let progress = Mutex::new(Progress {
            buf,
            start: range.start,
            next: span.start,
            done: 0,
            ready,
            error: None,
            arrivals: Arrivals::new(&stored),
            head: None,
            staged: Vec::new(),
            decoding: Duration::ZERO,
            reporting: Duration::ZERO,
        });
        let started = Instant::now();
        let arrived = |offset: u64, bytes: &[u8]| {
            let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
            if p.error.is_some() {
                return;
            }
            // Ranges complete: staged for the decoder (chunks decoded whole).
            for i in p.arrivals.put(offset, bytes) {
                let (start, bytes) = (p.arrivals.ranges[i].start, p.arrivals.bytes[i].clone());
                if self.staged.stage(start, bytes) {
                    p.staged.push(start);
                }
            }
            p.advance(self, chunks, span.end, false);
        };
        let fetched = self.staged.blob.read_ranges_arriving(&mut reads, &arrived);
        drop(reads);
        let mut p = progress.into_inner().unwrap_or_else(|p| p.into_inner());
        if fetched.is_ok() && p.error.is_none() {
            // The rest: chunks whose bytes came in out of order, those another read
            // fetched, the zeros after the last.
            self.wait_theirs(claim);
            p.advance(self, chunks, span.end, true);
        }
        self.staged.drop_staged(std::mem::take(&mut p.staged));
        log::debug!(
            "[{}, +{}): {} stored bytes in {} ranges in {:.1} ms, {:.1} ms of it decoding, {:.1} ms writing",
            range.start,
            range.end - range.start,
            stored.iter().map(|r| r.end - r.start).sum::<u64>(),
            stored.len(),
            started.elapsed().as_secs_f64() * 1e3,
            p.decoding.as_secs_f64() * 1e3,
            p.reporting.as_secs_f64() * 1e3
        );
        fetched?;
        match p.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Read and check the chunk map with one request to the store: the chunk-info array and
    /// the blob meta header after it are adjacent at the blob's end, and the decoder reads
    /// them one after the other (two round trips to a remote store); staged together, they
    /// are one. Blobs whose map lives in a separate meta blob, or that do not place it in
    /// the stored blob, load it as the decoder does. An error is kept by the decoder and
    /// answers the OPEN.
    fn load_chunk_map(&self, record: &erofs_format::rafs::RafsV6Blob) {
        use erofs_format::rafs::{BLOB_META_HEADER_SIZE, BlobFeatures};
        let start = record.ci_offset.get();
        let span = record
            .meta_header_offset()
            .and_then(|h| h.checked_add(BLOB_META_HEADER_SIZE as u64));
        let separate = record.features().contains(BlobFeatures::SEPARATE);
        let size = self.staged.blob.size().unwrap_or(0);
        let staged = match span {
            Some(end)
                if !separate && start < end && end <= size && end - start <= MAX_BATCH_BYTES =>
            {
                // A failed fetch leaves the decoder to read (and fail) on its own.
                self.staged.fetch(std::slice::from_ref(&(start..end))).ok()
            }
            _ => None,
        };
        let _ = self.source.chunk_infos();
        if let Some(staged) = staged {
            self.staged.drop_staged(staged);
        }
    }

    /// The indices of the chunks overlapping `range` (none if the chunk map cannot be read:
    /// the read then fails on its own).
    fn chunk_span(&self, range: Range<u64>) -> Range<usize> {
        let Ok(chunks) = self.source.chunk_infos() else {
            return 0..0;
        };
        let first = chunks.partition_point(|c| c.uncompressed_end() <= range.start);
        let last = chunks
            .partition_point(|c| c.uncompressed_offset < range.end)
            .max(first);
        first..last
    }

    /// Wait for the reads that were fetching chunks of `claim` when it was made (their
    /// chunks then decoded, as a rule: none fetched twice).
    fn wait_theirs(&self, claim: &mut Claim<'_>) {
        let started = Instant::now();
        let n = claim.wait_theirs();
        if n > 0 {
            log::debug!(
                "waited {:.1} ms for {n} chunks another read was fetching",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    /// [`read_batch`](Self::read_batch) once its chunks are claimed (`wanted`: the reads'
    /// ranges): the stored bytes of its own chunks fetched, then those of other reads waited
    /// for, then each range decoded.
    fn read_claimed(
        &self,
        reads: &mut [RangeRead<'_>],
        wanted: &[Range<u64>],
        claim: &mut Claim<'_>,
    ) -> io::Result<()> {
        let ranges = self.stored_ranges(wanted, claim);
        // One stored range for one read: the decoder's own read is already one request,
        // unless it has to wait for another read's chunks first.
        let waits = claim.theirs().next().is_some();
        let staged = if ranges.len() >= 2 || ((reads.len() >= 2 || waits) && !ranges.is_empty()) {
            Some(self.staged.fetch(&ranges)?)
        } else {
            None
        };
        self.wait_theirs(claim);
        let result = reads
            .iter_mut()
            .try_for_each(|r| self.source.read_exact_at(r.buf, r.offset));
        if let Some(staged) = staged {
            self.staged.drop_staged(staged);
        }
        result
    }

    /// The stored range of each chunk overlapping `wanted` that is not decoded already nor
    /// left to another read by `claim`, sorted, one per range (none for ZRan blobs, whose
    /// stored bytes are shared gzip streams, or when the batch would be too big or its
    /// ranges overlap).
    fn stored_chunk_ranges(&self, wanted: &[Range<u64>], claim: &Claim<'_>) -> Vec<Range<u64>> {
        let Ok(chunks) = self.source.chunk_infos() else {
            return Vec::new();
        };
        if self.source.zran_contexts().is_ok_and(|z| !z.is_empty()) {
            return Vec::new();
        }
        // A chunk already decoded (a window that ended inside it) needs no stored bytes:
        // staging it again would fetch it twice.
        let mut out: Vec<Range<u64>> = wanted
            .iter()
            .flat_map(|r| self.chunk_span(r.clone()))
            .filter(|&ci| u32::try_from(ci).is_ok_and(|ci| !self.source.is_decoded(ci)))
            .filter(|ci| claim.theirs().all(|c| c != *ci))
            .filter_map(|ci| chunks.get(ci))
            .map(|c| c.compressed_offset..c.compressed_end())
            .filter(|r| !r.is_empty())
            .collect();
        out.sort_by_key(|r| r.start);
        // Chunks deduplicated within the blob (or touched by two reads) may share stored
        // bytes: one range each.
        out.dedup();
        let total: u64 = out.iter().map(|r| r.end - r.start).sum();
        if total > MAX_BATCH_BYTES || out.windows(2).any(|w| w[1].start < w[0].end) {
            return Vec::new();
        }
        out
    }

    /// [`stored_chunk_ranges`](Self::stored_chunk_ranges) with the ranges of chunks stored
    /// back to back merged.
    fn stored_ranges(&self, wanted: &[Range<u64>], claim: &Claim<'_>) -> Vec<Range<u64>> {
        let out = self.stored_chunk_ranges(wanted, claim);
        // Chunks stored back to back are one range: the decoder reads such a run in one
        // request itself, so a window whose chunks are adjacent (the usual case) is not
        // staged (a copy of its stored bytes in fresh buffers) at all.
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(out.len());
        for r in out {
            match merged.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => merged.push(r),
            }
        }
        merged
    }
}

/// A [`RafsBlob::read_streaming`] in progress: `buf` (the uncompressed bytes from `start`)
/// is final up to `done`, and chunk `next` is the first not decoded into it yet (`head`
/// decodes it as its stored bytes arrive, if it can be decoded so).
struct Progress<'a, 'r> {
    buf: &'a mut [u8],
    start: u64,
    next: usize,
    done: usize,
    ready: &'r mut (dyn FnMut(&[u8]) + Send),
    error: Option<io::Error>,
    arrivals: Arrivals,
    head: Option<Head>,
    /// Starts of the ranges staged, dropped when the read ends.
    staged: Vec<u64>,
    /// Time spent decoding, and in `ready` (the engine's writes and answer): the debug
    /// log's breakdown of a fill.
    decoding: Duration,
    reporting: Duration,
}

/// The chunk at a streaming read's [`Progress::next`], decoded as its stored bytes arrive:
/// straight into the read's buffer when the chunk lies inside it, else into `temp` (the
/// whole chunk, kept in the decoded-chunk cache once complete) and copied from there.
struct Head {
    stream: ChunkStream,
    temp: Option<Arc<[u8]>>,
}

impl Progress<'_, '_> {
    /// Decode the chunks from `next` on whose stored bytes are staged (or that are decoded
    /// already), in order, up to chunk `end`, and as much of the next one as its stored
    /// bytes so far give (zstd and raw chunks, [`BlobSource::chunk_stream`]); with `last`,
    /// all of them and the rest of `buf`. Tells `ready` of the new prefix.
    fn advance(&mut self, blob: &RafsBlob, chunks: &[ChunkInfo], end: usize, last: bool) {
        if self.error.is_some() {
            return;
        }
        let before = self.done;
        let started = Instant::now();
        let decoded = self.advance_inner(blob, chunks, end, last);
        self.decoding += started.elapsed();
        if let Err(e) = decoded {
            self.error = Some(e);
            return;
        }
        if self.done > before {
            let started = Instant::now();
            (self.ready)(&self.buf[..self.done]);
            self.reporting += started.elapsed();
        }
    }

    fn advance_inner(
        &mut self,
        blob: &RafsBlob,
        chunks: &[ChunkInfo],
        end: usize,
        last: bool,
    ) -> io::Result<()> {
        while self.next < end {
            let Some(c) = chunks.get(self.next) else {
                break;
            };
            let stored = c.compressed_offset..c.compressed_end();
            let arriving = self.arrivals.index(&stored);
            if self
                .head
                .as_ref()
                .is_some_and(|h| h.stream.index() as usize == self.next)
            {
                if self.feed_head(blob, c, arriving)? {
                    self.next += 1;
                    continue;
                }
                if !last {
                    break;
                }
                // Not all in although the store said so: decoded whole below (the same
                // bytes as those reported).
                self.head = None;
            }
            let available = stored.is_empty()
                || u32::try_from(self.next).is_ok_and(|ci| blob.source.is_decoded(ci))
                || blob.staged.covers(stored);
            if !available && !last {
                // Part of its stored bytes in: decode that much, if the chunk can be.
                if let Some(i) = arriving
                    && self.arrivals.prefix(i) > 0
                    && let Ok(ci) = u32::try_from(self.next)
                    && let Some(stream) = blob.source.chunk_stream(ci)?
                {
                    self.head = Some(Head { stream, temp: None });
                    if self.feed_head(blob, c, arriving)? {
                        self.next += 1;
                        continue;
                    }
                }
                break;
            }
            // Chunks start and end within `u64`; `buf` holds the part within the range.
            let chunk_end = c.uncompressed_end().saturating_sub(self.start);
            let to = usize::try_from(chunk_end).map_or(self.buf.len(), |e| e.min(self.buf.len()));
            if to > self.done {
                let at = self.start + self.done as u64;
                blob.source
                    .read_exact_at(&mut self.buf[self.done..to], at)?;
                self.done = to;
            }
            self.next += 1;
        }
        if last && self.done < self.buf.len() {
            let at = self.start + self.done as u64;
            blob.source.read_exact_at(&mut self.buf[self.done..], at)?;
            self.done = self.buf.len();
        }
        Ok(())
    }

    /// Feed the head chunk `c` the stored bytes arrived so far (range `arriving` of
    /// [`Arrivals`]) and move `done` over what it decoded; returns whether the chunk is
    /// complete (its stream finished and checked).
    fn feed_head(
        &mut self,
        blob: &RafsBlob,
        c: &ChunkInfo,
        arriving: Option<usize>,
    ) -> io::Result<bool> {
        let (Some(i), Some(head)) = (arriving, self.head.as_mut()) else {
            return Ok(false);
        };
        let stored = self.arrivals.prefix_bytes(i);
        let size = c.uncompressed_size as usize;
        let buf_end = self.start.saturating_add(self.buf.len() as u64);
        let chunk_start = c.uncompressed_offset;
        if chunk_start >= self.start && c.uncompressed_end() <= buf_end {
            // Inside the read: decoded in place, after the zeros of the gap before it.
            // `chunk_start - start` is below `buf.len()`, a usize.
            let at = (chunk_start - self.start) as usize;
            if self.done < at {
                self.buf[self.done..at].fill(0);
                self.done = at;
            }
            let n = head
                .stream
                .feed(&blob.source, stored, &mut self.buf[at..at + size])?;
            self.done = self.done.max(at + n);
        } else {
            let temp = head
                .temp
                .get_or_insert_with(|| std::iter::repeat_n(0u8, size).collect());
            let out = Arc::get_mut(temp)
                .ok_or_else(|| io::Error::other("streamed chunk buffer shared"))?;
            let n = head.stream.feed(&blob.source, stored, out)?;
            // The decoded part within the read, past what is final.
            let from = self.start + self.done as u64;
            if chunk_start > from {
                // `chunk_start - start` is below `buf.len()` here.
                let at = (chunk_start - self.start) as usize;
                self.buf[self.done..at].fill(0);
                self.done = at;
            }
            let from = self.start + self.done as u64;
            let upto = (chunk_start + n as u64).min(buf_end);
            if upto > from {
                // Offsets within the chunk and within `buf`: usize.
                let (src, dst) = ((from - chunk_start) as usize, self.done);
                let len = (upto - from) as usize;
                self.buf[dst..dst + len].copy_from_slice(&temp[src..src + len]);
                self.done += len;
            }
        }
        if !self.arrivals.complete(i) {
            return Ok(false);
        }
        head.stream.finish(&blob.source)?;
        if let Some(temp) = head.temp.take() {
            blob.source.keep_decoded(&head.stream, temp);
        }
        self.head = None;
        Ok(true)
    }
}

/// The stored bytes of a streaming read's ranges (sorted, not overlapping) as they arrive:
/// parts in any order, a part possibly twice (after a store's retry).
struct Arrivals {
    ranges: Vec<Range<u64>>,
    bytes: Vec<Arc<[u8]>>,
    /// Per range, the parts in (sorted, merged, from the range's start).
    have: Vec<Vec<Range<usize>>>,
}

impl Arrivals {
    fn new(ranges: &[Range<u64>]) -> Self {
        Arrivals {
            ranges: ranges.to_vec(),
            // The ranges' total is bounded by MAX_BATCH_BYTES.
            bytes: ranges
                .iter()
                .map(|r| std::iter::repeat_n(0u8, (r.end - r.start) as usize).collect())
                .collect(),
            have: vec![Vec::new(); ranges.len()],
        }
    }

    /// Take `bytes` at stored `offset`; returns the ranges it completed.
    fn put(&mut self, offset: u64, bytes: &[u8]) -> Vec<usize> {
        let end = offset.saturating_add(bytes.len() as u64);
        let mut completed = Vec::new();
        let mut i = self.ranges.partition_point(|r| r.end <= offset);
        while let Some(r) = self.ranges.get(i).cloned()
            && r.start < end
        {
            let (from, to) = (offset.max(r.start), end.min(r.end));
            if from < to && !self.complete(i) {
                // Offsets within a range and a part: usize.
                let (at, len) = ((from - r.start) as usize, (to - from) as usize);
                let src = &bytes[(from - offset) as usize..][..len];
                if let Some(dst) = Arc::get_mut(&mut self.bytes[i]) {
                    dst[at..at + len].copy_from_slice(src);
                    let have = &mut self.have[i];
                    have.push(at..at + len);
                    have.sort_by_key(|p| p.start);
                    let mut merged: Vec<Range<usize>> = Vec::with_capacity(have.len());
                    for p in have.drain(..) {
                        match merged.last_mut() {
                            Some(m) if p.start <= m.end => m.end = m.end.max(p.end),
                            _ => merged.push(p),
                        }
                    }
                    *have = merged;
                    if self.complete(i) {
                        completed.push(i);
                    }
                }
            }
            i += 1;
        }
        completed
    }

    /// The range that is exactly `stored`, if any.
    fn index(&self, stored: &Range<u64>) -> Option<usize> {
        let i = self.ranges.partition_point(|r| r.start < stored.start);
        (self.ranges.get(i) == Some(stored)).then_some(i)
    }

    /// How many bytes of range `i` are in from its start.
    fn prefix(&self, i: usize) -> usize {
        match self.have[i].first() {
            Some(p) if p.start == 0 => p.end,
            _ => 0,
        }
    }

    fn prefix_bytes(&self, i: usize) -> &[u8] {
        &self.bytes[i][..self.prefix(i)]
    }

    fn complete(&self, i: usize) -> bool {
        self.prefix(i) == self.bytes[i].len()
    }
}

/// A store blob under a [`BlobSource`], with the stored ranges a batch fetched ahead of
/// decoding: the decoder's reads that fall within staged bytes are served from them.
struct Staged {
    blob: Arc<dyn StoredBlob>,
    staged: Mutex<Vec<(u64, Arc<[u8]>)>>,
}

impl fmt::Debug for Staged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staged").finish_non_exhaustive()
    }
}

impl Staged {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<[u8]>)>> {
        // Single pushes and removals: a poisoned list is still consistent.
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetch `ranges` (sorted, not overlapping) in one batch and stage them; returns their
    /// starts, for [`drop_staged`](Self::drop_staged).
    fn fetch(&self, ranges: &[Range<u64>]) -> io::Result<Vec<u64>> {
        let mut bufs: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| vec![0u8; (r.end - r.start) as usize])
            .collect();
        let mut reads: Vec<RangeRead<'_>> = ranges
            .iter()
            .zip(bufs.iter_mut())
            .map(|(r, buf)| RangeRead {
                offset: r.start,
                buf,
            })
            .collect();
        self.blob.read_ranges(&mut reads)?;
        drop(reads);
        let mut staged = self.lock();
        for (r, buf) in ranges.iter().zip(bufs) {
            staged.push((r.start, Arc::from(buf)));
        }
        Ok(ranges.iter().map(|r| r.start).collect())
    }

    /// Stage `bytes` at `offset`, unless the same range is staged already (by another read);
    /// returns whether it was added.
    fn stage(&self, offset: u64, bytes: Arc<[u8]>) -> bool {
        let mut staged = self.lock();
        if staged
            .iter()
            .any(|(s, b)| *s == offset && b.len() == bytes.len())
        {
            return false;
        }
        staged.push((offset, bytes));
        true
    }

    /// Whether staged ranges cover all of `range`.
    fn covers(&self, range: Range<u64>) -> bool {
        let staged = self.lock();
        let mut pos = range.start;
        while pos < range.end {
            match staged
                .iter()
                .filter(|(s, b)| *s <= pos && pos - *s < b.len() as u64)
                .map(|(s, b)| s + b.len() as u64)
                .max()
            {
                Some(end) => pos = end,
                None => return false,
            }
        }
        true
    }

    fn drop_staged(&self, starts: Vec<u64>) {
        let mut staged = self.lock();
        for start in starts {
            if let Some(i) = staged.iter().position(|(s, _)| *s == start) {
                staged.swap_remove(i);
            }
        }
    }

    /// Copy `buf.len()` bytes at `offset` from staged ranges, if they cover all of it.
    fn copy_staged(&self, buf: &mut [u8], offset: u64) -> bool {
        let staged = self.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset.saturating_add(done as u64);
            let Some((start, bytes)) = staged
                .iter()
                .find(|(s, b)| *s <= pos && pos - *s < b.len() as u64)
            else {
                return false;
            };
            // `pos - start` is below the staged length, a usize.
            let from = (pos - start) as usize;
            let n = (bytes.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[from..from + n]);
            done += n;
        }
        true
    }
}

impl Source for Staged {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if !buf.is_empty() && self.copy_staged(buf, offset) {
            return Ok(());
        }
        self.blob.read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        self.blob.size()
    }
}

type Stamp = (Option<SystemTime>, u64);

#[derive(Default)]
struct State {
    /// Blob id → what the bootstraps say about it.
    known: HashMap<Vec<u8>, KnownBlob>,
    /// Open blobs, shared by every image (and mount) that uses the blob.
    open: HashMap<Vec<u8>, Arc<RafsBlob>>,
    /// Names already examined: name → ((modified, length), whether it is a bootstrap).
    examined: HashMap<Vec<u8>, (Stamp, bool)>,
}

/// Serves RAFS v6 images (bootstrap + blobs, decompressed on demand) and plain blobs from a
/// [`BlobStore`] (see the [module docs](self)).
pub struct RafsServer<B: BlobStore = LocalDirStore> {
    store: B,
    verify: bool,
    decode_ahead: bool,
    split_decode: bool,
    cache_bytes: usize,
    state: Mutex<State>,
    /// A bootstrap of the store parsed already (its name, and where its image and RAFS
    /// additions come from): its OPEN uses them instead of parsing the bytes again.
    parsed: Option<(Vec<u8>, ParsedBootstrap)>,
}

/// A bootstrap's parse, kept by whoever fetched it (`None`: parse the bytes).
pub(crate) type ParsedBootstrap = Arc<dyn Fn() -> Option<(Image, RafsMeta)> + Send + Sync>;

/// A [`RafsServer`] over the files of one directory.
pub type RafsDirServer = RafsServer<LocalDirStore>;

impl<B: BlobStore> fmt::Debug for RafsServer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RafsServer")
            .field("verify", &self.verify)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

/// Totals over every blob a [`RafsDirServer`] opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RafsTotals {
    /// Blobs opened (decoded views).
    pub blobs: u64,
    /// The blobs' counters, summed.
    pub stats: BlobStats,
}

impl fmt::Display for RafsTotals {
    /// `rafs blobs=N bytes_served=N stored_bytes=N fetches=N chunks_decoded=N chunks_verified=N cache_hits=N fetch_ms=N decode_ms=N digest_ms=N zran_inflates=N`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "rafs blobs={} bytes_served={} stored_bytes={} fetches={} chunks_decoded={} chunks_verified={} cache_hits={} fetch_ms={} decode_ms={} digest_ms={} zran_inflates={}",
            self.blobs,
            s.bytes_served,
            s.stored_bytes,
            s.fetches,
            s.chunks_decoded,
            s.chunks_verified,
            s.cache_hits,
            s.fetch_ns / 1_000_000,
            s.decode_ns / 1_000_000,
            s.digest_ns / 1_000_000,
            s.zran_inflates
        )
    }
}

impl RafsServer<LocalDirStore> {
    /// Serve the images and blobs in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_store(LocalDirStore::new(dir))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }
}

impl<B: BlobStore> RafsServer<B> {
    /// Serve the images and blobs of `store`.
    pub fn with_store(store: B) -> Self {
        RafsServer {
            store,
            verify: false,
            decode_ahead: false,
            split_decode: false,
            cache_bytes: erofs_reader::nydus::DEFAULT_CHUNK_CACHE_BYTES,
            state: Mutex::new(State::default()),
            parsed: None,
        }
    }

    /// Stored `name` is a bootstrap whose image and RAFS additions `parsed` gives (a
    /// registry image's, checked when it was fetched; asked once the store opened `name`):
    /// its OPEN takes the blob table from there instead of parsing the bootstrap again. The
    /// stored bytes are still what the kernel reads; only the parse is skipped.
    #[cfg(feature = "registry")]
    pub(crate) fn with_parsed_bootstrap(mut self, name: &[u8], parsed: ParsedBootstrap) -> Self {
        self.parsed = Some((name.to_vec(), parsed));
        self
    }

    /// Check every decoded chunk against its digest in the bootstrap's chunk table (BLAKE3
    /// or SHA-256); a mismatch fails the kernel's read with `EIO`. Default: off (a local
    /// store's blobs are trusted as the bootstrap is); on for `registry::RemoteImage::server`
    /// (feature `registry`).
    pub fn with_verify_digests(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Whether decoded chunks are checked against their digests
    /// ([`with_verify_digests`](Self::with_verify_digests)): `false` for a new server,
    /// `true` for the registry's (`registry::RemoteImage::server`, feature `registry`).
    pub fn verifies_digests(&self) -> bool {
        self.verify
    }

    /// After a read of a whole readahead window (256 KiB or more) of a blob, decode the
    /// next window in the background, so decompression overlaps with the kernel's use of
    /// the data (default: off; it pays only when a spare core is idle while the kernel
    /// reads).
    pub fn with_decode_ahead(mut self, on: bool) -> Self {
        self.decode_ahead = on;
        self
    }

    /// Whether a fill whose chunks hold 512 KiB or more of compressed data decodes half of
    /// them on a helper thread spawned for it ([`BlobSource::with_split_decode`]; default:
    /// off, each fill decodes on its own thread: the engine's fill pool already decodes a
    /// sequential reader's chunks on several threads, and the helper is one more thread and
    /// decoder per fill on the same CPUs. Measured in the same binary: off read the fanotify
    /// figures' 48 MiB faster on the best round in nine runs of nine, and the container
    /// start was no different; DESIGN.md, "Session 15").
    pub fn with_split_decode(mut self, on: bool) -> Self {
        self.split_decode = on;
        self
    }

    /// Whether fills may decode on a helper thread
    /// ([`with_split_decode`](Self::with_split_decode)): `false` for a new server.
    pub fn splits_decode(&self) -> bool {
        self.split_decode
    }

    /// Bytes of decoded chunks each blob keeps cached (default
    /// [`erofs_reader::nydus::DEFAULT_CHUNK_CACHE_BYTES`]).
    pub fn with_chunk_cache(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// The store.
    pub fn store(&self) -> &B {
        &self.store
    }

    /// Counters of each blob opened so far, by blob id.
    pub fn blob_stats(&self) -> Vec<(String, BlobStats)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = state
            .open
            .iter()
            .map(|(id, s)| (String::from_utf8_lossy(id).into_owned(), s.source.stats()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Counters summed over every blob opened so far.
    pub fn totals(&self) -> RafsTotals {
        let mut t = RafsTotals::default();
        for (_, s) in self.blob_stats() {
            t.blobs += 1;
            let a = &mut t.stats;
            a.reads += s.reads;
            a.bytes_served += s.bytes_served;
            a.fetches += s.fetches;
            a.stored_bytes += s.stored_bytes;
            a.chunks_decoded += s.chunks_decoded;
            a.chunks_verified += s.chunks_verified;
            a.cache_hits += s.cache_hits;
            a.fetch_ns += s.fetch_ns;
            a.decode_ns += s.decode_ns;
            a.digest_ns += s.digest_ns;
            a.zran_inflates += s.zran_inflates;
        }
        t
    }

    /// Examine stored `name` (once per modification time and length): if it is a RAFS v6
    /// bootstrap, remember its blobs. Returns whether it is one.
    fn index_name(&self, name: &[u8]) -> bool {
        let Ok(stored) = self.store.open(name) else {
            return false;
        };
        let Ok(len) = stored.size() else {
            return false;
        };
        let stamp = (stored.modified(), len);
        {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((seen, is)) = state.examined.get(name)
                && *seen == stamp
            {
                return *is;
            }
        }
        let origin = String::from_utf8_lossy(name).into_owned();
        let mut head = [0u8; 4096];
        let is_bootstrap = len >= head.len() as u64
            && stored.read_exact_at(&mut head, 0).is_ok()
            && erofs_reader::nydus::is_rafs_bootstrap(&head);
        let found = is_bootstrap
            .then(|| {
                let parsed = self.parsed.as_ref().filter(|(n, _)| n == name);
                match parsed.and_then(|(_, parsed)| parsed()) {
                    // Parsed when the image was resolved: its blob table, without a second
                    // parse.
                    Some((image, meta)) => self.known_blobs(&image, &meta),
                    None => {
                        Image::from_source(stored).and_then(|image| self.read_bootstrap(&image))
                    }
                }
            })
            .and_then(|read| {
                read.inspect_err(|e| log::warn!("{origin}: RAFS v6 bootstrap not usable: {e}"))
                    .ok()
            });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let is = found.is_some();
        state.examined.insert(name.to_vec(), (stamp, is));
        Self::register(&mut state, &origin, found.unwrap_or_default(), None);
        is
    }

    /// Remember the blobs a bootstrap (read from `origin`) lists. The `--blob-inline-meta`
    /// placeholder id stands for `inline_name`, the blob the bootstrap came out of.
    fn register(
        state: &mut State,
        origin: &str,
        blobs: Vec<KnownBlob>,
        inline_name: Option<&[u8]>,
    ) {
        for blob in blobs {
            let id = match (blob.info.has_placeholder_id(), inline_name) {
                (false, _) => blob.info.id.as_bytes().to_vec(),
                (true, Some(name)) => name.to_vec(),
                (true, None) => {
                    log::warn!(
                        "{origin}: blob {} has the --blob-inline-meta placeholder id outside its blob; not served",
                        blob.info.index
                    );
                    continue;
                }
            };
            match state.known.get_mut(&id) {
                Some(k) => {
                    // Another image uses the same blob: merge the digests it knows.
                    if let (Some(have), Some(more)) = (&mut k.digests, &blob.digests) {
                        for (h, m) in have.iter_mut().zip(more) {
                            if h.is_none() {
                                *h = *m;
                            }
                        }
                    }
                }
                None => {
                    log::info!(
                        "{origin}: RAFS v6 blob {} ({:?}, {} chunks, {} bytes uncompressed)",
                        String::from_utf8_lossy(&id),
                        blob.info.compressor,
                        blob.info.chunk_count,
                        blob.info.uncompressed_size
                    );
                    state.known.insert(id, blob);
                }
            }
        }
    }

    fn read_bootstrap(&self, image: &Image) -> erofs_reader::Result<Vec<KnownBlob>> {
        match RafsMeta::from_image(image)? {
            Some(rafs) => self.known_blobs(image, &rafs),
            None => Ok(Vec::new()),
        }
    }

    /// The blobs bootstrap `image` (whose RAFS additions are `rafs`) lists, with their chunk
    /// digests when they are checked.
    fn known_blobs(&self, image: &Image, rafs: &RafsMeta) -> erofs_reader::Result<Vec<KnownBlob>> {
        let mut out = Vec::new();
        for b in rafs.blobs() {
            let digests = if self.verify {
                Some(rafs.blob_digests(image, b.index)?)
            } else {
                None
            };
            out.push(KnownBlob {
                info: b.clone(),
                digests,
            });
        }
        Ok(out)
    }

    /// If stored `name` is a `--blob-inline-meta` data blob, the bootstrap it carries (its
    /// blobs remembered, the placeholder one as `name`).
    fn inline_bootstrap(&self, name: &[u8]) -> Option<Arc<[u8]>> {
        if name.len() != 64 || !name.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let origin = String::from_utf8_lossy(name).into_owned();
        let stored = self.store.open(name).ok()?;
        let boot = match erofs_reader::nydus::inlined_bootstrap(&*stored) {
            Ok(b) => b?,
            Err(e) => {
                log::warn!("{origin}: {e}");
                return None;
            }
        };
        let blobs =
            match Image::from_source(boot.clone()).and_then(|image| self.read_bootstrap(&image)) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("{origin}: inlined bootstrap not usable: {e}");
                    return None;
                }
            };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::register(&mut state, &origin, blobs, Some(name));
        Some(Arc::from(boot))
    }

    /// Stored `name` served as it is.
    fn open_stored(&self, name: &[u8]) -> io::Result<Opened<RafsObject>> {
        let stored = self.store.open(name)?;
        let size = stored.size()?;
        Ok(Opened {
            object: RafsObject::Stored(stored),
            size,
        })
    }

    /// Look at every stored name not examined yet, for bootstraps.
    fn scan(&self) {
        let Ok(names) = self.store.names() else {
            return;
        };
        for name in names.iter().take(MAX_SCAN_ENTRIES) {
            self.index_name(name);
        }
    }

    /// Whether a bootstrap seen so far lists blob `id`.
    fn is_known_blob(&self, id: &[u8]) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.known.contains_key(id)
    }

    /// The blob `id`, if a bootstrap lists it.
    fn blob(&self, id: &[u8]) -> io::Result<Option<Arc<RafsBlob>>> {
        let known = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = state.open.get(id) {
                return Ok(Some(b.clone()));
            }
            match state.known.get(id) {
                Some(k) => k.clone(),
                None => return Ok(None),
            }
        };
        // Opened outside the lock: a remote store may take a while.
        let staged = Arc::new(Staged {
            blob: self.store.open(id)?,
            staged: Mutex::new(Vec::new()),
        });
        let mut src = BlobSource::new(staged.clone(), &known.info.record)
            .with_cache_capacity(self.cache_bytes)
            .with_split_decode(self.split_decode);
        if let Some(meta) = known.info.separate_meta_name() {
            src = src.with_separate_meta(self.store.open(meta.as_bytes())?);
        }
        if let Some(d) = known.digests {
            src = src.with_digests(d);
        }
        let blob = Arc::new(RafsBlob {
            source: Arc::new(src),
            staged,
            claims: ChunkClaims::default(),
        });
        blob.load_chunk_map(&known.info.record);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Another thread may have opened it meanwhile: keep the first.
        Ok(Some(state.open.entry(id.to_vec()).or_insert(blob).clone()))
    }
}

impl<B: BlobStore> OnDemandServer for RafsServer<B> {
    type Object = RafsObject;

    fn open(&self, key: &ObjectKey<'_>) -> io::Result<Opened<RafsObject>> {
        if !erofs_reader::is_plain_name(key.cookie_key) {
            log::warn!(
                "refusing cookie key {:?}: not a plain name",
                key.cookie_key.escape_ascii().to_string()
            );
            return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
        }
        // A bootstrap: remember its blobs, serve it as it is. A blob that a bootstrap lists
        // is not one (and with a remote store, looking costs a round trip).
        if !self.is_known_blob(key.cookie_key) && self.index_name(key.cookie_key) {
            return self.open_stored(key.cookie_key);
        }
        // The `--blob-inline-meta` placeholder tag: the blob is the one the mount's fsid
        // names (its bootstrap came out of it).
        let cookie = match key.volume_name() {
            Some(fsid) if key.cookie_key == INLINE_PLACEHOLDER => {
                if !erofs_reader::is_plain_name(fsid) {
                    return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
                }
                fsid
            }
            _ => key.cookie_key,
        };
        let mut blob = self.blob(cookie)?;
        if blob.is_none() && cookie != key.cookie_key {
            // A restored daemon: the fsid's blob was not opened as the bootstrap here.
            self.inline_bootstrap(cookie);
            blob = self.blob(cookie)?;
        }
        if blob.is_none() {
            // Opened without its bootstrap first (a restored daemon, another daemon's
            // mount): look for bootstraps in the store.
            self.scan();
            blob = self.blob(cookie)?;
        }
        if let Some(blob) = blob {
            // Check that the blob can be decoded before telling the kernel its size.
            blob.source
                .chunk_infos()
                .map_err(io::Error::from)
                .inspect_err(|e| {
                    log::warn!("RAFS blob {}: {e}", String::from_utf8_lossy(key.cookie_key));
                })?;
            let size = blob.source.uncompressed_size();
            log::info!(
                "RAFS blob {}: serving {size} uncompressed bytes",
                cookie.escape_ascii(),
            );
            return Ok(Opened {
                object: RafsObject::Blob(blob),
                size,
            });
        }
        // A `--blob-inline-meta` blob mounted by its name: serve the bootstrap it carries.
        if let Some(boot) = self.inline_bootstrap(key.cookie_key) {
            log::info!(
                "{}: serving the bootstrap inlined in the blob ({} bytes)",
                key.cookie_key.escape_ascii(),
                <[u8]>::len(&boot)
            );
            return Ok(Opened {
                size: <[u8]>::len(&boot) as u64,
                object: RafsObject::Inline(boot),
            });
        }
        self.open_stored(key.cookie_key)
    }

    fn read_at(&self, object: &RafsObject, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        match object {
            RafsObject::Stored(stored) => {
                let size = stored.size()?;
                if off >= size {
                    return Ok(0);
                }
                let n = (size - off).min(buf.len() as u64) as usize;
                stored.read_exact_at(&mut buf[..n], off)?;
                Ok(n)
            }
            RafsObject::Inline(boot) => {
                let start = usize::try_from(off)
                    .unwrap_or(usize::MAX)
                    .min(<[u8]>::len(boot));
                let n = (<[u8]>::len(boot) - start).min(buf.len());
                buf[..n].copy_from_slice(&boot[start..start + n]);
                Ok(n)
            }
            RafsObject::Blob(blob) => {
                let size = blob.source.uncompressed_size();
                if off >= size {
                    return Ok(0);
                }
                let n = (size - off).min(buf.len() as u64) as usize;
                blob.read_exact_at(&mut buf[..n], off)?;
                // A window-sized read (readahead): decode the next window meanwhile.
                let end = off + n as u64;
                if self.decode_ahead && n as u64 >= DECODE_AHEAD_MIN && end < size {
                    blob.source.decode_ahead(end..end.saturating_add(n as u64));
                }
                Ok(n)
            }
        }
    }

    /// A blob from a store that streams ([`StoredBlob::streams`]): each chunk decoded and
    /// reported as soon as its stored bytes are in; anything else as [`fill`](Self::fill).
    fn fill_streaming(
        &self,
        object: &RafsObject,
        off: u64,
        buf: &mut [u8],
        ready: &mut (dyn FnMut(&[u8]) + Send),
    ) -> io::Result<()> {
        let RafsObject::Blob(blob) = object else {
            return self.fill(object, off, buf);
        };
        let size = blob.source.uncompressed_size();
        let in_blob = off
            .checked_add(buf.len() as u64)
            .is_some_and(|end| end <= size);
        if !blob.staged.blob.streams() || !in_blob || buf.is_empty() {
            return self.fill(object, off, buf);
        }
        blob.read_streaming(buf, off, ready)?;
        let end = off + buf.len() as u64;
        if self.decode_ahead && buf.len() as u64 >= DECODE_AHEAD_MIN && end < size {
            blob.source
                .decode_ahead(end..end.saturating_add(buf.len() as u64));
        }
        Ok(())
    }

    /// A blob's ranges as one batch ([`RafsBlob`]: the stored bytes of all their chunks in one
    /// [`StoredBlob::read_ranges`] call); other objects' one by one.
    fn fill_ranges(&self, object: &RafsObject, ranges: &mut [RangeRead<'_>]) -> io::Result<()> {
        let RafsObject::Blob(blob) = object else {
            return ranges
                .iter_mut()
                .try_for_each(|r| self.fill(object, r.offset, r.buf));
        };
        let size = blob.source.uncompressed_size();
        for r in ranges.iter() {
            if r.offset
                .checked_add(r.buf.len() as u64)
                .is_none_or(|end| end > size)
            {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "range at {} of {} bytes is past the blob's end {size}",
                        r.offset,
                        r.buf.len()
                    ),
                ));
            }
        }
        blob.read_batch(ranges)
    }

    fn render_metrics(&self, out: &mut String) {
        self.store.render_metrics(out);
    }

    fn close(&self, object: &RafsObject) {
        if let RafsObject::Blob(blob) = object {
            let src = &blob.source;
            let s = src.stats();
            log::info!(
                "RAFS blob {}: closed after serving {} bytes from {} stored bytes ({} chunks decoded, {} verified)",
                String::from_utf8_lossy(&src.record().blob_id).trim_end_matches('\0'),
                s.bytes_served,
                s.stored_bytes,
                s.chunks_decoded,
                s.chunks_verified
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_are_served_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), b"not an image").unwrap();
        let s = RafsDirServer::new(dir.path());
        let key = ObjectKey {
            volume_key: b"erofs,x",
            cookie_key: b"plain",
        };
        let o = s.open(&key).unwrap();
        assert_eq!(o.size, 12);
        assert!(matches!(o.object, RafsObject::Stored(_)));
        let mut buf = [0u8; 3];
        s.fill(&o.object, 4, &mut buf).unwrap();
        assert_eq!(&buf, b"an ");
        let bad = ObjectKey {
            volume_key: b"erofs,x",
            cookie_key: b"../etc",
        };
        assert!(s.open(&bad).is_err());
        let missing = ObjectKey {
            volume_key: b"erofs,x",
            cookie_key: b"nothing",
        };
        assert_eq!(
            s.open(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(s.totals().blobs, 0);
    }
}
