use crate::error::Error;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, IntoBytes};
extern crate std;
use super::*;
use proptest::prelude::*;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

fn header(fragoff: u32, advise: u16, alg: u8, cbits: u8) -> MapHeader {
    MapHeader {
        h_fragmentoff: U32::new(fragoff),
        h_advise: U16::new(advise),
        h_algorithmtype: alg,
        h_clusterbits: cbits,
    }
}

#[test]
fn map_header_layout() {
    let h = header(0x1122_3344, 0x0026, 0x31, 0x02);
    assert_eq!(
        h.as_bytes(),
        &[0x44, 0x33, 0x22, 0x11, 0x26, 0x00, 0x31, 0x02]
    );
    assert_eq!(h.as_u64(), 0x0231_0026_1122_3344);
    assert_eq!(h.idata_size(), 0x1122);
}

#[test]
fn map_header_whole_fragment() {
    let raw = 0x8000_0001_2345_6789u64.to_le_bytes();
    let h = MapHeader::read_from_bytes(&raw).unwrap();
    assert!(h.is_whole_file_fragment());
    assert_eq!(
        h.decode(IndexFormat::Compact, 12).unwrap(),
        CompressionMap::Fragment {
            offset: 0x0000_0001_2345_6789
        }
    );
}

#[test]
fn map_header_lclusters() {
    let h = header(0x0064_0000, 0x000A, 0x30, 0x01);
    let CompressionMap::Lclusters(m) = h.decode(IndexFormat::Full, 12).unwrap() else {
        panic!("not lclusters")
    };
    assert_eq!(m.head1, Algorithm::Lz4);
    assert_eq!(m.head2, Algorithm::Zstd);
    assert_eq!(m.lcluster_bits, 13);
    assert_eq!(m.lcluster_size(), 8192);
    assert_eq!(m.inline_size, Some(0x64));
    assert_eq!(m.fragment_offset, None);
    assert!(m.big_pcluster_1() && !m.big_pcluster_2());
    // Fragment offset wins over the inline size.
    let h = header(0xABCD, 0x0028, 0x00, 0x00);
    let CompressionMap::Lclusters(m) = h.decode(IndexFormat::Compact, 12).unwrap() else {
        panic!("not lclusters")
    };
    assert_eq!(m.fragment_offset, Some(0xABCD));
    assert_eq!(m.inline_size, None);
}

#[test]
fn map_header_errors() {
    assert_eq!(
        header(0, 0, 0x04, 0).decode(IndexFormat::Full, 12),
        Err(Error::UnsupportedAlgorithm { id: 4 })
    );
    assert_eq!(
        header(0, 0, 0x50, 0).decode(IndexFormat::Full, 12),
        Err(Error::UnsupportedAlgorithm { id: 5 })
    );
    assert!(matches!(
        header(0, 0x2, 0, 0).decode(IndexFormat::Compact, 12),
        Err(Error::BadMapHeader { advise: 2, .. })
    ));
    // The same advise is fine for full indexes.
    assert!(header(0, 0x2, 0, 0).decode(IndexFormat::Full, 12).is_ok());
    assert_eq!(
        header(0, 0, 0, 3).decode(IndexFormat::Compact, 12),
        Err(Error::UnsupportedLclusterBits { lcluster_bits: 15 })
    );
    assert_eq!(
        header(0, 1, 0, 1).decode(IndexFormat::Compact, 12),
        Err(Error::UnsupportedLclusterBits { lcluster_bits: 13 })
    );
    assert!(header(0, 0, 0, 2).decode(IndexFormat::Compact, 12).is_ok());
    assert_eq!(
        header(0, 0, 0, 15).decode(IndexFormat::Full, 250),
        Err(Error::Overflow {
            what: "lclusterbits"
        })
    );
    assert_eq!(
        header(0, 0, 0, 15).decode(IndexFormat::Full, 20),
        Err(Error::UnsupportedLclusterBits { lcluster_bits: 35 })
    );
}

