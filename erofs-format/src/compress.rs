//! Compressed files: the map header, lcluster indexes (full and compact), encoded extents,
//! and the per-algorithm configuration records that follow the superblock.
//!
//! A compressed inode (data layout `COMPRESSED_FULL` = 1 or `COMPRESSED_COMPACT` = 3) splits
//! its logical data into *lclusters* of `1 << lclusterbits` bytes and its stored data into
//! *pclusters* (physical clusters, one or more blocks each). After the inode and its inline
//! xattrs, at `round_up(inode_end, 8)`, comes an 8-byte [`MapHeader`], then either
//!
//! * full indexes ([`LclusterIndex`], 8 bytes per lcluster) starting 8 bytes after the header
//!   ([`FullIndexes`]), or
//! * compact indexes: bit-packed "packs" of 2 entries in 8 bytes (`compacted_4B`) or
//!   16 entries in 32 bytes (`compacted_2B`), starting right after the header
//!   ([`CompactIndexes`], [`CompactPack`]), or
//! * with the 48-bit layout of erofs-utils 1.9, encoded extent records
//!   ([`Extent`], [`EncodedExtents`]) instead of lcluster indexes (FULL layout plus
//!   [`MapAdvise::EXTENTS`]).
//!
//! The decoders here mirror `fs/erofs/zmap.c` (and erofs-utils `lib/zmap.c`), which is the
//! authority on what each bit means; they decode and validate metadata only and never
//! decompress. Every function takes untrusted bytes and returns an [`Error`] instead of
//! panicking.
//!
//! The superblock side lives here too: [`AlgorithmSet`] (`available_compr_algs`),
//! [`MetadataRecords`] (the `le16 length + body` records that follow the superblock) and
//! [`CompressionConfigs::parse`], which validates each algorithm's record like
//! `z_erofs_parse_cfgs` does at mount time.
//!
//! ```
//! use erofs_format::compress::{IndexFormat, MapHeader, CompressionMap, MapAdvise};
//! use zerocopy::FromBytes;
//!
//! // A map header for 4 KiB lclusters, LZ4, compact 2B indexes, 100 bytes of inline tail.
//! let raw = [0, 0, 100, 0, 0x09, 0, 0x00, 0x00];
//! let header = MapHeader::read_from_bytes(&raw).unwrap();
//! match header.decode(IndexFormat::Compact, 12).unwrap() {
//!     CompressionMap::Lclusters(map) => {
//!         assert_eq!(map.lcluster_bits, 12);
//!         assert!(map.advise.contains(MapAdvise::COMPACTED_2B | MapAdvise::INLINE_PCLUSTER));
//!         assert_eq!(map.inline_size, Some(100));
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

use core::mem::{offset_of, size_of};

use bitflags::bitflags;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::Error;

/// Largest pcluster the kernel accepts (`Z_EROFS_PCLUSTER_MAX_SIZE`, 1 MiB).
pub const PCLUSTER_MAX_SIZE: u32 = 1 << 20;
/// Largest decoded extent the kernel accepts (`Z_EROFS_PCLUSTER_MAX_DSIZE`, 12 MiB).
pub const PCLUSTER_MAX_DSIZE: u32 = 12 << 20;
/// Largest LZMA dictionary (`Z_EROFS_LZMA_MAX_DICT_SIZE`, 8 MiB).
pub const LZMA_MAX_DICT_SIZE: u32 = 8 * PCLUSTER_MAX_SIZE;
/// Smallest LZMA dictionary the kernel accepts.
pub const LZMA_MIN_DICT_SIZE: u32 = 4096;
/// Largest DEFLATE window (`MAX_WBITS`).
pub const DEFLATE_MAX_WINDOW_BITS: u8 = 15;
/// Largest zstd `windowlog` field: `ilog2(1 MiB) - 10`.
pub const ZSTD_MAX_WINDOW_LOG: u8 = 10;
/// Bytes between the start of the map header and the first full index
/// (`Z_EROFS_LEGACY_MAP_HEADER_SIZE`: the 8-byte header and 8 reserved bytes).
pub const FULL_INDEX_OFFSET: u64 = 16;
/// Largest lcluster size (as `log2`) compact indexes can describe.
pub const COMPACT_MAX_LCLUSTER_BITS: u8 = 14;
/// Largest lcluster size (as `log2`) `compacted_2B` packs can describe.
pub const COMPACT_2B_MAX_LCLUSTER_BITS: u8 = 12;
/// The bit of a NONHEAD lcluster's first delta that marks a compressed block count
/// (`Z_EROFS_LI_D0_CBLKCNT`).
pub const D0_CBLKCNT: u16 = 1 << 11;
/// Bit 7 of `h_clusterbits`: the whole file lives in the packed inode
/// (`Z_EROFS_FRAGMENT_INODE_BIT`).
pub const FRAGMENT_INODE_BIT: u8 = 7;

/// A compression algorithm id as stored in `h_algorithmtype` and `available_compr_algs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// LZ4 (`Z_EROFS_COMPRESSION_LZ4`).
    Lz4 = 0,
    /// MicroLZMA (`Z_EROFS_COMPRESSION_LZMA`).
    Lzma = 1,
    /// Raw DEFLATE (`Z_EROFS_COMPRESSION_DEFLATE`).
    Deflate = 2,
    /// Zstandard (`Z_EROFS_COMPRESSION_ZSTD`).
    Zstd = 3,
}

impl Algorithm {
    /// All algorithms in id order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Lz4,
        Algorithm::Lzma,
        Algorithm::Deflate,
        Algorithm::Zstd,
    ];

    /// The algorithm with on-disk id `id`, if there is one.
    pub const fn from_id(id: u8) -> Option<Algorithm> {
        match id {
            0 => Some(Algorithm::Lz4),
            1 => Some(Algorithm::Lzma),
            2 => Some(Algorithm::Deflate),
            3 => Some(Algorithm::Zstd),
            _ => None,
        }
    }

    /// The on-disk id.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The name mkfs.erofs and the kernel use (`lz4`, `lzma`, `deflate`, `zstd`).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Lz4 => "lz4",
            Algorithm::Lzma => "lzma",
            Algorithm::Deflate => "deflate",
            Algorithm::Zstd => "zstd",
        }
    }

    /// This algorithm's bit in [`AlgorithmSet`].
    pub const fn bit(self) -> AlgorithmSet {
        AlgorithmSet::from_bits_retain(1 << self as u8)
    }
}

impl core::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

bitflags! {
    /// The superblock's `available_compr_algs` bitmap (valid with `COMPR_CFGS`): bit `n` set
    /// means algorithm id `n` is used and has a configuration record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AlgorithmSet: u16 {
        /// LZ4.
        const LZ4 = 1 << 0;
        /// MicroLZMA.
        const LZMA = 1 << 1;
        /// DEFLATE.
        const DEFLATE = 1 << 2;
        /// Zstandard.
        const ZSTD = 1 << 3;
    }
}

impl AlgorithmSet {
    /// Whether `algorithm` is in the set.
    pub const fn has(self, algorithm: Algorithm) -> bool {
        self.bits() & (1 << algorithm as u8) != 0
    }

    /// `Ok` if `algorithm` is in the set. The kernel refuses a pcluster whose algorithm
    /// the superblock does not list (`-EFSCORRUPTED`).
    ///
    /// # Errors
    ///
    /// [`Error::AlgorithmNotAvailable`].
    pub fn require(self, algorithm: Algorithm) -> Result<(), Error> {
        if self.has(algorithm) {
            Ok(())
        } else {
            Err(Error::AlgorithmNotAvailable { id: algorithm.id() })
        }
    }

    /// The algorithms in the set, in id order (the order of their configuration records).
    pub fn algorithms(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL.into_iter().filter(move |a| self.has(*a))
    }
}

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
    /// `BIG_PCLUSTER` feature) and [`AlgorithmSet::require`] (per pcluster). Linux 6.12 does not
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
    /// pcluster, see [`AlgorithmSet::require`] and [`HeadKind::algorithm`].)
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
        Ok(aligned - header_pos)
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

fn check_record_size(map: &ExtentMap) -> Result<(), Error> {
    if matches!(map.record_size, 4 | 8 | 16 | 32) {
        Ok(())
    } else {
        Err(Error::BadMapHeader {
            what: "extent record size is not 4, 8, 16 or 32",
            advise: map.advise.bits(),
        })
    }
}

/// The type of an lcluster (bits 0–1 of `di_advise`, `Z_EROFS_LCLUSTER_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LclusterType {
    /// Head of an uncompressed pcluster.
    Plain = 0,
    /// Head of a pcluster compressed with the HEAD1 algorithm.
    Head1 = 1,
    /// Continuation of the pcluster that started at an earlier HEAD.
    NonHead = 2,
    /// Head of a pcluster compressed with the HEAD2 algorithm.
    Head2 = 3,
}

