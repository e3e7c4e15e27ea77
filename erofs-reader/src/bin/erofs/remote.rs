//! `--image REF`: an image read lazily from an OCI registry (through `oci-lazy`), fetching
//! only the byte ranges the command reads.
//!
//! Image kinds: containerd's native EROFS layers (`application/vnd.erofs.layer.v1`; one
//! layer is read, the top one unless `--layer N` picks another) and Nydus RAFS v6 images
//! (the bootstrap layer, a gzip tar holding `image/image.boot`, is fetched whole and
//! digest-checked; the data blobs are the RAFS devices, found by blob id among the layers,
//! their chunks checked against the bootstrap's chunk digests).

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use clap::Args;
use erofs_reader::nydus::{BlobSource, RafsMeta};
use erofs_reader::{Image, ImageBuilder, Source};
use oci_lazy::{
    Blob, Client, Config, Credentials, EROFS_LAYER, Layer, LazyLayout, MAX_BOOTSTRAP, Reference,
};

/// Registry options, for `--image REF`.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct RemoteArgs {
    /// Read the image from an OCI registry instead of a file:
    /// `[host[:port]/]repo[:tag|@digest]` (an EROFS-layer or Nydus RAFS v6 image).
    #[arg(long = "image", value_name = "REF")]
    pub(crate) reference: Option<String>,
    /// With `--image`: the EROFS layer to read, 0 = bottom (default: the top one).
    #[arg(long, value_name = "N", requires = "reference")]
    layer: Option<usize>,
    /// With `--image`: a Docker config file with credentials (default:
    /// `$REGISTRY_AUTH_FILE`, else `~/.docker/config.json`).
    #[arg(long, value_name = "PATH", requires = "reference")]
    auth_file: Option<PathBuf>,
    /// With `--image`: `USER:PASSWORD` for the image's registry.
    #[arg(long, value_name = "USER:PASSWORD", requires = "reference")]
    creds: Option<String>,
    /// With `--image`: a PEM file of CA certificates to trust besides the system's.
    #[arg(long = "ca-file", value_name = "PATH", requires = "reference")]
    ca_files: Vec<PathBuf>,
    /// With `--image`: a registry (`host[:port]`) that may speak plain HTTP (HTTPS is
    /// tried first; loopback registries are treated so too); repeatable.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        requires = "reference"
    )]
    insecure: Vec<String>,
    /// With `--image`: a mirror URL tried before the registry; repeatable, in order.
    #[arg(long = "mirror", value_name = "URL", requires = "reference")]
    mirrors: Vec<String>,
    /// With `--image`: print each registry request, and the totals at the end.
    #[arg(short = 'v', long = "verbose", requires = "reference")]
    verbose: bool,
}

/// The client of this run, for the totals printed at exit.
static SESSION: OnceLock<(Client, u64, bool)> = OnceLock::new();

/// With `-v`: print the registry totals (requests, bytes, retries) against the image's
/// size to stderr.
pub(crate) fn report() {
    if let Some((client, image_size, true)) = SESSION.get() {
        let s = client.stats();
        eprintln!(
            "erofs: registry: {} requests, {} bytes fetched ({:.3}% of the image's {} bytes), {} retries, {} redirects, {} tokens",
            s.requests,
            s.bytes,
            s.bytes as f64 * 100.0 / (*image_size).max(1) as f64,
            image_size,
            s.retries,
            s.redirects,
            s.tokens
        );
    }
}

/// The command line with `--image REF` also standing in for the IMAGE positional (right
/// after the subcommand), so that every subcommand's own positionals keep their places:
/// `erofs cat --image REF /file` parses as `erofs cat REF /file --image REF`.
pub(crate) fn argv(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = args.collect();
    let reference = v.iter().enumerate().find_map(|(i, a)| {
        if a == "--image" {
            v.get(i + 1).cloned()
        } else {
            a.to_str()?.strip_prefix("--image=").map(Into::into)
        }
    });
    if let Some(r) = reference
        && v.len() >= 2
    {
        v.insert(2, r);
    }
    v
}

/// Whether the logger should show the client's request lines.
pub(crate) fn verbose(args: &RemoteArgs) -> bool {
    args.reference.is_some() && args.verbose
}

type BoxError = Box<dyn std::error::Error>;

/// Open the image `args.reference` names.
pub(crate) fn open(args: &RemoteArgs) -> Result<Image, BoxError> {
    let reference: Reference = args
        .reference
        .as_deref()
        .ok_or("no --image given")?
        .parse()?;
    let mut config = Config::default().prefer_nydus();
    config.ca_files = args.ca_files.clone();
    config.insecure_registries = args.insecure.clone();
    config.mirrors = args.mirrors.clone();
    config.auth_file = args.auth_file.clone();
    if let Some(c) = &args.creds {
        let (username, password) = c.split_once(':').ok_or("--creds wants USER:PASSWORD")?;
        config.credentials.push((
            reference.repository().registry().to_owned(),
            Credentials::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            },
        ));
    }
    let client = Client::new(config)?;
    let image = client.resolve(&reference)?;
    let total: u64 = image.layers.iter().map(|l| l.size).sum();
    let _ = SESSION.set((client.clone(), total, args.verbose));
    log::info!(
        "{reference}: manifest {}{}, {} layers",
        image.digest,
        image
            .platform
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        image.layers.len()
    );
    let repo = reference.repository();
    let erofs = match image.lazy_layout() {
        Some(LazyLayout::Nydus { bootstrap }) => {
            return open_nydus(&client, repo, bootstrap, &image.layers);
        }
        Some(LazyLayout::Erofs) => image.erofs_layers(),
        None => {
            let kinds: Vec<&str> = image.layers.iter().map(|l| l.media_type.as_str()).collect();
            return Err(format!(
                "{reference}: neither EROFS layers ({EROFS_LAYER}) nor a Nydus bootstrap layer; layers: {kinds:?}"
            )
            .into());
        }
    };
    let top = *erofs.last().expect("LazyLayout::Erofs has an EROFS layer");
    let n = args.layer.unwrap_or(top);
    let layer = image
        .layers
        .get(n)
        .filter(|l| l.media_type == EROFS_LAYER)
        .ok_or_else(|| format!("--layer {n}: the EROFS layers are {erofs:?}"))?;
    if erofs.len() > 1 {
        eprintln!(
            "erofs: {reference} has {} EROFS layers (the rootfs is their overlay); reading layer {n} ({}{}); pick another with --layer N",
            erofs.len(),
            layer.digest,
            if n == top { ", the top one" } else { "" }
        );
    }
    let blob = client.blob_with_size(repo, &layer.digest, layer.size);
    Ok(ImageBuilder::new(CachedBlob::new(blob)).build()?)
}