#[test]
fn map_header_extents() {
    // recsz 16 (bits 1-2 = 2), count in h_extents_lo/hi.
    let h = header(7, 0x0005, 0x01, 0x00);
    let CompressionMap::Extents(e) = h.decode(IndexFormat::Full, 12).unwrap() else {
        panic!("not extents")
    };
    assert_eq!(e.record_size, 16);
    assert_eq!(e.count, Some(0x1_0000_0007));
    assert_eq!(e.record_count(123).unwrap(), 0x1_0000_0007);
    assert_eq!(e.records_offset(64).unwrap(), 16);
    assert_eq!(e.records_offset(72).unwrap(), 8);
    // recsz 4: lcluster bits from h_clusterbits; bit 0 means COMPACTED_2B if compact.
    let h = header(0, 0x0001, 0, 0x04);
    let CompressionMap::Extents(e) = h.decode(IndexFormat::Full, 12).unwrap() else {
        panic!("not extents")
    };
    assert_eq!(
        (e.record_size, e.count, e.lcluster_bits),
        (4, None, Some(16))
    );
    assert_eq!(e.record_count(65537).unwrap(), 2);
    assert_eq!(e.records_offset(64).unwrap(), 8);
    let bad = ExtentMap {
        lcluster_bits: Some(200),
        ..e
    };
    assert!(bad.record_count(1).is_err());
}

#[test]
fn check_superblock() {
    let CompressionMap::Lclusters(m) = header(0, 0x2, 0x32, 0)
        .decode(IndexFormat::Full, 12)
        .unwrap()
    else {
        panic!()
    };
    assert!(m.check_superblock(true).is_ok());
    assert!(matches!(
        m.check_superblock(false),
        Err(Error::BadMapHeader { .. })
    ));
    assert_eq!(HeadKind::Head1.algorithm(&m), Some(Algorithm::Deflate));
    assert_eq!(HeadKind::Head2.algorithm(&m), Some(Algorithm::Zstd));
    assert_eq!(HeadKind::Plain.algorithm(&m), None);
    assert_eq!(HeadKind::Head2.lcluster_type(), LclusterType::Head2);
    let avail = AlgorithmSet::DEFLATE;
    assert!(avail.require(Algorithm::Deflate).is_ok());
    assert_eq!(
        avail.require(Algorithm::Zstd),
        Err(Error::AlgorithmNotAvailable { id: 3 })
    );
}

fn lmap(format: IndexFormat, advise: u16, bits: u8) -> LclusterMap {
    LclusterMap {
        format,
        advise: MapAdvise::from_bits_retain(advise),
        head1: Algorithm::Lz4,
        head2: Algorithm::Lz4,
        lcluster_bits: bits,
        fragment_offset: None,
        inline_size: None,
    }
}

fn full(advise: u16, clusterofs: u16, u: u32) -> LclusterIndex {
    LclusterIndex {
        di_advise: U16::new(advise),
        di_clusterofs: U16::new(clusterofs),
        di_u: U32::new(u),
    }
}

#[test]
fn full_index_layout_and_decode() {
    let i = full(0x8001, 0x0123, 0x0000_0456);
    assert_eq!(i.as_bytes(), &[0x01, 0x80, 0x23, 0x01, 0x56, 0x04, 0, 0]);
    let m = lmap(IndexFormat::Full, 0x6, 12);
    assert_eq!(
        i.decode(0, &m).unwrap(),
        Lcluster::Head {
            kind: HeadKind::Head1,
            cluster_offset: 0x123,
            blkaddr: 0x456,
            partial_ref: true
        }
    );
    let nh = full(2, 0, 3 << 16 | 5);
    assert_eq!(nh.delta(), [5, 3]);
    assert_eq!(
        nh.decode(1, &m).unwrap(),
        Lcluster::NonHead {
            lookback: 5,
            lookahead: 3,
            compressed_blocks: None
        }
    );
    let cblk = full(2, 0, 4 << 16 | u32::from(D0_CBLKCNT) | 7);
    assert_eq!(
        cblk.decode(1, &m).unwrap(),
        Lcluster::NonHead {
            lookback: 1,
            lookahead: 4,
            compressed_blocks: Some(7)
        }
    );
    let small = lmap(IndexFormat::Full, 0, 12);
    assert!(matches!(
        cblk.decode(1, &small),
        Err(Error::BadLcluster { lcn: 1, .. })
    ));
    assert!(matches!(
        full(0, 4096, 0).decode(9, &small),
        Err(Error::BadLcluster { lcn: 9, .. })
    ));
    assert!(full(3, 4095, 0).decode(9, &small).is_ok());
}

#[test]
fn full_indexes_view() {
    let entries = [full(1, 0, 10), full(2, 0, 1 << 16 | 1), full(0, 100, 11)];
    let bytes = entries.as_bytes();
    let m = lmap(IndexFormat::Full, 0, 12);
    let v = FullIndexes::new(bytes, 3, &m).unwrap();
    assert_eq!(v.len(), 3);
    assert!(!v.is_empty());
    assert_eq!(v.raw().len(), 3);
    let all: Vec<_> = v.iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all[2].lcluster_type(), LclusterType::Plain);
    assert_eq!(
        v.get(3),
        Err(Error::LclusterOutOfRange { lcn: 3, count: 3 })
    );
    assert_eq!(
        FullIndexes::new(bytes, 4, &m).unwrap_err(),
        Error::Truncated {
            what: "full lcluster indexes",
            needed: 32,
            available: 24
        }
    );
}

