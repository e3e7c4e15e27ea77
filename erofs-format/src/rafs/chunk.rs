//! The bootstrap's chunk addresses and its chunk table.

use super::limits::{Digest, RAFS_BLOCK_SIZE, bad};
use crate::error::Error;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// View a chunk table (whole 80-byte records).
///
/// # Errors
///
/// [`Error::BadRafs`] if the length is not a multiple of 80.
pub fn chunk_table(bytes: &[u8]) -> Result<&[RafsV5ChunkInfo], Error> {
    <[RafsV5ChunkInfo]>::ref_from_bytes(bytes)
        .map_err(|_| bad("chunk table size not a multiple of 80", bytes.len() as u64))
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
        // The kernel's `device_id & 0xFF`: the low byte.
        self.c_blob_addr_lo.get().to_le_bytes()[0].checked_sub(1)
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
