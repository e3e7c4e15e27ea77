//! The ELF rule ([`super::Rules::needed`]): read each ELF object's interpreter and needed
//! libraries from its bytes as fills write them, and queue those libraries whole.
//!
//! A program's start maps its libraries one after the other: the dynamic loader reads the
//! program's dynamic section, opens the first library, reads its header, maps it, reads
//! its dynamic section, ... Over a lazy mount each library's first bytes are a READ that
//! starts only when the previous object is mapped. Those names are in the program's own
//! bytes, so once they are filled the libraries can be fetched at once, in parallel.
//!
//! Every fill of a file that may be an ELF object ([`super::Entry::elf`]: executable, or
//! `.so` in its name) is copied here, from the first one on, so nothing is missed whatever
//! order the pieces arrive in: until its head is read, all of it; then only what the next
//! step needs (the dynamic section, then the names). A file is read once; a file that is
//! not ELF, or is malformed, is dropped at the first error. The copies are bounded
//! ([`MAX_HELD`]); past the bound a file is dropped (a guess, not a demand).
//!
//! The names are found in the image as the loader finds them ([`search_dirs`]): `DT_RUNPATH`
//! (or `DT_RPATH`) with `$ORIGIN`, then the multiarch and plain library directories. Paths
//! are resolved by [`erofs_reader::Image::lookup`], inside the image (a `..` or an absolute
//! symlink stays under its root); a name with a `/` is not looked up. The image's
//! `/etc/ld.so.cache` is not read: Debian's and Fedora's libraries are in the default
//! directories.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;

use erofs_reader::{ExtentTarget, FileType, Image, Inode};

use super::elf::{Dynamic, ElfError, HEAD_MAX, Head, MAX_NAME};
use super::{FileMap, NeededRule};

/// Most bytes copied from fills and not yet read, over all files.
pub(crate) const MAX_HELD: usize = 48 << 20;
/// Longest file watched.
const MAX_FILE: u64 = 32 << 20;
/// Most libraries queued for one object (the rule's fan-out) and in all.
const MAX_CHAINED: usize = 512;
/// How deep the rule follows libraries of libraries of ...
const MAX_DEPTH: u8 = 8;

/// Where one ELF object's read is.
#[derive(Debug)]
enum Step {
    Head,
    Dynamic(Head),
    Names(Head, Dynamic),
}

/// An ELF object being read.
#[derive(Debug)]
struct Watch {
    extent: Range<u64>,
    dir: u32,
    step: Step,
    /// Copies of filled bytes, by offset in the file; disjoint.
    held: Vec<(u64, Vec<u8>)>,
    /// The interpreter's path (`PT_INTERP`), read with the head and not yet looked up.
    interp: Option<Vec<u8>>,
}

impl Watch {
    fn held_len(&self) -> usize {
        self.held.iter().map(|(_, b)| b.len()).sum()
    }

    /// The bytes of `range` (file offsets), if all of them were copied.
    fn gather(&self, range: &Range<u64>) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).ok()?);
        let mut pos = range.start;
        let mut pieces: Vec<&(u64, Vec<u8>)> = self.held.iter().collect();
        pieces.sort_by_key(|(off, _)| *off);
        for (off, bytes) in pieces {
            let end = off + bytes.len() as u64;
            if pos >= range.end {
                break;
            }
            if *off <= pos && pos < end {
                let to = end.min(range.end);
                // Within `bytes`: off <= pos < to <= end.
                out.extend_from_slice(&bytes[(pos - off) as usize..(to - off) as usize]);
                pos = to;
            }
        }
        (pos >= range.end).then_some(out)
    }

    /// The longest run of copied bytes from the file's start, at most `max`.
    fn prefix(&self, max: u64) -> Vec<u8> {
        let mut end = 0;
        loop {
            let next = self
                .held
                .iter()
                .filter(|(off, b)| *off <= end && off + b.len() as u64 > end)
                .map(|(off, b)| off + b.len() as u64)
                .max();
            match next {
                Some(n) if end < max => end = n.min(max),
                _ => break,
            }
        }
        self.gather(&(0..end)).unwrap_or_default()
    }

    /// Keep only the copies that overlap `keep`, cut to it.
    fn keep_only(&mut self, keep: &Range<u64>) {
        let held = std::mem::take(&mut self.held);
        for (off, bytes) in held {
            let end = off + bytes.len() as u64;
            let (s, e) = (off.max(keep.start), end.min(keep.end));
            if s < e {
                self.held
                    .push((s, bytes[(s - off) as usize..(e - off) as usize].to_vec()));
            }
        }
    }

    /// What of the file is still worth copying.
    fn wanted(&self) -> Range<u64> {
        let len = self.extent.end - self.extent.start;
        match &self.step {
            Step::Head => 0..len,
            // The names are somewhere in the file (where, the dynamic section says).
            Step::Dynamic(_) => 0..len,
            Step::Names(_, d) => d.strings(),
        }
    }
}

