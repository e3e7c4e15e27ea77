//! Blobs built with `--blob-inline-meta`: the bootstrap carried in the blob's tar stream.

use super::digest::digest;
use crate::decode::chunk::{lz4_block, zstd_frame};
use crate::error::{Context, CorruptKind, Error, Result};
use crate::image::Image;
use crate::source::Source;
use erofs_format::rafs::Digester;
use erofs_format::superblock::SuperBlock;
use std::io;
use std::path::Path;

/// Most directory entries [`find_inline_blob`] looks at.
pub(super) const MAX_DIR_SCAN: usize = 100_000;

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
    // The tar header of the last entry: the blob's last 512 bytes.
    let Some(body_end) = len.checked_sub(512) else {
        return Ok(None);
    };
    let mut h = [0u8; 512];
    blob.read_exact_at(&mut h, body_end).map_err(io)?;
    let Some((name, size)) = tar_header(&h) else {
        return Ok(None);
    };
    let bad = |what: &str| {
        Error::corrupt_as(
            CorruptKind::Rafs,
            format!("inlined bootstrap: {what}"),
            Context::NONE,
        )
    };
    let body_start = body_end
        .checked_sub(size)
        .ok_or_else(|| bad("tar entry larger than the blob"))?;
    let zeroed = |n: u64| {
        usize::try_from(n)
            .map(|n| vec![0u8; n])
            .map_err(|_| bad("entry does not fit in memory"))
    };
    match name {
        b"image.boot" => {
            if size > MAX_INLINE_BOOTSTRAP {
                return Err(bad("too large"));
            }
            let mut boot = zeroed(size)?;
            blob.read_exact_at(&mut boot, body_start).map_err(io)?;
            Ok(Some(boot))
        }
        b"rafs.blob.toc" => {
            if size % 128 != 0 || size > 64 * 128 {
                return Err(bad("ToC size"));
            }
            let mut toc = zeroed(size)?;
            blob.read_exact_at(&mut toc, body_start).map_err(io)?;
            for e in toc.chunks_exact(128) {
                let name = &e[8..24];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(16)];
                if name != b"image.boot" {
                    continue;
                }
                // o <= 72 in a 128-byte entry.
                let u64_at = |o: usize| {
                    e[o..]
                        .first_chunk::<8>()
                        .map_or(0, |b| u64::from_le_bytes(*b))
                };
                let flags = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
                let (coff, csize, usize_) = (u64_at(56), u64_at(64), u64_at(72));
                if coff.checked_add(csize).is_none_or(|end| end > body_end)
                    || usize_ > MAX_INLINE_BOOTSTRAP
                {
                    return Err(bad("ToC entry outside the blob"));
                }
                let mut stored = zeroed(csize)?;
                blob.read_exact_at(&mut stored, coff).map_err(io)?;
                let boot = match flags {
                    1 if csize == usize_ => stored,
                    2 => {
                        let mut out = zeroed(usize_)?;
                        zstd_frame(&stored, &mut out).map_err(|e| bad(&e))?;
                        out
                    }
                    4 => {
                        let mut out = zeroed(usize_)?;
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
