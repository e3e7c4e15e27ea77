//! The fanotify pre-content transport: lazy pulling for **file-backed** EROFS mounts, the
//! successor of EROFS over fscache (Linux 7.2 removed the fscache backend).
//!
//! Instead of `/dev/cachefiles`, the kernel reads the image and its blobs from ordinary files
//! (`mount -t erofs -o device=BLOB IMAGE MNT`, see [`crate::mount`]). This module creates
//! those files **sparse**, at the size the [`OnDemandServer`] reports, and marks each with
//! fanotify `FAN_PRE_ACCESS` in a `FAN_CLASS_PRE_CONTENT` group. From then on every read the
//! kernel (or anyone) makes from a marked file first sends the daemon an event carrying a range
//! record (`FAN_EVENT_INFO_TYPE_RANGE`: offset and count, page-aligned by the kernel) and an fd
//! of the file. The daemon fills the range (widened to whole 4 KiB blocks and a readahead
//! window) with [`OnDemandServer::fill`], `pwrite`s it through the event's fd, answers
//! `FAN_ALLOW` and closes the fd; the reader then finds the bytes in the file. On failure it
//! answers `FAN_DENY` with an errno (`FAN_DENY_ERRNO`, so the reader gets `EIO` rather than
//! `EPERM`; plain `FAN_DENY` on kernels without it). Filled ranges are remembered per file, so
//! nothing is fetched twice; once every byte of a file is present its mark is removed, so
//! its reads send no more events.
//!
//! How it maps to the cachefiles path of [`crate::session`]:
//!
//! | cachefiles on-demand | fanotify pre-content |
//! | --- | --- |
//! | OPEN (cookie key → `copen` size) | [`FanotifyDaemon::add_object`]: `open(key)`, create the sparse file, mark it (before mounting) |
//! | READ (`off`, `len`) → `pwrite` into the anonymous fd → `READ_COMPLETE` ioctl | event with a range → `pwrite` through the event's fd → `FAN_ALLOW` |
//! | READ that fails → complete without data (reader gets `EIO`) | `FAN_DENY_ERRNO(EIO)` |
//! | CLOSE | [`FanotifyDaemon::remove_object`]: unmark, [`OnDemandServer::close`] |
//! | the cache file in the cache directory | the backing file in the cache directory, named by the key |
//!
//! Kernel facts this code relies on (Linux 6.14+ for the events; EROFS backing files send
//! them in 7.2, not in 6.18):
//!
//! - Ranges are page-aligned. The 7.2 kernel's EROFS reads of backing files arrive as
//!   ranges of 4 KiB to 128 KiB, one event per read **even when the bytes are present**: so
//!   a file is unmarked as soon as all of it is present.
//! - A range with `count == 0` is what an open-time pre-content event carries (upstream: "an
//!   opportunity to fill the file on open", with the file position as offset). Neither the
//!   6.18 host kernel (ordinary `open`) nor 7.2 (an EROFS mount opening its backing files)
//!   sent one in the tests; [`ZeroCount`] says what to do if one comes (default: one
//!   readahead window from the offset).
//! - An event without a range record (the kernel did not know the position) is served as
//!   the whole file.
//! - Pre-content marks need a filesystem that opts in (ext4, xfs, btrfs in the kernel
//!   source; the tests use ext4): [`FanotifyDaemon::add_object`] fails with `EINVAL`
//!   elsewhere.
//! - The daemon must never open a marked file itself (its own open would wait for itself):
//!   writes go through the event's fd, which the kernel opens with events suppressed.
//! - When the group's fd is closed (the daemon exits), pending events are allowed and later
//!   reads are not asked about any more: unfilled ranges then read as zeros. Unmount before
//!   dropping the daemon (the `erofs-ondemand fanotify` command does).
//!
//! Threads: [`FanotifyDaemon::run`] serves with [`FanotifyDaemon::with_threads`] workers
//! (default 1), each reading events from the group and filling with its own buffer. Two
//! workers that get overlapping events at once may both fetch the overlap (same bytes, so
//! harmless); with one worker nothing is ever fetched twice.
//!
//! # Example
//!
//! Serve a plain image and its blob from a directory and mount it file-backed:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::path::Path;
//! use std::time::Duration;
//! use ondemand::fanotify::FanotifyDaemon;
//! use ondemand::{LocalDirServer, Shutdown, shutdown_on_signals};
//!
//! // First, before any thread starts: SIGINT/SIGTERM set this flag.
//! let signal = Shutdown::new();
//! shutdown_on_signals(signal.clone())?;
//! let daemon = FanotifyDaemon::new(LocalDirServer::new("/var/lib/blobs"), "/var/cache/erofs")?
//!     .with_readahead(1 << 20);
//! // Create and mark /var/cache/erofs/{image.erofs,image.blob} before anything opens them.
//! let files = daemon.add_image("image.erofs", &["image.blob"])?;
//! let mnt = Path::new("/mnt/image");
//! std::thread::scope(|s| {
//!     let serving = s.spawn(|| daemon.run());
//!     // The mount reads the files: the daemon must already be serving.
//!     files.mount(mnt)?;
//!     while !signal.is_triggered() {
//!         std::thread::sleep(Duration::from_millis(100));
//!     }
//!     // Unmount while still serving: without the daemon, unfilled ranges read as zeros.
//!     nix::mount::umount(mnt)?;
//!     daemon.shutdown_handle().trigger();
//!     let stats = serving.join().expect("no panic")?;
//!     println!("{stats}");
//!     Ok(())
//! })
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use nix::sys::stat::fstat;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::daemon::{POLL_INTERVAL, Shutdown};
use crate::device::{AlignedBuf, BLOCK_SIZE};
use crate::ranges::RangeSet;
use crate::server::{ObjectKey, OnDemandServer, errno_of};

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
const FAN_DENY: u32 = 0x02;
/// `FAN_ERRNO_SHIFT` (`include/uapi/linux/fanotify.h`, Linux 6.14): `FAN_DENY_ERRNO(e)` is
/// `FAN_DENY | (e & 0xff) << 24`.
const FAN_ERRNO_SHIFT: u32 = 24;
/// `FAN_NOFD` (`include/uapi/linux/fanotify.h`): an event without an fd (queue overflow).
const FAN_NOFD: i32 = -1;

