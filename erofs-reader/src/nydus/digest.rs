//! Chunk digests (BLAKE3 or SHA-256, as the blob says), whole or over a chunk's output as
//! it is decoded, and their hex form.

use erofs_format::rafs::{Digest, Digester};

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of `data` with `algo`.
pub fn digest(algo: Option<Digester>, data: &[u8]) -> Option<Digest> {
    let mut h = Hasher::new(algo)?;
    h.update(data);
    Some(h.finalize())
}

/// A digest computed over bytes handed over in pieces (a chunk's output as a
/// [`ChunkStream`](super::ChunkStream) decodes it): the same digest as [`digest`] over
/// their concatenation.
pub(super) enum Hasher {
    // Boxed: BLAKE3's hasher keeps a stack of chaining values (~1.9 KiB).
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    /// A hasher for `algo`, or `None` for an unknown algorithm.
    pub(super) fn new(algo: Option<Digester>) -> Option<Self> {
        use sha2::Digest as _;
        Some(match algo? {
            Digester::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            Digester::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        })
    }

    /// Add `data` to what was hashed.
    pub(super) fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        match self {
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The digest of everything hashed so far (the hasher is left as it was).
    pub(super) fn finalize(&self) -> Digest {
        use sha2::Digest as _;
        match self {
            Hasher::Blake3(h) => *h.finalize().as_bytes(),
            Hasher::Sha256(h) => h.clone().finalize().into(),
        }
    }
}
