//! What a data map answers: byte ranges of a file and where they live.

/// Where a byte range of a file lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentTarget {
    /// Not stored: reads as zeros (a null chunk, or a flat file without blocks).
    Hole,
    /// Stored in the metabox inode's data at this byte offset: the inline tail of an
    /// inode that lives in the metabox (`mkfs.erofs -m`).
    Metabox {
        /// Byte offset in the metabox inode's data.
        offset: u64,
    },
    /// Stored on a device.
    Device {
        /// Device index: 0 = primary device, k = k-th extra device.
        index: u16,
        /// The device's tag (empty for the primary device).
        tag: Vec<u8>,
        /// Byte offset on that device.
        offset: u64,
    },
}

/// A byte range of a file and where it lives. See [`Image::extents`](crate::Image::extents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Offset in the file.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the bytes are.
    pub target: ExtentTarget,
}

/// A piece of file data handed to the visitor of [`Image::for_each_piece`](crate::Image::for_each_piece).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes, lent from the source when it can (memory, mmap), else copied once.
    Data(&'a [u8]),
    /// This many zero bytes (a hole).
    Zeros(u64),
}
