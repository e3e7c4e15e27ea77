//! The blob meta header at the end of each data blob.

use super::blob::{BlobCompressor, BlobFeatures, RafsV6Blob};
use super::limits::{BLOB_META_HEADER_SIZE, BLOB_META_MAGIC, bad};
use crate::error::Error;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The blob meta header ("compression context table header", 4096 bytes), right after the
/// compressed chunk-info array.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct BlobCompressionContextHeader {
    /// [`BLOB_META_MAGIC`].
    pub s_magic: U32,
    /// [`BlobFeatures`].
    pub s_features: U32,
    /// [`BlobCompressor`] id of the chunk-info array.
    pub s_ci_compressor: U32,
    /// Number of chunk-info entries.
    pub s_ci_entries: U32,
    /// Offset of the chunk-info array.
    pub s_ci_offset: U64,
    /// Its compressed size.
    pub s_ci_compressed_size: U64,
    /// Its uncompressed size.
    pub s_ci_uncompressed_size: U64,
    /// ZRAN: offset of the ZRan table in the uncompressed chunk-info data.
    pub s_ci_zran_offset: U64,
    /// ZRAN: size of the ZRan table and dictionaries.
    pub s_ci_zran_size: U64,
    /// ZRAN: number of ZRan contexts.
    pub s_ci_zran_count: U32,
    /// Reserved.
    pub s_reserved: [u8; 4032],
    /// [`BLOB_META_MAGIC`] again.
    pub s_magic2: U32,
}

const _: () = assert!(size_of::<BlobCompressionContextHeader>() == BLOB_META_HEADER_SIZE);
const _: () = assert!(offset_of!(BlobCompressionContextHeader, s_ci_offset) == 0x10);
const _: () = assert!(offset_of!(BlobCompressionContextHeader, s_ci_zran_offset) == 0x28);
const _: () = assert!(offset_of!(BlobCompressionContextHeader, s_ci_zran_count) == 0x38);
const _: () = assert!(offset_of!(BlobCompressionContextHeader, s_magic2) == 0xFFC);

impl BlobCompressionContextHeader {
    /// Read and check a header (both magics) from the start of `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], or [`Error::BadRafs`] for a wrong magic.
    pub fn parse(bytes: &[u8]) -> Result<&Self, Error> {
        let (h, _) = Self::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "blob meta header",
            needed: BLOB_META_HEADER_SIZE as u64,
            available: bytes.len() as u64,
        })?;
        if h.s_magic.get() != BLOB_META_MAGIC {
            return Err(bad("blob meta header magic", h.s_magic.get().into()));
        }
        if h.s_magic2.get() != BLOB_META_MAGIC {
            return Err(bad("blob meta header magic2", h.s_magic2.get().into()));
        }
        Ok(h)
    }

    /// The features (unknown bits retained).
    pub fn features(&self) -> BlobFeatures {
        BlobFeatures::from_bits_retain(self.s_features.get())
    }

    /// The chunk-info array's compressor, if known.
    pub fn ci_compressor(&self) -> Option<BlobCompressor> {
        BlobCompressor::from_id(self.s_ci_compressor.get())
    }

    /// Whether the header agrees with the blob table record, as nydusd checks before
    /// trusting a cached copy (entries, features, compressor, offset and both sizes).
    pub fn matches(&self, blob: &RafsV6Blob) -> bool {
        self.s_ci_entries.get() == blob.chunk_count.get()
            && self.s_features.get() == blob.features.get()
            && self.s_ci_compressor.get() == blob.ci_compressor.get()
            && self.s_ci_offset.get() == blob.ci_offset.get()
            && self.s_ci_compressed_size.get() == blob.ci_compressed_size.get()
            && self.s_ci_uncompressed_size.get() == blob.ci_uncompressed_size.get()
    }
}
