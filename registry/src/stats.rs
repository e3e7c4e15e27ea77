//! Counters of a client's traffic, for logs and metrics exporters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a [`Client`](crate::Client)'s counters (monotonic since it was made;
/// shared by its clones and blob handles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// HTTP requests sent (token requests, redirected hops, and the one HTTPS probe of a
    /// registry that may speak plain HTTP included).
    pub requests: u64,
    /// Response body bytes received (manifests, tokens, blob data, bytes skipped).
    pub bytes: u64,
    /// Requests sent again after a connection error, a cut body, a 429 or a 5xx.
    pub retries: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// Tokens fetched from a token endpoint.
    pub tokens: u64,
    /// Range requests answered with the whole blob (`200`), read by skipping.
    pub ranges_ignored: u64,
    /// Requests that a mirror failed and the next endpoint was tried for.
    pub mirror_fallbacks: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) redirects: AtomicU64,
    pub(crate) tokens: AtomicU64,
    pub(crate) ranges_ignored: AtomicU64,
    pub(crate) mirror_fallbacks: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: g(&self.requests),
            bytes: g(&self.bytes),
            retries: g(&self.retries),
            redirects: g(&self.redirects),
            tokens: g(&self.tokens),
            ranges_ignored: g(&self.ranges_ignored),
            mirror_fallbacks: g(&self.mirror_fallbacks),
        }
    }
}
