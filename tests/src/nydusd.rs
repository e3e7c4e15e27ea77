//! nydusd 2.2 (dragonflyoss/nydus), the peer our daemon is measured against: the binary,
//! its configuration, and the guest shell functions that run it in EROFS-over-fscache mode in
//! the 6.12 test VM.
//!
//! - [`binary`]: `$NYDUSD`, `nydusd` on `$PATH` or in the test environment's `tools/bin`
//!   (`scripts/build-tools.sh` builds it beside nydus-image), else `target/nydusd/bin/nydusd`,
//!   built there on first use by `cargo install nydus-rs --version 2.2.0 --locked --root
//!   target/nydusd --bin nydusd` (crates.io; the build directory is cargo's temporary one,
//!   removed after).
//! - [`into_guest`]: the binary at `/usr/bin/nydusd` with the shared libraries it links.
//! - [`config`]: the `--config` of `nydusd singleton`, a list of RAFS v6 [`Image`]s: the
//!   bootstrap path, the `fsid` it is mounted with, and a [`Backend`]: blob files in a
//!   directory (`localfs`) or a registry repository over plain HTTP (`registry`, e.g. the
//!   guest's registry of [`Registry::into_guest`](crate::registry::Registry::into_guest)).
//! - [`GUEST_NYDUSD`]: `nydusd_up LOG CONFIG`, `nydusd_mount FSID DIR` and
//!   `nydusd_down NAME` for a VM script.
//!
//! How nydusd 2.2 serves fscache (its `service/src/fs_cache.rs` and `blob_cache.rs`):
//! `nydusd singleton --fscache DIR` binds `/dev/cachefiles` (`dir DIR`, `tag T`,
//! `bind ondemand`); the blob cache list of `--config` (entries of type `bootstrap`, each a
//! `config_v2` with backend, cache `fscache` and `metadata_path`) is loaded at start, and each
//! bootstrap registers its data blobs. An OPEN with volume key `erofs,D` and cookie key `C`
//! looks up `D/C`: `mount -t erofs none -o fsid=F DIR` opens `erofs,F` / `F` (the bootstrap,
//! served from `metadata_path`), then `erofs,F` / `BLOB_ID` for each device, so an entry
//! for fsid `F` has `id` and `domain_id` both `F`. A malformed list is ignored without a word
//! (the mount then fails with ENOENT), which is why [`config`] builds it from typed values.
//!
//! ```no_run
//! use tests::nydusd::{self, Backend, Image};
//! use tests::vm::{Kernel, VmRun};
//! let config = nydusd::config(&[Image::new(
//!     "app",
//!     "/data/blobs/app",
//!     Backend::LocalFs { dir: "/data/blobs".into() },
//! )]);
//! let script = format!(
//!     "{}nydusd_up /tmp/nydusd.log /etc/nydusd.json || exit 1\n\
//!      nydusd_mount app /mnt/app\ncat /mnt/app/hello\numount /mnt/app\nnydusd_down nydusd-exit\n",
//!     nydusd::GUEST_NYDUSD
//! );
//! let vm = nydusd::into_guest(VmRun::new("nydusd-demo").kernel(Kernel::V6_12))
//!     .bytes("etc/nydusd.json", config.as_bytes(), 0o644)
//!     .disk_file("blobs", std::path::Path::new("target/tmp/blobs"))
//!     .script(&script);
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::json;

use crate::vm::VmRun;
use crate::workspace_root;

/// The nydus release measured against.
pub const VERSION: &str = "2.2.0";

/// Where nydusd keeps its fscache cache in the guest (on the ext4 disk: cachefiles refuses
/// tmpfs) and its chunk maps (`work_dir`).
pub const GUEST_CACHE_DIR: &str = "/data/nydusd-cache";

/// The cachefiles tag nydusd binds with in the guest (`/proc/fs/fscache/caches` shows it).
pub const GUEST_TAG: &str = "nydusd";

/// Serialises the builds of one test process.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The `cargo install --root` of nydusd: `$CARGO_TARGET_DIR/nydusd`, else `target/nydusd`.
pub fn install_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("nydusd"),
        None => workspace_root().join("target/nydusd"),
    }
}

