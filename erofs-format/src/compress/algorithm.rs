//! Compression algorithm ids and the superblock's set of available algorithms.

use crate::error::Error;
use bitflags::bitflags;

/// A compression algorithm id as stored in `h_algorithmtype` and `available_compr_algs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// LZ4 (`Z_EROFS_COMPRESSION_LZ4`).
    Lz4 = 0,
    /// MicroLZMA (`Z_EROFS_COMPRESSION_LZMA`).
    Lzma = 1,
    /// Raw DEFLATE (`Z_EROFS_COMPRESSION_DEFLATE`).
    Deflate = 2,
    /// Zstandard (`Z_EROFS_COMPRESSION_ZSTD`).
    Zstd = 3,
}

impl Algorithm {
    /// All algorithms in id order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Lz4,
        Algorithm::Lzma,
        Algorithm::Deflate,
        Algorithm::Zstd,
    ];

    /// The algorithm with on-disk id `id`, if there is one.
    pub const fn from_id(id: u8) -> Option<Algorithm> {
        match id {
            0 => Some(Algorithm::Lz4),
            1 => Some(Algorithm::Lzma),
            2 => Some(Algorithm::Deflate),
            3 => Some(Algorithm::Zstd),
            _ => None,
        }
    }

    /// The on-disk id.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The name mkfs.erofs and the kernel use (`lz4`, `lzma`, `deflate`, `zstd`).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Lz4 => "lz4",
            Algorithm::Lzma => "lzma",
            Algorithm::Deflate => "deflate",
            Algorithm::Zstd => "zstd",
        }
    }

    /// This algorithm's bit in [`AlgorithmSet`].
    pub const fn bit(self) -> AlgorithmSet {
        AlgorithmSet::from_bits_retain(1 << self as u8)
    }
}

impl core::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

bitflags! {
    /// The superblock's `available_compr_algs` bitmap (valid with `COMPR_CFGS`): bit `n` set
    /// means algorithm id `n` is used and has a configuration record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AlgorithmSet: u16 {
        /// LZ4.
        const LZ4 = 1 << 0;
        /// MicroLZMA.
        const LZMA = 1 << 1;
        /// DEFLATE.
        const DEFLATE = 1 << 2;
        /// Zstandard.
        const ZSTD = 1 << 3;
    }
}

impl AlgorithmSet {
    /// Whether `algorithm` is in the set.
    pub const fn has(self, algorithm: Algorithm) -> bool {
        self.bits() & (1 << algorithm as u8) != 0
    }

    /// `Ok` if `algorithm` is in the set. The kernel refuses a pcluster whose algorithm
    /// the superblock does not list (`-EFSCORRUPTED`).
    ///
    /// # Errors
    ///
    /// [`Error::AlgorithmNotAvailable`].
    pub fn require(self, algorithm: Algorithm) -> Result<(), Error> {
        if self.has(algorithm) {
            Ok(())
        } else {
            Err(Error::AlgorithmNotAvailable { id: algorithm.id() })
        }
    }

    /// The algorithms in the set, in id order (the order of their configuration records).
    pub fn algorithms(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL.into_iter().filter(move |a| self.has(*a))
    }
}

impl Default for AlgorithmSet {
    fn default() -> Self {
        AlgorithmSet::empty()
    }
}
