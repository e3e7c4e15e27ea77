//! Images served straight from an OCI registry, behind either kernel transport.
//!
//! [`RemoteImage::resolve`] turns a reference into what the kernel mounts and a
//! [`RegistryStore`] (a [`BlobStore`](crate::BlobStore) whose blobs are read lazily by byte
//! ranges through `oci-lazy`). [`RemoteImage::server`] is a
//! [`RafsServer`] over that store, so cachefiles ([`crate::Session`]) and fanotify
//! ([`crate::FanotifyDaemon`]) serve it with no other change. Two image kinds:
//!
//! - **Nydus RAFS v6** as nydusify pushes it: the bootstrap layer (a gzip tar holding
//!   `image/image.boot`, annotation `containerd.io/snapshot/nydus-bootstrap`) is fetched whole,
//!   digest-checked and unpacked into memory; the kernel opens it under its layer's digest
//!   hex, then each blob device under its blob id, which is its layer's digest hex. Zran
//!   (targz-ref) blobs are the original `.tar.gz` layers, their separate meta blobs layers
//!   too. One mount.
//! - **containerd native EROFS layers** (`application/vnd.erofs.layer.v1`): each layer is a
//!   whole EROFS image (`mkfs.erofs --tar=f --aufs`: whiteouts are overlayfs whiteouts, opaque
//!   directories carry `trusted.overlay.opaque`), served lazily as an object of its own under
//!   its digest hex (cachefiles: that is the mount's `fsid`; fanotify: the name of its sparse
//!   backing file). The rootfs is the overlay of the layers, bottom layer lowest.
//!
//! [`Rootfs::mount`] mounts either kind on a target with a transport's own way of mounting
//! one object (`mount -t erofs none -o fsid=KEY` for cachefiles, a file-backed mount of the
//! backing file for fanotify) and [`Rootfs::unmount`] takes it all down again.
//!
//! ```no_run
//! use ondemand::registry::{RemoteImage, lazy_config};
//! use oci_lazy::{Client, Config};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(lazy_config(Config::default()))?;
//! let image = RemoteImage::resolve(&client, &"127.0.0.1:5000/app:v1".parse()?)?;
//! println!("{}: {:?}, {} bytes of layers", image.reference, image.kind, image.size);
//! let server = image.server(); // serve it: Session::new(server) or FanotifyDaemon::new(server, ..)
//! # let _ = server; Ok(()) }
//! ```

mod arrival;
mod store;

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use erofs_reader::ImageBuilder;
use erofs_reader::nydus::RafsMeta;
use oci_lazy::{Client, Config, Digest, Layer, LazyLayout, Reference, RunConfig};

use crate::predict::{FileMap, Rules};
use crate::rafs::RafsServer;
use arrival::Arrival;

pub use crate::trace_early::DEFAULT_EARLY_GAP;
pub use store::RegistryStore;

/// Connections [`RemoteImage::fetch_trace_early`] fetches one blob's ranges on by default:
/// three (each range after range, taking every third in first-access order). In the
/// container start (20 ms / 200 Mbit/s) three beat both of two identical one-connection
/// replays in 12 of 14 VM runs, 6 of 7 in each order (median 0.94× their mean), where one
/// connection left the link two-thirds idle; four had slowed the mount they overlap.
pub const DEFAULT_EARLY_CONNECTIONS: usize = 3;

pub use oci_lazy::{
    BOOTSTRAP_PATH, EROFS_LAYER, MAX_BOOTSTRAP, NYDUS_BOOTSTRAP, NYDUS_FEATURE, unpack_bootstrap,
};

/// `config` preferring, in an index, the manifest marked as a Nydus image for this platform
/// (the one that can be served lazily): [`Config::prefer_nydus`].
pub fn lazy_config(config: Config) -> Config {
    config.prefer_nydus()
}

/// What the kernel mounts for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageKind {
    /// One RAFS v6 mount: the bootstrap object, then each blob device by blob id.
    Nydus {
        /// The bootstrap's object key (its layer's digest hex).
        bootstrap: String,
        /// The blob ids, in the bootstrap's device-table order.
        blobs: Vec<String>,
    },
    /// One EROFS mount per layer (object key: the layer's digest hex), overlaid.
    ErofsLayers {
        /// The layers' keys, bottom first.
        layers: Vec<String>,
    },
}

