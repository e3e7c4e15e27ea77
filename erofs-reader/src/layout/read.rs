//! Reading file data of any layout: `read_at`, whole files, ranges, pieces, symlink
//! targets, and the chunk map (`extents`).

use super::extent::{Extent, ExtentTarget, Piece};
use super::flat::{COPY_CHUNK, Seg};
use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::{Inner, io_err};
use crate::inode::Inode;
use erofs_format::inode::{FileType, InodeData};
use std::borrow::Cow;
use std::ops::Range;

fn no_data(inode: &Inode) -> bool {
    matches!(inode.raw().data, InodeData::Device { .. } | InodeData::None)
}

impl Inner {
    /// See [`Image::read_at`].
    pub(crate) fn read_inode_at(
        &self,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let size = inode.metadata().len();
        if offset >= size || buf.is_empty() || no_data(inode) {
            return Ok(0);
        }
        // offset < size (checked above), so the subtraction cannot saturate.
        let n =
            usize::try_from(size.saturating_sub(offset)).map_or(buf.len(), |r| r.min(buf.len()));
        if inode.raw().layout.is_compressed() {
            return self.read_compressed_at(inode, offset, &mut buf[..n]);
        }
        let ctx = Context::nid(inode.nid().0);
        let mut rest = &mut buf[..n];
        let mut pos = offset;
        while !rest.is_empty() {
            let (seg, len) = self.map(inode, pos)?;
            let take = usize::try_from(len).map_or(rest.len(), |l| l.min(rest.len()));
            if take == 0 {
                return Err(Error::corrupt_as(
                    CorruptKind::DataMap,
                    "empty data segment",
                    ctx.at(pos),
                ));
            }
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
            self.read_seg(seg, head, ctx)?;
            rest = tail;
            // pos + take <= offset + n <= size.
            pos = pos
                .checked_add(take as u64)
                .ok_or_else(|| overflow(ctx.at(pos)))?;
        }
        Ok(n)
    }

