//! On-disk inodes: the 32-byte compact and 64-byte extended forms, `i_format`, file types,
//! and the decoded [`Inode`].
//!
//! An inode lives at [`SuperBlock::nid_offset`] (`meta_blkaddr * block_size + nid * 32`).
//! Bit 0 of `i_format` says which form it is; bits 1..=3 give the [`DataLayout`]. After the
//! inode come, in order: the inline xattr area ([`Inode::xattr_size`] bytes), the
//! layout-specific area (a chunk table or a compression map header and indexes), and the
//! inline tail of a [`DataLayout::FlatInline`] file.
//!
//! [`Inode::parse`] decodes either form into an owned [`Inode`] after the checks the kernel
//! makes (`erofs_read_inode`), so the offsets it hands out are computed once with checked
//! arithmetic.
//!
//! [`SuperBlock::nid_offset`]: crate::superblock::SuperBlock::nid_offset

use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::chunk::ChunkFormat;
use crate::error::Error;
use crate::superblock::{ISLOT_SIZE, SuperBlock};
use crate::{BlkAddr, Nid};

/// The 32-byte compact inode.
///
/// `i_mtime` is `i_reserved` in Linux 6.12, which gives every compact inode the superblock
/// time; erofs-utils 1.9 stores an offset from the superblock `epoch` there (always 0 in
/// images without `48BIT`, so both readings agree on mkfs.erofs images).
#[doc(alias = "erofs_inode_compact")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct InodeCompact {
    /// [`InodeFormat`] bits.
    pub i_format: U16,
    /// Inline xattr size in 4-byte units (see [`xattr_ibody_size`]).
    pub i_xattr_icount: U16,
    /// File type and permission bits.
    pub i_mode: U16,
    /// Link count; for non-directories with [`InodeFormat::NLINK_1`] instead the high 16
    /// bits of the start block / compressed block count (48-bit images).
    #[doc(alias = "i_nlink")]
    pub i_nb: U16,
    /// File size.
    pub i_size: U32,
    /// Seconds after the superblock `epoch` (erofs-utils 1.9; `i_reserved` in 6.12).
    #[doc(alias = "i_reserved")]
    pub i_mtime: U32,
    /// Layout-dependent union: start block, chunk format, rdev or compressed block count.
    pub i_u: U32,
    /// 32-bit inode number for stat compatibility (ignored by the kernel).
    pub i_ino: U32,
    /// Owner uid.
    pub i_uid: U16,
    /// Owner gid.
    pub i_gid: U16,
    /// Reserved.
    pub i_reserved: [u8; 4],
}

const _: () = assert!(size_of::<InodeCompact>() == 32);
const _: () = assert!(offset_of!(InodeCompact, i_size) == 8);
const _: () = assert!(offset_of!(InodeCompact, i_u) == 16);
const _: () = assert!(offset_of!(InodeCompact, i_uid) == 24);

/// The 64-byte extended inode.
#[doc(alias = "erofs_inode_extended")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct InodeExtended {
    /// [`InodeFormat`] bits.
    pub i_format: U16,
    /// Inline xattr size in 4-byte units (see [`xattr_ibody_size`]).
    pub i_xattr_icount: U16,
    /// File type and permission bits.
    pub i_mode: U16,
    /// High 16 bits of the start block / compressed block count (erofs-utils 1.9, read
    /// only with `48BIT`; `i_reserved` in 6.12).
    #[doc(alias = "i_reserved")]
    pub i_nb: U16,
    /// File size (must not be negative as an `i64`).
    pub i_size: U64,
    /// Layout-dependent union: start block, chunk format, rdev or compressed block count.
    pub i_u: U32,
    /// 32-bit inode number for stat compatibility (ignored by the kernel).
    pub i_ino: U32,
    /// Owner uid.
    pub i_uid: U32,
    /// Owner gid.
    pub i_gid: U32,
    /// Modification time, seconds.
    pub i_mtime: U64,
    /// Modification time, nanoseconds.
    pub i_mtime_nsec: U32,
    /// Link count.
    pub i_nlink: U32,
    /// Reserved.
    pub i_reserved2: [u8; 16],
}

