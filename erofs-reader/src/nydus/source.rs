//! [`BlobSource`]: a stored Nydus data blob presented as its uncompressed address space.

use super::cache::{ChunkCache, ContextCache};
use super::chunk_map::{BlobMap, MapError, ZranMap, chunk_index, overlapping};
use super::digest::{digest, hex};
use super::limits::{DEFAULT_CHUNK_CACHE_BYTES, MAX_FETCH_SPAN, ZRAN_CONTEXT_CACHE_BYTES};
use super::stats::{BlobStats, Counters};
use super::stored::StoredBlob;
use super::zran;
use crate::decode::chunk::{lz4_block, zstd_frame};
use crate::error::{Context, CorruptKind, Error, Result};
use crate::source::Source;
use erofs_format::rafs::{BlobCompressor, Digest, ZranInflateContext};
use erofs_format::rafs::{ChunkInfo, RafsV6Blob};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

/// A stored Nydus data blob presented as its uncompressed address space.
///
/// `len()` is the blob's `uncompressed_size`; `read_exact_at(buf, off)` returns the bytes
/// the kernel would find at `off` of the EROFS device: each chunk decoded at its
/// uncompressed offset, zeros between chunks. Only the chunks a read touches are fetched
/// (neighbouring missing chunks with adjacent stored bytes in one read) and decoded; decoded
/// chunks stay in a bounded cache ([`BlobSource::with_cache_capacity`]). With digests
/// ([`BlobSource::with_digests`]) every decoded chunk is hashed (BLAKE3 or SHA-256, as the
/// blob says) and a mismatch fails the read with [`io::ErrorKind::InvalidData`](std::io::ErrorKind::InvalidData).
///
/// A ZRAN (`targz-ref`) blob's stored bytes are the original `.tar.gz`: a read fetches the
/// gzip input of the ZRan contexts its chunks are cut from ([`BlobSource::zran_contexts`])
/// and inflates each once; the last inflated contexts stay in a second bounded cache
/// ([`ZRAN_CONTEXT_CACHE_BYTES`]).
///
/// The chunk-info array is read on first use, so constructing a source does no I/O and a
/// blob that is never read may be absent.
pub struct BlobSource {
    pub(super) blob: StoredBlob,
    digests: Option<Vec<Option<Digest>>>,
    map: OnceLock<std::result::Result<BlobMap, MapError>>,
    cache: Mutex<ChunkCache>,
    contexts: Mutex<ContextCache>,
    /// Chunks being decoded ahead by [`BlobSource::decode_ahead`]; readers wait for them.
    inflight: Mutex<std::collections::HashSet<u32>>,
    inflight_done: std::sync::Condvar,
    pub(super) ahead_busy: std::sync::atomic::AtomicBool,
    pub(super) counters: Counters,
    /// A read's chunks may be decoded on two threads ([`BlobSource::with_split_decode`]).
    pub(super) split_decode: bool,
}

impl fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobSource")
            .field(
                "blob_id",
                &String::from_utf8_lossy(&self.blob.record.blob_id),
            )
            .field(
                "uncompressed_size",
                &self.blob.record.uncompressed_size.get(),
            )
            .field("verify", &self.digests.is_some())
            .finish_non_exhaustive()
    }
}

impl BlobSource {
    /// Present `stored` (the blob file as written by nydus-image) as described by its blob
    /// table `record`.
    pub fn new(stored: impl Source + 'static, record: &RafsV6Blob) -> Self {
        BlobSource {
            blob: StoredBlob {
                stored: Box::new(stored),
                meta_source: None,
                record: *record,
            },
            digests: None,
            map: OnceLock::new(),
            cache: Mutex::new(ChunkCache::new(DEFAULT_CHUNK_CACHE_BYTES)),
            contexts: Mutex::new(ContextCache::new(ZRAN_CONTEXT_CACHE_BYTES)),
            counters: Counters::default(),
            inflight: Mutex::new(std::collections::HashSet::new()),
            inflight_done: std::sync::Condvar::new(),
            ahead_busy: std::sync::atomic::AtomicBool::new(false),
            split_decode: true,
        }
    }

