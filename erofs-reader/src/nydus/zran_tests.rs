use super::*;
use crate::error::Error;
use crate::source::Source;
use erofs_format::rafs::{BLOB_META_HEADER_SIZE, BlobCompressionContextHeader, RafsV6Blob};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

fn text(seed: u64, n: usize) -> Vec<u8> {
    let words = [
        "tar ", "gzip ", "zran ", "chunk\n", "blob ", "meta ", "nydus ",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 7) as usize].as_bytes());
    }
    out.truncate(n);
    out
}

/// A targz-ref blob: the gzip file, the meta blob, the blob table record, the
/// uncompressed space, the chunk digests. Two contexts: one from the deflate start, one
/// from a sync-flush point with a 32 KiB dictionary; 40 KiB chunks, 4 KiB aligned.
#[derive(Clone)]
struct Built {
    gz: Vec<u8>,
    meta: Vec<u8>,
    record: RafsV6Blob,
    space: Vec<u8>,
    digests: Vec<Option<Digest>>,
}

/// Byte offset of the ZRan contexts (after 7 chunk infos) in [`Built::meta`].
const CONTEXTS_AT: usize = 24 * 7;

fn build() -> Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(build_once).clone()
}

fn build_once() -> Built {
    let a = text(1, 150_000);
    let b = text(2, 100_000);
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(&a).unwrap();
    e.flush().unwrap();
    let flush_at = e.get_ref().len() as u64;
    e.write_all(&b).unwrap();
    let gz = e.finish().unwrap();
    let deflate_end = gz.len() as u64 - 8;
    let mut c0 = ZranInflateContext::new_zeroed();
    c0.in_offset = U64::new(10);
    c0.in_len = U32::new((flush_at - 10) as u32);
    c0.out_len = U32::new(a.len() as u32);
    let mut c1 = ZranInflateContext::new_zeroed();
    c1.in_offset = U64::new(flush_at);
    c1.out_offset = U64::new(a.len() as u64);
    c1.in_len = U32::new((deflate_end - flush_at) as u32);
    c1.out_len = U32::new(b.len() as u32);
    c1.dict_size = U32::new(32768);
    let dict = &a[a.len() - 32768..];
    // Chunks of at most 40 000 bytes cut from each context's output.
    let mut infos = Vec::new();
    let mut space = Vec::new();
    let mut digests = Vec::new();
    for (ci, part, ctx) in [(0u64, &a, &c0), (1, &b, &c1)] {
        for (k, chunk) in part.chunks(40_000).enumerate() {
            let uoff = space.len() as u64;
            space.extend_from_slice(chunk);
            space.resize(space.len().next_multiple_of(4096), 0);
            let uncomp = (uoff >> 12) | ((chunk.len() as u64 - 1) << 32) | (3 << 56);
            let comp = ctx.in_offset.get() | (1 << 40);
            let data = (ci << 32) | (k as u64 * 40_000);
            for w in [uncomp, comp, data] {
                infos.extend_from_slice(&w.to_le_bytes());
            }
            digests.push(digest(Some(Digester::Sha256), chunk));
        }
    }
    assert_eq!(infos.len(), CONTEXTS_AT);
    let count = digests.len() as u32;
    let mut ci = infos;
    ci.extend_from_slice(c0.as_bytes());
    ci.extend_from_slice(c1.as_bytes());
    ci.extend_from_slice(dict);
    let mut r = RafsV6Blob::new_zeroed();
    r.blob_id[..4].copy_from_slice(b"zran");
    r.chunk_size = U32::new(0x10000);
    r.chunk_count = U32::new(count);
    r.compression_algo = U32::new(2);
    r.digest_algo = U32::new(1);
    r.features = U32::new(0x4000_001D);
    r.compressed_size = U64::new(gz.len() as u64);
    r.uncompressed_size = U64::new(space.len() as u64);
    r.ci_offset = U64::new(0);
    r.ci_compressed_size = U64::new(ci.len() as u64);
    r.ci_uncompressed_size = U64::new(ci.len() as u64);
    let mut h = BlobCompressionContextHeader::new_zeroed();
    h.s_magic = U32::new(erofs_format::rafs::BLOB_META_MAGIC);
    h.s_magic2 = U32::new(erofs_format::rafs::BLOB_META_MAGIC);
    h.s_features = r.features;
    h.s_ci_entries = r.chunk_count;
    h.s_ci_compressed_size = r.ci_compressed_size;
    h.s_ci_uncompressed_size = r.ci_uncompressed_size;
    h.s_ci_zran_offset = U64::new(CONTEXTS_AT as u64);
    h.s_ci_zran_size = U64::new(80 + 32768);
    h.s_ci_zran_count = U32::new(2);
    let mut meta = ci;
    meta.extend_from_slice(h.as_bytes());
    Built {
        gz,
        meta,
        record: r,
        space,
        digests,
    }
}