/// Why an image cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The registry's error (reference, auth, transport, digest).
    #[error(transparent)]
    Registry(#[from] oci_lazy::Error),
    /// Neither EROFS layers nor a Nydus bootstrap layer.
    #[error(
        "{reference}: neither EROFS layers ({EROFS_LAYER}) nor a Nydus bootstrap layer; layer media types: {media_types:?}"
    )]
    NotLazy {
        /// The reference.
        reference: String,
        /// The media types of its layers.
        media_types: Vec<String>,
    },
    /// The bootstrap layer is not a usable RAFS v6 bootstrap, or names blobs that are not
    /// layers of the image.
    #[error("{reference}: bootstrap layer {digest}: {what}")]
    Bootstrap {
        /// The reference.
        reference: String,
        /// The bootstrap layer's digest.
        digest: String,
        /// What is wrong.
        what: String,
    },
}

impl From<ResolveError> for io::Error {
    fn from(e: ResolveError) -> io::Error {
        match e {
            ResolveError::Registry(e) => e.into(),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// An image resolved in its registry: what to mount, and the store that serves it.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// The reference resolved.
    pub reference: Reference,
    /// The manifest's digest.
    pub manifest: Digest,
    /// What the kernel mounts.
    pub kind: ImageKind,
    /// The sum of the layers' sizes (what a full pull fetches), in bytes.
    pub size: u64,
    store: RegistryStore,
    /// A Nydus image's bootstrap, unpacked and parsed (once: the server and the file map
    /// use this).
    bootstrap: Option<(erofs_reader::Image, RafsMeta)>,
    /// A Nydus image's blobs (id, blob table record).
    chunk_maps: Vec<(String, erofs_format::rafs::RafsV6Blob)>,
    /// The image's configuration, if asked for ([`RemoteImage::resolve_with`]).
    run_config: Option<Arc<PendingConfig>>,
}

/// An image configuration being fetched, then fetched.
#[derive(Debug)]
struct PendingConfig(Mutex<ConfigState>);

#[derive(Debug)]
enum ConfigState {
    Fetching(std::thread::JoinHandle<Result<RunConfig, String>>),
    Done(Result<RunConfig, String>),
}

/// What [`RemoteImage::start_resolve`] fetches besides the manifest and a Nydus bootstrap
/// (default: nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResolveOptions {
    config: bool,
    chunk_maps_early: bool,
}

impl ResolveOptions {
    /// The image's configuration, on a thread of its own ([`RemoteImage::run_config`]; as
    /// [`RemoteImage::resolve_with`]).
    pub fn with_config(mut self, on: bool) -> Self {
        self.config = on;
        self
    }

    /// Each Nydus blob's chunk map, as soon as the bootstrap names it and before the
    /// bootstrap is served ([`RemoteImage::fetch_chunk_maps_early`]): a mount started
    /// before the bootstrap was in opens the blobs right after reading it, and finds them
    /// on their way.
    pub fn with_chunk_maps_early(mut self, on: bool) -> Self {
        self.chunk_maps_early = on;
        self
    }
}

/// An image whose manifest is resolved while its Nydus bootstrap layer is still being
/// fetched ([`RemoteImage::start_resolve`]). Its [`server`](Self::server) can serve, and the
/// kernel mount, its [`mount_keys`](Self::mount_keys) already: the OPEN of the bootstrap
/// waits for its bytes (and fails with `EIO` if their fetch fails, so the mount fails and
/// does not hang); [`finish`](Self::finish) waits for the fetch and gives the
/// [`RemoteImage`] (sharing this store) or the typed error.
#[derive(Debug)]
pub struct ResolvingImage {
    /// The reference resolved.
    pub reference: Reference,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The sum of the layers' sizes (what a full pull fetches), in bytes.
    pub size: u64,
    store: RegistryStore,
    run_config: Option<Arc<PendingConfig>>,
    rest: Rest,
}

/// What a [`ResolvingImage`] still waits for.
#[derive(Debug)]
enum Rest {
    /// Nothing (EROFS layers).
    Done(ImageKind),
    /// A Nydus bootstrap (its key): the thread fetching, checking and parsing it.
    Fetching(
        String,
        std::thread::JoinHandle<Result<NydusParts, ResolveError>>,
    ),
}

/// A Nydus image's parts known once its bootstrap is in: what to mount, each blob's id and
/// record, the bootstrap parsed.
type NydusParts = (
    ImageKind,
    Vec<(String, erofs_format::rafs::RafsV6Blob)>,
    (erofs_reader::Image, RafsMeta),
);

impl ResolvingImage {
    /// The object keys the kernel mounts (as [`RemoteImage::mount_keys`]): a Nydus image's
    /// bootstrap, known from the manifest, or the EROFS layers bottom first.
    pub fn mount_keys(&self) -> Vec<&str> {
        match &self.rest {
            Rest::Fetching(key, _) => vec![key.as_str()],
            Rest::Done(ImageKind::Nydus { bootstrap, .. }) => vec![bootstrap.as_str()],
            Rest::Done(ImageKind::ErofsLayers { layers }) => {
                layers.iter().map(String::as_str).collect()
            }
        }
    }

