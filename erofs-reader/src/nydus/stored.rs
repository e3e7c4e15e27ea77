//! [`StoredBlob`]: the stored bytes of a Nydus blob (and of its separate meta blob) with
//! its blob table record, and the errors that name it.

use std::fmt;
use std::io;

use erofs_format::rafs::RafsV6Blob;

use crate::error::{Context, CorruptKind, Error};
use crate::source::Source;

/// A blob as stored: the data blob, its separate meta blob if any, and its record.
pub(super) struct StoredBlob {
    /// The stored (compressed) blob.
    pub(super) stored: Box<dyn Source>,
    /// The separate meta blob (feature SEPARATE), if given.
    pub(super) meta_source: Option<Box<dyn Source>>,
    /// The blob table record.
    pub(super) record: RafsV6Blob,
}

impl StoredBlob {
    /// The blob id, for messages.
    pub(super) fn name(&self) -> String {
        String::from_utf8_lossy(&self.record.blob_id)
            .trim_end_matches('\0')
            .to_string()
    }

    pub(super) fn blob_err(&self, what: impl fmt::Display) -> Error {
        Error::corrupt_as(
            CorruptKind::Blob,
            format!("blob {}: {what}", self.name()),
            Context::NONE,
        )
    }

    /// An error `e` reading the blob (or its meta): a read past the end is corruption
    /// (`past_end` says what was read), anything else an I/O error naming the blob.
    pub(super) fn read_err(&self, e: io::Error, past_end: impl fmt::Display) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.blob_err(past_end)
        } else {
            Error::Io {
                device: 0,
                source: io::Error::new(e.kind(), format!("blob {}: {e}", self.name())),
            }
        }
    }
}
