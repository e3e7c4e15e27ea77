//! [`RegistryStore`]: the [`BlobStore`] of one image in an OCI registry. Names are the
//! layers' digest hex strings (a Nydus blob id is its layer's sha256; a zran blob is the
//! original `.tar.gz` layer; an EROFS layer is served under its digest), plus the unpacked
//! Nydus bootstrap held in memory under its layer's digest.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erofs_reader::Source;
use erofs_reader::nydus::RafsMeta;
use oci_lazy::{Blob, Client, Layer, Repository};

use super::arrival::{Arrival, Promise};
use crate::blob_store::{BlobStore, RangeRead, StoredBlob};
use crate::ranges::RangeSet;

/// The blobs of one image in a registry, read lazily by byte ranges through `oci-lazy`.
///
/// A [`StoredBlob::read_ranges`] batch (a READ window, a fill ahead or a prefetch chunk
/// that spans several chunks) goes to [`Blob::read_ranges`]: adjacent ranges merge into
/// one request, the rest run as parallel range requests. Every read error reaches the
/// kernel as `EIO`; no short or unchecked byte is returned.
#[derive(Clone)]
pub struct RegistryStore {
    client: Client,
    repo: Repository,
    layers: Arc<HashMap<Vec<u8>, Layer>>,
    memory: Arc<HashMap<Vec<u8>, Arc<Arrival<Held>>>>,
    /// Ranges fetched ahead of their first read ([`RegistryStore::fetch_early`]), by name.
    early: Arc<Mutex<EarlyByName>>,
}

/// The early fetches of each layer.
type EarlyByName = HashMap<Vec<u8>, Vec<Arc<Early>>>;

/// A range of a blob fetched on a thread of its own before anyone reads it.
struct Early {
    range: Range<u64>,
    bytes: Arc<Arrival<Bytes>>,
}

/// Bytes fetched.
type Bytes = Arc<[u8]>;

/// The longest a read waits for an early fetch before it asks the registry itself.
const EARLY_WAIT: Duration = Duration::from_secs(30);

/// An early range is one request, but its bytes are handed to readers in pieces of at most
/// this many, each as soon as it has arrived: a read of the range's first chunk waits for
/// that chunk's bytes, not for the whole range.
const EARLY_PIECE: u64 = 128 << 10;

impl Early {
    /// The bytes, once fetched; `None` if the fetch failed (or took longer than
    /// [`EARLY_WAIT`]): the reader then fetches them itself.
    fn wait(&self) -> Option<Arc<[u8]>> {
        self.bytes.wait_within(EARLY_WAIT)?.ok()
    }
}

/// A blob held in memory (a Nydus bootstrap, unpacked and checked), perhaps still being
/// fetched: its bytes, and its parse when it is a RAFS bootstrap parsed already.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) bytes: Arc<[u8]>,
    pub(super) parsed: Option<(erofs_reader::Image, RafsMeta)>,
}