const _: () = assert!(size_of::<InodeExtended>() == 64);
const _: () = assert!(offset_of!(InodeExtended, i_size) == 8);
const _: () = assert!(offset_of!(InodeExtended, i_u) == 16);
const _: () = assert!(offset_of!(InodeExtended, i_uid) == 24);
const _: () = assert!(offset_of!(InodeExtended, i_mtime) == 32);
const _: () = assert!(offset_of!(InodeExtended, i_nlink) == 44);

/// Size of the inline xattr area for `i_xattr_icount`: 0, or `12 + 4 * (icount - 1)`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "n is a u16 >= 1: 12 + 4 * (n - 1) < 2^19 fits in u32"
)]
pub fn xattr_ibody_size(i_xattr_icount: u16) -> u32 {
    match i_xattr_icount {
        0 => 0,
        n => 12 + 4 * (u32::from(n) - 1),
    }
}

/// The `i_format` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InodeFormat(pub u16);

impl InodeFormat {
    /// Bit 0: extended (64-byte) inode.
    pub const EXTENDED: u16 = 0x1;
    /// Bits 1..=3: the data layout.
    pub const DATALAYOUT_MASK: u16 = 0xE;
    /// Bit 4 of a non-directory compact inode: nlink is 1 and `i_nb` holds address bits
    /// (erofs-utils 1.9, `EROFS_I_NLINK_1_BIT`).
    pub const NLINK_1: u16 = 0x10;
    /// Bit 4 of a directory: the `.` entry is omitted (erofs-utils 1.9,
    /// `EROFS_I_DOT_OMITTED_BIT`).
    pub const DOT_OMITTED: u16 = 0x10;
    /// Every bit erofs-utils 1.9.4 knows (`EROFS_I_ALL`). Linux 6.12 accepts only `0xF`.
    pub const ALL: u16 = 0x1F;

    /// Whether this is the 64-byte extended form.
    pub fn is_extended(self) -> bool {
        self.0 & Self::EXTENDED != 0
    }

    /// The raw 3-bit data layout value.
    pub fn raw_layout(self) -> u8 {
        ((self.0 & Self::DATALAYOUT_MASK) >> 1) as u8
    }

    /// The data layout, if it is one of 0..=4.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDataLayout`] for 5..=7.
    pub fn layout(self) -> Result<DataLayout, Error> {
        DataLayout::from_raw(self.raw_layout())
    }

    /// The on-disk size of this inode form: 32 or 64.
    pub fn inode_size(self) -> u32 {
        if self.is_extended() { 64 } else { 32 }
    }
}

/// How an inode's data is stored (bits 1..=3 of `i_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataLayout {
    /// 0: contiguous blocks from the start block, no inline tail.
    FlatPlain,
    /// 1: compressed, one 8-byte index per logical cluster.
    CompressedFull,
    /// 2: contiguous blocks plus the last partial block inline after the inode.
    FlatInline,
    /// 3: compressed, bit-packed compact indexes.
    CompressedCompact,
    /// 4: chunk table (block map or chunk indexes), possibly on several devices.
    ChunkBased,
}

impl DataLayout {
    /// Decodes a raw layout value.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDataLayout`] for values above 4.
    pub fn from_raw(layout: u8) -> Result<Self, Error> {
        Ok(match layout {
            0 => DataLayout::FlatPlain,
            1 => DataLayout::CompressedFull,
            2 => DataLayout::FlatInline,
            3 => DataLayout::CompressedCompact,
            4 => DataLayout::ChunkBased,
            _ => return Err(Error::UnsupportedDataLayout { layout }),
        })
    }

    /// The raw value.
    pub fn raw(self) -> u8 {
        match self {
            DataLayout::FlatPlain => 0,
            DataLayout::CompressedFull => 1,
            DataLayout::FlatInline => 2,
            DataLayout::CompressedCompact => 3,
            DataLayout::ChunkBased => 4,
        }
    }

    /// Whether the layout is one of the two compressed ones.
    pub fn is_compressed(self) -> bool {
        matches!(
            self,
            DataLayout::CompressedFull | DataLayout::CompressedCompact
        )
    }
}

/// The type of a file, from `i_mode` or a dirent's `file_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file (`S_IFREG`, dirent type 1).
    Regular,
    /// Directory (`S_IFDIR`, 2).
    Directory,
    /// Character device (`S_IFCHR`, 3).
    CharDevice,
    /// Block device (`S_IFBLK`, 4).
    BlockDevice,
    /// Named pipe (`S_IFIFO`, 5).
    Fifo,
    /// Unix socket (`S_IFSOCK`, 6).
    Socket,
    /// Symbolic link (`S_IFLNK`, 7).
    Symlink,
}

