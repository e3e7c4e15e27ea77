//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1), as registries send them on a `401`.
//!
//! The syntax is parsed by the `http-auth` crate; this module picks what the Docker token
//! flow needs out of it.

/// The scheme a registry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=…,service=…,scope=…`: get a token from `realm`.
    Bearer {
        /// The token endpoint (an absolute URL).
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
        /// The `scope` parameter (space-separated scopes), if any.
        scope: Option<String>,
        /// The `error` parameter (`invalid_token`, `insufficient_scope`), if any.
        error: Option<String>,
    },
    /// `Basic realm=…`: send `Authorization: Basic` with the credentials.
    Basic,
}

/// Longest header value considered (a longer one is refused).
pub const MAX_HEADER: usize = 8 << 10;

/// Decode the challenges of one or more `WWW-Authenticate` header values, keeping the
/// ones this client can answer (Bearer with a realm, Basic), in the order given. Syntax
/// errors drop the value they are in (the other values still count); never panics.
pub fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values {
        if value.len() > MAX_HEADER {
            continue;
        }
        // http-auth takes any case and bare schemes, but not runs of whitespace (which some
        // servers send after the scheme): collapse them outside quoted strings first.
        let value = collapse_whitespace(value);
        let Ok(parsed) = http_auth::parse_challenges(&value) else {
            continue;
        };
        for c in parsed {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let Some(realm) = param("realm").filter(|r| !r.is_empty()) else {
                    continue;
                };
                out.push(Challenge::Bearer {
                    realm,
                    service: param("service"),
                    scope: param("scope"),
                    error: param("error"),
                });
            } else if c.scheme.eq_ignore_ascii_case("basic") {
                out.push(Challenge::Basic);
            }
        }
    }
    out
}

/// `value` with each run of spaces and tabs outside quoted strings made one space, and
/// leading and trailing ones removed.
fn collapse_whitespace(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut quoted, mut escaped, mut space) = (false, false, false);
    for c in value.trim_matches([' ', '\t']).chars() {
        if quoted {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            continue;
        }
        if c == ' ' || c == '\t' {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        if c == '"' {
            quoted = true;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn docker_hub_and_distribution() {
        let v = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#;
        assert_eq!(
            parse_challenges([v]),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/debian:pull".into()),
                error: None,
            }]
        );
        // Case, spacing, escapes, an error parameter, a second scheme.
        let v =
            r#"bearer  Realm="http://127.0.0.1:1/t\"x" , error="invalid_token", Basic realm="r""#;
        assert_eq!(
            parse_challenges([v]),
            vec![
                Challenge::Bearer {
                    realm: "http://127.0.0.1:1/t\"x".into(),
                    service: None,
                    scope: None,
                    error: Some("invalid_token".into()),
                },
                Challenge::Basic
            ]
        );
        assert_eq!(
            parse_challenges([r#"Basic realm="Registry Realm""#]),
            vec![Challenge::Basic]
        );
    }

    #[test]
    fn unusable_values_are_skipped() {
        assert!(parse_challenges(["Bearer service=\"s\""]).is_empty()); // no realm
        assert!(parse_challenges(["Negotiate abc=="]).is_empty());
        assert!(parse_challenges(["Bearer realm=\"unterminated"]).is_empty());
        assert!(parse_challenges([""]).is_empty());
        let long = format!("Basic realm=\"{}\"", "a".repeat(MAX_HEADER));
        assert!(parse_challenges([long.as_str()]).is_empty());
        // One good value among bad ones.
        assert_eq!(
            parse_challenges(["garbage ,,= \"", "Basic realm=x"]),
            vec![Challenge::Basic]
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in "\\PC{0,200}") {
            let _ = parse_challenges([s.as_str()]);
        }

        #[test]
        fn realms_round_trip(realm in "[ -~]{1,60}", service in "[a-z.]{0,20}") {
            let esc = realm.replace('\\', "\\\\").replace('"', "\\\"");
            let v = format!("Bearer realm=\"{esc}\",service=\"{service}\"");
            let got = parse_challenges([v.as_str()]);
            prop_assert_eq!(got, vec![Challenge::Bearer {
                realm, service: Some(service), scope: None, error: None,
            }]);
        }
    }
}
