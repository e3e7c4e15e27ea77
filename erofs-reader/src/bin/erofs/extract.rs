//! `erofs extract`: recreate an image's tree under a destination directory.
//!
//! Safety: every file is created relative to an open directory fd (`openat`-style), with
//! `O_NOFOLLOW`/`O_EXCL` or their equivalents, so neither hostile names (refused: empty,
//! `.`/`..`, containing `/` or NUL) nor symlinks created earlier (by the image or by
//! anyone else) can make it write outside the destination.
//!
//! All or nothing: the tree is built in a temporary sibling of the destination
//! (`.DEST.erofs-extract-PID`, on the same filesystem) and renamed into place only once it is
//! complete; on an error the temporary tree is removed, so no half tree is left to block the
//! next try. A destination that exists must be an empty directory, unless `--force`: then the
//! image's top-level entries replace the destination's entries of the same name and the
//! others stay.
//!
//! One thread walks the image and creates directories, files (empty), links and special
//! files; worker threads write the files' data and set their metadata, taking open files from
//! a bounded queue in batches (up to 16 files or 1 MiB of data: one hand-off per file cost a
//! sixth of the CPU in wake-ups), so that at most [`MAX_OPEN`] files are open. The blocks of
//! uncompressed files whose device is a file are copied by the kernel from that file
//! (`sendfile(2)`, see `Ctx::copy_in_kernel`); everything else is written from the
//! image's map or the decoder's buffer.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use erofs_reader::{Context, Error, ExtentTarget, FileType, Image, Inode, Nid, Piece};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, Timespec, Timestamps, XattrFlags};

use crate::progress::Progress;

/// What an extraction did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    pub(crate) warnings: Vec<String>,
}

/// What the walking thread and the workers share.
struct Ctx<'a> {
    image: &'a Image,
    progress: &'a Progress,
    is_root: bool,
    /// Owner (uid, gid) of the entries this process creates in the temporary tree, when
    /// known: its effective ids, unless the tree's root is set-group-ID (then new entries
    /// take the root's group).
    created_owner: Option<(u32, u32)>,
    /// The process's umask (`/proc/self/status`), when known and it is what masks the mode
    /// of new entries (no default ACL on the temporary tree).
    umask: Option<u32>,
    warnings: Mutex<Vec<String>>,
    warned_owner: AtomicBool,
    bytes: AtomicU64,
    /// Bytes written since the last [`Image::release_memory`].
    since_release: AtomicU64,
    /// Set when a worker failed: the walk stops.
    failed: AtomicBool,
}

/// A regular file created by the walk, for a worker to fill and finish.
struct Job {
    inode: Inode,
    fd: OwnedFd,
    rel: PathBuf,
    /// Created with its final owner and mode: only xattrs and times are left to set.
    preset: bool,
}

/// The walking thread's state.
struct Extractor<'a> {
    ctx: &'a Ctx<'a>,
    image: &'a Image,
    dest: OwnedFd,
    /// First extracted path (relative to dest) of every non-directory inode.
    links: HashMap<Nid, PathBuf>,
    dirs: HashSet<Nid>,
    entries: u64,
    jobs: mpsc::SyncSender<Vec<Job>>,
    /// Files created and not yet handed to the workers.
    batch: Vec<Job>,
    /// Their data bytes.
    batch_bytes: u64,
    /// Most files in a batch.
    batch_max: usize,
}

/// Most created files open at once (queued, being written, and in the batch being filled).
const MAX_OPEN: usize = 256;

/// Most files in a batch handed to a worker.
const BATCH_FILES: usize = 16;

/// Data bytes after which a batch is handed over without waiting for more files, so that
/// big files spread over the workers.
const BATCH_BYTES: u64 = 1 << 20;

/// Extents at least this long are copied by the kernel from the image file (see
/// `Ctx::copy_in_kernel`); shorter ones (inline tails) are written from the map.
const KERNEL_COPY_MIN: u64 = 4096;

