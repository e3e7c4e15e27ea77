//! The superblock checksum: crc32c over byte 1024 to the end of block 0.
//!
//! When `COMPAT_SB_CHKSUM` is set, the `checksum` field of the superblock holds a crc32c of
//! `len` bytes starting at byte 1024, computed with the `checksum` field itself zeroed, where
//! `len = block_size - 1024` for blocks larger than 1 KiB and `len = block_size` otherwise
//! (so 3072 bytes for 4 KiB blocks, 512 bytes for 512-byte blocks). The kernel seeds the CRC
//! with `0xFFFFFFFF` and does not invert the result, so in terms of the standard CRC-32C
//! (inverted at both ends): `stored == !crc32c(bytes_with_checksum_zeroed)`.
//!
//! With the `std` feature the [`crc32c`](https://docs.rs/crc32c) crate (hardware accelerated)
//! computes the CRC; without it a table-driven implementation in this module does. Both give
//! identical results (a unit test checks it).

use core::ops::Range;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::block::{MAX_BLKSZBITS, MIN_BLKSZBITS};
use crate::error::Error;

/// Byte offset of the `checksum` field in the image (1024 + 4).
const CHECKSUM_FIELD: usize = 1028;

/// Where the checksummed range starts (the superblock).
const CHECKSUM_START: usize = 1024;

/// The `checksum` field within the checksummed range.
const FIELD_IN_RANGE: core::ops::Range<usize> =
    CHECKSUM_FIELD - CHECKSUM_START..CHECKSUM_FIELD - CHECKSUM_START + 4;

/// The CRC-32C (Castagnoli) polynomial, bit-reversed.
const POLY: u32 = 0x82F6_3B78;

/// Lookup table for the byte-wise CRC-32C, computed at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i: u32 = 0;
    while i < 256 {
        let mut crc = i;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i as usize] = crc;
        i += 1;
    }
    table
};

/// Standard CRC-32C of `data` continued from `crc` (the result of an earlier call, or 0),
/// computed with the built-in table in pure Rust, whatever the features. Same contract as
/// `crc32c::crc32c_append`; [`crc32c()`] uses it when the `std` feature is off.
pub fn crc32c_append_portable(crc: u32, data: &[u8]) -> u32 {
    let mut reg = !crc;
    for &b in data {
        reg = TABLE[((reg ^ u32::from(b)) & 0xFF) as usize] ^ (reg >> 8);
    }
    !reg
}

/// Standard CRC-32C of `data` continued from `crc` (0 to start).
fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(feature = "std")]
    {
        crc32c::crc32c_append(crc, data)
    }
    #[cfg(not(feature = "std"))]
    {
        crc32c_append_portable(crc, data)
    }
}

/// The standard CRC-32C (Castagnoli, reflected, inverted at both ends) of `data`.
///
/// `crc32c(b"123456789") == 0xE306_9283`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// The byte range of the image that the superblock checksum covers, for a block size of
/// `1 << blkszbits`: `1024..block_size` if the block is larger than 1 KiB, otherwise one
/// whole block starting at byte 1024.
///
/// # Errors
///
/// [`Error::UnsupportedBlockSize`] if `blkszbits` is outside 9..=12.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "blkszbits is 9..=12 (checked first), so blksz <= 4096 and 1024 + len <= 4096"
)]
pub fn checksum_range(blkszbits: u8) -> Result<Range<usize>, Error> {
    if !(MIN_BLKSZBITS..=MAX_BLKSZBITS).contains(&blkszbits) {
        return Err(Error::UnsupportedBlockSize { blkszbits });
    }
    let blksz = 1usize << blkszbits;
    let len = if blksz > 1024 { blksz - 1024 } else { blksz };
    Ok(1024..1024 + len)
}

/// Computes the value the `checksum` field must hold for the image whose first bytes are
/// `head` (from byte 0 of the primary device), for a block size of `1 << blkszbits`.
///
/// The `checksum` field's current content is ignored (treated as zero), so this works on a
/// block 0 straight from disk.
///
/// # Errors
///
/// [`Error::UnsupportedBlockSize`] for a bad `blkszbits`, [`Error::Truncated`] if `head` ends
/// before the covered range does.
pub fn compute_superblock_checksum(head: &[u8], blkszbits: u8) -> Result<u32, Error> {
    let range = checksum_range(blkszbits)?;
    let covered = head.get(range.clone()).ok_or(Error::Truncated {
        what: "superblock checksum range",
        needed: range.end as u64,
        available: head.len() as u64,
    })?;
    // `covered` starts at byte 1024 and is at least 512 bytes long, so the split points
    // (4 and 8) are in bounds.
    let crc = crc32c_append(0, &covered[..FIELD_IN_RANGE.start]);
    let crc = crc32c_append(crc, &[0u8; 4]);
    let crc = crc32c_append(crc, &covered[FIELD_IN_RANGE.end..]);
    Ok(!crc)
}

/// Reads the stored checksum and `blkszbits` from `head` and checks that they match.
///
/// This does not look at `COMPAT_SB_CHKSUM`; [`SuperBlock::parse`] does, and calls this.
///
/// # Errors
///
/// [`Error::ChecksumMismatch`] with both values, or the errors of
/// [`compute_superblock_checksum`].
///
/// [`SuperBlock::parse`]: crate::superblock::SuperBlock::parse
pub fn verify_superblock_checksum(head: &[u8]) -> Result<(), Error> {
    let (stored, blkszbits) = read_stored(head)?;
    let computed = compute_superblock_checksum(head, blkszbits)?;
    if cfg!(fuzzing) || stored == computed {
        Ok(())
    } else {
        Err(Error::ChecksumMismatch { stored, computed })
    }
}

