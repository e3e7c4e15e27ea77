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

const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn valid_host(h: &str) -> bool {
    if h.is_empty() || h.len() > 255 {
        return false;
    }
    // An IPv6 literal in brackets, with an optional port.
    if let Some(rest) = h.strip_prefix('[') {
        let Some((addr, port)) = rest.split_once(']') else {
            return false;
        };
        return addr.parse::<std::net::Ipv6Addr>().is_ok()
            && (port.is_empty() || port.strip_prefix(':').is_some_and(valid_port));
    }
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    port.is_none_or(valid_port)
        && !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|x| x.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference> {
        let err = |reason| Error::InvalidReference {
            reference: s.chars().take(300).collect(),
            reason,
        };
        if s.len() > 1024 {
            return Err(err("longer than 1024 bytes"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| err("bad digest"))?)),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (rest, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(err("bad tag"));
                }
                (&rest[..last_slash + i], Some(t.to_owned()))
            }
            None => (rest, None),
        };
        // The first component is a host when it looks like one (Docker's rule).
        let (registry, name) = match rest.split_once('/') {
            Some((first, name))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(err("bad registry host"));
                }
                let host = if first == "index.docker.io" {
                    DOCKER_HUB
                } else {
                    first
                };
                (host.to_owned(), name.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), rest.to_owned()),
        };
        let name = if registry == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name
        };
        if name.len() > MAX_NAME {
            return Err(err("repository name longer than 255 bytes"));
        }
        if !name.split('/').all(valid_component) {
            return Err(err(
                "bad repository name (lowercase letters, digits, separators)",
            ));
        }
        let target = match (digest, tag) {
            (Some(digest), tag) => Target::Digest { digest, tag },
            (None, Some(t)) => Target::Tag(t),
            (None, None) => Target::Tag("latest".to_owned()),
        };
        Ok(Reference {
            repository: Repository { registry, name },
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
            ("[::1]:5000/app:x", "[::1]:5000/app:x"),
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
            "app:",
            "app:-x",
            "app@sha256:xyz",
            "a//b",
            "/app",
            "app/",
            "ex ample.com/app",
            "example.com:99999/app",
            "example.com:/app",
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
