//! An embeddable backend for Linux's native lazy image pulling. The kernel mounts an EROFS
//! image whose blobs are not all there; whenever it needs bytes that are missing, it asks a
//! user-space daemon, and this crate is that daemon, split so a container runtime can embed
//! it with its own source of blobs. Two kernel paths, one engine:
//!
//! - **EROFS over fscache** (Linux 5.19 to 7.1): cachefiles in on-demand mode,
//!   `mount -t erofs none -o fsid=ID`. The kernel sends OPEN / READ / CLOSE through
//!   `/dev/cachefiles` ([`CachefilesDevice`], [`Session`], [`Daemon`]).
//! - **File-backed EROFS with fanotify pre-content events** (Linux 7.2+, which removed the
//!   fscache backend): sparse backing files marked `FAN_PRE_ACCESS`; each read of a missing
//!   range is an event ([`FanotifyDaemon`], [`fanotify`]).
//!
//! Where it sits: kernel ⇄ a transport (the only syscalls; cachefiles messages or fanotify
//! events turned into engine calls) ⇄ the [`Engine`] (object table, range claims, READ
//! window, the fill loop, fill ahead of sequential readers, prefetch, the scan of what an
//! earlier daemon left; no syscalls but the sink's writes) ⇄ your [`OnDemandServer`] (where
//! the bytes come from). Servers included: [`LocalDirServer`] (a file per cookie key) and
//! [`rafs::RafsServer`] (Nydus RAFS v6 images over any [`BlobStore`], local directory
//! included). The wire format is `cachefiles-proto`.
//!
//! For production: [`metrics`] (Prometheus text, the same names on both paths),
//! [`PrefetchConfig`] (background filling, with [`plan`] to turn a list of paths into blob
//! ranges), record and replay ([`Recorder`] writes what the readers of one run asked for,
//! [`AccessTrace`] + [`PrefetchConfig::with_trace`] fetch it ahead of the next cold start),
//! cold prediction with no trace ([`predict`]: a READ in a file fills the rest of the file
//! and its directory's files, from the image's layout), [`failover`] (an fd holder so a daemon can die while mounts are live and a
//! successor take over), [`ready`] (tell a supervisor or a runtime the mount is up: an
//! inherited fd or systemd's `NOTIFY_SOCKET`), and [`mount`] (file-backed mounts with no
//! daemon when every blob is local).
//!
//! Straight from an OCI registry (feature `registry`): [`registry`] resolves an image (Nydus
//! RAFS v6 as nydusify pushes it, or containerd's native EROFS layers), serves its blobs
//! lazily by byte ranges through `oci-lazy` behind either transport, and mounts its rootfs
//! (the overlay of the EROFS layers).
//!
//! The cachefiles sequence: the kernel sends OPEN (volume key `erofs,<fsid>`, cookie key =
//! fsid or blob name, and a new fd in our fd table); the server says how big the object is
//! and the daemon answers `copen <id>,<size>`. For every missing range the kernel sends READ;
//! the engine asks the server for the bytes (plus a readahead window), writes them through the
//! object's fd and the session completes the READ with an ioctl, always, even on failure
//! (then the reader gets `EIO`). When READs follow each other through an object, the worker
//! then goes on filling past the window, further each time
//! ([`Engine::with_sequential_ahead`]). On unmount the kernel sends CLOSE. The fanotify
//! sequence is the same with an event for each READ and `FAN_ALLOW` / `FAN_DENY` for the
//! completion.
//!
//! # Example
//!
//! A custom server (blobs in memory), served by the reference daemon to a scripted kernel
//! (`testing::FakeDevice`, feature `test-util`) that sends one OPEN and one READ:
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use std::io;
//! use ondemand::proto::{MsgId, ObjectId, OpenRequest, ReadRequest, Request};
//! use ondemand::testing::FakeDevice;
//! use ondemand::{Daemon, ObjectKey, OnDemandServer, Opened, Session, Shutdown};
//!
//! /// Every blob is 10000 bytes of its key's first byte.
//! struct Memory;
//!
//! impl OnDemandServer for Memory {
//!     type Object = u8;
//!     fn open(&self, key: &ObjectKey<'_>) -> io::Result<Opened<u8>> {
//!         let first = *key.cookie_key.first().ok_or(io::ErrorKind::NotFound)?;
//!         Ok(Opened { object: first, size: 10_000 })
//!     }
//!     fn read_at(&self, byte: &u8, _off: u64, buf: &mut [u8]) -> io::Result<usize> {
//!         buf.fill(*byte);
//!         Ok(buf.len())
//!     }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let stop = Shutdown::new();
//! let kernel = FakeDevice::new(dir.path()).stop_when_empty(stop.clone());
//! kernel.push(Request::Open(OpenRequest {
//!     msg_id: MsgId(1), object_id: ObjectId(1),
//!     volume_key: b"erofs,img", cookie_key: b"img", fd: 9, flags: 0,
//! }));
//! kernel.push(Request::Read(ReadRequest { msg_id: MsgId(2), object_id: ObjectId(1), off: 0, len: 4096 }));
//! // With the kernel: `CachefilesDevice::open()?` and `bind_ondemand` instead.
//! let daemon = Daemon::new(kernel, Session::new(Memory)).with_shutdown(stop);
//! let stats = daemon.run()?;
//! assert_eq!((stats.opens, stats.reads, stats.read_errors), (1, 1, 0));
//! let kernel = daemon.device();
//! assert_eq!(kernel.commands(), ["copen 1,10000"]);
//! // The READ was completed, after the readahead window (the whole object) was written.
//! assert_eq!(*kernel.fd_log(9).completed.lock().unwrap(), [MsgId(2)]);
//! assert_eq!(&std::fs::read(kernel.cache_file(9))?[..10_000], &[b'i'; 10_000][..]);
//! # Ok(()) }
//! ```
//!
//! With the kernel, [`Daemon`] does the same with a [`CachefilesDevice`] (on Linux 7.2+,
//! [`FanotifyDaemon`] with the same server):
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use ondemand::{CachefilesDevice, Daemon, LocalDirServer, Session, shutdown_on_signals};
//! let device = CachefilesDevice::open()?;
//! device.bind_ondemand("/var/cache/erofs".as_ref(), Some("images"))?;
//! // DEFAULT_THREADS workers, as the CLI.
//! let daemon = Daemon::new(device, Session::new(LocalDirServer::new("/var/lib/blobs")));
//! shutdown_on_signals(daemon.shutdown_handle())?;
//! let stats = daemon.run()?;
//! println!("{stats}");
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Server methods return [`std::io::Error`]; the kernel gets [`errno_of`] of it. The device
//! layer returns the kernel's errors as `io::Error`. The daemon loop logs request-level
//! errors (with the `log` crate) and keeps serving; only a failing `poll` stops it.
//!
//! # Panics
//!
//! No kernel message makes the daemon panic: messages are decoded with checks, and offsets and
//! lengths are clipped to the object.
//!
//! # Features
//!
//! - `lz4`, `lzma`, `deflate`, `libdeflate`, `zstd`: `erofs-reader`'s decompressors,
//!   forwarded; they decide which compressed images and Nydus blobs the servers decode. The
//!   default is `lz4`, `lzma`, `libdeflate` (which includes `deflate`) and `zstd`.
//! - `pure-rust`: only the decompressors without C libraries (`lz4`, `deflate`); with
//!   `default-features = false`, a static `x86_64-unknown-linux-musl` build needs no C
//!   toolchain for the target.
//!   (`registry`, and so `cli`, add rustls on `ring`, which compiles C and assembly: a
//!   musl build of the binaries needs `musl-gcc`.)
//! - `cli`: the `erofs-ondemand` binary (clap, env_logger; turns on `registry`).
//! - `registry`: [`registry`], serving images from OCI registries (`oci-lazy`, `tar`,
//!   `flate2`).
//! - `test-util`: `testing`, a fake `/dev/cachefiles` for tests without a kernel.
//!
//! # Safety
//!
//! `unsafe` is denied crate-wide except in one private `sys` module: adopting the fd number
//! the kernel put in an OPEN message, a fanotify event or an `SCM_RIGHTS` message, or the
//! parent passed at exec ([`ready`]), taking a received fd as a fanotify group, and the
//! `READ_COMPLETE` ioctl. Each block says why it
//! holds.
//!
#![cfg_attr(feature = "registry", doc = "[`registry`]: crate::registry")]
// Without the feature the module is not built: its links point at the published docs.
#![cfg_attr(
    not(feature = "registry"),
    doc = "[`registry`]: https://docs.rs/ondemand/latest/ondemand/registry/"
)]

