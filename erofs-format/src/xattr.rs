//! Extended attributes: the inline xattr area after an inode, xattr entries, shared xattr
//! ids, and short and long name prefixes.
//!
//! The inline area ([`Inode::xattr_size`](crate::inode::Inode::xattr_size) bytes right after
//! the inode) starts with an [`XattrIbodyHeader`], then `h_shared_count` little-endian
//! shared xattr ids, then inline entries up to the end of the area. Each entry is an
//! [`XattrEntry`] followed by the name suffix and the value, padded to 4 bytes. A shared
//! xattr is a single entry at
//! [`SuperBlock::shared_xattr_offset`](crate::superblock::SuperBlock::shared_xattr_offset).
//!
//! The full name is a prefix chosen by `e_name_index` plus the stored suffix. Indexes 1..=6
//! are the short prefixes ([`short_prefix`]); with bit 7 ([`XATTR_LONG_PREFIX`]) set, the
//! low 7 bits index the long prefix table ([`LongPrefix`], `XATTR_PREFIXES` feature), whose
//! records are stored as `le16 len` + payload at `xattr_prefix_start * 4` (in the packed
//! inode's data when there is one, unless `PLAIN_XATTR_PFX` says they are plain on disk).

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::Error;

/// `user.`
pub const XATTR_INDEX_USER: u8 = 1;
/// `system.posix_acl_access` (empty suffix)
pub const XATTR_INDEX_POSIX_ACL_ACCESS: u8 = 2;
/// `system.posix_acl_default` (empty suffix)
pub const XATTR_INDEX_POSIX_ACL_DEFAULT: u8 = 3;
/// `trusted.`
pub const XATTR_INDEX_TRUSTED: u8 = 4;
/// Lustre (no handler in Linux; never listed).
pub const XATTR_INDEX_LUSTRE: u8 = 5;
/// `security.`
pub const XATTR_INDEX_SECURITY: u8 = 6;
/// Bit 7 of `e_name_index`: the low bits index the long prefix table.
pub const XATTR_LONG_PREFIX: u8 = 0x80;
/// The long prefix table index bits of `e_name_index`.
pub const XATTR_LONG_PREFIX_MASK: u8 = 0x7F;
/// Seed of the xattr name bloom filter hash (`xxh32(suffix, seed + base_index)`).
pub const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;

/// The name prefix of a short index (1..=6); `None` for others. Lustre (5) has the
/// `lustre.` prefix on disk but no kernel handler.
pub fn short_prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        XATTR_INDEX_USER => b"user.",
        XATTR_INDEX_POSIX_ACL_ACCESS => b"system.posix_acl_access",
        XATTR_INDEX_POSIX_ACL_DEFAULT => b"system.posix_acl_default",
        XATTR_INDEX_TRUSTED => b"trusted.",
        XATTR_INDEX_LUSTRE => b"lustre.",
        XATTR_INDEX_SECURITY => b"security.",
        _ => return None,
    })
}

/// The header of the inline xattr area, 12 bytes.
#[doc(alias = "erofs_xattr_ibody_header")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct XattrIbodyHeader {
    /// Bloom filter: a set bit means "definitely absent" (with `XATTR_FILTER`).
    pub h_name_filter: U32,
    /// Number of shared xattr ids after the header.
    pub h_shared_count: u8,
    /// Reserved.
    pub h_reserved2: [u8; 7],
}

const _: () = assert!(size_of::<XattrIbodyHeader>() == 12);
const _: () = assert!(offset_of!(XattrIbodyHeader, h_shared_count) == 4);

/// An xattr entry header, 4 bytes, followed by the name suffix and the value.
#[doc(alias = "erofs_xattr_entry")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct XattrEntry {
    /// Length of the name suffix.
    pub e_name_len: u8,
    /// Prefix index (short 1..=6, or [`XATTR_LONG_PREFIX`] | long index).
    pub e_name_index: u8,
    /// Length of the value.
    pub e_value_size: U16,
}

