//! Counters and latency histograms of a session, readable through the API
//! ([`Stats::snapshot`], [`Stats::read_latency`]) and as Prometheus text
//! ([`render_prometheus`]), plus [`write_atomically`] for a metrics file that a node exporter's
//! textfile collector (or a test) reads while the daemon rewrites it.
//!
//! Everything is lock-free atomics (`erofs_reader::Counter`, the one counter type of the
//! workspace), bumped on the request path: a counter costs one relaxed
//! `fetch_add`, a histogram observation three.
//!
//! What the byte counters mean:
//!
//! | counter | bytes |
//! | --- | --- |
//! | `requested_bytes` | asked for by READ upcalls (their `len`) |
//! | `fetched_bytes` | produced by the server for READs (requested part and readahead) |
//! | `ahead_bytes` | the part of `fetched_bytes` filled ahead of a sequential reader, after its READ was completed |
//! | `prefetched_bytes` | produced by the server for background prefetch |
//! | `bytes_written` | written into objects (both of the above, zero padding included) |
//! | `served_by_prefetch_bytes` | requested by READs and covered by a prefetch (a READ that waited for an in-flight prefetch, or found the range already written) |
//! | `prefetch_skipped_bytes` | considered for prefetch but already present (cache file or earlier fills) |

use erofs_reader::Counter;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds (plus `+Inf`).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with the fixed [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last one is `+Inf`.
    buckets: [Counter; LATENCY_BUCKETS.len() + 1],
    count: Counter,
    sum_ns: Counter,
}

/// A copy of a [`Histogram`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative counts: `buckets[i]` observations took at most `LATENCY_BUCKETS[i]`
    /// seconds; the last entry is all observations (`+Inf`).
    pub buckets: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of all observations.
    pub sum: Duration,
}

impl HistogramSnapshot {
    /// The upper bound of the bucket holding the `q`-quantile (0..=1), in seconds; `None`
    /// without observations, `f64::INFINITY` if it lies past the last bound.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let i = self.buckets.iter().position(|&c| c >= rank)?;
        Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY))
    }
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].incr();
        self.count.incr();
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.add(ns);
    }

    /// The current values (cumulative buckets).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0u64;
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                acc = acc.saturating_add(b.get());
                acc
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.count.get(),
            sum: Duration::from_nanos(self.sum_ns.get()),
        }
    }
}

/// Counters and histograms of one session, shared by all worker and prefetch threads.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) opens: Counter,
    pub(crate) open_errors: Counter,
    pub(crate) reads: Counter,
    pub(crate) read_errors: Counter,
    pub(crate) closes: Counter,
    pub(crate) writes: Counter,
    pub(crate) bytes_written: Counter,
    pub(crate) bad_messages: Counter,
    pub(crate) requested_bytes: Counter,
    pub(crate) fetched_bytes: Counter,
    pub(crate) prefetched_bytes: Counter,
    pub(crate) served_by_prefetch_bytes: Counter,
    pub(crate) prefetch_skipped_bytes: Counter,
    pub(crate) prefetch_errors: Counter,
    pub(crate) ahead_bytes: Counter,
    pub(crate) open_latency: Histogram,
    pub(crate) read_latency: Histogram,
    pub(crate) claim_wait: Histogram,
    pub(crate) fetch_latency: Histogram,
}

/// A copy of the [`Stats`] counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// OPEN requests handled.
    pub opens: u64,
    /// OPENs refused (by the server, or because the `copen` write failed).
    pub open_errors: u64,
    /// READ requests handled (upcalls).
    pub reads: u64,
    /// READs whose requested range could not be written (the reader gets an error).
    pub read_errors: u64,
    /// CLOSE requests handled.
    pub closes: u64,
    /// `pwrite` calls into objects.
    pub writes: u64,
    /// Bytes written into objects, readahead and prefetch included.
    pub bytes_written: u64,
    /// Messages that did not decode.
    pub bad_messages: u64,
    /// Bytes asked for by READs.
    pub requested_bytes: u64,
    /// Bytes the server produced for READs (requested part and readahead).
    pub fetched_bytes: u64,
    /// Bytes the server produced for background prefetch.
    pub prefetched_bytes: u64,
    /// Requested bytes that a prefetch had written or was writing.
    pub served_by_prefetch_bytes: u64,
    /// Bytes the prefetcher found already present.
    pub prefetch_skipped_bytes: u64,
    /// Prefetch fills that failed (the range is left for on-demand READs).
    pub prefetch_errors: u64,
    /// The part of `fetched_bytes` filled ahead of a sequential reader, after its READ was
    /// completed ([`crate::Session::with_sequential_ahead`]).
    pub ahead_bytes: u64,
}

