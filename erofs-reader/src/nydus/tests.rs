use super::*;
use crate::error::Error;
use crate::source::Source;
use erofs_format::rafs::{BlobCompressionContextHeader, RafsV6Blob};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Build a blob by hand: chunks (raw or zstd), a v1 chunk-info array stored raw, the
/// header; returns (blob bytes, record, uncompressed image of the space).
fn blob(chunks: &[(Vec<u8>, bool)]) -> (Vec<u8>, RafsV6Blob, Vec<u8>) {
    let mut data = Vec::new();
    let mut infos = Vec::new();
    let mut space = Vec::new();
    for (plain, compress) in chunks {
        let stored = if *compress {
            zstd::bulk::compress(plain, 3).unwrap()
        } else {
            plain.clone()
        };
        let coff = data.len() as u64;
        let uoff = space.len() as u64;
        data.extend_from_slice(&stored);
        space.extend_from_slice(plain);
        space.resize(space.len().next_multiple_of(4096), 0);
        let us = plain.len() as u64 - 1;
        let cs = stored.len() as u64 - 1;
        let uncomp = (uoff & 0xFFFF_FFFF_F000) | ((us & 0xFFFFF) << 44) | ((us >> 20) << 8);
        let comp = coff | ((cs >> 20) << 40) | ((cs & 0xFFFFF) << 44);
        let mut e = [0u8; 16];
        e[..8].copy_from_slice(&uncomp.to_le_bytes());
        e[8..].copy_from_slice(&comp.to_le_bytes());
        infos.push((e, *compress));
    }
    let ci_off = data.len() as u64;
    for (e, _) in &infos {
        data.extend_from_slice(e);
    }
    let mut r = RafsV6Blob::new_zeroed();
    r.blob_id[..4].copy_from_slice(b"test");
    r.chunk_size = U32::new(0x10_0000);
    r.chunk_count = U32::new(chunks.len() as u32);
    r.compression_algo = U32::new(3);
    r.features = U32::new(0x4000_0001);
    r.uncompressed_size = U64::new(space.len() as u64);
    r.ci_compressor = U32::new(0);
    r.ci_offset = U64::new(ci_off);
    r.ci_compressed_size = U64::new(16 * chunks.len() as u64);
    r.ci_uncompressed_size = U64::new(16 * chunks.len() as u64);
    let mut h = BlobCompressionContextHeader::new_zeroed();
    h.s_magic = U32::new(erofs_format::rafs::BLOB_META_MAGIC);
    h.s_magic2 = U32::new(erofs_format::rafs::BLOB_META_MAGIC);
    h.s_features = r.features;
    h.s_ci_compressor = r.ci_compressor;
    h.s_ci_entries = r.chunk_count;
    h.s_ci_offset = r.ci_offset;
    h.s_ci_compressed_size = r.ci_compressed_size;
    h.s_ci_uncompressed_size = r.ci_uncompressed_size;
    data.extend_from_slice(h.as_bytes());
    r.compressed_size = U64::new(data.len() as u64);
    (data, r, space)
}

#[test]
fn raw_chunks_read_back_with_gaps_zeroed() {
    let a: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let b = vec![7u8; 100];
    let (data, r, space) = blob(&[(a, false), (b, false)]);
    let src = BlobSource::new(data, &r);
    assert_eq!(src.size().unwrap(), space.len() as u64);
    let mut all = vec![0xAAu8; space.len()];
    src.read_exact_at(&mut all, 0).unwrap();
    assert_eq!(all, space);
    let mut part = vec![0u8; 300];
    src.read_exact_at(&mut part, 4990).unwrap();
    assert_eq!(&part[..], &space[4990..5290]);
    // The whole read decoded both chunks in place; the partial one keeps chunk 0.
    assert_eq!(src.stats().fetches, 2);
    src.read_exact_at(&mut part, 4990).unwrap();
    assert_eq!(&part[..], &space[4990..5290]);
    assert_eq!(src.stats().fetches, 2, "third read served by the cache");
    assert_eq!(src.stats().cache_hits, 1);
    assert!(
        src.read_exact_at(&mut part, space.len() as u64 - 10)
            .is_err()
    );
    assert_eq!(src.stored_range(4096..4097).unwrap(), Some(0..5000));
    assert_eq!(src.stored_range(5000..8192).unwrap(), None);
}

