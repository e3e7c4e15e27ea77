//! [`BlobStats`]: what a [`BlobSource`](super::BlobSource) has done, from its counters.

use crate::counter::Counter;

/// Counters of a [`BlobSource`](super::BlobSource).
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
    /// Of [`decode_ns`](Self::decode_ns), the nanoseconds spent computing chunk digests to
    /// check them (summed over threads; 0 without digests).
    pub digest_ns: u64,
    /// ZRan contexts inflated (ZRAN blobs: each serves all the chunks cut from it).
    pub zran_inflates: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) reads: Counter,
    pub(super) bytes_served: Counter,
    pub(super) fetches: Counter,
    pub(super) stored_bytes: Counter,
    pub(super) chunks_decoded: Counter,
    pub(super) chunks_verified: Counter,
    pub(super) cache_hits: Counter,
    pub(super) fetch_ns: Counter,
    pub(super) decode_ns: Counter,
    pub(super) digest_ns: Counter,
    pub(super) zran_inflates: Counter,
}
