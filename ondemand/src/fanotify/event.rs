//! The fanotify event codec: the bytes one `read` of a fanotify group returns, decoded with
//! every length checked (`FAN_PRE_ACCESS` events with their range record), and the response
//! word written back. No syscalls here; the transport is [`super::FanotifyDaemon`].

use std::os::fd::RawFd;

use nix::errno::Errno;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `FAN_PRE_ACCESS` (`include/uapi/linux/fanotify.h`, Linux 6.14): the pre-content access
/// hook. Not in `libc` 0.2.191 nor `nix` 0.30.
pub const FAN_PRE_ACCESS: u64 = 0x0010_0000;

/// `FAN_EVENT_INFO_TYPE_RANGE` (`include/uapi/linux/fanotify.h`, Linux 6.14): the info
/// record type of [`FileRange`].
pub const FAN_EVENT_INFO_TYPE_RANGE: u8 = 6;

/// `FANOTIFY_METADATA_VERSION` (`include/uapi/linux/fanotify.h`): the only event layout this
/// module reads.
pub const FANOTIFY_METADATA_VERSION: u8 = 3;

/// `FAN_ALLOW` (`include/uapi/linux/fanotify.h`).
const FAN_ALLOW: u32 = 0x01;
/// `FAN_DENY` (`include/uapi/linux/fanotify.h`).
pub(super) const FAN_DENY: u32 = 0x02;
/// `FAN_ERRNO_SHIFT` (`include/uapi/linux/fanotify.h`, Linux 6.14): `FAN_DENY_ERRNO(e)` is
/// `FAN_DENY | (e & 0xff) << 24`.
const FAN_ERRNO_SHIFT: u32 = 24;

/// `struct fanotify_event_metadata` (host-endian; 24 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
#[doc(alias = "fanotify_event_metadata")]
struct RawEventMetadata {
    event_len: u32,
    vers: u8,
    reserved: u8,
    metadata_len: u16,
    mask: u64,
    fd: i32,
    pid: i32,
}
const _: () = assert!(size_of::<RawEventMetadata>() == 24);

/// `struct fanotify_event_info_header` (4 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
#[doc(alias = "fanotify_event_info_header")]
struct RawInfoHeader {
    info_type: u8,
    pad: u8,
    len: u16,
}
const _: () = assert!(size_of::<RawInfoHeader>() == 4);

/// `struct fanotify_event_info_range` (24 bytes; the header and 4 bytes of padding first).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
#[doc(alias = "fanotify_event_info_range")]
struct RawInfoRange {
    info_type: u8,
    pad: u8,
    len: u16,
    pad2: u32,
    offset: u64,
    count: u64,
}
const _: () = assert!(size_of::<RawInfoRange>() == 24);

/// Write the response `response` for the event whose fd number is `fd` to `group`.
pub(super) fn write_response(
    group: impl std::os::fd::AsFd,
    fd: i32,
    response: u32,
) -> Result<(), Errno> {
    let r = RawResponse { fd, response };
    loop {
        match nix::unistd::write(&group, r.as_bytes()) {
            Err(Errno::EINTR) => continue,
            Ok(n) if n == size_of::<RawResponse>() => return Ok(()),
            Ok(_) => return Err(Errno::EIO),
            Err(e) => return Err(e),
        }
    }
}

/// `struct fanotify_response` (8 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
#[doc(alias = "fanotify_response")]
struct RawResponse {
    fd: i32,
    response: u32,
}
const _: () = assert!(size_of::<RawResponse>() == 8);

/// The range record of a pre-content event: the reader wants bytes `[offset, offset + count)`.
/// The kernel aligns both to pages; `count == 0` is sent when the file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(alias = "fanotify_event_info_range")]
pub struct FileRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes (0: the file was opened; see [`ZeroCount`]).
    pub count: u64,
}

/// One decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event mask (`FAN_PRE_ACCESS`, ...).
    pub mask: u64,
    /// The fd the kernel installed in this process for the event (`-1`: none, e.g. a queue
    /// overflow). Its owner must respond to the event and then close it.
    pub fd: RawFd,
    /// The process (or thread) whose access caused the event.
    pub pid: i32,
    /// The range record, if the event had one.
    pub range: Option<FileRange>,
}

