//! Warming a mount's page cache with what the prefetch made present, ahead of its readers.
//!
//! Over EROFS on fscache, a byte present in the cache file is still a page-cache miss for
//! the reader the first time: the kernel reads it from the cache file (cachefiles reads
//! with direct I/O), one synchronous read of the disk per miss, on the reader's own time.
//! Measured in the container start (DESIGN.md, "The floors"): python over our mount with
//! every byte it reads already in the cache file took 1.66 s, and 0.73 s once its pages were
//! in the page cache.
//!
//! A [`PageCacheWarmer`] is a [`PrefetchObserver`]: told of each prefetch job's ranges of an
//! object once they are present, it maps them to the files that hold them (the image's
//! [`FileMap`], [`FileMap::files_in`]) and asks the kernel to read those file ranges into the
//! page cache through the mount (`posix_fadvise(POSIX_FADV_WILLNEED)`, which starts the
//! reads and returns), on a thread of its own, in the order the jobs finished: the trace's
//! first-access order for a replay. A reader that gets there first waits for the read in
//! flight (the page is locked) instead of reading it again; one that gets there later finds
//! the page cached. Only the ranges the prefetch made present are read, so this fetches
//! nothing (a range a job failed on is not passed on).
//!
//! For the ranges of a replayed trace ([`crate::PrefetchConfig::listed_only`]): they are the
//! bytes the recorded start read. With a whole-object prefetch it would read the whole
//! image into the page cache. (Cold prediction's pieces, read the same way once filled,
//! made the cold start no faster: DESIGN.md.)

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use nix::fcntl::{OFlag, OpenHow, PosixFadviseAdvice, ResolveFlag, openat2, posix_fadvise};

use crate::engine::PrefetchObserver;
use crate::predict::FileMap;

/// The most one `posix_fadvise` call is asked to read: the kernel reads at most the
/// mount's readahead window per call (`force_page_cache_ra`), 128 KiB by default.
pub const WARM_STEP: u64 = 128 << 10;

/// Jobs waiting for the warming thread at most; more are dropped (and counted): the
/// prefetch never waits for it.
const MAX_QUEUED: usize = 1 << 16;

/// Reads the ranges the prefetch made present into a mount's page cache, in the background
/// (see the [module](self)). Give it to the engine with
/// [`crate::Engine::with_prefetch_observer`] and its map with [`set_map`](Self::set_map);
/// dropping it stops its thread.
#[derive(Debug)]
pub struct PageCacheWarmer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    map: OnceLock<Arc<FileMap>>,
    state: Mutex<State>,
    wake: Condvar,
    counts: Counts,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(Vec<u8>, Vec<Range<u64>>)>,
    closed: bool,
    /// Jobs taken off the queue (those done are [`Counts::jobs`]).
    taken: u64,
}

/// What a [`PageCacheWarmer`] did ([`PageCacheWarmer::counts`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WarmCounts {
    /// Prefetch jobs whose ranges were handled.
    pub jobs: u64,
    /// Files opened (one per run of ranges in the same file).
    pub files: u64,
    /// Bytes of files asked to be read into the page cache.
    pub bytes: u64,
    /// Files that could not be opened or advised, paths refused, jobs dropped.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Counts {
    jobs: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

impl PageCacheWarmer {
    /// A warmer reading files of the image mounted at `root`; its thread starts now and
    /// waits for jobs and for its map.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<PageCacheWarmer> {
        let inner = Arc::new(Inner {
            root: root.into(),
            map: OnceLock::new(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            counts: Counts::default(),
        });
        let worker = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("warm".into())
            .spawn(move || worker.run())?;
        Ok(PageCacheWarmer { inner })
    }

    /// Give it the image's file map (the first call wins): a [`FileMap`], or an `Arc` of one
    /// shared with a [`Predictor`](crate::predict::Predictor). Jobs wait for it.
    pub fn set_map(&self, map: impl Into<Arc<FileMap>>) {
        let _ = self.inner.map.set(map.into());
        // Under the lock, so the thread is not between its check and its wait.
        drop(self.inner.lock());
        self.inner.wake.notify_all();
    }

