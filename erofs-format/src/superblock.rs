//! The superblock (`struct erofs_super_block`) at byte 1024 and its feature flags.
//!
//! [`SuperBlock`] is the raw 128-byte record. [`SuperBlock::parse`] finds it in the first
//! bytes of an image and applies the checks the kernel applies at mount
//! (`erofs_read_superblock`), so that every accessor afterwards is plain arithmetic.
//!
//! Field names follow erofs-utils 1.9 / current Linux, which renamed a few 6.12 fields when
//! the 48-bit layout arrived (`root_nid` → `rootnid_2b`, `build_time` → `epoch`,
//! `build_time_nsec` → `fixed_nsec`, `blocks` → `blocks_lo`); the old names are doc aliases.
//! Fields that only mean something under a feature bit are read through accessors that check
//! the bit ([`SuperBlock::root_nid`], [`SuperBlock::blocks`], [`SuperBlock::metabox_nid`]).

use core::mem::{offset_of, size_of};

use bitflags::bitflags;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::Error;
use crate::{BlkAddr, Nid, SUPERBLOCK_OFFSET};

/// The superblock magic, `EROFS_SUPER_MAGIC_V1`.
pub const EROFS_SUPER_MAGIC: u32 = 0xE0F5_E1E2;
pub use crate::block::{MAX_BLKSZBITS, MIN_BLKSZBITS};
/// Size of one superblock extension slot (`EROFS_SB_EXTSLOT_SIZE`).
pub const SB_EXTSLOT_SIZE: usize = 16;
/// Size of an inode slot: nids count 32-byte units (`EROFS_ISLOTBITS = 5`).
pub const ISLOT_SIZE: u64 = 32;
/// Bit 63 of a nid (in dirents and some superblock fields) says the inode lives in the
/// metabox inode (`EROFS_DIRENT_NID_METABOX_BIT`, erofs-utils 1.9).
pub const NID_METABOX_BIT: u64 = 1 << 63;

bitflags! {
    /// `feature_compat`: features a reader may ignore.
    ///
    /// Flag names match those `dump.erofs` prints ([`FeatureCompat::names`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FeatureCompat: u32 {
        /// `sb_csum`: the superblock crc32c is valid (see [`crate::checksum`]).
        const SB_CHKSUM = 0x1;
        /// `mtime`: set by mkfs.erofs; not used by the kernel.
        const MTIME = 0x2;
        /// `xattr_filter`: per-inode xattr name bloom filters are valid.
        const XATTR_FILTER = 0x4;
        /// `shared_ea_in_metabox`: the shared xattr area lives in the metabox (1.9).
        const SHARED_EA_IN_METABOX = 0x8;
        /// `plain_xattr_pfx`: long xattr prefixes stored plainly, not in the packed inode (1.9).
        const PLAIN_XATTR_PFX = 0x10;
        /// `ishare_xattrs`: inode page-cache sharing xattrs (1.9).
        const ISHARE_XATTRS = 0x20;
    }
}

bitflags! {
    /// `feature_incompat`: features a reader must understand.
    ///
    /// Several bits are shared on purpose (one bit covers two related features); the
    /// aliases are kept so that the names match the kernel and `dump.erofs`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FeatureIncompat: u32 {
        /// `lz4_0padding`: compressed data is right-aligned in its pcluster.
        const ZERO_PADDING = 0x1;
        /// `compr_cfgs`: `u1` is an algorithm bitmap followed by config records.
        const COMPR_CFGS = 0x2;
        /// `big_pcluster`: physical clusters may span several blocks (same bit as COMPR_CFGS).
        const BIG_PCLUSTER = 0x2;
        /// `chunked_file`: chunk-based inodes may be used.
        const CHUNKED_FILE = 0x4;
        /// `device_table`: `extra_devices` and `devt_slotoff` are valid.
        const DEVICE_TABLE = 0x8;
        /// `compr_head2`: second compression algorithm / HEAD2 lclusters (same bit).
        const COMPR_HEAD2 = 0x8;
        /// `ztailpacking`: compressed tail pclusters stored inline.
        const ZTAILPACKING = 0x10;
        /// `fragments`: tails or whole files in the packed inode.
        const FRAGMENTS = 0x20;
        /// `dedupe`: pclusters may be shared (same bit as FRAGMENTS).
        const DEDUPE = 0x20;
        /// `xattr_prefixes`: long xattr name prefixes.
        const XATTR_PREFIXES = 0x40;
        /// `48bit`: 48-bit block addresses, 64-bit root nid, epoch-relative mtimes
        /// (Linux 6.15+, not accepted by 6.12).
        const BIT48 = 0x80;
        /// `metabox`: metadata in a separate (compressed) metabox inode
        /// (Linux 6.17+, not accepted by 6.12).
        const METABOX = 0x100;
    }
}

