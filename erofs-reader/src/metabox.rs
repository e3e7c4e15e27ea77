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
use crate::image::Inner;
use crate::inode::Inode;
use crate::zmap::ZInode;

/// The device index that compressed extents of inodes in the metabox report for their
/// ztailpacking (inline) pcluster: its offset is in the metabox inode's data.
pub(crate) const METABOX_DEVICE: u16 = u16::MAX;

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
        self.read_plain_data(mb, offset, &mut v, true)?;
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

    /// Fill `buf` from `offset` of `inode`, an inode whose own metadata is on the primary
    /// device (the metabox inode, the packed inode). Fragments are read from the packed
    /// inode when `fragments` is set (the packed inode itself has none).
    fn read_plain_data(
        &self,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
        fragments: bool,
    ) -> Result<()> {
        let nid = inode.nid().0;
        let ctx = Context::nid(nid);
        let size = inode.metadata().len();
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > size)
        {
            return Err(Error::corrupt(
                format!(
                    "read of {} bytes at {offset} past the inode's end",
                    buf.len()
                ),
                ctx.at(offset),
            ));
        }
        let mut done = 0usize;
        if !inode.raw().layout.is_compressed() {
            while done < buf.len() {
                let pos = offset + done as u64;
                let (seg, len) = self.map(inode, pos)?;
                let take = len.min((buf.len() - done) as u64) as usize;
                if take == 0 {
                    return Err(Error::corrupt("empty data segment", ctx.at(pos)));
                }
                self.read_seg(seg, &mut buf[done..done + take], ctx)?;
                done += take;
            }
            return Ok(());
        }
        let z = ZInode::new(self, inode)?;
        while done < buf.len() {
            let pos = offset + done as u64;
            let ext = z.map(pos)?;
            let within = pos - ext.file_offset;
            let take = (ext.len - within).min((buf.len() - done) as u64) as usize;
            if take == 0 {
                return Err(Error::corrupt("empty extent", ctx.at(pos)));
            }
            let dst = &mut buf[done..done + take];
            self.read_extent_part(&ext, within, dst, ctx, |at, dst| {
                let packed_nid = self
                    .sb
                    .packed_nid()
                    .filter(|p| fragments && p.0 != nid)
                    .ok_or_else(|| Error::corrupt("unexpected fragment", ctx.at(pos)))?;
                let packed = self.inode(packed_nid)?;
                self.read_plain_data(&packed, at, dst, false)
            })?;
            done += take;
        }
        Ok(())
    }
}
