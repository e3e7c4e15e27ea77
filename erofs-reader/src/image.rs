//! [`Image`], the handle on an open image, and its whole public API in one `impl`: open
//! an image, then use it like `std::fs` (paths, metadata, directories, links, file data,
//! extended attributes), or at the inode level, plus the chunk and compression maps.
//!
//! The methods here are the map of the crate: each names the module that does the work
//! behind it (path resolution in `path.rs`, directories in `dir.rs`, inodes and where
//! metadata lives in `inode.rs` and `layout/meta.rs`, file data in `layout/`,
//! decompression in `decode/`, extended attributes in `xattr.rs`).

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use erofs_format::Nid;
use erofs_format::compress::PCLUSTER_MAX_DSIZE;
use erofs_format::superblock::SuperBlock;

use crate::builder::ImageBuilder;
use crate::dir::{DirEntry, ReadDir};
use crate::error::{Context, Error, Result};
use crate::inner::{DeviceInfo, Inner, Limits};
use crate::inode::{Inode, Metadata};
use crate::layout::{CompressedExtent, Extent, Piece};
use crate::source::Source;
use crate::xattr::Xattr;

/// An open EROFS image: the primary device (superblock, metadata, inline data) plus the
/// extra devices (blobs) of its device table.
///
/// `Image` is `Send + Sync` and cheap to clone (the state is behind an [`Arc`]); clones
/// share the sources. It reads nothing it does not need: opening reads the superblock,
/// the device table and the long xattr prefix table; a `metadata` call reads inodes and
/// directory blocks along the path; file data is read only by `read`/`read_at`.
#[derive(Clone)]
pub struct Image {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("block_size", &self.block_size())
            .field("root_nid", &self.root_nid())
            .field("devices", &self.inner.devices)
            .finish_non_exhaustive()
    }
}

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

impl ImageBuilder {
    /// Read and check the superblock, the device table and the long xattr prefixes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a bad superblock, more device sources than the device
    /// table lists, a device tag that cannot name a file in the blob directory;
    /// [`Error::Unsupported`] for features this reader does not read; [`Error::Io`].
    pub fn build(self) -> Result<Image> {
        Ok(Image {
            inner: Arc::new(self.build_inner()?),
        })
    }
}

impl Image {
    /// Open an image file (memory-mapped) that needs no extra devices, or whose devices
    /// are read only on demand (reading their data then fails with
    /// [`Error::MissingDevice`]).
    ///
    /// # Errors
    /// See [`ImageBuilder::build`].
    pub fn open(path: impl AsRef<Path>) -> Result<Image> {
        ImageBuilder::open(path)?.build()
    }

    /// Open an image from a primary source.
    ///
    /// ```
    /// # fn main() -> Result<(), erofs_reader::Error> {
    /// // Not an image: a clear error, no panic.
    /// let err = erofs_reader::Image::from_source(vec![0u8; 8192]).unwrap_err();
    /// assert!(err.is_corrupt());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// See [`ImageBuilder::build`].
    pub fn from_source(primary: impl Source + 'static) -> Result<Image> {
        ImageBuilder::new(primary).build()
    }

    /// Open an image file with its extra devices given as files, in device-table order.
    ///
    /// # Errors
    /// See [`ImageBuilder::build`].
    pub fn open_with_devices(
        path: impl AsRef<Path>,
        devices: impl IntoIterator<Item = impl AsRef<Path>>,
    ) -> Result<Image> {
        let mut b = ImageBuilder::open(path)?;
        for d in devices {
            b = b.device_file(d)?;
        }
        b.build()
    }

    /// A builder for images with devices, blob directories or custom limits.
    pub fn builder(primary: impl Source + 'static) -> ImageBuilder {
        ImageBuilder::new(primary)
    }

    /// The raw superblock.
    pub fn superblock(&self) -> &SuperBlock {
        &self.inner.sb
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        1u64 << self.inner.blkszbits
    }

    /// `log2` of the block size.
    pub fn block_size_bits(&self) -> u8 {
        self.inner.blkszbits
    }

    /// The root directory's nid.
    pub fn root_nid(&self) -> Nid {
        self.inner.sb.root_nid()
    }

