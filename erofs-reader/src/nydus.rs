//! Nydus RAFS v6: the bootstrap's blob table, prefetch list and chunk digests
//! ([`RafsMeta`]), and [`BlobSource`], which presents a stored (compressed) Nydus data blob
//! as the uncompressed address space the bootstrap's chunk indexes point into.
//!
//! A RAFS v6 bootstrap is an EROFS image whose extra devices are Nydus data blobs. The
//! kernel (and this reader) address a blob device in its *uncompressed* space: chunk `k`
//! of the blob occupies `[uoff_k, uoff_k + usize_k)`, 4 KiB aligned, zeros between chunks.
//! The stored blob holds the chunks back to back, each raw or compressed (lz4_block or
//! zstd), followed by the chunk-info array that maps one space onto the other.
//! [`BlobSource`] reads that array once (lazily, on the first read), then answers a read of
//! uncompressed bytes by fetching and decompressing only the chunks the range touches,
//! keeping recently decoded chunks in a bounded cache, and (when asked) checking each
//! decoded chunk against its digest from the bootstrap's chunk table.
//!
//! `targz-ref` blobs are the other kind: the stored blob is the original `.tar.gz` layer,
//! and its separate meta blob adds, after the chunk infos, ZRan checkpoints into the gzip
//! stream ([`erofs_format::rafs::ZranTable`]). A chunk is then a slice of what one
//! checkpoint's gzip bytes inflate to; [`BlobSource`] fetches and inflates that context
//! (primed with its pending bits and 32 KiB dictionary) once for all the chunks of a read
//! that share it, and keeps the last few inflated contexts in a small bounded cache.
//!
//! Opening a RAFS v6 bootstrap with [`ImageBuilder::blob_dir`](crate::ImageBuilder::blob_dir)
//! wires a [`BlobSource`] for every blob not given explicitly, found in the directory under
//! its blob id (the device tag), so the whole `Image` API reads RAFS images. Blobs built with
//! `--blob-inline-meta` carry their bootstrap ([`inlined_bootstrap`], [`open_inline_blob`]);
//! their bootstrap names them with the placeholder id `"x" × 64`, resolved in the blob
//! directory by matching the blob meta header. Blobs whose chunk-info array lives in a
//! separate meta blob (feature SEPARATE) read it from `<blob_meta_digest hex>` in the same
//! directory ([`BlobSource::with_separate_meta`]): so do `targz-ref` (ZRAN) blobs, whose data
//! blob is the `.tar.gz` put in the directory under the blob id. Legacy stargz blobs (gzip
//! without ZRan tables) are [`Error::Unsupported`].
//!
//! ```no_run
//! use erofs_reader::ImageBuilder;
//! use erofs_reader::nydus::RafsMeta;
//! # fn main() -> Result<(), erofs_reader::Error> {
//! let image = ImageBuilder::open("bootstrap")?.blob_dir("blobs").build()?;
//! let data = image.read("/etc/os-release")?;
//! if let Some(rafs) = RafsMeta::from_image(&image)? {
//!     for blob in rafs.blobs() {
//!         println!("blob {} {}: {} chunks", blob.index, blob.id, blob.chunk_count);
//!     }
//!     // Decode and check every chunk of every blob against the bootstrap's digests.
//!     let report = rafs.verify_blobs(&image, "blobs".as_ref());
//!     assert!(report.errors.is_empty());
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use erofs_format::rafs::{
    BLOB_META_HEADER_SIZE, BlobCompressionContextHeader, ChunkInfo, ChunkInfoArray,
    FEATURE_COMPAT_RAFS_V6, PrefetchTable, RAFS_BLOCK_SIZE, RafsV5ChunkInfo, RafsV6Blob,
    RafsV6SuperBlockExt, ZranTable, blob_table, chunk_table,
};
use erofs_format::superblock::SuperBlock;
use zerocopy::FromBytes;

pub use erofs_format::rafs::{
    BlobCompressor, BlobFeatures, Digest, Digester, RafsSuperFlags, ZranInflateContext,
};

use crate::counter::Counter;
use crate::error::{Context, Error, Result};
use crate::image::Image;
use crate::inner::Inner;
use crate::source::{LazyFile, Source};

mod zran;

/// Default capacity of a [`BlobSource`]'s decoded-chunk cache, in bytes.
pub const DEFAULT_CHUNK_CACHE_BYTES: usize = 32 << 20;

/// Most bytes of inflated ZRan contexts a [`BlobSource`] keeps (ZRAN blobs only): a few
/// contexts, each at most 16 MiB and usually about 1 to 2 MiB.
pub const ZRAN_CONTEXT_CACHE_BYTES: usize = 16 << 20;

/// Largest ZRan table (contexts and dictionaries) accepted after the chunk infos.
const MAX_ZRAN_TABLE_BYTES: u64 = 512 << 20;

/// Largest stored span fetched with one read when neighbouring chunks are missing.
const MAX_FETCH_SPAN: u64 = 16 << 20;

/// Largest decompressed chunk-info array accepted (2^24 entries of 24 bytes).
const MAX_CHUNK_INFO_BYTES: u64 = 24 << 24;

/// The placeholder blob id `--blob-inline-meta` images carry in the bootstrap.
const INLINE_PLACEHOLDER: [u8; 64] = [b'x'; 64];

/// One data blob of a RAFS v6 image, from the bootstrap's blob table.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Position in the blob table; the blob is EROFS device `index + 1`.
    pub index: u32,
    /// The blob id (the device tag, the blob's file name). `"x" × 64` for
    /// `--blob-inline-meta` images, whose real id is only the file name.
    pub id: String,
    /// How chunks are stored.
    pub compressor: Option<BlobCompressor>,
    /// How chunk digests are computed.
    pub digester: Option<Digester>,
    /// Number of chunks in the blob's chunk-info array.
    pub chunk_count: u32,
    /// Chunk size of the image.
    pub chunk_size: u32,
    /// Size of the stored blob (see `rafs-v6.md` §4 for the variants).
    pub compressed_size: u64,
    /// Size of the uncompressed address space (what the kernel reads).
    pub uncompressed_size: u64,
    /// Blob features.
    pub features: BlobFeatures,
    /// The raw blob table record.
    pub record: RafsV6Blob,
}

impl fmt::Debug for BlobInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobInfo")
            .field("index", &self.index)
            .field("id", &self.id)
            .field("compressor", &self.compressor)
            .field("digester", &self.digester)
            .field("chunk_count", &self.chunk_count)
            .field("compressed_size", &self.compressed_size)
            .field("uncompressed_size", &self.uncompressed_size)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl BlobInfo {
    /// Whether the bootstrap names this blob with the `--blob-inline-meta` placeholder.
    pub fn has_placeholder_id(&self) -> bool {
        self.record.blob_id == INLINE_PLACEHOLDER
    }

    /// For blobs whose chunk-info array lives in a separate meta blob: that blob's name
    /// (the hex `blob_meta_digest`).
    pub fn separate_meta_name(&self) -> Option<String> {
        self.features
            .contains(BlobFeatures::SEPARATE)
            .then(|| hex(&self.record.blob_meta_digest))
    }
}

/// Whether `head` (the first 4 KiB of a file) is an EROFS superblock with the RAFS v6
/// `feature_compat` bit: a Nydus bootstrap.
pub fn is_rafs_bootstrap(head: &[u8]) -> bool {
    SuperBlock::parse(head).is_ok_and(|sb| sb.feature_compat.get() & FEATURE_COMPAT_RAFS_V6 != 0)
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One record of the bootstrap's chunk table: a unique chunk and its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Blob index.
    pub blob_index: u32,
    /// Chunk-info index in that blob.
    pub chunk_index: u32,
    /// Digest of the uncompressed chunk.
    pub digest: Digest,
    /// Uncompressed size.
    pub uncompressed_size: u32,
}

/// What the bootstrap of a RAFS v6 image adds to EROFS: the extended superblock, the
/// blob table and the prefetch list.
#[derive(Debug, Clone)]
pub struct RafsMeta {
    ext: RafsV6SuperBlockExt,
    blobs: Vec<BlobInfo>,
    prefetch: Vec<u64>,
}

impl RafsMeta {
    /// Read the RAFS additions of an open image. `Ok(None)` if it is not a RAFS v6
    /// bootstrap (no `feature_compat` RAFS bit).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the extended superblock or a table breaks nydus's rules.
    pub fn from_image(image: &Image) -> Result<Option<RafsMeta>> {
        Self::read(&image.inner)
    }

