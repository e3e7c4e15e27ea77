//! `erofs fsck`: decode every inode reachable from the root, check every directory, read
//! every xattr and symlink, read every page of stored file data and decode every compressed
//! extent.
//!
//! One thread walks the metadata and hands the regular files it finds, in batches of up to
//! 64 files or 1 MiB of data, to `threads` workers through a bounded queue; the workers
//! read the data through
//! [`Image::for_each_piece`], which lends slices of a memory-mapped image instead of
//! copying. Walking and reading overlap, so the walk costs no wall time of its own.
//!
//! The report does not depend on the thread count: the workers' errors carry the file's
//! place in the walk and are sorted by it before they join the walk's.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use erofs_reader::{FileType, Image, Inode, Nid, Piece};

use crate::progress::Progress;

/// Bytes a worker reads between calls to [`Image::release_memory`], which empties the
/// whole map (every thread's pages): often enough to keep the mapped page cache to tens of
/// MB, rarely enough that pages are not faulted in twice (every call costs a page-table
/// teardown and a TLB flush on every core running the process).
const RELEASE_EVERY: u64 = 8 << 20;

/// Entries the walk visits between calls to [`Image::release_memory`].
const RELEASE_EVERY_ENTRIES: u64 = 2048;

/// Batches waiting for a worker, per worker: enough that the walk rarely waits, bounded so
/// a huge image does not queue its whole file list.
const QUEUE_PER_WORKER: usize = 4;

/// Most files in a batch handed to a worker: one hand-off per file cost wake-ups and lock
/// contention for every small file.
const BATCH_FILES: usize = 64;

/// Data bytes after which a batch is handed over without waiting for more files, so that
/// big files spread over the workers.
const BATCH_BYTES: u64 = 1 << 20;

/// Most errors reported individually.
const MAX_ERRORS: usize = 100;
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) inodes: u64,
    pub(crate) dirs: u64,
    pub(crate) files: u64,
    pub(crate) symlinks: u64,
    pub(crate) others: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    pub(crate) errors: Vec<String>,
}

impl Report {
    fn error(&mut self, e: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        } else if self.errors.len() == MAX_ERRORS {
            self.errors
                .push("too many errors; stopping the list".into());
        }
    }
}

pub(crate) fn fsck(image: &Image, threads: usize, progress: &Progress) -> Report {
    let start = Instant::now();
    let mut r = Report::default();
    let threads = threads.max(1);
    let (jobs, queue) = mpsc::sync_channel::<Vec<Job>>(QUEUE_PER_WORKER.saturating_mul(threads));
    let queue = Mutex::new(queue);
    let bytes = AtomicU64::new(0);
    // (walk index of the file, message)
    let data_errors: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| read_files(image, &queue, &bytes, &data_errors, progress));
        }
        let mut batches = Batches {
            jobs,
            batch: Vec::new(),
            bytes: 0,
        };
        walk(image, &mut r, &mut batches);
        batches.hand_over();
        // Dropping the sender ends the workers once the queue is empty.
        drop(batches);
    });
    r.bytes += bytes.into_inner();
    let mut data_errors = data_errors.into_inner().unwrap_or_else(|p| p.into_inner());
    data_errors.sort_by_key(|e| e.0);
    for (_, e) in data_errors {
        r.error(e);
    }
    r.elapsed = start.elapsed();
    r
}

/// A regular file for a worker to read.
struct Job {
    /// Its place in the walk (1-based), to order the report.
    index: u64,
    inode: Inode,
    path: PathBuf,
    size: u64,
}

/// Files found by the walk, handed to the workers in batches.
struct Batches {
    jobs: mpsc::SyncSender<Vec<Job>>,
    batch: Vec<Job>,
    /// Data bytes of `batch`.
    bytes: u64,
}

impl Batches {
    /// Add a file; false once every worker is gone.
    fn push(&mut self, job: Job) -> bool {
        self.bytes = self.bytes.saturating_add(job.size);
        self.batch.push(job);
        if self.batch.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES {
            return self.hand_over();
        }
        true
    }

    /// Hand the files found so far to the workers; false once every worker is gone.
    fn hand_over(&mut self) -> bool {
        self.bytes = 0;
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.jobs.send(batch).is_ok()
    }
}