/// An object's needs, read.
#[derive(Debug)]
struct Found {
    names: Vec<Vec<u8>>,
    run_path: Vec<Vec<u8>>,
    machine: u16,
    dir: u32,
    depth: u8,
}

/// Most objects whose needs are parked.
const MAX_PARKED: usize = 4096;

/// What one file's read came to.
enum Outcome {
    /// Waiting for more bytes.
    Pending,
    /// Done: these names (and the object's run path and machine) to look up.
    Found {
        names: Vec<Vec<u8>>,
        run_path: Vec<Vec<u8>>,
        machine: u16,
    },
    /// Not ELF, or nothing to read (or malformed).
    Dropped,
}

/// The ELF objects being read and what was found, per object key.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    /// By object key and the file's start there.
    watching: HashMap<(Vec<u8>, u64), Watch>,
    /// Files read (or dropped): never watched again.
    done: HashSet<(Vec<u8>, u64)>,
    /// Libraries queued (files), with the depth they were found at.
    chained: HashMap<(Vec<u8>, u64), u8>,
    /// Objects a READ landed in ([`NeededRule::Demanded`]).
    demanded: HashSet<(Vec<u8>, u64)>,
    /// What objects not demanded (yet) need, by object: queued if a READ lands in them.
    parked: HashMap<(Vec<u8>, u64), Found>,
    /// Pieces to fill, per object key ([`Chain::take`]).
    found: HashMap<Vec<u8>, Vec<Range<u64>>>,
    held: usize,
}

impl Chain {
    /// Copy what `bytes` (filled at `pos` of object `key`) hold of the files that may be ELF
    /// objects, and read on each one they complete a step of.
    pub(crate) fn observe(&mut self, map: &FileMap, key: &[u8], pos: u64, bytes: &[u8]) {
        let fill = pos..pos.saturating_add(bytes.len() as u64);
        for entry in map.overlapping(key, fill.clone()) {
            let len = entry.extent.end - entry.extent.start;
            if !entry.elf || len > MAX_FILE {
                continue;
            }
            let id = (key.to_vec(), entry.extent.start);
            if self.done.contains(&id) {
                continue;
            }
            let depth = self.chained.get(&id).copied().unwrap_or(0);
            let watch = self.watching.entry(id.clone()).or_insert_with(|| Watch {
                extent: entry.extent.clone(),
                dir: entry.dir,
                step: Step::Head,
                held: Vec::new(),
                interp: None,
            });
            // The part of the file this fill wrote, in file offsets, cut to what is wanted.
            let s = fill.start.max(entry.extent.start) - entry.extent.start;
            let e = fill.end.min(entry.extent.end) - entry.extent.start;
            let want = watch.wanted();
            let (s, e) = (s.max(want.start), e.min(want.end));
            if s < e {
                if self.held + (e - s) as usize > MAX_HELD {
                    log::debug!(
                        "ELF rule: {} bytes held, file at {} dropped",
                        self.held,
                        id.1
                    );
                    self.drop_watch(&id);
                    continue;
                }
                // Within `bytes`: the file's part of the fill.
                let from = (entry.extent.start + s - pos) as usize;
                watch
                    .held
                    .push((s, bytes[from..from + (e - s) as usize].to_vec()));
                self.held += (e - s) as usize;
            }
            let outcome = self.advance(&id);
            // The interpreter, as soon as the head names it: the kernel maps it right after
            // the program, before the loader reads the program's dynamic section.
            let now = |chain: &Chain| {
                map.rules.needed == NeededRule::All
                    || chain.demanded.contains(&id)
                    || chain.chained.contains_key(&id)
            };
            if let Some(path) = self.watching.get_mut(&id).and_then(|w| w.interp.take())
                && now(self)
                && let Some(i) = path.iter().rposition(|&b| b == b'/')
            {
                let found = Found {
                    names: vec![path[i + 1..].to_vec()],
                    run_path: vec![if i == 0 {
                        b"/".to_vec()
                    } else {
                        path[..i].to_vec()
                    }],
                    machine: 0,
                    dir: entry.dir,
                    depth: depth + 1,
                };
                self.queue(map, key, &found);
            }
            match outcome {
                Outcome::Pending => {}
                Outcome::Dropped => self.drop_watch(&id),
                Outcome::Found {
                    names,
                    run_path,
                    machine,
                } => {
                    let dir = self.watching.get(&id).map_or(0, |w| w.dir);
                    self.drop_watch(&id);
                    let found = Found {
                        names,
                        run_path,
                        machine,
                        dir,
                        depth: depth + 1,
                    };
                    if now(self) {
                        self.queue(map, key, &found);
                    } else if self.parked.len() < MAX_PARKED {
                        self.parked.insert(id, found);
                    }
                }
            }
        }
    }