impl LclusterType {
    /// The type encoded in the low two bits of `bits`.
    pub const fn from_bits(bits: u16) -> LclusterType {
        match bits & 3 {
            0 => LclusterType::Plain,
            1 => LclusterType::Head1,
            2 => LclusterType::NonHead,
            _ => LclusterType::Head2,
        }
    }

    /// Whether this lcluster starts a pcluster (PLAIN, HEAD1, HEAD2).
    pub const fn is_head(self) -> bool {
        !matches!(self, LclusterType::NonHead)
    }
}

/// The type of a HEAD lcluster: which decoder its pcluster needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// Stored uncompressed (shifted or interlaced).
    Plain,
    /// Compressed with the map's HEAD1 algorithm.
    Head1,
    /// Compressed with the map's HEAD2 algorithm.
    Head2,
}

impl HeadKind {
    /// The algorithm of this pcluster under `map`, `None` for PLAIN.
    pub fn algorithm(self, map: &LclusterMap) -> Option<Algorithm> {
        match self {
            HeadKind::Plain => None,
            HeadKind::Head1 => Some(map.head1),
            HeadKind::Head2 => Some(map.head2),
        }
    }

    /// The same type as an [`LclusterType`].
    pub fn lcluster_type(self) -> LclusterType {
        match self {
            HeadKind::Plain => LclusterType::Plain,
            HeadKind::Head1 => LclusterType::Head1,
            HeadKind::Head2 => LclusterType::Head2,
        }
    }

    fn from_type(t: LclusterType) -> Option<HeadKind> {
        match t {
            LclusterType::Plain => Some(HeadKind::Plain),
            LclusterType::Head1 => Some(HeadKind::Head1),
            LclusterType::Head2 => Some(HeadKind::Head2),
            LclusterType::NonHead => None,
        }
    }
}

/// One full lcluster index (8 bytes), `COMPRESSED_FULL` layout.
///
/// `di_u` is a union: `blkaddr` for HEAD lclusters, `delta[0]` (low half) and `delta[1]`
/// (high half) for NONHEAD ones. Use [`LclusterIndex::decode`] for the meaning.
#[doc(alias = "z_erofs_lcluster_index")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LclusterIndex {
    /// Bits 0–1: [`LclusterType`]; bit 15: partial reference (dedupe).
    pub di_advise: U16,
    /// HEAD: where the extent starts within this lcluster.
    pub di_clusterofs: U16,
    /// HEAD: pcluster block address; NONHEAD: `delta[0]`, `delta[1]`.
    pub di_u: U32,
}

const _: () = assert!(size_of::<LclusterIndex>() == 8);
const _: () = assert!(offset_of!(LclusterIndex, di_clusterofs) == 2);
const _: () = assert!(offset_of!(LclusterIndex, di_u) == 4);

/// Bit 15 of `di_advise`: the HEAD pcluster is referenced only partially (`Z_EROFS_LI_PARTIAL_REF`).
pub const LI_PARTIAL_REF: u16 = 1 << 15;

impl LclusterIndex {
    /// The lcluster type.
    pub fn lcluster_type(&self) -> LclusterType {
        LclusterType::from_bits(self.di_advise.get())
    }

    /// Whether the partial-reference bit is set.
    pub fn is_partial_ref(&self) -> bool {
        self.di_advise.get() & LI_PARTIAL_REF != 0
    }

    /// `di_u.blkaddr` (HEAD lclusters).
    pub fn blkaddr(&self) -> u32 {
        self.di_u.get()
    }

    /// `di_u.delta` (NONHEAD lclusters).
    pub fn delta(&self) -> [u16; 2] {
        let v = self.di_u.get();
        [v as u16, (v >> 16) as u16]
    }

    /// Decode as lcluster `lcn` of a map with the given parameters (`z_erofs_load_full_lcluster`
    /// plus the common checks of `z_erofs_load_lcluster_from_disk`).
    ///
    /// # Errors
    ///
    /// [`Error::BadLcluster`] for a HEAD `clusterofs` ≥ the lcluster size, or a compressed
    /// block count on a file without big pclusters.
    pub fn decode(&self, lcn: u64, map: &LclusterMap) -> Result<Lcluster, Error> {
        let kind = self.lcluster_type();
        if kind == LclusterType::NonHead {
            let [d0, d1] = self.delta();
            if d0 & D0_CBLKCNT != 0 {
                if !(map.big_pcluster_1() || map.big_pcluster_2()) {
                    return Err(Error::BadLcluster {
                        lcn,
                        what: "compressed block count without big pcluster",
                    });
                }
                return Ok(Lcluster::NonHead {
                    lookback: 1,
                    lookahead: d1,
                    compressed_blocks: Some(d0 & !D0_CBLKCNT),
                });
            }
            return Ok(Lcluster::NonHead {
                lookback: d0,
                lookahead: d1,
                compressed_blocks: None,
            });
        }
        let kind = HeadKind::from_type(kind).unwrap_or(HeadKind::Plain); // NONHEAD returned above
        let cluster_offset = self.di_clusterofs.get();
        check_clusterofs(lcn, cluster_offset, map.lcluster_bits)?;
        Ok(Lcluster::Head {
            kind,
            cluster_offset,
            blkaddr: self.blkaddr(),
            partial_ref: self.is_partial_ref(),
        })
    }
}

fn check_clusterofs(lcn: u64, cluster_offset: u16, lcluster_bits: u8) -> Result<(), Error> {
    if u64::from(cluster_offset) >= 1u64 << lcluster_bits.min(63) {
        return Err(Error::BadLcluster {
            lcn,
            what: "HEAD cluster offset beyond the lcluster",
        });
    }
    Ok(())
}

/// One decoded lcluster, the same for both index layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lcluster {
    /// The first lcluster of a pcluster (PLAIN, HEAD1 or HEAD2).
    Head {
        /// PLAIN, HEAD1 or HEAD2.
        kind: HeadKind,
        /// Byte offset within this lcluster where the pcluster's decoded data starts.
        cluster_offset: u16,
        /// Block address of the pcluster (for compact indexes computed from the pack base).
        blkaddr: u32,
        /// The pcluster is only partially referenced (dedupe; full indexes only).
        partial_ref: bool,
    },
    /// An lcluster inside the pcluster that started at an earlier HEAD.
    NonHead {
        /// Distance back to the HEAD lcluster (`delta[0]`; 1 on a CBLKCNT lcluster).
        lookback: u16,
        /// Distance forward to the next HEAD lcluster (`delta[1]`).
        lookahead: u16,
        /// On the first NONHEAD after a big-pcluster HEAD: the pcluster's size in blocks.
        compressed_blocks: Option<u16>,
    },
}

impl Lcluster {
    /// The lcluster type.
    pub fn lcluster_type(&self) -> LclusterType {
        match *self {
            Lcluster::Head { kind, .. } => kind.lcluster_type(),
            Lcluster::NonHead { .. } => LclusterType::NonHead,
        }
    }
}

/// The full lcluster indexes of one inode: a checked view over `count` 8-byte entries.
#[derive(Debug, Clone, Copy)]
pub struct FullIndexes<'a> {
    entries: &'a [LclusterIndex],
    map: LclusterMap,
}

impl<'a> FullIndexes<'a> {
    /// View `count` indexes at the start of `bytes` (which must begin at
    /// `map header position + 16`, see [`FULL_INDEX_OFFSET`]). The kernel and mkfs.erofs
    /// use `count = ceil(i_size / block size)`.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `bytes` is shorter than `8 * count`.
    pub fn new(bytes: &'a [u8], count: u64, map: &LclusterMap) -> Result<Self, Error> {
        let count_usize = usize::try_from(count).map_err(|_| Error::Overflow {
            what: "full index count",
        })?;
        let (entries, _) = <[LclusterIndex]>::ref_from_prefix_with_elems(bytes, count_usize)
            .map_err(|_| Error::Truncated {
                what: "full lcluster indexes",
                needed: count.saturating_mul(8),
                available: bytes.len() as u64,
            })?;
        Ok(FullIndexes { entries, map: *map })
    }

