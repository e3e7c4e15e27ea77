//! One HTTP exchange with a registry, done right: the endpoint (mirror or registry, HTTP
//! or HTTPS, proxied or not), authentication (Basic, Docker token flow, refresh on expiry
//! and on `401`), redirects followed by hand without leaking `Authorization`, and retries
//! with backoff on connection errors, `429` and `5xx`.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use ureq::http::{Response, StatusCode};
use ureq::{Agent, Body};

use crate::challenge::{Challenge, parse_challenges};
use crate::config::Config;
use crate::content_range::parse_content_length;
use crate::credentials::{self, Credentials};
use crate::error::{Error, Result};
use crate::reference::{DOCKER_HUB, DOCKER_HUB_API, Repository};
use crate::retry::parse_retry_after;
use crate::stats::Counters;
use crate::token::{MAX_TOKEN_REPLY, parse_token_reply};

/// Most redirect hops followed for one request.
const MAX_REDIRECTS: u32 = 10;
/// Longest URL accepted from a `Location` header or a `realm`.
const MAX_URL: usize = 8 << 10;

/// Where requests for a repository go: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `http://host:port` or `https://host:port` (plus a path prefix for mirrors).
    pub(crate) base: String,
    /// `host[:port]`: the key for credentials and tokens.
    pub(crate) host: String,
    /// Appended to every URL (`?ns=<registry>` for mirrors).
    pub(crate) query: String,
    /// Whether this is a mirror (its failures fall through to the next endpoint).
    pub(crate) mirror: bool,
    /// `base` is plain HTTP to a host declared insecure whose scheme is not known yet: the
    /// first request goes out in plain HTTP without a `/v2/` probe before it, and only if
    /// it draws no registry answer (a connection error, a `400` as a TLS port gives) is the
    /// scheme probed, and the request sent again over HTTPS if the host speaks it
    /// ([`Transport::send`]).
    pub(crate) tentative: bool,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}{}", self.base, self.query)
    }
}

/// A request to send.
pub(crate) struct Request<'a> {
    pub(crate) head: bool,
    pub(crate) url: String,
    /// The endpoint whose host gets the `Authorization` header.
    pub(crate) endpoint: &'a Endpoint,
    /// The token scope (`repository:NAME:pull`).
    pub(crate) scope: &'a str,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// A reply, with the URL it finally came from (after redirects).
pub(crate) struct Reply {
    pub(crate) response: Response<Body>,
    pub(crate) url: String,
    pub(crate) redirected: bool,
}

impl Reply {
    pub(crate) fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }

    pub(crate) fn content_length(&self) -> Result<Option<u64>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => parse_content_length(v)
                .map(Some)
                .ok_or_else(|| Error::BadReply {
                    url: self.url.clone(),
                    what: format!("Content-Length {v:?}"),
                }),
        }
    }

    /// The body as a reader that counts bytes into `counters`.
    pub(crate) fn into_reader(self, counters: &Counters) -> CountingReader<'_> {
        CountingReader {
            inner: Box::new(
                self.response
                    .into_body()
                    .into_with_config()
                    .limit(u64::MAX)
                    .reader(),
            ),
            counters,
        }
    }

    /// The whole body, refused past `limit` bytes.
    pub(crate) fn read_limited(
        self,
        counters: &Counters,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        let url = self.url.clone();
        if let Some(n) = self.content_length()?
            && n > limit
        {
            return Err(Error::TooLarge {
                url,
                what,
                size: n,
                limit,
            });
        }
        let announced = self.content_length()?;
        let mut out = Vec::new();
        let mut r = self.into_reader(counters).take(limit + 1);
        if let Err(e) = r.read_to_end(&mut out) {
            // The body broke off: short (and retried by the callers that retry).
            log::debug!("{url}: body broke after {} bytes: {e}", out.len());
            return Err(Error::ShortBody {
                url,
                got: out.len() as u64,
                want: announced.unwrap_or(out.len() as u64 + 1),
            });
        }
        if out.len() as u64 > limit {
            return Err(Error::TooLarge {
                url,
                what,
                size: out.len() as u64,
                limit,
            });
        }
        if let Some(n) = announced
            && n != out.len() as u64
        {
            return Err(Error::ShortBody {
                url,
                got: out.len() as u64,
                want: n,
            });
        }
        Ok(out)
    }

    /// A short excerpt of an error reply's body, for messages.
    pub(crate) fn excerpt(self, counters: &Counters) -> Option<String> {
        let mut buf = Vec::new();
        let _ = self.into_reader(counters).take(512).read_to_end(&mut buf);
        let s = String::from_utf8_lossy(&buf).trim().to_owned();
        (!s.is_empty()).then_some(s)
    }
}

