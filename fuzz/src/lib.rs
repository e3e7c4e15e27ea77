//! Fuzz target bodies for the erofs-rs crates.
//!
//! Every target is a plain `fn(&[u8])` listed in [`TARGETS`]. The `fuzz_targets/*.rs`
//! binaries are one-line `fuzz_target!` wrappers around them (run with
//! `cargo +nightly fuzz run NAME` from `fuzz/`), and the `tests` package replays the
//! committed corpus `fuzz/corpus/NAME/` plus `fuzz/regressions/NAME/` through the same
//! functions on stable (`tests/tests/fuzz_corpus.rs`), so CI keeps them green without
//! nightly. This file is also compiled as a module of that test (`#[path]`), so it uses
//! nothing but its dependencies and has no libFuzzer in it.
//!
//! A body "passes" when it returns: parsers may refuse any input with an error, but they
//! must not panic, loop, or allocate without bound, and the round trips and protocol
//! invariants asserted here must hold. Structured targets (`image_mutate`,
//! `ondemand_session`) decode their input with [`arbitrary`], so that the fuzzer spends its
//! time past the magic numbers and checksums instead of in front of them.
//!
//! Under `cfg(fuzzing)` `erofs-format` skips the superblock checksum comparison, so byte
//! mutations of checksummed images reach the rest of the parser.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use cachefiles_proto::msg::{CACHEFILES_OP_OPEN, MsgHeader};
use cachefiles_proto::{Command, MsgId, ObjectId, OpenReply, Request};
use erofs_format::chunk::{ChunkFormat, ChunkTable, decode_block_map_entry};
use erofs_format::compress::{
    CompactIndexes, CompactPack, CompressionConfigs, CompressionMap, EncodedExtents, FullIndexes,
    IndexFormat, MapHeader,
};
use erofs_format::device::DeviceSlot;
use erofs_format::dirent::DirBlock;
use erofs_format::inode::{Inode as RawInode, InodeContext};
use erofs_format::rafs::{
    self, BlobCompressionContextHeader, BlobFeatures, ChunkInfoArray, RafsV6Blob,
    RafsV6InodeChunkAddr, RafsV6SuperBlockExt,
};
use erofs_format::superblock::{FeatureCompat, FeatureIncompat, SuperBlock};
use erofs_format::xattr::{InlineXattrs, LongPrefixes, Xattr as RawXattr, read_metadata_record};
use erofs_format::{Nid, checksum};
use erofs_reader::{ExtentTarget, FileType, Image, ImageBuilder, Inode, Limits, Piece};
use ondemand::testing::FakeDevice;
use ondemand::{AlignedBuf, BLOCK_SIZE, ObjectKey, OnDemandServer, Opened, Session};
use zerocopy::{FromBytes, IntoBytes};

/// A target body.
pub type Body = fn(&[u8]);

/// Every target: its name (the `fuzz_targets/NAME.rs` binary and the `corpus/NAME/`
/// directory) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("superblock", superblock),
    ("inode", inode),
    ("dirent", dirent),
    ("xattr", xattr),
    ("chunk", chunk),
    ("device", device),
    ("compress", compress),
    ("rafs", rafs),
    ("rafs_blob", rafs_blob),
    ("image", image),
    ("image_mutate", image_mutate),
    ("cachefiles_request", cachefiles_request),
    ("cachefiles_command", cachefiles_command),
    ("ondemand_session", ondemand_session),
    ("fanotify_events", fanotify_events),
    ("registry_headers", registry_headers),
    ("registry_token", registry_token),
    ("registry_manifest", registry_manifest),
    ("access_trace", access_trace),
    ("elf_needed", elf_needed),
    ("image_config", image_config),
];

/// Iterations over anything whose count comes from the input stop here: a count of 2^40
/// lclusters is a valid answer from a parser, walking all of them is the fuzzer's problem.
const MAX_ITEMS: usize = 4096;

/// Split off the first byte (a selector) from the input.
fn split_first(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, &[]),
    }
}

// ---------------------------------------------------------------------------------------
// erofs-format: superblock and its satellites

/// The superblock (the input is block 0 of an image), then everything the superblock
/// locates in that block: compression config records, the device table, the long xattr
/// prefix table, the metabox extension slot.
pub fn superblock(data: &[u8]) {
    let _ = SuperBlock::locate(data);
    let _ = checksum::verify_superblock_checksum(data);
    let Ok(sb) = SuperBlock::parse(data) else {
        return;
    };
    let _ = sb.compat().names().count();
    let _ = sb.incompat().names().count();
    let _ = (sb.block_size(), sb.sb_size(), sb.blocks(), sb.build_time());
    let _ = (sb.meta_blkaddr(), sb.device_id_mask(), sb.volume_name());
    let _ = (
        sb.available_compr_algs(),
        sb.lz4_max_distance(),
        sb.packed_nid(),
    );
    let _ = (
        sb.ishare_xattr_prefix_id(),
        sb.ext_slot1(data),
        sb.metabox_nid(data),
    );
    let _ = sb.nid_offset(sb.root_nid());
    let _ = sb.nid_offset(Nid(u64::MAX));
    let _ = sb.shared_xattr_offset(u32::MAX);
    if let Ok(ctx) = InodeContext::new(sb) {
        let _ = ctx.nid_offset(sb.root_nid());
        let _ = ctx.nid_offset(Nid(u64::MAX >> 5));
    }
    if sb.incompat().contains(FeatureIncompat::COMPR_CFGS) {
        if let Some(algs) = sb.available_compr_algs() {
            let _ = CompressionConfigs::parse(data, 1024 + sb.sb_size(), algs, sb.blkszbits);
        }
    } else if let Some(d) = sb.lz4_max_distance() {
        let _ = CompressionConfigs::legacy(d);
    }
    if let Some(bytes) = usize::try_from(sb.device_table_offset())
        .ok()
        .and_then(|o| data.get(o..))
        && let Ok(slots) = DeviceSlot::table(bytes, sb.extra_devices())
    {
        for s in slots {
            let _ = (s.tag(), s.blocks(sb.has_48bit()), s.mapped_blkaddr(true));
        }
    }
    let start = u64::from(sb.xattr_prefix_start.get()).saturating_mul(4);
    if let Some(bytes) = usize::try_from(start).ok().and_then(|o| data.get(o..)) {
        for p in LongPrefixes::new(bytes, sb.xattr_prefix_count).flatten() {
            let _ = p.base();
        }
    }
    // RAFS v6 bootstraps put their extended superblock in block 0 too.
    if let Ok(ext) = RafsV6SuperBlockExt::from_bootstrap(data) {
        let _ = ext.validate(data.len() as u64);
    }
}

/// Superblock-dependent context for record targets, from one selector byte.
fn context(sel: u8) -> InodeContext {
    InodeContext {
        blkszbits: 9 + (sel & 3),
        meta_offset: if sel & 4 != 0 { 4096 } else { u64::MAX - 31 },
        epoch: if sel & 8 != 0 {
            u64::MAX
        } else {
            1_700_000_000
        },
        fixed_nsec: 0,
        has_48bit: sel & 16 != 0,
    }
}