    /// Number of lclusters.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether there are no lclusters.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw entries.
    pub fn raw(&self) -> &'a [LclusterIndex] {
        self.entries
    }

    /// Decode lcluster `lcn`.
    ///
    /// # Errors
    ///
    /// [`Error::LclusterOutOfRange`], or the errors of [`LclusterIndex::decode`].
    pub fn get(&self, lcn: u64) -> Result<Lcluster, Error> {
        let entry = usize::try_from(lcn)
            .ok()
            .and_then(|i| self.entries.get(i))
            .ok_or(Error::LclusterOutOfRange {
                lcn,
                count: self.len(),
            })?;
        entry.decode(lcn, &self.map)
    }

    /// Decode every lcluster in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Lcluster, Error>> + '_ {
        (0..self.len()).map(move |lcn| self.get(lcn))
    }
}

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
                return Err(Error::BadCompactPack { len: len as u32 });
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
        let n = self.bytes.len();
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[n - 4..]); // len is 8 or 32 (checked in new)
        u32::from_le_bytes(b)
    }

    fn lobits(&self) -> u32 {
        u32::from(self.lcluster_bits.max(12))
    }

    fn encodebits(&self) -> usize {
        (self.bytes.len() - 4) * 8 / self.len()
    }

    /// Entry `i`'s raw `(lo, type)` pair: `lo` is the cluster offset (HEAD), a delta or a
    /// CBLKCNT value (NONHEAD). Returns `None` for `i >= len()`.
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
                let (plo, pkind) = self
                    .raw_entry(j as usize)
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
                let (plo, pkind) = self
                    .raw_entry(j as usize)
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
        let initial_4b = ((32 - ebase % 32) / 4) & 7;
        let count_2b = if advise.contains(MapAdvise::COMPACTED_2B) && initial_4b < total {
            (total - initial_4b) / 16 * 16
        } else {
            0
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
        let tail = self.total - self.initial_4b - self.count_2b;
        (self.initial_4b * 4)
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
            (lcn * 4, 2)
        } else {
            let rest = lcn - self.initial_4b;
            let start_2b = self.initial_4b * 4; // initial_4b <= 7
            if rest < self.count_2b {
                (start_2b.checked_add(rest.checked_mul(2)?)?, 1)
            } else {
                let start_4b = start_2b.checked_add(self.count_2b.checked_mul(2)?)?;
                (
                    start_4b.checked_add((rest - self.count_2b).checked_mul(4)?)?,
                    2,
                )
            }
        };
        let pack_len: u64 = if shift == 2 { 8 } else { 32 };
        // Pack boundaries are aligned in the absolute address space (ebase is 8-aligned and
        // 2B packs start 32-aligned), so align there and convert back.
        let abs = self.ebase.checked_add(pos)?;
        let within = abs % pack_len;
        let pack_start = pos.checked_sub(within)?;
        Some((pack_start, pack_len as usize, (within >> shift) as usize))
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

/// Bit 27 of `plen`: the extent is referenced partially (`Z_EROFS_EXTENT_PLEN_PARTIAL`).
pub const EXTENT_PLEN_PARTIAL: u32 = 1 << 27;
/// First bit of the format field of `plen` (`Z_EROFS_EXTENT_PLEN_FMT_BIT`).
pub const EXTENT_PLEN_FMT_BIT: u32 = 28;
/// Mask of the encoded length in `plen` (`Z_EROFS_EXTENT_PLEN_MASK`).
pub const EXTENT_PLEN_MASK: u32 = (PCLUSTER_MAX_SIZE << 1) - 1;

/// One encoded extent record (48-bit layout). On disk only the first
/// [`ExtentMap::record_size`] bytes of it are stored per record (4, 8, 16 or 32).
#[doc(alias = "z_erofs_extent")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Extent {
    /// Encoded length, partial bit, format (0 = stored, `n` = algorithm `n - 1`).
    pub plen: U32,
    /// Physical byte offset (low 32 bits).
    pub pstart_lo: U32,
    /// Physical byte offset (high 32 bits).
    pub pstart_hi: U32,
    /// Logical byte offset (low 32 bits).
    pub lstart_lo: U32,
    /// Logical byte offset (high 32 bits, for files of 4 GiB and more).
    pub lstart_hi: U32,
    /// Reserved.
    pub reserved: [u8; 12],
}

const _: () = assert!(size_of::<Extent>() == 32);
const _: () = assert!(offset_of!(Extent, pstart_lo) == 4);
const _: () = assert!(offset_of!(Extent, pstart_hi) == 8);
const _: () = assert!(offset_of!(Extent, lstart_lo) == 12);
const _: () = assert!(offset_of!(Extent, lstart_hi) == 16);

/// How an extent's data is stored (from the format bits of `plen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentEncoding {
    /// Stored uncompressed (shifted, or interlaced if the map says so and it is aligned).
    Stored,
    /// Compressed with this algorithm.
    Compressed(Algorithm),
    /// A format id this crate does not know (`fmt - 1`).
    Unknown(u8),
}

/// A decoded extent record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedExtent {
    /// Logical start, when the record stores it (16/32-byte records); otherwise
    /// `index << lcluster_bits`.
    pub lstart: Option<u64>,
    /// Physical byte offset (for 4-byte records, accumulated from the base).
    pub pstart: u64,
    /// The raw `plen` field.
    pub plen: u32,
}

impl EncodedExtent {
    /// The encoded length in bytes (0 for an unmapped extent, or the fragment offset for a
    /// final fragment extent).
    pub fn length(&self) -> u32 {
        self.plen & EXTENT_PLEN_MASK
    }

    /// Whether the extent is partially referenced.
    pub fn is_partial_ref(&self) -> bool {
        self.plen & EXTENT_PLEN_PARTIAL != 0
    }

    /// How the data is encoded.
    pub fn encoding(&self) -> ExtentEncoding {
        match (self.plen >> EXTENT_PLEN_FMT_BIT) as u8 {
            0 => ExtentEncoding::Stored,
            f => match Algorithm::from_id(f - 1) {
                Some(a) => ExtentEncoding::Compressed(a),
                None => ExtentEncoding::Unknown(f - 1),
            },
        }
    }
}

/// The encoded extent records of one inode.
#[derive(Debug, Clone, Copy)]
pub struct EncodedExtents<'a> {
    bytes: &'a [u8],
    record_size: usize,
    count: u64,
    base: u64,
}

impl<'a> EncodedExtents<'a> {
    /// View `count` records of `map.record_size` bytes. `bytes` starts at the records
    /// ([`ExtentMap::records_offset`]); with 4-byte records it starts with the 8-byte base
    /// physical offset.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] or [`Error::Overflow`].
    pub fn new(bytes: &'a [u8], map: &ExtentMap, count: u64) -> Result<Self, Error> {
        check_record_size(map)?;
        let record_size = usize::from(map.record_size);
        let (base, body) = if record_size <= 4 {
            let (b, rest) = U32x2::read_from_prefix(bytes).map_err(|_| Error::Truncated {
                what: "extent base address",
                needed: 8,
                available: bytes.len() as u64,
            })?;
            (
                u64::from(b.0[0].get()) | u64::from(b.0[1].get()) << 32,
                rest,
            )
        } else {
            (0, bytes)
        };
        let needed = count
            .checked_mul(record_size as u64)
            .ok_or(Error::Overflow {
                what: "extent records",
            })?;
        if (body.len() as u64) < needed {
            return Err(Error::Truncated {
                what: "extent records",
                needed,
                available: body.len() as u64,
            });
        }
        Ok(EncodedExtents {
            bytes: body,
            record_size,
            count,
            base,
        })
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn record(&self, i: u64) -> Extent {
        let mut full = [0u8; 32];
        let start = (i as usize) * self.record_size; // i < count, checked against len in new
        if let Some(src) = self.bytes.get(start..start + self.record_size) {
            full[..self.record_size].copy_from_slice(src);
        }
        Extent::read_from_bytes(&full).unwrap_or_else(|_| Extent::new_zeroed())
    }

    /// Decode every record in order (4-byte records accumulate the physical offset).
    pub fn iter(&self) -> impl Iterator<Item = EncodedExtent> + '_ {
        let mut pa = self.base;
        (0..self.count).map(move |i| {
            let e = self.record(i);
            let plen = e.plen.get();
            let (lstart, pstart) = match self.record_size {
                4 => {
                    let p = pa;
                    pa = pa.wrapping_add(u64::from(plen & EXTENT_PLEN_MASK));
                    (None, p)
                }
                8 => (None, u64::from(e.pstart_lo.get())),
                16 => (
                    Some(u64::from(e.lstart_lo.get())),
                    u64::from(e.pstart_lo.get()) | u64::from(e.pstart_hi.get()) << 32,
                ),
                _ => (
                    Some(u64::from(e.lstart_lo.get()) | u64::from(e.lstart_hi.get()) << 32),
                    u64::from(e.pstart_lo.get()) | u64::from(e.pstart_hi.get()) << 32,
                ),
            };
            EncodedExtent {
                lstart,
                pstart,
                plen,
            }
        })
    }
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct U32x2([U32; 2]);

/// The LZ4 configuration record.
#[doc(alias = "z_erofs_lz4_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Lz4Config {
    /// LZ4 match distance limit (0 = 64 KiB).
    pub max_distance: U16,
    /// Largest pcluster in blocks (0 is treated as 1).
    pub max_pclusterblks: U16,
    /// Reserved.
    pub reserved: [u8; 10],
}

const _: () = assert!(size_of::<Lz4Config>() == 14);
const _: () = assert!(offset_of!(Lz4Config, max_pclusterblks) == 2);

/// The MicroLZMA configuration record.
#[doc(alias = "z_erofs_lzma_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LzmaConfig {
    /// Dictionary size in bytes (4 KiB to 8 MiB).
    pub dict_size: U32,
    /// Format, must be 0.
    pub format: U16,
    /// Reserved.
    pub reserved: [u8; 8],
}

const _: () = assert!(size_of::<LzmaConfig>() == 14);
const _: () = assert!(offset_of!(LzmaConfig, format) == 4);

