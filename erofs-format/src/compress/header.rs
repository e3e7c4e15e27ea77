//! The map header of a compressed inode and what it decodes to.

use super::algorithm::Algorithm;
use super::limits::{COMPACT_2B_MAX_LCLUSTER_BITS, COMPACT_MAX_LCLUSTER_BITS, FRAGMENT_INODE_BIT};
use crate::error::Error;
use bitflags::bitflags;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

bitflags! {
    /// `h_advise` of the map header (`Z_EROFS_ADVISE_*`).
    ///
    /// Bit 0 means [`COMPACTED_2B`](Self::COMPACTED_2B) in the compact layout and
    /// [`EXTENTS`](Self::EXTENTS) in the full layout. With `EXTENTS`, bits 1–2 hold the
    /// extent record size instead of the big-pcluster bits
    /// ([`MapHeader::extent_record_size`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MapAdvise: u16 {
        /// Compact layout: 4B packs, then 2B packs, then 4B packs (otherwise 4B only).
        const COMPACTED_2B = 0x0001;
        /// Full layout: encoded extent records instead of lcluster indexes (erofs-utils 1.9).
        const EXTENTS = 0x0001;
        /// HEAD1 pclusters may span several blocks.
        const BIG_PCLUSTER_1 = 0x0002;
        /// HEAD2 (and PLAIN) pclusters may span several blocks.
        const BIG_PCLUSTER_2 = 0x0004;
        /// The last pcluster is stored inline after the indexes (ztailpacking);
        /// `h_idata_size` is its size.
        const INLINE_PCLUSTER = 0x0008;
        /// Uncompressed (PLAIN) pclusters are stored interlaced (rotated), not shifted.
        const INTERLACED_PCLUSTER = 0x0010;
        /// The tail lives in the packed inode at `h_fragmentoff`.
        const FRAGMENT_PCLUSTER = 0x0020;
    }
}

/// Which of the two compressed data layouts an inode uses (from its `i_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexFormat {
    /// `EROFS_INODE_COMPRESSED_FULL` (1): 8-byte lcluster indexes, or encoded extents.
    Full,
    /// `EROFS_INODE_COMPRESSED_COMPACT` (3): compact index packs.
    Compact,
}

/// The 8-byte map header at `round_up(inode end incl. xattrs, 8)` of a compressed inode.
///
/// The first four bytes are a union: `h_fragmentoff` (with FRAGMENT_PCLUSTER),
/// `h_reserved1` + `h_idata_size` (with INLINE_PCLUSTER), or `h_extents_lo` (with EXTENTS);
/// the last two bytes double as `h_extents_hi` with EXTENTS. If bit 7 of `h_clusterbits`
/// is set, the whole 64-bit header minus that bit is the file's offset in the packed inode.
/// [`MapHeader::decode`] sorts this out.
#[doc(alias = "z_erofs_map_header")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct MapHeader {
    /// Fragment offset, or `h_reserved1` (low half) and `h_idata_size` (high half), or
    /// `h_extents_lo`.
    pub h_fragmentoff: U32,
    /// [`MapAdvise`] bits.
    pub h_advise: U16,
    /// Bits 0–3: HEAD1 algorithm; bits 4–7: HEAD2 algorithm.
    pub h_algorithmtype: u8,
    /// Bits 0–3: `lclusterbits - blkszbits`; bit 7: whole file is a fragment.
    pub h_clusterbits: u8,
}

const _: () = assert!(size_of::<MapHeader>() == 8);
const _: () = assert!(offset_of!(MapHeader, h_advise) == 4);
const _: () = assert!(offset_of!(MapHeader, h_algorithmtype) == 6);
const _: () = assert!(offset_of!(MapHeader, h_clusterbits) == 7);

impl MapHeader {
    /// The raw header as one little-endian `u64` (how the whole-file fragment reads it).
    pub fn as_u64(&self) -> u64 {
        u64::from(self.h_fragmentoff.get())
            | u64::from(self.h_advise.get()) << 32
            | u64::from(self.h_algorithmtype) << 48
            | u64::from(self.h_clusterbits) << 56
    }

    /// The advise bits (unknown bits retained).
    pub fn advise(&self) -> MapAdvise {
        MapAdvise::from_bits_retain(self.h_advise.get())
    }

    /// Whether the whole file is stored in the packed inode (bit 7 of `h_clusterbits`).
    pub fn is_whole_file_fragment(&self) -> bool {
        self.h_clusterbits >> FRAGMENT_INODE_BIT != 0
    }

    /// `h_idata_size`: the inline (ztailpacking) pcluster size.
    pub fn idata_size(&self) -> u16 {
        (self.h_fragmentoff.get() >> 16) as u16
    }

