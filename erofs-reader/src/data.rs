//! File data: mapping file offsets to devices (the chunk map), and reading.

use std::borrow::Cow;
use std::ops::Range;

use erofs_format::chunk::{ChunkMapping, ChunkTable};
use erofs_format::inode::{DataLayout, FileType, InodeData};

use crate::error::{Context, Error, Result};
use crate::image::{Image, Inner, io_err};
use crate::inode::Inode;

/// Where a byte range of a file lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentTarget {
    /// Not stored: reads as zeros (a null chunk, or a flat file without blocks).
    Hole,
    /// Stored in the metabox inode's data at this byte offset: the inline tail of an
    /// inode that lives in the metabox (`mkfs.erofs -m`).
    Metabox {
        /// Byte offset in the metabox inode's data.
        offset: u64,
    },
    /// Stored on a device.
    Device {
        /// Device index: 0 = primary device, k = k-th extra device.
        index: u16,
        /// The device's tag (empty for the primary device).
        tag: Vec<u8>,
        /// Byte offset on that device.
        offset: u64,
    },
}

/// A byte range of a file and where it lives. See [`Image::extents`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the file.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the bytes are.
    pub target: ExtentTarget,
}

/// A piece of file data handed to the visitor of [`Image::for_each_piece`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes, lent from the source when it can (memory, mmap), else copied once.
    Data(&'a [u8]),
    /// This many zero bytes (a hole).
    Zeros(u64),
}

/// One mapped segment starting at a file position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg {
    Hole,
    Dev {
        index: u16,
        offset: u64,
    },
    /// In the metabox inode's data (inline tails of inodes in the metabox).
    Meta {
        offset: u64,
    },
}

/// Buffer size for copying sources (non-lending).
const COPY_CHUNK: usize = 1 << 20;

