//! Access traces: what the readers of a mount asked for, recorded by one run ([`Recorder`])
//! and fetched ahead of the readers by the next ([`AccessTrace`], replayed through
//! [`crate::PrefetchConfig::with_trace`]).
//!
//! The format and how hostile traces are handled: [`AccessTrace`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

use crate::ranges::RangeSet;

/// The first line of a version-1 trace.
pub const TRACE_HEADER: &str = "erofs-ondemand-trace v1";

/// The most range lines a trace may hold: a recorder stops recording there, a parser skips
/// the rest.
pub const MAX_TRACE_ENTRIES: usize = 1 << 16;

/// The most bytes of a trace file [`AccessTrace::read`] reads (64 KiB entries of long keys).
pub const MAX_TRACE_FILE: u64 = 16 << 20;

/// The longest line the parser accepts, in bytes.
const MAX_LINE: usize = 2048;

/// How many skipped lines are logged one by one (the rest are counted).
const LOGGED_SKIPS: usize = 5;

/// Why a trace cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The first line is not a trace header.
    #[error("not an access trace: the first line is not `{TRACE_HEADER}`")]
    NotATrace,
    /// A trace header of a version this build does not read.
    #[error("access trace version `{0}` is not supported (this build reads v1)")]
    Version(String),
    /// Reading the file failed.
    #[error("reading the access trace: {0}")]
    Io(#[from] io::Error),
}

impl From<TraceError> for io::Error {
    fn from(e: TraceError) -> io::Error {
        match e {
            TraceError::Io(e) => e,
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// One recorded range of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// The object's cookie key.
    pub key: Vec<u8>,
    /// The bytes the readers asked for (never empty).
    pub range: Range<u64>,
}

/// A parsed trace: its ranges in first-access order.
///
/// # Format (version 1)
///
/// Line-oriented ASCII text. The first line is the header [`TRACE_HEADER`]
/// (`erofs-ondemand-trace v1`); then one line per range, in first-access order:
///
/// ```text
/// erofs-ondemand-trace v1
/// # comments and blank lines are ignored
/// 4f1c0d2e…a9 0 4096
/// 4f1c0d2e…a9 1048576 131072
/// image.erofs 0 8192
/// ```
///
/// Each range line is `<key> <offset> <len>` (fields separated by spaces or tabs; offset and
/// length in decimal bytes). The key is the object's cookie key, the same on every cold run
/// of the same image: a Nydus blob id or a registry layer's digest hex, a `fsid`, a
/// `device=` name or a fanotify backing file's key. Bytes of the key outside printable
/// ASCII, `%` and `#`, are written `%XX` (hex).
///
/// A recorder writes a range the kernel demanded (a cachefiles READ, a fanotify pre-content
/// event), clipped to the object, before the daemon's readahead or fill ahead grows it, and
/// only its parts not recorded before: the ranges of one key never overlap.
///
/// # Hostile traces
///
/// A trace is input like any other. [`AccessTrace::parse`] refuses a missing header or an
/// unknown version ([`TraceError`]); it skips, with a warning and a count
/// ([`AccessTrace::skipped`]), lines that are too long, not three fields, bad numbers,
/// empty ranges, ranges whose end overflows, and every line after [`MAX_TRACE_ENTRIES`].
/// [`AccessTrace::read`] reads at most [`MAX_TRACE_FILE`] bytes. Keys that no object has
/// are never fetched, and ranges past an object's end are clipped to it when the object
/// opens.
///
/// # Example
///
/// ```
/// use ondemand::{AccessTrace, PrefetchConfig};
///
/// let text = "erofs-ondemand-trace v1\nblob1 0 4096\nblob1 1048576 8192\ngarbage\n";
/// let trace = AccessTrace::parse(text.as_bytes())?;
/// assert_eq!((trace.entries().len(), trace.skipped()), (2, 1));
/// assert_eq!(trace.entries()[1].range, 1048576..1056768);
/// // Fetch the traced ranges, in order, as each object opens (and nothing else).
/// let config = PrefetchConfig::listed_only().with_trace(&trace);
/// assert_eq!(config.plan(b"blob1", 4 << 20), [0..4096, 1048576..1056768]);
/// # Ok::<(), ondemand::TraceError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessTrace {
    entries: Vec<TraceEntry>,
    skipped: usize,
}

impl AccessTrace {
    /// Parse a trace (see [`AccessTrace`] for the format and what is skipped).
    ///
    /// # Errors
    ///
    /// [`TraceError::NotATrace`] or [`TraceError::Version`] when the header is not
    /// [`TRACE_HEADER`].
    pub fn parse(text: &[u8]) -> Result<AccessTrace, TraceError> {
        let mut lines = text.split(|&b| b == b'\n');
        let header = lines.next().unwrap_or_default();
        let header = header.trim_ascii();
        if header != TRACE_HEADER.as_bytes() {
            return Err(match header.strip_prefix(b"erofs-ondemand-trace ") {
                Some(v) => {
                    TraceError::Version(String::from_utf8_lossy(&v[..v.len().min(32)]).into())
                }
                None => TraceError::NotATrace,
            });
        }
        let mut trace = AccessTrace::default();
        for (i, line) in lines.enumerate() {
            let number = i + 2;
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            if trace.entries.len() >= MAX_TRACE_ENTRIES {
                trace.skip(number, "more than MAX_TRACE_ENTRIES ranges");
                continue;
            }
            match parse_line(line) {
                Ok(entry) => trace.entries.push(entry),
                Err(why) => trace.skip(number, why),
            }
        }
        if trace.skipped > LOGGED_SKIPS {
            log::warn!("access trace: {} lines skipped in all", trace.skipped);
        }
        Ok(trace)
    }

