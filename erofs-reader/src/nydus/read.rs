//! Reads of a [`BlobSource`]'s uncompressed space: runs of chunks fetched in one read and
//! decoded (on two threads when large), ZRAN chunks context by context.

use super::chunk_map::{BlobMap, overlapping};
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
            self.wait_inflight(i as u32);
            if let Some(data) = self.cache_get(i as u32) {
                let to = c.uncompressed_end().min(end);
                let skip = pos.max(c.uncompressed_offset) - c.uncompressed_offset;
                let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
                dst.copy_from_slice(&data[skip as usize..skip as usize + dst.len()]);
                i += 1;
                continue;
            }
            // A run of missing chunks whose stored bytes are adjacent: one read.
            let start = c.compressed_offset;
            let mut stop = c.compressed_end();
            let mut j = i + 1;
            while j < range.end {
                let n = &map.chunks[j];
                if n.compressed_offset != stop
                    || n.compressed_end() - start > MAX_FETCH_SPAN
                    || self.cache_has(j as u32)
                    || self.is_inflight(j as u32)
                {
                    break;
                }
                stop = n.compressed_end();
                j += 1;
            }
            SCRATCH.with(|cell| -> Result<()> {
                let mut scratch = cell.borrow_mut();
                let len = (stop - start) as usize;
                if scratch.len() < len {
                    scratch.resize(len, 0);
                }
                let stored = &mut scratch[..len];
                self.fetch(stored, start)?;
                let mut tasks = Vec::with_capacity(j - i);
                for k in i..j {
                    let c = &map.chunks[k];
                    let s = (c.compressed_offset - start) as usize;
                    let to = c.uncompressed_end().min(end);
                    let skip = pos.max(c.uncompressed_offset) - c.uncompressed_offset;
                    let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
                    tasks.push(Task {
                        ci: k,
                        stored: &stored[s..s + c.compressed_size as usize],
                        dst,
                        skip: skip as usize,
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
            let ci = i as u32;
            self.wait_inflight(ci);
            let to = c.uncompressed_end().min(end);
            let skip = (pos.max(c.uncompressed_offset) - c.uncompressed_offset) as usize;
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
                .get(skip..skip + dst.len())
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
        if tasks.len() < 2 || compressed < PARALLEL_DECODE_MIN {
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
                acc += u64::from(chunks[t.ci].uncompressed_size);
                acc * 2 >= total
            })
            .map_or(tasks.len(), |p| p + 1)
            .min(tasks.len() - 1);
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
            return self.decode_into(t.ci as u32, c, t.stored, t.dst);
        }
        let data = self.decode(t.ci as u32, c, t.stored)?;
        let part = data.get(t.skip..t.skip + t.dst.len()).ok_or_else(|| {
            self.blob
                .blob_err(format!("chunk {}: read past its end", t.ci))
        })?;
        t.dst.copy_from_slice(part);
        self.cache_put(t.ci as u32, data);
        Ok(())
    }
}

/// The bytes of `rest` (which starts at absolute offset `pos`) up to `to`, after zeroing the
/// gap before `at`; `rest` and `pos` move past them.
pub(super) fn take<'a>(rest: &mut &'a mut [u8], pos: &mut u64, at: u64, to: u64) -> &'a mut [u8] {
    let r = std::mem::take(rest);
    let (gap, r) = r.split_at_mut(at.saturating_sub(*pos) as usize);
    gap.fill(0);
    *pos = (*pos).max(at);
    let (dst, r) = r.split_at_mut((to - *pos) as usize);
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
