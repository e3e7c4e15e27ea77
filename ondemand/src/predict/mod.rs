//! Cold prediction from the image's file layout: when a READ lands in a file, fetch the rest
//! of that file (or of its directory's files) in the background, with no recorded trace.
//!
//! A container start reads whole files in many small steps: the dynamic loader maps a
//! shared library and faults in its pages one region at a time, the interpreter reads one
//! module's bytecode, then the next. Over a cachefiles mount each miss is a READ, and the
//! READs of one reader come one after the other, each a round trip. The image's metadata
//! says which file a blob offset belongs to and where the file's other bytes and its
//! directory's files are, so the first miss in a file can start fetching the rest of it on
//! the fill pool while the reader is still waiting for its own window.
//!
//! [`FileMap::from_image`] walks the image once (every regular file's extents on every
//! device) and keeps, per device key, the files' extents sorted by offset, each with the
//! span of its directory's files. [`FileMap::related`] answers "what else to fill for a READ
//! at this offset", as [`Rules`] say:
//!
//! - [`Rules::whole_file`]: the whole file, if it is at most this long;
//! - [`Rules::directory`]: the span of the regular files of the file's directory (laid out
//!   one after the other by the image builders: `mkfs.erofs`, `nydus-image`), if it is at
//!   most this long;
//! - [`Rules::needed`], the ELF rule: once an ELF object's header, dynamic section and
//!   library names are filled (whatever order its pieces arrive in), the libraries it needs
//!   (`DT_NEEDED`, looked up in the image as the dynamic loader looks them up: `DT_RUNPATH`
//!   with `$ORIGIN`, then the multiarch and plain library directories), whole if at most
//!   [`Rules::whole_file`] long, and theirs in turn: the loader's chain of libraries, each
//!   found only once the previous object is mapped, fetched at once. [`elf`] is its
//!   parser (the bytes are the image's: hostile input, parsed with bounds and caps);
//!   [`NeededRule::Demanded`] follows only objects a READ landed in, not those the
//!   directory rule guessed.
//!
//! The engine ([`crate::Engine::with_predictor`]) cuts what is related into pieces of
//! [`FileMap::piece`] bytes from the start of the file (or directory span), so a piece is one
//! of the image's chunks and is decoded once, and queues the pieces that nothing is present
//! or in flight in on the fill pool; a READ over a queued piece runs it itself, a READ over a
//! piece being filled waits for it. The map can be built on a thread of its own while the
//! image mounts ([`Predictor::set`]): READs before it is ready are served as without it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use erofs_reader::{ExtentTarget, FileType, Image, Inode};

mod chain;
pub mod elf;
pub mod entrypoint;

use chain::Chain;

/// Most files the walk visits, and how deep it goes.
const MAX_FILES: usize = 1 << 20;
const MAX_DEPTH: usize = 256;

/// What to fetch beside a READ's window ([`FileMap::related`]); 0 turns a rule off. The
/// default is [`Rules::DEFAULT`] (the CLI's `--predict-file` and `--predict-dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Fill the whole file a READ lands in if the file is at most this long.
    pub whole_file: u64,
    /// Fill the span of the regular files of the READ's file's directory if it is at most
    /// this long.
    pub directory: u64,
    /// When an ELF object's first bytes, dynamic section and library names have been
    /// filled, fill the libraries it needs (`DT_NEEDED`, found in the image as the dynamic
    /// loader finds them), whole, if they are at most [`whole_file`](Self::whole_file)
    /// long; and theirs in turn (see [`elf`]). Which objects: [`NeededRule`].
    pub needed: NeededRule,
    /// Fill the spans of the directories named as the READ's file's directory in the other
    /// subdirectories of its parent's parent (`/usr/lib/python3.11/*/__pycache__` for a READ
    /// in `/usr/lib/python3.11/email/__pycache__`: the packages an import walks next), if
    /// they add up to at most this long.
    pub cousins: u64,
}

/// Whose libraries the ELF rule ([`Rules::needed`]) fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NeededRule {
    /// Nobody's.
    #[default]
    Off,
    /// Those of objects a READ landed in (the program, a library the loader mapped) and of
    /// the libraries found that way; not those of objects only guessed (filled by the
    /// directory rule beside another file).
    Demanded,
    /// Those of every ELF object filled, guessed or not.
    All,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::DEFAULT
    }
}