/// Independent encoder for compact packs, used to build test vectors.
fn encode_pack(entries: &[(u16, u8)], lcluster_bits: u8, base: u32) -> Vec<u8> {
    let vcnt = entries.len();
    let len = if vcnt == 2 { 8 } else { 32 };
    let lobits = u32::from(lcluster_bits.max(12));
    let encodebits = (len - 4) * 8 / vcnt;
    let mut out = vec![0u8; len];
    for (i, &(lo, t)) in entries.iter().enumerate() {
        let v = u32::from(t) << lobits | u32::from(lo);
        let pos = i * encodebits;
        for b in 0..(lobits as usize + 2) {
            if v >> b & 1 != 0 {
                out[(pos + b) / 8] |= 1 << ((pos + b) % 8);
            }
        }
    }
    out[len - 4..].copy_from_slice(&base.to_le_bytes());
    out
}

const H: u8 = 1;
const N: u8 = 2;
const P: u8 = 0;

#[test]
fn compact_4b_pack() {
    // lcluster 0: HEAD1 at 0x10; lcluster 1: NONHEAD (last in pack: lo = delta[1] = 3).
    let bytes = encode_pack(&[(0x10, H), (3, N)], 12, 100);
    assert_eq!(&bytes[..4], &[0x10, 0x10, 0x03, 0x20]);
    let pack = CompactPack::new(&bytes, 12, false).unwrap();
    assert_eq!(pack.len(), 2);
    assert!(!pack.is_empty());
    assert_eq!(pack.base_blkaddr(), 100);
    assert_eq!(pack.raw_entry(2), None);
    // Without big pcluster the base is one less than the first HEAD's block.
    assert_eq!(
        pack.decode(0, 0).unwrap(),
        Lcluster::Head {
            kind: HeadKind::Head1,
            cluster_offset: 0x10,
            blkaddr: 101,
            partial_ref: false
        }
    );
    assert_eq!(
        pack.decode(1, 1).unwrap(),
        Lcluster::NonHead {
            lookback: 1,
            lookahead: 3,
            compressed_blocks: None
        }
    );
    assert_eq!(
        pack.decode(2, 2),
        Err(Error::LclusterOutOfRange { lcn: 2, count: 2 })
    );
}

#[test]
fn compact_2b_pack_blocks() {
    // Not big pcluster: every HEAD takes one block; NONHEAD runs are skipped via lo.
    let mut e = vec![(0, H), (1, N), (2, N), (5, P), (1, N), (7, H)];
    e.extend(core::iter::repeat_n((0, H), 9));
    e.push((4, N));
    let bytes = encode_pack(&e, 12, 50);
    let pack = CompactPack::new(&bytes, 12, false).unwrap();
    assert_eq!(pack.len(), 16);
    let mut blocks = Vec::new();
    for i in 0..16 {
        if let Lcluster::Head { blkaddr, .. } = pack.decode(i, i as u64).unwrap() {
            blocks.push(blkaddr);
        }
    }
    // HEADs at 0, 3, 5, 6..=14 -> consecutive blocks from base + 1.
    assert_eq!(blocks, (51..51 + 12).collect::<Vec<u32>>());
    assert_eq!(
        pack.decode(2, 2).unwrap(),
        Lcluster::NonHead {
            lookback: 2,
            lookahead: 1,
            compressed_blocks: None
        }
    );
    // The last entry's lookback comes from the previous entry (a HEAD here -> 1).
    assert_eq!(
        pack.decode(15, 15).unwrap(),
        Lcluster::NonHead {
            lookback: 1,
            lookahead: 4,
            compressed_blocks: None
        }
    );
}

