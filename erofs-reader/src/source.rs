//! Where image bytes come from: the [`Source`] trait and its implementations.
//!
//! A source is one device of an image (the primary device holding the superblock and
//! metadata, or an extra "blob" device holding chunk data). Reads are positional and take
//! `&self`, like `pread(2)`, so one source serves many threads at once.
//!
//! | type | what |
//! | --- | --- |
//! | `Vec<u8>`, `Box<[u8]>`, `Arc<[u8]>`, `&'static [u8]` | bytes in memory; lends slices |
//! | [`std::fs::File`] | `pread` through [`FileExt::read_exact_at`] |
//! | [`MmapSource`](crate::MmapSource) | a read-only memory map; lends slices (zero copy) |
//! | [`LazyFile`] | a file opened on first use (blobs that may not exist yet) |
//! | [`CountingSource`] | wraps any source and records every read, to prove laziness |
//!
//! Implement [`Source`] yourself for remote or lazily fetched data: only
//! [`Source::read_exact_at`] and [`Source::size`] are required.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::counter::Counter;

/// Positional, thread-safe read access to one device of an image.
pub trait Source: Send + Sync {
    /// Fill all of `buf` with the bytes at `offset`. Reading past the end of the
    /// source is an error of kind [`io::ErrorKind::UnexpectedEof`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// The size of the source in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Whether the source is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.size()? == 0)
    }

    /// Lend `len` bytes at `offset` without copying, if the source can (memory and
    /// memory maps). `None` means "copy with [`Source::read_exact_at`] instead"; it is
    /// also the answer for a range past the end.
    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }

    /// Hint that bytes lent so far will not be needed again soon. A memory map drops its
    /// pages from the process's resident set (they stay in the page cache, and slices
    /// still held read the same bytes, faulted in again). Default: nothing.
    fn release(&self) {}

    /// The open file whose bytes, at the same offsets, this source presents, if there is
    /// one ([`File`], [`MmapSource`](crate::MmapSource), [`LazyFile`] once it opens). A
    /// caller may then have the kernel copy a range (`sendfile(2)`, `copy_file_range(2)`)
    /// instead of reading it through memory. Default: `None` (a source that decodes,
    /// fetches or counts its reads must keep the default).
    fn file(&self) -> Option<&File> {
        None
    }
}

/// The sub-slice `offset..offset+len` of `data`, if it is in bounds.
pub(crate) fn slice_at(data: &[u8], offset: u64, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    data.get(start..end)
}

/// Copy `buf.len()` bytes at `offset` of `data` into `buf`; past the end is
/// [`io::ErrorKind::UnexpectedEof`].
pub(crate) fn read_from_slice(data: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    match slice_at(data, offset, buf.len()) {
        Some(s) => {
            buf.copy_from_slice(s);
            Ok(())
        }
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "read of {} bytes at {offset} past the end ({} bytes)",
                buf.len(),
                data.len()
            ),
        )),
    }
}

macro_rules! memory_source {
    ($($t:ty),*) => {$(
        impl Source for $t {
            fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
                read_from_slice(self, buf, offset)
            }
            fn size(&self) -> io::Result<u64> {
                Ok(<[u8]>::len(self) as u64)
            }
            fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
                slice_at(self, offset, len)
            }
        }
    )*};
}

memory_source!(Vec<u8>, Box<[u8]>, Arc<[u8]>, &'static [u8]);

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn file(&self) -> Option<&File> {
        Some(self)
    }
}

impl<S: Source + ?Sized> Source for Arc<S> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).bytes(offset, len)
    }
    fn release(&self) {
        (**self).release()
    }
    fn file(&self) -> Option<&File> {
        (**self).file()
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        (**self).bytes(offset, len)
    }
    fn release(&self) {
        (**self).release()
    }
    fn file(&self) -> Option<&File> {
        (**self).file()
    }
}

