//! Compressed files: the logical → physical map, as the kernel's `fs/erofs/zmap.c` builds it.
//!
//! A compressed inode (`COMPRESSED_FULL` or `COMPRESSED_COMPACT`) is a sequence of
//! *extents*: a run of file bytes that one physical cluster (pcluster) decodes to. Given a
//! file offset, [`Image::compressed_extent`] answers which extent holds it: where the
//! extent starts and ends in the file, where its pcluster lies (device, byte offset,
//! stored length), how it is encoded (LZ4, MicroLZMA, DEFLATE, Zstandard, or stored
//! uncompressed: shifted or interlaced), and whether it is a ztailpacking pcluster inline in
//! the metadata, a fragment in the packed inode, or only partially referenced (dedupe).
//!
//! The rules follow `z_erofs_map_blocks_fo` (lcluster indexes, full and compact) and
//! `z_erofs_map_blocks_ext` (the encoded extents of 48-bit images):
//!
//! * an offset's lcluster is loaded; if it is a HEAD whose cluster offset lies before the
//!   offset, the extent starts there, otherwise the NONHEAD `delta[0]` chain (or the
//!   previous lcluster, for a HEAD that starts after the offset) leads back to the HEAD;
//! * the extent ends at the next HEAD (found with the `delta[1]` lookahead) or at EOF;
//! * a big pcluster's size comes from the CBLKCNT of the lcluster after its HEAD;
//! * the tail extent (the one holding the last byte) is the inline pcluster (after the
//!   indexes, `h_idata_size` bytes) or a fragment of the packed inode, when the map header
//!   says so.
//!
//! Untrusted metadata is bounded throughout: lookback chains must move backwards,
//! lookahead chains forwards, a pcluster may not exceed 1 MiB (`Z_EROFS_PCLUSTER_MAX_SIZE`)
//! and an extent may not decode to more than [`Image::max_extent_size`] bytes
//! (12 MiB by default, the kernel's `Z_EROFS_PCLUSTER_MAX_DSIZE`).

mod compression;
mod extent;
mod map;
mod pcluster;
mod read;

pub(crate) use compression::Compression;
pub(crate) use extent::METABOX_DEVICE;
pub use extent::{CompressedExtent, ExtentSource};
