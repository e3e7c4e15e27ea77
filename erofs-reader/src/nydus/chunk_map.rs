//! The chunk map of a blob: its chunk-info array (and a ZRAN blob's ZRan tables), read
//! from the blob or its separate meta blob and checked once.

use super::limits::{MAX_CHUNK_INFO_BYTES, MAX_ZRAN_TABLE_BYTES};
use super::stored::StoredBlob;
use crate::decode::chunk::lz4_block;
use crate::decode::chunk::zstd_frame;
use crate::error::{Context, CorruptKind, Error, Result};
use crate::source::Source;
use erofs_format::rafs::{
    BLOB_META_HEADER_SIZE, BlobCompressionContextHeader, ChunkInfo, ChunkInfoArray,
    RAFS_BLOCK_SIZE, ZranTable,
};
use erofs_format::rafs::{BlobCompressor, BlobFeatures};
use std::io;
use std::ops::Range;

/// The decoded chunk-info array of a blob, checked.
pub(super) struct BlobMap {
    pub(super) chunks: Vec<ChunkInfo>,
    /// ZRAN blobs: the ZRan tables.
    pub(super) zran: Option<ZranMap>,
}

impl BlobMap {
    /// Read and check the chunk map of `blob`.
    pub(super) fn load(blob: &StoredBlob) -> Result<BlobMap> {
        let r = &blob.record;
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
                return Err(blob.blob_err(format!("ZRAN blob with compressor {other:?}")));
            }
            None => return Err(blob.blob_err("unknown compressor")),
        }
        if zran && !features.contains(BlobFeatures::CHUNK_INFO_V2) {
            return Err(blob.blob_err("ZRAN blob without v2 chunk infos"));
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
            return Err(blob.blob_err(format!("chunk size {chunk_size}")));
        }
        let count = r.chunk_count.get();
        let usize_ = r.ci_uncompressed_size.get();
        let csize = r.ci_compressed_size.get();
        let infos = u64::from(count)
            .checked_mul(r.chunk_info_size())
            .ok_or_else(|| blob.blob_err(format!("chunk-info array for {count} chunks")))?;
        let fits = if zran {
            usize_
                .checked_sub(infos)
                .is_some_and(|extra| extra <= MAX_ZRAN_TABLE_BYTES)
        } else {
            usize_ == infos
        };
        if !fits || infos > MAX_CHUNK_INFO_BYTES {
            return Err(blob.blob_err(format!(
                "chunk-info array of {usize_} bytes for {count} chunks"
            )));
        }
        // Saturating: a bound of u64::MAX refuses nothing more than the sum would.
        if csize > usize_.max(64).saturating_add(1024) {
            return Err(blob.blob_err(format!("compressed chunk-info array of {csize} bytes")));
        }
        let meta: &dyn Source = match (&blob.meta_source, features.contains(BlobFeatures::SEPARATE))
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
            _ => &*blob.stored,
        };
        let read = |buf: &mut [u8], off: u64| {
            meta.read_exact_at(buf, off).map_err(|e| {
                blob.read_err(e, format!("blob meta at {off} is past the end of the blob"))
            })
        };
        // The header after the array must agree with the blob table (ZRAN blobs: and it
        // places the ZRan tables).
        let mut zran_header = None;
        if let Some(hoff) = r.meta_header_offset() {
            let mut h = vec![0u8; BLOB_META_HEADER_SIZE];
            read(&mut h, hoff)?;
            let header = BlobCompressionContextHeader::parse(&h)
                .map_err(|e| blob.blob_err(format!("blob meta header: {e}")))?;
            if !header.matches(r) {
                return Err(blob.blob_err("blob meta header differs from the blob table"));
            }
            zran_header = zran.then(|| Box::new(*header));
        }
        if zran && zran_header.is_none() {
            return Err(blob.blob_err("ZRAN blob without a blob meta header"));
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
            return Err(blob.blob_err(format!(
                "chunk-info array at {}+{csize} is past the end of the blob meta ({meta_len} bytes)",
                r.ci_offset.get()
            )));
        }
        let stored_len = blob.stored.size().map_err(io)?;
        if u64::from(count) > stored_len {
            return Err(blob.blob_err(format!("{count} chunks in a blob of {stored_len} bytes")));
        }
        let zeroed = |n: u64| {
            usize::try_from(n)
                .map(|n| vec![0u8; n])
                .map_err(|_| blob.blob_err(format!("chunk-info array of {n} bytes")))
        };
        let mut raw = zeroed(csize)?;
        read(&mut raw, r.ci_offset.get())?;
        let bytes = match r.ci_compressor() {
            Some(BlobCompressor::None) => raw,
            Some(BlobCompressor::Zstd) => {
                let mut out = zeroed(usize_)?;
                zstd_frame(&raw, &mut out)
                    .map_err(|e| blob.blob_err(format!("chunk-info array: {e}")))?;
                out
            }
            Some(BlobCompressor::Lz4Block) => {
                let mut out = zeroed(usize_)?;
                lz4_block(&raw, &mut out)
                    .map_err(|e| blob.blob_err(format!("chunk-info array: {e}")))?;
                out
            }
            other => {
                return Err(blob.blob_err(format!("chunk-info compressor {other:?}")));
            }
        };
        let arr = ChunkInfoArray::new(&bytes, features, count)
            .map_err(|e| blob.blob_err(format!("chunk-info array: {e}")))?;
        let table = match &zran_header {
            Some(h) => {
                let t = ZranTable::new(&bytes, h)
                    .map_err(|e| blob.blob_err(format!("ZRan table: {e}")))?;
                for i in 0..u32::try_from(t.len()).unwrap_or(u32::MAX) {
                    t.context(i)
                        .map_err(|e| blob.blob_err(format!("ZRan context {i}: {e}")))?;
                }
                Some(t)
            }
            None => None,
        };
        let limit = r.uncompressed_size.get();
        let mut chunks = Vec::with_capacity(count as usize);
        let mut prev_end = 0u64;
        for (k, c) in arr.iter().enumerate() {
            let c = c.map_err(|e| blob.blob_err(format!("chunk {k}: {e}")))?;
            let bad = |what: &str| blob.blob_err(format!("chunk {k}: {what}"));
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
                    if u64::from(offset)
                        .checked_add(u64::from(c.uncompressed_size))
                        .is_none_or(|end| end > u64::from(ctx.out_len.get()))
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
}