    /// Forget a file's copies; it is not read again.
    fn drop_watch(&mut self, id: &(Vec<u8>, u64)) {
        if let Some(w) = self.watching.remove(id) {
            self.held -= w.held_len();
        }
        self.done.insert(id.clone());
    }

    /// Read on as far as the copied bytes go.
    fn advance(&mut self, id: &(Vec<u8>, u64)) -> Outcome {
        let Some(w) = self.watching.get_mut(id) else {
            return Outcome::Dropped;
        };
        let before = w.held_len();
        let len = w.extent.end - w.extent.start;
        let outcome = loop {
            match std::mem::replace(&mut w.step, Step::Head) {
                Step::Head => {
                    let prefix = w.prefix(HEAD_MAX.min(len));
                    if prefix.len() < 4 && (prefix.len() as u64) < len {
                        // Not even the magic yet.
                        break Outcome::Pending;
                    }
                    match Head::parse(&prefix) {
                        Ok(head) => match head.dynamic_range() {
                            None => break Outcome::Dropped,
                            Some(_) => {
                                w.interp = head.interp_range().and_then(|r| {
                                    let r = usize::try_from(r.start).ok()?
                                        ..usize::try_from(r.end).ok()?.min(prefix.len());
                                    head.interpreter(prefix.get(r)?).ok()
                                });
                                w.step = Step::Dynamic(head);
                            }
                        },
                        // The head is not all here yet.
                        Err(ElfError::Truncated { .. }) if (prefix.len() as u64) < len => {
                            break Outcome::Pending;
                        }
                        Err(_) => break Outcome::Dropped,
                    }
                }
                Step::Dynamic(head) => {
                    // Some: checked when the head was read.
                    let Some(range) = head.dynamic_range() else {
                        break Outcome::Dropped;
                    };
                    if range.end > len {
                        break Outcome::Dropped;
                    }
                    let Some(bytes) = w.gather(&range) else {
                        w.step = Step::Dynamic(head);
                        break Outcome::Pending;
                    };
                    match head.dynamic(&bytes) {
                        Ok(d) => {
                            let keep = d.strings();
                            if keep.end > len {
                                break Outcome::Dropped;
                            }
                            w.keep_only(&keep);
                            w.step = Step::Names(head, d);
                        }
                        Err(_) => break Outcome::Dropped,
                    }
                }
                Step::Names(head, d) => {
                    let Some(bytes) = w.gather(&d.strings()) else {
                        w.step = Step::Names(head, d);
                        break Outcome::Pending;
                    };
                    break match d.names(&bytes) {
                        Ok(n) => Outcome::Found {
                            names: n.libraries,
                            run_path: n.run_path,
                            machine: head.machine(),
                        },
                        Err(_) => Outcome::Dropped,
                    };
                }
            }
        };
        let after = w.held_len();
        self.held = self.held + after - before;
        outcome
    }

    /// A READ landed at `off` of object `key`: its object's needs are filled (now, or
    /// when they are read).
    pub(crate) fn demand(&mut self, map: &FileMap, key: &[u8], off: u64) {
        let Some(entry) = map.entry(key, off).filter(|e| e.elf) else {
            return;
        };
        let id = (key.to_vec(), entry.extent.start);
        if let Some(found) = self.parked.remove(&id) {
            self.queue(map, key, &found);
        }
        self.demanded.insert(id);
    }

