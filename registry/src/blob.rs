//! A blob read by byte ranges: one range per request, large reads split and fetched in
//! parallel, near ranges merged, redirects cached, every byte accounted for.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::client::{Client, scope};
use crate::content_range::ContentRange;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference::Repository;
use crate::stats::Counters;
use crate::transport::{Endpoint, Reply, Request, lock};

/// A blob of a repository, read by positional reads (`Send + Sync`: share it between
/// threads). Wrapping it as another crate's source trait takes three lines:
///
/// ```text
/// impl erofs_reader::Source for MyBlob {
///     fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> { Ok(self.0.read_exact_at(buf, off)?) }
///     fn size(&self) -> io::Result<u64> { Ok(self.0.size()) }
/// }
/// ```
pub struct Blob {
    client: Client,
    repo: Repository,
    digest: Digest,
    size: u64,
    scope: String,
    path: String,
    endpoints: OnceLock<Vec<Endpoint>>,
    /// The endpoint that last answered.
    endpoint: AtomicUsize,
    /// Where the registry redirected this blob to (object storage), reused for later
    /// ranges until it fails.
    redirect: Mutex<Option<(usize, String)>>,
    /// Whether a `200` answered a range request: the server ignores `Range`.
    ranges_ignored: AtomicBool,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("repository", &self.repo.to_string())
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Fewest bytes [`Blob::read_ranges_arriving`] hands over at a time (but a range's last
/// part): enough that a caller's work per part (decoding a few blocks) is not paid per
/// socket read.
pub const ARRIVAL_STEP: usize = 32 << 10;

/// Most bytes one read from a body takes: [`Blob::read_ranges_arriving`] hands a range
/// over at least every this many bytes, whatever the socket has buffered.
const MAX_READ: usize = 256 << 10;

/// Told of a destination's filled prefix after each read from a body, if anything is.
type OnRead<'a> = Option<&'a mut dyn FnMut(&[u8])>;

/// [`Blob::read_ranges_arriving`]'s callback, if any.
type Arrived<'a> = Option<&'a (dyn Fn(u64, &[u8]) + Sync)>;

/// One piece of a caller's buffer and where it goes in the blob.
struct Piece<'b> {
    offset: u64,
    buf: &'b mut [u8],
}

/// Pieces fetched with one range request.
struct Group<'b> {
    start: u64,
    end: u64,
    pieces: Vec<Piece<'b>>,
}

impl Blob {
    pub(crate) fn with_size(client: Client, repo: Repository, digest: Digest, size: u64) -> Blob {
        Blob {
            scope: scope(&repo),
            path: format!("/v2/{}/blobs/{digest}", repo.name()),
            client,
            repo,
            digest,
            size,
            endpoints: OnceLock::new(),
            endpoint: AtomicUsize::new(0),
            redirect: Mutex::new(None),
            ranges_ignored: AtomicBool::new(false),
        }
    }

    pub(crate) fn open(
        client: Client,
        repo: Repository,
        digest: Digest,
        size: Option<u64>,
    ) -> Result<Blob> {
        let mut blob = Blob::with_size(client, repo, digest, size.unwrap_or(0));
        if size.is_none() {
            blob.size = blob.head()?;
        }
        Ok(blob)
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The client (its counters).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn endpoints(&self) -> Result<&[Endpoint]> {
        if let Some(e) = self.endpoints.get() {
            return Ok(e);
        }
        let e = self.client.t.endpoints(&self.repo)?;
        Ok(self.endpoints.get_or_init(|| e))
    }

    /// `HEAD` the blob: its size.
    fn head(&self) -> Result<u64> {
        let endpoints = self.endpoints()?;
        let (i, size) = self.client.on_endpoints(endpoints, 0, |ep| {
            let req = Request {
                head: true,
                url: ep.url(&self.path),
                endpoint: ep,
                scope: &self.scope,
                headers: Vec::new(),
            };
            let reply = self.client.t.send(&req)?;
            let url = reply.url.clone();
            match reply.status() {
                200 => reply.content_length()?.ok_or_else(|| Error::BadReply {
                    url,
                    what: "HEAD reply without Content-Length".into(),
                }),
                404 => Err(Error::NotFound { url }),
                status => Err(Error::Status {
                    url,
                    status,
                    detail: None,
                }),
            }
        })?;
        self.endpoint.store(i, Ordering::Relaxed);
        Ok(size)
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(Error::OutOfRange {
                digest: self.digest.clone(),
                offset,
                len: len as u64,
                size: self.size,
            });
        }
        Ok(())
    }

