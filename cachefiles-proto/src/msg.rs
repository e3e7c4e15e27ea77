//! The raw message structs of `include/uapi/linux/cachefiles.h`, as the kernel writes them.
//!
//! Every integer is in **host byte order**: the kernel fills plain `__u32`/`__u64` fields and
//! never converts them. The structs are decoded by copy (`read_from_prefix`), so the read buffer
//! needs no particular alignment. [`crate::Request`] is the checked, typed view; use these only
//! to build test vectors or to look at a message the typed layer refused.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of `struct cachefiles_msg`, the header that starts every message.
pub const MSG_HEADER_SIZE: usize = 16;

/// Size of `struct cachefiles_open`, the fixed part of an OPEN payload (keys follow it).
pub const OPEN_PAYLOAD_SIZE: usize = 16;

/// Size of `struct cachefiles_read`, the payload of a READ.
pub const READ_PAYLOAD_SIZE: usize = 16;

/// `CACHEFILES_MSG_MAX_SIZE`: a read buffer of this size always holds one whole message.
pub const MSG_MAX_SIZE: usize = 1024;

/// Largest cookie key fscache accepts (`fscache_cookie.c`). Note that the kernel's
/// `cachefiles_cook_key` crashes on keys of 253..=255 bytes; see [`COOKIE_KEY_SAFE_MAX`].
pub const COOKIE_KEY_MAX: usize = 255;

/// Largest cookie key that does not hit the `BUG_ON` in the kernel's `cachefiles_cook_key`.
/// Daemons that name blobs should keep their names at or below this length.
pub const COOKIE_KEY_SAFE_MAX: usize = 252;

/// Largest volume key string fscache accepts (`fscache_volume.c`), without its NUL.
pub const VOLUME_KEY_MAX: usize = 255;

/// `enum cachefiles_opcode` value of an OPEN request.
pub const CACHEFILES_OP_OPEN: u32 = 0;
/// `enum cachefiles_opcode` value of a CLOSE request.
pub const CACHEFILES_OP_CLOSE: u32 = 1;
/// `enum cachefiles_opcode` value of a READ request.
pub const CACHEFILES_OP_READ: u32 = 2;

/// The id of one request, used in the reply (`copen` for OPEN, the ioctl for READ).
///
/// Allocated by the kernel cyclically over the whole `u32` range; unique among pending requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u32);

/// The id of one cache object (one anonymous fd), allocated in `1..=i32::MAX` when its OPEN is
/// read and stable until that fd is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub u32);

impl core::fmt::Display for MsgId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl core::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The header of every message (`struct cachefiles_msg`, 16 bytes).
#[doc(alias = "cachefiles_msg")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MsgHeader {
    /// Id for the reply (`copen` or the READ_COMPLETE ioctl).
    pub msg_id: u32,
    /// `CACHEFILES_OP_*`.
    pub opcode: u32,
    /// Length of the whole message, header included.
    pub len: u32,
    /// Id of the cache object, filled in when the message is read.
    pub object_id: u32,
}

/// The fixed part of an OPEN payload (`struct cachefiles_open`, 16 bytes); the volume key
/// (with its NUL) and then the cookie key follow it.
#[doc(alias = "cachefiles_open")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct OpenPayload {
    /// Length of the volume key **including** its trailing NUL.
    pub volume_key_size: u32,
    /// Length of the cookie key (binary, no NUL).
    pub cookie_key_size: u32,
    /// The anonymous fd the kernel installed in the reading process.
    pub fd: u32,
    /// Always 0 so far.
    pub flags: u32,
}

/// The payload of a READ (`struct cachefiles_read`, 16 bytes).
#[doc(alias = "cachefiles_read")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ReadPayload {
    /// Byte offset in the object (the blob).
    pub off: u64,
    /// Byte length.
    pub len: u64,
}

const _: () = assert!(size_of::<MsgHeader>() == MSG_HEADER_SIZE);
const _: () = assert!(size_of::<OpenPayload>() == OPEN_PAYLOAD_SIZE);
const _: () = assert!(size_of::<ReadPayload>() == READ_PAYLOAD_SIZE);
const _: () = assert!(core::mem::offset_of!(MsgHeader, opcode) == 4);
const _: () = assert!(core::mem::offset_of!(MsgHeader, len) == 8);
const _: () = assert!(core::mem::offset_of!(MsgHeader, object_id) == 12);
const _: () = assert!(core::mem::offset_of!(OpenPayload, cookie_key_size) == 4);
const _: () = assert!(core::mem::offset_of!(OpenPayload, fd) == 8);
const _: () = assert!(core::mem::offset_of!(OpenPayload, flags) == 12);
const _: () = assert!(core::mem::offset_of!(ReadPayload, len) == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_host_endian_and_needs_no_alignment() {
        let mut buf = [0u8; 17];
        let h = MsgHeader {
            msg_id: 7,
            opcode: CACHEFILES_OP_READ,
            len: 32,
            object_id: 3,
        };
        buf[1..].copy_from_slice(h.as_bytes());
        // Decoding from an odd address works: the struct is copied out.
        let (back, rest) = MsgHeader::read_from_prefix(&buf[1..]).unwrap();
        assert_eq!(back, h);
        assert!(rest.is_empty());
        assert_eq!(&buf[1..5], &7u32.to_ne_bytes());
    }
}