/// One inode: byte 0 selects the superblock context, the nid is `0` or huge, the rest is
/// the inode (and whatever follows it: xattrs, inline data, map header).
pub fn inode(data: &[u8]) {
    let (sel, bytes) = split_first(data);
    let ctx = context(sel);
    let nid = if sel & 32 != 0 { Nid(u64::MAX) } else { Nid(1) };
    let _ = ctx.nid_offset(nid);
    let Ok(ino) = RawInode::parse(bytes, nid, &ctx) else {
        return;
    };
    let _ = (
        ino.is_extended(),
        ino.inode_size(),
        ino.xattr_size(),
        ino.permissions(),
    );
    let _ = (
        ino.dot_omitted(),
        ino.data_blocks(),
        ino.data.rdev_major_minor(),
    );
    let _ = ino.xattr_offset();
    let _ = ino.meta_end();
    let _ = ino.chunk_table();
    let _ = ino.chunk_table_offset();
    let _ = ino.inline_tail();
    let _ = ino.flat_extent();
    // The xattr area, if it follows in the input.
    let isize = ino.inode_size() as usize;
    let xsize = ino.xattr_size() as usize;
    if let Some(area) = bytes.get(isize..isize.saturating_add(xsize))
        && let Ok(x) = InlineXattrs::parse(area)
    {
        let _ = x.shared_ids().count();
        for e in x.entries().take(MAX_ITEMS) {
            let _ = e.map(|e| (e.is_long_prefix(), e.short_prefix()));
        }
    }
}

/// One directory block.
pub fn dirent(data: &[u8]) {
    let Ok(block) = DirBlock::parse(data) else {
        return;
    };
    let _ = (block.len(), block.is_empty(), block.dirents().len());
    let _ = (block.first_name(), block.last_name());
    let sorted = block.check_sorted().is_ok();
    let mut names = Vec::new();
    for e in block.iter() {
        let _ = e.file_type();
        names.push(e.name);
    }
    assert_eq!(names.len(), block.len(), "iterator and len disagree");
    for (i, name) in names.iter().enumerate() {
        let got = block.get(i).expect("index below len");
        assert_eq!(got.name, *name);
        let found = block.lookup(name);
        if sorted {
            // In a sorted block every name is found (duplicates: some entry of that name).
            let found = found.expect("a sorted block finds its own names");
            assert_eq!(found.name, *name);
        }
    }
    let _ = block.get(block.len());
    let _ = block.lookup(b"");
    let _ = block.lookup(&[0xff; 300]);
}

/// The inline xattr area of an inode, one entry alone, and a long prefix table; byte 0
/// is the prefix count.
pub fn xattr(data: &[u8]) {
    let (count, bytes) = split_first(data);
    if let Ok(x) = InlineXattrs::parse(bytes) {
        let _ = x.header();
        let _ = x.shared_ids().count();
        for e in x.entries().take(MAX_ITEMS).flatten() {
            let _ = (e.long_prefix_index(), e.short_prefix());
        }
    }
    if let Ok((e, len)) = RawXattr::parse(bytes) {
        // The padded size: the name and value fit, the padding may be missing at the end.
        let unpadded = 4 + e.name.len() + e.value.len();
        assert!(
            len >= unpadded && len <= bytes.len().next_multiple_of(4),
            "entry size {len}"
        );
        let _ = (e.is_long_prefix(), e.short_prefix());
    }
    for p in LongPrefixes::new(bytes, count) {
        let _ = p.map(|p| p.base());
    }
    let _ = read_metadata_record(bytes, u64::from(count));
    let _ = read_metadata_record(bytes, u64::MAX);
}

/// A chunk table: bytes 0-1 are the chunk format, byte 2 `blkszbits` and the device id
/// mask, bytes 3..11 the file size.
pub fn chunk(data: &[u8]) {
    if data.len() < 11 {
        return;
    }
    let format = u16::from_le_bytes([data[0], data[1]]);
    let blkszbits = 9 + (data[2] & 3);
    let mask = if data[2] & 4 != 0 { u16::MAX } else { 0x0f };
    let size = u64::from_le_bytes(data[3..11].try_into().expect("8 bytes"));
    let bytes = &data[11..];
    for w in bytes.chunks_exact(4).take(8) {
        if let Ok(e) = zerocopy::little_endian::U32::read_from_bytes(w) {
            let _ = decode_block_map_entry(e);
        }
    }
    let Ok(format) = ChunkFormat::new(format) else {
        return;
    };
    let _ = (
        format.blkbits(),
        format.has_indexes(),
        format.is_48bit(),
        format.entry_size(),
    );
    let _ = format.chunkbits(blkszbits);
    let Ok(count) = format.chunk_count(size, blkszbits) else {
        return;
    };
    let Ok(table) = ChunkTable::parse(bytes, format, count) else {
        return;
    };
    assert!(table.len() as u64 <= count, "table longer than asked");
    for i in 0..table.len().min(MAX_ITEMS) {
        assert!(
            table.get(i, format, mask).is_some(),
            "entry {i} below len missing"
        );
    }
    assert!(table.get(table.len(), format, mask).is_none());
    let _ = table.is_empty();
}

/// A device table; byte 0 is the slot count.
pub fn device(data: &[u8]) {
    let (count, bytes) = split_first(data);
    if let Ok(slots) = DeviceSlot::table(bytes, u16::from(count)) {
        assert_eq!(slots.len(), usize::from(count));
        for s in slots {
            assert!(s.tag().len() <= 64);
            let _ = (s.blocks(false), s.blocks(true));
            let _ = (s.mapped_blkaddr(false), s.mapped_blkaddr(true));
        }
    }
}

/// A compressed inode's map: byte 0 selects the index format, block size and big-pcluster
/// feature; bytes 1..9 are `i_size`; bytes 9..17 the map header; the rest the indexes or
/// extent records. Also a lone compact pack and the algorithm config records.
pub fn compress(data: &[u8]) {
    if data.len() < 17 {
        return;
    }
    let sel = data[0];
    let format = if sel & 1 != 0 {
        IndexFormat::Compact
    } else {
        IndexFormat::Full
    };
    let blkszbits = 9 + ((sel >> 1) & 3);
    let big = sel & 8 != 0;
    let i_size = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    let Ok(header) = MapHeader::read_from_bytes(&data[9..17]) else {
        return;
    };
    let rest = &data[17..];
    // Lone packs of both sizes.
    for len in [8, 32] {
        if let Some(b) = rest.get(..len)
            && let Ok(p) = CompactPack::new(b, sel >> 4, big)
        {
            let _ = p.base_blkaddr();
            for i in 0..=p.len() {
                let _ = p.raw_entry(i);
                let _ = p.decode(i, u64::from(sel));
            }
        }
    }
    let _ = CompressionConfigs::parse(rest, 0, u16::from(sel) & 0x1f, blkszbits);
    let _ = (
        header.as_u64(),
        header.advise(),
        header.is_whole_file_fragment(),
    );
    let _ = (
        header.idata_size(),
        header.extent_record_size(),
        header.extent_count(),
    );
    let Ok(map) = header.decode(format, blkszbits) else {
        return;
    };
    match map {
        CompressionMap::Fragment { offset } => {
            let _ = offset;
        }
        CompressionMap::Lclusters(map) => {
            let _ = map.check_superblock(big);
            let _ = (
                map.lcluster_size(),
                map.big_pcluster_1(),
                map.big_pcluster_2(),
            );
            let total = i_size.div_ceil(map.lcluster_size());
            match format {
                IndexFormat::Full => {
                    let Ok(idx) = FullIndexes::new(rest, total, &map) else {
                        return;
                    };
                    let _ = (idx.len(), idx.is_empty(), idx.raw().len());
                    for l in idx.iter().take(MAX_ITEMS) {
                        let _ = l.map(|l| l.lcluster_type());
                    }
                    let _ = idx.get(total);
                    let _ = idx.get(u64::MAX);
                }
                IndexFormat::Compact => {
                    // The header sits at an 8-aligned offset; the indexes start after it.
                    let ebase = 64 + 8 * u64::from(sel >> 5);
                    let Ok(idx) = CompactIndexes::new(rest, ebase, total, &map) else {
                        return;
                    };
                    let _ = (idx.layout().byte_len(), idx.len(), idx.is_empty());
                    for l in idx.iter().take(MAX_ITEMS) {
                        let _ = l.map(|l| l.lcluster_type());
                    }
                    let _ = idx.layout().locate(u64::MAX);
                    let _ = idx.get(total);
                    let _ = idx.pack(u64::MAX);
                }
            }
        }
        CompressionMap::Extents(map) => {
            let Ok(off) = map.records_offset(64) else {
                return;
            };
            let Ok(count) = map.record_count(i_size) else {
                return;
            };
            let skip = usize::try_from(off.saturating_sub(8)).unwrap_or(usize::MAX);
            let Some(records) = rest.get(skip..) else {
                return;
            };
            if let Ok(ext) = EncodedExtents::new(records, &map, count) {
                let _ = (ext.len(), ext.is_empty());
                for e in ext.iter().take(MAX_ITEMS) {
                    let _ = (e.length(), e.is_partial_ref(), e.encoding());
                }
            }
        }
    }
}

