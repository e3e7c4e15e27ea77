//! Chunk-based inodes (data layout 4): the chunk format word, 4-byte block maps and 8-byte
//! chunk indexes.
//!
//! A chunk-based inode's `i_u` holds a [`ChunkFormat`]. The file is cut into chunks of
//! `block_size << format.blkbits()` bytes; entry `i` of the table that follows the inode
//! (at [`Inode::chunk_table_offset`](crate::inode::Inode::chunk_table_offset)) maps chunk
//! `i`. Without [`ChunkFormat::INDEXES`] the table is a block map of 4-byte little-endian
//! block addresses on device 0; with it, each entry is an 8-byte [`ChunkIndex`] naming a
//! device too. [`NULL_ADDR`] marks a hole (reads as zeros).
//!
//! # Nydus RAFS v6
//!
//! Nydus overloads the chunk index: the first 16 bits (`startblk_hi`, "advise" in Linux
//! ≤ 6.14) hold the low bits of its chunk-info index and the high byte of `device_id` holds
//! more of it. This crate therefore reads `startblk_hi` as address bits **only** when the
//! inode's format has [`ChunkFormat::BIT48`] (Nydus never sets it) and masks `device_id`
//! with the superblock's `device_id_mask`, exactly as the kernel does. See
//! [`crate::rafs`] for the RAFS view of the same bytes.

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::BlkAddr;
use crate::error::Error;

/// The 32-bit hole marker (`EROFS_NULL_ADDR`, -1) of block maps and chunk indexes.
pub const NULL_ADDR: u32 = u32::MAX;
/// Size of a block map entry.
pub const BLOCK_MAP_ENTRY_SIZE: usize = 4;
/// Size of a chunk index.
pub const CHUNK_INDEX_SIZE: usize = 8;

/// The chunk format word of a chunk-based inode (`erofs_inode_chunk_info.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkFormat(pub u16);

impl ChunkFormat {
    /// `EROFS_CHUNK_FORMAT_BLKBITS_MASK`: chunk size = block size << (format & 0x1F).
    pub const BLKBITS_MASK: u16 = 0x1F;
    /// `EROFS_CHUNK_FORMAT_INDEXES`: 8-byte chunk indexes instead of a 4-byte block map.
    pub const INDEXES: u16 = 0x20;
    /// `EROFS_CHUNK_FORMAT_48BIT`: chunk indexes carry 48-bit block addresses (Linux 6.15+).
    pub const BIT48: u16 = 0x40;
    /// Every bit erofs-utils 1.9.4 defines.
    pub const ALL: u16 = 0x7F;

    /// Validates the format: no bits beyond [`ChunkFormat::ALL`] (Linux 6.12 accepts only
    /// `0x3F`; the 48-bit bit is newer).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedChunkFormat`].
    pub fn new(format: u16) -> Result<Self, Error> {
        if format & !Self::ALL != 0 {
            Err(Error::UnsupportedChunkFormat { format })
        } else {
            Ok(Self(format))
        }
    }

    /// Chunk size shift relative to the block size.
    pub fn blkbits(self) -> u8 {
        (self.0 & Self::BLKBITS_MASK) as u8
    }

    /// Whether entries are 8-byte [`ChunkIndex`]es (else 4-byte block map entries).
    pub fn has_indexes(self) -> bool {
        self.0 & Self::INDEXES != 0
    }

    /// Whether chunk indexes carry 48-bit addresses.
    pub fn is_48bit(self) -> bool {
        self.0 & Self::BIT48 != 0
    }

    /// Size of one table entry: 8 with indexes, 4 for a block map. Also the table alignment.
    pub fn entry_size(self) -> usize {
        if self.has_indexes() {
            CHUNK_INDEX_SIZE
        } else {
            BLOCK_MAP_ENTRY_SIZE
        }
    }

    /// `log2` of the chunk size for a block size of `1 << blkszbits`.
    ///
    /// # Errors
    ///
    /// [`Error::ChunkBitsTooLarge`] if the chunk size would not fit in 64 bits.
    pub fn chunkbits(self, blkszbits: u8) -> Result<u8, Error> {
        let bits = blkszbits.saturating_add(self.blkbits());
        if bits >= 64 {
            Err(Error::ChunkBitsTooLarge { chunkbits: bits })
        } else {
            Ok(bits)
        }
    }

    /// Number of table entries the kernel uses for a file of `size` bytes:
    /// `ceil(size / chunk size)`.
    ///
    /// # Errors
    ///
    /// As [`ChunkFormat::chunkbits`].
    pub fn chunk_count(self, size: u64, blkszbits: u8) -> Result<u64, Error> {
        let bits = self.chunkbits(blkszbits)?;
        Ok(size.div_ceil(1u64 << bits))
    }
}

/// Where one chunk lives, decoded from either table form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkMapping {
    /// A hole: the chunk reads as zeros.
    Hole,
    /// Mapped at `blkaddr` of device `device_id` (already masked; 0 is the primary device).
    Mapped {
        /// Device id after masking with `device_id_mask`.
        device_id: u16,
        /// Start block of the chunk on that device.
        blkaddr: BlkAddr,
    },
}