/// Why an event could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Fewer bytes than an event header remain in the buffer.
    #[error("{len} bytes left, less than an event header (24)")]
    Truncated {
        /// Bytes left.
        len: usize,
    },
    /// `event_len` is shorter than the header or runs past the bytes read.
    #[error("event_len {event_len} with {available} bytes left")]
    BadEventLen {
        /// The event's `event_len`.
        event_len: u32,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A metadata version other than [`FANOTIFY_METADATA_VERSION`].
    #[error("fanotify metadata version {0}, expected 3")]
    BadVersion(u8),
    /// `metadata_len` is shorter than the header or longer than the event.
    #[error("metadata_len {metadata_len} in an event of {event_len} bytes")]
    BadMetadataLen {
        /// The event's `metadata_len`.
        metadata_len: u16,
        /// The event's `event_len`.
        event_len: u32,
    },
    /// An info record whose length is too short or runs past the event.
    #[error("info record type {info_type} of {len} bytes at byte {at} of a {event_len}-byte event")]
    BadInfoRecord {
        /// The record's type.
        info_type: u8,
        /// The record's length.
        len: u16,
        /// Where it starts in the event.
        at: usize,
        /// The event's length.
        event_len: u32,
    },
}

/// An event that did not decode, with its fd when the header was readable (so it can still
/// be denied and closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadEvent {
    /// The event's fd, if its header could be read.
    pub fd: Option<RawFd>,
    /// What was wrong.
    pub error: EventError,
}

/// Decode the events of one `read` of a fanotify group. Every length is checked against the
/// buffer: a malformed event ends the iteration after reporting it when its length cannot be
/// trusted, and never panics.
///
/// ```
/// use ondemand::fanotify::{Events, FAN_PRE_ACCESS};
/// // One FAN_PRE_ACCESS event (fd 7, pid 42) with a range record [8192, 12288).
/// let mut buf = Vec::new();
/// buf.extend_from_slice(&48u32.to_ne_bytes()); // event_len
/// buf.extend_from_slice(&[3, 0]); // vers, reserved
/// buf.extend_from_slice(&24u16.to_ne_bytes()); // metadata_len
/// buf.extend_from_slice(&FAN_PRE_ACCESS.to_ne_bytes());
/// buf.extend_from_slice(&7i32.to_ne_bytes());
/// buf.extend_from_slice(&42i32.to_ne_bytes());
/// buf.extend_from_slice(&[6, 0]); // FAN_EVENT_INFO_TYPE_RANGE, pad
/// buf.extend_from_slice(&24u16.to_ne_bytes());
/// buf.extend_from_slice(&[0; 4]);
/// buf.extend_from_slice(&8192u64.to_ne_bytes());
/// buf.extend_from_slice(&4096u64.to_ne_bytes());
/// let events: Vec<_> = Events::new(&buf).collect();
/// let ev = events[0].unwrap();
/// assert_eq!((ev.fd, ev.pid, ev.range.unwrap().offset, ev.range.unwrap().count), (7, 42, 8192, 4096));
/// assert_eq!(events.len(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Events<'a> {
    buf: &'a [u8],
}

impl<'a> Events<'a> {
    /// The events in `buf` (what one `read` returned).
    pub fn new(buf: &'a [u8]) -> Self {
        Events { buf }
    }
}

impl Iterator for Events<'_> {
    type Item = Result<Event, BadEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let Ok((meta, _)) = RawEventMetadata::read_from_prefix(self.buf) else {
            let len = self.buf.len();
            self.buf = &[];
            return Some(Err(BadEvent {
                fd: None,
                error: EventError::Truncated { len },
            }));
        };
        let event_len = usize::try_from(meta.event_len).unwrap_or(usize::MAX);
        let fd = (meta.fd >= 0).then_some(meta.fd);
        if event_len < size_of::<RawEventMetadata>() || event_len > self.buf.len() {
            let available = self.buf.len();
            // The next event's position is unknown: stop here.
            self.buf = &[];
            return Some(Err(BadEvent {
                fd,
                error: EventError::BadEventLen {
                    event_len: meta.event_len,
                    available,
                },
            }));
        }
        let (event, rest) = self.buf.split_at(event_len);
        self.buf = rest;
        Some(decode_event(&meta, event).map_err(|error| BadEvent { fd, error }))
    }
}

