//! Credentials for a registry: given explicitly, or read from a Docker config file
//! (`auths`, `credHelpers`, `credsStore`) with the `docker_credential` crate.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};

use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;

/// What to authenticate with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or personal access token).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in the config file), exchanged at the
    /// token endpoint with `grant_type=refresh_token`.
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .finish_non_exhaustive(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(..)"),
        }
    }
}

/// The key a registry has in a Docker config file (`docker login` writes Docker Hub's as
/// its old index URL).
pub(crate) fn config_key(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    }
}

/// The config files looked at, in order: `explicit`, else `$REGISTRY_AUTH_FILE`, else
/// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub(crate) fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(p));
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// Look up the credentials of `registry` in the config file at `path`. A missing file or
/// no entry is `Ok(None)` (anonymous); an unreadable or malformed file, or a failing
/// credential helper, is an error.
pub(crate) fn from_config_file(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let err = |reason: String| Error::Credentials {
        host: registry.to_owned(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("{}: {e}", path.display()))),
    };
    match docker_credential::get_credential_from_reader(BufReader::new(file), config_key(registry))
    {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credentials::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Credentials::IdentityToken(t))),
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
        Err(e) => Err(err(format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oci-lazy-cred-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn auths_entries() {
        let d = tmp("auths");
        // "alice:s3cret:x" (a password may hold ':').
        let p = write(
            &d,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0Ong="},
            "https://index.docker.io/v1/":{"identitytoken":"refresh"}}}"#,
        );
        assert_eq!(
            from_config_file(&p, "127.0.0.1:5000").unwrap(),
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "s3cret:x".into()
            })
        );
        assert_eq!(
            from_config_file(&p, "docker.io").unwrap(),
            Some(Credentials::IdentityToken("refresh".into()))
        );
        assert_eq!(from_config_file(&p, "other.example").unwrap(), None);
        assert_eq!(from_config_file(&d.join("absent.json"), "x").unwrap(), None);
        let bad = write(&d, "{not json");
        assert!(matches!(
            from_config_file(&bad, "x"),
            Err(Error::Credentials { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