/// A file opened on first use.
///
/// Useful for blob devices that may not exist when the image is opened (they are fetched
/// later): opening the image never touches the path, and the first read that needs the
/// device opens it. If opening fails the read fails (and the next read tries again).
#[derive(Debug)]
pub struct LazyFile {
    path: PathBuf,
    file: OnceLock<File>,
}

impl LazyFile {
    /// A source for `path`, not opened yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LazyFile {
            path: path.into(),
            file: OnceLock::new(),
        }
    }

    /// The path this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has been opened.
    pub fn is_open(&self) -> bool {
        self.file.get().is_some()
    }

    fn open_file(&self) -> io::Result<&File> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let f = File::open(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        // Another thread may have won the race; either file is fine.
        Ok(self.file.get_or_init(|| f))
    }
}

impl Source for LazyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self.open_file()?, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.open_file()?.metadata()?.len())
    }
    fn file(&self) -> Option<&File> {
        self.open_file().ok()
    }
}

/// Wraps a source and records every read (copying or lending), so that tests can prove
/// which bytes an operation touched.
///
/// ```
/// use erofs_reader::{CountingSource, Source};
/// let src = CountingSource::new(vec![7u8; 100]);
/// let mut buf = [0u8; 10];
/// src.read_exact_at(&mut buf, 20).unwrap();
/// assert_eq!(src.reads(), 1);
/// assert_eq!(src.bytes_read(), 10);
/// assert_eq!(src.ranges(), vec![20..30]);
/// ```
#[derive(Debug)]
pub struct CountingSource<S> {
    inner: S,
    reads: Counter,
    bytes: Counter,
    ranges: Mutex<Vec<Range<u64>>>,
}

impl<S: Source> CountingSource<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        CountingSource {
            inner,
            reads: Counter::new(),
            bytes: Counter::new(),
            ranges: Mutex::new(Vec::new()),
        }
    }

    /// Number of reads so far.
    pub fn reads(&self) -> u64 {
        self.reads.get()
    }

    /// Number of bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes.get()
    }

    /// Every byte range read so far, in order.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        self.ranges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Forget the reads recorded so far.
    pub fn reset(&self) {
        self.reads.reset();
        self.bytes.reset();
        self.ranges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn record(&self, offset: u64, len: usize) {
        self.reads.incr();
        self.bytes.add(len as u64);
        self.ranges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(offset..offset.saturating_add(len as u64));
    }
}

impl<S: Source> Source for CountingSource<S> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.record(offset, buf.len());
        self.inner.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let b = self.inner.bytes(offset, len)?;
        self.record(offset, len);
        Some(b)
    }
    fn release(&self) {
        self.inner.release()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads() {
        let v: Vec<u8> = (0..=255).collect();
        let mut buf = [0u8; 4];
        Source::read_exact_at(&v, &mut buf, 10).unwrap();
        assert_eq!(buf, [10, 11, 12, 13]);
        assert_eq!(
            Source::read_exact_at(&v, &mut buf, 254).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(Source::bytes(&v, u64::MAX, 1).is_none());
        assert_eq!(Source::bytes(&v, 255, 1), Some(&[255u8][..]));
        assert_eq!(Source::size(&v).unwrap(), 256);
        let a: Arc<[u8]> = v.into();
        assert_eq!(Source::bytes(&a, 1, 2), Some(&[1u8, 2][..]));
    }

    #[test]
    fn lazy_file_missing_then_present() {
        let dir = std::env::temp_dir().join(format!("erofs-reader-lazy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("blob");
        let src = LazyFile::new(&p);
        let mut buf = [0u8; 2];
        assert!(src.read_exact_at(&mut buf, 0).is_err());
        assert!(!src.is_open());
        std::fs::write(&p, b"hello").unwrap();
        src.read_exact_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"lo");
        assert!(src.is_open());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counting_records_lends() {
        let c = CountingSource::new(vec![1u8; 8]);
        assert_eq!(c.bytes(2, 3), Some(&[1u8, 1, 1][..]));
        assert_eq!(c.ranges(), vec![2..5]);
        c.reset();
        assert_eq!(c.reads(), 0);
    }
}
