//! Fill buffers: whole 4 KiB blocks at 4 KiB-aligned addresses, as direct I/O into a cache
//! file needs (cachefiles writes through `O_DIRECT` anonymous fds; fanotify fills use the same
//! buffers).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The block size of writes into an object: the page size the kernel requires for offsets,
/// and the alignment direct I/O requires for buffers, offsets and lengths.
pub const BLOCK_SIZE: usize = 4096;

/// One 4 KiB, 4 KiB-aligned block.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK_SIZE]);

/// A zeroed buffer whose address and length are multiples of [`BLOCK_SIZE`], as direct I/O
/// into the cache needs. Allocated once per worker and reused.
pub struct AlignedBuf {
    blocks: Vec<Block>,
}

impl AlignedBuf {
    /// A buffer of at least `len` bytes (rounded up to whole blocks, at least one block).
    pub fn new(len: usize) -> Self {
        let n = len.div_ceil(BLOCK_SIZE).max(1);
        let mut blocks = Vec::new();
        blocks.resize(n, Block::new_zeroed());
        AlignedBuf { blocks }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.blocks.len() * BLOCK_SIZE
    }

    /// Always false: a buffer has at least one block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The whole buffer as bytes.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        self.blocks.as_mut_slice().as_mut_bytes()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.len(), 8192);
        let bytes = b.as_mut_bytes();
        assert_eq!(bytes.as_ptr() as usize % BLOCK_SIZE, 0);
        assert!(bytes.iter().all(|&x| x == 0));
        assert_eq!(AlignedBuf::new(0).len(), BLOCK_SIZE);
    }
}
