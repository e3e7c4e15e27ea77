//! Where RAFS serving gets stored bytes: a [`BlobStore`] maps a name (a bootstrap's file name,
//! a blob id, a separate meta blob's name) to a [`StoredBlob`], a [`Source`] of the bytes as
//! they are stored (compressed chunks back to back, a bootstrap as it is).
//!
//! [`LocalDirStore`] keeps them as files in one directory. A remote store (an OCI registry, an
//! object store, a peer) implements the same two traits; [`crate::rafs::RafsServer`] then
//! serves its RAFS v6 images behind either kernel transport with no other change.
//!
//! # Batches
//!
//! A READ window, a fill ahead of a sequential reader or a prefetch chunk needs the stored
//! bytes of several chunks at once. The RAFS server asks for all of them in one
//! [`StoredBlob::read_ranges`] call before decoding, so a store that pays a round trip per
//! request can merge adjacent ranges and fetch the rest in parallel. The default reads the
//! ranges one after the other with [`Source::read_exact_at`], which is right for local files.
//!
//! # Errors
//!
//! A store returns [`io::Error`]s. Every byte a call returns must be the stored byte: a range
//! that cannot be read whole (a short body, a digest mismatch, a dropped connection) is an
//! error, never short or guessed data. The engine writes nothing for a failed fill, so the
//! reader gets `EIO` (a failed cachefiles READ, `FAN_DENY` with `EIO` on fanotify) and a later
//! read asks again.
//!
//! ```
//! use std::io;
//! use std::sync::Arc;
//! use erofs_reader::Source;
//! use ondemand::{BlobStore, RangeRead, StoredBlob};
//!
//! /// Blobs held in memory, by name.
//! struct Memory(Vec<(Vec<u8>, Arc<Vec<u8>>)>);
//!
//! struct Bytes(Arc<Vec<u8>>);
//!
//! impl Source for Bytes {
//!     fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
//!         let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
//!         let src = start.checked_add(buf.len()).and_then(|end| self.0.get(start..end));
//!         buf.copy_from_slice(src.ok_or(io::ErrorKind::UnexpectedEof)?);
//!         Ok(())
//!     }
//!     fn size(&self) -> io::Result<u64> {
//!         Ok(self.0.len() as u64)
//!     }
//! }
//!
//! // Serial batches are fine in memory: keep the default `read_ranges`.
//! impl StoredBlob for Bytes {}
//!
//! impl BlobStore for Memory {
//!     fn open(&self, name: &[u8]) -> io::Result<Arc<dyn StoredBlob>> {
//!         let (_, bytes) = self.0.iter().find(|(n, _)| n == name).ok_or(io::ErrorKind::NotFound)?;
//!         Ok(Arc::new(Bytes(bytes.clone())))
//!     }
//! }
//!
//! let store = Memory(vec![(b"blob".to_vec(), Arc::new((0..=255).collect()))]);
//! let blob = store.open(b"blob")?;
//! let (mut a, mut b) = ([0u8; 2], [0u8; 3]);
//! blob.read_ranges(&mut [RangeRead { offset: 10, buf: &mut a }, RangeRead { offset: 250, buf: &mut b }])?;
//! assert_eq!((a, b), ([10, 11], [250, 251, 252]));
//! // Past the end: an error, not short data.
//! assert!(blob.read_ranges(&mut [RangeRead { offset: 255, buf: &mut b }]).is_err());
//! // A RAFS server over this store: `ondemand::rafs::RafsServer::with_store(store)`.
//! # Ok::<(), io::Error>(())
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use erofs_reader::Source;

/// One range of a batch: fill all of `buf` with the bytes at `offset` (the stored bytes for
/// [`StoredBlob::read_ranges`], the object's bytes for
/// [`crate::OnDemandServer::fill_ranges`]).
#[derive(Debug)]
pub struct RangeRead<'a> {
    /// First byte.
    pub offset: u64,
    /// Where the bytes go; its length is the range's length.
    pub buf: &'a mut [u8],
}

