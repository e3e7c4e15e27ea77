//! A fake kernel for tests (feature `test-util`): [`FakeDevice`], a scripted
//! `/dev/cachefiles` whose per-object fds ([`FakeFd`]) are files in a directory, checking the
//! direct-I/O alignment rules of the real one, and recording every command, write, completion
//! and close ([`FdLog`]). The crate's own tests, `fuzz/` and embedders' tests use it.
//!
//! Test code: its methods panic (with the reason) when the directory cannot be written.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachefiles_proto::{Command, MSG_MAX_SIZE, MsgId, Request};

use crate::buf::BLOCK_SIZE;
use crate::device::{Device, ObjectFd};
use crate::engine::Sink;
use crate::shutdown::Shutdown;

/// What happened to one fake fd.
#[derive(Debug, Default)]
pub struct FdLog {
    /// The READs completed through it, in order.
    pub completed: Mutex<Vec<MsgId>>,
    /// Its writes: `(offset, length)`, in order.
    pub writes: Mutex<Vec<(u64, usize)>>,
    /// Whether it was closed (dropped).
    pub closed: AtomicBool,
    /// Writes refused for breaking the direct-I/O rules: `(offset, length)`.
    pub rejected: Mutex<Vec<(u64, usize)>>,
    /// Make writes fail with ENOBUFS.
    pub fail_writes: AtomicBool,
}

/// A per-object fd backed by a file.
#[derive(Debug)]
pub struct FakeFd {
    file: File,
    log: Arc<FdLog>,
}

impl FakeFd {
    /// A fd over a new (emptied) cache file at `path`, and its log.
    pub fn create(path: &Path) -> (FakeFd, Arc<FdLog>) {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        let log = Arc::new(FdLog::default());
        (
            FakeFd {
                file,
                log: Arc::clone(&log),
            },
            log,
        )
    }
}

impl FakeFd {
    /// A fd over an existing cache file (a restarted daemon's view of it).
    pub fn reopen(path: &Path) -> (FakeFd, Arc<FdLog>) {
        let file = File::options().read(true).write(true).open(path).unwrap();
        let log = Arc::new(FdLog::default());
        (
            FakeFd {
                file,
                log: Arc::clone(&log),
            },
            log,
        )
    }
}

impl Drop for FakeFd {
    fn drop(&mut self) {
        self.log.closed.store(true, Ordering::SeqCst);
    }
}

impl Sink for FakeFd {
    fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
        // The rules of direct I/O into the kernel's cache file.
        let b = BLOCK_SIZE;
        if !(data.as_ptr() as usize).is_multiple_of(b)
            || !data.len().is_multiple_of(b)
            || !off.is_multiple_of(b as u64)
        {
            self.log.rejected.lock().unwrap().push((off, data.len()));
            return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
        }
        if self.log.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOBUFS));
        }
        self.file.write_all_at(data, off)?;
        self.log.writes.lock().unwrap().push((off, data.len()));
        Ok(())
    }

    fn data_ranges(&self, range: std::ops::Range<u64>) -> io::Result<Vec<std::ops::Range<u64>>> {
        use std::os::fd::AsFd;
        crate::device::data_ranges(self.file.as_fd(), range)
    }
}

impl ObjectFd for FakeFd {
    fn read_complete(&self, msg_id: MsgId) -> io::Result<()> {
        self.log.completed.lock().unwrap().push(msg_id);
        Ok(())
    }
}

/// A scripted `/dev/cachefiles`: messages pushed with [`push`](Self::push) are read in order;
/// the fd of an OPEN becomes a [`FakeFd`] over `DIR/fd-N`.
#[derive(Debug)]
pub struct FakeDevice {
    dir: PathBuf,
    queue: Mutex<VecDeque<Vec<u8>>>,
    /// The commands written, as text (`copen 1,4096`).
    pub commands: Mutex<Vec<String>>,
    /// The log of each fd adopted, by number.
    pub fds: Mutex<HashMap<u32, Arc<FdLog>>>,
    /// Trigger this when the queue is empty.
    stop_when_empty: Option<Shutdown>,
    /// OPENs read but not answered yet, by message id: their objects' id. As the kernel,
    /// the fake sends no READ or CLOSE of such an object until its `copen`.
    opening: Mutex<HashMap<MsgId, cachefiles_proto::ObjectId>>,
    /// Refuse `copen` writes.
    pub fail_copen: AtomicBool,
    /// Writes through the fd of this number fail with `ENOBUFS`, from its OPEN on.
    pub fail_writes_on: Mutex<Option<u32>>,
}