impl StatsSnapshot {
    /// All errors: refused OPENs, failed READs, undecodable messages, failed prefetches.
    pub fn errors(&self) -> u64 {
        self.open_errors
            .saturating_add(self.read_errors)
            .saturating_add(self.bad_messages)
            .saturating_add(self.prefetch_errors)
    }
}

impl fmt::Display for StatsSnapshot {
    /// `opens=N reads=N closes=N bytes_written=N open_errors=N read_errors=N writes=N
    /// bad_messages=N requested_bytes=N fetched_bytes=N prefetched_bytes=N
    /// served_by_prefetch_bytes=N prefetch_errors=N ahead_bytes=N` (the first eight fields come first and
    /// in this order, for scripts written against earlier versions).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "opens={} reads={} closes={} bytes_written={} open_errors={} read_errors={} writes={} bad_messages={} \
             requested_bytes={} fetched_bytes={} prefetched_bytes={} served_by_prefetch_bytes={} prefetch_errors={} ahead_bytes={}",
            self.opens,
            self.reads,
            self.closes,
            self.bytes_written,
            self.open_errors,
            self.read_errors,
            self.writes,
            self.bad_messages,
            self.requested_bytes,
            self.fetched_bytes,
            self.prefetched_bytes,
            self.served_by_prefetch_bytes,
            self.prefetch_errors,
            self.ahead_bytes,
        )
    }
}

impl Stats {
    /// The current counter values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = Counter::get;
        StatsSnapshot {
            opens: get(&self.opens),
            open_errors: get(&self.open_errors),
            reads: get(&self.reads),
            read_errors: get(&self.read_errors),
            closes: get(&self.closes),
            writes: get(&self.writes),
            bytes_written: get(&self.bytes_written),
            bad_messages: get(&self.bad_messages),
            requested_bytes: get(&self.requested_bytes),
            fetched_bytes: get(&self.fetched_bytes),
            prefetched_bytes: get(&self.prefetched_bytes),
            served_by_prefetch_bytes: get(&self.served_by_prefetch_bytes),
            prefetch_skipped_bytes: get(&self.prefetch_skipped_bytes),
            prefetch_errors: get(&self.prefetch_errors),
            ahead_bytes: get(&self.ahead_bytes),
        }
    }

    /// Time from reading an OPEN to its `copen` being written.
    pub fn open_latency(&self) -> HistogramSnapshot {
        self.open_latency.snapshot()
    }

    /// Time from reading a READ to its completion (fill, writes and the ioctl).
    pub fn read_latency(&self) -> HistogramSnapshot {
        self.read_latency.snapshot()
    }

    /// Time a READ waited for fills in flight over its requested part (another READ's
    /// window, a fill ahead or a prefetch), observed only for READs that waited.
    pub fn claim_wait(&self) -> HistogramSnapshot {
        self.claim_wait.snapshot()
    }

    /// Time of one server fill (one chunk of at most the fill buffer), for READs and prefetch.
    pub fn fetch_latency(&self) -> HistogramSnapshot {
        self.fetch_latency.snapshot()
    }
}

/// Gauges that are not counters of the session: filled in by whoever renders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Objects currently open.
    pub objects: u64,
    /// Bytes queued for prefetch and not yet fetched or skipped.
    pub prefetch_pending_bytes: u64,
}