#[test]
fn compact_big_pcluster() {
    // HEAD1 (3 blocks: CBLKCNT on the next entry), NONHEAD d0=2, HEAD1 (1 block).
    let e = [
        (0, H),
        (D0_CBLKCNT | 3, N),
        (2, N),
        (0x20, H),
        (0, H),
        (D0_CBLKCNT | 2, N),
        (2, N),
        (0, P),
        (0, H),
        (1, N),
        (0, H),
        (0, H),
        (0, H),
        (0, H),
        (0, H),
        (2, N),
    ];
    let bytes = encode_pack(&e, 12, 1000);
    let pack = CompactPack::new(&bytes, 12, true).unwrap();
    let head = |i: usize| match pack.decode(i, i as u64).unwrap() {
        Lcluster::Head { blkaddr, .. } => blkaddr,
        other => panic!("{i}: {other:?}"),
    };
    assert_eq!(head(0), 1000);
    assert_eq!(head(3), 1003);
    assert_eq!(head(4), 1004);
    assert_eq!(head(7), 1006);
    assert_eq!(
        pack.decode(1, 1).unwrap(),
        Lcluster::NonHead {
            lookback: 1,
            lookahead: 2,
            compressed_blocks: Some(3)
        }
    );
    // Entry 9 has d0 = 1 on a big-pcluster file: the HEAD after it is corrupt.
    assert!(matches!(
        pack.decode(10, 10),
        Err(Error::BadLcluster { lcn: 10, .. })
    ));
    // CBLKCNT without big pcluster.
    let small = CompactPack::new(&bytes, 12, false).unwrap();
    assert!(matches!(
        small.decode(1, 1),
        Err(Error::BadLcluster { lcn: 1, .. })
    ));
    // The last entry with a CBLKCNT predecessor and a CBLKCNT entry itself.
    let e2 = [(0, H), (D0_CBLKCNT | 2, N)];
    let b2 = encode_pack(&e2, 12, 5);
    let p2 = CompactPack::new(&b2, 12, true).unwrap();
    assert_eq!(
        p2.decode(1, 1).unwrap(),
        Lcluster::NonHead {
            lookback: 1,
            lookahead: 1,
            compressed_blocks: Some(2)
        }
    );
    let e3 = [(D0_CBLKCNT | 2, N), (7, N)];
    let b3 = encode_pack(&e3, 12, 5);
    let p3 = CompactPack::new(&b3, 12, true).unwrap();
    assert_eq!(
        p3.decode(1, 1).unwrap(),
        Lcluster::NonHead {
            lookback: 2,
            lookahead: 7,
            compressed_blocks: None
        }
    );
}

#[test]
fn compact_pack_errors() {
    assert_eq!(
        CompactPack::new(&[0; 9], 12, false).unwrap_err(),
        Error::BadCompactPack { len: 9 }
    );
    assert_eq!(
        CompactPack::new(&[0; 32], 13, false).unwrap_err(),
        Error::UnsupportedLclusterBits { lcluster_bits: 13 }
    );
    assert_eq!(
        CompactPack::new(&[0; 8], 15, false).unwrap_err(),
        Error::UnsupportedLclusterBits { lcluster_bits: 15 }
    );
    // HEAD clusterofs beyond a 512-byte lcluster.
    let b = encode_pack(&[(600, H), (0, H)], 9, 0);
    let p = CompactPack::new(&b, 9, false).unwrap();
    assert!(matches!(p.decode(0, 0), Err(Error::BadLcluster { .. })));
    // Base block address overflow.
    let b = encode_pack(&[(0, H), (0, H)], 12, u32::MAX);
    let p = CompactPack::new(&b, 12, false).unwrap();
    assert!(matches!(p.decode(1, 1), Err(Error::BadLcluster { .. })));
    // 14-bit lclusters in 4B packs: lobits 14.
    let b = encode_pack(&[(0x3000, H), (0, P)], 14, 9);
    let p = CompactPack::new(&b, 14, false).unwrap();
    assert_eq!(p.raw_entry(0), Some((0x3000, LclusterType::Head1)));
}

#[test]
fn compact_layout_positions() {
    let advise = MapAdvise::COMPACTED_2B;
    // ebase % 32 == 8: 6 initial 4B entries, then 2B packs.
    let l = CompactLayout::new(1032, 40, advise);
    assert_eq!((l.initial_4b, l.count_2b), (6, 32));
    assert_eq!(l.byte_len(), 6 * 4 + 32 * 2 + 8);
    assert_eq!(l.locate(0), Some((0, 8, 0)));
    assert_eq!(l.locate(5), Some((16, 8, 1)));
    assert_eq!(l.locate(6), Some((24, 32, 0)));
    assert_eq!(l.locate(21), Some((24, 32, 15)));
    assert_eq!(l.locate(22), Some((56, 32, 0)));
    assert_eq!(l.locate(38), Some((88, 8, 0)));
    assert_eq!(l.locate(39), Some((88, 8, 1)));
    assert_eq!(l.locate(40), None);
    // 32-aligned ebase: no initial 4B packs.
    let l = CompactLayout::new(1024, 17, advise);
    assert_eq!((l.initial_4b, l.count_2b), (0, 16));
    assert_eq!(l.byte_len(), 32 + 8);
    // Fewer lclusters than the initial run: all 4B.
    let l = CompactLayout::new(1048, 1, advise);
    assert_eq!((l.initial_4b, l.count_2b), (2, 0));
    assert_eq!(l.byte_len(), 8);
    // Without COMPACTED_2B everything is 4B.
    let l = CompactLayout::new(1032, 40, MapAdvise::empty());
    assert_eq!(l.count_2b, 0);
    assert_eq!(l.byte_len(), 160);
    assert_eq!(l.locate(39), Some((152, 8, 1)));
}