    /// Whether a read whose chunks hold 512 KiB or more of compressed data decodes the
    /// second half of them on a helper thread it spawns for the read (default: on). A caller
    /// that already reads on several threads at once (a daemon's fill pool) may turn it
    /// off: the helper is one more thread per read, and one more decoder on the same CPUs.
    pub fn with_split_decode(mut self, on: bool) -> Self {
        self.split_decode = on;
        self
    }

    /// Read the chunk-info array from this separate meta blob (blobs with the SEPARATE
    /// feature) instead of the data blob.
    pub fn with_separate_meta(mut self, meta: impl Source + 'static) -> Self {
        self.blob.meta_source = Some(Box::new(meta));
        self
    }

    /// Check each decoded chunk against `digests[chunk index]` (from the bootstrap's chunk
    /// table, [`RafsMeta::blob_digests`](super::RafsMeta::blob_digests)); chunks with `None` are not checked.
    pub fn with_digests(mut self, digests: Vec<Option<Digest>>) -> Self {
        self.digests = Some(digests);
        self
    }

    /// Keep at most `bytes` of decoded chunks (default [`DEFAULT_CHUNK_CACHE_BYTES`]) and,
    /// for ZRAN blobs, at most `bytes` (and never more than [`ZRAN_CONTEXT_CACHE_BYTES`]) of
    /// inflated contexts; 0 turns both caches off (a single read still inflates each
    /// context it needs only once).
    pub fn with_cache_capacity(self, bytes: usize) -> Self {
        if let Ok(mut c) = self.cache.lock() {
            c.capacity = bytes;
        }
        if let Ok(mut c) = self.contexts.lock() {
            c.capacity = bytes.min(ZRAN_CONTEXT_CACHE_BYTES);
        }
        self
    }

    /// The blob table record.
    pub fn record(&self) -> &RafsV6Blob {
        &self.blob.record
    }

    /// Size of the uncompressed address space.
    pub fn uncompressed_size(&self) -> u64 {
        self.blob.record.uncompressed_size.get()
    }

    /// The counters so far.
    pub fn stats(&self) -> BlobStats {
        let c = &self.counters;
        BlobStats {
            reads: c.reads.get(),
            bytes_served: c.bytes_served.get(),
            fetches: c.fetches.get(),
            stored_bytes: c.stored_bytes.get(),
            chunks_decoded: c.chunks_decoded.get(),
            chunks_verified: c.chunks_verified.get(),
            cache_hits: c.cache_hits.get(),
            fetch_ns: c.fetch_ns.get(),
            decode_ns: c.decode_ns.get(),
            digest_ns: c.digest_ns.get(),
            zran_inflates: c.zran_inflates.get(),
        }
    }

    /// The decoded chunk-info array (read and checked on first use).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the blob (or its meta blob) cannot be read, [`Error::Corrupt`] if
    /// the array (or a ZRAN blob's ZRan table) breaks the format's rules,
    /// [`Error::Unsupported`] for gzip blobs without ZRan tables (legacy stargz).
    pub fn chunk_infos(&self) -> Result<&[ChunkInfo]> {
        self.map().map(|m| &m.chunks[..])
    }

    /// The ZRan contexts of a ZRAN (`targz-ref`) blob, checked when the chunk map was
    /// loaded (each chunk's [`ChunkInfo::zran`] names one); empty for other blobs.
    ///
    /// # Errors
    ///
    /// As [`BlobSource::chunk_infos`].
    pub fn zran_contexts(&self) -> Result<&[ZranInflateContext]> {
        match &self.map()?.zran {
            Some(z) => Ok(z.table().map_err(|e| self.blob.blob_err(e))?.contexts()),
            None => Ok(&[]),
        }
    }

    /// The stored byte range holding the chunks that overlap `range` of the uncompressed
    /// space (what a server must fetch to answer a read of `range`), or `None` if no chunk
    /// overlaps it. For a ZRAN blob: the gzip input of the ZRan contexts those chunks are
    /// cut from.
    ///
    /// # Errors
    ///
    /// As [`BlobSource::chunk_infos`].
    pub fn stored_range(&self, range: Range<u64>) -> Result<Option<Range<u64>>> {
        let map = self.map()?;
        let chunks = &map.chunks[overlapping(&map.chunks, range.start, range.end)];
        let mut acc: Option<Range<u64>> = None;
        for c in chunks {
            let r = match &map.zran {
                Some(z) => self.zran_context_input(z, c)?,
                None => c.compressed_offset..c.compressed_end(),
            };
            acc = Some(match acc {
                None => r,
                Some(a) => a.start.min(r.start)..a.end.max(r.end),
            });
        }
        Ok(acc)
    }

