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

use core::mem::{offset_of, size_of};

use bitflags::bitflags;
#[cfg(test)]
use zerocopy::FromZeros;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::Error;

/// The `feature_compat` bit that marks a RAFS v6 bootstrap.
pub const FEATURE_COMPAT_RAFS_V6: u32 = 0x4000_0000;
/// Byte offset of the extended superblock in the bootstrap.
pub const EXT_SUPERBLOCK_OFFSET: u64 = 0x480;
/// RAFS v6 block size (only 4 KiB blocks are supported by nydus).
pub const RAFS_BLOCK_SIZE: u64 = 4096;
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 0x1000;
/// Largest chunk size.
pub const MAX_CHUNK_SIZE: u32 = 0x100_0000;
/// Size of one blob table record.
pub const BLOB_RECORD_SIZE: usize = 256;
/// Magic of the blob meta header (`s_magic`, `s_magic2`).
pub const BLOB_META_MAGIC: u32 = 0xB10B_B10B;
/// Size of the blob meta header.
pub const BLOB_META_HEADER_SIZE: usize = 4096;
/// A chunk digest (BLAKE3 or SHA-256).
pub type Digest = [u8; 32];

bitflags! {
    /// `s_flags` of the extended superblock (nydus `RafsSuperFlags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct RafsSuperFlags: u64 {
        /// Chunks stored raw.
        const COMPRESSION_NONE = 0x0001;
        /// Chunks compressed as raw LZ4 blocks.
        const COMPRESSION_LZ4 = 0x0002;
        /// Chunk digests are BLAKE3.
        const HASH_BLAKE3 = 0x0004;
        /// Chunk digests are SHA-256.
        const HASH_SHA256 = 0x0008;
        /// Inodes carry real uid/gid.
        const EXPLICIT_UID_GID = 0x0010;
        /// Some inode has xattrs.
        const HAS_XATTR = 0x0020;
        /// Chunks are gzip members (targz-ref / stargz).
        const COMPRESSION_GZIP = 0x0040;
        /// Chunks are zstd frames.
        const COMPRESSION_ZSTD = 0x0080;
        /// Every blob carries a chunk-digest array.
        const INLINED_CHUNK_DIGEST = 0x0100;
    }
}

impl RafsSuperFlags {
    const COMPRESSION_MASK: u64 = 0x1 | 0x2 | 0x40 | 0x80;
    const HASH_MASK: u64 = 0x4 | 0x8;
}

/// The RAFS v6 extended superblock, 256 bytes at [`EXT_SUPERBLOCK_OFFSET`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RafsV6SuperBlockExt {
    /// [`RafsSuperFlags`].
    pub s_flags: U64,
    /// Byte offset of the blob table (4 KiB aligned).
    pub s_blob_table_offset: U64,
    /// Size of the blob table in bytes (256 per blob).
    pub s_blob_table_size: U32,
    /// Filesystem chunk size.
    pub s_chunk_size: U32,
    /// Byte offset of the chunk table (4 KiB aligned).
    pub s_chunk_table_offset: U64,
    /// Size of the chunk table in bytes (80 per record).
    pub s_chunk_table_size: U64,
    /// Byte offset of the prefetch table, 0 if none.
    pub s_prefetch_table_offset: U64,
    /// Size of the prefetch table in bytes (4 per entry).
    pub s_prefetch_table_size: U32,
    /// Padding.
    pub s_padding: U32,
    /// Reserved.
    pub s_reserved: [u8; 200],
}

const _: () = assert!(size_of::<RafsV6SuperBlockExt>() == 256);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_blob_table_offset) == 0x08);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_blob_table_size) == 0x10);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_chunk_size) == 0x14);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_chunk_table_offset) == 0x18);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_chunk_table_size) == 0x20);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_prefetch_table_offset) == 0x28);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_prefetch_table_size) == 0x30);
const _: () = assert!(offset_of!(RafsV6SuperBlockExt, s_reserved) == 0x38);

fn bad(what: &'static str, value: u64) -> Error {
    Error::BadRafs { what, value }
}

fn table_range(offset: u64, size: u64, len: u64) -> Option<core::ops::Range<usize>> {
    let end = offset.checked_add(size)?;
    if end > len {
        return None;
    }
    Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
}

impl RafsV6SuperBlockExt {
    /// Read the extended superblock from a bootstrap (at [`EXT_SUPERBLOCK_OFFSET`]).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the bootstrap is too short.
    pub fn from_bootstrap(bootstrap: &[u8]) -> Result<&Self, Error> {
        let start = EXT_SUPERBLOCK_OFFSET as usize;
        bootstrap
            .get(start..)
            .and_then(|b| Self::ref_from_prefix(b).ok())
            .map(|(sb, _)| sb)
            .ok_or(Error::Truncated {
                what: "RAFS v6 extended superblock",
                needed: EXT_SUPERBLOCK_OFFSET + 256,
                available: bootstrap.len() as u64,
            })
    }

    /// The flags (unknown bits retained).
    pub fn flags(&self) -> RafsSuperFlags {
        RafsSuperFlags::from_bits_retain(self.s_flags.get())
    }

