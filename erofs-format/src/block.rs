//! Block sizes this crate (and the kernel) read.

/// Smallest supported `blkszbits` (512-byte blocks).
pub const MIN_BLKSZBITS: u8 = 9;
/// Largest supported `blkszbits` (4 KiB blocks, the x86-64 page size the kernel caps at).
pub const MAX_BLKSZBITS: u8 = 12;