#[test]
fn digests_are_checked() {
    let a = vec![1u8; 9000];
    let (data, r, _) = blob(&[(a.clone(), false)]);
    let good = digest(Some(Digester::Blake3), &a).unwrap();
    let src = BlobSource::new(data.clone(), &r).with_digests(vec![Some(good)]);
    let (d, checked) = src.decode_chunk(0).unwrap();
    assert!(checked);
    assert_eq!(&d[..], &a[..]);
    // The digest's time is counted, as part of the decoding's.
    let s = src.stats();
    assert!(s.digest_ns > 0 && s.digest_ns <= s.decode_ns, "{s:?}");
    let unchecked = BlobSource::new(data.clone(), &r);
    assert!(!unchecked.decode_chunk(0).unwrap().1);
    assert_eq!(unchecked.stats().digest_ns, 0);
    let mut flipped = data;
    flipped[100] ^= 1;
    let src = BlobSource::new(flipped, &r).with_digests(vec![Some(good)]);
    let mut buf = vec![0u8; 10];
    let e = src.read_exact_at(&mut buf, 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("digest"), "{e}");
}

#[test]
fn zstd_chunks_decode_in_parallel_and_ahead() {
    let text = |seed: u8| -> Vec<u8> {
        (0..300_000u32)
            .map(|i| b"abcdefgh"[((i / 7) as usize + seed as usize) % 8])
            .collect()
    };
    let chunks: Vec<(Vec<u8>, bool)> = (0..6).map(|k| (text(k), true)).collect();
    let (data, r, space) = blob(&chunks);
    let digests = chunks
        .iter()
        .map(|(c, _)| digest(Some(Digester::Blake3), c))
        .collect();
    let src = Arc::new(BlobSource::new(data, &r).with_digests(digests));
    // Chunks 0..3 in one read: more than 512 KiB compressed, split over two threads.
    let mut buf = vec![0u8; 3 * 303_104];
    src.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, space[..buf.len()]);
    assert_eq!(src.stats().chunks_verified, 3);
    // The rest decoded ahead, then served from the cache.
    src.decode_ahead(buf.len() as u64..space.len() as u64);
    for _ in 0..500 {
        if !src.ahead_busy.load(Ordering::Acquire) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut tail = vec![0u8; space.len() - buf.len()];
    src.read_exact_at(&mut tail, buf.len() as u64).unwrap();
    assert_eq!(tail, space[buf.len()..]);
    let s = src.stats();
    assert_eq!(s.chunks_decoded, 6, "{s:?}");
    assert_eq!(s.chunks_verified, 6, "{s:?}");
    assert_eq!(s.cache_hits, 3, "{s:?}");
}