impl Inner {
    /// Map file position `pos` (< size) of `inode`: the segment and its length from `pos`.
    pub(crate) fn map(&self, inode: &Inode, pos: u64) -> Result<(Seg, u64)> {
        let raw = inode.raw();
        let size = raw.size;
        debug_assert!(pos < size);
        let ctx = Context::nid(raw.nid.0);
        let fmt_err = |e: erofs_format::Error| Error::corrupt(format!("{e}"), ctx);
        let bs = self.block_size();
        let check_primary = |off: u64, len: u64| -> Result<()> {
            if off.checked_add(len).is_none_or(|e| e > self.primary_len) {
                Err(Error::corrupt(
                    format!(
                        "data {off}..+{len} lies past the end of the primary device ({} bytes)",
                        self.primary_len
                    ),
                    ctx.at(off),
                ))
            } else {
                Ok(())
            }
        };
        match raw.layout {
            DataLayout::CompressedFull | DataLayout::CompressedCompact => Err(Error::unsupported(
                format!("compressed inode (nid {}, {:?})", raw.nid.0, raw.layout),
            )),
            DataLayout::FlatPlain | DataLayout::FlatInline => {
                let flat = raw.flat_extent().map_err(fmt_err)?;
                let flat_len = match raw.layout {
                    DataLayout::FlatInline => raw.data_blocks().saturating_sub(1) * bs,
                    _ => size,
                };
                if pos < flat_len {
                    return match flat {
                        None => Ok((Seg::Hole, flat_len - pos)),
                        Some((off, len)) => {
                            check_primary(off, len)?;
                            Ok((
                                Seg::Dev {
                                    index: 0,
                                    offset: off + pos,
                                },
                                len - pos,
                            ))
                        }
                    };
                }
                let (off, len) = raw
                    .inline_tail()
                    .map_err(fmt_err)?
                    .ok_or_else(|| Error::corrupt("flat inode without data", ctx))?;
                let in_tail = pos - flat_len;
                if raw.in_metabox() {
                    if off
                        .checked_add(len)
                        .is_none_or(|e| e > self.meta_space_len(true))
                    {
                        return Err(Error::corrupt("inline data past the metabox", ctx.at(off)));
                    }
                    return Ok((
                        Seg::Meta {
                            offset: off + in_tail,
                        },
                        len - in_tail,
                    ));
                }
                check_primary(off, len)?;
                Ok((
                    Seg::Dev {
                        index: 0,
                        offset: off + in_tail,
                    },
                    len - in_tail,
                ))
            }
            DataLayout::ChunkBased => {
                let (table, format, count) = raw
                    .chunk_table()
                    .map_err(fmt_err)?
                    .ok_or_else(|| Error::corrupt("chunk-based inode without chunk format", ctx))?;
                let chunkbits = format.chunkbits(self.blkszbits).map_err(fmt_err)?;
                let i = pos >> chunkbits;
                if i >= count {
                    return Err(Error::corrupt("chunk index past the table", ctx));
                }
                let esize = format.entry_size() as u64;
                let eoff = i
                    .checked_mul(esize)
                    .and_then(|o| o.checked_add(table))
                    .ok_or_else(|| Error::corrupt("chunk table offset overflows", ctx))?;
                let bytes = self.read_meta(raw.in_metabox(), eoff, esize as usize, ctx)?;
                let entry = ChunkTable::parse(&bytes, format, 1)
                    .map_err(fmt_err)?
                    .get(0, format, self.sb.device_id_mask())
                    .ok_or_else(|| Error::corrupt("chunk table entry missing", ctx.at(eoff)))?;
                let chunk_start = i << chunkbits;
                let chunk_len = (1u64 << chunkbits).min(size - chunk_start);
                let in_chunk = pos - chunk_start;
                let len = chunk_len - in_chunk;
                match entry {
                    ChunkMapping::Hole => Ok((Seg::Hole, len)),
                    ChunkMapping::Mapped { device_id, blkaddr } => {
                        let (index, blk) = self.resolve_device(device_id, blkaddr.0, ctx)?;
                        let offset = blk
                            .checked_mul(bs)
                            .and_then(|o| o.checked_add(in_chunk))
                            .ok_or_else(|| Error::corrupt("chunk address overflows", ctx))?;
                        if let Some(dev) = index
                            .checked_sub(1)
                            .and_then(|i| self.devices.get(usize::from(i)))
                            && dev.blocks != 0
                            && blk
                                .checked_add(chunk_len.div_ceil(bs))
                                .is_none_or(|e| e > dev.blocks)
                        {
                            return Err(Error::corrupt(
                                format!(
                                    "chunk at block {blk} runs past device {index} ({} blocks)",
                                    dev.blocks
                                ),
                                ctx.device(index).block(blk),
                            ));
                        }
                        Ok((Seg::Dev { index, offset }, len))
                    }
                }
            }
        }
    }

    /// Cheap plausibility check of an inode's data layout before work proportional to its
    /// size: the flat extent or the whole chunk table must lie inside the primary device.
    /// This turns absurd sizes into an error before anything is allocated or looped over.
    pub(crate) fn check_layout(&self, inode: &Inode) -> Result<()> {
        let raw = inode.raw();
        let ctx = Context::nid(raw.nid.0);
        let fmt_err = |e: erofs_format::Error| Error::corrupt(format!("{e}"), ctx);
        let end = match raw.layout {
            DataLayout::FlatPlain | DataLayout::FlatInline => {
                match raw.flat_extent().map_err(fmt_err)? {
                    Some((off, len)) => off.checked_add(len),
                    None => return Ok(()),
                }
            }
            DataLayout::ChunkBased => match raw.chunk_table().map_err(fmt_err)? {
                Some((table, format, count)) => {
                    let end = count
                        .checked_mul(format.entry_size() as u64)
                        .and_then(|l| l.checked_add(table));
                    // The chunk table of an inode in the metabox is in the metabox.
                    if raw.in_metabox() {
                        return match end {
                            Some(e) if e <= self.meta_space_len(true) => Ok(()),
                            _ => Err(Error::corrupt("chunk table runs past the metabox", ctx)),
                        };
                    }
                    end
                }
                None => return Ok(()),
            },
            DataLayout::CompressedFull | DataLayout::CompressedCompact => {
                return self.check_compressed(inode);
            }
        };
        match end {
            Some(end) if end <= self.primary_len => Ok(()),
            _ => Err(Error::corrupt(
                format!(
                    "data of a {}-byte file does not fit in the primary device ({} bytes)",
                    raw.size, self.primary_len
                ),
                ctx,
            )),
        }
    }