    pub(crate) fn read(inner: &Inner) -> Result<Option<RafsMeta>> {
        let sb: &SuperBlock = &inner.sb;
        if sb.feature_compat.get() & FEATURE_COMPAT_RAFS_V6 == 0 {
            return Ok(None);
        }
        let at = erofs_format::rafs::EXT_SUPERBLOCK_OFFSET;
        let bytes = inner.read_primary(at, 256, Context::offset(at))?;
        let ext = RafsV6SuperBlockExt::read_from_bytes(&bytes)
            .map_err(|_| Error::corrupt("RAFS extended superblock", Context::offset(at)))?;
        ext.validate(inner.primary_len)
            .map_err(|e| rafs_corrupt(e, at))?;
        let bt_off = ext.s_blob_table_offset.get();
        let bt_len = usize::try_from(ext.s_blob_table_size.get())
            .map_err(|_| Error::corrupt("blob table size", Context::offset(at)))?;
        let raw = inner.read_primary(bt_off, bt_len, Context::offset(bt_off))?;
        let records = blob_table(&raw).map_err(|e| rafs_corrupt(e, bt_off))?;
        if records.len() != inner.devices.len() {
            return Err(Error::corrupt(
                format!(
                    "{} blobs in the blob table but {} devices in the device table",
                    records.len(),
                    inner.devices.len()
                ),
                Context::offset(bt_off),
            ));
        }
        let mut blobs = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let ctx = Context::offset(bt_off + 256 * i as u64);
            r.validate(i as u32, ext.chunk_size())
                .map_err(|e| Error::corrupt(format!("blob {i}: {e}"), ctx))?;
            let dev = &inner.devices[i];
            if dev.blocks.checked_mul(RAFS_BLOCK_SIZE) != Some(r.uncompressed_size.get()) {
                return Err(Error::corrupt(
                    format!(
                        "blob {i}: device slot has {} blocks, the blob {} uncompressed bytes",
                        dev.blocks,
                        r.uncompressed_size.get()
                    ),
                    ctx,
                ));
            }
            blobs.push(BlobInfo {
                index: i as u32,
                id: r
                    .blob_id()
                    .map_err(|e| rafs_corrupt(e, ctx.offset.unwrap_or(0)))?
                    .to_string(),
                compressor: r.compressor(),
                digester: r.digester(),
                chunk_count: r.chunk_count.get(),
                chunk_size: r.chunk_size.get(),
                compressed_size: r.compressed_size.get(),
                uncompressed_size: r.uncompressed_size.get(),
                features: r.features(),
                record: *r,
            });
        }
        let pt_off = ext.s_prefetch_table_offset.get();
        let pt_len = ext.s_prefetch_table_size.get() as usize;
        let prefetch = if pt_len == 0 {
            Vec::new()
        } else {
            let raw = inner.read_primary(pt_off, pt_len, Context::offset(pt_off))?;
            PrefetchTable::new(&raw)
                .map_err(|e| rafs_corrupt(e, pt_off))?
                .nids()
                .collect()
        };
        Ok(Some(RafsMeta {
            ext,
            blobs,
            prefetch,
        }))
    }

    /// The extended superblock.
    pub fn ext_superblock(&self) -> &RafsV6SuperBlockExt {
        &self.ext
    }

    /// The superblock flags.
    pub fn flags(&self) -> RafsSuperFlags {
        self.ext.flags()
    }

    /// The image's chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.ext.chunk_size()
    }

    /// The blobs, in blob-table order.
    pub fn blobs(&self) -> &[BlobInfo] {
        &self.blobs
    }

    /// The prefetch list: nids of files and directories (a directory means every file
    /// below it), in the order the image was built with. Empty without
    /// `--prefetch-policy fs`.
    pub fn prefetch_nids(&self) -> &[u64] {
        &self.prefetch
    }

    /// The bootstrap's chunk table: every unique chunk with its digest.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the table is outside the bootstrap; [`Error::Io`].
    pub fn chunk_records(&self, image: &Image) -> Result<Vec<ChunkRecord>> {
        let off = self.ext.s_chunk_table_offset.get();
        let len = usize::try_from(self.ext.s_chunk_table_size.get())
            .map_err(|_| Error::corrupt("chunk table size", Context::offset(off)))?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let raw = image.inner.read_primary(off, len, Context::offset(off))?;
        let table: &[RafsV5ChunkInfo] = chunk_table(&raw).map_err(|e| rafs_corrupt(e, off))?;
        Ok(table
            .iter()
            .map(|r| ChunkRecord {
                blob_index: r.blob_index.get(),
                chunk_index: r.index.get(),
                digest: r.block_id,
                uncompressed_size: r.uncompressed_size.get(),
            })
            .collect())
    }

    /// The digests of blob `index`'s chunks from the chunk table, by chunk-info index
    /// (`None` for chunks the table does not list).
    ///
    /// # Errors
    ///
    /// As [`RafsMeta::chunk_records`]; [`Error::Corrupt`] for a record naming a chunk
    /// past the blob's chunk count.
    pub fn blob_digests(&self, image: &Image, index: u32) -> Result<Vec<Option<Digest>>> {
        let blob = self
            .blobs
            .get(index as usize)
            .ok_or_else(|| Error::corrupt(format!("no blob {index}"), Context::NONE))?;
        let mut out = vec![None; blob.chunk_count as usize];
        for r in self.chunk_records(image)? {
            if r.blob_index != index {
                continue;
            }
            match out.get_mut(r.chunk_index as usize) {
                Some(slot) => *slot = Some(r.digest),
                None => {
                    return Err(Error::corrupt(
                        format!(
                            "chunk table names chunk {} of blob {index}, which has {}",
                            r.chunk_index, blob.chunk_count
                        ),
                        Context::offset(self.ext.s_chunk_table_offset.get()),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Open blob `index` from `dir` (the file named by its id), with digest checks when
    /// `verify`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for an unknown index or an id that cannot name a file.
    pub fn open_blob(
        &self,
        image: &Image,
        index: u32,
        dir: &Path,
        verify: bool,
    ) -> Result<BlobSource> {
        let blob = self
            .blobs
            .get(index as usize)
            .ok_or_else(|| Error::corrupt(format!("no blob {index}"), Context::NONE))?;
        let mut src = blob_from_dir(blob, dir)?;
        if verify {
            src = src.with_digests(self.blob_digests(image, index)?);
        }
        Ok(src)
    }

    /// Decode every chunk of every blob found in `dir` and check it against the chunk
    /// table's digest (blobs the image does not reference at all are skipped; chunks the
    /// table does not list are decoded but not checked).
    pub fn verify_blobs(&self, image: &Image, dir: &Path) -> VerifyReport {
        let mut report = VerifyReport::default();
        for blob in &self.blobs {
            let src = match self.open_blob(image, blob.index, dir, true) {
                Ok(s) => s,
                Err(e) => {
                    report
                        .errors
                        .push(format!("blob {} ({}): {e}", blob.index, blob.id));
                    continue;
                }
            };
            let n = match src.chunk_infos() {
                Ok(c) => c.len(),
                Err(e) => {
                    report
                        .errors
                        .push(format!("blob {} ({}): {e}", blob.index, blob.id));
                    continue;
                }
            };
            for ci in 0..n {
                match src.decode_chunk(ci as u32) {
                    Ok((_, checked)) => {
                        report.chunks += 1;
                        if checked {
                            report.verified += 1;
                        }
                    }
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
            report.stored_bytes += src.stats().stored_bytes;
        }
        report
    }
}

impl RafsMeta {
    /// The paths of the prefetch list's nids (found by walking the tree, at most
    /// `max_entries` directory entries); `None` for a nid not reached.
    ///
    /// # Errors
    ///
    /// Corrupt directories on the way.
    pub fn prefetch_paths(
        &self,
        image: &Image,
        max_entries: usize,
    ) -> Result<Vec<(u64, Option<String>)>> {
        let mut want: HashMap<u64, Option<String>> =
            self.prefetch.iter().map(|&n| (n, None)).collect();
        let root = image.root_nid();
        if let Some(p) = want.get_mut(&root.0) {
            *p = Some("/".into());
        }
        let mut missing = want.values().filter(|v| v.is_none()).count();
        let mut stack = vec![(root, String::new(), 0u32)];
        let mut seen = 0usize;
        let mut visited = std::collections::HashSet::new();
        while let Some((nid, path, depth)) = stack.pop() {
            if missing == 0 || seen >= max_entries || !visited.insert(nid.0) {
                continue;
            }
            let dir = image.inode(nid)?;
            for e in image.read_dir_inode(&dir)? {
                let e = e?;
                seen += 1;
                let name = e.name();
                if name == b"." || name == b".." {
                    continue;
                }
                let p = format!("{path}/{}", String::from_utf8_lossy(name));
                if let Some(slot @ None) = want.get_mut(&e.nid().0) {
                    *slot = Some(p.clone());
                    missing -= 1;
                }
                if e.file_type() == crate::FileType::Directory && depth < image.limits().max_depth {
                    stack.push((e.nid(), p, depth + 1));
                }
            }
        }
        Ok(self
            .prefetch
            .iter()
            .map(|n| (*n, want.get(n).cloned().flatten()))
            .collect())
    }

    /// A human-readable summary (the `erofs sb` tool's RAFS section): flags, chunk size,
    /// the blob table and the prefetch list.
    pub fn describe(&self, image: &Image) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let ext = &self.ext;
        let _ = writeln!(s, "RAFS v6:");
        let _ = writeln!(
            s,
            "  flags:         {:#x} {:?}",
            ext.s_flags.get(),
            self.flags()
        );
        let _ = writeln!(s, "  chunk size:    {:#x}", self.chunk_size());
        let _ = writeln!(
            s,
            "  chunk table:   {} records at {}",
            ext.s_chunk_table_size.get() / 80,
            ext.s_chunk_table_offset.get()
        );
        let _ = writeln!(s, "  blobs:         {}", self.blobs.len());
        for b in &self.blobs {
            let _ = writeln!(
                s,
                "    blob {}: {} compressor {:?} digester {:?} chunks {} stored {} uncompressed {} features {:#x}{}",
                b.index,
                b.id,
                b.compressor,
                b.digester,
                b.chunk_count,
                b.compressed_size,
                b.uncompressed_size,
                b.features.bits(),
                match b.separate_meta_name() {
                    Some(m) => format!(" meta {m}"),
                    None => String::new(),
                }
            );
        }
        let _ = writeln!(s, "  prefetch:      {} entries", self.prefetch.len());
        match self.prefetch_paths(image, 1 << 20) {
            Ok(list) => {
                for (nid, path) in list {
                    let _ = writeln!(
                        s,
                        "    nid {nid}: {}",
                        path.as_deref().unwrap_or("(not found in the tree)")
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(s, "    (cannot resolve paths: {e})");
            }
        }
        s
    }
}

/// What [`RafsMeta::verify_blobs`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chunks decoded.
    pub chunks: u64,
    /// Chunks whose digest was checked (and matched).
    pub verified: u64,
    /// Stored blob bytes read.
    pub stored_bytes: u64,
    /// One line per problem.
    pub errors: Vec<String>,
}

fn rafs_corrupt(e: erofs_format::Error, offset: u64) -> Error {
    Error::corrupt(format!("RAFS: {e}"), Context::offset(offset))
}

/// The [`BlobSource`] for `blob` in `dir`: the file named by its id (for the
/// `--blob-inline-meta` placeholder id, the blob file in `dir` whose blob meta header matches
/// the record), and its separate meta blob if it has one.
fn blob_from_dir(blob: &BlobInfo, dir: &Path) -> Result<BlobSource> {
    let found;
    let name = if blob.has_placeholder_id() {
        found = find_inline_blob(blob, dir);
        found.as_deref().unwrap_or(&blob.id)
    } else {
        &blob.id
    };
    let safe =
        |t: &str| !t.is_empty() && !t.contains('/') && t != "." && t != ".." && !t.contains('\0');
    if !safe(name) {
        return Err(Error::corrupt(
            format!("blob {} id {:?} cannot name a file", blob.index, blob.id),
            Context::NONE,
        ));
    }
    let mut src = BlobSource::new(LazyFile::new(dir.join(name)), &blob.record);
    if let Some(meta) = blob.separate_meta_name() {
        src = src.with_separate_meta(LazyFile::new(dir.join(meta)));
    }
    Ok(src)
}

/// The one file in `dir` named like a blob id whose blob meta header (at the record's
/// offset) matches `blob`'s record: the real name of a `--blob-inline-meta` blob.
fn find_inline_blob(blob: &BlobInfo, dir: &Path) -> Option<String> {
    let hoff = blob.record.meta_header_offset()?;
    let mut found = None;
    for e in std::fs::read_dir(dir).ok()?.flatten().take(MAX_DIR_SCAN) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(f) = std::fs::File::open(e.path()) else {
            continue;
        };
        let mut h = vec![0u8; BLOB_META_HEADER_SIZE];
        if std::os::unix::fs::FileExt::read_exact_at(&f, &mut h, hoff).is_ok()
            && BlobCompressionContextHeader::parse(&h).is_ok_and(|h| h.matches(&blob.record))
        {
            if found.is_some() {
                return None; // ambiguous
            }
            found = Some(name);
        }
    }
    found
}

/// Most directory entries [`find_inline_blob`] looks at.
const MAX_DIR_SCAN: usize = 100_000;

/// Largest bootstrap [`inlined_bootstrap`] accepts.
const MAX_INLINE_BOOTSTRAP: u64 = 1 << 30;

/// Name and size of a 512-byte tar header (ustar: name at 0, octal size at 124).
fn tar_header(h: &[u8]) -> Option<(&[u8], u64)> {
    let name = h.get(..100)?;
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(100)];
    let field = h.get(124..136)?;
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    let size = u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()?;
    Some((name, size))
}

/// The bootstrap a `--blob-inline-meta` blob carries at its end: found through its last tar
/// header (`image.boot`: the bootstrap, uncompressed, just before it) or through its ToC
/// (`rafs.blob.toc`: the `image.boot` entry, zstd-compressed or not, checked against the
/// entry's SHA-256). `Ok(None)` if the blob ends with neither.
///
/// # Errors
///
/// [`Error::Io`]; [`Error::Corrupt`] for a ToC or bootstrap that does not fit the blob,
/// does not decode or does not match its digest.
pub fn inlined_bootstrap(blob: &dyn Source) -> Result<Option<Vec<u8>>> {
    let io = |e: io::Error| Error::Io {
        device: 0,
        source: e,
    };
    let len = blob.size().map_err(io)?;
    if len < 512 {
        return Ok(None);
    }
    let mut h = [0u8; 512];
    blob.read_exact_at(&mut h, len - 512).map_err(io)?;
    let Some((name, size)) = tar_header(&h) else {
        return Ok(None);
    };
    let bad = |what: &str| Error::corrupt(format!("inlined bootstrap: {what}"), Context::NONE);
    let body_end = len - 512;
    if size > body_end {
        return Err(bad("tar entry larger than the blob"));
    }
    match name {
        b"image.boot" => {
            if size > MAX_INLINE_BOOTSTRAP {
                return Err(bad("too large"));
            }
            let mut boot = vec![0u8; size as usize];
            blob.read_exact_at(&mut boot, body_end - size).map_err(io)?;
            Ok(Some(boot))
        }
        b"rafs.blob.toc" => {
            if size % 128 != 0 || size > 64 * 128 {
                return Err(bad("ToC size"));
            }
            let mut toc = vec![0u8; size as usize];
            blob.read_exact_at(&mut toc, body_end - size).map_err(io)?;
            for e in toc.chunks_exact(128) {
                let name = &e[8..24];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(16)];
                if name != b"image.boot" {
                    continue;
                }
                let u64_at = |o: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&e[o..o + 8]);
                    u64::from_le_bytes(b)
                };
                let flags = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                let (coff, csize, usize_) = (u64_at(56), u64_at(64), u64_at(72));
                if coff.checked_add(csize).is_none_or(|end| end > body_end)
                    || usize_ > MAX_INLINE_BOOTSTRAP
                {
                    return Err(bad("ToC entry outside the blob"));
                }
                let mut stored = vec![0u8; csize as usize];
                blob.read_exact_at(&mut stored, coff).map_err(io)?;
                let boot = match flags {
                    1 if csize == usize_ => stored,
                    2 => {
                        let mut out = vec![0u8; usize_ as usize];
                        zstd_frame(&stored, &mut out).map_err(|e| bad(&e))?;
                        out
                    }
                    4 => {
                        let mut out = vec![0u8; usize_ as usize];
                        lz4_block(&stored, &mut out).map_err(|e| bad(&e))?;
                        out
                    }
                    _ => return Err(bad("unknown ToC entry compression")),
                };
                let sha = digest(Some(Digester::Sha256), &boot);
                if sha.as_ref().map(|d| &d[..]) != Some(&e[24..56]) {
                    return Err(bad("SHA-256 differs from the ToC"));
                }
                return Ok(Some(boot));
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Open `path` as an image if it is a Nydus `--blob-inline-meta` data blob: its inlined
/// bootstrap is the primary device and its blobs (this one included, under the placeholder
/// id) are found in `blob_dir`, or else in the blob's own directory. `Ok(None)` if `path`
/// starts with an EROFS superblock or carries no inlined bootstrap (open it as usual).
///
/// # Errors
///
/// [`Error::Io`], and the errors of [`inlined_bootstrap`] and
/// [`ImageBuilder::build`](crate::ImageBuilder::build).
pub fn open_inline_blob(path: &Path, blob_dir: Option<&Path>) -> Result<Option<Image>> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io {
        device: 0,
        source: io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    })?;
    let mut head = vec![0u8; 4096];
    let n = std::io::Read::read(&mut &file, &mut head).unwrap_or(0);
    if SuperBlock::parse(&head[..n]).is_ok() {
        return Ok(None);
    }
    let Some(boot) = inlined_bootstrap(&file)? else {
        return Ok(None);
    };
    let dir = match blob_dir {
        Some(d) => d.to_path_buf(),
        None => path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ".".into()),
    };
    crate::ImageBuilder::new(boot)
        .blob_dir(dir)
        .build()
        .map(Some)
}

/// Called by `ImageBuilder::build`: for a RAFS v6 bootstrap opened with a blob directory,
/// append a [`BlobSource`] for each blob past those given explicitly.
pub(crate) fn add_blob_devices(
    inner: &Inner,
    dir: &Path,
    devices: &mut Vec<Box<dyn Source>>,
) -> Result<()> {
    let Some(meta) = RafsMeta::read(inner)? else {
        return Ok(());
    };
    for blob in meta.blobs.iter().skip(devices.len()) {
        devices.push(Box::new(blob_from_dir(blob, dir)?));
    }
    Ok(())
}

/// Counters of a [`BlobSource`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobStats {
    /// Reads of the uncompressed space served.
    pub reads: u64,
    /// Uncompressed bytes served.
    pub bytes_served: u64,
    /// Reads issued to the stored blob for chunk data.
    pub fetches: u64,
    /// Stored (compressed) bytes read for chunk data.
    pub stored_bytes: u64,
    /// Chunks decoded.
    pub chunks_decoded: u64,
    /// Chunks whose digest was checked.
    pub chunks_verified: u64,
    /// Chunk lookups answered from the cache.
    pub cache_hits: u64,
    /// Nanoseconds spent reading stored bytes (summed over threads).
    pub fetch_ns: u64,
    /// Nanoseconds spent decoding and checking chunks (summed over threads).
    pub decode_ns: u64,
    /// ZRan contexts inflated (ZRAN blobs: each serves all the chunks cut from it).
    pub zran_inflates: u64,
}

#[derive(Default)]
struct Counters {
    reads: Counter,
    bytes_served: Counter,
    fetches: Counter,
    stored_bytes: Counter,
    chunks_decoded: Counter,
    chunks_verified: Counter,
    cache_hits: Counter,
    fetch_ns: Counter,
    decode_ns: Counter,
    zran_inflates: Counter,
}

/// The decoded chunk-info array of a blob, checked.
struct BlobMap {
    chunks: Vec<ChunkInfo>,
    /// ZRAN blobs: the ZRan tables.
    zran: Option<ZranMap>,
}

/// The ZRan tables of a ZRAN blob: the decompressed chunk-info data they live in and the
/// blob meta header that places them (checked when the map was loaded).
struct ZranMap {
    ci: Vec<u8>,
    header: Box<BlobCompressionContextHeader>,
}

impl ZranMap {
    fn table(&self) -> std::result::Result<ZranTable<'_>, erofs_format::Error> {
        ZranTable::new(&self.ci, &self.header)
    }
}

/// Why a blob's chunk map could not be loaded, kept to answer every later read.
enum MapError {
    Corrupt(String, Context),
    Unsupported(String),
    Io(u16, io::ErrorKind, String),
    Other(io::ErrorKind, String),
}

impl From<Error> for MapError {
    fn from(e: Error) -> Self {
        match e {
            Error::Corrupt { what, context } => MapError::Corrupt(what, context),
            Error::Unsupported { feature } => MapError::Unsupported(feature),
            Error::Io { device, source } => MapError::Io(device, source.kind(), source.to_string()),
            e => {
                let e = io::Error::from(e);
                MapError::Other(e.kind(), e.to_string())
            }
        }
    }
}

impl MapError {
    fn to_error(&self) -> Error {
        match self {
            MapError::Corrupt(what, context) => Error::corrupt(what.clone(), *context),
            MapError::Unsupported(feature) => Error::unsupported(feature.clone()),
            MapError::Io(device, kind, msg) => Error::Io {
                device: *device,
                source: io::Error::new(*kind, msg.clone()),
            },
            MapError::Other(kind, msg) => Error::Io {
                device: 0,
                source: io::Error::new(*kind, msg.clone()),
            },
        }
    }
}

/// Inflated ZRan contexts, oldest first, at most `capacity` bytes.
struct ContextCache {
    capacity: usize,
    bytes: usize,
    entries: VecDeque<(u32, Arc<[u8]>)>,
}

impl ContextCache {
    fn get(&self, index: u32) -> Option<Arc<[u8]>> {
        self.entries
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, d)| Arc::clone(d))
    }

    fn insert(&mut self, index: u32, data: Arc<[u8]>) {
        let n = data.len();
        if n > self.capacity || self.get(index).is_some() {
            return;
        }
        self.bytes += n;
        self.entries.push_back((index, data));
        while self.bytes > self.capacity {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
    }
}