/// Decode one event of exactly `event.len()` bytes (its header already read as `meta`).
fn decode_event(meta: &RawEventMetadata, event: &[u8]) -> Result<Event, EventError> {
    if meta.vers != FANOTIFY_METADATA_VERSION {
        return Err(EventError::BadVersion(meta.vers));
    }
    let metadata_len = usize::from(meta.metadata_len);
    if metadata_len < size_of::<RawEventMetadata>() || metadata_len > event.len() {
        return Err(EventError::BadMetadataLen {
            metadata_len: meta.metadata_len,
            event_len: meta.event_len,
        });
    }
    let mut range = None;
    let mut at = metadata_len;
    while at < event.len() {
        let record = &event[at..];
        let bad = |info_type, len| EventError::BadInfoRecord {
            info_type,
            len,
            at,
            event_len: meta.event_len,
        };
        let Ok((hdr, _)) = RawInfoHeader::read_from_prefix(record) else {
            return Err(bad(0, 0));
        };
        let len = usize::from(hdr.len);
        if len < size_of::<RawInfoHeader>() || len > record.len() {
            return Err(bad(hdr.info_type, hdr.len));
        }
        if hdr.info_type == FAN_EVENT_INFO_TYPE_RANGE {
            let Ok((r, _)) = RawInfoRange::read_from_prefix(&record[..len]) else {
                return Err(bad(hdr.info_type, hdr.len));
            };
            range = Some(FileRange {
                offset: r.offset,
                count: r.count,
            });
        }
        // Other records (pidfd, fid, ...) are skipped: this group does not ask for them.
        at += len;
    }
    Ok(Event {
        mask: meta.mask,
        fd: meta.fd,
        pid: meta.pid,
        range,
    })
}

/// The response word for an event: `FAN_ALLOW`, or `FAN_DENY` carrying `errno` in its top
/// byte (`FAN_DENY_ERRNO`, Linux 6.14) when `errno` is one the kernel accepts for pre-content
/// events (`EIO`, `EPERM`, `EBUSY`, `ETXTBSY`, `EAGAIN`, `ENOSPC`, `EDQUOT`); any other errno
/// is sent as `EIO`. `None` is plain `FAN_DENY` (the reader gets `EPERM`).
pub fn response_word(allow: bool, errno: Option<i32>) -> u32 {
    if allow {
        return FAN_ALLOW;
    }
    let Some(errno) = errno else {
        return FAN_DENY;
    };
    let accepted = [
        Errno::EIO,
        Errno::EPERM,
        Errno::EBUSY,
        Errno::ETXTBSY,
        Errno::EAGAIN,
        Errno::ENOSPC,
        Errno::EDQUOT,
    ];
    let errno = if accepted.iter().any(|&e| e as i32 == errno) {
        errno
    } else {
        Errno::EIO as i32
    };
    // Every accepted errno is below 256, as the 8 bits of FAN_ERRNO_MASK require.
    FAN_DENY | ((errno as u32 & 0xff) << FAN_ERRNO_SHIFT)
}

/// What an event whose range has `count == 0` (sent when a marked file is opened, with the
/// file position as offset) fills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZeroCount {
    /// Nothing: reads send their own events.
    Nothing,
    /// One readahead window from the offset (an EROFS mount reads its superblock first).
    #[default]
    Window,
    /// The whole file (eager: turns lazy pulling off for files that get opened).
    WholeFile,
}

