//! [`RafsDirServer`]: serves Nydus RAFS v6 images (and anything else) from one directory.
//!
//! A RAFS v6 image is a bootstrap (an EROFS image, opened by the kernel under the mount's
//! `fsid`) plus data blobs, one EROFS device each, opened under the blob id (the device
//! tag). The kernel reads a blob device in its **uncompressed** address space, while the
//! stored blob holds its chunks compressed (lz4_block, zstd) or raw, back to back. This
//! server answers:
//!
//! * OPEN of a cookie key naming a file in the directory that is a RAFS v6 bootstrap: the
//!   file as it is (its size), and its blob table is remembered;
//! * OPEN of a blob id listed by a bootstrap in the directory (the one just opened, or any
//!   found by scanning the directory): the blob's uncompressed size, the size the device slot
//!   gives the kernel;
//! * READ of such a blob: the chunks covering the range are fetched from the stored blob
//!   (adjacent ones in one read), decompressed, optionally checked against the bootstrap's
//!   chunk digests, and returned at their uncompressed offsets (zeros between chunks) by
//!   [`erofs_reader::nydus::BlobSource`]; the session writes them aligned;
//! * OPEN of a cookie key naming a `--blob-inline-meta` data blob (mounted with
//!   `fsid=BLOB_ID`): the bootstrap inlined in it; the kernel then opens the device under the
//!   placeholder tag `"x" × 64`, which is served as that blob (the volume's fsid);
//! * anything else: the file named by the cookie key, as [`LocalDirServer`] does.
//!
//! So `erofs-ondemand serve --blob-dir DIR` serves every Nydus image in `DIR` with no
//! configuration: put the bootstrap and the blobs (named by their ids) there and mount with
//! `mount -t erofs none -o fsid=BOOTSTRAP_NAME /mnt`.
//!
//! ```no_run
//! use ondemand::rafs::RafsDirServer;
//! use ondemand::{CachefilesDevice, Daemon, Session};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = RafsDirServer::new("/var/lib/nydus").with_verify_digests(true);
//! let dev = CachefilesDevice::open()?;
//! dev.bind_ondemand("/var/cache/erofs".as_ref(), None)?;
//! let mut daemon = Daemon::new(dev, Session::new(server));
//! daemon.run()?;
//! println!("{}", daemon.session().server().totals());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use erofs_reader::nydus::{BlobInfo, BlobSource, BlobStats, Digest, RafsMeta};
use erofs_reader::{Image, LazyFile, Source};

use crate::local::LocalDirServer;
use crate::server::{ObjectKey, OnDemandServer, Opened};

/// Reads at least this long are taken as sequential readahead windows, whose next window
/// is decoded in the background.
const DECODE_AHEAD_MIN: u64 = 256 * 1024;

/// The device tag `--blob-inline-meta` bootstraps carry for their own blob.
const INLINE_PLACEHOLDER: &[u8] = &[b'x'; 64];

/// Most directory entries one scan for bootstraps looks at.
const MAX_SCAN_ENTRIES: usize = 100_000;

/// An object served by [`RafsDirServer`].
#[derive(Debug)]
pub enum RafsObject {
    /// A file served as it is (a bootstrap, or any non-Nydus blob).
    File(File),
    /// A Nydus data blob served as its uncompressed address space.
    Blob(Arc<BlobSource>),
    /// The bootstrap inlined in a `--blob-inline-meta` data blob (the mount's fsid names
    /// the blob).
    Inline(Arc<[u8]>),
}

/// A blob a bootstrap lists: enough to open it later.
#[derive(Clone)]
struct KnownBlob {
    info: BlobInfo,
    digests: Option<Vec<Option<Digest>>>,
}

type Stamp = (Option<SystemTime>, u64);

#[derive(Default)]
struct State {
    /// Blob id → what the bootstraps say about it.
    known: HashMap<Vec<u8>, KnownBlob>,
    /// Open blob sources, shared by every image (and mount) that uses the blob.
    open: HashMap<Vec<u8>, Arc<BlobSource>>,
    /// Files already examined: path → ((mtime, length), whether it is a bootstrap).
    examined: HashMap<PathBuf, (Stamp, bool)>,
}

/// Serves RAFS v6 images (bootstrap + blobs, decompressed on demand) and plain blobs from
/// one directory (see the [module docs](self)).
pub struct RafsDirServer {
    local: LocalDirServer,
    verify: bool,
    decode_ahead: bool,
    cache_bytes: usize,
    state: Mutex<State>,
}

