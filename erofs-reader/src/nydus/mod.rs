//! Nydus RAFS v6: the bootstrap's blob table, prefetch list and chunk digests
//! ([`RafsMeta`]), and [`BlobSource`], which presents a stored (compressed) Nydus data blob
//! as the uncompressed address space the bootstrap's chunk indexes point into.
//!
//! A RAFS v6 bootstrap is an EROFS image whose extra devices are Nydus data blobs. The
//! kernel (and this reader) address a blob device in its *uncompressed* space: chunk `k`
//! of the blob occupies `[uoff_k, uoff_k + usize_k)`, 4 KiB aligned, zeros between chunks.
//! The stored blob holds the chunks back to back, each raw or compressed (lz4_block or
//! zstd), followed by the chunk-info array that maps one space onto the other.
//! [`BlobSource`] reads that array once (lazily, on the first read), then answers a read of
//! uncompressed bytes by fetching and decompressing only the chunks the range touches,
//! keeping recently decoded chunks in a bounded cache, and (when asked) checking each
//! decoded chunk against its digest from the bootstrap's chunk table.
//!
//! `targz-ref` blobs are the other kind: the stored blob is the original `.tar.gz` layer,
//! and its separate meta blob adds, after the chunk infos, ZRan checkpoints into the gzip
//! stream ([`erofs_format::rafs::ZranTable`]). A chunk is then a slice of what one
//! checkpoint's gzip bytes inflate to; [`BlobSource`] fetches and inflates that context
//! (primed with its pending bits and 32 KiB dictionary) once for all the chunks of a read
//! that share it, and keeps the last few inflated contexts in a small bounded cache.
//!
//! Opening a RAFS v6 bootstrap with [`ImageBuilder::blob_dir`](crate::ImageBuilder::blob_dir)
//! wires a [`BlobSource`] for every blob not given explicitly, found in the directory under
//! its blob id (the device tag), so the whole `Image` API reads RAFS images. Blobs built with
//! `--blob-inline-meta` carry their bootstrap ([`inlined_bootstrap`], [`open_inline_blob`]);
//! their bootstrap names them with the placeholder id `"x" × 64`, resolved in the blob
//! directory by matching the blob meta header. Blobs whose chunk-info array lives in a
//! separate meta blob (feature SEPARATE) read it from `<blob_meta_digest hex>` in the same
//! directory ([`BlobSource::with_separate_meta`]): so do `targz-ref` (ZRAN) blobs, whose data
//! blob is the `.tar.gz` put in the directory under the blob id. Legacy stargz blobs (gzip
//! without ZRan tables) are [`Error::Unsupported`](crate::Error::Unsupported).
//!
//! ```no_run
//! use erofs_reader::ImageBuilder;
//! use erofs_reader::nydus::RafsMeta;
//! # fn main() -> Result<(), erofs_reader::Error> {
//! let image = ImageBuilder::open("bootstrap")?.blob_dir("blobs").build()?;
//! let data = image.read("/etc/os-release")?;
//! if let Some(rafs) = RafsMeta::from_image(&image)? {
//!     for blob in rafs.blobs() {
//!         println!("blob {} {}: {} chunks", blob.index, blob.id, blob.chunk_count);
//!     }
//!     // Decode and check every chunk of every blob against the bootstrap's digests.
//!     let report = rafs.verify_blobs(&image, "blobs".as_ref());
//!     assert!(report.errors.is_empty());
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | concept |
//! | --- | --- |
//! | `meta` | [`RafsMeta`]: blob table, chunk table and digests, prefetch list; blob checks; the blob-device provider |
//! | `blob_info` | [`BlobInfo`]: one blob as the bootstrap describes it |
//! | `blob_dir` | finding a blob's files in a directory |
//! | `inline` | bootstraps carried inside a blob (`--blob-inline-meta`) |
//! | `source` | [`BlobSource`]: a stored blob as its uncompressed space |
//! | `stored` | the stored blob, its meta blob and record, and errors naming it |
//! | `chunk_map` | the checked chunk-info array (and ZRan tables) of a blob |
//! | `read` | reads of the uncompressed space: chunk runs, parallel decode, ZRAN chunks |
//! | `cache` | bounded caches of decoded chunks and inflated ZRan contexts |
//! | `zran` | inflating one ZRan context (gzip random access) |
//! | `digest` | chunk digests |
//! | `stats` | [`BlobStats`] |
//! | `limits` | sizes and bounds |

mod blob_dir;
mod blob_info;
mod cache;
mod chunk_map;
mod digest;
mod inline;
mod limits;
mod meta;
mod read;
mod source;
mod stats;
mod stored;
mod stream;
mod zran;

// The hand-built blobs compress chunks with zstd.
#[cfg(all(test, feature = "zstd"))]
mod tests;
// Hand-built targz-ref blobs: a gzip file and a separate meta blob with ZRan tables.
#[cfg(all(test, feature = "deflate"))]
mod zran_tests;

pub use blob_info::BlobInfo;
pub use digest::digest;
pub use erofs_format::rafs::{
    BlobCompressor, BlobFeatures, Digest, Digester, RafsSuperFlags, ZranInflateContext,
};
pub use inline::{inlined_bootstrap, open_inline_blob};
pub use limits::{DEFAULT_CHUNK_CACHE_BYTES, ZRAN_CONTEXT_CACHE_BYTES};
pub(crate) use meta::add_blob_devices;
pub use meta::{ChunkRecord, RafsMeta, VerifyReport, is_rafs_bootstrap, parse_blob_table};
pub use source::BlobSource;
pub use stats::BlobStats;
pub use stream::ChunkStream;
