//! The client: resolve references, open blobs, fetch small documents whole.

use std::io::Read;
use std::sync::Arc;

use crate::blob::Blob;
use crate::config::Config;
use crate::digest::{Digest, Hasher, HashingReader};
use crate::error::{Error, Result};
use crate::manifest::{self, Layer, MAX_MANIFEST, Manifest, decode_manifest};
use crate::reference::{Reference, Repository};
use crate::stats::{Counters, Stats};
use crate::transport::{Endpoint, Reply, Request, Transport};

/// A registry client. Cheap to clone (clones share connections, tokens and counters);
/// `Send + Sync`, blocking: one thread per request in flight.
#[derive(Clone)]
pub struct Client {
    pub(crate) t: Arc<Transport>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A reference resolved to an image manifest for one platform.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference resolved.
    pub reference: Reference,
    /// The digest of the image manifest.
    pub digest: Digest,
    /// The digest of the index it was chosen from, if the reference named an index.
    pub index_digest: Option<Digest>,
    /// The platform entry chosen from the index (`linux/amd64`), if any.
    pub platform: Option<String>,
    /// The manifest's media type (from the document or the reply's `Content-Type`).
    pub media_type: Option<String>,
    /// The config descriptor.
    pub config: Layer,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The manifest's annotations.
    pub annotations: std::collections::HashMap<String, String>,
}

