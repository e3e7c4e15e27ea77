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

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod docker_config;
pub mod fault_proxy;
pub mod http;
pub mod oci_images;
pub mod oci_layout;
pub mod raw;
pub mod registry;
pub mod skopeo;
pub mod tls;
pub mod token_server;
pub mod tree;
pub mod vm;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The test environment (test kernels in `vm/`, image tools in `tools/bin/`):
/// `$EROFS_SHARED_DIR`, else `../shared` beside the workspace (a ready-made copy), else
/// `target/testenv` (what `scripts/build-testenv.sh` builds).
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EROFS_SHARED_DIR") {
        return PathBuf::from(d);
    }
    let shared = workspace_root().join("../shared");
    let built = workspace_root().join("target/testenv");
    if !shared.is_dir() && built.is_dir() {
        built
    } else {
        shared
    }
}

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

/// Locate a tool: `$NAME_IN_UPPER_SNAKE` (e.g. `MKFS_EROFS`), then `$PATH`, then
/// `../shared/tools/bin`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let var: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if let Some(p) = std::env::var_os(&var) {
        return Some(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = shared_dir().join("tools/bin").join(name);
    p.is_file().then_some(p)
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

/// A tool that a Debian package provides (`.ci/run` installs it): like [`require_tool`], with
/// the package named in the failure.
pub fn require_package_tool(name: &str, package: &str) -> Option<PathBuf> {
    match find_tool(name) {
        Some(p) => Some(p),
        None => {
            missing(&format!(
                "this test needs `{name}` (Debian package `{package}`; .ci/run installs it)"
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

/// A fresh scratch directory under the target dir, removed and recreated.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/tmp"));
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Words of [`text`].
pub const WORDS: [&str; 16] = [
    "erofs ",
    "kernel ",
    "lz4 ",
    "zstd ",
    "deflate ",
    "lzma ",
    "pcluster\n",
    "extent ",
    "lcluster ",
    "fragment ",
    "inline ",
    "dedupe ",
    "block ",
    "reader ",
    "mount ",
    "image\n",
];

/// `n` bytes of deterministic "word salad" ([`WORDS`] drawn by [`Rng`] from `seed`): text
/// that compresses well, but not trivially.
pub fn text(seed: u64, n: usize) -> Vec<u8> {
    Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).text(&WORDS, n)
}

/// A small deterministic generator (xorshift64*) for test data: the same seed gives the
/// same bytes on every run and machine.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` incompressible bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `n` bytes of compressible text: `words` drawn at random, cut at `n`.
    pub fn text(&mut self, words: &[&str], n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            let i = (self.next() % words.len() as u64) as usize;
            out.extend_from_slice(words[i].as_bytes());
        }
        out.truncate(n);
        out
    }
}
