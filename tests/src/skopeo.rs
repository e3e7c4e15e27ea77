//! Debian's `skopeo` (1.9), the independent pusher and reader: it pushes an
//! [`OciLayout`](crate::oci_layout::OciLayout) to a [`Registry`] and reads manifests and whole
//! images back, with none of the code under test.
//!
//! Each [`Skopeo`] has its own configuration directory so the host's does not interfere: a
//! `policy.json` that accepts anything, an empty auth file (`REGISTRY_AUTH_FILE`), an empty
//! `registries.conf` (`CONTAINERS_REGISTRIES_CONF`), an empty `registries.d`, `HOME`,
//! `XDG_RUNTIME_DIR` and a writable `--tmpdir`. Credentials and the test CA come from the
//! [`Registry`] (`--creds`, `--cert-dir`); plain-HTTP registries get `--tls-verify=false`.
//! Pushes use `--all --preserve-digests`, so the registry holds exactly the layout's bytes
//! (indexes too) and a digest computed from the layout names the pushed object.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::registry::Registry;

/// A skopeo with a private configuration.
#[derive(Debug, Clone)]
pub struct Skopeo {
    bin: PathBuf,
    dir: PathBuf,
}

/// Which side of a copy a registry is on (skopeo's flag prefixes).
#[derive(Clone, Copy)]
enum Side {
    Src,
    Dest,
    Only,
}

impl Skopeo {
    /// Set up a private configuration in `dir` (created). `None` only when skopeo is missing
    /// and skipping is allowed.
    pub fn new(dir: &Path) -> Option<Skopeo> {
        let bin = crate::require_package_tool("skopeo", "skopeo")?;
        for d in ["tmp", "run", "registries.d", "home"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("auth.json"), r#"{"auths":{}}"#).unwrap();
        std::fs::write(dir.join("registries.conf"), "").unwrap();
        std::fs::write(dir.join("containers.conf"), "").unwrap();
        Some(Skopeo {
            bin,
            dir: dir.to_path_buf(),
        })
    }

    /// A `skopeo` command with the private configuration and the global flags set.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("HOME", self.dir.join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("TMPDIR", self.dir.join("tmp"))
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env_remove("DOCKER_CONFIG")
            .arg("--policy")
            .arg(self.dir.join("policy.json"))
            .arg("--registries.d")
            .arg(self.dir.join("registries.d"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .arg("--command-timeout")
            .arg("600s");
        c
    }

    /// The flags that reach `reg`: TLS verification or not, the CA, the credentials.
    fn registry_args(c: &mut Command, reg: &Registry, side: Side) {
        let p = match side {
            Side::Src => "--src-",
            Side::Dest => "--dest-",
            Side::Only => "--",
        };
        match reg.ca() {
            Some(ca) => {
                c.arg(format!("{p}tls-verify=true"));
                c.arg(format!("{p}cert-dir")).arg(&ca.cert_dir);
            }
            None => {
                c.arg(format!("{p}tls-verify=false"));
            }
        }
        if let Some((u, pw)) = reg.credentials() {
            c.arg(format!("{p}creds")).arg(format!("{u}:{pw}"));
        }
    }

    /// Push tag `layout_tag` of the OCI layout at `layout` to `reg` as `repo_ref`
    /// (`REPO:TAG`): `skopeo copy --all --preserve-digests oci:DIR:TAG docker://HOST/REPO:TAG`.
    /// Panics with skopeo's output on failure.
    pub fn push(&self, layout: &Path, layout_tag: &str, reg: &Registry, repo_ref: &str) {
        let mut c = self.command();
        c.args(["copy", "--all", "--preserve-digests", "--quiet"]);
        Self::registry_args(&mut c, reg, Side::Dest);
        c.arg(format!("oci:{}:{layout_tag}", layout.display()))
            .arg(format!("docker://{}", reg.reference(repo_ref)));
        crate::run(&mut c);
    }

    /// Copy `repo_ref` from `reg` into the OCI layout `dest` as `tag` (every platform).
    pub fn pull(&self, reg: &Registry, repo_ref: &str, dest: &Path, tag: &str) {
        let mut c = self.command();
        c.args(["copy", "--all", "--preserve-digests", "--quiet"]);
        Self::registry_args(&mut c, reg, Side::Src);
        c.arg(format!("docker://{}", reg.reference(repo_ref)))
            .arg(format!("oci:{}:{tag}", dest.display()));
        crate::run(&mut c);
    }

    /// `skopeo inspect --raw`: the manifest (or index) bytes as the registry serves them.
    pub fn inspect_raw(&self, reg: &Registry, repo_ref: &str) -> Vec<u8> {
        let mut c = self.command();
        c.args(["inspect", "--raw"]);
        Self::registry_args(&mut c, reg, Side::Only);
        c.arg(format!("docker://{}", reg.reference(repo_ref)));
        let out = c
            .output()
            .unwrap_or_else(|e| panic!("cannot run skopeo: {e}"));
        assert!(
            out.status.success(),
            "skopeo inspect --raw {repo_ref} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `skopeo inspect --config`: the image config of the manifest this platform resolves to
    /// (skopeo resolves an index to the host's platform itself).
    pub fn inspect_config(&self, reg: &Registry, repo_ref: &str) -> serde_json::Value {
        let mut c = self.command();
        c.args(["inspect", "--config"]);
        Self::registry_args(&mut c, reg, Side::Only);
        c.arg(format!("docker://{}", reg.reference(repo_ref)));
        serde_json::from_str(&crate::run(&mut c)).expect("skopeo prints JSON")
    }

    /// `skopeo list-tags`.
    pub fn list_tags(&self, reg: &Registry, repo: &str) -> Vec<String> {
        let mut c = self.command();
        c.args(["list-tags"]);
        Self::registry_args(&mut c, reg, Side::Only);
        c.arg(format!("docker://{}", reg.reference(repo)));
        let v: serde_json::Value = serde_json::from_str(&crate::run(&mut c)).expect("JSON");
        v["Tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}
