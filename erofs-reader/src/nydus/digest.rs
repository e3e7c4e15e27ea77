//! Chunk digests (BLAKE3 or SHA-256, as the blob says) and their hex form.

use erofs_format::rafs::{Digest, Digester};

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