fn source(b: &Built) -> BlobSource {
    BlobSource::new(b.gz.clone(), &b.record)
        .with_separate_meta(b.meta.clone())
        .with_digests(b.digests.clone())
}

#[test]
fn reads_back_inflating_each_context_once() {
    let b = build();
    let src = source(&b);
    assert_eq!(src.chunk_infos().unwrap().len(), 7);
    let mut all = vec![0xAAu8; b.space.len()];
    src.read_exact_at(&mut all, 0).unwrap();
    assert!(all == b.space);
    let s = src.stats();
    assert_eq!((s.zran_inflates, s.chunks_verified), (2, 7), "{s:?}");
    // Served from the cached contexts: no new inflation, no new fetch.
    let mut part = vec![0u8; 50_000];
    src.read_exact_at(&mut part, 30_000).unwrap();
    assert!(part == b.space[30_000..80_000]);
    let s2 = src.stats();
    assert_eq!((s2.zran_inflates, s2.fetches), (2, s.fetches), "{s2:?}");
    // A chunk's stored range is its context's gzip input.
    let c1 = src.chunk_infos().unwrap()[5];
    let r = src
        .stored_range(c1.uncompressed_offset..c1.uncompressed_end())
        .unwrap();
    let flush_at = src.zran_context_input(src.map().unwrap().zran.as_ref().unwrap(), &c1);
    assert_eq!(r, Some(flush_at.unwrap()));
    assert_eq!(r.unwrap().end, b.gz.len() as u64 - 8);
    let (d, checked) = src.decode_chunk(6).unwrap();
    assert!(checked);
    let at = src.chunk_infos().unwrap()[6].uncompressed_offset as usize;
    assert_eq!(&d[..], &b.space[at..at + d.len()]);
}

#[test]
fn without_caches_a_read_still_inflates_each_context_once() {
    let b = build();
    let src = source(&b).with_cache_capacity(0);
    // Chunks 1..=3 of context 0, read in one go.
    let mut buf = vec![0u8; 100_000];
    src.read_exact_at(&mut buf, 41_000).unwrap();
    assert!(buf == b.space[41_000..141_000]);
    assert_eq!(src.stats().zran_inflates, 1);
    src.read_exact_at(&mut buf, 41_000).unwrap();
    assert_eq!(src.stats().zran_inflates, 2, "nothing kept");
    // A read over both contexts inflates them together (two threads), each once.
    let mut all = vec![0u8; b.space.len()];
    src.read_exact_at(&mut all, 0).unwrap();
    assert!(all == b.space);
    assert_eq!(src.stats().zran_inflates, 4);
    // With the context cache on, the second is inflated ahead and then found cached.
    let src = source(&b);
    src.read_exact_at(&mut all, 0).unwrap();
    assert!(all == b.space);
    assert_eq!(src.stats().zran_inflates, 2);
    // An error in the context inflated ahead fails the read, without a panic.
    let mut bad = b.clone();
    let at = bad.gz.len() - 1000;
    bad.gz[at] ^= 0x55;
    let src = source(&bad).with_cache_capacity(0);
    assert!(src.read_exact_at(&mut all, 0).is_err());
}

