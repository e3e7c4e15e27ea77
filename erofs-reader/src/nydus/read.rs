//! Reads of a [`BlobSource`]'s uncompressed space: runs of chunks fetched in one read and
//! decoded (on two threads when large), ZRAN chunks context by context.

use super::chunk_map::{BlobMap, chunk_index, overlapping};
use super::limits::MAX_FETCH_SPAN;
use super::source::BlobSource;
use crate::error::{Error, Result};
use crate::source::Source;
use erofs_format::rafs::ChunkInfo;
use std::io;
use std::sync::Arc;

impl BlobSource {
    fn read_range(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.uncompressed_size())
            .ok_or_else(|| Error::Io {
                device: 0,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past the end of the blob's {} uncompressed bytes",
                        buf.len(),
                        self.uncompressed_size()
                    ),
                ),
            })?;
        self.counters.reads.incr();
        self.counters.bytes_served.add(buf.len() as u64);
        let map = self.map()?;
        if map.zran.is_some() {
            return self.read_zran(map, buf, offset, end);
        }
        let range = overlapping(&map.chunks, offset, end);
        // `rest` is the part of `buf` not written yet; it starts at absolute offset `pos`.
        let mut rest: &mut [u8] = buf;
        let mut pos = offset;
        let mut i = range.start;
        while i < range.end {
            let c = map.chunks[i];
            self.wait_inflight(chunk_index(i));
            if let Some(data) = self.cache_get(chunk_index(i)) {
                let to = c.uncompressed_end().min(end);
                // `pos.max(offset) - offset`.
                let skip = pos.saturating_sub(c.uncompressed_offset);
                let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
                let src = usize::try_from(skip)
                    .ok()
                    .and_then(|s| data.get(s..)?.get(..dst.len()))
                    .ok_or_else(|| self.blob.blob_err(format!("chunk {i}: read past its end")))?;
                dst.copy_from_slice(src);
                // i < range.end: cannot saturate.
                i = i.saturating_add(1);
                continue;
            }
            // A run of missing chunks whose stored bytes are adjacent: one read.
            let start = c.compressed_offset;
            let mut stop = c.compressed_end();
            // i < j <= range.end <= chunks.len(): these cannot saturate.
            let mut j = i.saturating_add(1);
            while j < range.end {
                let n = &map.chunks[j];
                if n.compressed_offset != stop
                    || n.compressed_end()
                        .checked_sub(start)
                        .is_none_or(|span| span > MAX_FETCH_SPAN)
                    || self.cache_has(chunk_index(j))
                    || self.is_inflight(chunk_index(j))
                {
                    break;
                }
                stop = n.compressed_end();
                j = j.saturating_add(1);
            }
            SCRATCH.with(|cell| -> Result<()> {
                let mut scratch = cell.borrow_mut();
                let span_err = || self.blob.blob_err(format!("stored span {start}..{stop}"));
                let len = stop
                    .checked_sub(start)
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(span_err)?;
                if scratch.len() < len {
                    scratch.resize(len, 0);
                }
                let stored = &mut scratch[..len];
                self.fetch(stored, start)?;
                let mut tasks = Vec::with_capacity(j.saturating_sub(i));
                for k in i..j {
                    let c = &map.chunks[k];
                    // The chunks of the run are adjacent from `start` to `stop`.
                    let stored = c
                        .compressed_offset
                        .checked_sub(start)
                        .and_then(|s| usize::try_from(s).ok())
                        .and_then(|s| stored.get(s..)?.get(..c.compressed_size as usize))
                        .ok_or_else(span_err)?;
                    let to = c.uncompressed_end().min(end);
                    let skip = usize::try_from(pos.saturating_sub(c.uncompressed_offset))
                        .map_err(|_| span_err())?;
                    let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
                    tasks.push(Task {
                        ci: k,
                        stored,
                        dst,
                        skip,
                    });
                }
                self.run_tasks(&map.chunks, tasks)?;
                if scratch.len() > SCRATCH_KEEP {
                    *scratch = Vec::new();
                }
                Ok(())
            })?;
            i = j;
        }
        rest.fill(0);
        Ok(())
    }

    /// [`BlobSource::read_range`] for a ZRAN blob: chunk by chunk, each context inflated at
    /// most once, two at a time on two threads when the read needs more than one; a chunk
    /// only partly read is kept.
    fn read_zran(&self, map: &BlobMap, buf: &mut [u8], offset: u64, end: u64) -> Result<()> {
        let mut rest: &mut [u8] = buf;
        let mut pos = offset;
        let mut held = Vec::new();
        let range = overlapping(&map.chunks, offset, end);
        for i in range.clone() {
            let c = map.chunks[i];
            let ci = chunk_index(i);
            self.wait_inflight(ci);
            let to = c.uncompressed_end().min(end);
            // `pos.max(offset) - offset`, at most a chunk (<= 16 MiB).
            let skip =
                usize::try_from(pos.saturating_sub(c.uncompressed_offset)).unwrap_or(usize::MAX);
            let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
            let cached = self.cache_get(ci);
            if cached.is_none() {
                self.inflate_ahead(map, i, range.end, &mut held)?;
            }
            let (data, part) = match &cached {
                Some(d) => (Arc::clone(d), 0..d.len()),
                None => self.zran_chunk(map, ci, &mut held)?,
            };
            let part = &data[part];
            let src = part
                .get(skip..)
                .and_then(|p| p.get(..dst.len()))
                .ok_or_else(|| self.blob.blob_err(format!("chunk {ci}: read past its end")))?;
            dst.copy_from_slice(src);
            if cached.is_none() && dst.len() != part.len() {
                self.cache_put(ci, Arc::from(part));
            }
        }
        rest.fill(0);
        Ok(())
    }

    /// Decode `tasks`, on two threads when there is enough compressed data to share.
    fn run_tasks(&self, chunks: &[ChunkInfo], mut tasks: Vec<Task<'_>>) -> Result<()> {
        let compressed: u64 = tasks
            .iter()
            .filter(|t| chunks[t.ci].compressed)
            .map(|t| u64::from(chunks[t.ci].uncompressed_size))
            .sum();
        if !self.split_decode || tasks.len() < 2 || compressed < PARALLEL_DECODE_MIN {
            return tasks.into_iter().try_for_each(|t| self.run_task(chunks, t));
        }
        // Split by uncompressed bytes: the second half goes to a helper thread.
        let total: u64 = tasks
            .iter()
            .map(|t| u64::from(chunks[t.ci].uncompressed_size))
            .sum();
        let mut acc = 0;
        let cut = tasks
            .iter()
            .position(|t| {
                // Sums of u32 chunk sizes over in-memory tasks: no saturation.
                acc = u64::saturating_add(acc, u64::from(chunks[t.ci].uncompressed_size));
                acc.saturating_mul(2) >= total
            })
            // p < tasks.len() and tasks.len() >= 2: neither saturates.
            .map_or(tasks.len(), |p| p.saturating_add(1))
            .min(tasks.len().saturating_sub(1));
        let second = tasks.split_off(cut);
        std::thread::scope(|scope| {
            let helper = scope.spawn(|| {
                second
                    .into_iter()
                    .try_for_each(|t| self.run_task(chunks, t))
            });
            let mine = tasks.into_iter().try_for_each(|t| self.run_task(chunks, t));
            let theirs = helper
                .join()
                .unwrap_or_else(|_| Err(self.blob.blob_err("decoder thread panicked")));
            mine.and(theirs)
        })
    }

    /// Decode one chunk into its part of the read; a chunk only partly read is kept.
    fn run_task(&self, chunks: &[ChunkInfo], t: Task<'_>) -> Result<()> {
        let c = &chunks[t.ci];
        if t.skip == 0 && t.dst.len() == c.uncompressed_size as usize {
            // Wholly inside the read: decode in place, nothing to keep.
            return self.decode_into(chunk_index(t.ci), c, t.stored, t.dst);
        }
        let data = self.decode(chunk_index(t.ci), c, t.stored)?;
        let part = data
            .get(t.skip..)
            .and_then(|p| p.get(..t.dst.len()))
            .ok_or_else(|| {
                self.blob
                    .blob_err(format!("chunk {}: read past its end", t.ci))
            })?;
        t.dst.copy_from_slice(part);
        self.cache_put(chunk_index(t.ci), data);
        Ok(())
    }
}

