//! Docker credential files for a test: a `config.json` with `auths` (base64 `user:password`),
//! with `credHelpers` naming a credential helper, or with `credsStore`, and the helper itself
//! (`docker-credential-NAME`, a shell script that answers `get` with the JSON Docker expects
//! and logs every host it was asked about).
//!
//! The files follow Docker's format, which containers/image (skopeo's `--authfile`) also
//! reads; the fixture's tests prove each form with skopeo against an authenticated registry.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

/// The written files.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The directory holding `config.json` (`DOCKER_CONFIG`).
    pub dir: PathBuf,
    /// `DIR/config.json` (`--auth-file`, `REGISTRY_AUTH_FILE`).
    pub file: PathBuf,
    /// The directory holding the credential helper, when there is one (prepend it to `PATH`).
    pub helper_dir: Option<PathBuf>,
    /// The helper's log: one line per `get`, the host asked about.
    pub helper_log: Option<PathBuf>,
}

impl DockerConfig {
    /// `{"auths": {HOST: {"auth": base64(user:password)}}}` for each entry, in `dir`.
    pub fn auths(dir: &Path, entries: &[(&str, &str, &str)]) -> DockerConfig {
        let mut auths = serde_json::Map::new();
        for (host, user, password) in entries {
            auths.insert(
                host.to_string(),
                json!({ "auth": STANDARD.encode(format!("{user}:{password}")) }),
            );
        }
        Self::write(dir, json!({ "auths": auths }), None)
    }

    /// `{"credHelpers": {HOST: NAME}}` and `docker-credential-NAME`, which knows `user` /
    /// `password` for `host` only (any other host: "credentials not found", exit 1).
    pub fn cred_helper(
        dir: &Path,
        name: &str,
        host: &str,
        user: &str,
        password: &str,
    ) -> DockerConfig {
        let helper = Self::helper(dir, name, host, user, password);
        Self::write(dir, json!({ "credHelpers": { host: name } }), Some(helper))
    }

    /// `{"credsStore": NAME}` and the same helper as [`DockerConfig::cred_helper`].
    pub fn creds_store(
        dir: &Path,
        name: &str,
        host: &str,
        user: &str,
        password: &str,
    ) -> DockerConfig {
        let helper = Self::helper(dir, name, host, user, password);
        Self::write(dir, json!({ "credsStore": name }), Some(helper))
    }

    /// The hosts the helper was asked about, in order.
    pub fn helper_calls(&self) -> Vec<String> {
        self.helper_log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// `PATH` with the helper's directory first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut dirs: Vec<PathBuf> = self.helper_dir.iter().cloned().collect();
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs).expect("PATH entries without ':'")
    }

    fn write(dir: &Path, v: serde_json::Value, helper: Option<(PathBuf, PathBuf)>) -> DockerConfig {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        let (helper_dir, helper_log) = match helper {
            Some((d, l)) => (Some(d), Some(l)),
            None => (None, None),
        };
        DockerConfig {
            dir: dir.to_path_buf(),
            file,
            helper_dir,
            helper_log,
        }
    }

    /// Write `bin/docker-credential-NAME`; returns (bin dir, log path).
    fn helper(
        dir: &Path,
        name: &str,
        host: &str,
        user: &str,
        password: &str,
    ) -> (PathBuf, PathBuf) {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.join(format!("docker-credential-{name}.log"));
        let reply = json!({ "ServerURL": host, "Username": user, "Secret": password }).to_string();
        let script = format!(
            "#!/bin/sh\n\
             # docker-credential-{name}: a test credential helper (erofs-rs tests).\n\
             [ \"$1\" = get ] || {{ echo \"unsupported: $1\" >&2; exit 1; }}\n\
             read -r host\n\
             printf '%s\\n' \"$host\" >> '{log}'\n\
             case \"$host\" in\n\
             {host}|http://{host}|https://{host}) printf '%s\\n' '{reply}' ;;\n\
             *) echo 'credentials not found in native keychain'; exit 1 ;;\n\
             esac\n",
            log = log.display(),
        );
        let path = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (bin, log)
    }
}
