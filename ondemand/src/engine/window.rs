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

/// How far the fill ahead of a sequential reader reaches ([`Stream::advance`]): a transport's
/// rule, set on its engine.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Growth {
    /// The engine's doubling alone: the readahead window (at least [`AHEAD_MIN`]) past the
    /// READ's window the first time, twice the last length each time the stream continues,
    /// up to the limit. For cachefiles, whose kernel asks only for missing bytes: once the
    /// reader's next bytes are present it reads them at no cost to it.
    #[default]
    Doubling,
    /// At least twice as far past the READ's window as the stream has read since its first
    /// step (the first READ that continued it), if that is further than the doubling,
    /// rounded up to a multiple of the readahead window (the server's chunks; at least a
    /// block). For fanotify, whose kernel sends a pre-content event for every read of a
    /// marked file, present or not, each costing the reader a round trip to the daemon: the
    /// file is worth completing (and unmarking) once a reader has shown it reads it through,
    /// and the bytes fetched beyond the doubling stay at most twice what the reader has read.
    ///
    /// Counted from the first step, not from the stream's first READ: the kernel cuts one
    /// readahead batch into requests of at most 16 folios (`fs/erofs/fileio.c`), so a page
    /// fault's 4 MiB read-around in a mapped library can arrive as a 2 MiB request and then a
    /// 100 KiB one right after its end: the second continues the stream, and counting the
    /// first as read fetched 4 MiB more ahead of a reader that never read on (the container
    /// start with `--direct-io`, DESIGN.md "Direct I/O, session 10"). The first step fills
    /// what the doubling does; the growth starts with the next one.
    TwiceRead,
}

/// Where the READs of one object have been going: the last READ window's start, the end of
/// what was filled for it (window and fill ahead), the length of the last doubling, and (for
/// [`Growth::TwiceRead`]) where the stream's first step was.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stream {
    start: u64,
    end: u64,
    ahead: u64,
    /// The window start of the stream's first step; `None` before it, and with
    /// [`Growth::Doubling`].
    first_step: Option<u64>,
}

