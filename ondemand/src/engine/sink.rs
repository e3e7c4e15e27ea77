//! What a transport gives the engine for each object: where its bytes are written, and which
//! of them its backing file already holds.

use std::io;
use std::ops::Range;

/// Where an object's bytes go. With cachefiles, the object's anonymous fd (direct I/O into
/// the cache file); with fanotify, the sparse backing file (written through an fd that sends
/// no events). Implement it, with [`crate::ObjectFd`] for cachefiles, to drive the engine
/// without a kernel.
pub trait Sink: Send + Sync {
    /// Write `data` at `off`. `off` and `data.len()` are multiples of
    /// [`crate::BLOCK_SIZE`] and `data` comes from an [`crate::AlignedBuf`] (the engine pads
    /// the object's last block with zeros).
    ///
    /// # Errors
    ///
    /// The kernel's error (`ENOBUFS` when the cache is full or the object withdrawn, ...).
    /// Nothing written is then counted present.
    fn write_at(&self, data: &[u8], off: u64) -> io::Result<()>;

    /// The parts of `range` that hold data in the object's backing file (its allocated
    /// blocks, which the kernel treats as present), found with `SEEK_DATA`/`SEEK_HOLE`
    /// ([`crate::device::data_ranges`]). The engine calls it before filling, so that what an
    /// earlier daemon wrote is not fetched again. The default says `Unsupported`, which the
    /// engine takes as "nothing known present".
    ///
    /// # Errors
    ///
    /// `ENOBUFS` from cachefiles while the object has no cache file yet (right after its
    /// `copen`), or any `lseek` error.
    fn data_ranges(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let _ = range;
        Err(io::ErrorKind::Unsupported.into())
    }
}
