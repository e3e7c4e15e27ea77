//! The blob meta's chunk-info array (v1 and v2 records).

use super::blob::BlobFeatures;
use super::limits::bad;
use crate::error::Error;
use bitflags::bitflags;
use core::mem::size_of;
use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A chunk-info v1 entry (16 bytes, nydus `BlobChunkInfoV1Ondisk`): two bit-packed words.
#[doc(alias = "BlobChunkInfoV1Ondisk")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ChunkInfoV1 {
    /// Bits 8–11: size−1 bits 20–23; bits 12–43: uncompressed offset (in place);
    /// bits 44–63: size−1 bits 0–19.
    pub uncomp_info: U64,
    /// Bits 0–39: compressed offset; bits 40–43: size−1 bits 20–23; bits 44–63: size−1
    /// bits 0–19.
    pub comp_info: U64,
}

const _: () = assert!(size_of::<ChunkInfoV1>() == 16);

impl ChunkInfoV1 {
    /// Offset in the blob's uncompressed space.
    pub fn uncompressed_offset(&self) -> u64 {
        self.uncomp_info.get() & 0x0000_0FFF_FFFF_F000
    }

    /// Uncompressed size (1 to 16 MiB).
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "a 4-bit and a 20-bit field plus 1 fit in 25 bits"
    )]
    pub fn uncompressed_size(&self) -> u32 {
        let u = self.uncomp_info.get();
        ((((u >> 8) & 0xF) << 20 | u >> 44) + 1) as u32
    }

    /// Offset of the stored bytes in the blob.
    pub fn compressed_offset(&self) -> u64 {
        self.comp_info.get() & 0xFF_FFFF_FFFF
    }

    /// Stored size (1 to 16 MiB).
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "a 4-bit and a 20-bit field plus 1 fit in 25 bits"
    )]
    pub fn compressed_size(&self) -> u32 {
        let c = self.comp_info.get();
        ((((c >> 40) & 0xF) << 20 | c >> 44) + 1) as u32
    }

    /// Whether the stored bytes are compressed (v1: the two sizes differ).
    pub fn is_compressed(&self) -> bool {
        self.compressed_size() != self.uncompressed_size()
    }

    /// All fields.
    pub fn decode(&self) -> ChunkInfo {
        ChunkInfo {
            uncompressed_offset: self.uncompressed_offset(),
            uncompressed_size: self.uncompressed_size(),
            compressed_offset: self.compressed_offset(),
            compressed_size: self.compressed_size(),
            compressed: self.is_compressed(),
            zran: None,
        }
    }
}

bitflags! {
    /// Flags of a chunk-info v2 entry (bits 56–63 of `uncomp_info`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ChunkInfoV2Flags: u8 {
        /// The stored bytes are compressed.
        const COMPRESSED = 0x01;
        /// The chunk lives inside a gzip stream (ZRan random access).
        const ZRAN = 0x02;
    }
}

/// A chunk-info v2 entry (24 bytes, nydus `BlobChunkInfoV2Ondisk`).
#[doc(alias = "BlobChunkInfoV2Ondisk")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ChunkInfoV2 {
    /// Bits 0–31: uncompressed offset >> 12; bits 32–55: size−1; bits 56–63: flags.
    pub uncomp_info: U64,
    /// Bits 0–39: compressed offset; bits 40–63: compressed size.
    pub comp_info: U64,
    /// ZRAN: bits 0–31 offset in the context's output, bits 32–63 context index.
    pub data: U64,
}

const _: () = assert!(size_of::<ChunkInfoV2>() == 24);

impl ChunkInfoV2 {
    /// Offset in the blob's uncompressed space.
    pub fn uncompressed_offset(&self) -> u64 {
        (self.uncomp_info.get() & 0xFFFF_FFFF) << 12
    }