/// File bytes mapped per `Image::extents` call by `Ctx::copy_in_kernel`: at most one
/// extent per block of it (4,096 of 4 KiB, 32,768 of 512 B) held at once.
const EXTENT_WINDOW: u64 = 16 << 20;

/// Windows of a file beyond which it is written the general way (`for_each_piece`): files
/// over 64 GiB, so that a huge sparse file costs no more calls than it does there.
const MAX_WINDOWS: u64 = 4096;

/// Most pieces written with one `pwritev(2)` (Linux takes up to 1024).
const GATHER_MAX: usize = 64;

/// Most bytes asked of one `sendfile(2)` call (Linux copies at most 0x7ffff000).
const SENDFILE_MAX: usize = 0x7fff_f000;

/// Bytes written between calls to [`Image::release_memory`].
const RELEASE_EVERY: u64 = 8 << 20;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn errno_io(e: rustix::io::Errno, what: &str, path: &Path) -> Box<dyn std::error::Error> {
    format!("{what} {}: {}", path.display(), std::io::Error::from(e)).into()
}

/// Extract `image` to `dest` (see the module docs): all or nothing.
pub(crate) fn extract(
    image: &Image,
    dest: &Path,
    force: bool,
    threads: usize,
    progress: &Progress,
) -> Result<Report> {
    let dest_state = match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Dest::Absent,
        Err(e) => return Err(format!("{}: {e}", dest.display()).into()),
        Ok(md) if !md.is_dir() => {
            return Err(format!(
                "{} exists and is not a directory: choose a new or empty directory",
                dest.display()
            )
            .into());
        }
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
            if entries.next().is_none() {
                Dest::Empty
            } else if force {
                Dest::Merge
            } else {
                return Err(format!(
                    "{} is not empty: choose a new or empty directory, or pass --force to \
                     replace its entries that the image also has",
                    dest.display()
                )
                .into());
            }
        }
    };
    let name = dest
        .file_name()
        .ok_or_else(|| format!("{}: not a directory name", dest.display()))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".erofs-extract-{}", std::process::id()));
    let tmp = parent.join(tmp_name);
    std::fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let done = extract_into(image, &tmp, threads, progress).and_then(|report| {
        place(&tmp, dest, dest_state)?;
        Ok(report)
    });
    match done {
        Ok(report) => Ok(report),
        Err(e) => {
            let cleaned = match std::fs::remove_dir_all(&tmp) {
                Ok(()) => "removed the partial tree".to_string(),
                Err(r) if r.kind() == std::io::ErrorKind::NotFound => {
                    "no partial tree left".to_string()
                }
                Err(r) => format!("could not remove the partial tree {}: {r}", tmp.display()),
            };
            Err(format!(
                "{} ({cleaned}; {} is as it was)",
                crate::explain(e.as_ref()),
                dest.display()
            )
            .into())
        }
    }
}

/// What the destination was before extracting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    Absent,
    Empty,
    /// Not empty, and `--force` was given.
    Merge,
}

/// Move the finished tree `tmp` to `dest`.
fn place(tmp: &Path, dest: &Path, state: Dest) -> Result<()> {
    match state {
        // rename(2) replaces an empty directory atomically.
        Dest::Absent | Dest::Empty => std::fs::rename(tmp, dest)
            .map_err(|e| format!("rename {} to {}: {e}", tmp.display(), dest.display()).into()),
        Dest::Merge => {
            for entry in std::fs::read_dir(tmp)? {
                let entry = entry?;
                let target = dest.join(entry.file_name());
                match std::fs::symlink_metadata(&target) {
                    Ok(md) if md.is_dir() => std::fs::remove_dir_all(&target)
                        .map_err(|e| format!("replace {}: {e}", target.display()))?,
                    Ok(_) => std::fs::remove_file(&target)
                        .map_err(|e| format!("replace {}: {e}", target.display()))?,
                    Err(_) => {}
                }
                std::fs::rename(entry.path(), &target)
                    .map_err(|e| format!("move into {}: {e}", target.display()))?;
            }
            std::fs::remove_dir(tmp).map_err(|e| format!("{}: {e}", tmp.display()).into())
        }
    }
}