impl fmt::Debug for RafsDirServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RafsDirServer")
            .field("dir", &self.local.dir())
            .field("verify", &self.verify)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

/// Totals over every blob a [`RafsDirServer`] opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RafsTotals {
    /// Blobs opened (decoded views).
    pub blobs: u64,
    /// The blobs' counters, summed.
    pub stats: BlobStats,
}

impl fmt::Display for RafsTotals {
    /// `rafs blobs=N bytes_served=N stored_bytes=N fetches=N chunks_decoded=N chunks_verified=N cache_hits=N fetch_ms=N decode_ms=N zran_inflates=N`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "rafs blobs={} bytes_served={} stored_bytes={} fetches={} chunks_decoded={} chunks_verified={} cache_hits={} fetch_ms={} decode_ms={} zran_inflates={}",
            self.blobs,
            s.bytes_served,
            s.stored_bytes,
            s.fetches,
            s.chunks_decoded,
            s.chunks_verified,
            s.cache_hits,
            s.fetch_ns / 1_000_000,
            s.decode_ns / 1_000_000,
            s.zran_inflates
        )
    }
}

impl RafsDirServer {
    /// Serve the images and blobs in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RafsDirServer {
            local: LocalDirServer::new(dir),
            verify: false,
            decode_ahead: false,
            cache_bytes: erofs_reader::nydus::DEFAULT_CHUNK_CACHE_BYTES,
            state: Mutex::new(State::default()),
        }
    }

    /// Check every decoded chunk against its digest in the bootstrap's chunk table (BLAKE3
    /// or SHA-256); a mismatch fails the kernel's read with `EIO`. Default: off.
    pub fn with_verify_digests(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// After a read of a whole readahead window (256 KiB or more) of a blob, decode the
    /// next window in the background, so decompression overlaps with the kernel's use of
    /// the data (default: off; it pays only when a spare core is idle while the kernel
    /// reads).
    pub fn with_decode_ahead(mut self, on: bool) -> Self {
        self.decode_ahead = on;
        self
    }

    /// Bytes of decoded chunks each blob keeps cached (default
    /// [`erofs_reader::nydus::DEFAULT_CHUNK_CACHE_BYTES`]).
    pub fn with_chunk_cache(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.local.dir()
    }

    /// Counters of each blob opened so far, by blob id.
    pub fn blob_stats(&self) -> Vec<(String, BlobStats)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = state
            .open
            .iter()
            .map(|(id, s)| (String::from_utf8_lossy(id).into_owned(), s.stats()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Counters summed over every blob opened so far.
    pub fn totals(&self) -> RafsTotals {
        let mut t = RafsTotals::default();
        for (_, s) in self.blob_stats() {
            t.blobs += 1;
            let a = &mut t.stats;
            a.reads += s.reads;
            a.bytes_served += s.bytes_served;
            a.fetches += s.fetches;
            a.stored_bytes += s.stored_bytes;
            a.chunks_decoded += s.chunks_decoded;
            a.chunks_verified += s.chunks_verified;
            a.cache_hits += s.cache_hits;
            a.fetch_ns += s.fetch_ns;
            a.decode_ns += s.decode_ns;
            a.zran_inflates += s.zran_inflates;
        }
        t
    }

    /// Examine `path` (once per mtime and length): if it is a RAFS v6 bootstrap, remember
    /// its blobs. Returns whether it is one.
    fn index_file(&self, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        if !meta.is_file() {
            return false;
        }
        let stamp = (meta.modified().ok(), meta.len());
        {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((seen, is)) = state.examined.get(path)
                && *seen == stamp
            {
                return *is;
            }
        }
        let found = if is_rafs_bootstrap(path) {
            match Image::open(path).and_then(|image| self.read_bootstrap(&image)) {
                Ok(blobs) => Some(blobs),
                Err(e) => {
                    log::warn!("{}: RAFS v6 bootstrap not usable: {e}", path.display());
                    None
                }
            }
        } else {
            None
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let is = found.is_some();
        state.examined.insert(path.to_path_buf(), (stamp, is));
        Self::register(&mut state, path, found.unwrap_or_default(), None);
        is
    }

    /// Remember the blobs a bootstrap (read from `origin`) lists. The `--blob-inline-meta`
    /// placeholder id stands for `inline_name`, the blob the bootstrap came out of.
    fn register(
        state: &mut State,
        origin: &Path,
        blobs: Vec<KnownBlob>,
        inline_name: Option<&[u8]>,
    ) {
        for blob in blobs {
            let id = match (blob.info.has_placeholder_id(), inline_name) {
                (false, _) => blob.info.id.as_bytes().to_vec(),
                (true, Some(name)) => name.to_vec(),
                (true, None) => {
                    log::warn!(
                        "{}: blob {} has the --blob-inline-meta placeholder id outside its blob; not served",
                        origin.display(),
                        blob.info.index
                    );
                    continue;
                }
            };
            match state.known.get_mut(&id) {
                Some(k) => {
                    // Another image uses the same blob: merge the digests it knows.
                    if let (Some(have), Some(more)) = (&mut k.digests, &blob.digests) {
                        for (h, m) in have.iter_mut().zip(more) {
                            if h.is_none() {
                                *h = *m;
                            }
                        }
                    }
                }
                None => {
                    log::info!(
                        "{}: RAFS v6 blob {} ({:?}, {} chunks, {} bytes uncompressed)",
                        origin.display(),
                        String::from_utf8_lossy(&id),
                        blob.info.compressor,
                        blob.info.chunk_count,
                        blob.info.uncompressed_size
                    );
                    state.known.insert(id, blob);
                }
            }
        }
    }

    fn read_bootstrap(&self, image: &Image) -> erofs_reader::Result<Vec<KnownBlob>> {
        let Some(rafs) = RafsMeta::from_image(image)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for b in rafs.blobs() {
            let digests = if self.verify {
                Some(rafs.blob_digests(image, b.index)?)
            } else {
                None
            };
            out.push(KnownBlob {
                info: b.clone(),
                digests,
            });
        }
        Ok(out)
    }

    /// If the file `name` is a `--blob-inline-meta` data blob, the bootstrap it carries
    /// (its blobs remembered, the placeholder one as `name`).
    fn inline_bootstrap(&self, name: &[u8], path: &Path) -> Option<Arc<[u8]>> {
        if name.len() != 64 || !name.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let file = File::open(path).ok()?;
        let boot = match erofs_reader::nydus::inlined_bootstrap(&file) {
            Ok(b) => b?,
            Err(e) => {
                log::warn!("{}: {e}", path.display());
                return None;
            }
        };
        let blobs =
            match Image::from_source(boot.clone()).and_then(|image| self.read_bootstrap(&image)) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("{}: inlined bootstrap not usable: {e}", path.display());
                    return None;
                }
            };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Self::register(&mut state, path, blobs, Some(name));
        Some(Arc::from(boot))
    }

    /// Look at every file of the directory not examined yet, for bootstraps.
    fn scan(&self) {
        let Ok(rd) = std::fs::read_dir(self.dir()) else {
            return;
        };
        for e in rd.flatten().take(MAX_SCAN_ENTRIES) {
            self.index_file(&e.path());
        }
    }

    /// The decoded view of blob `id`, if a bootstrap lists it.
    fn blob(&self, id: &[u8], path: &Path) -> Option<Arc<BlobSource>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = state.open.get(id) {
            return Some(s.clone());
        }
        let known = state.known.get(id)?.clone();
        let mut src = BlobSource::new(LazyFile::new(path), &known.info.record)
            .with_cache_capacity(self.cache_bytes);
        if let Some(meta) = known.info.separate_meta_name() {
            src = src.with_separate_meta(LazyFile::new(self.dir().join(meta)));
        }
        if let Some(d) = known.digests {
            src = src.with_digests(d);
        }
        let src = Arc::new(src);
        state.open.insert(id.to_vec(), src.clone());
        Some(src)
    }
}

