//! The typed view of the messages the kernel sends: [`Request`], decoded with every length and
//! key-size check the format implies, and encoded back (for tests and embedders' test doubles).

use zerocopy::{FromBytes, IntoBytes};

use crate::error::{DecodeError, EncodeError};
use crate::msg::{
    CACHEFILES_OP_CLOSE, CACHEFILES_OP_OPEN, CACHEFILES_OP_READ, COOKIE_KEY_MAX, MSG_HEADER_SIZE,
    MSG_MAX_SIZE, MsgHeader, MsgId, OPEN_PAYLOAD_SIZE, ObjectId, OpenPayload, READ_PAYLOAD_SIZE,
    ReadPayload, VOLUME_KEY_MAX,
};

/// Length of an OPEN message without its keys.
const OPEN_FIXED_LEN: usize = MSG_HEADER_SIZE + OPEN_PAYLOAD_SIZE;
/// Length of a READ message.
const READ_LEN: usize = MSG_HEADER_SIZE + READ_PAYLOAD_SIZE;
/// Largest `volume_key_size` (the key plus its NUL).
const VOLUME_KEY_SIZE_MAX: usize = VOLUME_KEY_MAX + 1;

/// One message read from `/dev/cachefiles`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A cache object was looked up: answer with `copen` (size or errno).
    Open(OpenRequest<'a>),
    /// A cache object was withdrawn: close its fd. No reply.
    Close(CloseRequest),
    /// Bytes of an object are missing: write them through the object's fd, then complete the
    /// request with the `READ_COMPLETE` ioctl, **always**, even when nothing could be written.
    Read(ReadRequest),
}

/// An OPEN request (`CACHEFILES_OP_OPEN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenRequest<'a> {
    /// Id to answer with `copen`.
    pub msg_id: MsgId,
    /// The new object's id; later READ and CLOSE requests carry it.
    pub object_id: ObjectId,
    /// The volume key **without** its trailing NUL, e.g. `erofs,<fsid>` or `erofs,<domain_id>`.
    pub volume_key: &'a [u8],
    /// The cookie key: the fsid for a primary (bootstrap) blob, the `device=` name or device
    /// tag for an extra device.
    pub cookie_key: &'a [u8],
    /// The anonymous fd the kernel installed in the process that read the message. The reader
    /// owns it from then on.
    pub fd: u32,
    /// `flags` (0 in every kernel so far).
    pub flags: u32,
}

/// A CLOSE request (`CACHEFILES_OP_CLOSE`): no reply expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseRequest {
    /// The message id (not used in any reply).
    pub msg_id: MsgId,
    /// The object to forget.
    pub object_id: ObjectId,
}

/// A READ request (`CACHEFILES_OP_READ`): make `[off, off + len)` present in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// Id to pass to the `READ_COMPLETE` ioctl.
    pub msg_id: MsgId,
    /// The object to fill.
    pub object_id: ObjectId,
    /// Byte offset in the object. `off + len` fits in an `i64` (checked when decoding).
    pub off: u64,
    /// Byte length.
    pub len: u64,
}

impl OpenRequest<'_> {
    /// The volume key as UTF-8, if it is.
    pub fn volume_key_str(&self) -> Option<&str> {
        core::str::from_utf8(self.volume_key).ok()
    }

    /// The cookie key as UTF-8, if it is.
    pub fn cookie_key_str(&self) -> Option<&str> {
        core::str::from_utf8(self.cookie_key).ok()
    }
}