/// A RAFS v6 bootstrap (its first block onward): the extended superblock, blob table,
/// prefetch table and chunk table; then the input read as a blob meta header and as chunk
/// info arrays of both versions; then as an inode chunk address.
pub fn rafs(data: &[u8]) {
    if let Ok(ext) = RafsV6SuperBlockExt::from_bootstrap(data) {
        let _ = (
            ext.flags(),
            ext.chunk_size(),
            ext.compressor(),
            ext.digester(),
        );
        let _ = ext.blob_count();
        if ext.validate(data.len() as u64).is_ok() {
            if let Ok(blobs) = ext.blob_table(data) {
                for (i, b) in blobs.iter().enumerate() {
                    let _ = (b.blob_id(), b.features(), b.compressor(), b.ci_compressor());
                    let _ = (b.digester(), b.chunk_info_size(), b.compressed_data_size());
                    let _ = b.meta_header_offset();
                    let _ = b.validate(i as u32, ext.chunk_size());
                }
            }
            if let Ok(p) = ext.prefetch_table(data) {
                let _ = p.raw().len();
                let _ = p.nids().take(MAX_ITEMS).count();
                let _ = p.is_root_only(36);
            }
            let _ = ext
                .chunk_table(data)
                .map(|t| t.iter().filter(|c| c.is_compressed()).count());
        }
    }
    let _ = rafs::blob_table(data).map(|t| t.len());
    let _ = rafs::chunk_table(data).map(|t| t.len());
    if let Ok(p) = rafs::PrefetchTable::new(data) {
        let _ = p.nids().take(MAX_ITEMS).count();
    }
    if let Ok(h) = BlobCompressionContextHeader::parse(data) {
        let _ = (h.features(), h.ci_compressor());
        // The ZRan table of a targz-ref blob meta, in the bytes after the header.
        if let Ok(t) = rafs::ZranTable::new(data.get(4096..).unwrap_or(&[]), h) {
            for i in 0..t.len().min(MAX_ITEMS) as u32 {
                if let Ok((ctx, dict)) = t.context(i) {
                    assert!(dict.len() <= rafs::ZRAN_DICT_WINDOW as usize);
                    let _ = (ctx.input_range(), ctx.prime());
                }
            }
            assert!(t.context(t.len() as u32).is_err());
        }
        if let Ok(blobs) = rafs::blob_table(data.get(4096..).unwrap_or(&[])) {
            for b in blobs.iter().take(4) {
                let _ = h.matches(b);
            }
        }
    }
    let (sel, rest) = split_first(data);
    let features = BlobFeatures::from_bits_retain(u32::from(sel) << 24 | u32::from(sel));
    let _ = features.is_valid();
    let count = u32::from(sel) * 3;
    if let Ok(arr) = ChunkInfoArray::new(rest, features, count) {
        assert!(arr.len() <= count as usize);
        for c in arr.iter().take(MAX_ITEMS).flatten() {
            let _ = (c.uncompressed_end(), c.compressed_end());
        }
        assert!(arr.get(arr.len()).is_none());
    }
    if let Ok((addr, _)) = RafsV6InodeChunkAddr::read_from_prefix(data) {
        let _ = (addr.blob_index(), addr.chunk_index(), addr.block_addr());
        let _ = (addr.uncompressed_offset(), addr.is_hole());
    }
}

/// A [`rafs_blob`] input, split.
#[derive(Debug)]
pub struct RafsBlobInput<'a> {
    /// Bit 0: a separate meta follows the record; bits 1-7 move the sampled reads.
    pub flags: u8,
    /// The blob table record.
    pub record: RafsV6Blob,
    /// The separate blob meta (targz-ref).
    pub meta: Option<&'a [u8]>,
    /// The stored blob.
    pub stored: &'a [u8],
}

/// Where a [`rafs_blob`] input splits: flag byte, the 256-byte blob table record, then
/// (with flag bit 0) a little-endian `u32` length and that many bytes of separate blob meta,
/// then the stored blob.
pub fn split_rafs_blob(data: &[u8]) -> Option<RafsBlobInput<'_>> {
    let (&flags, rest) = data.split_first()?;
    let (record, rest) = RafsV6Blob::read_from_prefix(rest).ok()?;
    if flags & 1 == 0 {
        return Some(RafsBlobInput {
            flags,
            record,
            meta: None,
            stored: rest,
        });
    }
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let meta = rest.get(4..4 + len.min(rest.len() - 4))?;
    Some(RafsBlobInput {
        flags,
        record,
        meta: Some(meta),
        stored: &rest[4 + meta.len()..],
    })
}

/// The input of [`rafs_blob`] for a blob table `record`, its stored blob and its separate meta
/// (the inverse of [`split_rafs_blob`]).
pub fn join_rafs_blob(record: &RafsV6Blob, meta: Option<&[u8]>, stored: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(meta.is_some())];
    out.extend_from_slice(record.as_bytes());
    if let Some(m) = meta {
        out.extend_from_slice(&(m.len() as u32).to_le_bytes());
        out.extend_from_slice(m);
    }
    out.extend_from_slice(stored);
    out
}

/// A Nydus blob (record, stored bytes, separate meta: [`split_rafs_blob`]) read through
/// `erofs_reader::nydus::BlobSource` as the kernel would: the chunk map, the ZRan contexts,
/// reads of the first 256 KiB and of blocks spread over the uncompressed space, stored
/// ranges, chunk decoding. Reads may fail; they must not panic, hang or allocate without
/// bound, and a read that succeeds fills exactly what was asked.
pub fn rafs_blob(data: &[u8]) {
    use erofs_reader::Source;
    use erofs_reader::nydus::BlobSource;
    let Some(RafsBlobInput {
        flags,
        record,
        meta,
        stored,
    }) = split_rafs_blob(data)
    else {
        return;
    };
    let mut src = BlobSource::new(stored.to_vec(), &record).with_cache_capacity(1 << 20);
    if let Some(m) = meta {
        src = src.with_separate_meta(m.to_vec());
    }
    let size = src.uncompressed_size();
    let _ = src.zran_contexts().map(<[_]>::len);
    let chunks = src.chunk_infos().map(<[_]>::len).unwrap_or(0);
    for ci in 0..chunks.min(4) as u32 {
        if let Ok((bytes, _)) = src.decode_chunk(ci) {
            assert!(bytes.len() <= 16 << 20);
        }
    }
    let mut buf = vec![0u8; 256 << 10];
    let first = size.min(buf.len() as u64) as usize;
    if src.read_exact_at(&mut buf[..first], 0).is_ok() {
        assert_eq!(src.size().ok(), Some(size));
    }
    // A few blocks spread over the address space (which flag bits 1-7 shift around).
    let step = (size / 5).max(1);
    for k in 0..5u64 {
        let off = (k * step + u64::from(flags >> 1) * 4096).min(size);
        let len = (size - off).min(8192) as usize;
        let _ = src.read_exact_at(&mut buf[..len], off);
        let _ = src.stored_range(off..off + len as u64);
    }
    // Past the end: always an error.
    assert!(src.read_exact_at(&mut buf[..1], size).is_err());
}

