//! Extended attributes: inline and shared entries, short and long name prefixes.

use erofs_format::superblock::FeatureCompat;
use erofs_format::xattr::{
    InlineXattrs, LongPrefixes, Xattr as RawXattr, XattrEntry, short_prefix,
};

use zerocopy::FromBytes;

use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::{Inner, LongPrefix};
use crate::inode::Inode;

/// An extended attribute with its full name (e.g. `user.comment`,
/// `trusted.overlay.opaque`, `system.posix_acl_access`) and raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Full name: prefix plus stored suffix.
    pub name: Vec<u8>,
    /// Value bytes (POSIX ACLs in the kernel's binary `posix_acl_xattr` form).
    pub value: Vec<u8>,
}

/// Largest shared xattr entry: header, 255-byte name, 64 KiB value.
const MAX_ENTRY: usize = 4 + 255 + 65535;

impl Inner {
    /// Load the long xattr name prefix table (called once when opening).
    pub(crate) fn load_long_prefixes(&self) -> Result<Vec<LongPrefix>> {
        let sb = &self.sb;
        let count = sb.xattr_prefix_count;
        if count == 0 {
            return Ok(Vec::new());
        }
        let start = u64::from(sb.xattr_prefix_start.get()) * 4;
        let ctx = Context::offset(start);
        // Each record is at most 2 + 256 bytes plus alignment.
        let max_len = usize::from(count) * 260;
        // Not plain: in the metabox if there is one, else in the packed inode
        // (erofs-utils `erofs_xattr_prefixes_init`).
        let in_packed = self
            .metabox
            .as_ref()
            .map(|m| m.nid())
            .or(sb.packed_nid())
            .filter(|_| !sb.compat().contains(FeatureCompat::PLAIN_XATTR_PFX));
        let bytes: Vec<u8> = match in_packed {
            Some(nid) => {
                let packed = self.inode(nid)?;
                let size = packed.metadata().len();
                let avail =
                    usize::try_from(size.saturating_sub(start)).map_or(max_len, |a| a.min(max_len));
                let mut buf = vec![0u8; avail];
                let n = self.read_inode_at(&packed, start, &mut buf)?;
                buf.truncate(n);
                buf
            }
            None => {
                let avail = usize::try_from(self.primary_len.saturating_sub(start))
                    .map_or(max_len, |a| a.min(max_len));
                self.read_primary(start, avail, ctx)?.into_owned()
            }
        };
        LongPrefixes::new(&bytes, count)
            .map(|p| {
                p.map(|p| LongPrefix {
                    base_index: p.base_index,
                    infix: p.infix.to_vec(),
                })
                .map_err(|e| {
                    Error::corrupt_as(CorruptKind::Xattr, format!("long xattr prefix: {e}"), ctx)
                })
            })
            .collect()
    }

    fn full_name(&self, x: &RawXattr<'_>, ctx: Context) -> Result<Option<Vec<u8>>> {
        let mut name = Vec::with_capacity(x.name.len().saturating_add(32));
        if let Some(i) = x.long_prefix_index() {
            if let Some(why) = &self.prefixes_unsupported {
                return Err(Error::unsupported(format!(
                    "long xattr name prefixes: {why}"
                )));
            }
            let Some(p) = self.prefixes.get(usize::from(i)) else {
                return Err(Error::corrupt_as(
                    CorruptKind::Xattr,
                    format!(
                        "xattr uses long prefix {i}, but the image has {}",
                        self.prefixes.len()
                    ),
                    ctx,
                ));
            };
            // Validated at load: the base index is a short prefix.
            name.extend_from_slice(short_prefix(p.base_index).unwrap_or(b""));
            name.extend_from_slice(&p.infix);
        } else {
            match short_prefix(x.name_index) {
                // Lustre has no handler in Linux: never listed.
                Some(_) if x.name_index == erofs_format::xattr::XATTR_INDEX_LUSTRE => {
                    return Ok(None);
                }
                Some(p) => name.extend_from_slice(p),
                // Unknown indexes are skipped, as the kernel's listxattr does.
                None => return Ok(None),
            }
        }
        name.extend_from_slice(x.name);
        Ok(Some(name))
    }

    /// See [`Image::inode_xattrs`](crate::Image::inode_xattrs).
    pub(crate) fn inode_xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let raw = inode.raw();
        let isize = raw.xattr_size();
        let mut out = Vec::new();
        if isize == 0 {
            return Ok(out);
        }
        let ctx = Context::nid(raw.nid.0);
        let off = raw
            .xattr_offset()
            .map_err(|e| Error::corrupt_as(CorruptKind::Xattr, format!("{e}"), ctx))?;
        let area = self.read_meta(raw.in_metabox(), off, isize as usize, ctx)?;
        let inline = InlineXattrs::parse(&area).map_err(|e| match e {
            erofs_format::Error::XattrHeaderOnly => {
                Error::unsupported(format!("xattr area with only a header (nid {})", raw.nid.0))
            }
            e => Error::corrupt_as(CorruptKind::Xattr, format!("xattrs: {e}"), ctx.at(off)),
        })?;
        for x in inline.entries() {
            let x = x.map_err(|e| {
                Error::corrupt_as(CorruptKind::Xattr, format!("xattrs: {e}"), ctx.at(off))
            })?;
            if let Some(name) = self.full_name(&x, ctx.at(off))? {
                out.push(Xattr {
                    name,
                    value: x.value.to_vec(),
                });
            }
        }
        let shared_in_metabox = self
            .sb
            .compat()
            .contains(FeatureCompat::SHARED_EA_IN_METABOX);
        for id in inline.shared_ids() {
            let soff = self.sb.shared_xattr_offset(id).map_err(|e| {
                Error::corrupt_as(CorruptKind::Xattr, format!("shared xattr {id}: {e}"), ctx)
            })?;
            let avail =
                usize::try_from(self.meta_space_len(shared_in_metabox).saturating_sub(soff))
                    .map_or(MAX_ENTRY, |a| a.min(MAX_ENTRY));
            if avail < 4 {
                return Err(Error::corrupt_as(
                    CorruptKind::Xattr,
                    format!("shared xattr {id} lies outside the device"),
                    ctx.at(soff),
                ));
            }
            let head = self.read_meta(shared_in_metabox, soff, 4, ctx)?;
            let need = XattrEntry::read_from_bytes(&head)
                .map_err(|_| {
                    Error::corrupt_as(CorruptKind::Xattr, "short xattr entry", ctx.at(soff))
                })?
                .entry_size();
            drop(head);
            let bytes = self.read_meta(shared_in_metabox, soff, need.min(avail), ctx)?;
            let (x, _) = RawXattr::parse(&bytes).map_err(|e| {
                Error::corrupt_as(
                    CorruptKind::Xattr,
                    format!("shared xattr {id}: {e}"),
                    ctx.at(soff),
                )
            })?;
            if let Some(name) = self.full_name(&x, ctx.at(soff))? {
                out.push(Xattr {
                    name,
                    value: x.value.to_vec(),
                });
            }
        }
        Ok(out)
    }
}