impl<'a> Request<'a> {
    /// Decode one message. `buf` must be exactly what one `read()` of the device returned:
    /// its length must equal the header's `len`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the field and numbers that were wrong, including
    /// [`DecodeError::UnknownOpcode`] for a message kind this crate does not know.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (header, rest) =
            MsgHeader::read_from_prefix(buf).map_err(|_| DecodeError::Truncated {
                what: "message header",
                needed: MSG_HEADER_SIZE,
                available: buf.len(),
            })?;
        let len = header.len as usize;
        if len > MSG_MAX_SIZE {
            return Err(DecodeError::MessageTooLong {
                len: header.len,
                max: MSG_MAX_SIZE,
            });
        }
        if len != buf.len() {
            return Err(DecodeError::LengthMismatch {
                header_len: header.len,
                buffer_len: buf.len(),
            });
        }
        let msg_id = MsgId(header.msg_id);
        let object_id = ObjectId(header.object_id);
        let bad_length = |expected: usize| DecodeError::BadLength {
            opcode: header.opcode,
            len: header.len,
            expected: expected as u64,
        };
        match header.opcode {
            CACHEFILES_OP_OPEN => {
                let (open, keys) =
                    OpenPayload::read_from_prefix(rest).map_err(|_| bad_length(OPEN_FIXED_LEN))?;
                if open.volume_key_size == 0 {
                    return Err(DecodeError::VolumeKeyEmpty);
                }
                let vks = open.volume_key_size as usize;
                if vks > VOLUME_KEY_SIZE_MAX {
                    return Err(DecodeError::VolumeKeyTooLong {
                        size: open.volume_key_size,
                        max: VOLUME_KEY_SIZE_MAX,
                    });
                }
                let cks = open.cookie_key_size as usize;
                if cks > COOKIE_KEY_MAX {
                    return Err(DecodeError::CookieKeyTooLong {
                        size: open.cookie_key_size,
                        max: COOKIE_KEY_MAX,
                    });
                }
                // Both sizes are bounded above, so this sum cannot overflow.
                let expected = OPEN_FIXED_LEN + vks + cks;
                if expected != len {
                    return Err(bad_length(expected));
                }
                let (volume, cookie_key) = keys.split_at(vks);
                let (volume_key, nul) = volume.split_at(vks - 1);
                if nul[0] != 0 {
                    return Err(DecodeError::VolumeKeyNotTerminated { last: nul[0] });
                }
                if let Some(position) = volume_key.iter().position(|&b| b == 0) {
                    return Err(DecodeError::VolumeKeyInteriorNul { position });
                }
                if open.fd > i32::MAX as u32 {
                    return Err(DecodeError::FdOutOfRange { fd: open.fd });
                }
                Ok(Request::Open(OpenRequest {
                    msg_id,
                    object_id,
                    volume_key,
                    cookie_key,
                    fd: open.fd,
                    flags: open.flags,
                }))
            }
            CACHEFILES_OP_CLOSE => {
                if len != MSG_HEADER_SIZE {
                    return Err(bad_length(MSG_HEADER_SIZE));
                }
                Ok(Request::Close(CloseRequest { msg_id, object_id }))
            }
            CACHEFILES_OP_READ => {
                if len != READ_LEN {
                    return Err(bad_length(READ_LEN));
                }
                let (read, _) =
                    ReadPayload::read_from_prefix(rest).map_err(|_| bad_length(READ_LEN))?;
                check_range(read.off, read.len).ok_or(DecodeError::ReadRangeOverflow {
                    off: read.off,
                    len: read.len,
                })?;
                Ok(Request::Read(ReadRequest {
                    msg_id,
                    object_id,
                    off: read.off,
                    len: read.len,
                }))
            }
            opcode => Err(DecodeError::UnknownOpcode {
                opcode,
                msg_id: header.msg_id,
                len: header.len,
            }),
        }
    }

    /// The message id.
    pub fn msg_id(&self) -> MsgId {
        match self {
            Request::Open(r) => r.msg_id,
            Request::Close(r) => r.msg_id,
            Request::Read(r) => r.msg_id,
        }
    }

    /// The object id.
    pub fn object_id(&self) -> ObjectId {
        match self {
            Request::Open(r) => r.object_id,
            Request::Close(r) => r.object_id,
            Request::Read(r) => r.object_id,
        }
    }

    /// The `CACHEFILES_OP_*` opcode.
    pub fn opcode(&self) -> u32 {
        match self {
            Request::Open(_) => CACHEFILES_OP_OPEN,
            Request::Close(_) => CACHEFILES_OP_CLOSE,
            Request::Read(_) => CACHEFILES_OP_READ,
        }
    }

    /// Length of the encoded message (the header's `len`).
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::Open(r) => OPEN_FIXED_LEN + r.volume_key.len() + 1 + r.cookie_key.len(),
            Request::Close(_) => MSG_HEADER_SIZE,
            Request::Read(_) => READ_LEN,
        }
    }

    /// Encode the message as the kernel would write it, into the front of `buf`; returns its
    /// length. For tests, fuzzers and test doubles of the kernel.
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`], or a value the kernel could never send (a key too
    /// long, a volume key with a NUL, an fd above `i32::MAX`, a READ range past `i64::MAX`).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        if let Request::Open(r) = self {
            if r.volume_key.len() > VOLUME_KEY_MAX {
                return Err(EncodeError::KeyTooLong {
                    which: "volume",
                    len: r.volume_key.len(),
                    max: VOLUME_KEY_MAX,
                });
            }
            if r.cookie_key.len() > COOKIE_KEY_MAX {
                return Err(EncodeError::KeyTooLong {
                    which: "cookie",
                    len: r.cookie_key.len(),
                    max: COOKIE_KEY_MAX,
                });
            }
            if let Some(position) = r.volume_key.iter().position(|&b| b == 0) {
                return Err(EncodeError::VolumeKeyInteriorNul { position });
            }
            if r.fd > i32::MAX as u32 {
                return Err(EncodeError::FdOutOfRange { fd: r.fd });
            }
        }
        if let Request::Read(r) = self {
            check_range(r.off, r.len).ok_or(EncodeError::ReadRangeOverflow {
                off: r.off,
                len: r.len,
            })?;
        }
        let len = self.encoded_len();
        let available = buf.len();
        let out = buf.get_mut(..len).ok_or(EncodeError::BufferTooSmall {
            needed: len,
            available,
        })?;
        let header = MsgHeader {
            msg_id: self.msg_id().0,
            opcode: self.opcode(),
            // At most 16 + 16 + 256 + 255 bytes: fits.
            len: len as u32,
            object_id: self.object_id().0,
        };
        let (head, payload) = out.split_at_mut(MSG_HEADER_SIZE);
        head.copy_from_slice(header.as_bytes());
        match self {
            Request::Open(r) => {
                let fixed = OpenPayload {
                    volume_key_size: (r.volume_key.len() + 1) as u32,
                    cookie_key_size: r.cookie_key.len() as u32,
                    fd: r.fd,
                    flags: r.flags,
                };
                let (fixed_out, keys) = payload.split_at_mut(OPEN_PAYLOAD_SIZE);
                fixed_out.copy_from_slice(fixed.as_bytes());
                let (volume, cookie) = keys.split_at_mut(r.volume_key.len() + 1);
                volume[..r.volume_key.len()].copy_from_slice(r.volume_key);
                volume[r.volume_key.len()] = 0;
                cookie.copy_from_slice(r.cookie_key);
            }
            Request::Close(_) => {}
            Request::Read(r) => {
                payload.copy_from_slice(
                    ReadPayload {
                        off: r.off,
                        len: r.len,
                    }
                    .as_bytes(),
                );
            }
        }
        Ok(len)
    }
}

/// `Some(end)` if `[off, off + len)` is a valid file range (ends at or below `i64::MAX`).
fn check_range(off: u64, len: u64) -> Option<u64> {
    off.checked_add(len).filter(|&end| end <= i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_bytes(vks: u32, cks: u32, keys: &[u8], len: u32) -> [u8; 64] {
        let mut buf = [0u8; 64];
        let h = MsgHeader {
            msg_id: 1,
            opcode: CACHEFILES_OP_OPEN,
            len,
            object_id: 2,
        };
        buf[..16].copy_from_slice(h.as_bytes());
        let o = OpenPayload {
            volume_key_size: vks,
            cookie_key_size: cks,
            fd: 5,
            flags: 0,
        };
        buf[16..32].copy_from_slice(o.as_bytes());
        buf[32..32 + keys.len()].copy_from_slice(keys);
        buf
    }

    #[test]
    fn decodes_the_spec_example() {
        // fsid `abc`, no domain: volume key `erofs,abc\0` (10 bytes), cookie key `abc`: len 45.
        let buf = open_bytes(10, 3, b"erofs,abc\0abc", 45);
        let req = Request::decode(&buf[..45]).unwrap();
        let Request::Open(open) = req else {
            panic!("not an OPEN: {req:?}")
        };
        assert_eq!(open.volume_key, b"erofs,abc");
        assert_eq!(open.cookie_key_str(), Some("abc"));
        assert_eq!(
            (open.msg_id, open.object_id, open.fd),
            (MsgId(1), ObjectId(2), 5)
        );
        let mut again = [0u8; 64];
        assert_eq!(req.encode(&mut again), Ok(45));
        assert_eq!(&again[..45], &buf[..45]);
    }

    #[test]
    fn refuses_bad_open_keys() {
        let buf = open_bytes(10, 3, b"erofs,abcXabc", 45);
        assert_eq!(
            Request::decode(&buf[..45]),
            Err(DecodeError::VolumeKeyNotTerminated { last: b'X' })
        );
        let buf = open_bytes(10, 3, b"erofs\0abc\0abc", 45);
        assert_eq!(
            Request::decode(&buf[..45]),
            Err(DecodeError::VolumeKeyInteriorNul { position: 5 })
        );
        let buf = open_bytes(0, 3, b"abc", 35);
        assert_eq!(
            Request::decode(&buf[..35]),
            Err(DecodeError::VolumeKeyEmpty)
        );
        let buf = open_bytes(10, 4, b"erofs,abc\0abc", 45);
        assert_eq!(
            Request::decode(&buf[..45]),
            Err(DecodeError::BadLength {
                opcode: 0,
                len: 45,
                expected: 46
            })
        );
        let buf = open_bytes(257, 3, b"", 45);
        assert_eq!(
            Request::decode(&buf[..45]),
            Err(DecodeError::VolumeKeyTooLong {
                size: 257,
                max: 256
            })
        );
        let buf = open_bytes(10, 256, b"", 45);
        assert_eq!(
            Request::decode(&buf[..45]),
            Err(DecodeError::CookieKeyTooLong {
                size: 256,
                max: 255
            })
        );
        // Sizes that would overflow a naive u32 sum are refused by the bounds first.
        let buf = open_bytes(u32::MAX, u32::MAX, b"", 45);
        assert!(Request::decode(&buf[..45]).is_err());
    }

    #[test]
    fn refuses_bad_lengths() {
        assert_eq!(
            Request::decode(&[0u8; 15]),
            Err(DecodeError::Truncated {
                what: "message header",
                needed: 16,
                available: 15
            })
        );
        let h = MsgHeader {
            msg_id: 9,
            opcode: CACHEFILES_OP_CLOSE,
            len: 16,
            object_id: 4,
        };
        let mut buf = [0u8; 32];
        buf[..16].copy_from_slice(h.as_bytes());
        assert_eq!(
            Request::decode(&buf),
            Err(DecodeError::LengthMismatch {
                header_len: 16,
                buffer_len: 32
            })
        );
        assert_eq!(
            Request::decode(&buf[..16]),
            Ok(Request::Close(CloseRequest {
                msg_id: MsgId(9),
                object_id: ObjectId(4)
            }))
        );
        let h = MsgHeader {
            msg_id: 9,
            opcode: CACHEFILES_OP_READ,
            len: 16,
            object_id: 4,
        };
        buf[..16].copy_from_slice(h.as_bytes());
        assert_eq!(
            Request::decode(&buf[..16]),
            Err(DecodeError::BadLength {
                opcode: 2,
                len: 16,
                expected: 32
            })
        );
        let h = MsgHeader {
            msg_id: 9,
            opcode: 7,
            len: 16,
            object_id: 4,
        };
        buf[..16].copy_from_slice(h.as_bytes());
        assert_eq!(
            Request::decode(&buf[..16]),
            Err(DecodeError::UnknownOpcode {
                opcode: 7,
                msg_id: 9,
                len: 16
            })
        );
        let h = MsgHeader {
            msg_id: 9,
            opcode: 0,
            len: 2000,
            object_id: 4,
        };
        buf[..16].copy_from_slice(h.as_bytes());
        assert_eq!(
            Request::decode(&buf[..16]),
            Err(DecodeError::MessageTooLong {
                len: 2000,
                max: 1024
            })
        );
    }

    #[test]
    fn refuses_overflowing_read_ranges() {
        let read = ReadRequest {
            msg_id: MsgId(1),
            object_id: ObjectId(1),
            off: u64::MAX,
            len: 2,
        };
        let mut buf = [0u8; 32];
        assert_eq!(
            Request::Read(read).encode(&mut buf),
            Err(EncodeError::ReadRangeOverflow {
                off: u64::MAX,
                len: 2
            })
        );
        let h = MsgHeader {
            msg_id: 1,
            opcode: CACHEFILES_OP_READ,
            len: 32,
            object_id: 1,
        };
        buf[..16].copy_from_slice(h.as_bytes());
        buf[16..].copy_from_slice(
            ReadPayload {
                off: i64::MAX as u64,
                len: 1,
            }
            .as_bytes(),
        );
        assert_eq!(
            Request::decode(&buf),
            Err(DecodeError::ReadRangeOverflow {
                off: i64::MAX as u64,
                len: 1
            })
        );
    }
}
