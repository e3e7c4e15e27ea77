//! The fanotify pre-content transport: lazy pulling for **file-backed** EROFS mounts, the
//! successor of EROFS over fscache (Linux 7.2 removed the fscache backend).
//!
//! Instead of `/dev/cachefiles`, the kernel reads the image and its blobs from ordinary files
//! (`mount -t erofs -o device=BLOB IMAGE MNT`, see [`crate::mount`]). This module creates
//! those files **sparse**, at the size the [`OnDemandServer`] reports, and marks each with
//! fanotify `FAN_PRE_ACCESS` in a `FAN_CLASS_PRE_CONTENT` group. From then on every read the
//! kernel (or anyone) makes from a marked file first sends the daemon an event carrying a range
//! record (`FAN_EVENT_INFO_TYPE_RANGE`: offset and count, page-aligned by the kernel) and an fd
//! of the file. Each event is a READ for the [`crate::Engine`], the same one under the
//! cachefiles session: the window (readahead), the range claims (two workers never fetch the
//! same bytes; one waits for the other), the fill loop, fill ahead of sequential readers and
//! prefetch. The daemon then answers `FAN_ALLOW` and closes the event's fd; the reader finds
//! the bytes in the file. With [`FanotifyDaemon::with_early_answer`] and a server that streams
//! ([`OnDemandServer::fill_streaming`]: a registry store), the answer goes as soon as the
//! event's own range is written, and the rest of its window is filled after it, as the
//! cachefiles session completes a READ early. On failure it answers `FAN_DENY` with an errno
//! (`FAN_DENY_ERRNO`, so the reader gets `EIO` rather than `EPERM`; plain `FAN_DENY` on
//! kernels without it). Once every byte of a file is present its mark is removed, so its
//! reads send no more events.
//!
//! How it maps to the cachefiles path of [`crate::Session`]:
//!
//! | cachefiles on-demand | fanotify pre-content |
//! | --- | --- |
//! | OPEN (cookie key → `copen` size) | [`FanotifyDaemon::add_object`]: `open(key)`, create (or keep) the sparse file, mark it (before mounting) |
//! | READ (`off`, `len`) → `pwrite` into the anonymous fd → `READ_COMPLETE` ioctl | event with a range → `pwrite` through an event's fd → `FAN_ALLOW` |
//! | READ that fails → complete without data (reader gets `EIO`) | `FAN_DENY_ERRNO(EIO)` |
//! | CLOSE | [`FanotifyDaemon::remove_object`]: unmark, [`OnDemandServer::close`] |
//! | the cache file in the cache directory, kept across daemons | the backing file in the cache directory, named by the key, kept across daemons |
//!
//! Kernel facts this code relies on (Linux 6.14+ for the events; EROFS backing files send
//! them in 7.2, not in 6.18):
//!
//! - Ranges are page-aligned. The 7.2 kernel's EROFS reads of backing files arrive as
//!   ranges of 4 KiB to 128 KiB (up to the mount's readahead), one event per read **even
//!   when the bytes are present**: the engine trusts what it knows present (such an event is
//!   answered at once and, as on cachefiles where the kernel asks only at misses, is no step of
//!   a sequential stream), and a file is unmarked once all of it is present.
//!   So the fill ahead of a sequential reader grows with its stream here (at least twice as
//!   far past the reader as the stream has read, beyond the engine's own fill ahead): a file
//!   read through is complete, and sends no more events, about a third of the way in.
//! - A range with `count == 0` is what an open-time pre-content event carries (upstream: "an
//!   opportunity to fill the file on open", with the file position as offset). [`ZeroCount`]
//!   says what to do if one comes (default: one readahead window from the offset).
//! - An event without a range record (the kernel did not know the position) is served as
//!   the whole file.
//! - Pre-content marks need a filesystem that opts in (ext4, xfs, btrfs in the kernel
//!   source; the tests use ext4): [`FanotifyDaemon::add_object`] fails with `EINVAL`
//!   elsewhere.
//! - Any read or write of a marked file sends an event, the daemon's own too, except through
//!   an fd the kernel opened for an event. So the daemon writes through such an fd: it keeps
//!   one (a duplicate) from the first event on each file, for the fills that come after the
//!   event is answered (fill ahead, prefetch). Prefetch of a file nobody read yet starts with
//!   one read of its first block by the daemon, from a thread that is not a worker, which the
//!   workers serve like any other.
//! - The daemon finds what an earlier daemon wrote with `SEEK_DATA`/`SEEK_HOLE` on its own
//!   fd of the file (`lseek` sends no event): a daemon started again on the same cache
//!   directory keeps the files and fetches none of their present bytes again.
//! - When the group's last fd is closed (the daemon exits, and nothing holds a copy),
//!   pending events are allowed and later reads are not asked about any more: unfilled
//!   ranges then read as zeros. Unmount before dropping the daemon (the `erofs-ondemand
//!   fanotify` command does), or keep a copy of the group's fd in a holder
//!   ([`crate::failover`], `erofs-ondemand fanotify --supervisor`), so that a successor
//!   ([`FanotifyDaemon::from_group`]) serves the events queued after the death. An event the
//!   dead daemon had read stays pending as long as the group lives (its reader waits): with
//!   [`FanotifyDaemon::with_event_journal`] every event of a `read(2)` is journaled before
//!   any of them is served, and the successor fills and answers those by their fd numbers
//!   (the window left: a death between a `read(2)` and its journal writes, see
//!   `journal.rs`).
//!
//! Threads: [`FanotifyDaemon::run`] serves with [`FanotifyDaemon::with_threads`] workers
//! (default [`crate::DEFAULT_THREADS`], as `serve`), each reading events from the group (an
//! event wakes one idle worker: `EPOLLEXCLUSIVE`) and filling with its own buffer, plus the prefetch threads and the metrics reporter of the
//! engine. A worker answers every event of one `read(2)` before it fills ahead of any of
//! them, and fills ahead only while the group has no event pending for it.
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
//!     // The mount reads the files: the daemon must already be serving. A 4 MiB readahead
//!     // makes a sequential reader's events fewer and larger (`MOUNT_READAHEAD`); the mount
//!     // reads with direct I/O when the daemon writes with it (the default).
//!     let readahead = ondemand::fanotify::MOUNT_READAHEAD;
//!     files.mount_as(mnt, readahead, daemon.direct_io())?;
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