    /// Encoded extent record size in bytes (4, 8, 16 or 32), meaningful with
    /// [`MapAdvise::EXTENTS`] (`z_erofs_extent_recsize`).
    pub fn extent_record_size(&self) -> u8 {
        4 << ((self.h_advise.get() >> 1) & 3)
    }

    /// The 48-bit extent count (`h_extents_lo | h_extents_hi << 32`), meaningful with
    /// [`MapAdvise::EXTENTS`] and 16- or 32-byte records.
    pub fn extent_count(&self) -> u64 {
        u64::from(self.h_fragmentoff.get())
            | u64::from(self.h_algorithmtype) << 32
            | u64::from(self.h_clusterbits) << 40
    }

    /// Decode the header for an inode of layout `format` on a filesystem with `blkszbits`,
    /// with the checks `z_erofs_fill_inode_lazy` makes.
    ///
    /// Checks against the superblock are in [`LclusterMap::check_superblock`] (the
    /// `BIG_PCLUSTER` feature) and [`AlgorithmSet::require`](crate::compress::AlgorithmSet::require) (per pcluster). Linux 6.12 does not
    /// know encoded extents: a reader that mirrors it treats [`CompressionMap::Extents`] as
    /// unsupported.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedAlgorithm`] for an algorithm nibble ≥ 4,
    /// [`Error::BadMapHeader`] for a compact header whose two big-pcluster bits disagree,
    /// [`Error::UnsupportedLclusterBits`] when the lcluster size cannot be described by
    /// the chosen index format.
    pub fn decode(&self, format: IndexFormat, blkszbits: u8) -> Result<CompressionMap, Error> {
        if self.is_whole_file_fragment() {
            return Ok(CompressionMap::Fragment {
                offset: self.as_u64() & !(1 << 63),
            });
        }
        let advise = self.advise();
        let lcluster_bits =
            blkszbits
                .checked_add(self.h_clusterbits & 0xF)
                .ok_or(Error::Overflow {
                    what: "lclusterbits",
                })?;
        if format == IndexFormat::Full && advise.contains(MapAdvise::EXTENTS) {
            let record_size = self.extent_record_size();
            let (count, lcluster_bits) = if record_size > 8 {
                (Some(self.extent_count()), None)
            } else {
                (None, Some(lcluster_bits))
            };
            return Ok(CompressionMap::Extents(ExtentMap {
                advise,
                record_size,
                count,
                lcluster_bits,
            }));
        }
        let head1 = self.h_algorithmtype & 0xF;
        let head2 = self.h_algorithmtype >> 4;
        let head1 = Algorithm::from_id(head1).ok_or(Error::UnsupportedAlgorithm { id: head1 })?;
        let head2 = Algorithm::from_id(head2).ok_or(Error::UnsupportedAlgorithm { id: head2 })?;
        let (fragment_offset, inline_size) = if advise.contains(MapAdvise::FRAGMENT_PCLUSTER) {
            (Some(self.h_fragmentoff.get()), None)
        } else if advise.contains(MapAdvise::INLINE_PCLUSTER) {
            (None, Some(self.idata_size()))
        } else {
            (None, None)
        };
        if format == IndexFormat::Compact {
            let big1 = advise.contains(MapAdvise::BIG_PCLUSTER_1);
            let big2 = advise.contains(MapAdvise::BIG_PCLUSTER_2);
            if big1 != big2 {
                return Err(Error::BadMapHeader {
                    what: "compact big pcluster 1/2 bits disagree",
                    advise: advise.bits(),
                });
            }
            if lcluster_bits > COMPACT_MAX_LCLUSTER_BITS
                || (advise.contains(MapAdvise::COMPACTED_2B)
                    && lcluster_bits > COMPACT_2B_MAX_LCLUSTER_BITS)
            {
                return Err(Error::UnsupportedLclusterBits { lcluster_bits });
            }
        } else if lcluster_bits > 30 {
            // Far beyond anything the kernel maps (12 MiB extents); keeps shifts sane.
            return Err(Error::UnsupportedLclusterBits { lcluster_bits });
        }
        Ok(CompressionMap::Lclusters(LclusterMap {
            format,
            advise,
            head1,
            head2,
            lcluster_bits,
            fragment_offset,
            inline_size,
        }))
    }
}

/// What a [`MapHeader`] says about the file's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionMap {
    /// The whole file is a fragment of the packed inode, at this byte offset (63 bits).
    Fragment {
        /// Byte offset of the file's data in the packed inode.
        offset: u64,
    },
    /// The file is described by lcluster indexes (full or compact).
    Lclusters(LclusterMap),
    /// The file is described by encoded extent records (48-bit layout).
    Extents(ExtentMap),
}

