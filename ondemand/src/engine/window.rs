//! The READ window: which block-aligned range a read of `len` bytes at `off` makes the engine
//! fill (the request widened to blocks and to the readahead window, clipped to the object),
//! and the [`Stream`] of a sequential reader that decides the fill ahead of it.

use std::ops::Range;

use crate::buf::BLOCK_SIZE;

/// Default readahead window: 1 MiB.
pub const DEFAULT_READAHEAD: u64 = 1 << 20;

/// Default limit of [`super::Engine::with_sequential_ahead`]: 8 MiB.
pub const DEFAULT_SEQUENTIAL_AHEAD: u64 = 8 << 20;

/// The most one READ makes the engine fill for its requested part. The kernel asks for a
/// few MiB at most (netfs subrequests, fanotify ranges); a longer READ is filled up to this
/// much, so a buggy or hostile channel cannot make one worker write without end.
pub const MAX_READ_FILL: u64 = 64 << 20;

/// Chunk size of readahead filled after the READ's completion (asynchronous readahead).
pub(crate) const ASYNC_CHUNK: u64 = 256 << 10;

/// The first fill ahead of a sequential reader is at least this long.
pub(crate) const AHEAD_MIN: u64 = 256 << 10;

pub(crate) const BLOCK: u64 = BLOCK_SIZE as u64;

/// `x` rounded up to a block, saturating near `u64::MAX`.
pub(crate) fn round_up(x: u64) -> u64 {
    x.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// The block-aligned window to fill for a read of `len` bytes at `off` of an object of
/// `size` bytes with a `readahead` window, and the end of the requested part; `None` if the
/// read lies past the object.
pub fn window(off: u64, len: u64, size: u64, readahead: u64) -> Option<(Range<u64>, u64)> {
    // Sizes are at most i64::MAX (checked when opened), so `limit` is block-aligned.
    let limit = round_up(size.min(i64::MAX as u64));
    let start = off / BLOCK * BLOCK;
    if start >= limit {
        return None;
    }
    // `limit` is block-aligned and above `start`, so a whole block fits: a read of length
    // 0 still gets the block at its offset.
    let requested_end = round_up(off.saturating_add(len.min(MAX_READ_FILL)))
        .min(limit)
        .max(start + BLOCK);
    let end = requested_end.max(start.saturating_add(readahead).min(limit));
    Some((start..end, requested_end))
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
        // The end is rounded up to a multiple of `base` (the readahead window), so the next
        // fill ahead starts there: fills cut a sequential stream at the same offsets as a
        // server's fixed-size chunks (Nydus: 1 MiB) and each chunk is decoded straight into
        // the fill buffer, not into a buffer of its own to be split between two fills.
        let ahead_end = match window.end.saturating_add(self.ahead) {
            end if self.ahead > 0 && base > 0 => end.div_ceil(base).saturating_mul(base),
            end => end,
        }
        .min(limit);
        self.start = window.start;
        self.end = ahead_end.max(window.end);
        (ahead_end > window.end).then_some(window.end..ahead_end)
    }

    /// A fill ahead of this stream reaches `end` (a transport grew it past what
    /// [`advance`](Self::advance) returned): a READ that starts there, where the reader
    /// next misses, continues the stream.
    pub(crate) fn cover(&mut self, end: u64) {
        if self.end > self.start {
            self.end = self.end.max(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_ramps_up_resets_and_stops_at_the_limit() {
        // In half MiBs: (window, object size, the fill ahead it starts).
        type Step = ((u64, u64), u64, Option<(u64, u64)>);
        let steps: [Step; 9] = [
            ((0, 2), 200, None),
            ((2, 4), 200, Some((4, 6))),
            // Within what was filled ahead: twice as far, each time, to the next multiple of
            // `base` (1 MiB).
            ((5, 7), 200, Some((7, 12))),
            ((11, 13), 200, Some((13, 22))),
            ((21, 23), 200, Some((23, 40))),
            // At most `max` (8 MiB), rounded up as well.
            ((39, 41), 200, Some((41, 58))),
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

    /// A fill ahead grown past the stream's own (fanotify's `grow_ahead`): the READ at its
    /// end continues the stream once [`Stream::cover`] recorded it, and resets it otherwise.
    #[test]
    fn a_read_where_a_grown_fill_ahead_ends_continues_the_stream() {
        let h = 1u64 << 19;
        for (covered, want) in [(false, None), (true, Some(14 * h..18 * h))] {
            let mut s = Stream::default();
            assert_eq!(s.advance(&(0..2 * h), 2 * h, 16 * h, 200 * h), None);
            assert_eq!(
                s.advance(&(2 * h..4 * h), 2 * h, 16 * h, 200 * h),
                Some(4 * h..6 * h)
            );
            if covered {
                s.cover(12 * h);
            }
            // The reader's next miss, where the grown fill ahead ended: with the stream, twice
            // as far ahead as the last time.
            assert_eq!(
                s.advance(&(12 * h..14 * h), 2 * h, 16 * h, 200 * h),
                want,
                "covered: {covered}"
            );
        }
        // No stream, nothing to cover.
        let mut s = Stream::default();
        s.cover(12 * h);
        assert_eq!(s.advance(&(12 * h..14 * h), 2 * h, 16 * h, 200 * h), None);
    }

    #[test]
    fn window_logic() {
        let mib = 1 << 20;
        let w = |(off, len), size| window(off, len, size, mib);
        // Clipped to the object rounded up to a block.
        assert_eq!(w((0, 4096), 10_000), Some((0..12288, 4096)));
        assert_eq!(w((4096, 4096), 10 * mib), Some((4096..4096 + mib, 8192)));
        // A request bigger than the window is served whole.
        assert_eq!(w((0, 3 * mib), 10 * mib), Some((0..3 * mib, 3 * mib)));
        // Unaligned requests are widened to blocks.
        assert_eq!(w((100, 10), 10 * mib), Some((0..mib, 4096)));
        // A READ longer than MAX_READ_FILL gets that much.
        assert_eq!(
            w((4096, 1 << 40), 1 << 41),
            Some((4096..4096 + MAX_READ_FILL, 4096 + MAX_READ_FILL))
        );
        // Past the end: nothing to write (the READ is still completed).
        assert_eq!(w((12288, 4096), 10_000), None);
        assert_eq!(w((0, 4096), 0), None);
        // The tail block past the last byte.
        assert_eq!(w((8192, 4096), 10_000), Some((8192..12288, 12288)));
        // Extreme values do not overflow.
        assert_eq!(w((u64::MAX - 5, 100), u64::MAX), None);
        let off = i64::MAX as u64 / 4096 * 4096 - 4096;
        assert!(w((off, 4096), i64::MAX as u64).is_some());
        assert_eq!(window(0, 4096, 10 * mib, 8192), Some((0..8192, 4096)));
    }

    proptest::proptest! {
        #[test]
        fn windows_are_aligned_and_cover_the_request(
            off in 0u64..(1 << 40),
            len in 0u64..(16 << 20),
            size in 0u64..(1 << 40),
            readahead in 0u64..(8 << 20),
        ) {
            let readahead = round_up(readahead);
            let limit = size.div_ceil(BLOCK) * BLOCK;
            match window(off, len, size, readahead) {
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
                        span <= readahead.max(requested_end - range.start).max(BLOCK)
                    );
                }
            }
        }
    }
}
