//! ZRan (`targz-ref`) random-access checkpoints into a gzip blob.

use super::blob::BlobFeatures;
use super::chunk_info::ChunkInfoV2;
use super::limits::{MAX_CHUNK_SIZE, bad, table_range};
use super::meta::BlobCompressionContextHeader;
use crate::error::Error;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Most bytes of inflate history a ZRan context's dictionary holds: deflate's 32 KiB window.
pub const ZRAN_DICT_WINDOW: u32 = 1 << 15;
/// Largest inflated output of one ZRan context (nydus refuses more: its
/// `RAFS_MAX_CHUNK_SIZE`, [`MAX_CHUNK_SIZE`]).
pub const ZRAN_MAX_OUT_LEN: u32 = MAX_CHUNK_SIZE;
/// Largest gzip input of one ZRan context accepted: twice [`ZRAN_MAX_OUT_LEN`] (deflate only
/// grows data by its stored-block and member-header overhead).
pub const ZRAN_MAX_IN_LEN: u32 = 2 * MAX_CHUNK_SIZE;

/// One ZRan inflate context (40 bytes, nydus `ZranInflateContext`): a checkpoint in the
/// gzip stream of a `targz-ref` blob from which inflation can start.
///
/// Inflating `in_len` gzip bytes from `in_offset` yields `out_len` bytes of the
/// uncompressed tar stream from `out_offset`. The checkpoint sits on a deflate block
/// boundary that need not be a byte boundary: the `ctx_bits` high bits of `ctx_byte` (the
/// byte at `in_offset - 1`) are the first bits to decode ([`ZranInflateContext::prime`]).
/// Back-references reach into the `dict_size` bytes at `dict_offset` of the dictionary
/// table ([`ZranTable`]): the output just before `out_offset`, at most 32 KiB.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ZranInflateContext {
    /// Offset of the context's first (whole) byte in the gzip file.
    pub in_offset: U64,
    /// Offset of its output in the uncompressed (tar) stream.
    pub out_offset: U64,
    /// Offset of its dictionary in the dictionary table.
    pub dict_offset: U64,
    /// Gzip bytes to read from `in_offset`.
    pub in_len: U32,
    /// Bytes they inflate to.
    pub out_len: U32,
    /// Size of the dictionary (0 at the start of a gzip member, else up to 32 KiB).
    pub dict_size: U32,
    /// The byte before `in_offset`, whose high `ctx_bits` bits start the context.
    pub ctx_byte: u8,
    /// Number of bits of `ctx_byte` still to decode (0 to 7).
    pub ctx_bits: u8,
    /// Reserved.
    pub reserved: [u8; 2],
}

const _: () = assert!(size_of::<ZranInflateContext>() == 40);
const _: () = assert!(offset_of!(ZranInflateContext, dict_offset) == 16);
const _: () = assert!(offset_of!(ZranInflateContext, in_len) == 24);
const _: () = assert!(offset_of!(ZranInflateContext, out_len) == 28);
const _: () = assert!(offset_of!(ZranInflateContext, dict_size) == 32);
const _: () = assert!(offset_of!(ZranInflateContext, ctx_byte) == 36);
const _: () = assert!(offset_of!(ZranInflateContext, ctx_bits) == 37);

impl ZranInflateContext {
    /// The gzip byte range to read, `in_offset..in_offset + in_len` (`None` if it overflows).
    pub fn input_range(&self) -> Option<core::ops::Range<u64>> {
        let start = self.in_offset.get();
        Some(start..start.checked_add(self.in_len.get().into())?)
    }