impl Rules {
    /// Whole files and directory spans of at most 8 MiB, the ELF rule for demanded objects
    /// and cousins of at most 8 MiB: measured with the container start (issue 14; DESIGN.md,
    /// "Cold prediction"), where the first two add a few hundred KB to what the readahead
    /// windows fetch anyway and the last two took its READs from 32 to 18 and its time down
    /// by ~6% (session 16).
    pub const DEFAULT: Rules = Rules {
        whole_file: 8 << 20,
        directory: 8 << 20,
        needed: NeededRule::Demanded,
        cousins: 8 << 20,
    };

    /// No prediction.
    pub const OFF: Rules = Rules {
        whole_file: 0,
        directory: 0,
        needed: NeededRule::Off,
        cousins: 0,
    };

    /// Whether prediction is on: the whole-file or the directory rule (the ELF rule fills
    /// whole files: it needs [`whole_file`](Self::whole_file); the CLI turns prediction off
    /// with both at 0, whatever the cousin rule says).
    pub fn any(&self) -> bool {
        self.whole_file > 0 || self.directory > 0
    }

    /// Whether the ELF rule is on.
    fn chains(&self) -> bool {
        self.needed != NeededRule::Off && self.whole_file > 0
    }
}

/// One file's bytes on one device, and its directory's span there.
#[derive(Debug, Clone)]
struct Entry {
    extent: Range<u64>,
    directory: Range<u64>,
    /// The directory's path in the image (an index in [`FileMap::dirs`]).
    dir: u32,
    /// Maybe an ELF object: executable, or a name with `.so` in it.
    elf: bool,
    /// Its name in its directory ([`FileMap::files_in`]).
    name: Box<[u8]>,
}

/// The image's regular files by device and offset ([`FileMap::from_image`]).
#[derive(Debug, Clone, Default)]
pub struct FileMap {
    /// Per device key, sorted by start; extents do not overlap (a shared extent, a
    /// deduplicated chunk, is kept for its first file only).
    files: HashMap<Vec<u8>, Vec<Entry>>,
    /// The directories' paths, `/`-separated from the root (which is empty).
    dirs: Vec<Box<[u8]>>,
    /// Per directory: its files' span (on the first device it has files on), and its
    /// group of cousins ([`Rules::cousins`]: an index in `cousins`).
    spans: Vec<Option<(Vec<u8>, Range<u64>)>>,
    group: Vec<u32>,
    cousins: Vec<Vec<u32>>,
    rules: Rules,
    piece: u64,
    /// The image, to find the libraries an ELF object needs ([`Rules::needed`]).
    image: Option<Image>,
}

impl FileMap {
    /// Walk `image` and index its regular files' extents on its extra devices (keyed by
    /// their tags: a Nydus blob id, as the kernel opens it) under `rules`. `piece` is the
    /// length related ranges are cut into, from the start of the file or span (the image's
    /// chunk size; at least 4 KiB).
    ///
    /// # Errors
    ///
    /// The image's metadata cannot be read. Files whose extents the reader does not map
    /// (compressed files), and files not stored whole in one run on one extra device (a
    /// hole, a metabox tail, bytes out of order: byte `i` of an indexed file is at its
    /// extent's start + `i`), are skipped.
    pub fn from_image(image: &Image, rules: Rules, piece: u64) -> erofs_reader::Result<FileMap> {
        let mut files: HashMap<Vec<u8>, Vec<Entry>> = HashMap::new();
        let mut dirs = Vec::new();
        let mut count = 0usize;
        let root = image.inode(image.root_nid())?;
        walk(image, &root, b"", &mut files, &mut dirs, &mut count, 0)?;
        for list in files.values_mut() {
            list.sort_by_key(|e| (e.extent.start, std::cmp::Reverse(e.extent.end)));
            // Keep extents disjoint: a later one starting inside an earlier one is dropped.
            let mut end = 0;
            list.retain(|e| {
                let keep = e.extent.start >= end;
                if keep {
                    end = e.extent.end;
                }
                keep
            });
        }
        let (spans, group, cousins) = cousins(&files, &dirs);
        Ok(FileMap {
            files,
            dirs,
            spans,
            group,
            cousins,
            rules,
            piece: piece.max(4096),
            image: rules.chains().then(|| image.clone()),
        })
    }

