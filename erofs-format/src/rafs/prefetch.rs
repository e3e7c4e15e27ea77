//! The prefetch table: nids to read ahead.

use super::limits::bad;
use crate::error::Error;
use zerocopy::FromBytes;
use zerocopy::little_endian::U32;

/// The prefetch table: `le32` nids, ended by the first 0 (unused trailing slots).
#[derive(Debug, Clone, Copy)]
pub struct PrefetchTable<'a> {
    entries: &'a [U32],
}

impl<'a> PrefetchTable<'a> {
    /// View `bytes` (a multiple of 4) as a prefetch table.
    ///
    /// # Errors
    ///
    /// [`Error::BadRafs`] if the length is not a multiple of 4.
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        let entries = <[U32]>::ref_from_bytes(bytes).map_err(|_| {
            bad(
                "prefetch table size not a multiple of 4",
                bytes.len() as u64,
            )
        })?;
        Ok(PrefetchTable { entries })
    }

    /// The raw slots, including trailing zeros.
    pub fn raw(&self) -> &'a [U32] {
        self.entries
    }

    /// The nids, up to the first 0 slot (nid 0 is never valid).
    pub fn nids(&self) -> impl Iterator<Item = u64> + 'a {
        self.entries
            .iter()
            .map(|n| u64::from(n.get()))
            .take_while(|&n| n != 0)
    }

    /// Whether the table names only the root (nydusd: "prefetch everything").
    pub fn is_root_only(&self, root_nid: u64) -> bool {
        let mut it = self.nids();
        it.next() == Some(root_nid) && it.next().is_none()
    }
}
