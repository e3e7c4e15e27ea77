//! [`BlobInfo`]: one data blob of a RAFS v6 image, as the bootstrap's blob table has it.

use super::digest::hex;
use super::limits::INLINE_PLACEHOLDER;
use erofs_format::rafs::RafsV6Blob;
use erofs_format::rafs::{BlobCompressor, BlobFeatures, Digester};
use std::fmt;

/// One data blob of a RAFS v6 image, from the bootstrap's blob table.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Position in the blob table; the blob is EROFS device `index + 1`.
    pub index: u32,
    /// The blob id (the device tag, the blob's file name). `"x" × 64` for
    /// `--blob-inline-meta` images, whose real id is only the file name.
    pub id: String,
    /// How chunks are stored.
    pub compressor: Option<BlobCompressor>,
    /// How chunk digests are computed.
    pub digester: Option<Digester>,
    /// Number of chunks in the blob's chunk-info array.
    pub chunk_count: u32,
    /// Chunk size of the image.
    pub chunk_size: u32,
    /// Size of the stored blob (see `rafs-v6.md` §4 for the variants).
    pub compressed_size: u64,
    /// Size of the uncompressed address space (what the kernel reads).
    pub uncompressed_size: u64,
    /// Blob features.
    pub features: BlobFeatures,
    /// The raw blob table record.
    pub record: RafsV6Blob,
}

impl fmt::Debug for BlobInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobInfo")
            .field("index", &self.index)
            .field("id", &self.id)
            .field("compressor", &self.compressor)
            .field("digester", &self.digester)
            .field("chunk_count", &self.chunk_count)
            .field("compressed_size", &self.compressed_size)
            .field("uncompressed_size", &self.uncompressed_size)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl BlobInfo {
    /// Whether the bootstrap names this blob with the `--blob-inline-meta` placeholder.
    pub fn has_placeholder_id(&self) -> bool {
        self.record.blob_id == INLINE_PLACEHOLDER
    }

    /// For blobs whose chunk-info array lives in a separate meta blob: that blob's name
    /// (the hex `blob_meta_digest`).
    pub fn separate_meta_name(&self) -> Option<String> {
        self.features
            .contains(BlobFeatures::SEPARATE)
            .then(|| hex(&self.record.blob_meta_digest))
    }
}