    /// Uncompressed size.
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "a 24-bit field plus 1 fits in u32"
    )]
    pub fn uncompressed_size(&self) -> u32 {
        (((self.uncomp_info.get() >> 32) & 0xFF_FFFF) + 1) as u32
    }

    /// The flags (unknown bits retained).
    #[allow(clippy::cast_possible_truncation, reason = "the top 8 bits of a u64")]
    pub fn flags(&self) -> ChunkInfoV2Flags {
        ChunkInfoV2Flags::from_bits_retain((self.uncomp_info.get() >> 56) as u8)
    }

    /// Offset of the stored bytes.
    pub fn compressed_offset(&self) -> u64 {
        self.comp_info.get() & 0xFF_FFFF_FFFF
    }

    /// Stored size (not minus one).
    #[allow(clippy::cast_possible_truncation, reason = "the top 24 bits of a u64")]
    pub fn compressed_size(&self) -> u32 {
        (self.comp_info.get() >> 40) as u32
    }

    /// ZRAN: `(context index, offset in the context's inflated output)`.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the high and low 32-bit halves of a u64"
    )]
    pub fn zran(&self) -> Option<(u32, u32)> {
        let d = self.data.get();
        self.flags()
            .contains(ChunkInfoV2Flags::ZRAN)
            .then_some(((d >> 32) as u32, d as u32))
    }

    /// All fields.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] for flag bits other than COMPRESSED and ZRAN.
    pub fn decode(&self) -> Result<ChunkInfo, Error> {
        let flags = self.flags();
        if !ChunkInfoV2Flags::all().contains(flags) {
            return Err(bad("unknown chunk-info v2 flags", flags.bits().into()));
        }
        Ok(ChunkInfo {
            uncompressed_offset: self.uncompressed_offset(),
            uncompressed_size: self.uncompressed_size(),
            compressed_offset: self.compressed_offset(),
            compressed_size: self.compressed_size(),
            compressed: flags.contains(ChunkInfoV2Flags::COMPRESSED),
            zran: self.zran(),
        })
    }
}

/// A decoded chunk-info entry (v1 or v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Offset in the blob's uncompressed space (4 KiB aligned in v6 blobs).
    pub uncompressed_offset: u64,
    /// Uncompressed size.
    pub uncompressed_size: u32,
    /// Offset of the stored bytes in the blob.
    pub compressed_offset: u64,
    /// Stored size.
    pub compressed_size: u32,
    /// Whether the stored bytes must be decompressed.
    pub compressed: bool,
    /// v2 ZRAN chunks: `(context index, offset in the context's output)`.
    pub zran: Option<(u32, u32)>,
}

impl ChunkInfo {
    /// End of the chunk in the uncompressed space (saturating).
    pub fn uncompressed_end(&self) -> u64 {
        self.uncompressed_offset
            .saturating_add(u64::from(self.uncompressed_size))
    }

    /// End of the stored bytes (saturating; offsets are at most 40 bits).
    pub fn compressed_end(&self) -> u64 {
        self.compressed_offset
            .saturating_add(u64::from(self.compressed_size))
    }
}

/// The decompressed chunk-info array of one blob.
#[derive(Debug, Clone, Copy)]
pub enum ChunkInfoArray<'a> {
    /// 16-byte entries.
    V1(&'a [ChunkInfoV1]),
    /// 24-byte entries.
    V2(&'a [ChunkInfoV2]),
}

impl<'a> ChunkInfoArray<'a> {
    /// View the first `count` entries of `bytes` (the decompressed array; with ZRAN, the
    /// ZRan tables that follow are ignored), v2 if `features` has CHUNK_INFO_V2.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `bytes` is too short.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "a u32 count times a record size of at most 32 cannot overflow u64"
    )]
    pub fn new(bytes: &'a [u8], features: BlobFeatures, count: u32) -> Result<Self, Error> {
        let n = count as usize;
        let v2 = features.contains(BlobFeatures::CHUNK_INFO_V2);
        let trunc = |size: u64| Error::Truncated {
            what: "chunk-info array",
            needed: u64::from(count) * size,
            available: bytes.len() as u64,
        };
        if v2 {
            <[ChunkInfoV2]>::ref_from_prefix_with_elems(bytes, n)
                .map(|(a, _)| ChunkInfoArray::V2(a))
                .map_err(|_| trunc(24))
        } else {
            <[ChunkInfoV1]>::ref_from_prefix_with_elems(bytes, n)
                .map(|(a, _)| ChunkInfoArray::V1(a))
                .map_err(|_| trunc(16))
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            ChunkInfoArray::V1(a) => a.len(),
            ChunkInfoArray::V2(a) => a.len(),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decode entry `index`; `None` past the end.
    ///
    /// # Errors
    ///
    /// See [`ChunkInfoV2::decode`].
    pub fn get(&self, index: usize) -> Option<Result<ChunkInfo, Error>> {
        match self {
            ChunkInfoArray::V1(a) => a.get(index).map(|c| Ok(c.decode())),
            ChunkInfoArray::V2(a) => a.get(index).map(ChunkInfoV2::decode),
        }
    }

    /// Decode every entry in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<ChunkInfo, Error>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}