    /// Read and parse the trace file at `path` (at most [`MAX_TRACE_FILE`] bytes of it; a
    /// longer file is cut there, with a warning).
    ///
    /// # Errors
    ///
    /// The file cannot be read, or [`parse`](Self::parse) refuses it.
    pub fn read(path: impl AsRef<Path>) -> Result<AccessTrace, TraceError> {
        let mut text = Vec::new();
        File::open(path)?
            .take(MAX_TRACE_FILE + 1)
            .read_to_end(&mut text)?;
        if text.len() as u64 > MAX_TRACE_FILE {
            log::warn!("access trace: longer than {MAX_TRACE_FILE} bytes; the rest is ignored");
            // Cut at the last whole line.
            let end = text[..MAX_TRACE_FILE as usize]
                .iter()
                .rposition(|&b| b == b'\n')
                .unwrap_or(0);
            text.truncate(end);
        }
        Self::parse(&text)
    }

    fn skip(&mut self, line: usize, why: &str) {
        self.skipped += 1;
        if self.skipped <= LOGGED_SKIPS {
            log::warn!("access trace line {line}: {why}; skipped");
        }
    }

    /// The ranges, in first-access order.
    pub fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }

    /// How many lines were skipped as malformed (or past [`MAX_TRACE_ENTRIES`]).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The sum of the entries' lengths (overlaps counted twice).
    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |n, e| n.saturating_add(e.range.end - e.range.start))
    }

    /// The keys, in order of first appearance.
    pub fn keys(&self) -> Vec<&[u8]> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .map(|e| e.key.as_slice())
            .filter(|k| seen.insert(*k))
            .collect()
    }

    /// The trace as text, in the format [`parse`](Self::parse) reads.
    pub fn to_text(&self) -> String {
        let mut out = format!("{TRACE_HEADER}\n");
        for e in &self.entries {
            push_line(&mut out, &e.key, &e.range);
        }
        out
    }
}

/// One `<key> <offset> <len>` line, trimmed and non-empty.
fn parse_line(line: &[u8]) -> Result<TraceEntry, &'static str> {
    if line.len() > MAX_LINE {
        return Err("line too long");
    }
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let (Some(key), Some(off), Some(len), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected `<key> <offset> <len>`");
    };
    let key = unescape(key).ok_or("bad %XX escape in the key")?;
    let number = |f: &[u8]| {
        std::str::from_utf8(f)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
    };
    let off = number(off).ok_or("bad offset")?;
    let len = number(len).ok_or("bad length")?;
    if len == 0 {
        return Err("empty range");
    }
    let end = off.checked_add(len).ok_or("range end overflows")?;
    Ok(TraceEntry {
        key,
        range: off..end,
    })
}

/// Whether a key byte is written as itself (`#` would start a comment line).
fn plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'%' && b != b'#'
}