mod event;
mod journal;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachefiles_proto::ObjectId;
use nix::errno::Errno;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use nix::sys::stat::fstat;
use zerocopy::FromBytes;

pub use event::{
    BadEvent, Event, EventError, Events, FAN_EVENT_INFO_TYPE_RANGE, FAN_PRE_ACCESS,
    FANOTIFY_METADATA_VERSION, FileRange, ZeroCount, event_read, response_word,
};
use event::{FAN_DENY, write_response};
use journal::{Journal, Pending};

use crate::buf::{AlignedBuf, BLOCK_SIZE};
use crate::engine::{Engine, Object, PrefetchConfig, Sink, round_up};
use crate::metrics::StatsSnapshot;
use crate::server::{ObjectKey, OnDemandServer, errno_of};
use crate::shutdown::{POLL_INTERVAL, Shutdown};

/// The readahead `erofs-ondemand fanotify` gives its mounts
/// ([`ImageFiles::mount_with_readahead`], `--mount-readahead`): 4 MiB, against the kernel's
/// 128 KiB. A sequential read of a 48 MiB tree sent 3.5-7.9 pre-content events per MiB with
/// the kernel's readahead and 1.0-1.8 with this (DESIGN.md, "The mount's readahead").
pub const MOUNT_READAHEAD: u64 = 4 << 20;

/// The file name `erofs-ondemand fanotify --supervisor` keeps its event journal under, in the
/// cache dir ([`FanotifyDaemon::with_event_journal`]); no object may have it as key.
pub const EVENT_JOURNAL: &str = ".erofs-ondemand-events";

/// How many bytes of events one `read` of the group may return.
const EVENT_BUFFER: usize = 64 * 1024;

/// One backing file: the engine's [`Sink`] for its object.
#[derive(Debug)]
pub struct BackingFile {
    path: PathBuf,
    size: u64,
    /// The daemon's own fd of the file, opened before the mark: used for `lseek`
    /// (`SEEK_DATA`, which sends no event) and to remove the mark. Never read or written: that
    /// would send the daemon an event about itself.
    file: File,
    /// A duplicate of the fd the kernel opened for the first event on this file: writes
    /// through it send no events.
    writer: Mutex<Option<Arc<OwnedFd>>>,
    /// Whether the writer was switched to `O_DIRECT` ([`FanotifyDaemon::with_direct_io`]).
    direct: AtomicBool,
    /// Held while a write that direct I/O cannot take (the file's unaligned last block)
    /// turns `O_DIRECT` off and on again on the writer.
    buffered: Mutex<()>,
    /// Cleared once every byte is present and the mark was removed.
    marked: AtomicBool,
    /// Set while the daemon reads the first byte itself, to get an fd to write through.
    kick: AtomicBool,
}

impl BackingFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is still marked (it is unmarked once every byte is present).
    pub fn is_marked(&self) -> bool {
        self.marked.load(Ordering::SeqCst)
    }

    /// Whether writes are possible (an event's fd is kept).
    fn has_writer(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Keep a duplicate of an event's fd for writes, if none is kept yet, switched to
    /// `O_DIRECT` when `direct` (and the filesystem allows it); returns whether this one was
    /// kept.
    fn keep_writer(&self, event_fd: BorrowedFd<'_>, direct: bool) -> io::Result<bool> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_some() {
            return Ok(false);
        }
        let fd = event_fd.try_clone_to_owned()?;
        if direct {
            // The duplicate shares the event fd's open file description, which nothing else
            // uses once the event is answered.
            match set_direct(fd.as_fd(), true) {
                Ok(()) => self.direct.store(true, Ordering::SeqCst),
                Err(e) => log::info!(
                    "{}: no direct I/O ({e}): buffered writes",
                    self.path.display()
                ),
            }
        }
        *w = Some(Arc::new(fd));
        Ok(true)
    }
}

impl Sink for BackingFile {
    fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| io::Error::other("no event fd kept for this file yet"))?;
        // The engine pads the last block with zeros; the file keeps its size.
        if off >= self.size {
            return Ok(());
        }
        let n = usize::try_from(self.size - off)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let data = &data[..n];
        if !self.direct.load(Ordering::SeqCst) {
            return crate::device::pwrite_all(writer.as_fd(), data, off, false);
        }
        let block = BLOCK_SIZE;
        if n.is_multiple_of(block) && (data.as_ptr() as usize).is_multiple_of(block) {
            match crate::device::pwrite_all(writer.as_fd(), data, off, true) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {}
                other => return other,
            }
        }
        // Not aligned for direct I/O (the file's last block, clipped to its size): buffered,
        // with O_DIRECT off meanwhile. A direct write of this file racing with it may go
        // buffered too; buffered and direct writes of one file stay coherent.
        let _one = self.buffered.lock().unwrap_or_else(|p| p.into_inner());
        set_direct(writer.as_fd(), false)?;
        let written = crate::device::pwrite_all(writer.as_fd(), data, off, false);
        set_direct(writer.as_fd(), true)?;
        written
    }

    fn data_ranges(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let mut found = crate::device::data_ranges(self.file.as_fd(), range)?;
        // Data up to the end of the file covers its last block: the rest of that block is the
        // padding past the end.
        let end = round_up(self.size);
        for r in &mut found {
            if r.end == self.size {
                r.end = end;
            }
        }
        Ok(found)
    }
}

