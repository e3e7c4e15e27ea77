//! The error type of the reader.
//!
//! Errors fall into four groups:
//!
//! * what a `std::fs` user expects ([`Error::NotFound`], [`Error::NotADirectory`],
//!   [`Error::IsADirectory`], [`Error::NotASymlink`]);
//! * the sources failed ([`Error::Io`], [`Error::MissingDevice`]);
//! * the image is damaged or hostile ([`Error::Corrupt`], with a [`Context`] saying where);
//! * the image uses something this reader does not read yet ([`Error::Unsupported`]).
//!
//! Every error converts into an [`std::io::Error`] with a fitting [`std::io::ErrorKind`].

use std::fmt;
use std::io;

/// Where in the image a corruption was found. Every field is optional; the [`Display`]
/// form lists the ones that are known, e.g. `nid 42, offset 1234`.
///
/// [`Display`]: fmt::Display
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The inode being read.
    pub nid: Option<u64>,
    /// A block address (in blocks of the image's block size).
    pub block: Option<u64>,
    /// A byte offset on the device being read.
    pub offset: Option<u64>,
    /// The device index (0 = primary) the offset belongs to.
    pub device: Option<u16>,
}

impl Context {
    /// No location known.
    pub const NONE: Context = Context {
        nid: None,
        block: None,
        offset: None,
        device: None,
    };

    /// A context naming an inode.
    pub fn nid(nid: u64) -> Self {
        Context {
            nid: Some(nid),
            ..Self::NONE
        }
    }

    /// A context naming a byte offset on the primary device.
    pub fn offset(offset: u64) -> Self {
        Context {
            offset: Some(offset),
            ..Self::NONE
        }
    }

    /// This context with a byte offset added.
    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// This context with a block address added.
    pub fn block(mut self, block: u64) -> Self {
        self.block = Some(block);
        self
    }

    /// This context with a device index added.
    pub fn device(mut self, device: u16) -> Self {
        self.device = Some(device);
        self
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut item = |f: &mut fmt::Formatter<'_>, name: &str, v: Option<u64>| {
            if let Some(v) = v {
                let r = write!(f, "{sep}{name} {v}");
                sep = ", ";
                r
            } else {
                Ok(())
            }
        };
        item(f, "nid", self.nid)?;
        item(f, "device", self.device.map(u64::from))?;
        item(f, "block", self.block)?;
        item(f, "offset", self.offset)?;
        if sep.is_empty() {
            f.write_str("unknown location")?;
        }
        Ok(())
    }
}

/// Which rule of the format a corrupt image broke, by the layer that checks it. Where it
/// was found (nid, device, block, byte offset) is the [`Context`] beside it in
/// [`Error::Corrupt`]; the text there says what exactly was wrong, with the numbers.
///
/// ```
/// use erofs_reader::{CorruptKind, Error, Image};
/// let err = Image::from_source(vec![0u8; 8192]).unwrap_err();
/// assert_eq!(err.corrupt_kind(), Some(CorruptKind::Superblock));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The superblock, or what the reader checks beside it when opening: compression
    /// configuration, the metabox inode, the root inode, the long xattr prefix table.
    Superblock,
    /// The device table, or a device index that is not in it.
    DeviceTable,
    /// A read or an offset that runs past the end of a device (or overflows).
    OutOfBounds,
    /// An inode: its nid lies outside the metadata area, or it does not decode.
    Inode,
    /// A directory block.
    Directory,
    /// Path resolution went past [`Limits`](crate::Limits): a symlink loop, too many
    /// components.
    PathLimit,
    /// Extended attributes: the inline area, a shared xattr, a name prefix.
    Xattr,
    /// The data map of an uncompressed file: inline tail, block address, chunk index.
    DataMap,
    /// The map of a compressed file: map header, lcluster indexes, extent records,
    /// fragments of the packed inode.
    CompressedMap,
    /// A pcluster that does not decode to exactly its extent.
    Decompress,
    /// The metabox (metadata kept in the data of one inode).
    Metabox,
    /// A Nydus RAFS v6 bootstrap's own tables: extended superblock, blob table, chunk
    /// table, prefetch table, an inlined bootstrap.
    Rafs,
    /// A Nydus data blob: its meta, chunk-info array, ZRan tables, chunk data or digests.
    Blob,
    /// Damage found by a caller with [`Error::corrupt`] (a tool built on this crate); this
    /// crate itself always names a kind.
    Other,
}

