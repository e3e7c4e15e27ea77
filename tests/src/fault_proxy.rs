//! A fault-injecting HTTP proxy between a client and a plain-HTTP registry (std threads,
//! 127.0.0.1), and a second host it can redirect blob requests to.
//!
//! The client talks to [`FaultProxy::url`] as if it were the registry. By default every
//! request is passed through (one upstream connection per client connection, kept alive) and
//! logged with its status and the body bytes sent ([`FaultProxy::log`],
//! [`FaultProxy::blob_served`]). On top of that:
//!
//! - [`FaultProxy::set_latency`]: a delay before each response head (and once per new
//!   connection, the handshake's round trip): e.g. 20 ms emulates a 20 ms RTT;
//! - [`FaultProxy::set_bandwidth`]: a link shared by every connection (and the redirect host)
//!   that paces body bytes, e.g. 25 MB/s for 200 Mbit/s;
//! - [`FaultProxy::inject`]: a [`Fault`] for the next N requests that match a [`Match`]
//!   (rules apply in the order given, each until used up), so a test is deterministic:
//!   `401` from the registry itself (sent on without `Authorization`), `429` / `503` with
//!   `Retry-After`, a connection reset, a body cut short, `200` with the whole blob for a range
//!   request, a `307` redirect to the [`BlobHost`], an extra delay.
//!
//! The [`BlobHost`] serves a redirected blob by fetching it from the registry with the
//! `Authorization` the proxy saw on the original request, and records whether the client sent
//! it an `Authorization` header of its own (it must not: the token is for the registry).
//! Only plain HTTP upstreams: put the proxy in front of [`Registry::plain`] or
//! [`Registry::token`] (its token server stays direct: the realm is an absolute URL). It also
//! serves absolute-form requests (`GET http://HOST/v2/…`) and `CONNECT HOST:PORT` tunnels
//! (answered `200 Connection established`, logged as a [`Served`] with method `CONNECT`), so
//! it can stand as a client's `HTTP_PROXY` / `HTTPS_PROXY` for a plain-HTTP registry: every
//! request, whatever host it names, goes to its one upstream. The HTTP requests that come
//! through a tunnel are served, logged and faulted like direct ones (a TLS handshake through
//! a tunnel is not HTTP: the proxy closes the connection).
//!
//! [`Registry::plain`]: crate::registry::Registry::plain
//! [`Registry::token`]: crate::registry::Registry::token

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{self, Framing, Request, ResponseHead};
use crate::registry::Registry;

/// Which requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Every request.
    Any,
    /// `GET` of any blob (`/v2/…/blobs/sha256:…`).
    Blobs,
    /// `GET` of one blob (by digest, `sha256:…`).
    Blob(String),
    /// Any request for a manifest (`/v2/…/manifests/…`).
    Manifests,
}

impl Match {
    fn matches(&self, req: &Request) -> bool {
        let path = req.path();
        let blob_get = req.method == "GET" && path.contains("/blobs/sha256:");
        match self {
            Match::Any => true,
            Match::Blobs => blob_get,
            Match::Blob(d) => blob_get && path.ends_with(d.as_str()),
            Match::Manifests => path.contains("/manifests/"),
        }
    }
}

/// What to do to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send the request on *without* its `Authorization`: the registry answers `401` with its
    /// own challenge, as it does for an expired token. (Against an anonymous registry, which
    /// would answer `200`, the proxy answers `401` with `WWW-Authenticate: Basic` itself.)
    Unauthorized,
    /// Answer `status` (e.g. 429, 503) with `Retry-After: SECONDS` when given; keep the
    /// connection.
    Status {
        /// The status code.
        status: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u32>,
    },
    /// Reset the connection (RST, no reply) after reading the request.
    Reset,
    /// Forward, send the head (with the full `Content-Length`) and `after` body bytes, then
    /// close the connection.
    CutShort {
        /// Body bytes sent before closing.
        after: u64,
    },
    /// Drop the `Range` header: the registry answers `200` with the whole blob.
    IgnoreRange,
    /// Answer `307` with a `Location` on the [`BlobHost`].
    Redirect,
    /// Forward, with the body's byte at offset `at` inverted (a registry or a man in the
    /// middle that changes a blob's bytes; the length and the status stay right).
    Flip {
        /// Offset in the body of the byte changed.
        at: u64,
    },
    /// Wait this long more before answering.
    Delay(Duration),
}

