//! An embeddable backend for Linux's native lazy image pulling: EROFS over fscache, with
//! cachefiles in **on-demand** mode. The kernel mounts an image with
//! `mount -t erofs none -o fsid=ID`; whenever it needs bytes of a blob that are not in its
//! cache, it asks a user-space daemon through `/dev/cachefiles`. This crate is that daemon,
//! split so a container runtime can embed it with its own source of blobs.
//!
//! Where it sits: kernel (EROFS → fscache → cachefiles) ⇄ [`device`] (the only syscalls) ⇄
//! [`session`] (object table, request → actions; no syscalls) ⇄ your [`OnDemandServer`]
//! (where the bytes come from). [`daemon`] is the reference loop on top; [`local`] is a
//! server for blobs in a local directory; the `erofs-ondemand` binary (feature `cli`) runs it.
//! The wire format is `cachefiles-proto`.
//!
//! For production: [`metrics`] (counters and latency histograms, Prometheus text, an
//! atomically rewritten metrics file), [`prefetch`] (background filling of objects, with
//! [`plan`] to turn a list of paths into blob ranges; present ranges are rebuilt from the
//! cache files after a restart), [`failover`] (an fd holder so a daemon can die while mounts
//! are live and a successor take over with `restore`), and [`mount`] (file-backed mounts with
//! no daemon when every blob is local).
//!
//! Straight from an OCI registry (feature `registry`): [`registry`] resolves an image (Nydus
//! RAFS v6 as nydusify pushes it, or containerd's native EROFS layers), serves its blobs
//! lazily by byte ranges through `oci-lazy` behind either transport, and mounts its rootfs
//! (the overlay of the EROFS layers).
//!
//! For Linux 7.2+, which has no EROFS over fscache: [`fanotify`] serves the same
//! [`OnDemandServer`] behind file-backed mounts, filling sparse backing files on fanotify
//! pre-content (`FAN_PRE_ACCESS`) events.
//!
//! The sequence: the kernel sends OPEN (volume key `erofs,<fsid>`, cookie key = fsid or blob
//! name, and a new fd in our fd table); the server says how big the object is and the daemon
//! answers `copen <id>,<size>`. For every missing range the kernel sends READ; the daemon asks
//! the server for the bytes (plus a readahead window), `pwrite`s them into the object's fd and
//! completes the READ with an ioctl, always, even on failure (then the reader gets `EIO`).
//! When READs follow each other through an object, the worker then goes on filling past the
//! window, further each time ([`Session::with_sequential_ahead`]), so a sequential reader
//! mostly finds its bytes present while the server produces the next ones. On unmount the
//! kernel sends CLOSE and the daemon closes the fd.
//!
//! # Example
//!
//! A custom server (blobs in memory), driven through the pure session with a scripted OPEN and
//! READ instead of the kernel:
//!
//! ```
//! use std::io;
//! use std::sync::Mutex;
//! use ondemand::{AlignedBuf, Action, ObjectFd, ObjectKey, OnDemandServer, Opened, Session, Sink};
//! use ondemand::proto::{MsgId, ObjectId, OpenReply, OpenRequest, ReadRequest, Request};
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
//! /// Stands in for the kernel's per-object fd.
//! #[derive(Default)]
//! struct Recorder { writes: Mutex<Vec<(u64, usize)>>, completed: Mutex<Vec<MsgId>> }
//!
//! impl Sink for Recorder {
//!     fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
//!         self.writes.lock().unwrap().push((off, data.len()));
//!         Ok(())
//!     }
//! }
//!
//! impl ObjectFd for Recorder {
//!     fn read_complete(&self, msg_id: MsgId) -> io::Result<()> {
//!         self.completed.lock().unwrap().push(msg_id);
//!         Ok(())
//!     }
//! }
//!
//! let session = Session::<Memory, Recorder>::new(Memory).with_readahead(1 << 20);
//! let open = Request::Open(OpenRequest {
//!     msg_id: MsgId(1), object_id: ObjectId(1),
//!     volume_key: b"erofs,img", cookie_key: b"img", fd: 9, flags: 0,
//! });
//! let actions = session.handle(&open, Some(Recorder::default()));
//! assert!(matches!(actions[..],
//!     [Action::Copen { reply: OpenReply::Size(10_000), .. }]));
//!
//! // A 4 KiB READ: readahead widens it to the whole object (10000 bytes → 3 blocks).
//! let read = Request::Read(ReadRequest { msg_id: MsgId(2), object_id: ObjectId(1), off: 0, len: 4096 });
//! let actions = session.handle(&read, None);
//! let mut buf = AlignedBuf::new(1 << 20);
//! let send = |c: &ondemand::proto::Command<'_>| { let _ = c; Ok(()) };
//! session.execute(actions, &send, &mut buf);
//! let fd = session.object(ObjectId(1)).unwrap();
//! assert_eq!(*fd.sink().writes.lock().unwrap(), [(0, 12288)]);
//! assert_eq!(*fd.sink().completed.lock().unwrap(), [MsgId(2)]);
//! ```
//!
//! With the kernel, [`Daemon`] does the same with a [`CachefilesDevice`]:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use ondemand::{CachefilesDevice, Daemon, LocalDirServer, Session, shutdown_on_signals};
//! let device = CachefilesDevice::open()?;
//! device.bind_ondemand("/var/cache/erofs".as_ref(), Some("images"))?;
//! let daemon = Daemon::new(device, Session::new(LocalDirServer::new("/var/lib/blobs")))
//!     .with_threads(4);
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
//! - `cli`: the `erofs-ondemand` binary (clap, env_logger; turns on `registry`).
//! - `registry`: [`registry`], serving images from OCI registries (`oci-lazy`, `tar`,
//!   `flate2`).
//!
//! # Safety
//!
//! `unsafe` is denied crate-wide except in two small `sys` modules: in [`device`], adopting
//! the fd number the kernel put in an OPEN message and the `READ_COMPLETE` ioctl; in
//! [`fanotify`], adopting the fd a pre-content event carries. Each block says why it holds.

pub mod blob_store;
pub mod daemon;
pub mod device;
mod engine;
pub mod failover;
pub mod fanotify;
pub mod local;
pub mod metrics;
pub mod mount;
pub mod plan;
pub mod rafs;
pub mod ranges;
#[cfg(feature = "registry")]
pub mod registry;
pub mod server;
pub mod session;
mod sys;

/// The wire protocol crate, re-exported.
pub use cachefiles_proto as proto;

pub use blob_store::{BlobStore, LocalDirStore, RangeRead, StoredBlob};
pub use daemon::{DEFAULT_THREADS, Daemon, POLL_INTERVAL, Shutdown, shutdown_on_signals};
pub use device::{
    AlignedBuf, AnonFd, BLOCK_SIZE, CachefilesDevice, DEFAULT_DEVICE_PATH, Device, ObjectFd,
};
pub use engine::{
    DEFAULT_PREFETCH_CHUNK, DEFAULT_READAHEAD, DEFAULT_SEQUENTIAL_AHEAD, Engine, MAX_READ_FILL,
    Object, PrefetchConfig, ReadPlan, Refused, Sink, window,
};
pub use fanotify::FanotifyDaemon;
pub use local::LocalDirServer;
pub use metrics::{HistogramSnapshot, Stats, StatsSnapshot};
pub use ranges::RangeSet;
pub use server::{ObjectKey, OnDemandServer, Opened, errno_of};
pub use session::{Action, Session};

#[cfg(test)]
mod fake;