/// What [`FanotifyDaemon::objects`] reports about one backing file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key the server opened it under.
    pub key: Vec<u8>,
    /// The backing file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes known present (fetched by this daemon, or found in the file).
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

    /// [`mount`](Self::mount) with the mount's readahead set to `bytes`
    /// ([`crate::mount::mount_file_backed_with_readahead`]; 0 leaves the kernel's 128 KiB):
    /// each read request EROFS makes of a marked backing file is a pre-content event, and a
    /// larger readahead makes a sequential reader's requests fewer and larger
    /// ([`MOUNT_READAHEAD`]).
    ///
    /// # Errors
    ///
    /// The mount's (the readahead is best effort: logged when it cannot be set).
    pub fn mount_with_readahead(&self, target: &Path, bytes: u64) -> io::Result<()> {
        crate::mount::mount_file_backed_with_readahead(&self.image, &self.devices, target, bytes)
    }

    /// [`mount_with_readahead`](Self::mount_with_readahead) with `directio`
    /// ([`crate::mount::mount_file_backed_direct`]): EROFS reads the backing files with direct
    /// I/O (Linux 6.13+; mounted without it where the kernel refuses the option), the other
    /// side of [`FanotifyDaemon::with_direct_io`]: the bytes go from the disk to the EROFS
    /// page cache, not through the backing file's page cache as well.
    ///
    /// # Errors
    ///
    /// As [`mount_with_readahead`](Self::mount_with_readahead).
    pub fn mount_direct(&self, target: &Path, bytes: u64) -> io::Result<()> {
        crate::mount::mount_file_backed_direct(&self.image, &self.devices, target, bytes)
    }

    /// [`mount_direct`](Self::mount_direct) when `direct`, else
    /// [`mount_with_readahead`](Self::mount_with_readahead): the mount that goes with a
    /// daemon [`with_direct_io`](FanotifyDaemon::with_direct_io)`(direct)` (pass
    /// [`FanotifyDaemon::direct_io`]: on by default).
    ///
    /// # Errors
    ///
    /// As [`mount_with_readahead`](Self::mount_with_readahead).
    pub fn mount_as(&self, target: &Path, bytes: u64, direct: bool) -> io::Result<()> {
        if direct {
            self.mount_direct(target, bytes)
        } else {
            self.mount_with_readahead(target, bytes)
        }
    }
}

/// Serves fanotify pre-content events for sparse backing files of an [`OnDemandServer`]'s
/// objects, through the [`Engine`] (see the [module docs](self)).
pub struct FanotifyDaemon<S: OnDemandServer> {
    engine: Engine<S, BackingFile>,
    cache_dir: PathBuf,
    group: Fanotify,
    /// Object ids by (device, inode) of the backing file.
    ids: Mutex<HashMap<(u64, u64), ObjectId>>,
    next_id: AtomicU32,
    zero_count: ZeroCount,
    threads: usize,
    fill_buffer: usize,
    shutdown: Shutdown,
    deny_errno: AtomicBool,
    metrics_file: Option<(PathBuf, Duration)>,
    /// Events in progress, for a successor ([`with_event_journal`](Self::with_event_journal)).
    journal: Option<Journal>,
    /// Write the backing files with `O_DIRECT` ([`with_direct_io`](Self::with_direct_io)).
    direct_io: bool,
    /// Allow an event once its range is written ([`with_early_answer`](Self::with_early_answer)).
    early_answer: bool,
}