/// `(flag, name)` pairs in `dump.erofs` order.
const COMPAT_NAMES: [(u32, &str); 6] = [
    (0x1, "sb_csum"),
    (0x2, "mtime"),
    (0x4, "xattr_filter"),
    (0x8, "shared_ea_in_metabox"),
    (0x10, "plain_xattr_pfx"),
    (0x20, "ishare_xattrs"),
];

/// `(flag, name)` pairs in `dump.erofs` order (shared bits appear twice).
const INCOMPAT_NAMES: [(u32, &str); 11] = [
    (0x1, "lz4_0padding"),
    (0x2, "compr_cfgs"),
    (0x2, "big_pcluster"),
    (0x4, "chunked_file"),
    (0x8, "device_table"),
    (0x10, "ztailpacking"),
    (0x20, "fragments"),
    (0x20, "dedupe"),
    (0x40, "xattr_prefixes"),
    (0x80, "48bit"),
    (0x100, "metabox"),
];

impl FeatureCompat {
    /// The names `dump.erofs` prints for the set bits, in its order. Unknown bits have no
    /// name and are skipped.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        let bits = self.bits();
        COMPAT_NAMES
            .iter()
            .filter(move |(flag, _)| bits & flag != 0)
            .map(|&(_, name)| name)
    }
}

impl FeatureIncompat {
    /// The names `dump.erofs` prints for the set bits, in its order. Shared bits yield both
    /// names (`compr_cfgs big_pcluster`, `fragments dedupe`; `device_table` only, as
    /// `dump.erofs` does).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        let bits = self.bits();
        INCOMPAT_NAMES
            .iter()
            .filter(move |(flag, _)| bits & flag != 0)
            .map(|&(_, name)| name)
    }
}

/// The superblock, 128 bytes at byte 1024 of the primary device.
#[doc(alias = "erofs_super_block")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SuperBlock {
    /// [`EROFS_SUPER_MAGIC`].
    pub magic: U32,
    /// crc32c of block 0 from byte 1024 (see [`crate::checksum`]), valid with `SB_CHKSUM`.
    pub checksum: U32,
    /// [`FeatureCompat`] bits.
    pub feature_compat: U32,
    /// log2 of the block size, 9..=12.
    pub blkszbits: u8,
    /// Number of 16-byte extension slots after these 128 bytes.
    pub sb_extslots: u8,
    /// Root directory nid (16-bit); with `48BIT` and a non-zero `rootnid_8b`, instead the
    /// high 16 bits of the block count. Read it with [`SuperBlock::root_nid`].
    #[doc(alias = "root_nid")]
    #[doc(alias = "blocks_hi")]
    pub rootnid_2b: U16,
    /// Total inode count (statfs only).
    pub inos: U64,
    /// Seconds: the build time (6.12) or, with `48BIT`, the base that compact inode mtimes
    /// and [`SuperBlock::build_time`] are added to.
    #[doc(alias = "build_time")]
    pub epoch: U64,
    /// Nanoseconds of every compact inode's mtime.
    #[doc(alias = "build_time_nsec")]
    pub fixed_nsec: U32,
    /// Block count of the primary device (low 32 bits). See [`SuperBlock::blocks`].
    #[doc(alias = "blocks")]
    pub blocks_lo: U32,
    /// Start block of the metadata (inode) area.
    pub meta_blkaddr: U32,
    /// Start block of the shared xattr area.
    pub xattr_blkaddr: U32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume label, NUL-terminated within 16 bytes.
    pub volume_name: [u8; 16],
    /// [`FeatureIncompat`] bits.
    pub feature_incompat: U32,
    /// `available_compr_algs` bitmap with `COMPR_CFGS`, otherwise `lz4_max_distance`.
    #[doc(alias = "available_compr_algs")]
    #[doc(alias = "lz4_max_distance")]
    pub u1: U16,
    /// Number of devices besides the primary (valid with `DEVICE_TABLE`).
    pub extra_devices: U16,
    /// Device table position in 128-byte units from byte 0 of the primary device.
    pub devt_slotoff: U16,
    /// Directory block size shift; must be 0.
    pub dirblkbits: u8,
    /// Number of long xattr name prefixes.
    pub xattr_prefix_count: u8,
    /// Long prefix table position in 4-byte units (in the packed inode if there is one).
    pub xattr_prefix_start: U32,
    /// nid of the packed inode (fragments, long prefixes); 0 if none.
    pub packed_nid: U64,
    /// Must be 0 for xattr name filters to be used.
    pub xattr_filter_reserved: u8,
    /// Long-prefix index of the ishare xattr (valid with `ISHARE_XATTRS`, erofs-utils 1.9).
    pub ishare_xattr_prefix_id: u8,
    /// Reserved.
    pub reserved: [u8; 2],
    /// Seconds added to `epoch` for the mkfs time (erofs-utils 1.9; 0 in older images).
    pub build_time: U32,
    /// 64-bit root nid (valid with `48BIT` when non-zero).
    pub rootnid_8b: U64,
    /// Reserved.
    pub reserved2: [u8; 8],
}

