//! The RAFS v6 extended superblock and the bootstrap tables it locates.

use super::blob::{BlobCompressor, Digester, RafsV6Blob, blob_table};
use super::chunk::{RafsV5ChunkInfo, chunk_table};
use super::limits::{
    BLOB_RECORD_SIZE, EXT_SUPERBLOCK_OFFSET, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, RAFS_BLOCK_SIZE, bad,
    table_range,
};
use super::prefetch::PrefetchTable;
use crate::error::Error;
use bitflags::bitflags;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

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

impl RafsV6SuperBlockExt {
    /// Read the extended superblock from a bootstrap (at [`EXT_SUPERBLOCK_OFFSET`]).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the bootstrap is too short.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a compile-time constant offset (1024 + 128)"
    )]
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
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "division by the nonzero constant BLOB_RECORD_SIZE (256)"
    )]
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
        if !bt_size.is_multiple_of(BLOB_RECORD_SIZE as u64) {
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