// ---------------------------------------------------------------------------------------
// erofs-reader: whole images

/// Bounds of one walk, so that a valid image of a million files does not count as a hang.
const WALK_INODES: usize = 512;
const WALK_ENTRIES: usize = 8192;
const WALK_BYTES: u64 = 4 << 20;
const WALK_PATHS: usize = 64;

/// Open `builder`'s image and walk it (see [`walk`]).
fn open_and_walk(builder: ImageBuilder) {
    let limits = Limits {
        max_symlinks: 8,
        max_components: 256,
        max_depth: 32,
    };
    if let Ok(image) = builder.limits(limits).build() {
        walk(&image);
    }
}

/// Walk every directory reachable from the root (each nid once), stat every entry, list its
/// xattrs, read its data (bounded), map it, read symlinks, and resolve a few paths through
/// the path API (symlinks included).
pub fn walk(image: &Image) {
    let _ = (
        image.superblock(),
        image.block_size(),
        image.block_size_bits(),
    );
    let _ = (image.devices().len(), image.primary_len(), image.limits());
    for d in image.devices() {
        let _ = d.tag_str();
    }
    let mut seen: HashSet<Nid> = HashSet::new();
    let mut queue: VecDeque<(Nid, PathBuf)> = VecDeque::new();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut entries = 0usize;
    let mut bytes = 0u64;
    queue.push_back((image.root_nid(), PathBuf::from("/")));
    seen.insert(image.root_nid());
    while let Some((nid, path)) = queue.pop_front() {
        let Ok(inode) = image.inode(nid) else {
            continue;
        };
        visit(image, &inode, &mut bytes);
        if !inode.metadata().is_dir() {
            continue;
        }
        let Ok(rd) = image.read_dir_inode(&inode) else {
            continue;
        };
        for e in rd {
            entries += 1;
            if entries > WALK_ENTRIES {
                return;
            }
            let Ok(e) = e else {
                break;
            };
            let name = e.name().to_vec();
            let _ = (e.file_name(), e.file_type());
            if let Ok(Some(found)) = image.lookup_in(&inode, &name) {
                assert_eq!(found.name(), &name[..], "lookup returned another name");
            }
            if name == b"." || name == b".." {
                continue;
            }
            let child = path.join(std::ffi::OsStr::from_bytes(&name));
            if paths.len() < WALK_PATHS {
                paths.push(child.clone());
            }
            if seen.len() < WALK_INODES && seen.insert(e.nid()) {
                if e.file_type() == FileType::Directory {
                    queue.push_back((e.nid(), child));
                } else if let Ok(i) = image.inode(e.nid()) {
                    visit(image, &i, &mut bytes);
                }
            }
        }
    }
    for p in &paths {
        let _ = image.metadata(p);
        let _ = image.symlink_metadata(p);
        let _ = image.read_link(p);
        let _ = image.xattrs(p);
        let mut buf = [0u8; 512];
        let _ = image.read_at(p.as_path(), 0, &mut buf);
        let _ = image.extents(p.as_path(), 0..4096);
        let _ = image.read_dir(p).map(|rd| rd.take(64).count());
    }
    image.release_memory();
}

/// Everything about one inode: metadata, xattrs, symlink target, data and map.
fn visit(image: &Image, inode: &Inode, budget: &mut u64) {
    let md = inode.metadata();
    let _ = (
        md.nid(),
        md.file_type(),
        md.mode(),
        md.permissions(),
        md.uid(),
        md.gid(),
    );
    let _ = (
        md.len(),
        md.nlink(),
        md.mtime(),
        md.mtime_nsec(),
        md.rdev_major(),
    );
    let _ = (
        md.layout(),
        md.inode_size(),
        md.xattr_size(),
        md.blocks(image.block_size()),
    );
    let _ = image.inode_xattrs(inode).map(|x| x.len());
    let size = md.len();
    match md.file_type() {
        FileType::Symlink => {
            let _ = image.read_link_inode(inode);
        }
        FileType::Regular => {
            // Three positioned reads: start, middle, last byte.
            let mut buf = vec![0u8; 8192];
            for off in [0, size / 2, size.saturating_sub(1), size, u64::MAX] {
                if let Ok(n) = image.read_at(inode, off, &mut buf) {
                    assert!(n <= buf.len());
                    assert!(n as u64 <= size.saturating_sub(off), "read past EOF");
                }
            }
            // The map of the first 16 MiB, checked for coverage.
            let end = size.min(16 << 20);
            if let Ok(ext) = image.extents(inode, 0..end) {
                let mut pos = 0;
                for x in ext.iter().take(MAX_ITEMS) {
                    assert_eq!(x.file_offset, pos, "extents leave a gap");
                    pos += x.len;
                    if let ExtentTarget::Device { offset, .. } = &x.target {
                        let _ = offset;
                    }
                }
            }
            // The whole data, piece by piece, up to the walk's byte budget.
            if *budget < WALK_BYTES {
                let mut total = 0u64;
                let r = image.for_each_piece(inode, |p| {
                    total += match p {
                        Piece::Data(d) => d.len() as u64,
                        Piece::Zeros(n) => n,
                    };
                    if total > WALK_BYTES {
                        return Err(erofs_reader::Error::unsupported("fuzz walk budget"));
                    }
                    Ok(())
                });
                if r.is_ok() {
                    assert_eq!(total, size, "pieces do not add up to the size");
                }
                *budget += total.min(WALK_BYTES);
                if size <= 64 << 10
                    && let Ok(all) = image.read_inode(inode)
                {
                    assert_eq!(all.len() as u64, size);
                }
            }
        }
        _ => {}
    }
}

/// Raw bytes as an image with no extra devices: open and walk.
///
/// Outside `cfg(fuzzing)` (the stable replay of the corpus), where `erofs-format` does
/// compare the superblock checksum, the image is also walked with its checksum rewritten,
/// so that inputs the fuzzer found past the checksum still reach the reader.
pub fn image(data: &[u8]) {
    open_and_walk(ImageBuilder::new(data.to_vec()));
    if !cfg!(fuzzing)
        && let Some(fixed) = with_fixed_checksum(data)
    {
        open_and_walk(ImageBuilder::new(fixed));
    }
}

/// A copy of `data` with the superblock checksum rewritten, if it has a wrong one.
fn with_fixed_checksum(data: &[u8]) -> Option<Vec<u8>> {
    let sb = SuperBlock::locate(data).ok()?;
    if !sb.compat().contains(FeatureCompat::SB_CHKSUM)
        || checksum::verify_superblock_checksum(data).is_ok()
    {
        return None;
    }
    let mut fixed = data.to_vec();
    checksum::write_superblock_checksum(&mut fixed).ok()?;
    Some(fixed)
}

/// Real images (built by `fuzz/make-seeds.sh`, committed under `tests/data/seeds/`) that
/// [`image_mutate`] starts from.
pub const SEED_IMAGES: &[(&str, &[u8])] = &[
    (
        "plain",
        include_bytes!("../../tests/data/seeds/plain.erofs"),
    ),
    (
        "plain-512",
        include_bytes!("../../tests/data/seeds/plain-512.erofs"),
    ),
    (
        "chunked",
        include_bytes!("../../tests/data/seeds/chunked.erofs"),
    ),
    ("lz4", include_bytes!("../../tests/data/seeds/lz4.erofs")),
    (
        "lz4-frag",
        include_bytes!("../../tests/data/seeds/lz4-frag.erofs"),
    ),
    ("rafs", include_bytes!("../../tests/data/seeds/rafs.boot")),
];

