//! Finding a blob's files in a blob directory: by blob id, by meta digest for separate
//! meta blobs, by matching the blob meta header for inline-meta placeholders.

use super::blob_info::BlobInfo;
use super::inline::MAX_DIR_SCAN;
use super::source::BlobSource;
use crate::error::{Context, CorruptKind, Error, Result};
use crate::source::LazyFile;
use erofs_format::rafs::{BLOB_META_HEADER_SIZE, BlobCompressionContextHeader};
use std::path::Path;

/// The [`BlobSource`] for `blob` in `dir`: the file named by its id (for the
/// `--blob-inline-meta` placeholder id, the blob file in `dir` whose blob meta header matches
/// the record), and its separate meta blob if it has one.
pub(super) fn blob_from_dir(blob: &BlobInfo, dir: &Path) -> Result<BlobSource> {
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
        return Err(Error::corrupt_as(
            CorruptKind::Blob,
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
