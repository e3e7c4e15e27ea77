//! The entrypoint rule: what the image says it runs (its configuration's `Entrypoint` and
//! `Cmd`), and the files the kernel and the dynamic loader read to start it, found before
//! the container starts.
//!
//! A cold start's first READs are the exec and the loader's chain: the program's head, its
//! interpreter (`PT_INTERP`, `ld.so`), then each library (`DT_NEEDED`) in turn, each one
//! known only once the previous object is read. The image's configuration names the
//! program, and its bytes name the rest, so all of it can be fetched while the image mounts,
//! when the link is idle (`registry::RemoteImage::fetch_entrypoint_early`).
//!
//! [`program`] finds the program in the image as a runtime does (a name with a `/` from the
//! working directory, else the first match in `PATH`; symlinks followed inside the image by
//! [`Image::lookup`]); [`closure`] reads its head (a `#!` script's interpreter, followed one
//! level), its interpreter and its libraries' names with [`super::elf`]'s parser, and looks
//! the libraries up as the ELF rule ([`super::Rules::needed`]) does (`DT_RUNPATH` with
//! `$ORIGIN`, then the default directories). Everything read is the image's (hostile): bounded by [`Limits`],
//! errors are typed ([`EntrypointError`]) or end that file's part of the walk, never a panic.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use erofs_reader::{FileType, Image, Inode};

use super::chain::{find_library, plain_name, search_dirs};
use super::device_run;
use super::elf::{ElfError, HEAD_MAX, Head};

/// Bounds of a [`closure`] walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most files in the closure (the program, its interpreter, its libraries).
    pub files: usize,
    /// Most bytes of those files' extents, in all: a file past it is left out.
    pub bytes: u64,
    /// How deep libraries of libraries are followed (the program is depth 0).
    pub depth: u8,
}

impl Limits {
    /// 64 files, 64 MiB, 8 levels: a program's closure is a handful of objects (python3:
    /// six, 10 MB).
    pub const DEFAULT: Limits = Limits {
        files: 64,
        bytes: 64 << 20,
        depth: 8,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Files at most this long are fetched whole while the image mounts
/// (`registry::RemoteImage::fetch_entrypoint_early`, by the CLI); a longer one (the
/// python3.11 executable, 6.8 MB) only its first and last chunk, the rest left to the
/// whole-file rule at its first READ: the guest's CPU is short during the mount, and
/// receiving the whole program then slowed the mount and the exec (DESIGN.md, "The
/// entrypoint rule").
pub const EARLY_WHOLE_FILE: u64 = 2 << 20;

/// Why the program could not be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntrypointError {
    /// The configuration names no program (no `Entrypoint`, no `Cmd`).
    #[error("the image config names no program")]
    NoProgram,
    /// A name the runtime would not run: NUL bytes, or over `PATH_MAX`.
    #[error("program name {0:?} is not a path")]
    BadName(String),
    /// Not in the image (no match in `PATH`, or not an executable regular file).
    #[error("program {0:?} is not an executable file of the image")]
    NotFound(String),
    /// The image's metadata could not be read.
    #[error("program {name:?}: {source}")]
    Image {
        /// The program.
        name: String,
        /// The reader's error.
        source: erofs_reader::Error,
    },
}

/// Longest path looked up (`PATH_MAX`).
const MAX_PATH: usize = 4096;
/// Most `PATH` entries tried.
const MAX_PATH_DIRS: usize = 64;
/// How much of a script's first line the kernel reads (`BINPRM_BUF_SIZE`).
const SHEBANG_MAX: usize = 256;

/// The program `name` of the image: with a `/`, that path (relative to `working_dir`,
/// empty meaning `/`); else the first `PATH` entry (`search`, `:`-separated; relative
/// entries are skipped) holding an executable regular file of that name. Returns its path
/// in the image.
///
/// # Errors
///
/// [`EntrypointError`].
pub fn program(
    image: &Image,
    name: &str,
    search: &str,
    working_dir: &str,
) -> Result<Vec<u8>, EntrypointError> {
    if name.is_empty() {
        return Err(EntrypointError::NoProgram);
    }
    if name.contains('\0') || name.len() > MAX_PATH || working_dir.len() > MAX_PATH {
        return Err(EntrypointError::BadName(name.chars().take(64).collect()));
    }
    let candidates: Vec<String> = if name.contains('/') {
        if name.starts_with('/') {
            vec![name.to_owned()]
        } else {
            let wd = working_dir.trim_end_matches('/');
            vec![format!("{wd}/{name}")]
        }
    } else {
        search
            .split(':')
            .take(MAX_PATH_DIRS)
            .filter(|d| d.starts_with('/') && !d.contains('\0'))
            .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
            .collect()
    };
    for path in candidates {
        match image.lookup(Path::new(&path)) {
            Ok(inode) if executable(&inode) => return Ok(path.into_bytes()),
            Ok(_)
            | Err(erofs_reader::Error::NotFound(_) | erofs_reader::Error::NotADirectory(_)) => {}
            Err(source) => {
                return Err(EntrypointError::Image {
                    name: name.to_owned(),
                    source,
                });
            }
        }
    }
    Err(EntrypointError::NotFound(name.to_owned()))
}

/// A regular file with an execute bit.
fn executable(inode: &Inode) -> bool {
    inode.metadata().file_type() == FileType::Regular && inode.metadata().permissions() & 0o111 != 0
}

/// One file of a program's closure: where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosureFile {
    /// Its path in the image, as looked up (a library: the search directory and its name).
    pub path: Vec<u8>,
    /// The device its bytes are on (a Nydus blob id).
    pub tag: Vec<u8>,
    /// Its bytes there, from offset 0 of the file (one run).
    pub extent: Range<u64>,
    /// 0 for the program, 1 for what it names, ...
    pub depth: u8,
}