/// The extra device (blob) of the `chunked` seed image.
pub const SEED_BLOB: &[u8] = include_bytes!("../../tests/data/seeds/chunked.blob");

/// A targeted edit of a seed image.
#[derive(Arbitrary, Debug, Clone)]
pub enum Edit {
    /// Set one byte (offset modulo the image size).
    Byte {
        /// Where.
        at: u32,
        /// The new value.
        value: u8,
    },
    /// Set a little-endian 16-bit word.
    U16 {
        /// Where.
        at: u32,
        /// The new value.
        value: u16,
    },
    /// Set a little-endian 32-bit word.
    U32 {
        /// Where.
        at: u32,
        /// The new value.
        value: u32,
    },
    /// Set a little-endian 64-bit word.
    U64 {
        /// Where.
        at: u32,
        /// The new value.
        value: u64,
    },
    /// Copy bytes within the image (e.g. an inode over another, a dirent over a sibling).
    Copy {
        /// Source.
        from: u32,
        /// Destination.
        to: u32,
        /// Length.
        len: u8,
    },
    /// Set a superblock field.
    Super(SuperEdit),
    /// Truncate the image.
    Truncate {
        /// The new length (modulo the old one).
        len: u32,
    },
}

/// A superblock field to overwrite.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SuperEdit {
    /// `feature_compat`.
    Compat(u32),
    /// `feature_incompat`.
    Incompat(u32),
    /// `blkszbits`.
    BlkSzBits(u8),
    /// `sb_extslots`.
    ExtSlots(u8),
    /// `rootnid_2b`.
    RootNid(u16),
    /// `meta_blkaddr`.
    MetaBlkAddr(u32),
    /// `xattr_blkaddr`.
    XattrBlkAddr(u32),
    /// `extra_devices`.
    ExtraDevices(u16),
    /// `devt_slotoff`.
    DevtSlotOff(u16),
    /// `u1` (algorithm bitmap or LZ4 distance).
    U1(u16),
    /// `xattr_prefix_count` and `xattr_prefix_start`.
    Prefixes(u8, u32),
    /// `packed_nid`.
    PackedNid(u64),
    /// `blocks_lo`.
    Blocks(u32),
}

/// What to give the reader as an extra device.
#[derive(Arbitrary, Debug, Clone)]
pub enum DeviceInput {
    /// The seed blob.
    SeedBlob,
    /// The seed blob, cut short.
    Truncated(u16),
    /// Zeros.
    Zeros(u16),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// The structured input of [`image_mutate`].
#[derive(Arbitrary, Debug, Clone)]
pub struct MutatedImage {
    /// Index into [`SEED_IMAGES`] (modulo).
    pub seed: u8,
    /// Edits, applied in order (at most 32 are used).
    pub edits: Vec<Edit>,
    /// Rewrite the superblock checksum afterwards (under `cfg(fuzzing)` it is not compared
    /// anyway; outside it, it is always rewritten).
    pub fix_checksum: bool,
    /// Extra devices (at most 4 are used).
    pub devices: Vec<DeviceInput>,
    /// Unified addressing of all devices.
    pub flat: bool,
}

impl MutatedImage {
    /// The mutated image bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let (_, seed) = SEED_IMAGES[usize::from(self.seed) % SEED_IMAGES.len()];
        let mut img = seed.to_vec();
        for e in self.edits.iter().take(32) {
            apply(&mut img, e);
        }
        // Outside `cfg(fuzzing)` the checksum is compared: always rewrite it there, so the
        // replayed corpus reaches what the fuzzer reached.
        if (self.fix_checksum || !cfg!(fuzzing))
            && let Some(fixed) = with_fixed_checksum(&img)
        {
            img = fixed;
        }
        img
    }
}

fn put(img: &mut [u8], at: u32, bytes: &[u8]) {
    if img.len() < bytes.len() {
        return;
    }
    let at = at as usize % (img.len() - bytes.len() + 1);
    img[at..at + bytes.len()].copy_from_slice(bytes);
}

fn apply(img: &mut Vec<u8>, e: &Edit) {
    if img.is_empty() {
        return;
    }
    match *e {
        Edit::Byte { at, value } => put(img, at, &[value]),
        Edit::U16 { at, value } => put(img, at, &value.to_le_bytes()),
        Edit::U32 { at, value } => put(img, at, &value.to_le_bytes()),
        Edit::U64 { at, value } => put(img, at, &value.to_le_bytes()),
        Edit::Copy { from, to, len } => {
            let len = usize::from(len).min(img.len());
            let from = from as usize % (img.len() - len + 1);
            let piece = img[from..from + len].to_vec();
            put(img, to, &piece);
        }
        Edit::Truncate { len } => {
            let len = len as usize % img.len();
            img.truncate(len.max(1));
        }
        Edit::Super(s) => {
            let Some(head) = img.get_mut(..1024 + 128) else {
                return;
            };
            let Ok(sb) = SuperBlock::mut_from_bytes(&mut head[1024..]) else {
                return;
            };
            match s {
                SuperEdit::Compat(v) => sb.feature_compat = v.into(),
                SuperEdit::Incompat(v) => sb.feature_incompat = v.into(),
                SuperEdit::BlkSzBits(v) => sb.blkszbits = v,
                SuperEdit::ExtSlots(v) => sb.sb_extslots = v,
                SuperEdit::RootNid(v) => sb.rootnid_2b = v.into(),
                SuperEdit::MetaBlkAddr(v) => sb.meta_blkaddr = v.into(),
                SuperEdit::XattrBlkAddr(v) => sb.xattr_blkaddr = v.into(),
                SuperEdit::ExtraDevices(v) => sb.extra_devices = v.into(),
                SuperEdit::DevtSlotOff(v) => sb.devt_slotoff = v.into(),
                SuperEdit::U1(v) => sb.u1 = v.into(),
                SuperEdit::Prefixes(c, s) => {
                    sb.xattr_prefix_count = c;
                    sb.xattr_prefix_start = s.into();
                }
                SuperEdit::PackedNid(v) => sb.packed_nid = v.into(),
                SuperEdit::Blocks(v) => sb.blocks_lo = v.into(),
            }
        }
    }
}

/// A real image with structured edits, opened with 0-4 extra devices, and walked.
pub fn image_mutate(data: &[u8]) {
    let Ok(input) = MutatedImage::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let img = input.bytes();
    let mut builder = ImageBuilder::new(img).flat_devices(input.flat);
    for d in input.devices.iter().take(4) {
        let dev: Vec<u8> = match d {
            DeviceInput::SeedBlob => SEED_BLOB.to_vec(),
            DeviceInput::Truncated(n) => SEED_BLOB[..usize::from(*n).min(SEED_BLOB.len())].to_vec(),
            DeviceInput::Zeros(n) => vec![0; usize::from(*n)],
            DeviceInput::Bytes(b) => b.clone(),
        };
        builder = builder.device(dev);
    }
    open_and_walk(builder);
}

// ---------------------------------------------------------------------------------------
// cachefiles-proto

/// One message as read from `/dev/cachefiles`; a decoded request must survive
/// `decode(encode(r)) == r`.
pub fn cachefiles_request(data: &[u8]) {
    let Ok(req) = Request::decode(data) else {
        return;
    };
    let _ = (req.msg_id(), req.object_id(), req.opcode());
    if let Request::Open(o) = &req {
        let _ = (o.volume_key_str(), o.cookie_key_str());
    }
    let n = req.encoded_len();
    let mut buf = vec![0u8; n];
    let written = req.encode(&mut buf).expect("a decoded request encodes");
    assert_eq!(written, n, "encoded_len disagrees with encode");
    let again = Request::decode(&buf[..written]).expect("an encoded request decodes");
    assert_eq!(again, req, "decode(encode(r)) != r");
    // A buffer one byte short is an error, not a panic.
    if n > 0 {
        assert!(req.encode(&mut buf[..n - 1]).is_err());
    }
}

