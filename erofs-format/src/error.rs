//! The one error type of this crate.
//!
//! Every parser in `erofs-format` returns [`Error`] for anything it refuses. The enum is
//! small, `Copy`, allocation-free and carries the numbers that were wrong, so that a reader
//! built on top can wrap it with its own context (nid, block, path).

use core::fmt;

/// Why an on-disk structure was refused.
///
/// Variants name the rule that failed and carry the offending values. The kernel errno the
/// same condition produces at mount or lookup time is noted on each variant where it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the structure it should hold.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// An offset or length computed from on-disk values overflowed `u64`/`usize`.
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// The superblock magic is not `0xE0F5E1E2` (kernel: `-EINVAL`).
    BadMagic {
        /// The value found at byte 1024.
        found: u32,
    },
    /// `blkszbits` is outside 9..=12 (512 B to 4 KiB blocks; kernel: `-EINVAL`).
    UnsupportedBlockSize {
        /// The on-disk `blkszbits`.
        blkszbits: u8,
    },
    /// `dirblkbits` is not 0 (kernel: `-EINVAL`).
    UnsupportedDirBlockBits {
        /// The on-disk `dirblkbits`.
        dirblkbits: u8,
    },
    /// The superblock crc32c does not match (kernel: `-EBADMSG`).
    ChecksumMismatch {
        /// The checksum stored in the superblock.
        stored: u32,
        /// The checksum computed over the block.
        computed: u32,
    },
    /// Incompatible feature bits this crate does not know are set (kernel: `-EINVAL`).
    UnknownIncompatFeatures {
        /// The unknown bits only.
        bits: u32,
    },
    /// `128 + 16 * sb_extslots` does not fit in block 0 after byte 1024 (kernel: `-EINVAL`).
    TooManyExtSlots {
        /// The on-disk `sb_extslots`.
        sb_extslots: u8,
    },
    /// `volume_name` has no NUL within its 16 bytes (kernel: `-EFSCORRUPTED`).
    VolumeNameNotTerminated,
    /// The METABOX feature is set but the superblock has no extension slot for
    /// `metabox_nid`, or a special nid has the metabox bit set (erofs-utils: `-EFSCORRUPTED`).
    BadMetabox {
        /// The offending `sb_extslots` or nid.
        value: u64,
    },
    /// `i_format` has bits this crate does not know (kernel: `-EOPNOTSUPP`).
    UnsupportedInodeFormat {
        /// The on-disk `i_format`.
        i_format: u16,
    },
    /// The data layout in `i_format` is not one of 0..=4 (kernel: `-EOPNOTSUPP`).
    UnsupportedDataLayout {
        /// The 3-bit layout value.
        layout: u8,
    },
    /// `i_mode & S_IFMT` is not a known file type (kernel: `-EFSCORRUPTED`).
    BadFileMode {
        /// The on-disk `i_mode`.
        mode: u16,
    },
    /// An extended inode's `i_size` is negative as an `i64` (kernel: `-EFSCORRUPTED`).
    NegativeSize {
        /// The on-disk `i_size`.
        size: u64,
    },
    /// A chunk-based inode's chunk format has unknown bits (kernel: `-EOPNOTSUPP`).
    UnsupportedChunkFormat {
        /// The on-disk chunk `format`.
        format: u16,
    },
    /// The chunk size `block size << chunk blkbits` does not fit in 64 bits.
    ChunkBitsTooLarge {
        /// `blkszbits + (format & 0x1F)`.
        chunkbits: u8,
    },
    /// A nid whose inode would start beyond `u64` byte offsets.
    BadNid {
        /// The nid.
        nid: u64,
    },
    /// A directory block's first `nameoff` is 0, not a multiple of 12, or not below the
    /// block size (kernel: `-EFSCORRUPTED`).
    BadDirentTable {
        /// The first entry's `nameoff`.
        nameoff: u16,
        /// The size of the directory block.
        block_len: u32,
    },
    /// A dirent's name starts before the previous one, before the dirent table or beyond
    /// the directory block (kernel: `-EFSCORRUPTED`).
    BadDirentName {
        /// Index of the entry in its block.
        index: u16,
        /// The entry's `nameoff`.
        nameoff: u16,
    },
    /// A dirent's name length is 0 or over 255 (kernel: `-EFSCORRUPTED`).
    BadNameLength {
        /// Index of the entry in its block.
        index: u16,
        /// The computed name length.
        len: u32,
    },
    /// Directory entries are not in strictly increasing byte order, which breaks the
    /// kernel's binary-search lookup.
    UnsortedDirents {
        /// Index (in its block) of the first entry that is not greater than its predecessor.
        index: u16,
    },
    /// The inline xattr area is a bare 12-byte header (kernel: `-EOPNOTSUPP`).
    XattrHeaderOnly,
    /// The xattr header's shared ids or an inline entry run past `xattr_isize`
    /// (kernel: `-EFSCORRUPTED`).
    XattrOverflow {
        /// Byte offset of the offending item within the xattr area.
        offset: u32,
        /// The item's length in bytes.
        len: u32,
        /// `xattr_isize`.
        isize: u32,
    },
    /// A long xattr name prefix record is shorter than 1 or longer than 256 bytes, or its
    /// base index is not a short prefix (kernel: `-EFSCORRUPTED`).
    BadLongPrefix {
        /// The record's length field (0 means 65536).
        len: u32,
        /// The base index byte, or 0 if the record was empty.
        base_index: u8,
    },
    /// A metadata record (1.5: `le16 len` + payload) runs past the buffer.
    BadMetadataRecord {
        /// Byte offset of the record.
        offset: u64,
        /// The record's payload length.
        len: u32,
    },
    /// A compression algorithm id (map header nibble) is not one of the four known
    /// (kernel: `-EOPNOTSUPP`).
    UnsupportedAlgorithm {
        /// The id.
        id: u8,
    },
    /// `available_compr_algs` has bits beyond the four known algorithms
    /// (kernel: `-EOPNOTSUPP`).
    UnsupportedAlgorithms {
        /// The unknown bits only.
        bits: u16,
    },
    /// A map header names an algorithm the superblock does not list (kernel: `-EFSCORRUPTED`).
    AlgorithmNotAvailable {
        /// The algorithm id.
        id: u8,
    },
    /// A per-algorithm compression configuration record is refused (kernel: `-EINVAL`
    /// or `-EOPNOTSUPP`).
    BadCompressionConfig {
        /// The algorithm id.
        algorithm: u8,
        /// The rule that failed.
        what: &'static str,
        /// The offending value.
        value: u32,
    },
    /// A compressed inode's map header breaks a rule (kernel: `-EFSCORRUPTED`).
    BadMapHeader {
        /// The rule that failed.
        what: &'static str,
        /// The header's `h_advise`.
        advise: u16,
    },
    /// The lcluster size cannot be described by the index format (kernel: `-EOPNOTSUPP`
    /// or `-EINVAL`).
    UnsupportedLclusterBits {
        /// `log2` of the lcluster size.
        lcluster_bits: u8,
    },
    /// An lcluster index breaks a rule of `zmap.c` (kernel: `-EFSCORRUPTED`).
    BadLcluster {
        /// The logical cluster number.
        lcn: u64,
        /// The rule that failed.
        what: &'static str,
    },
    /// An lcluster number beyond the inode's index count.
    LclusterOutOfRange {
        /// The logical cluster number.
        lcn: u64,
        /// Number of lclusters.
        count: u64,
    },
    /// A compact index pack that is neither 8 nor 32 bytes long.
    BadCompactPack {
        /// The length given.
        len: u32,
    },
    /// A Nydus RAFS v6 structure breaks one of nydus's rules.
    BadRafs {
        /// The rule that failed.
        what: &'static str,
        /// The offending value.
        value: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated {
                what,
                needed,
                available,
            } => write!(f, "{what}: need {needed} bytes, have {available}"),
            Error::Overflow { what } => write!(f, "{what}: offset arithmetic overflows"),
            Error::BadMagic { found } => {
                write!(f, "bad superblock magic {found:#010x} (want 0xe0f5e1e2)")
            }
            Error::UnsupportedBlockSize { blkszbits } => write!(
                f,
                "unsupported block size 2^{blkszbits} (blkszbits must be 9..=12)"
            ),
            Error::UnsupportedDirBlockBits { dirblkbits } => {
                write!(f, "unsupported dirblkbits {dirblkbits} (must be 0)")
            }
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "superblock checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Error::UnknownIncompatFeatures { bits } => {
                write!(f, "unknown incompatible feature bits {bits:#x}")
            }
            Error::TooManyExtSlots { sb_extslots } => write!(
                f,
                "sb_extslots {sb_extslots} does not fit in the superblock block"
            ),
            Error::VolumeNameNotTerminated => {
                write!(f, "volume name is not NUL-terminated within 16 bytes")
            }
            Error::BadMetabox { value } => write!(f, "inconsistent metabox setup ({value:#x})"),
            Error::UnsupportedInodeFormat { i_format } => {
                write!(f, "unsupported inode i_format {i_format:#x}")
            }
            Error::UnsupportedDataLayout { layout } => {
                write!(f, "unsupported inode data layout {layout}")
            }
            Error::BadFileMode { mode } => write!(f, "bad file type in i_mode {mode:#o}"),
            Error::NegativeSize { size } => write!(f, "negative inode size {size:#x}"),
            Error::UnsupportedChunkFormat { format } => {
                write!(f, "unsupported chunk format {format:#x}")
            }
            Error::ChunkBitsTooLarge { chunkbits } => {
                write!(f, "chunk size 2^{chunkbits} is too large")
            }
            Error::BadNid { nid } => write!(f, "nid {nid} is out of range"),
            Error::BadDirentTable { nameoff, block_len } => write!(
                f,
                "bad dirent table: first nameoff {nameoff} in a {block_len}-byte block"
            ),
            Error::BadDirentName { index, nameoff } => {
                write!(
                    f,
                    "dirent {index}: name offset {nameoff} out of order or bounds"
                )
            }
            Error::BadNameLength { index, len } => {
                write!(f, "dirent {index}: bad name length {len} (must be 1..=255)")
            }
            Error::UnsortedDirents { index } => {
                write!(f, "dirent {index} is not sorted after its predecessor")
            }
            Error::XattrHeaderOnly => {
                write!(f, "inline xattr area holds only a header (not supported)")
            }
            Error::XattrOverflow { offset, len, isize } => write!(
                f,
                "xattr item at {offset} ({len} bytes) overflows the {isize}-byte xattr area"
            ),
            Error::BadLongPrefix { len, base_index } => write!(
                f,
                "bad long xattr prefix record (length {len}, base index {base_index})"
            ),
            Error::BadMetadataRecord { offset, len } => {
                write!(f, "metadata record at {offset} ({len} bytes) is truncated")
            }
            Error::UnsupportedAlgorithm { id } => {
                write!(f, "unsupported compression algorithm id {id}")
            }
            Error::UnsupportedAlgorithms { bits } => {
                write!(f, "unknown compression algorithm bits {bits:#x}")
            }
            Error::AlgorithmNotAvailable { id } => write!(
                f,
                "compression algorithm {id} is not in the superblock's available algorithms"
            ),
            Error::BadCompressionConfig {
                algorithm,
                what,
                value,
            } => write!(
                f,
                "bad configuration for compression algorithm {algorithm}: {what} ({value})"
            ),
            Error::BadMapHeader { what, advise } => {
                write!(f, "bad compression map header (advise {advise:#x}): {what}")
            }
            Error::UnsupportedLclusterBits { lcluster_bits } => {
                write!(f, "unsupported lcluster size 2^{lcluster_bits}")
            }
            Error::BadLcluster { lcn, what } => write!(f, "bad lcluster {lcn}: {what}"),
            Error::LclusterOutOfRange { lcn, count } => {
                write!(f, "lcluster {lcn} out of range ({count} lclusters)")
            }
            Error::BadCompactPack { len } => {
                write!(f, "compact index pack of {len} bytes (must be 8 or 32)")
            }
            Error::BadRafs { what, value } => {
                write!(f, "bad RAFS v6 metadata: {what} ({value:#x})")
            }
        }
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::Error;
    use std::format;

    #[test]
    fn display_carries_the_numbers() {
        assert_eq!(
            format!("{}", Error::BadMagic { found: 0x1234 }),
            "bad superblock magic 0x00001234 (want 0xe0f5e1e2)"
        );
        assert_eq!(
            format!(
                "{}",
                Error::ChecksumMismatch {
                    stored: 1,
                    computed: 0xABCD_EF01
                }
            ),
            "superblock checksum mismatch: stored 0x00000001, computed 0xabcdef01"
        );
        assert_eq!(
            format!(
                "{}",
                Error::Truncated {
                    what: "inode",
                    needed: 64,
                    available: 40
                }
            ),
            "inode: need 64 bytes, have 40"
        );
        assert_eq!(
            format!("{}", Error::BadNameLength { index: 3, len: 0 }),
            "dirent 3: bad name length 0 (must be 1..=255)"
        );
        // It is a core error, usable as `dyn Error`.
        let e: &dyn core::error::Error = &Error::XattrHeaderOnly;
        assert!(e.source().is_none());
    }
}