    /// Whether the image is a Nydus RAFS v6 image (else EROFS layers).
    pub fn is_nydus(&self) -> bool {
        matches!(
            self.rest,
            Rest::Fetching(..) | Rest::Done(ImageKind::Nydus { .. })
        )
    }

    /// The store of the image's blobs (shared with the [`RemoteImage`] to come).
    pub fn store(&self) -> &RegistryStore {
        &self.store
    }

    /// A server for the image, as [`RemoteImage::server`]'s; the kernel's OPEN of a Nydus
    /// bootstrap waits until it is fetched, checked and parsed (`EIO` if that failed).
    pub fn server(&self) -> RafsServer<RegistryStore> {
        let bootstrap = match &self.rest {
            Rest::Fetching(key, _) => Some(key.as_str()),
            Rest::Done(ImageKind::Nydus { bootstrap, .. }) => Some(bootstrap.as_str()),
            Rest::Done(ImageKind::ErofsLayers { .. }) => None,
        };
        server(&self.store, bootstrap)
    }

    /// Wait for the bootstrap's fetch: the image resolved.
    ///
    /// # Errors
    ///
    /// [`ResolveError`] of the bootstrap layer (registry errors, its digest, its contents).
    pub fn finish(self) -> Result<RemoteImage, ResolveError> {
        let (kind, chunk_maps, bootstrap) = match self.rest {
            Rest::Done(kind) => (kind, Vec::new(), None),
            Rest::Fetching(key, fetch) => {
                let (kind, records, parsed) =
                    fetch.join().map_err(|_| ResolveError::Bootstrap {
                        reference: self.reference.to_string(),
                        digest: key,
                        what: "its fetch's thread panicked".into(),
                    })??;
                (kind, records, Some(parsed))
            }
        };
        Ok(RemoteImage {
            reference: self.reference,
            manifest: self.manifest,
            kind,
            size: self.size,
            store: self.store,
            bootstrap,
            chunk_maps,
            run_config: self.run_config,
        })
    }
}

impl RemoteImage {
    /// Resolve `reference` (manifest for this platform; for a Nydus image the bootstrap layer
    /// is fetched whole, digest-checked and unpacked, and its blob table checked against the
    /// layers).
    ///
    /// # Errors
    ///
    /// [`ResolveError`].
    pub fn resolve(client: &Client, reference: &Reference) -> Result<RemoteImage, ResolveError> {
        RemoteImage::resolve_with(client, reference, false)
    }

    /// [`resolve`](Self::resolve), and with `config`, the image's configuration (what it
    /// runs: [`run_config`](Self::run_config)) fetched on a thread of its own in parallel
    /// with the bootstrap layer: one small request, never waited for here.
    ///
    /// # Errors
    ///
    /// [`ResolveError`] (a failed configuration fetch is not one: it is
    /// [`run_config`](Self::run_config)'s).
    pub fn resolve_with(
        client: &Client,
        reference: &Reference,
        config: bool,
    ) -> Result<RemoteImage, ResolveError> {
        let options = ResolveOptions::default().with_config(config);
        RemoteImage::start_resolve(client, reference, options)?.finish()
    }