/// An 8-byte chunk index entry.
#[doc(alias = "erofs_inode_chunk_index")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ChunkIndex {
    /// High 16 bits of the start block with [`ChunkFormat::BIT48`]; otherwise "advise",
    /// ignored (Nydus stores chunk-info index bits here).
    #[doc(alias = "advise")]
    pub startblk_hi: U16,
    /// Device id, masked by the superblock's `device_id_mask` before use.
    pub device_id: U16,
    /// Start block (low 32 bits); [`NULL_ADDR`] for a hole.
    #[doc(alias = "blkaddr")]
    pub startblk_lo: U32,
}

const _: () = assert!(size_of::<ChunkIndex>() == CHUNK_INDEX_SIZE);
const _: () = assert!(offset_of!(ChunkIndex, device_id) == 2);
const _: () = assert!(offset_of!(ChunkIndex, startblk_lo) == 4);

impl ChunkIndex {
    /// Decodes the entry as the kernel does: the address is 48 bits wide only with
    /// [`ChunkFormat::BIT48`] (then a hole is all 48 bits set), otherwise `startblk_lo`
    /// alone (a hole is [`NULL_ADDR`]); `device_id` is masked with `device_id_mask`
    /// ([`SuperBlock::device_id_mask`](crate::superblock::SuperBlock::device_id_mask)).
    pub fn decode(&self, format: ChunkFormat, device_id_mask: u16) -> ChunkMapping {
        let lo = u64::from(self.startblk_lo.get());
        let (addr, null) = if format.is_48bit() {
            (
                u64::from(self.startblk_hi.get()) << 32 | lo,
                (1u64 << 48) - 1,
            )
        } else {
            (lo, u64::from(NULL_ADDR))
        };
        if addr == null {
            ChunkMapping::Hole
        } else {
            ChunkMapping::Mapped {
                device_id: self.device_id.get() & device_id_mask,
                blkaddr: BlkAddr(addr),
            }
        }
    }
}

/// Decodes a 4-byte block map entry: always device 0, [`NULL_ADDR`] is a hole.
pub fn decode_block_map_entry(entry: U32) -> ChunkMapping {
    if entry.get() == NULL_ADDR {
        ChunkMapping::Hole
    } else {
        ChunkMapping::Mapped {
            device_id: 0,
            blkaddr: BlkAddr(u64::from(entry.get())),
        }
    }
}

