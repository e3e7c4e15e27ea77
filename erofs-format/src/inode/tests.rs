use super::*;
use zerocopy::FromZeros;

fn ctx() -> InodeContext {
    InodeContext {
        blkszbits: 12,
        meta_offset: 4096,
        epoch: 1_000_000,
        fixed_nsec: 7,
        has_48bit: false,
    }
}

#[test]
fn compact_layout_byte_by_byte() {
    let i = InodeCompact {
        i_format: 0x0201.into(),
        i_xattr_icount: 0x0403.into(),
        i_mode: 0x0605.into(),
        i_nb: 0x0807.into(),
        i_size: 0x0C0B_0A09.into(),
        i_mtime: 0x100F_0E0D.into(),
        i_u: 0x1413_1211.into(),
        i_ino: 0x1817_1615.into(),
        i_uid: 0x1A19.into(),
        i_gid: 0x1C1B.into(),
        i_reserved: [0x1D, 0x1E, 0x1F, 0x20],
    };
    let b = i.as_bytes();
    assert_eq!(b.len(), 32);
    for (k, &v) in b.iter().enumerate() {
        assert_eq!(v as usize, k + 1, "byte {k}");
    }
}

#[test]
fn extended_layout_byte_by_byte() {
    let i = InodeExtended {
        i_format: 0x0201.into(),
        i_xattr_icount: 0x0403.into(),
        i_mode: 0x0605.into(),
        i_nb: 0x0807.into(),
        i_size: 0x100F_0E0D_0C0B_0A09.into(),
        i_u: 0x1413_1211.into(),
        i_ino: 0x1817_1615.into(),
        i_uid: 0x1C1B_1A19.into(),
        i_gid: 0x201F_1E1D.into(),
        i_mtime: 0x2827_2625_2423_2221.into(),
        i_mtime_nsec: 0x2C2B_2A29.into(),
        i_nlink: 0x302F_2E2D.into(),
        i_reserved2: core::array::from_fn(|k| 0x31 + k as u8),
    };
    let b = i.as_bytes();
    assert_eq!(b.len(), 64);
    for (k, &v) in b.iter().enumerate() {
        assert_eq!(v as usize, k + 1, "byte {k}");
    }
}

fn compact(format: u16, mode: u16) -> InodeCompact {
    let mut i = InodeCompact::new_zeroed();
    i.i_format = format.into();
    i.i_mode = mode.into();
    i.i_nb = 2.into();
    i.i_size = 5000.into();
    i.i_u = 77.into();
    i.i_uid = 1000.into();
    i.i_gid = 100.into();
    i.i_xattr_icount = 3.into();
    i
}

#[test]
fn decode_compact() {
    let i = compact(2 << 1, 0o100644);
    let inode = Inode::parse(i.as_bytes(), Nid(3), &ctx()).unwrap();
    assert_eq!(inode.location, 4096 + 96);
    assert_eq!(inode.layout, DataLayout::FlatInline);
    assert_eq!(inode.file_type, FileType::Regular);
    assert_eq!(inode.permissions(), 0o644);
    assert_eq!((inode.uid, inode.gid, inode.nlink), (1000, 100, 2));
    assert_eq!(inode.size, 5000);
    assert_eq!((inode.mtime, inode.mtime_nsec), (1_000_000, 7));
    assert_eq!(inode.xattr_size(), 20);
    assert_eq!(
        inode.data,
        InodeData::Flat {
            blkaddr: Some(BlkAddr(77))
        }
    );
    assert_eq!(inode.xattr_offset(), Ok(4096 + 96 + 32));
    assert_eq!(inode.meta_end(), Ok(4096 + 96 + 52));
    // 5000 bytes: one full block at block 77, 904 inline bytes after the xattrs.
    assert_eq!(inode.flat_extent(), Ok(Some((77 * 4096, 4096))));
    assert_eq!(inode.inline_tail(), Ok(Some((4096 + 148, 904))));
    assert_eq!(inode.chunk_table(), Ok(None));
}