struct ChunkCache {
    capacity: usize,
    bytes: usize,
    map: HashMap<u32, Arc<[u8]>>,
    order: VecDeque<u32>,
}

impl ChunkCache {
    fn get(&self, ci: u32) -> Option<Arc<[u8]>> {
        self.map.get(&ci).cloned()
    }

    fn insert(&mut self, ci: u32, data: Arc<[u8]>) {
        let n = <[u8]>::len(&data);
        if n > self.capacity || self.map.contains_key(&ci) {
            return;
        }
        self.bytes += n;
        self.map.insert(ci, data);
        self.order.push_back(ci);
        while self.bytes > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.map.remove(&old) {
                self.bytes -= <[u8]>::len(&d);
            }
        }
    }
}

/// A stored Nydus data blob presented as its uncompressed address space.
///
/// `len()` is the blob's `uncompressed_size`; `read_exact_at(buf, off)` returns the bytes
/// the kernel would find at `off` of the EROFS device: each chunk decoded at its
/// uncompressed offset, zeros between chunks. Only the chunks a read touches are fetched
/// (neighbouring missing chunks with adjacent stored bytes in one read) and decoded; decoded
/// chunks stay in a bounded cache ([`BlobSource::with_cache_capacity`]). With digests
/// ([`BlobSource::with_digests`]) every decoded chunk is hashed (BLAKE3 or SHA-256, as the
/// blob says) and a mismatch fails the read with [`io::ErrorKind::InvalidData`].
///
/// A ZRAN (`targz-ref`) blob's stored bytes are the original `.tar.gz`: a read fetches the
/// gzip input of the ZRan contexts its chunks are cut from ([`BlobSource::zran_contexts`])
/// and inflates each once; the last inflated contexts stay in a second bounded cache
/// ([`ZRAN_CONTEXT_CACHE_BYTES`]).
///
/// The chunk-info array is read on first use, so constructing a source does no I/O and a
/// blob that is never read may be absent.
pub struct BlobSource {
    stored: Box<dyn Source>,
    meta_source: Option<Box<dyn Source>>,
    record: RafsV6Blob,
    digests: Option<Vec<Option<Digest>>>,
    map: OnceLock<std::result::Result<BlobMap, MapError>>,
    cache: Mutex<ChunkCache>,
    contexts: Mutex<ContextCache>,
    /// Chunks being decoded ahead by [`BlobSource::decode_ahead`]; readers wait for them.
    inflight: Mutex<std::collections::HashSet<u32>>,
    inflight_done: std::sync::Condvar,
    ahead_busy: std::sync::atomic::AtomicBool,
    counters: Counters,
}