/// A decoded map header for lcluster-index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LclusterMap {
    /// The index layout.
    pub format: IndexFormat,
    /// The advise bits.
    pub advise: MapAdvise,
    /// Algorithm of HEAD1 pclusters.
    pub head1: Algorithm,
    /// Algorithm of HEAD2 pclusters.
    pub head2: Algorithm,
    /// `log2` of the lcluster size.
    pub lcluster_bits: u8,
    /// With FRAGMENT_PCLUSTER: the tail's offset in the packed inode (low 32 bits; with the
    /// full layout the high 32 bits are the tail HEAD lcluster's `blkaddr`).
    pub fragment_offset: Option<u32>,
    /// With INLINE_PCLUSTER (and no fragment): the inline tail pcluster's size.
    pub inline_size: Option<u16>,
}

impl LclusterMap {
    /// Whether HEAD1 pclusters may span several blocks.
    pub fn big_pcluster_1(&self) -> bool {
        self.advise.contains(MapAdvise::BIG_PCLUSTER_1)
    }

    /// Whether HEAD2/PLAIN pclusters may span several blocks.
    pub fn big_pcluster_2(&self) -> bool {
        self.advise.contains(MapAdvise::BIG_PCLUSTER_2)
    }

    /// The lcluster size in bytes.
    pub fn lcluster_size(&self) -> u64 {
        1 << self.lcluster_bits
    }

    /// Cross-check against the superblock like `z_erofs_fill_inode_lazy`: big pclusters
    /// need the `BIG_PCLUSTER` feature. (Whether an algorithm is available is checked per
    /// pcluster, see [`AlgorithmSet::require`](crate::compress::AlgorithmSet::require) and [`HeadKind::algorithm`](crate::compress::HeadKind::algorithm).)
    ///
    /// # Errors
    ///
    /// [`Error::BadMapHeader`].
    pub fn check_superblock(&self, big_pcluster_feature: bool) -> Result<(), Error> {
        if !big_pcluster_feature && (self.big_pcluster_1() || self.big_pcluster_2()) {
            return Err(Error::BadMapHeader {
                what: "big pcluster advise without the BIG_PCLUSTER feature",
                advise: self.advise.bits(),
            });
        }
        Ok(())
    }
}

/// A decoded map header for encoded-extent files ([`MapAdvise::EXTENTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentMap {
    /// The advise bits (bits 1–2 are the record size, not big-pcluster bits).
    pub advise: MapAdvise,
    /// Record size: 4, 8, 16 or 32 bytes.
    pub record_size: u8,
    /// With 16- and 32-byte records: the number of extents.
    pub count: Option<u64>,
    /// With 4- and 8-byte records: `log2` of the fixed logical length of each extent (all
    /// but the last are exactly that long; the count follows from `i_size`).
    pub lcluster_bits: Option<u8>,
}

impl ExtentMap {
    /// Offset of the first extent record relative to the map header's start:
    /// `round_up(8, record_size)` (records are aligned to their size within the inode).
    ///
    /// `header_pos` is the absolute byte offset of the map header (8-aligned).
    pub fn records_offset(&self, header_pos: u64) -> Result<u64, Error> {
        check_record_size(self)?;
        let end = header_pos.checked_add(8).ok_or(Error::Overflow {
            what: "extent records",
        })?;
        let r = u64::from(self.record_size);
        let aligned = end.div_ceil(r).checked_mul(r).ok_or(Error::Overflow {
            what: "extent records",
        })?;
        aligned.checked_sub(header_pos).ok_or(Error::Overflow {
            what: "extent records",
        })
    }

    /// Number of extent records for a file of `i_size` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`] if `lcluster_bits` is out of range.
    pub fn record_count(&self, i_size: u64) -> Result<u64, Error> {
        match (self.count, self.lcluster_bits) {
            (Some(n), _) => Ok(n),
            (None, Some(bits)) => {
                let size =
                    1u64.checked_shl(u32::from(bits))
                        .ok_or(Error::UnsupportedLclusterBits {
                            lcluster_bits: bits,
                        })?;
                Ok(i_size.div_ceil(size))
            }
            (None, None) => Ok(0),
        }
    }
}

pub(super) fn check_record_size(map: &ExtentMap) -> Result<(), Error> {
    if matches!(map.record_size, 4 | 8 | 16 | 32) {
        Ok(())
    } else {
        Err(Error::BadMapHeader {
            what: "extent record size is not 4, 8, 16 or 32",
            advise: map.advise.bits(),
        })
    }
}