    /// Resolve the manifest of `reference` and start fetching the rest on a thread of its
    /// own (a Nydus image's bootstrap layer, as [`resolve`](Self::resolve) fetches it): what
    /// comes back is enough to serve and mount the image ([`ResolvingImage::server`],
    /// [`ResolvingImage::mount_keys`]) while the bootstrap is still on the wire, the kernel's
    /// OPEN of the bootstrap waiting for it; [`ResolvingImage::finish`] then gives the
    /// [`RemoteImage`], or the bootstrap's [`ResolveError`].
    ///
    /// # Errors
    ///
    /// [`ResolveError`] of the manifest (registry errors, [`ResolveError::NotLazy`]).
    pub fn start_resolve(
        client: &Client,
        reference: &Reference,
        options: ResolveOptions,
    ) -> Result<ResolvingImage, ResolveError> {
        let image = client.resolve(reference)?;
        let run_config = options.config.then(|| {
            let (client, repo, digest) = (
                client.clone(),
                reference.repository().clone(),
                image.config.digest.clone(),
            );
            let fetch = move || -> Result<RunConfig, String> {
                let bytes = client
                    .fetch_blob(&repo, &digest, oci_lazy::MAX_IMAGE_CONFIG)
                    .map_err(|e| e.to_string())?;
                RunConfig::parse(&bytes).map_err(|e| e.to_string())
            };
            Arc::new(PendingConfig(Mutex::new(match std::thread::Builder::new()
                .name("image-config".into())
                .spawn(fetch)
            {
                Ok(t) => ConfigState::Fetching(t),
                Err(e) => ConfigState::Done(Err(e.to_string())),
            })))
        });
        let size = image.layers.iter().map(|l| l.size).sum();
        let repo = reference.repository().clone();
        log::info!(
            "{reference}: manifest {}, {} layers, {size} bytes",
            image.digest,
            image.layers.len()
        );
        let (store, rest) = match image.lazy_layout() {
            Some(LazyLayout::Nydus { bootstrap: boot }) => {
                let key = boot.digest.hex().to_owned();
                let (held, promise) = Arrival::pending();
                let memory = vec![(key.as_bytes().to_vec(), held)];
                let store = RegistryStore::holding(client.clone(), repo, &image.layers, memory);
                let (client, named, layer, layers, theirs) = (
                    client.clone(),
                    reference.clone(),
                    boot.clone(),
                    image.layers.clone(),
                    store.clone(),
                );
                let fetch = move || match nydus(&client, &named, &layer, &layers) {
                    Ok((kind, bytes, records, parsed)) => {
                        // Registered before the bootstrap is handed out: the kernel opens
                        // the blobs only after reading it, so their opens find these.
                        if options.chunk_maps_early {
                            fetch_chunk_maps(&theirs, &records);
                        }
                        promise.keep(store::Held {
                            bytes,
                            parsed: Some(parsed.clone()),
                        });
                        Ok((kind, records, parsed))
                    }
                    Err(e) => {
                        promise.fail(e.to_string());
                        Err(e)
                    }
                };
                let spawned = std::thread::Builder::new()
                    .name("bootstrap".into())
                    .spawn(fetch)
                    .map_err(|e| ResolveError::Bootstrap {
                        reference: reference.to_string(),
                        digest: boot.digest.to_string(),
                        what: format!("cannot start its fetch: {e}"),
                    })?;
                (store, Rest::Fetching(key, spawned))
            }
            Some(LazyLayout::Erofs) => {
                let layers = image.erofs_layers().into_iter();
                let layers = layers.map(|i| image.layers[i].digest.hex().to_owned());
                let kind = ImageKind::ErofsLayers {
                    layers: layers.collect(),
                };
                let store = RegistryStore::new(client.clone(), repo, &image.layers, Vec::new());
                (store, Rest::Done(kind))
            }
            None => {
                return Err(ResolveError::NotLazy {
                    reference: reference.to_string(),
                    media_types: image.layers.iter().map(|l| l.media_type.clone()).collect(),
                });
            }
        };
        Ok(ResolvingImage {
            reference: reference.clone(),
            manifest: image.digest,
            size,
            store,
            run_config,
            rest,
        })
    }

    /// What the image's configuration says to run, waiting for its fetch
    /// ([`resolve_with`](Self::resolve_with)); `None` if it was not asked for.
    ///
    /// # Errors
    ///
    /// The fetch failed, or the document is not an image configuration
    /// ([`oci_lazy::ImageConfigError`]), as a message.
    pub fn run_config(&self) -> Option<Result<RunConfig, String>> {
        let pending = self.run_config.as_ref()?;
        let mut st = pending.0.lock().unwrap_or_else(|p| p.into_inner());
        let result = match std::mem::replace(&mut *st, ConfigState::Done(Err(String::new()))) {
            ConfigState::Fetching(t) => t
                .join()
                .unwrap_or_else(|_| Err("the fetch's thread panicked".into())),
            ConfigState::Done(r) => r,
        };
        *st = ConfigState::Done(result.clone());
        Some(result)
    }

    /// The store of the image's blobs.
    pub fn store(&self) -> &RegistryStore {
        &self.store
    }

    /// A server for the image (Nydus blobs decoded, EROFS layers as they are), over a clone
    /// of the store (sharing its client and counters).
    ///
    /// Nydus chunks are checked against the bootstrap's digests
    /// ([`RafsServer::with_verify_digests`], on here where a local blob dir's server has it
    /// off): a range read cannot be checked against the blob's digest, so the chunk digests
    /// are what keeps a registry (or a man in the middle of plain HTTP) that changes a
    /// blob's bytes from handing them to the kernel; a mismatch fails the read with `EIO`.
    /// The bootstrap itself was checked against its layer digest when resolved. EROFS
    /// layers have no digest below the layer's, and are served unchecked.
    pub fn server(&self) -> RafsServer<RegistryStore> {
        let bootstrap = match &self.kind {
            ImageKind::Nydus { bootstrap, .. } => Some(bootstrap.as_str()),
            ImageKind::ErofsLayers { .. } => None,
        };
        server(&self.store, bootstrap)
    }