/// The bytes of `rest` (which starts at absolute offset `pos`) up to `to`, after zeroing the
/// gap before `at`; `rest` and `pos` move past them.
pub(super) fn take<'a>(rest: &mut &'a mut [u8], pos: &mut u64, at: u64, to: u64) -> &'a mut [u8] {
    let r = std::mem::take(rest);
    // The callers' chunks lie inside the read, so the gap and the part fit in `rest`; the
    // `min`s keep a broken invariant from panicking.
    let gap = usize::try_from(at.saturating_sub(*pos)).unwrap_or(usize::MAX);
    let (gap, r) = r.split_at_mut(gap.min(r.len()));
    gap.fill(0);
    *pos = (*pos).max(at);
    let part = usize::try_from(to.saturating_sub(*pos)).unwrap_or(usize::MAX);
    let (dst, r) = r.split_at_mut(part.min(r.len()));
    *rest = r;
    *pos = to;
    dst
}

/// One chunk of a read: its stored bytes and where its decoded bytes `[skip, +dst.len())` go.
pub(super) struct Task<'a> {
    ci: usize,
    stored: &'a [u8],
    dst: &'a mut [u8],
    skip: usize,
}

/// Compressed bytes in one run above which decoding is split over two threads.
pub(super) const PARALLEL_DECODE_MIN: u64 = 512 * 1024;

thread_local! {
    /// Stored bytes of the run being decoded (reused, so big reads do not fault in fresh
    /// pages every time).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest scratch buffer a thread keeps between reads.
pub(super) const SCRATCH_KEEP: usize = 8 << 20;

impl Source for BlobSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_range(buf, offset).map_err(io::Error::from)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.uncompressed_size())
    }
}
