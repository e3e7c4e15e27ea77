//! Lcluster types and the full (8-byte) lcluster index.

use super::algorithm::Algorithm;
use super::header::LclusterMap;
use super::limits::D0_CBLKCNT;
use crate::error::Error;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The type of an lcluster (bits 0–1 of `di_advise`, `Z_EROFS_LCLUSTER_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LclusterType {
    /// Head of an uncompressed pcluster.
    Plain = 0,
    /// Head of a pcluster compressed with the HEAD1 algorithm.
    Head1 = 1,
    /// Continuation of the pcluster that started at an earlier HEAD.
    NonHead = 2,
    /// Head of a pcluster compressed with the HEAD2 algorithm.
    Head2 = 3,
}

impl LclusterType {
    /// The type encoded in the low two bits of `bits`.
    pub const fn from_bits(bits: u16) -> LclusterType {
        match bits & 3 {
            0 => LclusterType::Plain,
            1 => LclusterType::Head1,
            2 => LclusterType::NonHead,
            _ => LclusterType::Head2,
        }
    }

    /// Whether this lcluster starts a pcluster (PLAIN, HEAD1, HEAD2).
    pub const fn is_head(self) -> bool {
        !matches!(self, LclusterType::NonHead)
    }
}

/// The type of a HEAD lcluster: which decoder its pcluster needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// Stored uncompressed (shifted or interlaced).
    Plain,
    /// Compressed with the map's HEAD1 algorithm.
    Head1,
    /// Compressed with the map's HEAD2 algorithm.
    Head2,
}

impl HeadKind {
    /// The algorithm of this pcluster under `map`, `None` for PLAIN.
    pub fn algorithm(self, map: &LclusterMap) -> Option<Algorithm> {
        match self {
            HeadKind::Plain => None,
            HeadKind::Head1 => Some(map.head1),
            HeadKind::Head2 => Some(map.head2),
        }
    }

    /// The same type as an [`LclusterType`].
    pub fn lcluster_type(self) -> LclusterType {
        match self {
            HeadKind::Plain => LclusterType::Plain,
            HeadKind::Head1 => LclusterType::Head1,
            HeadKind::Head2 => LclusterType::Head2,
        }
    }

    pub(super) fn from_type(t: LclusterType) -> Option<HeadKind> {
        match t {
            LclusterType::Plain => Some(HeadKind::Plain),
            LclusterType::Head1 => Some(HeadKind::Head1),
            LclusterType::Head2 => Some(HeadKind::Head2),
            LclusterType::NonHead => None,
        }
    }
}

/// One full lcluster index (8 bytes), `COMPRESSED_FULL` layout.
///
/// `di_u` is a union: `blkaddr` for HEAD lclusters, `delta[0]` (low half) and `delta[1]`
/// (high half) for NONHEAD ones. Use [`LclusterIndex::decode`] for the meaning.
#[doc(alias = "z_erofs_lcluster_index")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LclusterIndex {
    /// Bits 0–1: [`LclusterType`]; bit 15: partial reference (dedupe).
    pub di_advise: U16,
    /// HEAD: where the extent starts within this lcluster.
    pub di_clusterofs: U16,
    /// HEAD: pcluster block address; NONHEAD: `delta[0]`, `delta[1]`.
    pub di_u: U32,
}

const _: () = assert!(size_of::<LclusterIndex>() == 8);
const _: () = assert!(offset_of!(LclusterIndex, di_clusterofs) == 2);
const _: () = assert!(offset_of!(LclusterIndex, di_u) == 4);

/// Bit 15 of `di_advise`: the HEAD pcluster is referenced only partially (`Z_EROFS_LI_PARTIAL_REF`).
pub const LI_PARTIAL_REF: u16 = 1 << 15;

impl LclusterIndex {
    /// The lcluster type.
    pub fn lcluster_type(&self) -> LclusterType {
        LclusterType::from_bits(self.di_advise.get())
    }

    /// Whether the partial-reference bit is set.
    pub fn is_partial_ref(&self) -> bool {
        self.di_advise.get() & LI_PARTIAL_REF != 0
    }

    /// `di_u.blkaddr` (HEAD lclusters).
    pub fn blkaddr(&self) -> u32 {
        self.di_u.get()
    }

    /// `di_u.delta` (NONHEAD lclusters).
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the low and high 16-bit halves of a u32, as the kernel's di_u.delta[2]"
    )]
    pub fn delta(&self) -> [u16; 2] {
        let v = self.di_u.get();
        [v as u16, (v >> 16) as u16]
    }

    /// Decode as lcluster `lcn` of a map with the given parameters (`z_erofs_load_full_lcluster`
    /// plus the common checks of `z_erofs_load_lcluster_from_disk`).
    ///
    /// # Errors
    ///
    /// [`Error::BadLcluster`] for a HEAD `clusterofs` ≥ the lcluster size, or a compressed
    /// block count on a file without big pclusters.
    pub fn decode(&self, lcn: u64, map: &LclusterMap) -> Result<Lcluster, Error> {
        let kind = self.lcluster_type();
        if kind == LclusterType::NonHead {
            let [d0, d1] = self.delta();
            if d0 & D0_CBLKCNT != 0 {
                if !(map.big_pcluster_1() || map.big_pcluster_2()) {
                    return Err(Error::BadLcluster {
                        lcn,
                        what: "compressed block count without big pcluster",
                    });
                }
                return Ok(Lcluster::NonHead {
                    lookback: 1,
                    lookahead: d1,
                    compressed_blocks: Some(d0 & !D0_CBLKCNT),
                });
            }
            return Ok(Lcluster::NonHead {
                lookback: d0,
                lookahead: d1,
                compressed_blocks: None,
            });
        }
        let kind = HeadKind::from_type(kind).unwrap_or(HeadKind::Plain); // NONHEAD returned above
        let cluster_offset = self.di_clusterofs.get();
        check_clusterofs(lcn, cluster_offset, map.lcluster_bits)?;
        Ok(Lcluster::Head {
            kind,
            cluster_offset,
            blkaddr: self.blkaddr(),
            partial_ref: self.is_partial_ref(),
        })
    }
}

pub(super) fn check_clusterofs(
    lcn: u64,
    cluster_offset: u16,
    lcluster_bits: u8,
) -> Result<(), Error> {
    if u64::from(cluster_offset) >= 1u64 << lcluster_bits.min(63) {
        return Err(Error::BadLcluster {
            lcn,
            what: "HEAD cluster offset beyond the lcluster",
        });
    }
    Ok(())
}

/// One decoded lcluster, the same for both index layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lcluster {
    /// The first lcluster of a pcluster (PLAIN, HEAD1 or HEAD2).
    Head {
        /// PLAIN, HEAD1 or HEAD2.
        kind: HeadKind,
        /// Byte offset within this lcluster where the pcluster's decoded data starts.
        cluster_offset: u16,
        /// Block address of the pcluster (for compact indexes computed from the pack base).
        blkaddr: u32,
        /// The pcluster is only partially referenced (dedupe; full indexes only).
        partial_ref: bool,
    },
    /// An lcluster inside the pcluster that started at an earlier HEAD.
    NonHead {
        /// Distance back to the HEAD lcluster (`delta[0]`; 1 on a CBLKCNT lcluster).
        lookback: u16,
        /// Distance forward to the next HEAD lcluster (`delta[1]`).
        lookahead: u16,
        /// On the first NONHEAD after a big-pcluster HEAD: the pcluster's size in blocks.
        compressed_blocks: Option<u16>,
    },
}

impl Lcluster {
    /// The lcluster type.
    pub fn lcluster_type(&self) -> LclusterType {
        match *self {
            Lcluster::Head { kind, .. } => kind.lcluster_type(),
            Lcluster::NonHead { .. } => LclusterType::NonHead,
        }
    }
}

/// The full lcluster indexes of one inode: a checked view over `count` 8-byte entries.
#[derive(Debug, Clone, Copy)]
pub struct FullIndexes<'a> {
    entries: &'a [LclusterIndex],
    map: LclusterMap,
}

impl<'a> FullIndexes<'a> {
    /// View `count` indexes at the start of `bytes` (which must begin at
    /// `map header position + 16`, see [`FULL_INDEX_OFFSET`](crate::compress::FULL_INDEX_OFFSET)). The kernel and mkfs.erofs
    /// use `count = ceil(i_size / block size)`.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `bytes` is shorter than `8 * count`.
    pub fn new(bytes: &'a [u8], count: u64, map: &LclusterMap) -> Result<Self, Error> {
        let count_usize = usize::try_from(count).map_err(|_| Error::Overflow {
            what: "full index count",
        })?;
        let (entries, _) = <[LclusterIndex]>::ref_from_prefix_with_elems(bytes, count_usize)
            .map_err(|_| Error::Truncated {
                what: "full lcluster indexes",
                needed: count.saturating_mul(8),
                available: bytes.len() as u64,
            })?;
        Ok(FullIndexes { entries, map: *map })
    }

    /// Number of lclusters.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether there are no lclusters.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw entries.
    pub fn raw(&self) -> &'a [LclusterIndex] {
        self.entries
    }

    /// Decode lcluster `lcn`.
    ///
    /// # Errors
    ///
    /// [`Error::LclusterOutOfRange`], or the errors of [`LclusterIndex::decode`].
    pub fn get(&self, lcn: u64) -> Result<Lcluster, Error> {
        let entry = usize::try_from(lcn)
            .ok()
            .and_then(|i| self.entries.get(i))
            .ok_or(Error::LclusterOutOfRange {
                lcn,
                count: self.len(),
            })?;
        entry.decode(lcn, &self.map)
    }

    /// Decode every lcluster in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Lcluster, Error>> + '_ {
        (0..self.len()).map(move |lcn| self.get(lcn))
    }
}