const _: () = assert!(size_of::<SuperBlock>() == 128);
const _: () = assert!(offset_of!(SuperBlock, blkszbits) == 12);
// The checksum reads these two fields through its own view of the superblock's head.
const _: () = assert!(
    offset_of!(SuperBlock, checksum) == offset_of!(crate::checksum::ChecksumHead, checksum)
);
const _: () = assert!(
    offset_of!(SuperBlock, blkszbits) == offset_of!(crate::checksum::ChecksumHead, blkszbits)
);
const _: () = assert!(offset_of!(SuperBlock, rootnid_2b) == 14);
const _: () = assert!(offset_of!(SuperBlock, epoch) == 24);
const _: () = assert!(offset_of!(SuperBlock, blocks_lo) == 36);
const _: () = assert!(offset_of!(SuperBlock, meta_blkaddr) == 40);
const _: () = assert!(offset_of!(SuperBlock, uuid) == 48);
const _: () = assert!(offset_of!(SuperBlock, feature_incompat) == 80);
const _: () = assert!(offset_of!(SuperBlock, dirblkbits) == 90);
const _: () = assert!(offset_of!(SuperBlock, packed_nid) == 96);
const _: () = assert!(offset_of!(SuperBlock, build_time) == 108);
const _: () = assert!(offset_of!(SuperBlock, rootnid_8b) == 112);

/// The first superblock extension slot (bytes 128..144 of the superblock), present when
/// `sb_extslots >= 1`. erofs-utils 1.9 keeps `metabox_nid` here.
///
/// Nydus RAFS v6 places its own extended superblock at the same position (byte 0x480) with
/// `sb_extslots == 0`, so this slot must only be read when `sb_extslots` says it exists.
#[doc(alias = "erofs_super_block")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SuperBlockExtSlot1 {
    /// nid of the metabox inode (valid with `METABOX`).
    pub metabox_nid: U64,
    /// Reserved.
    pub reserved3: [u8; 8],
}

const _: () = assert!(size_of::<SuperBlockExtSlot1>() == SB_EXTSLOT_SIZE);

impl SuperBlock {
    /// Finds and validates the superblock in `head`, the first bytes of the primary device
    /// (from byte 0; block 0 in full when the checksum is on).
    ///
    /// The checks are those of the kernel's `erofs_read_superblock`, in its order:
    /// magic; `blkszbits` in 9..=12 (512 B to 4 KiB, the x86-64 page-size cap; fscache mode
    /// needs exactly 12, which is the caller's business); `dirblkbits == 0`; the crc32c if
    /// `SB_CHKSUM` is set; no unknown incompat bits (this crate knows the erofs-utils 1.9.4
    /// set, `0x1FF`, including `48BIT` and `METABOX`, which Linux 6.12 refuses); the
    /// extension slots fit in the first 4 KiB; `volume_name` is NUL-terminated. With
    /// `METABOX` it also requires the extension slot holding `metabox_nid`, as erofs-utils does.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `head` is too short, else the variant naming the failed check.
    pub fn parse(head: &[u8]) -> Result<&SuperBlock, Error> {
        let sb = Self::locate(head)?;
        if sb.magic.get() != EROFS_SUPER_MAGIC {
            return Err(Error::BadMagic {
                found: sb.magic.get(),
            });
        }
        if !(MIN_BLKSZBITS..=MAX_BLKSZBITS).contains(&sb.blkszbits) {
            return Err(Error::UnsupportedBlockSize {
                blkszbits: sb.blkszbits,
            });
        }
        if sb.dirblkbits != 0 {
            return Err(Error::UnsupportedDirBlockBits {
                dirblkbits: sb.dirblkbits,
            });
        }
        if sb.compat().contains(FeatureCompat::SB_CHKSUM) {
            crate::checksum::verify_superblock_checksum(head)?;
        }
        let unknown = sb.feature_incompat.get() & !FeatureIncompat::all().bits();
        if unknown != 0 {
            return Err(Error::UnknownIncompatFeatures { bits: unknown });
        }
        // The kernel bounds the superblock by PAGE_SIZE - 1024 (3072 on x86-64).
        if sb.sb_size() > 4096 - 1024 {
            return Err(Error::TooManyExtSlots {
                sb_extslots: sb.sb_extslots,
            });
        }
        if !sb.volume_name.contains(&0) {
            return Err(Error::VolumeNameNotTerminated);
        }
        if sb.incompat().contains(FeatureIncompat::METABOX) && sb.sb_extslots == 0 {
            return Err(Error::BadMetabox {
                value: u64::from(sb.sb_extslots),
            });
        }
        if sb.packed_nid.get() & NID_METABOX_BIT != 0 {
            return Err(Error::BadMetabox {
                value: sb.packed_nid.get(),
            });
        }
        Ok(sb)
    }