#[test]
fn compact_indexes_view() {
    // ebase % 32 == 24: 2 initial 4B entries, 16 in 2B, 1 trailing 4B.
    let mut bytes = encode_pack(&[(0, H), (1, N)], 12, 9);
    let mut e2 = vec![(0, H); 16];
    e2[1] = (1, N);
    bytes.extend(encode_pack(&e2, 12, 10));
    bytes.extend(encode_pack(&[(0, P), (0, 0)], 12, 26));
    let m = lmap(IndexFormat::Compact, 1, 12);
    let v = CompactIndexes::new(&bytes, 24, 19, &m).unwrap();
    assert_eq!(v.len(), 19);
    assert!(!v.is_empty());
    assert_eq!(v.layout().count_2b, 16);
    let heads: Vec<u32> = v
        .iter()
        .filter_map(|l| match l.unwrap() {
            Lcluster::Head { blkaddr, .. } => Some(blkaddr),
            _ => None,
        })
        .collect();
    assert_eq!(
        heads,
        [
            10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27
        ]
    );
    assert!(matches!(
        v.get(19),
        Err(Error::LclusterOutOfRange { lcn: 19, count: 19 })
    ));
    assert!(matches!(
        CompactIndexes::new(&bytes[..40], 24, 19, &m),
        Err(Error::Truncated { needed: 48, .. })
    ));
    assert!(matches!(
        CompactIndexes::new(&bytes, 20, 19, &m),
        Err(Error::BadMapHeader { .. })
    ));
    let big = lmap(IndexFormat::Compact, 0, 15);
    assert!(CompactIndexes::new(&bytes, 24, 1, &big).is_err());
}

fn ext(plen: u32, plo: u32, phi: u32, llo: u32, lhi: u32) -> Extent {
    Extent {
        plen: U32::new(plen),
        pstart_lo: U32::new(plo),
        pstart_hi: U32::new(phi),
        lstart_lo: U32::new(llo),
        lstart_hi: U32::new(lhi),
        reserved: [0; 12],
    }
}

