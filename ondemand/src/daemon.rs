//! The reference daemon loop: worker threads that poll the device, read one message each,
//! and let the [`Session`] handle it, until a [`Shutdown`] is triggered (by SIGINT/SIGTERM
//! through [`shutdown_on_signals`], or by the embedder).
//!
//! Every worker owns its message buffer and its aligned fill buffer; the session and the
//! device are shared. Server errors become errnos for the kernel (an OPEN refused, a READ
//! completed without data so the reader gets `EIO`), and the loop keeps serving.

use std::io;
use std::path::PathBuf;

use std::sync::Mutex;
use std::time::Duration;

use cachefiles_proto::MSG_MAX_SIZE;

use crate::buf::AlignedBuf;
use crate::device::Device;
use crate::metrics::StatsSnapshot;
use crate::server::OnDemandServer;
use crate::session::Session;
use crate::shutdown::{POLL_INTERVAL, Shutdown, spawn_worker};

/// Worker threads of [`Daemon`] and [`crate::FanotifyDaemon`] by default, as in
/// `erofs-ondemand serve` and `erofs-ondemand fanotify`.
pub const DEFAULT_THREADS: usize = 4;

/// The fill buffer for a readahead window: whole windows per `pwrite`, 64 KiB to 4 MiB.
pub(crate) fn default_fill_buffer(readahead: u64) -> usize {
    usize::try_from(readahead)
        .unwrap_or(usize::MAX)
        .clamp(64 << 10, 4 << 20)
}

/// A fill buffer asked for: rounded up to 4 KiB, between 64 KiB and 16 MiB.
pub(crate) fn fill_buffer_size(bytes: usize) -> usize {
    bytes.clamp(64 << 10, 16 << 20).div_ceil(4096) * 4096
}

/// The daemon: a [`Session`] served from a [`Device`] by worker threads.
pub struct Daemon<S: OnDemandServer, D: Device> {
    device: D,
    session: Session<S, D::Fd>,
    threads: usize,
    fill_buffer: usize,
    shutdown: Shutdown,
    metrics_file: Option<(PathBuf, Duration)>,
}

impl<S: OnDemandServer, D: Device> std::fmt::Debug for Daemon<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("session", &self.session)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl<S: OnDemandServer, D: Device> Daemon<S, D> {
    /// A daemon with [`DEFAULT_THREADS`] worker threads. The device must already be bound
    /// ([`crate::CachefilesDevice::bind_ondemand`]).
    pub fn new(device: D, session: Session<S, D::Fd>) -> Self {
        let fill_buffer = default_fill_buffer(session.readahead());
        Daemon {
            device,
            session,
            threads: DEFAULT_THREADS,
            fill_buffer,
            shutdown: Shutdown::new(),
            metrics_file: None,
        }
    }

    /// While running, rewrite `path` with the Prometheus text of the session's metrics every
    /// `interval` (atomically: a temporary file renamed over it), and once more at the end.
    pub fn with_metrics_file(mut self, path: impl Into<PathBuf>, interval: Duration) -> Self {
        self.metrics_file = Some((path.into(), interval.max(Duration::from_millis(10))));
        self
    }

    /// Use `n` worker threads (at least 1).
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Each worker's fill buffer: the most one `pwrite` into an object writes, and the piece
    /// a fill ahead or prefetch hands to the server at once (so a server that decodes in
    /// parallel sees several chunks). Rounded up to 4 KiB, between 64 KiB and 16 MiB.
    /// Default: the readahead window, between 64 KiB and 4 MiB.
    pub fn with_fill_buffer(mut self, bytes: usize) -> Self {
        self.fill_buffer = fill_buffer_size(bytes);
        self
    }