/// Extract into the empty directory `dest`.
fn extract_into(image: &Image, dest: &Path, threads: usize, progress: &Progress) -> Result<Report> {
    let dfd = rustix::fs::openat(
        CWD,
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno_io(e, "open", dest))?;
    let (euid, egid) = (rustix::process::geteuid(), rustix::process::getegid());
    let created_owner = rustix::fs::fstat(&dfd)
        .ok()
        .filter(|st| st.st_mode & 0o2000 == 0 && st.st_gid == egid.as_raw())
        .map(|_| (euid.as_raw(), egid.as_raw()));
    let ctx = Ctx {
        image,
        progress,
        is_root: euid.is_root(),
        created_owner,
        // A default ACL, not the umask, decides the mode of new entries under it.
        umask: umask().filter(|_| !has_default_acl(&dfd)),
        warnings: Mutex::new(Vec::new()),
        warned_owner: AtomicBool::new(false),
        bytes: AtomicU64::new(0),
        since_release: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    };
    let workers = threads.max(1);
    // One batch queued per worker: (2 * workers + 1) batches open at most.
    let batch_max = (MAX_OPEN / (2 * workers + 1)).clamp(1, BATCH_FILES);
    let (tx, rx) = mpsc::sync_channel::<Vec<Job>>(workers);
    let rx = Mutex::new(rx);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let walked = std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    // The lock is held only to take a job.
                    let batch = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(batch) = batch else { return };
                    for job in batch {
                        if ctx.failed.load(Ordering::Relaxed) {
                            break; // drain: the walk is stopping
                        }
                        let r = ctx
                            .write_data(&job.inode, &job.fd, &job.rel)
                            .and_then(|()| {
                                let t = Target::Fd(&job.fd);
                                if job.preset {
                                    ctx.finish_xattrs_times(&job.inode, &t, &job.rel)
                                } else {
                                    ctx.finish_inode(&job.inode, t, &job.rel)
                                }
                            });
                        if let Err(e) = r {
                            ctx.failed.store(true, Ordering::Relaxed);
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert_with(|| crate::explain(e.as_ref()));
                        }
                    }
                }
            });
        }
        let mut x = Extractor {
            ctx: &ctx,
            image,
            dest: dfd,
            links: HashMap::new(),
            dirs: HashSet::new(),
            entries: 0,
            jobs: tx,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_max,
        };
        let walked = (|| -> Result<u64> {
            let root = image.inode(image.root_nid())?;
            let root_fd = x.dest.try_clone()?;
            x.dirs.insert(root.nid());
            x.extract_dir(&root, &root_fd, PathBuf::new(), 0)?;
            x.hand_over()?;
            ctx.finish_inode(&root, Target::Fd(&root_fd), Path::new("."))?;
            Ok(x.entries)
        })()
        .map_err(|e| crate::explain(e.as_ref()));
        // Dropping the sender ends the workers once the queue is empty.
        drop(x);
        walked
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    let entries = walked?;
    let mut warnings = ctx.warnings.into_inner().unwrap_or_else(|p| p.into_inner());
    // Workers warn in the order they finish: sort (each starts with its path) so that the
    // report does not depend on the thread count.
    warnings.sort();
    Ok(Report {
        entries,
        bytes: ctx.bytes.into_inner(),
        warnings,
    })
}

enum Target<'a> {
    /// An open file or directory.
    Fd(&'a OwnedFd),
    /// An entry (symlink, device, FIFO, socket) in an open directory.
    At(&'a OwnedFd, &'a OsStr),
}

impl Ctx<'_> {
    fn warn(&self, w: String) {
        let mut warnings = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        if warnings.len() < 100 {
            warnings.push(w);
        }
    }
}

