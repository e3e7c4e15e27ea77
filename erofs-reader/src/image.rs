//! The image handle: superblock, devices and the byte-level access every other module
//! builds on.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use erofs_format::Nid;
use erofs_format::device::{DEVICE_SLOT_SIZE, DeviceSlot};
use erofs_format::superblock::SuperBlock;

use crate::error::{Context, Error, Result};
use crate::mmap::MmapSource;
use crate::source::{LazyFile, Source};

/// Bytes read from the start of the primary device to find and check the superblock
/// (block 0 at the largest block size: the checksum covers the rest of block 0).
const HEAD_LEN: usize = 4096;

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
    /// Compression configuration, limits and the decoded-pcluster cache (`zmap.rs`).
    pub(crate) compression: crate::zmap::Compression,
    /// The metabox inode, with `METABOX` (`metabox.rs`).
    pub(crate) metabox: Option<crate::inode::Inode>,
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

/// Builds an [`Image`] from a primary source and its devices.
///
/// ```no_run
/// use erofs_reader::ImageBuilder;
/// let image = ImageBuilder::open("bootstrap.erofs")?
///     .blob_dir("blobs")          // devices found by tag: blobs/<tag>
///     .build()?;
/// # Ok::<(), erofs_reader::Error>(())
/// ```
pub struct ImageBuilder {
    primary: Box<dyn Source>,
    devices: Vec<Box<dyn Source>>,
    blob_dir: Option<PathBuf>,
    flat_devices: bool,
    limits: Limits,
}

impl fmt::Debug for ImageBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageBuilder")
            .field("devices", &self.devices.len())
            .field("blob_dir", &self.blob_dir)
            .field("flat_devices", &self.flat_devices)
            .finish_non_exhaustive()
    }
}

impl ImageBuilder {
    /// Start from a primary source.
    pub fn new(primary: impl Source + 'static) -> Self {
        ImageBuilder {
            primary: Box::new(primary),
            devices: Vec::new(),
            blob_dir: None,
            flat_devices: false,
            limits: Limits::default(),
        }
    }

