//! Directories: listing and name lookup.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use erofs_format::Nid;
use erofs_format::dirent::DirBlock;
use erofs_format::inode::FileType;

use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::Inner;
use crate::inode::Inode;

/// One entry of a directory, as stored in it (including `.` and `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    nid: Nid,
    file_type: FileType,
    name: Vec<u8>,
}

impl DirEntry {
    /// The name as raw bytes (1 to 255 bytes, no `/` or NUL in a sane image).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The name as an [`OsStr`].
    pub fn file_name(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }

    /// The entry's inode.
    pub fn nid(&self) -> Nid {
        self.nid
    }

    /// The file type recorded in the directory.
    pub fn file_type(&self) -> FileType {
        self.file_type
    }
}

/// Iterator over the entries of a directory, block by block, in on-disk (sorted) order.
/// Returned by [`Image::read_dir`](crate::Image::read_dir). After an error it ends.
pub struct ReadDir {
    inner: Arc<Inner>,
    dir: Inode,
    next_block: u64,
    blocks: u64,
    pending: std::vec::IntoIter<DirEntry>,
    failed: bool,
}

impl std::fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadDir")
            .field("dir", &self.dir)
            .field("next_block", &self.next_block)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

impl Iterator for ReadDir {
    type Item = Result<DirEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.pending.next() {
                return Some(Ok(e));
            }
            if self.failed || self.next_block >= self.blocks {
                return None;
            }
            let i = self.next_block;
            // i < blocks (checked above): cannot saturate.
            self.next_block = i.saturating_add(1);
            match self.inner.dir_block_entries(&self.dir, i) {
                Ok(v) => self.pending = v.into_iter(),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Inner {
    fn check_dir(&self, dir: &Inode) -> Result<()> {
        if dir.metadata().is_dir() {
            Ok(())
        } else {
            Err(Error::NotADirectory(format!("nid {}", dir.nid())))
        }
    }

    fn dir_blocks(&self, dir: &Inode) -> u64 {
        dir.metadata().len().div_ceil(self.block_size())
    }

    /// Parse directory block `i` of `dir` and hand the view to `f`.
    fn with_dir_block<T>(
        &self,
        dir: &Inode,
        i: u64,
        f: impl FnOnce(DirBlock<'_>) -> Result<T>,
    ) -> Result<T> {
        let bs = self.block_size();
        let start = i.checked_mul(bs).ok_or_else(|| {
            Error::corrupt_as(
                CorruptKind::Directory,
                "directory offset overflows",
                Context::nid(dir.nid().0),
            )
        })?;
        let size = dir.metadata().len();
        let len = size
            .checked_sub(start)
            .and_then(|rest| usize::try_from(rest.min(bs)).ok())
            .ok_or_else(|| {
                Error::corrupt_as(
                    CorruptKind::Directory,
                    format!("directory block {i} beyond the directory's size"),
                    Context::nid(dir.nid().0),
                )
            })?;
        let bytes = self.data_range(dir, start, len)?;
        let block = DirBlock::parse(&bytes).map_err(|e| {
            Error::corrupt_as(
                CorruptKind::Directory,
                format!("directory block {i}: {e}"),
                Context::nid(dir.nid().0).at(start),
            )
        })?;
        f(block)
    }

    fn dir_block_entries(&self, dir: &Inode, i: u64) -> Result<Vec<DirEntry>> {
        let entries = self.with_dir_block(dir, i, |block| {
            Ok(block
                .iter()
                .map(|e| (e.nid, e.file_type(), e.name.to_vec()))
                .collect::<Vec<_>>())
        })?;
        entries
            .into_iter()
            .map(|(nid, ft, name)| {
                let file_type = match ft {
                    Some(ft) => ft,
                    // Unknown type in the dirent: ask the inode.
                    None => self.inode(nid)?.metadata().file_type(),
                };
                Ok(DirEntry {
                    nid,
                    file_type,
                    name,
                })
            })
            .collect()
    }

    /// See [`Image::read_dir_inode`](crate::Image::read_dir_inode).
    pub(crate) fn read_dir_inode(self: &Arc<Self>, dir: &Inode) -> Result<ReadDir> {
        self.check_dir(dir)?;
        Ok(ReadDir {
            inner: Arc::clone(self),
            dir: dir.clone(),
            next_block: 0,
            blocks: self.dir_blocks(dir),
            pending: Vec::new().into_iter(),
            failed: false,
        })
    }

    /// See [`Image::lookup_in`](crate::Image::lookup_in).
    pub(crate) fn lookup_in(&self, dir: &Inode, name: &[u8]) -> Result<Option<DirEntry>> {
        self.check_dir(dir)?;
        if name.is_empty() || name.len() > 255 {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u64, self.dir_blocks(dir));
        while lo < hi {
            let mid = lo.midpoint(hi);
            let found = self.with_dir_block(dir, mid, |block| {
                if name < block.first_name() {
                    return Ok(Err(Ordering::Greater));
                }
                if name > block.last_name() {
                    return Ok(Err(Ordering::Less));
                }
                Ok(Ok(block
                    .lookup(name)
                    .map(|e| (e.nid, e.file_type(), e.name.to_vec()))))
            })?;
            match found {
                Err(Ordering::Greater) => hi = mid,
                // mid < hi, so this cannot saturate.
                Err(_) => lo = mid.saturating_add(1),
                Ok(None) => return Ok(None),
                Ok(Some((nid, ft, name))) => {
                    let file_type = match ft {
                        Some(ft) => ft,
                        None => self.inode(nid)?.metadata().file_type(),
                    };
                    return Ok(Some(DirEntry {
                        nid,
                        file_type,
                        name,
                    }));
                }
            }
        }
        Ok(None)
    }
}