/// One request the proxy answered.
#[derive(Debug, Clone)]
pub struct Served {
    /// Method (`CONNECT` for a tunnel opened, with target `HOST:PORT`).
    pub method: String,
    /// Target (path and query).
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Whether the request carried `Authorization`.
    pub authorization: bool,
    /// Status sent (0 for a reset).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

impl Served {
    /// The blob digest of a blob request.
    pub fn blob(&self) -> Option<&str> {
        let path = self.target.split('?').next()?;
        let (_, d) = path.rsplit_once("/blobs/")?;
        d.starts_with("sha256:").then_some(d)
    }
}

/// One request the [`BlobHost`] answered.
#[derive(Debug, Clone)]
pub struct HostHit {
    /// Target (path and query).
    pub target: String,
    /// The `Authorization` header the client sent to this host (must be `None`).
    pub authorization: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// Status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

struct Rule {
    matcher: Match,
    fault: Fault,
    remaining: u64,
}

/// The shared link that paces body bytes.
struct Link {
    bytes_per_sec: Option<u64>,
    next_free: Instant,
}

struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Served>>,
    host_log: Mutex<Vec<HostHit>>,
    link: Mutex<Link>,
    latency_us: AtomicU64,
    /// Redirect id → (upstream target, the original request's Authorization).
    redirects: Mutex<HashMap<u64, (String, Option<String>)>>,
    next_redirect: AtomicU64,
    host_addr: Mutex<Option<SocketAddr>>,
    stop: AtomicBool,
    /// Requests read but not logged yet (the client may have its answer already).
    in_flight: AtomicU64,
    /// Client connections the proxy accepted (not the blob host's).
    connections: AtomicU64,
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::SeqCst))
    }

    fn take_fault(&self, req: &Request) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.matcher.matches(req))?;
        rule.remaining -= 1;
        Some(rule.fault.clone())
    }

    /// Write `data` to `w` through the paced link.
    fn send(&self, w: &mut impl Write, data: &[u8]) -> io::Result<()> {
        const SLICE: usize = 16 * 1024;
        const BURST: usize = 256 * 1024;
        for piece in data.chunks(SLICE) {
            let until = {
                let mut link = self.link.lock().unwrap();
                link.bytes_per_sec.map(|rate| {
                    // A token bucket BURST bytes deep: time lost oversleeping one slice is
                    // made up by the next ones, so the link carries its rate.
                    let now = Instant::now();
                    let depth = Duration::from_secs_f64(BURST as f64 / rate as f64);
                    let start = link.next_free.max(now.checked_sub(depth).unwrap_or(now));
                    let dur = Duration::from_secs_f64(piece.len() as f64 / rate as f64);
                    link.next_free = start + dur;
                    link.next_free
                })
            };
            if let Some(t) = until {
                let now = Instant::now();
                if t > now {
                    std::thread::sleep(t - now);
                }
            }
            w.write_all(piece)?;
        }
        Ok(())
    }
}

/// The proxy; stops (with its blob host) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    host: BlobHost,
}

/// The second host redirected blob requests go to (see the module docs).
pub struct BlobHost {
    addr: SocketAddr,
}

impl BlobHost {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("host", &self.host.addr)
            .finish()
    }
}

fn spawn_listener(
    name: &str,
    shared: Arc<Shared>,
    serve: fn(TcpStream, &Shared),
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().unwrap();
    let t = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(conn, &shared));
            }
        })
        .unwrap();
    (addr, t)
}

