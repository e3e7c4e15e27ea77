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
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let ext = z.map(pos)?;
            let within = pos - ext.file_offset;
            let take = (ext.len - within).min((buf.len() - done) as u64) as usize;
            let dst = &mut buf[done..done + take];
            self.read_extent_part(&ext, within, dst, ctx, |at, dst| {
                self.read_fragment(nid, at, dst)
            })?;
            done += take;
        }
        Ok(done)
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
        mut f: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let size = inode.metadata().len();
        let nid = inode.nid().0;
        let ctx = Context::nid(nid);
        let z = ZInode::new(self, inode)?;
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let ext = z.map(pos)?;
            let within = pos - ext.file_offset;
            let len = ext.len - within;
            match ext.source {
                ExtentSource::Hole => f(Piece::Zeros(len))?,
                ExtentSource::Fragment { offset: fo } => {
                    let mut done = 0u64;
                    while done < len {
                        let take = (len - done).min(PIECE_CHUNK as u64) as usize;
                        buf.resize(take, 0);
                        let at = fo.checked_add(within + done).ok_or_else(|| {
                            Error::corrupt_as(
                                CorruptKind::CompressedMap,
                                "fragment offset overflows",
                                ctx,
                            )
                        })?;
                        self.read_fragment(nid, at, &mut buf)?;
                        f(Piece::Data(&buf))?;
                        done += take as u64;
                    }
                }
                ExtentSource::Pcluster {
                    device,
                    offset: p,
                    encoding: Encoding::Shifted,
                    ..
                } => {
                    let bytes = self.pcluster_bytes(device, p + within, len, ctx)?;
                    f(Piece::Data(&bytes))?;
                }
                ExtentSource::Pcluster { .. } => {
                    let n = usize::try_from(ext.len).map_err(|_| {
                        Error::corrupt_as(CorruptKind::CompressedMap, "extent length", ctx)
                    })?;
                    if buf.len() < n {
                        let extra = n - buf.len();
                        buf.try_reserve(extra).map_err(|_| {
                            Error::corrupt_as(
                                CorruptKind::CompressedMap,
                                format!("cannot allocate {n} bytes for an extent"),
                                ctx,
                            )
                        })?;
                    }
                    buf.resize(n, 0);
                    self.decode_extent(&ext, &mut buf, ctx)?;
                    f(Piece::Data(&buf[within as usize..]))?;
                }
            }
            pos += len;
        }
        Ok(())
    }
}