const _: () = assert!(size_of::<XattrEntry>() == 4);
const _: () = assert!(offset_of!(XattrEntry, e_value_size) == 2);

impl XattrEntry {
    /// Size of the entry including name, value and padding: `ALIGN(4 + name + value, 4)`.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "4 + a u8 + a u16 widened to usize cannot overflow"
    )]
    pub fn entry_size(&self) -> usize {
        (4 + usize::from(self.e_name_len) + usize::from(self.e_value_size.get()))
            .next_multiple_of(4)
    }
}

/// One decoded xattr: the prefix index and borrowed name suffix and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xattr<'a> {
    /// The raw `e_name_index`.
    pub name_index: u8,
    /// The stored name suffix (after the prefix).
    pub name: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

impl<'a> Xattr<'a> {
    /// Whether the name uses a long prefix.
    pub fn is_long_prefix(&self) -> bool {
        self.name_index & XATTR_LONG_PREFIX != 0
    }

    /// The long prefix table index, if the name uses one.
    pub fn long_prefix_index(&self) -> Option<u8> {
        self.is_long_prefix()
            .then_some(self.name_index & XATTR_LONG_PREFIX_MASK)
    }

    /// The short prefix, if the index is a short one (1..=6).
    pub fn short_prefix(&self) -> Option<&'static [u8]> {
        if self.is_long_prefix() {
            None
        } else {
            short_prefix(self.name_index)
        }
    }

    /// Decodes one entry at the start of `bytes` (a shared xattr, or an inline one). Returns
    /// the xattr and the padded entry size.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the entry's name or value runs past `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<(Self, usize), Error> {
        let (entry, rest) = XattrEntry::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
            what: "xattr entry",
            needed: 4,
            available: bytes.len() as u64,
        })?;
        let name_len = usize::from(entry.e_name_len);
        let value_len = usize::from(entry.e_value_size.get());
        // A u8 plus a u16 widened to usize: cannot overflow.
        let total = name_len.saturating_add(value_len);
        let payload = rest.get(..total).ok_or(Error::Truncated {
            what: "xattr entry",
            needed: u64::try_from(total).map_or(u64::MAX, |t| t.saturating_add(4)),
            available: bytes.len() as u64,
        })?;
        let (name, value) = payload.split_at(name_len);
        Ok((
            Xattr {
                name_index: entry.e_name_index,
                name,
                value,
            },
            entry.entry_size(),
        ))
    }
}

/// A validated inline xattr area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineXattrs<'a> {
    header: &'a XattrIbodyHeader,
    shared: &'a [U32],
    entries: &'a [u8],
    /// Offset of `entries` within the area, for error reports.
    entries_offset: u32,
}

impl<'a> InlineXattrs<'a> {
    /// Validates the inline xattr area: `area` is exactly the inode's `xattr_size()` bytes
    /// that follow the inode.
    ///
    /// # Errors
    ///
    /// [`Error::XattrHeaderOnly`] for a bare 12-byte header (the kernel refuses it with
    /// `-EOPNOTSUPP`), [`Error::Truncated`] for an area shorter than the header,
    /// [`Error::XattrOverflow`] if the shared ids run past the area.
    pub fn parse(area: &'a [u8]) -> Result<Self, Error> {
        let isize = u32::try_from(area.len()).unwrap_or(u32::MAX);
        if area.len() == size_of::<XattrIbodyHeader>() {
            return Err(Error::XattrHeaderOnly);
        }
        let (header, rest) =
            XattrIbodyHeader::ref_from_prefix(area).map_err(|_| Error::Truncated {
                what: "xattr header",
                needed: 12,
                available: area.len() as u64,
            })?;
        let count = usize::from(header.h_shared_count);
        let (shared, entries) =
            <[U32]>::ref_from_prefix_with_elems(rest, count).map_err(|_| Error::XattrOverflow {
                offset: 12,
                len: shared_len(count),
                isize,
            })?;
        Ok(InlineXattrs {
            header,
            shared,
            entries,
            entries_offset: shared_len(count).saturating_add(12),
        })
    }

