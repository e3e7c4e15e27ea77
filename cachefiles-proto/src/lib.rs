//! placeholder (being written)
#![no_std]
#![forbid(unsafe_code)]

/// Size of `struct cachefiles_msg` without its payload.
pub const MSG_HEADER_SIZE: usize = 16;