/// Without the split ([`BlobSource::with_split_decode`]), a read of more than 512 KiB of
/// compressed chunks (which the split decodes on two threads) decodes them all on the
/// calling thread, in place, each checked against its digest: the same bytes, one fetch.
#[test]
fn a_large_read_without_the_split_gives_the_same_bytes() {
    let text = |seed: u8| -> Vec<u8> {
        (0..300_000u32)
            .map(|i| b"abcdefgh"[((i / 5) as usize + seed as usize) % 8])
            .collect()
    };
    let chunks: Vec<(Vec<u8>, bool)> = (0..4).map(|k| (text(k), true)).collect();
    let (data, r, space) = blob(&chunks);
    let digests: Vec<_> = chunks
        .iter()
        .map(|(c, _)| digest(Some(Digester::Blake3), c))
        .collect();
    for split in [false, true] {
        let src = BlobSource::new(data.clone(), &r)
            .with_digests(digests.clone())
            .with_split_decode(split);
        let mut buf = vec![0u8; space.len()];
        src.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf == space, "split {split}");
        let s = src.stats();
        assert_eq!(
            (s.fetches, s.chunks_verified),
            (1, 4),
            "split {split}: {s:?}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn hostile_blobs_never_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6000),
        count in 0u32..64,
        ci_off in 0u64..7000,
        ci_len in 0u64..2000,
        usize_ in 0u64..2000,
        features in proptest::prelude::any::<u32>(),
        algo in 0u32..5,
        size in 0u64..100_000,
        reads in proptest::collection::vec((0u64..100_000, 0usize..9000), 0..4),
    ) {
        let mut r = RafsV6Blob::new_zeroed();
        r.chunk_size = U32::new(0x1000);
        r.chunk_count = U32::new(count);
        r.compression_algo = U32::new(algo);
        r.features = U32::new(features);
        r.uncompressed_size = U64::new(size);
        r.ci_compressor = U32::new(algo);
        r.ci_offset = U64::new(ci_off);
        r.ci_compressed_size = U64::new(ci_len);
        r.ci_uncompressed_size = U64::new(usize_);
        let src = BlobSource::new(bytes, &r).with_digests(vec![None; 3]);
        let _ = src.chunk_infos();
        for (off, len) in reads {
            let mut buf = vec![0u8; len];
            let _ = src.read_exact_at(&mut buf, off);
            let _ = src.stored_range(off..off + len as u64);
        }
        let _ = src.decode_chunk(0);
    }
}

#[test]
fn separate_meta_blob() {
    let a: Vec<u8> = (0..7000u32).map(|i| (i * 7) as u8).collect();
    let (data, mut r, space) = blob(&[(a, false)]);
    // Move the chunk-info array and the header into a meta blob of their own.
    let ci = r.ci_offset.get() as usize;
    let mut meta = vec![0u8; 100];
    meta.extend_from_slice(&data[ci..]);
    let chunk_data = data[..ci].to_vec();
    r.features = U32::new(r.features.get() | BlobFeatures::SEPARATE.bits());
    r.ci_offset = U64::new(100);
    let fix = |mut m: Vec<u8>, r: &RafsV6Blob| {
        let at = 100 + r.ci_compressed_size.get() as usize;
        let h = BlobCompressionContextHeader::mut_from_prefix(&mut m[at..])
            .unwrap()
            .0;
        h.s_features = r.features;
        h.s_ci_offset = r.ci_offset;
        m
    };
    let meta = fix(meta, &r);
    // Without the meta blob: a clear error, no panic.
    let e = BlobSource::new(chunk_data.clone(), &r)
        .chunk_infos()
        .unwrap_err();
    assert!(e.to_string().contains("separate meta blob"), "{e}");
    let src = BlobSource::new(chunk_data, &r).with_separate_meta(meta);
    let mut all = vec![0u8; space.len()];
    src.read_exact_at(&mut all, 0).unwrap();
    assert_eq!(all, space);
}

#[test]
fn bad_chunk_infos_are_refused() {
    let (data, r, _) = blob(&[(vec![3u8; 10], false)]);
    let mut r2 = r;
    r2.ci_uncompressed_size = U64::new(17);
    let e = BlobSource::new(data.clone(), &r2)
        .chunk_infos()
        .unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    let mut short = data.clone();
    short.truncate(20);
    let e = BlobSource::new(short, &r).chunk_infos().unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    // ZRAN needs gzip data and v2 chunk infos; gzip without ZRAN (stargz) is not read.
    let mut r3 = r;
    r3.features = U32::new(0x4000_0009);
    let e = BlobSource::new(data.clone(), &r3)
        .chunk_infos()
        .unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    r3.compression_algo = U32::new(2);
    let e = BlobSource::new(data.clone(), &r3)
        .chunk_infos()
        .unwrap_err();
    assert!(e.to_string().contains("v2"), "{e}");
    let mut r4 = r;
    r4.compression_algo = U32::new(2);
    assert!(matches!(
        BlobSource::new(data, &r4).chunk_infos(),
        Err(Error::Unsupported { .. })
    ));
}
