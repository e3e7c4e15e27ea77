//! [`ChunkStream`]: one chunk of a Nydus data blob decoded while its stored bytes arrive.
//!
//! A remote store hands a chunk's stored bytes over a piece at a time; a reader that wants
//! the chunk's first kilobytes need not wait for its last. A `ChunkStream` takes the stored
//! prefix that has arrived so far and decodes as much of the chunk as it determines,
//! straight into the caller's output buffer (the chunk's uncompressed bytes): zstd frames
//! with libzstd's streaming decoder, raw chunks by copying. lz4 blocks (one block, no
//! framing) and ZRan chunks (cut from shared gzip streams) are decoded whole
//! ([`BlobSource::chunk_stream`] gives no stream for them), and so is every chunk with a
//! digest to check, since no byte may be handed out before its chunk's digest matched.

use super::source::BlobSource;
use crate::error::Result;
#[cfg(feature = "zstd")]
use erofs_format::rafs::BlobCompressor;
use erofs_format::rafs::ChunkInfo;

/// Largest zstd window a stream accepts (2^24 bytes, the largest chunk size). The output is
/// the window (`ZSTD_d_stableOutBuffer`), so this bounds what libzstd accepts, not what it
/// allocates.
#[cfg(feature = "zstd")]
const MAX_WINDOW_LOG: u32 = 24;

/// Longest zstd frame header: a stream decodes nothing before it has it (or the whole
/// chunk), so a declared content size larger than the chunk's is refused first, as the
/// whole-chunk decoder refuses it.
#[cfg(feature = "zstd")]
const ZSTD_HEADER_MAX: usize = 18;

/// A chunk being decoded as its stored bytes arrive, so that a reader of its first bytes
/// need not wait for its last (zstd frames through libzstd's streaming decoder, raw chunks
/// copied; [`BlobSource::chunk_stream`] makes one). Feed it the stored prefix each time it
/// grows ([`ChunkStream::feed`]), read the decoded prefix
/// from the output buffer, and [`finish`](ChunkStream::finish) it once the whole stored
/// chunk was fed. The output equals [`BlobSource::decode_chunk`]'s byte for byte; a stream
/// that is bad or ends early is an [`Error::Corrupt`](crate::Error::Corrupt) (the decoded
/// prefix handed out before is what the stored bytes before the fault decode to).
pub struct ChunkStream {
    ci: u32,
    chunk: ChunkInfo,
    /// Stored bytes consumed.
    fed: usize,
    /// Output bytes final.
    decoded: usize,
    decoder: Decoder,
    /// Whether [`ChunkStream::finish`] found the chunk whole.
    finished: bool,
}

enum Decoder {
    Raw,
    #[cfg(feature = "zstd")]
    Zstd {
        dctx: Dctx,
        /// Whether the last frame fed ended (libzstd returned 0).
        frame_done: bool,
    },
}

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("chunk", &self.ci)
            .field("fed", &self.fed)
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

/// A chunk's zstd stream context: libzstd's, set to write straight into the chunk's output
/// (`ZSTD_d_stableOutBuffer`: no window buffer of its own) with windows of at most
/// [`MAX_WINDOW_LOG`]. A few are kept for reuse ([`POOL`]): a context is about 100 KiB
/// plus a block's input buffer, worth not allocating (and faulting in) per chunk.
#[cfg(feature = "zstd")]
struct Dctx(Option<zstd::zstd_safe::DCtx<'static>>);

/// Contexts kept for reuse, at most [`POOL_MAX`].
#[cfg(feature = "zstd")]
static POOL: std::sync::Mutex<Vec<zstd::zstd_safe::DCtx<'static>>> =
    std::sync::Mutex::new(Vec::new());

#[cfg(feature = "zstd")]
const POOL_MAX: usize = 4;

#[cfg(feature = "zstd")]
impl Dctx {
    /// A context from the pool (reset) or a new one; `None` if libzstd cannot make one.
    fn take() -> Option<Dctx> {
        use zstd::zstd_safe::{DCtx, DParameter, ResetDirective};
        let pooled = POOL.lock().ok().and_then(|mut p| p.pop());
        let dctx = match pooled {
            Some(mut d) => {
                d.reset(ResetDirective::SessionOnly).ok()?;
                d
            }
            None => {
                let mut d = DCtx::try_create()?;
                d.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
                    .ok()?;
                d.set_parameter(DParameter::StableOutBuffer(true)).ok()?;
                d
            }
        };
        // A pooled context keeps its parameters: a session reset leaves them.
        Some(Dctx(Some(dctx)))
    }

    fn get(&mut self) -> Option<&mut zstd::zstd_safe::DCtx<'static>> {
        self.0.as_mut()
    }
}