    /// A map of the files `(extent, directory span)` on device `key`, for tests.
    #[cfg(test)]
    pub(crate) fn from_entries(
        key: &[u8],
        entries: &[(Range<u64>, Range<u64>)],
        rules: Rules,
        piece: u64,
    ) -> FileMap {
        let list = entries
            .iter()
            .enumerate()
            .map(|(i, (extent, directory))| Entry {
                extent: extent.clone(),
                directory: directory.clone(),
                dir: 0,
                elf: false,
                name: format!("f{i}").into_bytes().into(),
            })
            .collect();
        FileMap {
            files: HashMap::from([(key.to_vec(), list)]),
            dirs: vec![Box::from(&b""[..])],
            spans: Vec::new(),
            group: Vec::new(),
            cousins: Vec::new(),
            rules,
            piece,
            image: None,
        }
    }

    /// The same map with its files in directory `dir` (`/a/b`) instead of the root, for tests.
    #[cfg(test)]
    pub(crate) fn in_dir(mut self, dir: &[u8]) -> FileMap {
        self.dirs[0] = dir.into();
        self
    }

    /// The rules this map answers with.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// The length related ranges are cut into.
    pub fn piece(&self) -> u64 {
        self.piece
    }

    /// The files indexed.
    pub fn files(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }

    /// What to fill beside a READ at `off` of the object `key`, in pieces of
    /// [`piece`](Self::piece) bytes from the file's (or span's) start: near, the file
    /// (whole-file rule), then the rest of its directory's span (directory rule); far, its
    /// directory's cousins (cousin rule). Empty if `off` is in no indexed file or no rule
    /// applies.
    pub fn related(&self, key: &[u8], off: u64) -> Related {
        let Some(entry) = self.entry(key, off) else {
            return Related::default();
        };
        let mut out = Vec::new();
        let len = |r: &Range<u64>| r.end - r.start;
        let file = self.rules.whole_file > 0 && len(&entry.extent) <= self.rules.whole_file;
        if file {
            cut(&entry.extent, self.piece, &mut out);
            // An ELF object's dynamic section is at the start of its data segment: in a
            // library's last piece, in a program's with much data (`python3.11`: 80% into
            // the file) the one before. With the ELF rule, its last two pieces first, so the
            // libraries it names are known soon.
            if self.rules.chains() && entry.elf && out.len() > 1 {
                let first = 2.min(out.len() - 1);
                out.rotate_right(first);
            }
        }
        let dir = &entry.directory;
        if self.rules.directory > 0 && len(dir) <= self.rules.directory {
            // The file's own pieces first, then the span's before and after it.
            if !file {
                cut(&entry.extent, self.piece, &mut out);
            }
            cut(&(entry.extent.end..dir.end), self.piece, &mut out);
            cut(&(dir.start..entry.extent.start), self.piece, &mut out);
        }
        let mut far = Vec::new();
        if self.rules.cousins > 0 {
            let spans: Vec<&Range<u64>> = self
                .group
                .get(entry.dir as usize)
                .and_then(|g| self.cousins.get(*g as usize))
                .into_iter()
                .flatten()
                .filter(|&&d| d != entry.dir)
                .filter_map(|&d| match self.spans.get(d as usize) {
                    Some(Some((tag, span))) if tag == key => Some(span),
                    _ => None,
                })
                .collect();
            let total: u64 = spans.iter().map(|r| len(r)).sum();
            if total <= self.rules.cousins {
                for span in spans {
                    cut(span, self.piece, &mut far);
                }
            }
        }
        Related { near: out, far }
    }
}

/// What [`FileMap::related`] relates to a READ, in pieces. The engine queues `near` ahead
/// of every fill queued before it (the reader is there now: its file and directory come
/// first, the last READ's before the ones of earlier READs), and `far` behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Related {
    /// The READ's file (whole-file rule), then the rest of its directory's span (directory
    /// rule).
    pub near: Vec<Range<u64>>,
    /// The spans of its directory's cousins (cousin rule).
    pub far: Vec<Range<u64>>,
}

impl Related {
    /// Whether nothing is related.
    pub fn is_empty(&self) -> bool {
        self.near.is_empty() && self.far.is_empty()
    }
}

impl FileMap {
    /// The files that hold bytes of `range` of object `key`, in offset order: each one's
    /// path from the image's root (`/`-separated, starting with `/`) and the range of the
    /// file those bytes are (a file's extent is its bytes from offset 0, in one run on one
    /// device). What [`crate::warm::PageCacheWarmer`] reads through a mount.
    pub fn files_in(&self, key: &[u8], range: Range<u64>) -> Vec<(Vec<u8>, Range<u64>)> {
        self.overlapping(key, range.clone())
            .iter()
            .map(|e| {
                let dir = self.dirs.get(e.dir as usize).map_or(&[][..], |d| &d[..]);
                let mut path = Vec::with_capacity(dir.len() + 1 + e.name.len());
                path.extend_from_slice(dir);
                path.push(b'/');
                path.extend_from_slice(&e.name);
                let start = range.start.max(e.extent.start) - e.extent.start;
                let end = range.end.min(e.extent.end) - e.extent.start;
                (path, start..end)
            })
            .collect()
    }