/// The ZRan tables of a ZRAN blob: the decompressed chunk-info data they live in and the
/// blob meta header that places them (checked when the map was loaded).
pub(super) struct ZranMap {
    ci: Vec<u8>,
    header: Box<BlobCompressionContextHeader>,
}

impl ZranMap {
    pub(super) fn table(&self) -> std::result::Result<ZranTable<'_>, erofs_format::Error> {
        ZranTable::new(&self.ci, &self.header)
    }
}

/// Why a blob's chunk map could not be loaded, kept to answer every later read.
pub(super) enum MapError {
    Corrupt(CorruptKind, String, Context),
    Unsupported(String),
    Io(u16, io::ErrorKind, String),
    Other(io::ErrorKind, String),
}

impl From<Error> for MapError {
    fn from(e: Error) -> Self {
        match e {
            Error::Corrupt {
                kind,
                what,
                context,
            } => MapError::Corrupt(kind, what, context),
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
    pub(super) fn to_error(&self) -> Error {
        match self {
            MapError::Corrupt(kind, what, context) => {
                Error::corrupt_as(*kind, what.clone(), *context)
            }
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

/// Indexes of the chunks (sorted, non-overlapping) that overlap `[start, end)`.
pub(super) fn overlapping(chunks: &[ChunkInfo], start: u64, end: u64) -> Range<usize> {
    let first = chunks.partition_point(|c| c.uncompressed_end() <= start);
    let last = chunks.partition_point(|c| c.uncompressed_offset < end);
    first..last.max(first)
}

/// Chunk index `i` as the u32 the caches and decoders take: chunk arrays hold at most
/// `u32::MAX` entries (the blob's `chunk_count` is a u32).
pub(super) fn chunk_index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}