/// Whether `path` starts like a RAFS v6 bootstrap (EROFS magic and the RAFS compat bit).
fn is_rafs_bootstrap(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 4096];
    FileExt::read_exact_at(&f, &mut head, 0).is_ok()
        && erofs_reader::nydus::is_rafs_bootstrap(&head)
}

impl OnDemandServer for RafsDirServer {
    type Object = RafsObject;

    fn open(&self, key: &ObjectKey<'_>) -> io::Result<Opened<RafsObject>> {
        let path = self.local.path_for(key.cookie_key)?;
        // A bootstrap: remember its blobs, serve it as it is.
        if self.index_file(&path) {
            let opened = self.local.open(key)?;
            return Ok(Opened {
                object: RafsObject::File(opened.object),
                size: opened.size,
            });
        }
        // The `--blob-inline-meta` placeholder tag: the blob is the one the mount's fsid
        // names (its bootstrap came out of it).
        let (cookie, path) = match key.volume_name() {
            Some(fsid) if key.cookie_key == INLINE_PLACEHOLDER => {
                (fsid, self.local.path_for(fsid)?)
            }
            _ => (key.cookie_key, path),
        };
        let mut blob = self.blob(cookie, &path);
        if blob.is_none() && cookie != key.cookie_key {
            // A restored daemon: the fsid's blob was not opened as the bootstrap here.
            self.inline_bootstrap(cookie, &path);
            blob = self.blob(cookie, &path);
        }
        if blob.is_none() {
            // Opened without its bootstrap first (a restored daemon, another daemon's
            // mount): look for bootstraps in the directory.
            self.scan();
            blob = self.blob(cookie, &path);
        }
        if let Some(src) = blob {
            // Check that the blob can be decoded before telling the kernel its size.
            src.chunk_infos()
                .map_err(io::Error::from)
                .inspect_err(|e| {
                    log::warn!("RAFS blob {}: {e}", String::from_utf8_lossy(key.cookie_key));
                })?;
            let size = src.uncompressed_size();
            log::info!(
                "RAFS blob {}: serving {size} uncompressed bytes from {}",
                key.cookie_key.escape_ascii(),
                std::ffi::OsStr::from_bytes(key.cookie_key).to_string_lossy()
            );
            return Ok(Opened {
                object: RafsObject::Blob(src),
                size,
            });
        }
        // A `--blob-inline-meta` blob mounted by its name: serve the bootstrap it carries.
        if let Some(boot) = self.inline_bootstrap(key.cookie_key, &path) {
            log::info!(
                "{}: serving the bootstrap inlined in the blob ({} bytes)",
                path.display(),
                <[u8]>::len(&boot)
            );
            return Ok(Opened {
                size: <[u8]>::len(&boot) as u64,
                object: RafsObject::Inline(boot),
            });
        }
        let opened = self.local.open(key)?;
        Ok(Opened {
            object: RafsObject::File(opened.object),
            size: opened.size,
        })
    }

