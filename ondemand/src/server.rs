//! The embedder's side: [`OnDemandServer`], which knows where objects' bytes come from.
//!
//! The trait is phrased independently of how the kernel asked: "object X was opened, how big is
//! it (or which errno)" and "produce bytes `[off, off + len)` of object X". The transport owns
//! the buffer the bytes go into (aligned for direct I/O) and writes it wherever the kernel wants
//! it: today through the cachefiles anonymous fd, later through a fanotify pre-content event's
//! fd. A server never sees an fd, a message id or an ioctl.

use std::io;

use cachefiles_proto::Errno;

use crate::blob_store::RangeRead;

/// What the kernel knows about an object when it opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectKey<'a> {
    /// The volume key without its NUL: `erofs,<fsid>`, or `erofs,<domain_id>` in a shared
    /// domain.
    pub volume_key: &'a [u8],
    /// The cookie key: the `fsid` for the primary (bootstrap) blob, the `device=` name or the
    /// device slot's tag (the blob id for Nydus) for an extra device.
    pub cookie_key: &'a [u8],
}

impl ObjectKey<'_> {
    /// The part of the volume key after `erofs,` (the fsid, or the domain id), if present.
    pub fn volume_name(&self) -> Option<&[u8]> {
        self.volume_key.strip_prefix(b"erofs,")
    }
}

impl std::fmt::Display for ObjectKey<'_> {
    /// `volume/cookie`, with non-printable bytes escaped (for logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.volume_key.escape_ascii(),
            self.cookie_key.escape_ascii()
        )
    }
}

/// A successful open: the server's per-object state and the object's size in bytes.
#[derive(Debug)]
pub struct Opened<O> {
    /// Whatever the server needs to produce the object's bytes later (an open file, a blob id
    /// and a connection, ...).
    pub object: O,
    /// The object's size in bytes (the blob's length). The kernel sizes its cache file from
    /// it and reads nothing past it.
    pub size: u64,
}

/// The source of objects' bytes. Implementations must be cheap to share between worker threads
/// (`Send + Sync`); every method takes `&self`.
///
/// Errors are [`io::Error`]s. What the kernel sees is [`errno_of`] of them: an OS error keeps
/// its number, other kinds map to the nearest errno, and everything else is `EIO`.
pub trait OnDemandServer: Send + Sync {
    /// Per-object state returned by [`open`](Self::open).
    type Object: Send + Sync;

