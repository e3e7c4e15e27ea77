//! Reading compressed files: `read_at`, whole ranges and piece by piece, and fragments
//! of the packed inode.

use super::extent::ExtentSource;
use super::map::ZInode;
use super::pcluster::alloc_zeroed;
use crate::decode::Encoding;
use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::Inner;
use crate::inode::Inode;
use crate::layout::Piece;

/// Bytes of file data copied per piece when they cannot be lent (fragments).
const PIECE_CHUNK: usize = 1 << 20;

/// Largest extent buffer a thread keeps between files.
const PIECE_BUF_KEEP: usize = 4 << 20;

thread_local! {
    /// The buffer `for_each_compressed_piece` decodes into, kept between files: a fresh one
    /// per file was zeroed again for its first extent (1.3% of a deflate fsck's
    /// instructions on the benchmark image, 2,465 files).
    static PIECE_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Inner {
    /// The packed inode (fragments), for compressed file `nid` that refers to it.
    fn packed_inode(&self, nid: u64) -> Result<Inode> {
        let ctx = Context::nid(nid);
        let packed = self.sb.packed_nid().ok_or_else(|| {
            Error::corrupt_as(
                CorruptKind::CompressedMap,
                "fragment without a packed inode",
                ctx,
            )
        })?;
        if packed.0 == nid {
            return Err(Error::corrupt_as(
                CorruptKind::CompressedMap,
                "the packed inode refers to a fragment of itself",
                ctx,
            ));
        }
        self.inode(packed)
    }

    /// Read `buf.len()` bytes of fragment data at `offset` of the packed inode.
    fn read_fragment(&self, nid: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let packed = self.packed_inode(nid)?;
        let n = self.read_inode_at(&packed, offset, buf)?;
        if n != buf.len() {
            return Err(Error::corrupt_as(
                CorruptKind::CompressedMap,
                format!(
                    "fragment {offset}..+{} lies past the packed inode ({} bytes)",
                    buf.len(),
                    packed.metadata().len()
                ),
                Context::nid(nid),
            ));
        }
        Ok(())
    }

    /// `read_at` for compressed inodes: `buf` is already bounded by the file size.
    /// Decodes only the extents the range touches, through the cache.
    pub(crate) fn read_compressed_at(
        &self,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let nid = inode.nid().0;
        let ctx = Context::nid(nid);
        let z = ZInode::new(self, inode)?;
        let n = buf.len();
        let mut rest = buf;
        let mut pos = offset;
        while !rest.is_empty() {
            let ext = z.map(pos)?;
            let (within, ext_rest) = ext.split_at(pos).ok_or_else(|| not_held(ctx.at(pos)))?;
            let take = usize::try_from(ext_rest).map_or(rest.len(), |r| r.min(rest.len()));
            let (dst, tail) = std::mem::take(&mut rest).split_at_mut(take);
            self.read_extent_part(&ext, within, dst, ctx, |at, dst| {
                self.read_fragment(nid, at, dst)
            })?;
            rest = tail;
            pos = pos
                .checked_add(take as u64)
                .ok_or_else(|| not_held(ctx.at(pos)))?;
        }
        Ok(n)
    }

    /// `len` bytes at `offset` of compressed `inode` (bounded by the caller).
    pub(crate) fn compressed_range(
        &self,
        inode: &Inode,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let mut v = alloc_zeroed(len as u64, Context::nid(inode.nid().0))?;
        let n = self.read_compressed_at(inode, offset, &mut v)?;
        if n != len {
            return Err(Error::corrupt_as(
                CorruptKind::CompressedMap,
                "short read of compressed data",
                Context::nid(inode.nid().0).at(offset),
            ));
        }
        Ok(v)
    }

    /// `for_each_piece` for compressed inodes: each extent is decoded once, in file order,
    /// into one reused buffer (stored extents are lent from the source when it can).
    pub(crate) fn for_each_compressed_piece<E: From<Error>>(
        &self,
        inode: &Inode,
        f: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let z = ZInode::new(self, inode)?;
        // Taken, not borrowed: a visitor that reads another file meanwhile gets an empty
        // buffer of its own.
        let mut buf = PIECE_BUF.take();
        let r = self.compressed_pieces(inode, &z, &mut buf, f);
        if buf.capacity() <= PIECE_BUF_KEEP {
            PIECE_BUF.set(buf);
        }
        r
    }

    /// The loop of [`Self::for_each_compressed_piece`], decoding into `buf`.
    fn compressed_pieces<E: From<Error>>(
        &self,
        inode: &Inode,
        z: &ZInode<'_>,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let size = inode.metadata().len();
        let nid = inode.nid().0;
        let ctx = Context::nid(nid);
        let mut pos = 0u64;
        while pos < size {
            let ext = z.map(pos)?;
            let (within, len) = ext.split_at(pos).ok_or_else(|| not_held(ctx.at(pos)))?;
            match ext.source {
                ExtentSource::Hole => f(Piece::Zeros(len))?,
                ExtentSource::Fragment { offset: fo } => {
                    let mut done = 0u64;
                    while done < len {
                        // done < len (loop condition).
                        let take = usize::try_from(len.saturating_sub(done))
                            .map_or(PIECE_CHUNK, |r| r.min(PIECE_CHUNK));
                        if buf.len() < take {
                            buf.resize(take, 0);
                        }
                        let part = &mut buf[..take];
                        // within + done < ext.len: no overflow.
                        let at = fo.checked_add(within.saturating_add(done)).ok_or_else(|| {
                            Error::corrupt_as(
                                CorruptKind::CompressedMap,
                                "fragment offset overflows",
                                ctx,
                            )
                        })?;
                        self.read_fragment(nid, at, part)?;
                        f(Piece::Data(part))?;
                        // take <= len - done.
                        done = done.saturating_add(take as u64);
                    }
                }
                ExtentSource::Pcluster {
                    device,
                    offset: p,
                    encoding: Encoding::Shifted,
                    ..
                } => {
                    let at = p.checked_add(within).ok_or_else(|| not_held(ctx.at(pos)))?;
                    let bytes = self.pcluster_bytes(device, at, len, ctx)?;
                    f(Piece::Data(&bytes))?;
                }
                ExtentSource::Pcluster { .. } => {
                    let n = usize::try_from(ext.len).map_err(|_| {
                        Error::corrupt_as(CorruptKind::CompressedMap, "extent length", ctx)
                    })?;
                    // The buffer only grows: zeroing it again for every extent longer
                    // than the one before cost more than a tenth of an LZ4 decode.
                    if let Some(extra) = n.checked_sub(buf.len()).filter(|&e| e > 0) {
                        buf.try_reserve(extra).map_err(|_| {
                            Error::corrupt_as(
                                CorruptKind::CompressedMap,
                                format!("cannot allocate {n} bytes for an extent"),
                                ctx,
                            )
                        })?;
                        buf.resize(n, 0);
                    }
                    let out = &mut buf[..n];
                    self.decode_extent(&ext, out, ctx)?;
                    // within < ext.len = n (split_at), so it fits and is in bounds.
                    let w = usize::try_from(within).unwrap_or(n);
                    f(Piece::Data(out.get(w..).unwrap_or(&[])))?;
                }
            }
            pos = pos.checked_add(len).ok_or_else(|| not_held(ctx.at(pos)))?;
        }
        Ok(())
    }
}

/// A position the extent map returned no extent for (`map` checks this; kept typed).
fn not_held(ctx: Context) -> Error {
    Error::corrupt_as(
        CorruptKind::CompressedMap,
        "extent does not hold the position",
        ctx,
    )
}