    /// The extra devices from the device table, in order (index 1 first).
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.inner.devices
    }

    /// Size of the primary device in bytes.
    pub fn primary_len(&self) -> u64 {
        self.inner.primary_len
    }

    /// The primary source.
    pub fn primary(&self) -> &dyn Source {
        &*self.inner.primary
    }

    /// The source of device `index` (0 = primary), if present.
    pub fn device_source(&self, index: u16) -> Option<&dyn Source> {
        if index == 0 {
            return Some(&*self.inner.primary);
        }
        self.inner
            .sources
            .get(usize::from(index.checked_sub(1)?))
            .and_then(|s| s.as_deref())
    }

    /// The source holding byte `offset` of device `index`, as an [`Extent`]'s
    /// [`ExtentTarget::Device`](crate::ExtentTarget::Device) names them, and the offset in
    /// that source (the extra devices of a flat multi-device image are ranges of the
    /// primary device). With [`Source::file`], a caller can have the kernel copy an
    /// extent's bytes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a device not in the device table or an offset that
    /// overflows; [`Error::MissingDevice`] for a device that was not provided.
    pub fn device_range(&self, index: u16, offset: u64) -> Result<(&dyn Source, u64)> {
        self.inner.device_for(index, offset, Context::default())
    }

    /// Let memory-mapped sources drop the pages they lent from this process's resident
    /// set ([`Source::release`]); a long scan calls this now and then to keep its memory
    /// flat. Lent slices stay valid.
    pub fn release_memory(&self) {
        self.inner.primary.release();
        for s in self.inner.sources.iter().flatten() {
            s.release();
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The inode `nid`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the nid lies outside the primary device or the inode does not
    /// decode (unknown format bits, bad mode, negative size, ...).
    pub fn inode(&self, nid: Nid) -> Result<Inode> {
        self.inner.inode(nid)
    }

    /// The inode number a 64-bit Linux reports in `st_ino` for inode `nid`
    /// (`erofs_nid_to_ino64`): the nid itself, except on images with a metabox, where
    /// bits 31..=62 of the nid move up by one and the metabox bit (63) becomes bit 31
    /// (the root of an `mkfs.erofs -m` image, nid `1 << 63`, is inode 2147483648).
    pub fn ino(&self, nid: Nid) -> u64 {
        if self.inner.metabox.is_none() {
            return nid.0;
        }
        ((nid.0 << 1) & !0xffff_ffff) | (nid.0 & 0x7fff_ffff) | ((nid.0 >> 63) << 31)
    }

    /// The inode at `path`, following symlinks (including a final one).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotADirectory`] for a non-directory in the middle
    /// of the path, [`Error::Corrupt`] (including symlink loops and limits).
    pub fn lookup(&self, path: impl AsRef<Path>) -> Result<Inode> {
        self.inner.resolve(path.as_ref(), true)
    }

    /// The inode at `path`, not following a final symlink.
    ///
    /// # Errors
    /// As [`Image::lookup`].
    pub fn symlink_lookup(&self, path: impl AsRef<Path>) -> Result<Inode> {
        self.inner.resolve(path.as_ref(), false)
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
        self.inner.read_inode_at(&inode, offset, buf)
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
        self.inner.inode_extents(&inode, range)
    }

    /// The entries of directory `dir`.
    ///
    /// # Errors
    /// [`Error::NotADirectory`]; errors of individual blocks come from the iterator.
    pub fn read_dir_inode(&self, dir: &Inode) -> Result<ReadDir> {
        self.inner.read_dir_inode(dir)
    }

    /// Look `name` up in directory `dir`: a binary search over the blocks by their first
    /// and last names, then within the block, as the kernel's `erofs_namei` does. Reads
    /// `O(log blocks)` directory blocks.
    ///
    /// # Errors
    /// [`Error::NotADirectory`], [`Error::Corrupt`]. A missing name is `Ok(None)`.
    pub fn lookup_in(&self, dir: &Inode, name: &[u8]) -> Result<Option<DirEntry>> {
        self.inner.lookup_in(dir, name)
    }

    /// The whole data of `inode`.
    ///
    /// # Errors
    /// As [`Image::read_at`]; an allocation failure for an absurd size is an
    /// [`Error::Corrupt`].
    pub fn read_inode(&self, inode: &Inode) -> Result<Vec<u8>> {
        self.inner.read_inode(inode)
    }

    /// The target of symlink `inode`.
    ///
    /// # Errors
    /// [`Error::NotASymlink`]; [`Error::Corrupt`] for a target longer than 4096 bytes
    /// (Linux's `PATH_MAX`) or an empty one.
    pub fn read_link_inode(&self, inode: &Inode) -> Result<Vec<u8>> {
        self.inner.read_link_inode(inode)
    }

    /// Visit all data of `inode` in file order, as lent slices (zero copy from memory
    /// and mmap sources) or copied pieces of up to 1 MiB, and hole lengths.
    ///
    /// ```
    /// # fn f(image: &erofs_reader::Image, inode: &erofs_reader::Inode) -> erofs_reader::Result<()> {
    /// use erofs_reader::Piece;
    /// let mut total = 0u64;
    /// image.for_each_piece(inode, |p| {
    ///     total += match p { Piece::Data(d) => d.len() as u64, Piece::Zeros(n) => n };
    ///     Ok::<(), erofs_reader::Error>(())
    /// })?;
    /// assert_eq!(total, inode.metadata().len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Image::read_at`], or whatever `f` returns.
    pub fn for_each_piece<E: From<Error>>(
        &self,
        inode: &Inode,
        f: impl FnMut(Piece<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.inner.for_each_piece(inode, f)
    }

    /// All extended attributes of `inode`: inline entries first, then shared ones, in
    /// on-disk order (as the kernel lists them).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for entries running past the xattr area, shared ids outside
    /// the device, unknown long prefixes; [`Error::Unsupported`] for an xattr area that
    /// is only a header (the kernel refuses it too).
    pub fn inode_xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        self.inner.inode_xattrs(inode)
    }

    /// Extended attributes of `path` itself (a final symlink is not followed, like
    /// `llistxattr`).
    ///
    /// # Errors
    /// As [`Image::symlink_lookup`] and [`Image::inode_xattrs`].
    pub fn xattrs(&self, path: impl AsRef<Path>) -> Result<Vec<Xattr>> {
        let inode = self.symlink_lookup(path)?;
        self.inode_xattrs(&inode)
    }

    /// The extent of compressed file `inode` that holds byte `offset` (which must be below
    /// the file size), as the kernel maps it.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a broken map (lookback past the start, a missing CBLKCNT, an
    /// inline pcluster crossing a block, ...) or an offset past EOF; [`Error::Unsupported`]
    /// for a pcluster over 1 MiB or an extent decoding to more than
    /// [`Image::max_extent_size`] bytes; [`Error::Corrupt`] for an inode that is not
    /// compressed.
    pub fn compressed_extent(&self, inode: &Inode, offset: u64) -> Result<CompressedExtent> {
        self.inner.compressed_extent(inode, offset)
    }

    /// Every extent of compressed file `inode`, in file order (what `dump.erofs -e` and
    /// FIEMAP list). Reads only metadata.
    ///
    /// ```
    /// use erofs_reader::{Algorithm, Encoding, ExtentSource, Image};
    /// # fn main() -> Result<(), erofs_reader::Error> {
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny-lz4.erofs");
    /// // mkfs.erofs -zlz4hc,12 -C16384 -Eztailpacking: 29000 bytes of text.
    /// let image = Image::open(path)?;
    /// let file = image.lookup("/text.txt")?;
    /// let extents = image.compressed_extents(&file)?;
    /// assert_eq!(extents.iter().map(|e| e.len).sum::<u64>(), 29000);
    /// assert!(extents.iter().all(|e| matches!(
    ///     e.source,
    ///     ExtentSource::Pcluster { encoding: Encoding::Compressed(Algorithm::Lz4), .. }
    /// )));
    /// // Reads decode just the extents they touch (with the `lz4` feature, on by default).
    /// # #[cfg(feature = "lz4")] {
    /// let mut buf = [0u8; 28];
    /// image.read_at(&file, 29 * 999, &mut buf)?;
    /// assert_eq!(&buf, b"line 00999: compressed erofs");
    /// # }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Image::compressed_extent`].
    pub fn compressed_extents(&self, inode: &Inode) -> Result<Vec<CompressedExtent>> {
        self.inner.compressed_extents(inode)
    }

    /// The largest number of bytes one extent may decode to; larger extents are refused
    /// with [`Error::Unsupported`] before anything is allocated. The default is 12 MiB,
    /// the kernel's `Z_EROFS_PCLUSTER_MAX_DSIZE`.
    pub fn max_extent_size(&self) -> u64 {
        self.inner.compression.max_extent.load(Ordering::Relaxed)
    }

    /// Change [`Image::max_extent_size`] for this image (and its clones). Values above
    /// the kernel's 12 MiB limit are clamped to it.
    pub fn set_max_extent_size(&self, bytes: u64) {
        self.inner
            .compression
            .max_extent
            .store(bytes.min(u64::from(PCLUSTER_MAX_DSIZE)), Ordering::Relaxed);
    }

    /// Set the capacity, in decoded bytes, of this image's cache of decoded pclusters
    /// (shared by its clones; default 32 MiB). 0 turns caching off.
    pub fn set_pcluster_cache_capacity(&self, bytes: usize) {
        self.inner.compression.cache.set_capacity(bytes);
    }

    /// The capacity of the decoded-pcluster cache in bytes.
    pub fn pcluster_cache_capacity(&self) -> usize {
        self.inner.compression.cache.capacity()
    }

    /// Statistics of the decoded-pcluster cache: `(hits, misses, bytes held)`. A miss
    /// is one pcluster decoded by a `read_at`-style call.
    pub fn pcluster_cache_stats(&self) -> (u64, u64, usize) {
        self.inner.compression.cache.stats()
    }
}
