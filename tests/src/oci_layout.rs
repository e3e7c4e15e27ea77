//! OCI image layouts written by hand (`oci-layout`, `index.json`, `blobs/sha256/…`), the
//! input of `skopeo copy oci:DIR:TAG docker://…` ([`crate::skopeo`]).
//!
//! ```no_run
//! use tests::oci_layout::{OciLayout, Platform, media};
//! let scratch = tests::scratch_dir("example/layout");
//! let layout = OciLayout::create(&scratch);
//! let layer = layout.add_blob(media::LAYER_TAR_GZIP, b"...gzip bytes...");
//! let config = layout.add_config(&Platform::host(), &["sha256:<diff id>".into()]);
//! let manifest = layout.add_manifest(&config, &[layer], &Default::default());
//! layout.tag("v1", &manifest);
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Media types the fixtures use.
pub mod media {
    /// OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A gzip tar layer (also Nydus's bootstrap layer and zran's original layers).
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A Nydus data blob.
    pub const NYDUS_BLOB: &str = "application/vnd.oci.image.layer.nydus.blob.v1";
    /// containerd's native EROFS layer: a whole EROFS image.
    pub const EROFS_LAYER: &str = "application/vnd.erofs.layer.v1";
}

/// Annotations Nydus puts on its layers.
pub mod annotation {
    /// On each Nydus data blob layer, value `"true"`.
    pub const NYDUS_BLOB: &str = "containerd.io/snapshot/nydus-blob";
    /// On the Nydus bootstrap layer, value `"true"`.
    pub const NYDUS_BOOTSTRAP: &str = "containerd.io/snapshot/nydus-bootstrap";
    /// The tag of a manifest in `index.json`.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// The platform of an image (and of a manifest in an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8`, ... (empty: none).
    pub variant: String,
    /// `os.features`, e.g. `nydus.remoteimage.v1`.
    pub os_features: Vec<String>,
}

impl Platform {
    /// `linux/ARCH` for `arch` (OCI names).
    pub fn linux(arch: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: String::new(),
            os_features: Vec::new(),
        }
    }

    /// The platform the tests run on (`linux/amd64` on x86_64, `linux/arm64` on aarch64).
    pub fn host() -> Platform {
        Platform::linux(oci_arch(std::env::consts::ARCH))
    }

    /// A platform that is *not* the host's (for two-platform indexes).
    pub fn other() -> Platform {
        let mut p = if Platform::host().architecture == "arm64" {
            Platform::linux("amd64")
        } else {
            Platform::linux("arm64")
        };
        if p.architecture == "arm64" {
            p.variant = "v8".into();
        }
        p
    }

    /// With `os.features` set (Nydus: `nydus.remoteimage.v1`).
    pub fn with_features(mut self, features: &[&str]) -> Platform {
        self.os_features = features.iter().map(|s| s.to_string()).collect();
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "os": self.os, "architecture": self.architecture });
        if !self.variant.is_empty() {
            v["variant"] = json!(self.variant);
        }
        if !self.os_features.is_empty() {
            v["os.features"] = json!(self.os_features);
        }
        v
    }
}

/// The OCI architecture name for a Rust `std::env::consts::ARCH`.
pub fn oci_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Platform (manifests in an index).
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    /// With one more annotation.
    pub fn annotate(mut self, key: &str, value: &str) -> Descriptor {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// With a platform.
    pub fn with_platform(mut self, p: Platform) -> Descriptor {
        self.platform = Some(p);
        self
    }

    /// The descriptor as OCI JSON.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        });
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        if let Some(p) = &self.platform {
            v["platform"] = p.to_json();
        }
        v
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// `sha256:<hex>` of a file's contents (streamed).
pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OCI image layout directory being written.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
    /// The `config.Cmd` of the image configs written ([`OciLayout::with_cmd`]).
    cmd: Vec<String>,
}

impl OciLayout {
    /// Create the layout in `dir` (created; existing blobs and tags are kept).
    pub fn create(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = dir.join("index.json");
        if !index.exists() {
            std::fs::write(&index, r#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        }
        OciLayout {
            dir: dir.to_path_buf(),
            cmd: Vec::new(),
        }
    }

    /// Write `cmd` as the `config.Cmd` of the image configs added from now on (what the
    /// image runs, as Docker's `python` images say `["python3"]`); none by default.
    pub fn with_cmd(mut self, cmd: &[&str]) -> OciLayout {
        self.cmd = cmd.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `digest` (`sha256:…`) lives.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// Add `data` as a blob.
    pub fn add_blob(&self, media_type: &str, data: &[u8]) -> Descriptor {
        let digest = sha256_digest(data);
        std::fs::write(self.blob_path(&digest), data).unwrap();
        Descriptor {
            media_type: media_type.into(),
            digest,
            size: data.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    /// Add the file at `path` as a blob (copied).
    pub fn add_blob_file(&self, media_type: &str, path: &Path) -> Descriptor {
        let digest = sha256_file(path);
        std::fs::copy(path, self.blob_path(&digest)).unwrap();
        Descriptor {
            media_type: media_type.into(),
            digest,
            size: std::fs::metadata(path).unwrap().len(),
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    /// Add an image config for `platform` with `rootfs.diff_ids` = `diff_ids`.
    pub fn add_config(&self, platform: &Platform, diff_ids: &[String]) -> Descriptor {
        let mut v = json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": { "Env": ["PATH=/usr/bin:/bin"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": diff_ids.iter().map(|_| json!({ "created_by": "erofs-rs tests" })).collect::<Vec<_>>(),
        });
        if !platform.variant.is_empty() {
            v["variant"] = json!(platform.variant);
        }
        if !self.cmd.is_empty() {
            v["config"]["Cmd"] = json!(self.cmd);
        }
        self.add_blob(media::CONFIG, v.to_string().as_bytes())
    }

    /// Add an image manifest.
    pub fn add_manifest(
        &self,
        config: &Descriptor,
        layers: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Descriptor {
        let mut v = json!({
            "schemaVersion": 2,
            "mediaType": media::MANIFEST,
            "config": config.to_json(),
            "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        if !annotations.is_empty() {
            v["annotations"] = json!(annotations);
        }
        self.add_blob(media::MANIFEST, v.to_string().as_bytes())
    }

    /// Add an image index over `manifests` (each with its platform set).
    pub fn add_index(&self, manifests: &[Descriptor]) -> Descriptor {
        let v = json!({
            "schemaVersion": 2,
            "mediaType": media::INDEX,
            "manifests": manifests.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
        });
        self.add_blob(media::INDEX, v.to_string().as_bytes())
    }

    /// Point tag `tag` (in `index.json`) at `desc`, replacing an older entry of that tag.
    pub fn tag(&self, tag: &str, desc: &Descriptor) {
        let path = self.dir.join("index.json");
        let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let list = index["manifests"]
            .as_array_mut()
            .expect("index.json manifests");
        list.retain(|m| m["annotations"][annotation::REF_NAME] != json!(tag));
        list.push(desc.clone().annotate(annotation::REF_NAME, tag).to_json());
        std::fs::write(&path, index.to_string()).unwrap();
    }

    /// Read blob `digest` back.
    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(self.blob_path(digest)).unwrap()
    }
}