impl Extractor<'_> {
    /// Hand the files created so far to the workers.
    fn hand_over(&mut self) -> Result<()> {
        self.batch_bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_max));
        self.jobs
            .send(batch)
            .map_err(|_| "the writer threads stopped".into())
    }

    fn extract_dir(&mut self, dir: &Inode, dfd: &OwnedFd, rel: PathBuf, depth: u32) -> Result<()> {
        if depth > self.image.limits().max_depth {
            return Err(Error::corrupt(
                format!("directory depth exceeds {}", self.image.limits().max_depth),
                Context::nid(dir.nid().0),
            )
            .into());
        }
        for entry in self.image.read_dir_inode(dir)? {
            let entry = entry?;
            let name = entry.name();
            // `.` and `..` are ordinary on-disk entries; never created, but only
            // directories may carry those names.
            if (name == b"." || name == b"..") && entry.file_type() == FileType::Directory {
                continue;
            }
            if !erofs_reader::is_plain_name(name) {
                return Err(format!(
                    "refusing unsafe name {:?} in {}",
                    String::from_utf8_lossy(name),
                    rel.display()
                )
                .into());
            }
            let name_os = OsStr::from_bytes(name);
            let child_rel = rel.join(name_os);
            let inode = self.image.inode(entry.nid())?;
            let md = inode.metadata();
            self.entries += 1;
            self.ctx.progress.file();
            if self.ctx.failed.load(Ordering::Relaxed) {
                return Err("stopped: a worker failed".into());
            }
            if md.file_type() != FileType::Directory {
                if let Some(first) = self.links.get(&inode.nid()) {
                    rustix::fs::linkat(&self.dest, first.as_path(), dfd, name_os, AtFlags::empty())
                        .map_err(|e| errno_io(e, "link", &child_rel))?;
                    continue;
                }
                self.links.insert(inode.nid(), child_rel.clone());
            }
            match md.file_type() {
                FileType::Directory => {
                    if !self.dirs.insert(inode.nid()) {
                        return Err(Error::corrupt(
                            format!("directory cycle at {}", child_rel.display()),
                            Context::nid(inode.nid().0),
                        )
                        .into());
                    }
                    rustix::fs::mkdirat(dfd, name_os, Mode::from_raw_mode(0o700))
                        .map_err(|e| errno_io(e, "mkdir", &child_rel))?;
                    let sub = rustix::fs::openat(
                        dfd,
                        name_os,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| errno_io(e, "open", &child_rel))?;
                    self.extract_dir(&inode, &sub, child_rel.clone(), depth + 1)?;
                    self.ctx
                        .finish_inode(&inode, Target::Fd(&sub), &child_rel)?;
                }
                FileType::Regular => {
                    let preset = self.ctx.preset_mode(&inode);
                    let fd = rustix::fs::openat(
                        dfd,
                        name_os,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(preset.unwrap_or(0o600)),
                    )
                    .map_err(|e| errno_io(e, "create", &child_rel))?;
                    self.batch_bytes = self.batch_bytes.saturating_add(md.len());
                    self.batch.push(Job {
                        inode,
                        fd,
                        rel: child_rel,
                        preset: preset.is_some(),
                    });
                    if self.batch.len() >= self.batch_max || self.batch_bytes >= BATCH_BYTES {
                        self.hand_over()?;
                    }
                }
                FileType::Symlink => {
                    let target = self.image.read_link_inode(&inode)?;
                    rustix::fs::symlinkat(OsStr::from_bytes(&target), dfd, name_os)
                        .map_err(|e| errno_io(e, "symlink", &child_rel))?;
                    self.ctx
                        .finish_inode(&inode, Target::At(dfd, name_os), &child_rel)?;
                }
                ft => {
                    let (kind, dev) = match ft {
                        FileType::CharDevice => (
                            rustix::fs::FileType::CharacterDevice,
                            rustix::fs::makedev(md.rdev_major(), md.rdev_minor()),
                        ),
                        FileType::BlockDevice => (
                            rustix::fs::FileType::BlockDevice,
                            rustix::fs::makedev(md.rdev_major(), md.rdev_minor()),
                        ),
                        FileType::Fifo => (rustix::fs::FileType::Fifo, 0),
                        _ => (rustix::fs::FileType::Socket, 0),
                    };
                    match rustix::fs::mknodat(dfd, name_os, kind, Mode::from_raw_mode(0o600), dev) {
                        Ok(()) => {
                            self.ctx
                                .finish_inode(&inode, Target::At(dfd, name_os), &child_rel)?
                        }
                        Err(e) if e == rustix::io::Errno::PERM => {
                            self.ctx.warn(format!(
                                "{}: cannot create device node: {}",
                                child_rel.display(),
                                std::io::Error::from(e)
                            ));
                        }
                        Err(e) => return Err(errno_io(e, "mknod", &child_rel)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Write all of `d` at `pos` of `fd`, the file `rel` (named in an error).
fn pwrite_all(fd: &OwnedFd, d: &[u8], pos: u64, rel: &Path) -> Result<()> {
    let mut done = 0;
    while done < d.len() {
        let n = rustix::io::pwrite(fd, &d[done..], pos + done as u64)
            .map_err(|e| errno_io(e, "write", rel))?;
        if n == 0 {
            return Err(format!("write {}: short write", rel.display()).into());
        }
        done += n;
    }
    Ok(())
}

/// The process's umask, from `/proc/self/status` (reading it with umask(2) would change it
/// for a moment, under the feet of other threads).
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(v.trim(), 8).ok()
}

/// Whether directory `dir` has a default ACL (or that cannot be told), which new entries
/// inherit instead of being masked by the umask.
fn has_default_acl(dir: &OwnedFd) -> bool {
    match rustix::fs::fgetxattr_query(dir, "system.posix_acl_default") {
        Err(e) => e != rustix::io::Errno::NODATA && e != rustix::io::Errno::OPNOTSUPP,
        Ok(_) => true,
    }
}

impl Ctx<'_> {
    /// The mode to create regular file `inode` with when creating it gives it its final
    /// owner and mode (no chown or chmod needed afterwards), else `None` (created 0600,
    /// owner and mode set once its data is written). Never more permissive than the final
    /// mode, so nothing is exposed while the data is written.
    fn preset_mode(&self, inode: &Inode) -> Option<u32> {
        let md = inode.metadata();
        let mode = u32::from(md.mode()) & 0o7777;
        let umask = self.umask?;
        (self.created_owner == Some((md.uid(), md.gid()))
            && mode & !0o777 == 0
            && mode & umask == 0)
            .then_some(mode)
    }

    fn write_data(&self, inode: &Inode, fd: &OwnedFd, rel: &Path) -> Result<()> {
        if let Some(len) = self.copy_in_kernel(inode, fd) {
            self.progress.bytes(len);
            self.bytes.fetch_add(len, Ordering::Relaxed);
            return Ok(());
        }
        let mut pos = 0u64;
        let mut data_end = 0u64;
        self.image.for_each_piece(inode, |piece| -> Result<()> {
            match piece {
                Piece::Data(d) => {
                    pwrite_all(fd, d, pos, rel)?;
                    pos += d.len() as u64;
                    data_end = pos;
                    self.progress.bytes(d.len() as u64);
                    self.lent(d.len());
                }
                Piece::Zeros(n) => pos += n,
            }
            Ok(())
        })?;
        // The file (created empty) ends where the last data was written, unless it ends in
        // a hole: only then does the size need setting.
        if pos != data_end {
            rustix::fs::ftruncate(fd, pos).map_err(|e| errno_io(e, "truncate", rel))?;
        }
        self.bytes.fetch_add(pos, Ordering::Relaxed);
        Ok(())
    }

    /// Count `n` bytes written (read through the image's map, or copied by the kernel
    /// while the walk maps metadata pages); every [`RELEASE_EVERY`] bytes let the map drop
    /// its pages, so that the resident set stays small (they stay in the page cache).
    fn lent(&self, n: usize) {
        let since = self.since_release.fetch_add(n as u64, Ordering::Relaxed);
        if since >= RELEASE_EVERY {
            self.since_release.store(0, Ordering::Relaxed);
            self.image.release_memory();
        }
    }

    /// Write the data of an uncompressed file whose blocks are in a file (the image file,
    /// or an extra device's file): long extents are copied by the kernel from that file's
    /// page cache (`sendfile(2)`: no page faults on the map and no copy through user
    /// memory; `copy_file_range(2)` refuses to copy between filesystems), the others
    /// (inline tails, short extents) are written from the map, adjacent ones with one
    /// `pwritev(2)`. Returns the file's size, or `None` when the file is not such a file or
    /// anything went wrong or came short: the caller then writes the whole file again
    /// through [`Image::for_each_piece`], which reports what is wrong as a typed error (a
    /// damaged map, an image shorter than its data, a full disk).
    fn copy_in_kernel(&self, inode: &Inode, fd: &OwnedFd) -> Option<u64> {
        let md = inode.metadata();
        if md.layout().is_compressed()
            || md.len() < KERNEL_COPY_MIN
            || md.len() > EXTENT_WINDOW * MAX_WINDOWS
        {
            return None;
        }
        // The file's write position, which sendfile(2) writes at and moves.
        let mut at = 0u64;
        let mut data_end = 0u64;
        // Lent pieces not written yet (adjacent in the file), from `gather_at`.
        let mut gather: Vec<std::io::IoSlice<'_>> = Vec::new();
        let mut gather_at = 0u64;
        // The extents of a window of the file at a time: at most one per block of it in
        // memory, however the image maps the file.
        let windows = (0..md.len()).step_by(EXTENT_WINDOW as usize).map(|w| {
            let w_end = w.saturating_add(EXTENT_WINDOW).min(md.len());
            self.image.extents(inode, w..w_end)
        });
        for window in windows {
            let window = window.ok()?;
            for e in &window {
                let (index, offset) = match &e.target {
                    ExtentTarget::Hole => {
                        self.write_gathered(fd, &mut gather, gather_at)?;
                        continue;
                    }
                    ExtentTarget::Device { index, offset, .. } => (*index, *offset),
                    // Tails of inodes in a metabox (`mkfs.erofs -m`): the general path.
                    ExtentTarget::Metabox { .. } => return None,
                };
                let (src, off) = self.image.device_range(index, offset).ok()?;
                let end = e.file_offset.checked_add(e.len)?;
                match src.file() {
                    Some(file) if e.len >= KERNEL_COPY_MIN => {
                        self.write_gathered(fd, &mut gather, gather_at)?;
                        if at != e.file_offset {
                            rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(e.file_offset))
                                .ok()?;
                        }
                        let mut from = off;
                        let mut left = e.len;
                        while left > 0 {
                            let want = usize::try_from(left)
                                .unwrap_or(usize::MAX)
                                .min(SENDFILE_MAX);
                            match rustix::fs::sendfile(fd, file, Some(&mut from), want) {
                                Ok(n) if n > 0 => left = left.saturating_sub(n as u64),
                                _ => return None,
                            }
                        }
                        at = end;
                        self.lent(usize::try_from(e.len).unwrap_or(usize::MAX));
                    }
                    _ => {
                        let d = src.bytes(off, usize::try_from(e.len).ok()?)?;
                        if gather.is_empty() {
                            gather_at = e.file_offset;
                        }
                        gather.push(std::io::IoSlice::new(d));
                        if gather.len() >= GATHER_MAX {
                            self.write_gathered(fd, &mut gather, gather_at)?;
                        }
                    }
                }
                data_end = end;
            }
        }
        self.write_gathered(fd, &mut gather, gather_at)?;
        // Created empty: only a file that ends in a hole needs its size set.
        if data_end != md.len() {
            rustix::fs::ftruncate(fd, md.len()).ok()?;
        }
        Some(md.len())
    }

    /// Write the lent pieces `gather` (adjacent in the file, from `at`) with one
    /// `pwritev(2)`, and empty it. `None` for an error or a short write.
    fn write_gathered(
        &self,
        fd: &OwnedFd,
        gather: &mut Vec<std::io::IoSlice<'_>>,
        at: u64,
    ) -> Option<()> {
        if gather.is_empty() {
            return Some(());
        }
        let len: usize = gather.iter().map(|g| g.len()).sum();
        let n = rustix::io::pwritev(fd, gather, at).ok()?;
        gather.clear();
        self.lent(len);
        (n == len).then_some(())
    }

    /// Owner, mode, xattrs and times, in that order (chown clears setuid bits, and any
    /// change but the last would disturb the mtime).
    fn finish_inode(&self, inode: &Inode, t: Target<'_>, rel: &Path) -> Result<()> {
        let md = inode.metadata();
        let uid = rustix::fs::Uid::from_raw(md.uid());
        let gid = rustix::fs::Gid::from_raw(md.gid());
        let owner = match &t {
            Target::Fd(fd) => rustix::fs::fchown(fd, Some(uid), Some(gid)),
            Target::At(dfd, name) => {
                rustix::fs::chownat(dfd, *name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            }
        };
        if let Err(e) = owner
            && (self.is_root || !self.warned_owner.swap(true, Ordering::Relaxed))
        {
            self.warn(format!(
                "{}: cannot set owner {}:{}: {}",
                rel.display(),
                md.uid(),
                md.gid(),
                std::io::Error::from(e)
            ));
        }
        let mode = Mode::from_raw_mode(u32::from(md.mode()) & 0o7777);
        let chmod = match &t {
            Target::Fd(fd) => rustix::fs::fchmod(fd, mode),
            // Linux cannot chmod a symlink; its mode is always 0777.
            Target::At(_, _) if md.file_type() == FileType::Symlink => Ok(()),
            Target::At(dfd, name) => rustix::fs::chmodat(dfd, *name, mode, AtFlags::empty()),
        };
        chmod.map_err(|e| errno_io(e, "chmod", rel))?;
        self.finish_xattrs_times(inode, &t, rel)
    }

    /// Xattrs and times (the last change, so that nothing disturbs the mtime).
    fn finish_xattrs_times(&self, inode: &Inode, t: &Target<'_>, rel: &Path) -> Result<()> {
        let md = inode.metadata();
        for x in self.image.inode_xattrs(inode)? {
            let name = OsStr::from_bytes(&x.name);
            let r = match &t {
                Target::Fd(fd) => rustix::fs::fsetxattr(fd, name, &x.value, XattrFlags::empty()),
                Target::At(dfd, entry) => {
                    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dfd.as_fd().as_raw_fd()));
                    p.push(entry);
                    rustix::fs::lsetxattr(&p, name, &x.value, XattrFlags::empty())
                }
            };
            if let Err(e) = r {
                self.warn(format!(
                    "{}: cannot set xattr {}: {}",
                    rel.display(),
                    String::from_utf8_lossy(&x.name),
                    std::io::Error::from(e)
                ));
            }
        }

        let ts = Timespec {
            tv_sec: md.mtime(),
            tv_nsec: i64::from(md.mtime_nsec()),
        };
        let times = Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        let r = match &t {
            Target::Fd(fd) => rustix::fs::futimens(fd, &times),
            Target::At(dfd, name) => {
                rustix::fs::utimensat(dfd, *name, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
        };
        r.map_err(|e| errno_io(e, "set times of", rel))?;
        Ok(())
    }
}
