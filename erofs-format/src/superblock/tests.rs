use super::*;
use crate::checksum::write_superblock_checksum;
use zerocopy::FromZeros;

/// A valid superblock with every field set to a distinct value.
fn sample() -> SuperBlock {
    let mut sb = SuperBlock::new_zeroed();
    sb.magic = EROFS_SUPER_MAGIC.into();
    sb.checksum = 0x0403_0201.into();
    sb.feature_compat = 0x3.into();
    sb.blkszbits = 12;
    sb.sb_extslots = 0;
    sb.rootnid_2b = 0x0605.into();
    sb.inos = 0x0F0E_0D0C_0B0A_0908.into();
    sb.epoch = 0x1716_1514_1312_1110.into();
    sb.fixed_nsec = 0x1B1A_1918.into();
    sb.blocks_lo = 0x1F1E_1D1C.into();
    sb.meta_blkaddr = 0x2322_2120.into();
    sb.xattr_blkaddr = 0x2726_2524.into();
    sb.uuid = core::array::from_fn(|i| 0x30 + i as u8);
    sb.volume_name = *b"label\0\0\0\0\0\0\0\0\0\0\0";
    sb.feature_incompat = 0x4544_0000.into();
    sb.u1 = 0x4948.into();
    sb.extra_devices = 0x4B4A.into();
    sb.devt_slotoff = 0x4D4C.into();
    sb.dirblkbits = 0x4E;
    sb.xattr_prefix_count = 0x4F;
    sb.xattr_prefix_start = 0x5352_5150.into();
    sb.packed_nid = 0x5B5A_5958_5756_5554.into();
    sb.xattr_filter_reserved = 0x5C;
    sb.ishare_xattr_prefix_id = 0x5D;
    sb.reserved = [0x5E, 0x5F];
    sb.build_time = 0x6362_6160.into();
    sb.rootnid_8b = 0x6B6A_6968_6766_6564.into();
    sb.reserved2 = [0x6C, 0x6D, 0x6E, 0x6F, 0x70, 0x71, 0x72, 0x73];
    sb
}

