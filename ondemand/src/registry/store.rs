//! [`RegistryStore`]: the [`BlobStore`] of one image in an OCI registry. Names are the
//! layers' digest hex strings (a Nydus blob id is its layer's sha256; a zran blob is the
//! original `.tar.gz` layer; an EROFS layer is served under its digest), plus the unpacked
//! Nydus bootstrap held in memory under its layer's digest.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;

use erofs_reader::Source;
use oci_lazy::{Blob, Client, Layer, Repository};

use crate::blob_store::{BlobStore, RangeRead, StoredBlob};

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
    memory: Arc<HashMap<Vec<u8>, Arc<[u8]>>>,
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
        }
    }

    /// The client (its counters: [`Client::stats`]).
    pub fn client(&self) -> &Client {
        &self.client
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

/// A registry blob as stored bytes.
struct RemoteBlob(Blob);

/// A registry error as the kernel must see it: `EIO` (with the message for the log).
fn read_error(e: oci_lazy::Error) -> io::Error {
    log::warn!("registry read failed: {e}");
    io::Error::from_raw_os_error(nix::libc::EIO)
}

impl Source for RemoteBlob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset).map_err(read_error)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.size())
    }
}

/// The engine's range reads as `oci-lazy`'s `(offset, buffer)` pairs.
fn as_ranges<'a>(reads: &'a mut [RangeRead<'_>]) -> Vec<(u64, &'a mut [u8])> {
    reads.iter_mut().map(|r| (r.offset, &mut *r.buf)).collect()
}

impl StoredBlob for RemoteBlob {
    fn read_ranges(&self, reads: &mut [RangeRead<'_>]) -> io::Result<()> {
        self.0
            .read_ranges(&mut as_ranges(reads))
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
        self.0
            .read_ranges_arriving(&mut as_ranges(reads), arrived)
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
        if let Some(bytes) = self.memory.get(name) {
            return Ok(Arc::new(MemoryBlob(bytes.clone())));
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
        Ok(Arc::new(RemoteBlob(self.client.blob_with_size(
            &self.repo,
            &layer.digest,
            layer.size,
        ))))
    }

    fn render_metrics(&self, out: &mut String) {
        render_counters(&self.client, out);
    }

    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        // Bootstraps are only ever in memory: a blob opened first finds them there.
        Ok(self.memory.keys().cloned().collect())
    }
}
