//! How the stored bytes of a compressed extent decode.

use erofs_format::compress::Algorithm;

/// How a compressed file's extent is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Stored uncompressed from the pcluster's first byte (`Z_EROFS_COMPRESSION_SHIFTED`).
    Shifted,
    /// Stored uncompressed, rotated so that each byte keeps its offset within the block
    /// (`Z_EROFS_COMPRESSION_INTERLACED`).
    Interlaced,
    /// Compressed with this algorithm.
    Compressed(Algorithm),
}