/// `S_IFMT`: the file type bits of a mode.
pub const S_IFMT: u16 = 0o170000;

impl FileType {
    /// The type encoded in `mode & S_IFMT`.
    ///
    /// # Errors
    ///
    /// [`Error::BadFileMode`] if the type bits are not one of the seven types.
    pub fn from_mode(mode: u16) -> Result<Self, Error> {
        Ok(match mode & S_IFMT {
            0o100000 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => return Err(Error::BadFileMode { mode }),
        })
    }

    /// The `S_IFMT` bits of this type.
    pub fn mode_bits(self) -> u16 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
        }
    }

    /// Decodes a dirent `file_type` (`EROFS_FT_*`); `None` for 0 (unknown) and values
    /// above 7.
    pub fn from_dirent(code: u8) -> Option<Self> {
        Some(match code {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => return None,
        })
    }

    /// The dirent `file_type` code (`EROFS_FT_*`) for this type.
    pub fn dirent_code(self) -> u8 {
        match self {
            FileType::Regular => 1,
            FileType::Directory => 2,
            FileType::CharDevice => 3,
            FileType::BlockDevice => 4,
            FileType::Fifo => 5,
            FileType::Socket => 6,
            FileType::Symlink => 7,
        }
    }
}

/// What the superblock contributes to decoding an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeContext {
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Byte offset of nid 0: `meta_blkaddr * block_size`.
    pub meta_offset: u64,
    /// Seconds that compact inode mtimes are relative to (`epoch`).
    pub epoch: u64,
    /// Nanoseconds of compact inode mtimes (`fixed_nsec`).
    pub fixed_nsec: u32,
    /// Whether the superblock has `48BIT` (wide start blocks and block counts).
    pub has_48bit: bool,
}

impl InodeContext {
    /// The context of a superblock (preferably one returned by [`SuperBlock::parse`]).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`] if `meta_blkaddr * block_size` overflows.
    pub fn new(sb: &SuperBlock) -> Result<Self, Error> {
        Ok(Self {
            blkszbits: sb.blkszbits,
            meta_offset: u64::from(sb.meta_blkaddr.get())
                .checked_mul(sb.block_size())
                .ok_or(Error::Overflow {
                    what: "metadata area offset",
                })?,
            epoch: sb.epoch.get(),
            fixed_nsec: sb.fixed_nsec.get(),
            has_48bit: sb.has_48bit(),
        })
    }

    /// Byte offset of inode `nid` (nids with the metabox bit are refused).
    ///
    /// # Errors
    ///
    /// [`Error::BadNid`] on overflow or a metabox nid.
    pub fn nid_offset(&self, nid: Nid) -> Result<u64, Error> {
        if nid.0 & crate::superblock::NID_METABOX_BIT != 0 {
            return Err(Error::BadNid { nid: nid.0 });
        }
        nid.0
            .checked_mul(ISLOT_SIZE)
            .and_then(|o| o.checked_add(self.meta_offset))
            .ok_or(Error::BadNid { nid: nid.0 })
    }

    /// Byte offset of inode `nid` in the space it lives in: for a nid with the metabox
    /// bit (63), `(nid & !bit) * 32` inside the data of the metabox inode (erofs-utils
    /// `erofs_iloc`); otherwise [`InodeContext::nid_offset`] in the primary device.
    ///
    /// # Errors
    ///
    /// [`Error::BadNid`] on overflow.
    pub fn nid_location(&self, nid: Nid) -> Result<u64, Error> {
        if nid.0 & crate::superblock::NID_METABOX_BIT != 0 {
            return (nid.0 & !crate::superblock::NID_METABOX_BIT)
                .checked_mul(ISLOT_SIZE)
                .ok_or(Error::BadNid { nid: nid.0 });
        }
        self.nid_offset(nid)
    }

    fn block_size(&self) -> u64 {
        1u64 << self.blkszbits.min(63)
    }
}