/// The stored bytes of one blob, as a [`BlobStore`] opened it.
pub trait StoredBlob: Source {
    /// Fill every range of `reads` (in any order, possibly in parallel; the ranges may be
    /// adjacent but do not overlap). The default reads them one by one with
    /// [`Source::read_exact_at`].
    ///
    /// # Errors
    ///
    /// Any range that cannot be read whole fails the call (the contents of every `buf` are
    /// then unspecified and are not used).
    fn read_ranges(&self, reads: &mut [RangeRead<'_>]) -> io::Result<()> {
        for r in reads.iter_mut() {
            self.read_exact_at(r.buf, r.offset)?;
        }
        Ok(())
    }

    /// Whether the store's [`read_ranges_arriving`](Self::read_ranges_arriving) hands
    /// ranges over while later ones are still arriving (a store that waits on a network).
    /// The RAFS server then decodes each chunk of a READ window as soon as its stored bytes
    /// are in and lets the engine write it, instead of fetching the whole window first.
    /// Default `false` (local files: one read, then the decoding).
    fn streams(&self) -> bool {
        false
    }

    /// [`read_ranges`](Self::read_ranges), calling `arrived(offset, bytes)` with each range
    /// or part of one as soon as its bytes are in, possibly while later ranges are still
    /// arriving and from another thread; a part may be handed over twice (the same bytes,
    /// after a retry). A store that hands a range over in parts as they are read (a prefix at
    /// a time, as `oci_lazy::Blob::read_ranges_arriving` does) lets the RAFS server decode
    /// a chunk's first bytes (zstd and raw chunks) before its last arrive; parts may come in
    /// any order. When this returns `Ok`, every range was handed over and every `buf` is
    /// filled. The default calls [`read_ranges`](Self::read_ranges), then `arrived` for each
    /// range in order.
    ///
    /// # Errors
    ///
    /// As [`read_ranges`](Self::read_ranges); what was handed over before an error is the
    /// stored bytes.
    fn read_ranges_arriving(
        &self,
        reads: &mut [RangeRead<'_>],
        arrived: &(dyn Fn(u64, &[u8]) + Sync),
    ) -> io::Result<()> {
        self.read_ranges(reads)?;
        for r in reads.iter() {
            arrived(r.offset, r.buf);
        }
        Ok(())
    }

    /// When the stored bytes last changed, if the store knows: the RAFS server reads a
    /// bootstrap again when this changes. Default `None` (stored bytes never change, as for
    /// content-addressed blobs).
    fn modified(&self) -> Option<SystemTime> {
        None
    }
}

/// Stored blobs by name.
pub trait BlobStore: Send + Sync {
    /// The stored bytes of `name` (a bootstrap's name, a blob id, a meta blob's name). The
    /// name comes from the kernel or an image: check it before using it as a path (see
    /// [`erofs_reader::is_plain_name`]).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] for a name the store does not have; `EINVAL` for a name it
    /// refuses; the store's own errors.
    fn open(&self, name: &[u8]) -> io::Result<Arc<dyn StoredBlob>>;

    /// Names worth examining for RAFS bootstraps, when a blob is opened before any bootstrap
    /// that lists it (a restarted daemon). The default lists nothing: such a store must have
    /// the bootstrap opened first.
    ///
    /// # Errors
    ///
    /// The store's errors (the server then finds nothing).
    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(Vec::new())
    }

    /// Write the store's own metrics (Prometheus text, such as a remote store's request
    /// counters) into `out`, for the daemon's metrics file. The default writes nothing.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

impl<B: BlobStore + ?Sized> BlobStore for Arc<B> {
    fn open(&self, name: &[u8]) -> io::Result<Arc<dyn StoredBlob>> {
        (**self).open(name)
    }

    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        (**self).names()
    }

    fn render_metrics(&self, out: &mut String) {
        (**self).render_metrics(out)
    }
}

/// Most directory entries [`LocalDirStore::names`] lists.
const MAX_NAMES: usize = 100_000;

/// Blobs stored as the files of one directory, named by blob id (or any plain file name).
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    dir: PathBuf,
}

impl LocalDirStore {
    /// The files of `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalDirStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `name`, if it is a plain file name.
    ///
    /// # Errors
    ///
    /// `EINVAL` (as an OS error) for a name that is empty, `.`, `..`, or holds `/` or NUL.
    pub fn path_for(&self, name: &[u8]) -> io::Result<PathBuf> {
        if erofs_reader::is_plain_name(name) {
            Ok(self.dir.join(OsStr::from_bytes(name)))
        } else {
            log::warn!(
                "refusing blob name {:?}: not a plain file name",
                name.escape_ascii().to_string()
            );
            Err(io::Error::from_raw_os_error(nix::libc::EINVAL))
        }
    }
}

/// A file of a [`LocalDirStore`].
#[derive(Debug)]
struct LocalBlob {
    file: File,
    modified: Option<SystemTime>,
}

impl Source for LocalBlob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        Source::read_exact_at(&self.file, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Source::size(&self.file)
    }
}

impl StoredBlob for LocalBlob {
    fn modified(&self) -> Option<SystemTime> {
        self.modified
    }
}

impl BlobStore for LocalDirStore {
    fn open(&self, name: &[u8]) -> io::Result<Arc<dyn StoredBlob>> {
        let path = self.path_for(name)?;
        let file = File::open(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("opening blob {}: {e}", path.display()))
        })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            log::warn!("blob {} is not a regular file", path.display());
            return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
        }
        Ok(Arc::new(LocalBlob {
            file,
            modified: meta.modified().ok(),
        }))
    }

    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)?.flatten().take(MAX_NAMES) {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                out.push(e.file_name().as_bytes().to_vec());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_files_by_plain_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blob"), b"0123456789").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let store = LocalDirStore::new(dir.path());
        let blob = store.open(b"blob").unwrap();
        assert_eq!(blob.size().unwrap(), 10);
        assert!(blob.modified().is_some());
        let (mut a, mut b) = ([0u8; 3], [0u8; 2]);
        blob.read_ranges(&mut [
            RangeRead {
                offset: 7,
                buf: &mut a,
            },
            RangeRead {
                offset: 0,
                buf: &mut b,
            },
        ])
        .unwrap();
        assert_eq!((&a, &b), (b"789", b"01"));
        // Short: an error.
        let mut c = [0u8; 4];
        assert!(
            blob.read_ranges(&mut [RangeRead {
                offset: 8,
                buf: &mut c
            }])
            .is_err()
        );
        for bad in [&b"../etc"[..], b"", b".", b"a/b"] {
            assert_eq!(
                store.open(bad).err().unwrap().raw_os_error(),
                Some(nix::libc::EINVAL)
            );
        }
        assert_eq!(
            store.open(b"missing").err().unwrap().kind(),
            io::ErrorKind::NotFound
        );
        assert!(store.open(b"sub").is_err());
        assert_eq!(store.names().unwrap(), [b"blob".to_vec()]);
    }
}
