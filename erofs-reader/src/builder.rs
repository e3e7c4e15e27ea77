//! [`ImageBuilder`]: open an image from a primary source, its extra devices and a blob
//! directory, reading and checking the superblock, the device table and the long xattr
//! name prefixes.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use erofs_format::device::{DEVICE_SLOT_SIZE, DeviceSlot};
use erofs_format::superblock::SuperBlock;

use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::{DeviceInfo, Inner, Limits};
use crate::layout::Compression;
use crate::mmap::MmapSource;
use crate::source::{LazyFile, Source};

/// Bytes read from the start of the primary device to find and check the superblock
/// (block 0 at the largest block size: the checksum covers the rest of block 0).
const HEAD_LEN: usize = 4096;

/// Builds an [`Image`](crate::Image) from a primary source and its devices.
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
            device: device_index(self.devices.len()),
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

    /// The state of the image [`ImageBuilder::build`] returns.
    pub(crate) fn build_inner(self) -> Result<Inner> {
        let primary_len = self.primary.size().map_err(|e| Error::Io {
            device: 0,
            source: e,
        })?;
        let head_len = usize::try_from(primary_len).map_or(HEAD_LEN, |l| l.min(HEAD_LEN));
        let mut head = vec![0u8; head_len];
        self.primary
            .read_exact_at(&mut head, 0)
            .map_err(|e| Error::Io {
                device: 0,
                source: e,
            })?;
        let sb = *SuperBlock::parse(&head).map_err(|e| {
            Error::corrupt_as(
                CorruptKind::Superblock,
                format!("superblock: {e}"),
                Context::offset(1024),
            )
        })?;
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
            compression: Compression::new(&sb, &head)?,
            metabox: None,
        };
        // The metabox inode (an ordinary inode on the primary device): inodes whose nid
        // has bit 63 live in its data (`layout/meta.rs`).
        if let Some(nid) = sb.metabox_nid(&head) {
            let ctx = Context::nid(nid.0);
            if nid.0 & erofs_format::superblock::NID_METABOX_BIT != 0 {
                return Err(Error::corrupt_as(
                    CorruptKind::Superblock,
                    "the metabox nid has the metabox bit",
                    ctx,
                ));
            }
            let mb = inner.inode(nid)?;
            if !mb.metadata().is_file() {
                return Err(Error::corrupt_as(
                    CorruptKind::Superblock,
                    "the metabox inode is not a regular file",
                    ctx,
                ));
            }
            inner.metabox = Some(mb);
        }

        // Device table.
        let count = sb.extra_devices();
        if self.devices.len() > usize::from(count) {
            return Err(Error::corrupt_as(
                CorruptKind::DeviceTable,
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
            let slots = DeviceSlot::table(&bytes, count).map_err(|e| {
                Error::corrupt_as(
                    CorruptKind::DeviceTable,
                    format!("device table: {e}"),
                    Context::offset(off),
                )
            })?;
            let mut devices = Vec::with_capacity(slots.len());
            for (i, slot) in slots.iter().enumerate() {
                devices.push(DeviceInfo {
                    index: device_index(i),
                    tag: slot.tag().to_vec(),
                    blocks: slot.blocks(sb.has_48bit()),
                    mapped_blkaddr: slot.mapped_blkaddr(sb.has_48bit()),
                    present: false,
                });
            }
            drop(bytes);
            inner.devices = devices;
        }
        // Devices a blob directory holds in a form of their own (Nydus RAFS v6 blobs,
        // decoded by `nydus/`): each provider the crate root lists may add them.
        let mut given_devices = self.devices;
        if let Some(dir) = &self.blob_dir {
            for provide in crate::BLOB_DEVICE_PROVIDERS {
                provide(&inner, dir, &mut given_devices)?;
            }
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
                                return Err(Error::corrupt_as(
                                    CorruptKind::DeviceTable,
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

        let (prefixes, unsupported) = match inner.load_long_prefixes() {
            Ok(p) => (p, None),
            Err(Error::Unsupported { feature }) => (Vec::new(), Some(feature)),
            Err(e) => return Err(e),
        };
        inner.prefixes = prefixes;
        inner.prefixes_unsupported = unsupported;
        // The root must be a directory (as the kernel checks at mount).
        let root_nid = inner.sb.root_nid();
        let root = inner.inode(root_nid)?;
        if !root.metadata().is_dir() {
            return Err(Error::corrupt_as(
                CorruptKind::Superblock,
                "root inode is not a directory",
                Context::nid(root_nid.0),
            ));
        }
        Ok(inner)
    }
}

/// The device index (1-based, 0 is the primary) of extra device `i` (0-based). The device
/// table holds at most `u16::MAX` slots, so this only saturates for an index used as a label.
fn device_index(i: usize) -> u16 {
    u16::try_from(i).map_or(u16::MAX, |i| i.saturating_add(1))
}
