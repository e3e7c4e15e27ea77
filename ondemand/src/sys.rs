//! The crate's only `unsafe` code: taking ownership of an fd number the kernel installed in
//! this process (the fd of a cachefiles OPEN message, of a fanotify event, or of an
//! `SCM_RIGHTS` message) or that the parent passed at exec (`--ready-fd`), taking a received
//! fd as a fanotify group, reserving an fd number,
//! the cachefiles `READ_COMPLETE` ioctl, the `FS_IOC_GETFSSYSFSPATH` ioctl and a thread's nice
//! value. Every block says why it holds.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use cachefiles_proto::ioctl::CACHEFILES_IOC_READ_COMPLETE;

/// Take ownership of an fd number that the kernel put in this process's fd table while
/// delivering a message (a cachefiles OPEN, a fanotify event, an `SCM_RIGHTS` control
/// message) and reported only in that message, or that the parent left open across exec
/// and named on the command line (`--ready-fd N`, [`crate::ready::Readiness::from_fd`]).
/// Call it once per message or number, immediately (the inherited one at the start): the
/// returned `OwnedFd` closes the fd when dropped.
///
/// # Errors
///
/// `EBADF` for a negative number or one that is not open.
pub(crate) fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(nix::libc::EBADF));
    }
    // Check it is open before claiming it (F_GETFD has no side effects).
    // SAFETY: `fcntl(F_GETFD)` only reads the fd table; an invalid number yields EBADF.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel created this fd in our table during the `read()`/`recvmsg()` that
    // returned the message, and its number appears only in that message, which each caller
    // decodes and adopts once (one OPEN per `Device::adopt`, one event per worker, one control
    // message per `recvmsg`); or the parent left it open for this process to use as its
    // command line says, nothing in this process opened it, and `Readiness::from_fd` takes
    // it once at the start. So nothing else owns it, and the `OwnedFd` becomes its only
    // owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set the calling thread's nice value (on Linux the nice value is per thread, and
/// `setpriority(PRIO_PROCESS, tid)` sets it for the thread `tid`): background threads (the
/// prefetch) give the CPU to the readers they work for.
///
/// # Errors
///
/// `setpriority`'s (`EACCES` to raise the priority without `CAP_SYS_NICE`).
pub(crate) fn set_thread_nice(nice: i32) -> io::Result<()> {
    let tid = nix::unistd::gettid().as_raw();
    let tid =
        nix::libc::id_t::try_from(tid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `setpriority` takes integers only and touches no memory of this process.
    if unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, nice) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fd` as a fanotify group, once checked to be one (`/proc/self/fdinfo` of a fanotify
/// group names its flags, `fanotify flags:`).
///
/// # Errors
///
/// `EINVAL` when `fd` is not a fanotify group; reading its fdinfo.
pub(crate) fn fanotify_group(fd: OwnedFd) -> io::Result<nix::sys::fanotify::Fanotify> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if link.as_os_str() != "anon_inode:[fanotify]" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {} is {}, not a fanotify group",
                fd.as_raw_fd(),
                link.display()
            ),
        ));
    }
    // SAFETY: `from_owned_fd` requires a fanotify group fd; the kernel names this one
    // `anon_inode:[fanotify]`, which only fanotify_init creates. We own `fd` and hand it over.
    Ok(unsafe { nix::sys::fanotify::Fanotify::from_owned_fd(fd) })
}

/// Keep fd number `n` from being given out by the kernel (to a new event's fd): if it is free,
/// make it a copy of `/dev/null`, owned by the returned `OwnedFd` (drop it to free the number);
/// if it is in use in this process already, nothing (`None`: it cannot be given out either).
/// Call it before other threads open fds: between the check and the `dup3` an fd opened by
/// another thread could take the number (and be closed by the `dup3`).
///
/// # Errors
///
/// A negative number; `/dev/null` cannot be opened; `dup3` fails (`EBADF` above the limit).
pub(crate) fn reserve_fd_number(n: RawFd) -> io::Result<Option<OwnedFd>> {
    if n < 0 {
        return Err(io::Error::from_raw_os_error(nix::libc::EBADF));
    }
    // SAFETY: `fcntl(F_GETFD)` only reads the fd table.
    if unsafe { nix::libc::fcntl(n, nix::libc::F_GETFD) } >= 0 {
        return Ok(None);
    }
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: `n` is not open in this process (checked just above, with no other thread
    // opening fds meanwhile, as the caller guarantees), so `dup3` closes nothing anyone owns;
    // it makes `n` a new fd that nothing else knows.
    if unsafe { nix::libc::dup3(null.as_raw_fd(), n, nix::libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup3` just created fd `n` for us; the `OwnedFd` is its only owner.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(n) }))
}

