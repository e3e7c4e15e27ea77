use crate::error::Error;
use zerocopy::FromZeros;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};
extern crate std;
use super::*;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

fn ext_sb() -> RafsV6SuperBlockExt {
    let mut sb = RafsV6SuperBlockExt::new_zeroed();
    sb.s_flags = U64::new(0xB4);
    sb.s_blob_table_offset = U64::new(0x1000);
    sb.s_blob_table_size = U32::new(256);
    sb.s_chunk_size = U32::new(0x10_0000);
    sb.s_chunk_table_offset = U64::new(0x9000);
    sb.s_chunk_table_size = U64::new(720);
    sb
}

#[test]
fn ext_superblock_bytes() {
    // The worked example of rafs-v6.md §11 (0x480..0x4B0).
    let sb = ext_sb();
    let b = sb.as_bytes();
    assert_eq!(
        &b[..16],
        &[0xb4, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        &b[16..32],
        &[0, 1, 0, 0, 0, 0, 0x10, 0, 0, 0x90, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(&b[32..40], &[0xd0, 2, 0, 0, 0, 0, 0, 0]);
    assert_eq!(sb.compressor(), Some(BlobCompressor::Zstd));
    assert_eq!(sb.digester(), Some(Digester::Blake3));
    assert_eq!(sb.blob_count(), 1);
    assert!(
        sb.flags()
            .contains(RafsSuperFlags::HAS_XATTR | RafsSuperFlags::EXPLICIT_UID_GID)
    );
    sb.validate(0xA000).unwrap();
    let mut boot = vec![0u8; 0xA000];
    boot[0x480..0x580].copy_from_slice(sb.as_bytes());
    assert_eq!(RafsV6SuperBlockExt::from_bootstrap(&boot).unwrap(), &sb);
    assert_eq!(sb.blob_table(&boot).unwrap().len(), 1);
    assert_eq!(sb.chunk_table(&boot).unwrap().len(), 9);
    assert_eq!(sb.prefetch_table(&boot).unwrap().nids().count(), 0);
    assert!(matches!(
        RafsV6SuperBlockExt::from_bootstrap(&boot[..0x57F]),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn ext_superblock_rules() {
    let check = |f: &dyn Fn(&mut RafsV6SuperBlockExt), len: u64| {
        let mut sb = ext_sb();
        f(&mut sb);
        sb.validate(len)
    };
    let is_bad = |r: Result<(), Error>| matches!(r, Err(Error::BadRafs { .. }));
    assert!(is_bad(check(&|s| s.s_flags = U64::new(0x7), 0xA000)));
    assert!(is_bad(check(&|s| s.s_flags = U64::new(0x81), 0xA000)));
    assert!(is_bad(check(&|s| s.s_flags = U64::new(0x8C), 0xA000)));
    assert!(is_bad(check(
        &|s| s.s_chunk_size = U32::new(0x3000),
        0xA000
    )));
    assert!(is_bad(check(&|s| s.s_chunk_size = U32::new(0x800), 0xA000)));
    assert!(is_bad(check(
        &|s| s.s_chunk_size = U32::new(0x200_0000),
        0xA000
    )));
    assert!(is_bad(check(
        &|s| s.s_blob_table_size = U32::new(255),
        0xA000
    )));
    assert!(is_bad(check(
        &|s| s.s_blob_table_offset = U64::new(0x800),
        0xA000
    )));
    assert!(is_bad(check(
        &|s| s.s_blob_table_offset = U64::new(u64::MAX),
        0xA000
    )));
    assert!(is_bad(check(
        &|s| s.s_chunk_table_size = U64::new(81),
        0xA000
    )));
    assert!(is_bad(check(
        &|s| s.s_chunk_table_offset = U64::new(0x9001),
        0xA000
    )));
    assert!(is_bad(check(&|_| {}, 0x9100)));
    assert!(is_bad(check(
        &|s| s.s_prefetch_table_size = U32::new(3),
        0xA000
    )));
    assert!(is_bad(check(
        &|s| {
            s.s_prefetch_table_offset = U64::new(0x9FFC);
            s.s_prefetch_table_size = U32::new(8);
        },
        0xA000
    )));
    let boot = vec![0u8; 0x100];
    assert!(ext_sb().blob_table(&boot).is_err());
    assert!(ext_sb().chunk_table(&boot).is_err());
    let mut sb = ext_sb();
    sb.s_prefetch_table_offset = U64::new(0x1000);
    sb.s_prefetch_table_size = U32::new(4);
    assert!(sb.prefetch_table(&boot).is_err());
}

fn blob() -> RafsV6Blob {
    let mut b = RafsV6Blob::new_zeroed();
    b.blob_id[..4].copy_from_slice(b"f276");
    b.chunk_size = U32::new(0x10_0000);
    b.chunk_count = U32::new(9);
    b.compression_algo = U32::new(3);
    b.features = U32::new(0x4000_0001);
    b.compressed_size = U64::new(0x276A8A);
    b.uncompressed_size = U64::new(0x495000);
    b.ci_compressor = U32::new(3);
    b.ci_offset = U64::new(0x275A19);
    b.ci_compressed_size = U64::new(113);
    b.ci_uncompressed_size = U64::new(144);
    b
}

#[test]
fn blob_record_bytes() {
    // rafs-v6.md §11, blob table entry 0 from 0x40.
    let b = blob();
    let raw = b.as_bytes();
    assert_eq!(
        &raw[0x40..0x60],
        &[
            0, 0, 0, 0, 0, 0, 0x10, 0, 9, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0x40, 0x8a,
            0x6a, 0x27, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(
        &raw[0x60..0x88],
        &[
            0, 0x50, 0x49, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x19, 0x5a, 0x27, 0, 0, 0, 0, 0,
            0x71, 0, 0, 0, 0, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(b.blob_id().unwrap(), "f276");
    assert_eq!(b.compressor(), Some(BlobCompressor::Zstd));
    assert_eq!(b.ci_compressor(), Some(BlobCompressor::Zstd));
    assert_eq!(b.digester(), Some(Digester::Blake3));
    assert_eq!(b.chunk_info_size(), 16);
    assert_eq!(b.compressed_data_size(), 0x275A19);
    assert_eq!(b.meta_header_offset(), Some(0x275A8A));
    assert!(
        b.features()
            .contains(BlobFeatures::ALIGNED | BlobFeatures::CAP_TAR_TOC)
    );
    b.validate(0, 0x10_0000).unwrap();
    let mut t = b;
    t.features = U32::new(0x7000_0021);
    assert_eq!(t.compressed_data_size(), 0x275A19 - 512);
    assert_eq!(blob_table(b.as_bytes()).unwrap().len(), 1);
    assert!(blob_table(&b.as_bytes()[..255]).is_err());
}

#[test]
fn blob_record_rules() {
    let check = |f: &dyn Fn(&mut RafsV6Blob)| {
        let mut b = blob();
        f(&mut b);
        b.validate(0, 0x10_0000)
    };
    let is_bad = |r: Result<(), Error>| matches!(r, Err(Error::BadRafs { .. }));
    assert!(is_bad(check(&|b| b.blob_id[0] = 0xFF)));
    assert!(is_bad(check(&|b| b.blob_index = U32::new(1))));
    assert!(is_bad(check(&|b| b.chunk_size = U32::new(0x1000))));
    assert!(is_bad(check(&|b| b.features = U32::new(0x4000_0000))));
    assert!(is_bad(check(&|b| b.features = U32::new(0x4000_0041))));
    assert!(is_bad(check(&|b| b.features = U32::new(0x8000_0001))));
    assert!(is_bad(check(&|b| b.chunk_count = U32::new((1 << 24) + 1))));
    assert!(is_bad(check(
        &|b| b.uncompressed_size = U64::new((1 << 44) + 1)
    )));
    assert!(is_bad(check(
        &|b| b.compressed_size = U64::new((1 << 40) + 1)
    )));
    assert!(is_bad(check(&|b| b.ci_compressed_size = U64::new(145))));
    assert!(is_bad(check(&|b| b.ci_uncompressed_size = U64::new(160))));
    assert!(is_bad(check(&|b| b.compression_algo = U32::new(4))));
    assert!(is_bad(check(&|b| b.digest_algo = U32::new(2))));
    // v2 + ZRAN: the size may exceed 24 * count (ZRan tables follow).
    assert!(
        check(&|b| {
            b.features = U32::new(0x4000_001D);
            b.ci_uncompressed_size = U64::new(24 * 9 + 100);
        })
        .is_ok()
    );
    assert!(is_bad(check(&|b| {
        b.features = U32::new(0x4000_001D);
        b.ci_uncompressed_size = U64::new(24 * 9 - 1);
    })));
    assert_eq!(BlobCompressor::from_id(2), Some(BlobCompressor::Gzip));
    assert_eq!(BlobCompressor::from_id(1), Some(BlobCompressor::Lz4Block));
    assert_eq!(BlobCompressor::from_id(0), Some(BlobCompressor::None));
}

#[test]
fn prefetch() {
    let raw: Vec<u8> = [227u32, 193, 189, 0]
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .collect();
    let t = PrefetchTable::new(&raw).unwrap();
    assert_eq!(t.nids().collect::<Vec<_>>(), [227, 193, 189]);
    assert_eq!(t.raw().len(), 4);
    assert!(!t.is_root_only(227));
    let root = PrefetchTable::new(&[128, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert!(root.is_root_only(128));
    assert!(PrefetchTable::new(&raw[..3]).is_err());
}

#[test]
fn chunk_addr() {
    let a = RafsV6InodeChunkAddr::read_from_bytes(&[0, 0, 1, 1, 0, 0, 1, 0]).unwrap();
    assert_eq!(a.blob_index(), Some(0));
    assert_eq!(a.chunk_index(), 65536);
    assert_eq!(a.block_addr(), 0x1_0000);
    assert_eq!(a.uncompressed_offset(), 0x1000_0000);
    assert!(!a.is_hole());
    let b =
        RafsV6InodeChunkAddr::read_from_bytes(&[1, 2, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
    assert_eq!(b.blob_index(), None);
    assert_eq!(b.chunk_index(), 0xFF0201);
    assert!(b.is_hole());
}

#[test]
fn chunk_info_v1() {
    let c = ChunkInfoV1::read_from_bytes(&[
        0x00, 0x20, 0x17, 0x00, 0x00, 0xf0, 0xff, 0xff, 0x7b, 0xe3, 0x16, 0x00, 0x00, 0x80, 0x5d,
        0x03,
    ])
    .unwrap();
    assert_eq!(c.uncompressed_offset(), 0x172000);
    assert_eq!(c.uncompressed_size(), 1 << 20);
    assert_eq!(c.compressed_offset(), 1_500_027);
    assert_eq!(c.compressed_size(), 13_785);
    assert!(c.is_compressed());
    // Size bits 20-23 (8..11 / 40..43): a 16 MiB chunk.
    let big = ChunkInfoV1 {
        uncomp_info: U64::new(0xFFFF_F000_0000_0F00),
        comp_info: U64::new(0xFFFF_FF00_0000_0000),
    };
    assert_eq!(big.uncompressed_size(), 16 << 20);
    assert_eq!(big.compressed_size(), 16 << 20);
    assert!(!big.is_compressed());
    let d = big.decode();
    assert_eq!(d.uncompressed_end(), 16 << 20);
    assert_eq!(d.compressed_end(), 16 << 20);
}

#[test]
fn chunk_info_v2() {
    let raw = [
        0x03, 0, 0, 0, 0xff, 0xff, 0x0f, 0x03, 0xd0, 0x01, 0, 0, 0, 0xad, 0x00, 0x10, 0, 0x1a, 0,
        0, 0, 0, 0, 0,
    ];
    let c = ChunkInfoV2::read_from_bytes(&raw).unwrap();
    let d = c.decode().unwrap();
    assert_eq!(d.uncompressed_offset, 12288);
    assert_eq!(d.uncompressed_size, 0x10_0000);
    assert_eq!(d.compressed_offset, 464);
    assert_eq!(d.compressed_size, 0x1000AD);
    assert!(d.compressed);
    assert_eq!(d.zran, Some((0, 6656)));
    let mut bad = c;
    bad.uncomp_info = U64::new(c.uncomp_info.get() | 1 << 60);
    assert!(matches!(bad.decode(), Err(Error::BadRafs { .. })));
    let arr = ChunkInfoArray::new(&raw, BlobFeatures::CHUNK_INFO_V2, 1).unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr.get(0).unwrap().unwrap(), d);
    assert!(arr.get(1).is_none());
    assert!(ChunkInfoArray::new(&raw, BlobFeatures::CHUNK_INFO_V2, 2).is_err());
    let v1 = ChunkInfoArray::new(&raw, BlobFeatures::ALIGNED, 1).unwrap();
    assert!(matches!(v1, ChunkInfoArray::V1(_)));
    assert!(!v1.is_empty());
    assert_eq!(v1.iter().count(), 1);
}

#[test]
fn meta_header() {
    let mut h = BlobCompressionContextHeader::new_zeroed();
    h.s_magic = U32::new(BLOB_META_MAGIC);
    h.s_magic2 = U32::new(BLOB_META_MAGIC);
    h.s_features = U32::new(0x4000_0001);
    h.s_ci_compressor = U32::new(3);
    h.s_ci_entries = U32::new(9);
    h.s_ci_offset = U64::new(0x275A19);
    h.s_ci_compressed_size = U64::new(113);
    h.s_ci_uncompressed_size = U64::new(144);
    let b = h.as_bytes();
    // rafs-v6.md §11: header bytes at 0x275A8A.
    assert_eq!(
        &b[..20],
        &[
            0x0b, 0xb1, 0x0b, 0xb1, 0x01, 0, 0, 0x40, 3, 0, 0, 0, 9, 0, 0, 0, 0x19, 0x5a, 0x27, 0
        ]
    );
    assert_eq!(&b[4092..], &[0x0b, 0xb1, 0x0b, 0xb1]);
    let parsed = BlobCompressionContextHeader::parse(b).unwrap();
    assert!(parsed.matches(&blob()));
    assert_eq!(parsed.ci_compressor(), Some(BlobCompressor::Zstd));
    assert_eq!(
        parsed.features(),
        BlobFeatures::ALIGNED | BlobFeatures::CAP_TAR_TOC
    );
    let mut other = blob();
    other.ci_compressed_size = U64::new(1);
    assert!(!parsed.matches(&other));
    let mut bad = h;
    bad.s_magic = U32::new(1);
    assert!(matches!(
        BlobCompressionContextHeader::parse(bad.as_bytes()),
        Err(Error::BadRafs { .. })
    ));
    let mut bad = h;
    bad.s_magic2 = U32::new(1);
    assert!(BlobCompressionContextHeader::parse(bad.as_bytes()).is_err());
    assert!(matches!(
        BlobCompressionContextHeader::parse(&b[..4095]),
        Err(Error::Truncated { .. })
    ));
}

#[test]
fn chunk_table_record() {
    let mut r = RafsV5ChunkInfo::new_zeroed();
    r.block_id = [0xAB; 32];
    r.blob_index = U32::new(1);
    r.flags = U32::new(1);
    r.compressed_size = U32::new(2);
    r.uncompressed_size = U32::new(3);
    r.compressed_offset = U64::new(4);
    r.uncompressed_offset = U64::new(5);
    r.file_offset = U64::new(6);
    r.index = U32::new(7);
    let b = r.as_bytes();
    assert_eq!(
        &b[32..48],
        &[1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]
    );
    assert_eq!(b[48], 4);
    assert_eq!(b[56], 5);
    assert_eq!(b[64], 6);
    assert_eq!(b[72], 7);
    assert!(r.is_compressed());
    assert_eq!(chunk_table(b).unwrap().len(), 1);
    assert!(chunk_table(&b[..79]).is_err());
}

/// Chunk-info data of a 2-chunk ZRAN blob: two v2 chunk infos, two contexts, a
/// dictionary of 3 bytes for the second; and the header describing it.
fn zran_ci() -> (Vec<u8>, BlobCompressionContextHeader) {
    let mut ci = vec![0u8; 48];
    let mut c0 = ZranInflateContext::new_zeroed();
    c0.in_offset = U64::new(10);
    c0.in_len = U32::new(1000);
    c0.out_len = U32::new(5000);
    let mut c1 = ZranInflateContext::new_zeroed();
    c1.in_offset = U64::new(900);
    c1.out_offset = U64::new(4000);
    c1.in_len = U32::new(800);
    c1.out_len = U32::new(3000);
    c1.dict_offset = U64::new(0);
    c1.dict_size = U32::new(3);
    c1.ctx_byte = 0b1011_0000;
    c1.ctx_bits = 3;
    ci.extend_from_slice(c0.as_bytes());
    ci.extend_from_slice(c1.as_bytes());
    ci.extend_from_slice(b"abc");
    let mut h = BlobCompressionContextHeader::new_zeroed();
    h.s_features = U32::new(0x4000_001D);
    h.s_ci_entries = U32::new(2);
    h.s_ci_uncompressed_size = U64::new(ci.len() as u64);
    h.s_ci_zran_offset = U64::new(48);
    h.s_ci_zran_size = U64::new(83);
    h.s_ci_zran_count = U32::new(2);
    (ci, h)
}

#[test]
fn zran_context_bytes() {
    let (ci, _) = zran_ci();
    // nydus's field order: three le64, three le32, two bytes, two reserved.
    assert_eq!(&ci[48 + 40..48 + 48], &[0x84, 3, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        &ci[48 + 64..48 + 80],
        &[0x20, 3, 0, 0, 0xb8, 0x0b, 0, 0, 3, 0, 0, 0, 0xb0, 3, 0, 0]
    );
    let c1 = ZranInflateContext::read_from_bytes(&ci[88..128]).unwrap();
    assert_eq!(c1.input_range(), Some(900..1700));
    // The 3 high bits of 0b1011_0000 are 0b101.
    assert_eq!(c1.prime(), Some((3, 0b101)));
    c1.validate().unwrap();
    let c0 = ZranInflateContext::read_from_bytes(&ci[48..88]).unwrap();
    assert_eq!(c0.prime(), None);
}

#[test]
fn zran_table() {
    let (ci, h) = zran_ci();
    let t = ZranTable::new(&ci, &h).unwrap();
    assert_eq!(t.len(), 2);
    assert!(!t.is_empty());
    assert_eq!(t.dictionaries(), b"abc");
    let (c0, d0) = t.context(0).unwrap();
    assert_eq!((c0.out_len.get(), d0), (5000, &b""[..]));
    let (c1, d1) = t.context(1).unwrap();
    assert_eq!((c1.out_offset.get(), d1), (4000, &b"abc"[..]));
    assert!(matches!(t.context(2), Err(Error::BadRafs { .. })));
    assert_eq!(t.contexts().len(), 2);
}

#[test]
fn zran_table_rules() {
    let is_bad = |r: Result<ZranTable<'_>, Error>| matches!(r, Err(Error::BadRafs { .. }));
    let (ci, h) = zran_ci();
    let check = |f: &dyn Fn(&mut BlobCompressionContextHeader)| {
        let mut h = h;
        f(&mut h);
        is_bad(ZranTable::new(&ci, &h))
    };
    assert!(check(&|h| h.s_features = U32::new(0x4000_0019)), "no v2");
    assert!(check(&|h| h.s_features = U32::new(0x4000_0015)), "no ZRAN");
    assert!(check(&|h| h.s_ci_zran_offset = U64::new(47)));
    assert!(
        check(&|h| h.s_ci_entries = U32::new(1)),
        "offset != 24 × entries"
    );
    assert!(check(&|h| h.s_ci_zran_size = U64::new(84)), "past the data");
    assert!(check(&|h| h.s_ci_zran_size = U64::new(79)), "contexts cut");
    assert!(check(&|h| h.s_ci_zran_size = U64::new(u64::MAX)));
    assert!(
        check(&|h| {
            h.s_ci_zran_count = U32::new(3);
        }),
        "more contexts than chunks"
    );
    assert!(is_bad(ZranTable::new(&ci[..100], &h)));
    // No dictionaries at all is fine (one context at the start of the stream).
    let mut one = h;
    one.s_ci_zran_count = U32::new(1);
    one.s_ci_zran_size = U64::new(40);
    assert_eq!(ZranTable::new(&ci, &one).unwrap().len(), 1);
}

#[test]
fn zran_context_rules() {
    let (mut ci, h) = zran_ci();
    let bad_ctx = |ci: &[u8]| {
        matches!(
            ZranTable::new(ci, &h).unwrap().context(1),
            Err(Error::BadRafs { .. })
        )
    };
    let at = 88;
    let ctx = |ci: &mut [u8]| *ZranInflateContext::mut_from_bytes(&mut ci[at..at + 40]).unwrap();
    let set = |ci: &mut Vec<u8>, f: &dyn Fn(&mut ZranInflateContext)| {
        let mut c = ctx(ci);
        f(&mut c);
        let mut v = ci.clone();
        v[at..at + 40].copy_from_slice(c.as_bytes());
        v
    };
    assert!(!bad_ctx(&ci));
    assert!(bad_ctx(&set(&mut ci, &|c| c.ctx_bits = 8)));
    assert!(bad_ctx(&set(&mut ci, &|c| c.out_len = U32::new(0))));
    assert!(bad_ctx(
        &set(&mut ci, &|c| c.out_len = U32::new(ZRAN_MAX_OUT_LEN + 1))
    ));
    assert!(bad_ctx(&set(&mut ci, &|c| c.in_len = U32::new(0))));
    assert!(bad_ctx(
        &set(&mut ci, &|c| c.in_len = U32::new(ZRAN_MAX_IN_LEN + 1))
    ));
    assert!(bad_ctx(
        &set(&mut ci, &|c| c.in_offset = U64::new(u64::MAX - 10))
    ));
    assert!(bad_ctx(&set(&mut ci, &|c| c.in_offset = U64::new(1 << 40))));
    assert!(bad_ctx(
        &set(&mut ci, &|c| c.dict_size = U32::new(ZRAN_DICT_WINDOW + 1))
    ));
    assert!(
        bad_ctx(&set(&mut ci, &|c| c.dict_size = U32::new(4))),
        "past the table"
    );
    assert!(bad_ctx(&set(&mut ci, &|c| c.dict_offset = U64::new(1))));
    assert!(bad_ctx(
        &set(&mut ci, &|c| c.dict_offset = U64::new(u64::MAX))
    ));
    // The largest legal values pass.
    let big = set(&mut ci, &|c| {
        c.out_len = U32::new(ZRAN_MAX_OUT_LEN);
        c.in_len = U32::new(ZRAN_MAX_IN_LEN);
        c.ctx_bits = 7;
    });
    assert!(!bad_ctx(&big));
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000), n in 0u32..400) {
        if let Ok(sb) = RafsV6SuperBlockExt::from_bootstrap(&bytes) {
            let _ = sb.validate(bytes.len() as u64);
            let _ = (sb.compressor(), sb.digester(), sb.blob_count());
            if let Ok(t) = sb.blob_table(&bytes) {
                for (i, b) in t.iter().enumerate() {
                    let _ = b.validate(i as u32, sb.chunk_size());
                    let _ = (b.compressed_data_size(), b.meta_header_offset());
                }
            }
            if let Ok(p) = sb.prefetch_table(&bytes) {
                let _ = p.nids().count();
            }
            let _ = sb.chunk_table(&bytes);
        }
        if let Ok(h) = BlobCompressionContextHeader::parse(&bytes)
            && let Ok(t) = ZranTable::new(&bytes, h)
        {
                for i in 0..=t.len() as u32 {
                    if let Ok((c, _)) = t.context(i) {
                        let _ = (c.input_range(), c.prime());
                    }
                }
        }
        for f in [BlobFeatures::ALIGNED, BlobFeatures::CHUNK_INFO_V2] {
            if let Ok(a) = ChunkInfoArray::new(&bytes, f, n) {
                for c in a.iter().flatten() {
                    let _ = (c.uncompressed_end(), c.compressed_end());
                }
            }
        }
        if let Ok((a, _)) = RafsV6InodeChunkAddr::read_from_prefix(&bytes) {
            let _ = (a.blob_index(), a.chunk_index(), a.uncompressed_offset());
        }
        let _ = PrefetchTable::new(&bytes);
        let _ = blob_table(&bytes);
    }
}