    fn read_at(&self, object: &RafsObject, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        match object {
            RafsObject::File(f) => self.local.read_at(f, off, buf),
            RafsObject::Inline(boot) => {
                let start = usize::try_from(off)
                    .unwrap_or(usize::MAX)
                    .min(<[u8]>::len(boot));
                let n = (<[u8]>::len(boot) - start).min(buf.len());
                buf[..n].copy_from_slice(&boot[start..start + n]);
                Ok(n)
            }
            RafsObject::Blob(src) => {
                let size = src.uncompressed_size();
                if off >= size {
                    return Ok(0);
                }
                let n = (size - off).min(buf.len() as u64) as usize;
                src.read_exact_at(&mut buf[..n], off)?;
                // A window-sized read (readahead): decode the next window meanwhile.
                let end = off + n as u64;
                if self.decode_ahead && n as u64 >= DECODE_AHEAD_MIN && end < size {
                    src.decode_ahead(end..end.saturating_add(n as u64));
                }
                Ok(n)
            }
        }
    }

    fn close(&self, object: &RafsObject) {
        if let RafsObject::Blob(src) = object {
            let s = src.stats();
            log::info!(
                "RAFS blob {}: closed after serving {} bytes from {} stored bytes ({} chunks decoded, {} verified)",
                String::from_utf8_lossy(&src.record().blob_id).trim_end_matches('\0'),
                s.bytes_served,
                s.stored_bytes,
                s.chunks_decoded,
                s.chunks_verified
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_are_served_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), b"not an image").unwrap();
        let s = RafsDirServer::new(dir.path());
        let key = ObjectKey {
            volume_key: b"erofs,x",
            cookie_key: b"plain",
        };
        let o = s.open(&key).unwrap();
        assert_eq!(o.size, 12);
        assert!(matches!(o.object, RafsObject::File(_)));
        let mut buf = [0u8; 3];
        s.fill(&o.object, 4, &mut buf).unwrap();
        assert_eq!(&buf, b"an ");
        let bad = ObjectKey {
            volume_key: b"erofs,x",
            cookie_key: b"../etc",
        };
        assert!(s.open(&bad).is_err());
        let missing = ObjectKey {
            volume_key: b"erofs,x",
            cookie_key: b"nothing",
        };
        assert_eq!(
            s.open(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(s.totals().blobs, 0);
    }
}