/// A body reader that counts what it reads.
pub(crate) struct CountingReader<'c> {
    inner: Box<dyn Read + 'static>,
    counters: &'c Counters,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        Counters::add(&self.counters.bytes, n as u64);
        Ok(n)
    }
}

/// One answer of [`Transport::probe_scheme`]'s two requests.
enum Probe {
    /// `GET https://HOST/v2/`: any reply, or why there was none.
    Tls(std::result::Result<(), ureq::Error>),
    /// `GET http://HOST/v2/`: the status, the `WWW-Authenticate` values and the body's
    /// length, if a reply came.
    Plain(Option<(u16, Vec<String>, u64)>),
}

/// What a host wants to be authenticated with, learnt from its challenges.
#[derive(Debug, Clone)]
enum Scheme {
    /// Nothing asked yet (send nothing until a `401`).
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
}

#[derive(Debug)]
struct HostAuth {
    scheme: Scheme,
    tokens: HashMap<String, Token>,
}

/// The HTTP side of a client: agents, auth state, counters.
pub(crate) struct Transport {
    pub(crate) config: Config,
    direct: Agent,
    proxied: Option<Agent>,
    pub(crate) counters: Counters,
    auth: Mutex<HashMap<String, Arc<Mutex<HostAuth>>>>,
    creds: Mutex<HashMap<String, Option<Credentials>>>,
    /// `http` or `https` for hosts that may speak either (see `probe_scheme`).
    schemes: Mutex<HashMap<String, &'static str>>,
}

/// Whether `host[:port]` is a loopback host.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = strip_port(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Split an absolute URL into (scheme, authority, rest); `None` if it is not http(s).
pub(crate) fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // No user info in URLs from replies.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((scheme, authority, path))
}