    /// A Nydus image's files by blob and offset, for cold prediction
    /// ([`crate::Engine::with_predictor`]): its bootstrap walked (no request; cut into the
    /// image's chunks). `None` for EROFS-layer images.
    ///
    /// # Errors
    ///
    /// The bootstrap's metadata cannot be read (it was checked when resolved, so only a
    /// corrupt inode or directory found by the walk).
    pub fn file_map(&self, rules: Rules) -> Option<erofs_reader::Result<FileMap>> {
        let (image, meta) = self.bootstrap.as_ref()?;
        Some(FileMap::from_image(
            image,
            rules,
            u64::from(meta.chunk_size()),
        ))
    }

    /// Fetch each Nydus blob's chunk map (its chunk-info array and blob meta header, at the
    /// blob's end) now, on threads of their own ([`RegistryStore::fetch_early`]): the kernel
    /// opens every blob right after the mount, and the server's open reads the map (one
    /// round trip each), so starting these fetches before the mount takes their round trips
    /// off the path to the first READ. The same requests the opens would make, made sooner;
    /// nothing for EROFS-layer images or blobs whose map is in a separate meta blob.
    pub fn fetch_chunk_maps_early(&self) {
        fetch_chunk_maps(&self.store, &self.chunk_maps);
    }

    /// Open `connections` connections to the registry while the image mounts
    /// ([`RegistryStore::warm_connections`] on its largest data blob or EROFS layer: the
    /// one most READs ask, and the one with room for the most spread ranges; the
    /// connections are per host, so any of them serves every layer), so that the first
    /// burst of READs and predicted fills finds them ready in the client's pool instead of
    /// opening its own (a round trip each, two with TLS, on the path to the READ). Each
    /// is one 1-byte range request, made at once on a thread of its own; a READ that comes
    /// first opens or takes a connection as before. Returns the thread; dropping it
    /// detaches.
    pub fn warm_connections(
        &self,
        connections: usize,
    ) -> Option<std::thread::JoinHandle<oci_lazy::Result<usize>>> {
        let names = match &self.kind {
            ImageKind::Nydus { blobs, .. } => blobs,
            ImageKind::ErofsLayers { layers } => layers,
        };
        let name = names
            .iter()
            .max_by_key(|n| self.store.layer_size(n.as_bytes()).unwrap_or(0))?;
        self.store.warm_connections(name.as_bytes(), connections)
    }

    /// Fetch the stored bytes a replayed access trace needs from each Nydus blob now, while
    /// the image mounts, instead of when the prefetch asks for them: on a thread of its own,
    /// each blob's chunk map is read (the early fetch of
    /// [`fetch_chunk_maps_early`](Self::fetch_chunk_maps_early), waited for), the chunks the
    /// trace's ranges of that blob touch are looked up, and their stored ranges, merged when
    /// at most `gap` bytes apart, are fetched into memory in the trace's order on
    /// `connections` connections ([`DEFAULT_EARLY_CONNECTIONS`]) ([`RegistryStore::fetch_early_ranges`], at `nice`, as the prefetch's
    /// threads). The prefetch and the READs then
    /// decode and write them without a round trip; a read not within one of those ranges
    /// asks the registry as before. Nothing for EROFS-layer images or a trace without the
    /// blobs' keys. Returns the threads (one per blob the trace names), each answering how
    /// many ranges it asked to fetch once they are all registered; dropping them detaches.
    pub fn fetch_trace_early(
        &self,
        trace: &crate::AccessTrace,
        gap: u64,
        connections: usize,
        nice: i32,
    ) -> Vec<std::thread::JoinHandle<usize>> {
        let mut threads = Vec::new();
        for (id, record) in &self.chunk_maps {
            let traced: Vec<Range<u64>> = trace
                .entries()
                .iter()
                .filter(|e| e.key == id.as_bytes())
                .map(|e| e.range.clone())
                .collect();
            if traced.is_empty() {
                continue;
            }
            let store = self.store.clone();
            let (id, record) = (id.clone(), *record);
            let spawned = std::thread::Builder::new()
                .name("trace-early".into())
                .spawn(move || {
                    if nice > 0 {
                        let _ = crate::sys::set_thread_nice(nice.min(19));
                    }
                    let stored = match crate::BlobStore::open(&store, id.as_bytes()) {
                        Ok(s) => s,
                        Err(e) => {
                            log::warn!("prefetch: blob {id}: {e}");
                            return 0;
                        }
                    };
                    let source = erofs_reader::nydus::BlobSource::new(stored, &record);
                    let chunks = match source.chunk_infos() {
                        Ok(c) => c,
                        Err(e) => {
                            log::warn!("prefetch: blob {id}: chunk map: {e}");
                            return 0;
                        }
                    };
                    let ranges = crate::trace_early::stored_ranges(chunks, &traced, gap);
                    log::info!(
                        "prefetch: fetching {} stored bytes of blob {id} for the trace early, in {} ranges",
                        ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
                        ranges.len()
                    );
                    let n = ranges.len();
                    store.fetch_early_ranges(id.as_bytes(), ranges, connections, nice);
                    n
                });
            threads.extend(spawned);
        }
        threads
    }

