//! Failover: keep the cache alive while the daemon dies and a successor takes over.
//!
//! The kernel keeps a cache (its binding, every object, every pending request) for as long as
//! *some* process holds the `/dev/cachefiles` fd (`kernel-abi.md` §2.8). An [`FdHolder`] is such
//! a process: a small supervisor listening on a unix socket. A daemon hands it a copy of its
//! device fd right after binding ([`store_fd`]); when the daemon dies, even by `kill -9`, the
//! cache stays bound and readers just wait. A successor fetches the fd ([`fetch_fd`]), writes
//! `restore` (every request the kernel has, including those the dead daemon had read but not
//! answered, becomes new again) and serves:
//!
//! - READs the dead daemon never completed are delivered again;
//! - the dead daemon's per-object fds were closed with it, so each object still in use is
//!   re-opened by the kernel on its next READ: a fresh OPEN with the same keys and a new
//!   object id and fd, answered like any OPEN; then its READs follow under the new id;
//! - OPENs the dead daemon never answered are delivered again, with a new fd;
//! - CLOSEs for the old objects are not sent (the kernel completes them itself when the fds
//!   close), so umount does not wait for anyone.
//!
//! [`take_over_or_bind`] does the whole start-up for an embedder: adopt and restore if the
//! holder has an fd, else open, bind and hand a copy to the holder. An embedder with its own
//! supervisor (systemd's FD store, a container runtime) can use [`store_fd`]/[`fetch_fd`]
//! against an [`FdHolder`] it runs itself, or keep the fd its own way and call
//! [`CachefilesDevice::from_fd`] plus [`CachefilesDevice::restore`].
//!
//! The wire protocol (one request per connection, on a `SOCK_STREAM` unix socket, the socket
//! file mode 0600 and peers of another uid refused): the client sends `PUT` with the fd as
//! `SCM_RIGHTS`, answered `OK`; or `GET`, answered `FD` with the fd, `NONE`, or `BUSY <pid>`
//! while the daemon that has the cache (the last to store or fetch the fd) is still alive: a
//! successor must start after its predecessor is gone, or the two would answer the same
//! requests and the successor's `restore` would re-deliver OPENs whose fds the predecessor
//! still holds (the kernel fails those with `EEXIST`).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::device::CachefilesDevice;
use crate::shutdown::Shutdown;

/// How long one client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Holds the `/dev/cachefiles` fd for daemons that come and go (see the module docs).
#[derive(Debug)]
pub struct FdHolder {
    listener: UnixListener,
    path: PathBuf,
    held: Mutex<Held>,
}

/// The fd held and the daemon that has it (the last to store or fetch it).
#[derive(Debug, Default)]
struct Held {
    fd: Option<OwnedFd>,
    owner: Option<i32>,
}

/// Whether process `pid` exists (a zombie counts until its parent reaps it).
fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

impl FdHolder {
    /// Listen on the unix socket `path` (a stale socket file there is replaced), mode 0600.
    ///
    /// # Errors
    ///
    /// Binding the socket, or `path` exists and is not a socket.
    pub fn bind(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(FdHolder {
            listener,
            path: path.to_path_buf(),
            held: Mutex::new(Held::default()),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an fd is held.
    pub fn is_holding(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fd
            .is_some()
    }

    /// Answer clients until `shutdown` (checked every 100 ms). Client errors are logged.
    ///
    /// # Errors
    ///
    /// A failing `poll` or `accept` on the listening socket.
    pub fn serve(&self, shutdown: &Shutdown) -> io::Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        while !shutdown.is_triggered() {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = self.answer(stream) {
                        log::warn!("holder {}: client: {e}", self.path.display());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Answer one client.
    fn answer(&self, stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)?;
        if peer.uid() != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("refusing a client with uid {}", peer.uid()),
            ));
        }
        let (request, fd) = receive(stream.as_fd())?;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match (&request[..], fd) {
            (b"PUT", Some(fd)) => {
                log::info!(
                    "holder: stored a cachefiles fd from pid {}{}",
                    peer.pid(),
                    if held.fd.is_some() {
                        " (replacing the one held)"
                    } else {
                        ""
                    }
                );
                held.fd = Some(fd);
                held.owner = Some(peer.pid());
                send(stream.as_fd(), b"OK", None)
            }
            (b"GET", None) => match (held.fd.as_ref(), held.owner) {
                // Two daemons on one cache would both answer requests, and the successor's
                // `restore` would re-deliver OPENs whose fds the first still holds (the kernel
                // fails those with EEXIST): refuse while the owner lives.
                (Some(_), Some(owner)) if owner != peer.pid() && alive(owner) => {
                    log::warn!(
                        "holder: pid {} asked for the fd while pid {owner} still serves the cache",
                        peer.pid()
                    );
                    send(stream.as_fd(), format!("BUSY {owner}").as_bytes(), None)
                }
                (Some(fd), _) => {
                    log::info!("holder: handed the cachefiles fd to pid {}", peer.pid());
                    send(stream.as_fd(), b"FD", Some(fd.as_fd()))?;
                    held.owner = Some(peer.pid());
                    Ok(())
                }
                (None, _) => send(stream.as_fd(), b"NONE", None),
            },
            (other, fd) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "bad request {:?} ({} fd)",
                    other.escape_ascii().to_string(),
                    if fd.is_some() { "with an" } else { "without" }
                ),
            )),
        }
    }
}

