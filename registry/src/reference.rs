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
        if let Some(r) = parse_plain(s) {
            return Ok(r);
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

/// The common shape `HOST[:PORT]/PATH[:TAG]` (a host with a `.` or a port, or `localhost`,
/// not Docker Hub's; ASCII tag; no digest), checked against the reference grammar by hand,
/// or `None` for anything else, which `oci-spec` parses. The same result as `oci-spec`
/// (`plain_parse_agrees_with_oci_spec`), without compiling its reference regex, which costs
/// ~50 ms on the first parse here and ~0.5 s in a TCG guest, on the critical path of every
/// container start.
fn parse_plain(s: &str) -> Option<Reference> {
    if s.contains('@') {
        return None;
    }
    let (host, rest) = s.split_once('/')?;
    if !(host.contains('.') || host.contains(':') || host == "localhost")
        || host == "docker.io"
        || host == "index.docker.io"
    {
        return None;
    }
    let (domain, port) = match host.split_once(':') {
        Some((d, p)) => (d, Some(p)),
        None => (host, None),
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if !domain.split('.').all(component)
        || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (name, tag) = match rest.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (rest, None),
    };
    if name.len() > 255 || !name.split('/').all(path_component) {
        return None;
    }
    if let Some(t) = tag {
        let b = t.as_bytes();
        let word = |x: &u8| x.is_ascii_alphanumeric() || *x == b'_';
        if b.is_empty()
            || b.len() > 128
            || !word(&b[0])
            || !b.iter().all(|x| word(x) || *x == b'.' || *x == b'-')
        {
            return None;
        }
    }
    Some(Reference {
        repository: Repository {
            registry: host.to_owned(),
            name: name.to_owned(),
        },
        target: Target::Tag(tag.unwrap_or("latest").to_owned()),
    })
}

/// A path component of the grammar: `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn path_component(c: &str) -> bool {
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
        let sep = &b[start..i];
        let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|x| *x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `oci-spec`'s parse alone (what `from_str` does when `parse_plain` declines).
    fn via_oci_spec(s: &str) -> Option<(String, String, Option<String>)> {
        let r = oci_spec::distribution::Reference::try_from(s).ok()?;
        if r.digest().is_some() || r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        Some((
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned),
        ))
    }

    fn plain(s: &str) -> Option<(String, String, Option<String>)> {
        let r = parse_plain(s)?;
        let Target::Tag(t) = r.target else {
            return None;
        };
        Some((r.repository.registry, r.repository.name, Some(t)))
    }

    #[test]
    fn plain_references_skip_the_regex() {
        for s in [
            "10.0.2.2:45399/start:nydus",
            "127.0.0.1:5000/team/app",
            "localhost/a__b/c-d.e:V1_2.3-x",
            "ghcr.io/o/r:v1",
        ] {
            assert!(parse_plain(s).is_some(), "{s}");
            assert_eq!(plain(s), via_oci_spec(s), "{s}");
        }
        for s in [
            "debian",
            "user/app",
            "docker.io/x/y",
            "index.docker.io/x",
            "a.b/c@sha256:00",
            "a.b/C",
            "a.b/c:d:e",
            "a.b/c:-x",
            "a_b.c/d",
            "a.b:/c",
            "-a.b/c",
            "a.b/c..d",
            "a.b/c___d",
        ] {
            assert!(parse_plain(s).is_none(), "{s} taken by the plain parser");
        }
    }

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
        // About 6% of the generated references take the plain path: enough cases that a few
        // hundred of them (in both tests) are compared with oci-spec's answer.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn plain_parse_agrees_with_oci_spec(
            s in "([a-zA-Z0-9_-]{1,6}(\\.[a-zA-Z0-9_-]{1,5}){0,2}(:[0-9a-z]{0,5})?|localhost)(/[a-z0-9._-]{1,8}){1,3}(:[a-zA-Z0-9_.-]{0,6})?",
        ) {
            if let Some(p) = plain(&s) {
                prop_assert_eq!(Some(p), via_oci_spec(&s), "{}", s);
            }
        }

        #[test]
        fn plain_parse_agrees_on_any_string(s in "[a-zA-Z0-9./:_-]{1,40}") {
            if let Some(p) = plain(&s) {
                prop_assert_eq!(Some(p), via_oci_spec(&s), "{}", s);
            }
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