impl<S: OnDemandServer> fmt::Debug for FanotifyDaemon<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanotifyDaemon")
            .field("cache_dir", &self.cache_dir)
            .field("engine", &self.engine)
            .field("zero_count", &self.zero_count)
            .field("threads", &self.threads)
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
        let group = Fanotify::init(
            InitFlags::FAN_CLASS_PRE_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDWR | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("fanotify_init: {e}")))?;
        Self::with_group(server, cache_dir.into(), group)
    }

    /// A daemon serving the fanotify group `group` that an earlier daemon created (its fd
    /// kept by a holder, [`crate::failover::fetch_fd`]): the group's marks and its queued
    /// events are this daemon's now. Add the same objects again ([`add_image`](Self::add_image)):
    /// their files are kept, with what the earlier daemon wrote.
    ///
    /// # Errors
    ///
    /// `group` is not a fanotify group (`EINVAL`); the directory cannot be created.
    pub fn from_group(
        server: S,
        cache_dir: impl Into<PathBuf>,
        group: OwnedFd,
    ) -> io::Result<Self> {
        let group = crate::sys::fanotify_group(group)?;
        nix::fcntl::fcntl(
            &group,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Self::with_group(server, cache_dir.into(), group)
    }

    fn with_group(server: S, cache_dir: PathBuf, group: Fanotify) -> io::Result<Self> {
        std::fs::create_dir_all(&cache_dir).map_err(|e| {
            io::Error::new(e.kind(), format!("creating {}: {e}", cache_dir.display()))
        })?;
        let mut engine = Engine::new(server);
        engine.asks_for_present = true;
        // Every read of an incomplete file is an event: a reader reading it through is worth
        // completing it for.
        engine.growth = crate::engine::Growth::TwiceRead;
        let fill_buffer = crate::daemon::default_fill_buffer(engine.readahead());
        Ok(FanotifyDaemon {
            engine,
            cache_dir,
            group,
            ids: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            zero_count: ZeroCount::default(),
            threads: crate::DEFAULT_THREADS,
            fill_buffer,
            shutdown: Shutdown::new(),
            deny_errno: AtomicBool::new(true),
            metrics_file: None,
            journal: None,
            direct_io: true,
            early_answer: false,
        })
    }

    /// Write the backing files with direct I/O (default **on**; `erofs-ondemand fanotify
    /// --buffered-io` turns it off): each file's writer (the duplicate of its first event's
    /// fd) is switched to `O_DIRECT`, so a fill goes from the fill buffer to the disk without
    /// a copy into the backing file's page cache and without dirty pages to write back while
    /// the reader reads (on a filesystem without direct I/O, or for the unaligned last block
    /// of a file, the writes stay buffered). Pair it with a mount that reads the backing
    /// files with direct I/O too ([`ImageFiles::mount_direct`], or
    /// [`ImageFiles::mount_as`]`(.., daemon.`[`direct_io`](Self::direct_io)`())`), as EROFS
    /// over cachefiles does on both sides. Measured in DESIGN.md ("Direct I/O, session 9"
    /// and "session 10"): a cold sequential read of 48 MiB took 0.60-0.78 times as long as
    /// buffered; the container start fetched 13.7-13.9% of its rootfs (buffered 13.1-13.8%).
    pub fn with_direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// Whether fills are written with direct I/O ([`with_direct_io`](Self::with_direct_io),
    /// default on): the `direct` to mount the backing files with
    /// ([`ImageFiles::mount_as`]).
    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// Allow an event as soon as its own range is written, while the rest of its window is
    /// still coming, when the server streams ([`OnDemandServer::fill_streaming`]: a registry
    /// store), as the cachefiles session completes a READ (default off). An event that lands
    /// in the rest waits for it instead of fetching it again. Off by default because on the
    /// container-start benchmark (7.2, 20 ms / 200 Mbit/s) it fetched 0.5-2.0 MB more of a
    /// 132 MB rootfs (15.3-15.9% of it in three runs of four, against 14.4-14.5%) and started
    /// later in three of the four (DESIGN.md, "Streaming fills").
    pub fn with_early_answer(mut self, on: bool) -> Self {
        self.early_answer = on;
        self
    }

    /// Widen each event's range to at least `bytes` (rounded up to 4 KiB; 0: just the
    /// event's blocks), as [`Engine::with_readahead`]. Default [`crate::DEFAULT_READAHEAD`].
    /// The fill buffer follows it (64 KiB to 4 MiB).
    pub fn with_readahead(self, bytes: u64) -> Self {
        let engine = self.engine.with_readahead(bytes);
        let fill_buffer = crate::daemon::default_fill_buffer(engine.readahead());
        FanotifyDaemon {
            engine,
            fill_buffer,
            ..self
        }
    }

    /// Fill ahead of sequential readers, up to `max_bytes` ([`Engine::with_sequential_ahead`];
    /// default [`crate::DEFAULT_SEQUENTIAL_AHEAD`]), and on this transport further once the
    /// stream is long: at least twice as far past the reader's window as it has read (every
    /// read of an incomplete file costs an event; a complete one is unmarked). 0 turns both
    /// off.
    pub fn with_sequential_ahead(self, max_bytes: u64) -> Self {
        FanotifyDaemon {
            engine: self.engine.with_sequential_ahead(max_bytes),
            ..self
        }
    }

    /// Run fills ahead of sequential readers on `n` pool threads besides the worker that
    /// answered the event ([`Engine::with_fill_threads`]; default
    /// [`crate::default_fill_threads`]).
    pub fn with_fill_threads(self, n: usize) -> Self {
        FanotifyDaemon {
            engine: self.engine.with_fill_threads(n),
            ..self
        }
    }

    /// Let each pool thread write behind its decoding ([`Engine::with_write_behind`]; default
    /// off).
    pub fn with_write_behind(self, on: bool) -> Self {
        FanotifyDaemon {
            engine: self.engine.with_write_behind(on),
            ..self
        }
    }

    /// Fill backing files in the background as `config` says ([`Engine::with_prefetch`]),
    /// from the moment [`run`](Self::run) starts.
    pub fn with_prefetch(self, config: PrefetchConfig) -> Self {
        FanotifyDaemon {
            engine: self.engine.with_prefetch(config),
            ..self
        }
    }

    /// Cold prediction ([`Engine::with_predictor`]): an event's file and its relatives
    /// ([`crate::predict::FileMap::related`], the ELF rule) are queued on the fill pool as
    /// for a cachefiles READ. Raises the pool threads to at least
    /// [`crate::PREDICT_FILL_THREADS`] (a later [`with_fill_threads`](Self::with_fill_threads)
    /// sets them as it says).
    pub fn with_predictor(self, predictor: Arc<crate::predict::Predictor>) -> Self {
        FanotifyDaemon {
            engine: self.engine.with_predictor(predictor),
            ..self
        }
    }

    /// Record the range of every pre-content event in an access trace
    /// ([`Engine::with_recorder`]); [`run`](Self::run) makes it durable as it returns.
    pub fn with_recorder(self, recorder: Arc<crate::Recorder>) -> Self {
        FanotifyDaemon {
            engine: self.engine.with_recorder(recorder),
            ..self
        }
    }

    /// What an event with `count == 0` (an open-time event) fills. Default
    /// [`ZeroCount::Window`].
    pub fn with_zero_count(mut self, zero: ZeroCount) -> Self {
        self.zero_count = zero;
        self
    }

    /// Serve with `n` worker threads (at least 1; default [`crate::DEFAULT_THREADS`]).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Each worker's fill buffer, as [`crate::Daemon::with_fill_buffer`].
    pub fn with_fill_buffer(mut self, bytes: usize) -> Self {
        self.fill_buffer = crate::daemon::fill_buffer_size(bytes);
        self
    }

    /// Use this flag to stop [`run`](Self::run) instead of the daemon's own.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// While running, rewrite `path` with the Prometheus text of the engine's metrics (the
    /// names `serve` uses, [`crate::metrics`]) every `interval`, atomically, and once more at
    /// the end.
    pub fn with_metrics_file(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        self.metrics_file = Some((path.into(), interval.max(Duration::from_millis(10))));
        self
    }

    /// Keep a journal of the events in progress at `path` (in the cache dir, for example),
    /// for failover under a holder of the group's fd: a daemon started with the same journal
    /// and the held group ([`from_group`](Self::from_group)) answers, in [`run`](Self::run),
    /// the events this one read and never answered (the kernel keeps them pending, and their
    /// readers waiting, for as long as the group lives). Every event of a `read(2)` is
    /// journaled before any of them is served; a daemon killed between a `read(2)` and those
    /// journal writes (microseconds, no fill in between) leaves its events unanswered.
    ///
    /// # Errors
    ///
    /// The journal cannot be opened or created.
    pub fn with_event_journal(mut self, path: impl AsRef<Path>) -> io::Result<Self> {
        self.journal = Some(Journal::open(path.as_ref())?);
        Ok(self)
    }

    /// The flag that stops [`run`](Self::run).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The server.
    pub fn server(&self) -> &S {
        self.engine.server()
    }

    /// The engine (objects, counters, metrics).
    pub fn engine(&self) -> &Engine<S, BackingFile> {
        &self.engine
    }

    /// The directory of the backing files.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The counters: each event is a READ (`reads`, `requested_bytes`), each denied event a
    /// read error, undecodable events and events on unknown files bad messages.
    pub fn stats(&self) -> StatsSnapshot {
        self.engine.stats()
    }

    /// The backing files, sorted by key.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        let mut out: Vec<ObjectInfo> = self
            .engine
            .objects()
            .iter()
            .map(|o| ObjectInfo {
                key: o.cookie_key().to_vec(),
                path: o.sink().path.clone(),
                size: o.size(),
                present: o.present().intersection_len(0..o.size()),
                marked: o.sink().is_marked(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Open `key` with the server (as the object of volume `erofs,VOLUME`: the image's key,
    /// which [`crate::rafs::RafsDirServer`] uses for `--blob-inline-meta` blobs), and give it
    /// a backing file `CACHE_DIR/KEY`: the file there if it has the size the server reports
    /// (what it holds is found with `SEEK_DATA` and not fetched again), else a new sparse
    /// one. Then mark it, unless it is complete. Do this before anything opens the file.
    /// Returns its path.
    ///
    /// # Errors
    ///
    /// A key that is not a plain file name (`EINVAL`); the server's refusal; creating the
    /// file; `fanotify_mark` (`EINVAL`: the cache directory's filesystem does not allow
    /// pre-content marks, or the kernel has none).
    pub fn add_object(&self, volume: &[u8], key: &[u8]) -> io::Result<PathBuf> {
        if !erofs_reader::is_plain_name(key) || key == EVENT_JOURNAL.as_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "key {:?} is not a plain file name",
                    key.escape_ascii().to_string()
                ),
            ));
        }
        // A key added again gets its file again: forget (unmark, close) the old object first.
        if let Err(e) = self.remove_object(key) {
            log::warn!("{e}");
        }
        let mut volume_key = b"erofs,".to_vec();
        volume_key.extend_from_slice(volume);
        self.engine.stats.opens.add(1);
        let opened = self
            .engine
            .server()
            .open(&ObjectKey {
                volume_key: &volume_key,
                cookie_key: key,
            })
            .inspect_err(|_| self.engine.stats.open_errors.add(1))?;
        let path = self.cache_dir.join(std::ffi::OsStr::from_bytes(key));
        let file = match open_backing_file(&path, opened.size) {
            Ok(f) => f,
            Err(e) => {
                self.engine.server().close(&opened.object);
                return Err(e);
            }
        };
        let st = fstat(&file).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("fstat {}: {e}", path.display()),
            )
        })?;
        let size = opened.size;
        let id = ObjectId(self.next_id.fetch_add(1, Ordering::SeqCst));
        let sink = BackingFile {
            path: path.clone(),
            size,
            file,
            writer: Mutex::new(None),
            direct: AtomicBool::new(false),
            buffered: Mutex::new(()),
            marked: AtomicBool::new(false),
            kick: AtomicBool::new(false),
        };
        let object = self
            .engine
            .open_object(id, &volume_key, key, opened, sink)
            .map_err(|r| io::Error::from_raw_os_error(r.errno.get()))?;
        // What an earlier daemon wrote (or a file complete already).
        object.scan_present(0..round_up(size));
        let present = object.present().intersection_len(0..size);
        let old = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((st.st_dev, st.st_ino), id);
        if let Some(old) = old.and_then(|old| self.engine.forget(old)) {
            // Another key's file had this inode (it was deleted behind our back).
            self.engine.server().close(old.state());
        }
        if present == size {
            log::info!("{}: all {size} bytes present, not marked", path.display());
            return Ok(path);
        }
        self.group
            .mark(
                MarkFlags::FAN_MARK_ADD,
                MaskFlags::from_bits_retain(FAN_PRE_ACCESS),
                &object.sink().file,
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
        object.sink().marked.store(true, Ordering::SeqCst);
        log::info!(
            "{}: {size} bytes ({present} present), sparse, marked FAN_PRE_ACCESS",
            path.display()
        );
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
            let object = self
                .object_by_key(image.as_bytes())
                .ok_or_else(|| io::Error::other(format!("{} vanished", image_path.display())))?;
            device_tags(self.engine.server(), object.state(), object.size())?
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

    fn object_by_key(&self, key: &[u8]) -> Option<Arc<Object<S::Object, BackingFile>>> {
        self.engine
            .objects()
            .into_iter()
            .find(|o| o.cookie_key() == key)
    }

    /// Unmark the backing file of `key` and close its object (the CLOSE of the cachefiles
    /// path). The file stays, with what was filled; once unmarked, its unfilled ranges read
    /// as zeros, so unmount first. Returns whether `key` was known.
    ///
    /// # Errors
    ///
    /// `fanotify_mark` refusing to remove the mark.
    pub fn remove_object(&self, key: &[u8]) -> io::Result<bool> {
        let Some(object) = self
            .object_by_key(key)
            .and_then(|o| self.engine.forget(o.id()))
        else {
            return Ok(false);
        };
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, id| *id != object.id());
        let backing = object.sink();
        let unmarked = if backing.marked.swap(false, Ordering::SeqCst) {
            self.unmark(&backing.file)
        } else {
            Ok(())
        };
        self.engine.server().close(object.state());
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
    /// given with [`with_shutdown`](Self::with_shutdown)); return the counters. Prefetch
    /// threads and the metrics reporter run meanwhile.
    ///
    /// # Errors
    ///
    /// A failing `poll` on the group (the first one seen); the other workers stop too.
    pub fn run(&self) -> io::Result<StatsSnapshot> {
        let failure: Mutex<Option<io::Error>> = Mutex::new(None);
        // A predecessor's unanswered events: their fd numbers are kept from this daemon's own
        // events (before any worker reads one) until each is answered.
        let orphans = self.orphans();
        std::thread::scope(|scope| {
            self.engine
                .spawn_background(scope, &self.shutdown, self.metrics_file.as_ref());
            for i in 0..self.threads {
                crate::shutdown::spawn_worker(
                    scope,
                    format!("fanotify-{i}"),
                    &self.shutdown,
                    &failure,
                    move || self.worker(),
                );
            }
            if !orphans.is_empty() {
                crate::shutdown::spawn_helper(
                    scope,
                    "fanotify-recover".into(),
                    "the recovery of unanswered events",
                    move || {
                        for (pending, reserved) in orphans {
                            self.answer_orphan(pending);
                            drop(reserved);
                        }
                    },
                );
            }
            if self.engine.prefetch.is_some() {
                crate::shutdown::spawn_helper(
                    scope,
                    "prefetch-start".into(),
                    "the prefetch starter",
                    || self.start_prefetch(),
                );
            }
        });
        self.engine.flush_recorder();
        if let Some((path, _)) = &self.metrics_file {
            self.engine.write_metrics(path, &mut false);
        }
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(self.stats()),
        }
    }

    /// Give every incomplete file an fd to write through (and so its prefetch a start).
    fn start_prefetch(&self) {
        for object in self.engine.objects() {
            if self.shutdown.is_triggered() {
                break;
            }
            self.kick(object.sink());
        }
    }

    /// If `backing` is marked and has no fd to write through, read its first byte: an event
    /// the workers serve, keeping its fd and queueing the file's prefetch (its block is
    /// filled as prefetch).
    fn kick(&self, backing: &BackingFile) {
        if backing.has_writer() || !backing.is_marked() {
            return;
        }
        backing.kick.store(true, Ordering::SeqCst);
        let read = File::open(&backing.path).and_then(|f| f.read_at(&mut [0u8; 1], 0));
        backing.kick.store(false, Ordering::SeqCst);
        if let Err(e) = read {
            log::warn!("first read of {}: {e}", backing.path.display());
        }
    }

    /// The events the journal says a predecessor left unanswered, each with its fd number
    /// reserved (so none of this daemon's own events gets it while it is pending).
    fn orphans(&self) -> Vec<(Pending, Option<OwnedFd>)> {
        let Some(journal) = &self.journal else {
            return Vec::new();
        };
        let pending = journal.pending().unwrap_or_else(|e| {
            log::error!("event journal: {e}");
            Vec::new()
        });
        pending
            .into_iter()
            .map(|p| {
                let reserved = crate::sys::reserve_fd_number(p.fd).unwrap_or_else(|e| {
                    log::warn!("reserving fd number {}: {e}", p.fd);
                    None
                });
                log::info!(
                    "event fd {} left unanswered by the previous daemon: {p:?}",
                    p.fd
                );
                (p, reserved)
            })
            .collect()
    }

    /// Fill what an unanswered event of a predecessor asked for, then answer it by its fd
    /// number (`ENOENT` from the kernel: it was answered after all).
    fn answer_orphan(&self, p: Pending) {
        let id = self
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.file)
            .copied();
        let result = match id.and_then(|id| self.engine.object(id)) {
            // A file this daemon does not serve: allowed, as any event on one.
            None => Ok(()),
            Some(object) => {
                self.kick(object.sink());
                match event_read(p.range, object.size(), self.zero_count) {
                    None => Ok(()),
                    Some((off, len)) => {
                        let mut buf = AlignedBuf::new(self.fill_buffer);
                        let plan = self.engine.plan_read(&object, off, len);
                        match plan.window {
                            Some((range, requested_end)) => self.engine.fill_window(
                                &object,
                                range,
                                requested_end,
                                &mut buf,
                                &mut Vec::new(),
                            ),
                            None => Ok(()),
                        }
                    }
                }
            }
        };
        log::info!(
            "answering the previous daemon's event fd {} ({})",
            p.fd,
            if result.is_ok() { "filled" } else { "failed" }
        );
        self.respond(p.fd, result);
        if let Some(journal) = &self.journal {
            journal.clear(p.fd);
        }
    }

    fn worker(&self) -> io::Result<()> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
        let mut buf = vec![0u8; EVENT_BUFFER];
        let mut fill = AlignedBuf::new(self.fill_buffer);
        // One epoll instance per worker, waiting exclusively: an event wakes one idle worker,
        // not all of them (with `poll`, every worker woke for each event and all but one found
        // nothing to read: CPU the fills need, on a machine with fewer cores than workers).
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .and_then(|ep| {
                ep.add(
                    self.group.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, 0),
                )?;
                Ok(ep)
            })
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("epoll: {e}")))?;
        let timeout = EpollTimeout::try_from(POLL_INTERVAL).unwrap_or(EpollTimeout::NONE);
        while !self.shutdown.is_triggered() {
            let mut ready = [EpollEvent::empty()];
            match epoll.wait(&mut ready, timeout) {
                Ok(0) => {
                    // Idle: files that prefetch completed need their mark no more.
                    for object in self.engine.objects() {
                        self.unmark_if_complete(&object);
                    }
                }
                Err(Errno::EINTR) => {}
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
        }
        Ok(())
    }

    /// Read and handle the events pending on the group until there are none (or shutdown);
    /// return how many were handled. `buf` receives the events (at least 4 KiB: one read
    /// returns whole events only); `fill` is the fill buffer (any size). For embedders with
    /// their own loop: poll [`AsFd::as_fd`] of this daemon for `POLLIN`, then call this.
    ///
    /// Every event of a read is answered before any work that can wait (the fill ahead of a
    /// sequential reader, asynchronous readahead): that work is done one event's worth at a
    /// time, each time the group has no event pending, so an event that finds its bytes
    /// present is never queued behind a fill for another reader.
    pub fn serve_pending(&self, buf: &mut [u8], fill: &mut AlignedBuf) -> usize {
        let mut handled = 0;
        let mut afters = std::collections::VecDeque::new();
        loop {
            let n = if self.shutdown.is_triggered() {
                // Claims taken for later fills must still be filled and released.
                0
            } else {
                match nix::unistd::read(&self.group, buf) {
                    Ok(0) | Err(Errno::EAGAIN) => 0,
                    Ok(n) => n.min(buf.len()),
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        log::error!("reading fanotify events: {e}");
                        self.engine.stats.bad_messages.add(1);
                        0
                    }
                }
            };
            if n == 0 {
                match afters.pop_front() {
                    Some(after) => {
                        self.finish(after, fill);
                        continue;
                    }
                    None => break,
                }
            }
            let read_at = Instant::now();
            // Every event of the read is adopted (its fd closed on every path) and journaled
            // before any is served: an event waiting behind another one's fill is in the
            // journal too, should the daemon die meanwhile.
            let events: Vec<_> = Events::new(&buf[..n])
                .map(|event| event.map(|ev| self.adopt(ev)))
                .collect();
            for event in events {
                handled += 1;
                match event {
                    Ok(adopted) => afters.extend(self.handle(adopted, fill, read_at)),
                    Err(bad) => {
                        log::error!("undecodable fanotify event: {}", bad.error);
                        self.engine.stats.bad_messages.add(1);
                        if let Some(fd) = bad.fd {
                            // Deny it so the reader does not wait forever, then close it.
                            let owned = crate::sys::adopt_fd(fd).ok();
                            self.respond(fd, Err(io::Error::from_raw_os_error(nix::libc::EIO)));
                            drop(owned);
                        }
                    }
                }
            }
        }
        handled
    }

    /// Take ownership of an event's fd and, with a journal, note the event in it (a
    /// pre-content event on a file this daemon serves).
    fn adopt(&self, ev: Event) -> Adopted {
        if ev.fd < 0 {
            return Adopted {
                ev,
                fd: None,
                noted: false,
            };
        }
        let fd = crate::sys::adopt_fd(ev.fd);
        let mut noted = false;
        if let (Some(journal), Ok(fd)) = (&self.journal, &fd)
            && ev.mask & FAN_PRE_ACCESS != 0
            && let Ok(st) = fstat(fd)
            && self
                .ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&(st.st_dev, st.st_ino))
        {
            journal.note(Pending {
                fd: ev.fd,
                file: (st.st_dev, st.st_ino),
                range: ev.range,
            });
            noted = true;
        }
        Adopted {
            ev,
            fd: Some(fd),
            noted,
        }
    }

    /// Serve one event read at `read_at`: fill, respond, close its fd. Returns what to fill
    /// after the answer (asynchronous readahead, the fill ahead of a sequential reader), for
    /// [`finish`](Self::finish).
    fn handle(
        &self,
        adopted: Adopted,
        fill: &mut AlignedBuf,
        read_at: Instant,
    ) -> Option<After<S::Object>> {
        let Adopted { ev, fd, noted } = adopted;
        let Some(fd) = fd else {
            // Only notification events come without an fd; this group asks for none but a
            // queue overflow can still arrive.
            self.engine.stats.bad_messages.add(1);
            log::warn!(
                "fanotify event without fd (mask {:#x}): queue overflow?",
                ev.mask
            );
            return None;
        };
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("event fd {}: {e}", ev.fd);
                self.engine.stats.bad_messages.add(1);
                self.respond(ev.fd, Err(e));
                return None;
            }
        };
        let mut after = After::default();
        let served_at = Instant::now();
        let result = self.serve(&ev, fd.as_fd(), fill, &mut after, noted);
        let answered_at = Instant::now();
        // Respond before closing: once closed, the number may name another event's fd.
        // (A fill that wrote the event's range early answered it then.)
        match (after.answered, result) {
            (false, result) => self.respond(ev.fd, result),
            (true, Ok(())) => {}
            (true, Err(e)) => log::warn!("event fd {} answered early, then: {e}", ev.fd),
        }
        // Where an event's time goes (RUST_LOG=ondemand::fanotify=trace): queued behind the
        // other events of its read, served (fill), answered (the response's write).
        log::trace!(
            "event fd {} range {:?}: queued {} µs, served {} µs, answered {} µs",
            ev.fd,
            ev.range.map(|r| (r.offset, r.count)),
            served_at.duration_since(read_at).as_micros(),
            answered_at.duration_since(served_at).as_micros(),
            answered_at.elapsed().as_micros(),
        );
        if let (Some(journal), true, false) = (&self.journal, noted, after.answered) {
            journal.clear(ev.fd);
        }
        drop(fd);
        // From the read of the event (other events of the same read came first) to the answer.
        self.engine.stats.read_latency.observe(read_at.elapsed());
        after.object.is_some().then_some(after)
    }

    /// Fill what an answered event left for later, then unmark its file if it is complete.
    fn finish(&self, after: After<S::Object>, fill: &mut AlignedBuf) {
        self.engine.fill_later(after.later, fill);
        if let Some(object) = after.object {
            if let Some(range) = after.ahead {
                self.engine.fill_ahead(&object, range, fill);
            }
            self.unmark_if_complete(&object);
        }
        self.engine.help_queued(fill);
    }

    /// Make the event's range present; `Err` → deny. With
    /// [`with_early_answer`](Self::with_early_answer), a fill that writes the requested range
    /// while the rest of its window is still coming (a server that streams:
    /// [`OnDemandServer::fill_streaming`]) allows the event then, as cachefiles completes its
    /// READ, clears its journal slot (`noted`) and sets `after.answered`; the rest of the
    /// window is filled before this returns (an event landing in it waits on its claim).
    fn serve(
        &self,
        ev: &Event,
        fd: BorrowedFd<'_>,
        buf: &mut AlignedBuf,
        after: &mut After<S::Object>,
        noted: bool,
    ) -> io::Result<()> {
        if ev.mask & FAN_PRE_ACCESS == 0 {
            log::debug!("fanotify event mask {:#x}: allowed", ev.mask);
            return Ok(());
        }
        let st = fstat(fd)?;
        let id = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(st.st_dev, st.st_ino))
            .copied();
        let Some(object) = id.and_then(|id| self.engine.object(id)) else {
            self.engine.stats.bad_messages.add(1);
            log::warn!(
                "event on a file this daemon does not serve (inode {})",
                st.st_ino
            );
            return Ok(());
        };
        if object.sink().keep_writer(fd, self.direct_io)? {
            // Writable from now on: its prefetch may start.
            self.engine.object_ready(&object);
        }
        let Some((off, len)) = event_read(ev.range, object.size(), self.zero_count) else {
            return Ok(());
        };
        log::debug!(
            "{}: event pid {} range {:?} → read [{off}, +{len})",
            object.key(),
            ev.pid,
            ev.range.map(|r| (r.offset, r.count)),
        );
        let own = u32::try_from(ev.pid).is_ok_and(|pid| pid == std::process::id());
        if own && object.sink().kick.swap(false, Ordering::SeqCst) {
            // Most likely the daemon's own read of the first byte (`start_prefetch`), made for
            // an fd to write through: its block is filled as prefetch, without readahead (if
            // it was another thread's read after all, that thread gets its bytes).
            return match crate::engine::window(off, len, object.size(), 0) {
                Some((range, _)) => self.engine.fill_for_prefetch(&object, range, buf),
                None => Ok(()),
            };
        }
        let Some(plan) = self.engine.plan_read_unless_present(&object, off, len, buf) else {
            // Every byte asked for is present: answered at once, no step of the sequential
            // stream (nor of its growth here), as on cachefiles, whose kernel asks only at
            // misses.
            after.object = Some(object);
            return Ok(());
        };
        let result = match plan.window {
            Some((range, requested_end)) => {
                log::debug!(
                    "{}: stream: window {range:?}, ahead {:?}",
                    object.key(),
                    plan.ahead
                );
                after.ahead = plan.ahead;
                let mut answered = false;
                let mut answer = || {
                    self.respond(ev.fd, Ok(()));
                    if let (Some(journal), true) = (&self.journal, noted) {
                        journal.clear(ev.fd);
                    }
                    answered = true;
                };
                let result = self.engine.fill_window_answering(
                    &object,
                    range,
                    requested_end,
                    buf,
                    &mut after.later,
                    self.early_answer
                        .then_some(&mut answer as crate::engine::Answer<'_>),
                );
                after.answered = answered;
                result
            }
            // Past the end: nothing to fill, the reader finds the end of the file.
            None => Ok(()),
        };
        after.object = Some(object);
        result
    }

    /// Every byte present: the kernel need not ask any more (each read of a marked file
    /// costs an event, present or not).
    fn unmark_if_complete(&self, object: &Object<S::Object, BackingFile>) {
        let backing = object.sink();
        if !backing.is_marked()
            || object.present().intersection_len(0..object.size()) < object.size()
        {
            return;
        }
        if backing.marked.swap(false, Ordering::SeqCst) {
            match self.unmark(&backing.file) {
                Ok(()) => log::info!(
                    "{}: all {} bytes present, unmarked",
                    backing.path.display(),
                    object.size()
                ),
                Err(e) => log::warn!("unmarking {}: {e}", backing.path.display()),
            }
        }
    }

    /// Write the response for the event with fd number `fd`.
    fn respond(&self, fd: RawFd, result: io::Result<()>) {
        let errno = result.as_ref().err().map(|e| errno_of(e).get());
        let allow = result.is_ok();
        let with_errno = self.deny_errno.load(Ordering::Relaxed);
        let word = response_word(allow, errno.filter(|_| with_errno));
        log::debug!(
            "event fd {fd}: {}",
            if allow { "allowed" } else { "denied" }
        );
        match write_response(&self.group, fd, word) {
            Ok(()) => {}
            Err(Errno::EINVAL) if !allow && word != FAN_DENY => {
                // A kernel without FAN_DENY_ERRNO: plain deny from now on.
                log::info!("the kernel refused FAN_DENY_ERRNO; denying with EPERM from now on");
                self.deny_errno.store(false, Ordering::Relaxed);
                if let Err(e) = write_response(&self.group, fd, FAN_DENY) {
                    log::error!("responding to event fd {fd}: {e}");
                }
            }
            Err(e) => log::error!("responding to event fd {fd}: {e}"),
        }
    }
}