impl std::fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryStore")
            .field("repository", &self.repo.to_string())
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl RegistryStore {
    /// The `layers` of an image in `repo`, by digest hex, and `memory` blobs (names and
    /// bytes already fetched and checked, such as an unpacked bootstrap) that take
    /// precedence.
    pub fn new(
        client: Client,
        repo: Repository,
        layers: &[Layer],
        memory: Vec<(Vec<u8>, Arc<[u8]>)>,
    ) -> RegistryStore {
        let memory = memory
            .into_iter()
            .map(|(name, bytes)| {
                let held = Held {
                    bytes,
                    parsed: None,
                };
                (name, Arrival::ready(held))
            })
            .collect();
        RegistryStore::holding(client, repo, layers, memory)
    }

    /// [`new`](Self::new) with blobs held in memory that may still be on their way (a
    /// bootstrap fetched while the kernel mounts it): opening one waits for it.
    pub(super) fn holding(
        client: Client,
        repo: Repository,
        layers: &[Layer],
        memory: Vec<(Vec<u8>, Arc<Arrival<Held>>)>,
    ) -> RegistryStore {
        RegistryStore {
            client,
            repo,
            layers: Arc::new(
                layers
                    .iter()
                    .map(|l| (l.digest.hex().as_bytes().to_vec(), l.clone()))
                    .collect(),
            ),
            memory: Arc::new(memory.into_iter().collect()),
            early: Arc::default(),
        }
    }

    /// Fetch `range` of the layer `name` now, on a thread of its own, so that a read within
    /// it later (by this store or a clone) is served from memory, waiting for the fetch if
    /// it is still running. For what is certainly read soon and whose place is known before
    /// the kernel asks, such as a Nydus blob's chunk map (read when the kernel opens the
    /// blob, right after the mount): its round trip then overlaps the mount. The bytes are
    /// those the registry sent for the range, as for any read; a failed fetch leaves the
    /// read to ask the registry itself. Ranges longer than 16 MiB, past the layer's size or
    /// of unknown layers are ignored.
    pub fn fetch_early(&self, name: &[u8], range: Range<u64>) {
        self.fetch_early_ranges(name, vec![range], 1, 0);
    }

    /// [`fetch_early`](Self::fetch_early) of several ranges of the layer `name`, on at most
    /// `connections` threads: thread `i` fetches ranges `i`, `i + connections`, ... one
    /// request after the other (its connection reused), so the ranges arrive roughly in the
    /// order given. Every range is registered before the first request leaves, so a read
    /// within any of them waits for it instead of asking the registry again; a read made
    /// before this call, or not within one range, asks the registry itself. A range's bytes
    /// are handed over in pieces of 128 KiB as they arrive, so a read waits only for
    /// the pieces it covers. The threads run at `nice` (0 to 19; 0: as the caller's), so that
    /// on a busy CPU what runs beside them (the mount, the readers) comes first.
    pub fn fetch_early_ranges(
        &self,
        name: &[u8],
        ranges: Vec<Range<u64>>,
        connections: usize,
        nice: i32,
    ) {
        let Some(layer) = self.layers.get(name) else {
            return;
        };
        let mut early = Vec::new();
        let mut fetches: Vec<(Range<u64>, Vec<Piece>)> = Vec::new();
        for range in ranges {
            if range.start < range.end
                && range.end <= layer.size
                && range.end - range.start <= 16 << 20
            {
                let mut pieces = Vec::new();
                let mut pos = range.start;
                while pos < range.end {
                    let end = range.end.min(pos + EARLY_PIECE);
                    let (bytes, promise) = Arrival::pending();
                    early.push(Arc::new(Early {
                        range: pos..end,
                        bytes,
                    }));
                    pieces.push(Piece {
                        range: pos..end,
                        promise: Some(promise),
                        bytes: Vec::new(),
                        got: RangeSet::new(),
                    });
                    pos = end;
                }
                fetches.push((range, pieces));
            }
        }
        if early.is_empty() {
            return;
        }
        self.early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_vec())
            .or_default()
            .extend(early);
        let n = connections.clamp(1, fetches.len());
        let mut shares: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        for (i, f) in fetches.into_iter().enumerate() {
            shares[i % n].push(f);
        }
        for mine in shares {
            let blob = self
                .client
                .blob_with_size(&self.repo, &layer.digest, layer.size);
            // A thread that cannot start drops its promises: their readers fetch for
            // themselves.
            let _ = std::thread::Builder::new()
                .name("early-fetch".into())
                .spawn(move || {
                    if nice > 0 {
                        let _ = crate::sys::set_thread_nice(nice.min(19));
                    }
                    for (range, pieces) in mine {
                        fetch_in_pieces(&blob, range, pieces);
                    }
                });
        }
    }

    /// Open up to `connections` connections to the registry now, on a thread of its own,
    /// and leave them idle in the client's pool for the reads to come: `connections`
    /// 1-byte range requests of the layer `name` at once ([`Blob::read_ranges`] of ranges
    /// spread over the layer, so none merge; authenticated and redirected as every read,
    /// each body read to its end so that its connection stays in the pool). For the time
    /// the image mounts, when the link is idle: the first burst of READs then finds its
    /// connections (and their TCP and TLS handshakes) ready. A small layer gets fewer (the
    /// ranges stay further apart than the client merges); at most the client's
    /// `parallel`, which the pool keeps twice over. Nothing for an unknown or empty
    /// layer. The thread and its requests' threads run at nice 19, behind the mount. Returns
    /// the thread, answering the requests' result; dropping it detaches.
    pub fn warm_connections(
        &self,
        name: &[u8],
        connections: usize,
    ) -> Option<std::thread::JoinHandle<oci_lazy::Result<usize>>> {
        let layer = self.layers.get(name)?;
        let gap = self.client.config().merge_gap.saturating_add(1);
        let fit = usize::try_from(layer.size / gap.max(1)).unwrap_or(usize::MAX);
        let n = connections
            .min(self.client.config().parallel)
            .min(fit.max(1));
        if n == 0 || layer.size == 0 {
            return None;
        }
        let blob = self
            .client
            .blob_with_size(&self.repo, &layer.digest, layer.size);
        let step = layer.size / n as u64;
        std::thread::Builder::new()
            .name("warm-connections".into())
            .spawn(move || {
                // Behind the mount and the file map on a busy CPU (its threads inherit it).
                let _ = crate::sys::set_thread_nice(19);
                let mut bytes = vec![0u8; n];
                let mut ranges: Vec<(u64, &mut [u8])> = bytes
                    .chunks_mut(1)
                    .enumerate()
                    .map(|(i, b)| (i as u64 * step, b))
                    .collect();
                let started = std::time::Instant::now();
                let result = blob.read_ranges(&mut ranges).map(|()| n);
                log::debug!(
                    "warm connections: {n} requests in {:?}: {result:?}",
                    started.elapsed()
                );
                result
            })
            .ok()
    }

    /// The bootstrap held in memory under `name`, parsed when it was fetched (waiting for
    /// it if it is still on its way); `None` if there is none, or its fetch failed.
    pub(super) fn parsed(&self, name: &[u8]) -> Option<(erofs_reader::Image, RafsMeta)> {
        self.memory.get(name)?.wait().ok()?.parsed
    }

    /// The size of the layer `name`, if it is one of the image's.
    pub(super) fn layer_size(&self, name: &[u8]) -> Option<u64> {
        self.layers.get(name).map(|l| l.size)
    }

    /// The client (its counters: [`Client::stats`]).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// One piece of an early range ([`EARLY_PIECE`]): its promise, kept once all of its bytes