    /// The gzip byte range of the ZRan context chunk `c` is cut from.
    pub(super) fn zran_context_input(&self, z: &ZranMap, c: &ChunkInfo) -> Result<Range<u64>> {
        let (index, _) = c
            .zran
            .ok_or_else(|| self.blob.blob_err("chunk without a ZRan context"))?;
        let table = z.table().map_err(|e| self.blob.blob_err(e))?;
        let (ctx, _) = table.context(index).map_err(|e| self.blob.blob_err(e))?;
        ctx.input_range()
            .ok_or_else(|| self.blob.blob_err("ZRan context input overflows"))
    }

    /// Decode chunk `ci` (from the cache, or fetched and decoded), checking its digest if
    /// digests were given. Returns the bytes and whether a digest was checked.
    ///
    /// # Errors
    ///
    /// As [`BlobSource::chunk_infos`]; [`Error::Corrupt`] if the chunk does not decode to
    /// its size or its digest differs.
    pub fn decode_chunk(&self, ci: u32) -> Result<(Arc<[u8]>, bool)> {
        let map = self.map()?;
        let c = *map.chunks.get(ci as usize).ok_or_else(|| {
            Error::corrupt_as(
                CorruptKind::Blob,
                format!("no chunk {ci} in the blob"),
                Context::NONE,
            )
        })?;
        if let Some(d) = self.cache_get(ci) {
            return Ok((d, self.digest_for(ci).is_some()));
        }
        if map.zran.is_some() {
            let (out, r) = self.zran_chunk(map, ci, &mut Vec::new())?;
            let data: Arc<[u8]> = Arc::from(&out[r]);
            self.cache_put(ci, data.clone());
            return Ok((data, self.digest_for(ci).is_some()));
        }
        let mut stored = vec![0u8; c.compressed_size as usize];
        self.fetch(&mut stored, c.compressed_offset)?;
        let data = self.decode(ci, &c, &stored)?;
        let checked = self.digest_for(ci).is_some();
        self.cache_put(ci, data.clone());
        Ok((data, checked))
    }

    /// Whether chunk `ci` is decoded in the cache right now, so that reading it needs no
    /// stored bytes (it may still be evicted before that read). Not counted as a cache hit.
    pub fn is_decoded(&self, ci: u32) -> bool {
        self.cache.lock().is_ok_and(|c| c.get(ci).is_some())
    }

    /// Whether decoded chunks are checked against digests.
    pub(super) fn has_digests(&self) -> bool {
        self.digests.is_some()
    }

    fn digest_for(&self, ci: u32) -> Option<&Digest> {
        self.digests.as_ref()?.get(ci as usize)?.as_ref()
    }

    pub(super) fn cache_get(&self, ci: u32) -> Option<Arc<[u8]>> {
        let hit = self.cache.lock().ok()?.get(ci);
        if hit.is_some() {
            self.counters.cache_hits.incr();
        }
        hit
    }

