//! Directory blocks: 12-byte dirents followed by their names.
//!
//! A directory's data is a sequence of blocks (the last one possibly partial, or inline).
//! Each block starts with an array of [`Dirent`]s; `nameoff` of the first says where the
//! names begin, so the entry count is `nameoff[0] / 12`. Names are not NUL-terminated: a
//! name ends where the next one starts, and the last name of a block ends at the first NUL
//! or at the end of the block. Entries are sorted by name, as raw unsigned bytes, across the
//! whole directory; the kernel's lookup binary-searches relying on it.
//!
//! [`DirBlock::parse`] validates a block once, as the kernel's `readdir` does, so that
//! iterating it and [`DirBlock::lookup`] cannot panic. Sortedness is a separate check,
//! [`DirBlock::check_sorted`], so that a reader can still list a mis-sorted directory and an
//! fsck can report it.

use core::cmp::Ordering;
use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::Nid;
use crate::error::Error;
use crate::inode::FileType;

/// Size of a dirent record.
pub const DIRENT_SIZE: usize = 12;
/// Longest name the kernel accepts (`EROFS_NAME_LEN`).
pub const NAME_LEN_MAX: usize = 255;

/// A directory entry record, 12 bytes.
#[doc(alias = "erofs_dirent")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Dirent {
    /// The entry's inode (bit 63: in the metabox, erofs-utils 1.9).
    pub nid: U64,
    /// Byte offset of the name within the block.
    pub nameoff: U16,
    /// `EROFS_FT_*` type code (see [`FileType::from_dirent`]).
    pub file_type: u8,
    /// Reserved.
    pub reserved: u8,
}

const _: () = assert!(size_of::<Dirent>() == DIRENT_SIZE);
const _: () = assert!(offset_of!(Dirent, nameoff) == 8);
const _: () = assert!(offset_of!(Dirent, file_type) == 10);

/// One entry of a validated directory block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The entry's nid, as stored (including the metabox bit, if any).
    pub nid: Nid,
    /// The raw `file_type` code.
    pub file_type_code: u8,
    /// The name (1..=255 bytes, not NUL-terminated).
    pub name: &'a [u8],
}

impl DirEntry<'_> {
    /// The file type, if the code is a known one (1..=7).
    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_dirent(self.file_type_code)
    }
}

/// A validated directory block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirBlock<'a> {
    /// The block, cut to its valid size.
    bytes: &'a [u8],
    /// The dirent array at its start.
    dirents: &'a [Dirent],
}