/// Reads `range` of the device `tag` (the image's extra device, a Nydus blob's uncompressed
/// bytes).
pub type ReadDevice<'a> = dyn FnMut(&[u8], Range<u64>) -> io::Result<Vec<u8>> + 'a;

/// The files the kernel and the loader read to start `program` (a path in `image`, from
/// [`program`]): the program, a `#!` script's interpreter (one level), the `PT_INTERP` of
/// each ELF executable, and the `DT_NEEDED` libraries, found as the loader finds them, and
/// theirs in turn, in the order found (breadth first). Each file is handed to `found` as
/// soon as it is known, before its bytes are read (to start fetching it), then its head
/// (and what its program headers point to) is read through `read`. Files whose bytes are not
/// one run on one extra device are left out (and not read); a file that cannot be read or
/// parsed ends its branch. Bounded by `limits`.
pub fn closure(
    image: &Image,
    program: &[u8],
    limits: Limits,
    read: &mut ReadDevice<'_>,
    found: &mut dyn FnMut(&ClosureFile),
) -> Vec<ClosureFile> {
    let mut walk = Walk {
        image,
        limits,
        out: Vec::new(),
        seen: HashSet::new(),
        bytes: 0,
        found,
    };
    let mut queue = VecDeque::new();
    if let Some(i) = walk.add(program, 0) {
        queue.push_back(i);
    }
    while let Some(i) = queue.pop_front() {
        let file = walk.out[i].clone();
        let next = match names(&file, read) {
            Ok(next) => next,
            Err(e) => {
                log::debug!("entrypoint: {}: {e}", String::from_utf8_lossy(&file.path));
                continue;
            }
        };
        if file.depth >= limits.depth {
            continue;
        }
        let origin = match file.path.iter().rposition(|&b| b == b'/') {
            Some(j) => &file.path[..j],
            None => &b""[..],
        };
        match next {
            Next::Script(interp) => {
                // One level: the interpreter of a script, not of a script's interpreter.
                if file.depth == 0
                    && let Some(i) = walk.add(&interp, file.depth + 1)
                {
                    queue.push_back(i);
                }
            }
            Next::Elf {
                interp,
                libraries,
                run_path,
                machine,
            } => {
                let mut paths: Vec<Vec<u8>> = interp.into_iter().collect();
                let dirs = search_dirs(&run_path, origin, machine);
                for name in libraries.iter().filter(|n| plain_name(n)) {
                    // A path over PATH_MAX is no candidate (the next directory is tried).
                    let fits = |d: &&Vec<u8>| d.len() + 1 + name.len() <= MAX_PATH;
                    if let Some((p, _)) = find_library(walk.image, dirs.iter().filter(fits), name) {
                        paths.push(p);
                    }
                }
                for p in paths {
                    if let Some(i) = walk.add(&p, file.depth + 1) {
                        queue.push_back(i);
                    }
                }
            }
        }
    }
    walk.out
}

/// A [`closure`] walk's state.
struct Walk<'a, 'f> {
    image: &'a Image,
    limits: Limits,
    out: Vec<ClosureFile>,
    /// (device, start) of every file added.
    seen: HashSet<(Vec<u8>, u64)>,
    bytes: u64,
    found: &'f mut dyn FnMut(&ClosureFile),
}