/// One command as written to `/dev/cachefiles`; a decoded command must survive
/// `decode(encode(c)) == c`, and its `Display` must be its encoding when no byte needs
/// escaping.
pub fn cachefiles_command(data: &[u8]) {
    let Ok(cmd) = Command::decode(data) else {
        return;
    };
    let _ = cmd.verb();
    let n = cmd.encoded_len();
    let mut buf = vec![0u8; n];
    let written = cmd.encode(&mut buf).expect("a decoded command encodes");
    assert_eq!(written, n, "encoded_len disagrees with encode");
    let again = Command::decode(&buf[..written]).expect("an encoded command decodes");
    assert_eq!(again, cmd, "decode(encode(c)) != c");
    // `Display` is for logs: it escapes argument bytes, so it equals the encoding only
    // when there is nothing to escape.
    let text = cmd.to_string();
    let plain = buf[..written]
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && !b"\\'\"".contains(&b));
    if plain {
        assert_eq!(text.as_bytes(), &buf[..written], "Display != encode");
    }
    if n > 0 {
        assert!(cmd.encode(&mut buf[..n - 1]).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// ondemand: the session, fed request sequences

/// Object sizes the fuzzer may give a blob: small ones (fills stay cheap) and the
/// out-of-range ones the session must refuse.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum BlobSize {
    /// Up to 16 MiB.
    Small(u32),
    /// Just past `i64::MAX` (refused with EFBIG).
    TooLarge,
    /// `u64::MAX`.
    Max,
}

impl BlobSize {
    fn get(self) -> u64 {
        match self {
            BlobSize::Small(n) => u64::from(n) % (16 << 20),
            BlobSize::TooLarge => i64::MAX as u64 + 1,
            BlobSize::Max => u64::MAX,
        }
    }
}

/// One message from the (simulated) kernel.
#[derive(Arbitrary, Debug, Clone)]
pub enum SessionOp {
    /// OPEN of blob `blob` (modulo the table; the key may also be garbage).
    Open {
        /// Message id.
        msg_id: u32,
        /// Object id.
        object_id: u8,
        /// Which blob, or a key the server does not know.
        blob: u8,
        /// The cookie key bytes when `blob` is past the table.
        key: Vec<u8>,
        /// The fd number (`u32::MAX` cannot be adopted).
        fd: u32,
    },
    /// READ.
    Read {
        /// Message id.
        msg_id: u32,
        /// Object id.
        object_id: u8,
        /// Offset.
        off: u64,
        /// Length (requests past `i64::MAX` do not decode).
        len: u32,
    },
    /// CLOSE.
    Close {
        /// Message id.
        msg_id: u32,
        /// Object id.
        object_id: u8,
    },
    /// Raw message bytes.
    Raw(Vec<u8>),
}

/// The structured input of [`ondemand_session`].
#[derive(Arbitrary, Debug, Clone)]
pub struct SessionInput {
    /// Blob sizes (at most 4); blob `i` has cookie key `blob<i>`.
    pub blobs: Vec<BlobSize>,
    /// Low 12 bits: readahead in KiB (up to 4 MiB); high 4 bits: the limit of the fill ahead
    /// of sequential readers in MiB.
    pub readahead_kib: u16,
    /// Fill buffer size in blocks (1..=64).
    pub buf_blocks: u8,
    /// Blob reads fail past this offset (none if `None`).
    pub fail_after: Option<u32>,
    /// `write_at` fails on this object id.
    pub fail_writes_on: Option<u8>,
    /// Messages.
    pub ops: Vec<SessionOp>,
}

/// The blob server of the fuzzed session.
struct Blobs {
    sizes: Vec<u64>,
    fail_after: Option<u64>,
}

impl OnDemandServer for Blobs {
    type Object = usize;

    fn open(&self, key: &ObjectKey<'_>) -> io::Result<Opened<usize>> {
        let name = key
            .cookie_key
            .strip_prefix(b"blob")
            .ok_or(io::ErrorKind::NotFound)?;
        let i = std::str::from_utf8(name)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&i| i < self.sizes.len())
            .ok_or(io::ErrorKind::NotFound)?;
        Ok(Opened {
            object: i,
            size: self.sizes[i],
        })
    }

    fn read_at(&self, object: &usize, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[*object];
        assert!(
            off < size || buf.is_empty(),
            "read at {off} past the blob ({size})"
        );
        if self.fail_after.is_some_and(|f| off >= f) {
            return Err(io::Error::other("injected read failure"));
        }
        let n = buf.len().min((size - off.min(size)) as usize);
        buf[..n].fill(*object as u8);
        Ok(n)
    }
}

