//! Image references: `[host[:port]/]repo[:tag|@digest]`, normalized as Docker does.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The registry a reference without a host names.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A repository in a registry: `host[:port]/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    registry: String,
    name: String,
}

impl Repository {
    /// The registry as named (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the registry API is served from: `registry-1.docker.io` for
    /// Docker Hub, the registry itself otherwise.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository name (`library/debian`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// What a reference names in its repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A tag (`latest` when the reference names none).
    Tag(String),
    /// A manifest digest; a tag given with it (`repo:tag@digest`) is kept for display only.
    Digest {
        /// The digest.
        digest: Digest,
        /// The tag written before it, if any.
        tag: Option<String>,
    },
}

/// A parsed, normalized image reference.
///
/// ```
/// use oci_lazy::Reference;
/// let r: Reference = "debian".parse()?;
/// assert_eq!(r.to_string(), "docker.io/library/debian:latest");
/// assert_eq!(r.repository().api_host(), "registry-1.docker.io");
/// let r: Reference = "127.0.0.1:5000/team/app:v1".parse()?;
/// assert_eq!((r.repository().registry(), r.repository().name()), ("127.0.0.1:5000", "team/app"));
/// # Ok::<(), oci_lazy::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    repository: Repository,
    target: Target,
}

impl Reference {
    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The tag or digest.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The string to put in `/v2/<name>/manifests/<this>`.
    pub fn manifest_ref(&self) -> String {
        match &self.target {
            Target::Tag(t) => t.clone(),
            Target::Digest { digest, .. } => digest.to_string(),
        }
    }

    /// The digest, when the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        match &self.target {
            Target::Digest { digest, .. } => Some(digest),
            Target::Tag(_) => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(t) => write!(f, "{}:{t}", self.repository),
            Target::Digest { digest, tag: None } => write!(f, "{}@{digest}", self.repository),
            Target::Digest {
                digest,
                tag: Some(t),
            } => write!(f, "{}:{t}@{digest}", self.repository),
        }
    }
}

impl FromStr for Reference {
    type Err = Error;

    /// Parse with `oci-spec`'s implementation of Docker's reference grammar and
    /// normalization (`docker.io`, `index.docker.io`, `library/`, the `latest` tag); digests
    /// must be ones this crate can check.
    fn from_str(s: &str) -> Result<Reference> {
        let err = |reason: String| Error::InvalidReference {
            reference: s.chars().take(300).collect(),
            reason,
        };
        if s.len() > 1024 {
            return Err(err("longer than 1024 bytes".into()));
        }
        let r = oci_spec::distribution::Reference::try_from(s).map_err(|e| err(e.to_string()))?;
        // oci-spec 0.10 lets an upper-case first component through when it looks like a host
        // but is not one (`Ab/c` → `docker.io/Ab/c`); Docker refuses it (found by fuzzing).
        if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase".into()));
        }
        let digest = r
            .digest()
            .map(|d| d.parse::<Digest>().map_err(|e| err(e.to_string())))
            .transpose()?;
        let tag = r.tag().map(str::to_owned);
        let target = match (digest, tag) {
            (Some(digest), tag) => Target::Digest { digest, tag },
            (None, Some(t)) => Target::Tag(t),
            (None, None) => Target::Tag("latest".to_owned()),
        };
        Ok(Reference {
            repository: Repository {
                registry: r.registry().to_owned(),
                name: r.repository().to_owned(),
            },
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_defaults() {
        for (input, want) in [
            ("debian", "docker.io/library/debian:latest"),
            ("debian:bookworm", "docker.io/library/debian:bookworm"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/debian", "docker.io/library/debian:latest"),
            ("index.docker.io/debian:12", "docker.io/library/debian:12"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
            ("ghcr.io/o/r:v1.2-rc_3", "ghcr.io/o/r:v1.2-rc_3"),
        ] {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
        }
        let r: Reference = "debian".parse().unwrap();
        assert_eq!(r.repository().api_host(), DOCKER_HUB_API);
        assert_eq!(r.manifest_ref(), "latest");
    }

    #[test]
    fn digests() {
        let r: Reference = format!("127.0.0.1:5000/app@{D}").parse().unwrap();
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.manifest_ref(), D);
        let r: Reference = format!("app:v1@{D}").parse().unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/app:v1@{D}"));
        assert_eq!(r.manifest_ref(), D);
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "UPPER",
            "D8b/1",
            "Team/app:v1",
            "app:",
            "app:-x",
            "app@sha256:xyz",
            "a//b",
            "/app",
            "app/",
            "ex ample.com/app",
            "example.com:/app",
            "app@sha384:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a..b",
            "a/b:c:d",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn display_parses_back(s in "[a-z0-9./:@_-]{1,60}") {
            if let Ok(r) = s.parse::<Reference>() {
                let again: Reference = r.to_string().parse().unwrap();
                prop_assert_eq!(again, r);
            }
        }
    }
}