impl FaultProxy {
    /// A proxy in front of the plain-HTTP server at `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            host_log: Mutex::new(Vec::new()),
            link: Mutex::new(Link {
                bytes_per_sec: None,
                next_free: Instant::now(),
            }),
            latency_us: AtomicU64::new(0),
            redirects: Mutex::new(HashMap::new()),
            next_redirect: AtomicU64::new(1),
            host_addr: Mutex::new(None),
            stop: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let (host_addr, t1) = spawn_listener("blob-host", shared.clone(), serve_host);
        *shared.host_addr.lock().unwrap() = Some(host_addr);
        let (addr, t2) = spawn_listener("fault-proxy", shared.clone(), serve_proxy);
        FaultProxy {
            addr,
            shared,
            threads: vec![t1, t2],
            host: BlobHost { addr: host_addr },
        }
    }

    /// A proxy in front of `reg` (plain HTTP only; panics for a TLS registry).
    pub fn in_front_of(reg: &Registry) -> FaultProxy {
        assert!(
            !reg.is_tls(),
            "the fault proxy speaks plain HTTP: put it in front of a plain or token registry"
        );
        FaultProxy::start(reg.addr())
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`: the host part of image references through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT/REPO[:TAG|@DIGEST]` through the proxy.
    pub fn reference(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.addr)
    }

    /// The redirect target host.
    pub fn blob_host(&self) -> &BlobHost {
        &self.host
    }

    /// Apply `fault` to the next `times` requests that match `matcher`.
    pub fn inject(&self, matcher: Match, fault: Fault, times: u64) {
        self.shared.rules.lock().unwrap().push(Rule {
            matcher,
            fault,
            remaining: times,
        });
    }

    /// Apply `fault` to every request that matches `matcher` from now on.
    pub fn inject_always(&self, matcher: Match, fault: Fault) {
        self.inject(matcher, fault, u64::MAX);
    }

    /// Drop every pending fault.
    pub fn clear_faults(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Faults injected but not used yet (`u64::MAX` rules count as one).
    pub fn pending_faults(&self) -> u64 {
        self.shared
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.remaining.min(1_000_000))
            .sum()
    }

    /// Delay before each response head and each new connection (e.g. the RTT to emulate).
    pub fn set_latency(&self, d: Duration) {
        self.shared
            .latency_us
            .store(d.as_micros() as u64, Ordering::SeqCst);
    }

    /// Pace all body bytes (proxy and blob host together) to `bytes_per_sec`, a token bucket
    /// 256 KiB deep (like `tc tbf`'s burst); `None`: as fast as loopback goes. Checked here:
    /// at 25 MB/s (200 Mbit/s) one 64 MiB GET gets 24.7 MB/s (0.99 of the link; the proxy
    /// unpaced moves ~300 MB/s).
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        let mut link = self.shared.link.lock().unwrap();
        link.bytes_per_sec = bytes_per_sec;
        link.next_free = Instant::now();
    }

    /// Wait (at most 5 s) until every request read so far is logged: a client may hold its
    /// whole answer a moment before the proxy records it.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every request answered so far, in order of completion (waits for requests in flight).
    pub fn log(&self) -> Vec<Served> {
        self.settle();
        self.shared.log.lock().unwrap().clone()
    }

    /// Every request the blob host answered so far (waits for requests in flight).
    pub fn host_log(&self) -> Vec<HostHit> {
        self.settle();
        self.shared.host_log.lock().unwrap().clone()
    }

    /// Client connections the proxy has accepted so far (a client's connection pool opens
    /// one per request it has in flight at once and reuses them; the blob host's are not
    /// counted).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Forget the logs (e.g. after a set-up phase).
    pub fn reset_logs(&self) {
        self.shared.log.lock().unwrap().clear();
        self.shared.host_log.lock().unwrap().clear();
    }

    /// `(GET requests, body bytes)` for blob `digest`, at the proxy and the blob host together.
    pub fn blob_served(&self, digest: &str) -> (u64, u64) {
        let mut n = 0;
        let mut b = 0;
        for s in self.log() {
            if s.method == "GET" && s.blob() == Some(digest) && s.status != 307 {
                n += 1;
                b += s.bytes;
            }
        }
        for h in self.host_log() {
            if h.target
                .split('?')
                .next()
                .is_some_and(|p| p.ends_with(digest))
            {
                n += 1;
                b += h.bytes;
            }
        }
        (n, b)
    }

    /// Body bytes sent to clients (proxy and blob host).
    pub fn total_bytes(&self) -> u64 {
        self.log().iter().map(|s| s.bytes).sum::<u64>()
            + self.host_log().iter().map(|h| h.bytes).sum::<u64>()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = TcpStream::connect_timeout(&self.host.addr, Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The upstream connection of one client connection, reopened when the registry closed it.
struct Upstream {
    addr: SocketAddr,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Upstream {
    /// Send `req` and read the response head; retry once on a fresh connection if a kept
    /// connection turned out closed.
    fn exchange(&mut self, req: &Request) -> io::Result<(ResponseHead, &mut BufReader<TcpStream>)> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                let r = BufReader::with_capacity(64 * 1024, s.try_clone()?);
                self.conn = Some((s, r));
            }
            let (s, r) = self.conn.as_mut().unwrap();
            match req.write_to(s).and_then(|_| http::read_response_head(r)) {
                Ok(head) => {
                    let r = &mut self.conn.as_mut().unwrap().1;
                    return Ok((head, r));
                }
                Err(e) if attempt == 0 => {
                    let _ = e;
                    self.conn = None;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("two attempts")
    }
}

const HOP_BY_HOP: [&str; 4] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
];

fn simple_response(status: u16, reason: &str, extra: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut headers: http::Headers = vec![
        ("Content-Type".into(), "application/json".into()),
        ("Content-Length".into(), body.len().to_string()),
    ];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.clone())));
    let mut out = ResponseHead {
        status,
        reason: reason.into(),
        headers,
    }
    .to_bytes();
    out.extend_from_slice(body);
    out
}