/// The DEFLATE configuration record.
#[doc(alias = "z_erofs_deflate_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DeflateConfig {
    /// `log2` of the window, 8..=15.
    pub windowbits: u8,
    /// Reserved.
    pub reserved: [u8; 5],
}

const _: () = assert!(size_of::<DeflateConfig>() == 6);

/// The Zstandard configuration record.
#[doc(alias = "z_erofs_zstd_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ZstdConfig {
    /// Format, must be 0.
    pub format: u8,
    /// `windowLog - 10`.
    pub windowlog: u8,
    /// Reserved.
    pub reserved: [u8; 4],
}

const _: () = assert!(size_of::<ZstdConfig>() == 6);
const _: () = assert!(offset_of!(ZstdConfig, windowlog) == 1);

fn bad_config(algorithm: Algorithm, what: &'static str, value: u32) -> Error {
    Error::BadCompressionConfig {
        algorithm: algorithm.id(),
        what,
        value,
    }
}

fn read_config<T: FromBytes + KnownLayout + Immutable>(
    algorithm: Algorithm,
    body: &[u8],
) -> Result<T, Error> {
    T::read_from_prefix(body).map(|(t, _)| t).map_err(|_| {
        bad_config(
            algorithm,
            "record shorter than the struct",
            body.len() as u32,
        )
    })
}

impl Lz4Config {
    /// Parse and validate a record body (`z_erofs_load_lz4_config`): at least 14 bytes and
    /// `max_pclusterblks <= 1 MiB >> blkszbits`.
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8], blkszbits: u8) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Lz4, body)?;
        let max = PCLUSTER_MAX_SIZE >> blkszbits.min(20);
        if u32::from(c.max_pclusterblks.get()) > max {
            return Err(bad_config(
                Algorithm::Lz4,
                "max_pclusterblks over 1 MiB",
                c.max_pclusterblks.get().into(),
            ));
        }
        Ok(c)
    }

    /// The effective largest pcluster in blocks (0 on disk means 1).
    pub fn max_pcluster_blocks(&self) -> u16 {
        self.max_pclusterblks.get().max(1)
    }
}

impl LzmaConfig {
    /// Parse and validate a record body (`z_erofs_load_lzma_config`): at least 14 bytes,
    /// `format == 0`, `4 KiB <= dict_size <= 8 MiB`.
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Lzma, body)?;
        if c.format.get() != 0 {
            return Err(bad_config(
                Algorithm::Lzma,
                "unknown format",
                c.format.get().into(),
            ));
        }
        let d = c.dict_size.get();
        if !(LZMA_MIN_DICT_SIZE..=LZMA_MAX_DICT_SIZE).contains(&d) {
            return Err(bad_config(Algorithm::Lzma, "dict_size out of range", d));
        }
        Ok(c)
    }
}

impl DeflateConfig {
    /// Parse and validate a record body (`z_erofs_load_deflate_config`): at least 6 bytes
    /// and `windowbits <= 15`.
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Deflate, body)?;
        if c.windowbits > DEFLATE_MAX_WINDOW_BITS {
            return Err(bad_config(
                Algorithm::Deflate,
                "windowbits over 15",
                c.windowbits.into(),
            ));
        }
        Ok(c)
    }
}

impl ZstdConfig {
    /// Parse and validate a record body (`z_erofs_load_zstd_config`): at least 6 bytes,
    /// `format == 0`, `windowlog <= 10` (a window of at most 1 MiB).
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Zstd, body)?;
        if c.format != 0 {
            return Err(bad_config(
                Algorithm::Zstd,
                "unknown format",
                c.format.into(),
            ));
        }
        if c.windowlog > ZSTD_MAX_WINDOW_LOG {
            return Err(bad_config(
                Algorithm::Zstd,
                "windowlog over 1 MiB",
                c.windowlog.into(),
            ));
        }
        Ok(c)
    }

    /// The window size in bytes: `1 << (windowlog + 10)`.
    pub fn window_size(&self) -> u32 {
        1 << (u32::from(self.windowlog.min(ZSTD_MAX_WINDOW_LOG)) + 10)
    }
}

/// The variable-length metadata records after the superblock (kernel-abi §1.5): at each
/// 4-byte aligned cursor a `le16` length (0 means 65536), then that many bytes.
///
/// Used for compression configuration records and long xattr name prefixes. The records
/// may cross block boundaries; this view needs them in one contiguous buffer.
#[derive(Debug, Clone)]
pub struct MetadataRecords<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> MetadataRecords<'a> {
    /// Records in `bytes`, the first at byte `start` (rounded up to 4). Offsets are counted
    /// from the start of `bytes`, which must itself be 4-byte aligned in the image (for
    /// example the whole image, or a block).
    pub fn new(bytes: &'a [u8], start: usize) -> Self {
        MetadataRecords { bytes, pos: start }
    }

    /// Where the next record will be looked for (before rounding).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Read the next record's body.
    ///
    /// # Errors
    ///
    /// [`Error::BadMetadataRecord`] if the length field or the body runs past the buffer.
    pub fn next_record(&mut self) -> Result<&'a [u8], Error> {
        let start = self
            .pos
            .checked_next_multiple_of(4)
            .ok_or(Error::Overflow {
                what: "metadata record",
            })?;
        let bad = |len: u32| Error::BadMetadataRecord {
            offset: start as u64,
            len,
        };
        let len_bytes = start
            .checked_add(2)
            .and_then(|e| self.bytes.get(start..e))
            .ok_or(bad(0))?;
        let len = match u16::from_le_bytes([len_bytes[0], len_bytes[1]]) {
            0 => 65536usize,
            n => usize::from(n),
        };
        let body_start = start + 2; // checked above
        let body = body_start
            .checked_add(len)
            .and_then(|e| self.bytes.get(body_start..e))
            .ok_or(bad(len as u32))?;
        self.pos = body_start + len;
        Ok(body)
    }
}

impl<'a> Iterator for MetadataRecords<'a> {
    type Item = Result<&'a [u8], Error>;

    /// Yields records until the buffer is exhausted; after an error, yields nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos.checked_next_multiple_of(4)?;
        if start >= self.bytes.len() {
            return None;
        }
        let r = self.next_record();
        if r.is_err() {
            self.pos = usize::MAX;
        }
        Some(r)
    }
}

/// The per-algorithm configuration of a filesystem, as the kernel reads it at mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompressionConfigs {
    /// The algorithms in use.
    pub available: AlgorithmSet,
    /// LZ4 parameters (also present, synthesised, on images without `COMPR_CFGS`).
    pub lz4: Option<Lz4Config>,
    /// MicroLZMA parameters.
    pub lzma: Option<LzmaConfig>,
    /// DEFLATE parameters.
    pub deflate: Option<DeflateConfig>,
    /// Zstandard parameters.
    pub zstd: Option<ZstdConfig>,
    /// Byte offset just past the last record (the next metadata, e.g. long xattr
    /// prefixes in older images, follows here).
    pub end: usize,
}

impl Default for AlgorithmSet {
    fn default() -> Self {
        AlgorithmSet::empty()
    }
}

impl CompressionConfigs {
    /// Without `COMPR_CFGS`: LZ4 only, one block per pcluster, and the superblock's `u1`
    /// as the LZ4 distance.
    pub fn legacy(lz4_max_distance: u16) -> Self {
        CompressionConfigs {
            available: AlgorithmSet::LZ4,
            lz4: Some(Lz4Config {
                max_distance: U16::new(lz4_max_distance),
                max_pclusterblks: U16::new(1),
                reserved: [0; 10],
            }),
            ..Self::default()
        }
    }