    /// The filesystem chunk size in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.s_chunk_size.get()
    }

    /// The chunk compressor named by the flags, if exactly one compression bit is set.
    pub fn compressor(&self) -> Option<BlobCompressor> {
        let f = self.s_flags.get() & RafsSuperFlags::COMPRESSION_MASK;
        match f {
            0x1 => Some(BlobCompressor::None),
            0x2 => Some(BlobCompressor::Lz4Block),
            0x40 => Some(BlobCompressor::Gzip),
            0x80 => Some(BlobCompressor::Zstd),
            _ => None,
        }
    }

    /// The digest algorithm named by the flags, if exactly one hash bit is set.
    pub fn digester(&self) -> Option<Digester> {
        match self.s_flags.get() & RafsSuperFlags::HASH_MASK {
            0x4 => Some(Digester::Blake3),
            0x8 => Some(Digester::Sha256),
            _ => None,
        }
    }

    /// Number of blobs the blob table holds.
    pub fn blob_count(&self) -> u32 {
        self.s_blob_table_size.get() / BLOB_RECORD_SIZE as u32
    }

    /// Check nydus's rules against a bootstrap of `bootstrap_len` bytes: one compression
    /// bit and one hash bit, a power-of-two chunk size in 4 KiB..=16 MiB, and tables that
    /// are inside the file, sized in whole records and (blob and chunk tables) 4 KiB aligned.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] naming the rule.
    pub fn validate(&self, bootstrap_len: u64) -> Result<(), Error> {
        if self.compressor().is_none() {
            return Err(bad("not exactly one compression flag", self.s_flags.get()));
        }
        if self.digester().is_none() {
            return Err(bad("not exactly one hash flag", self.s_flags.get()));
        }
        let cs = self.chunk_size();
        if !cs.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
            return Err(bad("chunk size", cs.into()));
        }
        let bt_off = self.s_blob_table_offset.get();
        let bt_size = u64::from(self.s_blob_table_size.get());
        if bt_size % BLOB_RECORD_SIZE as u64 != 0 {
            return Err(bad("blob table size not a multiple of 256", bt_size));
        }
        if bt_size != 0 && (!bt_off.is_multiple_of(RAFS_BLOCK_SIZE) || bt_off < RAFS_BLOCK_SIZE) {
            return Err(bad("blob table offset", bt_off));
        }
        if table_range(bt_off, bt_size, bootstrap_len).is_none() {
            return Err(bad("blob table beyond the bootstrap", bt_off));
        }
        let ct_off = self.s_chunk_table_offset.get();
        let ct_size = self.s_chunk_table_size.get();
        if !ct_size.is_multiple_of(size_of::<RafsV5ChunkInfo>() as u64) {
            return Err(bad("chunk table size not a multiple of 80", ct_size));
        }
        if ct_size != 0 && !ct_off.is_multiple_of(RAFS_BLOCK_SIZE) {
            return Err(bad("chunk table offset", ct_off));
        }
        if table_range(ct_off, ct_size, bootstrap_len).is_none() {
            return Err(bad("chunk table beyond the bootstrap", ct_off));
        }
        let pt_off = self.s_prefetch_table_offset.get();
        let pt_size = u64::from(self.s_prefetch_table_size.get());
        if pt_size % 4 != 0 {
            return Err(bad("prefetch table size not a multiple of 4", pt_size));
        }
        if table_range(pt_off, pt_size, bootstrap_len).is_none() {
            return Err(bad("prefetch table beyond the bootstrap", pt_off));
        }
        Ok(())
    }

    /// The blob table of `bootstrap` (see [`blob_table`]).
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] if the table is outside the bootstrap or not whole records.
    pub fn blob_table<'a>(&self, bootstrap: &'a [u8]) -> Result<&'a [RafsV6Blob], Error> {
        let r = table_range(
            self.s_blob_table_offset.get(),
            self.s_blob_table_size.get().into(),
            bootstrap.len() as u64,
        )
        .ok_or(bad(
            "blob table beyond the bootstrap",
            self.s_blob_table_offset.get(),
        ))?;
        blob_table(&bootstrap[r])
    }

    /// The prefetch table of `bootstrap`.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] if the table is outside the bootstrap or not whole entries.
    pub fn prefetch_table<'a>(&self, bootstrap: &'a [u8]) -> Result<PrefetchTable<'a>, Error> {
        let r = table_range(
            self.s_prefetch_table_offset.get(),
            self.s_prefetch_table_size.get().into(),
            bootstrap.len() as u64,
        )
        .ok_or(bad(
            "prefetch table beyond the bootstrap",
            self.s_prefetch_table_offset.get(),
        ))?;
        PrefetchTable::new(&bootstrap[r])
    }

    /// The chunk table of `bootstrap`.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] if the table is outside the bootstrap or not whole records.
    pub fn chunk_table<'a>(&self, bootstrap: &'a [u8]) -> Result<&'a [RafsV5ChunkInfo], Error> {
        let r = table_range(
            self.s_chunk_table_offset.get(),
            self.s_chunk_table_size.get(),
            bootstrap.len() as u64,
        )
        .ok_or(bad(
            "chunk table beyond the bootstrap",
            self.s_chunk_table_offset.get(),
        ))?;
        chunk_table(&bootstrap[r])
    }
}

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

/// View a chunk table (whole 80-byte records).
///
/// # Errors
///
/// [`Error::BadRafs`] if the length is not a multiple of 80.
pub fn chunk_table(bytes: &[u8]) -> Result<&[RafsV5ChunkInfo], Error> {
    <[RafsV5ChunkInfo]>::ref_from_bytes(bytes)
        .map_err(|_| bad("chunk table size not a multiple of 80", bytes.len() as u64))
}

/// The prefetch table: `le32` nids, ended by the first 0 (unused trailing slots).
#[derive(Debug, Clone, Copy)]
pub struct PrefetchTable<'a> {
    entries: &'a [U32],
}

impl<'a> PrefetchTable<'a> {
    /// View `bytes` (a multiple of 4) as a prefetch table.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] if the length is not a multiple of 4.
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        let entries = <[U32]>::ref_from_bytes(bytes).map_err(|_| {
            bad(
                "prefetch table size not a multiple of 4",
                bytes.len() as u64,
            )
        })?;
        Ok(PrefetchTable { entries })
    }

    /// The raw slots, including trailing zeros.
    pub fn raw(&self) -> &'a [U32] {
        self.entries
    }

    /// The nids, up to the first 0 slot (nid 0 is never valid).
    pub fn nids(&self) -> impl Iterator<Item = u64> + 'a {
        self.entries
            .iter()
            .map(|n| u64::from(n.get()))
            .take_while(|&n| n != 0)
    }

    /// Whether the table names only the root (nydusd: "prefetch everything").
    pub fn is_root_only(&self, root_nid: u64) -> bool {
        let mut it = self.nids();
        it.next() == Some(root_nid) && it.next().is_none()
    }
}

/// A chunk-index entry of a RAFS v6 chunk-based inode (8 bytes, laid over
/// `erofs_inode_chunk_index`).
///
/// Nydus stores bits 0–15 of the chunk-info index where EROFS has `advise`, blob index + 1
/// in the low byte of `device_id` and bits 16–23 of the chunk-info index in its high byte,
/// and the chunk's uncompressed offset / 4096 as `blkaddr`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RafsV6InodeChunkAddr {
    /// Bits 0–15 of the chunk-info index (EROFS `advise` / `startblk_hi`).
    pub c_blob_addr_hi: U16,
    /// Low byte: blob index + 1; high byte: bits 16–23 of the chunk-info index (EROFS
    /// `device_id`).
    pub c_blob_addr_lo: U16,
    /// Uncompressed offset / 4096 in the blob (EROFS `blkaddr`).
    pub c_blk_addr: U32,
}

const _: () = assert!(size_of::<RafsV6InodeChunkAddr>() == 8);
const _: () = assert!(offset_of!(RafsV6InodeChunkAddr, c_blob_addr_lo) == 2);
const _: () = assert!(offset_of!(RafsV6InodeChunkAddr, c_blk_addr) == 4);

impl RafsV6InodeChunkAddr {
    /// The blob index (`(device_id & 0xFF) - 1`), or `None` if the low byte is 0 (the
    /// bootstrap itself, never used for data).
    pub fn blob_index(&self) -> Option<u8> {
        (self.c_blob_addr_lo.get() as u8).checked_sub(1)
    }

    /// The chunk-info index within the blob (24 bits).
    pub fn chunk_index(&self) -> u32 {
        u32::from(self.c_blob_addr_lo.get() >> 8) << 16 | u32::from(self.c_blob_addr_hi.get())
    }

    /// The EROFS block address (uncompressed offset / 4096).
    pub fn block_addr(&self) -> u32 {
        self.c_blk_addr.get()
    }

    /// The chunk's uncompressed offset in the blob: `block_addr * 4096`.
    pub fn uncompressed_offset(&self) -> u64 {
        u64::from(self.c_blk_addr.get()) * RAFS_BLOCK_SIZE
    }

