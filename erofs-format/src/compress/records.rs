//! The variable-length metadata records that follow the superblock.

use crate::error::Error;

/// The variable-length metadata records after the superblock (kernel-abi §1.5): at each
/// 4-byte aligned cursor a `le16` length (0 means 65536), then that many bytes.
///
/// Used for compression configuration records and long xattr name prefixes. The records
/// may cross block boundaries; this view needs them in one contiguous buffer.
#[derive(Debug, Clone)]
pub struct MetadataRecords<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> MetadataRecords<'a> {
    /// Records in `bytes`, the first at byte `start` (rounded up to 4). Offsets are counted
    /// from the start of `bytes`, which must itself be 4-byte aligned in the image (for
    /// example the whole image, or a block).
    pub fn new(bytes: &'a [u8], start: usize) -> Self {
        MetadataRecords { bytes, pos: start }
    }

    /// Where the next record will be looked for (before rounding).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Read the next record's body.
    ///
    /// # Errors
    ///
    /// [`Error::BadMetadataRecord`] if the length field or the body runs past the buffer.
    pub fn next_record(&mut self) -> Result<&'a [u8], Error> {
        let start = self
            .pos
            .checked_next_multiple_of(4)
            .ok_or(Error::Overflow {
                what: "metadata record",
            })?;
        let bad = |len: u32| Error::BadMetadataRecord {
            offset: start as u64,
            len,
        };
        let body_start = start.checked_add(2).ok_or(bad(0))?;
        let len_bytes = self.bytes.get(start..body_start).ok_or(bad(0))?;
        let len = match u16::from_le_bytes([len_bytes[0], len_bytes[1]]) {
            0 => 65536usize,
            n => usize::from(n),
        };
        let body_end = body_start.checked_add(len);
        let body = body_end
            .and_then(|e| self.bytes.get(body_start..e))
            .ok_or(bad(u32::try_from(len).unwrap_or(u32::MAX)))?;
        self.pos = body_end.unwrap_or(self.bytes.len()); // Some: the get above succeeded
        Ok(body)
    }
}

impl<'a> Iterator for MetadataRecords<'a> {
    type Item = Result<&'a [u8], Error>;

    /// Yields records until the buffer is exhausted; after an error, yields nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos.checked_next_multiple_of(4)?;
        if start >= self.bytes.len() {
            return None;
        }
        let r = self.next_record();
        if r.is_err() {
            self.pos = usize::MAX;
        }
        Some(r)
    }
}