impl Stream {
    /// Record a READ `window` and return the range to fill ahead of it, if the READ continues
    /// the stream (it starts within the last window or what was filled ahead of it). The
    /// length ahead starts at the `readahead` window (at least [`AHEAD_MIN`]) and doubles with
    /// every READ that continues the stream, up to `max`; `growth` may reach further. A READ
    /// elsewhere resets the stream. Nothing past `limit`.
    pub(crate) fn advance(
        &mut self,
        window: &Range<u64>,
        readahead: u64,
        max: u64,
        limit: u64,
        growth: Growth,
    ) -> Option<Range<u64>> {
        let base = readahead.max(AHEAD_MIN);
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
        let mut ahead_end = match window.end.saturating_add(self.ahead) {
            end if self.ahead > 0 => end.div_ceil(base).saturating_mul(base),
            end => end,
        }
        .min(limit);
        if growth == Growth::TwiceRead && ahead_end > window.end {
            let first = *self.first_step.get_or_insert(window.start);
            let read = window.start.saturating_sub(first);
            let step = readahead.max(BLOCK);
            let grown = window
                .end
                .saturating_add(read.saturating_mul(2))
                .div_ceil(step)
                .saturating_mul(step)
                .min(limit);
            ahead_end = ahead_end.max(grown);
        } else {
            // No fill ahead: a stream that goes on later starts its growth over.
            self.first_step = None;
        }
        self.start = window.start;
        // A READ that starts where the fill ahead ends, where the reader next misses,
        // continues the stream.
        self.end = ahead_end.max(window.end);
        (ahead_end > window.end).then_some(window.end..ahead_end)
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
            let got = s.advance(&(a * h..b * h), 2 * h, 16 * h, size * h, Growth::Doubling);
            assert_eq!(
                got,
                want.map(|(x, y)| x * h..y * h),
                "window [{a}, {b}) half MiBs"
            );
        }
        assert_eq!(
            s.advance(&(2 * h..4 * h), 2 * h, 16 * h, 200 * h, Growth::Doubling),
            Some(4 * h..6 * h)
        );
    }

    /// A fill ahead grown past the doubling ([`Growth::TwiceRead`]): the READ where it ends,
    /// where the reader next misses, continues the stream; with the doubling alone nothing
    /// was filled there, and the same READ starts a new stream.
    #[test]
    fn a_read_where_a_grown_fill_ahead_ends_continues_the_stream() {
        let h = 1u64 << 19;
        for (growth, third, fourth) in [
            (Growth::Doubling, 7 * h..12 * h, None),
            (Growth::TwiceRead, 7 * h..14 * h, Some(16 * h..40 * h)),
        ] {
            let mut s = Stream::default();
            let mut step =
                |a: u64, b: u64| s.advance(&(a * h..b * h), 2 * h, 16 * h, 200 * h, growth);
            assert_eq!(step(0, 2), None);
            // The first step: the doubling's first length, whatever the growth.
            assert_eq!(step(2, 4), Some(4 * h..6 * h), "{growth:?}");
            // The doubling, to 12; grown to twice the 3 read since the first step: to 14.
            assert_eq!(step(5, 7), Some(third), "{growth:?}");
            assert_eq!(step(14, 16), fourth, "{growth:?}");
        }
    }

    /// [`Growth::TwiceRead`] on a reader of a 48 MiB file: its first step fills what the
    /// doubling does; from then on at least twice what it has read since that step, past
    /// the window, in whole readahead windows, never past the file; a jump back starts over.
    #[test]
    fn the_fill_ahead_grows_with_the_stream_and_stops_at_the_end() {
        const MIB: u64 = 1 << 20;
        const K: u64 = 1 << 10;
        let mut s = Stream::default();
        let mut step =
            |a: u64, b: u64| s.advance(&(a..b), MIB, 8 * MIB, 48 * MIB, Growth::TwiceRead);
        assert_eq!(step(2 * MIB, 4 * MIB), None);
        // The first step (here a request right after a 2 MiB one: one readahead batch cut in
        // two) grows nothing: the doubling's 1 MiB.
        assert_eq!(step(4 * MIB, 5 * MIB), Some(5 * MIB..6 * MIB));
        // Early in the stream the doubling reaches further (to 8 MiB; grown: to 6 MiB).
        assert_eq!(
            step(4 * MIB + 64 * K, 5 * MIB + 64 * K),
            Some(5 * MIB + 64 * K..8 * MIB)
        );
        // 4 MiB into the stream: 8 MiB past the window (the doubling: 4 MiB), then 26 MiB
        // past it (the doubling: 8 MiB).
        assert_eq!(step(8 * MIB, 9 * MIB), Some(9 * MIB..17 * MIB));
        assert_eq!(step(17 * MIB, 18 * MIB), Some(18 * MIB..44 * MIB));
        // Never past the end of the file; nothing at all at its end.
        assert_eq!(step(44 * MIB, 45 * MIB), Some(45 * MIB..48 * MIB));
        assert_eq!(step(47 * MIB, 48 * MIB), None);
        // A jump back starts a new stream, whose first step grows nothing.
        assert_eq!(step(0, MIB), None);
        assert_eq!(step(MIB, 2 * MIB), Some(2 * MIB..3 * MIB));
        assert_eq!(step(2 * MIB, 3 * MIB), Some(3 * MIB..5 * MIB));
        // Without readahead (the doubling from 256 KiB, here at most that) the growth's steps
        // are blocks.
        let mut s = Stream::default();
        let mut step = |a: u64, b: u64| s.advance(&(a..b), 0, 256 * K, 48 * MIB, Growth::TwiceRead);
        assert_eq!(step(0, 4 * K), None);
        assert_eq!(step(4 * K, 8 * K), Some(8 * K..512 * K));
        assert_eq!(step(500 * K, 504 * K), Some(504 * K..1496 * K));
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
