//! A Docker token server (the `realm` of a registry run with `auth: token`): a std
//! `TcpListener` on 127.0.0.1 that answers `GET /token?service=S&scope=…` with an ES256 JWT
//! the registry verifies against its `rootcertbundle`.
//!
//! - Credentials: `Authorization: Basic` must name one of [`TokenOptions::users`] (else
//!   `401`); a request without it is anonymous.
//! - Scope: each requested `repository:NAME:ACTIONS` is honoured: a user gets the actions
//!   asked for (`pull`, `push`, …), an anonymous client gets `pull` only when
//!   [`TokenOptions::anonymous_pull`] is set, and nothing otherwise (the registry then answers
//!   `401` for the repository).
//! - Lifetime: the reply's `expires_in` and the JWT's `exp` follow
//!   [`TokenServer::set_expires_in`]; [`TokenServer::expire_next`] makes the next tokens
//!   already expired (past the registry's 60 s leeway), so the *registry itself* answers `401`
//!   and a client must fetch a new token: a real refresh test with no waiting.
//! - Every request is recorded ([`TokenServer::issued`], [`TokenServer::refused`]).
//!
//! JWT: header `{"alg":"ES256","typ":"JWT","x5c":[DER of the signing certificate]}`, claims
//! `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `access`, signature raw `r‖s` (64 bytes).

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;

use crate::http;
use crate::tls::SigningCert;

/// The registry's `auth.token.service` and the tokens' `aud`.
pub const SERVICE: &str = "erofs-rs-test-registry";
/// The registry's `auth.token.issuer` and the tokens' `iss`.
pub const ISSUER: &str = "erofs-rs-test-token-server";

/// Who may get which token.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// `(user, password)` pairs accepted in `Authorization: Basic`.
    pub users: Vec<(String, String)>,
    /// Anonymous clients get `pull` on every repository.
    pub anonymous_pull: bool,
    /// Token lifetime in seconds (`expires_in` and `exp - iat`).
    pub expires_in: u64,
}

impl Default for TokenOptions {
    /// One user (`erofs` / `lazy-pull`), no anonymous pull, 300 s tokens.
    fn default() -> Self {
        TokenOptions {
            users: vec![("erofs".into(), "lazy-pull".into())],
            anonymous_pull: false,
            expires_in: 300,
        }
    }
}

/// One `access` entry of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `repository` (or `registry` for `registry:catalog:*`).
    pub kind: String,
    /// The repository name.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

/// A token request the server answered with a token.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The Basic user, `None` when anonymous.
    pub user: Option<String>,
    /// The `scope` parameters as requested.
    pub scopes: Vec<String>,
    /// What the token grants.
    pub access: Vec<Access>,
    /// Its `expires_in`.
    pub expires_in: u64,
    /// Issued already expired ([`TokenServer::expire_next`]).
    pub expired: bool,
    /// The token itself.
    pub token: String,
}

#[derive(Debug, Default)]
struct State {
    issued: Vec<Issued>,
    refused: u64,
    expire_next: u64,
}

/// The running token server; stops on drop.
#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    cert: SigningCert,
    state: Arc<Mutex<State>>,
    expires_in: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    opts: TokenOptions,
    key: SigningKey,
    x5c: String,
    state: Arc<Mutex<State>>,
    expires_in: Arc<AtomicU64>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

impl TokenServer {
    /// Make a signing certificate in `dir` and start serving on a free 127.0.0.1 port.
    /// `None` only when `openssl` is missing and skipping is allowed.
    pub fn start(dir: &Path, opts: TokenOptions) -> Option<TokenServer> {
        let cert = SigningCert::new(dir, "token-signer")?;
        let pem = std::fs::read_to_string(&cert.key).unwrap();
        let key = SigningKey::from_pkcs8_pem(&pem).expect("openssl wrote a PKCS#8 P-256 key");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let expires_in = Arc::new(AtomicU64::new(opts.expires_in));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            opts,
            key,
            x5c: cert.x5c(),
            state: state.clone(),
            expires_in: expires_in.clone(),
        });
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("token-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || serve(conn, &shared));
                }
            })
            .unwrap();
        Some(TokenServer {
            addr,
            cert,
            state,
            expires_in,
            stop,
            thread: Some(thread),
        })
    }

    /// The registry's `auth.token.realm`: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The signing certificate (PEM): the registry's `auth.token.rootcertbundle`.
    pub fn cert_bundle(&self) -> &Path {
        &self.cert.cert
    }

    /// Change the lifetime of the tokens issued from now on (seconds).
    pub fn set_expires_in(&self, secs: u64) {
        self.expires_in.store(secs, Ordering::SeqCst);
    }

    /// The next `n` tokens are issued already expired (`exp` two minutes in the past, beyond
    /// the registry's 60 s leeway): the registry rejects them with `401`.
    pub fn expire_next(&self, n: u64) {
        self.state.lock().unwrap().expire_next = n;
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Requests refused (bad credentials or a malformed request).
    pub fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut r = BufReader::new(&conn);
    while let Ok(Some(req)) = http::read_request(&mut r) {
        let (status, extra, body) = answer(&req, shared);
        let mut headers: http::Headers = vec![
            ("Content-Type".into(), "application/json".into()),
            ("Content-Length".into(), body.len().to_string()),
        ];
        headers.extend(extra);
        let head = http::ResponseHead {
            status,
            reason: if status == 200 { "OK" } else { "Unauthorized" }.into(),
            headers,
        };
        use std::io::Write;
        let mut w = &conn;
        if w.write_all(&head.to_bytes())
            .and_then(|_| w.write_all(&body))
            .is_err()
        {
            return;
        }
    }
}