mod blob_store;
mod buf;
mod chunk_claims;
mod daemon;
mod device;
mod engine;
pub mod failover;
pub mod fanotify;
mod local;
pub mod metrics;
pub mod mount;
pub mod plan;
pub mod predict;
pub mod rafs;
mod ranges;
pub mod ready;
#[cfg(feature = "registry")]
pub mod registry;
mod server;
mod session;
mod shutdown;
mod sys;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod trace;
#[cfg(feature = "registry")]
mod trace_early;
pub mod warm;

/// The wire protocol crate, re-exported.
pub use cachefiles_proto as proto;

pub use blob_store::{BlobStore, LocalDirStore, RangeRead, StoredBlob};
pub use buf::{AlignedBuf, BLOCK_SIZE};
pub use daemon::{DEFAULT_THREADS, Daemon};
pub use device::{AnonFd, CachefilesDevice, DEFAULT_DEVICE_PATH, Device, ObjectFd, data_ranges};
pub use engine::{
    DEFAULT_PREFETCH_CHUNK, DEFAULT_PREFETCH_NICE, DEFAULT_READAHEAD, DEFAULT_SEQUENTIAL_AHEAD,
    Engine, MAX_READ_FILL, Object, PREDICT_FILL_THREADS, PrefetchConfig, PrefetchObserver,
    ReadPlan, Refused, Sink, default_fill_threads, window,
};
pub use fanotify::FanotifyDaemon;
pub use local::LocalDirServer;
pub use metrics::{HistogramSnapshot, Stats, StatsSnapshot};
pub use ranges::RangeSet;
pub use server::{ObjectKey, OnDemandServer, Opened, errno_of};
pub use session::{Action, Session};
pub use shutdown::{POLL_INTERVAL, Shutdown, shutdown_on_signals};
pub use trace::{
    AccessTrace, MAX_TRACE_ENTRIES, MAX_TRACE_FILE, Recorder, TRACE_HEADER, TraceEntry, TraceError,
};
