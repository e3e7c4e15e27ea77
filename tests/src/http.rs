//! A minimal HTTP/1.1 codec over `std::net` for the registry fixtures: read a request or a
//! response head, frame a body, and a tiny blocking client ([`get`], [`request`]) that the
//! fixtures' own tests use as an independent client (plain HTTP only, one request per
//! connection).
//!
//! It reads what Go's `net/http` (docker-registry), skopeo and a typical Rust client send:
//! `Content-Length` or chunked bodies, header names compared case-insensitively. Heads are
//! bounded (64 KiB), so a confused peer cannot make a fixture allocate without bound.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest request or response head read.
const MAX_HEAD: usize = 64 * 1024;

/// Header list in arrival order (names as sent).
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive), the first if repeated.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A request as a server reads it (body read whole: only small bodies reach the fixtures).
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// Headers in order.
    pub headers: Headers,
    /// The body (`Content-Length` or chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// Header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query parameters, percent-decoded, in order (a key may repeat, e.g. `scope`).
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// Write this request to `w` (with its body and a `Content-Length` if it has one).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("content-length")
                || n.eq_ignore_ascii_case("transfer-encoding")
            {
                continue;
            }
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(&self.body)?;
        w.flush()
    }
}

/// Decode `%XX` escapes and `+` (space) of a query component; bad escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encode a query component (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Read lines up to the blank line that ends a head. `Ok(None)` on a clean EOF before any
/// byte (the peer closed a kept-alive connection).
fn read_head_lines(r: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = r.take((MAX_HEAD - total + 1) as u64).read_line(&mut line)?;
        if n == 0 {
            if lines.is_empty() && total == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "head cut short",
            ));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate a stray CRLF between messages
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn parse_headers(lines: &[String]) -> io::Result<Headers> {
    lines
        .iter()
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("bad header {l:?}"))
                })
        })
        .collect()
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes.
    UntilClose,
}

fn framing_of(headers: &Headers, default: Framing) -> io::Result<Framing> {
    if header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Ok(Framing::Chunked);
    }
    match header(headers, "content-length") {
        Some(v) => v.parse().map(Framing::Length).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad Content-Length {v:?}"),
            )
        }),
        None => Ok(default),
    }
}

/// Read one request (head and body). `Ok(None)` when the peer closed between requests.
pub fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let Some(lines) = read_head_lines(r)? else {
        return Ok(None);
    };
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad request line {:?}", lines[0]),
        ));
    };
    let headers = parse_headers(&lines[1..])?;
    let mut body = Vec::new();
    let framing = framing_of(&headers, Framing::Empty)?;
    copy_body(r, &mut body, framing, u64::MAX)?;
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body,
    }))
}

/// A response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order.
    pub headers: Headers,
}

impl ResponseHead {
    /// Header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// How the body that follows is delimited (for a response to `method`).
    pub fn framing(&self, method: &str) -> io::Result<Framing> {
        if method == "HEAD" || self.status == 204 || self.status == 304 || self.status < 200 {
            return Ok(Framing::Empty);
        }
        framing_of(&self.headers, Framing::UntilClose)
    }

    /// The head as bytes, ready to send.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// Read a response head.
pub fn read_response_head(r: &mut impl BufRead) -> io::Result<ResponseHead> {
    let lines = read_head_lines(r)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        )
    })?;
    let mut parts = lines[0].splitn(3, ' ');
    let _version = parts.next();
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {:?}", lines[0]),
        )
    })?;
    Ok(ResponseHead {
        status,
        reason: parts.next().unwrap_or("").to_string(),
        headers: parse_headers(&lines[1..])?,
    })
}

/// Copy a body delimited by `framing` from `r` to `w`, de-chunked, at most `limit` bytes of
/// it (then stop, leaving the rest unread). Returns the bytes copied.
pub fn copy_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    limit: u64,
) -> io::Result<u64> {
    match framing {
        Framing::Empty => Ok(0),
        Framing::Length(n) => {
            let want = n.min(limit);
            let got = io::copy(&mut r.take(want), w)?;
            if got < want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body cut short: {got} of {n}"),
                ));
            }
            Ok(got)
        }
        Framing::UntilClose => io::copy(&mut r.take(limit), w),
        Framing::Chunked => {
            let mut total = 0u64;
            loop {
                let mut line = String::new();
                r.take(1024).read_line(&mut line)?;
                let size_hex = line.trim().split(';').next().unwrap_or("");
                let size = u64::from_str_radix(size_hex, 16).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    loop {
                        let mut t = String::new();
                        if r.take(1024).read_line(&mut t)? == 0 || t.trim().is_empty() {
                            return Ok(total);
                        }
                    }
                }
                let take = size.min(limit - total);
                let got = io::copy(&mut r.take(take), w)?;
                total += got;
                if got < take {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunk cut short",
                    ));
                }
                if total == limit {
                    return Ok(total);
                }
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        }
    }
}

/// A whole response as the tiny client reads it.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Headers,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// Header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// Split `http://host:port/path?query` into (`host:port`, `/path?query`). Only `http`.
pub fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an http:// URL: {url}"),
        )
    })?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// `GET url` with extra headers, one connection, the whole body read.
pub fn get(url: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    request("GET", url, headers)
}

/// `METHOD url` with extra headers (no request body), one connection, the whole body read.
/// Plain HTTP only; 30 s timeouts so a wedged fixture fails the test instead of hanging it.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let (host, target) = split_url(url)?;
    let addr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut hs: Headers = vec![
        ("Host".into(), host.into()),
        ("Connection".into(), "close".into()),
        ("User-Agent".into(), "erofs-rs-tests".into()),
    ];
    hs.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let req = Request {
        method: method.into(),
        target: target.into(),
        headers: hs,
        body: Vec::new(),
    };
    req.write_to(&mut &stream)?;
    let mut r = BufReader::new(&stream);
    let head = read_response_head(&mut r)?;
    let mut body = Vec::new();
    copy_body(&mut r, &mut body, head.framing(method)?, u64::MAX)?;
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let s = "repository:a/b:pull,push";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_decode("a+b%2Cc%zz%4"), "a b,c%zz%4");
    }

    #[test]
    fn chunked_body() {
        let raw = b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\nNEXT";
        let mut r = &raw[..];
        let mut out = Vec::new();
        assert_eq!(
            copy_body(&mut r, &mut out, Framing::Chunked, u64::MAX).unwrap(),
            9
        );
        assert_eq!(out, b"Wikipedia");
        assert_eq!(r, b"NEXT");
    }

    #[test]
    fn request_parse() {
        let raw = b"GET /token?scope=repository%3Ar%3Apull&scope=x HTTP/1.1\r\nHost: h\r\nAuthorization: Basic eA==\r\n\r\n";
        let req = read_request(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(req.path(), "/token");
        assert_eq!(req.header("authorization"), Some("Basic eA=="));
        assert_eq!(
            req.query(),
            vec![
                ("scope".into(), "repository:r:pull".into()),
                ("scope".into(), "x".into())
            ]
        );
        assert!(read_request(&mut &b""[..]).unwrap().is_none());
    }
}