fn reset(conn: &TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(conn, Some(Duration::ZERO));
    let _ = conn.shutdown(Shutdown::Both);
}

/// Relay the upstream body (as `framing` says) to the client through the link, at most
/// `limit` bytes; a chunked body is read whole and sent with a `Content-Length`.
/// Returns the bytes sent.
fn relay_body(
    shared: &Shared,
    up: &mut BufReader<TcpStream>,
    client: &mut impl Write,
    framing: Framing,
    limit: u64,
    flip: Option<u64>,
) -> io::Result<u64> {
    let mut sent = 0u64;
    let mut remaining = match framing {
        Framing::Empty => return Ok(0),
        Framing::Length(n) => n,
        Framing::UntilClose | Framing::Chunked => u64::MAX,
    };
    while remaining > 0 && sent < limit {
        let buf = up.fill_buf()?;
        if buf.is_empty() {
            if matches!(framing, Framing::Length(_)) {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream body cut short",
                ));
            }
            break;
        }
        let n = (buf.len() as u64).min(remaining).min(limit - sent) as usize;
        match flip.filter(|at| (sent..sent + n as u64).contains(at)) {
            Some(at) => {
                let mut changed = buf[..n].to_vec();
                changed[(at - sent) as usize] ^= 0xff;
                shared.send(client, &changed)?;
            }
            None => shared.send(client, &buf[..n])?,
        }
        up.consume(n);
        sent += n as u64;
        remaining -= n as u64;
    }
    client.flush()?;
    Ok(sent)
}

/// The head to send the client: upstream's, minus hop-by-hop headers, with a length.
fn client_head(mut head: ResponseHead, body_len: Option<u64>) -> ResponseHead {
    head.headers
        .retain(|(n, _)| !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h)));
    if let Some(len) = body_len {
        head.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
        head.headers
            .push(("Content-Length".into(), len.to_string()));
    }
    head
}

/// A client connection's reader and its (lazily opened) upstream connection.
fn accept(conn: &TcpStream, shared: &Shared) -> Option<(BufReader<TcpStream>, Upstream)> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = conn.set_nodelay(true);
    let reader = BufReader::new(conn.try_clone().ok()?);
    let upstream = Upstream {
        addr: shared.upstream,
        conn: None,
    };
    Some((reader, upstream))
}

