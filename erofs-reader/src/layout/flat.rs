//! Uncompressed layouts: flat (plain and inline tail) and chunk-based files, file
//! offset → device segment.

use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::{Inner, io_err};
use crate::inode::Inode;
use erofs_format::chunk::{ChunkMapping, ChunkTable};
use erofs_format::inode::DataLayout;

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
pub(crate) const COPY_CHUNK: usize = 1 << 20;

impl Inner {
    /// Map file position `pos` (< size) of `inode`: the segment and its length from `pos`.
    pub(crate) fn map(&self, inode: &Inode, pos: u64) -> Result<(Seg, u64)> {
        let raw = inode.raw();
        let size = raw.size;
        debug_assert!(pos < size);
        let ctx = Context::nid(raw.nid.0);
        let fmt_err =
            |e: erofs_format::Error| Error::corrupt_as(CorruptKind::DataMap, format!("{e}"), ctx);
        let bs = self.block_size();
        let overflow = || {
            Error::corrupt_as(
                CorruptKind::DataMap,
                "data position overflows its extent",
                ctx,
            )
        };
        let check_primary = |off: u64, len: u64| -> Result<()> {
            if off.checked_add(len).is_none_or(|e| e > self.primary_len) {
                Err(Error::corrupt_as(
                    CorruptKind::DataMap,
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
                    DataLayout::FlatInline => raw
                        .data_blocks()
                        .saturating_sub(1)
                        .checked_mul(bs)
                        .ok_or_else(overflow)?,
                    _ => size,
                };
                if pos < flat_len {
                    return match flat {
                        None => Ok((Seg::Hole, flat_len.checked_sub(pos).ok_or_else(overflow)?)),
                        Some((off, len)) => {
                            check_primary(off, len)?;
                            Ok((
                                Seg::Dev {
                                    index: 0,
                                    offset: off.checked_add(pos).ok_or_else(overflow)?,
                                },
                                len.checked_sub(pos).ok_or_else(overflow)?,
                            ))
                        }
                    };
                }
                let (off, len) = raw.inline_tail().map_err(fmt_err)?.ok_or_else(|| {
                    Error::corrupt_as(CorruptKind::DataMap, "flat inode without data", ctx)
                })?;
                let in_tail = pos.checked_sub(flat_len).ok_or_else(overflow)?;
                let tail_offset = off.checked_add(in_tail).ok_or_else(overflow)?;
                let tail_len = len.checked_sub(in_tail).ok_or_else(overflow)?;
                if raw.in_metabox() {
                    if off
                        .checked_add(len)
                        .is_none_or(|e| e > self.meta_space_len(true))
                    {
                        return Err(Error::corrupt_as(
                            CorruptKind::DataMap,
                            "inline data past the metabox",
                            ctx.at(off),
                        ));
                    }
                    return Ok((
                        Seg::Meta {
                            offset: tail_offset,
                        },
                        tail_len,
                    ));
                }
                check_primary(off, len)?;
                Ok((
                    Seg::Dev {
                        index: 0,
                        offset: tail_offset,
                    },
                    tail_len,
                ))
            }
            DataLayout::ChunkBased => {
                let (table, format, count) =
                    raw.chunk_table().map_err(fmt_err)?.ok_or_else(|| {
                        Error::corrupt_as(
                            CorruptKind::DataMap,
                            "chunk-based inode without chunk format",
                            ctx,
                        )
                    })?;
                let chunkbits = format.chunkbits(self.blkszbits).map_err(fmt_err)?;
                let i = pos >> chunkbits;
                if i >= count {
                    return Err(Error::corrupt_as(
                        CorruptKind::DataMap,
                        "chunk index past the table",
                        ctx,
                    ));
                }
                let esize_bytes = format.entry_size();
                let esize = esize_bytes as u64;
                let eoff = i
                    .checked_mul(esize)
                    .and_then(|o| o.checked_add(table))
                    .ok_or_else(|| {
                        Error::corrupt_as(CorruptKind::DataMap, "chunk table offset overflows", ctx)
                    })?;
                let bytes = self.read_meta(raw.in_metabox(), eoff, esize_bytes, ctx)?;
                let entry = ChunkTable::parse(&bytes, format, 1)
                    .map_err(fmt_err)?
                    .get(0, format, self.sb.device_id_mask())
                    .ok_or_else(|| {
                        Error::corrupt_as(
                            CorruptKind::DataMap,
                            "chunk table entry missing",
                            ctx.at(eoff),
                        )
                    })?;
                let chunk_start = i << chunkbits;
                let chunk_len = size
                    .checked_sub(chunk_start)
                    .ok_or_else(overflow)?
                    .min(1u64 << chunkbits);
                let in_chunk = pos.checked_sub(chunk_start).ok_or_else(overflow)?;
                let len = chunk_len.checked_sub(in_chunk).ok_or_else(overflow)?;
                match entry {
                    ChunkMapping::Hole => Ok((Seg::Hole, len)),
                    ChunkMapping::Mapped { device_id, blkaddr } => {
                        let (index, blk) = self.resolve_device(device_id, blkaddr.0, ctx)?;
                        let offset = blk
                            .checked_mul(bs)
                            .and_then(|o| o.checked_add(in_chunk))
                            .ok_or_else(|| {
                                Error::corrupt_as(
                                    CorruptKind::DataMap,
                                    "chunk address overflows",
                                    ctx,
                                )
                            })?;
                        if let Some(dev) = index
                            .checked_sub(1)
                            .and_then(|i| self.devices.get(usize::from(i)))
                            && dev.blocks != 0
                            && blk
                                .checked_add(chunk_len.div_ceil(bs))
                                .is_none_or(|e| e > dev.blocks)
                        {
                            return Err(Error::corrupt_as(
                                CorruptKind::DataMap,
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
        let fmt_err =
            |e: erofs_format::Error| Error::corrupt_as(CorruptKind::DataMap, format!("{e}"), ctx);
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
                            _ => Err(Error::corrupt_as(
                                CorruptKind::DataMap,
                                "chunk table runs past the metabox",
                                ctx,
                            )),
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
            _ => Err(Error::corrupt_as(
                CorruptKind::DataMap,
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
                        && let Some(rel) = blk.checked_sub(d.mapped_blkaddr)
                        && rel < d.blocks
                    {
                        return Ok((d.index, rel));
                    }
                }
            }
            return Ok((0, blk));
        }
        if usize::from(device_id) > self.devices.len() {
            return Err(Error::corrupt_as(
                CorruptKind::DataMap,
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