    /// Find what `found` names in the image and keep their pieces to fill, once each.
    fn queue(&mut self, map: &FileMap, key: &[u8], found: &Found) {
        let Found {
            names,
            run_path,
            machine,
            dir,
            depth,
        } = found;
        let (dir, depth, machine) = (*dir, *depth, *machine);
        if depth > MAX_DEPTH {
            return;
        }
        let Some(image) = &map.image else {
            return;
        };
        let origin = map.dirs.get(dir as usize).map_or(&b""[..], |d| &d[..]);
        let dirs = search_dirs(run_path, origin, machine);
        for name in names {
            if self.chained.len() >= MAX_CHAINED {
                return;
            }
            if !plain_name(name) {
                continue;
            }
            if let Some((_, inode)) = find_library(image, &dirs, name) {
                // Found: where its first byte is. A library on another object (layer) is
                // not queued here.
                let first = image
                    .extents(&inode, 0..1)
                    .ok()
                    .and_then(|e| e.into_iter().next());
                if let Some(ExtentTarget::Device { tag, offset, .. }) = first.map(|e| e.target)
                    && tag == key
                    && let Some(entry) = map.entry(key, offset)
                    && entry.extent.start == offset
                {
                    let id = (key.to_vec(), offset);
                    if let std::collections::hash_map::Entry::Vacant(v) = self.chained.entry(id) {
                        v.insert(depth);
                        let pieces = map.whole(&entry.extent);
                        log::debug!(
                            "ELF rule: {} at {offset} ({} pieces, depth {depth})",
                            String::from_utf8_lossy(name),
                            pieces.len()
                        );
                        self.found.entry(key.to_vec()).or_default().extend(pieces);
                    }
                }
            }
        }
    }

    /// The pieces found for object `key` since the last call.
    pub(crate) fn take(&mut self, key: &[u8]) -> Vec<Range<u64>> {
        self.found.remove(key).unwrap_or_default()
    }
}

/// A library name the loader looks up in its directories: one path component.
pub(crate) fn plain_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// Library `name` as the loader finds it in `dirs` (in order) of `image`: the first
/// regular file there (symlinks followed, inside the image), its path and inode.
pub(crate) fn find_library<'d>(
    image: &Image,
    dirs: impl IntoIterator<Item = &'d Vec<u8>>,
    name: &[u8],
) -> Option<(Vec<u8>, Inode)> {
    dirs.into_iter().find_map(|d| {
        let mut path = d.clone();
        path.push(b'/');
        path.extend_from_slice(name);
        let inode = image
            .lookup(std::path::Path::new(std::ffi::OsStr::from_bytes(&path)))
            .ok()?;
        (inode.metadata().file_type() == FileType::Regular).then_some((path, inode))
    })
}

/// Where the loader looks for a library of an object of `machine` with run path `run_path`
/// in directory `origin` (a path from the image's root): the run path (`$ORIGIN`
/// substituted; relative entries and other `$` tokens skipped), then the default
/// directories (multiarch first, as Debian's loader is configured).
pub(crate) fn search_dirs(run_path: &[Vec<u8>], origin: &[u8], machine: u16) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = run_path
        .iter()
        .take(16)
        .filter_map(|dir| with_origin(dir, origin))
        .filter(|d| d.first() == Some(&b'/'))
        .collect();
    let triple: &[u8] = match machine {
        62 => b"x86_64-linux-gnu",
        183 => b"aarch64-linux-gnu",
        _ => b"",
    };
    if !triple.is_empty() {
        for base in [&b"/lib/"[..], b"/usr/lib/"] {
            let mut d = base.to_vec();
            d.extend_from_slice(triple);
            out.push(d);
        }
    }
    for d in [&b"/lib64"[..], b"/usr/lib64", b"/lib", b"/usr/lib"] {
        out.push(d.to_vec());
    }
    out
}

/// `dir` with `$ORIGIN` (or `${ORIGIN}`) replaced by `origin`; `None` for another `$`
/// token (`$LIB`, `$PLATFORM`: not substituted, the entry is skipped).
fn with_origin(dir: &[u8], origin: &[u8]) -> Option<Vec<u8>> {
    let mut d = Vec::new();
    let mut rest = dir;
    while let Some(i) = rest.iter().position(|&b| b == b'$') {
        d.extend_from_slice(&rest[..i]);
        let tail = &rest[i..];
        let token = [&b"${ORIGIN}"[..], b"$ORIGIN"]
            .into_iter()
            .find(|t| tail.starts_with(t))?;
        d.extend_from_slice(origin);
        rest = &tail[token.len()..];
    }
    d.extend_from_slice(rest);
    Some(d)
}