/// The layout-dependent meaning of an inode's `i_u` union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeData {
    /// Flat layouts of regular files, directories and symlinks: the first data block.
    /// `None` is a [`DataLayout::FlatPlain`] inode whose start block is the null address
    /// (all ones), which erofs-utils 1.9 reads as a file that is one big hole.
    Flat {
        /// Start block of the data, if any.
        blkaddr: Option<BlkAddr>,
    },
    /// Chunk-based regular files, directories and symlinks.
    Chunked {
        /// The chunk format word.
        format: ChunkFormat,
    },
    /// Compressed regular files, directories and symlinks.
    Compressed {
        /// Compressed block count (used for `st_blocks`).
        blocks: u64,
    },
    /// Character and block devices: the device number in Linux "new" encoding.
    Device {
        /// Raw `rdev`; see [`InodeData::rdev_major_minor`].
        rdev: u32,
    },
    /// FIFOs and sockets have no data.
    None,
}

impl InodeData {
    /// `(major, minor)` of a device inode, decoded as the kernel's `new_decode_dev`.
    pub fn rdev_major_minor(&self) -> Option<(u32, u32)> {
        match *self {
            InodeData::Device { rdev } => Some((
                (rdev & 0xfff00) >> 8,
                (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
            )),
            _ => None,
        }
    }
}

/// A decoded inode of either form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inode {
    /// The inode's nid.
    pub nid: Nid,
    /// Byte offset of the inode in the primary device, or in the metabox inode's data
    /// for a nid with the metabox bit ([`InodeContext::nid_location`]). The offsets
    /// derived from it (xattrs, inline data, chunk and compression indexes) are in the
    /// same space.
    pub location: u64,
    /// The raw `i_format`.
    pub format: InodeFormat,
    /// The data layout.
    pub layout: DataLayout,
    /// The file type (from `mode`).
    pub file_type: FileType,
    /// The full `i_mode`, type and permission bits.
    pub mode: u16,
    /// Owner uid (16-bit in compact inodes).
    pub uid: u32,
    /// Owner gid (16-bit in compact inodes).
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, seconds (compact inodes: `epoch + i_mtime`).
    pub mtime: u64,
    /// Modification time, nanoseconds (compact inodes: the superblock's `fixed_nsec`).
    pub mtime_nsec: u32,
    /// The raw `i_xattr_icount`.
    pub xattr_icount: u16,
    /// The `i_ino` stat-compatibility number (not the kernel's inode number, the nid is).
    pub ino: u32,
    /// The interpretation of `i_u`.
    pub data: InodeData,
    block_size: u64,
}