    /// The header.
    pub fn header(&self) -> &'a XattrIbodyHeader {
        self.header
    }

    /// The shared xattr ids (resolve with `SuperBlock::shared_xattr_offset`).
    pub fn shared_ids(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        self.shared.iter().map(|id| id.get())
    }

    /// The inline entries, each checked to lie within the area.
    pub fn entries(&self) -> XattrIter<'a> {
        XattrIter {
            rest: self.entries,
            offset: self.entries_offset,
            isize: u32::try_from(self.entries.len())
                .map_or(u32::MAX, |len| len.saturating_add(self.entries_offset)),
        }
    }
}

/// Iterator over inline xattr entries; yields an error once (then stops) on an entry that
/// overflows the area.
#[derive(Debug, Clone)]
pub struct XattrIter<'a> {
    rest: &'a [u8],
    offset: u32,
    isize: u32,
}

impl<'a> Iterator for XattrIter<'a> {
    type Item = Result<Xattr<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let overflow = |len: u32| Error::XattrOverflow {
            offset: self.offset,
            len,
            isize: self.isize,
        };
        let result = match Xattr::parse(self.rest) {
            Ok((x, size)) => match self.rest.get(size..) {
                Some(rest) => {
                    self.rest = rest;
                    // Offsets only label errors; they saturate on absurd areas.
                    self.offset = self.offset.saturating_add(to_u32(size));
                    return Some(Ok(x));
                }
                None => Err(overflow(to_u32(size))),
            },
            Err(Error::Truncated { needed, .. }) => {
                Err(overflow(u32::try_from(needed).unwrap_or(u32::MAX)))
            }
            Err(e) => Err(e),
        };
        self.rest = &[];
        Some(result)
    }
}

/// A long xattr name prefix record: a short base index and an infix.
///
/// `trusted.overlay.` is stored as base 4 (`trusted.`) with infix `overlay.`.
#[doc(alias = "erofs_xattr_long_prefix")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPrefix<'a> {
    /// The short prefix index (1..=6) the infix extends.
    pub base_index: u8,
    /// The bytes appended to the short prefix.
    pub infix: &'a [u8],
}

impl<'a> LongPrefix<'a> {
    /// Decodes a record payload (the bytes after the `le16` length).
    ///
    /// # Errors
    ///
    /// [`Error::BadLongPrefix`] if the payload is empty or over 256 bytes (the kernel's
    /// bounds) or its base index is not a short prefix.
    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let Some((&base_index, infix)) = payload.split_first() else {
            return Err(Error::BadLongPrefix { len, base_index: 0 });
        };
        if payload.len() > 256 || short_prefix(base_index).is_none() {
            return Err(Error::BadLongPrefix { len, base_index });
        }
        Ok(LongPrefix { base_index, infix })
    }

    /// The short prefix this record extends.
    pub fn base(&self) -> &'static [u8] {
        // parse() checked the base index.
        short_prefix(self.base_index).unwrap_or(b"")
    }
}

/// Reads one variable-length metadata record (kernel-abi §1.5) at byte `offset` of `bytes`:
/// the cursor is rounded up to 4, a `le16 len` follows (0 means 65536), then `len` bytes.
/// Returns the payload and the offset just past it (not yet rounded).
///
/// # Errors
///
/// [`Error::BadMetadataRecord`] if the record runs past `bytes`.
pub fn read_metadata_record(bytes: &[u8], offset: u64) -> Result<(&[u8], u64), Error> {
    let start = usize::try_from(offset).map_err(|_| Error::BadMetadataRecord { offset, len: 0 })?;
    let mut records = crate::compress::MetadataRecords::new(bytes, start);
    let payload = records.next_record()?;
    Ok((payload, records.position() as u64))
}

