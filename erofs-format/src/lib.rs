//! placeholder (being written)
#![no_std]
#![forbid(unsafe_code)]

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

/// Byte offset of the superblock in the primary device.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