/// The default readahead window: each event's range is widened to at least this many bytes.
pub const DEFAULT_READAHEAD: u64 = 1 << 20;

/// How many bytes of events one `read` of the group may return.
const EVENT_BUFFER: usize = 64 * 1024;

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

/// The byte range to make present for an event on a file of `size` bytes: the event's range
/// widened to whole [`BLOCK_SIZE`] blocks and to at least `readahead` bytes, clipped to the
/// file. A missing range means the whole file; `count == 0` is decided by `zero`.
///
/// ```
/// use ondemand::fanotify::{FileRange, ZeroCount, fill_range};
/// let r = |offset, count| Some(FileRange { offset, count });
/// // A 100-byte read at 5000, 64 KiB readahead, in a 1 MB file.
/// assert_eq!(fill_range(r(5000, 100), 1_000_000, 65536, ZeroCount::Window), 4096..69632);
/// // Near the end: clipped to the file.
/// assert_eq!(fill_range(r(995_000, 4096), 1_000_000, 65536, ZeroCount::Window), 991_232..1_000_000);
/// // Opened: one window, or nothing.
/// assert_eq!(fill_range(r(0, 0), 1_000_000, 65536, ZeroCount::Window), 0..65536);
/// assert!(fill_range(r(0, 0), 1_000_000, 65536, ZeroCount::Nothing).is_empty());
/// // No range record: the whole file.
/// assert_eq!(fill_range(None, 1_000_000, 65536, ZeroCount::Nothing), 0..1_000_000);
/// ```
pub fn fill_range(
    range: Option<FileRange>,
    size: u64,
    readahead: u64,
    zero: ZeroCount,
) -> Range<u64> {
    let block = BLOCK_SIZE as u64;
    // Round up to a block; past the end of the address space means "to the end".
    let align_up = |x: u64| x.checked_next_multiple_of(block).unwrap_or(u64::MAX);
    let Some(range) = range else {
        return 0..size;
    };
    let start = range.offset / block * block;
    if start >= size {
        return size..size;
    }
    let window = start.saturating_add(align_up(readahead));
    let end = if range.count == 0 {
        match zero {
            ZeroCount::Nothing => start,
            ZeroCount::Window => window.max(start.saturating_add(block)),
            ZeroCount::WholeFile => return 0..size,
        }
    } else {
        let asked = range.offset.saturating_add(range.count);
        align_up(asked).max(window)
    };
    start..end.min(size)
}

/// Counters of a [`FanotifyDaemon`], bumped with relaxed atomics.
#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    open_events: AtomicU64,
    whole_file_events: AtomicU64,
    fills: AtomicU64,
    fetched_bytes: AtomicU64,
    present_bytes: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    bad_events: AtomicU64,
    unknown_files: AtomicU64,
    overflows: AtomicU64,
}