#[test]
fn extents() {
    let e = ext(0x4000_1000 | EXTENT_PLEN_PARTIAL, 1, 2, 3, 4);
    assert_eq!(&e.as_bytes()[..8], &[0x00, 0x10, 0x00, 0x48, 1, 0, 0, 0]);
    // 16-byte records.
    let recs = [
        ext(0x4000_1000, 0x2000, 1, 0, 0),
        ext(0x1000, 0x3000, 0, 0x8000, 0),
    ];
    let mut bytes = Vec::new();
    for r in &recs {
        bytes.extend_from_slice(&r.as_bytes()[..16]);
    }
    let map = ExtentMap {
        advise: MapAdvise::EXTENTS,
        record_size: 16,
        count: Some(2),
        lcluster_bits: None,
    };
    let v = EncodedExtents::new(&bytes, &map, 2).unwrap();
    assert_eq!(v.len(), 2);
    assert!(!v.is_empty());
    let all: Vec<_> = v.iter().collect();
    assert_eq!(all[0].pstart, 0x1_0000_2000);
    assert_eq!(all[0].lstart, Some(0));
    assert_eq!(all[0].length(), 0x1000);
    assert_eq!(
        all[0].encoding(),
        ExtentEncoding::Compressed(Algorithm::Zstd)
    );
    assert_eq!(all[1].encoding(), ExtentEncoding::Stored);
    assert_eq!(all[1].lstart, Some(0x8000));
    assert!(!all[1].is_partial_ref());
    let unk = EncodedExtent {
        lstart: None,
        pstart: 0,
        plen: 0xF000_0000 | EXTENT_PLEN_PARTIAL,
    };
    assert_eq!(unk.encoding(), ExtentEncoding::Unknown(14));
    assert!(unk.is_partial_ref());
    assert!(EncodedExtents::new(&bytes, &map, 3).is_err());
    // 32-byte records carry lstart_hi.
    let b32 = ext(1, 2, 0, 5, 1).as_bytes().to_vec();
    let m32 = ExtentMap {
        record_size: 32,
        ..map
    };
    let v = EncodedExtents::new(&b32, &m32, 1).unwrap();
    assert_eq!(v.iter().next().unwrap().lstart, Some(0x1_0000_0005));
    // 8-byte records: pstart_lo only.
    let m8 = ExtentMap {
        record_size: 8,
        count: None,
        lcluster_bits: Some(12),
        ..map
    };
    let b8 = [0x00u8, 0x10, 0, 0, 0x00, 0x50, 0, 0];
    let v = EncodedExtents::new(&b8, &m8, 1).unwrap();
    let e = v.iter().next().unwrap();
    assert_eq!((e.lstart, e.pstart, e.length()), (None, 0x5000, 0x1000));
    // 4-byte records: base pstart then lengths, accumulated.
    let m4 = ExtentMap {
        record_size: 4,
        ..m8
    };
    let mut b4 = 0x9000u64.to_le_bytes().to_vec();
    b4.extend_from_slice(&0x1000u32.to_le_bytes());
    b4.extend_from_slice(&0x2000_0800u32.to_le_bytes());
    let v = EncodedExtents::new(&b4, &m4, 2).unwrap();
    let p: Vec<u64> = v.iter().map(|e| e.pstart).collect();
    assert_eq!(p, [0x9000, 0xA000]);
    assert!(matches!(
        EncodedExtents::new(&b4[..4], &m4, 0),
        Err(Error::Truncated { needed: 8, .. })
    ));
    assert!(matches!(
        EncodedExtents::new(&b4, &m4, u64::MAX),
        Err(Error::Overflow { .. })
    ));
    for bad_size in [0, 5, 64] {
        let m = ExtentMap {
            record_size: bad_size,
            ..m4
        };
        assert!(matches!(
            EncodedExtents::new(&b4, &m, 1),
            Err(Error::BadMapHeader { .. })
        ));
        assert!(m.records_offset(0).is_err());
    }
    // Huge lcluster counts neither overflow nor allocate.
    let l = CompactLayout::new(1032, u64::MAX, MapAdvise::COMPACTED_2B);
    assert_eq!(l.byte_len(), u64::MAX);
    assert_eq!(l.locate(u64::MAX - 1), None);
}

#[test]
fn config_layouts() {
    let lz4 = Lz4Config {
        max_distance: U16::new(0x1234),
        max_pclusterblks: U16::new(16),
        reserved: [0; 10],
    };
    assert_eq!(&lz4.as_bytes()[..4], &[0x34, 0x12, 16, 0]);
    assert_eq!(lz4.max_pcluster_blocks(), 16);
    let lzma = LzmaConfig {
        dict_size: U32::new(0x0080_0000),
        format: U16::new(0),
        reserved: [0; 8],
    };
    assert_eq!(&lzma.as_bytes()[..6], &[0, 0, 0x80, 0, 0, 0]);
    let d = DeflateConfig {
        windowbits: 15,
        reserved: [0; 5],
    };
    assert_eq!(d.as_bytes(), &[15, 0, 0, 0, 0, 0]);
    let z = ZstdConfig {
        format: 0,
        windowlog: 7,
        reserved: [0; 4],
    };
    assert_eq!(z.as_bytes(), &[0, 7, 0, 0, 0, 0]);
    assert_eq!(z.window_size(), 128 * 1024);
}

