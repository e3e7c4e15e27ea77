//! Platforms, and choosing a manifest for one from an index.

use std::fmt;

/// An OCI platform: what an index entry is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `riscv64`, `s390x`, `ppc64le`, `386`.
    pub architecture: String,
    /// `v7`, `v8`; `None` matches any variant.
    pub variant: Option<String>,
    /// OS features an entry is preferred for when it lists them all (for example
    /// `nydus.remoteimage.v1`, which marks a Nydus manifest beside its OCI original).
    /// Entries without them still match.
    pub preferred_features: Vec<String>,
}

impl Platform {
    /// The platform this program was built for.
    pub fn current() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
            preferred_features: Vec::new(),
        }
    }

    /// How well an index entry's platform fits: `None` when it does not match, else a
    /// rank (higher is better).
    pub(crate) fn rank(&self, p: &oci_spec::image::Platform) -> Option<u32> {
        if p.os().to_string() != self.os || p.architecture().to_string() != self.architecture {
            return None;
        }
        let mut rank = 1;
        match (&self.variant, p.variant()) {
            (Some(want), Some(have)) if want != have => return None,
            (Some(_), Some(_)) => rank += 1,
            _ => {}
        }
        if !self.preferred_features.is_empty() {
            let have = p.os_features().as_deref().unwrap_or_default();
            if self.preferred_features.iter().all(|f| have.contains(f)) {
                rank += 2;
            }
        }
        Some(rank)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}
