//! Errors of the codec: [`DecodeError`] for bytes that are not a valid message or command,
//! [`EncodeError`] for values that cannot be written.
//!
//! Both are small `Copy` enums that carry the numbers that were wrong, so they can be logged or
//! matched without allocation.

use core::fmt;

/// Why a byte string is not a valid kernel message or daemon command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before a structure that must be there.
    Truncated {
        /// What was being read (`"header"`, `"OPEN payload"`, ...).
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The header's `len` does not match the number of bytes `read()` returned.
    LengthMismatch {
        /// `len` in the header.
        header_len: u32,
        /// Bytes in the buffer.
        buffer_len: usize,
    },
    /// The header's `len` is larger than `CACHEFILES_MSG_MAX_SIZE`.
    MessageTooLong {
        /// `len` in the header.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// An opcode this crate does not know (a newer kernel, or garbage).
    UnknownOpcode {
        /// The opcode.
        opcode: u32,
        /// The message id, so a caller may log it.
        msg_id: u32,
        /// The header's `len`.
        len: u32,
    },
    /// The header's `len` does not fit the opcode's payload.
    BadLength {
        /// The opcode.
        opcode: u32,
        /// `len` in the header.
        len: u32,
        /// The length the payload implies.
        expected: u64,
    },
    /// `volume_key_size` is 0: the volume key must hold at least its NUL.
    VolumeKeyEmpty,
    /// `volume_key_size` is larger than fscache allows (255 characters plus the NUL).
    VolumeKeyTooLong {
        /// `volume_key_size`.
        size: u32,
        /// The largest allowed `volume_key_size`.
        max: usize,
    },
    /// The volume key's last byte is not NUL.
    VolumeKeyNotTerminated {
        /// The byte found where the NUL should be.
        last: u8,
    },
    /// The volume key has a NUL before its end.
    VolumeKeyInteriorNul {
        /// Position of the first NUL inside the key.
        position: usize,
    },
    /// `cookie_key_size` is larger than fscache allows.
    CookieKeyTooLong {
        /// `cookie_key_size`.
        size: u32,
        /// The limit.
        max: usize,
    },
    /// A READ whose `off + len` does not fit a file offset (`i64`).
    ReadRangeOverflow {
        /// `off`.
        off: u64,
        /// `len`.
        len: u64,
    },
    /// An OPEN whose `fd` is not a valid file descriptor number (above `i32::MAX`).
    FdOutOfRange {
        /// The `fd` field.
        fd: u32,
    },
    /// A command that is empty or starts with a newline (the kernel: `EINVAL`).
    EmptyCommand,
    /// A command with a NUL byte (the kernel: `EINVAL`).
    CommandNul {
        /// Position of the NUL.
        position: usize,
    },
    /// A command longer than one page minus one byte (the kernel: `EOPNOTSUPP`).
    CommandTooLong {
        /// Length of the command.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A command that starts with whitespace (the kernel: `EOPNOTSUPP`).
    LeadingWhitespace,
    /// A verb the kernel does not know (the kernel: `EOPNOTSUPP`).
    UnknownVerb {
        /// Length of the verb (its bytes may not be printable).
        len: usize,
    },
    /// A command whose argument is missing or malformed (the kernel: `EINVAL` or a parse error).
    BadArgument {
        /// The verb.
        verb: &'static str,
    },
    /// A number in a command does not fit its type or range.
    NumberOutOfRange {
        /// The verb.
        verb: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated {
                what,
                needed,
                available,
            } => {
                write!(f, "truncated {what}: need {needed} bytes, have {available}")
            }
            Self::LengthMismatch {
                header_len,
                buffer_len,
            } => write!(
                f,
                "message header says {header_len} bytes but the buffer holds {buffer_len}"
            ),
            Self::MessageTooLong { len, max } => {
                write!(f, "message length {len} exceeds the maximum {max}")
            }
            Self::UnknownOpcode {
                opcode,
                msg_id,
                len,
            } => {
                write!(f, "unknown opcode {opcode} (msg_id {msg_id}, {len} bytes)")
            }
            Self::BadLength {
                opcode,
                len,
                expected,
            } => write!(
                f,
                "opcode {opcode}: message length {len}, payload implies {expected}"
            ),
            Self::VolumeKeyEmpty => f.write_str("volume_key_size is 0 (no room for the NUL)"),
            Self::VolumeKeyTooLong { size, max } => {
                write!(f, "volume_key_size {size} exceeds {max}")
            }
            Self::VolumeKeyNotTerminated { last } => {
                write!(f, "volume key ends with byte {last:#04x}, not NUL")
            }
            Self::VolumeKeyInteriorNul { position } => {
                write!(f, "volume key has a NUL at byte {position}, before its end")
            }
            Self::CookieKeyTooLong { size, max } => {
                write!(f, "cookie_key_size {size} exceeds {max}")
            }
            Self::ReadRangeOverflow { off, len } => {
                write!(
                    f,
                    "READ range off {off} + len {len} overflows a file offset"
                )
            }
            Self::FdOutOfRange { fd } => write!(f, "OPEN fd {fd} is not a valid fd number"),
            Self::EmptyCommand => f.write_str("empty command"),
            Self::CommandNul { position } => write!(f, "command has a NUL at byte {position}"),
            Self::CommandTooLong { len, max } => {
                write!(f, "command of {len} bytes exceeds {max}")
            }
            Self::LeadingWhitespace => f.write_str("command starts with whitespace"),
            Self::UnknownVerb { len } => write!(f, "unknown command verb ({len} bytes)"),
            Self::BadArgument { verb } => write!(f, "`{verb}`: missing or malformed argument"),
            Self::NumberOutOfRange { verb } => write!(f, "`{verb}`: number out of range"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a value cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A command argument is empty where the kernel needs one.
    EmptyArgument {
        /// The verb.
        verb: &'static str,
    },
    /// A command argument has a byte the kernel would misread: NUL, newline, leading
    /// whitespace, or `/` in a `cull`/`inuse` name.
    ForbiddenByte {
        /// The verb.
        verb: &'static str,
        /// The byte.
        byte: u8,
        /// Its position in the argument.
        position: usize,
    },
    /// The command would exceed one page minus one byte.
    CommandTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A culling percentage of 100 or more.
    PercentOutOfRange {
        /// The value.
        percent: u8,
    },
    /// A `copen` size larger than `i64::MAX`.
    SizeOutOfRange {
        /// The size.
        size: u64,
    },
    /// A key longer than the kernel allows.
    KeyTooLong {
        /// `"volume"` or `"cookie"`.
        which: &'static str,
        /// Its length (without NUL).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An fd number above `i32::MAX`.
    FdOutOfRange {
        /// The fd.
        fd: u32,
    },
    /// A volume key with a NUL byte inside.
    VolumeKeyInteriorNul {
        /// Position of the NUL.
        position: usize,
    },
    /// A READ whose `off + len` does not fit a file offset.
    ReadRangeOverflow {
        /// `off`.
        off: u64,
        /// `len`.
        len: u64,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { needed, available } => {
                write!(f, "buffer too small: need {needed} bytes, have {available}")
            }
            Self::EmptyArgument { verb } => write!(f, "`{verb}` needs a non-empty argument"),
            Self::ForbiddenByte {
                verb,
                byte,
                position,
            } => write!(
                f,
                "`{verb}` argument has forbidden byte {byte:#04x} at position {position}"
            ),
            Self::CommandTooLong { len, max } => {
                write!(f, "command of {len} bytes exceeds {max}")
            }
            Self::PercentOutOfRange { percent } => {
                write!(f, "culling limit {percent}% is not below 100%")
            }
            Self::SizeOutOfRange { size } => write!(f, "object size {size} exceeds i64::MAX"),
            Self::KeyTooLong { which, len, max } => {
                write!(f, "{which} key of {len} bytes exceeds {max}")
            }
            Self::FdOutOfRange { fd } => write!(f, "fd {fd} is not a valid fd number"),
            Self::VolumeKeyInteriorNul { position } => {
                write!(f, "volume key has a NUL at byte {position}")
            }
            Self::ReadRangeOverflow { off, len } => {
                write!(
                    f,
                    "READ range off {off} + len {len} overflows a file offset"
                )
            }
        }
    }
}

impl core::error::Error for EncodeError {}
