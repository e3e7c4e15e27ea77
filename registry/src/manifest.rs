//! Manifests and indexes (OCI and Docker schema 2), decoded with `oci-spec`.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::Digest;

/// Largest manifest or index read (Docker Hub's limit is 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header of manifest requests.
pub(crate) fn accept() -> String {
    [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ")
}

/// A decoded manifest or index.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// An index (manifest list): one manifest per platform.
    Index(Box<ImageIndex>),
    /// An image manifest.
    Image(Box<ImageManifest>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
}

/// Decode a manifest or index reply; `content_type` is the reply's `Content-Type` (used
/// when the document has no `mediaType`). An error says what is wrong; never panics.
pub fn decode_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, String> {
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(format!("{} bytes", bytes.len()));
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    match probe.schema_version.as_ref().and_then(|v| v.as_u64()) {
        Some(2) => {}
        Some(v) => return Err(format!("schemaVersion {v} (only 2 is read)")),
        None => return Err("no schemaVersion".into()),
    }
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    let media_type = probe.media_type.as_deref().or(content_type);
    let is_index = match media_type {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        _ if probe.manifests.is_some() => true,
        _ if probe.layers.is_some() => false,
        other => {
            return Err(format!(
                "media type {other:?} is neither a manifest nor an index"
            ));
        }
    };
    if is_index {
        let index = ImageIndex::from_reader(bytes).map_err(|e| format!("index: {e}"))?;
        for d in index.manifests() {
            check_descriptor(d)?;
        }
        Ok(Manifest::Index(Box::new(index)))
    } else {
        let m = ImageManifest::from_reader(bytes).map_err(|e| format!("manifest: {e}"))?;
        check_descriptor(m.config())?;
        for d in m.layers() {
            check_descriptor(d)?;
        }
        Ok(Manifest::Image(Box::new(m)))
    }
}

/// Every descriptor's digest is one this crate can check.
fn check_descriptor(d: &Descriptor) -> Result<(), String> {
    d.digest()
        .to_string()
        .parse::<Digest>()
        .map(drop)
        .map_err(|e| format!("descriptor: {e}"))
}

/// One layer (or the config) of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The media type (`application/vnd.erofs.layer.v1`, a Nydus blob type, …).
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The descriptor's annotations.
    pub annotations: HashMap<String, String>,
}

impl Layer {
    pub(crate) fn from_descriptor(d: &Descriptor) -> Layer {
        Layer {
            media_type: d.media_type().to_string(),
            // Checked in `decode_manifest`; a digest of another algorithm would have been
            // refused there, so this fallback is never taken.
            digest: d
                .digest()
                .to_string()
                .parse()
                .unwrap_or_else(|_| Digest::sha256(b"")),
            size: d.size(),
            annotations: d.annotations().clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(media: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.erofs.layer.v1","digest":"{D2}","size":4096,
                "annotations":{{"a":"b"}}}}]}}"#
        )
    }

    #[test]
    fn manifests_and_indexes() {
        let Manifest::Image(m) = decode_manifest(manifest(OCI_MANIFEST).as_bytes(), None).unwrap()
        else {
            panic!("not a manifest")
        };
        let l = Layer::from_descriptor(&m.layers()[0]);
        assert_eq!(l.media_type, "application/vnd.erofs.layer.v1");
        assert_eq!(l.digest.to_string(), D2);
        assert_eq!((l.size, l.annotations["a"].as_str()), (4096, "b"));
        assert!(matches!(
            decode_manifest(manifest(DOCKER_MANIFEST).as_bytes(), None),
            Ok(Manifest::Image(_))
        ));
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,
              "platform":{{"os":"linux","architecture":"amd64","os.features":["nydus.remoteimage.v1"]}}}}]}}"#
        );
        let Manifest::Index(i) =
            decode_manifest(idx.as_bytes(), Some(&format!("{OCI_INDEX}; charset=utf-8"))).unwrap()
        else {
            panic!("not an index")
        };
        assert_eq!(i.manifests().len(), 1);
    }

    #[test]
    fn refusals() {
        for bad in [
            "".to_string(),
            "{}".into(),
            r#"{"schemaVersion":1,"fsLayers":[]}"#.into(),
            r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.into(),
            manifest(OCI_MANIFEST).replace(D2, "sha256:12"),
            manifest(OCI_MANIFEST).replace(D2, "md5:d41d8cd98f00b204e9800998ecf8427e"),
            manifest(OCI_MANIFEST).replace("4096", "-1"),
        ] {
            assert!(decode_manifest(bad.as_bytes(), None).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300), ct in "\\PC{0,40}") {
            let _ = decode_manifest(&b, Some(&ct));
        }

        #[test]
        fn mutated_manifests_never_panic(i in 0usize..400, c in any::<u8>()) {
            let mut m = manifest(OCI_MANIFEST).into_bytes();
            let i = i % m.len();
            m[i] = c;
            let _ = decode_manifest(&m, None);
        }
    }
}