/// have arrived.
struct Piece {
    range: Range<u64>,
    promise: Option<Promise<Bytes>>,
    /// Its bytes (allocated with the first part), and which of them arrived (blob offsets).
    bytes: Vec<u8>,
    got: RangeSet,
}

impl Piece {
    /// Take the part of `bytes` (at `offset` of the blob) that falls in this piece; once the
    /// piece is whole, keep its promise with its bytes. A retry hands parts over again: the
    /// same bytes, written over themselves.
    fn take(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset.saturating_add(bytes.len() as u64);
        let (from, to) = (offset.max(self.range.start), end.min(self.range.end));
        if from >= to || self.promise.is_none() {
            return;
        }
        if self.bytes.is_empty() {
            self.bytes = vec![0u8; (self.range.end - self.range.start) as usize];
        }
        // Within `bytes` (offset <= from < to <= end) and the piece.
        let at = (from - self.range.start) as usize;
        self.bytes[at..at + (to - from) as usize]
            .copy_from_slice(&bytes[(from - offset) as usize..(to - offset) as usize]);
        self.got.insert(from..to);
        if self.got.gaps(self.range.clone()).is_empty()
            && let Some(p) = self.promise.take()
        {
            p.keep(std::mem::take(&mut self.bytes).into());
        }
    }
}

