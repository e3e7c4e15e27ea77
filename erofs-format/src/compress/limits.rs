//! The kernel's limits and bit constants for compressed inodes.

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