    /// Apply the device-id rules of the kernel (`erofs_map_dev`): device 0 with extra
    /// devices present (and not in flatdev mode) is looked up in the unified address
    /// space of the devices' `mapped_blkaddr` windows.
    fn resolve_device(&self, device_id: u16, blk: u64, ctx: Context) -> Result<(u16, u64)> {
        if device_id == 0 {
            if !self.flat_devices {
                for d in &self.devices {
                    if d.mapped_blkaddr != 0
                        && blk >= d.mapped_blkaddr
                        && blk - d.mapped_blkaddr < d.blocks
                    {
                        return Ok((d.index, blk - d.mapped_blkaddr));
                    }
                }
            }
            return Ok((0, blk));
        }
        if usize::from(device_id) > self.devices.len() {
            return Err(Error::corrupt(
                format!(
                    "chunk on device {device_id}, but the image has {} extra devices",
                    self.devices.len()
                ),
                ctx.device(device_id).block(blk),
            ));
        }
        Ok((device_id, blk))
    }

    pub(crate) fn read_seg(&self, seg: Seg, buf: &mut [u8], ctx: Context) -> Result<()> {
        match seg {
            Seg::Hole => {
                buf.fill(0);
                Ok(())
            }
            Seg::Dev { index, offset } => {
                let (src, off) = self.device_for(index, offset, ctx)?;
                src.read_exact_at(buf, off)
                    .map_err(|e| io_err(index, e, ctx.at(off)))
            }
            Seg::Meta { offset } => {
                let bytes = self.read_meta(true, offset, buf.len(), ctx)?;
                buf.copy_from_slice(&bytes);
                Ok(())
            }
        }
    }
}

fn no_data(inode: &Inode) -> bool {
    matches!(inode.raw().data, InodeData::Device { .. } | InodeData::None)
}

