//! `nydus-image create`: the one way the tests build Nydus RAFS v6 images (bootstrap and
//! blobs) with nydus-image 2.2.
//!
//! ```no_run
//! let blob_ids = tests::nydus_image::Create::new("src".as_ref(), "blobs".as_ref())
//!     .bootstrap("blobs/boot".as_ref())
//!     .args(&["--compressor", "zstd", "--chunk-size", "0x10000"])
//!     .prefetch("/hot\n")
//!     .run();
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One `nydus-image create -t KIND -v 6 --log-level warn ARGS -D BLOBS [-B BOOT]
/// [--parent-bootstrap PARENT] [--prefetch-policy fs] -J JSON INPUT`, the prefetch list
/// (if any) on its standard input. The JSON report goes beside the blob directory
/// (`BLOBS.nydus-image.json`), never into it.
#[derive(Debug, Clone)]
pub struct Create {
    kind: String,
    input: PathBuf,
    blobs: PathBuf,
    bootstrap: Option<PathBuf>,
    parent: Option<PathBuf>,
    args: Vec<String>,
    prefetch: Option<String>,
}

impl Create {
    /// `-t dir-rafs` of the tree at `input`, the blobs into `blobs` (created if missing).
    pub fn new(input: &Path, blobs: &Path) -> Self {
        Create {
            kind: "dir-rafs".into(),
            input: input.to_path_buf(),
            blobs: blobs.to_path_buf(),
            bootstrap: None,
            parent: None,
            args: Vec::new(),
            prefetch: None,
        }
    }

    /// The conversion type (`-t`): `dir-rafs` (the default), `targz-rafs`, `targz-ref`, ...
    pub fn kind(mut self, kind: &str) -> Self {
        self.kind = kind.into();
        self
    }

    /// Write the bootstrap to `path` (`-B`); without it, nydus-image writes none (as with
    /// `--blob-inline-meta`).
    pub fn bootstrap(mut self, path: &Path) -> Self {
        self.bootstrap = Some(path.to_path_buf());
        self
    }

    /// A layer on top of `parent`'s bootstrap (`--parent-bootstrap`), or none.
    pub fn parent(mut self, parent: Option<&Path>) -> Self {
        self.parent = parent.map(Path::to_path_buf);
        self
    }

    /// More arguments, before `-D` (compressor, chunk size, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// A prefetch table from `list` (paths, one per line): `--prefetch-policy fs`, the list
    /// on standard input.
    pub fn prefetch(mut self, list: &str) -> Self {
        self.prefetch = Some(list.into());
        self
    }

    /// Run it and return the blob ids its report lists. Panics (with nydus-image's output)
    /// if it fails; `None` only where [`crate::require_tool`] lets a missing nydus-image
    /// skip the test.
    pub fn run(self) -> Option<Vec<String>> {
        let nydus = crate::require_tool("nydus-image")?;
        std::fs::create_dir_all(&self.blobs).unwrap();
        let json = self.blobs.with_extension("nydus-image.json");
        let mut cmd = Command::new(nydus);
        cmd.args(["create", "-t", &self.kind, "-v", "6", "--log-level", "warn"])
            .args(&self.args)
            .arg("-D")
            .arg(&self.blobs)
            .args(self.bootstrap.iter().flat_map(|b| [Path::new("-B"), b]))
            .args(
                self.parent
                    .iter()
                    .flat_map(|p| [Path::new("--parent-bootstrap"), p]),
            )
            .arg("-J")
            .arg(&json);
        match &self.prefetch {
            Some(list) => {
                // The list on standard input, from a file beside the report.
                let path = self.blobs.with_extension("prefetch-list");
                std::fs::write(&path, list).unwrap();
                cmd.args(["--prefetch-policy", "fs"])
                    .stdin(std::fs::File::open(&path).unwrap());
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        crate::run(cmd.arg(&self.input));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        Some(
            report["blobs"]
                .as_array()
                .expect("nydus-image -J lists blobs")
                .iter()
                .map(|b| b.as_str().expect("a blob id").to_string())
                .collect(),
        )
    }
}
