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
//! decompress. Every function takes untrusted bytes and returns an [`Error`](crate::Error) instead of
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

mod algorithm;
mod compact;
mod config;
mod extent;
mod header;
mod lcluster;
mod limits;
mod records;
#[cfg(test)]
mod tests;

pub use algorithm::{Algorithm, AlgorithmSet};
pub use compact::{CompactIndexes, CompactLayout, CompactPack};
pub use config::{CompressionConfigs, DeflateConfig, Lz4Config, LzmaConfig, ZstdConfig};
pub use extent::{
    EXTENT_PLEN_FMT_BIT, EXTENT_PLEN_MASK, EXTENT_PLEN_PARTIAL, EncodedExtent, EncodedExtents,
    Extent, ExtentEncoding,
};
pub use header::{CompressionMap, ExtentMap, IndexFormat, LclusterMap, MapAdvise, MapHeader};
pub use lcluster::{FullIndexes, HeadKind, LI_PARTIAL_REF, Lcluster, LclusterIndex, LclusterType};
pub use limits::{
    COMPACT_2B_MAX_LCLUSTER_BITS, COMPACT_MAX_LCLUSTER_BITS, D0_CBLKCNT, DEFLATE_MAX_WINDOW_BITS,
    FRAGMENT_INODE_BIT, FULL_INDEX_OFFSET, LZMA_MAX_DICT_SIZE, LZMA_MIN_DICT_SIZE,
    PCLUSTER_MAX_DSIZE, PCLUSTER_MAX_SIZE, ZSTD_MAX_WINDOW_LOG,
};
pub use records::MetadataRecords;