/// A sequence of kernel messages through `Session::serve_message`, against a model of the
/// object table: every OPEN gets exactly one `copen` with its msg id, every READ of an open
/// object is completed exactly once (even when the fill fails), writes stay block-aligned
/// and inside the object, and the object table matches the model.
pub fn ondemand_session(data: &[u8]) {
    let Ok(input) = SessionInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let sizes: Vec<u64> = input.blobs.iter().take(4).map(|b| b.get()).collect();
    let server = Blobs {
        sizes: sizes.clone(),
        fail_after: input.fail_after.map(u64::from),
    };
    // The low 12 bits of `readahead_kib` set the readahead window, the high 4 the limit of
    // the fill ahead of sequential readers (0-15 MiB).
    let session = Session::new(server)
        .with_readahead(u64::from(input.readahead_kib % 4096) << 10)
        .with_sequential_ahead(u64::from(input.readahead_kib >> 12) << 20);
    // The crate's fake kernel: cache files in a directory of this run.
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "erofs-fuzz-session-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let device = FakeDevice::new(&dir);
    *device.fail_writes_on.lock().expect("lock") = input.fail_writes_on.map(u32::from);
    let mut buf = AlignedBuf::new(usize::from(input.buf_blocks % 64 + 1) * BLOCK_SIZE);
    // Model: object id -> (fd number, size).
    let mut open: HashMap<u32, (u32, u64)> = HashMap::new();
    // fd numbers that came in more than one OPEN (the fake's log of the number is the last
    // one's: the kernel never does this, the fuzzer may).
    let mut seen_fds: HashSet<u32> = HashSet::new();
    let mut reused: HashSet<u32> = HashSet::new();
    // READs completed so far, by fd.
    let completed = |fd: u32| -> Vec<MsgId> {
        match device.fds.lock().expect("lock").get(&fd) {
            Some(log) => log.completed.lock().expect("lock").clone(),
            None => Vec::new(),
        }
    };
    for op in input.ops.iter().take(64) {
        let msg = encode_op(op, &sizes);
        let copens_before = device.commands().len();
        // What the model expects.
        let decoded = Request::decode(&msg).ok();
        let header_open =
            MsgHeader::read_from_prefix(&msg).is_ok_and(|(h, _)| h.opcode == CACHEFILES_OP_OPEN);
        let read_fd = match &decoded {
            Some(Request::Read(r)) => open.get(&r.object_id.0).map(|&(fd, _)| fd),
            _ => None,
        };
        let completed_before = read_fd.map(&completed);
        if let Some(Request::Open(o)) = &decoded {
            check_key_path(o.cookie_key);
            if !seen_fds.insert(o.fd) {
                reused.insert(o.fd);
            }
        }
        session.serve_message(&device, &msg, &mut buf);
        let commands = device.commands();
        let new_copens: Vec<(MsgId, OpenReply)> = commands[copens_before..]
            .iter()
            .map(|c| match Command::decode(c.as_bytes()) {
                Ok(Command::Copen { msg_id, reply }) => (msg_id, reply),
                other => panic!("the session sent {c:?}: {other:?}"),
            })
            .collect();
        match decoded {
            Some(Request::Open(o)) => {
                assert_eq!(
                    new_copens.len(),
                    1,
                    "OPEN answered {} times",
                    new_copens.len()
                );
                assert_eq!(new_copens[0].0, o.msg_id);
                if let OpenReply::Size(s) = new_copens[0].1 {
                    assert!(s <= i64::MAX as u64);
                    assert!(
                        !open.contains_key(&o.object_id.0),
                        "duplicate object id accepted"
                    );
                    open.insert(o.object_id.0, (o.fd, s));
                }
            }
            Some(Request::Read(r)) => {
                assert!(new_copens.is_empty());
                if let (Some(fd), Some(before)) = (read_fd, completed_before)
                    && !reused.contains(&fd)
                {
                    let after = completed(fd);
                    assert_eq!(
                        &after[before.len()..],
                        &[r.msg_id],
                        "READ of an open object not completed exactly once"
                    );
                }
            }
            Some(Request::Close(c)) => {
                assert!(new_copens.is_empty());
                open.remove(&c.object_id.0);
            }
            None => {
                // An undecodable OPEN is still answered (with an error), or its mount hangs.
                let want = usize::from(header_open);
                assert_eq!(new_copens.len(), want, "undecodable message answers");
                if let Some((_, reply)) = new_copens.first() {
                    assert!(matches!(reply, OpenReply::Error(_)));
                }
            }
        }
        assert_eq!(
            session.object_count(),
            open.len(),
            "object table differs from model"
        );
        for id in open.keys() {
            assert!(session.object(ObjectId(*id)).is_some());
        }
    }
    // Every write block-aligned (none refused by the direct-I/O rules) and inside its object.
    for &(fd, size) in open.values().filter(|(fd, _)| !reused.contains(fd)) {
        let log = device.fd_log(fd);
        assert!(
            log.rejected.lock().expect("lock").is_empty(),
            "unaligned write"
        );
        let limit = size.div_ceil(BLOCK_SIZE as u64) * BLOCK_SIZE as u64;
        for &(off, len) in log.writes.lock().expect("lock").iter() {
            let end = off.checked_add(len as u64).expect("write end overflows");
            assert!(
                end <= limit,
                "write [{off}, {end}) past the object ({size})"
            );
        }
    }
    drop(device);
    let _ = std::fs::remove_dir_all(&dir);
    let stats = session.stats();
    let _ = stats.to_string();
}

/// The buffer of one `read` of a fanotify group (hostile: any bytes), decoded by
/// `ondemand::fanotify::Events`, and each event's range turned into the window the engine
/// fills: decoding never panics or loops (each item consumes bytes), a malformed event is
/// reported with the fd of its header when there is one, and the fill range stays inside the
/// file, block-aligned at its start.
pub fn fanotify_events(data: &[u8]) {
    use ondemand::fanotify::{Events, ZeroCount, event_read, response_word};
    let (sel, rest) = split_first(data);
    let size = u64::from(sel) * 4096 + u64::from(sel % 7);
    let limit = size.div_ceil(4096) * 4096;
    for (n, item) in Events::new(rest).enumerate() {
        assert!(n <= rest.len() / 24, "more events than the buffer holds");
        let Ok(ev) = item else { continue };
        for zero in [ZeroCount::Nothing, ZeroCount::Window, ZeroCount::WholeFile] {
            // The engine's window over the read the event stands for.
            let Some((off, len)) = event_read(ev.range, size, zero) else {
                continue;
            };
            if let Some((r, requested_end)) = ondemand::window(off, len, size, 1 << 20) {
                assert!(
                    r.start <= off && r.end <= limit && r.start < r.end,
                    "{r:?} for [{off}, +{len}) of a {size}-byte file"
                );
                assert!(r.start.is_multiple_of(4096) && r.end.is_multiple_of(4096));
                assert!(requested_end <= r.end);
            } else {
                assert!(off / 4096 * 4096 >= limit);
            }
        }
        let _ = response_word(false, Some(ev.pid));
    }
}

/// The daemon's key → file mapping: a cookie key becomes a file directly inside the blob
/// directory, or is refused; never a path that leaves it.
fn check_key_path(key: &[u8]) {
    let dir = std::path::Path::new("/blobs");
    let server = ondemand::LocalDirServer::new(dir);
    match server.path_for(key) {
        Ok(p) => {
            assert_eq!(
                p.parent(),
                Some(dir),
                "key {key:?} left the directory: {p:?}"
            );
            assert_eq!(
                p.file_name().map(|n| n.as_bytes()),
                Some(key),
                "key {key:?}"
            );
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(22), "key {key:?}: {e}"),
    }
}

/// The wire bytes of one op.
fn encode_op(op: &SessionOp, sizes: &[u64]) -> Vec<u8> {
    use cachefiles_proto::{CloseRequest, OpenRequest, ReadRequest};
    let key;
    let req = match op {
        SessionOp::Raw(bytes) => return bytes.clone(),
        SessionOp::Open {
            msg_id,
            object_id,
            blob,
            key: raw,
            fd,
        } => {
            key = if usize::from(*blob) < sizes.len() {
                format!("blob{blob}").into_bytes()
            } else {
                raw.clone()
            };
            Request::Open(OpenRequest {
                msg_id: MsgId(*msg_id),
                object_id: ObjectId(u32::from(*object_id)),
                volume_key: b"erofs,fuzz",
                cookie_key: &key,
                fd: *fd,
                flags: 0,
            })
        }
        SessionOp::Read {
            msg_id,
            object_id,
            off,
            len,
        } => Request::Read(ReadRequest {
            msg_id: MsgId(*msg_id),
            object_id: ObjectId(u32::from(*object_id)),
            off: *off,
            len: u64::from(*len),
        }),
        SessionOp::Close { msg_id, object_id } => Request::Close(CloseRequest {
            msg_id: MsgId(*msg_id),
            object_id: ObjectId(u32::from(*object_id)),
        }),
    };
    let mut buf = vec![0u8; req.encoded_len()];
    match req.encode(&mut buf) {
        Ok(n) => buf.truncate(n),
        Err(_) => buf.clear(),
    }
    buf
}

