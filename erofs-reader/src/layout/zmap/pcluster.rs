//! A pcluster's stored bytes, decoded through the pcluster cache; one read arm for every
//! kind of extent.

use super::extent::{CompressedExtent, ExtentSource};
use crate::decode::Encoding;
use crate::decode::decompress::{self, Request};
use crate::decode::pcluster_cache::Key;
use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::{Inner, io_err};
use std::borrow::Cow;
use std::sync::Arc;

impl Inner {
    /// The stored bytes of a pcluster, lent by the source when it can.
    pub(crate) fn pcluster_bytes(
        &self,
        device: u16,
        offset: u64,
        len: u64,
        ctx: Context,
    ) -> Result<Cow<'_, [u8]>> {
        let len_usize = usize::try_from(len)
            .map_err(|_| Error::corrupt_as(CorruptKind::CompressedMap, "pcluster length", ctx))?;
        if device == crate::layout::METABOX_DEVICE {
            return self.read_meta(true, offset, len_usize, ctx);
        }
        if device == 0 {
            return self.read_primary(offset, len_usize, ctx);
        }
        let (src, off) = self.device_for(device, offset, ctx)?;
        if let Some(b) = src.bytes(off, len_usize) {
            return Ok(Cow::Borrowed(b));
        }
        let mut v = vec![0u8; len_usize];
        src.read_exact_at(&mut v, off)
            .map_err(|e| io_err(device, e, ctx.at(off)))?;
        Ok(Cow::Owned(v))
    }

    /// Decode all of extent `ext` into `out` (`out.len() == ext.len`).
    pub(crate) fn decode_extent(
        &self,
        ext: &CompressedExtent,
        out: &mut [u8],
        ctx: Context,
    ) -> Result<()> {
        let (device, offset, len, encoding) = ext.pcluster(ctx)?;
        let ctx = ctx.device(device).at(offset);
        let input = self.pcluster_bytes(device, offset, len, ctx)?;
        let req = Request {
            encoding,
            partial: ext.partial_decode(),
            block_offset: usize::from(self.block_offset(ext.file_offset)),
            block_size: 1usize << self.blkszbits,
            lz4_zero_padding: self.compression.zero_padding,
            ctx,
        };
        decompress::decode(&req, &input, out)
    }

    /// The decoded bytes of extent `ext`, from the cache or decoded (and cached) now.
    pub(crate) fn cached_extent(&self, ext: &CompressedExtent, ctx: Context) -> Result<Arc<[u8]>> {
        let (device, offset, len, encoding) = ext.pcluster(ctx)?;
        let key = Key {
            device,
            offset,
            stored_len: len,
            encoding,
            decoded_len: ext.len,
            block_offset: u32::from(self.block_offset(ext.file_offset)),
        };
        let cache = &self.compression.cache;
        if let Some(d) = cache.get(&key) {
            return Ok(d);
        }
        let mut out = alloc_zeroed(ext.len, ctx)?;
        self.decode_extent(ext, &mut out, ctx)?;
        let data: Arc<[u8]> = out.into();
        cache.insert(key, data.clone());
        Ok(data)
    }
}

impl Inner {
    /// `pos % block size`: the offset of `pos` within its block.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "masked below the block size, at most 4096"
    )]
    fn block_offset(&self, pos: u64) -> u16 {
        (pos & !(u64::MAX << self.blkszbits)) as u16
    }
}

impl Inner {
    /// Fill `dst` with the bytes of extent `ext` from `within` bytes into it
    /// (`within + dst.len() <= ext.len`): zeros for a hole, `fragment(at, dst)` for a
    /// fragment (`at` is the byte of the packed inode), the stored bytes themselves for
    /// a shifted pcluster, and the decoded pcluster (through the cache) otherwise.
    pub(crate) fn read_extent_part(
        &self,
        ext: &CompressedExtent,
        within: u64,
        dst: &mut [u8],
        ctx: Context,
        fragment: impl FnOnce(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        match ext.source {
            ExtentSource::Hole => dst.fill(0),
            ExtentSource::Fragment { offset: f } => {
                let at = f.checked_add(within).ok_or_else(|| {
                    Error::corrupt_as(CorruptKind::CompressedMap, "fragment offset overflows", ctx)
                })?;
                fragment(at, dst)?;
            }
            ExtentSource::Pcluster {
                device,
                offset: p,
                len,
                encoding: Encoding::Shifted,
                ..
            } => {
                // Stored as is: read just the bytes asked for.
                if ext.len > len {
                    return Err(Error::corrupt_as(
                        CorruptKind::CompressedMap,
                        "extent longer than its pcluster",
                        ctx,
                    ));
                }
                // within < ext.len <= len, and p + len was checked.
                let at = p.checked_add(within).ok_or_else(|| {
                    Error::corrupt_as(CorruptKind::CompressedMap, "pcluster offset overflows", ctx)
                })?;
                let bytes = self.pcluster_bytes(device, at, dst.len() as u64, ctx)?;
                dst.copy_from_slice(&bytes);
            }
            ExtentSource::Pcluster { .. } => {
                let data = self.cached_extent(ext, ctx)?;
                // within + dst.len() <= ext.len = data.len() (the caller's contract).
                let part = usize::try_from(within)
                    .ok()
                    .and_then(|w| data.get(w..)?.get(..dst.len()))
                    .ok_or_else(|| {
                        Error::corrupt_as(CorruptKind::CompressedMap, "read past the extent", ctx)
                    })?;
                dst.copy_from_slice(part);
            }
        }
        Ok(())
    }
}

/// A zeroed buffer of `len` bytes; `len` has been bounded by the extent limit, and a
/// failed allocation is an error, not an abort.
pub(crate) fn alloc_zeroed(len: u64, ctx: Context) -> Result<Vec<u8>> {
    let n = usize::try_from(len)
        .map_err(|_| Error::corrupt_as(CorruptKind::CompressedMap, "extent length", ctx))?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::corrupt_as(
            CorruptKind::CompressedMap,
            format!("cannot allocate {n} bytes for an extent"),
            ctx,
        )
    })?;
    v.resize(n, 0);
    Ok(v)
}