#[test]
fn metabox_nids_are_located_in_the_metabox() {
    use crate::superblock::NID_METABOX_BIT;
    let c = ctx();
    // Bit 63 set: slot 3 of the metabox's data, no meta_blkaddr base.
    assert_eq!(c.nid_location(Nid(NID_METABOX_BIT | 3)), Ok(96));
    assert_eq!(c.nid_location(Nid(3)), Ok(4096 + 96));
    assert_eq!(
        c.nid_offset(Nid(NID_METABOX_BIT | 3)),
        Err(Error::BadNid {
            nid: NID_METABOX_BIT | 3
        })
    );
    assert_eq!(
        c.nid_location(Nid(u64::MAX)),
        Err(Error::BadNid { nid: u64::MAX })
    );
    let i = compact(2 << 1, 0o100644);
    let inode = Inode::parse(i.as_bytes(), Nid(NID_METABOX_BIT | 3), &c).unwrap();
    assert!(inode.in_metabox());
    assert_eq!(inode.location, 96);
    // Everything after the inode is in the same (metabox) space.
    assert_eq!(inode.xattr_offset(), Ok(96 + 32));
    assert_eq!(inode.inline_tail(), Ok(Some((148, 904))));
    assert_eq!(inode.flat_extent(), Ok(Some((77 * 4096, 4096))));
    let plain = Inode::parse(i.as_bytes(), Nid(3), &c).unwrap();
    assert!(!plain.in_metabox());
}

#[test]
fn decode_extended_and_devices() {
    let mut e = InodeExtended::new_zeroed();
    e.i_format = (1 | 4 << 1).into();
    e.i_mode = 0o100600.into();
    e.i_size = 10_000.into();
    e.i_u = (0x20 | 1).into();
    e.i_uid = 70_000.into();
    e.i_gid = 80_000.into();
    e.i_nlink = 70_000.into();
    e.i_mtime = 42.into();
    e.i_mtime_nsec = 9.into();
    e.i_nb = 0xFFFF.into(); // must be ignored without 48BIT
    let inode = Inode::parse(e.as_bytes(), Nid(0), &ctx()).unwrap();
    assert!(inode.is_extended());
    assert_eq!(
        (inode.uid, inode.gid, inode.nlink),
        (70_000, 80_000, 70_000)
    );
    assert_eq!((inode.mtime, inode.mtime_nsec), (42, 9));
    assert_eq!(
        inode.chunk_table(),
        Ok(Some((4096 + 64, ChunkFormat(0x21), 2)))
    );

    let dev = compact(0, 0o020644);
    let mut dev = dev;
    dev.i_u = (8 << 8 | 1).into();
    let inode = Inode::parse(dev.as_bytes(), Nid(1), &ctx()).unwrap();
    assert_eq!(inode.file_type, FileType::CharDevice);
    assert_eq!(inode.data.rdev_major_minor(), Some((8, 1)));
    let fifo = compact(0, 0o010644);
    assert_eq!(
        Inode::parse(fifo.as_bytes(), Nid(1), &ctx()).unwrap().data,
        InodeData::None
    );
    for (mode, ft) in [
        (0o040755, FileType::Directory),
        (0o120777, FileType::Symlink),
        (0o060600, FileType::BlockDevice),
        (0o140755, FileType::Socket),
    ] {
        assert_eq!(FileType::from_mode(mode), Ok(ft));
        assert_eq!(FileType::from_dirent(ft.dirent_code()), Some(ft));
        assert_eq!(ft.mode_bits(), mode & S_IFMT);
    }
    assert_eq!(FileType::from_dirent(0), None);
    assert_eq!(FileType::from_dirent(8), None);
}

