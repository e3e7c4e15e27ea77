//! The map of one compressed inode: file offset → extent, as `z_erofs_map_blocks_fo`
//! (lcluster indexes) and `z_erofs_map_blocks_ext` (encoded extents) compute it.

use super::extent::{CompressedExtent, ExtentSource, METABOX_DEVICE};
use crate::decode::Encoding;
use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::Inner;
use crate::inode::Inode;
use erofs_format::compress::{
    Algorithm, CompactLayout, CompactPack, CompressionMap, EXTENT_PLEN_FMT_BIT, EXTENT_PLEN_MASK,
    EXTENT_PLEN_PARTIAL, Extent, ExtentMap, FULL_INDEX_OFFSET, HeadKind, IndexFormat, Lcluster,
    LclusterIndex, LclusterMap, MapAdvise, MapHeader, PCLUSTER_MAX_SIZE,
};
use erofs_format::inode::DataLayout;
use erofs_format::superblock::FeatureIncompat;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use zerocopy::FromBytes;

/// The tail extent's special storage (found once per inode, like `EROFS_GET_BLOCKS_FINDTAIL`).
#[derive(Debug, Clone, Copy)]
enum Tail {
    None,
    Inline { head_lcn: u64, pos: u64, size: u64 },
    Fragment { head_lcn: u64, offset: u64 },
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The whole file is a fragment of the packed inode.
    WholeFragment { offset: u64 },
    Lclusters {
        map: LclusterMap,
        /// Absolute byte offset of the map header.
        header: u64,
        /// Number of lclusters with an index (`ceil(size / block size)`).
        total: u64,
        tail: Tail,
    },
    Extents {
        map: ExtentMap,
        /// Absolute byte offset of the first record (or of the 8-byte base address).
        records: u64,
        count: u64,
    },
}

/// The decoded map of one compressed inode, for the duration of one operation.
pub(crate) struct ZInode<'a> {
    inner: &'a Inner,
    nid: u64,
    size: u64,
    kind: Kind,
    max_extent: u64,
    /// For 4-byte extent records: where the last walk stopped (logical start of the next
    /// record, its byte position, its physical start), so sequential mapping is linear.
    cursor: Cell<Option<(u64, u64, u64)>>,
    /// The lclusters loaded last, by lcn, oldest replaced first: mapping one extent loads its
    /// HEAD, the lcluster after it (end and pcluster size) and the next HEAD, which the next
    /// extent loads again; decoding a compact pack was a fifth of an LZ4 fsck's instructions.
    recent: Cell<Recent>,
}

/// Lclusters [`ZInode::load`] remembers.
const RECENT: usize = 4;

/// The remembered lclusters, by lcn, and the slot to fill next.
type Recent = ([Option<(u64, Loaded)>; RECENT], usize);

/// One decoded lcluster and the byte offset just past its index pack (`nextpackoff`).
#[derive(Clone, Copy)]
struct Loaded {
    lc: Lcluster,
    next_pack: u64,
}