    /// Whether this is an EROFS hole (`blkaddr == 0xFFFFFFFF`; nydus never writes one).
    pub fn is_hole(&self) -> bool {
        self.c_blk_addr.get() == u32::MAX
    }
}

/// One record of the bootstrap's chunk table (80 bytes, nydus `RafsV5ChunkInfo`), one per
/// unique (digest, blob) chunk.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RafsV5ChunkInfo {
    /// Chunk digest of the uncompressed data.
    pub block_id: Digest,
    /// Blob index.
    pub blob_index: U32,
    /// Bit 0: compressed.
    pub flags: U32,
    /// Stored size.
    pub compressed_size: U32,
    /// Uncompressed size.
    pub uncompressed_size: U32,
    /// Stored offset in the blob.
    pub compressed_offset: U64,
    /// Offset in the blob's uncompressed space.
    pub uncompressed_offset: U64,
    /// Offset in the first file that produced the chunk.
    pub file_offset: U64,
    /// Chunk-info index within the blob.
    pub index: U32,
    /// Reserved.
    pub reserved: U32,
}

const _: () = assert!(size_of::<RafsV5ChunkInfo>() == 80);
const _: () = assert!(offset_of!(RafsV5ChunkInfo, blob_index) == 32);
const _: () = assert!(offset_of!(RafsV5ChunkInfo, compressed_offset) == 48);
const _: () = assert!(offset_of!(RafsV5ChunkInfo, file_offset) == 64);
const _: () = assert!(offset_of!(RafsV5ChunkInfo, index) == 72);

impl RafsV5ChunkInfo {
    /// Whether the chunk is stored compressed (flag bit 0).
    pub fn is_compressed(&self) -> bool {
        self.flags.get() & 1 != 0
    }
}

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

/// A chunk-info v1 entry (16 bytes, nydus `BlobChunkInfoV1Ondisk`): two bit-packed words.
#[doc(alias = "BlobChunkInfoV1Ondisk")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ChunkInfoV1 {
    /// Bits 8–11: size−1 bits 20–23; bits 12–43: uncompressed offset (in place);
    /// bits 44–63: size−1 bits 0–19.
    pub uncomp_info: U64,
    /// Bits 0–39: compressed offset; bits 40–43: size−1 bits 20–23; bits 44–63: size−1
    /// bits 0–19.
    pub comp_info: U64,
}

const _: () = assert!(size_of::<ChunkInfoV1>() == 16);

impl ChunkInfoV1 {
    /// Offset in the blob's uncompressed space.
    pub fn uncompressed_offset(&self) -> u64 {
        self.uncomp_info.get() & 0x0000_0FFF_FFFF_F000
    }

    /// Uncompressed size (1 to 16 MiB).
    pub fn uncompressed_size(&self) -> u32 {
        let u = self.uncomp_info.get();
        ((((u >> 8) & 0xF) << 20 | u >> 44) + 1) as u32
    }

    /// Offset of the stored bytes in the blob.
    pub fn compressed_offset(&self) -> u64 {
        self.comp_info.get() & 0xFF_FFFF_FFFF
    }

    /// Stored size (1 to 16 MiB).
    pub fn compressed_size(&self) -> u32 {
        let c = self.comp_info.get();
        ((((c >> 40) & 0xF) << 20 | c >> 44) + 1) as u32
    }

    /// Whether the stored bytes are compressed (v1: the two sizes differ).
    pub fn is_compressed(&self) -> bool {
        self.compressed_size() != self.uncompressed_size()
    }

    /// All fields.
    pub fn decode(&self) -> ChunkInfo {
        ChunkInfo {
            uncompressed_offset: self.uncompressed_offset(),
            uncompressed_size: self.uncompressed_size(),
            compressed_offset: self.compressed_offset(),
            compressed_size: self.compressed_size(),
            compressed: self.is_compressed(),
            zran: None,
        }
    }
}

bitflags! {
    /// Flags of a chunk-info v2 entry (bits 56–63 of `uncomp_info`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ChunkInfoV2Flags: u8 {
        /// The stored bytes are compressed.
        const COMPRESSED = 0x01;
        /// The chunk lives inside a gzip stream (ZRan random access).
        const ZRAN = 0x02;
    }
}

/// A chunk-info v2 entry (24 bytes, nydus `BlobChunkInfoV2Ondisk`).
#[doc(alias = "BlobChunkInfoV2Ondisk")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ChunkInfoV2 {
    /// Bits 0–31: uncompressed offset >> 12; bits 32–55: size−1; bits 56–63: flags.
    pub uncomp_info: U64,
    /// Bits 0–39: compressed offset; bits 40–63: compressed size.
    pub comp_info: U64,
    /// ZRAN: bits 0–31 offset in the context's output, bits 32–63 context index.
    pub data: U64,
}

const _: () = assert!(size_of::<ChunkInfoV2>() == 24);

impl ChunkInfoV2 {
    /// Offset in the blob's uncompressed space.
    pub fn uncompressed_offset(&self) -> u64 {
        (self.uncomp_info.get() & 0xFFFF_FFFF) << 12
    }

    /// Uncompressed size.
    pub fn uncompressed_size(&self) -> u32 {
        (((self.uncomp_info.get() >> 32) & 0xFF_FFFF) + 1) as u32
    }

    /// The flags (unknown bits retained).
    pub fn flags(&self) -> ChunkInfoV2Flags {
        ChunkInfoV2Flags::from_bits_retain((self.uncomp_info.get() >> 56) as u8)
    }

    /// Offset of the stored bytes.
    pub fn compressed_offset(&self) -> u64 {
        self.comp_info.get() & 0xFF_FFFF_FFFF
    }

    /// Stored size (not minus one).
    pub fn compressed_size(&self) -> u32 {
        (self.comp_info.get() >> 40) as u32
    }

    /// ZRAN: `(context index, offset in the context's inflated output)`.
    pub fn zran(&self) -> Option<(u32, u32)> {
        let d = self.data.get();
        self.flags()
            .contains(ChunkInfoV2Flags::ZRAN)
            .then_some(((d >> 32) as u32, d as u32))
    }

    /// All fields.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] for flag bits other than COMPRESSED and ZRAN.
    pub fn decode(&self) -> Result<ChunkInfo, Error> {
        let flags = self.flags();
        if !ChunkInfoV2Flags::all().contains(flags) {
            return Err(bad("unknown chunk-info v2 flags", flags.bits().into()));
        }
        Ok(ChunkInfo {
            uncompressed_offset: self.uncompressed_offset(),
            uncompressed_size: self.uncompressed_size(),
            compressed_offset: self.compressed_offset(),
            compressed_size: self.compressed_size(),
            compressed: flags.contains(ChunkInfoV2Flags::COMPRESSED),
            zran: self.zran(),
        })
    }
}

/// A decoded chunk-info entry (v1 or v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Offset in the blob's uncompressed space (4 KiB aligned in v6 blobs).
    pub uncompressed_offset: u64,
    /// Uncompressed size.
    pub uncompressed_size: u32,
    /// Offset of the stored bytes in the blob.
    pub compressed_offset: u64,
    /// Stored size.
    pub compressed_size: u32,
    /// Whether the stored bytes must be decompressed.
    pub compressed: bool,
    /// v2 ZRAN chunks: `(context index, offset in the context's output)`.
    pub zran: Option<(u32, u32)>,
}