    /// Fetch the files that start what the image runs while it mounts (the entrypoint rule,
    /// [`crate::predict::entrypoint`]): on a thread of its own, the program its
    /// configuration names ([`run_config`](Self::run_config), waited for) is found in the
    /// bootstrap, and it, its interpreter and its libraries (found from their bytes, read
    /// through the store as they arrive) are fetched into memory
    /// ([`RegistryStore::fetch_early_ranges`]: the stored bytes of each chunk a request of its
    /// own, first and last chunk first, on `connections` connections at `nice`), each as soon
    /// as it is known: whole if at most `whole_file` bytes, else its first and last chunk
    /// (where its headers are). A READ of those bytes is then decoded from memory, without a round trip.
    /// Nothing for EROFS-layer images, an image resolved without its configuration, or one
    /// whose configuration names no program of the image. Returns the thread (answering the
    /// files fetched), `None` if there is nothing to do; dropping it detaches.
    pub fn fetch_entrypoint_early(
        &self,
        limits: crate::predict::entrypoint::Limits,
        whole_file: u64,
        connections: usize,
        nice: i32,
    ) -> Option<std::thread::JoinHandle<usize>> {
        use crate::predict::entrypoint;
        let (image, meta) = self.bootstrap.clone()?;
        self.run_config.as_ref()?;
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("entrypoint".into())
            .spawn(move || {
                // Its decoding runs beside the mount and the exec: on a busy CPU they come
                // first.
                if nice > 0 {
                    let _ = crate::sys::set_thread_nice(nice.min(19));
                }
                let started = std::time::Instant::now();
                let config = match this.run_config() {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        log::warn!("entrypoint: image config: {e}");
                        return 0;
                    }
                    None => return 0,
                };
                let Some(name) = config.program() else {
                    log::info!("entrypoint: the image config names no program");
                    return 0;
                };
                let found = entrypoint::program(&image, name, config.path(), &config.working_dir);
                let path = match found {
                    Ok(p) => p,
                    Err(e) => {
                        log::info!("entrypoint: {e}");
                        return 0;
                    }
                };
                // Each blob's decoded view and chunk map (fetched early already).
                let mut blobs = HashMap::new();
                for (id, record) in &this.chunk_maps {
                    let Ok(stored) = crate::BlobStore::open(&this.store, id.as_bytes()) else {
                        continue;
                    };
                    blobs.insert(
                        id.as_bytes().to_vec(),
                        erofs_reader::nydus::BlobSource::new(stored, record),
                    );
                }
                let piece = u64::from(meta.chunk_size()).max(4096);
                let mut fetch = |f: &entrypoint::ClosureFile| {
                    let Some(source) = blobs.get(&f.tag) else {
                        return;
                    };
                    let Ok(chunks) = source.chunk_infos() else {
                        return;
                    };
                    // One request per piece (not merged up to 2 MiB as a trace's are): the
                    // head's chunk, which the exec and this walk wait for, comes first and
                    // alone.
                    let ranges: Vec<Range<u64>> = early_pieces(&f.extent, piece, whole_file)
                        .iter()
                        .flat_map(|p| {
                            crate::trace_early::stored_ranges(chunks, std::slice::from_ref(p), 0)
                        })
                        .collect();
                    log::info!(
                        "entrypoint: {} (depth {}, {} bytes at {}): {} stored bytes fetched early",
                        String::from_utf8_lossy(&f.path),
                        f.depth,
                        f.extent.end - f.extent.start,
                        f.extent.start,
                        ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
                    );
                    this.store
                        .fetch_early_ranges(&f.tag, ranges, connections, nice);
                };
                let mut read = |tag: &[u8], range: Range<u64>| -> io::Result<Vec<u8>> {
                    let source = blobs
                        .get(tag)
                        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                    let len = usize::try_from(range.end - range.start)
                        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                    let mut buf = vec![0; len];
                    erofs_reader::Source::read_exact_at(source, &mut buf, range.start)?;
                    Ok(buf)
                };
                let files = entrypoint::closure(&image, &path, limits, &mut read, &mut fetch);
                log::info!(
                    "entrypoint: {} ({name}): {} files, {} bytes, found in {} ms",
                    String::from_utf8_lossy(&path),
                    files.len(),
                    files
                        .iter()
                        .map(|f| f.extent.end - f.extent.start)
                        .sum::<u64>(),
                    started.elapsed().as_millis()
                );
                files.len()
            });
        spawned.ok()
    }

