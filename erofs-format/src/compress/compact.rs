//! Compact lcluster indexes: bit-packed packs of `compacted_4B` and `compacted_2B`.

use super::header::{LclusterMap, MapAdvise};
use super::lcluster::{HeadKind, Lcluster, LclusterType, check_clusterofs};
use super::limits::{COMPACT_2B_MAX_LCLUSTER_BITS, COMPACT_MAX_LCLUSTER_BITS, D0_CBLKCNT};
use crate::error::Error;

/// One compact index pack: 2 entries in 8 bytes (`compacted_4B`) or 16 entries in 32 bytes
/// (`compacted_2B`). Entries are `lobits + 2` bits each, packed from bit 0; the pack's last
/// 4 bytes are the base block address (`le32`).
#[derive(Debug, Clone, Copy)]
pub struct CompactPack<'a> {
    bytes: &'a [u8],
    lcluster_bits: u8,
    big_pcluster: bool,
}

impl<'a> CompactPack<'a> {
    /// A pack of 8 bytes (2 entries) or 32 bytes (16 entries), for lclusters of
    /// `1 << lcluster_bits` bytes; `big_pcluster` is [`MapAdvise::BIG_PCLUSTER_1`].
    ///
    /// # Errors
    ///
    /// [`Error::BadCompactPack`] for another length, [`Error::UnsupportedLclusterBits`] when
    /// the pack type cannot describe the lcluster size.
    pub fn new(bytes: &'a [u8], lcluster_bits: u8, big_pcluster: bool) -> Result<Self, Error> {
        match bytes.len() {
            8 if lcluster_bits <= COMPACT_MAX_LCLUSTER_BITS => {}
            32 if lcluster_bits <= COMPACT_2B_MAX_LCLUSTER_BITS => {}
            8 | 32 => return Err(Error::UnsupportedLclusterBits { lcluster_bits }),
            len => {
                return Err(Error::BadCompactPack {
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                });
            }
        }
        Ok(CompactPack {
            bytes,
            lcluster_bits,
            big_pcluster,
        })
    }

    /// Number of entries: 2 or 16.
    pub fn len(&self) -> usize {
        if self.bytes.len() == 8 { 2 } else { 16 }
    }

    /// Always false: a pack holds 2 or 16 entries.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The pack's base block address (its last four bytes).
    pub fn base_blkaddr(&self) -> u32 {
        // len is 8 or 32 (checked in new), so the last chunk exists.
        self.bytes
            .last_chunk::<4>()
            .map_or(0, |b| u32::from_le_bytes(*b))
    }

    fn lobits(&self) -> u32 {
        u32::from(self.lcluster_bits.max(12))
    }

    /// `(pack bytes - 4) * 8 / entries`: 16 bits for a 4B pack, 14 for a 2B pack.
    fn encodebits(&self) -> usize {
        if self.bytes.len() == 8 { 16 } else { 14 }
    }

