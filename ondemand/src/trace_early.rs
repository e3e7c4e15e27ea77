//! A replayed trace's stored bytes, found before the kernel opens the blob: which stored
//! ranges of a Nydus blob hold the chunks that a trace's ranges (the blob's uncompressed
//! space) touch, merged into few requests, in the order the trace first needs them
//! ([`crate::registry::RemoteImage::fetch_trace_early`] fetches them while the image
//! mounts).

use std::ops::Range;

use erofs_format::rafs::ChunkInfo;

/// Stored ranges at most this far apart are fetched as one (the bytes between are read and
/// dropped): at 20 ms and 200 Mbit/s a round trip costs ~500 KB of transfer, so a gap of a
/// quarter of that is cheaper read than asked for again.
pub const DEFAULT_EARLY_GAP: u64 = 128 << 10;

/// A merged range stops growing at this size, so the first-needed bytes are not held up
/// behind a long transfer.
const MAX_EARLY_RANGE: u64 = 2 << 20;

/// The most stored bytes fetched early for one blob (held in memory until the daemon exits);
/// chunks past it, in first-access order, are left to the prefetch.
pub(crate) const MAX_EARLY_BYTES: u64 = 64 << 20;

/// The stored ranges of the chunks of `chunks` (a blob's chunk map, sorted by uncompressed
/// offset) that the uncompressed ranges `traced` touch, in the order of the first traced
/// range that needs each; ranges at most `gap` apart merge (up to 2 MiB each). Nothing if
/// the map is not sorted (the lookups would be wrong), ZRan chunks (shared gzip streams)
/// are skipped, and at most [`MAX_EARLY_BYTES`] of chunks are taken.
pub(crate) fn stored_ranges(
    chunks: &[ChunkInfo],
    traced: &[Range<u64>],
    gap: u64,
) -> Vec<Range<u64>> {
    if chunks
        .windows(2)
        .any(|w| w[1].uncompressed_offset < w[0].uncompressed_end())
    {
        return Vec::new();
    }
    // (stored range, rank of first access), each chunk once.
    let mut seen = vec![false; chunks.len()];
    let mut wanted: Vec<(Range<u64>, usize)> = Vec::new();
    let mut total = 0u64;
    'trace: for (rank, r) in traced.iter().enumerate() {
        let first = chunks.partition_point(|c| c.uncompressed_end() <= r.start);
        for (i, c) in chunks.iter().enumerate().skip(first) {
            if c.uncompressed_offset >= r.end {
                break;
            }
            if seen[i] || c.zran.is_some() || c.compressed_size == 0 {
                continue;
            }
            seen[i] = true;
            let len = u64::from(c.compressed_size);
            if total.saturating_add(len) > MAX_EARLY_BYTES {
                break 'trace;
            }
            total += len;
            wanted.push((c.compressed_offset..c.compressed_end(), rank));
        }
    }
    wanted.sort_by_key(|(r, _)| r.start);
    let mut merged: Vec<(Range<u64>, usize)> = Vec::new();
    for (r, rank) in wanted {
        match merged.last_mut() {
            Some((last, first))
                if r.start <= last.end.saturating_add(gap)
                    && r.end.max(last.end) - last.start <= MAX_EARLY_RANGE =>
            {
                last.end = last.end.max(r.end);
                *first = (*first).min(rank);
            }
            _ => merged.push((r, rank)),
        }
    }
    merged.sort_by_key(|(r, rank)| (*rank, r.start));
    merged.into_iter().map(|(r, _)| r).collect()
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init, reason = "lists of one range")]
mod tests {
    use super::*;

    /// Chunks of 1 MiB uncompressed, each stored in `stored[i]` bytes back to back.
    fn map(stored: &[u32]) -> Vec<ChunkInfo> {
        let mut at = 0;
        stored
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let c = ChunkInfo {
                    uncompressed_offset: (i as u64) << 20,
                    uncompressed_size: 1 << 20,
                    compressed_offset: at,
                    compressed_size: len,
                    compressed: true,
                    zran: None,
                };
                at += u64::from(len);
                c
            })
            .collect()
    }

    #[test]
    fn the_chunks_a_trace_touches_in_first_access_order() {
        let chunks = map(&[1000; 10]);
        // Chunk 7 first, then 1 and 2 (one range across both), then 7 again, then 4.
        let traced = [
            7 << 20..(7 << 20) + 10,
            (2 << 20) - 5..(2 << 20) + 5,
            7 << 20..(7 << 20) + 1,
            4 << 20..(4 << 20) + 1,
        ];
        // No gap: 1 and 2 are stored back to back, 4 and 7 alone.
        assert_eq!(
            stored_ranges(&chunks, &traced, 0),
            [7000..8000, 1000..3000, 4000..5000]
        );
        // A gap of 2000 bytes joins 1-2 and 4; 7 is 2000 past 4's end, joined too, and the
        // run takes the rank of its first-needed chunk.
        assert_eq!(stored_ranges(&chunks, &traced, 2000), [1000..8000]);
    }

    #[test]
    fn unsorted_maps_zran_and_empty_chunks_fetch_nothing_early() {
        let mut chunks = map(&[1000; 3]);
        chunks.swap(0, 2);
        assert!(stored_ranges(&chunks, &[0..1], 0).is_empty());
        let mut chunks = map(&[1000, 0, 1000]);
        chunks[2].zran = Some((0, 0));
        assert!(stored_ranges(&chunks, &[0..(3 << 20)], 0) == [0..1000]);
        // A trace past the blob's end touches nothing.
        assert!(stored_ranges(&chunks, &[10 << 20..11 << 20], 1 << 20).is_empty());
    }

    #[test]
    fn merged_ranges_stop_growing_and_the_total_is_capped() {
        // 3 chunks of 1.5 MiB stored: merging two would pass 2 MiB.
        let chunks = map(&[3 << 19; 3]);
        assert_eq!(stored_ranges(&chunks, &[0..(3 << 20)], 1 << 20).len(), 3);
        // 100 chunks of 1 MiB stored: 64 of them in the first-access order.
        let chunks = map(&[1 << 20; 100]);
        let traced: Vec<_> = (0..100u64).rev().map(|i| i << 20..(i << 20) + 1).collect();
        let got = stored_ranges(&chunks, &traced, 0);
        let bytes: u64 = got.iter().map(|r| r.end - r.start).sum();
        assert_eq!(bytes, MAX_EARLY_BYTES);
        // Back to back, they merge in pairs (2 MiB); the last pair was needed first.
        assert_eq!(got[0], 98 << 20..100 << 20);
        assert_eq!(got.len(), 32);
    }
}