#[test]
fn forty_eight_bit_fields() {
    let mut c = ctx();
    c.has_48bit = true;
    // Non-directory compact inode with NLINK_1: i_nb holds the high address bits.
    let mut i = compact(InodeFormat::NLINK_1, 0o100644);
    i.i_nb = 0x12.into();
    i.i_mtime = 5.into();
    let inode = Inode::parse(i.as_bytes(), Nid(1), &c).unwrap();
    assert_eq!(inode.nlink, 1);
    assert_eq!(inode.mtime, 1_000_005);
    assert_eq!(
        inode.data,
        InodeData::Flat {
            blkaddr: Some(BlkAddr(0x12 << 32 | 77))
        }
    );
    // A directory with bit 4 set: DOT_OMITTED, nlink as usual.
    let d = compact(InodeFormat::DOT_OMITTED, 0o040755);
    let inode = Inode::parse(d.as_bytes(), Nid(1), &c).unwrap();
    assert!(inode.dot_omitted());
    assert_eq!(inode.nlink, 2);
    // A FLAT_PLAIN null start block is a hole: 32 bits of ones in a compact inode
    // without NLINK_1 (even in a 48-bit image), 48 bits where i_nb holds the high half.
    let mut h = compact(0, 0o100644);
    h.i_u = u32::MAX.into();
    for has_48bit in [false, true] {
        let c = InodeContext { has_48bit, ..ctx() };
        let inode = Inode::parse(h.as_bytes(), Nid(1), &c).unwrap();
        assert_eq!(inode.data, InodeData::Flat { blkaddr: None });
        assert_eq!(inode.flat_extent(), Ok(None));
    }
    let mut e = InodeExtended::new_zeroed();
    e.i_format = 1.into();
    e.i_mode = 0o100644.into();
    e.i_size = 1.into();
    e.i_u = u32::MAX.into();
    let parse = |e: &InodeExtended, has_48bit| {
        Inode::parse(e.as_bytes(), Nid(1), &InodeContext { has_48bit, ..ctx() })
            .unwrap()
            .data
    };
    assert_eq!(parse(&e, false), InodeData::Flat { blkaddr: None });
    assert_eq!(
        parse(&e, true),
        InodeData::Flat {
            blkaddr: Some(BlkAddr(0xFFFF_FFFF))
        }
    );
    e.i_nb = 0xFFFF.into();
    assert_eq!(parse(&e, true), InodeData::Flat { blkaddr: None });
}

#[test]
fn each_error_path() {
    let c = ctx();
    assert_eq!(
        Inode::parse(compact(0x20, 0o100644).as_bytes(), Nid(0), &c),
        Err(Error::UnsupportedInodeFormat { i_format: 0x20 })
    );
    assert_eq!(
        Inode::parse(compact(5 << 1, 0o100644).as_bytes(), Nid(0), &c),
        Err(Error::UnsupportedDataLayout { layout: 5 })
    );
    assert_eq!(
        Inode::parse(compact(0, 0o070644).as_bytes(), Nid(0), &c),
        Err(Error::BadFileMode { mode: 0o070644 })
    );
    let mut chunk = compact(4 << 1, 0o100644);
    chunk.i_u = 0x80.into();
    assert_eq!(
        Inode::parse(chunk.as_bytes(), Nid(0), &c),
        Err(Error::UnsupportedChunkFormat { format: 0x80 })
    );
    let mut e = InodeExtended::new_zeroed();
    e.i_format = 1.into();
    e.i_mode = 0o100644.into();
    e.i_size = (1u64 << 63).into();
    assert_eq!(
        Inode::parse(e.as_bytes(), Nid(0), &c),
        Err(Error::NegativeSize { size: 1 << 63 })
    );
    assert_eq!(
        Inode::parse(&e.as_bytes()[..40], Nid(0), &c),
        Err(Error::Truncated {
            what: "inode",
            needed: 64,
            available: 40
        })
    );
    assert_eq!(
        Inode::parse(&[0; 31], Nid(0), &c),
        Err(Error::Truncated {
            what: "inode",
            needed: 32,
            available: 31
        })
    );
    assert_eq!(
        Inode::parse(compact(0, 0o100644).as_bytes(), Nid(u64::MAX / 16), &c),
        Err(Error::BadNid { nid: u64::MAX / 16 })
    );
    // An inline tail that crosses a block boundary.
    let mut t = compact(2 << 1, 0o100644);
    t.i_size = 4000.into();
    let inode = Inode::parse(t.as_bytes(), Nid(120), &c).unwrap();
    assert!(matches!(
        inode.inline_tail(),
        Err(Error::Truncated {
            what: "inline data",
            ..
        })
    ));
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                          nid in proptest::prelude::any::<u64>(),
                          bits in 9u8..=12, has_48bit in proptest::prelude::any::<bool>()) {
        let c = InodeContext { blkszbits: bits, meta_offset: 1 << 20, epoch: u64::MAX - 3,
                               fixed_nsec: 0, has_48bit };
        if let Ok(inode) = Inode::parse(&bytes, Nid(nid), &c) {
            let _ = inode.chunk_table();
            let _ = inode.inline_tail();
            let _ = inode.flat_extent();
            let _ = inode.meta_end();
            let _ = inode.data.rdev_major_minor();
        }
    }
}
