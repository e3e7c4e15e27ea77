//! The token endpoint's reply (Docker token authentication): `{"token": …,
//! "access_token": …, "expires_in": N, "issued_at": …}`.

use std::time::Duration;

use serde::Deserialize;

/// Largest token reply read (tokens of large clouds are a few KiB).
pub const MAX_TOKEN_REPLY: u64 = 1 << 20;
/// Longest token accepted.
pub(crate) const MAX_TOKEN: usize = 64 << 10;
/// The lifetime assumed when the reply gives none, and the least one honored (as the
/// distribution spec says).
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// A decoded token reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReply {
    /// The bearer token (from `token`, or `access_token` when `token` is absent).
    pub token: String,
    /// How long the token is valid from when it was received.
    pub lifetime: Duration,
}

#[derive(Deserialize)]
struct Raw {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

/// Decode a token reply; an error says what is wrong (never panics).
pub fn parse_token_reply(body: &[u8]) -> Result<TokenReply, String> {
    if body.len() as u64 > MAX_TOKEN_REPLY {
        return Err(format!("token reply of {} bytes", body.len()));
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("token reply: {e}"))?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or("token reply has neither `token` nor `access_token`")?;
    if token.len() > MAX_TOKEN {
        return Err(format!("token of {} bytes", token.len()));
    }
    // It goes into a header: visible ASCII only (no CR/LF smuggling).
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("token has characters a header cannot carry".into());
    }
    let secs = raw
        .expires_in
        .as_ref()
        .and_then(|v| {
            v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
        })
        .unwrap_or(0);
    let lifetime = Duration::from_secs(secs.min(u64::from(u32::MAX))).max(DEFAULT_LIFETIME);
    Ok(TokenReply { token, lifetime })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectors() {
        let r = parse_token_reply(
            br#"{"token":"abc","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            TokenReply {
                token: "abc".into(),
                lifetime: Duration::from_secs(300)
            }
        );
        let r = parse_token_reply(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(
            r,
            TokenReply {
                token: "xyz".into(),
                lifetime: DEFAULT_LIFETIME
            }
        );
        let r = parse_token_reply(br#"{"token":"","access_token":"xyz","expires_in":10}"#).unwrap();
        assert_eq!(r.token, "xyz");
        assert_eq!(r.lifetime, DEFAULT_LIFETIME);
        let r = parse_token_reply(br#"{"token":"t","expires_in":120.5}"#).unwrap();
        assert_eq!(r.lifetime, Duration::from_secs(120));
        for bad in [
            &br#"{}"#[..],
            br#"{"token":""}"#,
            br#"{"token":"a b"}"#,
            br#"{"token":"a\r\nX: y"}"#,
            br#"[1]"#,
            b"",
            br#"{"token":5}"#,
        ] {
            assert!(
                parse_token_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = format!(r#"{{"token":"{}"}}"#, "a".repeat(MAX_TOKEN + 1));
        assert!(parse_token_reply(big.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_token_reply(&b);
        }
    }
}