/// Fetch `range` of `blob` in one request, keeping each of its `pieces`' promises as soon
/// as the piece's bytes have arrived; on an error, the pieces not yet kept fail (their
/// readers ask the registry themselves).
fn fetch_in_pieces(blob: &Blob, range: Range<u64>, pieces: Vec<Piece>) {
    let pieces = Mutex::new(pieces);
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    let arrived = |offset: u64, bytes: &[u8]| {
        let mut pieces = pieces.lock().unwrap_or_else(|p| p.into_inner());
        // Pieces are in order and disjoint: those the part overlaps.
        let end = offset.saturating_add(bytes.len() as u64);
        for piece in pieces
            .iter_mut()
            .filter(|p| p.range.start < end && offset < p.range.end)
        {
            piece.take(offset, bytes);
        }
    };
    let result = blob.read_ranges_arriving(&mut [(range.start, &mut buf[..])], &arrived);
    let pieces = pieces.into_inner().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(()) => {
            // Every byte was handed over, so every piece was kept; a piece that was not
            // (a part missed) is kept from the filled buffer.
            for mut piece in pieces {
                if let Some(p) = piece.promise.take() {
                    let (s, e) = (
                        piece.range.start - range.start,
                        piece.range.end - range.start,
                    );
                    p.keep(buf[s as usize..e as usize].into());
                }
            }
        }
        Err(err) => {
            log::debug!("early fetch of {range:?} failed: {err}");
            for mut piece in pieces {
                if let Some(p) = piece.promise.take() {
                    p.fail(err.to_string());
                }
            }
        }
    }
}

/// The client's counters as Prometheus text: `erofs_ondemand_registry_requests_total`,
/// `erofs_ondemand_registry_bytes_total`, `erofs_ondemand_registry_retries_total`.
fn render_counters(client: &Client, out: &mut String) {
    {
        let s = client.stats();
        for (name, help, value) in [
            (
                "erofs_ondemand_registry_requests_total",
                "HTTP requests sent to the registry (tokens and redirects included).",
                s.requests,
            ),
            (
                "erofs_ondemand_registry_bytes_total",
                "Response body bytes received from the registry.",
                s.bytes,
            ),
            (
                "erofs_ondemand_registry_retries_total",
                "Registry requests sent again (connection errors, cut bodies, 429, 5xx).",
                s.retries,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }
}

/// What [`StoredBlob::read_ranges_arriving`] calls with each part of a range.
type Arrived<'a> = &'a (dyn Fn(u64, &[u8]) + Sync);

/// A registry blob as stored bytes, with the store's early fetches (looked up at each
/// read, so ranges fetched early after the open count too) and its name there.
struct RemoteBlob(Blob, Arc<Mutex<EarlyByName>>, Vec<u8>);

impl RemoteBlob {
    /// Serve each of `reads` that lies within the early fetches (one, or several back to
    /// back: a range's pieces, or a batch's merged range over two) from them; which were
    /// served. With `arrived`, each piece's part of a read is handed over as soon as that
    /// piece is in (a read's first chunk can be decoded while its last is on the wire). A
    /// read not within them, or whose fetch failed, is left to the registry (which hands
    /// over again what was handed over: the same bytes).
    fn served_early(&self, reads: &mut [RangeRead<'_>], arrived: Option<Arrived<'_>>) -> Vec<bool> {
        let mut served = vec![false; reads.len()];
        let early = {
            let all = self.1.lock().unwrap_or_else(|p| p.into_inner());
            match all.get(&self.2) {
                Some(list) if !list.is_empty() => list.clone(),
                _ => return served,
            }
        };
        'reads: for (r, done) in reads.iter_mut().zip(&mut served) {
            // The fetches that cover it, in order.
            let end = r.offset.saturating_add(r.buf.len() as u64);
            let mut pos = r.offset;
            let mut covering = Vec::new();
            while pos < end {
                let Some(e) = early
                    .iter()
                    .find(|e| e.range.start <= pos && pos < e.range.end)
                else {
                    continue 'reads;
                };
                covering.push(Arc::clone(e));
                pos = e.range.end;
            }
            for e in &covering {
                let Some(b) = e.wait() else {
                    continue 'reads;
                };
                let from = r.offset.max(e.range.start);
                let to = end.min(e.range.end);
                let src = &b[(from - e.range.start) as usize..(to - e.range.start) as usize];
                let dst = &mut r.buf[(from - r.offset) as usize..(to - r.offset) as usize];
                dst.copy_from_slice(src);
                if let Some(arrived) = arrived {
                    arrived(from, dst);
                }
            }
            *done = true;
        }
        served
    }
}

/// A registry error as the kernel must see it: `EIO` (with the message for the log).
fn read_error(e: oci_lazy::Error) -> io::Error {
    log::warn!("registry read failed: {e}");
    io::Error::from_raw_os_error(nix::libc::EIO)
}

impl Source for RemoteBlob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.served_early(
            &mut [RangeRead {
                offset,
                buf: &mut *buf,
            }],
            None,
        )[0]
        {
            return Ok(());
        }
        self.0.read_exact_at(buf, offset).map_err(read_error)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.size())
    }
}