/// A copy of a [`FanotifyDaemon`]'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanotifyStats {
    /// Events read (decoded or not).
    pub events: u64,
    /// Events with `count == 0` (a marked file was opened).
    pub open_events: u64,
    /// Events without a range record (served as the whole file).
    pub whole_file_events: u64,
    /// Server fills (one per gap and buffer-sized piece).
    pub fills: u64,
    /// Bytes produced by the server and written into backing files.
    pub fetched_bytes: u64,
    /// Bytes of events' (widened) ranges that were already present.
    pub present_bytes: u64,
    /// Events answered `FAN_ALLOW`.
    pub allowed: u64,
    /// Events answered `FAN_DENY` (the reader gets an error).
    pub denied: u64,
    /// Errors: failed fills or writes, responses the kernel refused, events that did not
    /// decode or named no known file.
    pub errors: u64,
    /// Events that did not decode.
    pub bad_events: u64,
    /// Events on a file this daemon did not create (allowed, nothing filled).
    pub unknown_files: u64,
    /// Queue overflow events.
    pub overflows: u64,
}

impl fmt::Display for FanotifyStats {
    /// `events=N open_events=N whole_file_events=N fills=N fetched_bytes=N present_bytes=N
    /// allowed=N denied=N errors=N bad_events=N unknown_files=N overflows=N`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events={} open_events={} whole_file_events={} fills={} fetched_bytes={} present_bytes={} \
             allowed={} denied={} errors={} bad_events={} unknown_files={} overflows={}",
            self.events,
            self.open_events,
            self.whole_file_events,
            self.fills,
            self.fetched_bytes,
            self.present_bytes,
            self.allowed,
            self.denied,
            self.errors,
            self.bad_events,
            self.unknown_files,
            self.overflows
        )
    }
}

impl Counters {
    fn bump(c: &AtomicU64, by: u64) {
        c.fetch_add(by, Ordering::Relaxed);
    }

    fn snapshot(&self) -> FanotifyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FanotifyStats {
            events: get(&self.events),
            open_events: get(&self.open_events),
            whole_file_events: get(&self.whole_file_events),
            fills: get(&self.fills),
            fetched_bytes: get(&self.fetched_bytes),
            present_bytes: get(&self.present_bytes),
            allowed: get(&self.allowed),
            denied: get(&self.denied),
            errors: get(&self.errors),
            bad_events: get(&self.bad_events),
            unknown_files: get(&self.unknown_files),
            overflows: get(&self.overflows),
        }
    }
}

/// One backing file: what the server opened, the marked file, what is present.
struct Backing<O> {
    key: Vec<u8>,
    path: PathBuf,
    size: u64,
    object: O,
    /// Kept open for unmarking (never read: a read would send an event to ourselves).
    file: File,
    filled: Mutex<RangeSet>,
    /// Cleared once every byte is present and the mark was removed.
    marked: AtomicBool,
}

/// Backing files by (device, inode) of the file.
type ObjectTable<O> = HashMap<(u64, u64), Arc<Backing<O>>>;

/// What [`FanotifyDaemon::objects`] reports about one backing file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key the server opened it under.
    pub key: Vec<u8>,
    /// The backing file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes filled so far.
    pub present: u64,
    /// Whether the file is still marked (it is unmarked once every byte is present).
    pub marked: bool,
}

/// The backing files of one image, ready to be mounted once the daemon serves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFiles {
    /// The image (bootstrap): the mount's source.
    pub image: PathBuf,
    /// The blob devices in device-table order: the mount's `device=` options.
    pub devices: Vec<PathBuf>,
}

impl ImageFiles {
    /// Mount the image read-only on `target`, file-backed with `device=` for each blob
    /// ([`crate::mount::mount_file_backed`]). The daemon must be serving: the mount opens and
    /// reads the files.
    ///
    /// # Errors
    ///
    /// The kernel's error, explained for `ENOTBLK` (no file-backed EROFS).
    pub fn mount(&self, target: &Path) -> io::Result<()> {
        crate::mount::mount_file_backed(&self.image, &self.devices, target)
    }
}

/// Serves fanotify pre-content events for sparse backing files of an [`OnDemandServer`]'s
/// objects (see the [module docs](self)).
pub struct FanotifyDaemon<S: OnDemandServer> {
    server: S,
    cache_dir: PathBuf,
    group: Fanotify,
    objects: Mutex<ObjectTable<S::Object>>,
    counters: Counters,
    readahead: u64,
    zero_count: ZeroCount,
    threads: usize,
    fill_buffer: usize,
    shutdown: Shutdown,
    deny_errno: AtomicBool,
    stats_file: Option<(PathBuf, Duration)>,
}