/// An event whose fd this daemon owns now (`None`: it came without one; `Err`: adopting it
/// failed), and whether it is in the journal.
struct Adopted {
    ev: Event,
    fd: Option<io::Result<OwnedFd>>,
    noted: bool,
}

/// What an event leaves to do once it is answered.
struct After<O> {
    object: Option<Arc<Object<O, BackingFile>>>,
    later: crate::engine::Later<O, BackingFile>,
    ahead: Option<Range<u64>>,
    /// The event was allowed from inside its fill, once its range was written.
    answered: bool,
}

impl<O> Default for After<O> {
    fn default() -> Self {
        After {
            object: None,
            later: Vec::new(),
            ahead: None,
            answered: false,
        }
    }
}

/// Turn `O_DIRECT` on or off on `fd` (its open file description).
fn set_direct(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_DIRECT
    } else {
        flags - OFlag::O_DIRECT
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Open the backing file at `path` for an object of `size` bytes: the file there if it is a
/// regular file of that size (kept, with what it holds), else a new sparse one.
fn open_backing_file(path: &Path, size: u64) -> io::Result<File> {
    let with = |what: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == size => {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| with("opening", e));
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| with("removing", e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with("stat", e)),
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| with("creating", e))?;
    file.set_len(size).map_err(|e| with("sizing", e))?;
    Ok(file)
}

impl<S: OnDemandServer> AsFd for FanotifyDaemon<S> {
    /// The fanotify group: readable when events are pending.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
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