#[test]
fn config_validation() {
    let bad = |r: Result<(), Error>| matches!(r, Err(Error::BadCompressionConfig { .. }));
    assert!(bad(Lz4Config::parse(&[0; 13], 12).map(drop)));
    let mut lz4 = [0u8; 14];
    lz4[2] = 0;
    assert_eq!(Lz4Config::parse(&lz4, 12).unwrap().max_pcluster_blocks(), 1);
    lz4[2..4].copy_from_slice(&256u16.to_le_bytes());
    assert!(Lz4Config::parse(&lz4, 12).is_ok());
    lz4[2..4].copy_from_slice(&257u16.to_le_bytes());
    assert!(bad(Lz4Config::parse(&lz4, 12).map(drop)));
    assert!(Lz4Config::parse(&lz4, 9).is_ok());

    let mut lzma = [0u8; 14];
    lzma[..4].copy_from_slice(&4096u32.to_le_bytes());
    assert!(LzmaConfig::parse(&lzma).is_ok());
    lzma[..4].copy_from_slice(&4095u32.to_le_bytes());
    assert!(bad(LzmaConfig::parse(&lzma).map(drop)));
    lzma[..4].copy_from_slice(&(LZMA_MAX_DICT_SIZE + 1).to_le_bytes());
    assert!(bad(LzmaConfig::parse(&lzma).map(drop)));
    lzma[..4].copy_from_slice(&LZMA_MAX_DICT_SIZE.to_le_bytes());
    lzma[4] = 1;
    assert!(bad(LzmaConfig::parse(&lzma).map(drop)));
    assert!(bad(LzmaConfig::parse(&lzma[..13]).map(drop)));

    assert!(DeflateConfig::parse(&[15, 0, 0, 0, 0, 0]).is_ok());
    assert!(bad(DeflateConfig::parse(&[16, 0, 0, 0, 0, 0]).map(drop)));
    assert!(bad(DeflateConfig::parse(&[15, 0, 0, 0, 0]).map(drop)));

    assert!(ZstdConfig::parse(&[0, 10, 0, 0, 0, 0]).is_ok());
    assert!(bad(ZstdConfig::parse(&[0, 11, 0, 0, 0, 0]).map(drop)));
    assert!(bad(ZstdConfig::parse(&[1, 0, 0, 0, 0, 0]).map(drop)));
    assert!(bad(ZstdConfig::parse(&[0, 0, 0]).map(drop)));
}

fn record(out: &mut Vec<u8>, body: &[u8]) {
    while !out.len().is_multiple_of(4) {
        out.push(0xEE);
    }
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
}

#[test]
fn metadata_records() {
    let mut b = vec![0u8; 2];
    record(&mut b, &[1, 2, 3]);
    record(&mut b, &[4]);
    let mut r = MetadataRecords::new(&b, 1);
    assert_eq!(r.next_record().unwrap(), &[1, 2, 3]);
    assert_eq!(r.position(), 9);
    assert_eq!(r.next_record().unwrap(), &[4]);
    assert_eq!(
        r.next_record(),
        Err(Error::BadMetadataRecord { offset: 16, len: 0 })
    );
    let all: Vec<_> = MetadataRecords::new(&b, 4).collect();
    assert_eq!(all, [Ok(&[1u8, 2, 3][..]), Ok(&[4u8][..])]);
    // Length 0 means 65536.
    let mut big = vec![0u8, 0];
    big.extend(core::iter::repeat_n(7u8, 65536));
    let mut r = MetadataRecords::new(&big, 0);
    assert_eq!(r.next_record().unwrap().len(), 65536);
    assert_eq!(
        MetadataRecords::new(&big[..100], 0).next_record(),
        Err(Error::BadMetadataRecord {
            offset: 0,
            len: 65536
        })
    );
    // A truncated body ends the iterator after one error.
    let mut it = MetadataRecords::new(&[5, 0, 1], 0);
    assert!(matches!(it.next(), Some(Err(_))));
    assert!(it.next().is_none());
    assert!(MetadataRecords::new(&[], usize::MAX).next_record().is_err());
}

#[test]
fn compression_configs() {
    let mut b = vec![0u8; 1024 + 128];
    record(&mut b, Lz4Config::new_zeroed().as_bytes());
    let mut lzma = LzmaConfig::new_zeroed();
    lzma.dict_size = U32::new(0x0001_0010);
    record(&mut b, lzma.as_bytes());
    record(&mut b, &[0, 10, 0, 0, 0, 0]);
    let c = CompressionConfigs::parse(&b, 1152, 0b1011, 12).unwrap();
    assert_eq!(
        c.available,
        AlgorithmSet::LZ4 | AlgorithmSet::LZMA | AlgorithmSet::ZSTD
    );
    assert_eq!(
        c.available.algorithms().collect::<Vec<_>>(),
        [Algorithm::Lz4, Algorithm::Lzma, Algorithm::Zstd]
    );
    assert_eq!(c.lzma.unwrap().dict_size.get(), 0x0001_0010);
    assert_eq!(c.zstd.unwrap().windowlog, 10);
    assert!(c.deflate.is_none());
    assert_eq!(c.end, b.len());
    assert_eq!(
        CompressionConfigs::parse(&b, 1152, 0x13, 12),
        Err(Error::UnsupportedAlgorithms { bits: 0x10 })
    );
    // Records in the wrong order: the second record is not a valid DEFLATE config.
    assert!(matches!(
        CompressionConfigs::parse(&b, 1152, 0b0101, 12),
        Err(Error::BadCompressionConfig { algorithm: 2, .. })
    ));
    assert!(matches!(
        CompressionConfigs::parse(&b[..1160], 1152, 0b1011, 12),
        Err(Error::BadMetadataRecord { .. })
    ));
    let legacy = CompressionConfigs::legacy(4096);
    assert_eq!(legacy.available, AlgorithmSet::LZ4);
    assert_eq!(legacy.lz4.unwrap().max_distance.get(), 4096);
}