/// `ioctl(fd, CACHEFILES_IOC_READ_COMPLETE, msg_id)`.
pub(crate) fn read_complete(fd: BorrowedFd<'_>, msg_id: u32) -> io::Result<()> {
    // SAFETY: this ioctl takes its argument by value (the msg_id as an unsigned long, not
    // a pointer), so the kernel reads no memory of ours; `fd` is a live borrowed fd. On a
    // non-cachefiles fd the kernel returns an error and does nothing.
    let r = unsafe {
        nix::libc::ioctl(
            fd.as_raw_fd(),
            CACHEFILES_IOC_READ_COMPLETE as _,
            nix::libc::c_ulong::from(msg_id),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `struct fs_sysfs_path` (include/uapi/linux/fs.h, Linux 6.8): a length and a name.
#[repr(C)]
struct FsSysfsPath {
    len: u8,
    name: [u8; 128],
}

/// `FS_IOC_GETFSSYSFSPATH` = `_IOR(0x15, 1, struct fs_sysfs_path)`.
const FS_IOC_GETFSSYSFSPATH: nix::libc::c_ulong = (2 << 30)
    | ((std::mem::size_of::<FsSysfsPath>() as nix::libc::c_ulong) << 16)
    | (0x15 << 8)
    | 1;

/// The filesystem's directory under `/sys/fs` (`erofs/erofs-3`) for the filesystem holding
/// `fd`: `ioctl(fd, FS_IOC_GETFSSYSFSPATH)` (Linux 6.8 and later).
///
/// # Errors
///
/// The kernel's (`ENOTTY` before Linux 6.8, or for a filesystem without a sysfs name).
pub(crate) fn fs_sysfs_path(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut path = FsSysfsPath {
        len: 0,
        name: [0; 128],
    };
    // SAFETY: the kernel writes at most `size_of::<FsSysfsPath>()` bytes (the size encoded in
    // the request number) into `path`, which lives for the call and has the uapi layout
    // (`#[repr(C)]`, two byte fields: no padding); `fd` is a live borrowed fd.
    let r = unsafe {
        nix::libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETFSSYSFSPATH as _,
            std::ptr::from_mut(&mut path),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let name = path.name.get(..usize::from(path.len)).unwrap_or(&path.name);
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    Ok(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_fds_are_adopted() {
        assert!(adopt_fd(-1).is_err());
        assert!(adopt_fd(1_000_000).is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        let dup = nix::unistd::dup(&file).unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        let owned = adopt_fd(raw).unwrap();
        assert_eq!(owned.as_raw_fd(), raw);
        // A free number (far above what the other tests open) is held until dropped; one in
        // use is left alone.
        let held = reserve_fd_number(900).unwrap().expect("900 is free");
        assert_eq!(held.as_raw_fd(), 900);
        // SAFETY: F_GETFD only reads the fd table.
        assert!(unsafe { nix::libc::fcntl(900, nix::libc::F_GETFD) } >= 0);
        drop(held);
        // SAFETY: as above.
        assert!(unsafe { nix::libc::fcntl(900, nix::libc::F_GETFD) } < 0);
        assert!(
            reserve_fd_number(file.as_raw_fd()).unwrap().is_none(),
            "in use"
        );
        assert!(reserve_fd_number(-1).is_err());
    }
}