impl Image {
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
        let n = (size - offset).min(buf.len() as u64) as usize;
        if inode.raw().layout.is_compressed() {
            return self.read_compressed_at(inode, offset, &mut buf[..n]);
        }
        let ctx = Context::nid(inode.nid().0);
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let (seg, len) = self.inner.map(inode, pos)?;
            let take = len.min((n - done) as u64) as usize;
            if take == 0 {
                return Err(Error::corrupt("empty data segment", ctx.at(pos)));
            }
            self.inner.read_seg(seg, &mut buf[done..done + take], ctx)?;
            done += take;
        }
        Ok(n)
    }

    /// The whole data of `inode`.
    ///
    /// # Errors
    /// As [`Image::read_at`]; an allocation failure for an absurd size is an
    /// [`Error::Corrupt`].
    pub fn read_inode(&self, inode: &Inode) -> Result<Vec<u8>> {
        let size = inode.metadata().len();
        if no_data(inode) {
            return Ok(Vec::new());
        }
        self.inner.check_layout(inode)?;
        let len = usize::try_from(size).map_err(|_| {
            Error::corrupt(
                "file size does not fit in memory",
                Context::nid(inode.nid().0),
            )
        })?;
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            Error::corrupt(
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
        let (seg, seg_len) = self.inner.map(inode, offset)?;
        if let Seg::Dev {
            index,
            offset: doff,
        } = seg
            && seg_len >= len as u64
        {
            let (src, off) = self.inner.device_for(index, doff, ctx)?;
            if let Some(b) = src.bytes(off, len) {
                return Ok(Cow::Borrowed(b));
            }
        }
        let mut v = vec![0u8; len];
        let n = self.read_inode_at(inode, offset, &mut v)?;
        if n != len {
            return Err(Error::corrupt("short read of inode data", ctx.at(offset)));
        }
        Ok(Cow::Owned(v))
    }

    /// Visit all data of `inode` in file order, as lent slices (zero copy from memory
    /// and mmap sources) or copied pieces of up to 1 MiB, and hole lengths.
    ///
    /// ```
    /// # fn f(image: &erofs_reader::Image, inode: &erofs_reader::Inode) -> erofs_reader::Result<()> {
    /// use erofs_reader::Piece;
    /// let mut total = 0u64;
    /// image.for_each_piece(inode, |p| {
    ///     total += match p { Piece::Data(d) => d.len() as u64, Piece::Zeros(n) => n };
    ///     Ok::<(), erofs_reader::Error>(())
    /// })?;
    /// assert_eq!(total, inode.metadata().len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Image::read_at`], or whatever `f` returns.
    pub fn for_each_piece<E: From<Error>>(
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
        self.inner.check_layout(inode)?;
        let ctx = Context::nid(inode.nid().0);
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let (seg, len) = self.inner.map(inode, pos)?;
            let len = len.min(size - pos);
            if len == 0 {
                return Err(Error::corrupt("empty data segment", ctx.at(pos)).into());
            }
            match seg {
                Seg::Hole => f(Piece::Zeros(len))?,
                Seg::Meta { offset } => {
                    // An inline tail: less than a block.
                    let n = usize::try_from(len)
                        .map_err(|_| Error::corrupt("inline tail length", ctx.at(pos)))?;
                    let bytes = self.inner.read_meta(true, offset, n, ctx)?;
                    f(Piece::Data(&bytes))?;
                }
                Seg::Dev { index, offset } => {
                    let (src, off) = self.inner.device_for(index, offset, ctx)?;
                    let lent = usize::try_from(len).ok().and_then(|l| src.bytes(off, l));
                    match lent {
                        Some(b) => f(Piece::Data(b))?,
                        None => {
                            let mut done = 0u64;
                            while done < len {
                                let take = (len - done).min(COPY_CHUNK as u64) as usize;
                                buf.resize(take, 0);
                                src.read_exact_at(&mut buf, off + done)
                                    .map_err(|e| io_err(index, e, ctx.at(off + done)))?;
                                f(Piece::Data(&buf))?;
                                done += take as u64;
                            }
                        }
                    }
                }
            }
            pos += len;
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
        self.inner.check_layout(inode)?;
        let mut pos = range.start;
        while pos < end {
            let (seg, len) = self.inner.map(inode, pos)?;
            let len = len.min(end - pos);
            if len == 0 {
                return Err(Error::corrupt(
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
                        .and_then(|i| self.inner.devices.get(usize::from(i)))
                        .map(|d| d.tag.clone())
                        .unwrap_or_default(),
                    offset,
                },
            };
            let merged = match (out.last_mut(), &target) {
                (Some(last), ExtentTarget::Hole) if last.target == ExtentTarget::Hole => {
                    last.len += len;
                    true
                }
                (Some(last), ExtentTarget::Device { index, offset, .. }) => match &last.target {
                    ExtentTarget::Device {
                        index: li,
                        offset: lo,
                        ..
                    } if li == index && lo.checked_add(last.len) == Some(*offset) => {
                        last.len += len;
                        true
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
            pos += len;
        }
        Ok(out)
    }

    /// The target of symlink `inode`.
    ///
    /// # Errors
    /// [`Error::NotASymlink`]; [`Error::Corrupt`] for a target longer than 4096 bytes
    /// (Linux's `PATH_MAX`) or an empty one.
    pub fn read_link_inode(&self, inode: &Inode) -> Result<Vec<u8>> {
        let md = inode.metadata();
        if md.file_type() != FileType::Symlink {
            return Err(Error::NotASymlink(format!("nid {}", inode.nid())));
        }
        let ctx = Context::nid(inode.nid().0);
        if md.len() > 4096 || md.is_empty() {
            return Err(Error::corrupt(
                format!("symlink target of {} bytes", md.len()),
                ctx,
            ));
        }
        let target = self.data_range(inode, 0, md.len() as usize)?.into_owned();
        Ok(target)
    }
}
