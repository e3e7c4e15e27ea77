//! Path resolution and the `std::fs`-like path API.
//!
//! Paths are resolved from the image root (a leading `/` is optional). `.` is skipped,
//! `..` goes back to the directory the walk came from (at the root it stays there), the
//! way the kernel walks paths, without trusting on-disk `..` entries. Symlinks are
//! followed (absolute targets restart at the image root) up to
//! [`Limits::max_symlinks`](crate::Limits) times, and no more than
//! [`Limits::max_components`](crate::Limits) components are walked in total.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use erofs_format::Nid;

use crate::data::Extent;
use crate::dir::ReadDir;
use crate::error::{Context, Error, Result};
use crate::image::Image;
use crate::inode::{Inode, Metadata};

/// Anything that names an inode of an image: a path (resolved, following symlinks), a
/// nid, or an [`Inode`] already looked up.
pub trait AsInode {
    /// The inode this names in `image`.
    ///
    /// # Errors
    /// As [`Image::lookup`] / [`Image::inode`].
    fn to_inode(&self, image: &Image) -> Result<Inode>;
}

impl AsInode for Inode {
    fn to_inode(&self, _: &Image) -> Result<Inode> {
        Ok(self.clone())
    }
}

impl AsInode for Nid {
    fn to_inode(&self, image: &Image) -> Result<Inode> {
        image.inode(*self)
    }
}

impl AsInode for Path {
    fn to_inode(&self, image: &Image) -> Result<Inode> {
        image.lookup(self)
    }
}

impl AsInode for PathBuf {
    fn to_inode(&self, image: &Image) -> Result<Inode> {
        image.lookup(self)
    }
}

impl AsInode for str {
    fn to_inode(&self, image: &Image) -> Result<Inode> {
        image.lookup(self)
    }
}

impl AsInode for String {
    fn to_inode(&self, image: &Image) -> Result<Inode> {
        image.lookup(self)
    }
}

impl<T: AsInode + ?Sized> AsInode for &T {
    fn to_inode(&self, image: &Image) -> Result<Inode> {
        (**self).to_inode(image)
    }
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl Image {
    fn resolve(&self, path: &Path, follow_last: bool) -> Result<Inode> {
        let limits = self.inner.limits;
        let root = self.inode(self.root_nid())?;
        // The chain of directories from the root to the current one.
        let mut stack: Vec<Inode> = vec![root];
        let mut pending: VecDeque<Vec<u8>> = split(path.as_os_str().as_bytes());
        let mut walked: Vec<u8> = Vec::new();
        let (mut hops, mut steps) = (0u32, 0u32);
        while let Some(comp) = pending.pop_front() {
            steps += 1;
            if steps > limits.max_components {
                return Err(Error::corrupt(
                    format!(
                        "resolving {} walks more than {} components",
                        path.display(),
                        limits.max_components
                    ),
                    Context::NONE,
                ));
            }
            // The stack is never empty: it starts with the root and `..` keeps it.
            let cur = stack
                .last()
                .cloned()
                .ok_or_else(|| Error::corrupt("empty walk", Context::NONE))?;
            if comp == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                walked.extend_from_slice(b"/..");
                continue;
            }
            walked.push(b'/');
            walked.extend_from_slice(&comp);
            if !cur.metadata().is_dir() {
                return Err(Error::NotADirectory(show(&walked)));
            }
            let Some(entry) = self.lookup_in(&cur, &comp)? else {
                return Err(Error::NotFound(show(&walked)));
            };
            let inode = self.inode(entry.nid())?;
            let last = pending.is_empty();
            if inode.metadata().is_symlink() && (!last || follow_last) {
                hops += 1;
                if hops > limits.max_symlinks {
                    return Err(Error::corrupt(
                        format!(
                            "too many levels of symbolic links resolving {}",
                            path.display()
                        ),
                        Context::nid(inode.nid().0),
                    ));
                }
                let target = self.read_link_inode(&inode)?;
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                for c in split(&target).into_iter().rev() {
                    pending.push_front(c);
                }
                continue;
            }
            stack.push(inode);
        }
        stack
            .pop()
            .ok_or_else(|| Error::corrupt("empty walk", Context::NONE))
    }