/// Append the per-object gauges: `erofs_ondemand_object_size_bytes{object="KEY"}` and
/// `erofs_ondemand_object_present_bytes{object="KEY"}` for each `(key, size, present)`.
fn render_objects<'a>(out: &mut String, objects: impl Iterator<Item = (&'a str, u64, u64)>) {
    let objects: Vec<_> = objects.collect();
    for (name, help, pick) in [
        (
            "erofs_ondemand_object_size_bytes",
            "Size of each open object.",
            (|o: &(&str, u64, u64)| o.1) as fn(&(&str, u64, u64)) -> u64,
        ),
        (
            "erofs_ondemand_object_present_bytes",
            "Bytes of each open object known present (fetched, or found in its file).",
            |o: &(&str, u64, u64)| o.2,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for o in &objects {
            // Keys are printable already (`escape_ascii`); quotes and backslashes are escaped
            // there as Prometheus label values need.
            let _ = writeln!(out, "{name}{{object=\"{}\"}} {}", o.0, pick(o));
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum.as_secs_f64());
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// The Prometheus text exposition (format 0.0.4) of `stats` and `gauges`. Every metric is
/// prefixed `erofs_ondemand_`.
pub fn render_prometheus(stats: &Stats, gauges: Gauges) -> String {
    render_prometheus_with_objects(stats, gauges, std::iter::empty())
}

/// [`render_prometheus`] with the per-object gauges of `objects` (`(key, size, present)`:
/// `erofs_ondemand_object_size_bytes{object="KEY"}` and
/// `erofs_ondemand_object_present_bytes{object="KEY"}`) after the other gauges: the last line stays the fetch latency
/// histogram's count (readers of a rewritten file use it to tell that they read all of it).
pub fn render_prometheus_with_objects<'a>(
    stats: &Stats,
    gauges: Gauges,
    objects: impl Iterator<Item = (&'a str, u64, u64)>,
) -> String {
    let s = stats.snapshot();
    let mut out = String::with_capacity(4096);
    let c = &mut out;
    counter(
        c,
        "erofs_ondemand_open_requests_total",
        "OPEN requests from the kernel.",
        s.opens,
    );
    counter(
        c,
        "erofs_ondemand_read_requests_total",
        "READ requests (upcalls) from the kernel.",
        s.reads,
    );
    counter(
        c,
        "erofs_ondemand_close_requests_total",
        "CLOSE requests from the kernel.",
        s.closes,
    );
    counter(
        c,
        "erofs_ondemand_requested_bytes_total",
        "Bytes asked for by READ requests.",
        s.requested_bytes,
    );
    counter(
        c,
        "erofs_ondemand_fetched_bytes_total",
        "Bytes fetched from the server for READ requests (readahead included).",
        s.fetched_bytes,
    );
    counter(
        c,
        "erofs_ondemand_ahead_bytes_total",
        "Bytes fetched ahead of sequential readers after their READ was completed (part of fetched bytes).",
        s.ahead_bytes,
    );
    counter(
        c,
        "erofs_ondemand_prefetched_bytes_total",
        "Bytes fetched from the server by background prefetch.",
        s.prefetched_bytes,
    );
    counter(
        c,
        "erofs_ondemand_written_bytes_total",
        "Bytes written into cache objects.",
        s.bytes_written,
    );
    counter(
        c,
        "erofs_ondemand_writes_total",
        "pwrite calls into cache objects.",
        s.writes,
    );
    counter(
        c,
        "erofs_ondemand_served_by_prefetch_bytes_total",
        "Bytes asked for by READ requests that a prefetch had written or was writing.",
        s.served_by_prefetch_bytes,
    );
    counter(
        c,
        "erofs_ondemand_prefetch_skipped_bytes_total",
        "Bytes the prefetcher found already present.",
        s.prefetch_skipped_bytes,
    );
    counter(
        c,
        "erofs_ondemand_errors_total",
        "All errors: refused OPENs, failed READs, undecodable messages, failed prefetches.",
        s.errors(),
    );
    counter(
        c,
        "erofs_ondemand_open_errors_total",
        "OPEN requests refused.",
        s.open_errors,
    );
    counter(
        c,
        "erofs_ondemand_read_errors_total",
        "READ requests whose requested range could not be written.",
        s.read_errors,
    );
    counter(
        c,
        "erofs_ondemand_bad_messages_total",
        "Messages from the kernel that did not decode.",
        s.bad_messages,
    );
    counter(
        c,
        "erofs_ondemand_prefetch_errors_total",
        "Prefetch fills that failed.",
        s.prefetch_errors,
    );
    gauge(
        c,
        "erofs_ondemand_objects",
        "Objects currently open.",
        gauges.objects,
    );
    gauge(
        c,
        "erofs_ondemand_prefetch_pending_bytes",
        "Bytes queued for prefetch and not yet fetched or skipped.",
        gauges.prefetch_pending_bytes,
    );
    render_objects(c, objects);
    histogram(
        c,
        "erofs_ondemand_open_duration_seconds",
        "Time from reading an OPEN to writing its copen.",
        &stats.open_latency(),
    );
    histogram(
        c,
        "erofs_ondemand_read_duration_seconds",
        "Time from reading a READ to completing it.",
        &stats.read_latency(),
    );
    histogram(
        c,
        "erofs_ondemand_read_wait_duration_seconds",
        "Time a READ waited for fills in flight over its requested part (READs that waited).",
        &stats.claim_wait(),
    );
    histogram(
        c,
        "erofs_ondemand_fetch_duration_seconds",
        "Time of one server fill (one chunk).",
        &stats.fetch_latency(),
    );
    out
}

/// Replace the file at `path` with `contents` so that a reader sees the old or the new file,
/// never a partial one: write `PATH.tmp` in the same directory, then rename it over `path`.
///
/// # Errors
///
/// Creating, writing or renaming the temporary file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.buckets[0], 2, "<= 100 µs");
        assert_eq!(s.buckets[4], 2, "<= 2.5 ms");
        assert_eq!(s.buckets[5], 3, "<= 5 ms");
        assert_eq!(s.buckets[LATENCY_BUCKETS.len() - 1], 3, "<= 10 s");
        assert_eq!(*s.buckets.last().unwrap(), 4);
        assert_eq!(s.sum, Duration::from_micros(3150) + Duration::from_secs(60));
        assert_eq!(s.quantile_bound(0.5), Some(0.0001));
        assert_eq!(s.quantile_bound(0.75), Some(0.005));
        assert_eq!(s.quantile_bound(1.0), Some(f64::INFINITY));
        assert_eq!(HistogramSnapshot::default().quantile_bound(0.5), None);
    }

    /// Parse `name value` lines of a Prometheus text (no labels) into a map.
    pub(crate) fn parse(text: &str) -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("name value");
                (k.to_string(), v.parse().expect("a number"))
            })
            .collect()
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let stats = Stats::default();
        stats.opens.add(3);
        stats.open_errors.add(1);
        stats.reads.add(10);
        stats.read_errors.add(2);
        stats.fetched_bytes.add(4096);
        stats.prefetched_bytes.add(8192);
        stats.read_latency.observe(Duration::from_millis(2));
        stats.claim_wait.observe(Duration::from_millis(3));
        let text = render_prometheus(
            &stats,
            Gauges {
                objects: 2,
                prefetch_pending_bytes: 7,
            },
        );
        let m = parse(&text);
        assert_eq!(m["erofs_ondemand_open_requests_total"], 3.0);
        assert_eq!(m["erofs_ondemand_read_requests_total"], 10.0);
        assert_eq!(m["erofs_ondemand_close_requests_total"], 0.0);
        assert_eq!(m["erofs_ondemand_fetched_bytes_total"], 4096.0);
        assert_eq!(m["erofs_ondemand_prefetched_bytes_total"], 8192.0);
        assert_eq!(m["erofs_ondemand_errors_total"], 3.0);
        assert_eq!(m["erofs_ondemand_objects"], 2.0);
        assert_eq!(m["erofs_ondemand_prefetch_pending_bytes"], 7.0);
        assert_eq!(
            m["erofs_ondemand_read_duration_seconds_bucket{le=\"0.001\"}"],
            0.0
        );
        assert_eq!(
            m["erofs_ondemand_read_duration_seconds_bucket{le=\"0.0025\"}"],
            1.0
        );
        assert_eq!(
            m["erofs_ondemand_read_duration_seconds_bucket{le=\"+Inf\"}"],
            1.0
        );
        assert_eq!(m["erofs_ondemand_read_duration_seconds_count"], 1.0);
        assert_eq!(m["erofs_ondemand_read_wait_duration_seconds_count"], 1.0);
        assert!((m["erofs_ondemand_read_wait_duration_seconds_sum"] - 0.003).abs() < 1e-9);
        assert!((m["erofs_ondemand_read_duration_seconds_sum"] - 0.002).abs() < 1e-9);
        // Every sample has a TYPE line for its family, declared once.
        let mut types = std::collections::BTreeSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(
                types.insert(l.split(' ').nth(2).unwrap().to_string()),
                "{l}"
            );
        }
        for name in m.keys() {
            let family = name
                .split('{')
                .next()
                .unwrap()
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(types.contains(family), "{name} has no TYPE");
        }
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.prom");
        write_atomically(&p, b"a 1\n").unwrap();
        write_atomically(&p, b"a 2\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["metrics.prom"], "no temporary file left");
    }

    #[test]
    fn summary_line_keeps_its_old_prefix() {
        let s = StatsSnapshot {
            opens: 1,
            reads: 2,
            ..Default::default()
        };
        assert!(
            s.to_string()
                .starts_with("opens=1 reads=2 closes=0 bytes_written=0 open_errors=0 read_errors=0 writes=0 bad_messages=0 ")
        );
    }
}
