//! A read-only memory-mapped file as a [`Source`]: the zero-copy backend.
//!
//! This module holds the crate's only `unsafe` block.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::Path;

use memmap2::Mmap;

use crate::source::{Source, read_from_slice, slice_at};

/// A file mapped read-only into memory. Reads are plain memory copies and
/// [`Source::bytes`] lends slices of the map, so a whole-image walk needs no system
/// calls once pages are resident.
///
/// The file must not be truncated or modified while mapped (see [`MmapSource::open`]).
#[derive(Debug)]
pub struct MmapSource {
    map: Mmap,
    /// The mapped file, kept open for [`Source::file`].
    file: File,
}

impl MmapSource {
    /// Map the file at `path`.
    ///
    /// # Errors
    /// Opening or mapping the file fails.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::from_file(&File::open(path)?)
    }

    /// Map an open file.
    ///
    /// Shrinking or rewriting the file while it is mapped is not allowed: a read of a
    /// page past a new end raises `SIGBUS`, and changed bytes appear in slices already
    /// handed out. Image files are immutable in practice; do not map files that others
    /// write to.
    ///
    /// # Errors
    /// Mapping fails (e.g. `file` is not a regular file).
    pub fn from_file(file: &File) -> io::Result<Self> {
        // SAFETY: `Mmap::map` is unsafe because the mapped file could change underneath
        // the map, which would break the immutability of the `&[u8]` views we lend. The
        // map is read-only (PROT_READ, MAP_SHARED) so this process never writes it, and
        // the documented contract of this constructor is that the caller maps files
        // nobody modifies or truncates while the map lives (EROFS images are immutable
        // by design). Bytes read from the map are treated as untrusted input everywhere.
        let map = unsafe { Mmap::map(file)? };
        Ok(MmapSource {
            map,
            file: file.try_clone()?,
        })
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }
}

impl Source for MmapSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_from_slice(&self.map, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.map.len() as u64)
    }

    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        slice_at(&self.map, offset, len)
    }

    fn file(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn release(&self) {
        // SAFETY: MADV_DONTNEED is "unchecked" in memmap2 because on private or written
        // mappings it can change what borrowed pages contain. This map is a read-only
        // shared file mapping (PROT_READ, MAP_SHARED) that is never written: dropping its
        // page table entries only makes later accesses fault the same file pages back in
        // from the page cache, so slices lent earlier keep their contents. The file itself
        // must not change while mapped, which `from_file` already requires.
        let r = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
        if let Err(e) = r {
            log::debug!("madvise(DONTNEED) failed: {e}");
        }
    }
}