impl ChunkInfo {
    /// End of the chunk in the uncompressed space (saturating).
    pub fn uncompressed_end(&self) -> u64 {
        self.uncompressed_offset
            .saturating_add(u64::from(self.uncompressed_size))
    }

    /// End of the stored bytes (saturating; offsets are at most 40 bits).
    pub fn compressed_end(&self) -> u64 {
        self.compressed_offset
            .saturating_add(u64::from(self.compressed_size))
    }
}

/// The decompressed chunk-info array of one blob.
#[derive(Debug, Clone, Copy)]
pub enum ChunkInfoArray<'a> {
    /// 16-byte entries.
    V1(&'a [ChunkInfoV1]),
    /// 24-byte entries.
    V2(&'a [ChunkInfoV2]),
}

impl<'a> ChunkInfoArray<'a> {
    /// View the first `count` entries of `bytes` (the decompressed array; with ZRAN, the
    /// ZRan tables that follow are ignored), v2 if `features` has CHUNK_INFO_V2.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `bytes` is too short.
    pub fn new(bytes: &'a [u8], features: BlobFeatures, count: u32) -> Result<Self, Error> {
        let n = count as usize;
        let v2 = features.contains(BlobFeatures::CHUNK_INFO_V2);
        let trunc = |size: u64| Error::Truncated {
            what: "chunk-info array",
            needed: u64::from(count) * size,
            available: bytes.len() as u64,
        };
        if v2 {
            <[ChunkInfoV2]>::ref_from_prefix_with_elems(bytes, n)
                .map(|(a, _)| ChunkInfoArray::V2(a))
                .map_err(|_| trunc(24))
        } else {
            <[ChunkInfoV1]>::ref_from_prefix_with_elems(bytes, n)
                .map(|(a, _)| ChunkInfoArray::V1(a))
                .map_err(|_| trunc(16))
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            ChunkInfoArray::V1(a) => a.len(),
            ChunkInfoArray::V2(a) => a.len(),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decode entry `index`; `None` past the end.
    ///
    /// # Errors
    ///
    /// See [`ChunkInfoV2::decode`].
    pub fn get(&self, index: usize) -> Option<Result<ChunkInfo, Error>> {
        match self {
            ChunkInfoArray::V1(a) => a.get(index).map(|c| Ok(c.decode())),
            ChunkInfoArray::V2(a) => a.get(index).map(ChunkInfoV2::decode),
        }
    }

    /// Decode every entry in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<ChunkInfo, Error>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

/// Most bytes of inflate history a ZRan context's dictionary holds: deflate's 32 KiB window.
pub const ZRAN_DICT_WINDOW: u32 = 1 << 15;
/// Largest inflated output of one ZRan context (nydus refuses more: its
/// `RAFS_MAX_CHUNK_SIZE`, [`MAX_CHUNK_SIZE`]).
pub const ZRAN_MAX_OUT_LEN: u32 = MAX_CHUNK_SIZE;
/// Largest gzip input of one ZRan context accepted: twice [`ZRAN_MAX_OUT_LEN`] (deflate only
/// grows data by its stored-block and member-header overhead).
pub const ZRAN_MAX_IN_LEN: u32 = 2 * MAX_CHUNK_SIZE;

/// One ZRan inflate context (40 bytes, nydus `ZranInflateContext`): a checkpoint in the
/// gzip stream of a `targz-ref` blob from which inflation can start.
///
/// Inflating `in_len` gzip bytes from `in_offset` yields `out_len` bytes of the
/// uncompressed tar stream from `out_offset`. The checkpoint sits on a deflate block
/// boundary that need not be a byte boundary: the `ctx_bits` high bits of `ctx_byte` (the
/// byte at `in_offset - 1`) are the first bits to decode ([`ZranInflateContext::prime`]).
/// Back-references reach into the `dict_size` bytes at `dict_offset` of the dictionary
/// table ([`ZranTable`]): the output just before `out_offset`, at most 32 KiB.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ZranInflateContext {
    /// Offset of the context's first (whole) byte in the gzip file.
    pub in_offset: U64,
    /// Offset of its output in the uncompressed (tar) stream.
    pub out_offset: U64,
    /// Offset of its dictionary in the dictionary table.
    pub dict_offset: U64,
    /// Gzip bytes to read from `in_offset`.
    pub in_len: U32,
    /// Bytes they inflate to.
    pub out_len: U32,
    /// Size of the dictionary (0 at the start of a gzip member, else up to 32 KiB).
    pub dict_size: U32,
    /// The byte before `in_offset`, whose high `ctx_bits` bits start the context.
    pub ctx_byte: u8,
    /// Number of bits of `ctx_byte` still to decode (0 to 7).
    pub ctx_bits: u8,
    /// Reserved.
    pub reserved: [u8; 2],
}

const _: () = assert!(size_of::<ZranInflateContext>() == 40);
const _: () = assert!(offset_of!(ZranInflateContext, dict_offset) == 16);
const _: () = assert!(offset_of!(ZranInflateContext, in_len) == 24);
const _: () = assert!(offset_of!(ZranInflateContext, out_len) == 28);
const _: () = assert!(offset_of!(ZranInflateContext, dict_size) == 32);
const _: () = assert!(offset_of!(ZranInflateContext, ctx_byte) == 36);
const _: () = assert!(offset_of!(ZranInflateContext, ctx_bits) == 37);

impl ZranInflateContext {
    /// The gzip byte range to read, `in_offset..in_offset + in_len` (`None` if it overflows).
    pub fn input_range(&self) -> Option<core::ops::Range<u64>> {
        let start = self.in_offset.get();
        Some(start..start.checked_add(self.in_len.get().into())?)
    }

    /// The bits to feed the inflater before the input (zlib's `inflatePrime`):
    /// `(count, value)`, the `ctx_bits` high bits of `ctx_byte` shifted down, or `None` when
    /// the context starts on a byte boundary.
    pub fn prime(&self) -> Option<(u8, u8)> {
        let bits = self.ctx_bits;
        (1..=7)
            .contains(&bits)
            .then(|| (bits, self.ctx_byte >> (8 - bits)))
    }

    /// Check the context's own fields: `ctx_bits` at most 7, an output of 1 to
    /// [`ZRAN_MAX_OUT_LEN`] bytes, an input of 1 to [`ZRAN_MAX_IN_LEN`] bytes inside 2^40,
    /// a dictionary of at most [`ZRAN_DICT_WINDOW`] bytes.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] naming the rule.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ctx_bits > 7 {
            return Err(bad("ZRan context bits", self.ctx_bits.into()));
        }
        let out_len = self.out_len.get();
        if out_len == 0 || out_len > ZRAN_MAX_OUT_LEN {
            return Err(bad("ZRan context output size", out_len.into()));
        }
        let in_len = self.in_len.get();
        if in_len == 0 || in_len > ZRAN_MAX_IN_LEN {
            return Err(bad("ZRan context input size", in_len.into()));
        }
        if self.input_range().is_none_or(|r| r.end > 1 << 40) {
            return Err(bad("ZRan context input offset", self.in_offset.get()));
        }
        if self.dict_size.get() > ZRAN_DICT_WINDOW {
            return Err(bad("ZRan dictionary size", self.dict_size.get().into()));
        }
        Ok(())
    }
}

/// The ZRan tables of a ZRAN blob, inside its decompressed chunk-info data: the context
/// array ([`ZranInflateContext`], `s_ci_zran_count` of them at `s_ci_zran_offset`, right
/// after the chunk infos) and the dictionary table after it, together
/// `s_ci_zran_size` bytes.
#[derive(Debug, Clone, Copy)]
pub struct ZranTable<'a> {
    contexts: &'a [ZranInflateContext],
    dictionaries: &'a [u8],
}

