//! Telling whoever started the daemon that it is ready: its mount is up, or, without a
//! mount, it serves. A container runtime or a supervisor waits on this instead of polling
//! `/proc/mounts`.
//!
//! Two conventions, either or both:
//!
//! - a file descriptor the parent passed (`erofs-ondemand --ready-fd N`, as s6's
//!   `notification-fd`): `READY=1` and a newline are written to it, then it is closed. A
//!   reader that gets end-of-file without the line knows the daemon failed before it was
//!   ready;
//! - systemd's `NOTIFY_SOCKET` (a `Type=notify` unit): the datagram `READY=1`, as
//!   `sd_notify(3)` sends it (a path, or an abstract name written `@name`).
//!
//! ```no_run
//! use ondemand::ready::Readiness;
//!
//! // At the start, before other threads open files: fd 3 is the parent's pipe.
//! let ready = Readiness::from_fd(3)?.with_notify_socket_from_env();
//! // ... bind, serve, mount ...
//! ready.notify()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The line written to a readiness fd (and, without the newline, the datagram sent to
/// `NOTIFY_SOCKET`).
pub const READY_LINE: &str = "READY=1\n";

/// Where to say the daemon is ready ([module docs](self)). Dropped without
/// [`notify`](Self::notify), its fd is closed unwritten: the reader sees end-of-file.
#[derive(Debug, Default)]
pub struct Readiness {
    fd: Option<File>,
    socket: Option<SocketAddr>,
}

impl Readiness {
    /// Nobody to tell.
    pub fn none() -> Self {
        Self::default()
    }

    /// Tell fd `n`, inherited from the parent (a pipe's or a FIFO's write end, or any file
    /// open for writing). Take it at the start, before other threads open files, and once:
    /// the returned value owns the fd and closes it.
    ///
    /// # Errors
    ///
    /// `EBADF` if `n` is negative or not open; `EINVAL` for 0, 1 or 2 (standard input,
    /// output and error are not this daemon's to close).
    pub fn from_fd(n: RawFd) -> io::Result<Self> {
        if (0..=2).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("readiness fd {n} is a standard stream"),
            ));
        }
        let fd = crate::sys::adopt_fd(n)?;
        Ok(Self {
            fd: Some(File::from(fd)),
            socket: None,
        })
    }

    /// Also tell systemd's `NOTIFY_SOCKET`, if the environment names one (a path, or
    /// `@name` for an abstract socket). An unusable value is logged and left out.
    pub fn with_notify_socket_from_env(mut self) -> Self {
        if let Some(value) = std::env::var_os("NOTIFY_SOCKET") {
            match notify_socket_addr(&value.to_string_lossy()) {
                Ok(addr) => self.socket = Some(addr),
                Err(e) => log::warn!("NOTIFY_SOCKET {value:?} left out: {e}"),
            }
        }
        self
    }

    /// Whether anybody is told.
    pub fn is_some(&self) -> bool {
        self.fd.is_some() || self.socket.is_some()
    }

    /// Say it: [`READY_LINE`] to the fd, which is then closed, and `READY=1` to the socket.
    /// Both are tried.
    ///
    /// # Errors
    ///
    /// The first write or send that failed (e.g. `EPIPE`: the reader is gone).
    pub fn notify(self) -> io::Result<()> {
        let to_fd = match self.fd {
            Some(mut f) => f.write_all(READY_LINE.as_bytes()),
            None => Ok(()),
        };
        let to_socket = match self.socket {
            Some(addr) => UnixDatagram::unbound()
                .and_then(|s| s.send_to_addr(READY_LINE.trim_end().as_bytes(), &addr))
                .map(drop),
            None => Ok(()),
        };
        to_fd.and(to_socket)
    }
}

/// `NOTIFY_SOCKET`'s value as an address: `@name` is an abstract socket, an absolute path a
/// socket file.
fn notify_socket_addr(value: &str) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match value.strip_prefix('@') {
        Some(name) if !name.is_empty() => SocketAddr::from_abstract_name(name.as_bytes()),
        _ if value.starts_with('/') => SocketAddr::from_pathname(value),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor @name",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::IntoRawFd;
    use std::os::linux::net::SocketAddrExt;

    #[test]
    fn the_fd_gets_the_line_and_is_closed() {
        let (mut r, w) = std::io::pipe().unwrap();
        let n = w.into_raw_fd();
        let ready = Readiness::from_fd(n).unwrap();
        assert!(ready.is_some());
        ready.notify().unwrap();
        // read_to_string returns only at end-of-file: the write end was closed.
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, READY_LINE);
    }

    #[test]
    fn dropped_unsaid_the_reader_sees_end_of_file() {
        let (mut r, w) = std::io::pipe().unwrap();
        let ready = Readiness::from_fd(w.into_raw_fd()).unwrap();
        drop(ready);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "");
    }

    #[test]
    fn bad_fds_are_refused() {
        for n in [-1, 0, 1, 2] {
            assert!(Readiness::from_fd(n).is_err(), "{n}");
        }
        // An fd number that is not open (above any fd limit: other tests' fds are safe).
        let e = Readiness::from_fd(1 << 30).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EBADF));
    }

    #[test]
    fn the_socket_gets_the_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let ready = Readiness {
            fd: None,
            socket: Some(notify_socket_addr(path.to_str().unwrap()).unwrap()),
        };
        ready.notify().unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn notify_socket_values() {
        assert!(
            notify_socket_addr("@sd-notify")
                .unwrap()
                .as_abstract_name()
                .is_some()
        );
        assert!(
            notify_socket_addr("/run/systemd/notify")
                .unwrap()
                .as_pathname()
                .is_some()
        );
        for bad in ["", "@", "relative/path"] {
            assert!(notify_socket_addr(bad).is_err(), "{bad:?}");
        }
    }
}