impl Inode {
    /// Decodes the inode `nid` from `bytes`, which start at the inode (at
    /// `ctx.nid_location(nid)`) and hold at least 32 bytes, or 64 for an extended inode.
    ///
    /// Checks, as the kernel does: `i_format` has no unknown bits, the layout is 0..=4, the
    /// mode is one of the seven file types, an extended size is not negative, a chunk
    /// format has no unknown bits.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::BadNid`], [`Error::UnsupportedInodeFormat`],
    /// [`Error::UnsupportedDataLayout`], [`Error::BadFileMode`], [`Error::NegativeSize`],
    /// [`Error::UnsupportedChunkFormat`], [`Error::ChunkBitsTooLarge`].
    pub fn parse(bytes: &[u8], nid: Nid, ctx: &InodeContext) -> Result<Inode, Error> {
        let truncated = |needed: u64| Error::Truncated {
            what: "inode",
            needed,
            available: bytes.len() as u64,
        };
        let location = ctx.nid_location(nid)?;
        let (compact, _) = InodeCompact::ref_from_prefix(bytes).map_err(|_| truncated(32))?;
        let format = InodeFormat(compact.i_format.get());
        if format.0 & !InodeFormat::ALL != 0 {
            return Err(Error::UnsupportedInodeFormat { i_format: format.0 });
        }
        let layout = format.layout()?;
        let mode = compact.i_mode.get();
        let file_type = FileType::from_mode(mode)?;

        // Pieces that differ by form.
        // `nb` is the high address half when `wide_addr` says `i_nb` holds one.
        let (uid, gid, nlink, size, mtime, mtime_nsec, ino, i_u, nb, wide_addr);
        if format.is_extended() {
            let (ext, _) = InodeExtended::ref_from_prefix(bytes).map_err(|_| truncated(64))?;
            let raw_size = ext.i_size.get();
            if raw_size > i64::MAX as u64 {
                return Err(Error::NegativeSize { size: raw_size });
            }
            uid = ext.i_uid.get();
            gid = ext.i_gid.get();
            nlink = ext.i_nlink.get();
            size = raw_size;
            mtime = ext.i_mtime.get();
            mtime_nsec = ext.i_mtime_nsec.get();
            ino = ext.i_ino.get();
            i_u = ext.i_u.get();
            wide_addr = ctx.has_48bit;
            nb = if wide_addr { ext.i_nb.get() } else { 0 };
        } else {
            uid = u32::from(compact.i_uid.get());
            gid = u32::from(compact.i_gid.get());
            let nlink_1 = file_type != FileType::Directory && format.0 & InodeFormat::NLINK_1 != 0;
            wide_addr = nlink_1 && ctx.has_48bit;
            if nlink_1 {
                nlink = 1;
                nb = if wide_addr { compact.i_nb.get() } else { 0 };
            } else {
                nlink = u32::from(compact.i_nb.get());
                nb = 0;
            }
            size = u64::from(compact.i_size.get());
            mtime = ctx.epoch.saturating_add(u64::from(compact.i_mtime.get()));
            mtime_nsec = ctx.fixed_nsec;
            ino = compact.i_ino.get();
            i_u = compact.i_u.get();
        }
        let wide = u64::from(nb) << 32 | u64::from(i_u);

        let data = match file_type {
            FileType::Regular | FileType::Directory | FileType::Symlink => match layout {
                DataLayout::ChunkBased => {
                    // The chunk format is the low half of `i_u`.
                    let format = ChunkFormat::new((i_u & 0xFFFF) as u16)?;
                    format.chunkbits(ctx.blkszbits)?;
                    InodeData::Chunked { format }
                }
                DataLayout::CompressedFull | DataLayout::CompressedCompact => {
                    InodeData::Compressed { blocks: wide }
                }
                DataLayout::FlatPlain | DataLayout::FlatInline => {
                    // The null address (a hole) is all ones in as many bits as the
                    // inode stores: 48 where `i_nb` holds the high half, else 32.
                    let mask = if wide_addr {
                        (1u64 << 48) - 1
                    } else {
                        u64::from(u32::MAX)
                    };
                    let null = layout == DataLayout::FlatPlain && wide & mask == mask;
                    InodeData::Flat {
                        blkaddr: (!null).then_some(BlkAddr(wide)),
                    }
                }
            },
            FileType::CharDevice | FileType::BlockDevice => InodeData::Device { rdev: i_u },
            FileType::Fifo | FileType::Socket => InodeData::None,
        };

        Ok(Inode {
            nid,
            location,
            format,
            layout,
            file_type,
            mode,
            uid,
            gid,
            nlink,
            size,
            mtime,
            mtime_nsec,
            // Same offset in both forms.
            xattr_icount: compact.i_xattr_icount.get(),
            ino,
            data,
            block_size: ctx.block_size(),
        })
    }

    /// Whether the inode is in the 64-byte extended form.
    pub fn is_extended(&self) -> bool {
        self.format.is_extended()
    }

    /// On-disk size of the inode record: 32 or 64.
    pub fn inode_size(&self) -> u32 {
        self.format.inode_size()
    }

    /// Size of the inline xattr area (0, or `12 + 4 * (icount - 1)`).
    pub fn xattr_size(&self) -> u32 {
        xattr_ibody_size(self.xattr_icount)
    }