impl<'a> DirBlock<'a> {
    /// Validates a directory block.
    ///
    /// `block` holds the block's valid bytes: `min(dir_size - block_start, block_size)` of
    /// them (a partial last block, or an inline tail, is passed cut to its size).
    ///
    /// Checks, as `erofs_readdir` and `erofs_fill_dentries` do: the first `nameoff` is non-zero, a
    /// multiple of 12 and inside the block; every name starts after the previous one (so
    /// names follow the dirent array) and inside the block; every name is 1..=255 bytes
    /// long, the last one ending at the first NUL or at the end of the block.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::BadDirentTable`], [`Error::BadDirentName`],
    /// [`Error::BadNameLength`].
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "i + 1 is a loop index below dirents.len(); start + the NUL position is at \
                  most block.len(); end - start is taken only when end > start"
    )]
    pub fn parse(block: &'a [u8]) -> Result<Self, Error> {
        let block_len = u32::try_from(block.len()).unwrap_or(u32::MAX);
        let (first, _) = Dirent::ref_from_prefix(block).map_err(|_| Error::Truncated {
            what: "directory block",
            needed: DIRENT_SIZE as u64,
            available: block.len() as u64,
        })?;
        let nameoff0 = first.nameoff.get();
        let table_end = usize::from(nameoff0);
        if table_end == 0 || table_end % DIRENT_SIZE != 0 || table_end >= block.len() {
            return Err(Error::BadDirentTable {
                nameoff: nameoff0,
                block_len,
            });
        }
        let (dirents, _) = <[Dirent]>::ref_from_prefix_with_elems(block, table_end / DIRENT_SIZE)
            .map_err(|_| Error::BadDirentTable {
            nameoff: nameoff0,
            block_len,
        })?;
        let view = DirBlock {
            bytes: block,
            dirents,
        };
        for (i, d) in dirents.iter().enumerate() {
            // nameoff0 is a u16, so there are at most 5461 entries and the index fits.
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            let start = usize::from(d.nameoff.get());
            let end = match dirents.get(i + 1) {
                Some(next) => usize::from(next.nameoff.get()),
                None => {
                    let tail = block.get(start..).unwrap_or(&[]);
                    start + tail.iter().position(|&b| b == 0).unwrap_or(tail.len())
                }
            };
            if start < table_end || start >= block.len() {
                return Err(Error::BadDirentName {
                    index,
                    nameoff: d.nameoff.get(),
                });
            }
            if end <= start || end - start > NAME_LEN_MAX || end > block.len() {
                let len = end.wrapping_sub(start);
                return Err(Error::BadNameLength {
                    index,
                    len: u32::try_from(len).unwrap_or(u32::MAX),
                });
            }
        }
        Ok(view)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.dirents.len()
    }

    /// Always false: a valid block has at least one entry.
    pub fn is_empty(&self) -> bool {
        self.dirents.is_empty()
    }

    /// The raw dirent records.
    pub fn dirents(&self) -> &'a [Dirent] {
        self.dirents
    }

    /// Name of entry `i`. Validation proved the bounds; the fallbacks are never taken.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "i < dirents.len() (checked by the get above), so i + 1 cannot overflow"
    )]
    fn name(&self, i: usize) -> &'a [u8] {
        let Some(d) = self.dirents.get(i) else {
            return &[];
        };
        let start = usize::from(d.nameoff.get());
        let tail = self.bytes.get(start..).unwrap_or(&[]);
        let len = match self.dirents.get(i + 1) {
            Some(next) => usize::from(next.nameoff.get()).saturating_sub(start),
            None => tail.iter().position(|&b| b == 0).unwrap_or(tail.len()),
        };
        tail.get(..len).unwrap_or(&[])
    }

    /// Entry `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<DirEntry<'a>> {
        let d = self.dirents.get(i)?;
        Some(DirEntry {
            nid: Nid(d.nid.get()),
            file_type_code: d.file_type,
            name: self.name(i),
        })
    }

    /// The entries in on-disk order.
    pub fn iter(&self) -> DirBlockIter<'a> {
        DirBlockIter {
            block: *self,
            next: 0,
        }
    }

    /// The first entry's name (used to binary-search blocks, as the kernel's lookup does).
    pub fn first_name(&self) -> &'a [u8] {
        self.name(0)
    }

    /// The last entry's name.
    pub fn last_name(&self) -> &'a [u8] {
        self.name(self.len().saturating_sub(1))
    }

    /// Looks `name` up by binary search over the block's sorted names, as the kernel's
    /// `find_target_dirent` does. On a mis-sorted block it may miss entries, like the
    /// kernel; it never panics.
    pub fn lookup(&self, name: &[u8]) -> Option<DirEntry<'a>> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo.midpoint(hi);
            match self.name(mid).cmp(name) {
                Ordering::Equal => return self.get(mid),
                // mid < hi <= len(), so mid + 1 cannot overflow.
                Ordering::Less => lo = mid.saturating_add(1),
                Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// Checks that names are strictly increasing (raw unsigned bytes; a prefix sorts
    /// first). For a whole directory, also compare each block's first name with the previous
    /// block's last name.
    ///
    /// # Errors
    ///
    /// [`Error::UnsortedDirents`] with the index of the first entry not greater than its
    /// predecessor.
    pub fn check_sorted(&self) -> Result<(), Error> {
        for (prev, i) in (0..self.len()).zip(1..self.len()) {
            if self.name(prev) >= self.name(i) {
                return Err(Error::UnsortedDirents {
                    index: u16::try_from(i).unwrap_or(u16::MAX),
                });
            }
        }
        Ok(())
    }
}

impl<'a> IntoIterator for DirBlock<'a> {
    type Item = DirEntry<'a>;
    type IntoIter = DirBlockIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over the entries of a [`DirBlock`].
#[derive(Debug, Clone)]
pub struct DirBlockIter<'a> {
    block: DirBlock<'a>,
    next: usize,
}