impl Walk<'_, '_> {
    /// Add the file at `path` (if within the limits, one run on one extra device, and new),
    /// tell `found`, and return its index.
    fn add(&mut self, path: &[u8], depth: u8) -> Option<usize> {
        if self.out.len() >= self.limits.files || path.len() > MAX_PATH || path.contains(&0) {
            return None;
        }
        let inode = self
            .image
            .lookup(Path::new(std::ffi::OsStr::from_bytes(path)))
            .ok()?;
        if inode.metadata().file_type() != FileType::Regular {
            return None;
        }
        let (tag, extent) = device_run(self.image, &inode)?;
        let len = extent.end - extent.start;
        if self.bytes.saturating_add(len) > self.limits.bytes {
            return None;
        }
        if !self.seen.insert((tag.clone(), extent.start)) {
            return None;
        }
        self.bytes += len;
        let file = ClosureFile {
            path: path.to_vec(),
            tag,
            extent,
            depth,
        };
        (self.found)(&file);
        self.out.push(file);
        Some(self.out.len() - 1)
    }
}

/// What a file's head says comes next.
enum Next {
    /// A `#!` script's interpreter (an absolute path).
    Script(Vec<u8>),
    /// An ELF object's interpreter (if any) and libraries.
    Elf {
        interp: Option<Vec<u8>>,
        libraries: Vec<Vec<u8>>,
        run_path: Vec<Vec<u8>>,
        machine: u16,
    },
}

/// Why a file's names could not be read.
#[derive(Debug, thiserror::Error)]
enum NamesError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error("a script without an absolute interpreter path")]
    Script,
}

/// Read what `file` names: its head, then (ELF) its interpreter's path and its dynamic
/// section's libraries.
fn names(file: &ClosureFile, read: &mut ReadDevice<'_>) -> Result<Next, NamesError> {
    let len = file.extent.end - file.extent.start;
    let at = |r: Range<u64>| -> Result<Range<u64>, NamesError> {
        if r.start > r.end || r.end > len {
            return Err(ElfError::Corrupt("range past the file's end").into());
        }
        Ok(file.extent.start + r.start..file.extent.start + r.end)
    };
    let head = read(&file.tag, at(0..len.min(HEAD_MAX))?)?;
    if head.starts_with(b"#!") {
        return shebang(&head).map(Next::Script);
    }
    let h = Head::parse(&head)?;
    let interp = match h.interp_range() {
        Some(r) => {
            let r = at(r.start..r.end.min(len))?;
            Some(h.interpreter(&read(&file.tag, r)?)?)
        }
        None => None,
    };
    let (libraries, run_path) = match h.dynamic_range() {
        Some(r) => {
            let bytes = read(&file.tag, at(r.start..r.end.min(len))?)?;
            let d = h.dynamic(&bytes)?;
            let s = d.strings();
            let n = d.names(&read(&file.tag, at(s)?)?)?;
            (n.libraries, n.run_path)
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(Next::Elf {
        interp,
        libraries,
        run_path,
        machine: h.machine(),
    })
}

/// A script's interpreter: the first word after `#!` on its first line (at most
/// [`SHEBANG_MAX`] bytes, as the kernel reads it), if an absolute path.
fn shebang(head: &[u8]) -> Result<Vec<u8>, NamesError> {
    let line = &head[2..head.len().min(SHEBANG_MAX)];
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let word = line
        .split(|&b| b == b' ' || b == b'\t' || b == b'\r')
        .find(|w| !w.is_empty())
        .ok_or(NamesError::Script)?;
    if word.first() != Some(&b'/') || word.contains(&0) {
        return Err(NamesError::Script);
    }
    Ok(word.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_names_its_interpreter() {
        assert_eq!(shebang(b"#!/bin/sh\necho").unwrap(), b"/bin/sh");
        assert_eq!(
            shebang(b"#! \t/usr/bin/env python3 -u\n").unwrap(),
            b"/usr/bin/env"
        );
        assert_eq!(shebang(b"#!/bin/bash\r\n").unwrap(), b"/bin/bash");
        for bad in [
            &b"#!"[..],
            b"#!\n/bin/sh",
            b"#!sh",
            b"#!   ",
            b"#!/bin/\0sh",
        ] {
            assert!(shebang(bad).is_err(), "{}", bad.escape_ascii());
        }
        // The interpreter's name cut where the kernel stops reading.
        let mut long = b"#!/".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1000));
        assert_eq!(shebang(&long).unwrap().len(), SHEBANG_MAX - 2);
    }
}
