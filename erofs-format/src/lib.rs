//! Zero-copy, `no_std` descriptions of the EROFS on-disk format and of the Nydus RAFS v6
//! additions.
//!
//! This crate is the bottom of the erofs-rs stack. It knows the bytes of an EROFS image
//! (as Linux 6.12 reads them, plus the later fields erofs-utils 1.9.4 writes) and nothing
//! else: no I/O, no allocation, no caches. `erofs-reader` builds a filesystem API on it
//! (paths, `read_dir`, file data over any byte source), and the `ondemand` daemon uses it
//! through the reader to serve image blobs to the kernel's cachefiles on-demand mode.
//!
//! One on-disk concept per module:
//!
//! | module | structures |
//! | --- | --- |
//! | [`superblock`] | [`SuperBlock`](superblock::SuperBlock), feature flags, validation at mount |
//! | [`checksum`] | the superblock crc32c |
//! | [`inode`] | compact and extended inodes, `i_format`, [`Inode`](inode::Inode) |
//! | [`dirent`] | directory blocks, validated once, binary-search lookup |
//! | [`xattr`] | inline xattr area, entries, shared ids, short and long name prefixes |
//! | [`device`] | device table slots of multi-device images |
//! | [`chunk`] | chunk-based inodes: block maps and chunk indexes |
//! | [`compress`] | compressed inodes: map header, lcluster indexes, algorithm configs |
//! | [`rafs`] | Nydus RAFS v6: extended superblock, blob table, prefetch table, blob meta |
//!
//! Raw structures are `#[repr(C)]` [`zerocopy`] types with little-endian fields and the
//! kernel's field names; they are borrowed straight out of the image bytes. Parsers check a
//! structure once, the way the kernel does, and return a typed [`Error`] for anything they
//! refuse, so that the accessors used afterwards cannot panic.
//!
//! # Example
//!
//! Build block 0 of a tiny image from typed structures, then parse it back:
//!
//! ```
//! use erofs_format::superblock::{EROFS_SUPER_MAGIC, FeatureCompat, SuperBlock};
//! use erofs_format::{Nid, checksum};
//! use zerocopy::{FromZeros, IntoBytes};
//!
//! let mut sb = SuperBlock::new_zeroed();
//! sb.magic = EROFS_SUPER_MAGIC.into();
//! sb.blkszbits = 12; // 4 KiB blocks
//! sb.feature_compat = (FeatureCompat::SB_CHKSUM | FeatureCompat::MTIME).bits().into();
//! sb.rootnid_2b = 36.into();
//! sb.meta_blkaddr = 1.into();
//! sb.inos = 3.into();
//!
//! let mut block0 = [0u8; 4096];
//! block0[1024..1024 + 128].copy_from_slice(sb.as_bytes());
//! checksum::write_superblock_checksum(&mut block0)?;
//!
//! let sb = SuperBlock::parse(&block0)?;
//! assert_eq!(sb.block_size(), 4096);
//! assert_eq!(sb.root_nid(), Nid(36));
//! assert_eq!(sb.nid_offset(sb.root_nid())?, 4096 + 36 * 32);
//! assert_eq!(sb.compat().names().collect::<Vec<_>>(), ["sb_csum", "mtime"]);
//!
//! // A flipped bit in the checksummed range is caught.
//! block0[2000] ^= 1;
//! assert!(matches!(
//!     SuperBlock::parse(&block0),
//!     Err(erofs_format::Error::ChecksumMismatch { .. })
//! ));
//! # Ok::<(), erofs_format::Error>(())
//! ```
//!
//! # Errors
//!
//! Every parser returns [`Error`], a small `Copy` enum whose variants name the rule that
//! failed and carry the numbers that were wrong (and the errno the kernel would give).
//!
//! # Panics
//!
//! Nothing in this crate panics on any input: offsets and lengths read from an image go
//! through checked arithmetic, and the property tests feed every parser arbitrary bytes.
//!
//! # Features
//!
//! * `std` (default): use the hardware-accelerated [`crc32c`](https://docs.rs/crc32c) crate
//!   for the superblock checksum. Without it the crate is `no_std` and a table-driven
//!   implementation computes the same checksum.
//!
//! # Safety
//!
//! `#![forbid(unsafe_code)]`: all byte-to-struct conversions are zerocopy's checked ones.
#![no_std]
#![forbid(unsafe_code)]
// The style guide's "every offset and length from the image goes through checked
// arithmetic", held by lints (see DESIGN.md, "Lints for untrusted input"). Unit tests
// are exempt: they build their inputs from constants.
#![cfg_attr(
    not(test),
    warn(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)
)]

#[cfg(test)]
extern crate std;

mod block;
pub mod checksum;
pub mod chunk;
pub mod compress;
pub mod device;
pub mod dirent;
pub mod error;
pub mod inode;
pub mod rafs;
pub mod superblock;
pub mod xattr;

pub use error::Error;

/// Byte offset of the superblock in the primary device.
pub const SUPERBLOCK_OFFSET: u64 = 1024;

/// An inode number: the inode's 32-byte slot index from the metadata start.
///
/// The byte offset of inode `nid` is `meta_blkaddr * block_size + nid * 32`
/// ([`superblock::SuperBlock::nid_offset`]). The kernel also uses the nid as the inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nid(pub u64);

/// A block address: a count of filesystem blocks from the start of a device.
///
/// 32 bits on disk in most places; 48 bits with the 48BIT feature. [`chunk::NULL_ADDR`]
/// (all ones, widened) marks a hole in chunk tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlkAddr(pub u64);

impl core::fmt::Display for Nid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

impl core::fmt::Display for BlkAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}