impl<'a> Iterator for DirBlockIter<'a> {
    type Item = DirEntry<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let e = self.block.get(self.next)?;
        // next < len() (get returned an entry), so this cannot saturate.
        self.next = self.next.saturating_add(1);
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.block.len().saturating_sub(self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for DirBlockIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Builds a block from typed dirents and names, padded with NULs to `size`.
    fn build(entries: &[(u64, u8, &[u8])], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut off = entries.len() * DIRENT_SIZE;
        for &(nid, ft, name) in entries {
            let d = Dirent {
                nid: nid.into(),
                nameoff: (off as u16).into(),
                file_type: ft,
                reserved: 0,
            };
            out.extend_from_slice(d.as_bytes());
            off += name.len();
        }
        for &(_, _, name) in entries {
            out.extend_from_slice(name);
        }
        out.resize(size, 0);
        out
    }

    #[test]
    fn layout_byte_by_byte() {
        let d = Dirent {
            nid: 0x0807_0605_0403_0201.into(),
            nameoff: 0x0A09.into(),
            file_type: 0x0B,
            reserved: 0x0C,
        };
        assert_eq!(d.as_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn parse_iterate_lookup() {
        let names: [&[u8]; 5] = [b".", b"..", b"a", b"ab", b"zz"];
        let entries: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u64 + 10, 2u8, *n))
            .collect();
        for size in [60 + 8, 100, 4096] {
            let bytes = build(&entries, size);
            let block = DirBlock::parse(&bytes).unwrap();
            assert_eq!(block.len(), 5);
            let got: Vec<_> = block.iter().map(|e| e.name).collect();
            assert_eq!(got, names);
            assert_eq!(block.iter().nth(3).unwrap().nid, Nid(13));
            assert_eq!(block.get(0).unwrap().file_type(), Some(FileType::Directory));
            for (i, n) in names.iter().enumerate() {
                assert_eq!(block.lookup(n).unwrap().nid, Nid(i as u64 + 10));
            }
            assert_eq!(block.lookup(b"b"), None);
            assert_eq!(block.lookup(b""), None);
            assert_eq!(block.lookup(b"zzz"), None);
            assert_eq!(block.first_name(), b".");
            assert_eq!(block.last_name(), b"zz");
            block.check_sorted().unwrap();
        }
    }

    #[test]
    fn unsorted_is_reported_separately() {
        let bytes = build(&[(1, 1, b"b"), (2, 1, b"a"), (3, 1, b"c")], 200);
        let block = DirBlock::parse(&bytes).unwrap();
        assert_eq!(block.len(), 3);
        assert_eq!(
            block.check_sorted(),
            Err(Error::UnsortedDirents { index: 1 })
        );
        let dup = build(&[(1, 1, b"a"), (2, 1, b"a")], 200);
        assert_eq!(
            DirBlock::parse(&dup).unwrap().check_sorted(),
            Err(Error::UnsortedDirents { index: 1 })
        );
    }

    #[test]
    fn each_error_path() {
        assert!(matches!(
            DirBlock::parse(&[0; 11]),
            Err(Error::Truncated { needed: 12, .. })
        ));
        let mut bytes = build(&[(1, 1, b"a"), (2, 1, b"b")], 64);
        let set_nameoff = |b: &mut Vec<u8>, i: usize, v: u16| {
            b[i * 12 + 8..i * 12 + 10].copy_from_slice(&v.to_le_bytes());
        };
        let mut b = bytes.clone();
        set_nameoff(&mut b, 0, 0);
        assert_eq!(
            DirBlock::parse(&b),
            Err(Error::BadDirentTable {
                nameoff: 0,
                block_len: 64
            })
        );
        set_nameoff(&mut b, 0, 13);
        assert!(matches!(
            DirBlock::parse(&b),
            Err(Error::BadDirentTable { nameoff: 13, .. })
        ));
        set_nameoff(&mut b, 0, 72);
        assert!(matches!(
            DirBlock::parse(&b),
            Err(Error::BadDirentTable { nameoff: 72, .. })
        ));
        // Second name starting inside the dirent table.
        let mut b = bytes.clone();
        set_nameoff(&mut b, 1, 12);
        assert!(matches!(
            DirBlock::parse(&b),
            Err(Error::BadNameLength { index: 0, .. })
        ));
        // Names out of order (second before first) make a negative length.
        let mut b = bytes.clone();
        set_nameoff(&mut b, 0, 25);
        set_nameoff(&mut b, 1, 24);
        assert!(matches!(
            DirBlock::parse(&b),
            Err(Error::BadDirentTable { .. } | Error::BadNameLength { index: 0, .. })
        ));
        // Last name beyond the block.
        let mut b = bytes.clone();
        set_nameoff(&mut b, 1, 64);
        assert!(matches!(
            DirBlock::parse(&b),
            Err(Error::BadNameLength { index: 0, .. } | Error::BadDirentName { index: 1, .. })
        ));
        // Last name empty (NUL right at its start).
        bytes[25] = 0;
        assert_eq!(
            DirBlock::parse(&bytes),
            Err(Error::BadNameLength { index: 1, len: 0 })
        );
        // Name too long.
        let long = [b'x'; 256];
        let b = build(&[(1, 1, &long)], 300);
        assert_eq!(
            DirBlock::parse(&b),
            Err(Error::BadNameLength { index: 0, len: 256 })
        );
        let ok = [b'x'; 255];
        let b = build(&[(1, 1, &ok)], 300);
        assert_eq!(DirBlock::parse(&b).unwrap().first_name().len(), 255);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
                              probe in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8)) {
            if let Ok(block) = DirBlock::parse(&bytes) {
                for e in block.iter() {
                    proptest::prop_assert!(!e.name.is_empty() && e.name.len() <= 255);
                }
                let _ = block.lookup(&probe);
                let _ = block.check_sorted();
                let _ = block.last_name();
            }
        }

        #[test]
        fn built_blocks_round_trip(names in proptest::collection::btree_set(proptest::collection::vec(1u8..=255, 1..20), 1..20)) {
            let names: Vec<Vec<u8>> = names.into_iter().collect();
            let entries: Vec<(u64, u8, &[u8])> = names.iter().enumerate().map(|(i, n)| (i as u64, 1, n.as_slice())).collect();
            let bytes = build(&entries, 4096);
            let block = DirBlock::parse(&bytes).unwrap();
            block.check_sorted().unwrap();
            for (i, n) in names.iter().enumerate() {
                proptest::prop_assert_eq!(block.lookup(n).map(|e| e.nid), Some(Nid(i as u64)));
            }
        }
    }
}