/// Recomputes the checksum of a (modified) block 0 and stores it in the `checksum` field.
/// Returns the new value. The `COMPAT_SB_CHKSUM` feature bit is left as it is.
///
/// # Errors
///
/// As [`compute_superblock_checksum`].
pub fn write_superblock_checksum(head: &mut [u8]) -> Result<u32, Error> {
    let (_, blkszbits) = read_stored(head)?;
    let sum = compute_superblock_checksum(head, blkszbits)?;
    head[CHECKSUM_FIELD..CHECKSUM_FIELD + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(sum)
}

/// The stored checksum and `blkszbits` of the superblock in `head`.
/// The leading fields of the superblock (at byte 1024) that the checksum needs: the
/// stored sum and the block size. `superblock.rs` asserts that they sit where
/// [`SuperBlock`](crate::superblock::SuperBlock) has them.
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ChecksumHead {
    magic: U32,
    pub(crate) checksum: U32,
    feature_compat: U32,
    pub(crate) blkszbits: u8,
}

fn read_stored(head: &[u8]) -> Result<(u32, u8), Error> {
    let bytes = head.get(1024..).unwrap_or(&[]);
    let (sb, _) = ChecksumHead::ref_from_prefix(bytes).map_err(|_| Error::Truncated {
        what: "superblock",
        needed: 1024 + 128,
        available: head.len() as u64,
    })?;
    Ok((sb.checksum.get(), sb.blkszbits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_append_portable(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn append_is_concatenation() {
        let data: [u8; 300] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        for split in [0, 1, 17, 299, 300] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
            assert_eq!(
                crc32c_append_portable(crc32c_append_portable(0, a), b),
                crc32c(&data)
            );
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn portable_matches_crc32c_crate() {
        let data: [u8; 4096] = core::array::from_fn(|i| (i * 31 + i / 7) as u8);
        for len in [0, 1, 7, 8, 9, 63, 64, 1000, 3072, 4096] {
            assert_eq!(
                crc32c_append_portable(0, &data[..len]),
                crc32c::crc32c(&data[..len]),
                "len {len}"
            );
            assert_eq!(
                crc32c_append_portable(0x1234_5678, &data[..len]),
                crc32c::crc32c_append(0x1234_5678, &data[..len])
            );
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(checksum_range(12), Ok(1024..4096));
        assert_eq!(checksum_range(11), Ok(1024..2048));
        assert_eq!(checksum_range(10), Ok(1024..2048));
        assert_eq!(checksum_range(9), Ok(1024..1536));
        assert_eq!(
            checksum_range(13),
            Err(Error::UnsupportedBlockSize { blkszbits: 13 })
        );
        assert_eq!(
            checksum_range(8),
            Err(Error::UnsupportedBlockSize { blkszbits: 8 })
        );
    }

    fn image(blkszbits: u8) -> [u8; 4096] {
        let mut img = [0u8; 4096];
        img[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        img[1036] = blkszbits;
        for (i, b) in img[1100..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        img
    }

    #[test]
    fn write_then_verify() {
        for bits in 9..=12 {
            let mut img = image(bits);
            let sum = write_superblock_checksum(&mut img).unwrap();
            assert_eq!(&img[1028..1032], &sum.to_le_bytes());
            verify_superblock_checksum(&img).unwrap();
            // The definition, spelled out: !crc32c of the range with the field zeroed.
            let range = checksum_range(bits).unwrap();
            let mut copy = img;
            copy[1028..1032].fill(0);
            assert_eq!(sum, !crc32c(&copy[range.clone()]));
            // A flipped byte inside the range is detected, one outside is not.
            let mut bad = img;
            bad[range.end - 1] ^= 1;
            assert!(matches!(
                verify_superblock_checksum(&bad),
                Err(Error::ChecksumMismatch { stored, .. }) if stored == sum
            ));
            if range.end < img.len() {
                let mut outside = img;
                outside[range.end] ^= 1;
                verify_superblock_checksum(&outside).unwrap();
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn write_verify_round_trip(bits in 9u8..=12, fill in proptest::collection::vec(proptest::prelude::any::<u8>(), 3072),
                                   flip in 0usize..4096) {
            let mut img = image(bits);
            img[1024 + 128..].copy_from_slice(&fill[..4096 - 1152]);
            let sum = write_superblock_checksum(&mut img).unwrap();
            proptest::prop_assert_eq!(verify_superblock_checksum(&img), Ok(()));
            // Portable and default implementations agree on the whole range.
            let range = checksum_range(bits).unwrap();
            let mut zeroed = img;
            zeroed[1028..1032].fill(0);
            proptest::prop_assert_eq!(!crc32c_append_portable(0, &zeroed[range.clone()]), sum);
            // Any single-bit change inside the range (outside the field) is detected.
            if range.contains(&flip) && !(1028..1032).contains(&flip) {
                img[flip] ^= 0x10;
                proptest::prop_assert!(verify_superblock_checksum(&img).is_err());
            }
        }
    }

    #[test]
    fn truncated() {
        let img = image(12);
        assert_eq!(
            compute_superblock_checksum(&img[..4000], 12),
            Err(Error::Truncated {
                what: "superblock checksum range",
                needed: 4096,
                available: 4000
            })
        );
        assert!(matches!(
            verify_superblock_checksum(&img[..1100]),
            Err(Error::Truncated { .. })
        ));
    }
}