#[cfg(feature = "zstd")]
impl Drop for Dctx {
    fn drop(&mut self) {
        if let Some(d) = self.0.take()
            && let Ok(mut pool) = POOL.lock()
            && pool.len() < POOL_MAX
        {
            pool.push(d);
        }
    }
}

impl BlobSource {
    /// A stream decoding chunk `ci` as its stored bytes arrive, or `None` if that chunk is
    /// decoded whole only: lz4 blocks, ZRan chunks, and any chunk when digests are checked
    /// ([`BlobSource::with_digests`]) or zstd support is not built in.
    ///
    /// # Errors
    ///
    /// As [`BlobSource::chunk_infos`]; [`Error::Corrupt`](crate::Error::Corrupt) for a
    /// chunk index past the map.
    pub fn chunk_stream(&self, ci: u32) -> Result<Option<ChunkStream>> {
        let map = self.map()?;
        let chunk = *map
            .chunks
            .get(ci as usize)
            .ok_or_else(|| self.blob.blob_err(format!("no chunk {ci} in the blob")))?;
        if map.zran.is_some() || self.has_digests() {
            return Ok(None);
        }
        let decoder = if !chunk.compressed {
            Decoder::Raw
        } else {
            match self.blob.record.compressor() {
                #[cfg(feature = "zstd")]
                Some(BlobCompressor::Zstd) => {
                    let Some(dctx) = Dctx::take() else {
                        return Ok(None);
                    };
                    Decoder::Zstd {
                        dctx,
                        frame_done: false,
                    }
                }
                _ => return Ok(None),
            }
        };
        Ok(Some(ChunkStream {
            ci,
            chunk,
            fed: 0,
            decoded: 0,
            decoder,
            finished: false,
        }))
    }

    /// Keep chunk `ci`, decoded by a [`ChunkStream`] that finished, in the decoded-chunk
    /// cache (for a neighbouring read that needs the part of it outside this one).
    /// `data` must be the output `stream` decoded into; anything else is not kept.
    pub fn keep_decoded(&self, stream: &ChunkStream, data: std::sync::Arc<[u8]>) {
        if stream.finished && data.len() == stream.decoded {
            self.cache_put(stream.ci, data);
        }
    }
}

impl ChunkStream {
    /// The chunk's index in the blob.
    pub fn index(&self) -> u32 {
        self.ci
    }

    /// The chunk's record (its stored and uncompressed ranges).
    pub fn chunk(&self) -> &ChunkInfo {
        &self.chunk
    }

    /// How many bytes of the output are final.
    pub fn decoded(&self) -> usize {
        self.decoded
    }