/// The metadata walk: counts and checks into `r`, regular files to `jobs`.
fn walk(image: &Image, r: &mut Report, jobs: &mut Batches) {
    let mut seen: HashSet<Nid> = HashSet::new();
    let mut links: HashMap<Nid, u32> = HashMap::new();
    let root = image.root_nid();
    // (path, nid, parent nid, depth)
    let mut stack = vec![(PathBuf::from("/"), root, root, 0u32)];
    seen.insert(root);
    r.inodes += 1;
    let mut walked = 0u64;
    while let Some((path, nid, parent, depth)) = stack.pop() {
        let inode = match image.inode(nid) {
            Ok(i) => i,
            Err(e) => {
                r.error(format!("{}: {e}", path.display()));
                continue;
            }
        };
        r.dirs += 1;
        if let Err(e) = image.inode_xattrs(&inode) {
            r.error(format!("{}: xattrs: {e}", path.display()));
        }
        if depth > image.limits().max_depth {
            r.error(format!("{}: directory too deep", path.display()));
            continue;
        }
        let entries = match image.read_dir_inode(&inode) {
            Ok(it) => it,
            Err(e) => {
                r.error(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let (mut dot, mut dotdot) = (false, false);
        let mut prev: Option<Vec<u8>> = None;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    r.error(format!("{}: {e}", path.display()));
                    break;
                }
            };
            let name = entry.name();
            if let Some(p) = &prev
                && p.as_slice() >= name
            {
                r.error(format!(
                    "{}: entries not sorted at {:?}",
                    path.display(),
                    String::from_utf8_lossy(name)
                ));
            }
            prev = Some(name.to_vec());
            if name == b"." {
                dot = true;
                if entry.nid() != nid {
                    r.error(format!(
                        "{}: '.' points to nid {}",
                        path.display(),
                        entry.nid()
                    ));
                }
                continue;
            }
            if name == b".." {
                dotdot = true;
                if entry.nid() != parent {
                    r.error(format!(
                        "{}: '..' points to nid {}, parent is {parent}",
                        path.display(),
                        entry.nid()
                    ));
                }
                continue;
            }
            if name.contains(&b'/') || name.contains(&0) {
                // The kernel would show such a name; no path can name it safely.
                r.error(format!(
                    "{}: entry name {:?} contains '/' or NUL",
                    path.display(),
                    String::from_utf8_lossy(name)
                ));
            }
            let child_path = path.join(std::ffi::OsStr::new(
                &String::from_utf8_lossy(name).into_owned(),
            ));
            let child = entry.nid();
            let first = seen.insert(child);
            walked += 1;
            // Inodes share blocks with inline data: let go of the walked metadata pages
            // now and then.
            if walked.is_multiple_of(RELEASE_EVERY_ENTRIES) {
                image.release_memory();
            }
            let inode = match image.inode(child) {
                Ok(i) => i,
                Err(e) => {
                    r.error(format!("{}: {e}", child_path.display()));
                    continue;
                }
            };
            let md = inode.metadata();
            if md.file_type() != entry.file_type() {
                r.error(format!(
                    "{}: directory says {:?}, inode says {:?}",
                    child_path.display(),
                    entry.file_type(),
                    md.file_type()
                ));
            }
            if md.file_type() == FileType::Directory {
                if !first {
                    r.error(format!(
                        "{}: directory nid {child} reached twice (cycle or hard-linked directory)",
                        child_path.display()
                    ));
                    continue;
                }
                r.inodes += 1;
                stack.push((child_path, child, nid, depth + 1));
                continue;
            }
            *links.entry(child).or_default() += 1;
            if !first {
                continue;
            }
            r.inodes += 1;
            if let Err(e) = image.inode_xattrs(&inode) {
                r.error(format!("{}: xattrs: {e}", child_path.display()));
            }
            match md.file_type() {
                FileType::Regular => {
                    r.files += 1;
                    let job = Job {
                        index: r.files,
                        size: md.len(),
                        inode,
                        path: child_path,
                    };
                    if !jobs.push(job) {
                        // Only if every worker panicked; scope() re-raises the panic.
                        break;
                    }
                }
                FileType::Symlink => {
                    r.symlinks += 1;
                    match image.read_link_inode(&inode) {
                        Ok(t) => r.bytes += t.len() as u64,
                        Err(e) => r.error(format!("{}: {e}", child_path.display())),
                    }
                }
                _ => r.others += 1,
            }
        }
        // erofs-utils 1.9 may omit `.` (DOT_OMITTED); `..` is always there.
        if (!dot && !inode.metadata().raw().dot_omitted()) || !dotdot {
            r.error(format!("{}: missing '.' or '..' entry", path.display()));
        }
    }
}

/// A worker: read every file taken from `queue`; the bytes read go to `bytes`, errors with
/// the file's walk index to `errors`.
fn read_files(
    image: &Image,
    queue: &Mutex<mpsc::Receiver<Vec<Job>>>,
    bytes: &AtomicU64,
    errors: &Mutex<Vec<(u64, String)>>,
    progress: &Progress,
) {
    let mut sum = 0u64;
    let mut since_release = 0u64;
    loop {
        // The lock is held only to take a batch.
        let batch = match queue.lock() {
            Ok(q) => q.recv(),
            Err(p) => p.into_inner().recv(),
        };
        let Ok(batch) = batch else { break };
        for job in batch {
            let mut n = 0u64;
            let result = image.for_each_piece(&job.inode, |p| {
                match p {
                    Piece::Data(d) => {
                        progress.bytes(d.len() as u64);
                        for c in d.chunks(RELEASE_EVERY as usize) {
                            sum = sum.wrapping_add(touch(c));
                            since_release += c.len() as u64;
                            // Keep the resident set small: mapped pages already read go back
                            // to the page cache only.
                            if since_release >= RELEASE_EVERY {
                                image.release_memory();
                                since_release = 0;
                            }
                        }
                        n += d.len() as u64;
                    }
                    Piece::Zeros(z) => n += z,
                }
                Ok::<(), erofs_reader::Error>(())
            });
            progress.file();
            let error = match result {
                Ok(()) if n == job.size => {
                    bytes.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                Ok(()) => format!("{}: read {n} bytes of {}", job.path.display(), job.size),
                Err(e) => format!("{}: {e}", job.path.display()),
            };
            errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((job.index, error));
        }
    }
    std::hint::black_box(sum);
}

/// Stride of [`touch`]: the smallest page size Linux uses.
const PAGE: usize = 4096;

/// Load one byte of every [`PAGE`] of `d`, and its last byte. Every page a slice of the mapped
/// image spans is then faulted in, i.e. read from the image (the kernel reads whole pages: an
/// I/O error shows on any byte of the page); decoded bytes were produced, and so checked, by
/// the decoder. Loading every byte as well added no check and cost a fifth of an LZ4 fsck's
/// CPU (reading 300 MB through the caches again).
fn touch(d: &[u8]) -> u64 {
    let mut acc = d.last().map_or(0, |&b| u64::from(b));
    for &b in d.iter().step_by(PAGE) {
        acc = acc.rotate_left(8) ^ u64::from(b);
    }
    acc
}