impl<'a> ZInode<'a> {
    /// Decode the map header of `inode` (which must be compressed) and find its tail.
    pub(crate) fn new(inner: &'a Inner, inode: &Inode) -> Result<Self> {
        let raw = inode.raw();
        let nid = raw.nid.0;
        let ctx = Context::nid(nid);
        let fmt_err = |e: erofs_format::Error| bad(format!("{e}"), ctx);
        let format = match raw.layout {
            DataLayout::CompressedFull => IndexFormat::Full,
            DataLayout::CompressedCompact => IndexFormat::Compact,
            other => {
                return Err(bad(format!("not a compressed inode ({other:?})"), ctx));
            }
        };
        let header = raw
            .meta_end()
            .map_err(fmt_err)?
            .checked_next_multiple_of(8)
            .ok_or_else(|| bad("map header offset overflows", ctx))?;
        let bytes = inner.read_meta(inode.raw().in_metabox(), header, 8, ctx)?;
        let h = MapHeader::read_from_bytes(&bytes)
            .map_err(|_| bad("short map header", ctx.at(header)))?;
        drop(bytes);
        let decoded = h.decode(format, inner.blkszbits).map_err(|e| match e {
            erofs_format::Error::UnsupportedAlgorithm { id } => {
                Error::unsupported(format!("compression algorithm {id} (nid {nid})"))
            }
            e => bad(format!("map header: {e}"), ctx.at(header)),
        })?;
        let sb = &inner.sb;
        let max_extent = inner.compression.max_extent.load(Ordering::Relaxed);
        let mut z = ZInode {
            inner,
            nid,
            size: raw.size,
            kind: Kind::WholeFragment { offset: 0 },
            max_extent,
            cursor: Cell::new(None),
            recent: Cell::new(([None; RECENT], 0)),
        };
        z.kind = match decoded {
            CompressionMap::Fragment { offset } => {
                if !sb.incompat().contains(FeatureIncompat::FRAGMENTS) {
                    return Err(bad(
                        "fragment inode without the FRAGMENTS feature",
                        ctx.at(header),
                    ));
                }
                Kind::WholeFragment { offset }
            }
            CompressionMap::Lclusters(map) => {
                map.check_superblock(sb.incompat().contains(FeatureIncompat::BIG_PCLUSTER))
                    .map_err(fmt_err)?;
                if map.lcluster_bits > 30 || map.lcluster_bits < inner.blkszbits {
                    return Err(Error::unsupported(format!(
                        "lcluster size 2^{} (nid {nid})",
                        map.lcluster_bits
                    )));
                }
                let total = raw.size.div_ceil(inner.block_size());
                z.kind = Kind::Lclusters {
                    map,
                    header,
                    total,
                    tail: Tail::None,
                };
                let tail = z.find_tail(&map, raw.size)?;
                if let Kind::Lclusters { tail: t, .. } = &mut z.kind {
                    *t = tail;
                }
                z.kind
            }
            CompressionMap::Extents(map) => {
                let records = map
                    .records_offset(header)
                    .ok()
                    .and_then(|o| header.checked_add(o))
                    .ok_or_else(|| bad("extent records offset", ctx.at(header)))?;
                let count = map.record_count(raw.size).map_err(fmt_err)?;
                if map.lcluster_bits.is_some_and(|b| b > 40) {
                    return Err(bad("extent lcluster size", ctx.at(header)));
                }
                Kind::Extents {
                    map,
                    records,
                    count,
                }
            }
        };
        Ok(z)
    }

    fn ctx(&self) -> Context {
        Context::nid(self.nid)
    }

    /// Whether the inode (and so its map header, indexes and inline pcluster) is in the
    /// metabox.
    fn in_metabox(&self) -> bool {
        self.nid & erofs_format::superblock::NID_METABOX_BIT != 0
    }

