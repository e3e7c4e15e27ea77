//! `Content-Range` (RFC 9110 §14.4) as a `206` or `416` reply carries it.

/// A decoded `Content-Range: bytes …` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes FIRST-LAST/COMPLETE` (`COMPLETE` is `None` for `*`): the inclusive range sent.
    Bytes {
        /// First byte's offset.
        first: u64,
        /// Last byte's offset (inclusive; `>= first`).
        last: u64,
        /// The whole representation's length, when known.
        complete: Option<u64>,
    },
    /// `bytes */COMPLETE`: unsatisfied (on a `416`), with the length.
    Unsatisfied {
        /// The whole representation's length.
        complete: u64,
    },
}

impl ContentRange {
    /// Decode a header value; `None` for anything malformed (never panics).
    pub fn parse(value: &str) -> Option<ContentRange> {
        let rest = value.trim().strip_prefix("bytes")?;
        let rest = rest.strip_prefix(' ')?.trim_start();
        let (range, complete) = rest.split_once('/')?;
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        if range.trim() == "*" {
            return Some(ContentRange::Unsatisfied {
                complete: num(complete)?,
            });
        }
        let complete = if complete.trim() == "*" {
            None
        } else {
            Some(num(complete)?)
        };
        let (first, last) = range.split_once('-')?;
        let (first, last) = (num(first)?, num(last)?);
        if last < first || complete.is_some_and(|c| last >= c) {
            return None;
        }
        Some(ContentRange::Bytes {
            first,
            last,
            complete,
        })
    }
}

/// Decode a `Content-Length` value: digits only (no sign, no list); `None` otherwise.
pub fn parse_content_length(value: &str) -> Option<u64> {
    let s = value.trim();
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectors() {
        assert_eq!(
            ContentRange::parse("bytes 0-499/1234"),
            Some(ContentRange::Bytes {
                first: 0,
                last: 499,
                complete: Some(1234)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 7-7/*"),
            Some(ContentRange::Bytes {
                first: 7,
                last: 7,
                complete: None
            })
        );
        assert_eq!(
            ContentRange::parse("bytes */1234"),
            Some(ContentRange::Unsatisfied { complete: 1234 })
        );
        for bad in [
            "",
            "bytes",
            "bytes 0-1",
            "items 0-1/2",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes -1-2/3",
            "bytes 0-99999999999999999999999/9",
            "bytes a-b/c",
            "bytes=0-1/2",
            "bytes */*",
            "bytes 0-+1/5",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse_content_length(" 42 "), Some(42));
        assert_eq!(parse_content_length("+42"), None);
        assert_eq!(parse_content_length("4,4"), None);
        assert_eq!(parse_content_length("18446744073709551616"), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in "\\PC{0,60}") {
            let _ = ContentRange::parse(&s);
            let _ = parse_content_length(&s);
        }

        #[test]
        fn round_trip(first in 0u64..u64::MAX / 2, len in 0u64..1 << 40, extra in 1u64..1000) {
            let last = first + len;
            let s = format!("bytes {first}-{last}/{}", last + extra);
            prop_assert_eq!(
                ContentRange::parse(&s),
                Some(ContentRange::Bytes { first, last, complete: Some(last + extra) })
            );
        }
    }
}
