//! Shared helpers for the integration tests: finding the image tools, the workspace and the
//! shared directory, and the policy for tests that need root, a tool or the VM.
//!
//! Policy: a test that needs something (a tool, root, qemu) calls [`require_tool`] /
//! [`require_root`]. If the requirement is missing the test **fails** with a message naming
//! it, unless `EROFS_TESTS_ALLOW_SKIP=1` is set, in which case it prints `SKIP: …` to stderr
//! and returns `None`. CI never sets that variable, so nothing is skipped silently there.
//!
//! Registry fixtures (see DESIGN.md, "The test registry"): [`registry`] (Debian's
//! `docker-registry`: plain, htpasswd over TLS, token auth), [`token_server`], [`tls`] (test
//! CA and signing certificates), [`oci_layout`] (hand-written OCI layouts), [`oci_images`]
//! (tar+gzip, EROFS-layer, Nydus and zran images, indexes), [`skopeo`] (the pusher),
//! [`docker_config`] (`config.json` with `auths`, `credHelpers`, `credsStore`, and a helper),
//! [`fault_proxy`] (counters, latency, bandwidth, faults, redirects) and [`http`] (a tiny
//! std-only HTTP/1.1 codec and client).
//!
//! Peers: [`nydusd`] (nydusd 2.2 built by `cargo install`, its config and the guest shell
//! functions that run it in EROFS-over-fscache mode).

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod docker_config;
pub mod fault_proxy;
pub mod http;
pub mod netem;
pub mod nydus_image;
pub mod nydusd;
pub mod oci_images;
pub mod oci_layout;
pub mod program_tree;
pub mod raw;
pub mod registry;
pub mod rootfs;
pub mod skopeo;
pub mod start_result;
pub mod tls;
pub mod token_server;
mod tools;
pub mod tree;
pub mod vm;

pub use tools::{Rng, WORDS, find_tool, pattern, shared_dir, text, workspace_root};

fn allow_skip() -> bool {
    std::env::var_os("EROFS_TESTS_ALLOW_SKIP").is_some_and(|v| v == "1")
}

/// Fail (or, with `EROFS_TESTS_ALLOW_SKIP=1`, skip loudly) because `what` is missing.
pub fn missing(what: &str) -> Option<std::convert::Infallible> {
    if allow_skip() {
        eprintln!("SKIP: {what}");
        None
    } else {
        panic!("{what} (set EROFS_TESTS_ALLOW_SKIP=1 to skip such tests locally)");
    }
}

/// A tool the test cannot run without (see the module docs for the skip policy).
pub fn require_tool(name: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(p) => Some(p),
        None => {
            missing(&format!(
                "this test needs `{name}` (PATH, ${}, or the test environment's tools/bin: \
                 scripts/test.sh installs packages, scripts/build-testenv.sh builds the tools)",
                name.to_uppercase()
            ))?;
            None
        }
    }
}

/// A tool that a Debian package provides (`scripts/packages.txt`, installed by
/// `scripts/test.sh` and `.ci/run`): like [`require_tool`], with
/// the package named in the failure.
pub fn require_package_tool(name: &str, package: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(p) => Some(p),
        None => {
            missing(&format!(
                "this test needs `{name}` (Debian package `{package}`; scripts/test.sh installs it from scripts/packages.txt)"
            ))?;
            None
        }
    }
}

/// Whether the test runs as root.
pub fn is_root() -> bool {
    // Read the effective uid from /proc: no libc call, no unsafe.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Root is needed (mounts, device nodes, chown): fail or skip loudly when not root.
pub fn require_root(why: &str) -> Option<()> {
    if is_root() {
        Some(())
    } else {
        missing(&format!("this test needs root: {why}"))?;
        None
    }
}

/// Run a command, panic with its stderr if it fails, return its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh scratch directory under the target dir, removed and recreated; see [`Scratch`].
pub fn scratch_dir(name: &str) -> Scratch {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/tmp"));
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    Scratch(d)
}

/// A test's scratch directory: removed when it goes out of scope after the test went well,
/// kept for a look when the thread is panicking (a failed assertion). The suite makes
/// several GB of images, trees and registries: kept all together, they fill a CI disk.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Keep the directory whatever happens (for logs a caller reports later).
    pub fn keep(self) -> PathBuf {
        let me = std::mem::ManuallyDrop::new(self);
        me.0.clone()
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("EROFS_KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
