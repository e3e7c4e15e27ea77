//! The image kinds a node can mount lazily, as their manifests show them: Nydus RAFS v6 (a
//! bootstrap layer marked by an annotation, the data blobs as further layers) and
//! containerd's native EROFS layers. What is inside the layers (EROFS, RAFS) is the caller's
//! business; this module knows the media types, the annotation, and the bootstrap layer's
//! packing (a gzip tar holding `image/image.boot`).

use std::io::Read;

use crate::client::{Client, Image};
use crate::config::Config;
use crate::digest::HashingReader;
use crate::error::{Error, Result};
use crate::manifest::Layer;
use crate::reference::Repository;

/// Media type of a containerd EROFS layer.
pub const EROFS_LAYER: &str = "application/vnd.erofs.layer.v1";
/// Annotation (value `"true"`) on a Nydus image's bootstrap layer.
pub const NYDUS_BOOTSTRAP: &str = "containerd.io/snapshot/nydus-bootstrap";
/// The bootstrap's path inside the bootstrap layer.
pub const BOOTSTRAP_PATH: &str = "image/image.boot";
/// The OS feature that marks a Nydus manifest in an index.
pub const NYDUS_FEATURE: &str = "nydus.remoteimage.v1";
/// Largest bootstrap layer fetched (compressed), and bootstrap unpacked.
pub const MAX_BOOTSTRAP: u64 = 512 << 20;

/// How an image's layers can be mounted lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LazyLayout<'a> {
    /// A Nydus RAFS v6 image: its bootstrap layer (the data blobs are other layers, named
    /// by the bootstrap's blob table).
    Nydus {
        /// The bootstrap layer.
        bootstrap: &'a Layer,
    },
    /// containerd EROFS layers: the layers of media type [`EROFS_LAYER`]
    /// ([`Image::erofs_layers`]), each a whole EROFS image; the rootfs is their overlay.
    Erofs,
}

impl Image {
    /// How this image can be mounted lazily, `None` if it cannot (plain tar layers).
    pub fn lazy_layout(&self) -> Option<LazyLayout<'_>> {
        if let Some(bootstrap) = self.layers.iter().find(|l| {
            l.annotations
                .get(NYDUS_BOOTSTRAP)
                .is_some_and(|v| v == "true")
        }) {
            return Some(LazyLayout::Nydus { bootstrap });
        }
        self.layers
            .iter()
            .any(|l| l.media_type == EROFS_LAYER)
            .then_some(LazyLayout::Erofs)
    }

    /// The indexes of the EROFS layers among the manifest's layers, bottom first.
    pub fn erofs_layers(&self) -> Vec<usize> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.media_type == EROFS_LAYER)
            .map(|(i, _)| i)
            .collect()
    }
}

impl Config {
    /// This configuration preferring, in an index, the manifest marked as a Nydus image for
    /// this platform (the one that can be served lazily).
    #[must_use]
    pub fn prefer_nydus(mut self) -> Config {
        let features = &mut self.platform.preferred_features;
        if !features.iter().any(|f| f == NYDUS_FEATURE) {
            features.push(NYDUS_FEATURE.to_owned());
        }
        self
    }
}

impl Client {
    /// The bootstrap of a Nydus image: its layer fetched whole (at most [`MAX_BOOTSTRAP`]
    /// bytes) and unpacked ([`unpack_bootstrap`]) as its bytes arrive, so the gunzip
    /// overlaps the transfer; the bootstrap is handed out only once the whole layer matched
    /// its digest (a mismatch is reported before any unpacking error).
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::DigestMismatch`], [`Error::ShortBody`],
    /// [`Error::BadLayer`], and the transport's errors.
    pub fn fetch_nydus_bootstrap(&self, repo: &Repository, layer: &Layer) -> Result<Vec<u8>> {
        let digest = &layer.digest;
        self.get_blob(repo, digest, |reply, url| {
            let announced = reply.content_length()?;
            let too_large = |size| Error::TooLarge {
                url: url.to_owned(),
                what: "a whole blob",
                size,
                limit: MAX_BOOTSTRAP,
            };
            if let Some(n) = announced
                && n > MAX_BOOTSTRAP
            {
                return Err(too_large(n));
            }
            let mut body = HashingReader::new(
                reply.into_reader(self.counters()).take(MAX_BOOTSTRAP + 1),
                digest.algorithm(),
            );
            let unpacked = unpack_bootstrap_from(&mut body);
            // The rest of the body (past the tar entry: padding, the gzip trailer), hashed
            // too.
            let _ = std::io::copy(&mut body, &mut std::io::sink());
            let got = body.end(announced, url)?;
            if got > MAX_BOOTSTRAP {
                return Err(too_large(got));
            }
            body.check(digest, url)?;
            unpacked.map_err(|e| Error::BadLayer {
                digest: digest.clone(),
                what: e.to_string(),
            })
        })
    }
}

/// [`BOOTSTRAP_PATH`] out of a gzip tar, at most [`MAX_BOOTSTRAP`] bytes.
///
/// # Errors
/// A broken gzip or tar, no bootstrap, or one too large.
pub fn unpack_bootstrap(tgz: &[u8]) -> std::io::Result<Vec<u8>> {
    unpack_bootstrap_from(tgz)
}

/// [`unpack_bootstrap`] of a gzip tar read from `tgz` (read only as far as the bootstrap's
/// entry).
fn unpack_bootstrap_from(tgz: impl Read) -> std::io::Result<Vec<u8>> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let too_large = || bad(format!("{BOOTSTRAP_PATH} exceeds {MAX_BOOTSTRAP} bytes"));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    for entry in tar.entries()? {
        let entry = entry?;
        if entry.path()?.to_string_lossy().trim_start_matches("./") != BOOTSTRAP_PATH {
            continue;
        }
        if entry.header().size()? > MAX_BOOTSTRAP {
            return Err(too_large());
        }
        let mut out = Vec::new();
        entry.take(MAX_BOOTSTRAP + 1).read_to_end(&mut out)?;
        if out.len() as u64 > MAX_BOOTSTRAP {
            return Err(too_large());
        }
        return Ok(out);
    }
    Err(bad(format!("no {BOOTSTRAP_PATH} in the bootstrap layer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(path: &str, data: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, data).unwrap();
        let raw = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn bootstrap_layer_unpacks() {
        // A gzip tar with image/image.boot, as nydusify writes it.
        let layer = tgz("image/image.boot", b"RAFS!");
        assert_eq!(unpack_bootstrap(&layer).unwrap(), b"RAFS!");
        assert_eq!(
            unpack_bootstrap(&tgz("./image/image.boot", b"x")).unwrap(),
            b"x"
        );
        assert!(unpack_bootstrap(&layer[..layer.len() / 2]).is_err());
        assert!(unpack_bootstrap(b"not gzip").is_err());
        let other = unpack_bootstrap(&tgz("image/other", b"x")).unwrap_err();
        assert!(other.to_string().contains("no image/image.boot"), "{other}");
    }
}