/// The nydusd 2.2 binary: `$NYDUSD`, `nydusd` on `$PATH` or in the test environment's
/// `tools/bin` ([`find_tool`](crate::find_tool)), else `bin/nydusd` under [`install_root`],
/// which this builds when it is missing (`cargo install nydus-rs --version 2.2.0 --locked`:
/// needs crates.io, cmake and a C compiler, and minutes). Panics with cargo's output if the
/// build fails.
pub fn binary() -> PathBuf {
    if let Some(p) = crate::find_tool("nydusd") {
        assert!(p.is_file(), "nydusd {} is not a file", p.display());
        check_version(&p);
        return p;
    }
    let root = install_root();
    let bin = root.join("bin/nydusd");
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.is_file() {
        eprintln!(
            "building nydusd {VERSION} into {} (cargo install, several minutes)",
            root.display()
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["install", "nydus-rs", "--version", VERSION, "--locked"])
            .args(["--bin", "nydusd"])
            .arg("--root")
            .arg(&root)
            // cargo's temporary build directory (removed after a good build), not ours.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env("CARGO_TERM_COLOR", "never")
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo install: {e}"));
        assert!(
            out.status.success() && bin.is_file(),
            "cargo install nydus-rs {VERSION} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// Refuses a nydusd found outside [`install_root`] whose `--version` names another release
/// than [`VERSION`]: the benches compare against nydusd 2.2. A build from crates.io says
/// `Version: unknown` (no git metadata), which passes.
fn check_version(bin: &Path) {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(str::trim)
        .unwrap_or("unknown");
    let release = version.trim_start_matches('v');
    assert!(
        version == "unknown" || release == VERSION || release.starts_with(&format!("{VERSION}-")),
        "{} is nydusd {version}, the benches compare against {VERSION}: unset NYDUSD or \
         take it off PATH to build {VERSION} under {}",
        bin.display(),
        install_root().display()
    );
}

/// Put nydusd ([`binary`]) into a VM at `/usr/bin/nydusd`, with its shared libraries.
pub fn into_guest(vm: VmRun) -> VmRun {
    vm.dynamic_binary("usr/bin/nydusd", &binary())
}

/// Where nydusd reads blobs from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `localfs`: each blob is the file `DIR/BLOB_ID` (a guest path).
    LocalFs {
        /// The blob directory.
        dir: String,
    },
    /// `registry`: `GET http://HOST/v2/REPO/blobs/sha256:BLOB_ID` with ranges, over plain
    /// HTTP, anonymous (as the guest registry of
    /// [`Registry::into_guest`](crate::registry::Registry::into_guest) serves on
    /// `127.0.0.1:5000`).
    Registry {
        /// `HOST:PORT`.
        host: String,
        /// The repository, e.g. `rootfs`.
        repo: String,
    },
}

impl Backend {
    /// The guest registry's repository `repo` (`127.0.0.1:5000`, plain HTTP).
    pub fn guest_registry(repo: &str) -> Self {
        Backend::Registry {
            host: format!("127.0.0.1:{}", crate::registry::GUEST_PORT),
            repo: repo.to_string(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Backend::LocalFs { dir } => json!({ "type": "localfs", "localfs": { "dir": dir } }),
            Backend::Registry { host, repo } => json!({
                "type": "registry",
                "registry": {
                    "scheme": "http",
                    "host": host,
                    "repo": repo,
                    "timeout": 30,
                    "connect_timeout": 10,
                    "retry_limit": 2,
                },
            }),
        }
    }
}

/// One RAFS v6 image nydusd serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// What it is mounted with: `mount -t erofs none -o fsid=FSID DIR`.
    pub fsid: String,
    /// The bootstrap, a guest path (nydusd reads it locally with either backend).
    pub bootstrap: String,
    /// Where its blobs are.
    pub backend: Backend,
}

impl Image {
    /// Image `fsid` with its bootstrap at the guest path `bootstrap`, blobs from `backend`.
    pub fn new(fsid: &str, bootstrap: &str, backend: Backend) -> Self {
        Image {
            fsid: fsid.to_string(),
            bootstrap: bootstrap.to_string(),
            backend,
        }
    }
}

/// The `--config` of `nydusd singleton` serving `images`, with the fscache
/// work directory [`GUEST_CACHE_DIR`] and no prefetch (nydusd's default; the bootstrap's
/// prefetch table is not read in fscache mode).
///
/// Panics if an fsid contains `/` (nydusd refuses it: it joins domain and blob id with `/`).
pub fn config(images: &[Image]) -> String {
    let blobs: Vec<serde_json::Value> = images
        .iter()
        .map(|image| {
            assert!(
                !image.fsid.contains('/') && !image.fsid.is_empty(),
                "fsid {:?}",
                image.fsid
            );
            json!({
                "type": "bootstrap",
                "id": image.fsid,
                "domain_id": image.fsid,
                "config_v2": {
                    "version": 2,
                    "id": image.fsid,
                    "backend": image.backend.to_json(),
                    "cache": { "type": "fscache", "fscache": { "work_dir": GUEST_CACHE_DIR } },
                    "metadata_path": image.bootstrap,
                },
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "blobs": blobs })).expect("JSON of plain values")
}

/// Shell functions for a VM script (they use `init.sh`'s `pass`, `fail` and `check`):
///
/// - `nydusd_up LOG CONFIG`: start `nydusd singleton --fscache` [`GUEST_CACHE_DIR`] with tag
///   [`GUEST_TAG`] and `--config CONFIG` ([`config`]), log in `LOG` (level
///   `$NYDUSD_LOG_LEVEL`, default `info`), `$NPID` its pid; wait (up to 60 s) until the cache
///   is bound: check `nydusd-up`. Only one cachefiles daemon may be bound while an EROFS
///   mount looks its cache up: stop any other first.
/// - `nydusd_mount FSID DIR [OPTIONS]`: `mount -t erofs none -o fsid=FSID[,OPTIONS] DIR`
///   (killed after 60 s, the kernel waits for the daemon without limit): check
///   `nydusd-mount-FSID`.
/// - `nydusd_api PATH`: `GET PATH` on nydusd's API socket (`/run/nydusd.sock`), the body on
///   stdout; fails unless 200. `/api/v1/metrics/backend?id=BLOB_ID` gives the backend's
///   `read_count` and `read_amount_total` (bytes read from the blob store; the id may be left
///   out when nydusd has one backend).
/// - `nydusd_down NAME`: SIGTERM, wait up to 30 s (then SIGKILL): NAME passes if nydusd
///   exited by itself. Unmount first.
pub const GUEST_NYDUSD: &str = r#"
NPID=
NLOG=
nydusd_up() {
    NLOG=$1
    mkdir -p /data/nydusd-cache
    /usr/bin/nydusd singleton --fscache /data/nydusd-cache --fscache-tag nydusd --config "$2" \
        --apisock /run/nydusd.sock --log-level "${NYDUSD_LOG_LEVEL:-info}" >"$NLOG" 2>&1 &
    NPID=$!
    _i=0
    while ! grep -q " A nydusd\$" /proc/fs/fscache/caches; do
        _i=$((_i + 1))
        if [ $_i -gt 1200 ] || ! kill -0 $NPID 2>/dev/null; then
            fail nydusd-up "cache not bound after $_i polls: $(cat "$NLOG")"
            return 1
        fi
        usleep 50000
    done
    pass nydusd-up
}
nydusd_mount() {
    mkdir -p "$2"
    _opts="fsid=$1"
    [ -n "$3" ] && _opts="$_opts,$3"
    check "nydusd-mount-$1" timeout -s KILL 60 mount -t erofs none -o "$_opts" "$2"
}
nydusd_api() { timeout 30 vmtool http-get /run/nydusd.sock "$1"; }
nydusd_down() {
    kill -TERM $NPID
    _i=0
    while kill -0 $NPID 2>/dev/null && [ $_i -lt 600 ]; do
        _i=$((_i + 1))
        usleep 50000
    done
    if kill -0 $NPID 2>/dev/null; then
        kill -KILL $NPID
        wait $NPID
        fail "$1" "nydusd did not exit 30 s after SIGTERM: $(tail -5 "$NLOG")"
    else
        wait $NPID
        pass "$1"
    fi
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_match_nydusd_lookups() {
        let local = Backend::LocalFs { dir: "/d".into() };
        let c = config(&[
            Image::new("a", "/data/blobs/a", local),
            Image::new("b", "/data/b.boot", Backend::guest_registry("rootfs")),
        ]);
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        let blobs = v["blobs"].as_array().unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[1]["id"], "b");
        assert_eq!(blobs[1]["domain_id"], "b");
        let c2 = &blobs[1]["config_v2"];
        assert_eq!(c2["metadata_path"], "/data/b.boot");
        assert_eq!(c2["cache"]["type"], "fscache");
        assert_eq!(c2["backend"]["registry"]["host"], "127.0.0.1:5000");
        assert_eq!(c2["backend"]["registry"]["scheme"], "http");
        assert_eq!(blobs[0]["config_v2"]["backend"]["localfs"]["dir"], "/d");
        assert_eq!(blobs[0]["config_v2"]["backend"]["type"], "localfs");
    }

    /// A nydusd that names another release is refused; 2.2.0 (as git builds say it) and a
    /// crates.io build's "unknown" pass.
    #[test]
    fn other_nydusd_releases_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::scratch_dir("nydusd_version");
        let fake = |name: &str, version: &str| {
            let p = dir.join(name);
            std::fs::write(
                &p,
                format!("#!/bin/sh\nprintf 'Version: \\t{version}\\n'\n"),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        check_version(&fake("git", "v2.2.0"));
        check_version(&fake("cratesio", "unknown"));
        let newer = fake("newer", "v2.3.1");
        let refused = std::panic::catch_unwind(|| check_version(&newer));
        let msg = refused.expect_err("2.3.1 must be refused");
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("nydusd v2.3.1") && msg.contains("2.2.0"),
            "{msg}"
        );
    }
}