    /// See [`Image::read_inode`](crate::Image::read_inode).
    pub(crate) fn read_inode(&self, inode: &Inode) -> Result<Vec<u8>> {
        let size = inode.metadata().len();
        if no_data(inode) {
            return Ok(Vec::new());
        }
        self.check_layout(inode)?;
        let len = usize::try_from(size).map_err(|_| {
            Error::corrupt_as(
                CorruptKind::DataMap,
                "file size does not fit in memory",
                Context::nid(inode.nid().0),
            )
        })?;
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            Error::corrupt_as(
                CorruptKind::DataMap,
                format!("cannot allocate {size} bytes for the file"),
                Context::nid(inode.nid().0),
            )
        })?;
        v.resize(len, 0);
        let n = self.read_inode_at(inode, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// `len` bytes at `offset` of `inode` (which the caller has bounded by the size),
    /// lent without copying when they sit in one segment of a lending source.
    pub(crate) fn data_range(
        &self,
        inode: &Inode,
        offset: u64,
        len: usize,
    ) -> Result<Cow<'_, [u8]>> {
        let ctx = Context::nid(inode.nid().0);
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        if inode.raw().layout.is_compressed() {
            return self.compressed_range(inode, offset, len).map(Cow::Owned);
        }
        let (seg, seg_len) = self.map(inode, offset)?;
        if let Seg::Dev {
            index,
            offset: doff,
        } = seg
            && seg_len >= len as u64
        {
            let (src, off) = self.device_for(index, doff, ctx)?;
            if let Some(b) = src.bytes(off, len) {
                return Ok(Cow::Borrowed(b));
            }
        }
        let mut v = vec![0u8; len];
        let n = self.read_inode_at(inode, offset, &mut v)?;
        if n != len {
            return Err(Error::corrupt_as(
                CorruptKind::DataMap,
                "short read of inode data",
                ctx.at(offset),
            ));
        }
        Ok(Cow::Owned(v))
    }

    /// See [`Image::for_each_piece`](crate::Image::for_each_piece).
    pub(crate) fn for_each_piece<E: From<Error>>(
        &self,
        inode: &Inode,
        mut f: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let size = inode.metadata().len();
        if no_data(inode) {
            return Ok(());
        }
        if inode.raw().layout.is_compressed() {
            return self.for_each_compressed_piece(inode, f);
        }
        self.check_layout(inode)?;
        let ctx = Context::nid(inode.nid().0);
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let (seg, len) = self.map(inode, pos)?;
            // pos < size (loop condition).
            let len = len.min(size.saturating_sub(pos));
            if len == 0 {
                return Err(Error::corrupt_as(
                    CorruptKind::DataMap,
                    "empty data segment",
                    ctx.at(pos),
                )
                .into());
            }
            match seg {
                Seg::Hole => f(Piece::Zeros(len))?,
                Seg::Meta { offset } => {
                    // An inline tail: less than a block.
                    let n = usize::try_from(len).map_err(|_| {
                        Error::corrupt_as(CorruptKind::DataMap, "inline tail length", ctx.at(pos))
                    })?;
                    let bytes = self.read_meta(true, offset, n, ctx)?;
                    f(Piece::Data(&bytes))?;
                }
                Seg::Dev { index, offset } => {
                    let (src, off) = self.device_for(index, offset, ctx)?;
                    let lent = usize::try_from(len).ok().and_then(|l| src.bytes(off, l));
                    match lent {
                        Some(b) => f(Piece::Data(b))?,
                        None => {
                            let mut done = 0u64;
                            while done < len {
                                // done < len (loop condition).
                                let take = usize::try_from(len.saturating_sub(done))
                                    .map_or(COPY_CHUNK, |r| r.min(COPY_CHUNK));
                                let at =
                                    off.checked_add(done).ok_or_else(|| overflow(ctx.at(off)))?;
                                buf.resize(take, 0);
                                src.read_exact_at(&mut buf, at)
                                    .map_err(|e| io_err(index, e, ctx.at(at)))?;
                                f(Piece::Data(&buf))?;
                                // take <= len - done.
                                done = done.saturating_add(take as u64);
                            }
                        }
                    }
                }
            }
            pos = pos.checked_add(len).ok_or_else(|| overflow(ctx.at(pos)))?;
        }
        Ok(())
    }

    /// See [`Image::extents`].
    pub(crate) fn inode_extents(&self, inode: &Inode, range: Range<u64>) -> Result<Vec<Extent>> {
        let size = inode.metadata().len();
        let end = range.end.min(size);
        let mut out: Vec<Extent> = Vec::new();
        if no_data(inode) {
            return Ok(out);
        }
        self.check_layout(inode)?;
        let mut pos = range.start;
        while pos < end {
            let (seg, len) = self.map(inode, pos)?;
            // pos < end (loop condition).
            let len = len.min(end.saturating_sub(pos));
            if len == 0 {
                return Err(Error::corrupt_as(
                    CorruptKind::DataMap,
                    "empty data segment",
                    Context::nid(inode.nid().0).at(pos),
                ));
            }
            let target = match seg {
                Seg::Hole => ExtentTarget::Hole,
                Seg::Meta { offset } => ExtentTarget::Metabox { offset },
                Seg::Dev { index, offset } => ExtentTarget::Device {
                    index,
                    tag: index
                        .checked_sub(1)
                        .and_then(|i| self.devices.get(usize::from(i)))
                        .map(|d| d.tag.clone())
                        .unwrap_or_default(),
                    offset,
                },
            };
            let merged = match (out.last_mut(), &target) {
                (Some(last), ExtentTarget::Hole) if last.target == ExtentTarget::Hole => {
                    merge_len(last, len)
                }
                (Some(last), ExtentTarget::Device { index, offset, .. }) => match &last.target {
                    ExtentTarget::Device {
                        index: li,
                        offset: lo,
                        ..
                    } if li == index && lo.checked_add(last.len) == Some(*offset) => {
                        merge_len(last, len)
                    }
                    _ => false,
                },
                _ => false,
            };
            if !merged {
                out.push(Extent {
                    file_offset: pos,
                    len,
                    target,
                });
            }
            pos = pos
                .checked_add(len)
                .ok_or_else(|| overflow(Context::nid(inode.nid().0).at(pos)))?;
        }
        Ok(out)
    }

    /// See [`Image::read_link_inode`](crate::Image::read_link_inode).
    pub(crate) fn read_link_inode(&self, inode: &Inode) -> Result<Vec<u8>> {
        let md = inode.metadata();
        if md.file_type() != FileType::Symlink {
            return Err(Error::NotASymlink(format!("nid {}", inode.nid())));
        }
        let ctx = Context::nid(inode.nid().0);
        if md.len() > 4096 || md.is_empty() {
            return Err(Error::corrupt_as(
                CorruptKind::DataMap,
                format!("symlink target of {} bytes", md.len()),
                ctx,
            ));
        }
        // 1..=4096 bytes (checked above).
        let len = usize::try_from(md.len()).unwrap_or(4096);
        let target = self.data_range(inode, 0, len)?.into_owned();
        Ok(target)
    }
}

/// A file position that overflows `u64` while walking an inode's segments.
fn overflow(ctx: Context) -> Error {
    Error::corrupt_as(CorruptKind::DataMap, "data position overflows", ctx)
}

/// Grow `last` by `len` bytes if the sum fits; `false` keeps them as separate extents.
fn merge_len(last: &mut Extent, len: u64) -> bool {
    match last.len.checked_add(len) {
        Some(sum) => {
            last.len = sum;
            true
        }
        None => false,
    }
}