fn escape(key: &[u8], out: &mut String) {
    for &b in key {
        if plain(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn unescape(field: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&b) = field.get(i) {
        if b == b'%' {
            let hex = field.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn push_line(out: &mut String, key: &[u8], range: &Range<u64>) {
    escape(key, out);
    // Writing to a String cannot fail.
    let _ = writeln!(out, " {} {}", range.start, range.end - range.start);
}

/// Where a recorder writes.
enum Out {
    /// Unbuffered: every line is in the kernel once `record` returns.
    File(File),
    /// Flushed after every record.
    Writer(Box<dyn Write + Send>),
}

struct RecorderState {
    out: Out,
    recorded: HashMap<Vec<u8>, RangeSet>,
    entries: usize,
    bytes: u64,
    /// A write failed, or the trace is full: nothing more is written.
    stopped: bool,
}

/// Writes an access trace while a daemon serves: each range the kernel demands, the first
/// time it is demanded, as a line of the [trace format](AccessTrace).
///
/// Give it to the engine with [`crate::Engine::with_recorder`] (or
/// [`crate::fanotify::FanotifyDaemon::with_recorder`]); the engine calls
/// [`record`](Self::record) for every READ (every pre-content event) before it widens it
/// to its readahead window. Lines are written as they come, through an unbuffered file, so a
/// daemon killed at any point leaves every line recorded so far; [`flush`](Self::flush)
/// (called by [`crate::Daemon::run`] and [`crate::FanotifyDaemon::run`] as they return)
/// makes them durable with `fdatasync`.
///
/// Only misses reach a cachefiles daemon: reads of bytes its readahead or prefetch already
/// wrote send no READ, so a trace recorded with cachefiles is complete only with readahead,
/// fill ahead and prefetch off (`--readahead 0 --sequential-ahead 0`). fanotify sends an
/// event for every read, present or not: its traces are complete with any settings.
///
/// # Example
///
/// Record a run of the reference daemon (here with a scripted kernel, `testing::FakeDevice`,
/// feature `test-util`: one OPEN of the blob `blob1`, two READs), then plan its replay:
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use ondemand::proto::{MsgId, ObjectId, OpenRequest, ReadRequest, Request};
/// use ondemand::testing::FakeDevice;
/// use ondemand::{AccessTrace, Daemon, LocalDirServer, PrefetchConfig, Recorder, Session, Shutdown};
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("blob1"), vec![7u8; 1 << 20])?;
/// let stop = Shutdown::new();
/// let kernel = FakeDevice::new(dir.path()).stop_when_empty(stop.clone());
/// kernel.push(Request::Open(OpenRequest {
///     msg_id: MsgId(1), object_id: ObjectId(1),
///     volume_key: b"erofs,img", cookie_key: b"blob1", fd: 9, flags: 0,
/// }));
/// for (msg, off) in [(2, 65536), (3, 0)] {
///     let read = ReadRequest { msg_id: MsgId(msg), object_id: ObjectId(1), off, len: 4096 };
///     kernel.push(Request::Read(read));
/// }
/// let path = dir.path().join("trace");
/// let recorder = Arc::new(Recorder::create(&path)?);
/// let session = Session::new(LocalDirServer::new(dir.path()))
///     .with_readahead(0)
///     .with_recorder(Arc::clone(&recorder));
/// // One worker handles the READs in the order the kernel sent them (with more, the two
/// // READs race and either may be recorded first).
/// Daemon::new(kernel, session).with_threads(1).with_shutdown(stop).run()?;
/// // `run` flushed the trace as it returned.
/// assert_eq!(
///     std::fs::read_to_string(&path)?,
///     "erofs-ondemand-trace v1\nblob1 65536 4096\nblob1 0 4096\n"
/// );
/// // The next cold start fetches the same ranges first, in that order.
/// let trace = AccessTrace::read(&path)?;
/// let replay = PrefetchConfig::listed_only().with_trace(&trace);
/// assert_eq!(replay.plan(b"blob1", 1 << 20), [65536..69632, 0..4096]);
/// # Ok(()) }
/// ```
pub struct Recorder {
    state: Mutex<RecorderState>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Recorder")
            .field("entries", &s.entries)
            .field("bytes", &s.bytes)
            .field("stopped", &s.stopped)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Record into a new file at `path` (replacing any), starting with the header.
    ///
    /// # Errors
    ///
    /// The file cannot be created or written.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Recorder> {
        let mut file = File::create(path)?;
        file.write_all(format!("{TRACE_HEADER}\n").as_bytes())?;
        Ok(Self::with_out(Out::File(file)))
    }

    /// Record into `writer` (flushed after each record), starting with the header.
    ///
    /// # Errors
    ///
    /// Writing the header fails.
    pub fn new(mut writer: impl Write + Send + 'static) -> io::Result<Recorder> {
        writer.write_all(format!("{TRACE_HEADER}\n").as_bytes())?;
        writer.flush()?;
        Ok(Self::with_out(Out::Writer(Box::new(writer))))
    }

    fn with_out(out: Out) -> Recorder {
        Recorder {
            state: Mutex::new(RecorderState {
                out,
                recorded: HashMap::new(),
                entries: 0,
                bytes: 0,
                stopped: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // Every update leaves the state consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record that readers asked for `len` bytes at `off` of the object `key`: the parts not
    /// recorded before are written, one line each. A write error is logged once and stops
    /// the recording (serving goes on); so does reaching [`MAX_TRACE_ENTRIES`].
    pub fn record(&self, key: &[u8], off: u64, len: u64) {
        let Some(end) = off.checked_add(len).filter(|&end| end > off) else {
            return;
        };
        let mut s = self.lock();
        if s.stopped {
            return;
        }
        let set = s.recorded.entry(key.to_vec()).or_default();
        let new = set.gaps(off..end);
        if new.is_empty() {
            return;
        }
        for r in &new {
            set.insert(r.clone());
        }
        let mut text = String::new();
        let mut added = 0;
        for r in &new {
            if s.entries + added >= MAX_TRACE_ENTRIES {
                log::warn!("access trace: {MAX_TRACE_ENTRIES} ranges recorded; recording stops");
                s.stopped = true;
                break;
            }
            push_line(&mut text, key, r);
            added += 1;
            s.bytes = s.bytes.saturating_add(r.end - r.start);
        }
        s.entries += added;
        let written = match &mut s.out {
            Out::File(f) => f.write_all(text.as_bytes()),
            Out::Writer(w) => w.write_all(text.as_bytes()).and_then(|()| w.flush()),
        };
        if let Err(e) = written {
            log::error!("access trace: write failed, recording stops: {e}");
            s.stopped = true;
        }
    }

    /// Make what was recorded durable (`fdatasync` for a file, `flush` for a writer).
    ///
    /// # Errors
    ///
    /// The sync or flush failed.
    pub fn flush(&self) -> io::Result<()> {
        match &mut self.lock().out {
            Out::File(f) => f.sync_data(),
            Out::Writer(w) => w.flush(),
        }
    }

    /// How many range lines were written.
    pub fn entries(&self) -> usize {
        self.lock().entries
    }

    /// How many bytes the written ranges span (saturating).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
// Expected range lists with one element are what they look like.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AccessTrace, TraceError> {
        AccessTrace::parse(text.as_bytes())
    }

    #[test]
    fn headers_are_checked() {
        assert!(matches!(parse(""), Err(TraceError::NotATrace)));
        assert!(matches!(parse("blob 0 1\n"), Err(TraceError::NotATrace)));
        assert!(matches!(
            parse("erofs-ondemand-trace v2\nblob 0 1\n"),
            Err(TraceError::Version(v)) if v == "v2"
        ));
        let t = parse("erofs-ondemand-trace v1\r\n").unwrap();
        assert!(t.entries().is_empty());
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let t = parse(
            "erofs-ondemand-trace v1\n\
             # a comment\n\
             \n\
             a 0 4096\n\
             b\t8192\t100\r\n\
             only two\n\
             c 1 2 3\n\
             d -1 5\n\
             e 0 0\n\
             f 18446744073709551615 2\n\
             g 99999999999999999999 1\n\
             h 0x10 1\n\
             %zz 0 1\n\
             %41%00 5 5\n",
        )
        .unwrap();
        let got: Vec<_> = t
            .entries()
            .iter()
            .map(|e| (e.key.clone(), e.range.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (b"a".to_vec(), 0..4096),
                (b"b".to_vec(), 8192..8292),
                (b"A\0".to_vec(), 5..10)
            ]
        );
        assert_eq!(t.skipped(), 8);
        // A round trip keeps what was read.
        assert_eq!(parse(&t.to_text()).unwrap().entries(), t.entries());
        assert_eq!(t.keys(), [&b"a"[..], b"b", b"A\0"]);
        assert_eq!(t.bytes(), 4096 + 100 + 5);
    }

    #[test]
    fn sizes_are_capped() {
        let mut text = String::from("erofs-ondemand-trace v1\n");
        for i in 0..MAX_TRACE_ENTRIES + 10 {
            let _ = writeln!(text, "k {} 1", i * 2);
        }
        let _ = writeln!(text, "{} 0 1", "x".repeat(MAX_LINE));
        let t = parse(&text).unwrap();
        assert_eq!(t.entries().len(), MAX_TRACE_ENTRIES);
        assert_eq!(t.skipped(), 11);
    }

    #[test]
    fn records_each_range_once_in_first_access_order() {
        let out = std::sync::Arc::new(Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let r = Recorder::new(Shared(std::sync::Arc::clone(&out))).unwrap();
        r.record(b"blob", 8192, 4096);
        r.record(b"a b%", 0, 10);
        r.record(b"#c", 0, 1);
        r.record(b"blob", 0, 16384);
        r.record(b"blob", 4096, 100);
        r.record(b"blob", 0, 0);
        r.record(b"blob", u64::MAX, 2);
        r.flush().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "erofs-ondemand-trace v1\nblob 8192 4096\na%20b%25 0 10\n%23c 0 1\nblob 0 8192\nblob 12288 4096\n"
        );
        assert_eq!((r.entries(), r.bytes()), (5, 16395));
        let t = parse(&text).unwrap();
        // A key starting with `#` is not read as a comment (found by the fuzzer).
        assert_eq!(t.keys(), [&b"blob"[..], b"a b%", b"#c"]);
        assert_eq!(t.to_text(), text);
    }
}