    /// The file whose extent holds `off` of object `key`.
    fn entry(&self, key: &[u8], off: u64) -> Option<&Entry> {
        let list = self.files.get(key)?;
        let i = list.partition_point(|e| e.extent.start <= off);
        let entry = &list[i.checked_sub(1)?];
        (off < entry.extent.end).then_some(entry)
    }

    /// The files of object `key` whose extents overlap `range`.
    fn overlapping(&self, key: &[u8], range: Range<u64>) -> &[Entry] {
        let Some(list) = self.files.get(key) else {
            return &[];
        };
        // The first one ending after the start (extents are disjoint and sorted).
        let from = list.partition_point(|e| e.extent.end <= range.start);
        let to = list.partition_point(|e| e.extent.start < range.end);
        list.get(from..to.max(from)).unwrap_or(&[])
    }

    /// A whole file of at most [`Rules::whole_file`] bytes, in pieces.
    fn whole(&self, extent: &Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if extent.end - extent.start <= self.rules.whole_file {
            cut(extent, self.piece, &mut out);
        }
        out
    }
}

/// Per directory, its files' span and its group of cousins: the directories of the same
/// name under the same grandparent (groups of one are left out).
#[allow(clippy::type_complexity)]
fn cousins(
    files: &HashMap<Vec<u8>, Vec<Entry>>,
    dirs: &[Box<[u8]>],
) -> (Vec<Option<(Vec<u8>, Range<u64>)>>, Vec<u32>, Vec<Vec<u32>>) {
    let mut spans: Vec<Option<(Vec<u8>, Range<u64>)>> = vec![None; dirs.len()];
    for (tag, list) in files {
        for e in list {
            if let Some(slot @ None) = spans.get_mut(e.dir as usize) {
                *slot = Some((tag.clone(), e.directory.clone()));
            }
        }
    }
    // Split "/a/b/c" into ("/a", "c").
    let split = |p: &[u8]| -> Option<(Vec<u8>, Vec<u8>)> {
        let i = p.iter().rposition(|&b| b == b'/')?;
        let parent = &p[..i];
        let j = parent.iter().rposition(|&b| b == b'/')?;
        Some((parent[..j].to_vec(), p[i + 1..].to_vec()))
    };
    let mut by: HashMap<(Vec<u8>, Vec<u8>), Vec<u32>> = HashMap::new();
    for (i, p) in dirs.iter().enumerate() {
        if spans[i].is_some()
            && let Some(k) = split(p)
        {
            // At most MAX_FILES directories: fits in u32.
            by.entry(k).or_default().push(i as u32);
        }
    }
    let mut group = vec![u32::MAX; dirs.len()];
    let mut groups = Vec::new();
    for members in by.into_values().filter(|m| m.len() > 1) {
        for &m in &members {
            group[m as usize] = groups.len() as u32;
        }
        groups.push(members);
    }
    (spans, group, groups)
}

/// `range` in pieces of `piece` bytes from its start, appended to `out`.
pub(crate) fn cut(range: &Range<u64>, piece: u64, out: &mut Vec<Range<u64>>) {
    let mut pos = range.start;
    while pos < range.end {
        let end = pos.saturating_add(piece).min(range.end);
        out.push(pos..end);
        pos = end;
    }
}

/// A regular file's bytes as one run on one extra device: its tag and range there, byte `i`
/// of the file at `range.start + i`. `None` for an empty file, or one with any byte
/// elsewhere (a hole, a metabox tail, the primary device, another device, out of order).
/// The one rule for what [`FileMap`] indexes and [`entrypoint`]'s closure takes: both hand
/// out file offsets as offsets in the run ([`FileMap::files_in`], the ELF rule's heads, a
/// program's head read from its device).
pub(crate) fn device_run(image: &Image, inode: &Inode) -> Option<(Vec<u8>, Range<u64>)> {
    let len = inode.metadata().len();
    if len == 0 {
        return None;
    }
    let mut out: Option<(Vec<u8>, Range<u64>)> = None;
    for e in image.extents(inode, 0..len).ok()? {
        let ExtentTarget::Device { index, tag, offset } = e.target else {
            return None;
        };
        if index == 0 {
            return None;
        }
        let end = offset.checked_add(e.len)?;
        match &mut out {
            None if e.file_offset == 0 => out = Some((tag, offset..end)),
            Some((t, r)) if *t == tag && r.end == offset => r.end = end,
            _ => return None,
        }
    }
    out.filter(|(_, r)| r.end - r.start == len)
}

