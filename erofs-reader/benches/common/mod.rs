//! What the benchmarks share: finding the external tools and the median of runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The external tool `name`: from `$NAME` (upper case, `-`/`.` as `_`), `$PATH`, or
/// `$EROFS_SHARED_DIR/tools/bin` (default `../shared/tools/bin` beside the workspace).
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
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
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join(name).is_file() {
                return Some(dir.join(name));
            }
        }
    }
    let shared = std::env::var_os("EROFS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = shared.join("tools/bin").join(name);
    p.is_file().then_some(p)
}

/// The median of `v` (not empty).
pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