impl fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobSource")
            .field("blob_id", &String::from_utf8_lossy(&self.record.blob_id))
            .field("uncompressed_size", &self.record.uncompressed_size.get())
            .field("verify", &self.digests.is_some())
            .finish_non_exhaustive()
    }
}

impl BlobSource {
    /// Present `stored` (the blob file as written by nydus-image) as described by its blob
    /// table `record`.
    pub fn new(stored: impl Source + 'static, record: &RafsV6Blob) -> Self {
        BlobSource {
            stored: Box::new(stored),
            meta_source: None,
            record: *record,
            digests: None,
            map: OnceLock::new(),
            cache: Mutex::new(ChunkCache {
                capacity: DEFAULT_CHUNK_CACHE_BYTES,
                bytes: 0,
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            contexts: Mutex::new(ContextCache {
                capacity: ZRAN_CONTEXT_CACHE_BYTES,
                bytes: 0,
                entries: VecDeque::new(),
            }),
            counters: Counters::default(),
            inflight: Mutex::new(std::collections::HashSet::new()),
            inflight_done: std::sync::Condvar::new(),
            ahead_busy: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Read the chunk-info array from this separate meta blob (blobs with the SEPARATE
    /// feature) instead of the data blob.
    pub fn with_separate_meta(mut self, meta: impl Source + 'static) -> Self {
        self.meta_source = Some(Box::new(meta));
        self
    }

    /// Check each decoded chunk against `digests[chunk index]` (from the bootstrap's chunk
    /// table, [`RafsMeta::blob_digests`]); chunks with `None` are not checked.
    pub fn with_digests(mut self, digests: Vec<Option<Digest>>) -> Self {
        self.digests = Some(digests);
        self
    }

    /// Keep at most `bytes` of decoded chunks (default [`DEFAULT_CHUNK_CACHE_BYTES`]) and,
    /// for ZRAN blobs, at most `bytes` (and never more than [`ZRAN_CONTEXT_CACHE_BYTES`]) of
    /// inflated contexts; 0 turns both caches off (a single read still inflates each
    /// context it needs only once).
    pub fn with_cache_capacity(self, bytes: usize) -> Self {
        if let Ok(mut c) = self.cache.lock() {
            c.capacity = bytes;
        }
        if let Ok(mut c) = self.contexts.lock() {
            c.capacity = bytes.min(ZRAN_CONTEXT_CACHE_BYTES);
        }
        self
    }

    /// The blob table record.
    pub fn record(&self) -> &RafsV6Blob {
        &self.record
    }

    /// Size of the uncompressed address space.
    pub fn uncompressed_size(&self) -> u64 {
        self.record.uncompressed_size.get()
    }

    /// The counters so far.
    pub fn stats(&self) -> BlobStats {
        let c = &self.counters;
        BlobStats {
            reads: c.reads.get(),
            bytes_served: c.bytes_served.get(),
            fetches: c.fetches.get(),
            stored_bytes: c.stored_bytes.get(),
            chunks_decoded: c.chunks_decoded.get(),
            chunks_verified: c.chunks_verified.get(),
            cache_hits: c.cache_hits.get(),
            fetch_ns: c.fetch_ns.get(),
            decode_ns: c.decode_ns.get(),
            zran_inflates: c.zran_inflates.get(),
        }
    }

    /// The decoded chunk-info array (read and checked on first use).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the blob (or its meta blob) cannot be read, [`Error::Corrupt`] if
    /// the array (or a ZRAN blob's ZRan table) breaks the format's rules,
    /// [`Error::Unsupported`] for gzip blobs without ZRan tables (legacy stargz).
    pub fn chunk_infos(&self) -> Result<&[ChunkInfo]> {
        self.map().map(|m| &m.chunks[..])
    }

    /// The ZRan contexts of a ZRAN (`targz-ref`) blob, checked when the chunk map was
    /// loaded (each chunk's [`ChunkInfo::zran`] names one); empty for other blobs.
    ///
    /// # Errors
    ///
    /// As [`BlobSource::chunk_infos`].
    pub fn zran_contexts(&self) -> Result<&[ZranInflateContext]> {
        match &self.map()?.zran {
            Some(z) => Ok(z.table().map_err(|e| self.blob_err(e))?.contexts()),
            None => Ok(&[]),
        }
    }

    /// The stored byte range holding the chunks that overlap `range` of the uncompressed
    /// space (what a server must fetch to answer a read of `range`), or `None` if no chunk
    /// overlaps it. For a ZRAN blob: the gzip input of the ZRan contexts those chunks are
    /// cut from.
    ///
    /// # Errors
    ///
    /// As [`BlobSource::chunk_infos`].
    pub fn stored_range(&self, range: Range<u64>) -> Result<Option<Range<u64>>> {
        let map = self.map()?;
        let chunks = &map.chunks[overlapping(&map.chunks, range.start, range.end)];
        let mut acc: Option<Range<u64>> = None;
        for c in chunks {
            let r = match &map.zran {
                Some(z) => self.zran_context_input(z, c)?,
                None => c.compressed_offset..c.compressed_end(),
            };
            acc = Some(match acc {
                None => r,
                Some(a) => a.start.min(r.start)..a.end.max(r.end),
            });
        }
        Ok(acc)
    }

    /// The gzip byte range of the ZRan context chunk `c` is cut from.
    fn zran_context_input(&self, z: &ZranMap, c: &ChunkInfo) -> Result<Range<u64>> {
        let (index, _) = c
            .zran
            .ok_or_else(|| self.blob_err("chunk without a ZRan context"))?;
        let table = z.table().map_err(|e| self.blob_err(e))?;
        let (ctx, _) = table.context(index).map_err(|e| self.blob_err(e))?;
        ctx.input_range()
            .ok_or_else(|| self.blob_err("ZRan context input overflows"))
    }

    /// Decode chunk `ci` (from the cache, or fetched and decoded), checking its digest if
    /// digests were given. Returns the bytes and whether a digest was checked.
    ///
    /// # Errors
    ///
    /// As [`BlobSource::chunk_infos`]; [`Error::Corrupt`] if the chunk does not decode to
    /// its size or its digest differs.
    pub fn decode_chunk(&self, ci: u32) -> Result<(Arc<[u8]>, bool)> {
        let map = self.map()?;
        let c = *map
            .chunks
            .get(ci as usize)
            .ok_or_else(|| Error::corrupt(format!("no chunk {ci} in the blob"), Context::NONE))?;
        if let Some(d) = self.cache_get(ci) {
            return Ok((d, self.digest_for(ci).is_some()));
        }
        if map.zran.is_some() {
            let (out, r) = self.zran_chunk(map, ci, &mut Vec::new())?;
            let data: Arc<[u8]> = Arc::from(&out[r]);
            self.cache_put(ci, data.clone());
            return Ok((data, self.digest_for(ci).is_some()));
        }
        let mut stored = vec![0u8; c.compressed_size as usize];
        self.fetch(&mut stored, c.compressed_offset)?;
        let data = self.decode(ci, &c, &stored)?;
        let checked = self.digest_for(ci).is_some();
        self.cache_put(ci, data.clone());
        Ok((data, checked))
    }

    fn digest_for(&self, ci: u32) -> Option<&Digest> {
        self.digests.as_ref()?.get(ci as usize)?.as_ref()
    }

    fn cache_get(&self, ci: u32) -> Option<Arc<[u8]>> {
        let hit = self.cache.lock().ok()?.get(ci);
        if hit.is_some() {
            self.counters.cache_hits.incr();
        }
        hit
    }

    /// Wait while chunk `ci` is being decoded ahead (it will then be in the cache).
    fn wait_inflight(&self, ci: u32) {
        let Ok(mut set) = self.inflight.lock() else {
            return;
        };
        while set.contains(&ci) {
            set = match self.inflight_done.wait(set) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    }

    /// Decode the chunks overlapping `range` (clipped to the blob) into the cache on a
    /// background thread, unless one is already running for this blob: a server that has
    /// just answered a sequential read calls this for the next window, so the decoding of
    /// that window overlaps with the kernel's use of this one. Errors are only logged (the
    /// foreground read that needs the chunk reports them).
    pub fn decode_ahead(self: &Arc<Self>, range: Range<u64>) {
        if self.ahead_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("blob-decode-ahead".into())
            .spawn(move || {
                if let Err(e) = this.warm(range) {
                    log::debug!("decode ahead: {e}");
                }
                this.ahead_busy.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.ahead_busy.store(false, Ordering::Release);
        }
    }

    /// Decode the chunks overlapping `range` that are not cached into the cache.
    fn warm(&self, range: Range<u64>) -> Result<()> {
        let map = self.map()?;
        let end = range.end.min(self.uncompressed_size());
        let chunks = overlapping(&map.chunks, range.start, end);
        if map.zran.is_some() {
            return self.warm_zran(map, chunks);
        }
        // Claim the chunks nobody has (cached or in flight), as one run of adjacent
        // stored bytes from the first.
        let mut claimed: Vec<usize> = Vec::new();
        {
            let Ok(mut set) = self.inflight.lock() else {
                return Ok(());
            };
            let mut stop = None;
            for k in chunks {
                let c = &map.chunks[k];
                if set.contains(&(k as u32)) || self.cache_has(k as u32) {
                    if stop.is_some() {
                        break;
                    }
                    continue;
                }
                if let Some(s) = stop
                    && (c.compressed_offset != s
                        || c.compressed_end() - map.chunks[claimed[0]].compressed_offset
                            > MAX_FETCH_SPAN)
                {
                    break;
                }
                set.insert(k as u32);
                claimed.push(k);
                stop = Some(c.compressed_end());
            }
        }
        let Some(&first) = claimed.first() else {
            return Ok(());
        };
        let result = (|| -> Result<()> {
            let start = map.chunks[first].compressed_offset;
            let stop = map.chunks[*claimed.last().unwrap_or(&first)].compressed_end();
            let mut stored = vec![0u8; (stop - start) as usize];
            self.fetch(&mut stored, start)?;
            for &k in &claimed {
                let c = &map.chunks[k];
                let s = (c.compressed_offset - start) as usize;
                let data = self.decode(k as u32, c, &stored[s..s + c.compressed_size as usize])?;
                self.cache_put(k as u32, data);
            }
            Ok(())
        })();
        if let Ok(mut set) = self.inflight.lock() {
            for k in &claimed {
                set.remove(&(*k as u32));
            }
        }
        self.inflight_done.notify_all();
        result
    }

    /// [`BlobSource::warm`] for a ZRAN blob: chunk by chunk, each context inflated once.
    fn warm_zran(&self, map: &BlobMap, chunks: Range<usize>) -> Result<()> {
        let mut held = Vec::new();
        for k in chunks {
            let ci = k as u32;
            {
                let Ok(mut set) = self.inflight.lock() else {
                    return Ok(());
                };
                if set.contains(&ci) || self.cache_has(ci) {
                    continue;
                }
                set.insert(ci);
            }
            let result = self
                .zran_chunk(map, ci, &mut held)
                .map(|(out, r)| self.cache_put(ci, Arc::from(&out[r])));
            if let Ok(mut set) = self.inflight.lock() {
                set.remove(&ci);
            }
            self.inflight_done.notify_all();
            result?;
        }
        Ok(())
    }

    /// The inflated output of ZRan context `index`: from the context cache, or its gzip
    /// input fetched and inflated.
    fn zran_output(&self, z: &ZranMap, index: u32) -> Result<Arc<[u8]>> {
        if let Some(d) = self.contexts.lock().ok().and_then(|c| c.get(index)) {
            return Ok(d);
        }
        let table = z.table().map_err(|e| self.blob_err(e))?;
        let (ctx, dict) = table
            .context(index)
            .map_err(|e| self.blob_err(format!("ZRan context {index}: {e}")))?;
        // Both lengths were bounded by `validate` (at most 32 and 16 MiB).
        let mut input = vec![0u8; ctx.in_len.get() as usize];
        self.fetch(&mut input, ctx.in_offset.get())?;
        let t0 = std::time::Instant::now();
        let mut out = vec![0u8; ctx.out_len.get() as usize];
        let r = zran::inflate_context(ctx, dict, &input, &mut out);
        self.counters.decode_ns.add(t0.elapsed().as_nanos() as u64);
        r.map_err(|e| {
            self.blob_err(format!(
                "ZRan context {index} (gzip {}+{}): {e}",
                ctx.in_offset.get(),
                ctx.in_len.get()
            ))
        })?;
        self.counters.zran_inflates.incr();
        let out: Arc<[u8]> = Arc::from(out);
        if let Ok(mut c) = self.contexts.lock() {
            c.insert(index, out.clone());
        }
        Ok(out)
    }

    /// Before chunk `i` (not cached) of a read that goes on to chunk `end`: if its context
    /// is neither held nor cached and a later chunk of the read needs another such context,
    /// inflate both at once, the second on a helper thread, and hold them.
    fn inflate_ahead(
        &self,
        map: &BlobMap,
        i: usize,
        end: usize,
        held: &mut Vec<(u32, Arc<[u8]>)>,
    ) -> Result<()> {
        let (Some(z), Some((index, _))) = (&map.zran, map.chunks[i].zran) else {
            return Ok(());
        };
        let missing = |x: u32| {
            held.iter().all(|(h, _)| *h != x)
                && self.contexts.lock().is_ok_and(|c| c.get(x).is_none())
        };
        if !missing(index) {
            return Ok(());
        }
        // The first later chunk (not cached) cut from another context.
        let next = map.chunks[i + 1..end]
            .iter()
            .enumerate()
            .filter_map(|(k, c)| Some((i + 1 + k, c.zran?.0)))
            .find(|&(k, x)| x != index && !self.cache_has(k as u32))
            .map(|(_, x)| x)
            .filter(|&x| missing(x));
        let Some(next) = next else {
            return Ok(());
        };
        let (first, second) = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("zran-inflate".into())
                .spawn_scoped(scope, || self.zran_output(z, next));
            let first = self.zran_output(z, index);
            let second = match helper {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(self.blob_err("inflate thread panicked"))),
                // No thread to be had: inflate it here.
                Err(_) => self.zran_output(z, next),
            };
            (first, second)
        });
        *held = vec![(index, first?), (next, second?)];
        Ok(())
    }

    /// Chunk `ci` of a ZRAN blob, digest-checked: its context's inflated output and the
    /// chunk's range in it. `held` keeps the contexts used last (at most two), so that a run
    /// of chunks inflates each context once even when the context cache is off.
    fn zran_chunk(
        &self,
        map: &BlobMap,
        ci: u32,
        held: &mut Vec<(u32, Arc<[u8]>)>,
    ) -> Result<(Arc<[u8]>, Range<usize>)> {
        let z = map
            .zran
            .as_ref()
            .ok_or_else(|| self.blob_err("not a ZRAN blob"))?;
        let c = map
            .chunks
            .get(ci as usize)
            .ok_or_else(|| self.blob_err(format!("no chunk {ci}")))?;
        let (index, offset) = c
            .zran
            .ok_or_else(|| self.blob_err(format!("chunk {ci} has no ZRan context")))?;
        let out = match held.iter().find(|(i, _)| *i == index) {
            Some((_, d)) => Arc::clone(d),
            None => {
                let d = self.zran_output(z, index)?;
                *held = vec![(index, Arc::clone(&d))];
                d
            }
        };
        let start = offset as usize;
        let range = start..start.saturating_add(c.uncompressed_size as usize);
        let part = out.get(range.clone()).ok_or_else(|| {
            self.blob_err(format!(
                "chunk {ci} runs past the output of ZRan context {index}"
            ))
        })?;
        let t0 = std::time::Instant::now();
        let r = self.check_digest(ci, c, part);
        self.counters.decode_ns.add(t0.elapsed().as_nanos() as u64);
        r?;
        Ok((out, range))
    }

    fn is_inflight(&self, ci: u32) -> bool {
        self.inflight.lock().is_ok_and(|s| s.contains(&ci))
    }

    fn cache_has(&self, ci: u32) -> bool {
        self.cache.lock().is_ok_and(|c| c.map.contains_key(&ci))
    }

    fn cache_put(&self, ci: u32, data: Arc<[u8]>) {
        if let Ok(mut c) = self.cache.lock() {
            c.insert(ci, data);
        }
    }

    /// The blob id, for messages.
    fn name(&self) -> String {
        String::from_utf8_lossy(&self.record.blob_id)
            .trim_end_matches('\0')
            .to_string()
    }

    fn blob_err(&self, what: impl fmt::Display) -> Error {
        Error::corrupt(format!("blob {}: {what}", self.name()), Context::NONE)
    }

    /// An error `e` reading the blob (or its meta): a read past the end is corruption
    /// (`past_end` says what was read), anything else an I/O error naming the blob.
    fn read_err(&self, e: io::Error, past_end: impl fmt::Display) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.blob_err(past_end)
        } else {
            Error::Io {
                device: 0,
                source: io::Error::new(e.kind(), format!("blob {}: {e}", self.name())),
            }
        }
    }

    fn fetch(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.counters.fetches.incr();
        self.counters.stored_bytes.add(buf.len() as u64);
        let t0 = std::time::Instant::now();
        let r = self.stored.read_exact_at(buf, offset);
        self.counters.fetch_ns.add(t0.elapsed().as_nanos() as u64);
        r.map_err(|e| {
            let len = buf.len();
            self.read_err(
                e,
                format!("chunk data at {offset}+{len} is past the end of the stored blob"),
            )
        })
    }

    /// Decode one chunk from its stored bytes into a new buffer, checking its digest.
    fn decode(&self, ci: u32, c: &ChunkInfo, stored: &[u8]) -> Result<Arc<[u8]>> {
        let mut out = vec![0u8; c.uncompressed_size as usize];
        self.decode_into(ci, c, stored, &mut out)?;
        Ok(Arc::from(out))
    }

    /// Decode one chunk from its stored bytes into `out` (exactly its uncompressed size)
    /// and check its digest.
    fn decode_into(&self, ci: u32, c: &ChunkInfo, stored: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != c.uncompressed_size as usize {
            return Err(self.blob_err(format!("chunk {ci}: output of {} bytes", out.len())));
        }
        let t0 = std::time::Instant::now();
        let r = self.decode_checked(ci, c, stored, out);
        self.counters.decode_ns.add(t0.elapsed().as_nanos() as u64);
        r
    }

    fn decode_checked(&self, ci: u32, c: &ChunkInfo, stored: &[u8], out: &mut [u8]) -> Result<()> {
        if !c.compressed {
            if stored.len() != out.len() {
                return Err(self.blob_err(format!("raw chunk {ci}: stored size differs")));
            }
            out.copy_from_slice(stored);
        } else {
            match self.record.compressor() {
                Some(BlobCompressor::Lz4Block) => lz4_block(stored, out),
                Some(BlobCompressor::Zstd) => zstd_frame(stored, out),
                other => Err(format!("compressed chunk with compressor {other:?}")),
            }
            .map_err(|e| self.blob_err(format!("chunk {ci}: {e}")))?;
        }
        self.check_digest(ci, c, out)
    }

    /// Count chunk `ci` (decoded into `out`) and check its digest, if one was given.
    fn check_digest(&self, ci: u32, c: &ChunkInfo, out: &[u8]) -> Result<()> {
        self.counters.chunks_decoded.incr();
        if let Some(want) = self.digest_for(ci) {
            let got = digest(self.record.digester(), out)
                .ok_or_else(|| self.blob_err("unknown digest algorithm"))?;
            if &got != want {
                return Err(self.blob_err(format!(
                    "chunk {ci} (uncompressed {}+{}, stored {}+{}): digest {} differs from the bootstrap's {}",
                    c.uncompressed_offset,
                    c.uncompressed_size,
                    c.compressed_offset,
                    c.compressed_size,
                    hex(&got),
                    hex(want)
                )));
            }
            self.counters.chunks_verified.incr();
        }
        Ok(())
    }

    fn map(&self) -> Result<&BlobMap> {
        match self
            .map
            .get_or_init(|| self.load_map().map_err(MapError::from))
        {
            Ok(m) => Ok(m),
            Err(e) => Err(e.to_error()),
        }
    }

    fn load_map(&self) -> Result<BlobMap> {
        let r = &self.record;
        let features = r.features();
        let zran = features.contains(BlobFeatures::ZRAN);
        match r.compressor() {
            Some(BlobCompressor::None | BlobCompressor::Lz4Block | BlobCompressor::Zstd)
                if !zran => {}
            Some(BlobCompressor::Gzip) if zran => {}
            Some(BlobCompressor::Gzip) => {
                return Err(Error::unsupported(
                    "Nydus gzip-compressed blob without ZRan tables (legacy stargz)",
                ));
            }
            Some(other) => {
                return Err(self.blob_err(format!("ZRAN blob with compressor {other:?}")));
            }
            None => return Err(self.blob_err("unknown compressor")),
        }
        if zran && !features.contains(BlobFeatures::CHUNK_INFO_V2) {
            return Err(self.blob_err("ZRAN blob without v2 chunk infos"));
        }
        if zran && !cfg!(feature = "deflate") {
            return Err(Error::unsupported(
                "Nydus ZRAN (targz-ref) blob: needs the `deflate` feature",
            ));
        }
        let chunk_size = r.chunk_size.get();
        if !chunk_size.is_power_of_two()
            || !(erofs_format::rafs::MIN_CHUNK_SIZE..=erofs_format::rafs::MAX_CHUNK_SIZE)
                .contains(&chunk_size)
        {
            return Err(self.blob_err(format!("chunk size {chunk_size}")));
        }
        let count = r.chunk_count.get();
        let usize_ = r.ci_uncompressed_size.get();
        let csize = r.ci_compressed_size.get();
        let infos = u64::from(count) * r.chunk_info_size();
        let fits = if zran {
            usize_ >= infos && usize_ - infos <= MAX_ZRAN_TABLE_BYTES
        } else {
            usize_ == infos
        };
        if !fits || infos > MAX_CHUNK_INFO_BYTES {
            return Err(self.blob_err(format!(
                "chunk-info array of {usize_} bytes for {count} chunks"
            )));
        }
        if csize > usize_.max(64) + 1024 {
            return Err(self.blob_err(format!("compressed chunk-info array of {csize} bytes")));
        }
        let meta: &dyn Source = match (&self.meta_source, features.contains(BlobFeatures::SEPARATE))
        {
            (Some(m), true) => &**m,
            (None, true) => {
                return Err(Error::Io {
                    device: 0,
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "the blob's chunk infos are in a separate meta blob that was not given",
                    ),
                });
            }
            _ => &*self.stored,
        };
        let read = |buf: &mut [u8], off: u64| {
            meta.read_exact_at(buf, off).map_err(|e| {
                self.read_err(e, format!("blob meta at {off} is past the end of the blob"))
            })
        };
        // The header after the array must agree with the blob table (ZRAN blobs: and it
        // places the ZRan tables).
        let mut zran_header = None;
        if let Some(hoff) = r.meta_header_offset() {
            let mut h = vec![0u8; BLOB_META_HEADER_SIZE];
            read(&mut h, hoff)?;
            let header = BlobCompressionContextHeader::parse(&h)
                .map_err(|e| self.blob_err(format!("blob meta header: {e}")))?;
            if !header.matches(r) {
                return Err(self.blob_err("blob meta header differs from the blob table"));
            }
            zran_header = zran.then(|| Box::new(*header));
        }
        if zran && zran_header.is_none() {
            return Err(self.blob_err("ZRAN blob without a blob meta header"));
        }
        // Bound every allocation by the input: the array must lie inside the meta source,
        // and each chunk holds at least one stored byte.
        let io = |e: io::Error| Error::Io {
            device: 0,
            source: e,
        };
        let meta_len = meta.size().map_err(io)?;
        if r.ci_offset
            .get()
            .checked_add(csize)
            .is_none_or(|e| e > meta_len)
        {
            return Err(self.blob_err(format!(
                "chunk-info array at {}+{csize} is past the end of the blob meta ({meta_len} bytes)",
                r.ci_offset.get()
            )));
        }
        let stored_len = self.stored.size().map_err(io)?;
        if u64::from(count) > stored_len {
            return Err(self.blob_err(format!("{count} chunks in a blob of {stored_len} bytes")));
        }
        let mut raw = vec![0u8; csize as usize];
        read(&mut raw, r.ci_offset.get())?;
        let bytes = match r.ci_compressor() {
            Some(BlobCompressor::None) => raw,
            Some(BlobCompressor::Zstd) => {
                let mut out = vec![0u8; usize_ as usize];
                zstd_frame(&raw, &mut out)
                    .map_err(|e| self.blob_err(format!("chunk-info array: {e}")))?;
                out
            }
            Some(BlobCompressor::Lz4Block) => {
                let mut out = vec![0u8; usize_ as usize];
                lz4_block(&raw, &mut out)
                    .map_err(|e| self.blob_err(format!("chunk-info array: {e}")))?;
                out
            }
            other => {
                return Err(self.blob_err(format!("chunk-info compressor {other:?}")));
            }
        };
        let arr = ChunkInfoArray::new(&bytes, features, count)
            .map_err(|e| self.blob_err(format!("chunk-info array: {e}")))?;
        let table = match &zran_header {
            Some(h) => {
                let t = ZranTable::new(&bytes, h)
                    .map_err(|e| self.blob_err(format!("ZRan table: {e}")))?;
                for i in 0..t.len() as u32 {
                    t.context(i)
                        .map_err(|e| self.blob_err(format!("ZRan context {i}: {e}")))?;
                }
                Some(t)
            }
            None => None,
        };
        let limit = r.uncompressed_size.get();
        let mut chunks = Vec::with_capacity(count as usize);
        let mut prev_end = 0u64;
        for (k, c) in arr.iter().enumerate() {
            let c = c.map_err(|e| self.blob_err(format!("chunk {k}: {e}")))?;
            let bad = |what: &str| self.blob_err(format!("chunk {k}: {what}"));
            if c.uncompressed_size == 0 || c.uncompressed_size > r.chunk_size.get() {
                return Err(bad("uncompressed size out of range"));
            }
            if c.uncompressed_offset % RAFS_BLOCK_SIZE != 0 {
                return Err(bad("uncompressed offset not 4 KiB aligned"));
            }
            if c.uncompressed_offset < prev_end {
                return Err(bad("chunks overlap or are out of order"));
            }
            if c.uncompressed_end() > limit.next_multiple_of(RAFS_BLOCK_SIZE) {
                return Err(bad("chunk ends past the uncompressed size"));
            }
            if c.compressed_offset
                .checked_add(u64::from(c.compressed_size))
                .is_none()
            {
                return Err(bad("stored range overflows"));
            }
            if !c.compressed && c.compressed_size != c.uncompressed_size {
                return Err(bad("raw chunk with a stored size different from its size"));
            }
            if c.compressed && r.compressor() == Some(BlobCompressor::None) {
                return Err(bad("compressed chunk in an uncompressed blob"));
            }
            if !zran
                && !features.contains(BlobFeatures::SEPARATE)
                && c.compressed_end() > r.compressed_data_size()
            {
                return Err(bad("stored bytes run into the blob meta"));
            }
            match (&table, c.zran) {
                (Some(t), Some((index, offset))) => {
                    let (ctx, _) = t
                        .context(index)
                        .map_err(|e| bad(&format!("ZRan context: {e}")))?;
                    if u64::from(offset) + u64::from(c.uncompressed_size)
                        > u64::from(ctx.out_len.get())
                    {
                        return Err(bad("runs past the output of its ZRan context"));
                    }
                }
                (Some(_), None) => return Err(bad("no ZRan context in a ZRAN blob")),
                (None, Some(_)) => return Err(bad("ZRan context in a blob without ZRAN")),
                (None, None) => {}
            }
            prev_end = c.uncompressed_end();
            chunks.push(c);
        }
        let zran = zran_header.map(|header| ZranMap { ci: bytes, header });
        Ok(BlobMap { chunks, zran })
    }

    fn read_range(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.uncompressed_size())
            .ok_or_else(|| Error::Io {
                device: 0,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past the end of the blob's {} uncompressed bytes",
                        buf.len(),
                        self.uncompressed_size()
                    ),
                ),
            })?;
        self.counters.reads.incr();
        self.counters.bytes_served.add(buf.len() as u64);
        let map = self.map()?;
        if map.zran.is_some() {
            return self.read_zran(map, buf, offset, end);
        }
        let range = overlapping(&map.chunks, offset, end);
        // `rest` is the part of `buf` not written yet; it starts at absolute offset `pos`.
        let mut rest: &mut [u8] = buf;
        let mut pos = offset;
        let mut i = range.start;
        while i < range.end {
            let c = map.chunks[i];
            self.wait_inflight(i as u32);
            if let Some(data) = self.cache_get(i as u32) {
                let to = c.uncompressed_end().min(end);
                let skip = pos.max(c.uncompressed_offset) - c.uncompressed_offset;
                let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
                dst.copy_from_slice(&data[skip as usize..skip as usize + dst.len()]);
                i += 1;
                continue;
            }
            // A run of missing chunks whose stored bytes are adjacent: one read.
            let start = c.compressed_offset;
            let mut stop = c.compressed_end();
            let mut j = i + 1;
            while j < range.end {
                let n = &map.chunks[j];
                if n.compressed_offset != stop
                    || n.compressed_end() - start > MAX_FETCH_SPAN
                    || self.cache_has(j as u32)
                    || self.is_inflight(j as u32)
                {
                    break;
                }
                stop = n.compressed_end();
                j += 1;
            }
            SCRATCH.with(|cell| -> Result<()> {
                let mut scratch = cell.borrow_mut();
                let len = (stop - start) as usize;
                if scratch.len() < len {
                    scratch.resize(len, 0);
                }
                let stored = &mut scratch[..len];
                self.fetch(stored, start)?;
                let mut tasks = Vec::with_capacity(j - i);
                for k in i..j {
                    let c = &map.chunks[k];
                    let s = (c.compressed_offset - start) as usize;
                    let to = c.uncompressed_end().min(end);
                    let skip = pos.max(c.uncompressed_offset) - c.uncompressed_offset;
                    let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
                    tasks.push(Task {
                        ci: k,
                        stored: &stored[s..s + c.compressed_size as usize],
                        dst,
                        skip: skip as usize,
                    });
                }
                self.run_tasks(&map.chunks, tasks)?;
                if scratch.len() > SCRATCH_KEEP {
                    *scratch = Vec::new();
                }
                Ok(())
            })?;
            i = j;
        }
        rest.fill(0);
        Ok(())
    }

    /// [`BlobSource::read_range`] for a ZRAN blob: chunk by chunk, each context inflated at
    /// most once, two at a time on two threads when the read needs more than one; a chunk
    /// only partly read is kept.
    fn read_zran(&self, map: &BlobMap, buf: &mut [u8], offset: u64, end: u64) -> Result<()> {
        let mut rest: &mut [u8] = buf;
        let mut pos = offset;
        let mut held = Vec::new();
        let range = overlapping(&map.chunks, offset, end);
        for i in range.clone() {
            let c = map.chunks[i];
            let ci = i as u32;
            self.wait_inflight(ci);
            let to = c.uncompressed_end().min(end);
            let skip = (pos.max(c.uncompressed_offset) - c.uncompressed_offset) as usize;
            let dst = take(&mut rest, &mut pos, c.uncompressed_offset, to);
            let cached = self.cache_get(ci);
            if cached.is_none() {
                self.inflate_ahead(map, i, range.end, &mut held)?;
            }
            let (data, part) = match &cached {
                Some(d) => (Arc::clone(d), 0..d.len()),
                None => self.zran_chunk(map, ci, &mut held)?,
            };
            let part = &data[part];
            let src = part
                .get(skip..skip + dst.len())
                .ok_or_else(|| self.blob_err(format!("chunk {ci}: read past its end")))?;
            dst.copy_from_slice(src);
            if cached.is_none() && dst.len() != part.len() {
                self.cache_put(ci, Arc::from(part));
            }
        }
        rest.fill(0);
        Ok(())
    }

    /// Decode `tasks`, on two threads when there is enough compressed data to share.
    fn run_tasks(&self, chunks: &[ChunkInfo], mut tasks: Vec<Task<'_>>) -> Result<()> {
        let compressed: u64 = tasks
            .iter()
            .filter(|t| chunks[t.ci].compressed)
            .map(|t| u64::from(chunks[t.ci].uncompressed_size))
            .sum();
        if tasks.len() < 2 || compressed < PARALLEL_DECODE_MIN {
            return tasks.into_iter().try_for_each(|t| self.run_task(chunks, t));
        }
        // Split by uncompressed bytes: the second half goes to a helper thread.
        let total: u64 = tasks
            .iter()
            .map(|t| u64::from(chunks[t.ci].uncompressed_size))
            .sum();
        let mut acc = 0;
        let cut = tasks
            .iter()
            .position(|t| {
                acc += u64::from(chunks[t.ci].uncompressed_size);
                acc * 2 >= total
            })
            .map_or(tasks.len(), |p| p + 1)
            .min(tasks.len() - 1);
        let second = tasks.split_off(cut);
        std::thread::scope(|scope| {
            let helper = scope.spawn(|| {
                second
                    .into_iter()
                    .try_for_each(|t| self.run_task(chunks, t))
            });
            let mine = tasks.into_iter().try_for_each(|t| self.run_task(chunks, t));
            let theirs = helper
                .join()
                .unwrap_or_else(|_| Err(self.blob_err("decoder thread panicked")));
            mine.and(theirs)
        })
    }

    /// Decode one chunk into its part of the read; a chunk only partly read is kept.
    fn run_task(&self, chunks: &[ChunkInfo], t: Task<'_>) -> Result<()> {
        let c = &chunks[t.ci];
        if t.skip == 0 && t.dst.len() == c.uncompressed_size as usize {
            // Wholly inside the read: decode in place, nothing to keep.
            return self.decode_into(t.ci as u32, c, t.stored, t.dst);
        }
        let data = self.decode(t.ci as u32, c, t.stored)?;
        let part = data
            .get(t.skip..t.skip + t.dst.len())
            .ok_or_else(|| self.blob_err(format!("chunk {}: read past its end", t.ci)))?;
        t.dst.copy_from_slice(part);
        self.cache_put(t.ci as u32, data);
        Ok(())
    }
}