    /// The lcluster indexes (or extent records) a file of this size needs must lie in the
    /// primary device: a size claim the index cannot back is corrupt, found before anyone
    /// allocates a buffer for the whole file.
    pub(crate) fn check_index(&self) -> Result<()> {
        let end = match self.kind {
            Kind::WholeFragment { .. } => return Ok(()),
            Kind::Lclusters {
                map, header, total, ..
            } => match map.format {
                IndexFormat::Full => total
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(header.checked_add(FULL_INDEX_OFFSET)?)),
                IndexFormat::Compact => header.checked_add(8).and_then(|ebase| {
                    ebase.checked_add(CompactLayout::new(ebase, total, map.advise).byte_len())
                }),
            },
            Kind::Extents {
                map,
                records,
                count,
            } => count
                .checked_mul(u64::from(map.record_size))
                .and_then(|n| n.checked_add(records))
                .and_then(|n| n.checked_add(if map.record_size == 4 { 8 } else { 0 })),
        };
        match end {
            Some(e) if e <= self.inner.meta_space_len(self.in_metabox()) => Ok(()),
            _ => Err(bad(
                format!(
                    "the compression index of a {}-byte file runs past its metadata space ({} bytes)",
                    self.size,
                    self.inner.meta_space_len(self.in_metabox())
                ),
                self.ctx(),
            )),
        }
    }

    /// Load lcluster `lcn` from the index (full or compact).
    fn load(&self, lcn: u64) -> Result<Loaded> {
        let (mut recent, next) = self.recent.get();
        if let Some((_, l)) = recent.iter().flatten().find(|(n, _)| *n == lcn) {
            return Ok(*l);
        }
        let loaded = self.load_index(lcn)?;
        recent[next] = Some((lcn, loaded));
        self.recent.set((recent, next.wrapping_add(1) % RECENT));
        Ok(loaded)
    }

    /// [`ZInode::load`] without the memory: decode lcluster `lcn` from the index.
    fn load_index(&self, lcn: u64) -> Result<Loaded> {
        let Kind::Lclusters {
            map, header, total, ..
        } = &self.kind
        else {
            return Err(bad("not an lcluster map", self.ctx()));
        };
        let ctx = self.ctx();
        if lcn >= *total {
            return Err(bad(
                format!("lcluster {lcn} past the index ({total} lclusters)"),
                ctx,
            ));
        }
        let fmt_err = |e: erofs_format::Error| bad(format!("lcluster {lcn}: {e}"), ctx);
        match map.format {
            IndexFormat::Full => {
                let pos = lcn
                    .checked_mul(8)
                    .and_then(|o| o.checked_add(header.checked_add(FULL_INDEX_OFFSET)?))
                    .ok_or_else(|| bad("index offset overflows", ctx))?;
                let bytes = self.inner.read_meta(self.in_metabox(), pos, 8, ctx)?;
                let idx = LclusterIndex::read_from_bytes(&bytes)
                    .map_err(|_| bad("short lcluster index", ctx.at(pos)))?;
                Ok(Loaded {
                    lc: idx.decode(lcn, map).map_err(fmt_err)?,
                    // The 8 bytes at pos were just read, so this cannot overflow.
                    next_pack: pos.saturating_add(8),
                })
            }
            IndexFormat::Compact => {
                let ebase = header
                    .checked_add(8)
                    .ok_or_else(|| bad("index offset overflows", ctx))?;
                let layout = CompactLayout::new(ebase, *total, map.advise);
                let (start, len, i) = layout
                    .locate(lcn)
                    .ok_or_else(|| bad("compact index out of range", ctx))?;
                let pos = ebase
                    .checked_add(start)
                    .ok_or_else(|| bad("index offset overflows", ctx))?;
                let bytes = self.inner.read_meta(self.in_metabox(), pos, len, ctx)?;
                let pack = CompactPack::new(&bytes, map.lcluster_bits, map.big_pcluster_1())
                    .map_err(fmt_err)?;
                Ok(Loaded {
                    lc: pack.decode(i, lcn).map_err(fmt_err)?,
                    // The len bytes at pos were just read, so this cannot overflow.
                    next_pack: pos.saturating_add(len as u64),
                })
            }
        }
    }

    /// Follow `delta[0]` back from `lcn` (by `dist`) to the HEAD lcluster
    /// (`z_erofs_extent_lookback`): returns its lcn and decoded index.
    fn lookback(&self, mut lcn: u64, mut dist: u64) -> Result<(u64, Lcluster)> {
        loop {
            lcn = match lcn.checked_sub(dist) {
                Some(l) if dist != 0 => l,
                _ => {
                    return Err(bad(
                        format!("bogus lookback distance {dist} at lcluster {lcn}"),
                        self.ctx(),
                    ));
                }
            };
            let l = self.load(lcn)?;
            match l.lc {
                Lcluster::NonHead { lookback, .. } => dist = u64::from(lookback),
                head @ Lcluster::Head { .. } => return Ok((lcn, head)),
            }
        }
    }

    /// The HEAD of the extent holding file offset `pos`: its lcn, index, logical start,
    /// and the `nextpackoff` of `pos`'s own lcluster.
    fn head_of(&self, map: &LclusterMap, pos: u64) -> Result<(u64, Lcluster, u64, u64)> {
        let bits = map.lcluster_bits;
        let lcn = pos >> bits;
        let endoff = pos & !(u64::MAX << bits);
        let first = self.load(lcn)?;
        let (head_lcn, head) = match first.lc {
            Lcluster::Head { cluster_offset, .. } if endoff >= u64::from(cluster_offset) => {
                (lcn, first.lc)
            }
            Lcluster::Head { .. } => {
                if lcn == 0 {
                    return Err(bad("lcluster 0 does not start an extent at 0", self.ctx()));
                }
                self.lookback(lcn, 1)?
            }
            Lcluster::NonHead { lookback, .. } => self.lookback(lcn, u64::from(lookback))?,
        };
        let Lcluster::Head { cluster_offset, .. } = head else {
            return Err(bad("lookback ended on a NONHEAD", self.ctx()));
        };
        let la = (head_lcn << bits) | u64::from(cluster_offset);
        Ok((head_lcn, head, la, first.next_pack))
    }

    /// `EROFS_GET_BLOCKS_FINDTAIL`: which extent is inline or a fragment.
    fn find_tail(&self, map: &LclusterMap, size: u64) -> Result<Tail> {
        let inline = map.inline_size.filter(|&n| n != 0);
        let Some(last_byte) = size.checked_sub(1) else {
            return Ok(Tail::None);
        };
        if inline.is_none() && map.fragment_offset.is_none() {
            return Ok(Tail::None);
        }
        let (head_lcn, head, _, next_pack) = self.head_of(map, last_byte)?;
        if let Some(frag) = map.fragment_offset {
            if !self
                .inner
                .sb
                .incompat()
                .contains(FeatureIncompat::FRAGMENTS)
            {
                return Err(bad(
                    "fragment pcluster without the FRAGMENTS feature",
                    self.ctx(),
                ));
            }
            let mut offset = u64::from(frag);
            // With full indexes the tail HEAD's block address holds the high 32 bits.
            if map.format == IndexFormat::Full
                && let Lcluster::Head { blkaddr, .. } = head
            {
                offset |= u64::from(blkaddr) << 32;
            }
            return Ok(Tail::Fragment { head_lcn, offset });
        }
        let size = u64::from(inline.unwrap_or(0));
        let bs = self.inner.block_size();
        let in_block = next_pack & !(u64::MAX << self.inner.blkszbits);
        if in_block.checked_add(size).is_none_or(|end| end > bs) {
            return Err(bad(
                format!("inline pcluster of {size} bytes crosses a block boundary"),
                self.ctx().at(next_pack),
            ));
        }
        Ok(Tail::Inline {
            head_lcn,
            pos: next_pack,
            size,
        })
    }

    /// The extent holding file offset `pos` (`pos < size`).
    pub(crate) fn map(&self, pos: u64) -> Result<CompressedExtent> {
        if pos >= self.size {
            return Err(bad(
                format!("map of offset {pos} past EOF ({})", self.size),
                self.ctx(),
            ));
        }
        let ext = match self.kind {
            Kind::WholeFragment { offset } => CompressedExtent {
                file_offset: 0,
                len: self.size,
                source: ExtentSource::Fragment { offset },
                partial_ref: false,
                past_eof: false,
            },
            Kind::Lclusters { map, tail, .. } => self.map_lclusters(&map, tail, pos)?,
            Kind::Extents {
                map,
                records,
                count,
            } => self.map_extents(&map, records, count, pos)?,
        };
        if ext.file_offset > pos
            || ext.len == 0
            || ext
                .file_offset
                .checked_add(ext.len)
                .is_none_or(|e| e <= pos)
        {
            return Err(bad(
                format!(
                    "extent {}..+{} does not hold offset {pos}",
                    ext.file_offset, ext.len
                ),
                self.ctx(),
            ));
        }
        self.check_limits(&ext)?;
        Ok(ext)
    }

    fn check_limits(&self, ext: &CompressedExtent) -> Result<()> {
        if let ExtentSource::Pcluster { len, encoding, .. } = ext.source {
            if len > u64::from(PCLUSTER_MAX_SIZE) {
                return Err(Error::unsupported(format!(
                    "pcluster of {len} bytes at file offset {} (nid {}; the kernel reads at most 1 MiB)",
                    ext.file_offset, self.nid
                )));
            }
            if ext.len > self.max_extent {
                return Err(Error::unsupported(format!(
                    "extent decoding to {} bytes at file offset {} (nid {}; limit {} bytes)",
                    ext.len, ext.file_offset, self.nid, self.max_extent
                )));
            }
            if let Encoding::Compressed(alg) = encoding
                && !self.inner.compression.available().has(alg)
            {
                return Err(bad(
                    format!("pcluster uses {alg}, which the superblock does not list"),
                    self.ctx(),
                ));
            }
        }
        Ok(())
    }

    fn map_lclusters(&self, map: &LclusterMap, tail: Tail, pos: u64) -> Result<CompressedExtent> {
        let bits = map.lcluster_bits;
        let (head_lcn, head, la, _) = self.head_of(map, pos)?;
        let Lcluster::Head {
            kind,
            blkaddr,
            partial_ref,
            ..
        } = head
        else {
            return Err(bad("lookback ended on a NONHEAD", self.ctx()));
        };
        // The extent ends at the next HEAD (`z_erofs_get_extent_decompressedlen`).
        let mut lcn = head_lcn;
        let end = loop {
            if lcn << bits >= self.size {
                break self.size;
            }
            if (lcn << bits).saturating_sub(la) > self.max_extent {
                return Err(Error::unsupported(format!(
                    "extent at file offset {la} decodes to more than {} bytes (nid {})",
                    self.max_extent, self.nid
                )));
            }
            match self.load(lcn)?.lc {
                Lcluster::NonHead { lookahead: 0, .. } => {
                    break next_lcn(lcn, 1, self.ctx())? << bits;
                }
                Lcluster::NonHead { lookahead, .. } => {
                    lcn = next_lcn(lcn, u64::from(lookahead), self.ctx())?;
                }
                Lcluster::Head { cluster_offset, .. } if lcn != head_lcn => {
                    break (lcn << bits)
                        .checked_add(u64::from(cluster_offset))
                        .ok_or_else(|| bad("extent end overflows", self.ctx()))?;
                }
                Lcluster::Head { .. } => lcn = next_lcn(lcn, 1, self.ctx())?,
            }
        };
        let past_eof = end > self.size;
        let end = end.min(self.size);
        let len = end
            .checked_sub(la)
            .filter(|&l| l > 0)
            .ok_or_else(|| bad(format!("empty extent at {la}"), self.ctx()))?;
        let encoding = match kind.algorithm(map) {
            Some(alg) => Encoding::Compressed(alg),
            None if map.advise.contains(MapAdvise::INTERLACED_PCLUSTER) => Encoding::Interlaced,
            None => Encoding::Shifted,
        };
        let source = match tail {
            Tail::Inline {
                head_lcn: t,
                pos: ipos,
                size,
            } if t == head_lcn => ExtentSource::Pcluster {
                device: if self.in_metabox() { METABOX_DEVICE } else { 0 },
                offset: ipos,
                len: size,
                encoding,
                inline: true,
            },
            Tail::Fragment {
                head_lcn: t,
                offset,
            } if t == head_lcn => ExtentSource::Fragment { offset },
            _ => {
                let plen = self.compressed_len(map, head_lcn, kind)?;
                let (device, offset) = self.resolve(u64::from(blkaddr), plen)?;
                ExtentSource::Pcluster {
                    device,
                    offset,
                    len: plen,
                    encoding,
                    inline: false,
                }
            }
        };
        if let ExtentSource::Pcluster {
            len: plen,
            encoding: Encoding::Shifted | Encoding::Interlaced,
            ..
        } = source
            && len > plen
        {
            return Err(bad(
                format!("uncompressed extent of {len} bytes in a pcluster of {plen}"),
                self.ctx(),
            ));
        }
        Ok(CompressedExtent {
            file_offset: la,
            len,
            source,
            partial_ref,
            past_eof,
        })
    }

    /// `z_erofs_get_extent_compressedlen`: the pcluster size in bytes.
    fn compressed_len(&self, map: &LclusterMap, head_lcn: u64, kind: HeadKind) -> Result<u64> {
        let bits = map.lcluster_bits;
        let big = match kind {
            HeadKind::Plain => false,
            HeadKind::Head1 => map.big_pcluster_1(),
            HeadKind::Head2 => map.big_pcluster_2(),
        };
        let lsize = 1u64 << bits;
        let next = next_lcn(head_lcn, 1, self.ctx())?;
        if !big || next << bits >= self.size {
            return Ok(lsize);
        }
        let blocks = match self.load(next)?.lc {
            Lcluster::Head { .. } => return Ok(lsize),
            Lcluster::NonHead {
                lookback: 1,
                compressed_blocks: Some(n),
                ..
            } if n > 0 => u64::from(n),
            _ => {
                return Err(bad(
                    format!("no CBLKCNT after the big pcluster HEAD at lcluster {head_lcn}"),
                    self.ctx(),
                ));
            }
        };
        Ok(blocks << self.inner.blkszbits)
    }

    /// A pcluster at block `blk` of the unified address space: its device and byte offset
    /// there (device 0 may map into an extra device's `mapped_blkaddr` window).
    fn resolve(&self, blk: u64, len: u64) -> Result<(u16, u64)> {
        let bs_bits = self.inner.blkszbits;
        let ctx = self.ctx().block(blk);
        if !self.inner.flat_devices {
            for d in &self.inner.devices {
                if d.mapped_blkaddr != 0
                    && let Some(rel) = blk.checked_sub(d.mapped_blkaddr)
                    && rel < d.blocks
                {
                    return Ok((d.index, rel << bs_bits));
                }
            }
        }
        let off = blk
            .checked_mul(1u64 << bs_bits)
            .filter(|o| o.checked_add(len).is_some())
            .ok_or_else(|| bad("pcluster address overflows", ctx))?;
        Ok((0, off))
    }

    /// `z_erofs_map_blocks_ext`: encoded extent records.
    fn map_extents(
        &self,
        map: &ExtentMap,
        records: u64,
        count: u64,
        pos: u64,
    ) -> Result<CompressedExtent> {
        let ctx = self.ctx();
        let recsz = u64::from(map.record_size);
        let read_rec = |at: u64| -> Result<Extent> {
            let bytes =
                self.inner
                    .read_meta(self.in_metabox(), at, usize::from(map.record_size), ctx)?;
            let mut full = [0u8; 32];
            full[..bytes.len()].copy_from_slice(&bytes);
            Extent::read_from_bytes(&full).map_err(|_| bad("short extent record", ctx.at(at)))
        };
        let mut lend = self.size;
        let (lstart, plen, pa, last);
        if recsz <= 8 {
            let bits = map
                .lcluster_bits
                .ok_or_else(|| bad("extent map without lcluster size", ctx))?;
            let lsize = 1u64 << bits;
            let idx_end = count;
            // (logical start, record position, running physical address if 4-byte records)
            let (mut l, mut at, mut run) = if recsz == 4 {
                match self.cursor.get() {
                    Some(c) if c.0 <= pos => c,
                    _ => {
                        let bytes = self.inner.read_meta(self.in_metabox(), records, 8, ctx)?;
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&bytes);
                        let first = records
                            .checked_add(8)
                            .ok_or_else(|| bad("extent record offset", ctx))?;
                        (0, first, u64::from_le_bytes(b))
                    }
                }
            } else {
                let l = pos & (u64::MAX << bits);
                let at = (l >> bits)
                    .checked_mul(recsz)
                    .and_then(|o| o.checked_add(records))
                    .ok_or_else(|| bad("extent record offset", ctx))?;
                (l, at, 0)
            };
            let mut cur_plen = 0u32;
            let mut cur_pa = 0u64;
            let mut seen = false;
            while l <= pos {
                if (l >> bits) >= idx_end {
                    return Err(bad(
                        format!("extent record for offset {l} past the {count} records"),
                        ctx,
                    ));
                }
                let e = read_rec(at)?;
                cur_plen = e.plen.get();
                if recsz == 4 {
                    cur_pa = run;
                    run = run.wrapping_add(u64::from(cur_plen & EXTENT_PLEN_MASK));
                } else {
                    cur_pa = u64::from(e.pstart_lo.get());
                }
                seen = true;
                at = at
                    .checked_add(recsz)
                    .ok_or_else(|| bad("extent record offset", ctx))?;
                l = l
                    .checked_add(lsize)
                    .ok_or_else(|| bad("extent offset overflows", ctx))?;
                if recsz == 4 {
                    self.cursor.set(Some((l, at, run)));
                }
            }
            if !seen {
                return Err(bad("no extent record", ctx));
            }
            last = l
                >= self
                    .size
                    .checked_next_multiple_of(lsize)
                    .unwrap_or(u64::MAX);
            lend = lend.min(l);
            // At least one record was read, so l >= lsize.
            lstart = l
                .checked_sub(lsize)
                .ok_or_else(|| bad("no extent record", ctx))?;
            plen = cur_plen;
            pa = cur_pa;
        } else {
            let mut found = None;
            let (mut lo, mut hi) = (0u64, count);
            while lo < hi {
                let mid = lo.midpoint(hi);
                let at = mid
                    .checked_mul(recsz)
                    .and_then(|o| o.checked_add(records))
                    .ok_or_else(|| bad("extent record offset", ctx))?;
                let e = read_rec(at)?;
                let mut la = u64::from(e.lstart_lo.get());
                if recsz > 16 {
                    la |= u64::from(e.lstart_hi.get()) << 32;
                }
                let epa = u64::from(e.pstart_lo.get()) | u64::from(e.pstart_hi.get()) << 32;
                if la > pos {
                    hi = mid;
                    if la > lend {
                        return Err(bad("unordered extent records", ctx.at(at)));
                    }
                    lend = la;
                } else {
                    // mid < hi <= count: neither saturates.
                    lo = mid.saturating_add(1);
                    if la == pos {
                        hi = hi.min(lo.saturating_add(1));
                    }
                    found = Some((la, e.plen.get(), epa));
                }
            }
            let (la, p, epa) = found.unwrap_or((lend, 0, 0));
            last = lo >= count;
            lstart = la;
            plen = p;
            pa = epa;
        }
        if lstart >= lend {
            // No record starts at or before `pos`: unmapped up to the next one.
            return Ok(CompressedExtent {
                file_offset: pos,
                len: lend.saturating_sub(pos),
                source: ExtentSource::Hole,
                partial_ref: false,
                past_eof: false,
            });
        }
        let len = lend
            .checked_sub(lstart)
            .ok_or_else(|| bad("empty extent", ctx))?;
        let source = if last && map.advise.contains(MapAdvise::FRAGMENT_PCLUSTER) {
            let mut offset = u64::from(plen);
            if recsz > 4 {
                offset |= pa << 32;
            }
            ExtentSource::Fragment { offset }
        } else if plen & EXTENT_PLEN_MASK != 0 {
            let fmt = plen >> EXTENT_PLEN_FMT_BIT;
            let block_aligned = pa.is_multiple_of(self.inner.block_size());
            // Format 0 is stored data; n > 0 is algorithm n - 1.
            let encoding = match fmt.checked_sub(1) {
                None if map.advise.contains(MapAdvise::INTERLACED_PCLUSTER) && block_aligned => {
                    Encoding::Interlaced
                }
                None => Encoding::Shifted,
                Some(id) => match u8::try_from(id).ok().and_then(Algorithm::from_id) {
                    Some(a) => Encoding::Compressed(a),
                    None => {
                        return Err(Error::unsupported(format!(
                            "compression format {id} (nid {})",
                            self.nid
                        )));
                    }
                },
            };
            let plen_bytes = u64::from(plen & EXTENT_PLEN_MASK);
            if pa
                .checked_add(plen_bytes)
                .is_none_or(|e| e >> 48 >> self.inner.blkszbits != 0)
            {
                return Err(bad("pcluster beyond 48-bit block addresses", ctx));
            }
            let (device, offset) = if block_aligned {
                self.resolve(pa >> self.inner.blkszbits, plen_bytes)?
            } else {
                (0, pa)
            };
            if matches!(encoding, Encoding::Shifted | Encoding::Interlaced) && len > plen_bytes {
                return Err(bad(
                    format!("uncompressed extent of {len} bytes in a pcluster of {plen_bytes}"),
                    ctx,
                ));
            }
            ExtentSource::Pcluster {
                device,
                offset,
                len: plen_bytes,
                encoding,
                inline: false,
            }
        } else {
            ExtentSource::Hole
        };
        Ok(CompressedExtent {
            file_offset: lstart,
            len,
            source,
            partial_ref: plen & EXTENT_PLEN_PARTIAL != 0
                && matches!(source, ExtentSource::Pcluster { .. }),
            past_eof: false,
        })
    }
}