#[test]
fn algorithms() {
    for a in Algorithm::ALL {
        assert_eq!(Algorithm::from_id(a.id()), Some(a));
        assert!(a.bit().has(a));
    }
    assert_eq!(Algorithm::from_id(4), None);
    assert_eq!(Algorithm::Deflate.to_string(), "deflate");
    assert_eq!(AlgorithmSet::default(), AlgorithmSet::empty());
    assert!(LclusterType::Head2.is_head());
    assert!(!LclusterType::NonHead.is_head());
}

proptest! {
    #[test]
    fn map_header_never_panics(raw in any::<[u8; 8]>(), blkszbits in 0u8..=255, compact: bool) {
        let h = MapHeader::read_from_bytes(&raw).unwrap();
        let format = if compact { IndexFormat::Compact } else { IndexFormat::Full };
        if let Ok(CompressionMap::Extents(e)) = h.decode(format, blkszbits) {
            let _ = e.record_count(u64::MAX);
            let _ = e.records_offset(u64::MAX - 3);
        }
    }

    #[test]
    fn compact_pack_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        bits in 9u8..=16,
        big: bool,
    ) {
        if let Ok(p) = CompactPack::new(&bytes, bits, big) {
            for i in 0..17 {
                let _ = p.decode(i, i as u64);
            }
        }
    }

    #[test]
    fn compact_pack_roundtrip(
        entries in proptest::collection::vec((0u16..4096, 0u8..4), 16),
        two: bool,
        base in any::<u32>(),
    ) {
        let entries = if two { &entries[..2] } else { &entries[..] };
        let bytes = encode_pack(entries, 12, base);
        let pack = CompactPack::new(&bytes, 12, false).unwrap();
        prop_assert_eq!(pack.base_blkaddr(), base);
        for (i, &(lo, t)) in entries.iter().enumerate() {
            prop_assert_eq!(
                pack.raw_entry(i),
                Some((lo, LclusterType::from_bits(u16::from(t))))
            );
        }
    }

    #[test]
    fn compact_indexes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ebase in 0u64..4096,
        total in 0u64..120,
        advise in any::<u16>(),
        bits in 9u8..=15,
    ) {
        let m = LclusterMap {
            advise: MapAdvise::from_bits_retain(advise),
            ..lmap(IndexFormat::Compact, 0, bits)
        };
        if let Ok(v) = CompactIndexes::new(&bytes, ebase * 8, total, &m) {
            for l in v.iter() {
                let _ = l;
            }
            let _ = v.get(total);
        }
        let l = CompactLayout::new(ebase, total, m.advise);
        prop_assert!(l.byte_len() <= total * 4 + 8);
    }

    #[test]
    fn full_and_extents_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        count in 0u64..40,
        recsz_sel in 0u8..7,
        bits in 0u8..=40,
    ) {
        let m = lmap(IndexFormat::Full, 6, bits.min(30));
        if let Ok(v) = FullIndexes::new(&bytes, count, &m) {
            for l in v.iter() {
                let _ = l;
            }
        }
        let em = ExtentMap {
            advise: MapAdvise::EXTENTS,
            record_size: 4u8.wrapping_shl(u32::from(recsz_sel)),
            count: None,
            lcluster_bits: Some(bits),
        };
        if let Ok(v) = EncodedExtents::new(&bytes, &em, count) {
            for e in v.iter() {
                let _ = (e.length(), e.encoding());
            }
        }
    }

    #[test]
    fn configs_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        start in 0usize..220,
        algs in any::<u16>(),
        blkszbits in any::<u8>(),
    ) {
        let _ = CompressionConfigs::parse(&bytes, start, algs, blkszbits);
        let _ = Lz4Config::parse(&bytes, blkszbits);
        let _ = LzmaConfig::parse(&bytes);
        let _ = DeflateConfig::parse(&bytes);
        if let Ok(z) = ZstdConfig::parse(&bytes) {
            prop_assert!(z.window_size() <= 1 << 20);
        }
        for r in MetadataRecords::new(&bytes, start) {
            let _ = r;
        }
    }
}