impl<'a> ZranTable<'a> {
    /// View the ZRan tables of `ci` (the whole decompressed chunk-info data) as `header`
    /// describes them, under nydus's rules: a ZRAN blob has v2 chunk infos, the table starts
    /// right after them (`24 × s_ci_entries`), lies inside `ci`, has at most one context per
    /// chunk and holds the whole context array.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] naming the rule.
    pub fn new(ci: &'a [u8], header: &BlobCompressionContextHeader) -> Result<Self, Error> {
        let features = header.features();
        if !features.contains(BlobFeatures::ZRAN | BlobFeatures::CHUNK_INFO_V2) {
            return Err(bad(
                "ZRan table without ZRAN and v2 chunk infos",
                features.bits().into(),
            ));
        }
        let entries = header.s_ci_entries.get();
        let offset = header.s_ci_zran_offset.get();
        let size = header.s_ci_zran_size.get();
        let count = header.s_ci_zran_count.get();
        if offset != u64::from(entries) * size_of::<ChunkInfoV2>() as u64 {
            return Err(bad("ZRan table offset", offset));
        }
        if count > entries {
            return Err(bad("more ZRan contexts than chunks", count.into()));
        }
        let range = table_range(offset, size, ci.len() as u64)
            .ok_or(bad("ZRan table beyond the chunk-info data", size))?;
        let (contexts, dictionaries) =
            <[ZranInflateContext]>::ref_from_prefix_with_elems(&ci[range], count as usize)
                .map_err(|_| bad("ZRan context array larger than the ZRan table", size))?;
        Ok(ZranTable {
            contexts,
            dictionaries,
        })
    }