    /// The object keys the kernel mounts: the bootstrap, or the layers bottom first.
    pub fn mount_keys(&self) -> Vec<&str> {
        match &self.kind {
            ImageKind::Nydus { bootstrap, .. } => vec![bootstrap.as_str()],
            ImageKind::ErofsLayers { layers } => layers.iter().map(String::as_str).collect(),
        }
    }
}

/// A server for an image's `store` (Nydus chunks checked, see [`RemoteImage::server`]); the
/// kernel's OPEN of the `bootstrap` takes its blob table from the parse done when it was
/// fetched, not from a second one.
fn server(store: &RegistryStore, bootstrap: Option<&str>) -> RafsServer<RegistryStore> {
    let server = RafsServer::with_store(store.clone()).with_verify_digests(true);
    match bootstrap {
        Some(key) => {
            let (store, name) = (store.clone(), key.as_bytes().to_vec());
            server.with_parsed_bootstrap(key.as_bytes(), Arc::new(move || store.parsed(&name)))
        }
        None => server,
    }
}

/// [`RemoteImage::fetch_chunk_maps_early`] of the blobs `chunk_maps` lists.
fn fetch_chunk_maps(
    store: &RegistryStore,
    chunk_maps: &[(String, erofs_format::rafs::RafsV6Blob)],
) {
    use erofs_format::rafs::{BLOB_META_HEADER_SIZE, BlobFeatures};
    for (id, record) in chunk_maps {
        if record.features().contains(BlobFeatures::SEPARATE) {
            continue;
        }
        let start = record.ci_offset.get();
        if let Some(end) = record
            .meta_header_offset()
            .and_then(|h| h.checked_add(BLOB_META_HEADER_SIZE as u64))
        {
            store.fetch_early(id.as_bytes(), start..end);
        }
    }
}

/// The pieces of a file's `extent` to fetch early, cut at `piece` bytes from its start: the
/// first and the last (an ELF object's headers, and its dynamic section in its data segment),
/// then, if the file is at most `whole_file` long, the rest.
fn early_pieces(extent: &Range<u64>, piece: u64, whole_file: u64) -> Vec<Range<u64>> {
    let mut all = Vec::new();
    crate::predict::cut(extent, piece, &mut all);
    if all.len() > 1 {
        all.rotate_right(1);
        all.swap(0, 1);
    }
    if extent.end - extent.start > whole_file {
        all.truncate(2);
    }
    all
}

/// A Nydus image resolved: what to mount, the bootstrap's bytes, each blob's id and record,
/// the bootstrap parsed.
type Resolved = (
    ImageKind,
    Arc<[u8]>,
    Vec<(String, erofs_format::rafs::RafsV6Blob)>,
    (erofs_reader::Image, RafsMeta),
);

/// The Nydus bootstrap layer `boot`: fetched, checked, unpacked; its blobs must be layers.
fn nydus(
    client: &Client,
    reference: &Reference,
    boot: &Layer,
    layers: &[Layer],
) -> Result<Resolved, ResolveError> {
    let fail = |what: String| ResolveError::Bootstrap {
        reference: reference.to_string(),
        digest: boot.digest.to_string(),
        what,
    };
    // Fetched whole and digest-checked before it is unpacked.
    let bytes: Arc<[u8]> = client
        .fetch_nydus_bootstrap(reference.repository(), boot)?
        .into();
    let image = ImageBuilder::new(bytes.clone())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let meta = RafsMeta::from_image(&image)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail(format!("{BOOTSTRAP_PATH} is not a RAFS v6 bootstrap")))?;
    let have: HashMap<&str, &Layer> = layers.iter().map(|l| (l.digest.hex(), l)).collect();
    let mut blobs = Vec::new();
    let mut records = Vec::new();
    for b in meta.blobs() {
        if !have.contains_key(b.id.as_str()) {
            return Err(fail(format!(
                "blob {} ({}) is not a layer of the image",
                b.index, b.id
            )));
        }
        if let Some(m) = b.separate_meta_name()
            && !have.contains_key(m.as_str())
        {
            return Err(fail(format!(
                "meta blob {m} of blob {} is not a layer of the image",
                b.id
            )));
        }
        blobs.push(b.id.clone());
        records.push((b.id.clone(), b.record));
    }
    log::info!(
        "{reference}: Nydus RAFS v6 bootstrap of {} bytes, {} blobs",
        <[u8]>::len(&bytes),
        blobs.len()
    );
    Ok((
        ImageKind::Nydus {
            bootstrap: boot.digest.hex().to_owned(),
            blobs,
        },
        bytes,
        records,
        (image, meta),
    ))
}

