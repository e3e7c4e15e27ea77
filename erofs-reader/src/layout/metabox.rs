//! The metabox (`METABOX`, erofs-utils 1.9 `mkfs.erofs -m`, Linux 6.17): metadata kept in
//! the data of one inode, usually compressed.
//!
//! The superblock's extension slot names the metabox inode (`metabox_nid`), an ordinary
//! inode on the primary device. A nid with bit 63 set (`EROFS_DIRENT_NID_METABOX_BIT`)
//! is an inode inside the metabox: it sits at `(nid & !bit) * 32` of the metabox
//! inode's data, and everything stored right after an inode (inline xattrs, inline
//! tails, chunk indexes, compression map headers, indexes and ztailpacking pclusters)
//! is in that space too, as the kernel's `erofs_read_metabuf(.., in_metabox)` reads it.
//! Data blocks of such inodes stay on the devices. With `SHARED_EA_IN_METABOX` the
//! shared xattr area is in the metabox as well, and long xattr name prefixes that are not
//! plain live there (erofs-utils `erofs_xattr_prefixes_init`).
//!
//! Metadata is read through [`Inner::read_meta`], which picks the primary device or the
//! metabox; decoded metabox pclusters go through the pcluster cache like file data.

use std::borrow::Cow;

use crate::error::{Context, Error, Result};
use crate::inner::Inner;

impl Inner {
    /// `len` bytes of metadata at `offset`: on the primary device, or in the metabox's
    /// data when `in_metabox`.
    pub(crate) fn read_meta(
        &self,
        in_metabox: bool,
        offset: u64,
        len: usize,
        ctx: Context,
    ) -> Result<Cow<'_, [u8]>> {
        if !in_metabox {
            return self.read_primary(offset, len, ctx);
        }
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| Error::corrupt("metabox offset overflows", ctx.at(offset)))?;
        if end > self.meta_space_len(true) {
            return Err(Error::corrupt(
                format!(
                    "read of {len} bytes at {offset} past the end of the metabox ({} bytes)",
                    self.meta_space_len(true)
                ),
                ctx.at(offset),
            ));
        }
        let mut v = vec![0u8; len];
        let Some(mb) = &self.metabox else {
            // meta_space_len(true) is 0 without a metabox, so only len == 0 gets here.
            return Ok(Cow::Owned(v));
        };
        // The metabox inode is an ordinary file on the primary device: its data reads
        // like any file's (fragments from the packed inode included). `end` is within its
        // size, so the read is whole.
        let n = self.read_inode_at(mb, offset, &mut v)?;
        if n != len {
            return Err(Error::corrupt("short read of the metabox", ctx.at(offset)));
        }
        Ok(Cow::Owned(v))
    }

    /// Size of the space metadata offsets refer to: the primary device, or the metabox's
    /// data (0 if the image has none).
    pub(crate) fn meta_space_len(&self, in_metabox: bool) -> u64 {
        if in_metabox {
            self.metabox.as_ref().map_or(0, |m| m.metadata().len())
        } else {
            self.primary_len
        }
    }
}