impl FakeDevice {
    /// A device whose cache files go in `dir`.
    pub fn new(dir: &Path) -> Self {
        FakeDevice {
            dir: dir.to_path_buf(),
            queue: Mutex::new(VecDeque::new()),
            commands: Mutex::new(Vec::new()),
            fds: Mutex::new(HashMap::new()),
            stop_when_empty: None,
            opening: Mutex::new(HashMap::new()),
            fail_copen: AtomicBool::new(false),
            fail_writes_on: Mutex::new(None),
        }
    }

    /// Trigger `shutdown` once every pushed message was read (a [`crate::Daemon`] then
    /// stops after handling them).
    pub fn stop_when_empty(mut self, shutdown: Shutdown) -> Self {
        self.stop_when_empty = Some(shutdown);
        self
    }

    /// Queue a request, encoded as the kernel would.
    pub fn push(&self, request: Request<'_>) {
        let mut buf = [0u8; MSG_MAX_SIZE];
        let n = request.encode(&mut buf).unwrap();
        self.push_raw(buf[..n].to_vec());
    }

    /// Queue raw message bytes (for malformed messages).
    pub fn push_raw(&self, msg: Vec<u8>) {
        self.queue.lock().unwrap().push_back(msg);
    }

    /// The cache file behind fake fd `fd`.
    pub fn cache_file(&self, fd: u32) -> PathBuf {
        self.dir.join(format!("fd-{fd}"))
    }

    /// The log of fd `fd` (panics if no OPEN carried it).
    pub fn fd_log(&self, fd: u32) -> Arc<FdLog> {
        Arc::clone(&self.fds.lock().unwrap()[&fd])
    }

    /// Messages not read yet.
    pub fn queue_len(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    /// The commands written so far, as text.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

impl Device for FakeDevice {
    type Fd = FakeFd;

    fn send(&self, command: &Command<'_>) -> io::Result<()> {
        // Round-trip through the codec, as the kernel would parse it.
        let mut buf = [0u8; 4096];
        let n = command
            .encode(&mut buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let parsed = Command::decode(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        assert_eq!(&parsed, command);
        if let Command::Copen { msg_id, .. } = command {
            self.opening.lock().unwrap().remove(msg_id);
        }
        if matches!(command, Command::Copen { .. }) && self.fail_copen.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
        }
        self.commands
            .lock()
            .unwrap()
            .push(String::from_utf8(buf[..n].to_vec()).unwrap());
        Ok(())
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        if !self.queue.lock().unwrap().is_empty() {
            return Ok(true);
        }
        if let Some(s) = &self.stop_when_empty {
            s.trigger();
        }
        std::thread::sleep(timeout.min(Duration::from_millis(5)));
        Ok(false)
    }

    fn read_message(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut queue = self.queue.lock().unwrap();
        let Some(front) = queue.front() else {
            return Ok(0);
        };
        match Request::decode(front) {
            Ok(Request::Open(o)) => {
                self.opening.lock().unwrap().insert(o.msg_id, o.object_id);
            }
            Ok(Request::Read(cachefiles_proto::ReadRequest { object_id, .. }))
            | Ok(Request::Close(cachefiles_proto::CloseRequest { object_id, .. }))
                if self
                    .opening
                    .lock()
                    .unwrap()
                    .values()
                    .any(|o| *o == object_id) =>
            {
                // Its OPEN is being answered by another worker: not readable yet.
                return Ok(0);
            }
            _ => {}
        }
        let msg = queue.pop_front().expect("front exists");
        drop(queue);
        if msg.len() > buf.len() {
            return Err(io::Error::from_raw_os_error(nix::libc::EMSGSIZE));
        }
        buf[..msg.len()].copy_from_slice(&msg);
        Ok(msg.len())
    }

    fn adopt(&self, fd: u32) -> io::Result<FakeFd> {
        // As the real device: a number no fd can have is refused.
        if i32::try_from(fd).is_err() {
            return Err(io::Error::from_raw_os_error(nix::libc::EBADF));
        }
        let (fake, log) = FakeFd::create(&self.cache_file(fd));
        if *self.fail_writes_on.lock().unwrap() == Some(fd) {
            log.fail_writes.store(true, Ordering::SeqCst);
        }
        self.fds.lock().unwrap().insert(fd, log);
        Ok(fake)
    }
}
