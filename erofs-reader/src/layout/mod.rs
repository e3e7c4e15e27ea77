//! File data layouts: how a file offset maps to stored bytes, and reading through that map.
//!
//! | module | layout |
//! | --- | --- |
//! | `flat` | flat (plain and inline tail) and chunk-based files: offset → device segment |
//! | `zmap/` | compressed files: offset → extent (lcluster indexes, encoded extents), the pcluster read arm, compressed reads |
//! | `meta` | inodes by nid, and metadata bytes: on the primary device or in the metabox inode's data (`mkfs.erofs -m`) |
//! | `read` | reading any layout: `read_at`, whole files, pieces, symlinks, the chunk map |
//! | `extent` | the public answers: [`Extent`], [`ExtentTarget`], [`Piece`] |
//!
//! Every function here is a method of the image state ([`Inner`](crate::inner::Inner));
//! [`Image`](crate::Image) exposes them.

mod extent;
mod flat;
mod meta;
mod read;
mod zmap;

pub use extent::{Extent, ExtentTarget, Piece};
pub use zmap::{CompressedExtent, ExtentSource};
pub(crate) use zmap::{Compression, METABOX_DEVICE};