    /// The raw superblock at byte 1024 of `head`, without any validation.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `head` is shorter than 1152 bytes.
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "compile-time constants: 1024 fits usize, 1024 + 128 fits u64"
    )]
    pub fn locate(head: &[u8]) -> Result<&SuperBlock, Error> {
        let bytes = head.get(SUPERBLOCK_OFFSET as usize..).unwrap_or(&[]);
        Self::ref_from_prefix(bytes)
            .map(|(sb, _)| sb)
            .map_err(|_| Error::Truncated {
                what: "superblock",
                needed: SUPERBLOCK_OFFSET + size_of::<SuperBlock>() as u64,
                available: head.len() as u64,
            })
    }

    /// Compat features. Unknown bits are retained (and ignored).
    pub fn compat(&self) -> FeatureCompat {
        FeatureCompat::from_bits_retain(self.feature_compat.get())
    }

    /// Incompat features. [`SuperBlock::parse`] refuses unknown bits.
    pub fn incompat(&self) -> FeatureIncompat {
        FeatureIncompat::from_bits_retain(self.feature_incompat.get())
    }

    /// Whether the 48-bit layout (`48BIT`) is in use.
    pub fn has_48bit(&self) -> bool {
        self.incompat().contains(FeatureIncompat::BIT48)
    }

    /// The block size in bytes, `1 << blkszbits`. Meaningful after [`SuperBlock::parse`]
    /// (which bounds `blkszbits` to 9..=12); on an unvalidated superblock the shift is
    /// clamped to 63 so this cannot panic.
    pub fn block_size(&self) -> u64 {
        1u64 << self.blkszbits.min(63)
    }

    /// Size of the superblock including extension slots: `128 + 16 * sb_extslots`.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "128 + 16 * a u8 widened to usize cannot overflow"
    )]
    pub fn sb_size(&self) -> usize {
        size_of::<SuperBlock>() + SB_EXTSLOT_SIZE * usize::from(self.sb_extslots)
    }

    /// The root directory's nid: `rootnid_8b` with `48BIT` when it is non-zero, otherwise
    /// the 16-bit `rootnid_2b` (as erofs-utils 1.9 reads it).
    pub fn root_nid(&self) -> Nid {
        if self.has_48bit() && self.rootnid_8b.get() != 0 {
            Nid(self.rootnid_8b.get())
        } else {
            Nid(u64::from(self.rootnid_2b.get()))
        }
    }

    /// Block count of the primary device; with `48BIT` and a 64-bit root nid the high 16
    /// bits come from the `rootnid_2b` union member.
    pub fn blocks(&self) -> u64 {
        let lo = u64::from(self.blocks_lo.get());
        if self.has_48bit() && self.rootnid_8b.get() != 0 {
            lo | u64::from(self.rootnid_2b.get()) << 32
        } else {
            lo
        }
    }

    /// The mkfs time in seconds since the Unix epoch (`epoch + build_time`), as `dump.erofs`
    /// prints it. Saturates instead of overflowing.
    pub fn build_time(&self) -> u64 {
        self.epoch
            .get()
            .saturating_add(u64::from(self.build_time.get()))
    }

    /// Start of the metadata area as a block address.
    pub fn meta_blkaddr(&self) -> BlkAddr {
        BlkAddr(u64::from(self.meta_blkaddr.get()))
    }

    /// Byte offset of inode `nid`: `meta_blkaddr * block_size + nid * 32`.
    ///
    /// Nids with the metabox bit (63) set live inside the metabox inode; this function
    /// refuses them (there is no absolute offset for them).
    ///
    /// # Errors
    ///
    /// [`Error::BadNid`] if the offset overflows `u64` or the nid has the metabox bit.
    pub fn nid_offset(&self, nid: Nid) -> Result<u64, Error> {
        if nid.0 & NID_METABOX_BIT != 0 {
            return Err(Error::BadNid { nid: nid.0 });
        }
        u64::from(self.meta_blkaddr.get())
            .checked_mul(self.block_size())
            .and_then(|base| base.checked_add(nid.0.checked_mul(ISLOT_SIZE)?))
            .ok_or(Error::BadNid { nid: nid.0 })
    }

    /// Byte offset of shared xattr `id`: `xattr_blkaddr * block_size + 4 * id`.
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`] if the offset overflows `u64` (it cannot after `parse`, but the
    /// check is kept for raw superblocks).
    pub fn shared_xattr_offset(&self, id: u32) -> Result<u64, Error> {
        u64::from(self.xattr_blkaddr.get())
            .checked_mul(self.block_size())
            .and_then(|base| base.checked_add(u64::from(id) * 4))
            .ok_or(Error::Overflow {
                what: "shared xattr offset",
            })
    }

    /// Byte offset of the device table: `devt_slotoff * 128`.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "a u16 times 128 widened to u64 cannot overflow"
    )]
    pub fn device_table_offset(&self) -> u64 {
        u64::from(self.devt_slotoff.get()) * crate::device::DEVICE_SLOT_SIZE as u64
    }

    /// Number of extra devices: `extra_devices` with `DEVICE_TABLE`, otherwise 0.
    pub fn extra_devices(&self) -> u16 {
        if self.incompat().contains(FeatureIncompat::DEVICE_TABLE) {
            self.extra_devices.get()
        } else {
            0
        }
    }

    /// The kernel's `device_id_mask`: `roundup_pow_of_two(extra_devices + 1) - 1`.
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "n is a u16 + 1 <= 65536, its power of two minus 1 fits in u16"
    )]
    pub fn device_id_mask(&self) -> u16 {
        let n = u32::from(self.extra_devices()) + 1;
        // n <= 65536, so the power of two is at most 65536 and the mask fits in u16.
        (n.next_power_of_two() - 1) as u16
    }

    /// The compression algorithm bitmap (`available_compr_algs`) with `COMPR_CFGS`.
    pub fn available_compr_algs(&self) -> Option<u16> {
        self.incompat()
            .contains(FeatureIncompat::COMPR_CFGS)
            .then(|| self.u1.get())
    }

    /// The LZ4 sliding window (`lz4_max_distance`) when `COMPR_CFGS` is not set.
    pub fn lz4_max_distance(&self) -> Option<u16> {
        (!self.incompat().contains(FeatureIncompat::COMPR_CFGS)).then(|| self.u1.get())
    }

    /// The packed inode's nid, if there is one (`packed_nid != 0`). The kernel loads it only
    /// with `FRAGMENTS`; long xattr prefixes also live in it.
    pub fn packed_nid(&self) -> Option<Nid> {
        (self.packed_nid.get() != 0).then(|| Nid(self.packed_nid.get()))
    }

    /// The volume label: `volume_name` up to its first NUL.
    pub fn volume_name(&self) -> &[u8] {
        let end = self
            .volume_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.volume_name.len());
        &self.volume_name[..end]
    }

    /// The ishare xattr's long-prefix index, with `ISHARE_XATTRS`.
    pub fn ishare_xattr_prefix_id(&self) -> Option<u8> {
        self.compat()
            .contains(FeatureCompat::ISHARE_XATTRS)
            .then_some(self.ishare_xattr_prefix_id)
    }

    /// The first extension slot, when `sb_extslots >= 1` and `head` holds it.
    #[allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "compile-time constants: 1024 + 128"
    )]
    pub fn ext_slot1<'a>(&self, head: &'a [u8]) -> Option<&'a SuperBlockExtSlot1> {
        if self.sb_extslots == 0 {
            return None;
        }
        let start = SUPERBLOCK_OFFSET as usize + size_of::<SuperBlock>();
        let bytes = head.get(start..)?;
        SuperBlockExtSlot1::ref_from_prefix(bytes)
            .ok()
            .map(|(slot, _)| slot)
    }

    /// The metabox inode's nid, with `METABOX` (read from extension slot 1 of `head`).
    pub fn metabox_nid(&self, head: &[u8]) -> Option<Nid> {
        if !self.incompat().contains(FeatureIncompat::METABOX) {
            return None;
        }
        self.ext_slot1(head).map(|s| Nid(s.metabox_nid.get()))
    }
}

#[cfg(test)]
mod tests;