impl Client {
    /// A client with `config`.
    ///
    /// # Errors
    /// [`Error::Config`] for an unreadable CA file.
    pub fn new(config: Config) -> Result<Client> {
        Ok(Client {
            t: Arc::new(Transport::new(config)?),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.t.config
    }

    /// The counters so far (shared by all clones and blobs of this client).
    pub fn stats(&self) -> Stats {
        self.t.counters.snapshot()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.t.counters
    }

    /// Run `f` on each endpoint (mirrors, then the registry) from `first` until one
    /// succeeds; return its index and answer, or the registry's error.
    pub(crate) fn on_endpoints<T>(
        &self,
        endpoints: &[Endpoint],
        first: usize,
        mut f: impl FnMut(&Endpoint) -> Result<T>,
    ) -> Result<(usize, T)> {
        let mut last = None;
        for (i, ep) in endpoints.iter().enumerate().skip(first) {
            match f(ep) {
                Ok(v) => return Ok((i, v)),
                Err(e) if ep.mirror => {
                    log::debug!("mirror {} failed, trying the next endpoint: {e}", ep.base);
                    Counters::add(&self.t.counters.mirror_fallbacks, 1);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // Only reachable when `first` skipped the registry itself.
        Err(last.unwrap_or_else(|| Error::Config("no endpoint to try".into())))
    }

    /// Fetch a manifest or index by tag or digest, checked against `expect` (and against
    /// the registry's `Docker-Content-Digest`).
    fn manifest(
        &self,
        repo: &Repository,
        reference: &str,
        expect: Option<&Digest>,
    ) -> Result<(Digest, Manifest, Option<String>)> {
        let endpoints = self.t.endpoints(repo)?;
        let scope = scope(repo);
        let path = format!("/v2/{}/manifests/{reference}", repo.name());
        let (_, r) = self.on_endpoints(&endpoints, 0, |ep| {
            let req = Request {
                head: false,
                url: ep.url(&path),
                endpoint: ep,
                scope: &scope,
                headers: vec![("accept", manifest::accept())],
            };
            let reply = self.t.send(&req)?;
            let url = reply.url.clone();
            match reply.status() {
                200 => {}
                404 => return Err(Error::NotFound { url }),
                status => {
                    let detail = reply.excerpt(self.counters());
                    return Err(Error::Status {
                        url,
                        status,
                        detail,
                    });
                }
            }
            let content_type = reply.header("content-type").map(str::to_owned);
            let announced = reply
                .header("docker-content-digest")
                .and_then(|d| d.parse::<Digest>().ok());
            let body = reply.read_limited(self.counters(), MAX_MANIFEST, "a manifest")?;
            let algorithm = expect
                .map(Digest::algorithm)
                .unwrap_or(crate::digest::Algorithm::Sha256);
            let mut h = Hasher::new(algorithm);
            h.update(&body);
            let digest = h.finish();
            for want in expect
                .into_iter()
                .chain(announced.as_ref().filter(|a| a.algorithm() == algorithm))
            {
                if *want != digest && !cfg!(fuzzing) {
                    return Err(Error::DigestMismatch {
                        what: url.clone(),
                        expected: want.clone(),
                        actual: digest,
                    });
                }
            }
            let m = decode_manifest(&body, content_type.as_deref())
                .map_err(|what| Error::UnsupportedManifest { url, what })?;
            Ok((digest, m, content_type))
        })?;
        Ok(r)
    }

    /// Resolve `reference` to the image manifest for the configured platform (through an
    /// index when the reference names one). Every document fetched is digest-checked.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NoPlatform`], [`Error::UnsupportedManifest`],
    /// [`Error::DigestMismatch`], and the transport's errors.
    pub fn resolve(&self, reference: &Reference) -> Result<Image> {
        let repo = reference.repository();
        let (digest, m, ct) = self.manifest(repo, &reference.manifest_ref(), reference.digest())?;
        let (index_digest, platform, digest, m, ct) = match m {
            Manifest::Image(m) => (None, None, digest, m, ct),
            Manifest::Index(index) => {
                let want = &self.t.config.platform;
                let chosen = index
                    .manifests()
                    .iter()
                    .filter_map(|d| {
                        d.platform()
                            .as_ref()
                            .and_then(|p| want.rank(p))
                            .map(|r| (r, d))
                    })
                    // The best rank; the first listed among equals.
                    .fold(
                        None::<(u32, &oci_spec::image::Descriptor)>,
                        |best, (r, d)| match best {
                            Some((br, _)) if br >= r => best,
                            _ => Some((r, d)),
                        },
                    );
                let Some((_, d)) = chosen else {
                    let available = index
                        .manifests()
                        .iter()
                        .filter_map(|d| d.platform().as_ref())
                        .map(|p| format!("{}/{}", p.os(), p.architecture()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Error::NoPlatform {
                        reference: reference.to_string(),
                        platform: want.to_string(),
                        available,
                    });
                };
                let child = Layer::from_descriptor(d);
                let (cd, cm, cct) =
                    self.manifest(repo, &child.digest.to_string(), Some(&child.digest))?;
                let Manifest::Image(cm) = cm else {
                    return Err(Error::UnsupportedManifest {
                        url: format!("{repo}@{cd}"),
                        what: "an index inside an index".into(),
                    });
                };
                let p = d.platform().as_ref().map(|p| {
                    let mut s = format!("{}/{}", p.os(), p.architecture());
                    if let Some(v) = p.variant() {
                        s.push('/');
                        s.push_str(v);
                    }
                    s
                });
                (Some(digest), p, cd, cm, cct)
            }
        };
        Ok(Image {
            reference: reference.clone(),
            digest,
            index_digest,
            platform,
            media_type: m
                .media_type()
                .as_ref()
                .map(|t| t.to_string())
                .or(ct.map(|c| c.split(';').next().unwrap_or("").trim().to_owned())),
            config: Layer::from_descriptor(m.config()),
            layers: m.layers().iter().map(Layer::from_descriptor).collect(),
            annotations: m.annotations().clone().unwrap_or_default(),
        })
    }

    /// A handle on blob `digest` of `repo`, its size asked with `HEAD`.
    ///
    /// # Errors
    /// [`Error::NotFound`] and the transport's errors.
    pub fn blob(&self, repo: &Repository, digest: &Digest) -> Result<Blob> {
        Blob::open(self.clone(), repo.clone(), digest.clone(), None)
    }

    /// A handle on blob `digest` of `repo` whose size is known (from a manifest, which is
    /// digest-checked): no request is sent until the first read.
    pub fn blob_with_size(&self, repo: &Repository, digest: &Digest, size: u64) -> Blob {
        Blob::with_size(self.clone(), repo.clone(), digest.clone(), size)
    }

    /// Fetch a whole blob of at most `limit` bytes (a config, a bootstrap layer) and check
    /// its digest.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::DigestMismatch`], and the transport's errors.
    pub fn fetch_blob(&self, repo: &Repository, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        self.get_blob(repo, digest, |reply, url| {
            let body = reply.read_limited(self.counters(), limit, "a whole blob")?;
            digest.verify(&body, || url.to_owned())?;
            Ok(body)
        })
    }

    /// Stream a whole blob into `out`, checking its digest at the end; returns the bytes
    /// written. On a mismatch the bytes already written are wrong: the caller must discard
    /// them (write to a temporary file and rename on success).
    ///
    /// # Errors
    /// [`Error::DigestMismatch`], [`Error::ShortBody`], and the transport's errors.
    pub fn copy_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        out: &mut dyn std::io::Write,
    ) -> Result<u64> {
        self.get_blob(repo, digest, |reply, url| {
            let transport = |source| Error::Transport {
                url: url.to_owned(),
                source,
            };
            let announced = reply.content_length()?;
            let mut body =
                HashingReader::new(reply.into_reader(self.counters()), digest.algorithm());
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let k = body.read(&mut buf).map_err(transport)?;
                if k == 0 {
                    break;
                }
                out.write_all(&buf[..k]).map_err(transport)?;
            }
            let n = body.end(announced, url)?;
            body.check(digest, url)?;
            Ok(n)
        })
    }

    /// `GET` blob `digest` of `repo` from the first endpoint that answers (mirrors, then the
    /// registry); `body(reply, url)` consumes a `200`'s body. Any other status is an error.
    pub(crate) fn get_blob<T>(
        &self,
        repo: &Repository,
        digest: &Digest,
        mut body: impl FnMut(Reply, &str) -> Result<T>,
    ) -> Result<T> {
        let endpoints = self.t.endpoints(repo)?;
        let scope = scope(repo);
        let path = format!("/v2/{}/blobs/{digest}", repo.name());
        let (_, v) = self.on_endpoints(&endpoints, 0, |ep| {
            let req = Request {
                head: false,
                url: ep.url(&path),
                endpoint: ep,
                scope: &scope,
                headers: Vec::new(),
            };
            let reply = self.t.send(&req)?;
            let url = reply.url.clone();
            match reply.status() {
                200 => body(reply, &url),
                404 => Err(Error::NotFound { url }),
                status => {
                    let detail = reply.excerpt(self.counters());
                    Err(Error::Status {
                        url,
                        status,
                        detail,
                    })
                }
            }
        })?;
        Ok(v)
    }
}

/// The token scope for pulling from `repo`.
pub(crate) fn scope(repo: &Repository) -> String {
    format!("repository:{}:pull", repo.name())
}
