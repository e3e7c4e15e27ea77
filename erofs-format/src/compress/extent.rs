//! Encoded extent records of the 48-bit layout (erofs-utils 1.9).

use super::algorithm::Algorithm;
use super::header::{ExtentMap, check_record_size};
use super::limits::PCLUSTER_MAX_SIZE;
use crate::error::Error;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bit 27 of `plen`: the extent is referenced partially (`Z_EROFS_EXTENT_PLEN_PARTIAL`).
pub const EXTENT_PLEN_PARTIAL: u32 = 1 << 27;
/// First bit of the format field of `plen` (`Z_EROFS_EXTENT_PLEN_FMT_BIT`).
pub const EXTENT_PLEN_FMT_BIT: u32 = 28;
/// Mask of the encoded length in `plen` (`Z_EROFS_EXTENT_PLEN_MASK`).
pub const EXTENT_PLEN_MASK: u32 = (PCLUSTER_MAX_SIZE << 1) - 1;

/// One encoded extent record (48-bit layout). On disk only the first
/// [`ExtentMap::record_size`] bytes of it are stored per record (4, 8, 16 or 32).
#[doc(alias = "z_erofs_extent")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Extent {
    /// Encoded length, partial bit, format (0 = stored, `n` = algorithm `n - 1`).
    pub plen: U32,
    /// Physical byte offset (low 32 bits).
    pub pstart_lo: U32,
    /// Physical byte offset (high 32 bits).
    pub pstart_hi: U32,
    /// Logical byte offset (low 32 bits).
    pub lstart_lo: U32,
    /// Logical byte offset (high 32 bits, for files of 4 GiB and more).
    pub lstart_hi: U32,
    /// Reserved.
    pub reserved: [u8; 12],
}

const _: () = assert!(size_of::<Extent>() == 32);
const _: () = assert!(offset_of!(Extent, pstart_lo) == 4);
const _: () = assert!(offset_of!(Extent, pstart_hi) == 8);
const _: () = assert!(offset_of!(Extent, lstart_lo) == 12);
const _: () = assert!(offset_of!(Extent, lstart_hi) == 16);

/// How an extent's data is stored (from the format bits of `plen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentEncoding {
    /// Stored uncompressed (shifted, or interlaced if the map says so and it is aligned).
    Stored,
    /// Compressed with this algorithm.
    Compressed(Algorithm),
    /// A format id this crate does not know (`fmt - 1`).
    Unknown(u8),
}

/// A decoded extent record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedExtent {
    /// Logical start, when the record stores it (16/32-byte records); otherwise
    /// `index << lcluster_bits`.
    pub lstart: Option<u64>,
    /// Physical byte offset (for 4-byte records, accumulated from the base).
    pub pstart: u64,
    /// The raw `plen` field.
    pub plen: u32,
}

impl EncodedExtent {
    /// The encoded length in bytes (0 for an unmapped extent, or the fragment offset for a
    /// final fragment extent).
    pub fn length(&self) -> u32 {
        self.plen & EXTENT_PLEN_MASK
    }

    /// Whether the extent is partially referenced.
    pub fn is_partial_ref(&self) -> bool {
        self.plen & EXTENT_PLEN_PARTIAL != 0
    }

    /// How the data is encoded.
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "the format field is the top bits of a u32 (fits u8); f - 1 only for f >= 1"
    )]
    pub fn encoding(&self) -> ExtentEncoding {
        match (self.plen >> EXTENT_PLEN_FMT_BIT) as u8 {
            0 => ExtentEncoding::Stored,
            f => match Algorithm::from_id(f - 1) {
                Some(a) => ExtentEncoding::Compressed(a),
                None => ExtentEncoding::Unknown(f - 1),
            },
        }
    }
}

/// The encoded extent records of one inode.
#[derive(Debug, Clone, Copy)]
pub struct EncodedExtents<'a> {
    bytes: &'a [u8],
    record_size: usize,
    count: u64,
    base: u64,
}

impl<'a> EncodedExtents<'a> {
    /// View `count` records of `map.record_size` bytes. `bytes` starts at the records
    /// ([`ExtentMap::records_offset`]); with 4-byte records it starts with the 8-byte base
    /// physical offset.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] or [`Error::Overflow`].
    pub fn new(bytes: &'a [u8], map: &ExtentMap, count: u64) -> Result<Self, Error> {
        check_record_size(map)?;
        let record_size = usize::from(map.record_size);
        let (base, body) = if record_size <= 4 {
            let (b, rest) = U32x2::read_from_prefix(bytes).map_err(|_| Error::Truncated {
                what: "extent base address",
                needed: 8,
                available: bytes.len() as u64,
            })?;
            (
                u64::from(b.0[0].get()) | u64::from(b.0[1].get()) << 32,
                rest,
            )
        } else {
            (0, bytes)
        };
        let needed = count
            .checked_mul(record_size as u64)
            .ok_or(Error::Overflow {
                what: "extent records",
            })?;
        if (body.len() as u64) < needed {
            return Err(Error::Truncated {
                what: "extent records",
                needed,
                available: body.len() as u64,
            });
        }
        Ok(EncodedExtents {
            bytes: body,
            record_size,
            count,
            base,
        })
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn record(&self, i: u64) -> Extent {
        let mut full = [0u8; 32];
        // i < count, checked against the length in new, so the range is always found.
        let range = usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(self.record_size))
            .and_then(|start| Some(start..start.checked_add(self.record_size)?));
        if let Some(src) = range.and_then(|r| self.bytes.get(r)) {
            full[..self.record_size].copy_from_slice(src);
        }
        Extent::read_from_bytes(&full).unwrap_or_else(|_| Extent::new_zeroed())
    }

    /// Decode every record in order (4-byte records accumulate the physical offset).
    pub fn iter(&self) -> impl Iterator<Item = EncodedExtent> + '_ {
        let mut pa = self.base;
        (0..self.count).map(move |i| {
            let e = self.record(i);
            let plen = e.plen.get();
            let (lstart, pstart) = match self.record_size {
                4 => {
                    let p = pa;
                    pa = pa.wrapping_add(u64::from(plen & EXTENT_PLEN_MASK));
                    (None, p)
                }
                8 => (None, u64::from(e.pstart_lo.get())),
                16 => (
                    Some(u64::from(e.lstart_lo.get())),
                    u64::from(e.pstart_lo.get()) | u64::from(e.pstart_hi.get()) << 32,
                ),
                _ => (
                    Some(u64::from(e.lstart_lo.get()) | u64::from(e.lstart_hi.get()) << 32),
                    u64::from(e.pstart_lo.get()) | u64::from(e.pstart_hi.get()) << 32,
                ),
            };
            EncodedExtent {
                lstart,
                pstart,
                plen,
            }
        })
    }
}

/// Two `le32` words: the short (8-byte) extent record.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct U32x2([U32; 2]);
