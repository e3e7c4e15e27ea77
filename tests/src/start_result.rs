//! The result lines of `benches/container_start.rs`, one per scenario and link, that a
//! script can read:
//!
//! ```text
//! start <scenario> <link> ready <ms> ms fetched <bytes> bytes requests <n>
//! ```
//!
//! [`StartResult`] prints ([`Display`](std::fmt::Display)) and parses ([`str::parse`]) them;
//! [`table`] lays results out for people and [`ratio`] divides two of them.
//!
//! ```
//! use tests::start_result::StartResult;
//! let r: StartResult = "start cachefiles 20ms-200mbit ready 1234 ms fetched 5000 bytes requests 7"
//!     .parse()
//!     .unwrap();
//! assert_eq!((r.ready_ms, r.fetched, r.requests), (1234, 5000, 7));
//! assert_eq!(r.to_string().parse::<StartResult>().unwrap(), r);
//! ```

use std::fmt;
use std::str::FromStr;

/// The scenarios of the benchmark, in table order.
pub const SCENARIOS: &[&str] = &[
    "full-pull",
    "cachefiles",
    "fanotify",
    "erofs-layers",
    "nydusd",
    "replay",
];

/// One container start: how long until "ready", and what the registry served for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartResult {
    /// `full-pull`, `cachefiles`, `fanotify`, `erofs-layers`, `nydusd` or `replay`.
    pub scenario: String,
    /// The emulated link, e.g. `20ms-200mbit`.
    pub link: String,
    /// Milliseconds from the start of the pull (or of the daemon) to the line "ready".
    pub ready_ms: u64,
    /// Body bytes the registry served.
    pub fetched: u64,
    /// Requests the registry answered.
    pub requests: u64,
}

impl fmt::Display for StartResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "start {} {} ready {} ms fetched {} bytes requests {}",
            self.scenario, self.link, self.ready_ms, self.fetched, self.requests
        )
    }
}

impl FromStr for StartResult {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("not a start line: {line:?}");
        let [
            "start",
            scenario,
            link,
            "ready",
            ms,
            "ms",
            "fetched",
            bytes,
            "bytes",
            "requests",
            n,
        ] = w.as_slice()
        else {
            return Err(bad());
        };
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        Ok(StartResult {
            scenario: scenario.to_string(),
            link: link.to_string(),
            ready_ms: num(ms)?,
            fetched: num(bytes)?,
            requests: num(n)?,
        })
    }
}

/// Every start line in `text` (other lines are skipped).
pub fn parse_all(text: &str) -> Vec<StartResult> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `a / b` of the results of `(scenario, link)` pairs, by `what` (`ready_ms`, `fetched`).
pub fn ratio(
    results: &[StartResult],
    a: (&str, &str),
    b: (&str, &str),
    what: fn(&StartResult) -> u64,
) -> Option<f64> {
    let find = |(s, l): (&str, &str)| {
        results
            .iter()
            .find(|r| r.scenario == s && r.link == l)
            .map(what)
    };
    let (x, y) = (find(a)?, find(b)?);
    (y > 0).then(|| x as f64 / y as f64)
}

/// A table: one row per scenario (in [`SCENARIOS`] order, then others), one column group
/// per link, with the share of `image_bytes` fetched.
pub fn table(results: &[StartResult], image_bytes: u64) -> String {
    let mut links: Vec<&str> = Vec::new();
    for r in results {
        if !links.contains(&r.link.as_str()) {
            links.push(&r.link);
        }
    }
    let mut scenarios: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| results.iter().any(|r| r.scenario == *s))
        .collect();
    for r in results {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut out = String::from("| scenario |");
    for l in &links {
        out.push_str(&format!(" {l}: ready | fetched | requests |"));
    }
    out.push_str("\n| --- |");
    for _ in &links {
        out.push_str(" ---: | ---: | ---: |");
    }
    out.push('\n');
    for s in scenarios {
        out.push_str(&format!("| {s} |"));
        for l in &links {
            match results.iter().find(|r| r.scenario == s && r.link == *l) {
                Some(r) => out.push_str(&format!(
                    " {:.2} s | {:.1} MB ({:.1}%) | {} |",
                    r.ready_ms as f64 / 1000.0,
                    r.fetched as f64 / 1e6,
                    r.fetched as f64 * 100.0 / image_bytes.max(1) as f64,
                    r.requests
                )),
                None => out.push_str(" - | - | - |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, l: &str, ms: u64, b: u64) -> StartResult {
        StartResult {
            scenario: s.into(),
            link: l.into(),
            ready_ms: ms,
            fetched: b,
            requests: 3,
        }
    }

    #[test]
    fn lines_round_trip_and_reject_others() {
        let x = r("full-pull", "2ms-1gbit", 9000, 12345);
        let line = x.to_string();
        assert_eq!(
            line,
            "start full-pull 2ms-1gbit ready 9000 ms fetched 12345 bytes requests 3"
        );
        assert_eq!(line.parse::<StartResult>().unwrap(), x);
        for bad in [
            "",
            "start a b ready x ms fetched 1 bytes requests 1",
            "start a b ready 1 s fetched 1 bytes requests 1",
            "start a b ready 1 ms fetched 1 bytes requests 1 extra",
            "VMTEST DATA start=1",
        ] {
            assert!(bad.parse::<StartResult>().is_err(), "{bad:?}");
        }
        let text = format!("noise\n  {line}\nstart nothing\n");
        assert_eq!(parse_all(&text), [x]);
    }

    #[test]
    fn ratios_and_table() {
        let res = [
            r("full-pull", "20ms-200mbit", 10_000, 1000),
            r("cachefiles", "20ms-200mbit", 2_500, 100),
            r("cachefiles", "2ms-1gbit", 1_000, 100),
        ];
        let t = |x: &StartResult| x.ready_ms;
        let q = ratio(
            &res,
            ("cachefiles", "20ms-200mbit"),
            ("full-pull", "20ms-200mbit"),
            t,
        );
        assert_eq!(q, Some(0.25));
        assert_eq!(
            ratio(&res, ("nydusd", "x"), ("full-pull", "20ms-200mbit"), t),
            None
        );
        let table = table(&res, 1000);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows[0].contains("20ms-200mbit: ready") && rows[0].contains("2ms-1gbit"));
        assert!(rows[2].starts_with("| full-pull | 10.00 s | 0.0 MB (100.0%) | 3 | - |"));
        assert!(rows[3].contains("2.50 s") && rows[3].contains("1.00 s"));
    }
}
