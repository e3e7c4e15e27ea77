//! Turning stored pcluster bytes into file bytes: the decompressors (one entry point,
//! [`decompress::decode`]) and the bounded cache of decoded pclusters shared by an image's
//! clones. Nothing here reads an image: callers hand in the stored bytes.

pub(crate) mod chunk;
pub(crate) mod decompress;
mod encoding;
pub(crate) mod pcluster_cache;

pub use encoding::Encoding;