/// The bytes of `rest` (which starts at absolute offset `pos`) up to `to`, after zeroing the
/// gap before `at`; `rest` and `pos` move past them.
fn take<'a>(rest: &mut &'a mut [u8], pos: &mut u64, at: u64, to: u64) -> &'a mut [u8] {
    let r = std::mem::take(rest);
    let (gap, r) = r.split_at_mut(at.saturating_sub(*pos) as usize);
    gap.fill(0);
    *pos = (*pos).max(at);
    let (dst, r) = r.split_at_mut((to - *pos) as usize);
    *rest = r;
    *pos = to;
    dst
}

/// One chunk of a read: its stored bytes and where its decoded bytes `[skip, +dst.len())` go.
struct Task<'a> {
    ci: usize,
    stored: &'a [u8],
    dst: &'a mut [u8],
    skip: usize,
}

/// Compressed bytes in one run above which decoding is split over two threads.
const PARALLEL_DECODE_MIN: u64 = 512 * 1024;

thread_local! {
    /// Stored bytes of the run being decoded (reused, so big reads do not fault in fresh
    /// pages every time).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest scratch buffer a thread keeps between reads.
const SCRATCH_KEEP: usize = 8 << 20;

/// Indexes of the chunks (sorted, non-overlapping) that overlap `[start, end)`.
fn overlapping(chunks: &[ChunkInfo], start: u64, end: u64) -> Range<usize> {
    let first = chunks.partition_point(|c| c.uncompressed_end() <= start);
    let last = chunks.partition_point(|c| c.uncompressed_offset < end);
    first..last.max(first)
}

impl Source for BlobSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_range(buf, offset).map_err(io::Error::from)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.uncompressed_size())
    }
}