/// Index a directory's regular files (each one [`device_run`] on an extra device) with their
/// directory's span, then walk its subdirectories.
fn walk(
    image: &Image,
    dir: &Inode,
    path: &[u8],
    out: &mut HashMap<Vec<u8>, Vec<Entry>>,
    dirs: &mut Vec<Box<[u8]>>,
    count: &mut usize,
    depth: usize,
) -> erofs_reader::Result<()> {
    // At most MAX_FILES directories: fits in u32.
    let dir_index = dirs.len() as u32;
    dirs.push(path.into());
    // Per regular file: its device tag, extent, whether it may be ELF, its name.
    type Found = (Vec<u8>, Range<u64>, bool, Box<[u8]>);
    let mut here: Vec<Found> = Vec::new();
    let mut subdirs = Vec::new();
    for entry in image.read_dir_inode(dir)? {
        let entry = entry?;
        if entry.name() == b"." || entry.name() == b".." {
            continue;
        }
        if *count >= MAX_FILES {
            break;
        }
        *count += 1;
        let inode = image.inode(entry.nid())?;
        match inode.metadata().file_type() {
            FileType::Directory if depth < MAX_DEPTH => {
                subdirs.push((entry.name().to_vec(), inode));
            }
            FileType::Regular => {
                if let Some((tag, run)) = device_run(image, &inode) {
                    let name = entry.name();
                    let elf = inode.metadata().permissions() & 0o111 != 0
                        || name.windows(3).any(|w| w == b".so");
                    here.push((tag, run, elf, name.into()));
                }
            }
            _ => {}
        }
    }
    // The directory's span on each device: from its first file's start to its last one's end.
    let mut spans: HashMap<&[u8], Range<u64>> = HashMap::new();
    for (tag, r, _, _) in &here {
        spans
            .entry(tag.as_slice())
            .and_modify(|s| {
                s.start = s.start.min(r.start);
                s.end = s.end.max(r.end);
            })
            .or_insert_with(|| r.clone());
    }
    let spans: HashMap<Vec<u8>, Range<u64>> =
        spans.into_iter().map(|(k, v)| (k.to_vec(), v)).collect();
    for (tag, extent, elf, name) in here {
        let directory = spans.get(&tag).cloned().unwrap_or_else(|| extent.clone());
        out.entry(tag).or_default().push(Entry {
            extent,
            directory,
            dir: dir_index,
            elf,
            name,
        });
    }
    for (name, sub) in subdirs {
        let mut sub_path = path.to_vec();
        sub_path.push(b'/');
        sub_path.extend_from_slice(&name);
        walk(image, &sub, &sub_path, out, dirs, count, depth + 1)?;
    }
    Ok(())
}

/// A [`FileMap`] that may be set later (built on a thread of its own while the image
/// mounts); shared by the engine and whoever builds it.
#[derive(Debug, Default)]
pub struct Predictor {
    map: OnceLock<Arc<FileMap>>,
    /// The ELF objects being read ([`Rules::needed`]).
    chain: Mutex<Chain>,
}

impl Predictor {
    /// A predictor with no map yet (it predicts nothing until [`set`](Self::set)).
    pub fn new() -> Self {
        Predictor::default()
    }

    /// Give it its map (the first call wins): a [`FileMap`], or an `Arc` of one shared
    /// with a [`PageCacheWarmer`](crate::warm::PageCacheWarmer).
    pub fn set(&self, map: impl Into<Arc<FileMap>>) {
        let _ = self.map.set(map.into());
    }

    /// The map, once set.
    pub fn get(&self) -> Option<&FileMap> {
        self.map.get().map(Arc::as_ref)
    }

    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        // The chain's state stays consistent between statements: a panic elsewhere leaves
        // it usable.
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `bytes` were filled at `pos` of object `key`: with the ELF rule on, read what the ELF
    /// objects among the files they overlap need, and keep the libraries found to be filled
    /// ([`take_needed`](Self::take_needed)).
    pub(crate) fn observe(&self, key: &[u8], pos: u64, bytes: &[u8]) {
        if let Some(map) = self.get().filter(|m| m.rules.chains()) {
            self.chain().observe(map, key, pos, bytes);
        }
    }