impl<S: OnDemandServer> fmt::Debug for FanotifyDaemon<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanotifyDaemon")
            .field("cache_dir", &self.cache_dir)
            .field("readahead", &self.readahead)
            .field("zero_count", &self.zero_count)
            .field("threads", &self.threads)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: OnDemandServer> FanotifyDaemon<S> {
    /// A daemon whose backing files live in `cache_dir` (created if missing; on a filesystem
    /// that allows pre-content marks: ext4, xfs, btrfs). Creates the fanotify group.
    ///
    /// # Errors
    ///
    /// `fanotify_init` fails: `EPERM` without `CAP_SYS_ADMIN`, `EINVAL` on kernels without
    /// pre-content support or `ENOSYS` without fanotify; the directory cannot be created.
    pub fn new(server: S, cache_dir: impl Into<PathBuf>) -> io::Result<Self> {
        let cache_dir = cache_dir.into();
        std::fs::create_dir_all(&cache_dir).map_err(|e| {
            io::Error::new(e.kind(), format!("creating {}: {e}", cache_dir.display()))
        })?;
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_PRE_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDWR | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("fanotify_init: {e}")))?;
        Ok(FanotifyDaemon {
            server,
            cache_dir,
            group,
            objects: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            readahead: DEFAULT_READAHEAD,
            zero_count: ZeroCount::default(),
            threads: 1,
            fill_buffer: DEFAULT_READAHEAD as usize,
            shutdown: Shutdown::new(),
            deny_errno: AtomicBool::new(true),
            stats_file: None,
        })
    }

    /// Widen each event's range to at least `bytes` (rounded up to 4 KiB; 0: just the
    /// event's blocks). Default [`DEFAULT_READAHEAD`]. The fill buffer follows it (64 KiB to
    /// 4 MiB).
    pub fn with_readahead(mut self, bytes: u64) -> Self {
        let block = BLOCK_SIZE as u64;
        self.readahead = bytes.div_ceil(block).saturating_mul(block);
        self.fill_buffer = usize::try_from(self.readahead)
            .unwrap_or(usize::MAX)
            .clamp(64 << 10, 4 << 20);
        self
    }

    /// What an event with `count == 0` (an open-time event) fills. Default
    /// [`ZeroCount::Window`].
    pub fn with_zero_count(mut self, zero: ZeroCount) -> Self {
        self.zero_count = zero;
        self
    }

    /// Serve with `n` worker threads (at least 1; default 1).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Use this flag to stop [`run`](Self::run) instead of the daemon's own.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// While running, rewrite `path` (atomically) with the counters' line and one line per
    /// backing file (`object KEY size=N present=N marked=BOOL`) every `interval` when they
    /// changed, and once at the end.
    pub fn with_stats_file(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        self.stats_file = Some((path.into(), interval));
        self
    }

    /// The flag that stops [`run`](Self::run).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The server.
    pub fn server(&self) -> &S {
        &self.server
    }

    /// The directory of the backing files.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The counters.
    pub fn stats(&self) -> FanotifyStats {
        self.counters.snapshot()
    }

    /// The backing files, sorted by key.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ObjectInfo> = objects
            .values()
            .map(|b| ObjectInfo {
                key: b.key.clone(),
                path: b.path.clone(),
                size: b.size,
                present: b.filled.lock().unwrap_or_else(|p| p.into_inner()).len(),
                marked: b.marked.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Open `key` with the server (as the object of volume `erofs,VOLUME`: the image's key,
    /// which [`crate::rafs::RafsDirServer`] uses for `--blob-inline-meta` blobs), create its
    /// backing file `CACHE_DIR/KEY` sparse at the size the server reports (replacing any
    /// file there), and mark it. Do this before anything opens the file. Returns its path.
    ///
    /// # Errors
    ///
    /// A key that is not a plain file name (`EINVAL`); the server's refusal; creating the
    /// file; `fanotify_mark` (`EINVAL`: the cache directory's filesystem does not allow
    /// pre-content marks, or the kernel has none).
    pub fn add_object(&self, volume: &[u8], key: &[u8]) -> io::Result<PathBuf> {
        if !erofs_reader::is_plain_name(key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "key {:?} is not a plain file name",
                    key.escape_ascii().to_string()
                ),
            ));
        }
        // A key added again gets a fresh file: forget (unmark, close) the old one first.
        if let Err(e) = self.remove_object(key) {
            log::warn!("{e}");
        }
        let mut volume_key = b"erofs,".to_vec();
        volume_key.extend_from_slice(volume);
        let opened = self.server.open(&ObjectKey {
            volume_key: &volume_key,
            cookie_key: key,
        })?;
        let path = self.cache_dir.join(std::ffi::OsStr::from_bytes(key));
        let with = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        // A fresh file: whatever was there may be stale (and may still be marked by a
        // previous daemon, whose events nobody answers).
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(with("removing", e)),
            _ => {}
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| with("creating", e))?;
        file.set_len(opened.size).map_err(|e| with("sizing", e))?;
        let st = fstat(&file).map_err(|e| with("fstat", e.into()))?;
        let id = (st.st_dev, st.st_ino);
        self.group
            .mark(
                MarkFlags::FAN_MARK_ADD,
                MaskFlags::from_bits_retain(FAN_PRE_ACCESS),
                &file,
                None::<&Path>,
            )
            .map_err(|e| {
                let why = if e == Errno::EINVAL {
                    " (pre-content marks need Linux 6.14+ and ext4, xfs or btrfs)"
                } else {
                    ""
                };
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("fanotify_mark FAN_PRE_ACCESS {}: {e}{why}", path.display()),
                )
            })?;
        log::info!(
            "{}: {} bytes, sparse, marked FAN_PRE_ACCESS",
            path.display(),
            opened.size
        );
        let backing = Arc::new(Backing {
            key: key.to_vec(),
            path: path.clone(),
            size: opened.size,
            object: opened.object,
            file,
            filled: Mutex::new(RangeSet::new()),
            marked: AtomicBool::new(true),
        });
        let old = self
            .objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, backing);
        if let Some(old) = old {
            // Another key's file had this inode (it was deleted behind our back).
            self.server.close(&old.object);
        }
        Ok(path)
    }

    /// [`add_object`](Self::add_object) for an image and its blob devices, in device-table
    /// order. With no `devices`, the device table's tags name them (Nydus RAFS v6 images tag
    /// each device with its blob id; `mkfs.erofs --blobdev` leaves tags empty, so name those).
    ///
    /// # Errors
    ///
    /// As `add_object`; an image whose superblock or device table cannot be read, or a
    /// device without a tag when `devices` is empty.
    pub fn add_image(&self, image: &str, devices: &[&str]) -> io::Result<ImageFiles> {
        let image_path = self.add_object(image.as_bytes(), image.as_bytes())?;
        let tags: Vec<Vec<u8>> = if devices.is_empty() {
            let backing = self
                .backing_by_path(&image_path)
                .ok_or_else(|| io::Error::other(format!("{} vanished", image_path.display())))?;
            device_tags(&self.server, &backing.object, backing.size)?
        } else {
            devices.iter().map(|d| d.as_bytes().to_vec()).collect()
        };
        let mut paths = Vec::with_capacity(tags.len());
        for (i, tag) in tags.iter().enumerate() {
            if tag.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{image}: device {} has no tag; name the devices", i + 1),
                ));
            }
            paths.push(self.add_object(image.as_bytes(), tag)?);
        }
        Ok(ImageFiles {
            image: image_path,
            devices: paths,
        })
    }

    fn backing_by_path(&self, path: &Path) -> Option<Arc<Backing<S::Object>>> {
        let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.values().find(|b| b.path == path).cloned()
    }

    /// Unmark the backing file of `key` and close its object (the CLOSE of the cachefiles
    /// path). The file stays, with what was filled; once unmarked, its unfilled ranges read
    /// as zeros, so unmount first. Returns whether `key` was known.
    ///
    /// # Errors
    ///
    /// `fanotify_mark` refusing to remove the mark.
    pub fn remove_object(&self, key: &[u8]) -> io::Result<bool> {
        let found = {
            let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
            let id = objects
                .iter()
                .find(|(_, b)| b.key == key)
                .map(|(id, _)| *id);
            id.and_then(|id| objects.remove(&id))
        };
        let Some(backing) = found else {
            return Ok(false);
        };
        let unmarked = if backing.marked.swap(false, Ordering::Relaxed) {
            self.unmark(&backing.file)
        } else {
            Ok(())
        };
        self.server.close(&backing.object);
        unmarked.map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("unmarking {}: {e}", backing.path.display()),
            )
        })?;
        Ok(true)
    }

    fn unmark(&self, file: &File) -> nix::Result<()> {
        self.group.mark(
            MarkFlags::FAN_MARK_REMOVE,
            MaskFlags::from_bits_retain(FAN_PRE_ACCESS),
            file,
            None::<&Path>,
        )
    }

    /// Serve events until shutdown ([`shutdown_handle`](Self::shutdown_handle), or the flag
    /// given with [`with_shutdown`](Self::with_shutdown)); return the counters.
    ///
    /// # Errors
    ///
    /// A failing `poll` on the group (the first one seen); the other workers stop too.
    pub fn run(&self) -> io::Result<FanotifyStats> {
        let failure: Mutex<Option<io::Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for i in 0..self.threads {
                crate::daemon::spawn_worker(
                    scope,
                    format!("fanotify-{i}"),
                    &self.shutdown,
                    &failure,
                    move || self.worker(i == 0),
                );
            }
        });
        self.write_stats_file();
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(self.stats()),
        }
    }

    fn worker(&self, reporter: bool) -> io::Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut buf = vec![0u8; EVENT_BUFFER];
        let mut fill = AlignedBuf::new(self.fill_buffer);
        let mut last_write: Option<(Instant, FanotifyStats)> = None;
        while !self.shutdown.is_triggered() {
            let mut fds = [PollFd::new(self.group.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => {}
                Ok(_) => {
                    self.serve_pending(&mut buf, &mut fill);
                }
                Err(e) => {
                    return Err(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("poll: {e}"),
                    ));
                }
            }
            if let (true, Some((_, interval))) = (reporter, &self.stats_file) {
                let now = self.stats();
                let due = last_write.is_none_or(|(t, s)| s != now && t.elapsed() >= *interval);
                if due {
                    self.write_stats_file();
                    last_write = Some((Instant::now(), now));
                }
            }
        }
        Ok(())
    }

    fn write_stats_file(&self) {
        let Some((path, _)) = &self.stats_file else {
            return;
        };
        let mut text = format!("{}\n", self.stats());
        for o in self.objects() {
            text.push_str(&format!(
                "object {} size={} present={} marked={}\n",
                o.key.escape_ascii(),
                o.size,
                o.present,
                o.marked
            ));
        }
        if let Err(e) = crate::metrics::write_atomically(path, text.as_bytes()) {
            log::warn!("stats file {}: {e}", path.display());
        }
    }

    /// Read and handle the events pending on the group until there are none (or shutdown);
    /// return how many were handled. `buf` receives the events (at least 4 KiB: one read
    /// returns whole events only); `fill` is the fill buffer. For embedders with their own
    /// loop: poll [`AsFd::as_fd`] of this daemon for `POLLIN`, then call this.
    pub fn serve_pending(&self, buf: &mut [u8], fill: &mut AlignedBuf) -> usize {
        let mut handled = 0;
        while !self.shutdown.is_triggered() {
            let n = match nix::unistd::read(&self.group, buf) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => n.min(buf.len()),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("reading fanotify events: {e}");
                    Counters::bump(&self.counters.errors, 1);
                    break;
                }
            };
            for event in Events::new(&buf[..n]) {
                Counters::bump(&self.counters.events, 1);
                handled += 1;
                match event {
                    Ok(ev) => self.handle(ev, fill),
                    Err(bad) => {
                        log::error!("undecodable fanotify event: {}", bad.error);
                        Counters::bump(&self.counters.bad_events, 1);
                        Counters::bump(&self.counters.errors, 1);
                        if let Some(fd) = bad.fd {
                            // Deny it so the reader does not wait forever, then close it.
                            let owned = sys::adopt_event_fd(fd).ok();
                            self.respond(fd, Err(io::Error::from_raw_os_error(nix::libc::EIO)));
                            drop(owned);
                        }
                    }
                }
            }
        }
        handled
    }

    /// Serve one event: fill, respond, close its fd.
    fn handle(&self, ev: Event, fill: &mut AlignedBuf) {
        if ev.fd == FAN_NOFD || ev.fd < 0 {
            // Only notification events come without an fd; this group asks for none but a
            // queue overflow can still arrive.
            Counters::bump(&self.counters.overflows, 1);
            log::warn!(
                "fanotify event without fd (mask {:#x}): queue overflow?",
                ev.mask
            );
            return;
        }
        let fd = match sys::adopt_event_fd(ev.fd) {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("event fd {}: {e}", ev.fd);
                Counters::bump(&self.counters.errors, 1);
                self.respond(ev.fd, Err(e));
                return;
            }
        };
        let result = self.serve(&ev, fd.as_fd(), fill);
        // Respond before closing: once closed, the number may name another event's fd.
        self.respond(
            ev.fd,
            result.inspect_err(|_| Counters::bump(&self.counters.errors, 1)),
        );
        drop(fd);
    }

    /// Make the event's range present; `Err` → deny.
    fn serve(&self, ev: &Event, fd: BorrowedFd<'_>, buf: &mut AlignedBuf) -> io::Result<()> {
        if ev.mask & FAN_PRE_ACCESS == 0 {
            log::debug!("fanotify event mask {:#x}: allowed", ev.mask);
            return Ok(());
        }
        let st = fstat(fd)?;
        let backing = {
            let objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
            objects.get(&(st.st_dev, st.st_ino)).cloned()
        };
        let Some(backing) = backing else {
            Counters::bump(&self.counters.unknown_files, 1);
            log::warn!(
                "event on a file this daemon did not create (inode {})",
                st.st_ino
            );
            return Ok(());
        };
        match ev.range {
            None => Counters::bump(&self.counters.whole_file_events, 1),
            Some(r) if r.count == 0 => Counters::bump(&self.counters.open_events, 1),
            Some(_) => {}
        }
        let want = fill_range(ev.range, backing.size, self.readahead, self.zero_count);
        log::debug!(
            "{}: event pid {} range {:?} → fill {want:?}",
            backing.key.escape_ascii(),
            ev.pid,
            ev.range.map(|r| (r.offset, r.count))
        );
        let gaps = {
            let filled = backing.filled.lock().unwrap_or_else(|p| p.into_inner());
            Counters::bump(
                &self.counters.present_bytes,
                filled.intersection_len(want.clone()),
            );
            filled.gaps(want)
        };
        for gap in gaps {
            let mut pos = gap.start;
            while pos < gap.end {
                let n = usize::try_from(gap.end - pos)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let chunk = &mut buf.as_mut_bytes()[..n];
                self.server
                    .fill(&backing.object, pos, chunk)
                    .inspect_err(|e| {
                        log::warn!(
                            "{}: fetching {n} bytes at {pos}: {e}",
                            backing.key.escape_ascii()
                        );
                    })?;
                Counters::bump(&self.counters.fills, 1);
                crate::device::pwrite_all(fd, chunk, pos, false).inspect_err(|e| {
                    log::warn!(
                        "{}: writing {n} bytes at {pos}: {e}",
                        backing.key.escape_ascii()
                    );
                })?;
                Counters::bump(&self.counters.fetched_bytes, n as u64);
                let end = pos + n as u64;
                backing
                    .filled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(pos..end);
                pos = end;
            }
        }
        // Every byte present: the kernel need not ask any more (each read of a marked file
        // costs an event, present or not).
        let complete = backing
            .filled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .intersection_len(0..backing.size)
            == backing.size;
        if complete && backing.marked.swap(false, Ordering::Relaxed) {
            match self.unmark(&backing.file) {
                Ok(()) => log::info!(
                    "{}: all {} bytes present, unmarked",
                    backing.path.display(),
                    backing.size
                ),
                Err(e) => log::warn!("unmarking {}: {e}", backing.path.display()),
            }
        }
        Ok(())
    }

    /// Write the response for the event with fd number `fd`.
    fn respond(&self, fd: RawFd, result: io::Result<()>) {
        let errno = result.as_ref().err().map(|e| errno_of(e).get());
        let allow = result.is_ok();
        let with_errno = self.deny_errno.load(Ordering::Relaxed);
        let word = response_word(allow, errno.filter(|_| with_errno));
        // Counted first: the reader may go on (and look at the counters) as soon as the
        // response is written.
        if allow {
            Counters::bump(&self.counters.allowed, 1);
        } else {
            Counters::bump(&self.counters.denied, 1);
        }
        match self.write_response(fd, word) {
            Ok(()) => {}
            Err(Errno::EINVAL) if !allow && word != FAN_DENY => {
                // A kernel without FAN_DENY_ERRNO: plain deny from now on.
                log::info!("the kernel refused FAN_DENY_ERRNO; denying with EPERM from now on");
                self.deny_errno.store(false, Ordering::Relaxed);
                if let Err(e) = self.write_response(fd, FAN_DENY) {
                    log::error!("responding to event fd {fd}: {e}");
                    Counters::bump(&self.counters.errors, 1);
                }
            }
            Err(e) => {
                log::error!("responding to event fd {fd}: {e}");
                Counters::bump(&self.counters.errors, 1);
            }
        }
    }

    fn write_response(&self, fd: RawFd, response: u32) -> Result<(), Errno> {
        let r = RawResponse { fd, response };
        loop {
            match nix::unistd::write(&self.group, r.as_bytes()) {
                Err(Errno::EINTR) => continue,
                Ok(n) if n == size_of::<RawResponse>() => return Ok(()),
                Ok(_) => return Err(Errno::EIO),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: OnDemandServer> AsFd for FanotifyDaemon<S> {
    /// The fanotify group: readable when events are pending.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
    }
}

impl<S: OnDemandServer> Drop for FanotifyDaemon<S> {
    fn drop(&mut self) {
        let objects = std::mem::take(&mut *self.objects.lock().unwrap_or_else(|p| p.into_inner()));
        for b in objects.values() {
            self.server.close(&b.object);
        }
    }
}

/// Most extra devices [`device_tags`] reads (EROFS allows 65535; a bigger table is refused).
const MAX_DEVICES: u16 = 4096;

/// The device tags of the EROFS image `object` (of `size` bytes) of `server`, in device
/// table order, read through the server (superblock, then the table).
///
/// # Errors
///
/// The server's errors; `InvalidData` when the superblock does not parse or the table lies
/// past the image or has more than 4096 slots.
pub fn device_tags<S: OnDemandServer + ?Sized>(
    server: &S,
    object: &S::Object,
    size: u64,
) -> io::Result<Vec<Vec<u8>>> {
    use erofs_format::device::{DEVICE_SLOT_SIZE, DeviceSlot};
    use erofs_format::superblock::SuperBlock;
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let head_len = size.min(BLOCK_SIZE as u64) as usize;
    let mut head = vec![0u8; head_len];
    server.fill(object, 0, &mut head)?;
    let sb = SuperBlock::parse(&head).map_err(|e| invalid(format!("superblock: {e}")))?;
    let count = sb.extra_devices();
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_DEVICES {
        return Err(invalid(format!(
            "{count} extra devices, at most {MAX_DEVICES} read"
        )));
    }
    let off = sb.device_table_offset();
    let len = usize::from(count) * DEVICE_SLOT_SIZE;
    if off.checked_add(len as u64).is_none_or(|end| end > size) {
        return Err(invalid(format!(
            "device table at {off} ({count} slots) runs past the {size}-byte image"
        )));
    }
    let mut table = vec![0u8; len];
    server.fill(object, off, &mut table)?;
    Ok(table
        .chunks_exact(DEVICE_SLOT_SIZE)
        .filter_map(|raw| DeviceSlot::read_from_bytes(raw).ok())
        .map(|slot| {
            let end = slot
                .tag
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(slot.tag.len());
            slot.tag[..end].to_vec()
        })
        .collect())
}

/// The unsafe call of this module.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};

    /// Take ownership of the fd number a fanotify event carried.
    pub(super) fn adopt_event_fd(fd: RawFd) -> io::Result<OwnedFd> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(nix::libc::EBADF));
        }
        // SAFETY: `fcntl(F_GETFD)` only reads the fd table; an invalid number yields EBADF.
        if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel opened this fd in our fd table during the `read()` of the group
        // that returned the event, for us to close. Its number appears only in that event,
        // and each event is decoded and handled once (by the worker that read it), so
        // nothing else owns it; the `OwnedFd` becomes its only owner.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

        #[test]
        fn fill_range_covers_the_request(
            offset in 0u64..(1 << 24), count in 0u64..(1 << 20),
            size in 0u64..(1 << 24), readahead in 0u64..(1 << 22),
        ) {
            let r = fill_range(Some(FileRange { offset, count }), size, readahead, ZeroCount::Nothing);
            proptest::prop_assert!(r.end <= size);
            if offset < size {
                proptest::prop_assert!(r.start.is_multiple_of(4096));
                proptest::prop_assert!(r.start <= offset);
                proptest::prop_assert!(r.end >= (offset + count).min(size));
                proptest::prop_assert!(r.end == size || r.end.is_multiple_of(4096));
                if count > 0 {
                    proptest::prop_assert!(r.end >= (r.start + readahead).min(size));
                }
            } else {
                proptest::prop_assert!(r.is_empty());
            }
        }
    }

    #[test]
    fn fill_range_edges() {
        let r = |offset, count| Some(FileRange { offset, count });
        // Overflowing requests are clipped, not wrapped.
        assert_eq!(
            fill_range(r(u64::MAX - 10, 100), u64::MAX, 0, ZeroCount::Nothing),
            (u64::MAX - 4095)..u64::MAX
        );
        assert_eq!(
            fill_range(r(0, u64::MAX), 10_000, 0, ZeroCount::Nothing),
            0..10_000
        );
        assert_eq!(
            fill_range(r(20_000, 4096), 10_000, 0, ZeroCount::Window),
            10_000..10_000
        );
        assert_eq!(
            fill_range(r(8192, 0), 1 << 30, 0, ZeroCount::Window),
            8192..12288
        );
        assert_eq!(
            fill_range(r(8192, 0), 100_000, 0, ZeroCount::WholeFile),
            0..100_000
        );
        assert_eq!(fill_range(None, 0, 0, ZeroCount::Window), 0..0);
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

    #[test]
    fn stats_line_names_every_counter() {
        let s = FanotifyStats {
            events: 1,
            fetched_bytes: 2,
            ..Default::default()
        };
        let line = s.to_string();
        assert!(line.starts_with("events=1 open_events=0 "), "{line}");
        assert!(line.contains(" fetched_bytes=2 "), "{line}");
        assert_eq!(line.split(' ').count(), 12);
    }
}
