//! Test data and tool lookup that need nothing but `std`: the test crate re-exports them, and
//! the benchmarks of `erofs-reader` compile this file in (`#[path]`), so both find the image
//! tools and make data the same way.

use std::path::{Path, PathBuf};

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

/// Deterministic pseudo-random bytes (xorshift), so that misplaced blocks are caught.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
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