    /// Number of contexts.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// Whether there are no contexts.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// The raw context array.
    pub fn contexts(&self) -> &'a [ZranInflateContext] {
        self.contexts
    }

    /// The dictionary table (every context's dictionary, back to back).
    pub fn dictionaries(&self) -> &'a [u8] {
        self.dictionaries
    }

    /// Context `index`, checked ([`ZranInflateContext::validate`]), with its dictionary.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] for an index past the table, a context that breaks a rule or a
    /// dictionary outside the dictionary table.
    pub fn context(&self, index: u32) -> Result<(&'a ZranInflateContext, &'a [u8]), Error> {
        let ctx = self
            .contexts
            .get(index as usize)
            .ok_or(bad("ZRan context index", index.into()))?;
        ctx.validate()?;
        let dict = table_range(
            ctx.dict_offset.get(),
            ctx.dict_size.get().into(),
            self.dictionaries.len() as u64,
        )
        .ok_or(bad(
            "ZRan dictionary beyond the dictionary table",
            ctx.dict_offset.get(),
        ))?;
        Ok((ctx, &self.dictionaries[dict]))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn ext_sb() -> RafsV6SuperBlockExt {
        let mut sb = RafsV6SuperBlockExt::new_zeroed();
        sb.s_flags = U64::new(0xB4);
        sb.s_blob_table_offset = U64::new(0x1000);
        sb.s_blob_table_size = U32::new(256);
        sb.s_chunk_size = U32::new(0x10_0000);
        sb.s_chunk_table_offset = U64::new(0x9000);
        sb.s_chunk_table_size = U64::new(720);
        sb
    }

    #[test]
    fn ext_superblock_bytes() {
        // The worked example of rafs-v6.md §11 (0x480..0x4B0).
        let sb = ext_sb();
        let b = sb.as_bytes();
        assert_eq!(
            &b[..16],
            &[0xb4, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            &b[16..32],
            &[0, 1, 0, 0, 0, 0, 0x10, 0, 0, 0x90, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&b[32..40], &[0xd0, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sb.compressor(), Some(BlobCompressor::Zstd));
        assert_eq!(sb.digester(), Some(Digester::Blake3));
        assert_eq!(sb.blob_count(), 1);
        assert!(
            sb.flags()
                .contains(RafsSuperFlags::HAS_XATTR | RafsSuperFlags::EXPLICIT_UID_GID)
        );
        sb.validate(0xA000).unwrap();
        let mut boot = vec![0u8; 0xA000];
        boot[0x480..0x580].copy_from_slice(sb.as_bytes());
        assert_eq!(RafsV6SuperBlockExt::from_bootstrap(&boot).unwrap(), &sb);
        assert_eq!(sb.blob_table(&boot).unwrap().len(), 1);
        assert_eq!(sb.chunk_table(&boot).unwrap().len(), 9);
        assert_eq!(sb.prefetch_table(&boot).unwrap().nids().count(), 0);
        assert!(matches!(
            RafsV6SuperBlockExt::from_bootstrap(&boot[..0x57F]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn ext_superblock_rules() {
        let check = |f: &dyn Fn(&mut RafsV6SuperBlockExt), len: u64| {
            let mut sb = ext_sb();
            f(&mut sb);
            sb.validate(len)
        };
        let is_bad = |r: Result<(), Error>| matches!(r, Err(Error::BadRafs { .. }));
        assert!(is_bad(check(&|s| s.s_flags = U64::new(0x7), 0xA000)));
        assert!(is_bad(check(&|s| s.s_flags = U64::new(0x81), 0xA000)));
        assert!(is_bad(check(&|s| s.s_flags = U64::new(0x8C), 0xA000)));
        assert!(is_bad(check(
            &|s| s.s_chunk_size = U32::new(0x3000),
            0xA000
        )));
        assert!(is_bad(check(&|s| s.s_chunk_size = U32::new(0x800), 0xA000)));
        assert!(is_bad(check(
            &|s| s.s_chunk_size = U32::new(0x200_0000),
            0xA000
        )));
        assert!(is_bad(check(
            &|s| s.s_blob_table_size = U32::new(255),
            0xA000
        )));
        assert!(is_bad(check(
            &|s| s.s_blob_table_offset = U64::new(0x800),
            0xA000
        )));
        assert!(is_bad(check(
            &|s| s.s_blob_table_offset = U64::new(u64::MAX),
            0xA000
        )));
        assert!(is_bad(check(
            &|s| s.s_chunk_table_size = U64::new(81),
            0xA000
        )));
        assert!(is_bad(check(
            &|s| s.s_chunk_table_offset = U64::new(0x9001),
            0xA000
        )));
        assert!(is_bad(check(&|_| {}, 0x9100)));
        assert!(is_bad(check(
            &|s| s.s_prefetch_table_size = U32::new(3),
            0xA000
        )));
        assert!(is_bad(check(
            &|s| {
                s.s_prefetch_table_offset = U64::new(0x9FFC);
                s.s_prefetch_table_size = U32::new(8);
            },
            0xA000
        )));
        let boot = vec![0u8; 0x100];
        assert!(ext_sb().blob_table(&boot).is_err());
        assert!(ext_sb().chunk_table(&boot).is_err());
        let mut sb = ext_sb();
        sb.s_prefetch_table_offset = U64::new(0x1000);
        sb.s_prefetch_table_size = U32::new(4);
        assert!(sb.prefetch_table(&boot).is_err());
    }

    fn blob() -> RafsV6Blob {
        let mut b = RafsV6Blob::new_zeroed();
        b.blob_id[..4].copy_from_slice(b"f276");
        b.chunk_size = U32::new(0x10_0000);
        b.chunk_count = U32::new(9);
        b.compression_algo = U32::new(3);
        b.features = U32::new(0x4000_0001);
        b.compressed_size = U64::new(0x276A8A);
        b.uncompressed_size = U64::new(0x495000);
        b.ci_compressor = U32::new(3);
        b.ci_offset = U64::new(0x275A19);
        b.ci_compressed_size = U64::new(113);
        b.ci_uncompressed_size = U64::new(144);
        b
    }

    #[test]
    fn blob_record_bytes() {
        // rafs-v6.md §11, blob table entry 0 from 0x40.
        let b = blob();
        let raw = b.as_bytes();
        assert_eq!(
            &raw[0x40..0x60],
            &[
                0, 0, 0, 0, 0, 0, 0x10, 0, 9, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x40, 0x8a,
                0x6a, 0x27, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            &raw[0x60..0x88],
            &[
                0, 0x50, 0x49, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x19, 0x5a, 0x27, 0, 0, 0, 0,
                0, 0x71, 0, 0, 0, 0, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(b.blob_id().unwrap(), "f276");
        assert_eq!(b.compressor(), Some(BlobCompressor::Zstd));
        assert_eq!(b.ci_compressor(), Some(BlobCompressor::Zstd));
        assert_eq!(b.digester(), Some(Digester::Blake3));
        assert_eq!(b.chunk_info_size(), 16);
        assert_eq!(b.compressed_data_size(), 0x275A19);
        assert_eq!(b.meta_header_offset(), Some(0x275A8A));
        assert!(
            b.features()
                .contains(BlobFeatures::ALIGNED | BlobFeatures::CAP_TAR_TOC)
        );
        b.validate(0, 0x10_0000).unwrap();
        let mut t = b;
        t.features = U32::new(0x7000_0021);
        assert_eq!(t.compressed_data_size(), 0x275A19 - 512);
        assert_eq!(blob_table(b.as_bytes()).unwrap().len(), 1);
        assert!(blob_table(&b.as_bytes()[..255]).is_err());
    }

    #[test]
    fn blob_record_rules() {
        let check = |f: &dyn Fn(&mut RafsV6Blob)| {
            let mut b = blob();
            f(&mut b);
            b.validate(0, 0x10_0000)
        };
        let is_bad = |r: Result<(), Error>| matches!(r, Err(Error::BadRafs { .. }));
        assert!(is_bad(check(&|b| b.blob_id[0] = 0xFF)));
        assert!(is_bad(check(&|b| b.blob_index = U32::new(1))));
        assert!(is_bad(check(&|b| b.chunk_size = U32::new(0x1000))));
        assert!(is_bad(check(&|b| b.features = U32::new(0x4000_0000))));
        assert!(is_bad(check(&|b| b.features = U32::new(0x4000_0041))));
        assert!(is_bad(check(&|b| b.features = U32::new(0x8000_0001))));
        assert!(is_bad(check(&|b| b.chunk_count = U32::new((1 << 24) + 1))));
        assert!(is_bad(check(
            &|b| b.uncompressed_size = U64::new((1 << 44) + 1)
        )));
        assert!(is_bad(check(
            &|b| b.compressed_size = U64::new((1 << 40) + 1)
        )));
        assert!(is_bad(check(&|b| b.ci_compressed_size = U64::new(145))));
        assert!(is_bad(check(&|b| b.ci_uncompressed_size = U64::new(160))));
        assert!(is_bad(check(&|b| b.compression_algo = U32::new(4))));
        assert!(is_bad(check(&|b| b.digest_algo = U32::new(2))));
        // v2 + ZRAN: the size may exceed 24 * count (ZRan tables follow).
        assert!(
            check(&|b| {
                b.features = U32::new(0x4000_001D);
                b.ci_uncompressed_size = U64::new(24 * 9 + 100);
            })
            .is_ok()
        );
        assert!(is_bad(check(&|b| {
            b.features = U32::new(0x4000_001D);
            b.ci_uncompressed_size = U64::new(24 * 9 - 1);
        })));
        assert_eq!(BlobCompressor::from_id(2), Some(BlobCompressor::Gzip));
        assert_eq!(BlobCompressor::from_id(1), Some(BlobCompressor::Lz4Block));
        assert_eq!(BlobCompressor::from_id(0), Some(BlobCompressor::None));
    }

    #[test]
    fn prefetch() {
        let raw: Vec<u8> = [227u32, 193, 189, 0]
            .iter()
            .flat_map(|n| n.to_le_bytes())
            .collect();
        let t = PrefetchTable::new(&raw).unwrap();
        assert_eq!(t.nids().collect::<Vec<_>>(), [227, 193, 189]);
        assert_eq!(t.raw().len(), 4);
        assert!(!t.is_root_only(227));
        let root = PrefetchTable::new(&[128, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(root.is_root_only(128));
        assert!(PrefetchTable::new(&raw[..3]).is_err());
    }

    #[test]
    fn chunk_addr() {
        let a = RafsV6InodeChunkAddr::read_from_bytes(&[0, 0, 1, 1, 0, 0, 1, 0]).unwrap();
        assert_eq!(a.blob_index(), Some(0));
        assert_eq!(a.chunk_index(), 65536);
        assert_eq!(a.block_addr(), 0x1_0000);
        assert_eq!(a.uncompressed_offset(), 0x1000_0000);
        assert!(!a.is_hole());
        let b = RafsV6InodeChunkAddr::read_from_bytes(&[1, 2, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
            .unwrap();
        assert_eq!(b.blob_index(), None);
        assert_eq!(b.chunk_index(), 0xFF0201);
        assert!(b.is_hole());
    }

    #[test]
    fn chunk_info_v1() {
        let c = ChunkInfoV1::read_from_bytes(&[
            0x00, 0x20, 0x17, 0x00, 0x00, 0xf0, 0xff, 0xff, 0x7b, 0xe3, 0x16, 0x00, 0x00, 0x80,
            0x5d, 0x03,
        ])
        .unwrap();
        assert_eq!(c.uncompressed_offset(), 0x172000);
        assert_eq!(c.uncompressed_size(), 1 << 20);
        assert_eq!(c.compressed_offset(), 1_500_027);
        assert_eq!(c.compressed_size(), 13_785);
        assert!(c.is_compressed());
        // Size bits 20-23 (8..11 / 40..43): a 16 MiB chunk.
        let big = ChunkInfoV1 {
            uncomp_info: U64::new(0xFFFF_F000_0000_0F00),
            comp_info: U64::new(0xFFFF_FF00_0000_0000),
        };
        assert_eq!(big.uncompressed_size(), 16 << 20);
        assert_eq!(big.compressed_size(), 16 << 20);
        assert!(!big.is_compressed());
        let d = big.decode();
        assert_eq!(d.uncompressed_end(), 16 << 20);
        assert_eq!(d.compressed_end(), 16 << 20);
    }

    #[test]
    fn chunk_info_v2() {
        let raw = [
            0x03, 0, 0, 0, 0xff, 0xff, 0x0f, 0x03, 0xd0, 0x01, 0, 0, 0, 0xad, 0x00, 0x10, 0, 0x1a,
            0, 0, 0, 0, 0, 0,
        ];
        let c = ChunkInfoV2::read_from_bytes(&raw).unwrap();
        let d = c.decode().unwrap();
        assert_eq!(d.uncompressed_offset, 12288);
        assert_eq!(d.uncompressed_size, 0x10_0000);
        assert_eq!(d.compressed_offset, 464);
        assert_eq!(d.compressed_size, 0x1000AD);
        assert!(d.compressed);
        assert_eq!(d.zran, Some((0, 6656)));
        let mut bad = c;
        bad.uncomp_info = U64::new(c.uncomp_info.get() | 1 << 60);
        assert!(matches!(bad.decode(), Err(Error::BadRafs { .. })));
        let arr = ChunkInfoArray::new(&raw, BlobFeatures::CHUNK_INFO_V2, 1).unwrap();
        assert_eq!(arr.len(), 1);
        assert_eq!(arr.get(0).unwrap().unwrap(), d);
        assert!(arr.get(1).is_none());
        assert!(ChunkInfoArray::new(&raw, BlobFeatures::CHUNK_INFO_V2, 2).is_err());
        let v1 = ChunkInfoArray::new(&raw, BlobFeatures::ALIGNED, 1).unwrap();
        assert!(matches!(v1, ChunkInfoArray::V1(_)));
        assert!(!v1.is_empty());
        assert_eq!(v1.iter().count(), 1);
    }

    #[test]
    fn meta_header() {
        let mut h = BlobCompressionContextHeader::new_zeroed();
        h.s_magic = U32::new(BLOB_META_MAGIC);
        h.s_magic2 = U32::new(BLOB_META_MAGIC);
        h.s_features = U32::new(0x4000_0001);
        h.s_ci_compressor = U32::new(3);
        h.s_ci_entries = U32::new(9);
        h.s_ci_offset = U64::new(0x275A19);
        h.s_ci_compressed_size = U64::new(113);
        h.s_ci_uncompressed_size = U64::new(144);
        let b = h.as_bytes();
        // rafs-v6.md §11: header bytes at 0x275A8A.
        assert_eq!(
            &b[..20],
            &[
                0x0b, 0xb1, 0x0b, 0xb1, 0x01, 0, 0, 0x40, 3, 0, 0, 0, 9, 0, 0, 0, 0x19, 0x5a, 0x27,
                0
            ]
        );
        assert_eq!(&b[4092..], &[0x0b, 0xb1, 0x0b, 0xb1]);
        let parsed = BlobCompressionContextHeader::parse(b).unwrap();
        assert!(parsed.matches(&blob()));
        assert_eq!(parsed.ci_compressor(), Some(BlobCompressor::Zstd));
        assert_eq!(
            parsed.features(),
            BlobFeatures::ALIGNED | BlobFeatures::CAP_TAR_TOC
        );
        let mut other = blob();
        other.ci_compressed_size = U64::new(1);
        assert!(!parsed.matches(&other));
        let mut bad = h;
        bad.s_magic = U32::new(1);
        assert!(matches!(
            BlobCompressionContextHeader::parse(bad.as_bytes()),
            Err(Error::BadRafs { .. })
        ));
        let mut bad = h;
        bad.s_magic2 = U32::new(1);
        assert!(BlobCompressionContextHeader::parse(bad.as_bytes()).is_err());
        assert!(matches!(
            BlobCompressionContextHeader::parse(&b[..4095]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn chunk_table_record() {
        let mut r = RafsV5ChunkInfo::new_zeroed();
        r.block_id = [0xAB; 32];
        r.blob_index = U32::new(1);
        r.flags = U32::new(1);
        r.compressed_size = U32::new(2);
        r.uncompressed_size = U32::new(3);
        r.compressed_offset = U64::new(4);
        r.uncompressed_offset = U64::new(5);
        r.file_offset = U64::new(6);
        r.index = U32::new(7);
        let b = r.as_bytes();
        assert_eq!(
            &b[32..48],
            &[1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]
        );
        assert_eq!(b[48], 4);
        assert_eq!(b[56], 5);
        assert_eq!(b[64], 6);
        assert_eq!(b[72], 7);
        assert!(r.is_compressed());
        assert_eq!(chunk_table(b).unwrap().len(), 1);
        assert!(chunk_table(&b[..79]).is_err());
    }

    /// Chunk-info data of a 2-chunk ZRAN blob: two v2 chunk infos, two contexts, a
    /// dictionary of 3 bytes for the second; and the header describing it.
    fn zran_ci() -> (Vec<u8>, BlobCompressionContextHeader) {
        let mut ci = vec![0u8; 48];
        let mut c0 = ZranInflateContext::new_zeroed();
        c0.in_offset = U64::new(10);
        c0.in_len = U32::new(1000);
        c0.out_len = U32::new(5000);
        let mut c1 = ZranInflateContext::new_zeroed();
        c1.in_offset = U64::new(900);
        c1.out_offset = U64::new(4000);
        c1.in_len = U32::new(800);
        c1.out_len = U32::new(3000);
        c1.dict_offset = U64::new(0);
        c1.dict_size = U32::new(3);
        c1.ctx_byte = 0b1011_0000;
        c1.ctx_bits = 3;
        ci.extend_from_slice(c0.as_bytes());
        ci.extend_from_slice(c1.as_bytes());
        ci.extend_from_slice(b"abc");
        let mut h = BlobCompressionContextHeader::new_zeroed();
        h.s_features = U32::new(0x4000_001D);
        h.s_ci_entries = U32::new(2);
        h.s_ci_uncompressed_size = U64::new(ci.len() as u64);
        h.s_ci_zran_offset = U64::new(48);
        h.s_ci_zran_size = U64::new(83);
        h.s_ci_zran_count = U32::new(2);
        (ci, h)
    }

    #[test]
    fn zran_context_bytes() {
        let (ci, _) = zran_ci();
        // nydus's field order: three le64, three le32, two bytes, two reserved.
        assert_eq!(&ci[48 + 40..48 + 48], &[0x84, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &ci[48 + 64..48 + 80],
            &[0x20, 3, 0, 0, 0xb8, 0x0b, 0, 0, 3, 0, 0, 0, 0xb0, 3, 0, 0]
        );
        let c1 = ZranInflateContext::read_from_bytes(&ci[88..128]).unwrap();
        assert_eq!(c1.input_range(), Some(900..1700));
        // The 3 high bits of 0b1011_0000 are 0b101.
        assert_eq!(c1.prime(), Some((3, 0b101)));
        c1.validate().unwrap();
        let c0 = ZranInflateContext::read_from_bytes(&ci[48..88]).unwrap();
        assert_eq!(c0.prime(), None);
    }

    #[test]
    fn zran_table() {
        let (ci, h) = zran_ci();
        let t = ZranTable::new(&ci, &h).unwrap();
        assert_eq!(t.len(), 2);
        assert!(!t.is_empty());
        assert_eq!(t.dictionaries(), b"abc");
        let (c0, d0) = t.context(0).unwrap();
        assert_eq!((c0.out_len.get(), d0), (5000, &b""[..]));
        let (c1, d1) = t.context(1).unwrap();
        assert_eq!((c1.out_offset.get(), d1), (4000, &b"abc"[..]));
        assert!(matches!(t.context(2), Err(Error::BadRafs { .. })));
        assert_eq!(t.contexts().len(), 2);
    }

    #[test]
    fn zran_table_rules() {
        let is_bad = |r: Result<ZranTable<'_>, Error>| matches!(r, Err(Error::BadRafs { .. }));
        let (ci, h) = zran_ci();
        let check = |f: &dyn Fn(&mut BlobCompressionContextHeader)| {
            let mut h = h;
            f(&mut h);
            is_bad(ZranTable::new(&ci, &h))
        };
        assert!(check(&|h| h.s_features = U32::new(0x4000_0019)), "no v2");
        assert!(check(&|h| h.s_features = U32::new(0x4000_0015)), "no ZRAN");
        assert!(check(&|h| h.s_ci_zran_offset = U64::new(47)));
        assert!(
            check(&|h| h.s_ci_entries = U32::new(1)),
            "offset != 24 × entries"
        );
        assert!(check(&|h| h.s_ci_zran_size = U64::new(84)), "past the data");
        assert!(check(&|h| h.s_ci_zran_size = U64::new(79)), "contexts cut");
        assert!(check(&|h| h.s_ci_zran_size = U64::new(u64::MAX)));
        assert!(
            check(&|h| {
                h.s_ci_zran_count = U32::new(3);
            }),
            "more contexts than chunks"
        );
        assert!(is_bad(ZranTable::new(&ci[..100], &h)));
        // No dictionaries at all is fine (one context at the start of the stream).
        let mut one = h;
        one.s_ci_zran_count = U32::new(1);
        one.s_ci_zran_size = U64::new(40);
        assert_eq!(ZranTable::new(&ci, &one).unwrap().len(), 1);
    }

    #[test]
    fn zran_context_rules() {
        let (mut ci, h) = zran_ci();
        let bad_ctx = |ci: &[u8]| {
            matches!(
                ZranTable::new(ci, &h).unwrap().context(1),
                Err(Error::BadRafs { .. })
            )
        };
        let at = 88;
        let ctx =
            |ci: &mut [u8]| *ZranInflateContext::mut_from_bytes(&mut ci[at..at + 40]).unwrap();
        let set = |ci: &mut Vec<u8>, f: &dyn Fn(&mut ZranInflateContext)| {
            let mut c = ctx(ci);
            f(&mut c);
            let mut v = ci.clone();
            v[at..at + 40].copy_from_slice(c.as_bytes());
            v
        };
        assert!(!bad_ctx(&ci));
        assert!(bad_ctx(&set(&mut ci, &|c| c.ctx_bits = 8)));
        assert!(bad_ctx(&set(&mut ci, &|c| c.out_len = U32::new(0))));
        assert!(bad_ctx(
            &set(&mut ci, &|c| c.out_len = U32::new(ZRAN_MAX_OUT_LEN + 1))
        ));
        assert!(bad_ctx(&set(&mut ci, &|c| c.in_len = U32::new(0))));
        assert!(bad_ctx(
            &set(&mut ci, &|c| c.in_len = U32::new(ZRAN_MAX_IN_LEN + 1))
        ));
        assert!(bad_ctx(
            &set(&mut ci, &|c| c.in_offset = U64::new(u64::MAX - 10))
        ));
        assert!(bad_ctx(&set(&mut ci, &|c| c.in_offset = U64::new(1 << 40))));
        assert!(bad_ctx(
            &set(&mut ci, &|c| c.dict_size = U32::new(ZRAN_DICT_WINDOW + 1))
        ));
        assert!(
            bad_ctx(&set(&mut ci, &|c| c.dict_size = U32::new(4))),
            "past the table"
        );
        assert!(bad_ctx(&set(&mut ci, &|c| c.dict_offset = U64::new(1))));
        assert!(bad_ctx(
            &set(&mut ci, &|c| c.dict_offset = U64::new(u64::MAX))
        ));
        // The largest legal values pass.
        let big = set(&mut ci, &|c| {
            c.out_len = U32::new(ZRAN_MAX_OUT_LEN);
            c.in_len = U32::new(ZRAN_MAX_IN_LEN);
            c.ctx_bits = 7;
        });
        assert!(!bad_ctx(&big));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000), n in 0u32..400) {
            if let Ok(sb) = RafsV6SuperBlockExt::from_bootstrap(&bytes) {
                let _ = sb.validate(bytes.len() as u64);
                let _ = (sb.compressor(), sb.digester(), sb.blob_count());
                if let Ok(t) = sb.blob_table(&bytes) {
                    for (i, b) in t.iter().enumerate() {
                        let _ = b.validate(i as u32, sb.chunk_size());
                        let _ = (b.compressed_data_size(), b.meta_header_offset());
                    }
                }
                if let Ok(p) = sb.prefetch_table(&bytes) {
                    let _ = p.nids().count();
                }
                let _ = sb.chunk_table(&bytes);
            }
            if let Ok(h) = BlobCompressionContextHeader::parse(&bytes)
                && let Ok(t) = ZranTable::new(&bytes, h)
            {
                    for i in 0..=t.len() as u32 {
                        if let Ok((c, _)) = t.context(i) {
                            let _ = (c.input_range(), c.prime());
                        }
                    }
            }
            for f in [BlobFeatures::ALIGNED, BlobFeatures::CHUNK_INFO_V2] {
                if let Ok(a) = ChunkInfoArray::new(&bytes, f, n) {
                    for c in a.iter().flatten() {
                        let _ = (c.uncompressed_end(), c.compressed_end());
                    }
                }
            }
            if let Ok((a, _)) = RafsV6InodeChunkAddr::read_from_prefix(&bytes) {
                let _ = (a.blob_index(), a.chunk_index(), a.uncompressed_offset());
            }
            let _ = PrefetchTable::new(&bytes);
            let _ = blob_table(&bytes);
        }
    }
}