    /// A READ landed at `off` of object `key` ([`NeededRule::Demanded`]).
    pub(crate) fn demand(&self, key: &[u8], off: u64) {
        if let Some(map) = self
            .get()
            .filter(|m| m.rules.needed == NeededRule::Demanded)
        {
            self.chain().demand(map, key, off);
        }
    }

    /// The pieces of libraries found since the last call for object `key`, to fill.
    pub(crate) fn take_needed(&self, key: &[u8]) -> Vec<Range<u64>> {
        if self.get().is_none_or(|m| !m.rules.chains()) {
            return Vec::new();
        }
        self.chain().take(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Three files in one directory (span [0, 3.5 MiB)), a big file alone in another.
    fn map(rules: Rules) -> FileMap {
        let dir = 0..7 * MIB / 2;
        FileMap::from_entries(
            b"blob",
            &[
                (0..4096, dir.clone()),
                (4096..5 * MIB / 2, dir.clone()),
                (5 * MIB / 2..7 * MIB / 2, dir),
                (4 * MIB..20 * MIB, 4 * MIB..20 * MIB),
            ],
            rules,
            MIB,
        )
    }

    #[test]
    fn a_blob_range_is_the_files_it_holds_bytes_of() {
        let m = map(Rules::DEFAULT);
        // From the first file's last half to the second's first page: both, clipped.
        assert_eq!(
            m.files_in(b"blob", 2048..8192),
            vec![(b"/f0".to_vec(), 2048..4096), (b"/f1".to_vec(), 0..4096)]
        );
        // A gap between files, another key, an empty range: nothing.
        assert!(m.files_in(b"blob", 7 * MIB / 2..4 * MIB).is_empty());
        assert!(m.files_in(b"other", 0..MIB).is_empty());
        assert!(m.files_in(b"blob", 4096..4096).is_empty());
        // The big file's middle, as its own offsets.
        assert_eq!(
            m.files_in(b"blob", 5 * MIB..6 * MIB),
            vec![(b"/f3".to_vec(), MIB..2 * MIB)]
        );
    }

    #[test]
    fn a_file_is_related_whole_in_pieces_from_its_start() {
        let m = map(Rules {
            needed: NeededRule::Off,
            cousins: 0,
            whole_file: 8 * MIB,
            directory: 0,
        });
        // Anywhere in the second file: its pieces, cut from its own start.
        let want = vec![
            4096..MIB + 4096,
            MIB + 4096..2 * MIB + 4096,
            2 * MIB + 4096..5 * MIB / 2,
        ];
        assert_eq!(m.related(b"blob", 4096).near, want);
        assert_eq!(m.related(b"blob", 2 * MIB).near, want);
        // A file longer than the bound: nothing.
        assert!(m.related(b"blob", 5 * MIB).is_empty());
        // Between files, past the last, another key: nothing.
        assert!(m.related(b"blob", 15 * MIB / 4).is_empty());
        assert!(m.related(b"blob", 20 * MIB).is_empty());
        assert!(m.related(b"other", 0).is_empty());
    }

    #[test]
    fn a_directory_span_follows_its_file() {
        let m = map(Rules {
            needed: NeededRule::Off,
            cousins: 0,
            whole_file: 0,
            directory: 4 * MIB,
        });
        // The file, then the span after it, then the span before it.
        assert_eq!(
            m.related(b"blob", 5 * MIB / 2 + 4096).near,
            vec![
                5 * MIB / 2..7 * MIB / 2,
                0..MIB,
                MIB..2 * MIB,
                2 * MIB..5 * MIB / 2
            ]
        );
        // A span longer than the bound: nothing.
        let small = map(Rules {
            needed: NeededRule::Off,
            cousins: 0,
            whole_file: 0,
            directory: 3 * MIB,
        });
        assert!(small.related(b"blob", 0).is_empty());
        // Both rules: the file's pieces once.
        let both = map(Rules {
            needed: NeededRule::Off,
            cousins: 0,
            whole_file: 8 * MIB,
            directory: 4 * MIB,
        });
        assert_eq!(
            both.related(b"blob", 0).near,
            vec![
                0..4096,
                4096..MIB + 4096,
                MIB + 4096..2 * MIB + 4096,
                2 * MIB + 4096..3 * MIB + 4096,
                3 * MIB + 4096..7 * MIB / 2
            ]
        );
    }
}
