//! When to try a request again: `Retry-After` (RFC 9110 §10.2.3) and exponential backoff
//! with jitter.

use std::time::{Duration, SystemTime};

/// Decode a `Retry-After` value (delay seconds or an HTTP date) into a delay from `now`;
/// `None` for anything malformed. A date in the past is a zero delay.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let s = value.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // Huge numbers saturate; the caller caps the wait anyway.
        return Some(Duration::from_secs(s.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included); at least 1.
    pub attempts: u32,
    /// The first backoff; doubled on each further retry.
    pub base: Duration,
    /// The longest backoff (and the longest `Retry-After` honored; a longer one fails the
    /// request at once).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry): `base * 2^(retry-1)`
    /// capped at `max`, with "equal jitter" (a random half of it added to the other half).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1 << exp).min(self.max);
        let half = full / 2;
        let jitter_ns = fastrand::u64(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX));
        half + Duration::from_nanos(jitter_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for retry in 1..40 {
            let d = p.backoff(retry);
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (retry - 1).min(20))
                .min(p.max);
            assert!(d >= full / 2 && d <= full, "{retry}: {d:?}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in "\\PC{0,70}") {
            let _ = parse_retry_after(&s, SystemTime::now());
        }
    }
}