/// The headers an OCI registry client reads, as a registry (or anything on the path) may
/// send them: the first byte picks the decoder, the rest is the header value.
/// `WWW-Authenticate` challenges keep only Bearer-with-realm and Basic; a `Content-Range`
/// that decodes is a non-empty range inside its length; `Content-Length`, `Retry-After`
/// and `Location` (resolved against a registry URL) decode or refuse; a resolved redirect
/// target is always an absolute http(s) URL without user info. Image references (what a
/// user types) are in here too: a parsed reference prints as one that parses back to it.
pub fn registry_headers(data: &[u8]) {
    use oci_lazy::wire::{
        Challenge, ContentRange, parse_challenges, parse_content_length, parse_retry_after,
        resolve_location,
    };
    let (sel, rest) = split_first(data);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match sel % 6 {
        0 => {
            // Several header values separated by newlines, as several header lines.
            for c in parse_challenges(text.split('\n')) {
                if let Challenge::Bearer { realm, .. } = c {
                    assert!(!realm.is_empty());
                }
            }
        }
        1 => match ContentRange::parse(text) {
            Some(ContentRange::Bytes {
                first,
                last,
                complete,
            }) => {
                assert!(first <= last);
                assert!(complete.is_none_or(|c| last < c));
            }
            Some(ContentRange::Unsatisfied { .. }) | None => {}
        },
        2 => {
            if let Some(n) = parse_content_length(text) {
                assert_eq!(Some(n), text.trim().parse::<u64>().ok());
            }
        }
        3 => {
            let _ = parse_retry_after(text, std::time::SystemTime::UNIX_EPOCH);
            let _ = parse_retry_after(text, std::time::SystemTime::now());
        }
        4 => {
            let base = "https://registry.example:5000/v2/a/b/blobs/sha256:00?x=1";
            if let Some(url) = resolve_location(base, text) {
                let (scheme, rest) = url.split_once("://").expect("absolute URL");
                assert!(
                    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
                );
                let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
                assert!(!authority.is_empty() && !authority.contains('@'), "{url}");
            }
        }
        _ => {
            if let Ok(r) = text.parse::<oci_lazy::Reference>() {
                let again: oci_lazy::Reference = r
                    .to_string()
                    .parse()
                    .unwrap_or_else(|e| panic!("{r} does not parse back: {e}"));
                assert_eq!(again, r);
            }
        }
    }
}

/// A token endpoint's reply body: decodes to a non-empty token that a header can carry
/// (visible ASCII), with a lifetime of at least the spec's 60 s, or is refused.
pub fn registry_token(data: &[u8]) {
    if let Ok(t) = oci_lazy::wire::parse_token_reply(data) {
        assert!(!t.token.is_empty());
        assert!(t.token.bytes().all(|b| b.is_ascii_graphic()));
        assert!(t.lifetime >= std::time::Duration::from_secs(60));
    }
}

/// A manifest or index reply: the first line is the `Content-Type`, the rest the body.
/// Decoding refuses or gives a manifest whose every descriptor has a digest the client can
/// check, whatever the bytes.
pub fn registry_manifest(data: &[u8]) {
    use oci_lazy::wire::{Manifest, decode_manifest};
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    match decode_manifest(body, ct) {
        Ok(Manifest::Image(m)) => {
            for d in m.layers().iter().chain([m.config()]) {
                d.digest()
                    .to_string()
                    .parse::<oci_lazy::Digest>()
                    .expect("a checked digest");
            }
        }
        Ok(Manifest::Index(i)) => {
            for d in i.manifests() {
                d.digest()
                    .to_string()
                    .parse::<oci_lazy::Digest>()
                    .expect("a checked digest");
            }
        }
        Err(_) => {}
    }
}

/// An access trace file (`--prefetch-list`, hostile: any bytes), parsed by
/// `ondemand::AccessTrace`, turned into a prefetch plan for an object whose size is the
/// input's hash, and recorded again: parsing never panics, keeps at most
/// `MAX_TRACE_ENTRIES` non-empty ranges, prints back to what it read, the plan stays inside
/// the object (block-aligned, disjoint), and a recorder writes a trace that parses back.
pub fn access_trace(data: &[u8]) {
    use ondemand::{AccessTrace, MAX_TRACE_ENTRIES, PrefetchConfig, Recorder};
    // The object's size: any u64, steered by the bytes (a comment line changes it).
    let size = data.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(b))
    }) >> (data.len() % 64);
    let Ok(trace) = AccessTrace::parse(data) else {
        return;
    };
    assert!(trace.entries().len() <= MAX_TRACE_ENTRIES);
    assert!(trace.entries().iter().all(|e| e.range.start < e.range.end));
    let again = AccessTrace::parse(trace.to_text().as_bytes()).expect("printed trace parses");
    assert_eq!(again.entries(), trace.entries());
    assert_eq!(again.skipped(), 0);
    let config = PrefetchConfig::listed_only().with_trace(&trace);
    let limit = size.div_ceil(4096).saturating_mul(4096);
    for key in trace.keys().into_iter().take(MAX_ITEMS) {
        let plan = config.plan(key, size);
        let mut covered = ondemand::RangeSet::new();
        for r in &plan {
            assert!(r.start < r.end && r.end <= limit, "{r:?} outside {size}");
            assert!(
                r.start % 4096 == 0 && r.end % 4096 == 0,
                "{r:?} not aligned"
            );
            assert!(!covered.intersects(r.clone()), "{r:?} planned twice");
            covered.insert(r.clone());
        }
    }
    // Record the trace's ranges: what comes out parses back, each byte once per key.
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let recorder = Recorder::new(Shared(std::sync::Arc::clone(&out))).expect("in memory");
    for e in trace.entries().iter().take(MAX_ITEMS) {
        recorder.record(&e.key, e.range.start, e.range.end - e.range.start);
    }
    let text = out.lock().expect("lock").clone();
    let recorded = AccessTrace::parse(&text).expect("recorded trace parses");
    assert_eq!(recorded.skipped(), 0);
    assert_eq!(recorded.entries().len(), recorder.entries());
    let mut per_key: HashMap<&[u8], ondemand::RangeSet> = HashMap::new();
    for e in recorded.entries() {
        let set = per_key.entry(&e.key).or_default();
        assert!(!set.intersects(e.range.clone()), "{e:?} recorded twice");
        set.insert(e.range.clone());
    }
}

/// `ondemand::predict::elf`: the libraries an ELF object needs, read from hostile bytes
/// (an image's file). The whole file at once, and step by step over the spans each step
/// names: both give the same answer, within the caps, with no NUL or `/`-free check
/// skipped.
pub fn elf_needed(data: &[u8]) {
    use ondemand::predict::elf::{self, HEAD_MAX, Head, MAX_NAME, MAX_NEEDED};
    let whole = elf::needed(data);
    if let Ok(n) = &whole {
        assert!(n.libraries.len() <= MAX_NEEDED);
        for name in n.libraries.iter().chain(&n.run_path) {
            assert!(name.len() <= MAX_NAME && !name.contains(&0), "{name:?}");
        }
    }
    // Step by step, each step given only its span.
    let span = |r: std::ops::Range<u64>| -> Option<&[u8]> {
        data.get(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?)
    };
    let head_len = data.len().min(HEAD_MAX as usize);
    let Ok(head) = Head::parse(&data[..head_len]) else {
        return;
    };
    let Some(range) = head.dynamic_range() else {
        assert_eq!(whole, Ok(elf::Needed::default()));
        return;
    };
    let Some(bytes) = span(range) else { return };
    let Ok(dynamic) = head.dynamic(bytes) else {
        return;
    };
    let Some(bytes) = span(dynamic.strings()) else {
        return;
    };
    if let Ok(n) = dynamic.names(bytes) {
        assert_eq!(whole, Ok(n));
    }
    // The interpreter (the entrypoint rule), given only its span.
    if let Some(bytes) = head.interp_range().and_then(span)
        && let Ok(path) = head.interpreter(bytes)
    {
        assert!(!path.is_empty() && path.len() < elf::MAX_INTERP && !path.contains(&0));
    }
}

/// An image configuration (what an image runs: the entrypoint rule of cold prediction):
/// `RunConfig::parse` within its limits, or an error.
pub fn image_config(data: &[u8]) {
    use oci_lazy::{MAX_ARG, MAX_ARGS, MAX_ENV, RunConfig};
    let Ok(c) = RunConfig::parse(data) else {
        return;
    };
    assert!(c.entrypoint.len() + c.cmd.len() <= MAX_ARGS && c.env.len() <= MAX_ENV);
    for s in c.entrypoint.iter().chain(&c.cmd).chain(&c.env) {
        assert!(s.len() <= MAX_ARG);
    }
    if let Some(p) = c.program() {
        assert!(!p.is_empty());
    }
    assert!(c.path().len() <= MAX_ARG);
}
