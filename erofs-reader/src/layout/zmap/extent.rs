//! What the map answers: one extent of a compressed file and where its bytes are.

use crate::decode::Encoding;
use crate::error::{Context, CorruptKind, Error, Result};

/// Where the bytes of a [`CompressedExtent`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentSource {
    /// Nothing stored: the extent reads as zeros (an encoded extent with no pcluster).
    Hole,
    /// A physical cluster.
    Pcluster {
        /// Device index: 0 = primary device, k = k-th extra device; `u16::MAX` for the
        /// inline pcluster of an inode in the metabox, whose offset is then in the
        /// metabox inode's data.
        device: u16,
        /// Byte offset of the pcluster on that device.
        offset: u64,
        /// Stored (compressed) length in bytes.
        len: u64,
        /// How the stored bytes decode.
        encoding: Encoding,
        /// A ztailpacking pcluster, stored inline in the metadata right after the
        /// lcluster indexes (`EROFS_MAP_META`).
        inline: bool,
    },
    /// A fragment of the packed inode: the extent's first byte is this byte of the
    /// packed inode's data, and the rest follows contiguously.
    Fragment {
        /// Byte offset in the packed inode.
        offset: u64,
    },
}

/// One extent of a compressed file: the file bytes `file_offset..file_offset + len`
/// come from one pcluster (or fragment, or hole). See [`Image::compressed_extent`](crate::Image::compressed_extent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedExtent {
    /// Offset in the file of the extent's first byte.
    pub file_offset: u64,
    /// Length of the extent in the file.
    pub len: u64,
    /// Where the bytes are stored.
    pub source: ExtentSource,
    /// The pcluster decodes to more than this extent (it is shared with a longer
    /// extent by dedupe, `EROFS_MAP_PARTIAL_REF`): only a prefix is decoded.
    pub partial_ref: bool,
    /// The index puts the extent's end past EOF (the file ends inside it): decoding
    /// stops at EOF.
    pub(crate) past_eof: bool,
}

impl CompressedExtent {
    /// `(pos - file_offset, bytes of the extent from pos)` for a `pos` the extent holds
    /// (as `ZInode::map` checks); `None` otherwise.
    pub(crate) fn split_at(&self, pos: u64) -> Option<(u64, u64)> {
        let within = pos.checked_sub(self.file_offset)?;
        let rest = self.len.checked_sub(within).filter(|&r| r > 0)?;
        Some((within, rest))
    }

    /// Whether decoding may stop once `len` bytes are out (a partially referenced
    /// pcluster, or one whose recorded end lies past EOF), rather than having to decode
    /// to exactly `len` bytes.
    pub(crate) fn partial_decode(&self) -> bool {
        self.partial_ref || self.past_eof
    }

    /// The extent's pcluster as `(device, offset, stored length, encoding)`; an extent
    /// without one (a hole, a fragment) cannot be decoded.
    pub(crate) fn pcluster(&self, ctx: Context) -> Result<(u16, u64, u64, Encoding)> {
        match self.source {
            ExtentSource::Pcluster {
                device,
                offset,
                len,
                encoding,
                ..
            } => Ok((device, offset, len, encoding)),
            _ => Err(Error::corrupt_as(
                CorruptKind::CompressedMap,
                "decode of an extent without a pcluster",
                ctx,
            )),
        }
    }
}

/// The device index that compressed extents of inodes in the metabox report for their
/// ztailpacking (inline) pcluster: its offset is in the metabox inode's data.
pub(crate) const METABOX_DEVICE: u16 = u16::MAX;