/// The engine's range reads not `served` as `oci-lazy`'s `(offset, buffer)` pairs.
fn as_ranges<'a>(reads: &'a mut [RangeRead<'_>], served: &[bool]) -> Vec<(u64, &'a mut [u8])> {
    reads
        .iter_mut()
        .zip(served)
        .filter(|(_, s)| !**s)
        .map(|(r, _)| (r.offset, &mut *r.buf))
        .collect()
}

impl StoredBlob for RemoteBlob {
    fn read_ranges(&self, reads: &mut [RangeRead<'_>]) -> io::Result<()> {
        let served = self.served_early(reads, None);
        if served.iter().all(|&s| s) {
            return Ok(());
        }
        self.0
            .read_ranges(&mut as_ranges(reads, &served))
            .map_err(read_error)
    }

    fn streams(&self) -> bool {
        true
    }

    fn read_ranges_arriving(
        &self,
        reads: &mut [RangeRead<'_>],
        arrived: &(dyn Fn(u64, &[u8]) + Sync),
    ) -> io::Result<()> {
        let served = self.served_early(reads, Some(arrived));
        if served.iter().all(|&s| s) {
            return Ok(());
        }
        self.0
            .read_ranges_arriving(&mut as_ranges(reads, &served), arrived)
            .map_err(read_error)
    }
}

/// Bytes held in memory (an unpacked bootstrap).
struct MemoryBlob(Arc<[u8]>);

impl Source for MemoryBlob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(&self.0) as u64)
    }
}

impl StoredBlob for MemoryBlob {}

impl BlobStore for RegistryStore {
    fn open(&self, name: &[u8]) -> io::Result<Arc<dyn StoredBlob>> {
        if let Some(held) = self.memory.get(name) {
            // A bootstrap still on its way: the kernel's OPEN waits for it (the fetch ends
            // with the bytes or an error, in the client's time limits).
            return match held.wait() {
                Ok(held) => Ok(Arc::new(MemoryBlob(held.bytes))),
                Err(why) => Err(io::Error::other(format!("{}: {why}", name.escape_ascii()))),
            };
        }
        let layer = self.layers.get(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} is not a layer of the image in {}",
                    name.escape_ascii(),
                    self.repo
                ),
            )
        })?;
        Ok(Arc::new(RemoteBlob(
            self.client
                .blob_with_size(&self.repo, &layer.digest, layer.size),
            Arc::clone(&self.early),
            name.to_vec(),
        )))
    }

    fn render_metrics(&self, out: &mut String) {
        render_counters(&self.client, out);
    }

    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        // Bootstraps are only ever in memory: a blob opened first finds them there.
        Ok(self.memory.keys().cloned().collect())
    }
}