/// Check `Authorization: Basic`: `Ok(None)` anonymous, `Ok(Some(user))`, `Err(())` refused.
fn basic_user(req: &http::Request, users: &[(String, String)]) -> Result<Option<String>, ()> {
    let Some(v) = req.header("authorization") else {
        return Ok(None);
    };
    let b64 = v.strip_prefix("Basic ").ok_or(())?;
    let raw = STANDARD.decode(b64.trim()).map_err(|_| ())?;
    let raw = String::from_utf8(raw).map_err(|_| ())?;
    let (u, p) = raw.split_once(':').ok_or(())?;
    users
        .iter()
        .any(|(uu, pp)| uu == u && pp == p)
        .then(|| Some(u.to_string()))
        .ok_or(())
}

fn answer(req: &http::Request, shared: &Shared) -> (u16, http::Headers, Vec<u8>) {
    let refuse = |why: &str| {
        shared.state.lock().unwrap().refused += 1;
        (
            401,
            vec![(
                "WWW-Authenticate".into(),
                "Basic realm=\"erofs-rs test token server\"".into(),
            )],
            serde_json::json!({ "errors": [{ "code": "UNAUTHORIZED", "message": why }] })
                .to_string()
                .into_bytes(),
        )
    };
    if req.path() != "/token" {
        return refuse("unknown path");
    }
    let Ok(user) = basic_user(req, &shared.opts.users) else {
        return refuse("bad credentials");
    };
    let query = req.query();
    if query.iter().any(|(k, v)| k == "service" && v != SERVICE) {
        return refuse("unknown service");
    }
    let scopes: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let mut access = Vec::new();
    for scope in &scopes {
        // TYPE:NAME:ACTIONS, NAME may hold ':' only in theory; split at the first and last.
        let (Some((kind, rest)), Some(last)) = (scope.split_once(':'), scope.rfind(':')) else {
            continue;
        };
        if last <= kind.len() {
            continue;
        }
        let name = &rest[..last - kind.len() - 1];
        let wanted = scope[last + 1..].split(',');
        let actions: Vec<String> = wanted
            .filter(|a| user.is_some() || (shared.opts.anonymous_pull && *a == "pull"))
            .map(str::to_string)
            .collect();
        if !actions.is_empty() {
            access.push(Access {
                kind: kind.to_string(),
                name: name.to_string(),
                actions,
            });
        }
    }
    let expires_in = shared.expires_in.load(Ordering::SeqCst);
    let expired = {
        let mut st = shared.state.lock().unwrap();
        let e = st.expire_next > 0;
        if e {
            st.expire_next -= 1;
        }
        e
    };
    let iat = if expired { now() - 600 } else { now() };
    let exp = if expired {
        now() - 120
    } else {
        iat + expires_in
    };
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let jti = format!("{iat:x}-{}", SERIAL.fetch_add(1, Ordering::SeqCst));
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": SERVICE,
        "exp": exp,
        "nbf": iat - 1,
        "iat": iat,
        "jti": jti,
        "access": access.iter().map(|a| serde_json::json!({
            "type": a.kind, "name": a.name, "actions": a.actions,
        })).collect::<Vec<_>>(),
    });
    let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "x5c": [shared.x5c] });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig: Signature = shared.key.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    shared.state.lock().unwrap().issued.push(Issued {
        user,
        scopes,
        access,
        expires_in,
        expired,
        token: token.clone(),
    });
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
    });
    (200, Vec::new(), body.to_string().into_bytes())
}