    /// The inode at `path`, following symlinks (including a final one).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotADirectory`] for a non-directory in the middle
    /// of the path, [`Error::Corrupt`] (including symlink loops and limits).
    pub fn lookup(&self, path: impl AsRef<Path>) -> Result<Inode> {
        self.resolve(path.as_ref(), true)
    }

    /// The inode at `path`, not following a final symlink.
    ///
    /// # Errors
    /// As [`Image::lookup`].
    pub fn symlink_lookup(&self, path: impl AsRef<Path>) -> Result<Inode> {
        self.resolve(path.as_ref(), false)
    }

    /// Metadata of `path`, following symlinks (like [`std::fs::metadata`]).
    ///
    /// # Errors
    /// As [`Image::lookup`].
    pub fn metadata(&self, path: impl AsRef<Path>) -> Result<Metadata> {
        Ok(self.lookup(path)?.metadata().clone())
    }

    /// Metadata of `path` itself (like [`std::fs::symlink_metadata`]).
    ///
    /// # Errors
    /// As [`Image::lookup`].
    pub fn symlink_metadata(&self, path: impl AsRef<Path>) -> Result<Metadata> {
        Ok(self.symlink_lookup(path)?.metadata().clone())
    }

    /// The entries of the directory at `path` (following symlinks), including `.` and
    /// `..` as stored.
    ///
    /// # Errors
    /// As [`Image::lookup`], [`Error::NotADirectory`].
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Result<ReadDir> {
        let path = path.as_ref();
        let inode = self.lookup(path)?;
        if !inode.metadata().is_dir() {
            return Err(Error::NotADirectory(path.display().to_string()));
        }
        self.read_dir_inode(&inode)
    }

    /// The target of the symlink at `path`.
    ///
    /// # Errors
    /// As [`Image::lookup`], [`Error::NotASymlink`].
    pub fn read_link(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let path = path.as_ref();
        let inode = self.symlink_lookup(path)?;
        if !inode.metadata().is_symlink() {
            return Err(Error::NotASymlink(path.display().to_string()));
        }
        let t = self.read_link_inode(&inode)?;
        Ok(PathBuf::from(OsStr::from_bytes(&t)))
    }

    /// The whole contents of the file at `path` (following symlinks).
    ///
    /// # Errors
    /// As [`Image::lookup`] and [`Image::read_inode`], [`Error::IsADirectory`].
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let path = path.as_ref();
        let inode = self.lookup(path)?;
        if inode.metadata().is_dir() {
            return Err(Error::IsADirectory(path.display().to_string()));
        }
        self.read_inode(&inode)
    }

    /// Read up to `buf.len()` bytes at `offset` of a file named by path, nid or
    /// [`Inode`]; returns the count, 0 at or past the end. Holes read as zeros.
    ///
    /// ```no_run
    /// # fn f(image: &erofs_reader::Image) -> erofs_reader::Result<()> {
    /// let mut buf = [0u8; 16];
    /// let n = image.read_at("/etc/hostname", 0, &mut buf)?;
    /// let inode = image.lookup("/etc/hostname")?; // resolve once, read many times
    /// assert_eq!(image.read_at(&inode, 0, &mut buf)?, n);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Image::lookup`] for a path; [`Error::Unsupported`] for compressed inodes,
    /// [`Error::MissingDevice`] when the data lives on a device that was not provided,
    /// [`Error::Corrupt`], [`Error::Io`].
    pub fn read_at(&self, file: impl AsInode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = file.to_inode(self)?;
        self.read_inode_at(&inode, offset, buf)
    }

    /// The chunk map of a file named by path, nid or [`Inode`] over `range` (clamped to
    /// the file size): where each byte range lives (device index and tag, byte offset,
    /// or a hole), without reading any file data (only the chunk table). Adjacent pieces
    /// that continue each other on the same device are merged.
    ///
    /// # Errors
    /// As [`Image::lookup`] for a path; [`Error::Unsupported`] for compressed inodes;
    /// [`Error::Corrupt`].
    pub fn extents(&self, file: impl AsInode, range: std::ops::Range<u64>) -> Result<Vec<Extent>> {
        let inode = file.to_inode(self)?;
        self.inode_extents(&inode, range)
    }
}

fn split(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}