/// Resolve a `Location` value against the URL it came from.
pub fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty()
        || location.len() > MAX_URL
        || location.bytes().any(|b| b < 0x21 || b == 0x7f)
    {
        return None;
    }
    if split_url(location).is_some() {
        return Some(location.to_owned());
    }
    if location.contains("://") {
        return None;
    }
    let (scheme, authority, path) = split_url(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        let url = format!("{scheme}://{rest}");
        return split_url(&url).is_some().then_some(url);
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    // Relative to the base's directory.
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

impl Transport {
    pub(crate) fn new(config: Config) -> Result<Transport> {
        let tls = tls_config(&config)?;
        let builder = || {
            Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(config.connect_timeout))
                .timeout_per_read(Some(config.io_timeout))
                .timeout_recv_response(Some(config.io_timeout))
                .timeout_per_write(Some(config.io_timeout))
                .user_agent(config.user_agent.as_str())
                .max_idle_connections_per_host(config.parallel.max(1) * 2)
                .tls_config(tls.clone())
        };
        let direct: Agent = builder().proxy(None).build().into();
        let proxied = if config.proxy_from_env {
            ureq::Proxy::try_from_env().map(|p| builder().proxy(Some(p)).build().into())
        } else {
            None
        };
        Ok(Transport {
            config,
            direct,
            proxied,
            counters: Counters::default(),
            auth: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        })
    }

    fn agent_for(&self, url: &str) -> &Agent {
        let host = split_url(url).map_or("", |(_, a, _)| a);
        match &self.proxied {
            Some(p) if !is_loopback(host) => p,
            _ => &self.direct,
        }
    }

    /// The endpoints for a repository: the mirrors in order, then the registry.
    pub(crate) fn endpoints(&self, repo: &Repository) -> Result<Vec<Endpoint>> {
        let mut out = Vec::new();
        for m in &self.config.mirrors {
            let m = m.trim_end_matches('/');
            let Some((_, authority, _)) = split_url(m) else {
                return Err(Error::Config(format!(
                    "mirror {m:?} is not an http:// or https:// URL"
                )));
            };
            out.push(Endpoint {
                base: m.to_owned(),
                host: authority.to_owned(),
                query: format!("?ns={}", repo.registry()),
                mirror: true,
                tentative: false,
            });
        }
        let host = repo.api_host();
        let declared = self
            .config
            .insecure_registries
            .iter()
            .any(|h| h == host || h == repo.registry());
        let known = lock(&self.schemes).get(host).copied();
        // A host the user declared insecure may be sent the first request in plain HTTP:
        // its scheme is settled by that request's answer, a round trip sooner than by a
        // probe. A loopback host that is not declared is probed first, as before.
        let (scheme, tentative) = match known {
            Some(s) => (s, false),
            None if declared => ("http", true),
            None if is_loopback(host) => (self.probe_scheme(host)?, false),
            None => ("https", false),
        };
        out.push(Endpoint {
            base: format!("{scheme}://{host}"),
            host: host.to_owned(),
            query: String::new(),
            mirror: false,
            tentative,
        });
        Ok(out)
    }

    /// For a host that may speak plain HTTP (loopback, insecure): HTTPS if it answers
    /// over TLS (with a certificate the client trusts), else HTTP, as Docker does; the
    /// answer is kept. A certificate the client does not trust is an error, not a reason
    /// to fall back.
    ///
    /// Both are asked at once (`GET /v2/` over TLS and in plain HTTP, each on its own
    /// thread), so a plain-HTTP registry costs no TLS attempt first: a plain `200` or `401`
    /// (the API's answers to `/v2/`) settles it for HTTP, and its connection stays in the
    /// pool for the next request. One port speaks one or the other; a port that spoke both
    /// would get HTTP when its plain answer came first. Anything else from the plain
    /// request (a `400` from a TLS port, an error) waits for the TLS attempt, whose success
    /// means HTTPS and whose failure (other than a certificate) means HTTP, as before.
    fn probe_scheme(&self, host: &str) -> Result<&'static str> {
        if let Some(s) = lock(&self.schemes).get(host) {
            return Ok(s);
        }
        let url = format!("https://{host}/v2/");
        let plain = format!("http://{host}/v2/");
        log::debug!("{url}: does it speak HTTPS (or {plain} plain HTTP)?");
        Counters::add(&self.counters.requests, 2);
        let (tx, rx) = std::sync::mpsc::channel();
        // Owned threads, not scoped ones: the answer may come before the other request ends
        // (which may take until a timeout), and nothing waits for it.
        let spawn = |name: &str, job: Box<dyn FnOnce() -> Probe + Send>| {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let _ = tx.send(job());
                })
                .is_ok()
        };
        let agent = self.agent_for(&url).clone();
        let tls_url = url.clone();
        let tls = spawn(
            "oci-probe-https",
            Box::new(move || Probe::Tls(agent.get(&tls_url).call().map(|_| ()))),
        );
        let agent = self.agent_for(&plain).clone();
        let plain_url = plain.clone();
        spawn(
            "oci-probe-http",
            Box::new(move || {
                Probe::Plain(agent.get(&plain_url).call().ok().map(|r| {
                    let status = r.status().as_u16();
                    let challenges = r
                        .headers()
                        .get_all("www-authenticate")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .collect();
                    // Read to the end (bounded) so the connection goes back to the pool.
                    let body = r.into_body().with_config().limit(64 << 10).read_to_vec();
                    (status, challenges, body.map_or(0, |b| b.len() as u64))
                }))
            }),
        );
        drop(tx);
        if !tls {
            return Err(Error::Config(
                "cannot start a thread for the HTTPS probe".into(),
            ));
        }
        let mut scheme = None;
        // The plain answer's body bytes count as any reply's (the registry logs them).
        let counted = |answer: Probe| {
            if let Probe::Plain(Some((_, _, n))) = &answer {
                Counters::add(&self.counters.bytes, *n);
            }
            answer
        };
        for answer in rx.iter().map(counted) {
            match answer {
                Probe::Plain(Some((status @ (200 | 401), challenges, _))) => {
                    log::debug!("{plain}: {status} in plain HTTP: using plain HTTP");
                    if status == 401 {
                        // What the host wants, learnt before the first real request, as
                        // Docker's ping does: that request then carries it.
                        self.learn_challenges(host, &challenges);
                    }
                    scheme = Some("http");
                    break;
                }
                Probe::Plain(_) => {}
                Probe::Tls(Ok(())) => {
                    scheme = Some("https");
                    break;
                }
                Probe::Tls(Err(e)) => {
                    let msg = e.to_string();
                    if msg.to_ascii_lowercase().contains("certificate") {
                        return Err(Error::Transport {
                            url,
                            source: e.into_io(),
                        });
                    }
                    log::debug!("{url}: {msg}: using plain HTTP");
                    scheme = Some("http");
                    // The plain request started with it: its challenges, if it answers
                    // within the time a connection may take.
                    if let Ok(Probe::Plain(Some((401, challenges, _)))) =
                        rx.recv_timeout(self.config.connect_timeout).map(counted)
                    {
                        self.learn_challenges(host, &challenges);
                    }
                    break;
                }
            }
        }
        // The TLS thread always answers; without it (it died), fall back as a failure does.
        let scheme = scheme.unwrap_or("http");
        lock(&self.schemes).insert(host.to_owned(), scheme);
        Ok(scheme)
    }

    /// The scheme a `401` to `GET /v2/` asks for (`WWW-Authenticate` values), remembered for
    /// `host` if nothing is known yet; unusable challenges are left to the first request's
    /// `401` (and its error).
    fn learn_challenges(&self, host: &str, values: &[String]) {
        let challenges = parse_challenges(values.iter().map(String::as_str));
        let scheme = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some(Scheme::Bearer {
                realm: realm.clone(),
                service: service.clone(),
            }),
            Challenge::Basic => None,
        });
        let scheme = match scheme {
            Some(s) => s,
            None if challenges.iter().any(|c| matches!(c, Challenge::Basic))
                && self.credentials(host).is_ok_and(|c| c.is_some()) =>
            {
                Scheme::Basic
            }
            None => return,
        };
        let state = self.host_auth(host);
        let mut st = lock(&state);
        if matches!(st.scheme, Scheme::Unknown) {
            st.scheme = scheme;
        }
    }

    fn host_auth(&self, host: &str) -> Arc<Mutex<HostAuth>> {
        lock(&self.auth)
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(HostAuth {
                    scheme: Scheme::Unknown,
                    tokens: HashMap::new(),
                }))
            })
            .clone()
    }

    fn credentials(&self, host: &str) -> Result<Option<Credentials>> {
        if let Some(c) = lock(&self.creds).get(host) {
            return Ok(c.clone());
        }
        // Docker Hub's API host has its credentials under docker.io.
        let key = if host == DOCKER_HUB_API {
            DOCKER_HUB
        } else {
            host
        };
        let explicit = self
            .config
            .credentials
            .iter()
            .find(|(h, _)| h == key || h == host)
            .map(|(_, c)| c.clone());
        let found = match explicit {
            Some(c) => Some(c),
            None => match credentials::config_path(self.config.auth_file.as_deref()) {
                Some(p) => credentials::from_config_file(&p, key)?,
                None => None,
            },
        };
        lock(&self.creds).insert(host.to_owned(), found.clone());
        Ok(found)
    }

    /// The `Authorization` value for a request to `host`, fetching or refreshing a token
    /// when the host wants one and the one held is about to expire.
    fn authorization(&self, host: &str, scope: &str) -> Result<Option<String>> {
        let state = self.host_auth(host);
        let mut st = lock(&state);
        match st.scheme.clone() {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.credentials(host)?.and_then(|c| basic(&c))),
            Scheme::Bearer { realm, service } => {
                if let Some(t) = st.tokens.get(scope)
                    && Instant::now() < t.refresh_at
                {
                    return Ok(Some(format!("Bearer {}", t.value)));
                }
                let token = self.fetch_token(host, &realm, service.as_deref(), scope)?;
                let value = format!("Bearer {}", token.value);
                st.tokens.insert(scope.to_owned(), token);
                Ok(Some(value))
            }
        }
    }

    /// Learn from a `401`'s challenges; forget the token that was refused.
    fn challenged(&self, host: &str, scope: &str, reply: &Reply) -> Result<()> {
        let values: Vec<&str> = reply
            .response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let challenges = parse_challenges(values.iter().copied());
        let scheme = challenges
            .iter()
            .find_map(|c| match c {
                Challenge::Bearer { realm, service, .. } => Some(Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                }),
                Challenge::Basic => None,
            })
            .or_else(|| {
                challenges
                    .iter()
                    .any(|c| matches!(c, Challenge::Basic))
                    .then_some(Scheme::Basic)
            })
            .ok_or_else(|| Error::Unauthorized {
                url: reply.url.clone(),
                detail: Some(format!(
                    "no usable WWW-Authenticate challenge in {values:?}"
                )),
            })?;
        if matches!(scheme, Scheme::Basic) && self.credentials(host)?.is_none() {
            return Err(Error::Unauthorized {
                url: reply.url.clone(),
                detail: Some("Basic authentication required and no credentials".into()),
            });
        }
        let state = self.host_auth(host);
        let mut st = lock(&state);
        st.scheme = scheme;
        st.tokens.remove(scope);
        Ok(())
    }

    fn fetch_token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token> {
        let Some((scheme, authority, _)) = split_url(realm).filter(|_| realm.len() <= MAX_URL)
        else {
            return Err(Error::BadReply {
                url: realm.chars().take(200).collect(),
                what: "token realm is not an http(s) URL".into(),
            });
        };
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (k, v) in [("service", service), ("scope", Some(scope))] {
            if let Some(v) = v {
                url.push(sep);
                url.push_str(k);
                url.push('=');
                url.push_str(&urlencode(v));
                sep = '&';
            }
        }
        // Credentials go to a token server only over TLS or on loopback.
        let creds = if scheme.eq_ignore_ascii_case("https") || is_loopback(authority) {
            self.credentials(host)?
        } else {
            None
        };
        let started = Instant::now();
        let reply = match &creds {
            Some(Credentials::IdentityToken(refresh)) => {
                let form = format!(
                    "grant_type=refresh_token&client_id=oci-lazy&refresh_token={}&service={}&scope={}",
                    urlencode(refresh),
                    urlencode(service.unwrap_or("")),
                    urlencode(scope)
                );
                self.send_with_retries(realm, |agent| {
                    agent
                        .post(realm)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .send(form.as_bytes())
                })?
            }
            _ => {
                let auth = creds.as_ref().and_then(basic);
                self.send_with_retries(&url, |agent| {
                    let mut r = agent.get(&url);
                    if let Some(a) = &auth {
                        r = r.header("authorization", a);
                    }
                    r.call()
                })?
            }
        };
        Counters::add(&self.counters.tokens, 1);
        let status = reply.status();
        if status == 401 || status == 403 {
            return Err(Error::Unauthorized {
                url: realm.to_owned(),
                detail: Some(format!(
                    "token server answered {status}{}",
                    if creds.is_some() {
                        " to the credentials"
                    } else {
                        " (anonymous)"
                    }
                )),
            });
        }
        if status != 200 {
            let detail = reply.excerpt(&self.counters);
            return Err(Error::Status {
                url: realm.to_owned(),
                status,
                detail,
            });
        }
        let body = reply.read_limited(&self.counters, MAX_TOKEN_REPLY, "a token reply")?;
        let t = parse_token_reply(&body).map_err(|what| Error::BadReply {
            url: realm.to_owned(),
            what,
        })?;
        let margin = (t.lifetime / 4).min(Duration::from_secs(20));
        log::debug!("token for {host} {scope}: valid {:?}", t.lifetime);
        Ok(Token {
            value: t.token,
            refresh_at: started + t.lifetime - margin,
        })
    }

    /// Send one request built by `make` (no auth, no redirects), retrying connection
    /// errors, 429 and 5xx.
    fn send_with_retries(
        &self,
        url: &str,
        make: impl Fn(&Agent) -> std::result::Result<Response<Body>, ureq::Error>,
    ) -> Result<Reply> {
        let mut attempt = 1;
        loop {
            Counters::add(&self.counters.requests, 1);
            let r = make(self.agent_for(url));
            let reply = match r {
                Ok(response) => Reply {
                    response,
                    url: url.to_owned(),
                    redirected: false,
                },
                Err(e) => {
                    let e = Error::Transport {
                        url: url.to_owned(),
                        source: e.into_io(),
                    };
                    self.backoff(url, attempt, None, &e)?;
                    attempt += 1;
                    continue;
                }
            };
            if retryable(reply.status()) {
                let after = retry_after(&reply);
                let e = Error::Status {
                    url: url.to_owned(),
                    status: reply.status(),
                    detail: None,
                };
                self.backoff(url, attempt, after, &e)?;
                attempt += 1;
                continue;
            }
            return Ok(reply);
        }
    }

    /// Wait before retry `attempt + 1`, or give up with an error.
    pub(crate) fn backoff(
        &self,
        url: &str,
        attempt: u32,
        after: Option<Duration>,
        last: &Error,
    ) -> Result<()> {
        let policy = &self.config.retry;
        if attempt >= policy.attempts.max(1) {
            return Err(Error::RetriesExhausted {
                url: url.to_owned(),
                attempts: attempt,
                last: last.to_string(),
            });
        }
        let wait = match after {
            Some(a) if a > policy.max => {
                return Err(Error::RetryTooLate {
                    url: url.to_owned(),
                    after: a,
                    limit: policy.max,
                });
            }
            Some(a) => a,
            None => policy.backoff(attempt),
        };
        log::debug!("retry {attempt} of {url} in {wait:?}: {last}");
        Counters::add(&self.counters.retries, 1);
        std::thread::sleep(wait);
        Ok(())
    }

    /// Send `req`: authenticated on its endpoint's host, redirects followed (without
    /// `Authorization` on another host), retried on connection errors, 429 and 5xx. The
    /// reply may still be any other status: the caller decides.
    pub(crate) fn send(&self, req: &Request<'_>) -> Result<Reply> {
        let mut url = req.url.clone();
        let mut attempt = 1;
        let mut reauthenticated = false;
        let mut hops = 0;
        loop {
            let same_host =
                split_url(&url).is_some_and(|(_, a, _)| a.eq_ignore_ascii_case(&req.endpoint.host));
            // Plain HTTP to a declared-insecure host, its scheme not settled when the
            // endpoint was made: settled since (by another request), or by this one.
            let mut settling = false;
            if req.endpoint.tentative && same_host && url.starts_with("http://") {
                match lock(&self.schemes).get(&req.endpoint.host) {
                    Some(&"https") => url = format!("https://{}", &url["http://".len()..]),
                    Some(_) => {}
                    None => settling = true,
                }
            }
            let auth = if same_host {
                self.authorization(&req.endpoint.host, req.scope)?
            } else {
                None
            };
            Counters::add(&self.counters.requests, 1);
            let agent = self.agent_for(&url);
            let mut r = if req.head {
                agent.head(&url)
            } else {
                agent.get(&url)
            };
            for (k, v) in &req.headers {
                r = r.header(*k, v);
            }
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            let sent = Instant::now();
            let result = r.call();
            log::debug!(
                "{} {url}{}: headers in {:.1} ms on thread {}",
                if req.head { "HEAD" } else { "GET" },
                req.headers
                    .iter()
                    .find(|(k, _)| *k == "range")
                    .map(|(_, v)| format!(" ({v})"))
                    .unwrap_or_default(),
                sent.elapsed().as_secs_f64() * 1e3,
                std::thread::current().name().unwrap_or("?")
            );
            if settling {
                let answered = result.as_ref().is_ok_and(|r| r.status().as_u16() != 400);
                if answered {
                    log::debug!("{url}: answered in plain HTTP: using plain HTTP");
                    lock(&self.schemes).insert(req.endpoint.host.clone(), "http");
                } else if self.probe_scheme(&req.endpoint.host)? == "https" {
                    // No registry answer in plain HTTP (a TLS port answers `400` or closes),
                    // and the probe found HTTPS: the request again, over HTTPS.
                    drop(result);
                    url = format!("https://{}", &url["http://".len()..]);
                    continue;
                }
                // Plain HTTP after all: this answer (or error) is the request's.
            }
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    let e = Error::Transport {
                        url: url.clone(),
                        source: e.into_io(),
                    };
                    self.backoff(&url, attempt, None, &e)?;
                    attempt += 1;
                    continue;
                }
            };
            let reply = Reply {
                response,
                url: url.clone(),
                redirected: hops > 0,
            };
            let status = reply.status();
            if status == 401 && same_host {
                if reauthenticated {
                    let detail = reply.excerpt(&self.counters);
                    return Err(Error::Unauthorized { url, detail });
                }
                self.challenged(&req.endpoint.host, req.scope, &reply)?;
                drop(reply);
                reauthenticated = true;
                continue;
            }
            if is_redirect(status) {
                let next = reply
                    .header("location")
                    .and_then(|l| resolve_location(&url, l))
                    .ok_or_else(|| Error::BadReply {
                        url: url.clone(),
                        what: format!("redirect {status} without a usable Location"),
                    })?;
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(Error::BadReply {
                        url,
                        what: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                Counters::add(&self.counters.redirects, 1);
                log::debug!("{status} {url} -> {next}");
                url = next;
                continue;
            }
            if retryable(status) {
                let after = retry_after(&reply);
                let e = Error::Status {
                    url: url.clone(),
                    status,
                    detail: None,
                };
                drop(reply);
                self.backoff(&url, attempt, after, &e)?;
                attempt += 1;
                continue;
            }
            return Ok(reply);
        }
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn retryable(status: u16) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS.as_u16()
        || (500..600).contains(&status) && status != 501
}

