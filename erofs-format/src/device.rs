//! Device table slots (`struct erofs_deviceslot`): the extra devices (blobs) of a
//! multi-device image.
//!
//! With `DEVICE_TABLE`, `extra_devices` slots of 128 bytes start at byte
//! `devt_slotoff * 128` of the primary device ([`SuperBlock::device_table_offset`]). Slot
//! `k` describes device id `k + 1`; device id 0 is the primary device. In fscache mode the
//! tag is the device's cookie key (for Nydus, the blob id).
//!
//! [`SuperBlock::device_table_offset`]: crate::superblock::SuperBlock::device_table_offset

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::Error;

/// Size of one device slot.
pub const DEVICE_SLOT_SIZE: usize = 128;

/// One device table slot, 128 bytes.
#[doc(alias = "erofs_deviceslot")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DeviceSlot {
    /// Device identifier (e.g. a sha256 hex digest); NUL-padded, not necessarily terminated.
    pub tag: [u8; 64],
    /// Block count of the device (low 32 bits).
    #[doc(alias = "blocks")]
    pub blocks_lo: U32,
    /// Where the device's blocks start in the unified address space (0 = not mapped).
    #[doc(alias = "mapped_blkaddr")]
    pub uniaddr_lo: U32,
    /// High 16 bits of the block count (erofs-utils 1.9, valid with `48BIT` only).
    pub blocks_hi: U16,
    /// High 16 bits of the unified start (erofs-utils 1.9, valid with `48BIT` only).
    pub uniaddr_hi: U16,
    /// Reserved.
    pub reserved: [u8; 52],
}

const _: () = assert!(size_of::<DeviceSlot>() == DEVICE_SLOT_SIZE);
const _: () = assert!(offset_of!(DeviceSlot, blocks_lo) == 64);
const _: () = assert!(offset_of!(DeviceSlot, uniaddr_lo) == 68);
const _: () = assert!(offset_of!(DeviceSlot, blocks_hi) == 72);
const _: () = assert!(offset_of!(DeviceSlot, uniaddr_hi) == 74);

impl DeviceSlot {
    /// The tag up to its first NUL (all 64 bytes if there is none), as the kernel's
    /// `kmemdup_nul` copies it.
    pub fn tag(&self) -> &[u8] {
        let end = self.tag.iter().position(|&b| b == 0).unwrap_or(64);
        &self.tag[..end]
    }

    /// Block count; the high bits are read only when `has_48bit` (the superblock's `48BIT`).
    pub fn blocks(&self, has_48bit: bool) -> u64 {
        let hi = if has_48bit {
            u64::from(self.blocks_hi.get())
        } else {
            0
        };
        u64::from(self.blocks_lo.get()) | hi << 32
    }

    /// Start block in the unified address space (`mapped_blkaddr`); 0 means not mapped. The
    /// high bits are read only when `has_48bit`.
    pub fn mapped_blkaddr(&self, has_48bit: bool) -> u64 {
        let hi = if has_48bit {
            u64::from(self.uniaddr_hi.get())
        } else {
            0
        };
        u64::from(self.uniaddr_lo.get()) | hi << 32
    }

    /// The device table: `count` slots at the start of `bytes` (which should begin at
    /// [`SuperBlock::device_table_offset`](crate::superblock::SuperBlock::device_table_offset)).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if `bytes` holds fewer than `count` slots.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "a u16 count times the 128-byte slot size cannot overflow u64"
    )]
    pub fn table(bytes: &[u8], count: u16) -> Result<&[DeviceSlot], Error> {
        <[DeviceSlot]>::ref_from_prefix_with_elems(bytes, usize::from(count))
            .map(|(slots, _)| slots)
            .map_err(|_| Error::Truncated {
                what: "device table",
                needed: u64::from(count) * DEVICE_SLOT_SIZE as u64,
                available: bytes.len() as u64,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn layout_byte_by_byte() {
        let mut slot = DeviceSlot::new_zeroed();
        slot.tag[..4].copy_from_slice(b"blob");
        slot.blocks_lo = 0x0403_0201.into();
        slot.uniaddr_lo = 0x0807_0605.into();
        slot.blocks_hi = 0x0A09.into();
        slot.uniaddr_hi = 0x0C0B.into();
        slot.reserved[51] = 0xEE;
        let b = slot.as_bytes();
        assert_eq!(b.len(), 128);
        assert_eq!(&b[..4], b"blob");
        assert!(b[4..64].iter().all(|&x| x == 0));
        assert_eq!(&b[64..76], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(b[127], 0xEE);
        assert_eq!(slot.tag(), b"blob");
        assert_eq!(slot.blocks(false), 0x0403_0201);
        assert_eq!(slot.blocks(true), 0x0A09_0403_0201);
        assert_eq!(slot.mapped_blkaddr(false), 0x0807_0605);
        assert_eq!(slot.mapped_blkaddr(true), 0x0C0B_0807_0605);
        slot.tag = [b'x'; 64];
        assert_eq!(slot.tag().len(), 64);
    }

    #[test]
    fn table_bounds() {
        let bytes = [0u8; 300];
        assert_eq!(DeviceSlot::table(&bytes, 2).unwrap().len(), 2);
        assert_eq!(DeviceSlot::table(&bytes, 0).unwrap().len(), 0);
        assert_eq!(
            DeviceSlot::table(&bytes, 3),
            Err(Error::Truncated {
                what: "device table",
                needed: 384,
                available: 300
            })
        );
    }
}