/// Nydus RAFS v6: the bootstrap from its layer, the blobs as devices.
fn open_nydus(
    client: &Client,
    repo: &oci_lazy::Repository,
    boot: &Layer,
    layers: &[Layer],
) -> Result<Image, BoxError> {
    if boot.size > MAX_BOOTSTRAP {
        return Err(format!("bootstrap layer of {} bytes is too large", boot.size).into());
    }
    // Fetched whole and digest-checked before it is unpacked.
    let bootstrap: Arc<[u8]> = client.fetch_nydus_bootstrap(repo, boot)?.into();
    let meta_image = ImageBuilder::new(bootstrap.clone()).build()?;
    let meta = RafsMeta::from_image(&meta_image)?
        .ok_or("the bootstrap layer's image/image.boot is not a RAFS v6 bootstrap")?;
    let by_hex: HashMap<&str, &Layer> = layers.iter().map(|l| (l.digest.hex(), l)).collect();
    let mut builder = ImageBuilder::new(bootstrap);
    for b in meta.blobs() {
        let layer = by_hex
            .get(b.id.as_str())
            .ok_or_else(|| format!("blob {} ({}) is not a layer of the image", b.index, b.id))?;
        let remote = CachedBlob::new(client.blob_with_size(repo, &layer.digest, layer.size));
        let mut src = BlobSource::new(remote, &b.record)
            .with_digests(meta.blob_digests(&meta_image, b.index)?);
        if let Some(name) = b.separate_meta_name() {
            let m = by_hex
                .get(name.as_str())
                .ok_or_else(|| format!("meta blob {name} of blob {} is not a layer", b.id))?;
            src = src.with_separate_meta(CachedBlob::new(
                client.blob_with_size(repo, &m.digest, m.size),
            ));
        }
        builder = builder.device(src);
    }
    Ok(builder.build()?)
}

/// Granule of the metadata cache: small reads fetch this much, aligned.
const BLOCK: u64 = 16 << 10;
/// Blocks kept (4 MiB).
const CACHE_BLOCKS: usize = 256;
/// Reads at least this large go straight to the registry (parallel ranges), uncached.
const DIRECT: usize = 128 << 10;

/// A registry blob as an image source: small reads (superblock, inodes, directories) go
/// through a small block cache so that walking metadata costs few requests; large reads
/// (file data) are fetched directly with parallel range requests.
struct CachedBlob {
    blob: Blob,
    cache: Mutex<Blocks>,
}

/// Cached blocks by index, and their indexes oldest first (evicted first).
type Blocks = (HashMap<u64, Arc<[u8]>>, std::collections::VecDeque<u64>);

impl CachedBlob {
    fn new(blob: Blob) -> CachedBlob {
        CachedBlob {
            blob,
            cache: Mutex::new((HashMap::new(), std::collections::VecDeque::new())),
        }
    }

    fn block(&self, index: u64) -> io::Result<Arc<[u8]>> {
        if let Some(b) = self.lock().0.get(&index) {
            return Ok(b.clone());
        }
        let start = index * BLOCK;
        let len = BLOCK.min(self.blob.size() - start) as usize;
        let mut buf = vec![0u8; len];
        self.blob.read_exact_at(&mut buf, start)?;
        let b: Arc<[u8]> = buf.into();
        let mut c = self.lock();
        if c.0.insert(index, b.clone()).is_none() {
            c.1.push_back(index);
        }
        while c.1.len() > CACHE_BLOCKS {
            if let Some(old) = c.1.pop_front() {
                c.0.remove(&old);
            }
        }
        Ok(b)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Source for CachedBlob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.blob.size())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "read past the blob's end")
            })?;
        if buf.len() >= DIRECT {
            return Ok(self.blob.read_exact_at(buf, offset)?);
        }
        let mut at = offset;
        while at < end {
            let b = self.block(at / BLOCK)?;
            let within = (at % BLOCK) as usize;
            let n = (b.len() - within).min((end - at) as usize);
            let dst = (at - offset) as usize;
            buf[dst..dst + n].copy_from_slice(&b[within..within + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.blob.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<std::ffi::OsString> {
        argv(v.iter().map(Into::into))
    }

    #[test]
    fn image_stands_in_for_the_positional() {
        let want: Vec<std::ffi::OsString> = ["erofs", "cat", "r:1", "--image", "r:1", "/f"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(args(&["erofs", "cat", "--image", "r:1", "/f"]), want);
        assert_eq!(args(&["erofs", "cat", "/f", "--image=r:1"])[2], "r:1");
        assert_eq!(args(&["erofs", "cat", "img", "/f"]).len(), 4);
    }
}