fn retry_after(reply: &Reply) -> Option<Duration> {
    reply
        .header("retry-after")
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

fn basic(c: &Credentials) -> Option<String> {
    match c {
        Credentials::Basic { username, password } => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )),
        Credentials::IdentityToken(_) => None,
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tls_config(config: &Config) -> Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let mut extra = Vec::new();
    for path in &config.ca_files {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
        let before = extra.len();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => extra.push(c),
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::Config(format!("CA file {}: {e}", path.display())));
                }
            }
        }
        if extra.len() == before {
            return Err(Error::Config(format!(
                "CA file {}: no certificate in it",
                path.display()
            )));
        }
    }
    let native = rustls_native_certs::load_native_certs();
    let mut roots: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let roots = if roots.is_empty() && extra.is_empty() {
        // No system store at all: Mozilla's roots.
        RootCerts::WebPki
    } else {
        roots.extend(extra);
        RootCerts::new_with_certs(&roots)
    };
    Ok(TlsConfig::builder().root_certs(roots).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[::2]:1",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/sha256:00?x=1";
        assert_eq!(
            resolve_location(base, "https://s3.example/b?sig=1").unwrap(),
            "https://s3.example/b?sig=1"
        );
        assert_eq!(
            resolve_location(base, "/other").unwrap(),
            "http://127.0.0.1:5000/other"
        );
        assert_eq!(
            resolve_location(base, "//cdn:81/x").unwrap(),
            "http://cdn:81/x"
        );
        assert_eq!(
            resolve_location(base, "sib").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/sib"
        );
        for bad in [
            "",
            "ftp://x/y",
            "http://user@evil/",
            "a b",
            "http:///x",
            "//u@h/x",
        ] {
            assert_eq!(resolve_location(base, bad), None, "{bad}");
        }
        assert_eq!(split_url("https://h:1/p?q"), Some(("https", "h:1", "/p?q")));
        assert_eq!(split_url("https://u@h/p"), None);
    }

    #[test]
    fn url_encoding() {
        assert_eq!(
            urlencode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(urlencode("a-b_c.d~"), "a-b_c.d~");
    }
}