    /// Parse the records of `available_compr_algs` (with `COMPR_CFGS`), one per set bit in
    /// ascending order, starting at byte `start` of `bytes` (`1024 + superblock size`, with
    /// `bytes` the image from offset 0), validating each like `z_erofs_parse_cfgs`.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedAlgorithms`] for bits above the four known algorithms,
    /// [`Error::BadMetadataRecord`] or [`Error::BadCompressionConfig`] for a bad record.
    pub fn parse(
        bytes: &[u8],
        start: usize,
        available_compr_algs: u16,
        blkszbits: u8,
    ) -> Result<Self, Error> {
        let unknown = available_compr_algs & !AlgorithmSet::all().bits();
        if unknown != 0 {
            return Err(Error::UnsupportedAlgorithms { bits: unknown });
        }
        let available = AlgorithmSet::from_bits_retain(available_compr_algs);
        let mut out = CompressionConfigs {
            available,
            ..Self::default()
        };
        let mut records = MetadataRecords::new(bytes, start);
        for alg in available.algorithms() {
            let body = records.next_record()?;
            match alg {
                Algorithm::Lz4 => out.lz4 = Some(Lz4Config::parse(body, blkszbits)?),
                Algorithm::Lzma => out.lzma = Some(LzmaConfig::parse(body)?),
                Algorithm::Deflate => out.deflate = Some(DeflateConfig::parse(body)?),
                Algorithm::Zstd => out.zstd = Some(ZstdConfig::parse(body)?),
            }
        }
        out.end = records.position();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    fn header(fragoff: u32, advise: u16, alg: u8, cbits: u8) -> MapHeader {
        MapHeader {
            h_fragmentoff: U32::new(fragoff),
            h_advise: U16::new(advise),
            h_algorithmtype: alg,
            h_clusterbits: cbits,
        }
    }

    #[test]
    fn map_header_layout() {
        let h = header(0x1122_3344, 0x0026, 0x31, 0x02);
        assert_eq!(
            h.as_bytes(),
            &[0x44, 0x33, 0x22, 0x11, 0x26, 0x00, 0x31, 0x02]
        );
        assert_eq!(h.as_u64(), 0x0231_0026_1122_3344);
        assert_eq!(h.idata_size(), 0x1122);
    }

    #[test]
    fn map_header_whole_fragment() {
        let raw = 0x8000_0001_2345_6789u64.to_le_bytes();
        let h = MapHeader::read_from_bytes(&raw).unwrap();
        assert!(h.is_whole_file_fragment());
        assert_eq!(
            h.decode(IndexFormat::Compact, 12).unwrap(),
            CompressionMap::Fragment {
                offset: 0x0000_0001_2345_6789
            }
        );
    }

    #[test]
    fn map_header_lclusters() {
        let h = header(0x0064_0000, 0x000A, 0x30, 0x01);
        let CompressionMap::Lclusters(m) = h.decode(IndexFormat::Full, 12).unwrap() else {
            panic!("not lclusters")
        };
        assert_eq!(m.head1, Algorithm::Lz4);
        assert_eq!(m.head2, Algorithm::Zstd);
        assert_eq!(m.lcluster_bits, 13);
        assert_eq!(m.lcluster_size(), 8192);
        assert_eq!(m.inline_size, Some(0x64));
        assert_eq!(m.fragment_offset, None);
        assert!(m.big_pcluster_1() && !m.big_pcluster_2());
        // Fragment offset wins over the inline size.
        let h = header(0xABCD, 0x0028, 0x00, 0x00);
        let CompressionMap::Lclusters(m) = h.decode(IndexFormat::Compact, 12).unwrap() else {
            panic!("not lclusters")
        };
        assert_eq!(m.fragment_offset, Some(0xABCD));
        assert_eq!(m.inline_size, None);
    }

    #[test]
    fn map_header_errors() {
        assert_eq!(
            header(0, 0, 0x04, 0).decode(IndexFormat::Full, 12),
            Err(Error::UnsupportedAlgorithm { id: 4 })
        );
        assert_eq!(
            header(0, 0, 0x50, 0).decode(IndexFormat::Full, 12),
            Err(Error::UnsupportedAlgorithm { id: 5 })
        );
        assert!(matches!(
            header(0, 0x2, 0, 0).decode(IndexFormat::Compact, 12),
            Err(Error::BadMapHeader { advise: 2, .. })
        ));
        // The same advise is fine for full indexes.
        assert!(header(0, 0x2, 0, 0).decode(IndexFormat::Full, 12).is_ok());
        assert_eq!(
            header(0, 0, 0, 3).decode(IndexFormat::Compact, 12),
            Err(Error::UnsupportedLclusterBits { lcluster_bits: 15 })
        );
        assert_eq!(
            header(0, 1, 0, 1).decode(IndexFormat::Compact, 12),
            Err(Error::UnsupportedLclusterBits { lcluster_bits: 13 })
        );
        assert!(header(0, 0, 0, 2).decode(IndexFormat::Compact, 12).is_ok());
        assert_eq!(
            header(0, 0, 0, 15).decode(IndexFormat::Full, 250),
            Err(Error::Overflow {
                what: "lclusterbits"
            })
        );
        assert_eq!(
            header(0, 0, 0, 15).decode(IndexFormat::Full, 20),
            Err(Error::UnsupportedLclusterBits { lcluster_bits: 35 })
        );
    }

    #[test]
    fn map_header_extents() {
        // recsz 16 (bits 1-2 = 2), count in h_extents_lo/hi.
        let h = header(7, 0x0005, 0x01, 0x00);
        let CompressionMap::Extents(e) = h.decode(IndexFormat::Full, 12).unwrap() else {
            panic!("not extents")
        };
        assert_eq!(e.record_size, 16);
        assert_eq!(e.count, Some(0x1_0000_0007));
        assert_eq!(e.record_count(123).unwrap(), 0x1_0000_0007);
        assert_eq!(e.records_offset(64).unwrap(), 16);
        assert_eq!(e.records_offset(72).unwrap(), 8);
        // recsz 4: lcluster bits from h_clusterbits; bit 0 means COMPACTED_2B if compact.
        let h = header(0, 0x0001, 0, 0x04);
        let CompressionMap::Extents(e) = h.decode(IndexFormat::Full, 12).unwrap() else {
            panic!("not extents")
        };
        assert_eq!(
            (e.record_size, e.count, e.lcluster_bits),
            (4, None, Some(16))
        );
        assert_eq!(e.record_count(65537).unwrap(), 2);
        assert_eq!(e.records_offset(64).unwrap(), 8);
        let bad = ExtentMap {
            lcluster_bits: Some(200),
            ..e
        };
        assert!(bad.record_count(1).is_err());
    }

    #[test]
    fn check_superblock() {
        let CompressionMap::Lclusters(m) = header(0, 0x2, 0x32, 0)
            .decode(IndexFormat::Full, 12)
            .unwrap()
        else {
            panic!()
        };
        assert!(m.check_superblock(true).is_ok());
        assert!(matches!(
            m.check_superblock(false),
            Err(Error::BadMapHeader { .. })
        ));
        assert_eq!(HeadKind::Head1.algorithm(&m), Some(Algorithm::Deflate));
        assert_eq!(HeadKind::Head2.algorithm(&m), Some(Algorithm::Zstd));
        assert_eq!(HeadKind::Plain.algorithm(&m), None);
        assert_eq!(HeadKind::Head2.lcluster_type(), LclusterType::Head2);
        let avail = AlgorithmSet::DEFLATE;
        assert!(avail.require(Algorithm::Deflate).is_ok());
        assert_eq!(
            avail.require(Algorithm::Zstd),
            Err(Error::AlgorithmNotAvailable { id: 3 })
        );
    }

    fn lmap(format: IndexFormat, advise: u16, bits: u8) -> LclusterMap {
        LclusterMap {
            format,
            advise: MapAdvise::from_bits_retain(advise),
            head1: Algorithm::Lz4,
            head2: Algorithm::Lz4,
            lcluster_bits: bits,
            fragment_offset: None,
            inline_size: None,
        }
    }

    fn full(advise: u16, clusterofs: u16, u: u32) -> LclusterIndex {
        LclusterIndex {
            di_advise: U16::new(advise),
            di_clusterofs: U16::new(clusterofs),
            di_u: U32::new(u),
        }
    }

    #[test]
    fn full_index_layout_and_decode() {
        let i = full(0x8001, 0x0123, 0x0000_0456);
        assert_eq!(i.as_bytes(), &[0x01, 0x80, 0x23, 0x01, 0x56, 0x04, 0, 0]);
        let m = lmap(IndexFormat::Full, 0x6, 12);
        assert_eq!(
            i.decode(0, &m).unwrap(),
            Lcluster::Head {
                kind: HeadKind::Head1,
                cluster_offset: 0x123,
                blkaddr: 0x456,
                partial_ref: true
            }
        );
        let nh = full(2, 0, 3 << 16 | 5);
        assert_eq!(nh.delta(), [5, 3]);
        assert_eq!(
            nh.decode(1, &m).unwrap(),
            Lcluster::NonHead {
                lookback: 5,
                lookahead: 3,
                compressed_blocks: None
            }
        );
        let cblk = full(2, 0, 4 << 16 | u32::from(D0_CBLKCNT) | 7);
        assert_eq!(
            cblk.decode(1, &m).unwrap(),
            Lcluster::NonHead {
                lookback: 1,
                lookahead: 4,
                compressed_blocks: Some(7)
            }
        );
        let small = lmap(IndexFormat::Full, 0, 12);
        assert!(matches!(
            cblk.decode(1, &small),
            Err(Error::BadLcluster { lcn: 1, .. })
        ));
        assert!(matches!(
            full(0, 4096, 0).decode(9, &small),
            Err(Error::BadLcluster { lcn: 9, .. })
        ));
        assert!(full(3, 4095, 0).decode(9, &small).is_ok());
    }

    #[test]
    fn full_indexes_view() {
        let entries = [full(1, 0, 10), full(2, 0, 1 << 16 | 1), full(0, 100, 11)];
        let bytes = entries.as_bytes();
        let m = lmap(IndexFormat::Full, 0, 12);
        let v = FullIndexes::new(bytes, 3, &m).unwrap();
        assert_eq!(v.len(), 3);
        assert!(!v.is_empty());
        assert_eq!(v.raw().len(), 3);
        let all: Vec<_> = v.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(all[2].lcluster_type(), LclusterType::Plain);
        assert_eq!(
            v.get(3),
            Err(Error::LclusterOutOfRange { lcn: 3, count: 3 })
        );
        assert_eq!(
            FullIndexes::new(bytes, 4, &m).unwrap_err(),
            Error::Truncated {
                what: "full lcluster indexes",
                needed: 32,
                available: 24
            }
        );
    }

    /// Independent encoder for compact packs, used to build test vectors.
    fn encode_pack(entries: &[(u16, u8)], lcluster_bits: u8, base: u32) -> Vec<u8> {
        let vcnt = entries.len();
        let len = if vcnt == 2 { 8 } else { 32 };
        let lobits = u32::from(lcluster_bits.max(12));
        let encodebits = (len - 4) * 8 / vcnt;
        let mut out = vec![0u8; len];
        for (i, &(lo, t)) in entries.iter().enumerate() {
            let v = u32::from(t) << lobits | u32::from(lo);
            let pos = i * encodebits;
            for b in 0..(lobits as usize + 2) {
                if v >> b & 1 != 0 {
                    out[(pos + b) / 8] |= 1 << ((pos + b) % 8);
                }
            }
        }
        out[len - 4..].copy_from_slice(&base.to_le_bytes());
        out
    }

    const H: u8 = 1;
    const N: u8 = 2;
    const P: u8 = 0;

    #[test]
    fn compact_4b_pack() {
        // lcluster 0: HEAD1 at 0x10; lcluster 1: NONHEAD (last in pack: lo = delta[1] = 3).
        let bytes = encode_pack(&[(0x10, H), (3, N)], 12, 100);
        assert_eq!(&bytes[..4], &[0x10, 0x10, 0x03, 0x20]);
        let pack = CompactPack::new(&bytes, 12, false).unwrap();
        assert_eq!(pack.len(), 2);
        assert!(!pack.is_empty());
        assert_eq!(pack.base_blkaddr(), 100);
        assert_eq!(pack.raw_entry(2), None);
        // Without big pcluster the base is one less than the first HEAD's block.
        assert_eq!(
            pack.decode(0, 0).unwrap(),
            Lcluster::Head {
                kind: HeadKind::Head1,
                cluster_offset: 0x10,
                blkaddr: 101,
                partial_ref: false
            }
        );
        assert_eq!(
            pack.decode(1, 1).unwrap(),
            Lcluster::NonHead {
                lookback: 1,
                lookahead: 3,
                compressed_blocks: None
            }
        );
        assert_eq!(
            pack.decode(2, 2),
            Err(Error::LclusterOutOfRange { lcn: 2, count: 2 })
        );
    }

    #[test]
    fn compact_2b_pack_blocks() {
        // Not big pcluster: every HEAD takes one block; NONHEAD runs are skipped via lo.
        let mut e = vec![(0, H), (1, N), (2, N), (5, P), (1, N), (7, H)];
        e.extend(core::iter::repeat_n((0, H), 9));
        e.push((4, N));
        let bytes = encode_pack(&e, 12, 50);
        let pack = CompactPack::new(&bytes, 12, false).unwrap();
        assert_eq!(pack.len(), 16);
        let mut blocks = Vec::new();
        for i in 0..16 {
            if let Lcluster::Head { blkaddr, .. } = pack.decode(i, i as u64).unwrap() {
                blocks.push(blkaddr);
            }
        }
        // HEADs at 0, 3, 5, 6..=14 -> consecutive blocks from base + 1.
        assert_eq!(blocks, (51..51 + 12).collect::<Vec<u32>>());
        assert_eq!(
            pack.decode(2, 2).unwrap(),
            Lcluster::NonHead {
                lookback: 2,
                lookahead: 1,
                compressed_blocks: None
            }
        );
        // The last entry's lookback comes from the previous entry (a HEAD here -> 1).
        assert_eq!(
            pack.decode(15, 15).unwrap(),
            Lcluster::NonHead {
                lookback: 1,
                lookahead: 4,
                compressed_blocks: None
            }
        );
    }

    #[test]
    fn compact_big_pcluster() {
        // HEAD1 (3 blocks: CBLKCNT on the next entry), NONHEAD d0=2, HEAD1 (1 block).
        let e = [
            (0, H),
            (D0_CBLKCNT | 3, N),
            (2, N),
            (0x20, H),
            (0, H),
            (D0_CBLKCNT | 2, N),
            (2, N),
            (0, P),
            (0, H),
            (1, N),
            (0, H),
            (0, H),
            (0, H),
            (0, H),
            (0, H),
            (2, N),
        ];
        let bytes = encode_pack(&e, 12, 1000);
        let pack = CompactPack::new(&bytes, 12, true).unwrap();
        let head = |i: usize| match pack.decode(i, i as u64).unwrap() {
            Lcluster::Head { blkaddr, .. } => blkaddr,
            other => panic!("{i}: {other:?}"),
        };
        assert_eq!(head(0), 1000);
        assert_eq!(head(3), 1003);
        assert_eq!(head(4), 1004);
        assert_eq!(head(7), 1006);
        assert_eq!(
            pack.decode(1, 1).unwrap(),
            Lcluster::NonHead {
                lookback: 1,
                lookahead: 2,
                compressed_blocks: Some(3)
            }
        );
        // Entry 9 has d0 = 1 on a big-pcluster file: the HEAD after it is corrupt.
        assert!(matches!(
            pack.decode(10, 10),
            Err(Error::BadLcluster { lcn: 10, .. })
        ));
        // CBLKCNT without big pcluster.
        let small = CompactPack::new(&bytes, 12, false).unwrap();
        assert!(matches!(
            small.decode(1, 1),
            Err(Error::BadLcluster { lcn: 1, .. })
        ));
        // The last entry with a CBLKCNT predecessor and a CBLKCNT entry itself.
        let e2 = [(0, H), (D0_CBLKCNT | 2, N)];
        let b2 = encode_pack(&e2, 12, 5);
        let p2 = CompactPack::new(&b2, 12, true).unwrap();
        assert_eq!(
            p2.decode(1, 1).unwrap(),
            Lcluster::NonHead {
                lookback: 1,
                lookahead: 1,
                compressed_blocks: Some(2)
            }
        );
        let e3 = [(D0_CBLKCNT | 2, N), (7, N)];
        let b3 = encode_pack(&e3, 12, 5);
        let p3 = CompactPack::new(&b3, 12, true).unwrap();
        assert_eq!(
            p3.decode(1, 1).unwrap(),
            Lcluster::NonHead {
                lookback: 2,
                lookahead: 7,
                compressed_blocks: None
            }
        );
    }

    #[test]
    fn compact_pack_errors() {
        assert_eq!(
            CompactPack::new(&[0; 9], 12, false).unwrap_err(),
            Error::BadCompactPack { len: 9 }
        );
        assert_eq!(
            CompactPack::new(&[0; 32], 13, false).unwrap_err(),
            Error::UnsupportedLclusterBits { lcluster_bits: 13 }
        );
        assert_eq!(
            CompactPack::new(&[0; 8], 15, false).unwrap_err(),
            Error::UnsupportedLclusterBits { lcluster_bits: 15 }
        );
        // HEAD clusterofs beyond a 512-byte lcluster.
        let b = encode_pack(&[(600, H), (0, H)], 9, 0);
        let p = CompactPack::new(&b, 9, false).unwrap();
        assert!(matches!(p.decode(0, 0), Err(Error::BadLcluster { .. })));
        // Base block address overflow.
        let b = encode_pack(&[(0, H), (0, H)], 12, u32::MAX);
        let p = CompactPack::new(&b, 12, false).unwrap();
        assert!(matches!(p.decode(1, 1), Err(Error::BadLcluster { .. })));
        // 14-bit lclusters in 4B packs: lobits 14.
        let b = encode_pack(&[(0x3000, H), (0, P)], 14, 9);
        let p = CompactPack::new(&b, 14, false).unwrap();
        assert_eq!(p.raw_entry(0), Some((0x3000, LclusterType::Head1)));
    }

    #[test]
    fn compact_layout_positions() {
        let advise = MapAdvise::COMPACTED_2B;
        // ebase % 32 == 8: 6 initial 4B entries, then 2B packs.
        let l = CompactLayout::new(1032, 40, advise);
        assert_eq!((l.initial_4b, l.count_2b), (6, 32));
        assert_eq!(l.byte_len(), 6 * 4 + 32 * 2 + 8);
        assert_eq!(l.locate(0), Some((0, 8, 0)));
        assert_eq!(l.locate(5), Some((16, 8, 1)));
        assert_eq!(l.locate(6), Some((24, 32, 0)));
        assert_eq!(l.locate(21), Some((24, 32, 15)));
        assert_eq!(l.locate(22), Some((56, 32, 0)));
        assert_eq!(l.locate(38), Some((88, 8, 0)));
        assert_eq!(l.locate(39), Some((88, 8, 1)));
        assert_eq!(l.locate(40), None);
        // 32-aligned ebase: no initial 4B packs.
        let l = CompactLayout::new(1024, 17, advise);
        assert_eq!((l.initial_4b, l.count_2b), (0, 16));
        assert_eq!(l.byte_len(), 32 + 8);
        // Fewer lclusters than the initial run: all 4B.
        let l = CompactLayout::new(1048, 1, advise);
        assert_eq!((l.initial_4b, l.count_2b), (2, 0));
        assert_eq!(l.byte_len(), 8);
        // Without COMPACTED_2B everything is 4B.
        let l = CompactLayout::new(1032, 40, MapAdvise::empty());
        assert_eq!(l.count_2b, 0);
        assert_eq!(l.byte_len(), 160);
        assert_eq!(l.locate(39), Some((152, 8, 1)));
    }

    #[test]
    fn compact_indexes_view() {
        // ebase % 32 == 24: 2 initial 4B entries, 16 in 2B, 1 trailing 4B.
        let mut bytes = encode_pack(&[(0, H), (1, N)], 12, 9);
        let mut e2 = vec![(0, H); 16];
        e2[1] = (1, N);
        bytes.extend(encode_pack(&e2, 12, 10));
        bytes.extend(encode_pack(&[(0, P), (0, 0)], 12, 26));
        let m = lmap(IndexFormat::Compact, 1, 12);
        let v = CompactIndexes::new(&bytes, 24, 19, &m).unwrap();
        assert_eq!(v.len(), 19);
        assert!(!v.is_empty());
        assert_eq!(v.layout().count_2b, 16);
        let heads: Vec<u32> = v
            .iter()
            .filter_map(|l| match l.unwrap() {
                Lcluster::Head { blkaddr, .. } => Some(blkaddr),
                _ => None,
            })
            .collect();
        assert_eq!(
            heads,
            [
                10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27
            ]
        );
        assert!(matches!(
            v.get(19),
            Err(Error::LclusterOutOfRange { lcn: 19, count: 19 })
        ));
        assert!(matches!(
            CompactIndexes::new(&bytes[..40], 24, 19, &m),
            Err(Error::Truncated { needed: 48, .. })
        ));
        assert!(matches!(
            CompactIndexes::new(&bytes, 20, 19, &m),
            Err(Error::BadMapHeader { .. })
        ));
        let big = lmap(IndexFormat::Compact, 0, 15);
        assert!(CompactIndexes::new(&bytes, 24, 1, &big).is_err());
    }

    fn ext(plen: u32, plo: u32, phi: u32, llo: u32, lhi: u32) -> Extent {
        Extent {
            plen: U32::new(plen),
            pstart_lo: U32::new(plo),
            pstart_hi: U32::new(phi),
            lstart_lo: U32::new(llo),
            lstart_hi: U32::new(lhi),
            reserved: [0; 12],
        }
    }

    #[test]
    fn extents() {
        let e = ext(0x4000_1000 | EXTENT_PLEN_PARTIAL, 1, 2, 3, 4);
        assert_eq!(&e.as_bytes()[..8], &[0x00, 0x10, 0x00, 0x48, 1, 0, 0, 0]);
        // 16-byte records.
        let recs = [
            ext(0x4000_1000, 0x2000, 1, 0, 0),
            ext(0x1000, 0x3000, 0, 0x8000, 0),
        ];
        let mut bytes = Vec::new();
        for r in &recs {
            bytes.extend_from_slice(&r.as_bytes()[..16]);
        }
        let map = ExtentMap {
            advise: MapAdvise::EXTENTS,
            record_size: 16,
            count: Some(2),
            lcluster_bits: None,
        };
        let v = EncodedExtents::new(&bytes, &map, 2).unwrap();
        assert_eq!(v.len(), 2);
        assert!(!v.is_empty());
        let all: Vec<_> = v.iter().collect();
        assert_eq!(all[0].pstart, 0x1_0000_2000);
        assert_eq!(all[0].lstart, Some(0));
        assert_eq!(all[0].length(), 0x1000);
        assert_eq!(
            all[0].encoding(),
            ExtentEncoding::Compressed(Algorithm::Zstd)
        );
        assert_eq!(all[1].encoding(), ExtentEncoding::Stored);
        assert_eq!(all[1].lstart, Some(0x8000));
        assert!(!all[1].is_partial_ref());
        let unk = EncodedExtent {
            lstart: None,
            pstart: 0,
            plen: 0xF000_0000 | EXTENT_PLEN_PARTIAL,
        };
        assert_eq!(unk.encoding(), ExtentEncoding::Unknown(14));
        assert!(unk.is_partial_ref());
        assert!(EncodedExtents::new(&bytes, &map, 3).is_err());
        // 32-byte records carry lstart_hi.
        let b32 = ext(1, 2, 0, 5, 1).as_bytes().to_vec();
        let m32 = ExtentMap {
            record_size: 32,
            ..map
        };
        let v = EncodedExtents::new(&b32, &m32, 1).unwrap();
        assert_eq!(v.iter().next().unwrap().lstart, Some(0x1_0000_0005));
        // 8-byte records: pstart_lo only.
        let m8 = ExtentMap {
            record_size: 8,
            count: None,
            lcluster_bits: Some(12),
            ..map
        };
        let b8 = [0x00u8, 0x10, 0, 0, 0x00, 0x50, 0, 0];
        let v = EncodedExtents::new(&b8, &m8, 1).unwrap();
        let e = v.iter().next().unwrap();
        assert_eq!((e.lstart, e.pstart, e.length()), (None, 0x5000, 0x1000));
        // 4-byte records: base pstart then lengths, accumulated.
        let m4 = ExtentMap {
            record_size: 4,
            ..m8
        };
        let mut b4 = 0x9000u64.to_le_bytes().to_vec();
        b4.extend_from_slice(&0x1000u32.to_le_bytes());
        b4.extend_from_slice(&0x2000_0800u32.to_le_bytes());
        let v = EncodedExtents::new(&b4, &m4, 2).unwrap();
        let p: Vec<u64> = v.iter().map(|e| e.pstart).collect();
        assert_eq!(p, [0x9000, 0xA000]);
        assert!(matches!(
            EncodedExtents::new(&b4[..4], &m4, 0),
            Err(Error::Truncated { needed: 8, .. })
        ));
        assert!(matches!(
            EncodedExtents::new(&b4, &m4, u64::MAX),
            Err(Error::Overflow { .. })
        ));
        for bad_size in [0, 5, 64] {
            let m = ExtentMap {
                record_size: bad_size,
                ..m4
            };
            assert!(matches!(
                EncodedExtents::new(&b4, &m, 1),
                Err(Error::BadMapHeader { .. })
            ));
            assert!(m.records_offset(0).is_err());
        }
        // Huge lcluster counts neither overflow nor allocate.
        let l = CompactLayout::new(1032, u64::MAX, MapAdvise::COMPACTED_2B);
        assert_eq!(l.byte_len(), u64::MAX);
        assert_eq!(l.locate(u64::MAX - 1), None);
    }

    #[test]
    fn config_layouts() {
        let lz4 = Lz4Config {
            max_distance: U16::new(0x1234),
            max_pclusterblks: U16::new(16),
            reserved: [0; 10],
        };
        assert_eq!(&lz4.as_bytes()[..4], &[0x34, 0x12, 16, 0]);
        assert_eq!(lz4.max_pcluster_blocks(), 16);
        let lzma = LzmaConfig {
            dict_size: U32::new(0x0080_0000),
            format: U16::new(0),
            reserved: [0; 8],
        };
        assert_eq!(&lzma.as_bytes()[..6], &[0, 0, 0x80, 0, 0, 0]);
        let d = DeflateConfig {
            windowbits: 15,
            reserved: [0; 5],
        };
        assert_eq!(d.as_bytes(), &[15, 0, 0, 0, 0, 0]);
        let z = ZstdConfig {
            format: 0,
            windowlog: 7,
            reserved: [0; 4],
        };
        assert_eq!(z.as_bytes(), &[0, 7, 0, 0, 0, 0]);
        assert_eq!(z.window_size(), 128 * 1024);
    }

    #[test]
    fn config_validation() {
        let bad = |r: Result<(), Error>| matches!(r, Err(Error::BadCompressionConfig { .. }));
        assert!(bad(Lz4Config::parse(&[0; 13], 12).map(drop)));
        let mut lz4 = [0u8; 14];
        lz4[2] = 0;
        assert_eq!(Lz4Config::parse(&lz4, 12).unwrap().max_pcluster_blocks(), 1);
        lz4[2..4].copy_from_slice(&256u16.to_le_bytes());
        assert!(Lz4Config::parse(&lz4, 12).is_ok());
        lz4[2..4].copy_from_slice(&257u16.to_le_bytes());
        assert!(bad(Lz4Config::parse(&lz4, 12).map(drop)));
        assert!(Lz4Config::parse(&lz4, 9).is_ok());

        let mut lzma = [0u8; 14];
        lzma[..4].copy_from_slice(&4096u32.to_le_bytes());
        assert!(LzmaConfig::parse(&lzma).is_ok());
        lzma[..4].copy_from_slice(&4095u32.to_le_bytes());
        assert!(bad(LzmaConfig::parse(&lzma).map(drop)));
        lzma[..4].copy_from_slice(&(LZMA_MAX_DICT_SIZE + 1).to_le_bytes());
        assert!(bad(LzmaConfig::parse(&lzma).map(drop)));
        lzma[..4].copy_from_slice(&LZMA_MAX_DICT_SIZE.to_le_bytes());
        lzma[4] = 1;
        assert!(bad(LzmaConfig::parse(&lzma).map(drop)));
        assert!(bad(LzmaConfig::parse(&lzma[..13]).map(drop)));

        assert!(DeflateConfig::parse(&[15, 0, 0, 0, 0, 0]).is_ok());
        assert!(bad(DeflateConfig::parse(&[16, 0, 0, 0, 0, 0]).map(drop)));
        assert!(bad(DeflateConfig::parse(&[15, 0, 0, 0, 0]).map(drop)));

        assert!(ZstdConfig::parse(&[0, 10, 0, 0, 0, 0]).is_ok());
        assert!(bad(ZstdConfig::parse(&[0, 11, 0, 0, 0, 0]).map(drop)));
        assert!(bad(ZstdConfig::parse(&[1, 0, 0, 0, 0, 0]).map(drop)));
        assert!(bad(ZstdConfig::parse(&[0, 0, 0]).map(drop)));
    }

    fn record(out: &mut Vec<u8>, body: &[u8]) {
        while !out.len().is_multiple_of(4) {
            out.push(0xEE);
        }
        out.extend_from_slice(&(body.len() as u16).to_le_bytes());
        out.extend_from_slice(body);
    }

    #[test]
    fn metadata_records() {
        let mut b = vec![0u8; 2];
        record(&mut b, &[1, 2, 3]);
        record(&mut b, &[4]);
        let mut r = MetadataRecords::new(&b, 1);
        assert_eq!(r.next_record().unwrap(), &[1, 2, 3]);
        assert_eq!(r.position(), 9);
        assert_eq!(r.next_record().unwrap(), &[4]);
        assert_eq!(
            r.next_record(),
            Err(Error::BadMetadataRecord { offset: 16, len: 0 })
        );
        let all: Vec<_> = MetadataRecords::new(&b, 4).collect();
        assert_eq!(all, [Ok(&[1u8, 2, 3][..]), Ok(&[4u8][..])]);
        // Length 0 means 65536.
        let mut big = vec![0u8, 0];
        big.extend(core::iter::repeat_n(7u8, 65536));
        let mut r = MetadataRecords::new(&big, 0);
        assert_eq!(r.next_record().unwrap().len(), 65536);
        assert_eq!(
            MetadataRecords::new(&big[..100], 0).next_record(),
            Err(Error::BadMetadataRecord {
                offset: 0,
                len: 65536
            })
        );
        // A truncated body ends the iterator after one error.
        let mut it = MetadataRecords::new(&[5, 0, 1], 0);
        assert!(matches!(it.next(), Some(Err(_))));
        assert!(it.next().is_none());
        assert!(MetadataRecords::new(&[], usize::MAX).next_record().is_err());
    }

    #[test]
    fn compression_configs() {
        let mut b = vec![0u8; 1024 + 128];
        record(&mut b, Lz4Config::new_zeroed().as_bytes());
        let mut lzma = LzmaConfig::new_zeroed();
        lzma.dict_size = U32::new(0x0001_0010);
        record(&mut b, lzma.as_bytes());
        record(&mut b, &[0, 10, 0, 0, 0, 0]);
        let c = CompressionConfigs::parse(&b, 1152, 0b1011, 12).unwrap();
        assert_eq!(
            c.available,
            AlgorithmSet::LZ4 | AlgorithmSet::LZMA | AlgorithmSet::ZSTD
        );
        assert_eq!(
            c.available.algorithms().collect::<Vec<_>>(),
            [Algorithm::Lz4, Algorithm::Lzma, Algorithm::Zstd]
        );
        assert_eq!(c.lzma.unwrap().dict_size.get(), 0x0001_0010);
        assert_eq!(c.zstd.unwrap().windowlog, 10);
        assert!(c.deflate.is_none());
        assert_eq!(c.end, b.len());
        assert_eq!(
            CompressionConfigs::parse(&b, 1152, 0x13, 12),
            Err(Error::UnsupportedAlgorithms { bits: 0x10 })
        );
        // Records in the wrong order: the second record is not a valid DEFLATE config.
        assert!(matches!(
            CompressionConfigs::parse(&b, 1152, 0b0101, 12),
            Err(Error::BadCompressionConfig { algorithm: 2, .. })
        ));
        assert!(matches!(
            CompressionConfigs::parse(&b[..1160], 1152, 0b1011, 12),
            Err(Error::BadMetadataRecord { .. })
        ));
        let legacy = CompressionConfigs::legacy(4096);
        assert_eq!(legacy.available, AlgorithmSet::LZ4);
        assert_eq!(legacy.lz4.unwrap().max_distance.get(), 4096);
    }

    #[test]
    fn algorithms() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_id(a.id()), Some(a));
            assert!(a.bit().has(a));
        }
        assert_eq!(Algorithm::from_id(4), None);
        assert_eq!(Algorithm::Deflate.to_string(), "deflate");
        assert_eq!(AlgorithmSet::default(), AlgorithmSet::empty());
        assert!(LclusterType::Head2.is_head());
        assert!(!LclusterType::NonHead.is_head());
    }

    proptest! {
        #[test]
        fn map_header_never_panics(raw in any::<[u8; 8]>(), blkszbits in 0u8..=255, compact: bool) {
            let h = MapHeader::read_from_bytes(&raw).unwrap();
            let format = if compact { IndexFormat::Compact } else { IndexFormat::Full };
            if let Ok(CompressionMap::Extents(e)) = h.decode(format, blkszbits) {
                let _ = e.record_count(u64::MAX);
                let _ = e.records_offset(u64::MAX - 3);
            }
        }

        #[test]
        fn compact_pack_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            bits in 9u8..=16,
            big: bool,
        ) {
            if let Ok(p) = CompactPack::new(&bytes, bits, big) {
                for i in 0..17 {
                    let _ = p.decode(i, i as u64);
                }
            }
        }

        #[test]
        fn compact_pack_roundtrip(
            entries in proptest::collection::vec((0u16..4096, 0u8..4), 16),
            two: bool,
            base in any::<u32>(),
        ) {
            let entries = if two { &entries[..2] } else { &entries[..] };
            let bytes = encode_pack(entries, 12, base);
            let pack = CompactPack::new(&bytes, 12, false).unwrap();
            prop_assert_eq!(pack.base_blkaddr(), base);
            for (i, &(lo, t)) in entries.iter().enumerate() {
                prop_assert_eq!(
                    pack.raw_entry(i),
                    Some((lo, LclusterType::from_bits(u16::from(t))))
                );
            }
        }

        #[test]
        fn compact_indexes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            ebase in 0u64..4096,
            total in 0u64..120,
            advise in any::<u16>(),
            bits in 9u8..=15,
        ) {
            let m = LclusterMap {
                advise: MapAdvise::from_bits_retain(advise),
                ..lmap(IndexFormat::Compact, 0, bits)
            };
            if let Ok(v) = CompactIndexes::new(&bytes, ebase * 8, total, &m) {
                for l in v.iter() {
                    let _ = l;
                }
                let _ = v.get(total);
            }
            let l = CompactLayout::new(ebase, total, m.advise);
            prop_assert!(l.byte_len() <= total * 4 + 8);
        }

        #[test]
        fn full_and_extents_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            count in 0u64..40,
            recsz_sel in 0u8..7,
            bits in 0u8..=40,
        ) {
            let m = lmap(IndexFormat::Full, 6, bits.min(30));
            if let Ok(v) = FullIndexes::new(&bytes, count, &m) {
                for l in v.iter() {
                    let _ = l;
                }
            }
            let em = ExtentMap {
                advise: MapAdvise::EXTENTS,
                record_size: 4u8.wrapping_shl(u32::from(recsz_sel)),
                count: None,
                lcluster_bits: Some(bits),
            };
            if let Ok(v) = EncodedExtents::new(&bytes, &em, count) {
                for e in v.iter() {
                    let _ = (e.length(), e.encoding());
                }
            }
        }

        #[test]
        fn configs_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            start in 0usize..220,
            algs in any::<u16>(),
            blkszbits in any::<u8>(),
        ) {
            let _ = CompressionConfigs::parse(&bytes, start, algs, blkszbits);
            let _ = Lz4Config::parse(&bytes, blkszbits);
            let _ = LzmaConfig::parse(&bytes);
            let _ = DeflateConfig::parse(&bytes);
            if let Ok(z) = ZstdConfig::parse(&bytes) {
                prop_assert!(z.window_size() <= 1 << 20);
            }
            for r in MetadataRecords::new(&bytes, start) {
                let _ = r;
            }
        }
    }
}