    /// The flag that stops [`run`](Self::run).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Use this flag instead of the daemon's own.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The session (object table, counters).
    pub fn session(&self) -> &Session<S, D::Fd> {
        &self.session
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Serve until shutdown; return the counters.
    ///
    /// # Errors
    ///
    /// A failing `poll` on the device (the first one seen); the other workers stop too.
    pub fn run(&self) -> io::Result<StatsSnapshot> {
        let failure: Mutex<Option<io::Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            self.session
                .spawn_background(scope, &self.shutdown, self.metrics_file.as_ref());
            for i in 0..self.threads {
                spawn_worker(
                    scope,
                    format!("ondemand-{i}"),
                    &self.shutdown,
                    &failure,
                    || self.worker(),
                );
            }
        });
        self.session.flush_recorder();
        if let Some((path, _)) = &self.metrics_file {
            self.session.write_metrics(path, &mut false);
        }
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(self.session.stats()),
        }
    }

    fn worker(&self) -> io::Result<()> {
        let mut msg = [0u8; MSG_MAX_SIZE];
        let mut fill = AlignedBuf::new(self.fill_buffer);
        while !self.shutdown.is_triggered() {
            if self.device.wait_readable(POLL_INTERVAL)?
                && self.serve_pending(&mut msg, &mut fill) == 0
            {
                // Readable but nothing to read: another worker took it, or the kernel skipped
                // a READ of an object being re-opened. Yield rather than spin.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// Read and handle messages until the device has none (or shutdown is triggered); return
    /// how many were handled. Read errors are logged (the kernel fails the request that
    /// caused them) and end this round.
    pub fn serve_pending(&self, msg: &mut [u8; MSG_MAX_SIZE], fill: &mut AlignedBuf) -> usize {
        let mut handled = 0;
        while !self.shutdown.is_triggered() {
            match self.device.read_message(msg) {
                Ok(0) => break,
                Ok(n) => {
                    self.session
                        .serve_message(&self.device, &msg[..n.min(msg.len())], fill);
                    handled += 1;
                }
                Err(e) => {
                    log::error!("reading a request: {e}");
                    break;
                }
            }
        }
        handled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use cachefiles_proto::{CloseRequest, MsgId, ObjectId, OpenRequest, ReadRequest, Request};

    use super::*;
    use crate::local::LocalDirServer;
    use crate::testing::FakeDevice;

    fn blob(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| seed.wrapping_add((i / 3) as u8)).collect()
    }

    /// Run `daemon` again, on a fresh shutdown flag (the fake device triggers only the first
    /// one), until every queued message was read. A worker reads no message once the flag is
    /// set and `run` joins the workers, so each message read is also handled when it returns.
    fn run_until_read<S: OnDemandServer>(daemon: Daemon<S, FakeDevice>) -> Daemon<S, FakeDevice> {
        let shutdown = Shutdown::new();
        let daemon = Daemon {
            shutdown: shutdown.clone(),
            ..daemon
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                while daemon.device().queue_len() > 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                shutdown.trigger();
            });
            daemon.run().unwrap();
        });
        daemon
    }

    #[test]
    fn serves_a_scripted_conversation_with_several_workers() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        let n_objects = 8u32;
        let len = 700_000;
        for i in 0..n_objects {
            std::fs::write(blobs.join(format!("blob{i}")), blob(i as u8, len)).unwrap();
        }
        let keys: Vec<String> = (0..n_objects).map(|i| format!("blob{i}")).collect();
        let shutdown = Shutdown::new();
        let device = FakeDevice::new(tmp.path()).stop_when_empty(shutdown.clone());
        // The kernel sends READs only after copen: queue OPENs, serve them, then the READs.
        for (i, key) in keys.iter().enumerate() {
            device.push(Request::Open(OpenRequest {
                msg_id: MsgId(i as u32),
                object_id: ObjectId(i as u32 + 1),
                volume_key: b"erofs,d",
                cookie_key: key.as_bytes(),
                fd: 100 + i as u32,
                flags: 0,
            }));
        }
        let session = Session::new(LocalDirServer::new(&blobs)).with_readahead(0);
        let daemon = Daemon::new(device, session)
            .with_threads(4)
            .with_shutdown(shutdown.clone());
        daemon.run().unwrap();
        assert_eq!(daemon.session().object_count(), n_objects as usize);

        let mut msg_id = 1000;
        for i in 0..n_objects {
            for off in (0..len as u64).step_by(4096) {
                daemon.device().push(Request::Read(ReadRequest {
                    msg_id: MsgId(msg_id),
                    object_id: ObjectId(i + 1),
                    off,
                    len: 4096,
                }));
                msg_id += 1;
            }
        }
        let daemon = run_until_read(daemon);
        for i in 0..n_objects {
            let fd = 100 + i;
            let cache = std::fs::read(daemon.device().cache_file(fd)).unwrap();
            assert_eq!(&cache[..len], &blob(i as u8, len)[..], "object {i}");
            assert_eq!(
                daemon.device().fd_log(fd).completed.lock().unwrap().len(),
                len.div_ceil(4096)
            );
        }
        for i in 0..n_objects {
            daemon.device().push(Request::Close(CloseRequest {
                msg_id: MsgId(5000 + i),
                object_id: ObjectId(i + 1),
            }));
        }
        let daemon = run_until_read(daemon);
        let stats = daemon.session().stats();
        assert_eq!(daemon.session().object_count(), 0);
        assert!(daemon.device().fd_log(100).closed.load(Ordering::SeqCst));
        assert_eq!(stats.opens, u64::from(n_objects));
        assert_eq!(stats.closes, u64::from(n_objects));
        assert_eq!(
            stats.reads,
            u64::from(n_objects) * len.div_ceil(4096) as u64
        );
        assert_eq!(
            stats.bytes_written,
            u64::from(n_objects) * (len.div_ceil(4096) * 4096) as u64
        );
        assert_eq!(
            (stats.open_errors, stats.read_errors, stats.bad_messages),
            (0, 0, 0)
        );
    }

    #[test]
    fn metrics_file_is_rewritten_while_serving() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("b"), blob(1, 100_000)).unwrap();
        let metrics = tmp.path().join("metrics.prom");
        let device = FakeDevice::new(tmp.path());
        device.push(Request::Open(OpenRequest {
            msg_id: MsgId(1),
            object_id: ObjectId(1),
            volume_key: b"erofs,d",
            cookie_key: b"b",
            fd: 10,
            flags: 0,
        }));
        let daemon = Daemon::new(device, Session::new(LocalDirServer::new(&blobs)))
            .with_threads(2)
            .with_metrics_file(&metrics, Duration::from_millis(20));
        let stop = daemon.shutdown_handle();
        let value = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        };
        std::thread::scope(|s| {
            s.spawn(|| daemon.run().unwrap());
            let t = std::time::Instant::now();
            // The OPEN shows up in the file while the daemon runs.
            loop {
                let text = std::fs::read_to_string(&metrics).unwrap_or_default();
                if value(&text, "erofs_ondemand_open_requests_total") == Some(1) {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "{text}");
                std::thread::sleep(Duration::from_millis(10));
            }
            daemon.device().push(Request::Read(ReadRequest {
                msg_id: MsgId(2),
                object_id: ObjectId(1),
                off: 0,
                len: 4096,
            }));
            loop {
                let text = std::fs::read_to_string(&metrics).unwrap_or_default();
                if value(&text, "erofs_ondemand_read_requests_total") == Some(1) {
                    assert_eq!(
                        value(&text, "erofs_ondemand_fetched_bytes_total"),
                        Some(100_000)
                    );
                    assert_eq!(value(&text, "erofs_ondemand_errors_total"), Some(0));
                    assert_eq!(value(&text, "erofs_ondemand_objects"), Some(1));
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "{text}");
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.trigger();
        });
        let text = std::fs::read_to_string(&metrics).unwrap();
        assert_eq!(
            value(&text, "erofs_ondemand_read_duration_seconds_count"),
            Some(1)
        );
    }

    #[test]
    fn shutdown_stops_idle_workers() {
        let tmp = tempfile::tempdir().unwrap();
        let daemon = Daemon::new(
            FakeDevice::new(tmp.path()),
            Session::new(LocalDirServer::new("/nonexistent")),
        )
        .with_threads(3);
        let stop = daemon.shutdown_handle();
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                stop.trigger();
            });
            assert_eq!(daemon.run().unwrap(), StatsSnapshot::default());
        });
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
