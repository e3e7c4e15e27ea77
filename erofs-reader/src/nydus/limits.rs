//! Sizes and bounds of the Nydus blob reader.

/// Default capacity of a [`BlobSource`](super::BlobSource)'s decoded-chunk cache, in bytes.
pub const DEFAULT_CHUNK_CACHE_BYTES: usize = 32 << 20;

/// Most bytes of inflated ZRan contexts a [`BlobSource`](super::BlobSource) keeps (ZRAN blobs only): a few
/// contexts, each at most 16 MiB and usually about 1 to 2 MiB.
pub const ZRAN_CONTEXT_CACHE_BYTES: usize = 16 << 20;

/// Largest ZRan table (contexts and dictionaries) accepted after the chunk infos.
pub(super) const MAX_ZRAN_TABLE_BYTES: u64 = 512 << 20;

/// Largest stored span fetched with one read when neighbouring chunks are missing.
pub(super) const MAX_FETCH_SPAN: u64 = 16 << 20;

/// Largest decompressed chunk-info array accepted (2^24 entries of 24 bytes).
pub(super) const MAX_CHUNK_INFO_BYTES: u64 = 24 << 24;

/// The placeholder blob id `--blob-inline-meta` images carry in the bootstrap.
pub(super) const INLINE_PLACEHOLDER: [u8; 64] = [b'x'; 64];