    /// Entry `i`'s raw `(lo, type)` pair: `lo` is the cluster offset (HEAD), a delta or a
    /// CBLKCNT value (NONHEAD). Returns `None` for `i >= len()`.
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "i < len() <= 16 so pos <= 210; lo is masked to lobits <= 14 bits and the type to 2"
    )]
    pub fn raw_entry(&self, i: usize) -> Option<(u16, LclusterType)> {
        if i >= self.len() {
            return None;
        }
        let pos = self.encodebits() * i;
        let mut b = [0u8; 4];
        for (k, slot) in b.iter_mut().enumerate() {
            *slot = self.bytes.get(pos / 8 + k).copied().unwrap_or(0);
        }
        let v = u32::from_le_bytes(b) >> (pos & 7);
        let lobits = self.lobits();
        let lo = (v & ((1 << lobits) - 1)) as u16;
        Some((lo, LclusterType::from_bits((v >> lobits) as u16)))
    }

    /// Decode entry `i` as zmap.c's `z_erofs_load_compact_lcluster` does, including the
    /// lookahead distance. `lcn` only labels errors.
    ///
    /// # Errors
    ///
    /// [`Error::LclusterOutOfRange`] for `i >= len()`, [`Error::BadLcluster`] for a CBLKCNT
    /// entry without big pclusters, a big-pcluster delta ≤ 1, a HEAD cluster offset beyond
    /// the lcluster, or a block address that overflows.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "i, j < len() <= 16 and plo <= u16::MAX, so the i64 j and the u32 nblk (<= 16 \
                  increments) cannot overflow"
    )]
    pub fn decode(&self, i: usize, lcn: u64) -> Result<Lcluster, Error> {
        let vcnt = self.len();
        let (lo, kind) = self.raw_entry(i).ok_or(Error::LclusterOutOfRange {
            lcn: i as u64,
            count: vcnt as u64,
        })?;
        if kind == LclusterType::NonHead {
            let lookahead = self.lookahead(i);
            if lo & D0_CBLKCNT != 0 {
                if !self.big_pcluster {
                    return Err(Error::BadLcluster {
                        lcn,
                        what: "compressed block count without big pcluster",
                    });
                }
                return Ok(Lcluster::NonHead {
                    lookback: 1,
                    lookahead,
                    compressed_blocks: Some(lo & !D0_CBLKCNT),
                });
            }
            if i + 1 != vcnt {
                return Ok(Lcluster::NonHead {
                    lookback: lo,
                    lookahead,
                    compressed_blocks: None,
                });
            }
            // The last entry of a pack stores delta[1]; delta[0] comes from the previous one.
            let prev = match i.checked_sub(1).and_then(|p| self.raw_entry(p)) {
                Some((plo, LclusterType::NonHead)) if plo & D0_CBLKCNT != 0 => 1,
                Some((plo, LclusterType::NonHead)) => plo,
                _ => 0,
            };
            return Ok(Lcluster::NonHead {
                lookback: prev.wrapping_add(1),
                lookahead,
                compressed_blocks: None,
            });
        }
        let head = HeadKind::from_type(kind).unwrap_or(HeadKind::Plain); // NONHEAD returned above
        check_clusterofs(lcn, lo, self.lcluster_bits)?;
        let mut nblk: u32 = 0;
        let mut j = i as i64;
        if !self.big_pcluster {
            nblk = 1;
            while j > 0 {
                j -= 1;
                // j is in 0..i here, so the entry exists.
                let (plo, pkind) = usize::try_from(j)
                    .ok()
                    .and_then(|j| self.raw_entry(j))
                    .unwrap_or((0, LclusterType::Plain));
                if pkind == LclusterType::NonHead {
                    j -= i64::from(plo);
                }
                if j >= 0 {
                    nblk += 1;
                }
            }
        } else {
            while j > 0 {
                j -= 1;
                let (plo, pkind) = usize::try_from(j)
                    .ok()
                    .and_then(|j| self.raw_entry(j))
                    .unwrap_or((0, LclusterType::Plain));
                if pkind == LclusterType::NonHead {
                    if plo & D0_CBLKCNT != 0 {
                        j -= 1;
                        nblk = nblk.saturating_add(u32::from(plo & !D0_CBLKCNT));
                        continue;
                    }
                    if plo <= 1 {
                        return Err(Error::BadLcluster {
                            lcn,
                            what: "big pcluster with a NONHEAD delta of 0 or 1",
                        });
                    }
                    j -= i64::from(plo) - 2;
                    continue;
                }
                nblk += 1;
            }
        }
        let blkaddr = self
            .base_blkaddr()
            .checked_add(nblk)
            .ok_or(Error::BadLcluster {
                lcn,
                what: "compact block address overflows",
            })?;
        Ok(Lcluster::Head {
            kind: head,
            cluster_offset: lo,
            blkaddr,
            partial_ref: false,
        })
    }

    /// `get_compacted_la_distance`: the distance to the next HEAD as far as this pack tells.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "d1 counts at most len() <= 16 entries"
    )]
    fn lookahead(&self, i: usize) -> u16 {
        let vcnt = self.len();
        let mut d1: u16 = 0;
        let mut lo = 0;
        for k in i..vcnt {
            let (l, kind) = self.raw_entry(k).unwrap_or((0, LclusterType::Plain));
            if kind != LclusterType::NonHead {
                return d1;
            }
            lo = l;
            d1 += 1;
        }
        if lo & D0_CBLKCNT == 0 {
            d1 = d1.wrapping_add(lo).wrapping_sub(1);
        }
        d1
    }
}

/// Where compact indexes of one inode live: `initial_4b` entries in 4B packs up to a 32-byte
/// boundary, then `count_2b` entries in 2B packs (a multiple of 16, only with
/// [`MapAdvise::COMPACTED_2B`]), then the rest in 4B packs (an odd last entry still takes a
/// whole 8-byte pack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactLayout {
    /// Absolute byte offset of the first pack (the map header's end).
    pub ebase: u64,
    /// Number of lclusters (`ceil(i_size / block size)`).
    pub total: u64,
    /// Entries in the leading 4B packs.
    pub initial_4b: u64,
    /// Entries in 2B packs.
    pub count_2b: u64,
}

impl CompactLayout {
    /// The layout of `total` lclusters whose packs start at absolute byte offset `ebase`
    /// (`round_up(inode end, 8) + 8`), as zmap.c computes it.
    pub fn new(ebase: u64, total: u64, advise: MapAdvise) -> CompactLayout {
        // Entries up to the next 32-byte boundary: `(round_up(ebase, 32) - ebase) / 4`.
        let initial_4b = (ebase.wrapping_neg() % 32) / 4;
        let count_2b = match total.checked_sub(initial_4b) {
            // Whole 2B packs of 16 entries: `rest / 16 * 16`.
            Some(rest) if advise.contains(MapAdvise::COMPACTED_2B) && rest > 0 => rest & !15,
            _ => 0,
        };
        CompactLayout {
            ebase,
            total,
            initial_4b,
            count_2b,
        }
    }