    /// Permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u16 {
        self.mode & 0o7777
    }

    /// Whether a directory omits its `.` entry (erofs-utils 1.9 `DOT_OMITTED`).
    pub fn dot_omitted(&self) -> bool {
        self.file_type == FileType::Directory && self.format.0 & InodeFormat::DOT_OMITTED != 0
    }

    /// Whether the inode lives in the metabox (its nid has bit 63, erofs-utils
    /// `erofs_inode_in_metabox`): [`Inode::location`] and the offsets derived from it are
    /// then offsets in the metabox inode's data.
    pub fn in_metabox(&self) -> bool {
        self.nid.0 & crate::superblock::NID_METABOX_BIT != 0
    }

    /// Byte offset of the inline xattr area (right after the inode).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`].
    pub fn xattr_offset(&self) -> Result<u64, Error> {
        self.location
            .checked_add(u64::from(self.inode_size()))
            .ok_or(Error::Overflow {
                what: "xattr area offset",
            })
    }

    /// Byte offset just past the inode and its xattrs, where layout-specific metadata and
    /// inline data begin (before any alignment).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`].
    pub fn meta_end(&self) -> Result<u64, Error> {
        self.xattr_offset()?
            .checked_add(u64::from(self.xattr_size()))
            .ok_or(Error::Overflow {
                what: "inode metadata end",
            })
    }

    /// For [`InodeData::Chunked`] inodes: `(offset, format, entry count)` of the chunk
    /// table. The table starts at [`Inode::meta_end`] rounded up to the entry size (4 or 8)
    /// and has `ceil(size / chunk size)` entries. `None` for other layouts.
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`].
    pub fn chunk_table(&self) -> Result<Option<(u64, ChunkFormat, u64)>, Error> {
        let InodeData::Chunked { format } = self.data else {
            return Ok(None);
        };
        let unit = format.entry_size() as u64;
        let offset = self
            .meta_end()?
            .checked_next_multiple_of(unit)
            .ok_or(Error::Overflow {
                what: "chunk table offset",
            })?;
        // trailing_zeros of a u64 is at most 64.
        let blkszbits = u8::try_from(self.block_size.trailing_zeros()).unwrap_or(u8::MAX);
        let count = format.chunk_count(self.size, blkszbits)?;
        Ok(Some((offset, format, count)))
    }

    /// The byte offset of the chunk table (see [`Inode::chunk_table`]).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`].
    pub fn chunk_table_offset(&self) -> Result<Option<u64>, Error> {
        Ok(self.chunk_table()?.map(|(offset, _, _)| offset))
    }

    /// Number of blocks the file's data spans: `ceil(size / block_size)`.
    pub fn data_blocks(&self) -> u64 {
        self.size.div_ceil(self.block_size)
    }

    /// For [`DataLayout::FlatInline`]: `(offset, len)` of the inline tail, which holds the
    /// last `size - (data_blocks - 1) * block_size` bytes right after the xattrs. `None`
    /// for other layouts or an empty file.
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`], or [`Error::Truncated`] (with `what = "inline data"`) if the
    /// tail would cross a block boundary, which the kernel refuses.
    pub fn inline_tail(&self) -> Result<Option<(u64, u64)>, Error> {
        if self.layout != DataLayout::FlatInline || self.size == 0 {
            return Ok(None);
        }
        let overflow = Error::Overflow {
            what: "inline data",
        };
        // size > 0, so data_blocks >= 1 and none of these fails on a valid inode.
        let len = self
            .data_blocks()
            .checked_sub(1)
            .and_then(|b| b.checked_mul(self.block_size))
            .and_then(|head| self.size.checked_sub(head))
            .ok_or(overflow)?;
        let offset = self.meta_end()?;
        let in_block = offset.checked_rem(self.block_size).ok_or(overflow)?;
        let needed = in_block.checked_add(len).ok_or(overflow)?;
        if needed > self.block_size {
            return Err(Error::Truncated {
                what: "inline data",
                needed,
                available: self.block_size,
            });
        }
        Ok(Some((offset, len)))
    }

    /// For flat layouts: the byte range `(offset, len)` of the block-aligned part of the
    /// data (all of it for [`DataLayout::FlatPlain`], all but the tail for
    /// [`DataLayout::FlatInline`]). `None` for other layouts, a hole, or when that part is
    /// empty (then the start block is meaningless; mkfs.erofs writes the null address).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`].
    pub fn flat_extent(&self) -> Result<Option<(u64, u64)>, Error> {
        let InodeData::Flat {
            blkaddr: Some(BlkAddr(blk)),
        } = self.data
        else {
            return Ok(None);
        };
        let blocks = match self.layout {
            DataLayout::FlatInline => self.data_blocks().saturating_sub(1),
            _ => self.data_blocks(),
        };
        let len = match self.layout {
            DataLayout::FlatInline => blocks
                .checked_mul(self.block_size)
                .ok_or(Error::Overflow { what: "flat data" })?,
            _ => self.size,
        };
        if len == 0 {
            // Everything is inline (mkfs then stores the null address as start block).
            return Ok(None);
        }
        let offset = blk.checked_mul(self.block_size).ok_or(Error::Overflow {
            what: "flat data offset",
        })?;
        offset.checked_add(len).ok_or(Error::Overflow {
            what: "flat data end",
        })?;
        Ok(Some((offset, len)))
    }
}

#[cfg(test)]
mod tests;