    /// The kernel opened an object: say how big it is, or refuse it (the kernel then fails
    /// the mount or the reads of that device, with ENOBUFS in the reader).
    ///
    /// # Errors
    ///
    /// Any error refuses the object; see [`errno_of`] for the errno the kernel gets.
    fn open(&self, key: &ObjectKey<'_>) -> io::Result<Opened<Self::Object>>;

    /// Produce bytes of `object` starting at `off` into `buf`; return how many were produced
    /// (fewer than `buf.len()` only at the end of the object). The caller never asks for
    /// bytes past the size returned by `open`.
    ///
    /// # Errors
    ///
    /// Any error fails the kernel's read: the reader gets `EIO`. The daemon keeps serving.
    fn read_at(&self, object: &Self::Object, off: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Fill all of `buf` with bytes of `object` from `off`. The default calls
    /// [`read_at`](Self::read_at) until `buf` is full.
    ///
    /// # Errors
    ///
    /// As `read_at`, plus [`io::ErrorKind::UnexpectedEof`] if `read_at` returns 0 early.
    fn fill(&self, object: &Self::Object, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let pos = off
                .checked_add(done as u64)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            match self.read_at(object, pos, &mut buf[done..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("object ends at {pos}, {} bytes early", buf.len() - done),
                    ));
                }
                Ok(n) => done += n.min(buf.len() - done),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`fill`](Self::fill), telling the engine as it goes: `ready(&buf[..n])` each time a
    /// longer prefix of `buf` holds its final bytes, so the engine can write that prefix and
    /// answer a READ whose requested part it covers while the rest is still being produced
    /// (a remote server decoding chunks as their bytes arrive). `ready` may be called from
    /// another thread, never twice at once, with growing prefixes. The default calls
    /// [`fill`](Self::fill) and reports nothing (the engine writes `buf` once it returns).
    ///
    /// # Errors
    ///
    /// As [`fill`](Self::fill); the prefixes reported before an error hold the object's
    /// bytes.
    fn fill_streaming(
        &self,
        object: &Self::Object,
        off: u64,
        buf: &mut [u8],
        ready: &mut (dyn FnMut(&[u8]) + Send),
    ) -> io::Result<()> {
        let _ = ready;
        self.fill(object, off, buf)
    }

    /// Fill several ranges of `object` at once: all of each `buf` with the object's bytes at
    /// its `offset` (ranges sorted by offset, not overlapping, none past the object's size).
    /// The engine's prefetch hands a server a batch of ranges (the ranges of an access trace
    /// that the readers need next) so that a remote server can fetch them in a few large
    /// requests instead of one per range; [`crate::rafs::RafsServer`] fetches the stored
    /// bytes of every chunk the batch touches in one [`crate::StoredBlob::read_ranges`] call.
    /// The default fills them one by one with [`fill`](Self::fill).
    ///
    /// # Errors
    ///
    /// As [`fill`](Self::fill): any range that cannot be filled whole fails the call (the
    /// contents of every `buf` are then unspecified and are not used).
    fn fill_ranges(&self, object: &Self::Object, ranges: &mut [RangeRead<'_>]) -> io::Result<()> {
        for r in ranges.iter_mut() {
            self.fill(object, r.offset, r.buf)?;
        }
        Ok(())
    }

    /// The kernel closed the object (unmount, cache unbind). The default does nothing; the
    /// object is dropped once in-flight reads of it finish.
    fn close(&self, object: &Self::Object) {
        let _ = object;
    }

    /// Write the server's own metrics (Prometheus text, names prefixed `erofs_ondemand_`)
    /// into `out`; the daemon's metrics file puts them before its own. The default writes
    /// nothing.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

impl<S: OnDemandServer + ?Sized> OnDemandServer for std::sync::Arc<S> {
    type Object = S::Object;

    fn open(&self, key: &ObjectKey<'_>) -> io::Result<Opened<Self::Object>> {
        (**self).open(key)
    }

    fn read_at(&self, object: &Self::Object, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(object, off, buf)
    }

    fn fill(&self, object: &Self::Object, off: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).fill(object, off, buf)
    }

    fn fill_streaming(
        &self,
        object: &Self::Object,
        off: u64,
        buf: &mut [u8],
        ready: &mut (dyn FnMut(&[u8]) + Send),
    ) -> io::Result<()> {
        (**self).fill_streaming(object, off, buf, ready)
    }

    fn fill_ranges(&self, object: &Self::Object, ranges: &mut [RangeRead<'_>]) -> io::Result<()> {
        (**self).fill_ranges(object, ranges)
    }

    fn close(&self, object: &Self::Object) {
        (**self).close(object)
    }

    fn render_metrics(&self, out: &mut String) {
        (**self).render_metrics(out)
    }
}

/// The errno the kernel gets for a server error: the OS error number if there is one (and it
/// is a valid errno), otherwise the nearest errno for its kind, otherwise `EIO`.
pub fn errno_of(e: &io::Error) -> Errno {
    if let Some(errno) = e.raw_os_error().and_then(Errno::new) {
        return errno;
    }
    let errno = match e.kind() {
        io::ErrorKind::NotFound => nix::errno::Errno::ENOENT,
        io::ErrorKind::PermissionDenied => nix::errno::Errno::EACCES,
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => nix::errno::Errno::EINVAL,
        io::ErrorKind::OutOfMemory => nix::errno::Errno::ENOMEM,
        io::ErrorKind::TimedOut => nix::errno::Errno::ETIMEDOUT,
        io::ErrorKind::Unsupported => nix::errno::Errno::EOPNOTSUPP,
        _ => nix::errno::Errno::EIO,
    };
    Errno::new(errno as i32).unwrap_or(Errno::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(errno_of(&io::Error::from_raw_os_error(28)).get(), 28);
        assert_eq!(errno_of(&io::Error::from(io::ErrorKind::NotFound)).get(), 2);
        assert_eq!(errno_of(&io::Error::other("boom")).get(), 5);
        assert_eq!(errno_of(&io::Error::from_raw_os_error(99999)).get(), 5);
    }
}