/// The read an event stands for on a file of `size` bytes, as `(offset, length)` for the
/// engine (which widens it to blocks and its readahead window): the event's range; with
/// `count == 0` (an open), what `zero` says; without a range record, the whole file. `None`:
/// nothing to fill (the event is allowed as it is).
///
/// ```
/// use ondemand::fanotify::{FileRange, ZeroCount, event_read};
/// let r = |offset, count| Some(FileRange { offset, count });
/// assert_eq!(event_read(r(5000, 100), 1_000_000, ZeroCount::Window), Some((5000, 100)));
/// // Opened: one window from the offset (a read of length 0), or nothing.
/// assert_eq!(event_read(r(8192, 0), 1_000_000, ZeroCount::Window), Some((8192, 0)));
/// assert_eq!(event_read(r(0, 0), 1_000_000, ZeroCount::Nothing), None);
/// assert_eq!(event_read(r(0, 0), 1_000_000, ZeroCount::WholeFile), Some((0, 1_000_000)));
/// // No range record: the whole file.
/// assert_eq!(event_read(None, 1_000_000, ZeroCount::Nothing), Some((0, 1_000_000)));
/// ```
pub fn event_read(range: Option<FileRange>, size: u64, zero: ZeroCount) -> Option<(u64, u64)> {
    let Some(range) = range else {
        return Some((0, size));
    };
    match (range.count, zero) {
        (0, ZeroCount::Nothing) => None,
        (0, ZeroCount::WholeFile) => Some((0, size)),
        _ => Some((range.offset, range.count)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fd: i32, mask: u64, records: &[&[u8]]) -> Vec<u8> {
        let rec_len: usize = records.iter().map(|r| r.len()).sum();
        let meta = RawEventMetadata {
            event_len: (24 + rec_len) as u32,
            vers: 3,
            reserved: 0,
            metadata_len: 24,
            mask,
            fd,
            pid: 1234,
        };
        let mut v = meta.as_bytes().to_vec();
        for r in records {
            v.extend_from_slice(r);
        }
        v
    }

    fn range_record(offset: u64, count: u64) -> Vec<u8> {
        RawInfoRange {
            info_type: FAN_EVENT_INFO_TYPE_RANGE,
            pad: 0,
            len: 24,
            pad2: 0,
            offset,
            count,
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn decodes_several_events_and_skips_other_records() {
        let pidfd = RawInfoHeader {
            info_type: 4,
            pad: 0,
            len: 8,
        };
        let mut pid_rec = pidfd.as_bytes().to_vec();
        pid_rec.extend_from_slice(&9i32.to_ne_bytes());
        let mut buf = event(5, FAN_PRE_ACCESS, &[&range_record(4096, 8192)]);
        buf.extend(event(6, FAN_PRE_ACCESS, &[&pid_rec, &range_record(0, 0)]));
        buf.extend(event(7, FAN_PRE_ACCESS, &[]));
        let evs: Vec<_> = Events::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(evs.len(), 3);
        assert_eq!(
            evs[0].range,
            Some(FileRange {
                offset: 4096,
                count: 8192
            })
        );
        assert_eq!(evs[1].fd, 6);
        assert_eq!(
            evs[1].range,
            Some(FileRange {
                offset: 0,
                count: 0
            })
        );
        assert_eq!(evs[2].range, None);
        assert_eq!(evs[2].pid, 1234);
    }

    #[test]
    fn malformed_events_are_reported_not_panicked_on() {
        let good = event(5, FAN_PRE_ACCESS, &[&range_record(0, 4096)]);
        // Truncated header.
        let errs: Vec<_> = Events::new(&good[..10]).collect();
        assert_eq!(
            errs,
            [Err(BadEvent {
                fd: None,
                error: EventError::Truncated { len: 10 }
            })]
        );
        // event_len past the buffer: fd still reported, iteration ends.
        let mut long = good.clone();
        long[..4].copy_from_slice(&1000u32.to_ne_bytes());
        long.extend(event(6, FAN_PRE_ACCESS, &[]));
        let errs: Vec<_> = Events::new(&long).collect();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].unwrap_err().fd, Some(5));
        // event_len shorter than the header.
        let mut short = good.clone();
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(
            Events::new(&short).next(),
            Some(Err(BadEvent {
                error: EventError::BadEventLen { .. },
                ..
            }))
        ));
        // Wrong version: reported, the next event still decodes.
        let mut v2 = good.clone();
        v2[4] = 2;
        v2.extend(event(6, FAN_PRE_ACCESS, &[]));
        let evs: Vec<_> = Events::new(&v2).collect();
        assert_eq!(evs[0].unwrap_err().error, EventError::BadVersion(2));
        assert_eq!(evs[1].unwrap().fd, 6);
        // metadata_len past the event.
        let mut ml = good.clone();
        ml[6..8].copy_from_slice(&100u16.to_ne_bytes());
        assert!(matches!(
            Events::new(&ml).next(),
            Some(Err(BadEvent {
                error: EventError::BadMetadataLen { .. },
                ..
            }))
        ));
        // A record whose len is 0 (would loop forever if trusted) or runs past the event.
        for bad_len in [0u16, 2, 200] {
            let mut r = range_record(0, 4096);
            r[2..4].copy_from_slice(&bad_len.to_ne_bytes());
            let b = event(5, FAN_PRE_ACCESS, &[&r]);
            assert!(
                matches!(
                    Events::new(&b).next(),
                    Some(Err(BadEvent {
                        error: EventError::BadInfoRecord { .. },
                        fd: Some(5)
                    }))
                ),
                "len {bad_len}"
            );
        }
        // A range record too short for its type.
        let mut r = range_record(0, 4096);
        r[2..4].copy_from_slice(&8u16.to_ne_bytes());
        r.truncate(8);
        let b = event(5, FAN_PRE_ACCESS, &[&r]);
        assert!(Events::new(&b).next().unwrap().is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let n = Events::new(&buf).take(1000).count();
            // Every event consumes at least 24 bytes, so iteration ends.
            proptest::prop_assert!(n <= buf.len() / 24 + 1);
        }
    }

    #[test]
    fn response_words() {
        assert_eq!(response_word(true, Some(5)), 1);
        assert_eq!(response_word(false, None), 2);
        assert_eq!(response_word(false, Some(nix::libc::EIO)), 2 | (5 << 24));
        assert_eq!(
            response_word(false, Some(nix::libc::ENOSPC)),
            2 | (28 << 24)
        );
        // Not accepted by the kernel for pre-content events: sent as EIO.
        assert_eq!(response_word(false, Some(nix::libc::ENOENT)), 2 | (5 << 24));
        assert_eq!(response_word(false, Some(100_000)), 2 | (5 << 24));
    }
}
