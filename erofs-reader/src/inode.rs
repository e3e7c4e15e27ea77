//! Decoded inodes and their metadata.

use std::fmt;

use erofs_format::Nid;
use erofs_format::inode::{DataLayout, FileType, Inode as RawInode, InodeData};

/// What `stat` tells about an inode: type, mode, owner, size, times, links.
///
/// Decoded from one 32- or 64-byte on-disk inode; holds no reference to the image.
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata {
    raw: RawInode,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("nid", &self.raw.nid.0)
            .field("file_type", &self.raw.file_type)
            .field("mode", &format_args!("{:o}", self.raw.mode))
            .field("uid", &self.raw.uid)
            .field("gid", &self.raw.gid)
            .field("size", &self.raw.size)
            .field("nlink", &self.raw.nlink)
            .field("mtime", &self.mtime())
            .field("mtime_nsec", &self.raw.mtime_nsec)
            .field("layout", &self.raw.layout)
            .finish()
    }
}

impl Metadata {
    /// The inode's nid (also the inode number the kernel reports, except on images with
    /// a metabox: see [`Image::ino`](crate::Image::ino)).
    pub fn nid(&self) -> Nid {
        self.raw.nid
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        self.raw.file_type
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.raw.file_type == FileType::Directory
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.raw.file_type == FileType::Regular
    }

    /// Whether this is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.raw.file_type == FileType::Symlink
    }

    /// The full `st_mode`: type and permission bits.
    pub fn mode(&self) -> u16 {
        self.raw.mode
    }

    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub fn permissions(&self) -> u16 {
        self.raw.permissions()
    }

    /// Owner user id.
    pub fn uid(&self) -> u32 {
        self.raw.uid
    }

    /// Owner group id.
    pub fn gid(&self) -> u32 {
        self.raw.gid
    }

    /// Size in bytes (for a symlink: the length of its target).
    pub fn len(&self) -> u64 {
        self.raw.size
    }

    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.raw.size == 0
    }

    /// Link count.
    pub fn nlink(&self) -> u32 {
        self.raw.nlink
    }

    /// Modification time in seconds since the epoch (signed, as the kernel reads the
    /// 64-bit field). Compact inodes carry the image's build time.
    pub fn mtime(&self) -> i64 {
        self.raw.mtime as i64
    }

    /// Nanoseconds of the modification time.
    pub fn mtime_nsec(&self) -> u32 {
        self.raw.mtime_nsec
    }

    /// The raw device number of a character or block device (Linux "new" encoding), 0 for
    /// everything else.
    pub fn rdev(&self) -> u32 {
        match self.raw.data {
            InodeData::Device { rdev } => rdev,
            _ => 0,
        }
    }

    /// Major device number of a device inode.
    pub fn rdev_major(&self) -> u32 {
        self.raw.data.rdev_major_minor().map_or(0, |(m, _)| m)
    }

    /// Minor device number of a device inode.
    pub fn rdev_minor(&self) -> u32 {
        self.raw.data.rdev_major_minor().map_or(0, |(_, m)| m)
    }

    /// How the data is stored.
    pub fn layout(&self) -> DataLayout {
        self.raw.layout
    }

    /// On-disk inode size: 32 (compact) or 64 (extended).
    pub fn inode_size(&self) -> u32 {
        self.raw.inode_size()
    }

    /// Size of the inline xattr area in bytes.
    pub fn xattr_size(&self) -> u32 {
        self.raw.xattr_size()
    }

    /// `st_blocks` as the kernel computes it (512-byte units).
    pub fn blocks(&self, block_size: u64) -> u64 {
        match self.raw.data {
            InodeData::Compressed { blocks } => blocks.saturating_mul(block_size / 512),
            _ => self
                .raw
                .size
                .div_ceil(block_size)
                .saturating_mul(block_size / 512),
        }
    }

    /// The decoded on-disk inode.
    pub fn raw(&self) -> &RawInode {
        &self.raw
    }
}

/// An inode of an image: its nid and decoded metadata. Cheap to clone; holds no
/// reference to the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    md: Metadata,
}

impl Inode {
    /// The nid.
    pub fn nid(&self) -> Nid {
        self.md.raw.nid
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.md
    }

    pub(crate) fn raw(&self) -> &RawInode {
        &self.md.raw
    }

    /// An inode from its decoded on-disk form.
    pub(crate) fn from_raw(raw: RawInode) -> Self {
        Inode {
            md: Metadata { raw },
        }
    }
}