/// An image's rootfs as mounted: the mounts to take down, last first.
#[derive(Debug)]
#[must_use = "unmount it"]
pub struct Rootfs {
    mounts: Vec<PathBuf>,
}

impl Rootfs {
    /// Mount `image` on `target` read-only: a Nydus image or a single EROFS layer is one
    /// mount of its key on `target`; several EROFS layers are each mounted on
    /// `work/layers/<i>` (created) and `target` becomes their overlay (`lowerdir=` top
    /// first). `mount_one(key, dir)` mounts one object the transport's way; the daemon must
    /// be serving already. On an error, what was mounted is unmounted again.
    ///
    /// # Errors
    ///
    /// `mount_one`'s errors; an overlay the kernel refuses; a work path holding `:` or `,`.
    pub fn mount(
        image: &RemoteImage,
        work: &Path,
        target: &Path,
        mount_one: impl FnMut(&str, &Path) -> io::Result<()>,
    ) -> io::Result<Rootfs> {
        Rootfs::mount_keys(&image.mount_keys(), work, target, mount_one)
    }

    /// [`mount`](Self::mount) of an image's keys (its [`RemoteImage::mount_keys`], or a
    /// [`ResolvingImage::mount_keys`] whose bootstrap may still be on its way): one key is
    /// one mount on `target`, several are EROFS layers, bottom first, overlaid.
    ///
    /// # Errors
    ///
    /// As [`mount`](Self::mount).
    pub fn mount_keys(
        keys: &[impl AsRef<str>],
        work: &Path,
        target: &Path,
        mut mount_one: impl FnMut(&str, &Path) -> io::Result<()>,
    ) -> io::Result<Rootfs> {
        let mut rootfs = Rootfs { mounts: Vec::new() };
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        if let [key] = keys[..] {
            mount_one(key, target)?;
            rootfs.mounts.push(target.to_path_buf());
            return Ok(rootfs);
        }
        let result = (|| {
            let mut lowers = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let dir = work.join("layers").join(i.to_string());
                std::fs::create_dir_all(&dir)?;
                mount_one(key, &dir)
                    .map_err(|e| io::Error::new(e.kind(), format!("layer {i} ({key}): {e}")))?;
                rootfs.mounts.push(dir.clone());
                lowers.push(dir);
            }
            lowers.reverse();
            crate::mount::mount_overlay(&lowers, target)?;
            rootfs.mounts.push(target.to_path_buf());
            Ok(())
        })();
        match result {
            Ok(()) => Ok(rootfs),
            Err(e) => {
                let _ = rootfs.unmount();
                Err(e)
            }
        }
    }

    /// The mount points, in mount order (layers, then the target).
    pub fn mounts(&self) -> &[PathBuf] {
        &self.mounts
    }

    /// Unmount everything, last mounted first. A busy mount is detached lazily (its
    /// unfilled ranges fail to read once the daemon is gone).
    ///
    /// # Errors
    ///
    /// The first `umount2` error (the others are still tried).
    pub fn unmount(self) -> io::Result<()> {
        use nix::mount::{MntFlags, umount2};
        let mut first = None;
        for m in self.mounts.iter().rev() {
            let r = match umount2(m.as_path(), MntFlags::empty()) {
                Err(nix::errno::Errno::EBUSY) => {
                    log::warn!("{} is busy: detaching it lazily", m.display());
                    umount2(m.as_path(), MntFlags::MNT_DETACH)
                }
                r => r,
            };
            match r {
                Ok(()) => log::info!("unmounted {}", m.display()),
                Err(e) => {
                    first.get_or_insert(io::Error::new(
                        io::Error::from(e).kind(),
                        format!("unmounting {}: {e}", m.display()),
                    ));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