    /// Wait while chunk `ci` is being decoded ahead (it will then be in the cache).
    pub(super) fn wait_inflight(&self, ci: u32) {
        let Ok(mut set) = self.inflight.lock() else {
            return;
        };
        while set.contains(&ci) {
            set = match self.inflight_done.wait(set) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }

    /// Decode the chunks overlapping `range` (clipped to the blob) into the cache on a
    /// background thread, unless one is already running for this blob: a server that has
    /// just answered a sequential read calls this for the next window, so the decoding of
    /// that window overlaps with the kernel's use of this one. Errors are only logged (the
    /// foreground read that needs the chunk reports them).
    pub fn decode_ahead(self: &Arc<Self>, range: Range<u64>) {
        if self.ahead_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("blob-decode-ahead".into())
            .spawn(move || {
                if let Err(e) = this.warm(range) {
                    log::debug!("decode ahead: {e}");
                }
                this.ahead_busy.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.ahead_busy.store(false, Ordering::Release);
        }
    }

    /// Decode the chunks overlapping `range` that are not cached into the cache.
    fn warm(&self, range: Range<u64>) -> Result<()> {
        let map = self.map()?;
        let end = range.end.min(self.uncompressed_size());
        let chunks = overlapping(&map.chunks, range.start, end);
        if map.zran.is_some() {
            return self.warm_zran(map, chunks);
        }
        // Claim the chunks nobody has (cached or in flight), as one run of adjacent
        // stored bytes from the first.
        let mut claimed: Vec<usize> = Vec::new();
        {
            let Ok(mut set) = self.inflight.lock() else {
                return Ok(());
            };
            let mut stop = None;
            for k in chunks {
                let c = &map.chunks[k];
                if set.contains(&(chunk_index(k))) || self.cache_has(chunk_index(k)) {
                    if stop.is_some() {
                        break;
                    }
                    continue;
                }
                if let Some(s) = stop
                    && (c.compressed_offset != s
                        || c.compressed_end()
                            .checked_sub(map.chunks[claimed[0]].compressed_offset)
                            .is_none_or(|span| span > MAX_FETCH_SPAN))
                {
                    break;
                }
                set.insert(chunk_index(k));
                claimed.push(k);
                stop = Some(c.compressed_end());
            }
        }
        let Some(&first) = claimed.first() else {
            return Ok(());
        };
        let result = (|| -> Result<()> {
            let start = map.chunks[first].compressed_offset;
            let stop = map.chunks[*claimed.last().unwrap_or(&first)].compressed_end();
            let span_err = || self.blob.blob_err(format!("stored span {start}..{stop}"));
            let len = stop
                .checked_sub(start)
                .and_then(|l| usize::try_from(l).ok())
                .ok_or_else(span_err)?;
            let mut stored = vec![0u8; len];
            self.fetch(&mut stored, start)?;
            for &k in &claimed {
                let c = &map.chunks[k];
                // The claimed chunks are adjacent from `start` to `stop`.
                let part = c
                    .compressed_offset
                    .checked_sub(start)
                    .and_then(|s| usize::try_from(s).ok())
                    .and_then(|s| stored.get(s..)?.get(..c.compressed_size as usize))
                    .ok_or_else(span_err)?;
                let data = self.decode(chunk_index(k), c, part)?;
                self.cache_put(chunk_index(k), data);
            }
            Ok(())
        })();
        if let Ok(mut set) = self.inflight.lock() {
            for k in &claimed {
                set.remove(&(chunk_index(*k)));
            }
        }
        self.inflight_done.notify_all();
        result
    }

    /// [`BlobSource::warm`] for a ZRAN blob: chunk by chunk, each context inflated once.
    fn warm_zran(&self, map: &BlobMap, chunks: Range<usize>) -> Result<()> {
        let mut held = Vec::new();
        for k in chunks {
            let ci = chunk_index(k);
            {
                let Ok(mut set) = self.inflight.lock() else {
                    return Ok(());
                };
                if set.contains(&ci) || self.cache_has(ci) {
                    continue;
                }
                set.insert(ci);
            }
            let result = self
                .zran_chunk(map, ci, &mut held)
                .map(|(out, r)| self.cache_put(ci, Arc::from(&out[r])));
            if let Ok(mut set) = self.inflight.lock() {
                set.remove(&ci);
            }
            self.inflight_done.notify_all();
            result?;
        }
        Ok(())
    }

    /// The inflated output of ZRan context `index`: from the context cache, or its gzip
    /// input fetched and inflated.
    fn zran_output(&self, z: &ZranMap, index: u32) -> Result<Arc<[u8]>> {
        if let Some(d) = self.contexts.lock().ok().and_then(|c| c.get(index)) {
            return Ok(d);
        }
        let table = z.table().map_err(|e| self.blob.blob_err(e))?;
        let (ctx, dict) = table
            .context(index)
            .map_err(|e| self.blob.blob_err(format!("ZRan context {index}: {e}")))?;
        // Both lengths were bounded by `validate` (at most 32 and 16 MiB).
        let mut input = vec![0u8; ctx.in_len.get() as usize];
        self.fetch(&mut input, ctx.in_offset.get())?;
        let t0 = std::time::Instant::now();
        let mut out = vec![0u8; ctx.out_len.get() as usize];
        let r = zran::inflate_context(ctx, dict, &input, &mut out);
        self.counters.decode_ns.add(elapsed_ns(t0));
        r.map_err(|e| {
            self.blob.blob_err(format!(
                "ZRan context {index} (gzip {}+{}): {e}",
                ctx.in_offset.get(),
                ctx.in_len.get()
            ))
        })?;
        self.counters.zran_inflates.incr();
        let out: Arc<[u8]> = Arc::from(out);
        if let Ok(mut c) = self.contexts.lock() {
            c.insert(index, out.clone());
        }
        Ok(out)
    }

    /// Before chunk `i` (not cached) of a read that goes on to chunk `end`: if its context
    /// is neither held nor cached and a later chunk of the read needs another such context,
    /// inflate both at once, the second on a helper thread, and hold them.
    pub(super) fn inflate_ahead(
        &self,
        map: &BlobMap,
        i: usize,
        end: usize,
        held: &mut Vec<(u32, Arc<[u8]>)>,
    ) -> Result<()> {
        let (Some(z), Some((index, _))) = (&map.zran, map.chunks[i].zran) else {
            return Ok(());
        };
        let missing = |x: u32| {
            held.iter().all(|(h, _)| *h != x)
                && self.contexts.lock().is_ok_and(|c| c.get(x).is_none())
        };
        if !missing(index) {
            return Ok(());
        }
        // The first later chunk (not cached) cut from another context.
        // i < end <= chunks.len(): the sums are indexes into the chunk array.
        let after = i.saturating_add(1);
        let next = map.chunks[after..end]
            .iter()
            .enumerate()
            .filter_map(|(k, c)| Some((after.saturating_add(k), c.zran?.0)))
            .find(|&(k, x)| x != index && !self.cache_has(chunk_index(k)))
            .map(|(_, x)| x)
            .filter(|&x| missing(x));
        let Some(next) = next else {
            return Ok(());
        };
        let (first, second) = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("zran-inflate".into())
                .spawn_scoped(scope, || self.zran_output(z, next));
            let first = self.zran_output(z, index);
            let second = match helper {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(self.blob.blob_err("inflate thread panicked"))),
                // No thread to be had: inflate it here.
                Err(_) => self.zran_output(z, next),
            };
            (first, second)
        });
        *held = vec![(index, first?), (next, second?)];
        Ok(())
    }

    /// Chunk `ci` of a ZRAN blob, digest-checked: its context's inflated output and the
    /// chunk's range in it. `held` keeps the contexts used last (at most two), so that a run
    /// of chunks inflates each context once even when the context cache is off.
    pub(super) fn zran_chunk(
        &self,
        map: &BlobMap,
        ci: u32,
        held: &mut Vec<(u32, Arc<[u8]>)>,
    ) -> Result<(Arc<[u8]>, Range<usize>)> {
        let z = map
            .zran
            .as_ref()
            .ok_or_else(|| self.blob.blob_err("not a ZRAN blob"))?;
        let c = map
            .chunks
            .get(ci as usize)
            .ok_or_else(|| self.blob.blob_err(format!("no chunk {ci}")))?;
        let (index, offset) = c.zran.ok_or_else(|| {
            self.blob
                .blob_err(format!("chunk {ci} has no ZRan context"))
        })?;
        let out = match held.iter().find(|(i, _)| *i == index) {
            Some((_, d)) => Arc::clone(d),
            None => {
                let d = self.zran_output(z, index)?;
                *held = vec![(index, Arc::clone(&d))];
                d
            }
        };
        let start = offset as usize;
        let range = start..start.saturating_add(c.uncompressed_size as usize);
        let part = out.get(range.clone()).ok_or_else(|| {
            self.blob.blob_err(format!(
                "chunk {ci} runs past the output of ZRan context {index}"
            ))
        })?;
        let t0 = std::time::Instant::now();
        let r = self.check_digest(ci, c, part);
        self.counters.decode_ns.add(elapsed_ns(t0));
        r?;
        Ok((out, range))
    }

    pub(super) fn is_inflight(&self, ci: u32) -> bool {
        self.inflight.lock().is_ok_and(|s| s.contains(&ci))
    }

    pub(super) fn cache_has(&self, ci: u32) -> bool {
        self.cache.lock().is_ok_and(|c| c.map.contains_key(&ci))
    }

    pub(super) fn cache_put(&self, ci: u32, data: Arc<[u8]>) {
        if let Ok(mut c) = self.cache.lock() {
            c.insert(ci, data);
        }
    }

    pub(super) fn fetch(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.counters.fetches.incr();
        self.counters.stored_bytes.add(buf.len() as u64);
        let t0 = std::time::Instant::now();
        let r = self.blob.stored.read_exact_at(buf, offset);
        self.counters.fetch_ns.add(elapsed_ns(t0));
        r.map_err(|e| {
            let len = buf.len();
            self.blob.read_err(
                e,
                format!("chunk data at {offset}+{len} is past the end of the stored blob"),
            )
        })
    }

    /// Decode one chunk from its stored bytes into a new buffer, checking its digest. The
    /// buffer is allocated shared from the start: `Arc::from(Vec)` would allocate and copy
    /// the chunk a second time (a megabyte of fresh pages per chunk).
    pub(super) fn decode(&self, ci: u32, c: &ChunkInfo, stored: &[u8]) -> Result<Arc<[u8]>> {
        let mut out: Arc<[u8]> = std::iter::repeat_n(0u8, c.uncompressed_size as usize).collect();
        let buf =
            Arc::get_mut(&mut out).ok_or_else(|| self.blob.blob_err("decode buffer shared"))?;
        self.decode_into(ci, c, stored, buf)?;
        Ok(out)
    }

    /// Decode one chunk from its stored bytes into `out` (exactly its uncompressed size)
    /// and check its digest.
    pub(super) fn decode_into(
        &self,
        ci: u32,
        c: &ChunkInfo,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        if out.len() != c.uncompressed_size as usize {
            return Err(self
                .blob
                .blob_err(format!("chunk {ci}: output of {} bytes", out.len())));
        }
        let t0 = std::time::Instant::now();
        let r = self.decode_checked(ci, c, stored, out);
        self.counters.decode_ns.add(elapsed_ns(t0));
        r
    }

    fn decode_checked(&self, ci: u32, c: &ChunkInfo, stored: &[u8], out: &mut [u8]) -> Result<()> {
        if !c.compressed {
            if stored.len() != out.len() {
                return Err(self
                    .blob
                    .blob_err(format!("raw chunk {ci}: stored size differs")));
            }
            out.copy_from_slice(stored);
        } else {
            match self.blob.record.compressor() {
                Some(BlobCompressor::Lz4Block) => lz4_block(stored, out),
                Some(BlobCompressor::Zstd) => zstd_frame(stored, out),
                other => Err(format!("compressed chunk with compressor {other:?}")),
            }
            .map_err(|e| self.blob.blob_err(format!("chunk {ci}: {e}")))?;
        }
        self.check_digest(ci, c, out)
    }

    /// Count chunk `ci` (decoded into `out`) and check its digest, if one was given.
    fn check_digest(&self, ci: u32, c: &ChunkInfo, out: &[u8]) -> Result<()> {
        self.counters.chunks_decoded.incr();
        if let Some(want) = self.digest_for(ci) {
            let t0 = std::time::Instant::now();
            let got = digest(self.blob.record.digester(), out);
            self.counters.digest_ns.add(elapsed_ns(t0));
            let got = got.ok_or_else(|| self.blob.blob_err("unknown digest algorithm"))?;
            if &got != want {
                return Err(self.blob.blob_err(format!(
                    "chunk {ci} (uncompressed {}+{}, stored {}+{}): digest {} differs from the bootstrap's {}",
                    c.uncompressed_offset,
                    c.uncompressed_size,
                    c.compressed_offset,
                    c.compressed_size,
                    hex(&got),
                    hex(want)
                )));
            }
            self.counters.chunks_verified.incr();
        }
        Ok(())
    }

    pub(super) fn map(&self) -> Result<&BlobMap> {
        match self
            .map
            .get_or_init(|| BlobMap::load(&self.blob).map_err(MapError::from))
        {
            Ok(m) => Ok(m),
            Err(e) => Err(e.to_error()),
        }
    }
}

/// Nanoseconds since `t0` for the counters (saturating: 584 years).
fn elapsed_ns(t0: std::time::Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
