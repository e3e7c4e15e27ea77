//! The only code that makes cachefiles syscalls: opening `/dev/cachefiles`, writing commands,
//! polling and reading messages, adopting each object's anonymous fd, direct-I/O `pwrite`s into
//! it, and the `READ_COMPLETE` ioctl.
//!
//! The daemon and the session talk to this layer through two traits, [`Device`] and
//! [`ObjectFd`], so tests can replace the kernel with a script and a temporary directory.
//! [`CachefilesDevice`] and [`AnonFd`] are the real implementations.

use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use cachefiles_proto::{COMMAND_MAX_LEN, Command, MsgId};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;

use crate::buf::BLOCK_SIZE;
use crate::engine::Sink;

/// Where the cachefiles misc device lives.
pub const DEFAULT_DEVICE_PATH: &str = "/dev/cachefiles";

/// The kernel side of a session, as the daemon loop sees it.
pub trait Device: Send + Sync {
    /// An adopted per-object fd.
    type Fd: ObjectFd;

    /// Write one command.
    ///
    /// # Errors
    ///
    /// The kernel's answer (`EINVAL`, `EEXIST`, ...) or an encoding error as `InvalidInput`.
    fn send(&self, command: &Command<'_>) -> io::Result<()>;

    /// Wait up to `timeout` for a message; `Ok(false)` on timeout.
    ///
    /// # Errors
    ///
    /// A failed `poll`.
    fn wait_readable(&self, timeout: Duration) -> io::Result<bool>;

    /// Read one message into `buf` (at least [`cachefiles_proto::MSG_MAX_SIZE`] bytes); return
    /// its length, 0 if nothing was pending. Never blocks.
    ///
    /// # Errors
    ///
    /// A failed `read` (the kernel fails the request too when fd allocation fails).
    fn read_message(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Take ownership of the fd number an OPEN message carried. Call it once per OPEN read
    /// from this device, immediately.
    ///
    /// # Errors
    ///
    /// An fd number that cannot be adopted.
    fn adopt(&self, fd: u32) -> io::Result<Self::Fd>;
}

/// The per-object fd of cachefiles: the engine's [`Sink`] for the object (writes into its
/// cache file, `SEEK_DATA` scans), and where its READs are completed.
pub trait ObjectFd: Sink {
    /// Complete the READ `msg_id` of this object (the `READ_COMPLETE` ioctl).
    ///
    /// # Errors
    ///
    /// `EINVAL` when the request is no longer pending (CLOSE came first, the reader was
    /// killed) or belongs to another object.
    fn read_complete(&self, msg_id: MsgId) -> io::Result<()>;
}

/// Most extents [`data_ranges`] reports for one call; a cache file more fragmented than this
/// is reported in part (the rest counts as missing, which is safe).
const MAX_EXTENTS: usize = 1 << 16;

/// The data extents of the file behind `fd` within `range`, by `SEEK_DATA`/`SEEK_HOLE`. On an
/// object's anonymous fd, `lseek` acts on the cache (backing) file.
///
/// # Errors
///
/// `lseek` errors other than `ENXIO` (no data past the offset).
pub fn data_ranges(fd: BorrowedFd<'_>, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
    use nix::unistd::{Whence, lseek};
    let mut out = Vec::new();
    let mut pos = range.start;
    let to_off =
        |p: u64| i64::try_from(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    while pos < range.end && out.len() < MAX_EXTENTS {
        let data = match lseek(fd, to_off(pos)?, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= range.end {
            break;
        }
        let hole = match lseek(fd, to_off(data)?, Whence::SeekHole) {
            Ok(h) => (h as u64).min(range.end),
            Err(Errno::ENXIO) => range.end,
            Err(e) => return Err(e.into()),
        };
        if hole <= data {
            break;
        }
        out.push(data..hole);
        pos = hole;
    }
    Ok(out)
}

/// An open `/dev/cachefiles`: one cache. Only one may be open system-wide; closing it (drop)
/// kills the cache, and mounts served by it fail from then on.
#[derive(Debug)]
pub struct CachefilesDevice {
    fd: OwnedFd,
}

impl CachefilesDevice {
    /// Open [`DEFAULT_DEVICE_PATH`].
    ///
    /// # Errors
    ///
    /// `EPERM` without `CAP_SYS_ADMIN`, `EBUSY` if another daemon has it open, `ENOENT`
    /// without cachefiles support.
    pub fn open() -> io::Result<Self> {
        Self::open_path(Path::new(DEFAULT_DEVICE_PATH))
    }

    /// Open the device at `path`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_path(path: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(CachefilesDevice { fd })
    }

    /// Wrap an already open device fd (handed over by a supervisor for fail-over; follow with
    /// [`Command::Restore`]).
    pub fn from_fd(fd: OwnedFd) -> Self {
        CachefilesDevice { fd }
    }

    /// Write `restore`: after taking over a live cache's fd from a dead daemon, every request
    /// the kernel still has becomes new again and is delivered anew (`kernel-abi.md` §2.8).
    /// Call it once, right after taking over.
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` if the cache is not in on-demand mode; `EIO` if it is dead.
    pub fn restore(&self) -> io::Result<()> {
        self.send(&Command::Restore)
    }

    /// Configure and bind the cache in on-demand mode: `dir <cache_dir>`, `tag <tag>` if
    /// given, `bind ondemand`.
    ///
    /// # Errors
    ///
    /// The first command the kernel refuses, with context.
    pub fn bind_ondemand(&self, cache_dir: &Path, tag: Option<&str>) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let with = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let dir = Command::Dir(cache_dir.as_os_str().as_bytes());
        self.send(&dir).map_err(|e| with(&dir.to_string(), e))?;
        if let Some(tag) = tag {
            let cmd = Command::Tag(tag.as_bytes());
            self.send(&cmd).map_err(|e| with(&cmd.to_string(), e))?;
        }
        let bind = Command::Bind { ondemand: true };
        self.send(&bind).map_err(|e| with("bind ondemand", e))
    }
}

impl AsFd for CachefilesDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Device for CachefilesDevice {
    type Fd = AnonFd;

    fn send(&self, command: &Command<'_>) -> io::Result<()> {
        let mut buf = [0u8; COMMAND_MAX_LEN];
        let len = command
            .encode(&mut buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        loop {
            match nix::unistd::write(&self.fd, &buf[..len]) {
                Ok(n) if n == len => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short command write: {n} of {len}"
                    )));
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => Ok(false),
            Ok(_) => Ok(fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN))),
            Err(e) => Err(e.into()),
        }
    }

    fn read_message(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(&self.fd, buf) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(0),
                other => return Ok(other?),
            }
        }
    }

    fn adopt(&self, fd: u32) -> io::Result<AnonFd> {
        let fd = RawFd::try_from(fd)
            .map_err(|_| io::Error::from_raw_os_error(nix::libc::EBADF))
            .and_then(crate::sys::adopt_fd)?;
        // The kernel installs the fd without O_CLOEXEC.
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        Ok(AnonFd { fd })
    }
}

/// An object's anonymous fd (`[cachefiles]`), received with its OPEN. Dropping it closes it:
/// after a CLOSE that releases the object; before one, the kernel re-opens the object on its
/// next read.
#[derive(Debug)]
pub struct AnonFd {
    fd: OwnedFd,
}

impl AnonFd {
    /// Wrap an fd (for tests and fail-over; normally [`Device::adopt`] makes these).
    pub fn from_fd(fd: OwnedFd) -> Self {
        AnonFd { fd }
    }
}

impl AsFd for AnonFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `pwrite` all of `data` at `off` through `fd`, retrying short writes and `EINTR`. With
/// `direct` (an `O_DIRECT` fd), a short write that leaves an unaligned remainder is an error:
/// the rest could not be written.
pub(crate) fn pwrite_all(
    fd: BorrowedFd<'_>,
    data: &[u8],
    off: u64,
    direct: bool,
) -> io::Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        let pos = off
            .checked_add(done as u64)
            .and_then(|p| i64::try_from(p).ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        match nix::sys::uio::pwrite(fd, &data[done..], pos) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if direct && !done.is_multiple_of(BLOCK_SIZE) && done < data.len() {
            return Err(io::Error::other(format!(
                "short write of {done} bytes leaves an unaligned remainder"
            )));
        }
    }
    Ok(())
}

impl Sink for AnonFd {
    fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
        // `pwrite` only: `lseek` on this fd moves the backing file, not this fd's position.
        pwrite_all(self.fd.as_fd(), data, off, true)
    }

    fn data_ranges(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        data_ranges(self.fd.as_fd(), range)
    }
}

impl ObjectFd for AnonFd {
    fn read_complete(&self, msg_id: MsgId) -> io::Result<()> {
        crate::sys::read_complete(self.fd.as_fd(), msg_id.0)
    }
}

#[cfg(test)]
// Expected range lists with one element are what they look like.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::buf::AlignedBuf;

    #[test]
    fn adopting_a_closed_fd_fails() {
        // A number far above anything open here.
        assert!(crate::sys::adopt_fd(1_000_000).is_err());
    }

    #[test]
    fn read_complete_on_a_plain_file_is_refused_by_the_kernel() {
        let f = tempfile::tempfile().unwrap();
        let fd = AnonFd::from_fd(f.into());
        let e = fd.read_complete(MsgId(1)).unwrap_err();
        assert!(matches!(
            e.raw_os_error(),
            Some(nix::libc::ENOTTY) | Some(nix::libc::EINVAL)
        ));
    }

    #[test]
    fn data_ranges_follow_allocated_blocks() {
        let f = tempfile::tempfile().unwrap();
        let probe = f.try_clone().unwrap();
        let fd = AnonFd::from_fd(f.into());
        let mut buf = AlignedBuf::new(2 * BLOCK_SIZE);
        buf.as_mut_bytes().fill(1);
        probe.set_len(64 << 20).unwrap();
        assert_eq!(fd.data_ranges(0..64 << 20).unwrap(), []);
        fd.write_at(buf.as_mut_bytes(), 1 << 20).unwrap();
        fd.write_at(buf.as_mut_bytes(), 8 << 20).unwrap();
        let b = BLOCK_SIZE as u64;
        // Filesystems may report data at a coarser granularity than a block, never finer.
        let found = fd.data_ranges(0..64 << 20).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].start <= 1 << 20 && found[0].end >= (1 << 20) + 2 * b);
        assert!(found[1].start <= 8 << 20 && found[1].end >= (8 << 20) + 2 * b);
        assert!(found[0].end <= 8 << 20);
        // Clipped to the range asked for.
        assert_eq!(
            fd.data_ranges((1 << 20) + b..(1 << 20) + 2 * b).unwrap(),
            [(1 << 20) + b..(1 << 20) + 2 * b]
        );
        assert_eq!(fd.data_ranges(0..4096).unwrap(), []);
    }

    #[test]
    fn pwrite_writes_at_the_offset() {
        let f = tempfile::tempfile().unwrap();
        let probe = f.try_clone().unwrap();
        let fd = AnonFd::from_fd(f.into());
        let mut buf = AlignedBuf::new(BLOCK_SIZE);
        buf.as_mut_bytes().fill(7);
        fd.write_at(buf.as_mut_bytes(), 8192).unwrap();
        use std::os::unix::fs::FileExt;
        let mut back = [0u8; 4];
        probe.read_exact_at(&mut back, 8192).unwrap();
        assert_eq!(back, [7; 4]);
        assert_eq!(probe.metadata().unwrap().len(), 12288);
    }
}
