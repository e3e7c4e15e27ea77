//! [`RafsMeta`]: what a RAFS v6 bootstrap adds to its EROFS image (blob table, chunk
//! table with digests, prefetch list), checking blobs against it, and the blob-device
//! provider `ImageBuilder::build` calls for a bootstrap opened with a blob directory.

use super::blob_dir::blob_from_dir;
use super::blob_info::BlobInfo;
use super::source::BlobSource;
use crate::error::{Context, CorruptKind, Error, Result};
use crate::image::Image;
use crate::inner::Inner;
use crate::source::Source;
use erofs_format::rafs::{Digest, RafsSuperFlags};
use erofs_format::rafs::{
    FEATURE_COMPAT_RAFS_V6, PrefetchTable, RAFS_BLOCK_SIZE, RafsV5ChunkInfo, RafsV6Blob,
    RafsV6SuperBlockExt, blob_table, chunk_table,
};
use erofs_format::superblock::SuperBlock;
use std::collections::HashMap;
use std::path::Path;
use zerocopy::FromBytes;

/// Whether `head` (the first 4 KiB of a file) is an EROFS superblock with the RAFS v6
/// `feature_compat` bit: a Nydus bootstrap.
pub fn is_rafs_bootstrap(head: &[u8]) -> bool {
    SuperBlock::parse(head).is_ok_and(|sb| sb.feature_compat.get() & FEATURE_COMPAT_RAFS_V6 != 0)
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
        let ext = RafsV6SuperBlockExt::read_from_bytes(&bytes).map_err(|_| {
            Error::corrupt_as(
                CorruptKind::Rafs,
                "RAFS extended superblock",
                Context::offset(at),
            )
        })?;
        ext.validate(inner.primary_len)
            .map_err(|e| rafs_corrupt(e, at))?;
        let bt_off = ext.s_blob_table_offset.get();
        let bt_len = usize::try_from(ext.s_blob_table_size.get()).map_err(|_| {
            Error::corrupt_as(CorruptKind::Rafs, "blob table size", Context::offset(at))
        })?;
        let raw = inner.read_primary(bt_off, bt_len, Context::offset(bt_off))?;
        let records = blob_table(&raw).map_err(|e| rafs_corrupt(e, bt_off))?;
        if records.len() != inner.devices.len() {
            return Err(Error::corrupt_as(
                CorruptKind::Rafs,
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
            // The table holds at most u32::MAX / 256 records; the offset only labels errors.
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let ctx = Context::offset(bt_off.saturating_add((i as u64).saturating_mul(256)));
            r.validate(index, ext.chunk_size())
                .map_err(|e| Error::corrupt_as(CorruptKind::Rafs, format!("blob {i}: {e}"), ctx))?;
            let dev = &inner.devices[i];
            if dev.blocks.checked_mul(RAFS_BLOCK_SIZE) != Some(r.uncompressed_size.get()) {
                return Err(Error::corrupt_as(
                    CorruptKind::Rafs,
                    format!(
                        "blob {i}: device slot has {} blocks, the blob {} uncompressed bytes",
                        dev.blocks,
                        r.uncompressed_size.get()
                    ),
                    ctx,
                ));
            }
            blobs.push(BlobInfo {
                index,
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
        let len = usize::try_from(self.ext.s_chunk_table_size.get()).map_err(|_| {
            Error::corrupt_as(CorruptKind::Rafs, "chunk table size", Context::offset(off))
        })?;
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
        let blob = self.blobs.get(index as usize).ok_or_else(|| {
            Error::corrupt_as(CorruptKind::Rafs, format!("no blob {index}"), Context::NONE)
        })?;
        let mut out = vec![None; blob.chunk_count as usize];
        for r in self.chunk_records(image)? {
            if r.blob_index != index {
                continue;
            }
            match out.get_mut(r.chunk_index as usize) {
                Some(slot) => *slot = Some(r.digest),
                None => {
                    return Err(Error::corrupt_as(
                        CorruptKind::Rafs,
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
        let blob = self.blobs.get(index as usize).ok_or_else(|| {
            Error::corrupt_as(CorruptKind::Rafs, format!("no blob {index}"), Context::NONE)
        })?;
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
            // Chunk indexes are u32 (ChunkInfoArray's count); counters saturate.
            for ci in 0..u32::try_from(n).unwrap_or(u32::MAX) {
                match src.decode_chunk(ci) {
                    Ok((_, checked)) => {
                        report.chunks = report.chunks.saturating_add(1);
                        if checked {
                            report.verified = report.verified.saturating_add(1);
                        }
                    }
                    Err(e) => report.errors.push(e.to_string()),
                }
            }
            report.stored_bytes = report.stored_bytes.saturating_add(src.stats().stored_bytes);
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
                // Bounded by max_entries (checked per directory); cannot saturate.
                seen = seen.saturating_add(1);
                let name = e.name();
                if name == b"." || name == b".." {
                    continue;
                }
                let p = format!("{path}/{}", String::from_utf8_lossy(name));
                if let Some(slot @ None) = want.get_mut(&e.nid().0) {
                    *slot = Some(p.clone());
                    // A slot turned from None to Some: missing counted it.
                    missing = missing.saturating_sub(1);
                }
                if e.file_type() == crate::FileType::Directory && depth < image.limits().max_depth {
                    // depth < max_depth: cannot saturate.
                    stack.push((e.nid(), p, depth.saturating_add(1)));
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
    Error::corrupt_as(
        CorruptKind::Rafs,
        format!("RAFS: {e}"),
        Context::offset(offset),
    )
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
