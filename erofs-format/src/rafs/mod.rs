//! Nydus RAFS v6 additions to an EROFS image.
//!
//! A RAFS v6 *bootstrap* is an ordinary EROFS image (feature_compat bit
//! [`FEATURE_COMPAT_RAFS_V6`]) whose chunk-based files point into *data blobs*, one EROFS
//! extra device each. Nydus adds, in places the kernel never reads:
//!
//! * the extended superblock at byte [`EXT_SUPERBLOCK_OFFSET`] ([`RafsV6SuperBlockExt`]);
//! * the blob table, 256 bytes per blob ([`RafsV6Blob`], [`blob_table`]);
//! * the prefetch table, `le32` nids ([`PrefetchTable`]);
//! * the chunk table at the end of the bootstrap, 80 bytes per unique chunk
//!   ([`RafsV5ChunkInfo`], [`chunk_table`]);
//! * and it overloads the chunk-index fields of chunk-based inodes
//!   ([`RafsV6InodeChunkAddr`]): blob index + 1 and the chunk-info index.
//!
//! Each data blob ends with its *blob meta*: a chunk-info array (usually zstd-compressed,
//! [`ChunkInfoV1`] / [`ChunkInfoV2`], viewed decompressed with [`ChunkInfoArray`]) and a
//! 4096-byte header ([`BlobCompressionContextHeader`]). In ZRAN (`targz-ref`) blobs the data
//! blob is the original `.tar.gz` and the chunk-info data carries the gzip random-access
//! checkpoints after the chunk infos ([`ZranTable`], [`ZranInflateContext`]).
//!
//! Field names follow nydus-rs 2.2.0 (`rafs/src/metadata/layout/v6.rs`,
//! `storage/src/meta/`); the layout reference is `rafs-v6.md` in the project's shared specs.
//!
//! ```
//! use erofs_format::rafs::{ChunkInfoV1, RafsV6InodeChunkAddr};
//! use zerocopy::FromBytes;
//!
//! // A chunk address from a verified image: blob 0, chunk-info 5, uncompressed offset 0x172000.
//! let addr = RafsV6InodeChunkAddr::read_from_bytes(&[5, 0, 1, 0, 0x72, 1, 0, 0]).unwrap();
//! assert_eq!(addr.blob_index(), Some(0));
//! assert_eq!(addr.chunk_index(), 5);
//! assert_eq!(addr.uncompressed_offset(), 0x172000);
//!
//! // Its chunk-info entry: 1 MiB at 0x172000, stored as 13 785 compressed bytes at 1 500 027.
//! let raw = [0x00, 0x20, 0x17, 0x00, 0x00, 0xf0, 0xff, 0xff,
//!            0x7b, 0xe3, 0x16, 0x00, 0x00, 0x80, 0x5d, 0x03];
//! let ci = ChunkInfoV1::read_from_bytes(&raw).unwrap().decode();
//! assert_eq!((ci.uncompressed_offset, ci.uncompressed_size), (0x172000, 1 << 20));
//! assert_eq!((ci.compressed_offset, ci.compressed_size), (1_500_027, 13_785));
//! assert!(ci.compressed);
//! ```

mod blob;
mod chunk;
mod chunk_info;
mod limits;
mod meta;
mod prefetch;
mod superblock;
#[cfg(test)]
mod tests;
mod zran;

pub use blob::{BlobCompressor, BlobFeatures, Digester, RafsV6Blob, blob_table};
pub use chunk::{RafsV5ChunkInfo, RafsV6InodeChunkAddr, chunk_table};
pub use chunk_info::{ChunkInfo, ChunkInfoArray, ChunkInfoV1, ChunkInfoV2, ChunkInfoV2Flags};
pub use limits::{
    BLOB_META_HEADER_SIZE, BLOB_META_MAGIC, BLOB_RECORD_SIZE, Digest, EXT_SUPERBLOCK_OFFSET,
    FEATURE_COMPAT_RAFS_V6, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, RAFS_BLOCK_SIZE,
};
pub use meta::BlobCompressionContextHeader;
pub use prefetch::PrefetchTable;
pub use superblock::{RafsSuperFlags, RafsV6SuperBlockExt};
pub use zran::{
    ZRAN_DICT_WINDOW, ZRAN_MAX_IN_LEN, ZRAN_MAX_OUT_LEN, ZranInflateContext, ZranTable,
};
