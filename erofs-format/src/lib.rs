//! placeholder (being written)
#![no_std]
#![forbid(unsafe_code)]

/// Byte offset of the superblock in the primary device.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