    /// Bytes taken by all packs (from `ebase`).
    pub fn byte_len(&self) -> u64 {
        // Saturating: an absurd `total` then fails the caller's length check.
        if self.total <= self.initial_4b {
            return self.total.div_ceil(2).saturating_mul(8);
        }
        let tail = self
            .total
            .saturating_sub(self.initial_4b)
            .saturating_sub(self.count_2b);
        (self.initial_4b.saturating_mul(4))
            .saturating_add(self.count_2b.saturating_mul(2))
            .saturating_add(tail.div_ceil(2).saturating_mul(8))
    }

    /// For lcluster `lcn`: the pack's byte offset from `ebase`, its length (8 or 32) and the
    /// entry index within it. `None` if `lcn >= total`.
    pub fn locate(&self, lcn: u64) -> Option<(u64, usize, usize)> {
        if lcn >= self.total {
            return None;
        }
        let (pos, shift) = if lcn < self.initial_4b {
            (lcn.checked_mul(4)?, 2)
        } else {
            let rest = lcn.checked_sub(self.initial_4b)?;
            let start_2b = self.initial_4b.checked_mul(4)?; // initial_4b <= 7
            if rest < self.count_2b {
                (start_2b.checked_add(rest.checked_mul(2)?)?, 1)
            } else {
                let start_4b = start_2b.checked_add(self.count_2b.checked_mul(2)?)?;
                (
                    start_4b.checked_add(rest.checked_sub(self.count_2b)?.checked_mul(4)?)?,
                    2,
                )
            }
        };
        let pack_len: u8 = if shift == 2 { 8 } else { 32 };
        // Pack boundaries are aligned in the absolute address space (ebase is 8-aligned and
        // 2B packs start 32-aligned), so align there and convert back.
        let abs = self.ebase.checked_add(pos)?;
        let within = abs.checked_rem(u64::from(pack_len))?;
        let pack_start = pos.checked_sub(within)?;
        let index = usize::try_from(within >> shift).ok()?;
        Some((pack_start, usize::from(pack_len), index))
    }
}

/// The compact lcluster indexes of one inode.
#[derive(Debug, Clone, Copy)]
pub struct CompactIndexes<'a> {
    bytes: &'a [u8],
    layout: CompactLayout,
    map: LclusterMap,
}

impl<'a> CompactIndexes<'a> {
    /// View the indexes of `total` lclusters; `bytes` starts at absolute byte offset `ebase`
    /// (the end of the map header) and may be longer than needed.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedLclusterBits`], or [`Error::Truncated`] if `bytes` is shorter
    /// than the layout needs.
    pub fn new(bytes: &'a [u8], ebase: u64, total: u64, map: &LclusterMap) -> Result<Self, Error> {
        if map.lcluster_bits > COMPACT_MAX_LCLUSTER_BITS
            || (map.advise.contains(MapAdvise::COMPACTED_2B)
                && map.lcluster_bits > COMPACT_2B_MAX_LCLUSTER_BITS)
        {
            return Err(Error::UnsupportedLclusterBits {
                lcluster_bits: map.lcluster_bits,
            });
        }
        if !ebase.is_multiple_of(8) {
            return Err(Error::BadMapHeader {
                what: "compact indexes not 8-byte aligned",
                advise: map.advise.bits(),
            });
        }
        let layout = CompactLayout::new(ebase, total, map.advise);
        let needed = layout.byte_len();
        if (bytes.len() as u64) < needed {
            return Err(Error::Truncated {
                what: "compact lcluster indexes",
                needed,
                available: bytes.len() as u64,
            });
        }
        Ok(CompactIndexes {
            bytes,
            layout,
            map: *map,
        })
    }

    /// The pack layout.
    pub fn layout(&self) -> &CompactLayout {
        &self.layout
    }

    /// Number of lclusters.
    pub fn len(&self) -> u64 {
        self.layout.total
    }

    /// Whether there are no lclusters.
    pub fn is_empty(&self) -> bool {
        self.layout.total == 0
    }

    /// The pack holding lcluster `lcn` and the entry index in it.
    ///
    /// # Errors
    ///
    /// [`Error::LclusterOutOfRange`], or the errors of [`CompactPack::new`].
    pub fn pack(&self, lcn: u64) -> Result<(CompactPack<'a>, usize), Error> {
        let out_of_range = Error::LclusterOutOfRange {
            lcn,
            count: self.layout.total,
        };
        let (start, len, i) = self.layout.locate(lcn).ok_or(out_of_range)?;
        let start = usize::try_from(start).map_err(|_| out_of_range)?;
        let bytes = start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or(Error::Truncated {
                what: "compact pack",
                needed: (start as u64).saturating_add(len as u64),
                available: self.bytes.len() as u64,
            })?;
        let pack = CompactPack::new(bytes, self.map.lcluster_bits, self.map.big_pcluster_1())?;
        Ok((pack, i))
    }

    /// Decode lcluster `lcn`.
    ///
    /// # Errors
    ///
    /// See [`CompactIndexes::pack`] and [`CompactPack::decode`].
    pub fn get(&self, lcn: u64) -> Result<Lcluster, Error> {
        let (pack, i) = self.pack(lcn)?;
        pack.decode(i, lcn)
    }

    /// Decode every lcluster in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Lcluster, Error>> + '_ {
        (0..self.len()).map(move |lcn| self.get(lcn))
    }
}
