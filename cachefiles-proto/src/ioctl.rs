//! The one ioctl of the protocol: `CACHEFILES_IOC_READ_COMPLETE` ("cread").
//!
//! Issue it on the object's anonymous fd with the READ's `msg_id` **as the argument value**
//! (not a pointer), after writing the data, to wake the reader. It carries no status: to fail
//! a READ, complete it without writing.

/// `_IOC_NRBITS` and friends, for the generic encoding (x86, arm, arm64, riscv, s390, ...).
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod arch {
    pub(super) const SIZE_BITS: u32 = 14;
    pub(super) const WRITE: u32 = 1;
}

/// powerpc, mips and sparc use 13 size bits and `_IOC_WRITE` = 4.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
mod arch {
    pub(super) const SIZE_BITS: u32 = 13;
    pub(super) const WRITE: u32 = 4;
}

const NR_BITS: u32 = 8;
const TYPE_BITS: u32 = 8;
const NR_SHIFT: u32 = 0;
const TYPE_SHIFT: u32 = NR_SHIFT + NR_BITS;
const SIZE_SHIFT: u32 = TYPE_SHIFT + TYPE_BITS;
const DIR_SHIFT: u32 = SIZE_SHIFT + arch::SIZE_BITS;

/// `_IOW(ty, nr, T)` with `size_of::<T>() == size`, for this target's encoding.
pub const fn iow(ty: u8, nr: u8, size: usize) -> u32 {
    (arch::WRITE << DIR_SHIFT)
        | ((size as u32) << SIZE_SHIFT)
        | ((ty as u32) << TYPE_SHIFT)
        | ((nr as u32) << NR_SHIFT)
}

/// The ioctl type of cachefiles (`0x98`).
pub const CACHEFILES_IOC_MAGIC: u8 = 0x98;

/// `CACHEFILES_IOC_READ_COMPLETE = _IOW(0x98, 1, int)`: `0x40049801` on x86-64 and arm64.
pub const CACHEFILES_IOC_READ_COMPLETE: u32 =
    iow(CACHEFILES_IOC_MAGIC, 1, size_of::<core::ffi::c_int>());

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "x86"))]
    #[test]
    fn read_complete_matches_the_kernel_number() {
        assert_eq!(CACHEFILES_IOC_READ_COMPLETE, 0x4004_9801);
    }

    #[test]
    fn iow_packs_its_parts() {
        let n = CACHEFILES_IOC_READ_COMPLETE;
        assert_eq!(n & 0xff, 1);
        assert_eq!((n >> 8) & 0xff, 0x98);
        assert_eq!((n >> SIZE_SHIFT) & ((1 << arch::SIZE_BITS) - 1), 4);
        assert_eq!(n >> DIR_SHIFT, arch::WRITE);
    }
}
