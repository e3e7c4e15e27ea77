//! Read EROFS images (and Nydus RAFS v6 bootstraps) the way the Linux kernel does: resolve
//! paths, list directories, read metadata, symlinks, extended attributes and file data over
//! a primary device plus extra blob devices, and answer "where does byte range X of this
//! file live" (the chunk map) without reading the data.
//!
//! This crate sits on [`erofs_format`], which describes the on-disk structures; this crate
//! does the I/O, the address arithmetic and the checks. The API follows `std::fs`:
//! [`Image::metadata`], [`Image::read_dir`], [`Image::read_link`], [`Image::read`], plus
//! [`Image::read_at`], [`Image::xattrs`] and [`Image::extents`].
//!
//! ```
//! use erofs_reader::{Image, Error};
//! # fn main() -> Result<(), Error> {
//! # let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny.erofs")).unwrap();
//! // Any `Source` works: a memory map (`Image::open`), a `File`, bytes in memory...
//! let image = Image::from_source(bytes)?;
//! let md = image.metadata("/hello.txt")?;
//! assert!(md.is_file());
//! assert_eq!(image.read("/hello.txt")?, b"hello, erofs\n");
//! for entry in image.read_dir("/")? {
//!     let entry = entry?;
//!     println!("{:?} {:?}", entry.file_name(), entry.file_type());
//! }
//! # Ok(()) }
//! ```
//!
//! # Sources and devices
//!
//! Bytes come from [`Source`]s: positional, `&self` reads that may lend slices (memory,
//! [`MmapSource`]) or copy ([`std::fs::File`]). An image with a device table needs one
//! source per extra device, given in device-table order ([`ImageBuilder::device`]) or
//! found by tag in a directory ([`ImageBuilder::blob_dir`]). A device that is not given
//! is only an error when its data is read ([`Error::MissingDevice`]).
//! [`CountingSource`] records reads, to check that an operation is lazy.
//!
//! # Errors
//!
//! Every fallible call returns [`Error`]: `std::fs`-like kinds (`NotFound`,
//! `NotADirectory`, ...), [`Error::Io`] from a source, [`Error::Corrupt`] with a
//! [`Context`] (nid, device, block, offset) when the image is damaged or hostile, and
//! [`Error::Unsupported`] for what this reader does not read (a compression algorithm
//! whose feature is off, extents larger than
//! [`Image::max_extent_size`]). [`Error`] converts into [`std::io::Error`].
//!
//! Untrusted images never cause a panic, an unbounded allocation or an endless loop:
//! every offset is computed with checked arithmetic and bounded by the device size,
//! nids must point inside the primary device, symlink resolution and directory depth are
//! bounded by [`Limits`].
//!
//! # Panics
//!
//! No function panics on any image content.
//!
//! # Compressed files
//!
//! Compressed inodes (lz4/lz4hc, MicroLZMA, DEFLATE, Zstandard; full and compact
//! indexes, big pclusters, ztailpacking, fragments, dedupe, 48-bit encoded extents,
//! compressed directories) read like any other: [`Image::read_at`] decodes only the
//! pclusters a range touches, through a bounded cache of decoded pclusters
//! ([`Image::set_pcluster_cache_capacity`]); [`Image::compressed_extents`] shows the map.
//! A pcluster that does not decode to exactly its extent's length is [`Error::Corrupt`].
//!
//! # Features
//!
//! * `lz4`, `lzma`, `libdeflate`, `zstd` (default): the decompressors (`lz4_flex`; liblzma;
//!   libdeflate for whole extents with `flate2` on `zlib-rs` for the rest; libzstd).
//!   `deflate` is DEFLATE with `flate2` alone (pure Rust; `libdeflate` turns it on). Without
//!   one, that algorithm's data is [`Error::Unsupported`].
//! * `pure-rust`: the decompressors that need no C library (`lz4`, `deflate`); with
//!   `default-features = false` it builds for `x86_64-unknown-linux-musl`.
//! * `cli`: the `erofs` command-line tool (`sb`, `ls`, `stat`, `cat`, `xattrs`,
//!   `chunks`, `extract`, `fsck`).
//!
//! # Safety
//!
//! The only `unsafe` code is the memory map in [`MmapSource`]; a mapped image file must
//! not be modified or truncated while the map lives.

#![cfg_attr(
    not(test),
    warn(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)
)]

mod builder;
mod counter;
mod decode;
mod dir;
mod error;
mod image;
mod inner;
mod inode;
mod layout;
mod mmap;
mod name;
pub mod nydus;
mod path;
mod source;
mod xattr;

pub use builder::ImageBuilder;
pub use counter::Counter;
pub use decode::Encoding;
pub use dir::{DirEntry, ReadDir};
pub use erofs_format::Nid;
pub use erofs_format::compress::Algorithm;
pub use erofs_format::inode::{DataLayout, FileType};
pub use error::{Context, CorruptKind, Error, Result};
pub use image::{AsInode, Image};
pub use inner::{DeviceInfo, Limits};
pub use inode::{Inode, Metadata};
pub use layout::{CompressedExtent, Extent, ExtentSource, ExtentTarget, Piece};
pub use mmap::MmapSource;
pub use name::is_plain_name;
pub use source::{CountingSource, LazyFile, Source};
pub use xattr::Xattr;

/// The blob-device providers `ImageBuilder::build` asks, in order, for devices found in
/// a blob directory: the Nydus RAFS v6 blobs of a bootstrap. The base image knows only
/// the hook type ([`inner::BlobDeviceProvider`]); its specialisations plug in here.
const BLOB_DEVICE_PROVIDERS: &[inner::BlobDeviceProvider] = &[nydus::add_blob_devices];

/// The README's example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn image_is_send_sync_clone() {
        assert_send_sync::<Image>();
    }
}
