//! A progress line on stderr for long runs of `extract` and `fsck`: files and bytes done and
//! the rate, redrawn at most five times a second, from the second second on. Nothing is drawn
//! when stderr is not a terminal or with `--quiet`; the line is erased at the end.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nothing is drawn before the run has taken this long (short runs stay silent).
const FIRST_DRAW: Duration = Duration::from_secs(1);
/// Time between redraws.
const REDRAW: Duration = Duration::from_millis(200);

pub(crate) struct Progress {
    enabled: bool,
    start: Instant,
    files: AtomicU64,
    bytes: AtomicU64,
    /// When the line was last drawn; also serialises drawing between threads.
    last: Mutex<Option<Instant>>,
}

impl Progress {
    /// A progress line on stderr unless `quiet` or stderr is not a terminal.
    pub(crate) fn new(quiet: bool) -> Self {
        Self::with_enabled(!quiet && std::io::stderr().is_terminal())
    }

    fn with_enabled(enabled: bool) -> Self {
        Self {
            enabled,
            start: Instant::now(),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// Count `bytes` more bytes (of the file being written or read).
    pub(crate) fn bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tick();
    }

    /// Count one more file (or other entry) done.
    pub(crate) fn file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.tick();
    }

    fn tick(&self) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.start) < FIRST_DRAW {
            return;
        }
        // Another thread drawing right now: skip this tick.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.is_some_and(|t| now.duration_since(t) < REDRAW) {
            return;
        }
        *last = Some(now);
        let line = self.line(now.duration_since(self.start));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    fn line(&self, elapsed: Duration) -> String {
        let files = self.files.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-3);
        format!(
            "{files} files, {} in {:.1}s ({}/s)",
            human_bytes(bytes as f64),
            elapsed.as_secs_f64(),
            human_bytes(rate)
        )
    }

    /// Erase the line (if one was drawn) before the final report.
    pub(crate) fn finish(&self) {
        let drawn = self.last.lock().map(|l| l.is_some()).unwrap_or(true);
        if self.enabled && drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_bytes(0.0), "0 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }

    #[test]
    fn line_counts_files_bytes_and_rate() {
        let p = Progress::with_enabled(false);
        p.file();
        p.file();
        p.bytes(10 << 20);
        assert_eq!(
            p.line(Duration::from_secs(2)),
            "2 files, 10.0 MiB in 2.0s (5.0 MiB/s)"
        );
    }
}