fn serve_proxy(conn: TcpStream, shared: &Shared) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let latency = shared.latency();
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    let Some((mut reader, mut upstream)) = accept(&conn, shared) else {
        return;
    };
    let mut client = &conn;
    loop {
        let Ok(Some(mut req)) = http::read_request(&mut reader) else {
            return;
        };
        if req.method.eq_ignore_ascii_case("CONNECT") {
            // An `HTTPS_PROXY`-style tunnel: whatever host it names, the tunnel ends at the
            // one upstream. The requests that come through it are plain HTTP to that
            // upstream, so they are served (logged, faulted) like any other below; a TLS
            // handshake is not HTTP and closes the connection.
            shared.log.lock().unwrap().push(Served {
                method: "CONNECT".into(),
                target: req.target.clone(),
                range: None,
                authorization: req.header("proxy-authorization").is_some(),
                status: 200,
                bytes: 0,
                fault: None,
            });
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .is_err()
            {
                return;
            }
            continue;
        }
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let fault = shared.take_fault(&req);
        let mut served = Served {
            method: req.method.clone(),
            target: req.target.clone(),
            range: req.header("range").map(str::to_string),
            authorization: req.header("authorization").is_some(),
            status: 0,
            bytes: 0,
            fault: fault.clone(),
        };
        let close_after = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut delay = shared.latency();
        if let Some(Fault::Delay(d)) = &fault {
            delay += *d;
        }
        let keep = match fault {
            Some(Fault::Reset) => {
                reset(&conn);
                false
            }
            Some(Fault::Status {
                status,
                retry_after,
            }) => {
                std::thread::sleep(delay);
                let extra: Vec<(&str, String)> = retry_after
                    .map(|s| ("Retry-After", s.to_string()))
                    .into_iter()
                    .collect();
                let reason = match status {
                    429 => "Too Many Requests",
                    503 => "Service Unavailable",
                    _ => "Injected",
                };
                let body = format!(
                    "{{\"errors\":[{{\"code\":\"INJECTED\",\"message\":\"fault proxy: {status}\"}}]}}"
                );
                served.status = status;
                client
                    .write_all(&simple_response(status, reason, &extra, body.as_bytes()))
                    .is_ok()
            }
            Some(Fault::Redirect) => {
                std::thread::sleep(delay);
                let id = shared.next_redirect.fetch_add(1, Ordering::SeqCst);
                let auth = req.header("authorization").map(str::to_string);
                shared
                    .redirects
                    .lock()
                    .unwrap()
                    .insert(id, (req.path().to_string(), auth));
                let host = shared.host_addr.lock().unwrap().expect("blob host started");
                let digest = req.path().rsplit('/').next().unwrap_or("blob").to_string();
                let location = format!("http://{host}/storage/{digest}?X-Signature={id}");
                served.status = 307;
                client
                    .write_all(&simple_response(
                        307,
                        "Temporary Redirect",
                        &[("Location", location)],
                        b"",
                    ))
                    .is_ok()
            }
            ref f => {
                if *f == Some(Fault::IgnoreRange) {
                    req.headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("range"));
                }
                let unauthorized = *f == Some(Fault::Unauthorized);
                if unauthorized {
                    req.headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
                }
                req.headers
                    .retain(|(n, _)| !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h)));
                let limit = match f {
                    Some(Fault::CutShort { after }) => *after,
                    _ => u64::MAX,
                };
                let flip = match f {
                    Some(Fault::Flip { at }) => Some(*at),
                    _ => None,
                };
                match forward(
                    shared,
                    &mut upstream,
                    &req,
                    &mut client,
                    delay,
                    limit,
                    flip,
                    unauthorized,
                ) {
                    Ok((status, bytes, complete)) => {
                        served.status = status;
                        served.bytes = bytes;
                        complete && limit == u64::MAX
                    }
                    Err(_) => {
                        served.status = 502;
                        false
                    }
                }
            }
        };
        shared.log.lock().unwrap().push(served);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !keep || close_after {
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Forward `req` upstream and relay the answer (at most `limit` body bytes, the byte at
/// `flip` inverted). Returns (status, body bytes sent, whether the whole body was sent).
#[allow(clippy::too_many_arguments)]
fn forward(
    shared: &Shared,
    upstream: &mut Upstream,
    req: &Request,
    client: &mut impl Write,
    delay: Duration,
    limit: u64,
    flip: Option<u64>,
    want_401: bool,
) -> io::Result<(u16, u64, bool)> {
    let (head, up) = upstream.exchange(req)?;
    let framing = head.framing(&req.method)?;
    std::thread::sleep(delay);
    if want_401 && head.status != 401 {
        // An anonymous registry: answer 401 ourselves (drain the upstream body first).
        http::copy_body(up, &mut io::sink(), framing, u64::MAX)?;
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"fault proxy: 401"}]}"#;
        client.write_all(&simple_response(
            401,
            "Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"fault-proxy\"".into())],
            body,
        ))?;
        return Ok((401, body.len() as u64, true));
    }
    if framing == Framing::Chunked {
        let mut body = Vec::new();
        http::copy_body(up, &mut body, framing, u64::MAX)?;
        if let Some(b) = flip.and_then(|at| body.get_mut(usize::try_from(at).ok()?)) {
            *b ^= 0xff;
        }
        let head = client_head(head, Some(body.len() as u64));
        client.write_all(&head.to_bytes())?;
        let n = (body.len() as u64).min(limit) as usize;
        shared.send(client, &body[..n])?;
        return Ok((head.status, n as u64, n == body.len()));
    }
    let status = head.status;
    let until_close = framing == Framing::UntilClose;
    client.write_all(&client_head(head, None).to_bytes())?;
    let sent = relay_body(shared, up, client, framing, limit, flip)?;
    let complete = match framing {
        Framing::Length(n) => sent == n,
        Framing::Empty => true,
        _ => sent < limit,
    };
    if until_close || !complete {
        // The upstream connection is spent (or has unread body left): drop it.
        upstream.conn = None;
    }
    Ok((status, sent, complete && !until_close))
}