/// Errors returned by the reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path component does not exist.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// A path component that must be a directory is not one.
    #[error("not a directory: {0}")]
    NotADirectory(String),
    /// The operation needs a non-directory but found a directory.
    #[error("is a directory: {0}")]
    IsADirectory(String),
    /// `read_link` on something that is not a symbolic link.
    #[error("not a symbolic link: {0}")]
    NotASymlink(String),
    /// A source failed to read.
    #[error("I/O error reading device {device}: {source}")]
    Io {
        /// The device index (0 = primary).
        device: u16,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Data was needed from an extra device that was not provided.
    #[error("device {index} (tag {tag:?}) is needed but was not provided")]
    MissingDevice {
        /// The device index (1 = first extra device).
        index: u16,
        /// The device's tag from the device table.
        tag: String,
    },
    /// The image is damaged, or deliberately malformed.
    #[error("corrupt image at {context}: {what}")]
    Corrupt {
        /// Which rule was broken.
        kind: CorruptKind,
        /// What was wrong.
        what: String,
        /// Where it was found.
        context: Context,
    },
    /// The image uses a feature this reader does not read (yet).
    #[error("unsupported feature: {feature}")]
    Unsupported {
        /// The feature, e.g. `compressed inode (datalayout 3)`.
        feature: String,
    },
}

impl Error {
    /// A [`Error::Corrupt`] of kind [`CorruptKind::Other`] with the given description and
    /// context, for damage a caller finds on its own.
    pub fn corrupt(what: impl Into<String>, context: Context) -> Self {
        Self::corrupt_as(CorruptKind::Other, what, context)
    }

    /// A [`Error::Corrupt`] of `kind`.
    pub(crate) fn corrupt_as(kind: CorruptKind, what: impl Into<String>, context: Context) -> Self {
        Error::Corrupt {
            kind,
            what: what.into(),
            context,
        }
    }

    /// The kind of an [`Error::Corrupt`]; `None` for other errors.
    pub fn corrupt_kind(&self) -> Option<CorruptKind> {
        match self {
            Error::Corrupt { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// An [`Error::Unsupported`] naming `feature`.
    pub fn unsupported(feature: impl Into<String>) -> Self {
        Error::Unsupported {
            feature: feature.into(),
        }
    }

    /// Whether this is an [`Error::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::NotFound(_) => io::ErrorKind::NotFound,
            Error::NotADirectory(_) => io::ErrorKind::NotADirectory,
            Error::IsADirectory(_) => io::ErrorKind::IsADirectory,
            Error::NotASymlink(_) => io::ErrorKind::InvalidInput,
            Error::Io { source, .. } => source.kind(),
            Error::MissingDevice { .. } => io::ErrorKind::NotFound,
            Error::Corrupt { .. } => io::ErrorKind::InvalidData,
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_display() {
        assert_eq!(Context::NONE.to_string(), "unknown location");
        assert_eq!(Context::nid(5).at(4096).to_string(), "nid 5, offset 4096");
        assert_eq!(
            Context::offset(7).device(2).block(1).to_string(),
            "device 2, block 1, offset 7"
        );
    }

    #[test]
    fn io_error_kinds() {
        let e: io::Error = Error::NotFound("/a".into()).into();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e: io::Error = Error::corrupt("bad", Context::nid(1)).into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("nid 1"));
        let e: io::Error = Error::unsupported("lz4").into();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }
}