/// A chunk table in either form, borrowed from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkTable<'a> {
    /// 4-byte block addresses on device 0.
    BlockMap(&'a [U32]),
    /// 8-byte chunk indexes.
    Indexes(&'a [ChunkIndex]),
}

impl<'a> ChunkTable<'a> {
    /// Views `count` entries of the table for `format` at the start of `bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `bytes` is shorter than the table, [`Error::Overflow`] if
    /// `count` does not fit in memory.
    pub fn parse(bytes: &'a [u8], format: ChunkFormat, count: u64) -> Result<Self, Error> {
        let n = usize::try_from(count).map_err(|_| Error::Overflow {
            what: "chunk table size",
        })?;
        let truncated = || Error::Truncated {
            what: "chunk table",
            needed: count.saturating_mul(format.entry_size() as u64),
            available: bytes.len() as u64,
        };
        if format.has_indexes() {
            <[ChunkIndex]>::ref_from_prefix_with_elems(bytes, n)
                .map(|(t, _)| ChunkTable::Indexes(t))
                .map_err(|_| truncated())
        } else {
            <[U32]>::ref_from_prefix_with_elems(bytes, n)
                .map(|(t, _)| ChunkTable::BlockMap(t))
                .map_err(|_| truncated())
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            ChunkTable::BlockMap(t) => t.len(),
            ChunkTable::Indexes(t) => t.len(),
        }
    }

    /// Whether the table has no entries (an empty file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes entry `i` (see [`ChunkIndex::decode`]); `None` past the end.
    pub fn get(&self, i: usize, format: ChunkFormat, device_id_mask: u16) -> Option<ChunkMapping> {
        match self {
            ChunkTable::BlockMap(t) => t.get(i).map(|&e| decode_block_map_entry(e)),
            ChunkTable::Indexes(t) => t.get(i).map(|e| e.decode(format, device_id_mask)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_byte_by_byte() {
        let idx = ChunkIndex {
            startblk_hi: 0x0201.into(),
            device_id: 0x0403.into(),
            startblk_lo: 0x0807_0605.into(),
        };
        assert_eq!(idx.as_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        let (back, _) = ChunkIndex::read_from_prefix(&[1, 2, 3, 4, 5, 6, 7, 8][..]).unwrap();
        assert_eq!(back, idx);
    }

    #[test]
    fn format_bits() {
        let f = ChunkFormat::new(0x20 | 3).unwrap();
        assert_eq!(f.blkbits(), 3);
        assert!(f.has_indexes());
        assert!(!f.is_48bit());
        assert_eq!(f.entry_size(), 8);
        assert_eq!(f.chunkbits(12), Ok(15));
        assert_eq!(f.chunk_count(0, 12), Ok(0));
        assert_eq!(f.chunk_count(32768, 12), Ok(1));
        assert_eq!(f.chunk_count(32769, 12), Ok(2));
        assert_eq!(ChunkFormat::new(0).unwrap().entry_size(), 4);
        assert_eq!(
            ChunkFormat::new(0x80),
            Err(Error::UnsupportedChunkFormat { format: 0x80 })
        );
        assert!(ChunkFormat::new(0x7F).unwrap().is_48bit());
        assert_eq!(
            ChunkFormat(0x1F).chunkbits(12),
            Ok(43),
            "31 + 12 still fits"
        );
        assert_eq!(
            ChunkFormat(0x1F).chunkbits(u8::MAX),
            Err(Error::ChunkBitsTooLarge { chunkbits: 255 })
        );
    }

    #[test]
    fn nydus_overload_is_ignored_without_48bit() {
        // The RAFS example from rafs-v6.md §6.5: blob 0, chunk-info 65536, uoff 0x10000000.
        let bytes = [0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00];
        let (idx, _) = ChunkIndex::ref_from_prefix(&bytes[..]).unwrap();
        let nydus = ChunkFormat(0x20 | 8);
        assert_eq!(
            idx.decode(nydus, 1),
            ChunkMapping::Mapped {
                device_id: 1,
                blkaddr: BlkAddr(0x10000)
            }
        );
        // Entry `05 00 01 00 72 01 00 00`: the 5 in startblk_hi is not an address bit.
        let bytes = [5, 0, 1, 0, 0x72, 1, 0, 0];
        let (idx, _) = ChunkIndex::ref_from_prefix(&bytes[..]).unwrap();
        assert_eq!(
            idx.decode(nydus, 1),
            ChunkMapping::Mapped {
                device_id: 1,
                blkaddr: BlkAddr(0x172)
            }
        );
        // With the 48-bit format they are.
        assert_eq!(
            idx.decode(ChunkFormat(0x60), 1),
            ChunkMapping::Mapped {
                device_id: 1,
                blkaddr: BlkAddr(5 << 32 | 0x172)
            }
        );
    }

    #[test]
    fn holes_and_masking() {
        let hole = ChunkIndex {
            startblk_hi: 0x1234.into(),
            device_id: 3.into(),
            startblk_lo: NULL_ADDR.into(),
        };
        assert_eq!(hole.decode(ChunkFormat(0x20), 3), ChunkMapping::Hole);
        assert_ne!(hole.decode(ChunkFormat(0x60), 3), ChunkMapping::Hole);
        let hole48 = ChunkIndex {
            startblk_hi: 0xFFFF.into(),
            ..hole
        };
        assert_eq!(hole48.decode(ChunkFormat(0x60), 3), ChunkMapping::Hole);
        // device_id 4 with 3 extra devices (mask 3) aliases to the primary device.
        let idx = ChunkIndex {
            startblk_hi: 0.into(),
            device_id: 4.into(),
            startblk_lo: 9.into(),
        };
        assert_eq!(
            idx.decode(ChunkFormat(0x20), 3),
            ChunkMapping::Mapped {
                device_id: 0,
                blkaddr: BlkAddr(9)
            }
        );
        assert_eq!(decode_block_map_entry(NULL_ADDR.into()), ChunkMapping::Hole);
        assert_eq!(
            decode_block_map_entry(7.into()),
            ChunkMapping::Mapped {
                device_id: 0,
                blkaddr: BlkAddr(7)
            }
        );
    }

    #[test]
    fn table_views() {
        let bytes = [1u8, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0];
        let t = ChunkTable::parse(&bytes, ChunkFormat(0), 3).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(1, ChunkFormat(0), 0), Some(ChunkMapping::Hole));
        assert_eq!(t.get(3, ChunkFormat(0), 0), None);
        let t = ChunkTable::parse(&bytes, ChunkFormat(0x20), 1).unwrap();
        assert!(matches!(t, ChunkTable::Indexes(ix) if ix.len() == 1));
        assert_eq!(
            ChunkTable::parse(&bytes, ChunkFormat(0x20), 2),
            Err(Error::Truncated {
                what: "chunk table",
                needed: 16,
                available: 12
            })
        );
        assert!(matches!(
            ChunkTable::parse(&bytes, ChunkFormat(0x20), u64::MAX),
            Err(Error::Truncated { .. } | Error::Overflow { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
                               format in proptest::prelude::any::<u16>(),
                               count in proptest::prelude::any::<u64>(),
                               mask in proptest::prelude::any::<u16>()) {
            if let Ok(f) = ChunkFormat::new(format) {
                let _ = f.chunk_count(count, 12);
                if let Ok(t) = ChunkTable::parse(&bytes, f, count % 64) {
                    for i in 0..t.len() + 1 {
                        let _ = t.get(i, f, mask);
                    }
                }
            }
        }
    }
}
