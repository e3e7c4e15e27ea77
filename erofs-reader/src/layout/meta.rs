//! Metadata: inode `nid` read and decoded, and metadata bytes read from where they live:
//! the primary device, or the metabox.
//!
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

use crate::error::{Context, CorruptKind, Error, Result};
use erofs_format::Nid;
use erofs_format::inode::{Inode as RawInode, InodeCompact, InodeContext, InodeFormat};
use erofs_format::superblock::NID_METABOX_BIT;
use zerocopy::FromBytes;

use crate::inner::Inner;
use crate::inode::Inode;

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
        let end = offset.checked_add(len as u64).ok_or_else(|| {
            Error::corrupt_as(
                CorruptKind::Metabox,
                "metabox offset overflows",
                ctx.at(offset),
            )
        })?;
        if end > self.meta_space_len(true) {
            return Err(Error::corrupt_as(
                CorruptKind::Metabox,
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
            return Err(Error::corrupt_as(
                CorruptKind::Metabox,
                "short read of the metabox",
                ctx.at(offset),
            ));
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

impl Inner {
    /// See [`Image::inode`]. Nids with the metabox bit are read from the metabox.
    pub(crate) fn inode(&self, nid: Nid) -> Result<Inode> {
        let inner = self;
        let ctx = Context::nid(nid.0);
        let ictx = InodeContext::new(&inner.sb).map_err(|e| {
            Error::corrupt_as(CorruptKind::Superblock, format!("superblock: {e}"), ctx)
        })?;
        let in_metabox = nid.0 & NID_METABOX_BIT != 0;
        let off = ictx
            .nid_location(nid)
            .map_err(|e| Error::corrupt_as(CorruptKind::Inode, format!("nid: {e}"), ctx))?;
        // Nids must point inside the primary device (or the metabox), with room for a
        // compact inode.
        let space = inner.meta_space_len(in_metabox);
        if off.checked_add(32).is_none_or(|end| end > space) {
            return Err(Error::corrupt_as(
                CorruptKind::Inode,
                format!(
                    "nid {} is outside the metadata area (offset {off}, {} bytes{})",
                    nid.0,
                    space,
                    if in_metabox { " of metabox" } else { "" }
                ),
                ctx.at(off),
            ));
        }
        // Read exactly the inode: 32 bytes, or 64 for the extended form (so that a stat
        // touches nothing past the inode, e.g. its inline data).
        let head = inner.read_meta(in_metabox, off, 32, ctx)?;
        let extended = InodeCompact::ref_from_prefix(&head)
            .map(|(c, _)| InodeFormat(c.i_format.get()).is_extended())
            .unwrap_or(false);
        let bytes = if extended {
            drop(head);
            if off.checked_add(64).is_none_or(|end| end > space) {
                return Err(Error::corrupt_as(
                    CorruptKind::Inode,
                    "extended inode runs past the device",
                    ctx.at(off),
                ));
            }
            inner.read_meta(in_metabox, off, 64, ctx)?
        } else {
            head
        };
        let raw = RawInode::parse(&bytes, nid, &ictx).map_err(|e| match e {
            erofs_format::Error::UnsupportedInodeFormat { .. }
            | erofs_format::Error::UnsupportedDataLayout { .. }
            | erofs_format::Error::UnsupportedChunkFormat { .. } => {
                Error::unsupported(format!("inode {}: {e}", nid.0))
            }
            e => Error::corrupt_as(CorruptKind::Inode, format!("inode: {e}"), ctx.at(off)),
        })?;
        Ok(Inode::from_raw(raw))
    }
}