    /// What it did so far.
    pub fn counts(&self) -> WarmCounts {
        let c = &self.inner.counts;
        WarmCounts {
            jobs: c.jobs.load(Ordering::SeqCst),
            files: c.files.load(Ordering::SeqCst),
            bytes: c.bytes.load(Ordering::SeqCst),
            errors: c.errors.load(Ordering::SeqCst),
        }
    }

    /// Whether every job handed to it so far has been handled.
    pub fn is_idle(&self) -> bool {
        let s = self.inner.lock();
        s.queue.is_empty() && s.taken == self.inner.counts.jobs.load(Ordering::SeqCst)
    }
}

impl Drop for PageCacheWarmer {
    fn drop(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_all();
    }
}

impl PrefetchObserver for PageCacheWarmer {
    fn prefetched(&self, key: &[u8], ranges: &[Range<u64>]) {
        let mut s = self.inner.lock();
        if s.queue.len() >= MAX_QUEUED {
            self.inner.counts.errors.fetch_add(1, Ordering::SeqCst);
            return;
        }
        s.queue.push_back((key.to_vec(), ranges.to_vec()));
        drop(s);
        self.inner.wake.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a queue and a flag: consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The thread: take jobs in order once the map is set, until closed.
    fn run(&self) {
        let mut open: Option<(Vec<u8>, File)> = None;
        loop {
            let (key, ranges) = {
                let mut s = self.lock();
                loop {
                    if s.closed {
                        return;
                    }
                    if self.map.get().is_some()
                        && let Some(job) = s.queue.pop_front()
                    {
                        s.taken += 1;
                        break job;
                    }
                    // Every change it waits for (a job, the map, closing) notifies.
                    s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            };
            let Some(map) = self.map.get() else { continue };
            for range in ranges {
                for (path, file_range) in map.files_in(&key, range) {
                    self.warm(&mut open, &path, file_range);
                }
            }
            self.counts.jobs.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Ask the kernel to read `range` of the file at `path` (from the image's root) into the
    /// page cache; `open` keeps the last file opened (a job's ranges are often one file's).
    fn warm(&self, open: &mut Option<(Vec<u8>, File)>, path: &[u8], range: Range<u64>) {
        if open.as_ref().is_none_or(|(p, _)| p != path) {
            *open = None;
            let Some(rel) = relative(path) else {
                self.counts.errors.fetch_add(1, Ordering::SeqCst);
                return;
            };
            match open_beneath(&self.root, rel) {
                Ok(f) => {
                    self.counts.files.fetch_add(1, Ordering::SeqCst);
                    *open = Some((path.to_vec(), f));
                }
                Err(e) => {
                    log::debug!("page cache: {}: {e}", path.escape_ascii());
                    self.counts.errors.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
        let Some((_, file)) = open.as_ref() else {
            return;
        };
        let mut pos = range.start;
        while pos < range.end {
            let len = (range.end - pos).min(WARM_STEP);
            let (Ok(off), Ok(n)) = (i64::try_from(pos), i64::try_from(len)) else {
                self.counts.errors.fetch_add(1, Ordering::SeqCst);
                return;
            };
            if let Err(e) = posix_fadvise(file, off, n, PosixFadviseAdvice::POSIX_FADV_WILLNEED) {
                log::debug!("page cache: {}: {e}", path.escape_ascii());
                self.counts.errors.fetch_add(1, Ordering::SeqCst);
                return;
            }
            self.counts.bytes.fetch_add(len, Ordering::SeqCst);
            pos += len;
        }
    }
}

/// Open `rel` for reading below `root` with no symlink followed on the way, not even in a
/// directory of its path (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; Linux
/// 5.6+): the file map's paths are the image's own directories, so a symlink met on the way
/// means the mount is not the image the map was built from, and nothing outside `root` is
/// read. The root is opened anew each time: a warmer may start before the mount exists.
fn open_beneath(root: &Path, rel: &Path) -> nix::Result<File> {
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    openat2(&dir, rel, how).map(File::from)
}

/// `/a/b/c` (a [`FileMap`] path: names from the image) as a path below the mount's root,
/// or `None` if a name could leave it or is not one name (empty, `.`, `..`, a NUL byte).
fn relative(path: &[u8]) -> Option<&Path> {
    let rest = path.strip_prefix(b"/")?;
    let ok = rest.split(|&b| b == b'/').all(erofs_reader::is_plain_name);
    ok.then(|| Path::new(OsStr::from_bytes(rest)))
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::predict::Rules;
    use std::time::{Duration, Instant};

    #[test]
    fn only_names_below_the_root_are_paths() {
        assert_eq!(relative(b"/usr/lib/x.so"), Some(Path::new("usr/lib/x.so")));
        for bad in [
            &b"usr/x"[..],
            b"/",
            b"/usr//x",
            b"/usr/../etc/passwd",
            b"/./x",
            b"/x/",
            b"/a\0b",
        ] {
            assert_eq!(relative(bad), None, "{}", bad.escape_ascii());
        }
    }

    fn wait_idle(w: &PageCacheWarmer, jobs: u64) -> WarmCounts {
        let t = Instant::now();
        while w.counts().jobs < jobs {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", w.counts());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(w.is_idle());
        w.counts()
    }

    #[test]
    fn prefetched_ranges_are_read_from_the_files_that_hold_them() {
        let dir = tempfile::tempdir().unwrap();
        // Files f0 [0, 8K) and f1 [8K, 300K) of the blob; f2 [400K, 404K) missing on disk.
        std::fs::write(dir.path().join("f0"), vec![1u8; 8192]).unwrap();
        std::fs::write(dir.path().join("f1"), vec![2u8; 292 << 10]).unwrap();
        let map = FileMap::from_entries(
            b"blob",
            &[
                (0..8192, 0..404 << 10),
                (8192..300 << 10, 0..404 << 10),
                (400 << 10..404 << 10, 0..404 << 10),
            ],
            Rules::DEFAULT,
            1 << 20,
        );
        let w = PageCacheWarmer::new(dir.path()).unwrap();
        // Jobs before the map wait for it.
        w.prefetched(b"blob", &[4096..12288]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(w.counts().jobs, 0);
        w.set_map(map);
        let c = wait_idle(&w, 1);
        // f0's last page and f1's first: two files, 8 KiB.
        assert_eq!((c.files, c.bytes, c.errors), (2, 8192, 0));
        // f1 again (kept open: no new file), 200 KiB in two steps; another key: nothing.
        w.prefetched(b"blob", &[20 << 10..220 << 10]);
        w.prefetched(b"other", &[0..1 << 20]);
        let c = wait_idle(&w, 3);
        assert_eq!((c.files, c.bytes, c.errors), (2, 8192 + (200 << 10), 0));
        // A file the mount does not have: an error, counted, nothing read.
        w.prefetched(b"blob", &[400 << 10..404 << 10]);
        let c = wait_idle(&w, 4);
        assert_eq!((c.files, c.bytes, c.errors), (2, 8192 + (200 << 10), 1));
    }

    /// The map's paths are the image's directories: a symlink met on the way (here a
    /// directory of the path, which `O_NOFOLLOW` alone would follow) is refused, so nothing
    /// outside the mount's root is read; the same path through a real directory is read.
    #[test]
    fn a_symlink_on_the_way_is_not_followed_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f0"), vec![1u8; 8192]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("r")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/f0"), vec![2u8; 8192]).unwrap();
        let map = |d: &[u8]| {
            FileMap::from_entries(b"blob", &[(0..8192, 0..8192)], Rules::DEFAULT, 1 << 20).in_dir(d)
        };
        for (d, files, errors) in [(&b"/d"[..], 0, 1), (b"/r", 0, 1), (b"/real", 1, 0)] {
            let w = PageCacheWarmer::new(&root).unwrap();
            w.set_map(map(d));
            w.prefetched(b"blob", &[0..8192]);
            let c = wait_idle(&w, 1);
            assert_eq!((c.files, c.errors), (files, errors), "{}", d.escape_ascii());
            assert_eq!(c.bytes, 8192 * files);
        }
    }
}
