//! The blob table: one 256-byte record per data blob.

use super::limits::{Digest, bad};
use crate::error::Error;
use bitflags::bitflags;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A blob's chunk compressor (`compression_algo`, `s_ci_compressor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobCompressor {
    /// Stored raw (0).
    None,
    /// Raw LZ4 block (1).
    Lz4Block,
    /// Gzip (2).
    Gzip,
    /// One zstd frame (3).
    Zstd,
}

impl BlobCompressor {
    /// The compressor with on-disk id `id`.
    pub const fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(BlobCompressor::None),
            1 => Some(BlobCompressor::Lz4Block),
            2 => Some(BlobCompressor::Gzip),
            3 => Some(BlobCompressor::Zstd),
            _ => None,
        }
    }
}

/// A blob's digest algorithm (`digest_algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digester {
    /// BLAKE3 (0).
    Blake3,
    /// SHA-256 (1).
    Sha256,
}

bitflags! {
    /// Blob features (nydus `BlobFeatures`), in the blob table and the blob meta header.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct BlobFeatures: u32 {
        /// Uncompressed chunk starts are 4 KiB aligned (required for v6).
        const ALIGNED = 0x0000_0001;
        /// The bootstrap is inlined into the data blob.
        const INLINED_FS_META = 0x0000_0002;
        /// Chunk-info entries are v2 (24 bytes).
        const CHUNK_INFO_V2 = 0x0000_0004;
        /// gzip random-access (ZRan) contexts follow the chunk infos.
        const ZRAN = 0x0000_0008;
        /// The blob meta lives in a separate meta blob.
        const SEPARATE = 0x0000_0010;
        /// A chunk-digest array is present.
        const INLINED_CHUNK_DIGEST = 0x0000_0020;
        /// 512-byte tar headers follow the blob's sections.
        const HAS_TAR_HEADER = 0x1000_0000;
        /// The blob ends with a table of contents.
        const HAS_TOC = 0x2000_0000;
        /// Built by nydus-image 2.2 or later.
        const CAP_TAR_TOC = 0x4000_0000;
        /// Internal RAFS v5 marker; must not be set on disk.
        const V5_NO_EXT_BLOB_TABLE = 0x8000_0000;
    }
}

impl BlobFeatures {
    /// nydus's acceptance rule: no unknown low bits and not the internal v5 bit.
    pub fn is_valid(self) -> bool {
        self.bits() & 0xFFFF & !0x3F == 0 && !self.contains(BlobFeatures::V5_NO_EXT_BLOB_TABLE)
    }
}

/// One blob table record (256 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RafsV6Blob {
    /// Blob id, ASCII, NUL-padded.
    pub blob_id: [u8; 64],
    /// Must equal the record's position.
    pub blob_index: U32,
    /// Chunk size (equal to the superblock's).
    pub chunk_size: U32,
    /// Number of chunk-info entries.
    pub chunk_count: U32,
    /// [`BlobCompressor`] id of the chunk data.
    pub compression_algo: U32,
    /// [`Digester`] id.
    pub digest_algo: U32,
    /// [`BlobFeatures`].
    pub features: U32,
    /// Blob file size (or the inlined bootstrap's start, or the tar.gz size).
    pub compressed_size: U64,
    /// Size of the uncompressed address space.
    pub uncompressed_size: U64,
    /// ToC size (entries plus tar header), 0 without ToC.
    pub blob_toc_size: U32,
    /// [`BlobCompressor`] id of the chunk-info array.
    pub ci_compressor: U32,
    /// Offset of the (compressed) chunk-info array.
    pub ci_offset: U64,
    /// Compressed size of the chunk-info array.
    pub ci_compressed_size: U64,
    /// Uncompressed size of the chunk-info array.
    pub ci_uncompressed_size: U64,
    /// sha256 of the ToC.
    pub blob_toc_digest: Digest,
    /// sha256 of the separate meta blob.
    pub blob_meta_digest: Digest,
    /// Size of the separate meta blob.
    pub blob_meta_size: U64,
    /// Reserved.
    pub reserved: [u8; 48],
}

const _: () = assert!(size_of::<RafsV6Blob>() == 256);
const _: () = assert!(offset_of!(RafsV6Blob, blob_index) == 0x40);
const _: () = assert!(offset_of!(RafsV6Blob, features) == 0x54);
const _: () = assert!(offset_of!(RafsV6Blob, compressed_size) == 0x58);
const _: () = assert!(offset_of!(RafsV6Blob, uncompressed_size) == 0x60);
const _: () = assert!(offset_of!(RafsV6Blob, blob_toc_size) == 0x68);
const _: () = assert!(offset_of!(RafsV6Blob, ci_compressor) == 0x6C);
const _: () = assert!(offset_of!(RafsV6Blob, ci_offset) == 0x70);
const _: () = assert!(offset_of!(RafsV6Blob, ci_uncompressed_size) == 0x80);
const _: () = assert!(offset_of!(RafsV6Blob, blob_toc_digest) == 0x88);
const _: () = assert!(offset_of!(RafsV6Blob, blob_meta_digest) == 0xA8);
const _: () = assert!(offset_of!(RafsV6Blob, blob_meta_size) == 0xC8);
const _: () = assert!(offset_of!(RafsV6Blob, reserved) == 0xD0);