    /// Start from an image file, memory-mapped.
    ///
    /// # Errors
    /// The file cannot be opened or mapped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let src = MmapSource::open(path).map_err(|e| Error::Io {
            device: 0,
            source: io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        })?;
        Ok(Self::new(src))
    }

    /// Add the next extra device, in device-table order.
    pub fn device(mut self, source: impl Source + 'static) -> Self {
        self.devices.push(Box::new(source));
        self
    }

    /// Add the next extra device from a file (memory-mapped).
    ///
    /// # Errors
    /// The file cannot be opened or mapped.
    pub fn device_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let src = MmapSource::open(path).map_err(|e| Error::Io {
            device: self.devices.len() as u16 + 1,
            source: io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        })?;
        Ok(self.device(src))
    }

    /// Find devices not given with [`ImageBuilder::device`] in `dir`, by their tag as a
    /// file name. Files are opened lazily on first use ([`LazyFile`]), so missing blobs
    /// only matter when their data is read.
    pub fn blob_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.blob_dir = Some(dir.into());
        self
    }

    /// "flatdev" mode: the extra devices live inside the primary device at their
    /// `mapped_blkaddr`, as the kernel assumes for a block or file-backed mount given no
    /// `device=` options. Device sources are then ignored.
    pub fn flat_devices(mut self, flat: bool) -> Self {
        self.flat_devices = flat;
        self
    }

    /// Replace the default [`Limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Read and check the superblock, the device table and the long xattr prefixes.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a bad superblock, more device sources than the device
    /// table lists, a device tag that cannot name a file in the blob directory;
    /// [`Error::Unsupported`] for features this reader does not read; [`Error::Io`].
    pub fn build(self) -> Result<Image> {
        let primary_len = self.primary.size().map_err(|e| Error::Io {
            device: 0,
            source: e,
        })?;
        let head_len = primary_len.min(HEAD_LEN as u64) as usize;
        let mut head = vec![0u8; head_len];
        self.primary
            .read_exact_at(&mut head, 0)
            .map_err(|e| Error::Io {
                device: 0,
                source: e,
            })?;
        let sb = *SuperBlock::parse(&head)
            .map_err(|e| Error::corrupt(format!("superblock: {e}"), Context::offset(1024)))?;
        let blkszbits = sb.blkszbits;
        let mut inner = Inner {
            primary: self.primary,
            primary_len,
            sb,
            blkszbits,
            devices: Vec::new(),
            sources: Vec::new(),
            flat_devices: self.flat_devices,
            prefixes: Vec::new(),
            prefixes_unsupported: None,
            limits: self.limits,
            compression: crate::zmap::Compression::new(&sb, &head)?,
            metabox: None,
        };
        // The metabox inode (an ordinary inode on the primary device): inodes whose nid
        // has bit 63 live in its data (`metabox.rs`).
        if let Some(nid) = sb.metabox_nid(&head) {
            let ctx = Context::nid(nid.0);
            if nid.0 & erofs_format::superblock::NID_METABOX_BIT != 0 {
                return Err(Error::corrupt("the metabox nid has the metabox bit", ctx));
            }
            let mb = inner.inode(nid)?;
            if !mb.metadata().is_file() {
                return Err(Error::corrupt(
                    "the metabox inode is not a regular file",
                    ctx,
                ));
            }
            inner.metabox = Some(mb);
        }

        // Device table.
        let count = sb.extra_devices();
        if self.devices.len() > usize::from(count) {
            return Err(Error::corrupt(
                format!(
                    "{} device sources given but the device table lists {count}",
                    self.devices.len()
                ),
                Context::offset(sb.device_table_offset()),
            ));
        }
        if count > 0 {
            let off = sb.device_table_offset();
            let len = usize::from(count) * DEVICE_SLOT_SIZE;
            let bytes = inner.read_primary(off, len, Context::offset(off))?;
            let slots = DeviceSlot::table(&bytes, count)
                .map_err(|e| Error::corrupt(format!("device table: {e}"), Context::offset(off)))?;
            let mut devices = Vec::with_capacity(slots.len());
            for (i, slot) in slots.iter().enumerate() {
                devices.push(DeviceInfo {
                    index: i as u16 + 1,
                    tag: slot.tag().to_vec(),
                    blocks: slot.blocks(sb.has_48bit()),
                    mapped_blkaddr: slot.mapped_blkaddr(sb.has_48bit()),
                    present: false,
                });
            }
            drop(bytes);
            inner.devices = devices;
        }
        // RAFS v6 bootstraps: blobs found in the blob directory are decoded (nydus.rs).
        let mut given_devices = self.devices;
        if let Some(dir) = &self.blob_dir {
            crate::nydus::add_blob_devices(&inner, dir, &mut given_devices)?;
        }
        let mut given = given_devices.into_iter();
        for dev in &mut inner.devices {
            let src: Option<Box<dyn Source>> = match given.next() {
                Some(s) => Some(s),
                None => match &self.blob_dir {
                    Some(dir) if !dev.tag.is_empty() => {
                        let name = std::str::from_utf8(&dev.tag)
                            .ok()
                            .filter(|t| crate::is_plain_name(t.as_bytes()));
                        match name {
                            Some(t) => Some(Box::new(LazyFile::new(dir.join(t)))),
                            None => {
                                return Err(Error::corrupt(
                                    format!(
                                        "device {} tag {:?} cannot name a file",
                                        dev.index,
                                        dev.tag_str()
                                    ),
                                    Context::offset(sb.device_table_offset()),
                                ));
                            }
                        }
                    }
                    _ => None,
                },
            };
            dev.present = src.is_some() || inner.flat_devices;
            inner.sources.push(src);
        }

        let mut image = Image {
            inner: Arc::new(inner),
        };
        let (prefixes, unsupported) = match image.load_long_prefixes() {
            Ok(p) => (p, None),
            Err(Error::Unsupported { feature }) => (Vec::new(), Some(feature)),
            Err(e) => return Err(e),
        };
        match Arc::get_mut(&mut image.inner) {
            Some(inner) => {
                inner.prefixes = prefixes;
                inner.prefixes_unsupported = unsupported;
            }
            // Loading the prefixes does not clone the image, so the Arc is unique.
            None => unreachable!("image handle shared during build"),
        }
        // The root must be a directory (as the kernel checks at mount).
        let root = image.inode(image.root_nid())?;
        if !root.metadata().is_dir() {
            return Err(Error::corrupt(
                "root inode is not a directory",
                Context::nid(image.root_nid().0),
            ));
        }
        Ok(image)
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
            .get(usize::from(index) - 1)
            .and_then(|s| s.as_deref())
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
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| Error::corrupt("offset overflows", ctx.at(offset)))?;
        if end > self.primary_len {
            return Err(Error::corrupt(
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
        let i = usize::from(index) - 1;
        let Some(dev) = self.devices.get(i) else {
            return Err(Error::corrupt(
                format!("device {index} is not in the device table"),
                ctx.device(index),
            ));
        };
        if self.flat_devices {
            let base = dev
                .mapped_blkaddr
                .checked_mul(self.block_size())
                .and_then(|b| b.checked_add(offset))
                .ok_or_else(|| Error::corrupt("device offset overflows", ctx.device(index)))?;
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
        Error::corrupt(
            format!("read past the end of the device: {e}"),
            ctx.device(device),
        )
    } else {
        Error::Io { device, source: e }
    }
}