#[test]
fn decode_ahead_fills_the_cache() {
    let b = build();
    let src = Arc::new(source(&b));
    src.decode_ahead(0..b.space.len() as u64);
    for _ in 0..500 {
        if !src.ahead_busy.load(Ordering::Acquire) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut all = vec![0u8; b.space.len()];
    src.read_exact_at(&mut all, 0).unwrap();
    assert!(all == b.space);
    let s = src.stats();
    assert_eq!(
        (s.zran_inflates, s.chunks_decoded, s.cache_hits),
        (2, 7, 7),
        "{s:?}"
    );
}

#[test]
fn flipped_gzip_byte_is_an_error() {
    let mut b = build();
    let at = b.gz.len() / 3;
    b.gz[at] ^= 0x20;
    let src = source(&b);
    let mut all = vec![0u8; b.space.len()];
    let e = src.read_exact_at(&mut all, 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // A truncated gzip file: the context's input is past its end.
    let mut b = build();
    b.gz.truncate(b.gz.len() / 2);
    let e = source(&b).read_exact_at(&mut all, 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}

/// `f` applied to the meta's second context (or the header) makes loading the chunk map
/// fail as corrupt.
fn corrupt_map(f: &dyn Fn(&mut Built)) -> Error {
    let mut b = build();
    f(&mut b);
    let e = source(&b).chunk_infos().map(|_| ()).unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    e
}

fn context_mut(b: &mut Built, i: usize) -> &mut ZranInflateContext {
    let at = CONTEXTS_AT + 40 * i;
    ZranInflateContext::mut_from_bytes(&mut b.meta[at..at + 40]).unwrap()
}

fn header_mut(b: &mut Built) -> &mut BlobCompressionContextHeader {
    let at = b.meta.len() - BLOB_META_HEADER_SIZE;
    BlobCompressionContextHeader::mut_from_bytes(&mut b.meta[at..]).unwrap()
}

#[test]
fn bad_zran_tables_are_refused() {
    corrupt_map(&|b| context_mut(b, 1).dict_offset = U64::new(1));
    corrupt_map(&|b| context_mut(b, 1).dict_size = U32::new(32769));
    corrupt_map(&|b| context_mut(b, 1).ctx_bits = 8);
    corrupt_map(&|b| context_mut(b, 1).out_len = U32::new(0));
    corrupt_map(&|b| context_mut(b, 1).out_len = U32::new(60_000));
    corrupt_map(&|b| context_mut(b, 0).in_len = U32::new(u32::MAX));
    corrupt_map(&|b| header_mut(b).s_ci_zran_count = U32::new(8));
    corrupt_map(&|b| header_mut(b).s_ci_zran_offset = U64::new(0));
    corrupt_map(&|b| header_mut(b).s_ci_zran_size = U64::new(1 << 40));
    let e = corrupt_map(&|b| {
        // Chunk 6 names context 2, which does not exist.
        let at = 6 * 24 + 20;
        b.meta[at] = 2;
    });
    assert!(e.to_string().contains("ZRan"), "{e}");
    // A chunk without the ZRAN flag in a ZRAN blob.
    corrupt_map(&|b| b.meta[7] = 1);
    // A ZRAN blob must be gzip with v2 chunk infos.
    corrupt_map(&|b| b.record.compression_algo = U32::new(3));
    // Gzip without ZRAN (legacy stargz) is not read.
    let mut b = build();
    b.record.features = U32::new(0x4000_0015);
    header_mut(&mut b).s_features = b.record.features;
    let e = source(&b).chunk_infos().map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert_eq!(e.to_string().matches("unsupported").count(), 1, "{e}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn hostile_meta_never_panics(
        flips in proptest::collection::vec((0usize..CONTEXTS_AT + 80 + 100, proptest::prelude::any::<u8>()), 1..6),
        cut in proptest::option::of(0usize..40_000),
        reads in proptest::collection::vec((0u64..300_000, 0usize..90_000), 1..4),
    ) {
        let mut b = build();
        for (at, x) in flips {
            b.meta[at] ^= x;
        }
        if let Some(n) = cut {
            b.gz.truncate(n);
        }
        let src = source(&b).with_cache_capacity(1 << 20);
        for (off, len) in reads {
            let mut buf = vec![0u8; len];
            let _ = src.read_exact_at(&mut buf, off);
            let _ = src.stored_range(off..off + len as u64);
        }
        let _ = src.decode_chunk(3);
    }
}