/// The id bytes up to the first NUL, as UTF-8.
fn nul_padded_str<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, Error> {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..len]).map_err(|e| bad(what, e.valid_up_to() as u64))
}

impl RafsV6Blob {
    /// The blob id (up to the first NUL). For `--blob-inline-meta` images this is the
    /// placeholder `"x" × 64`; the real id is the blob's file name.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] if it is not UTF-8.
    pub fn blob_id(&self) -> Result<&str, Error> {
        nul_padded_str(&self.blob_id, "blob id is not UTF-8")
    }

    /// The features (unknown bits retained).
    pub fn features(&self) -> BlobFeatures {
        BlobFeatures::from_bits_retain(self.features.get())
    }

    /// The chunk compressor, if the id is known.
    pub fn compressor(&self) -> Option<BlobCompressor> {
        BlobCompressor::from_id(self.compression_algo.get())
    }

    /// The chunk-info array's compressor, if the id is known.
    pub fn ci_compressor(&self) -> Option<BlobCompressor> {
        BlobCompressor::from_id(self.ci_compressor.get())
    }

    /// The digest algorithm, if the id is known.
    pub fn digester(&self) -> Option<Digester> {
        match self.digest_algo.get() {
            0 => Some(Digester::Blake3),
            1 => Some(Digester::Sha256),
            _ => None,
        }
    }

    /// Size in bytes of one chunk-info entry: 24 with [`BlobFeatures::CHUNK_INFO_V2`], else 16.
    pub fn chunk_info_size(&self) -> u64 {
        if self.features().contains(BlobFeatures::CHUNK_INFO_V2) {
            24
        } else {
            16
        }
    }

    /// Where the chunk data ends in the stored blob (`ci_offset`, minus the 512-byte tar
    /// header with [`BlobFeatures::HAS_TAR_HEADER`]).
    pub fn compressed_data_size(&self) -> u64 {
        let off = self.ci_offset.get();
        if self.features().contains(BlobFeatures::HAS_TAR_HEADER) {
            off.saturating_sub(512)
        } else {
            off
        }
    }

    /// Where the blob meta header starts in the stored blob: `ci_offset + ci_compressed_size`.
    pub fn meta_header_offset(&self) -> Option<u64> {
        self.ci_offset
            .get()
            .checked_add(self.ci_compressed_size.get())
    }

    /// nydus's `RafsV6Blob::validate` for the record at position `index` of a bootstrap
    /// whose chunk size is `chunk_size`.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] naming the rule.
    pub fn validate(&self, index: u32, chunk_size: u32) -> Result<(), Error> {
        self.blob_id()?;
        if self.blob_index.get() != index {
            return Err(bad(
                "blob_index differs from position",
                self.blob_index.get().into(),
            ));
        }
        if self.chunk_size.get() != chunk_size {
            return Err(bad("blob chunk size differs", self.chunk_size.get().into()));
        }
        let features = self.features();
        if !features.is_valid() {
            return Err(bad("unknown blob features", features.bits().into()));
        }
        if !features.contains(BlobFeatures::ALIGNED) {
            return Err(bad("blob is not ALIGNED", features.bits().into()));
        }
        if self.chunk_count.get() > 1 << 24 {
            return Err(bad("too many chunks", self.chunk_count.get().into()));
        }
        if self.uncompressed_size.get() > 1 << 44 {
            return Err(bad("uncompressed size", self.uncompressed_size.get()));
        }
        if self.compressed_size.get() > 1 << 40 {
            return Err(bad("compressed size", self.compressed_size.get()));
        }
        if self.ci_compressed_size.get() > self.ci_uncompressed_size.get() {
            return Err(bad(
                "chunk-info compressed size over uncompressed",
                self.ci_compressed_size.get(),
            ));
        }
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "a u32 count times a record size of at most 32 cannot overflow u64"
        )]
        let min = u64::from(self.chunk_count.get()) * self.chunk_info_size();
        let ci = self.ci_uncompressed_size.get();
        if (features.contains(BlobFeatures::ZRAN) && ci < min)
            || (!features.contains(BlobFeatures::ZRAN) && ci != min)
        {
            return Err(bad("chunk-info size does not match the chunk count", ci));
        }
        if self.compressor().is_none() {
            return Err(bad("compression_algo", self.compression_algo.get().into()));
        }
        if self.digester().is_none() {
            return Err(bad("digest_algo", self.digest_algo.get().into()));
        }
        Ok(())
    }
}

/// View a blob table (whole 256-byte records).
///
/// # Errors
///
/// [`Error::BadRafs`] if the length is not a multiple of 256.
pub fn blob_table(bytes: &[u8]) -> Result<&[RafsV6Blob], Error> {
    <[RafsV6Blob]>::ref_from_bytes(bytes)
        .map_err(|_| bad("blob table size not a multiple of 256", bytes.len() as u64))
}