    /// The bits to feed the inflater before the input (zlib's `inflatePrime`):
    /// `(count, value)`, the `ctx_bits` high bits of `ctx_byte` shifted down, or `None` when
    /// the context starts on a byte boundary.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "8 - bits only for bits in 1..=7"
    )]
    pub fn prime(&self) -> Option<(u8, u8)> {
        let bits = self.ctx_bits;
        (1..=7)
            .contains(&bits)
            .then(|| (bits, self.ctx_byte >> (8 - bits)))
    }

    /// Check the context's own fields: `ctx_bits` at most 7, an output of 1 to
    /// [`ZRAN_MAX_OUT_LEN`] bytes, an input of 1 to [`ZRAN_MAX_IN_LEN`] bytes inside 2^40,
    /// a dictionary of at most [`ZRAN_DICT_WINDOW`] bytes.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] naming the rule.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ctx_bits > 7 {
            return Err(bad("ZRan context bits", self.ctx_bits.into()));
        }
        let out_len = self.out_len.get();
        if out_len == 0 || out_len > ZRAN_MAX_OUT_LEN {
            return Err(bad("ZRan context output size", out_len.into()));
        }
        let in_len = self.in_len.get();
        if in_len == 0 || in_len > ZRAN_MAX_IN_LEN {
            return Err(bad("ZRan context input size", in_len.into()));
        }
        if self.input_range().is_none_or(|r| r.end > 1 << 40) {
            return Err(bad("ZRan context input offset", self.in_offset.get()));
        }
        if self.dict_size.get() > ZRAN_DICT_WINDOW {
            return Err(bad("ZRan dictionary size", self.dict_size.get().into()));
        }
        Ok(())
    }
}

/// The ZRan tables of a ZRAN blob, inside its decompressed chunk-info data: the context
/// array ([`ZranInflateContext`], `s_ci_zran_count` of them at `s_ci_zran_offset`, right
/// after the chunk infos) and the dictionary table after it, together
/// `s_ci_zran_size` bytes.
#[derive(Debug, Clone, Copy)]
pub struct ZranTable<'a> {
    contexts: &'a [ZranInflateContext],
    dictionaries: &'a [u8],
}

impl<'a> ZranTable<'a> {
    /// View the ZRan tables of `ci` (the whole decompressed chunk-info data) as `header`
    /// describes them, under nydus's rules: a ZRAN blob has v2 chunk infos, the table starts
    /// right after them (`24 × s_ci_entries`), lies inside `ci`, has at most one context per
    /// chunk and holds the whole context array.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] naming the rule.
    pub fn new(ci: &'a [u8], header: &BlobCompressionContextHeader) -> Result<Self, Error> {
        let features = header.features();
        if !features.contains(BlobFeatures::ZRAN | BlobFeatures::CHUNK_INFO_V2) {
            return Err(bad(
                "ZRan table without ZRAN and v2 chunk infos",
                features.bits().into(),
            ));
        }
        let entries = header.s_ci_entries.get();
        let offset = header.s_ci_zran_offset.get();
        let size = header.s_ci_zran_size.get();
        let count = header.s_ci_zran_count.get();
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "a u32 count times the 32-byte record size cannot overflow u64"
        )]
        if offset != u64::from(entries) * size_of::<ChunkInfoV2>() as u64 {
            return Err(bad("ZRan table offset", offset));
        }
        if count > entries {
            return Err(bad("more ZRan contexts than chunks", count.into()));
        }
        let range = table_range(offset, size, ci.len() as u64)
            .ok_or(bad("ZRan table beyond the chunk-info data", size))?;
        let (contexts, dictionaries) =
            <[ZranInflateContext]>::ref_from_prefix_with_elems(&ci[range], count as usize)
                .map_err(|_| bad("ZRan context array larger than the ZRan table", size))?;
        Ok(ZranTable {
            contexts,
            dictionaries,
        })
    }

    /// Number of contexts.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// Whether there are no contexts.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// The raw context array.
    pub fn contexts(&self) -> &'a [ZranInflateContext] {
        self.contexts
    }

    /// The dictionary table (every context's dictionary, back to back).
    pub fn dictionaries(&self) -> &'a [u8] {
        self.dictionaries
    }

    /// Context `index`, checked ([`ZranInflateContext::validate`]), with its dictionary.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] for an index past the table, a context that breaks a rule or a
    /// dictionary outside the dictionary table.
    pub fn context(&self, index: u32) -> Result<(&'a ZranInflateContext, &'a [u8]), Error> {
        let ctx = self
            .contexts
            .get(index as usize)
            .ok_or(bad("ZRan context index", index.into()))?;
        ctx.validate()?;
        let dict = table_range(
            ctx.dict_offset.get(),
            ctx.dict_size.get().into(),
            self.dictionaries.len() as u64,
        )
        .ok_or(bad(
            "ZRan dictionary beyond the dictionary table",
            ctx.dict_offset.get(),
        ))?;
        Ok((ctx, &self.dictionaries[dict]))
    }
}