#[test]
#[allow(clippy::needless_range_loop)] // byte offsets are the point here
fn layout_byte_by_byte() {
    let sb = sample();
    let b = sb.as_bytes();
    assert_eq!(b.len(), 128);
    assert_eq!(&b[0..4], &[0xE2, 0xE1, 0xF5, 0xE0]);
    assert_eq!(&b[4..8], &[1, 2, 3, 4]);
    assert_eq!(&b[8..12], &[3, 0, 0, 0]);
    assert_eq!(b[12], 12);
    assert_eq!(b[13], 0);
    assert_eq!(&b[14..16], &[5, 6]);
    // Every remaining field was set so that byte i holds the value i (little endian).
    for i in 16..48 {
        assert_eq!(b[i] as usize, i - 8, "byte {i}");
    }
    for i in 48..64 {
        assert_eq!(b[i] as usize, i, "uuid byte {i}");
    }
    assert_eq!(&b[64..80], b"label\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(&b[80..84], &[0, 0, 0x44, 0x45]);
    for i in 84..128 {
        assert_eq!(b[i] as usize, i - 12, "byte {i}");
    }
    // And back.
    let (parsed, _) = SuperBlock::ref_from_prefix(b).unwrap();
    assert_eq!(*parsed, sb);
}

fn image(sb: &SuperBlock) -> [u8; 4096] {
    let mut img = [0u8; 4096];
    img[1024..1152].copy_from_slice(sb.as_bytes());
    img
}

fn valid() -> SuperBlock {
    let mut sb = SuperBlock::new_zeroed();
    sb.magic = EROFS_SUPER_MAGIC.into();
    sb.blkszbits = 12;
    sb.rootnid_2b = 36.into();
    sb.meta_blkaddr = 1.into();
    sb.xattr_blkaddr = 2.into();
    sb.epoch = 1_700_000_000.into();
    sb.feature_compat = FeatureCompat::MTIME.bits().into();
    sb
}

#[test]
fn parse_valid_and_accessors() {
    let img = image(&valid());
    let sb = SuperBlock::parse(&img).unwrap();
    assert_eq!(sb.block_size(), 4096);
    assert_eq!(sb.root_nid(), Nid(36));
    assert_eq!(sb.nid_offset(Nid(36)), Ok(4096 + 36 * 32));
    assert_eq!(sb.shared_xattr_offset(3), Ok(8192 + 12));
    assert_eq!(sb.build_time(), 1_700_000_000);
    assert_eq!(sb.volume_name(), b"");
    assert_eq!(sb.packed_nid(), None);
    assert_eq!(sb.device_id_mask(), 0);
    assert_eq!(sb.lz4_max_distance(), Some(0));
    assert_eq!(sb.available_compr_algs(), None);
    assert_eq!(sb.metabox_nid(&img), None);
    assert_eq!(sb.compat().names().collect::<Vec<_>>(), ["mtime"]);
    // Only 1152 bytes are needed without a checksum.
    assert!(SuperBlock::parse(&img[..1152]).is_ok());
}

use std::vec::Vec;

#[test]
fn checksum_is_checked_when_flagged() {
    let mut sb = valid();
    sb.feature_compat = (FeatureCompat::SB_CHKSUM | FeatureCompat::MTIME)
        .bits()
        .into();
    let mut img = image(&sb);
    img[3000] = 7;
    let sum = write_superblock_checksum(&mut img).unwrap();
    SuperBlock::parse(&img).unwrap();
    img[4095] ^= 0x80;
    assert!(matches!(
        SuperBlock::parse(&img),
        Err(Error::ChecksumMismatch { stored, .. }) if stored == sum
    ));
    // Without the flag the same corruption passes.
    img[1032] &= !1;
    assert!(SuperBlock::parse(&img).is_ok());
    // The checksum needs the whole block.
    img[1032] |= 1;
    assert!(matches!(
        SuperBlock::parse(&img[..2000]),
        Err(Error::Truncated { needed: 4096, .. })
    ));
}

#[test]
fn each_error_path() {
    let check = |edit: &dyn Fn(&mut SuperBlock), want: Error| {
        let mut sb = valid();
        edit(&mut sb);
        assert_eq!(SuperBlock::parse(&image(&sb)), Err(want));
    };
    check(
        &|sb| sb.magic = 0x1234.into(),
        Error::BadMagic { found: 0x1234 },
    );
    check(
        &|sb| sb.blkszbits = 8,
        Error::UnsupportedBlockSize { blkszbits: 8 },
    );
    check(
        &|sb| sb.blkszbits = 13,
        Error::UnsupportedBlockSize { blkszbits: 13 },
    );
    check(
        &|sb| sb.dirblkbits = 1,
        Error::UnsupportedDirBlockBits { dirblkbits: 1 },
    );
    check(
        &|sb| sb.feature_incompat = 0x8000_0204.into(),
        Error::UnknownIncompatFeatures { bits: 0x8000_0200 },
    );
    check(
        &|sb| sb.sb_extslots = 185,
        Error::TooManyExtSlots { sb_extslots: 185 },
    );
    check(
        &|sb| sb.volume_name = [b'x'; 16],
        Error::VolumeNameNotTerminated,
    );
    check(
        &|sb| sb.feature_incompat = FeatureIncompat::METABOX.bits().into(),
        Error::BadMetabox { value: 0 },
    );
    check(
        &|sb| sb.packed_nid = (NID_METABOX_BIT | 5).into(),
        Error::BadMetabox {
            value: NID_METABOX_BIT | 5,
        },
    );
    let mut sb = valid();
    sb.checksum = 1.into();
    sb.feature_compat = FeatureCompat::SB_CHKSUM.bits().into();
    assert!(matches!(
        SuperBlock::parse(&image(&sb)),
        Err(Error::ChecksumMismatch { stored: 1, .. })
    ));
    assert_eq!(
        SuperBlock::parse(&[0u8; 1100]),
        Err(Error::Truncated {
            what: "superblock",
            needed: 1152,
            available: 1100
        })
    );
    // 184 slots (128 + 16 * 184 = 3072 bytes) is exactly the kernel's limit.
    let mut sb = valid();
    sb.sb_extslots = 184;
    assert!(SuperBlock::parse(&image(&sb)).is_ok());
    // Unknown compat bits are ignored.
    sb.feature_compat = 0xFFFF_FFC2.into();
    assert!(SuperBlock::parse(&image(&sb)).is_ok());
}

#[test]
fn later_fields_need_their_bits() {
    let mut sb = valid();
    sb.rootnid_8b = 0x1_0000_0001.into();
    sb.rootnid_2b = 7.into();
    sb.blocks_lo = 10.into();
    sb.build_time = 5.into();
    sb.sb_extslots = 1;
    let mut img = image(&sb);
    img[1152..1160].copy_from_slice(&99u64.to_le_bytes());
    let parsed = SuperBlock::parse(&img).unwrap();
    assert_eq!(parsed.root_nid(), Nid(7));
    assert_eq!(parsed.blocks(), 10);
    assert_eq!(parsed.metabox_nid(&img), None);
    assert_eq!(parsed.build_time(), 1_700_000_005);

    sb.feature_incompat = (FeatureIncompat::BIT48 | FeatureIncompat::METABOX)
        .bits()
        .into();
    img[1024..1152].copy_from_slice(sb.as_bytes());
    let parsed = SuperBlock::parse(&img).unwrap();
    assert_eq!(parsed.root_nid(), Nid(0x1_0000_0001));
    assert_eq!(parsed.blocks(), 7 << 32 | 10);
    assert_eq!(parsed.metabox_nid(&img), Some(Nid(99)));
    assert_eq!(parsed.ext_slot1(&img).unwrap().metabox_nid.get(), 99);
    assert_eq!(
        parsed.incompat().names().collect::<Vec<_>>(),
        ["48bit", "metabox"]
    );
}

#[test]
fn feature_names_match_dump_erofs() {
    let all = FeatureIncompat::from_bits_retain(0x1FF);
    assert_eq!(
        all.names().collect::<Vec<_>>(),
        [
            "lz4_0padding",
            "compr_cfgs",
            "big_pcluster",
            "chunked_file",
            "device_table",
            "ztailpacking",
            "fragments",
            "dedupe",
            "xattr_prefixes",
            "48bit",
            "metabox"
        ]
    );
    assert_eq!(
        FeatureCompat::from_bits_retain(0xFF).names().count(),
        6,
        "unknown compat bits have no name"
    );
}

#[test]
fn nid_offset_overflow() {
    let mut sb = valid();
    sb.meta_blkaddr = u32::MAX.into();
    assert_eq!(
        sb.nid_offset(Nid(u64::MAX / 32)),
        Err(Error::BadNid { nid: u64::MAX / 32 })
    );
    assert_eq!(
        sb.nid_offset(Nid(NID_METABOX_BIT)),
        Err(Error::BadNid {
            nid: NID_METABOX_BIT
        })
    );
    sb.extra_devices = 3.into();
    assert_eq!(sb.device_id_mask(), 0, "no DEVICE_TABLE, no devices");
    sb.feature_incompat = FeatureIncompat::DEVICE_TABLE.bits().into();
    assert_eq!(sb.device_id_mask(), 3);
    sb.extra_devices = 4.into();
    assert_eq!(sb.device_id_mask(), 7);
    sb.extra_devices = u16::MAX.into();
    assert_eq!(sb.device_id_mask(), u16::MAX);
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4200)) {
        let _ = SuperBlock::parse(&bytes);
    }

    #[test]
    fn parse_mutated_never_panics(edits in proptest::collection::vec((1024usize..1200, proptest::prelude::any::<u8>()), 0..16)) {
        let mut img = image(&valid());
        for (i, v) in edits {
            img[i] = v;
        }
        if let Ok(sb) = SuperBlock::parse(&img) {
            let _ = sb.nid_offset(sb.root_nid());
            let _ = sb.metabox_nid(&img);
            let _ = sb.blocks();
            let _ = sb.device_id_mask();
        }
    }
}