/// Iterator over a long prefix table: `count` records starting at byte 0 of `bytes`.
#[derive(Debug, Clone)]
pub struct LongPrefixes<'a> {
    bytes: &'a [u8],
    offset: u64,
    remaining: u8,
}

impl<'a> LongPrefixes<'a> {
    /// The table of `xattr_prefix_count` records whose first record is at the start of
    /// `bytes` (i.e. `bytes` begins at `xattr_prefix_start * 4`).
    pub fn new(bytes: &'a [u8], count: u8) -> Self {
        LongPrefixes {
            bytes,
            offset: 0,
            remaining: count,
        }
    }
}

impl<'a> Iterator for LongPrefixes<'a> {
    type Item = Result<LongPrefix<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        let item = read_metadata_record(self.bytes, self.offset).and_then(|(payload, next)| {
            self.offset = next;
            LongPrefix::parse(payload)
        });
        if item.is_err() {
            self.remaining = 0;
        }
        Some(item)
    }
}

/// Bytes taken by `count` shared xattr ids (4 each); `count` is the u8 `h_shared_count`.
fn shared_len(count: usize) -> u32 {
    u32::try_from(count).map_or(u32::MAX, |c| c.saturating_mul(4))
}

/// A length as a `u32` error label, saturating.
fn to_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn entry(index: u8, name: &[u8], value: &[u8]) -> Vec<u8> {
        let e = XattrEntry {
            e_name_len: name.len() as u8,
            e_name_index: index,
            e_value_size: (value.len() as u16).into(),
        };
        let mut out = e.as_bytes().to_vec();
        out.extend_from_slice(name);
        out.extend_from_slice(value);
        out.resize(e.entry_size(), 0);
        out
    }

    #[test]
    fn layout_byte_by_byte() {
        let h = XattrIbodyHeader {
            h_name_filter: 0x0403_0201.into(),
            h_shared_count: 5,
            h_reserved2: [6, 7, 8, 9, 10, 11, 12],
        };
        assert_eq!(h.as_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let e = XattrEntry {
            e_name_len: 1,
            e_name_index: 2,
            e_value_size: 0x0403.into(),
        };
        assert_eq!(e.as_bytes(), &[1, 2, 3, 4]);
        assert_eq!(entry(1, b"ab", b"c"), [2, 1, 1, 0, b'a', b'b', b'c', 0]);
    }

    fn area(shared: &[u32], entries: &[Vec<u8>]) -> Vec<u8> {
        let h = XattrIbodyHeader {
            h_name_filter: 0.into(),
            h_shared_count: shared.len() as u8,
            h_reserved2: [0; 7],
        };
        let mut out = h.as_bytes().to_vec();
        for id in shared {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn iterate_inline() {
        let a = area(
            &[3, 9],
            &[
                entry(XATTR_INDEX_USER, b"x", b"hello"),
                entry(XATTR_INDEX_POSIX_ACL_ACCESS, b"", &[2, 0, 0, 0]),
                entry(XATTR_LONG_PREFIX | 1, b"suffix", b""),
            ],
        );
        let x = InlineXattrs::parse(&a).unwrap();
        assert_eq!(x.shared_ids().collect::<Vec<_>>(), [3, 9]);
        let all: Vec<_> = x.entries().map(Result::unwrap).collect();
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].name, all[0].value), (&b"x"[..], &b"hello"[..]));
        assert_eq!(all[0].short_prefix(), Some(&b"user."[..]));
        assert_eq!(all[1].short_prefix(), Some(&b"system.posix_acl_access"[..]));
        assert_eq!(all[2].long_prefix_index(), Some(1));
        assert_eq!(all[2].short_prefix(), None);
        assert_eq!(all[2].name, b"suffix");
    }

    #[test]
    fn each_error_path() {
        assert_eq!(
            InlineXattrs::parse(&area(&[], &[])),
            Err(Error::XattrHeaderOnly)
        );
        assert!(matches!(
            InlineXattrs::parse(&[0; 8]),
            Err(Error::Truncated { needed: 12, .. })
        ));
        let mut a = area(&[1], &[]);
        a[4] = 3;
        assert_eq!(
            InlineXattrs::parse(&a),
            Err(Error::XattrOverflow {
                offset: 12,
                len: 12,
                isize: 16
            })
        );
        // An entry whose value runs past the area.
        let mut e = entry(XATTR_INDEX_USER, b"n", b"vvv");
        e[2] = 40;
        let a = area(&[], &[e]);
        let x = InlineXattrs::parse(&a).unwrap();
        let mut it = x.entries();
        assert_eq!(
            it.next(),
            Some(Err(Error::XattrOverflow {
                offset: 12,
                len: 45,
                isize: 20
            }))
        );
        assert_eq!(it.next(), None);
        // Trailing bytes shorter than an entry header.
        let mut a = area(&[], &[entry(1, b"a", b"")]);
        a.extend_from_slice(&[1, 1]);
        let x = InlineXattrs::parse(&a).unwrap();
        let got: Vec<_> = x.entries().collect();
        assert!(got[0].is_ok());
        assert!(matches!(
            got[1],
            Err(Error::XattrOverflow { offset: 20, .. })
        ));
        assert_eq!(
            Xattr::parse(&[1, 1, 1]),
            Err(Error::Truncated {
                what: "xattr entry",
                needed: 4,
                available: 3
            })
        );
    }

    #[test]
    fn long_prefixes() {
        // Two records: (4, "overlay.") and (1, "x"), each padded to 4 bytes.
        let mut t = Vec::new();
        t.extend_from_slice(&9u16.to_le_bytes());
        t.push(4);
        t.extend_from_slice(b"overlay.");
        t.resize(12, 0xAA);
        t.extend_from_slice(&2u16.to_le_bytes());
        t.extend_from_slice(&[1, b'x']);
        let all: Vec<_> = LongPrefixes::new(&t, 2).map(Result::unwrap).collect();
        assert_eq!(all[0].base(), b"trusted.");
        assert_eq!(all[0].infix, b"overlay.");
        assert_eq!(all[1].base_index, 1);
        assert_eq!(all[1].infix, b"x");
        let mut three = LongPrefixes::new(&t, 3);
        assert!(three.nth(2).unwrap().is_err());
        assert_eq!(three.next(), None);
        assert_eq!(
            LongPrefix::parse(&[]),
            Err(Error::BadLongPrefix {
                len: 0,
                base_index: 0
            })
        );
        assert_eq!(
            LongPrefix::parse(&[9, b'a']),
            Err(Error::BadLongPrefix {
                len: 2,
                base_index: 9
            })
        );
        assert!(matches!(
            LongPrefix::parse(&[1; 257]),
            Err(Error::BadLongPrefix { len: 257, .. })
        ));
        // len 0 means 65536.
        assert_eq!(
            read_metadata_record(&[0, 0, 1, 2], 0),
            Err(Error::BadMetadataRecord {
                offset: 0,
                len: 65536
            })
        );
        assert_eq!(
            read_metadata_record(&[0, 0, 0, 0, 1, 0, 7], 1),
            Ok((&[7u8][..], 7))
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                              offset in proptest::prelude::any::<u64>(), count in proptest::prelude::any::<u8>()) {
            if let Ok(x) = InlineXattrs::parse(&bytes) {
                let _ = x.shared_ids().count();
                let n = x.entries().count();
                proptest::prop_assert!(n <= bytes.len() / 4 + 1);
            }
            let _ = Xattr::parse(&bytes);
            let _ = read_metadata_record(&bytes, offset);
            let _ = LongPrefixes::new(&bytes, count).count();
        }
    }
}