/// The digest of `data` with `algo`.
pub fn digest(algo: Option<Digester>, data: &[u8]) -> Option<Digest> {
    match algo? {
        Digester::Blake3 => Some(*blake3::hash(data).as_bytes()),
        Digester::Sha256 => {
            use sha2::Digest as _;
            Some(sha2::Sha256::digest(data).into())
        }
    }
}

#[cfg(feature = "lz4")]
fn lz4_block(input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    match lz4_flex::block::decompress_into(input, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(format!("lz4 block decodes to {n} bytes, not {}", out.len())),
        Err(e) => Err(format!("lz4 block: {e}")),
    }
}

#[cfg(not(feature = "lz4"))]
fn lz4_block(_: &[u8], _: &mut [u8]) -> std::result::Result<(), String> {
    Err("lz4_block chunks need the `lz4` feature".into())
}

#[cfg(feature = "zstd")]
fn zstd_frame(input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    use std::cell::RefCell;
    use zstd::zstd_safe::{DCtx, ResetDirective, get_error_name};
    thread_local! {
        static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
    }
    DCTX.with(|cell| {
        let mut d = cell.borrow_mut();
        let _ = d.reset(ResetDirective::SessionOnly);
        match d.decompress(out, input) {
            Ok(n) if n == out.len() => Ok(()),
            Ok(n) => Err(format!(
                "zstd frame decodes to {n} bytes, not {}",
                out.len()
            )),
            Err(code) => Err(format!("zstd: {}", get_error_name(code))),
        }
    })
}

#[cfg(not(feature = "zstd"))]
fn zstd_frame(_: &[u8], _: &mut [u8]) -> std::result::Result<(), String> {
    Err("zstd chunks need the `zstd` feature".into())
}

/// Read `RafsV6Blob` records (for tests and tools that build sources by hand).
///
/// # Errors
///
/// [`Error::Corrupt`] if `bytes` is not whole 256-byte records.
pub fn parse_blob_table(bytes: &[u8]) -> Result<Vec<RafsV6Blob>> {
    blob_table(bytes)
        .map(|t| t.to_vec())
        .map_err(|e| rafs_corrupt(e, 0))
}

// The hand-built blobs compress chunks with zstd.
#[cfg(all(test, feature = "zstd"))]
mod tests {
    use super::*;
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
}

// Hand-built targz-ref blobs: a gzip file and a separate meta blob with ZRan tables.
#[cfg(all(test, feature = "deflate"))]
mod zran_blob_tests {
    use super::*;
    use erofs_format::rafs::ZranInflateContext;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;
    use zerocopy::little_endian::{U32, U64};
    use zerocopy::{FromZeros, IntoBytes};

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
}