fn serve_host(conn: TcpStream, shared: &Shared) {
    let Some((mut reader, mut upstream)) = accept(&conn, shared) else {
        return;
    };
    let mut client = &conn;
    while let Ok(Some(req)) = http::read_request(&mut reader) {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut hit = HostHit {
            target: req.target.clone(),
            authorization: req.header("authorization").map(str::to_string),
            range: req.header("range").map(str::to_string),
            status: 0,
            bytes: 0,
        };
        let id: Option<u64> = req
            .query()
            .into_iter()
            .find(|(k, _)| k == "X-Signature")
            .and_then(|(_, v)| v.parse().ok());
        let target = id.and_then(|id| shared.redirects.lock().unwrap().get(&id).cloned());
        let ok = match target {
            None => {
                hit.status = 403;
                client
                    .write_all(&simple_response(403, "Forbidden", &[], b"{}"))
                    .is_ok()
            }
            Some((path, auth)) => {
                let mut headers: http::Headers = vec![("Host".into(), shared.upstream.to_string())];
                if let Some(a) = auth {
                    headers.push(("Authorization".into(), a));
                }
                if let Some(r) = &hit.range {
                    headers.push(("Range".into(), r.clone()));
                }
                let up_req = Request {
                    method: req.method.clone(),
                    target: path,
                    headers,
                    body: Vec::new(),
                };
                match forward(
                    shared,
                    &mut upstream,
                    &up_req,
                    &mut client,
                    shared.latency(),
                    u64::MAX,
                    None,
                    false,
                ) {
                    Ok((status, bytes, complete)) => {
                        hit.status = status;
                        hit.bytes = bytes;
                        complete
                    }
                    Err(_) => false,
                }
            }
        };
        shared.host_log.lock().unwrap().push(hit);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !ok {
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
    }
}