    /// Decode what `stored` (the chunk's stored bytes from its first, as many as have
    /// arrived; at most the chunk's stored size; longer than the last call's) adds, into
    /// `out` (the chunk's uncompressed size; the same buffer, untouched by the caller,
    /// on every call). Returns how many bytes of `out` are final.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`](crate::Error::Corrupt) when the stored bytes cannot be the
    /// chunk's (a bad frame, more output than the chunk's size, more stored bytes than
    /// its stored size, an output buffer of the wrong size).
    pub fn feed(&mut self, src: &BlobSource, stored: &[u8], out: &mut [u8]) -> Result<usize> {
        let ci = self.ci;
        if out.len() != self.chunk.uncompressed_size as usize {
            return Err(src
                .blob
                .blob_err(format!("chunk {ci}: output of {} bytes", out.len())));
        }
        if stored.len() > self.chunk.compressed_size as usize {
            return Err(src.blob.blob_err(format!(
                "chunk {ci}: {} stored bytes for a chunk of {}",
                stored.len(),
                self.chunk.compressed_size
            )));
        }
        if stored.len() <= self.fed {
            return Ok(self.decoded);
        }
        let t0 = std::time::Instant::now();
        let r = self.feed_inner(src, stored, out);
        src.counters
            .decode_ns
            .add(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        r
    }

    // Without zstd, only raw chunks: `src` and `ci` name errors of zstd frames.
    #[cfg_attr(not(feature = "zstd"), allow(unused_variables))]
    fn feed_inner(&mut self, src: &BlobSource, stored: &[u8], out: &mut [u8]) -> Result<usize> {
        let ci = self.ci;
        match &mut self.decoder {
            Decoder::Raw => {
                // Raw chunks have stored size == uncompressed size (checked with the map).
                let n = stored.len().min(out.len());
                out[self.fed..n].copy_from_slice(&stored[self.fed..n]);
                self.fed = stored.len();
                self.decoded = n;
            }
            #[cfg(feature = "zstd")]
            Decoder::Zstd { dctx, frame_done } => {
                use zstd::zstd_safe::{
                    InBuffer, OutBuffer, get_error_name, get_frame_content_size,
                };
                let whole = stored.len() == self.chunk.compressed_size as usize;
                if self.fed == 0 {
                    if stored.len() < ZSTD_HEADER_MAX && !whole {
                        return Ok(self.decoded);
                    }
                    // A frame declaring more than the chunk's size: refused before libzstd
                    // sizes its buffer by it (the whole-chunk decoder refuses it too).
                    if let Ok(Some(size)) = get_frame_content_size(stored)
                        && size > out.len() as u64
                    {
                        return Err(src.blob.blob_err(format!(
                            "chunk {ci}: zstd frame of {size} bytes, not {}",
                            out.len()
                        )));
                    }
                }
                let mut input = InBuffer {
                    src: stored,
                    pos: self.fed,
                };
                let mut output = OutBuffer::around_pos(out, self.decoded);
                let Some(dctx) = dctx.get() else {
                    return Err(src.blob.blob_err(format!("chunk {ci}: zstd context gone")));
                };
                while input.pos < stored.len() {
                    let before = (input.pos, output.pos());
                    match dctx.decompress_stream(&mut output, &mut input) {
                        Ok(hint) => *frame_done = hint == 0,
                        Err(code) => {
                            return Err(src
                                .blob
                                .blob_err(format!("chunk {ci}: zstd: {}", get_error_name(code))));
                        }
                    }
                    if (input.pos, output.pos()) == before {
                        // The output is full and input is left: more than the chunk's size.
                        return Err(src.blob.blob_err(format!(
                            "chunk {ci}: zstd frame decodes to more than {} bytes",
                            self.chunk.uncompressed_size
                        )));
                    }
                }
                self.fed = input.pos;
                self.decoded = output.pos();
            }
        }
        Ok(self.decoded)
    }

    /// The whole stored chunk was fed: check that it decoded to exactly the chunk's size
    /// (and, for zstd, that its last frame ended).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`](crate::Error::Corrupt) for a stream that is short or ends early.
    pub fn finish(&mut self, src: &BlobSource) -> Result<()> {
        let ci = self.ci;
        let ended = match &self.decoder {
            Decoder::Raw => true,
            #[cfg(feature = "zstd")]
            Decoder::Zstd { frame_done, .. } => *frame_done,
        };
        if self.fed != self.chunk.compressed_size as usize {
            return Err(src.blob.blob_err(format!(
                "chunk {ci}: {} of {} stored bytes decoded",
                self.fed, self.chunk.compressed_size
            )));
        }
        if !ended || self.decoded != self.chunk.uncompressed_size as usize {
            return Err(src.blob.blob_err(format!(
                "chunk {ci}: stream ends early ({} of {} bytes decoded)",
                self.decoded, self.chunk.uncompressed_size
            )));
        }
        self.finished = true;
        // Counted as a fetch of its stored bytes and its bytes served (all of them, also
        // when part of the chunk lay outside the caller's read).
        src.counters.bytes_served.add(self.decoded as u64);
        src.counters.chunks_decoded.incr();
        src.counters.fetches.incr();
        src.counters.stored_bytes.add(self.fed as u64);
        Ok(())
    }
}
