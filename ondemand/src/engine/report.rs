//! What runs beside a transport's workers: the prefetch threads, the fill pool threads, and a reporter that rewrites
//! the metrics file and logs prefetch progress.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Engine, Sink};
use crate::metrics::write_atomically;
use crate::server::OnDemandServer;
use crate::shutdown::{POLL_INTERVAL, Shutdown, spawn_helper};

impl<S: OnDemandServer, K: Sink> Engine<S, K> {
    /// Start the prefetch threads (if prefetch is configured), the fill pool threads and the reporter (if there is a
    /// metrics file or prefetch) on `scope`; they stop with `shutdown`.
    pub(crate) fn spawn_background<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        shutdown: &'scope Shutdown,
        metrics_file: Option<&'scope (PathBuf, Duration)>,
    ) {
        let prefetch_threads = self.prefetch.as_ref().map_or(0, |p| p.config().threads());
        for i in 0..prefetch_threads {
            spawn_helper(
                scope,
                format!("prefetch-{i}"),
                &format!("prefetch thread {i}"),
                move || self.prefetch_worker(shutdown),
            );
        }
        // The pool runs fills ahead only: none without them.
        let fill_threads = if self.sequential_ahead() > 0 {
            self.fill_threads()
        } else {
            0
        };
        for i in 0..fill_threads {
            spawn_helper(
                scope,
                format!("fill-{i}"),
                &format!("fill thread {i}"),
                move || self.fill_worker(shutdown),
            );
        }
        if metrics_file.is_some() || prefetch_threads > 0 {
            spawn_helper(scope, "reporter".into(), "the metrics thread", move || {
                self.reporter(shutdown, metrics_file)
            });
        }
    }

    /// Rewrite the metrics file at `path`; `failing` remembers a failure so it is logged
    /// once, not every interval (and its end is logged too).
    pub(crate) fn write_metrics(&self, path: &Path, failing: &mut bool) {
        let text = self.render_prometheus();
        match write_atomically(path, text.as_bytes()) {
            Err(e) if !*failing => {
                log::warn!("metrics file {}: {e}", path.display());
                *failing = true;
            }
            Err(_) => {}
            Ok(()) if *failing => {
                log::info!("metrics file {} written again", path.display());
                *failing = false;
            }
            Ok(()) => {}
        }
    }

    /// The metrics file and prefetch progress: every interval (at most 1 s) until shutdown.
    fn reporter(&self, shutdown: &Shutdown, metrics_file: Option<&(PathBuf, Duration)>) {
        let interval = metrics_file.map_or(Duration::from_secs(1), |(_, i)| {
            (*i).min(Duration::from_secs(1))
        });
        let mut last_write = Instant::now();
        let mut last_progress = Instant::now();
        let mut last_seen = None;
        let mut failing = false;
        if let Some((path, _)) = metrics_file {
            self.write_metrics(path, &mut failing);
        }
        while !shutdown.is_triggered() {
            std::thread::sleep(interval.min(POLL_INTERVAL));
            if let Some((path, _)) = metrics_file
                && last_write.elapsed() >= interval
            {
                self.write_metrics(path, &mut failing);
                last_write = Instant::now();
            }
            if self.prefetch.is_some() && last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                let s = self.stats();
                let pending = self.prefetch_pending_bytes();
                let now = (s.prefetched_bytes, s.prefetch_skipped_bytes, pending);
                if last_seen != Some(now) {
                    last_seen = Some(now);
                    let mib = |b: u64| b as f64 / (1 << 20) as f64;
                    log::info!(
                        "prefetch: fetched {:.1} MiB, already present {:.1} MiB, pending {:.1} MiB{}",
                        mib(s.prefetched_bytes),
                        mib(s.prefetch_skipped_bytes),
                        mib(pending),
                        if self.prefetch_idle() { " (idle)" } else { "" }
                    );
                }
            }
        }
    }
}
