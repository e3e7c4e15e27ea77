//! A sans-IO, `no_std` codec for the Linux **cachefiles on-demand** protocol: the messages the
//! kernel sends to a user-space daemon through `/dev/cachefiles` and the commands the daemon
//! writes back. This is how EROFS over fscache (and Nydus RAFS v6) pulls image data lazily.
//!
//! Where it sits: the kernel (EROFS → fscache → cachefiles) asks, this crate decodes and
//! encodes, and a daemon such as the `ondemand` crate does the I/O. Nothing here makes a
//! syscall, allocates, or needs `std`.
//!
//! - [`Request`]: one message read from the device (OPEN, CLOSE, READ), decoded with every
//!   length and key-size check the format implies; [`Request::encode`] writes one back, for
//!   tests and test doubles of the kernel.
//! - [`Command`]: the text commands (`dir`, `tag`, `bind ondemand`, `copen`, `restore`, the
//!   culling limits, ...), with an encoder and a decoder that parses like the kernel.
//! - [`msg`]: the raw `struct cachefiles_msg` / `cachefiles_open` / `cachefiles_read`, in host
//!   byte order, decoded by copy so the read buffer needs no alignment.
//! - [`ioctl::CACHEFILES_IOC_READ_COMPLETE`]: the number of the "cread" ioctl that completes a
//!   READ.
//!
//! # Example
//!
//! Decode an OPEN as the kernel sends it for `mount -t erofs none -o fsid=abc`, and answer it:
//!
//! ```
//! use cachefiles_proto::{Command, OpenReply, Request};
//! use cachefiles_proto::msg::{MsgHeader, OpenPayload, CACHEFILES_OP_OPEN};
//! use zerocopy::IntoBytes;
//!
//! // What one read() of /dev/cachefiles returns (host byte order).
//! let mut buf = [0u8; 45];
//! let header = MsgHeader { msg_id: 7, opcode: CACHEFILES_OP_OPEN, len: 45, object_id: 1 };
//! let open = OpenPayload { volume_key_size: 10, cookie_key_size: 3, fd: 9, flags: 0 };
//! buf[..16].copy_from_slice(header.as_bytes());
//! buf[16..32].copy_from_slice(open.as_bytes());
//! buf[32..].copy_from_slice(b"erofs,abc\0abc");
//!
//! let Request::Open(req) = Request::decode(&buf)? else { unreachable!() };
//! assert_eq!(req.volume_key, b"erofs,abc"); // the NUL is checked and dropped
//! assert_eq!(req.cookie_key, b"abc");
//! assert_eq!(req.fd, 9);
//!
//! // The blob is 1 MiB: write this to the device with one write().
//! let mut out = [0u8; 64];
//! let n = Command::Copen { msg_id: req.msg_id, reply: OpenReply::Size(1 << 20) }.encode(&mut out)?;
//! assert_eq!(&out[..n], b"copen 7,1048576");
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! [`DecodeError`] and [`EncodeError`] are small `Copy` enums carrying the numbers that were
//! wrong. Unknown opcodes are [`DecodeError::UnknownOpcode`], so a daemon can log and skip
//! them.
//!
//! # Panics
//!
//! None: no byte string makes a decoder panic (a property test checks it).
//!
//! # Features
//!
//! - `std` (default): kept for compatibility; the error types implement `core::error::Error`
//!   either way.
//!
//! # Safety
//!
//! `#![forbid(unsafe_code)]`.
#![no_std]
#![forbid(unsafe_code)]

pub mod command;
pub mod error;
pub mod ioctl;
pub mod msg;
pub mod request;

pub use command::{COMMAND_MAX_LEN, Command, Errno, OpenReply};
pub use error::{DecodeError, EncodeError};
pub use msg::{MSG_HEADER_SIZE, MSG_MAX_SIZE, MsgId, ObjectId};
pub use request::{CloseRequest, OpenRequest, ReadRequest, Request};