    /// Fill `buf` with the blob's bytes at `offset`. Reads larger than
    /// [`Config::split_size`](crate::Config::split_size) go out as parallel range requests.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end; the transport's errors. The buffer's content is
    /// unspecified after an error.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_ranges(&mut [(offset, buf)])
    }

    /// Fill each buffer with the blob's bytes at its offset. Ranges closer than
    /// [`Config::merge_gap`](crate::Config::merge_gap) share one request (up to
    /// [`Config::split_size`](crate::Config::split_size) bytes), large ones are split,
    /// and the requests run in parallel (at most [`Config::parallel`](crate::Config::parallel)).
    ///
    /// # Errors
    /// As [`Blob::read_exact_at`]; the first error stops the rest.
    pub fn read_ranges(&self, ranges: &mut [(u64, &mut [u8])]) -> Result<()> {
        self.read_ranges_inner(ranges, None)
    }

    /// [`Blob::read_ranges`], handing the bytes over as they arrive: `arrived(offset,
    /// bytes)` is called with each part of a range as soon as it is read from the body
    /// (parts of at least [`ARRIVAL_STEP`] bytes, the last one of a range shorter, and at
    /// most 256 KiB plus [`ARRIVAL_STEP`]; a range
    /// longer than [`Config::split_size`](crate::Config::split_size) is split and its
    /// pieces may arrive in any order), while the rest of the body is still on the wire,
    /// so the caller can use the first bytes of a range (decode them, write them) before
    /// its last arrive. A range's parts come in order, each starting where the previous
    /// ended. Called from the thread that reads the request's body (several at once for
    /// parallel requests); after a retry a range's parts are handed over again from its
    /// start (the same bytes). When this returns `Ok`, every byte was handed over and
    /// every buffer is filled.
    ///
    /// # Errors
    /// As [`Blob::read_ranges`]; parts handed over before an error are the blob's bytes.
    pub fn read_ranges_arriving(
        &self,
        ranges: &mut [(u64, &mut [u8])],
        arrived: &(dyn Fn(u64, &[u8]) + Sync),
    ) -> Result<()> {
        self.read_ranges_inner(ranges, Some(arrived))
    }

    fn read_ranges_inner(
        &self,
        ranges: &mut [(u64, &mut [u8])],
        arrived: Arrived<'_>,
    ) -> Result<()> {
        for (off, buf) in ranges.iter() {
            self.check_range(*off, buf.len())?;
        }
        let cfg = self.client.config();
        let split = cfg.split_size.max(4096);
        let mut pieces = Vec::new();
        for (off, buf) in ranges.iter_mut() {
            let mut off = *off;
            let mut rest: &mut [u8] = buf;
            while !rest.is_empty() {
                let n = rest.len().min(usize::try_from(split).unwrap_or(usize::MAX));
                let (head, tail) = rest.split_at_mut(n);
                pieces.push(Piece {
                    offset: off,
                    buf: head,
                });
                off += n as u64;
                rest = tail;
            }
        }
        pieces.sort_by_key(|p| p.offset);
        let groups = merge(pieces, cfg.merge_gap, split);
        let workers = cfg.parallel.max(1).min(groups.len());
        if workers <= 1 {
            for g in groups {
                self.fetch_group(g, arrived)?;
            }
            return Ok(());
        }
        let queue = Mutex::new(groups.into_iter());
        let failed = AtomicBool::new(false);
        let first_error = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let Some(g) = lock(&queue).next() else {
                            break;
                        };
                        if let Err(e) = self.fetch_group(g, arrived) {
                            failed.store(true, Ordering::Relaxed);
                            lock(&first_error).get_or_insert(e);
                        }
                    }
                });
            }
        });
        match first_error
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Read `buf` at `offset` and check it against `digest` (a chunk digest the caller
    /// knows): wrong bytes are an error, never returned.
    ///
    /// # Errors
    /// [`Error::DigestMismatch`], and those of [`Blob::read_exact_at`].
    pub fn read_verified(&self, buf: &mut [u8], offset: u64, digest: &Digest) -> Result<()> {
        self.read_exact_at(buf, offset)?;
        digest.verify(buf, || {
            format!("{}@{} bytes {offset}+{}", self.repo, self.digest, buf.len())
        })
    }

    /// The whole blob in memory, checked against its digest (for small blobs; at most
    /// `limit` bytes).
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::DigestMismatch`], and the transport's errors.
    pub fn read_all(&self, limit: u64) -> Result<Vec<u8>> {
        if self.size > limit {
            return Err(Error::TooLarge {
                url: self.path.clone(),
                what: "a whole blob",
                size: self.size,
                limit,
            });
        }
        let len = usize::try_from(self.size).map_err(|_| Error::TooLarge {
            url: self.path.clone(),
            what: "a whole blob",
            size: self.size,
            limit: usize::MAX as u64,
        })?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, 0)?;
        self.digest
            .verify(&buf, || format!("{}@{}", self.repo, self.digest))?;
        Ok(buf)
    }

    /// Fetch one group with one range request, retrying transient failures.
    fn fetch_group(&self, mut g: Group<'_>, arrived: Arrived<'_>) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.fetch_group_once(&mut g, arrived) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => {
                    let url = match &e {
                        Error::Transport { url, .. } | Error::ShortBody { url, .. } => url.clone(),
                        _ => self.path.clone(),
                    };
                    // A cached redirect may have gone stale: go back to the registry.
                    lock(&self.redirect).take();
                    self.client.t.backoff(&url, attempt, None, &e)?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn fetch_group_once(&self, g: &mut Group<'_>, arrived: Arrived<'_>) -> Result<()> {
        let range = format!("bytes={}-{}", g.start, g.end - 1);
        // A cached redirect first (object storage), then the endpoints.
        let cached = lock(&self.redirect).clone();
        let endpoints = self.endpoints()?;
        if let Some((i, url)) = cached
            && let Some(ep) = endpoints.get(i)
        {
            let req = Request {
                head: false,
                url,
                endpoint: ep,
                scope: &self.scope,
                headers: vec![("range", range.clone())],
            };
            let reply = self.client.t.send(&req)?;
            if matches!(reply.status(), 200 | 206) {
                return self.read_reply(reply, g, arrived);
            }
            log::debug!(
                "cached redirect {} answered {}: back to the registry",
                reply.url,
                reply.status()
            );
            lock(&self.redirect).take();
        }
        let first = self.endpoint.load(Ordering::Relaxed);
        let (i, ()) =
            self.client
                .on_endpoints(endpoints, first.min(endpoints.len() - 1), |ep| {
                    let req = Request {
                        head: false,
                        url: ep.url(&self.path),
                        endpoint: ep,
                        scope: &self.scope,
                        headers: vec![("range", range.clone())],
                    };
                    let reply = self.client.t.send(&req)?;
                    let url = reply.url.clone();
                    match reply.status() {
                        200 | 206 => {}
                        404 => return Err(Error::NotFound { url }),
                        status => {
                            let detail = reply.excerpt(self.client.counters());
                            return Err(Error::Status {
                                url,
                                status,
                                detail,
                            });
                        }
                    }
                    if reply.redirected {
                        *lock(&self.redirect) = Some((0, reply.url.clone()));
                    }
                    self.read_reply(reply, g, arrived)
                })?;
        if let Some((idx, _)) = lock(&self.redirect).as_mut() {
            *idx = i;
        }
        self.endpoint.store(i, Ordering::Relaxed);
        Ok(())
    }

    /// Read a `206` (exactly the range) or a `200` (the whole blob: skip to the range)
    /// into the group's pieces.
    fn read_reply(&self, reply: Reply, g: &mut Group<'_>, arrived: Arrived<'_>) -> Result<()> {
        let url = reply.url.clone();
        let want = g.end - g.start;
        let counters = self.client.counters();
        let announced = reply.content_length()?;
        let skip = if reply.status() == 206 {
            let cr = reply.header("content-range").and_then(ContentRange::parse);
            match cr {
                Some(ContentRange::Bytes {
                    first,
                    last,
                    complete,
                }) if first == g.start
                    && last == g.end - 1
                    && complete.is_none_or(|c| c == self.size) => {}
                _ => {
                    return Err(Error::BadReply {
                        url,
                        what: format!(
                            "asked for bytes {}-{} of {}, got Content-Range {:?}",
                            g.start,
                            g.end - 1,
                            self.size,
                            reply.header("content-range")
                        ),
                    });
                }
            }
            if announced.is_some_and(|n| n != want) {
                return Err(Error::BadReply {
                    url,
                    what: format!("Content-Length {announced:?} for a {want}-byte range"),
                });
            }
            0
        } else {
            // 200: the whole blob; stream past what precedes the range.
            if !self.ranges_ignored.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "{url} ignores Range: reading ranges by skipping through the whole blob"
                );
            }
            Counters::add(&counters.ranges_ignored, 1);
            if announced.is_some_and(|n| n != self.size) {
                return Err(Error::BadReply {
                    url,
                    what: format!(
                        "a 200 reply of {announced:?} bytes for a blob of {}",
                        self.size
                    ),
                });
            }
            g.start
        };
        let headers = std::time::Instant::now();
        // When the body's first bytes came (the debug log's breakdown of a request).
        let mut first_bytes = None;
        let mut r = reply.into_reader(counters);
        // Bytes of the body consumed. A body that ends or breaks before the bytes asked for
        // is a short body (transient: the group is fetched again).
        let mut pos = 0u64;
        let short = |got: u64| Error::ShortBody {
            url: url.clone(),
            got,
            want: skip + want,
        };
        let mut scratch = vec![0u8; 64 << 10];
        // Read `n` bytes into `dst` (or skip them), telling `on_read` of `dst`'s filled
        // prefix after each read.
        let mut fill = |r: &mut dyn Read,
                        dst: Option<&mut [u8]>,
                        n: u64,
                        pos: &mut u64,
                        mut on_read: OnRead<'_>| {
            let mut dst = dst;
            let mut done = 0u64;
            while done < n {
                let k = (n - done).min(scratch.len() as u64) as usize;
                let buf: &mut [u8] = match dst.as_deref_mut() {
                    // At most MAX_READ at once: parts are handed over at least that often.
                    Some(d) => {
                        let from = done as usize;
                        let to = d.len().min(from.saturating_add(MAX_READ));
                        &mut d[from..to]
                    }
                    None => &mut scratch[..k],
                };
                match r.read(buf) {
                    Ok(0) => return Err(*pos + done),
                    Ok(k) => {
                        first_bytes.get_or_insert_with(|| headers.elapsed());
                        done += k as u64;
                    }
                    Err(e) => {
                        log::debug!("body broke after {} bytes: {e}", *pos + done);
                        return Err(*pos + done);
                    }
                }
                if let (Some(d), Some(f)) = (dst.as_deref(), on_read.as_mut()) {
                    f(&d[..done as usize]);
                }
            }
            *pos += done;
            Ok(())
        };
        fill(&mut r, None, skip, &mut pos, None).map_err(short)?;
        let mut at = g.start;
        for p in g.pieces.iter_mut() {
            // Bytes between merged ranges.
            fill(&mut r, None, p.offset - at, &mut pos, None).map_err(short)?;
            let len = p.buf.len();
            // Parts of at least ARRIVAL_STEP bytes handed over as they arrive, the last
            // one when the piece is complete.
            let offset = p.offset;
            let mut handed = 0usize;
            let mut hand = |got: &[u8]| {
                if let Some(arrived) = arrived
                    && (got.len() - handed >= ARRIVAL_STEP || got.len() == len)
                {
                    arrived(offset + handed as u64, &got[handed..]);
                    handed = got.len();
                }
            };
            let on_read: OnRead<'_> = match arrived {
                Some(_) => Some(&mut hand),
                None => None,
            };
            fill(&mut r, Some(&mut *p.buf), len as u64, &mut pos, on_read).map_err(short)?;
            at = p.offset + len as u64;
        }
        // Trailing bytes up to the group's end (a piece may end before it when merged).
        fill(&mut r, None, g.end.saturating_sub(at), &mut pos, None).map_err(short)?;
        if skip == 0 {
            // A 206 body ends here; reading its end returns the connection to the pool.
            let mut extra = [0u8; 1];
            match r.read(&mut extra) {
                Ok(0) => {}
                Ok(_) => {
                    return Err(Error::BadReply {
                        url,
                        what: format!("more than the {want} bytes asked for"),
                    });
                }
                Err(source) => return Err(Error::Transport { url, source }),
            }
        }
        log::debug!(
            "bytes={}-{}: body's first bytes {:.1} ms after its headers, all {want} in {:.1} ms",
            g.start,
            g.end - 1,
            first_bytes.unwrap_or_default().as_secs_f64() * 1e3,
            headers.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }
}

/// Merge sorted pieces into groups: a piece joins the previous group when the gap is at
/// most `gap` and the group stays within `max` bytes. Overlapping pieces start a new
/// group (each group's pieces are disjoint and increasing).
fn merge(pieces: Vec<Piece<'_>>, gap: u64, max: u64) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for p in pieces {
        let end = p.offset + p.buf.len() as u64;
        if let Some(g) = groups.last_mut()
            && p.offset >= g.end
            && p.offset - g.end <= gap
            && end - g.start <= max
        {
            g.end = end;
            g.pieces.push(p);
            continue;
        }
        groups.push(Group {
            start: p.offset,
            end,
            pieces: vec![p],
        });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(groups: &[Group<'_>]) -> Vec<(u64, u64, usize)> {
        groups
            .iter()
            .map(|g| (g.start, g.end, g.pieces.len()))
            .collect()
    }

    #[test]
    fn merging() {
        let mut bufs: Vec<Vec<u8>> = vec![
            vec![0; 10],
            vec![0; 10],
            vec![0; 10],
            vec![0; 10],
            vec![0; 5],
        ];
        let offs = [0u64, 15, 100, 105, 200];
        let pieces: Vec<Piece<'_>> = bufs
            .iter_mut()
            .zip(offs)
            .map(|(b, o)| Piece { offset: o, buf: b })
            .collect();
        // 0..10 and 15..25 merge (gap 5); 100..110 overlaps 105..115: separate; 200 is far.
        assert_eq!(
            spans(&merge(pieces, 8, 1000)),
            vec![(0, 25, 2), (100, 110, 1), (105, 115, 1), (200, 205, 1)]
        );
        let pieces: Vec<Piece<'_>> = bufs
            .iter_mut()
            .zip([0u64, 10, 20, 30, 35])
            .map(|(b, o)| Piece { offset: o, buf: b })
            .collect();
        // Adjacent, capped at 20 bytes per group; 35..40 overlaps 30..40.
        assert_eq!(
            spans(&merge(pieces, 0, 20)),
            vec![(0, 20, 2), (20, 40, 2), (35, 40, 1)]
        );
    }
}