impl Drop for FdHolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Send `bytes`, with `fd` as `SCM_RIGHTS` if given.
fn send(sock: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw
        .as_ref()
        .map(|r| ControlMessage::ScmRights(r))
        .into_iter()
        .collect();
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(())
}

/// Receive one message (at most 16 bytes) and at most one fd (extra fds are closed).
fn receive(sock: BorrowedFd<'_>) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let n = msg.bytes;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for r in raw {
                // Adopted even if a later check fails, so every received fd is closed.
                fds.push(crate::sys::adopt_fd(r)?);
            }
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let mut fds = fds.into_iter();
    let fd = fds.next();
    if truncated || fds.next().is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more than one fd in a message",
        ));
    }
    Ok((buf[..n].to_vec(), fd))
}

fn connect(socket: &Path) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the fd holder at {}: {e}", socket.display()),
        )
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(stream)
}

/// Give the holder at `socket` a copy of `fd` (it replaces any fd held before).
///
/// # Errors
///
/// The holder cannot be reached or does not confirm.
pub fn store_fd(socket: &Path, fd: BorrowedFd<'_>) -> io::Result<()> {
    let stream = connect(socket)?;
    send(stream.as_fd(), b"PUT", Some(fd))?;
    match receive(stream.as_fd())? {
        (answer, None) if answer == b"OK" => Ok(()),
        (answer, _) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("holder answered {:?}", answer.escape_ascii().to_string()),
        )),
    }
}

/// A copy of the fd the holder at `socket` holds, or `None` if it holds none. The caller
/// becomes the daemon the holder knows as serving the cache.
///
/// # Errors
///
/// `ResourceBusy` while the daemon that stored or last fetched the fd is still alive (two
/// daemons on one cache break each other); the holder cannot be reached or answers something
/// else.
pub fn fetch_fd(socket: &Path) -> io::Result<Option<OwnedFd>> {
    let stream = connect(socket)?;
    send(stream.as_fd(), b"GET", None)?;
    match receive(stream.as_fd())? {
        (answer, Some(fd)) if answer == b"FD" => Ok(Some(fd)),
        (answer, None) if answer == b"NONE" => Ok(None),
        (answer, None) if answer.starts_with(b"BUSY ") => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "pid {} still serves the held cache: stop it before starting a successor",
                String::from_utf8_lossy(&answer[5..])
            ),
        )),
        (answer, _) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("holder answered {:?}", answer.escape_ascii().to_string()),
        )),
    }
}

/// How [`take_over_or_bind`] got its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The holder had an fd: it was adopted and `restore` was sent. The cache directory and
    /// tag are those the first daemon bound.
    TookOver,
    /// The holder had none: the device was opened and bound, and a copy handed to the holder.
    Bound,
}

/// Start a daemon under the holder at `socket`: take over its cache if it holds one (adopt
/// the fd, write `restore`), else open `device_path`, bind `cache_dir` (with `tag`) in
/// on-demand mode and hand the holder a copy of the fd.
///
/// # Errors
///
/// The holder cannot be reached, or the device cannot be opened, bound or restored.
pub fn take_over_or_bind(
    socket: &Path,
    device_path: &Path,
    cache_dir: &Path,
    tag: Option<&str>,
) -> io::Result<(CachefilesDevice, Start)> {
    if let Some(fd) = fetch_fd(socket)? {
        let device = CachefilesDevice::from_fd(fd);
        device
            .restore()
            .map_err(|e| io::Error::new(e.kind(), format!("restore: {e}")))?;
        return Ok((device, Start::TookOver));
    }
    let device = CachefilesDevice::open_path(device_path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open {}: {e}", device_path.display()),
        )
    })?;
    device.bind_ondemand(cache_dir, tag)?;
    store_fd(socket, device.as_fd())?;
    Ok((device, Start::Bound))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use super::*;

    #[test]
    fn holds_and_hands_out_an_fd() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("holder.sock");
        let holder = FdHolder::bind(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let stop = Shutdown::new();
        std::thread::scope(|s| {
            s.spawn(|| holder.serve(&stop).unwrap());
            assert!(fetch_fd(&sock).unwrap().is_none(), "nothing held yet");
            // A file stands in for the device: the same open file description comes back.
            let mut f = tempfile::tempfile().unwrap();
            f.write_all(b"cache").unwrap();
            store_fd(&sock, f.as_fd()).unwrap();
            drop(f);
            assert!(holder.is_holding());
            for _ in 0..2 {
                let fd = fetch_fd(&sock).unwrap().expect("an fd");
                let mut back = std::fs::File::from(fd);
                back.rewind().unwrap();
                let mut s = String::new();
                back.read_to_string(&mut s).unwrap();
                assert_eq!(s, "cache");
            }
            // Garbage is refused and the holder keeps serving.
            let mut raw = UnixStream::connect(&sock).unwrap();
            raw.write_all(b"HELLO").unwrap();
            let mut answer = Vec::new();
            let _ = raw.read_to_end(&mut answer);
            assert!(answer.is_empty());
            assert!(fetch_fd(&sock).unwrap().is_some());
            stop.trigger();
        });
        drop(holder);
        assert!(!sock.exists(), "the socket file is removed");
    }

    #[test]
    fn refuses_to_replace_a_non_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("file");
        std::fs::write(&p, b"x").unwrap();
        assert!(FdHolder::bind(&p).is_err());
        assert!(fetch_fd(&dir.path().join("nothing")).is_err());
    }
}
