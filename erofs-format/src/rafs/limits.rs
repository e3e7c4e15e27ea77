//! RAFS v6 constants and sizes.

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

pub(super) fn bad(what: &'static str, value: u64) -> Error {
    Error::BadRafs { what, value }
}

/// `offset..offset + size` as indexes into a bootstrap of `len` bytes, if it fits.
pub(super) fn table_range(offset: u64, size: u64, len: u64) -> Option<core::ops::Range<usize>> {
    let end = offset.checked_add(size)?;
    if end > len {
        return None;
    }
    Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
}