impl Inner {
    /// `check_layout` for compressed inodes: the map header decodes, the tail is found and
    /// the index covers the claimed size (see [`ZInode::check_index`]).
    pub(crate) fn check_compressed(&self, inode: &Inode) -> Result<()> {
        ZInode::new(self, inode)?.check_index()
    }
}

impl Inner {
    /// See [`Image::compressed_extent`](crate::Image::compressed_extent).
    pub(crate) fn compressed_extent(&self, inode: &Inode, offset: u64) -> Result<CompressedExtent> {
        ZInode::new(self, inode)?.map(offset)
    }

    /// See [`Image::compressed_extents`](crate::Image::compressed_extents).
    pub(crate) fn compressed_extents(&self, inode: &Inode) -> Result<Vec<CompressedExtent>> {
        let z = ZInode::new(self, inode)?;
        let size = inode.metadata().len();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < size {
            let e = z.map(pos)?;
            // map checked that the extent's end fits.
            pos = e
                .file_offset
                .checked_add(e.len)
                .ok_or_else(|| bad("extent end overflows", Context::nid(inode.nid().0)))?;
            out.push(e);
        }
        Ok(out)
    }
}

/// `lcn + step`, the next lcluster to load (`load` then checks it against the index).
fn next_lcn(lcn: u64, step: u64, ctx: Context) -> Result<u64> {
    lcn.checked_add(step)
        .ok_or_else(|| bad("lcluster number overflows", ctx))
}

/// A corrupt compressed-file map.
fn bad(what: impl Into<String>, ctx: Context) -> Error {
    Error::corrupt_as(CorruptKind::CompressedMap, what, ctx)
}
