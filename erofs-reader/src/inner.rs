//! The state an open image shares between its clones ([`Inner`]): the superblock, the
//! devices and the limits, and the byte-level access every layout module builds on.

use std::borrow::Cow;
use std::io;
use std::path::Path;

use erofs_format::superblock::SuperBlock;

use crate::error::{Context, CorruptKind, Error, Result};
use crate::inode::Inode;
use crate::layout::Compression;
use crate::source::Source;

/// One extra device (blob) of an image, from the device table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device index: 1 for the first extra device (0 is the primary device).
    pub index: u16,
    /// The tag from the device slot, up to its first NUL (e.g. a blob id).
    pub tag: Vec<u8>,
    /// Block count of the device.
    pub blocks: u64,
    /// Where the device's blocks appear in the unified address space (0 = not mapped).
    pub mapped_blkaddr: u64,
    /// Whether a source was provided for it.
    pub present: bool,
}

impl DeviceInfo {
    /// The tag as text (lossy), as used for file names in a blob directory.
    pub fn tag_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.tag)
    }
}

/// A blob-device provider: given the image being built (superblock and device table
/// read) and its blob directory, append a source for each device past those in `devices`
/// that it recognises, or leave `devices` alone. `ImageBuilder::build` calls the
/// providers of [`crate::BLOB_DEVICE_PROVIDERS`] in order before it falls back to plain
/// files named by device tag.
pub(crate) type BlobDeviceProvider =
    fn(image: &Inner, dir: &Path, devices: &mut Vec<Box<dyn Source>>) -> Result<()>;

/// A long xattr name prefix from the prefix table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LongPrefix {
    pub(crate) base_index: u8,
    pub(crate) infix: Vec<u8>,
}

pub(crate) struct Inner {
    pub(crate) primary: Box<dyn Source>,
    pub(crate) primary_len: u64,
    pub(crate) sb: SuperBlock,
    pub(crate) blkszbits: u8,
    pub(crate) devices: Vec<DeviceInfo>,
    pub(crate) sources: Vec<Option<Box<dyn Source>>>,
    pub(crate) flat_devices: bool,
    pub(crate) prefixes: Vec<LongPrefix>,
    /// Why the long prefixes could not be loaded, if they live somewhere this reader
    /// cannot read yet (a compressed packed inode); reported when one is used.
    pub(crate) prefixes_unsupported: Option<String>,
    pub(crate) limits: Limits,
    /// Compression configuration, limits and the decoded-pcluster cache (`layout/zmap/`).
    pub(crate) compression: Compression,
    /// The metabox inode, with `METABOX` (`layout/meta.rs`).
    pub(crate) metabox: Option<Inode>,
}

/// Limits that keep hostile images from making the reader loop or recurse forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Symbolic links followed while resolving one path (Linux: 40).
    pub max_symlinks: u32,
    /// Path components walked while resolving one path, across symlinks.
    pub max_components: u32,
    /// Directory depth a whole-tree walk (the `erofs` tool's `fsck` and `extract`) descends.
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_symlinks: 40,
            max_components: 4096,
            max_depth: 1024,
        }
    }
}

impl Inner {
    pub(crate) fn block_size(&self) -> u64 {
        1u64 << self.blkszbits
    }

    /// `len` bytes at `offset` of the primary device, lent when the source can.
    pub(crate) fn read_primary(
        &self,
        offset: u64,
        len: usize,
        ctx: Context,
    ) -> Result<Cow<'_, [u8]>> {
        let end = offset.checked_add(len as u64).ok_or_else(|| {
            Error::corrupt_as(CorruptKind::OutOfBounds, "offset overflows", ctx.at(offset))
        })?;
        if end > self.primary_len {
            return Err(Error::corrupt_as(
                CorruptKind::OutOfBounds,
                format!(
                    "read of {len} bytes at {offset} past the end of the primary device ({} bytes)",
                    self.primary_len
                ),
                ctx.at(offset),
            ));
        }
        if let Some(b) = self.primary.bytes(offset, len) {
            return Ok(Cow::Borrowed(b));
        }
        let mut v = vec![0u8; len];
        self.primary
            .read_exact_at(&mut v, offset)
            .map_err(|e| io_err(0, e, ctx.at(offset)))?;
        Ok(Cow::Owned(v))
    }

    /// The source for device `index` (0 = primary) and the byte offset on it, applying
    /// flatdev mode.
    pub(crate) fn device_for(
        &self,
        index: u16,
        offset: u64,
        ctx: Context,
    ) -> Result<(&dyn Source, u64)> {
        if index == 0 {
            return Ok((&*self.primary, offset));
        }
        // index >= 1 here: extra devices are numbered from 1.
        let i = usize::from(index.saturating_sub(1));
        let Some(dev) = self.devices.get(i) else {
            return Err(Error::corrupt_as(
                CorruptKind::DeviceTable,
                format!("device {index} is not in the device table"),
                ctx.device(index),
            ));
        };
        if self.flat_devices {
            let base = dev
                .mapped_blkaddr
                .checked_mul(self.block_size())
                .and_then(|b| b.checked_add(offset))
                .ok_or_else(|| {
                    Error::corrupt_as(
                        CorruptKind::OutOfBounds,
                        "device offset overflows",
                        ctx.device(index),
                    )
                })?;
            return Ok((&*self.primary, base));
        }
        match self.sources.get(i).and_then(|s| s.as_deref()) {
            Some(s) => Ok((s, offset)),
            None => Err(Error::MissingDevice {
                index,
                tag: dev.tag_str().into_owned(),
            }),
        }
    }
}

/// Map a source error: running off the end of a device is corruption (the image points
/// past it), anything else is I/O.
pub(crate) fn io_err(device: u16, e: io::Error, ctx: Context) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::corrupt_as(
            CorruptKind::OutOfBounds,
            format!("read past the end of the device: {e}"),
            ctx.device(device),
        )
    } else {
        Error::Io { device, source: e }
    }
}
